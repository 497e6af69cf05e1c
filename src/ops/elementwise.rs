//! Host side of shaders/elementwise.wgsl: ReLU and add over tensors of any shape.

use crate::gpu::{
    Binding, Dispatch, DispatchSpec, GpuContext, GpuError, Kernel, Precision, Tensor, Workgroup,
    elementwise_grid,
};

crate::wgsl_struct! {
    pub struct ElementwiseParams {
        len: u32,
        _pad: [u32; 3],
    }
}

const WG: u32 = 256;

const fn kernel(entry: &'static str, roles: &'static [&'static str]) -> Kernel {
    Kernel {
        modules: &["elementwise"],
        entry,
        roles,
        workgroup: Workgroup::Overrides(&["WG"]),
    }
}

/// The entry points of shaders/elementwise.wgsl and what each binds.
pub const KERNELS: &[Kernel] = &[
    kernel("relu_forward", &["lhs", "output"]),
    kernel("relu_backward", &["lhs", "rhs", "output"]),
    kernel("add", &["lhs", "rhs", "output"]),
];

fn build(
    ctx: &GpuContext,
    label: &str,
    entry: &'static str,
    inputs: &[&Tensor],
    output: &Tensor,
) -> Result<Dispatch, GpuError> {
    // Every operand takes the output's shape, and all are f32 or all f16.
    let precision = Precision::of(label, &[inputs, &[output]].concat())?;
    for t in inputs.iter().chain([&output]) {
        t.expect(label, output.shape(), precision.dtype())?;
    }
    let params = ElementwiseParams {
        len: super::u32_of(label, "elements", output.numel())?,
        _pad: [0; 3],
    };
    let mut bindings: Vec<Binding<'_>> = inputs
        .iter()
        .zip(["lhs", "rhs"])
        .map(|(t, role)| Binding::tensor(role, t))
        .collect();
    bindings.push(Binding::tensor("output", output));
    DispatchSpec {
        label: format!("{label} {entry}"),
        shader: "elementwise",
        kernel: Kernel::find(KERNELS, "elementwise", entry)?,
        variant: None,
        precision,
        constants: &[("WG", WG)],
        params: &params,
        bindings,
        workgroups: elementwise_grid(ctx, output.numel(), WG),
    }
    .build(ctx)
}

/// y = max(x, 0)
pub fn relu_forward(
    ctx: &GpuContext,
    label: &str,
    x: &Tensor,
    y: &Tensor,
) -> Result<Dispatch, GpuError> {
    build(ctx, label, "relu_forward", &[x], y)
}

/// dx = dy where y > 0, else 0.
pub fn relu_backward(
    ctx: &GpuContext,
    label: &str,
    dy: &Tensor,
    y: &Tensor,
    dx: &Tensor,
) -> Result<Dispatch, GpuError> {
    build(ctx, label, "relu_backward", &[dy, y], dx)
}

/// out = a + b (residual add forward; gradient sum where a tensor forks).
pub fn add(
    ctx: &GpuContext,
    label: &str,
    a: &Tensor,
    b: &Tensor,
    out: &Tensor,
) -> Result<Dispatch, GpuError> {
    build(ctx, label, "add", &[a, b], out)
}
