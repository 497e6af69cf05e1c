//! Shared by the GPU test binaries: one device per process, seeded inputs and a
//! tolerance check against the f64 oracle.
#![allow(dead_code)]

use std::sync::{Arc, OnceLock};

use rand::{Rng, SeedableRng};
use resnet_wgpu::gpu::{BackendChoice, DType, GpuContext, KernelChoices, Tensor, TunePolicy};
use resnet_wgpu::seeded::SeededRng;

/// The test device. No adapter is a failure, never a skip: CI must prove the
/// kernels ran (on Linux without a GPU, install mesa-vulkan-drivers).
pub fn ctx() -> &'static GpuContext {
    static CTX: OnceLock<GpuContext> = OnceLock::new();
    CTX.get_or_init(new_context)
}

/// A device whose kernel choices are the built-in ones, kept in memory:
/// tests neither read nor write the user's kernel-choice cache.
/// RESNET_WGPU_EXPECT_ADAPTER (part of the adapter's name) makes a run on
/// another driver than the one asked for (.ci/run's SwiftShader step) fail
/// instead of passing on the default one.
fn new_context() -> GpuContext {
    let ctx = match GpuContext::new_blocking(BackendChoice::Auto) {
        Ok(ctx) => ctx,
        Err(e) => panic!("GPU tests need an adapter: {e}"),
    };
    if let Ok(expected) = std::env::var("RESNET_WGPU_EXPECT_ADAPTER") {
        let name = &ctx.adapter_info.name;
        assert!(
            name.contains(&expected),
            "expected adapter '{expected}', got '{name}'"
        );
    }
    // RESNET_WGPU_EXPECT_COOP: the driver must have opened with cooperative
    // matrices (.ci/run's lavapipe 26.1 step), so the coop tests cannot pass
    // by finding none.
    if std::env::var_os("RESNET_WGPU_EXPECT_COOP").is_some() {
        assert!(
            ctx.coop.is_some(),
            "expected cooperative matrices on '{}', which lists {:?}",
            ctx.adapter_info.name,
            ctx.coop_listed
        );
    }
    *ctx.choices.lock().unwrap() = KernelChoices::in_memory(&ctx.adapter_info);
    ctx
}

/// The test device as the trainer holds it (one per process, like `ctx`).
pub fn shared_ctx() -> Arc<GpuContext> {
    static CTX: OnceLock<Arc<GpuContext>> = OnceLock::new();
    CTX.get_or_init(|| Arc::new(new_context())).clone()
}

/// A device of its own (a test that destroys it leaves the shared one).
pub fn own_ctx() -> Arc<GpuContext> {
    Arc::new(new_context())
}

/// A second test device whose kernel choices are a hardware GPU's built-in
/// ones (`TunePolicy::Gpu`: tiled convs, subgroup reductions) on any adapter.
/// A device of its own with a GPU's built-in choices (for a test that
/// changes its choices).
pub fn new_gpu_kernels_ctx() -> Arc<GpuContext> {
    let ctx = new_context();
    ctx.set_tune_policy(TunePolicy::Gpu);
    Arc::new(ctx)
}

pub fn gpu_kernels_ctx() -> Arc<GpuContext> {
    static CTX: OnceLock<Arc<GpuContext>> = OnceLock::new();
    CTX.get_or_init(|| {
        let ctx = new_context();
        ctx.set_tune_policy(TunePolicy::Gpu);
        Arc::new(ctx)
    })
    .clone()
}

/// A run folder's metrics.jsonl, one report per evaluation.
pub fn metrics(run: &std::path::Path) -> Vec<resnet_wgpu::train::EpochReport> {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

pub fn random(seed: u64, n: usize) -> Vec<f32> {
    let mut rng = SeededRng::seed_from_u64(seed);
    (0..n).map(|_| rng.random_range(-1.0..1.0)).collect()
}

pub fn tensor(label: &str, shape: &[usize], data: &[f32]) -> Tensor {
    Tensor::from_f32(ctx(), label, shape, data).unwrap()
}

pub fn random_tensor(label: &str, seed: u64, shape: &[usize]) -> (Tensor, Vec<f32>) {
    let data = random(seed, shape.iter().product());
    (tensor(label, shape, &data), data)
}

pub fn zeros(label: &str, shape: &[usize]) -> Tensor {
    Tensor::zeros(ctx(), label, shape, DType::F32).unwrap()
}

/// `values` as `dtype` stores them (f16 rounds to nearest), so an oracle
/// can start from exactly what the GPU reads.
pub fn stored_as(values: &[f32], dtype: DType) -> Vec<f32> {
    match dtype {
        DType::F16 => values
            .iter()
            .map(|&v| half::f16::from_f32(v).to_f32())
            .collect(),
        _ => values.to_vec(),
    }
}

/// A seeded tensor of `dtype` (F32 or F16) and the values it holds.
pub fn random_tensor_as(
    label: &str,
    seed: u64,
    shape: &[usize],
    dtype: DType,
) -> (Tensor, Vec<f32>) {
    let data = stored_as(&random(seed, shape.iter().product()), dtype);
    let t = Tensor::from_f32_as(ctx(), label, shape, &data, dtype).unwrap();
    (t, data)
}

pub fn zeros_as(label: &str, shape: &[usize], dtype: DType) -> Tensor {
    Tensor::zeros(ctx(), label, shape, dtype).unwrap()
}

pub fn read(t: &Tensor) -> Vec<f32> {
    t.read_f32(ctx()).unwrap()
}

/// |gpu - oracle| <= atol + rtol * |oracle| everywhere, reporting the worst element.
pub fn assert_close(what: &str, gpu: &[f32], oracle: &[f64], rtol: f64, atol: f64) {
    assert_eq!(gpu.len(), oracle.len(), "{what}: length");
    let mut worst: Option<(usize, f64)> = None;
    for (i, (&g, &o)) in gpu.iter().zip(oracle).enumerate() {
        let excess = (f64::from(g) - o).abs() - (atol + rtol * o.abs());
        if !(excess <= 0.0) && worst.is_none_or(|(_, e)| excess > e) {
            worst = Some((i, excess));
        }
    }
    if let Some((i, _)) = worst {
        panic!(
            "{what}: element {i} is {} on the GPU, {} in the oracle (rtol {rtol}, atol {atol})",
            gpu[i], oracle[i]
        );
    }
}
