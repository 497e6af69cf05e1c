//! Learning-rate schedules: multi-step decay (the paper's x0.1 at given epochs),
//! cosine decay, and an optional linear warm-up in front of either.

use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DecayKind {
    /// lr x gamma at each milestone epoch.
    MultiStep,
    /// Half a cosine from lr to 0 over all epochs (per step).
    Cosine,
    Constant,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Schedule {
    pub base_lr: f32,
    pub decay: DecayKind,
    /// Epochs at which multi-step decay multiplies the rate by `gamma`.
    pub milestones: Vec<usize>,
    pub gamma: f32,
    /// Epochs of linear warm-up from `warmup_lr` to `base_lr` (0: none).
    pub warmup_epochs: f32,
    pub warmup_lr: f32,
    pub epochs: usize,
}

impl Schedule {
    /// The rate for the step at fractional epoch `epoch` (step / steps per epoch).
    pub fn lr_at(&self, epoch: f64) -> f32 {
        let warm = f64::from(self.warmup_epochs);
        if epoch < warm {
            let t = (epoch / warm) as f32;
            return self.warmup_lr + (self.base_lr - self.warmup_lr) * t;
        }
        match self.decay {
            DecayKind::Constant => self.base_lr,
            DecayKind::MultiStep => {
                let passed = self
                    .milestones
                    .iter()
                    .filter(|&&m| epoch.floor() as usize >= m)
                    .count();
                self.base_lr * self.gamma.powi(passed as i32)
            }
            DecayKind::Cosine => {
                let t = (epoch - warm) / (self.epochs as f64 - warm).max(1e-9);
                let t = t.clamp(0.0, 1.0);
                (f64::from(self.base_lr) * 0.5 * (1.0 + (std::f64::consts::PI * t).cos())) as f32
            }
        }
    }

    /// The paper's CIFAR recipe scaled to `epochs`: decay at 50% and 75% (the
    /// paper's 32k and 48k of 64k iterations).
    pub fn default_milestones(epochs: usize) -> Vec<usize> {
        if epochs < 4 {
            return vec![];
        }
        vec![epochs / 2, epochs * 3 / 4]
    }
}
