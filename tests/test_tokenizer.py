import warnings

import numpy as np
import pytest
import torch

from data_prep.synthetic import EEG_CHANNELS, make_eeg_run
from tokenizer.config import TokenizerConfig
from tokenizer.model import BiotokTokenizer, attention

VOCAB = sorted({f"eeg:{n}" for n in EEG_CHANNELS} | {f"ecg:{n}" for n in ("MLII", "V5")})


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    m = BiotokTokenizer(TokenizerConfig.from_size("tiny", presets=["eeg", "ecg"], channel_vocab=VOCAB))
    patches = torch.randn(2, len(EEG_CHANNELS), 4, 200) * 0.3
    m(patches, m.channel_ids([EEG_CHANNELS] * 2, "eeg"), "eeg")  # k-means init of the codebooks
    return m.eval()


@pytest.mark.parametrize("head", [20, 32])
def test_attention_matches_softmax_reference_for_any_head_size(head):
    # head sizes off a multiple of 8 are zero-padded for the fused kernels: nothing may change
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 3, 7, head, generator=g, dtype=torch.float64) for _ in range(3))
    keep = torch.ones(2, 1, 1, 7, dtype=torch.bool)
    keep[1, ..., 5:] = False  # padded positions of the second sample
    scores = (q @ k.transpose(-1, -2)) / head**0.5
    expected = scores.masked_fill(~keep, float("-inf")).softmax(-1) @ v
    out = attention(q, k, v, keep)
    assert out.shape == expected.shape
    torch.testing.assert_close(out, expected, rtol=1e-10, atol=1e-10)


def test_save_load_round_trip_is_bit_exact(model, tmp_path):
    model.save_pretrained(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json", "model.safetensors"]
    loaded, info = BiotokTokenizer.from_pretrained(tmp_path, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    state, back = model.state_dict(), loaded.state_dict()
    assert state.keys() == back.keys()
    for key in state:
        assert torch.equal(state[key], back[key]), key  # codebooks and EMA buffers included
    assert loaded.config.config_hash() == model.config.config_hash()
    patches = torch.randn(1, len(EEG_CHANNELS), 4, 200)
    ids = model.channel_ids(EEG_CHANNELS, "eeg")
    assert torch.equal(
        model.encode_patches(patches, ids, "eeg"), loaded.eval().encode_patches(patches, ids, "eeg")
    )


def test_unknown_channels_and_modalities_are_clear_errors(model):
    with pytest.raises(ValueError, match=r"\['Xx9'\] of modality 'eeg' are not in"):
        model.channel_ids(["C3", "Xx9"], "eeg")
    with pytest.raises(ValueError, match="modality 'emg' not configured"):
        model.channel_ids(["C3"], "emg")
    # ECG "V5" and an EEG channel of the same name would not collide: names are per modality
    assert model.channel_ids(["V5"], "ecg").item() == VOCAB.index("ecg:V5") + 1


def test_encode_decode_any_length_and_rate(model):
    run = make_eeg_run(0, 0, "imagery", 9.3, sfreq=250.0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        enc = model.encode(run.data_uv, run.sfreq, run.ch_names, "eeg")
    assert any("padded the last patch" in str(w.message) for w in caught)
    # 9.3 s at 250 Hz -> 1860 samples at 200 Hz -> 10 patches (the last padded)
    assert enc.codes.shape == (1, len(run.ch_names), 10, 4, 4) and enc.codes.dtype == torch.long
    assert int(enc.codes.max()) < 64
    signal = model.decode(enc)
    assert signal.shape == (1, len(run.ch_names), run.data_uv.shape[1]) and np.isfinite(signal).all()
    fewer = model.decode(enc, n_levels=1)
    assert fewer.shape == signal.shape and not np.allclose(fewer, signal)
    assert model.config.bits_per_token() == 4 * 4 * 6
    assert model.config.bits_per_channel_second("eeg") == 96.0


def test_variable_depth_spends_the_same_codes_where_the_signal_is(model):
    torch.manual_seed(1)
    patches = torch.randn(2, len(EEG_CHANNELS), 4, 200) * 0.3
    patches[:, 3] *= 20  # one channel carries far more than the others
    ids = model.channel_ids([EEG_CHANNELS] * 2, "eeg")
    ids[1, -2:] = 0  # the second window has two padding channels
    codes = model.encode_patches(patches, ids, "eeg", n_levels=2, variable_depth=True)
    uniform = model.encode_patches(patches, ids, "eeg", n_levels=2)
    s, q = model.config.n_scales, model.config.n_levels
    assert codes.shape == (2, len(EEG_CHANNELS), 4, s, q)
    depths = (codes >= 0).sum(-1)  # (B, C, P, S)
    # every window's patch spends exactly 2 levels x scales x its real channels; padding spends nothing
    real = (ids > 0).sum(1)
    assert (depths.sum(dim=(1, 3)) == 2 * s * real[:, None]).all()
    assert (depths[1, -2:] == 0).all()
    # a token's levels are a prefix, and the codes it has are the uniform encoding's
    present = codes >= 0
    assert (present[..., 1:] <= present[..., :-1]).all()
    full = model.encode_patches(patches, ids, "eeg")
    assert torch.equal(codes[present], full[present]) and torch.equal(full[..., :2], uniform)
    # the allocation's objective: the same number of codes leaves less of the latents unexplained
    with torch.no_grad():
        latents, _ = model._latents(patches, ids, "eeg")
    _, b, tokens, dim = latents.shape

    def unexplained(c):
        flat = c.permute(3, 0, 1, 2, 4).reshape(s, b * tokens, q)
        rebuilt = torch.stack([quant.decode(flat[i]) for i, quant in enumerate(model.quantizers)])
        error = (latents.reshape(s, b * tokens, dim) - rebuilt).pow(2).sum(-1).view(s, b, tokens)
        return float((error * (ids > 0).repeat_interleave(4, dim=1)).sum())

    assert unexplained(codes) < 0.95 * unexplained(
        torch.cat([uniform, torch.full_like(full[..., 2:], -1)], dim=-1)
    )


def test_variable_depth_gives_a_loud_channel_more_levels_in_the_shipped_tokenizer():
    from pathlib import Path

    shipped = Path(__file__).resolve().parents[1] / "pretrained_models" / "tokenizer-small"
    model = BiotokTokenizer.from_pretrained(str(shipped)).eval()
    run = make_eeg_run(0, 0, "imagery", 4.0, sfreq=200.0)
    signal = run.data_uv.copy()
    signal[5] *= 10  # one electrode far louder than the rest (a loose contact)
    enc = model.encode(signal, run.sfreq, run.ch_names, "eeg", n_levels=1, variable_depth=True)
    depths = (enc.codes >= 0).sum(-1)  # (1, C, P, S)
    assert depths.sum() == len(run.ch_names) * enc.codes.shape[2] * model.config.n_scales
    assert depths[0, 5].float().mean() > 2 * depths.float().mean()
    # and that buys a better rebuild of the whole recording than one level everywhere, at the same codes
    fixed = model.encode(signal, run.sfreq, run.ch_names, "eeg", n_levels=1)
    error = ((model.decode(enc) - signal) ** 2).sum()
    assert error < ((model.decode(fixed) - signal) ** 2).sum()


def _log(path):
    import json

    return [json.loads(line) for line in path.read_text().splitlines()]


def test_training_improves_held_out_real_eeg(eegbci_corpus, tmp_path):
    from data_prep.corpus import Corpus
    from tokenizer.train import TokenizerTrainArgs, evaluate, train

    args = TokenizerTrainArgs(
        corpora=[str(eegbci_corpus)],
        out=str(tmp_path),
        steps=200,
        batch_size=8,
        lr=3e-3,
        warmup_steps=10,
        eval_every=200,
        save_every=200,
        log_every=50,
        holdout_fraction=0.34,
        progress=False,
    )
    final = train(args)
    _, held_out = Corpus(eegbci_corpus).split_by_subject(0.34)
    assert set(held_out.column("subject")) and not set(held_out.column("subject")) & set(
        Corpus(eegbci_corpus).split_by_subject(0.34)[0].column("subject")
    )
    trained = BiotokTokenizer.from_pretrained(final)
    torch.manual_seed(0)
    untrained = BiotokTokenizer(trained.config)
    untrained.train()
    from data_prep.mixing import collate_windows
    from tokenizer.train import batch_patches

    batch = collate_windows([held_out[i] for i in range(8)])
    untrained(
        batch_patches(batch, 200), untrained.channel_ids(batch["ch_names"], "eeg"), "eeg"
    )  # k-means init, as step 0
    before = evaluate(untrained, {"eegbci": held_out}, 2, 8, "cpu")["eegbci"]
    after = evaluate(trained, {"eegbci": held_out}, 2, 8, "cpu")["eegbci"]
    assert after["pcc"] > before["pcc"] + 0.15 and after["snr_db"] > before["snr_db"] + 0.5, (before, after)


def test_resume_continues_the_same_loss_curve(eegbci_corpus, tmp_path):
    from tokenizer.train import TokenizerTrainArgs, train

    common = dict(
        corpora=[str(eegbci_corpus)],
        steps=12,
        batch_size=2,
        warmup_steps=2,
        eval_every=100,
        log_every=1,
        save_every=6,
        progress=False,
    )
    train(TokenizerTrainArgs(out=str(tmp_path / "straight"), **common))
    train(TokenizerTrainArgs(out=str(tmp_path / "resumed"), stop_at=6, **common))  # as if killed after step 6
    train(TokenizerTrainArgs(out=str(tmp_path / "resumed"), **common))
    straight = [r["loss"] for r in _log(tmp_path / "straight" / "log.jsonl") if "loss" in r]
    resumed = [r["loss"] for r in _log(tmp_path / "resumed" / "log.jsonl") if "loss" in r]
    assert len(straight) == len(resumed) == 12
    assert resumed == pytest.approx(straight, rel=1e-5)


def test_corrupt_checkpoint_is_refused(eegbci_corpus, tmp_path):
    from data_prep.errors import BiosignalError
    from tokenizer.train import TokenizerTrainArgs, train

    common = dict(
        corpora=[str(eegbci_corpus)],
        steps=4,
        batch_size=2,
        warmup_steps=1,
        eval_every=100,
        save_every=2,
        progress=False,
    )
    train(TokenizerTrainArgs(out=str(tmp_path), stop_at=2, **common))
    weights = next((tmp_path / "checkpoints").glob("step_*")) / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(BiosignalError, match="corrupt or truncated"):
        train(TokenizerTrainArgs(out=str(tmp_path), **common))


def test_lead_mixing_keeps_each_window_in_the_span_of_its_own_leads():
    from tokenizer.train import mix_leads

    rng = np.random.default_rng(0)
    signal = torch.randn(3, 4, 50)
    valid = torch.tensor([[True, True, False, False], [True, True, True, True], [True, True, True, False]])
    signal[~valid] = 0  # padding channels
    mixed = mix_leads(signal, valid, rng)
    assert torch.equal(mixed[~valid], signal[~valid])  # padding stays padding
    for w in range(3):
        leads = valid[w].nonzero().flatten()
        x, y = signal[w, leads], mixed[w, leads]
        # y = diag(gains) @ rotation @ x: y is in x's span, and unscaled it keeps x's energy
        coef = torch.linalg.lstsq(x.T, y.T).solution.T
        torch.testing.assert_close(coef @ x, y, atol=1e-4, rtol=1e-4)
        gains = coef.norm(dim=1)  # each row of rotation has unit norm
        assert bool(((gains > 0.5 - 1e-4) & (gains < 1.5 + 1e-4)).all())
        assert not torch.allclose(y, x)
    # and a window's mixture is drawn anew: two draws differ
    assert not torch.equal(mix_leads(signal, valid, rng), mixed)
