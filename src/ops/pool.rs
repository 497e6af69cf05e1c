//! Host side of shaders/pool.wgsl: max pooling and global average pooling.

use crate::gpu::{
    Binding, DType, Dispatch, DispatchSpec, GpuContext, GpuError, Kernel, Precision, Tensor,
    Workgroup, elementwise_grid,
};
use crate::shapes::PoolShape;

crate::wgsl_struct! {
    pub struct PoolParams {
        planes: u32,
        in_h: u32,
        in_w: u32,
        out_h: u32,
        out_w: u32,
        kernel: u32,
        stride: u32,
        pad: u32,
    }
}

const WG: u32 = 256;

const fn kernel(entry: &'static str, roles: &'static [&'static str]) -> Kernel {
    Kernel {
        modules: &["pool"],
        entry,
        roles,
        workgroup: Workgroup::Overrides(&["WG"]),
    }
}

/// The entry points of shaders/pool.wgsl and what each binds (backward passes
/// read the gradient from `input` and write `output`).
pub const KERNELS: &[Kernel] = &[
    kernel("max_forward", &["input", "output", "argmax"]),
    kernel("max_backward", &["input", "output", "saved_argmax"]),
    kernel("global_avg_forward", &["input", "output"]),
    kernel("global_avg_backward", &["input", "output"]),
];

pub struct Pool {
    pub label: String,
    pub shape: PoolShape,
}

impl Pool {
    /// Max pooling with the shape's window; also serves global average pooling,
    /// which ignores the window fields.
    pub fn new(label: &str, shape: PoolShape) -> Result<Self, GpuError> {
        shape.validate().map_err(|e| GpuError::shape(label, e))?;
        Ok(Pool {
            label: label.to_string(),
            shape,
        })
    }

    /// A global average pool over the whole in_h x in_w plane (it ignores the
    /// window fields; a 1x1 window keeps the shape valid).
    pub fn global_average(
        label: &str,
        batch: usize,
        channels: usize,
        in_h: usize,
        in_w: usize,
    ) -> Result<Self, GpuError> {
        Self::new(
            label,
            PoolShape {
                batch,
                channels,
                in_h,
                in_w,
                kernel: 1,
                stride: 1,
                pad: 0,
            },
        )
    }

    pub fn input_shape(&self) -> [usize; 4] {
        let s = &self.shape;
        [s.batch, s.channels, s.in_h, s.in_w]
    }

    pub fn max_output_shape(&self) -> [usize; 4] {
        let s = &self.shape;
        [s.batch, s.channels, s.out_h(), s.out_w()]
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
        u("elements", s.planes() * s.in_h * s.in_w)?;
        let params = PoolParams {
            planes: u("planes", s.planes())?,
            in_h: u("in_h", s.in_h)?,
            in_w: u("in_w", s.in_w)?,
            out_h: u("out_h", s.out_h())?,
            out_w: u("out_w", s.out_w())?,
            kernel: u("kernel", s.kernel)?,
            stride: u("stride", s.stride)?,
            pad: u("pad", s.pad)?,
        };
        let workgroups = elementwise_grid(ctx, invocations, WG);
        DispatchSpec {
            label: format!("{} {entry}", self.label),
            shader: "pool",
            kernel: Kernel::find(KERNELS, "pool", entry)?,
            variant: None,
            precision,
            constants: &[("WG", WG)],
            params: &params,
            bindings,
            workgroups,
        }
        .build(ctx)
    }

    /// y = maxpool(x), argmax saved for backward.
    pub fn max_forward(
        &self,
        ctx: &GpuContext,
        x: &Tensor,
        y: &Tensor,
        argmax: &Tensor,
    ) -> Result<Dispatch, GpuError> {
        let precision = Precision::of(&self.label, &[x, y])?;
        x.expect(&self.label, &self.input_shape(), precision.dtype())?;
        y.expect(&self.label, &self.max_output_shape(), precision.dtype())?;
        argmax.expect(&self.label, &self.max_output_shape(), DType::U32)?;
        let b = vec![
            Binding::tensor("input", x),
            Binding::tensor("output", y),
            Binding::tensor("argmax", argmax),
        ];
        self.build(ctx, "max_forward", precision, b, y.numel())
    }

    pub fn max_backward(
        &self,
        ctx: &GpuContext,
        dy: &Tensor,
        argmax: &Tensor,
        dx: &Tensor,
    ) -> Result<Dispatch, GpuError> {
        let precision = Precision::of(&self.label, &[dy, dx])?;
        dy.expect(&self.label, &self.max_output_shape(), precision.dtype())?;
        argmax.expect(&self.label, &self.max_output_shape(), DType::U32)?;
        dx.expect(&self.label, &self.input_shape(), precision.dtype())?;
        let b = vec![
            Binding::tensor("input", dy),
            Binding::tensor("output", dx),
            Binding::tensor("saved_argmax", argmax),
        ];
        self.build(ctx, "max_backward", precision, b, dx.numel())
    }

    /// y [batch, channels] = mean of x over each plane.
    pub fn global_avg_forward(
        &self,
        ctx: &GpuContext,
        x: &Tensor,
        y: &Tensor,
    ) -> Result<Dispatch, GpuError> {
        let precision = Precision::of(&self.label, &[x, y])?;
        let s = &self.shape;
        x.expect(&self.label, &self.input_shape(), precision.dtype())?;
        y.expect(&self.label, &[s.batch, s.channels], precision.dtype())?;
        let b = vec![Binding::tensor("input", x), Binding::tensor("output", y)];
        self.build(ctx, "global_avg_forward", precision, b, s.planes())
    }

    pub fn global_avg_backward(
        &self,
        ctx: &GpuContext,
        dy: &Tensor,
        dx: &Tensor,
    ) -> Result<Dispatch, GpuError> {
        let precision = Precision::of(&self.label, &[dy, dx])?;
        let s = &self.shape;
        dy.expect(&self.label, &[s.batch, s.channels], precision.dtype())?;
        dx.expect(&self.label, &self.input_shape(), precision.dtype())?;
        let b = vec![Binding::tensor("input", dy), Binding::tensor("output", dx)];
        self.build(ctx, "global_avg_backward", precision, b, dx.numel())
    }
}
