//! `predict`: the top classes of image files under a checkpoint (blocking,
//! for the command line).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Result, bail};

use super::{ClassProbability, ModelCard, most_likely, prediction_trainer};
use crate::data::load_image;
use crate::gpu::{GpuContext, Precision};
use crate::run_folder;
use crate::train::TrainEvent;
use crate::train::checkpoint::{self, LoadMode, StateDict};

/// Images per GPU batch.
const CHUNK: usize = 64;

/// One image's most likely classes, most likely first.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Prediction {
    pub image: PathBuf,
    pub top: Vec<ClassProbability>,
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
    let card = ModelCard::of_file(&dict, &model_path)?;
    if let Some(note) = &card.assumed {
        eprintln!("note: {note}");
    }
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
    let numel = 3 * card.side * card.side;
    let mut images = Vec::with_capacity(paths.len() * numel);
    for path in paths {
        images.extend(load_image(path, card.side, card.eval_crop)?);
    }
    // Padded to the smallest evaluation batch with the last picture again.
    let batch = paths.len().max(crate::train::trainer::MIN_EVAL_BATCH);
    images.extend_from_within(images.len() - numel * (batch - paths.len())..);
    let mut trainer = prediction_trainer(ctx.clone(), card, images, batch, Precision::F32)?;
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
