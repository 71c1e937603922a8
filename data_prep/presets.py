"""Per-modality preprocessing presets: checks, unit conversion, resampling, filtering, scaling, patching.

A preset turns any `Recording` of its modality into the form every later stage expects: a fixed
sampling rate, a fixed band, scaled values with the scaling kept, and windows of whole patches.
"""

from __future__ import annotations

import functools
import json
from dataclasses import asdict, dataclass, field
from fractions import Fraction

import numpy as np

from .errors import BiosignalError, ConfigError
from .recording import UNIT_TO_UV, Recording


@dataclass(frozen=True)
class Preset:
    """How to preprocess one modality. Frequencies in Hz, durations in seconds."""

    name: str
    modality: str
    sfreq: float  # target sampling rate
    l_freq: float | None  # band-pass edges (None: no high-pass / low-pass)
    h_freq: float | None
    notch_freqs: tuple[float, ...] = (50.0, 60.0)  # mains and its harmonics within the band
    patch_len: int = 200  # samples per patch (token)
    window_s: float = 4.0  # corpus window length
    min_sfreq: float = 0.0  # refuse recordings sampled slower than this
    # "fixed": divide by scale_uv (keeps absolute amplitude, as LaBraM's µV/100);
    # "robust": per channel (x - median) / (IQR / 1.349), for devices with arbitrary units
    scaling: str = "fixed"
    scale_uv: float = 100.0
    clip: float | None = 10.0  # clip scaled values to +-clip (NeuroRVQ clips EEG at +-500 µV)
    required_channels: tuple[str, ...] = ()
    bad_channels: str = "error"  # flat or non-finite channels: "error" or "drop"

    def __post_init__(self) -> None:
        if self.scaling not in ("fixed", "robust"):
            raise ConfigError(
                f"preset {self.name}.scaling", f"expected 'fixed' or 'robust', got {self.scaling!r}"
            )
        if self.bad_channels not in ("error", "drop"):
            raise ConfigError(
                f"preset {self.name}.bad_channels", f"expected 'error' or 'drop', got {self.bad_channels!r}"
            )
        if self.patch_len <= 0 or self.sfreq <= 0:
            raise ConfigError(f"preset {self.name}", "patch_len and sfreq must be positive")
        if round(self.window_s * self.sfreq) % self.patch_len:
            raise ConfigError(
                f"preset {self.name}.window_s",
                f"{self.window_s} s at {self.sfreq} Hz is not a whole number of {self.patch_len}-sample patches",
            )
        if self.h_freq is not None and self.h_freq >= self.sfreq / 2:
            raise ConfigError(
                f"preset {self.name}.h_freq", f"{self.h_freq} Hz must be below Nyquist ({self.sfreq / 2} Hz)"
            )

    @property
    def window_len(self) -> int:
        return round(self.window_s * self.sfreq)

    @property
    def patch_s(self) -> float:
        return self.patch_len / self.sfreq

    def to_dict(self) -> dict:
        return asdict(self)

    def fingerprint(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)


PRESETS: dict[str, Preset] = {
    # NeuroRVQ/LaBraM: 200 Hz, 0.5-45 Hz, 1 s patches, µV / 100
    "eeg": Preset("eeg", "eeg", 200.0, 0.5, 45.0, patch_len=200, window_s=4.0, min_sfreq=100.0),
    # NeuroRVQ EMG: 1000 Hz, 0.2 s patches; sEMG energy lies in 20-450 Hz; device units vary -> robust
    "emg": Preset(
        "emg", "emg", 1000.0, 20.0, 450.0, patch_len=200, window_s=2.0, min_sfreq=900.0, scaling="robust"
    ),
    # 200 Hz armbands (Myo): same 0.2 s patches at the device's own rate
    "emg_200hz": Preset(
        "emg_200hz", "emg", 200.0, 5.0, 95.0, patch_len=40, window_s=2.0, min_sfreq=200.0, scaling="robust"
    ),
    # NeuroRVQ ECG: 200 Hz, 40-sample patches; scaled by 1 mV
    "ecg": Preset(
        "ecg", "ecg", 200.0, 0.5, 45.0, patch_len=40, window_s=5.0, min_sfreq=100.0, scale_uv=1000.0
    ),
    # ECG in 1 s patches (as EEG), what the shipped sources and tokenizer use: a patch holds a whole
    # QRS-T complex, and a token's 40-320 bits per channel-second are rates where learned codes beat a
    # DCT; at the 0.2 s patch's 200-1,600 a DCT is nearly lossless (docs/BENCHMARKS.md, issue 16)
    "ecg_1s": Preset(
        "ecg_1s", "ecg", 200.0, 0.5, 45.0, patch_len=200, window_s=5.0, min_sfreq=100.0, scale_uv=1000.0
    ),
}


def get_preset(name_or_dict: str | dict | Preset) -> Preset:
    """A preset by name, or a dict of overrides with a 'base' name (e.g. {'base': 'eeg', 'window_s': 8})."""
    if isinstance(name_or_dict, Preset):
        return name_or_dict
    if isinstance(name_or_dict, str):
        if name_or_dict not in PRESETS:
            raise ConfigError("preset", f"unknown preset {name_or_dict!r}; known: {sorted(PRESETS)}")
        return PRESETS[name_or_dict]
    overrides = dict(name_or_dict)
    base = get_preset(overrides.pop("base", overrides.get("name", "eeg")))
    unknown = set(overrides) - set(base.to_dict())
    if unknown:
        raise ConfigError("preset", f"unknown fields {sorted(unknown)}")
    for key in ("notch_freqs", "required_channels"):
        if key in overrides:
            overrides[key] = tuple(overrides[key])
    merged = {**base.to_dict(), **overrides}
    return Preset(**merged)


# ---------------------------------------------------------------- channel names and positions


@functools.lru_cache(maxsize=1)
def _montage_positions() -> dict[str, np.ndarray]:
    import mne

    for name in ("colin27_1005", "standard_1005"):
        try:
            montage = mne.channels.make_standard_montage(name)
            break
        except ValueError:
            continue
    return {n: np.asarray(p, dtype=np.float32) for n, p in montage.get_positions()["ch_pos"].items()}


# the old 10-20 names of four temporal/parietal sites and their 10-10 names
OLD_1020_NAMES = {"t3": "T7", "t4": "T8", "t5": "P7", "t6": "P8"}
# reference suffixes of clinical montages ("EEG FP1-REF", "Fp1-LE", "C3-A1"); a bipolar pair such as
# "FP1-F7" is a derivation, not a channel, and stays unknown
REFERENCE_SUFFIXES = ("ref", "le", "re", "ar", "avg", "a1", "a2", "m1", "m2", "a1a2", "m1m2", "linked")


def standardize_eeg_name(name: str) -> str:
    """One EEG name in the 10-05 spelling, or stripped of decorations if the system has no such site.

    Handles case ('FP1'), BCI2000 dots ('Fc5.'), an 'EEG ' prefix ('EEG Fp1'), reference suffixes
    ('-REF', '-LE', '-A1', ...) and the old 10-20 names T3/T4/T5/T6 (-> T7/T8/P7/P8)."""
    bare = name.strip().rstrip(".").strip()
    if bare.lower().startswith("eeg") and len(bare) > 3 and bare[3] in " -_:":
        bare = bare[4:].strip()
    if "-" in bare:
        site, suffix = bare.rsplit("-", 1)
        if suffix.strip().lower() in REFERENCE_SUFFIXES:
            bare = site.strip()
    bare = bare.rstrip(".")
    by_lower = _names_by_lower()
    lower = bare.lower()
    return OLD_1020_NAMES.get(lower) or by_lower.get(lower, bare)


@functools.lru_cache(maxsize=1)
def _names_by_lower() -> dict[str, str]:
    return {n.lower(): n for n in _montage_positions()}


def standardize_eeg_names(ch_names: list[str]) -> list[str]:
    """Map EEG names to the 10-05 spelling ('Fc5.' -> 'FC5', 'EEG T3-REF' -> 'T7'); names the system
    does not know stay as they are, stripped. Two inputs that map to one site are an error."""
    names = [standardize_eeg_name(n) for n in ch_names]
    seen: dict[str, str] = {}
    for raw, name in zip(ch_names, names):
        if name in seen:
            raise BiosignalError(
                None, "ch_names", f"channels {seen[name]!r} and {raw!r} both name the EEG site {name!r}"
            )
        seen[name] = raw
    return names


def eeg_site_names() -> list[str]:
    """Every site of the 10-05 system (MNE's standard_1005), in the spelling `standardize_eeg_names`
    gives; the old 10-20 aliases T3-T6 are left out, as names map them to T7/T8/P7/P8."""
    return [n for n in _montage_positions() if n.lower() not in OLD_1020_NAMES]


def eeg_positions(ch_names: list[str]) -> np.ndarray:
    """`(n_channels, 3)` positions in metres from the 10-05 montage; NaN for unknown names."""
    positions = _montage_positions()
    nan = np.full(3, np.nan, dtype=np.float32)
    return np.stack([positions.get(n, nan) for n in ch_names]) if ch_names else np.zeros((0, 3), np.float32)


# ---------------------------------------------------------------- checks


# a saturated amplifier holds the channel's extreme value: real recordings hold it in runs of >= 3
# samples for at most 0.04% of samples (EEGBCI; 0 for the Myo, GRABMyo and ECG files), clipping for far more
CLIPPED_RUN, CLIPPED_FRACTION = 3, 0.01


def clipped_fraction(channel: np.ndarray) -> tuple[float, float]:
    """Fraction of samples held at the channel's max or min in runs of >= CLIPPED_RUN, and that value."""
    worst = (0.0, float(channel.max()))
    for value in (channel.max(), channel.min()):
        edges = np.diff(np.concatenate([[0], (channel == value).astype(np.int8), [0]]))
        runs = np.flatnonzero(edges == -1) - np.flatnonzero(edges == 1)
        worst = max(worst, (runs[runs >= CLIPPED_RUN].sum() / len(channel), float(value)))
    return worst


def check_signal(rec: Recording, bad_channels: str = "error") -> Recording:
    """Refuse (or drop, with bad_channels="drop") non-finite, flat and clipped channels; refuse empty
    recordings."""
    if rec.n_times == 0 or rec.n_channels == 0:
        raise BiosignalError(rec.source, "data", f"empty recording, shape {rec.data.shape}")
    finite = np.isfinite(rec.data)
    bad: dict[str, str] = {}
    for i in np.flatnonzero(~finite.all(axis=1)):
        first = int(np.flatnonzero(~finite[i])[0])
        bad[rec.ch_names[i]] = f"NaN/Inf from sample {first} ({first / rec.sfreq:.3f} s)"
    spread = np.ptp(np.where(finite, rec.data, 0), axis=1)
    for i in np.flatnonzero(spread == 0):
        bad.setdefault(rec.ch_names[i], "flat (constant value)")
    for i, channel in enumerate(rec.data):
        if rec.ch_names[i] not in bad:
            fraction, value = clipped_fraction(channel)
            if fraction >= CLIPPED_FRACTION:
                bad[rec.ch_names[i]] = (
                    f"clipped: {100 * fraction:.1f}% of samples held at its extreme {value:g}"
                )
    if not bad:
        return rec
    if bad_channels == "drop" and len(bad) < rec.n_channels:
        return rec.pick([n for n in rec.ch_names if n not in bad])
    detail = "; ".join(f"{n}: {why}" for n, why in bad.items())
    raise BiosignalError(rec.source, "data", f"bad channels: {detail}")


# ---------------------------------------------------------------- preprocessing


def resample(data: np.ndarray, sfreq: float, target: float) -> np.ndarray:
    """Polyphase resampling along the last axis (anti-aliasing included)."""
    from scipy.signal import resample_poly

    if sfreq == target:
        return data
    ratio = Fraction(target / sfreq).limit_denominator(1000)
    if abs(float(ratio) - target / sfreq) > 1e-6 * target / sfreq:
        raise BiosignalError(
            None, "sfreq", f"cannot resample {sfreq} Hz to {target} Hz with a rational ratio"
        )
    return resample_poly(data, ratio.numerator, ratio.denominator, axis=-1)


def preprocess(rec: Recording, preset: Preset | str) -> Recording:
    """Check, convert to µV, resample, filter and scale one recording. Returns a new Recording.

    The result's `scale_center`/`scale_spread` undo the scaling: µV = data * spread + center.
    """
    import mne

    preset = get_preset(preset)
    if rec.modality != preset.modality:
        raise BiosignalError(
            rec.source, "modality", f"preset {preset.name!r} is for {preset.modality}, got {rec.modality}"
        )
    if rec.sfreq < preset.min_sfreq:
        raise BiosignalError(
            rec.source,
            "sfreq",
            f"{rec.sfreq} Hz is below the {preset.min_sfreq} Hz preset {preset.name!r} needs",
        )
    if rec.modality == "eeg":
        names = standardize_eeg_names(rec.ch_names)
        rec = rec.replace(ch_names=names, ch_pos=eeg_positions(names))
    if preset.required_channels:
        rec = rec.pick(list(preset.required_channels))
    rec = check_signal(rec, preset.bad_channels)
    data = rec.data.astype(np.float64) * UNIT_TO_UV.get(rec.unit, 1.0)
    unit = "uV" if rec.unit in UNIT_TO_UV else rec.unit
    data = resample(data, rec.sfreq, preset.sfreq)
    sfreq = preset.sfreq
    if data.shape[1] < preset.patch_len:
        raise BiosignalError(
            rec.source, "n_times", f"{rec.duration:.3f} s is shorter than one {preset.patch_s} s patch"
        )
    notches = [
        f for f in preset.notch_freqs if f < sfreq / 2 and (preset.h_freq is None or f < preset.h_freq + 5)
    ]
    if notches:
        data = mne.filter.notch_filter(data, sfreq, notches, verbose="error")
    if preset.l_freq is not None or preset.h_freq is not None:
        data = mne.filter.filter_data(data, sfreq, preset.l_freq, preset.h_freq, verbose="error")
    if preset.scaling == "robust":
        center = np.median(data, axis=1)
        q75, q25 = np.percentile(data, [75, 25], axis=1)
        spread = (q75 - q25) / 1.349
        spread = np.where(spread > 0, spread, np.std(data, axis=1) + 1e-12)
    else:
        center = np.zeros(data.shape[0])
        spread = np.full(data.shape[0], preset.scale_uv)
    scaled = (data - center[:, None]) / spread[:, None]
    if preset.clip is not None:
        np.clip(scaled, -preset.clip, preset.clip, out=scaled)
    # resampling and filtering shift event times by nothing; onsets are in seconds already
    return rec.replace(
        data=scaled.astype(np.float32),
        sfreq=sfreq,
        unit=unit,
        scale_center=center.astype(np.float32),
        scale_spread=spread.astype(np.float32),
    )


def unscale(data: np.ndarray, center: np.ndarray, spread: np.ndarray) -> np.ndarray:
    """Undo a preset's scaling: `(..., channels, times)` back to the recording's unit."""
    return data * spread[:, None] + center[:, None]


def patchify(data: np.ndarray, patch_len: int, pad: bool = False) -> np.ndarray:
    """`(..., channels, times)` -> `(..., channels, n_patches, patch_len)`.

    With pad=False the times must be a whole number of patches; with pad=True the last patch is
    zero-padded.
    """
    n_times = data.shape[-1]
    remainder = n_times % patch_len
    if remainder:
        if not pad:
            raise BiosignalError(
                None, "n_times", f"{n_times} samples is not a whole number of {patch_len}-sample patches"
            )
        width = [(0, 0)] * (data.ndim - 1) + [(0, patch_len - remainder)]
        data = np.pad(data, width)
    return data.reshape(*data.shape[:-1], data.shape[-1] // patch_len, patch_len)


@dataclass
class Window:
    """A fixed-length piece of a preprocessed recording, ready for the corpus."""

    data: np.ndarray  # (channels, window_len)
    start: float  # seconds from the start of the recording
    label: str
    events: list[dict] = field(default_factory=list)


def windows(
    rec: Recording, preset: Preset, label_from: str = "recording", event_map: dict | None = None
) -> list[Window]:
    """Cut a preprocessed recording into non-overlapping windows of `preset.window_len` samples.

    label_from: "recording" (the recording's label for every window) or "events" (the mapped
    description of the event overlapping the window most; windows with no mapped event get "").
    The trailing partial window is dropped.
    """
    n = preset.window_len
    result = []
    for i in range(rec.n_times // n):
        start, stop = i * n / rec.sfreq, (i + 1) * n / rec.sfreq
        inside = [
            {"onset": round(e.onset - start, 6), "duration": e.duration, "description": e.description}
            for e in rec.events
            if e.onset < stop and (e.onset + e.duration > start or e.onset >= start)
        ]
        label = rec.label
        if label_from == "events":
            overlap: dict[str, float] = {}
            for e in rec.events:
                mapped = (event_map or {}).get(e.description, e.description if event_map is None else None)
                if mapped is None:
                    continue
                seconds = min(stop, e.onset + e.duration) - max(start, e.onset)
                if seconds > 0:
                    overlap[mapped] = overlap.get(mapped, 0.0) + seconds
            label = max(overlap, key=overlap.get) if overlap else ""
        result.append(Window(rec.data[:, i * n : (i + 1) * n], start, label, inside))
    return result
