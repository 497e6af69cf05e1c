//! Starting a run from settings: a new run (with initial weights or none),
//! or a resumed one, checked against its saved config and data; either way
//! the run folder is locked first and its config written.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, bail};

use super::metrics::drop_records_after;
use super::{
    CHECKPOINTS_DIR, CONFIG_FILE, RunFolder, holds_run, in_use, is_in_use, pin_kernels,
    write_config,
};
use crate::data::DataSplit;
use crate::gpu::GpuContext;
use crate::settings::{RunSettings, Setting};
use crate::train::checkpoint::{self, LoadMode, StateDict};
use crate::train::{TrainConfig, Trainer};

/// Builds the trainer for `settings` (new, from initial weights, or
/// resumed) and takes its run folder. Nothing is created on disk until the trainer is built, and a run
/// folder this call created is removed again if the start fails.
pub fn prepare(ctx: Arc<GpuContext>, settings: &RunSettings) -> Result<(Trainer, RunFolder)> {
    prepare_ranks(ctx, settings, 1)
}

/// `prepare` for rank 0 of `ranks` processes training the run together
/// (the others build theirs from what rank 0 sends them: `dist`).
pub fn prepare_ranks(
    ctx: Arc<GpuContext>,
    settings: &RunSettings,
    ranks: usize,
) -> Result<(Trainer, RunFolder)> {
    if let Some(resume) = &settings.run.resume {
        return resume_run(ctx, settings, resume, ranks);
    }
    let data = settings.data.load(settings.recipe.seed)?;
    // Initial weights given as a run or checkpoint folder: its model file.
    let mut settings = settings.clone();
    if let Some(init) = &settings.recipe.init {
        settings.recipe.init = Some(model_file(init)?);
    }
    let config = TrainConfig {
        world_size: ranks,
        ..settings.config(&data)?
    };
    config
        .validate(data.train.shape)
        .map_err(anyhow::Error::msg)?;
    let name = settings
        .run
        .name
        .clone()
        .unwrap_or_else(|| default_name(&config));
    let run_dir = settings.run.out.join(name);
    let taken = || {
        anyhow::anyhow!(
            "{} already holds a run; continue it with {} {} or give a new {}",
            run_dir.display(),
            Setting::Resume,
            run_dir.display(),
            Setting::Name
        )
    };
    if is_in_use(&run_dir) {
        return Err(in_use(&run_dir));
    }
    if holds_run(&run_dir) {
        return Err(taken());
    }
    let mut trainer = Trainer::new(ctx, config, data)?;
    if let Some(init) = &settings.recipe.init {
        load_init(&mut trainer, init)?;
    }
    let created = !run_dir.exists();
    let folder = RunFolder::lock(&run_dir)?;
    let started = (|| {
        // Checked again under the lock: another process may have started
        // this run since the check above.
        if holds_run(&run_dir) {
            return Err(taken());
        }
        write_config(&run_dir, &trainer)
    })();
    if let Err(e) = started {
        if created && !holds_run(&run_dir) {
            drop(folder);
            let _ = std::fs::remove_dir_all(&run_dir);
        }
        return Err(e);
    }
    Ok((trainer, folder))
}

/// Loads initial weights; a classifier for another class count stays fresh.
fn load_init(trainer: &mut Trainer, init: &Path) -> Result<()> {
    let path = model_file(init)?;
    let dict = StateDict::read(&path)?;
    let skipped = checkpoint::load_model(trainer, &dict, &path, LoadMode::Init)?;
    if !skipped.is_empty() {
        eprintln!(
            "{}: kept the new classifier ({}): {} has one for another class count",
            Setting::Init,
            skipped.join(", "),
            path.display()
        );
    }
    Ok(())
}

/// `<model>-<data format>-<seconds since 1970>`.
fn default_name(config: &TrainConfig) -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let kind = config
        .source
        .as_ref()
        .map_or("data".into(), |s| format!("{:?}", s.kind));
    format!("{}-{kind}-{secs}", config.model.name).to_lowercase()
}

/// A model.safetensors path from a file or checkpoint/run folder (saying so
/// when a run folder's `last` was broken and its newest checkpoint is used).
pub fn model_file(path: &Path) -> Result<PathBuf> {
    if path.is_file() && path.extension().is_some_and(|e| e == "safetensors") {
        return Ok(path.to_path_buf());
    }
    Ok(locate(path)?.join(checkpoint::MODEL_FILE))
}

fn locate(path: &Path) -> Result<PathBuf> {
    let found = super::checkpoints::resolve(path)?;
    if let Some(note) = &found.fallback {
        eprintln!("warning: {note}");
    }
    Ok(found.dir)
}

/// The run folder a checkpoint folder belongs to (`<run>/checkpoints/step-N`),
/// or the folder itself for a checkpoint kept elsewhere.
fn run_of(checkpoint_dir: &Path) -> PathBuf {
    checkpoint_dir
        .parent()
        .filter(|p| p.file_name().is_some_and(|n| n == CHECKPOINTS_DIR))
        .and_then(Path::parent)
        .map_or_else(|| checkpoint_dir.to_path_buf(), Path::to_path_buf)
}

fn resume_run(
    ctx: Arc<GpuContext>,
    settings: &RunSettings,
    resume: &Path,
    ranks: usize,
) -> Result<(Trainer, RunFolder)> {
    // Lock first: tidying and reading must not race a live trainer.
    let named_run = resume.join(CHECKPOINTS_DIR).is_dir() || resume.join(CONFIG_FILE).is_file();
    let early_lock = if named_run {
        Some(RunFolder::lock(resume)?)
    } else {
        None
    };
    let (dir, folder) = match (locate(resume), early_lock) {
        (Ok(dir), Some(folder)) => (dir, folder),
        (Ok(dir), None) => {
            let folder = RunFolder::lock(&run_of(&dir))?;
            (dir, folder)
        }
        // Killed before its first checkpoint: the run starts again from step 0.
        (Err(_), Some(folder)) if folder.join(CONFIG_FILE).is_file() => {
            return restart_from_config(ctx, settings, folder, ranks);
        }
        (Err(e), _) => return Err(e),
    };
    let (config, progress, momenta) = checkpoint::read_trainer_state(&dir)?;
    let trainer_path = dir.join(checkpoint::TRAINER_FILE);
    let (config, data) = resumed_config(settings, config, &trainer_path, &folder, ranks)?;
    pin_kernels(&folder, &ctx);
    let mut trainer = Trainer::new(ctx, config, data)?;
    let model_path = dir.join(checkpoint::MODEL_FILE);
    let dict = StateDict::read(&model_path)?;
    checkpoint::load_model(&mut trainer, &dict, &model_path, LoadMode::Strict)?;
    checkpoint::load_momenta(&trainer, &momenta, &trainer_path)?;
    trainer
        .set_progress(progress)
        .map_err(|e| anyhow::anyhow!("{}: {e}", trainer_path.display()))?;
    drop_records_after(&folder, progress.global_step)?;
    write_config(&folder, &trainer)?;
    Ok((trainer, folder))
}

/// Resumes a run folder that has a config.json but no checkpoint yet: the
/// same config (and --init weights) from step 0.
fn restart_from_config(
    ctx: Arc<GpuContext>,
    settings: &RunSettings,
    folder: RunFolder,
    ranks: usize,
) -> Result<(Trainer, RunFolder)> {
    let path = folder.join(CONFIG_FILE);
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let config: TrainConfig = serde_json::from_str(&text)
        .with_context(|| format!("{}: not a run config", path.display()))?;
    let (config, data) = resumed_config(settings, config, &path, &folder, ranks)?;
    let init = config.init.clone();
    pin_kernels(&folder, &ctx);
    let mut trainer = Trainer::new(ctx, config, data)?;
    if let Some(init) = init {
        load_init(&mut trainer, Path::new(&init))?;
    }
    eprintln!(
        "{} has no checkpoint yet: starting its run again from step 0",
        folder.display()
    );
    drop_records_after(&folder, 0)?;
    write_config(&folder, &trainer)?;
    Ok((trainer, folder))
}

/// A saved run's config as this resume runs it, and its data: the saved
/// data source (moved to `--data` if given), checked by content; flags that
/// contradict the saved recipe or data are refused, naming each; `--epochs`
/// (to extend), `--max-steps` and a given `--precision` apply. `file` names
/// where the config came from, `run_dir` the run folder being continued.
fn resumed_config(
    settings: &RunSettings,
    mut config: TrainConfig,
    file: &Path,
    run_dir: &Path,
    ranks: usize,
) -> Result<(TrainConfig, DataSplit)> {
    check_run_folder_named(settings, run_dir)?;
    if let Some(epochs) = settings.recipe.epochs.filter(|&e| e < config.epochs) {
        use Setting::*;
        bail!(
            "{Epochs} {epochs}: the run in {} trains {} epochs; a resume may extend it (a larger \
             {Epochs}) but not shorten it: {MaxSteps} stops it earlier",
            run_dir.display(),
            config.epochs
        );
    }
    let contradictions = settings.contradictions(&config);
    if !contradictions.is_empty() {
        use Setting::*;
        bail!(
            "{Resume} {}: {} contradict{} the run's saved config; a resumed run keeps its model, \
             data and recipe (may change: {Epochs} to extend, {MaxSteps}, {ReportEvery}, \
             {StreamData}, {Workers}, {CheckpointEvery}, {Precision}, {Data} for the same data \
             elsewhere)",
            file.display(),
            contradictions.join(", "),
            if contradictions.len() == 1 { "s" } else { "" }
        );
    }
    let source = match &config.source {
        Some(saved) => settings.data.relocate(saved),
        None => settings.data.source()?,
    };
    let data = crate::settings::load_source(&source, config.seed).with_context(|| {
        format!(
            "loading the data of the run in {} (give its {} if it moved)",
            file.display(),
            Setting::Data
        )
    })?;
    check_same_data(&config, &data, file)?;
    config.source = Some(source);
    regroup(&mut config, ranks, file)?;
    let run = &settings.run;
    if let Some(epochs) = settings.recipe.epochs.filter(|&e| e > config.epochs) {
        config.epochs = epochs;
        config.schedule.epochs = epochs;
    }
    config.max_steps = run.max_steps;
    config.report_every = run.report_every;
    config.stream_data = run.stream_data;
    config.workers = run.workers;
    if run.checkpoint_every.is_some() {
        config.checkpoint_every = run.checkpoint_every;
    }
    // Checkpoints are f32 at either precision, so a resume may switch; the
    // loss scale starts again (it is not checkpointed).
    let default_precision = crate::settings::RunOptions::default().precision;
    if settings.given.contains(&Setting::Precision) || run.precision != default_precision {
        config.precision = run.precision;
    }
    config
        .validate(data.train.shape)
        .map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
    Ok((config, data))
}

/// With `--resume`, a typed `--out` or `--name` may only name the run folder
/// being continued: another one would be ignored (the run stays where it
/// is). Settings that only carry them (the window's) are not refused.
fn check_run_folder_named(settings: &RunSettings, run_dir: &Path) -> Result<()> {
    let run = &settings.run;
    let typed = |s: Setting| settings.given.contains(&s);
    let named = match (&run.name, typed(Setting::Out), typed(Setting::Name)) {
        (Some(name), _, true) | (Some(name), true, _) => run.out.join(name),
        (_, true, false) => run.out.join(run_dir.file_name().unwrap_or_default()),
        _ => return Ok(()),
    };
    let canonical = |p: &Path| p.canonicalize().unwrap_or_else(|_| p.to_path_buf());
    if canonical(&named) != canonical(run_dir) {
        use Setting::*;
        bail!(
            "{Out}/{Name} give {} but {Resume} continues the run in {}: a resumed run stays in \
             its folder; leave them out, or start a new run there without {Resume}",
            named.display(),
            run_dir.display()
        );
    }
    Ok(())
}

/// A resume with another number of processes keeps the run's global batch
/// (batch x processes), and so its steps, its data order and its schedule:
/// each process takes an equal part of it. Refused when the processes
/// cannot split it evenly. (Batch norm then sees another per-process batch,
/// as it would in PyTorch's DDP.)
fn regroup(config: &mut TrainConfig, ranks: usize, file: &Path) -> Result<()> {
    if config.world_size == ranks {
        return Ok(());
    }
    let global = config.batch_size * config.world_size;
    if global % ranks != 0 {
        bail!(
            "{}: the run trains {} images per step ({} processes of {}); {ranks} processes \
             cannot split them evenly: resume with a process count that divides {global}",
            file.display(),
            global,
            config.world_size,
            config.batch_size
        );
    }
    eprintln!(
        "note: the run trained with {} process(es) of batch {}; it goes on with {ranks} of \
         batch {} (the same {global} images per step, in the same order)",
        config.world_size,
        config.batch_size,
        global / ranks
    );
    config.batch_size = global / ranks;
    config.world_size = ranks;
    Ok(())
}

/// The data given for a resume is the data the run trained on: by content
/// when the run recorded it (the folder may have moved), else by name.
fn check_same_data(config: &TrainConfig, data: &DataSplit, dir: &Path) -> Result<()> {
    let differs = match &config.data {
        Some(saved) => saved.difference(&data.identity()),
        None => (data.name != config.dataset)
            .then(|| format!("'{}' instead of '{}'", data.name, config.dataset)),
    };
    if let Some(how) = differs {
        bail!(
            "{}: the run trained on other data than the data given ({how}); give the same \
             {}/{}",
            dir.display(),
            Setting::Dataset,
            Setting::Data
        );
    }
    Ok(())
}
