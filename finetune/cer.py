"""Character error rate as emg2qwerty aggregates it: Levenshtein edits summed over sessions divided by
target characters summed, x 100. Deletions are target characters missing from the prediction,
insertions are predicted characters absent from the target (emg2qwerty swapped the two)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class EditCounts:
    substitutions: int = 0
    deletions: int = 0
    insertions: int = 0
    target_length: int = 0

    @property
    def errors(self) -> int:
        return self.substitutions + self.deletions + self.insertions

    @property
    def cer(self) -> float:
        return 100.0 * self.errors / max(self.target_length, 1)

    def __add__(self, other: EditCounts) -> EditCounts:
        return EditCounts(
            self.substitutions + other.substitutions,
            self.deletions + other.deletions,
            self.insertions + other.insertions,
            self.target_length + other.target_length,
        )


def edit_counts(target, prediction) -> EditCounts:
    """Minimum-edit alignment of `prediction` to `target` (sequences of labels), split by edit kind.

    Among alignments with the fewest edits, ties prefer substitutions, then deletions."""
    ref, hyp = list(target), list(prediction)
    n, m = len(ref), len(hyp)
    cost = np.zeros((n + 1, m + 1), dtype=np.int64)
    cost[:, 0] = np.arange(n + 1)
    cost[0, :] = np.arange(m + 1)
    hyp_arr = np.asarray(hyp)
    hyp_arr, steps = np.asarray(hyp), np.arange(m + 1)
    for i in range(1, n + 1):
        # best[j] = min(substitution/match, deletion); insertions chain along the row, which is a
        # running minimum: cost[i, j] = min over k <= j of best[k] + (j - k)
        best = np.empty(m + 1, dtype=np.int64)
        best[0] = i
        best[1:] = np.minimum(cost[i - 1, :-1] + (hyp_arr != ref[i - 1]), cost[i - 1, 1:] + 1)
        cost[i] = np.minimum.accumulate(best - steps) + steps
    counts = EditCounts(target_length=n)
    i, j = n, m
    while i > 0 or j > 0:
        if i > 0 and j > 0 and cost[i, j] == cost[i - 1, j - 1] + (ref[i - 1] != hyp[j - 1]):
            counts.substitutions += int(ref[i - 1] != hyp[j - 1])
            i, j = i - 1, j - 1
        elif i > 0 and cost[i, j] == cost[i - 1, j] + 1:
            counts.deletions += 1
            i -= 1
        else:
            counts.insertions += 1
            j -= 1
    return counts


def cer(targets, predictions) -> float:
    """Aggregate CER (%) over several sequences (e.g. sessions)."""
    total = EditCounts()
    for target, prediction in zip(targets, predictions, strict=True):
        total = total + edit_counts(target, prediction)
    return total.cer
