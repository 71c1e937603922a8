"""Spatial latent coding (tokenizer/spatial.py): the shipped tokenizer on real EEG, S001 held out."""

from pathlib import Path

import numpy as np
import pytest
import torch

from tokenizer.model import BiotokTokenizer
from tokenizer.spatial import SpatialLatentCoder, montage_latents

SHIPPED = Path(__file__).resolve().parents[1] / "pretrained_models" / "tokenizer-small"


def _windows(corpus, subjects):
    """Scaled windows of `subjects` as patches `(B, C, P, L)`, and their channel names (one montage)."""
    rows = [corpus[i] for i in range(len(corpus)) if corpus[i]["subject"] in subjects]
    names = rows[0]["ch_names"]
    assert all(r["ch_names"] == names for r in rows)
    signal = torch.from_numpy(np.stack([r["signal"] for r in rows])).float()
    patch_len = corpus.preset.patch_len
    return signal.view(*signal.shape[:2], -1, patch_len), names


@pytest.fixture(scope="module")
def fitted(eegbci_corpus):
    """The shipped tokenizer and a coder fitted on real EEGBCI S002-S003 (S001 is held out)."""
    from data_prep.corpus import Corpus

    corpus = Corpus(eegbci_corpus)
    torch.manual_seed(0)
    model = BiotokTokenizer.from_pretrained(str(SHIPPED)).eval()
    patches, names = _windows(corpus, {"002", "003"})
    patches = patches[::3]  # 81 windows: 20,736 latent vectors per scale, of which k-means takes 8,192
    ids = model.channel_ids([names] * len(patches), "eeg")
    coder = SpatialLatentCoder.fit(
        model, patches, ids, "eeg", names, max_levels=4, kmeans_iters=3, max_vectors=8_192
    )
    held, _ = _windows(corpus, {"001"})
    return model, coder, names, held[::6]


def _snr(target, estimate):
    return float(10 * torch.log10(target.pow(2).sum() / (target - estimate).pow(2).sum()))


def test_spatial_coding_beats_the_tokens_own_codes_on_an_unseen_subject(fitted):
    model, coder, names, held = fitted
    ids = model.channel_ids([names] * len(held), "eeg")
    s, c = model.config.n_scales, len(names)
    snrs = []
    for n in (1, 2):  # up to 4 levels here: at n = 4 every component has all of them
        codes = coder.encode_patches(model, held, ids, n)
        assert codes.shape == (len(held), s, c, 4, 4)
        # the same number of codes as the tokenizer's n levels, and each component's levels a prefix
        present = codes >= 0
        assert int(present.sum()) == n * s * c * 4 * len(held)
        assert (present[..., 1:] <= present[..., :-1]).all()
        joint = coder.decode_patches(model, codes, ids)
        own = model.decode_patches(model.encode_patches(held, ids, "eeg", n_levels=n), ids, "eeg")
        snrs.append(_snr(held, joint))
        # the strong components get the levels, and that beats coding each channel on its own
        assert snrs[-1] > _snr(held, own) + 2.0, (n, snrs[-1], _snr(held, own))
    assert snrs[0] < snrs[1]
    depth = coder.schedule(1)
    assert depth[:, 0].min() > depth[:, -1].max()  # the first principal component outranks the last


def test_spatial_coder_round_trips_and_refuses_another_montage(fitted, tmp_path):
    model, coder, names, held = fitted
    held = held[:4]
    ids = model.channel_ids([names] * len(held), "eeg")
    # latents the coder sees are the encoder's: all levels on the fitting data leave little
    latents = montage_latents(model, held, ids, "eeg")
    rebuilt = coder.decode_latents(coder.encode_latents(latents, coder.max_levels))
    assert (rebuilt - latents).pow(2).sum() < 0.2 * (latents - latents.mean()).pow(2).sum()
    coder.save_pretrained(tmp_path / "coder")
    assert not list((tmp_path / "coder").glob("*.tmp"))
    loaded = SpatialLatentCoder.from_pretrained(tmp_path / "coder")
    assert torch.equal(loaded.encode_patches(model, held, ids, 2), coder.encode_patches(model, held, ids, 2))
    swapped = ids.flip(1)
    with pytest.raises(ValueError, match="montage"):
        coder.encode_patches(model, held, swapped, 1)
    with pytest.raises(ValueError, match="levels"):
        coder.schedule(coder.max_levels + 1)
    for axes in coder.axes:  # orthonormal: a component's error is the latents' error
        assert torch.allclose(axes.T @ axes, torch.eye(len(names)), atol=1e-4)
