"""Neural building blocks shared by every stage: attention for any head size, pre-LayerNorm transformer
blocks with QK-norm, KV caches for streaming, the conv patch branch, and the weight initialisation.

Shapes: B batch, T positions, H heads.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class KVCache:
    """Past keys and values of every block, for step-by-step (streaming) inference; grows by concatenation."""

    def __init__(self) -> None:
        self.keys: list[torch.Tensor] = []
        self.values: list[torch.Tensor] = []

    @property
    def length(self) -> int:
        return self.keys[0].shape[2] if self.keys else 0

    def extend(
        self, layer: int, k: torch.Tensor, v: torch.Tensor, is_causal: bool
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Append `(B, H, t, d)` keys/values of `layer`; returns all of them so far and the mask of the t
        new queries (None: they see every key)."""
        if layer == len(self.keys):
            self.keys.append(k)
            self.values.append(v)
        else:
            self.keys[layer] = torch.cat([self.keys[layer], k], dim=2)
            self.values[layer] = torch.cat([self.values[layer], v], dim=2)
        t, n = k.shape[2], self.keys[layer].shape[2]
        # causal: the t new queries are the last t positions
        mask = (
            torch.ones(t, n, dtype=torch.bool, device=k.device).tril(n - t) if is_causal and t > 1 else None
        )
        return self.keys[layer], self.values[layer], mask

    def advance(self, t: int) -> None:
        """The step's t positions are in every layer (nothing to do: the length is the keys')."""


class StaticKVCache:
    """A `KVCache` in preallocated buffers of `max_len` positions, written in place at a position kept on
    the device, so that every streaming step has the same shapes and no host sync: the step can be
    captured once in a CUDA graph and replayed. Attention reads all `max_len` slots, masked to the filled
    ones."""

    def __init__(
        self,
        n_layers: int,
        batch: int,
        n_heads: int,
        head_dim: int,
        max_len: int,
        device=None,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        shape = (n_layers, batch, n_heads, max_len, head_dim)
        self.keys = torch.zeros(shape, device=device, dtype=dtype)
        self.values = torch.zeros(shape, device=device, dtype=dtype)
        self.position = torch.zeros((), dtype=torch.long, device=device)  # next free slot, on the device
        self.slots = torch.arange(max_len, device=device)
        self.max_len, self.filled = max_len, 0  # `filled` mirrors `position` on the host, for the bound check

    @property
    def length(self) -> int:
        return self.filled

    def extend(
        self, layer: int, k: torch.Tensor, v: torch.Tensor, is_causal: bool
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        t = k.shape[2]
        if self.filled + t > self.max_len:
            raise ValueError(
                f"the stream outgrew its cache: {self.filled + t} positions > max_len={self.max_len}"
            )
        new = self.position + torch.arange(t, device=k.device)
        self.keys[layer].index_copy_(2, new, k.to(self.keys.dtype))
        self.values[layer].index_copy_(2, new, v.to(self.values.dtype))
        if is_causal:  # query i (slot position + i) sees the slots up to its own
            mask = self.slots[None, :] <= new[:, None]
        else:
            mask = (self.slots < self.position + t)[None, :]
        return self.keys[layer], self.values[layer], mask

    def advance(self, t: int) -> None:
        """Every layer holds the step's t positions: move the write position on."""
        self.position += t
        self.filled += t


def attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    attn_mask: torch.Tensor | None,
    dropout_p: float = 0.0,
    is_causal: bool = False,
) -> torch.Tensor:
    """`F.scaled_dot_product_attention` over `(B, heads, T, head)` for any head size.

    The fused GPU kernels (flash, memory-efficient) take head sizes that are multiples of 8 only; any
    other (LaBraM's 200 / 10 heads = 20) falls back to the unfused path that writes the T x T scores
    (3x slower here). Zero-padding q, k and v to the next multiple of 8 leaves every score and output
    unchanged (the scale stays 1/sqrt(head)), and the padding is cut off again."""
    head = q.shape[-1]
    if attn_mask is not None and attn_mask.is_floating_point():
        attn_mask = attn_mask.to(q.dtype)  # an additive bias must match the (autocast) query dtype
    pad = -head % 8
    if pad:
        q, k, v = (F.pad(x, (0, pad)) for x in (q, k, v))
    y = F.scaled_dot_product_attention(
        q, k, v, attn_mask=attn_mask, dropout_p=dropout_p, is_causal=is_causal, scale=head**-0.5
    )
    return y[..., :head] if pad else y


class Attention(nn.Module):
    def __init__(self, d_model: int, n_heads: int, dropout: float, qk_norm: bool = True):
        super().__init__()
        self.n_heads, self.dropout = n_heads, dropout
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.out = nn.Linear(d_model, d_model)
        head = d_model // n_heads
        # QK-norm keeps logits tame; off where a published architecture is reproduced exactly
        self.q_norm = nn.LayerNorm(head) if qk_norm else nn.Identity()
        self.k_norm = nn.LayerNorm(head) if qk_norm else nn.Identity()

    def forward(
        self,
        x: torch.Tensor,
        attn_mask: torch.Tensor | None,
        is_causal: bool = False,
        cache: KVCache | StaticKVCache | None = None,
        layer: int = 0,
    ) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(x).view(b, t, 3, self.n_heads, d // self.n_heads).permute(2, 0, 3, 1, 4)
        q, k = self.q_norm(q), self.k_norm(k)
        if cache is not None:
            k, v, attn_mask = cache.extend(layer, k, v, is_causal)
            is_causal = False
        y = attention(q, k, v, attn_mask, self.dropout if self.training else 0.0, is_causal)
        return self.out(y.transpose(1, 2).reshape(b, t, d))


class Block(nn.Module):
    def __init__(self, d_model: int, n_heads: int, dropout: float, qk_norm: bool = True):
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(d_model), nn.LayerNorm(d_model)
        self.attn = Attention(d_model, n_heads, dropout, qk_norm)
        self.mlp = nn.Sequential(
            nn.Linear(d_model, 4 * d_model), nn.GELU(), nn.Linear(4 * d_model, d_model), nn.Dropout(dropout)
        )

    def forward(
        self,
        x: torch.Tensor,
        attn_mask: torch.Tensor | None,
        is_causal: bool = False,
        cache: KVCache | StaticKVCache | None = None,
        layer: int = 0,
    ) -> torch.Tensor:
        x = x + self.attn(self.ln1(x), attn_mask, is_causal, cache, layer)
        return x + self.mlp(self.ln2(x))


class Transformer(nn.Module):
    """Pre-LayerNorm encoder. attn_mask `(B, 1, 1, T)` bool, True = attend; or `is_causal`.

    With a `KVCache` (or `StaticKVCache`), x holds only the new positions and attends to every cached one
    as well.
    """

    def __init__(self, d_model: int, n_layers: int, n_heads: int, dropout: float = 0.0, qk_norm: bool = True):
        super().__init__()
        self.blocks = nn.ModuleList(Block(d_model, n_heads, dropout, qk_norm) for _ in range(n_layers))
        self.ln = nn.LayerNorm(d_model)

    def forward(
        self,
        x: torch.Tensor,
        attn_mask: torch.Tensor | None = None,
        is_causal: bool = False,
        cache: KVCache | StaticKVCache | None = None,
        first: int = 0,
    ) -> torch.Tensor:
        """`first` > 0: start at that block, the caller having run the ones before it on x."""
        for i, block in enumerate(self.blocks[first:], start=first):
            x = block(x, attn_mask, is_causal, cache, i)
        if cache is not None:
            cache.advance(x.shape[1])
        return self.ln(x)


class ConvBranch(nn.Module):
    """One temporal scale: two convolutions over a patch's samples, pooled to one embedding.

    `norm=True` is NeuroRVQ's branch: GroupNorm over each patch's own samples removes its scale and
    sign, so the branch is nearly blind to amplitude; without it the branch keeps them."""

    def __init__(
        self, kernels: tuple[int, int], channels: int, pool_len: int, d_model: int, norm: bool = True
    ):
        super().__init__()
        groups = max(1, min(4, channels // 2))
        k1, k2 = kernels

        def normalise() -> nn.Module:
            return nn.GroupNorm(groups, channels) if norm else nn.Identity()

        self.net = nn.Sequential(
            nn.Conv1d(1, channels, k1, padding=k1 // 2),
            normalise(),
            nn.GELU(),
            nn.Conv1d(channels, channels, k2, padding=k2 // 2),
            normalise(),
            nn.GELU(),
            nn.AdaptiveAvgPool1d(pool_len),
            nn.Flatten(),
            nn.Linear(channels * pool_len, d_model),
        )

    def forward(self, patches: torch.Tensor) -> torch.Tensor:
        """`(N, L)` -> `(N, d_model)`"""
        return self.net(patches.unsqueeze(1))


def init_weights(module: nn.Module) -> None:
    """Truncated-normal linear and embedding weights, zero biases and padding rows (both models)."""
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, (nn.Embedding, nn.EmbeddingBag)):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if getattr(module, "padding_idx", None) is not None:
            module.weight.data[module.padding_idx].zero_()
