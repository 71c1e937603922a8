"""The in-memory form of one recording, shared by every reader and preset."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from .errors import BiosignalError

MODALITIES = ("eeg", "emg", "ecg")

# Multipliers from a unit to microvolts. "adu" (arbitrary device units, e.g. the Myo armband's raw
# int8 values) has no physical scale: presets keep it as is and say so in the unit field.
UNIT_TO_UV = {"V": 1e6, "mV": 1e3, "uV": 1.0, "µV": 1.0, "nV": 1e-3}


@dataclass
class Event:
    """An annotation: onset and duration in seconds from the start of the recording."""

    onset: float
    duration: float
    description: str


def check_sfreq(source, sfreq) -> None:
    """Refuse a sampling rate that is not a positive finite number of Hz, naming the source."""
    try:
        valid = bool(np.isfinite(sfreq) and sfreq > 0)
    except TypeError:
        valid = False
    if not valid:
        raise BiosignalError(source, "sfreq", f"expected a positive sampling rate in Hz, got {sfreq!r}")


@dataclass
class Recording:
    """One continuous multi-channel recording with explicit metadata.

    data: `(n_channels, n_times)` float32 in `unit`; sfreq in Hz; one name and type per channel.
    """

    data: np.ndarray
    sfreq: float
    ch_names: list[str]
    unit: str
    modality: str
    ch_types: list[str] | None = None
    events: list[Event] = field(default_factory=list)
    label: str = ""
    subject: str = ""
    session: str = ""
    source: str = ""
    # electrode positions `(n_channels, 3)` in metres (head frame), NaN where unknown
    ch_pos: np.ndarray | None = None
    # per-channel robust scaling applied by a preset: data = (raw - center) / spread
    scale_center: np.ndarray | None = None
    scale_spread: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.data = np.asarray(self.data)
        if self.data.ndim != 2:
            raise BiosignalError(
                self.source, "data", f"expected (channels, times), got shape {self.data.shape}"
            )
        if self.modality not in MODALITIES:
            raise BiosignalError(
                self.source, "modality", f"expected one of {MODALITIES}, got {self.modality!r}"
            )
        check_sfreq(self.source, self.sfreq)
        if len(self.ch_names) != self.data.shape[0]:
            raise BiosignalError(
                self.source, "ch_names", f"{len(self.ch_names)} names for {self.data.shape[0]} channels"
            )
        duplicated = sorted({n for n in self.ch_names if self.ch_names.count(n) > 1})
        if duplicated:
            raise BiosignalError(self.source, "ch_names", f"duplicated channel names {duplicated}")
        if self.ch_types is None:
            self.ch_types = [self.modality] * len(self.ch_names)
        if self.unit not in UNIT_TO_UV and self.unit != "adu":
            raise BiosignalError(
                self.source, "unit", f"expected one of {sorted(UNIT_TO_UV) + ['adu']}, got {self.unit!r}"
            )

    @property
    def n_channels(self) -> int:
        return self.data.shape[0]

    @property
    def n_times(self) -> int:
        return self.data.shape[1]

    @property
    def duration(self) -> float:
        return self.n_times / self.sfreq

    def replace(self, **changes) -> Recording:
        return replace(self, **changes)

    def pick(self, ch_names: list[str]) -> Recording:
        """Keep these channels, in this order; a missing name is an error."""
        missing = [n for n in ch_names if n not in self.ch_names]
        if missing:
            raise BiosignalError(
                self.source, "ch_names", f"missing required channels {missing}; the file has {self.ch_names}"
            )
        idx = [self.ch_names.index(n) for n in ch_names]
        pick = lambda a: None if a is None else np.asarray(a)[idx]  # noqa: E731
        return self.replace(
            data=self.data[idx],
            ch_names=list(ch_names),
            ch_types=[self.ch_types[i] for i in idx],
            ch_pos=pick(self.ch_pos),
            scale_center=pick(self.scale_center),
            scale_spread=pick(self.scale_spread),
        )
