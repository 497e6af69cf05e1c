//! Asynchronous metric readback. Each step's command buffer copies the GPU
//! metric accumulator (METRICS_LEN floats) into a slot of a mappable staging buffer; every
//! K steps (and after each evaluation) that buffer is mapped with `map_async`
//! and read once the GPU has got there. Staging buffers are recycled; when all
//! are in flight a new one is made, so the CPU never waits for a value.

use std::collections::VecDeque;

use crate::gpu::{GpuContext, GpuError, MapState, Mapping, Tensor};
use crate::ops::loss::{
    METRIC_BATCH_LOSS, METRIC_CORRECT, METRIC_LOSS_SCALE, METRIC_LOSS_SUM, METRIC_SAMPLES,
    METRIC_SKIPPED, METRIC_TOP5, METRICS_LEN,
};

const SLOT_BYTES: u64 = (METRICS_LEN * 4) as u64;

/// The accumulator after one step: sums since the epoch began, and the step's own loss.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MetricsSnapshot {
    pub loss_sum: f32,
    pub correct: f32,
    pub samples: f32,
    pub batch_loss: f32,
    pub top5: f32,
    /// Mixed precision: the loss scale after the step (0 at f32, which does
    /// not scale), and steps skipped for an overflow since the epoch began.
    pub loss_scale: f32,
    pub skipped: f32,
}

impl MetricsSnapshot {
    pub fn from_slice(v: &[f32]) -> Self {
        MetricsSnapshot {
            loss_sum: v[METRIC_LOSS_SUM],
            correct: v[METRIC_CORRECT],
            samples: v[METRIC_SAMPLES],
            batch_loss: v[METRIC_BATCH_LOSS],
            top5: v[METRIC_TOP5],
            loss_scale: v[METRIC_LOSS_SCALE],
            skipped: v[METRIC_SKIPPED],
        }
    }

    pub fn to_array(self) -> [f32; METRICS_LEN] {
        let mut v = [0.0; METRICS_LEN];
        v[METRIC_LOSS_SUM] = self.loss_sum;
        v[METRIC_CORRECT] = self.correct;
        v[METRIC_SAMPLES] = self.samples;
        v[METRIC_BATCH_LOSS] = self.batch_loss;
        v[METRIC_TOP5] = self.top5;
        v[METRIC_LOSS_SCALE] = self.loss_scale;
        v[METRIC_SKIPPED] = self.skipped;
        v
    }

    pub fn mean_loss(&self) -> f32 {
        self.loss_sum / self.samples.max(1.0)
    }

    pub fn accuracy(&self) -> f32 {
        self.correct / self.samples.max(1.0)
    }

    pub fn top5_accuracy(&self) -> f32 {
        self.top5 / self.samples.max(1.0)
    }
}

/// What a mapped buffer holds, so the reader knows what it read.
#[derive(Clone, Debug, PartialEq)]
pub enum ReportKind<T> {
    /// One snapshot per step, with the caller's tag for each.
    Steps(Vec<T>),
    /// One snapshot of the evaluation accumulator.
    Eval(T),
}

struct InFlight<T> {
    mapping: Mapping,
    submission: wgpu::SubmissionIndex,
    kind: ReportKind<T>,
}

/// Reports of type `T` in submission order.
pub struct MetricsRing<T> {
    slots_per_buffer: usize,
    free: Vec<wgpu::Buffer>,
    /// The buffer steps are copying into now, and the tags of its filled slots.
    open: Option<(wgpu::Buffer, Vec<T>)>,
    in_flight: VecDeque<InFlight<T>>,
    buffers_made: usize,
}

impl<T: Clone> MetricsRing<T> {
    pub fn new(slots_per_buffer: usize) -> Self {
        MetricsRing {
            slots_per_buffer: slots_per_buffer.max(1),
            free: vec![],
            open: None,
            in_flight: VecDeque::new(),
            buffers_made: 0,
        }
    }

    fn take_buffer(&mut self, ctx: &GpuContext) -> wgpu::Buffer {
        self.free.pop().unwrap_or_else(|| {
            self.buffers_made += 1;
            ctx.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("metrics staging"),
                size: SLOT_BYTES * self.slots_per_buffer as u64,
                usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            })
        })
    }

    /// Copies `metrics` into the next slot (record this in the step's encoder).
    /// Returns true when the buffer is full and `close` must follow the submit.
    pub fn record_step(
        &mut self,
        ctx: &GpuContext,
        encoder: &mut wgpu::CommandEncoder,
        metrics: &Tensor,
        tag: T,
    ) -> bool {
        if self.open.is_none() {
            self.open = Some((self.take_buffer(ctx), vec![]));
        }
        let (buffer, tags) = self.open.as_mut().expect("opened above");
        encoder.copy_buffer_to_buffer(
            metrics.buffer(),
            0,
            buffer,
            SLOT_BYTES * tags.len() as u64,
            SLOT_BYTES,
        );
        tags.push(tag);
        tags.len() == self.slots_per_buffer
    }

    /// Maps the open buffer (call after `submission`, the last submit that fills it).
    pub fn close(&mut self, submission: wgpu::SubmissionIndex) {
        if let Some((buffer, tags)) = self.open.take() {
            if tags.is_empty() {
                self.free.push(buffer);
            } else {
                self.map(buffer, ReportKind::Steps(tags), submission);
            }
        }
    }

    /// Copies the evaluation accumulator into its own buffer; `close_eval` maps
    /// it after the submit.
    pub fn record_eval(
        &mut self,
        ctx: &GpuContext,
        encoder: &mut wgpu::CommandEncoder,
        metrics: &Tensor,
    ) -> wgpu::Buffer {
        let buffer = self.take_buffer(ctx);
        encoder.copy_buffer_to_buffer(metrics.buffer(), 0, &buffer, 0, SLOT_BYTES);
        buffer
    }

    pub fn close_eval(&mut self, buffer: wgpu::Buffer, tag: T, submission: wgpu::SubmissionIndex) {
        self.map(buffer, ReportKind::Eval(tag), submission);
    }

    fn map(
        &mut self,
        buffer: wgpu::Buffer,
        kind: ReportKind<T>,
        submission: wgpu::SubmissionIndex,
    ) {
        self.in_flight.push_back(InFlight {
            mapping: Mapping::request(buffer, "training metrics"),
            submission,
            kind,
        });
    }

    /// Reports whose buffers are mapped, oldest first; never blocks. (On native,
    /// call `device.poll(Poll)` first so callbacks run.)
    pub fn take_ready(&mut self) -> Result<Vec<ReportKind<(T, MetricsSnapshot)>>, GpuError> {
        let mut out = vec![];
        while let Some(front) = self.in_flight.front() {
            if front.mapping.state() == MapState::Pending {
                break;
            }
            let done = self.in_flight.pop_front().expect("front exists");
            let (values, buffer) = done
                .mapping
                .read(|b| bytemuck::cast_slice::<u8, f32>(b).to_vec())?;
            let snap = |i: usize| MetricsSnapshot::from_slice(&values[i * METRICS_LEN..]);
            out.push(match done.kind {
                ReportKind::Steps(tags) => ReportKind::Steps(
                    tags.into_iter()
                        .enumerate()
                        .map(|(i, t)| (t, snap(i)))
                        .collect(),
                ),
                ReportKind::Eval(tag) => ReportKind::Eval((tag, snap(0))),
            });
            self.free.push(buffer);
        }
        Ok(out)
    }

    /// The submission the oldest unread report waits on.
    pub fn oldest_submission(&self) -> Option<wgpu::SubmissionIndex> {
        self.in_flight.front().map(|f| f.submission.clone())
    }

    pub fn pending(&self) -> usize {
        self.in_flight.len() + usize::from(self.open.as_ref().is_some_and(|(_, t)| !t.is_empty()))
    }

    /// Staging buffers made so far (the ring grows only while reports lag).
    pub fn buffers_made(&self) -> usize {
        self.buffers_made
    }
}
