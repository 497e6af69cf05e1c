//! Predictions after each evaluation (for a confusion matrix or a picture
//! grid): the evaluation logits copied into one mappable buffer, read back
//! without blocking and turned into each image's predicted class.

use super::Trainer;
use super::report::TrainEvent;
use crate::gpu::{GpuError, MapState, Mapping};

/// The evaluation logits copied into one mappable buffer, batch by batch.
pub(super) struct PredictionCapture {
    samples: usize,
    classes: usize,
    /// The buffer of the evaluation now being recorded.
    open: Option<wgpu::Buffer>,
    /// Buffers whose map was requested, with the step they were taken at.
    pub(super) in_flight: Vec<(Mapping, u64)>,
}

impl PredictionCapture {
    /// Copies this batch's logits (those of captured samples) into the open buffer.
    pub(super) fn copy_batch(
        &mut self,
        device: &wgpu::Device,
        encoder: &mut wgpu::CommandEncoder,
        logits: &wgpu::Buffer,
        first: bool,
        start: usize,
        valid: usize,
    ) {
        let row = 4 * self.classes as u64;
        if first && self.samples > 0 {
            self.open = Some(device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("eval logits staging"),
                size: row * self.samples as u64,
                usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            }));
        }
        let rows = valid.min(self.samples.saturating_sub(start));
        if let (Some(buffer), true) = (&self.open, rows > 0) {
            encoder.copy_buffer_to_buffer(logits, 0, buffer, row * start as u64, row * rows as u64);
        }
    }

    /// Maps the evaluation's buffer (after its last submit).
    pub(super) fn close(&mut self, step: u64) {
        if let Some(buffer) = self.open.take() {
            self.in_flight
                .push((Mapping::request(buffer, "evaluation logits"), step));
        }
    }
}

/// The most logits one evaluation copies back (a confusion matrix needs no more).
const MAX_CAPTURE_BYTES: u64 = 64 << 20;

impl Trainer {
    /// After each evaluation, also report the predicted class of the first
    /// evaluation images (as many as 64 MiB of logits hold): for a confusion
    /// matrix or a picture grid. Costs one buffer copy per evaluation batch.
    pub fn capture_predictions(&mut self) {
        let classes = self.plan.network.num_classes;
        let cap = (MAX_CAPTURE_BYTES.min(self.ctx.limits.max_buffer_size) / (4 * classes as u64))
            as usize;
        self.predictions = Some(PredictionCapture {
            samples: self.test.data.len().min(cap),
            classes,
            open: None,
            in_flight: vec![],
        });
    }

    /// Turns mapped logits buffers into `Predictions` events; never blocks.
    pub(super) fn take_predictions(
        &mut self,
        events: &mut Vec<TrainEvent>,
    ) -> Result<(), GpuError> {
        let Some(capture) = &mut self.predictions else {
            return Ok(());
        };
        while let Some((mapping, _)) = capture.in_flight.first() {
            if mapping.state() == MapState::Pending {
                break;
            }
            let (mapping, step) = capture.in_flight.remove(0);
            let classes = capture.classes;
            let (predicted, _) = mapping.read(|b| {
                bytemuck::cast_slice::<u8, f32>(b)
                    .chunks_exact(classes)
                    .map(argmax)
                    .collect()
            })?;
            events.push(TrainEvent::Predictions { step, predicted });
        }
        Ok(())
    }
}

/// The index of the largest value (the first of equals, as torch.argmax).
fn argmax(row: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &v) in row.iter().enumerate() {
        if v > row[best] {
            best = i;
        }
    }
    best as u32
}
