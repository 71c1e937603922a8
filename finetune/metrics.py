"""Classification metrics (numpy only; the tests check them against scikit-learn)."""

from __future__ import annotations

import numpy as np
from scipy.stats import rankdata


def confusion_matrix(labels: np.ndarray, predictions: np.ndarray, n_classes: int) -> np.ndarray:
    """`(n_classes, n_classes)` counts, rows = true class, columns = predicted class."""
    matrix = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(matrix, (np.asarray(labels), np.asarray(predictions)), 1)
    return matrix


def balanced_accuracy(labels: np.ndarray, predictions: np.ndarray, n_classes: int) -> float:
    """Mean per-class recall over the classes present in `labels`."""
    matrix = confusion_matrix(labels, predictions, n_classes)
    support = matrix.sum(axis=1)
    present = support > 0
    return float(np.mean(np.diag(matrix)[present] / support[present]))


def cohen_kappa(labels: np.ndarray, predictions: np.ndarray, n_classes: int) -> float:
    """Agreement beyond chance: (p_observed - p_chance) / (1 - p_chance)."""
    matrix = confusion_matrix(labels, predictions, n_classes).astype(np.float64)
    total = matrix.sum()
    observed = np.trace(matrix) / total
    chance = float((matrix.sum(axis=0) * matrix.sum(axis=1)).sum() / total**2)
    return float((observed - chance) / (1 - chance)) if chance < 1 else 0.0


def roc_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Binary AUROC of scores for class 1 (Mann-Whitney U, ties counted half); NaN if one class is absent."""
    labels = np.asarray(labels)
    positive = labels == 1
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(scores)
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def scores(labels: np.ndarray, probabilities: np.ndarray) -> dict:
    """balanced accuracy, accuracy, and AUROC (2 classes) or Cohen's kappa (more) from `(n, classes)`."""
    n_classes = probabilities.shape[1]
    predictions = probabilities.argmax(axis=1)
    result = {
        "balanced_accuracy": balanced_accuracy(labels, predictions, n_classes),
        "accuracy": float(np.mean(predictions == labels)),
    }
    if n_classes == 2:
        result["auroc"] = roc_auc(labels, probabilities[:, 1])
    else:
        result["kappa"] = cohen_kappa(labels, predictions, n_classes)
    return result
