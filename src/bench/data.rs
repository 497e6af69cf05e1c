//! `bench data`: images/s of the input pipeline alone (read, decode,
//! RandomResizedCrop + flip, batch; no GPU) on an image folder, per worker
//! count, one table row as each is measured.

use std::path::PathBuf;

use anyhow::{Result, bail};
use web_time::Instant;

use crate::data::pipeline::{BatchOrder, Pipeline, PipelineSpec};
use crate::data::transform::{EVAL_CROP, Transform};
use crate::data::{IMAGE_SIDES, load_pictures};

#[derive(clap::Args, Clone, Debug)]
pub struct BenchDataOptions {
    /// An image folder (train/ and val/ with a folder per class, or class
    /// folders directly).
    #[arg(long, value_name = "DIR")]
    pub data: PathBuf,
    /// Worker counts to time, one row each.
    #[arg(long, value_delimiter = ',', default_value = "1,2", value_parser = crate::cli::whole::<usize>())]
    pub workers: Vec<usize>,
    /// Side of the square crops.
    #[arg(long, value_name = "PIXELS", default_value_t = 224, value_parser = crate::cli::whole::<usize>())]
    pub image_size: usize,
    #[arg(long, default_value_t = 64, value_parser = crate::cli::whole::<usize>())]
    pub batch_size: usize,
    /// Images decoded per row (after one warm-up batch); at most one epoch.
    #[arg(long, default_value_t = 2048, value_parser = crate::cli::whole::<usize>())]
    pub images: usize,
    /// Time the evaluation transform (resize + center crop) instead of the
    /// training one.
    #[arg(long)]
    pub eval: bool,
}

/// One row: a worker count and what it sustained.
#[derive(Clone, Debug)]
pub struct DataBenchRow {
    pub workers: usize,
    pub images_per_sec: f64,
}

pub fn bench_data(options: &BenchDataOptions) -> Result<Vec<DataBenchRow>> {
    if !IMAGE_SIDES.contains(&options.image_size) {
        bail!(
            "--image-size must be {} to {}, got {}",
            IMAGE_SIDES.start(),
            IMAGE_SIDES.end(),
            options.image_size
        );
    }
    if options.batch_size == 0 || options.workers.contains(&0) || options.images == 0 {
        bail!("--batch-size, --workers and --images must be at least 1");
    }
    let indexing = Instant::now();
    let split = load_pictures(&options.data, options.image_size)?;
    let train = split.train;
    out!(
        "{}: {} training pictures indexed in {:.2} s",
        options.data.display(),
        train.len(),
        indexing.elapsed().as_secs_f64()
    );
    let batch = options.batch_size.min(train.len());
    let batches = (options.images / batch).clamp(1, (train.len() / batch).max(2) - 1);
    let transform = if options.eval {
        Transform::Eval { crop: EVAL_CROP }
    } else {
        Transform::Train {
            seed: 0,
            flip: true,
        }
    };
    let order = BatchOrder::Train {
        seed: 0,
        steps_per_epoch: (train.len() / batch) as u64,
        rank: 0,
        ranks: 1,
    };
    let spec = PipelineSpec::new(&train, transform, batch, 1, order)
        .expect("an image folder is file-backed");
    let files = spec.files.clone();
    let source = if files.is_packed() {
        "shards"
    } else {
        "folder"
    };
    out!(
        "{:>8} {:>8} {:>10} {:>10}",
        "source",
        "workers",
        "images/s",
        "batches"
    );
    let mut rows = vec![];
    for &workers in &options.workers {
        let spec = PipelineSpec {
            workers,
            ..spec.clone()
        };
        // The first batch starts the threads and fills the caches: not timed.
        let mut pipeline = Pipeline::start(spec, 0, 1 + batches as u64);
        pipeline.next_batch(|_, _| {})?;
        let timing = Instant::now();
        for _ in 0..batches {
            pipeline.next_batch(|_, _| {})?;
        }
        let images_per_sec = (batches * batch) as f64 / timing.elapsed().as_secs_f64();
        out!("{source:>8} {workers:>8} {images_per_sec:>10.1} {batches:>10}");
        rows.push(DataBenchRow {
            workers,
            images_per_sec,
        });
    }
    if let Some(mib) = peak_rss_mib() {
        out!("peak RSS: {mib:.0} MiB");
    }
    let bad = files.bad_count();
    if bad > 0 {
        out!("{bad} unreadable pictures were skipped (`check --data` lists them)");
    }
    Ok(rows)
}

/// This process's peak resident memory (Linux's VmHWM), in MiB.
fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}
