"""One training step of the foundation-backed emg2qwerty model on one GPU (batch 32, 5 s windows at the
tokenizer's 1 kHz, bf16 autocast), and its frozen tokenizer's encode alone, with cuDNN's benchmark mode
off and on. Random weights: the step's cost does not depend on them.

    python benchmarks/foundation_backed_step.py --levels 2
"""

from __future__ import annotations

import argparse
import json

import torch
from timing import time_call

from finetune.emg_models import EmgCTCConfig, EmgCTCModel
from foundation.config import FoundationConfig
from tokenizer.model import BiotokTokenizer


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tokenizer", default="pretrained_models/tokenizer-small-v1")
    parser.add_argument("--levels", type=int, default=2, help="RVQ levels the foundation model reads")
    parser.add_argument("--batch", type=int, default=32)
    args = parser.parse_args()
    device = torch.device("cuda")
    tokenizer = BiotokTokenizer.from_pretrained(args.tokenizer)
    foundation = FoundationConfig.from_tokenizer(tokenizer.config, "small", n_target_levels=args.levels)
    config = EmgCTCConfig(
        architecture="foundation",
        width=256,
        tokenizer_config=tokenizer.config.to_dict(),
        foundation_config=foundation.to_dict(),
        frames_per_patch=10,
    )
    model = EmgCTCModel(config).to(device).train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4, fused=True)
    x = torch.randn(args.batch, 32, 5000, device=device)

    def step():
        with torch.autocast("cuda", torch.bfloat16):
            out = model(x)
        out.log_probs.float().mean().backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    def codes():
        with torch.autocast("cuda", torch.bfloat16):
            return model.backbone.codes(x)

    for benchmark in (False, True):
        torch.backends.cudnn.benchmark = benchmark
        row = {
            "cudnn_benchmark": benchmark,
            "levels": args.levels,
            "step_ms": 1e3 * time_call(step, device, warmup=3, repeats=8),
            "codes_ms": 1e3 * time_call(codes, device, warmup=3, repeats=8),
        }
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
