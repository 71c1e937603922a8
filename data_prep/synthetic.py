"""Deterministic synthetic recordings with realistic spectra and labels: the main job's default data.

Everything is written in real file formats so the default pipeline exercises the same readers as
real data: EEG and ECG as MNE FIF files with annotations, sEMG as emg2qwerty HDF5 sessions with
`metadata.csv` and split lists. Amplitudes (documented in docs/DATA.md):
- EEG: 1/f background ~20 µV RMS in the 0.5-45 Hz band, posterior alpha ~10 µV (x3 with eyes closed), sensorimotor
  mu (10-12 Hz) and beta (18-24 Hz) rhythms that drop by 60% over the hemisphere opposite the
  imagined fist (event-related desynchronisation). Events T0 rest, T1 left fist, T2 right fist, as
  in PhysioNet's EEGBCI.
- sEMG (emg2qwerty layout, 2 kHz, 2 x 16 electrodes, arbitrary units like the real files):
  background ~1 RMS, keystroke-locked bursts ~6 RMS whose spatial pattern over the 32 electrodes is
  fixed per key (on the wrist of the hand that types it on QWERTY), with per-session electrode
  rotation of up to one electrode.
- ECG: two leads (MLII, V5) at 360 Hz, P-QRS-T beats with R ~1.2 mV, heart-rate variability,
  occasional premature ventricular beats (annotation "V", else "N"), baseline wander and noise.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import signal as sps

from .emg2qwerty import Keystroke, Prompt, Session, Split, write_metadata, write_session, write_split

EEG_CHANNELS = [
    "Fp1", "Fp2", "F7", "F3", "Fz", "F4", "F8", "FC5", "FC3", "FC1", "FC2", "FC4", "FC6", "T7", "C5", "C3",
    "C1", "Cz", "C2", "C4", "C6", "T8", "CP5", "CP3", "CP1", "CP2", "CP4", "CP6", "P3", "Pz", "P4", "O1", "Oz", "O2",
]  # fmt: skip
LEFT_HAND_KEYS = set("qwertasdfgzxcvb12345`~!@#$%QWERTASDFGZXCVB")

SENTENCES = [
    "the quick brown fox jumps over the lazy dog",
    "pack my box with five dozen liquor jugs",
    "how vexingly quick daft zebras jump",
    "we promptly judged antique ivory buckles for the next prize",
    "sphinx of black quartz, judge my vow.",
    "The five boxing wizards jump quickly!",
    "a wizard's job is to vex chumps quickly in fog",
    "Jackdaws love my big sphinx of quartz",
    "my meeting moved to 3pm, can we talk tomorrow?",
    "please send the report by Friday.",
    "It was 72 degrees and sunny all week",
    "call me when you get home, ok?",
]


def _rng(*keys) -> np.random.Generator:
    """A generator seeded by the keys, so each piece of data is reproducible on its own."""
    return np.random.default_rng(zlib.crc32(repr(keys).encode()))


def _colored_noise(rng: np.random.Generator, shape: tuple[int, int], exponent: float) -> np.ndarray:
    """Noise with power ~ 1/f^exponent along the last axis, unit variance per row."""
    n = shape[-1]
    spectrum = rng.standard_normal(shape[:-1] + (n // 2 + 1,)) + 1j * rng.standard_normal(
        shape[:-1] + (n // 2 + 1,)
    )
    freqs = np.fft.rfftfreq(n)
    freqs[0] = freqs[1]
    x = np.fft.irfft(spectrum * freqs ** (-exponent / 2), n=n)
    return x / x.std(axis=-1, keepdims=True)


def _band_noise(rng: np.random.Generator, n: int, sfreq: float, low: float, high: float) -> np.ndarray:
    """Unit-variance noise limited to [low, high] Hz: a rhythm that waxes and wanes like real ones."""
    sos = sps.butter(4, [low, high], btype="bandpass", fs=sfreq, output="sos")
    x = sps.sosfiltfilt(sos, rng.standard_normal(n + int(sfreq)))[int(sfreq) // 2 :][:n]
    return x / x.std()


# ---------------------------------------------------------------- EEG


@dataclass
class EEGRun:
    data_uv: np.ndarray  # (channels, times)
    sfreq: float
    ch_names: list[str]
    events: list[tuple[float, float, str]]  # onset s, duration s, description


def _spatial_weight(positions: np.ndarray, names: list[str], center: str, width: float) -> np.ndarray:
    c = positions[names.index(center)]
    return np.exp(-np.sum((positions - c) ** 2, axis=1) / (2 * width**2))


def make_eeg_run(
    subject: int, run: int, task: str = "imagery", duration_s: float = 60.0, sfreq: float = 250.0
) -> EEGRun:
    """One synthetic EEG run. task: "imagery" (T0 rest / T1 left / T2 right, 4 s each, alternating
    rest and imagery) or "eyes_open" / "eyes_closed" (one T0 event over the whole run)."""
    from .presets import eeg_positions

    rng = _rng("eeg", subject, run, task)
    subject_rng = _rng("eeg-subject", subject)
    names = list(EEG_CHANNELS)
    positions = eeg_positions(names)
    n = int(duration_s * sfreq)
    t = np.arange(n) / sfreq
    # background: spatially smooth 1/f activity (a few broad sources) plus local 1/f noise
    n_sources = 6
    mixing = subject_rng.standard_normal((len(names), n_sources)) * 0.5 + 0.6
    background = mixing @ _colored_noise(rng, (n_sources, n), 1.0) / np.sqrt(n_sources)
    background = 30.0 * background + 15.0 * _colored_noise(rng, (len(names), n), 1.6)
    alpha_peak = 9.0 + 2.5 * subject_rng.random()
    mu_peak = 10.5 + 1.5 * subject_rng.random()
    occipital = _spatial_weight(positions, names, "Oz", 0.04)
    left_motor = _spatial_weight(positions, names, "C3", 0.03)
    right_motor = _spatial_weight(positions, names, "C4", 0.03)
    alpha_gain = {"eyes_closed": 3.0}.get(task, 1.0)
    alpha = (
        10.0 * alpha_gain * occipital[:, None] * _band_noise(rng, n, sfreq, alpha_peak - 1, alpha_peak + 1)
    )
    # envelopes of the two hemispheres' sensorimotor rhythms: 1 at rest, 0.4 during contralateral imagery
    env_left_hemi = np.ones(n)
    env_right_hemi = np.ones(n)
    events: list[tuple[float, float, str]] = []
    if task == "imagery":
        onset, trial = 0.0, 0
        while onset + 4.0 <= duration_s:
            kind = "T0" if trial % 2 == 0 else rng.choice(["T1", "T2"])
            events.append((onset, 4.0, str(kind)))
            if kind != "T0":
                i0, i1 = int((onset + 0.5) * sfreq), int((onset + 4.0) * sfreq)
                ramp = 0.4 + 0.6 * np.exp(-np.arange(i1 - i0) / (0.3 * sfreq))
                # left fist (T1) desynchronises the right hemisphere (C4), right fist the left (C3)
                (env_right_hemi if kind == "T1" else env_left_hemi)[i0:i1] = ramp
            onset += 4.0
            trial += 1
    else:
        events.append((0.0, duration_s, "T0"))
    smooth = np.ones(int(0.2 * sfreq)) / int(0.2 * sfreq)
    env_left_hemi = np.convolve(env_left_hemi, smooth, mode="same")
    env_right_hemi = np.convolve(env_right_hemi, smooth, mode="same")
    rhythms = np.zeros((len(names), n))
    for weight, envelope in ((left_motor, env_left_hemi), (right_motor, env_right_hemi)):
        mu = 12.0 * _band_noise(rng, n, sfreq, mu_peak - 1, mu_peak + 1)
        beta = 4.0 * _band_noise(rng, n, sfreq, 18.0, 24.0)
        rhythms += weight[:, None] * (envelope * (mu + beta))[None, :]
    data = background + alpha + rhythms + 0.7 * rng.standard_normal((len(names), n))
    data += 3.0 * np.sin(2 * np.pi * 60.0 * t)[None, :]  # mains pick-up: the preset's notch removes it
    return EEGRun(data.astype(np.float32), sfreq, names, events)


def write_eeg_fif(path: str | Path, run: EEGRun) -> None:
    """Write a synthetic EEG run as an MNE FIF file (volts on disk, as FIF stores them)."""
    import mne

    info = mne.create_info(run.ch_names, run.sfreq, ch_types="eeg")
    raw = mne.io.RawArray(run.data_uv.astype(np.float64) * 1e-6, info, verbose="error")
    onsets, durations, descriptions = zip(*run.events) if run.events else ((), (), ())
    raw.set_annotations(mne.Annotations(list(onsets), list(durations), list(descriptions)))
    _save_fif(path, raw)


def _save_fif(path: str | Path, raw) -> None:
    """Save an MNE Raw atomically."""
    from .atomic import atomic_path

    with atomic_path(path) as tmp:
        # MNE insists on a FIF-like name; the temporary sibling keeps the suffix
        tmp_fif = tmp.with_name(tmp.name + "_raw.fif")
        raw.save(tmp_fif, overwrite=True, verbose="error")
        tmp_fif.rename(tmp)


# ---------------------------------------------------------------- ECG


def make_ecg(
    record: int, duration_s: float = 60.0, sfreq: float = 360.0
) -> tuple[np.ndarray, list[tuple[float, str]]]:
    """Two-lead ECG (MLII, V5) in µV and beat annotations (R-peak time s, "N" or "V")."""
    rng = _rng("ecg", record)
    n = int(duration_s * sfreq)
    t = np.arange(n) / sfreq
    heart_rate = 60 + 30 * rng.random()
    beats: list[tuple[float, str]] = []
    time = 0.4
    while time < duration_s - 0.5:
        kind = "V" if rng.random() < 0.03 else "N"
        beats.append((time, kind))
        rr = 60.0 / heart_rate * (1 + 0.05 * np.sin(2 * np.pi * 0.25 * time) + 0.02 * rng.standard_normal())
        time += rr * (0.75 if kind == "V" else 1.0)
    # (offset s, width s, amplitude mV) of P, Q, R, S, T in lead II; V5 scales them
    waves_n = [
        (-0.20, 0.025, 0.15),
        (-0.035, 0.010, -0.12),
        (0.0, 0.012, 1.2),
        (0.035, 0.010, -0.25),
        (0.25, 0.045, 0.3),
    ]
    waves_v = [(-0.04, 0.030, -0.4), (0.0, 0.030, 1.5), (0.08, 0.040, -0.6), (0.32, 0.06, -0.35)]
    leads = np.zeros((2, n))
    lead_gain = np.array([[1.0], [0.7 + 0.2 * rng.random()]])
    for r_time, kind in beats:
        for offset, width, amp in waves_v if kind == "V" else waves_n:
            center = r_time + offset
            i0, i1 = max(0, int((center - 5 * width) * sfreq)), min(n, int((center + 5 * width) * sfreq))
            leads[:, i0:i1] += lead_gain * amp * np.exp(-((t[i0:i1] - center) ** 2) / (2 * width**2))
    leads += 0.1 * np.sin(2 * np.pi * 0.3 * t + rng.random() * 6)[None, :]  # breathing baseline wander
    leads += 0.02 * rng.standard_normal((2, n)) + 0.03 * _colored_noise(rng, (2, n), 1.0)
    return (leads * 1000.0).astype(np.float32), beats


def write_ecg_fif(
    path: str | Path, data_uv: np.ndarray, beats: list[tuple[float, str]], sfreq: float = 360.0
) -> None:
    import mne

    info = mne.create_info(["MLII", "V5"], sfreq, ch_types="ecg")
    raw = mne.io.RawArray(data_uv.astype(np.float64) * 1e-6, info, verbose="error")
    raw.set_annotations(mne.Annotations([b[0] for b in beats], [0.0] * len(beats), [b[1] for b in beats]))
    _save_fif(path, raw)


# ---------------------------------------------------------------- sEMG, emg2qwerty layout


def key_pattern(key: str) -> np.ndarray:
    """The fixed spatial pattern `(32,)` of one key: energy on the wrist of the hand that types it."""
    rng = _rng("key", key)
    pattern = np.abs(rng.standard_normal(32)) ** 2
    base = key[-1] if not key.startswith("Key.") else key
    left = base in LEFT_HAND_KEYS or key in ("Key.shift", "Key.caps_lock", "Key.tab")
    pattern[16:] *= 0.15 if left else 1.0
    pattern[:16] *= 1.0 if left else 0.15
    return pattern / np.linalg.norm(pattern)


def _type_text(
    rng: np.random.Generator,
    text: str,
    start: float,
    typo_rate: float,
    median_interval: float = 0.17,
    spread: float = 0.35,
) -> tuple[list[Keystroke], float]:
    """Keystrokes (pynput names) for typing `text` from `start`, with typos fixed by backspace; the time
    between presses is log-normal around `median_interval` seconds."""
    keys: list[Keystroke] = []
    time = start

    def press(key: str) -> None:
        nonlocal time
        time += float(np.clip(rng.lognormal(np.log(median_interval), spread), 0.06, 0.8))
        keys.append(Keystroke(key, time, time + float(rng.uniform(0.05, 0.12))))

    letters = "abcdefghijklmnopqrstuvwxyz"
    for char in text:
        if char.isalpha() and rng.random() < typo_rate:
            press(str(rng.choice(list(letters))))
            press("Key.backspace")
        if char.isupper():
            press("Key.shift")
            time -= 0.08  # shift is held while the letter is pressed
        press("Key.space" if char == " " else char)
    press("Key.enter")
    return keys, time


def _session(
    user: int,
    session: int,
    emg: np.ndarray,
    t0: float,
    keystrokes: list[Keystroke],
    prompts: list[Prompt],
    attrs: dict | None = None,
) -> Session:
    """A 2 kHz emg2qwerty `Session` of `emg` `(32, n)`: left band first, then right."""
    return Session(
        session_name=f"synthetic-{user:02d}-{session:02d}",
        user=str(10_000_000 + 7919 * user),
        condition="on_keyboard",
        emg_left=np.ascontiguousarray(emg[:16].T),
        emg_right=np.ascontiguousarray(emg[16:].T),
        time=t0 + np.arange(emg.shape[1]) / 2000.0,
        keystrokes=keystrokes,
        prompts=prompts,
        extra_attrs={"daq_sample_rate": 2000, "quality_check_tags": "[]", **(attrs or {})},
    )


def _type_session(
    rng: np.random.Generator,
    t0: float,
    duration_s: float,
    typo_rate: float,
    median_interval: float = 0.17,
    spread: float = 0.35,
) -> tuple[list[Keystroke], list[Prompt]]:
    """Prompts typed one after another from `t0` + 1 s until the session's end."""
    keystrokes: list[Keystroke] = []
    prompts: list[Prompt] = []
    clock = t0 + 1.0
    while True:
        words = SENTENCES[int(rng.integers(len(SENTENCES)))].split(" ")
        state = rng.bit_generator.state
        # the last prompt of a session is cut to the words that fit before its end
        while words:
            rng.bit_generator.state = state
            text = " ".join(words)
            keys, end = _type_text(rng, text, clock, typo_rate, median_interval, spread)
            if end <= t0 + duration_s - 0.5:
                break
            words = words[:-1]
        if not words:
            break
        prompts.append(Prompt(clock, end + 0.2, text))
        keystrokes.extend(keys)
        clock = end + float(rng.uniform(0.8, 1.5))
    return keystrokes, prompts


def make_emg_session(user: int, session: int, duration_s: float = 60.0, typo_rate: float = 0.03) -> Session:
    """One synthetic emg2qwerty session: prompts typed at ~5 keys/s with keystroke-locked bursts."""
    sfreq = 2000.0
    rng = _rng("emg", user, session)
    n = int(duration_s * sfreq)
    t0 = 1_600_000_000.0 + 86_400.0 * (100 * user + session)
    keystrokes, prompts = _type_session(rng, t0, duration_s, typo_rate)
    sos = sps.butter(4, [20.0, 450.0], btype="bandpass", fs=sfreq, output="sos")
    emg = sps.sosfilt(sos, rng.standard_normal((32, n)), axis=1)
    emg /= emg.std(axis=1, keepdims=True)
    emg *= (0.8 + 0.4 * _rng("emg-gain", user).random(32))[:, None]
    # the band a may sit up to one electrode off between sessions
    rotation = int(rng.integers(-1, 2))
    half = int(0.12 * sfreq)
    envelope = np.exp(-0.5 * ((np.arange(2 * half) - half) / (0.025 * sfreq)) ** 2)
    for k in keystrokes:
        center = int((k.start - t0 - 0.03) * sfreq)  # muscles fire ~30 ms before the key registers
        i0, i1 = center - half, center + half
        if i0 < 0 or i1 > n:
            continue
        pattern = key_pattern(k.key).reshape(2, 16)
        pattern = np.roll(pattern, rotation, axis=1).reshape(32)
        burst = sps.sosfilt(sos, rng.standard_normal(2 * half + 200))[200:] * envelope
        emg[:, i0:i1] += 6.0 * np.sqrt(32) * pattern[:, None] * burst[None, :] / (burst.std() + 1e-9) * 0.35
    return _session(user, session, emg.astype(np.float32), t0, keystrokes, prompts)


# ---------------------------------------------------------------- sEMG, the hard tier

# Measured once on GRABMyo's 2,048 Hz forearm recordings (12 records), so the generator needs no data
# files: `python benchmarks/grabmyo_emg_stats.py --root <shared/data/real>` (2026-11-30). Power
# spectrum shape in dB relative to its peak; spread (std of the log) of the 50 ms RMS envelope over time
# and of the RMS across electrodes.
SEMG_PSD_DB = {10: -16.2, 20: -8.2, 30: -2.9, 45: -1.1, 70: 0.0, 90: -1.0, 110: -1.7, 130: -2.6, 170: -4.0, 220: -7.3, 280: -10.7, 350: -14.7, 450: -19.7, 600: -33.5, 800: -61.6}  # fmt: skip
SEMG_LOG_ENVELOPE_STD = 0.328
SEMG_LOG_CHANNEL_RMS_STD = 0.536
EMG_TIERS = ("standard", "hard")
# how far the hard tier departs from the shared structure: the weight of each user's random electrode
# mixing (0: every user alike) and the largest band shift between sessions, in electrodes
HARD_USER_MIXING = 0.45
HARD_MAX_SHIFT = 1.0


def semg_fir(sfreq: float, numtaps: int = 257) -> np.ndarray:
    """FIR taps whose magnitude response follows the measured sEMG spectrum (`SEMG_PSD_DB`)."""
    nyquist = sfreq / 2
    points = {f: db for f, db in SEMG_PSD_DB.items() if f < nyquist}
    freqs = [0.0, *points, nyquist]
    gains_db = [-40.0, *points.values(), min(-60.0, min(points.values()))]
    return sps.firwin2(numtaps, freqs, 10 ** (np.array(gains_db) / 20), fs=sfreq)


def _semg_noise(rng: np.random.Generator, shape: tuple[int, int], taps: np.ndarray) -> np.ndarray:
    """Noise `(channels, n)` with the measured sEMG spectrum, unit RMS per channel."""
    noise = sps.lfilter(taps, 1.0, rng.standard_normal((shape[0], shape[1] + len(taps))), axis=1)
    noise = noise[:, len(taps) :]
    return noise / noise.std(axis=1, keepdims=True)


def hard_key_pattern(key: str, user: int) -> np.ndarray:
    """A key's spatial pattern `(32,)` for one user: the shared key structure (`key_pattern`) seen
    through the user's own mixing of the 32 electrodes (forearm anatomy and band fit differ)."""
    mix_rng = _rng("hard-mix", user)
    random = mix_rng.standard_normal((32, 32)) / np.sqrt(32)
    mixing = (1 - HARD_USER_MIXING) * np.eye(32) + HARD_USER_MIXING * random
    pattern = np.abs(mixing @ key_pattern(key))
    return pattern / np.linalg.norm(pattern)


def make_hard_emg_session(
    user: int, session: int, duration_s: float = 60.0, typo_rate: float = 0.03
) -> Session:
    """One session of the hard tier (labelled synthetic: `synthetic_tier` = "hard" in its attributes).

    Against the standard tier: key patterns mixed per user (`hard_key_pattern`), the band shifted by a
    fractional number of electrodes (up to 1) and its electrode gains changed between sessions, each
    user's own typing speed and burst width (fast typists' bursts overlap), and background activity with
    GRABMyo's spectrum, waxing and waning with its measured envelope spread."""
    sfreq = 2000.0
    user_rng, rng = _rng("hard-user", user), _rng("hard-emg", user, session)
    median_interval = float(np.clip(np.exp(user_rng.normal(np.log(0.16), 0.25)), 0.09, 0.28))
    burst_width = float(user_rng.uniform(0.015, 0.04))
    burst_gain = float(user_rng.lognormal(0.0, 0.3))
    user_gains = user_rng.lognormal(0.0, SEMG_LOG_CHANNEL_RMS_STD, 32)
    n = int(duration_s * sfreq)
    t0 = 1_600_000_000.0 + 86_400.0 * (100 * user + session)
    keystrokes, prompts = _type_session(rng, t0, duration_s, typo_rate, median_interval, 0.3)
    taps = semg_fir(sfreq)
    # background: slow log-normal waxing and waning (AR(1) over 50 ms frames, ~0.5 s memory)
    frames = n // 100 + 2
    keep = np.exp(-0.05 / 0.5)
    steps = np.vstack([np.zeros((1, 32)), rng.standard_normal((frames - 1, 32))]).T
    log_env = sps.lfilter([np.sqrt(1 - keep**2)], [1.0, -keep], steps, axis=1)
    envelope = np.exp(SEMG_LOG_ENVELOPE_STD * log_env)
    envelope = np.stack([np.interp(np.arange(n), np.arange(frames) * 100, e) for e in envelope])
    gains = user_gains * rng.lognormal(0.0, 0.1, 32)
    emg = _semg_noise(rng, (32, n), taps) * envelope
    # the band sits a fractional number of electrodes off between sessions
    shift = float(rng.uniform(-HARD_MAX_SHIFT, HARD_MAX_SHIFT))
    whole, part = int(np.floor(shift)), shift - np.floor(shift)
    half = int(4 * burst_width * sfreq)
    burst_envelope = np.exp(-0.5 * ((np.arange(2 * half) - half) / (burst_width * sfreq)) ** 2)
    for k in keystrokes:
        center = int((k.start - t0 - 0.03) * sfreq)
        i0, i1 = center - half, center + half
        if i0 < 0 or i1 > n:
            continue
        pattern = hard_key_pattern(k.key, user).reshape(2, 16)
        pattern = (1 - part) * np.roll(pattern, whole, axis=1) + part * np.roll(pattern, whole + 1, axis=1)
        burst = _semg_noise(rng, (1, 2 * half), taps)[0] * burst_envelope
        emg[:, i0:i1] += 2.1 * burst_gain * np.sqrt(32) * pattern.reshape(32)[:, None] * burst[None, :]
    emg = (emg * gains[:, None] / np.exp(np.log(user_gains).mean())).astype(np.float32)
    return _session(user, session, emg, t0, keystrokes, prompts, {"synthetic_tier": "hard"})


# ---------------------------------------------------------------- the default dataset


@dataclass
class SyntheticConfig:
    """Sizes of the embedded default dataset (small enough for a 2-core CPU in minutes)."""

    eeg_subjects: int = 4
    eeg_runs: int = 3  # imagery runs per subject
    eeg_run_s: float = 60.0
    eeg_eyes: bool = True  # one eyes-open and one eyes-closed run per subject
    emg_users: int = 4
    emg_sessions: int = 3
    emg_session_s: float = 60.0
    emg_tier: str = "standard"  # "hard": per-user patterns, shifting bands, real sEMG spectra
    ecg_records: int = 3
    ecg_record_s: float = 60.0


def write_default_dataset(
    root: str | Path, config: SyntheticConfig | None = None, progress: bool = True
) -> Path:
    """Write the synthetic EEG (FIF), ECG (FIF) and sEMG (emg2qwerty HDF5) files under `root`.

    Deterministic: the same config writes byte-identical signals. Existing files are kept.
    """
    from tqdm.auto import tqdm

    config = config or SyntheticConfig()
    if config.emg_tier not in EMG_TIERS:
        raise ValueError(f"emg_tier {config.emg_tier!r}: expected one of {EMG_TIERS}")
    make_session = make_hard_emg_session if config.emg_tier == "hard" else make_emg_session
    root = Path(root)
    jobs = []
    for s in range(config.eeg_subjects):
        for r in range(config.eeg_runs):
            jobs.append(
                ("eeg", root / "eeg" / f"S{s + 1:03d}R{r + 1:02d}_imagery_raw.fif", (s, r, "imagery"))
            )
        if config.eeg_eyes:
            for task in ("eyes_open", "eyes_closed"):
                jobs.append(("eeg", root / "eeg" / f"S{s + 1:03d}_{task}_raw.fif", (s, 100, task)))
    for rec in range(config.ecg_records):
        jobs.append(("ecg", root / "ecg" / f"record{rec:03d}_raw.fif", (rec,)))
    emg_sessions = []
    for u in range(config.emg_users):
        for s in range(config.emg_sessions):
            emg_sessions.append((u, s))
            jobs.append(("emg", root / "emg2qwerty" / f"synthetic-{u:02d}-{s:02d}.hdf5", (u, s)))
    for kind, path, args in tqdm(jobs, desc="synthetic data", disable=not progress):
        if path.exists():
            continue
        if kind == "eeg":
            s, r, task = args
            write_eeg_fif(path, make_eeg_run(s, r, task, config.eeg_run_s))
        elif kind == "ecg":
            data, beats = make_ecg(args[0], config.ecg_record_s)
            write_ecg_fif(path, data, beats)
        else:
            write_session(path, make_session(*args, duration_s=config.emg_session_s))
    _write_emg_index(root / "emg2qwerty", emg_sessions, config)
    return root


def _write_emg_index(folder: Path, sessions: list[tuple[int, int]], config: SyntheticConfig) -> None:
    """metadata.csv and split lists (generic + one personalized) in emg2qwerty's form."""
    from .emg2qwerty import read_session

    loaded = [read_session(folder / f"synthetic-{u:02d}-{s:02d}.hdf5") for u, s in sessions]
    write_metadata(folder / "metadata.csv", loaded)
    users = {s.session_name: s.user for s in loaded}
    by_user: dict[int, list[str]] = {}
    for (u, _), sess in zip(sessions, loaded):
        by_user.setdefault(u, []).append(sess.session_name)
    held_out = by_user[0]
    train_users = [u for u in by_user if u != 0]
    generic = Split(
        train=[name for u in train_users for name in by_user[u][:-1]],
        val=[by_user[u][-1] for u in train_users],
        test=held_out,
    )
    write_split(folder / "splits" / "generic.yaml", generic, users)
    if len(held_out) >= 3:
        personal = Split(
            train=held_out[:-2], val=held_out[-2:-1], test=held_out[-1:], user=users[held_out[0]]
        )
        write_split(folder / "splits" / "user0.yaml", personal, users)
