"""Training checkpoints without pickle: weights and optimizer tensors in safetensors, everything else
in JSON, written to a temporary folder and renamed. Shared by every stage's training loop.

    <run>/checkpoints/step_000100/
        model.safetensors  optimizer.safetensors  rng.safetensors  state.json
"""

from __future__ import annotations

import json
import math
import random
import shutil
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from data_prep.atomic import atomic_path
from data_prep.errors import BiosignalError

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


def save_checkpoint(
    folder: str | Path, model: torch.nn.Module, optimizer, scheduler, step: int, extra: dict, keep: int = 2
) -> Path:
    """Write `folder/step_{step}` atomically and keep only the newest `keep` checkpoints."""
    folder = Path(folder)
    final = folder / f"step_{step:06d}"
    with atomic_path(final) as tmp:
        tmp.mkdir(parents=True)
        save_file(
            {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()},
            str(tmp / "model.safetensors"),
        )
        opt_tensors, opt_rest = _split_optimizer(optimizer.state_dict())
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
    if accelerator.is_main_process:
        save_checkpoint(folder, model, optimizer, scheduler, step, {"samplers": samplers})


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
