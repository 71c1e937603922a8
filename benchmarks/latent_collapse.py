"""How close a tokenizer's latents sit to its codebooks: the residual left after each RVQ level,
relative to the latents' variance, per scale, on one held-out subject's windows.

    python benchmarks/latent_collapse.py --tokenizer pretrained_models/tokenizer-small \
        --corpus <corpora>/eegbci --subject 001

A first level that leaves ~1% where a 10-bit quantizer of spread-out 16-d latents leaves ~40% means the
encoder has collapsed its latents onto the first codebook (docs/BENCHMARKS.md, "Tokenizer fidelity").
"""

from __future__ import annotations

import argparse

import torch

from data_prep.corpus import load_corpora
from data_prep.mixing import collate_windows
from tokenizer.model import BiotokTokenizer
from tokenizer.rvq import nearest_codes
from tokenizer.train import batch_patches


def held_out_arguments(description: str, windows: int, **extra: tuple[type, object, str]):
    """The tokenizer diagnostics' command line (tokenizer, corpus, held-out subject, windows and any
    `name=(type, default, help)` extras): the parsed arguments, the model and the corpus."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--tokenizer", required=True, help="tokenizer folder")
    parser.add_argument("--corpus", required=True, help="prepared corpus folder")
    parser.add_argument("--subject", required=True, help="the held-out subject whose windows to encode")
    parser.add_argument("--windows", type=int, default=windows, help="windows spread over the subject's")
    for name, (kind, default, text) in extra.items():
        parser.add_argument(f"--{name}", type=kind, default=default, help=text)
    args = parser.parse_args()
    model = BiotokTokenizer.from_pretrained(args.tokenizer).eval()
    return args, model, next(iter(load_corpora([args.corpus]).values()))


@torch.no_grad()
def main() -> None:
    args, model, corpus = held_out_arguments(__doc__.splitlines()[0], 16)
    _, held = corpus.split_subjects({args.subject})
    items = [held[i] for i in range(0, len(held), max(1, len(held) // args.windows))][: args.windows]
    batch = collate_windows(items)
    key = corpus.preset.name
    latents, _ = model._latents(
        batch_patches(batch, corpus.preset.patch_len), model.channel_ids(batch["ch_names"], key), key
    )
    for scale, quantizer in enumerate(model.quantizers):
        x = latents[scale].reshape(-1, latents.shape[-1])
        variance = ((x - x.mean(0)) ** 2).sum(1).mean()
        residual, left = x.clone(), []
        for codebook in quantizer.codebooks:
            residual = residual - codebook[nearest_codes(residual, codebook)]
            left.append(float((residual**2).sum(1).mean() / variance))
        print(
            f"scale {scale}: residual / variance after levels 1..{len(left)}: "
            + " ".join(f"{v:.4f}" for v in left)
        )


if __name__ == "__main__":
    main()
