//! A per-channel bias on an NCHW activation (a conv's `bias=True`).

use crate::shapes::BatchNormShape;

/// y = x + bias[channel]
pub fn forward(s: &BatchNormShape, x: &[f64], bias: &[f64]) -> Vec<f64> {
    x.iter()
        .enumerate()
        .map(|(i, v)| v + bias[(i / s.hw) % s.channels])
        .collect()
}

/// dbias[c] = sum of dy over the batch and the plane.
pub fn backward(s: &BatchNormShape, dy: &[f64]) -> Vec<f64> {
    let mut db = vec![0.0; s.channels];
    for (i, g) in dy.iter().enumerate() {
        db[(i / s.hw) % s.channels] += g;
    }
    db
}
