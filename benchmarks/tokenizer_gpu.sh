#!/usr/bin/env bash
# The tokenizer's GPU session: prepare the real + synthetic corpora, time RVQ and encode against the
# peers, train the small tokenizer for a fixed time budget (bf16), then measure it on held-out subjects.
#
#   bash benchmarks/tokenizer_gpu.sh REAL_ROOT OUT [TRAIN_SECONDS]
#
# REAL_ROOT is a copy of shared/data/real; OUT receives results.tar.gz and the model's weights (split
# into 15 MB parts when large, for transfer). Needs vector-quantize-pytorch for the peer columns.
set -euo pipefail
real_root=$1
out=$2
budget=${3:-300}
size=${SIZE:-small}        # SIZE=tiny RVQ_SCALE=0.01 SPEED_BATCH=4 for a CPU smoke run of this script
rvq_scale=${RVQ_SCALE:-1}
speed_batch=${SPEED_BATCH:-256}
work=$(mktemp -d)
export PYTHONUNBUFFERED=1 TQDM_MININTERVAL=10
mkdir -p "$out" "$work/results"

python -m data_prep.prepare --sources shared_real --root "$real_root" --out "$work/corpora" --progress false
python -m data_prep.prepare --synthetic --root "$work/synthetic" --out "$work/corpora" --progress false
corpora=$(ls -d "$work"/corpora/*/)
weights='{"eegbci": 0.3, "eeg_synthetic": 0.1, "grabmyo": 0.1, "myo": 0.15, "emg_synthetic": 0.15, "ecg": 0.15, "ecg_synthetic": 0.05}'

python benchmarks/rvq_speed.py --scale "$rvq_scale" --out "$work/results/rvq_speed.json"
python benchmarks/tokenizer_speed.py --corpus "$work/corpora/eegbci" --sizes "$size" --batch "$speed_batch" \
    --out "$work/results/tokenizer_speed_random.json"

# calibrate: time 60 steps, then size the real run to the budget
train=(python -m tokenizer.train --corpora $corpora --weights "$weights" --size "$size" --batch_size 64
       --lr 1e-3 --mixed_precision bf16 --progress false)
"${train[@]}" --out "$work/calibrate" --steps 60 --log_every 20 --eval_every 1000 --save_every 1000
per_step=$(python -c "
import json, sys
rows = [json.loads(l) for l in open('$work/calibrate/log.jsonl') if 'seconds' in l]
print((rows[-1]['seconds'] - rows[0]['seconds']) / (rows[-1]['step'] - rows[0]['step']))")
steps=$(python -c "print(max(100, int($budget / $per_step / 100) * 100))")
echo "calibration: $per_step s/step -> $steps steps"
"${train[@]}" --out "$work/run" --steps "$steps" --warmup_steps 200 --log_every 50 \
    --eval_every $((steps / 5)) --eval_batches 8 --save_every "$steps"

python benchmarks/tokenizer_quality.py --run "$work/run" --out "$work/results"
python benchmarks/tokenizer_speed.py --model "$work/run/final" --corpus "$work/corpora/eegbci" --sizes "" --batch "$speed_batch" \
    --out "$work/results/tokenizer_speed_trained.json"

cp "$work/run/log.jsonl" "$work/run/train_args.json" "$work/run/final/config.json" "$work/results/"
tar -czf "$out/results.tar.gz" -C "$work" results
split -b 15M "$work/run/final/model.safetensors" "$out/model.safetensors.part-"
ls -la "$out"
