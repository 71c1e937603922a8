"""Tokenizer fidelity (issue 16): channel names as recordings spell them, amplitude-aware patch
embeddings, float32 codes under autocast, the packed corpora and the rate-distortion command."""

import json

import numpy as np
import pytest
import torch

from data_prep.errors import BiosignalError
from data_prep.presets import eeg_site_names, standardize_eeg_names
from tokenizer.config import TokenizerConfig
from tokenizer.model import BiotokTokenizer, ConvBranch, PatchStem

TEN_TWENTY_TUH = [
    "EEG FP1-REF", "EEG FP2-REF", "EEG F7-REF", "EEG F3-REF", "EEG FZ-REF", "EEG F4-REF", "EEG F8-REF",
    "EEG T3-REF", "EEG C3-REF", "EEG CZ-REF", "EEG C4-REF", "EEG T4-REF", "EEG T5-REF", "EEG P3-REF",
    "EEG PZ-REF", "EEG P4-REF", "EEG T6-REF", "EEG O1-REF", "EEG O2-REF",
]  # fmt: skip


def test_clinical_names_map_to_10_05_sites():
    assert standardize_eeg_names(TEN_TWENTY_TUH)[:10] == [
        "Fp1", "Fp2", "F7", "F3", "Fz", "F4", "F8", "T7", "C3", "Cz",
    ]  # fmt: skip
    assert standardize_eeg_names(["EEG T5-LE", "t6", "C3-A1", "Fc5.", "Iz..", "EEG A1-REF"]) == [
        "P7", "P8", "C3", "FC5", "Iz", "A1",
    ]  # fmt: skip
    # a bipolar derivation is not a site, and an unknown name keeps its spelling
    assert standardize_eeg_names(["EEG FP1-F7", "Foo"]) == ["FP1-F7", "Foo"]
    with pytest.raises(BiosignalError, match="'T3' and 'T7' both name the EEG site 'T7'"):
        standardize_eeg_names(["T3", "T7"])
    sites = eeg_site_names()
    assert len(sites) > 330 and "T7" in sites and "T3" not in sites and "POO9h" in sites


@pytest.fixture(scope="module")
def tiny_eeg():
    from tokenizer.train import build_vocab

    class OneCorpus:  # build_vocab reads only the preset's modality and the channel names
        class preset:
            modality = "eeg"

        @staticmethod
        def column(name):
            return [["C3", "C4", "Cz"]]

    vocab = build_vocab({"eeg": OneCorpus})
    torch.manual_seed(0)
    model = BiotokTokenizer(TokenizerConfig.from_size("tiny", presets=["eeg"], channel_vocab=vocab))
    patches = torch.randn(4, 3, 4, 200) * 0.3
    model(patches, model.channel_ids([["C3", "C4", "Cz"]] * 4, "eeg"), "eeg")  # k-means init
    return model.eval()


def test_an_unseen_clinical_montage_at_500_hz_encodes_and_decodes(tiny_eeg):
    rng = np.random.default_rng(0)
    signal = rng.normal(0, 20, (19, 5000)).astype(np.float32)  # 10 s at 500 Hz, µV
    enc = tiny_eeg.encode(signal, 500.0, TEN_TWENTY_TUH, "eeg")
    assert enc.ch_names[7] == "T7" and enc.codes.shape == (1, 19, 10, 4, 4)
    rebuilt = tiny_eeg.decode(enc)
    assert rebuilt.shape == (1, 19, 5000) and np.isfinite(rebuilt).all()
    # the montage was never in training: its sites differ in position, so in their embeddings
    ids = tiny_eeg.channel_ids(enc.ch_names, "eeg")
    assert bool((tiny_eeg.channel_pos[ids[0], 3] == 1).all())
    with pytest.raises(ValueError, match=r"\['Xyz9'\] of modality 'eeg' are not in"):
        tiny_eeg.encode(signal[:2], 500.0, ["EEG C3-REF", "Xyz9"], "eeg")


def test_codes_stay_float32_under_bf16_autocast(tiny_eeg):
    patches = torch.randn(2, 3, 4, 200) * 0.3
    ids = tiny_eeg.channel_ids([["C3", "C4", "Cz"]] * 2, "eeg")
    exact = tiny_eeg.encode_patches(patches, ids, "eeg")
    with torch.autocast("cpu", torch.bfloat16):
        assert torch.equal(tiny_eeg.encode_patches(patches, ids, "eeg"), exact)
        fast = tiny_eeg.encode_patches(patches, ids, "eeg", allow_bf16=True)
    assert fast.shape == exact.shape


def test_the_first_designs_stem_is_nearly_blind_to_amplitude():
    # why the shipped tokenizer's latents carried little: GroupNorm rescales every patch to one size
    torch.manual_seed(0)
    patch = torch.randn(64, 200) * 0.3
    conv = ConvBranch((21, 9), 16, 25, 128)
    linear = PatchStem("linear", (21, 9), 16, 25, 200, 128)
    torch.nn.init.zeros_(linear.linear.bias)
    unnormed = PatchStem("conv+linear", (21, 9), 16, 25, 200, 128)

    def moved(stem):
        with torch.no_grad():
            a, b = stem(patch), stem(3 * patch)
        return float((b - a).norm() / a.norm())

    assert moved(conv) < 0.5
    assert moved(linear) == pytest.approx(2.0, rel=1e-4)  # a linear map without bias: exactly 3x - 1x
    assert moved(unnormed) > 1.0


def test_latent_skip_puts_each_patch_into_its_latents():
    # with the transformer's path to the codes silenced, the skip alone makes the latents a linear map of
    # the patch (doubling the patch adds the same step again); without it they ignore the patch
    torch.manual_seed(0)
    patches = torch.randn(1, 2, 3, 200) * 0.3
    for skip in (True, False):
        config = TokenizerConfig.from_size("tiny", ["eeg"], ["eeg:C3", "eeg:C4"], latent_skip=skip)
        model = BiotokTokenizer(config).eval()
        for proj in model.to_code:
            torch.nn.init.zeros_(proj[-1].weight)
            torch.nn.init.zeros_(proj[-1].bias)
        ids = model.channel_ids(["C3", "C4"], "eeg")
        with torch.no_grad():
            zero, one, two = (model._latents(k * patches, ids, "eeg")[0] for k in (0, 1, 2))
        if skip:
            assert float((one - zero).norm()) > 0.1 * float(one.norm())
            torch.testing.assert_close(two - one, one - zero, atol=1e-5, rtol=1e-4)
        else:
            assert torch.equal(one, zero) and torch.equal(two, zero)
    assert TokenizerConfig.from_size("small", ["eeg"], ["eeg:C3"]).latent_skip


def test_decoder_skip_rebuilds_each_patch_linearly_from_its_codes():
    # with the heads silenced (as they start), the skip alone makes the rebuilt patch a linear map of the
    # codes (twice the codes, twice the patch) while the outputs are still amplitude and phase; without
    # it a silenced head rebuilds nothing
    torch.manual_seed(0)
    latents = torch.randn(4, 1, 6, 16)  # (scales, batch, channels * patches, code_dim) of the tiny size
    shape = (1, 2, 3, 200)
    for skip in (True, False):
        config = TokenizerConfig.from_size("tiny", ["eeg"], ["eeg:C3", "eeg:C4"], decoder_skip=skip)
        model = BiotokTokenizer(config).eval()
        torch.nn.init.zeros_(model.heads["eeg"].weight)
        torch.nn.init.zeros_(model.heads["eeg"].bias)
        ids = model.channel_ids(["C3", "C4"], "eeg")
        with torch.no_grad():
            one, two = (
                model.spectrum_to_patches(*model._decode_latents(k * latents, ids, "eeg", shape), 200)
                for k in (1, 2)
            )
        if skip:
            assert float(one.norm()) > 0.1
            torch.testing.assert_close(two, 2 * one, atol=1e-4, rtol=1e-3)
        else:
            assert float(one.abs().max()) == 0 and float(two.abs().max()) == 0
    assert not TokenizerConfig(channel_vocab=["eeg:C3"]).decoder_skip


def test_an_added_decoder_context_fills_in_what_a_tokens_own_codes_left_out():
    # one channel's codes silenced: with "rotate" its patch can only be a scaled and rotated copy of its
    # own (zero) linear spectrum, so it stays silent whatever the other channel says; with "add" the
    # context heads put the other channel's information into it
    torch.manual_seed(0)
    shape = (1, 2, 3, 200)
    latents = torch.randn(4, 1, 6, 16)
    latents[:, :, :3] = 0  # channel C3's three patches: no code content
    for context in ("rotate", "add"):
        config = TokenizerConfig.from_size("tiny", ["eeg"], ["eeg:C3", "eeg:C4"], decoder_context=context)
        model = BiotokTokenizer(config).eval()
        torch.nn.init.zeros_(model.decoder_skip["eeg"].bias)  # a zero code is a zero linear spectrum
        torch.nn.init.normal_(model.heads["eeg"].weight, std=0.5)
        ids = model.channel_ids(["C3", "C4"], "eeg")
        with torch.no_grad():
            patches = model.spectrum_to_patches(*model._decode_latents(latents, ids, "eeg", shape), 200)
        silent = float(patches[0, 0].abs().max())
        assert (silent < 1e-4) if context == "rotate" else (silent > 1e-2)
        assert float(patches[0, 1].abs().max()) > 1e-2
    with pytest.raises(ValueError, match="decoder_context"):
        TokenizerConfig(decoder_context="multiply")


def test_an_untrained_added_context_starts_at_zero():
    # initialised at random, the added context put noise on every bin that training had to undo first
    torch.manual_seed(0)
    shape = (1, 2, 3, 200)
    latents = torch.randn(4, 1, 6, 16)
    config = TokenizerConfig.from_size("tiny", ["eeg"], ["eeg:C3", "eeg:C4"], decoder_context="add")
    model = BiotokTokenizer(config).eval()
    ids = model.channel_ids(["C3", "C4"], "eeg")
    with torch.no_grad():
        log_amp, sin, cos = model._decode_latents(latents, ids, "eeg", shape)
        codes = latents.permute(1, 2, 0, 3).reshape(1, 6, -1)
        linear = model.decoder_skip["eeg"](codes).view(1, 2, 3, 2, -1)
    spectrum = torch.complex(linear[..., 0, :], linear[..., 1, :])
    torch.testing.assert_close(torch.expm1(log_amp), spectrum.abs(), atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(torch.atan2(sin, cos), spectrum.angle(), atol=1e-3, rtol=1e-3)
    assert float(model.heads["eeg"].weight[: model.heads["eeg"].out_features // 3].abs().max()) > 0


def test_add_then_rotate_starts_as_rotate():
    # its correction (head outputs 3 and 4) starts at zero: with the same other weights it decodes as "rotate"
    torch.manual_seed(0)
    shape, latents = (1, 2, 3, 200), torch.randn(4, 1, 6, 16)
    models = {}
    for context in ("rotate", "add+rotate"):
        config = TokenizerConfig.from_size("tiny", ["eeg"], ["eeg:C3", "eeg:C4"], decoder_context=context)
        models[context] = BiotokTokenizer(config).eval()
    own = models["add+rotate"].state_dict()
    for key, value in models["rotate"].state_dict().items():
        if key.startswith("heads."):
            assert float(own[key][value.shape[0] :].abs().max()) == 0  # the correction's rows
            own[key][: value.shape[0]] = value
        else:
            own[key] = value
    models["add+rotate"].load_state_dict(own)
    ids = models["rotate"].channel_ids(["C3", "C4"], "eeg")
    with torch.no_grad():
        rotate, both = (m._decode_latents(latents, ids, "eeg", shape) for m in models.values())
    for a, b in zip(rotate, both):
        torch.testing.assert_close(a, b)


def test_a_channel_name_training_never_saw_reads_as_a_dropped_name():
    # names start at zero and training updates only the names it sees, so an unseen lead (PTB's v1 after
    # MIT-BIH's MLII) is exactly the "name left out" state that name dropout trains; the first design's
    # random untrained names cost 3 dB on held-out PTB at 8 levels (docs/BENCHMARKS.md)
    torch.manual_seed(0)
    config = TokenizerConfig.from_size("tiny", ["ecg"], ["ecg:MLII", "ecg:v1"], channel_name_dropout=0.5)
    model = BiotokTokenizer(config)
    assert float(model.channel_embed.weight.detach().abs().max()) == 0
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.01)
    ids = model.channel_ids([["MLII"]] * 8, "ecg")
    patches = torch.randn(8, 1, 4, 40)
    for _ in range(3):
        model(patches, ids, "ecg").loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    mlii, v1 = model.channel_embed.weight.detach()[1:]
    assert float(mlii.abs().max()) > 0 and float(v1.abs().max()) == 0
    # in training about half the names are left out: the same batch gives different outputs
    ids = model.channel_ids([["MLII"]] * 64, "ecg")
    patches = torch.randn(64, 1, 4, 40)
    with torch.no_grad():
        model.quantizers.eval()  # only the names vary between the two passes
        first, second = (model(patches, ids, "ecg").reconstruction for _ in range(2))
        differs = (first - second).flatten(1).abs().amax(1) > 0
        assert 0 < int(differs.sum()) < 64
        model.eval()  # and never at inference
        torch.testing.assert_close(
            model(patches, ids, "ecg").reconstruction, model(patches, ids, "ecg").reconstruction
        )
    with pytest.raises(ValueError, match="channel_name_dropout 1.0"):
        TokenizerConfig(channel_name_dropout=1.0)
    assert TokenizerConfig().channel_name_dropout == 0  # saved configs keep their random names


def test_old_configs_load_with_the_first_design():
    old = TokenizerConfig(channel_vocab=["eeg:C3"])  # a config.json saved before these fields existed
    assert (old.patch_embed, old.objective, old.position_embed) == ("conv", "spectral", False)
    assert not old.latent_skip
    model = BiotokTokenizer(old)
    assert isinstance(model.stems["eeg"][0], ConvBranch) and not hasattr(model, "position_embed")
    with pytest.raises(ValueError, match="patch_embed 'fft'"):
        TokenizerConfig(patch_embed="fft")


def test_pack_round_trip_keeps_everything_but_quantisation_noise(synthetic_root, tmp_path):
    from data_prep.corpus import Corpus, load_corpora
    from data_prep.pack import pack_corpora, unpack_corpora
    from data_prep.prepare import PrepareArgs, run

    # EEG and ECG: two presets, two montages; the 1 kHz EMG would only add compression time
    corpora = ["eeg_synthetic", "ecg_synthetic"]
    run(
        PrepareArgs(
            sources="synthetic",
            root=str(synthetic_root),
            out=str(tmp_path / "c"),
            corpora=corpora,
            progress=False,
        )
    )
    corpora = load_corpora(tmp_path / "c")
    sizes = pack_corpora(corpora, tmp_path / "p.pack", snr_db=40, progress=False)
    assert all(packed < raw / 2 for _, raw, packed in sizes.values()), sizes
    unpack_corpora(tmp_path / "p.pack", tmp_path / "u", progress=False)
    for name, corpus in corpora.items():
        back = Corpus(tmp_path / "u" / name)
        assert len(back) == len(corpus)
        for i in (0, len(corpus) - 1):
            a, b = corpus[i], back[i]
            snr = 10 * np.log10((a["signal"] ** 2).sum() / ((a["signal"] - b["signal"]) ** 2).sum())
            assert 38 < snr < 42, (name, snr)
            for key in ("ch_names", "subject", "label", "events", "window_start", "sfreq"):
                assert a[key] == b[key], key
            np.testing.assert_array_equal(a["scale_spread"], b["scale_spread"])
    truncated = tmp_path / "cut.pack"
    truncated.write_bytes((tmp_path / "p.pack").read_bytes()[:5000])
    with pytest.raises(BiosignalError, match="cut.pack"):
        unpack_corpora(truncated, tmp_path / "v", progress=False)


def test_rd_command_writes_the_table_and_figure(synthetic_root, tmp_path):
    from data_prep.prepare import PrepareArgs, run
    from tokenizer.rd import main

    run(
        PrepareArgs(
            sources="synthetic",
            root=str(synthetic_root),
            out=str(tmp_path / "c"),
            corpora=["eeg_synthetic"],
            progress=False,
        )
    )
    from data_prep.corpus import Corpus

    corpus = Corpus(tmp_path / "c" / "eeg_synthetic")
    names = corpus[0]["ch_names"]
    config = TokenizerConfig.from_size("tiny", presets=["eeg"], channel_vocab=[f"eeg:{n}" for n in names])
    BiotokTokenizer(config).save_pretrained(tmp_path / "tok")
    held = sorted(set(corpus.column("subject")))[:1]
    code = main(
        [
            "--tokenizer", str(tmp_path / "tok"), "--corpora", str(tmp_path / "c" / "eeg_synthetic"),
            "--subjects", json.dumps({"eeg_synthetic": held}), "--levels", "1,2", "--out", str(tmp_path / "rd"),
            "--variable_depth", "true", "--spatial_coding", "true",
        ]
    )  # fmt: skip
    assert code == 0
    rows = json.loads((tmp_path / "rd" / "rd.json").read_text())
    assert [r["levels"] for r in rows] == [1, 2] and rows[0]["subjects"] == held
    # variable depth: the same codes, its rate above the fixed one by exactly the depths' side information
    # (an untrained model's residual gains are alike: every token may keep n levels, and then it is 0)
    for row in rows:
        varied = row["tokenizer_variable_depth"]
        assert varied["side_bits_per_channel_second"] >= 0
        assert varied["bits_per_channel_second"] == pytest.approx(
            row["bits_per_channel_second"] + varied["side_bits_per_channel_second"]
        )
    assert " at " in (tmp_path / "rd" / "rd.md").read_text()
    # spatial latent coding: the tokenizer's rate, axes fitted on the subject not measured (that it rebuilds
    # better than the tokens' own codes is tests/test_spatial.py's, on the shipped model: this one is untrained)
    joint = [row["tokenizer_spatial_coding"] for row in rows]
    assert [j["bits_per_channel_second"] for j in joint] == [r["bits_per_channel_second"] for r in rows]
    assert joint[0]["axes_fitted_on"] == "other subjects"
    assert rows[0]["spatial_dct"]["pca_fitted_on"] == "other subjects"
    # at twice the bits both codecs do better
    assert rows[1]["dct"]["snr_db"] > rows[0]["dct"]["snr_db"]
    assert rows[1]["spatial_dct"]["snr_db"] > rows[0]["spatial_dct"]["snr_db"]
    assert (tmp_path / "rd" / "rd.png").stat().st_size > 10_000 and "spatial" in (
        tmp_path / "rd" / "rd.md"
    ).read_text()
    # a folder of recordings as they come (the synthetic EEG FIF files), no corpus prepared
    out = tmp_path / "rd2"
    args = [
        "--tokenizer",
        str(tmp_path / "tok"),
        "--recordings",
        str(synthetic_root / "eeg"),
        "--levels",
        "1",
    ]
    assert main([*args, "--out", str(out)]) == 0
    rows = json.loads((out / "rd.json").read_text())
    assert [r["corpus"] for r in rows] == ["recordings"] and rows[0]["rows"] > 0
    assert rows[0]["spatial_dct"]["pca_fitted_on"] == "evaluated windows"


def test_depth_side_information_counts_what_the_previous_scale_does_not_tell():
    from tokenizer.rd import depth_entropy_bits

    rng = np.random.default_rng(0)
    levels = np.arange(8)
    # depths 0-2 drawn once per token and repeated at every scale: only the first scale's depth costs
    same = np.repeat(rng.integers(0, 3, size=(4000, 4, 1)), 4, axis=2)
    codes = np.where(levels < same[..., None], 7, -1)
    assert depth_entropy_bits(codes) == pytest.approx(np.log2(3) / 4, abs=0.01)
    # drawn independently at each scale: every scale costs its full entropy
    fresh = rng.integers(0, 3, size=(4000, 4, 4))
    assert depth_entropy_bits(np.where(levels < fresh[..., None], 7, -1)) == pytest.approx(
        np.log2(3), abs=0.01
    )
