#!/usr/bin/env bash
# Smoke test of the real desktop window: runs the binary under Xvfb for a short
# fixed run (24 steps of ResNet-8), takes a screenshot of the screen once the
# run has finished and checks that it is not blank. Leaves the PNG and the
# window's log in ci-artifacts/ (or $1).
#
# Needs: Xvfb and ImageMagick (apt-get install xvfb imagemagick), a Vulkan
# adapter (lavapipe: mesa-vulkan-drivers), and a built binary ($BIN).
set -euo pipefail
cd "$(dirname "$0")/.."

BIN=${BIN:-target/debug/resnet-wgpu}
OUT=${1:-ci-artifacts}
mkdir -p "$OUT"
SHOT="$OUT/desktop-smoke.png"
LOG="$OUT/desktop-smoke.log"
RUNS=$(mktemp -d)
rm -f "$SHOT"

# A display number nobody uses.
n=90
while [ -e "/tmp/.X11-unix/X$n" ] || [ -e "/tmp/.X$n-lock" ]; do n=$((n + 1)); done
DISPLAY_NAME=":$n"
Xvfb "$DISPLAY_NAME" -screen 0 1280x800x24 -nolisten tcp >"$OUT/xvfb.log" 2>&1 &
XVFB=$!
APP=
cleanup() {
    [ -n "$APP" ] && kill "$APP" 2>/dev/null || true
    kill "$XVFB" 2>/dev/null || true
    rm -rf "$RUNS"
}
trap cleanup EXIT
sleep 1

DISPLAY=$DISPLAY_NAME "$BIN" train --model resnet8 --batch-size 16 \
    --synthetic-train 256 --synthetic-test 64 --epochs 2 --max-steps 24 \
    --out "$RUNS" --name smoke >"$LOG" 2>&1 &
APP=$!

# The run is over when its final checkpoint (step 24) is written.
deadline=$((SECONDS + 300))
until [ "$(cat "$RUNS/smoke/checkpoints/last" 2>/dev/null)" = "step-00000024" ]; do
    if ! kill -0 "$APP" 2>/dev/null; then
        echo "desktop smoke: the window exited before the run finished; its log:" >&2
        cat "$LOG" >&2
        exit 1
    fi
    if [ "$SECONDS" -ge "$deadline" ]; then
        echo "desktop smoke: no final checkpoint after 300 s; log:" >&2
        cat "$LOG" >&2
        exit 1
    fi
    sleep 1
done
if grep -q "no window" "$LOG"; then
    echo "desktop smoke: the binary trained in the terminal instead of the window:" >&2
    cat "$LOG" >&2
    exit 1
fi
sleep 3 # the frames after the last evaluation
DISPLAY=$DISPLAY_NAME import -window root "$SHOT"

# Not blank: many colours and real contrast (a black or one-colour screen has
# one colour and no deviation).
read -r colors deviation < <(convert "$SHOT" -format "%k %[fx:standard_deviation]\n" info:)
lines=$(wc -l <"$RUNS/smoke/metrics.jsonl")
echo "desktop smoke: $SHOT has $colors colours, standard deviation $deviation; metrics.jsonl has $lines lines"
if [ "$colors" -lt 200 ] || awk "BEGIN { exit !($deviation < 0.05) }"; then
    echo "desktop smoke: the screenshot looks blank" >&2
    exit 1
fi
if [ "$lines" -ne 2 ]; then
    echo "desktop smoke: expected 2 evaluations in metrics.jsonl, found $lines" >&2
    exit 1
fi
echo "desktop smoke: passed"
