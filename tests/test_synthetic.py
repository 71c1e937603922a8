import numpy as np
from scipy import signal as sps

from data_prep.emg2qwerty import read_session, read_split
from data_prep.synthetic import key_pattern, make_ecg, make_eeg_run, make_emg_session


def band_power(x, sfreq, low, high):
    freqs, psd = sps.welch(x, sfreq, nperseg=int(sfreq))
    return psd[..., (freqs >= low) & (freqs <= high)].mean(axis=-1)


def test_generators_are_deterministic():
    a, b = make_eeg_run(1, 2), make_eeg_run(1, 2)
    np.testing.assert_array_equal(a.data_uv, b.data_uv)
    assert a.events == b.events
    np.testing.assert_array_equal(make_emg_session(0, 1, 8.0).emg_left, make_emg_session(0, 1, 8.0).emg_left)
    assert not np.array_equal(make_eeg_run(1, 2).data_uv, make_eeg_run(2, 2).data_uv)


def test_eeg_has_1_over_f_alpha_and_lateralised_erd():
    run = make_eeg_run(0, 0, "imagery", 120.0)
    sfreq, names = run.sfreq, run.ch_names
    # 1/f background: power falls with frequency
    p = (
        band_power(run.data_uv[names.index("Fz")], sfreq, 2, 4),
        band_power(run.data_uv[names.index("Fz")], sfreq, 30, 40),
    )
    assert p[0] > 5 * p[1]
    c3, c4 = names.index("C3"), names.index("C4")
    mu = {"T0": [], "T1": [], "T2": []}
    for onset, duration, kind in run.events:
        seg = run.data_uv[:, int((onset + 1) * sfreq) : int((onset + duration) * sfreq)]
        mu[kind].append(band_power(seg[[c3, c4]], sfreq, 8, 30))
    rest, left, right = (np.mean(mu[k], axis=0) for k in ("T0", "T1", "T2"))
    assert (
        left[1] < 0.7 * rest[1] and left[0] > 0.8 * rest[0]
    )  # left fist: right hemisphere (C4) desynchronises
    assert right[0] < 0.7 * rest[0] and right[1] > 0.8 * rest[1]
    opened, closed = make_eeg_run(0, 100, "eyes_open", 30.0), make_eeg_run(0, 100, "eyes_closed", 30.0)
    oz = names.index("Oz")
    assert band_power(closed.data_uv[oz], sfreq, 8, 12) > 3 * band_power(opened.data_uv[oz], sfreq, 8, 12)


def test_emg_bursts_are_keystroke_locked_and_key_specific():
    session = make_emg_session(1, 0, 40.0)
    emg, t0 = session.emg(), session.time[0]
    keys = [k for k in session.keystrokes if 0.2 < k.start - t0 < 39.8]
    assert len(keys) > 100
    assert {"Key.space", "Key.enter"} <= {k.key for k in keys}

    def rms_at(time):
        i = int((time - t0) * 2000)
        return np.sqrt((emg[:, i - 140 : i + 80] ** 2).mean(axis=1))

    locked = np.mean([rms_at(k.start) for k in keys], axis=0).mean()
    quiet = np.sqrt((emg[:, : int(0.8 * 2000)] ** 2).mean())  # before the first prompt starts
    assert locked > 2 * quiet
    # keys are identifiable from the spatial pattern: leave-one-out nearest centroid of burst energy
    energy = np.stack([rms_at(k.start) ** 2 for k in keys])
    energy /= np.linalg.norm(energy, axis=1, keepdims=True)
    labels = np.array([k.key for k in keys])
    correct = total = 0
    for i, key in enumerate(labels):
        others = np.arange(len(keys)) != i
        typed = sorted(set(labels[others]))
        if (labels[others] == key).sum() < 2:
            continue
        centroids = np.stack([energy[others & (labels == t)].mean(axis=0) for t in typed])
        correct += typed[int(np.argmax(centroids @ energy[i]))] == key
        total += 1
    assert total > 80 and correct / total > 0.5  # chance is below 1 / 20
    assert len(set(labels)) > 20
    assert not np.allclose(key_pattern("a"), key_pattern("b"))


def test_ecg_beats_match_annotations():
    data, beats = make_ecg(0, 30.0)
    sfreq = 360.0
    peaks, _ = sps.find_peaks(data[0], height=600, distance=int(0.3 * sfreq))
    normal = [t for t, kind in beats if kind == "N"]
    assert abs(len(peaks) - len(beats)) <= 2
    assert all(np.min(np.abs(peaks / sfreq - t)) < 0.02 for t in normal)
    assert 55 <= 60 * len(beats) / 30.0 <= 110


def test_default_dataset_files(synthetic_root):
    folder = synthetic_root / "emg2qwerty"
    sessions = sorted(folder.glob("*.hdf5"))
    assert len(sessions) == 6
    s = read_session(sessions[0])
    assert s.prompts and s.prompts[0].text and s.keystrokes
    generic = read_split(folder / "splits" / "generic.yaml")
    personal = read_split(folder / "splits" / "user0.yaml")
    assert set(generic.test).isdisjoint(generic.train) and personal.user == s.user
    assert (folder / "metadata.csv").exists()
    assert len(list((synthetic_root / "eeg").glob("*.fif"))) == 2 * (1 + 2)


def test_hard_emg_tier_has_real_semg_spectra_and_per_user_patterns(tmp_path):
    from scipy import signal as sps

    from data_prep.emg2qwerty import read_session
    from data_prep.synthetic import SEMG_PSD_DB, SyntheticConfig, make_hard_emg_session, write_default_dataset

    session = make_hard_emg_session(2, 0, 40.0)
    np.testing.assert_array_equal(session.emg_left, make_hard_emg_session(2, 0, 40.0).emg_left)
    # the spectrum measured on GRABMyo, relative to 70 Hz, within 2 dB from 20 to 600 Hz
    freqs, power = sps.welch(session.emg(), fs=2000, nperseg=1024, axis=1)
    db = 10 * np.log10(power.mean(axis=0))
    for hz in (20, 45, 110, 220, 350, 450, 600):
        relative = np.interp(hz, freqs, db) - np.interp(70, freqs, db)
        assert abs(relative - SEMG_PSD_DB[hz]) < 2.0, hz

    def key_energy(sess):  # mean burst energy per electrode, per key pressed at least 3 times
        emg, t0, out = sess.emg(), sess.time[0], {}
        for k in sess.keystrokes:
            i = int((k.start - t0) * 2000)
            if 200 < i < emg.shape[1] - 200:
                out.setdefault(k.key, []).append((emg[:, i - 140 : i + 80] ** 2).mean(axis=1))
        return {key: np.mean(v, axis=0) for key, v in out.items() if len(v) >= 3}

    a0, a1, b0 = (key_energy(make_hard_emg_session(u, s, 60.0)) for u, s in ((1, 0), (1, 1), (3, 0)))
    keys = sorted(set(a0) & set(a1) & set(b0))
    assert len(keys) >= 10

    def similarity(x, y):
        return np.mean([np.corrcoef(np.log(x[k]), np.log(y[k]))[0, 1] for k in keys])

    # a user's keys look alike across sessions (band shifted), another user's do not: a generic model
    # must learn the shared key structure under each user's mixing
    assert similarity(a0, a1) > similarity(a0, b0) + 0.3
    medians = [
        np.median(np.diff([k.start for k in make_hard_emg_session(u, 0, 30.0).keystrokes])) for u in range(4)
    ]
    assert max(medians) - min(medians) > 0.03  # each user types at their own speed
    config = SyntheticConfig(eeg_subjects=0, ecg_records=0, emg_users=2, emg_sessions=1, emg_session_s=8.0)
    config.emg_tier = "hard"
    root = write_default_dataset(tmp_path, config, progress=False)
    written = read_session(root / "emg2qwerty" / "synthetic-01-00.hdf5")
    assert written.extra_attrs.get("synthetic_tier") == "hard"
    np.testing.assert_allclose(written.emg_left, make_hard_emg_session(1, 0, 8.0).emg_left)
