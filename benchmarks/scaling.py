"""2-GPU scaling of masked-token pretraining (issue 20): the same `accelerate launch` command on 1 and 2
GPUs, DDP and FSDP, with the same per-GPU batch; the loss curves of 1 and 2 GPUs at the same global
batch; an exact resume of the 2-GPU run.

    python benchmarks/scaling.py --tokens TOKENS --out OUT [--size base --batch 32 --steps 200]

Runs (each `accelerate launch --config_file foundation/accelerate/{ddp,fsdp}.yaml -m foundation.pretrain`):
  1gpu_b{B}        1 GPU, batch B                  throughput reference
  ddp_2gpu_b{B}    2 GPUs (DDP), batch B per GPU   scaling; loss curve at global batch 2B
  fsdp_2gpu_b{B}   2 GPUs (FSDP), batch B per GPU  scaling (full shard: parameters gathered again for
                   the backward)
  fsdp_keep_2gpu_b{B}  the same with --fsdp_reshard_after_forward false (parameters kept gathered
                   from the forward to the backward, as ZeRO-2 / SHARD_GRAD_OP)
  fsdp_fused_2gpu_b{B} FSDP with a fused AdamW (--fused_optimizer): no per-parameter DTensor dispatch
  fsdp_whole_2gpu_b{B} FSDP with the whole model as one unit (--fsdp_auto_wrap_policy NO_WRAP): one
                   all-gather and one reduce-scatter per step; fsdp_whole_fused_2gpu_b{B} adds the fused AdamW;
                   fsdp_whole_keep_2gpu_b{B} keeps the one unit gathered from the forward to the backward
                   (one all-gather per step instead of two)
  1gpu_b{2B}       1 GPU, batch 2B                 loss curve at global batch 2B
  *_compiled_*     the same with each transformer block compiled (--compile); efficiencies
                   against 1gpu_compiled_b{B}
  ddp_2gpu_resumed stopped at steps/2, then resumed to the end: its losses against ddp_2gpu_b{B}
Writes OUT/scaling.json (tokens/s per GPU and per log window, efficiencies, losses, resume differences,
a failed run's last output lines), OUT/scaling.png, each run's log.jsonl under OUT/runs/ and its output in
OUT/runs/<run>.log.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

# NVLink multicast stays off on shared hosts (the device tool's KINDS.md)
SAFE_ENV = {"NCCL_NVLS_ENABLE": "0", "TORCH_SYMM_MEM_DISABLE_MULTICAST": "1", "NVSHMEM_DISABLE_NVLS": "1"}


def launch(
    config: str, n_gpus: int, tokens: list[str], out: Path, args, batch: int, flags=(), **extra
) -> float:
    """One pretraining run (`flags`: extra `accelerate launch` options); returns its wall time in s."""
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", config, *flags]
    cmd += ["--num_processes", str(n_gpus), "--main_process_port", str(29500 + n_gpus)]
    cmd += ["-m", "foundation.pretrain", "--tokens", *tokens, "--size", args.size]
    cmd += ["--batch_size", str(batch), "--steps", str(args.steps), "--lr", "5e-4", "--warmup_steps", "20"]
    cmd += ["--log_every", str(args.log_every), "--eval_every", str(10 * args.steps), "--eval_batches", "1"]
    # checkpoints only where the resume check needs one: a save inside a throughput window (FSDP gathers
    # the whole state for it) is not training speed
    save_every = args.steps if args.no_resume else halfway(args)
    cmd += ["--save_every", str(save_every), "--mixed_precision", "bf16", "--progress", "false"]
    cmd += ["--target_levels", str(args.target_levels), "--out", str(out)]
    if args.deterministic:
        cmd += ["--deterministic", "true"]
    for key, value in extra.items():
        cmd += [f"--{key}", str(value)]
    env = {**os.environ, **SAFE_ENV, "CUDA_VISIBLE_DEVICES": ",".join(map(str, range(n_gpus)))}
    if args.cpu:  # a smoke run of this script: processes on the CPU (gloo), no GPU
        cmd.insert(cmd.index("-m", 3), "--cpu")
        env.update(ACCELERATE_USE_CPU="1", OMP_NUM_THREADS="1")
    started = time.perf_counter()
    print("+", " ".join(cmd), flush=True)
    # each run's output beside its folder: a failed run's last lines go into scaling.json
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out.parent / f"{out.name}.log", "a") as log:
        subprocess.run(cmd, check=True, env=env, stdout=log, stderr=subprocess.STDOUT)
    return time.perf_counter() - started


def log_tail(run: Path, lines: int = 4) -> str:
    """A failed run's error lines (the launcher's own traceback left out), else its last lines."""
    log = run.parent / f"{run.name}.log"
    text = log.read_text(errors="replace").splitlines() if log.exists() else []
    errors = [line for line in text if "error" in line.lower() and "CalledProcessError" not in line]
    return " | ".join((errors or text)[-lines:])


def halfway(args) -> int:
    """The resume point: half the run, on a log step (a log window straddling it would mix steps)."""
    return args.steps // 2 // args.log_every * args.log_every


def train_rows(run: Path) -> list[dict]:
    rows = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    return [r for r in rows if "train/loss" in r]


def throughput(run: Path, skip: int) -> float:
    """Median input tokens/s over the log windows after the first `skip` (compilation, allocator)."""
    rates = [r["train/tokens_per_s"] for r in train_rows(run)][skip:]
    return statistics.median(rates)


def compare_runs(reference: Path, other: Path, after_step: int) -> dict:
    """Logged losses of `other` after `after_step` against `reference`'s, and their final weights."""
    losses = {r["step"]: r["train/loss"] for r in train_rows(reference)}
    after = {r["step"]: r["train/loss"] for r in train_rows(other) if r["step"] > after_step}
    diffs = [abs(after[s] - losses[s]) for s in after]
    weights = [(run / "final" / "model.safetensors").read_bytes() for run in (reference, other)]
    return {
        "steps_compared": sorted(after),
        "max_abs_loss_difference": max(diffs) if diffs else None,
        "identical": bool(diffs) and max(diffs) == 0.0,
        "final_weights_identical": weights[0] == weights[1],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", nargs="+", required=True, help="token corpus folders (biotok tokenize)")
    parser.add_argument("--out", required=True, help="folder for scaling.json, scaling.png and runs/")
    parser.add_argument("--size", default="base", help="foundation size: tiny | small | base")
    parser.add_argument("--batch", type=int, default=32, help="windows per GPU per step")
    parser.add_argument("--steps", type=int, default=200, help="steps per run (even)")
    parser.add_argument("--log_every", type=int, default=10, help="steps per throughput window")
    parser.add_argument("--target_levels", type=int, default=2, help="RVQ levels read and predicted")
    parser.add_argument("--skip", type=int, default=3, help="log windows left out of the throughput")
    parser.add_argument("--cpu", action="store_true", help="smoke-test the script on the CPU")
    parser.add_argument("--only", default="", help="comma-separated run names to make (default: all)")
    parser.add_argument("--no_resume", action="store_true", help="skip the resume check")
    parser.add_argument("--repeat", action="store_true", help="rerun the 2-GPU run: run-to-run floor")
    parser.add_argument(
        "--deterministic", action="store_true", help="deterministic kernels in every run (slower)"
    )
    args = parser.parse_args()
    out = Path(args.out)
    runs = out / "runs"
    ddp, fsdp = "foundation/accelerate/ddp.yaml", "foundation/accelerate/fsdp.yaml"
    b = args.batch
    keep = ("--fsdp_reshard_after_forward", "false")
    # the whole model as one FSDP unit: one all-gather and one reduce-scatter per step instead of 27 + 14,
    # and one unit's host work (the profile found FSDP2 host-bound at this size)
    whole = ("--fsdp_auto_wrap_policy", "NO_WRAP")
    fused = {"fused_optimizer": "true"}
    compiled = {"compile": "true"}
    # name: (config, GPUs, per-GPU batch, `accelerate launch` flags, extra `biotok pretrain` arguments)
    plan = {
        f"1gpu_b{b}": (ddp, 1, b, (), {}),
        f"ddp_2gpu_b{b}": (ddp, 2, b, (), {}),
        f"fsdp_2gpu_b{b}": (fsdp, 2, b, (), {}),
        f"fsdp_keep_2gpu_b{b}": (fsdp, 2, b, keep, {}),
        f"fsdp_fused_2gpu_b{b}": (fsdp, 2, b, (), fused),
        f"fsdp_whole_2gpu_b{b}": (fsdp, 2, b, whole, {}),
        f"fsdp_whole_fused_2gpu_b{b}": (fsdp, 2, b, whole, fused),
        f"fsdp_whole_keep_2gpu_b{b}": (fsdp, 2, b, whole + keep, {}),
        f"1gpu_b{2 * b}": (ddp, 1, 2 * b, (), {}),
        # each transformer block compiled (--compile): against the compiled 1-GPU run
        f"1gpu_compiled_b{b}": (ddp, 1, b, (), compiled),
        f"ddp_compiled_2gpu_b{b}": (ddp, 2, b, (), compiled),
        f"fsdp_whole_compiled_2gpu_b{b}": (fsdp, 2, b, whole, compiled),
    }
    if args.only:
        plan = {name: run for name, run in plan.items() if name in args.only.split(",")}
    wall, failed = {}, {}
    for name, (config, n_gpus, batch, flags, extra) in list(plan.items()):
        shutil.rmtree(runs / name, ignore_errors=True)
        try:
            wall[name] = launch(config, n_gpus, args.tokens, runs / name, args, batch, flags, **extra)
        except subprocess.CalledProcessError as err:  # recorded; the other runs still measure
            failed[name] = f"exit status {err.returncode}: {log_tail(runs / name)}"
            if not (runs / name / "log.jsonl").exists():
                del plan[name]
    resumed, repeat = runs / "ddp_2gpu_resumed", runs / "ddp_2gpu_repeat"
    if not args.no_resume:
        shutil.rmtree(resumed, ignore_errors=True)
        launch(ddp, 2, args.tokens, resumed, args, b, stop_at=halfway(args))
        launch(ddp, 2, args.tokens, resumed, args, b)
    if args.repeat:  # the run-to-run floor: the same uninterrupted 2-GPU run again
        shutil.rmtree(repeat, ignore_errors=True)
        launch(ddp, 2, args.tokens, repeat, args, b)

    rate = {name: throughput(runs / name, args.skip) for name in plan}

    def one_gpu(name: str) -> float:  # the 1-GPU reference of a 2-GPU run: compiled against compiled
        return rate.get(f"1gpu_compiled_b{b}" if "compiled" in name else f"1gpu_b{b}", float("nan"))

    straight = runs / f"ddp_2gpu_b{b}"
    resume = compare_runs(straight, resumed, after_step=halfway(args)) if not args.no_resume else {}
    rerun = compare_runs(straight, repeat, after_step=0) if args.repeat else {}
    result = {
        "size": args.size,
        "batch_per_gpu": b,
        "deterministic": args.deterministic,
        "steps": args.steps,
        "tokens_per_s": rate,
        # every log window's rate: how far a run's windows spread is the measurement's own noise
        "tokens_per_s_windows": {
            name: [r["train/tokens_per_s"] for r in train_rows(runs / name)] for name in plan
        },
        "tokens_per_s_per_gpu": {name: rate[name] / plan[name][1] for name in plan},
        "scaling_efficiency": {
            name.removesuffix(f"_2gpu_b{b}"): value / (2 * one_gpu(name))
            for name, value in rate.items()
            if name.endswith(f"_2gpu_b{b}")
        },
        "failed": failed,
        "wall_s": wall,
        "losses": {name: [[r["step"], r["train/loss"]] for r in train_rows(runs / name)] for name in plan},
        "resume": {"stopped_at": halfway(args), **resume},
        "repeat": rerun,
    }
    (out / "scaling.json").write_text(json.dumps(result, indent=2))
    print(
        json.dumps(
            {k: result[k] for k in ("tokens_per_s_per_gpu", "scaling_efficiency", "resume", "repeat")},
            indent=2,
        )
    )
    try:
        plot(result, out / "scaling.png", b)
    except (ImportError, KeyError) as err:  # the figure is optional where matplotlib is missing
        print(f"no figure: {err}")


def plot(result: dict, path: Path, b: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    for name, label in (
        (f"1gpu_b{2 * b}", f"1 GPU, batch {2 * b}"),
        (f"ddp_2gpu_b{b}", f"2 GPUs (DDP), {b} each"),
    ):
        steps, losses = zip(*result["losses"][name])
        ax.plot(steps, losses, label=label)
    ax.set_xlabel("step")
    ax.set_ylabel("masked-token loss (train)")
    ax.set_title(f"{result['size']} foundation, global batch {2 * b}")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    main()
