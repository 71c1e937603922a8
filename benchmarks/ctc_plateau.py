"""Why CTC runs stay near 100% CER (issue 18): the same emg2qwerty fine-tuning run over seeds and
recipe variants, several runs per GPU, and for each run whether it left the all-blank plateau, when,
and how unstable its training was (loss and gradient norm after the warm-up).

    python benchmarks/ctc_plateau.py --data DATA/emg2qwerty --out OUT --variants small,small_fp32 \
        --seeds 0,1,2 --steps 1500 --gpus 0,1 --jobs 16

Each run is `python -m finetune.emg2qwerty` with the table's flags (batch 32, bf16 unless the variant
says otherwise) plus the variant's; decoding at the end is greedy and beam 1 without a language model
(this measures training, not decoding). A run has left the plateau when its training loss per label
ends below 1.0: the all-blank plateau sits at about 3.4 nats per label on these sessions. Writes
OUT/plateau.json (every run's loss and gradient-norm curve) and OUT/plateau.md.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

VARIANTS = {
    # the table's recipes (finetune/emg2qwerty_table.py)
    "tiny": ["--model", "tiny"],
    "small": ["--model", "small", "--lr", "5e-4"],
    "tds": ["--model", "tds"],
    "tiny_rvq2": ["--model", "tiny", "--rvq_levels", "2"],
    # one change each
    "small_uncropped": ["--model", "small", "--lr", "5e-4", "--crop_context", "false"],
    "tiny_uncropped": ["--model", "tiny", "--crop_context", "false"],
    "small_fp32": ["--model", "small", "--lr", "5e-4", "--mixed_precision", "no"],
    "small_qk_norm": ["--model", "small", "--lr", "5e-4", "--overrides", '{"qk_norm": true}'],
    "small_lr2.5e-4": ["--model", "small", "--lr", "2.5e-4"],
    "small_warmup1000": ["--model", "small", "--lr", "5e-4", "--warmup_steps", "1000"],
    "tds_fp32": ["--model", "tds", "--mixed_precision", "no"],
    "tds_lr3e-4": ["--model", "tds", "--lr", "3e-4"],
    "tiny_rvq2_qk_norm": ["--model", "tiny", "--rvq_levels", "2", "--overrides", '{"qk_norm": true}'],
    # the TDS-ConvNet's own cause (2026-11-30): "tds" now normalises each spectrogram bin and starts
    # the head on the blank; these undo one change or both (the runs recorded before are "tds_as_emg2qwerty")
    "tds_electrode_norm": ["--model", "tds", "--overrides", '{"spec_norm": "electrode"}'],
    "tds_no_blank_init": ["--model", "tds", "--overrides", '{"blank_init_prob": null}'],
    "tds_as_emg2qwerty": [
        "--model",
        "tds",
        "--overrides",
        '{"spec_norm": "electrode", "blank_init_prob": null}',
    ],
    "tiny_no_blank_init": ["--model", "tiny", "--overrides", '{"blank_init_prob": null}'],
    "small_no_blank_init": ["--model", "small", "--lr", "5e-4", "--overrides", '{"blank_init_prob": null}'],
}
LEFT_PLATEAU = 1.0  # training loss per label below which a run has left the all-blank plateau (~3.4)


def run(variant: str, seed: int, gpu: str, args) -> None:
    folder = Path(args.out) / "runs" / variant / f"seed{seed}"
    if (folder / "results.json").exists():
        return
    folder.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "finetune.emg2qwerty", "--data", args.data, "--steps", str(args.steps)]
    command += ["--batch_size", "32", "--mixed_precision", "bf16", "--beam", "1", "--lm_order", "0"]
    command += ["--eval_every", str(args.steps), "--save_every", str(args.steps), "--log_every", "50"]
    command += ["--progress", "false", "--seed", str(seed), "--out", str(folder), *VARIANTS[variant]]
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": gpu, "OMP_NUM_THREADS": str(args.threads)}
    with open(folder / "run.log", "w") as log:
        done = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, env=env)
    print(f"{variant} seed {seed}: exit {done.returncode}", flush=True)


def summarise(folder: Path, warmup: int) -> dict:
    """One run's curve and the figures that tell a plateau from a divergence."""
    rows = [json.loads(line) for line in (folder / "log.jsonl").read_text().splitlines()]
    train = [r for r in rows if "train/loss" in r]
    after = [r for r in train if r["step"] > warmup]
    left = next((r["step"] for r in train if r["train/loss"] < LEFT_PLATEAU), None)
    results = folder / "results.json"
    test = json.loads(results.read_text()).get("test", {}) if results.exists() else {}
    return {
        "final_loss": train[-1]["train/loss"],
        "left_plateau_at": left,
        "max_loss_after_warmup": max((r["train/loss"] for r in after), default=None),
        "max_grad_norm": max((r.get("train/grad_norm", 0.0) for r in train), default=None),
        "test_cer_greedy": test.get("cer_greedy"),
        "curve": [[r["step"], r["train/loss"], r.get("train/grad_norm")] for r in train],
    }


def warmup_of(variant: str) -> int:
    flags = VARIANTS[variant]
    return int(flags[flags.index("--warmup_steps") + 1]) if "--warmup_steps" in flags else 200


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="folder of emg2qwerty-format sessions + splits/")
    parser.add_argument("--out", required=True)
    parser.add_argument("--variants", default="small,small_fp32", help=f"comma-separated: {sorted(VARIANTS)}")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--gpus", default="0", help="GPUs the runs are spread over, e.g. 0,1")
    parser.add_argument("--jobs", type=int, default=8, help="runs at a time, over all GPUs")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads per run")
    parser.add_argument("--summary_only", action="store_true", help="re-read the runs, start none")
    args = parser.parse_args()
    variants = args.variants.split(",")
    unknown = sorted(set(variants) - set(VARIANTS))
    if unknown:
        parser.error(f"unknown variants {unknown}; known: {sorted(VARIANTS)}")
    seeds = [int(s) for s in args.seeds.split(",")]
    gpus = args.gpus.split(",")
    plan = [(v, s) for v in variants for s in seeds]
    if not args.summary_only:
        with ThreadPoolExecutor(args.jobs) as pool:
            for i, (variant, seed) in enumerate(plan):
                pool.submit(run, variant, seed, gpus[i % len(gpus)], args)
    out = Path(args.out)
    result = {"steps": args.steps, "left_plateau_below": LEFT_PLATEAU, "variants": {}}
    lines = [
        "| variant | left the plateau | step it left (per seed) | final loss | max loss after warm-up "
        "| max grad norm (50-step mean) | test CER greedy |",
        "|---|---:|---|---|---|---|---|",
    ]
    fmt = lambda values, spec: " / ".join("—" if v is None else format(v, spec) for v in values)  # noqa: E731
    for variant in variants:
        runs = {
            s: summarise(out / "runs" / variant / f"seed{s}", warmup_of(variant))
            for s in seeds
            if (out / "runs" / variant / f"seed{s}" / "log.jsonl").exists()
        }
        result["variants"][variant] = {"flags": VARIANTS[variant], "runs": runs}
        got = list(runs.values())
        left = sum(r["left_plateau_at"] is not None for r in got)
        lines.append(
            f"| {variant} | {left}/{len(got)} | {fmt([r['left_plateau_at'] for r in got], 'd')} "
            f"| {fmt([r['final_loss'] for r in got], '.2f')} | {fmt([r['max_loss_after_warmup'] for r in got], '.2f')} "
            f"| {fmt([r['max_grad_norm'] for r in got], '.1f')} | {fmt([r['test_cer_greedy'] for r in got], '.1f')} |"
        )
    (out / "plateau.json").write_text(json.dumps(result, indent=2))
    (out / "plateau.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
