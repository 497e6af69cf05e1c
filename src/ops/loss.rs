//! Host side of shaders/loss.wgsl: softmax cross-entropy with its gradient and
//! GPU-side metric accumulation.

use crate::gpu::{Binding, DType, Dispatch, DispatchSpec, GpuContext, GpuError, Tensor};

use super::Reduction;

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct LossParams {
    batch: u32,
    classes: u32,
    valid: u32,
    _pad: u32,
}

/// Layout of the metrics accumulator (f32): sums since it was last cleared,
/// and the mean loss of the latest batch.
pub const METRIC_LOSS_SUM: usize = 0;
pub const METRIC_CORRECT: usize = 1;
pub const METRIC_SAMPLES: usize = 2;
pub const METRIC_BATCH_LOSS: usize = 3;
/// Samples whose label is among the five largest logits.
pub const METRIC_TOP5: usize = 4;
pub const METRICS_LEN: usize = 5;

pub struct CrossEntropyTensors<'a> {
    pub logits: &'a Tensor,
    pub labels: &'a Tensor,
    pub grad_logits: &'a Tensor,
    /// [batch] scratch.
    pub sample_loss: &'a Tensor,
    /// [2, batch] scratch: top-1 hits, then top-5 hits.
    pub sample_correct: &'a Tensor,
    /// [METRICS_LEN] accumulator.
    pub metrics: &'a Tensor,
}

/// Two dispatches: per-sample loss and gradient, then the batch sums added to
/// the metrics accumulator (its sum ending with `reduction`). Only the first
/// `valid` samples count (the rest are the padding of a last, partial
/// evaluation batch); training passes the batch.
pub fn softmax_cross_entropy(
    ctx: &GpuContext,
    label: &str,
    t: &CrossEntropyTensors<'_>,
    valid: usize,
    reduction: Reduction,
) -> Result<Vec<Dispatch>, GpuError> {
    let &[batch, classes] = t.logits.shape() else {
        return Err(GpuError::shape(
            label,
            format!(
                "logits must be [batch, classes], got {:?}",
                t.logits.shape()
            ),
        ));
    };
    t.logits.expect(label, &[batch, classes], DType::F32)?;
    t.grad_logits.expect(label, &[batch, classes], DType::F32)?;
    t.labels.expect(label, &[batch], DType::U32)?;
    t.sample_loss.expect(label, &[batch], DType::F32)?;
    t.sample_correct.expect(label, &[2, batch], DType::F32)?;
    t.metrics.expect(label, &[METRICS_LEN], DType::F32)?;
    if valid == 0 || valid > batch {
        return Err(GpuError::shape(
            label,
            format!("{valid} valid samples in a batch of {batch}"),
        ));
    }
    let params = LossParams {
        batch: super::u32_of(label, "batch", batch)?,
        classes: super::u32_of(label, "classes", classes)?,
        valid: valid as u32,
        _pad: 0,
    };
    let b = Binding::tensor;
    let spec = |entry, bindings, workgroups| DispatchSpec {
        label: format!("{label} {entry}"),
        shader: if entry == "reduce_metrics" {
            reduction.loss_module()
        } else {
            "loss"
        },
        entry,
        constants: &[],
        params: &params,
        bindings,
        workgroups,
    };
    Ok(vec![
        spec(
            "forward_backward",
            vec![
                b(1, t.logits),
                b(2, t.labels),
                b(3, t.grad_logits),
                b(4, t.sample_loss),
                b(5, t.sample_correct),
            ],
            [batch.div_ceil(64) as u32, 1, 1],
        )
        .build(ctx)?,
        spec(
            "reduce_metrics",
            vec![b(4, t.sample_loss), b(5, t.sample_correct), b(6, t.metrics)],
            [1, 1, 1],
        )
        .build(ctx)?,
    ])
}
