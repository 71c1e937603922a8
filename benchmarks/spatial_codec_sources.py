"""Where the spatial PCA + DCT codec's lead comes from (issue 16): on held-out EEG windows, the same
joint DCT codec (the largest coefficients of the whole multichannel patch) on three channel bases, beside
the per-channel DCT, at equal bits per channel-second:

- identity: the channels as recorded (what adaptive bit allocation across channels alone buys);
- mean axis: an orthonormal basis whose first axis is the channels' mean (the common mode, which a common
  average reference removes), the others arbitrary;
- PCA: the principal axes fitted on the other subjects (the codec of the R-D table);

and, as a token grid codes them, the PCA axes each at the same fixed rate (the per-channel DCT run on the
components, rotated back): what the spatial transform buys without moving bits between components.

    python benchmarks/spatial_codec_sources.py --corpora corpora/real/eegbci corpora/real/eegbci_more \
        --holdout '{"eegbci": ["001"], "eegbci_more": ["013", "014"]}' --out docs/results/spatial_codec_sources.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from data_prep.corpus import load_corpora
from tokenizer.baseline import fit_spatial_pca
from tokenizer.evaluate import row_metrics
from tokenizer.rd import best_dct, best_spatial


def mean_axis_basis(n_channels: int, seed: int = 0) -> np.ndarray:
    """An orthonormal `(C, C)` basis whose first column is the uniform (common-mode) direction."""
    start = np.random.default_rng(seed).standard_normal((n_channels, n_channels))
    start[:, 0] = 1.0
    basis, _ = np.linalg.qr(start)
    return basis * np.sign(basis[0, 0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpora", nargs="+", required=True, help="prepared EEG corpora (one montage each)")
    parser.add_argument("--holdout", required=True, help="JSON {corpus: [held-out subjects]}")
    parser.add_argument("--rates", default="40,80,160,320", help="bits per channel-second")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    holdout = json.loads(args.holdout)
    rows = []
    for name, corpus in load_corpora(args.corpora).items():
        held = np.stack([r["signal"] for r in corpus if r["subject"] in holdout[name]]).astype(np.float64)
        fit = np.stack([r["signal"] for r in corpus if r["subject"] not in holdout[name]]).astype(np.float64)
        n, channels, n_times = held.shape
        patch_len, sfreq = corpus.preset.patch_len, corpus.preset.sfreq
        bases = {
            "joint_identity": (np.eye(channels), np.zeros(channels)),
            "joint_mean_axis": (mean_axis_basis(channels), np.zeros(channels)),
            "joint_pca": fit_spatial_pca(fit),
        }
        for rate in map(float, args.rates.split(",")):
            per_patch = rate * patch_len / sfreq  # bits per channel patch
            row = {"corpus": name, "subjects": holdout[name], "bits_per_channel_second": rate}
            row["per_channel_dct"] = best_dct(held.reshape(n * channels, n_times), patch_len, per_patch)[0]
            for key, (basis, mean) in bases.items():
                row[key] = best_spatial(held, basis, mean, patch_len, per_patch * channels)[0]
            basis, mean = bases["joint_pca"]
            components = np.einsum("ck,nct->nkt", basis, held - mean[None, :, None])
            _, coded = best_dct(components.reshape(n * channels, n_times), patch_len, per_patch)
            rebuilt = (
                np.einsum("ck,nkt->nct", basis, coded.reshape(n, channels, n_times)) + mean[None, :, None]
            )
            flat = held.reshape(n * channels, n_times)
            row["fixed_rate_pca"] = row_metrics(flat, rebuilt.reshape(n * channels, n_times))
            print(name, rate, {k: round(v["snr_db"], 2) for k, v in row.items() if isinstance(v, dict)})
            rows.append(row)
    Path(args.out).write_text(json.dumps(rows, indent=1, default=float))


if __name__ == "__main__":
    main()
