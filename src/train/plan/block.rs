//! A residual block: its units, its shortcut (identity, zero-padding or a
//! projection unit), the residual add fused into the last unit's norm, and
//! the backward of all of it.

use crate::gpu::GpuError;
use crate::model::{BlockSpec, Shortcut};
use crate::ops::conv::ConvTuning;
use crate::ops::shortcut::Shortcut as PadShortcut;
use crate::shapes::Fusion;

use super::TensorId;
use super::builder::{Builder, List};
use super::unit::Unit;

/// How a block's input reaches its residual add.
pub(super) enum BuiltShortcut {
    Identity,
    Pad(PadShortcut),
    Projection(Unit),
}

pub(super) struct BuiltBlock {
    input: TensorId,
    pub(super) units: Vec<Unit>,
    shortcut: BuiltShortcut,
}

impl Builder<'_> {
    pub(super) fn block(
        &mut self,
        spec: &BlockSpec,
        x: TensorId,
        tuning: ConvTuning,
    ) -> Result<BuiltBlock, GpuError> {
        let hw = self.hw_of(x);
        let (shortcut, residual) = match &spec.shortcut {
            Shortcut::Identity => (BuiltShortcut::Identity, x),
            Shortcut::PadChannels {
                in_c,
                out_c,
                stride,
            } => {
                let sc = PadShortcut::new(
                    &format!("{} shortcut", spec.name),
                    shapes_shortcut(self.batch, *in_c, hw, *out_c, *stride),
                )?;
                let r = self.activation(
                    &format!("{} shortcut output", spec.name),
                    &sc.output_shape(),
                )?;
                let d = sc.forward(self.ctx, &self.tensors[x], &self.tensors[r])?;
                self.push(List::Both, d);
                (BuiltShortcut::Pad(sc), r)
            }
            Shortcut::Projection(p) => {
                let unit = self.unit(p, x, hw, Fusion::None, None, tuning)?;
                let r = unit.y;
                (BuiltShortcut::Projection(unit), r)
            }
        };
        let mut units = vec![];
        let mut h = x;
        for (i, u) in spec.units.iter().enumerate() {
            let last = i + 1 == spec.units.len();
            let (fusion, res) = if last {
                (Fusion::AddRelu, Some(residual))
            } else {
                (Fusion::Relu, None)
            };
            let hw = self.hw_of(h);
            let unit = self.unit(u, h, hw, fusion, res, tuning)?;
            h = unit.y;
            units.push(unit);
        }
        Ok(BuiltBlock {
            input: x,
            units,
            shortcut,
        })
    }

    pub(super) fn block_backward(
        &mut self,
        block: &BuiltBlock,
        dout: TensorId,
    ) -> Result<TensorId, GpuError> {
        // The first unit's conv adds its input gradient onto the skip's
        // (`backward_input_onto`), so the skip's is made first and the
        // block's two gradients need no add pass.
        let mut dy = dout;
        let mut dres = None;
        for (i, unit) in block.units.iter().enumerate().rev() {
            let (dc, r) = self.unit_param_grads(unit, dy)?;
            dres = dres.or(r);
            if i == 0 {
                let dres = dres.expect("the last unit adds the residual");
                let dx = self.skip_grad(block, dres)?;
                self.unit_input_grad(unit, dc, dx, true)?;
                return Ok(dx);
            }
            dy = self.acquire(&self.tensors[unit.x].shape().to_vec())?;
            self.unit_input_grad(unit, dc, dy, false)?;
        }
        Err(GpuError::shape("block", "a residual block without units"))
    }

    /// The gradient the shortcut passes to the block's input from `dres`
    /// (the residual's gradient, released unless it is that gradient).
    fn skip_grad(&mut self, block: &BuiltBlock, dres: TensorId) -> Result<TensorId, GpuError> {
        Ok(match &block.shortcut {
            BuiltShortcut::Identity => dres,
            BuiltShortcut::Pad(sc) => {
                let dx = self.acquire(&self.tensors[block.input].shape().to_vec())?;
                let d = sc.backward(self.ctx, &self.tensors[dres], &self.tensors[dx])?;
                self.push(List::Backward, d);
                self.release(dres);
                dx
            }
            BuiltShortcut::Projection(unit) => self
                .unit_backward(unit, dres, true)?
                .0
                .expect("asked for dx"),
        })
    }
}

fn shapes_shortcut(
    batch: usize,
    in_c: usize,
    hw: (usize, usize),
    out_c: usize,
    stride: usize,
) -> crate::shapes::ShortcutShape {
    crate::shapes::ShortcutShape {
        batch,
        in_c,
        in_h: hw.0,
        in_w: hw.1,
        out_c,
        stride,
    }
}
