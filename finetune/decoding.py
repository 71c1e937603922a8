"""CTC decoding: greedy, and prefix beam search with an optional character n-gram LM.

Scores are natural logs throughout: emissions (log-softmax) + lm_weight x LM log-probability +
insertion_bonus per emitted label. The LM scores each character as it is emitted, so the last word
of a session is scored like every other (emg2qwerty's word-level LM never scored it).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from .charset import BLANK
from .lm import CharNGramLM


def greedy_decode(log_probs: torch.Tensor | np.ndarray) -> list[int]:
    """`(T, n_classes)` -> labels: best class per frame, repeats merged, blanks removed."""
    best = np.asarray(torch.as_tensor(log_probs).argmax(dim=-1).cpu())
    keep = np.ones(len(best), dtype=bool)
    keep[1:] = best[1:] != best[:-1]
    return [int(c) for c in best[keep] if c != BLANK]


def _logaddexp(a: float, b: float) -> float:
    """log(exp(a) + exp(b)) on Python floats (numpy's scalar version costs ~10x more per call)."""
    if a < b:
        a, b = b, a
    return a if b == -math.inf else a + math.log1p(math.exp(b - a))


@dataclass(slots=True)
class _Beam:
    blank: float = -math.inf  # log P(prefix, path ends in blank)
    label: float = -math.inf  # log P(prefix, path ends in its last label)
    lm_score: float = 0.0
    context: tuple[int, ...] = ()

    @property
    def total(self) -> float:
        return _logaddexp(self.blank, self.label)


def _entry(
    nxt: dict, beams: dict, lm: CharNGramLM | None, prefix: tuple[int, ...], parent: _Beam, label: int | None
) -> _Beam:
    """The next frame's beam for `prefix`, created on first use with its LM state (a function of the
    prefix alone: reused from the current beams, or advanced from `parent` by `label`)."""
    found = nxt.get(prefix)
    if found is None:
        if label is None:
            found = _Beam(lm_score=parent.lm_score, context=parent.context)
        elif prefix in beams:
            old = beams[prefix]
            found = _Beam(lm_score=old.lm_score, context=old.context)
        else:
            context, added = lm.advance(parent.context, label) if lm is not None else ((), 0.0)
            found = _Beam(lm_score=parent.lm_score + added, context=context)
        nxt[prefix] = found
    return found


def beam_search(
    log_probs: torch.Tensor | np.ndarray,
    lm: CharNGramLM | None = None,
    beam_size: int = 50,
    lm_weight: float = 1.0,
    insertion_bonus: float = 1.0,
    prune: float = -8.0,
    max_candidates: int = 8,
) -> list[int]:
    """`(T, n_classes)` log-softmax emissions -> the best label sequence.

    Per frame, only the `max_candidates` likeliest labels above `prune` are extended (blank always is)."""
    emissions = np.asarray(torch.as_tensor(log_probs, dtype=torch.float32).cpu(), dtype=np.float64)
    # the candidates of every frame at once; per-frame work then stays in plain Python floats
    ranked = np.argsort(-emissions, axis=1, kind="stable")[:, : max_candidates + 1]
    beams: dict[tuple[int, ...], _Beam] = {(): _Beam(blank=0.0)}
    lm_weight = lm_weight if lm is not None else 0.0

    def score(item: tuple[tuple[int, ...], _Beam]) -> float:
        prefix, beam = item
        return beam.total + lm_weight * beam.lm_score + insertion_bonus * len(prefix)

    for frame_array, order in zip(emissions, ranked):
        frame = frame_array.tolist()
        candidates = [c for c in order.tolist() if c != BLANK and frame[c] > prune][:max_candidates]
        blank_logp = frame[BLANK]
        nxt: dict[tuple[int, ...], _Beam] = {}

        for prefix, beam in beams.items():
            total = beam.total
            stay = _entry(nxt, beams, lm, prefix, beam, None)
            stay.blank = _logaddexp(stay.blank, total + blank_logp)
            if prefix:  # the last label repeated without a blank in between collapses
                stay.label = _logaddexp(stay.label, beam.label + frame[prefix[-1]])
            for label in candidates:
                extended = _entry(nxt, beams, lm, prefix + (label,), beam, label)
                # after the same label, only a path through blank starts a new one
                source = beam.blank if prefix and prefix[-1] == label else total
                extended.label = _logaddexp(extended.label, source + frame[label])
        beams = dict(sorted(nxt.items(), key=score, reverse=True)[:beam_size])
    return list(max(beams.items(), key=score)[0])
