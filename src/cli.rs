//! Command-line options shared by the front ends, and turning them into a
//! dataset and a run configuration.

use std::path::PathBuf;

use anyhow::Result;
use clap::builder::PossibleValue;
use clap::{Args, ValueEnum};

use crate::data::channel_statistics;
use crate::data::{Cifar100Labels, DataSource, DataSplit};
use crate::gpu::{BackendChoice, Precision};
use crate::model::{ModelSpec, Norm, ShortcutKind};
use crate::shapes::{AugmentConfig, SgdConfig};
use crate::train::{DecayKind, Schedule, TrainConfig};

pub const DEFAULT_EPOCHS: usize = 10;

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

/// A count flag's parser that refuses values outside `min..=max`, naming the
/// flag (zero and huge values divided by zero or aborted an allocation).
pub fn bounded(min: usize, max: usize) -> clap::builder::RangedU64ValueParser<usize> {
    clap::builder::RangedU64ValueParser::<usize>::new().range(min as u64..=max as u64)
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

/// The normalization after every conv.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum NormArg {
    /// BatchNorm2d (the paper's).
    Batch,
    /// GroupNorm with --groups groups (per-sample statistics; no running stats).
    Group,
}

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
    #[arg(long, value_name = "PIXELS", default_value_t = 64)]
    pub image_size: usize,
    /// Built-in dataset: training set size.
    #[arg(long, value_name = "N", default_value_t = 5000)]
    pub synthetic_train: usize,
    /// Built-in dataset: test set size.
    #[arg(long, value_name = "N", default_value_t = 1000)]
    pub synthetic_test: usize,
    /// Hold out this many training images as the validation set that is
    /// evaluated instead of the test set (the paper's 45k/5k: --val-split 5000).
    #[arg(long, value_name = "N")]
    pub val_split: Option<usize>,
}

impl DataArgs {
    /// The format as declared (for display): `--dataset`, else CIFAR-10 when
    /// a folder is given, else the built-in set. `source` looks into the folder.
    pub fn kind(&self) -> DatasetKind {
        self.dataset.unwrap_or(if self.data.is_some() {
            DatasetKind::Cifar10
        } else {
            DatasetKind::Synthetic
        })
    }

    /// The format: `--dataset`, else what the `--data` folder holds, else the
    /// built-in set.
    fn detected_kind(&self) -> Result<DatasetKind> {
        Ok(match (self.dataset, &self.data) {
            (Some(kind), _) => kind,
            (None, Some(dir)) => DataSource::detect(dir)?,
            (None, None) => DatasetKind::Synthetic,
        })
    }

    /// What these flags select, checked.
    pub fn source(&self) -> Result<DataSource> {
        let source = DataSource {
            kind: self.detected_kind()?,
            path: self.data.clone(),
            cifar100_labels: self.cifar100_labels,
            image_size: self.image_size,
            synthetic_train: self.synthetic_train,
            synthetic_test: self.synthetic_test,
            val_split: self.val_split,
        };
        source.validate().map_err(anyhow::Error::msg)?;
        Ok(source)
    }

    pub fn load(&self, seed: u64) -> Result<DataSplit> {
        load_source(&self.source()?, seed)
    }

    /// A saved run's data source, moved to `--data` when that is given.
    pub fn relocate(&self, saved: &DataSource) -> DataSource {
        DataSource {
            path: self.data.clone().or_else(|| saved.path.clone()),
            ..saved.clone()
        }
    }

    /// The data flags given (on the command line in `given`, or set to other
    /// than their default) that select other data than `saved`; `--data`
    /// alone may move the same data.
    pub fn contradictions(
        &self,
        saved: &DataSource,
        given: &std::collections::BTreeSet<String>,
    ) -> Vec<String> {
        let d = TrainArgs::defaults().data;
        let kind = |k: DatasetKind| format!("{k:?}").to_lowercase();
        let rows = [
            (
                "--dataset",
                self.dataset.map(kind),
                d.dataset.map(kind),
                Some(kind(saved.kind)),
            ),
            (
                "--cifar100-labels",
                Some(format!("{:?}", self.cifar100_labels)),
                Some(format!("{:?}", d.cifar100_labels)),
                Some(format!("{:?}", saved.cifar100_labels)),
            ),
            (
                "--image-size",
                Some(self.image_size.to_string()),
                Some(d.image_size.to_string()),
                Some(saved.image_size.to_string()),
            ),
            (
                "--synthetic-train",
                Some(self.synthetic_train.to_string()),
                Some(d.synthetic_train.to_string()),
                Some(saved.synthetic_train.to_string()),
            ),
            (
                "--synthetic-test",
                Some(self.synthetic_test.to_string()),
                Some(d.synthetic_test.to_string()),
                Some(saved.synthetic_test.to_string()),
            ),
            (
                "--val-split",
                self.val_split.map(|v| v.to_string()),
                d.val_split.map(|v| v.to_string()),
                saved.val_split.map(|v| v.to_string()),
            ),
        ];
        rows.into_iter()
            .filter(|(flag, mine, default, theirs)| {
                (given.contains(*flag) || mine != default) && mine != theirs
            })
            .map(|(flag, mine, _, theirs)| {
                let show = |v: Option<String>| v.unwrap_or_else(|| "none".into());
                format!("{flag} {} (the run has {})", show(mine), show(theirs))
            })
            .collect()
    }
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
    #[arg(long, value_enum, default_value_t = NormArg::Batch)]
    pub norm: NormArg,
    /// Groups of --norm group; must divide every layer's channels (the
    /// GroupNorm paper's 32 fits ImageNet widths, CIFAR's 16 channels want 16 or fewer).
    #[arg(long, value_name = "N", default_value_t = 8)]
    pub groups: usize,
    /// Give every conv a bias (as convs with bias=True, e.g. to load such weights with --init).
    #[arg(long)]
    pub conv_bias: bool,
}

impl ModelArgs {
    /// The flags these options are given by.
    pub const FLAGS: [&'static str; 5] =
        ["--model", "--shortcut", "--norm", "--groups", "--conv-bias"];

    pub fn spec(&self, num_classes: usize) -> Result<ModelSpec> {
        let shortcut = self.shortcut;
        let norm = match self.norm {
            NormArg::Batch => Norm::Batch,
            NormArg::Group => Norm::Group {
                groups: self.groups,
            },
        };
        ModelSpec::new(&self.model, shortcut, num_classes)
            .map_err(|e| anyhow::anyhow!("--model: {e}"))?
            .with_layers(norm, self.conv_bias)
            .map_err(|e| anyhow::anyhow!("--norm: {e}"))
    }
}

#[derive(Args, Clone, Debug)]
pub struct TrainArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub data: DataArgs,
    /// Epochs to train [default: 10]; with --resume, a larger value extends the run.
    #[arg(long, value_name = "N", help_heading = "Recipe")]
    pub epochs: Option<usize>,
    /// Images per step (the paper's 128; far smaller batches want a smaller --lr).
    #[arg(long, value_name = "N", default_value_t = 128, help_heading = "Recipe")]
    pub batch_size: usize,
    /// SGD learning rate (the paper's 0.1 at batch 128).
    #[arg(
        allow_negative_numbers = true,
        long,
        value_name = "RATE",
        default_value_t = 0.1,
        help_heading = "Recipe"
    )]
    pub lr: f32,
    /// SGD momentum.
    #[arg(
        allow_negative_numbers = true,
        long,
        value_name = "M",
        default_value_t = 0.9,
        help_heading = "Recipe"
    )]
    pub momentum: f32,
    /// L2 weight decay, applied by SGD to every parameter (as PyTorch's).
    #[arg(
        allow_negative_numbers = true,
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
    )]
    pub milestones: Option<Vec<usize>>,
    /// Factor of each multi-step decay.
    #[arg(
        allow_negative_numbers = true,
        long,
        value_name = "F",
        default_value_t = 0.1,
        help_heading = "Recipe"
    )]
    pub gamma: f32,
    /// Epochs of linear warm-up from --warmup-lr to --lr (the paper warms
    /// ResNet-110 up at 0.01).
    #[arg(
        allow_negative_numbers = true,
        long,
        value_name = "E",
        default_value_t = 0.0,
        help_heading = "Recipe"
    )]
    pub warmup_epochs: f32,
    /// Learning rate at the start of the warm-up.
    #[arg(
        allow_negative_numbers = true,
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
    )]
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
    #[arg(long, value_name = "N", default_value_t = 0, help_heading = "Recipe")]
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
    /// in another place; checked by content).
    #[arg(long, value_name = "DIR", help_heading = "Run")]
    pub resume: Option<PathBuf>,
    /// Stop after this many steps in all.
    #[arg(long, value_name = "N", help_heading = "Run")]
    pub max_steps: Option<u64>,
    /// Also checkpoint every N steps, or every N minutes with "Nm" (besides
    /// each epoch's end; the newest two are kept, and the best by test
    /// accuracy as checkpoints/best).
    #[arg(long, value_name = "N|Nm", value_parser = CheckpointEvery::parse, help_heading = "Run")]
    pub checkpoint_every: Option<CheckpointEvery>,
    /// Steps per asynchronous metrics readback.
    #[arg(long, value_name = "N", default_value_t = 4, help_heading = "Run")]
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
    )]
    pub workers: usize,
    /// Store activations and conv/fc weight copies as f32, or as f16 with
    /// f32 master weights, f32 accumulation and dynamic loss scaling (needs
    /// the adapter's shader-f16). Checkpoints are f32 either way.
    #[arg(long, value_enum, default_value = "f32", help_heading = "Run")]
    pub precision: Precision,
    /// Train in the terminal instead of the desktop window.
    #[arg(long, help_heading = "Run")]
    pub no_gui: bool,
    /// The flags given on the command line (filled by the binary; a flag
    /// whose value differs from its default counts as given too).
    #[arg(skip)]
    pub given: std::collections::BTreeSet<String>,
}

/// How images are normalized before the network.
#[derive(Clone, Debug, PartialEq)]
pub enum Normalize {
    Cifar,
    Imagenet,
    Dataset,
    Values([f32; 3], [f32; 3]),
}

impl Normalize {
    pub const CIFAR: ([f32; 3], [f32; 3]) = ([0.4914, 0.4822, 0.4465], [0.2023, 0.1994, 0.2010]);
    pub const IMAGENET: ([f32; 3], [f32; 3]) = ([0.485, 0.456, 0.406], [0.229, 0.224, 0.225]);

    pub fn parse(text: &str) -> Result<Self, String> {
        match text {
            "cifar" => return Ok(Normalize::Cifar),
            "imagenet" => return Ok(Normalize::Imagenet),
            "dataset" => return Ok(Normalize::Dataset),
            _ => {}
        }
        let values: Vec<f32> = text
            .split(',')
            .map(|v| v.trim().parse::<f32>())
            .collect::<Result<_, _>>()
            .map_err(|_| format!("'{text}': expected cifar, imagenet, dataset or six numbers"))?;
        match values.as_slice() {
            [m0, m1, m2, s0, s1, s2] if [*s0, *s1, *s2].iter().all(|&s| s > 0.0) => {
                Ok(Normalize::Values([*m0, *m1, *m2], [*s0, *s1, *s2]))
            }
            _ => Err(format!(
                "'{text}': expected six numbers MEAN_R,MEAN_G,MEAN_B,STD_R,STD_G,STD_B with std > 0"
            )),
        }
    }

    /// Mean and std for `data` (whose own statistics `Dataset` uses).
    pub fn values(&self, data: &DataSplit) -> ([f32; 3], [f32; 3]) {
        match self {
            Normalize::Cifar => Self::CIFAR,
            Normalize::Imagenet => Self::IMAGENET,
            Normalize::Values(m, s) => (*m, *s),
            Normalize::Dataset => {
                let (m, s) = channel_statistics(&data.train);
                ([m[0], m[1], m[2]], [s[0], s[1], s[2]])
            }
        }
    }
}

/// Loads `source`; an image folder or shards (indexed, not decoded) says on
/// stderr what it indexes and how long that took.
pub fn load_source(source: &DataSource, seed: u64) -> Result<DataSplit> {
    let pictures = matches!(source.kind, DatasetKind::Folder | DatasetKind::Shards);
    let dir = source.path.as_deref().unwrap_or(std::path::Path::new("."));
    if pictures {
        eprintln!("indexing {} ...", dir.display());
    }
    let started = web_time::Instant::now();
    let data = source.load(seed)?;
    if pictures {
        eprintln!(
            "indexed {} training and {} evaluation pictures in {:.2} s",
            data.train.len(),
            data.test.len(),
            started.elapsed().as_secs_f64()
        );
    }
    Ok(data)
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

    /// Whether `flag` was given: on the command line, or (for callers that
    /// build the options in code) set to other than its default.
    fn is_given(&self, flag: &str, differs_from_default: bool) -> bool {
        self.given.contains(flag) || differs_from_default
    }

    /// The recipe flags given that disagree with a saved run, each as
    /// "--lr 0.5 (the run has 0.1)"; a resumed run keeps its recipe.
    pub fn contradictions(&self, saved: &TrainConfig) -> Vec<String> {
        let d = Self::defaults();
        let s = saved;
        // (flag, its value in these options, the saved run's value).
        type Row = (&'static str, fn(&TrainArgs) -> String, String);
        let norm = |n: Norm| match n {
            Norm::Batch => "Batch".to_string(),
            Norm::Group { .. } => "Group".to_string(),
        };
        let groups = match s.model.norm {
            Norm::Group { groups } => groups,
            Norm::Batch => d.model.groups,
        };
        let rows: [Row; 17] = [
            ("--model", |a| a.model.model.clone(), s.model.name.clone()),
            (
                "--shortcut",
                |a| format!("{:?}", a.model.shortcut),
                format!("{:?}", s.model.shortcut),
            ),
            (
                "--norm",
                |a| format!("{:?}", a.model.norm),
                norm(s.model.norm),
            ),
            (
                "--groups",
                |a| a.model.groups.to_string(),
                groups.to_string(),
            ),
            (
                "--conv-bias",
                |a| a.model.conv_bias.to_string(),
                s.model.conv_bias.to_string(),
            ),
            (
                "--batch-size",
                |a| a.batch_size.to_string(),
                s.batch_size.to_string(),
            ),
            ("--lr", |a| a.lr.to_string(), s.schedule.base_lr.to_string()),
            (
                "--momentum",
                |a| a.momentum.to_string(),
                s.sgd.momentum.to_string(),
            ),
            (
                "--weight-decay",
                |a| a.weight_decay.to_string(),
                s.sgd.weight_decay.to_string(),
            ),
            (
                "--nesterov",
                |a| a.nesterov.to_string(),
                s.sgd.nesterov.to_string(),
            ),
            (
                "--schedule",
                |a| format!("{:?}", a.schedule),
                format!("{:?}", s.schedule.decay),
            ),
            (
                "--gamma",
                |a| a.gamma.to_string(),
                s.schedule.gamma.to_string(),
            ),
            (
                "--warmup-epochs",
                |a| a.warmup_epochs.to_string(),
                s.schedule.warmup_epochs.to_string(),
            ),
            (
                "--warmup-lr",
                |a| a.warmup_lr.to_string(),
                s.schedule.warmup_lr.to_string(),
            ),
            (
                "--crop-pad",
                |a| a.crop_pad.to_string(),
                s.augment.pad.to_string(),
            ),
            (
                "--no-flip",
                |a| a.no_flip.to_string(),
                (!s.augment.flip).to_string(),
            ),
            ("--seed", |a| a.seed.to_string(), s.seed.to_string()),
        ];
        let mut out: Vec<String> = rows
            .into_iter()
            .filter_map(|(flag, value, saved)| {
                let mine = value(self);
                let given = self.is_given(flag, mine != value(&d));
                (given && mine != saved).then(|| format!("{flag} {mine} (the run has {saved})"))
            })
            .collect();
        if let Some(m) = self
            .milestones
            .as_ref()
            .filter(|m| **m != s.schedule.milestones)
        {
            out.push(format!(
                "--milestones {m:?} (the run has {:?})",
                s.schedule.milestones
            ));
        }
        if let Some(n) = &self.normalize {
            out.push(format!(
                "--normalize {n:?} (the run's normalization is fixed)"
            ));
        }
        if let Some(src) = &s.source {
            out.extend(self.data.contradictions(src, &self.given));
        }
        out
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
        let source = self.data.source()?;
        let normalize = match (&self.normalize, &self.init) {
            (Some(n), _) => n.clone(),
            (None, Some(init)) => match crate::train::checkpoint::saved_normalization(init)? {
                Some((m, s)) => Normalize::Values(m, s),
                None => Normalize::Imagenet,
            },
            (None, None) if matches!(source.kind, DatasetKind::Cifar10 | DatasetKind::Cifar100) => {
                Normalize::Cifar
            }
            (None, None) => Normalize::Dataset,
        };
        let (mean, std) = normalize.values(data);
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
                // An image folder's recipe is RandomResizedCrop, not padding.
                pad: if matches!(source.kind, DatasetKind::Folder | DatasetKind::Shards) {
                    0
                } else {
                    self.crop_pad
                },
                flip: !self.no_flip,
                ..AugmentConfig::normalize_only(mean, std)
            },
            report_every: self.report_every,
            max_steps: self.max_steps,
            stream_data: self.stream_data,
            workers: self.workers,
            checkpoint_every: self.checkpoint_every,
            precision: self.precision,
            data: Some(data.identity()),
            source: Some(source),
            init: self.init.as_ref().map(|p| p.display().to_string()),
        };
        config
            .validate(data.train.shape)
            .map_err(anyhow::Error::msg)?;
        Ok(config)
    }
}
