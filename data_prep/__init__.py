"""data_prep: readers for real biosignal formats, per-modality presets, the corpus store and the
embedded synthetic data."""

from .corpus import Corpus, CorpusSpec, SourceSpec, load_corpora, load_sources, prepare_corpus
from .errors import BiosignalError, ConfigError
from .presets import PRESETS, Preset, get_preset, patchify, preprocess, windows
from .recording import Event, Recording

__all__ = [
    "BiosignalError",
    "ConfigError",
    "Corpus",
    "CorpusSpec",
    "Event",
    "PRESETS",
    "Preset",
    "Recording",
    "SourceSpec",
    "get_preset",
    "load_corpora",
    "load_sources",
    "patchify",
    "prepare_corpus",
    "preprocess",
    "windows",
]
