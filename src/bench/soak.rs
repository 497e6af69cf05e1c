//! `bench soak`: a long run through the same driver as `train` (evaluation
//! every epoch, a checkpoint every N steps, a run folder) that samples what
//! a leak would grow: the process's resident memory, its open file
//! descriptors and the GPU memory wgpu reports, after each epoch; then checks
//! that metrics.jsonl holds every evaluation once. Not a test: minutes long.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Result, bail};
use web_time::Instant;

use crate::driver::{RunDriver, RunEvent, RunFiles, RunState};
use crate::gpu::GpuContext;
use crate::train::CheckpointEvery;

#[derive(clap::Args, Clone, Debug)]
pub struct BenchSoakOptions {
    #[arg(long, default_value = "resnet8")]
    pub model: String,
    /// Steps in all.
    #[arg(long, default_value_t = 2000, value_parser = crate::cli::bounded(1, 10_000_000))]
    pub steps: usize,
    /// Steps per epoch (the built-in set is sized to it; an evaluation each).
    #[arg(long, default_value_t = 100, value_parser = crate::cli::bounded(1, 1_000_000))]
    pub steps_per_epoch: usize,
    #[arg(long, default_value_t = 16, value_parser = crate::cli::bounded(1, crate::train::trainer::MAX_BATCH))]
    pub batch_size: usize,
    /// A checkpoint every this many steps (besides each epoch's end).
    #[arg(long, default_value_t = 100, value_parser = crate::cli::bounded(1, 10_000_000))]
    pub checkpoint_every: usize,
    /// Where the run folder goes [default: a fresh one under the system's
    /// temporary folder, removed at the end].
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
}

/// What a leak would grow, at one point of the run.
#[derive(Clone, Copy, Debug)]
pub struct SoakSample {
    pub step: u64,
    pub seconds: f64,
    pub rss_mib: Option<f64>,
    pub open_fds: Option<usize>,
    pub gpu_mib: Option<f64>,
}

impl SoakSample {
    fn take(ctx: &GpuContext, step: u64, started: Instant) -> Self {
        let report = ctx.device.generate_allocator_report();
        SoakSample {
            step,
            seconds: started.elapsed().as_secs_f64(),
            rss_mib: resident_mib(),
            open_fds: std::fs::read_dir("/proc/self/fd").ok().map(|d| d.count()),
            gpu_mib: report.map(|r| r.total_allocated_bytes as f64 / (1 << 20) as f64),
        }
    }

    fn line(&self) -> String {
        let show = |v: Option<f64>| v.map_or("-".into(), |v| format!("{v:.1}"));
        format!(
            "step {:>7}  {:>8.1} s  RSS {:>8} MiB  open files {:>4}  GPU {:>8} MiB",
            self.step,
            self.seconds,
            show(self.rss_mib),
            self.open_fds.map_or("-".into(), |n| n.to_string()),
            show(self.gpu_mib)
        )
    }
}

/// VmRSS from /proc/self/status (Linux), in MiB.
fn resident_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

/// Runs the soak and prints a sample after each epoch, then the first and
/// last side by side; fails if metrics.jsonl lacks an evaluation or holds
/// one twice.
pub fn bench_soak(ctx: Arc<GpuContext>, o: &BenchSoakOptions) -> Result<Vec<SoakSample>> {
    let epochs = o.steps.div_ceil(o.steps_per_epoch);
    let temporary = o.out.is_none();
    let out = o.out.clone().unwrap_or_else(|| {
        std::env::temp_dir().join(format!("resnet-wgpu-soak-{}", std::process::id()))
    });
    let mut args = crate::cli::TrainArgs::defaults();
    args.model.model = o.model.clone();
    args.batch_size = o.batch_size;
    args.epochs = Some(epochs);
    args.max_steps = Some(o.steps as u64);
    args.data.synthetic_train = o.batch_size * o.steps_per_epoch;
    args.data.synthetic_test = 4 * o.batch_size;
    args.out = out.clone();
    args.name = Some("soak".into());
    let settings = args.settings();
    let (mut trainer, folder) = crate::run_folder::prepare(ctx.clone(), &settings)?;
    let every = Some(CheckpointEvery::Steps(o.checkpoint_every as u64));
    let mut driver = RunDriver::with_files(&trainer, RunFiles::open(&folder)?, every);
    println!(
        "soak: {} at batch {}, {} steps ({} epochs of {}, an evaluation each), a checkpoint \
         every {} steps, on {}",
        o.model,
        o.batch_size,
        o.steps,
        epochs,
        o.steps_per_epoch,
        o.checkpoint_every,
        ctx.adapter_info.name
    );
    let started = Instant::now();
    let mut samples = vec![SoakSample::take(&ctx, 0, started)];
    println!("{}", samples[0].line());
    let (mut evaluations, mut checkpoints) = (0usize, 0usize);
    let depth = 2 * trainer.config.report_every as u64 + 1;
    loop {
        for event in driver.tick(&mut trainer, depth)? {
            match event {
                RunEvent::Epoch(e) => {
                    evaluations += 1;
                    let sample = SoakSample::take(&ctx, e.step, started);
                    println!("{}", sample.line());
                    samples.push(sample);
                }
                RunEvent::Saved(_) => checkpoints += 1,
                _ => {}
            }
        }
        match &driver.state {
            RunState::Failed(why) => bail!("{why}"),
            RunState::Finished | RunState::Stopped => break,
            _ if !trainer.is_idle() => trainer.wait_for_report()?,
            _ => {}
        }
    }
    let records = crate::run_folder::read_metrics(&folder)?;
    let steps: Vec<u64> = records.iter().map(|r| r.step).collect();
    let once = steps.windows(2).all(|w| w[0] < w[1]);
    println!(
        "{} evaluations, {} checkpoints; metrics.jsonl: {} records, {}",
        evaluations,
        checkpoints,
        records.len(),
        if once && records.len() == evaluations {
            "every evaluation once".to_string()
        } else {
            format!("steps {steps:?}")
        }
    );
    if let (Some(first), Some(last)) = (samples.get(1), samples.last()) {
        println!("after the first epoch: {}", first.line());
        println!("at the end:            {}", last.line());
    }
    drop((driver, trainer, folder));
    if temporary {
        let _ = std::fs::remove_dir_all(&out);
    }
    if !once || records.len() != evaluations {
        bail!(
            "metrics.jsonl holds {} records for {evaluations} evaluations",
            records.len()
        );
    }
    Ok(samples)
}
