"""`biotok finetune emg2qwerty-table`: every model family on one split, several seeds, one table.

biotok finetune emg2qwerty-table --data biotok_out/data/emg2qwerty --steps 1500 --seeds 0,1,2 \
    --foundation runs/foundation/final --jobs 4

Rows: TDS-ConvNet, TINY, SMALL, TINY with RVQ bottlenecks at several bit rates, TINY distilled from
SMALL (same seed), the foundation-backed model, and TINY personalized (the generic TINY fine-tuned on
the personalized split's user). Each (row, seed) is one `biotok finetune emg2qwerty` run in its own
process (`--jobs` at a time); the table reads their `results.json`: test CER over whole held-out
sessions, mean ± std over seeds (population std, as emg2qwerty reports).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from data_prep.atomic import atomic_path
from data_prep.config import run_command
from data_prep.errors import ConfigError


@dataclass
class TableArgs:
    """Train and test every emg2qwerty model family over several seeds; write a Markdown + JSON table."""

    data: str = field(
        default="biotok_out/data/emg2qwerty",
        metadata={"help": "folder of emg2qwerty sessions (<session>.hdf5) and splits/"},
    )
    split: str = field(default="", metadata={"help": "generic split (default: <data>/splits/generic.yaml)"})
    personal_split: str = field(
        default="", metadata={"help": "personalized split (default: <data>/splits/user0.yaml if present)"}
    )
    out: str = field(
        default="runs/emg2qwerty_table", metadata={"help": "folder for table.md, results and every run"}
    )
    seeds: str = "0,1,2"
    steps: int = field(default=1500, metadata={"help": "training steps of every generic row"})
    personal_steps: int = field(
        default=300, metadata={"help": "fine-tuning steps of the personalized row (from the generic TINY)"}
    )
    batch_size: int = 32
    rvq: str = field(default="1x1024,2x1024,4x1024", metadata={"help": "bottlenecks, levels x codebook size"})
    large: bool = field(
        default=False,
        metadata={
            "help": "add the LARGE transformer row (1024 x 8, 109 M parameters, lr 3e-4): the hard tier's, "
            "where a generic model has to generalise (the sEMG scaling paper's largest)"
        },
    )
    foundation: str = field(default="", metadata={"help": "pretrained foundation folder ('' skips the row)"})
    tokenizer: str = field(
        default="pretrained_models/tokenizer-small-v1",
        metadata={
            "help": "the foundation's tokenizer folder (foundation-backed row; v1 knows the wristband electrodes)"
        },
    )
    rows: str = field(default="", metadata={"help": "only these rows (comma-separated names)"})
    runs: str = field(
        default="",
        metadata={
            "help": 'extra (row@seed) runs beside rows x seeds, e.g. "SMALL@1,foundation-backed@0"; '
            "a dependent row's dependency of the same seed is added"
        },
    )
    mixed_precision: str = "no"
    jobs: int = field(default=1, metadata={"help": "runs trained at once (several fit one GPU)"})
    gpus: str = field(
        default="",
        metadata={
            "help": "GPU ids the runs are spread over, e.g. '0,1': each run takes the least busy one "
            "('' = every run sees the default devices)"
        },
    )
    beam: int = 50
    extra: str = field(default="", metadata={"help": "extra flags for every run"})


def _runs(args: TableArgs) -> list[tuple[str, list[str], str]]:
    """(row name, flags, the row it waits for) for one seed."""
    rows: list[tuple[str, list[str], str]] = [
        ("TDS-ConvNet", ["--model", "tds"], ""),
        ("TINY", ["--model", "tiny"], ""),
        ("SMALL", ["--model", "small", "--lr", "5e-4"], ""),
    ]
    if args.large:
        rows.append(("LARGE", ["--model", "large", "--lr", "3e-4"], ""))
    for spec in filter(None, args.rvq.split(",")):
        levels, size = spec.split("x")
        rows.append(
            (
                f"TINY + RVQ {spec}",
                ["--model", "tiny", "--rvq_levels", levels, "--rvq_codebook_size", size],
                "",
            )
        )
    rows.append(("TINY distilled from SMALL", ["--model", "tiny", "--teacher", "{SMALL}/final"], "SMALL"))
    if args.foundation:
        rows.append(
            (
                "foundation-backed",
                [
                    "--model",
                    "foundation",
                    "--foundation",
                    args.foundation,
                    "--tokenizer",
                    args.tokenizer,
                    "--lr",
                    "5e-4",
                ],
                "",
            )
        )
    personal = args.personal_split or str(Path(args.data) / "splits" / "user0.yaml")
    if Path(personal).exists():
        rows.append(
            (
                "TINY personalized",
                [
                    "--split",
                    personal,
                    "--init_from",
                    "{TINY}/final",
                    "--steps",
                    str(args.personal_steps),
                    "--warmup_steps",
                    "30",
                    "--lr",
                    "3e-4",
                ],
                "TINY",
            )
        )
    return rows


def _plan(args: TableArgs, rows: list[tuple[str, list[str], str]]) -> list[tuple[str, int]]:
    """The (row, seed) runs in queue order: rows x seeds (or `--rows` only), then `--runs`, each
    dependency before the row that waits for it."""
    deps = {name: dep for name, _, dep in rows}
    wanted = set(args.rows.split(",")) if args.rows else set(deps)
    pairs = [(name, int(seed)) for seed in args.seeds.split(",") if seed for name in deps if name in wanted]
    for spec in filter(None, args.runs.split(",")):
        name, _, seed = spec.rpartition("@")
        if name not in deps or not seed.isdigit():
            raise ConfigError("runs", f"{spec!r}: expected <row>@<seed> with a row of {sorted(deps)}")
        pairs.append((name, int(seed)))
    plan: list[tuple[str, int]] = []
    for name, seed in pairs:
        for pair in ((deps[name], seed), (name, seed)):
            if pair[0] and pair not in plan:
                plan.append(pair)
    # the rows others depend on first, dependent rows last: each waits only for its own dependency
    needed = set(deps.values())
    return sorted(plan, key=lambda p: (bool(deps[p[0]]), p[0] not in needed))


class GpuPool:
    """Spreads concurrent runs over GPU ids ("0,1"): `take` hands out the GPU running the fewest, since a
    GPU time-slices between processes (no MPS). An empty spec hands out None (default devices)."""

    def __init__(self, spec: str):
        self.busy = dict.fromkeys((g for g in spec.split(",") if g), 0)
        self.lock = threading.Lock()

    def take(self) -> str | None:
        if not self.busy:
            return None
        with self.lock:
            gpu = min(self.busy, key=self.busy.get)
            self.busy[gpu] += 1
            return gpu

    def give(self, gpu: str | None) -> None:
        if gpu is not None:
            with self.lock:
                self.busy[gpu] -= 1


def _folder(out: Path, row: str, seed: int) -> Path:
    return out / f"{row.replace(' ', '_').replace('+', 'plus')}" / f"seed{seed}"


def run_table(args: TableArgs) -> dict:
    out = Path(args.out)
    rows = _runs(args)
    plan = _plan(args, rows)
    flags_of, dep_of = {name: f for name, f, _ in rows}, {name: d for name, _, d in rows}
    base = [
        "--data",
        args.data,
        "--steps",
        str(args.steps),
        "--batch_size",
        str(args.batch_size),
        "--mixed_precision",
        args.mixed_precision,
        "--beam",
        str(args.beam),
        "--progress",
        "false",
    ]
    if args.split:
        base += ["--split", args.split]
    base += args.extra.split()

    failures: list[str] = []
    # parallel runs share the CPU: without a limit each process's thread pools take every core
    env = {"OMP_NUM_THREADS": str(max(1, (os.cpu_count() or 1) // max(1, args.jobs))), **os.environ}

    gpus = GpuPool(args.gpus)

    def run(row: str, flags: list[str], seed: int) -> None:
        folder = _folder(out, row, seed)
        if (folder / "results.json").exists():
            return
        gpu = gpus.take()
        try:
            _train(row, flags, seed, folder, gpu)
        finally:
            gpus.give(gpu)

    def _train(row: str, flags: list[str], seed: int, folder: Path, gpu: str | None) -> None:
        flags = [
            f.replace("{SMALL}", str(_folder(out, "SMALL", seed))).replace(
                "{TINY}", str(_folder(out, "TINY", seed))
            )
            for f in flags
        ]
        folder.mkdir(parents=True, exist_ok=True)
        command = [
            sys.executable,
            "-m",
            "finetune.emg2qwerty",
            *base,
            *flags,
            "--seed",
            str(seed),
            "--out",
            str(folder),
        ]
        run_env = env if gpu is None else {**env, "CUDA_VISIBLE_DEVICES": gpu}
        with open(folder / "run.log", "w") as log:
            done = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, env=run_env)
        if done.returncode:  # reported, and the table goes on with the other runs
            failures.append(f"{row} seed {seed}: exit {done.returncode}, see {folder / 'run.log'}")
            print(f"FAILED: {failures[-1]}", flush=True)
            return
        print(f"done: {row} seed {seed}", flush=True)

    # one queue in plan order; a dependent run waits only for its own dependency (submitted earlier,
    # so it is already running or done)
    started: dict[tuple[str, int], Future] = {}

    def after(row: str, seed: int) -> None:
        if (dep_of[row], seed) in started:
            started[(dep_of[row], seed)].result()
        run(row, flags_of[row], seed)

    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        for row, seed in plan:
            started[(row, seed)] = pool.submit(after, row, seed)
        for future in started.values():
            future.result()
    table = collect(out, [r for r, _, _ in rows], sorted({seed for _, seed in plan}))
    table["args"], table["failures"] = asdict(args), failures
    with atomic_path(out / "table.json") as tmp:
        tmp.write_text(json.dumps(table, indent=2))
    with atomic_path(out / "table.md") as tmp:
        tmp.write_text(markdown(table))
    print(markdown(table))
    return table


def collect(out: Path, rows: list[str], seeds: list[int]) -> dict:
    """Mean ± population std over seeds of each row's test and validation CER."""
    table = {"rows": []}
    for row in rows:
        done = [s for s in seeds if (_folder(out, row, s) / "results.json").exists()]
        if not done:
            continue
        results = [json.loads((_folder(out, row, s) / "results.json").read_text()) for s in done]
        entry = {
            "row": row,
            "seeds": done,
            "parameters": results[0]["parameters"],
            "compression": results[0].get("compression") or {},
        }
        for key in ("cer_greedy", "cer_beam", "cer_beam_lm"):
            values = [r["test"][key] for r in results if key in r.get("test", {})]
            if values:
                entry[key] = {"mean": float(np.mean(values)), "std": float(np.std(values)), "values": values}
        values = [r["val_cer_windows"] for r in results if "val_cer_windows" in r]
        if values:
            entry["val_cer"] = {
                "mean": float(np.mean(values)),
                "std": float(np.std(values)),
                "values": values,
            }
        table["rows"].append(entry)
    return table


CONVERGED_CER = 20.0  # test CER (beam + LM) below which a run counts as converged


def markdown(table: dict) -> str:
    def cell(entry: dict, key: str) -> str:
        if key not in entry:
            return "—"
        values = " / ".join(f"{v:.1f}" for v in entry[key]["values"])
        return f"{entry[key]['mean']:.1f} ± {entry[key]['std']:.1f} ({values})"

    def converged(entry: dict) -> str:
        # CTC runs either leave the all-blank plateau or stay near 100% CER: count those that left it
        if "cer_beam_lm" not in entry:
            return "—"
        values = entry["cer_beam_lm"]["values"]
        return f"{sum(v < CONVERGED_CER for v in values)}/{len(values)}"

    lines = [
        "| model | seeds | parameters | bits/frame (x vs latent, x vs raw) | val CER (windows) | test CER greedy "
        "| test CER beam | test CER beam + LM | converged |",
        "|---|---|---:|---|---:|---:|---:|---:|---:|",
    ]
    for e in table["rows"]:
        c = e["compression"]
        bits = f"{c['bits_per_frame']:.0f} ({c['vs_latent']:.0f}x, {c['vs_raw']:.0f}x)" if c else "—"
        lines.append(
            f"| {e['row']} | {','.join(map(str, e['seeds']))} | {e['parameters']:,} | {bits} | {cell(e, 'val_cer')} | {cell(e, 'cer_greedy')} "
            f"| {cell(e, 'cer_beam')} | {cell(e, 'cer_beam_lm')} | {converged(e)} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    return run_command(TableArgs, run_table, argv, prog="biotok finetune emg2qwerty-table")


if __name__ == "__main__":
    sys.exit(main())
