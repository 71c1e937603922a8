"""The multi-scale patch tokenizer: patches -> conv branches -> one transformer pass -> per-scale RVQ
-> decoder -> each patch's Fourier amplitude and phase -> signal.

Shapes: B batch, C channels, P patches per channel, L patch length, S scales, Q RVQ levels.
"""

from __future__ import annotations

import contextlib
import warnings
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from transformers import PreTrainedModel

from core.blocks import ConvBranch, KVCache, StaticKVCache, Transformer, attention, init_weights
from core.channels import add_channel_positions, channel_vectors, vocabulary_ids, vocabulary_positions

from .config import TokenizerConfig
from .rvq import ResidualVQ, allocate_levels

# the shared blocks stay importable from here, where they lived first
__all__ = [
    "BiotokTokenizer",
    "ConvBranch",
    "Encoding",
    "KVCache",
    "PatchStem",
    "StaticKVCache",
    "TokenizerOutput",
    "Transformer",
    "attention",
    "init_weights",
    "vocabulary_ids",
    "vocabulary_positions",
]


class PatchStem(nn.Module):
    """One scale's patch embedding `(N, L)` -> `(N, d_model)`: "conv", "linear" or "conv+linear" (see
    `TokenizerConfig.patch_embed`)."""

    def __init__(self, kind: str, kernels, channels: int, pool_len: int, patch_len: int, d_model: int):
        super().__init__()
        self.conv = (
            ConvBranch(tuple(kernels), channels, pool_len, d_model, norm=kind == "conv")
            if "conv" in kind
            else None
        )
        self.linear = nn.Linear(patch_len, d_model) if "linear" in kind else None

    def forward(self, patches: torch.Tensor) -> torch.Tensor:
        out = self.linear(patches) if self.linear is not None else 0
        return out + self.conv(patches) if self.conv is not None else out


@dataclass
class TokenizerOutput:
    loss: torch.Tensor
    losses: dict[str, torch.Tensor]
    codes: torch.Tensor  # (B, C, P, S, Q)
    reconstruction: torch.Tensor  # (B, C, P, L) patches rebuilt from the codes
    counts: torch.Tensor  # (S, Q, K) code uses in this batch
    expired: torch.Tensor  # (S, Q) codes restarted in this step


@dataclass
class Encoding:
    """What `encode` returns and `decode` needs: the codes and how to undo the preprocessing."""

    codes: torch.Tensor  # (B, C, P, S, Q) long
    modality: str
    ch_names: list[str]
    sfreq: float  # the input's rate
    n_times: int  # the input's length in samples
    scale_center: np.ndarray  # (B, C)
    scale_spread: np.ndarray  # (B, C)
    unit: str


class BiotokTokenizer(PreTrainedModel):
    """Multi-scale RVQ patch tokenizer. `forward` trains; `encode`/`decode` convert signal <-> codes."""

    config_class = TokenizerConfig
    base_model_prefix = "tokenizer"
    main_input_name = "patches"
    _keep_in_fp32_modules = ["quantizers"]

    def __init__(self, config: TokenizerConfig):
        super().__init__(config)
        d, s = config.d_model, config.n_scales
        self.modality_names = sorted(config.modalities)  # JSON reloads sort keys: index by sorted name
        if config.patch_embed == "conv":  # the first design's module layout, so its weights still load
            self.stems = nn.ModuleDict(
                {
                    name: nn.ModuleList(
                        ConvBranch(tuple(k), config.branch_channels, config.pool_len, d)
                        for k in spec["kernels"]
                    )
                    for name, spec in config.modalities.items()
                }
            )
        else:
            self.stems = nn.ModuleDict(
                {
                    name: nn.ModuleList(
                        PatchStem(
                            config.patch_embed,
                            k,
                            config.branch_channels,
                            config.pool_len,
                            spec["preset"]["patch_len"],
                            d,
                        )
                        for k in spec["kernels"]
                    )
                    for name, spec in config.modalities.items()
                }
            )
        self.channel_embed = nn.Embedding(len(config.channel_vocab) + 1, d, padding_idx=0)
        if config.position_embed:  # where a channel sits (10-05 positions for EEG)
            add_channel_positions(self, config.channel_vocab, d)
        self.time_embed = nn.Embedding(config.max_patches, d)
        self.modality_embed = nn.Embedding(len(self.modality_names), d)
        self.scale_embed = nn.Embedding(s, d)
        self.encoder = Transformer(d, config.n_layers, config.n_heads, config.dropout)
        self.to_code = nn.ModuleList(
            nn.Sequential(nn.Linear(d, d), nn.Tanh(), nn.Linear(d, config.code_dim)) for _ in range(s)
        )
        if config.latent_skip:
            # a linear map from each patch's samples straight to every scale's code: the latents start
            # as a PCA-like projection of the patch (which keeps its information) that the transformer
            # only refines with context; without it they held less than a 16-d PCA of the patch
            self.latent_skip = nn.ModuleDict(
                {
                    name: nn.Linear(spec["preset"]["patch_len"], s * config.code_dim)
                    for name, spec in config.modalities.items()
                }
            )
        self.quantizers = nn.ModuleList(
            ResidualVQ(
                config.code_dim,
                config.codebook_size,
                config.n_levels,
                decay=config.ema_decay,
                dead_code_threshold=config.dead_code_threshold,
                quantizer_dropout=config.quantizer_dropout,
                kmeans_iters=config.kmeans_iters,
                commitment=config.commitment,
            )
            for _ in range(s)
        )
        if config.decoder_skip:
            # the decoder's mirror of latent_skip: a linear map from a token's codes to its patch's
            # spectrum (real, imaginary), which the heads then only rescale and rotate with context;
            # without it the decoder rebuilt the patch 3.3 dB worse than a ridge readout of its latents
            self.decoder_skip = nn.ModuleDict(
                {
                    name: nn.Linear(s * config.code_dim, 2 * (spec["preset"]["patch_len"] // 2 + 1))
                    for name, spec in config.modalities.items()
                }
            )
        self.from_code = nn.Linear(s * config.code_dim, d)
        self.decoder = Transformer(d, config.n_decoder_layers, config.n_heads, config.dropout)
        self._head_outputs = 5 if config.decoder_context == "add+rotate" else 3  # per Fourier bin
        self.heads = nn.ModuleDict(
            {
                name: nn.Linear(d, self._head_outputs * (spec["preset"]["patch_len"] // 2 + 1))
                for name, spec in config.modalities.items()
            }
        )
        self._vocab_index = {name: i + 1 for i, name in enumerate(config.channel_vocab)}
        # keys of `modalities` are preset names (eeg, emg, emg_200hz, ecg); channels are named by modality
        self._modality_of = {name: spec["preset"]["modality"] for name, spec in config.modalities.items()}
        self.post_init()

    def _init_weights(self, module: nn.Module) -> None:
        init_weights(module)
        if module is getattr(self, "channel_embed", None) and self.config.channel_name_dropout > 0:
            # an untrained name must read as "name unknown" (zero), the state name dropout trains
            nn.init.zeros_(module.weight)
        heads = getattr(self, "heads", {})
        added = {"add": (1, 3), "add+rotate": (3, 5)}.get(self.config.decoder_context)
        if added and any(module is head for head in heads.values()):
            # the added correction starts at zero, so the decoder starts as the linear spectrum ("add")
            # or as "rotate" ("add+rotate"), instead of with noise on every bin
            bins = module.out_features // self._head_outputs
            nn.init.zeros_(module.weight[added[0] * bins : added[1] * bins])
            nn.init.zeros_(module.bias[added[0] * bins : added[1] * bins])

    # ------------------------------------------------------------ channels

    def channel_ids(self, ch_names: list[list[str]] | list[str], modality: str) -> torch.Tensor:
        """Vocabulary ids `(B, C)` of "modality:name" channels, 0-padded; unknown names are an error.

        `modality` is a key of `config.modalities` (a preset name such as "eeg" or "emg_200hz")."""
        self._check_modality(modality)
        if ch_names and isinstance(ch_names[0], str):
            ch_names = [ch_names]
        return vocabulary_ids(
            ch_names, self._modality_of[modality], self.config.channel_vocab, self._vocab_index, self.device
        )

    # ------------------------------------------------------------ network

    def _check_modality(self, modality: str) -> None:
        if modality not in self.config.modalities:
            raise ValueError(
                f"modality {modality!r} not configured; this tokenizer has {self.modality_names}"
            )

    def _embed(
        self,
        patches: torch.Tensor,
        channel_ids: torch.Tensor,
        modality: str,
        name_keep: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Patch tokens for every scale `(S, B, C*P, d)` and the attention mask `(S*B, 1, 1, C*P)`."""
        b, c, p, length = patches.shape
        if p > self.config.max_patches:
            raise ValueError(f"{p} patches per channel exceed max_patches={self.config.max_patches}")
        flat = patches.reshape(b * c * p, length)
        tokens = torch.stack([branch(flat) for branch in self.stems[modality]])  # (S, N, d)
        tokens = tokens.view(-1, b, c, p, self.config.d_model)
        tokens = (
            tokens
            + channel_vectors(self, channel_ids, name_keep)[None, :, :, None]
            + self.time_embed.weight[:p][None, None, None]
        )
        modality_id = self.modality_names.index(modality)
        tokens = (
            tokens + self.modality_embed.weight[modality_id] + self.scale_embed.weight[:, None, None, None]
        )
        mask = (channel_ids > 0)[:, :, None].expand(b, c, p).reshape(b, 1, 1, c * p)
        return tokens.reshape(-1, b, c * p, self.config.d_model), mask

    def _latents(
        self,
        patches: torch.Tensor,
        channel_ids: torch.Tensor,
        modality: str,
        name_keep: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-scale code-space latents `(S, B, C*P, code_dim)` from one encoder pass over all scales."""
        tokens, mask = self._embed(patches, channel_ids, modality, name_keep)
        s, b, t, d = tokens.shape
        hidden = self.encoder(tokens.reshape(s * b, t, d), mask.repeat(s, 1, 1, 1)).view(s, b, t, d)
        latents = torch.stack([proj(hidden[i]) for i, proj in enumerate(self.to_code)])
        if self.config.latent_skip:
            skip = self.latent_skip[modality](patches.reshape(b, t, -1).to(latents.dtype))
            latents = latents + skip.view(b, t, s, -1).permute(2, 0, 1, 3)
        return latents, mask

    def _decode_latents(
        self,
        quantized: torch.Tensor,
        channel_ids: torch.Tensor,
        modality: str,
        shape: tuple,
        name_keep: torch.Tensor | None = None,
    ) -> tuple:
        """Quantized `(S, B, C*P, code_dim)` -> amplitude (log1p), sin, cos, each `(B, C, P, L//2+1)`."""
        s, b, t, _ = quantized.shape
        _, c, p, _ = shape
        codes = quantized.permute(1, 2, 0, 3).reshape(b, t, -1)
        x = self.from_code(codes)
        x = (
            x
            + channel_vectors(self, channel_ids, name_keep).repeat_interleave(p, dim=1)
            + self.time_embed.weight[:p].repeat(c, 1)[None]
        )
        mask = (channel_ids > 0).repeat_interleave(p, dim=1)[:, None, None, :]
        out = self.heads[modality](self.decoder(x, mask)).view(b, c, p, self._head_outputs, -1)
        if not self.config.decoder_skip:
            return out[..., 0, :], out[..., 1, :], out[..., 2, :]
        # amplitude = |linear| * exp(head 0); phase = angle(linear) + angle(1 + head 1 + i head 2): a head
        # near zero (as initialised) leaves the linear spectrum, and the outputs stay amplitude and phase
        linear = self.decoder_skip[modality](codes).float().view(b, c, p, 2, -1)
        base = torch.complex(linear[..., 0, :], linear[..., 1, :])
        if self._head_outputs == 5:  # "add+rotate": the correction goes in before the scaling and rotation
            base = base + torch.complex(out[..., 3, :].float(), out[..., 4, :].float())
        context = torch.complex(out[..., 1, :].float(), out[..., 2, :].float())
        add = self.config.decoder_context == "add"
        unit = base + context if add else base * (1 + context)
        # the epsilon keeps the gradient of |.| finite where a bin's prediction is exactly zero
        magnitude = torch.sqrt(unit.real**2 + unit.imag**2 + 1e-12)
        amplitude = (
            magnitude
            if add
            else torch.sqrt(base.real**2 + base.imag**2 + 1e-12)
            * torch.exp(out[..., 0, :].float().clamp(max=20))
        )
        return torch.log1p(amplitude), unit.imag / magnitude, unit.real / magnitude

    @staticmethod
    def spectrum_to_patches(
        log_amp: torch.Tensor, sin: torch.Tensor, cos: torch.Tensor, patch_len: int
    ) -> torch.Tensor:
        norm = torch.sqrt(sin.float() ** 2 + cos.float() ** 2).clamp(min=1e-6)
        amp = torch.expm1(log_amp.float()).clamp(min=0)
        return torch.fft.irfft(torch.complex(amp * cos.float() / norm, amp * sin.float() / norm), n=patch_len)

    def forward(self, patches: torch.Tensor, channel_ids: torch.Tensor, modality: str) -> TokenizerOutput:
        """patches `(B, C, P, L)` scaled signal; channel_ids `(B, C)` (0 = padding channel)."""
        self._check_modality(modality)
        cfg = self.config
        name_keep = None
        if self.training and cfg.channel_name_dropout > 0:
            name_keep = torch.rand(channel_ids.shape, device=channel_ids.device) >= cfg.channel_name_dropout
        latents, mask = self._latents(patches, channel_ids, modality, name_keep)
        s, b, t, dim = latents.shape
        weights = mask.reshape(b, t).float().reshape(-1)
        quantized, codes, counts, expired = [], [], [], []
        commit = latents.new_zeros(())
        for i, quantizer in enumerate(self.quantizers):
            out = quantizer(latents[i].reshape(b * t, dim), weights)
            quantized.append(out.quantized.view(b, t, dim))
            codes.append(out.codes.view(b, t, -1))
            counts.append(out.counts)
            expired.append(out.expired)
            commit = commit + out.commit_loss
        quantized = torch.stack(quantized).to(latents.dtype)
        log_amp, sin, cos = self._decode_latents(quantized, channel_ids, modality, patches.shape, name_keep)
        spectrum = torch.fft.rfft(patches.float(), dim=-1)
        target_amp, target_phase = torch.log1p(spectrum.abs()), spectrum.angle()
        valid = (channel_ids > 0)[:, :, None, None].float()
        denom = valid.sum() * patches.shape[2] * log_amp.shape[-1]
        amp_loss = ((log_amp.float() - target_amp) ** 2 * valid).sum() / denom
        norm = torch.sqrt(sin.float() ** 2 + cos.float() ** 2).clamp(min=1e-6)
        cosine = (sin.float() * torch.sin(target_phase) + cos.float() * torch.cos(target_phase)) / norm
        circle = (((sin.float() ** 2 + cos.float() ** 2 - 1) ** 2) * valid).sum() / denom
        recon = self.spectrum_to_patches(log_amp, sin, cos, patches.shape[-1])
        error = ((recon - patches.float()) ** 2 * valid).sum()
        time_loss = error / (valid.sum() * patches.shape[2] * patches.shape[3])
        if cfg.objective == "waveform":
            # error over the batch's power: the pooled SNR that the rate-distortion table reports, on the
            # same footing for every modality's scaling; by Parseval a phase error costs its bin's power
            phase_loss = (spectrum.abs() ** 2 * (1 - cosine) * valid).sum() / (
                (spectrum.abs() ** 2 * valid).sum().clamp(min=1e-12)
            )
            nmse = error / ((patches.float() ** 2 * valid).sum().clamp(min=1e-12))
            # phase_weight: the power-weighted phase error on its own as well, whose gradient does not
            # wait for the predicted amplitude to grow (the waveform error's does)
            loss = (
                nmse
                + cfg.phase_weight * phase_loss
                + cfg.log_amp_weight * amp_loss
                + cfg.phase_penalty * circle
            )
        else:
            phase_loss = ((1 - cosine) * valid).sum() / denom
            loss = amp_loss + phase_loss + cfg.phase_penalty * circle + cfg.time_loss_weight * time_loss
        loss = loss + cfg.commitment_weight * commit
        b, c, p, _ = patches.shape
        return TokenizerOutput(
            loss=loss,
            losses={"amplitude": amp_loss, "phase": phase_loss, "time": time_loss, "commit": commit},
            codes=torch.stack(codes, dim=2).view(b, c, p, s, -1),
            reconstruction=recon,
            counts=torch.stack(counts),
            expired=torch.stack(expired),
        )

    # ------------------------------------------------------------ codes <-> patches

    @torch.no_grad()
    def encode_patches(
        self,
        patches: torch.Tensor,
        channel_ids: torch.Tensor,
        modality: str,
        n_levels: int | None = None,
        allow_bf16: bool = False,
        variable_depth: bool = False,
    ) -> torch.Tensor:
        """Scaled patches `(B, C, P, L)` -> codes `(B, C, P, S, Q)`. Changes no state.

        The encoder runs in float32 even inside a bf16 autocast region: bf16 latents move enough to
        flip deep-level residual choices (docs/BENCHMARKS.md). `allow_bf16=True` lets autocast apply,
        for speed where the codes need not equal float32's.

        `variable_depth=True`: the same number of codes per patch (`n_levels` x scales x real channels),
        but not the same per token: each window's patch gives its levels to the tokens (any channel,
        any scale) whose latent residual they shrink most; a token's missing levels are -1 (all Q
        levels are returned). Where channels differ in what they carry, this moves bits to where the
        signal is, as a codec keeping a patch's largest coefficients does (docs/BENCHMARKS.md)."""
        self._check_modality(modality)
        keep = contextlib.nullcontext() if allow_bf16 else torch.autocast(patches.device.type, enabled=False)
        with keep:
            latents, _ = self._latents(patches.to(self.dtype), channel_ids, modality)
        s, b, t, dim = latents.shape
        c, p = patches.shape[1], patches.shape[2]
        if not variable_depth:
            codes = torch.stack(
                [q.encode(latents[i].reshape(b * t, dim), n_levels) for i, q in enumerate(self.quantizers)],
                dim=1,
            )
            return codes.view(b, c, p, s, -1)
        found = [q.residual_gains(latents[i].reshape(b * t, dim)) for i, q in enumerate(self.quantizers)]
        codes = torch.stack([f[0] for f in found], dim=1).view(b, c, p, s, -1)
        gains = torch.stack([f[1] for f in found], dim=1).view(b, c, p, s, -1)
        real = channel_ids > 0  # padding channels spend nothing
        gains = gains.masked_fill(~real[:, :, None, None, None], float("-inf"))
        groups = gains.permute(0, 2, 3, 1, 4).reshape(b * p, s * c, -1)  # one window's patch, every token
        budgets = ((n_levels or self.config.n_levels) * s * real.sum(dim=1)).repeat_interleave(p)
        depths = allocate_levels(groups, budgets).view(b, p, s, c).permute(0, 3, 1, 2)  # (B, C, P, S)
        levels = torch.arange(codes.shape[-1], device=codes.device)
        return codes.masked_fill(levels >= depths[..., None], -1)

    @torch.no_grad()
    def autoencode_patches(
        self, patches: torch.Tensor, channel_ids: torch.Tensor, modality: str
    ) -> torch.Tensor:
        """Patches `(B, C, P, L)` rebuilt from the encoder's latents without quantization: the bound
        that any number of RVQ levels approaches."""
        self._check_modality(modality)
        with torch.autocast(patches.device.type, enabled=False):
            latents, _ = self._latents(patches.to(self.dtype), channel_ids, modality)
            log_amp, sin, cos = self._decode_latents(latents, channel_ids, modality, patches.shape)
        return self.spectrum_to_patches(log_amp, sin, cos, patches.shape[-1])

    @torch.no_grad()
    def quantized_latents(self, codes: torch.Tensor) -> torch.Tensor:
        """Codes `(B, C, P, S, Q')` -> each scale's codebook vectors summed over the Q' levels given,
        `(S, B, C x P, code_dim)` (what the decoder reads)."""
        b, c, p = codes.shape[:3]
        return torch.stack(
            [q.decode(codes[:, :, :, i].reshape(b, c * p, -1)) for i, q in enumerate(self.quantizers)]
        )

    @torch.no_grad()
    def decode_patches(self, codes: torch.Tensor, channel_ids: torch.Tensor, modality: str) -> torch.Tensor:
        """Codes `(B, C, P, S, Q')` (any Q' <= Q levels; -1 where a variable-depth token has no such
        level) -> scaled patches `(B, C, P, L)`."""
        self._check_modality(modality)
        b, c, p = codes.shape[:3]
        quantized = self.quantized_latents(codes)
        patch_len = self.config.modalities[modality]["preset"]["patch_len"]
        log_amp, sin, cos = self._decode_latents(
            quantized.to(self.dtype), channel_ids, modality, (b, c, p, patch_len)
        )
        return self.spectrum_to_patches(log_amp, sin, cos, patch_len)

    # ------------------------------------------------------------ signal <-> codes

    @torch.no_grad()
    def encode(
        self,
        signal,
        sfreq: float,
        ch_names: list[str],
        modality: str,
        unit: str = "uV",
        n_levels: int | None = None,
        variable_depth: bool = False,
    ) -> Encoding:
        """Signal `(B, C, T)` or `(C, T)` in `unit` at `sfreq` -> `Encoding` (codes `(B, C, P, S, Q)`).

        Applies the modality's preset (resampling when sfreq differs, filters, scaling) and pads the
        last patch with zeros (with a warning saying how much). `variable_depth`: see `encode_patches`.
        """
        from data_prep.presets import get_preset, patchify, preprocess
        from data_prep.recording import Recording

        self._check_modality(modality)
        preset = get_preset(self.config.modalities[modality]["preset"])
        data = signal.detach().cpu().numpy() if torch.is_tensor(signal) else np.asarray(signal)
        if data.ndim == 2:
            data = data[None]
        recs = [preprocess(Recording(x, sfreq, list(ch_names), unit, preset.modality), preset) for x in data]
        scaled = np.stack([r.data for r in recs])
        pad = (-scaled.shape[-1]) % preset.patch_len
        if pad:
            warnings.warn(
                f"padded the last patch with {pad} zero samples ({pad / preset.sfreq:.3f} s)", stacklevel=2
            )
        patches = torch.from_numpy(patchify(scaled, preset.patch_len, pad=True)).to(self.device, self.dtype)
        ids = self.channel_ids([recs[0].ch_names] * len(recs), modality)
        codes = self.encode_patches(patches, ids, modality, n_levels, variable_depth=variable_depth)
        return Encoding(
            codes=codes,
            modality=modality,
            ch_names=recs[0].ch_names,
            sfreq=float(sfreq),
            n_times=data.shape[-1],
            scale_center=np.stack([r.scale_center for r in recs]),
            scale_spread=np.stack([r.scale_spread for r in recs]),
            unit=recs[0].unit,
        )

    @torch.no_grad()
    def decode(self, encoding: Encoding, n_levels: int | None = None) -> np.ndarray:
        """`Encoding` -> signal `(B, C, T)` at the input's rate, in µV (or the input's device unit)."""
        from data_prep.presets import resample

        codes = encoding.codes if n_levels is None else encoding.codes[..., :n_levels]
        ids = self.channel_ids([encoding.ch_names] * codes.shape[0], encoding.modality)
        patches = self.decode_patches(codes, ids, encoding.modality).float().cpu().numpy()
        scaled = patches.reshape(*patches.shape[:2], -1)
        signal = scaled * encoding.scale_spread[..., None] + encoding.scale_center[..., None]
        preset_sfreq = self.config.modalities[encoding.modality]["preset"]["sfreq"]
        n_preset = int(round(encoding.n_times * preset_sfreq / encoding.sfreq))
        signal = resample(signal[..., :n_preset].astype(np.float64), preset_sfreq, encoding.sfreq)
        return signal[..., : encoding.n_times].astype(np.float32)
