#!/usr/bin/env bash
# The foundation models the classification table compares, pretrained on a CPU (tiny size) over the
# shipped tokenizer's codes: one with token input, one with raw-patch input (same data, same steps).
# Self-supervised only (no labels); the signals are the shared real EEGBCI and Myo recordings plus
# synthetic EEG. The real subjects are also the classification test subjects (transductive
# pretraining: the table says so).
#
#   bash benchmarks/classify_models_cpu.sh WORK    # then: biotok finetune classify ... (docs/BENCHMARKS.md)
set -euo pipefail
work=${1:-runs/classify_models}
root=${REAL:-../shared/data/real}
tokenizer=${TOKENIZER:-pretrained_models/tokenizer-small}
steps=${PRETRAIN_STEPS:-600}
biotok prepare --sources shared_real --root "$root" --out "$work/corpora" --progress false
biotok prepare --synthetic --root "$work/synthetic" --out "$work/corpora_synthetic" --progress false
corpora="$work/corpora/eegbci $work/corpora/myo $work/corpora_synthetic/eeg_synthetic"
biotok tokenize --tokenizer "$tokenizer" --corpora $corpora --out "$work/tokens" --progress false
for kind in tokens patches; do
    biotok pretrain --tokens "$work"/tokens/* --size tiny --input_kind "$kind" --steps "$steps" \
        --batch_size 16 --lr 1e-3 --eval_every "$steps" --save_every "$steps" \
        --out "$work/foundation_$kind" --progress false
done
