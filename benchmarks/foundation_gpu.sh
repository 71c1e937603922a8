#!/usr/bin/env bash
# The foundation stage's GPU session: tokenize the real + synthetic corpora with the shipped tokenizer,
# time pretraining (tokens/s, MFU) of the small and base sizes, then pretrain the small model and score
# it against the unigram baseline on held-out subjects. OUT receives results.tar.gz and the model
# (config.json, model.safetensors in 15 MB parts for transfer).
#
#   bash benchmarks/foundation_gpu.sh REAL_ROOT OUT [STEPS]
#
# The recipe of pretrained_models/foundation-small (no speed runs, 2 RVQ levels read and predicted):
#   SPEED_SIZES= TARGET_LEVELS=2 bash benchmarks/foundation_gpu.sh REAL_ROOT OUT 2000
set -euo pipefail
real_root=$1
out=$2
steps=${3:-3000}
size=${SIZE:-small}   # SIZE=tiny SPEED_SIZES=tiny for a CPU smoke run
speed_sizes=${SPEED_SIZES-small,base}
work=$(mktemp -d)
export PYTHONUNBUFFERED=1 TQDM_MININTERVAL=10
mkdir -p "$out" "$work/results"

python -m data_prep.prepare --sources "${SOURCES:-shared_real}" --root "$real_root" --out "$work/corpora" --progress false
python -m data_prep.prepare --synthetic --root "$work/synthetic" --out "$work/corpora" --progress false
python -m foundation.tokens --tokenizer "${TOKENIZER:-pretrained_models/tokenizer-small-v1}" --corpora "$work/corpora" \
    --out "$work/tokens" --progress false
if [ -n "$speed_sizes" ]; then
    python benchmarks/pretrain_speed.py --sizes "$speed_sizes" --out "$work/results/pretrain_speed.json"
fi

python -m foundation.pretrain --tokens "$work/tokens" --size "$size" --target_levels "${TARGET_LEVELS:-0}" --steps "$steps" --batch_size 64 \
    --lr 5e-4 --warmup_steps 200 --mixed_precision bf16 --eval_every $((steps / 5)) --eval_batches 8 \
    --log_every 50 --save_every "$steps" --out "$work/run" --progress false
cp "$work/run/log.jsonl" "$work/run/eval.jsonl" "$work/run/pretrain_args.json" "$work/results/"
cp "$work/run/final/config.json" "$work/results/foundation_config.json"
tar -czf "$out/results.tar.gz" -C "$work" results
cp "$work/run/final/config.json" "$out/"
split -b 15M "$work/run/final/model.safetensors" "$out/model.safetensors.part-"
ls -la "$out"
