"""Run a tokenizer over a corpus and keep what reconstruction metrics need."""

from __future__ import annotations

import numpy as np
import torch

from data_prep.mixing import collate_windows

from .metrics import reconstruction_metrics
from .model import BiotokTokenizer


def row_metrics(target: np.ndarray, estimate: np.ndarray) -> dict[str, float]:
    """SNR / NMSE / Pearson correlation of rows `(n, T)` (real channel-windows only)."""
    return reconstruction_metrics(torch.from_numpy(target)[None], torch.from_numpy(estimate)[None])


@torch.no_grad()
def reconstruct(
    model: BiotokTokenizer,
    corpus,
    levels: list[int],
    batch_size: int,
    device,
    bf16: bool = False,
    continuous: bool = False,
    keep_codes: bool = False,
    variable_depth: bool = False,
) -> dict:
    """Every real channel-window of `corpus` (a corpus or a view of one) as rows `(n, T)`: the target,
    its reconstruction from the first n RVQ levels for each n in `levels`, the code counts `(S, Q, K)`
    and each row's scale (spread, center) to undo the preset's scaling. `bf16` autocasts encode and
    decode (deep-level codes then differ from float32, see docs/BENCHMARKS.md). `continuous` adds
    estimate["continuous"]: the unquantized latents decoded. `keep_codes` adds "codes": each window's
    codes `(n_channels, P, S, Q)`, in window order. `variable_depth`: encode with that option at the one
    number of levels in `levels` (codes of absent levels are -1; see `encode_patches`)."""
    if variable_depth and len(levels) != 1:
        raise ValueError(f"variable_depth encodes at one number of levels, got {levels}")
    key, patch_len = corpus.preset.name, corpus.preset.patch_len
    cfg = model.config
    counts = torch.zeros(cfg.n_scales, cfg.n_levels, cfg.codebook_size, dtype=torch.float64)
    keys = [*levels, "continuous"] if continuous else levels
    targets, estimates, spreads, centers, names = [], {n: [] for n in keys}, [], [], []
    window_codes = []
    for start in range(0, len(corpus), batch_size):
        items = [corpus[i] for i in range(start, min(start + batch_size, len(corpus)))]
        batch = collate_windows(items)
        b, c, t = batch["signal"].shape
        patches = batch["signal"].view(b, c, t // patch_len, patch_len).to(device)
        ids = model.channel_ids(batch["ch_names"], key)
        with torch.autocast(device.type, torch.bfloat16, enabled=bf16):
            codes = model.encode_patches(
                patches,
                ids,
                key,
                levels[0] if variable_depth else None,
                allow_bf16=bf16,
                variable_depth=variable_depth,
            )
        valid = batch["channel_mask"]
        valid_codes = codes[valid.to(device)]  # (rows, P, S, Q)
        for s in range(cfg.n_scales):
            for q in range(cfg.n_levels):
                level = valid_codes[:, :, s, q].reshape(-1)
                level = level[level >= 0]  # -1: a level a variable-depth token lacks
                counts[s, q] += torch.bincount(level, minlength=cfg.codebook_size).double().cpu()
        for n in levels:
            with torch.autocast(device.type, torch.bfloat16, enabled=bf16):
                # variable depth: a token may have more than n levels, its absent ones are -1
                recon = model.decode_patches(codes if variable_depth else codes[..., :n], ids, key)
            estimates[n].append(recon.float().reshape(b, c, t)[valid.to(device)].cpu().numpy())
        if continuous:
            recon = model.autoencode_patches(patches, ids, key)
            estimates["continuous"].append(recon.float().reshape(b, c, t)[valid.to(device)].cpu().numpy())
        targets.append(batch["signal"][valid].numpy())
        if keep_codes:
            kept = codes.cpu().numpy()
            window_codes += [kept[i, : len(it["ch_names"])] for i, it in enumerate(items)]
        for it in items:
            spreads.append(it["scale_spread"])
            centers.append(it["scale_center"])
            names.extend(it["ch_names"])
    return {
        "target": np.concatenate(targets),
        "estimate": {n: np.concatenate(v) for n, v in estimates.items()},
        "counts": counts,
        "spread": np.concatenate(spreads),
        "center": np.concatenate(centers),
        "ch_names": names,
        **({"codes": window_codes} if keep_codes else {}),
    }
