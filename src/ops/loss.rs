//! Host side of shaders/loss.wgsl: softmax cross-entropy with its gradient and
//! GPU-side metric accumulation.

use crate::gpu::{
    Binding, DType, Dispatch, DispatchSpec, GpuContext, GpuError, Kernel, Precision,
    ShaderConstant, Tensor, Workgroup,
};

use super::Reduction;

crate::wgsl_struct! {
    pub struct LossParams {
        batch: u32,
        classes: u32,
        valid: u32,
        _pad: u32,
    }
}

/// Samples per workgroup of the per-sample pass.
const WG_SAMPLES: u32 = 64;

/// The entry points of shaders/loss.wgsl and what each binds.
pub const KERNELS: &[Kernel] = &[
    Kernel {
        modules: &["loss", "loss_subgroup"],
        entry: "forward_backward",
        roles: &[
            "logits",
            "labels",
            "grad_logits",
            "sample_loss",
            "sample_correct",
            "loss_scale",
        ],
        workgroup: Workgroup::Overrides(&["WG_SAMPLES"]),
    },
    Kernel {
        modules: &["loss", "loss_subgroup"],
        entry: "reduce_metrics",
        roles: &["sample_loss", "sample_correct", "metrics"],
        workgroup: Workgroup::PerItem,
    },
];

/// Layout of the metrics accumulator (f32): sums since it was last cleared,
/// and the mean loss of the latest batch.
pub const METRIC_LOSS_SUM: usize = 0;
pub const METRIC_CORRECT: usize = 1;
pub const METRIC_SAMPLES: usize = 2;
pub const METRIC_BATCH_LOSS: usize = 3;
/// Samples whose label is among the five largest logits.
pub const METRIC_TOP5: usize = 4;
/// Mixed precision only (shaders/scaler.wgsl): the loss scale after the
/// latest step, and the steps skipped for an overflow.
pub const METRIC_LOSS_SCALE: usize = 5;
pub const METRIC_SKIPPED: usize = 6;
pub const METRICS_LEN: usize = 7;

const fn slot(name: &'static str, value: usize) -> ShaderConstant {
    ShaderConstant {
        module: "loss",
        name,
        value: value as u32,
    }
}

/// The metric slots, as shaders/loss.wgsl writes them.
pub const SHADER_CONSTANTS: &[ShaderConstant] = &[
    slot("METRIC_LOSS_SUM", METRIC_LOSS_SUM),
    slot("METRIC_CORRECT", METRIC_CORRECT),
    slot("METRIC_SAMPLES", METRIC_SAMPLES),
    slot("METRIC_BATCH_LOSS", METRIC_BATCH_LOSS),
    slot("METRIC_TOP5", METRIC_TOP5),
];

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
    /// The loss scaler (`optim::LossScaler`): the gradient is multiplied by
    /// its scale (1 unless mixed precision scales it).
    pub loss_scale: &'a Tensor,
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
    t.loss_scale
        .expect(label, &[super::scaler::SCALER_WORDS], DType::U32)?;
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
    let spec = |entry, constants, bindings, workgroups| -> Result<_, GpuError> {
        let shader = if entry == "reduce_metrics" {
            reduction.loss_module()
        } else {
            "loss"
        };
        DispatchSpec {
            label: format!("{label} {entry}"),
            shader,
            kernel: Kernel::find(KERNELS, shader, entry)?,
            variant: None,
            precision: Precision::F32,
            constants,
            params: &params,
            bindings,
            workgroups,
        }
        .build(ctx)
    };
    Ok(vec![
        spec(
            "forward_backward",
            &[("WG_SAMPLES", WG_SAMPLES)],
            vec![
                b("logits", t.logits),
                b("labels", t.labels),
                b("grad_logits", t.grad_logits),
                b("sample_loss", t.sample_loss),
                b("sample_correct", t.sample_correct),
                b("loss_scale", t.loss_scale),
            ],
            [batch.div_ceil(WG_SAMPLES as usize) as u32, 1, 1],
        )?,
        spec(
            "reduce_metrics",
            &[],
            vec![
                b("sample_loss", t.sample_loss),
                b("sample_correct", t.sample_correct),
                b("metrics", t.metrics),
            ],
            [1, 1, 1],
        )?,
    ])
}
