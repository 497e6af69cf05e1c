//! Host side of each shader: parameters, shape checks and prepared dispatches.
//! Each op is built once for its shapes and tensors (the memory plan), then its
//! dispatches are recorded every step.

pub mod augment;
pub mod batchnorm;
pub mod bias;
pub mod conv;
pub mod elementwise;
pub mod gemm;
pub mod groupnorm;
pub mod linear;
pub mod loss;
pub mod optim;
pub mod partition;
pub mod pool;
pub mod scaler;
pub mod shortcut;
pub mod tune;

use crate::gpu::{GpuError, Kernel, ShaderConstant, StructLayout, WgslStruct};

/// Every op family's list of kernels: with `SHADER_CONSTANTS` and
/// `UNIFORM_STRUCTS`, the host's half of the contract that tests/contract.rs
/// checks against the WGSL.
pub const KERNEL_FAMILIES: &[&[Kernel]] = &[
    augment::KERNELS,
    bias::KERNELS,
    batchnorm::KERNELS,
    conv::KERNELS,
    elementwise::KERNELS,
    gemm::KERNELS,
    groupnorm::KERNELS,
    linear::KERNELS,
    loss::KERNELS,
    optim::KERNELS,
    pool::KERNELS,
    scaler::KERNELS,
    shortcut::KERNELS,
];

/// The WGSL constants host code computes with.
pub const SHADER_CONSTANTS: &[&[ShaderConstant]] = &[
    conv::SHADER_CONSTANTS,
    gemm::SHADER_CONSTANTS,
    loss::SHADER_CONSTANTS,
    scaler::SHADER_CONSTANTS,
];

/// Every uniform struct the host writes.
pub const UNIFORM_STRUCTS: &[StructLayout] = &[
    augment::AugmentParams::LAYOUT,
    bias::BiasParams::LAYOUT,
    batchnorm::BnParams::LAYOUT,
    conv::ConvParams::LAYOUT,
    elementwise::ElementwiseParams::LAYOUT,
    gemm::GemmParams::LAYOUT,
    groupnorm::GnParams::LAYOUT,
    linear::LinearParams::LAYOUT,
    loss::LossParams::LAYOUT,
    optim::SgdParams::LAYOUT,
    optim::LearningRate::LAYOUT,
    pool::PoolParams::LAYOUT,
    scaler::ScalerParams::LAYOUT,
    shortcut::ShortcutParams::LAYOUT,
];

/// How batch norm's channel reductions and the loss's batch sum end: the
/// portable tree through workgroup memory, or subgroup operations (a
/// candidate where the device has the SUBGROUP feature).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Reduction {
    #[default]
    Tree,
    Subgroup,
}

impl Reduction {
    pub fn name(self) -> &'static str {
        match self {
            Reduction::Tree => "tree",
            Reduction::Subgroup => "subgroup",
        }
    }

    /// The batch-norm module built with this reduction.
    pub(crate) fn batchnorm_module(self) -> &'static str {
        match self {
            Reduction::Tree => "batchnorm",
            Reduction::Subgroup => "batchnorm_subgroup",
        }
    }

    /// The loss module built with this reduction.
    pub(crate) fn loss_module(self) -> &'static str {
        match self {
            Reduction::Tree => "loss",
            Reduction::Subgroup => "loss_subgroup",
        }
    }

    /// The reductions this device can run.
    pub fn available(ctx: &crate::gpu::GpuContext) -> Vec<Reduction> {
        let mut list = vec![Reduction::Tree];
        if ctx.features.contains(wgpu::Features::SUBGROUP) {
            list.push(Reduction::Subgroup);
        }
        list
    }
}

/// Sizes travel to the shaders as u32; anything larger is an error, not a wrap.
pub(crate) fn u32_of(op: &str, what: &str, value: usize) -> Result<u32, GpuError> {
    u32::try_from(value)
        .map_err(|_| GpuError::shape(op, format!("{what} = {value} does not fit in u32")))
}
