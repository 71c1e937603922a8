"""Reconstruction and codebook metrics, shared by training, tests and benchmarks."""

from __future__ import annotations

import torch


def reconstruction_metrics(
    target: torch.Tensor, estimate: torch.Tensor, valid: torch.Tensor | None = None
) -> dict[str, float]:
    """SNR (dB), NMSE and mean Pearson correlation over channel-windows.

    target/estimate `(B, C, T)`; valid `(B, C)` bool marks real channels.
    """
    target, estimate = target.double(), estimate.double()
    if valid is None:
        valid = torch.ones(target.shape[:2], dtype=torch.bool, device=target.device)
    x, y = target[valid], estimate[valid]  # (n, T)
    error = ((x - y) ** 2).sum()
    power = (x**2).sum().clamp(min=1e-30)
    xc, yc = x - x.mean(dim=1, keepdim=True), y - y.mean(dim=1, keepdim=True)
    pcc = (xc * yc).sum(dim=1) / ((xc.norm(dim=1) * yc.norm(dim=1)).clamp(min=1e-30))
    return {
        "snr_db": float(10 * torch.log10(power / error.clamp(min=1e-30))),
        "nmse": float(error / power),
        "pcc": float(pcc.mean()),
    }


def codebook_stats(counts: torch.Tensor) -> dict[str, torch.Tensor]:
    """counts `(..., K)` -> fraction of codes used, perplexity and normalised entropy, each `(...)`."""
    counts = counts.double()
    p = counts / counts.sum(dim=-1, keepdim=True).clamp(min=1e-12)
    entropy = -(p * torch.log(p.clamp(min=1e-12))).sum(dim=-1)
    k = counts.shape[-1]
    return {
        "used": (counts > 0).double().mean(dim=-1),
        "perplexity": entropy.exp(),
        "entropy": entropy / torch.log(torch.tensor(float(k))),
    }
