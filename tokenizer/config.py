"""`TokenizerConfig`: every size and per-modality setting of the tokenizer, saved as config.json."""

from __future__ import annotations

import hashlib
import json

from transformers import PretrainedConfig

from data_prep.presets import PRESETS

# first/second conv kernel per scale (NeuroRVQ's EEG branches); EMG gets longer kernels
DEFAULT_KERNELS = {
    "eeg": [[21, 9], [15, 7], [9, 5], [5, 3]],
    "emg": [[41, 17], [25, 11], [13, 7], [5, 3]],
    "emg_200hz": [[11, 5], [7, 5], [5, 3], [3, 3]],
    "ecg": [[11, 5], [7, 5], [5, 3], [3, 3]],
    "ecg_1s": [[21, 9], [15, 7], [9, 5], [5, 3]],  # EEG's: the same 200 samples at 200 Hz
}

# What new models use (issue 16): an amplitude-preserving linear patch embedding, a waveform objective,
# channel positions and a linear path from the codes to the spectrum (fifth version: +6.8 dB held-out
# EEG at 8 levels against the same recipe without it). The __init__ defaults stay the first design's,
# so configs saved before load as they were trained.
FIDELITY = dict(
    patch_embed="linear",
    objective="waveform",
    position_embed=True,
    phase_weight=1.0,
    decoder_skip=True,
    channel_name_dropout=0.2,
)

SIZES = {
    # tests and CPU demos
    "tiny": dict(
        **FIDELITY,
        d_model=32,
        n_layers=2,
        n_heads=2,
        n_decoder_layers=1,
        code_dim=16,
        codebook_size=64,
        n_levels=4,
        branch_channels=8,
    ),
    "small": dict(
        **FIDELITY,
        # measured on the H200 at equal steps (docs/BENCHMARKS.md): d_model 256 beats 128 and 384, and
        # "output" commitment beats "levels" on every held-out corpus
        d_model=256,
        n_layers=4,
        n_heads=8,
        n_decoder_layers=2,
        # a linear skip from each patch to its latents, whose 32-d codes then carry more than the 16-d
        # (fourth version: +2 dB held-out EEG, +6 dB Myo against the same recipe without it)
        code_dim=32,
        latent_skip=True,
        codebook_size=1024,
        n_levels=8,
        branch_channels=16,
        commitment="output",
    ),
    # NeuroRVQ's sizes
    "base": dict(
        **FIDELITY,
        d_model=200,
        n_layers=12,
        n_heads=10,
        n_decoder_layers=3,
        code_dim=128,
        codebook_size=8192,
        n_levels=8,
        branch_channels=32,
        commitment="output",
    ),
}


# "conv": NeuroRVQ's two-conv branches with GroupNorm (normalise each patch's scale away);
# "linear": one linear map of the patch's samples per scale; "conv+linear": both, the conv without norms
PATCH_EMBEDS = ("conv", "linear", "conv+linear")
# "spectral": log-amplitude MSE + unweighted phase cosine + time MSE (NeuroRVQ's terms);
# "waveform": normalised time-domain error (by Parseval the complex-spectrum error, so each bin's phase
# counts by its power) + a small log-amplitude term for the spectral shape of weak bands
OBJECTIVES = ("spectral", "waveform")
LATER_FIELDS = (
    "patch_embed",
    "objective",
    "log_amp_weight",
    "position_embed",
    "phase_weight",
    "commitment",
    "latent_skip",
    "decoder_skip",
    "decoder_context",
    "channel_name_dropout",
)
# how the decoder's context heads change each token's linear spectrum (decoder_skip): "rotate" scales and
# rotates it (a bin the token's own codes left at zero stays zero); "add" adds a complex correction, so
# that the other channels' and patches' codes can put in what this token's codes left out; "add+rotate"
# adds the correction first, then scales and rotates (it starts as "rotate": the correction starts at zero)
DECODER_CONTEXTS = ("rotate", "add", "add+rotate")


class TokenizerConfig(PretrainedConfig):
    """Tokenizer settings. `modalities` maps a name to {"preset": preset dict, "kernels": [[k1, k2], ...]};
    every modality has the same number of scales (kernel pairs). `channel_vocab` lists the
    "modality:name" channels the model knows (index 0 is padding)."""

    model_type = "biotok_tokenizer"

    def __init__(
        self,
        modalities: dict | None = None,
        channel_vocab: list[str] | None = None,
        d_model: int = 128,
        n_layers: int = 4,
        n_heads: int = 4,
        n_decoder_layers: int = 2,
        code_dim: int = 64,
        codebook_size: int = 1024,
        n_levels: int = 8,
        branch_channels: int = 16,
        pool_len: int = 25,  # samples kept per branch after pooling: enough to carry phase
        max_patches: int = 64,
        dropout: float = 0.0,
        ema_decay: float = 0.99,
        dead_code_threshold: float = 0.1,
        quantizer_dropout: float = 0.5,
        kmeans_iters: int = 10,
        commitment_weight: float = 0.25,
        phase_penalty: float = 0.1,
        time_loss_weight: float = 5.0,  # the time-domain term is what makes phase learnable early
        patch_embed: str = "conv",
        objective: str = "spectral",
        log_amp_weight: float = 0.1,
        position_embed: bool = False,
        phase_weight: float = 0.0,
        commitment: str = "levels",  # ResidualVQ's: "levels" (the first design) or "output"
        latent_skip: bool = False,
        decoder_skip: bool = False,
        decoder_context: str = "rotate",
        # channel-name embeddings start at zero and each channel's is left out of a training forward
        # with this probability, so a name the training data lacked (zero: never updated) is a state the
        # model has learnt; 0 = the first design (random names, always used)
        channel_name_dropout: float = 0.0,
        **kwargs,
    ):
        if modalities is None:
            modalities = {
                name: {"preset": PRESETS[name].to_dict(), "kernels": DEFAULT_KERNELS[name]}
                for name in ("eeg", "emg", "ecg")
            }
        n_scales = {len(m["kernels"]) for m in modalities.values()}
        if len(n_scales) != 1:
            raise ValueError(f"every modality needs the same number of scales, got {n_scales}")
        if patch_embed not in PATCH_EMBEDS:
            raise ValueError(f"patch_embed {patch_embed!r}: expected one of {PATCH_EMBEDS}")
        if objective not in OBJECTIVES:
            raise ValueError(f"objective {objective!r}: expected one of {OBJECTIVES}")
        if decoder_context not in DECODER_CONTEXTS:
            raise ValueError(f"decoder_context {decoder_context!r}: expected one of {DECODER_CONTEXTS}")
        if d_model % n_heads:
            raise ValueError(f"d_model {d_model} is not divisible by n_heads {n_heads}")
        self.modalities = json.loads(
            json.dumps(modalities)
        )  # JSON form: tuples become lists, as after a reload
        self.channel_vocab = list(channel_vocab or [])
        self.d_model, self.n_layers, self.n_heads = d_model, n_layers, n_heads
        self.n_decoder_layers = n_decoder_layers
        self.code_dim, self.codebook_size, self.n_levels = code_dim, codebook_size, n_levels
        self.branch_channels, self.pool_len, self.max_patches = branch_channels, pool_len, max_patches
        self.dropout = dropout
        self.ema_decay, self.dead_code_threshold = ema_decay, dead_code_threshold
        self.quantizer_dropout, self.kmeans_iters = quantizer_dropout, kmeans_iters
        self.commitment_weight, self.phase_penalty, self.time_loss_weight = (
            commitment_weight,
            phase_penalty,
            time_loss_weight,
        )
        self.patch_embed, self.objective = patch_embed, objective
        self.log_amp_weight, self.position_embed = log_amp_weight, position_embed
        self.phase_weight, self.commitment = phase_weight, commitment
        self.latent_skip, self.decoder_skip, self.decoder_context = latent_skip, decoder_skip, decoder_context
        if not 0.0 <= channel_name_dropout < 1.0:
            raise ValueError(f"channel_name_dropout {channel_name_dropout}: expected a value in [0, 1)")
        self.channel_name_dropout = channel_name_dropout
        super().__init__(**kwargs)

    @property
    def n_scales(self) -> int:
        return len(next(iter(self.modalities.values()))["kernels"])

    @classmethod
    def from_size(
        cls, size: str, presets: list[str] | None = None, channel_vocab: list[str] | None = None, **overrides
    ) -> TokenizerConfig:
        """A named size ("tiny", "small", "base") for the given presets (default eeg, emg, ecg_1s)."""
        if size not in SIZES:
            raise ValueError(f"unknown size {size!r}; known: {sorted(SIZES)}")
        presets = presets or ["eeg", "emg", "ecg_1s"]
        modalities = {}
        for name in presets:
            preset = PRESETS[name]
            modalities[name] = {"preset": preset.to_dict(), "kernels": DEFAULT_KERNELS[name]}
        return cls(modalities=modalities, channel_vocab=channel_vocab, **{**SIZES[size], **overrides})

    def bits_per_token(self) -> float:
        """Bits of one patch token: every scale and level indexes a codebook."""
        import math

        return self.n_scales * self.n_levels * math.log2(self.codebook_size)

    def bits_per_channel_second(self, modality: str, n_levels: int | None = None) -> float:
        import math

        preset = self.modalities[modality]["preset"]
        tokens_per_second = preset["sfreq"] / preset["patch_len"]
        return tokens_per_second * self.n_scales * (n_levels or self.n_levels) * math.log2(self.codebook_size)

    def config_hash(self) -> str:
        """A hash of everything that changes the codes (sizes, presets, vocabulary)."""
        import inspect

        params = inspect.signature(TokenizerConfig.__init__).parameters
        values = {k: getattr(self, k) for k in params if k not in ("self", "kwargs")}
        # fields added after the first design count only where they differ from their default, so the
        # hash of a model saved before them (and token corpora tagged with it) stays what it was
        for key in LATER_FIELDS:
            if values[key] == params[key].default:
                del values[key]
        return hashlib.sha256(json.dumps(values, sort_keys=True).encode()).hexdigest()[:16]
