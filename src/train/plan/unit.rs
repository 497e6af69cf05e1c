//! A conv unit: conv (+ bias) -> norm (with its fusion), its forward and its
//! backward. The norm slot is `norm.rs`.

use crate::gpu::GpuError;
use crate::model::{ConvBnSpec, TensorRole};
use crate::ops::bias::Bias;
use crate::ops::conv::{Conv2d, ConvTuning};
use crate::ops::tune::choose_conv_kernels;
use crate::shapes::{BatchNormShape, Fusion};

use super::arena::{ParamRead, ParamSlot};
use super::builder::{Builder, List};
use super::fit::conv_shape;
use super::norm::{NormIo, NormLayer, NormState};
use super::{ConvChoice, TensorId};

/// The built tensors of one conv (+ bias) + norm unit: x -> c (conv output)
/// -> y (normalized, activated).
pub(super) struct Unit {
    pub(super) conv: Conv2d,
    pub(super) weight: ParamSlot,
    pub(super) bias: Option<(Bias, ParamSlot)>,
    pub(super) norm: NormLayer,
    pub(super) x: TensorId,
    pub(super) c: TensorId,
    pub(super) y: TensorId,
}

impl Builder<'_> {
    /// conv (+ bias) -> norm (with `fusion`), forward dispatches recorded.
    /// Its parameters and statistics are the spec's state-dict entries.
    pub(super) fn unit(
        &mut self,
        spec: &ConvBnSpec,
        x: TensorId,
        hw: (usize, usize),
        fusion: Fusion,
        residual: Option<TensorId>,
        tuning: ConvTuning,
    ) -> Result<Unit, GpuError> {
        let shape = conv_shape(spec, self.batch, hw);
        let (conv, sources) =
            choose_conv_kernels(self.ctx, Conv2d::new(&spec.conv, shape, tuning)?, self.act)?;
        self.conv_choices.push(ConvChoice {
            layer: spec.conv.clone(),
            shape,
            kernels: conv.kernels,
            sources,
        });
        let (mut weight, mut bias, mut gamma, mut beta) = (None, None, None, None);
        let (mut running_mean, mut running_var) = (None, None);
        for e in spec.state_entries() {
            match e.role {
                TensorRole::ConvWeight => {
                    weight = Some(self.param(&e.name, &e.shape, ParamRead::AtPlanPrecision)?)
                }
                TensorRole::ConvBias => {
                    bias = Some(self.param(&e.name, &e.shape, ParamRead::F32)?)
                }
                TensorRole::NormWeight => {
                    gamma = Some(self.param(&e.name, &e.shape, ParamRead::F32)?)
                }
                TensorRole::NormBias => {
                    beta = Some(self.param(&e.name, &e.shape, ParamRead::F32)?)
                }
                TensorRole::RunningMean => {
                    running_mean = Some(self.state_tensor(&e.name, &e.shape)?)
                }
                TensorRole::RunningVar => running_var = Some(self.state_tensor(&e.name, &e.shape)?),
                // Counted on the CPU by the trainer.
                TensorRole::BatchesTracked => {}
                TensorRole::FcWeight | TensorRole::FcBias => {}
            }
        }
        let missing = |what| GpuError::shape(&spec.conv, format!("the unit has no {what}"));
        let weight = weight.ok_or_else(|| missing("conv weight"))?;
        let out = shape.output_shape();
        let c = self.activation(&format!("{} output", spec.conv), &out)?;
        let y = self.activation(&format!("{} output", spec.bn), &out)?;
        let t = &self.tensors;
        let fwd = conv.forward(self.ctx, &t[x], &t[weight.read], &t[c])?;
        self.push(List::Both, fwd);
        let bias = match bias {
            Some(slot) => {
                let op = Bias::new(
                    &format!("{} bias", spec.conv),
                    BatchNormShape {
                        batch: self.batch,
                        channels: spec.out_c,
                        hw: out[2] * out[3],
                    },
                );
                let d = op.forward(self.ctx, &self.tensors[slot.value], &self.tensors[c])?;
                self.push(List::Both, d);
                Some((op, slot))
            }
            None => None,
        };
        let state = NormState {
            gamma: gamma.ok_or_else(|| missing("norm weight"))?,
            beta: beta.ok_or_else(|| missing("norm bias"))?,
            running: running_mean.zip(running_var),
        };
        let io = NormIo { c, y, residual };
        let norm = NormLayer::build(self, spec, state, fusion, io)?;
        Ok(Unit {
            conv,
            weight,
            bias,
            norm,
            x,
            c,
            y,
        })
    }

    /// Gradients of one unit from dy (the gradient of its output, released
    /// here); returns the gradient of its input (when asked) and, for the
    /// AddRelu form, of its residual.
    pub(super) fn unit_backward(
        &mut self,
        unit: &Unit,
        dy: TensorId,
        need_dx: bool,
    ) -> Result<(Option<TensorId>, Option<TensorId>), GpuError> {
        let (dc, dres) = self.unit_param_grads(unit, dy)?;
        let dx = if need_dx {
            let dx = self.acquire(&self.tensors[unit.x].shape().to_vec())?;
            self.unit_input_grad(unit, dc, dx, false)?;
            Some(dx)
        } else {
            self.release(dc);
            None
        };
        Ok((dx, dres))
    }

    /// The unit's input gradient from `dc` (its conv output's gradient,
    /// released here) into `dx`, added to what `dx` holds if `accumulate`.
    pub(super) fn unit_input_grad(
        &mut self,
        unit: &Unit,
        dc: TensorId,
        dx: TensorId,
        accumulate: bool,
    ) -> Result<(), GpuError> {
        let t = &self.tensors;
        let (dc_t, w, dx_t) = (&t[dc], &t[unit.weight.read], &t[dx]);
        let d = if accumulate {
            unit.conv.backward_input_onto(self.ctx, dc_t, w, dx_t)?
        } else {
            unit.conv.backward_input(self.ctx, dc_t, w, dx_t)?
        };
        self.push(List::Backward, d);
        self.release(dc);
        Ok(())
    }

    /// The norm's, bias's and weight's gradients of one unit from dy
    /// (released here); returns the gradient of its conv's output and, for
    /// the AddRelu form, of its residual.
    pub(super) fn unit_param_grads(
        &mut self,
        unit: &Unit,
        dy: TensorId,
    ) -> Result<(TensorId, Option<TensorId>), GpuError> {
        let out_shape = self.tensors[unit.c].shape().to_vec();
        let dc = self.acquire(&out_shape)?;
        let dres = match unit.norm.fusion() {
            Fusion::AddRelu => Some(self.acquire(&out_shape)?),
            _ => None,
        };
        let io = NormIo {
            c: unit.c,
            y: unit.y,
            residual: None,
        };
        unit.norm.record_backward(self, io, dy, dc, dres)?;
        let t = &self.tensors;
        if let Some((op, slot)) = &unit.bias {
            let d = op.backward(self.ctx, &t[dc], &t[slot.grad])?;
            self.push(List::Backward, d);
        }
        let t = &self.tensors;
        let dw = unit
            .conv
            .backward_weight(self.ctx, &t[unit.x], &t[dc], &t[unit.weight.grad])?;
        self.push_all(List::Backward, dw);
        self.release(dy);
        Ok((dc, dres))
    }
}
