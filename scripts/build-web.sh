#!/usr/bin/env bash
# Builds the browser demo into a static site: the crate for wasm32, then
# wasm-bindgen (installed at exactly the version in Cargo.lock), then
# assets/index.html. Usage: scripts/build-web.sh [out-dir, default dist]
# Serve the folder over HTTP (file:// cannot load wasm modules), e.g.
#   python3 -m http.server -d dist 8080   and open http://localhost:8080
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-dist}

version=$(awk '$0 == "name = \"wasm-bindgen\"" { getline; gsub(/"/, "", $3); print $3 }' Cargo.lock)
if [ -z "$version" ]; then
    echo "build-web: Cargo.lock has no wasm-bindgen entry" >&2
    exit 1
fi
if [ "$(wasm-bindgen --version 2>/dev/null | awk '{ print $2 }')" != "$version" ]; then
    echo "== installing wasm-bindgen-cli $version (the version in Cargo.lock)"
    # --force: a partial earlier install must not count as installed.
    cargo install --force wasm-bindgen-cli --version "$version"
fi
rustup target add wasm32-unknown-unknown >/dev/null

# Compute needs WebGPU; wgpu's WebGL backend would only add size (and egui-wgpu's
# default features would pull it in).
if cargo tree --locked --target wasm32-unknown-unknown -e features 2>/dev/null | grep -q 'feature "webgl"'; then
    echo "build-web: wgpu's webgl feature is enabled for wasm32; it must not be" >&2
    exit 1
fi

echo "== cargo build (wasm32, release, optimized for size)"
# Size over speed: the GPU does the numeric work; the wasm is UI and bookkeeping.
CARGO_PROFILE_RELEASE_OPT_LEVEL=s CARGO_PROFILE_RELEASE_CODEGEN_UNITS=1 \
    cargo rustc --locked --release --lib --target wasm32-unknown-unknown --crate-type cdylib

rm -rf "$OUT"
mkdir -p "$OUT"
# Without the name section (function names for stack traces): 280 KB of the
# gzipped download; panics still print their message to the console.
wasm-bindgen --target web --no-typescript --remove-name-section --out-dir "$OUT" \
    target/wasm32-unknown-unknown/release/resnet_wgpu.wasm
cp assets/index.html "$OUT/index.html"

raw=$(wc -c <"$OUT/resnet_wgpu_bg.wasm")
gz=$(gzip -9 -c "$OUT/resnet_wgpu_bg.wasm" | wc -c)
echo "build-web: $OUT/ ready; resnet_wgpu_bg.wasm is $((raw / 1024)) KiB, $((gz / 1024)) KiB gzipped"
# The page's budget: what a visitor downloads before anything trains.
BUDGET=2500000
if [ "$gz" -gt "$BUDGET" ]; then
    echo "build-web: the gzipped wasm is $gz bytes, over the $BUDGET-byte budget" >&2
    exit 1
fi
