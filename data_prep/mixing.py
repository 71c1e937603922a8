"""Sample batches across several corpora by weight (e.g. 60% EEG, 30% EMG, 10% ECG).

Each batch comes from one corpus, so every batch has one preset's window length; channel counts
may differ between recordings of one corpus (EEG montages) and are padded by `collate_windows`.
The sampler is an exact-resume iterator: `state_dict()` captures the random state and every
corpus's position. Under data parallelism every rank builds it with the same seed and its own `rank`:
the ranks then choose the same corpus for each step and take disjoint parts of one global batch of
`batch_size * world_size` windows (as `DistributedSampler` does), so an epoch visits each window once
across all ranks, not once per rank.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

from .corpus import Corpus
from .errors import ConfigError


class MixedCorpus(torch.utils.data.IterableDataset):
    """Endless batches drawn from `corpora` with probabilities `weights`.

    Within a corpus, windows are visited in a fresh random order every epoch (each window once
    per epoch over all ranks). Yields this rank's `batch_size` windows collated by `collate`
    (default `collate_windows`).
    """

    def __init__(
        self,
        corpora: dict[str, Corpus],
        weights: dict[str, float] | None = None,
        batch_size: int = 32,
        seed: int = 0,
        collate=None,
        rank: int = 0,
        world_size: int = 1,
    ):
        super().__init__()
        if not 0 <= rank < world_size:
            raise ConfigError("rank", f"expected 0 <= rank < world_size={world_size}, got {rank}")
        if not corpora:
            raise ConfigError("corpora", "at least one corpus is needed")
        weights = weights or {name: float(len(c)) for name, c in corpora.items()}
        unknown = set(weights) - set(corpora)
        if unknown:
            raise ConfigError("weights", f"no corpus named {sorted(unknown)}; have {sorted(corpora)}")
        self.names = [n for n in corpora if weights.get(n, 0) > 0 and len(corpora[n])]
        if not self.names:
            raise ConfigError("weights", "every corpus has zero weight or no windows")
        total = sum(weights[n] for n in self.names)
        self.probs = np.array([weights[n] / total for n in self.names])
        self.corpora = corpora
        self.batch_size = batch_size
        self.seed, self.rank, self.world_size = seed, rank, world_size
        self.collate = collate or collate_windows  # token corpora pass their own
        self.load_state_dict({"rng": None, "positions": {n: [0, 0] for n in self.names}})

    def state_dict(self) -> dict:
        return {
            "rng": self.rng.bit_generator.state,
            "positions": {n: list(p) for n, p in self.positions.items()},
        }

    def load_state_dict(self, state: dict) -> None:
        self.rng = np.random.default_rng(self.seed)
        if state["rng"] is not None:
            self.rng.bit_generator.state = state["rng"]
        self.positions = {n: list(state["positions"][n]) for n in self.names}  # [epoch, offset]

    def _order(self, name: str, epoch: int) -> np.ndarray:
        return np.random.default_rng([self.seed, epoch, self.names.index(name)]).permutation(
            len(self.corpora[name])
        )

    def next_indices(self) -> tuple[str, list[int]]:
        """Choose a corpus by weight, take the next `batch_size * world_size` windows of its epoch
        order and return this rank's part of them."""
        name = self.names[int(self.rng.choice(len(self.names), p=self.probs))]
        indices, wanted = [], self.batch_size * self.world_size
        while len(indices) < wanted:
            epoch, offset = self.positions[name]
            order = self._order(name, epoch)
            take = order[offset : offset + wanted - len(indices)]
            indices.extend(int(i) for i in take)
            offset += len(take)
            self.positions[name] = [epoch + 1, 0] if offset >= len(order) else [epoch, offset]
        return name, indices[self.rank * self.batch_size : (self.rank + 1) * self.batch_size]

    def next_batch(self) -> dict:
        name, indices = self.next_indices()
        return self.collate([self.corpora[name][i] for i in indices], corpus=name)

    def __iter__(self) -> Iterator[dict]:
        while True:
            yield self.next_batch()


def collate_windows(items: list[dict], corpus: str = "") -> dict:
    """Stack windows of one length; pad channels to the batch's largest montage.

    Returns signal `(batch, channels, times)`, channel_mask `(batch, channels)` (True = real channel),
    ch_pos `(batch, channels, 3)` and per-item lists of channel names, modality, labels, subjects.
    """
    n_times = {it["signal"].shape[1] for it in items}
    if len(n_times) != 1:
        raise ConfigError("batch", f"windows of different lengths {sorted(n_times)} cannot share a batch")
    max_channels = max(it["signal"].shape[0] for it in items)
    batch = len(items)
    signal = torch.zeros(batch, max_channels, n_times.pop())
    mask = torch.zeros(batch, max_channels, dtype=torch.bool)
    ch_pos = torch.full((batch, max_channels, 3), float("nan"))
    for i, it in enumerate(items):
        c = it["signal"].shape[0]
        signal[i, :c] = torch.from_numpy(it["signal"])
        mask[i, :c] = True
        ch_pos[i, :c] = torch.from_numpy(it["ch_pos"])
    return {
        "signal": signal,
        "channel_mask": mask,
        "ch_pos": ch_pos,
        "ch_names": [it["ch_names"] for it in items],
        "modality": [it["modality"] for it in items],
        "sfreq": float(items[0]["sfreq"]),
        "label": [it["label"] for it in items],
        "subject": [it["subject"] for it in items],
        "corpus": corpus,
    }
