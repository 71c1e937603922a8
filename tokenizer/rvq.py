"""Residual vector quantisation with EMA codebooks, the way it works best in practice.

- True residuals: level l quantises what levels < l left over (no re-normalisation), so the sum of
  codes keeps the input's norm.
- Nearest code by argmax(x·c - ½‖c‖²) in float32, under no_grad, in row chunks.
- k-means initialisation on the first training batch (gathered from all ranks under DDP).
- EMA updates of counts and sums with index_add (never a one-hot N x K tensor), all-reduced
  across ranks; Laplace smoothing.
- Dead codes (EMA count below `dead_code_threshold` x the uniform share) are replaced by recent
  residuals at that level and their EMA state reset, without host syncs.
- Quantizer dropout (DAC): a fraction of each batch decodes with only the first n ~ U{1..L} levels.
- Commitment: "levels" pulls each level's residual toward its code (SoundStream, vector-quantize-pytorch):
  its first-level term pulls the encoder onto the first codebook, which a model trained that way
  learns to do (latents within 1-2% of a level-1 code, deeper levels with nothing left to add;
  docs/BENCHMARKS.md). "output" pulls the input toward the sum of all its active levels only.
- Eval mode never changes any buffer.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def nearest_codes(x: torch.Tensor, codebook: torch.Tensor, chunk: int = 65536) -> torch.Tensor:
    """Index of the nearest code (Euclidean) for each row of x `(n, d)` in codebook `(k, d)`."""
    out = torch.empty(x.shape[0], dtype=torch.long, device=x.device)
    # float32 scores even inside a bf16 autocast region: bf16 scores pick wrong neighbours
    with torch.autocast(x.device.type, enabled=False):
        x, codebook = x.float(), codebook.float()
        half_norm = 0.5 * codebook.pow(2).sum(dim=1)
        for start in range(0, x.shape[0], chunk):
            scores = torch.addmm(-half_norm, x[start : start + chunk], codebook.t())
            out[start : start + chunk] = scores.argmax(dim=1)
    return out


def residual_codes(x: torch.Tensor, codebooks: torch.Tensor) -> torch.Tensor:
    """Codes `(n, levels)` of x `(n, dim)` under codebooks `(levels, K, dim)`: the float32 nearest code of
    each level's residual (what `ResidualVQ.encode` and the fused path's exact fallback compute)."""
    residual, codes = x.float(), []
    for book in codebooks:
        code = nearest_codes(residual, book)
        residual = residual - book[code]
        codes.append(code)
    return torch.stack(codes, dim=1)


def allocate_levels(gains: torch.Tensor, budgets: torch.Tensor) -> torch.Tensor:
    """Variable depth: gains `(G, T, Q)` (how much each token's next level shrinks its squared residual)
    and budgets `(G,)` (codes each group of T tokens may spend) -> depths `(G, T)`, each group's levels
    given to its largest gains. The gains are first made non-increasing along the levels, so that the
    levels a token gets are always its first ones (RVQ's prefix); a gain of -inf is never chosen."""
    g, t, q = gains.shape
    ranked = gains.cummin(dim=-1).values.reshape(g, t * q)
    order = ranked.argsort(dim=1, descending=True, stable=True)
    chosen = torch.arange(t * q, device=gains.device)[None] < budgets[:, None]
    chosen &= torch.isfinite(ranked.gather(1, order))
    picked = torch.zeros_like(chosen).scatter_(1, order, chosen)
    return picked.view(g, t, q).sum(dim=-1)


def exact_codes(x: torch.Tensor, codebooks: torch.Tensor) -> torch.Tensor:
    """Reference codes `(n, levels)`: exhaustive nearest-code search in float64, level by level on the
    float64 residual, for x `(n, dim)` and codebooks `(levels, K, dim)` (tests and benchmarks)."""
    residual, codes = x.double(), []
    for book in codebooks.double():
        code = torch.cdist(residual, book).argmin(dim=1)
        codes.append(code)
        residual = residual - book[code]
    return torch.stack(codes, dim=1)


def residual_decode(codes: torch.Tensor, codebooks: torch.Tensor) -> torch.Tensor:
    """Codes `(..., levels)` -> the sum of their codebook vectors `(..., dim)` under codebooks `(levels', K,
    dim)` (levels <= levels'); a code of -1 (a level a variable-depth token does not have) adds nothing."""
    out = 0
    for level in range(codes.shape[-1]):
        code = codes[..., level]
        # a mask, not a test for any -1: `.any()` would make the host wait for the GPU at every level
        out = out + codebooks[level][code.clamp(min=0)] * (code >= 0)[..., None]
    return out


def residual_gains(x: torch.Tensor, codebooks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """x `(n, dim)` under codebooks `(levels, K, dim)` -> (codes `(n, levels)`, gains `(n, levels)`): how much
    each level shrinks the squared residual of the levels before it."""
    codes = residual_codes(x, codebooks)
    residual, errors = x.float(), [x.float().pow(2).sum(-1)]
    for level in range(codebooks.shape[0]):
        residual = residual - codebooks[level][codes[:, level]].float()
        errors.append(residual.pow(2).sum(-1))
    errors = torch.stack(errors, dim=1)
    return codes, errors[:, :-1] - errors[:, 1:]


def kmeans(x: torch.Tensor, k: int, iters: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Plain k-means (Lloyd) from k random rows; empty clusters keep their previous centre."""
    n = x.shape[0]
    idx = (
        torch.randint(n, (k,), generator=generator, device="cpu").to(x.device)
        if n < k
        else torch.randperm(n, generator=generator, device="cpu")[:k].to(x.device)
    )
    centres = x[idx].clone()
    for _ in range(iters):
        codes = nearest_codes(x, centres)
        sums = torch.zeros_like(centres).index_add_(0, codes, x)
        counts = torch.zeros(k, device=x.device, dtype=x.dtype).index_add_(
            0, codes, torch.ones_like(codes, dtype=x.dtype)
        )
        centres = torch.where(counts[:, None] > 0, sums / counts.clamp(min=1)[:, None], centres)
    return centres


@dataclass
class RVQOutput:
    quantized: torch.Tensor  # (n, dim), straight-through in training
    codes: torch.Tensor  # (n, n_levels) long
    commit_loss: torch.Tensor  # scalar
    counts: torch.Tensor  # (n_levels, codebook_size) code uses in this batch (weighted)
    expired: torch.Tensor  # (n_levels,) codes restarted in this step


class ResidualVQ(nn.Module):
    """Residual VQ over `n_levels` codebooks of `codebook_size` codes of size `dim`.

    forward(x `(n, dim)`, weights `(n,)` optional: 0 excludes a row (padding) from every update).
    """

    def __init__(
        self,
        dim: int,
        codebook_size: int = 1024,
        n_levels: int = 8,
        decay: float = 0.99,
        eps: float = 1e-5,
        dead_code_threshold: float = 0.1,
        quantizer_dropout: float = 0.0,
        kmeans_iters: int = 10,
        commitment: str = "levels",
    ):
        super().__init__()
        if commitment not in ("levels", "output"):
            raise ValueError(f"commitment {commitment!r}: expected 'levels' or 'output'")
        self.commitment = commitment
        self.dim, self.codebook_size, self.n_levels = dim, codebook_size, n_levels
        self.decay, self.eps = decay, eps
        self.dead_code_threshold = dead_code_threshold
        self.quantizer_dropout = quantizer_dropout
        self.kmeans_iters = kmeans_iters
        self.register_buffer("codebooks", torch.randn(n_levels, codebook_size, dim))
        self.register_buffer("ema_count", torch.ones(n_levels, codebook_size))
        self.register_buffer("ema_sum", self.codebooks.clone())
        self.register_buffer("initialized", torch.zeros((), dtype=torch.bool))
        self._initialized_host: bool | None = None  # mirrors the buffer without a device sync

    def _load_from_state_dict(self, *args, **kwargs):
        super()._load_from_state_dict(*args, **kwargs)
        self._initialized_host = None

    def is_initialized(self) -> bool:
        if self._initialized_host is None:
            self._initialized_host = bool(self.initialized.item())
        return self._initialized_host

    @torch.no_grad()
    def _kmeans_init(self, x: torch.Tensor, weights: torch.Tensor) -> None:
        data = x[weights > 0]
        if _distributed():
            sizes = torch.tensor([data.shape[0]], device=x.device)
            all_sizes = [torch.zeros_like(sizes) for _ in range(dist.get_world_size())]
            dist.all_gather(all_sizes, sizes)
            top = int(max(s.item() for s in all_sizes))
            padded = F.pad(data, (0, 0, 0, top - data.shape[0]))
            gathered = [torch.zeros_like(padded) for _ in all_sizes]
            dist.all_gather(gathered, padded)
            data = torch.cat([g[: int(s.item())] for g, s in zip(gathered, all_sizes)])
        residual = data.float()
        generator = torch.Generator().manual_seed(0)
        for level in range(self.n_levels):
            centres = kmeans(residual, self.codebook_size, self.kmeans_iters, generator)
            if _distributed():
                dist.broadcast(centres, 0)
            self.codebooks[level] = centres
            self.ema_sum[level] = centres
            self.ema_count[level] = 1.0
            residual = residual - centres[nearest_codes(residual, centres)]
        self.initialized.fill_(True)
        self._initialized_host = True

    def forward(
        self, x: torch.Tensor, weights: torch.Tensor | None = None, n_levels: int | None = None
    ) -> RVQOutput:
        n_levels = n_levels or self.n_levels
        x = x.float()  # quantiser math stays float32 (bf16 EMA stalls)
        weights = torch.ones(x.shape[0], device=x.device) if weights is None else weights.float()
        if self.training and not self.is_initialized():
            self._kmeans_init(x.detach(), weights)
        # per-row number of active levels: quantizer dropout in training
        active_levels = torch.full((x.shape[0],), n_levels, device=x.device)
        if self.training and self.quantizer_dropout > 0:
            drop = torch.rand(x.shape[0], device=x.device) < self.quantizer_dropout
            random_levels = torch.randint(1, n_levels + 1, (x.shape[0],), device=x.device)
            active_levels = torch.where(drop, random_levels, active_levels)
        residual = x
        quantized = torch.zeros_like(x)
        codes, counts, expired = [], [], []
        commit = x.new_zeros(())
        for level in range(n_levels):
            codebook = self.codebooks[level]
            with torch.no_grad():
                code = nearest_codes(residual.detach(), codebook)
            chosen = codebook[code]
            on = (active_levels > level).float()
            row_weight = weights * on
            if self.commitment == "levels":
                commit = commit + (
                    (residual - chosen.detach()).pow(2).mean(dim=1) * row_weight
                ).sum() / weights.sum().clamp(min=1)
            if self.training:
                counts.append(self._ema_update(level, residual.detach(), code, row_weight, expired))
            else:
                counts.append(
                    torch.zeros(self.codebook_size, device=x.device).index_add_(0, code, row_weight)
                )
            quantized = quantized + chosen * on[:, None]
            residual = residual - chosen * on[:, None]
            codes.append(code)
        if self.commitment == "output":  # what all active levels left over, once
            commit = ((x - quantized.detach()).pow(2).mean(dim=1) * weights).sum() / weights.sum().clamp(
                min=1
            )
        quantized = x + (quantized - x).detach() if self.training else quantized
        return RVQOutput(
            quantized=quantized,
            codes=torch.stack(codes, dim=1),
            commit_loss=commit,
            counts=torch.stack(counts),
            expired=torch.stack(expired) if expired else torch.zeros(n_levels, device=x.device),
        )

    @torch.no_grad()
    def _ema_update(
        self, level: int, residual: torch.Tensor, code: torch.Tensor, weight: torch.Tensor, expired: list
    ) -> torch.Tensor:
        k = self.codebook_size
        counts = torch.zeros(k, device=residual.device).index_add_(0, code, weight)
        sums = torch.zeros(k, self.dim, device=residual.device).index_add_(
            0, code, residual * weight[:, None]
        )
        total = weight.sum()
        if _distributed():
            packed = torch.cat([counts, sums.reshape(-1), total.reshape(1)])
            dist.all_reduce(packed)
            counts, sums, total = packed[:k], packed[k:-1].reshape(k, self.dim), packed[-1]
        self.ema_count[level].mul_(self.decay).add_(counts, alpha=1 - self.decay)
        self.ema_sum[level].mul_(self.decay).add_(sums, alpha=1 - self.decay)
        n = self.ema_count[level].sum()
        smoothed = (self.ema_count[level] + self.eps) / (n + k * self.eps) * n
        self.codebooks[level] = self.ema_sum[level] / smoothed[:, None]
        # dead codes: far below the uniform share of this batch; restart them from recent residuals
        dead = self.ema_count[level] < self.dead_code_threshold * total / k
        pick = torch.multinomial(weight + 1e-12, k, replacement=True)
        candidates = residual[pick]
        if _distributed():
            dist.broadcast(candidates, 0)
        self.codebooks[level] = torch.where(dead[:, None], candidates, self.codebooks[level])
        uniform = (total / k).clamp(min=1.0)
        self.ema_count[level] = torch.where(dead, uniform, self.ema_count[level])
        self.ema_sum[level] = torch.where(dead[:, None], candidates * uniform, self.ema_sum[level])
        expired.append(dead.sum().float())
        return counts

    @torch.no_grad()
    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """codes `(..., levels)` -> vectors `(..., dim)`; fewer levels than trained decode coarser, and a
        code of -1 (a level a variable-depth token does not have) adds nothing."""
        return residual_decode(codes, self.codebooks)

    @torch.no_grad()
    def residual_gains(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x `(n, dim)` -> (codes `(n, levels)`, gains `(n, levels)`): how much each level shrinks the
        squared residual of the levels before it (what variable-depth encoding ranks)."""
        return residual_gains(x, self.codebooks)

    def encode(self, x: torch.Tensor, n_levels: int | None = None) -> torch.Tensor:
        """x `(n, dim)` -> codes `(n, levels)`; pure lookup, no state change."""
        return residual_codes(x, self.codebooks[: n_levels or self.n_levels])
