#!/usr/bin/env bash
# One report of how resnet-wgpu runs on this machine's GPU, made by one command:
#   adapter and features (`info`), every conv kernel candidate timed and the
#   choice cached (`bench tune`), per-op rates against our GEMM (`bench ops`),
#   ResNet-20 and -56 training at batch 128 in f32 and mixed precision (f16)
#   with effective GFLOP/s and the chosen kernels (`bench train --precision
#   f32,f16 --profile`), and, where python3 has PyTorch, PyTorch eager's
#   images/s for the same models and batch on the same device in f32 and in
#   AMP, side by side with ours (f32 and f16 respectively) as ratios.
#
#   scripts/gpu-check.sh [BINARY] [REPORT]
#
# BINARY defaults to target/release/resnet-wgpu (built if missing), REPORT to
# gpu-report.txt. Runs anywhere (lavapipe too); each part that fails is noted
# in the report and the rest still runs.
set -uo pipefail
cd "$(dirname "$0")/.."
BIN=${1:-target/release/resnet-wgpu}
REPORT=${2:-gpu-report.txt}
MODELS=${MODELS:-resnet20,resnet56}
BATCH=${BATCH:-128}
STEPS=${STEPS:-30}

if [ ! -x "$BIN" ]; then
    cargo build --release --locked || exit 1
fi
# The tuning this report measures goes to a cache of its own, so the report
# shows measured choices, not ones left by an earlier run.
export RESNET_WGPU_CACHE_DIR=${RESNET_WGPU_CACHE_DIR:-$(mktemp -d)}

section() { printf '\n== %s\n' "$*"; }
step() {
    section "$*"
    "$@" 2>&1 || echo "(failed with exit code $?)"
}

{
    section "machine"
    date -u
    uname -srm
    command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
    step "$BIN" info --model resnet20 --batch-size "$BATCH"
    step "$BIN" bench tune --models "$MODELS" --batch-size "$BATCH"
    step "$BIN" bench ops --batch "$BATCH"
    section "$BIN bench train --models $MODELS --batch-size $BATCH --steps $STEPS --precision f32,f16 --profile"
    train=$("$BIN" bench train --models "$MODELS" --batch-size "$BATCH" --steps "$STEPS" \
        --precision f32,f16 --profile 2>&1)
    echo "$train"
    # "resnet20 f32 ... images/s ..." rows -> resnet20=images_per_sec,... per precision
    rate() {
        echo "$train" | awk -v p="$1" \
            '$1 ~ /^resnet[0-9]+$/ && $2 == p && NF >= 9 { printf "%s%s=%s", sep, $1, $6; sep="," }'
    }
    if python3 -c "import torch" 2>/dev/null; then
        step python3 scripts/torch_bench.py --models "$MODELS" --batch-size "$BATCH" --ours "$(rate f32)"
        step python3 scripts/torch_bench.py --models "$MODELS" --batch-size "$BATCH" --amp --ours "$(rate f16)"
    else
        section "pytorch: not installed here (python3 -c 'import torch' failed); no ratio"
    fi
} | tee "$REPORT"
echo "report: $REPORT"
