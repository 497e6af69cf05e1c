//! The terminal front end: drives the trainer, shows a progress bar, writes
//! runs/<name>/ (config.json, metrics.jsonl, checkpoints).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use indicatif::{ProgressBar, ProgressStyle};

use crate::cli::TrainArgs;
use crate::gpu::GpuContext;
use crate::train::checkpoint::{self, LoadMode, StateDict};
use crate::train::{EpochReport, TrainEvent, Trainer};

/// What a finished run leaves behind.
#[derive(Debug)]
pub struct RunSummary {
    pub run_dir: PathBuf,
    pub last: Option<EpochReport>,
    pub checkpoint: Option<PathBuf>,
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

/// Trains to the end with a progress bar; checkpoints after every epoch and at
/// the end. A NaN/inf loss stops the run with an error and keeps the last good
/// checkpoint.
pub fn run(trainer: &mut Trainer, run_dir: &Path, quiet: bool) -> Result<RunSummary> {
    let total = trainer.total_steps();
    let bar = if quiet {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(total)
    };
    bar.set_style(
        ProgressStyle::with_template(
            "{bar:30} {pos}/{len} steps [{elapsed_precise}<{eta_precise}] {msg}",
        )
        .expect("valid template"),
    );
    bar.set_position(trainer.progress().global_step);
    let metrics_path = run_dir.join("metrics.jsonl");
    let mut metrics_file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&metrics_path)
        .with_context(|| format!("opening {}", metrics_path.display()))?;
    // Stay at most two reports ahead of the GPU: enough to keep it busy.
    let max_in_flight = 2 * trainer.config.report_every as u64 + 1;
    let mut summary = RunSummary {
        run_dir: run_dir.to_path_buf(),
        last: None,
        checkpoint: None,
    };
    let mut waiting_for_epoch = false;
    let mut rate = Throughput::default();
    loop {
        if !waiting_for_epoch && !trainer.is_finished() && trainer.steps_in_flight() < max_in_flight
        {
            let before = trainer.progress();
            trainer.submit_steps(1)?;
            let after = trainer.progress();
            bar.set_position(after.global_step);
            waiting_for_epoch = after.epoch != before.epoch || trainer.is_finished();
            continue;
        }
        for event in trainer.poll()? {
            match event {
                TrainEvent::Step(s) => {
                    let ips = rate.update(s.step, trainer.config.batch_size);
                    bar.set_message(format!(
                        "loss {:.3} acc {:.1}% lr {:.4} {:.1} img/s",
                        s.train_loss,
                        100.0 * s.train_acc,
                        s.lr,
                        ips
                    ));
                }
                TrainEvent::Epoch(e) => {
                    writeln!(metrics_file, "{}", serde_json::to_string(&e)?)?;
                    metrics_file.flush()?;
                    bar.println(format!(
                        "epoch {:>6.2}  train loss {:.4} acc {:.2}%  {} loss {:.4} acc {:.2}%  lr {:.4}  {:.1} img/s",
                        e.epoch,
                        e.train_loss,
                        100.0 * e.train_acc,
                        trainer.eval_name(),
                        e.test_loss,
                        100.0 * e.test_acc,
                        e.lr,
                        e.images_per_sec
                    ));
                    summary.last = Some(e);
                }
                TrainEvent::Diverged { step, loss } => {
                    bar.abandon();
                    let kept = summary
                        .checkpoint
                        .as_ref()
                        .map_or("no checkpoint was written yet".to_string(), |c| {
                            format!("the last good checkpoint is {}", c.display())
                        });
                    bail!(
                        "the loss became {loss} at step {step}; training stopped ({kept}). Try a lower --lr or a warm-up."
                    );
                }
            }
        }
        if trainer.is_finished() && trainer.is_idle() && !waiting_for_epoch {
            break;
        }
        if waiting_for_epoch && trainer.is_idle() {
            summary.checkpoint = Some(checkpoint::save(trainer, run_dir)?);
            waiting_for_epoch = false;
            if trainer.is_finished() {
                break;
            }
        } else if !trainer.is_idle() {
            trainer.wait_for_report()?;
        }
    }
    bar.finish_and_clear();
    Ok(summary)
}

/// Images per second over the last reported steps.
#[derive(Default)]
struct Throughput {
    since: Option<(web_time::Instant, u64)>,
    value: f64,
}

impl Throughput {
    fn update(&mut self, step: u64, batch: usize) -> f64 {
        let now = web_time::Instant::now();
        match self.since {
            Some((t, s)) if step > s && (now - t).as_secs_f64() > 0.5 => {
                self.value = (step - s) as f64 * batch as f64 / (now - t).as_secs_f64();
                self.since = Some((now, step));
            }
            None => self.since = Some((now, step)),
            _ => {}
        }
        self.value
    }
}
