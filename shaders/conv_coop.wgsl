// Conv candidates on cooperative matrices (tensor cores; Apple's simdgroup
// matrices; lavapipe 26.1's emulation): the three passes of conv_tiled.wgsl as
// implicit GEMMs whose multiply runs as CM x CM x CM f16 x f16 -> f32
// matrix multiply-adds, offered at --precision f16 on adapters that list that
// configuration. The header src/gpu/kernels.rs writes for the device defines
// CM (8 or 16, the adapter's size) and the aliases coop_a, coop_b (f16
// operands) and coop_c (f32 accumulator); one source serves both sizes.
//
// A workgroup of WG invocations (4 x the adapter's largest subgroup, so at
// least 4 subgroups) owns a BT x BT tile of the output matrix, BT = 4 CM.
// Subgroups 0-3 each own a 2 CM x 2 CM quarter of it (2 x 2 accumulators);
// any further subgroups (an adapter whose subgroups are smaller than its
// largest) repeat a quarter and do not write it out (see `Lane`). The K loop
// stages a TK = 2 CM deep slice of A
// (BT x TK) and B (TK x BT) in workgroup memory as f16, with the same index
// maps and zero fill as conv_tiled.wgsl (its comments explain them):
//   forward          M = out_c, N = batch*out_h*out_w, K = in_c*kh*kw
//   backward_input   M = in_c,  N = input pixels of one class (workgroup z),
//                    K = out_c*taps of that class
//   backward_weight  M = out_c, N = in_c*kh*kw, K = batch*out_h*out_w split
//                    over workgroup z into [k_splits][out_c][N] partial sums
// The epilogue stores each accumulator to its quarter's scratch tile and the
// subgroup's lanes write it out with the bounds checks (ragged M and N), so
// f16 outputs are rounded once, from the f32 sum, as the other candidates do.
// The host needs WG to be a multiple of BT (each invocation stages one fixed
// column of B, whose pixel decode it computes once).

override WG: u32 = 32u;
// Square kernel size baked into the pipeline (0: read from the params).
override KERNEL: u32 = 0u;
const BT: u32 = 4u * CM;
const TK: u32 = 2u * CM;
// Row strides padded by 8 halves (16 bytes) so that rows start on different
// banks and every row stays 16-byte aligned for the matrix loads.
const A_STRIDE: u32 = TK + 8u;
const B_STRIDE: u32 = BT + 8u;

var<workgroup> tile_a: array<f16, BT * A_STRIDE>;
var<workgroup> tile_b: array<f16, TK * B_STRIDE>;
var<workgroup> scratch: array<f32, 4u * CM * CM>;

fn kernel_h() -> u32 { return select(p.kernel_h, KERNEL, KERNEL != 0u); }
fn kernel_w() -> u32 { return select(p.kernel_w, KERNEL, KERNEL != 0u); }

// The invocation's place: its subgroup's quarter of the tile (row0, col0)
// and its lane. Subgroups beyond the 4th (an adapter whose subgroups are
// smaller than its largest) compute a quarter again: naga requires matrix
// operations in uniform control flow, so none may sit out (their scratch
// stores write the same values as their quarter's owner); `writes` is true
// for the 4 whose lanes write the output.
struct Lane {
    quarter: u32,
    lane: u32,
    size: u32,
    writes: bool,
    row0: u32,
    col0: u32,
}

fn lane_of(sg: u32, lane: u32, size: u32) -> Lane {
    let q = sg % 4u;
    return Lane(q, lane, size, sg < 4u, (q / 2u) * 2u * CM, (q % 2u) * 2u * CM);
}

// Where a quarter's accumulator (i, j) is left for the epilogue: after
// `coopStoreT(c, &scratch[scratch_base(l)], CM)` and a barrier, element e
// of the CM x CM block is scratch_at(l, e), at row e / CM, column e % CM.
fn scratch_base(l: Lane) -> u32 { return l.quarter * CM * CM; }
fn scratch_at(l: Lane, e: u32) -> f32 { return scratch[l.quarter * CM * CM + e]; }

// The accumulators are four locals of each entry point, multiplied and
// stored inline: on lavapipe 26.1 a struct of cooperative matrices (or a
// pointer to one passed to a function) crashes the driver's compiler.

// The slice of A as weight[m][k0 + k] of a row-major [M][K] matrix (forward).
fn stage_weight_rows(lin: u32, m0: u32, k0: u32, m_total: u32, k_total: u32) {
    for (var e = lin; e < BT * TK; e += WG) {
        let mm = e / TK;
        let kk = e % TK;
        let m = m0 + mm;
        let k = k0 + kk;
        let ok = m < m_total && k < k_total;
        let v = weight[min(m, m_total - 1u) * k_total + min(k, k_total - 1u)];
        tile_a[mm * A_STRIDE + kk] = select(f16(0.0), f16(v), ok);
    }
}

@compute @workgroup_size(WG, 1, 1)
fn forward(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lin: u32,
           @builtin(subgroup_id) sg: u32, @builtin(subgroup_invocation_id) sg_lane: u32,
           @builtin(subgroup_size) sg_size: u32,
    @builtin(num_workgroups) groups: vec3<u32>) {
    let l = lane_of(sg, sg_lane, sg_size);
    let kh_n = kernel_h();
    let kw_n = kernel_w();
    let khw = kh_n * kw_n;
    let out_hw = p.out_h * p.out_w;
    let n_total = p.batch * out_hw;
    let k_total = p.in_c * khw;
    let in_hw = i32(p.in_h * p.in_w);
    let block = tile_block(wg, groups);
    let m0 = block.y * BT;
    let n0 = block.x * BT;

    let col = lin % BT;
    let n = n0 + col;
    let col_ok = n < n_total;
    let nn = min(n, n_total - 1u);
    let img = i32((nn / out_hw) * p.in_c) * in_hw;
    let r = nn % out_hw;
    let ih0 = i32((r / p.out_w) * p.stride) - i32(p.pad);
    let iw0 = i32((r % p.out_w) * p.stride) - i32(p.pad);

    var c00 = coop_c();
    var c01 = coop_c();
    var c10 = coop_c();
    var c11 = coop_c();
    for (var k0 = 0u; k0 < k_total; k0 += TK) {
        workgroupBarrier();
        stage_weight_rows(lin, m0, k0, p.out_c, k_total);
        for (var kk = lin / BT; kk < TK; kk += WG / BT) {
            let k = k0 + kk;
            let ci = k / khw;
            let t = k % khw;
            let ih = ih0 + i32(t / kw_n);
            let iw = iw0 + i32(t % kw_n);
            let ok = col_ok && k < k_total && ih >= 0 && ih < i32(p.in_h) && iw >= 0 && iw < i32(p.in_w);
            let at = img + i32(ci) * in_hw + ih * i32(p.in_w) + iw;
            tile_b[kk * B_STRIDE + col] = select(f16(0.0), f16(input[u32(max(at, 0))]), ok);
        }
        workgroupBarrier();
        // acc += A[quarter rows][slice] B[slice][quarter columns].
        for (var kc = 0u; kc < TK; kc += CM) {
            let a0 = coopLoadT<coop_a>(&tile_a[l.row0 * A_STRIDE + kc], A_STRIDE);
            let a1 = coopLoadT<coop_a>(&tile_a[(l.row0 + CM) * A_STRIDE + kc], A_STRIDE);
            let b0 = coopLoadT<coop_b>(&tile_b[kc * B_STRIDE + l.col0], B_STRIDE);
            let b1 = coopLoadT<coop_b>(&tile_b[kc * B_STRIDE + l.col0 + CM], B_STRIDE);
            c00 = coopMultiplyAdd(a0, b0, c00);
            c01 = coopMultiplyAdd(a0, b1, c01);
            c10 = coopMultiplyAdd(a1, b0, c10);
            c11 = coopMultiplyAdd(a1, b1, c11);
        }
    }

    for (var t = 0u; t < 4u; t++) {
        workgroupBarrier();
        let at = &scratch[scratch_base(l)];
        switch t {
            case 0u: { coopStoreT(c00, at, CM); }
            case 1u: { coopStoreT(c01, at, CM); }
            case 2u: { coopStoreT(c10, at, CM); }
            default: { coopStoreT(c11, at, CM); }
        }
        workgroupBarrier();
        let i = t / 2u;
        let j = t % 2u;
        for (var e = l.lane; l.writes && e < CM * CM; e += l.size) {
            let co = m0 + l.row0 + i * CM + e / CM;
            let n = n0 + l.col0 + j * CM + e % CM;
            if co < p.out_c && n < n_total {
                output[((n / out_hw) * p.out_c + co) * out_hw + n % out_hw] = act(scratch_at(l, e));
            }
        }
    }
}

@compute @workgroup_size(WG, 1, 1)
fn backward_input(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lin: u32,
                  @builtin(subgroup_id) sg: u32, @builtin(subgroup_invocation_id) sg_lane: u32,
                  @builtin(subgroup_size) sg_size: u32,
    @builtin(num_workgroups) groups: vec3<u32>) {
    let l = lane_of(sg, sg_lane, sg_size);
    let kh_n = kernel_h();
    let kw_n = kernel_w();
    let s = p.stride;
    let rh = wg.z / s;
    let rw = wg.z % s;
    let ih_first = (rh + s - p.pad % s) % s;
    let iw_first = (rw + s - p.pad % s) % s;
    let rows = select(0u, (p.in_h - ih_first + s - 1u) / s, ih_first < p.in_h);
    let cols = max(select(0u, (p.in_w - iw_first + s - 1u) / s, iw_first < p.in_w), 1u);
    let class_hw = max(rows * cols, 1u);
    let n_total = select(0u, p.batch * rows * cols, rows > 0u);
    let taps_h = select(0u, (kh_n - rh + s - 1u) / s, rh < kh_n);
    let taps_w = select(0u, (kw_n - rw + s - 1u) / s, rw < kw_n);
    let taps = max(taps_h * taps_w, 1u);
    let tw_n = max(taps_w, 1u);
    let k_total = select(0u, p.out_c * taps_h * taps_w, taps_h * taps_w > 0u);
    let khw = kh_n * kw_n;
    let in_hw = p.in_h * p.in_w;
    let out_hw = p.out_h * p.out_w;
    let block = tile_block(wg, groups);
    let m0 = block.y * BT;
    let n0 = block.x * BT;

    let col = lin % BT;
    let n = n0 + col;
    let col_ok = n < n_total;
    let nn = min(n, max(n_total, 1u) - 1u);
    let img = (nn / class_hw) * p.out_c * out_hw;
    let r = nn % class_hw;
    let th = i32(ih_first + s * (r / cols) + p.pad);
    let tw = i32(iw_first + s * (r % cols) + p.pad);

    var c00 = coop_c();
    var c01 = coop_c();
    var c10 = coop_c();
    var c11 = coop_c();
    for (var k0 = 0u; k0 < k_total; k0 += TK) {
        workgroupBarrier();
        // A[ci][k] = weight[co][ci][kh][kw] for k = (co, tap).
        for (var e = lin; e < BT * TK; e += WG) {
            let mm = e / TK;
            let kk = e % TK;
            let ci = m0 + mm;
            let k = k0 + kk;
            let co = k / taps;
            let t = k % taps;
            let kh = rh + s * (t / tw_n);
            let kw = rw + s * (t % tw_n);
            let ok = ci < p.in_c && k < k_total;
            let at = (min(co, p.out_c - 1u) * p.in_c + min(ci, p.in_c - 1u)) * khw + min(kh * kw_n + kw, khw - 1u);
            tile_a[mm * A_STRIDE + kk] = select(f16(0.0), f16(weight[at]), ok);
        }
        // B[k][n] = grad_output[b][co][oh][ow] with oh = (ih + pad - kh) / s.
        for (var kk = lin / BT; kk < TK; kk += WG / BT) {
            let k = k0 + kk;
            let co = k / taps;
            let t = k % taps;
            let kh = i32(rh + s * (t / tw_n));
            let kw = i32(rw + s * (t % tw_n));
            let oh = (th - kh) / i32(s);
            let ow = (tw - kw) / i32(s);
            let ok = col_ok && k < k_total && th >= kh && oh < i32(p.out_h) && tw >= kw && ow < i32(p.out_w);
            let at = i32(img + co * out_hw) + oh * i32(p.out_w) + ow;
            tile_b[kk * B_STRIDE + col] = select(f16(0.0), f16(grad_output[u32(max(at, 0))]), ok);
        }
        workgroupBarrier();
        // acc += A[quarter rows][slice] B[slice][quarter columns].
        for (var kc = 0u; kc < TK; kc += CM) {
            let a0 = coopLoadT<coop_a>(&tile_a[l.row0 * A_STRIDE + kc], A_STRIDE);
            let a1 = coopLoadT<coop_a>(&tile_a[(l.row0 + CM) * A_STRIDE + kc], A_STRIDE);
            let b0 = coopLoadT<coop_b>(&tile_b[kc * B_STRIDE + l.col0], B_STRIDE);
            let b1 = coopLoadT<coop_b>(&tile_b[kc * B_STRIDE + l.col0 + CM], B_STRIDE);
            c00 = coopMultiplyAdd(a0, b0, c00);
            c01 = coopMultiplyAdd(a0, b1, c01);
            c10 = coopMultiplyAdd(a1, b0, c10);
            c11 = coopMultiplyAdd(a1, b1, c11);
        }
    }

    for (var t = 0u; t < 4u; t++) {
        workgroupBarrier();
        let at = &scratch[scratch_base(l)];
        switch t {
            case 0u: { coopStoreT(c00, at, CM); }
            case 1u: { coopStoreT(c01, at, CM); }
            case 2u: { coopStoreT(c10, at, CM); }
            default: { coopStoreT(c11, at, CM); }
        }
        workgroupBarrier();
        let i = t / 2u;
        let j = t % 2u;
        for (var e = l.lane; l.writes && e < CM * CM; e += l.size) {
            let ci = m0 + l.row0 + i * CM + e / CM;
            let n = n0 + l.col0 + j * CM + e % CM;
            if ci < p.in_c && n < n_total {
                let r = n % class_hw;
                let ih = ih_first + s * (r / cols);
                let iw = iw_first + s * (r % cols);
                let at = ((n / class_hw) * p.in_c + ci) * in_hw + ih * p.in_w + iw;
                grad_input[at] = act(accumulated(at, scratch_at(l, e)));
            }
        }
    }
}

@compute @workgroup_size(WG, 1, 1)
fn backward_weight(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lin: u32,
                   @builtin(subgroup_id) sg: u32, @builtin(subgroup_invocation_id) sg_lane: u32,
                   @builtin(subgroup_size) sg_size: u32,
    @builtin(num_workgroups) groups: vec3<u32>) {
    let l = lane_of(sg, sg_lane, sg_size);
    let kh_n = kernel_h();
    let kw_n = kernel_w();
    let khw = kh_n * kw_n;
    let n_total = p.in_c * khw;
    let out_hw = p.out_h * p.out_w;
    let k_all = p.batch * out_hw;
    let in_hw = p.in_h * p.in_w;
    let block = tile_block(wg, groups);
    let m0 = block.y * BT;
    let n0 = block.x * BT;
    // This workgroup's share of K (whole slices, so splits never share one).
    let chunk = ((k_all + p.k_splits - 1u) / p.k_splits + TK - 1u) / TK * TK;
    let k_begin = min(wg.z * chunk, k_all);
    let k_end = min(k_begin + chunk, k_all);

    let col = lin % BT;
    let n = n0 + col;
    let col_ok = n < n_total;
    let nn = min(n, n_total - 1u);
    let chan = (nn / khw) * in_hw;
    let t = nn % khw;
    let dh = i32(t / kw_n) - i32(p.pad);
    let dw = i32(t % kw_n) - i32(p.pad);

    var c00 = coop_c();
    var c01 = coop_c();
    var c10 = coop_c();
    var c11 = coop_c();
    for (var k0 = k_begin; k0 < k_end; k0 += TK) {
        workgroupBarrier();
        // A[co][k] = grad_output[b][co][pixel] for k = (b, pixel).
        for (var e = lin; e < BT * TK; e += WG) {
            let mm = e / TK;
            let kk = e % TK;
            let co = m0 + mm;
            let k = min(k0 + kk, k_all - 1u);
            let ok = co < p.out_c && k0 + kk < k_end;
            let at = ((k / out_hw) * p.out_c + min(co, p.out_c - 1u)) * out_hw + k % out_hw;
            tile_a[mm * A_STRIDE + kk] = select(f16(0.0), f16(grad_output[at]), ok);
        }
        // B[k][n] = input[b][ci][oh s + kh - pad][ow s + kw - pad].
        for (var kk = lin / BT; kk < TK; kk += WG / BT) {
            let k = min(k0 + kk, k_all - 1u);
            let b = k / out_hw;
            let r = k % out_hw;
            let ih = i32((r / p.out_w) * p.stride) + dh;
            let iw = i32((r % p.out_w) * p.stride) + dw;
            let ok = col_ok && k0 + kk < k_end && ih >= 0 && ih < i32(p.in_h) && iw >= 0 && iw < i32(p.in_w);
            let at = i32(b * p.in_c * in_hw + chan) + ih * i32(p.in_w) + iw;
            tile_b[kk * B_STRIDE + col] = select(f16(0.0), f16(input[u32(max(at, 0))]), ok);
        }
        workgroupBarrier();
        // acc += A[quarter rows][slice] B[slice][quarter columns].
        for (var kc = 0u; kc < TK; kc += CM) {
            let a0 = coopLoadT<coop_a>(&tile_a[l.row0 * A_STRIDE + kc], A_STRIDE);
            let a1 = coopLoadT<coop_a>(&tile_a[(l.row0 + CM) * A_STRIDE + kc], A_STRIDE);
            let b0 = coopLoadT<coop_b>(&tile_b[kc * B_STRIDE + l.col0], B_STRIDE);
            let b1 = coopLoadT<coop_b>(&tile_b[kc * B_STRIDE + l.col0 + CM], B_STRIDE);
            c00 = coopMultiplyAdd(a0, b0, c00);
            c01 = coopMultiplyAdd(a0, b1, c01);
            c10 = coopMultiplyAdd(a1, b0, c10);
            c11 = coopMultiplyAdd(a1, b1, c11);
        }
    }

    let split_base = wg.z * p.out_c * n_total;
    for (var t = 0u; t < 4u; t++) {
        workgroupBarrier();
        let at = &scratch[scratch_base(l)];
        switch t {
            case 0u: { coopStoreT(c00, at, CM); }
            case 1u: { coopStoreT(c01, at, CM); }
            case 2u: { coopStoreT(c10, at, CM); }
            default: { coopStoreT(c11, at, CM); }
        }
        workgroupBarrier();
        let i = t / 2u;
        let j = t % 2u;
        for (var e = l.lane; l.writes && e < CM * CM; e += l.size) {
            let co = m0 + l.row0 + i * CM + e / CM;
            let n = n0 + l.col0 + j * CM + e % CM;
            if co < p.out_c && n < n_total {
                grad_weight[split_base + co * n_total + n] = scratch_at(l, e);
            }
        }
    }
}
