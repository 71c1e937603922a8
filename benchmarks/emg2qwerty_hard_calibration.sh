#!/usr/bin/env bash
# The hard tier's calibration (issue 18, docs/BENCHMARKS.md "The hard tier calibrated on the GPU"): on one GPU,
# generic TINY x 3 seeds (test decodes with the LM at 0.5/0.5), each fine-tuned on user 0 (personalized, LM
# tuned), and the TDS-ConvNet once the TINY trainings have left the GPU; results packed into $OUT.
#   OUT=<folder> bash benchmarks/emg2qwerty_hard_calibration.sh   (with the project importable)
set -uo pipefail
start=$SECONDS
export OMP_NUM_THREADS=1 PYTHONUNBUFFERED=1
W=/tmp/hw; D=$W/data/emg2qwerty
python - <<PY
from data_prep.synthetic import SyntheticConfig, write_default_dataset
config = SyntheticConfig(eeg_subjects=0, ecg_records=0, emg_users=8, emg_sessions=4, emg_session_s=120, emg_tier="hard")
write_default_dataset("$W/data", config, progress=False)
PY
echo "data at $((SECONDS-start)) s"
common="--data $D --steps 1500 --batch_size 32 --mixed_precision bf16 --beam 50 --progress false"
for s in 0 1 2; do
  ( python -m finetune.emg2qwerty $common --model tiny --lm_tune false --decode_workers 5 --seed $s --out $W/TINY/seed$s > $W/tiny$s.log 2>&1
    echo "TINY $s done at $((SECONDS-start)) s"
    python -m finetune.emg2qwerty --data $D --split $D/splits/user0.yaml --init_from $W/TINY/seed$s/final --steps 300 \
      --warmup_steps 30 --lr 3e-4 --batch_size 32 --mixed_precision bf16 --beam 50 --progress false --decode_workers 4 \
      --seed $s --out $W/PERS/seed$s > $W/pers$s.log 2>&1
    echo "personalized $s done at $((SECONDS-start)) s" ) &
done
# the TDS-ConvNet once the TINY trainings have left the GPU (their logs reach step 1500)
for i in $(seq 1 60); do [ "$(grep -l '"step": 1500' $W/TINY/seed*/log.jsonl 2>/dev/null | wc -l)" = 3 ] && break; sleep 5; done
echo "TDS start at $((SECONDS-start)) s"
for s in 0 1 2; do
  ( timeout $((540 - (SECONDS-start))) python -m finetune.emg2qwerty $common --model tds --lm_tune false --decode_workers 2 \
      --seed $s --out $W/TDS/seed$s > $W/tds$s.log 2>&1; echo "TDS $s exit $? at $((SECONDS-start)) s" ) &
done
while [ $((SECONDS-start)) -lt 545 ] && pgrep -f finetune.emg2qwerty > /dev/null; do sleep 5; done
mkdir -p $W/results
for row in TINY PERS TDS; do for s in 0 1 2; do
  cp $W/$row/seed$s/results.json $W/results/res_${row}_$s.json 2>/dev/null
  cp $W/$row/seed$s/log.jsonl $W/results/log_${row}_$s.jsonl 2>/dev/null
done; done
cp $W/*.log $W/results/
tar -czf $OUT/results2.tar.gz -C $W results
for f in $W/*.log; do echo "== $f"; tail -3 $f; done
