//! The head: global average pool and the classifier (fc), and the softmax
//! cross-entropy loss after it, forward and backward.

use crate::gpu::{Dispatch, GpuContext, GpuError, Tensor};
use crate::model::Network;
use crate::ops::Reduction;
use crate::ops::linear::Linear;
use crate::ops::loss::{self, CrossEntropyTensors};
use crate::ops::pool::Pool;
use crate::shapes::LinearShape;

use super::TensorId;
use super::arena::{ParamRead, ParamSlot};
use super::builder::{Builder, List};

/// Global average pool and the classifier.
pub(super) struct Head {
    pool: Pool,
    fc: Linear,
    weight: ParamSlot,
    bias: ParamSlot,
    pooled: TensorId,
}

/// The loss's tensors besides its metrics accumulator (the train and eval
/// losses differ only in that).
#[derive(Clone, Copy)]
pub(super) struct LossTensors {
    /// How the batch sum of the metrics ends.
    pub(super) reduction: Reduction,
    pub(super) logits: TensorId,
    pub(super) labels: TensorId,
    pub(super) grad_logits: TensorId,
    pub(super) sample_loss: TensorId,
    pub(super) sample_correct: TensorId,
    pub(super) scaler: TensorId,
}

impl LossTensors {
    /// Softmax cross-entropy dispatches accumulating into `metrics`, counting
    /// the first `valid` samples.
    pub(super) fn dispatches(
        &self,
        ctx: &GpuContext,
        t: &[Tensor],
        metrics: TensorId,
        label: &str,
        valid: usize,
    ) -> Result<Vec<Dispatch>, GpuError> {
        let ce = CrossEntropyTensors {
            logits: &t[self.logits],
            labels: &t[self.labels],
            grad_logits: &t[self.grad_logits],
            sample_loss: &t[self.sample_loss],
            sample_correct: &t[self.sample_correct],
            metrics: &t[metrics],
            loss_scale: &t[self.scaler],
        };
        loss::softmax_cross_entropy(ctx, label, &ce, valid, self.reduction)
    }
}

impl Builder<'_> {
    /// Global average pool and fc; returns the head and the logits tensor.
    pub(super) fn head(
        &mut self,
        network: &Network,
        x: TensorId,
    ) -> Result<(Head, TensorId), GpuError> {
        let s = self.tensors[x].shape().to_vec();
        let gap = Pool::global_average("avgpool", s[0], s[1], s[2], s[3])?;
        let pooled = self.activation("avgpool output", &[s[0], s[1]])?;
        let fc = Linear::new(
            "fc",
            LinearShape {
                batch: self.batch,
                in_f: network.features,
                out_f: network.num_classes,
            },
        );
        let w = self.param(
            "fc.weight",
            &[network.num_classes, network.features],
            ParamRead::AtPlanPrecision,
        )?;
        let bias = self.param("fc.bias", &[network.num_classes], ParamRead::F32)?;
        let logits = self.tensor("logits", &[self.batch, network.num_classes])?;
        let t = &self.tensors;
        let d1 = gap.global_avg_forward(self.ctx, &t[x], &t[pooled])?;
        let d2 = fc.forward(self.ctx, &t[pooled], &t[w.read], &t[bias.value], &t[logits])?;
        self.push(List::Both, d1);
        self.push(List::Both, d2);
        let head = Head {
            pool: gap,
            fc,
            weight: w,
            bias,
            pooled,
        };
        Ok((head, logits))
    }

    pub(super) fn head_backward(
        &mut self,
        head: &Head,
        features: TensorId,
        grad_logits: TensorId,
    ) -> Result<TensorId, GpuError> {
        let Head {
            pool: gap,
            fc,
            weight: w,
            bias,
            pooled,
        } = head;
        let dpooled = self.acquire(&self.tensors[*pooled].shape().to_vec())?;
        let t = &self.tensors;
        let ds = fc.backward(
            self.ctx,
            &t[*pooled],
            &t[w.read],
            &t[grad_logits],
            &t[dpooled],
            &t[w.grad],
            &t[bias.grad],
        )?;
        self.push_all(List::Backward, ds);
        let dfeatures = self.acquire(&self.tensors[features].shape().to_vec())?;
        let t = &self.tensors;
        let d = gap.global_avg_backward(self.ctx, &t[dpooled], &t[dfeatures])?;
        self.push(List::Backward, d);
        self.release(dpooled);
        Ok(dfeatures)
    }
}
