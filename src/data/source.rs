//! Where a run's data comes from, recorded in its config: `eval` and
//! `--resume` load the same data without being told again, and `--data` may
//! point at the same files in another place (the content is checked, not the
//! path).

use std::path::{Path, PathBuf};

use super::{
    Cifar100Labels, DataError, DataSplit, FolderOptions, SyntheticOptions, load_cifar10,
    load_cifar100, load_folder, synthetic,
};

/// The formats `--dataset` names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DatasetKind {
    /// The built-in procedural shapes dataset (no download).
    Synthetic,
    /// CIFAR-10 binary version (data_batch_1..5.bin, test_batch.bin).
    Cifar10,
    /// CIFAR-100 binary version (train.bin, test.bin).
    Cifar100,
    /// One subfolder per class of JPEG/PNG files (train/ and val/ inside).
    Folder,
    /// An image folder packed as WebDataset tar shards (`resnet-wgpu pack`;
    /// train/*.tar and val/*.tar inside).
    Shards,
}

/// The most images the built-in dataset makes per set (3 KiB each).
pub const MAX_SYNTHETIC: usize = 1_000_000;
/// Image-folder sides accepted by --image-size (ImageNet's recipe uses 224).
pub const IMAGE_SIDES: std::ops::RangeInclusive<usize> = 8..=1024;

/// Everything that picks a run's data.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct DataSource {
    pub kind: DatasetKind,
    /// The folder (none for the built-in set).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<PathBuf>,
    pub cifar100_labels: Cifar100Labels,
    pub image_size: usize,
    pub synthetic_train: usize,
    pub synthetic_test: usize,
    /// Training images held out as the evaluation set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub val_split: Option<usize>,
}

impl DataSource {
    /// Checks the sizes, whether a front end set them or a file held them;
    /// the message names the setting.
    pub fn validate(&self) -> Result<(), String> {
        use crate::setting::Setting::*;
        let sizes = 1..=MAX_SYNTHETIC;
        if self.kind == DatasetKind::Synthetic
            && !(sizes.contains(&self.synthetic_train) && sizes.contains(&self.synthetic_test))
        {
            return Err(format!(
                "{SyntheticTrain} and {SyntheticTest} must be 1 to {MAX_SYNTHETIC}, got {} and {}",
                self.synthetic_train, self.synthetic_test
            ));
        }
        let pictures = matches!(self.kind, DatasetKind::Folder | DatasetKind::Shards);
        if pictures && !IMAGE_SIDES.contains(&self.image_size) {
            return Err(format!(
                "{ImageSize} must be {} to {}, got {}",
                IMAGE_SIDES.start(),
                IMAGE_SIDES.end(),
                self.image_size
            ));
        }
        if self.kind != DatasetKind::Synthetic && self.path.is_none() {
            return Err(format!(
                "{Dataset} {} needs {Data} <folder>",
                format!("{:?}", self.kind).to_lowercase()
            ));
        }
        Ok(())
    }

    /// Reads the data (with `seed` choosing a held-out validation set).
    pub fn load(&self, seed: u64) -> Result<DataSplit, DataError> {
        self.validate().map_err(|detail| DataError::Invalid {
            path: self.path.clone().unwrap_or_default(),
            detail,
        })?;
        let dir = || self.path.as_deref().unwrap_or(Path::new("."));
        let mut split = match self.kind {
            DatasetKind::Synthetic => synthetic(SyntheticOptions {
                train: self.synthetic_train,
                test: self.synthetic_test,
                seed: 0,
            }),
            DatasetKind::Cifar10 => load_cifar10(dir())?,
            DatasetKind::Cifar100 => load_cifar100(dir(), self.cifar100_labels)?,
            DatasetKind::Folder => load_folder(dir(), FolderOptions::new(self.image_size))?,
            #[cfg(not(target_arch = "wasm32"))]
            DatasetKind::Shards => super::shards::load_shards(dir(), self.image_size)?,
            #[cfg(target_arch = "wasm32")]
            DatasetKind::Shards => {
                return Err(DataError::Invalid {
                    path: dir().to_path_buf(),
                    detail: "packed shards are read by the desktop build only".into(),
                });
            }
        };
        if let Some(count) = self.val_split {
            let (train, val) = split
                .train
                .split_validation(count, seed)
                .map_err(|detail| DataError::Invalid {
                    path: dir().to_path_buf(),
                    detail,
                })?;
            split.name = format!("{} with {count} held out for validation", split.name);
            split.train = train;
            split.test = val;
            split.eval_set = super::EvalSet::Validation;
        }
        Ok(split)
    }

    /// The format a folder holds, from the files in it (for `--data` without
    /// `--dataset`); a pickled CIFAR download is named with what to get instead.
    pub fn detect(dir: &Path) -> Result<DatasetKind, DataError> {
        let has = |name: &str| dir.join(name).exists();
        if has("data_batch_1.bin") {
            return Ok(DatasetKind::Cifar10);
        }
        if has("train.bin") && has("test.bin") {
            return Ok(DatasetKind::Cifar100);
        }
        #[cfg(not(target_arch = "wasm32"))]
        if super::shards::is_packed(dir) {
            return Ok(DatasetKind::Shards);
        }
        // Folders, not the pickled CIFAR-100's `train` and `test` files.
        let folder = |name: &str| dir.join(name).is_dir();
        if folder("train") && (folder("val") || folder("test")) {
            return Ok(DatasetKind::Folder);
        }
        // The pickled downloads' files, and the folders they unpack to (a
        // `train` folder is an image folder's, not a pickle).
        let pickled_files = ["data_batch_1", "train"];
        let pickled_folders = ["cifar-10-batches-py", "cifar-100-python"];
        if let Some(found) = pickled_files
            .iter()
            .find(|n| dir.join(n).is_file())
            .or_else(|| pickled_folders.iter().find(|n| dir.join(n).is_dir()))
        {
            return Err(DataError::Invalid {
                path: dir.join(found),
                detail: "this is CIFAR's Python (pickle) version, which is not read here; get the \
                         binary version instead: cifar-10-binary.tar.gz (folder \
                         cifar-10-batches-bin) or cifar-100-binary.tar.gz (folder \
                         cifar-100-binary) from https://www.cs.toronto.edu/~kriz/cifar.html"
                    .into(),
            });
        }
        if !dir.exists() {
            return Err(DataError::Invalid {
                path: dir.to_path_buf(),
                detail: "no such folder".into(),
            });
        }
        Err(DataError::Invalid {
            path: dir.to_path_buf(),
            detail: format!(
                "holds no dataset this tool reads: CIFAR-10 binary (data_batch_1.bin ...), \
                     CIFAR-100 binary (train.bin, test.bin) or an image folder (train/ and val/ \
                     with one subfolder per class); {} names the format",
                crate::setting::Setting::Dataset
            ),
        })
    }
}
