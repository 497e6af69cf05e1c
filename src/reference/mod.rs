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

/// The activation a fused norm applies to its affine output `z`: z, relu(z)
/// or relu(z + residual).
pub fn activate(fusion: crate::shapes::Fusion, z: f64, residual: Option<f64>) -> f64 {
    use crate::shapes::Fusion;
    match fusion {
        Fusion::None => z,
        Fusion::Relu => z.max(0.0),
        Fusion::AddRelu => (z + residual.expect("AddRelu needs a residual")).max(0.0),
    }
}

/// The gradient reaching a fused norm's affine output: `dy`, masked by the
/// forward output `y` > 0 in the ReLU forms.
pub fn masked_grad(fusion: crate::shapes::Fusion, dy: &[f64], y: &[f64]) -> Vec<f64> {
    match fusion {
        crate::shapes::Fusion::None => dy.to_vec(),
        _ => dy
            .iter()
            .zip(y)
            .map(|(&d, &v)| if v > 0.0 { d } else { 0.0 })
            .collect(),
    }
}
