// Group normalization, NCHW: statistics per (sample, group) over the group's
// channels and the plane, an affine per channel, with the fused forms a ResNet
// wants (GN+ReLU, GN+residual-add+ReLU). No running statistics: training and
// eval run the same dispatches.
//
// Forward  = forward_stats (one workgroup per (sample, group): mean, then the
//            biased variance from centred values) then forward_apply*.
// Backward = backward_params* (one workgroup per channel: dbeta, dgamma; the
//            fused forms mask grad_output by output > 0, add_relu also hands
//            the masked gradient to the skip connection), backward_group*
//            (one workgroup per (sample, group): the means of d = g * gamma
//            and of d * xhat), then backward_apply* (dx).
// A (sample, group)'s values are contiguous in NCHW: k * group_len onwards.

struct GnParams {
    batch: u32,
    channels: u32,
    hw: u32,
    groups: u32,
    eps: f32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

const WG: u32 = 256u;
override WG_ELEMENTWISE: u32 = 256u;

@group(0) @binding(0) var<uniform> p: GnParams;
@group(0) @binding(1) var<storage, read> input: array<act>;
@group(0) @binding(2) var<storage, read> gamma: array<f32>;
@group(0) @binding(3) var<storage, read> beta: array<f32>;
@group(0) @binding(4) var<storage, read_write> output: array<act>;
// Per-(sample, group) mean and 1/sqrt(var + eps), kept for backward.
@group(0) @binding(5) var<storage, read_write> save_mean: array<f32>;
@group(0) @binding(6) var<storage, read_write> save_invstd: array<f32>;
@group(0) @binding(7) var<storage, read> residual: array<act>;
@group(0) @binding(8) var<storage, read> grad_output: array<act>;
@group(0) @binding(9) var<storage, read_write> grad_input: array<act>;
@group(0) @binding(10) var<storage, read_write> grad_gamma: array<f32>;
@group(0) @binding(11) var<storage, read_write> grad_beta: array<f32>;
@group(0) @binding(12) var<storage, read_write> grad_residual: array<act>;
// The forward output of the fused ReLU forms: its sign is the ReLU mask.
@group(0) @binding(13) var<storage, read> forward_output: array<act>;
// Per (sample, group): mean of d, then mean of d * xhat ([2, batch * groups]).
@group(0) @binding(14) var<storage, read_write> group_grads: array<f32>;

fn group_len() -> u32 {
    return p.channels / p.groups * p.hw;
}

fn numel() -> u32 {
    return p.batch * p.channels * p.hw;
}

// The (sample, group) of element i: groups are contiguous runs of group_len.
fn group_of(i: u32) -> u32 {
    return i / group_len();
}

fn channel_of(i: u32) -> u32 {
    return (i / p.hw) % p.channels;
}

fn xhat(i: u32) -> f32 {
    let k = group_of(i);
    return (f32(input[i]) - save_mean[k]) * save_invstd[k];
}

fn masked_grad(i: u32) -> f32 {
    return select(0.0, f32(grad_output[i]), forward_output[i] > act(0.0));
}

// workgroup_sum(value, lid) comes from the reduction prelude (shaders/reduce.wgsl).

@compute @workgroup_size(WG, 1, 1)
fn forward_stats(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let k = wg.x;
    let n = group_len();
    let base = k * n;
    var sum = 0.0;
    for (var i = lid.x; i < n; i += WG) {
        sum += f32(input[base + i]);
    }
    let mean = workgroup_sum(vec2<f32>(sum, 0.0), lid.x).x / f32(n);
    var sq = 0.0;
    for (var i = lid.x; i < n; i += WG) {
        let d = f32(input[base + i]) - mean;
        sq += d * d;
    }
    let var_biased = workgroup_sum(vec2<f32>(sq, 0.0), lid.x).x / f32(n);
    if lid.x == 0u {
        save_mean[k] = mean;
        save_invstd[k] = inverseSqrt(var_biased + p.eps);
    }
}

fn normalized(i: u32) -> f32 {
    let c = channel_of(i);
    return xhat(i) * gamma[c] + beta[c];
}

@compute @workgroup_size(WG_ELEMENTWISE, 1, 1)
fn forward_apply(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>,
                 @builtin(num_workgroups) groups: vec3<u32>) {
    let i = flat_index(wg, lid, groups, WG_ELEMENTWISE);
    if i >= numel() { return; }
    output[i] = act(normalized(i));
}

@compute @workgroup_size(WG_ELEMENTWISE, 1, 1)
fn forward_apply_relu(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>,
                      @builtin(num_workgroups) groups: vec3<u32>) {
    let i = flat_index(wg, lid, groups, WG_ELEMENTWISE);
    if i >= numel() { return; }
    output[i] = act(max(normalized(i), 0.0));
}

@compute @workgroup_size(WG_ELEMENTWISE, 1, 1)
fn forward_apply_add_relu(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>,
                          @builtin(num_workgroups) groups: vec3<u32>) {
    let i = flat_index(wg, lid, groups, WG_ELEMENTWISE);
    if i >= numel() { return; }
    output[i] = act(max(normalized(i) + f32(residual[i]), 0.0));
}

// Index of the i-th element of channel c, i in [0, batch*hw).
fn channel_element(c: u32, i: u32) -> u32 {
    return ((i / p.hw) * p.channels + c) * p.hw + i % p.hw;
}

fn store_param_grads(c: u32, sums: vec2<f32>, lid: u32) {
    if lid == 0u {
        grad_beta[c] = sums.x;
        grad_gamma[c] = sums.y;
    }
}

@compute @workgroup_size(WG, 1, 1)
fn backward_params(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let c = wg.x;
    var acc = vec2<f32>(0.0);
    for (var k = lid.x; k < p.batch * p.hw; k += WG) {
        let i = channel_element(c, k);
        let g = f32(grad_output[i]);
        acc += vec2<f32>(g, g * xhat(i));
    }
    store_param_grads(c, workgroup_sum(acc, lid.x), lid.x);
}

@compute @workgroup_size(WG, 1, 1)
fn backward_params_relu(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let c = wg.x;
    var acc = vec2<f32>(0.0);
    for (var k = lid.x; k < p.batch * p.hw; k += WG) {
        let i = channel_element(c, k);
        let g = masked_grad(i);
        acc += vec2<f32>(g, g * xhat(i));
    }
    store_param_grads(c, workgroup_sum(acc, lid.x), lid.x);
}

@compute @workgroup_size(WG, 1, 1)
fn backward_params_add_relu(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let c = wg.x;
    var acc = vec2<f32>(0.0);
    for (var k = lid.x; k < p.batch * p.hw; k += WG) {
        let i = channel_element(c, k);
        let g = masked_grad(i);
        grad_residual[i] = act(g);
        acc += vec2<f32>(g, g * xhat(i));
    }
    store_param_grads(c, workgroup_sum(acc, lid.x), lid.x);
}

fn store_group_grads(k: u32, sums: vec2<f32>, lid: u32) {
    if lid == 0u {
        let n = f32(group_len());
        group_grads[k] = sums.x / n;
        group_grads[p.batch * p.groups + k] = sums.y / n;
    }
}

@compute @workgroup_size(WG, 1, 1)
fn backward_group(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let k = wg.x;
    let n = group_len();
    var acc = vec2<f32>(0.0);
    for (var j = lid.x; j < n; j += WG) {
        let i = k * n + j;
        let d = f32(grad_output[i]) * gamma[channel_of(i)];
        acc += vec2<f32>(d, d * xhat(i));
    }
    store_group_grads(k, workgroup_sum(acc, lid.x), lid.x);
}

@compute @workgroup_size(WG, 1, 1)
fn backward_group_relu(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let k = wg.x;
    let n = group_len();
    var acc = vec2<f32>(0.0);
    for (var j = lid.x; j < n; j += WG) {
        let i = k * n + j;
        let d = masked_grad(i) * gamma[channel_of(i)];
        acc += vec2<f32>(d, d * xhat(i));
    }
    store_group_grads(k, workgroup_sum(acc, lid.x), lid.x);
}

// dx = invstd * (d - mean(d) - xhat * mean(d * xhat)), d = g * gamma
fn input_grad(i: u32, g: f32) -> f32 {
    let k = group_of(i);
    let d = g * gamma[channel_of(i)];
    let stats = p.batch * p.groups;
    return save_invstd[k] * (d - group_grads[k] - xhat(i) * group_grads[stats + k]);
}

@compute @workgroup_size(WG_ELEMENTWISE, 1, 1)
fn backward_apply(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>,
                  @builtin(num_workgroups) groups: vec3<u32>) {
    let i = flat_index(wg, lid, groups, WG_ELEMENTWISE);
    if i >= numel() { return; }
    grad_input[i] = act(input_grad(i, f32(grad_output[i])));
}

// For both fused forms: the ReLU mask is the same, the skip branch was handled
// by backward_params_add_relu.
@compute @workgroup_size(WG_ELEMENTWISE, 1, 1)
fn backward_apply_relu(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>,
                       @builtin(num_workgroups) groups: vec3<u32>) {
    let i = flat_index(wg, lid, groups, WG_ELEMENTWISE);
    if i >= numel() { return; }
    grad_input[i] = act(input_grad(i, masked_grad(i)));
}
