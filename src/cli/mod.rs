//! The command line's options: clap parses them into the core's
//! [`RunSettings`] (`TrainArgs::settings`), and [`FLAGS`] is the one table
//! that names each setting by its flag in messages.

use std::collections::BTreeSet;
use std::path::PathBuf;

use anyhow::Result;
use clap::builder::PossibleValue;
use clap::{Args, ValueEnum};

use crate::data::Cifar100Labels;
use crate::gpu::{BackendChoice, Precision};
use crate::model::ShortcutKind;
use crate::settings::{
    DataSettings, ModelSettings, NormChoice, Normalize, Recipe, RunOptions, RunSettings, Setting,
};
use crate::train::DecayKind;

pub mod dispatches;
pub mod eval;
pub mod info;
pub mod numbers;
pub mod train;

pub use numbers::{bounded, whole, whole_in};

/// Each setting's flag: what the command line calls a setting in the core's
/// messages, and which setting a typed flag gives.
pub const FLAGS: [(Setting, &str); 39] = {
    use Setting::*;
    [
        (Model, "--model"),
        (Shortcut, "--shortcut"),
        (Norm, "--norm"),
        (Groups, "--groups"),
        (ConvBias, "--conv-bias"),
        (Dataset, "--dataset"),
        (Data, "--data"),
        (Cifar100Labels, "--cifar100-labels"),
        (ImageSize, "--image-size"),
        (SyntheticTrain, "--synthetic-train"),
        (SyntheticTest, "--synthetic-test"),
        (ValSplit, "--val-split"),
        (Epochs, "--epochs"),
        (BatchSize, "--batch-size"),
        (Lr, "--lr"),
        (Momentum, "--momentum"),
        (WeightDecay, "--weight-decay"),
        (Nesterov, "--nesterov"),
        (Schedule, "--schedule"),
        (Milestones, "--milestones"),
        (Gamma, "--gamma"),
        (WarmupEpochs, "--warmup-epochs"),
        (WarmupLr, "--warmup-lr"),
        (CropPad, "--crop-pad"),
        (Flip, "--no-flip"),
        (Normalize, "--normalize"),
        (Seed, "--seed"),
        (Init, "--init"),
        (Out, "--out"),
        (Name, "--name"),
        (Resume, "--resume"),
        (MaxSteps, "--max-steps"),
        (CheckpointEvery, "--checkpoint-every"),
        (ReportEvery, "--report-every"),
        (StreamData, "--stream-data"),
        (Workers, "--workers"),
        (Precision, "--precision"),
        (Backend, "--backend"),
        (Adapter, "--adapter"),
    ]
};

/// The flag that sets `setting`.
pub fn flag_of(setting: Setting) -> &'static str {
    FLAGS
        .iter()
        .find(|(s, _)| *s == setting)
        .map_or(setting.label(), |(_, flag)| flag)
}

/// The settings that typed flags (`--name`) give; other flags give none.
pub fn settings_of_flags(flags: &BTreeSet<String>) -> BTreeSet<Setting> {
    FLAGS
        .iter()
        .filter(|(_, flag)| flags.contains(*flag))
        .map(|(setting, _)| *setting)
        .collect()
}

/// This process's messages name settings by their flags.
pub fn name_settings_by_flags() {
    crate::setting::name_settings_by(flag_of);
}

/// A run name is one folder inside `--out`: not empty, `.` or `..`, and
/// without a path separator (`''` used --out itself, `../..` wrote outside it).
fn run_name(text: &str) -> Result<String, String> {
    let one_component = std::path::Path::new(text)
        .components()
        .map(|c| matches!(c, std::path::Component::Normal(_)))
        .eq([true]);
    if one_component && !text.contains(['/', '\\']) {
        Ok(text.to_string())
    } else {
        Err(format!(
            "'{text}' is not a folder name (no '/', '..' or empty name)"
        ))
    }
}

pub use crate::data::DatasetKind;
pub use crate::train::CheckpointEvery;

/// clap's `ValueEnum` for an enum of the core, so that clap stays in the
/// command-line front end: each variant's name on the command line and its
/// help.
macro_rules! value_enum {
    ($ty:ident { $($variant:ident => $name:literal $(: $help:literal)?),+ $(,)? }) => {
        impl ValueEnum for $ty {
            fn value_variants<'a>() -> &'a [Self] {
                &[$($ty::$variant),+]
            }

            fn to_possible_value(&self) -> Option<PossibleValue> {
                Some(match self {
                    $($ty::$variant => PossibleValue::new($name)$(.help($help))?),+
                })
            }
        }
    };
}

value_enum!(ShortcutKind {
    A => "a": "zero-pad (the paper's CIFAR choice; no parameters)",
    B => "b": "1x1 conv + norm projection",
});
value_enum!(BackendChoice {
    Auto => "auto",
    Vulkan => "vulkan",
    Metal => "metal",
    Dx12 => "dx12",
    Gl => "gl",
});
value_enum!(Precision {
    F32 => "f32",
    F16 => "f16": "mixed precision: f16 activations, f32 master weights and loss scaling",
});
value_enum!(DecayKind {
    MultiStep => "multi-step": "lr x gamma at each milestone epoch",
    Cosine => "cosine": "half a cosine from lr to 0 over all epochs (per step)",
    Constant => "constant",
});
value_enum!(Cifar100Labels {
    Fine => "fine": "100 classes",
    Coarse => "coarse": "20 superclasses",
});
value_enum!(DatasetKind {
    Synthetic => "synthetic": "the built-in procedural shapes dataset (no download)",
    Cifar10 => "cifar10": "CIFAR-10 binary version (data_batch_1..5.bin, test_batch.bin)",
    Cifar100 => "cifar100": "CIFAR-100 binary version (train.bin, test.bin)",
    Folder => "folder": "one subfolder per class of JPEG/PNG files (train/ and val/ inside)",
    Shards => "shards": "an image folder packed as WebDataset tar shards by `pack` (train/*.tar, val/*.tar)",
});

value_enum!(NormChoice {
    Batch => "batch": "BatchNorm2d (the paper's)",
    Group => "group": "GroupNorm with --groups groups (per-sample statistics; no running stats)",
});

#[derive(Args, Clone, Debug)]
#[command(next_help_heading = "Data")]
pub struct DataArgs {
    /// Which dataset format --data holds [default: recognised from the files
    /// in --data, else the built-in set].
    #[arg(long, value_enum)]
    pub dataset: Option<DatasetKind>,
    /// Folder of the dataset files (its format is recognised from the files).
    #[arg(long, value_name = "DIR")]
    pub data: Option<PathBuf>,
    /// CIFAR-100: train on the fine (100) or coarse (20) labels.
    #[arg(long, value_enum, default_value_t = Cifar100Labels::Fine)]
    pub cifar100_labels: Cifar100Labels,
    /// Image folder: side of the square images after resize and center crop.
    #[arg(long, value_name = "PIXELS", default_value_t = 64, value_parser = whole::<usize>())]
    pub image_size: usize,
    /// Built-in dataset: training set size.
    #[arg(long, value_name = "N", default_value_t = 5000, value_parser = bounded(1, crate::data::MAX_SYNTHETIC))]
    pub synthetic_train: usize,
    /// Built-in dataset: test set size.
    #[arg(long, value_name = "N", default_value_t = 1000, value_parser = bounded(1, crate::data::MAX_SYNTHETIC))]
    pub synthetic_test: usize,
    /// Hold out this many training images as the validation set that is
    /// evaluated instead of the test set (the paper's 45k/5k: --val-split 5000).
    #[arg(long, value_name = "N", value_parser = whole::<usize>())]
    pub val_split: Option<usize>,
}

#[derive(Args, Clone, Debug)]
#[command(next_help_heading = "Model")]
pub struct ModelArgs {
    /// resnet8/20/32/44/56/110 (any 6n+2), resnet18-cifar, resnet18/34/50/101/152.
    #[arg(long, default_value = "resnet20")]
    pub model: String,
    /// CIFAR ResNets: shortcut A (zero-pad, the paper's) or B (1x1 conv projection).
    #[arg(long, value_enum, default_value_t = ShortcutKind::A)]
    pub shortcut: ShortcutKind,
    /// The normalization after every conv.
    #[arg(long, value_enum, default_value_t = NormChoice::Batch)]
    pub norm: NormChoice,
    /// Groups of --norm group; must divide every layer's channels (the
    /// GroupNorm paper's 32 fits ImageNet widths, CIFAR's 16 channels want 16 or fewer).
    #[arg(long, value_name = "N", default_value_t = 8, value_parser = bounded(1, 1 << 16))]
    pub groups: usize,
    /// Give every conv a bias (as convs with bias=True, e.g. to load such weights with --init).
    #[arg(long)]
    pub conv_bias: bool,
}

#[derive(Args, Clone, Debug)]
pub struct TrainArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub data: DataArgs,
    /// Epochs to train [default: 10]; with --resume, a larger value extends the run.
    #[arg(long, value_name = "N", help_heading = "Recipe", value_parser = bounded(1, crate::train::trainer::MAX_EPOCHS))]
    pub epochs: Option<usize>,
    /// Images per step (the paper's 128; far smaller batches want a smaller --lr).
    #[arg(long, value_name = "N", default_value_t = 128, help_heading = "Recipe", value_parser = bounded(1, crate::train::trainer::MAX_BATCH))]
    pub batch_size: usize,
    /// SGD learning rate (the paper's 0.1 at batch 128).
    #[arg(
        allow_hyphen_values = true,
        long,
        value_name = "RATE",
        default_value_t = 0.1,
        help_heading = "Recipe"
    )]
    pub lr: f32,
    /// SGD momentum.
    #[arg(
        allow_hyphen_values = true,
        long,
        value_name = "M",
        default_value_t = 0.9,
        help_heading = "Recipe"
    )]
    pub momentum: f32,
    /// L2 weight decay, applied by SGD to every parameter (as PyTorch's).
    #[arg(
        allow_hyphen_values = true,
        long,
        value_name = "WD",
        default_value_t = 1e-4,
        help_heading = "Recipe"
    )]
    pub weight_decay: f32,
    /// Nesterov momentum instead of the classical one.
    #[arg(long, help_heading = "Recipe")]
    pub nesterov: bool,
    /// Learning-rate decay.
    #[arg(long, value_enum, default_value_t = DecayKind::MultiStep, help_heading = "Recipe")]
    pub schedule: DecayKind,
    /// Epochs at which multi-step decay multiplies the rate by --gamma
    /// [default: 50% and 75% of --epochs, the paper's 32k/48k of 64k].
    #[arg(
        long,
        value_name = "E,E,...",
        value_delimiter = ',',
        help_heading = "Recipe"
    , value_parser = whole::<usize>())]
    pub milestones: Option<Vec<usize>>,
    /// Factor of each multi-step decay.
    #[arg(
        allow_hyphen_values = true,
        long,
        value_name = "F",
        default_value_t = 0.1,
        help_heading = "Recipe"
    )]
    pub gamma: f32,
    /// Epochs of linear warm-up from --warmup-lr to --lr (the paper warms
    /// ResNet-110 up at 0.01).
    #[arg(
        allow_hyphen_values = true,
        long,
        value_name = "E",
        default_value_t = 0.0,
        help_heading = "Recipe"
    )]
    pub warmup_epochs: f32,
    /// Learning rate at the start of the warm-up.
    #[arg(
        allow_hyphen_values = true,
        long,
        value_name = "RATE",
        default_value_t = 0.01,
        help_heading = "Recipe"
    )]
    pub warmup_lr: f32,
    /// Random-crop padding in pixels (0: no crop).
    #[arg(
        long,
        value_name = "PIXELS",
        default_value_t = 4,
        help_heading = "Recipe"
    , value_parser = whole::<u32>())]
    pub crop_pad: u32,
    /// No random horizontal flips.
    #[arg(long, help_heading = "Recipe")]
    pub no_flip: bool,
    /// Per-channel normalization (x/255 - mean) / std: cifar (0.4914,
    /// 0.4822, 0.4465 / 0.2023, 0.1994, 0.2010, the paper's recipe), imagenet
    /// (torchvision's weights expect it), dataset (the training set's own), or
    /// six numbers MEAN_R,MEAN_G,MEAN_B,STD_R,STD_G,STD_B [default: cifar on
    /// CIFAR, the --init file's own or imagenet with --init, else dataset].
    #[arg(long, value_name = "cifar|imagenet|dataset|M,M,M,S,S,S", value_parser = Normalize::parse, help_heading = "Recipe")]
    pub normalize: Option<Normalize>,
    /// Seed of the initial weights, the shuffles, the augmentation and
    /// --val-split (a run is reproducible from it).
    #[arg(long, value_name = "N", default_value_t = 0, help_heading = "Recipe", value_parser = whole::<u64>())]
    pub seed: u64,
    /// Start from these weights (a model.safetensors of this tool, or a
    /// torchvision state dict saved as safetensors; f32, f16 or bf16).
    #[arg(
        long,
        value_name = "FILE",
        conflicts_with = "resume",
        help_heading = "Recipe"
    )]
    pub init: Option<PathBuf>,
    /// Folder that holds one folder per run.
    #[arg(long, value_name = "DIR", default_value = "runs", help_heading = "Run")]
    pub out: PathBuf,
    /// Run name: one folder name inside --out [default:
    /// <model>-<dataset>-<seconds since 1970>].
    #[arg(long, value_name = "NAME", value_parser = run_name, help_heading = "Run")]
    pub name: Option<String>,
    /// Continue a run: its folder (or a checkpoint folder). Model, data,
    /// recipe and seed come from its saved config; a flag that contradicts
    /// them is refused. May change on resume: --epochs (a larger value extends
    /// the run), --max-steps, --report-every, --stream-data, --workers,
    /// --checkpoint-every (kept when not given), and --data (the same data
    /// in another place; checked by content; refused for a run of the
    /// built-in set, which reads no folder).
    #[arg(long, value_name = "DIR", help_heading = "Run")]
    pub resume: Option<PathBuf>,
    /// Stop after this many steps in all.
    #[arg(long, value_name = "N", help_heading = "Run", value_parser = whole::<u64>())]
    pub max_steps: Option<u64>,
    /// Also checkpoint every N steps, or every N minutes with "Nm" (besides
    /// each epoch's end; the newest two are kept, and the best by test
    /// accuracy as checkpoints/best).
    #[arg(long, value_name = "N|Nm", allow_hyphen_values = true, value_parser = CheckpointEvery::parse, help_heading = "Run")]
    pub checkpoint_every: Option<CheckpointEvery>,
    /// Steps per asynchronous metrics readback.
    #[arg(long, value_name = "N", default_value_t = 4, help_heading = "Run", value_parser = bounded(1, crate::train::trainer::MAX_REPORT_EVERY))]
    pub report_every: usize,
    /// Upload each batch with its step instead of keeping the dataset in GPU
    /// memory (automatic when it exceeds one storage binding).
    #[arg(long, help_heading = "Run")]
    pub stream_data: bool,
    /// Image folders: threads that decode and augment pictures ahead of the
    /// GPU [default: one per core].
    #[arg(
        long,
        value_name = "N",
        default_value_t = 0,
        hide_default_value = true,
        help_heading = "Run"
    , value_parser = bounded(0, crate::train::trainer::MAX_WORKERS))]
    pub workers: usize,
    /// Store activations and conv/fc weight copies as f32, or as f16 with
    /// f32 master weights, f32 accumulation and dynamic loss scaling (needs
    /// the adapter's shader-f16). Checkpoints are f32 either way.
    #[arg(long, value_enum, default_value = "f32", help_heading = "Run")]
    pub precision: Precision,
    /// Train in the terminal instead of the desktop window.
    #[arg(long, help_heading = "Run")]
    pub no_gui: bool,
    /// Under MPI: end the job when one collective (the gradient all-reduce,
    /// a broadcast) waits this long for the other processes.
    #[arg(long, value_name = "SECONDS", default_value_t = 300, value_parser = crate::cli::whole_in::<u64>(1, 86_400), help_heading = "Run")]
    pub collective_timeout: u64,
    /// The flags given on the command line (filled by the binary; a flag
    /// whose value differs from its default counts as given too).
    #[arg(skip)]
    pub given: BTreeSet<String>,
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

    /// The core's settings these options give.
    pub fn settings(&self) -> RunSettings {
        RunSettings {
            model: self.model.settings(),
            data: self.data.settings(),
            recipe: Recipe {
                epochs: self.epochs,
                batch_size: self.batch_size,
                lr: self.lr,
                momentum: self.momentum,
                weight_decay: self.weight_decay,
                nesterov: self.nesterov,
                schedule: self.schedule,
                milestones: self.milestones.clone(),
                gamma: self.gamma,
                warmup_epochs: self.warmup_epochs,
                warmup_lr: self.warmup_lr,
                crop_pad: self.crop_pad,
                flip: !self.no_flip,
                normalize: self.normalize.clone(),
                seed: self.seed,
                init: self.init.clone(),
            },
            run: RunOptions {
                out: self.out.clone(),
                name: self.name.clone(),
                resume: self.resume.clone(),
                max_steps: self.max_steps,
                checkpoint_every: self.checkpoint_every,
                report_every: self.report_every,
                stream_data: self.stream_data,
                workers: self.workers,
                precision: self.precision,
            },
            given: settings_of_flags(&self.given),
        }
    }
}

impl ModelArgs {
    pub fn settings(&self) -> ModelSettings {
        ModelSettings {
            name: self.model.clone(),
            shortcut: self.shortcut,
            norm: self.norm,
            groups: self.groups,
            conv_bias: self.conv_bias,
        }
    }
}

impl DataArgs {
    pub fn settings(&self) -> DataSettings {
        DataSettings {
            dataset: self.dataset,
            path: self.data.clone(),
            cifar100_labels: self.cifar100_labels,
            image_size: self.image_size,
            synthetic_train: self.synthetic_train,
            synthetic_test: self.synthetic_test,
            val_split: self.val_split,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_flags_default_to_the_cores_defaults() {
        assert_eq!(TrainArgs::defaults().settings(), RunSettings::default());
    }

    #[test]
    fn every_setting_has_one_flag() {
        for &setting in Setting::ALL {
            let flags = FLAGS.iter().filter(|(s, _)| *s == setting).count();
            assert_eq!(flags, 1, "{setting:?}");
        }
    }
}
