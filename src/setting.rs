//! The names of a run's settings. The core's messages name a setting, never a
//! front end's control for it: "batch size must be 1 to 65536" says which
//! value is wrong, and the front end that shows the message decides what the
//! setting is called there. The command line names each by its flag
//! (`cli::name_settings_by_flags`, one table); the window and the browser
//! keep these plain names. A process has one front end, so the naming is
//! chosen once per process, as a locale is.

use std::sync::OnceLock;

/// Defines `Setting` with one variant per row, its plain name, and `ALL`.
macro_rules! settings {
    ($($setting:ident => $label:literal,)+) => {
        /// One value of a run that a user sets.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub enum Setting {
            $($setting,)+
        }

        impl Setting {
            /// Every setting, in the order a front end lists them.
            pub const ALL: &[Setting] = &[$(Setting::$setting,)+];

            /// The setting's plain name, as the window and the browser show it.
            pub fn label(self) -> &'static str {
                match self {
                    $(Setting::$setting => $label,)+
                }
            }
        }
    };
}

settings! {
    Model => "model",
    Shortcut => "shortcut",
    Norm => "normalization layer",
    Groups => "norm groups",
    ConvBias => "conv bias",
    Dataset => "dataset format",
    Data => "data folder",
    Cifar100Labels => "CIFAR-100 labels",
    ImageSize => "image size",
    SyntheticTrain => "built-in training set size",
    SyntheticTest => "built-in test set size",
    ValSplit => "validation split",
    Epochs => "epochs",
    BatchSize => "batch size",
    Lr => "learning rate",
    Momentum => "momentum",
    WeightDecay => "weight decay",
    Nesterov => "Nesterov momentum",
    Schedule => "learning-rate schedule",
    Milestones => "milestones",
    Gamma => "decay factor",
    WarmupEpochs => "warm-up epochs",
    WarmupLr => "warm-up learning rate",
    CropPad => "crop padding",
    Flip => "flips",
    Normalize => "input normalization",
    Seed => "seed",
    Init => "initial weights",
    Out => "runs folder",
    Name => "run name",
    Resume => "resumed run",
    MaxSteps => "step limit",
    CheckpointEvery => "checkpoint interval",
    ReportEvery => "report interval",
    StreamData => "data streaming",
    Workers => "decode workers",
    Precision => "precision",
    Backend => "graphics API",
    Adapter => "adapter",
}

static NAMES: OnceLock<fn(Setting) -> &'static str> = OnceLock::new();

/// Names every setting in this process's messages by `name` (the first call
/// wins; later ones change nothing).
pub fn name_settings_by(name: fn(Setting) -> &'static str) {
    let _ = NAMES.set(name);
}

impl std::fmt::Display for Setting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name = NAMES.get().map_or_else(|| self.label(), |name| name(*self));
        f.write_str(name)
    }
}
