"""`FoundationConfig`: sizes, code layout and masking of the masked-token foundation model."""

from __future__ import annotations

from transformers import PretrainedConfig

SIZES = {
    # tests and CPU demos
    "tiny": dict(d_model=64, n_layers=2, n_heads=2),
    # LaBraM-Base's width and depth (5.8M parameters there)
    "small": dict(d_model=200, n_layers=12, n_heads=10),
    "base": dict(d_model=512, n_layers=12, n_heads=8),
}


class FoundationConfig(PretrainedConfig):
    """Masked-token transformer over (channel, patch) positions.

    The code layout (`n_scales`, `n_levels`, `codebook_size`), the channel vocabulary and the
    modality (preset) names come from the frozen tokenizer, whose `tokenizer_hash` is kept so that
    token corpora of another tokenizer are refused. `n_target_levels` <= the tokenizer's levels says
    how many RVQ levels are predicted (the deep levels carry little structure); `n_input_levels` (default:
    the same) how many are read as input: motor imagery's lateralised power needs the deeper levels
    (CSP + LDA on the reconstruction: 0.533 from 2 levels, 0.565 from 8, 0.573 from the signal).
    `input_kind` is "tokens" (code embeddings in) or "patches" (raw patches through a conv stem,
    as NeuroRVQ and LaBraM do; the codes are then only targets).
    """

    model_type = "biotok_foundation"

    def __init__(
        self,
        n_scales: int = 4,
        n_levels: int = 8,
        codebook_size: int = 1024,
        n_target_levels: int | None = None,
        n_input_levels: int | None = None,
        channel_vocab: list[str] | None = None,
        modalities: dict | None = None,
        tokenizer_hash: str = "",
        input_kind: str = "tokens",
        d_model: int = 200,
        n_layers: int = 12,
        n_heads: int = 10,
        dropout: float = 0.0,
        max_patches: int = 64,
        mask_ratio: float = 0.5,
        symmetric_masking: bool = False,
        keep_ratio: float = 0.0,
        position_embed: bool = False,
        tie_heads: bool = False,
        spatial_bias: bool = False,
        frozen_code_embed: bool = False,
        **kwargs,
    ):
        if input_kind not in ("tokens", "patches"):
            raise ValueError(f"input_kind must be 'tokens' or 'patches', got {input_kind!r}")
        if tie_heads and input_kind != "tokens":
            raise ValueError("tie_heads scores codes by their input embeddings: it needs input_kind 'tokens'")
        if d_model % n_heads:
            raise ValueError(f"d_model {d_model} is not divisible by n_heads {n_heads}")
        if spatial_bias and not position_embed:
            raise ValueError("spatial_bias scores attention by electrode distance: it needs position_embed")
        if not 0 < mask_ratio < 1:
            raise ValueError(f"mask_ratio must be in (0, 1), got {mask_ratio}")
        if not 0 <= keep_ratio < 1:
            raise ValueError(f"keep_ratio must be in [0, 1), got {keep_ratio}")
        self.n_scales, self.n_levels, self.codebook_size = n_scales, n_levels, codebook_size
        self.n_target_levels = min(n_target_levels or n_levels, n_levels)
        self.n_input_levels = min(n_input_levels or self.n_target_levels, n_levels)
        if tie_heads and self.n_input_levels < self.n_target_levels:
            raise ValueError(
                f"tie_heads scores a level's codes by its input embeddings: n_input_levels "
                f"({self.n_input_levels}) must be >= n_target_levels ({self.n_target_levels})"
            )
        self.channel_vocab = list(channel_vocab or [])
        # preset name -> {"modality", "patch_len", "kernels"}: what a raw-patch stem needs
        self.modalities = dict(modalities or {})
        self.tokenizer_hash = tokenizer_hash
        self.input_kind = input_kind
        self.d_model, self.n_layers, self.n_heads = d_model, n_layers, n_heads
        self.dropout, self.max_patches = dropout, max_patches
        self.mask_ratio, self.symmetric_masking = mask_ratio, symmetric_masking
        # BERT's unchanged share: this fraction of the predicted positions keeps its own input, so that
        # every visible position's final state must still name its own codes. Without it no loss ever
        # reaches a visible position's output, and a fine-tuning head (which sees only visible positions)
        # reads states that pretraining never shaped (issue 17: motor imagery's per-electrode power)
        self.keep_ratio = keep_ratio
        self.position_embed, self.tie_heads = position_embed, tie_heads
        # every head's attention logits minus a learnt slope x the electrodes' distance (ALiBi over the
        # scalp): the nearest electrode's code is the best single guess of a masked one (issue 17)
        self.spatial_bias = spatial_bias
        # code embeddings kept at their random initialisation: pretraining otherwise folds a head's 1024
        # codes into a few directions, from which no head can read a copied neighbour's code back (issue 17)
        self.frozen_code_embed = frozen_code_embed
        super().__init__(**kwargs)

    @classmethod
    def from_tokenizer(cls, tokenizer_config, size: str = "small", **overrides) -> FoundationConfig:
        """A named size for the codes of the given `TokenizerConfig`."""
        if size not in SIZES:
            raise ValueError(f"unknown size {size!r}; known: {sorted(SIZES)}")
        modalities = {
            name: {
                "modality": spec["preset"]["modality"],
                "patch_len": spec["preset"]["patch_len"],
                "kernels": spec["kernels"],
            }
            for name, spec in tokenizer_config.modalities.items()
        }
        return cls(
            n_scales=tokenizer_config.n_scales,
            n_levels=tokenizer_config.n_levels,
            codebook_size=tokenizer_config.codebook_size,
            channel_vocab=tokenizer_config.channel_vocab,
            modalities=modalities,
            tokenizer_hash=tokenizer_config.config_hash(),
            max_patches=tokenizer_config.max_patches,
            **{**SIZES[size], **overrides},
        )

    @property
    def n_read_levels(self) -> int:
        """RVQ levels a batch must carry: the input's and the targets'."""
        return max(self.n_input_levels, self.n_target_levels)

    @property
    def n_heads_out(self) -> int:
        """Classification heads: one per scale and predicted level."""
        return self.n_scales * self.n_target_levels
