//! The CPU oracle: a plain, obviously-correct f64 implementation of every op,
//! forward and backward, written straight from the definitions. GPU kernels are
//! tested against it, and its backward passes against finite differences.

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
pub mod pool;
pub mod shortcut;

/// f32 values widened for the oracle.
pub fn widen(values: &[f32]) -> Vec<f64> {
    values.iter().map(|&v| f64::from(v)).collect()
}
