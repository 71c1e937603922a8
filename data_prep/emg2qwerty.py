"""emg2qwerty session files (HDF5), exactly as the emg2qwerty dataset ships them.

Layout of `<session>.hdf5`: group `emg2qwerty`; dataset `timeseries`, a 1-D compound array with fields
`emg_right` (float32, 16), `time` (float64 unix seconds, non-decreasing) and `emg_left` (float32, 16),
read by name; 2 kHz, already high-pass filtered. Group attributes: `session_name`, `user`, `condition`,
`duration_mins`, and JSON strings `keystrokes` (`[{key, start, end}]`, pynput key names) and `prompts`
(`[{name: "text_prompt", start, end, payload: {text} | null}]`). Beside the sessions: `metadata.csv`
and split lists (`dataset: {train: [{user, session}], val: [...], test: [...]}`).
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml

from .atomic import atomic_path
from .errors import BiosignalError
from .readers import require_file
from .recording import Event, Recording

SFREQ = 2000.0
N_ELECTRODES = 16
WRISTS = ("left", "right")
CH_NAMES = [f"{wrist}_{i}" for wrist in WRISTS for i in range(N_ELECTRODES)]
REQUIRED_ATTRS = ("session_name", "user", "condition", "duration_mins", "keystrokes", "prompts")
TIMESERIES_DTYPE = np.dtype(
    [("emg_right", "<f4", (N_ELECTRODES,)), ("time", "<f8"), ("emg_left", "<f4", (N_ELECTRODES,))]
)
METADATA_COLUMNS = (
    "user",
    "session",
    "condition",
    "duration_mins",
    "num_keystrokes",
    "num_prompts",
    "quality_check_tags",
)


@dataclass
class Keystroke:
    key: str  # pynput form: "a", "A", "Key.backspace", "Key.shift", ...
    start: float  # unix seconds
    end: float


@dataclass
class Prompt:
    start: float
    end: float
    text: str | None  # None where the payload is null


@dataclass
class Session:
    """One emg2qwerty session. emg_left/emg_right: `(n_times, 16)` float32; time: `(n_times,)` unix s."""

    session_name: str
    user: str
    condition: str
    emg_left: np.ndarray
    emg_right: np.ndarray
    time: np.ndarray
    keystrokes: list[Keystroke]
    prompts: list[Prompt]
    extra_attrs: dict = field(default_factory=dict)
    source: str = ""

    @property
    def duration_mins(self) -> float:
        return float(self.time[-1] - self.time[0]) / 60.0 if len(self.time) else 0.0

    def emg(self) -> np.ndarray:
        """`(32, n_times)`: left wrist electrodes 0-15, then right wrist 0-15."""
        return np.concatenate([self.emg_left, self.emg_right], axis=1).T

    def to_recording(self, unit: str = "adu") -> Recording:
        """The session as a Recording; keystrokes become events with onsets relative to the first sample.

        emg2qwerty stores no unit, so the default records it as "adu" rather than guessing.
        """
        t0 = float(self.time[0])
        events = [Event(k.start - t0, k.end - k.start, k.key) for k in self.keystrokes]
        return Recording(
            data=self.emg().astype(np.float32),
            sfreq=SFREQ,
            ch_names=list(CH_NAMES),
            unit=unit,
            modality="emg",
            events=events,
            subject=self.user,
            session=self.session_name,
            source=self.source,
        )


def read_session(path: str | Path) -> Session:
    """Read one session file, checking every required field."""
    import h5py

    path = require_file(path)
    try:
        f = h5py.File(path, "r")
    except OSError as err:
        raise BiosignalError(path, "format", f"not a readable HDF5 file (truncated?): {err}") from None
    with f:
        if "emg2qwerty" not in f:
            raise BiosignalError(
                path, "emg2qwerty", f"missing group 'emg2qwerty'; top level holds {list(f.keys())}"
            )
        group = f["emg2qwerty"]
        if "timeseries" not in group:
            raise BiosignalError(path, "emg2qwerty/timeseries", "missing dataset")
        ts_ds = group["timeseries"]
        names = ts_ds.dtype.names or ()
        for name, shape in (("emg_left", (N_ELECTRODES,)), ("emg_right", (N_ELECTRODES,)), ("time", ())):
            if name not in names:
                raise BiosignalError(path, f"timeseries.{name}", f"missing field; fields are {list(names)}")
            if ts_ds.dtype[name].shape != shape:
                raise BiosignalError(
                    path, f"timeseries.{name}", f"expected shape {shape}, got {ts_ds.dtype[name].shape}"
                )
        if ts_ds.ndim != 1:
            raise BiosignalError(path, "timeseries", f"expected a 1-D compound array, got {ts_ds.ndim}-D")
        try:
            ts = ts_ds[()]
        except OSError as err:
            raise BiosignalError(
                path, "timeseries", f"could not read the samples (truncated?): {err}"
            ) from None
        attrs = dict(group.attrs)
    missing = [a for a in REQUIRED_ATTRS if a not in attrs]
    if missing:
        raise BiosignalError(path, "emg2qwerty.attrs", f"missing required attributes {missing}")
    time = np.asarray(ts["time"], dtype=np.float64)
    if len(time) == 0:
        raise BiosignalError(path, "timeseries", "no samples")
    if np.any(np.diff(time) < 0):
        raise BiosignalError(path, "timeseries.time", "timestamps must be non-decreasing")
    keystrokes = [
        Keystroke(str(k["key"]), float(k["start"]), float(k["end"]))
        for k in _json_list(path, attrs, "keystrokes", ("key", "start", "end"))
    ]
    prompts = []
    for p in _json_list(path, attrs, "prompts", ("start", "end", "payload")):
        payload = p["payload"]
        text = payload.get("text") if isinstance(payload, dict) else None
        prompts.append(Prompt(float(p["start"]), float(p["end"]), text))
    t_first, t_last = float(time[0]), float(time[-1])
    for i, k in enumerate(keystrokes):
        if not (t_first <= k.start <= t_last) or k.end < k.start:
            raise BiosignalError(
                path,
                f"keystrokes[{i}]",
                f"key {k.key!r} at {k.start:.3f}-{k.end:.3f} lies outside the recording {t_first:.3f}-{t_last:.3f}",
            )
    extra = {k: _attr_value(v) for k, v in attrs.items() if k not in REQUIRED_ATTRS}
    return Session(
        session_name=_attr_value(attrs["session_name"]),
        user=str(_attr_value(attrs["user"])),
        condition=str(_attr_value(attrs["condition"])),
        emg_left=np.asarray(ts["emg_left"], dtype=np.float32),
        emg_right=np.asarray(ts["emg_right"], dtype=np.float32),
        time=time,
        keystrokes=keystrokes,
        prompts=prompts,
        extra_attrs=extra,
        source=str(path),
    )


def _attr_value(value):
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, np.generic):
        return value.item()
    return value


def _json_list(path: Path, attrs: dict, name: str, keys: tuple[str, ...]) -> list[dict]:
    try:
        items = json.loads(_attr_value(attrs[name]))
    except (TypeError, json.JSONDecodeError) as err:
        raise BiosignalError(path, name, f"expected a JSON list: {err}") from None
    if not isinstance(items, list):
        raise BiosignalError(path, name, f"expected a JSON list, got {type(items).__name__}")
    for i, item in enumerate(items):
        if not isinstance(item, dict) or any(k not in item for k in keys):
            raise BiosignalError(
                path, f"{name}[{i}]", f"expected an object with keys {list(keys)}, got {item!r}"
            )
    return items


def write_session(path: str | Path, session: Session) -> None:
    """Write a session in the identical layout (atomically)."""
    import h5py

    n = len(session.time)
    ts = np.empty(n, dtype=TIMESERIES_DTYPE)
    ts["emg_left"] = session.emg_left
    ts["emg_right"] = session.emg_right
    ts["time"] = session.time
    keystrokes = [{"key": k.key, "start": k.start, "end": k.end} for k in session.keystrokes]
    prompts = [
        {
            "name": "text_prompt",
            "start": p.start,
            "end": p.end,
            "payload": None if p.text is None else {"text": p.text},
        }
        for p in session.prompts
    ]
    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w") as f:
            group = f.create_group("emg2qwerty")
            group.create_dataset("timeseries", data=ts)
            group.attrs["session_name"] = session.session_name
            group.attrs["user"] = session.user
            group.attrs["condition"] = session.condition
            group.attrs["duration_mins"] = session.duration_mins
            group.attrs["keystrokes"] = json.dumps(keystrokes)
            group.attrs["prompts"] = json.dumps(prompts)
            for key, value in session.extra_attrs.items():
                group.attrs[key] = value


def write_metadata(path: str | Path, sessions: list[Session], quality_tags: str = "[]") -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(METADATA_COLUMNS)
            for s in sessions:
                writer.writerow(
                    [
                        s.user,
                        s.session_name,
                        s.condition,
                        f"{s.duration_mins:.4f}",
                        len(s.keystrokes),
                        len(s.prompts),
                        quality_tags,
                    ]
                )


def read_metadata(path: str | Path) -> list[dict]:
    path = Path(path)
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    if rows and any(c not in rows[0] for c in ("user", "session")):
        raise BiosignalError(path, "columns", f"expected at least user,session; got {list(rows[0])}")
    return rows


@dataclass
class Split:
    """Session names per part. `user` is set for a personalized split, empty for the generic one."""

    train: list[str]
    val: list[str]
    test: list[str]
    user: str = ""


def read_split(path: str | Path) -> Split:
    """Read a split list in emg2qwerty's form (`config/user/*.yaml`)."""
    path = Path(path)
    try:
        spec = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as err:
        raise BiosignalError(path, "split", f"could not read: {err}") from None
    if not isinstance(spec, dict) or not isinstance(spec.get("dataset"), dict):
        raise BiosignalError(
            path, "dataset", "expected a mapping 'dataset: {train: [...], val: [...], test: [...]}'"
        )
    parts = {}
    for part in ("train", "val", "test"):
        entries = spec["dataset"].get(part) or []
        try:
            parts[part] = [str(e["session"]) for e in entries]
        except (TypeError, KeyError):
            raise BiosignalError(
                path, f"dataset.{part}", "expected a list of {user, session} entries"
            ) from None
    return Split(user=str(spec.get("user", "")), **parts)


def write_split(path: str | Path, split: Split, users: dict[str, str]) -> None:
    """users maps session name -> user id."""
    spec = {
        "dataset": {
            p: [{"user": users[s], "session": s} for s in getattr(split, p)] for p in ("train", "val", "test")
        }
    }
    if split.user:
        spec = {"user": split.user, **spec}
    with atomic_path(path) as tmp:
        tmp.write_text(yaml.safe_dump(spec, sort_keys=False))
