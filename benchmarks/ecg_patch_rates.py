"""Where the per-channel DCT codec stands on held-out ECG at the rates a tokenizer with longer ECG patches
would spend (issue 16): each of 1 / 2 / 4 / 8 RVQ levels costs n_scales x log2(codebook) bits per patch,
so the patch length sets the bits per channel-second the tokenizer is compared at.

    python benchmarks/ecg_patch_rates.py --corpus corpora/real/ecg --subjects ptbdb/s0010_re --out F.json
"""

from __future__ import annotations

import argparse
import json

import numpy as np

from data_prep.corpus import Corpus
from tokenizer.rd import best_dct


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--corpus", required=True, help="a prepared ECG corpus (preset-scaled windows)")
    parser.add_argument("--subjects", nargs="+", required=True, help="the held-out subjects")
    parser.add_argument("--patch_lens", default="40,100,200", help="patch lengths in samples")
    parser.add_argument("--bits_per_level", type=int, default=40, help="n_scales x log2(codebook size)")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    corpus = Corpus(args.corpus)
    _, held = corpus.split_subjects(set(args.subjects))
    rows = np.concatenate([w["signal"] for w in held]).astype(np.float64)  # (channel-windows, T)
    sfreq = corpus.preset.sfreq
    result = {"corpus": args.corpus, "subjects": args.subjects, "channel_windows": len(rows), "rows": []}
    for patch_len in map(int, args.patch_lens.split(",")):
        usable = rows[:, : rows.shape[1] // patch_len * patch_len]
        for levels in (1, 2, 4, 8):
            bits = levels * args.bits_per_level  # per patch
            rate = bits * sfreq / patch_len
            best = best_dct(usable, patch_len, bits)[0]["snr_db"]
            row = {"patch_len": patch_len, "patch_s": patch_len / sfreq, "levels": levels}
            row |= {"bits_per_channel_second": rate, "dct_snr_db": best}
            result["rows"].append(row)
            print(
                f"patch {patch_len} ({patch_len / sfreq:.2f} s), {levels} levels: {rate:.0f} b/ch/s, DCT {best:.2f} dB"
            )
    with open(args.out, "w") as f:
        json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
