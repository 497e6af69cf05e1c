// Workgroup reduction prelude with subgroup operations: the candidate to
// reduce.wgsl on adapters with the subgroups feature (src/gpu/kernels.rs
// builds batchnorm_subgroup and loss_subgroup from it). The op file defines WG.
// No `enable subgroups;`: naga 30 rejects the directive and takes subgroup
// operations from the device's SUBGROUP feature instead; Tint would need it,
// so the browser build never uses these modules.

var<workgroup> partial: array<vec2<f32>, WG>;

// Each subgroup adds its values in registers (subgroupAdd) and its first
// invocation leaves the sum in its own slot of `partial` (the others leave
// zero). After one barrier, each invocation adds the slots lane, lane + size,
// ... and a second subgroupAdd makes the total. This needs no assumption on
// how invocations map to subgroups, and one barrier instead of log2(WG).
// Every invocation gets the total. Call from uniform control flow.
fn workgroup_sum(value: vec2<f32>, lid: u32) -> vec2<f32> {
    let own = subgroupAdd(value);
    let lane = subgroupExclusiveAdd(1u);
    let size = subgroupAdd(1u);
    partial[lid] = select(vec2<f32>(0.0), own, lane == 0u);
    workgroupBarrier();
    var sum = vec2<f32>(0.0);
    for (var i = lane; i < WG; i += size) {
        sum += partial[i];
    }
    let total = subgroupAdd(sum);
    workgroupBarrier();
    return total;
}
