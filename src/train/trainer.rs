//! The trainer core. It never blocks: `submit_steps` records and submits up to
//! N training steps (one command buffer each: augment -> forward -> loss ->
//! backward -> SGD) and `poll` returns the metrics that have come back. The
//! headless loop, the desktop window and the browser all drive it this way.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use web_time::Instant;

use super::feed::{Delivery, Feed, FeedMode, FeedSource};
use super::metrics::{MetricsRing, MetricsSnapshot, ReportKind};
use super::plan::{Plan, PlanRequest};
use super::schedule::Schedule;
use crate::data::pipeline::{BadFile, BatchOrder};
use crate::data::{DataIdentity, DataSource, DataSplit, Dataset, epoch_order, step_seed};
use crate::gpu::{self, Dispatch, GpuContext, GpuError, MapState, Mapping, Precision};
use crate::model::{ModelSpec, initial_parameters};
use crate::ops::conv::ConvTuning;
use crate::ops::loss::METRICS_LEN;
use crate::setting::Setting;
use crate::shapes::{AugmentConfig, ImageShape, SgdConfig};

/// Everything that defines a run; written to config.json.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    pub model: ModelSpec,
    pub dataset: String,
    pub epochs: usize,
    pub batch_size: usize,
    pub schedule: Schedule,
    pub sgd: SgdConfig,
    pub seed: u64,
    /// Crop padding and flip for training, and the normalization (--normalize).
    pub augment: AugmentConfig,
    /// Steps per metrics readback.
    pub report_every: usize,
    /// Stop after this many steps in all (for smoke tests and benchmarks).
    pub max_steps: Option<u64>,
    /// Upload each batch with its step instead of keeping the dataset on the
    /// GPU (automatic when it does not fit one storage binding).
    #[serde(default)]
    pub stream_data: bool,
    /// Decode threads of an image folder's input pipeline (0: one per core).
    #[serde(default)]
    pub workers: usize,
    /// Checkpoints between epoch ends too (`--checkpoint-every`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint_every: Option<CheckpointEvery>,
    /// The data trained on, by content (absent in runs made before it was
    /// recorded, and in evaluation configs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<DataIdentity>,
    /// Where the data is read from, so `eval` and `--resume` need no data
    /// flags (absent in runs made before it was recorded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<DataSource>,
    /// The `--init` weights the run started from (a resume before the first
    /// checkpoint loads them again).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub init: Option<String>,
    /// What activations are stored as (`--precision`; runs from before it
    /// was recorded trained in f32).
    #[serde(default)]
    pub precision: Precision,
}

/// `--checkpoint-every`: a step count or minutes (a run option, saved
/// with the run so that a resume keeps it).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CheckpointEvery {
    Steps(u64),
    Minutes(f64),
}

impl CheckpointEvery {
    pub fn parse(text: &str) -> Result<Self, String> {
        let bad = || format!("'{text}': expected a step count (500) or minutes (10m)");
        let every = match text.strip_suffix('m') {
            Some(minutes) => CheckpointEvery::Minutes(minutes.trim().parse().map_err(|_| bad())?),
            None => CheckpointEvery::Steps(text.trim().parse().map_err(|_| bad())?),
        };
        if every.is_valid() {
            Ok(every)
        } else {
            Err(bad())
        }
    }

    /// At least one step, or a finite positive number of minutes.
    pub fn is_valid(&self) -> bool {
        match *self {
            CheckpointEvery::Steps(n) => n > 0,
            CheckpointEvery::Minutes(m) => m.is_finite() && m > 0.0,
        }
    }
}

/// The smallest batch of an evaluation-only trainer (`eval`, `predict`): its
/// plan also holds the training batch norm, which needs 2 values per channel,
/// and ImageNet models end in 1x1 maps at 32x32. Evaluation's results do not
/// depend on the batch.
pub const MIN_EVAL_BATCH: usize = 2;

/// Upper bounds that keep a typo from allocating the machine away.
pub const MAX_BATCH: usize = 1 << 16;
pub const MAX_REPORT_EVERY: usize = 10_000;
pub const MAX_WORKERS: usize = 1024;
/// Epochs times steps per epoch must count in a u64 with room to spare.
pub const MAX_EPOCHS: usize = 1_000_000;

impl TrainConfig {
    /// Checks every value, whether a front end set it or a file held it:
    /// the message names the setting.
    pub fn validate(&self, image: ImageShape) -> Result<(), String> {
        use Setting::*;
        let positive = |v: f32| v.is_finite() && v > 0.0;
        let non_negative = |v: f32| v.is_finite() && v >= 0.0;
        let s = &self.schedule;
        let side = image.height.min(image.width);
        let checks: [(bool, String); 15] = [
            (
                (1..=MAX_BATCH).contains(&self.batch_size),
                format!(
                    "{BatchSize} must be 1 to {MAX_BATCH}, got {}",
                    self.batch_size
                ),
            ),
            (
                (1..=MAX_EPOCHS).contains(&self.epochs),
                format!("{Epochs} must be 1 to {MAX_EPOCHS}, got {}", self.epochs),
            ),
            (
                s.epochs == self.epochs,
                format!(
                    "the learning-rate schedule spans {} epochs, the run {} (an edited \
                     config?); they must agree",
                    s.epochs, self.epochs
                ),
            ),
            (
                positive(s.base_lr),
                format!("{Lr} must be a positive number, got {}", s.base_lr),
            ),
            (
                positive(s.gamma),
                format!("{Gamma} must be a positive number, got {}", s.gamma),
            ),
            (
                non_negative(s.warmup_epochs) && non_negative(s.warmup_lr),
                format!(
                    "{WarmupEpochs} and {WarmupLr} must be 0 or more, got {} and {}",
                    s.warmup_epochs, s.warmup_lr
                ),
            ),
            (
                non_negative(self.sgd.momentum) && self.sgd.momentum < 1.0,
                format!("{Momentum} must be in [0, 1), got {}", self.sgd.momentum),
            ),
            (
                non_negative(self.sgd.weight_decay),
                format!(
                    "{WeightDecay} must be 0 or more, got {}",
                    self.sgd.weight_decay
                ),
            ),
            (
                (1..=MAX_REPORT_EVERY).contains(&self.report_every),
                format!(
                    "{ReportEvery} must be 1 to {MAX_REPORT_EVERY}, got {}",
                    self.report_every
                ),
            ),
            (
                self.workers <= MAX_WORKERS,
                format!(
                    "{Workers} must be 0 (one per core) to {MAX_WORKERS}, got {}",
                    self.workers
                ),
            ),
            (
                self.checkpoint_every.is_none_or(|c| c.is_valid()),
                format!(
                    "{CheckpointEvery} must be a positive step count or minutes, got {:?}",
                    self.checkpoint_every
                ),
            ),
            (
                self.max_steps != Some(0),
                format!("{MaxSteps} must be at least 1"),
            ),
            (
                (self.augment.pad as usize) < side,
                format!(
                    "{CropPad} must be smaller than the image side ({side}), got {}",
                    self.augment.pad
                ),
            ),
            (
                self.augment.mean.iter().all(|m| m.is_finite())
                    && self.augment.std.iter().all(|&v| positive(v)),
                format!(
                    "the normalization mean/std must be finite with std > 0, got {:?} / {:?}",
                    self.augment.mean, self.augment.std
                ),
            ),
            (
                self.model.in_channels == image.channels,
                format!(
                    "the model takes {} channels, the images have {}",
                    self.model.in_channels, image.channels
                ),
            ),
        ];
        match checks.into_iter().find(|(ok, _)| !ok) {
            Some((_, message)) => Err(message),
            None => Ok(()),
        }
    }

    /// Settings that run but are unlikely to learn, in words: the paper's rate
    /// of 0.1 is for batch 128, and far smaller batches need a rate scaled
    /// down with the batch. Measured (lavapipe, 1000 steps of ResNet-8 at
    /// batch 8 on 800 built-in images, 10-epoch multi-step recipe): lr 0.1
    /// ended at chance (train 12%, test 6.5%), lr 0.0125 at train 50%, test
    /// 51.5%, so the stall is the recipe, not a defect.
    pub fn warnings(&self) -> Vec<String> {
        let (batch, lr) = (self.batch_size, self.schedule.base_lr);
        let scaled = 0.1 * batch as f32 / 128.0;
        if batch < 32 && lr > 4.0 * scaled {
            vec![format!(
                "{} {lr} at {} {batch} is likely too high to learn: the paper's 0.1 is for \
                 batch 128, and the linear scaling rule gives {scaled:.4} at batch {batch}",
                Setting::Lr,
                Setting::BatchSize
            )]
        } else {
            vec![]
        }
    }
}

impl TrainConfig {
    /// One epoch at a constant rate with the paper's SGD settings and no step
    /// limit: the starting point of benchmarks, evaluation and fixtures, which
    /// then override what they need.
    pub fn one_epoch(
        model: ModelSpec,
        dataset: &str,
        batch_size: usize,
        lr: f32,
        augment: AugmentConfig,
    ) -> Self {
        TrainConfig {
            model,
            dataset: dataset.to_string(),
            epochs: 1,
            batch_size,
            schedule: Schedule {
                base_lr: lr,
                decay: super::DecayKind::Constant,
                milestones: vec![],
                gamma: 1.0,
                warmup_epochs: 0.0,
                warmup_lr: 0.0,
                epochs: 1,
            },
            sgd: SgdConfig {
                momentum: 0.9,
                weight_decay: 1e-4,
                nesterov: false,
            },
            seed: 0,
            augment,
            report_every: 1,
            max_steps: None,
            stream_data: false,
            workers: 0,
            checkpoint_every: None,
            precision: Precision::F32,
            data: None,
            source: None,
            init: None,
        }
    }
}

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

/// The evaluation logits copied into one mappable buffer, batch by batch.
struct PredictionCapture {
    samples: usize,
    classes: usize,
    /// The buffer of the evaluation now being recorded.
    open: Option<wgpu::Buffer>,
    /// Buffers whose map was requested, with the step they were taken at.
    in_flight: Vec<(Mapping, u64)>,
}

impl PredictionCapture {
    /// Copies this batch's logits (those of captured samples) into the open buffer.
    fn copy_batch(
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
    fn close(&mut self, step: u64) {
        if let Some(buffer) = self.open.take() {
            self.in_flight
                .push((Mapping::request(buffer, "evaluation logits"), step));
        }
    }
}

/// The most logits one evaluation copies back (a confusion matrix needs no more).
const MAX_CAPTURE_BYTES: u64 = 64 << 20;

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
struct ReportTag {
    /// Steps done when the snapshot was taken.
    step: u64,
    steps_per_epoch: usize,
    lr: f32,
    /// Seconds this epoch's steps waited for data, and the epoch's wall
    /// time, when the step was submitted.
    data_wait_s: f64,
    epoch_elapsed_s: f64,
}

pub struct Trainer {
    ctx: Arc<GpuContext>,
    pub config: TrainConfig,
    plan: Plan,
    train: Feed,
    test: Feed,
    eval_loss_full: Vec<Dispatch>,
    eval_loss_last: Vec<Dispatch>,
    pub steps_per_epoch: usize,
    progress: Progress,
    order: Vec<u32>,
    metrics: MetricsRing<Tag>,
    last_step: Option<StepReport>,
    diverged: bool,
    started: Instant,
    last_epoch_report: (Instant, u64),
    reported_step: u64,
    eval_set: crate::data::EvalSet,
    last_submission: Option<wgpu::SubmissionIndex>,
    predictions: Option<PredictionCapture>,
    /// CPU time the last step took to record (batch upload, uniforms, encoder).
    pub last_record_seconds: f64,
    /// This epoch: when its first step was submitted and how long its steps
    /// waited for data.
    epoch_started: Instant,
    epoch_wait_s: f64,
    /// Events found while submitting (unreadable files), for the next poll.
    pending: Vec<TrainEvent>,
    /// The input pipeline failed (a damaged dataset): no more steps.
    data_failure: Option<String>,
}

#[derive(Clone, Copy, Debug)]
enum Tag {
    Step(ReportTag),
    Eval(ReportTag),
}

impl Trainer {
    /// Builds the memory plan, uploads the data and He-initializes the model.
    pub fn new(
        ctx: Arc<GpuContext>,
        config: TrainConfig,
        data: DataSplit,
    ) -> Result<Self, GpuError> {
        let network = config.model.network();
        let batch = config.batch_size;
        if data.train.classes() != network.num_classes {
            return Err(GpuError::Setup(format!(
                "the dataset has {} classes but the model was built for {}",
                data.train.classes(),
                network.num_classes
            )));
        }
        if config.precision == Precision::F16 && !ctx.supports_f16() {
            return Err(GpuError::Setup(format!(
                "{} f16 needs the adapter's shader-f16 feature, which {} does not have \
                 (use {} f32)",
                Setting::Precision,
                ctx.adapter_info.name,
                Setting::Precision
            )));
        }
        let steps_per_epoch = data.train.len() / batch;
        if steps_per_epoch == 0 {
            return Err(GpuError::Setup(format!(
                "the training set has {} images, fewer than one batch of {batch}",
                data.train.len()
            )));
        }
        let plan = Plan::new(
            &ctx,
            PlanRequest {
                network: &network,
                batch,
                image: data.train.shape,
                sgd: &config.sgd,
                tuning: ConvTuning::default(),
                precision: config.precision,
            },
        )?;
        let workers = match config.workers {
            0 => crate::data::default_workers(),
            n => n,
        };
        let source = |data, augment, order, train| FeedSource {
            data,
            augment,
            order,
            train,
            seed: config.seed,
            workers,
            force_stream: config.stream_data,
        };
        let train_order = BatchOrder::Train {
            seed: config.seed,
            steps_per_epoch: steps_per_epoch as u64,
        };
        let train = Feed::new(
            &ctx,
            &plan,
            source(data.train, config.augment, train_order, true),
            "train",
        )?;
        let test = Feed::new(
            &ctx,
            &plan,
            source(
                data.test,
                config.augment.eval(),
                BatchOrder::Sequential,
                false,
            ),
            "eval",
        )?;
        let eval_loss_full = plan.eval_loss(&ctx, batch)?;
        let remainder = test.data.len() % batch;
        let eval_loss_last = if remainder == 0 {
            vec![]
        } else {
            plan.eval_loss(&ctx, remainder)?
        };
        let now = Instant::now();
        let trainer = Trainer {
            metrics: MetricsRing::new(config.report_every),
            ctx,
            plan,
            train,
            test,
            eval_loss_full,
            eval_loss_last,
            steps_per_epoch,
            progress: Progress {
                epoch: 0,
                step_in_epoch: 0,
                global_step: 0,
                train_metrics: [0.0; METRICS_LEN],
                batches_tracked_base: 0,
            },
            order: vec![],
            last_step: None,
            diverged: false,
            started: now,
            last_epoch_report: (now, 0),
            reported_step: 0,
            eval_set: data.eval_set,
            last_submission: None,
            predictions: None,
            last_record_seconds: 0.0,
            epoch_started: now,
            epoch_wait_s: 0.0,
            pending: vec![],
            data_failure: None,
            config,
        };
        let init = initial_parameters(&trainer.plan.network, trainer.config.seed);
        for (entry, values) in trainer.plan.state_entries().iter().zip(&init) {
            if let Some(t) = trainer.plan.state_tensor(&entry.name) {
                t.write_f32(&trainer.ctx, values)?;
            }
        }
        trainer.ctx.check_uncaptured()?;
        Ok(trainer)
    }

    pub fn ctx(&self) -> &Arc<GpuContext> {
        &self.ctx
    }

    pub fn plan(&self) -> &Plan {
        &self.plan
    }

    pub fn progress(&self) -> Progress {
        self.progress
    }

    /// "test" or "validation": what the evaluation set is.
    pub fn eval_name(&self) -> &'static str {
        self.eval_set.name()
    }

    pub fn test_data(&self) -> &Dataset {
        &self.test.data
    }

    /// How the training and evaluation batches reach the GPU.
    pub fn feed_modes(&self) -> (FeedMode, FeedMode) {
        (self.train.mode, self.test.mode)
    }

    /// Unreadable files skipped so far (training and evaluation sets).
    pub fn skipped_files(&self) -> u64 {
        [&self.train.data, &self.test.data]
            .iter()
            .filter_map(|d| d.files.as_ref())
            .map(|f| f.bad_count() as u64)
            .sum()
    }

    /// BN `num_batches_tracked` before this run's first step (from a loaded
    /// state dict).
    pub fn set_batches_tracked_base(&mut self, count: u64) {
        self.progress.batches_tracked_base = count;
    }

    /// Continues from a saved position (the model and momenta are written
    /// separately by the checkpoint loader). A position that does not fit this
    /// run's data (a damaged or hand-edited file) is refused.
    pub fn set_progress(&mut self, progress: Progress) -> Result<(), String> {
        let spe = self.steps_per_epoch;
        if progress.step_in_epoch >= spe
            || progress.global_step
                != (progress.epoch as u64) * spe as u64 + progress.step_in_epoch as u64
        {
            return Err(format!(
                "the saved position (epoch {}, step {} of the epoch, step {} in all) does not fit \
                 {spe} steps per epoch",
                progress.epoch, progress.step_in_epoch, progress.global_step
            ));
        }
        if !progress.train_metrics.iter().all(|v| v.is_finite()) {
            return Err(format!(
                "the saved training metrics are not finite: {:?}",
                progress.train_metrics
            ));
        }
        self.progress = progress;
        self.reported_step = progress.global_step;
        self.last_epoch_report = (Instant::now(), progress.global_step);
        if progress.step_in_epoch > 0 {
            self.order = epoch_order(self.config.seed, progress.epoch, self.train.data.len());
        }
        let metrics = self.plan.tensor(self.plan.train_metrics);
        self.ctx.queue.write_buffer(
            metrics.buffer(),
            0,
            bytemuck::cast_slice(&progress.train_metrics),
        );
        Ok(())
    }

    pub fn total_steps(&self) -> u64 {
        let all = (self.steps_per_epoch as u64).saturating_mul(self.config.epochs as u64);
        self.config.max_steps.map_or(all, |m| m.min(all))
    }

    /// Every step submitted (or the run diverged, or its data failed).
    pub fn is_finished(&self) -> bool {
        self.diverged
            || self.data_failure.is_some()
            || self.progress.global_step >= self.total_steps()
    }

    /// Every submitted step's metrics have come back.
    pub fn is_idle(&self) -> bool {
        self.metrics.pending() == 0
            && self
                .predictions
                .as_ref()
                .is_none_or(|c| c.in_flight.is_empty())
    }

    pub fn has_diverged(&self) -> bool {
        self.diverged
    }

    /// Steps submitted whose metrics have not come back yet.
    pub fn steps_in_flight(&self) -> u64 {
        self.progress.global_step - self.reported_step
    }

    pub fn lr_for_step(&self, step: u64) -> f32 {
        self.config
            .schedule
            .lr_at(step as f64 / self.steps_per_epoch as f64)
    }

    /// Submits up to `max` steps; stops early at the end of an epoch (after
    /// submitting its evaluation) or of the run. Returns the steps submitted.
    pub fn submit_steps(&mut self, max: usize) -> usize {
        let mut done = 0;
        while done < max && !self.is_finished() {
            let epoch_end = self.submit_train_step();
            done += 1;
            if epoch_end || self.is_finished() {
                self.submit_eval();
                break;
            }
        }
        done
    }

    /// Submits one training step and no evaluation (`submit_steps` adds those
    /// at epoch ends). Returns whether the step ended an epoch.
    pub fn submit_train_step(&mut self) -> bool {
        let recording = Instant::now();
        let ctx = self.ctx.clone();
        let p = self.progress;
        let batch = self.config.batch_size;
        if p.step_in_epoch == 0 {
            self.epoch_started = recording;
            self.epoch_wait_s = 0.0;
        }
        if self.train.mode == FeedMode::Pipelined {
            let end = self.total_steps();
            let delivery = self.train.load_pipelined(&ctx, p.global_step, end);
            if !self.delivered(delivery) {
                return false;
            }
        } else {
            if p.step_in_epoch == 0 {
                self.order = epoch_order(self.config.seed, p.epoch, self.train.data.len());
            }
            let samples = &self.order[p.step_in_epoch * batch..(p.step_in_epoch + 1) * batch];
            self.train.load(&ctx, samples);
        }
        self.train
            .augment
            .set_seed(&ctx, step_seed(self.config.seed, p.global_step));
        let lr = self.lr_for_step(p.global_step);
        self.plan.learning_rate.set(&ctx, lr);

        let mut encoder = gpu::encoder(&ctx, "train step");
        let metrics = self.plan.tensor(self.plan.train_metrics);
        if p.step_in_epoch == 0 {
            encoder.clear_buffer(metrics.buffer(), 0, None);
        }
        gpu::record_pass(&mut encoder, "train step", |pass| {
            self.train.dispatch.record(pass);
            self.plan.record_train_step(pass);
        });
        let tag = Tag::Step(ReportTag {
            step: p.global_step + 1,
            steps_per_epoch: self.steps_per_epoch,
            lr,
            data_wait_s: self.epoch_wait_s,
            epoch_elapsed_s: self.epoch_started.elapsed().as_secs_f64(),
        });
        let full = self.metrics.record_step(&ctx, &mut encoder, metrics, tag);
        let commands = encoder.finish();
        self.last_record_seconds = recording.elapsed().as_secs_f64();
        self.last_submission = Some(ctx.queue.submit([commands]));
        if full {
            self.close_step_report();
        }
        self.progress.global_step += 1;
        self.progress.step_in_epoch += 1;
        if self.progress.step_in_epoch == self.steps_per_epoch {
            self.progress.step_in_epoch = 0;
            self.progress.epoch += 1;
        }
        let epoch_end = self.progress.step_in_epoch == 0;
        if epoch_end || self.is_finished() {
            self.close_step_report();
        }
        epoch_end
    }

    /// Takes a pipelined batch's wait and bad files into account; false
    /// (and the run ends) when the pipeline failed.
    fn delivered(&mut self, delivery: Result<Delivery, crate::data::DataError>) -> bool {
        match delivery {
            Ok(d) => {
                self.epoch_wait_s += d.waited_s;
                self.pending
                    .extend(d.bad.into_iter().map(TrainEvent::SkippedFile));
                true
            }
            Err(e) => {
                self.data_failure = Some(e.to_string());
                false
            }
        }
    }

    /// Sends the metrics of the steps submitted so far back now, instead of
    /// when `report_every` steps are together: call when no more steps will
    /// be submitted for a while (stop, pause), so that `is_idle` can come.
    pub fn flush_reports(&mut self) {
        self.close_step_report();
    }

    fn close_step_report(&mut self) {
        if let Some(index) = self.last_submission.clone() {
            self.metrics.close(index);
        }
    }

    /// Evaluates on the test (or validation) set: one submit per batch, the
    /// last batch padded and masked. Its report arrives as an `Epoch` event.
    pub fn submit_eval(&mut self) {
        let ctx = self.ctx.clone();
        let batch = self.config.batch_size;
        let n = self.test.data.len();
        let batches = n.div_ceil(batch);
        for i in 0..batches {
            let start = i * batch;
            let valid = (n - start).min(batch);
            if self.test.mode == FeedMode::Pipelined {
                let delivery = self.test.load_pipelined(&ctx, i as u64, batches as u64);
                if !self.delivered(delivery) {
                    self.test.stop_pipeline();
                    return;
                }
            } else {
                let samples: Vec<u32> = (0..batch)
                    .map(|j| (start + j.min(valid - 1)) as u32)
                    .collect();
                self.test.load(&ctx, &samples);
            }
            let eval_metrics = self.plan.tensor(self.plan.eval_metrics);
            let mut encoder = gpu::encoder(&ctx, "eval batch");
            if i == 0 {
                encoder.clear_buffer(eval_metrics.buffer(), 0, None);
            }
            let loss = if valid == batch {
                &self.eval_loss_full
            } else {
                &self.eval_loss_last
            };
            gpu::record_pass(&mut encoder, "eval batch", |pass| {
                self.test.dispatch.record(pass);
                self.plan.record_eval_batch(pass, loss);
            });
            if let Some(capture) = &mut self.predictions {
                let logits = self.plan.tensor(self.plan.logits).buffer();
                capture.copy_batch(&ctx.device, &mut encoder, logits, i == 0, start, valid);
            }
            if i + 1 == batches {
                let staging = self.metrics.record_eval(&ctx, &mut encoder, eval_metrics);
                let index = ctx.queue.submit([encoder.finish()]);
                let step = self.progress.global_step;
                if let Some(capture) = &mut self.predictions {
                    capture.close(step);
                }
                self.metrics.close_eval(
                    staging,
                    Tag::Eval(ReportTag {
                        step,
                        steps_per_epoch: self.steps_per_epoch,
                        lr: self.lr_for_step(step.saturating_sub(1)),
                        data_wait_s: self.epoch_wait_s,
                        epoch_elapsed_s: self.epoch_started.elapsed().as_secs_f64(),
                    }),
                    index,
                );
            } else {
                ctx.queue.submit([encoder.finish()]);
            }
        }
        self.test.stop_pipeline();
    }

    /// Metrics that have come back since the last call; never blocks.
    pub fn poll(&mut self) -> Result<Vec<TrainEvent>, GpuError> {
        #[cfg(not(target_arch = "wasm32"))]
        let _ = self.ctx.device.poll(wgpu::PollType::Poll);
        self.ctx.check_uncaptured()?;
        if let Some(failure) = &self.data_failure {
            return Err(GpuError::Setup(failure.clone()));
        }
        let mut events = std::mem::take(&mut self.pending);
        for report in self.metrics.take_ready()? {
            match report {
                ReportKind::Steps(steps) => {
                    for (tag, snap) in steps {
                        if let Tag::Step(t) = tag {
                            self.step_event(t, snap, &mut events);
                        }
                    }
                }
                ReportKind::Eval((Tag::Eval(t), snap)) if !snap.mean_loss().is_finite() => {
                    // A model whose evaluation loss is not finite holds
                    // non-finite or exploding state (BN running stats first):
                    // no checkpoint may be written from it.
                    if !self.diverged {
                        events.push(TrainEvent::Diverged {
                            step: t.step,
                            loss: snap.mean_loss(),
                            evaluation: true,
                        });
                    }
                    self.diverged = true;
                }
                ReportKind::Eval((Tag::Eval(t), snap)) => events.push(self.epoch_event(t, snap)),
                ReportKind::Eval(_) => {}
            }
        }
        self.take_predictions(&mut events)?;
        Ok(events)
    }

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
    fn take_predictions(&mut self, events: &mut Vec<TrainEvent>) -> Result<(), GpuError> {
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

    fn step_event(&mut self, t: ReportTag, snap: MetricsSnapshot, events: &mut Vec<TrainEvent>) {
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
        };
        self.last_step = Some(report.clone());
        events.push(TrainEvent::Step(report));
    }

    /// Whether the training batches come from the input pipeline.
    fn pipelined(&self) -> bool {
        self.train.mode == FeedMode::Pipelined
    }

    /// Whether the plan trains in mixed precision (and so scales the loss).
    fn mixed(&self) -> bool {
        self.plan.precision == Precision::F16
    }

    /// Top-5 accuracy, reported where it says more than top-1: over 10 classes.
    fn top5(&self, snap: MetricsSnapshot) -> Option<f32> {
        (self.plan.network.num_classes > 10).then(|| snap.top5_accuracy())
    }

    fn epoch_event(&mut self, t: ReportTag, snap: MetricsSnapshot) -> TrainEvent {
        let now = Instant::now();
        let (since, from_step) = self.last_epoch_report;
        let images = (t.step - from_step) as f64 * self.config.batch_size as f64;
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

    /// Blocks until the oldest pending metrics report is ready (native edges
    /// only: the headless loop when it is far enough ahead of the GPU).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn wait_for_report(&self) -> Result<(), GpuError> {
        if let Some(index) = self.metrics.oldest_submission() {
            self.ctx
                .device
                .poll(wgpu::PollType::Wait {
                    submission_index: Some(index),
                    timeout: None,
                })
                .map_err(|e| GpuError::Poll {
                    what: "the oldest step in flight".into(),
                    message: e.to_string(),
                })?;
        }
        Ok(())
    }

    /// Blocks until every submitted step is done (native edges only: before a
    /// checkpoint, at the end of a run).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn wait_for_gpu(&self) -> Result<(), GpuError> {
        self.ctx.wait_idle()
    }

    /// `num_batches_tracked` of every BN layer after the steps submitted so far.
    pub fn batches_tracked(&self) -> u64 {
        self.progress.batches_tracked_base + self.progress.global_step
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
