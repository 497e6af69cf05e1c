//! The normalization slot of a conv unit in the plan: batch norm or group norm,
//! each with its tensors, its forward dispatches (training and eval) and its
//! backward dispatches, built in one place. A new norm kind is a variant here
//! plus its op (shader, oracle, host code); the unit around it does not change.

use crate::gpu::{GpuError, Tensor};
use crate::model::{ConvBnSpec, Norm};
use crate::ops::batchnorm::{BatchNorm, BnGradTensors, BnTensors};
use crate::ops::groupnorm::{GnGradTensors, GnTensors, GroupNorm};
use crate::ops::partition::MIN_PART_VALUES;
use crate::ops::tune::{choose_bn_reduction, norm_target_workgroups};
use crate::shapes::{BatchNormShape, Fusion, GroupNormShape};

use super::TensorId;
use super::arena::ParamSlot;
use super::builder::{Builder, List};

/// The state a norm layer reads from the unit's state-dict entries.
pub(super) struct NormState {
    pub gamma: ParamSlot,
    pub beta: ParamSlot,
    /// Batch norm's running estimates (mean, var).
    pub running: Option<(TensorId, TensorId)>,
}

pub(super) enum NormLayer {
    Batch(BatchLayer),
    Group(GroupLayer),
}

pub(super) struct BatchLayer {
    op: BatchNorm,
    state: NormState,
    running_mean: TensorId,
    running_var: TensorId,
    /// Saved statistics and the parts' partials (`BatchNorm::stats_len`).
    stats: TensorId,
}

pub(super) struct GroupLayer {
    op: GroupNorm,
    state: NormState,
    /// Saved statistics and the parts' partials (`GroupNorm::stats_len`).
    stats: TensorId,
}

/// The tensors a norm layer normalizes: `c` (the conv's output) into `y`,
/// adding `residual` in the AddRelu form.
#[derive(Clone, Copy)]
pub(super) struct NormIo {
    pub c: TensorId,
    pub y: TensorId,
    pub residual: Option<TensorId>,
}

impl NormLayer {
    /// Builds the layer after `spec`'s conv and records its forward dispatches.
    pub fn build(
        b: &mut Builder<'_>,
        spec: &ConvBnSpec,
        state: NormState,
        fusion: Fusion,
        io: NormIo,
    ) -> Result<Self, GpuError> {
        let out = b.tensors[io.c].shape().to_vec();
        let (batch, channels, hw) = (out[0], out[1], out[2] * out[3]);
        let layer = match spec.norm {
            Norm::Batch => {
                let shape = BatchNormShape {
                    batch,
                    channels,
                    hw,
                };
                let mut op = BatchNorm::new(&spec.bn, shape, fusion)?;
                op.split(norm_target_workgroups(b.ctx), MIN_PART_VALUES);
                let (reduction, source) = choose_bn_reduction(b.ctx, &op, b.act);
                op.reduction = reduction;
                b.reductions.push((spec.bn.clone(), reduction, source));
                let (running_mean, running_var) = state.running.ok_or_else(|| {
                    GpuError::shape(&spec.bn, "batch norm without running statistics")
                })?;
                NormLayer::Batch(BatchLayer {
                    state,
                    running_mean,
                    running_var,
                    stats: b.tensor(&format!("{} stats", spec.bn), &[op.stats_len()])?,
                    op,
                })
            }
            Norm::Group { groups } => {
                let shape = GroupNormShape {
                    batch,
                    channels,
                    groups,
                    hw,
                };
                let mut op = GroupNorm::new(&spec.bn, shape, fusion)?;
                op.split(norm_target_workgroups(b.ctx), MIN_PART_VALUES);
                NormLayer::Group(GroupLayer {
                    stats: b.tensor(&format!("{} stats", spec.bn), &[op.stats_len()])?,
                    op,
                    state,
                })
            }
        };
        layer.record_forward(b, io)?;
        Ok(layer)
    }

    pub fn fusion(&self) -> Fusion {
        match self {
            NormLayer::Batch(l) => l.op.fusion,
            NormLayer::Group(l) => l.op.fusion,
        }
    }

    pub fn state(&self) -> &NormState {
        match self {
            NormLayer::Batch(l) => &l.state,
            NormLayer::Group(l) => &l.state,
        }
    }

    fn record_forward(&self, b: &mut Builder<'_>, io: NormIo) -> Result<(), GpuError> {
        let t = &b.tensors;
        let res = io.residual.map(|r| &t[r]);
        let y = &t[io.y];
        match self {
            NormLayer::Batch(l) => {
                let bn = l.tensors(t, io.c);
                let train = l.op.forward_train(b.ctx, &bn, res, y)?;
                let eval = l.op.forward_eval(b.ctx, &bn, res, y)?;
                b.push_all(List::Train, train);
                b.push_all(List::Eval, eval);
            }
            // No running statistics: evaluation normalizes like training.
            NormLayer::Group(l) => {
                let forward = l.op.forward(b.ctx, &l.tensors(t, io.c), res, y)?;
                b.push_all(List::Both, forward);
            }
        }
        Ok(())
    }

    /// Records the backward dispatches from `dy` (the gradient of `io.y`):
    /// the gradient of `io.c` into `dc`, of the residual into `dres` (AddRelu),
    /// and of gamma and beta into their gradient slots.
    pub fn record_backward(
        &self,
        b: &mut Builder<'_>,
        io: NormIo,
        dy: TensorId,
        dc: TensorId,
        dres: Option<TensorId>,
    ) -> Result<(), GpuError> {
        let state = self.state();
        match self {
            NormLayer::Batch(l) => {
                let t = &b.tensors;
                let grads = BnGradTensors {
                    dy: &t[dy],
                    dx: &t[dc],
                    dgamma: &t[state.gamma.grad],
                    dbeta: &t[state.beta.grad],
                    dresidual: dres.map(|r| &t[r]),
                };
                let d =
                    l.op.backward(b.ctx, &l.tensors(t, io.c), &t[io.y], &grads)?;
                b.push_all(List::Backward, d);
            }
            NormLayer::Group(l) => {
                let t = &b.tensors;
                let grads = GnGradTensors {
                    dy: &t[dy],
                    dx: &t[dc],
                    dgamma: &t[state.gamma.grad],
                    dbeta: &t[state.beta.grad],
                    dresidual: dres.map(|r| &t[r]),
                };
                let d =
                    l.op.backward(b.ctx, &l.tensors(t, io.c), &t[io.y], &grads)?;
                b.push_all(List::Backward, d);
            }
        }
        Ok(())
    }
}

impl BatchLayer {
    fn tensors<'a>(&self, t: &'a [Tensor], c: TensorId) -> BnTensors<'a> {
        BnTensors {
            x: &t[c],
            gamma: &t[self.state.gamma.value],
            beta: &t[self.state.beta.value],
            running_mean: &t[self.running_mean],
            running_var: &t[self.running_var],
            stats: &t[self.stats],
        }
    }
}

impl GroupLayer {
    fn tensors<'a>(&self, t: &'a [Tensor], c: TensorId) -> GnTensors<'a> {
        GnTensors {
            x: &t[c],
            gamma: &t[self.state.gamma.value],
            beta: &t[self.state.beta.value],
            stats: &t[self.stats],
        }
    }
}
