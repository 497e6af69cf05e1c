//! Host side of shaders/optim.wgsl: SGD with momentum and weight decay.

use crate::gpu::{
    Binding, DType, Dispatch, DispatchSpec, GpuContext, GpuError, Kernel, Tensor, Workgroup,
    elementwise_grid,
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

/// The entry point of shaders/optim.wgsl and what it binds.
pub const KERNELS: &[Kernel] = &[Kernel {
    modules: &["optim"],
    entry: "sgd_step",
    roles: &["schedule", "weight", "grad", "momentum_buffer"],
    workgroup: Workgroup::Overrides(&["WG"]),
}];

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

/// One SGD update of `weight` (in place) from `grad`, using `momentum` as the buffer.
pub fn sgd_step(
    ctx: &GpuContext,
    label: &str,
    cfg: &SgdConfig,
    lr: &LearningRateBuffer,
    weight: &Tensor,
    grad: &Tensor,
    momentum: &Tensor,
) -> Result<Dispatch, GpuError> {
    grad.expect(label, weight.shape(), DType::F32)?;
    momentum.expect(label, weight.shape(), DType::F32)?;
    let params = SgdParams {
        len: super::u32_of(label, "elements", weight.numel())?,
        nesterov: u32::from(cfg.nesterov),
        momentum: cfg.momentum,
        weight_decay: cfg.weight_decay,
    };
    let bindings = vec![
        Binding::buffer("schedule", &lr.buffer),
        Binding::tensor("weight", weight),
        Binding::tensor("grad", grad),
        Binding::tensor("momentum_buffer", momentum),
    ];
    let workgroups = elementwise_grid(ctx, weight.numel(), WG);
    DispatchSpec {
        label: format!("{label} sgd"),
        shader: "optim",
        kernel: &KERNELS[0],
        variant: None,
        constants: &[("WG", WG)],
        params: &params,
        bindings,
        workgroups,
    }
    .build(ctx)
}
