//! Host side of shaders/linear.wgsl: the fully connected classifier.

use crate::gpu::{Binding, DType, Dispatch, DispatchSpec, GpuContext, GpuError, Tensor};
use crate::shapes::LinearShape;

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct LinearParams {
    batch: u32,
    in_f: u32,
    out_f: u32,
    _pad: u32,
}

const WG: usize = 64;

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
        let workgroups = [invocations.div_ceil(WG) as u32, 1, 1];
        DispatchSpec {
            label: format!("{} {entry}", self.label),
            shader: "linear",
            entry,
            constants: &[],
            params: &params,
            bindings,
            workgroups,
        }
        .build(ctx)
    }

    fn check(&self, x: &Tensor, w: &Tensor, y: &Tensor) -> Result<(), GpuError> {
        let s = &self.shape;
        x.expect(&self.label, &[s.batch, s.in_f], DType::F32)?;
        w.expect(&self.label, &[s.out_f, s.in_f], DType::F32)?;
        y.expect(&self.label, &[s.batch, s.out_f], DType::F32)
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
        self.check(x, w, y)?;
        bias.expect(&self.label, &[self.shape.out_f], DType::F32)?;
        let b = Binding::tensor;
        self.build(
            ctx,
            "forward",
            vec![b(1, x), b(2, w), b(3, bias), b(4, y)],
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
        self.check(x, w, dy)?;
        self.check(dx, dw, dy)?;
        dbias.expect(&self.label, &[self.shape.out_f], DType::F32)?;
        let b = Binding::tensor;
        Ok(vec![
            self.build(
                ctx,
                "backward_input",
                vec![b(2, w), b(5, dy), b(6, dx)],
                dx.numel(),
            )?,
            self.build(
                ctx,
                "backward_weight",
                vec![b(1, x), b(5, dy), b(7, dw)],
                dw.numel(),
            )?,
            self.build(
                ctx,
                "backward_bias",
                vec![b(5, dy), b(8, dbias)],
                dbias.numel(),
            )?,
        ])
    }
}
