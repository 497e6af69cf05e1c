//! `info`: the adapter, its limits and the memory plan of a model; and the
//! lines that say which kernels a plan runs (`train` prints their summary).

use anyhow::Result;
use clap::Args;

use super::{ModelArgs, bounded};
use crate::data::IMAGE_SIDES;
use crate::gpu::{BackendChoice, GpuContext, GpuError, Precision};
use crate::shapes::{ImageShape, SgdConfig};
use crate::train::{ConvChoice, Plan, PlanRequest};

#[derive(Args)]
pub struct InfoArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    #[arg(long, default_value_t = 128, value_parser = bounded(1, crate::train::trainer::MAX_BATCH))]
    pub batch_size: usize,
    /// Image side the plan is sized for [default: 32 for CIFAR models, 224 otherwise].
    #[arg(long, value_parser = bounded(*IMAGE_SIDES.start(), *IMAGE_SIDES.end()))]
    pub image_size: Option<usize>,
    #[arg(long, default_value_t = 10, value_parser = bounded(2, 1 << 20))]
    pub classes: usize,
    /// Size the plan for f32 or mixed-precision (f16) activations.
    #[arg(long, value_enum, default_value = "f32")]
    pub precision: Precision,
    /// List every dispatch of one training step as planned on a modeled
    /// GPU (an H100: no device is needed), with FLOPs, bytes, tile
    /// intensities and each one's roofline bound.
    #[arg(long)]
    pub dispatches: bool,
    /// With --dispatches: the report as JSON.
    #[arg(long, requires = "dispatches")]
    pub json: bool,
    /// Peak FP32 SIMT rate for the roofline [default: 66.9, an H100 SXM's].
    #[arg(long, default_value_t = 66.9, value_parser = positive_figure)]
    pub peak_tflops: f64,
    /// Peak dense f16 matrix-unit rate [default: 989.4, an H100 SXM's tensor cores].
    #[arg(long, default_value_t = 989.4, value_parser = positive_figure)]
    pub peak_tensor_tflops: f64,
    /// Peak memory bandwidth [default: 3350, an H100 SXM's HBM3].
    #[arg(long, default_value_t = 3350.0, value_parser = positive_figure)]
    pub peak_gbps: f64,
    /// Peak workgroup-memory bandwidth of all compute units [default: 33450:
    /// an H100 SXM's 132 SMs x 128 bytes per clock x 1.98 GHz].
    #[arg(long, default_value_t = 33450.0, value_parser = positive_figure)]
    pub peak_shared_gbps: f64,
    /// Compute units (SMs) of the modeled GPU [default: 132, an H100 SXM's].
    #[arg(long, default_value_t = 132.0, value_parser = positive_figure)]
    pub compute_units: f64,
}

/// The optimizer a planned step uses (its kernels do not depend on it).
const INFO_SGD: SgdConfig = SgdConfig {
    momentum: 0.9,
    weight_decay: 1e-4,
    nesterov: false,
};

impl InfoArgs {
    /// The model, its network and the image side the plan is sized for.
    fn planned(&self) -> Result<(crate::model::ModelSpec, crate::model::Network, ImageShape)> {
        let spec = self.model.settings().spec(self.classes)?;
        let side = self.image_size.unwrap_or(spec.native_side());
        let image = ImageShape {
            channels: 3,
            height: side,
            width: side,
        };
        let network = spec.network();
        Ok((spec, network, image))
    }

    fn request<'a>(
        &self,
        network: &'a crate::model::Network,
        image: ImageShape,
        sgd: &'a SgdConfig,
    ) -> PlanRequest<'a> {
        PlanRequest {
            network,
            batch: self.batch_size,
            image,
            sgd,
            tuning: Default::default(),
            precision: self.precision,
        }
    }
}

/// A peak figure: a finite number above zero.
fn positive_figure(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 => Ok(v),
        _ => Err(format!("must be a number above zero, got {s}")),
    }
}

/// `info --dispatches`: the report, without touching this machine's GPU.
pub fn info_dispatches(args: &InfoArgs) -> Result<()> {
    let (_, network, image) = args.planned()?;
    let request = args.request(&network, image, &INFO_SGD);
    let peaks = super::dispatches::Peaks {
        simt_flops: args.peak_tflops * 1e12,
        tensor_flops: args.peak_tensor_tflops * 1e12,
        memory: args.peak_gbps * 1e9,
        shared: args.peak_shared_gbps * 1e9,
        compute_units: args.compute_units,
    };
    let gpu = crate::gpu::ModeledGpu::h100();
    let report = super::dispatches::report(&gpu, &args.model.model, request, &peaks)?;
    if args.json {
        out!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        out!("{}", super::dispatches::table(&report).trim_end());
    }
    Ok(())
}

pub fn info(ctx: &GpuContext, backend: BackendChoice, args: &InfoArgs) -> Result<()> {
    let l = &ctx.limits;
    out!("adapter: {}", ctx.describe());
    // The list `--adapter N` indexes (and under MPI, each machine's ranks
    // take in turn).
    for (i, adapter) in GpuContext::adapters(backend).iter().enumerate() {
        let a = adapter.get_info();
        out!(
            "  adapter {i}: {} ({:?}, {:?})",
            a.name,
            a.backend,
            a.device_type
        );
    }
    let has = |f| {
        if ctx.adapter_features.contains(f) {
            "yes"
        } else {
            "no"
        }
    };
    out!(
        "adapter features: timestamp queries {}, subgroups {}, shader-f16 {}",
        has(wgpu::Features::TIMESTAMP_QUERY),
        has(wgpu::Features::SUBGROUP),
        has(wgpu::Features::SHADER_F16)
    );
    out!("{}", cooperative_matrix_line(ctx));
    out!(
        "max storage buffer binding: {} MiB",
        l.max_storage_buffer_binding_size >> 20
    );
    out!("max buffer size: {} MiB", l.max_buffer_size >> 20);
    out!(
        "max storage buffers per stage: {}",
        l.max_storage_buffers_per_shader_stage
    );
    out!(
        "max workgroups per dimension: {}",
        l.max_compute_workgroups_per_dimension
    );
    out!(
        "max invocations per workgroup: {}",
        l.max_compute_invocations_per_workgroup
    );
    out!(
        "max workgroup storage: {} KiB",
        l.max_compute_workgroup_storage_size >> 10
    );

    let (spec, network, image) = args.planned()?;
    let side = image.height;
    let request = args.request(&network, image, &INFO_SGD);
    let plan = match Plan::new(ctx, request) {
        Ok(plan) => plan,
        // A query, not a failure: say what fits.
        Err(e @ (GpuError::BatchTooLarge { .. } | GpuError::OutOfMemory { .. })) => {
            out!(
                "memory plan of {spec} at batch {}: does not fit: {e}",
                args.batch_size
            );
            return Ok(());
        }
        Err(e) => return Err(e.into()),
    };
    let s = plan.summary();
    out!(
        "memory plan of {spec} at batch {} on {side}x{side} images: {:.1} MiB in {} tensors, \
         largest '{}' {:.1} MiB; {} parameters, {} dispatches per step",
        args.batch_size,
        s.total_bytes as f64 / (1 << 20) as f64,
        s.tensors,
        s.largest_name,
        s.largest_bytes as f64 / (1 << 20) as f64,
        network.parameter_count(),
        s.dispatches_per_step
    );
    print_kernel_choices(&plan, true);
    Ok(())
}

/// Which conv kernels the plan runs: one line of counts, and with `detail`
/// one line per distinct conv.
pub fn print_kernel_choices(plan: &Plan, detail: bool) {
    let [measured, cached, built_in, run] = plan.conv_choice_counts();
    let resumed = match run {
        0 => String::new(),
        n => format!(", {n} as the run ran them before"),
    };
    out!(
        "conv kernels: {measured} passes measured now, {cached} from the cache, {built_in} built-in{resumed}{}",
        if detail { ":" } else { " (`info` lists them)" }
    );
    if detail {
        for line in conv_choice_lines(plan) {
            out!("  {line}");
        }
        let passes = plan.conv_choices.len() * 3;
        let coop = plan
            .conv_choices
            .iter()
            .flat_map(|c| crate::ops::conv::ConvPass::ALL.map(|p| c.kernels.get(p)))
            .filter(|&k| k == crate::ops::conv::ConvKernel::Coop)
            .count();
        out!("conv passes on cooperative matrices: {coop} of {passes}");
        out!("{}", reduction_line(plan));
    }
    if let Some(e) = &plan.choice_cache_error {
        eprintln!("warning: {e}");
    }
}

/// One line per distinct conv (shape and kernels, with the first layer of
/// that kind and how many there are): which candidate runs each pass and
/// how it was chosen.
pub fn conv_choice_lines(plan: &Plan) -> Vec<String> {
    let mut groups: Vec<(&ConvChoice, usize)> = vec![];
    for c in &plan.conv_choices {
        match groups
            .iter_mut()
            .find(|(g, _)| g.shape == c.shape && g.kernels == c.kernels)
        {
            Some(group) => group.1 += 1,
            None => groups.push((c, 1)),
        }
    }
    groups
        .into_iter()
        .map(|(c, count)| {
            let s = &c.shape;
            let passes: Vec<String> = crate::ops::conv::ConvPass::ALL
                .iter()
                .zip(c.sources)
                .map(|(&pass, source)| {
                    format!(
                        "{} {} ({})",
                        pass.name(),
                        c.kernels.get(pass).name(),
                        source.name()
                    )
                })
                .collect();
            format!(
                "{:<22} x{count:<3} {}x{}x{} -> {} {}x{}/{}: {}",
                c.layer,
                s.in_c,
                s.in_h,
                s.in_w,
                s.out_c,
                s.kernel_h,
                s.kernel_w,
                s.stride,
                passes.join(", ")
            )
        })
        .collect()
}

/// One line: how the batch norms' and the loss's reductions end, counted.
pub fn reduction_line(plan: &Plan) -> String {
    let mut counts: Vec<(String, usize)> = vec![];
    for (layer, r, source) in &plan.reductions {
        let what = if layer == "loss" {
            "loss"
        } else {
            "batch norm"
        };
        let key = format!("{what} {} ({})", r.name(), source.name());
        match counts.iter_mut().find(|(k, _)| *k == key) {
            Some(c) => c.1 += 1,
            None => counts.push((key, 1)),
        }
    }
    let parts: Vec<String> = counts.iter().map(|(k, n)| format!("{n} x {k}")).collect();
    format!("reductions: {}", parts.join(", "))
}

/// The adapter's cooperative-matrix configurations and the one the conv
/// kernels run on, if any.
fn cooperative_matrix_line(ctx: &GpuContext) -> String {
    let listed: Vec<String> = ctx
        .coop_listed
        .iter()
        .map(crate::gpu::CoopConfig::describe)
        .collect();
    let listed = if listed.is_empty() {
        "none".to_string()
    } else {
        listed.join(", ")
    };
    let used = match ctx.coop {
        Some(c) => format!(
            "kernel coop available at f16 on {n}x{n}x{n} f16 x f16 -> f32 (workgroups of {} \
             invocations; built in on GPUs, `--tune gpu` on a CPU adapter)",
            4 * c.subgroup_max,
            n = c.size
        ),
        None => "kernel coop not available".to_string(),
    };
    format!("cooperative matrices: {listed}; {used}")
}
