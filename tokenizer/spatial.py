"""Spatial latent coding: one montage's tokenizer latents coded jointly across its channels.

A token's codes describe its own channel, so a signal that many channels share (a reference, a few
strong sources) is paid for once per channel; a classical codec that rotates the channels onto their
principal axes first spends its bits on the few components that carry the energy (docs/BENCHMARKS.md:
that bit allocation, not the transform, is the whole of its lead). This coder does the same in the
tokenizer's latent space, with the tokenizer's encoder and decoder unchanged:

    latents (S, B, C, P, D) -> per scale: minus the channels' mean latent, rotated onto the principal
    axes of the channels (fitted on a montage's training windows) -> each component, divided by its
    RMS, coded by residual VQ (k-means codebooks, up to `max_levels` levels) -> rotated back -> decoder

The number of levels of each (scale, component) is a fixed schedule, chosen on the fitting windows by
where a level shrinks the latent error most on average, for a budget of n codes per channel and scale:
the same codes per patch as the tokenizer at n levels (so the same bits per channel-second), and no side
information. Its codes are not the per-channel token grid the foundation model reads: they index
components, not channels. It is a codec mode, fitted per montage (as the spatial PCA + DCT baseline is).

    coder = SpatialLatentCoder.fit(tok, patches, channel_ids, "eeg", ch_names)   # training windows
    codes = coder.encode_patches(tok, held_patches, held_ids, n_levels=1)        # (B, S, C, P, Q), -1 absent
    rebuilt = coder.decode_patches(tok, codes, held_ids)                         # (B, C, P, L)
    coder.save_pretrained("coder_64ch"); SpatialLatentCoder.from_pretrained("coder_64ch")
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from .model import BiotokTokenizer
from .rvq import allocate_levels, kmeans, residual_codes, residual_decode, residual_gains


@torch.no_grad()
def montage_latents(
    tokenizer: BiotokTokenizer,
    patches: torch.Tensor,
    channel_ids: torch.Tensor,
    modality: str,
    batch: int = 32,
) -> torch.Tensor:
    """Scaled patches `(B, C, P, L)` of one montage -> the encoder's float32 latents `(S, B, C, P, D)`."""
    b, c, p, _ = patches.shape
    out = []
    with torch.autocast(patches.device.type, enabled=False):
        for start in range(0, b, batch):
            chunk = patches[start : start + batch].to(tokenizer.dtype)
            latents, _ = tokenizer._latents(chunk, channel_ids[start : start + batch], modality)
            out.append(latents.float().view(latents.shape[0], chunk.shape[0], c, p, -1))
    return torch.cat(out, dim=1)


def fit_axes(latents: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Latents `(S, B, C, P, D)` -> per scale the channels' mean latent `(S, C, D)`, principal axes
    `(S, C, C)` (columns by falling variance) and each component's RMS `(S, C)`."""
    means, axes, rms = [], [], []
    for scale in latents:
        mean = scale.mean(dim=(0, 2))
        centred = (scale - mean[None, :, None]).permute(1, 0, 2, 3).reshape(scale.shape[1], -1).double()
        _, vectors = torch.linalg.eigh(centred @ centred.T / centred.shape[1])
        basis = vectors.flip(1).float()
        components = torch.einsum("ck,cn->kn", basis, centred.float())
        means.append(mean)
        axes.append(basis)
        rms.append(components.pow(2).mean(dim=1).sqrt().clamp(min=1e-8))
    return torch.stack(means), torch.stack(axes), torch.stack(rms)


class SpatialLatentCoder(nn.Module):
    """A montage's latent mean, axes, component scales, codebooks and level schedule (module docstring).

    mean `(S, C, D)`, axes `(S, C, C)`, rms `(S, C)`, codebooks `(S, Q, K, D)`, gains `(S, C, Q)` (the mean
    squared-error reduction of each component's each level on the fitting windows, in latent units)."""

    def __init__(
        self,
        mean: torch.Tensor,
        axes: torch.Tensor,
        rms: torch.Tensor,
        codebooks: torch.Tensor,
        gains: torch.Tensor,
        modality: str,
        ch_names: list[str],
        tokenizer_hash: str = "",
    ):
        super().__init__()
        if axes.shape[-1] != len(ch_names):
            raise ValueError(f"axes are for {axes.shape[-1]} channels, ch_names has {len(ch_names)}")
        for name, value in (("mean", mean), ("axes", axes), ("rms", rms), ("codebooks", codebooks)):
            self.register_buffer(name, value.float().contiguous())
        self.register_buffer("gains", gains.float().contiguous())
        self.modality, self.ch_names, self.tokenizer_hash = modality, list(ch_names), tokenizer_hash

    @property
    def max_levels(self) -> int:
        return self.codebooks.shape[1]

    def schedule(self, n_levels: int) -> torch.Tensor:
        """Levels per (scale, component) `(S, C)` for a budget of `n_levels` codes per channel and scale."""
        s, c, q = self.gains.shape
        if not 1 <= n_levels * s * c <= s * c * q:
            raise ValueError(f"n_levels={n_levels}: this coder has 1..{q} levels per component")
        budget = torch.tensor([n_levels * s * c], device=self.gains.device)
        return allocate_levels(self.gains.reshape(1, s * c, q), budget).view(s, c)

    def normalised_components(self, latents: torch.Tensor) -> torch.Tensor:
        """`(S, B, C, P, D)` latents -> RMS-normalised components, same shape."""
        centred = latents.float() - self.mean[:, None, :, None]
        components = torch.einsum("sck,sbcpd->sbkpd", self.axes, centred)
        return components / self.rms[:, None, :, None, None]

    def encode_latents(self, latents: torch.Tensor, n_levels: int) -> torch.Tensor:
        """Latents `(S, B, C, P, D)` -> codes `(B, S, C, P, Q)` (C: components; -1 past the schedule)."""
        components = self.normalised_components(latents)
        s, b, c, p, d = components.shape
        codes = torch.stack(
            [residual_codes(components[i].reshape(-1, d), self.codebooks[i]) for i in range(s)]
        ).view(s, b, c, p, -1)
        depth = self.schedule(n_levels)[:, None, :, None, None]
        levels = torch.arange(self.max_levels, device=codes.device)
        return codes.masked_fill(levels >= depth, -1).permute(1, 0, 2, 3, 4)

    def decode_latents(self, codes: torch.Tensor) -> torch.Tensor:
        """Codes `(B, S, C, P, Q')` -> latents `(S, B, C, P, D)`; a code of -1 adds nothing."""
        codes = codes.permute(1, 0, 2, 3, 4)
        components = torch.stack(
            [residual_decode(codes[i], self.codebooks[i]) for i in range(codes.shape[0])]
        )
        components = components * self.rms[:, None, :, None, None]
        return torch.einsum("sck,sbkpd->sbcpd", self.axes, components) + self.mean[:, None, :, None]

    def _check(self, tokenizer: BiotokTokenizer, channel_ids: torch.Tensor) -> None:
        if self.tokenizer_hash and tokenizer.config.config_hash() != self.tokenizer_hash:
            raise ValueError(
                f"this coder was fitted on tokenizer {self.tokenizer_hash}, not "
                f"{tokenizer.config.config_hash()}"
            )
        if channel_ids.shape[1] != len(self.ch_names):
            raise ValueError(
                f"this coder's montage has {len(self.ch_names)} channels, the patches have {channel_ids.shape[1]}"
            )
        expected = tokenizer.channel_ids(self.ch_names, self.modality).to(channel_ids.device)
        if not bool((channel_ids == expected).all()):
            raise ValueError(f"channels differ from the coder's montage {self.ch_names[:4]}...")

    @torch.no_grad()
    def encode_patches(
        self, tokenizer: BiotokTokenizer, patches: torch.Tensor, channel_ids: torch.Tensor, n_levels: int
    ) -> torch.Tensor:
        """Scaled patches `(B, C, P, L)` of this montage -> codes `(B, S, C, P, Q)`."""
        self._check(tokenizer, channel_ids)
        return self.encode_latents(montage_latents(tokenizer, patches, channel_ids, self.modality), n_levels)

    @torch.no_grad()
    def decode_patches(
        self, tokenizer: BiotokTokenizer, codes: torch.Tensor, channel_ids: torch.Tensor
    ) -> torch.Tensor:
        """Codes `(B, S, C, P, Q)` -> scaled patches `(B, C, P, L)` through the tokenizer's decoder."""
        self._check(tokenizer, channel_ids)
        latents = self.decode_latents(codes)
        s, b, c, p, d = latents.shape
        patch_len = tokenizer.config.modalities[self.modality]["preset"]["patch_len"]
        with torch.autocast(latents.device.type, enabled=False):
            log_amp, sin, cos = tokenizer._decode_latents(
                latents.reshape(s, b, c * p, d).to(tokenizer.dtype),
                channel_ids,
                self.modality,
                (b, c, p, patch_len),
            )
        return tokenizer.spectrum_to_patches(log_amp, sin, cos, patch_len)

    # ------------------------------------------------------------ fitting

    @classmethod
    @torch.no_grad()
    def fit(
        cls,
        tokenizer: BiotokTokenizer,
        patches: torch.Tensor,
        channel_ids: torch.Tensor,
        modality: str,
        ch_names: list[str],
        max_levels: int = 16,
        codebooks: torch.Tensor | None = None,
        kmeans_iters: int = 6,
        max_vectors: int = 60_000,
        seed: int = 0,
    ) -> SpatialLatentCoder:
        """Fit on a montage's training windows, patches `(B, C, P, L)` (scaled, as the tokenizer sees
        them). `codebooks` `(S, Q, K, D)`: reuse ones fitted elsewhere (`fit_codebooks`), e.g. when the
        montage has too few windows for K codes; otherwise k-means on these windows' components."""
        latents = montage_latents(tokenizer, patches, channel_ids, modality)
        coder = cls.from_latents(latents, modality, ch_names, tokenizer.config.config_hash())
        if codebooks is None:
            codebooks = fit_codebooks(
                [coder.normalised_components(latents)],
                tokenizer.config.codebook_size,
                max_levels,
                kmeans_iters,
                max_vectors,
                seed,
            )
        coder.set_codebooks(codebooks, latents)
        return coder

    @classmethod
    def from_latents(
        cls, latents: torch.Tensor, modality: str, ch_names: list[str], tokenizer_hash: str = ""
    ) -> SpatialLatentCoder:
        """Axes fitted on latents `(S, B, C, P, D)`; no codebooks yet (`set_codebooks`)."""
        mean, axes, rms = fit_axes(latents)
        s, _, c, _, d = latents.shape
        empty_books, empty_gains = torch.zeros(s, 0, 1, d), torch.zeros(s, c, 0)
        return cls(mean, axes, rms, empty_books, empty_gains, modality, ch_names, tokenizer_hash)

    def set_codebooks(self, codebooks: torch.Tensor, latents: torch.Tensor) -> None:
        """Use codebooks `(S, Q, K, D)`; the level schedule's gains measured on latents `(S, B, C, P, D)`."""
        self.codebooks = codebooks.float().to(self.mean.device)
        self.gains = self.level_gains(latents)

    def level_gains(self, latents: torch.Tensor) -> torch.Tensor:
        """Mean reduction of the squared latent error by each level of each (scale, component) `(S, C, Q)`
        over latents `(S, B, C, P, D)` (the axes are orthonormal: component error = latent error)."""
        components = self.normalised_components(latents)
        s, _, c, _, d = components.shape
        gains = []
        for i in range(s):
            flat = components[i].transpose(0, 1).reshape(-1, d)  # (C * B * P, D), component-major
            per_vector = residual_gains(flat, self.codebooks[i])[1].view(c, -1, self.max_levels)
            gains.append(per_vector.mean(dim=1) * self.rms[i, :, None] ** 2)
        return torch.stack(gains)

    # ------------------------------------------------------------ save / load

    def save_pretrained(self, folder: str | os.PathLike) -> None:
        """`folder/config.json` + `folder/model.safetensors`, each written to a temporary name first."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        config = {
            "modality": self.modality,
            "ch_names": self.ch_names,
            "tokenizer_hash": self.tokenizer_hash,
            "max_levels": self.max_levels,
        }
        tensors = {name: buffer.detach().cpu().contiguous() for name, buffer in self.named_buffers()}
        save_file(tensors, folder / "model.safetensors.tmp")
        os.replace(folder / "model.safetensors.tmp", folder / "model.safetensors")
        (folder / "config.json.tmp").write_text(json.dumps(config, indent=1))
        os.replace(folder / "config.json.tmp", folder / "config.json")

    @classmethod
    def from_pretrained(cls, folder: str | os.PathLike) -> SpatialLatentCoder:
        folder = Path(folder)
        config = json.loads((folder / "config.json").read_text())
        tensors = load_file(folder / "model.safetensors")
        return cls(
            tensors["mean"],
            tensors["axes"],
            tensors["rms"],
            tensors["codebooks"],
            tensors["gains"],
            config["modality"],
            config["ch_names"],
            config.get("tokenizer_hash", ""),
        )


def fit_codebooks(
    components: list[torch.Tensor],
    codebook_size: int,
    max_levels: int,
    kmeans_iters: int = 6,
    max_vectors: int = 60_000,
    seed: int = 0,
) -> torch.Tensor:
    """Residual k-means codebooks `(S, Q, K, D)` on RMS-normalised components, each `(S, B, C, P, D)`
    (one per montage: `SpatialLatentCoder.normalised_components`); at most `max_vectors` per scale, drawn at random."""
    generator = torch.Generator().manual_seed(seed)
    d = components[0].shape[-1]
    books = []
    for scale in range(components[0].shape[0]):
        vectors = torch.cat([c[scale].reshape(-1, d) for c in components])
        if vectors.shape[0] < 4 * codebook_size:  # fewer: k-means memorises them, deep levels learn nothing
            raise ValueError(
                f"{vectors.shape[0]} latent vectors per scale cannot fit {codebook_size} codes: fit on more "
                "windows, or pass codebooks fitted on another montage"
            )
        keep = torch.randperm(vectors.shape[0], generator=generator)[:max_vectors].to(vectors.device)
        residual, levels = vectors[keep], []
        for _ in range(max_levels):
            book = kmeans(residual, codebook_size, kmeans_iters, generator)
            residual = residual - book[residual_codes(residual, book[None])[:, 0]]
            levels.append(book)
        books.append(torch.stack(levels))
    return torch.stack(books)
