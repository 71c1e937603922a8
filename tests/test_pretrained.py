"""The shipped models load offline and reproduce their model cards on held-out real recordings."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from finetune.emg_models import EmgCTCModel
from foundation.card import METRICS_FILE, card_block, measure
from foundation.model import BiotokFoundation
from tokenizer.config import TokenizerConfig
from tokenizer.model import BiotokTokenizer

MODELS = Path(__file__).resolve().parents[1] / "pretrained_models"
LOADERS = {"tokenizer": BiotokTokenizer, "foundation": BiotokFoundation, "ctc": EmgCTCModel}


def card(name: str) -> dict:
    return json.loads((MODELS / name / METRICS_FILE).read_text())


@pytest.fixture(scope="module")
def measured(real, real_work) -> dict:
    """tokenizer-small with foundation-small (which reads its codes), and tokenizer-small-v1 alone."""
    work = real_work  # one folder: the second measure (and the foundation tests) reuse the prepared shards
    # v1 first: its card predates EEGBCI S007-S014, which the second measure prepares into the same folder
    v1 = measure(real, MODELS / "tokenizer-small-v1", None, work)["tokenizer"]
    cards = measure(real, MODELS / "tokenizer-small", MODELS / "foundation-small", work)
    return {**cards, "tokenizer-small-v1": v1}


def test_every_shipped_model_loads_offline_and_its_card_shows_its_metrics(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    folders = sorted(p for p in MODELS.iterdir() if p.is_dir())
    assert [p.name for p in folders] == [
        "ctc-128x2-synthetic",
        "foundation-small",
        "tokenizer-small",
        "tokenizer-small-v1",
    ]
    for folder in folders:
        for name in ("config.json", "model.safetensors", "README.md", METRICS_FILE):
            assert (folder / name).is_file(), f"{folder.name} lacks {name}"
        saved = card(folder.name)
        model = LOADERS[saved["kind"]].from_pretrained(str(folder))
        assert sum(p.numel() for p in model.parameters()) > 500_000
        # the card's table is the metrics file, rendered: the two cannot drift apart
        assert card_block(saved["kind"], saved["metrics"]) in (folder / "README.md").read_text()
    # the foundation model reads the shipped tokenizer's codes
    tokenizer = BiotokTokenizer.from_pretrained(str(MODELS / "tokenizer-small"))
    foundation = BiotokFoundation.from_pretrained(str(MODELS / "foundation-small"))
    assert foundation.config.tokenizer_hash == tokenizer.config.config_hash()


@pytest.mark.parametrize(
    "name, corpora",
    [
        ("tokenizer-small-v1", {"eegbci", "myo"}),
        ("tokenizer-small", {"ecg", "eegbci", "eegbci_more", "myo"}),
    ],
)
def test_tokenizer_card_is_reproduced_on_held_out_real_recordings(measured, name, corpora):
    expected = card(name)["metrics"]
    got = measured["tokenizer" if name == "tokenizer-small" else name]
    assert set(got) == set(expected) == corpora
    for name, want in expected.items():
        have = got[name]
        assert have["subjects"] == want["subjects"] and have["channel_windows"] == want["channel_windows"]
        assert have["snr_db"] == pytest.approx(want["snr_db"], abs=0.02), name
        assert have["pcc"] == pytest.approx(want["pcc"], abs=0.002), name
        assert have["nmse"] == pytest.approx(want["nmse"], rel=0.01), name
        assert have["codebook_used"] == pytest.approx(want["codebook_used"], abs=0.005), name
        assert have["perplexity"] == pytest.approx(want["perplexity"], rel=0.01), name
        for levels, snr in want.get("snr_db_by_levels", {}).items():
            assert have["snr_db_by_levels"][levels] == pytest.approx(snr, abs=0.02), (name, levels)


def test_foundation_card_is_reproduced_on_held_out_real_recordings(measured):
    expected = card("foundation-small")["metrics"]
    got = measured["foundation"]
    assert set(got) == set(expected) == {"ecg", "eegbci", "eegbci_more", "myo", "all"}
    # the per-level table's "mean over the N scales" is counted, not written in
    tokenizer_config = TokenizerConfig.from_pretrained(str(MODELS / "tokenizer-small"))
    assert got["all"]["n_scales"] == expected["all"]["n_scales"] == tokenizer_config.n_scales
    for name, want in expected.items():
        have = got[name]
        assert have["n_masked"] == want["n_masked"], name
        assert have["masked_loss"] == pytest.approx(want["masked_loss"], abs=0.005), name
        assert have["masked_accuracy"] == pytest.approx(want["masked_accuracy"], abs=0.0005), name
        assert have["unigram_loss"] == pytest.approx(want["unigram_loss"], abs=0.005), name
        for baseline in ("copy_time_accuracy", "copy_space_accuracy"):  # exact: no model involved
            assert have[baseline] == pytest.approx(want[baseline], abs=1e-9), (name, baseline)
        levels = have["accuracy_by_level"]
        assert set(levels) == set(want["accuracy_by_level"]) == {"1", "2"}, name
        for level, scores in want["accuracy_by_level"].items():
            assert levels[level]["masked"] == pytest.approx(scores["masked"], abs=0.001), (name, level)
            for baseline in ("unigram", "copy_time", "copy_space"):
                assert levels[level][baseline] == pytest.approx(scores[baseline], abs=1e-6), (name, baseline)
        # the levels split the overall figures: each head weighs the same
        for key, overall in (("masked", "masked_accuracy"), ("copy_space", "copy_space_accuracy")):
            mean = sum(scores[key] for scores in levels.values()) / len(levels)
            assert mean == pytest.approx(have[overall], abs=1e-6), (name, key)  # float32 heads
        # what the card claims: more masked codes right than the code-frequency baseline on every held-out
        # corpus, and a lower loss except on PTB's 15 ECG leads (training saw two MIT-BIH leads)
        assert have["masked_accuracy"] > have["unigram_accuracy"], name
        if name != "ecg":
            assert have["masked_loss"] < have["unigram_loss"], name


def test_ctc_card_is_reproduced_on_the_held_out_synthetic_user(tmp_path):
    """The shipped CTC model decodes its held-out user's whole sessions (regenerated: the synthetic
    sessions are a pure function of user and session) at the greedy CER its card states."""
    from data_prep.emg2qwerty import write_session
    from data_prep.synthetic import make_emg_session
    from finetune.cer import EditCounts, edit_counts
    from finetune.decoding import greedy_decode
    from finetune.emg_data import load_session

    name = "ctc-128x2-synthetic"
    want = card(name)["metrics"]
    model = EmgCTCModel.from_pretrained(str(MODELS / name)).eval()
    total = EditCounts()
    for name, seconds in zip(want["session_names"], want["session_seconds"]):
        user, index = (int(part) for part in name.split("-")[1:])  # synthetic-<user>-<session>
        path = tmp_path / f"{name}.hdf5"
        write_session(path, make_emg_session(user, index, duration_s=seconds))
        session = load_session(path)
        with torch.no_grad():
            emissions = model.session_log_probs(torch.from_numpy(session.signal))
        total = total + edit_counts(
            session.labels(0, session.signal.shape[1]).tolist(), greedy_decode(emissions)
        )
    assert total.target_length == want["target_keys"]
    assert total.cer == pytest.approx(want["cer_greedy"], abs=0.01)
    # what the card claims: the model decodes (an untrained one emits nothing or noise, ~100% CER)
    assert total.cer < 20.0
