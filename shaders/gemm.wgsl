// Plain GEMM C[M,N] = A[M,K] * B[K,N], row-major f32: the yardstick the conv
// kernels are measured against in `bench ops`. Same register tiling as conv.wgsl
// (4x4 per invocation, rows and columns interleaved by the workgroup shape), so
// the gap between the two is the cost of the implicit im2col addressing.

struct GemmParams {
    m: u32,
    n: u32,
    k: u32,
    _pad0: u32,
}

override WG_N: u32 = 16u;
override WG_M: u32 = 4u;
const TILE: u32 = 4u;

@group(0) @binding(0) var<uniform> p: GemmParams;
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<f32>;
@group(0) @binding(3) var<storage, read_write> c: array<f32>;

@compute @workgroup_size(WG_N, WG_M, 1)
fn matmul(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let m0 = wg.y * WG_M * TILE + lid.y;
    let n0 = wg.x * WG_N * TILE + lid.x;
    var cols: vec4<u32>;
    var rows: vec4<u32>;
    for (var j = 0u; j < TILE; j++) {
        cols[j] = min(n0 + j * WG_N, p.n - 1u);
        rows[j] = min(m0 + j * WG_M, p.m - 1u) * p.k;
    }
    var acc: array<vec4<f32>, 4>;
    for (var k = 0u; k < p.k; k++) {
        let line = k * p.n;
        let bv = vec4<f32>(b[line + cols.x], b[line + cols.y], b[line + cols.z], b[line + cols.w]);
        let av = vec4<f32>(a[rows.x + k], a[rows.y + k], a[rows.z + k], a[rows.w + k]);
        acc[0] = fma(vec4<f32>(av.x), bv, acc[0]);
        acc[1] = fma(vec4<f32>(av.y), bv, acc[1]);
        acc[2] = fma(vec4<f32>(av.z), bv, acc[2]);
        acc[3] = fma(vec4<f32>(av.w), bv, acc[3]);
    }
    for (var i = 0u; i < TILE; i++) {
        let row = m0 + i * WG_M;
        if row >= p.m { break; }
        for (var j = 0u; j < TILE; j++) {
            let col = n0 + j * WG_N;
            if col >= p.n { break; }
            c[row * p.n + col] = acc[i][j];
        }
    }
}
