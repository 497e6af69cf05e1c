//! `eval`: a checkpoint's loss and accuracy on a dataset's evaluation set,
//! building the model and preparing the images as its run did (or, for a
//! file of another tool, as its metadata, the flags or its tensors say).

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use clap::Args;

use super::{DataArgs, ModelArgs, settings_of_flags};
use crate::data::{DataSource, DataSplit, DatasetKind};
use crate::gpu::GpuContext;
use crate::model::ModelSpec;
use crate::run_folder;
use crate::settings::{ModelSettings, Normalize};
use crate::shapes::AugmentConfig;
use crate::train::checkpoint::{self, LoadMode, StateDict};
use crate::train::{TrainConfig, TrainEvent, Trainer};

#[derive(Args)]
pub struct EvalArgs {
    /// A run folder, a checkpoint folder or a model.safetensors file.
    #[arg(long)]
    pub checkpoint: PathBuf,
    #[command(flatten)]
    pub data: DataArgs,
    /// The architecture, for files not written by this tool (torchvision's).
    #[command(flatten)]
    pub model: ModelArgs,
    #[arg(long, default_value_t = 128, value_parser = crate::cli::whole::<usize>())]
    pub batch_size: usize,
    /// Print one JSON object: {"loss", "accuracy", "samples", ...}.
    #[arg(long)]
    pub json: bool,
    /// For files without a run config: the normalization (see `train --help`)
    /// [default: the file's own, imagenet for other tools' files].
    #[arg(long, value_name = "cifar|imagenet|dataset|M,M,M,S,S,S", value_parser = Normalize::parse)]
    pub normalize: Option<Normalize>,
    /// The flags given on the command line (filled in main).
    #[arg(skip)]
    pub given: std::collections::BTreeSet<String>,
}

pub fn eval(ctx: Arc<GpuContext>, args: &EvalArgs) -> Result<()> {
    if args.batch_size == 0 {
        bail!("--batch-size must be at least 1");
    }
    let model_path = run_folder::model_file(&args.checkpoint)?;
    let dict = StateDict::read(&model_path)?;
    // A checkpoint of this tool has its run config (normalization) beside it.
    let saved = model_path
        .parent()
        .filter(|dir| dir.join(checkpoint::TRAINER_FILE).is_file())
        .map(checkpoint::read_trainer_state)
        .transpose()?;
    let saved_config = saved.as_ref().map(|(c, _, _)| c);
    let data = eval_data(args, saved_config)?;
    let model = eval_model(args, &dict, &model_path, saved_config, data.train.classes())?;
    let file_normalization = checkpoint::normalization_in(&dict.metadata)
        .map_err(|e| anyhow::anyhow!("{}: {e}", model_path.display()))?;
    // The run's own normalization, else the file's, else --normalize (by
    // default torchvision's for files of other tools, the CIFAR or dataset
    // rule otherwise).
    let (mean, std) = match (saved_config, file_normalization) {
        (Some(c), _) => c.augment.rgb_normalization(),
        (None, Some(saved)) if args.normalize.is_none() => saved,
        _ => {
            let ours = dict
                .metadata
                .get("format")
                .is_some_and(|f| f == "resnet-wgpu");
            let default = Normalize::default_for(args.data.settings().source()?.kind, !ours);
            args.normalize.clone().unwrap_or(default).values(&data)
        }
    };
    let augment = AugmentConfig::normalize_only(mean, std);
    let config = TrainConfig {
        max_steps: Some(0),
        ..TrainConfig::one_epoch(
            model,
            &data.name,
            args.batch_size
                .max(crate::train::trainer::MIN_EVAL_BATCH)
                .min(data.train.len())
                .max(1),
            0.0,
            augment,
        )
    };
    let samples = data.test.len();
    let mut trainer = Trainer::new(ctx, config, data)?;
    checkpoint::load_model(&mut trainer, &dict, &model_path, LoadMode::Strict)?;
    trainer.submit_eval();
    let report = 'wait: loop {
        trainer.wait_for_report()?;
        for event in trainer.poll()? {
            match event {
                TrainEvent::Epoch(e) => break 'wait e,
                TrainEvent::Diverged { loss, .. } => bail!(
                    "{}: the {} loss is {loss}; the model does not compute finite outputs",
                    model_path.display(),
                    trainer.eval_name()
                ),
                _ => {}
            }
        }
    };
    if args.json {
        let out = serde_json::json!({
            "loss": report.test_loss,
            "accuracy": report.test_acc,
            "samples": samples,
            "set": trainer.eval_name(),
            "checkpoint": model_path.display().to_string(),
            "model": trainer.config.model.name,
        });
        out!("{out}");
    } else {
        out!(
            "{}: {} loss {:.4}, accuracy {:.2}% on {samples} images",
            model_path.display(),
            trainer.eval_name(),
            report.test_loss,
            100.0 * report.test_acc
        );
    }
    Ok(())
}

/// The model `eval` builds for a file: its metadata's, else its run's (a
/// trainer.safetensors beside it), else the model flags when given, else the
/// known model whose tensors the file holds (it built the default model and
/// blamed the file's layers).
fn eval_model(
    args: &EvalArgs,
    dict: &StateDict,
    path: &std::path::Path,
    saved: Option<&TrainConfig>,
    classes: usize,
) -> Result<ModelSpec> {
    if let Some(json) = dict.metadata.get(checkpoint::META_MODEL) {
        return serde_json::from_str::<ModelSpec>(json)
            .with_context(|| format!("{}: unreadable model metadata", path.display()));
    }
    if let Some(config) = saved {
        return Ok(config.model.clone());
    }
    let given = settings_of_flags(&args.given);
    if ModelSettings::SETTINGS.iter().any(|s| given.contains(s)) {
        return args.model.settings().spec(classes);
    }
    let shapes = dict
        .tensors
        .iter()
        .map(|(name, (shape, _))| (name.clone(), shape.clone()))
        .collect();
    let group_norm = crate::model::Norm::Group {
        groups: args.model.groups,
    };
    let Some(model) = ModelSpec::matching(&shapes, group_norm) else {
        bail!(
            "{}: no model metadata (not written by this tool?), and its tensors are none of \
             the models known here ({}); name its model with --model, --shortcut, --norm and \
             --conv-bias",
            path.display(),
            crate::model::NAMED_MODELS
        );
    };
    eprintln!(
        "note: {} has no model metadata; its tensors are those of {model} (--model and its \
         flags name another)",
        path.display()
    );
    Ok(model)
}

/// The data `eval` runs on: the run's own (moved to `--data` if given) unless
/// other data flags pick other data, which is said.
fn eval_data(args: &EvalArgs, saved: Option<&TrainConfig>) -> Result<DataSplit> {
    let seed = saved.map_or(0, |c| c.seed);
    let data_settings = args.data.settings();
    let Some(source) = saved.and_then(|c| c.source.as_ref()) else {
        return data_settings.load(seed);
    };
    let mut other = data_settings.contradictions(source, &settings_of_flags(&args.given));
    // --data names other data when it holds another format than the run's
    // (or the run trained on the built-in set), or is not there at all.
    if let Some(dir) = &args.data.data {
        let same_format = source.kind != DatasetKind::Synthetic
            && DataSource::detect(dir).is_ok_and(|kind| kind == source.kind);
        if !same_format {
            other.push(format!("--data {}", dir.display()));
        }
    }
    if !other.is_empty() {
        eprintln!(
            "note: evaluating on the data the flags pick ({}), not the run's own",
            other.join(", ")
        );
        return data_settings.load(seed);
    }
    let data = crate::settings::load_source(&data_settings.relocate(source), seed)
        .context("loading the run's data (pass --data if it moved)")?;
    let differs = saved
        .and_then(|c| c.data.as_ref())
        .and_then(|id| id.difference(&data.identity()));
    if let Some(how) = differs {
        eprintln!("note: the data at --data differs from what the run trained on ({how})");
    }
    Ok(data)
}
