//! `bench train`: images/s of whole training steps (augment, forward, loss,
//! backward, SGD in one submit) on the built-in dataset, the time to the end of
//! the first step (pipeline compilation included), and the CPU time spent
//! recording a step (uploads, uniforms and command encoding, up to the submit).

use std::sync::Arc;

use anyhow::Result;
use web_time::Instant;

use crate::data::{SyntheticOptions, synthetic};
use crate::gpu::{self, GpuContext, Precision, time_dispatches};
use crate::ops::conv::ConvTuning;

use super::{GemmVersion, gemm_rate};
use crate::data::channel_statistics;
use crate::model::{ModelSpec, ShortcutKind};
use crate::shapes::AugmentConfig;
use crate::train::{TrainConfig, Trainer};

#[derive(clap::Args, Clone, Debug)]
pub struct BenchTrainOptions {
    /// Models to time.
    #[arg(long, value_delimiter = ',', default_value = "resnet20,resnet56")]
    pub models: Vec<String>,
    #[arg(long, default_value_t = 128, value_parser = crate::cli::bounded(1, crate::train::trainer::MAX_BATCH))]
    pub batch_size: usize,
    /// Timed steps per model (after the first, which compiles the pipelines).
    #[arg(long, default_value_t = 5, value_parser = crate::cli::bounded(1, 100_000))]
    pub steps: usize,
    /// Also time every dispatch of a step on its own and print the totals per
    /// kind of dispatch (slow: each is submitted separately).
    #[arg(long)]
    pub profile: bool,
    /// Size of the square GEMM the models' rates are compared with (its best
    /// kernel, timed in the same run; 0 skips it).
    #[arg(long, default_value_t = 1024, value_parser = crate::cli::bounded(0, super::ops::MAX_GEMM_SIZE))]
    pub gemm_size: usize,
    /// Precisions to time each model at, alternated model by model
    /// ("f32,f16" puts mixed precision next to f32 in one run).
    #[arg(long, value_enum, value_delimiter = ',', default_value = "f32")]
    pub precision: Vec<Precision>,
}

#[derive(Clone, Debug)]
pub struct TrainBenchResult {
    pub model: String,
    pub precision: Precision,
    pub plan_seconds: f64,
    pub first_step_seconds: f64,
    pub images_per_sec: f64,
    pub record_ms_per_step: f64,
    /// CPU time to encode a step's command buffer with the GPU idle (no
    /// submit), i.e. without sharing the cores with a CPU adapter's work.
    pub encode_ms_idle: f64,
    pub plan_mib: f64,
    /// The convs' FLOPs per step over the step time.
    pub conv_gflops: f64,
}

pub fn bench_train(ctx: Arc<GpuContext>, opt: &BenchTrainOptions) -> Result<Vec<TrainBenchResult>> {
    out!("adapter: {}", ctx.describe());
    let n = opt.gemm_size;
    let yardstick = || -> Result<Option<f64>> {
        let rate = (n > 0).then(|| {
            gemm_rate(
                &ctx,
                &ConvTuning::default(),
                [n, n, n],
                GemmVersion::Best,
                3,
            )
        });
        Ok(rate.transpose()?)
    };
    let before = yardstick()?;
    if let Some(rate) = before {
        out!("yardstick: this project's best GEMM at {n}x{n}x{n}: {rate:.2} GFLOP/s");
    }
    out!(
        "{:<10} {:>4} {:>9} {:>8} {:>12} {:>10} {:>10} {:>10} {:>10} {:>7}",
        "model",
        "prec",
        "plan MiB",
        "plan s",
        "1st step s",
        "images/s",
        "record ms",
        "encode ms",
        "conv GF/s",
        "% gemm"
    );
    // Each row is printed as it is measured, and a failure (an f16 plan the
    // adapter refuses, a lost device) is printed in its place: the rows
    // measured before it are never lost.
    let mut results = vec![];
    let mut failures = vec![];
    for model in &opt.models {
        for &precision in &opt.precision {
            match bench_model(ctx.clone(), model, precision, opt) {
                Ok(r) => {
                    print_row(&r, before);
                    results.push(r);
                }
                Err(e) => {
                    out!("{model:<10} {:>4} failed: {e:#}", precision.name());
                    failures.push(format!("{model} {}", precision.name()));
                }
            }
        }
    }
    // A CPU adapter's rate drifts with what else the cores do: the rows are
    // against the run before the models; the run after says how much it moved.
    if let (Some(a), Some(b)) = (before, yardstick()?) {
        out!(
            "yardstick after the models: {b:.2} GFLOP/s ({:+.0}% against before)",
            100.0 * (b / a - 1.0)
        );
    }
    out!(
        "record ms: CPU wall time from a step's uploads to its submit inside the timed loop (it \
         shares the cores with a CPU adapter's work); encode ms: recording and finishing one \
         step's command buffer with the GPU idle"
    );
    out!(
        "conv GF/s: the convs' FLOPs per step (forward, input and weight gradients) over the \
         whole step's time; % gemm: that against the yardstick GEMM above"
    );
    if !failures.is_empty() {
        anyhow::bail!("{} failed (see the table)", failures.join(", "));
    }
    Ok(results)
}

fn print_row(r: &TrainBenchResult, gemm: Option<f64>) {
    let share = gemm.map_or("-".to_string(), |g| {
        format!("{:.0}%", 100.0 * r.conv_gflops / g)
    });
    out!(
        "{:<10} {:>4} {:>9.1} {:>8.2} {:>12.2} {:>10.2} {:>10.3} {:>10.3} {:>10.2} {:>7}",
        r.model,
        r.precision.name(),
        r.plan_mib,
        r.plan_seconds,
        r.first_step_seconds,
        r.images_per_sec,
        r.record_ms_per_step,
        r.encode_ms_idle,
        r.conv_gflops,
        share
    );
}

fn bench_model(
    ctx: Arc<GpuContext>,
    model: &str,
    precision: Precision,
    opt: &BenchTrainOptions,
) -> Result<TrainBenchResult> {
    let batch = opt.batch_size;
    // One epoch longer than the run, so no evaluation falls inside the timing.
    let data = synthetic(SyntheticOptions {
        train: batch * (opt.steps + 2),
        test: batch,
        seed: 0,
    });
    let (mean, std) = channel_statistics(&data.train);
    let spec = ModelSpec::new(model, ShortcutKind::A, 10).map_err(anyhow::Error::msg)?;
    let augment = AugmentConfig {
        mean,
        std,
        ..AugmentConfig::cifar_train()
    };
    let config = TrainConfig {
        report_every: opt.steps.max(1),
        precision,
        ..TrainConfig::one_epoch(spec, &data.name, batch, 0.1, augment)
    };
    let start = Instant::now();
    let mut trainer = Trainer::new(ctx.clone(), config, data)?;
    let plan_mib = trainer.plan().summary().total_bytes as f64 / (1 << 20) as f64;
    ctx.wait_idle()?;
    let plan_seconds = start.elapsed().as_secs_f64();

    let first = Instant::now();
    trainer.submit_steps(1);
    ctx.wait_idle()?;
    let first_step_seconds = first.elapsed().as_secs_f64();

    let timed = Instant::now();
    let mut recording = 0.0;
    for _ in 0..opt.steps {
        trainer.submit_steps(1);
        recording += trainer.last_record_seconds;
    }
    ctx.wait_idle()?;
    let seconds = timed.elapsed().as_secs_f64();
    trainer.poll()?;
    if opt.profile {
        for line in crate::cli::info::conv_choice_lines(trainer.plan()) {
            out!("  {line}");
        }
        profile_step(&ctx, &trainer)?;
    }
    let steps_per_second = opt.steps as f64 / seconds;
    let encode_ms_idle = encode_ms(&ctx, &trainer, 50);
    Ok(TrainBenchResult {
        encode_ms_idle,
        conv_gflops: trainer.plan().conv_flops_per_step() * steps_per_second / 1e9,
        model: model.to_string(),
        precision,
        plan_seconds,
        first_step_seconds,
        images_per_sec: (opt.steps * batch) as f64 / seconds,
        record_ms_per_step: 1e3 * recording / opt.steps.max(1) as f64,
        plan_mib,
    })
}

/// Milliseconds to record and finish one step's command buffer, averaged over
/// `n` (never submitted, so the GPU stays idle and takes no CPU).
fn encode_ms(ctx: &GpuContext, trainer: &Trainer, n: usize) -> f64 {
    let start = Instant::now();
    for _ in 0..n {
        let mut encoder = gpu::encoder(ctx, "encode timing");
        gpu::record_pass(&mut encoder, "encode timing", |pass| {
            trainer.plan().record_train_step(pass)
        });
        drop(encoder.finish());
    }
    1e3 * start.elapsed().as_secs_f64() / n as f64
}

/// GPU time of each dispatch of one step, summed per kind (`Dispatch::kind`:
/// conv forward (rows8), batchnorm forward_stats, ...), largest first.
fn profile_step(ctx: &GpuContext, trainer: &Trainer) -> Result<()> {
    let mut totals: Vec<(String, f64, usize)> = vec![];
    let mut all = 0.0;
    for d in trainer.plan().step_dispatches() {
        let t = time_dispatches(ctx, &[d], 1)?.seconds;
        all += t;
        let key = d.kind();
        match totals.iter_mut().find(|(k, _, _)| *k == key) {
            Some(entry) => {
                entry.1 += t;
                entry.2 += 1;
            }
            None => totals.push((key, t, 1)),
        }
    }
    totals.sort_by(|a, b| b.1.total_cmp(&a.1));
    out!(
        "  {:<40} {:>6} {:>10} {:>7}",
        "dispatch kind",
        "count",
        "ms",
        "share"
    );
    for (key, t, n) in totals {
        out!(
            "  {key:<40} {n:>6} {:>10.2} {:>6.1}%",
            1e3 * t,
            100.0 * t / all
        );
    }
    out!("  {:<40} {:>6} {:>10.2}", "sum", "", 1e3 * all);
    Ok(())
}
