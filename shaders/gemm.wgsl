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

// Version 2: vec4 loads along memory. Each invocation owns V2_ROWS (8) rows x 4
// consecutive columns and steps K four at a time: 8 vec4 loads of A (rows along
// k) and 4 of B (k rows, 4 columns) feed 128 multiply-adds, against 8 scalar
// loads per 16 in `matmul`. Needs K and N to be multiples of 4 (the host checks).
const V2_ROWS: u32 = 8u;
@group(0) @binding(4) var<storage, read> a4: array<vec4<f32>>;
@group(0) @binding(5) var<storage, read> b4: array<vec4<f32>>;
@group(0) @binding(6) var<storage, read_write> c4: array<vec4<f32>>;

@compute @workgroup_size(WG_N, WG_M, 1)
fn matmul_vec4(@builtin(global_invocation_id) gid: vec3<u32>) {
    let col4 = gid.x;              // column group: columns 4*col4 .. 4*col4+3
    let row0 = gid.y * V2_ROWS;
    let n4 = p.n / 4u;
    let k4 = p.k / 4u;
    if col4 >= n4 || row0 >= p.m { return; }
    var rows: array<u32, V2_ROWS>;
    for (var i = 0u; i < V2_ROWS; i++) {
        rows[i] = min(row0 + i, p.m - 1u) * k4;
    }
    var acc: array<vec4<f32>, V2_ROWS>;
    for (var kk = 0u; kk < k4; kk++) {
        let b0 = b4[(4u * kk) * n4 + col4];
        let b1 = b4[(4u * kk + 1u) * n4 + col4];
        let b2 = b4[(4u * kk + 2u) * n4 + col4];
        let b3 = b4[(4u * kk + 3u) * n4 + col4];
        for (var i = 0u; i < V2_ROWS; i++) {
            let av = a4[rows[i] + kk];
            acc[i] = fma(vec4<f32>(av.x), b0, acc[i]);
            acc[i] = fma(vec4<f32>(av.y), b1, acc[i]);
            acc[i] = fma(vec4<f32>(av.z), b2, acc[i]);
            acc[i] = fma(vec4<f32>(av.w), b3, acc[i]);
        }
    }
    for (var i = 0u; i < V2_ROWS; i++) {
        if row0 + i < p.m {
            c4[(row0 + i) * n4 + col4] = acc[i];
        }
    }
}

// Version 3: the GPU shape. A workgroup of WG_N x WG_M invocations owns a
// (4 WG_M) x (4 WG_N) tile of C; the K loop stages a TK-deep slice of A and B
// in workgroup memory with coalesced loads, and each invocation multiplies its
// 4 consecutive rows by its 4 consecutive columns from there (vec4 reads). The
// same scheme as shaders/conv_tiled.wgsl without the im2col addressing, so the
// two compare directly. Any sizes; tiles up to V3_CAP rows and columns.
const TK: u32 = 8u;
const V3_CAP: u32 = 128u;
var<workgroup> tile_a: array<vec4<f32>, TK * V3_CAP / 4u>;
var<workgroup> tile_b: array<vec4<f32>, TK * V3_CAP / 4u>;

@compute @workgroup_size(WG_N, WG_M, 1)
fn matmul_tiled(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>,
                @builtin(local_invocation_index) lin: u32) {
    let count = WG_N * WG_M;
    let bm = 4u * WG_M;
    let bn = 4u * WG_N;
    let m0 = wg.y * bm;
    let n0 = wg.x * bn;
    var acc: array<vec4<f32>, 4>;
    for (var k0 = 0u; k0 < p.k; k0 += TK) {
        workgroupBarrier();
        for (var e = lin; e < TK * bm; e += count) {
            let kk = e % TK;
            let mm = e / TK;
            let ok = m0 + mm < p.m && k0 + kk < p.k;
            let v = a[min(m0 + mm, p.m - 1u) * p.k + min(k0 + kk, p.k - 1u)];
            tile_a[kk * WG_M + mm / 4u][mm % 4u] = select(0.0, v, ok);
        }
        for (var e = lin; e < TK * bn; e += count) {
            let nn = e % bn;
            let kk = e / bn;
            let ok = n0 + nn < p.n && k0 + kk < p.k;
            let v = b[min(k0 + kk, p.k - 1u) * p.n + min(n0 + nn, p.n - 1u)];
            tile_b[kk * WG_N + nn / 4u][nn % 4u] = select(0.0, v, ok);
        }
        workgroupBarrier();
        for (var kk = 0u; kk < TK; kk++) {
            let av = tile_a[kk * WG_M + lid.y];
            let bv = tile_b[kk * WG_N + lid.x];
            acc[0] = fma(vec4<f32>(av.x), bv, acc[0]);
            acc[1] = fma(vec4<f32>(av.y), bv, acc[1]);
            acc[2] = fma(vec4<f32>(av.z), bv, acc[2]);
            acc[3] = fma(vec4<f32>(av.w), bv, acc[3]);
        }
    }
    for (var i = 0u; i < 4u; i++) {
        let row = m0 + 4u * lid.y + i;
        for (var j = 0u; j < 4u; j++) {
            let col = n0 + 4u * lid.x + j;
            if row < p.m && col < p.n {
                c[row * p.n + col] = acc[i][j];
            }
        }
    }
}
