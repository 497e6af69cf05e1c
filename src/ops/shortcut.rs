//! Host side of shaders/shortcut.wgsl: the parameter-free option-A shortcut.

use crate::gpu::{
    Binding, Dispatch, DispatchSpec, GpuContext, GpuError, Kernel, Precision, Tensor, Workgroup,
    elementwise_grid,
};
use crate::shapes::ShortcutShape;

crate::wgsl_struct! {
    pub struct ShortcutParams {
        batch: u32,
        in_c: u32,
        in_h: u32,
        in_w: u32,
        out_c: u32,
        out_h: u32,
        out_w: u32,
        stride: u32,
        pad_front: u32,
        _pad: [u32; 3],
    }
}

const WG: u32 = 256;

const fn kernel(entry: &'static str) -> Kernel {
    Kernel {
        modules: &["shortcut"],
        entry,
        roles: &["input", "output"],
        workgroup: Workgroup::Overrides(&["WG"]),
    }
}

/// The entry points of shaders/shortcut.wgsl (backward reads the gradient
/// from `input` and writes `output`).
pub const KERNELS: &[Kernel] = &[kernel("forward"), kernel("backward")];

pub struct Shortcut {
    pub label: String,
    pub shape: ShortcutShape,
}

impl Shortcut {
    pub fn new(label: &str, shape: ShortcutShape) -> Result<Self, GpuError> {
        shape.validate().map_err(|e| GpuError::shape(label, e))?;
        Ok(Shortcut {
            label: label.to_string(),
            shape,
        })
    }

    pub fn input_shape(&self) -> [usize; 4] {
        let s = &self.shape;
        [s.batch, s.in_c, s.in_h, s.in_w]
    }

    pub fn output_shape(&self) -> [usize; 4] {
        let s = &self.shape;
        [s.batch, s.out_c, s.out_h(), s.out_w()]
    }

    fn build(
        &self,
        ctx: &GpuContext,
        entry: &'static str,
        input: &Tensor,
        output: &Tensor,
    ) -> Result<Dispatch, GpuError> {
        let s = &self.shape;
        let u = |what, v| super::u32_of(&self.label, what, v);
        let params = ShortcutParams {
            batch: u("batch", s.batch)?,
            in_c: u("in_c", s.in_c)?,
            in_h: u("in_h", s.in_h)?,
            in_w: u("in_w", s.in_w)?,
            out_c: u("out_c", s.out_c)?,
            out_h: u("out_h", s.out_h())?,
            out_w: u("out_w", s.out_w())?,
            stride: u("stride", s.stride)?,
            pad_front: u("pad_front", s.pad_front())?,
            _pad: [0; 3],
        };
        let bindings = vec![
            Binding::tensor("input", input),
            Binding::tensor("output", output),
        ];
        let workgroups = elementwise_grid(ctx, output.numel(), WG);
        let precision = Precision::of(&self.label, &[input, output])?;
        DispatchSpec {
            label: format!("{} {entry}", self.label),
            shader: "shortcut",
            kernel: Kernel::find(KERNELS, "shortcut", entry)?,
            variant: None,
            precision,
            constants: &[("WG", WG)],
            params: &params,
            bindings,
            workgroups,
        }
        .build(ctx)
    }

    pub fn forward(&self, ctx: &GpuContext, x: &Tensor, y: &Tensor) -> Result<Dispatch, GpuError> {
        let dtype = x.dtype();
        x.expect(&self.label, &self.input_shape(), dtype)?;
        y.expect(&self.label, &self.output_shape(), dtype)?;
        self.build(ctx, "forward", x, y)
    }

    pub fn backward(
        &self,
        ctx: &GpuContext,
        dy: &Tensor,
        dx: &Tensor,
    ) -> Result<Dispatch, GpuError> {
        let dtype = dy.dtype();
        dy.expect(&self.label, &self.output_shape(), dtype)?;
        dx.expect(&self.label, &self.input_shape(), dtype)?;
        self.build(ctx, "backward", dy, dx)
    }
}
