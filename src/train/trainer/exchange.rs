//! Data parallelism inside a step (PyTorch DDP's semantics). With several
//! processes, a step is recorded in two parts: augment -> forward -> loss ->
//! backward, then SGD. Between them each process reads its gradients back,
//! they are summed over all processes and divided by their number, and
//! written back, so every process runs the same SGD step on the same
//! weights. The training metrics' sums travel with a stop flag in one small
//! all-reduce, so the reports are the whole job's and a stop asked of one
//! process stops every process after the same step. Batch norm keeps each
//! process's batch statistics (DDP's default).
//!
//! Under mixed precision the loss scale's overflow check runs after the
//! exchange, on gradients that are then the same everywhere (an inf or NaN
//! in any process's gradients makes the sum inf or NaN), so every process
//! skips the same steps without a flag of its own.

// The browser trains alone: the exchange is built, never used, there.
#![cfg_attr(target_arch = "wasm32", allow(dead_code, unused_imports))]

use web_time::Instant;

use super::Trainer;
use crate::gpu::GpuError;
use crate::ops::loss::{
    METRIC_BATCH_LOSS, METRIC_CORRECT, METRIC_LOSS_SUM, METRIC_SAMPLES, METRIC_TOP5, METRICS_LEN,
};
use crate::train::collective::{Collective, ExchangeStats};

/// Test hook: `RESNET_WGPU_KILL_RANK=<rank>:<step>` kills this process with
/// SIGKILL before the exchange of that step, as `kill -9` would (the fault
/// tests check that the job then ends, naming the rank, and never hangs).
#[cfg(not(target_arch = "wasm32"))]
fn killed_for_tests(rank: usize, step: u64) {
    let asked = std::env::var("RESNET_WGPU_KILL_RANK").ok();
    if asked.as_deref() == Some(format!("{rank}:{step}").as_str()) {
        eprintln!("RESNET_WGPU_KILL_RANK: rank {rank} kills itself at step {step}");
        let pid = std::process::id().to_string();
        let _ = std::process::Command::new("kill")
            .args(["-KILL", &pid])
            .status();
    }
}

/// The metric words that are sums over samples (a process adds its own).
const SUMMED: [usize; 4] = [METRIC_LOSS_SUM, METRIC_CORRECT, METRIC_SAMPLES, METRIC_TOP5];

pub(super) struct Exchange {
    world: Box<dyn Collective>,
    pub(super) stats: ExchangeStats,
    /// This process was asked to stop; it says so with the next step.
    stop_asked: bool,
    /// Some process asked: all stop after the same step.
    pub(super) stop_agreed: bool,
    /// The training metrics as last written into this process's
    /// accumulator: the job's sums since the epoch began.
    written: [f32; METRICS_LEN],
}

impl Trainer {
    #[cfg(not(target_arch = "wasm32"))]
    /// Trains together with the other processes of `world` from now on:
    /// their weights must already be equal (`dist` broadcasts rank 0's).
    pub fn join(&mut self, world: Box<dyn Collective>) -> Result<(), GpuError> {
        if world.size() != self.share.ranks || world.rank() != self.share.rank {
            return Err(GpuError::Setup(format!(
                "this trainer is rank {} of {}, the job's process is rank {} of {}",
                self.share.rank,
                self.share.ranks,
                world.rank(),
                world.size()
            )));
        }
        let metrics = self
            .plan
            .tensor(self.plan.train_metrics)
            .read_f32(&self.ctx)?;
        let mut written = [0.0; METRICS_LEN];
        written.copy_from_slice(&metrics[..METRICS_LEN]);
        let bytes_per_step = self.plan.gradient_chunks().map(|t| t.size_bytes()).sum();
        self.exchange = Some(Exchange {
            world,
            stats: ExchangeStats {
                bytes_per_step,
                ..Default::default()
            },
            stop_asked: false,
            stop_agreed: false,
            written,
        });
        Ok(())
    }

    /// Whether other processes train this run too.
    pub fn is_distributed(&self) -> bool {
        self.exchange.is_some()
    }

    /// Stop after the next step, every process together (alone: at once).
    pub fn request_stop(&mut self) {
        if let Some(x) = &mut self.exchange {
            x.stop_asked = true;
        }
    }

    /// The processes agreed to stop: no more steps.
    pub fn stop_agreed(&self) -> bool {
        self.exchange.as_ref().is_some_and(|x| x.stop_agreed)
    }

    /// How long the gradient exchange took so far, and how much it moved.
    pub fn exchange_stats(&self) -> Option<ExchangeStats> {
        self.exchange.as_ref().map(|x| x.stats)
    }

    #[cfg(not(target_arch = "wasm32"))]
    /// Averages this step's gradients over all processes and makes the
    /// training metrics the job's (after the forward and backward were
    /// submitted; blocks until they are done). `epoch_start`: the
    /// accumulator was cleared at this step.
    pub(super) fn exchange_gradients(
        &mut self,
        computed: wgpu::SubmissionIndex,
        epoch_start: bool,
    ) -> Result<(), GpuError> {
        let Some(x) = &mut self.exchange else {
            return Ok(());
        };
        #[cfg(not(target_arch = "wasm32"))]
        killed_for_tests(x.world.rank(), self.progress.global_step);
        let (ctx, plan) = (&self.ctx, &self.plan);
        let waiting = Instant::now();
        // The forward and backward first, timed apart from the exchange.
        ctx.device
            .poll(wgpu::PollType::Wait {
                submission_index: Some(computed),
                timeout: None,
            })
            .map_err(|e| GpuError::Poll {
                what: "the step's forward and backward".into(),
                message: e.to_string(),
            })?;
        let started = Instant::now();
        let mut chunks = plan
            .gradient_chunks()
            .map(|t| t.read_f32(ctx))
            .collect::<Result<Vec<_>, _>>()?;
        let metrics_tensor = plan.tensor(plan.train_metrics);
        let mut metrics = metrics_tensor.read_f32(ctx)?;
        let read = Instant::now();

        let ranks = x.world.size() as f32;
        for chunk in &mut chunks {
            x.world.sum_f32(chunk);
            chunk.iter_mut().for_each(|g| *g /= ranks);
        }
        if epoch_start {
            x.written = [0.0; METRICS_LEN];
        }
        // [stop, each summed metric's increase, batch loss].
        let mut control = vec![f32::from(u8::from(x.stop_asked))];
        control.extend(SUMMED.map(|w| metrics[w] - x.written[w]));
        control.push(metrics[METRIC_BATCH_LOSS]);
        x.world.sum_f32(&mut control);
        let reduced = Instant::now();

        for (tensor, chunk) in plan.gradient_chunks().zip(&chunks) {
            tensor.write_f32(ctx, chunk)?;
        }
        for (i, w) in SUMMED.into_iter().enumerate() {
            x.written[w] += control[1 + i];
            metrics[w] = x.written[w];
        }
        metrics[METRIC_BATCH_LOSS] = control[1 + SUMMED.len()] / ranks;
        metrics_tensor.write_f32(ctx, &metrics)?;
        x.stop_agreed |= control[0] > 0.0;

        let s = &mut x.stats;
        s.steps += 1;
        s.compute_wait_s += (started - waiting).as_secs_f64();
        s.readback_s += (read - started).as_secs_f64();
        s.all_reduce_s += (reduced - read).as_secs_f64();
        s.write_s += reduced.elapsed().as_secs_f64();
        Ok(())
    }

    #[cfg(not(target_arch = "wasm32"))]
    /// Makes the evaluation metrics the job's: each process evaluated its
    /// share of the set (blocks until its last batch is done).
    pub(super) fn sum_eval_metrics(&mut self) -> Result<(), GpuError> {
        let Some(x) = &mut self.exchange else {
            return Ok(());
        };
        let tensor = self.plan.tensor(self.plan.eval_metrics);
        let mut metrics = tensor.read_f32(&self.ctx)?;
        let mut sums: Vec<f32> = SUMMED.iter().map(|&w| metrics[w]).collect();
        x.world.sum_f32(&mut sums);
        for (w, sum) in SUMMED.into_iter().zip(sums) {
            metrics[w] = sum;
        }
        tensor.write_f32(&self.ctx, &metrics)
    }

    #[cfg(not(target_arch = "wasm32"))]
    /// After an epoch's last step: every process must hold the same weights.
    /// Compares a checksum of each one's parameters and names those that
    /// differ from rank 0's.
    pub(super) fn check_replicas(&mut self) -> Result<(), GpuError> {
        let Some(x) = &self.exchange else {
            return Ok(());
        };
        let mut hasher = xxhash_rust::xxh3::Xxh3::new();
        for chunk in self.plan.value_chunks() {
            hasher.update(bytemuck::cast_slice(&chunk.read_f32(&self.ctx)?));
        }
        let sums = x.world.gather_u64(hasher.digest());
        let drifted: Vec<String> = (1..sums.len())
            .filter(|&r| sums[r] != sums[0])
            .map(|r| r.to_string())
            .collect();
        if drifted.is_empty() {
            return Ok(());
        }
        Err(GpuError::Setup(format!(
            "after epoch {}, rank(s) {} hold other weights than rank 0 (their checksums \
             differ): the processes drifted apart, so the run stops",
            self.progress.epoch,
            drifted.join(", ")
        )))
    }
}

/// The browser trains alone (no blocking readback there): nothing to exchange.
#[cfg(target_arch = "wasm32")]
impl Trainer {
    pub(super) fn exchange_gradients(
        &mut self,
        _: wgpu::SubmissionIndex,
        _: bool,
    ) -> Result<(), GpuError> {
        Ok(())
    }

    pub(super) fn sum_eval_metrics(&mut self) -> Result<(), GpuError> {
        Ok(())
    }

    pub(super) fn check_replicas(&mut self) -> Result<(), GpuError> {
        Ok(())
    }
}
