"""`biotok pretrain`: masked-token pretraining on token corpora with Accelerate (one CPU to many GPUs).

biotok pretrain --tokens biotok_out/tokens --size tiny --steps 300 --out runs/foundation
accelerate launch --config_file foundation/accelerate/ddp.yaml -m foundation.pretrain --tokens ...
"""

from __future__ import annotations

import json
import sys
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from core.training import (
    Cadence,
    Stage,
    checkpoint_saver,
    data_parallel_batches,
    deterministic_kernels,
    end_training,
    full_state_dicts,
    lr_lambda,
    resume_run,
    training_loop,
    weight_decay_groups,
)
from data_prep.config import run_command
from data_prep.corpus import split_corpora
from data_prep.errors import ConfigError
from data_prep.mixing import collate_windows

from .config import SIZES, FoundationConfig
from .model import BiotokFoundation, kept_positions, masked_positions, random_mask
from .tokens import TokenCorpus, collate_tokens, load_token_corpora
from .tracking import JSONLinesTracker


@dataclass
class PretrainArgs:
    """Masked-token pretraining of the foundation model on frozen-tokenizer codes."""

    tokens: list[str] = field(
        default_factory=lambda: ["biotok_out/tokens"],
        metadata={"help": "token corpus folders (biotok tokenize)"},
    )
    weights: str = field(
        default="", metadata={"help": 'JSON sampling weights by corpus, e.g. {"eegbci": 0.6}'}
    )
    size: str = field(default="tiny", metadata={"help": "tiny | small | base"})
    overrides: str = field(
        default="",
        metadata={"help": 'JSON: FoundationConfig fields over the size\'s, e.g. {"position_embed": true}'},
    )
    input_kind: str = field(
        default="tokens", metadata={"help": "tokens | patches (raw patches in, codes as targets)"}
    )
    code_init_tokenizer: str = field(
        default="",
        metadata={
            "help": "the tokens' tokenizer folder: start the code embeddings as a linear map of its "
            "codebook vectors (BiotokFoundation.init_code_embed_from_codebooks) instead of at random"
        },
    )
    target_levels: int = field(default=0, metadata={"help": "RVQ levels predicted (0: all)"})
    input_levels: int = field(
        default=0, metadata={"help": "RVQ levels read as input (0: as many as --target_levels)"}
    )
    mask_ratio: float = field(
        default=0.5, metadata={"help": "fraction of the (channel, patch) positions masked in each window"}
    )
    symmetric_masking: bool = field(
        default=False, metadata={"help": "LaBraM: a second pass with the complement"}
    )
    keep_ratio: float = field(
        default=0.15,
        metadata={
            "help": "BERT's unchanged share: the fraction of masked positions predicted from their own "
            "visible input (held-out accuracy is scored on hidden positions only). 0.15 lifted motor "
            "imagery's linear probe from 0.498 to 0.550 and held-out masked accuracy 4x "
            "(docs/BENCHMARKS.md); 0: every predicted position hidden, as before 2026-12-07"
        },
    )
    out: str = field(
        default="runs/foundation",
        metadata={"help": "run folder: checkpoints/, log.jsonl, eval.jsonl, final/ (the pretrained model)"},
    )
    steps: int = 300
    batch_size: int = 16
    grad_accum: int = 1
    lr: float = 5e-4
    weight_decay: float = 0.05
    warmup_steps: int = 30
    grad_clip: float = 1.0
    holdout_fraction: float = field(
        default=0.25, metadata={"help": "fraction of subjects held out per corpus"}
    )
    holdout_subjects: str = field(
        default="",
        metadata={
            "help": 'JSON: subjects held out by corpus name (e.g. {"eegbci": ["001"]}); else the fraction'
        },
    )
    eval_every: int = 100
    eval_batches: int = 4
    log_every: int = 20
    save_every: int = 100
    resume: bool = field(default=True, metadata={"help": "continue from the newest checkpoint in --out"})
    stop_at: int = field(default=0, metadata={"help": "stop after this step (0: run to --steps)"})
    max_seconds: float = field(
        default=0, metadata={"help": "stop after this much training time and save final/ (0: no limit)"}
    )
    profile: str = field(
        default="",
        metadata={
            "help": "FIRST:COUNT: profile those steps (torch.profiler) into OUT/profile/rank<r>.txt (ops by "
            "self device and host time) and rank<r>.trace.json, e.g. 30:5"
        },
    )
    sync_debug: bool = field(
        default=False,
        metadata={
            "help": "on CUDA, warn (with the line) wherever a training step makes the host wait for the GPU "
            "(torch.cuda.set_sync_debug_mode): a step should have none, so that host and device overlap"
        },
    )
    mixed_precision: str = field(default="no", metadata={"help": "no | bf16 | fp16"})
    report_to: str = field(default="", metadata={"help": "extra Accelerate trackers, e.g. tensorboard"})
    seed: int = 0
    fused_optimizer: bool = field(
        default=False,
        metadata={
            "help": "AdamW as one fused kernel per step (under FSDP2 it skips a DTensor dispatch per "
            "parameter and op on the host: docs/BENCHMARKS.md)"
        },
    )
    deterministic: bool = field(
        default=False,
        metadata={"help": "deterministic GPU kernels: bit-identical reruns and resumes, slower"},
    )
    compile: bool = field(
        default=False,
        metadata={
            "help": "torch.compile each transformer block in place (fewer, fused kernels and casts; dynamic "
            "shapes, as corpora differ in channels): same weights and checkpoints, a slower start"
        },
    )
    progress: bool = True


def mask_generator(seed: int, rank: int, step: int, micro: int) -> torch.Generator:
    """Masks are a pure function of (seed, rank, step, micro-batch): resumed runs draw the same ones."""
    return torch.Generator().manual_seed(((seed * 1_000_003 + rank) * 1_000_003 + step) * 101 + micro)


class InputFetcher:
    """Turns a token batch into model inputs; for raw-patch models it also reads the source signals."""

    def __init__(self, corpora: dict[str, TokenCorpus], input_kind: str, levels: int | None = None):
        self.corpora, self.input_kind, self.levels, self._sources = corpora, input_kind, levels, {}

    def __call__(self, batch: dict, device) -> dict:
        # only the levels the model reads travel, as int32 from pinned memory without blocking: a
        # blocking copy waits for the GPU to finish the previous step, so the host's work for the next
        # batch (collating, masking) could never overlap the device's (it held one GPU at batch 1,024 to
        # half its compute, and FSDP's collectives waited on it)
        codes = batch["codes"][..., : self.levels].to(torch.int32)
        inputs = {"codes": _to_device(codes, device).long()}
        if self.input_kind == "patches":
            name = batch["corpus"]
            if name not in self._sources:
                self._sources[name] = self.corpora[name].source_corpus()
            source = self._sources[name]
            signal = collate_windows([source[i] for i in batch["window_index"]])["signal"]
            b, c, p = batch["codes"].shape[:3]
            inputs["patches"] = _to_device(signal.view(b, c, p, -1), device)
        return inputs


def _to_device(tensor: torch.Tensor, device) -> torch.Tensor:
    """A host tensor on `device`, copied from pinned memory without blocking the host on CUDA."""
    if torch.device(device).type == "cuda":
        return tensor.pin_memory().to(device, non_blocking=True)
    return tensor.to(device)


def unigram_log_probs(
    corpora: dict[str, TokenCorpus], n_levels: int, max_windows: int = 4000
) -> torch.Tensor:
    """log p(code) per scale and level `(S, Q, K)` from training windows (add-one smoothing)."""
    any_corpus = next(iter(corpora.values()))
    s, k = any_corpus.code_shape[0], any_corpus.info["codebook_size"]
    counts = torch.ones(s, n_levels, k, dtype=torch.float64)
    for corpus in corpora.values():
        step = max(1, len(corpus) // max_windows)
        for i in range(0, len(corpus), step):
            codes = torch.from_numpy(corpus[i]["codes"][..., :n_levels]).reshape(-1, s, n_levels)
            for si in range(s):
                for qi in range(n_levels):
                    counts[si, qi] += torch.bincount(codes[:, si, qi], minlength=k).double()
    return (counts / counts.sum(dim=-1, keepdim=True)).log().float()


def copy_neighbour(
    codes: torch.Tensor,
    mask: torch.Tensor,
    channel_mask: torch.Tensor,
    ch_names: list[list[str]],
    modality: str,
) -> dict[str, torch.Tensor]:
    """What local copying predicts for masked positions: codes `(B, C, P, S, Q)`, mask `(B, C, P)`.

    "time": the same channel's nearest unmasked patch (the earlier one on a tie); "space": the same
    patch of the nearest unmasked channel (10-05 distance for EEG sites, else distance in the montage's
    order). Returns each as codes `(B, C, P, S, Q)` and `valid` masks `(B, C, P)` (False where the
    channel, or the patch, has no unmasked neighbour)."""
    from data_prep.presets import eeg_positions

    b, c, p = mask.shape
    open_ = ~mask & channel_mask[:, :, None]  # positions the model sees
    steps = torch.arange(p, dtype=torch.float32)
    # time: distance |p - p'| (+ a tiny bias toward the earlier patch), infinite where p' is masked
    distance = (steps[:, None] - steps[None, :]).abs() + 1e-3 * (steps[None, :] > steps[:, None])
    distance = distance[None, None].expand(b, c, p, p).masked_fill(~open_[:, :, None, :], float("inf"))
    best = distance.min(dim=-1)
    time_codes = codes.gather(2, best.indices[..., None, None].expand(-1, -1, -1, *codes.shape[3:]))
    # space: channel distances per window, infinite for itself, padding and channels masked at that patch
    channel_distance = torch.full((b, c, c), float("inf"))
    for i, names in enumerate(ch_names):
        n = len(names)
        order = torch.arange(n, dtype=torch.float32)
        between = (order[:, None] - order[None, :]).abs()
        if modality == "eeg":
            xyz = torch.from_numpy(eeg_positions(names)).float()
            metric = torch.cdist(xyz, xyz)
            known = torch.isfinite(metric)
            between = torch.where(known, metric, between + 1e3)  # unplaced channels: montage order, last
        channel_distance[i, :n, :n] = between.fill_diagonal_(float("inf"))
    per_patch = channel_distance[:, :, None, :].expand(b, c, p, c)
    per_patch = per_patch.masked_fill(~open_.permute(0, 2, 1)[:, None], float("inf"))
    nearest = per_patch.min(dim=-1)
    index = nearest.indices.permute(0, 2, 1)  # (B, P, C): the source channel of each (b, c, p)
    space_codes = (
        codes.permute(0, 2, 1, 3, 4)
        .gather(2, index[..., None, None].expand(-1, -1, -1, *codes.shape[3:]))
        .permute(0, 2, 1, 3, 4)
    )
    return {
        "time": time_codes,
        "time_valid": torch.isfinite(best.values),
        "space": space_codes,
        "space_valid": torch.isfinite(nearest.values),
    }


@torch.no_grad()
def evaluate(
    model: BiotokFoundation,
    corpora: dict[str, TokenCorpus],
    fetch: InputFetcher,
    unigram: torch.Tensor,
    batches: int,
    batch_size: int,
    mask_ratio: float,
    device,
) -> dict:
    """Masked-token loss and accuracy per head on held-out windows (fixed masks), beside three baselines
    scored on the same masked positions: the unigram, and copying the nearest unmasked neighbour in time
    (same channel) or in space (same patch; `copy_neighbour`)."""
    was_training = model.training
    model.eval()
    q = model.config.n_target_levels
    generator = torch.Generator().manual_seed(1234)
    unigram = unigram.to(device)
    guess = unigram.argmax(-1)[None].cpu()  # the unigram's prediction `(1, S, Q)`
    kinds = ("time", "space")  # the local-copy baselines of `copy_neighbour`
    result = {}
    total = {"loss": 0.0, "unigram": 0.0, "n": 0, "correct": 0, "unigram_correct": 0}
    total.update({f"{kind}_correct": 0 for kind in kinds})
    for name, corpus in corpora.items():
        if len(corpus) == 0:
            continue
        stride = max(1, len(corpus) // (batches * batch_size))
        indices = list(range(0, len(corpus), stride))[: batches * batch_size]
        loss = uni = n = 0.0
        correct = uni_correct = 0
        copied = dict.fromkeys(kinds, 0)
        for start in range(0, len(indices), batch_size):
            batch = collate_tokens([corpus[i] for i in indices[start : start + batch_size]], corpus=name)
            inputs = fetch(batch, device)
            codes = inputs["codes"]
            mask = random_mask(batch["channel_mask"], codes.shape[2], mask_ratio, generator).to(device)
            ids = model.channel_ids(batch["ch_names"], batch["modality"])
            out = model(codes, ids, batch["modality"], mask, patches=inputs.get("patches"))
            targets = codes[mask][..., :q]  # (M, S, Q)
            s_idx = torch.arange(targets.shape[1], device=device)[None, :, None]
            q_idx = torch.arange(q, device=device)[None, None, :]
            uni_lp = unigram[s_idx, q_idx, targets]
            loss += float(out.loss_sum)
            uni += float(-uni_lp.mean(dim=(1, 2)).sum())
            n += float(out.n_masked)
            correct = correct + out.head_correct.cpu()
            host_mask, host_targets = mask.cpu(), targets.cpu()
            uni_correct = uni_correct + (guess == host_targets).sum(dim=0)
            copies = copy_neighbour(
                codes.cpu(), host_mask, batch["channel_mask"], batch["ch_names"], batch["modality"]
            )
            for kind in kinds:
                # a position with no unmasked neighbour falls back to the unigram's guess
                predicted = copies[kind][host_mask][..., :q]
                valid = copies[f"{kind}_valid"][host_mask][:, None, None]
                copied[kind] = copied[kind] + (torch.where(valid, predicted, guess) == host_targets).sum(
                    dim=0
                )
        result[name] = {
            "masked_loss": loss / n,
            "unigram_loss": uni / n,
            "masked_accuracy": float(correct.sum()) / (n * correct.numel()),
            "unigram_accuracy": float(uni_correct.sum()) / (n * correct.numel()),
            "head_accuracy": (correct / n).tolist(),
            "unigram_head_accuracy": (uni_correct / n).tolist(),
            **{f"copy_{kind}_accuracy": float(copied[kind].sum()) / (n * correct.numel()) for kind in kinds},
            **{f"copy_{kind}_head_accuracy": (copied[kind] / n).tolist() for kind in kinds},
            "n_masked": int(n),
        }
        total["loss"] += loss
        total["unigram"] += uni
        total["n"] += n
        total["correct"] += float(correct.sum())
        total["unigram_correct"] += float(uni_correct.sum())
        for kind in kinds:
            total[f"{kind}_correct"] += float(copied[kind].sum())
        heads = correct.numel()
    model.train(was_training)
    if total["n"]:
        result["all"] = {
            "masked_loss": total["loss"] / total["n"],
            "unigram_loss": total["unigram"] / total["n"],
            "masked_accuracy": total["correct"] / (total["n"] * heads),
            "unigram_accuracy": total["unigram_correct"] / (total["n"] * heads),
            **{f"copy_{kind}_accuracy": total[f"{kind}_correct"] / (total["n"] * heads) for kind in kinds},
        }
    return result


def build_config(args: PretrainArgs, corpora: dict[str, TokenCorpus]) -> FoundationConfig:
    """The model's code layout, vocabulary and presets come from the token corpora's tokenizer."""
    from tokenizer.config import TokenizerConfig

    first = next(iter(corpora.values()))
    tokenizer_config = TokenizerConfig.from_dict(first.info["tokenizer_config"])
    return FoundationConfig.from_tokenizer(
        tokenizer_config,
        args.size,
        n_target_levels=args.target_levels or None,
        n_input_levels=args.input_levels or None,
        input_kind=args.input_kind,
        mask_ratio=args.mask_ratio,
        symmetric_masking=args.symmetric_masking,
        keep_ratio=args.keep_ratio,
        **(json.loads(args.overrides) if args.overrides else {}),
    )


def pretrain(args: PretrainArgs) -> Path:
    """Run (or resume) pretraining; returns the folder of the final `save_pretrained` weights."""
    with deterministic_kernels() if args.deterministic else nullcontext():
        return _pretrain(args)


def _pretrain(args: PretrainArgs) -> Path:
    from accelerate import Accelerator
    from tqdm.auto import tqdm

    out = Path(args.out)
    trackers = [JSONLinesTracker(str(out))] + [t for t in args.report_to.split(",") if t]
    accelerator = Accelerator(mixed_precision=args.mixed_precision, log_with=trackers, project_dir=str(out))
    torch.manual_seed(args.seed + accelerator.process_index)
    config_path = out / "foundation_config.json"
    expect = (
        FoundationConfig.from_json_file(str(config_path)).tokenizer_hash if config_path.exists() else None
    )
    corpora = load_token_corpora(args.tokens, expect_hash=expect if args.resume else None)
    train_views, eval_views = split_corpora(corpora, args.holdout_fraction, args.holdout_subjects)
    if args.resume and config_path.exists():
        config = FoundationConfig.from_json_file(str(config_path))
    else:
        config = build_config(args, corpora)
    model = BiotokFoundation(config)
    if args.code_init_tokenizer:  # a resumed run's checkpoint replaces these weights
        from tokenizer.model import BiotokTokenizer

        model.init_code_embed_from_codebooks(
            BiotokTokenizer.from_pretrained(args.code_init_tokenizer), args.seed
        )
    fetch = InputFetcher(corpora, config.input_kind, config.n_read_levels)
    unigram = unigram_log_probs(train_views, config.n_target_levels)
    weights = json.loads(args.weights) if args.weights else None
    sampler = data_parallel_batches(
        accelerator, train_views, weights, args.batch_size, args.seed * 1000, collate=collate_tokens
    )
    optimizer = torch.optim.AdamW(
        weight_decay_groups(model, args.weight_decay),
        lr=args.lr,
        betas=(0.9, 0.98),
        fused=args.fused_optimizer or None,
    )
    # not prepared: a prepared scheduler would step once per process
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(args.warmup_steps, args.steps))
    start_step = resume_run(out, args.resume, model, optimizer, scheduler, accelerator, sampler)
    if args.compile:  # in place, block by block: the state dict's names stay those of the eager model
        for block in model.encoder.blocks:
            block.compile(dynamic=True)
    model, optimizer = accelerator.prepare(model, optimizer)
    raw_model = accelerator.unwrap_model(model)
    model.train()
    if accelerator.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        config.to_json_file(str(config_path))
        (out / "pretrain_args.json").write_text(json.dumps(asdict(args), indent=2))
    accelerator.init_trackers(
        "pretrain", config={k: v for k, v in asdict(args).items() if not isinstance(v, list)}
    )
    stream = iter(sampler)
    passes = 2 if config.symmetric_masking else 1
    window = {"inputs": 0.0, "seconds": 0.0}  # input tokens and time at the last log step

    def train_step(step: int, model=model) -> dict:
        if args.sync_debug and accelerator.device.type == "cuda":
            torch.cuda.set_sync_debug_mode("warn")
            try:
                return forward_backward(step, model)
            finally:
                torch.cuda.set_sync_debug_mode("default")
        return forward_backward(step, model)

    def forward_backward(step: int, model) -> dict:
        micro = []
        for m in range(args.grad_accum):
            batch = next(stream)
            inputs = fetch(batch, accelerator.device)
            # masks and their positions are made on the host, so the step never waits for the GPU
            generator = mask_generator(args.seed, accelerator.process_index, step, m)
            mask = random_mask(batch["channel_mask"], inputs["codes"].shape[2], config.mask_ratio, generator)
            masks = [mask, ~mask & batch["channel_mask"][:, :, None]][:passes]
            window["inputs"] += float(batch["channel_mask"].sum()) * inputs["codes"].shape[2]
            views = [(k, masked_positions(k), kept_positions(k, config.keep_ratio, generator)) for k in masks]
            micro.append((batch, inputs, views))
        # every masked position of the accumulation window on every rank counts once
        # a fill on the device, not a copy of a host scalar, which would wait for the GPU
        local = torch.full(
            (), float(sum(len(index) for _, _, ms in micro for _, index, _ in ms)), device=accelerator.device
        )
        global_masked = accelerator.reduce(local, reduction="sum")
        loss_sum, tokens = 0.0, 0
        for m, (batch, inputs, masks) in enumerate(micro):
            ids = raw_model.channel_ids(batch["ch_names"], batch["modality"])
            sync = m == len(micro) - 1
            with accelerator.no_sync(model) if not sync else nullcontext():
                for mask, index, kept in masks:
                    with accelerator.autocast():
                        output = model(
                            inputs["codes"],
                            ids,
                            batch["modality"],
                            mask.to(accelerator.device, non_blocking=True),
                            patches=inputs.get("patches"),
                            masked_index=index.to(accelerator.device, non_blocking=True),
                            kept=None if kept is None else kept.to(accelerator.device, non_blocking=True),
                        )
                    # DDP averages gradients over ranks: scale back to a sum over all masked positions
                    accelerator.backward(output.loss_sum * accelerator.num_processes / global_masked)
                    loss_sum = loss_sum + output.loss_sum.detach()  # a device tensor: read at log time
                    tokens += len(index)
        return {"loss_sum": loss_sum, "tokens": tokens}

    def on_log(done: int, means: dict, seconds: float) -> str:
        # input tokens (channel x patch positions) of every rank per second of this log window
        inputs = accelerator.reduce(torch.tensor(window["inputs"], device=accelerator.device), "sum")
        record = {
            "train/loss": means["loss_sum"] / max(means["tokens"], 1e-9),
            "train/lr": scheduler.get_last_lr()[0],
            "train/seconds": seconds,
            "train/tokens_per_s": float(inputs) / (seconds - window["seconds"]),
        }
        window.update(inputs=0.0, seconds=seconds)
        accelerator.log(record, step=done)
        return f"loss={record['train/loss']:.3f}"

    def on_eval(done: int) -> None:
        metrics = evaluate(
            raw_model,
            eval_views,
            fetch,
            unigram,
            args.eval_batches,
            args.batch_size,
            config.mask_ratio,
            accelerator.device,
        )
        if "all" in metrics:
            accelerator.log({f"eval/{k}": v for k, v in metrics["all"].items()}, step=done)
            tqdm.write(
                f"step {done}: held-out masked loss {metrics['all']['masked_loss']:.3f} "
                f"(unigram {metrics['all']['unigram_loss']:.3f}), accuracy "
                f"{metrics['all']['masked_accuracy']:.3f} (unigram {metrics['all']['unigram_accuracy']:.3f}, "
                f"copy in time {metrics['all']['copy_time_accuracy']:.3f}, "
                f"in space {metrics['all']['copy_space_accuracy']:.3f})"
            )
        if accelerator.is_main_process:
            with open(out / "eval.jsonl", "a") as f:
                f.write(json.dumps({"step": done, **metrics}) + "\n")

    on_save = checkpoint_saver(accelerator, out, raw_model, optimizer, scheduler, sampler)
    stage = Stage(train_step, on_log, on_eval, on_save)
    cadence = Cadence.from_args(args)
    last = training_loop(
        accelerator, optimizer, scheduler, model.parameters(), start_step, cadence, stage, "pretrain"
    )
    sampler.close()
    final_weights, _ = full_state_dicts(raw_model)  # every rank: FSDP gathers the shards to rank 0
    del model, train_step  # the DDP wrapper, before the process group ends (see end_training)
    end_training(accelerator)
    if accelerator.is_main_process and cadence.saves_final(last):
        raw_model.save_pretrained(str(out / "final"), state_dict=final_weights)
    return out / "final"


def main(argv: list[str] | None = None) -> int:
    def job(args: PretrainArgs) -> None:
        if args.size not in SIZES:
            raise ConfigError("size", f"expected one of {sorted(SIZES)}, got {args.size!r}")
        if args.input_kind not in ("tokens", "patches"):
            raise ConfigError("input_kind", f"expected 'tokens' or 'patches', got {args.input_kind!r}")
        print(f"saved {pretrain(args)}")

    return run_command(PretrainArgs, job, argv, prog="biotok pretrain")


if __name__ == "__main__":
    sys.exit(main())
