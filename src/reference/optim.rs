//! One step of torch.optim.SGD (momentum, weight decay, optional Nesterov).

use crate::shapes::SgdConfig;

/// Updates `w` and `momentum_buffer` in place.
pub fn sgd_step(
    cfg: &SgdConfig,
    lr: f64,
    w: &mut [f64],
    grad: &[f64],
    momentum_buffer: &mut [f64],
) {
    let m = f64::from(cfg.momentum);
    for i in 0..w.len() {
        let g = grad[i] + f64::from(cfg.weight_decay) * w[i];
        momentum_buffer[i] = m * momentum_buffer[i] + g;
        let step = if cfg.nesterov {
            g + m * momentum_buffer[i]
        } else {
            momentum_buffer[i]
        };
        w[i] -= lr * step;
    }
}
