"""The masked-token foundation model: codes (or raw patches) of every (channel, patch) position in,
the masked positions' codes out, one classification head per scale and RVQ level.

Shapes: B batch, C channels, P patches per channel, S scales, Q levels (the predicted ones), K codes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel

from core.blocks import ConvBranch, Transformer, init_weights
from core.channels import add_channel_positions, channel_vectors, vocabulary_ids

from .config import FoundationConfig


def random_mask(
    channel_mask: torch.Tensor, n_patches: int, ratio: float, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Mask exactly round(ratio x valid positions) whole patches per sample.

    channel_mask `(B, C)` bool (True = real channel) -> mask `(B, C, P)` bool (True = masked)."""
    b, c = channel_mask.shape
    valid = channel_mask[:, :, None].expand(b, c, n_patches).reshape(b, -1)
    noise = torch.rand(valid.shape, generator=generator, device="cpu").to(valid.device)
    noise = noise.masked_fill(~valid, 2.0)  # padding never chosen
    rank = noise.argsort(dim=1).argsort(dim=1)
    n_mask = (valid.sum(dim=1) * ratio).round().clamp(min=1).long()
    return ((rank < n_mask[:, None]) & valid).view(b, c, n_patches)


def kept_positions(
    mask: torch.Tensor, keep_ratio: float, generator: torch.Generator | None = None
) -> torch.Tensor | None:
    """The predicted positions `(B, C, P)` whose input stays visible: each of mask's True positions with
    probability `keep_ratio` (None when 0: the model then hides every predicted position)."""
    if keep_ratio <= 0:
        return None
    draw = torch.rand(mask.shape, generator=generator, device="cpu").to(mask.device)
    return mask & (draw < keep_ratio)


def masked_positions(mask: torch.Tensor) -> torch.Tensor:
    """Flat indices `(M,)` of the True positions of mask `(B, C, P)`, in row-major order."""
    return mask.reshape(-1).nonzero().squeeze(1)


@dataclass
class FoundationOutput:
    loss: torch.Tensor  # mean cross-entropy over masked positions and heads
    loss_sum: torch.Tensor  # the same summed over masked positions (for exact accumulation)
    n_masked: torch.Tensor  # masked positions in this batch
    head_loss: torch.Tensor  # (S, Q) mean cross-entropy per head, detached
    head_correct: torch.Tensor  # (S, Q) correct predictions per head, detached
    hidden_states: torch.Tensor  # (B, C, P, d)


class BiotokFoundation(PreTrainedModel):
    """BERT-style transformer over token positions; `encode` gives per-patch hidden states."""

    config_class = FoundationConfig
    base_model_prefix = "foundation"
    main_input_name = "codes"

    def __init__(self, config: FoundationConfig):
        super().__init__(config)
        d, s, q, k = config.d_model, config.n_scales, config.n_target_levels, config.codebook_size
        q_in = config.n_input_levels
        self.modality_names = sorted(config.modalities)
        if config.input_kind == "tokens":
            # the sum of one embedding per (scale, level) code, as one bag lookup
            self.code_embed = nn.EmbeddingBag(s * q_in * k, d, mode="sum")
            self.register_buffer("code_offsets", torch.arange(s * q_in).view(s, q_in) * k, persistent=False)
            self.code_embed.weight.requires_grad_(not config.frozen_code_embed)
        else:
            self.stems = nn.ModuleDict(
                {
                    name: ConvBranch(tuple(spec["kernels"][0]), 16, 25, d)
                    for name, spec in config.modalities.items()
                }
            )
        self.mask_embed = nn.Parameter(torch.zeros(d))
        self.channel_embed = nn.Embedding(len(config.channel_vocab) + 1, d, padding_idx=0)
        if config.position_embed:  # electrode positions: which channels are neighbours, for every montage
            add_channel_positions(self, config.channel_vocab, d)
        if config.spatial_bias:  # per-head slopes, log-parameterised, ALiBi-like from 0.5 to 16 per dm
            self.spatial_log_slope = nn.Parameter(torch.empty(config.n_heads))
            # and per patch of time apart: without it the same electrode's other patches (distance 0,
            # the weakest copy) would be every head's nearest keys
            self.time_log_slope = nn.Parameter(torch.empty(config.n_heads))
        self.time_embed = nn.Embedding(config.max_patches, d)
        self.modality_embed = nn.Embedding(max(1, len(self.modality_names)), d)
        self.encoder = Transformer(d, config.n_layers, config.n_heads, config.dropout)
        if config.tie_heads:
            # a code's output row is its input embedding: copying a visible neighbour's codes then needs
            # only attention to it, not 8 x 1024 output rows learned from scratch
            self.head_bias = nn.Parameter(torch.zeros(s * q * k))
        else:
            self.head = nn.Linear(d, s * q * k)  # S x Q heads as one matmul
        self._vocab_index = {name: i + 1 for i, name in enumerate(config.channel_vocab)}
        self.post_init()

    def _init_weights(self, module: nn.Module) -> None:
        init_weights(module)
        if isinstance(module, BiotokFoundation):
            nn.init.trunc_normal_(module.mask_embed, std=0.02)
            if hasattr(module, "spatial_log_slope"):
                heads = module.spatial_log_slope.numel()
                module.spatial_log_slope.data.copy_(torch.linspace(math.log(0.5), math.log(16.0), heads))
                module.time_log_slope.data.fill_(math.log(2.0))
            if hasattr(module, "code_offsets"):
                s, q = module.code_offsets.shape
                module.code_offsets.copy_(torch.arange(s * q).view(s, q) * module.config.codebook_size)

    @torch.no_grad()
    def init_code_embed_from_codebooks(self, tokenizer, seed: int = 0, split_scales: bool = False) -> None:
        """Start the code embeddings as one fixed random linear map per scale of the frozen tokenizer's
        codebook vectors, so that a token's summed embedding is that map of its quantized latent and codes
        that decode alike start alike. Learnt from a random start, a scale's levels x 1024 rows meet too
        few labelled windows: on EEGBCI left/right imagery a linear readout of the codebook vectors reaches
        0.68 on unseen subjects where every network on learnt embeddings stays at chance (docs/BENCHMARKS.md,
        issue 17: "Which linear view of the codes carries left/right?"). `split_scales`: each scale maps
        into its own slice of the width (d_model / n_scales dimensions), so that the summed embedding
        holds the scales side by side instead of mixed (on the 8-30 Hz motor-imagery task only the finest
        scale carries the imagery)."""
        if self.config.input_kind != "tokens":
            raise ValueError("init_code_embed_from_codebooks: this model reads raw patches, not codes")
        tokenizer_hash = tokenizer.config.config_hash()
        if tokenizer_hash != self.config.tokenizer_hash:
            raise ValueError(
                f"tokenizer hash {tokenizer_hash} is not this model's {self.config.tokenizer_hash}"
            )
        generator = torch.Generator().manual_seed(seed)
        q, k = self.config.n_input_levels, self.config.codebook_size
        rows = []
        d, n_scales = self.config.d_model, len(tokenizer.quantizers)
        for scale, quantizer in enumerate(tokenizer.quantizers):  # one per scale, in the code layout's order
            codebooks = quantizer.codebooks[:q].float().cpu()  # (levels, k, code_dim)
            projection = torch.randn(codebooks.shape[-1], d, generator=generator)
            if split_scales:
                keep = torch.zeros(d, dtype=torch.bool)
                keep[scale * d // n_scales : (scale + 1) * d // n_scales] = True
                projection[:, ~keep] = 0
            rows.append((codebooks @ projection).reshape(q * k, -1))
        weight = torch.cat(rows)
        # one scale for every row keeps the map linear; the std of the random start the rest expects
        self.code_embed.weight.copy_(weight * (0.02 / weight.std()))

    def get_input_embeddings(self) -> nn.Module | None:
        """The code embedding (transformers' hook; Accelerate's FSDP asks it for tied weights)."""
        return getattr(self, "code_embed", None)

    def truncated(self, n_blocks: int) -> BiotokFoundation:
        """A copy that keeps the first `n_blocks` transformer blocks (and the embeddings and final norm):
        `encode` then gives a middle layer's states `(B, C, P, d)`, normed as the top's are. On motor
        imagery the states after blocks 7-10 of 12 carry more left/right than the top (docs/BENCHMARKS.md,
        "Which layer carries motor imagery?")."""
        if not 1 <= n_blocks <= self.config.n_layers:
            raise ValueError(f"n_blocks {n_blocks}: expected 1 to the model's {self.config.n_layers} blocks")
        config = type(self.config).from_dict(self.config.to_dict())
        config.n_layers = n_blocks
        model = type(self)(config).to(self.device)
        dropped = model.load_state_dict(self.state_dict(), strict=False)
        # only the cut blocks' weights are left over, and nothing the copy has is left unset
        assert not dropped.missing_keys, dropped.missing_keys
        assert all(key.startswith("encoder.blocks.") for key in dropped.unexpected_keys), (
            dropped.unexpected_keys
        )
        return model.train(self.training)

    def channel_ids(self, ch_names: list[list[str]], modality: str) -> torch.Tensor:
        """Vocabulary ids `(B, C)` of channels of `modality` (a preset name), 0-padded."""
        if modality not in self.config.modalities:
            raise ValueError(f"modality {modality!r} not configured; this model has {self.modality_names}")
        kind = self.config.modalities[modality]["modality"]
        return vocabulary_ids(ch_names, kind, self.config.channel_vocab, self._vocab_index, self.device)

    def _inputs(
        self, codes: torch.Tensor | None, patches: torch.Tensor | None, modality: str
    ) -> torch.Tensor:
        """Per-position input embedding `(B, C, P, d)` from codes `(B, C, P, S, Q)` or patches `(B, C, P, L)`."""
        if self.config.input_kind == "tokens":
            if codes is None:
                raise ValueError("this model reads codes (input_kind='tokens'); pass codes")
            q = self.config.n_input_levels
            b, c, p = codes.shape[:3]
            bags = (codes[..., :q] + self.code_offsets).reshape(b * c * p, -1)
            return self.code_embed(bags).view(b, c, p, -1)
        if patches is None:
            raise ValueError("this model reads raw patches (input_kind='patches'); pass patches")
        b, c, p, length = patches.shape
        return self.stems[modality](patches.reshape(-1, length)).view(b, c, p, -1)

    def encode(
        self,
        channel_ids: torch.Tensor,
        modality: str,
        codes: torch.Tensor | None = None,
        patches: torch.Tensor | None = None,
        mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Hidden states `(B, C, P, d)`; positions where `mask` `(B, C, P)` is True see the mask embedding."""
        x = self._embedded(channel_ids, modality, codes, patches, mask)
        return self.encode_from(x, channel_ids, first=0)

    def lower_states(
        self,
        channel_ids: torch.Tensor,
        modality: str,
        n_blocks: int,
        codes: torch.Tensor | None = None,
        patches: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The residual stream `(B, C, P, d)` after the first `n_blocks` blocks, before the final norm:
        `encode_from(states, channel_ids, n_blocks)` gives `encode`'s states from it. Fine-tuning only
        the blocks above computes it once (the model has no dropout, so frozen blocks give the same states
        every epoch)."""
        x = self._embedded(channel_ids, modality, codes, patches, None)
        b, c, p, d = x.shape
        attend = self._attention(channel_ids, p)
        x = x.reshape(b, c * p, d)
        for index, block in enumerate(self.encoder.blocks[:n_blocks]):
            x = block(x, attend, False, None, index)
        return x.view(b, c, p, d)

    def encode_from(self, states: torch.Tensor, channel_ids: torch.Tensor, first: int) -> torch.Tensor:
        """Blocks `first`... and the final norm on `states` `(B, C, P, d)`, the residual stream before
        block `first` (`first` 0: the embedded input): hidden states `(B, C, P, d)`."""
        b, c, p, d = states.shape
        attend = self._attention(channel_ids, p)
        return self.encoder(states.reshape(b, c * p, d), attend, first=first).view(b, c, p, d)

    def _embedded(
        self,
        channel_ids: torch.Tensor,
        modality: str,
        codes: torch.Tensor | None,
        patches: torch.Tensor | None,
        mask: torch.Tensor | None,
    ) -> torch.Tensor:
        """The first block's input `(B, C, P, d)`: codes or patches embedded, with the channel, time and
        modality embeddings added."""
        x = self._inputs(codes, patches, modality)
        p = x.shape[2]
        if p > self.config.max_patches:
            raise ValueError(f"{p} patches per channel exceed max_patches={self.config.max_patches}")
        if mask is not None:
            x = torch.where(mask[..., None], self.mask_embed.to(x.dtype), x)
        return (
            x
            + channel_vectors(self, channel_ids)[:, :, None]
            + self.time_embed.weight[:p][None, None]
            + self.modality_embed.weight[self.modality_names.index(modality)]
        )

    def _attention(self, channel_ids: torch.Tensor, n_patches: int) -> torch.Tensor:
        """Which keys every position attends to `(B, 1, 1, C x P)` (True: attend; padding channels not),
        or with `spatial_bias` the additive mask `(B, heads, C x P, C x P)`."""
        b, c = channel_ids.shape
        attend = (channel_ids > 0)[:, :, None].expand(b, c, n_patches).reshape(b, 1, 1, c * n_patches)
        if self.config.spatial_bias:
            attend = self.spatial_attention_bias(channel_ids, n_patches, attend)
        return attend

    def spatial_attention_bias(
        self, channel_ids: torch.Tensor, n_patches: int, attend: torch.Tensor
    ) -> torch.Tensor:
        """Additive attention mask `(B, heads, C*P, C*P)`: -slope x distance (dm) between the two
        positions' electrodes (0 where either channel has no 10-05 position) - another slope x patches
        apart, -inf at padding keys."""
        pos = self.channel_pos[channel_ids]  # (B, C, 4): x, y, z in dm, 1 where placed
        placed = pos[..., 3]
        dist = torch.cdist(pos[..., :3], pos[..., :3]) * (placed[:, :, None] * placed[:, None, :])
        slope = self.spatial_log_slope.exp()
        bias = -slope[None, :, None, None] * dist[:, None]  # (B, H, C, C)
        b, h, c, _ = bias.shape
        steps = torch.arange(n_patches, device=bias.device)
        time = (
            -self.time_log_slope.exp()[:, None, None] * (steps[:, None] - steps[None, :]).abs()
        )  # (H, P, P)
        bias = bias[:, :, :, None, :, None] + time[None, :, None, :, None, :]
        bias = bias.reshape(b, h, c * n_patches, c * n_patches)
        return bias.masked_fill(~attend, float("-inf"))

    def code_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Scores `(M, S, Q, K)` of every head's codes from hidden states `(M, d)`."""
        cfg = self.config
        if cfg.tie_heads:
            weight = self.code_embed.weight
            if cfg.n_input_levels != cfg.n_target_levels:  # score only the predicted levels' embeddings
                rows = weight.view(cfg.n_scales, cfg.n_input_levels, cfg.codebook_size, -1)
                weight = rows[:, : cfg.n_target_levels].reshape(-1, weight.shape[-1])
            logits = nn.functional.linear(hidden, weight, self.head_bias)
        else:
            logits = self.head(hidden)
        return logits.view(-1, cfg.n_scales, cfg.n_target_levels, cfg.codebook_size)

    def forward(
        self,
        codes: torch.Tensor,
        channel_ids: torch.Tensor,
        modality: str,
        mask: torch.Tensor,
        patches: torch.Tensor | None = None,
        masked_index: torch.Tensor | None = None,
        kept: torch.Tensor | None = None,
    ) -> FoundationOutput:
        """codes `(B, C, P, S, Q)` (targets, and input for input_kind='tokens'); mask `(B, C, P)`: the
        predicted positions; `kept` `(B, C, P)`: those of them whose input stays visible (`kept_positions`).

        `masked_index` `(M,)`: the flat indices of mask's True positions (`masked_positions(mask)`),
        when the caller built them before moving the mask to the GPU: finding them there would make
        the host wait for the GPU at every step."""
        cfg = self.config
        s, q = cfg.n_scales, cfg.n_target_levels
        hidden = self.encode(
            channel_ids, modality, codes=codes, patches=patches, mask=mask if kept is None else mask & ~kept
        )
        index = masked_positions(mask) if masked_index is None else masked_index.to(hidden.device)
        picked = hidden.reshape(-1, hidden.shape[-1]).index_select(0, index)
        logits = self.code_logits(picked).float()  # (M, S, Q, K): masked only
        targets = codes.reshape(-1, *codes.shape[3:]).index_select(0, index)[..., :q]  # (M, S, Q)
        per_token = F.cross_entropy(logits.permute(0, 3, 1, 2), targets, reduction="none")  # (M, S, Q)
        # a fill on the device: a host scalar copied in would make the host wait for the GPU every step
        n_masked = torch.full((), per_token.shape[0], dtype=torch.long, device=per_token.device)
        loss_sum = per_token.mean(dim=(1, 2)).sum()
        with torch.no_grad():
            head_loss = per_token.mean(dim=0) if per_token.shape[0] else per_token.new_zeros(s, q)
            head_correct = (logits.argmax(dim=-1) == targets).sum(dim=0)
        return FoundationOutput(
            loss=loss_sum / n_masked.clamp(min=1),
            loss_sum=loss_sum,
            n_masked=n_masked,
            head_loss=head_loss.detach(),
            head_correct=head_correct,
            hidden_states=hidden,
        )
