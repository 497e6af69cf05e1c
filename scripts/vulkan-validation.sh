#!/usr/bin/env bash
# Runs cargo test with the Khronos Vulkan validation layer on every Vulkan
# instance the tests create (VK_INSTANCE_LAYERS, so the spawned binary is
# checked too) and fails if the layer reported any error or warning.
#
#   scripts/vulkan-validation.sh [CARGO TEST ARGS...]
#
# Needs Debian's vulkan-validationlayers. The layer logs to a file of its own
# (vk_layer_settings.txt below), independent of wgpu's logging. wgpu's debug
# info is off (WGPU_DEBUG=0): with it naga writes OpSource WGSL (source
# language 10), which the layer's SPIR-V validator of Debian 12 (1.3.239)
# does not know yet and reports as invalid SPIR-V.
set -euo pipefail
cd "$(dirname "$0")/.."
layer=/usr/lib/x86_64-linux-gnu/libVkLayer_khronos_validation.so
if [ ! -e "$layer" ] && ! ls /usr/share/vulkan/explicit_layer.d/VkLayer_khronos_validation.json >/dev/null 2>&1; then
    echo "error: the Vulkan validation layer is not installed (apt-get install vulkan-validationlayers)" >&2
    exit 2
fi
settings=$(mktemp -d)
log="$settings/validation.log"
cat > "$settings/vk_layer_settings.txt" <<SETTINGS
khronos_validation.debug_action = VK_DBG_LAYER_ACTION_LOG_MSG
khronos_validation.log_filename = $log
khronos_validation.report_flags = error,warn
SETTINGS
: > "$log"
export VK_LAYER_SETTINGS_PATH="$settings"
export VK_INSTANCE_LAYERS=VK_LAYER_KHRONOS_validation
export WGPU_DEBUG=0 WGPU_VALIDATION=0
status=0
cargo test "$@" || status=$?
reports=$(grep -c '^[A-Za-z0-9_-]*(\(ERROR\|WARN\)' "$log" || true)
if [ "$reports" -gt 0 ]; then
    echo "error: the validation layer reported $reports problems; the first:" >&2
    grep -m 5 -A 2 '^[A-Za-z0-9_-]*(\(ERROR\|WARN\)' "$log" >&2
    exit 1
fi
echo "validation layer: no errors or warnings ($log)"
exit "$status"
