"""Can a token-input foundation model read a position's codes back from its own input embedding?

Copying the nearest electrode's codes (the baseline the masked-token model loses to, issue 17) needs the
hidden state of a masked position to score the neighbour's code above the other codes of each (scale,
level) head. The most favourable case: the hidden state is the neighbour's input embedding itself (the sum
of its scales x levels code embeddings). This measures how often the model's output scoring (tied: the code
embeddings; untied: the head) then ranks the true code first, on random codes, for each model given and
for the same architecture freshly initialised.

    python benchmarks/foundation_copy_readout.py --models pretrained_models/foundation-small [...] --out F
"""

from __future__ import annotations

import argparse

import torch

from data_prep.atomic import write_json
from foundation.model import BiotokFoundation


def readout_accuracy(model: BiotokFoundation, n: int = 4096, seed: int = 0, bias: bool = True) -> float:
    """Fraction of (position, head) whose true code scores first when the hidden state is the input sum
    (`bias=False`: the tied code scores alone, without the learnt per-code bias)."""
    offsets = model.code_offsets
    scales, levels = offsets.shape
    size = model.config.codebook_size
    codes = torch.randint(0, size, (n, scales, levels), generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        logits = model.code_logits(model.code_embed((codes + offsets).reshape(n, -1)))
        if not bias and model.config.tie_heads:
            logits = logits - model.head_bias.view(scales, levels, size)
    return float((logits.argmax(-1) == codes).float().mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", required=True, help="foundation model folders")
    parser.add_argument("--out", default="", help="JSON file for the results")
    args = parser.parse_args()
    results = {}
    for folder in args.models:
        model = BiotokFoundation.from_pretrained(folder).eval()
        torch.manual_seed(0)
        fresh = BiotokFoundation(model.config).eval()
        results[folder] = {
            "d_model": model.config.d_model,
            "tie_heads": model.config.tie_heads,
            "trained": readout_accuracy(model),
            "trained_without_bias": readout_accuracy(model, bias=False),
            "initialised": readout_accuracy(fresh),
        }
        print(folder, results[folder], flush=True)
    if args.out:
        write_json(args.out, results)


if __name__ == "__main__":
    main()
