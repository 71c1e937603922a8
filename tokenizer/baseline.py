"""The classical baseline the tokenizer is measured against: a per-patch DCT codec at a fixed bit budget.

Each patch is transformed with an orthonormal DCT-II; the `n_kept` largest coefficients are kept, each
sent as its index (ceil(log2 L) bits) and a uniformly quantised value (`value_bits` bits, symmetric,
step set by the patch's largest coefficient, itself sent as a 16-bit float). Everything else is zero.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.fft import dct, idct

SCALE_BITS = 16  # the per-patch peak coefficient, sent as float16


def dct_bits(patch_len: int, n_kept: int, value_bits: int) -> int:
    """Bits one patch costs."""
    return SCALE_BITS + n_kept * (math.ceil(math.log2(patch_len)) + value_bits)


def dct_codec(patches: np.ndarray, n_kept: int, value_bits: int) -> np.ndarray:
    """Encode and decode `(..., L)` patches; returns the reconstruction, same shape."""
    coeffs = dct(patches.astype(np.float64), type=2, norm="ortho", axis=-1)
    n_kept = min(n_kept, patches.shape[-1])
    order = np.argsort(-np.abs(coeffs), axis=-1)[..., :n_kept]
    kept = np.take_along_axis(coeffs, order, axis=-1)
    peak = np.abs(kept).max(axis=-1, keepdims=True).astype(np.float16).astype(np.float64)
    levels = 2 ** (value_bits - 1) - 1  # symmetric mid-tread quantiser: -levels..levels
    step = np.where(peak > 0, peak / max(levels, 1), 1.0)
    quantised = np.clip(np.round(kept / step), -levels, levels) * step
    out = np.zeros_like(coeffs)
    np.put_along_axis(out, order, quantised, axis=-1)
    return idct(out, type=2, norm="ortho", axis=-1)


def dct_settings(
    patch_len: int, budget_bits: float, value_bits: range = range(2, 13)
) -> list[tuple[int, int]]:
    """Every (n_kept, value_bits) that fits `budget_bits` per patch with the most coefficients each."""
    settings = []
    for bits in value_bits:
        n_kept = int((budget_bits - SCALE_BITS) // (math.ceil(math.log2(patch_len)) + bits))
        if n_kept >= 1:
            settings.append((min(n_kept, patch_len), bits))
    return settings
