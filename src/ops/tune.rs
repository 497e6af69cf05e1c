//! Choosing a kernel on this adapter (a conv pass's, or how batch norm's and
//! the loss's reductions end): look the (pass, shape) up in the context's
//! kernel choices, else measure every candidate (when the tune policy says
//! so), else take the built-in choice.

use crate::gpu::{Choice, ChoiceSource, DType, GpuContext, GpuError, KernelChoices, sources_hash};
#[cfg(not(target_arch = "wasm32"))]
use crate::gpu::{Dispatch, Tensor, time_dispatches};
use crate::shapes::BatchNormShape;

use super::Reduction;
use super::batchnorm::BatchNorm;
#[cfg(not(target_arch = "wasm32"))]
use super::batchnorm::BnTensors;
use super::conv::{Conv2d, ConvKernel, ConvPass};
use super::partition::{CPU_TARGET_WORKGROUPS, GPU_TARGET_WORKGROUPS, Partition};
#[cfg(not(target_arch = "wasm32"))]
use crate::shapes::Fusion;

/// Timed repetitions per sample (after a warm-up run), and samples per
/// candidate: a candidate's time is its best sample's mean, so one sample
/// slowed by something else on the device does not pick the kernel.
#[cfg(not(target_arch = "wasm32"))]
const MEASURE_REPS: u32 = 3;
#[cfg(not(target_arch = "wasm32"))]
const MEASURE_SAMPLES: usize = 3;

/// The key a conv pass's choice is cached under: the pass, the activation
/// type it was measured at, every dimension that changes its work, the
/// workgroup tuning, and the hash of the shader sources (a code change
/// measures again instead of running a stale choice).
pub fn conv_key(pass: ConvPass, conv: &Conv2d, dtype: DType) -> String {
    let (s, t) = (&conv.shape, &conv.tuning);
    format!(
        "conv {} {} n{} c{} {}x{} -> {} k{}x{} s{} p{} wg{}x{}/{} src{}",
        pass.name(),
        dtype.name(),
        s.batch,
        s.in_c,
        s.in_h,
        s.in_w,
        s.out_c,
        s.kernel_h,
        s.kernel_w,
        s.stride,
        s.pad,
        t.wg_n,
        t.wg_m,
        t.target_workgroups,
        sources_hash()
    )
}

/// `conv` with the kernel of each pass chosen for `ctx`'s adapter from its
/// kernel choices at activation type `dtype`, and how each was chosen
/// (forward, backward_input, backward_weight).
pub fn choose_conv_kernels(
    ctx: &GpuContext,
    conv: Conv2d,
    dtype: DType,
) -> Result<(Conv2d, [ChoiceSource; 3]), GpuError> {
    let mut choices = ctx.choices.lock().unwrap();
    choose_conv_kernels_in(ctx, &mut choices, conv, dtype)
}

/// `choose_conv_kernels` with the choices given (a test's own cache file).
pub fn choose_conv_kernels_in(
    ctx: &GpuContext,
    choices: &mut KernelChoices,
    mut conv: Conv2d,
    dtype: DType,
) -> Result<(Conv2d, [ChoiceSource; 3]), GpuError> {
    let mut sources = [ChoiceSource::BuiltIn; 3];
    for (i, pass) in ConvPass::ALL.into_iter().enumerate() {
        let cpu_builtins = choices.policy.cpu_builtins(ctx.is_software());
        let builtin = conv.builtin_kernel_on(ctx, dtype, pass, cpu_builtins);
        let (kernel, source) = choose_in(
            choices,
            ctx.is_software(),
            conv_key(pass, &conv, dtype),
            &conv.candidates_on(ctx, dtype, pass),
            ConvKernel::name,
            builtin,
            || measure_conv(ctx, &conv, pass, dtype),
        )?;
        conv = conv.with_kernel(pass, kernel)?;
        sources[i] = source;
    }
    Ok((conv, sources))
}

/// The kernel for `key` among `candidates`: the cached choice, else (when the
/// policy measures) the fastest of the times `measure` returns (None for a
/// candidate that could not run), cached, else `builtin`.
fn choose_in<K: Copy + PartialEq>(
    choices: &mut KernelChoices,
    cpu_adapter: bool,
    key: String,
    candidates: &[K],
    name: impl Fn(K) -> String,
    builtin: K,
    measure: impl FnOnce() -> Result<Vec<(K, Option<f64>)>, GpuError>,
) -> Result<(K, ChoiceSource), GpuError> {
    let cached = choices.cached(&key).and_then(|(c, source)| {
        let kernel = candidates.iter().copied().find(|&k| name(k) == c.kernel)?;
        Some((kernel, source))
    });
    let chosen = match cached {
        Some(found) => found,
        None if !choices.should_measure(cpu_adapter) => (builtin, ChoiceSource::BuiltIn),
        None => match keep_fastest(choices, key.clone(), measure()?, &name) {
            Some(kernel) => (kernel, ChoiceSource::Measured),
            None => (builtin, ChoiceSource::BuiltIn),
        },
    };
    choices.note_used(key, name(chosen.0));
    Ok(chosen)
}

/// Caches the fastest of `timed` (candidates with their seconds, None for one
/// that could not run) as the choice for `key`, and returns it (None when none
/// ran).
pub fn keep_fastest<K: Copy>(
    choices: &mut KernelChoices,
    key: String,
    timed: Vec<(K, Option<f64>)>,
    name: impl Fn(K) -> String,
) -> Option<K> {
    let (kernel, seconds) = timed
        .into_iter()
        .filter_map(|(k, t)| t.map(|t| (k, t)))
        .min_by(|a, b| a.1.total_cmp(&b.1))?;
    let choice = Choice {
        kernel: name(kernel),
        ms: 1e3 * seconds,
    };
    choices.insert(key, choice);
    Some(kernel)
}

/// A reduction chosen for `key` from the context's choices, timing each
/// available candidate with `time`.
fn choose_reduction(
    ctx: &GpuContext,
    key: String,
    time: impl Fn(Reduction) -> Option<f64>,
) -> (Reduction, ChoiceSource) {
    let candidates = Reduction::available(ctx);
    let mut choices = ctx.choices.lock().unwrap();
    let cpu_builtins = choices.policy.cpu_builtins(ctx.is_software());
    let builtin = builtin_reduction(cpu_builtins, &candidates);
    let measure = || Ok(candidates.iter().map(|&r| (r, time(r))).collect());
    let name = |r: Reduction| r.name().to_string();
    // `measure` cannot fail: a candidate that cannot run times as None.
    choose_in(
        &mut choices,
        ctx.is_software(),
        key,
        &candidates,
        name,
        builtin,
        measure,
    )
    .unwrap_or((builtin, ChoiceSource::BuiltIn))
}

/// The reduction batch norm's channel statistics end with, for `bn`'s shape
/// at activation type `dtype`: measured on the forward statistics kernel;
/// built-in: the tree on CPU adapters, subgroups on GPUs that have them.
pub fn choose_bn_reduction(
    ctx: &GpuContext,
    bn: &BatchNorm,
    dtype: DType,
) -> (Reduction, ChoiceSource) {
    let s = &bn.shape;
    let key = format!(
        "batchnorm reduce {} n{} c{} hw{} parts{} src{}",
        dtype.name(),
        s.batch,
        s.channels,
        s.hw,
        bn.partition.parts,
        sources_hash()
    );
    choose_reduction(ctx, key, |r| time_bn_stats(ctx, s, bn.partition, r, dtype))
}

/// The workgroups a normalization pass aims at (`ops::partition`): a GPU's
/// built-in count, or a CPU adapter's where its built-in choices apply.
pub fn norm_target_workgroups(ctx: &GpuContext) -> usize {
    let policy = ctx.choices.lock().unwrap().policy;
    if policy.cpu_builtins(ctx.is_software()) {
        CPU_TARGET_WORKGROUPS
    } else {
        GPU_TARGET_WORKGROUPS
    }
}

/// The reduction of the loss's batch sum, for a batch of `batch` samples
/// (the loss runs in f32 at either precision).
pub fn choose_loss_reduction(ctx: &GpuContext, batch: usize) -> (Reduction, ChoiceSource) {
    let key = format!("loss reduce n{batch} src{}", sources_hash());
    choose_reduction(ctx, key, |r| time_loss_sum(ctx, batch, r))
}

/// The best of `MEASURE_SAMPLES` timings of `dispatches` (seconds per run);
/// None when the device refused them.
#[cfg(not(target_arch = "wasm32"))]
fn best_time(ctx: &GpuContext, dispatches: &[&Dispatch]) -> Option<f64> {
    (0..MEASURE_SAMPLES)
        .map(|_| {
            time_dispatches(ctx, dispatches, MEASURE_REPS)
                .ok()
                .map(|t| t.seconds)
        })
        .collect::<Option<Vec<f64>>>()?
        .into_iter()
        .reduce(f64::min)
}

fn builtin_reduction(cpu_builtins: bool, available: &[Reduction]) -> Reduction {
    if !cpu_builtins && available.contains(&Reduction::Subgroup) {
        Reduction::Subgroup
    } else {
        Reduction::Tree
    }
}

#[cfg(not(target_arch = "wasm32"))]
fn time_bn_stats(
    ctx: &GpuContext,
    s: &BatchNormShape,
    partition: Partition,
    reduction: Reduction,
    dtype: DType,
) -> Option<f64> {
    let mut bn = BatchNorm::new("tune bn", *s, Fusion::None).ok()?;
    bn.reduction = reduction;
    bn.partition = partition;
    let act = [s.batch, s.channels, s.hw];
    let t = |label, shape: &[usize]| Tensor::zeros(ctx, label, shape, DType::F32).ok();
    let a = |label, shape: &[usize]| Tensor::zeros(ctx, label, shape, dtype).ok();
    let (x, y) = (a("tune x", &act)?, a("tune y", &act)?);
    let c: Vec<Tensor> = (0..4)
        .map(|_| t("tune c", &[s.channels]))
        .collect::<Option<_>>()?;
    let stats = t("tune stats", &[bn.stats_len()])?;
    let tensors = BnTensors {
        x: &x,
        gamma: &c[0],
        beta: &c[1],
        running_mean: &c[2],
        running_var: &c[3],
        stats: &stats,
    };
    let dispatches = bn.forward_train(ctx, &tensors, None, &y).ok()?;
    best_time(ctx, &[&dispatches[0]])
}

#[cfg(not(target_arch = "wasm32"))]
fn time_loss_sum(ctx: &GpuContext, batch: usize, reduction: Reduction) -> Option<f64> {
    let t = |label, shape: &[usize], dtype| Tensor::zeros(ctx, label, shape, dtype).ok();
    let f = DType::F32;
    let (logits, grads) = (
        t("tune logits", &[batch, 2], f)?,
        t("tune grad", &[batch, 2], f)?,
    );
    let labels = t("tune labels", &[batch], DType::U32)?;
    let (loss, correct) = (
        t("tune loss", &[batch], f)?,
        t("tune correct", &[2, batch], f)?,
    );
    let metrics = t("tune metrics", &[super::loss::METRICS_LEN], f)?;
    let scaler = t("tune scaler", &[super::scaler::SCALER_WORDS], DType::U32)?;
    let tensors = super::loss::CrossEntropyTensors {
        logits: &logits,
        labels: &labels,
        grad_logits: &grads,
        sample_loss: &loss,
        sample_correct: &correct,
        metrics: &metrics,
        loss_scale: &scaler,
    };
    let dispatches =
        super::loss::softmax_cross_entropy(ctx, "tune loss", &tensors, batch, reduction).ok()?;
    best_time(ctx, &[&dispatches[1]])
}

#[cfg(target_arch = "wasm32")]
fn time_bn_stats(
    _: &GpuContext,
    _: &BatchNormShape,
    _: Partition,
    _: Reduction,
    _: DType,
) -> Option<f64> {
    None
}

#[cfg(target_arch = "wasm32")]
fn time_loss_sum(_: &GpuContext, _: usize, _: Reduction) -> Option<f64> {
    None
}

/// The browser cannot wait for a timing (`KernelChoices::should_measure` is
/// false there): no candidate is timed.
#[cfg(target_arch = "wasm32")]
fn measure_conv(
    ctx: &GpuContext,
    conv: &Conv2d,
    pass: ConvPass,
    dtype: DType,
) -> Result<Vec<(ConvKernel, Option<f64>)>, GpuError> {
    Ok(conv
        .candidates_on(ctx, dtype, pass)
        .into_iter()
        .map(|k| (k, None))
        .collect())
}

/// Seconds per run of every candidate of `pass` on this conv's shape with
/// activations and weights stored as `dtype` (None for a candidate the
/// adapter refused to build, e.g. a workgroup beyond its limits). Each
/// candidate is timed after a warm-up run, so the first-use compile is not
/// counted, and takes its best of `MEASURE_SAMPLES` timings.
#[cfg(not(target_arch = "wasm32"))]
pub fn measure_conv(
    ctx: &GpuContext,
    conv: &Conv2d,
    pass: ConvPass,
    dtype: DType,
) -> Result<Vec<(ConvKernel, Option<f64>)>, GpuError> {
    let s = &conv.shape;
    let t = |label, shape: &[usize], dtype| Tensor::zeros(ctx, label, shape, dtype);
    let (input, weight, output) = (
        t("tune input", &s.input_shape(), dtype)?,
        t("tune weight", &s.weight_shape(), dtype)?,
        t("tune output", &s.output_shape(), dtype)?,
    );
    // The weight gradient is f32 at either precision.
    let weight_grad = t("tune weight grad", &s.weight_shape(), DType::F32)?;
    let mut timed = vec![];
    for kernel in conv.candidates_on(ctx, dtype, pass) {
        let candidate = conv.clone().with_kernel(pass, kernel)?;
        let dispatches: Result<Vec<Dispatch>, GpuError> = match pass {
            ConvPass::Forward => candidate
                .forward(ctx, &input, &weight, &output)
                .map(|d| vec![d]),
            ConvPass::BackwardInput => candidate
                .backward_input(ctx, &output, &weight, &input)
                .map(|d| vec![d]),
            ConvPass::BackwardWeight => {
                candidate.backward_weight(ctx, &input, &output, &weight_grad)
            }
        };
        let seconds = dispatches.ok().and_then(|ds| {
            let refs: Vec<&Dispatch> = ds.iter().collect();
            best_time(ctx, &refs)
        });
        timed.push((kernel, seconds));
    }
    Ok(timed)
}
