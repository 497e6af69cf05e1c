// The conv family's parameters and storage bindings, joined before conv.wgsl
// and conv_tiled.wgsl (src/gpu/kernels.rs), so every conv kernel candidate
// reads the same ConvParams (src/ops/conv.rs mirrors it) at the same bindings.
// Activations, their gradients and the weights are `act` (f32, or f16 under
// mixed precision: the f16 copy of the weights); kernels convert to f32 as they
// load, accumulate in f32, and the weight gradient is f32 at either precision.

struct ConvParams {
    batch: u32,
    in_c: u32,
    in_h: u32,
    in_w: u32,
    out_c: u32,
    out_h: u32,
    out_w: u32,
    kernel_h: u32,
    kernel_w: u32,
    stride: u32,
    pad: u32,
    k_splits: u32,
    // Row blocks of the output tile grid: where the column blocks exceed the
    // adapter's per-dimension limit, the host folds them into y in bands of
    // row_blocks (see `tile_block`).
    row_blocks: u32,
    // backward_input: 1 adds the result to what grad_input holds (the plan
    // sums a residual block's two input gradients so, without an add pass).
    accumulate: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> p: ConvParams;
@group(0) @binding(1) var<storage, read> input: array<act>;
@group(0) @binding(2) var<storage, read> weight: array<act>;
@group(0) @binding(3) var<storage, read_write> output: array<act>;
@group(0) @binding(4) var<storage, read> grad_output: array<act>;
@group(0) @binding(5) var<storage, read_write> grad_input: array<act>;
@group(0) @binding(6) var<storage, read_write> grad_weight: array<f32>;

// backward_input's value for grad_input[i]: `v`, plus what is there when
// accumulating.
fn accumulated(i: u32, v: f32) -> f32 {
    if p.accumulate != 0u {
        return v + f32(grad_input[i]);
    }
    return v;
}

// A workgroup's (column block, row block) of the output tile grid. The host
// dispatches [x, row_blocks * bands, z] with x * bands >= the column blocks
// (bands = 1 unless the columns exceed the adapter's per-dimension limit);
// blocks past the last column write nothing (every kernel bounds-checks n).
fn tile_block(wg: vec3<u32>, groups: vec3<u32>) -> vec2<u32> {
    return vec2<u32>(wg.x + (wg.y / p.row_blocks) * groups.x, wg.y % p.row_blocks);
}
