// Group normalization, NCHW: statistics per (sample, group) over the group's
// channels and the plane, an affine per channel, with the fused forms a ResNet
// wants (GN+ReLU, GN+residual-add+ReLU). No running statistics: training and
// eval run the same dispatches.
//
// Two-level reductions (shaders/norm_reduce.wgsl). A (sample, group)'s values
// are contiguous in NCHW (item k = n * groups + g: k * group_len onwards), cut
// into `parts` chunks of `chunk` values.
// Forward  = forward_stats ((parts, items) grid: each chunk's count, mean and
//            M2 of x - shift, Welford) then forward_apply* (same grid: each
//            workgroup merges its item's partials; part 0 saves mean and invstd).
// Backward = backward_reduce* ((plane chunks, batch x channels) grid: each
//            chunk of a plane's sums of g and g * xhat; the fused forms mask
//            grad_output by output > 0, add_relu also hands the masked
//            gradient to the skip connection), then backward_apply* ((parts,
//            items) grid: the item's means of d = g * gamma and of d * xhat
//            from its planes' sums, dx; the workgroups of sample 0, part 0 also
//            add up dbeta and dgamma of their group's channels).

struct GnParams {
    batch: u32,
    channels: u32,
    hw: u32,
    groups: u32,
    eps: f32,
    // Chunks per item and their length (forward and backward_apply).
    parts: u32,
    chunk: u32,
    // The length of backward_reduce's chunks of a plane.
    plane_chunk: u32,
}

const WG: u32 = 256u;

@group(0) @binding(0) var<uniform> p: GnParams;
@group(0) @binding(1) var<storage, read> input: array<act>;
@group(0) @binding(2) var<storage, read> gamma: array<f32>;
@group(0) @binding(3) var<storage, read> beta: array<f32>;
@group(0) @binding(4) var<storage, read_write> output: array<act>;
// Per item: [0, K) the mean, [K, 2K) 1/sqrt(var + eps), [2K, 3K) the mean
// less the item's shift (what backward centres with), K = batch * groups;
// then the partials: 4 words per (item, part) in forward, 2 per (plane,
// plane chunk) in backward. One buffer, so no entry binds more than WebGPU's
// default 8 storage buffers.
@group(0) @binding(5) var<storage, read_write> stats: array<f32>;
@group(0) @binding(6) var<storage, read> residual: array<act>;
@group(0) @binding(7) var<storage, read> grad_output: array<act>;
@group(0) @binding(8) var<storage, read_write> grad_input: array<act>;
@group(0) @binding(9) var<storage, read_write> grad_gamma: array<f32>;
@group(0) @binding(10) var<storage, read_write> grad_beta: array<f32>;
@group(0) @binding(11) var<storage, read_write> grad_residual: array<act>;
// The forward output of the fused ReLU forms: its sign is the ReLU mask.
@group(0) @binding(12) var<storage, read> forward_output: array<act>;

fn items() -> u32 {
    return p.batch * p.groups;
}

fn channels_per_group() -> u32 {
    return p.channels / p.groups;
}

fn group_len() -> u32 {
    return channels_per_group() * p.hw;
}

fn partials_base() -> u32 {
    return 3u * items();
}

// The values one workgroup of a (parts, items) grid owns: item k's
// [t0, t1), from element base + t0.
struct Span {
    k: u32,
    base: u32,
    t0: u32,
    t1: u32,
}

// Items and planes run along y, folded into z past the 65535 a dimension
// allows (the host's `fold_rows`); a workgroup past the last does nothing.
fn row_of(wg: vec3<u32>, groups: vec3<u32>) -> u32 {
    return wg.z * groups.y + wg.y;
}

fn span_of(wg: vec3<u32>, groups: vec3<u32>) -> Span {
    let k = row_of(wg, groups);
    let t0 = wg.x * p.chunk;
    return Span(k, k * group_len(), t0, min(t0 + p.chunk, group_len()));
}

// The first channel of item k's group.
fn first_channel(k: u32) -> u32 {
    return (k % p.groups) * channels_per_group();
}

// Every pass centres x - shift, shift = the item's first value (as batch norm).
fn shift_of(k: u32) -> f32 {
    return f32(input[k * group_len()]);
}

fn forward_partial_at(k: u32, part: u32) -> u32 {
    return partials_base() + 4u * (k * p.parts + part);
}

// workgroup_sum(value, lid) comes from the reduction prelude (shaders/reduce.wgsl).

@compute @workgroup_size(WG, 1, 1)
fn forward_stats(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>,
        @builtin(num_workgroups) groups: vec3<u32>) {
    let s = span_of(wg, groups);
    if s.k >= items() { return; }
    let shift = shift_of(s.k);
    var m = Moments(0.0, 0.0, 0.0);
    for (var t = s.t0 + lid.x; t < s.t1; t += WG) {
        moments_add(&m, f32(input[s.base + t]) - shift);
    }
    let part = workgroup_moments(m, lid.x);
    if lid.x == 0u {
        store_moments(forward_partial_at(s.k, wg.x), part);
    }
}

// Item k's (mean - shift, invstd) from its parts' partials; part 0 saves them.
fn item_stats(s: Span, part: u32, lid: u32) -> vec2<f32> {
    let total = merged_moments(forward_partial_at(s.k, 0u), p.parts, lid);
    let invstd = inverseSqrt(total.m2 / total.count + p.eps);
    if part == 0u && lid == 0u {
        stats[s.k] = shift_of(s.k) + total.mean;
        stats[items() + s.k] = invstd;
        stats[2u * items() + s.k] = total.mean;
    }
    return vec2<f32>(total.mean, invstd);
}

// `x` with its shift taken off, normalized with `st` (mean - shift, invstd).
fn normalized(x: f32, st: vec2<f32>, c: u32) -> f32 {
    return (x - st.x) * (st.y * gamma[c]) + beta[c];
}

// The apply loops walk the span with a cursor over rows of one plane: row =
// channel within the group, so the channel costs no division per element.
@compute @workgroup_size(WG, 1, 1)
fn forward_apply(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>,
        @builtin(num_workgroups) groups: vec3<u32>) {
    let s = span_of(wg, groups);
    if s.k >= items() { return; }
    let st = item_stats(s, wg.x, lid.x);
    let shift = shift_of(s.k);
    let c0 = first_channel(s.k);
    var cur = cursor_at(s.t0 + lid.x, p.hw);
    for (var t = s.t0 + lid.x; t < s.t1; t += WG) {
        let i = s.base + t;
        output[i] = act(normalized(f32(input[i]) - shift, st, c0 + cur.row));
        cursor_step(&cur);
    }
}

@compute @workgroup_size(WG, 1, 1)
fn forward_apply_relu(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>,
        @builtin(num_workgroups) groups: vec3<u32>) {
    let s = span_of(wg, groups);
    if s.k >= items() { return; }
    let st = item_stats(s, wg.x, lid.x);
    let shift = shift_of(s.k);
    let c0 = first_channel(s.k);
    var cur = cursor_at(s.t0 + lid.x, p.hw);
    for (var t = s.t0 + lid.x; t < s.t1; t += WG) {
        let i = s.base + t;
        output[i] = act(max(normalized(f32(input[i]) - shift, st, c0 + cur.row), 0.0));
        cursor_step(&cur);
    }
}

@compute @workgroup_size(WG, 1, 1)
fn forward_apply_add_relu(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>,
        @builtin(num_workgroups) groups: vec3<u32>) {
    let s = span_of(wg, groups);
    if s.k >= items() { return; }
    let st = item_stats(s, wg.x, lid.x);
    let shift = shift_of(s.k);
    let c0 = first_channel(s.k);
    var cur = cursor_at(s.t0 + lid.x, p.hw);
    for (var t = s.t0 + lid.x; t < s.t1; t += WG) {
        let i = s.base + t;
        let v = normalized(f32(input[i]) - shift, st, c0 + cur.row) + f32(residual[i]);
        output[i] = act(max(v, 0.0));
        cursor_step(&cur);
    }
}

// Backward. (mean - shift, invstd) of item k, saved by the forward.
fn saved(k: u32) -> vec2<f32> {
    return vec2<f32>(stats[2u * items() + k], stats[items() + k]);
}

fn masked_grad(i: u32) -> f32 {
    return select(0.0, f32(grad_output[i]), forward_output[i] > act(0.0));
}

fn plane_chunks() -> u32 {
    return (p.hw + p.plane_chunk - 1u) / p.plane_chunk;
}

fn plane_partial_at(plane: u32, chunk: u32) -> u32 {
    return partials_base() + 2u * (plane * plane_chunks() + chunk);
}

// A backward_reduce workgroup's values: plane (n, c) = wg.y, its chunk wg.x.
struct PlaneSpan {
    plane: u32,
    k: u32,
    j0: u32,
    j1: u32,
}

fn plane_span_of(wg: vec3<u32>, groups: vec3<u32>) -> PlaneSpan {
    let plane = row_of(wg, groups);
    let n = plane / p.channels;
    let c = plane % p.channels;
    let j0 = wg.x * p.plane_chunk;
    return PlaneSpan(plane, n * p.groups + c / channels_per_group(), j0, min(j0 + p.plane_chunk, p.hw));
}

fn store_plane_sums(s: PlaneSpan, chunk: u32, acc: vec2<f32>, lid: u32) {
    let sums = workgroup_sum(acc, lid);
    if lid == 0u {
        let b = plane_partial_at(s.plane, chunk);
        stats[b] = sums.x;
        stats[b + 1u] = sums.y;
    }
}

@compute @workgroup_size(WG, 1, 1)
fn backward_reduce(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>,
        @builtin(num_workgroups) groups: vec3<u32>) {
    let s = plane_span_of(wg, groups);
    if s.plane >= p.batch * p.channels { return; }
    let st = saved(s.k);
    let shift = shift_of(s.k);
    var acc = vec2<f32>(0.0);
    for (var j = s.j0 + lid.x; j < s.j1; j += WG) {
        let i = s.plane * p.hw + j;
        let g = f32(grad_output[i]);
        acc += vec2<f32>(g, g * (f32(input[i]) - shift - st.x) * st.y);
    }
    store_plane_sums(s, wg.x, acc, lid.x);
}

@compute @workgroup_size(WG, 1, 1)
fn backward_reduce_relu(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>,
        @builtin(num_workgroups) groups: vec3<u32>) {
    let s = plane_span_of(wg, groups);
    if s.plane >= p.batch * p.channels { return; }
    let st = saved(s.k);
    let shift = shift_of(s.k);
    var acc = vec2<f32>(0.0);
    for (var j = s.j0 + lid.x; j < s.j1; j += WG) {
        let i = s.plane * p.hw + j;
        let g = masked_grad(i);
        acc += vec2<f32>(g, g * (f32(input[i]) - shift - st.x) * st.y);
    }
    store_plane_sums(s, wg.x, acc, lid.x);
}

@compute @workgroup_size(WG, 1, 1)
fn backward_reduce_add_relu(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>,
        @builtin(num_workgroups) groups: vec3<u32>) {
    let s = plane_span_of(wg, groups);
    if s.plane >= p.batch * p.channels { return; }
    let st = saved(s.k);
    let shift = shift_of(s.k);
    var acc = vec2<f32>(0.0);
    for (var j = s.j0 + lid.x; j < s.j1; j += WG) {
        let i = s.plane * p.hw + j;
        let g = masked_grad(i);
        grad_residual[i] = act(g);
        acc += vec2<f32>(g, g * (f32(input[i]) - shift - st.x) * st.y);
    }
    store_plane_sums(s, wg.x, acc, lid.x);
}

// The means over item k of d = g * gamma and of d * xhat, from the sums of its
// group's planes: gamma is constant over a plane.
fn group_means(s: Span, lid: u32) -> vec2<f32> {
    let chunks = plane_chunks();
    let n = s.k / p.groups;
    let c0 = first_channel(s.k);
    var acc = vec2<f32>(0.0);
    for (var q = lid; q < channels_per_group() * chunks; q += WG) {
        let c = c0 + q / chunks;
        let b = plane_partial_at(n * p.channels + c, q % chunks);
        acc += gamma[c] * vec2<f32>(stats[b], stats[b + 1u]);
    }
    return workgroup_sum(acc, lid) / f32(group_len());
}

// dbeta, dgamma of the group's channels: sums over samples and plane chunks.
// Called by the workgroups of sample 0, part 0 (uniform per workgroup).
fn store_param_grads(s: Span, lid: u32) {
    let chunks = plane_chunks();
    let c0 = first_channel(s.k);
    for (var c = c0; c < c0 + channels_per_group(); c++) {
        var acc = vec2<f32>(0.0);
        for (var q = lid; q < p.batch * chunks; q += WG) {
            let b = plane_partial_at((q / chunks) * p.channels + c, q % chunks);
            acc += vec2<f32>(stats[b], stats[b + 1u]);
        }
        let sums = workgroup_sum(acc, lid);
        if lid == 0u {
            grad_beta[c] = sums.x;
            grad_gamma[c] = sums.y;
        }
    }
}

// dx = invstd * (d - mean(d) - xhat * mean(d * xhat)), d = g * gamma
fn input_grad(x: f32, g: f32, c: u32, st: vec2<f32>, means: vec2<f32>) -> f32 {
    let xhat = (x - st.x) * st.y;
    return st.y * (g * gamma[c] - means.x - xhat * means.y);
}

@compute @workgroup_size(WG, 1, 1)
fn backward_apply(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>,
        @builtin(num_workgroups) groups: vec3<u32>) {
    let s = span_of(wg, groups);
    if s.k >= items() { return; }
    if wg.x == 0u && s.k < p.groups {
        store_param_grads(s, lid.x);
    }
    let means = group_means(s, lid.x);
    let st = saved(s.k);
    let shift = shift_of(s.k);
    let c0 = first_channel(s.k);
    var cur = cursor_at(s.t0 + lid.x, p.hw);
    for (var t = s.t0 + lid.x; t < s.t1; t += WG) {
        let i = s.base + t;
        let g = f32(grad_output[i]);
        grad_input[i] = act(input_grad(f32(input[i]) - shift, g, c0 + cur.row, st, means));
        cursor_step(&cur);
    }
}

// For both fused forms: the ReLU mask is the same, the skip branch was handled
// by backward_reduce_add_relu.
@compute @workgroup_size(WG, 1, 1)
fn backward_apply_relu(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>,
        @builtin(num_workgroups) groups: vec3<u32>) {
    let s = span_of(wg, groups);
    if s.k >= items() { return; }
    if wg.x == 0u && s.k < p.groups {
        store_param_grads(s, lid.x);
    }
    let means = group_means(s, lid.x);
    let st = saved(s.k);
    let shift = shift_of(s.k);
    let c0 = first_channel(s.k);
    var cur = cursor_at(s.t0 + lid.x, p.hw);
    for (var t = s.t0 + lid.x; t < s.t1; t += WG) {
        let i = s.base + t;
        grad_input[i] = act(input_grad(f32(input[i]) - shift, masked_grad(i), c0 + cur.row, st, means));
        cursor_step(&cur);
    }
}
