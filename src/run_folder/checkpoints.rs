//! The checkpoints of a run folder: `checkpoints/step-N/` (model.safetensors
//! and trainer.safetensors, written by `train::checkpoint`'s codec), `last`
//! and `best`. Each checkpoint is written to a temporary folder and renamed
//! into place, then `last` (itself replaced by rename) points at it: a kill at
//! any moment leaves the previous one intact. A step folder saved again
//! (after a rewind) is replaced by renaming the old one aside first, so there
//! is never a moment when neither exists; when `last` is missing or names no
//! complete folder, readers fall back to the newest complete `step-N`.
//! Nothing non-finite is ever saved.

use std::path::{Path, PathBuf};

use super::metrics::read_metrics;
use super::{BEST_FILE, CHECKPOINTS_DIR, LAST_FILE};
use crate::train::checkpoint::{
    CheckpointError, MODEL_FILE, TRAINER_FILE, check_finite, io, model_metadata, read_model,
    sync_parent, trainer_state, write_atomically, write_safetensors,
};
use crate::train::{EpochReport, Trainer};

/// Checkpoints kept besides `best`.
const KEEP: usize = 2;

/// Saves model and trainer state under `run_dir/checkpoints/step-N/` and points
/// `last` at it; keeps the newest two up to this step. Refuses (and writes
/// nothing) when any value is NaN or infinite. Returns the checkpoint folder.
pub fn save(trainer: &Trainer, run_dir: &Path) -> Result<PathBuf, CheckpointError> {
    let root = run_dir.join(CHECKPOINTS_DIR);
    std::fs::create_dir_all(&root).map_err(io(&root))?;
    let step = trainer.progress().global_step;
    let model = read_model(trainer)?;
    let (momenta, meta) = trainer_state(trainer)?;
    check_finite(model.iter().chain(&momenta), step)?;

    let name = step_name(step);
    let tmp = root.join(format!(".{name}.tmp"));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).map_err(io(&tmp))?;
    write_safetensors(&tmp.join(MODEL_FILE), &model, model_metadata(trainer))?;
    write_safetensors(&tmp.join(TRAINER_FILE), &momenta, meta)?;
    crash_point("checkpoint-written");

    let dir = root.join(&name);
    replace_dir(&tmp, &dir)?;
    write_atomically(&root.join(LAST_FILE), name.as_bytes())?;
    crash_point("last-written");
    prune(&root, step);
    Ok(dir)
}

fn step_name(step: u64) -> String {
    format!("step-{step:08}")
}

/// The step of a `step-N` folder name.
fn step_of(name: &str) -> Option<u64> {
    name.strip_prefix("step-")?.parse().ok()
}

/// Test hook: with `RESNET_WGPU_CRASH_AT=<point>` the process aborts at that
/// point of a checkpoint save, as a kill -9 there would (the crash tests spawn
/// the real binary with it).
fn crash_point(point: &str) {
    if std::env::var_os("RESNET_WGPU_CRASH_AT").is_some_and(|p| p == point) {
        eprintln!("RESNET_WGPU_CRASH_AT={point}: aborting");
        std::process::abort();
    }
}

/// Moves the complete folder `tmp` to `dir`. An existing `dir` (the same step
/// saved again after a rewind) is renamed aside first and deleted last, so a
/// kill leaves either it or its replacement in place (`clean_stale` puts an
/// aside folder back when its replacement never arrived).
fn replace_dir(tmp: &Path, dir: &Path) -> Result<(), CheckpointError> {
    let name = dir
        .file_name()
        .map_or("step".into(), |n| n.to_string_lossy());
    let aside = dir.with_file_name(format!(".{name}.old"));
    let replacing = dir.exists();
    if replacing {
        let _ = std::fs::remove_dir_all(&aside);
        std::fs::rename(dir, &aside).map_err(io(dir))?;
        crash_point("old-moved-aside");
    }
    std::fs::rename(tmp, dir).map_err(io(dir))?;
    sync_parent(dir)?;
    crash_point("checkpoint-renamed");
    if replacing {
        let _ = std::fs::remove_dir_all(&aside);
    }
    Ok(())
}

/// Keeps the newest `KEEP` checkpoints up to `step` (the one just saved
/// included) and removes older ones. Folders past `step` (left by a rewind)
/// stay until the run passes them.
fn prune(root: &Path, step: u64) {
    let best = named(root, BEST_FILE);
    let mut steps: Vec<u64> = step_folders(root)
        .into_iter()
        .filter(|&s| s <= step)
        .collect();
    steps.sort_unstable_by(|a, b| b.cmp(a));
    for old in steps.into_iter().skip(KEEP) {
        let name = step_name(old);
        if best.as_deref() != Some(name.as_str()) {
            let _ = std::fs::remove_dir_all(root.join(name));
        }
    }
}

/// The folder name a pointer file (`last`, `best`) in `root` holds.
fn named(root: &Path, pointer: &str) -> Option<String> {
    std::fs::read_to_string(root.join(pointer))
        .ok()
        .map(|n| n.trim().to_string())
}

/// Names `dir` (a checkpoint of `run_dir`) as the run's best
/// (`checkpoints/best`); it is then never pruned.
pub fn mark_best(run_dir: &Path, dir: &Path) -> Result<(), CheckpointError> {
    let name = dir.file_name().map(|n| n.to_string_lossy().into_owned());
    let root = run_dir.join(CHECKPOINTS_DIR);
    write_atomically(&root.join(BEST_FILE), name.unwrap_or_default().as_bytes())
}

/// The step of the run's best checkpoint, if one is named.
pub fn best_step(run_dir: &Path) -> Option<u64> {
    step_of(&named(&run_dir.join(CHECKPOINTS_DIR), BEST_FILE)?)
}

/// The steps of the `step-N` folders under `root` (complete or not).
fn step_folders(root: &Path) -> Vec<u64> {
    let Ok(entries) = std::fs::read_dir(root) else {
        return vec![];
    };
    entries
        .filter_map(|e| e.ok())
        .filter_map(|e| step_of(&e.file_name().to_string_lossy()))
        .collect()
}

/// A checkpoint folder with both files.
fn is_complete(dir: &Path) -> bool {
    dir.join(MODEL_FILE).is_file() && dir.join(TRAINER_FILE).is_file()
}

/// Tidies `run_dir/checkpoints` after a kill (call with the run folder locked):
/// removes half-written `.step-N.tmp` folders and temporary files, and puts a
/// `.step-N.old` folder back where its replacement never arrived. Returns what
/// it did, one line per change.
pub fn clean_stale(run_dir: &Path) -> Vec<String> {
    let mut done = vec![];
    for folder in [run_dir.to_path_buf(), run_dir.join(CHECKPOINTS_DIR)] {
        let Ok(entries) = std::fs::read_dir(&folder) else {
            continue;
        };
        for entry in entries.filter_map(|e| e.ok()) {
            let name = entry.file_name().to_string_lossy().into_owned();
            let path = entry.path();
            if let Some(step) = name.strip_prefix('.').and_then(|n| n.strip_suffix(".old")) {
                let target = folder.join(step);
                if target.exists() {
                    let _ = std::fs::remove_dir_all(&path);
                } else if std::fs::rename(&path, &target).is_ok() {
                    done.push(format!(
                        "restored {} (its replacement was interrupted)",
                        target.display()
                    ));
                }
            } else if name.ends_with(".tmp") {
                let removed = if path.is_dir() {
                    std::fs::remove_dir_all(&path)
                } else {
                    std::fs::remove_file(&path)
                };
                if removed.is_ok() {
                    done.push(format!("removed the interrupted write {}", path.display()));
                }
            }
        }
    }
    done
}

/// A checkpoint folder found from a user's path.
#[derive(Clone, Debug)]
pub struct Located {
    pub dir: PathBuf,
    /// Set when `last` was missing or broken and the newest complete
    /// checkpoint was taken instead: what to tell the user.
    pub fallback: Option<String>,
}

/// The checkpoint folder a path names: a run folder (its `last`, else its
/// newest complete `step-N`), a checkpoint folder, or the folder of a
/// model.safetensors file.
pub fn resolve(path: &Path) -> Result<Located, CheckpointError> {
    let missing = |detail: &str| CheckpointError::Mismatch {
        path: path.to_path_buf(),
        detail: detail.to_string(),
    };
    let found = |dir: PathBuf| Located {
        dir,
        fallback: None,
    };
    let pointer = path
        .file_name()
        .is_some_and(|n| n == LAST_FILE || n == BEST_FILE);
    if let (true, Some(root)) = (pointer && path.is_file(), path.parent()) {
        let dir = std::fs::read_to_string(path)
            .map(|name| root.join(name.trim()))
            .map_err(io(path))?;
        return if is_complete(&dir) {
            Ok(found(dir))
        } else {
            Err(missing("names no complete checkpoint"))
        };
    }
    if path.is_file() {
        // A picture or a text file is named itself, not the model file its
        // folder lacks.
        if path.extension().is_none_or(|e| e != "safetensors") {
            return Err(missing(
                "is not a checkpoint: give a run folder, a checkpoint folder or a safetensors file",
            ));
        }
        return path
            .parent()
            .map(|p| found(p.to_path_buf()))
            .ok_or_else(|| missing("has no folder"));
    }
    if path.join(MODEL_FILE).is_file() {
        return Ok(found(path.to_path_buf()));
    }
    let root = path.join(CHECKPOINTS_DIR);
    let last = root.join(LAST_FILE);
    let pointed = named(&root, LAST_FILE)
        .map(|name| root.join(name))
        .filter(|dir| is_complete(dir));
    if let Some(dir) = pointed {
        return Ok(found(dir));
    }
    let newest = step_folders(&root)
        .into_iter()
        .filter(|&s| is_complete(&root.join(step_name(s))))
        .max();
    if let Some(step) = newest {
        let dir = root.join(step_name(step));
        let why = if last.exists() {
            "names no complete checkpoint"
        } else {
            "is missing (a save was interrupted)"
        };
        return Ok(Located {
            fallback: Some(format!(
                "{} {why}; using the newest complete checkpoint, {}",
                last.display(),
                dir.display()
            )),
            dir,
        });
    }
    if !path.exists() {
        return Err(CheckpointError::Io {
            path: path.to_path_buf(),
            cause: std::io::Error::new(std::io::ErrorKind::NotFound, "no such file or folder"),
        });
    }
    Err(missing(
        "is neither a run folder (with a checkpoint under checkpoints/) nor a checkpoint folder \
         (with model.safetensors)",
    ))
}

/// The best evaluation accuracy of a run so far (from its metrics and
/// `checkpoints/best`), and an evaluation that beat it, waiting for the
/// checkpoint of its step; both native front ends keep `best` this way.
pub struct BestSoFar {
    acc: Option<f32>,
    pending: Option<f32>,
}

impl BestSoFar {
    pub fn read(run_dir: &Path) -> Self {
        let acc = best_step(run_dir).and_then(|step| {
            read_metrics(run_dir)
                .ok()?
                .into_iter()
                .find(|r| r.step == step)
                .map(|r| r.test_acc)
        });
        BestSoFar { acc, pending: None }
    }

    /// An evaluation came back (the first of equals stays the best).
    pub fn evaluated(&mut self, e: &EpochReport) {
        self.pending = self
            .acc
            .is_none_or(|best| e.test_acc > best)
            .then_some(e.test_acc);
    }

    /// The checkpoint `dir` was written after the latest evaluation: name it
    /// `best` if that evaluation was the best so far.
    pub fn saved(&mut self, run_dir: &Path, dir: &Path) -> Result<(), CheckpointError> {
        if let Some(acc) = self.pending.take() {
            mark_best(run_dir, dir)?;
            self.acc = Some(acc);
        }
        Ok(())
    }
}
