//! The GPU augmentation replayed on the CPU: same hash, same crop, same flip.

use crate::shapes::{AugmentConfig, ImageShape};

/// PCG hash (Jarzynski and Olano 2020), bit-identical to augment.wgsl.
pub fn pcg_hash(v: u32) -> u32 {
    let state = v.wrapping_mul(747796405).wrapping_add(2891336453);
    let word = ((state >> ((state >> 28) + 4)) ^ state).wrapping_mul(277803737);
    (word >> 22) ^ word
}

/// Crop offsets (dy, dx) and flip of batch sample `b` under `seed`.
pub fn sample_transform(cfg: &AugmentConfig, seed: u32, b: u32) -> (i64, i64, bool) {
    let h0 = pcg_hash(seed ^ pcg_hash(b));
    let h1 = pcg_hash(h0);
    let h2 = pcg_hash(h1);
    let span = 2 * cfg.pad + 1;
    let dy = i64::from(h0 % span) - i64::from(cfg.pad);
    let dx = i64::from(h1 % span) - i64::from(cfg.pad);
    (dy, dx, cfg.flip && h2 & 1 == 1)
}

/// Batch images (f32 NCHW) and labels for dataset `indices`.
pub fn augment(
    cfg: &AugmentConfig,
    shape: &ImageShape,
    images: &[u8],
    labels: &[u32],
    indices: &[u32],
    seed: u32,
) -> (Vec<f64>, Vec<u32>) {
    let (h, w) = (shape.height as i64, shape.width as i64);
    let mut out = Vec::with_capacity(indices.len() * shape.numel());
    for (b, &index) in indices.iter().enumerate() {
        let image = &images[index as usize * shape.numel()..(index as usize + 1) * shape.numel()];
        let (dy, dx, flip) = sample_transform(cfg, seed, b as u32);
        for c in 0..shape.channels {
            for y in 0..h {
                for x in 0..w {
                    let (sy, sx) = (y + dy, if flip { w - 1 - x } else { x } + dx);
                    let inside = (0..h).contains(&sy) && (0..w).contains(&sx);
                    let pixel = if inside {
                        f64::from(image[(c as i64 * h * w + sy * w + sx) as usize])
                    } else {
                        0.0
                    };
                    out.push((pixel / 255.0 - f64::from(cfg.mean[c])) / f64::from(cfg.std[c]));
                }
            }
        }
    }
    (out, indices.iter().map(|&i| labels[i as usize]).collect())
}
