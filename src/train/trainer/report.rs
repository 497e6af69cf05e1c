//! The trainer's reports: per-step metrics, per-evaluation records (a line of
//! metrics.jsonl), the events `poll` returns, the run's position saved with
//! each checkpoint, and how a metrics snapshot becomes each of them.

use serde::{Deserialize, Serialize};
use web_time::Instant;

use super::Trainer;
use crate::data::pipeline::BadFile;
use crate::ops::loss::METRICS_LEN;
use crate::train::metrics::MetricsSnapshot;

/// Per-step metrics, as the GPU accumulated them.
#[derive(Clone, Debug, PartialEq)]
pub struct StepReport {
    /// Steps done so far, this one included.
    pub step: u64,
    /// Fractional epochs done.
    pub epoch: f64,
    pub batch_loss: f32,
    /// Mean loss and accuracy over the epoch so far.
    pub train_loss: f32,
    pub train_acc: f32,
    /// Over the epoch so far, with more than 10 classes.
    pub train_top5: Option<f32>,
    pub lr: f32,
    /// Mixed precision only: the loss scale after this step and the steps
    /// skipped for an overflow over the epoch so far.
    pub loss_scale: Option<f32>,
    pub skipped_steps: Option<u64>,
    /// Pictures decoded from files only: the share of this epoch's wall time
    /// so far that steps waited for their batch (near 1: input-bound).
    pub data_wait: Option<f32>,
    /// Images per second of the whole job over the latest steps, timed by
    /// their completion on the GPU (`StepClock`); None before one is timed.
    pub images_per_sec: Option<f64>,
}

/// One line of metrics.jsonl: an evaluation after an epoch (or at the last step).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EpochReport {
    pub epoch: f64,
    pub step: u64,
    pub train_loss: f32,
    pub train_acc: f32,
    /// Top-5 accuracies, recorded with more than 10 classes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub train_top5: Option<f32>,
    pub test_loss: f32,
    pub test_acc: f32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test_top5: Option<f32>,
    pub lr: f32,
    pub images_per_sec: f64,
    pub elapsed_s: f64,
    /// Mixed precision only: the loss scale at the epoch's last step and the
    /// steps of the epoch skipped because a gradient overflowed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loss_scale: Option<f32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skipped_steps: Option<u64>,
    /// Pictures decoded from files only: seconds the epoch's steps waited
    /// for their batches, that as a share of the epoch's wall time, and the
    /// unreadable files skipped so far (training and evaluation sets).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_wait_s: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_wait_share: Option<f32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skipped_files: Option<u64>,
}

#[derive(Clone, Debug, PartialEq)]
pub enum TrainEvent {
    Step(StepReport),
    Epoch(EpochReport),
    /// The training loss at this step (or, with `evaluation`, the evaluation
    /// loss after it) was NaN or infinite; training stopped submitting.
    Diverged {
        step: u64,
        loss: f32,
        evaluation: bool,
    },
    /// The predicted class of the first `predicted.len()` evaluation images,
    /// after the evaluation at `step` (only with `capture_predictions`).
    Predictions {
        step: u64,
        predicted: Vec<u32>,
    },
    /// A picture could not be read or decoded; another took its place (each
    /// file is reported once).
    SkippedFile(BadFile),
}

/// Where the run stands; saved with each checkpoint.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Progress {
    pub epoch: usize,
    pub step_in_epoch: usize,
    pub global_step: u64,
    /// The train metrics accumulator (partial-epoch sums; checkpoints from
    /// before top-5 was counted hold four values, from before loss scaling five).
    #[serde(deserialize_with = "metrics_from_disk")]
    pub train_metrics: [f32; METRICS_LEN],
    /// BN `num_batches_tracked` before this run's first step (from --init).
    pub batches_tracked_base: u64,
}

fn metrics_from_disk<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<[f32; METRICS_LEN], D::Error> {
    let v: Vec<f32> = Deserialize::deserialize(d)?;
    if !(4..=METRICS_LEN).contains(&v.len()) {
        return Err(serde::de::Error::custom(format!(
            "train_metrics: expected 4 to {METRICS_LEN} values, got {}",
            v.len()
        )));
    }
    let mut out = [0.0; METRICS_LEN];
    out[..v.len()].copy_from_slice(&v);
    Ok(out)
}

/// What the trainer needs to turn a metrics snapshot into a report.
#[derive(Clone, Copy, Debug)]
pub(super) struct ReportTag {
    /// Steps done when the snapshot was taken.
    pub(super) step: u64,
    pub(super) steps_per_epoch: usize,
    pub(super) lr: f32,
    /// Seconds this epoch's steps waited for data, and the epoch's wall
    /// time, when the step was submitted.
    pub(super) data_wait_s: f64,
    pub(super) epoch_elapsed_s: f64,
}

#[derive(Clone, Copy, Debug)]
pub(super) enum Tag {
    Step(ReportTag),
    Eval(ReportTag),
}

impl Trainer {
    pub(super) fn step_event(
        &mut self,
        t: ReportTag,
        snap: MetricsSnapshot,
        events: &mut Vec<TrainEvent>,
    ) {
        self.reported_step = t.step;
        if !snap.batch_loss.is_finite() {
            if !self.diverged {
                events.push(TrainEvent::Diverged {
                    step: t.step,
                    loss: snap.batch_loss,
                    evaluation: false,
                });
            }
            self.diverged = true;
            return;
        }
        let report = StepReport {
            step: t.step,
            epoch: t.step as f64 / t.steps_per_epoch as f64,
            batch_loss: snap.batch_loss,
            train_loss: snap.mean_loss(),
            train_acc: snap.accuracy(),
            train_top5: self.top5(snap),
            lr: t.lr,
            loss_scale: self.mixed().then_some(snap.loss_scale),
            skipped_steps: self.mixed().then_some(snap.skipped as u64),
            data_wait: self
                .pipelined()
                .then(|| (t.data_wait_s / t.epoch_elapsed_s.max(1e-9)) as f32),
            images_per_sec: self
                .clock
                .images_per_sec(self.config.batch_size * self.share.ranks),
        };
        self.last_step = Some(report.clone());
        events.push(TrainEvent::Step(report));
    }

    /// Top-5 accuracy, reported where it says more than top-1: over 10 classes.
    fn top5(&self, snap: MetricsSnapshot) -> Option<f32> {
        (self.plan.network.num_classes > 10).then(|| snap.top5_accuracy())
    }

    pub(super) fn epoch_event(&mut self, t: ReportTag, snap: MetricsSnapshot) -> TrainEvent {
        let now = Instant::now();
        let (since, from_step) = self.last_epoch_report;
        let global_batch = self.config.batch_size * self.config.world_size;
        let images = (t.step - from_step) as f64 * global_batch as f64;
        self.last_epoch_report = (now, t.step);
        let (train_loss, train_acc, train_top5) = self
            .last_step
            .as_ref()
            .map_or((f32::NAN, f32::NAN, None), |s| {
                (s.train_loss, s.train_acc, s.train_top5)
            });
        let (loss_scale, skipped_steps) = self
            .last_step
            .as_ref()
            .map_or((None, None), |s| (s.loss_scale, s.skipped_steps));
        TrainEvent::Epoch(EpochReport {
            epoch: t.step as f64 / t.steps_per_epoch as f64,
            step: t.step,
            train_loss,
            train_acc,
            train_top5,
            test_loss: snap.mean_loss(),
            test_acc: snap.accuracy(),
            test_top5: self.top5(snap),
            lr: t.lr,
            images_per_sec: images / (now - since).as_secs_f64().max(1e-9),
            elapsed_s: (now - self.started).as_secs_f64(),
            loss_scale,
            skipped_steps,
            data_wait_s: self.pipelined().then_some(t.data_wait_s),
            data_wait_share: self
                .pipelined()
                .then(|| (t.data_wait_s / t.epoch_elapsed_s.max(1e-9)) as f32),
            skipped_files: self.pipelined().then(|| self.skipped_files()),
        })
    }
}
