"""The classical baselines the tokenizer is measured against, at a fixed bit budget: a per-channel DCT
codec, and a spatial PCA + DCT codec that also uses the redundancy between channels.

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


def dct_codec(
    patches: np.ndarray, n_kept: int, value_bits: int, spatial: tuple[int, int] | None = None
) -> np.ndarray:
    """Encode and decode `(..., L)` patches; returns the reconstruction, same shape.

    `spatial=(C, L)`: each row holds C components of L samples, each transformed in time on its own
    (the spatial codec's patches); the largest coefficients are still chosen over the whole row."""
    if spatial is None:
        coeffs = dct(patches.astype(np.float64), type=2, norm="ortho", axis=-1)
    else:
        shaped = patches.reshape(*patches.shape[:-1], *spatial).astype(np.float64)
        coeffs = dct(shaped, type=2, norm="ortho", axis=-1).reshape(patches.shape)
    n_kept = min(n_kept, patches.shape[-1])
    order = np.argsort(-np.abs(coeffs), axis=-1)[..., :n_kept]
    kept = np.take_along_axis(coeffs, order, axis=-1)
    peak = np.abs(kept).max(axis=-1, keepdims=True).astype(np.float16).astype(np.float64)
    levels = 2 ** (value_bits - 1) - 1  # symmetric mid-tread quantiser: -levels..levels
    step = np.where(peak > 0, peak / max(levels, 1), 1.0)
    quantised = np.clip(np.round(kept / step), -levels, levels) * step
    out = np.zeros_like(coeffs)
    np.put_along_axis(out, order, quantised, axis=-1)
    if spatial is None:
        return idct(out, type=2, norm="ortho", axis=-1)
    return idct(out.reshape(*out.shape[:-1], *spatial), type=2, norm="ortho", axis=-1).reshape(out.shape)


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


# ---------------------------------------------------------------- spatial PCA + DCT


def fit_spatial_pca(windows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Principal axes of the channels: windows `(n, C, T)` -> (basis `(C, C)` columns by falling
    variance, channel means `(C,)`)."""
    x = windows.transpose(1, 0, 2).reshape(windows.shape[1], -1).astype(np.float64)
    mean = x.mean(axis=1)
    cov = np.cov(x - mean[:, None])
    values, vectors = np.linalg.eigh(cov)
    return vectors[:, ::-1].copy(), mean


def spatial_dct_bits(n_channels: int, patch_len: int, n_kept: int, value_bits: int) -> int:
    """Bits of one multichannel patch: the scale, and per kept coefficient its index among C x L and value."""
    return SCALE_BITS + n_kept * (math.ceil(math.log2(n_channels * patch_len)) + value_bits)


def spatial_dct_codec(
    windows: np.ndarray, basis: np.ndarray, mean: np.ndarray, patch_len: int, n_kept: int, value_bits: int
) -> np.ndarray:
    """Encode and decode windows `(n, C, T)`: rotate the channels onto `basis`, DCT each component's
    patch in time, keep the `n_kept` largest of the whole `(C, L)` patch (uniformly quantised as in
    `dct_codec`), undo both. The classical codec that, like the tokenizer, uses the channels' redundancy."""
    n, c, t = windows.shape
    components = np.einsum("ck,nct->nkt", basis, windows - mean[None, :, None])
    patches = components.reshape(n, c, t // patch_len, patch_len).transpose(0, 2, 1, 3)  # (n, P, C, L)
    coded = dct_codec(
        patches.reshape(n, t // patch_len, c * patch_len), n_kept, value_bits, spatial=(c, patch_len)
    )
    components = coded.reshape(n, t // patch_len, c, patch_len).transpose(0, 2, 1, 3).reshape(n, c, t)
    return np.einsum("ck,nkt->nct", basis, components) + mean[None, :, None]


def spatial_dct_settings(
    n_channels: int, patch_len: int, budget_bits: float, value_bits: range = range(2, 13)
) -> list[tuple[int, int]]:
    """Every (n_kept, value_bits) that fits `budget_bits` per multichannel patch."""
    index_bits = math.ceil(math.log2(n_channels * patch_len))
    settings = []
    for bits in value_bits:
        n_kept = int((budget_bits - SCALE_BITS) // (index_bits + bits))
        if n_kept >= 1:
            settings.append((min(n_kept, n_channels * patch_len), bits))
    return settings
