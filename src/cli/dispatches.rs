//! `info --dispatches`: every dispatch of one training step, planned on a
//! modeled GPU (no device needed: `GpuContext::modeled`), with its kernel,
//! grid, FLOPs, bytes and, for the conv kernels, the intensity of its tile;
//! and each one's roofline bound on that GPU from peak figures given as
//! flags (defaults: an H100 SXM's published ones). A model, not a
//! measurement: what the kernels' shapes allow at best, to read the
//! distance to the physical limit on any machine and to compare a GPU run
//! with.

use anyhow::Result;
use serde::Serialize;

use crate::gpu::{Dispatch, GpuContext, ModeledGpu, Work};
use crate::train::{Plan, PlanRequest};

/// The peaks a dispatch is bounded by (per second).
#[derive(Clone, Copy, Debug)]
pub struct Peaks {
    /// FP32 FMA units (SIMT), FLOP/s.
    pub simt_flops: f64,
    /// f16 matrix units (tensor cores, dense), FLOP/s.
    pub tensor_flops: f64,
    /// Global memory, bytes/s.
    pub memory: f64,
    /// Workgroup (shared) memory of all compute units together, bytes/s.
    pub shared: f64,
    /// Compute units (SMs): a dispatch of fewer workgroups reaches only that
    /// share of every peak.
    pub compute_units: f64,
}

/// One row of the report: the dispatch's `Work` and its bound.
#[derive(Serialize)]
pub struct DispatchRow {
    pub label: String,
    pub kernel: String,
    pub workgroups: u64,
    #[serde(flatten)]
    pub work: Work,
    /// The share of the compute units its workgroups occupy (at most 1).
    pub fill: f64,
    /// Seconds at best: the largest of its FLOPs at the peak of the units it
    /// runs on, its bytes at the memory's peak, and its FMAs at the rate the
    /// workgroup memory can feed them.
    pub bound_s: f64,
    /// Which of the three sets the bound: "compute", "memory", "shared".
    pub limit: &'static str,
}

#[derive(Serialize)]
pub struct Report {
    pub device: String,
    pub model: String,
    pub batch: usize,
    pub image_size: usize,
    pub precision: String,
    pub peaks: PeaksJson,
    pub dispatches: Vec<DispatchRow>,
    pub step_flops: f64,
    pub step_bytes: f64,
    pub step_bound_s: f64,
}

#[derive(Serialize)]
pub struct PeaksJson {
    pub simt_tflops: f64,
    pub tensor_tflops: f64,
    pub memory_gbps: f64,
    pub shared_gbps: f64,
    pub compute_units: f64,
}

/// The share of the compute units a dispatch's workgroups occupy.
pub fn fill(d: &Dispatch, peaks: &Peaks) -> f64 {
    (d.workgroup_count() as f64 / peaks.compute_units).min(1.0)
}

/// The bound of one dispatch and what sets it: the largest of its three
/// times at the peaks, over the share of compute units it fills.
pub fn bound(d: &Dispatch, peaks: &Peaks) -> (f64, &'static str) {
    let (time, limit) = bound_at_full(d, peaks);
    (time / fill(d, peaks).max(f64::MIN_POSITIVE), limit)
}

fn bound_at_full(d: &Dispatch, peaks: &Peaks) -> (f64, &'static str) {
    let w = &d.work;
    let flops_peak = if w.matrix_units {
        peaks.tensor_flops
    } else {
        peaks.simt_flops
    };
    let compute = w.flops / flops_peak;
    let memory = (w.bytes_read + w.bytes_written) / peaks.memory;
    let shared = match w.fma_per_workgroup_byte {
        Some(intensity) if intensity > 0.0 => w.flops / 2.0 / intensity / peaks.shared,
        _ => 0.0,
    };
    if compute >= memory && compute >= shared {
        (compute, "compute")
    } else if memory >= shared {
        (memory, "memory")
    } else {
        (shared, "shared")
    }
}

/// The report of one step of `request`'s plan on the modeled `gpu`.
pub fn report(
    gpu: &ModeledGpu,
    model: &str,
    request: PlanRequest<'_>,
    peaks: &Peaks,
) -> Result<Report> {
    let ctx = GpuContext::modeled(gpu)?;
    let (model, batch, image_size) = (model.to_string(), request.batch, request.image.height);
    let precision = request.precision;
    let plan = Plan::new(&ctx, request)?;
    let dispatches: Vec<DispatchRow> = plan
        .step_dispatches()
        .into_iter()
        .map(|d| {
            let (bound_s, limit) = bound(d, peaks);
            DispatchRow {
                label: d.label.clone(),
                kernel: d.kind(),
                workgroups: d.workgroup_count(),
                work: d.work,
                fill: fill(d, peaks),
                bound_s,
                limit,
            }
        })
        .collect();
    Ok(Report {
        device: ctx.adapter_info.name.clone(),
        model,
        batch,
        image_size,
        precision: precision.name().to_string(),
        peaks: PeaksJson {
            simt_tflops: peaks.simt_flops / 1e12,
            tensor_tflops: peaks.tensor_flops / 1e12,
            memory_gbps: peaks.memory / 1e9,
            shared_gbps: peaks.shared / 1e9,
            compute_units: peaks.compute_units,
        },
        step_flops: dispatches.iter().map(|r| r.work.flops).sum(),
        step_bytes: dispatches
            .iter()
            .map(|r| r.work.bytes_read + r.work.bytes_written)
            .sum(),
        step_bound_s: dispatches.iter().map(|r| r.bound_s).sum(),
        dispatches,
    })
}

/// The report as a table: one header row naming the columns, one row per
/// dispatch, then the step's sums.
pub fn table(r: &Report) -> String {
    let mut out = format!(
        "dispatches of one training step of {} at batch {} on {}x{} images ({}), planned on {}\n\
         peaks (a model, not a measurement): {:.1} TFLOP/s FP32 SIMT, {:.1} TFLOP/s f16 matrix, \
         {:.0} GB/s memory, {:.0} GB/s workgroup memory, {} compute units\n",
        r.model,
        r.batch,
        r.image_size,
        r.image_size,
        r.precision,
        r.device,
        r.peaks.simt_tflops,
        r.peaks.tensor_tflops,
        r.peaks.memory_gbps,
        r.peaks.shared_gbps,
        r.peaks.compute_units
    );
    out.push_str(&format!(
        "{:<48} {:<44} {:>5} {:>10} {:>5} {:>9} {:>9} {:>9} {:>7} {:>7} {:>9} {}\n",
        "dispatch",
        "kernel",
        "wg",
        "workgroups",
        "fill",
        "GFLOP",
        "MB read",
        "MB write",
        "FMA/Bwg",
        "FMA/Bgl",
        "bound us",
        "limit"
    ));
    let opt = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.2}"));
    for d in &r.dispatches {
        out.push_str(&format!(
            "{:<48} {:<44} {:>5} {:>10} {:>5.2} {:>9.3} {:>9.2} {:>9.2} {:>7} {:>7} {:>9.2} {}\n",
            d.label,
            d.kernel,
            d.work.invocations,
            d.workgroups,
            d.fill,
            d.work.flops / 1e9,
            d.work.bytes_read / 1e6,
            d.work.bytes_written / 1e6,
            opt(d.work.fma_per_workgroup_byte),
            opt(d.work.fma_per_global_byte),
            d.bound_s * 1e6,
            d.limit
        ));
    }
    out.push_str(&format!(
        "step: {} dispatches, {:.1} GFLOP, {:.1} MB moved at least, roofline bound {:.3} ms \
         ({:.0} images/s at best)\n",
        r.dispatches.len(),
        r.step_flops / 1e9,
        r.step_bytes / 1e6,
        r.step_bound_s * 1e3,
        r.batch as f64 / r.step_bound_s
    ));
    out
}
