"""Readers for real file formats. Each returns a `Recording` with explicit units, rate and channel names.

- `read_mne`: anything `mne.io.read_raw` opens (EDF/BDF, FIF, BrainVision, EEGLAB, ...)
- `read_wfdb`: PhysioNet WFDB records (MIT-BIH, PTB, GRABMyo) with their annotations (optional `wfdb`)
- `read_array`: CSV / NPY / NPZ / headerless binary, with sfreq, channel names and unit given explicitly
emg2qwerty HDF5 sessions live in `data_prep.emg2qwerty`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .errors import BiosignalError
from .recording import UNIT_TO_UV, Event, Recording, check_sfreq

# MNE channel types that hold signal of each modality
_MNE_TYPES = {"eeg": {"eeg"}, "emg": {"emg"}, "ecg": {"ecg"}}


def require_file(path: str | Path) -> Path:
    """The path, if it names a non-empty file; else a clear error."""
    path = Path(path)
    if not path.is_file():
        raise BiosignalError(path, "path", "file does not exist")
    if path.stat().st_size == 0:
        raise BiosignalError(path, "size", "file is empty")
    return path


def check_edf_size(path: str | Path) -> None:
    """Refuse an EDF/BDF whose size disagrees with its header (truncated or line-ending-mangled)."""
    path = Path(path)
    size = path.stat().st_size
    if size < 256:
        raise BiosignalError(path, "header", f"file is {size} bytes, shorter than the 256-byte EDF header")
    with open(path, "rb") as f:
        head = f.read(256)
        try:
            header_bytes = int(head[184:192].decode("ascii").strip())
            n_records = int(head[236:244].decode("ascii").strip())
            n_signals = int(head[252:256].decode("ascii").strip())
        except ValueError as err:
            raise BiosignalError(path, "header", f"not a valid EDF/BDF header ({err})") from None
        if header_bytes != 256 * (n_signals + 1):
            raise BiosignalError(
                path,
                "header",
                f"header size field says {header_bytes} bytes, expected 256 x (1 + {n_signals} signals)",
            )
        if size < header_bytes:
            raise BiosignalError(
                path, "header", f"file is {size} bytes, shorter than its {header_bytes}-byte header"
            )
        f.seek(256 + 216 * n_signals)
        raw = f.read(8 * n_signals)
    try:
        samples_per_record = [int(raw[8 * i : 8 * i + 8].decode("ascii").strip()) for i in range(n_signals)]
    except ValueError as err:
        raise BiosignalError(path, "header", f"bad samples-per-record field ({err})") from None
    bytes_per_sample = 3 if head[:8] == b"\xffBIOSEMI" else 2
    record_bytes = bytes_per_sample * sum(samples_per_record)
    data_bytes = size - header_bytes
    if n_records == -1:  # allowed while recording; the data must still be whole records
        if record_bytes == 0 or data_bytes % record_bytes:
            raise BiosignalError(
                path, "size", f"{data_bytes} data bytes is not a whole number of {record_bytes}-byte records"
            )
        return
    expected = header_bytes + n_records * record_bytes
    if size != expected:
        why = "truncated" if size < expected else "has extra bytes (e.g. a line-ending conversion)"
        raise BiosignalError(
            path,
            "size",
            f"file is {size} bytes but its header ({n_records} records x {record_bytes} bytes) needs {expected}: {why}",
        )


def read_mne(
    path: str | Path,
    modality: str,
    picks: list[str] | None = None,
    subject: str = "",
    session: str = "",
    label: str = "",
) -> Recording:
    """Read any file `mne.io.read_raw` opens. Data in µV.

    picks: channel names to keep (in order); by default the channels whose MNE type is `modality`.
    Annotations become `Event`s with onsets relative to the first sample.
    """
    import mne

    path = require_file(path)
    if path.suffix.lower() in (".edf", ".bdf"):
        check_edf_size(path)
    try:
        raw = mne.io.read_raw(path, preload=False, verbose="error")
    except Exception as err:  # MNE raises many types; the user needs the file name and the reason
        raise BiosignalError(path, "format", f"MNE could not read it: {err}") from None
    types = raw.get_channel_types()
    if picks is None:
        wanted = _MNE_TYPES[modality]
        picks = [n for n, t in zip(raw.ch_names, types) if t in wanted]
        if not picks:
            raise BiosignalError(
                path,
                "ch_types",
                f"no channel of type {sorted(wanted)} (types here: {sorted(set(types))}); pass picks=[names]",
            )
    missing = [n for n in picks if n not in raw.ch_names]
    if missing:
        raise BiosignalError(
            path, "ch_names", f"missing required channels {missing}; the file has {raw.ch_names}"
        )
    raw.pick(picks)
    ch_types = raw.get_channel_types()
    data = raw.get_data(units={t: "uV" for t in set(ch_types)}).astype(np.float32)
    events = []
    for ann in raw.annotations:
        onset = ann["onset"] - (raw.first_time if raw.annotations.orig_time is not None else 0.0)
        events.append(Event(float(onset), float(ann["duration"]), str(ann["description"])))
    return Recording(
        data=data,
        sfreq=float(raw.info["sfreq"]),
        ch_names=list(raw.ch_names),
        ch_types=ch_types,
        unit="uV",
        modality=modality,
        events=events,
        label=label,
        subject=subject,
        session=session,
        source=str(path),
    )


# bytes per sample of the WFDB signal formats we size-check
_WFDB_BYTES = {
    "8": 1,
    "16": 2,
    "24": 3,
    "32": 4,
    "61": 2,
    "80": 1,
    "160": 2,
    "212": 1.5,
    "310": 4 / 3,
    "311": 4 / 3,
}


def read_wfdb(
    path: str | Path,
    modality: str,
    exclude: list[str] | None = None,
    annotation: str | None = "atr",
    subject: str = "",
    session: str = "",
    label: str = "",
) -> Recording:
    """Read a WFDB record (path with or without `.hea`). Data in µV.

    exclude: channel names to drop (e.g. GRABMyo's unused inputs U1-U4).
    annotation: annotation file extension to read as events (beat symbols), if the file exists.
    """
    try:
        import wfdb
    except ImportError:
        raise ImportError(
            "reading WFDB records needs the optional extra: pip install 'biotok[wfdb]'"
        ) from None
    path = Path(path)
    record_path = path.with_suffix("") if path.suffix == ".hea" else path
    header = record_path.with_suffix(".hea")
    if not header.exists():
        raise BiosignalError(header, "path", "WFDB header does not exist")
    try:
        head = wfdb.rdheader(str(record_path))
    except Exception as err:
        raise BiosignalError(header, "header", f"wfdb could not parse it: {err}") from None
    _check_wfdb_sizes(record_path, head)
    keep = [n for n in head.sig_name if n not in set(exclude or [])]
    try:
        rec = wfdb.rdrecord(str(record_path), channel_names=keep)
    except Exception as err:
        raise BiosignalError(record_path, "data", f"wfdb could not read it: {err}") from None
    units = set(rec.units)
    if len(units) != 1 or rec.units[0] not in UNIT_TO_UV:
        raise BiosignalError(
            header, "units", f"expected one physical unit in {sorted(UNIT_TO_UV)}, got {rec.units}"
        )
    data = (rec.p_signal.T * UNIT_TO_UV[rec.units[0]]).astype(np.float32)
    events = []
    ann_file = record_path.with_name(f"{record_path.name}.{annotation}") if annotation else None
    if ann_file is not None and ann_file.exists():
        try:
            ann = wfdb.rdann(str(record_path), annotation)
        except Exception as err:
            raise BiosignalError(ann_file, "annotations", f"wfdb could not read them: {err}") from None
        events = [Event(float(s) / rec.fs, 0.0, str(sym)) for s, sym in zip(ann.sample, ann.symbol)]
    return Recording(
        data=data,
        sfreq=float(rec.fs),
        ch_names=list(rec.sig_name),
        unit="uV",
        modality=modality,
        events=events,
        label=label,
        subject=subject,
        session=session,
        source=str(record_path),
    )


def _check_wfdb_sizes(record_path: Path, head) -> None:
    if not head.sig_len or not head.file_name:
        return
    per_file: dict[str, list[str]] = {}
    for name, fmt in zip(head.file_name, head.fmt):
        per_file.setdefault(name, []).append(str(fmt))
    for name, fmts in per_file.items():
        dat = record_path.with_name(name)
        if not dat.exists():
            raise BiosignalError(dat, "path", "signal file named by the header does not exist")
        if any(f not in _WFDB_BYTES for f in fmts):
            continue
        expected = int(np.ceil(sum(_WFDB_BYTES[f] for f in fmts) * head.sig_len))
        size = dat.stat().st_size
        if size < expected:
            raise BiosignalError(dat, "size", f"file is {size} bytes, the header needs {expected}: truncated")


def read_array(
    path: str | Path,
    sfreq: float | None = None,
    ch_names: list[str] | None = None,
    unit: str | None = None,
    modality: str = "emg",
    layout: str = "times_channels",
    key: str | None = None,
    dtype: str | None = None,
    delimiter: str = ",",
    subject: str = "",
    session: str = "",
    label: str = "",
) -> Recording:
    """Read a plain array file; nothing is guessed: sfreq, channel names and unit are given.

    .csv/.txt (np.loadtxt, CRLF fine), .npy, .npz (`key` names the array when it holds several),
    anything else as headerless interleaved binary of `dtype` (e.g. the Myo armband's "<i2").
    layout: "times_channels" (one row per sample) or "channels_times".
    """
    path = require_file(path)
    # a plain array carries no metadata: the caller (or a sources file's reader_args) must say it all
    for name, value in (("sfreq", sfreq), ("ch_names", ch_names), ("unit", unit)):
        if value is None:
            raise BiosignalError(
                path, name, f"required for an array file (reader_args.{name}): it is not in the file"
            )
    check_sfreq(path, sfreq)  # before the shape checks, so a bad rate is named as such
    if layout not in ("times_channels", "channels_times"):
        raise BiosignalError(path, "layout", f"expected 'times_channels' or 'channels_times', got {layout!r}")
    n_channels = len(ch_names)
    suffix = path.suffix.lower()
    try:
        if suffix in (".csv", ".txt"):
            array = np.loadtxt(path, delimiter=delimiter, ndmin=2)
        elif suffix == ".npy":
            array = np.load(path, allow_pickle=False)
        elif suffix == ".npz":
            with np.load(path, allow_pickle=False) as npz:
                if key is None and len(npz.files) != 1:
                    raise BiosignalError(path, "key", f"the archive holds {npz.files}; name one with key=")
                array = npz[key or npz.files[0]]
        else:
            if dtype is None:
                raise BiosignalError(path, "dtype", "headerless binary needs an explicit dtype, e.g. '<i2'")
            flat = np.fromfile(path, dtype=np.dtype(dtype))
            if flat.size % n_channels:
                raise BiosignalError(
                    path,
                    "size",
                    f"{flat.size} samples is not a multiple of {n_channels} channels: truncated?",
                )
            array = flat.reshape(-1, n_channels)
    except BiosignalError:
        raise
    except (ValueError, OSError, KeyError) as err:
        raise BiosignalError(path, "data", f"could not parse: {err}") from None
    if array.ndim != 2:
        raise BiosignalError(path, "data", f"expected a 2-D array, got shape {array.shape}")
    if array.size == 0:
        raise BiosignalError(path, "data", f"zero-length recording: array of shape {array.shape}")
    data = array.T if layout == "times_channels" else array
    if data.shape[0] != n_channels:
        hint = " (set layout='channels_times'?)" if array.shape[0] == n_channels else ""
        raise BiosignalError(
            path, "ch_names", f"{n_channels} channel names for array of shape {array.shape}{hint}"
        )
    return Recording(
        data=np.ascontiguousarray(data, dtype=np.float32),
        sfreq=float(sfreq),
        ch_names=list(ch_names),
        unit=unit,
        modality=modality,
        label=label,
        subject=subject,
        session=session,
        source=str(path),
    )
