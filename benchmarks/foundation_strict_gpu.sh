#!/usr/bin/env bash
# Issue 17's strict protocol on a lent 2-GPU machine: pretrain one foundation model per fold group (each
# without its group's subjects), then fine-tune every fold with the model that never saw its test subject.
#
#   MODE=pretrain bash benchmarks/foundation_strict_gpu.sh TOKENS MODELS OUT    # ~290 s, both GPUs
#   MODE=classify bash benchmarks/foundation_strict_gpu.sh CODES  MODELS OUT    # one task per GPU
#   MODE=ship     bash benchmarks/foundation_strict_gpu.sh TOKENS MODELS OUT    # the shipped foundation-small
#
# VARIANTS (default "names tied") picks the pretraining variants, GPU_A / GPU_B (default 0 / 1) the GPU of
# each fold group; GPU0_TASKS / GPU1_TASKS the classification tasks run one after another on each GPU.
# MODE=ship holds out the subjects the shipped tokenizer held out (its card measures both on them) and
# trains for STEPS (default 7000) or MAX_SECONDS on GPU_SHIP (default 0).
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
TIED='{"position_embed": true, "tie_heads": true}'
pre() {  # gpu run holdout overrides steps max_seconds eval_every: one pretraining into $models/<run>
    CUDA_VISIBLE_DEVICES=$1 python -m foundation.pretrain --tokens "$in"/* --size small --target_levels 2 \
        --holdout_subjects "$3" --overrides "$4" --steps "$5" --batch_size 64 --lr 5e-4 \
        --warmup_steps 200 --mixed_precision bf16 --eval_every "$7" --eval_batches 8 --log_every 100 \
        --save_every "$5" --max_seconds "$6" --out "$models/$2" --progress false > "$out/${2//\//_}.log" 2>&1
}
if [ "${MODE:-pretrain}" = ship ]; then
    SHIP='{"eegbci": ["001"], "eegbci_more": ["013", "014"], "myo": ["Male1"], "ecg": ["ptbdb/s0010_re"]}'
    pre "${GPU_SHIP:-0}" ship "$SHIP" "$TIED" "${STEPS:-7000}" "${MAX_SECONDS:-0}" "${STEPS:-7000}"
    exit 0
fi
if [ "${MODE:-pretrain}" = pretrain ]; then
    for variant in ${VARIANTS:-names tied}; do
        case $variant in
            names) overrides='{"position_embed": true}' ;;
            tied) overrides=$TIED ;;
            *) echo "unknown variant $variant" >&2; exit 2 ;;
        esac
        pre "${GPU_A:-0}" "$variant/a" "$A" "$overrides" "${STEPS:-3000}" "${MAX_SECONDS:-370}" 1500 &
        pre "${GPU_B:-1}" "$variant/b" "$B" "$overrides" "${STEPS:-3000}" "${MAX_SECONDS:-370}" 1500 &
    done
    wait
    exit 0
fi
cls() {  # gpu task seeds
    CUDA_VISIBLE_DEVICES=$1 python -m finetune.classify --task "$2" --codes_file "$in/$2.safetensors" \
        --foundation "$models/${VARIANT:-tied}" --rows "foundation (linear probe),foundation (fine-tuned),from scratch" \
        --seeds "$3" --pooling "${POOLING:-mean}" --label_fractions "${LABEL_FRACTIONS:-0.1,0.3,1}" --epochs 30 --mixed_precision bf16 --out "$out/$2-seeds${3//,/}" --progress false > "$out/$2-seeds${3//,/}.log" 2>&1
}
on_gpu() {  # gpu tasks...
    local gpu=$1
    shift
    for task in "$@"; do
        if [ "$task" = eegbci_mi ]; then cls "$gpu" "$task" "${MI_SEEDS:-0,1,2}"; else cls "$gpu" "$task" 0,1,2; fi
    done
}
on_gpu 0 ${GPU0_TASKS-eegbci_mi} &
on_gpu 1 ${GPU1_TASKS-eegbci_eyes myo_armband_gestures} &
wait
