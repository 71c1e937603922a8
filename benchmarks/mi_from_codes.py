"""Do the tokens carry motor imagery? CSP + LDA on the tokenizer's reconstruction, against the signal itself.

Issue 17's foundation rows sit at chance on EEGBCI left/right imagery while CSP + LDA on the signal reaches
0.573. If CSP + LDA on the signal decoded from the codes (1, 2, 4, 8 RVQ levels, and the unquantised
latents) stays near 0.573, the codes hold the lateralised mu/beta power and the foundation model fails to
read it; if it falls to chance, the tokenizer loses it before any pretraining. `--matched_noise` adds the
signal plus white noise at each level's SNR: whether the quantiser's error hides what CSP reads more (or
less) than structureless noise of the same size would; every row also gives, per fold, the SNR along the
spatial filters CSP fits on the training subjects (whether the error lies where CSP reads) and the
classes' separation there (what the error leaves of the difference CSP reads). Same folds as
`biotok finetune classify` (leave one subject out over the 11 subjects), same classical pipeline.

    python benchmarks/mi_from_codes.py --root ../shared/data/real --tokenizer pretrained_models/tokenizer-small \
        --out docs/results/mi_from_codes.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from data_prep.presets import patchify
from finetune.classify import csp_band, fit_csp
from finetune.classify import csp_lda as classical_csp_lda
from finetune.classify_data import ClassifyTask, Epochs, group_folds, load_epochs
from finetune.metrics import balanced_accuracy, roc_auc
from tokenizer.metrics import reconstruction_metrics
from tokenizer.model import BiotokTokenizer


@torch.no_grad()
def reconstructions(
    model: BiotokTokenizer, epochs: Epochs, levels: list[int], batch_size: int
) -> dict[str, np.ndarray]:
    """{"n levels": (N, C, T), "continuous": (N, C, T)}: the epochs decoded from their own codes."""
    key = epochs.preset.name
    patches = torch.from_numpy(patchify(epochs.data, epochs.preset.patch_len))  # (N, C, P, L)
    out: dict[str, list[np.ndarray]] = {**{f"{n} levels": [] for n in levels}, "continuous": []}
    for start in tqdm(range(0, len(patches), batch_size), desc="decode"):
        batch = patches[start : start + batch_size]
        ids = model.channel_ids([epochs.ch_names] * len(batch), key)
        codes = model.encode_patches(batch, ids, key)
        for n in levels:
            out[f"{n} levels"].append(model.decode_patches(codes[..., :n], ids, key).flatten(2).numpy())
        out["continuous"].append(model.autoencode_patches(batch, ids, key).flatten(2).numpy())
    return {name: np.concatenate(parts) for name, parts in out.items()}


def csp_lda(epochs: Epochs, data: np.ndarray, folds: list, reg: str | float | None = None) -> dict:
    """Balanced accuracy of CSP + LDA per fold on `data` in place of the epochs' signal (the classical
    row's pipeline; `reg`: CSP's covariance regularisation instead of none)."""
    band = csp_band(data, epochs.sfreq)
    scores, aurocs = [], []
    for train, test in folds:
        probabilities = classical_csp_lda(band[train], epochs.labels[train], band[test], reg=reg)
        scores.append(balanced_accuracy(epochs.labels[test], probabilities.argmax(1), len(epochs.classes)))
        aurocs.append(roc_auc(epochs.labels[test], probabilities[:, 1]))  # threshold-free: the ranking alone
    return {
        "mean": float(np.mean(scores)),
        "std": float(np.std(scores)),
        "folds": scores,
        "auroc_folds": aurocs,
    }


def class_separation(filters: np.ndarray, windows: np.ndarray, labels: np.ndarray) -> float:
    """The two classes' separation in the log variances of `windows` `(n, C, T)` along `filters` `(4, C)`:
    Fisher's ratio, summed over the filters."""
    log_var = np.log((np.einsum("fc,nct->nft", filters, windows) ** 2).mean(-1))  # (n, 4)
    a, b = (log_var[labels == k] for k in (0, 1))
    return float(((a.mean(0) - b.mean(0)) ** 2 / (a.var(0) + b.var(0))).sum())


def csp_directions(
    signal: np.ndarray, filters: list[np.ndarray], estimate: np.ndarray, labels: np.ndarray, folds: list
) -> dict[str, list[float]]:
    """Per fold, along the 4 spatial filters CSP fitted on the training subjects' `signal` (band-passed as
    the classical row does; `filters`, one per fold), on the test subject's windows: the SNR (dB) of
    `estimate` (band-passed alike) against the signal (how much of the error lies in the directions CSP
    reads) and the classes' separation in `estimate` there (what the error leaves of the difference CSP +
    LDA reads); and the separation along the filters CSP fits on `estimate` itself, as the classical
    pipeline on it does."""
    snrs, separations, own_separations = [], [], []
    for fold_filters, (train, test) in zip(filters, folds):
        projected = np.einsum("fc,nct->nft", fold_filters, signal[test])
        error = np.einsum("fc,nct->nft", fold_filters, estimate[test] - signal[test])
        snrs.append(float(10 * np.log10((projected**2).sum() / (error**2).sum())))
        separations.append(class_separation(fold_filters, estimate[test], labels[test]))
        own = fit_csp(estimate[train], labels[train]).filters_[:4]
        own_separations.append(class_separation(own, estimate[test], labels[test]))
    return {
        "csp_direction_snr_db": snrs,
        "csp_direction_separation": separations,
        "own_csp_direction_separation": own_separations,
    }


def with_white_noise(data: np.ndarray, snr_db: float, seed: int) -> np.ndarray:
    """`data` `(N, C, T)` plus Gaussian noise independent across windows, channels and samples, each
    window-channel's noise power its own power / 10^(snr_db / 10): a codec's error with no structure, to
    tell what the quantiser's error does to CSP from what its size alone does."""
    rng = np.random.default_rng(seed)
    power = (data.astype(np.float64) ** 2).mean(axis=-1, keepdims=True)
    noise = rng.standard_normal(data.shape) * np.sqrt(power / 10 ** (snr_db / 10))
    return (data + noise).astype(data.dtype)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--root", default="../shared/data/real")
    parser.add_argument("--tokenizer", default="pretrained_models/tokenizer-small")
    parser.add_argument("--task", default="eegbci_mi")
    parser.add_argument("--levels", default="1,2,4,8")
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument(
        "--matched_noise",
        action="store_true",
        help="also CSP + LDA on the signal plus white noise at each level's SNR (independent across channels)",
    )
    parser.add_argument(
        "--csp_reg",
        default="",
        help="only CSP + LDA with this covariance regularisation (a shrinkage in [0, 1], or ledoit_wolf, oas) "
        "on each input",
    )
    parser.add_argument("--out", default="docs/results/mi_from_codes.json")
    args = parser.parse_args()
    torch.manual_seed(0)
    task = ClassifyTask.load(args.task)
    epochs = load_epochs(task, args.root, progress=True)
    folds = group_folds(epochs.groups, task.folds)
    model = BiotokTokenizer.from_pretrained(args.tokenizer).eval()
    started = time.time()
    decoded = reconstructions(model, epochs, [int(n) for n in args.levels.split(",")], args.batch_size)
    if args.csp_reg:  # does a regularised CSP fit resist what the quantiser's error does to the filters?
        reg = float(args.csp_reg) if args.csp_reg.replace(".", "", 1).isdigit() else args.csp_reg
        rows = {
            name: {"csp_reg": reg, **csp_lda(epochs, data, folds, reg)}
            for name, data in {"signal": epochs.data, **decoded}.items()
        }
        Path(args.out).write_text(json.dumps({"task": task.name, "rows": rows}, indent=1))
        for name, row in rows.items():
            print(f"| {name}, CSP reg {args.csp_reg} | {row['mean']:.3f} | {np.round(row['folds'], 2)} |")
        return
    # the signal band-passed as the classical row does, and CSP's filters on each fold's training subjects:
    # once, for every row's measures along them
    signal = csp_band(epochs.data, epochs.sfreq)
    filters = [fit_csp(signal[train], epochs.labels[train]).filters_[:4] for train, _ in folds]

    def measured(data: np.ndarray, snr: float) -> dict:
        directions = csp_directions(signal, filters, csp_band(data, epochs.sfreq), epochs.labels, folds)
        return {"snr_db": snr, **directions, **csp_lda(epochs, data, folds)}

    separations = [
        class_separation(fold_filters, signal[test], epochs.labels[test])
        for fold_filters, (_, test) in zip(filters, folds)
    ]
    rows = {
        "signal": {
            "snr_db": None,
            "csp_direction_separation": separations,
            **csp_lda(epochs, epochs.data, folds),
        }
    }
    for name, data in decoded.items():
        rows[name] = measured(
            data, reconstruction_metrics(torch.from_numpy(epochs.data), torch.from_numpy(data))["snr_db"]
        )
        if args.matched_noise and name != "continuous":
            noisy = with_white_noise(epochs.data, rows[name]["snr_db"], seed=0)
            noisy_snr = reconstruction_metrics(torch.from_numpy(epochs.data), torch.from_numpy(noisy))[
                "snr_db"
            ]
            rows[f"signal + white noise at the SNR of {name}"] = measured(noisy, noisy_snr)
    result = {
        "task": task.name,
        "tokenizer": args.tokenizer,
        "windows": len(epochs),
        "subjects": sorted(set(epochs.subjects.tolist())),
        "folds": len(folds),
        "seconds": time.time() - started,
        "rows": rows,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1))
    print("| input to CSP + LDA | SNR dB | balanced accuracy (mean ± std over folds) |\n|---|---:|---:|")
    for name, row in rows.items():
        snr = "—" if row["snr_db"] is None else f"{row['snr_db']:.2f}"
        print(f"| {name} | {snr} | {row['mean']:.3f} ± {row['std']:.3f} |")


if __name__ == "__main__":
    main()
