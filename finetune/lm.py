"""A character n-gram language model over the keystroke charset, trained on prompt text.

Witten-Bell interpolation down to a uniform distribution over the visible characters; every score is
a natural log, the same base as the CTC emissions it is added to. The context is the text as it
stands after backspaces, so a typo followed by backspace is scored like the corrected text. Shift and
backspace change no probability (they are edits, not text); enter ends a prompt and resets the context.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from pathlib import Path

from .charset import BACKSPACE, ENTER, N_CLASSES, SHIFT, text_to_labels

VISIBLE = [c for c in range(N_CLASSES - 1) if c not in (BACKSPACE, SHIFT)]  # what the LM predicts


class CharNGramLM:
    """`order`-gram model; `log_prob(context, label)` with context a tuple of the last labels."""

    def __init__(self, order: int = 6):
        if order < 1:
            raise ValueError(f"order must be >= 1, got {order}")
        self.order = order
        # counts[context][label], for every context length 0..order-1
        self.counts: dict[tuple[int, ...], dict[int, int]] = defaultdict(lambda: defaultdict(int))
        self._cache: dict[tuple[tuple[int, ...], int], float] = {}

    def fit(self, texts: list[str]) -> CharNGramLM:
        """Count n-grams of each text (a prompt); enter is appended as its end."""
        for text in texts:
            labels = [label for label in text_to_labels(text) if label not in (SHIFT, BACKSPACE)]
            if not labels or labels[-1] != ENTER:
                labels.append(ENTER)
            history: tuple[int, ...] = ()
            for label in labels:
                for n in range(min(len(history), self.order - 1) + 1):
                    self.counts[history[len(history) - n :]][label] += 1
                history = (history + (label,))[-(self.order - 1) :] if self.order > 1 else ()
        self._cache.clear()
        return self

    def log_prob(self, context: tuple[int, ...], label: int) -> float:
        """Natural-log probability of visible `label` after `context`."""
        context = context[len(context) - (self.order - 1) :] if self.order > 1 else ()
        key = (context, label)
        if key not in self._cache:
            self._cache[key] = math.log(self._prob(context, label))
        return self._cache[key]

    def _prob(self, context: tuple[int, ...], label: int) -> float:
        lower = 1.0 / len(VISIBLE) if not context else self._prob(context[1:], label)
        seen = self.counts.get(context)
        if not seen:
            return lower
        total, distinct = sum(seen.values()), len(seen)
        return (seen.get(label, 0) + distinct * lower) / (total + distinct)

    def advance(self, context: tuple[int, ...], label: int) -> tuple[tuple[int, ...], float]:
        """The context after typing `label`, and the log-probability it adds (0 for edits)."""
        if label == SHIFT:
            return context, 0.0
        if label == BACKSPACE:
            return context[:-1], 0.0
        score = self.log_prob(context, label)
        if label == ENTER:
            return (), score
        # keep enough history that backspaces can uncover older characters
        return (context + (label,))[-(4 * self.order) :], score

    def save(self, path: str | Path) -> None:
        table = {" ".join(map(str, c)): dict(v) for c, v in self.counts.items()}
        Path(path).write_text(json.dumps({"order": self.order, "counts": table}))

    @classmethod
    def load(cls, path: str | Path) -> CharNGramLM:
        spec = json.loads(Path(path).read_text())
        lm = cls(spec["order"])
        for context, row in spec["counts"].items():
            key = tuple(int(c) for c in context.split()) if context else ()
            lm.counts[key] = defaultdict(int, {int(k): v for k, v in row.items()})
        return lm
