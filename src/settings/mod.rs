//! What a run is asked to be — model, data, recipe and run options — as every
//! front end sets it: the command line parses its flags into [`RunSettings`],
//! the window's controls and the browser's query edit one. [`RunSettings::config`]
//! is the one function that checks them and turns them into the run's
//! [`TrainConfig`]; a resume compares them with the saved run through
//! [`RunSettings::contradictions`]. Messages name a [`Setting`], which each
//! front end calls by its own name.

use std::collections::BTreeSet;
use std::path::PathBuf;

use anyhow::Result;

use crate::data::{DataSource, DataSplit, DatasetKind};
use crate::gpu::Precision;
use crate::model::{ModelSpec, Norm, ShortcutKind};
pub use crate::setting::Setting;
use crate::shapes::{AugmentConfig, SgdConfig};
use crate::train::{CheckpointEvery, DecayKind, Schedule, TrainConfig};

mod data;

pub use data::{DataSettings, Normalize, load_source};

pub const DEFAULT_EPOCHS: usize = 10;

/// The normalization layer after every conv.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NormChoice {
    /// BatchNorm2d (the paper's).
    Batch,
    /// GroupNorm with `groups` groups (per-sample statistics).
    Group,
}

/// The architecture, before the data says how many classes it ends in.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelSettings {
    /// resnet8/20/32/44/56/110 (any 6n+2), resnet18-cifar, resnet18/34/50/101/152.
    pub name: String,
    pub shortcut: ShortcutKind,
    pub norm: NormChoice,
    /// Groups of group norm (must divide every layer's channels).
    pub groups: usize,
    pub conv_bias: bool,
}

impl Default for ModelSettings {
    fn default() -> Self {
        ModelSettings {
            name: "resnet20".into(),
            shortcut: ShortcutKind::A,
            norm: NormChoice::Batch,
            groups: 8,
            conv_bias: false,
        }
    }
}

impl ModelSettings {
    /// The settings that pick the architecture.
    pub const SETTINGS: [Setting; 5] = [
        Setting::Model,
        Setting::Shortcut,
        Setting::Norm,
        Setting::Groups,
        Setting::ConvBias,
    ];

    pub fn norm(&self) -> Norm {
        match self.norm {
            NormChoice::Batch => Norm::Batch,
            NormChoice::Group => Norm::Group {
                groups: self.groups,
            },
        }
    }

    pub fn spec(&self, num_classes: usize) -> Result<ModelSpec> {
        ModelSpec::new(&self.name, self.shortcut, num_classes)
            .map_err(|e| anyhow::anyhow!("{}: {e}", Setting::Model))?
            .with_layers(self.norm(), self.conv_bias)
            .map_err(|e| anyhow::anyhow!("{}: {e}", Setting::Norm))
    }
}

/// The training recipe: what a resumed run keeps.
#[derive(Clone, Debug, PartialEq)]
pub struct Recipe {
    /// [default: `DEFAULT_EPOCHS`]; on resume a larger value extends the run.
    pub epochs: Option<usize>,
    pub batch_size: usize,
    pub lr: f32,
    pub momentum: f32,
    pub weight_decay: f32,
    pub nesterov: bool,
    pub schedule: DecayKind,
    /// [default: 50% and 75% of the epochs].
    pub milestones: Option<Vec<usize>>,
    pub gamma: f32,
    pub warmup_epochs: f32,
    pub warmup_lr: f32,
    pub crop_pad: u32,
    pub flip: bool,
    /// [default: `Normalize::default_for` the data, or the initial weights' own].
    pub normalize: Option<Normalize>,
    pub seed: u64,
    /// Initial weights (a model.safetensors or a torchvision state dict).
    pub init: Option<PathBuf>,
}

impl Default for Recipe {
    fn default() -> Self {
        Recipe {
            epochs: None,
            batch_size: 128,
            lr: 0.1,
            momentum: 0.9,
            weight_decay: 1e-4,
            nesterov: false,
            schedule: DecayKind::MultiStep,
            milestones: None,
            gamma: 0.1,
            warmup_epochs: 0.0,
            warmup_lr: 0.01,
            crop_pad: 4,
            flip: true,
            normalize: None,
            seed: 0,
            init: None,
        }
    }
}

/// How the run goes, not what it learns: a resume may change most of these.
#[derive(Clone, Debug, PartialEq)]
pub struct RunOptions {
    /// The folder that holds one folder per run.
    pub out: PathBuf,
    /// The run's folder name [default: <model>-<dataset>-<seconds since 1970>].
    pub name: Option<String>,
    /// A run folder (or checkpoint folder) to continue.
    pub resume: Option<PathBuf>,
    pub max_steps: Option<u64>,
    pub checkpoint_every: Option<CheckpointEvery>,
    /// Steps per asynchronous metrics readback.
    pub report_every: usize,
    pub stream_data: bool,
    /// Decode threads for image folders (0: one per core).
    pub workers: usize,
    pub precision: Precision,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            out: "runs".into(),
            name: None,
            resume: None,
            max_steps: None,
            checkpoint_every: None,
            report_every: 4,
            stream_data: false,
            workers: 0,
            precision: Precision::F32,
        }
    }
}

/// Everything a front end sets for a run.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RunSettings {
    pub model: ModelSettings,
    pub data: DataSettings,
    pub recipe: Recipe,
    pub run: RunOptions,
    /// The settings the user gave explicitly (a resume refuses those that
    /// contradict its run even when they equal the default); a setting whose
    /// value differs from its default counts as given too.
    pub given: BTreeSet<Setting>,
}

impl RunSettings {
    fn is_given(&self, setting: Setting, differs_from_default: bool) -> bool {
        self.given.contains(&setting) || differs_from_default
    }

    /// The epochs asked for, or the default.
    pub fn epochs(&self) -> usize {
        self.recipe.epochs.unwrap_or(DEFAULT_EPOCHS)
    }

    /// The default run made small enough to show learning within a minute or
    /// two on a CPU adapter (lavapipe: ResNet-20 takes ~5 s per step of 128).
    pub fn shrink_for_cpu(&mut self) {
        self.model.name = "resnet8".into();
        self.recipe.batch_size = 32;
        self.data.synthetic_train = 2048;
        self.data.synthetic_test = 512;
        self.recipe.epochs = Some(6);
        self.recipe.lr = 0.05;
    }

    /// The normalization these settings give on `source`: the one set, else
    /// the initial weights' own (torchvision's for weights without one), else
    /// `Normalize::default_for` the data.
    fn normalization(&self, source: &DataSource) -> Result<Normalize> {
        Ok(match (&self.recipe.normalize, &self.recipe.init) {
            (Some(n), _) => n.clone(),
            (None, Some(init)) => match crate::train::checkpoint::saved_normalization(init)? {
                Some((m, s)) => Normalize::Values(m, s),
                None => Normalize::default_for(source.kind, true),
            },
            (None, None) => Normalize::default_for(source.kind, false),
        })
    }

    /// The run configuration for `data`, checked for values that cannot work
    /// (by the same checks a saved config goes through). Every front end
    /// starts a run through this.
    pub fn config(&self, data: &DataSplit) -> Result<TrainConfig> {
        let (r, o) = (&self.recipe, &self.run);
        let epochs = self.epochs();
        let model = self.model.spec(data.train.classes())?;
        let milestones = r
            .milestones
            .clone()
            .unwrap_or_else(|| Schedule::default_milestones(epochs));
        let source = self.data.source()?;
        let (mean, std) = self.normalization(&source)?.values(data);
        let pictures = matches!(source.kind, DatasetKind::Folder | DatasetKind::Shards);
        let config = TrainConfig {
            model,
            dataset: data.name.clone(),
            epochs,
            batch_size: r.batch_size,
            world_size: 1,
            schedule: Schedule {
                base_lr: r.lr,
                decay: r.schedule,
                milestones,
                gamma: r.gamma,
                warmup_epochs: r.warmup_epochs,
                warmup_lr: r.warmup_lr,
                epochs,
            },
            sgd: SgdConfig {
                momentum: r.momentum,
                weight_decay: r.weight_decay,
                nesterov: r.nesterov,
            },
            seed: r.seed,
            augment: AugmentConfig {
                // An image folder's recipe is RandomResizedCrop, not padding.
                pad: if pictures { 0 } else { r.crop_pad },
                flip: r.flip,
                ..AugmentConfig::normalize_only(mean, std)
            },
            report_every: o.report_every,
            max_steps: o.max_steps,
            stream_data: o.stream_data,
            workers: o.workers,
            checkpoint_every: o.checkpoint_every,
            precision: o.precision,
            data: Some(data.identity()),
            source: Some(source),
            init: r.init.as_ref().map(|p| p.display().to_string()),
        };
        config
            .validate(data.train.shape)
            .map_err(anyhow::Error::msg)?;
        Ok(config)
    }

    /// The recipe and data settings given that disagree with a saved run, each
    /// as "learning rate 0.5 (the run has 0.1)"; a resumed run keeps its recipe.
    pub fn contradictions(&self, saved: &TrainConfig) -> Vec<String> {
        let d = RunSettings::default();
        let s = saved;
        // (setting, its value in these settings, the saved run's value).
        type Row = (Setting, fn(&RunSettings) -> String, String);
        let norm = |n: Norm| match n {
            Norm::Batch => format!("{:?}", NormChoice::Batch),
            Norm::Group { .. } => format!("{:?}", NormChoice::Group),
        };
        let groups = match s.model.norm {
            Norm::Group { groups } => groups,
            Norm::Batch => d.model.groups,
        };
        let on_off = |on: bool| if on { "on" } else { "off" }.to_string();
        let rows: [Row; 17] = [
            (
                Setting::Model,
                |a| a.model.name.clone(),
                s.model.name.clone(),
            ),
            (
                Setting::Shortcut,
                |a| format!("{:?}", a.model.shortcut),
                format!("{:?}", s.model.shortcut),
            ),
            (
                Setting::Norm,
                |a| format!("{:?}", a.model.norm),
                norm(s.model.norm),
            ),
            (
                Setting::Groups,
                |a| a.model.groups.to_string(),
                groups.to_string(),
            ),
            (
                Setting::ConvBias,
                |a| a.model.conv_bias.to_string(),
                s.model.conv_bias.to_string(),
            ),
            (
                Setting::BatchSize,
                |a| a.recipe.batch_size.to_string(),
                s.batch_size.to_string(),
            ),
            (
                Setting::Lr,
                |a| a.recipe.lr.to_string(),
                s.schedule.base_lr.to_string(),
            ),
            (
                Setting::Momentum,
                |a| a.recipe.momentum.to_string(),
                s.sgd.momentum.to_string(),
            ),
            (
                Setting::WeightDecay,
                |a| a.recipe.weight_decay.to_string(),
                s.sgd.weight_decay.to_string(),
            ),
            (
                Setting::Nesterov,
                |a| a.recipe.nesterov.to_string(),
                s.sgd.nesterov.to_string(),
            ),
            (
                Setting::Schedule,
                |a| format!("{:?}", a.recipe.schedule),
                format!("{:?}", s.schedule.decay),
            ),
            (
                Setting::Gamma,
                |a| a.recipe.gamma.to_string(),
                s.schedule.gamma.to_string(),
            ),
            (
                Setting::WarmupEpochs,
                |a| a.recipe.warmup_epochs.to_string(),
                s.schedule.warmup_epochs.to_string(),
            ),
            (
                Setting::WarmupLr,
                |a| a.recipe.warmup_lr.to_string(),
                s.schedule.warmup_lr.to_string(),
            ),
            (
                Setting::CropPad,
                |a| a.recipe.crop_pad.to_string(),
                s.augment.pad.to_string(),
            ),
            (
                Setting::Flip,
                |a| if a.recipe.flip { "on" } else { "off" }.to_string(),
                on_off(s.augment.flip),
            ),
            (
                Setting::Seed,
                |a| a.recipe.seed.to_string(),
                s.seed.to_string(),
            ),
        ];
        let mut out: Vec<String> = rows
            .into_iter()
            .filter_map(|(setting, value, saved)| {
                let mine = value(self);
                let given = self.is_given(setting, mine != value(&d));
                (given && mine != saved).then(|| format!("{setting} {mine} (the run has {saved})"))
            })
            .collect();
        if let Some(m) = self
            .recipe
            .milestones
            .as_ref()
            .filter(|m| **m != s.schedule.milestones)
        {
            out.push(format!(
                "{} {m:?} (the run has {:?})",
                Setting::Milestones,
                s.schedule.milestones
            ));
        }
        if let Some(n) = &self.recipe.normalize {
            out.push(format!(
                "{} {n:?} (the run's normalization is fixed)",
                Setting::Normalize
            ));
        }
        if let Some(src) = &s.source {
            out.extend(self.data.contradictions(src, &self.given));
        }
        out
    }
}
