"""`biotok finetune classify`: one task, every model, the same subject-independent folds, one table.

biotok finetune classify --task eegbci_eyes --root ../shared/data/real \
    --tokenizer runs/models/tokenizer/final --foundation runs/fold_groups --out runs/classify/eegbci_eyes

`--foundation` names one model per fold group (subfolders, each pretrained with --holdout_subjects): under
the default strict protocol every fold uses a model that never saw its test subjects;
`--protocol held_out` runs only the folds whose test subjects a model held out (one model, tested on the
subjects it never saw); `--protocol transductive` takes a single model for every fold and labels the table so.

Rows, each over the same folds and seeds: the token foundation model as a linear probe and fully
fine-tuned (layer-wise lr decay per block), the same network from scratch, the raw-patch foundation
model (probe and fine-tuned), and a classical pipeline (CSP + LDA or log band-power + logistic
regression; needs the `classical` extra, scikit-learn). Folds split by subject (or repetition), never
by window. Writes results.json (every fold and subject), table.md, confusion.png, per_subject.png.
"""

from __future__ import annotations

import functools
import json
import math
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from accelerate import Accelerator
from tqdm.auto import tqdm

from core.training import lr_lambda
from data_prep.atomic import atomic_path
from data_prep.config import run_command
from data_prep.errors import BiosignalError, ConfigError
from data_prep.presets import get_preset, patchify
from foundation.model import BiotokFoundation
from tokenizer.model import BiotokTokenizer

from .classifier import BiotokClassifier, Readout, TopBlocks, block_depth, layer_decay_groups, patch_centred
from .classify_data import ClassifyTask, Epochs, group_folds, load_epochs
from .metrics import balanced_accuracy, confusion_matrix, scores

ROWS = (
    "foundation (linear probe)",
    "foundation (CSP probe)",
    "foundation (fine-tuned)",
    "from scratch",
    "raw-patch foundation (linear probe)",
    "raw-patch foundation (fine-tuned)",
    "classical",
)


@dataclass
class ClassifyArgs:
    """Fine-tune and compare classifiers on one labelled task with subject-independent folds."""

    task: str = field(default="eegbci_eyes", metadata={"help": "shipped task name or task file"})
    root: str = field(default="../shared/data/real", metadata={"help": "folder the task's paths are under"})
    tokenizer: str = field(default="", metadata={"help": "frozen tokenizer folder (for token input)"})
    foundation: str = field(
        default="",
        metadata={
            "help": "pretrained token-input foundation folder, or a folder of them (one per fold group, "
            "each pretrained with --holdout_subjects)"
        },
    )
    foundation_patches: str = field(
        default="", metadata={"help": "pretrained raw-patch foundation folder or folders ('' skips)"}
    )
    pooling: str = field(
        default="mean",
        metadata={
            "help": "mean: over every channel and patch; channels: per channel, side by side (keeps "
            "where on the montage a state sits, e.g. a lateralised rhythm); spatial_power: learnt spatial "
            "filters and the log power of each filtered, patch-centred state sequence (CSP's form)"
        },
    )
    codes_file: str = field(
        default="",
        metadata={
            "help": "a .safetensors of the task's tokenizer codes and labels: written when missing, read "
            "instead of the recordings and the tokenizer when present (small enough to travel to a GPU "
            "machine; rows that need the signal itself are then skipped)"
        },
    )
    label_fractions: str = field(
        default="1",
        metadata={
            "help": "fractions of the training subjects' labels, comma-separated (e.g. 0.1,0.3,1): every "
            "row at each, drawn per subject and class; more than one adds label_efficiency.png"
        },
    )
    protocol: str = field(
        default="strict",
        metadata={
            "help": "strict: each fold uses a foundation model whose pretraining held out that fold's test "
            "subjects (an error if none did); held_out: strict, but only the folds whose test subjects a "
            "model held out are run (one model pretrained with --holdout_subjects, tested on those); "
            "transductive: one model for every fold, labelled as such"
        },
    )
    out: str = field(
        default="runs/classify",
        metadata={"help": "folder for results.json, table.md, confusion.png and per_subject.png"},
    )
    seeds: str = "0,1,2"
    folds: int = field(default=-1, metadata={"help": "-1: the task's; 0: leave one group out"})
    rows: str = field(default="", metadata={"help": "only these rows (comma-separated)"})
    epochs: int = field(default=30, metadata={"help": "training epochs of every neural row"})
    scratch_code_init: str = field(
        default="",
        metadata={
            "help": "a tokenizer folder (the codes' tokenizer): the from-scratch row starts its code "
            "embeddings from its codebook vectors instead of at random (BiotokFoundation."
            "init_code_embed_from_codebooks)"
        },
    )
    batch_size: int = 32
    lr: float = 5e-4
    probe_lr: float = field(
        default=5e-3, metadata={"help": "learning rate of the linear probe on frozen features"}
    )
    layer_decay: float = field(
        default=0.65,
        metadata={"help": "learning-rate factor per block toward the input when fine-tuning (LaBraM: 0.65)"},
    )
    weight_decay: float = 0.05
    val_subjects: int = field(
        default=0,
        metadata={
            "help": "hold this many of each fold's training subjects out as validation (drawn with the seed; "
            "the same for every neural row): each neural fit keeps the epoch of best validation balanced "
            "accuracy (early stopping, as LaBraM selects its models). 0: every training subject trains "
            "for --epochs"
        },
    )
    train_blocks: int = field(
        default=-1,
        metadata={
            "help": "the fine-tuned row trains only the last N transformer blocks (with the final norm, "
            "pooling and head), the embeddings and lower blocks frozen as pretrained; -1: every block. "
            "The from-scratch row always trains everything"
        },
    )
    n_blocks: int = field(
        default=0,
        metadata={
            "help": "the neural rows use the foundation's first N transformer blocks only (with the final "
            "norm): the probes read, and fine-tuning starts from, a middle layer; 0: every block; -1 (the "
            "CSP probe only): the depth that scores best over the training subjects' own folds. On motor "
            "imagery the states after blocks 7-10 of 12 carry more left/right than the top"
        },
    )
    probe_first: bool = field(
        default=False,
        metadata={
            "help": "LP-FT (Kumar et al. 2022): the fine-tuned and from-scratch rows first train the pooling "
            "and head as the linear probe does, then fine-tune everything from there, so that a new head's "
            "first gradients do not distort the pretrained features"
        },
    )
    csp_init: bool = field(
        default=False,
        metadata={
            "help": "every neural row's spatial_power pooling and head start from CSP + LDA fitted in closed "
            "form on the frozen network's states of the training windows (its n_filters first CSP filters, "
            "LDA's weights as the head): the probe trains on from there, the fine-tuned and from-scratch "
            "rows fine-tune from there (--probe_first's stage, if given, first trains the readout on from that "
            "start). The CSP probe row reads what "
            'the learnt probe misses (docs/BENCHMARKS.md, "Which layer carries motor imagery?")'
        },
    )
    balance_classes: bool = field(
        default=False, metadata={"help": "weight the loss by inverse class frequency (for imbalanced tasks)"}
    )
    mixed_precision: str = "no"
    cuda_graphs: bool = field(
        default=False,
        metadata={
            "help": "on a GPU, train through torch.compile(mode='reduce-overhead'): CUDA graphs, 3.8x faster "
            "per step in benchmarks/classify_step_profile.py, 3.6x per fold after a process's first; every batch is "
            "padded to --batch_size with rows of zero weight, so the losses are those of the unpadded batches"
        },
    )
    merge: str = field(
        default="",
        metadata={
            "help": "comma-separated results folders of this task from runs that differ in seeds or rows "
            "(e.g. one process per seed on a GPU): write their union to --out, training nothing"
        },
    )
    save_models: bool = field(default=False, metadata={"help": "save every fine-tuned model (seed 0)"})
    progress: bool = True


def fit(
    module: torch.nn.Module,
    inputs: dict[str, torch.Tensor],
    labels: torch.Tensor,
    param_groups: list[dict],
    args: ClassifyArgs,
    seed: int,
    val: tuple[dict[str, torch.Tensor], torch.Tensor] | None = None,
) -> torch.nn.Module:
    """Train `module(**batch) -> logits` with cross-entropy: AdamW, warmup + cosine, clipping (Accelerate).
    With `val` (inputs, labels), the weights of the epoch of best validation balanced accuracy are kept."""
    accelerator = Accelerator(mixed_precision=args.mixed_precision, cpu=not torch.cuda.is_available())
    generator = torch.Generator().manual_seed(seed)
    n = len(labels)
    per_epoch = math.ceil(n / args.batch_size)
    steps = args.epochs * per_epoch
    counts = torch.bincount(labels, minlength=int(labels.max()) + 1).float()
    # inverse class frequency, so the loss (like balanced accuracy) counts every class equally
    if args.balance_classes:
        weight = counts.sum() / (len(counts) * counts.clamp(min=1))
    else:
        weight = torch.ones(len(counts))
    # one fused kernel per optimizer step on a GPU (these fine-tunings are bound by the host's launches)
    optimizer = torch.optim.AdamW(param_groups, fused=accelerator.device.type == "cuda" or None)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(max(1, steps // 10), steps))
    module, optimizer = accelerator.prepare(module, optimizer)
    weight = weight.to(accelerator.device)
    # a task's inputs are small: moved once, each batch gathered on the device
    inputs = {k: v.to(accelerator.device) for k, v in inputs.items()}
    labels = labels.to(accelerator.device)
    module.train()
    # CUDA graphs replay one shape: every batch padded to batch_size, the padding weighing nothing
    static = args.cuda_graphs
    step_module = module
    if static and accelerator.device.type == "cuda":
        # a new model per fold is a recompile of the same code; past dynamo's 8 per code object a
        # process falls back to eager from its ninth fold on (issue 17's run: ~10 s per fold, then ~20 s).
        # Dropping the last fold's graphs costs little: with the reset, folds 9-11 took 13.0 s against 14.2 s
        # for folds 2-8 (docs/BENCHMARKS.md, "--cuda_graphs inside fit")
        torch._dynamo.reset()
        step_module = torch.compile(module, mode="reduce-overhead")
    best = (-1.0, None)  # (validation balanced accuracy, weights on the CPU)
    for _ in range(args.epochs):
        for batch_index in torch.randperm(n, generator=generator).split(args.batch_size):
            n_real = len(batch_index)
            if static and n_real < args.batch_size:
                batch_index = torch.cat([batch_index, batch_index[:1].expand(args.batch_size - n_real)])
            batch_index = batch_index.to(accelerator.device)
            batch = {k: v[batch_index] for k, v in inputs.items()}
            target = labels[batch_index]
            row_weight = weight[target]
            row_weight[n_real:] = 0  # the padding weighs nothing
            train_step(accelerator, step_module, optimizer, batch, target, row_weight)
            scheduler.step()
        if val is not None:
            # the uncompiled module, so that eval mode does not record graphs of its own
            probabilities = predict(module.eval(), val[0])
            module.train()
            score = balanced_accuracy(val[1].numpy(), probabilities.argmax(axis=1), probabilities.shape[1])
            if score > best[0]:  # the first best epoch on a tie
                state = accelerator.unwrap_model(module).state_dict()
                best = (score, {k: v.detach().to("cpu", copy=True) for k, v in state.items()})
    if best[1] is not None:
        accelerator.unwrap_model(module).load_state_dict(best[1])
    return accelerator.unwrap_model(module).eval()


def train_step(
    accelerator: Accelerator,
    module: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    batch: dict[str, torch.Tensor],
    target: torch.Tensor,
    row_weight: torch.Tensor,
    update: Callable[[], None] | None = None,
) -> torch.Tensor:
    """One step of `fit` (and of benchmarks/classify_step_profile.py): the weighted mean of the rows'
    cross-entropy (as F.cross_entropy with `weight`; a row of weight 0 counts nothing), its gradients
    clipped to norm 1, one optimizer step. `module(**batch) -> logits (batch, classes)`. `update`, if
    given, does the clipping and the optimizer step instead (the profile times a compiled one)."""
    with accelerator.autocast():
        logits = module(**batch)
    per_row = F.cross_entropy(logits.float(), target, reduction="none")
    loss = (per_row * row_weight).sum() / row_weight.sum()
    accelerator.backward(loss)
    if update is None:
        accelerator.clip_grad_norm_(module.parameters(), 1.0)
        optimizer.step()
    else:
        update()
    optimizer.zero_grad(set_to_none=True)
    return loss.detach()


@torch.no_grad()
def in_batches(function, device, inputs: dict[str, torch.Tensor], batch_size: int = 64) -> torch.Tensor:
    """`function(**batch)` over the rows of `inputs` in batches, concatenated on the CPU."""
    n = len(next(iter(inputs.values())))
    return torch.cat(
        [
            function(**{k: v[start : start + batch_size].to(device) for k, v in inputs.items()}).cpu()
            for start in range(0, n, batch_size)
        ]
    )


def predict(module: torch.nn.Module, inputs: dict[str, torch.Tensor]) -> np.ndarray:
    """Class probabilities `(n, classes)`."""
    logits = in_batches(module, next(module.parameters()).device, inputs)
    return torch.softmax(logits.float(), dim=-1).numpy()


class Inputs:
    """The epochs as every model reads them: codes of the frozen tokenizer, raw patches, channel ids."""

    def __init__(
        self,
        epochs: Epochs,
        modality: str,
        tokenizer: BiotokTokenizer | None,
        batch_size: int = 64,
        codes: torch.Tensor | None = None,
    ):
        self.patches = (
            torch.from_numpy(patchify(epochs.data, epochs.preset.patch_len)) if epochs.data.size else None
        )  # (N, C, P, L); None for epochs read from a codes file
        self.modality = modality
        self.ch_names = epochs.ch_names
        self.codes = codes
        # the CSP probe's states per (model, depth), made once per run: 71 MB a depth for motor imagery
        self.frozen_cache: dict[tuple[int, int], np.ndarray] = {}
        if tokenizer is not None:
            ids = tokenizer.eval().channel_ids([epochs.ch_names], modality)
            self.codes = in_batches(
                lambda patches: tokenizer.encode_patches(patches, ids.expand(len(patches), -1), modality),
                tokenizer.device,
                {"patches": self.patches},
                batch_size,
            )

    def for_model(self, model: BiotokClassifier, index: np.ndarray) -> dict[str, torch.Tensor]:
        ids = model.foundation.channel_ids([self.ch_names], self.modality).cpu()
        index = torch.from_numpy(index)
        data = {"channel_ids": ids.expand(len(index), -1)}
        if model.foundation.config.input_kind == "tokens":
            data["codes"] = self.codes[index]
        else:
            data["patches"] = self.patches[index]
        return data


def task_signature(task: ClassifyTask) -> str:
    """What makes a task's windows: its name, recordings, window, classes and channels (not its folds
    or baseline, which a codes file does not fix)."""
    import hashlib

    fields = {
        k: v
        for k, v in asdict(task).items()
        if k in ("name", "preset", "sources", "classes", "tmin", "tmax", "channels")
    }
    return hashlib.sha256(json.dumps(fields, sort_keys=True, default=str).encode()).hexdigest()[:16]


def save_codes(
    path: str | Path, epochs: Epochs, codes: torch.Tensor, tokenizer_hash: str, task: ClassifyTask
) -> None:
    """The codes `(N, C, P, S, Q)` of every window with its label, subject and group (atomically)."""
    from safetensors.torch import save_file

    meta = {
        "task": task.name,
        "task_signature": task_signature(task),
        "subjects": epochs.subjects.tolist(),
        "groups": epochs.groups.tolist(),
        "classes": epochs.classes,
        "ch_names": epochs.ch_names,
        "sfreq": epochs.sfreq,
        "preset": epochs.preset.to_dict(),
        "tokenizer_hash": tokenizer_hash,
    }
    tensors = {"codes": codes.to(torch.int16), "labels": torch.from_numpy(epochs.labels).long()}
    with atomic_path(Path(path)) as tmp:
        save_file(tensors, str(tmp), metadata={"biotok": json.dumps(meta)})


def load_codes(path: str | Path, task: ClassifyTask) -> tuple[Epochs, torch.Tensor, str]:
    """Epochs without their signal (data `(N, C, 0)`), their codes and the tokenizer's hash; the file
    must have been written for `task` as it is now."""
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        meta = json.loads((f.metadata() or {}).get("biotok", "null") or "null")
        if meta is None:
            raise BiosignalError(path, "metadata", "not a biotok codes file (no 'biotok' metadata)")
        if meta.get("task_signature") != task_signature(task):
            raise BiosignalError(
                path,
                "task",
                f"written for task {meta.get('task')!r} with other recordings, window or classes; "
                f"expected task {task.name!r} as defined now (delete the file to rewrite it)",
            )
        codes, labels = f.get_tensor("codes").long(), f.get_tensor("labels").numpy()
    epochs = Epochs(
        data=np.zeros((len(labels), len(meta["ch_names"]), 0), dtype=np.float32),
        labels=labels,
        subjects=np.array(meta["subjects"]),
        groups=np.array(meta["groups"]),
        classes=meta["classes"],
        ch_names=meta["ch_names"],
        sfreq=meta["sfreq"],
        preset=get_preset(meta["preset"]),
    )
    return epochs, codes, meta["tokenizer_hash"]


PROTOCOLS = ("strict", "held_out", "transductive")


@dataclass
class Pretrained:
    """A pretrained foundation model and the subjects its pretraining held out by name."""

    folder: Path
    model: BiotokFoundation
    held_out: set[str]


def load_pretrained(path: str) -> list[Pretrained]:
    """The foundation model in `path`, or every model in its subfolders (`<name>/` or `<name>/final/`)."""
    root = Path(path)
    if (root / "config.json").exists():
        folders = [root]
    elif root.is_dir():
        candidates = (f if (f / "config.json").exists() else f / "final" for f in root.iterdir())
        folders = sorted(f for f in candidates if (f / "config.json").exists())
    else:
        folders = []
    if not folders:
        raise ConfigError("foundation", f"no foundation model (config.json) in {root} or its subfolders")
    return [Pretrained(f, BiotokFoundation.from_pretrained(str(f)).eval(), held_out(f)) for f in folders]


def held_out(folder: Path) -> set[str]:
    """Every subject the run that trained the model in `folder` held out by name, over all corpora."""
    from foundation.card import holdout_subjects

    return {str(s) for subjects in holdout_subjects(folder).values() for s in subjects}


def holding_model(models: list[Pretrained], test_subjects: set[str]) -> Pretrained | None:
    """The first model whose pretraining held every one of `test_subjects` out, or None."""
    return next((model for model in models if test_subjects <= model.held_out), None)


def fold_model(models: list[Pretrained], test_subjects: set[str], protocol: str) -> Pretrained:
    """The model a fold may use: under the strict protocol one whose pretraining never saw the fold's
    test subjects; under the transductive one the only model given."""
    if protocol == "transductive":
        if len(models) > 1:
            raise ConfigError("protocol", "transductive: give one foundation model, not one per fold group")
        return models[0]
    candidate = holding_model(models, test_subjects)
    if candidate is not None:
        return candidate
    held = {str(m.folder): sorted(m.held_out) for m in models}
    raise ConfigError(
        "foundation",
        f"strict protocol: no model held test subjects {sorted(test_subjects)} out of pretraining "
        f"(held out by name: {held}); pretrain one per fold group with --holdout_subjects, "
        "or pass --protocol transductive",
    )


def _input_kind(row: str) -> str:
    """Which foundation model a neural row uses: "patches" (raw-patch rows) or "tokens"."""
    return "patches" if row.startswith("raw-patch") else "tokens"


@functools.lru_cache(maxsize=1)
def _code_init_tokenizer(path: str) -> BiotokTokenizer:
    """The --scratch_code_init tokenizer, loaded once for every fold and seed."""
    return BiotokTokenizer.from_pretrained(path).eval()


def _neural(
    row: str,
    base: BiotokFoundation,
    inputs: Inputs,
    epochs: Epochs,
    train,
    test,
    args: ClassifyArgs,
    seed: int,
) -> tuple[np.ndarray, BiotokClassifier]:
    """Test-fold probabilities of one neural row, and the trained model."""
    torch.manual_seed(seed)
    if args.n_blocks > 0:
        base = base.truncated(args.n_blocks)
    if row == "from scratch":  # the same network, freshly initialised
        base = BiotokFoundation(base.config)
        if args.scratch_code_init:
            base.init_code_embed_from_codebooks(_code_init_tokenizer(args.scratch_code_init), seed)
    # on the device fit() trains on, so that the probe's features and its head meet there
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = BiotokClassifier.from_foundation(
        base, epochs.classes, inputs.modality, args.pooling, len(epochs.ch_names)
    ).to(device)
    train, val = validation_split(train, epochs, args.val_subjects, seed)
    labels = torch.from_numpy(epochs.labels[train])
    val_labels = torch.from_numpy(epochs.labels[val])
    # what the config lets train (a `frozen_code_embed` foundation keeps its code embeddings frozen)
    trainable = [param for param in model.parameters() if param.requires_grad]
    probe = "linear probe" in row
    if probe or args.probe_first or args.csp_init:
        model.foundation.requires_grad_(False).eval()
        train_states = frozen_states(model, inputs.for_model(model, train))  # for the CSP start and the probe
        if args.csp_init:
            csp_init_readout(model, train_states, epochs.labels[train])
    if probe or args.probe_first:
        readout = Readout(model.pool, model.head)
        groups = [{"params": list(readout.parameters()), "lr": args.probe_lr}]
        val_states = (frozen_states(model, inputs.for_model(model, val)), val_labels) if len(val) else None
        readout = fit(readout, train_states, labels, groups, args, seed, val_states)
        model.pool, model.head = readout.pool, readout.head
    if not probe:
        for param in trainable:  # the foundation was frozen above for the probe stage or the CSP start
            param.requires_grad_(True)
        first = 0 if row == "from scratch" else freeze_lower_blocks(model, args.train_blocks)
        decay = 1.0 if row == "from scratch" else args.layer_decay
        groups = layer_decay_groups(model, args.lr, decay, args.weight_decay)
        if first > 0 and model.foundation.config.dropout == 0:
            # the frozen blocks give the same states every epoch: computed once, only the top ones run
            def below(index: np.ndarray) -> dict[str, torch.Tensor]:
                return frozen_states(model, inputs.for_model(model, index), below=first)

            val_inputs = (below(val), val_labels) if len(val) else None
            fit(TopBlocks(model, first), below(train), labels, groups, args, seed, val_inputs)
            model.eval()
        else:
            val_inputs = (inputs.for_model(model, val), val_labels) if len(val) else None
            model = fit(model, inputs.for_model(model, train), labels, groups, args, seed, val_inputs)
    return predict(model, inputs.for_model(model, test)), model


def csp_init_readout(model: BiotokClassifier, states: dict[str, torch.Tensor], labels: np.ndarray) -> None:
    """Set `model`'s spatial_power pooling and head to CSP + LDA fitted on frozen `states` (`frozen_states`)
    of windows with `labels`: the pooling's log power of its filtered, patch-centred states is CSP's
    feature, so the model's logits give LDA's probabilities (two classes: logit difference = LDA's
    decision)."""
    from sklearn.discriminant_analysis import LinearDiscriminantAnalysis

    hidden, channel_ids = states["hidden"].float(), states["channel_ids"]  # both on the CPU
    centred = patch_centred(hidden, channel_ids).flatten(2).numpy()
    n_filters = model.pool.spatial_filters.shape[0]
    csp = fit_csp(csp_compact(centred), labels, n_filters)
    filters = model.pool.spatial_filters
    with torch.no_grad():
        filters.copy_(filters.new_tensor(csp.filters_[:n_filters]))
        power = model.pool(states["hidden"].to(filters.device), channel_ids.to(filters.device))
        lda = LinearDiscriminantAnalysis().fit(power.float().cpu().numpy(), labels)
        coef, intercept = lda.coef_, lda.intercept_
        if len(lda.classes_) == 2:  # one decision: class 1's logit minus class 0's
            coef, intercept = (
                np.stack([-coef[0] / 2, coef[0] / 2]),
                np.array([-intercept[0] / 2, intercept[0] / 2]),
            )
        model.head.linear.weight.copy_(torch.as_tensor(coef))
        model.head.linear.bias.copy_(torch.as_tensor(intercept))


def frozen_states(
    model: BiotokClassifier, model_inputs: dict[str, torch.Tensor], below: int = 0
) -> dict[str, torch.Tensor]:
    """The frozen foundation's patch states `(n, C, P, d)` of windows given as `model`'s inputs and their
    channel ids, computed once: what a probe's pooling and head train on; with `below` > 0 the residual
    stream before block `below` instead, what `TopBlocks(model, below)` trains on."""
    if below > 0:
        encode = functools.partial(
            model.foundation.lower_states, modality=model.config.modality, n_blocks=below
        )
    else:
        encode = functools.partial(model.foundation.encode, modality=model.config.modality)
    with torch.no_grad():
        hidden = in_batches(encode, model.device, model_inputs)
    return {"hidden": hidden, "channel_ids": model_inputs["channel_ids"]}


def freeze_lower_blocks(model: BiotokClassifier, train_blocks: int) -> int:
    """`--train_blocks`: freeze the embeddings and every block below the last `train_blocks` (-1: none
    frozen). Returns the first block that trains (0 when nothing below the blocks is cached)."""
    if train_blocks < 0:
        return 0
    n_layers = model.foundation.config.n_layers
    for name, param in model.named_parameters():
        if block_depth(name, n_layers) <= n_layers - train_blocks:
            param.requires_grad_(False)
    return max(0, n_layers - train_blocks)


def _csp_probe(
    base: BiotokFoundation, inputs: Inputs, epochs: Epochs, train, test, args: ClassifyArgs
) -> np.ndarray:
    """Test-fold probabilities of CSP + LDA (the classical row's pipeline) on the frozen foundation's
    states after its first `--n_blocks` blocks (-1: the depth whose CSP + LDA scores best over
    leave-one-group-out folds of the training windows alone): each channel's patch-centred states
    (patches x state dimensions) are its samples, so CSP's filters mix the channels' state sequences in
    closed form where the linear probe learns its spatial filters by gradient (docs/BENCHMARKS.md, "Which
    layer carries motor imagery?")."""
    labels, n_classes = epochs.labels, len(epochs.classes)
    depth = args.n_blocks or base.config.n_layers
    if args.n_blocks < 0:
        inner = group_folds(epochs.groups[train], 0)
        scores = {}
        for candidate in range(1, base.config.n_layers + 1):
            x, y = _csp_samples(base, candidate, inputs, epochs)[train], labels[train]
            scores[candidate] = np.mean(
                [
                    balanced_accuracy(y[score], csp_lda(x[fit], y[fit], x[score]).argmax(axis=1), n_classes)
                    for fit, score in inner
                ]
            )
        depth = max(scores, key=scores.get)  # the shallowest on a tie
        print(f"CSP probe: depth {depth} chosen on the training subjects ({scores[depth]:.3f})", flush=True)
    x = _csp_samples(base, depth, inputs, epochs)
    return csp_lda(x[train], labels[train], x[test])


def _csp_samples(base: BiotokFoundation, depth: int, inputs: Inputs, epochs: Epochs) -> np.ndarray:
    """Every window's patch-centred states after `depth` blocks of the frozen `base` (patches x d samples
    per channel), compacted by `csp_compact` to `(N, C, 2C)`: the same for every fold and seed of a model,
    so made once per run (in `inputs`)."""
    key = (id(base), depth)
    if key not in inputs.frozen_cache:
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        model = BiotokClassifier.from_foundation(base.truncated(depth), epochs.classes, inputs.modality)
        model = model.to(device).eval()
        states = frozen_states(model, inputs.for_model(model, np.arange(len(epochs))))
        centred = patch_centred(states["hidden"].float(), states["channel_ids"])  # both on the CPU
        inputs.frozen_cache[key] = csp_compact(centred.flatten(2).numpy())
    return inputs.frozen_cache[key]


def csp_compact(x: np.ndarray, chunk: int = 64) -> np.ndarray:
    """`(n, channels, samples)` -> `(n, channels, 2 x channels)` float64 windows with each window's
    per-channel mean and second moments, all that CSP + LDA reads (its class covariances and each filtered
    window's mean power): `csp_lda` gives the same probabilities on either, to float rounding, and fits
    far faster on these when samples >> channels (the CSP probe's 12 depths x 10 inner folds per fold)."""
    n, n_channels, n_samples = x.shape
    out = np.empty((n, n_channels, 2 * n_channels))
    for start in range(0, n, chunk):  # float64 a chunk at a time: the states are 100s of MB
        block = x[start : start + chunk].astype(np.float64)
        mean = block.mean(axis=2, keepdims=True)
        centred = block - mean
        eigvals, eigvecs = np.linalg.eigh(centred @ centred.transpose(0, 2, 1) / n_samples)
        # columns mean +/- sqrt(C) x the covariance's square-root factor: mean m, second moment m m' + cov
        spread = eigvecs * np.sqrt(n_channels * np.clip(eigvals, 0, None))[:, None, :]
        out[start : start + chunk] = np.concatenate([mean + spread, mean - spread], axis=2)
    return out


def fit_csp(x: np.ndarray, y: np.ndarray, n_components: int = 4, reg: str | float | None = None):
    """MNE's CSP (log variance) fitted on `(n, channels, samples)`, quietly; `reg` its covariance
    regularisation (None, a shrinkage in [0, 1] or an estimator name such as "ledoit_wolf")."""
    import mne
    from mne.decoding import CSP

    with mne.utils.use_log_level("error"):  # CSP reports its rank estimate on every fit
        return CSP(n_components=n_components, reg=reg, log=True).fit(x.astype(np.float64), y)


def csp_lda(
    train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, reg: str | float | None = None
) -> np.ndarray:
    """CSP (4 components, log variance) + LDA fitted on `(n, channels, samples)`: test probabilities."""
    from sklearn.discriminant_analysis import LinearDiscriminantAnalysis

    csp = fit_csp(train_x, train_y, reg=reg)
    lda = LinearDiscriminantAnalysis().fit(csp.transform(train_x.astype(np.float64)), train_y)
    return lda.predict_proba(csp.transform(test_x.astype(np.float64)))


def csp_band(data: np.ndarray, sfreq: float) -> np.ndarray:
    """`(n, channels, samples)` band-passed to CSP_BAND per window (Butterworth order 4, zero phase): the
    mu and beta bands, where imagined movement desynchronises (as in MNE's EEGBCI example); broadband CSP
    follows the slow high-power drifts instead (0.503 against 0.573 balanced accuracy over 11 unseen
    EEGBCI subjects)."""
    from scipy import signal as sps

    sos = sps.butter(4, CSP_BAND, btype="bandpass", fs=sfreq, output="sos")
    return sps.sosfiltfilt(sos, data.astype(np.float64), axis=-1)


def _classical(kind: str, epochs: Epochs, train, test, seed: int) -> np.ndarray:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x, y = epochs.data.astype(np.float64), epochs.labels
    if kind == "csp_lda":
        x = csp_band(x, epochs.sfreq)
        return csp_lda(x[train], y[train], x[test])
    x = band_power(x, epochs.sfreq, epochs.preset.modality)
    pipeline = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, random_state=seed))
    return pipeline.fit(x[train], y[train]).predict_proba(x[test])


CSP_BAND = (8.0, 30.0)  # Hz
CSP_PROBE = "foundation (CSP probe)"
BANDS = {
    "eeg": [(1, 4), (4, 8), (8, 13), (13, 30), (30, 45)],
    "emg": [(5, 20), (20, 40), (40, 60), (60, 95)],
}


def band_power(data: np.ndarray, sfreq: float, modality: str) -> np.ndarray:
    """`(n, channels, times)` -> log mean Welch power per channel and band `(n, channels x bands)`."""
    from scipy.signal import welch

    freqs, power = welch(data, fs=sfreq, nperseg=min(data.shape[-1], int(sfreq)), axis=-1)
    bands = [(lo, min(hi, sfreq / 2)) for lo, hi in BANDS[modality]]
    feats = [np.log(power[..., (freqs >= lo) & (freqs < hi)].mean(axis=-1) + 1e-12) for lo, hi in bands]
    return np.stack(feats, axis=-1).reshape(len(data), -1)


def validation_split(
    train: np.ndarray, epochs: Epochs, n_subjects: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """`n_subjects` of the training subjects, drawn with `seed`, as validation: (train, val) indices.
    With 0, (train, empty)."""
    if n_subjects <= 0:
        return train, train[:0]
    subjects = sorted(set(epochs.subjects[train].tolist()))
    if n_subjects >= len(subjects):
        raise ConfigError(
            "val_subjects", f"{n_subjects} of {len(subjects)} training subjects would leave none to train on"
        )
    held = np.random.default_rng(seed).choice(subjects, n_subjects, replace=False)
    is_val = np.isin(epochs.subjects[train], held)
    return train[~is_val], train[is_val]


def label_subset(train: np.ndarray, epochs: Epochs, fraction: float, seed: int) -> np.ndarray:
    """`fraction` of every training subject's labelled windows, drawn per class (at least one window of
    each class a subject has), the same draw for every row of a seed. `(n_train,)` -> sorted indices."""
    if fraction >= 1:
        return train
    rng = np.random.default_rng(seed)
    kept = []
    for subject in sorted(set(epochs.subjects[train].tolist())):
        for label in sorted(set(epochs.labels[train].tolist())):
            pool = train[(epochs.subjects[train] == subject) & (epochs.labels[train] == label)]
            if len(pool):
                kept.append(rng.choice(pool, max(1, round(fraction * len(pool))), replace=False))
    return np.sort(np.concatenate(kept))


def _row_summary(per_seed: list[dict]) -> dict:
    """Mean and spreads of every metric over folds and seeds, and per-subject balanced accuracy."""
    metrics = [m for m in ("balanced_accuracy", "auroc", "kappa") if m in per_seed[0]["folds"][0]]
    summary = {m: _summary(np.array([[f[m] for f in s["folds"]] for s in per_seed])) for m in metrics}
    subjects = sorted({s for seed in per_seed for f in seed["folds"] for s in f["per_subject"]})
    summary["per_subject_balanced_accuracy"] = {
        s: float(
            np.mean(
                [
                    f["per_subject"][s]["balanced_accuracy"]
                    for seed in per_seed
                    for f in seed["folds"]
                    if s in f["per_subject"]
                ]
            )
        )
        for s in subjects
    }
    return summary


def _summary(values: np.ndarray) -> dict:
    """values `(seeds, folds)` -> mean, std over folds (mean over seeds) and std over seeds of the fold mean."""
    return {
        "mean": float(np.nanmean(values)),
        "std_folds": float(np.nanmean(np.nanstd(values, axis=1))),
        "std_seeds": float(np.nanstd(np.nanmean(values, axis=1))),
    }


def merge_results(parts: list[dict]) -> dict:
    """One results dict from runs of one task that differ in seeds or rows: per label fraction and row,
    the seeds of every part (a seed in two parts is an error), confusion matrices summed, summaries
    computed again over all folds and seeds. A part with only the classical row joins parts of any
    protocol (a CPU run's classical row beside a GPU run's strict neural rows)."""

    def classical_only(part: dict) -> bool:  # its folds use no foundation, so any protocol's parts take it
        return all(set(rows) <= {"classical"} for rows in rows_by_fraction(part).values())

    first = next((part for part in parts if not classical_only(part)), parts[0])
    for part in parts:
        for key in ("n_epochs", "protocol", "classes"):
            if key == "protocol" and classical_only(part):
                continue
            if part["task"]["name"] != first["task"]["name"] or part.get(key) != first.get(key):
                raise ConfigError(
                    "merge", f"parts differ in task or {key}: {first.get(key)} vs {part.get(key)}"
                )
    by_fraction: dict[float, dict[str, dict]] = {}
    for part in parts:
        for fraction, rows in rows_by_fraction(part).items():
            into = by_fraction.setdefault(fraction, {})
            for row, body in rows.items():
                have = into.setdefault(row, {"confusion": np.zeros_like(body["confusion"]), "seeds": []})
                twice = {s["seed"] for s in have["seeds"]} & {s["seed"] for s in body["seeds"]}
                if twice:
                    raise ConfigError(
                        "merge", f"{row!r} at {fraction} of the labels: seeds {sorted(twice)} twice"
                    )
                have["confusion"] = have["confusion"] + np.asarray(body["confusion"])
                have["seeds"] = sorted(have["seeds"] + body["seeds"], key=lambda s: s["seed"])
    for rows in by_fraction.values():
        for body in rows.values():
            body["summary"] = _row_summary(body["seeds"])
            body["confusion"] = body["confusion"].tolist()
    largest = max(by_fraction)
    ran = set(by_fraction[largest])
    skipped = {row: why for part in parts for row, why in part["skipped"].items() if row not in ran}
    return {
        **first,
        "rows": by_fraction.pop(largest),
        "by_fraction": {str(f): rows for f, rows in sorted(by_fraction.items())},
        "label_fraction": largest,
        "skipped": skipped,
        "merged_from": [part["args"]["out"] for part in parts],
    }


def write_results(results: dict, out: Path) -> None:
    """results.json, table.md and the plots into `out`."""
    with atomic_path(out / "results.json") as tmp:
        tmp.write_text(json.dumps(results, indent=2))
    with atomic_path(out / "table.md") as tmp:
        tmp.write_text(markdown(results))
    plot(results, out)


def run(args: ClassifyArgs) -> dict:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.merge:
        parts = [json.loads((Path(f) / "results.json").read_text()) for f in args.merge.split(",")]
        results = merge_results(parts)
        write_results(results, out)
        print(markdown(results))
        return results
    task = ClassifyTask.load(args.task)
    seeds = [int(s) for s in args.seeds.split(",")]
    cached = bool(args.codes_file) and Path(args.codes_file).exists()
    if cached:
        epochs, codes, codes_hash = load_codes(args.codes_file, task)
    else:
        try:
            epochs, codes, codes_hash = load_epochs(task, args.root, progress=args.progress), None, None
        except BiosignalError as error:
            if not args.codes_file:
                raise
            # a codes file that did not travel (a typo, a folder left behind) must not read as a data error
            raise BiosignalError(
                args.codes_file,
                "codes_file",
                f"not found, and the recordings to write it are missing ({error})",
            ) from error
    folds = group_folds(epochs.groups, task.folds if args.folds < 0 else args.folds)
    modality = epochs.preset.name
    wanted = [r for r in ROWS if not args.rows or r in args.rows.split(",")]
    if args.protocol not in PROTOCOLS:
        raise ConfigError("protocol", f"{args.protocol!r}: expected one of {PROTOCOLS}")
    trained = [row for row in wanted if row not in ("classical", CSP_PROBE)]
    if args.n_blocks < -1 or (args.n_blocks == -1 and trained):
        raise ConfigError(
            "n_blocks",
            f"{args.n_blocks}: expected 0 (every block), N > 0, or -1 for the CSP probe alone "
            f"(the trained rows {trained} take a fixed depth)",
        )
    if args.csp_init and args.pooling != "spatial_power":
        raise ConfigError("csp_init", f"starts a spatial_power pooling; --pooling is {args.pooling!r}")
    bases: dict[str, list[Pretrained]] = {}
    if args.foundation:
        bases["tokens"] = load_pretrained(args.foundation)
    if args.foundation_patches:
        bases["patches"] = load_pretrained(args.foundation_patches)
    tokenizer = BiotokTokenizer.from_pretrained(args.tokenizer) if args.tokenizer and not cached else None
    if tokenizer is not None:
        codes_hash = tokenizer.config.config_hash()
    if "tokens" in bases:
        if codes_hash is None:
            raise ConfigError(
                "tokenizer", "the token-input foundation model needs --tokenizer to make its codes"
            )
        for pretrained in bases["tokens"]:
            if pretrained.model.config.tokenizer_hash != codes_hash:
                raise ConfigError(
                    "tokenizer",
                    f"this tokenizer is not the one {pretrained.folder} was pretrained on",
                )
    skipped = {}
    for row in list(wanted):
        need = _input_kind(row)
        if cached and (row == "classical" or need == "patches"):
            skipped[row] = f"needs the signal; {args.codes_file} holds the codes only"
        elif row != "classical" and need not in bases:
            skipped[row] = f"no {'--foundation_patches' if need == 'patches' else '--foundation'} given"
        elif row in ("classical", CSP_PROBE):
            try:
                import sklearn  # noqa: F401
            except ImportError:
                skipped[row] = "scikit-learn is not installed (pip install 'biotok[classical]')"
    wanted = [r for r in wanted if r not in skipped]
    used_kinds = {_input_kind(r) for r in wanted if r != "classical"}
    # the frozen tokenizer's codes are made once, and only when a token row runs or a codes file is asked for
    needs_codes = "tokens" in used_kinds or bool(args.codes_file)
    used = {kind: models for kind, models in bases.items() if kind in used_kinds}

    def tested(test: np.ndarray) -> set[str]:
        """The subjects of windows `test`, named as `--holdout_subjects` names them."""
        return {str(s) for s in epochs.subjects[test].tolist()}

    if args.protocol == "held_out":  # the folds every used model held out; the others are not run
        kept = [
            (train, test)
            for train, test in folds
            if all(holding_model(models, tested(test)) is not None for models in used.values())
        ]
        if not kept:
            raise ConfigError("protocol", "held_out: no fold's test subjects were held out of pretraining")
        folds = kept
    # every fold's model is chosen (and a strict-protocol violation refused) before any training
    chosen = {
        kind: [fold_model(models, tested(test), args.protocol) for _, test in folds]
        for kind, models in used.items()
    }
    inputs = Inputs(epochs, modality, tokenizer if needs_codes else None, codes=codes)
    if args.codes_file and not cached:
        if inputs.codes is None:
            raise ConfigError("codes_file", "writing a codes file needs --tokenizer")
        save_codes(args.codes_file, epochs, inputs.codes, codes_hash, task)

    results = {"task": asdict(task) | {"source_specs": None}, "args": asdict(args), "n_epochs": len(epochs)}
    results["protocol"] = args.protocol
    results["classes"], results["skipped"] = epochs.classes, skipped
    fractions = sorted({float(f) for f in args.label_fractions.split(",")})
    if not all(0 < f <= 1 for f in fractions):
        raise ConfigError("label_fractions", f"{args.label_fractions!r}: fractions must lie in (0, 1]")
    bar = tqdm(
        total=len(fractions) * len(wanted) * len(seeds) * len(folds),
        desc=f"classify {task.name}",
        disable=not args.progress,
    )
    results["by_fraction"] = {}
    for fraction in fractions:
        rows = results["by_fraction"][str(fraction)] = {}
        for row in wanted:
            per_seed = []
            matrix = np.zeros((len(epochs.classes),) * 2, dtype=np.int64)
            for seed in seeds:
                fold_results = []
                for k, (all_train, test) in enumerate(folds):
                    fold_start = time.perf_counter()
                    train = label_subset(all_train, epochs, fraction, seed)
                    if row == "classical":
                        probabilities = _classical(task.classical, epochs, train, test, seed)
                        folder = None
                    elif row == CSP_PROBE:
                        pretrained = chosen["tokens"][k]
                        folder = str(pretrained.folder)
                        probabilities = _csp_probe(pretrained.model, inputs, epochs, train, test, args)
                    else:
                        pretrained = chosen[_input_kind(row)][k]
                        folder = str(pretrained.folder)
                        probabilities, model = _neural(
                            row, pretrained.model, inputs, epochs, train, test, args, seed
                        )
                        if args.save_models and seed == seeds[0] and fraction == fractions[-1]:
                            model.save_pretrained(
                                out
                                / "models"
                                / row.replace(" (", "_").replace(")", "").replace(" ", "_")
                                / f"fold{k}"
                            )
                    labels = epochs.labels[test]
                    matrix += confusion_matrix(labels, probabilities.argmax(axis=1), len(epochs.classes))
                    per_subject = {
                        str(s): scores(
                            labels[epochs.subjects[test] == s], probabilities[epochs.subjects[test] == s]
                        )
                        for s in sorted(set(epochs.subjects[test].tolist()))
                    }
                    fold_results.append(
                        {
                            "fold": k,
                            "test_groups": sorted(set(epochs.groups[test].tolist())),
                            "n_train": int(len(train)),
                            "foundation": folder,
                            **scores(labels, probabilities),
                            "per_subject": per_subject,
                        }
                    )
                    bar.update(1)
                    if not args.progress:  # a log that a cut run leaves behind still holds every fold so far
                        print(
                            f"{row} | labels {fraction:g} | seed {seed} | fold {k + 1}/{len(folds)}: balanced "
                            f"accuracy {fold_results[-1]['balanced_accuracy']:.3f} in "
                            f"{time.perf_counter() - fold_start:.1f} s",
                            flush=True,
                        )
                per_seed.append({"seed": seed, "folds": fold_results})
            rows[row] = {"summary": _row_summary(per_seed), "confusion": matrix.tolist(), "seeds": per_seed}
    # "rows": the full label set (or the largest fraction asked for); "by_fraction": the smaller ones
    results["rows"] = results["by_fraction"].pop(str(fractions[-1]))
    results["label_fraction"] = fractions[-1]
    bar.close()
    write_results(results, out)
    print(markdown(results))
    return results


def markdown(results: dict) -> str:
    task = results["task"]
    lines = [
        f"Task `{task['name']}`: {task['description']} ({results['n_epochs']} windows; folds by {task['group_by']}; "
        f"{results.get('protocol', 'strict')} protocol).",
        "Mean over folds and seeds; ± std over folds / ± std over seeds.",
        "",
    ]
    metrics = ["balanced_accuracy"] + (["auroc"] if len(results["classes"]) == 2 else ["kappa"])
    lines.append("| model | " + " | ".join(m.replace("_", " ") for m in metrics) + " |")
    lines.append("|---|" + "---:|" * len(metrics))
    for row, body in results["rows"].items():
        cells = [
            f"{body['summary'][m]['mean']:.3f} ± {body['summary'][m]['std_folds']:.3f} / ± {body['summary'][m]['std_seeds']:.3f}"
            for m in metrics
        ]
        lines.append(f"| {row} | " + " | ".join(cells) + " |")
    for row, why in results["skipped"].items():
        lines.append(f"| {row} | skipped: {why} |" + " |" * (len(metrics) - 1))
    curves = label_efficiency(results)
    fractions = sorted({f for curve in curves.values() for f in curve})
    if len(fractions) > 1:
        lines += [
            "",
            "Label efficiency: balanced accuracy with a fraction of the training subjects' labels.",
            "",
        ]
        lines.append("| model | " + " | ".join(f"{f:.0%} of labels" for f in fractions) + " |")
        lines.append("|---|" + "---:|" * len(fractions))
        for row, curve in curves.items():
            cells = [
                f"{curve[f]['mean']:.3f} ± {curve[f]['std_folds']:.3f}" if f in curve else "—"
                for f in fractions
            ]
            lines.append(f"| {row} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def rows_by_fraction(results: dict) -> dict[float, dict]:
    """Every label fraction's rows, the largest fraction's ("rows") included, by fraction, ascending."""
    by_fraction = {float(f): rows for f, rows in results.get("by_fraction", {}).items()}
    by_fraction[float(results.get("label_fraction", 1.0))] = results["rows"]
    return dict(sorted(by_fraction.items()))


def label_efficiency(results: dict) -> dict[str, dict[float, dict]]:
    """Per row: balanced-accuracy summary at each label fraction the row ran at."""
    by_fraction = rows_by_fraction(results)
    return {
        row: {f: rows[row]["summary"]["balanced_accuracy"] for f, rows in by_fraction.items() if row in rows}
        for row in results["rows"]
    }


def plot(results: dict, out: Path) -> None:
    """confusion.png (every row, summed over folds and seeds), per_subject.png (bars per row) and, with
    several label fractions, label_efficiency.png."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows, classes = list(results["rows"]), results["classes"]
    if not rows:
        return
    n_cols = min(3, len(rows))
    n_rows = math.ceil(len(rows) / n_cols)
    size = 1.2 + 0.5 * len(classes)
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(size * n_cols + 1, size * n_rows + 0.8), squeeze=False)
    for ax in axes.flat[len(rows) :]:
        ax.axis("off")
    for ax, row in zip(axes.flat, rows):
        matrix = np.array(results["rows"][row]["confusion"], dtype=float)
        normalised = matrix / matrix.sum(axis=1, keepdims=True).clip(min=1)
        ax.imshow(normalised, vmin=0, vmax=1, cmap="Blues")
        for i in range(len(classes)):
            for j in range(len(classes)):
                ax.text(j, i, f"{normalised[i, j]:.2f}", ha="center", va="center", fontsize=7)
        ax.set_title(row, fontsize=8)
        ax.set_xticks(range(len(classes)), classes, rotation=45, ha="right", fontsize=7)
        ax.set_yticks(range(len(classes)), classes, fontsize=7)
        ax.set_xlabel("predicted", fontsize=7)
        ax.set_ylabel("true", fontsize=7)
    fig.suptitle(f"{results['task']['name']}: confusion (row-normalised, all folds and seeds)", fontsize=9)
    fig.tight_layout()
    with atomic_path(out / "confusion.png") as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)

    subjects = sorted(
        {s for r in rows for s in results["rows"][r]["summary"]["per_subject_balanced_accuracy"]}
    )
    fig, ax = plt.subplots(figsize=(max(5, 1.2 * len(subjects) * len(rows) / 3), 3.4))
    width = 0.8 / len(rows)
    for i, row in enumerate(rows):
        values = results["rows"][row]["summary"]["per_subject_balanced_accuracy"]
        ax.bar(
            np.arange(len(subjects)) + i * width, [values.get(s, np.nan) for s in subjects], width, label=row
        )
    ax.axhline(1 / len(classes), color="grey", linestyle="--", linewidth=0.8, label="chance")
    ax.set_xticks(np.arange(len(subjects)) + 0.4 - width / 2, subjects)
    ax.set_ylabel("balanced accuracy")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=6, ncol=2)
    ax.set_title(f"{results['task']['name']}: per subject (mean over seeds)", fontsize=9)
    fig.tight_layout()
    with atomic_path(out / "per_subject.png") as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)

    curves = label_efficiency(results)
    every_fraction = sorted({f for curve in curves.values() for f in curve})
    if len(every_fraction) > 1:
        fig, ax = plt.subplots(figsize=(5, 3.4))
        for row, curve in curves.items():
            fractions = sorted(curve)
            means = np.array([curve[f]["mean"] for f in fractions])
            spread = np.array([curve[f]["std_folds"] for f in fractions])
            ax.errorbar([100 * f for f in fractions], means, yerr=spread, marker="o", capsize=3, label=row)
        ax.axhline(1 / len(classes), color="grey", linestyle="--", linewidth=0.8, label="chance")
        ax.set_xscale("log")
        ax.set_xticks([100 * f for f in every_fraction], [f"{f:.0%}" for f in every_fraction])
        ax.set_xlabel("training subjects' labels used")
        ax.set_ylabel("balanced accuracy (± std over folds)")
        ax.legend(fontsize=6)
        ax.set_title(f"{results['task']['name']}: label efficiency", fontsize=9)
        fig.tight_layout()
        with atomic_path(out / "label_efficiency.png") as tmp:
            fig.savefig(tmp, dpi=120, format="png")
        plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    return run_command(ClassifyArgs, run, argv, prog="biotok finetune classify")


if __name__ == "__main__":
    sys.exit(main())
