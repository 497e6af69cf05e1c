//! Grids past the workgroup limit, and what a conv dispatch does for the
//! dispatch report (`info --dispatches`).

use super::{
    Conv2d, ConvKernel, ConvParams, ConvPass, Dispatch, DispatchSpec, GpuContext, GpuError,
    Precision,
};

/// `[columns, rows, z]` with the column blocks spread over bands of y where
/// they pass `limit`: `[ceil(columns / bands), rows * bands, z]`, which the
/// shaders' `tile_block` (conv_params.wgsl) turns back into blocks.
pub(super) fn fold_columns([columns, rows, z]: [u32; 3], limit: u32) -> [u32; 3] {
    if columns <= limit {
        return [columns, rows, z];
    }
    let bands = columns.div_ceil(limit);
    [columns.div_ceil(bands), rows * bands, z]
}

/// Builds a conv pass's dispatch with what it does (`Work`): the FLOPs of
/// the pass (every pass multiplies as many pairs as the forward one) and
/// the intensity of the kernel's tile.
pub(super) trait BuildConv {
    fn build_conv(
        self,
        ctx: &GpuContext,
        conv: &Conv2d,
        pass: ConvPass,
    ) -> Result<Dispatch, GpuError>;
}

impl BuildConv for DispatchSpec<'_, ConvParams> {
    fn build_conv(
        self,
        ctx: &GpuContext,
        conv: &Conv2d,
        pass: ConvPass,
    ) -> Result<Dispatch, GpuError> {
        let bytes = match self.precision {
            Precision::F32 => 4.0,
            Precision::F16 => 2.0,
        };
        let mut d = self.build(ctx)?;
        let s = &conv.shape;
        let fmas =
            (s.out_c * s.in_c * s.kernel_h * s.kernel_w * s.batch * s.out_h() * s.out_w()) as f64;
        d.work.flops = 2.0 * fmas;
        let (workgroup, global) = tile_intensity(conv.kernels.get(pass), ctx, pass, bytes);
        d.work.fma_per_workgroup_byte = workgroup;
        d.work.fma_per_global_byte = global;
        d.work.matrix_units = conv.kernels.get(pass) == ConvKernel::Coop;
        Ok(d)
    }
}

/// FMAs a kernel's inner loop does per byte it reads from workgroup memory
/// (None: it uses none) and per byte one invocation or workgroup loads from
/// global memory, for elements of `bytes` bytes (from the tile shapes in
/// the shaders; caches not counted).
fn tile_intensity(
    kernel: ConvKernel,
    ctx: &GpuContext,
    pass: ConvPass,
    bytes: f64,
) -> (Option<f64>, Option<f64>) {
    match kernel {
        // 4x4 accumulators from 4 + 4 loads per k (through the caches).
        ConvKernel::RegisterTile => (None, Some(16.0 / (8.0 * bytes))),
        // Per input channel and kernel row: 16 source values and 48 uniform
        // weights feed 8 pixels x 3 taps x 16 rows (forward, input
        // gradient); the weight gradient's 9 taps x 8 pixels x 2 rows come
        // from 16 source and 16 gradient values.
        ConvKernel::Rows8 => match pass {
            ConvPass::BackwardWeight => (None, Some(144.0 / (32.0 * bytes))),
            _ => (None, Some(384.0 / (64.0 * bytes))),
        },
        // 16 FMAs per k from a vec4 of A and one of B (f32 in workgroup
        // memory); the workgroup loads BM + BN elements per k for BM x BN.
        ConvKernel::Tiled { tw_m, tw_n } => {
            let (bm, bn) = (f64::from(4 * tw_m), f64::from(4 * tw_n));
            (Some(16.0 / 32.0), Some(bm * bn / ((bm + bn) * bytes)))
        }
        // Per CM slice a subgroup loads 4 CM x CM f16 matrices for 4 CM^3
        // FMAs; the workgroup loads 2 x 4 CM elements per k for (4 CM)^2.
        // (Wide: below.)
        ConvKernel::Coop => {
            let cm = f64::from(ctx.coop.map_or(8, |c| c.size));
            (Some(cm / 2.0), Some(4.0 * cm / (2.0 * bytes)))
        }
        // 64 FMAs per k from 2 vec4 of A and 2 of B (64 bytes).
        ConvKernel::Wide { tw_m, tw_n } => {
            let (bm, bn) = (f64::from(8 * tw_m), f64::from(8 * tw_n));
            (Some(1.0), Some(bm * bn / ((bm + bn) * bytes)))
        }
    }
}
