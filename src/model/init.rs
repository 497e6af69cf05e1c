//! Seeded initial values: He (kaiming normal, fan_out, ReLU gain) for convs as
//! torchvision does, norm gamma 1 and beta 0, PyTorch's default uniform init for
//! fc and conv biases.

use crate::seeded::SeededRng;
use rand::{Rng, SeedableRng};

use super::{Network, TensorRole};

/// Initial values of every state-dict entry, in `Network::state_entries` order.
/// `num_batches_tracked` is a scalar counter stored as f32 here.
pub fn initial_parameters(net: &Network, seed: u64) -> Vec<Vec<f32>> {
    let mut rng = SeededRng::seed_from_u64(seed);
    net.state_entries()
        .iter()
        .map(|e| {
            let len: usize = e.shape.iter().product();
            match e.role {
                TensorRole::ConvWeight => {
                    let fan_out = e.shape[0] * e.shape[2] * e.shape[3];
                    let std = (2.0 / fan_out as f64).sqrt();
                    (0..len).map(|_| (normal(&mut rng) * std) as f32).collect()
                }
                TensorRole::FcWeight | TensorRole::FcBias => {
                    let bound = 1.0 / (net.features as f64).sqrt();
                    (0..len)
                        .map(|_| rng.random_range(-bound..bound) as f32)
                        .collect()
                }
                TensorRole::ConvBias => {
                    // PyTorch's default: uniform in +-1/sqrt(fan_in), fan_in
                    // from the conv weight just before it.
                    let bound = 1.0 / (conv_fan_in(net, &e.name) as f64).sqrt();
                    (0..len)
                        .map(|_| rng.random_range(-bound..bound) as f32)
                        .collect()
                }
                TensorRole::NormWeight | TensorRole::RunningVar => vec![1.0; len],
                TensorRole::NormBias | TensorRole::RunningMean => vec![0.0; len],
                TensorRole::BatchesTracked => vec![0.0],
            }
        })
        .collect()
}

/// in_c * k * k of the conv whose bias is `bias_name`.
fn conv_fan_in(net: &Network, bias_name: &str) -> usize {
    net.units()
        .find(|u| format!("{}.bias", u.conv) == bias_name)
        .map_or(1, |u| u.in_c * u.kernel * u.kernel)
}

/// A standard normal sample (Box-Muller).
fn normal(rng: &mut SeededRng) -> f64 {
    let u1: f64 = 1.0 - rng.random::<f64>(); // (0, 1]: ln stays finite
    let u2: f64 = rng.random();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}
