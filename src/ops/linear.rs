//! Host side of shaders/linear.wgsl: the fully connected classifier.

use crate::gpu::{
    Binding, DType, Dispatch, DispatchSpec, GpuContext, GpuError, Kernel, Precision, Tensor,
    Workgroup,
};
use crate::shapes::LinearShape;

crate::wgsl_struct! {
    pub struct LinearParams {
        batch: u32,
        in_f: u32,
        out_f: u32,
        _pad: u32,
    }
}

const WG: u32 = 64;

const fn kernel(entry: &'static str, roles: &'static [&'static str]) -> Kernel {
    Kernel {
        modules: &["linear"],
        entry,
        roles,
        workgroup: Workgroup::Overrides(&["WG"]),
    }
}

/// The entry points of shaders/linear.wgsl and what each binds.
pub const KERNELS: &[Kernel] = &[
    kernel("forward", &["input", "weight", "bias", "output"]),
    kernel("backward_input", &["weight", "grad_output", "grad_input"]),
    kernel("backward_weight", &["input", "grad_output", "grad_weight"]),
    kernel("backward_bias", &["grad_output", "grad_bias"]),
];

pub struct Linear {
    pub label: String,
    pub shape: LinearShape,
}

impl Linear {
    pub fn new(label: &str, shape: LinearShape) -> Self {
        Linear {
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
        invocations: usize,
    ) -> Result<Dispatch, GpuError> {
        let s = &self.shape;
        let u = |what, v| super::u32_of(&self.label, what, v);
        let params = LinearParams {
            batch: u("batch", s.batch)?,
            in_f: u("in_f", s.in_f)?,
            out_f: u("out_f", s.out_f)?,
            _pad: 0,
        };
        let workgroups = [invocations.div_ceil(WG as usize) as u32, 1, 1];
        DispatchSpec {
            label: format!("{} {entry}", self.label),
            shader: "linear",
            kernel: Kernel::find(KERNELS, "linear", entry)?,
            variant: None,
            precision,
            constants: &[("WG", WG)],
            params: &params,
            bindings,
            workgroups,
        }
        .build(ctx)
    }

    /// The precision of the activation `x` and weight `w` (they must agree);
    /// the logits `y` (or their gradient) are f32 at either precision.
    fn check(&self, x: &Tensor, w: &Tensor, y: &Tensor) -> Result<Precision, GpuError> {
        let s = &self.shape;
        let precision = Precision::of(&self.label, &[x, w])?;
        x.expect(&self.label, &[s.batch, s.in_f], precision.dtype())?;
        w.expect(&self.label, &[s.out_f, s.in_f], precision.dtype())?;
        y.expect(&self.label, &[s.batch, s.out_f], DType::F32)?;
        Ok(precision)
    }

    /// y = x W^T + bias
    pub fn forward(
        &self,
        ctx: &GpuContext,
        x: &Tensor,
        w: &Tensor,
        bias: &Tensor,
        y: &Tensor,
    ) -> Result<Dispatch, GpuError> {
        let precision = self.check(x, w, y)?;
        bias.expect(&self.label, &[self.shape.out_f], DType::F32)?;
        let b = Binding::tensor;
        self.build(
            ctx,
            "forward",
            precision,
            vec![
                b("input", x),
                b("weight", w),
                b("bias", bias),
                b("output", y),
            ],
            y.numel(),
        )
    }

    /// dx, dW and dbias from dy (three dispatches).
    pub fn backward(
        &self,
        ctx: &GpuContext,
        x: &Tensor,
        w: &Tensor,
        dy: &Tensor,
        dx: &Tensor,
        dw: &Tensor,
        dbias: &Tensor,
    ) -> Result<Vec<Dispatch>, GpuError> {
        let precision = self.check(x, w, dy)?;
        self.check(dx, w, dy)?;
        dw.expect(
            &self.label,
            &[self.shape.out_f, self.shape.in_f],
            DType::F32,
        )?;
        dbias.expect(&self.label, &[self.shape.out_f], DType::F32)?;
        let b = Binding::tensor;
        Ok(vec![
            self.build(
                ctx,
                "backward_input",
                precision,
                vec![b("weight", w), b("grad_output", dy), b("grad_input", dx)],
                dx.numel(),
            )?,
            self.build(
                ctx,
                "backward_weight",
                precision,
                vec![b("input", x), b("grad_output", dy), b("grad_weight", dw)],
                dw.numel(),
            )?,
            self.build(
                ctx,
                "backward_bias",
                precision,
                vec![b("grad_output", dy), b("grad_bias", dbias)],
                dbias.numel(),
            )?,
        ])
    }
}
