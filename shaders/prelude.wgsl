// Helpers shared by the op files; src/gpu/kernels.rs joins this file before
// each op file that uses them.

// The flat index of an invocation in a grid spread over x and y
// (gpu::elementwise_grid): workgroups of `size` invocations, counted row by row.
fn flat_index(wg: vec3<u32>, lid: vec3<u32>, groups: vec3<u32>, size: u32) -> u32 {
    return (wg.y * groups.x + wg.x) * size + lid.x;
}

