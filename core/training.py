"""Training checkpoints without pickle: weights and optimizer tensors in safetensors, everything else
in JSON, written to a temporary folder and renamed. Shared by every stage's training loop.

    <run>/checkpoints/step_000100/
        model.safetensors  optimizer.safetensors  rng.safetensors  state.json
"""

from __future__ import annotations

import json
import math
import os
import queue
import random
import shutil
import threading
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from data_prep.atomic import atomic_path
from data_prep.errors import BiosignalError, ConfigError

FILES = ("model.safetensors", "optimizer.safetensors", "rng.safetensors", "state.json")


def _split_optimizer(state: dict) -> tuple[dict[str, torch.Tensor], dict]:
    tensors, rest = {}, {"param_groups": state["param_groups"], "state": {}}
    for pid, entries in state["state"].items():
        rest["state"][str(pid)] = {}
        for key, value in entries.items():
            if torch.is_tensor(value):
                tensors[f"{pid}.{key}"] = value.detach().cpu().contiguous()
                rest["state"][str(pid)][key] = "__tensor__"
            else:
                rest["state"][str(pid)][key] = value
    return tensors, rest


def _join_optimizer(tensors: dict[str, torch.Tensor], rest: dict) -> dict:
    state = {}
    for pid, entries in rest["state"].items():
        state[int(pid)] = {k: tensors[f"{pid}.{k}"] if v == "__tensor__" else v for k, v in entries.items()}
    return {"state": state, "param_groups": rest["param_groups"]}


def full_state_dicts(model: torch.nn.Module, optimizer=None) -> tuple[dict, dict | None]:
    """The whole model's (and optimizer's) state, as one process without sharding would hold it.

    Under FSDP2 the parameters are sharded DTensors: the full tensors are gathered (a collective: call
    it on every rank) onto the CPU of rank 0, and the optimizer state keyed by parameter name is put
    back in `torch.optim`'s order, so a checkpoint loads into an unsharded model and optimizer before
    `accelerator.prepare` shards them again. Other ranks get empty dicts."""
    from torch.distributed.fsdp import FSDPModule

    sharded = [module for module in model.modules() if isinstance(module, FSDPModule)]
    if not sharded:
        return model.state_dict(), optimizer.state_dict() if optimizer is not None else None
    # With reshard_after_forward=False a forward without backward (validation) leaves the parameters
    # gathered as plain tensors whose storage FSDP frees later: shard them again before reading.
    for module in sharded:
        module.reshard()
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions,
        get_model_state_dict,
        get_optimizer_state_dict,
    )

    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    weights = get_model_state_dict(model, options=options)
    if optimizer is None:
        return weights, None
    by_name = get_optimizer_state_dict(model, optimizer, options=options)
    if not by_name:
        return weights, {}
    index, groups = {}, []
    for group in by_name["param_groups"]:
        for name in group["params"]:
            index[name] = len(index)
        groups.append({**group, "params": [index[name] for name in group["params"]]})
    state = {index[name]: value for name, value in by_name["state"].items()}
    return weights, {"state": state, "param_groups": groups}


def save_checkpoint(
    folder: str | Path,
    model: torch.nn.Module | dict,
    optimizer,
    scheduler,
    step: int,
    extra: dict,
    keep: int = 2,
) -> Path:
    """Write `folder/step_{step}` atomically and keep only the newest `keep` checkpoints. `model` and
    `optimizer` may be given as their state dicts (see `full_state_dicts`)."""
    folder = Path(folder)
    weights = model if isinstance(model, dict) else model.state_dict()
    optimizer_state = optimizer if isinstance(optimizer, dict) else optimizer.state_dict()
    final = folder / f"step_{step:06d}"
    with atomic_path(final) as tmp:
        tmp.mkdir(parents=True)
        save_file(
            {k: v.detach().cpu().contiguous() for k, v in weights.items()},
            str(tmp / "model.safetensors"),
        )
        opt_tensors, opt_rest = _split_optimizer(optimizer_state)
        save_file(opt_tensors, str(tmp / "optimizer.safetensors"))
        rng = {"torch": torch.get_rng_state()}
        if torch.cuda.is_available():
            rng.update({f"cuda{i}": s for i, s in enumerate(torch.cuda.get_rng_state_all())})
        save_file(rng, str(tmp / "rng.safetensors"))
        state = {
            "step": step,
            "optimizer": opt_rest,
            "scheduler": scheduler.state_dict(),  # LambdaLR stores None for function lambdas: JSON-safe
            "python_random": _jsonable(random.getstate()),
            "numpy_random": _jsonable(np.random.get_state()),
            **extra,
        }
        (tmp / "state.json").write_text(json.dumps(state))
    for old in sorted(folder.glob("step_*"))[:-keep]:
        shutil.rmtree(old)
    return final


def _jsonable(obj):
    if isinstance(obj, tuple | list):
        return [_jsonable(o) for o in obj]
    if isinstance(obj, np.ndarray):
        return {"__ndarray__": obj.tolist(), "dtype": str(obj.dtype)}
    return obj


def _from_jsonable(obj):
    if isinstance(obj, dict) and "__ndarray__" in obj:
        return np.asarray(obj["__ndarray__"], dtype=obj["dtype"])
    if isinstance(obj, list):
        return tuple(_from_jsonable(o) for o in obj)
    return obj


def latest_checkpoint(folder: str | Path) -> Path | None:
    found = sorted(Path(folder).glob("step_*")) if Path(folder).exists() else []
    return found[-1] if found else None


def load_checkpoint(path: str | Path, model: torch.nn.Module, optimizer, scheduler) -> dict:
    """Restore model, optimizer, scheduler and RNG states; returns state.json. A missing, truncated or
    corrupt file is refused with a clear error."""
    path = Path(path)
    for name in FILES:
        if not (path / name).is_file():
            raise BiosignalError(path / name, "checkpoint", "missing: the checkpoint is incomplete")
    try:
        weights = load_file(str(path / "model.safetensors"))
        opt_tensors = load_file(str(path / "optimizer.safetensors"))
        rng = load_file(str(path / "rng.safetensors"))
        state = json.loads((path / "state.json").read_text())
    except (SafetensorError, json.JSONDecodeError, OSError) as err:
        raise BiosignalError(path, "checkpoint", f"corrupt or truncated: {err}") from None
    missing, unexpected = model.load_state_dict(weights, strict=False)
    if missing or unexpected:
        raise BiosignalError(
            path / "model.safetensors",
            "weights",
            f"does not match the model: missing {missing[:5]}, unexpected {unexpected[:5]}",
        )
    optimizer.load_state_dict(_join_optimizer(opt_tensors, state["optimizer"]))
    scheduler.load_state_dict(state["scheduler"])
    torch.set_rng_state(rng["torch"])
    if torch.cuda.is_available():
        cuda_states = [rng[k] for k in sorted(rng) if k.startswith("cuda")]
        if len(cuda_states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda_states)
    random.setstate(_from_jsonable(state["python_random"]))
    np.random.set_state(_from_jsonable(state["numpy_random"]))
    return state


def weight_decay_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """AdamW parameter groups: decay matrices, not biases, norms or embeddings."""
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        (decay if param.ndim >= 2 and "embed" not in name else no_decay).append(param)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def save_run_checkpoint(accelerator, folder: Path, model, optimizer, scheduler, step: int, sampler) -> None:
    """Every rank's sampler position gathered, then one checkpoint written by the main process."""
    from accelerate.utils import gather_object

    samplers = (
        gather_object([sampler.state_dict()]) if accelerator.num_processes > 1 else [sampler.state_dict()]
    )
    weights, optimizer_state = full_state_dicts(model, optimizer)  # every rank: a collective under FSDP
    if accelerator.is_main_process:
        save_checkpoint(folder, weights, optimizer_state, scheduler, step, {"samplers": samplers})


def checkpoint_saver(accelerator, out: Path, model, optimizer, scheduler, sampler=None):
    """`on_save(step)` of a training loop: `save_run_checkpoint` into `out/checkpoints`."""

    def on_save(step: int) -> None:
        save_run_checkpoint(
            accelerator, Path(out) / "checkpoints", model, optimizer, scheduler, step, sampler
        )

    return on_save


def end_training(accelerator) -> None:
    """Wait for every rank, then end trackers and the process group; call it after `del` of the
    prepared (DDP-wrapped) model.

    The DDP reducer holds its own reference to the process group and is freed with the GIL held. Were it
    the last reference, Gloo's destructor would wait for a worker thread that needs the GIL to free the
    last collective's tensors: a deadlock seen in about 1 in 10 two-process CPU runs. Freeing the wrapper
    first leaves the last reference to `destroy_process_group`, which releases the GIL.
    """
    import gc

    accelerator.wait_for_everyone()
    accelerator.free_memory()  # Accelerate's own references to the wrapper
    gc.collect()
    accelerator.end_training()


@contextmanager
def deterministic_kernels():
    """Deterministic GPU kernels inside the block, so that two runs (and a resumed run) give the same
    losses bit for bit; slower, so for reproducibility checks, not for throughput. The previous settings
    come back on exit.

    On the GPU the fused attention backward kernels and index_add (the backward of index_select and of
    embedding lookups) accumulate with atomic adds, whose order varies from run to run; cuBLAS needs a
    fixed workspace (set before its first use). Attention falls back to the unfused math kernel."""
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    backends = ("flash", "mem_efficient", "cudnn")
    before = (
        torch.are_deterministic_algorithms_enabled(),
        torch.backends.cudnn.benchmark,
        [getattr(torch.backends.cuda, f"{b}_sdp_enabled")() for b in backends],
    )
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.benchmark = False
    for backend in backends:
        getattr(torch.backends.cuda, f"enable_{backend}_sdp")(False)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before[0])
        torch.backends.cudnn.benchmark = before[1]
        for backend, enabled in zip(backends, before[2]):
            getattr(torch.backends.cuda, f"enable_{backend}_sdp")(enabled)


def lr_lambda(warmup: int, total: int):
    def schedule(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return schedule


def resume_run(out: Path, resume: bool, model, optimizer, scheduler, accelerator, sampler=None) -> int:
    """Load the newest checkpoint under `out/checkpoints` (when `resume` and one exists) into the
    unprepared model, optimizer and scheduler, and this rank's sampler; returns the step to start at."""
    checkpoint = latest_checkpoint(Path(out) / "checkpoints") if resume else None
    if checkpoint is None:
        return 0
    state = load_checkpoint(checkpoint, model, optimizer, scheduler)
    if sampler is not None:
        sampler.load_state_dict(state["samplers"][accelerator.process_index])
    accelerator.print(f"resumed from {checkpoint} at step {state['step']}")
    return state["step"]


class Prefetcher:
    """Batches of a sampler (`next_batch()`, `state_dict()`, `load_state_dict()`, e.g. `MixedCorpus`)
    made `depth` steps ahead in a background thread, so that reading and collating windows overlaps
    the accelerator's step (Arrow reads and numpy copies release the GIL).

    Its `state_dict()` is the sampler's state after the last batch handed out, not after the ones
    made ahead: a checkpoint resumes exactly where training was. Load state before the first batch.
    `depth=0` makes each batch when it is asked for (no thread): for CPU training, whose step already
    uses every core.
    """

    def __init__(self, sampler, depth: int = 4):
        self.sampler, self.depth = sampler, depth
        self._queue: queue.Queue | None = None
        self._stop = threading.Event()
        self._state = sampler.state_dict()

    def state_dict(self) -> dict:
        return self._state

    def load_state_dict(self, state: dict) -> None:
        if self._queue is not None:
            raise RuntimeError("load the sampler state before the first batch")  # the thread is ahead
        self.sampler.load_state_dict(state)
        self._state = self.sampler.state_dict()

    def _work(self) -> None:
        try:
            while not self._stop.is_set():
                item = (self.sampler.next_batch(), self.sampler.state_dict())
                while not self._stop.is_set():
                    try:
                        self._queue.put(item, timeout=0.5)
                        break
                    except queue.Full:
                        continue
        except BaseException as err:  # handed to the training loop, which raises it
            self._queue.put((err, None))

    def __iter__(self):
        return self

    def __next__(self) -> dict:
        if self.depth == 0:
            batch = self.sampler.next_batch()
            self._state = self.sampler.state_dict()
            return batch
        if self._queue is None:
            self._queue = queue.Queue(self.depth)
            threading.Thread(target=self._work, daemon=True, name="batch-prefetch").start()
        batch, state = self._queue.get()
        if isinstance(batch, BaseException):
            raise batch
        self._state = state
        return batch

    def close(self) -> None:
        self._stop.set()


def data_parallel_batches(accelerator, corpora: dict, weights, batch_size: int, seed: int, collate=None):
    """This rank's batches of `MixedCorpus(corpora, weights)`: every rank draws with one seed and takes a
    disjoint part of each global batch; made ahead in a thread (`Prefetcher`) on an accelerator, when
    asked for on a CPU, whose step already uses every core. Close it when training ends."""
    from data_prep.mixing import MixedCorpus

    sampler = MixedCorpus(
        corpora,
        weights,
        batch_size,
        seed=seed,
        collate=collate,
        rank=accelerator.process_index,
        world_size=accelerator.num_processes,
    )
    return Prefetcher(sampler, depth=0 if accelerator.device.type == "cpu" else 4)


@dataclass
class Cadence:
    """When a training loop logs, evaluates, saves and stops (steps count from 1)."""

    steps: int  # the schedule's length: the run is complete at this step
    log_every: int
    eval_every: int
    save_every: int
    stop_at: int = 0  # stop early at this step (0: run to `steps`), e.g. for preemptible jobs
    max_seconds: float = 0  # stop once this much training time has passed (checked at log steps)
    grad_clip: float = 0.0  # max gradient norm (0: no clipping)
    progress: bool = True
    profile: str = ""  # "FIRST:COUNT": profile steps FIRST..FIRST+COUNT-1 (torch.profiler) into profile_dir
    profile_dir: str = ""

    @classmethod
    def from_args(cls, args) -> Cadence:
        """From a stage's argument dataclass (the fields of the same names; max_seconds and profile if it
        has them; the profile goes to `args.out`/profile)."""
        names = ("steps", "log_every", "eval_every", "save_every", "stop_at", "max_seconds", "grad_clip")
        cadence = cls(**{n: getattr(args, n) for n in names if hasattr(args, n)}, progress=args.progress)
        if getattr(args, "profile", ""):
            cadence.profile, cadence.profile_dir = args.profile, str(Path(args.out) / "profile")
            cadence.profiled_steps()  # a malformed FIRST:COUNT fails before training starts
        return cadence

    def profiled_steps(self) -> range:
        """The steps (0-based) `profile` names; empty without one."""
        if not self.profile:
            return range(0)
        first, _, count = self.profile.partition(":")
        try:
            first, count = int(first), int(count or 1)
        except ValueError:
            raise ConfigError(
                "profile", f"expected FIRST:COUNT steps such as 20:5, got {self.profile!r}"
            ) from None
        return range(first, first + count)

    def last(self) -> int:
        return min(self.steps, self.stop_at) if self.stop_at else self.steps

    def saves_final(self, last: int) -> bool:
        """Whether a run that `training_loop` ended at step `last` writes its final model: it ran its
        whole schedule, or it had a time budget (stopping on it ends the run, not a pause)."""
        return last == self.steps or bool(self.max_seconds)


@dataclass
class Stage:
    """What a stage brings to `training_loop`: `train_step(step)` runs the forward and backward of one
    step and returns scalars to average over each log window; `on_log(done, means, seconds)` records
    them (and returns the progress bar's postfix); `on_eval(done)` (optional) and `on_save(done)`."""

    train_step: Callable[[int], dict]
    on_log: Callable[[int, dict, float], str]
    on_eval: Callable[[int], None] | None
    on_save: Callable[[int], None]


def _profiler_activities() -> list:
    activities = [torch.profiler.ProfilerActivity.CPU]
    if torch.cuda.is_available():
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    return activities


def _write_profile(profiler, folder: Path, rank: int, steps: int) -> None:
    """Stop `profiler` and write, per rank, the ops by self device time and by self host time (a table a
    reader can hold) and the Chrome trace (chrome://tracing, perfetto.dev)."""
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    profiler.stop()
    folder.mkdir(parents=True, exist_ok=True)
    events = profiler.key_averages()
    tables = [f"{steps} profiled steps, rank {rank}\n"]
    if torch.cuda.is_available():
        tables.append(events.table(sort_by="self_device_time_total", row_limit=30))
    tables.append(events.table(sort_by="self_cpu_time_total", row_limit=30))
    (folder / f"rank{rank}.txt").write_text("\n\n".join(tables))
    profiler.export_chrome_trace(str(folder / f"rank{rank}.trace.json"))


def training_loop(
    accelerator, optimizer, scheduler, parameters, start: int, cadence: Cadence, stage: Stage, desc: str
) -> int:
    """The loop every stage shares: steps `start..` of `stage.train_step`, then clipping of
    `parameters`, the optimizer and the per-step scheduler; `stage.on_log` at log steps, `on_eval` and
    `on_save` at theirs and at the last step. With `cadence.max_seconds`, every rank stops at the same
    log step. Returns the last step done."""
    from tqdm.auto import tqdm

    parameters = list(parameters)  # a generator would be spent by the first step's clipping
    last = cadence.last()
    bar = tqdm(
        total=cadence.steps,
        initial=start,
        desc=desc,
        disable=not (cadence.progress and accelerator.is_main_process),
    )
    running, n_running, started = {}, 0, time.perf_counter()
    profiled, profiler = cadence.profiled_steps(), None
    for step in range(start, last):
        if profiled and step == profiled.start:
            profiler = torch.profiler.profile(activities=_profiler_activities(), record_shapes=False)
            profiler.start()
        for key, value in stage.train_step(step).items():
            # device tensors are summed where they are and read only at log steps
            running[key] = running.get(key, 0) + (value.detach() if torch.is_tensor(value) else value)
        n_running += 1
        if cadence.grad_clip:
            # the norm before clipping, averaged over the log window: where training diverges, it shows
            norm = accelerator.clip_grad_norm_(parameters, cadence.grad_clip)
            running["grad_norm"] = running.get("grad_norm", 0) + norm.detach()
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        done = step + 1
        if profiler is not None and done == profiled.stop:
            _write_profile(profiler, Path(cadence.profile_dir), accelerator.process_index, len(profiled))
            profiler = None
        bar.update(1)
        if done % cadence.log_every == 0 or done == last:
            means = {k: (float(v) if torch.is_tensor(v) else v) / n_running for k, v in running.items()}
            bar.set_postfix_str(stage.on_log(done, means, time.perf_counter() - started))
            running, n_running = {}, 0
            if cadence.max_seconds:
                over = torch.tensor(
                    float(time.perf_counter() - started > cadence.max_seconds), device=accelerator.device
                )
                if accelerator.reduce(over, "max").item():  # every rank stops at the same step
                    last = done
                    accelerator.print(f"stopped at step {done}: max_seconds {cadence.max_seconds} reached")
        if stage.on_eval is not None and (done % cadence.eval_every == 0 or done == last):
            stage.on_eval(done)
        if done % cadence.save_every == 0 or done == last:
            stage.on_save(done)
        if done == last:
            break
    if profiler is not None:  # the run stopped (max_seconds, stop_at) inside the profiled steps
        _write_profile(profiler, Path(cadence.profile_dir), accelerator.process_index, done - profiled.start)
    bar.close()
    return last if last > start else start
