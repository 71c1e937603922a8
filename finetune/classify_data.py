"""Labelled epochs for classification: task files, epoch cutting and subject-independent folds.

A task file (YAML/JSON) names the recordings (source entries exactly as in `biotok prepare`), the
preset, the window relative to each event (`tmin`, `tmax` in seconds) or, for recordings labelled
as a whole, the length of consecutive windows (`tmax - tmin`), the classes, the channels and what
cross-validation groups by (`subject`, or `session` for repetitions). `Epochs.from_mne` takes any
labelled `mne.Epochs` instead.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml

from data_prep.corpus import CorpusSpec, SourceSpec, read_source, resolve_files
from data_prep.errors import BiosignalError, ConfigError
from data_prep.presets import Preset, get_preset, preprocess
from data_prep.recording import Recording

TASKS_DIR = Path(__file__).parent / "tasks"
GROUP_BY = ("subject", "session")
CLASSICAL = ("csp_lda", "bandpower_lr", "")


@dataclass
class ClassifyTask:
    name: str
    preset: str | dict
    sources: list[dict]
    classes: list[str]
    tmin: float = 0.0
    tmax: float = 4.0
    channels: list[str] | None = None
    group_by: str = "subject"
    folds: int = 0  # 0: leave one group out
    classical: str = "bandpower_lr"
    description: str = ""
    source_specs: list[SourceSpec] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if self.group_by not in GROUP_BY:
            raise ConfigError(
                f"task {self.name}.group_by", f"expected one of {GROUP_BY}, got {self.group_by!r}"
            )
        if self.classical not in CLASSICAL:
            raise ConfigError(
                f"task {self.name}.classical", f"expected one of {CLASSICAL}, got {self.classical!r}"
            )
        if not self.tmax > self.tmin:
            raise ConfigError(f"task {self.name}.tmax", f"must exceed tmin={self.tmin}, got {self.tmax}")
        if len(set(self.classes)) < 2:
            raise ConfigError(f"task {self.name}.classes", f"need at least two classes, got {self.classes}")
        try:
            self.source_specs = [SourceSpec(**s) for s in self.sources]
        except TypeError as err:
            raise ConfigError(f"task {self.name}.sources", f"bad source entry: {err}") from None
        preset = get_preset(self.preset)
        n = round((self.tmax - self.tmin) * preset.sfreq)
        if n % preset.patch_len:
            raise ConfigError(
                f"task {self.name}.tmax",
                f"the window ({n} samples at {preset.sfreq} Hz) must be a whole number of "
                f"{preset.patch_len}-sample patches",
            )

    @classmethod
    def load(cls, name_or_path: str | Path) -> ClassifyTask:
        """A shipped task by name (finetune/tasks/<name>.yaml) or a task file."""
        path = Path(name_or_path)
        if not path.exists():
            path = TASKS_DIR / f"{name_or_path}.yaml"
        if not path.exists():
            shipped = sorted(p.stem for p in TASKS_DIR.glob("*.yaml"))
            raise ConfigError("task", f"{name_or_path!r} is neither a file nor a shipped task {shipped}")
        try:
            spec = yaml.safe_load(path.read_text())
            return cls(**spec)
        except (yaml.YAMLError, TypeError) as err:
            raise ConfigError("task", f"could not read: {err}", source=path) from None


@dataclass
class Epochs:
    """Preprocessed labelled windows. data `(n, channels, times)` in the preset's scaled units."""

    data: np.ndarray
    labels: np.ndarray  # (n,) class index
    subjects: np.ndarray  # (n,) str
    groups: np.ndarray  # (n,) str: what folds split by
    classes: list[str]
    ch_names: list[str]
    sfreq: float
    preset: Preset

    def __len__(self) -> int:
        return len(self.labels)

    @classmethod
    def from_mne(
        cls, epochs, subjects, preset: str | dict = "eeg", classes: list[str] | None = None
    ) -> Epochs:
        """Any labelled `mne.Epochs` (labels from its event ids), one subject per epoch or one for all.

        Each epoch is preprocessed on its own with the preset (so filter edges stay inside the epoch)."""
        preset = get_preset(preset)
        id_to_name = {v: k for k, v in epochs.event_id.items()}
        names = [id_to_name[e] for e in epochs.events[:, 2]]
        classes = classes or sorted(set(names))
        unknown = sorted(set(names) - set(classes))
        if unknown:
            raise ConfigError("classes", f"events {unknown} are not among the classes {classes}")
        subjects = np.broadcast_to(np.asarray(subjects, dtype=str), (len(names),))
        data = epochs.get_data(copy=True)
        recs = [
            preprocess(
                Recording(x, float(epochs.info["sfreq"]), list(epochs.ch_names), "V", preset.modality), preset
            )
            for x in data
        ]
        return cls(
            data=np.stack([r.data for r in recs]),
            labels=np.array([classes.index(n) for n in names]),
            subjects=np.array(subjects),
            groups=np.array(subjects),
            classes=list(classes),
            ch_names=recs[0].ch_names,
            sfreq=recs[0].sfreq,
            preset=preset,
        )

    @classmethod
    def from_corpus(cls, corpus, classes: list[str] | None = None, group_by: str = "subject") -> Epochs:
        """The labelled windows of a prepared corpus (`data_prep.corpus.Corpus`); unlabelled ones are left out.

        The windows are already preprocessed with the corpus's preset; all must share one montage."""
        labels = corpus.column("label")
        classes = classes or sorted({label for label in labels if label})
        keep = [i for i, label in enumerate(labels) if label in classes]
        if not keep:
            raise BiosignalError(corpus.path, "label", f"no window is labelled with one of {classes}")
        rows = [corpus[i] for i in keep]
        montages = {tuple(r["ch_names"]) for r in rows}
        if len(montages) > 1:
            raise BiosignalError(
                corpus.path, "ch_names", f"{len(montages)} different montages; pick one channel set"
            )
        subjects = np.array([r["subject"] for r in rows])
        sessions = np.array([f"{r['subject']}/{r['session']}" for r in rows])
        return cls(
            data=np.stack([r["signal"] for r in rows]).astype(np.float32),
            labels=np.array([classes.index(r["label"]) for r in rows]),
            subjects=subjects,
            groups=subjects if group_by == "subject" else sessions,
            classes=list(classes),
            ch_names=list(rows[0]["ch_names"]),
            sfreq=corpus.preset.sfreq,
            preset=corpus.preset,
        )


def _cut(
    rec: Recording, source: SourceSpec, task: ClassifyTask, n_times: int
) -> list[tuple[np.ndarray, str]]:
    """(window, label) pairs of one preprocessed recording."""
    if source.label_from == "events":
        out = []
        for event in rec.events:
            label = (source.event_map or {}).get(event.description, event.description)
            if label not in task.classes:
                continue
            start = round((event.onset + task.tmin) * rec.sfreq)
            if start < 0 or start + n_times > rec.n_times:
                continue  # the window would run off the recording
            out.append((rec.data[:, start : start + n_times], label))
        return out
    if rec.label not in task.classes:
        return []
    first = round(max(task.tmin, 0.0) * rec.sfreq)
    return [
        (rec.data[:, s : s + n_times], rec.label) for s in range(first, rec.n_times - n_times + 1, n_times)
    ]


def load_epochs(task: ClassifyTask, root: str | Path, progress: bool = False) -> Epochs:
    """Read, preprocess and cut every recording of a task."""
    from tqdm.auto import tqdm

    preset = get_preset(task.preset)
    n_times = round((task.tmax - task.tmin) * preset.sfreq)
    spec = CorpusSpec(task.name, preset, task.source_specs)
    windows, labels, subjects, groups, ch_names = [], [], [], [], None
    for source, path, relative in tqdm(resolve_files(spec, root), desc=task.name, disable=not progress):
        rec = preprocess(read_source(path, source, preset.modality, relative), preset)
        if task.channels:
            rec = rec.pick(task.channels)
        if ch_names is None:
            ch_names = rec.ch_names
        elif rec.ch_names != ch_names:
            raise BiosignalError(
                path, "ch_names", f"expected the task's channels {ch_names}, got {rec.ch_names}"
            )
        for window, label in _cut(rec, source, task, n_times):
            windows.append(window)
            labels.append(task.classes.index(label))
            subjects.append(rec.subject)
            groups.append(rec.subject if task.group_by == "subject" else f"{rec.subject}/{rec.session}")
    if not windows:
        raise BiosignalError(root, "labels", f"no window of task {task.name} carries one of {task.classes}")
    missing = sorted(set(range(len(task.classes))) - set(labels))
    if missing:
        raise BiosignalError(root, "labels", f"no window of classes {[task.classes[i] for i in missing]}")
    return Epochs(
        data=np.stack(windows).astype(np.float32),
        labels=np.array(labels),
        subjects=np.array(subjects),
        groups=np.array(groups),
        classes=list(task.classes),
        ch_names=list(ch_names),
        sfreq=preset.sfreq,
        preset=preset,
    )


def group_folds(groups: np.ndarray, n_folds: int = 0, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """(train indices, test indices) per fold; every group (subject or repetition) lies in exactly one
    test set and never in train and test at once. n_folds 0 (or >= groups): leave one group out."""
    unique = np.array(sorted(set(groups.tolist())))
    if len(unique) < 2:
        raise ConfigError("folds", f"subject-independent folds need at least 2 groups, got {unique.tolist()}")
    if n_folds <= 0 or n_folds >= len(unique):
        assignment = [[g] for g in unique]
    else:
        shuffled = np.random.default_rng(seed).permutation(unique)
        assignment = [list(part) for part in np.array_split(shuffled, n_folds)]
    folds = []
    for test_groups in assignment:
        test = np.isin(groups, test_groups)
        folds.append((np.flatnonzero(~test), np.flatnonzero(test)))
    return folds
