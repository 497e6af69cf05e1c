// GPU-sized SIMT conv candidates: the three passes of conv_tiled.wgsl with
// 8x8 register micro-tiles, 128-row workgroup tiles and TK = 16, for f32 (and
// f16 storage where a device has no cooperative matrices).
//
// A workgroup of TW_N x TW_M invocations owns a BM x BN output tile (BM =
// 8 TW_M, BN = 8 TW_N: 128x128 with 16x16 invocations, 128x64 with 8x16);
// each invocation owns 8 consecutive rows x 8 consecutive columns, 64
// accumulators, and per k reads 2 vec4 of A and 2 of B from workgroup memory
// for 64 FMAs: 1 FMA per byte, twice conv_tiled's 4x4 (an H100 SM's
// workgroup memory feeds about 1.1 FMA per byte at full FP32 rate). The K
// loop is double-buffered through registers: the next slice is loaded from
// global memory into registers before the current slice is multiplied, and
// stored to workgroup memory after it, so the loads' latency hides behind
// the FMAs. Each k-row of the slices is padded by one vec4, so the staging
// writes (consecutive invocations write consecutive k of one row) fall in
// different banks. The index maps and zero fill are conv_tiled.wgsl's (its
// comments explain them); kernel size and stride are pipeline overrides, so
// the tap decoding's divisions fold into multiplies.
//   forward          M = out_c, N = batch*out_h*out_w, K = in_c*kh*kw
//   backward_input   M = in_c,  N = input pixels of one class (workgroup z),
//                    K = out_c*taps of that class
//   backward_weight  M = out_c, N = in_c*kh*kw, K = batch*out_h*out_w split
//                    over workgroup z into [k_splits][out_c][N] partial sums
// The host needs TW_M * TW_N to divide BM * TK and TK * BN, and BN to divide
// TW_M * TW_N (each invocation stages one fixed column of B).

override TW_N: u32 = 16u;
override TW_M: u32 = 16u;
override KERNEL: u32 = 0u;
override STRIDE: u32 = 0u;
const TK: u32 = 16u;
const CAP: u32 = 128u;
// vec4s per k-row of a slice: the largest tile's 32, padded by one.
const ROW4: u32 = CAP / 4u + 1u;
// Elements of A and of B one invocation stages per slice, at most.
const MAX_A: u32 = 16u;
const MAX_B: u32 = 16u;

var<workgroup> tile_a: array<vec4<f32>, TK * ROW4>;
var<workgroup> tile_b: array<vec4<f32>, TK * ROW4>;

fn kernel_h() -> u32 { return select(p.kernel_h, KERNEL, KERNEL != 0u); }
fn kernel_w() -> u32 { return select(p.kernel_w, KERNEL, KERNEL != 0u); }
fn stride() -> u32 { return select(p.stride, STRIDE, STRIDE != 0u); }

fn threads() -> u32 { return TW_N * TW_M; }
fn bm() -> u32 { return 8u * TW_M; }
fn bn() -> u32 { return 8u * TW_N; }

fn set_a(k: u32, m: u32, v: f32) { tile_a[k * ROW4 + m / 4u][m % 4u] = v; }
fn set_b(k: u32, n: u32, v: f32) { tile_b[k * ROW4 + n / 4u][n % 4u] = v; }

// The slice element an invocation's r-th A register holds: (k, m).
fn a_slot(lin: u32, r: u32) -> vec2<u32> {
    let e = lin + r * threads();
    return vec2<u32>(e % TK, e / TK);
}

// The k of an invocation's r-th B register (its column is lin % bn()).
fn b_row(lin: u32, r: u32) -> u32 { return lin / bn() + r * (threads() / bn()); }

fn a_count() -> u32 { return bm() * TK / threads(); }
fn b_count() -> u32 { return TK * bn() / threads(); }

fn store_slice(lin: u32, ra: ptr<function, array<f32, MAX_A>>, rb: ptr<function, array<f32, MAX_B>>) {
    for (var r = 0u; r < a_count(); r++) {
        let slot = a_slot(lin, r);
        set_a(slot.x, slot.y, (*ra)[r]);
    }
    let col = lin % bn();
    for (var r = 0u; r < b_count(); r++) {
        set_b(b_row(lin, r), col, (*rb)[r]);
    }
}

// acc[2 i + h] += A[row i][k] * B[k][columns 4h..4h+3] over the slice.
fn multiply_slice(acc: ptr<function, array<vec4<f32>, 16>>, tx: u32, ty: u32) {
    for (var k = 0u; k < TK; k++) {
        let a0 = tile_a[k * ROW4 + 2u * ty];
        let a1 = tile_a[k * ROW4 + 2u * ty + 1u];
        let b0 = tile_b[k * ROW4 + 2u * tx];
        let b1 = tile_b[k * ROW4 + 2u * tx + 1u];
        for (var i = 0u; i < 4u; i++) {
            (*acc)[2u * i] = fma(vec4<f32>(a0[i]), b0, (*acc)[2u * i]);
            (*acc)[2u * i + 1u] = fma(vec4<f32>(a0[i]), b1, (*acc)[2u * i + 1u]);
            (*acc)[8u + 2u * i] = fma(vec4<f32>(a1[i]), b0, (*acc)[8u + 2u * i]);
            (*acc)[8u + 2u * i + 1u] = fma(vec4<f32>(a1[i]), b1, (*acc)[8u + 2u * i + 1u]);
        }
    }
}

// The accumulator of row i (0..8), column j (0..8) of the micro-tile.
fn acc_at(acc: ptr<function, array<vec4<f32>, 16>>, i: u32, j: u32) -> f32 {
    return (*acc)[2u * i + j / 4u][j % 4u];
}

// ---- forward: A = weight [out_c][K], B = the input's im2col columns.

struct ForwardColumn {
    ok: bool,
    img: i32,
    ih0: i32,
    iw0: i32,
}

fn forward_column(n: u32) -> ForwardColumn {
    let out_hw = p.out_h * p.out_w;
    let n_total = p.batch * out_hw;
    let nn = min(n, n_total - 1u);
    let r = nn % out_hw;
    return ForwardColumn(
        n < n_total,
        i32((nn / out_hw) * p.in_c) * i32(p.in_h * p.in_w),
        i32((r / p.out_w) * stride()) - i32(p.pad),
        i32((r % p.out_w) * stride()) - i32(p.pad),
    );
}

fn load_forward(lin: u32, m0: u32, k0: u32, c: ForwardColumn,
                ra: ptr<function, array<f32, MAX_A>>, rb: ptr<function, array<f32, MAX_B>>) {
    let khw = kernel_h() * kernel_w();
    let k_total = p.in_c * khw;
    for (var r = 0u; r < a_count(); r++) {
        let slot = a_slot(lin, r);
        let m = m0 + slot.y;
        let k = k0 + slot.x;
        let ok = m < p.out_c && k < k_total;
        (*ra)[r] = select(0.0, f32(weight[min(m, p.out_c - 1u) * k_total + min(k, k_total - 1u)]), ok);
    }
    let in_hw = i32(p.in_h * p.in_w);
    for (var r = 0u; r < b_count(); r++) {
        let k = k0 + b_row(lin, r);
        let ci = k / khw;
        let t = k % khw;
        let ih = c.ih0 + i32(t / kernel_w());
        let iw = c.iw0 + i32(t % kernel_w());
        let ok = c.ok && k < k_total && ih >= 0 && ih < i32(p.in_h) && iw >= 0 && iw < i32(p.in_w);
        let at = c.img + i32(ci) * in_hw + ih * i32(p.in_w) + iw;
        (*rb)[r] = select(0.0, f32(input[u32(max(at, 0))]), ok);
    }
}

@compute @workgroup_size(TW_N, TW_M, 1)
fn forward(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>,
           @builtin(local_invocation_index) lin: u32,
    @builtin(num_workgroups) groups: vec3<u32>) {
    let block = tile_block(wg, groups);
    let m0 = block.y * bm();
    let n0 = block.x * bn();
    let k_total = p.in_c * kernel_h() * kernel_w();
    let column = forward_column(n0 + lin % bn());
    var ra: array<f32, MAX_A>;
    var rb: array<f32, MAX_B>;
    var acc: array<vec4<f32>, 16>;
    load_forward(lin, m0, 0u, column, &ra, &rb);
    for (var k0 = 0u; k0 < k_total; k0 += TK) {
        workgroupBarrier();
        store_slice(lin, &ra, &rb);
        workgroupBarrier();
        if k0 + TK < k_total {
            load_forward(lin, m0, k0 + TK, column, &ra, &rb);
        }
        multiply_slice(&acc, lid.x, lid.y);
    }
    let out_hw = p.out_h * p.out_w;
    let n_total = p.batch * out_hw;
    for (var i = 0u; i < 8u; i++) {
        let co = m0 + 8u * lid.y + i;
        for (var j = 0u; j < 8u; j++) {
            let n = n0 + 8u * lid.x + j;
            if co < p.out_c && n < n_total {
                output[((n / out_hw) * p.out_c + co) * out_hw + n % out_hw] = act(acc_at(&acc, i, j));
            }
        }
    }
}

// ---- backward_input: per pixel class (workgroup z), A[ci][k] = weight
// [co][ci][kh][kw] and B[k][n] = grad_output gathered, k = (co, tap).

struct InputClass {
    rh: u32,
    rw: u32,
    ih_first: u32,
    iw_first: u32,
    cols: u32,
    class_hw: u32,
    n_total: u32,
    taps: u32,
    taps_w: u32,
    k_total: u32,
}

fn input_class(z: u32) -> InputClass {
    let s = stride();
    let rh = z / s;
    let rw = z % s;
    let ih_first = (rh + s - p.pad % s) % s;
    let iw_first = (rw + s - p.pad % s) % s;
    let rows = select(0u, (p.in_h - ih_first + s - 1u) / s, ih_first < p.in_h);
    let cols = max(select(0u, (p.in_w - iw_first + s - 1u) / s, iw_first < p.in_w), 1u);
    let taps_h = select(0u, (kernel_h() - rh + s - 1u) / s, rh < kernel_h());
    let taps_w = select(0u, (kernel_w() - rw + s - 1u) / s, rw < kernel_w());
    return InputClass(
        rh, rw, ih_first, iw_first, cols, max(rows * cols, 1u),
        select(0u, p.batch * rows * cols, rows > 0u),
        max(taps_h * taps_w, 1u), max(taps_w, 1u),
        select(0u, p.out_c * taps_h * taps_w, taps_h * taps_w > 0u),
    );
}

fn load_backward_input(lin: u32, m0: u32, k0: u32, c: InputClass, n: u32,
                       ra: ptr<function, array<f32, MAX_A>>, rb: ptr<function, array<f32, MAX_B>>) {
    let s = stride();
    let khw = kernel_h() * kernel_w();
    for (var r = 0u; r < a_count(); r++) {
        let slot = a_slot(lin, r);
        let ci = m0 + slot.y;
        let k = k0 + slot.x;
        let co = k / c.taps;
        let t = k % c.taps;
        let kh = c.rh + s * (t / c.taps_w);
        let kw = c.rw + s * (t % c.taps_w);
        let ok = ci < p.in_c && k < c.k_total;
        let at = (min(co, p.out_c - 1u) * p.in_c + min(ci, p.in_c - 1u)) * khw + min(kh * kernel_w() + kw, khw - 1u);
        (*ra)[r] = select(0.0, f32(weight[at]), ok);
    }
    let out_hw = p.out_h * p.out_w;
    let nn = min(n, max(c.n_total, 1u) - 1u);
    let img = (nn / c.class_hw) * p.out_c * out_hw;
    let q = nn % c.class_hw;
    let th = i32(c.ih_first + s * (q / c.cols) + p.pad);
    let tw = i32(c.iw_first + s * (q % c.cols) + p.pad);
    for (var r = 0u; r < b_count(); r++) {
        let k = k0 + b_row(lin, r);
        let co = k / c.taps;
        let t = k % c.taps;
        let kh = i32(c.rh + s * (t / c.taps_w));
        let kw = i32(c.rw + s * (t % c.taps_w));
        let oh = (th - kh) / i32(s);
        let ow = (tw - kw) / i32(s);
        let ok = n < c.n_total && k < c.k_total && th >= kh && oh < i32(p.out_h) && tw >= kw && ow < i32(p.out_w);
        let at = i32(img + co * out_hw) + oh * i32(p.out_w) + ow;
        (*rb)[r] = select(0.0, f32(grad_output[u32(max(at, 0))]), ok);
    }
}

@compute @workgroup_size(TW_N, TW_M, 1)
fn backward_input(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>,
                  @builtin(local_invocation_index) lin: u32,
    @builtin(num_workgroups) groups: vec3<u32>) {
    let block = tile_block(wg, groups);
    let m0 = block.y * bm();
    let n0 = block.x * bn();
    let c = input_class(wg.z);
    let n = n0 + lin % bn();
    var ra: array<f32, MAX_A>;
    var rb: array<f32, MAX_B>;
    var acc: array<vec4<f32>, 16>;
    load_backward_input(lin, m0, 0u, c, n, &ra, &rb);
    for (var k0 = 0u; k0 < c.k_total; k0 += TK) {
        workgroupBarrier();
        store_slice(lin, &ra, &rb);
        workgroupBarrier();
        if k0 + TK < c.k_total {
            load_backward_input(lin, m0, k0 + TK, c, n, &ra, &rb);
        }
        multiply_slice(&acc, lid.x, lid.y);
    }
    let s = stride();
    let in_hw = p.in_h * p.in_w;
    for (var i = 0u; i < 8u; i++) {
        let ci = m0 + 8u * lid.y + i;
        for (var j = 0u; j < 8u; j++) {
            let n = n0 + 8u * lid.x + j;
            if ci < p.in_c && n < c.n_total {
                let q = n % c.class_hw;
                let ih = c.ih_first + s * (q / c.cols);
                let iw = c.iw_first + s * (q % c.cols);
                let at = ((n / c.class_hw) * p.in_c + ci) * in_hw + ih * p.in_w + iw;
                grad_input[at] = act(accumulated(at, acc_at(&acc, i, j)));
            }
        }
    }
}

// ---- backward_weight: A[co][k] = grad_output[b][co][pixel], B[k][n] =
// input[b][ci][oh s + kh - pad][ow s + kw - pad], n = (ci, kh, kw).

struct WeightColumn {
    ok: bool,
    chan: u32,
    dh: i32,
    dw: i32,
}

fn weight_column(n: u32) -> WeightColumn {
    let khw = kernel_h() * kernel_w();
    let n_total = p.in_c * khw;
    let nn = min(n, n_total - 1u);
    let t = nn % khw;
    return WeightColumn(
        n < n_total,
        (nn / khw) * p.in_h * p.in_w,
        i32(t / kernel_w()) - i32(p.pad),
        i32(t % kernel_w()) - i32(p.pad),
    );
}

fn load_backward_weight(lin: u32, m0: u32, k0: u32, k_end: u32, c: WeightColumn,
                        ra: ptr<function, array<f32, MAX_A>>, rb: ptr<function, array<f32, MAX_B>>) {
    let out_hw = p.out_h * p.out_w;
    let k_all = p.batch * out_hw;
    for (var r = 0u; r < a_count(); r++) {
        let slot = a_slot(lin, r);
        let co = m0 + slot.y;
        let k = min(k0 + slot.x, k_all - 1u);
        let ok = co < p.out_c && k0 + slot.x < k_end;
        let at = ((k / out_hw) * p.out_c + min(co, p.out_c - 1u)) * out_hw + k % out_hw;
        (*ra)[r] = select(0.0, f32(grad_output[at]), ok);
    }
    let in_hw = p.in_h * p.in_w;
    for (var r = 0u; r < b_count(); r++) {
        let kk = b_row(lin, r);
        let k = min(k0 + kk, k_all - 1u);
        let b = k / out_hw;
        let q = k % out_hw;
        let ih = i32((q / p.out_w) * stride()) + c.dh;
        let iw = i32((q % p.out_w) * stride()) + c.dw;
        let ok = c.ok && k0 + kk < k_end && ih >= 0 && ih < i32(p.in_h) && iw >= 0 && iw < i32(p.in_w);
        let at = i32(b * p.in_c * in_hw + c.chan) + ih * i32(p.in_w) + iw;
        (*rb)[r] = select(0.0, f32(input[u32(max(at, 0))]), ok);
    }
}

@compute @workgroup_size(TW_N, TW_M, 1)
fn backward_weight(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>,
                   @builtin(local_invocation_index) lin: u32,
    @builtin(num_workgroups) groups: vec3<u32>) {
    let block = tile_block(wg, groups);
    let m0 = block.y * bm();
    let n0 = block.x * bn();
    let n_total = p.in_c * kernel_h() * kernel_w();
    let k_all = p.batch * p.out_h * p.out_w;
    // This workgroup's share of K (whole slices, so splits never share one).
    let chunk = ((k_all + p.k_splits - 1u) / p.k_splits + TK - 1u) / TK * TK;
    let k_begin = min(wg.z * chunk, k_all);
    let k_end = min(k_begin + chunk, k_all);
    let column = weight_column(n0 + lin % bn());
    var ra: array<f32, MAX_A>;
    var rb: array<f32, MAX_B>;
    var acc: array<vec4<f32>, 16>;
    load_backward_weight(lin, m0, k_begin, k_end, column, &ra, &rb);
    for (var k0 = k_begin; k0 < k_end; k0 += TK) {
        workgroupBarrier();
        store_slice(lin, &ra, &rb);
        workgroupBarrier();
        if k0 + TK < k_end {
            load_backward_weight(lin, m0, k0 + TK, k_end, column, &ra, &rb);
        }
        multiply_slice(&acc, lid.x, lid.y);
    }
    let split_base = wg.z * p.out_c * n_total;
    for (var i = 0u; i < 8u; i++) {
        let co = m0 + 8u * lid.y + i;
        for (var j = 0u; j < 8u; j++) {
            let n = n0 + 8u * lid.x + j;
            if co < p.out_c && n < n_total {
                grad_weight[split_base + co * n_total + n] = acc_at(&acc, i, j);
            }
        }
    }
}
