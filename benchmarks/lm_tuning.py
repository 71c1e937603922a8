"""Re-decode trained emg2qwerty runs with the LM's weight and insertion bonus tuned on their validation
sessions (issue 18), against the fixed defaults they were tested with.

    python benchmarks/lm_tuning.py --runs RUN [RUN ...] --out lm_tuning.json

Each RUN is a `biotok finetune emg2qwerty` output folder (finetune_args.json, final/); its data, split,
LM order (6 where the run had no LM) and beam width are read from finetune_args.json. Writes, per run, the tuning grid and the test
CER (beam + LM) with the defaults and with the tuned pair.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import fields
from pathlib import Path

from finetune.emg2qwerty import (
    CTCTrainArgs,
    prepare_sessions,
    session_emissions,
    split_file,
    test_sessions,
    train_lm,
    tune_lm,
)
from finetune.emg_data import load_split
from finetune.emg_models import EmgCTCModel


def redecode(run: Path) -> dict:
    saved = json.loads((run / "finetune_args.json").read_text())
    args = CTCTrainArgs(**{f.name: saved[f.name] for f in fields(CTCTrainArgs) if f.name in saved})
    _, parts = load_split(args.data, split_file(args))
    model = EmgCTCModel.from_pretrained(run / "final").eval()
    parts = {name: prepare_sessions(sessions, model.input_preset) for name, sessions in parts.items()}
    lm = train_lm(parts["train"], args.lm_order or 6)
    tuned = tune_lm(session_emissions(model, parts["val"], "cpu"), parts["val"], lm, args)
    default = test_sessions(model, parts["test"], lm, args, "cpu")
    best = test_sessions(model, parts["test"], lm, args, "cpu", tuned["lm_weight"], tuned["insertion_bonus"])
    row = {
        "run": str(run),
        "model": args.model,
        "tuning": tuned,
        "test_cer_greedy": default["cer_greedy"],
        "test_cer_beam": default["cer_beam"],
        "test_cer_beam_lm_default": default["cer_beam_lm"],
        "default": {"lm_weight": args.lm_weight, "insertion_bonus": args.insertion_bonus},
        "test_cer_beam_lm_tuned": best["cer_beam_lm"],
    }
    print(
        f"{run}: beam + LM {row['test_cer_beam_lm_default']:.2f}% with weight {args.lm_weight} / bonus "
        f"{args.insertion_bonus}; {row['test_cer_beam_lm_tuned']:.2f}% with the tuned {tuned['lm_weight']} / "
        f"{tuned['insertion_bonus']} (validation {tuned['val_cer_beam_lm']:.2f}%); beam alone {row['test_cer_beam']:.2f}%",
        flush=True,
    )
    return row


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", nargs="+", required=True)
    parser.add_argument("--out", default="lm_tuning.json")
    args = parser.parse_args()
    rows = [redecode(Path(run)) for run in args.runs]
    Path(args.out).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
