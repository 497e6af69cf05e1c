//! The built-in dataset: 32x32 RGB pictures of ten shapes (disc, square,
//! triangle, plus, cross, ring, horizontal stripes, vertical stripes, checker,
//! two dots) at random positions and sizes, in random colours on random
//! backgrounds, with pixel noise. Colour and position carry no information, so a
//! model has to learn shape; a ResNet-20 learns it in a few epochs. Generated
//! procedurally from a seed, so every machine (and the browser) gets the same set.

use crate::seeded::SeededRng;
use rand::{Rng, SeedableRng};

use super::{DataSplit, Dataset};
use crate::shapes::ImageShape;

pub const CLASSES: [&str; 10] = [
    "disc",
    "square",
    "triangle",
    "plus",
    "cross",
    "ring",
    "h-stripes",
    "v-stripes",
    "checker",
    "two dots",
];

const SIDE: usize = 32;

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SyntheticOptions {
    pub train: usize,
    pub test: usize,
    pub seed: u64,
}

impl Default for SyntheticOptions {
    fn default() -> Self {
        SyntheticOptions {
            train: 5000,
            test: 1000,
            seed: 0,
        }
    }
}

pub fn synthetic(options: SyntheticOptions) -> DataSplit {
    DataSplit {
        name: format!(
            "synthetic shapes ({} train, {} test)",
            options.train, options.test
        ),
        train: generate(options.train, options.seed.wrapping_mul(2)),
        test: generate(options.test, options.seed.wrapping_mul(2) + 1),
        eval_set: super::EvalSet::Test,
    }
}

/// `count` pictures, classes balanced (sample i has class i mod 10).
fn generate(count: usize, stream: u64) -> Dataset {
    let mut images = Vec::with_capacity(count * 3 * SIDE * SIDE);
    for i in 0..count {
        let seed = stream
            .wrapping_mul(0x9e37_79b9_7f4a_7c15)
            .wrapping_add(i as u64);
        draw(
            i % CLASSES.len(),
            &mut SeededRng::seed_from_u64(seed),
            &mut images,
        );
    }
    Dataset {
        images,
        labels: (0..count).map(|i| (i % CLASSES.len()) as u32).collect(),
        shape: ImageShape {
            channels: 3,
            height: SIDE,
            width: SIDE,
        },
        class_names: CLASSES.iter().map(|s| s.to_string()).collect(),
        files: None,
    }
}

/// Appends one CHW picture of `class` to `out`.
fn draw(class: usize, rng: &mut SeededRng, out: &mut Vec<u8>) {
    let r = rng.random_range(6.0..12.0f32);
    let margin = r + 1.0;
    let cy = rng.random_range(margin..SIDE as f32 - margin);
    let cx = rng.random_range(margin..SIDE as f32 - margin);
    let period = rng.random_range(2..5) as f32;
    let background: [f32; 3] = std::array::from_fn(|_| rng.random_range(0.0..255.0));
    // A foreground far enough from the background to be visible.
    let foreground: [f32; 3] = loop {
        let c: [f32; 3] = std::array::from_fn(|_| rng.random_range(0.0..255.0));
        let distance: f32 = c.iter().zip(&background).map(|(a, b)| (a - b).abs()).sum();
        if distance > 150.0 {
            break c;
        }
    };
    let mut mask = [false; SIDE * SIDE];
    for (p, m) in mask.iter_mut().enumerate() {
        let (y, x) = ((p / SIDE) as f32 + 0.5, (p % SIDE) as f32 + 0.5);
        *m = inside(class, y - cy, x - cx, r, period, (y, x));
    }
    for (&fg, &bg) in foreground.iter().zip(&background) {
        for &m in &mask {
            let noise = rng.random_range(-24.0..24.0f32);
            out.push((if m { fg } else { bg } + noise).clamp(0.0, 255.0) as u8);
        }
    }
}

fn inside(class: usize, dy: f32, dx: f32, r: f32, period: f32, (y, x): (f32, f32)) -> bool {
    let (ay, ax) = (dy.abs(), dx.abs());
    let d = (dy * dy + dx * dx).sqrt();
    let in_box = ay <= r * 0.85 && ax <= r * 0.85;
    let band = |v: f32| ((v / period).floor() as i32).rem_euclid(2) == 0;
    match class {
        0 => d <= r,
        1 => in_box,
        2 => ay <= r && ax <= (dy + r) * 0.5,
        3 => (ax <= r * 0.25 && ay <= r) || (ay <= r * 0.25 && ax <= r),
        4 => (ax - ay).abs() <= r * 0.25 && ax <= r * 0.8,
        5 => d <= r && d >= r * 0.55,
        6 => in_box && band(y),
        7 => in_box && band(x),
        8 => in_box && (band(y) ^ band(x)),
        _ => {
            let dot = |ox: f32| ((dx - ox).powi(2) + dy * dy).sqrt() <= r * 0.35;
            dot(-r * 0.55) || dot(r * 0.55)
        }
    }
}
