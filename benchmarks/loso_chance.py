"""Is below-chance on unseen subjects a training failure, or in the features? (issue 17)

Issue 17's from-scratch rows score *below* 0.5 on motor imagery (balanced accuracy 0.456, AUROC 0.430 over
3 seeds x 11 unseen subjects). This benchmark asks whether a plain linear classifier shows the same on the
same windows, and how far below 0.5 a leave-subject-out score may fall by chance.

The null: flip each subject's labels (left <-> right) at random, independently per subject. Every subject
keeps its own class structure, but the direction a classifier learns from the training subjects has a random
sign on the test subject, so the null's mean is 0.5 by symmetry and its spread is that of a leave-subject-out
score with nothing systematic in it. A true-label score under the null's 2.5% quantile means the learnt
direction is *systematically reversed* on unseen subjects.

Three parts, on a CPU (scikit-learn logistic regression, L2 strength C; larger C fits more freely):

1. synthetic subjects whose class direction is each their own (none shared), SEEDS draws: does
   subject-specific structure alone push leave-subject-out below 0.5, as leave-one-out's "anti-learning" of
   class means does to single trials? (Measured: by at most 1 point.)
2. the real task (`eegbci_mi_mu_nofrontal`, 11 EEGBCI subjects), log band power per channel;
3. the same windows' tokenizer codes (`--codes_file`, made by `biotok finetune classify --codes_file`), as a
   bag of codes: counts of each code per scale and read level over channels and patches, log1p.

For 2 and 3: the true-label score, the per-subject-flip null (mean, 2.5% and 97.5% over FLIPS draws, and the
share of draws at or below the true score) and the within-subject 5-fold score (how separable each subject is on its own).

    python benchmarks/loso_chance.py --root ../shared/data/real \
        --codes_file <codes>/eegbci_mi_mu_nofrontal.safetensors --out docs/results/loso_chance.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from mi_linear_readouts import logistic, readout
from sklearn.model_selection import StratifiedKFold, cross_val_predict

from finetune.classify import band_power, load_codes
from finetune.classify_data import ClassifyTask, group_folds, load_epochs
from finetune.metrics import balanced_accuracy

MAX_ITER = 5000  # lbfgs iterations: the 5,614 bag-of-codes columns need more than the readouts' 3,000


def leave_subject_out(
    features: np.ndarray, labels: np.ndarray, subjects: np.ndarray, c: float
) -> list[float]:
    """Balanced accuracy of every leave-one-subject-out fold (issue 17's tables average them)."""
    return readout(features, labels, group_folds(subjects), c, MAX_ITER)["folds"]


def within_subject(features: np.ndarray, labels: np.ndarray, subjects: np.ndarray, c: float) -> float:
    """Mean over subjects of 5-fold cross-validated balanced accuracy inside each subject."""
    scores = []
    for subject in np.unique(subjects):
        mine = subjects == subject
        folds = StratifiedKFold(5, shuffle=True, random_state=0)
        predicted = cross_val_predict(logistic(c, max_iter=MAX_ITER), features[mine], labels[mine], cv=folds)
        scores.append(balanced_accuracy(labels[mine], predicted, 2))
    return float(np.mean(scores))


def flipped(labels: np.ndarray, subjects: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Each subject's binary labels swapped with probability 1/2, independently per subject."""
    flip = {s: rng.random() < 0.5 for s in np.unique(subjects)}
    return np.where([flip[s] for s in subjects], 1 - labels, labels)


def synthetic_subjects(
    n_subjects: int, n_trials: int, n_features: int, separation: float, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Gaussian trials; subject s's classes differ along its own random unit direction (none shared), by
    `separation` standard deviations. -> features `(n, n_features)`, labels `(n,)`, subjects `(n,)`."""
    rng = np.random.default_rng(seed)
    features, labels, subjects = [], [], []
    for s in range(n_subjects):
        direction = rng.standard_normal(n_features)
        direction /= np.linalg.norm(direction)
        y = np.arange(n_trials) % 2
        x = rng.standard_normal((n_trials, n_features)) + np.outer(y - 0.5, direction) * separation
        features.append(x + rng.standard_normal(n_features))  # a subject offset, shared by both classes
        labels.append(y)
        subjects += [f"S{s:02d}"] * n_trials
    return np.concatenate(features), np.concatenate(labels), np.array(subjects)


def bag_of_codes(codes: np.ndarray, levels: int = 2) -> np.ndarray:
    """codes `(n, channels, patches, scales, levels)` -> log1p counts of each code per scale and level
    `(n, scales x levels x codebook)`, the columns that never vary dropped."""
    n, codebook = len(codes), int(codes.max()) + 1
    counts = [
        np.stack([np.bincount(codes[i, :, :, s, q].ravel(), minlength=codebook) for i in range(n)])
        for s in range(codes.shape[3])
        for q in range(levels)
    ]
    features = np.log1p(np.concatenate(counts, axis=1).astype(np.float64))
    return features[:, features.std(axis=0) > 0]


def against_null(
    name: str, x: np.ndarray, y: np.ndarray, s: np.ndarray, strengths: list[float], flips: int
) -> list[dict]:
    """One row per C: features `x (n, f)`, labels `y (n,)`, subjects `s (n,)` scored with the true labels,
    against `flips` per-subject-flip draws (the same draws for every C), and within each subject."""
    rng = np.random.default_rng(0)
    draws = [flipped(y, s, rng) for _ in range(flips)]
    rows = []
    for c in strengths:
        true = leave_subject_out(x, y, s, c)
        null = np.array([np.mean(leave_subject_out(x, labels, s, c)) for labels in draws])
        row = {
            "features": name,
            "n_features": int(x.shape[1]),
            "C": c,
            "leave_subject_out": float(np.mean(true)),
            "per_subject": dict(zip(sorted(set(s.tolist())), map(float, true))),
            "flip_null_mean": float(null.mean()),
            "flip_null_2.5%": float(np.percentile(null, 2.5)),
            "flip_null_97.5%": float(np.percentile(null, 97.5)),
            # the share of null draws at or below the true score: small = reversed more than by chance
            "flip_null_share_at_or_below": float(np.mean(null <= np.mean(true))),
            "flip_null_draws": [float(v) for v in null],
            "within_subject": within_subject(x, y, s, c),
        }
        rows.append(row)
        print({k: v for k, v in row.items() if k not in ("per_subject", "flip_null_draws")}, flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", required=True, help="the shared real recordings (EEGBCI + eegbci-more)")
    parser.add_argument("--codes_file", default="", help="the task's codes file ('' skips part 3)")
    parser.add_argument("--task", default="eegbci_mi_mu_nofrontal")
    parser.add_argument("--c", default="0.01,1", help="L2 strengths to compare (larger: freer)")
    parser.add_argument("--flips", type=int, default=50, help="per-subject-flip null draws")
    parser.add_argument("--seeds", type=int, default=30, help="synthetic datasets")
    parser.add_argument("--out", default="docs/results/loso_chance.json")
    args = parser.parse_args()
    strengths = [float(c) for c in args.c.split(",")]
    result: dict = {"command": vars(args), "synthetic": [], "real": []}

    for separation in (1.0, 2.0, 4.0):
        for c in strengths:
            scores = [
                np.mean(leave_subject_out(*synthetic_subjects(11, 45, 90, separation, seed), c))
                for seed in range(args.seeds)
            ]
            x, y, s = synthetic_subjects(11, 45, 90, separation, 0)
            row = {
                "separation": separation,
                "C": c,
                "leave_subject_out_mean": float(np.mean(scores)),
                "leave_subject_out_sem": float(np.std(scores) / np.sqrt(len(scores))),
                "within_subject_seed0": within_subject(x, y, s, c),
            }
            result["synthetic"].append(row)
            print("synthetic", row, flush=True)

    task = ClassifyTask.load(args.task)
    epochs = load_epochs(task, args.root)
    power = band_power(epochs.data.astype(np.float64), epochs.sfreq, epochs.preset.modality)
    result["real"] += against_null("band power", power, epochs.labels, epochs.subjects, strengths, args.flips)
    if args.codes_file:
        coded, codes, _ = load_codes(args.codes_file, task)
        if not (
            np.array_equal(coded.labels, epochs.labels) and np.array_equal(coded.subjects, epochs.subjects)
        ):
            raise SystemExit(
                f"{args.codes_file}: its windows are not the task's windows read from {args.root}"
            )
        x = bag_of_codes(codes.numpy())
        result["real"] += against_null("bag of codes", x, coded.labels, coded.subjects, strengths, args.flips)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
