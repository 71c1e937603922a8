"""Do codebook-vector embeddings let a network read EEGBCI left/right where learnt embeddings do not?

The same untrained network (size tiny, reading 2 RVQ levels, channel pooling) trained on the task's
labels twice: code embeddings from the usual random start, and from `init_code_embed_from_codebooks`
(one fixed random linear map per scale of the frozen tokenizer's codebook vectors, then trained). Same
folds (leave one subject out), seeds, epochs and learning rate (no layer decay: both start untrained).

    python benchmarks/mi_codebook_init.py --codes_file CODES/eegbci_mi.safetensors \
        --tokenizer pretrained_models/tokenizer-small --out docs/results/mi_codebook_init
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from finetune.classify import ClassifyArgs, run
from foundation.config import FoundationConfig
from foundation.model import BiotokFoundation
from tokenizer.model import BiotokTokenizer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--codes_file", required=True)
    parser.add_argument(
        "--task", default="eegbci_mi", help="the codes file's task (eegbci_mi or eegbci_mi_mu)"
    )
    parser.add_argument(
        "--rows",
        default="foundation (linear probe),foundation (fine-tuned)",
        help="the probe on the untrained network, and the network trained from scratch",
    )
    parser.add_argument("--tokenizer", default="pretrained_models/tokenizer-small")
    parser.add_argument("--size", default="tiny")
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--pooling", default="channels")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--probe_lr", type=float, default=5e-3)
    parser.add_argument("--split_scales", action="store_true", help="init_code_embed_from_codebooks's")
    parser.add_argument("--out", default="docs/results/mi_codebook_init")
    args = parser.parse_args()
    out = Path(args.out)
    tokenizer = BiotokTokenizer.from_pretrained(args.tokenizer).eval()
    config = FoundationConfig.from_tokenizer(
        tokenizer.config, args.size, n_target_levels=2, n_input_levels=2, position_embed=True
    )
    summary = {}
    for init in ("learnt", "codebooks"):
        model = BiotokFoundation(config)
        if init == "codebooks":
            model.init_code_embed_from_codebooks(tokenizer, split_scales=args.split_scales)
        folder = out / f"untrained_{init}"
        model.save_pretrained(str(folder))
        results = run(
            ClassifyArgs(
                task=args.task,
                codes_file=args.codes_file,
                foundation=str(folder),
                protocol="transductive",
                rows=args.rows,
                pooling=args.pooling,
                seeds=args.seeds,
                epochs=args.epochs,
                probe_lr=args.probe_lr,
                layer_decay=1.0,
                out=str(out / init),
                progress=False,
            )
        )
        summary[init] = {row: body["summary"]["balanced_accuracy"] for row, body in results["rows"].items()}
        for row, score in summary[init].items():
            print(
                f"| {init} code embeddings | {row} | {score['mean']:.3f} ± {score['std_folds']:.3f} |",
                flush=True,
            )
        shutil.rmtree(folder)  # the untrained weights are made again by this script, not kept
    (out / "summary.json").write_text(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
