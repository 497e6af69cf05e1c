//! Host side of shaders/gemm.wgsl: the benchmark's yardstick GEMM.

use crate::gpu::{Binding, DType, Dispatch, DispatchSpec, GpuContext, GpuError, Tensor};

use super::conv::ConvTuning;

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct GemmParams {
    m: u32,
    n: u32,
    k: u32,
    _pad: u32,
}

/// c [m, n] = a [m, k] * b [k, n], with the conv kernels' workgroup shape.
pub fn matmul(
    ctx: &GpuContext,
    tuning: &ConvTuning,
    a: &Tensor,
    b: &Tensor,
    c: &Tensor,
) -> Result<Dispatch, GpuError> {
    let (&[m, k], &[k2, n]) = (a.shape(), b.shape()) else {
        return Err(GpuError::shape("matmul", "a and b must be matrices"));
    };
    if k != k2 {
        return Err(GpuError::shape(
            "matmul",
            format!("inner dimensions differ: {k} vs {k2}"),
        ));
    }
    c.expect("matmul", &[m, n], DType::F32)?;
    let params = GemmParams {
        m: m as u32,
        n: n as u32,
        k: k as u32,
        _pad: 0,
    };
    let workgroups = [
        n.div_ceil(4 * tuning.wg_n as usize) as u32,
        m.div_ceil(4 * tuning.wg_m as usize) as u32,
        1,
    ];
    DispatchSpec {
        label: format!("matmul {m}x{n}x{k}"),
        shader: "gemm",
        entry: "matmul",
        constants: &[("WG_N", tuning.wg_n), ("WG_M", tuning.wg_m)],
        params: &params,
        bindings: vec![
            Binding {
                index: 1,
                buffer: a.buffer(),
            },
            Binding {
                index: 2,
                buffer: b.buffer(),
            },
            Binding {
                index: 3,
                buffer: c.buffer(),
            },
        ],
        workgroups,
    }
    .build(ctx)
}

/// Rows per invocation of matmul_vec4 (V2_ROWS in gemm.wgsl).
const V2_ROWS: usize = 8;

/// Version 2 of the GEMM (vec4 loads along memory); K and N must be multiples of 4.
pub fn matmul_vec4(
    ctx: &GpuContext,
    tuning: &ConvTuning,
    a: &Tensor,
    b: &Tensor,
    c: &Tensor,
) -> Result<Dispatch, GpuError> {
    let (&[m, k], &[k2, n]) = (a.shape(), b.shape()) else {
        return Err(GpuError::shape("matmul_vec4", "a and b must be matrices"));
    };
    if k != k2 || k % 4 != 0 || n % 4 != 0 {
        return Err(GpuError::shape(
            "matmul_vec4",
            format!("needs matching K and K, N multiples of 4: {m}x{k} * {k2}x{n}"),
        ));
    }
    c.expect("matmul_vec4", &[m, n], DType::F32)?;
    let params = GemmParams {
        m: m as u32,
        n: n as u32,
        k: k as u32,
        _pad: 0,
    };
    let workgroups = [
        (n / 4).div_ceil(tuning.wg_n as usize) as u32,
        m.div_ceil(V2_ROWS * tuning.wg_m as usize) as u32,
        1,
    ];
    DispatchSpec {
        label: format!("matmul_vec4 {m}x{n}x{k}"),
        shader: "gemm",
        entry: "matmul_vec4",
        constants: &[("WG_N", tuning.wg_n), ("WG_M", tuning.wg_m)],
        params: &params,
        bindings: vec![
            Binding::tensor(4, a),
            Binding::tensor(5, b),
            Binding::tensor(6, c),
        ],
        workgroups,
    }
    .build(ctx)
}
