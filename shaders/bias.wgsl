// A per-channel bias on an NCHW activation: the bias of a conv with
// `bias=True`. forward adds it in place to the conv's output; backward sums
// grad_output over (N, H, W) per channel, one workgroup per channel. Activations
// are `act` (f32 or f16); the sum is f32.

struct BiasParams {
    batch: u32,
    channels: u32,
    hw: u32,
    _pad0: u32,
}

const WG: u32 = 256u;
override WG_ELEMENTWISE: u32 = 256u;

@group(0) @binding(0) var<uniform> p: BiasParams;
@group(0) @binding(1) var<storage, read> bias: array<f32>;
@group(0) @binding(2) var<storage, read_write> output: array<act>;
@group(0) @binding(3) var<storage, read> grad_output: array<act>;
@group(0) @binding(4) var<storage, read_write> grad_bias: array<f32>;

@compute @workgroup_size(WG_ELEMENTWISE, 1, 1)
fn forward(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>,
           @builtin(num_workgroups) groups: vec3<u32>) {
    let i = flat_index(wg, lid, groups, WG_ELEMENTWISE);
    if i >= p.batch * p.channels * p.hw { return; }
    output[i] = act(f32(output[i]) + bias[(i / p.hw) % p.channels]);
}

// workgroup_sum(value, lid) comes from the reduction prelude (shaders/reduce.wgsl).
@compute @workgroup_size(WG, 1, 1)
fn backward(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let c = wg.x;
    var sum = 0.0;
    for (var k = lid.x; k < p.batch * p.hw; k += WG) {
        sum += f32(grad_output[((k / p.hw) * p.channels + c) * p.hw + k % p.hw]);
    }
    let total = workgroup_sum(vec2<f32>(sum, 0.0), lid.x).x;
    if lid.x == 0u {
        grad_bias[c] = total;
    }
}
