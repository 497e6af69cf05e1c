//! torchvision's ImageNet recipe as crop boxes: RandomResizedCrop (scale
//! 0.08-1, aspect ratio 3/4-4/3, ten tries, then the center-crop fallback)
//! with a horizontal flip for training; Resize(size / 0.875) + CenterCrop(size)
//! for evaluation. A box is in the source picture's pixels; the decoder then
//! resizes that box to the model's side in one antialiased pass.

use rand::{Rng, SeedableRng};

use crate::seeded::SeededRng;

/// RandomResizedCrop's defaults (torchvision.transforms.RandomResizedCrop).
pub const SCALE: (f64, f64) = (0.08, 1.0);
pub const RATIO: (f64, f64) = (3.0 / 4.0, 4.0 / 3.0);
/// The evaluation resize: the shorter side to `size / EVAL_CROP` (256 for 224).
pub const EVAL_CROP: f64 = 0.875;

/// How a picture becomes a training or evaluation sample.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Transform {
    /// RandomResizedCrop + (with `flip`) a random horizontal flip, drawn
    /// from (seed, epoch, sample).
    Train { seed: u64, flip: bool },
    /// The shorter side resized to `side / crop`, then the center `side`
    /// square: `crop` 0.875 is torchvision's eval recipe, 1.0 keeps the
    /// whole shorter side (the transform of CIFAR-like resident folders).
    Eval { crop: f64 },
}

/// A region of the source picture (fractional for the eval resize) and
/// whether the output is mirrored.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CropBox {
    pub left: f64,
    pub top: f64,
    pub width: f64,
    pub height: f64,
    pub flip: bool,
}

impl Transform {
    /// The box of `sample` in `epoch` for a `width` x `height` picture,
    /// resized afterwards to a `side` square.
    pub fn crop_box(&self, epoch: u64, sample: u32, width: u32, height: u32, side: u32) -> CropBox {
        match *self {
            Transform::Train { seed, flip } => {
                let mut rng = SeededRng::seed_from_u64(sample_seed(seed, epoch, sample));
                let (left, top, w, h) = random_resized_crop(&mut rng, width, height);
                CropBox {
                    left: f64::from(left),
                    top: f64::from(top),
                    width: f64::from(w),
                    height: f64::from(h),
                    flip: flip && rng.random_bool(0.5),
                }
            }
            Transform::Eval { crop } => center_crop_box(width, height, side, crop),
        }
    }
}

/// One generator seed per (run seed, epoch, sample): a resumed run, or a
/// worker count changed between runs, draws the same crops.
pub fn sample_seed(seed: u64, epoch: u64, sample: u32) -> u64 {
    let mut x = seed ^ 0x6a09_e667_f3bc_c909;
    for v in [epoch, u64::from(sample)] {
        x = (x ^ v).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        x ^= x >> 31;
    }
    x
}

/// torchvision's `RandomResizedCrop.get_params`: (left, top, width, height).
pub fn random_resized_crop(rng: &mut impl Rng, width: u32, height: u32) -> (u32, u32, u32, u32) {
    let area = f64::from(width) * f64::from(height);
    let (log_lo, log_hi) = (RATIO.0.ln(), RATIO.1.ln());
    for _ in 0..10 {
        let target_area = area * rng.random_range(SCALE.0..=SCALE.1);
        let aspect = rng.random_range(log_lo..=log_hi).exp();
        let w = (target_area * aspect).sqrt().round_ties_even() as i64;
        let h = (target_area / aspect).sqrt().round_ties_even() as i64;
        if 0 < w && w <= i64::from(width) && 0 < h && h <= i64::from(height) {
            let (w, h) = (w as u32, h as u32);
            let top = rng.random_range(0..=height - h);
            let left = rng.random_range(0..=width - w);
            return (left, top, w, h);
        }
    }
    // Fallback: the whole picture, cut to the nearest allowed aspect ratio.
    let in_ratio = f64::from(width) / f64::from(height);
    let (w, h) = if in_ratio < RATIO.0 {
        (
            width,
            ((f64::from(width) / RATIO.0).round_ties_even() as u32).clamp(1, height),
        )
    } else if in_ratio > RATIO.1 {
        (
            ((f64::from(height) * RATIO.1).round_ties_even() as u32).clamp(1, width),
            height,
        )
    } else {
        (width, height)
    };
    ((width - w) / 2, (height - h) / 2, w, h)
}

/// Resize(side / crop) then CenterCrop(side), as one box in source pixels.
/// torchvision resizes the shorter side to `round_down(side / crop)` and the
/// longer side in proportion (truncated), then crops `side` at
/// `round((resized - side) / 2)` (Python rounds half to even); the box is that window mapped back.
pub fn center_crop_box(width: u32, height: u32, side: u32, crop: f64) -> CropBox {
    let short = width.min(height);
    let resized_short = ((f64::from(side) / crop) as u32).max(side);
    let scale = f64::from(resized_short) / f64::from(short);
    let resized = |v: u32| {
        if v == short {
            resized_short
        } else {
            ((f64::from(v) * scale) as u32).max(side)
        }
    };
    let (rw, rh) = (resized(width), resized(height));
    // Scale of each axis as the resize applies it (the truncated long side
    // makes the two differ by less than a pixel's worth).
    let (sx, sy) = (
        f64::from(width) / f64::from(rw),
        f64::from(height) / f64::from(rh),
    );
    let left = (f64::from(rw - side) / 2.0).round_ties_even();
    let top = (f64::from(rh - side) / 2.0).round_ties_even();
    CropBox {
        left: left * sx,
        top: top * sy,
        width: f64::from(side) * sx,
        height: f64::from(side) * sy,
        flip: false,
    }
}
