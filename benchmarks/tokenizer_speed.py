"""Tokenizer encode speed as a multiple of real time: 64-channel EEG at 200 Hz, 4 s windows, batch 256.

    python benchmarks/tokenizer_speed.py --model runs/tokenizer/final --corpus corpora/real/eegbci

The input shape is NeuroRVQ's published one (4 s x 64 channels, batch 256, bf16), so the multiple can
be set beside its ~1,650x real time on an H100. Real time counts seconds of 64-channel recording
encoded per second. Without --model the sizes are timed with random weights (codes are then
meaningless, speed is not). bf16 codes are compared with the float32 path on the same windows.
"""

from __future__ import annotations

import argparse
import json

import torch
from timing import time_call, write_results

from tokenizer.config import TokenizerConfig
from tokenizer.model import BiotokTokenizer

N_CHANNELS, WINDOW_S, SFREQ = 64, 4.0, 200


def eeg_batch(corpus_path: str | None, batch: int) -> tuple[torch.Tensor, list[str]]:
    """Scaled EEG patches `(batch, 64, 4, 200)` from a prepared corpus (cycled), or Gaussian noise."""
    if corpus_path:
        from data_prep.corpus import Corpus

        corpus = Corpus(corpus_path)
        items = [corpus[i % len(corpus)] for i in range(batch)]
        items = [it for it in items if it["signal"].shape[0] == N_CHANNELS]
        signal = torch.stack([torch.from_numpy(it["signal"]) for it in items])
        return signal.view(len(items), N_CHANNELS, -1, 200), items[0]["ch_names"]
    names = [f"E{i}" for i in range(N_CHANNELS)]
    return torch.randn(batch, N_CHANNELS, int(WINDOW_S * SFREQ) // 200, 200), names


def measure(model: BiotokTokenizer, patches: torch.Tensor, ch_names: list[str], device) -> dict:
    ids = model.channel_ids([ch_names] * patches.shape[0], "eeg")
    patches = patches.to(device)
    seconds_of_signal = patches.shape[0] * WINDOW_S
    result = {}
    with torch.no_grad():
        fp32 = model.encode_patches(patches, ids, "eeg")
        result["fp32_s"] = time_call(lambda: model.encode_patches(patches, ids, "eeg"), device)
        with torch.autocast(device.type, torch.bfloat16):
            # encode keeps its code path in float32 under autocast unless allow_bf16=True
            default = model.encode_patches(patches, ids, "eeg")
            bf16 = model.encode_patches(patches, ids, "eeg", allow_bf16=True)
            result["bf16_s"] = time_call(
                lambda: model.encode_patches(patches, ids, "eeg", allow_bf16=True), device
            )
    result["fp32_x_realtime"] = seconds_of_signal / result["fp32_s"]
    result["bf16_x_realtime"] = seconds_of_signal / result["bf16_s"]
    result["default_under_autocast_codes_equal_fp32"] = float((default == fp32).float().mean())
    result["bf16_codes_equal_fp32"] = float((bf16 == fp32).float().mean())
    result["bf16_first_level_equal_fp32"] = float((bf16[..., 0] == fp32[..., 0]).float().mean())
    result["bf16_codes_equal_fp32_per_level"] = (bf16 == fp32).float().mean(dim=(0, 1, 2, 3)).tolist()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", help="a trained tokenizer folder (config.json + model.safetensors)")
    parser.add_argument("--corpus", help="a prepared 64-channel EEG corpus (default: Gaussian noise)")
    parser.add_argument("--sizes", default="small,base", help="sizes timed with random weights")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--out", default="bench_out/tokenizer_speed.json")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    torch.backends.cuda.matmul.allow_tf32 = False
    patches, ch_names = eeg_batch(args.corpus, args.batch)
    rows = []
    models = [("trained", args.model)] if args.model else []
    models += [(size, None) for size in args.sizes.split(",") if size]
    for name, path in models:
        if path:
            model = BiotokTokenizer.from_pretrained(path)
        else:
            vocab = [f"eeg:{n}" for n in ch_names]
            model = BiotokTokenizer(TokenizerConfig.from_size(name, presets=["eeg"], channel_vocab=vocab))
        model = model.to(device).eval()
        row = {"model": name, "batch": int(patches.shape[0]), **measure(model, patches, ch_names, device)}
        print(json.dumps(row))
        rows.append(row)
    write_results(
        args.out, device, rows, input=f"{N_CHANNELS} ch x {WINDOW_S} s @ {SFREQ} Hz, batch {patches.shape[0]}"
    )


if __name__ == "__main__":
    main()
