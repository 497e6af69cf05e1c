//! One training run inside the window: drives the non-blocking trainer a little
//! every frame (submit a few steps, poll what came back) and never waits on
//! the GPU.

use std::sync::Arc;

use anyhow::Result;

use super::gallery::confusion_counts;
use super::history::History;
use crate::gpu::GpuContext;
use crate::train::Trainer;

pub use crate::driver::RunState;
use crate::driver::{RunDriver, RunEvent};

pub struct Session {
    pub trainer: Trainer,
    /// The run's policy (checkpoints, best, stop, divergence): the core's,
    /// shared with the terminal.
    pub driver: RunDriver,
    pub history: History,
    /// Predicted classes of the first test images at the latest evaluation,
    /// and their confusion matrix (counted once per evaluation, not per frame).
    pub predictions: Option<Vec<u32>>,
    pub confusion: Option<Vec<Vec<u32>>>,
    /// GPU memory of the training plan, for the status line.
    pub plan_mib: f64,
    /// What the last save did, for the status line.
    pub saved: Option<String>,
    /// The run folder, locked for this session (native).
    #[cfg(not(target_arch = "wasm32"))]
    pub files: Option<crate::run_folder::RunFolder>,
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
            driver: RunDriver::in_memory(&trainer),
            trainer,
            history,
            predictions: None,
            confusion: None,
            plan_mib,
            saved: None,
            #[cfg(not(target_arch = "wasm32"))]
            files: None,
        }
    }

    /// Starts (or, resuming, continues) a run in its run folder, as the
    /// terminal would, with its checkpoint interval.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn start(ctx: Arc<GpuContext>, settings: &crate::settings::RunSettings) -> Result<Self> {
        let (trainer, dir) = crate::run_folder::prepare(ctx, settings)?;
        let files = crate::driver::RunFiles::open(&dir)?;
        let every = trainer.config.checkpoint_every;
        let mut session = Session::new(trainer);
        for report in crate::run_folder::read_metrics(&dir)? {
            session.history.push_epoch(report);
        }
        session.driver = RunDriver::with_files(&session.trainer, files, every);
        session.files = Some(dir);
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

    pub fn state(&self) -> &RunState {
        &self.driver.state
    }

    /// Submits up to `depth` steps in flight and takes the metrics that came
    /// back. Never blocks; call once per frame.
    pub fn tick(&mut self, depth: u64) {
        match self.driver.tick(&mut self.trainer, depth) {
            Ok(events) => events.into_iter().for_each(|e| self.show(e)),
            Err(e) => self.driver.state = RunState::Failed(format!("{e:#}")),
        }
    }

    fn show(&mut self, event: RunEvent) {
        match event {
            RunEvent::Step(report) => self.history.push_step(report),
            RunEvent::Epoch(report) => self.history.push_epoch(report),
            RunEvent::Predictions(predicted) => {
                let data = self.trainer.test_data();
                self.confusion = Some(confusion_counts(&data.labels, &predicted, data.classes()));
                self.predictions = Some(predicted);
            }
            RunEvent::SkippedFile(bad) => {
                log::warn!("skipped {}: {}", bad.path.display(), bad.reason);
            }
            RunEvent::Saved(path) => self.saved = Some(format!("saved {}", path.display())),
        }
    }

    pub fn pause(&mut self) {
        self.driver.pause();
    }

    pub fn resume(&mut self) {
        self.driver.resume();
    }

    /// Stops submitting; the steps in flight finish and a checkpoint is saved.
    pub fn stop(&mut self) {
        self.driver.stop(&mut self.trainer);
    }

    /// Whether "Save checkpoint" can run now (the steps in flight are done).
    pub fn can_save(&self) -> bool {
        self.driver.can_save(&self.trainer)
    }

    /// Writes a checkpoint into the run folder now (native; the browser has none).
    pub fn save_checkpoint(&mut self) {
        let mut events = vec![];
        self.driver.save(&self.trainer, &mut events);
        events.into_iter().for_each(|e| self.show(e));
    }

    /// True while metrics are still to come back (the window keeps repainting).
    pub fn is_busy(&self) -> bool {
        !self.trainer.is_idle()
            || matches!(self.driver.state, RunState::Running | RunState::Stopping)
    }
}
