// Max pooling (any window, stride, padding; the ResNet stem uses 3x3/2 pad 1) and
// global average pooling, forward and backward, NCHW.

struct PoolParams {
    planes: u32,    // batch * channels
    in_h: u32,
    in_w: u32,
    out_h: u32,
    out_w: u32,
    kernel: u32,
    stride: u32,
    pad: u32,
}

override WG: u32 = 256u;

@group(0) @binding(0) var<uniform> p: PoolParams;
@group(0) @binding(1) var<storage, read> input: array<act>;
@group(0) @binding(2) var<storage, read_write> output: array<act>;
// Max pool: index within the input plane of each output's maximum, for backward.
@group(0) @binding(3) var<storage, read_write> argmax: array<u32>;
@group(0) @binding(4) var<storage, read> saved_argmax: array<u32>;

// input = x, output = y. Padding counts as -inf; ties keep the first maximum in
// scan order, as PyTorch does.
@compute @workgroup_size(WG, 1, 1)
fn max_forward(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>,
               @builtin(num_workgroups) groups: vec3<u32>) {
    let i = flat_index(wg, lid, groups, WG);
    let out_hw = p.out_h * p.out_w;
    if i >= p.planes * out_hw { return; }
    let plane = i / out_hw;
    let h0 = i32(((i % out_hw) / p.out_w) * p.stride) - i32(p.pad);
    let w0 = i32((i % p.out_w) * p.stride) - i32(p.pad);
    let base = plane * p.in_h * p.in_w;
    // -FLT_MAX by its bits: the decimal literal rounds above the f32 range, which
    // Tint (Chrome) rejects though naga accepts it.
    var best = bitcast<f32>(0xff7fffffu);
    var best_index = 0u;
    var found = false;
    for (var kh = 0u; kh < p.kernel; kh++) {
        let ih = h0 + i32(kh);
        if ih < 0 || ih >= i32(p.in_h) { continue; }
        for (var kw = 0u; kw < p.kernel; kw++) {
            let iw = w0 + i32(kw);
            if iw < 0 || iw >= i32(p.in_w) { continue; }
            let index = u32(ih) * p.in_w + u32(iw);
            let v = f32(input[base + index]);
            if !found || v > best {
                best = v;
                best_index = index;
                found = true;
            }
        }
    }
    output[i] = act(best);
    argmax[i] = best_index;
}

// input = dy, output = dx; one invocation per input pixel gathers from every
// window that chose it (no atomics needed).
@compute @workgroup_size(WG, 1, 1)
fn max_backward(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>,
                @builtin(num_workgroups) groups: vec3<u32>) {
    let i = flat_index(wg, lid, groups, WG);
    let in_hw = p.in_h * p.in_w;
    if i >= p.planes * in_hw { return; }
    let plane = i / in_hw;
    let index = i % in_hw;
    let th = i32(index / p.in_w + p.pad);
    let tw = i32(index % p.in_w + p.pad);
    let s = i32(p.stride);
    let k = i32(p.kernel);
    // Windows oh with oh*s <= th < oh*s + k.
    let oh_lo = max((th - k + s) / s, 0);
    let oh_hi = min(th / s, i32(p.out_h) - 1);
    let ow_lo = max((tw - k + s) / s, 0);
    let ow_hi = min(tw / s, i32(p.out_w) - 1);
    var sum = 0.0;
    for (var oh = oh_lo; oh <= oh_hi; oh++) {
        for (var ow = ow_lo; ow <= ow_hi; ow++) {
            let o = (plane * p.out_h + u32(oh)) * p.out_w + u32(ow);
            if saved_argmax[o] == index {
                sum += f32(input[o]);
            }
        }
    }
    output[i] = act(sum);
}

// input = x [planes, in_h*in_w], output = y [planes].
@compute @workgroup_size(WG, 1, 1)
fn global_avg_forward(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>,
                      @builtin(num_workgroups) groups: vec3<u32>) {
    let plane = flat_index(wg, lid, groups, WG);
    if plane >= p.planes { return; }
    let hw = p.in_h * p.in_w;
    var sum = 0.0;
    for (var j = 0u; j < hw; j++) {
        sum += f32(input[plane * hw + j]);
    }
    output[plane] = act(sum / f32(hw));
}

// input = dy [planes], output = dx [planes, in_h*in_w].
@compute @workgroup_size(WG, 1, 1)
fn global_avg_backward(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>,
                       @builtin(num_workgroups) groups: vec3<u32>) {
    let i = flat_index(wg, lid, groups, WG);
    let hw = p.in_h * p.in_w;
    if i >= p.planes * hw { return; }
    output[i] = act(f32(input[i / hw]) / f32(hw));
}
