import shutil
from collections import Counter

import h5py
import numpy as np
import pytest

from data_prep.emg2qwerty import (
    CH_NAMES,
    Split,
    read_metadata,
    read_session,
    read_split,
    write_metadata,
    write_session,
    write_split,
)
from data_prep.errors import BiosignalError
from data_prep.readers import check_edf_size, read_array, read_mne, read_wfdb
from data_prep.synthetic import make_emg_session

MYO_CH = [f"myo_{i}" for i in range(1, 9)]


def test_mne_reads_real_edf_with_events_in_microvolts(real):
    rec = read_mne(real / "eegbci" / "S001R04.edf", "eeg", subject="1")
    assert rec.data.shape == (64, 20000) and rec.sfreq == 160.0 and rec.unit == "uV"
    assert rec.ch_names[:2] == ["Fc5.", "Fc3."] and set(rec.ch_types) == {"eeg"}
    assert Counter(e.description for e in rec.events) == {"T0": 15, "T2": 7, "T1": 8}
    assert rec.events[1].onset == pytest.approx(4.2)
    # the file stores µV; EEG std of tens of µV means no V/µV mix-up
    assert 10 < rec.data.std() < 200


def test_edf_size_check_refuses_truncated_and_line_ending_mangled(real, tmp_path):
    src = real / "eegbci" / "S001R01.edf"
    check_edf_size(src)
    truncated = tmp_path / "truncated.edf"
    truncated.write_bytes(src.read_bytes()[:-1000])
    with pytest.raises(BiosignalError, match="truncated") as err:
        read_mne(truncated, "eeg")
    assert "truncated.edf" in str(err.value) and err.value.field == "size"
    mangled = tmp_path / "crlf.edf"
    mangled.write_bytes(src.read_bytes().replace(b"\n", b"\r\n"))
    with pytest.raises(BiosignalError, match="extra bytes"):
        read_mne(mangled, "eeg")
    empty = tmp_path / "empty.edf"
    empty.write_bytes(b"")
    with pytest.raises(BiosignalError, match="empty"):
        read_mne(empty, "eeg")


def test_wfdb_ecg_with_beat_annotations(real):
    rec = read_wfdb(real / "mitdb" / "100", "ecg")
    assert rec.ch_names == ["MLII", "V5"] and rec.sfreq == 360.0 and rec.data.shape == (2, 650000)
    counts = Counter(e.description for e in rec.events)
    assert counts["N"] == 2239 and counts["A"] == 33 and sum(counts.values()) == 2274
    # R waves of about 1 mV, now in µV
    assert 500 < np.percentile(rec.data[0], 99.9) - np.median(rec.data[0]) < 5000
    ptb = read_wfdb(real / "ptbdb" / "s0010_re.hea", "ecg", annotation=None)
    assert ptb.data.shape == (15, 38400) and ptb.sfreq == 1000.0 and ptb.ch_names[-1] == "vz"


def test_wfdb_emg_drops_unused_inputs_and_refuses_truncated(real, tmp_path):
    rec = read_wfdb(
        real / "grabmyo" / "session1_participant1_gesture11_trial1", "emg", exclude=["U1", "U2", "U3", "U4"]
    )
    assert rec.data.shape == (28, 10240) and rec.sfreq == 2048.0
    forearm_rms_mv = np.sqrt((rec.data[:16].astype(np.float64) ** 2).mean()) / 1000
    assert forearm_rms_mv == pytest.approx(0.2013, abs=0.002)  # the README's verified figure
    for suffix in (".hea", ".dat"):
        shutil.copy(
            real / "grabmyo" / f"session1_participant1_gesture11_trial1{suffix}", tmp_path / f"r{suffix}"
        )
    (tmp_path / "r.dat").write_bytes((tmp_path / "r.dat").read_bytes()[:-5000])
    (tmp_path / "r.hea").write_text(
        (tmp_path / "r.hea").read_text().replace("session1_participant1_gesture11_trial1", "r")
    )
    with pytest.raises(BiosignalError, match="truncated"):
        read_wfdb(tmp_path / "r", "emg")


def test_array_readers_real_myo_csv_and_binary(real, tmp_path):
    csv = read_array(real / "libemg_onesubject_myo" / "trial_1" / "R_0_C_3.csv", 200, MYO_CH, "adu", "emg")
    assert csv.data.shape[0] == 8 and 598 <= csv.data.shape[1] <= 610
    assert csv.data.min() >= -128 and csv.data.max() <= 127
    dat = read_array(
        real / "myo-armband" / "PreTrainingDataset" / "Male0" / "training0" / "classe_5.dat",
        200,
        MYO_CH,
        "adu",
        "emg",
        dtype="<i2",
    )
    assert dat.data.shape[0] == 8 and 990 <= dat.data.shape[1] <= 1010
    with pytest.raises(BiosignalError, match="layout='channels_times'"):
        np.save(tmp_path / "x.npy", np.zeros((8, 100)))
        read_array(tmp_path / "x.npy", 200, MYO_CH, "adu", "emg")
    ok = read_array(tmp_path / "x.npy", 200, MYO_CH, "adu", "emg", layout="channels_times")
    assert ok.data.shape == (8, 100)
    np.savez(tmp_path / "two.npz", a=np.zeros((100, 8)), b=np.ones((100, 8)))
    with pytest.raises(BiosignalError, match="key="):
        read_array(tmp_path / "two.npz", 200, MYO_CH, "adu", "emg")
    assert read_array(tmp_path / "two.npz", 200, MYO_CH, "adu", "emg", key="b").data.mean() == 1.0
    with pytest.raises(BiosignalError, match="dtype"):
        read_array(
            real / "myo-armband" / "PreTrainingDataset" / "Male0" / "training0" / "classe_5.dat",
            200,
            MYO_CH,
            "adu",
            "emg",
        )
    with pytest.raises(BiosignalError, match="unit"):
        read_array(tmp_path / "x.npy", 200, MYO_CH, "furlongs", "emg", layout="channels_times")
    with pytest.raises(BiosignalError, match="duplicated"):
        read_array(tmp_path / "x.npy", 200, ["a"] * 8, "adu", "emg", layout="channels_times")


@pytest.fixture
def session():
    return make_emg_session(3, 1, duration_s=8.0)


def test_emg2qwerty_round_trip(session, tmp_path):
    path = tmp_path / "s.hdf5"
    write_session(path, session)
    back = read_session(path)
    assert back.session_name == session.session_name and back.user == session.user
    np.testing.assert_array_equal(back.emg_left, session.emg_left)
    np.testing.assert_array_equal(back.emg_right, session.emg_right)
    np.testing.assert_array_equal(back.time, session.time)
    assert back.keystrokes == session.keystrokes and back.prompts == session.prompts
    assert back.extra_attrs["daq_sample_rate"] == 2000  # extra attributes are tolerated and kept
    rec = back.to_recording()
    assert rec.ch_names == CH_NAMES and rec.sfreq == 2000.0 and rec.unit == "adu"
    np.testing.assert_array_equal(rec.data[:16], session.emg_left.T)
    assert rec.events[0].description == session.keystrokes[0].key


def test_emg2qwerty_fields_read_by_name_not_position(session, tmp_path):
    path = tmp_path / "reordered.hdf5"
    dtype = np.dtype([("time", "<f8"), ("emg_left", "<f4", (16,)), ("emg_right", "<f4", (16,))])
    ts = np.empty(len(session.time), dtype)
    ts["time"], ts["emg_left"], ts["emg_right"] = session.time, session.emg_left, session.emg_right
    write_session(tmp_path / "ref.hdf5", session)
    with h5py.File(tmp_path / "ref.hdf5") as ref, h5py.File(path, "w") as f:
        g = f.create_group("emg2qwerty")
        g.create_dataset("timeseries", data=ts)
        for k, v in ref["emg2qwerty"].attrs.items():
            g.attrs[k] = v
    back = read_session(path)
    np.testing.assert_array_equal(back.emg_left, session.emg_left)
    np.testing.assert_array_equal(back.emg_right, session.emg_right)


def _edit(path, fn):
    with h5py.File(path, "a") as f:
        fn(f)


@pytest.mark.parametrize(
    "mutate, field",
    [
        (lambda f: f["emg2qwerty"].attrs.__delitem__("keystrokes"), "attrs"),
        (lambda f: f["emg2qwerty"].attrs.__setitem__("keystrokes", "[{not json"), "keystrokes"),
        (
            lambda f: f["emg2qwerty"].attrs.__setitem__(
                "keystrokes", '[{"key": "a", "start": 1.0, "end": 1.1}]'
            ),
            "keystrokes[0]",
        ),
        (lambda f: f["emg2qwerty"].attrs.__setitem__("prompts", '[{"start": 1.0}]'), "prompts[0]"),
        (lambda f: f.move("emg2qwerty", "other"), "emg2qwerty"),
        (
            lambda f: (
                f["emg2qwerty"].__delitem__("timeseries"),
                f["emg2qwerty"].create_dataset("timeseries", data=np.zeros((10, 33))),
            )[1],
            "timeseries",
        ),
    ],
)
def test_emg2qwerty_refuses_bad_files(session, tmp_path, mutate, field):
    path = tmp_path / "bad.hdf5"
    write_session(path, session)
    _edit(path, mutate)
    with pytest.raises(BiosignalError) as err:
        read_session(path)
    assert "bad.hdf5" in str(err.value) and field in err.value.field


def test_emg2qwerty_refuses_truncated_and_empty(session, tmp_path):
    path = tmp_path / "t.hdf5"
    write_session(path, session)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(BiosignalError, match="truncated"):
        read_session(path)
    (tmp_path / "e.hdf5").write_bytes(b"")
    with pytest.raises(BiosignalError, match="empty"):
        read_session(tmp_path / "e.hdf5")


def test_emg2qwerty_metadata_and_split_round_trip(session, tmp_path):
    write_metadata(tmp_path / "metadata.csv", [session])
    rows = read_metadata(tmp_path / "metadata.csv")
    assert rows[0]["session"] == session.session_name and int(rows[0]["num_keystrokes"]) == len(
        session.keystrokes
    )
    split = Split(train=["a", "b"], val=["c"], test=["d"], user="42")
    write_split(tmp_path / "user0.yaml", split, {k: "42" for k in "abcd"})
    assert read_split(tmp_path / "user0.yaml") == split
    (tmp_path / "bad.yaml").write_text("dataset: [1, 2]\n")
    with pytest.raises(BiosignalError, match="dataset"):
        read_split(tmp_path / "bad.yaml")
