//! What defines a run (`TrainConfig`, written to config.json), and the checks
//! every value goes through whether a front end set it or a file held it.

use serde::{Deserialize, Serialize};

use super::schedule::Schedule;
use crate::data::{DataIdentity, DataSource};
use crate::gpu::Precision;
use crate::model::ModelSpec;
use crate::setting::Setting;
use crate::shapes::{AugmentConfig, ImageShape, SgdConfig};

/// Everything that defines a run; written to config.json.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    pub model: ModelSpec,
    pub dataset: String,
    pub epochs: usize,
    /// Images per step in each process; a step of the run trains on
    /// `batch_size * world_size` images.
    pub batch_size: usize,
    /// Processes training the run together (data parallelism over MPI; 1
    /// for a process alone and in runs made before it was recorded).
    #[serde(default = "one_process")]
    pub world_size: usize,
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

fn one_process() -> usize {
    1
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
/// Processes of one run (an MPI job's ranks).
pub const MAX_WORLD: usize = 4096;
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
        let checks: [(bool, String); 16] = [
            (
                (1..=MAX_BATCH).contains(&self.batch_size),
                format!(
                    "{BatchSize} must be 1 to {MAX_BATCH}, got {}",
                    self.batch_size
                ),
            ),
            (
                (1..=MAX_WORLD).contains(&self.world_size),
                format!(
                    "the run's process count must be 1 to {MAX_WORLD}, got {}",
                    self.world_size
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
        // The batch a step learns from: every process's together.
        let (batch, lr) = (self.batch_size * self.world_size, self.schedule.base_lr);
        let scaled = 0.1 * batch as f32 / 128.0;
        if batch < 32 && lr > 4.0 * scaled {
            let processes = match self.world_size {
                1 => String::new(),
                n => format!(" x {n} processes"),
            };
            vec![format!(
                "{} {lr} at {} {}{processes} is likely too high to learn: the paper's 0.1 is \
                 for batch 128, and the linear scaling rule gives {scaled:.4} at batch {batch}",
                Setting::Lr,
                Setting::BatchSize,
                self.batch_size
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
            world_size: 1,
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
