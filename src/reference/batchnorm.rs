//! Batch normalization in training and eval mode, with the fused ReLU and
//! residual-add forms, as PyTorch's BatchNorm2d computes them.

use crate::shapes::{BatchNormShape, Fusion};

/// Per-channel statistics of one forward pass.
#[derive(Clone, Debug)]
pub struct BatchStats {
    pub mean: Vec<f64>,
    /// 1 / sqrt(var + eps), with the variance used for normalizing.
    pub invstd: Vec<f64>,
    /// Unbiased variance, which updates the running variance.
    pub var_unbiased: Vec<f64>,
}

fn channel_values<'a>(
    s: &BatchNormShape,
    x: &'a [f64],
    c: usize,
) -> impl Iterator<Item = (usize, f64)> + 'a {
    let (channels, hw) = (s.channels, s.hw);
    (0..s.batch)
        .flat_map(move |b| (0..hw).map(move |i| (b * channels + c) * hw + i))
        .map(move |i| (i, x[i]))
}

/// Batch mean and biased variance per channel (training mode).
pub fn batch_stats(s: &BatchNormShape, x: &[f64], eps: f64) -> BatchStats {
    let n = s.count() as f64;
    let mut stats = BatchStats {
        mean: vec![],
        invstd: vec![],
        var_unbiased: vec![],
    };
    for c in 0..s.channels {
        let mean = channel_values(s, x, c).map(|(_, v)| v).sum::<f64>() / n;
        let var = channel_values(s, x, c)
            .map(|(_, v)| (v - mean).powi(2))
            .sum::<f64>()
            / n;
        stats.mean.push(mean);
        stats.invstd.push(1.0 / (var + eps).sqrt());
        stats.var_unbiased.push(var * n / (n - 1.0).max(1.0));
    }
    stats
}

/// Statistics from the running estimates (eval mode).
pub fn eval_stats(running_mean: &[f64], running_var: &[f64], eps: f64) -> BatchStats {
    BatchStats {
        mean: running_mean.to_vec(),
        invstd: running_var.iter().map(|v| 1.0 / (v + eps).sqrt()).collect(),
        var_unbiased: running_var.to_vec(),
    }
}

/// running = (1 - momentum) * running + momentum * batch value.
pub fn update_running(
    running_mean: &mut [f64],
    running_var: &mut [f64],
    stats: &BatchStats,
    momentum: f64,
) {
    for c in 0..running_mean.len() {
        running_mean[c] = (1.0 - momentum) * running_mean[c] + momentum * stats.mean[c];
        running_var[c] = (1.0 - momentum) * running_var[c] + momentum * stats.var_unbiased[c];
    }
}

fn channel_of(s: &BatchNormShape, i: usize) -> usize {
    (i / s.hw) % s.channels
}

pub fn apply(
    s: &BatchNormShape,
    x: &[f64],
    stats: &BatchStats,
    gamma: &[f64],
    beta: &[f64],
    fusion: Fusion,
    residual: Option<&[f64]>,
) -> Vec<f64> {
    (0..s.numel())
        .map(|i| {
            let c = channel_of(s, i);
            let z = (x[i] - stats.mean[c]) * stats.invstd[c] * gamma[c] + beta[c];
            super::activate(fusion, z, residual.map(|r| r[i]))
        })
        .collect()
}

/// Gradients of one batch-norm layer in training mode.
#[derive(Clone, Debug)]
pub struct BnGrads {
    pub dx: Vec<f64>,
    pub dgamma: Vec<f64>,
    pub dbeta: Vec<f64>,
    /// Gradient reaching the residual input (AddRelu only).
    pub dresidual: Option<Vec<f64>>,
}

/// Backward of `apply` with batch statistics (training mode). `y` is the forward
/// output, whose sign is the ReLU mask of the fused forms.
pub fn backward(
    s: &BatchNormShape,
    x: &[f64],
    stats: &BatchStats,
    gamma: &[f64],
    y: &[f64],
    dy: &[f64],
    fusion: Fusion,
) -> BnGrads {
    let g = super::masked_grad(fusion, dy, y);
    let xhat = |i: usize| {
        let c = channel_of(s, i);
        (x[i] - stats.mean[c]) * stats.invstd[c]
    };
    let mut dgamma = vec![0.0; s.channels];
    let mut dbeta = vec![0.0; s.channels];
    for (i, &gi) in g.iter().enumerate() {
        let c = channel_of(s, i);
        dbeta[c] += gi;
        dgamma[c] += gi * xhat(i);
    }
    let n = s.count() as f64;
    let dx = (0..s.numel())
        .map(|i| {
            let c = channel_of(s, i);
            gamma[c] * stats.invstd[c] * (g[i] - dbeta[c] / n - xhat(i) * dgamma[c] / n)
        })
        .collect();
    let dresidual = (fusion == Fusion::AddRelu).then_some(g);
    BnGrads {
        dx,
        dgamma,
        dbeta,
        dresidual,
    }
}
