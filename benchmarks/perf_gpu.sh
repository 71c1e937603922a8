#!/usr/bin/env bash
# The performance issue's GPU session: each figure beside its peer in one run, on one GPU.
#
#   bash benchmarks/perf_gpu.sh REAL_ROOT OUT
#
# REAL_ROOT is a copy of shared/data/real (for the real-latent exactness check and the tokenizer's
# encode speed on real EEG), or a folder of prepared corpora eegbci/, myo/, grabmyo/ (e.g. `biotok unpack` of
# a `biotok pack`: the device takes 64 MiB a call). TOKENIZER_V1 (default pretrained_models/tokenizer-small-v1):
# the tokenizer of the foundation-backed step. The peer RVQ (vector-quantize-pytorch and its dependencies) is installed
# from the wheels in PEER_WHEELS (default .whl-peer) for this run only; it is never a biotok
# dependency. A benchmark that fails is reported and the others still run; OUT receives
# results.tar.gz and log.txt.
set -uo pipefail
real_root=$1
out=$2
work=$(mktemp -d)
export PYTHONUNBUFFERED=1
mkdir -p "$out" "$work/results"
failed=()

run() {  # name, command...: run one benchmark, keep going if it fails
    local name=$1
    shift
    echo "== $name"
    if ! "$@"; then
        failed+=("$name")
        echo "FAILED: $name"
    fi
}

peer=${PEER_WHEELS:-.whl-peer}
if ls "$peer"/*.whl > /dev/null 2>&1; then
    python -m pip install -q --no-index --no-deps --no-compile --target "$work/peer" "$peer"/*.whl
fi
run "rvq speed vs peer" env PYTHONPATH="$work/peer:${PYTHONPATH:-}" \
    python benchmarks/rvq_speed.py --out "$work/results/rvq_speed.json"
run "fused rvq sweep" python benchmarks/rvq_fused_sweep.py --out "$work/results/rvq_fused_sweep.json"
if [ -f "$real_root/eegbci/corpus.json" ]; then
    ln -s "$(cd "$real_root" && pwd)" "$work/corpora"
else
    run "prepare real" python -m data_prep.prepare --sources shared_real --root "$real_root" \
        --out "$work/corpora" --progress false
fi
run "rvq on real latents" python benchmarks/rvq_real_latents.py \
    --corpora "$work/corpora/eegbci" "$work/corpora/myo" "$work/corpora/grabmyo" \
    --out "$work/results/rvq_real_latents.json"
run "pretraining speed" python benchmarks/pretrain_speed.py --sizes small,base --compile \
    --out "$work/results/pretrain_speed.json"
run "emg2qwerty speed" python benchmarks/emg2qwerty_speed.py --out "$work/results/emg2qwerty_speed.json"
run "foundation-backed step" python benchmarks/foundation_backed_step.py --levels 2 \
    --tokenizer "${TOKENIZER_V1:-pretrained_models/tokenizer-small-v1}"
run "tokenizer encode speed" python benchmarks/tokenizer_speed.py --model pretrained_models/tokenizer-small \
    --corpus "$work/corpora/eegbci" --sizes "" --batch 256 --out "$work/results/tokenizer_speed.json"
tar -czf "$out/results.tar.gz" -C "$work" results
echo "failed: ${failed[*]:-none}"
