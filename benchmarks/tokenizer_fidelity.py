"""Tokenizer fidelity ablation (issue 16): train every variant for the same step budget on
one GPU (in turn), and measure each on the held-out subjects: SNR at 1/2/4/8 RVQ levels and the unquantized bound.

    python benchmarks/tokenizer_fidelity.py --corpora CORPORA --out OUT --steps 2000 [--variants a,b]

CORPORA holds the prepared real corpora (`biotok prepare --sources shared_real` and `--sources
eegbci_more`, or `biotok unpack` of their pack). EEG variants train on EEGBCI (S001-S003) and
eegbci_more S007-S012 only; "mixed" variants on every real corpus. Everything is measured on
eegbci_more S013-S014, never seen in training (and, for mixed variants, on the held-out Myo and ECG
subjects). The codecs' rows depend on the data alone: `biotok tokenizer rd` computes them.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import torch

EEG = ["eegbci", "eegbci_more"]
MIXED = ["eegbci", "eegbci_more", "grabmyo", "myo", "ecg"]
HOLDOUT = {"eegbci_more": ["013", "014"]}
MIXED_WEIGHTS = {"eegbci": 0.2, "eegbci_more": 0.3, "grabmyo": 0.1, "myo": 0.2, "ecg": 0.2}
FIRST_DESIGN = {"patch_embed": "conv", "objective": "spectral", "position_embed": False}

# name -> (corpora, TokenizerConfig overrides of the small size); each changes one thing from its neighbour
VARIANTS = {
    "shipped_design": (EEG, FIRST_DESIGN),
    "linear_spectral": (EEG, {**FIRST_DESIGN, "patch_embed": "linear"}),
    "linear_waveform_c32": (EEG, {"code_dim": 32}),
    "linear_waveform_c16": (EEG, {"code_dim": 16}),
    "linear_waveform_c8": (EEG, {"code_dim": 8}),
    "convlinear_waveform_c16": (EEG, {"code_dim": 16, "patch_embed": "conv+linear"}),
    "mixed_linear_waveform_c16": (MIXED, {"code_dim": 16}),
}


def train_command(
    name: str, corpora_root: Path, out: Path, steps: int, batch: int, seed: int, max_seconds: float
) -> list[str]:
    corpora, overrides = VARIANTS[name]
    weights = {k: v for k, v in MIXED_WEIGHTS.items() if k in corpora} if corpora == MIXED else {}
    return [
        sys.executable, "-m", "tokenizer.train",
        "--corpora", *[str(corpora_root / c) for c in corpora],
        "--holdout_subjects", json.dumps(HOLDOUT),
        "--weights", json.dumps(weights) if weights else "",
        "--size", "small",
        "--overrides", json.dumps(overrides),
        "--steps", str(steps), "--batch_size", str(batch), "--lr", "1.5e-3", "--warmup_steps", str(min(200, steps // 10)),
        "--eval_every", str(steps), "--eval_batches", "2", "--save_every", str(steps), "--log_every", "50",
        "--mixed_precision", "bf16" if torch.cuda.is_available() else "no",
        "--seed", str(seed), "--max_seconds", str(max_seconds), "--progress", "false", "--out", str(out / name),
    ]  # fmt: skip


def measure(name: str, corpora_root: Path, run: Path, device: torch.device) -> list[dict]:
    from data_prep.corpus import load_corpora
    from tokenizer.model import BiotokTokenizer
    from tokenizer.rd import rate_distortion

    model = BiotokTokenizer.from_pretrained(str(run / "final")).to(device).eval()
    corpora, _ = VARIANTS[name]
    rows = []
    for corpus_name, corpus in load_corpora([corpora_root / c for c in corpora]).items():
        _, held = corpus.split(0.25, HOLDOUT)
        if len(held) and (corpus_name in HOLDOUT or corpora == MIXED):
            rows += rate_distortion(model, held, None, [1, 2, 4, 8], 32, device, baselines=False)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--corpora", required=True, help="folder of the prepared real corpora")
    parser.add_argument("--out", required=True)
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--batch_size", type=int, default=128)
    parser.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated names")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max_seconds", type=float, default=0, help="each run's training-time cap (0: none)")
    args = parser.parse_args()
    root, out = Path(args.corpora), Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    names = args.variants.split(",")
    unknown = set(names) - set(VARIANTS)
    if unknown:
        parser.error(f"unknown variants {sorted(unknown)}; known: {list(VARIANTS)}")
    started = time.perf_counter()
    # one after another: processes sharing a GPU without MPS time-slice it, and 9 small models side by
    # side ran 2.3 s/step each (measured), far slower than in turn
    failed = []
    for n in names:
        with open(out / f"{n}.log", "w") as log:
            command = train_command(n, root, out, args.steps, args.batch_size, args.seed, args.max_seconds)
            if subprocess.run(command, stdout=log, stderr=subprocess.STDOUT).returncode != 0:
                failed.append(n)
    train_s = time.perf_counter() - started
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    results = {
        "steps": args.steps,
        "batch_size": args.batch_size,
        "train_seconds_all": train_s,
        "failed": failed,
    }
    for n in names:
        if n in failed:
            print(f"{n}: FAILED, see {out / n}.log")
            continue
        try:
            rows = measure(n, root, out / n, device)
        except Exception as err:  # one variant's failure must not lose the others' results
            print(f"{n}: measuring failed: {err!r}")
            results.setdefault("failed_measure", []).append(n)
            continue
        log = [json.loads(line) for line in (out / n / "log.jsonl").read_text().splitlines()]
        trained = max(r["step"] for r in log)
        seconds = max(r.get("seconds", 0) for r in log)
        results[n] = {
            "corpora": VARIANTS[n][0],
            "overrides": VARIANTS[n][1],
            "steps_done": trained,
            "train_seconds": seconds,
            "rows": rows,
        }
        print(f"{n}: {trained} steps in {seconds:.0f} s")
        (out / "fidelity.json").write_text(json.dumps(results, indent=1))
        for r in rows:
            print(
                f"{n:28s} {r['corpus']:12s} L={r['levels']} {r['bits_per_channel_second']:5.0f} b/ch/s "
                f"SNR {r['tokenizer']['snr_db']:6.2f} dB (unquantized {r['continuous']['snr_db']:6.2f})"
            )
    (out / "fidelity.json").write_text(json.dumps(results, indent=1))
    print(f"trained {len(names)} variants in {train_s:.0f} s; wrote {out / 'fidelity.json'}")


if __name__ == "__main__":
    main()
