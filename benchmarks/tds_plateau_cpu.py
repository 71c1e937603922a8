"""Why the TDS-ConvNet never left CTC's plateau (issue 18): a few hundred training steps of each
variant on a CPU, logging the loss, the blank's mean probability and how much the logits still vary
over time (a network whose output no longer depends on time cannot leave the plateau).

    python benchmarks/tds_plateau_cpu.py --data DATA/emg2qwerty --variants \
        as_emg2qwerty,blank_init,frequency_norm,both --steps 150 --warmup 50 --out OUT.json

Variants set two `EmgCTCConfig` fields: `spec_norm` ("electrode" = emg2qwerty's, "frequency") and
`blank_init_prob` (None = a zero head bias, 0.5). Training windows come from the generic split's
training sessions (WindowSampler, no SpecAugment, no dropout, AdamW, linear warm-up then constant
lr); `--fixed` trains on the first batch only (can the model fit 8 windows at all?).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from finetune.charset import BLANK
from finetune.ctc import ctc_loss
from finetune.emg_data import WindowSampler, load_split
from finetune.emg_models import EmgCTCConfig, EmgCTCModel

VARIANTS = {
    "as_emg2qwerty": {"spec_norm": "electrode", "blank_init_prob": None},
    "blank_init": {"spec_norm": "electrode", "blank_init_prob": 0.5},
    "frequency_norm": {"spec_norm": "frequency", "blank_init_prob": None},
    "both": {"spec_norm": "frequency", "blank_init_prob": 0.5},  # the default since 2026-11-30
}


def train(variant: str, sessions, args) -> list[dict]:
    torch.manual_seed(args.seed)
    config = EmgCTCConfig.named("tds", spec_augment=False, dropout=0.0, **VARIANTS[variant])
    model = EmgCTCModel(config)
    sampler = WindowSampler(sessions, args.batch_size, seed=args.seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / max(1, args.warmup)))
    curve, start = [], time.time()
    for step in range(args.steps):
        batch = sampler.batch(0 if args.fixed else step)
        out = model(batch["emg"])
        loss, _ = ctc_loss(out.log_probs, out.lengths, batch["targets"], batch["target_lengths"])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
        if step % args.log_every == 0 or step == args.steps - 1:
            row = {
                "step": step,
                "loss": round(float(loss.detach()), 4),
                "blank_prob": round(float(out.log_probs[..., BLANK].detach().exp().mean()), 4),
                "logit_std_over_time": round(float(out.logits.detach().std(dim=1).mean()), 5),
                "seconds": round(time.time() - start, 1),
            }
            curve.append(row)
            print(variant, row, flush=True)
    return curve


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, help="emg2qwerty-format folder (generic split)")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--warmup", type=int, default=50)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--fixed", action="store_true", help="train on one batch only")
    parser.add_argument("--log_every", type=int, default=10)
    parser.add_argument("--out", default="tds_plateau.json")
    args = parser.parse_args()
    _, sessions = load_split(args.data, Path(args.data) / "splits" / "generic.yaml")
    results = {"args": vars(args), "curves": {}}
    for variant in args.variants.split(","):
        results["curves"][variant] = train(variant, sessions["train"], args)
        Path(args.out).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
