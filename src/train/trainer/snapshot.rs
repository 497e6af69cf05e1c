//! The model read back without blocking (the browser's "Save model" and the
//! copy it keeps): every state tensor copied into one mappable buffer after
//! the steps submitted so far, and, once the map completes, the tensors and
//! metadata of a `model.safetensors`.

use std::collections::HashMap;

use super::Trainer;
use crate::gpu::{self, DType, GpuError, MapState, Mapping};
use crate::model::TensorRole;
use crate::train::checkpoint::{self, CheckpointError, Values};

/// A model snapshot on its way back from the GPU.
pub struct ModelSnapshot {
    mapping: Mapping,
    entries: Vec<Entry>,
    metadata: HashMap<String, String>,
    /// The steps the snapshot's weights have taken.
    pub step: u64,
}

struct Entry {
    name: String,
    shape: Vec<usize>,
    source: Source,
}

enum Source {
    /// At this byte offset of the mapped buffer.
    Gpu { offset: usize, dtype: DType },
    /// `num_batches_tracked`, which the trainer counts on the CPU.
    Tracked(i64),
}

impl Trainer {
    /// Copies the model as it will be after the steps submitted so far (the
    /// queue runs the copies after them) and requests the copy's map. Steps
    /// submitted later do not change it; poll with `ModelSnapshot::is_ready`.
    pub fn request_model_snapshot(&self) -> Result<ModelSnapshot, CheckpointError> {
        let plan = self.plan();
        let mut entries = vec![];
        let mut copies = vec![];
        let mut size = 0u64;
        for e in plan.state_entries() {
            let source = match e.role {
                TensorRole::BatchesTracked => Source::Tracked(self.batches_tracked() as i64),
                _ => {
                    let tensor = checkpoint::gpu_tensor(plan, &e.name)?;
                    copies.push((tensor, size));
                    let at = size;
                    size += tensor
                        .size_bytes()
                        .next_multiple_of(wgpu::COPY_BUFFER_ALIGNMENT);
                    Source::Gpu {
                        offset: at as usize,
                        dtype: tensor.dtype(),
                    }
                }
            };
            entries.push(Entry {
                name: e.name,
                shape: e.shape,
                source,
            });
        }
        let staging = self.ctx().device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("model snapshot"),
            size: size.max(4),
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let mut encoder = gpu::encoder(self.ctx(), "model snapshot");
        for (tensor, at) in copies {
            encoder.copy_buffer_to_buffer(
                tensor.buffer(),
                tensor.offset(),
                &staging,
                at,
                tensor.size_bytes(),
            );
        }
        self.ctx().queue.submit([encoder.finish()]);
        Ok(ModelSnapshot {
            mapping: Mapping::request(staging, "model snapshot"),
            entries,
            metadata: checkpoint::model_metadata(self),
            step: self.progress().global_step,
        })
    }
}

impl ModelSnapshot {
    /// Whether the copy has come back (never blocks; the device must be
    /// polled, as the browser does between frames).
    pub fn is_ready(&self) -> Result<bool, GpuError> {
        match self.mapping.state() {
            MapState::Pending => Ok(false),
            MapState::Mapped => Ok(true),
            MapState::Failed => Err(GpuError::Readback {
                what: "model snapshot".into(),
                message: "map_async failed (device lost?)".into(),
            }),
        }
    }

    /// The state dict in torchvision order and the model file's metadata;
    /// refuses a model with NaN or infinite values, as a checkpoint does.
    #[allow(clippy::type_complexity)]
    pub fn take(
        self,
    ) -> Result<(Vec<(String, Vec<usize>, Values)>, HashMap<String, String>), CheckpointError> {
        let entries = self.entries;
        let (tensors, _) = self.mapping.read(|bytes| {
            entries
                .into_iter()
                .map(|e| {
                    let numel = e.shape.iter().product::<usize>();
                    let values = match e.source {
                        Source::Tracked(count) => Values::I64(vec![count]),
                        Source::Gpu { offset, dtype } => {
                            Values::F32(gpu::f32_values(&bytes[offset..], dtype, numel))
                        }
                    };
                    (e.name, e.shape, values)
                })
                .collect::<Vec<_>>()
        })?;
        checkpoint::check_finite(tensors.iter(), self.step)?;
        Ok((tensors, self.metadata))
    }
}
