"""`biotok tokenizer train`: train the RVQ tokenizer on prepared corpora with Accelerate.

biotok tokenizer train --corpora biotok_out/corpora --size tiny --steps 300 --out runs/tokenizer
accelerate launch -m tokenizer.train --corpora ... --mixed_precision bf16
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from core.training import (
    Cadence,
    Stage,
    checkpoint_saver,
    data_parallel_batches,
    end_training,
    lr_lambda,
    resume_run,
    training_loop,
    weight_decay_groups,
)
from data_prep.config import run_command
from data_prep.corpus import Corpus, load_corpora, split_corpora
from data_prep.errors import ConfigError
from data_prep.presets import eeg_site_names

from .config import TokenizerConfig
from .metrics import codebook_stats, reconstruction_metrics
from .model import BiotokTokenizer


@dataclass
class TokenizerTrainArgs:
    """Train the multi-scale RVQ tokenizer."""

    corpora: list[str] = field(
        default_factory=lambda: ["biotok_out/corpora"], metadata={"help": "prepared corpus folders"}
    )
    weights: str = field(
        default="", metadata={"help": 'JSON sampling weights by corpus name, e.g. {"eegbci": 0.6}'}
    )
    size: str = field(default="tiny", metadata={"help": "tiny | small | base"})
    overrides: str = field(
        default="",
        metadata={
            "help": 'JSON: TokenizerConfig fields over the size\'s, e.g. {"code_dim": 8, "patch_embed": "conv"}'
        },
    )
    out: str = field(
        default="runs/tokenizer",
        metadata={"help": "run folder: checkpoints/, log.jsonl, final/ (the trained model)"},
    )
    steps: int = 300
    batch_size: int = 16
    lr: float = 2e-3
    weight_decay: float = 0.01
    warmup_steps: int = 30
    grad_clip: float = 1.0
    holdout_fraction: float = field(
        default=0.25, metadata={"help": "fraction of subjects held out per corpus"}
    )
    holdout_subjects: str = field(
        default="",
        metadata={
            "help": 'JSON: the subjects to hold out by corpus name, e.g. {"eegbci_more": ["013", "014"]}; '
            "other corpora use --holdout_fraction"
        },
    )
    eval_every: int = 100
    eval_batches: int = 4
    log_every: int = 20
    save_every: int = 100
    resume: bool = field(default=True, metadata={"help": "continue from the newest checkpoint in --out"})
    stop_at: int = field(
        default=0, metadata={"help": "stop after this step (0: run to --steps), e.g. for preemptible jobs"}
    )
    max_seconds: float = field(
        default=0,
        metadata={
            "help": "stop after this much training time (checked at log steps) and save the model as final "
            "(0: no limit); the log says at which step"
        },
    )
    augment: bool = field(
        default=True,
        metadata={"help": "cut patches at a random offset and flip signs (see augment_patches)"},
    )
    augment_leads: bool = field(
        default=False,
        metadata={
            "help": "ECG windows: replace the leads by a random orthogonal mixture of them with random "
            "gains (see mix_leads)"
        },
    )
    mixed_precision: str = field(default="no", metadata={"help": "no | bf16 | fp16"})
    seed: int = 0
    progress: bool = True


def build_vocab(corpora: dict[str, Corpus]) -> list[str]:
    """Every "modality:name" channel of the corpora and, where there is EEG, every 10-05 site, so that
    a montage the training data lacked still encodes (its sites placed by the position embedding)."""
    names = set()
    for corpus in corpora.values():
        modality = corpus.preset.modality
        for ch_names in corpus.column("ch_names"):
            names.update(f"{modality}:{n}" for n in ch_names)
        if modality == "eeg":
            names.update(f"eeg:{n}" for n in eeg_site_names())
    return sorted(names)


def batch_patches(batch: dict, patch_len: int) -> torch.Tensor:
    """Collated `(B, C, T)` signal -> `(B, C, P, L)` patches."""
    b, c, t = batch["signal"].shape
    return batch["signal"].view(b, c, t // patch_len, patch_len)


def augment_patches(signal: torch.Tensor, patch_len: int, rng: np.random.Generator) -> torch.Tensor:
    """Collated `(B, C, T)` -> `(B, C, P', L)` patches cut at a random offset inside the first patch
    (one patch fewer), each window's sign flipped at random. A corpus's windows are cut at fixed
    patch boundaries, so without this a small corpus is memorised patch by patch (measured: 7 dB on
    the training windows, 2.6 dB on held-out subjects after 300 steps); the codec must not care where
    a patch starts or which way its electrode points."""
    b, c, t = signal.shape
    n = t // patch_len
    if n > 1:
        offset = int(rng.integers(0, patch_len))
        signal = signal[..., offset : offset + (n - 1) * patch_len]
        n -= 1
    signs = torch.from_numpy(rng.choice(np.array([-1.0, 1.0], np.float32), size=b))
    return (signal * signs[:, None, None]).reshape(b, c, n, patch_len)


def mix_leads(
    signal: torch.Tensor, valid: torch.Tensor, rng: np.random.Generator, gains: tuple = (0.5, 1.5)
) -> torch.Tensor:
    """`(B, C, T)` ECG windows, `valid` `(B, C)` their real (unpadded) channels -> each window's real
    leads replaced by a random orthogonal mixture of them, each scaled by a random gain. A lead is a
    projection of the heart's electrical dipole, so mixtures of a recording's leads look like leads it
    lacks: the training ECG (MIT-BIH, two leads) then covers more of what a 12-lead record shows (CPU,
    held-out PTB, two single-seed runs: +0.5-1.2 dB at 1-4 levels, docs/BENCHMARKS.md)."""
    mixed = signal.clone()
    for w in range(signal.shape[0]):
        leads = valid[w].nonzero().flatten()
        n = len(leads)
        rotation, _ = torch.linalg.qr(torch.from_numpy(rng.standard_normal((n, n)).astype(np.float32)))
        scale = torch.from_numpy(rng.uniform(*gains, size=(n, 1)).astype(np.float32))
        mixed[w, leads] = scale * (rotation @ signal[w, leads])
    return mixed


@torch.no_grad()
def evaluate(
    model: BiotokTokenizer, corpora: dict[str, Corpus], batches: int, batch_size: int, device
) -> dict:
    """Held-out reconstruction per corpus (in scaled units) and codebook use over all of them."""
    from data_prep.mixing import collate_windows

    was_training = model.training
    model.eval()
    result, counts = {}, 0
    for name, corpus in corpora.items():
        if len(corpus) == 0:
            continue
        key = corpus.preset.name
        step = max(1, len(corpus) // (batches * batch_size))
        indices = list(range(0, len(corpus), step))[: batches * batch_size]
        targets, estimates, valids = [], [], []
        for start in range(0, len(indices), batch_size):
            batch = collate_windows([corpus[i] for i in indices[start : start + batch_size]])
            patches = batch_patches(batch, corpus.preset.patch_len).to(device)
            ids = model.channel_ids(batch["ch_names"], key)
            out = model(patches, ids, key)
            counts = counts + out.counts
            targets.append(batch["signal"])
            estimates.append(out.reconstruction.reshape(batch["signal"].shape).cpu())
            valids.append(batch["channel_mask"])
        metrics = {}
        for t, e, v in zip(targets, estimates, valids):
            for k, val in reconstruction_metrics(t, e, v).items():
                metrics.setdefault(k, []).append(val)
        result[name] = {k: sum(v) / len(v) for k, v in metrics.items()}
    if torch.is_tensor(counts):
        stats = codebook_stats(counts)
        result["codebook_used"] = float(stats["used"].mean())
        result["codebook_perplexity"] = float(stats["perplexity"].mean())
    model.train(was_training)
    return result


def train(args: TokenizerTrainArgs) -> Path:
    """Run (or resume) training; returns the folder of the final `save_pretrained` weights."""
    from accelerate import Accelerator
    from accelerate.utils import DistributedDataParallelKwargs
    from tqdm.auto import tqdm

    # our RVQ all-reduces its own EMA statistics; DDP must not overwrite them from rank 0
    ddp = DistributedDataParallelKwargs(broadcast_buffers=False, find_unused_parameters=True)
    accelerator = Accelerator(mixed_precision=args.mixed_precision, kwargs_handlers=[ddp])
    torch.manual_seed(args.seed)
    out = Path(args.out)
    corpora = load_corpora(args.corpora)
    train_views, eval_views = split_corpora(corpora, args.holdout_fraction, args.holdout_subjects)
    weights = json.loads(args.weights) if args.weights else None
    presets = sorted({c.preset.name for c in corpora.values()})
    config_path = out / "tokenizer_config.json"
    if args.resume and config_path.exists():
        config = TokenizerConfig.from_json_file(str(config_path))
    else:
        overrides = json.loads(args.overrides) if args.overrides else {}
        config = TokenizerConfig.from_size(
            args.size, presets=presets, channel_vocab=build_vocab(corpora), **overrides
        )
        for corpus in corpora.values():  # the corpora's own presets, overrides included
            config.modalities[corpus.preset.name]["preset"] = corpus.preset.to_dict()
    model = BiotokTokenizer(config)
    sampler = data_parallel_batches(accelerator, train_views, weights, args.batch_size, args.seed * 1000)
    optimizer = torch.optim.AdamW(
        weight_decay_groups(model, args.weight_decay),
        lr=args.lr,
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(args.warmup_steps, args.steps))
    start_step = resume_run(out, args.resume, model, optimizer, scheduler, accelerator, sampler)
    model, optimizer = accelerator.prepare(model, optimizer)
    raw_model = accelerator.unwrap_model(model)
    model.train()
    if accelerator.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        config.to_json_file(str(config_path))
        (out / "train_args.json").write_text(json.dumps(asdict(args), indent=2))
    log_path = out / "log.jsonl"
    stream = iter(sampler)
    counts = 0  # code uses since the last log step, `(S, Q, K)`

    def train_step(step: int, model=model) -> dict:
        nonlocal counts
        batch = next(stream)
        key = corpora[batch["corpus"]].preset.name
        patch_len = corpora[batch["corpus"]].preset.patch_len
        # draws fixed by (seed, rank, step): a resumed run mixes and cuts the same patches
        rng = np.random.default_rng((args.seed, accelerator.process_index, step))
        if args.augment_leads and corpora[batch["corpus"]].preset.modality == "ecg":
            batch["signal"] = mix_leads(batch["signal"], batch["channel_mask"], rng)
        if args.augment:
            patches = augment_patches(batch["signal"], patch_len, rng).to(accelerator.device)
        else:
            patches = batch_patches(batch, patch_len).to(accelerator.device)
        ids = raw_model.channel_ids(batch["ch_names"], key)
        with accelerator.autocast():
            output = model(patches, ids, key)
        accelerator.backward(output.loss)
        counts = counts + output.counts.detach()
        return {"loss": output.loss.float(), **{k: v.float() for k, v in output.losses.items()}}

    def on_log(done: int, means: dict, seconds: float) -> str:
        nonlocal counts
        stats = codebook_stats(counts)
        record = {"step": done, "lr": scheduler.get_last_lr()[0], **means}
        record["codebook_used"] = stats["used"].tolist()
        record["codebook_perplexity"] = stats["perplexity"].tolist()
        record["seconds"] = seconds
        counts = 0
        if accelerator.is_main_process:
            with open(log_path, "a") as f:
                f.write(json.dumps(record) + "\n")
        used = sum(map(sum, record["codebook_used"])) / config.n_scales / config.n_levels
        return f"loss={record['loss']:.3f}, used={used:.2f}"

    def on_eval(done: int) -> None:
        metrics = evaluate(raw_model, eval_views, args.eval_batches, args.batch_size, accelerator.device)
        if accelerator.is_main_process:
            with open(log_path, "a") as f:
                f.write(json.dumps({"step": done, "eval": metrics}) + "\n")
            summary = ", ".join(
                f"{n} SNR {m['snr_db']:.1f} dB" for n, m in metrics.items() if isinstance(m, dict)
            )
            tqdm.write(f"step {done}: held-out {summary}")

    on_save = checkpoint_saver(accelerator, out, raw_model, optimizer, scheduler, sampler)
    stage = Stage(train_step, on_log, on_eval, on_save)
    cadence = Cadence.from_args(args)
    last = training_loop(
        accelerator, optimizer, scheduler, model.parameters(), start_step, cadence, stage, "tokenizer"
    )
    sampler.close()
    del model, train_step  # the DDP wrapper, before the process group ends (see end_training)
    end_training(accelerator)
    if accelerator.is_main_process and cadence.saves_final(last):
        raw_model.save_pretrained(str(out / "final"))
    return out / "final"


def main(argv: list[str] | None = None) -> int:
    def job(args: TokenizerTrainArgs) -> None:
        if args.size not in ("tiny", "small", "base"):
            raise ConfigError("size", f"expected tiny, small or base, got {args.size!r}")
        print(f"saved {train(args)}")

    return run_command(TokenizerTrainArgs, job, argv, prog="biotok tokenizer train")


if __name__ == "__main__":
    sys.exit(main())
