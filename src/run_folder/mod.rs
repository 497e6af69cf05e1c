//! The run folder, in one place: its names, its lock, its config, its
//! metrics log and its checkpoints. Every native front end writes the same
//! folder, so a run started in the window can be resumed in the terminal and
//! the other way round.
//!
//! ```text
//! runs/<name>/config.json             the run's config (and data identity)
//!            /metrics.jsonl           one record per evaluation (metrics.rs)
//!            /kernel-choices.json     the kernels the run ran, by cache key
//!            /lock                    held by the one trainer writing here
//!            /checkpoints/step-N/     model.safetensors + trainer.safetensors
//!            /checkpoints/last, best  the newest and the best step's name
//! ```
//!
//! `start` builds a run's trainer from settings (new or resumed),
//! `checkpoints` saves, finds, prunes and repairs checkpoints, `metrics`
//! keeps the log; `train::checkpoint` is only the state-dict codec.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::gpu::{GpuContext, RunKernels};
use crate::settings::Setting;
use crate::train::Trainer;
use crate::train::checkpoint::write_atomically;

pub mod checkpoints;
pub mod metrics;
pub mod start;

pub use checkpoints::{BestSoFar, Located, best_step, resolve, save};
pub use metrics::{MetricsLog, read_metrics};
pub use start::{model_file, prepare};

pub const CONFIG_FILE: &str = "config.json";
pub const METRICS_FILE: &str = "metrics.jsonl";
pub const KERNELS_FILE: &str = "kernel-choices.json";
pub const LOCK_FILE: &str = "lock";
pub const CHECKPOINTS_DIR: &str = "checkpoints";
/// Names the newest complete checkpoint.
pub const LAST_FILE: &str = "last";
/// Names the checkpoint with the best evaluation accuracy (kept by pruning).
pub const BEST_FILE: &str = "best";

/// A run folder held by this process: an OS lock on `<run>/lock` (released
/// when the process ends, however it ends) keeps a second trainer out, and
/// the file names the holder's PID for the refusal message.
#[derive(Debug)]
pub struct RunFolder {
    pub dir: PathBuf,
    _lock: std::fs::File,
}

impl std::ops::Deref for RunFolder {
    type Target = Path;

    fn deref(&self) -> &Path {
        &self.dir
    }
}

impl RunFolder {
    /// Creates `dir` if needed and takes its lock; refuses when another
    /// process holds it. Then tidies what an earlier kill left behind.
    pub fn lock(dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let path = dir.join(LOCK_FILE);
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => return Err(in_use(dir)),
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(e).with_context(|| format!("locking {}", path.display()));
            }
        }
        file.set_len(0)
            .and_then(|()| writeln!(file, "{}", std::process::id()))
            .and_then(|()| file.flush())
            .with_context(|| format!("writing {}", path.display()))?;
        for line in checkpoints::clean_stale(dir) {
            eprintln!("{line}");
        }
        Ok(RunFolder {
            dir: dir.to_path_buf(),
            _lock: file,
        })
    }
}

/// Whether another process holds `dir`'s lock now (without creating anything).
fn is_in_use(dir: &Path) -> bool {
    std::fs::File::open(dir.join(LOCK_FILE))
        .is_ok_and(|f| matches!(f.try_lock_shared(), Err(std::fs::TryLockError::WouldBlock)))
}

/// The refusal for a run folder another trainer holds, naming its process.
fn in_use(dir: &Path) -> anyhow::Error {
    let holder = std::fs::read_to_string(dir.join(LOCK_FILE)).unwrap_or_default();
    anyhow::anyhow!(
        "{} is in use by another trainer (process {}); wait for it to finish, or give another \
         {} for a new run",
        dir.display(),
        holder.trim(),
        Setting::Name
    )
}

/// Whether `dir` already holds a run (its config or a checkpoint).
fn holds_run(dir: &Path) -> bool {
    dir.join(CONFIG_FILE).exists() || dir.join(CHECKPOINTS_DIR).exists()
}

/// config.json as the run now stands (a resume may extend or move it).
/// Writes the run's config.json and the kernels its plan runs
/// (kernel-choices.json, which a resume on the same adapter runs again).
fn write_config(run_dir: &Path, trainer: &Trainer) -> Result<()> {
    let json = serde_json::to_string_pretty(&trainer.config)?;
    write_atomically(&run_dir.join(CONFIG_FILE), json.as_bytes())?;
    let kernels = trainer.ctx().choices.lock().unwrap().used();
    let json = serde_json::to_string_pretty(&kernels)?;
    write_atomically(&run_dir.join(KERNELS_FILE), json.as_bytes())?;
    Ok(())
}

/// Before a resumed run builds its plan: the kernels it ran, where it ran on
/// this adapter (a damaged or missing file only means choosing again).
fn pin_kernels(run_dir: &Path, ctx: &GpuContext) {
    let path = run_dir.join(KERNELS_FILE);
    let Some(run) = std::fs::read_to_string(&path)
        .ok()
        .and_then(|text| serde_json::from_str::<RunKernels>(&text).ok())
    else {
        return;
    };
    if !ctx.choices.lock().unwrap().pin(run) {
        eprintln!(
            "note: {} records the kernels of another adapter; choosing them for this one",
            path.display()
        );
    }
}
