//! Group normalization with the fused ReLU and residual-add forms, as
//! PyTorch's GroupNorm computes it: statistics per (sample, group) over the
//! group's channels and the plane (biased variance), an affine per channel,
//! and no running statistics (training and eval are the same).

use crate::shapes::{Fusion, GroupNormShape};

/// Per-(sample, group) statistics of one forward pass, sample-major.
#[derive(Clone, Debug)]
pub struct GroupStats {
    pub mean: Vec<f64>,
    /// 1 / sqrt(var + eps), biased variance.
    pub invstd: Vec<f64>,
}

/// Index of the (sample, group) statistic element `i` belongs to.
fn stat_of(s: &GroupNormShape, i: usize) -> usize {
    let sample = i / (s.channels * s.hw);
    let group = (i / s.hw) % s.channels / s.channels_per_group();
    sample * s.groups + group
}

fn channel_of(s: &GroupNormShape, i: usize) -> usize {
    (i / s.hw) % s.channels
}

/// The elements of (sample, group) `k`: contiguous in NCHW.
fn group_range(s: &GroupNormShape, k: usize) -> std::ops::Range<usize> {
    let start = k * s.group_len();
    start..start + s.group_len()
}

pub fn stats(s: &GroupNormShape, x: &[f64], eps: f64) -> GroupStats {
    let n = s.group_len() as f64;
    let mut out = GroupStats {
        mean: vec![],
        invstd: vec![],
    };
    for k in 0..s.stats_len() {
        let values = &x[group_range(s, k)];
        let mean = values.iter().sum::<f64>() / n;
        let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n;
        out.mean.push(mean);
        out.invstd.push(1.0 / (var + eps).sqrt());
    }
    out
}

pub fn apply(
    s: &GroupNormShape,
    x: &[f64],
    stats: &GroupStats,
    gamma: &[f64],
    beta: &[f64],
    fusion: Fusion,
    residual: Option<&[f64]>,
) -> Vec<f64> {
    (0..s.numel())
        .map(|i| {
            let (k, c) = (stat_of(s, i), channel_of(s, i));
            let z = (x[i] - stats.mean[k]) * stats.invstd[k] * gamma[c] + beta[c];
            super::activate(fusion, z, residual.map(|r| r[i]))
        })
        .collect()
}

/// Gradients of one group-norm layer.
#[derive(Clone, Debug)]
pub struct GnGrads {
    pub dx: Vec<f64>,
    pub dgamma: Vec<f64>,
    pub dbeta: Vec<f64>,
    /// Gradient reaching the residual input (AddRelu only).
    pub dresidual: Option<Vec<f64>>,
}

/// Backward of `apply`. `y` is the forward output, whose sign is the ReLU mask
/// of the fused forms. With g the masked dy, xhat the normalized input and
/// d = g * gamma, over the M values of a group:
/// dx = invstd * (d - mean(d) - xhat * mean(d * xhat)).
pub fn backward(
    s: &GroupNormShape,
    x: &[f64],
    stats: &GroupStats,
    gamma: &[f64],
    y: &[f64],
    dy: &[f64],
    fusion: Fusion,
) -> GnGrads {
    let g = super::masked_grad(fusion, dy, y);
    let xhat = |i: usize| {
        let k = stat_of(s, i);
        (x[i] - stats.mean[k]) * stats.invstd[k]
    };
    let mut dgamma = vec![0.0; s.channels];
    let mut dbeta = vec![0.0; s.channels];
    for (i, &gi) in g.iter().enumerate() {
        let c = channel_of(s, i);
        dbeta[c] += gi;
        dgamma[c] += gi * xhat(i);
    }
    let n = s.group_len() as f64;
    let mut dx = vec![0.0; s.numel()];
    for k in 0..s.stats_len() {
        let range = group_range(s, k);
        let d = |i: usize| g[i] * gamma[channel_of(s, i)];
        let mean_d = range.clone().map(d).sum::<f64>() / n;
        let mean_dx = range.clone().map(|i| d(i) * xhat(i)).sum::<f64>() / n;
        for i in range {
            dx[i] = stats.invstd[k] * (d(i) - mean_d - xhat(i) * mean_dx);
        }
    }
    let dresidual = (fusion == Fusion::AddRelu).then_some(g);
    GnGrads {
        dx,
        dgamma,
        dbeta,
        dresidual,
    }
}
