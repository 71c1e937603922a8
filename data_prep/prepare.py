"""`biotok prepare`: build corpora from real files or the embedded synthetic data.

biotok prepare --synthetic --root biotok_out/data --out biotok_out/corpora
biotok prepare --sources shared_real --root ../shared/data/real --out corpora/real
python -m data_prep.prepare ...   (same flags)
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from .config import run_command
from .corpus import load_sources, prepare_corpus
from .errors import ConfigError

PACKAGED_SOURCES = Path(__file__).parent / "sources"


@dataclass
class PrepareArgs:
    """Build corpora (HF datasets Arrow shards) from a sources file."""

    sources: str = field(
        default="", metadata={"help": "sources YAML/JSON, or a packaged name: shared_real, synthetic"}
    )
    root: str = field(
        default="biotok_out/data", metadata={"help": "folder the sources' paths are relative to"}
    )
    out: str = field(
        default="biotok_out/corpora", metadata={"help": "output folder: one corpus per subfolder"}
    )
    synthetic: bool = field(
        default=False, metadata={"help": "write the embedded synthetic data under --root first"}
    )
    corpora: list[str] = field(
        default_factory=list, metadata={"help": "build only these corpora of the sources file"}
    )
    on_error: str = field(
        default="raise", metadata={"help": "bad file: 'raise' (stop) or 'skip' (list it in the report)"}
    )
    progress: bool = field(default=True, metadata={"help": "show progress bars"})


def resolve_sources(name: str) -> Path:
    path = Path(name)
    if path.exists():
        return path
    packaged = PACKAGED_SOURCES / f"{name}.yaml"
    if packaged.exists():
        return packaged
    known = sorted(p.stem for p in PACKAGED_SOURCES.glob("*.yaml"))
    raise ConfigError("sources", f"{name!r} is neither a file nor a packaged sources name {known}")


def run(args: PrepareArgs) -> list:
    if args.synthetic:
        from .synthetic import write_default_dataset

        write_default_dataset(args.root, progress=args.progress)
        args.sources = args.sources or "synthetic"
    if not args.sources:
        raise ConfigError("sources", "give --sources FILE (or a packaged name) or --synthetic")
    specs = load_sources(resolve_sources(args.sources))
    if args.corpora:
        unknown = set(args.corpora) - {s.name for s in specs}
        if unknown:
            raise ConfigError("corpora", f"not in the sources file: {sorted(unknown)}")
        specs = [s for s in specs if s.name in args.corpora]
    reports = []
    for spec in specs:
        start = time.perf_counter()
        report = prepare_corpus(spec, args.root, args.out, on_error=args.on_error, progress=args.progress)
        reports.append(report)
        note = f", {len(report.skipped_files)} bad files skipped" if report.skipped_files else ""
        print(
            f"{spec.name}: {report.n_windows} windows from {report.n_files} files "
            f"({report.shards_written} shards written, {report.shards_skipped} reused{note}) "
            f"in {time.perf_counter() - start:.1f} s -> {report.path}"
        )
        for bad in report.skipped_files:
            print(f"  skipped {bad['error']}")
    return reports


def main(argv: list[str] | None = None) -> int:
    return run_command(PrepareArgs, run, argv, prog="biotok prepare")


if __name__ == "__main__":
    sys.exit(main())
