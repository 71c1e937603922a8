"""`BiotokClassifier`: the foundation model's pooled patch states into a small head.

Pooling: "mean" over every channel and patch `(B, d)`, or "channels": the mean over patches per
channel, the channels side by side `(B, C x d)`, which keeps where on the montage a state sits (a
lateralised rhythm, as in left/right motor imagery, averages away under "mean").

Linear probe: the foundation is frozen and only the head trains. Full fine-tuning: everything trains,
with layer-wise learning-rate decay applied per transformer block (every tensor of block i gets
lr x decay^(L - i)), the input embeddings one step below block 0, the head at the full rate.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import PretrainedConfig, PreTrainedModel

from core.blocks import init_weights
from core.training import weight_decay_groups
from foundation.config import FoundationConfig
from foundation.model import BiotokFoundation

POOLINGS = ("mean", "channels")


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
        **kwargs,
    ):
        if pooling not in POOLINGS:
            raise ValueError(f"pooling {pooling!r}: expected one of {POOLINGS}")
        if pooling == "channels" and n_channels < 1:
            raise ValueError("pooling 'channels' needs n_channels, the montage's channel count")
        self.foundation = dict(foundation or {})
        self.class_names = list(class_names or ["0", "1"])
        self.modality = modality
        self.pooling, self.n_channels = pooling, n_channels
        super().__init__(**kwargs)

    @property
    def n_classes(self) -> int:
        return len(self.class_names)


class Head(nn.Module):
    """LayerNorm + linear on pooled features `(B, d)` -> logits `(B, n_classes)`."""

    def __init__(self, d_model: int, n_classes: int):
        super().__init__()
        self.norm, self.linear = nn.LayerNorm(d_model), nn.Linear(d_model, n_classes)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.linear(self.norm(features))


class BiotokClassifier(PreTrainedModel):
    config_class = ClassifierConfig
    base_model_prefix = "classifier"

    def __init__(self, config: ClassifierConfig):
        super().__init__(config)
        self.foundation = BiotokFoundation(FoundationConfig.from_dict(config.foundation))
        d = self.foundation.config.d_model
        self.head = Head(d * (config.n_channels if config.pooling == "channels" else 1), config.n_classes)
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
    ) -> BiotokClassifier:
        """A classifier whose foundation starts from `foundation`'s weights (a copy) and whose head is new."""
        config = ClassifierConfig(foundation.config.to_dict(), class_names, modality, pooling, n_channels)
        model = cls(config)
        model.foundation.load_state_dict(foundation.state_dict())
        return model

    def features(
        self,
        channel_ids: torch.Tensor,
        codes: torch.Tensor | None = None,
        patches: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Pooled patch states: `(B, d)` mean over real channels and every patch ("mean"), or `(B, C x d)`
        the mean over patches of each channel, padding channels zero ("channels")."""
        hidden = self.foundation.encode(channel_ids, self.config.modality, codes=codes, patches=patches)
        weight = (channel_ids > 0).to(hidden.dtype)[:, :, None, None]
        if self.config.pooling == "channels":
            if hidden.shape[1] != self.config.n_channels:
                raise ValueError(
                    f"{hidden.shape[1]} channels given; this classifier pools {self.config.n_channels} by position"
                )
            return (hidden.mean(dim=2) * weight[:, :, 0]).flatten(1)
        return (hidden * weight).sum(dim=(1, 2)) / (weight.sum(dim=(1, 2)) * hidden.shape[2])

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
