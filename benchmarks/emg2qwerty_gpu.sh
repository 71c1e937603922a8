#!/usr/bin/env bash
# The emg2qwerty stage's GPU session, in two calls (each under the device's 10-minute limit):
#
#   bash benchmarks/emg2qwerty_gpu.sh start OUT    # data, speed benchmark, foundation pretraining;
#                                                  # starts the CER table in the background (setsid)
#   bash benchmarks/emg2qwerty_gpu.sh finish OUT   # waits for the table (at most WAIT_S seconds),
#                                                  # packs the results so far; call again until done
#
# SPEED=0 skips the speed benchmark (it measures the models alone on the GPU, so it runs first).
# SEEDS (default 0,1,2), ROWS (comma-separated row names, default all) and RUNS (extra row@seed runs)
# split the table over sessions; a dependent row (distilled, personalized) reruns its dependency in the
# same session. PRETRAIN_STEPS=0 skips the foundation model and so the foundation-backed row;
# TARGET_LEVELS=2 makes it read (and the tokenizer encode) 2 RVQ levels instead of all 8.
# Data: synthetic emg2qwerty-format sessions (USERS x SESSIONS x SESSION_S; TIER=hard for the hard tier,
# data_prep.synthetic.make_hard_emg_session, e.g. USERS=16), generic split = user 0
# held out; the foundation model is pretrained on the training users' sessions only.
# EXTRA: flags for every run, e.g. "--decode_workers 4" (beam searches in 4 processes each).
# LARGE=true adds the LARGE transformer row (the hard tier's; ~50x TINY's compute per step).
# GPUS (e.g. 0,1) spreads the runs over several GPUs, each run on the least busy one.
# JOBS (default 7) runs train side by side on one GPU, which time-slices between processes (no MPS): 9 runs
# with beam + LM decoding on the hard tier finished none in a 440 s call (docs/BENCHMARKS.md, issue 18).
set -euo pipefail
phase=$1
out=$2
work=${WORK:-/tmp/emg2qwerty_gpu}
users=${USERS:-8}
sessions=${SESSIONS:-4}
session_s=${SESSION_S:-120}
steps=${STEPS:-1500}
pretrain_steps=${PRETRAIN_STEPS:-1500}
export PYTHONUNBUFFERED=1 TQDM_MININTERVAL=30
mkdir -p "$out" "$work/results"

if [ "$phase" = start ]; then
    python - <<EOF
from data_prep.synthetic import SyntheticConfig, write_default_dataset
config = SyntheticConfig(eeg_subjects=0, ecg_records=0, emg_users=$users, emg_sessions=$sessions,
                         emg_session_s=$session_s, emg_tier="${TIER:-standard}")
write_default_dataset("$work/data", config, progress=False)
EOF
    # the table's runs share the GPU; the speed benchmark runs first, alone
    if [ "${SPEED:-1}" != 0 ]; then
        python benchmarks/emg2qwerty_speed.py --out "$work/results/emg2qwerty_speed.json"
    fi
    foundation=""
    if [ "$pretrain_steps" != 0 ]; then
        # the foundation model sees only the training users' signals (no labels)
        cat > "$work/pretrain_sources.yaml" <<EOF
corpora:
  emg2qwerty_train:
    preset: emg
    sources:
      - path: "emg2qwerty/synthetic-0[1-9]-*.hdf5"
        reader: emg2qwerty
EOF
        python -m data_prep.prepare --sources "$work/pretrain_sources.yaml" --root "$work/data" \
            --out "$work/corpora" --progress false
        python -m foundation.tokens --tokenizer pretrained_models/tokenizer-small-v1 --corpora "$work/corpora" \
            --out "$work/tokens" --progress false
        python -m foundation.pretrain --tokens "$work/tokens" --size small --steps "$pretrain_steps" \
            --target_levels "${TARGET_LEVELS:-0}" \
            --batch_size 64 --lr 5e-4 --warmup_steps 100 --mixed_precision bf16 --eval_every "$pretrain_steps" \
            --eval_batches 8 --log_every 100 --save_every "$pretrain_steps" --out "$work/foundation" --progress false
        cp "$work/foundation/eval.jsonl" "$work/results/foundation_eval.jsonl"
        foundation="$work/foundation/final"
    fi
    # the background runs read a private copy of the code: the device re-syncs the working tree on
    # every call, and a process importing during a sync fails (it cost one run of the first session)
    rm -rf "$work/code" && mkdir -p "$work/code" && cp -r data_prep tokenizer foundation finetune core "$work/code/"
    # the shipped models may stay behind (the call's 64 MiB): only the foundation-backed row reads one
    if [ -d pretrained_models ]; then cp -r pretrained_models "$work/code/"; fi
    cd "$work/code"
    setsid nohup env PYTHONPATH="$work/code:${PYTHONPATH:-}" python -m finetune.emg2qwerty_table --data "$work/data/emg2qwerty" --out "$work/table" \
        --steps "$steps" --seeds "${SEEDS-0,1,2}" --rows "${ROWS:-}" --runs "${RUNS:-}" --foundation "$foundation" \
        --mixed_precision bf16 --jobs "${JOBS:-7}" --gpus "${GPUS:-}" --large "${LARGE:-false}" \
        --extra "${EXTRA:-}" > "$work/table.log" 2>&1 < /dev/null &
    sleep 5
    cat "$work/table.log"
    nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv
else
    deadline=$((SECONDS + ${WAIT_S:-540}))
    while [ ! -f "$work/table/table.md" ] && pgrep -f finetune.emg2qwerty_table > /dev/null \
        && [ $SECONDS -lt $deadline ]; do
        sleep 10
    done
    cat "$work/table.log"
    nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv
    cp "$work/table/table.md" "$work/table/table.json" "$work/results/" || true
    # every run's results and log, flat (the device returns at most 2 folder levels)
    for f in $(ls "$work"/table/*/seed*/results.json 2>/dev/null); do
        run=$(dirname "$f"); row=$(basename "$(dirname "$run")"); seed=$(basename "$run")
        cp "$f" "$work/results/res_${row}_${seed}.json"
        cp "$run/log.jsonl" "$work/results/log_${row}_${seed}.jsonl"
    done
    tar -czf "$out/results.tar.gz" -C "$work" results
    ls -la "$out"
fi
