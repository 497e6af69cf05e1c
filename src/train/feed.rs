//! A dataset on the GPU for the augment kernel, and how each batch reaches it.

use web_time::Instant;

use crate::data::pipeline::{BadFile, BatchOrder, Pipeline, PipelineSpec};
use crate::data::transform::{EVAL_CROP, Transform};
use crate::data::{DataError, Dataset};
use crate::gpu::{DType, Dispatch, GpuContext, GpuError, Tensor};
use crate::ops::augment::{Augment, AugmentTensors};
use crate::shapes::AugmentConfig;

use super::plan::Plan;

/// How the batches of a feed reach the GPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FeedMode {
    /// The whole dataset lives on the GPU; a step writes its sample indices.
    Resident,
    /// Batches gathered from memory on the CPU and uploaded with the step
    /// (a dataset larger than one storage binding, or --stream-data).
    Streamed,
    /// Batches decoded from files by the input pipeline's workers and
    /// uploaded with the step; crops and flips happen there, the GPU only
    /// normalizes.
    Pipelined,
}

/// A dataset on the GPU for the augment kernel.
pub(super) struct Feed {
    pub data: Dataset,
    pub mode: FeedMode,
    images: Tensor,
    labels: Tensor,
    indices: Tensor,
    pub augment: Augment,
    pub dispatch: Dispatch,
    /// What the pipeline decodes (pipelined feeds only).
    spec: Option<PipelineSpec>,
    pipeline: Option<Pipeline>,
}

/// One batch handed to the GPU from the pipeline.
pub(super) struct Delivery {
    /// How long the step waited for its batch.
    pub waited_s: f64,
    pub bad: Vec<BadFile>,
}

/// Where a feed's batches come from and how they are decoded.
pub(super) struct FeedSource {
    pub data: Dataset,
    pub augment: AugmentConfig,
    pub order: BatchOrder,
    /// Training: RandomResizedCrop (+ flip as `augment` says); else the
    /// evaluation transform.
    pub train: bool,
    pub seed: u64,
    pub workers: usize,
    pub force_stream: bool,
}

impl Feed {
    pub fn new(
        ctx: &GpuContext,
        plan: &Plan,
        source: FeedSource,
        label: &str,
    ) -> Result<Self, GpuError> {
        let FeedSource {
            data, mut augment, ..
        } = source;
        let batch = plan.batch;
        let shape = data.shape;
        let limit = ctx.max_binding_bytes();
        let bytes = data.images.len() as u64;
        let mode = if data.is_file_backed() {
            FeedMode::Pipelined
        } else if source.force_stream || bytes > limit || bytes >= u64::from(u32::MAX) {
            FeedMode::Streamed
        } else {
            FeedMode::Resident
        };
        let transform = if source.train {
            Transform::Train {
                seed: source.seed,
                flip: augment.flip,
            }
        } else {
            Transform::Eval { crop: EVAL_CROP }
        };
        let spec = PipelineSpec::new(&data, transform, batch, source.workers, source.order);
        if mode == FeedMode::Pipelined {
            // The pipeline crops and flips; the kernel only normalizes.
            augment = AugmentConfig {
                pad: 0,
                flip: false,
                ..augment
            };
        }
        let dims = |n| [n, shape.channels, shape.height, shape.width];
        let (images, labels, indices) = if mode == FeedMode::Resident {
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
        } else {
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
        };
        let t = AugmentTensors {
            images: &images,
            dataset_labels: &labels,
            indices: &indices,
            output: plan.tensor(plan.input),
            labels: plan.tensor(plan.labels),
        };
        let (augment, dispatch) = Augment::new(ctx, label, shape, augment, &t)?;
        Ok(Feed {
            data,
            mode,
            images,
            labels,
            indices,
            augment,
            dispatch,
            spec,
            pipeline: None,
        })
    }

    /// Points the next submitted batch at `samples` (queue writes, ordered
    /// before the next submit). Resident and streamed feeds only.
    pub fn load(&self, ctx: &GpuContext, samples: &[u32]) {
        if self.mode == FeedMode::Streamed {
            let mut bytes = Vec::with_capacity(self.images.size_bytes() as usize);
            for &s in samples {
                bytes.extend_from_slice(&self.data.image(s as usize));
            }
            bytes.resize(self.images.size_bytes() as usize, 0);
            let labels: Vec<u32> = samples
                .iter()
                .map(|&s| self.data.labels[s as usize])
                .collect();
            upload(ctx, (&self.images, &self.labels), &bytes, &labels);
        } else {
            ctx.queue
                .write_buffer(self.indices.buffer(), 0, bytemuck::cast_slice(samples));
        }
    }

    /// Replaces a resident feed's pictures (as many bytes as it holds): a
    /// predictor's set, refilled per prediction.
    pub fn replace_images(&mut self, ctx: &GpuContext, images: &[u8]) -> Result<(), GpuError> {
        if self.mode != FeedMode::Resident || images.len() != self.data.images.len() {
            return Err(GpuError::shape(
                "eval images",
                format!(
                    "{} bytes for a {:?} feed of {} bytes",
                    images.len(),
                    self.mode,
                    self.data.images.len()
                ),
            ));
        }
        let mut bytes = images.to_vec();
        bytes.resize(bytes.len().next_multiple_of(4), 0);
        ctx.queue.write_buffer(self.images.buffer(), 0, &bytes);
        self.data.images.copy_from_slice(images);
        Ok(())
    }

    /// Uploads batch `k` of the pipeline (started, or restarted, at `k` when
    /// it is elsewhere; `end` is the batch after the last one wanted).
    pub fn load_pipelined(
        &mut self,
        ctx: &GpuContext,
        k: u64,
        end: u64,
    ) -> Result<Delivery, DataError> {
        let spec = self
            .spec
            .as_ref()
            .expect("a pipelined feed has a pipeline spec");
        if self.pipeline.as_ref().is_none_or(|p| p.position() != k) {
            self.pipeline = None; // its threads stop before the new ones start
            self.pipeline = Some(Pipeline::start(spec.clone(), k, end));
        }
        let pipeline = self.pipeline.as_mut().expect("started above");
        let waiting = Instant::now();
        let (images, labels) = (&self.images, &self.labels);
        let mut waited_s = 0.0;
        let bad = pipeline.next_batch(|bytes, batch_labels| {
            waited_s = waiting.elapsed().as_secs_f64();
            upload(ctx, (images, labels), bytes, batch_labels);
        })?;
        Ok(Delivery { waited_s, bad })
    }

    /// Stops the pipeline's workers (after an evaluation; a training
    /// pipeline restarts where the next step needs it).
    pub fn stop_pipeline(&mut self) {
        self.pipeline = None;
    }
}

/// A gathered batch's bytes and labels into the feed's batch tensors.
fn upload(ctx: &GpuContext, (images, labels): (&Tensor, &Tensor), bytes: &[u8], values: &[u32]) {
    ctx.queue.write_buffer(images.buffer(), 0, bytes);
    ctx.queue
        .write_buffer(labels.buffer(), 0, bytemuck::cast_slice(values));
}
