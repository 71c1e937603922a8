"""Channel vocabularies shared by the tokenizer and the foundation model: "modality:name" ids and the
10-05 positions of EEG sites."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


def vocabulary_ids(
    ch_names: list[list[str]],
    kind: str,
    vocab: list[str],
    index: dict[str, int],
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """Ids `(B, C)` of "kind:name" channels in `vocab` (0-padded), on `device`; unknown names are an error."""
    width = max(len(names) for names in ch_names)
    ids = torch.zeros(len(ch_names), width, dtype=torch.long)
    for b, names in enumerate(ch_names):
        unknown = [n for n in names if f"{kind}:{n}" not in index]
        if unknown:
            known = [v.split(":", 1)[1] for v in vocab if v.startswith(f"{kind}:")]
            raise ValueError(
                f"channels {unknown[:8]}{' ...' if len(unknown) > 8 else ''} of modality {kind!r} are not "
                f"in this model's vocabulary ({len(known)} {kind} channels, e.g. {known[:6]}); pass the "
                "names as preprocessing maps them (`preprocess(...).ch_names`, `Encoding.ch_names`)"
            )
        ids[b, : len(names)] = torch.tensor([index[f"{kind}:{n}"] for n in names])
    # non_blocking: a blocking copy makes the host wait for every queued GPU kernel (in a training step,
    # host and device would take turns); from pageable memory the driver stages the bytes before returning
    return ids.to(device, non_blocking=True)


def vocabulary_positions(vocab: list[str]) -> torch.Tensor:
    """`(len(vocab) + 1, 4)`: each "modality:name" channel's (x, y, z) in decimetres and 1 where the
    10-05 system places it (EEG), zeros elsewhere; row 0 is the padding id."""
    from data_prep.presets import eeg_positions

    # numpy, not torch factories: from_pretrained builds the model under a meta-device context
    table = np.zeros((len(vocab) + 1, 4), np.float32)
    eeg = [(i + 1, v.split(":", 1)[1]) for i, v in enumerate(vocab) if v.startswith("eeg:")]
    if eeg:
        positions = eeg_positions([name for _, name in eeg])
        for (row, _), pos in zip(eeg, positions):
            if np.isfinite(pos).all():
                table[row] = [*(10 * pos), 1.0]
    return torch.from_numpy(table)


def add_channel_positions(model: nn.Module, vocab: list[str], d_model: int) -> None:
    """Give `model` the `channel_pos` table of `vocab` and the `position_embed` MLP that `channel_vectors`
    adds: channels never seen in training still get their neighbours' embedding."""
    model.register_buffer("channel_pos", vocabulary_positions(vocab))
    model.position_embed = nn.Sequential(nn.Linear(4, d_model), nn.GELU(), nn.Linear(d_model, d_model))


def channel_vectors(
    model: nn.Module, channel_ids: torch.Tensor, name_keep: torch.Tensor | None = None
) -> torch.Tensor:
    """`(B, C)` ids -> `(B, C, d)`: `model.channel_embed` per name, plus one from the channel's position
    where `add_channel_positions` gave the model them. `name_keep` `(B, C)` bool: where False, the name's
    vector is left out (name dropout in training; the position stays)."""
    vectors = model.channel_embed(channel_ids)
    if name_keep is not None:
        vectors = vectors * name_keep[..., None].to(vectors.dtype)
    if hasattr(model, "position_embed"):
        vectors = vectors + model.position_embed(model.channel_pos[channel_ids].to(vectors.dtype))
    return vectors
