"""Which layer of the pretrained foundation model carries left/right motor imagery best?

Every linear probe reads the top layer's states. Here the shipped (or any) token foundation model encodes
every motor-imagery window once, its states are taken after the input embedding, after each transformer
block and after the final norm (what the probe reads), and two fixed readouts score each layer on the
same leave-one-subject-out folds as `biotok finetune classify`: CSP + LDA over each channel's patch-centred
states (the probe's `spatial_power` form with CSP's filters instead of learnt ones) and a logistic
regression on each channel's log power of those states. No hyperparameter is picked on the test folds.
The model's held-out subjects are scored apart from the others, whose unlabelled windows it pretrained on
(transductive for them).

    python benchmarks/mi_layer_readouts.py --codes_file CODES/eegbci_mi_mu_nofrontal.safetensors \
        --foundation pretrained_models/foundation-small --out docs/results/mi_layer_readouts.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from mi_linear_readouts import csp_readout, readout  # benchmarks/ is the script's folder

from finetune.classify import held_out, load_codes
from finetune.classify_data import ClassifyTask, group_folds
from foundation.model import BiotokFoundation
from tokenizer.model import BiotokTokenizer


@torch.no_grad()
def layer_states(
    model: BiotokFoundation, codes: torch.Tensor, ch_names: list[str], modality: str, batch_size: int = 32
) -> dict[str, np.ndarray]:
    """codes `(N, C, P, S, Q)` -> {layer name: patch states `(N, C, P, d)`}: "embedding" (the encoder's
    input), "block i" (its output), "block i + norm" (with the final norm on it), "top" (after every
    block and the final norm: what the probe reads)."""
    blocks = model.encoder.blocks
    names = ["embedding"] + [f"block {i}" for i in range(len(blocks))] + ["top"]
    taken: dict[str, list[torch.Tensor]] = {name: [] for name in names}
    hooks = [blocks[0].register_forward_pre_hook(lambda _, args: taken["embedding"].append(args[0]))]
    for i, block in enumerate(blocks):
        hooks.append(block.register_forward_hook(lambda _, __, out, i=i: taken[f"block {i}"].append(out)))
    ids = model.channel_ids([ch_names], modality)
    try:
        for batch in codes.split(batch_size):
            top = model.encode(ids.expand(len(batch), -1), modality, codes=batch)
            taken["top"].append(top.reshape(len(batch), -1, top.shape[-1]))
    finally:
        for hook in hooks:
            hook.remove()
    n, c, p = codes.shape[:3]
    # a model cut after block i keeps the final norm (`BiotokFoundation.truncated`): those states too
    for i in range(len(blocks) - 1):
        taken[f"block {i} + norm"] = [model.encoder.ln(part) for part in taken[f"block {i}"]]
    return {name: torch.cat(parts).view(n, c, p, -1).float().numpy() for name, parts in taken.items()}


def summary(result: dict, test_subjects: list[str], held: set[str]) -> dict:
    """Mean balanced accuracy over all folds, over the held-out subjects' folds and over the others'."""
    folds = np.array(result["folds"])
    unseen = np.array([s in held for s in test_subjects])
    return {
        "all": float(folds.mean()),
        "held_out": float(folds[unseen].mean()) if unseen.any() else None,
        "seen_unlabelled": float(folds[~unseen].mean()) if (~unseen).any() else None,
        "folds": result["folds"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--task", default="eegbci_mi_mu_nofrontal")
    parser.add_argument(
        "--codes_file", required=True, help="`biotok finetune classify --codes_file` of the task"
    )
    parser.add_argument("--foundation", default="pretrained_models/foundation-small")
    parser.add_argument("--c_values", default="0.001,0.01,0.1")
    parser.add_argument("--layers", default="", help="comma-separated layer names to score ('': every one)")
    parser.add_argument(
        "--untrained_seed",
        type=int,
        default=-1,
        help="score the same network untrained instead (the from-scratch row's start: code embeddings "
        "from --tokenizer's codebooks, drawn with this seed); -1: the pretrained weights",
    )
    parser.add_argument("--tokenizer", default="pretrained_models/tokenizer-small")
    parser.add_argument("--out", default="docs/results/mi_layer_readouts.json")
    args = parser.parse_args()
    task = ClassifyTask.load(args.task)
    epochs, codes, _ = load_codes(args.codes_file, task)
    model = BiotokFoundation.from_pretrained(args.foundation).eval()
    if args.untrained_seed >= 0:
        torch.manual_seed(args.untrained_seed)
        model = BiotokFoundation(model.config).eval()
        tokenizer = BiotokTokenizer.from_pretrained(args.tokenizer)
        model.init_code_embed_from_codebooks(tokenizer, args.untrained_seed)
    folds = group_folds(epochs.groups, task.folds)
    test_subjects = [str(epochs.subjects[test][0]) for _, test in folds]
    held = held_out(Path(args.foundation))
    states = layer_states(model, codes, epochs.ch_names, epochs.preset.name)
    if args.layers:
        states = {name: states[name] for name in args.layers.split(",")}
    results = {"task": args.task, "foundation": args.foundation, "held_out_subjects": sorted(held)}
    results["untrained_seed"] = args.untrained_seed
    results["test_subjects"], results["layers"] = test_subjects, {}
    for name, hidden in states.items():
        centred = hidden - hidden.mean(axis=2, keepdims=True)  # a channel's own embedding is not power
        n, c = centred.shape[:2]
        layer = {
            "csp_lda": summary(
                csp_readout(centred.reshape(n, c, -1), epochs.labels, folds), test_subjects, held
            )
        }
        log_power = np.log((centred**2).mean(axis=(2, 3)) + 1e-12)  # (N, C)
        for c_value in args.c_values.split(","):
            scored = readout(log_power, epochs.labels, folds, float(c_value))
            layer[f"log_power_lr_C{c_value}"] = summary(scored, test_subjects, held)
        results["layers"][name] = layer
        print(name, {k: round(v["all"], 3) for k, v in layer.items()}, flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
