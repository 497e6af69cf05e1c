//! Fully connected layer y = x W^T + b (PyTorch's nn.Linear layout).

use crate::shapes::LinearShape;

pub fn forward(s: &LinearShape, x: &[f64], w: &[f64], bias: &[f64]) -> Vec<f64> {
    let mut y = vec![0.0; s.batch * s.out_f];
    for b in 0..s.batch {
        for o in 0..s.out_f {
            y[b * s.out_f + o] = bias[o]
                + (0..s.in_f)
                    .map(|k| x[b * s.in_f + k] * w[o * s.in_f + k])
                    .sum::<f64>();
        }
    }
    y
}

pub fn backward_input(s: &LinearShape, dy: &[f64], w: &[f64]) -> Vec<f64> {
    let mut dx = vec![0.0; s.batch * s.in_f];
    for b in 0..s.batch {
        for k in 0..s.in_f {
            dx[b * s.in_f + k] = (0..s.out_f)
                .map(|o| dy[b * s.out_f + o] * w[o * s.in_f + k])
                .sum();
        }
    }
    dx
}

pub fn backward_weight(s: &LinearShape, x: &[f64], dy: &[f64]) -> Vec<f64> {
    let mut dw = vec![0.0; s.out_f * s.in_f];
    for o in 0..s.out_f {
        for k in 0..s.in_f {
            dw[o * s.in_f + k] = (0..s.batch)
                .map(|b| dy[b * s.out_f + o] * x[b * s.in_f + k])
                .sum();
        }
    }
    dw
}

pub fn backward_bias(s: &LinearShape, dy: &[f64]) -> Vec<f64> {
    (0..s.out_f)
        .map(|o| (0..s.batch).map(|b| dy[b * s.out_f + o]).sum())
        .collect()
}
