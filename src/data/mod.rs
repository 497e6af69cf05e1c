//! Datasets as u8 images (N x C x H x W, row-major like CIFAR's files) with u32
//! labels: CIFAR-10/100 binary, an image folder, and the built-in synthetic set.

mod cifar;
mod decode;
mod folder;
mod index;
mod order;
pub mod pipeline;
#[cfg(not(target_arch = "wasm32"))]
pub mod shards;
mod source;
mod synthetic;
pub mod transform;

pub use cifar::{Cifar100Labels, cifar10_from_files, load_cifar10, load_cifar100};
pub use decode::Decoder;
pub use folder::{FolderOptions, load_folder, load_image, prepare_rgba};
pub use index::{ImageFiles, Member};
pub use order::{epoch_order, shard_order, step_seed};
pub use source::{DataSource, DatasetKind, IMAGE_SIDES, MAX_SYNTHETIC};
pub use synthetic::{SyntheticOptions, synthetic};

use std::borrow::Cow;
use std::path::PathBuf;
use std::sync::Arc;

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

/// Images and labels of one split: decoded in memory (`images`), or, for an
/// image folder, indexed files (`files`) that the input pipeline decodes
/// batch by batch (`images` is then empty).
#[derive(Clone, Debug)]
pub struct Dataset {
    pub images: Vec<u8>,
    pub labels: Vec<u32>,
    pub shape: ImageShape,
    pub class_names: Vec<String>,
    pub files: Option<Arc<ImageFiles>>,
}

impl Dataset {
    pub fn empty(shape: ImageShape, class_names: &[String]) -> Self {
        Dataset {
            images: vec![],
            labels: vec![],
            shape,
            class_names: class_names.to_vec(),
            files: None,
        }
    }

    /// Whether the pixels are decoded from files as they are needed.
    pub fn is_file_backed(&self) -> bool {
        self.files.is_some()
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

    /// Sample `i` as CHW bytes; a file-backed set decodes it with the
    /// evaluation transform (an unreadable file shows as black).
    pub fn image(&self, i: usize) -> Cow<'_, [u8]> {
        let n = self.shape.numel();
        match &self.files {
            None => Cow::Borrowed(&self.images[i * n..(i + 1) * n]),
            Some(files) => {
                let mut out = vec![0; n];
                let eval = transform::Transform::Eval {
                    crop: transform::EVAL_CROP,
                };
                let side = self.shape.height as u32;
                let _ = Decoder::new().sample_indexed(files, &eval, 0, i as u32, side, &mut out);
                Cow::Owned(out)
            }
        }
    }

    /// The samples at `indices`, in that order.
    pub fn select(&self, indices: &[usize]) -> Dataset {
        let images = match &self.files {
            Some(_) => vec![],
            None => {
                let mut images = Vec::with_capacity(indices.len() * self.shape.numel());
                for &i in indices {
                    images.extend_from_slice(&self.image(i));
                }
                images
            }
        };
        Dataset {
            images,
            labels: indices.iter().map(|&i| self.labels[i]).collect(),
            shape: self.shape,
            class_names: self.class_names.clone(),
            files: self.files.as_ref().map(|f| Arc::new(f.select(indices))),
        }
    }

    /// Holds out `count` samples (chosen by a seeded shuffle) as a validation
    /// set, as the paper's 45k/5k split of CIFAR-10's training set.
    pub fn split_validation(&self, count: usize, seed: u64) -> Result<(Dataset, Dataset), String> {
        if count == 0 || count >= self.len() {
            return Err(format!(
                "{} {count}: must be between 1 and {} (the training set size minus one)",
                crate::setting::Setting::ValSplit,
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
    /// The identity of this data: every byte hashed once for data in
    /// memory (~0.1 s for CIFAR-10); for files, their relative paths and
    /// sizes (no pass over the bytes, so a moved folder is the same data).
    pub fn identity(&self) -> DataIdentity {
        let mut hash = xxhash_rust::xxh3::Xxh3::new();
        for set in [&self.train, &self.test] {
            hash.update(&(set.len() as u64).to_le_bytes());
            match &set.files {
                None => hash.update(&set.images),
                Some(files) => {
                    for (path, size) in files.paths.iter().zip(&files.sizes) {
                        hash.update(path.to_string_lossy().as_bytes());
                        hash.update(&[0]);
                        hash.update(&size.to_le_bytes());
                    }
                }
            }
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

/// File-backed sets estimate their channel statistics from this many
/// pictures (evenly spaced, so the estimate is the same in every run).
const STATISTICS_SAMPLE: usize = 256;

/// Per-channel mean and std of a training set in [0, 1], for normalization
/// (of a file-backed set: of up to 256 of its pictures, eval-transformed).
pub fn channel_statistics(data: &Dataset) -> ([f32; 4], [f32; 4]) {
    let sampled;
    let (data, images) = match &data.files {
        None => (data, &data.images),
        Some(_) => {
            sampled = decoded_sample(data, STATISTICS_SAMPLE);
            (data, &sampled)
        }
    };
    let (c, hw) = (data.shape.channels, data.shape.height * data.shape.width);
    let count = images.len() / (c * hw).max(1);
    let mut sum = [0f64; 4];
    let mut sq = [0f64; 4];
    for image in images.chunks_exact(c * hw) {
        for ch in 0..c.min(4) {
            for &v in &image[ch * hw..(ch + 1) * hw] {
                let v = f64::from(v) / 255.0;
                sum[ch] += v;
                sq[ch] += v * v;
            }
        }
    }
    let n = (count * hw).max(1) as f64;
    let mut mean = [0.0; 4];
    let mut std = [1.0; 4];
    for ch in 0..c.min(4) {
        let m = sum[ch] / n;
        mean[ch] = m as f32;
        std[ch] = ((sq[ch] / n - m * m).max(1e-12).sqrt() as f32).max(1e-3);
    }
    (mean, std)
}

/// Up to `count` evenly spaced pictures of a file-backed set, decoded with
/// the evaluation transform on every core (CHW, one after another).
fn decoded_sample(data: &Dataset, count: usize) -> Vec<u8> {
    let count = count.min(data.len()).max(1);
    let picks: Vec<usize> = (0..count).map(|i| i * data.len() / count).collect();
    let eval = transform::Transform::Eval {
        crop: transform::EVAL_CROP,
    };
    let Some(spec) = pipeline::PipelineSpec::new(
        &data.select(&picks),
        eval,
        count,
        default_workers(),
        pipeline::BatchOrder::Sequential,
    ) else {
        return vec![];
    };
    let mut images = vec![];
    let mut decoding = pipeline::Pipeline::start(spec, 0, 1);
    let _ = decoding.next_batch(|batch, _| images = batch.to_vec());
    images
}

/// An image folder or packed shards of one (recognised by `train/*.tar`),
/// indexed, with samples `image_size` square.
pub fn load_pictures(dir: &std::path::Path, image_size: usize) -> Result<DataSplit, DataError> {
    #[cfg(not(target_arch = "wasm32"))]
    if shards::is_packed(dir) {
        return shards::load_shards(dir, image_size);
    }
    load_folder(dir, FolderOptions::new(image_size))
}

/// Decode threads when `--workers` is not given: one per core.
pub fn default_workers() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}
