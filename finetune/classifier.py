"""`BiotokClassifier`: the foundation model's pooled patch states into a small head.

Pooling: "mean" over every channel and patch `(B, d)`, or "channels": the mean over patches per
channel, the channels side by side `(B, C x d)`, which keeps where on the montage a state sits (a
lateralised rhythm, as in left/right motor imagery, averages away under "mean"), or "spatial_power":
CSP's form on the patch states, `n_filters` learnt spatial filters (mixtures of the channels) and the log
of each filtered state sequence's power (second moment over patches and state dimensions) `(B, n_filters)`.
A mean of states is linear in them and cannot form a power; CSP + LDA reads motor imagery through exactly
a spatial filter and a log variance, and CSP + LDA on the tokenizer's codebook vectors of the 8-30 Hz,
no-frontal task reaches what it reaches on the signal (docs/BENCHMARKS.md, issue 17).

Linear probe: the foundation is frozen and only the pooling (its spatial filters, if any) and the head
train. Full fine-tuning: everything trains, with layer-wise learning-rate decay applied per transformer
block (every tensor of block i gets lr x decay^(L - i)), the input embeddings one step below block 0, the
pooling and the head at the full rate.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import PretrainedConfig, PreTrainedModel

from core.blocks import init_weights
from core.training import weight_decay_groups
from foundation.config import FoundationConfig
from foundation.model import BiotokFoundation

POOLINGS = ("mean", "channels", "spatial_power")
BY_POSITION = ("channels", "spatial_power")  # poolings that give each montage position its own weights


class ClassifierConfig(PretrainedConfig):
    """A foundation config (as a dict), the classes and the modality (preset name) the model reads."""

    model_type = "biotok_classifier"

    def __init__(
        self,
        foundation: dict | None = None,
        class_names: list[str] | None = None,
        modality: str = "eeg",
        pooling: str = "mean",
        n_channels: int = 0,
        n_filters: int = 8,
        **kwargs,
    ):
        if pooling not in POOLINGS:
            raise ValueError(f"pooling {pooling!r}: expected one of {POOLINGS}")
        if pooling in BY_POSITION and n_channels < 1:
            raise ValueError(f"pooling {pooling!r} needs n_channels, the montage's channel count")
        self.foundation = dict(foundation or {})
        self.class_names = list(class_names or ["0", "1"])
        self.modality = modality
        self.pooling, self.n_channels, self.n_filters = pooling, n_channels, n_filters
        super().__init__(**kwargs)

    @property
    def n_classes(self) -> int:
        return len(self.class_names)


class Head(nn.Module):
    """LayerNorm + linear on pooled features `(B, d)` -> logits `(B, n_classes)`; without the norm for a
    few log powers ("spatial_power": a LayerNorm over 2-8 of them would keep little more than their order)."""

    def __init__(self, d_model: int, n_classes: int, norm: bool = True):
        super().__init__()
        self.norm = nn.LayerNorm(d_model) if norm else nn.Identity()
        self.linear = nn.Linear(d_model, n_classes)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.linear(self.norm(features))


def patch_centred(hidden: torch.Tensor, channel_ids: torch.Tensor) -> torch.Tensor:
    """Patch states `(B, C, P, d)` centred over patches, padding channels (id 0) zero: what CSP's form reads
    (a channel's own embedding, the same at every patch, is not power)."""
    weight = (channel_ids > 0).to(hidden.dtype)[:, :, None, None]
    return (hidden - hidden.mean(dim=2, keepdim=True)) * weight


class Pool(nn.Module):
    """Patch states `(B, C, P, d)` and channel ids `(B, C)` (0: padding) -> features, by `pooling`."""

    def __init__(self, pooling: str, n_channels: int, n_filters: int):
        super().__init__()
        self.pooling, self.n_channels = pooling, n_channels
        if pooling == "spatial_power":
            # orthonormal rows: distinct filters at the start, each of unit gain over the montage
            self.spatial_filters = nn.Parameter(nn.init.orthogonal_(torch.empty(n_filters, n_channels)))

    def forward(self, hidden: torch.Tensor, channel_ids: torch.Tensor) -> torch.Tensor:
        weight = (channel_ids > 0).to(hidden.dtype)[:, :, None, None]
        if self.pooling in BY_POSITION and hidden.shape[1] != self.n_channels:
            raise ValueError(
                f"{hidden.shape[1]} channels given; this classifier pools {self.n_channels} by position"
            )
        if self.pooling == "channels":
            return (hidden.mean(dim=2) * weight[:, :, 0]).flatten(1)
        if self.pooling == "spatial_power":
            states = patch_centred(hidden, channel_ids)
            filtered = torch.einsum("fc,bcpd->bfpd", self.spatial_filters.to(states.dtype), states)
            return torch.log(filtered.float().pow(2).mean(dim=(2, 3)) + 1e-6)
        return (hidden * weight).sum(dim=(1, 2)) / (weight.sum(dim=(1, 2)) * hidden.shape[2])


class Readout(nn.Module):
    """`Pool` then `Head`: what a linear probe trains on frozen patch states `(B, C, P, d)`."""

    def __init__(self, pool: Pool, head: Head):
        super().__init__()
        self.pool, self.head = pool, head

    def forward(self, hidden: torch.Tensor, channel_ids: torch.Tensor) -> torch.Tensor:
        return self.head(self.pool(hidden, channel_ids))


class TopBlocks(nn.Module):
    """`model`'s blocks from `first` on, its final norm, pooling and head, reading the residual stream
    below them `(B, C, P, d)` (`frozen_states(model, ..., below=first)`): what fine-tuning only the top blocks
    trains, without running the frozen ones again every step. Shares `model`'s parameters."""

    def __init__(self, model: BiotokClassifier, first: int):
        super().__init__()
        self.model, self.first = model, first

    def forward(self, hidden: torch.Tensor, channel_ids: torch.Tensor) -> torch.Tensor:
        states = self.model.foundation.encode_from(hidden, channel_ids, self.first)
        return self.model.head(self.model.pool(states, channel_ids))


class BiotokClassifier(PreTrainedModel):
    config_class = ClassifierConfig
    base_model_prefix = "classifier"

    def __init__(self, config: ClassifierConfig):
        super().__init__(config)
        self.foundation = BiotokFoundation(FoundationConfig.from_dict(config.foundation))
        d = self.foundation.config.d_model
        width = {"mean": d, "channels": d * config.n_channels, "spatial_power": config.n_filters}
        self.pool = Pool(config.pooling, config.n_channels, config.n_filters)
        self.head = Head(width[config.pooling], config.n_classes, norm=config.pooling != "spatial_power")
        self.post_init()
        self.head.apply(init_weights)  # the foundation initialised itself in its own constructor

    def _init_weights(self, module: nn.Module) -> None:
        init_weights(module)

    @classmethod
    def from_foundation(
        cls,
        foundation: BiotokFoundation,
        class_names: list[str],
        modality: str,
        pooling: str = "mean",
        n_channels: int = 0,
        n_filters: int = 8,
    ) -> BiotokClassifier:
        """A classifier whose foundation starts from `foundation`'s weights (a copy) and whose head is new."""
        config = ClassifierConfig(
            foundation.config.to_dict(), class_names, modality, pooling, n_channels, n_filters
        )
        model = cls(config)
        model.foundation.load_state_dict(foundation.state_dict())
        return model

    def features(
        self,
        channel_ids: torch.Tensor,
        codes: torch.Tensor | None = None,
        patches: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Pooled patch states: `(B, d)` mean over real channels and every patch ("mean"), `(B, C x d)`
        the mean over patches of each channel, padding channels zero ("channels"), or `(B, n_filters)` the
        log power of each spatially filtered, patch-centred state sequence ("spatial_power")."""
        hidden = self.foundation.encode(channel_ids, self.config.modality, codes=codes, patches=patches)
        return self.pool(hidden, channel_ids)

    def forward(
        self,
        channel_ids: torch.Tensor,
        codes: torch.Tensor | None = None,
        patches: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """channel ids `(B, C)`, codes `(B, C, P, S, Q)` or patches `(B, C, P, L)` -> logits `(B, classes)`."""
        return self.head(self.features(channel_ids, codes, patches))


def block_depth(name: str, n_layers: int) -> int:
    """0 for the input embeddings, i + 1 for transformer block i, n_layers + 1 for what follows."""
    prefix = "foundation.encoder.blocks."
    if name.startswith(prefix):
        return int(name[len(prefix) :].split(".")[0]) + 1
    if name.startswith("foundation.") and not name.startswith(("foundation.encoder.ln", "foundation.head")):
        return 0
    return n_layers + 1


def layer_decay_groups(model: BiotokClassifier, lr: float, decay: float, weight_decay: float) -> list[dict]:
    """AdamW groups: one learning rate per transformer block, lr x decay^(L + 1 - depth)."""
    n_layers = model.foundation.config.n_layers
    names = {id(p): n for n, p in model.named_parameters()}
    groups = []
    for group in weight_decay_groups(model, weight_decay):
        by_depth: dict[int, list] = {}
        for param in group["params"]:
            if param.requires_grad:
                by_depth.setdefault(block_depth(names[id(param)], n_layers), []).append(param)
        for depth, params in sorted(by_depth.items()):
            scale = decay ** (n_layers + 1 - depth)
            groups.append({**group, "params": params, "lr": lr * scale, "depth": depth})
    return groups
