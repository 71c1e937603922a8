"""Pretraining throughput and model FLOPs utilisation (MFU) of the foundation model, bf16, one GPU.

    python benchmarks/pretrain_speed.py --tokenizer pretrained_models/tokenizer-small --sizes small,base

One training step = forward + backward + AdamW on a batch of 64-channel EEG token windows (4 patches,
so 256 positions each), half of the positions masked. Model FLOPs are counted analytically (matmuls
of the encoder at 2 FLOPs per multiply-add, attention scores and values, the output heads on masked
positions only; backward = 2 x forward) and divided by the GPU's dense bf16 peak.
"""

from __future__ import annotations

import argparse
import json

import torch
from timing import time_call, write_results

from foundation.config import FoundationConfig
from foundation.model import BiotokFoundation, masked_positions, random_mask
from tokenizer.config import TokenizerConfig

PEAK_BF16 = {"H100": 989e12, "H200": 989e12}  # dense bf16 tensor-core peak (SXM), FLOP/s


def model_flops(config: FoundationConfig, batch: int, positions: int, masked: int) -> float:
    """Training FLOPs of one step (forward x 3)."""
    d, layers = config.d_model, config.n_layers
    per_token = layers * (2 * 4 * d * d + 2 * 2 * 4 * d * d)  # qkv + out, MLP (4x)
    attention = layers * 2 * 2 * positions * d  # scores and weighted values, per token
    head = 2 * d * config.n_heads_out * config.codebook_size
    forward = batch * positions * (per_token + attention) + masked * head
    return 3 * forward


def measure(
    config: FoundationConfig,
    eeg_names: list[str],
    batch: int,
    device,
    peak: float | None,
    compile: bool = False,
) -> dict:
    model = BiotokFoundation(config).to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=device.type == "cuda")
    forward = torch.compile(model) if compile else model
    b, c, p = batch, len(eeg_names), 4
    codes = torch.randint(0, config.codebook_size, (b, c, p, config.n_scales, config.n_levels), device=device)
    ids = model.channel_ids([eeg_names] * b, "eeg")
    mask = random_mask(torch.ones(b, c, dtype=torch.bool), p, config.mask_ratio)
    index = masked_positions(mask).to(device)  # built on the host, as the training loop does
    mask = mask.to(device)

    def step():
        with torch.autocast(device.type, torch.bfloat16):
            out = forward(codes, ids, "eeg", mask, masked_index=index)
        out.loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    seconds = time_call(step, device, warmup=3, repeats=10)
    flops = model_flops(config, b, c * p, int(mask.sum()))
    return {
        "parameters": sum(x.numel() for x in model.parameters()),
        "batch": b,
        "positions_per_window": c * p,
        "step_s": seconds,
        "tokens_per_s": b * c * p / seconds,
        "model_tflops_per_s": flops / seconds / 1e12,
        "mfu": flops / seconds / peak if peak else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tokenizer", default="pretrained_models/tokenizer-small")
    parser.add_argument("--sizes", default="small,base")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--compile", action="store_true", help="also time each size under torch.compile")
    parser.add_argument("--out", default="bench_out/pretrain_speed.json")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    tokenizer_config = TokenizerConfig.from_pretrained(args.tokenizer)
    eeg_names = [n.split(":", 1)[1] for n in tokenizer_config.channel_vocab if n.startswith("eeg:")][:64]
    peak = next(
        (v for k, v in PEAK_BF16.items() if device.type == "cuda" and k in torch.cuda.get_device_name()), None
    )
    rows = []
    for size in [s for s in args.sizes.split(",") if s]:
        for compiled in (False, True) if args.compile else (False,):
            config = FoundationConfig.from_tokenizer(tokenizer_config, size)
            row = measure(config, eeg_names, args.batch, device, peak, compile=compiled)
            row["size"], row["compiled"] = size, compiled
            print(json.dumps(row))
            rows.append(row)
    write_results(args.out, device, rows, peak_bf16_flops=peak)


if __name__ == "__main__":
    main()
