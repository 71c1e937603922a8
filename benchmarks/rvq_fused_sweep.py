"""Block-size sweep of the fused Triton RVQ encode (tokenizer/rvq_triton.py) on one GPU, beside our
PyTorch path in the same run: speed, TF32 throughput and agreement with a float64 exhaustive search.

    python benchmarks/rvq_fused_sweep.py --out bench_out/rvq_fused_sweep.json

Case: the GPU-performance issue's 2 levels x 1024 codes, dim 256, 262,144 vectors (random data,
codebooks initialised from random rows as in benchmarks/rvq_speed.py).
"""

from __future__ import annotations

import argparse
import json

import torch
from rvq_speed import TF32_PEAK, exact_agreement, random_rvq
from timing import time_call, write_results

from tokenizer.rvq_triton import rvq_encode

CONFIGS = [  # (block_n, block_k, block_d, num_warps, num_stages)
    (64, 128, 32, 4, 2),
    (128, 128, 32, 8, 2),
    (64, 256, 32, 8, 2),
    (128, 64, 64, 4, 3),
    (64, 128, 64, 4, 3),
    (128, 128, 64, 8, 3),
    (256, 128, 32, 8, 2),
]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", default="bench_out/rvq_fused_sweep.json")
    args = parser.parse_args()
    device = torch.device("cuda")
    torch.backends.cuda.matmul.allow_tf32 = False  # the PyTorch path in float32
    torch.manual_seed(0)
    n, levels, k, dim = 262_144, 2, 1024, 256
    x = torch.randn(n, dim, device=device)
    rvq = random_rvq(levels, k, dim, x, device).eval()
    check = x[:16384]
    seconds = time_call(lambda: rvq.encode(x), device)
    rows = [
        {"kernel": "pytorch", "vectors_per_s": n / seconds, "exact_agreement": exact_agreement(rvq, check)}
    ]
    print(json.dumps(rows[-1]), flush=True)
    for bn, bk, bd, warps, stages in CONFIGS:
        settings = (bn, bk, bd, "tf32", warps, stages)
        seconds = time_call(lambda settings=settings: rvq_encode(x, rvq.codebooks, *settings), device)
        codes = rvq_encode(check, rvq.codebooks, *settings)
        flops = 2 * n * k * dim * levels / seconds
        rows.append(
            {
                "kernel": "fused",
                "block_n": bn,
                "block_k": bk,
                "block_d": bd,
                "num_warps": warps,
                "num_stages": stages,
                "vectors_per_s": n / seconds,
                "tflops": flops / 1e12,
                "fraction_of_tf32_peak": flops / TF32_PEAK,
                "exact_agreement": exact_agreement(rvq, check, codes),
            }
        )
        print(json.dumps(rows[-1]), flush=True)
    write_results(
        args.out, device, rows, case={"levels": levels, "codebook_size": k, "dim": dim, "vectors": n}
    )


if __name__ == "__main__":
    main()
