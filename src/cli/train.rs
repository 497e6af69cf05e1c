//! `train` in the terminal: one process, or one rank of an MPI job.

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result};

use super::info::print_kernel_choices;
use crate::gpu::{BackendChoice, GpuContext, TunePolicy};
use crate::headless;
use crate::run_folder;
use crate::settings::RunSettings;
use crate::train::{FeedMode, Trainer};

use super::TrainArgs;

/// A process alone: the run folder, the run, what it did.
pub fn train(ctx: Arc<GpuContext>, settings: &RunSettings) -> Result<Option<i32>> {
    let (trainer, run_dir) = run_folder::prepare(ctx.clone(), settings)?;
    run(&ctx, trainer, Some(&run_dir))
}

/// Trains to the end or to a stop signal; Some(signal) when one stopped
/// it. Rank 0 of a job (or a process alone, `run_dir` given) shows the run;
/// the other ranks are quiet.
fn run(ctx: &GpuContext, mut trainer: Trainer, run_dir: Option<&Path>) -> Result<Option<i32>> {
    headless::handle_stop_signals().context("installing the Ctrl-C/SIGTERM handler")?;
    let shown = run_dir.is_some();
    if let Some(dir) = run_dir {
        header(ctx, &trainer, dir);
    }
    let options = headless::RunOptions {
        quiet: !shown,
        checkpoint_every: trainer.config.checkpoint_every,
    };
    let result = headless::run_in(&mut trainer, run_dir, options)?;
    if !shown {
        return Ok(result.interrupted_by);
    }
    if let Some(c) = &result.checkpoint {
        out!("checkpoint: {}", c.display());
    }
    if let Some(line) = exchange_line(&trainer) {
        out!("{line}");
    }
    if result.interrupted_by.is_some() {
        return Ok(result.interrupted_by);
    }
    if let Some(last) = &result.last {
        out!(
            "done: {} loss {:.4}, accuracy {:.2}% after {} steps",
            trainer.eval_name(),
            last.test_loss,
            100.0 * last.test_acc,
            last.step
        );
    }
    let skipped = trainer.skipped_files();
    if skipped > 0 {
        out!(
            "skipped {skipped} unreadable pictures (each named in a warning above; `check --data` lists them)"
        );
    }
    Ok(None)
}

/// What the run is: adapter, model, batch, memory, kernels, data path.
fn header(ctx: &GpuContext, trainer: &Trainer, run_dir: &Path) {
    for warning in trainer.config.warnings() {
        eprintln!("warning: {warning}");
    }
    let summary = trainer.plan().summary();
    let c = &trainer.config;
    out!("adapter: {}", ctx.describe());
    let batch = match c.world_size {
        1 => format!("batch {}", c.batch_size),
        n => format!(
            "batch {} x {n} processes = {} per step",
            c.batch_size,
            c.batch_size * n
        ),
    };
    out!(
        "model: {} ({} parameters), dataset: {}, {batch}, {} steps per epoch",
        c.model,
        trainer.plan().network.parameter_count(),
        c.dataset,
        trainer.steps_per_epoch
    );
    out!(
        "memory plan: {:.1} MiB in {} tensors; run folder: {}",
        summary.total_bytes as f64 / (1 << 20) as f64,
        summary.tensors,
        run_dir.display()
    );
    print_kernel_choices(trainer.plan(), false);
    print_feed(trainer, ctx);
}

/// Under MPI: how much the gradient exchange moved and what share of the
/// steps it took.
fn exchange_line(trainer: &Trainer) -> Option<String> {
    let s = trainer.exchange_stats().filter(|s| s.steps > 0)?;
    let per_step = |seconds: f64| 1e3 * seconds / s.steps as f64;
    let exchange = s.readback_s + s.all_reduce_s + s.write_s;
    Some(format!(
        "gradient exchange ({} processes): {:.2} MB per step; per step {:.1} ms reading back, \
         {:.1} ms all-reduce, {:.1} ms writing back = {:.0}% of the step ({:.1} ms)",
        trainer.config.world_size,
        s.bytes_per_step as f64 / 1e6,
        per_step(s.readback_s),
        per_step(s.all_reduce_s),
        per_step(s.write_s),
        100.0 * exchange / s.step_s.max(1e-9),
        per_step(s.step_s)
    ))
}

/// How the batches reach the GPU, when not the default (resident).
fn print_feed(trainer: &Trainer, ctx: &GpuContext) {
    let (train, test) = trainer.feed_modes();
    if train == FeedMode::Pipelined {
        out!(
            "data: pictures decoded by {} worker threads ahead of the GPU (RandomResizedCrop + \
             flip for training, resize to {:.0}% and center crop for evaluation)",
            match trainer.config.workers {
                0 => crate::data::default_workers(),
                n => n,
            },
            100.0 / crate::data::transform::EVAL_CROP,
        );
    } else if train == FeedMode::Streamed || test == FeedMode::Streamed {
        out!(
            "data: {} uploaded per batch (larger than one storage binding of {} MiB, or --stream-data)",
            match (train, test) {
                (FeedMode::Streamed, FeedMode::Streamed) => "training and evaluation images",
                (FeedMode::Streamed, _) => "training images",
                _ => "evaluation images",
            },
            ctx.limits.max_storage_buffer_binding_size >> 20
        );
    }
}

/// Whether this process was launched as one of several of an MPI job.
pub fn launched_as_job() -> bool {
    crate::dist::launched_processes().is_some_and(|size| size > 1)
}

/// One rank of an MPI job: MPI up, this rank's adapter, the run started
/// with the others, trained. An error on any rank ends the whole job
/// (MPI_Abort), naming the rank.
#[cfg(feature = "mpi")]
pub fn train_job(
    backend: BackendChoice,
    tune: TunePolicy,
    adapter: Option<usize>,
    args: &TrainArgs,
) -> Result<Option<i32>> {
    use std::rc::Rc;

    use crate::dist::mpi::MpiWorld;
    use crate::train::collective::Collective;
    super::name_settings_by_flags();
    let timeout = std::time::Duration::from_secs(args.collective_timeout);
    let world = Rc::new(MpiWorld::init(timeout).context("MPI did not initialize")?);
    let rank = world.rank();
    let trained = (|| {
        let adapters = GpuContext::adapters(backend).len();
        let adapter = adapter.or((adapters > 0).then(|| world.local_rank() % adapters));
        let ctx = Arc::new(GpuContext::on_adapter(backend, adapter)?);
        ctx.set_tune_policy(tune);
        let settings = args.settings();
        let (trainer, folder) =
            crate::dist::start(ctx.clone(), &settings, Box::new(world.clone()))?;
        run(&ctx, trainer, folder.as_deref())
    })();
    match trained {
        Ok(signal) => Ok(signal),
        Err(e) => {
            eprintln!("rank {rank}: error: {e:#}");
            world.abort(1)
        }
    }
}

/// Without MPI in the build, a process launched as one of several refuses
/// (N copies would each train alone and write the same run folder).
#[cfg(not(feature = "mpi"))]
pub fn train_job(
    _: BackendChoice,
    _: TunePolicy,
    _: Option<usize>,
    _: &TrainArgs,
) -> Result<Option<i32>> {
    let size = crate::dist::launched_processes().unwrap_or(0);
    anyhow::bail!(
        "launched as one of {size} MPI processes, but this build has no MPI: build with \
         `cargo build --release --features mpi` (Debian: apt-get install libopenmpi-dev \
         openmpi-bin libclang-dev)"
    )
}
