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


@dataclass
class _Beam:
    blank: float = -math.inf  # log P(prefix, path ends in blank)
    label: float = -math.inf  # log P(prefix, path ends in its last label)
    lm_score: float = 0.0
    context: tuple[int, ...] = ()

    @property
    def total(self) -> float:
        return np.logaddexp(self.blank, self.label)


def _entry(
    nxt: dict, beams: dict, lm: CharNGramLM | None, prefix: tuple[int, ...], parent: _Beam, label: int | None
) -> _Beam:
    """The next frame's beam for `prefix`, created on first use with its LM state (a function of the
    prefix alone: reused from the current beams, or advanced from `parent` by `label`)."""
    if prefix not in nxt:
        if label is None:
            nxt[prefix] = _Beam(lm_score=parent.lm_score, context=parent.context)
        elif prefix in beams:
            old = beams[prefix]
            nxt[prefix] = _Beam(lm_score=old.lm_score, context=old.context)
        else:
            context, added = lm.advance(parent.context, label) if lm is not None else ((), 0.0)
            nxt[prefix] = _Beam(lm_score=parent.lm_score + added, context=context)
    return nxt[prefix]


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
    emissions = np.asarray(torch.as_tensor(log_probs, dtype=torch.float32).cpu())
    beams: dict[tuple[int, ...], _Beam] = {(): _Beam(blank=0.0)}

    def score(prefix: tuple[int, ...], beam: _Beam) -> float:
        bonus = insertion_bonus * len(prefix)
        return beam.total + (lm_weight * beam.lm_score if lm is not None else 0.0) + bonus

    for frame in emissions:
        ranked = np.argsort(frame)[::-1][: max_candidates + 1]
        candidates = [int(c) for c in ranked if c != BLANK and frame[c] > prune][:max_candidates]
        nxt: dict[tuple[int, ...], _Beam] = {}

        for prefix, beam in beams.items():
            stay = _entry(nxt, beams, lm, prefix, beam, None)
            stay.blank = np.logaddexp(stay.blank, beam.total + frame[BLANK])
            if prefix:  # the last label repeated without a blank in between collapses
                stay.label = np.logaddexp(stay.label, beam.label + frame[prefix[-1]])
            for label in candidates:
                extended = _entry(nxt, beams, lm, prefix + (label,), beam, label)
                # after the same label, only a path through blank starts a new one
                source = beam.blank if prefix and prefix[-1] == label else beam.total
                extended.label = np.logaddexp(extended.label, source + frame[label])
        beams = dict(sorted(nxt.items(), key=lambda item: score(*item), reverse=True)[:beam_size])
    best = max(beams.items(), key=lambda item: score(*item))[0]
    return list(best)
