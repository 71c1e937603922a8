"""`biotok run`: the main job, all three stages end to end, then one summary table and a report folder.

biotok run --out biotok_out                  # the embedded synthetic data, CPU, a few minutes
biotok run --out runs/real --sources shared_real --data ../shared/data/real --task eegbci_eyes \
    --tokenizer_steps 3000 --pretrain_steps 3000 --size small --mixed_precision bf16   # real data, GPU
biotok run --sources shared_real --data ../shared/data/real --task eegbci_eyes --emg2qwerty none \
    --tokenizer pretrained_models/tokenizer-small --foundation pretrained_models/foundation-small
    # the shipped models on data whose channels they know, measured, not trained

prepare (synthetic EEG, emg2qwerty-format EMG, ECG) -> train the tokenizer -> tokenize -> pretrain the
foundation model -> fine-tune (EEG classification, emg2qwerty CTC) -> summary. Every stage writes
its own folder under --out, and a re-run reuses what is finished (corpora shards, final weights,
results), so each stage's output is also the next command's input.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from data_prep.atomic import atomic_path
from data_prep.config import run_command

SHIPPED_CTC = "ctc-128x2-synthetic"


def ctc_start(choice: str) -> str:
    """The CTC model folder the main job fine-tunes ('' = a new TINY); 'shipped' = the repository's."""
    if choice != "shipped":
        return choice
    shipped = Path(__file__).resolve().parents[1] / "pretrained_models" / SHIPPED_CTC
    return str(shipped) if (shipped / "config.json").exists() else ""


@dataclass
class RunArgs:
    """Run every stage of biotok on one dataset and summarise it."""

    out: str = field(
        default="biotok_out",
        metadata={"help": "folder of the whole job: data, corpora, models, tokens and report/"},
    )
    sources: str = field(default="synthetic", metadata={"help": "sources file or packaged name"})
    data: str = field(
        default="", metadata={"help": "folder the sources' paths are under ('' = synthetic under --out)"}
    )
    task: str = field(default="synthetic_mi", metadata={"help": "classification task (name or file)"})
    emg2qwerty: str = field(
        default="", metadata={"help": "emg2qwerty data folder ('' = the synthetic sessions; 'none' skips)"}
    )
    tokenizer: str = field(
        default="",
        metadata={
            "help": "a trained tokenizer folder to use instead of training one (pretrained_models/tokenizer-small)"
        },
    )
    foundation: str = field(
        default="",
        metadata={
            "help": "a pretrained foundation folder to use instead of pretraining (needs its --tokenizer)"
        },
    )
    size: str = field(
        default="tiny",
        metadata={"help": "size of the trained tokenizer and foundation model: tiny | small | base"},
    )
    tokenizer_steps: int = field(
        default=900,
        metadata={
            "help": "tokenizer training steps (unless --tokenizer gives one); 900 take ~3 min on 2 cores"
        },
    )
    pretrain_steps: int = field(
        default=600, metadata={"help": "foundation pretraining steps (unless --foundation gives one)"}
    )
    classify_epochs: int = field(default=30, metadata={"help": "training epochs of each classification row"})
    # a CTC model leaves the all-blank plateau after hundreds of steps of batch 16-32 (docs/BENCHMARKS.md):
    # out of the main job's minutes on a CPU, so it fine-tunes the shipped one, which has left it
    ctc_init: str = field(
        default="shipped",
        metadata={
            "help": f"CTC model to start from: 'shipped' (pretrained_models/{SHIPPED_CTC}), a model "
            "folder, or '' (a TINY from scratch, which a few CPU steps leave near 100% CER)"
        },
    )
    ctc_steps: int = field(default=30, metadata={"help": "emg2qwerty CTC fine-tuning steps"})
    ctc_batch_size: int = field(default=8, metadata={"help": "emg2qwerty windows per CTC step"})
    batch_size: int = 16
    mixed_precision: str = "no"
    progress: bool = True


@contextmanager
def _stage(name: str, timings: dict):
    """Print a stage header; record its wall time."""
    print(f"\n== {name}", flush=True)
    start = time.perf_counter()
    yield
    timings[name] = round(time.perf_counter() - start, 1)


def _last_eval(log: Path, key: str) -> dict:
    records = [json.loads(line) for line in log.read_text().splitlines() if key in line]
    return records[-1] if records else {}


def run(args: RunArgs) -> dict:
    from data_prep.prepare import PrepareArgs
    from data_prep.prepare import run as prepare
    from finetune.classify import ClassifyArgs
    from finetune.classify import run as classify
    from finetune.emg2qwerty import CTCTrainArgs, finetune
    from foundation.pretrain import PretrainArgs, pretrain
    from foundation.tokens import TokenizeArgs
    from foundation.tokens import run as tokenize
    from tokenizer.train import TokenizerTrainArgs, train

    out = Path(args.out)
    data = Path(args.data) if args.data else out / "data"
    _check_given_models(args)
    timings: dict[str, float] = {}
    with _stage("1/6 prepare corpora", timings):
        prepare(
            PrepareArgs(
                sources=args.sources, root=str(data), out=str(out / "corpora"),
                synthetic=not args.data, progress=args.progress,
            )
        )  # fmt: skip
    corpora = sorted(str(p) for p in (out / "corpora").iterdir() if (p / "corpus.json").exists())
    tokenizer_eval = None
    if args.tokenizer:
        with _stage("2/6 evaluate the given tokenizer", timings):
            tokenizer = Path(args.tokenizer)
            tokenizer_eval = _given_tokenizer_eval(tokenizer, corpora)
    else:
        with _stage("2/6 train the tokenizer", timings):
            tokenizer = out / "tokenizer" / "final"
            if not (tokenizer / "model.safetensors").exists():
                train(
                    TokenizerTrainArgs(
                        corpora=corpora, size=args.size, out=str(out / "tokenizer"), steps=args.tokenizer_steps,
                        batch_size=args.batch_size, eval_every=args.tokenizer_steps, save_every=args.tokenizer_steps,
                        mixed_precision=args.mixed_precision, progress=args.progress,
                    )
                )  # fmt: skip
            tokenizer_eval = _last_eval(out / "tokenizer" / "log.jsonl", '"eval"').get("eval", {})
    with _stage("3/6 tokenize", timings):
        tokenize(
            TokenizeArgs(
                tokenizer=str(tokenizer), corpora=corpora, out=str(out / "tokens"), progress=args.progress
            )
        )
    tokens = sorted(str(p) for p in (out / "tokens").iterdir() if p.is_dir())
    if args.foundation:
        with _stage("4/6 evaluate the given foundation model", timings):
            foundation = Path(args.foundation)
            foundation_eval = _given_foundation_eval(foundation, tokens)
    else:
        with _stage("4/6 pretrain the foundation model", timings):
            foundation = out / "foundation" / "final"
            if not (foundation / "model.safetensors").exists():
                pretrain(
                    PretrainArgs(
                        tokens=tokens, size=args.size,
                        out=str(out / "foundation"), steps=args.pretrain_steps, batch_size=args.batch_size,
                        eval_every=args.pretrain_steps, save_every=args.pretrain_steps,
                        mixed_precision=args.mixed_precision, progress=args.progress,
                    )
                )  # fmt: skip
            foundation_eval = _last_eval(out / "foundation" / "eval.jsonl", "masked_loss").get("all", {})
    with _stage("5/6 fine-tune: EEG classification", timings):
        classified = classify(
            ClassifyArgs(
                task=args.task, root=str(data), tokenizer=str(tokenizer), foundation=str(foundation),
                out=str(out / "classify"), seeds="0", epochs=args.classify_epochs,
                rows="foundation (linear probe),foundation (fine-tuned),from scratch,classical",
                balance_classes=True, mixed_precision=args.mixed_precision, progress=args.progress,
                # the demo's foundation model pretrained on every synthetic subject: labelled transductive
                protocol="transductive",
            )
        )  # fmt: skip
    ctc = None
    if args.emg2qwerty != "none":
        with _stage("6/6 fine-tune: emg2qwerty CTC", timings):
            ctc_out = out / "emg2qwerty"
            start = ctc_start(args.ctc_init)  # a model that has left CTC's plateau: fine-tune gently
            ctc = (
                json.loads((ctc_out / "results.json").read_text())
                if (ctc_out / "results.json").exists()
                else finetune(
                    CTCTrainArgs(
                        data=args.emg2qwerty or str(data / "emg2qwerty"), model="tiny", out=str(ctc_out),
                        init_from=start, lr=3e-4 if start else 1e-3,
                        steps=args.ctc_steps, batch_size=args.ctc_batch_size, warmup_steps=max(1, args.ctc_steps // 10),
                        eval_every=args.ctc_steps, save_every=args.ctc_steps, beam=8,
                        mixed_precision=args.mixed_precision, progress=args.progress,
                    )
                )
            )  # fmt: skip
    summary = _summary(tokenizer_eval, foundation_eval, classified, ctc, timings)
    _report(out, summary)
    return summary


def _check_given_models(args: RunArgs) -> None:
    """A given foundation model must come with the tokenizer whose codes it was pretrained on."""
    from data_prep.errors import ConfigError
    from foundation.config import FoundationConfig
    from tokenizer.config import TokenizerConfig

    for name in ("tokenizer", "foundation"):
        folder = getattr(args, name)
        if folder and not (Path(folder) / "config.json").exists():
            raise ConfigError(name, f"no config.json in {folder!r}: expected a saved model folder")
    if not args.foundation:
        return
    if not args.tokenizer:
        raise ConfigError(
            "foundation", "a pretrained foundation model reads one tokenizer's codes: pass it as --tokenizer"
        )
    expected = FoundationConfig.from_json_file(str(Path(args.foundation) / "config.json")).tokenizer_hash
    given = TokenizerConfig.from_json_file(str(Path(args.tokenizer) / "config.json")).config_hash()
    if expected != given:
        raise ConfigError(
            "tokenizer",
            f"{args.foundation} was pretrained on codes of tokenizer {expected}, but {args.tokenizer} is {given}",
        )


def _given_tokenizer_eval(folder: Path, corpora: list[str]) -> dict:
    """The training log's eval record, measured for a tokenizer trained elsewhere: reconstruction of
    every held-out window (the subjects its own run held out) and codebook use."""
    from data_prep.corpus import Corpus
    from foundation.card import holdout_fraction, tokenizer_metrics
    from tokenizer.model import BiotokTokenizer

    model = BiotokTokenizer.from_pretrained(str(folder)).eval()
    holdout = holdout_fraction(folder, default=0.25)
    metrics = tokenizer_metrics(model, {Path(c).name: Corpus(c) for c in corpora}, holdout)
    if not metrics:
        return {}
    return {**metrics, "codebook_used": sum(m["codebook_used"] for m in metrics.values()) / len(metrics)}


def _given_foundation_eval(folder: Path, tokens: list[str]) -> dict:
    """Masked-token accuracy of a given foundation model on every held-out window, beside the unigram."""
    from foundation.card import foundation_metrics, holdout_fraction
    from foundation.model import BiotokFoundation
    from foundation.tokens import load_token_corpora

    model = BiotokFoundation.from_pretrained(str(folder)).eval()
    corpora = load_token_corpora(tokens, expect_hash=model.config.tokenizer_hash)
    return foundation_metrics(model, corpora, holdout_fraction(folder, default=0.25)).get("all", {})


def _summary(
    tokenizer_eval: dict, foundation_eval: dict, classified: dict, ctc: dict | None, timings: dict
) -> dict:
    rows = [
        (f"reconstruction SNR / PCC, held-out {name}", f"{m['snr_db']:.1f} dB / {m['pcc']:.2f}")
        for name, m in tokenizer_eval.items()
        if isinstance(m, dict)
    ]
    if "codebook_used" in tokenizer_eval:
        rows.append(
            ("codebook use (mean over scales and levels)", f"{100 * tokenizer_eval['codebook_used']:.0f}%")
        )
    if foundation_eval:
        rows.append(
            (
                "masked-token accuracy, held out (unigram baseline)",
                f"{foundation_eval['masked_accuracy']:.3f} ({foundation_eval['unigram_accuracy']:.3f})",
            )
        )
    for row, body in classified["rows"].items():
        bacc = body["summary"]["balanced_accuracy"]
        # the demo pretrains on every synthetic subject: its foundation rows are transductive
        protocol = "" if row == "classical" else f", {classified.get('protocol', 'strict')}"
        rows.append(
            (
                f"{classified['task']['name']} balanced accuracy, {row}{protocol}",
                f"{bacc['mean']:.3f} ± {bacc['std_folds']:.3f}",
            )
        )
    if ctc is not None:
        start = ctc["args"]["init_from"]
        origin = f"fine-tuned from {Path(start).name}" if start else "trained from scratch"
        users = ", ".join(sorted({session["user"] for session in ctc["test"]["sessions"]}))
        rows.append(
            (
                "emg2qwerty test CER greedy / beam",
                f"{ctc['test']['cer_greedy']:.1f}% / {ctc['test']['cer_beam']:.1f}% ({origin}, held-out user "
                f"{users})",
            )
        )
    return {"rows": rows, "seconds": timings}


def _report(out: Path, summary: dict) -> None:
    report = out / "report"
    report.mkdir(parents=True, exist_ok=True)
    for plot in ("confusion.png", "per_subject.png"):
        if (out / "classify" / plot).exists():
            shutil.copy(out / "classify" / plot, report / f"classify_{plot}")
    lines = ["| measure | value |", "|---|---|"] + [f"| {k} | {v} |" for k, v in summary["rows"]]
    lines += [
        "",
        "Stage wall times (s): "
        + ", ".join(f"{k.split(' ', 1)[1]} {v}" for k, v in summary["seconds"].items()),
    ]
    with atomic_path(report / "summary.md") as tmp:
        tmp.write_text("\n".join(lines) + "\n")
    with atomic_path(report / "summary.json") as tmp:
        tmp.write_text(json.dumps(summary, indent=2))
    print("\n" + "\n".join(lines) + f"\n\nreport: {report}")


def main(argv: list[str] | None = None) -> int:
    return run_command(RunArgs, run, argv, prog="biotok run")


if __name__ == "__main__":
    sys.exit(main())
