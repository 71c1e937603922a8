"""The corpus store: preprocessed windows in HF `datasets` Arrow shards, memory-mapped.

A corpus is one folder per preset:
    <out>/<name>/corpus.json          manifest: preset, sources, shards, skipped files
    <out>/<name>/shard-00000-<hash>.arrow
Each record is one window of one recording: the signal `(n_channels, n_times)` (stored flat),
modality, sfreq, unit, channel names and positions, subject, session, label, the window's events
and the scaling that undoes the preset. A shard holds a fixed group of source files and its name
carries a hash of those files and the preset, so re-running `prepare` skips finished shards.
"""

from __future__ import annotations

import glob
import hashlib
import json
import re
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import yaml

from .atomic import atomic_path, write_json
from .errors import BiosignalError, ConfigError
from .presets import Preset, get_preset, preprocess, windows
from .recording import Recording

READERS = ("mne", "wfdb", "array", "emg2qwerty")
CORPUS_FORMAT = 1


def features():
    from datasets import Features, Sequence, Value

    return Features(
        {
            "signal": Sequence(Value("float32")),  # flat (n_channels * n_times): fastest Arrow layout
            "n_channels": Value("int32"),
            "n_times": Value("int32"),
            "ch_names": Sequence(Value("string")),
            "ch_pos": Sequence(Value("float32")),  # flat (n_channels * 3), metres, NaN if unknown
            "modality": Value("string"),
            "sfreq": Value("float32"),
            "unit": Value("string"),
            "scale_center": Sequence(Value("float32")),
            "scale_spread": Sequence(Value("float32")),
            "subject": Value("string"),
            "session": Value("string"),
            "source": Value("string"),
            "label": Value("string"),
            "window_start": Value("float64"),
            "events": Value(
                "string"
            ),  # JSON list of {onset, duration, description}, onsets within the window
        }
    )


@dataclass
class SourceSpec:
    """Files of one kind. `path` is a glob relative to the root; patterns are regexes searched in the
    path relative to the root, their groups joined by "-"."""

    path: str
    reader: str
    reader_args: dict = field(default_factory=dict)
    subject: str | None = None
    session: str | None = None
    label: str | None = None  # regex on the path giving the recording's label
    label_map: dict | None = None  # raw label -> label; files whose label is not in the map are skipped
    label_from: str = "recording"  # or "events": each window gets the event overlapping it most
    event_map: dict | None = None  # event description -> label (with label_from="events")

    def __post_init__(self) -> None:
        if self.reader not in READERS:
            raise ConfigError(f"source {self.path}.reader", f"expected one of {READERS}, got {self.reader!r}")
        if self.label_from not in ("recording", "events"):
            raise ConfigError(
                f"source {self.path}.label_from", f"expected 'recording' or 'events', got {self.label_from!r}"
            )
        if self.label_map is not None:
            self.label_map = {str(k): str(v) for k, v in self.label_map.items()}
        if self.event_map is not None:
            self.event_map = {str(k): str(v) for k, v in self.event_map.items()}


@dataclass
class CorpusSpec:
    name: str
    preset: Preset
    sources: list[SourceSpec]
    files_per_shard: int = 32

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "preset": self.preset.to_dict(),
            "sources": [asdict(s) for s in self.sources],
            "files_per_shard": self.files_per_shard,
        }


def load_sources(path: str | Path) -> list[CorpusSpec]:
    """Read a sources file (YAML or JSON): `corpora: {name: {preset, files_per_shard?, sources: [...]}}`."""
    path = Path(path)
    try:
        spec = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as err:
        raise ConfigError("sources", f"could not read: {err}", source=path) from None
    if not isinstance(spec, dict) or not isinstance(spec.get("corpora"), dict):
        raise ConfigError("corpora", "expected a mapping 'corpora: {name: {preset, sources}}'", source=path)
    result = []
    for name, body in spec["corpora"].items():
        try:
            sources = [SourceSpec(**s) for s in body["sources"]]
        except (TypeError, KeyError) as err:
            raise ConfigError(f"corpora.{name}.sources", f"bad source entry: {err}", source=path) from None
        preset = get_preset(body.get("preset", "eeg"))
        result.append(CorpusSpec(name, preset, sources, int(body.get("files_per_shard", 32))))
    return result


def _match(pattern: str | None, relative: str) -> str | None:
    if pattern is None:
        return None
    found = re.search(pattern, relative)
    if not found:
        return None
    return "-".join(g for g in found.groups() if g is not None) if found.groups() else found.group(0)


def read_source(path: Path, spec: SourceSpec, modality: str, relative: str) -> Recording:
    """Read one file with the source's reader; subject/session/label come from the path patterns."""
    from .emg2qwerty import read_session
    from .readers import read_array, read_mne, read_wfdb

    args = dict(spec.reader_args)
    if spec.reader == "mne":
        rec = read_mne(path, modality, **args)
    elif spec.reader == "wfdb":
        rec = read_wfdb(path, modality, **args)
    elif spec.reader == "array":
        rec = read_array(path, modality=modality, **args)
    else:
        rec = read_session(path).to_recording(**args)
    raw_label = _match(spec.label, relative)
    label = rec.label
    if raw_label is not None:
        label = spec.label_map.get(raw_label) if spec.label_map is not None else raw_label
        if label is None:
            raise BiosignalError(
                path, "label", f"{raw_label!r} is not in the label map {sorted(spec.label_map)}"
            )
    return rec.replace(
        subject=_match(spec.subject, relative) or rec.subject,
        session=_match(spec.session, relative) or rec.session,
        label=label,
    )


def resolve_files(spec: CorpusSpec, root: str | Path) -> list[tuple[SourceSpec, Path, str]]:
    """All (source, file, path relative to root) of a corpus, sorted, so shards are deterministic."""
    root = Path(root)
    files = []
    for source in spec.sources:
        matched = sorted(glob.glob(str(root / source.path), recursive=True))
        if not matched:
            raise BiosignalError(root / source.path, "path", "no file matches this source")
        for f in matched:
            files.append((source, Path(f), str(Path(f).relative_to(root))))
    return files


def _file_key(path: Path) -> str:
    stat = path.stat()
    return f"{path}:{stat.st_size}:{int(stat.st_mtime)}"


@dataclass
class PrepareReport:
    name: str
    path: Path
    n_windows: int
    n_files: int
    shards_written: int
    shards_skipped: int
    skipped_files: list[dict]


def prepare_corpus(
    spec: CorpusSpec, root: str | Path, out: str | Path, on_error: str = "raise", progress: bool = True
) -> PrepareReport:
    """Build (or complete) the corpus `out/<spec.name>` from the spec's files under `root`.

    on_error: "raise" stops at the first bad file with a clear error; "skip" leaves it out and lists
    it in the manifest and the report. Shards are written under a temporary name and renamed.
    """
    from datasets.arrow_writer import ArrowWriter
    from tqdm.auto import tqdm

    if on_error not in ("raise", "skip"):
        raise ConfigError("on_error", f"expected 'raise' or 'skip', got {on_error!r}")
    folder = Path(out) / spec.name
    folder.mkdir(parents=True, exist_ok=True)
    files = resolve_files(spec, root)
    groups = [files[i : i + spec.files_per_shard] for i in range(0, len(files), spec.files_per_shard)]
    feats = features()
    shards, skipped = [], []
    written = reused = 0
    bar = tqdm(total=len(files), desc=f"prepare {spec.name}", unit="file", disable=not progress)
    for index, group in enumerate(groups):
        digest = hashlib.sha256(
            json.dumps([spec.preset.fingerprint(), [(asdict(s), _file_key(f)) for s, f, _ in group]]).encode()
        ).hexdigest()[:12]
        shard = folder / f"shard-{index:05d}-{digest}.arrow"
        meta = shard.with_suffix(".json")
        if shard.exists() and meta.exists():
            info = json.loads(meta.read_text())
            shards.append(info)
            skipped.extend(info["skipped"])
            reused += 1
            bar.update(len(group))
            continue
        n_windows, group_skipped = 0, []
        with atomic_path(shard) as tmp:
            writer = ArrowWriter(features=feats, path=str(tmp))
            for source, path, relative in group:
                bar.set_postfix_str(relative[-40:], refresh=False)
                try:
                    rec = preprocess(read_source(path, source, spec.preset.modality, relative), spec.preset)
                    for window in windows(rec, spec.preset, source.label_from, source.event_map):
                        writer.write(_record(rec, window, spec.preset))
                        n_windows += 1
                except BiosignalError as err:
                    if on_error == "raise":
                        writer.close()
                        raise
                    group_skipped.append({"file": str(path), "error": str(err)})
                bar.update(1)
            writer.finalize()
            writer.close()
        info = {
            "file": shard.name,
            "n_windows": n_windows,
            "files": [r for _, _, r in group],
            "skipped": group_skipped,
        }
        write_json(meta, info)
        shards.append(info)
        skipped.extend(group_skipped)
        written += 1
    bar.close()
    keep = {s["file"] for s in shards} | {Path(s["file"]).with_suffix(".json").name for s in shards}
    for stale in list(folder.glob("shard-*.arrow")) + list(folder.glob("shard-*.json")):
        if stale.name not in keep:
            stale.unlink()
    n_windows = sum(s["n_windows"] for s in shards)
    manifest = {
        "format": CORPUS_FORMAT,
        **spec.to_dict(),
        "root": str(Path(root).resolve()),
        "n_windows": n_windows,
        "n_files": len(files),
        "shards": shards,
        "skipped": skipped,
    }
    write_json(folder / "corpus.json", manifest)
    return PrepareReport(spec.name, folder, n_windows, len(files), written, reused, skipped)


def _record(rec: Recording, window, preset: Preset) -> dict:
    ch_pos = rec.ch_pos if rec.ch_pos is not None else np.full((rec.n_channels, 3), np.nan, np.float32)
    return {
        "signal": window.data.reshape(-1),
        "n_channels": window.data.shape[0],
        "n_times": window.data.shape[1],
        "ch_names": rec.ch_names,
        "ch_pos": np.asarray(ch_pos, np.float32).reshape(-1),
        "modality": rec.modality,
        "sfreq": rec.sfreq,
        "unit": rec.unit,
        "scale_center": rec.scale_center,
        "scale_spread": rec.scale_spread,
        "subject": rec.subject,
        "session": rec.session,
        "source": rec.source,
        "label": window.label,
        "window_start": window.start,
        "events": json.dumps(window.events),
    }


class Corpus:
    """A prepared corpus, memory-mapped. `corpus[i]` gives one window with its signal as
    `(n_channels, n_times)` float32; `corpus.dataset` is the underlying HF `Dataset`."""

    FORMAT = CORPUS_FORMAT
    ARRAY_COLUMN = "signal"  # the big column, read as numpy
    MADE_BY = "biotok prepare"

    def __init__(self, path: str | Path):
        from datasets import Dataset, concatenate_datasets

        self.path = Path(path)
        manifest = self.path / "corpus.json"
        if not manifest.exists():
            raise BiosignalError(
                self.path, "corpus.json", f"not a corpus of this kind (run `{self.MADE_BY}`)"
            )
        self.info = json.loads(manifest.read_text())
        if self.info.get("format") != self.FORMAT:
            raise BiosignalError(
                manifest, "format", f"expected corpus format {self.FORMAT}, got {self.info.get('format')}"
            )
        self.preset = get_preset(self.info["preset"])
        parts = []
        for shard in self.info["shards"]:
            file = self.path / shard["file"]
            if not file.exists():
                raise BiosignalError(
                    file, "shard", f"listed in corpus.json but missing: re-run `{self.MADE_BY}`"
                )
            if shard["n_windows"]:
                parts.append(Dataset.from_file(str(file)))
        feats = self.features()
        empty = Dataset.from_dict({k: [] for k in feats}, features=feats)
        self._use(concatenate_datasets(parts) if parts else empty)

    @staticmethod
    def features():
        return features()

    def _use(self, dataset) -> None:
        """Hold `dataset` and its numpy-formatted view (one place for __init__ and select)."""
        self.dataset = dataset
        self._numpy = dataset.with_format("numpy", columns=[self.ARRAY_COLUMN], output_all_columns=True)

    @property
    def name(self) -> str:
        return self.info["name"]

    def select(self, indices) -> Corpus:
        """A view of some windows (e.g. held-out subjects), sharing the memory-mapped shards."""
        view = object.__new__(type(self))
        view.__dict__.update(self.__dict__)
        view._use(self.dataset.select(list(indices)))
        return view

    def held_out_subjects(
        self, holdout_fraction: float, holdout_subjects: dict[str, list[str]] | None = None
    ) -> set[str]:
        """The subjects `holdout_subjects[self.name]` where given, else whole subjects chosen by a hash of
        their names (`holdout_fraction` of them, at least one; none when the corpus has a single subject)."""
        if holdout_subjects and self.name in holdout_subjects:
            return set(holdout_subjects[self.name])
        unique = sorted(set(self.column("subject")), key=lambda s: hashlib.sha256(s.encode()).hexdigest())
        n_out = int(round(holdout_fraction * len(unique))) if len(unique) > 1 else 0
        if len(unique) > 1 and holdout_fraction > 0:
            n_out = max(1, n_out)
        return set(unique[:n_out])

    def subject_indices(self, held: set[str]) -> tuple[list[int], list[int]]:
        """(train, held-out) window indices, in corpus order, for a set of held-out subjects; unknown
        names are an error."""
        subjects = self.column("subject")
        missing = set(held) - set(subjects)
        if missing:
            raise ConfigError(
                f"holdout_subjects.{self.name}",
                f"subjects {sorted(missing)} are not in this corpus (it has {sorted(set(subjects))})",
            )
        train = [i for i, s in enumerate(subjects) if s not in held]
        test = [i for i, s in enumerate(subjects) if s in held]
        return train, test

    def split_by_subject(self, holdout_fraction: float) -> tuple[Corpus, Corpus]:
        """(train, held-out) views; whole subjects are held out, chosen by a hash of their names.

        With a single subject nothing can be held out and the held-out view is empty."""
        return self.split_subjects(self.held_out_subjects(holdout_fraction))

    def split_subjects(self, held: set[str]) -> tuple[Corpus, Corpus]:
        """(train, held-out) views for a given set of held-out subjects; unknown names are an error."""
        train, test = self.subject_indices(held)
        return self.select(train), self.select(test)

    def split(
        self, holdout_fraction: float, holdout_subjects: dict[str, list[str]] | None = None
    ) -> tuple[Corpus, Corpus]:
        """The subjects `holdout_subjects[self.name]` held out where given, else the hash split."""
        return self.split_subjects(self.held_out_subjects(holdout_fraction, holdout_subjects))

    def split_indices(
        self, holdout_fraction: float, holdout_subjects: dict[str, list[str]] | None = None
    ) -> tuple[list[int], list[int]]:
        """The (train, held-out) window indices behind `split`, in corpus order."""
        return self.subject_indices(self.held_out_subjects(holdout_fraction, holdout_subjects))

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict:
        row = self._numpy[int(index)]
        n_channels, n_times = int(row["n_channels"]), int(row["n_times"])
        row["signal"] = np.asarray(row["signal"], np.float32).reshape(n_channels, n_times)
        row["ch_pos"] = np.asarray(row["ch_pos"], np.float32).reshape(n_channels, 3)
        row["ch_names"] = list(row["ch_names"])
        row["scale_center"] = np.asarray(row["scale_center"], np.float32)
        row["scale_spread"] = np.asarray(row["scale_spread"], np.float32)
        row["events"] = json.loads(row["events"])
        return row

    def __iter__(self) -> Iterator[dict]:
        for i in range(len(self)):
            yield self[i]

    def column(self, name: str) -> list:
        return self.dataset[name]


def split_corpora(
    corpora: dict, holdout_fraction: float, holdout_subjects: str | dict | None = None
) -> tuple[dict, dict]:
    """(train, held-out) views of every corpus by name: the subjects that `holdout_subjects` (a dict or
    its JSON, by corpus name) lists for a corpus, else that corpus's subject hash split."""
    if isinstance(holdout_subjects, str):
        holdout_subjects = json.loads(holdout_subjects) if holdout_subjects else None
    train, held = {}, {}
    for name, corpus in corpora.items():
        train[name], held[name] = corpus.split(holdout_fraction, holdout_subjects)
    return train, held


def load_corpora(
    paths: list[str | Path] | str | Path, kind: type[Corpus] = Corpus, **kwargs
) -> dict[str, Corpus]:
    """Load corpora by folder; a folder holding several corpora (one per preset) loads them all.

    `kind` is the corpus class (`Corpus`, or `foundation.tokens.TokenCorpus`); kwargs go to it."""
    if isinstance(paths, (str, Path)):
        paths = [paths]
    result = {}
    for p in map(Path, paths):
        found = [p] if (p / "corpus.json").exists() else sorted(q.parent for q in p.glob("*/corpus.json"))
        if not found:
            raise BiosignalError(p, "corpus.json", f"no corpus here (run `{kind.MADE_BY}`)")
        for folder in found:
            corpus = kind(folder, **kwargs)
            result[corpus.name] = corpus
    return result
