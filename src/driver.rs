//! One owner of a run's policy, written once for every front end: when steps
//! are submitted, when a checkpoint is written (at every epoch end once the
//! epoch's steps are done, per `--checkpoint-every`, on stop), which one is
//! named best, and what stops a run (divergence, a checkpoint that cannot be
//! written). The terminal loop, the window's frame and the browser's frame
//! each call [`RunDriver::tick`] and only show the [`RunEvent`]s and the
//! [`RunState`] it returns; none of them decides any of this.
//!
//! The driver holds the policy's state, not the trainer: front ends that own
//! their trainer (the window) and those that borrow one (`headless::run`)
//! drive it alike.

use std::path::PathBuf;

use anyhow::Result;

use crate::data::pipeline::BadFile;
use crate::train::{CheckpointEvery, EpochReport, StepReport, TrainEvent, Trainer};

/// Where a run stands.
#[derive(Clone, Debug, PartialEq)]
pub enum RunState {
    Running,
    Paused,
    /// Stop was asked: no more steps; the ones in flight finish, then a
    /// checkpoint is written.
    Stopping,
    Stopped,
    Finished,
    /// Why the run cannot go on (a diverged loss, a checkpoint that could not
    /// be written), in words for any front end.
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

    /// No more steps will be submitted.
    pub fn is_over(&self) -> bool {
        matches!(
            self,
            RunState::Stopped | RunState::Finished | RunState::Failed(_)
        )
    }
}

/// What happened in one tick, for the front end to show.
#[derive(Debug)]
pub enum RunEvent {
    Step(StepReport),
    /// An evaluation (already in metrics.jsonl).
    Epoch(EpochReport),
    /// The predicted classes of the first test images at the latest evaluation.
    Predictions(Vec<u32>),
    /// An unreadable picture was replaced by another.
    SkippedFile(BadFile),
    /// A checkpoint was written here.
    Saved(PathBuf),
}

/// The run folder's files the policy writes (native; the browser has none).
#[cfg(not(target_arch = "wasm32"))]
pub struct RunFiles {
    pub dir: PathBuf,
    log: crate::run_folder::MetricsLog,
    best: crate::run_folder::BestSoFar,
}

#[cfg(not(target_arch = "wasm32"))]
impl RunFiles {
    /// The files of the run folder at `dir` (its metrics log and which
    /// checkpoint is best so far); the caller holds the folder's lock.
    pub fn open(dir: &std::path::Path) -> Result<Self> {
        Ok(RunFiles {
            dir: dir.to_path_buf(),
            log: crate::run_folder::MetricsLog::open(dir)?,
            best: crate::run_folder::BestSoFar::read(dir),
        })
    }
}

/// The policy's state for one run.
pub struct RunDriver {
    pub state: RunState,
    #[cfg(not(target_arch = "wasm32"))]
    files: Option<RunFiles>,
    timer: CheckpointTimer,
    /// An epoch ended: no more steps until its checkpoint is written.
    epoch_save_due: bool,
}

impl RunDriver {
    /// A driver without a run folder (the browser, tests).
    pub fn in_memory(trainer: &Trainer) -> Self {
        RunDriver {
            state: RunState::Running,
            #[cfg(not(target_arch = "wasm32"))]
            files: None,
            timer: CheckpointTimer::new(None, trainer.progress().global_step),
            epoch_save_due: false,
        }
    }

    /// A driver writing `files`, checkpointing at epoch ends and per `every`.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn with_files(trainer: &Trainer, files: RunFiles, every: Option<CheckpointEvery>) -> Self {
        RunDriver {
            files: Some(files),
            timer: CheckpointTimer::new(every, trainer.progress().global_step),
            ..Self::in_memory(trainer)
        }
    }

    /// Whether checkpoints and metrics are written.
    pub fn writes_files(&self) -> bool {
        self.run_dir().is_some()
    }

    /// The run folder this driver writes (the browser has none).
    fn run_dir(&self) -> Option<&std::path::Path> {
        #[cfg(not(target_arch = "wasm32"))]
        return self.files.as_ref().map(|f| f.dir.as_path());
        #[cfg(target_arch = "wasm32")]
        return None;
    }

    /// Submits steps while fewer than `depth` are in flight (none while a
    /// checkpoint waits for its steps), takes what came back, and writes the
    /// checkpoint that is due once the GPU is idle. Never blocks.
    pub fn tick(&mut self, trainer: &mut Trainer, depth: u64) -> Result<Vec<RunEvent>> {
        let mut events = vec![];
        if self.device_lost(trainer) {
            return Ok(events);
        }
        if self.state == RunState::Running {
            self.submit(trainer, depth);
        }
        // Every process of the run stops after the step that agreed it.
        if trainer.stop_agreed() && self.state == RunState::Running {
            self.stop(trainer);
        }
        let polled = trainer.poll();
        // The loss shows first as a failed poll (its callback runs in it).
        if self.device_lost(trainer) {
            return Ok(events);
        }
        for event in polled? {
            if let Some(shown) = self.take(trainer, event)? {
                events.push(shown);
            }
        }
        if trainer.is_idle() && !self.state.is_over() {
            self.save_when_due(trainer, &mut events);
        }
        Ok(events)
    }

    fn submit(&mut self, trainer: &mut Trainer, depth: u64) {
        while !self.epoch_save_due
            && !self.timer.due
            && !trainer.is_finished()
            && trainer.steps_in_flight() < depth
        {
            let epoch = trainer.progress().epoch;
            trainer.submit_steps(1);
            // The checkpoint waits for the epoch's steps; so do further steps,
            // so that it holds exactly the epoch's end.
            let after = trainer.progress();
            self.epoch_save_due =
                self.writes_files() && (after.epoch != epoch || trainer.is_finished());
            if !self.epoch_save_due && self.writes_files() && self.timer.check(after.global_step) {
                trainer.flush_reports();
            }
        }
    }

    /// Keeps an event's effects (metrics log, best so far, divergence) and
    /// returns what to show.
    fn take(&mut self, trainer: &Trainer, event: TrainEvent) -> Result<Option<RunEvent>> {
        Ok(match event {
            TrainEvent::Step(s) => Some(RunEvent::Step(s)),
            TrainEvent::Epoch(e) => {
                #[cfg(not(target_arch = "wasm32"))]
                if let Some(files) = &mut self.files {
                    files.log.append(&e)?;
                    files.best.evaluated(&e);
                }
                Some(RunEvent::Epoch(e))
            }
            TrainEvent::Predictions { predicted, .. } => Some(RunEvent::Predictions(predicted)),
            TrainEvent::SkippedFile(bad) => Some(RunEvent::SkippedFile(bad)),
            TrainEvent::Diverged {
                step,
                loss,
                evaluation,
            } => {
                let what = match evaluation {
                    true => format!("the {} loss", trainer.eval_name()),
                    false => "the training loss".into(),
                };
                self.fail(format!(
                    "{what} became {loss} at step {step}; training stopped ({}). {DIVERGED_HINT}",
                    self.last_good()
                ));
                None
            }
        })
    }

    /// With the GPU idle: the stop checkpoint, the epoch's, or the timer's;
    /// then whether the run is over.
    fn save_when_due(&mut self, trainer: &Trainer, events: &mut Vec<RunEvent>) {
        if self.state == RunState::Stopping {
            self.save(trainer, events);
            if !self.state.is_over() {
                self.state = RunState::Stopped;
            }
            return;
        }
        if self.epoch_save_due || self.timer.due {
            self.epoch_save_due = false;
            self.save(trainer, events);
            self.timer.saved(trainer.progress().global_step);
        }
        if trainer.is_finished() && self.state == RunState::Running {
            self.state = RunState::Finished;
        }
    }

    /// A checkpoint now (native, with a run folder), named best when its
    /// evaluation is; a model that is not finite, or a folder that cannot be
    /// written, fails the run (the last checkpoint stays the good one).
    pub fn save(&mut self, trainer: &Trainer, events: &mut Vec<RunEvent>) {
        #[cfg(not(target_arch = "wasm32"))]
        {
            use crate::train::checkpoint::CheckpointError;
            let last_good = self.last_good();
            let Some(files) = self.files.as_mut() else {
                return;
            };
            let saved = crate::run_folder::save(trainer, &files.dir)
                .map_err(|e| match e {
                    e @ CheckpointError::NonFinite { .. } => {
                        anyhow::anyhow!("{e}; training stopped ({last_good}). {DIVERGED_HINT}")
                    }
                    e => anyhow::anyhow!("could not write a checkpoint: {e}"),
                })
                .and_then(|dir| Ok(files.best.saved(&files.dir, &dir).map(|()| dir)?));
            match saved {
                Ok(dir) => events.push(RunEvent::Saved(dir)),
                Err(e) => self.fail(format!("{e:#}")),
            }
        }
        #[cfg(target_arch = "wasm32")]
        let _ = (trainer, events);
    }

    /// Whether a checkpoint can be written now (the steps in flight are done).
    pub fn can_save(&self, trainer: &Trainer) -> bool {
        self.writes_files() && trainer.is_idle() && !matches!(self.state, RunState::Failed(_))
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

    /// No more steps; the ones in flight finish and a checkpoint is written.
    /// With other processes, the stop is first agreed: this one says so
    /// with its next step, and every process stops after that same step.
    pub fn stop(&mut self, trainer: &mut Trainer) {
        if trainer.is_distributed() && !trainer.stop_agreed() {
            trainer.request_stop();
            return;
        }
        if !self.state.is_over() {
            self.state = RunState::Stopping;
            // The steps of an unfinished report group must come back too.
            trainer.flush_reports();
        }
    }

    /// A lost device ends the run: nothing in flight will finish, so
    /// nothing waits for it; the message names the last good checkpoint and
    /// how to go on. True once the device is lost.
    fn device_lost(&mut self, trainer: &Trainer) -> bool {
        let Some(why) = trainer.ctx().device_lost() else {
            return false;
        };
        if !self.state.is_over() {
            self.fail(format!(
                "the GPU device was lost ({why}); training stopped ({}). {}",
                self.last_good(),
                self.resume_hint()
            ));
        }
        true
    }

    /// How to continue after a lost device.
    fn resume_hint(&self) -> String {
        match self.run_dir() {
            Some(dir) => format!("Continue on a working GPU with --resume {}", dir.display()),
            None => "Start again on a working GPU".into(),
        }
    }

    fn fail(&mut self, why: String) {
        self.epoch_save_due = false;
        self.state = RunState::Failed(why);
    }

    /// Where the newest checkpoint is, in words (every one written is finite).
    fn last_good(&self) -> String {
        #[cfg(not(target_arch = "wasm32"))]
        if let Some(files) = &self.files {
            return match crate::run_folder::resolve(&files.dir) {
                Ok(found) => format!("the last good checkpoint is {}", found.dir.display()),
                Err(_) => "no checkpoint was written yet".into(),
            };
        }
        "this run has no run folder".into()
    }
}

/// What a diverged run suggests (the terminal and the window said it
/// differently when each had its own copy of this policy).
const DIVERGED_HINT: &str = "Try a lower learning rate or a warm-up.";

/// When `--checkpoint-every` asks for the next checkpoint.
struct CheckpointTimer {
    every: Option<CheckpointEvery>,
    last_step: u64,
    last_time: web_time::Instant,
    /// A checkpoint is due: submit nothing until it is written.
    due: bool,
}

impl CheckpointTimer {
    fn new(every: Option<CheckpointEvery>, step: u64) -> Self {
        CheckpointTimer {
            every,
            last_step: step,
            last_time: web_time::Instant::now(),
            due: false,
        }
    }

    /// After submitting `step`: whether a checkpoint is now due.
    fn check(&mut self, step: u64) -> bool {
        self.due = match self.every {
            Some(CheckpointEvery::Steps(n)) => step >= self.last_step + n,
            Some(CheckpointEvery::Minutes(m)) => self.last_time.elapsed().as_secs_f64() >= 60.0 * m,
            None => false,
        };
        self.due
    }

    fn saved(&mut self, step: u64) {
        self.last_step = step;
        self.last_time = web_time::Instant::now();
        self.due = false;
    }
}
