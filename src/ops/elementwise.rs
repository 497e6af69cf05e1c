//! Host side of shaders/elementwise.wgsl: ReLU and add over tensors of any shape.

use crate::gpu::{
    Binding, DType, Dispatch, DispatchSpec, GpuContext, GpuError, Tensor, elementwise_grid,
};

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct ElementwiseParams {
    len: u32,
    _pad: [u32; 3],
}

const WG: u32 = 256;

fn build(
    ctx: &GpuContext,
    label: &str,
    entry: &'static str,
    inputs: &[&Tensor],
    output: &Tensor,
) -> Result<Dispatch, GpuError> {
    // Every operand takes the output's shape, and all are f32.
    for t in inputs.iter().chain([&output]) {
        t.expect(label, output.shape(), DType::F32)?;
    }
    let params = ElementwiseParams {
        len: super::u32_of(label, "elements", output.numel())?,
        _pad: [0; 3],
    };
    let mut bindings: Vec<Binding<'_>> = inputs
        .iter()
        .zip(1..)
        .map(|(t, index)| Binding::tensor(index, t))
        .collect();
    bindings.push(Binding::tensor(3, output));
    DispatchSpec {
        label: format!("{label} {entry}"),
        shader: "elementwise",
        entry,
        constants: &[],
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
