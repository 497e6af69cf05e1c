#!/usr/bin/env bash
# One report of how resnet-wgpu runs on this machine's GPU, made by one command
# within a lent GPU's few minutes:
#   the Vulkan loader's driver files and the adapter wgpu picked, refused when
#   it is a CPU and a GPU is expected (--expect-gpu, or one is visible to
#   nvidia-smi or lspci); every conv kernel candidate timed and the choice
#   cached (`bench tune`); per-op rates against our GEMM (`bench ops`);
#   ResNet-20 and -56 training at batch 128, f32 and mixed precision (f16) in
#   separate runs, each row printed as measured (`bench train --profile`);
#   and, where python3 has PyTorch, PyTorch eager's images/s for the same
#   models and batch in three labelled modes (strict f32, TF32, AMP), ours
#   beside them as ratios (our f32 against strict f32 and TF32, our f16
#   against AMP).
#
#   scripts/gpu-check.sh [--expect-gpu] [--quick] [BINARY] [REPORT]
#
# BINARY defaults to target/release/resnet-wgpu (built if missing), REPORT to
# gpu-report.txt. Every step has a timeout and its exit code is noted; a step
# that fails or times out is noted, the rest still run, and the script exits
# 1 after the report (3 when the adapter is refused or missing). The timeouts add up
# to 8 minutes (3 with --quick, which measures ResNet-20 only and skips
# `bench ops`), so one call on a device with a 10-minute limit always returns
# a report.
set -uo pipefail
cd "$(dirname "$0")/.."

EXPECT_GPU=0
QUICK=0
while [ $# -gt 0 ]; do
    case "$1" in
        --expect-gpu) EXPECT_GPU=1 ;;
        --quick) QUICK=1 ;;
        -h|--help) sed -n '2,22p' "$0"; exit 0 ;;
        -*) echo "gpu-check: unknown option $1" >&2; exit 2 ;;
        *) break ;;
    esac
    shift
done
BIN=${1:-target/release/resnet-wgpu}
REPORT=${2:-gpu-report.txt}
BATCH=${BATCH:-128}
if [ "$QUICK" = 1 ]; then
    MODELS=${MODELS:-resnet20}
    STEPS=${STEPS:-10}
    # seconds: info, tune, ops (0: skipped), train per precision, pytorch
    LIMITS=(20 30 0 35 60)
else
    MODELS=${MODELS:-resnet20,resnet56}
    STEPS=${STEPS:-30}
    LIMITS=(30 90 60 90 120)
fi

if [ ! -x "$BIN" ]; then
    cargo build --release --locked || exit 1
fi
# The tuning this report measures goes to a cache of its own, so the report
# shows measured choices, not ones left by an earlier run.
export RESNET_WGPU_CACHE_DIR=${RESNET_WGPU_CACHE_DIR:-$(mktemp -d)}

section() { printf '\n== %s\n' "$*"; }
# Steps that failed or timed out, one per line (steps may run in subshells).
FAILED=$(mktemp)
# step SECONDS COMMAND...: runs it with a timeout, says how it ended.
step() {
    local limit=$1
    shift
    section "$* (timeout ${limit} s)"
    timeout --kill-after=10 "$limit" "$@" 2>&1
    local code=$?
    case $code in
        0) ;;
        124|137) echo "(timed out after $limit s)"; echo "$* (timed out)" >> "$FAILED" ;;
        *) echo "(failed with exit code $code)"; echo "$* (exit $code)" >> "$FAILED" ;;
    esac
    return $code
}

# A GPU this machine shows, in words (empty: none seen).
visible_gpu() {
    if command -v nvidia-smi >/dev/null && nvidia-smi -L 2>/dev/null | grep -q '^GPU'; then
        nvidia-smi -L | head -n 1
    elif command -v lspci >/dev/null; then
        lspci 2>/dev/null | grep -Ei 'vga|3d controller|display' |
            grep -Ei 'nvidia|advanced micro devices|amd/ati|intel.*(arc|iris)' | head -n 1
    fi
}

driver_files() {
    echo "VK_DRIVER_FILES=${VK_DRIVER_FILES:-} VK_ICD_FILENAMES=${VK_ICD_FILENAMES:-}"
    local dir
    for dir in /usr/share/vulkan/icd.d /etc/vulkan/icd.d /usr/local/share/vulkan/icd.d; do
        [ -d "$dir" ] && ls -1 "$dir"/*.json 2>/dev/null
    done
}

{
    section "machine"
    date -u
    uname -srm
    command -v nvidia-smi >/dev/null &&
        nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
    section "Vulkan loader driver files"
    driver_files

    gpu=$(visible_gpu)
    [ -n "$gpu" ] && EXPECT_GPU=1
    section "adapter"
    info=$(timeout --kill-after=5 "${LIMITS[0]}" "$BIN" --tune off info --model resnet8 \
        --batch-size 2 2>&1)
    code=$?
    adapter=$(echo "$info" | grep -m1 '^adapter: ' | sed 's/^adapter: //')
    if [ -z "$adapter" ]; then
        echo "$info"
        echo "error: no adapter (info exited with $code); nothing was measured"
        exit 3
    fi
    echo "measured adapter: $adapter"
    if [ "$EXPECT_GPU" = 1 ] && echo "$adapter" | grep -q ', Cpu,'; then
        echo "error: wgpu picked a CPU adapter ($adapter) where a GPU is expected" \
            "(${gpu:---expect-gpu}); the Vulkan loader found no GPU driver: see the driver" \
            "files above (VK_DRIVER_FILES names a GPU's ICD json). Nothing was measured."
        exit 3
    fi

    step "${LIMITS[0]}" "$BIN" info --model resnet20 --batch-size "$BATCH"
    step "${LIMITS[1]}" "$BIN" bench tune --models "$MODELS" --batch-size "$BATCH" \
        --precision f32,f16
    if [ "${LIMITS[2]}" -gt 0 ]; then
        step "${LIMITS[2]}" "$BIN" bench ops --batch "$BATCH"
    fi
    # One run per precision: an f16 failure cannot take the f32 rows with it.
    # f16 runs twice where the adapter has cooperative matrices: on them (the
    # built-in choice there), and with them off (RESNET_WGPU_COOPERATIVE=off:
    # today's f16 kernels), so the report shows what the matrix units give.
    # If the run on them fails, the report says so and the f16 figures come
    # from the run without them.
    coop=$(echo "$info" | grep -m1 '^cooperative matrices: ')
    echo "$coop"
    declare -A rates
    runs="f32 f16"
    echo "$coop" | grep -q 'kernel coop available' && runs="f32 f16 f16-plain"
    for run in $runs; do
        precision=${run%-plain}
        off=""
        [ "$run" = f16-plain ] && off=off
        section "training at $run (RESNET_WGPU_COOPERATIVE=${off:-default})"
        train=$(RESNET_WGPU_COOPERATIVE=$off step "${LIMITS[3]}" "$BIN" --tune cached bench train \
            --models "$MODELS" --batch-size "$BATCH" --steps "$STEPS" --precision "$precision" --profile)
        code=$?
        echo "$train"
        if [ "$run" = f16 ] && [ "$code" != 0 ] && [ "$runs" != "f32 f16" ]; then
            echo "(f16 on cooperative matrices failed with exit code $code: falling back;" \
                "the f16 figures below are without them)"
            continue
        fi
        # "resnet20 f32 ... images/s ..." rows -> resnet20=images_per_sec,...
        rate=$(echo "$train" | awk -v p="$precision" \
            '$1 ~ /^resnet[0-9]+$/ && $2 == p && NF >= 9 { printf "%s%s=%s", sep, $1, $6; sep="," }')
        [ -z "${rates[$precision]:-}" ] && rates[$precision]=$rate
    done
    # The f16 golden step with the coop kernel forced in every conv pass, where
    # a test binary of tests/golden.rs is given (GOLDEN_TEST=path): a failure
    # is noted and the check goes on.
    if [ -n "${GOLDEN_TEST:-}" ] && [ "$runs" != "f32 f16" ]; then
        RESNET_WGPU_EXPECT_COOP=1 step 120 "$GOLDEN_TEST" --exact \
            resnet20_f16_step_on_gpu_kernels_matches_pytorch_f16_emulation
    fi
    if python3 -c "import torch" 2>/dev/null; then
        step "${LIMITS[4]}" python3 scripts/torch_bench.py --models "$MODELS" \
            --batch-size "$BATCH" --ours-f32 "${rates[f32]}" --ours-f16 "${rates[f16]}"
    else
        section "pytorch: not installed here (python3 -c 'import torch' failed); no ratio"
    fi
    section "done in $SECONDS s on $adapter"
    if [ -s "$FAILED" ]; then
        echo "steps that failed or timed out:"
        sed 's/^/  /' "$FAILED"
        exit 1
    fi
} 2>&1 | tee "$REPORT"
status=${PIPESTATUS[0]}
rm -f "$FAILED"
echo "report: $REPORT"
exit "$status"
