"""The `biotok` command: one subcommand per stage, each also runnable as `python -m <module>`."""

from __future__ import annotations

import importlib
import sys

# subcommand words -> ("module" with main(argv), or "module:function", one-line help)
COMMANDS: dict[tuple[str, ...], tuple[str, str]] = {
    ("run",): ("biotok.pipeline", "the main job: every stage end to end on one dataset, then a summary"),
    ("download",): (
        "data_prep.download",
        "fetch the public datasets the sources describe (resumable, checksummed)",
    ),
    ("prepare",): ("data_prep.prepare", "build corpora from real files or the embedded synthetic data"),
    ("pack",): ("data_prep.pack:main_pack", "prepared corpora as one compact file, to move between machines"),
    ("unpack",): ("data_prep.pack:main_unpack", "rebuild corpora from a pack file"),
    ("tokenizer", "train"): ("tokenizer.train", "train the multi-scale RVQ tokenizer on prepared corpora"),
    ("tokenizer", "rd"): (
        "tokenizer.rd",
        "rate-distortion table of a tokenizer vs per-channel DCT and spatial PCA + DCT codecs, and its figure",
    ),
    ("tokenize",): ("foundation.tokens", "store a trained tokenizer's codes of prepared corpora"),
    ("pretrain",): (
        "foundation.pretrain",
        "masked-token pretraining of the foundation model on token corpora",
    ),
    ("finetune", "emg2qwerty"): (
        "finetune.emg2qwerty",
        "CTC keystroke decoding on emg2qwerty sessions (transformer, TDS, RVQ, distilled, foundation)",
    ),
    ("finetune", "classify"): (
        "finetune.classify",
        "classification with subject-independent folds: foundation (probe, fine-tuned), scratch, raw-patch, classical",
    ),
    ("finetune", "emg2qwerty-table"): (
        "finetune.emg2qwerty_table",
        "every emg2qwerty model family over several seeds, as one CER table",
    ),
}


def usage() -> str:
    lines = ["usage: biotok <command> [--help] [flags]", "", "commands:"]
    for words, (_, text) in COMMANDS.items():
        lines.append(f"  {' '.join(words):<27} {text}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    for n in (3, 2, 1):
        if tuple(argv[:n]) in COMMANDS:
            module, _, function = COMMANDS[tuple(argv[:n])][0].partition(":")
            return int(getattr(importlib.import_module(module), function or "main")(argv[n:]) or 0)
    print(usage(), file=sys.stderr if argv and argv[0] not in ("-h", "--help") else sys.stdout)
    return 0 if not argv or argv[0] in ("-h", "--help") else 2


if __name__ == "__main__":
    sys.exit(main())
