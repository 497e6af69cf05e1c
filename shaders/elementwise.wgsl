// ReLU and residual add, forward and backward, over flat tensors of `act`
// (f32 or f16, from the precision header; the arithmetic is exact or one
// rounding either way).
// The fused BN+ReLU and BN+add+ReLU forms live in batchnorm.wgsl; these serve
// layers that stand alone and the gradient sum where a tensor feeds two consumers.

struct ElementwiseParams {
    len: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

override WG: u32 = 256u;

@group(0) @binding(0) var<uniform> p: ElementwiseParams;
@group(0) @binding(1) var<storage, read> lhs: array<act>;
@group(0) @binding(2) var<storage, read> rhs: array<act>;
@group(0) @binding(3) var<storage, read_write> output: array<act>;

// Each kernel indexes a 2-D grid of workgroups (flat_index, shaders/prelude.wgsl)
// so large tensors stay within 65535 groups per dimension.

// output = max(lhs, 0)
@compute @workgroup_size(WG, 1, 1)
fn relu_forward(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>,
                @builtin(num_workgroups) groups: vec3<u32>) {
    let i = flat_index(wg, lid, groups, WG);
    if i >= p.len { return; }
    output[i] = max(lhs[i], 0.0);
}

// output = lhs (grad of the ReLU output) where rhs (the ReLU output) > 0, else 0
@compute @workgroup_size(WG, 1, 1)
fn relu_backward(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>,
                 @builtin(num_workgroups) groups: vec3<u32>) {
    let i = flat_index(wg, lid, groups, WG);
    if i >= p.len { return; }
    output[i] = select(0.0, lhs[i], rhs[i] > 0.0);
}

// output = lhs + rhs: the residual add forward, and the gradient sum at a fork.
// Its backward is the identity for both operands.
@compute @workgroup_size(WG, 1, 1)
fn add(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>,
       @builtin(num_workgroups) groups: vec3<u32>) {
    let i = flat_index(wg, lid, groups, WG);
    if i >= p.len { return; }
    output[i] = lhs[i] + rhs[i];
}
