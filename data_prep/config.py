"""Command-line parsing shared by every stage: a dataclass of arguments -> flags via transformers'
`HfArgumentParser`, or a single JSON/YAML file holding them."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")


def parse_args(
    dataclass_type: type[T],
    argv: list[str] | None = None,
    prog: str | None = None,
    description: str | None = None,
) -> T:
    """Parse `argv` into `dataclass_type`. `prog config.yaml` (or .json) reads the fields from the file."""
    from transformers import HfArgumentParser

    argv = list(sys.argv[1:] if argv is None else argv)
    parser = HfArgumentParser(dataclass_type, prog=prog, description=description or dataclass_type.__doc__)
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
