//! The ResNet family as a device-independent layer list with torchvision
//! parameter names: CIFAR ResNet-(6n+2) with shortcut A or B, the wide CIFAR
//! ResNet-18, and ImageNet ResNet-18/34/50/101/152. The trainer turns this list
//! into GPU tensors and dispatches; checkpoints use its names.

mod build;
mod init;

use build::{basic_network, bottleneck_network, stages_of};
pub use init::initial_parameters;

use std::collections::HashMap;
use std::fmt;

/// How a block's input reaches its output when the shape changes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum ShortcutKind {
    /// Subsample and zero-pad channels (the paper's CIFAR choice): no parameters.
    A,
    /// 1x1 conv + batch norm projection (torchvision's `downsample`).
    B,
}

/// The normalization layer after each conv (torchvision's `norm_layer`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Norm {
    /// torch.nn.BatchNorm2d: batch statistics, running estimates for eval.
    #[default]
    Batch,
    /// torch.nn.GroupNorm(groups, channels): per-sample statistics over
    /// groups of channels, no running estimates.
    Group { groups: usize },
}

impl Norm {
    /// Checks that `channels` split into this norm's groups.
    pub fn check_channels(self, layer: &str, channels: usize) -> Result<(), String> {
        match self {
            Norm::Group { groups } if groups == 0 || channels % groups != 0 => Err(format!(
                "group norm with {groups} groups: layer {layer} has {channels} channels"
            )),
            _ => Ok(()),
        }
    }
}

impl fmt::Display for Norm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Norm::Batch => write!(f, "batch norm"),
            Norm::Group { groups } => write!(f, "group norm, {groups} groups"),
        }
    }
}

/// One convolution (with a bias where `bias`) followed by its normalization.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConvBnSpec {
    /// torchvision name of the conv, e.g. `layer1.0.conv1` or `layer2.0.downsample.0`.
    pub conv: String,
    /// torchvision name of its norm layer, e.g. `layer1.0.bn1`.
    pub bn: String,
    pub in_c: usize,
    pub out_c: usize,
    pub kernel: usize,
    pub stride: usize,
    pub pad: usize,
    pub norm: Norm,
    /// `bias=True` on the conv (torchvision's convs have none).
    pub bias: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Shortcut {
    Identity,
    /// Option A: stride-subsample and zero-pad from in_c to out_c channels.
    PadChannels {
        in_c: usize,
        out_c: usize,
        stride: usize,
    },
    Projection(ConvBnSpec),
}

/// A residual block: its conv/BN units in order (2 for basic, 3 for bottleneck;
/// the last one's BN adds the shortcut and applies ReLU) and its shortcut.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlockSpec {
    pub name: String,
    pub units: Vec<ConvBnSpec>,
    pub shortcut: Shortcut,
}

/// The whole network, stem to classifier.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Network {
    pub stem: ConvBnSpec,
    /// 3x3/2 max pool after the stem (ImageNet models).
    pub stem_max_pool: bool,
    pub blocks: Vec<BlockSpec>,
    pub features: usize,
    pub num_classes: usize,
    pub in_channels: usize,
}

/// A model the CLI can name. Read from disk (config.json, checkpoint
/// metadata) through the same checks as `--model`.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "ModelFields")]
pub struct ModelSpec {
    /// e.g. `resnet20`, `resnet18-cifar`, `resnet50`.
    pub name: String,
    pub shortcut: ShortcutKind,
    pub num_classes: usize,
    pub in_channels: usize,
    /// The normalization after every conv.
    pub norm: Norm,
    /// Whether every conv has a bias.
    pub conv_bias: bool,
    /// What `name` names, parsed once by `ModelSpec::new`.
    #[serde(skip)]
    family: Family,
}

/// A model spec as stored, before validation (runs saved before norm and
/// conv_bias existed have batch norm and no conv biases).
#[derive(serde::Deserialize)]
struct ModelFields {
    name: String,
    shortcut: ShortcutKind,
    num_classes: usize,
    in_channels: usize,
    #[serde(default)]
    norm: Norm,
    #[serde(default)]
    conv_bias: bool,
}

impl TryFrom<ModelFields> for ModelSpec {
    type Error = String;

    fn try_from(f: ModelFields) -> Result<Self, String> {
        if f.in_channels != 3 {
            return Err(format!(
                "models take 3 input channels, this one says {}",
                f.in_channels
            ));
        }
        ModelSpec::new(&f.name, f.shortcut, f.num_classes)?.with_layers(f.norm, f.conv_bias)
    }
}

/// The deepest CIFAR ResNet accepted: the paper's ResNet-1202.
pub const MAX_CIFAR_DEPTH: usize = 1202;
/// The most classes a classifier may have (ImageNet-21k has 21841).
pub const MAX_CLASSES: usize = 100_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Family {
    /// 6n+2 layers, three stages of n basic blocks at 16/32/64 channels.
    Cifar { n: usize },
    /// Basic blocks at 64/128/256/512 channels with a 3x3 stem and no max pool.
    CifarWide { layers: [usize; 4] },
    ImageNet {
        bottleneck: bool,
        layers: [usize; 4],
    },
}

pub const NAMED_MODELS: &str = "resnet8, resnet20, resnet32, resnet44, resnet56, resnet110 \
     (any resnet<6n+2>), resnet18-cifar, resnet18, resnet34, resnet50, resnet101, resnet152";

impl ModelSpec {
    pub fn new(name: &str, shortcut: ShortcutKind, num_classes: usize) -> Result<Self, String> {
        let family = family(name)?;
        if !(2..=MAX_CLASSES).contains(&num_classes) {
            return Err(format!(
                "a classifier needs 2 to {MAX_CLASSES} classes, got {num_classes}"
            ));
        }
        Ok(ModelSpec {
            name: name.to_string(),
            shortcut,
            num_classes,
            in_channels: 3,
            norm: Norm::Batch,
            conv_bias: false,
            family,
        })
    }

    /// This model with `norm` after every conv and conv biases where
    /// `conv_bias`; an error names a layer whose channels do not split into
    /// the norm's groups.
    pub fn with_layers(mut self, norm: Norm, conv_bias: bool) -> Result<Self, String> {
        self.norm = norm;
        self.conv_bias = conv_bias;
        let network = self.network();
        let divides_all = network.units().map(|u| u.out_c).fold(0, gcd);
        for unit in network.units() {
            norm.check_channels(&unit.bn, unit.out_c).map_err(|e| {
                format!(
                    "{e}; {} must divide every layer's channels (here: divisors of {divides_all})",
                    crate::setting::Setting::Groups
                )
            })?;
        }
        Ok(self)
    }

    /// The layer list. ImageNet models always use projection shortcuts, as torchvision.
    pub fn network(&self) -> Network {
        let mut network = self.network_shape();
        network.for_each_unit(|unit| {
            unit.norm = self.norm;
            unit.bias = self.conv_bias;
        });
        network
    }

    fn network_shape(&self) -> Network {
        let classes = self.num_classes;
        match self.family {
            Family::Cifar { n } => {
                let stages = [(16, n, 1), (32, n, 2), (64, n, 2)];
                basic_network(self.in_channels, 16, false, &stages, self.shortcut, classes)
            }
            Family::CifarWide { layers } => {
                let stages = stages_of([64, 128, 256, 512], layers);
                basic_network(
                    self.in_channels,
                    64,
                    false,
                    &stages,
                    ShortcutKind::B,
                    classes,
                )
            }
            Family::ImageNet {
                bottleneck: false,
                layers,
            } => {
                let stages = stages_of([64, 128, 256, 512], layers);
                basic_network(
                    self.in_channels,
                    64,
                    true,
                    &stages,
                    ShortcutKind::B,
                    classes,
                )
            }
            Family::ImageNet {
                bottleneck: true,
                layers,
            } => bottleneck_network(self.in_channels, layers, classes),
        }
    }

    /// The known model whose parameters have exactly `shapes`' names and
    /// shapes, for a file without model metadata: every CIFAR depth its
    /// `layer1` allows, the wide CIFAR and the ImageNet models, with either
    /// shortcut and with or without conv biases. A file without running
    /// statistics gets `group_norm` (its groups are not in the file).
    pub fn matching(shapes: &HashMap<String, Vec<usize>>, group_norm: Norm) -> Option<ModelSpec> {
        let classes = *shapes.get("fc.weight")?.first()?;
        let norm = match shapes.contains_key("bn1.running_mean") {
            true => Norm::Batch,
            false => group_norm,
        };
        let blocks = (0..)
            .take_while(|i| shapes.contains_key(&format!("layer1.{i}.conv1.weight")))
            .count();
        let cifar = format!("resnet{}", 6 * blocks + 2);
        let names = [
            cifar.as_str(),
            "resnet18-cifar",
            "resnet18",
            "resnet34",
            "resnet50",
        ];
        let names = names.into_iter().chain(["resnet101", "resnet152"]);
        let candidates = names.flat_map(|name| {
            [ShortcutKind::A, ShortcutKind::B]
                .into_iter()
                .flat_map(move |shortcut| [false, true].map(|bias| (name, shortcut, bias)))
        });
        candidates
            .filter_map(|(name, shortcut, bias)| {
                ModelSpec::new(name, shortcut, classes)
                    .and_then(|spec| spec.with_layers(norm, bias))
                    .ok()
            })
            .find(|spec| {
                let entries = spec.network().state_entries();
                entries.len() == shapes.len()
                    && entries
                        .iter()
                        .all(|e| shapes.get(&e.name) == Some(&e.shape))
            })
    }

    /// Whether the model is made for 32x32 images (CIFAR) rather than 224x224.
    pub fn is_cifar(&self) -> bool {
        !matches!(self.family, Family::ImageNet { .. })
    }

    /// The image side the model is made for: 32 (CIFAR) or 224.
    pub fn native_side(&self) -> usize {
        if self.is_cifar() { 32 } else { 224 }
    }
}

fn gcd(a: usize, b: usize) -> usize {
    if b == 0 { a } else { gcd(b, a % b) }
}

impl fmt::Display for ModelSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.name)?;
        let mut notes = vec![];
        if matches!(self.family, Family::Cifar { .. }) {
            notes.push(format!("shortcut {:?}", self.shortcut));
        }
        if self.norm != Norm::Batch {
            notes.push(self.norm.to_string());
        }
        if self.conv_bias {
            notes.push("conv bias".into());
        }
        if !notes.is_empty() {
            write!(f, " ({})", notes.join(", "))?;
        }
        Ok(())
    }
}

fn family(name: &str) -> Result<Family, String> {
    let unknown = || format!("unknown model '{name}'; known: {NAMED_MODELS}");
    let imagenet = |bottleneck, layers| Family::ImageNet { bottleneck, layers };
    Ok(match name {
        "resnet18-cifar" => Family::CifarWide {
            layers: [2, 2, 2, 2],
        },
        "resnet18" => imagenet(false, [2, 2, 2, 2]),
        "resnet34" => imagenet(false, [3, 4, 6, 3]),
        "resnet50" => imagenet(true, [3, 4, 6, 3]),
        "resnet101" => imagenet(true, [3, 4, 23, 3]),
        "resnet152" => imagenet(true, [3, 8, 36, 3]),
        _ => {
            let depth: usize = name
                .strip_prefix("resnet")
                .and_then(|d| d.parse().ok())
                .ok_or_else(unknown)?;
            if depth > MAX_CIFAR_DEPTH {
                return Err(format!(
                    "'{name}': the deepest CIFAR ResNet is resnet{MAX_CIFAR_DEPTH} (the paper's), not {depth} layers"
                ));
            }
            if depth < 8 || (depth - 2) % 6 != 0 {
                return Err(format!(
                    "'{name}': CIFAR ResNets have 6n+2 layers (8, 14, 20, ...), not {depth}; known: {NAMED_MODELS}"
                ));
            }
            Family::Cifar { n: (depth - 2) / 6 }
        }
    })
}

/// What a named tensor of the state dict is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TensorRole {
    ConvWeight,
    ConvBias,
    /// The affine scale and shift of a batch or group norm.
    NormWeight,
    NormBias,
    FcWeight,
    FcBias,
    RunningMean,
    RunningVar,
    /// i64 scalar in PyTorch's state dict.
    BatchesTracked,
}

impl TensorRole {
    /// Trained by SGD (the rest are batch-norm buffers).
    pub fn is_parameter(self) -> bool {
        !matches!(
            self,
            TensorRole::RunningMean | TensorRole::RunningVar | TensorRole::BatchesTracked
        )
    }
}

/// One entry of the state dict: torchvision name, shape and role.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StateEntry {
    pub name: String,
    pub shape: Vec<usize>,
    pub role: TensorRole,
}

impl ConvBnSpec {
    /// This unit's state-dict entries in torchvision's order and names: the
    /// one place they are named (the plan allocates from this list).
    pub fn state_entries(&self) -> Vec<StateEntry> {
        let entry = |name: String, shape: Vec<usize>, role| StateEntry { name, shape, role };
        let (conv, norm) = (&self.conv, &self.bn);
        let c = vec![self.out_c];
        let mut out = vec![entry(
            format!("{conv}.weight"),
            vec![self.out_c, self.in_c, self.kernel, self.kernel],
            TensorRole::ConvWeight,
        )];
        if self.bias {
            out.push(entry(
                format!("{conv}.bias"),
                c.clone(),
                TensorRole::ConvBias,
            ));
        }
        out.push(entry(
            format!("{norm}.weight"),
            c.clone(),
            TensorRole::NormWeight,
        ));
        out.push(entry(
            format!("{norm}.bias"),
            c.clone(),
            TensorRole::NormBias,
        ));
        if self.norm == Norm::Batch {
            out.push(entry(
                format!("{norm}.running_mean"),
                c.clone(),
                TensorRole::RunningMean,
            ));
            out.push(entry(
                format!("{norm}.running_var"),
                c,
                TensorRole::RunningVar,
            ));
            out.push(entry(
                format!("{norm}.num_batches_tracked"),
                vec![],
                TensorRole::BatchesTracked,
            ));
        }
        out
    }
}

impl Network {
    /// Every conv/BN unit in forward order, shortcut projections after their block's units.
    pub fn units(&self) -> impl Iterator<Item = &ConvBnSpec> {
        std::iter::once(&self.stem).chain(self.blocks.iter().flat_map(|b| {
            b.units.iter().chain(match &b.shortcut {
                Shortcut::Projection(p) => Some(p),
                _ => None,
            })
        }))
    }

    fn for_each_unit(&mut self, mut f: impl FnMut(&mut ConvBnSpec)) {
        f(&mut self.stem);
        for block in &mut self.blocks {
            block.units.iter_mut().for_each(&mut f);
            if let Shortcut::Projection(p) = &mut block.shortcut {
                f(p);
            }
        }
    }

    /// The state dict in torchvision's order and names.
    pub fn state_entries(&self) -> Vec<StateEntry> {
        let entry = |name: String, shape: Vec<usize>, role| StateEntry { name, shape, role };
        let mut out: Vec<StateEntry> = self.units().flat_map(ConvBnSpec::state_entries).collect();
        out.push(entry(
            "fc.weight".into(),
            vec![self.num_classes, self.features],
            TensorRole::FcWeight,
        ));
        out.push(entry(
            "fc.bias".into(),
            vec![self.num_classes],
            TensorRole::FcBias,
        ));
        out
    }

    /// Trainable parameter count.
    pub fn parameter_count(&self) -> usize {
        self.state_entries()
            .iter()
            .filter(|e| e.role.is_parameter())
            .map(|e| e.shape.iter().product::<usize>())
            .sum()
    }

    /// Conv layers counted as the paper counts depth (every conv on the main path
    /// plus the fc).
    pub fn depth(&self) -> usize {
        1 + self.blocks.iter().map(|b| b.units.len()).sum::<usize>() + 1
    }
}
