"""RVQ speed: biotok's ResidualVQ against vector-quantize-pytorch's ResidualVQ, same sizes, same run.

    pip install vector-quantize-pytorch   # for this benchmark only
    python benchmarks/rvq_speed.py --out bench_out/rvq_speed.json

For each size: encode (eval, codes only) and a training step (forward with EMA updates and
dead-code restarts, backward of the commitment loss) in vectors per second, and how often our codes
equal an exact float64 nearest-neighbour search on the same residuals.
"""

from __future__ import annotations

import argparse
import json

import torch
from timing import time_call, write_results

from tokenizer.rvq import ResidualVQ, exact_codes

SIZES = [
    # (levels, codebook size, dim, vectors): the GPU-performance issue's case, then our small tokenizer's
    (2, 1024, 256, 262_144),
    (8, 1024, 32, 65_536),
    (8, 8192, 128, 65_536),
]


TF32_PEAK = 494.7e12  # dense TF32 tensor-core FLOP/s of the H100 / H200 SXM


def exact_agreement(rvq: ResidualVQ, x: torch.Tensor, codes: torch.Tensor | None = None) -> float:
    """Fraction of codes equal to a float64 exhaustive search, level by level on the float64 residual."""
    codes = rvq.encode(x) if codes is None else codes
    return float((codes == exact_codes(x, rvq.codebooks).to(codes.device)).float().mean())


def random_rvq(levels: int, k: int, dim: int, x: torch.Tensor, device) -> ResidualVQ:
    """A ResidualVQ whose codebooks are random rows of x (k-means with 0 iterations), in training mode."""
    rvq = ResidualVQ(dim, k, levels, kmeans_iters=0).to(device)
    rvq.train()
    rvq(x[: k * 4])
    return rvq


def bench_ours(levels: int, k: int, dim: int, x: torch.Tensor, device) -> dict:
    rvq = random_rvq(levels, k, dim, x, device)
    encode = time_call(lambda: rvq.encode(x), device)

    def step():
        inp = x.detach().requires_grad_(True)
        rvq(inp).commit_loss.backward()

    rvq.train()
    train = time_call(step, device)
    rvq.eval()
    result = {
        "encode_vectors_per_s": x.shape[0] / encode,
        "train_vectors_per_s": x.shape[0] / train,
        "exact_agreement": exact_agreement(rvq, x[:16384]),
    }
    if device.type == "cuda":
        result["fused"] = bench_fused(rvq, x, device)
    return result


def bench_fused(rvq: ResidualVQ, x: torch.Tensor, device) -> dict | None:
    """The Triton kernel (tokenizer/rvq_triton.py): speed, exactness, and the fraction of the TF32
    matmul ceiling and of the memory traffic it needs at the measured rate."""
    try:
        from tokenizer.rvq_triton import rvq_encode
    except ImportError:
        return None
    n, (levels, k, dim) = x.shape[0], rvq.codebooks.shape
    seconds = time_call(lambda: rvq_encode(x, rvq.codebooks), device)
    unchecked = time_call(lambda: rvq_encode(x, rvq.codebooks, error_bound=-1.0), device)
    _, rescored = rvq_encode(x, rvq.codebooks, return_rescored=True)
    flops = 2 * n * k * dim * levels
    bytes_moved = 4 * (n * dim + n * levels + levels * k * dim)
    return {
        "encode_vectors_per_s": n / seconds,
        "rescored_fraction": float(rescored.float().mean()),
        "unchecked_encode_vectors_per_s": n / unchecked,
        "tflops": flops / seconds / 1e12,
        "fraction_of_tf32_peak": flops / seconds / TF32_PEAK,
        "gbytes_per_s": bytes_moved / seconds / 1e9,
        "exact_agreement": exact_agreement(rvq, x[:16384], rvq_encode(x[:16384], rvq.codebooks)),
    }


def bench_peer(levels: int, k: int, dim: int, x: torch.Tensor, device) -> dict:
    from vector_quantize_pytorch import ResidualVQ as PeerRVQ

    peer = PeerRVQ(
        dim=dim,
        num_quantizers=levels,
        codebook_size=k,
        decay=0.99,
        kmeans_init=False,
        threshold_ema_dead_code=2,
    ).to(device)
    batch = x[None]
    peer.eval()

    @torch.no_grad()
    def encode():
        peer(batch)

    encode_s = time_call(encode, device)
    peer.train()

    def step():
        inp = batch.detach().requires_grad_(True)
        _, _, loss = peer(inp)
        loss.sum().backward()

    train_s = time_call(step, device)
    return {"encode_vectors_per_s": x.shape[0] / encode_s, "train_vectors_per_s": x.shape[0] / train_s}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", default="bench_out/rvq_speed.json")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--scale", type=float, default=1.0, help="shrink the vector counts (CPU smoke runs)")
    args = parser.parse_args()
    device = torch.device(args.device)
    torch.backends.cuda.matmul.allow_tf32 = False  # float32 lookups on both sides
    results = []
    for levels, k, dim, n in SIZES:
        n = max(4 * k, int(n * args.scale))
        x = torch.randn(n, dim, device=device, generator=None)
        ours = bench_ours(levels, k, dim, x, device)
        try:
            peer = bench_peer(levels, k, dim, x, device)
        except ImportError:
            peer = None
        row = {"levels": levels, "codebook_size": k, "dim": dim, "vectors": n, "biotok": ours, "peer": peer}
        if peer:
            row["encode_speedup"] = ours["encode_vectors_per_s"] / peer["encode_vectors_per_s"]
            row["train_speedup"] = ours["train_vectors_per_s"] / peer["train_vectors_per_s"]
        print(json.dumps(row))
        results.append(row)
    write_results(args.out, device, results)


if __name__ == "__main__":
    main()
