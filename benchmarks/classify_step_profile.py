"""What bounds a classification fine-tuning step? (issue 19; the step every issue-17 row repeats)

One fine-tuning step of `biotok finetune classify` (a small foundation under a classifier head, AdamW with
layer-wise groups, bf16 autocast, gradient clipping; batch 32 of 45 channels x 4 patches, the no-frontal
motor-imagery task's shape) timed as `fit` runs it, then profiled: kernels launched per step, the GPU's
busy time per step against the step's wall time (busy << wall: the host's launches bound it), the
same step with the model compiled (`torch.compile`), and with the clipping and AdamW update compiled too
(`compiled_update_*`: one graph instead of a launch per layer-wise group). `--fit_train_blocks N` also
times `fit` as `--train_blocks N` trains (the frozen blocks' output computed once, `TopBlocks` every step)
and profiles that step (`train_blocks_*`: eager, and with the compiled-optimizer recipe).
Codes are random: the cost does not depend on them.

    python benchmarks/classify_step_profile.py --tokenizer pretrained_models/tokenizer-small \
        --out docs/results/classify_step_profile.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from accelerate import Accelerator

from core.training import lr_lambda
from finetune.classifier import BiotokClassifier, TopBlocks, layer_decay_groups
from finetune.classify import ClassifyArgs, fit, freeze_lower_blocks, frozen_states, train_step
from foundation.config import FoundationConfig
from foundation.model import BiotokFoundation
from tokenizer.config import TokenizerConfig


def make_step(model, optimizer, accelerator, update=None, names=("channel_ids", "codes")):
    """`fit`'s step (`train_step`) on one fixed batch `(*inputs, labels)`, the inputs named `names` as
    `model` reads them, every row weighing 1."""

    def step(*batch):
        *inputs, labels = batch
        weight = torch.ones_like(labels, dtype=torch.float)
        return train_step(accelerator, model, optimizer, dict(zip(names, inputs)), labels, weight, update)

    return step


def compiled_update(model, optimizer, mode: str):
    """The clipping and the AdamW step of every layer-wise group as one compiled function: with
    mode="reduce-overhead", one CUDA graph replay instead of a launch per group and per clipping op. (The
    learning rates stay fixed here; `fit`'s schedule would need them as tensors to keep one graph.)"""
    inner = getattr(optimizer, "optimizer", optimizer)  # Accelerate's wrapper holds the torch optimizer
    params = [param for param in model.parameters() if param.requires_grad]

    def update():
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        inner.step()

    return torch.compile(update, mode=mode)


def compiled_optimizer(groups: list[dict], device, steps: int):
    """PyTorch's compiled-optimizer recipe: a fresh AdamW whose learning rates are tensors (so `fit`'s
    warmup + cosine schedule moves them without a recompile), its step alone compiled (mode default:
    inductor writes each group's update as a few fused kernels; reduce-overhead's graphs are skipped for
    mutated inputs), clipping and the schedule left eager. Returns (optimizer, update)."""
    tensor_groups = [{**group, "lr": torch.tensor(group["lr"], device=device)} for group in groups]
    optimizer = torch.optim.AdamW(tensor_groups)  # foreach, not fused: compile writes its own kernels
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(max(1, steps // 10), steps))
    params = [param for group in groups for param in group["params"]]
    step = torch.compile(optimizer.step)

    def update():
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        step()
        scheduler.step()

    return optimizer, update


def timed(step, batch, n_steps: int, device) -> float:
    """Seconds per step, after warm-up."""
    for _ in range(3):
        step(*batch)
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(n_steps):
        step(*batch)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / n_steps


def profiled(step, batch, n_steps: int, device) -> dict:
    """Kernels per step and the GPU's busy time per step (sum of kernel times)."""
    activities = [torch.profiler.ProfilerActivity.CPU]
    if device.type == "cuda":
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    with torch.profiler.profile(activities=activities) as prof:
        for _ in range(n_steps):
            step(*batch)
        if device.type == "cuda":
            torch.cuda.synchronize()
    kernels = [e for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]
    busy = sum(e.device_time for e in kernels) / 1e6  # µs -> s
    top = prof.key_averages().table(
        sort_by="self_cuda_time_total" if kernels else "self_cpu_time_total", row_limit=12
    )
    return {"kernels_per_step": len(kernels) / n_steps, "gpu_busy_s_per_step": busy / n_steps, "top": top}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tokenizer", default="pretrained_models/tokenizer-small")
    parser.add_argument("--size", default="small")
    parser.add_argument("--pooling", default="spatial_power")
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--n_channels", type=int, default=45)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--compile", action="store_true", help="also time the step with the model compiled")
    parser.add_argument(
        "--compile_mode",
        default="default",
        help="torch.compile's mode; reduce-overhead replays the forward and backward as CUDA graphs",
    )
    parser.add_argument("--fit_epochs", type=int, default=2, help="epochs of the timed fit (a fold: 30)")
    parser.add_argument(
        "--fit_cuda_graphs", action="store_true", help="also time fit with --cuda_graphs, two fresh models"
    )
    parser.add_argument(
        "--fit_train_blocks",
        type=int,
        default=0,
        help="also time fit as --train_blocks N trains (the frozen blocks' output computed once)",
    )
    parser.add_argument("--out", default="docs/results/classify_step_profile.json")
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    config = FoundationConfig.from_tokenizer(
        TokenizerConfig.from_pretrained(args.tokenizer), args.size, n_target_levels=2, n_input_levels=2,
        position_embed=True,
    )  # fmt: skip
    # any n_channels EEG names of the vocabulary: the cost does not depend on which
    names = [name.split(":", 1)[1] for name in config.channel_vocab if name.startswith("eeg:")][
        : args.n_channels
    ]
    foundation = BiotokFoundation(config)
    model = BiotokClassifier.from_foundation(
        foundation, ["left", "right"], "eeg", args.pooling, args.n_channels
    )
    model = model.to(device).train()
    generator = torch.Generator().manual_seed(0)
    shape = (args.batch_size, args.n_channels, 4, config.n_scales, config.n_read_levels)
    codes = torch.randint(0, config.codebook_size, shape, generator=generator).to(device)
    channel_ids = model.foundation.channel_ids([names], "eeg").expand(args.batch_size, -1).to(device)
    labels = torch.randint(0, 2, (args.batch_size,), generator=generator).to(device)
    batch = (channel_ids, codes, labels)
    result = {"device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu", **vars(args)}
    # `fit` itself (Accelerate, the row's loop) on 450 windows (a motor-imagery fold's training set) for
    # --fit_epochs: what a fold pays, eager and with --cuda_graphs; the graphs are recorded again for every
    # new model (every fold), so the second fresh model's fit is the cost of each later fold
    n_windows, epochs = 450, args.fit_epochs
    index = torch.randint(0, args.batch_size, (n_windows,), generator=generator)
    inputs = {"channel_ids": channel_ids[index].cpu(), "codes": codes[index].cpu()}
    precision = "bf16" if device.type == "cuda" else "no"
    n_steps = epochs * -(-n_windows // args.batch_size)
    runs = [("fit", False, 0)]
    if device.type == "cuda" and args.fit_cuda_graphs:
        runs += [("fit_cuda_graphs", True, 0), ("fit_cuda_graphs_next_fold", True, 0)]
    if args.fit_train_blocks:  # `--train_blocks N`: the frozen blocks run once, the top N every step
        runs += [(f"fit_train_blocks_{args.fit_train_blocks}", False, args.fit_train_blocks)]
        if device.type == "cuda" and args.fit_cuda_graphs:
            runs += [(f"fit_train_blocks_{args.fit_train_blocks}_cuda_graphs", True, args.fit_train_blocks)]
    for name, graphs, train_blocks in runs:
        fold_model = BiotokClassifier.from_foundation(
            foundation, ["left", "right"], "eeg", args.pooling, args.n_channels
        ).to(device)
        fit_args = ClassifyArgs(
            epochs=epochs, batch_size=args.batch_size, mixed_precision=precision, cuda_graphs=graphs
        )
        start = time.perf_counter()
        fit_module, fit_inputs = fold_model, inputs
        if train_blocks:  # as classify's fine-tuned row freezes and caches (the lower states' pass is timed)
            first = freeze_lower_blocks(fold_model, train_blocks)
            fit_module, fit_inputs = (
                TopBlocks(fold_model, first),
                frozen_states(fold_model, inputs, below=first),
            )
        groups = layer_decay_groups(fold_model, 5e-4, 0.75, 0.05)
        fit(fit_module, fit_inputs, labels[index].cpu(), groups, fit_args, 0)
        if device.type == "cuda":
            torch.cuda.synchronize()
        result[f"{name}_s"] = time.perf_counter() - start
        result[f"{name}_s_per_step"] = result[f"{name}_s"] / n_steps
        print(f"{name}: {result[f'{name}_s']:.1f} s for {n_steps} steps", flush=True)
    # the step as `fit` builds it: its Accelerator (bf16 autocast on a GPU), fused AdamW, layer-wise groups
    accelerator = Accelerator(mixed_precision=precision, cpu=device.type != "cuda")
    groups = layer_decay_groups(model, 5e-4, 0.75, 0.05)
    optimizer = torch.optim.AdamW(groups, fused=device.type == "cuda" or None)
    model, optimizer = accelerator.prepare(model.train(), optimizer)

    def measure(name: str, make, compiled: bool = True, step_batch: tuple = batch) -> None:
        """Time and profile the step `make()` builds on `step_batch` into result[name_*]; a failed compile is
        a result too."""
        try:
            step = make()
            result[f"{name}_s_per_step"] = timed(step, step_batch, args.steps, device)
            profile = profiled(step, step_batch, 5, device)
            print(profile.pop("top"))
            result.update({f"{name}_{k}": v for k, v in profile.items()})
        except Exception as error:
            if not compiled:
                raise
            result[f"{name}_error"] = f"{type(error).__name__}: {error}"[:500]

    measure("eager", lambda: make_step(model, optimizer, accelerator), compiled=False)
    if args.compile:
        compiled_model = torch.compile(model, mode=args.compile_mode)  # one wrapper for every variant
        measure("compiled", lambda: make_step(compiled_model, optimizer, accelerator))

        def both():  # the update (clipping + every group's AdamW step) compiled as well
            update = compiled_update(model, optimizer, args.compile_mode)
            return make_step(compiled_model, optimizer, accelerator, update)

        measure("compiled_update", both)

        def recipe():  # the model compiled, the optimizer step compiled apart (PyTorch's recipe)
            n_calls = 3 + args.steps + 5  # the schedule spans every call, warm-up and profile included
            own_optimizer, update = compiled_optimizer(groups, device, n_calls)
            return make_step(compiled_model, own_optimizer, accelerator, update)

        measure("compiled_optimizer", recipe)
    if args.fit_train_blocks:  # the step `--train_blocks N` repeats: the top N blocks on cached states
        top_model = BiotokClassifier.from_foundation(
            foundation, ["left", "right"], "eeg", args.pooling, args.n_channels
        ).to(device)
        first = freeze_lower_blocks(top_model, args.fit_train_blocks)
        states = frozen_states(top_model, {"channel_ids": channel_ids, "codes": codes}, below=first)
        top = TopBlocks(top_model, first).train()
        top_batch = (states["hidden"], states["channel_ids"], labels)
        top_groups = layer_decay_groups(top_model, 5e-4, 0.75, 0.05)
        top_optimizer = torch.optim.AdamW(top_groups, fused=device.type == "cuda" or None)
        top, top_optimizer = accelerator.prepare(top, top_optimizer)
        names = ("hidden", "channel_ids")

        measure(
            "train_blocks_eager",
            lambda: make_step(top, top_optimizer, accelerator, names=names),
            compiled=False,
            step_batch=top_batch,
        )

        def top_recipe():  # PyTorch's compiled-optimizer recipe on the top blocks' groups
            own_optimizer, update = compiled_optimizer(top_groups, device, 3 + args.steps + 5)
            return make_step(top, own_optimizer, accelerator, update, names=names)

        measure("train_blocks_compiled_optimizer", top_recipe, step_batch=top_batch)
    print(json.dumps(result, indent=1))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
