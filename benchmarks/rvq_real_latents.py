"""How often RVQ codes equal an exact float64 nearest-neighbour search on real EEG/EMG latents: the shipped
tokenizer's encoder latents of prepared real windows, quantised by its own codebooks (every scale, every
level), with our PyTorch path and, on a GPU with Triton, the fused kernel (tokenizer/rvq_triton.py).

    python benchmarks/rvq_real_latents.py --corpora corpora/real/eegbci corpora/real/myo --out bench_out/rvq_real_latents.json
"""

from __future__ import annotations

import argparse

import torch
from timing import write_results

from data_prep.corpus import load_corpora
from data_prep.mixing import collate_windows
from tokenizer.model import BiotokTokenizer
from tokenizer.rvq import exact_codes


@torch.no_grad()
def latents(model: BiotokTokenizer, corpus, windows: int) -> torch.Tensor:
    """Encoder latents `(S, n, code_dim)` of the real channels of up to `windows` windows, float32."""
    stride = max(1, len(corpus) // windows)
    items = [corpus[i] for i in range(0, len(corpus), stride)][:windows]
    batch = collate_windows(items)
    b, c, t = batch["signal"].shape
    patch_len = corpus.preset.patch_len
    patches = batch["signal"].view(b, c, t // patch_len, patch_len).to(model.device)
    ids = model.channel_ids(batch["ch_names"], corpus.preset.name)
    per_scale, _ = model._latents(patches, ids, corpus.preset.name)  # (S, B, C*P, dim)
    real = batch["channel_mask"][:, :, None].expand(b, c, t // patch_len).reshape(b, -1).to(model.device)
    return torch.stack([scale[real] for scale in per_scale]).float()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tokenizer", default="pretrained_models/tokenizer-small")
    parser.add_argument("--corpora", nargs="+", required=True)
    parser.add_argument("--windows", type=int, default=256)
    parser.add_argument("--out", default="bench_out/rvq_real_latents.json")
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.backends.cuda.matmul.allow_tf32 = False
    model = BiotokTokenizer.from_pretrained(args.tokenizer).to(device).eval()
    fused = None
    if device.type == "cuda":
        try:
            from tokenizer.rvq_triton import rvq_encode as fused
        except ImportError:
            pass
    rows = []
    for name, corpus in load_corpora(args.corpora).items():
        for scale, x in enumerate(latents(model, corpus, args.windows)):
            quantizer = model.quantizers[scale]
            exact = exact_codes(x, quantizer.codebooks)
            row = {"corpus": name, "scale": scale, "vectors": x.shape[0], "levels": quantizer.n_levels}
            row["pytorch_exact"] = float((quantizer.encode(x) == exact).float().mean())
            if fused is not None:  # certified (uncertain rows encoded again) and the bare TF32 top-two kernel
                codes, rescored = fused(x, quantizer.codebooks, return_rescored=True)
                row["fused_exact"] = float((codes == exact).float().mean())
                row["fused_rescored_fraction"] = float(rescored.float().mean())
                bare = fused(x, quantizer.codebooks, error_bound=-1.0)
                row["fused_unchecked_exact"] = float((bare == exact).float().mean())
            print(row, flush=True)
            rows.append(row)
    write_results(args.out, device, rows, tokenizer=args.tokenizer, windows=args.windows)


if __name__ == "__main__":
    main()
