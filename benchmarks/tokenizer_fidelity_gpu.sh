#!/usr/bin/env bash
# The tokenizer-fidelity GPU session (issue 16), in two calls of the lent H200:
#
#   MODE=ablation bash benchmarks/tokenizer_fidelity_gpu.sh PACK OUT   # every variant side by side
#   MODE=final    bash benchmarks/tokenizer_fidelity_gpu.sh PACK OUT   # the shipped tokenizer-small
#
# PACK is `biotok pack` of the prepared real corpora (the lent machine takes 64 MiB a call, so the data
# travels packed: 230 MiB of float32 windows -> 36 MiB, quantised 40 dB under each row's power):
#   biotok prepare --sources shared_real --root ../shared/data/real --out corpora/real
#   biotok prepare --sources eegbci_more --root ../shared/data/real --out corpora/real
#   biotok pack --corpora corpora/real/{eegbci,eegbci_more,grabmyo,myo,ecg} --out .devdata/real.biotok-pack
# The wheels that make biotok importable there are in WHEELS (default .whl; ../shared/tools/device-wheels.sh).
# OUT receives the logs, the measurements and, for MODE=final, the model (config.json + safetensors).
set -euo pipefail
pack=$1
out=$2
mode=${MODE:-ablation}
steps=${STEPS:-2000}
work=$(mktemp -d)
export PYTHONUNBUFFERED=1
mkdir -p "$out"
python -m biotok.cli unpack --pack "$pack" --out "$work/corpora" --progress false

if [ "$mode" = ablation ]; then
    python benchmarks/tokenizer_fidelity.py --corpora "$work/corpora" --out "$work/ablation" --steps "$steps" \
        --max_seconds "${MAX_SECONDS:-0}" ${VARIANTS:+--variants "$VARIANTS"} | tee "$out/ablation.txt" || true
    cp "$work/ablation/fidelity.json" "$out/" || true
    tar -czf "$out/ablation_logs.tar.gz" -C "$work/ablation" $(cd "$work/ablation" && ls -d */log.jsonl *.log)
    exit 0
fi

# final: the shipped recipe; OVERRIDES are TokenizerConfig fields over the small size, EXTRA more
# arguments of tokenizer.train (e.g. EXTRA=--augment_leads)
c=$work/corpora
python -m tokenizer.train --corpora "$c/eegbci" "$c/eegbci_more" "$c/grabmyo" "$c/myo" "$c/ecg" \
    --holdout_subjects '{"eegbci_more": ["013", "014"]}' \
    --weights '{"eegbci": 0.2, "eegbci_more": 0.3, "grabmyo": 0.1, "myo": 0.2, "ecg": 0.2}' \
    --size small --overrides "${OVERRIDES:-"{}"}" --steps "$steps" --batch_size "${BATCH:-128}" --lr "${LR:-1.5e-3}" \
    --warmup_steps 200 --log_every 100 --eval_every $((steps / 4)) --eval_batches 8 --save_every "$steps" \
    --mixed_precision bf16 --max_seconds "${MAX_SECONDS:-0}" --progress false --out "$work/run" ${EXTRA:-}
# the lent machine returns at most 8 files of 16 MiB: the weights come back in parts
# (cat model.safetensors.part-* > model.safetensors)
cp "$work/run/log.jsonl" "$work/run/train_args.json" "$work/run/final/config.json" "$out/"
split -b 15M "$work/run/final/model.safetensors" "$out/model.safetensors.part-"
if [ -n "${RD:-}" ]; then  # the DCT searches take minutes: usually run on a CPU afterwards
    python -m tokenizer.rd --tokenizer "$work/run/final" --corpora "$c/eegbci_more" "$c/eegbci" "$c/myo" "$c/ecg" \
        --subjects '{"eegbci_more":["013","014"],"eegbci":["001"],"myo":["Male1"],"ecg":["ptbdb/s0010_re"]}' \
        --device cuda --out "$work/rd" | tee "$out/rd.txt" || true
fi
if [ -z "${NO_SPEED:-}" ]; then
    python benchmarks/tokenizer_speed.py --model "$work/run/final" --corpus "$c/eegbci" --sizes "" \
        --batch "${SPEED_BATCH:-256}" --out "$out/tokenizer_speed_trained.json"
fi
