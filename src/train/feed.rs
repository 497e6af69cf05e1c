//! A dataset on the GPU for the augment kernel, and how each batch reaches it.

use crate::data::Dataset;
use crate::gpu::{DType, Dispatch, GpuContext, GpuError, Tensor};
use crate::ops::augment::{Augment, AugmentTensors};
use crate::shapes::AugmentConfig;

use super::plan::Plan;

/// A dataset on the GPU for the augment kernel: resident when it fits one
/// storage binding, otherwise streamed (the batch is gathered on the CPU and
/// uploaded with the step).
pub(super) struct Feed {
    pub data: Dataset,
    pub streamed: bool,
    images: Tensor,
    labels: Tensor,
    indices: Tensor,
    pub augment: Augment,
    pub dispatch: Dispatch,
}

impl Feed {
    pub fn new(
        ctx: &GpuContext,
        plan: &Plan,
        data: Dataset,
        config: AugmentConfig,
        label: &str,
        force_stream: bool,
    ) -> Result<Self, GpuError> {
        let batch = plan.batch;
        let shape = data.shape;
        let limit = ctx.max_binding_bytes();
        let bytes = data.images.len() as u64;
        let streamed = force_stream || bytes > limit || bytes >= u64::from(u32::MAX);
        let dims = |n| [n, shape.channels, shape.height, shape.width];
        let (images, labels, indices) = if streamed {
            let identity: Vec<u32> = (0..batch as u32).collect();
            (
                Tensor::zeros(
                    ctx,
                    &format!("{label} batch images"),
                    &dims(batch),
                    DType::U8,
                )?,
                Tensor::zeros(ctx, &format!("{label} batch labels"), &[batch], DType::U32)?,
                Tensor::from_u32(ctx, &format!("{label} indices"), &[batch], &identity)?,
            )
        } else {
            (
                Tensor::from_u8(
                    ctx,
                    &format!("{label} images"),
                    &dims(data.len()),
                    &data.images,
                )?,
                Tensor::from_u32(ctx, &format!("{label} labels"), &[data.len()], &data.labels)?,
                Tensor::zeros(ctx, &format!("{label} indices"), &[batch], DType::U32)?,
            )
        };
        let t = AugmentTensors {
            images: &images,
            dataset_labels: &labels,
            indices: &indices,
            output: plan.tensor(plan.input),
            labels: plan.tensor(plan.labels),
        };
        let (augment, dispatch) = Augment::new(ctx, label, shape, config, &t)?;
        Ok(Feed {
            data,
            streamed,
            images,
            labels,
            indices,
            augment,
            dispatch,
        })
    }

    /// Points the next submitted batch at `samples` (queue writes, ordered
    /// before the next submit).
    pub fn load(&self, ctx: &GpuContext, samples: &[u32]) {
        if self.streamed {
            let mut bytes = Vec::with_capacity(self.images.size_bytes() as usize);
            for &s in samples {
                bytes.extend_from_slice(self.data.image(s as usize));
            }
            bytes.resize(self.images.size_bytes() as usize, 0);
            let labels: Vec<u32> = samples
                .iter()
                .map(|&s| self.data.labels[s as usize])
                .collect();
            ctx.queue.write_buffer(self.images.buffer(), 0, &bytes);
            ctx.queue
                .write_buffer(self.labels.buffer(), 0, bytemuck::cast_slice(&labels));
        } else {
            ctx.queue
                .write_buffer(self.indices.buffer(), 0, bytemuck::cast_slice(samples));
        }
    }
}
