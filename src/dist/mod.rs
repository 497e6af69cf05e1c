//! Several processes training one run (data parallelism, PyTorch DDP's
//! semantics) over MPI: `mpirun -np N resnet-wgpu train --no-gui ...`.
//!
//! Rank 0 starts the run as a process alone would (new, from initial
//! weights, or resumed) and owns the run folder; it sends the others the
//! run's config, and every rank builds its trainer for its share of the
//! data. Rank 0's weights, momenta and position are then broadcast, so every
//! rank starts identical, and from there each step averages the gradients
//! (`train::trainer::exchange`). Only rank 0 writes files and prints
//! progress.

#[cfg(feature = "mpi")]
pub mod mpi;

use std::sync::Arc;

use anyhow::{Context, Result, bail};

use crate::gpu::GpuContext;
use crate::run_folder::{self, RunFolder};
use crate::settings::RunSettings;
use crate::train::collective::Collective;
use crate::train::{Progress, TrainConfig, Trainer};

/// How many processes the launcher started this job with, from its
/// environment (Open MPI's, MPICH's or a PMI's variables); None when this
/// process was not launched by one. (The rank and the machine-local rank
/// come from MPI itself once it is up.)
pub fn launched_processes() -> Option<usize> {
    ["OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_SIZE"]
        .iter()
        .find_map(|n| std::env::var(n).ok()?.trim().parse::<usize>().ok())
}

/// Builds this rank's trainer, identical to every other rank's; rank 0 also
/// holds the run folder. Every rank must call it (it communicates).
pub fn start(
    ctx: Arc<GpuContext>,
    settings: &RunSettings,
    world: Box<dyn Collective>,
) -> Result<(Trainer, Option<RunFolder>)> {
    let (rank, ranks) = (world.rank(), world.size());
    let (mut trainer, folder) = if rank == 0 {
        let (trainer, folder) = run_folder::start::prepare_ranks(ctx, settings, ranks)?;
        let mut config = serde_json::to_vec(&trainer.config)?;
        world.broadcast_bytes(&mut config);
        (trainer, Some(folder))
    } else {
        let mut bytes = vec![];
        world.broadcast_bytes(&mut bytes);
        let config: TrainConfig =
            serde_json::from_slice(&bytes).context("the run's config from rank 0")?;
        (follower(ctx, settings, config, rank)?, None)
    };
    broadcast_state(&mut trainer, &*world)?;
    perturb_for_tests(&trainer, rank)?;
    trainer.join(world)?;
    Ok((trainer, folder))
}

/// A rank other than 0: the run's data from its own `--data` (or where the
/// run recorded it), checked against the run's by content.
fn follower(
    ctx: Arc<GpuContext>,
    settings: &RunSettings,
    config: TrainConfig,
    rank: usize,
) -> Result<Trainer> {
    let source = match &config.source {
        Some(saved) => settings.data.relocate(saved),
        None => bail!("the run's config names no data source"),
    };
    let data = crate::settings::load_source(&source, config.seed)
        .with_context(|| format!("rank {rank}: loading the run's data"))?;
    if let Some(how) = config
        .data
        .as_ref()
        .and_then(|id| id.difference(&data.identity()))
    {
        bail!(
            "rank {rank}: the data here differs from rank 0's ({how}); give every rank the same data"
        );
    }
    Ok(Trainer::new_rank(ctx, config, data, rank)?)
}

/// Rank 0's parameters, running statistics, momenta and position, on every
/// rank.
fn broadcast_state(trainer: &mut Trainer, world: &dyn Collective) -> Result<()> {
    let root = world.rank() == 0;
    let ctx = trainer.ctx().clone();
    let plan = trainer.plan();
    let state = plan
        .state_entries()
        .into_iter()
        .filter_map(|e| plan.state_tensor(&e.name));
    let momenta = plan.params().map(|(_, _, _, momentum)| momentum);
    for tensor in state.chain(momenta) {
        let mut bytes = match root {
            true => bytemuck::cast_slice(&tensor.read_f32(&ctx)?).to_vec(),
            false => vec![],
        };
        world.broadcast_bytes(&mut bytes);
        if !root {
            tensor.write_f32(&ctx, bytemuck::cast_slice(&bytes))?;
        }
    }
    let mut progress = serde_json::to_vec(&trainer.progress())?;
    world.broadcast_bytes(&mut progress);
    if !root {
        let progress: Progress = serde_json::from_slice(&progress)?;
        trainer.set_progress(progress).map_err(anyhow::Error::msg)?;
    }
    Ok(())
}

/// Test hook: `RESNET_WGPU_PERTURB_RANK=<r>` changes one weight of rank r
/// after the broadcast, as a bug that let replicas drift would (the drift
/// check must then stop the run, naming the rank).
fn perturb_for_tests(trainer: &Trainer, rank: usize) -> Result<()> {
    let asked = std::env::var("RESNET_WGPU_PERTURB_RANK").ok();
    if asked.and_then(|r| r.parse::<usize>().ok()) != Some(rank) {
        return Ok(());
    }
    let (_, value, _, _) = trainer
        .plan()
        .params()
        .next()
        .context("a model has parameters")?;
    let mut values = value.read_f32(trainer.ctx())?;
    values[0] += 1e-3;
    value.write_f32(trainer.ctx(), &values)?;
    Ok(())
}
