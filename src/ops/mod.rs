//! Host side of each shader: parameters, shape checks and prepared dispatches.
//! Each op is built once for its shapes and tensors (the memory plan), then its
//! dispatches are recorded every step.

pub mod augment;
pub mod batchnorm;
pub mod conv;
pub mod elementwise;
pub mod gemm;
pub mod linear;
pub mod loss;
pub mod optim;
pub mod pool;
pub mod shortcut;
pub mod tune;

use crate::gpu::GpuError;

/// Sizes travel to the shaders as u32; anything larger is an error, not a wrap.
pub(crate) fn u32_of(op: &str, what: &str, value: usize) -> Result<u32, GpuError> {
    u32::try_from(value)
        .map_err(|_| GpuError::shape(op, format!("{what} = {value} does not fit in u32")))
}
