#!/usr/bin/env bash
# The classification tables of docs/BENCHMARKS.md: every shipped task, every row, 3 seeds, on a CPU.
#
#   bash benchmarks/classify_models_cpu.sh runs/classify_models      # the two foundation models
#   bash benchmarks/classify_table.sh runs/classify_models runs/classify
set -euo pipefail
models=${1:-runs/classify_models}
out=${2:-runs/classify}
root=${REAL:-../shared/data/real}
epochs=${EPOCHS:-30}
for task in ${TASKS:-eegbci_eyes eegbci_mi myo_gestures}; do
    # these models were pretrained on every subject (classify_models_cpu.sh): the transductive protocol
    biotok finetune classify --task "$task" --root "$root" --protocol transductive --tokenizer pretrained_models/tokenizer-small \
        --foundation "$models/foundation_tokens/final" --foundation_patches "$models/foundation_patches/final" \
        --seeds 0,1,2 --epochs "$epochs" --out "$out/$task" --progress false
done
