//! The run folder shared by every native front end: runs/<name>/ holds
//! config.json, metrics.jsonl (one line per evaluation) and checkpoints/, so a
//! run started in the window can be resumed in the terminal and the other way
//! round.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, bail};

use crate::cli::TrainArgs;
use crate::data::DataSplit;
use crate::gpu::{GpuContext, RunKernels};
use crate::train::checkpoint::{self, LoadMode, StateDict};
use crate::train::layout::{CHECKPOINTS_DIR, CONFIG_FILE, KERNELS_FILE, LOCK_FILE, METRICS_FILE};
use crate::train::{EpochReport, TrainConfig, Trainer};

/// metrics.jsonl of a run, opened for appending (a resumed run continues it).
pub struct MetricsLog {
    path: PathBuf,
    file: std::fs::File,
}

impl MetricsLog {
    pub fn open(run_dir: &Path) -> Result<Self> {
        let path = run_dir.join(METRICS_FILE);
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
        for line in checkpoint::clean_stale(dir) {
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
        "{} is in use by another trainer (process {}); wait for it to finish, or pass --name \
         for a new run",
        dir.display(),
        holder.trim()
    )
}

/// Whether `dir` already holds a run (its config or a checkpoint).
fn holds_run(dir: &Path) -> bool {
    dir.join(CONFIG_FILE).exists() || dir.join(CHECKPOINTS_DIR).exists()
}

/// Builds the trainer for `args` (new, --init or --resume) and takes its run
/// folder. Nothing is created on disk until the trainer is built, and a run
/// folder this call created is removed again if the start fails.
pub fn prepare(ctx: Arc<GpuContext>, args: &TrainArgs) -> Result<(Trainer, RunFolder)> {
    if let Some(resume) = &args.resume {
        return resume_run(ctx, args, resume);
    }
    let data = args.data.load(args.seed)?;
    let config = args.config(&data)?;
    let name = args.name.clone().unwrap_or_else(|| default_name(&config));
    let run_dir = args.out.join(name);
    let taken = || {
        anyhow::anyhow!(
            "{} already holds a run; pass --resume {} to continue it or --name for a new one",
            run_dir.display(),
            run_dir.display()
        )
    };
    if is_in_use(&run_dir) {
        return Err(in_use(&run_dir));
    }
    if holds_run(&run_dir) {
        return Err(taken());
    }
    let mut trainer = Trainer::new(ctx, config, data)?;
    if let Some(init) = &args.init {
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

/// Loads `--init` weights; a classifier for another class count stays fresh.
fn load_init(trainer: &mut Trainer, init: &Path) -> Result<()> {
    let path = model_file(init)?;
    let dict = StateDict::read(&path)?;
    let skipped = checkpoint::load_model(trainer, &dict, &path, LoadMode::Init)?;
    if !skipped.is_empty() {
        eprintln!(
            "--init: kept the new classifier ({}): {} has one for another class count",
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
    let found = checkpoint::resolve(path)?;
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
    args: &TrainArgs,
    resume: &Path,
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
            return restart_from_config(ctx, args, folder);
        }
        (Err(e), _) => return Err(e),
    };
    let (config, progress, momenta) = checkpoint::read_trainer_state(&dir)?;
    let trainer_path = dir.join(checkpoint::TRAINER_FILE);
    let (config, data) = resumed_config(args, config, &trainer_path)?;
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
    args: &TrainArgs,
    folder: RunFolder,
) -> Result<(Trainer, RunFolder)> {
    let path = folder.join(CONFIG_FILE);
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let config: TrainConfig = serde_json::from_str(&text)
        .with_context(|| format!("{}: not a run config", path.display()))?;
    let (config, data) = resumed_config(args, config, &path)?;
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
/// where the config came from.
fn resumed_config(
    args: &TrainArgs,
    mut config: TrainConfig,
    file: &Path,
) -> Result<(TrainConfig, DataSplit)> {
    let contradictions = args.contradictions(&config);
    if !contradictions.is_empty() {
        bail!(
            "--resume {}: {} contradict{} the run's saved config; a resumed run keeps its model, \
             data and recipe (may change: --epochs to extend, --max-steps, --report-every, \
             --stream-data, --workers, --checkpoint-every, --precision, --data for the same data \
             elsewhere)",
            file.display(),
            contradictions.join(", "),
            if contradictions.len() == 1 { "s" } else { "" }
        );
    }
    let source = match &config.source {
        Some(saved) => args.data.relocate(saved),
        None => args.data.source()?,
    };
    let data = crate::cli::load_source(&source, config.seed).with_context(|| {
        format!(
            "loading the data of the run in {} (pass --data if it moved)",
            file.display()
        )
    })?;
    check_same_data(&config, &data, file)?;
    config.source = Some(source);
    if let Some(epochs) = args.epochs.filter(|&e| e > config.epochs) {
        config.epochs = epochs;
        config.schedule.epochs = epochs;
    }
    config.max_steps = args.max_steps;
    config.report_every = args.report_every;
    config.stream_data = args.stream_data;
    config.workers = args.workers;
    if args.checkpoint_every.is_some() {
        config.checkpoint_every = args.checkpoint_every;
    }
    // Checkpoints are f32 at either precision, so a resume may switch; the
    // loss scale starts again (it is not checkpointed).
    if args.given.contains("--precision") || args.precision != TrainArgs::defaults().precision {
        config.precision = args.precision;
    }
    config
        .validate(data.train.shape)
        .map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
    Ok((config, data))
}

/// config.json as the run now stands (a resume may extend or move it).
/// Writes the run's config.json and the kernels its plan runs
/// (kernel-choices.json, which a resume on the same adapter runs again).
fn write_config(run_dir: &Path, trainer: &Trainer) -> Result<()> {
    let json = serde_json::to_string_pretty(&trainer.config)?;
    checkpoint::write_atomically(&run_dir.join(CONFIG_FILE), json.as_bytes())?;
    let kernels = trainer.ctx().choices.lock().unwrap().used();
    let json = serde_json::to_string_pretty(&kernels)?;
    checkpoint::write_atomically(&run_dir.join(KERNELS_FILE), json.as_bytes())?;
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
            "{}: the run trained on other data than the data given ({how}); pass the same \
             --dataset/--data",
            dir.display()
        );
    }
    Ok(())
}

/// Drops metrics.jsonl records past `step` (written after the checkpoint a
/// resume starts from, e.g. before a kill), so the resumed run does not
/// record them twice. Rewritten atomically; a missing file is fine.
fn drop_records_after(run_dir: &Path, step: u64) -> Result<()> {
    let read = read_metrics_log(run_dir)?;
    let records = read.records;
    let kept: Vec<&EpochReport> = records.iter().filter(|r| r.step <= step).collect();
    if read.torn {
        eprintln!(
            "metrics.jsonl: dropped a torn last line (an append cut short by a crash or a full \
             disk)"
        );
    }
    if kept.len() == records.len() && !read.unterminated {
        return Ok(());
    }
    let mut text = String::new();
    for r in &kept {
        text.push_str(&serde_json::to_string(r)?);
        text.push('\n');
    }
    checkpoint::write_atomically(&run_dir.join(METRICS_FILE), text.as_bytes())?;
    if kept.len() < records.len() {
        eprintln!(
            "metrics.jsonl: dropped {} record(s) past step {step}, where this run resumes",
            records.len() - kept.len()
        );
    }
    Ok(())
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
        let acc = checkpoint::best_step(run_dir).and_then(|step| {
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
    pub fn saved(&mut self, run_dir: &Path, dir: &Path) -> Result<()> {
        if let Some(acc) = self.pending.take() {
            checkpoint::mark_best(run_dir, dir)?;
            self.acc = Some(acc);
        }
        Ok(())
    }
}

/// The evaluations a run folder has recorded (none for a new run).
pub fn read_metrics(run_dir: &Path) -> Result<Vec<EpochReport>> {
    Ok(read_metrics_log(run_dir)?.records)
}

/// metrics.jsonl as read: its records, and whether its end needs repair.
struct MetricsLogRead {
    records: Vec<EpochReport>,
    /// The last line was cut short (the disk filled, or the process died,
    /// during an append): not newline-terminated and not a record.
    torn: bool,
    /// The file does not end with a newline (the next append would join it).
    unterminated: bool,
}

/// Reads metrics.jsonl: a torn last line is the crash it is and is left
/// out; an unreadable line anywhere else is damage and refused, naming it.
fn read_metrics_log(run_dir: &Path) -> Result<MetricsLogRead> {
    let path = run_dir.join(METRICS_FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let unterminated = !text.is_empty() && !text.ends_with('\n');
    let lines: Vec<&str> = text.lines().collect();
    let mut read = MetricsLogRead {
        records: vec![],
        torn: false,
        unterminated,
    };
    for (i, line) in lines.iter().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str(line) {
            Ok(record) => read.records.push(record),
            Err(_) if unterminated && i + 1 == lines.len() => read.torn = true,
            Err(e) => {
                return Err(e).with_context(|| {
                    format!("{} line {}: not a metrics record", path.display(), i + 1)
                });
            }
        }
    }
    Ok(read)
}
