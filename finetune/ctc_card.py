"""Ship a trained emg2qwerty CTC run as a model folder with its card: the weights and config of its
`final/`, its arguments and training log, and a README whose metrics block is the run's held-out
whole-session CER (`card_metrics.json`), which tests/test_pretrained.py measures again.

    python -m finetune.ctc_card --run runs/ctc --out pretrained_models/ctc-128x2-synthetic \
        --data "synthetic standard tier, 8 users x 4 sessions x 120 s"
"""

from __future__ import annotations

import json
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

from data_prep.atomic import atomic_path
from data_prep.errors import BiosignalError
from foundation.card import END, START, write_card

from .emg_data import load_session

README = """# {name}

A keystroke decoder for emg2qwerty-format sEMG (2 x 16 electrodes at 2 kHz): the sEMG-paper transformer
at width {width} and depth {depth} ({parameters:,} parameters) under a CTC head over emg2qwerty's 99
classes, trained with `biotok finetune emg2qwerty` on **synthetic** sessions only ({data}). It is the
starting point of the main job's CTC stage (`biotok run`), which fine-tunes it on its own sessions: a
CPU cannot leave CTC's all-blank plateau within the main job's minutes, and a model that has left it
adapts in a few steps. It has never seen real sEMG: on real emg2qwerty data it is an initialisation at
best.

Training: {steps} steps of batch {batch_size}, AdamW lr {lr} (warm-up {warmup_steps}, cosine), dropout
{dropout}, electrode-rotation and time-jitter augmentation; CTC on each window's labelled span only.
Arguments: `train_args.json`; loss curve: `log.jsonl`. Recipe: `bash benchmarks/ctc_cpu_model.sh`.

## Held-out user, whole sessions

{start}
{end}

Decoding: greedy; beam {beam}; beam {beam} with a 6-gram character LM fitted on the training users'
prompts (weight 0.5, insertion bonus 0.5). The greedy CER is reproduced by tests/test_pretrained.py.
"""


@dataclass
class CTCCardArgs:
    """Ship a trained CTC run (its final/ model and results.json) as a model folder with a card."""

    run: str = field(metadata={"help": "the run folder of `biotok finetune emg2qwerty`"})
    out: str = field(metadata={"help": "the model folder to write (e.g. pretrained_models/<name>)"})
    data: str = field(metadata={"help": "what the run trained and was tested on, for the card"})


def ship(args: CTCCardArgs) -> dict:
    run, out = Path(args.run), Path(args.out)
    results_file = run / "results.json"
    if not (results_file.exists() and (run / "final" / "model.safetensors").exists()):
        raise BiosignalError(run, "results.json", "a finished run (results.json and final/ weights)")
    results = json.loads(results_file.read_text())
    test = results.get("test", {})
    if "cer_beam_lm" not in test:
        raise BiosignalError(results_file, "test", "whole-session CER with beam + LM (a run with an LM)")
    train = results["args"]
    config = json.loads((run / "final" / "config.json").read_text())
    names = [s["session"] for s in test["sessions"]]
    # the sessions' lengths, so that anyone can regenerate synthetic ones (see tests/test_pretrained.py)
    durations = []
    for name in names:
        session = load_session(Path(train["data"]) / f"{name}.hdf5")
        durations.append(session.signal.shape[1] / session.sfreq)
    metrics = {
        "test_user": ", ".join(sorted({s["user"] for s in test["sessions"]})),
        "session_names": names,
        "session_seconds": durations,
        "data": args.data,
        "sessions": len(names),
        "target_keys": sum(s["target_length"] for s in test["sessions"]),
        "cer_greedy": test["cer_greedy"],
        "cer_beam": test["cer_beam"],
        "cer_beam_lm": test["cer_beam_lm"],
        "val_cer_windows": results["val_cer_windows"],
    }
    with atomic_path(out) as tmp:
        tmp.mkdir(parents=True)
        for name in ("config.json", "model.safetensors"):
            shutil.copy(run / "final" / name, tmp / name)
        shutil.copy(run / "finetune_args.json", tmp / "train_args.json")
        shutil.copy(run / "log.jsonl", tmp / "log.jsonl")
        (tmp / "README.md").write_text(
            README.format(
                name=out.name,
                width=config["width"],
                depth=config["depth"],
                parameters=results["parameters"],
                data=args.data,
                start=START,
                end=END,
                **{k: train[k] for k in ("steps", "batch_size", "lr", "warmup_steps", "dropout", "beam")},
            )
        )
        write_card(tmp, "ctc", metrics)
    return metrics


def main(argv: list[str] | None = None) -> int:
    from data_prep.config import run_command

    def job(args: CTCCardArgs) -> None:
        print(json.dumps(ship(args), indent=2))

    return run_command(CTCCardArgs, job, argv, prog="python -m finetune.ctc_card")


if __name__ == "__main__":
    sys.exit(main())
