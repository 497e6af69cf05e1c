//! The conv candidates that depend on the device: cooperative matrices
//! (`coop`, f16 on devices that list them) and the wide tiles (devices with
//! 16.5 KiB of workgroup memory): which are offered, the built-in choice,
//! and their pipeline constants and grids.

use super::{
    Conv2d, ConvKernel, ConvPass, CoopConfig, DType, GpuContext, GpuError, Precision, TILED_SHAPES,
    WIDE_SHAPES, WIDE_WORKGROUP_BYTES,
};

/// The fewest workgroups a GPU's built-in forward and input-gradient tiles
/// aim at: two per compute unit of a 132-unit H100 (wgpu reports no unit
/// count; the weight gradient fills the GPU by its split instead).
pub const GPU_FILL: usize = 256;

/// The cooperative-matrix kernel's tile side and pipeline constants.
pub(super) type CoopSetup = (usize, Vec<(&'static str, u32)>);

impl Conv2d {
    /// Every kernel that can serve `pass` on `ctx` with activations of
    /// `dtype`: `candidates`, the wide tiles where the device's workgroup
    /// limits allow them, and the cooperative-matrix kernel where the device
    /// has it and the plan is f16.
    pub fn candidates_on(&self, ctx: &GpuContext, dtype: DType, pass: ConvPass) -> Vec<ConvKernel> {
        let mut list = self.candidates(pass);
        list.extend(
            WIDE_SHAPES
                .iter()
                .map(|&(tw_m, tw_n)| ConvKernel::Wide { tw_m, tw_n })
                .filter(|&k| fits_device(ctx, k)),
        );
        if coop_serves(ctx, dtype) {
            list.push(ConvKernel::Coop);
        }
        list
    }

    /// The built-in choice on `ctx` at `dtype`: a GPU's (`cpu_builtins`
    /// false) is the cooperative-matrix kernel wherever the device has it at
    /// f16, else the wide tile for passes of 128 rows or more, else
    /// `builtin_kernel`'s tiles. A CPU adapter keeps the kernels measured
    /// fastest there even where its driver lists cooperative matrices:
    /// lavapipe 26.1 emulates them, and trained ResNet-20 at f16 3.6x slower
    /// on them than on its own kernels (README, "On lavapipe 26.1"); `--tune
    /// gpu` runs them there.
    pub fn builtin_kernel_on(
        &self,
        ctx: &GpuContext,
        dtype: DType,
        pass: ConvPass,
        cpu_builtins: bool,
    ) -> ConvKernel {
        if cpu_builtins {
            return self.builtin_kernel(pass, true);
        }
        if coop_serves(ctx, dtype) {
            return ConvKernel::Coop;
        }
        let rows = match pass {
            ConvPass::BackwardInput => self.shape.in_c,
            _ => self.shape.out_c,
        };
        let wide = ConvKernel::Wide {
            tw_m: WIDE_SHAPES[0].0,
            tw_n: WIDE_SHAPES[0].1,
        };
        // The weight gradient fills the GPU by its split instead.
        let fills =
            |k| pass == ConvPass::BackwardWeight || self.simt_workgroups(pass, k) >= GPU_FILL;
        // A GPU's 128-row tile where the pass has 128 rows or more.
        if rows >= 128 && fits_device(ctx, wide) && fills(wide) {
            return wide;
        }
        let tiled = self.builtin_kernel(pass, false);
        if fills(tiled) {
            return tiled;
        }
        // A small CIFAR layer: the largest tile whose grid still gives every
        // compute unit two workgroups, else the one with the most.
        let smaller = TILED_SHAPES
            .iter()
            .map(|&(tw_m, tw_n)| ConvKernel::Tiled { tw_m, tw_n });
        smaller
            .clone()
            .find(|&k| self.simt_workgroups(pass, k) >= GPU_FILL)
            .or_else(|| smaller.max_by_key(|&k| self.simt_workgroups(pass, k)))
            .unwrap_or(tiled)
    }

    /// Workgroups of `pass` on the tiled or wide `kernel` (the weight
    /// gradient's before its split).
    pub(super) fn simt_workgroups(&self, pass: ConvPass, kernel: ConvKernel) -> usize {
        let s = &self.shape;
        let (m, n, z) = match pass {
            ConvPass::Forward => (s.out_c, s.batch * s.out_h() * s.out_w(), 1),
            ConvPass::BackwardInput => {
                let class = s.in_h.div_ceil(s.stride) * s.in_w.div_ceil(s.stride);
                (s.in_c, s.batch * class, (s.stride * s.stride) as u32)
            }
            ConvPass::BackwardWeight => (s.out_c, s.in_c * s.kernel_h * s.kernel_w, 1),
        };
        let [x, y, z] = match kernel {
            ConvKernel::Wide { tw_m, tw_n } => Self::wide_grid((tw_m, tw_n), m, n, z),
            ConvKernel::Tiled { tw_m, tw_n } => Self::tiled_grid((tw_m, tw_n), m, n, z),
            _ => return usize::MAX,
        };
        x as usize * y as usize * z as usize
    }

    /// conv_coop.wgsl's workgroup tile side and constants on `ctx`, or an
    /// error naming the conv where the device has no cooperative matrices
    /// or the activations are not f16.
    pub(super) fn coop_setup(
        &self,
        ctx: &GpuContext,
        precision: Precision,
    ) -> Result<CoopSetup, GpuError> {
        let coop = coop_config(ctx, precision.dtype())
            .ok_or_else(|| GpuError::shape(&self.label, coop_refusal(ctx, precision)))?;
        let s = &self.shape;
        let square = if s.kernel_h == s.kernel_w {
            s.kernel_h as u32
        } else {
            0
        };
        let constants = vec![("WG", 4 * coop.subgroup_max), ("KERNEL", square)];
        Ok(((4 * coop.size) as usize, constants))
    }

    /// conv_wide.wgsl's constants (tile, and for square kernels the size and
    /// the stride), or an error where the device lacks the workgroup memory.
    pub(super) fn wide_constants(
        &self,
        ctx: &GpuContext,
        (tw_m, tw_n): (u32, u32),
    ) -> Result<Vec<(&'static str, u32)>, GpuError> {
        if !fits_device(ctx, ConvKernel::Wide { tw_m, tw_n }) {
            return Err(GpuError::shape(
                &self.label,
                format!(
                    "kernel {} needs {WIDE_WORKGROUP_BYTES} bytes of workgroup memory and {} \
                     invocations; {} allows {} and {}",
                    ConvKernel::Wide { tw_m, tw_n }.name(),
                    tw_m * tw_n,
                    ctx.adapter_info.name,
                    ctx.limits.max_compute_workgroup_storage_size,
                    ctx.limits.max_compute_invocations_per_workgroup
                ),
            ));
        }
        let s = &self.shape;
        let square = if s.kernel_h == s.kernel_w {
            s.kernel_h as u32
        } else {
            0
        };
        Ok(vec![
            ("TW_M", tw_m),
            ("TW_N", tw_n),
            ("KERNEL", square),
            ("STRIDE", s.stride as u32),
        ])
    }

    pub(super) fn wide_grid((tw_m, tw_n): (u32, u32), m: usize, n: usize, z: u32) -> [u32; 3] {
        [
            n.div_ceil((8 * tw_n) as usize) as u32,
            m.div_ceil((8 * tw_m) as usize) as u32,
            z,
        ]
    }

    pub(super) fn coop_grid(side: usize, m: usize, n: usize, z: u32) -> [u32; 3] {
        [n.div_ceil(side) as u32, m.div_ceil(side) as u32, z]
    }
}

/// Whether `kernel`'s workgroup fits the device's limits (the wide tiles
/// need 16.5 KiB of workgroup memory, beyond WebGPU's default 16 KiB).
pub(super) fn fits_device(ctx: &GpuContext, kernel: ConvKernel) -> bool {
    match kernel {
        ConvKernel::Wide { tw_m, tw_n } => {
            let l = &ctx.limits;
            l.max_compute_workgroup_storage_size >= WIDE_WORKGROUP_BYTES
                && l.max_compute_invocations_per_workgroup >= tw_m * tw_n
                && l.max_compute_workgroup_size_x >= tw_n
                && l.max_compute_workgroup_size_y >= tw_m
        }
        _ => true,
    }
}

/// The device's cooperative-matrix configuration where it serves convs with
/// activations of `dtype` (f16 operands only: at f32 the products would lose
/// f32's precision).
pub(super) fn coop_config(ctx: &GpuContext, dtype: DType) -> Option<CoopConfig> {
    ctx.coop.filter(|_| dtype == DType::F16)
}

fn coop_serves(ctx: &GpuContext, dtype: DType) -> bool {
    coop_config(ctx, dtype).is_some()
}

fn coop_refusal(ctx: &GpuContext, precision: Precision) -> String {
    if precision != Precision::F16 {
        "kernel coop runs at f16 only (--precision f16)".into()
    } else {
        format!(
            "kernel coop needs cooperative matrices, which {} does not offer",
            ctx.adapter_info.name
        )
    }
}
