import json
import subprocess
import sys
from collections import Counter

import numpy as np
import pytest

from data_prep.corpus import Corpus, load_corpora, load_sources, prepare_corpus, read_source
from data_prep.errors import BiosignalError, ConfigError
from data_prep.mixing import MixedCorpus, collate_windows
from data_prep.prepare import PrepareArgs, resolve_sources, run
from data_prep.presets import preprocess, windows
from data_prep.synthetic import make_eeg_run, write_eeg_fif


@pytest.fixture(scope="module")
def synthetic_corpora(synthetic_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("corpora")
    run(PrepareArgs(sources="synthetic", root=str(synthetic_root), out=str(out), progress=False))
    return out


def test_store_round_trip_is_exact(synthetic_root, synthetic_corpora):
    corpora = load_corpora(synthetic_corpora)
    assert set(corpora) == {"eeg_synthetic", "emg_synthetic", "ecg_synthetic"}
    eeg = corpora["eeg_synthetic"]
    spec = next(s for s in load_sources(resolve_sources("synthetic")) if s.name == "eeg_synthetic")
    path = synthetic_root / "eeg" / "S001R01_imagery_raw.fif"
    rec = preprocess(read_source(path, spec.sources[0], "eeg", "eeg/S001R01_imagery_raw.fif"), spec.preset)
    expected = windows(rec, spec.preset, "events", spec.sources[0].event_map)
    stored = [row for row in eeg if row["source"] == str(path)]
    assert len(stored) == len(expected) > 0
    for row, window in zip(stored, expected):
        np.testing.assert_array_equal(row["signal"], window.data)  # bit-exact after reload
        assert row["label"] == window.label and row["window_start"] == window.start
        assert row["ch_names"] == rec.ch_names and row["sfreq"] == 200.0 and row["modality"] == "eeg"
        np.testing.assert_array_equal(row["scale_spread"], rec.scale_spread)
    assert {row["label"] for row in eeg} == {"rest", "left", "right", "eyes_open", "eyes_closed"}
    emg = corpora["emg_synthetic"]
    assert emg[0]["signal"].shape == (32, 2000) and any(row["events"] for row in emg)


def test_rerun_skips_finished_shards_and_rebuilds_changed_ones(synthetic_root, tmp_path):
    spec = next(s for s in load_sources(resolve_sources("synthetic")) if s.name == "eeg_synthetic")
    spec.files_per_shard = 3
    root = tmp_path / "data"
    (root / "eeg").mkdir(parents=True)
    for f in (synthetic_root / "eeg").glob("*.fif"):
        (root / "eeg" / f.name).write_bytes(f.read_bytes())
    first = prepare_corpus(spec, root, tmp_path / "out", progress=False)
    assert first.shards_written == 2 and first.shards_skipped == 0
    again = prepare_corpus(spec, root, tmp_path / "out", progress=False)
    assert again.shards_written == 0 and again.shards_skipped == 2 and again.n_windows == first.n_windows
    write_eeg_fif(root / "eeg" / "S001R01_imagery_raw.fif", make_eeg_run(7, 7, "imagery", 12.0))
    changed = prepare_corpus(spec, root, tmp_path / "out", progress=False)
    assert changed.shards_written == 1 and changed.shards_skipped == 1
    assert len(list((tmp_path / "out" / "eeg_synthetic").glob("shard-*.arrow"))) == 2  # stale shard removed
    assert len(Corpus(tmp_path / "out" / "eeg_synthetic")) == changed.n_windows


def test_bad_file_raises_without_leftovers_or_is_skipped_and_listed(synthetic_root, tmp_path):
    spec = next(s for s in load_sources(resolve_sources("synthetic")) if s.name == "eeg_synthetic")
    spec.sources = spec.sources[:1]  # imagery runs only
    root = tmp_path / "data"
    (root / "eeg").mkdir(parents=True)
    good = synthetic_root / "eeg" / "S001R01_imagery_raw.fif"
    (root / "eeg" / good.name).write_bytes(good.read_bytes())
    bad_run = make_eeg_run(1, 1, "imagery", 12.0)
    bad_run.data_uv[3, 100:200] = np.nan
    write_eeg_fif(root / "eeg" / "S002R01_imagery_raw.fif", bad_run)
    with pytest.raises(BiosignalError, match=r"S002R01_imagery_raw.fif: data: bad channels: F3: NaN/Inf"):
        prepare_corpus(spec, root, tmp_path / "out", progress=False)
    leftovers = list((tmp_path / "out" / "eeg_synthetic").iterdir())
    assert leftovers == []  # nothing half-written
    report = prepare_corpus(spec, root, tmp_path / "out", on_error="skip", progress=False)
    assert len(report.skipped_files) == 1 and "S002R01" in report.skipped_files[0]["file"]
    manifest = json.loads((tmp_path / "out" / "eeg_synthetic" / "corpus.json").read_text())
    assert manifest["skipped"][0]["error"].endswith("NaN/Inf from sample 100 (0.400 s)")
    assert {r["subject"] for r in Corpus(tmp_path / "out" / "eeg_synthetic")} == {"001"}


def test_prepare_the_shared_real_recordings(real, tmp_path):
    reports = {
        r.name: r
        for r in run(PrepareArgs(sources="shared_real", root=str(real), out=str(tmp_path), progress=False))
    }
    assert set(reports) == {"eegbci", "grabmyo", "myo", "ecg"}
    assert all(not r.skipped_files for r in reports.values())
    corpora = load_corpora(tmp_path)
    eeg = corpora["eegbci"]
    labels = Counter(eeg.column("label"))
    assert set(labels) == {"rest", "left", "right", "eyes_open", "eyes_closed"}
    assert labels["eyes_open"] == labels["eyes_closed"] == 3 * 15  # 61 s runs -> 15 windows of 4 s
    assert set(eeg.column("subject")) == {"001", "002", "003"}
    assert eeg[0]["signal"].shape == (64, 800)
    grab = corpora["grabmyo"]
    assert Counter(grab.column("label")) == {
        "wrist_extension": 6,
        "wrist_flexion": 6,
        "hand_open": 6,
        "hand_close": 6,
    }
    assert grab[0]["signal"].shape == (28, 2000) and grab[0]["sfreq"] == 1000.0
    myo = corpora["myo"]
    assert set(myo.column("subject")) == {"Female0", "Female1", "Male0", "Male1", "libemg"}
    assert "hand_close" in set(myo.column("label")) and myo[0]["signal"].shape == (8, 400)
    ecg = corpora["ecg"]
    assert {r["n_channels"] for r in ecg} == {2, 15}
    beats = sum(len(r["events"]) for r in ecg if r["n_channels"] == 2)
    assert 2000 < beats < 2274  # every beat of whole windows (the trailing partial window is dropped)


def test_mixed_corpus_follows_weights_and_resumes_exactly(synthetic_corpora):
    corpora = load_corpora(synthetic_corpora)
    mixed = MixedCorpus(
        corpora, {"eeg_synthetic": 0.6, "emg_synthetic": 0.3, "ecg_synthetic": 0.1}, batch_size=4, seed=3
    )
    picks = Counter(mixed.next_indices()[0] for _ in range(2000))
    assert picks["eeg_synthetic"] / 2000 == pytest.approx(0.6, abs=0.04)
    assert picks["ecg_synthetic"] / 2000 == pytest.approx(0.1, abs=0.03)
    state = mixed.state_dict()
    ahead = [mixed.next_indices() for _ in range(20)]
    resumed = MixedCorpus(
        corpora, {"eeg_synthetic": 0.6, "emg_synthetic": 0.3, "ecg_synthetic": 0.1}, batch_size=4, seed=3
    )
    resumed.load_state_dict(json.loads(json.dumps(state)))  # the state survives JSON
    assert [resumed.next_indices() for _ in range(20)] == ahead
    # each window once per epoch
    only_ecg = MixedCorpus({"ecg_synthetic": corpora["ecg_synthetic"]}, batch_size=1, seed=0)
    n = len(corpora["ecg_synthetic"])
    seen = [only_ecg.next_indices()[1][0] for _ in range(n)]
    assert sorted(seen) == list(range(n))
    batch = next(iter(mixed))
    assert batch["signal"].shape[0] == 4 and batch["channel_mask"].all()


def test_ranks_take_disjoint_parts_of_every_epoch(synthetic_corpora):
    """Data parallelism: two ranks with one seed choose the same corpus each step and, together,
    visit every window of an epoch exactly once (before, each rank permuted the whole corpus)."""
    corpora = load_corpora(synthetic_corpora)
    weights = {"eeg_synthetic": 0.5, "ecg_synthetic": 0.5}
    ranks = [MixedCorpus(corpora, weights, batch_size=3, seed=7, rank=r, world_size=2) for r in (0, 1)]
    single = MixedCorpus(corpora, weights, batch_size=6, seed=7)
    seen = {name: [] for name in weights}
    for _ in range(40):
        (name0, part0), (name1, part1) = (r.next_indices() for r in ranks)
        assert name0 == name1
        if len(corpora[name0]) >= 6:  # a smaller corpus wraps into its next epoch within one batch
            assert not set(part0) & set(part1)
        assert part0 + part1 == single.next_indices()[1]  # one global batch of 2 x 3, split in two
        seen[name0] += part0 + part1
    for name, order in seen.items():
        n = len(corpora[name])
        assert len(order) >= n and sorted(order[:n]) == list(range(n))
    assert ranks[0].state_dict() == ranks[1].state_dict()  # one position, kept by every rank
    with pytest.raises(ConfigError, match="rank"):
        MixedCorpus(corpora, weights, rank=2, world_size=2)


def test_collate_pads_montages():
    items = [
        {
            "signal": np.ones((3, 10), np.float32),
            "ch_pos": np.zeros((3, 3), np.float32),
            "ch_names": list("abc"),
            "modality": "eeg",
            "sfreq": 200.0,
            "label": "x",
            "subject": "1",
        },
        {
            "signal": np.ones((5, 10), np.float32),
            "ch_pos": np.zeros((5, 3), np.float32),
            "ch_names": list("abcde"),
            "modality": "eeg",
            "sfreq": 200.0,
            "label": "y",
            "subject": "2",
        },
    ]
    batch = collate_windows(items)
    assert batch["signal"].shape == (2, 5, 10) and batch["channel_mask"].sum().item() == 8
    assert batch["signal"][0, 3:].abs().sum() == 0


def test_cli_help_and_clear_errors(tmp_path):
    for cmd in (
        ["biotok", "--help"],
        ["biotok", "prepare", "--help"],
        [sys.executable, "-m", "data_prep.prepare", "--help"],
        # a module its package imports ran twice under -m (runpy's RuntimeWarning in every GPU log)
        [sys.executable, "-W", "error::RuntimeWarning", "-m", "foundation.tokens", "--help"],
    ):
        out = subprocess.run(cmd, capture_output=True, text=True)
        assert out.returncode == 0, out.stderr
        assert "RuntimeWarning" not in out.stderr, cmd
    assert "prepare" in subprocess.run(["biotok", "--help"], capture_output=True, text=True).stdout
    bad = subprocess.run(
        ["biotok", "prepare", "--sources", "nope", "--out", str(tmp_path)], capture_output=True, text=True
    )
    assert bad.returncode == 2 and "nope" in bad.stderr and "Traceback" not in bad.stderr
