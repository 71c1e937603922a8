"""Does coding the common mode once help the tokenizer (issue 16)? Held-out EEG windows coded two ways by
the same tokenizer at 1 / 2 / 4 / 8 levels: directly, and as a common average reference (each channel
minus the channels' mean) plus the mean as one extra channel (named by an unused 10-05 site), rebuilt as
decoded channel + decoded mean (C + 1 tokens per patch for C channels: (C + 1) / C the bits).

    python benchmarks/tokenizer_common_mode.py --corpora corpora/real/eegbci corpora/real/eegbci_more \
        --holdout '{"eegbci": ["001"], "eegbci_more": ["013", "014"]}' --out docs/results/tokenizer_common_mode.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from data_prep.corpus import load_corpora
from tokenizer.metrics import reconstruction_metrics
from tokenizer.model import BiotokTokenizer


@torch.no_grad()
def rebuild(model: BiotokTokenizer, patches: torch.Tensor, ch_names: list[str], levels: int) -> torch.Tensor:
    """Patches `(n, C, P, L)` encoded with `levels` RVQ levels and decoded, 16 windows at a time."""
    out = []
    for start in range(0, len(patches), 16):
        batch = patches[start : start + 16]
        ids = model.channel_ids([ch_names] * len(batch), "eeg")
        out.append(model.decode_patches(model.encode_patches(batch, ids, "eeg", n_levels=levels), ids, "eeg"))
    return torch.cat(out)


def snr_db(target: torch.Tensor, estimate: torch.Tensor) -> float:
    """Pooled SNR over channel-windows of patches `(n, C, P, L)` (the tokenizer card's metric)."""
    n, c = target.shape[:2]
    return reconstruction_metrics(target.reshape(n, c, -1), estimate.reshape(n, c, -1))["snr_db"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokenizer", default="pretrained_models/tokenizer-small")
    parser.add_argument("--corpora", nargs="+", required=True, help="prepared EEG corpora")
    parser.add_argument("--holdout", required=True, help="JSON {corpus: [held-out subjects]}")
    parser.add_argument("--mean_site", default="AFF1h", help="10-05 site that labels the mean channel")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    model = BiotokTokenizer.from_pretrained(args.tokenizer).eval()
    holdout, rows = json.loads(args.holdout), []
    for name, corpus in load_corpora(args.corpora).items():
        held = [r for r in corpus if r["subject"] in holdout[name]]
        ch_names = list(held[0]["ch_names"])
        if args.mean_site in ch_names:
            raise ValueError(f"{args.mean_site} is one of {name}'s channels: pick another --mean_site")
        signal = torch.from_numpy(np.stack([r["signal"] for r in held])).float()
        n, c, t = signal.shape
        patch_len = corpus.preset.patch_len
        patches = signal.view(n, c, t // patch_len, patch_len)
        mean = patches.mean(dim=1, keepdim=True)
        referenced = torch.cat([patches - mean, mean], dim=1)
        for levels in (1, 2, 4, 8):
            bits = model.config.bits_per_channel_second(corpus.preset.name, levels)
            direct = rebuild(model, patches, ch_names, levels)
            coded = rebuild(model, referenced, ch_names + [args.mean_site], levels)
            row = {
                "corpus": name,
                "subjects": holdout[name],
                "levels": levels,
                "direct": {"snr_db": snr_db(patches, direct), "bits_per_channel_second": bits},
                "common_mode_once": {
                    "snr_db": snr_db(patches, coded[:, :c] + coded[:, c:]),
                    "bits_per_channel_second": bits * (c + 1) / c,
                },
            }
            print(json.dumps(row), flush=True)
            rows.append(row)
    Path(args.out).write_text(json.dumps({"tokenizer": args.tokenizer, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
