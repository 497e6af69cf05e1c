//! The rows8 kernels' host side (shaders/conv.wgsl `conv3x3_s1`,
//! `conv3x3_s1_weight`): where they apply, their grids and dispatch.

use super::{
    Binding, Conv2d, ConvPass, Dispatch, GpuContext, GpuError, MIN_SEGMENTS_PER_SPLIT, Precision,
    SQUARE_ROWS, SQUARE_WEIGHT_ROWS, SQUARE_WEIGHT_WG, SQUARE_WG, Tensor, work::BuildConv,
};

impl Conv2d {
    /// Whether the vec4 3x3/1 kernel (`conv3x3_s1` in conv.wgsl) applies.
    pub fn uses_square_kernel(&self) -> bool {
        let s = &self.shape;
        s.kernel_h == 3
            && s.kernel_w == 3
            && s.stride == 1
            && s.pad == 1
            && s.in_w.is_multiple_of(8)
    }

    /// The 3x3/1 kernel: forward (y = conv(x, w)) or, transposed, backward_input
    /// (dx from dy). Rows are output channels forward, input channels backward.
    pub(super) fn square_kernel(
        &self,
        ctx: &GpuContext,
        pass: ConvPass,
        src: &Tensor,
        w: &Tensor,
        dst: &Tensor,
        accumulate: bool,
    ) -> Result<Dispatch, GpuError> {
        let s = &self.shape;
        let mut params = self.params(1)?;
        params.accumulate = u32::from(accumulate);
        let transposed = pass == ConvPass::BackwardInput;
        let rows = if transposed { s.in_c } else { s.out_c };
        let quads = s.batch * s.in_h * s.in_w / 8;
        let grid = [
            quads.div_ceil(SQUARE_WG as usize) as u32,
            rows.div_ceil(SQUARE_ROWS as usize) as u32,
            1,
        ];
        let bindings = vec![
            Binding::tensor("weight", w),
            Binding::tensor("src4", src),
            Binding::tensor("dst4", dst),
        ];
        let constants = [
            ("SQ_WG", SQUARE_WG),
            ("SQ_TRANSPOSED", u32::from(transposed)),
        ];
        self.spec(
            ctx,
            pass,
            Precision::of(&self.label, &[src, w, dst])?,
            ("conv", "conv3x3_s1"),
            &mut params,
            &constants,
            bindings,
            grid,
        )?
        .build_conv(ctx, self, pass)
    }

    /// Whether backward_weight can use `conv3x3_s1_weight`. Its lanes are
    /// input channels: with few (the RGB stem) most would idle.
    pub fn uses_square_weight_kernel(&self) -> bool {
        self.uses_square_kernel() && self.shape.in_c >= 8
    }

    /// `conv3x3_s1_weight`: grid (pixel splits, row blocks, channel blocks).
    pub(super) fn square_weight_grid(&self) -> [u32; 3] {
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
}
