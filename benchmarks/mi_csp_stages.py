"""Where does a network lose what CSP reads from the codes? CSP + LDA at each stage of a token model.

On the 8-30 Hz, no-frontal motor-imagery task CSP + LDA reads left/right from the tokenizer's codebook
vectors as well as from the signal, while every network on the codes sits at chance. This script runs the
same CSP (4 components, log variance) + LDA, leave one subject out, on: the codebook vectors of each scale;
the summed code embeddings of an untrained network whose embeddings start from the codebooks
(`init_code_embed_from_codebooks`); the same after the channel, time and modality embeddings; after each
transformer block. Then a `spatial_power` readout (learnt spatial filters + log power, the classifier's
head) trained by AdamW on the codebook vectors, to tell the head's limits from the network's.

    python benchmarks/mi_csp_stages.py --codes_file CODES/eegbci_mi_mu_nofrontal.safetensors \
        --out docs/results/mi_csp_stages.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from mi_linear_readouts import codebook_vectors, csp_readout

from finetune.classifier import Head, Pool, Readout
from finetune.classify import ClassifyArgs, fit, load_codes
from finetune.classify_data import ClassifyTask, group_folds
from finetune.metrics import balanced_accuracy
from foundation.config import FoundationConfig
from foundation.model import BiotokFoundation
from tokenizer.model import BiotokTokenizer


def trained_readout(states: torch.Tensor, labels: np.ndarray, folds: list, lr: float, epochs: int, wd: float):
    """Balanced accuracy per fold of a `spatial_power` readout (8 filters) trained on `(N, C, P, D)`."""
    n, c = states.shape[:2]
    ids = torch.ones(n, c, dtype=torch.long)
    args = ClassifyArgs(epochs=epochs, batch_size=32, mixed_precision="no")
    scores = []
    for train, test in folds:
        torch.manual_seed(0)
        readout = Readout(Pool("spatial_power", c, 8), Head(8, 2, norm=False))
        groups = [{"params": list(readout.parameters()), "lr": lr, "weight_decay": wd}]
        inputs = {"hidden": states[train], "channel_ids": ids[train]}
        readout = fit(readout, inputs, torch.from_numpy(labels[train]), groups, args, 0)
        with torch.no_grad():
            predicted = readout(states[test], ids[test]).argmax(-1).numpy()
        scores.append(balanced_accuracy(labels[test], predicted, 2))
    return {"mean": float(np.mean(scores)), "std": float(np.std(scores)), "folds": scores}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--codes_file", required=True)
    parser.add_argument("--task", default="eegbci_mi_mu_nofrontal")
    parser.add_argument("--tokenizer", default="pretrained_models/tokenizer-small")
    parser.add_argument("--size", default="tiny")
    parser.add_argument(
        "--split_scales",
        action="store_true",
        help="each scale's codebook vectors in their own slice of the width",
    )
    parser.add_argument(
        "--foundation",
        default="",
        help="a pretrained foundation folder to read instead of an untrained network (then also a "
        "spatial_power readout trained on its final states, what the linear probe sees)",
    )
    parser.add_argument("--skip_readouts", action="store_true", help="only the CSP rows")
    parser.add_argument("--out", default="docs/results/mi_csp_stages.json")
    args = parser.parse_args()
    task = ClassifyTask.load(args.task)
    epochs, codes, _ = load_codes(args.codes_file, task)
    labels, folds = epochs.labels, group_folds(epochs.groups, task.folds)
    tokenizer = BiotokTokenizer.from_pretrained(args.tokenizer).eval()
    n, c, p = codes.shape[:3]
    vectors = codebook_vectors(tokenizer, codes, 2)  # (N, C, P, S, code_dim)
    rows = {}

    def report(name: str, result: dict) -> None:
        rows[name] = result
        print(f"| {name} | {result['mean']:.3f} ± {result['std']:.3f} |", flush=True)

    def csp(name: str, states) -> None:
        report(name, csp_readout(np.asarray(states).reshape(n, c, -1), labels, folds))

    csp("codebook vectors, 2 levels, every scale", vectors)
    for scale in range(vectors.shape[3]):
        csp(f"codebook vectors, 2 levels, scale {scale} alone", vectors[:, :, :, scale])
    config = FoundationConfig.from_tokenizer(
        tokenizer.config, args.size, n_target_levels=2, n_input_levels=2, position_embed=True
    )
    torch.manual_seed(0)
    if args.foundation:
        model = BiotokFoundation.from_pretrained(args.foundation).eval()
    else:
        model = BiotokFoundation(config).eval()
        model.init_code_embed_from_codebooks(tokenizer, split_scales=args.split_scales)
    network = "pretrained network" if args.foundation else "untrained network"
    ids = model.channel_ids([list(epochs.ch_names)], "eeg").expand(n, -1)
    # the stages as the model's own encode() computes them: block 0's input, every block's output
    stages = {}

    def keep(name):  # a hook that returns None, so the model runs unchanged
        return lambda module, inputs, out=None: stages.__setitem__(name, inputs[0] if out is None else out)

    blocks = model.encoder.blocks
    blocks[0].register_forward_pre_hook(keep("input"))
    for i, block in enumerate(blocks):
        block.register_forward_hook(keep(i))
    with torch.no_grad():
        csp(f"{network}: summed code embeddings", model._inputs(codes.long(), None, "eeg"))
        final = model.encode(ids, "eeg", codes=codes.long())
    csp(f"{network}: + channel, time and modality embeddings", stages["input"])
    for i in range(len(blocks)):
        csp(f"{network}: after block {i}", stages[i])
    csp(f"{network}: final states (after the last LayerNorm)", final)
    states = torch.from_numpy(vectors).float().reshape(n, c, p, -1)
    states = states / states.std()
    if args.foundation and not args.skip_readouts:
        report(
            f"spatial_power readout trained on the {network}'s final states (lr 0.01, 30 epochs, wd 0.05)",
            trained_readout(final, labels, folds, 1e-2, 30, 0.05),
        )
    for lr, n_epochs, wd in (
        () if args.skip_readouts else ((1e-2, 30, 0.05), (1e-3, 100, 0.05), (1e-2, 100, 0.5))
    ):
        name = (
            f"spatial_power readout trained on the codebook vectors (lr {lr:g}, {n_epochs} epochs, wd {wd:g})"
        )
        report(name, trained_readout(states, labels, folds, lr, n_epochs, wd))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    summary = {
        "task": task.name,
        "folds": len(folds),
        "size": args.size,
        "split_scales": args.split_scales,
        "foundation": args.foundation,
    }
    Path(args.out).write_text(json.dumps({**summary, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
