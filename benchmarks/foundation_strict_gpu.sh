#!/usr/bin/env bash
# Issue 17's strict protocol on a lent 2-GPU machine: pretrain one foundation model per fold group (each
# without its group's subjects), then fine-tune every fold with the model that never saw its test subject.
#
#   MODE=pretrain bash benchmarks/foundation_strict_gpu.sh TOKENS MODELS OUT    # ~290 s, both GPUs
#   MODE=classify bash benchmarks/foundation_strict_gpu.sh CODES  MODELS OUT    # every task, both GPUs
#   MODE=ship     bash benchmarks/foundation_strict_gpu.sh TOKENS MODELS OUT    # the shipped foundation-small
#   MODE=data     bash benchmarks/foundation_strict_gpu.sh REAL WORK OUT        # on a CPU: TOKENS and CODES,
#                 packed as OUT/tokens.tar.xz (tokens/, 14 MB) and OUT/codes.tar.xz (codes/, 7 MB) to travel
#
# VARIANTS (default "names tied"; also "copy") picks the pretraining variants, INPUT_LEVELS the RVQ levels
# read as input (default: the 2 predicted; 8 reads every level, docs/BENCHMARKS.md "Do the tokens carry
# motor imagery?"), KEEP_RATIO BERT's unchanged share of the predicted positions (default 0), CODE_INIT a
# tokenizer folder (the tokens') whose codebook vectors start the code embeddings of the pretrained models
# and of the from-scratch row (docs/BENCHMARKS.md, "Which linear view of the codes carries left/right?"),
# GPU_A / GPU_B (default 0 / 1) the GPU of each fold group. MODE=classify: TASKS, SEEDS
# (default "0 1 2"), FRACTIONS of the labels (default "0.1 0.3 1"), POOLING (mean), ROWS (row groups split
# by '|', one process each; default the three neural rows in one), GPUS ("0 1"), JOBS in flight (12),
# TIMEOUT per process (0: none), CUDA_GRAPHS (non-empty: `--cuda_graphs`), PROBE_FIRST (non-empty:
# `--probe_first`, LP-FT), CSP_INIT (non-empty: `--csp_init`), LAYER_DECAY / LR / TRAIN_BLOCKS /
# VAL_SUBJECTS / N_BLOCKS (`--layer_decay` /
# `--lr` / `--train_blocks` / `--val_subjects` / `--n_blocks`; classify's defaults if unset);
# SEEDS="0,1,2" (commas) runs the
# seeds one after another in one process: a GPU time-slices between processes (no MPS), so more than one or
# two fine-tunings per GPU crawl (motor imagery's 11 folds never finished at 6-18 per GPU); writes
# OUT/<task>-<pooling> (results.json, table.md, label_efficiency.png) from the parts in OUT/parts.
# MODE=ship holds out the subjects the shipped tokenizer held out (its card measures both on them) and
# trains for STEPS (default 7000) or MAX_SECONDS on GPU_SHIP (default 0).
#
# TOKENS: `biotok tokenize --tokenizer pretrained_models/tokenizer-small` of the prepared corpora (24 MB).
# CODES: one `--codes_file` per task, made on a CPU (MODE=data makes both; this also gives the classical rows):
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
        --input_levels "${INPUT_LEVELS:-0}" --keep_ratio "${KEEP_RATIO:-0}" --code_init_tokenizer "${CODE_INIT:-}" --holdout_subjects "$3" --overrides "$4" --steps "$5" --batch_size 64 --lr 5e-4 \
        --warmup_steps 200 --mixed_precision bf16 --eval_every "$7" --eval_batches 8 --log_every 100 \
        --save_every "$5" --max_seconds "$6" --out "$models/$2" --progress false > "$out/${2//\//_}.log" 2>&1
}
if [ "${MODE:-pretrain}" = data ]; then  # $1 = the shared real recordings, $2 = a work folder
    tokenizer=${TOKENIZER:-pretrained_models/tokenizer-small}
    biotok prepare --sources shared_real --root "$in" --out "$models/corpora" --no_progress
    biotok prepare --sources eegbci_more --root "$in" --out "$models/corpora" --no_progress
    biotok prepare --sources synthetic --synthetic --root "$models/synthetic" --out "$models/corpora" \
        --corpora eeg_synthetic ecg_synthetic --no_progress
    biotok tokenize --tokenizer "$tokenizer" --corpora "$models"/corpora/* --out "$models/tokens" --device cpu \
        --no_progress
    for task in ${TASKS:-eegbci_mi eegbci_eyes myo_armband_gestures}; do
        # a neural row without --foundation is skipped, so this only writes the codes file (and the table
        # of nothing); the classical rows come from the same command with --rows classical
        biotok finetune classify --task "$task" --root "$in" --tokenizer "$tokenizer" \
            --codes_file "$models/codes/$task.safetensors" --rows "foundation (fine-tuned)" --seeds 0 \
            --out "$models/codes_only/$task" --no_progress > "$out/codes_$task.log"
    done
    tar -cJf "$out/tokens.tar.xz" -C "$models" tokens
    tar -cJf "$out/codes.tar.xz" -C "$models" codes
    ls -la "$out"
    exit 0
fi
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
            # frozen code embeddings + the scalp/time attention bias (docs/BENCHMARKS.md, issue 17)
            copy) overrides='{"position_embed": true, "tie_heads": true, "frozen_code_embed": true, "spatial_bias": true}' ;;
            *) echo "unknown variant $variant" >&2; exit 2 ;;
        esac
        pre "${GPU_A:-0}" "$variant/a" "$A" "$overrides" "${STEPS:-3000}" "${MAX_SECONDS:-370}" 1500 &
        pre "${GPU_B:-1}" "$variant/b" "$B" "$overrides" "${STEPS:-3000}" "${MAX_SECONDS:-370}" 1500 &
    done
    wait
    exit 0
fi
# classify: one process per (task, seed, label fraction), JOBS at a time over the GPUs in GPUS, then one
# table per task (`--merge`): a GPU runs several small fine-tunings side by side (each is bound by the host),
# and one seed's 11 folds x 3 fractions in one process did not fit a 600 s call
mkdir -p "$out/parts"
job=0
gpus=(${GPUS:-0 1})
IFS='|' read -ra groups <<< "${ROWS:-foundation (linear probe),foundation (fine-tuned),from scratch}"
for task in ${TASKS:-eegbci_mi eegbci_eyes myo_armband_gestures}; do
    for seed in ${SEEDS:-0 1 2}; do
        for fraction in ${FRACTIONS:-0.1 0.3 1}; do
            for g in "${!groups[@]}"; do  # ROWS: row groups split by '|', one process each
                gpu=${gpus[$((job % ${#gpus[@]}))]}
                name="$task-${POOLING:-mean}-s${seed//,/_}-f$fraction-r$g"
                CUDA_VISIBLE_DEVICES=$gpu timeout "${TIMEOUT:-0}" python -m finetune.classify --task "$task" \
                    --codes_file "$in/$task.safetensors" --foundation "$models/${VARIANT:-tied}" \
                    --rows "${groups[$g]}" --seeds "$seed" --pooling "${POOLING:-mean}" \
                    --label_fractions "$fraction" --epochs 30 --mixed_precision bf16 \
                    --scratch_code_init "${CODE_INIT:-}" ${CUDA_GRAPHS:+--cuda_graphs} ${PROBE_FIRST:+--probe_first} \
                    ${CSP_INIT:+--csp_init} \
                    ${LAYER_DECAY:+--layer_decay "$LAYER_DECAY"} ${LR:+--lr "$LR"} \
                    ${TRAIN_BLOCKS:+--train_blocks "$TRAIN_BLOCKS"} \
                    ${VAL_SUBJECTS:+--val_subjects "$VAL_SUBJECTS"} ${N_BLOCKS:+--n_blocks "$N_BLOCKS"} \
                    --out "$out/parts/$name" --progress false > "$out/parts/$name.log" 2>&1 &
                job=$((job + 1))
                while [ "$(jobs -rp | wc -l)" -ge "${JOBS:-12}" ]; do sleep 1; done
            done
        done
    done
done
wait
for task in ${TASKS:-eegbci_mi eegbci_eyes myo_armband_gestures}; do
    # the parts that finished (one cut by TIMEOUT has no results.json; its log says so)
    parts=$(ls "$out/parts/$task-${POOLING:-mean}-"*/results.json 2>/dev/null | xargs -r -n1 dirname | paste -sd, -)
    [ -n "$parts" ] && python -m finetune.classify --merge "$parts" --out "$out/$task-${POOLING:-mean}" --progress false
done
