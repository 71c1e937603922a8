"""`biotok finetune emg2qwerty`: CTC keystroke decoding on emg2qwerty sessions, with Accelerate.

biotok finetune emg2qwerty --data biotok_out/data/emg2qwerty --model tiny --steps 2000
biotok finetune emg2qwerty --model tiny --rvq_levels 2                      # emg-tokenizer bottleneck
biotok finetune emg2qwerty --model tiny --teacher runs/small/final          # logit distillation
biotok finetune emg2qwerty --model foundation --foundation runs/foundation/final
biotok finetune emg2qwerty --split <data>/splits/user0.yaml --init_from runs/tiny/final   # personalize

Trains on random 4 s windows of the split's train sessions, reports windowed validation CER while
training, then decodes each whole test session at batch 1 (greedy, and beam search with a character
n-gram LM trained on the train sessions' prompts) and writes `results.json` and `final/`.
"""

from __future__ import annotations

import json
import sys
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch

from core.training import (
    Cadence,
    Stage,
    checkpoint_saver,
    end_training,
    lr_lambda,
    resume_run,
    training_loop,
    weight_decay_groups,
)
from data_prep.config import run_command
from data_prep.errors import ConfigError
from foundation.tracking import JSONLinesTracker

from .cer import EditCounts, edit_counts
from .ctc import ctc_loss, distillation_loss
from .decoding import beam_search, greedy_decode
from .emg_data import PAST, LabelledSession, WindowSampler, eval_windows, load_split
from .emg_models import EmgCTCConfig, EmgCTCModel
from .lm import CharNGramLM


@dataclass
class CTCTrainArgs:
    """Fine-tune a CTC keystroke decoder on emg2qwerty-format sessions."""

    data: str = field(default="biotok_out/data/emg2qwerty", metadata={"help": "folder of <session>.hdf5"})
    split: str = field(default="", metadata={"help": "split file (default: <data>/splits/generic.yaml)"})
    model: str = field(
        default="tiny", metadata={"help": "tiny | small | large | <width>x<depth> | tds | foundation"}
    )
    causal: bool = field(default=False, metadata={"help": "fully causal transformer (can stream)"})
    rvq_levels: int = field(default=0, metadata={"help": "RVQ bottleneck levels after block 1 (0: none)"})
    rvq_codebook_size: int = field(
        default=1024, metadata={"help": "codes per level of the RVQ bottleneck (with --rvq_levels)"}
    )
    foundation: str = field(default="", metadata={"help": "pretrained foundation folder (model=foundation)"})
    tokenizer: str = field(
        default="pretrained_models/tokenizer-small-v1", metadata={"help": "the foundation's tokenizer folder"}
    )
    frames_per_patch: int = field(default=10, metadata={"help": "CTC frames per 200 ms patch (foundation)"})
    teacher: str = field(default="", metadata={"help": "teacher model folder: distil its logits"})
    kd_alpha: float = field(
        default=1.0, metadata={"help": "weight of the CTC loss when distilling from --teacher"}
    )
    kd_beta: float = field(
        default=1.0, metadata={"help": "weight of the KL divergence to the teacher's logits"}
    )
    kd_temperature: float = field(
        default=2.0, metadata={"help": "softmax temperature of the distillation term"}
    )
    overrides: str = field(
        default="", metadata={"help": 'JSON: EmgCTCConfig fields over the model\'s, e.g. {"qk_norm": true}'}
    )
    init_from: str = field(default="", metadata={"help": "start from this model (personalization)"})
    out: str = field(
        default="runs/emg2qwerty",
        metadata={"help": "run folder: checkpoints/, log.jsonl, results.json, final/"},
    )
    steps: int = 2000
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 0.01
    warmup_steps: int = 200
    grad_clip: float = 1.0
    dropout: float = 0.2
    eval_every: int = 500
    log_every: int = 50
    save_every: int = 500
    resume: bool = field(default=True, metadata={"help": "continue from the newest checkpoint in --out"})
    stop_at: int = field(default=0, metadata={"help": "stop after this step (0: run to --steps)"})
    mixed_precision: str = field(default="no", metadata={"help": "no | bf16 | fp16"})
    lm_order: int = field(default=6, metadata={"help": "character n-gram order (0: no LM)"})
    lm_weight: float = field(
        default=0.5, metadata={"help": "weight of the character n-gram language model in beam search"}
    )
    insertion_bonus: float = field(
        default=0.5, metadata={"help": "score added per emitted character in beam search"}
    )
    lm_tune: bool = field(
        default=True,
        metadata={
            "help": "choose the LM weight and insertion bonus on the validation sessions (whole-session "
            "beam + LM CER over --lm_weights x --insertion_bonuses) before testing; false: use "
            "--lm_weight and --insertion_bonus as given"
        },
    )
    lm_weights: str = field(default="0.25,0.5,1.0", metadata={"help": "LM weights tried by --lm_tune"})
    insertion_bonuses: str = field(
        default="0,0.5,1.0,1.5", metadata={"help": "insertion bonuses tried by --lm_tune"}
    )
    beam: int = 50
    decode_workers: int = field(
        default=1,
        metadata={
            "help": "processes that run the beam searches (LM tuning grid, test sessions) side by side: "
            "beam search is pure Python, one core each"
        },
    )
    augment: bool = field(
        default=True,
        metadata={
            "help": "augment training windows: electrode rotation per wrist and a left/right time jitter"
        },
    )
    crop_context: bool = field(
        default=True,
        metadata={
            "help": "CTC reads only the frames of each window's labelled span, not those of the past "
            "context before it (false: every frame, the earlier behaviour)"
        },
    )
    seed: int = 0
    progress: bool = True


def context_frames(model: EmgCTCModel) -> int:
    """Output frames of a window that lie wholly in its unlabelled past context (`PAST` samples).

    A window's labels are the keys of its own span; the context before it holds bursts of earlier keys.
    Frames there must not emit: asking the model to stay silent on bursts it can see would make it
    learn where the window starts, which a convolution + causal attention model can hardly tell."""
    return max(0, int(model.output_lengths(torch.tensor(PAST))))


def build_model(args: CTCTrainArgs) -> EmgCTCModel:
    """A new model of `args.model`, or `args.init_from`'s weights (personalization)."""
    if args.init_from:
        return EmgCTCModel.from_pretrained(args.init_from)
    common = dict(
        causal=args.causal,
        rvq_levels=args.rvq_levels,
        rvq_codebook_size=args.rvq_codebook_size,
        dropout=args.dropout,
        **(json.loads(args.overrides) if args.overrides else {}),
    )
    if args.model != "foundation":
        return EmgCTCModel(EmgCTCConfig.named(args.model, **common))
    from foundation.model import BiotokFoundation
    from tokenizer.model import BiotokTokenizer

    if not args.foundation:
        raise ConfigError("foundation", "model=foundation needs --foundation <pretrained folder>")
    tokenizer = BiotokTokenizer.from_pretrained(args.tokenizer)
    foundation = BiotokFoundation.from_pretrained(args.foundation)
    if foundation.config.tokenizer_hash != tokenizer.config.config_hash():
        raise ConfigError(
            "tokenizer",
            f"{args.foundation} was pretrained on codes of tokenizer {foundation.config.tokenizer_hash}, "
            f"but {args.tokenizer} is {tokenizer.config.config_hash()}",
        )
    config = EmgCTCConfig(
        architecture="foundation",
        width=256,
        tokenizer_config=tokenizer.config.to_dict(),
        foundation_config=foundation.config.to_dict(),
        frames_per_patch=args.frames_per_patch,
        **common,
    )
    model = EmgCTCModel(config)
    model.backbone.tokenizer.load_state_dict(tokenizer.state_dict())
    model.backbone.foundation.load_state_dict(foundation.state_dict())
    return model


def prepare_sessions(sessions: list[LabelledSession], preset: dict | None) -> list[LabelledSession]:
    """The sessions as the model reads them: raw, or through a tokenizer preset (filter, resample, scale)."""
    if preset is None:
        return sessions
    from data_prep.emg2qwerty import CH_NAMES
    from data_prep.presets import get_preset, preprocess
    from data_prep.recording import Recording

    out = []
    for s in sessions:
        rec = preprocess(
            Recording(s.signal, s.sfreq, list(CH_NAMES), "adu", "emg", source=s.name), get_preset(preset)
        )
        out.append(replace(s, signal=rec.data, sfreq=rec.sfreq))
    return out


def train_lm(sessions: list[LabelledSession], order: int) -> CharNGramLM | None:
    texts = [text for s in sessions for text in s.prompts]
    return CharNGramLM(order).fit(texts) if order and texts else None


@torch.no_grad()
def window_cer(model: EmgCTCModel, batches: list[dict], device, skip: int = 0) -> float:
    """Greedy CER over fixed validation windows, read from frame `skip` on (see `context_frames`)."""
    model.eval()
    total = EditCounts()
    for batch in batches:
        output = model(batch["emg"].to(device))
        for i in range(len(output.log_probs)):
            prediction = greedy_decode(output.log_probs[i, skip : output.lengths[i]])
            total = total + edit_counts(
                batch["targets"][i, : batch["target_lengths"][i]].tolist(), prediction
            )
    model.train()
    return total.cer


def split_file(args: CTCTrainArgs) -> str:
    """The split a run trains and tests on: `--split`, else the data's generic split."""
    return args.split or str(Path(args.data) / "splits" / "generic.yaml")


@torch.no_grad()
def session_emissions(model: EmgCTCModel, sessions: list[LabelledSession], device) -> list[torch.Tensor]:
    """Whole-session log-probabilities `(frames, classes)` at batch 1, on the CPU."""
    model.eval()
    emissions = [model.session_log_probs(torch.from_numpy(s.signal).to(device)).cpu() for s in sessions]
    model.train()
    return emissions


_FORKED_JOBS: list[tuple] = []  # what forked decoding workers read: inherited, never pickled


def _beam_search_job(index: int) -> list[int]:
    return beam_search(*_FORKED_JOBS[index])


def _beam_searches(jobs: list[tuple], workers: int) -> list[list[int]]:
    """`beam_search(*job)` for every job, in order; in `workers` forked processes when above 1."""
    if workers <= 1 or len(jobs) <= 1:
        return [beam_search(*job) for job in jobs]
    import multiprocessing

    # fork: the children inherit the jobs (emissions on the CPU, the LM) and only run Python over them,
    # never CUDA; only the decoded label lists come back
    _FORKED_JOBS[:] = jobs
    try:
        with multiprocessing.get_context("fork").Pool(min(workers, len(jobs))) as pool:
            return pool.map(_beam_search_job, range(len(jobs)), chunksize=1)
    finally:
        _FORKED_JOBS.clear()


def tune_lm(
    emissions: list[torch.Tensor], sessions: list[LabelledSession], lm: CharNGramLM, args: CTCTrainArgs
) -> dict:
    """The LM weight and insertion bonus with the lowest beam + LM CER over whole validation sessions.
    Frame rates and confidence differ between models (a 125 Hz TDS-ConvNet deletes keys under settings
    chosen for a 100 Hz transformer), so each trained model gets its own."""
    targets = [s.labels(0, s.signal.shape[1]).tolist() for s in sessions]
    pairs = [
        (weight, bonus)
        for weight in map(float, args.lm_weights.split(","))
        for bonus in map(float, args.insertion_bonuses.split(","))
    ]
    jobs = [(emission, lm, args.beam, w, b) for w, b in pairs for emission in emissions]
    decoded = iter(_beam_searches(jobs, args.decode_workers))
    grid = []
    for weight, bonus in pairs:
        total = EditCounts()
        for target in targets:
            total = total + edit_counts(target, next(decoded))
        grid.append({"lm_weight": weight, "insertion_bonus": bonus, "val_cer_beam_lm": total.cer})
    best = min(grid, key=lambda row: row["val_cer_beam_lm"])
    return {**best, "grid": grid}


def test_sessions(
    model: EmgCTCModel,
    sessions: list[LabelledSession],
    lm: CharNGramLM | None,
    args: CTCTrainArgs,
    device,
    lm_weight: float | None = None,
    insertion_bonus: float | None = None,
) -> dict:
    """Whole-session decoding at batch 1: CER (greedy, beam, beam + LM) summed over sessions; the LM's
    weight and bonus are `args`' unless given (e.g. tuned on validation)."""
    lm_weight = args.lm_weight if lm_weight is None else lm_weight
    insertion_bonus = args.insertion_bonus if insertion_bonus is None else insertion_bonus
    totals = {"greedy": EditCounts(), "beam": EditCounts(), "beam_lm": EditCounts()}
    emissions = session_emissions(model, sessions, device)
    searches = {"beam": (None, args.beam, 0.0, 0.0)}
    if lm is not None:
        searches["beam_lm"] = (lm, args.beam, lm_weight, insertion_bonus)
    jobs = [(e, *search) for e in emissions for search in searches.values()]
    decoded = iter(_beam_searches(jobs, args.decode_workers))
    per_session = []
    for session, emission in zip(sessions, emissions):
        target = session.labels(0, session.signal.shape[1]).tolist()
        row = {"session": session.name, "user": session.user, "target_length": len(target)}
        hypotheses = {"greedy": greedy_decode(emission), **{name: next(decoded) for name in searches}}
        for name, hypothesis in hypotheses.items():
            counts = edit_counts(target, hypothesis)
            totals[name] = totals[name] + counts
            row[name] = asdict(counts) | {"cer": counts.cer}
        per_session.append(row)
    return {
        **{f"cer_{k}": v.cer for k, v in totals.items() if v.target_length},
        "lm_weight": lm_weight,
        "insertion_bonus": insertion_bonus,
        "sessions": per_session,
    }


def finetune(args: CTCTrainArgs) -> dict:
    """Train (or resume), test on whole sessions; returns the results written to `out/results.json`."""
    from accelerate import Accelerator
    from tqdm.auto import tqdm

    out = Path(args.out)
    accelerator = Accelerator(
        mixed_precision=args.mixed_precision, log_with=[JSONLinesTracker(str(out))], project_dir=str(out)
    )
    torch.manual_seed(args.seed)
    # training windows have one shape: let cuDNN time its convolution algorithms once and keep the fastest
    torch.backends.cudnn.benchmark = accelerator.device.type == "cuda"
    split = split_file(args)
    spec, parts = load_split(args.data, split)
    model = build_model(args)
    parts = {name: prepare_sessions(sessions, model.input_preset) for name, sessions in parts.items()}
    lm = train_lm(parts["train"], args.lm_order)
    teacher = None
    if args.teacher:
        teacher = (
            EmgCTCModel.from_pretrained(args.teacher).to(accelerator.device).eval().requires_grad_(False)
        )
    sampler = WindowSampler(
        parts["train"], args.batch_size, args.seed, accelerator.process_index, augment=args.augment
    )
    trainable = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {**group, "params": [p for p in group["params"] if p.requires_grad]}  # the tokenizer stays frozen
        for group in weight_decay_groups(model, args.weight_decay)
    ]
    optimizer = torch.optim.AdamW(groups, lr=args.lr)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(args.warmup_steps, args.steps))
    # batches are functions of (seed, rank, step): no sampler state to restore
    start = resume_run(out, args.resume, model, optimizer, scheduler, accelerator)
    model, optimizer = accelerator.prepare(model, optimizer)
    raw = accelerator.unwrap_model(model)
    if accelerator.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        (out / "finetune_args.json").write_text(json.dumps(asdict(args), indent=2))
        if lm is not None:
            lm.save(out / "lm.json")
    accelerator.init_trackers("emg2qwerty", config=asdict(args))
    val_batches = eval_windows(parts["val"], args.batch_size) if parts["val"] else []
    infeasible_total = 0
    skip = context_frames(raw) if args.crop_context else 0
    model.train()
    # the next batch is gathered on a thread while the accelerator runs this step (batches are pure
    # functions of the step, so prefetching changes nothing but speed)
    prefetch = ThreadPoolExecutor(1)
    pending = {start: prefetch.submit(sampler.batch, start)}

    def train_step(step: int, model=model) -> dict:
        nonlocal infeasible_total
        batch = pending.pop(step).result()
        pending[step + 1] = prefetch.submit(sampler.batch, step + 1)
        emg = batch["emg"].to(accelerator.device)
        targets = batch["targets"].to(accelerator.device)
        target_lengths = batch["target_lengths"].to(accelerator.device)
        with accelerator.autocast():
            output = model(emg)
        loss, infeasible = ctc_loss(
            output.log_probs[:, skip:], output.lengths - skip, targets, target_lengths
        )
        infeasible_total += infeasible
        if teacher is not None:
            with torch.no_grad(), accelerator.autocast():
                teacher_logits = teacher(emg).logits
            kd = distillation_loss(output.logits[:, skip:], teacher_logits[:, skip:], args.kd_temperature)
            loss = (args.kd_alpha * kd + args.kd_beta * loss) / (args.kd_alpha + args.kd_beta)
        loss = loss + raw.config.rvq_commitment_weight * output.commit_loss
        accelerator.backward(loss)
        return {"loss": float(loss.detach())}

    def on_log(done: int, means: dict, seconds: float) -> str:
        record = {
            "train/loss": means["loss"],
            "train/lr": scheduler.get_last_lr()[0],
            "train/grad_norm": means.get("grad_norm", float("nan")),
            "train/infeasible_windows": infeasible_total,
            "train/seconds": seconds,
        }
        accelerator.log(record, step=done)
        return f"loss={record['train/loss']:.3f}"

    def on_eval(done: int) -> None:
        val = window_cer(raw, val_batches, accelerator.device, skip)
        accelerator.log({"val/cer": val}, step=done)
        tqdm.write(f"step {done}: validation CER {val:.1f}%")

    on_save = checkpoint_saver(accelerator, out, raw, optimizer, scheduler, sampler)
    stage = Stage(train_step, on_log, on_eval if val_batches else None, on_save)
    cadence = Cadence.from_args(args)
    label = f"from {Path(args.init_from).name}" if args.init_from else args.model  # what is trained
    last = training_loop(
        accelerator, optimizer, scheduler, trainable, start, cadence, stage, f"emg2qwerty {label}"
    )
    prefetch.shutdown(cancel_futures=True)
    if infeasible_total:
        warnings.warn(
            f"{infeasible_total} training windows had more keys than CTC frames allow; their loss was zeroed",
            stacklevel=2,
        )
    del model, train_step  # the DDP wrapper, before the process group ends (see end_training)
    end_training(accelerator)
    results = {
        "args": asdict(args),
        "split": {"user": spec.user},
        "steps": last,
        "parameters": sum(p.numel() for p in trainable),
        "infeasible_windows": infeasible_total,
        "compression": raw.config.compression(),
    }
    if last < args.steps:
        return results
    if val_batches:
        results["val_cer_windows"] = window_cer(raw, val_batches, accelerator.device, skip)
    tuned = {}
    if lm is not None and args.lm_tune and parts["val"]:
        val_emissions = session_emissions(raw, parts["val"], accelerator.device)
        results["lm_tuning"] = tune_lm(val_emissions, parts["val"], lm, args)
        tuned = {k: results["lm_tuning"][k] for k in ("lm_weight", "insertion_bonus")}
        accelerator.print(
            f"LM tuned on {len(parts['val'])} validation sessions: weight {tuned['lm_weight']}, insertion "
            f"bonus {tuned['insertion_bonus']} (CER {results['lm_tuning']['val_cer_beam_lm']:.1f}%)"
        )
    if parts["test"]:
        results["test"] = test_sessions(raw, parts["test"], lm, args, accelerator.device, **tuned)
        summary = ", ".join(f"{k} {v:.1f}%" for k, v in results["test"].items() if k.startswith("cer"))
        accelerator.print(f"test CER (whole sessions): {summary}")
    if accelerator.is_main_process:
        raw.save_pretrained(str(out / "final"))
        (out / "results.json").write_text(json.dumps(results, indent=2))
    return results


def main(argv: list[str] | None = None) -> int:
    def job(args: CTCTrainArgs) -> None:
        if args.model == "foundation" and not args.foundation:
            raise ConfigError("foundation", "model=foundation needs --foundation <pretrained folder>")
        finetune(args)

    return run_command(CTCTrainArgs, job, argv, prog="biotok finetune emg2qwerty")


if __name__ == "__main__":
    sys.exit(main())
