#!/usr/bin/env bash
# Issue 17's strict protocol on a lent 2-GPU machine: pretrain one foundation model per fold group (each
# without its group's subjects), then fine-tune every fold with the model that never saw its test subject.
#
#   MODE=pretrain bash benchmarks/foundation_strict_gpu.sh TOKENS MODELS OUT    # ~290 s, both GPUs
#   MODE=classify bash benchmarks/foundation_strict_gpu.sh CODES  MODELS OUT    # one task per GPU
#
# TOKENS: `biotok tokenize --tokenizer pretrained_models/tokenizer-small` of the prepared corpora (24 MB).
# CODES: one `--codes_file` per task, made on a CPU (it also gives the classical rows):
#   biotok finetune classify --task T --root ../shared/data/real --tokenizer pretrained_models/tokenizer-small \
#       --codes_file CODES/T.safetensors --rows classical --seeds 0,1,2 --out runs/classical/T
# MODELS is a git-ignored folder of the project: the lent machine keeps it between two calls made while it
# is warm, so the models (36 MB each) need not travel back and forth.
set -euo pipefail
in=$1
models=$2
out=$3
mkdir -p "$out"
export PYTHONUNBUFFERED=1
A='{"eegbci": ["001", "003"], "eegbci_more": ["008", "010", "012", "014"], "myo": ["Female0", "Male1"], "ecg": ["ptbdb/s0010_re"]}'
B='{"eegbci": ["002"], "eegbci_more": ["007", "009", "011", "013"], "myo": ["Female1", "Male0"], "ecg": ["ptbdb/s0010_re"]}'
if [ "${MODE:-pretrain}" = pretrain ]; then
    pre() {  # gpu variant group holdout overrides
        CUDA_VISIBLE_DEVICES=$1 python -m foundation.pretrain --tokens "$in"/* --size small --target_levels 2 \
            --holdout_subjects "$4" --overrides "$5" --steps "${STEPS:-3000}" --batch_size 64 --lr 5e-4 \
            --warmup_steps 200 --mixed_precision bf16 --eval_every 1500 --eval_batches 8 --log_every 100 \
            --save_every "${STEPS:-3000}" --max_seconds "${MAX_SECONDS:-370}" --out "$models/$2/$3" --progress false \
            > "$out/$2_$3.log" 2>&1
    }
    pre 0 names a "$A" '{"position_embed": true}' &
    pre 0 tied a "$A" '{"position_embed": true, "tie_heads": true}' &
    pre 1 names b "$B" '{"position_embed": true}' &
    pre 1 tied b "$B" '{"position_embed": true, "tie_heads": true}' &
    wait
    exit 0
fi
cls() {  # gpu task seeds
    CUDA_VISIBLE_DEVICES=$1 python -m finetune.classify --task "$2" --codes_file "$in/$2.safetensors" \
        --foundation "$models/${VARIANT:-tied}" --rows "foundation (linear probe),foundation (fine-tuned),from scratch" \
        --seeds "$3" --pooling "${POOLING:-mean}" --label_fractions "${LABEL_FRACTIONS:-0.1,0.3,1}" --epochs 30 --mixed_precision bf16 --out "$out/$2" --progress false > "$out/$2.log" 2>&1
}
cls 0 eegbci_mi "${MI_SEEDS:-0,1,2}" &
(cls 1 eegbci_eyes 0,1,2; cls 1 myo_armband_gestures 0,1,2) &
wait
