// 2-D convolution, NCHW activations, OIHW weights, zero padding, no bias.
//
// All three passes are implicit GEMMs (no im2col buffer): each invocation owns a
// TILE x TILE register tile of the output matrix, rows and columns interleaved by
// the workgroup size so neighbouring invocations touch neighbouring addresses.
//   forward          M = out_c, N = batch*out_h*out_w, K = in_c*kh*kw
//   backward_input   M = in_c,  N = batch*in_h*in_w,   K = out_c*kh*kw (stride > 1:
//                    backward_input_strided, one pixel class of stride^2 per z)
//   backward_weight  M = out_c, N = in_c*kh*kw,        K = batch*out_h*out_w
// backward_weight splits K over workgroup_id.z (k_splits) so small weight
// matrices still fill a GPU; partial sums are added by reduce_weight_splits.

// Invocations per workgroup along N (x) and M (y); `bench` may retune them.
override WG_N: u32 = 16u;
override WG_M: u32 = 4u;
// The register tile is fixed at 4x4: WGSL sizes function-scope arrays only with
// constants, and vec4 accumulators map onto every backend's vector registers.
const TILE: u32 = 4u;
// Square kernel size and stride baked into the pipeline (0: read from the params
// at run time). backward_input uses them: with the stride known, its divisions
// and parity tests fold away and the tap loops unroll (30% faster on lavapipe).
// forward and backward_weight measured no faster (forward 10% slower) with
// them, so the host leaves them generic there.
override KERNEL: u32 = 0u;
override STRIDE: u32 = 0u;

// ConvParams `p` and bindings 1-6 come from conv_params.wgsl.
@group(0) @binding(7) var<storage, read> weight_partials: array<f32>;

fn load_input(index: i32, valid: bool) -> f32 {
    return select(0.0, f32(input[u32(max(index, 0))]), valid);
}

fn load_grad_output(index: i32, valid: bool) -> f32 {
    return select(0.0, f32(grad_output[u32(max(index, 0))]), valid);
}

@compute @workgroup_size(WG_N, WG_M, 1)
fn forward(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>) {
    let out_hw = p.out_h * p.out_w;
    let n_total = p.batch * out_hw;
    let k_total = p.in_c * p.kernel_h * p.kernel_w;
    let in_hw = i32(p.in_h * p.in_w);
    let block = tile_block(wg, groups);
    let m0 = block.y * WG_M * TILE + lid.y;
    let n0 = block.x * WG_N * TILE + lid.x;

    // Per column: where its receptive field starts in the input.
    var col_ok: vec4<bool>;
    var img_base: vec4<i32>;
    var ih0: vec4<i32>;
    var iw0: vec4<i32>;
    for (var j = 0u; j < TILE; j++) {
        let n = n0 + j * WG_N;
        col_ok[j] = n < n_total;
        let nn = min(n, n_total - 1u);
        let b = nn / out_hw;
        let r = nn % out_hw;
        img_base[j] = i32(b * p.in_c) * in_hw;
        ih0[j] = i32((r / p.out_w) * p.stride) - i32(p.pad);
        iw0[j] = i32((r % p.out_w) * p.stride) - i32(p.pad);
    }
    var row_base: vec4<u32>;
    for (var i = 0u; i < TILE; i++) {
        row_base[i] = min(m0 + i * WG_M, p.out_c - 1u) * k_total;
    }

    var acc: array<vec4<f32>, 4>;
    var k = 0u;
    for (var ci = 0u; ci < p.in_c; ci++) {
        let chan_base = img_base + vec4<i32>(i32(ci) * in_hw);
        for (var kh = 0u; kh < p.kernel_h; kh++) {
            let ih = ih0 + vec4<i32>(i32(kh));
            let row_ok = col_ok & (ih >= vec4<i32>(0)) & (ih < vec4<i32>(i32(p.in_h)));
            let line = chan_base + ih * i32(p.in_w);
            for (var kw = 0u; kw < p.kernel_w; kw++) {
                let iw = iw0 + vec4<i32>(i32(kw));
                let ok = row_ok & (iw >= vec4<i32>(0)) & (iw < vec4<i32>(i32(p.in_w)));
                let idx = line + iw;
                let xv = vec4<f32>(load_input(idx.x, ok.x), load_input(idx.y, ok.y),
                                   load_input(idx.z, ok.z), load_input(idx.w, ok.w));
                let wv = vec4<f32>(f32(weight[row_base.x + k]), f32(weight[row_base.y + k]),
                                   f32(weight[row_base.z + k]), f32(weight[row_base.w + k]));
                acc[0] = fma(vec4<f32>(wv.x), xv, acc[0]);
                acc[1] = fma(vec4<f32>(wv.y), xv, acc[1]);
                acc[2] = fma(vec4<f32>(wv.z), xv, acc[2]);
                acc[3] = fma(vec4<f32>(wv.w), xv, acc[3]);
                k++;
            }
        }
    }

    for (var i = 0u; i < TILE; i++) {
        let co = m0 + i * WG_M;
        if co >= p.out_c { break; }
        for (var j = 0u; j < TILE; j++) {
            let n = n0 + j * WG_N;
            if n >= n_total { break; }
            let b = n / out_hw;
            output[(b * p.out_c + co) * out_hw + n % out_hw] = act(acc[i][j]);
        }
    }
}

@compute @workgroup_size(WG_N, WG_M, 1)
fn backward_input(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>) {
    let kh_n = select(p.kernel_h, KERNEL, KERNEL != 0u);
    let kw_n = select(p.kernel_w, KERNEL, KERNEL != 0u);
    let stride_n = select(p.stride, STRIDE, STRIDE != 0u);
    let in_hw = p.in_h * p.in_w;
    let n_total = p.batch * in_hw;
    let out_hw = i32(p.out_h * p.out_w);
    let khw = kh_n * kw_n;
    let s = i32(stride_n);
    let block = tile_block(wg, groups);
    let m0 = block.y * WG_M * TILE + lid.y;
    let n0 = block.x * WG_N * TILE + lid.x;

    // Per column (an input pixel): its image in grad_output and its padded position.
    var col_ok: vec4<bool>;
    var img_base: vec4<i32>;
    var th: vec4<i32>;
    var tw: vec4<i32>;
    for (var j = 0u; j < TILE; j++) {
        let n = n0 + j * WG_N;
        col_ok[j] = n < n_total;
        let nn = min(n, n_total - 1u);
        let b = nn / in_hw;
        let r = nn % in_hw;
        img_base[j] = i32(b * p.out_c) * out_hw;
        th[j] = i32(r / p.in_w + p.pad);
        tw[j] = i32(r % p.in_w + p.pad);
    }
    // Row ci reads weight[co][ci][kh][kw] = weight[co*in_c*khw + ci*khw + kh*kw_n + kw].
    var row_base: vec4<u32>;
    for (var i = 0u; i < TILE; i++) {
        row_base[i] = min(m0 + i * WG_M, p.in_c - 1u) * khw;
    }

    var acc: array<vec4<f32>, 4>;
    for (var co = 0u; co < p.out_c; co++) {
        let chan_base = img_base + vec4<i32>(i32(co) * out_hw);
        let w_co = co * p.in_c * khw;
        for (var kh = 0u; kh < kh_n; kh++) {
            // Output row oh contributes when oh*stride + kh == ih + pad.
            let t = th - vec4<i32>(i32(kh));
            let oh = t / vec4<i32>(s);
            let row_ok = col_ok & (t >= vec4<i32>(0)) & (oh * s == t) & (oh < vec4<i32>(i32(p.out_h)));
            let line = chan_base + oh * i32(p.out_w);
            for (var kw = 0u; kw < kw_n; kw++) {
                let u = tw - vec4<i32>(i32(kw));
                let ow = u / vec4<i32>(s);
                let ok = row_ok & (u >= vec4<i32>(0)) & (ow * s == u) & (ow < vec4<i32>(i32(p.out_w)));
                let idx = line + ow;
                let gv = vec4<f32>(load_grad_output(idx.x, ok.x), load_grad_output(idx.y, ok.y),
                                   load_grad_output(idx.z, ok.z), load_grad_output(idx.w, ok.w));
                let k = w_co + kh * kw_n + kw;
                let wv = vec4<f32>(f32(weight[row_base.x + k]), f32(weight[row_base.y + k]),
                                   f32(weight[row_base.z + k]), f32(weight[row_base.w + k]));
                acc[0] = fma(vec4<f32>(wv.x), gv, acc[0]);
                acc[1] = fma(vec4<f32>(wv.y), gv, acc[1]);
                acc[2] = fma(vec4<f32>(wv.z), gv, acc[2]);
                acc[3] = fma(vec4<f32>(wv.w), gv, acc[3]);
            }
        }
    }

    for (var i = 0u; i < TILE; i++) {
        let ci = m0 + i * WG_M;
        if ci >= p.in_c { break; }
        for (var j = 0u; j < TILE; j++) {
            let n = n0 + j * WG_N;
            if n >= n_total { break; }
            let b = n / in_hw;
            let at = (b * p.in_c + ci) * in_hw + n % in_hw;
            grad_input[at] = act(accumulated(at, acc[i][j]));
        }
    }
}

// backward_input for stride > 1. Input row ih receives gradient only from taps
// kh with kh == (ih + pad) mod s. workgroup_id.z picks one residue class of (ih + pad,
// iw + pad) mod s, so each invocation walks only the taps that contribute:
// for 3x3 stride 2 that is 2.25 of 9, instead of testing all 9 (2x faster on
// lavapipe). For stride 1 the plain kernel above measured faster.
@compute @workgroup_size(WG_N, WG_M, 1)
fn backward_input_strided(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>) {
    let kh_n = select(p.kernel_h, KERNEL, KERNEL != 0u);
    let kw_n = select(p.kernel_w, KERNEL, KERNEL != 0u);
    let s = select(p.stride, STRIDE, STRIDE != 0u);
    let rh = wg.z / s;
    let rw = wg.z % s;
    // The input rows/columns of this class: ih = ih_first + s * t.
    let ih_first = (rh + s - p.pad % s) % s;
    let iw_first = (rw + s - p.pad % s) % s;
    let rows = select(0u, (p.in_h - ih_first + s - 1u) / s, ih_first < p.in_h);
    let cols = select(0u, (p.in_w - iw_first + s - 1u) / s, iw_first < p.in_w);
    let class_hw = rows * cols;
    let n_total = p.batch * class_hw;
    let in_hw = p.in_h * p.in_w;
    let out_hw = i32(p.out_h * p.out_w);
    let khw = kh_n * kw_n;
    let si = i32(s);
    let block = tile_block(wg, groups);
    let m0 = block.y * WG_M * TILE + lid.y;
    let n0 = block.x * WG_N * TILE + lid.x;

    // Per column (an input pixel of the class): its image in grad_output, its
    // padded position, and where its gradient goes.
    var col_ok: vec4<bool>;
    var img_base: vec4<i32>;
    var th: vec4<i32>;
    var tw: vec4<i32>;
    var dst: vec4<u32>;
    for (var j = 0u; j < TILE; j++) {
        let n = n0 + j * WG_N;
        col_ok[j] = n < n_total;
        let nn = min(n, max(n_total, 1u) - 1u);
        let b = nn / max(class_hw, 1u);
        let r = nn % max(class_hw, 1u);
        let ih = ih_first + s * (r / max(cols, 1u));
        let iw = iw_first + s * (r % max(cols, 1u));
        img_base[j] = i32(b * p.out_c) * out_hw;
        th[j] = i32(ih + p.pad);
        tw[j] = i32(iw + p.pad);
        dst[j] = b * p.in_c * in_hw + ih * p.in_w + iw;
    }
    // Row ci reads weight[co][ci][kh][kw] = weight[co*in_c*khw + ci*khw + kh*kw_n + kw].
    var row_base: vec4<u32>;
    for (var i = 0u; i < TILE; i++) {
        row_base[i] = min(m0 + i * WG_M, p.in_c - 1u) * khw;
    }

    var acc: array<vec4<f32>, 4>;
    for (var co = 0u; co < p.out_c; co++) {
        let chan_base = img_base + vec4<i32>(i32(co) * out_hw);
        let w_co = co * p.in_c * khw;
        for (var kh = rh; kh < kh_n; kh += s) {
            // Output row oh = (ih + pad - kh) / s, exact within the class.
            let t = th - vec4<i32>(i32(kh));
            let oh = t / vec4<i32>(si);
            let row_ok = col_ok & (t >= vec4<i32>(0)) & (oh < vec4<i32>(i32(p.out_h)));
            let line = chan_base + oh * i32(p.out_w);
            for (var kw = rw; kw < kw_n; kw += s) {
                let u = tw - vec4<i32>(i32(kw));
                let ow = u / vec4<i32>(si);
                let ok = row_ok & (u >= vec4<i32>(0)) & (ow < vec4<i32>(i32(p.out_w)));
                let idx = line + ow;
                let gv = vec4<f32>(load_grad_output(idx.x, ok.x), load_grad_output(idx.y, ok.y),
                                   load_grad_output(idx.z, ok.z), load_grad_output(idx.w, ok.w));
                let k = w_co + kh * kw_n + kw;
                let wv = vec4<f32>(f32(weight[row_base.x + k]), f32(weight[row_base.y + k]),
                                   f32(weight[row_base.z + k]), f32(weight[row_base.w + k]));
                acc[0] = fma(vec4<f32>(wv.x), gv, acc[0]);
                acc[1] = fma(vec4<f32>(wv.y), gv, acc[1]);
                acc[2] = fma(vec4<f32>(wv.z), gv, acc[2]);
                acc[3] = fma(vec4<f32>(wv.w), gv, acc[3]);
            }
        }
    }

    for (var i = 0u; i < TILE; i++) {
        let ci = m0 + i * WG_M;
        if ci >= p.in_c { break; }
        for (var j = 0u; j < TILE; j++) {
            if !col_ok[j] { break; }
            grad_input[dst[j] + ci * in_hw] = act(accumulated(dst[j] + ci * in_hw, acc[i][j]));
        }
    }
}

@compute @workgroup_size(WG_N, WG_M, 1)
fn backward_weight(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>) {
    let khw = p.kernel_h * p.kernel_w;
    let n_total = p.in_c * khw;
    let out_hw = p.out_h * p.out_w;
    let k_total = p.batch * out_hw;
    let in_hw = i32(p.in_h * p.in_w);
    let block = tile_block(wg, groups);
    let m0 = block.y * WG_M * TILE + lid.y;
    let n0 = block.x * WG_N * TILE + lid.x;

    // This workgroup's share of K, walked as (b, oh, ow) counters to avoid divisions.
    let chunk = (k_total + p.k_splits - 1u) / p.k_splits;
    let k_begin = min(wg.z * chunk, k_total);
    let k_end = min(k_begin + chunk, k_total);

    // Per column (ci, kh, kw): channel offset and the tap's offset from the window origin.
    var col_ok: vec4<bool>;
    var chan_off: vec4<i32>;
    var dh: vec4<i32>;
    var dw: vec4<i32>;
    for (var j = 0u; j < TILE; j++) {
        let n = n0 + j * WG_N;
        col_ok[j] = n < n_total;
        let nn = min(n, n_total - 1u);
        let ci = nn / khw;
        let r = nn % khw;
        chan_off[j] = i32(ci) * in_hw;
        dh[j] = i32(r / p.kernel_w) - i32(p.pad);
        dw[j] = i32(r % p.kernel_w) - i32(p.pad);
    }
    var rows: vec4<u32>;
    for (var i = 0u; i < TILE; i++) {
        rows[i] = min(m0 + i * WG_M, p.out_c - 1u);
    }

    var acc: array<vec4<f32>, 4>;
    var b = k_begin / out_hw;
    var oh = (k_begin % out_hw) / p.out_w;
    var ow = k_begin % p.out_w;
    for (var k = k_begin; k < k_end; k++) {
        let ih = vec4<i32>(i32(oh * p.stride)) + dh;
        let iw = vec4<i32>(i32(ow * p.stride)) + dw;
        let ok = col_ok & (ih >= vec4<i32>(0)) & (ih < vec4<i32>(i32(p.in_h)))
                 & (iw >= vec4<i32>(0)) & (iw < vec4<i32>(i32(p.in_w)));
        let idx = vec4<i32>(i32(b * p.in_c) * in_hw) + chan_off + ih * i32(p.in_w) + iw;
        let xv = vec4<f32>(load_input(idx.x, ok.x), load_input(idx.y, ok.y),
                           load_input(idx.z, ok.z), load_input(idx.w, ok.w));
        let g_base = b * p.out_c * out_hw + oh * p.out_w + ow;
        let gv = vec4<f32>(f32(grad_output[g_base + rows.x * out_hw]), f32(grad_output[g_base + rows.y * out_hw]),
                           f32(grad_output[g_base + rows.z * out_hw]), f32(grad_output[g_base + rows.w * out_hw]));
        acc[0] = fma(vec4<f32>(gv.x), xv, acc[0]);
        acc[1] = fma(vec4<f32>(gv.y), xv, acc[1]);
        acc[2] = fma(vec4<f32>(gv.z), xv, acc[2]);
        acc[3] = fma(vec4<f32>(gv.w), xv, acc[3]);
        ow++;
        if ow == p.out_w {
            ow = 0u;
            oh++;
            if oh == p.out_h {
                oh = 0u;
                b++;
            }
        }
    }

    // With k_splits > 1 grad_weight is a [k_splits][out_c][n_total] scratch buffer.
    let split_base = wg.z * p.out_c * n_total;
    for (var i = 0u; i < TILE; i++) {
        let co = m0 + i * WG_M;
        if co >= p.out_c { break; }
        for (var j = 0u; j < TILE; j++) {
            let n = n0 + j * WG_N;
            if n >= n_total { break; }
            grad_weight[split_base + co * n_total + n] = acc[i][j];
        }
    }
}

// grad_weight[i] = sum over splits of weight_partials[split][i].
override WG_SPLITS: u32 = 256u;
@compute @workgroup_size(WG_SPLITS, 1, 1)
fn reduce_weight_splits(@builtin(global_invocation_id) gid: vec3<u32>) {
    let len = p.out_c * p.in_c * p.kernel_h * p.kernel_w;
    let i = gid.x;
    if i >= len { return; }
    var sum = 0.0;
    for (var s = 0u; s < p.k_splits; s++) {
        sum += weight_partials[s * len + i];
    }
    grad_weight[i] = sum;
}

// 3x3, stride 1, pad 1 convolutions on images whose width is a multiple of 8:
// ResNet's workhorse layer. Written for CPU adapters such as lavapipe, which run
// invocations as SIMD lanes: a load whose address differs per lane is a loop
// over the lanes, one whose address is the same for all is one load.
// - Each invocation computes 8 consecutive pixels of a row (two vec4s), so a
//   row of the source loads as four aligned vec4s (left neighbour, own two,
//   right neighbour) and the three horizontal taps are shuffles of them.
// - All invocations of a workgroup share the same SQ_ROWS output channels
//   (workgroup_id.y), so every weight load is uniform and feeds 8 pixels.
// forward:        dst = output, src = input, weight[m][c][kh][kw]
// backward_input: dst = grad_input, src = grad_output, weight[c][m][2-kh][2-kw]
//                 (the correlation with the kernel rotated by 180 degrees)
// M rows are output (forward) or input (backward) channels; C the other side.
override SQ_WG: u32 = 64u;
override SQ_TRANSPOSED: bool = false;
const SQ_ROWS: u32 = 16u;
@group(0) @binding(8) var<storage, read> src4: array<vec4<act>>;
@group(0) @binding(9) var<storage, read_write> dst4: array<vec4<act>>;

// The three horizontal taps (kw = 0, 1, 2) of 8 pixels starting at quad q of a
// source row: the 8 pixels as vec4s a and d, shifted left (a0, d0) and right
// (a2, d2) by one, with zero padding beyond the row.
struct Taps8 {
    a0: vec4<f32>, a: vec4<f32>, a2: vec4<f32>,
    d0: vec4<f32>, d: vec4<f32>, d2: vec4<f32>,
}

fn taps8(row: u32, q: u32, w4: u32) -> Taps8 {
    let a = vec4<f32>(src4[row + q]);
    let d = vec4<f32>(src4[row + q + 1u]);
    var left = vec4<f32>(0.0);
    var right = vec4<f32>(0.0);
    if q > 0u { left = vec4<f32>(src4[row + q - 1u]); }
    if q + 2u < w4 { right = vec4<f32>(src4[row + q + 2u]); }
    return Taps8(vec4<f32>(left.w, a.xyz), a, vec4<f32>(a.yzw, d.x),
                 vec4<f32>(a.w, d.xyz), d, vec4<f32>(d.yzw, right.x));
}

fn sq_weight(m: u32, c: u32, kh: u32, kw: u32, m_total: u32, c_total: u32) -> f32 {
    if SQ_TRANSPOSED {
        return f32(weight[((c * m_total + m) * 3u + 2u - kh) * 3u + 2u - kw]);
    }
    return f32(weight[((m * c_total + c) * 3u + kh) * 3u + kw]);
}

@compute @workgroup_size(SQ_WG, 1, 1)
fn conv3x3_s1(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    // Forward reduces over in_c into out_c rows; backward_input the other way.
    let m_total = select(p.out_c, p.in_c, SQ_TRANSPOSED);
    let c_total = select(p.in_c, p.out_c, SQ_TRANSPOSED);
    let h = p.in_h;
    let w4 = p.in_w / 4u;
    let w8 = w4 / 2u;
    let pairs = p.batch * h * w8;
    let g = wg.x * SQ_WG + lid.x;
    if g >= pairs { return; }
    let b = g / (h * w8);
    let oh = (g / w8) % h;
    let q = 2u * (g % w8);
    let m0 = wg.y * SQ_ROWS;

    var acc0: array<vec4<f32>, SQ_ROWS>;
    var acc1: array<vec4<f32>, SQ_ROWS>;
    for (var c = 0u; c < c_total; c++) {
        let plane = (b * c_total + c) * h * w4;
        for (var kh = 0u; kh < 3u; kh++) {
            let ih = i32(oh + kh) - 1;
            if ih < 0 || ih >= i32(h) { continue; }
            let t = taps8(plane + u32(ih) * w4, q, w4);
            for (var i = 0u; i < SQ_ROWS; i++) {
                let m = min(m0 + i, m_total - 1u);
                let w0 = vec4<f32>(sq_weight(m, c, kh, 0u, m_total, c_total));
                let w1 = vec4<f32>(sq_weight(m, c, kh, 1u, m_total, c_total));
                let w2 = vec4<f32>(sq_weight(m, c, kh, 2u, m_total, c_total));
                acc0[i] = fma(w0, t.a0, fma(w1, t.a, fma(w2, t.a2, acc0[i])));
                acc1[i] = fma(w0, t.d0, fma(w1, t.d, fma(w2, t.d2, acc1[i])));
            }
        }
    }
    for (var i = 0u; i < SQ_ROWS; i++) {
        let m = m0 + i;
        if m >= m_total { break; }
        let at = ((b * m_total + m) * h + oh) * w4 + q;
        if p.accumulate != 0u {
            acc0[i] += vec4<f32>(dst4[at]);
            acc1[i] += vec4<f32>(dst4[at + 1u]);
        }
        dst4[at] = vec4<act>(acc0[i]);
        dst4[at + 1u] = vec4<act>(acc1[i]);
    }
}

// Weight gradient of the 3x3/1 convolutions that conv3x3_s1 serves (with at
// least 8 input channels), made the same way: each invocation owns one input channel c (the lane) and BW_ROWS
// output channels shared by its workgroup, and walks 8-pixel row segments of
// its share of the batch. The grad_output loads are then uniform (the same
// pixels and channels for every lane) and each source row of x loads as four
// vec4s that feed all nine taps. Workgroup x splits the pixels; partial sums go
// to a [k_splits][out_c][in_c*9] buffer that reduce_weight_splits adds up.
// Two output channels per workgroup measured fastest (four spill registers).
override BW_WG: u32 = 16u;
const BW_ROWS: u32 = 2u;
@group(0) @binding(10) var<storage, read> grad4: array<vec4<act>>;

@compute @workgroup_size(BW_WG, 1, 1)
fn conv3x3_s1_weight(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let h = p.in_h;
    let w4 = p.in_w / 4u;
    let w8 = w4 / 2u;
    let segments = p.batch * h * w8;
    let chunk = (segments + p.k_splits - 1u) / p.k_splits;
    let begin = min(wg.x * chunk, segments);
    let end = min(begin + chunk, segments);
    let c = wg.z * BW_WG + lid.x;
    let cc = min(c, p.in_c - 1u);
    let m0 = wg.y * BW_ROWS;

    var acc: array<vec4<f32>, 18>; // BW_ROWS x 9 taps
    for (var g = begin; g < end; g++) {
        let b = g / (h * w8);
        let oh = (g / w8) % h;
        let q = 2u * (g % w8);
        var dy: array<vec4<f32>, 4>; // BW_ROWS x 2 halves
        for (var r = 0u; r < BW_ROWS; r++) {
            let at = ((b * p.out_c + min(m0 + r, p.out_c - 1u)) * h + oh) * w4 + q;
            dy[2u * r] = vec4<f32>(grad4[at]);
            dy[2u * r + 1u] = vec4<f32>(grad4[at + 1u]);
        }
        for (var kh = 0u; kh < 3u; kh++) {
            let ih = i32(oh + kh) - 1;
            if ih < 0 || ih >= i32(h) { continue; }
            let t = taps8(((b * p.in_c + cc) * h + u32(ih)) * w4, q, w4);
            for (var r = 0u; r < BW_ROWS; r++) {
                let k = r * 9u + kh * 3u;
                let ya = dy[2u * r];
                let yd = dy[2u * r + 1u];
                acc[k] = fma(ya, t.a0, fma(yd, t.d0, acc[k]));
                acc[k + 1u] = fma(ya, t.a, fma(yd, t.d, acc[k + 1u]));
                acc[k + 2u] = fma(ya, t.a2, fma(yd, t.d2, acc[k + 2u]));
            }
        }
    }
    if c >= p.in_c { return; }
    let n_total = p.in_c * 9u;
    let split_base = wg.x * p.out_c * n_total;
    for (var r = 0u; r < BW_ROWS; r++) {
        let m = m0 + r;
        if m >= p.out_c { break; }
        for (var t = 0u; t < 9u; t++) {
            let v = acc[r * 9u + t];
            grad_weight[split_base + m * n_total + c * 9u + t] = v.x + v.y + v.z + v.w;
        }
    }
}
