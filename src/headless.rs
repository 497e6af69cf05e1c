//! The terminal front end: drives the trainer and shows a progress bar; the
//! run folder (config.json, metrics.jsonl, checkpoints) is written through
//! [`crate::runs`], as the desktop window does.

use std::path::{Path, PathBuf};

use anyhow::{Result, bail};
use indicatif::{ProgressBar, ProgressStyle};

use crate::runs::MetricsLog;
use crate::train::checkpoint::{self, CheckpointError};
use crate::train::{EpochReport, Throughput, TrainEvent, Trainer};

/// What a finished run leaves behind.
#[derive(Debug)]
pub struct RunSummary {
    pub run_dir: PathBuf,
    pub last: Option<EpochReport>,
    pub checkpoint: Option<PathBuf>,
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
    let mut metrics_log = MetricsLog::open(run_dir)?;
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
                    metrics_log.append(&e)?;
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
                TrainEvent::Predictions { .. } => {}
                TrainEvent::Diverged {
                    step,
                    loss,
                    evaluation,
                } => {
                    bar.abandon();
                    let what = if evaluation {
                        format!("the {} loss", trainer.eval_name())
                    } else {
                        "the training loss".into()
                    };
                    bail!(
                        "{what} became {loss} at step {step}; training stopped ({}). Try a lower --lr or a warm-up.",
                        last_good(run_dir)
                    );
                }
            }
        }
        if trainer.is_finished() && trainer.is_idle() && !waiting_for_epoch {
            break;
        }
        if waiting_for_epoch && trainer.is_idle() {
            match checkpoint::save(trainer, run_dir) {
                Ok(dir) => summary.checkpoint = Some(dir),
                Err(e @ CheckpointError::NonFinite { .. }) => {
                    bar.abandon();
                    bail!(
                        "{e}; training stopped ({}). Try a lower --lr or a warm-up.",
                        last_good(run_dir)
                    );
                }
                Err(e) => return Err(e.into()),
            }
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

/// Where the newest checkpoint of a run is, in words (every saved checkpoint
/// is finite: `save` refuses anything else).
fn last_good(run_dir: &Path) -> String {
    match checkpoint::resolve(run_dir) {
        Ok(found) => format!("the last good checkpoint is {}", found.dir.display()),
        Err(_) => "no checkpoint was written yet".into(),
    }
}
