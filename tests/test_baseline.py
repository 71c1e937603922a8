"""The DCT codec the tokenizer is measured against."""

import numpy as np
from scipy.fft import dct

from tokenizer.baseline import dct_bits, dct_codec, dct_settings


def _patches(n=64, length=200, seed=0):
    rng = np.random.default_rng(seed)
    t = np.arange(length) / 200
    return np.sin(2 * np.pi * 10 * t) * rng.normal(1, 0.2, (n, 1)) + 0.3 * rng.normal(size=(n, length))


def _snr(x, y):
    return 10 * np.log10((x**2).sum() / ((x - y) ** 2).sum())


def test_full_budget_is_nearly_lossless():
    x = _patches()
    assert _snr(x, dct_codec(x, 200, 16)) > 60


def test_keeps_exactly_the_budgeted_coefficients():
    x = _patches()
    y = dct_codec(x, 7, 8)
    nonzero = (np.abs(dct(y, type=2, norm="ortho", axis=-1)) > 1e-9).sum(axis=-1)
    assert (nonzero <= 7).all() and (nonzero >= 6).all()


def test_more_bits_less_error():
    x = _patches()
    snrs = []
    for budget in (40, 80, 160, 320, 640):
        best = max(_snr(x, dct_codec(x, k, b)) for k, b in dct_settings(200, budget))
        snrs.append(best)
    assert all(b > a for a, b in zip(snrs, snrs[1:])), snrs


def test_settings_fit_the_budget():
    for budget in (30, 100, 333):
        settings = dct_settings(200, budget)
        assert settings
        for n_kept, value_bits in settings:
            assert dct_bits(200, n_kept, value_bits) <= budget
            assert dct_bits(200, n_kept + 1, value_bits) > budget  # none left unspent
    assert dct_settings(200, 20) == []  # below scale + one index + two value bits
