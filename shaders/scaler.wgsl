// Dynamic loss scaling for mixed precision (--precision f16), as PyTorch's
// GradScaler does it, without a round trip to the host: the loss gradient is
// multiplied by the scale (shaders/loss.wgsl), so that small activation
// gradients survive in f16; check_finite flags a step whose weight gradients
// overflowed, sgd_step_scaled (shaders/optim.wgsl) then skips it, and
// update_scale halves the scale after an overflow and doubles it after
// `growth_interval` clean steps.
//
// The scaler's words (SCALER_* below): the scale (f32 bits), clean steps since
// the scale last changed, this step's overflow flag, and skipped steps in all.

struct ScalerParams {
    len: u32,
    growth_interval: u32,
    growth_factor: f32,
    backoff_factor: f32,
}

const SCALER_SCALE: u32 = 0u;
const SCALER_GROWTH: u32 = 1u;
const SCALER_FOUND_INF: u32 = 2u;
const SCALER_SKIPPED: u32 = 3u;

// Metric slots update_scale writes (shaders/loss.wgsl has the others).
const METRIC_LOSS_SCALE: u32 = 5u;
const METRIC_SKIPPED: u32 = 6u;

override WG: u32 = 256u;

@group(0) @binding(0) var<uniform> p: ScalerParams;
@group(0) @binding(1) var<storage, read> grad: array<f32>;
@group(0) @binding(2) var<storage, read_write> found_inf: array<atomic<u32>>;
@group(0) @binding(3) var<storage, read_write> scaler: array<u32>;
@group(0) @binding(4) var<storage, read_write> metrics: array<f32>;

// An f32 is inf or NaN exactly when its exponent bits are all set (WGSL has no
// isinf/isnan).
fn is_finite(x: f32) -> bool {
    return (bitcast<u32>(x) & 0x7f800000u) != 0x7f800000u;
}

// Sets the overflow flag when any of grad[0..len] is inf or NaN. `found_inf`
// is the scaler buffer seen as atomics.
@compute @workgroup_size(WG, 1, 1)
fn check_finite(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>,
                @builtin(num_workgroups) groups: vec3<u32>) {
    let i = flat_index(wg, lid, groups, WG);
    if i < p.len && !is_finite(grad[i]) {
        atomicStore(&found_inf[SCALER_FOUND_INF], 1u);
    }
}

// One invocation, after every SGD dispatch of the step: the scale for the next
// step, the metrics (the scale now; skipped steps added up like the other
// sums), and the flag cleared.
@compute @workgroup_size(1, 1, 1)
fn update_scale() {
    let overflow = scaler[SCALER_FOUND_INF] != 0u;
    var scale = bitcast<f32>(scaler[SCALER_SCALE]);
    var growth = scaler[SCALER_GROWTH] + 1u;
    if overflow {
        scale *= p.backoff_factor;
        growth = 0u;
        scaler[SCALER_SKIPPED] += 1u;
    } else if growth >= p.growth_interval {
        scale *= p.growth_factor;
        growth = 0u;
    }
    scaler[SCALER_SCALE] = bitcast<u32>(scale);
    scaler[SCALER_GROWTH] = growth;
    scaler[SCALER_FOUND_INF] = 0u;
    metrics[METRIC_LOSS_SCALE] = scale;
    metrics[METRIC_SKIPPED] += select(0.0, 1.0, overflow);
}
