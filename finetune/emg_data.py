"""emg2qwerty sessions as CTC training windows and whole test sessions.

Windows match emg2qwerty: 8000 samples (4 s at 2 kHz) of labelled signal with 1800 samples of past and
200 of future context, both wrists (32 channels: left 0-15, right 0-15). A window's targets are the
keys pressed inside its 4 s. Training windows start at random offsets, drawn as a pure function of
(seed, rank, step) so that a resumed run sees the same batches. Augmentation (training only): each
wrist's electrodes rotated by -1, 0 or +1 independently, and the right wrist shifted against the left
by up to 120 samples.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from data_prep.emg2qwerty import SFREQ, Split, read_session, read_split
from data_prep.errors import BiosignalError

from .charset import keystroke_labels

WINDOW = 8000
PAST, FUTURE = 1800, 200
ROTATIONS = (-1, 0, 1)
MAX_JITTER = 120
PAD_LABEL = -1  # target padding: never a class (emg2qwerty padded with 0, which is "a")


@dataclass
class LabelledSession:
    """One session in memory. signal `(32, n_times)` float32 at `sfreq`; keys with their press times
    in seconds from the first sample."""

    name: str
    user: str
    signal: np.ndarray
    sfreq: float
    keys: list[str]
    key_times: np.ndarray
    prompts: list[str]

    def labels(self, start: int, stop: int) -> np.ndarray:
        """Targets of the keys pressed in samples `[start, stop)`."""
        return keystroke_labels(self.keys, self.key_times, start / self.sfreq, stop / self.sfreq)


def load_session(path: str | Path) -> LabelledSession:
    session = read_session(path)
    t0 = float(session.time[0])
    return LabelledSession(
        name=session.session_name,
        user=session.user,
        signal=np.ascontiguousarray(session.emg()),
        sfreq=SFREQ,
        keys=[k.key for k in session.keystrokes],
        key_times=np.asarray([k.start - t0 for k in session.keystrokes]),
        prompts=[p.text for p in session.prompts if p.text],
    )


def load_split(data: str | Path, split: str | Path) -> tuple[Split, dict[str, list[LabelledSession]]]:
    """The sessions of a split file (emg2qwerty's form), read from `data/<session>.hdf5`."""
    data = Path(data)
    spec = read_split(split)
    parts = {}
    for part in ("train", "val", "test"):
        sessions = []
        for name in getattr(spec, part):
            path = data / f"{name}.hdf5"
            if not path.exists():
                raise BiosignalError(
                    path, f"{Path(split).name}:{part}", "session listed in the split is missing"
                )
            sessions.append(load_session(path))
        parts[part] = sessions
    return spec, parts


def augmentation(rng: np.random.Generator, max_jitter: int = MAX_JITTER) -> tuple[np.ndarray, int]:
    """Per-wrist electrode rotation by one of ROTATIONS and a left/right time jitter of 0..max_jitter.

    Returns the source channel of each output channel `(32,)` and how many samples later the right
    wrist's window starts than the left's, so a window is gathered in one copy per wrist.
    """
    left = np.roll(np.arange(16), int(rng.choice(ROTATIONS)))
    right = 16 + np.roll(np.arange(16), int(rng.choice(ROTATIONS)))
    return np.concatenate([left, right]), int(rng.integers(0, max_jitter + 1))


def _gather(out: np.ndarray, signal: np.ndarray, channels: np.ndarray, start: int) -> None:
    """out[:] = signal[channels, start:start + out.shape[1]], zeros where the range runs off either end."""
    stop = start + out.shape[1]
    lo, hi = max(start, 0), min(stop, signal.shape[1])
    out[:, : lo - start] = 0
    out[:, max(hi - start, 0) :] = 0
    if hi > lo:
        out[:, lo - start : hi - start] = signal[channels, lo:hi]


def _padded(signal: np.ndarray, start: int, stop: int) -> np.ndarray:
    """signal[:, start:stop] with zeros where the range runs off either end."""
    out = np.empty((signal.shape[0], stop - start), dtype=np.float32)
    _gather(out, signal, np.arange(signal.shape[0]), start)
    return out


class WindowSampler:
    """Random labelled training windows; batch `step` is a pure function of (seed, rank, step)."""

    def __init__(
        self,
        sessions: list[LabelledSession],
        batch_size: int,
        seed: int = 0,
        rank: int = 0,
        augment: bool = True,
        window: int = WINDOW,
        past: int = PAST,
        future: int = FUTURE,
    ):
        if not sessions:
            raise BiosignalError(None, "split", "no training sessions")
        short = [s.name for s in sessions if s.signal.shape[1] < window]
        if short:
            raise BiosignalError(None, "sessions", f"shorter than one {window}-sample window: {short}")
        self.sessions, self.batch_size, self.seed, self.rank = sessions, batch_size, seed, rank
        self.augment, self.window, self.past, self.future = augment, window, past, future
        lengths = np.array([s.signal.shape[1] - window + 1 for s in sessions], dtype=np.float64)
        self.session_weights = lengths / lengths.sum()

    def batch(self, step: int) -> dict:
        rng = np.random.default_rng([self.seed, self.rank, step])
        n_channels = self.sessions[0].signal.shape[0]
        emg = np.empty((self.batch_size, n_channels, self.past + self.window + self.future), np.float32)
        labels = []
        for item in emg:
            session = self.sessions[rng.choice(len(self.sessions), p=self.session_weights)]
            start = int(rng.integers(0, session.signal.shape[1] - self.window + 1))
            if self.augment:
                channels, shift = augmentation(rng)
                _gather(item[:16], session.signal, channels[:16], start - self.past)
                _gather(item[16:], session.signal, channels[16:], start - self.past + shift)
            else:
                _gather(item, session.signal, np.arange(n_channels), start - self.past)
            labels.append(session.labels(start, start + self.window))
        return collate(emg, labels)

    def state_dict(self) -> dict:
        return {}  # batches depend only on the step

    def load_state_dict(self, state: dict) -> None:
        pass


def eval_windows(sessions: list[LabelledSession], batch_size: int) -> list[dict]:
    """Consecutive non-overlapping windows of every session, as batches (emg2qwerty's validation)."""
    signals, labels = [], []
    for session in sessions:
        for start in range(0, session.signal.shape[1] - WINDOW + 1, WINDOW):
            signals.append(_padded(session.signal, start - PAST, start + WINDOW + FUTURE))
            labels.append(session.labels(start, start + WINDOW))
    return [
        collate(np.stack(signals[i : i + batch_size]), labels[i : i + batch_size])
        for i in range(0, len(signals), batch_size)
    ]


def collate(emg: np.ndarray, labels: list[np.ndarray]) -> dict:
    """Signals `(B, 32, T)` and their labels `[(L,)]` -> emg `(B, 32, T)`, targets `(B, L_max)` padded
    with -1, target_lengths `(B,)`."""
    lengths = torch.tensor([len(row) for row in labels], dtype=torch.long)
    targets = torch.full((len(labels), max(1, int(lengths.max()))), PAD_LABEL, dtype=torch.long)
    for i, row in enumerate(labels):
        targets[i, : len(row)] = torch.from_numpy(row)
    return {"emg": torch.from_numpy(emg), "targets": targets, "target_lengths": lengths}
