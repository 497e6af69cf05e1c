//! Host side of shaders/optim.wgsl: SGD with momentum and weight decay.

use crate::gpu::{
    Binding, DType, Dispatch, DispatchSpec, GpuContext, GpuError, Kernel, Precision, Tensor,
    Workgroup, elementwise_grid,
};
use crate::shapes::SgdConfig;

crate::wgsl_struct! {
    pub struct SgdParams {
        len: u32,
        nesterov: u32,
        momentum: f32,
        weight_decay: f32,
    }
}

crate::wgsl_struct! {
    pub struct LearningRate {
        lr: f32,
        _pad: [u32; 3],
    }
}

const WG: u32 = 256;

const fn kernel(entry: &'static str, roles: &'static [&'static str]) -> Kernel {
    Kernel {
        modules: &["optim"],
        entry,
        roles,
        workgroup: Workgroup::Overrides(&["WG"]),
    }
}

/// The entry points of shaders/optim.wgsl and what each binds.
pub const KERNELS: &[Kernel] = &[
    kernel(
        "sgd_step",
        &["schedule", "weight", "grad", "momentum_buffer"],
    ),
    kernel(
        "sgd_step_scaled",
        &["schedule", "weight", "grad", "momentum_buffer", "scaler"],
    ),
    kernel("copy_weights", &["weight", "weight_copy"]),
];

/// The learning-rate uniform every SGD dispatch reads: the host rewrites it
/// before each step, so the schedule never touches shaders or bind groups.
pub struct LearningRateBuffer {
    buffer: wgpu::Buffer,
}

impl LearningRateBuffer {
    pub fn new(ctx: &GpuContext, lr: f32) -> Self {
        let buffer = ctx.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("learning rate"),
            size: std::mem::size_of::<LearningRate>() as u64,
            usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let this = LearningRateBuffer { buffer };
        this.set(ctx, lr);
        this
    }

    /// Takes effect for work submitted after this call.
    pub fn set(&self, ctx: &GpuContext, lr: f32) {
        ctx.queue.write_buffer(
            &self.buffer,
            0,
            bytemuck::bytes_of(&LearningRate { lr, _pad: [0; 3] }),
        );
    }
}

/// One SGD update of `weight` (in place) from `grad`, using `momentum` as
/// the buffer. With a loss `scaler` (mixed precision), `grad` is of the scaled
/// loss: the update divides by the scale, and is skipped when the step
/// overflowed.
#[allow(clippy::too_many_arguments)]
pub fn sgd_step(
    ctx: &GpuContext,
    label: &str,
    cfg: &SgdConfig,
    lr: &LearningRateBuffer,
    weight: &Tensor,
    grad: &Tensor,
    momentum: &Tensor,
    scaler: Option<&Tensor>,
) -> Result<Dispatch, GpuError> {
    weight.expect(label, weight.shape(), DType::F32)?;
    grad.expect(label, weight.shape(), DType::F32)?;
    momentum.expect(label, weight.shape(), DType::F32)?;
    let params = SgdParams {
        len: super::u32_of(label, "elements", weight.numel())?,
        nesterov: u32::from(cfg.nesterov),
        momentum: cfg.momentum,
        weight_decay: cfg.weight_decay,
    };
    let mut bindings = vec![
        Binding::buffer("schedule", &lr.buffer),
        Binding::tensor("weight", weight),
        Binding::tensor("grad", grad),
        Binding::tensor("momentum_buffer", momentum),
    ];
    let entry = match scaler {
        Some(scaler) => {
            scaler.expect(label, &[super::scaler::SCALER_WORDS], DType::U32)?;
            bindings.push(Binding::tensor("scaler", scaler));
            "sgd_step_scaled"
        }
        None => "sgd_step",
    };
    let workgroups = elementwise_grid(ctx, weight.numel(), WG);
    DispatchSpec {
        label: format!("{label} sgd"),
        shader: "optim",
        kernel: Kernel::find(KERNELS, "optim", entry)?,
        variant: None,
        precision: Precision::F32,
        constants: &[("WG", WG)],
        params: &params,
        bindings,
        workgroups,
    }
    .build(ctx)
}

/// `copy` = `weight` rounded to `copy`'s type: the f16 weights the conv and
/// fc kernels read under mixed precision.
pub fn copy_weights(
    ctx: &GpuContext,
    label: &str,
    weight: &Tensor,
    copy: &Tensor,
) -> Result<Dispatch, GpuError> {
    weight.expect(label, &[weight.numel()], DType::F32)?;
    let precision = Precision::of(label, &[copy])?;
    copy.expect(label, &[weight.numel()], precision.dtype())?;
    let params = SgdParams {
        len: super::u32_of(label, "elements", weight.numel())?,
        nesterov: 0,
        momentum: 0.0,
        weight_decay: 0.0,
    };
    DispatchSpec {
        label: format!("{label} copy_weights"),
        shader: "optim",
        kernel: Kernel::find(KERNELS, "optim", "copy_weights")?,
        variant: None,
        precision,
        constants: &[("WG", WG)],
        params: &params,
        bindings: vec![
            Binding::tensor("weight", weight),
            Binding::tensor("weight_copy", copy),
        ],
        workgroups: elementwise_grid(ctx, weight.numel(), WG),
    }
    .build(ctx)
}
