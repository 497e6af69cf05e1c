//! The run folder shared by every native front end: runs/<name>/ holds
//! config.json, metrics.jsonl (one line per evaluation) and checkpoints/, so a
//! run started in the window can be resumed in the terminal and the other way
//! round.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, bail};

use crate::cli::TrainArgs;
use crate::gpu::GpuContext;
use crate::train::checkpoint::{self, LoadMode, StateDict};
use crate::train::{EpochReport, Trainer};

/// metrics.jsonl of a run, opened for appending (a resumed run continues it).
pub struct MetricsLog {
    path: PathBuf,
    file: std::fs::File,
}

impl MetricsLog {
    pub fn open(run_dir: &Path) -> Result<Self> {
        let path = run_dir.join("metrics.jsonl");
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        Ok(MetricsLog { path, file })
    }

    pub fn append(&mut self, report: &EpochReport) -> Result<()> {
        writeln!(self.file, "{}", serde_json::to_string(report)?)
            .and_then(|()| self.file.flush())
            .with_context(|| format!("writing {}", self.path.display()))
    }
}

/// Builds the trainer for `args` (new, --init or --resume) and its run folder.
pub fn prepare(ctx: Arc<GpuContext>, args: &TrainArgs) -> Result<(Trainer, PathBuf)> {
    if let Some(resume) = &args.resume {
        return resume_run(ctx, args, resume);
    }
    let data = args.data.load(args.seed)?;
    let config = args.config(&data)?;
    let name = args
        .name
        .clone()
        .unwrap_or_else(|| default_name(&config.model.name, args));
    let run_dir = args.out.join(name);
    if run_dir.join("checkpoints").exists() {
        bail!(
            "{} already holds a run; pass --resume {} to continue it or --name for a new one",
            run_dir.display(),
            run_dir.display()
        );
    }
    std::fs::create_dir_all(&run_dir).with_context(|| format!("creating {}", run_dir.display()))?;
    let mut trainer = Trainer::new(ctx, config, data)?;
    if let Some(init) = &args.init {
        let path = model_file(init)?;
        let dict = StateDict::read(&path)?;
        let skipped = checkpoint::load_model(&mut trainer, &dict, &path, LoadMode::Init)?;
        if !skipped.is_empty() {
            eprintln!(
                "--init: kept the new classifier ({}): its class count differs",
                skipped.join(", ")
            );
        }
    }
    let json = serde_json::to_string_pretty(&trainer.config)?;
    checkpoint::write_atomically(&run_dir.join("config.json"), json.as_bytes())?;
    Ok((trainer, run_dir))
}

fn default_name(model: &str, args: &TrainArgs) -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    format!("{model}-{:?}-{secs}", args.data.kind()).to_lowercase()
}

/// A model.safetensors path from a file or checkpoint/run folder.
pub fn model_file(path: &Path) -> Result<PathBuf> {
    if path.is_file() {
        return Ok(path.to_path_buf());
    }
    Ok(checkpoint::resolve(path)?.join(checkpoint::MODEL_FILE))
}

fn resume_run(ctx: Arc<GpuContext>, args: &TrainArgs, resume: &Path) -> Result<(Trainer, PathBuf)> {
    let dir = checkpoint::resolve(resume)?;
    let (mut config, progress, momenta) = checkpoint::read_trainer_state(&dir)?;
    let data = args.data.load(config.seed)?;
    if data.name != config.dataset {
        bail!(
            "{}: the run trained on '{}', but the data given is '{}'; pass the same --dataset/--data",
            dir.display(),
            config.dataset,
            data.name
        );
    }
    if let Some(epochs) = args.epochs.filter(|&e| e > config.epochs) {
        config.epochs = epochs;
        config.schedule.epochs = epochs;
    }
    config.max_steps = args.max_steps;
    let mut trainer = Trainer::new(ctx, config, data)?;
    let model_path = dir.join(checkpoint::MODEL_FILE);
    let dict = StateDict::read(&model_path)?;
    checkpoint::load_model(&mut trainer, &dict, &model_path, LoadMode::Strict)?;
    checkpoint::load_momenta(&trainer, &momenta, &dir.join(checkpoint::TRAINER_FILE))?;
    trainer.set_progress(progress);
    // The run folder is two levels up from checkpoints/step-N.
    let run_dir = dir
        .parent()
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .unwrap_or_else(|| dir.clone());
    Ok((trainer, run_dir))
}

/// The evaluations a run folder has recorded (none for a new run).
pub fn read_metrics(run_dir: &Path) -> Result<Vec<EpochReport>> {
    let path = run_dir.join("metrics.jsonl");
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(vec![]),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    text.lines()
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty())
        .map(|(i, line)| {
            serde_json::from_str(line)
                .with_context(|| format!("{} line {}: not a metrics record", path.display(), i + 1))
        })
        .collect()
}
