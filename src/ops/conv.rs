//! Host side of shaders/conv.wgsl.

use crate::gpu::{Binding, DType, Dispatch, DispatchSpec, GpuContext, GpuError, Tensor};
use crate::shapes::Conv2dShape;

/// Workgroup shape of the implicit-GEMM kernels (each invocation computes a 4x4
/// tile) and how many workgroups the weight gradient aims to occupy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvTuning {
    pub wg_n: u32,
    pub wg_m: u32,
    /// backward_weight splits its long K (batch x output pixels) until about this
    /// many workgroups run, so a 16x144 weight gradient still fills a GPU.
    pub target_workgroups: u32,
}

impl Default for ConvTuning {
    fn default() -> Self {
        ConvTuning {
            wg_n: 16,
            wg_m: 4,
            target_workgroups: 256,
        }
    }
}

const TILE: u32 = 4;
/// Workgroup size and output channels per workgroup of `conv3x3_s1` (each
/// invocation computes 8 pixels of a row).
const SQUARE_WG: u32 = 64;
const SQUARE_ROWS: u32 = 16;
/// `conv3x3_s1_weight`: input channels per workgroup (lanes), output channels
/// per workgroup (shaders/conv.wgsl BW_ROWS), and the least 8-pixel segments a
/// pixel split walks.
const SQUARE_WEIGHT_WG: u32 = 16;
const SQUARE_WEIGHT_ROWS: usize = 2;
const MIN_SEGMENTS_PER_SPLIT: usize = 64;
/// Fewer K iterations per split than this cost more in partial sums than they gain.
const MIN_K_PER_SPLIT: usize = 256;

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct ConvParams {
    batch: u32,
    in_c: u32,
    in_h: u32,
    in_w: u32,
    out_c: u32,
    out_h: u32,
    out_w: u32,
    kernel_h: u32,
    kernel_w: u32,
    stride: u32,
    pad: u32,
    k_splits: u32,
}

pub struct Conv2d {
    pub label: String,
    pub shape: Conv2dShape,
    pub tuning: ConvTuning,
}

impl Conv2d {
    pub fn new(label: &str, shape: Conv2dShape, tuning: ConvTuning) -> Result<Self, GpuError> {
        shape.validate().map_err(|e| GpuError::shape(label, e))?;
        Ok(Conv2d {
            label: label.to_string(),
            shape,
            tuning,
        })
    }

    fn params(&self, k_splits: u32) -> Result<ConvParams, GpuError> {
        let s = &self.shape;
        let u = |what, v| super::u32_of(&self.label, what, v);
        // The kernels index whole tensors with u32 (and i32 for input offsets).
        let largest = [s.input_shape(), s.output_shape()]
            .iter()
            .map(|t| t.iter().product::<usize>())
            .max()
            .unwrap_or(0);
        if largest > i32::MAX as usize {
            return Err(GpuError::shape(
                &self.label,
                format!("{largest} elements exceed the kernels' i32 indexing"),
            ));
        }
        Ok(ConvParams {
            batch: u("batch", s.batch)?,
            in_c: u("in_c", s.in_c)?,
            in_h: u("in_h", s.in_h)?,
            in_w: u("in_w", s.in_w)?,
            out_c: u("out_c", s.out_c)?,
            out_h: u("out_h", s.out_h())?,
            out_w: u("out_w", s.out_w())?,
            kernel_h: u("kernel_h", s.kernel_h)?,
            kernel_w: u("kernel_w", s.kernel_w)?,
            stride: u("stride", s.stride)?,
            pad: u("pad", s.pad)?,
            k_splits,
        })
    }

    fn grid(&self, m: usize, n: usize, splits: u32) -> [u32; 3] {
        let cols = n.div_ceil((self.tuning.wg_n * TILE) as usize) as u32;
        let rows = m.div_ceil((self.tuning.wg_m * TILE) as usize) as u32;
        [cols, rows, splits]
    }

    fn spec<'a>(
        &self,
        entry: &'static str,
        params: &'a ConvParams,
        constants: &'a [(&'static str, u32)],
        bindings: Vec<Binding<'a>>,
        workgroups: [u32; 3],
    ) -> DispatchSpec<'a, ConvParams> {
        DispatchSpec {
            label: format!("{} {entry}", self.label),
            shader: "conv",
            entry,
            constants,
            params,
            bindings,
            workgroups,
        }
    }

    /// Workgroup shape; for backward_input also the kernel size and stride,
    /// which the shader then knows at compile time (see KERNEL in conv.wgsl).
    fn constants(&self, specialize: bool) -> [(&'static str, u32); 4] {
        let s = &self.shape;
        let square = s.kernel_h == s.kernel_w && specialize;
        [
            ("WG_N", self.tuning.wg_n),
            ("WG_M", self.tuning.wg_m),
            ("KERNEL", if square { s.kernel_h as u32 } else { 0 }),
            ("STRIDE", if specialize { s.stride as u32 } else { 0 }),
        ]
    }

    /// Whether the vec4 3x3/1 kernel (`conv3x3_s1` in conv.wgsl) applies.
    pub fn uses_square_kernel(&self) -> bool {
        let s = &self.shape;
        s.kernel_h == 3 && s.kernel_w == 3 && s.stride == 1 && s.pad == 1 && s.in_w % 8 == 0
    }

    /// The 3x3/1 kernel: forward (y = conv(x, w)) or, transposed, backward_input
    /// (dx from dy). Rows are output channels forward, input channels backward.
    fn square_kernel(
        &self,
        ctx: &GpuContext,
        transposed: bool,
        src: &Tensor,
        w: &Tensor,
        dst: &Tensor,
    ) -> Result<Dispatch, GpuError> {
        let s = &self.shape;
        let params = self.params(1)?;
        let rows = if transposed { s.in_c } else { s.out_c };
        let quads = s.batch * s.in_h * s.in_w / 8;
        let grid = [
            quads.div_ceil(SQUARE_WG as usize) as u32,
            rows.div_ceil(SQUARE_ROWS as usize) as u32,
            1,
        ];
        let bindings = vec![
            Binding::tensor(2, w),
            Binding::tensor(8, src),
            Binding::tensor(9, dst),
        ];
        let constants = [
            ("SQ_WG", SQUARE_WG),
            ("SQ_TRANSPOSED", u32::from(transposed)),
        ];
        let entry = if transposed {
            "backward_input"
        } else {
            "forward"
        };
        let mut spec = self.spec("conv3x3_s1", &params, &constants, bindings, grid);
        spec.label = format!("{} {entry}", self.label);
        spec.build(ctx)
    }

    /// y = conv(x, w)
    pub fn forward(
        &self,
        ctx: &GpuContext,
        x: &Tensor,
        w: &Tensor,
        y: &Tensor,
    ) -> Result<Dispatch, GpuError> {
        let s = &self.shape;
        x.expect(&self.label, &s.input_shape(), DType::F32)?;
        w.expect(&self.label, &s.weight_shape(), DType::F32)?;
        y.expect(&self.label, &s.output_shape(), DType::F32)?;
        if self.uses_square_kernel() {
            return self.square_kernel(ctx, false, x, w, y);
        }
        let params = self.params(1)?;
        let grid = self.grid(s.out_c, s.batch * s.out_h() * s.out_w(), 1);
        let bindings = vec![
            Binding {
                index: 1,
                buffer: x.buffer(),
            },
            Binding {
                index: 2,
                buffer: w.buffer(),
            },
            Binding {
                index: 3,
                buffer: y.buffer(),
            },
        ];
        self.spec("forward", &params, &self.constants(false), bindings, grid)
            .build(ctx)
    }

    /// dx = d(loss)/dx given dy = d(loss)/dy.
    pub fn backward_input(
        &self,
        ctx: &GpuContext,
        dy: &Tensor,
        w: &Tensor,
        dx: &Tensor,
    ) -> Result<Dispatch, GpuError> {
        let s = &self.shape;
        dy.expect(&self.label, &s.output_shape(), DType::F32)?;
        w.expect(&self.label, &s.weight_shape(), DType::F32)?;
        dx.expect(&self.label, &s.input_shape(), DType::F32)?;
        if self.uses_square_kernel() {
            return self.square_kernel(ctx, true, dy, w, dx);
        }
        let params = self.params(1)?;
        // Strided: one z slice per pixel class (ih + pad, iw + pad) mod stride,
        // x covering the largest class.
        let class_pixels = s.in_h.div_ceil(s.stride) * s.in_w.div_ceil(s.stride);
        let classes = (s.stride * s.stride) as u32;
        let grid = self.grid(s.in_c, s.batch * class_pixels, classes);
        let entry = if s.stride > 1 {
            "backward_input_strided"
        } else {
            "backward_input"
        };
        let bindings = vec![
            Binding {
                index: 2,
                buffer: w.buffer(),
            },
            Binding {
                index: 4,
                buffer: dy.buffer(),
            },
            Binding {
                index: 5,
                buffer: dx.buffer(),
            },
        ];
        self.spec(entry, &params, &self.constants(true), bindings, grid)
            .build(ctx)
    }

    /// Whether backward_weight uses `conv3x3_s1_weight`. Its lanes are input
    /// channels: with few (the RGB stem) most would idle.
    pub fn uses_square_weight_kernel(&self) -> bool {
        self.uses_square_kernel() && self.shape.in_c >= 8
    }

    /// How many parts backward_weight splits its reduction over.
    pub fn weight_grad_splits(&self) -> u32 {
        if self.uses_square_weight_kernel() {
            return self.square_weight_grid()[0];
        }
        let s = &self.shape;
        let [x, y, _] = self.grid(s.out_c, s.in_c * s.kernel_h * s.kernel_w, 1);
        let wanted = self.tuning.target_workgroups.div_ceil(x * y).max(1) as usize;
        let k = s.batch * s.out_h() * s.out_w();
        wanted.min(k / MIN_K_PER_SPLIT).max(1) as u32
    }

    /// `conv3x3_s1_weight`: grid (pixel splits, row blocks, channel blocks).
    fn square_weight_grid(&self) -> [u32; 3] {
        let s = &self.shape;
        let blocks =
            s.out_c.div_ceil(SQUARE_WEIGHT_ROWS) * s.in_c.div_ceil(SQUARE_WEIGHT_WG as usize);
        let segments = s.batch * s.in_h * s.in_w / 8;
        let wanted = (self.tuning.target_workgroups as usize).div_ceil(blocks);
        let splits = wanted.min(segments / MIN_SEGMENTS_PER_SPLIT).max(1);
        [
            splits as u32,
            s.out_c.div_ceil(SQUARE_WEIGHT_ROWS) as u32,
            s.in_c.div_ceil(SQUARE_WEIGHT_WG as usize) as u32,
        ]
    }

    /// dw = d(loss)/dw given x and dy: one dispatch, or two (partial sums over a
    /// split reduction, then their sum) when the weight matrix is small.
    pub fn backward_weight(
        &self,
        ctx: &GpuContext,
        x: &Tensor,
        dy: &Tensor,
        dw: &Tensor,
    ) -> Result<Vec<Dispatch>, GpuError> {
        let s = &self.shape;
        x.expect(&self.label, &s.input_shape(), DType::F32)?;
        dy.expect(&self.label, &s.output_shape(), DType::F32)?;
        dw.expect(&self.label, &s.weight_shape(), DType::F32)?;
        let square = self.uses_square_weight_kernel();
        let n = s.in_c * s.kernel_h * s.kernel_w;
        let splits = self.weight_grad_splits();
        // The pixel splits are grid x for the square kernel, z for the generic one.
        let (entry, grid, constants) = if square {
            let constants = vec![("BW_WG", SQUARE_WEIGHT_WG)];
            ("conv3x3_s1_weight", self.square_weight_grid(), constants)
        } else {
            let constants = self.constants(false).to_vec();
            ("backward_weight", self.grid(s.out_c, n, splits), constants)
        };
        let constants = constants.as_slice();
        let params = self.params(splits)?;
        let read = Binding::tensor;
        // The square kernel reads x and dy as vec4 arrays.
        let bind = |target| {
            if square {
                vec![read(8, x), read(10, dy), read(6, target)]
            } else {
                vec![read(1, x), read(4, dy), read(6, target)]
            }
        };
        if splits == 1 {
            return Ok(vec![
                self.spec(entry, &params, constants, bind(dw), grid)
                    .build(ctx)?,
            ]);
        }
        let partials = Tensor::zeros(
            ctx,
            &format!("{} weight-grad partials", self.label),
            &[splits as usize, s.out_c * n],
            DType::F32,
        )?;
        let gemm = self
            .spec(entry, &params, constants, bind(&partials), grid)
            .build(ctx)?;
        let reduce_grid = [(s.out_c * n).div_ceil(256) as u32, 1, 1];
        let reduce = self
            .spec(
                "reduce_weight_splits",
                &params,
                &[],
                vec![read(6, dw), read(7, &partials)],
                reduce_grid,
            )
            .build(ctx)?;
        Ok(vec![gemm, reduce])
    }
}
