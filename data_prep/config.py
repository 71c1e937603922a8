"""Command-line parsing shared by every stage: a dataclass of arguments -> flags via transformers'
`HfArgumentParser`, or a single JSON/YAML file holding them."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")


# flags that mean the same in every training command; a field's own help text wins over these
COMMON_HELP = {
    "steps": "training steps (optimizer updates)",
    "batch_size": "windows per step",
    "lr": "peak learning rate (AdamW; linear warm-up, then cosine decay)",
    "weight_decay": "AdamW weight decay (not on biases, norms and embeddings)",
    "warmup_steps": "steps of linear learning-rate warm-up",
    "grad_clip": "clip the gradient norm to this (0: no clipping)",
    "grad_accum": "micro-batches accumulated into one optimizer step",
    "dropout": "dropout rate",
    "eval_every": "evaluate on the held-out subjects every this many steps",
    "eval_batches": "held-out batches per corpus at each evaluation",
    "log_every": "write a log.jsonl record every this many steps",
    "save_every": "write a checkpoint every this many steps",
    "seed": "random seed (initialisation, data order, masks, augmentation)",
    "seeds": "comma-separated seeds: every row runs once per seed",
    "beam": "beam width of the CTC beam search",
    "mixed_precision": "no | bf16 | fp16",
    "progress": "show progress bars",
}


def build_parser(dataclass_type: type, prog: str | None = None, description: str | None = None):
    """The `HfArgumentParser` of a command, every flag with its help text."""
    from transformers import HfArgumentParser

    parser = HfArgumentParser(dataclass_type, prog=prog, description=description or dataclass_type.__doc__)
    for action in parser._actions:
        if not action.help and action.dest in COMMON_HELP:
            action.help = COMMON_HELP[action.dest]
    return parser


def parse_args(
    dataclass_type: type[T],
    argv: list[str] | None = None,
    prog: str | None = None,
    description: str | None = None,
) -> T:
    """Parse `argv` into `dataclass_type`. `prog config.yaml` (or .json) reads the fields from the file."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(dataclass_type, prog, description)
    if len(argv) == 1 and Path(argv[0]).suffix in (".json", ".yaml", ".yml") and Path(argv[0]).exists():
        loader = parser.parse_json_file if argv[0].endswith(".json") else parser.parse_yaml_file
        (args,) = loader(argv[0])
        return args
    (args,) = parser.parse_args_into_dataclasses(args=argv)
    return args


def run_command(dataclass_type: type[T], job, argv: list[str] | None, prog: str) -> int:
    """Parse flags into `dataclass_type`, run `job(args)`; bad input ends with its message and exit 2,
    not a traceback."""
    from .errors import BiosignalError

    args = parse_args(dataclass_type, argv, prog=prog)
    try:
        job(args)
    except BiosignalError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0
