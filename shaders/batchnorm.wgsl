// Batch normalization over (N, H, W) per channel, NCHW, with the fused forms a
// ResNet wants: BN+ReLU and BN+residual-add+ReLU.
//
// Training forward = forward_stats (one workgroup per channel: batch mean, biased
// variance for normalizing, running stats updated with the unbiased variance as
// PyTorch does) then forward_apply*. Eval forward = eval_stats then forward_apply*.
// Backward = backward_reduce* (one workgroup per channel: dbeta, dgamma; the fused
// forms first mask grad_output by output > 0) then backward_apply* (dx).
// Activations and their gradients are `act` (f32 or f16); statistics, parameters
// and every sum are f32.

struct BnParams {
    batch: u32,
    channels: u32,
    hw: u32,
    _pad0: u32,
    eps: f32,
    momentum: f32,
    _pad1: u32,
    _pad2: u32,
}

const WG: u32 = 256u;
override WG_ELEMENTWISE: u32 = 256u;

@group(0) @binding(0) var<uniform> p: BnParams;
@group(0) @binding(1) var<storage, read> input: array<act>;
@group(0) @binding(2) var<storage, read> gamma: array<f32>;
@group(0) @binding(3) var<storage, read> beta: array<f32>;
@group(0) @binding(4) var<storage, read_write> output: array<act>;
// Per-channel mean and 1/sqrt(var + eps) of this forward, kept for backward.
@group(0) @binding(5) var<storage, read_write> save_mean: array<f32>;
@group(0) @binding(6) var<storage, read_write> save_invstd: array<f32>;
@group(0) @binding(7) var<storage, read_write> running_mean: array<f32>;
@group(0) @binding(8) var<storage, read_write> running_var: array<f32>;
@group(0) @binding(9) var<storage, read> residual: array<act>;
@group(0) @binding(10) var<storage, read> grad_output: array<act>;
@group(0) @binding(11) var<storage, read_write> grad_input: array<act>;
@group(0) @binding(12) var<storage, read_write> grad_gamma: array<f32>;
@group(0) @binding(13) var<storage, read_write> grad_beta: array<f32>;
@group(0) @binding(14) var<storage, read_write> grad_residual: array<act>;
// The forward output of the fused ReLU forms: its sign is the ReLU mask.
@group(0) @binding(15) var<storage, read> forward_output: array<act>;

// Index of the i-th element of channel c, i in [0, batch*hw).
fn channel_element(c: u32, i: u32) -> u32 {
    return ((i / p.hw) * p.channels + c) * p.hw + i % p.hw;
}

// workgroup_sum(value, lid), the channel reductions' last step, comes from the
// reduction prelude this file is compiled with (shaders/reduce.wgsl, or
// reduce_subgroup.wgsl on adapters with subgroups; see src/gpu/kernels.rs).

@compute @workgroup_size(WG, 1, 1)
fn forward_stats(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let c = wg.x;
    let count = p.batch * p.hw;
    var sum = 0.0;
    for (var i = lid.x; i < count; i += WG) {
        sum += f32(input[channel_element(c, i)]);
    }
    let mean = workgroup_sum(vec2<f32>(sum, 0.0), lid.x).x / f32(count);
    // Second pass over centred values: no cancellation from E[x^2] - E[x]^2.
    var sq = 0.0;
    for (var i = lid.x; i < count; i += WG) {
        let d = f32(input[channel_element(c, i)]) - mean;
        sq += d * d;
    }
    let var_biased = workgroup_sum(vec2<f32>(sq, 0.0), lid.x).x / f32(count);
    if lid.x == 0u {
        save_mean[c] = mean;
        save_invstd[c] = inverseSqrt(var_biased + p.eps);
        let var_unbiased = var_biased * f32(count) / f32(max(count, 2u) - 1u);
        running_mean[c] = (1.0 - p.momentum) * running_mean[c] + p.momentum * mean;
        running_var[c] = (1.0 - p.momentum) * running_var[c] + p.momentum * var_unbiased;
    }
}

// One invocation per channel.
override WG_CHANNELS: u32 = 64u;
@compute @workgroup_size(WG_CHANNELS, 1, 1)
fn eval_stats(@builtin(global_invocation_id) gid: vec3<u32>) {
    let c = gid.x;
    if c >= p.channels { return; }
    save_mean[c] = running_mean[c];
    save_invstd[c] = inverseSqrt(running_var[c] + p.eps);
}

// The elementwise kernels index a 2-D grid of workgroups (flat_index, in
// shaders/prelude.wgsl) so large tensors fit the 65535-per-dimension limit.
fn normalized(i: u32) -> f32 {
    let c = (i / p.hw) % p.channels;
    return (f32(input[i]) - save_mean[c]) * save_invstd[c] * gamma[c] + beta[c];
}

@compute @workgroup_size(WG_ELEMENTWISE, 1, 1)
fn forward_apply(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>,
                 @builtin(num_workgroups) groups: vec3<u32>) {
    let i = flat_index(wg, lid, groups, WG_ELEMENTWISE);
    if i >= p.batch * p.channels * p.hw { return; }
    output[i] = act(normalized(i));
}

@compute @workgroup_size(WG_ELEMENTWISE, 1, 1)
fn forward_apply_relu(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>,
                      @builtin(num_workgroups) groups: vec3<u32>) {
    let i = flat_index(wg, lid, groups, WG_ELEMENTWISE);
    if i >= p.batch * p.channels * p.hw { return; }
    output[i] = act(max(normalized(i), 0.0));
}

@compute @workgroup_size(WG_ELEMENTWISE, 1, 1)
fn forward_apply_add_relu(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>,
                          @builtin(num_workgroups) groups: vec3<u32>) {
    let i = flat_index(wg, lid, groups, WG_ELEMENTWISE);
    if i >= p.batch * p.channels * p.hw { return; }
    output[i] = act(max(normalized(i) + f32(residual[i]), 0.0));
}

fn xhat(i: u32, c: u32) -> f32 {
    return (f32(input[i]) - save_mean[c]) * save_invstd[c];
}

fn masked_grad(i: u32) -> f32 {
    return select(0.0, f32(grad_output[i]), forward_output[i] > act(0.0));
}

fn store_param_grads(c: u32, sums: vec2<f32>, lid: u32) {
    if lid == 0u {
        grad_beta[c] = sums.x;
        grad_gamma[c] = sums.y;
    }
}

@compute @workgroup_size(WG, 1, 1)
fn backward_reduce(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let c = wg.x;
    var acc = vec2<f32>(0.0);
    for (var k = lid.x; k < p.batch * p.hw; k += WG) {
        let i = channel_element(c, k);
        let g = f32(grad_output[i]);
        acc += vec2<f32>(g, g * xhat(i, c));
    }
    store_param_grads(c, workgroup_sum(acc, lid.x), lid.x);
}

// Also keeps the masked gradient in grad_input for backward_apply_relu, which
// then binds 7 storage buffers instead of 9 (WebGPU's default limit is 8).
@compute @workgroup_size(WG, 1, 1)
fn backward_reduce_relu(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let c = wg.x;
    var acc = vec2<f32>(0.0);
    for (var k = lid.x; k < p.batch * p.hw; k += WG) {
        let i = channel_element(c, k);
        let g = masked_grad(i);
        grad_input[i] = act(g);
        acc += vec2<f32>(g, g * xhat(i, c));
    }
    store_param_grads(c, workgroup_sum(acc, lid.x), lid.x);
}

// Also hands the masked gradient to the skip connection (grad_residual), where
// backward_apply_add_relu reads it too.
@compute @workgroup_size(WG, 1, 1)
fn backward_reduce_add_relu(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let c = wg.x;
    var acc = vec2<f32>(0.0);
    for (var k = lid.x; k < p.batch * p.hw; k += WG) {
        let i = channel_element(c, k);
        let g = masked_grad(i);
        grad_residual[i] = act(g);
        acc += vec2<f32>(g, g * xhat(i, c));
    }
    store_param_grads(c, workgroup_sum(acc, lid.x), lid.x);
}

// dx = gamma * invstd * (g - dbeta/n - xhat * dgamma/n)
fn input_grad(i: u32, g: f32) -> f32 {
    let c = (i / p.hw) % p.channels;
    let n = f32(p.batch * p.hw);
    return gamma[c] * save_invstd[c] * (g - grad_beta[c] / n - xhat(i, c) * grad_gamma[c] / n);
}

@compute @workgroup_size(WG_ELEMENTWISE, 1, 1)
fn backward_apply(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>,
                  @builtin(num_workgroups) groups: vec3<u32>) {
    let i = flat_index(wg, lid, groups, WG_ELEMENTWISE);
    if i >= p.batch * p.channels * p.hw { return; }
    grad_input[i] = act(input_grad(i, f32(grad_output[i])));
}

// The fused forms take the masked gradient their reduce pass stored: in place
// in grad_input (ReLU), or from grad_residual (add + ReLU).
@compute @workgroup_size(WG_ELEMENTWISE, 1, 1)
fn backward_apply_relu(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>,
                       @builtin(num_workgroups) groups: vec3<u32>) {
    let i = flat_index(wg, lid, groups, WG_ELEMENTWISE);
    if i >= p.batch * p.channels * p.hw { return; }
    grad_input[i] = act(input_grad(i, f32(grad_input[i])));
}

@compute @workgroup_size(WG_ELEMENTWISE, 1, 1)
fn backward_apply_add_relu(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>,
                           @builtin(num_workgroups) groups: vec3<u32>) {
    let i = flat_index(wg, lid, groups, WG_ELEMENTWISE);
    if i >= p.batch * p.channels * p.hw { return; }
    grad_input[i] = act(input_grad(i, f32(grad_residual[i])));
}
