#!/usr/bin/env bash
# Issue 17's strict run on one lent H200 through the device tool, in phases, because the tree that travels
# is capped at 64 MiB per call and the machine is released after 30 s idle (chain the calls):
#
#   PHASE=data        carry .whl-dev (bash ../shared/tools/device-wheels.sh .whl-dev) and .devdata/gpu
#                     (tokens.tar.xz, codes.tar.xz from `MODE=data bash benchmarks/foundation_strict_gpu.sh`),
#                     every model folder stashed: installs the wheels and unpacks into /tmp/w
#   PHASE=start       pretrained_models/tokenizer-small travels (the code embeddings' start): copies the code
#                     to /tmp/w/repo (later calls replace the tree; the queue must not see that), pretrains
#                     both fold groups side by side (CODE_INIT; PRE_SECONDS each), then starts the classify
#                     queue in the background: QTASKS, QPOOLING, seeds one after another, QFRACTIONS
#   PHASE=profile     pretrained_models/tokenizer-small travels: issue 19's classify step profile, with fit
#                     timed eager and with --cuda_graphs on two fresh models ($OUT/classify_step_fit.json)
#   PHASE=wait        waits for the queue (at most BUDGET s) and packs /tmp/w/out into $OUT/results.tgz
#
# The thirteenth session's run (docs/BENCHMARKS.md, "Motor imagery without the confound"):
#   PHASE=data ...; PHASE=start PRE_SECONDS=330 ...; PHASE=wait BUDGET=540 ...; PHASE=wait BUDGET=300 ...
set -uo pipefail
W=/tmp/w
mkdir -p $W
[ -d /tmp/site ] || python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl-dev/*.whl
export PYTHONUNBUFFERED=1
case ${PHASE} in
data)
    tar -xJf .devdata/gpu/tokens.tar.xz -C $W && tar -xJf .devdata/gpu/codes.tar.xz -C $W
    du -sh $W/*
    nvidia-smi --query-gpu=name,memory.used --format=csv
    ;;
start)
    rm -rf $W/repo && mkdir -p $W/repo/pretrained_models
    cp -r benchmarks biotok core data_prep finetune foundation tokenizer pyproject.toml $W/repo/
    cp -r pretrained_models/tokenizer-small $W/repo/pretrained_models/
    cd $W/repo
    export PYTHONPATH=/tmp/site:$W/repo CODE_INIT=$W/repo/pretrained_models/tokenizer-small
    MODE=pretrain VARIANTS=tied GPU_A=0 GPU_B=0 MAX_SECONDS=${PRE_SECONDS:-330} \
        bash benchmarks/foundation_strict_gpu.sh $W/tokens $W/models $W/out/pretrain
    ls $W/models/tied/*
    # seed by seed, so that whatever finishes is whole; the three rows as three processes
    cat > $W/queue.sh <<Q
cd $W/repo
for seed in 0 1 2; do
    TASKS="${QTASKS:-eegbci_mi_mu_nofrontal}" POOLING=${QPOOLING:-spatial_power} SEEDS=\$seed \
        FRACTIONS="${QFRACTIONS:-1}" GPUS=0 JOBS=3 MODE=classify \
        ROWS="foundation (linear probe)|foundation (fine-tuned)|from scratch" \
        bash benchmarks/foundation_strict_gpu.sh $W/codes $W/models $W/out/classify
    date > $W/out/seed\$seed.done
done
touch $W/out/queue.done
Q
    nohup setsid bash $W/queue.sh > $W/out/queue.log 2>&1 < /dev/null &
    ;;
profile)
    PYTHONPATH=/tmp/site:$PWD python benchmarks/classify_step_profile.py --fit_epochs 30 --fit_cuda_graphs \
        --compile --compile_mode reduce-overhead --out "$OUT/classify_step_fit.json"
    ;;
wait)
    end=$((SECONDS + ${BUDGET:-500}))
    while [ ! -e $W/out/queue.done ] && [ $SECONDS -lt $end ]; do sleep 10; done
    ls $W/out
    tail -5 $W/out/queue.log
    tar -czf "$OUT/results.tgz" -C $W out
    ;;
*)
    echo "PHASE must be data, profile, start or wait" >&2
    exit 2
    ;;
esac
