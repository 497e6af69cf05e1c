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

/// The order of packed shards in `epoch`: the shards shuffled by (seed,
/// epoch), each read front to back, through a shuffle buffer of `buffer`
/// samples (WebDataset's `shuffle(buffer)`: each arriving sample takes the
/// place of a random one, which leaves). Reads stay near-sequential within
/// a few shards, and the order is a pure function of the index, seed and
/// epoch, so a resumed run sees the same batches. `shard_of[i]` is sample
/// i's shard; samples of a shard are read in index order.
pub fn shard_order(seed: u64, epoch: usize, shard_of: &[u32], buffer: usize) -> Vec<u32> {
    use rand::Rng;
    let shards = shard_of.iter().max().map_or(0, |&s| s as usize + 1);
    let mut by_shard: Vec<Vec<u32>> = vec![vec![]; shards];
    for (i, &s) in shard_of.iter().enumerate() {
        by_shard[s as usize].push(i as u32);
    }
    let mixed = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15)
        ^ (epoch as u64).wrapping_mul(0xd1b5_4a32_d192_ed03)
        ^ 0x5ba2_d5a1_7e0b_3c29;
    let mut rng = SeededRng::seed_from_u64(mixed);
    by_shard.shuffle(&mut rng);
    let buffer = buffer.max(1);
    let mut pool = Vec::with_capacity(buffer);
    let mut order = Vec::with_capacity(shard_of.len());
    for sample in by_shard.into_iter().flatten() {
        if pool.len() < buffer {
            pool.push(sample);
        } else {
            let j = rng.random_range(0..buffer);
            order.push(std::mem::replace(&mut pool[j], sample));
        }
    }
    pool.shuffle(&mut rng);
    order.extend(pool);
    order
}
