"""CTC keystroke models for emg2qwerty, one `EmgCTCModel` with three backbones:

- "transformer": the "Scaling and Distilling Transformer Models for sEMG" encoder: conv featurizer
  (128/64/64 channels, kernels 11/3/3, strides 5/2/2: 2 kHz -> 100 Hz frames), normalisation over time
  after the first conv, feature projection, grouped convolutional positional embedding (kernel 128, 16
  groups, weight norm), pre-LN transformer with causal attention, linear to 99 classes. Parameter counts
  equal the paper's. `causal=True` makes it stream: per-frame LayerNorm instead of the over-time norm and
  a positional convolution that sees only the past (the paper's sees 63 frames ahead).
- "tds": emg2qwerty's TDS-ConvNet baseline on log spectrograms (n_fft 64, hop 16: 125 Hz frames).
- "foundation": the frozen biotok tokenizer's codes -> the pretrained foundation model -> CTC head.
  The tokenizer's EMG patches are 200 ms (1 kHz x 200) and typing reaches 7 keys/s, so CTC needs about
  50 frames/s or more: each patch emits `frames_per_patch` (default 10, 50 Hz) frames, read from the
  hidden states of all 32 electrodes of that patch.

Any backbone can carry an RVQ bottleneck after its first encoder block (emg-tokenizer's design) whose
codes are the exported tokens.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from transformers import PretrainedConfig, PreTrainedModel

from core.blocks import KVCache, StaticKVCache, Transformer, init_weights
from tokenizer.rvq import ResidualVQ

from .charset import BLANK, N_CLASSES

SIZES = {"tiny": (128, 10), "small": (256, 6), "large": (1024, 8)}
WIDTHS, DEPTHS = (128, 256, 512, 1024), (2, 4, 6, 8, 10)
CONV_DIM, CONV_KERNEL, CONV_STRIDE = (128, 64, 64), (11, 3, 3), (5, 2, 2)
POS_KERNEL, POS_GROUPS = 128, 16


class EmgCTCConfig(PretrainedConfig):
    model_type = "biotok_emg_ctc"

    def __init__(
        self,
        architecture: str = "transformer",
        width: int = 128,
        depth: int = 10,
        n_heads: int = 16,
        dropout: float = 0.2,
        causal: bool = False,
        n_channels: int = 32,
        sfreq: float = 2000.0,
        n_classes: int = N_CLASSES,
        rvq_levels: int = 0,
        rvq_codebook_size: int = 1024,
        rvq_commitment_weight: float = 0.0,
        tds_mlp_features: int = 384,
        tds_block_channels: tuple[int, ...] = (24, 24, 24, 24),
        tds_kernel_width: int = 32,
        n_fft: int = 64,
        hop_length: int = 16,
        spec_augment: bool = True,
        spec_norm: str = "frequency",
        blank_init_prob: float | None = 0.5,
        tokenizer_config: dict | None = None,
        foundation_config: dict | None = None,
        frames_per_patch: int = 10,
        qk_norm: bool = False,
        **kwargs,
    ):
        if spec_norm not in ("electrode", "frequency"):
            raise ValueError(f"spec_norm must be electrode or frequency, got {spec_norm!r}")
        if blank_init_prob is not None and not 0.0 < blank_init_prob < 1.0:
            raise ValueError(f"blank_init_prob must lie in (0, 1) or be None, got {blank_init_prob}")
        if architecture not in ("transformer", "tds", "foundation"):
            raise ValueError(f"architecture must be transformer, tds or foundation, got {architecture!r}")
        if architecture == "transformer" and width % n_heads:
            raise ValueError(f"width {width} is not divisible by n_heads {n_heads}")
        if architecture == "foundation" and not (tokenizer_config and foundation_config):
            raise ValueError("a foundation-backed model needs tokenizer_config and foundation_config")
        self.architecture, self.width, self.depth, self.n_heads = architecture, width, depth, n_heads
        self.dropout, self.causal, self.n_channels, self.sfreq = dropout, causal, n_channels, sfreq
        self.n_classes = n_classes
        self.rvq_levels, self.rvq_codebook_size = rvq_levels, rvq_codebook_size
        self.rvq_commitment_weight = rvq_commitment_weight
        self.tds_mlp_features, self.tds_block_channels = tds_mlp_features, list(tds_block_channels)
        self.tds_kernel_width, self.n_fft, self.hop_length = tds_kernel_width, n_fft, hop_length
        self.spec_augment = spec_augment
        # TDS input: "electrode" = emg2qwerty's SpectrogramNorm (one statistic per electrode over all
        # bins and frames); "frequency" = one per electrode and bin (as speech features are normalised)
        self.spec_norm = spec_norm
        # the blank's probability on every frame at initialisation (its head bias); None: bias 0
        self.blank_init_prob = blank_init_prob
        self.tokenizer_config, self.foundation_config = tokenizer_config, foundation_config
        self.frames_per_patch = frames_per_patch
        self.qk_norm = qk_norm  # LayerNorm of queries and keys (the paper's transformer has none)
        super().__init__(**kwargs)

    @classmethod
    def named(cls, name: str, **overrides) -> EmgCTCConfig:
        """ "tiny" | "small" | "large" | "<width>x<depth>" (transformer) or "tds"."""
        if name == "tds":
            return cls(architecture="tds", **overrides)
        if name in SIZES:
            width, depth = SIZES[name]
        else:
            try:
                width, depth = (int(v) for v in name.split("x"))
            except ValueError:
                raise ValueError(
                    f"unknown model {name!r}: tiny, small, large, tds or <width>x<depth>"
                ) from None
        return cls(architecture="transformer", width=width, depth=depth, **overrides)

    @property
    def feature_dim(self) -> int:
        """Width of the backbone's output features (what the head reads and the RVQ quantises)."""
        if self.architecture == "tds":
            return self.tds_mlp_features * 2
        return self.width

    @property
    def frame_rate(self) -> float:
        if self.architecture == "transformer":
            return self.sfreq / int(np.prod(CONV_STRIDE))
        if self.architecture == "tds":
            return self.sfreq / self.hop_length
        preset = self.tokenizer_config["modalities"]["emg"]["preset"]
        return preset["sfreq"] / preset["patch_len"] * self.frames_per_patch

    def bits_per_frame(self) -> float:
        return self.rvq_levels * float(np.log2(self.rvq_codebook_size))

    def compression(self) -> dict[str, float]:
        """RVQ bottleneck compression: vs the float32 latent (emg-tokenizer's count) and vs the raw
        32-channel float32 signal over the same time."""
        bits = self.bits_per_frame()
        if not bits:
            return {}
        raw_bits = self.n_channels * 32 * self.sfreq / self.frame_rate
        return {"bits_per_frame": bits, "vs_latent": self.feature_dim * 32 / bits, "vs_raw": raw_bits / bits}


@dataclass
class CTCOutput:
    log_probs: torch.Tensor  # (B, T', n_classes) log-softmax emissions
    lengths: torch.Tensor  # (B,) valid frames
    logits: torch.Tensor  # (B, T', n_classes)
    commit_loss: torch.Tensor  # RVQ commitment (0 without a bottleneck)
    codes: torch.Tensor | None  # (B, T', rvq_levels) the bottleneck's tokens


class Bottleneck(nn.Module):
    """Our ResidualVQ on `(B, T, dim)` features, straight-through in training."""

    def __init__(self, dim: int, levels: int, codebook_size: int):
        super().__init__()
        self.rvq = ResidualVQ(dim, codebook_size, levels, decay=0.99, dead_code_threshold=0.1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        b, t, d = x.shape
        out = self.rvq(x.reshape(b * t, d))
        return out.quantized.view(b, t, d).to(x.dtype), out.commit_loss, out.codes.view(b, t, -1)


# ---------------------------------------------------------------- the sEMG transformer


class FrameNorm(nn.Module):
    """LayerNorm over channels at each frame of `(B, C, T)`: causal, unlike GroupNorm over time."""

    def __init__(self, channels: int):
        super().__init__()
        self.norm = nn.LayerNorm(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x.transpose(1, 2)).transpose(1, 2)


def _update(buffer: torch.Tensor, new: torch.Tensor) -> torch.Tensor:
    """`new` written into `buffer` in place when their shapes agree (a CUDA graph replays into the tensors
    it captured), else `new` itself."""
    return buffer.copy_(new) if buffer.shape == new.shape else new


@dataclass
class StreamState:
    """What a streaming transformer keeps between steps."""

    samples: torch.Tensor  # (B, C, n) raw samples not yet consumed by a frame
    features: torch.Tensor  # (B, POS_KERNEL - 1, width) past projected frames for the positional conv
    cache: KVCache | StaticKVCache


class SEMGTransformer(nn.Module):
    def __init__(self, config: EmgCTCConfig):
        super().__init__()
        c = config
        first = c.n_channels
        layers = []
        for i, (dim, kernel, stride) in enumerate(zip(CONV_DIM, CONV_KERNEL, CONV_STRIDE)):
            layers.append(nn.Conv1d(first, dim, kernel, stride, bias=False))
            if i == 0:  # normalisation over time (per channel), or per frame for streaming
                layers.append(FrameNorm(dim) if c.causal else nn.GroupNorm(dim, dim))
            layers.append(nn.GELU())
            first = dim
        self.featurizer = nn.Sequential(*layers)
        self.feature_norm = nn.LayerNorm(CONV_DIM[-1])
        self.projection = nn.Linear(CONV_DIM[-1], c.width)
        self.dropout = nn.Dropout(c.dropout)
        self.pos_conv = nn.utils.parametrizations.weight_norm(
            nn.Conv1d(c.width, c.width, POS_KERNEL, groups=POS_GROUPS), dim=2
        )
        self.causal = c.causal
        self.encoder = Transformer(c.width, c.depth, c.n_heads, c.dropout, qk_norm=c.qk_norm)
        self.bottleneck = Bottleneck(c.width, c.rvq_levels, c.rvq_codebook_size) if c.rvq_levels else None

    @staticmethod
    def output_length(n_samples: torch.Tensor | int):
        for kernel, stride in zip(CONV_KERNEL, CONV_STRIDE):
            n_samples = (n_samples - kernel) // stride + 1
        return n_samples

    def _positional(self, x: torch.Tensor, past: torch.Tensor | None = None) -> torch.Tensor:
        """Positional conv of projected frames `(B, T, d)`; `past` frames (streaming) precede x."""
        h = x.transpose(1, 2)
        if self.causal:
            left = past.transpose(1, 2) if past is not None else h.new_zeros(*h.shape[:2], POS_KERNEL - 1)
            h = torch.cat([left, h], dim=2)
        else:  # 64 frames either side, last output dropped (even kernel), as in wav2vec 2.0
            h = F.pad(h, (POS_KERNEL // 2, POS_KERNEL // 2))
        pos = F.gelu(self.pos_conv(h))[:, :, : x.shape[1]]
        return x + pos.transpose(1, 2)

    def _encode(self, x: torch.Tensor, cache: KVCache | StaticKVCache | None = None):
        x = self.dropout(x)
        if self.bottleneck is None:
            return self.encoder(x, is_causal=True, cache=cache), x.new_zeros(()), None
        # emg-tokenizer's bottleneck sits after the first block
        x, commit, codes = self.bottleneck(self.encoder.blocks[0](x, None, True, cache, 0))
        return self.encoder(x, is_causal=True, cache=cache, first=1), commit, codes

    def _frames(self, emg: torch.Tensor) -> torch.Tensor:
        features = self.featurizer(emg).transpose(1, 2)
        return self.dropout(self.projection(self.feature_norm(features)))

    def forward(self, emg: torch.Tensor):
        """emg `(B, C, T)` -> features `(B, T', width)`, commitment loss, codes."""
        return self._encode(self._positional(self._frames(emg)))

    def start_stream(self, batch: int, device, dtype=torch.float32, max_frames: int = 0) -> StreamState:
        """A new stream; `max_frames` > 0 preallocates its KV cache for that many frames (fixed shapes,
        for CUDA-graph capture), else the cache grows."""
        if not self.causal:
            raise ValueError("streaming needs the fully causal variant (causal=True)")
        width = self.projection.out_features
        block = self.encoder.blocks[0].attn
        cache = (
            StaticKVCache(
                len(self.encoder.blocks),
                batch,
                block.n_heads,
                width // block.n_heads,
                max_frames,
                device,
                dtype,
            )
            if max_frames
            else KVCache()
        )
        return StreamState(
            samples=torch.zeros(batch, self.featurizer[0].in_channels, 0, device=device, dtype=dtype),
            features=torch.zeros(batch, POS_KERNEL - 1, width, device=device, dtype=dtype),
            cache=cache,
        )

    def stream(self, state: StreamState, emg: torch.Tensor):
        """Feed new samples `(B, C, n)`; returns features of the frames they complete `(B, m, width)`."""
        samples = torch.cat([state.samples, emg], dim=2)
        n_frames = int(self.output_length(samples.shape[2])) if samples.shape[2] >= CONV_KERNEL[0] else 0
        hop = int(np.prod(CONV_STRIDE))
        if n_frames <= 0:
            state.samples = samples
            return samples.new_zeros(samples.shape[0], 0, self.projection.out_features), None
        frames = self._frames(samples)
        state.samples = _update(state.samples, samples[:, :, n_frames * hop :])
        x = self._positional(frames, state.features)
        state.features = _update(
            state.features, torch.cat([state.features, frames], dim=1)[:, -(POS_KERNEL - 1) :]
        )
        x, _, codes = self._encode(x, state.cache)
        return x, codes


# ---------------------------------------------------------------- emg2qwerty's TDS-ConvNet


class RotationInvariantMLP(nn.Module):
    """One wrist: the same MLP over the electrodes rotated by -1, 0, +1, averaged."""

    def __init__(self, in_features: int, out_features: int, offsets=(-1, 0, 1)):
        super().__init__()
        self.offsets = offsets
        self.mlp = nn.Sequential(nn.Linear(in_features, out_features), nn.ReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """`(B, T, electrodes, freq)` -> `(B, T, out)`"""
        rotated = torch.stack([x.roll(o, dims=2) for o in self.offsets], dim=2)
        return self.mlp(rotated.flatten(3)).mean(dim=2)


class TDSConvBlock(nn.Module):
    def __init__(self, channels: int, width: int, kernel_width: int):
        super().__init__()
        self.channels, self.width = channels, width
        self.conv = nn.Conv2d(channels, channels, (1, kernel_width))
        self.norm = nn.LayerNorm(channels * width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """`(B, T, channels * width)` -> `(B, T - kernel_width + 1, channels * width)`"""
        b, t, f = x.shape
        h = x.transpose(1, 2).reshape(b, self.channels, self.width, t)
        h = F.relu(self.conv(h))
        t_out = h.shape[-1]
        h = h.reshape(b, f, t_out).transpose(1, 2)
        return self.norm(h + x[:, t - t_out :])


class TDSFullyConnected(nn.Module):
    def __init__(self, features: int):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(features, features), nn.ReLU(), nn.Linear(features, features))
        self.norm = nn.LayerNorm(features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x + self.net(x))


def log_spectrogram(emg: torch.Tensor, n_fft: int, hop_length: int) -> torch.Tensor:
    """`(B, C, T)` -> log10 power `(B, C, n_fft // 2 + 1, frames)`, window-normalised, no centring."""
    b, c, t = emg.shape
    window = torch.hann_window(n_fft, device=emg.device, dtype=torch.float32)
    spec = torch.stft(
        emg.reshape(b * c, t).float(), n_fft, hop_length, window=window, center=False, return_complex=True
    )
    power = spec.abs().pow(2) / window.pow(2).sum()
    return torch.log10(power + 1e-6).view(b, c, *power.shape[1:])


def spec_augment(
    spec: torch.Tensor, time_masks: int = 3, time_width: int = 25, freq_masks: int = 2, freq_width: int = 4
) -> torch.Tensor:
    """SpecAugment on `(B, C, F, T)`: random time and frequency bands set to each sample's mean."""
    b, _, n_freq, n_time = spec.shape
    out = spec.clone()
    fill = spec.mean(dim=(1, 2, 3))
    for i in range(b):
        for axis, count, width, size in (
            (3, time_masks, time_width, n_time),
            (2, freq_masks, freq_width, n_freq),
        ):
            for _ in range(count):
                w = int(torch.randint(0, width + 1, ()))
                s = int(torch.randint(0, max(1, size - w), ()))
                if axis == 3:
                    out[i, :, :, s : s + w] = fill[i]
                else:
                    out[i, :, s : s + w, :] = fill[i]
    return out


class SpectrogramNorm(nn.Module):
    """Batch normalisation of a log spectrogram `(B, C, F, T)`: one statistic per electrode
    ("electrode", emg2qwerty's), or per electrode and frequency bin ("frequency").

    Per electrode, the static spectral profile (tens of dB between the low bins and the roll-off above
    the band) holds most of the variance and a keystroke's few dB over time are a small part of the
    input; per bin, every feature's variation over time has unit scale, as with speech features."""

    def __init__(self, n_channels: int, n_freq: int, mode: str):
        super().__init__()
        self.mode = mode
        self.norm = nn.BatchNorm2d(n_channels) if mode == "electrode" else nn.BatchNorm1d(n_channels * n_freq)

    def forward(self, spec: torch.Tensor) -> torch.Tensor:
        if self.mode == "electrode":
            return self.norm(spec)
        b, c, f, t = spec.shape
        return self.norm(spec.reshape(b, c * f, t)).view(b, c, f, t)


class TDSConvNet(nn.Module):
    def __init__(self, config: EmgCTCConfig):
        super().__init__()
        c = config
        self.n_fft, self.hop, self.augment = c.n_fft, c.hop_length, c.spec_augment
        n_freq = c.n_fft // 2 + 1
        self.electrodes = c.n_channels // 2
        self.spec_norm = SpectrogramNorm(c.n_channels, n_freq, c.spec_norm)
        self.wrist_mlps = nn.ModuleList(
            RotationInvariantMLP(self.electrodes * n_freq, c.tds_mlp_features) for _ in range(2)
        )
        features = c.feature_dim
        blocks = []
        for channels in c.tds_block_channels:
            if features % channels:
                raise ValueError(f"TDS features {features} not divisible by block channels {channels}")
            blocks.append(
                nn.Sequential(
                    TDSConvBlock(channels, features // channels, c.tds_kernel_width),
                    TDSFullyConnected(features),
                )
            )
        self.blocks = nn.ModuleList(blocks)
        self.kernel_width = c.tds_kernel_width
        self.bottleneck = Bottleneck(features, c.rvq_levels, c.rvq_codebook_size) if c.rvq_levels else None

    def output_length(self, n_samples):
        frames = (n_samples - self.n_fft) // self.hop + 1
        return frames - len(self.blocks) * (self.kernel_width - 1)

    def forward(self, emg: torch.Tensor):
        spec = self.spec_norm(log_spectrogram(emg, self.n_fft, self.hop))  # (B, C, F, T)
        if self.training and self.augment:
            spec = spec_augment(spec)
        b, c, f, t = spec.shape
        wrists = spec.view(b, 2, self.electrodes, f, t).permute(1, 0, 4, 2, 3)  # (2, B, T, E, F)
        x = torch.cat([mlp(w) for mlp, w in zip(self.wrist_mlps, wrists)], dim=-1)
        commit, codes = x.new_zeros(()), None
        for i, block in enumerate(self.blocks):
            x = block(x)
            if i == 0 and self.bottleneck is not None:
                x, commit, codes = self.bottleneck(x)
        return x, commit, codes


# ---------------------------------------------------------------- foundation-backed


class FoundationBackbone(nn.Module):
    """Frozen tokenizer codes -> foundation hidden states -> `frames_per_patch` frames per patch.

    Input: the tokenizer preset's scaled signal `(B, 32, T)` (1 kHz for the "emg" preset)."""

    def __init__(self, config: EmgCTCConfig):
        super().__init__()
        from foundation.config import FoundationConfig
        from foundation.model import BiotokFoundation
        from tokenizer.config import TokenizerConfig
        from tokenizer.model import BiotokTokenizer

        self.tokenizer = BiotokTokenizer(TokenizerConfig(**config.tokenizer_config))
        self.tokenizer.requires_grad_(False)
        self.foundation = BiotokFoundation(FoundationConfig(**config.foundation_config))
        preset = config.tokenizer_config["modalities"]["emg"]["preset"]
        self.patch_len = preset["patch_len"]
        self.chunk = int(round(preset["window_s"] * preset["sfreq"] / self.patch_len))  # patches per encode
        self.fpp = config.frames_per_patch
        d = self.foundation.config.d_model
        self.expand = nn.Sequential(
            nn.Linear(config.n_channels * d, config.width), nn.GELU(), nn.Dropout(config.dropout)
        )
        self.frame_features = nn.Linear(config.width, self.fpp * config.width)
        self.ch_names = [f"{wrist}_{i}" for wrist in ("left", "right") for i in range(config.n_channels // 2)]
        self.bottleneck = (
            Bottleneck(config.width, config.rvq_levels, config.rvq_codebook_size)
            if config.rvq_levels
            else None
        )

    def train(self, mode: bool = True):
        super().train(mode)
        self.tokenizer.eval()  # frozen: its quantiser state never changes
        return self

    def output_length(self, n_samples):
        return (n_samples // self.patch_len) * self.fpp

    @torch.no_grad()
    def codes(self, signal: torch.Tensor) -> torch.Tensor:
        """`(B, C, T)` -> codes `(B, C, P, S, Q)`, encoded in the tokenizer's own window length; Q is the
        foundation model's `n_read_levels`."""
        b, c, t = signal.shape
        p = t // self.patch_len
        patches = signal[:, :, : p * self.patch_len].reshape(b, c, p, self.patch_len)
        n_chunks = -(-p // self.chunk)
        patches = F.pad(patches, (0, 0, 0, n_chunks * self.chunk - p))
        chunks = (
            patches.view(b, c, n_chunks, self.chunk, -1)
            .transpose(1, 2)
            .reshape(b * n_chunks, c, self.chunk, -1)
        )
        ids = self.tokenizer.channel_ids([self.ch_names] * chunks.shape[0], "emg")
        # only the RVQ levels the foundation model reads
        levels = self.foundation.config.n_read_levels
        codes = self.tokenizer.encode_patches(chunks.to(self.tokenizer.dtype), ids, "emg", levels)
        codes = codes.view(b, n_chunks, c, self.chunk, *codes.shape[-2:]).transpose(1, 2)
        return codes.reshape(b, c, n_chunks * self.chunk, *codes.shape[-2:])[:, :, :p]

    def forward(self, signal: torch.Tensor):
        codes = self.codes(signal)
        b, c, p = codes.shape[:3]
        ids = self.foundation.channel_ids([self.ch_names] * b, "emg")
        hidden = self.foundation.encode(ids, "emg", codes=codes)  # (B, C, P, d)
        x = self.expand(hidden.permute(0, 2, 1, 3).reshape(b, p, -1))
        x = self.frame_features(x).view(b, p * self.fpp, -1)
        commit, out_codes = x.new_zeros(()), None
        if self.bottleneck is not None:
            x, commit, out_codes = self.bottleneck(x)
        return x, commit, out_codes


# ---------------------------------------------------------------- the model


class EmgCTCModel(PreTrainedModel):
    """emg `(B, 32, T)` -> per-frame log-probabilities over the 99 classes."""

    config_class = EmgCTCConfig
    base_model_prefix = "emg_ctc"
    main_input_name = "emg"

    def __init__(self, config: EmgCTCConfig):
        super().__init__(config)
        backbone = {"transformer": SEMGTransformer, "tds": TDSConvNet, "foundation": FoundationBackbone}
        self.backbone = backbone[config.architecture](config)
        self.head = nn.Linear(config.feature_dim, config.n_classes)
        self.post_init()
        if config.blank_init_prob is not None:
            # Start on the blank: from a near-uniform output CTC can fall into emitting labels on
            # every frame with the blank almost never (a stationary point, 7 nats per label here)
            p = config.blank_init_prob
            with torch.no_grad():
                self.head.bias[BLANK] = float(np.log(p / (1 - p) * (config.n_classes - 1)))

    def _init_weights(self, module: nn.Module) -> None:
        init_weights(module)

    @property
    def input_preset(self) -> dict | None:
        """The tokenizer preset the input must be prepared with (foundation-backed), else None (raw)."""
        if self.config.architecture != "foundation":
            return None
        return self.config.tokenizer_config["modalities"]["emg"]["preset"]

    def output_lengths(self, n_samples: torch.Tensor) -> torch.Tensor:
        return self.backbone.output_length(n_samples)

    def forward(self, emg: torch.Tensor) -> CTCOutput:
        features, commit, codes = self.backbone(emg)
        logits = self.head(features).float()
        lengths = torch.full((emg.shape[0],), logits.shape[1], dtype=torch.long, device=emg.device)
        return CTCOutput(logits.log_softmax(dim=-1), lengths, logits, commit, codes)

    @torch.no_grad()
    def export_tokens(self, emg: torch.Tensor) -> torch.Tensor:
        """The RVQ bottleneck's codes `(B, T', levels)` of emg `(B, 32, T)`."""
        if self.config.rvq_levels == 0:
            raise ValueError("this model has no RVQ bottleneck (rvq_levels=0)")
        return self(emg).codes

    @torch.no_grad()
    def session_log_probs(self, signal: torch.Tensor) -> torch.Tensor:
        """A whole session `(C, T)` -> emissions `(T', n_classes)` at batch 1.

        Signal models read the session in one pass; the foundation-backed one reads 4 s chunks with 1 s
        of past context (its time embedding is bounded) and keeps each chunk's own frames."""
        x = signal[None]
        if self.config.architecture != "foundation":
            return self(x).log_probs[0]
        preset = self.input_preset
        chunk = int(4.0 * preset["sfreq"])
        context = int(1.0 * preset["sfreq"])
        out = []
        for start in range(0, x.shape[2], chunk):
            piece = x[:, :, max(0, start - context) : start + chunk]
            lead = min(start, context)
            if piece.shape[2] - lead < self.backbone.patch_len:
                break
            emissions = self(piece).log_probs[0]
            out.append(emissions[self.output_lengths(lead) :])
        return torch.cat(out)

    def start_stream(self, batch: int = 1, max_frames: int = 0) -> StreamState:
        """A new stream (see `SEMGTransformer.start_stream`; 100 frames per second of signal)."""
        if self.config.architecture != "transformer":
            raise ValueError("streaming is for the causal transformer")
        return self.backbone.start_stream(batch, self.device, self.dtype, max_frames)

    @torch.no_grad()
    def stream(self, state: StreamState, emg: torch.Tensor) -> torch.Tensor:
        """Feed `(B, C, n)` new samples (e.g. 20 = 10 ms); returns the new frames' log-probs `(B, m, K)`."""
        features, _ = self.backbone.stream(state, emg)
        return self.head(features).float().log_softmax(dim=-1)
