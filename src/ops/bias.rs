//! Host side of shaders/bias.wgsl: a conv's per-channel bias, added in place
//! to its output, and its gradient.

use crate::gpu::{
    Binding, DType, Dispatch, DispatchSpec, GpuContext, GpuError, Kernel, Precision, Tensor,
    Workgroup, elementwise_grid,
};
use crate::shapes::BatchNormShape;

crate::wgsl_struct! {
    pub struct BiasParams {
        batch: u32,
        channels: u32,
        hw: u32,
        _pad0: u32,
    }
}

const ELEMENTWISE_WG: u32 = 256;

/// The entry points of shaders/bias.wgsl and what each binds.
pub const KERNELS: &[Kernel] = &[
    Kernel {
        modules: &["bias"],
        entry: "forward",
        roles: &["bias", "output"],
        workgroup: Workgroup::Overrides(&["WG_ELEMENTWISE"]),
    },
    Kernel {
        modules: &["bias"],
        entry: "backward",
        roles: &["grad_output", "grad_bias"],
        workgroup: Workgroup::PerItem,
    },
];

/// The bias of a conv whose output is `shape` ([batch, channels, hw]).
pub struct Bias {
    pub label: String,
    pub shape: BatchNormShape,
}

impl Bias {
    pub fn new(label: &str, shape: BatchNormShape) -> Self {
        Bias {
            label: label.to_string(),
            shape,
        }
    }

    fn build(
        &self,
        ctx: &GpuContext,
        entry: &'static str,
        precision: Precision,
        bindings: Vec<Binding<'_>>,
        workgroups: [u32; 3],
    ) -> Result<Dispatch, GpuError> {
        let s = &self.shape;
        let u = |what, v| super::u32_of(&self.label, what, v);
        u("elements", s.numel())?;
        let params = BiasParams {
            batch: u("batch", s.batch)?,
            channels: u("channels", s.channels)?,
            hw: u("hw", s.hw)?,
            _pad0: 0,
        };
        DispatchSpec {
            label: format!("{} {entry}", self.label),
            shader: "bias",
            kernel: Kernel::find(KERNELS, "bias", entry)?,
            variant: None,
            precision,
            constants: &[("WG_ELEMENTWISE", ELEMENTWISE_WG)],
            params: &params,
            bindings,
            workgroups,
        }
        .build(ctx)
    }

    /// The activation's precision, once it and the (f32) bias have the
    /// unit's shape.
    fn check(&self, activation: &Tensor, bias: &Tensor) -> Result<Precision, GpuError> {
        let s = &self.shape;
        activation.expect_activation(&self.label, s.batch, s.channels, s.hw)?;
        bias.expect(&self.label, &[s.channels], DType::F32)?;
        Precision::of(&self.label, &[activation])
    }

    /// y += bias, in place.
    pub fn forward(
        &self,
        ctx: &GpuContext,
        bias: &Tensor,
        y: &Tensor,
    ) -> Result<Dispatch, GpuError> {
        let precision = self.check(y, bias)?;
        let bindings = vec![Binding::tensor("bias", bias), Binding::tensor("output", y)];
        let grid = elementwise_grid(ctx, self.shape.numel(), ELEMENTWISE_WG);
        self.build(ctx, "forward", precision, bindings, grid)
    }

    /// dbias = sum of dy over the batch and the plane.
    pub fn backward(
        &self,
        ctx: &GpuContext,
        dy: &Tensor,
        dbias: &Tensor,
    ) -> Result<Dispatch, GpuError> {
        let precision = self.check(dy, dbias)?;
        let bindings = vec![
            Binding::tensor("grad_output", dy),
            Binding::tensor("grad_bias", dbias),
        ];
        self.build(
            ctx,
            "backward",
            precision,
            bindings,
            [self.shape.channels as u32, 1, 1],
        )
    }
}
