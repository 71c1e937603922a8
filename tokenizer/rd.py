"""`biotok tokenizer rd`: the rate-distortion table of a tokenizer on any recordings, against two
classical codecs at the same bits per channel-second, and its figure.

    biotok tokenizer rd --tokenizer pretrained_models/tokenizer-small --corpora corpora/real/eegbci_more \\
        --subjects '{"eegbci_more": ["013", "014"]}' --out rd_out
    biotok tokenizer rd --tokenizer pretrained_models/tokenizer-small --recordings my_edfs/ --preset eeg

Rows: for 1, 2, 4, 8 (`--levels`) RVQ levels, the tokenizer's SNR, NMSE and Pearson correlation on the
preprocessed, scaled windows (the signal the tokenizer sees), beside
- the per-channel DCT codec (`tokenizer.baseline.dct_codec`), best value-bit setting on the same data;
- the spatial PCA + DCT codec (`spatial_dct_codec`): the channels rotated onto principal axes fitted on
  the windows of the other subjects of the corpus (`--subjects` given), or on the evaluated windows
  themselves (marked "oracle": it favours the baseline);
and the continuous bound: the decoder run on the encoder's unquantized latents.
"""

from __future__ import annotations

import json
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from data_prep.config import run_command
from data_prep.corpus import Corpus, load_corpora
from data_prep.errors import ConfigError

from .baseline import (
    dct_bits,
    dct_codec,
    dct_settings,
    fit_spatial_pca,
    spatial_dct_codec,
    spatial_dct_settings,
)
from .evaluate import reconstruct, row_metrics
from .model import BiotokTokenizer
from .spatial import SpatialLatentCoder, fit_codebooks, montage_latents


def best_dct(target: np.ndarray, patch_len: int, budget: float) -> tuple[dict, np.ndarray]:
    """The per-channel DCT codec's best value-bit setting for rows `(n, T)` at `budget` bits per patch:
    (metrics with the setting, its reconstruction). Below one coefficient nothing is coded: zeros."""
    estimate = np.zeros_like(target)
    best = {**row_metrics(target, estimate), "setting": "nothing fits", "n_kept": 0, "value_bits": 0}
    best["bits_per_patch"] = 0
    patches = target.reshape(target.shape[0], -1, patch_len)
    for n_kept, value_bits in dct_settings(patch_len, budget):
        candidate = dct_codec(patches, n_kept, value_bits).reshape(target.shape)
        metrics = row_metrics(target, candidate)
        if metrics["snr_db"] > best["snr_db"]:
            best = {
                **metrics,
                "setting": f"{n_kept} x {value_bits} b",
                "n_kept": n_kept,
                "value_bits": value_bits,
            }
            best["bits_per_patch"] = dct_bits(patch_len, n_kept, value_bits)
            estimate = candidate
    return best, estimate


def best_spatial(
    windows: np.ndarray, basis: np.ndarray, mean: np.ndarray, patch_len: int, budget: float
) -> tuple[dict, np.ndarray]:
    """The spatial PCA + DCT codec's best setting on windows `(n, C, T)` at `budget` bits per
    multichannel patch; metrics over channel rows."""
    n, c, t = windows.shape
    rows = windows.reshape(n * c, t)
    best = {**row_metrics(rows, np.full_like(rows, 0.0)), "setting": "nothing fits"}
    best_estimate = np.zeros_like(windows)
    for n_kept, value_bits in spatial_dct_settings(c, patch_len, budget):
        estimate = spatial_dct_codec(windows, basis, mean, patch_len, n_kept, value_bits)
        metrics = row_metrics(rows, estimate.reshape(n * c, t))
        if metrics["snr_db"] > best["snr_db"]:
            best, best_estimate = {**metrics, "setting": f"{n_kept} x {value_bits} b"}, estimate
    return best, best_estimate


def stack_by_montage(corpus: Corpus) -> dict[tuple[str, ...], np.ndarray]:
    """Windows `(n, C, T)` grouped by their channel names (the spatial codec needs one montage)."""
    groups: dict[tuple[str, ...], list[np.ndarray]] = {}
    for row in corpus:
        groups.setdefault(tuple(row["ch_names"]), []).append(row["signal"])
    return {names: np.stack(w) for names, w in groups.items()}


def _entropy_bits(symbols: np.ndarray) -> float:
    counts = np.bincount(symbols.reshape(-1))
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log2(p)).sum())


def depth_entropy_bits(codes: np.ndarray) -> float:
    """Side information of variable-depth codes `(rows, P, S, Q)` (-1 = absent level), in bits per
    token: the empirical entropy of a token's depth at the first scale, and at each later scale given
    the same token's depth at the scale before (a context-adaptive coder's rate; the decoder reads the
    scales in order). What telling the decoder the depths costs."""
    depths = (codes >= 0).sum(axis=-1)  # (rows, P, S)
    context = codes.shape[-1] + 1
    total = _entropy_bits(depths[..., 0])
    for scale in range(1, depths.shape[-1]):
        pair = depths[..., scale] * context + depths[..., scale - 1]
        total += _entropy_bits(pair) - _entropy_bits(depths[..., scale - 1])
    return total / depths.shape[-1]


def variable_depth_rows(
    model: BiotokTokenizer, held: Corpus, levels: list[int], batch_size: int, device: torch.device
) -> dict[int, dict]:
    """For each n in `levels`: the tokenizer's metrics with `encode_patches(variable_depth=True)` at n
    levels per token on average, and its rate with the depths' side information counted."""
    preset, cfg = held.preset, model.config
    out = {}
    for n in levels:
        result = reconstruct(model, held, [n], batch_size, device, keep_codes=True, variable_depth=True)
        codes = np.concatenate(result["codes"])
        side = depth_entropy_bits(codes) * cfg.n_scales * preset.sfreq / preset.patch_len
        out[n] = {
            **row_metrics(result["target"], result["estimate"][n]),
            "bits_per_channel_second": cfg.bits_per_channel_second(preset.name, n) + side,
            "side_bits_per_channel_second": side,
        }
    return out


def _montage_patches(
    model: BiotokTokenizer, windows: np.ndarray, names: tuple[str, ...], preset, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    n, c, t = windows.shape
    patches = torch.from_numpy(windows).float().view(n, c, t // preset.patch_len, preset.patch_len)
    return patches.to(device), model.channel_ids([list(names)] * n, preset.name).to(device)


def montage_coders(
    model: BiotokTokenizer, held: Corpus, fit: Corpus | None, device: torch.device
) -> tuple[dict, list[torch.Tensor], bool]:
    """Spatial latent coders (`tokenizer.spatial`) without codebooks, one per held-out montage, their axes
    fitted on `fit`'s windows of that montage, or on the held-out windows themselves where `fit` has none
    ("oracle", as the spatial codec's PCA then is): {names: (coder, latents its schedule is measured on)};
    the normalised components of `fit`'s windows of every montage (each on its own axes), for codebooks
    (of the held-out windows only when `fit` is empty); and whether any montage is "oracle"."""
    preset = held.preset
    fitted = stack_by_montage(fit) if fit is not None and len(fit) else {}
    held_groups = stack_by_montage(held)
    sources = {**{k: w for k, w in held_groups.items() if k not in fitted}, **fitted}
    coders, components = {}, []
    for names, windows in sources.items():
        patches, ids = _montage_patches(model, windows, names, preset, device)
        latents = montage_latents(model, patches, ids, preset.name)
        coder = SpatialLatentCoder.from_latents(latents, preset.name, list(names), model.config.config_hash())
        if names in held_groups:
            coders[names] = (coder, latents)
        if names in fitted or not fitted:
            components.append(coder.normalised_components(latents))
    return coders, components, any(names not in fitted for names in held_groups)


def spatial_codebooks(model: BiotokTokenizer, fits: dict[str, tuple]) -> dict[str, torch.Tensor]:
    """Spatial latent coding's codebooks `(S, Q, K, D)` per corpus, from {name: `montage_coders` result}:
    fitted on the corpus's own fitting windows where they hold at least 4 x K latent vectors per scale;
    otherwise (one 15-lead ECG record beside two-lead ones) one stack fitted over every corpus's fitting
    windows, since K codes fitted on fewer vectors memorise them and their deep levels learn nothing."""
    size = model.config.codebook_size
    found = {name: fitted[1] for name, fitted in fits.items()}

    def vectors(components: list[torch.Tensor]) -> int:
        return sum(c[0].numel() // c.shape[-1] for c in components)

    books = {name: fit_codebooks(c, size, 16) for name, c in found.items() if vectors(c) >= 4 * size}
    if len(books) < len(found):
        pooled = fit_codebooks([c for parts in found.values() for c in parts], size, 16)
        for name in found:
            if name not in books:
                print(
                    f"{name}: {vectors(found[name])} latent vectors per scale, spatial coding uses the codebooks of every corpus"
                )
                books[name] = pooled
    return books


def spatial_coding_rows(
    model: BiotokTokenizer,
    held: Corpus,
    levels: list[int],
    device: torch.device,
    fitted: tuple,
    codebooks: torch.Tensor | None = None,
) -> dict[int, dict]:
    """For each n in `levels`: the tokenizer with spatial latent coding at n codes per channel and scale
    (the tokenizer's rate at n levels), with the coders of `montage_coders` (`fitted`, which says what is
    fitted where). `codebooks` `(S, Q, K, D)`: fitted beforehand (e.g. over every corpus, `run`), else on
    the fitting windows' components."""
    preset = held.preset
    coders, components, oracle = fitted
    if codebooks is None:
        codebooks = fit_codebooks(components, model.config.codebook_size, max_levels=16)
    montages = []  # (coder, windows, channel ids, held-out latents): the encoder runs once per montage
    for names, windows in stack_by_montage(held).items():
        coder, latents = coders[names]
        coder.set_codebooks(codebooks, latents)
        patches, ids = _montage_patches(model, windows, names, preset, device)
        montages.append((coder, windows, ids, montage_latents(model, patches, ids, preset.name)))
    out = {}
    for n in levels:
        targets, estimates = [], []
        for coder, windows, ids, latents in montages:
            rebuilt = coder.decode_patches(model, coder.encode_latents(latents, n), ids)
            targets.append(windows.reshape(-1, windows.shape[-1]))
            estimates.append(rebuilt.float().cpu().numpy().reshape(-1, windows.shape[-1]))
        out[n] = {
            **row_metrics(np.concatenate(targets), np.concatenate(estimates)),
            "bits_per_channel_second": model.config.bits_per_channel_second(preset.name, n),
            "axes_fitted_on": "evaluated windows" if oracle else "other subjects",
        }
    return out


def spatial_bases(held: Corpus, fit: Corpus | None) -> tuple[list[tuple[np.ndarray, ...]], bool]:
    """Per montage of the held-out windows: (windows `(n, C, T)`, PCA basis, channel means), the PCA
    fitted on `fit`'s windows of that montage, or on the held-out ones themselves; and whether any
    montage needed that "oracle" fit. Independent of the bit budget: computed once per corpus."""
    fitted = stack_by_montage(fit) if fit is not None and len(fit) else {}
    montages, oracle = [], False
    for names, windows in stack_by_montage(held).items():
        source = fitted.get(names)
        if source is None:
            source, oracle = windows, True
        montages.append((windows, *fit_spatial_pca(source)))
    return montages, oracle


def spatial_rows(
    montages: list[tuple[np.ndarray, ...]], oracle: bool, patch_len: int, budget_per_channel: float
) -> dict:
    """Spatial codec metrics pooled over every montage's windows (from `spatial_bases`)."""
    targets, estimates, settings = [], [], set()
    for windows, basis, mean in montages:
        budget = budget_per_channel * windows.shape[1]
        metrics, estimate = best_spatial(windows, basis, mean, patch_len, budget)
        settings.add(metrics["setting"])
        targets.append(windows.reshape(-1, windows.shape[-1]))
        estimates.append(estimate.reshape(-1, windows.shape[-1]))
    result = row_metrics(np.concatenate(targets), np.concatenate(estimates))
    return {
        **result,
        "setting": ", ".join(sorted(settings)),
        "pca_fitted_on": "evaluated windows" if oracle else "other subjects",
    }


def rate_distortion(
    model: BiotokTokenizer,
    held: Corpus,
    fit: Corpus | None,
    levels: list[int],
    batch_size: int = 32,
    device: torch.device | str = "cpu",
    baselines: bool = True,
    variable_depth: bool = False,
    spatial_coding: bool = False,
    spatial_fit: tuple | None = None,
    spatial_codebooks: torch.Tensor | None = None,
) -> list[dict]:
    """One row per number of levels for one corpus view; see the module docstring. `baselines=False`
    leaves out the two codecs (they depend on the data alone: compute them once, e.g. for ablations);
    `variable_depth` adds "tokenizer_variable_depth" (same codes per patch, spent where they shrink the
    residual most; its rate counts the depths); `spatial_coding` adds "tokenizer_spatial_coding" (the
    montage's latents coded jointly across channels, `spatial_coding_rows`, with `spatial_codebooks`;
    `spatial_fit`: this view's `montage_coders` result where the caller has it already)."""
    device = torch.device(device)
    preset, cfg = held.preset, model.config
    result = reconstruct(model, held, levels, batch_size, device, continuous=True)
    target = result["target"]
    bound = row_metrics(target, result["estimate"]["continuous"])
    montages, oracle = spatial_bases(held, fit) if baselines else ([], False)
    variable = variable_depth_rows(model, held, levels, batch_size, device) if variable_depth else {}
    joint = {}
    if spatial_coding:
        fitted = spatial_fit or montage_coders(model, held, fit, device)
        joint = spatial_coding_rows(model, held, levels, device, fitted, spatial_codebooks)
    rows = []
    for n in levels:
        bits = cfg.bits_per_channel_second(preset.name, n)
        per_patch = bits * preset.patch_len / preset.sfreq
        rows.append(
            {
                "corpus": held.name,
                "modality": preset.modality,
                "levels": n,
                "bits_per_channel_second": bits,
                "rows": int(target.shape[0]),
                "subjects": sorted(set(held.column("subject"))),
                "tokenizer": row_metrics(target, result["estimate"][n]),
                "continuous": bound,
            }
        )
        if variable:
            rows[-1]["tokenizer_variable_depth"] = variable[n]
        if joint:
            rows[-1]["tokenizer_spatial_coding"] = joint[n]
        if baselines:
            rows[-1]["dct"] = best_dct(target, preset.patch_len, per_patch)[0]
            rows[-1]["spatial_dct"] = spatial_rows(montages, oracle, preset.patch_len, per_patch)
    return rows


def markdown(rows: list[dict]) -> str:
    lines = [
        "| corpus | levels | bits/ch/s | biotok SNR dB | PCC | variable depth: SNR dB at bits/ch/s | biotok + spatial latent coding SNR dB | per-channel DCT SNR dB | spatial PCA+DCT SNR dB | unquantized bound dB |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        codecs = [f"{r[key]['snr_db']:.2f}" if key in r else "—" for key in ("dct", "spatial_dct")]
        variable = r.get("tokenizer_variable_depth")
        varied = f"{variable['snr_db']:.2f} at {variable['bits_per_channel_second']:.1f}" if variable else "—"
        joint = r.get("tokenizer_spatial_coding")
        joint = f"{joint['snr_db']:.2f}" if joint else "—"
        lines.append(
            f"| {r['corpus']} | {r['levels']} | {r['bits_per_channel_second']:.0f} | "
            f"{r['tokenizer']['snr_db']:.2f} | {r['tokenizer']['pcc']:.3f} | {varied} | {joint} | {' | '.join(codecs)} | "
            f"{r['continuous']['snr_db']:.2f} |"
        )
    return "\n".join(lines)


def plot(rows: list[dict], path: str | Path, title: str = "Rate-distortion on held-out subjects") -> None:
    """SNR against bits per channel-second, one panel per corpus: biotok, both codecs, the bound."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    corpora = list(dict.fromkeys(r["corpus"] for r in rows))
    fig, axes = plt.subplots(1, len(corpora), figsize=(4.2 * len(corpora), 3.6), squeeze=False)
    for ax, name in zip(axes[0], corpora):
        mine = [r for r in rows if r["corpus"] == name]
        bits = [r["bits_per_channel_second"] for r in mine]
        if "tokenizer_variable_depth" in mine[0]:
            varied = [r["tokenizer_variable_depth"] for r in mine]
            ax.plot(
                [v["bits_per_channel_second"] for v in varied],
                [v["snr_db"] for v in varied],
                "o:",
                label="biotok, variable depth",
            )
        for key, label, style in (
            ("tokenizer", "biotok", "o-"),
            ("tokenizer_spatial_coding", "biotok + spatial latent coding", "D-"),
            ("dct", "per-channel DCT", "s--"),
            ("spatial_dct", "spatial PCA + DCT", "^--"),
        ):
            if key in mine[0]:
                ax.plot(bits, [r[key]["snr_db"] for r in mine], style, label=label)
        ax.axhline(mine[0]["continuous"]["snr_db"], color="grey", lw=0.8, ls=":", label="unquantized bound")
        ax.set_xscale("log", base=2)
        ax.set_xlabel("bits per channel-second")
        ax.set_title(f"{name} ({mine[0]['modality']})")
        ax.grid(alpha=0.3)
    axes[0, 0].set_ylabel("SNR (dB)")
    axes[0, 0].legend(fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


@dataclass
class RDArgs:
    """Rate-distortion table of a tokenizer against per-channel DCT and spatial PCA + DCT codecs."""

    tokenizer: str = field(
        default="", metadata={"help": "tokenizer folder (config.json + model.safetensors)"}
    )
    corpora: list[str] = field(default_factory=list, metadata={"help": "prepared corpus folders to measure"})
    recordings: str = field(
        default="", metadata={"help": "instead of --corpora: a folder of recordings (any MNE-readable file)"}
    )
    preset: str = field(
        default="eeg", metadata={"help": "with --recordings: the tokenizer's preset to apply"}
    )
    subjects: str = field(
        default="",
        metadata={
            "help": 'JSON: the subjects to measure by corpus name (e.g. {"eegbci_more": ["013"]}); the others '
            "fit the spatial PCA. Default: every window, PCA fitted on them (oracle)"
        },
    )
    levels: str = field(default="1,2,4,8", metadata={"help": "numbers of RVQ levels, comma-separated"})
    batch_size: int = field(default=32, metadata={"help": "windows per encode batch"})
    variable_depth: bool = field(
        default=False,
        metadata={
            "help": "add the variable-depth rows (the same codes per patch, each token's depth chosen by "
            "its residual; the rate counts the depths' entropy)"
        },
    )
    spatial_coding: bool = field(
        default=False,
        metadata={
            "help": "add the spatial latent coding rows (each montage's latents rotated onto their principal "
            "axes, fitted on the other subjects, and coded jointly; the tokenizer's rate at each level)"
        },
    )
    codecs: bool = field(
        default=True,
        metadata={
            "help": "also search the DCT codecs (minutes; they depend on the data alone: skip for ablations)"
        },
    )
    device: str = field(default="", metadata={"help": "cpu | cuda (default: cuda when available)"})
    out: str = field(default="rd_out", metadata={"help": "folder for rd.json, rd.md and rd.png"})


# recording formats MNE reads (a BrainVision set is opened by its .vhdr header)
MNE_SUFFIXES = (".edf", ".bdf", ".gdf", ".fif", ".set", ".vhdr", ".cnt", ".mff", ".nxe")


def recordings_corpus(folder: str, preset: str, work: str) -> dict[str, Corpus]:
    """Every MNE-readable recording under `folder`, prepared with `preset`, one subject per file;
    files MNE cannot read are skipped and listed in the corpus manifest."""
    from data_prep.corpus import CorpusSpec, SourceSpec, prepare_corpus
    from data_prep.presets import get_preset

    present = sorted({f.suffix.lower() for f in Path(folder).rglob("*") if f.suffix.lower() in MNE_SUFFIXES})
    if not present:
        raise ConfigError("recordings", f"no recording MNE reads ({', '.join(MNE_SUFFIXES)}) under {folder}")
    sources = [SourceSpec(f"**/*{suffix}", "mne", subject=r"([^/]+)\.\w+$") for suffix in present]
    report = prepare_corpus(
        CorpusSpec("recordings", get_preset(preset), sources), folder, work, "skip", False
    )
    for skipped in report.skipped_files:
        print(f"skipped {skipped['file']}: {skipped['error']}")
    return load_corpora(Path(work) / "recordings")


def run(args: RDArgs) -> list[dict]:
    if not args.tokenizer:
        raise ConfigError("tokenizer", "name a tokenizer folder")
    if not args.corpora and not args.recordings:
        raise ConfigError(
            "corpora", "name prepared corpora (--corpora) or a folder of recordings (--recordings)"
        )
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model = BiotokTokenizer.from_pretrained(args.tokenizer).to(device).eval()
    levels = [int(n) for n in args.levels.split(",") if int(n) <= model.config.n_levels]
    subjects = json.loads(args.subjects) if args.subjects else {}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as work:
        corpora = (
            recordings_corpus(args.recordings, args.preset, work)
            if args.recordings
            else load_corpora(args.corpora)
        )
        views = {}
        for name, corpus in corpora.items():
            if corpus.preset.name not in model.config.modalities:
                print(f"{name}: preset {corpus.preset.name!r} is not one of this tokenizer's, skipped")
                continue
            views[name] = corpus.split_subjects(set(subjects[name])) if name in subjects else (None, corpus)
        # each corpus's encoder pass for the spatial coders is made once, for its codebooks and its rows
        fits = (
            {name: montage_coders(model, h, f, device) for name, (f, h) in views.items()}
            if args.spatial_coding
            else {}
        )
        codebooks = spatial_codebooks(model, fits) if args.spatial_coding else {}
        rows = []
        for name, (fit, held) in views.items():
            rows.extend(
                rate_distortion(
                    model,
                    held,
                    fit,
                    levels,
                    args.batch_size,
                    device,
                    args.codecs,
                    args.variable_depth,
                    args.spatial_coding,
                    fits.get(name),
                    codebooks.get(name),
                )
            )
    (out / "rd.json").write_text(json.dumps(rows, indent=1))
    table = markdown(rows)
    (out / "rd.md").write_text(table + "\n")
    plot(rows, out / "rd.png")
    print(table)
    print(f"wrote {out}/rd.json, rd.md, rd.png")
    return rows


def main(argv: list[str] | None = None) -> int:
    return run_command(RDArgs, run, argv, prog="biotok tokenizer rd")


if __name__ == "__main__":
    sys.exit(main())
