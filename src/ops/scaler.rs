//! Host side of shaders/scaler.wgsl: dynamic loss scaling for mixed precision
//! (PyTorch's GradScaler, kept on the GPU).

use crate::gpu::{
    Binding, DType, Dispatch, DispatchSpec, GpuContext, GpuError, Kernel, Precision,
    ShaderConstant, Tensor, Workgroup, elementwise_grid,
};

crate::wgsl_struct! {
    pub struct ScalerParams {
        len: u32,
        growth_interval: u32,
        growth_factor: f32,
        backoff_factor: f32,
    }
}

/// The scaler's words: the scale (f32 bits), clean steps since the scale
/// last changed, this step's overflow flag, skipped steps in all.
pub const SCALER_SCALE: usize = 0;
pub const SCALER_GROWTH: usize = 1;
pub const SCALER_FOUND_INF: usize = 2;
pub const SCALER_SKIPPED: usize = 3;
pub const SCALER_WORDS: usize = 4;

/// GradScaler's defaults (torch.amp.GradScaler): start at 2^16, halve after
/// an overflow, double after 2000 clean steps.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LossScaling {
    pub init_scale: f32,
    pub growth_factor: f32,
    pub backoff_factor: f32,
    pub growth_interval: u32,
}

impl Default for LossScaling {
    fn default() -> Self {
        LossScaling {
            init_scale: 65536.0,
            growth_factor: 2.0,
            backoff_factor: 0.5,
            growth_interval: 2000,
        }
    }
}

/// The scaler's first words: `scale`, and no steps counted.
pub fn initial_words(scale: f32) -> [u32; SCALER_WORDS] {
    let mut words = [0; SCALER_WORDS];
    words[SCALER_SCALE] = scale.to_bits();
    words
}

const WG: u32 = 256;

/// The entry points of shaders/scaler.wgsl and what each binds.
pub const KERNELS: &[Kernel] = &[
    Kernel {
        modules: &["scaler"],
        entry: "check_finite",
        roles: &["grad", "found_inf"],
        workgroup: Workgroup::Overrides(&["WG"]),
    },
    Kernel {
        modules: &["scaler"],
        entry: "update_scale",
        roles: &["scaler", "metrics"],
        workgroup: Workgroup::PerItem,
    },
];

const fn word(module: &'static str, name: &'static str, value: usize) -> ShaderConstant {
    ShaderConstant {
        module,
        name,
        value: value as u32,
    }
}

/// The scaler's word indices and metric slots, as the shaders use them.
pub const SHADER_CONSTANTS: &[ShaderConstant] = &[
    word("scaler", "SCALER_SCALE", SCALER_SCALE),
    word("scaler", "SCALER_GROWTH", SCALER_GROWTH),
    word("scaler", "SCALER_FOUND_INF", SCALER_FOUND_INF),
    word("scaler", "SCALER_SKIPPED", SCALER_SKIPPED),
    word("optim", "SCALER_SCALE", SCALER_SCALE),
    word("optim", "SCALER_FOUND_INF", SCALER_FOUND_INF),
    word(
        "scaler",
        "METRIC_LOSS_SCALE",
        super::loss::METRIC_LOSS_SCALE,
    ),
    word("scaler", "METRIC_SKIPPED", super::loss::METRIC_SKIPPED),
];

fn build(
    ctx: &GpuContext,
    label: String,
    entry: &'static str,
    params: &ScalerParams,
    bindings: Vec<Binding<'_>>,
    workgroups: [u32; 3],
) -> Result<Dispatch, GpuError> {
    DispatchSpec {
        label,
        shader: "scaler",
        kernel: Kernel::find(KERNELS, "scaler", entry)?,
        variant: None,
        precision: Precision::F32,
        constants: &[("WG", WG)],
        params,
        bindings,
        workgroups,
    }
    .build(ctx)
}

/// Flags the step in `scaler` when any of the f32 gradients `grad` is inf or NaN.
pub fn check_finite(
    ctx: &GpuContext,
    label: &str,
    grad: &Tensor,
    scaler: &Tensor,
) -> Result<Dispatch, GpuError> {
    grad.expect(label, &[grad.numel()], DType::F32)?;
    scaler.expect(label, &[SCALER_WORDS], DType::U32)?;
    let params = ScalerParams {
        len: super::u32_of(label, "elements", grad.numel())?,
        growth_interval: 0,
        growth_factor: 0.0,
        backoff_factor: 0.0,
    };
    let bindings = vec![
        Binding::tensor("grad", grad),
        Binding::tensor("found_inf", scaler),
    ];
    let grid = elementwise_grid(ctx, grad.numel(), WG);
    build(
        ctx,
        format!("{label} check_finite"),
        "check_finite",
        &params,
        bindings,
        grid,
    )
}

/// The next step's scale from this step's overflow flag (which it clears),
/// with the scale and skipped steps written to `metrics`.
pub fn update_scale(
    ctx: &GpuContext,
    scaling: &LossScaling,
    scaler: &Tensor,
    metrics: &Tensor,
) -> Result<Dispatch, GpuError> {
    let label = "loss scaler";
    scaler.expect(label, &[SCALER_WORDS], DType::U32)?;
    metrics.expect(label, &[super::loss::METRICS_LEN], DType::F32)?;
    let params = ScalerParams {
        len: 0,
        growth_interval: scaling.growth_interval.max(1),
        growth_factor: scaling.growth_factor,
        backoff_factor: scaling.backoff_factor,
    };
    let bindings = vec![
        Binding::tensor("scaler", scaler),
        Binding::tensor("metrics", metrics),
    ];
    build(
        ctx,
        format!("{label} update_scale"),
        "update_scale",
        &params,
        bindings,
        [1, 1, 1],
    )
}
