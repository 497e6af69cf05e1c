//! Host side of shaders/gemm.wgsl: the benchmark's yardstick GEMMs, numbered
//! from plain to fast like llm.c's kernel versions.

use crate::gpu::{
    Binding, DType, Dispatch, DispatchSpec, GpuContext, GpuError, Kernel, ShaderConstant, Tensor,
    Workgroup,
};

use super::conv::ConvTuning;

crate::wgsl_struct! {
    pub struct GemmParams {
        m: u32,
        n: u32,
        k: u32,
        _pad: u32,
    }
}

/// Rows and columns per invocation of matmul (TILE) and rows of matmul_vec4
/// (V2_ROWS), which size the grid.
const TILE: usize = 4;
const V2_ROWS: usize = 8;

pub const SHADER_CONSTANTS: &[ShaderConstant] = &[
    ShaderConstant {
        module: "gemm",
        name: "TILE",
        value: TILE as u32,
    },
    ShaderConstant {
        module: "gemm",
        name: "V2_ROWS",
        value: V2_ROWS as u32,
    },
];

const fn kernel(entry: &'static str, roles: &'static [&'static str]) -> Kernel {
    Kernel {
        modules: &["gemm"],
        entry,
        roles,
        workgroup: Workgroup::Overrides(&["WG_N", "WG_M"]),
    }
}

/// The entry points of shaders/gemm.wgsl and what each binds.
pub const KERNELS: &[Kernel] = &[
    kernel("matmul", &["a", "b", "c"]),
    kernel("matmul_vec4", &["a4", "b4", "c4"]),
    kernel("matmul_tiled", &["a", "b", "c"]),
];

/// [m, n, k] of c = a * b, after checking the three matrices agree.
fn dims(op: &str, a: &Tensor, b: &Tensor, c: &Tensor) -> Result<[usize; 3], GpuError> {
    let (&[m, k], &[k2, n]) = (a.shape(), b.shape()) else {
        return Err(GpuError::shape(op, "a and b must be matrices"));
    };
    if k != k2 {
        return Err(GpuError::shape(
            op,
            format!("inner dimensions differ: {k} vs {k2}"),
        ));
    }
    a.expect(op, &[m, k], DType::F32)?;
    b.expect(op, &[k, n], DType::F32)?;
    c.expect(op, &[m, n], DType::F32)?;
    for v in [m, n, k] {
        super::u32_of(op, "dimension", v)?;
    }
    Ok([m, n, k])
}

fn build(
    ctx: &GpuContext,
    tuning: &ConvTuning,
    entry: &'static str,
    [m, n, k]: [usize; 3],
    bindings: Vec<Binding<'_>>,
    workgroups: [u32; 3],
) -> Result<Dispatch, GpuError> {
    let params = GemmParams {
        m: m as u32,
        n: n as u32,
        k: k as u32,
        _pad: 0,
    };
    DispatchSpec {
        label: format!("{entry} {m}x{n}x{k}"),
        shader: "gemm",
        kernel: Kernel::find(KERNELS, "gemm", entry)?,
        variant: None,
        precision: crate::gpu::Precision::F32,
        constants: &[("WG_N", tuning.wg_n), ("WG_M", tuning.wg_m)],
        params: &params,
        bindings,
        workgroups,
    }
    .build(ctx)
}

/// v1: c [m, n] = a [m, k] * b [k, n] with scalar loads, the conv kernels'
/// 4x4 register tile and workgroup shape; any sizes.
pub fn matmul(
    ctx: &GpuContext,
    tuning: &ConvTuning,
    a: &Tensor,
    b: &Tensor,
    c: &Tensor,
) -> Result<Dispatch, GpuError> {
    let [m, n, k] = dims("matmul", a, b, c)?;
    let workgroups = [
        n.div_ceil(TILE * tuning.wg_n as usize) as u32,
        m.div_ceil(TILE * tuning.wg_m as usize) as u32,
        1,
    ];
    let bindings = vec![
        Binding::tensor("a", a),
        Binding::tensor("b", b),
        Binding::tensor("c", c),
    ];
    build(ctx, tuning, "matmul", [m, n, k], bindings, workgroups)
}

/// v2: the same product with vec4 loads along memory and 8 rows per invocation;
/// K and N must be multiples of 4.
pub fn matmul_vec4(
    ctx: &GpuContext,
    tuning: &ConvTuning,
    a: &Tensor,
    b: &Tensor,
    c: &Tensor,
) -> Result<Dispatch, GpuError> {
    let [m, n, k] = dims("matmul_vec4", a, b, c)?;
    if k % 4 != 0 || n % 4 != 0 {
        return Err(GpuError::shape(
            "matmul_vec4",
            format!("K ({k}) and N ({n}) must be multiples of 4"),
        ));
    }
    let workgroups = [
        (n / 4).div_ceil(tuning.wg_n as usize) as u32,
        m.div_ceil(V2_ROWS * tuning.wg_m as usize) as u32,
        1,
    ];
    let bindings = vec![
        Binding::tensor("a4", a),
        Binding::tensor("b4", b),
        Binding::tensor("c4", c),
    ];
    build(ctx, tuning, "matmul_vec4", [m, n, k], bindings, workgroups)
}

/// v3: the same product tiled through workgroup memory, a (4 tw_m) x (4 tw_n)
/// tile per workgroup of tw_n x tw_m invocations (conv_tiled.wgsl's scheme);
/// any sizes, tiles up to 128 on a side.
pub fn matmul_tiled(
    ctx: &GpuContext,
    (tw_m, tw_n): (u32, u32),
    a: &Tensor,
    b: &Tensor,
    c: &Tensor,
) -> Result<Dispatch, GpuError> {
    let [m, n, k] = dims("matmul_tiled", a, b, c)?;
    if !(1..=32).contains(&tw_m) || !(1..=32).contains(&tw_n) || tw_m * tw_n > 256 {
        return Err(GpuError::shape(
            "matmul_tiled",
            format!("tile {tw_m}x{tw_n} invocations is outside 1..=32 per side and 256 in all"),
        ));
    }
    let workgroups = [
        n.div_ceil(TILE * tw_n as usize) as u32,
        m.div_ceil(TILE * tw_m as usize) as u32,
        1,
    ];
    let bindings = vec![
        Binding::tensor("a", a),
        Binding::tensor("b", b),
        Binding::tensor("c", c),
    ];
    let tuning = ConvTuning {
        wg_n: tw_n,
        wg_m: tw_m,
        ..ConvTuning::default()
    };
    build(
        ctx,
        &tuning,
        "matmul_tiled",
        [m, n, k],
        bindings,
        workgroups,
    )
}
