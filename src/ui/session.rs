//! One training run inside the window: drives the non-blocking trainer a little
//! every frame (submit a few steps, poll what came back) and never waits on
//! the GPU.

use std::sync::Arc;

use anyhow::Result;

use super::gallery::confusion_counts;
use super::history::History;
use crate::gpu::GpuContext;
use crate::train::{TrainEvent, Trainer};

#[derive(Clone, Debug, PartialEq)]
pub enum RunState {
    Running,
    Paused,
    /// Stop was pressed: no more steps; waits for the ones in flight.
    Stopping,
    Stopped,
    Finished,
    Failed(String),
}

impl RunState {
    pub fn label(&self) -> &'static str {
        match self {
            RunState::Running => "training",
            RunState::Paused => "paused",
            RunState::Stopping => "stopping",
            RunState::Stopped => "stopped",
            RunState::Finished => "finished",
            RunState::Failed(_) => "failed",
        }
    }

    /// No more steps will be submitted in this session.
    pub fn is_over(&self) -> bool {
        matches!(
            self,
            RunState::Stopped | RunState::Finished | RunState::Failed(_)
        )
    }
}

/// The run folder of a native session: the same files as a headless run.
#[cfg(not(target_arch = "wasm32"))]
pub struct RunFiles {
    /// The run folder, locked for this session.
    pub dir: crate::runs::RunFolder,
    /// Which checkpoint to name `checkpoints/best`.
    best: crate::runs::BestSoFar,
    log: crate::runs::MetricsLog,
}

pub struct Session {
    pub trainer: Trainer,
    pub history: History,
    pub state: RunState,
    /// Predicted classes of the first test images at the latest evaluation,
    /// and their confusion matrix (counted once per evaluation, not per frame).
    pub predictions: Option<Vec<u32>>,
    pub confusion: Option<Vec<Vec<u32>>>,
    /// GPU memory of the training plan, for the status line.
    pub plan_mib: f64,
    /// An epoch ended: checkpoint once its steps are done (native only).
    checkpoint_due: bool,
    /// What the last save did, for the status line.
    pub saved: Option<String>,
    #[cfg(not(target_arch = "wasm32"))]
    pub files: Option<RunFiles>,
}

/// How much GPU work to keep queued: about `frame_seconds` of steps (the
/// renderer's frames wait behind them on a shared queue), at least two so
/// the GPU never idles between frames.
pub fn queue_depth(step_seconds: Option<f64>, frame_seconds: f64) -> u64 {
    let steps = step_seconds.map_or(1.0, |s| (frame_seconds / s.max(1e-6)).ceil());
    (steps as u64).clamp(1, 64) + 1
}

impl Session {
    /// A session over a built trainer, without a run folder (`start` adds one).
    pub fn new(mut trainer: Trainer) -> Self {
        trainer.capture_predictions();
        let history = History::new(&trainer);
        let plan_mib = trainer.plan().summary().total_bytes as f64 / (1 << 20) as f64;
        Session {
            trainer,
            history,
            state: RunState::Running,
            predictions: None,
            confusion: None,
            plan_mib,
            checkpoint_due: false,
            saved: None,
            #[cfg(not(target_arch = "wasm32"))]
            files: None,
        }
    }

    /// Starts (or with `--resume`, continues) a run in its run folder, as
    /// `train --no-gui` would.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn start(ctx: Arc<GpuContext>, args: &crate::cli::TrainArgs) -> Result<Self> {
        let (trainer, dir) = crate::runs::prepare(ctx, args)?;
        let log = crate::runs::MetricsLog::open(&dir)?;
        let mut session = Session::new(trainer);
        for report in crate::runs::read_metrics(&dir)? {
            session.history.push_epoch(report);
        }
        let best = crate::runs::BestSoFar::read(&dir);
        session.files = Some(RunFiles { dir, log, best });
        Ok(session)
    }

    /// The browser has no run folder: a session over freshly loaded data.
    #[cfg(target_arch = "wasm32")]
    pub fn start(
        ctx: Arc<GpuContext>,
        config: crate::train::TrainConfig,
        data: crate::data::DataSplit,
    ) -> Result<Self> {
        Ok(Session::new(Trainer::new(ctx, config, data)?))
    }

    /// Submits up to `depth` steps in flight and takes the metrics that came
    /// back. Never blocks; call once per frame.
    pub fn tick(&mut self, depth: u64) {
        if let Err(e) = self.try_tick(depth) {
            self.state = RunState::Failed(format!("{e:#}"));
        }
    }

    fn try_tick(&mut self, depth: u64) -> Result<()> {
        if self.state == RunState::Running {
            self.submit(depth)?;
        }
        for event in self.trainer.poll()? {
            self.take(event)?;
        }
        if self.trainer.is_idle() {
            if self.checkpoint_due || self.state == RunState::Stopping {
                self.checkpoint_due = false;
                self.save_checkpoint();
            }
            if self.state == RunState::Stopping {
                self.state = RunState::Stopped;
            } else if self.trainer.is_finished() && self.state == RunState::Running {
                self.state = RunState::Finished;
            }
        }
        Ok(())
    }

    fn submit(&mut self, depth: u64) -> Result<()> {
        while !self.checkpoint_due
            && !self.trainer.is_finished()
            && self.trainer.steps_in_flight() < depth
        {
            let epoch = self.trainer.progress().epoch;
            self.trainer.submit_steps(1);
            // The checkpoint waits for the epoch's steps; so do further steps,
            // so that it holds exactly the epoch's end.
            self.checkpoint_due = self.writes_files()
                && (self.trainer.progress().epoch != epoch || self.trainer.is_finished());
        }
        Ok(())
    }

    fn take(&mut self, event: TrainEvent) -> Result<()> {
        match event {
            TrainEvent::Step(report) => self.history.push_step(report),
            TrainEvent::Epoch(report) => {
                #[cfg(not(target_arch = "wasm32"))]
                if let Some(files) = &mut self.files {
                    files.log.append(&report)?;
                    files.best.evaluated(&report);
                }
                self.history.push_epoch(report);
            }
            TrainEvent::Predictions { predicted, .. } => {
                let data = self.trainer.test_data();
                self.confusion = Some(confusion_counts(&data.labels, &predicted, data.classes()));
                self.predictions = Some(predicted);
            }
            TrainEvent::SkippedFile(bad) => {
                log::warn!("skipped {}: {}", bad.path.display(), bad.reason);
            }
            TrainEvent::Diverged {
                step,
                loss,
                evaluation,
            } => {
                self.checkpoint_due = false;
                let what = if evaluation { "evaluation" } else { "training" };
                self.state = RunState::Failed(format!(
                    "the {what} loss became {loss} at step {step}; training stopped (the last \
                     checkpoint is from before). Try a lower learning rate."
                ));
            }
        }
        Ok(())
    }

    pub fn pause(&mut self) {
        if self.state == RunState::Running {
            self.state = RunState::Paused;
        }
    }

    pub fn resume(&mut self) {
        if self.state == RunState::Paused {
            self.state = RunState::Running;
        }
    }

    /// Stops submitting; the steps in flight finish and a checkpoint is saved.
    pub fn stop(&mut self) {
        if !self.state.is_over() {
            self.state = RunState::Stopping;
            self.trainer.flush_reports();
        }
    }

    /// Whether the session has a run folder (native) for metrics and checkpoints.
    fn writes_files(&self) -> bool {
        #[cfg(not(target_arch = "wasm32"))]
        return self.files.is_some();
        #[cfg(target_arch = "wasm32")]
        return false;
    }

    /// Whether "Save checkpoint" can run now (the steps in flight are done).
    pub fn can_save(&self) -> bool {
        self.writes_files() && self.trainer.is_idle() && !matches!(self.state, RunState::Failed(_))
    }

    /// Writes a checkpoint into the run folder (native; the browser has none).
    pub fn save_checkpoint(&mut self) {
        #[cfg(not(target_arch = "wasm32"))]
        if let Some(files) = &mut self.files {
            use crate::train::checkpoint::{self, CheckpointError};
            self.saved = Some(match checkpoint::save(&self.trainer, &files.dir) {
                Ok(path) => match files.best.saved(&files.dir, &path) {
                    Ok(()) => format!("saved {}", path.display()),
                    Err(e) => format!("saved {}, but not named best: {e:#}", path.display()),
                },
                Err(e @ CheckpointError::NonFinite { .. }) => {
                    // A diverged model: stop here, the last checkpoint stays the good one.
                    self.state = RunState::Failed(format!("{e}. Try a lower learning rate."));
                    format!("not saved: {e}")
                }
                Err(e) => format!("could not save a checkpoint: {e}"),
            });
        }
    }

    /// True while metrics are still to come back (the window keeps repainting).
    pub fn is_busy(&self) -> bool {
        !self.trainer.is_idle() || matches!(self.state, RunState::Running | RunState::Stopping)
    }
}
