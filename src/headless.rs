//! The terminal front end: drives the trainer, shows a progress bar on a
//! terminal and plain progress lines otherwise, and writes the run folder
//! (config.json, metrics.jsonl, checkpoints) through [`crate::runs`], as the
//! desktop window does. Ctrl-C or SIGTERM finishes the steps in flight and
//! checkpoints before the process exits; a second one exits at once.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};

use anyhow::{Result, bail};
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};

use crate::driver::{RunDriver, RunEvent, RunFiles, RunState};
use crate::train::{
    CheckpointEvery, EpochReport, StepReport, Trainer, format_duration, format_rate, time_left,
};

/// What a finished (or interrupted) run leaves behind.
#[derive(Debug)]
pub struct RunSummary {
    pub run_dir: PathBuf,
    pub last: Option<EpochReport>,
    pub checkpoint: Option<PathBuf>,
    /// The signal that stopped the run early (its number), if one did.
    pub interrupted_by: Option<i32>,
}

/// The terminal's progress area: log records are printed through it so they
/// never tear the bar.
pub fn progress() -> &'static MultiProgress {
    static PROGRESS: OnceLock<MultiProgress> = OnceLock::new();
    PROGRESS.get_or_init(MultiProgress::new)
}

/// Sends `log` records (wgpu's, naga's, ours) to stderr through the progress
/// area; `RUST_LOG` picks the level (default: warnings).
pub fn init_logging() {
    struct ThroughProgress;
    impl std::io::Write for ThroughProgress {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            progress().suspend(|| std::io::stderr().write_all(buf))?;
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            std::io::stderr().flush()
        }
    }
    let _ = env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn"))
        .target(env_logger::Target::Pipe(Box::new(ThroughProgress)))
        .try_init();
}

/// The first stop signal received (0: none).
static STOP_SIGNAL: AtomicUsize = AtomicUsize::new(0);

/// Ctrl-C, SIGTERM and SIGUSR1 ask the run to stop after a checkpoint; a
/// second one exits at once with the signal's code (128 + its number).
/// SIGUSR1 is what Open MPI's mpirun forwards to every process of a job
/// (a SIGTERM or SIGINT to mpirun kills the job after a second).
pub fn handle_stop_signals() -> std::io::Result<()> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    use std::sync::Arc;
    use std::sync::atomic::AtomicBool;
    let received = Arc::new(AtomicBool::new(false));
    #[cfg(unix)]
    let signals = [SIGINT, SIGTERM, signal_hook::consts::SIGUSR1];
    #[cfg(not(unix))]
    let signals = [SIGINT, SIGTERM];
    for signal in signals {
        signal_hook::flag::register_conditional_shutdown(signal, 128 + signal, received.clone())?;
        signal_hook::flag::register(signal, received.clone())?;
        // SAFETY: the action only stores to an atomic (async-signal-safe).
        unsafe {
            signal_hook::low_level::register(signal, move || {
                let _ = STOP_SIGNAL.compare_exchange(
                    0,
                    signal as usize,
                    Ordering::SeqCst,
                    Ordering::SeqCst,
                );
            })?;
        }
    }
    Ok(())
}

/// The stop signal received, if any (its number).
pub fn stop_requested() -> Option<i32> {
    match STOP_SIGNAL.load(Ordering::SeqCst) {
        0 => None,
        s => Some(s as i32),
    }
}

/// How progress is shown: a bar on a terminal, lines otherwise.
struct Progress {
    bar: ProgressBar,
    lines: bool,
    /// Steps between plain progress lines.
    every: u64,
    last_line: u64,
}

impl Progress {
    fn new(trainer: &Trainer, quiet: bool) -> Self {
        let lines = !quiet && !std::io::stdout().is_terminal();
        let bar = if quiet || lines {
            ProgressBar::hidden()
        } else {
            progress().add(ProgressBar::new(trainer.total_steps()))
        };
        bar.set_style(
            ProgressStyle::with_template("{bar:30} {pos}/{len} steps [{elapsed_precise}] {msg}")
                .expect("valid template"),
        );
        let done = trainer.progress().global_step;
        bar.set_position(done);
        let spe = trainer.steps_per_epoch as u64;
        Progress {
            bar,
            lines,
            every: (spe / 10).max(trainer.config.report_every as u64).max(1),
            last_line: done,
        }
    }

    /// A step's metrics came back: it is finished.
    fn step(&mut self, s: &StepReport, trainer: &Trainer) {
        let global_batch = trainer.config.batch_size * trainer.config.world_size;
        let rate = format_rate(s.images_per_sec, global_batch);
        let waited = s
            .data_wait
            .map_or(String::new(), |w| format!(" data wait {:.0}%", 100.0 * w));
        let text = format!(
            "epoch {:.2}  loss {:.3} acc {:.1}% lr {:.4} {rate}{waited}",
            s.epoch,
            s.train_loss,
            100.0 * s.train_acc,
            s.lr
        );
        // The bar's ETA from the same rate (indicatif's own would follow the
        // reports' bursty arrival).
        let left = trainer.total_steps().saturating_sub(s.step);
        let eta = time_left(s.images_per_sec, global_batch, left)
            .map_or(String::new(), |t| format!("  ETA {}", format_duration(t)));
        self.bar.set_message(format!("{text}{eta}"));
        self.bar.set_position(s.step);
        if self.lines && s.step >= self.last_line + self.every {
            self.last_line = s.step;
            out!("step {}/{}  {text}", s.step, trainer.total_steps());
        }
    }

    /// Lines that must survive any terminal: stdout, above the bar.
    fn println(&self, line: &str) {
        progress().suspend(|| out!("{line}"));
    }
}

/// How a terminal run goes besides the trainer's config.
#[derive(Clone, Copy, Debug, Default)]
pub struct RunOptions {
    /// No bar and no progress lines (tests).
    pub quiet: bool,
    /// Checkpoints between epoch ends too.
    pub checkpoint_every: Option<CheckpointEvery>,
}

/// `run_with` with no checkpoints between epoch ends.
pub fn run(trainer: &mut Trainer, run_dir: &Path, quiet: bool) -> Result<RunSummary> {
    run_with(
        trainer,
        run_dir,
        RunOptions {
            quiet,
            checkpoint_every: None,
        },
    )
}

/// Trains to the end (or to a stop signal) with a progress bar or lines,
/// through the core's [`RunDriver`] (which decides when to checkpoint, what is
/// best and what stops the run); a stop signal asks it to stop, and a failed
/// run (a NaN/inf loss, a checkpoint that could not be written) is an error
/// that names the last good checkpoint.
pub fn run_with(trainer: &mut Trainer, run_dir: &Path, options: RunOptions) -> Result<RunSummary> {
    run_in(trainer, Some(run_dir), options)
}

/// `run_with` for a process of a data-parallel run: rank 0 holds the run
/// folder (`run_dir`) and shows progress; the others have neither.
pub fn run_in(
    trainer: &mut Trainer,
    run_dir: Option<&Path>,
    options: RunOptions,
) -> Result<RunSummary> {
    let mut shown = Progress::new(trainer, options.quiet);
    let mut driver = match run_dir {
        Some(dir) => RunDriver::with_files(trainer, RunFiles::open(dir)?, options.checkpoint_every),
        None => RunDriver::in_memory(trainer),
    };
    let has_folder = run_dir.is_some();
    let run_dir = run_dir.unwrap_or(Path::new(""));
    // Stay at most two reports ahead of the GPU: enough to keep it busy.
    let depth = 2 * trainer.config.report_every as u64 + 1;
    let mut summary = RunSummary {
        run_dir: run_dir.to_path_buf(),
        last: None,
        checkpoint: None,
        interrupted_by: None,
    };
    loop {
        if let (Some(signal), None) = (stop_requested(), summary.interrupted_by) {
            summary.interrupted_by = Some(signal);
            driver.stop(trainer);
        }
        for event in driver.tick(trainer, depth)? {
            match event {
                RunEvent::Step(s) => shown.step(&s, trainer),
                RunEvent::Epoch(e) => {
                    // Rank 0 of a data-parallel run speaks for all.
                    if has_folder {
                        let batch = trainer.config.batch_size * trainer.config.world_size;
                        shown.println(&epoch_line(&e, trainer.eval_name(), batch));
                    }
                    summary.last = Some(e);
                }
                RunEvent::Saved(dir) => summary.checkpoint = Some(dir),
                RunEvent::Predictions(_) => {}
                RunEvent::SkippedFile(bad) => progress().suspend(|| {
                    eprintln!(
                        "warning: skipped {}: {} (another picture takes its place)",
                        bad.path.display(),
                        bad.reason
                    )
                }),
            }
        }
        match &driver.state {
            RunState::Failed(why) => {
                shown.bar.abandon();
                bail!("{why}");
            }
            RunState::Stopped if !has_folder => return Ok(summary),
            RunState::Stopped => {
                shown.bar.abandon();
                shown.println(&format!(
                    "stopped by signal {} at step {}; resume with --resume {}",
                    summary.interrupted_by.unwrap_or_default(),
                    trainer.progress().global_step,
                    run_dir.display()
                ));
                return Ok(summary);
            }
            RunState::Finished => break,
            _ if !trainer.is_idle() => trainer.wait_for_report()?,
            _ => {}
        }
    }
    shown.bar.finish_and_clear();
    Ok(summary)
}

fn epoch_line(e: &EpochReport, eval_name: &str, batch: usize) -> String {
    let top5 =
        |acc: Option<f32>| acc.map_or(String::new(), |a| format!(" top-5 {:.2}%", 100.0 * a));
    // Mixed precision: the loss scale, and the steps it skipped.
    let scaling = match (e.loss_scale, e.skipped_steps) {
        (Some(scale), Some(skipped)) => format!("  loss scale {scale} ({skipped} skipped)"),
        _ => String::new(),
    };
    // Pictures decoded from files: the share of the epoch spent waiting for
    // them, and the unreadable files skipped.
    let input = match (e.data_wait_share, e.skipped_files) {
        (Some(w), Some(0) | None) => format!("  data wait {:.0}%", 100.0 * w),
        (Some(w), Some(n)) => format!("  data wait {:.0}%, {n} bad files skipped", 100.0 * w),
        _ => String::new(),
    };
    format!(
        "epoch {:>6.2}  train loss {:.4} acc {:.2}%{}  {eval_name} loss {:.4} acc {:.2}%{}  lr {:.4}  {}{scaling}{input}",
        e.epoch,
        e.train_loss,
        100.0 * e.train_acc,
        top5(e.train_top5),
        e.test_loss,
        100.0 * e.test_acc,
        top5(e.test_top5),
        e.lr,
        format_rate(Some(e.images_per_sec), batch)
    )
}
