#!/usr/bin/env bash
# The shipped CTC starting point of the main job, pretrained_models/ctc-128x2-synthetic, on a 2-core CPU
# (about 30 minutes): synthetic standard-tier sessions (8 users x 4 sessions x 120 s; user 0 held out),
# a 128 x 2 sEMG transformer without dropout (on a CPU attention dropout costs 5x the step), 1,500 steps
# of batch 16, then the model folder and its card (held-out user's whole-session CER).
#
#   bash benchmarks/ctc_cpu_model.sh [WORK] [MODEL_FOLDER]
set -euo pipefail
work=${1:-runs/ctc_cpu}
model=${2:-pretrained_models/ctc-128x2-synthetic}
python - <<PY
from data_prep.synthetic import SyntheticConfig, write_default_dataset
config = SyntheticConfig(eeg_subjects=0, ecg_records=0, emg_users=8, emg_sessions=4, emg_session_s=120)
write_default_dataset("$work/data", config, progress=False)
PY
OMP_NUM_THREADS=${OMP_NUM_THREADS:-2} python -m finetune.emg2qwerty --data "$work/data/emg2qwerty" --model 128x2 \
    --dropout 0.0 --steps 1500 --lr 1.5e-3 --warmup_steps 100 --batch_size 16 --log_every 25 \
    --eval_every 250 --save_every 250 --beam 8 --out "$work/run" --progress false
python -m finetune.ctc_card --run "$work/run" --out "$model" \
    --data "synthetic standard tier, 8 users x 4 sessions x 120 s"
