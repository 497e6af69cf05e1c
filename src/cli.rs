//! Command-line options shared by the front ends, and turning them into a
//! dataset and a run configuration.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::{Args, ValueEnum};

use crate::data::{self, Cifar100Labels, DataSplit, FolderOptions, SyntheticOptions};
use crate::model::{ModelSpec, ShortcutKind};
use crate::shapes::{AugmentConfig, SgdConfig};
use crate::train::{DecayKind, Schedule, TrainConfig, channel_statistics};

pub const DEFAULT_EPOCHS: usize = 10;
/// The most images the built-in dataset makes per set (3 KiB each).
pub const MAX_SYNTHETIC: usize = 1_000_000;
/// Image-folder sides accepted by --image-size (ImageNet's recipe uses 224).
pub const IMAGE_SIDES: std::ops::RangeInclusive<usize> = 8..=1024;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum DatasetKind {
    /// The built-in procedural shapes dataset (no download).
    Synthetic,
    /// CIFAR-10 binary version (data_batch_1..5.bin, test_batch.bin).
    Cifar10,
    /// CIFAR-100 binary version (train.bin, test.bin).
    Cifar100,
    /// One subfolder per class of JPEG/PNG files (train/ and val/ inside).
    Folder,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ShortcutArg {
    A,
    B,
}

#[derive(Args, Clone, Debug)]
pub struct DataArgs {
    /// Which dataset format --data holds [default: cifar10 with --data, else synthetic].
    #[arg(long, value_enum)]
    pub dataset: Option<DatasetKind>,
    /// Folder of the dataset files.
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// CIFAR-100: train on the fine (100) or coarse (20) labels.
    #[arg(long, value_enum, default_value_t = Cifar100Labels::Fine)]
    pub cifar100_labels: Cifar100Labels,
    /// Image folder: side of the square images after resize and center crop.
    #[arg(long, default_value_t = 64)]
    pub image_size: usize,
    /// Synthetic dataset: training and test set sizes.
    #[arg(long, default_value_t = 5000)]
    pub synthetic_train: usize,
    #[arg(long, default_value_t = 1000)]
    pub synthetic_test: usize,
    /// Hold out this many training images as the validation set that is
    /// evaluated instead of the test set (the paper's 45k/5k: --val-split 5000).
    #[arg(long)]
    pub val_split: Option<usize>,
}

impl DataArgs {
    pub fn kind(&self) -> DatasetKind {
        self.dataset.unwrap_or(if self.data.is_some() {
            DatasetKind::Cifar10
        } else {
            DatasetKind::Synthetic
        })
    }

    pub fn load(&self, seed: u64) -> Result<DataSplit> {
        let kind = self.kind();
        let dir = || {
            self.data
                .clone()
                .with_context(|| format!("--dataset {kind:?} needs --data <folder>").to_lowercase())
        };
        let mut split = match kind {
            DatasetKind::Synthetic => {
                let sizes = 1..=MAX_SYNTHETIC;
                if !sizes.contains(&self.synthetic_train) || !sizes.contains(&self.synthetic_test) {
                    bail!("--synthetic-train and --synthetic-test must be 1 to {MAX_SYNTHETIC}");
                }
                data::synthetic(SyntheticOptions {
                    train: self.synthetic_train,
                    test: self.synthetic_test,
                    seed: 0,
                })
            }
            DatasetKind::Cifar10 => data::load_cifar10(&dir()?)?,
            DatasetKind::Cifar100 => data::load_cifar100(&dir()?, self.cifar100_labels)?,
            DatasetKind::Folder if !IMAGE_SIDES.contains(&self.image_size) => {
                bail!(
                    "--image-size must be {} to {}, got {}",
                    IMAGE_SIDES.start(),
                    IMAGE_SIDES.end(),
                    self.image_size
                )
            }
            DatasetKind::Folder => data::load_folder(
                &dir()?,
                FolderOptions {
                    image_size: self.image_size,
                },
            )?,
        };
        if let Some(count) = self.val_split {
            let (train, val) = split
                .train
                .split_validation(count, seed)
                .map_err(anyhow::Error::msg)?;
            split.name = format!("{} with {count} held out for validation", split.name);
            split.train = train;
            split.test = val;
            split.eval_name = "validation".into();
        }
        Ok(split)
    }
}

#[derive(Args, Clone, Debug)]
pub struct ModelArgs {
    /// resnet8/20/32/44/56/110 (any 6n+2), resnet18-cifar, resnet18/34/50/101/152.
    #[arg(long, default_value = "resnet20")]
    pub model: String,
    /// CIFAR ResNets: shortcut A (zero-pad, the paper's) or B (1x1 conv projection).
    #[arg(long, value_enum, default_value_t = ShortcutArg::A)]
    pub shortcut: ShortcutArg,
}

impl ModelArgs {
    pub fn spec(&self, num_classes: usize) -> Result<ModelSpec> {
        let shortcut = match self.shortcut {
            ShortcutArg::A => ShortcutKind::A,
            ShortcutArg::B => ShortcutKind::B,
        };
        ModelSpec::new(&self.model, shortcut, num_classes)
            .map_err(|e| anyhow::anyhow!("--model: {e}"))
    }
}

#[derive(Args, Clone, Debug)]
pub struct TrainArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub data: DataArgs,
    /// Epochs to train [default: 10]; with --resume, a larger value extends the run.
    #[arg(long)]
    pub epochs: Option<usize>,
    #[arg(long, default_value_t = 128)]
    pub batch_size: usize,
    #[arg(long, default_value_t = 0.1)]
    pub lr: f32,
    #[arg(long, default_value_t = 0.9)]
    pub momentum: f32,
    #[arg(long, default_value_t = 1e-4)]
    pub weight_decay: f32,
    #[arg(long)]
    pub nesterov: bool,
    /// Learning-rate decay.
    #[arg(long, value_enum, default_value_t = DecayKind::MultiStep)]
    pub schedule: DecayKind,
    /// Epochs at which multi-step decay multiplies the rate by --gamma
    /// [default: 50% and 75% of --epochs, the paper's 32k/48k of 64k].
    #[arg(long, value_delimiter = ',')]
    pub milestones: Option<Vec<usize>>,
    #[arg(long, default_value_t = 0.1)]
    pub gamma: f32,
    /// Epochs of linear warm-up from --warmup-lr to --lr (the paper warms
    /// ResNet-110 up at 0.01).
    #[arg(long, default_value_t = 0.0)]
    pub warmup_epochs: f32,
    #[arg(long, default_value_t = 0.01)]
    pub warmup_lr: f32,
    /// Random-crop padding in pixels (0: no crop).
    #[arg(long, default_value_t = 4)]
    pub crop_pad: u32,
    #[arg(long)]
    pub no_flip: bool,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Stop after this many steps in all.
    #[arg(long)]
    pub max_steps: Option<u64>,
    /// Steps per asynchronous metrics readback.
    #[arg(long, default_value_t = 4)]
    pub report_every: usize,
    /// Upload each batch with its step instead of keeping the dataset in GPU
    /// memory (automatic when it exceeds one storage binding).
    #[arg(long)]
    pub stream_data: bool,
    /// Folder that holds one folder per run.
    #[arg(long, default_value = "runs")]
    pub out: PathBuf,
    /// Run name [default: <model>-<dataset>-<seconds since 1970>].
    #[arg(long)]
    pub name: Option<String>,
    /// Continue a run: its folder (or a checkpoint folder). Model, data and
    /// recipe come from the saved config; --epochs may extend it.
    #[arg(long)]
    pub resume: Option<PathBuf>,
    /// Start from these weights (a model.safetensors of this tool, or a
    /// torchvision state dict saved as safetensors).
    #[arg(long, conflicts_with = "resume")]
    pub init: Option<PathBuf>,
    /// Train in the terminal instead of the desktop window.
    #[arg(long)]
    pub no_gui: bool,
}

/// `train` as a command of its own, to parse or default its options outside
/// the binary (the window's settings, tests).
#[derive(clap::Parser)]
struct TrainCommand {
    #[command(flatten)]
    args: TrainArgs,
}

impl TrainArgs {
    /// Every option at its default, as `train` with no flags.
    pub fn defaults() -> Self {
        <TrainCommand as clap::Parser>::parse_from(["train"]).args
    }

    /// The default run made small enough to show learning within a minute or
    /// two on a CPU adapter (lavapipe: ResNet-20 takes ~5 s per step of 128).
    pub fn shrink_for_cpu(&mut self) {
        self.model.model = "resnet8".into();
        self.batch_size = 32;
        self.data.synthetic_train = 2048;
        self.data.synthetic_test = 512;
        self.epochs = Some(6);
        self.lr = 0.05;
    }

    /// The run configuration for `data`, checked for values that cannot work
    /// (by the same checks a saved config goes through).
    pub fn config(&self, data: &DataSplit) -> Result<TrainConfig> {
        let epochs = self.epochs.unwrap_or(DEFAULT_EPOCHS);
        let model = self.model.spec(data.train.classes())?;
        let milestones = self
            .milestones
            .clone()
            .unwrap_or_else(|| Schedule::default_milestones(epochs));
        let (mean, std) = channel_statistics(&data.train);
        let config = TrainConfig {
            model,
            dataset: data.name.clone(),
            epochs,
            batch_size: self.batch_size,
            schedule: Schedule {
                base_lr: self.lr,
                decay: self.schedule,
                milestones,
                gamma: self.gamma,
                warmup_epochs: self.warmup_epochs,
                warmup_lr: self.warmup_lr,
                epochs,
            },
            sgd: SgdConfig {
                momentum: self.momentum,
                weight_decay: self.weight_decay,
                nesterov: self.nesterov,
            },
            seed: self.seed,
            augment: AugmentConfig {
                pad: self.crop_pad,
                flip: !self.no_flip,
                mean,
                std,
            },
            report_every: self.report_every,
            max_steps: self.max_steps,
            stream_data: self.stream_data,
            data: Some(data.identity()),
            init: self.init.as_ref().map(|p| p.display().to_string()),
        };
        config
            .validate(data.train.shape)
            .map_err(anyhow::Error::msg)?;
        Ok(config)
    }
}
