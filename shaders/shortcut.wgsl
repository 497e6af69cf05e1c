// Option-A shortcut of the CIFAR ResNets (He et al. 2015): no parameters.
// y[:, pad_front + c] = x[:, c, ::stride, ::stride], the other channels zero
// (pad_front = (out_c - in_c) / 2 zero channels before, the rest after).

struct ShortcutParams {
    batch: u32,
    in_c: u32,
    in_h: u32,
    in_w: u32,
    out_c: u32,
    out_h: u32,
    out_w: u32,
    stride: u32,
    pad_front: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

override WG: u32 = 256u;

@group(0) @binding(0) var<uniform> p: ShortcutParams;
@group(0) @binding(1) var<storage, read> input: array<act>;
@group(0) @binding(2) var<storage, read_write> output: array<act>;

// input = x, output = y; one invocation per element of y.
@compute @workgroup_size(WG, 1, 1)
fn forward(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>,
           @builtin(num_workgroups) groups: vec3<u32>) {
    let i = flat_index(wg, lid, groups, WG);
    let out_hw = p.out_h * p.out_w;
    if i >= p.batch * p.out_c * out_hw { return; }
    let r = i % out_hw;
    let c = (i / out_hw) % p.out_c;
    let b = i / (out_hw * p.out_c);
    var value = act(0.0);
    if c >= p.pad_front && c < p.pad_front + p.in_c {
        let ih = (r / p.out_w) * p.stride;
        let iw = (r % p.out_w) * p.stride;
        value = input[((b * p.in_c + c - p.pad_front) * p.in_h + ih) * p.in_w + iw];
    }
    output[i] = value;
}

// input = dy, output = dx; one invocation per element of dx.
@compute @workgroup_size(WG, 1, 1)
fn backward(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>,
            @builtin(num_workgroups) groups: vec3<u32>) {
    let i = flat_index(wg, lid, groups, WG);
    let in_hw = p.in_h * p.in_w;
    if i >= p.batch * p.in_c * in_hw { return; }
    let ih = (i % in_hw) / p.in_w;
    let iw = i % p.in_w;
    let c = (i / in_hw) % p.in_c;
    let b = i / (in_hw * p.in_c);
    var value = act(0.0);
    if ih % p.stride == 0u && iw % p.stride == 0u {
        let oh = ih / p.stride;
        let ow = iw / p.stride;
        value = input[((b * p.out_c + c + p.pad_front) * p.out_h + oh) * p.out_w + ow];
    }
    output[i] = value;
}
