//! `bench tune`: times every kernel candidate of every distinct conv of the
//! given models on this adapter, prints them side by side, and caches the
//! fastest per (pass, shape), which training then runs (`--tune auto|cached`).

use anyhow::{Context, Result};

use crate::gpu::{DType, GpuContext, Precision, TunePolicy};
use crate::model::{ModelSpec, ShortcutKind};
use crate::ops::Reduction;
use crate::ops::batchnorm::BatchNorm;
use crate::ops::conv::{Conv2d, ConvKernel, ConvPass, ConvTuning, TILED_SHAPES};
use crate::ops::tune::{
    choose_bn_reduction, choose_loss_reduction, conv_key, keep_fastest, measure_conv,
};
use crate::shapes::Fusion;
use crate::shapes::{BatchNormShape, Conv2dShape, ImageShape};
use crate::train::conv_layers;

#[derive(clap::Args, Clone, Debug)]
pub struct BenchTuneOptions {
    /// Models whose convs to tune.
    #[arg(long, value_delimiter = ',', default_value = "resnet20,resnet56")]
    pub models: Vec<String>,
    #[arg(long, default_value_t = 128, value_parser = crate::cli::bounded(1, crate::train::trainer::MAX_BATCH))]
    pub batch_size: usize,
    /// Image side [default: 32 for CIFAR models, 224 otherwise].
    #[arg(long, value_parser = crate::cli::bounded(*crate::data::IMAGE_SIDES.start(), *crate::data::IMAGE_SIDES.end()))]
    pub image_size: Option<usize>,
    /// Activation precisions to tune at (choices are kept per precision):
    /// f32, f16 or f32,f16.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "f32")]
    pub precision: Vec<Precision>,
}

/// Every candidate name, in the table's column order.
fn columns() -> Vec<ConvKernel> {
    let mut all = vec![ConvKernel::Rows8, ConvKernel::RegisterTile];
    all.extend(
        TILED_SHAPES
            .iter()
            .map(|&(tw_m, tw_n)| ConvKernel::Tiled { tw_m, tw_n }),
    );
    all
}

pub fn bench_tune(ctx: &GpuContext, opt: &BenchTuneOptions) -> Result<()> {
    out!("adapter: {}", ctx.describe());
    let mut shapes: Vec<(String, Conv2dShape)> = vec![];
    for model in &opt.models {
        let spec = ModelSpec::new(model, ShortcutKind::A, 10).map_err(anyhow::Error::msg)?;
        let side = opt.image_size.unwrap_or(spec.native_side());
        let image = ImageShape {
            channels: 3,
            height: side,
            width: side,
        };
        for (layer, shape) in conv_layers(&spec.network(), opt.batch_size, image) {
            if !shapes.iter().any(|(_, s)| *s == shape) {
                shapes.push((format!("{model} {layer}"), shape));
            }
        }
    }
    let bn_shapes: Vec<BatchNormShape> = shapes
        .iter()
        .map(|(_, s)| BatchNormShape {
            batch: s.batch,
            channels: s.out_c,
            hw: s.out_h() * s.out_w(),
        })
        .fold(vec![], |mut all, s| {
            if !all.contains(&s) {
                all.push(s);
            }
            all
        });
    for &precision in &opt.precision {
        if precision == Precision::F16 && !ctx.supports_f16() {
            out!("f16: this adapter has no shader-f16; not tuned");
            continue;
        }
        tune_convs(ctx, &shapes, precision.dtype())?;
        tune_reductions(ctx, &bn_shapes, opt.batch_size, precision.dtype());
    }
    ctx.save_kernel_choices()
        .context("writing the kernel-choice cache")?;
    let choices = ctx.choices.lock().unwrap();
    match &choices.path {
        Some(path) => out!(
            "cached {} choices for this adapter in {}",
            choices.len(),
            path.display()
        ),
        None => out!("no cache folder on this platform: choices not kept"),
    }
    Ok(())
}

/// Times every candidate of every pass of `shapes` at activation type
/// `dtype`, prints a row per pass and caches the fastest.
fn tune_convs(ctx: &GpuContext, shapes: &[(String, Conv2dShape)], dtype: DType) -> Result<()> {
    let columns = columns();
    out_text!(
        "{:<30} {:<15}",
        format!("conv at {} (first layer)", dtype.name()),
        "pass"
    );
    for k in &columns {
        out_text!(" {:>11}", k.name());
    }
    out!("  chosen (ms per run)");
    for (layer, shape) in shapes {
        let conv = Conv2d::new(layer, *shape, ConvTuning::default())?;
        for pass in ConvPass::ALL {
            let timed = measure_conv(ctx, &conv, pass, dtype)?;
            out_text!("{layer:<30} {:<15}", pass.name());
            for k in &columns {
                let cell = match timed.iter().find(|(c, _)| c == k) {
                    Some((_, Some(t))) => format!("{:.3}", 1e3 * t),
                    Some((_, None)) => "failed".into(),
                    None => "-".into(),
                };
                out_text!(" {cell:>11}");
            }
            let mut choices = ctx.choices.lock().unwrap();
            let key = conv_key(pass, &conv, dtype);
            match keep_fastest(&mut choices, key, timed, ConvKernel::name) {
                Some(kernel) => out!("  {}", kernel.name()),
                None => out!("  (none ran)"),
            }
        }
    }
    Ok(())
}

/// Measures the batch-norm and loss reduction candidates (tree, subgroup) at
/// every batch-norm shape and the batch, and caches the faster.
fn tune_reductions(ctx: &GpuContext, bn_shapes: &[BatchNormShape], batch: usize, dtype: DType) {
    let policy = ctx.choices.lock().unwrap().policy;
    ctx.set_tune_policy(TunePolicy::All);
    let available: Vec<&str> = Reduction::available(ctx).iter().map(|r| r.name()).collect();
    out!(
        "reductions at {} (candidates: {}):",
        dtype.name(),
        available.join(", ")
    );
    for &shape in bn_shapes {
        if let Ok(bn) = BatchNorm::new("tune", shape, Fusion::None) {
            let (r, _) = choose_bn_reduction(ctx, &bn, dtype);
            out!(
                "  batch norm {}x{}x{}: {}",
                shape.batch,
                shape.channels,
                shape.hw,
                r.name()
            );
        }
    }
    let (r, _) = choose_loss_reduction(ctx, batch);
    out!("  loss sum of {batch}: {}", r.name());
    ctx.set_tune_policy(policy);
}
