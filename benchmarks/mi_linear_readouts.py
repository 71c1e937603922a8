"""Which linear view of EEGBCI left/right imagery windows tells the classes apart on unseen subjects?

Every network on the tokenizer's codes sits at chance on this task while CSP + LDA reaches 0.573. Here one
regularised logistic regression (standardised features, the same leave-one-subject-out folds as `biotok
finetune classify`) reads the frozen tokenizer's codebook vectors (the quantized latent of each channel,
mean over the window's patches), code counts (what a learnt embedding sees linearly), and the signal's
power (log spectrum, log band power, 8-30 Hz log variance) and slow waveform (< 4 Hz, mean of each 1 s),
over all channels and per region; then a quadratic reader, CSP + LDA, on the codebook vectors (each
channel's patches x latent dimensions as its samples) and on the signal. No hyperparameter is picked on the
test folds: every C is reported.

    python benchmarks/mi_linear_readouts.py --root ../shared/data/real --codes_file CODES/eegbci_mi.safetensors \
        --tokenizer pretrained_models/tokenizer-small --out docs/results/mi_linear_readouts.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import scipy.signal as sps
import scipy.sparse as sparse
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from finetune.classify import csp_band, csp_compact, csp_lda, load_codes
from finetune.classify_data import ClassifyTask, group_folds, load_epochs
from finetune.metrics import balanced_accuracy
from tokenizer.model import BiotokTokenizer

REGIONS = {  # by the 10-10 name's prefix (EEGBCI's 64 channels)
    "frontal (Fp, AF, F)": lambda name: name.startswith(("FP", "AF", "F")) and not name.startswith("FC"),
    "central (FC, C, CP)": lambda name: name.startswith(("FC", "C", "CP")),
    "posterior (P, PO, O, Iz)": lambda name: name.startswith(("P", "O", "I")),
}


def codebook_vectors(tokenizer: BiotokTokenizer, codes: torch.Tensor, n_levels: int) -> np.ndarray:
    """codes `(N, C, P, S, Q)` -> quantized latents of the first `n_levels` `(N, C, P, S, code_dim)`."""
    n, c, p, s, _ = codes.shape
    latents = tokenizer.quantized_latents(codes[..., :n_levels].long())  # (S, N, C x P, code_dim)
    return latents.permute(1, 2, 0, 3).reshape(n, c, p, s, -1).numpy()


def code_counts(codes: torch.Tensor, n_levels: int, codebook_size: int) -> sparse.csr_matrix:
    """Per window, channel, scale and level: how often each code occurs over the patches (sparse)."""
    n, c, p, s, _ = codes.shape
    offsets = (np.arange(c * s * n_levels).reshape(c, 1, s, n_levels)) * codebook_size
    columns = (codes[..., :n_levels].long().numpy() + offsets[None]).reshape(n, -1)
    rows = np.repeat(np.arange(n), columns.shape[1])
    values = np.ones(rows.size, np.float32)
    return sparse.csr_matrix((values, (rows, columns.ravel())), shape=(n, c * s * n_levels * codebook_size))


def logistic(c_value: float, sparse_input: bool = False, max_iter: int = 3000):
    """A standardised L2 logistic regression (a sparse input is scaled, not centred)."""
    return make_pipeline(
        StandardScaler(with_mean=not sparse_input), LogisticRegression(C=c_value, max_iter=max_iter)
    )


def readout(features, labels: np.ndarray, folds: list, c_value: float, max_iter: int = 3000) -> dict:
    """Balanced accuracy per leave-one-subject-out fold of a standardised L2 logistic regression."""
    scores = []
    for train, test in folds:
        model = logistic(c_value, sparse.issparse(features), max_iter).fit(features[train], labels[train])
        scores.append(balanced_accuracy(labels[test], model.predict(features[test]), 2))
    return {"mean": float(np.mean(scores)), "std": float(np.std(scores)), "folds": scores}


def csp_readout(samples: np.ndarray, labels: np.ndarray, folds: list) -> dict:
    """CSP (4 components, log variance) + LDA on `(N, C, samples)`, the classical row's pipeline without its
    band-pass: for codebook vectors the samples are every patch's latent dimensions, so the spatial
    covariance CSP filters is the codes' own (a quadratic reader, which a mean of latents is not)."""
    samples, scores = csp_compact(samples), []  # the same scores, fitted on 2C samples per window
    for train, test in folds:
        probabilities = csp_lda(samples[train], labels[train], samples[test])
        scores.append(balanced_accuracy(labels[test], probabilities.argmax(axis=1), 2))
    return {"mean": float(np.mean(scores)), "std": float(np.std(scores)), "folds": scores}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--root", default="../shared/data/real")
    parser.add_argument("--task", default="eegbci_mi", help="eegbci_mi, or eegbci_mi_mu (8-30 Hz only)")
    parser.add_argument(
        "--codes_file", required=True, help="`biotok finetune classify --codes_file` of the task"
    )
    parser.add_argument("--tokenizer", default="pretrained_models/tokenizer-small")
    parser.add_argument("--c_values", default="0.0001,0.001,0.01,0.1")
    parser.add_argument("--out", default="docs/results/mi_linear_readouts.json")
    args = parser.parse_args()
    task = ClassifyTask.load(args.task)
    _, codes, _ = load_codes(args.codes_file, task)
    epochs = load_epochs(task, args.root, progress=False)
    labels, n = epochs.labels, len(epochs)
    folds = group_folds(epochs.groups, task.folds)
    tokenizer = BiotokTokenizer.from_pretrained(args.tokenizer).eval()
    names = [name.strip(".").upper() for name in epochs.ch_names]
    regions = {label: [i for i, name in enumerate(names) if test(name)] for label, test in REGIONS.items()}
    regions = {label: index for label, index in regions.items() if index}  # a task may drop a region

    per_patch = {levels: codebook_vectors(tokenizer, codes, levels) for levels in (2, 8)}
    latents = {levels: vectors.mean(axis=2) for levels, vectors in per_patch.items()}
    sfreq, patch = epochs.sfreq, int(epochs.sfreq)
    freqs, psd = sps.welch(epochs.data, fs=sfreq, nperseg=patch, axis=-1)  # (N, C, F), 1 Hz bins
    log_spectrum = np.log(psd[..., (freqs >= 4) & (freqs <= 40)] + 1e-20)
    bands = [(4, 8), (8, 13), (13, 30)]
    log_bands = np.stack(
        [np.log(psd[..., (freqs >= lo) & (freqs < hi)].mean(-1) + 1e-20) for lo, hi in bands], -1
    )
    mu_beta = csp_band(epochs.data, sfreq)
    slow = sps.sosfiltfilt(sps.butter(4, 4, "lowpass", fs=sfreq, output="sos"), epochs.data, axis=-1)
    n_seconds = epochs.data.shape[-1] // patch
    slow_means = slow[..., : n_seconds * patch].reshape(n, len(names), n_seconds, patch).mean(-1)

    views = {
        "codebook vectors, 2 levels (mean over patches), all channels": latents[2],
        "codebook vectors, 8 levels, all channels": latents[8],
        "codebook vectors, 2 levels, mean over channels too (what mean pooling sees)": latents[2].mean(
            axis=1
        ),
        **{f"codebook vectors, 2 levels, {r} only": latents[2][:, idx] for r, idx in regions.items()},
        "code counts, 2 levels (a learnt embedding's linear view), all channels": code_counts(codes, 2, 1024),
        "signal: log spectrum 4-40 Hz per channel": log_spectrum,
        "signal: log band power 4-8 / 8-13 / 13-30 Hz per channel": log_bands,
        "signal: log variance 8-30 Hz per channel": np.log(mu_beta.var(-1)),
        "signal: slow waveform (< 4 Hz, mean of each 1 s) per channel": slow_means,
        **{f"signal: slow waveform, {r} only": slow_means[:, idx] for r, idx in regions.items()},
    }
    c_values = [float(c) for c in args.c_values.split(",")]
    rows = {}
    print("| linear view | " + " | ".join(f"C={c:g}" for c in c_values) + " |")
    print("|---|" + "---:|" * len(c_values))
    for name, features in views.items():
        if not sparse.issparse(features):
            features = features.reshape(n, -1)
        rows[name] = {str(c): readout(features, labels, folds, c) for c in c_values}
        cells = " | ".join(
            f"{rows[name][str(c)]['mean']:.3f} ± {rows[name][str(c)]['std']:.3f}" for c in c_values
        )
        print(f"| {name} | {cells} |", flush=True)
    # quadratic readers: the spatial covariance of the codes (every patch's latent dimensions as samples)
    # against the signal's own (CSP + LDA without the classical row's extra 8-30 Hz band-pass)
    quadratic = {
        f"CSP + LDA on codebook vectors, {levels} levels": vectors.reshape(n, len(names), -1)
        for levels, vectors in per_patch.items()
    }
    quadratic["CSP + LDA on the signal as given"] = epochs.data
    for name, samples in quadratic.items():
        rows[name] = {"csp": csp_readout(samples, labels, folds)}
        print(f"| {name} | {rows[name]['csp']['mean']:.3f} ± {rows[name]['csp']['std']:.3f} |", flush=True)
    result = {
        "task": task.name,
        "windows": n,
        "folds": len(folds),
        "codes_file": args.codes_file,
        "rows": rows,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
