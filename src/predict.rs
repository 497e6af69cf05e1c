//! `predict`: the top classes of image files under a checkpoint, prepared
//! as its run prepared images (size, normalization), from the checkpoint's
//! own metadata.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, bail};

use crate::data::{DataSplit, Dataset, IMAGE_SIDES, load_image};
use crate::gpu::GpuContext;
use crate::model::ModelSpec;
use crate::run_folder;
use crate::shapes::{AugmentConfig, ImageShape};
use crate::train::checkpoint::{self, LoadMode, StateDict};
use crate::train::{TrainConfig, TrainEvent, Trainer};

/// Images per GPU batch.
const CHUNK: usize = 64;

/// One image's most likely classes, most likely first.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Prediction {
    pub image: PathBuf,
    pub top: Vec<ClassProbability>,
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct ClassProbability {
    pub class: String,
    pub probability: f32,
}

/// What a checkpoint says about its inputs and outputs.
struct ModelCard {
    spec: ModelSpec,
    side: usize,
    /// The evaluation center crop's share of the resized shorter side.
    eval_crop: f64,
    mean: [f32; 3],
    std: [f32; 3],
    class_names: Vec<String>,
}

impl ModelCard {
    fn read(dict: &StateDict, path: &Path) -> Result<Self> {
        let meta = &dict.metadata;
        let spec: ModelSpec = meta
            .get(checkpoint::META_MODEL)
            .with_context(|| {
                format!(
                    "{}: no model metadata; predict needs a checkpoint written by this tool",
                    path.display()
                )
            })
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
            .map_or(if spec.is_cifar() { 32 } else { 224 }, |[h, _]| h);
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
            .unwrap_or_else(|| {
                (0..spec.num_classes)
                    .map(|c| format!("class {c}"))
                    .collect()
            });
        Ok(ModelCard {
            spec,
            side,
            eval_crop,
            mean,
            std,
            class_names,
        })
    }
}

/// The `top` most likely classes of each image under the checkpoint at
/// `checkpoint` (a run folder, checkpoint folder or model file).
pub fn predict(
    ctx: Arc<GpuContext>,
    checkpoint: &Path,
    images: &[PathBuf],
    top: usize,
) -> Result<Vec<Prediction>> {
    if images.is_empty() {
        bail!("predict: name at least one image file");
    }
    let model_path = run_folder::model_file(checkpoint)?;
    let dict = StateDict::read(&model_path)?;
    let card = ModelCard::read(&dict, &model_path)?;
    let mut out = vec![];
    for chunk in images.chunks(CHUNK) {
        let logits = logits(&ctx, &card, &dict, &model_path, chunk)?;
        for (path, row) in chunk.iter().zip(logits.chunks_exact(card.spec.num_classes)) {
            out.push(Prediction {
                image: path.clone(),
                top: most_likely(row, &card.class_names, top),
            });
        }
    }
    Ok(out)
}

/// The model's logits for `paths` (one evaluation batch).
fn logits(
    ctx: &Arc<GpuContext>,
    card: &ModelCard,
    dict: &StateDict,
    model_path: &Path,
    paths: &[PathBuf],
) -> Result<Vec<f32>> {
    let shape = ImageShape {
        channels: 3,
        height: card.side,
        width: card.side,
    };
    let mut images = Vec::with_capacity(paths.len() * shape.numel());
    for path in paths {
        images.extend(load_image(path, card.side, card.eval_crop)?);
    }
    // Padded to the smallest evaluation batch with the last picture again.
    let batch = paths.len().max(crate::train::trainer::MIN_EVAL_BATCH);
    images.extend_from_within(images.len() - shape.numel() * (batch - paths.len())..);
    let set = Dataset {
        images,
        labels: vec![0; batch],
        shape,
        class_names: card.class_names.clone(),
        files: None,
    };
    let data = DataSplit {
        name: "images to predict".into(),
        train: set.clone(),
        test: set,
        eval_set: crate::data::EvalSet::Given,
    };
    let augment = AugmentConfig::normalize_only(card.mean, card.std);
    let config = TrainConfig {
        max_steps: Some(0),
        ..TrainConfig::one_epoch(card.spec.clone(), "predict", batch, 0.0, augment)
    };
    let mut trainer = Trainer::new(ctx.clone(), config, data)?;
    checkpoint::load_model(&mut trainer, dict, model_path, LoadMode::Strict)?;
    trainer.submit_eval();
    'wait: loop {
        trainer.wait_for_report()?;
        for event in trainer.poll()? {
            match event {
                TrainEvent::Epoch(_) => break 'wait,
                TrainEvent::Diverged { .. } => bail!(
                    "{}: the model does not compute finite outputs on these images",
                    model_path.display()
                ),
                _ => {}
            }
        }
    }
    let plan = trainer.plan();
    let mut logits = plan.tensor(plan.logits).read_f32(ctx)?;
    logits.truncate(paths.len() * card.spec.num_classes);
    Ok(logits)
}

/// Softmax of one row of logits (in f64), the `top` largest first.
fn most_likely(row: &[f32], names: &[String], top: usize) -> Vec<ClassProbability> {
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
