#!/usr/bin/env bash
# Issue 17's strict run on one lent GPU through the device tool, in phases, because the tree that travels
# is capped at 64 MiB per call and the machine is released after 30 s idle (chain the calls in one batch):
#
#   PHASE=data        carry .whl-dev (bash ../shared/tools/device-wheels.sh .whl-dev) and .devdata/gpu
#                     (tokens.tar.xz, codes.tar.xz from `MODE=data bash benchmarks/foundation_strict_gpu.sh`),
#                     every model folder stashed: installs the wheels and unpacks into /tmp/w
#   PHASE=start       pretrained_models/tokenizer-small travels (the code embeddings' start): copies the code
#                     to /tmp/w/repo (later calls replace the tree; the queues must not see that), pretrains
#                     both fold groups side by side (CODE_INIT; PRE_SECONDS each; SHIP=1 also starts the
#                     shipped foundation-small's pretraining beside them in the background, MODE=ship for
#                     SHIP_STEPS, default 3000 as the fold groups), then starts the classify queue "main"
#   PHASE=queue       starts one more classify queue, QNAME, beside the others (its own settings, below)
#   PHASE=profile     pretrained_models/tokenizer-small travels: issue 19's classify step profile, with fit
#                     timed eager and with --cuda_graphs on two fresh models, and as --train_blocks 2 trains
#                     (the frozen blocks run once; $OUT/classify_step_fit.json)
#   PHASE=wait        waits for every queue and the ship run (at most BUDGET s) and packs /tmp/w/out into
#                     $OUT/results.tgz, and the shipped model, once saved, into $OUT/ship.tgz.part-aa, -ab
#   PHASE=stage       STAGE (a git-ignored folder named in carry) holds any of codes/, models/tied/{a,b}/ and
#                     repo/pretrained_models/tokenizer-small/: copies the code to /tmp/w/repo and STAGE's folders
#                     into /tmp/w, so that fold-group models made earlier (PHASE=models) run new queues without
#                     pretraining again; one call per folder where they would pass 64 MiB together
#   PHASE=models      packs the fold-group models (final/ and logs, not checkpoints) into $OUT/folds.tgz.part-*
#                     (15 MB parts, ~55 MB in all: its own call, as the returned files are capped at 64 MiB a
#                     call), so that CPU-bound readouts of them (the CSP probe's depth search) can run here
#
# A queue runs QSEEDS (default "0 1 2") one after another (whatever finishes is whole; queues of one seed
# each run the seeds side by side), QROWS (default the three neural rows, one process each, split by '|'), on
# QTASKS, QPOOLING, QFRACTIONS, with KEEP_RATIO's models and CUDA_GRAPHS, PROBE_FIRST, CSP_INIT, LAYER_DECAY,
# LR, TRAIN_BLOCKS, VAL_SUBJECTS, N_BLOCKS as foundation_strict_gpu.sh reads them, QTHREADS threads a process
# (default 2); it writes
# /tmp/w/out/classify-QNAME. The CSP probe (docs/BENCHMARKS.md, "Which layer carries motor imagery?"):
#   PHASE=queue QNAME=csp QROWS="foundation (CSP probe)" N_BLOCKS=-1 QFRACTIONS="1 0.3 0.1" QSEEDS=0
#
# The fifteenth session's run (docs/BENCHMARKS.md, "LP-FT"): PHASE=data; PHASE=start KEEP_RATIO=0.15 SHIP=1
#   PROBE_FIRST=1 CUDA_GRAPHS=1 QFRACTIONS="1 0.1"; PHASE=queue QNAME=ld03 LAYER_DECAY=0.3 ...; PHASE=wait.
set -uo pipefail
W=${W:-/tmp/w}  # a local dry run may point it elsewhere
mkdir -p $W
# WHEELS: the folder of wheels that travelled (.devdata/whl-slim, without datasets, serves the classify queues)
[ -d /tmp/site ] || python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site "${WHEELS:-.whl-dev}"/*.whl
export PYTHONUNBUFFERED=1
# the copied code, and the tokenizer whose codebooks start the code embeddings (phases start and queue)
export PYTHONPATH=/tmp/site:$W/repo CODE_INIT=$W/repo/pretrained_models/tokenizer-small
start_queue() {  # NAME: the seeds one after another in the background, under setsid so it outlives the call
    cat > $W/queue-$1.sh <<Q
cd $W/repo
# torch and BLAS threads per process: 15 processes with a thread per core each drove the host's load to 133
# on 16 cores in the eighteenth session (docs/BENCHMARKS.md, "Early stopping on held-out training subjects")
export OMP_NUM_THREADS=${QTHREADS:-2}
for seed in ${QSEEDS:-0 1 2}; do
    TASKS="${QTASKS:-eegbci_mi_mu_nofrontal}" POOLING=${QPOOLING:-spatial_power} SEEDS=\$seed \
        FRACTIONS="${QFRACTIONS:-1}" GPUS=0 JOBS=3 MODE=classify \
        ROWS="${QROWS:-foundation (linear probe)|foundation (fine-tuned)|from scratch}" \
        bash benchmarks/foundation_strict_gpu.sh $W/codes $W/models $W/out/classify-$1
    date > $W/out/$1-seed\$seed.done
done
touch $W/out/$1.done
Q
    touch $W/out/$1.started
    nohup setsid bash $W/queue-$1.sh > $W/out/queue-$1.log 2>&1 < /dev/null &
}
case ${PHASE} in
data)
    tar -xJf .devdata/gpu/tokens.tar.xz -C $W && tar -xJf .devdata/gpu/codes.tar.xz -C $W
    du -sh $W/*
    nvidia-smi --query-gpu=name,memory.used --format=csv
    ;;
start)
    rm -rf $W/repo && mkdir -p $W/repo/pretrained_models $W/out
    cp -r benchmarks biotok core data_prep finetune foundation tokenizer pyproject.toml $W/repo/
    cp -r pretrained_models/tokenizer-small $W/repo/pretrained_models/
    cd $W/repo
    if [ -n "${SHIP:-}" ]; then  # the shipped model's recipe (docs/FOUNDATION.md), beside the fold groups
        touch $W/out/ship.started
        nohup setsid bash -c "MODE=ship STEPS=${SHIP_STEPS:-3000} bash benchmarks/foundation_strict_gpu.sh \
            $W/tokens $W/models $W/out/ship; touch $W/out/ship.done" > $W/out/ship.log 2>&1 < /dev/null &
    fi
    MODE=pretrain VARIANTS=tied GPU_A=0 GPU_B=0 MAX_SECONDS=${PRE_SECONDS:-330} \
        bash benchmarks/foundation_strict_gpu.sh $W/tokens $W/models $W/out/pretrain
    ls $W/models/tied/*
    start_queue main
    ;;
stage)
    mkdir -p $W/repo $W/out
    cp -r benchmarks biotok core data_prep finetune foundation tokenizer pyproject.toml $W/repo/
    cp -r "$STAGE"/. $W/
    find $W -maxdepth 4 -name '*.safetensors' | sort
    ;;
queue)
    cd $W/repo
    start_queue "$QNAME"
    ;;
models)
    tar -czf - -C $W/models --exclude=checkpoints tied | split -b 15M - "$OUT/folds.tgz.part-"
    ls -la "$OUT"
    ;;
profile)
    PYTHONPATH=/tmp/site:$PWD python benchmarks/classify_step_profile.py --fit_epochs 30 --fit_cuda_graphs \
        --fit_train_blocks 2 \
        --compile --compile_mode reduce-overhead --out "$OUT/classify_step_fit.json"
    ;;
wait)
    end=$((SECONDS + ${BUDGET:-500}))
    busy() {  # a queue or the ship run started and not done
        for started in $W/out/*.started; do
            [ ! -e "$started" ] || [ -e "${started%.started}.done" ] || return 0
        done
        return 1
    }
    while busy && [ $SECONDS -lt $end ]; do sleep 10; done
    ls $W/out
    tail -n 3 $W/out/*.log
    tar -czf "$OUT/results.tgz" -C $W out
    # the shipped model's whole run (final/, pretrain_args.json, log.jsonl, eval.jsonl; not its checkpoints):
    # 30 MB of weights against 16 MiB a returned file
    if [ -e $W/models/ship/final/model.safetensors ]; then
        tar -czf - -C $W/models --exclude=checkpoints ship | split -b 15M - "$OUT/ship.tgz.part-"
    fi
    ls -la "$OUT"
    ;;
*)
    echo "PHASE must be data, profile, start, stage, queue, wait or models" >&2
    exit 2
    ;;
esac
