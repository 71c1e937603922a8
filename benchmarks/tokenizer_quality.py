"""Rate-distortion, codebook use and a reconstruction figure of a trained tokenizer on held-out subjects.

    python benchmarks/tokenizer_quality.py --run runs/tokenizer --corpora corpora/real/* --out bench_out

`--run` is a `biotok tokenizer train` output folder: the model is `<run>/final`, and the held-out
subjects are the ones that run held out (same corpora, same `holdout_fraction`, same hash split).
For every held-out corpus and every number of RVQ levels it reports SNR, NMSE and Pearson correlation
of the tokenizer, and of the DCT baseline at the same bits per channel-second (the best of its
value-bit settings on the same data, which favours the baseline). Metrics are computed on the
preprocessed, scaled windows, the signal the tokenizer sees.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from data_prep.corpus import load_corpora
from tokenizer.evaluate import reconstruct, row_metrics
from tokenizer.metrics import codebook_stats
from tokenizer.model import BiotokTokenizer
from tokenizer.rd import best_dct


def plot_usage(per_corpus: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, len(per_corpus), figsize=(3.2 * len(per_corpus), 5.5), squeeze=False)
    for j, (name, stats) in enumerate(per_corpus.items()):
        used, perplexity = np.array(stats["used"]), np.array(stats["perplexity"])
        levels = np.arange(1, used.shape[1] + 1)
        for s in range(used.shape[0]):
            axes[0, j].plot(levels, used[s], marker="o", label=f"scale {s}")
            axes[1, j].plot(levels, perplexity[s], marker="o", label=f"scale {s}")
        axes[0, j].set_title(name)
        axes[0, j].set_ylim(0, 1.05)
        axes[1, j].set_xlabel("RVQ level")
        axes[1, j].set_yscale("log")
    axes[0, 0].set_ylabel("fraction of codes used")
    axes[1, 0].set_ylabel("perplexity")
    axes[0, 0].legend(fontsize=7)
    fig.suptitle("Codebook use on held-out subjects")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_reconstruction(examples: dict, path: Path) -> None:
    """examples: name -> dict(sfreq, target, tokenizer, dct, label_tok, label_dct, channel) in µV."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from scipy.signal import welch

    fig, axes = plt.subplots(len(examples), 2, figsize=(11, 3.2 * len(examples)), squeeze=False)
    for i, (name, ex) in enumerate(examples.items()):
        sfreq = ex["sfreq"]
        row = ex["row"]
        t = np.arange(ex["target"].shape[1]) / sfreq
        ax = axes[i, 0]
        ax.plot(t, ex["target"][row], color="k", lw=1.0, label="real")
        ax.plot(t, ex["tokenizer"][row], color="tab:blue", lw=0.9, label=ex["label_tok"])
        ax.plot(t, ex["dct"][row], color="tab:orange", lw=0.8, alpha=0.8, label=ex["label_dct"])
        ax.set_title(f"{name}: channel {ex['channel']}, one held-out window")
        ax.set_xlabel("time (s)")
        ax.set_ylabel(ex["unit"])
        ax.legend(fontsize=7, loc="upper right")
        ax = axes[i, 1]
        for key, color in (("target", "k"), ("tokenizer", "tab:blue"), ("dct", "tab:orange")):
            freqs, psd = welch(ex[key], fs=sfreq, nperseg=min(256, ex[key].shape[1]), axis=-1)
            ax.semilogy(freqs, psd.mean(axis=0), color=color, lw=1.0)
        ax.set_title(f"{name}: mean power spectrum over held-out channels")
        ax.set_xlabel("frequency (Hz)")
        ax.set_ylabel(f"PSD ({ex['unit']}²/Hz)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--run", required=True, help="biotok tokenizer train output folder")
    parser.add_argument("--corpora", nargs="+", help="corpus folders (default: those of the run)")
    parser.add_argument("--levels", default="1,2,4,8")
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--out", default="bench_out")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    run = Path(args.run)
    train_args = json.loads((run / "train_args.json").read_text())
    device = torch.device(args.device)
    model = BiotokTokenizer.from_pretrained(str(run / "final")).to(device).eval()
    cfg = model.config
    levels = [n for n in map(int, args.levels.split(",")) if n <= cfg.n_levels]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    corpora = load_corpora(args.corpora or train_args["corpora"])
    table, usage, examples = [], {}, {}
    started = time.perf_counter()
    for name, corpus in corpora.items():
        _, held = corpus.split_by_subject(train_args["holdout_fraction"])
        if len(held) == 0:
            print(f"{name}: no held-out subject, skipped")
            continue
        preset = corpus.preset
        result = reconstruct(model, held, levels, args.batch_size, device, bf16=device.type == "cuda")
        stats = codebook_stats(result["counts"])
        usage[name] = {k: v.tolist() for k, v in stats.items()}
        subjects = sorted(set(held.column("subject")))
        for n in levels:
            bits = cfg.bits_per_channel_second(preset.name, n)
            budget = bits * preset.patch_len / preset.sfreq  # bits per patch
            tok = row_metrics(result["target"], result["estimate"][n])
            dct, dct_estimate = best_dct(result["target"], preset.patch_len, budget)
            table.append(
                {
                    "corpus": name,
                    "modality": preset.modality,
                    "held_out_subjects": subjects,
                    "rows": int(result["target"].shape[0]),
                    "levels": n,
                    "bits_per_channel_second": bits,
                    "tokenizer": tok,
                    "dct": dct,
                }
            )
            print(
                f"{name} L={n} {bits:.0f} b/ch/s: tokenizer SNR {tok['snr_db']:.2f} dB PCC {tok['pcc']:.3f}"
                f" | DCT SNR {dct['snr_db']:.2f} dB PCC {dct['pcc']:.3f}"
                f" (k={dct['n_kept']}, {dct['value_bits']} b)"
            )
            if (
                n == max(levels)
                and preset.modality in ("eeg", "emg")
                and preset.modality not in {e["modality"] for e in examples.values()}
            ):
                # the channel-window the tokenizer reconstructs at its median correlation
                tgt, est = result["target"], result["estimate"][n]
                pcc = [np.corrcoef(a, b)[0, 1] for a, b in zip(tgt, est)]
                row = int(np.argsort(pcc)[len(pcc) // 2])
                spread, center = result["spread"][:, None], result["center"][:, None]
                examples[name] = {
                    "modality": preset.modality,
                    "sfreq": preset.sfreq,
                    "row": row,
                    "channel": result["ch_names"][row],
                    "unit": "µV" if corpus.column("unit")[0] in ("uV", "µV") else corpus.column("unit")[0],
                    "target": tgt * spread + center,
                    "tokenizer": est * spread + center,
                    "dct": dct_estimate * spread + center,
                    "label_tok": f"biotok, {n} levels ({bits:.0f} b/ch/s)",
                    "label_dct": f"DCT, {dct['n_kept']} coeffs x {dct['value_bits']} b ({bits:.0f} b/ch/s)",
                }
    summary = {
        "model": str(run / "final"),
        "config": {
            k: getattr(cfg, k) for k in ("d_model", "n_layers", "code_dim", "codebook_size", "n_levels")
        },
        "bits_per_token": cfg.bits_per_token(),
        "table": table,
        "codebook_use": usage,
        "seconds": time.perf_counter() - started,
        "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
    }
    (out / "tokenizer_quality.json").write_text(json.dumps(summary, indent=1))
    plot_usage(usage, out / "codebook_usage.png")
    plot_reconstruction(examples, out / "reconstruction.png")
    print(f"wrote {out}/tokenizer_quality.json, codebook_usage.png, reconstruction.png")


if __name__ == "__main__":
    main()
