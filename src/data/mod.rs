//! Datasets as u8 images (N x C x H x W, row-major like CIFAR's files) with u32
//! labels: CIFAR-10/100 binary, an image folder, and the built-in synthetic set.

mod cifar;
mod folder;
mod order;
mod source;
mod synthetic;

pub use cifar::{Cifar100Labels, cifar10_from_files, load_cifar10, load_cifar100};
pub use folder::{FolderOptions, load_folder, load_image};
pub use order::{epoch_order, step_seed};
pub use source::{DataSource, DatasetKind, IMAGE_SIDES, MAX_SYNTHETIC};
pub use synthetic::{SyntheticOptions, synthetic};

use std::path::PathBuf;

use crate::seeded::SeededRng;
use rand::{SeedableRng, seq::SliceRandom};

use crate::shapes::ImageShape;

/// Every way reading a dataset can fail; each names the file or folder.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("{path}: file not found{hint}")]
    Missing { path: PathBuf, hint: String },
    /// The cause is in the message, not chained as a source, so `{:#}`
    /// prints it once.
    #[error("{path}: {cause}")]
    Io {
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error(
        "{path}: {size} bytes is not a whole number of {record}-byte records; the file is \
         truncated or not in the {format} binary format"
    )]
    PartialRecord {
        path: PathBuf,
        size: u64,
        record: usize,
        format: &'static str,
    },
    #[error("{path}: record {record} has label {label}, but the dataset has {classes} classes")]
    LabelOutOfRange {
        path: PathBuf,
        record: usize,
        label: u32,
        classes: usize,
    },
    #[error("{path}: {detail}")]
    Invalid { path: PathBuf, detail: String },
}

/// Images and labels of one split, in memory.
#[derive(Clone, Debug)]
pub struct Dataset {
    pub images: Vec<u8>,
    pub labels: Vec<u32>,
    pub shape: ImageShape,
    pub class_names: Vec<String>,
}

impl Dataset {
    pub fn empty(shape: ImageShape, class_names: &[String]) -> Self {
        Dataset {
            images: vec![],
            labels: vec![],
            shape,
            class_names: class_names.to_vec(),
        }
    }

    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    pub fn classes(&self) -> usize {
        self.class_names.len()
    }

    pub fn image(&self, i: usize) -> &[u8] {
        let n = self.shape.numel();
        &self.images[i * n..(i + 1) * n]
    }

    /// The samples at `indices`, in that order.
    pub fn select(&self, indices: &[usize]) -> Dataset {
        let mut images = Vec::with_capacity(indices.len() * self.shape.numel());
        for &i in indices {
            images.extend_from_slice(self.image(i));
        }
        Dataset {
            images,
            labels: indices.iter().map(|&i| self.labels[i]).collect(),
            shape: self.shape,
            class_names: self.class_names.clone(),
        }
    }

    /// Holds out `count` samples (chosen by a seeded shuffle) as a validation
    /// set, as the paper's 45k/5k split of CIFAR-10's training set.
    pub fn split_validation(&self, count: usize, seed: u64) -> Result<(Dataset, Dataset), String> {
        if count == 0 || count >= self.len() {
            return Err(format!(
                "--val-split {count}: must be between 1 and {} (the training set size minus one)",
                self.len().saturating_sub(1)
            ));
        }
        let mut order: Vec<usize> = (0..self.len()).collect();
        order.shuffle(&mut SeededRng::seed_from_u64(seed ^ 0x5eed_5a11));
        let (val, train) = order.split_at(count);
        let (mut train, mut val) = (train.to_vec(), val.to_vec());
        train.sort_unstable();
        val.sort_unstable();
        Ok((self.select(&train), self.select(&val)))
    }
}

/// What a run trained on, by content: resume refuses other data whatever
/// folder it is read from, and accepts the same data moved elsewhere.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DataIdentity {
    pub train_samples: usize,
    pub test_samples: usize,
    pub classes: usize,
    /// Channels, height, width.
    pub image: [usize; 3],
    /// xxh3-64 of the images and labels of both sets, in order (hex).
    pub content_hash: String,
}

impl DataIdentity {
    /// How `other` differs from this identity, in words (None: the same data).
    pub fn difference(&self, other: &DataIdentity) -> Option<String> {
        let counts = |d: &DataIdentity| {
            format!(
                "{} training and {} test images of {}x{}x{}, {} classes",
                d.train_samples, d.test_samples, d.image[0], d.image[1], d.image[2], d.classes
            )
        };
        if counts(self) != counts(other) {
            return Some(format!("{} instead of {}", counts(other), counts(self)));
        }
        (self.content_hash != other.content_hash).then(|| {
            format!(
                "the same counts but other content (hash {} instead of {})",
                other.content_hash, self.content_hash
            )
        })
    }
}

/// Which set a run is evaluated on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EvalSet {
    /// The dataset's own test set.
    Test,
    /// A validation set: held out of the training set (`--val-split`) or an
    /// image folder's `val/`.
    Validation,
    /// The images given to `predict`.
    Given,
}

impl EvalSet {
    /// As reports and the window name it.
    pub fn name(self) -> &'static str {
        match self {
            EvalSet::Test => "test",
            EvalSet::Validation => "validation",
            EvalSet::Given => "given",
        }
    }
}

/// A training set and the set it is evaluated on.
#[derive(Clone, Debug)]
pub struct DataSplit {
    /// e.g. "cifar10 (/data/cifar-10-batches-bin)".
    pub name: String,
    pub train: Dataset,
    pub test: Dataset,
    pub eval_set: EvalSet,
}

impl DataSplit {
    /// The identity of this data (hashes every byte once: ~0.1 s for CIFAR-10).
    pub fn identity(&self) -> DataIdentity {
        let mut hash = xxhash_rust::xxh3::Xxh3::new();
        for set in [&self.train, &self.test] {
            hash.update(&(set.len() as u64).to_le_bytes());
            hash.update(&set.images);
            hash.update(bytemuck::cast_slice(&set.labels));
        }
        let s = self.train.shape;
        DataIdentity {
            train_samples: self.train.len(),
            test_samples: self.test.len(),
            classes: self.train.classes(),
            image: [s.channels, s.height, s.width],
            content_hash: format!("{:016x}", hash.digest()),
        }
    }
}

pub const CIFAR10_CLASSES: [&str; 10] = [
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
];

fn io_error(path: &std::path::Path, source: std::io::Error) -> DataError {
    if source.kind() == std::io::ErrorKind::NotFound {
        DataError::Missing {
            path: path.to_path_buf(),
            hint: String::new(),
        }
    } else {
        DataError::Io {
            path: path.to_path_buf(),
            cause: source,
        }
    }
}

/// Per-channel mean and std of a training set in [0, 1], for normalization.
pub fn channel_statistics(data: &Dataset) -> ([f32; 4], [f32; 4]) {
    let (c, hw) = (data.shape.channels, data.shape.height * data.shape.width);
    let mut sum = [0f64; 4];
    let mut sq = [0f64; 4];
    for image in data.images.chunks_exact(c * hw) {
        for ch in 0..c.min(4) {
            for &v in &image[ch * hw..(ch + 1) * hw] {
                let v = f64::from(v) / 255.0;
                sum[ch] += v;
                sq[ch] += v * v;
            }
        }
    }
    let n = (data.len() * hw).max(1) as f64;
    let mut mean = [0.0; 4];
    let mut std = [1.0; 4];
    for ch in 0..c.min(4) {
        let m = sum[ch] / n;
        mean[ch] = m as f32;
        std[ch] = ((sq[ch] / n - m * m).max(1e-12).sqrt() as f32).max(1e-3);
    }
    (mean, std)
}
