// Workgroup reduction prelude: prepended to batchnorm.wgsl and loss.wgsl by
// src/gpu/kernels.rs, which also builds them with reduce_subgroup.wgsl instead
// (a candidate for adapters with subgroups). The op file defines WG, its
// workgroup size (a power of two).

var<workgroup> partial: array<vec2<f32>, WG>;

// Tree sum over the workgroup through workgroup memory; every invocation gets
// the total. Call from uniform control flow.
fn workgroup_sum(value: vec2<f32>, lid: u32) -> vec2<f32> {
    partial[lid] = value;
    workgroupBarrier();
    for (var stride = WG / 2u; stride > 0u; stride = stride / 2u) {
        if lid < stride {
            partial[lid] += partial[lid + stride];
        }
        workgroupBarrier();
    }
    let total = partial[0];
    workgroupBarrier();
    return total;
}
