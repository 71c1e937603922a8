import numpy as np
import pytest

from data_prep.errors import BiosignalError, ConfigError
from data_prep.presets import PRESETS, get_preset, patchify, preprocess, unscale, windows
from data_prep.readers import read_mne
from data_prep.recording import Event, Recording


def sines(freqs_amps, sfreq=500.0, seconds=20.0, n_channels=2, modality="eeg", names=None, unit="uV"):
    t = np.arange(int(sfreq * seconds)) / sfreq
    x = sum(a * np.sin(2 * np.pi * f * t) for f, a in freqs_amps)
    noise = (
        1e-3 * max(a for _, a in freqs_amps) * np.random.default_rng(0).standard_normal((n_channels, t.size))
    )
    data = np.tile(x, (n_channels, 1)) + noise
    return Recording(
        data.astype(np.float32), sfreq, names or [f"ch{i}" for i in range(n_channels)], unit, modality
    )


def band_amplitude(x, sfreq, f):
    spectrum = np.abs(np.fft.rfft(x)) * 2 / len(x)
    freqs = np.fft.rfftfreq(len(x), 1 / sfreq)
    return spectrum[np.abs(freqs - f) < 0.3].max()


def test_eeg_preset_resamples_filters_and_scales():
    rec = sines([(10.0, 50.0), (60.0, 50.0), (70.0, 50.0)], names=["C3", "C4"])
    out = preprocess(rec, "eeg")
    assert out.sfreq == 200.0 and out.n_times == 4000 and out.unit == "uV"
    uv = unscale(out.data, out.scale_center, out.scale_spread)[0, 400:-400]
    assert band_amplitude(uv, 200.0, 10.0) == pytest.approx(50.0, rel=0.05)  # in band: kept, in µV
    assert band_amplitude(uv, 200.0, 60.0) < 0.5  # mains: notched and above the 45 Hz edge
    assert band_amplitude(uv, 200.0, 70.0) < 0.5
    np.testing.assert_allclose(out.scale_spread, 100.0)  # LaBraM-style µV / 100


def test_units_are_converted_to_microvolts():
    volts = sines([(10.0, 50e-6)], unit="V", names=["C3", "C4"])
    out = preprocess(volts, "eeg")
    uv = unscale(out.data, out.scale_center, out.scale_spread)[0, 400:-400]
    assert band_amplitude(uv, 200.0, 10.0) == pytest.approx(50.0, rel=0.05)


def test_robust_scaling_stores_statistics():
    rec = sines([(100.0, 3.0)], sfreq=2000.0, modality="emg", unit="adu")
    rec.data[1] *= 10
    out = preprocess(rec, get_preset({"base": "emg", "clip": None}))
    assert out.unit == "adu"  # no physical unit is invented
    q75, q25 = np.percentile(out.data, [75, 25], axis=1)
    np.testing.assert_allclose((q75 - q25) / 1.349, 1.0, rtol=1e-3)
    assert out.scale_spread[1] == pytest.approx(10 * out.scale_spread[0], rel=0.01)


def test_real_eeg_names_standardised_with_positions(real):
    out = preprocess(read_mne(real / "eegbci" / "S001R01.edf", "eeg"), "eeg")
    assert out.ch_names[:4] == ["FC5", "FC3", "FC1", "FCz"] and "Iz" in out.ch_names
    assert np.isfinite(out.ch_pos).all() and out.ch_pos.shape == (64, 3)
    assert out.sfreq == 200.0 and out.n_times == 61 * 200


def test_bad_signals_are_refused_with_channel_and_sample():
    rec = sines([(10.0, 50.0)], n_channels=3, names=["C3", "Cz", "C4"])
    rec.data[1, 1234] = np.nan
    with pytest.raises(BiosignalError, match=r"Cz: NaN/Inf from sample 1234"):
        preprocess(rec, "eeg")
    rec.data[1, 1234] = 0
    rec.data[2] = 7.0
    with pytest.raises(BiosignalError, match=r"C4: flat"):
        preprocess(rec, "eeg")
    kept = preprocess(rec, get_preset({"base": "eeg", "bad_channels": "drop"}))
    assert kept.ch_names == ["C3", "Cz"]
    rec.data[2] = np.clip(rec.data[0], -0.8 * np.abs(rec.data[0]).max(), None)  # a saturated negative swing
    with pytest.raises(BiosignalError, match=r"C4: clipped: \d+\.\d% of samples held at its extreme"):
        preprocess(rec, "eeg")


def test_rate_channels_length_and_modality_are_checked():
    with pytest.raises(BiosignalError, match="below the 900.0 Hz"):
        preprocess(sines([(10.0, 1.0)], sfreq=500.0, modality="emg", unit="adu"), "emg")
    with pytest.raises(BiosignalError, match=r"missing required channels \['Oz'\]"):
        preprocess(
            sines([(10.0, 1.0)], names=["C3", "C4"]),
            get_preset({"base": "eeg", "required_channels": ["C3", "Oz"]}),
        )
    with pytest.raises(BiosignalError, match="shorter than one"):
        preprocess(sines([(10.0, 1.0)], seconds=0.5), "eeg")
    with pytest.raises(BiosignalError, match="preset 'ecg' is for ecg"):
        preprocess(sines([(10.0, 1.0)]), "ecg")
    with pytest.raises(BiosignalError, match="sfreq"):
        Recording(np.zeros((1, 10)), 0.0, ["a"], "uV", "eeg")


def test_preset_config_validation():
    with pytest.raises(ConfigError, match="whole number"):
        get_preset({"base": "eeg", "window_s": 4.1})
    with pytest.raises(ConfigError, match="unknown fields"):
        get_preset({"base": "eeg", "windw_s": 4})
    with pytest.raises(ConfigError, match="unknown preset"):
        get_preset("meg")
    assert set(PRESETS) >= {"eeg", "emg", "emg_200hz", "ecg"}


def test_patchify():
    x = np.arange(2 * 3 * 10).reshape(2, 3, 10)
    p = patchify(x, 5)
    assert p.shape == (2, 3, 2, 5) and (p[1, 2, 1] == x[1, 2, 5:]).all()
    padded = patchify(np.ones((3, 12)), 5, pad=True)
    assert padded.shape == (3, 3, 5) and padded[:, 2, 2:].sum() == 0
    with pytest.raises(BiosignalError):
        patchify(np.ones((3, 12)), 5)


def test_windows_take_labels_from_events():
    rec = sines([(10.0, 1.0)], sfreq=200.0, seconds=12.0).replace(
        events=[Event(0.0, 4.0, "T0"), Event(4.0, 4.2, "T1"), Event(8.2, 3.8, "T2")]
    )
    preset = PRESETS["eeg"]
    ws = windows(rec, preset, "events", {"T1": "left", "T2": "right"})
    assert [w.label for w in ws] == ["", "left", "right"]
    assert ws[1].start == 4.0 and ws[1].data.shape == (2, 800)
    assert [e["description"] for e in ws[1].events] == ["T1"]
    assert [e["description"] for e in ws[2].events] == ["T1", "T2"] and ws[2].events[1][
        "onset"
    ] == pytest.approx(0.2)


def test_ecg_in_1s_patches_holds_whole_beats_at_eegs_bit_rates():
    """`ecg_1s`, the packaged sources' ECG preset: every patch of a 60-90 bpm ECG holds an R peak (the
    0.2 s patch of `ecg` mostly does not), and a token costs ECG what it costs EEG per channel-second."""
    from data_prep.synthetic import make_ecg
    from tokenizer.config import TokenizerConfig

    data, beats = make_ecg(0, 30.0)
    rec = Recording(data, 360.0, ["MLII", "V5"], "uV", "ecg")
    r_peaks = np.array([t for t, _ in beats])

    def share_with_peak(name: str) -> float:
        patch_s = PRESETS[name].patch_s
        starts = np.arange(preprocess(rec, name).n_times // PRESETS[name].patch_len) * patch_s
        return float(np.mean([np.any((r_peaks >= s) & (r_peaks < s + patch_s)) for s in starts]))

    assert share_with_peak("ecg_1s") == 1.0 and share_with_peak("ecg") < 0.4
    assert "ecg_1s" in TokenizerConfig.from_size("tiny").modalities  # the default presets
    config = TokenizerConfig.from_size("tiny", presets=["eeg", "ecg", "ecg_1s"])
    assert config.bits_per_channel_second("ecg_1s") == config.bits_per_channel_second("eeg")
    assert config.bits_per_channel_second("ecg") == 5 * config.bits_per_channel_second("eeg")
