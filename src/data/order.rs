//! Seeded orders: the shuffle of each epoch and the augmentation seed of each
//! step, so a resumed run sees the same batches as an uninterrupted one.

use rand::{SeedableRng, seq::SliceRandom};

use crate::seeded::SeededRng;

/// The order of the training set in `epoch`: a shuffle seeded by (seed, epoch),
/// so a resumed run sees the same batches as an uninterrupted one.
pub fn epoch_order(seed: u64, epoch: usize, len: usize) -> Vec<u32> {
    let mut order: Vec<u32> = (0..len as u32).collect();
    let mixed = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15)
        ^ (epoch as u64).wrapping_mul(0xd1b5_4a32_d192_ed03);
    order.shuffle(&mut SeededRng::seed_from_u64(mixed));
    order
}

/// The augmentation seed of a step (crop offsets and flips derive from it).
pub fn step_seed(seed: u64, step: u64) -> u32 {
    let x = (seed ^ 0xa076_1d64_78bd_642f).wrapping_add(step.wrapping_mul(0xe703_7ed1_a0b4_28db));
    let x = (x ^ (x >> 32)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    (x >> 32) as u32
}
