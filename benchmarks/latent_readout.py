"""Where a tokenizer loses the signal: in the encoder (its latents no longer hold the patch) or in the
decoder (the latents hold it, the decoder does not rebuild it). On one held-out subject's windows:

- the decoder on the continuous latents (the unquantized bound),
- a ridge-regression readout of the patch from the same latents, fitted on the other subjects' windows,
- a PCA of the raw patches (fitted on the other subjects) keeping as many dimensions as the latents have.

    python benchmarks/latent_readout.py --tokenizer pretrained_models/tokenizer-small \
        --corpus <corpora>/eegbci --subject 001

A readout far below the PCA means the encoder discards what a linear map of the same width keeps; a
readout above the decoder's bound means the decoder is the limit (docs/BENCHMARKS.md, "Tokenizer fidelity").
"""

from __future__ import annotations

import torch
from latent_collapse import held_out_arguments  # benchmarks/ is the script's folder

from data_prep.mixing import collate_windows
from tokenizer.model import BiotokTokenizer
from tokenizer.train import batch_patches


def snr_db(estimate: torch.Tensor, target: torch.Tensor) -> float:
    return float(10 * torch.log10((target**2).sum() / ((estimate - target) ** 2).sum()))


@torch.no_grad()
def latents_and_patches(model: BiotokTokenizer, view, key: str, patch_len: int, n_windows: int):
    """Latents `(N, S*code_dim)`, patches `(N, L)` and the decoder's unquantized rebuild `(N, L)`."""
    step = max(1, len(view) // n_windows)
    index = list(range(0, len(view), step))[:n_windows]
    latents, patches, rebuilt = [], [], []
    for start in range(0, len(index), 8):
        batch = collate_windows([view[i] for i in index[start : start + 8]])
        p = batch_patches(batch, patch_len)
        ids = model.channel_ids(batch["ch_names"], key)
        z, _ = model._latents(p, ids, key)  # (S, B, C*P, code_dim)
        s, b, t, d = z.shape
        latents.append(z.permute(1, 2, 0, 3).reshape(b * t, s * d))
        patches.append(p.reshape(b * t, -1))
        rebuilt.append(model.autoencode_patches(p, ids, key).reshape(b * t, -1))
    return (torch.cat(x).double() for x in (latents, patches, rebuilt))


def main() -> None:
    args, model, corpus = held_out_arguments(
        __doc__.splitlines()[0], 64, ridge=(float, 0.1, "ridge penalty of the readout")
    )
    train, held = corpus.split_subjects({args.subject})
    key, patch_len = corpus.preset.name, corpus.preset.patch_len
    fit_latents, fit_patches, _ = latents_and_patches(model, train, key, patch_len, args.windows)
    latents, patches, rebuilt = latents_and_patches(model, held, key, patch_len, args.windows // 2)

    def with_bias(x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x, torch.ones(len(x), 1, dtype=x.dtype)], 1)

    x = with_bias(fit_latents)
    weights = torch.linalg.solve(
        x.T @ x + args.ridge * torch.eye(x.shape[1], dtype=x.dtype), x.T @ fit_patches
    )
    width = latents.shape[1]
    basis = torch.linalg.svd(fit_patches, full_matrices=False).Vh[:width]
    print(f"{len(patches)} held-out patches, {width} latent dimensions")
    print(f"decoder on the unquantized latents: {snr_db(rebuilt, patches):.2f} dB")
    print(f"linear readout of the same latents: {snr_db(with_bias(latents) @ weights, patches):.2f} dB")
    print(f"PCA of the patches, {width} dimensions: {snr_db(patches @ basis.T @ basis, patches):.2f} dB")


if __name__ == "__main__":
    main()
