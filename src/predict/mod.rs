//! Predictions: the top classes of pictures under a model, prepared as its
//! run prepared images (size, crop, normalization) from the model file's
//! metadata. `files` is the command line's `predict` over image files;
//! `live` predicts without blocking from a running session or an opened
//! file (the browser's dropped pictures and camera frames).

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result, bail};

use crate::data::{DataSplit, Dataset, EvalSet, IMAGE_SIDES};
use crate::gpu::{GpuContext, Precision};
use crate::model::{ModelSpec, Norm};
use crate::settings::Normalize;
use crate::shapes::{AugmentConfig, ImageShape};
use crate::train::checkpoint::{self, StateDict};
use crate::train::{TrainConfig, Trainer};

#[cfg(not(target_arch = "wasm32"))]
mod files;
mod live;

#[cfg(not(target_arch = "wasm32"))]
pub use files::{Prediction, predict};
pub use live::Predictor;

#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct ClassProbability {
    pub class: String,
    pub probability: f32,
}

/// What a model file says about its inputs and outputs.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelCard {
    pub spec: ModelSpec,
    pub side: usize,
    /// The evaluation center crop's share of the resized shorter side.
    pub eval_crop: f64,
    pub mean: [f32; 3],
    pub std: [f32; 3],
    pub class_names: Vec<String>,
    /// What was assumed for a file without this tool's metadata, said to the user.
    pub assumed: Option<String>,
}

impl ModelCard {
    /// The card of a model file: its metadata's, or, for a file of another
    /// tool (torchvision's state dict), the known model its tensors spell,
    /// prepared as torchvision evaluates (ImageNet normalization; 224 with a
    /// 0.875 center crop for ImageNet models, 32 whole for CIFAR ones).
    pub fn of_file(dict: &StateDict, path: &Path) -> Result<Self> {
        if dict.metadata.contains_key(checkpoint::META_MODEL) {
            return Self::from_metadata(&dict.metadata, path);
        }
        let spec = spec_of_tensors(dict, path)?;
        let (side, eval_crop) = match spec.is_cifar() {
            true => (32, 1.0),
            false => (224, crate::data::transform::EVAL_CROP),
        };
        let (mean, std) = Normalize::IMAGENET;
        Ok(ModelCard {
            assumed: Some(format!(
                "{} has no metadata of this tool: its tensors are {spec}'s; pictures are prepared \
                 as torchvision evaluates ({side}x{side}, ImageNet normalization) and classes \
                 are numbered",
                path.display()
            )),
            class_names: numbered_classes(spec.num_classes),
            spec,
            side,
            eval_crop,
            mean,
            std,
        })
    }

    /// The card the metadata of a model file of this tool spells (a running
    /// session's: `checkpoint::model_metadata`).
    pub fn from_metadata(meta: &HashMap<String, String>, path: &Path) -> Result<Self> {
        let spec: ModelSpec = meta
            .get(checkpoint::META_MODEL)
            .with_context(|| format!("{}: no model metadata", path.display()))
            .and_then(|json| {
                serde_json::from_str(json)
                    .with_context(|| format!("{}: unreadable model metadata", path.display()))
            })?;
        let normalization = checkpoint::normalization_in(meta)
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        let (mean, std) = normalization.with_context(|| {
            format!(
                "{}: no normalization in its metadata (written before predict existed); \
                 evaluate it with eval, or resume it for one step to rewrite it",
                path.display()
            )
        })?;
        let side = meta
            .get(checkpoint::META_IMAGE)
            .and_then(|v| serde_json::from_str::<[usize; 2]>(v).ok())
            .map_or(spec.native_side(), |[h, _]| h);
        // Checked like --image-size: 0 divided by zero, 100000 aborted an allocation.
        if !IMAGE_SIDES.contains(&side) {
            bail!(
                "{}: its metadata's {} is {side}, outside {} to {}",
                path.display(),
                checkpoint::META_IMAGE,
                IMAGE_SIDES.start(),
                IMAGE_SIDES.end()
            );
        }
        let eval_crop = meta
            .get(checkpoint::META_EVAL_CROP)
            .and_then(|v| v.parse::<f64>().ok())
            .filter(|c| *c > 0.0 && *c <= 1.0)
            .unwrap_or(1.0);
        let class_names = meta
            .get(checkpoint::META_CLASSES)
            .and_then(|v| serde_json::from_str::<Vec<String>>(v).ok())
            .filter(|names| names.len() == spec.num_classes)
            .unwrap_or_else(|| numbered_classes(spec.num_classes));
        Ok(ModelCard {
            spec,
            side,
            eval_crop,
            mean,
            std,
            class_names,
            assumed: None,
        })
    }

    /// The card of the model a trainer trains (what its saved file would say).
    pub fn of_trainer(trainer: &Trainer) -> Result<Self> {
        Self::from_metadata(
            &checkpoint::model_metadata(trainer),
            Path::new("the running model"),
        )
    }
}

/// The known model whose names and shapes a file's tensors spell (group-norm
/// files get 8 groups, which a file cannot tell).
pub fn spec_of_tensors(dict: &StateDict, path: &Path) -> Result<ModelSpec> {
    let shapes = dict
        .tensors
        .iter()
        .map(|(name, (shape, _))| (name.clone(), shape.clone()))
        .collect();
    ModelSpec::matching(&shapes, Norm::Group { groups: 8 }).with_context(|| {
        format!(
            "{}: no model metadata (not written by this tool?), and its tensors are none of the \
             models known here ({})",
            path.display(),
            crate::model::NAMED_MODELS
        )
    })
}

/// An evaluation-only trainer for `card`'s model over `images` (CHW bytes
/// of `batch` pictures of the card's size, prepared as its run prepared
/// them), with He-initialized weights: load or copy the model's next.
pub(crate) fn prediction_trainer(
    ctx: Arc<GpuContext>,
    card: &ModelCard,
    images: Vec<u8>,
    batch: usize,
    precision: Precision,
) -> Result<Trainer> {
    let shape = ImageShape {
        channels: 3,
        height: card.side,
        width: card.side,
    };
    let set = Dataset {
        images,
        labels: vec![0; batch],
        shape,
        class_names: card.class_names.clone(),
        files: None,
    };
    let data = DataSplit {
        name: "pictures to predict".into(),
        train: set.clone(),
        test: set,
        eval_set: EvalSet::Given,
    };
    let augment = AugmentConfig::normalize_only(card.mean, card.std);
    let config = TrainConfig {
        max_steps: Some(0),
        precision,
        ..TrainConfig::one_epoch(card.spec.clone(), "predict", batch, 0.0, augment)
    };
    Ok(Trainer::new(ctx, config, data)?)
}

fn numbered_classes(count: usize) -> Vec<String> {
    (0..count).map(|c| format!("class {c}")).collect()
}

/// Softmax of one row of logits (in f64), the `top` largest first.
pub fn most_likely(row: &[f32], names: &[String], top: usize) -> Vec<ClassProbability> {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let exp: Vec<f64> = row.iter().map(|&v| (v as f64 - max).exp()).collect();
    let sum: f64 = exp.iter().sum();
    let mut order: Vec<usize> = (0..row.len()).collect();
    order.sort_by(|&a, &b| exp[b].total_cmp(&exp[a]));
    order
        .into_iter()
        .take(top.max(1))
        .map(|c| ClassProbability {
            class: names[c].clone(),
            probability: (exp[c] / sum) as f32,
        })
        .collect()
}

/// A model file opened from memory (the browser's Open model, or its kept
/// copy): its tensors and card, to predict with or to start a run from.
pub struct OpenedModel {
    /// The file's name, which messages name.
    pub name: String,
    pub dict: StateDict,
    pub card: ModelCard,
}

impl OpenedModel {
    /// Reads a safetensors file's bytes; refuses what is not one, and a file
    /// whose model cannot be told (no metadata, tensors of no known model).
    pub fn from_bytes(name: &str, bytes: &[u8]) -> Result<Self> {
        let path = Path::new(name);
        let dict = StateDict::from_bytes(bytes, path)?;
        let card = ModelCard::of_file(&dict, path)?;
        Ok(OpenedModel {
            name: name.to_string(),
            dict,
            card,
        })
    }

    /// The settings that build this model, for a run that starts from it.
    pub fn model_settings(&self) -> crate::settings::ModelSettings {
        let spec = &self.card.spec;
        let (norm, groups) = match spec.norm {
            Norm::Batch => (crate::settings::NormChoice::Batch, 8),
            Norm::Group { groups } => (crate::settings::NormChoice::Group, groups),
        };
        crate::settings::ModelSettings {
            name: spec.name.clone(),
            shortcut: spec.shortcut,
            norm,
            groups,
            conv_bias: spec.conv_bias,
        }
    }

    /// The normalization a run from this model keeps (`--init`'s rule: the
    /// file's own).
    pub fn normalize(&self) -> Normalize {
        Normalize::Values(self.card.mean, self.card.std)
    }

    /// Loads the file into a trainer built for a run from it: as `--init`
    /// does, a classifier for another class count stays fresh (returned).
    pub fn init(&self, trainer: &mut Trainer) -> Result<Vec<String>> {
        Ok(checkpoint::load_model(
            trainer,
            &self.dict,
            Path::new(&self.name),
            checkpoint::LoadMode::Init,
        )?)
    }
}
