// Batch normalization over (N, H, W) per channel, NCHW, with the fused forms a
// ResNet wants: BN+ReLU and BN+residual-add+ReLU.
//
// Every reduction is two-level (shaders/norm_reduce.wgsl): a grid of (parts,
// channels) workgroups, each part a block of samples times a chunk of the
// plane (`Span`), so a step launches enough workgroups to fill a GPU even at
// 16 channels. Training forward = train_stats (each part's count, mean and M2
// of x - shift, Welford) then train_apply* (each workgroup merges its
// channel's partials, normalizes its part; part 0 saves mean and invstd for
// backward and updates the running statistics with the unbiased variance, as
// PyTorch does). Eval forward = eval_apply* from the running statistics.
// Backward = backward_reduce* (each part's sums of g and g * xhat; the fused
// forms first mask grad_output by output > 0) then backward_apply* (merges
// them: dbeta, dgamma from part 0; dx). Activations and their gradients are
// `act` (f32 or f16); statistics, parameters and every sum are f32.

struct BnParams {
    batch: u32,
    channels: u32,
    hw: u32,
    // Parts per channel: ceil(batch / samples_per_part) x ceil(hw / chunk).
    parts: u32,
    eps: f32,
    momentum: f32,
    samples_per_part: u32,
    chunk: u32,
}

const WG: u32 = 256u;
override WG_ELEMENTWISE: u32 = 256u;

@group(0) @binding(0) var<uniform> p: BnParams;
@group(0) @binding(1) var<storage, read> input: array<act>;
@group(0) @binding(2) var<storage, read> gamma: array<f32>;
@group(0) @binding(3) var<storage, read> beta: array<f32>;
@group(0) @binding(4) var<storage, read_write> output: array<act>;
// [0, C): the batch mean, [C, 2C): 1/sqrt(var + eps), [2C, 3C): the mean
// less the channel's shift (what backward centres with), kept for backward;
// then 4 words per (channel, part): the forward's (count, mean, M2) or the
// backward's (sum g, sum g * xhat). One buffer, so no entry binds more than
// WebGPU's default 8 storage buffers.
@group(0) @binding(5) var<storage, read_write> stats: array<f32>;
@group(0) @binding(6) var<storage, read_write> running_mean: array<f32>;
@group(0) @binding(7) var<storage, read_write> running_var: array<f32>;
@group(0) @binding(8) var<storage, read> residual: array<act>;
@group(0) @binding(9) var<storage, read> grad_output: array<act>;
@group(0) @binding(10) var<storage, read_write> grad_input: array<act>;
@group(0) @binding(11) var<storage, read_write> grad_gamma: array<f32>;
@group(0) @binding(12) var<storage, read_write> grad_beta: array<f32>;
@group(0) @binding(13) var<storage, read_write> grad_residual: array<act>;
// The forward output of the fused ReLU forms: its sign is the ReLU mask.
@group(0) @binding(14) var<storage, read> forward_output: array<act>;

// The values one workgroup reduces: channel c, samples [n0, n0 + rows),
// plane positions [j0, j0 + len). The host makes every part non-empty.
struct Span {
    c: u32,
    n0: u32,
    rows: u32,
    j0: u32,
    len: u32,
}

fn span_of(wg: vec3<u32>) -> Span {
    let chunks = (p.hw + p.chunk - 1u) / p.chunk;
    let n0 = (wg.x / chunks) * p.samples_per_part;
    let j0 = (wg.x % chunks) * p.chunk;
    return Span(wg.y, n0, min(p.samples_per_part, p.batch - n0), j0, min(p.chunk, p.hw - j0));
}

fn element(s: Span, cur: Cursor) -> u32 {
    return ((s.n0 + cur.row) * p.channels + s.c) * p.hw + s.j0 + cur.col;
}

fn partial_at(c: u32, part: u32) -> u32 {
    return 3u * p.channels + 4u * (c * p.parts + part);
}

// Every pass centres x - shift, shift = the channel's first value: all parts
// of a channel agree on it, and values near 0 keep their digits when the
// mean is large against the spread (x - shift is exact in f32 there).
fn shift_of(c: u32) -> f32 {
    return f32(input[c * p.hw]);
}

// workgroup_sum(value, lid) comes from the reduction prelude this file is
// compiled with (shaders/reduce.wgsl, or reduce_subgroup.wgsl on adapters with
// subgroups; see src/gpu/kernels.rs).

@compute @workgroup_size(WG, 1, 1)
fn train_stats(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let s = span_of(wg);
    let shift = shift_of(s.c);
    var m = Moments(0.0, 0.0, 0.0);
    for (var cur = cursor_at(lid.x, s.len); cur.row < s.rows; cursor_step(&cur)) {
        moments_add(&m, f32(input[element(s, cur)]) - shift);
    }
    let part = workgroup_moments(m, lid.x);
    if lid.x == 0u {
        store_moments(partial_at(s.c, wg.x), part);
    }
}

// The batch's (mean - shift, invstd) of the span's channel, merged from its
// parts' partials (every workgroup of the channel does the same sums, so
// they agree); part 0 saves them and folds them into the running statistics.
fn batch_stats(s: Span, part: u32, lid: u32) -> vec2<f32> {
    let total = merged_moments(partial_at(s.c, 0u), p.parts, lid);
    let mean = shift_of(s.c) + total.mean;
    let invstd = inverseSqrt(total.m2 / total.count + p.eps);
    if part == 0u && lid == 0u {
        stats[s.c] = mean;
        stats[p.channels + s.c] = invstd;
        stats[2u * p.channels + s.c] = total.mean;
        let var_unbiased = total.m2 / max(total.count - 1.0, 1.0);
        running_mean[s.c] = (1.0 - p.momentum) * running_mean[s.c] + p.momentum * mean;
        running_var[s.c] = (1.0 - p.momentum) * running_var[s.c] + p.momentum * var_unbiased;
    }
    return vec2<f32>(total.mean, invstd);
}

// (x - mean) * (invstd * gamma) + beta; `st` is (mean, invstd), both of
// x's and mean's shift taken off (or neither).
fn normalize(x: f32, st: vec2<f32>, c: u32) -> f32 {
    return (x - st.x) * (st.y * gamma[c]) + beta[c];
}

@compute @workgroup_size(WG, 1, 1)
fn train_apply(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let s = span_of(wg);
    let st = batch_stats(s, wg.x, lid.x);
    let shift = shift_of(s.c);
    for (var cur = cursor_at(lid.x, s.len); cur.row < s.rows; cursor_step(&cur)) {
        let i = element(s, cur);
        output[i] = act(normalize(f32(input[i]) - shift, st, s.c));
    }
}

@compute @workgroup_size(WG, 1, 1)
fn train_apply_relu(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let s = span_of(wg);
    let st = batch_stats(s, wg.x, lid.x);
    let shift = shift_of(s.c);
    for (var cur = cursor_at(lid.x, s.len); cur.row < s.rows; cursor_step(&cur)) {
        let i = element(s, cur);
        output[i] = act(max(normalize(f32(input[i]) - shift, st, s.c), 0.0));
    }
}

@compute @workgroup_size(WG, 1, 1)
fn train_apply_add_relu(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let s = span_of(wg);
    let st = batch_stats(s, wg.x, lid.x);
    let shift = shift_of(s.c);
    for (var cur = cursor_at(lid.x, s.len); cur.row < s.rows; cursor_step(&cur)) {
        let i = element(s, cur);
        output[i] = act(max(normalize(f32(input[i]) - shift, st, s.c) + f32(residual[i]), 0.0));
    }
}

// Eval: elementwise from the running statistics (no statistics dispatch).
// The elementwise kernels index a 2-D grid of workgroups (flat_index, in
// shaders/prelude.wgsl) so large tensors fit the 65535-per-dimension limit.
fn eval_normalized(i: u32) -> f32 {
    let c = (i / p.hw) % p.channels;
    let st = vec2<f32>(running_mean[c], inverseSqrt(running_var[c] + p.eps));
    return normalize(f32(input[i]), st, c);
}

@compute @workgroup_size(WG_ELEMENTWISE, 1, 1)
fn eval_apply(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>,
              @builtin(num_workgroups) groups: vec3<u32>) {
    let i = flat_index(wg, lid, groups, WG_ELEMENTWISE);
    if i >= p.batch * p.channels * p.hw { return; }
    output[i] = act(eval_normalized(i));
}

@compute @workgroup_size(WG_ELEMENTWISE, 1, 1)
fn eval_apply_relu(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>,
                   @builtin(num_workgroups) groups: vec3<u32>) {
    let i = flat_index(wg, lid, groups, WG_ELEMENTWISE);
    if i >= p.batch * p.channels * p.hw { return; }
    output[i] = act(max(eval_normalized(i), 0.0));
}

@compute @workgroup_size(WG_ELEMENTWISE, 1, 1)
fn eval_apply_add_relu(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>,
                       @builtin(num_workgroups) groups: vec3<u32>) {
    let i = flat_index(wg, lid, groups, WG_ELEMENTWISE);
    if i >= p.batch * p.channels * p.hw { return; }
    output[i] = act(max(eval_normalized(i) + f32(residual[i]), 0.0));
}

// (mean - shift, invstd) saved by the training forward.
fn saved(c: u32) -> vec2<f32> {
    return vec2<f32>(stats[2u * p.channels + c], stats[p.channels + c]);
}

// `x` with the channel's shift taken off.
fn xhat(x: f32, st: vec2<f32>) -> f32 {
    return (x - st.x) * st.y;
}

fn masked_grad(i: u32) -> f32 {
    return select(0.0, f32(grad_output[i]), forward_output[i] > act(0.0));
}

fn store_grad_partial(s: Span, part: u32, acc: vec2<f32>, lid: u32) {
    let sums = workgroup_sum(acc, lid);
    if lid == 0u {
        let b = partial_at(s.c, part);
        stats[b] = sums.x;
        stats[b + 1u] = sums.y;
    }
}

@compute @workgroup_size(WG, 1, 1)
fn backward_reduce(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let s = span_of(wg);
    let st = saved(s.c);
    let shift = shift_of(s.c);
    var acc = vec2<f32>(0.0);
    for (var cur = cursor_at(lid.x, s.len); cur.row < s.rows; cursor_step(&cur)) {
        let i = element(s, cur);
        let g = f32(grad_output[i]);
        acc += vec2<f32>(g, g * xhat(f32(input[i]) - shift, st));
    }
    store_grad_partial(s, wg.x, acc, lid.x);
}

// Also keeps the masked gradient in grad_input for backward_apply_relu, which
// then binds 7 storage buffers instead of 9 (WebGPU's default limit is 8).
@compute @workgroup_size(WG, 1, 1)
fn backward_reduce_relu(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let s = span_of(wg);
    let st = saved(s.c);
    let shift = shift_of(s.c);
    var acc = vec2<f32>(0.0);
    for (var cur = cursor_at(lid.x, s.len); cur.row < s.rows; cursor_step(&cur)) {
        let i = element(s, cur);
        let g = masked_grad(i);
        grad_input[i] = act(g);
        acc += vec2<f32>(g, g * xhat(f32(input[i]) - shift, st));
    }
    store_grad_partial(s, wg.x, acc, lid.x);
}

// Also hands the masked gradient to the skip connection (grad_residual), where
// backward_apply_add_relu reads it too.
@compute @workgroup_size(WG, 1, 1)
fn backward_reduce_add_relu(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let s = span_of(wg);
    let st = saved(s.c);
    let shift = shift_of(s.c);
    var acc = vec2<f32>(0.0);
    for (var cur = cursor_at(lid.x, s.len); cur.row < s.rows; cursor_step(&cur)) {
        let i = element(s, cur);
        let g = masked_grad(i);
        grad_residual[i] = act(g);
        acc += vec2<f32>(g, g * xhat(f32(input[i]) - shift, st));
    }
    store_grad_partial(s, wg.x, acc, lid.x);
}

// (dbeta, dgamma) of the span's channel from its parts' sums; part 0 stores them.
fn param_grads(s: Span, part: u32, lid: u32) -> vec2<f32> {
    var acc = vec2<f32>(0.0);
    for (var q = lid; q < p.parts; q += WG) {
        let b = partial_at(s.c, q);
        acc += vec2<f32>(stats[b], stats[b + 1u]);
    }
    let sums = workgroup_sum(acc, lid);
    if part == 0u && lid == 0u {
        grad_beta[s.c] = sums.x;
        grad_gamma[s.c] = sums.y;
    }
    return sums;
}

// dx = gamma * invstd * (g - dbeta/n - xhat * dgamma/n), as (g - a - xhat * b) * k.
struct DxTerms {
    st: vec2<f32>,
    shift: f32,
    a: f32,
    b: f32,
    k: f32,
}

fn dx_terms(s: Span, part: u32, lid: u32) -> DxTerms {
    let sums = param_grads(s, part, lid);
    let st = saved(s.c);
    let n = f32(p.batch * p.hw);
    return DxTerms(st, shift_of(s.c), sums.x / n, sums.y / n, gamma[s.c] * st.y);
}

fn input_grad(t: DxTerms, x: f32, g: f32) -> f32 {
    return (g - t.a - xhat(x - t.shift, t.st) * t.b) * t.k;
}

@compute @workgroup_size(WG, 1, 1)
fn backward_apply(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let s = span_of(wg);
    let t = dx_terms(s, wg.x, lid.x);
    for (var cur = cursor_at(lid.x, s.len); cur.row < s.rows; cursor_step(&cur)) {
        let i = element(s, cur);
        grad_input[i] = act(input_grad(t, f32(input[i]), f32(grad_output[i])));
    }
}

// The fused forms take the masked gradient their reduce pass stored: in place
// in grad_input (ReLU), or from grad_residual (add + ReLU).
@compute @workgroup_size(WG, 1, 1)
fn backward_apply_relu(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let s = span_of(wg);
    let t = dx_terms(s, wg.x, lid.x);
    for (var cur = cursor_at(lid.x, s.len); cur.row < s.rows; cursor_step(&cur)) {
        let i = element(s, cur);
        grad_input[i] = act(input_grad(t, f32(input[i]), f32(grad_input[i])));
    }
}

@compute @workgroup_size(WG, 1, 1)
fn backward_apply_add_relu(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let s = span_of(wg);
    let t = dx_terms(s, wg.x, lid.x);
    for (var cur = cursor_at(lid.x, s.len); cur.row < s.rows; cursor_step(&cur)) {
        let i = element(s, cur);
        grad_input[i] = act(input_grad(t, f32(input[i]), f32(grad_residual[i])));
    }
}
