"""Model cards of the shipped models: metrics measured on held-out real recordings, written to each
model folder's `card_metrics.json` and into its card (README.md, between two markers), and measured
again by the tests, which must reproduce them.

    python -m foundation.card --real ../shared/data/real --tokenizer pretrained_models/tokenizer-small \
        --foundation pretrained_models/foundation-small
    python -m foundation.card --real ../shared/data/real --tokenizer pretrained_models/tokenizer-small-v1 --foundation ""

Held out = the subjects that the model's own training run held out (its `holdout_subjects`, else the
subject hash split with the run's `holdout_fraction`), in the real corpora (`biotok prepare --sources
shared_real`, and `--sources eegbci_more` where the run held subjects of it out). Everything runs
in float32, so any machine reproduces the numbers up to rounding.
"""

from __future__ import annotations

import json
import math
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from data_prep.atomic import atomic_path, write_json
from data_prep.corpus import Corpus, load_corpora, split_corpora
from data_prep.errors import BiosignalError
from tokenizer.evaluate import reconstruct, row_metrics
from tokenizer.metrics import codebook_stats
from tokenizer.model import BiotokTokenizer

from .model import BiotokFoundation
from .pretrain import InputFetcher, evaluate, unigram_log_probs
from .tokens import TokenCorpus, load_token_corpora, tokenize_corpus

START, END = "<!-- card-metrics:start -->", "<!-- card-metrics:end -->"
METRICS_FILE = "card_metrics.json"


def run_args(folder: str | Path) -> dict | None:
    """The saved arguments of the run that trained the model in `folder` (beside the model or in the
    run folder above it), or None."""
    for where in (Path(folder), Path(folder).parent):
        for name in ("train_args.json", "pretrain_args.json"):
            if (where / name).exists():
                return json.loads((where / name).read_text())
    return None


def holdout_fraction(folder: str | Path, default: float | None = None) -> float:
    """The held-out fraction of the run that trained the model in `folder`; `default` when none are
    saved, else an error."""
    args = run_args(folder)
    if args is not None:
        return float(args["holdout_fraction"])
    if default is not None:
        return default
    raise BiosignalError(folder, "train_args.json", "no run arguments saved beside the model")


def holdout_subjects(folder: str | Path) -> dict[str, list[str]]:
    """The subjects that run held out by name (`--holdout_subjects`), {} when it held out by fraction only."""
    given = (run_args(folder) or {}).get("holdout_subjects") or ""
    return json.loads(given) if given else {}


def prepare_real(
    real_root: str | Path, work: str | Path, sources: tuple[str, ...] = ("shared_real",)
) -> dict[str, Corpus]:
    """The shared real recordings prepared into corpora under `work` (`sources`: packaged sources files,
    e.g. "eegbci_more" for EEGBCI subjects S007-S014)."""
    from data_prep.prepare import PrepareArgs, run

    for name in sources:
        run(PrepareArgs(sources=name, root=str(real_root), out=str(Path(work) / "corpora"), progress=False))
    return load_corpora([Path(work) / "corpora"])


CARD_LEVELS = (1, 2, 4, 8)


def tokenizer_metrics(
    model: BiotokTokenizer,
    corpora: dict[str, Corpus],
    holdout: float,
    batch_size: int = 32,
    held_subjects: dict[str, list[str]] | None = None,
    held_codes: dict[str, dict[int, np.ndarray]] | None = None,
) -> dict[str, dict]:
    """Per corpus with held-out subjects: SNR / NMSE / Pearson correlation of the reconstruction from
    every RVQ level, the SNR from 1, 2, 4 and 8 levels, and codebook use (mean over scales and levels of
    the fraction of codes used and of the perplexity), on the preprocessed, scaled held-out windows.
    `held_codes`, when given, receives each corpus's held-out codes by window index (the foundation card
    writes them as tokens instead of encoding the same windows again)."""
    result = {}
    for name, corpus in corpora.items():
        if corpus.preset.name not in model.config.modalities:
            continue
        _, held_index = corpus.split_indices(holdout, held_subjects)
        if not held_index:
            continue
        held = corpus.select(held_index)
        levels = model.config.n_levels
        fewer = [n for n in CARD_LEVELS if n < levels]
        rows = reconstruct(
            model, held, [*fewer, levels], batch_size, model.device, keep_codes=held_codes is not None
        )
        if held_codes is not None:
            held_codes[name] = dict(zip(held_index, rows["codes"]))
        quality = row_metrics(rows["target"], rows["estimate"][levels])
        usage = codebook_stats(rows["counts"])
        result[name] = {
            "modality": corpus.preset.modality,
            "subjects": sorted(set(held.column("subject"))),
            "channel_windows": int(rows["target"].shape[0]),
            "snr_db": quality["snr_db"],
            "nmse": quality["nmse"],
            "pcc": quality["pcc"],
            "codebook_used": float(usage["used"].mean()),
            "perplexity": float(usage["perplexity"].mean()),
            "snr_db_by_levels": {
                **{str(n): row_metrics(rows["target"], rows["estimate"][n])["snr_db"] for n in fewer},
                str(levels): quality["snr_db"],
            },
            "bits_per_channel_second": {
                str(n): model.config.bits_per_channel_second(corpus.preset.name, n) for n in [*fewer, levels]
            },
        }
    return result


def foundation_metrics(
    model: BiotokFoundation,
    token_corpora: dict[str, TokenCorpus],
    holdout: float,
    batch_size: int = 32,
    held_subjects: dict[str, list[str]] | None = None,
) -> dict[str, dict]:
    """Per corpus with held-out subjects: masked-token loss and accuracy over every held-out window
    (masks drawn from a fixed seed), beside the unigram baseline of the training windows' codes and
    the two local-copy baselines (nearest unmasked patch of the channel; nearest unmasked electrode),
    overall and per predicted RVQ level."""
    train, held = split_corpora(token_corpora, holdout, held_subjects)
    held = {name: view for name, view in held.items() if len(view)}
    unigram = unigram_log_probs(train, model.config.n_target_levels)
    batches = math.ceil(max(len(view) for view in held.values()) / batch_size)
    scores = evaluate(
        model,
        held,
        InputFetcher(token_corpora, model.config.input_kind),
        unigram,
        batches,
        batch_size,
        model.config.mask_ratio,
        model.device,
    )
    keys = ("masked_loss", "unigram_loss", "masked_accuracy", "unigram_accuracy", "n_masked")
    keys += ("copy_time_accuracy", "copy_space_accuracy")
    result = {
        name: {
            "subjects": sorted(set(held[name].column("subject"))),
            **{k: scores[name][k] for k in keys},
            "accuracy_by_level": accuracy_by_level([scores[name]]),
        }
        for name in held
    }
    result["all"] = {k: v for k, v in scores["all"].items() if k in keys}
    result["all"]["n_masked"] = sum(result[name]["n_masked"] for name in held)
    result["all"]["accuracy_by_level"] = accuracy_by_level([scores[name] for name in held])
    # the per-level table averages each level's heads over the tokenizer's scales: say over how many
    result["all"]["n_scales"] = model.config.n_scales
    return result


HEAD_SCORES = {  # card name -> evaluate()'s per-head accuracy `(S, Q)`
    "masked": "head_accuracy",
    "unigram": "unigram_head_accuracy",
    "copy_time": "copy_time_head_accuracy",
    "copy_space": "copy_space_head_accuracy",
}


def accuracy_by_level(corpus_scores: list[dict]) -> dict[str, dict[str, float]]:
    """{"1": {"masked": ..., "unigram": ..., "copy_time": ..., "copy_space": ...}, "2": ...}: accuracy per
    predicted RVQ level (1-based), the mean over scales, pooled over the corpora's masked positions."""
    weights = np.array([scores["n_masked"] for scores in corpus_scores], dtype=np.float64)
    by_level: dict[str, dict[str, float]] = {}
    for name, key in HEAD_SCORES.items():
        heads = np.array([scores[key] for scores in corpus_scores])  # (corpora, S, Q)
        pooled = (heads * weights[:, None, None]).sum(axis=0) / weights.sum()
        for level, accuracy in enumerate(pooled.mean(axis=0), start=1):
            by_level.setdefault(str(level), {})[name] = float(accuracy)
    return by_level


def measure(
    real_root: str | Path, tokenizer_dir: str | Path, foundation_dir: str | Path | None, work: str | Path
):
    """Both cards' metrics: {"tokenizer": ..., "foundation": ...} (foundation None when not given)."""
    tokenizer = BiotokTokenizer.from_pretrained(str(tokenizer_dir)).eval()
    held = holdout_subjects(tokenizer_dir)
    # corpora beyond shared_real (eegbci_more) where the tokenizer's run held subjects of them out
    corpora = prepare_real(real_root, work, ("shared_real", *[n for n in held if n != "eegbci"]))
    held_codes: dict[str, dict[int, np.ndarray]] = {}
    cards = {
        "tokenizer": tokenizer_metrics(
            tokenizer, corpora, holdout_fraction(tokenizer_dir), held_subjects=held, held_codes=held_codes
        ),
        "foundation": None,
    }
    if foundation_dir is not None:
        model = BiotokFoundation.from_pretrained(str(foundation_dir)).eval()
        fraction, named = holdout_fraction(foundation_dir), holdout_subjects(foundation_dir)
        folder = Path(work) / f"card_tokens_{model.config.tokenizer_hash}"
        for name, corpus in corpora.items():
            windows = card_windows(corpus, fraction, named)
            known = held_codes.get(name)
            tokenize_corpus(tokenizer, corpus, folder, progress=False, windows=windows, known_codes=known)
        tokens = load_token_corpora([folder], expect_hash=model.config.tokenizer_hash)
        cards["foundation"] = foundation_metrics(model, tokens, fraction, held_subjects=named)
    return cards


# training windows per corpus (strided, and every training subject's first) behind the card's unigram
# baseline: tokenizing every training window with a width-256 tokenizer took 3.5 of the test suite's 10
# CPU minutes, for code frequencies that a few thousand patches per corpus already give
UNIGRAM_WINDOWS = 32


def card_windows(corpus: Corpus, fraction: float, named: dict[str, list[str]]) -> list[int]:
    """The windows the foundation card reads: every held-out window, and a strided sample of the
    training windows (at least one per training subject, so that the subject split is unchanged)."""
    train_rows, held_rows = corpus.split_indices(fraction, named)
    subjects = corpus.column("subject")
    first_of_each = {}
    for i in train_rows:
        first_of_each.setdefault(subjects[i], i)
    sample = train_rows[:: max(1, len(train_rows) // UNIGRAM_WINDOWS)]
    return sorted({*held_rows, *sample, *first_of_each.values()})


def render_tokenizer(metrics: dict[str, dict]) -> str:
    by_levels = any("snr_db_by_levels" in m for m in metrics.values())
    extra = " SNR dB at 1 / 2 / 4 / 8 levels (bits/ch/s) |" if by_levels else ""
    lines = [
        f"| held-out corpus | subjects | channel-windows | SNR dB | NMSE | PCC | codes used | perplexity |{extra}",
        "|---|---|---:|---:|---:|---:|---:|---:|" + ("---|" if by_levels else ""),
    ]
    for name, m in metrics.items():
        levels = ""
        if by_levels:
            levels = (
                " "
                + " / ".join(
                    f"{snr:.2f} ({m['bits_per_channel_second'][n]:.0f})"
                    for n, snr in m["snr_db_by_levels"].items()
                )
                + " |"
            )
        lines.append(
            f"| {name} ({m['modality']}) | {', '.join(m['subjects'])} | {m['channel_windows']:,} | "
            f"{m['snr_db']:.2f} | {m['nmse']:.3f} | {m['pcc']:.3f} | {m['codebook_used']:.1%} | {m['perplexity']:.0f} |"
            + levels
        )
    return "\n".join(lines)


def render_foundation(metrics: dict[str, dict]) -> str:
    lines = [
        "| held-out corpus | masked positions | masked loss (nats) | unigram loss | masked accuracy | unigram accuracy "
        "| copy: same channel, nearest patch | copy: same patch, nearest electrode |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, m in metrics.items():
        label = "all" if name == "all" else f"{name} ({', '.join(m['subjects'])})"
        lines.append(
            f"| {label} | {m['n_masked']:,} | {m['masked_loss']:.3f} | {m['unigram_loss']:.3f} | "
            f"{m['masked_accuracy']:.2%} | {m['unigram_accuracy']:.2%} | "
            f"{m['copy_time_accuracy']:.2%} | {m['copy_space_accuracy']:.2%} |"
        )
    if all("accuracy_by_level" in m for m in metrics.values()):
        # cards measured before the count was recorded say "the scales"
        n_scales = metrics.get("all", {}).get("n_scales")
        over = f"the {n_scales} scales" if n_scales else "the scales"
        lines += [
            "",
            f"Per predicted RVQ level (mean over {over}), the same masked positions:",
            "",
            "| held-out corpus | level | masked accuracy | unigram | copy: same channel, nearest patch "
            "| copy: same patch, nearest electrode |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        for name, m in metrics.items():
            for level, a in m["accuracy_by_level"].items():
                lines.append(
                    f"| {name} | {level} | {a['masked']:.2%} | {a['unigram']:.2%} | "
                    f"{a['copy_time']:.2%} | {a['copy_space']:.2%} |"
                )
    return "\n".join(lines)


def render_ctc(metrics: dict) -> str:
    """A keystroke decoder's whole-session CER on its held-out user (see finetune.ctc_card)."""
    lines = [
        "| held-out user | sessions | target keys | CER greedy | CER beam | CER beam + LM | val CER (windows) |",
        "|---|---:|---:|---:|---:|---:|---:|",
        f"| {metrics['test_user']} ({metrics['data']}) | {metrics['sessions']} | {metrics['target_keys']:,} | "
        f"{metrics['cer_greedy']:.2f}% | {metrics['cer_beam']:.2f}% | {metrics['cer_beam_lm']:.2f}% | "
        f"{metrics['val_cer_windows']:.2f}% |",
    ]
    return "\n".join(lines)


RENDERERS = {"tokenizer": render_tokenizer, "foundation": render_foundation, "ctc": render_ctc}


def card_block(kind: str, metrics: dict) -> str:
    return f"{START}\n{RENDERERS[kind](metrics)}\n{END}"


def write_card(folder: str | Path, kind: str, metrics: dict) -> None:
    """`card_metrics.json` and the README's metrics block (between the markers) of one model folder."""
    readme = Path(folder) / "README.md"
    text = readme.read_text()
    if START not in text or END not in text:
        raise BiosignalError(readme, "card-metrics", f"no {START} ... {END} block to fill")
    head, rest = text.split(START, 1)
    card = head + card_block(kind, metrics) + rest.split(END, 1)[1]
    write_json(Path(folder) / METRICS_FILE, {"kind": kind, "metrics": metrics})
    with atomic_path(readme) as tmp:
        tmp.write_text(card)


@dataclass
class CardArgs:
    """Measure the shipped models on held-out real recordings and write their model cards' metrics."""

    real: str = field(metadata={"help": "folder of the shared real recordings (shared/data/real)"})
    tokenizer: str = field(
        default="pretrained_models/tokenizer-small",
        metadata={"help": "the tokenizer folder whose card to write"},
    )
    foundation: str = field(
        default="pretrained_models/foundation-small",
        metadata={"help": "the foundation folder (pretrained on --tokenizer's codes); '' skips it"},
    )


def run(args: CardArgs) -> None:
    with tempfile.TemporaryDirectory() as work:
        cards = measure(args.real, args.tokenizer, args.foundation or None, work)
    write_card(args.tokenizer, "tokenizer", cards["tokenizer"])
    print(render_tokenizer(cards["tokenizer"]))
    if cards["foundation"] is not None:
        write_card(args.foundation, "foundation", cards["foundation"])
        print(render_foundation(cards["foundation"]))


def main(argv: list[str] | None = None) -> int:
    from data_prep.config import run_command

    return run_command(CardArgs, run, argv, prog="python -m foundation.card")


if __name__ == "__main__":
    sys.exit(main())
