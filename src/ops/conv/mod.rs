//! Host side of the conv family: shaders/conv.wgsl (the CPU-shaped register
//! tile and rows8 kernels), conv_tiled.wgsl and conv_wide.wgsl (workgroup
//! tiles), conv_coop.wgsl (cooperative matrices); `device.rs` holds what the
//! GPU-only candidates need of the device, `work.rs` grids and the dispatch
//! report's counts.

use crate::gpu::{
    Binding, CoopConfig, DType, Dispatch, DispatchSpec, GpuContext, GpuError, Kernel, Precision,
    ShaderConstant, Tensor,
};
use crate::shapes::Conv2dShape;

mod device;
mod kernels;
mod rows8;
mod work;

use work::{BuildConv, fold_columns};

use kernels::TILED_CAP;
pub use kernels::{
    ConvKernel, ConvKernels, ConvPass, ConvTuning, KERNELS, TILED_SHAPES, WIDE_SHAPES,
    WIDE_WORKGROUP_BYTES,
};

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

/// Workgroup size of `reduce_weight_splits`.
const SPLITS_WG: u32 = 256;

crate::wgsl_struct! {
    pub struct ConvParams {
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
        row_blocks: u32,
        accumulate: u32,
        _pad1: u32,
        _pad2: u32,
    }
}

const fn constant(module: &'static str, name: &'static str, value: u32) -> ShaderConstant {
    ShaderConstant {
        module,
        name,
        value,
    }
}

/// The shaders' constants this file computes grids and limits with.
pub const SHADER_CONSTANTS: &[ShaderConstant] = &[
    constant("conv", "TILE", TILE),
    constant("conv", "SQ_ROWS", SQUARE_ROWS),
    constant("conv", "BW_ROWS", SQUARE_WEIGHT_ROWS as u32),
    constant("conv_tiled", "TILE_CAP", TILED_CAP),
];

/// A GPU-shaped candidate's module, grid and pipeline constants.
type GpuLaunch = (&'static str, [u32; 3], Vec<(&'static str, u32)>);

#[derive(Clone)]
pub struct Conv2d {
    pub label: String,
    pub shape: Conv2dShape,
    pub tuning: ConvTuning,
    /// The candidate each pass runs: the CPU-adapter defaults until changed
    /// with `with_kernel` (the plan asks `tune` which to use).
    pub kernels: ConvKernels,
    /// Workgroups per grid dimension to fold at, below the adapter's limit
    /// (tests of the folding on small shapes; None: the adapter's).
    pub grid_limit: Option<u32>,
}

impl Conv2d {
    pub fn new(label: &str, shape: Conv2dShape, tuning: ConvTuning) -> Result<Self, GpuError> {
        shape.validate().map_err(|e| GpuError::shape(label, e))?;
        let mut conv = Conv2d {
            label: label.to_string(),
            shape,
            tuning,
            grid_limit: None,
            kernels: ConvKernels {
                forward: ConvKernel::RegisterTile,
                backward_input: ConvKernel::RegisterTile,
                backward_weight: ConvKernel::RegisterTile,
            },
        };
        for pass in ConvPass::ALL {
            conv.kernels.set(pass, conv.builtin_kernel(pass, true));
        }
        Ok(conv)
    }

    /// This conv with `kernel` for `pass`; an error names a kernel that cannot
    /// serve this shape.
    pub fn with_kernel(mut self, pass: ConvPass, kernel: ConvKernel) -> Result<Self, GpuError> {
        // coop and the wide tiles serve any shape; whether the device can run
        // them is checked when the dispatch is built.
        let any_shape = matches!(kernel, ConvKernel::Coop | ConvKernel::Wide { .. });
        if !any_shape && !self.candidates(pass).contains(&kernel) {
            return Err(GpuError::shape(
                &self.label,
                format!("kernel {} cannot serve {}", kernel.name(), pass.name()),
            ));
        }
        self.kernels.set(pass, kernel);
        Ok(self)
    }

    /// Every kernel that can serve `pass` of this conv, the built-in CPU
    /// choice first.
    pub fn candidates(&self, pass: ConvPass) -> Vec<ConvKernel> {
        let rows8 = match pass {
            ConvPass::BackwardWeight => self.uses_square_weight_kernel(),
            _ => self.uses_square_kernel(),
        };
        let mut list = vec![];
        if rows8 {
            list.push(ConvKernel::Rows8);
        }
        list.push(ConvKernel::RegisterTile);
        list.extend(
            TILED_SHAPES
                .iter()
                .map(|&(tw_m, tw_n)| ConvKernel::Tiled { tw_m, tw_n }),
        );
        list
    }

    /// The kernel used without a measurement: on CPU adapters the ones
    /// measured fastest on lavapipe (rows8 where it applies, else the register
    /// tile); on GPUs the workgroup-tiled kernel sized for the pass's rows.
    pub fn builtin_kernel(&self, pass: ConvPass, cpu_adapter: bool) -> ConvKernel {
        if cpu_adapter {
            return self.candidates(pass)[0];
        }
        let s = &self.shape;
        let rows = match pass {
            ConvPass::BackwardInput => s.in_c,
            _ => s.out_c,
        };
        ConvKernel::tiled_for_rows(rows)
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
            row_blocks: 1,
            accumulate: 0,
            _pad1: 0,
            _pad2: 0,
        })
    }

    fn grid(&self, m: usize, n: usize, splits: u32) -> [u32; 3] {
        let cols = n.div_ceil((self.tuning.wg_n * TILE) as usize) as u32;
        let rows = m.div_ceil((self.tuning.wg_m * TILE) as usize) as u32;
        [cols, rows, splits]
    }

    /// The dispatch's label names the layer, the pass and the kernel that runs,
    /// e.g. "layer1.0.conv1 forward (tiled64x64)".
    /// The grid of an output-tiled kernel (every one but rows8's and the
    /// split reduction) has its column blocks folded into y where they pass
    /// the per-dimension limit (`fold_columns`), `params` saying how.
    #[allow(clippy::too_many_arguments)]
    fn spec<'a>(
        &self,
        ctx: &GpuContext,
        pass: ConvPass,
        precision: Precision,
        (shader, entry): (&'static str, &'static str),
        params: &'a mut ConvParams,
        constants: &'a [(&'static str, u32)],
        bindings: Vec<Binding<'a>>,
        workgroups: [u32; 3],
    ) -> Result<DispatchSpec<'a, ConvParams>, GpuError> {
        let tiled_output = shader != "conv"
            || matches!(
                entry,
                "forward" | "backward_input" | "backward_input_strided" | "backward_weight"
            );
        let workgroups = if tiled_output {
            params.row_blocks = workgroups[1].max(1);
            let limit = ctx.limits.max_compute_workgroups_per_dimension;
            fold_columns(workgroups, self.grid_limit.map_or(limit, |g| g.min(limit)))
        } else {
            workgroups
        };
        Ok(DispatchSpec {
            label: format!(
                "{} {} ({})",
                self.label,
                pass.name(),
                self.kernels.get(pass).name()
            ),
            shader,
            kernel: Kernel::find(KERNELS, shader, entry)?,
            variant: Some(self.kernels.get(pass).name()),
            precision,
            constants,
            params: &*params,
            bindings,
            workgroups,
        })
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

    /// conv_tiled.wgsl's constants: the tile and, for square kernels, the size.
    fn tiled_constants(&self, (tw_m, tw_n): (u32, u32)) -> Vec<(&'static str, u32)> {
        let s = &self.shape;
        let square = if s.kernel_h == s.kernel_w {
            s.kernel_h
        } else {
            0
        };
        vec![("TW_M", tw_m), ("TW_N", tw_n), ("KERNEL", square as u32)]
    }

    /// Workgroups of a tiled pass over an m x n output in `z` slices.
    fn tiled_grid((tw_m, tw_n): (u32, u32), m: usize, n: usize, z: u32) -> [u32; 3] {
        [
            n.div_ceil((TILE * tw_n) as usize) as u32,
            m.div_ceil((TILE * tw_m) as usize) as u32,
            z,
        ]
    }

    /// The module, grid and constants of `pass` on a GPU-shaped candidate
    /// (tiled, wide, coop) for an m x n output in z slices; the CPU-shaped
    /// kernels are dispatched by each pass itself.
    fn gpu_launch(
        &self,
        ctx: &GpuContext,
        pass: ConvPass,
        precision: Precision,
        m: usize,
        n: usize,
        z: u32,
    ) -> Result<GpuLaunch, GpuError> {
        Ok(match self.kernels.get(pass) {
            ConvKernel::Tiled { tw_m, tw_n } => (
                "conv_tiled",
                Self::tiled_grid((tw_m, tw_n), m, n, z),
                self.tiled_constants((tw_m, tw_n)),
            ),
            ConvKernel::Wide { tw_m, tw_n } => (
                "conv_wide",
                Self::wide_grid((tw_m, tw_n), m, n, z),
                self.wide_constants(ctx, (tw_m, tw_n))?,
            ),
            ConvKernel::Coop => {
                let (side, constants) = self.coop_setup(ctx, precision)?;
                ("conv_coop", Self::coop_grid(side, m, n, z), constants)
            }
            other => {
                return Err(GpuError::shape(
                    &self.label,
                    format!("kernel {} is no GPU tile", other.name()),
                ));
            }
        })
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
        let precision = Precision::of(&self.label, &[x, w, y])?;
        x.expect(&self.label, &s.input_shape(), precision.dtype())?;
        w.expect(&self.label, &s.weight_shape(), precision.dtype())?;
        y.expect(&self.label, &s.output_shape(), precision.dtype())?;
        let pass = ConvPass::Forward;
        let mut params = self.params(1)?;
        let bindings = vec![
            Binding::tensor("input", x),
            Binding::tensor("weight", w),
            Binding::tensor("output", y),
        ];
        let out_px = s.batch * s.out_h() * s.out_w();
        match self.kernels.forward {
            ConvKernel::Rows8 => self.square_kernel(ctx, pass, x, w, y, false),
            ConvKernel::RegisterTile => {
                let grid = self.grid(s.out_c, out_px, 1);
                let constants = self.constants(false);
                self.spec(
                    ctx,
                    pass,
                    precision,
                    ("conv", "forward"),
                    &mut params,
                    &constants,
                    bindings,
                    grid,
                )?
                .build_conv(ctx, self, pass)
            }
            _ => {
                let (shader, grid, constants) =
                    self.gpu_launch(ctx, pass, precision, s.out_c, out_px, 1)?;
                self.spec(
                    ctx,
                    pass,
                    precision,
                    (shader, "forward"),
                    &mut params,
                    &constants,
                    bindings,
                    grid,
                )?
                .build_conv(ctx, self, pass)
            }
        }
    }

    /// dx = d(loss)/dx given dy = d(loss)/dy.
    pub fn backward_input(
        &self,
        ctx: &GpuContext,
        dy: &Tensor,
        w: &Tensor,
        dx: &Tensor,
    ) -> Result<Dispatch, GpuError> {
        self.backward_input_with(ctx, dy, w, dx, false)
    }

    /// `backward_input` adding dx to what `dx` holds: a residual block's
    /// input gradient is its first conv's plus the skip's, summed here
    /// instead of by an add pass over both.
    pub fn backward_input_onto(
        &self,
        ctx: &GpuContext,
        dy: &Tensor,
        w: &Tensor,
        dx: &Tensor,
    ) -> Result<Dispatch, GpuError> {
        self.backward_input_with(ctx, dy, w, dx, true)
    }

    fn backward_input_with(
        &self,
        ctx: &GpuContext,
        dy: &Tensor,
        w: &Tensor,
        dx: &Tensor,
        accumulate: bool,
    ) -> Result<Dispatch, GpuError> {
        let s = &self.shape;
        let precision = Precision::of(&self.label, &[dy, w, dx])?;
        dy.expect(&self.label, &s.output_shape(), precision.dtype())?;
        w.expect(&self.label, &s.weight_shape(), precision.dtype())?;
        dx.expect(&self.label, &s.input_shape(), precision.dtype())?;
        let pass = ConvPass::BackwardInput;
        if self.kernels.backward_input == ConvKernel::Rows8 {
            return self.square_kernel(ctx, pass, dy, w, dx, accumulate);
        }
        let mut params = self.params(1)?;
        params.accumulate = u32::from(accumulate);
        // One z slice per pixel class (ih + pad, iw + pad) mod stride, x
        // covering the largest class.
        let class_pixels = s.in_h.div_ceil(s.stride) * s.in_w.div_ceil(s.stride);
        let classes = (s.stride * s.stride) as u32;
        let bindings = vec![
            Binding::tensor("weight", w),
            Binding::tensor("grad_output", dy),
            Binding::tensor("grad_input", dx),
        ];
        if self.kernels.backward_input != ConvKernel::RegisterTile {
            let n = s.batch * class_pixels;
            let (shader, grid, constants) =
                self.gpu_launch(ctx, pass, precision, s.in_c, n, classes)?;
            return self
                .spec(
                    ctx,
                    pass,
                    precision,
                    (shader, "backward_input"),
                    &mut params,
                    &constants,
                    bindings,
                    grid,
                )?
                .build_conv(ctx, self, pass);
        }
        let grid = self.grid(s.in_c, s.batch * class_pixels, classes);
        let entry = if s.stride > 1 {
            "backward_input_strided"
        } else {
            "backward_input"
        };
        let constants = self.constants(true);
        self.spec(
            ctx,
            pass,
            precision,
            ("conv", entry),
            &mut params,
            &constants,
            bindings,
            grid,
        )?
        .build_conv(ctx, self, pass)
    }

    /// How many parts backward_weight splits its reduction over (for the
    /// cooperative-matrix kernel, as on a device whose matrices are 8x8).
    pub fn weight_grad_splits(&self) -> u32 {
        self.splits_for(Some(32))
    }

    /// `weight_grad_splits` with `coop_side`, the cooperative-matrix
    /// kernel's tile side on this device.
    fn splits_for(&self, coop_side: Option<usize>) -> u32 {
        let s = &self.shape;
        let n = s.in_c * s.kernel_h * s.kernel_w;
        let [x, y, _] = match self.kernels.backward_weight {
            ConvKernel::Rows8 => return self.square_weight_grid()[0],
            ConvKernel::RegisterTile => self.grid(s.out_c, n, 1),
            ConvKernel::Tiled { tw_m, tw_n } => Self::tiled_grid((tw_m, tw_n), s.out_c, n, 1),
            ConvKernel::Coop => Self::coop_grid(coop_side.unwrap_or(32), s.out_c, n, 1),
            ConvKernel::Wide { tw_m, tw_n } => Self::wide_grid((tw_m, tw_n), s.out_c, n, 1),
        };
        let wanted = self.tuning.target_workgroups.div_ceil(x * y).max(1) as usize;
        let k = s.batch * s.out_h() * s.out_w();
        wanted.min(k / MIN_K_PER_SPLIT).max(1) as u32
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
        // The weight gradient is f32 at either precision.
        let precision = Precision::of(&self.label, &[x, dy])?;
        x.expect(&self.label, &s.input_shape(), precision.dtype())?;
        dy.expect(&self.label, &s.output_shape(), precision.dtype())?;
        dw.expect(&self.label, &s.weight_shape(), DType::F32)?;
        let pass = ConvPass::BackwardWeight;
        let n = s.in_c * s.kernel_h * s.kernel_w;
        let coop_side = ctx.coop.map(|c| (4 * c.size) as usize);
        let splits = self.splits_for(coop_side);
        let read = Binding::tensor;
        // The pixel splits are grid x for the rows8 kernel, z for the others.
        let (entry, grid, constants) = match self.kernels.backward_weight {
            ConvKernel::Rows8 => (
                ("conv", "conv3x3_s1_weight"),
                self.square_weight_grid(),
                vec![("BW_WG", SQUARE_WEIGHT_WG)],
            ),
            ConvKernel::RegisterTile => (
                ("conv", "backward_weight"),
                self.grid(s.out_c, n, splits),
                self.constants(false).to_vec(),
            ),
            _ => {
                let (shader, grid, constants) =
                    self.gpu_launch(ctx, pass, precision, s.out_c, n, splits)?;
                ((shader, "backward_weight"), grid, constants)
            }
        };
        // rows8 reads x and dy as vec4 arrays.
        let rows8 = self.kernels.backward_weight == ConvKernel::Rows8;
        let bind = |target| {
            if rows8 {
                vec![
                    read("src4", x),
                    read("grad4", dy),
                    read("grad_weight", target),
                ]
            } else {
                vec![
                    read("input", x),
                    read("grad_output", dy),
                    read("grad_weight", target),
                ]
            }
        };
        let constants = constants.as_slice();
        let mut params = self.params(splits)?;
        // Split over K, the kernel writes partial sums that a second dispatch adds.
        let partials = (splits > 1)
            .then(|| {
                Tensor::zeros(
                    ctx,
                    &format!("{} weight-grad partials", self.label),
                    &[splits as usize, s.out_c * n],
                    DType::F32,
                )
            })
            .transpose()?;
        let gemm = self
            .spec(
                ctx,
                pass,
                precision,
                entry,
                &mut params,
                constants,
                bind(partials.as_ref().unwrap_or(dw)),
                grid,
            )?
            .build_conv(ctx, self, pass)?;
        let Some(partials) = &partials else {
            return Ok(vec![gemm]);
        };
        let reduce_grid = [(s.out_c * n).div_ceil(SPLITS_WG as usize) as u32, 1, 1];
        let mut reduce = self.spec(
            ctx,
            pass,
            precision,
            ("conv", "reduce_weight_splits"),
            &mut params,
            &[("WG_SPLITS", SPLITS_WG)],
            vec![read("grad_weight", dw), read("weight_partials", partials)],
            reduce_grid,
        )?;
        reduce.label = format!("{} backward_weight (reduce splits)", self.label);
        // One kernel whichever candidate made the partial sums.
        reduce.variant = None;
        let reduce = reduce.build(ctx)?;
        Ok(vec![gemm, reduce])
    }
}
