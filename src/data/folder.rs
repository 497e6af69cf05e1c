//! An image folder as torchvision's ImageFolder reads it: one subfolder per
//! class (sorted names are the class indices), JPEG or PNG files inside (in
//! nested subfolders too). The folder is indexed, not decoded: the input
//! pipeline (`pipeline.rs`) decodes and augments batches as training runs.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::decode::Decoder;
use super::index::{ImageFiles, index_classes};
use super::transform::Transform;
use super::{DataError, DataSplit, Dataset, io_error};
use crate::shapes::ImageShape;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FolderOptions {
    /// Side of the square images the model sees.
    pub image_size: usize,
    /// Threads of the directory walk.
    pub threads: usize,
}

impl FolderOptions {
    pub fn new(image_size: usize) -> Self {
        FolderOptions {
            image_size,
            threads: super::default_workers().max(4),
        }
    }
}

/// `dir/train/<class>/*` and `dir/val/<class>/*` (or `dir/test`), or, without
/// a train folder, `dir/<class>/*` with a tenth held out for validation.
pub fn load_folder(dir: &Path, options: FolderOptions) -> Result<DataSplit, DataError> {
    if options.image_size < 8 {
        return Err(DataError::Invalid {
            path: dir.to_path_buf(),
            detail: format!(
                "image size {} is below the minimum of 8",
                options.image_size
            ),
        });
    }
    let train_dir = dir.join("train");
    if !train_dir.is_dir() {
        let all = read_split(dir, None, options)?;
        let held_out = (all.len() / 10).max(1);
        let (train, test) =
            all.split_validation(held_out, 0)
                .map_err(|detail| DataError::Invalid {
                    path: dir.to_path_buf(),
                    detail: format!("too few images to hold out a validation set: {detail}"),
                })?;
        return Ok(DataSplit {
            name: format!("folder ({}, 10% held out)", dir.display()),
            train,
            test,
            eval_set: super::EvalSet::Validation,
        });
    }
    let train = read_split(&train_dir, None, options)?;
    let test_dir = ["val", "test"]
        .iter()
        .map(|n| dir.join(n))
        .find(|p| p.is_dir())
        .ok_or_else(|| DataError::Missing {
            path: dir.join("val"),
            hint: " (an image folder with train/ needs val/ or test/ beside it)".into(),
        })?;
    let test = read_split(&test_dir, Some(&train.class_names), options)?;
    Ok(DataSplit {
        name: format!("folder ({})", dir.display()),
        train,
        test,
        eval_set: super::EvalSet::Validation,
    })
}

/// Indexes one split: its class folders (checked against the training
/// set's), and every picture's path, size and label.
fn read_split(
    dir: &Path,
    classes: Option<&[String]>,
    options: FolderOptions,
) -> Result<Dataset, DataError> {
    let found = class_dirs(dir)?;
    let names: Vec<String> = match classes {
        Some(expected) => {
            if found.iter().map(|(n, _)| n).ne(expected.iter()) {
                return Err(DataError::Invalid {
                    path: dir.to_path_buf(),
                    detail: format!(
                        "class folders {:?} differ from the training set's {expected:?}",
                        found.iter().map(|(n, _)| n).collect::<Vec<_>>()
                    ),
                });
            }
            expected.to_vec()
        }
        None => found.iter().map(|(n, _)| n.clone()).collect(),
    };
    if names.len() < 2 {
        return Err(DataError::Invalid {
            path: dir.to_path_buf(),
            detail: format!("needs at least 2 class subfolders, found {}", names.len()),
        });
    }
    let class_paths: Vec<PathBuf> = found.iter().map(|(_, p)| p.clone()).collect();
    let per_class = index_classes(dir, &class_paths, options.threads)?;
    let side = options.image_size;
    let mut files = ImageFiles {
        root: dir.to_path_buf(),
        ..ImageFiles::default()
    };
    let mut labels = vec![];
    for (label, ((name, class_dir), class_files)) in found.iter().zip(per_class).enumerate() {
        // A class the model cannot see in training would still get an output.
        if class_files.is_empty() && classes.is_none() {
            return Err(DataError::Invalid {
                path: class_dir.clone(),
                detail: format!(
                    "class '{name}' has no .jpg, .jpeg or .png training images; add some or \
                     remove the folder"
                ),
            });
        }
        labels.extend(std::iter::repeat_n(label as u32, class_files.len()));
        for (path, size) in class_files {
            files.paths.push(path);
            files.sizes.push(size);
        }
    }
    if labels.is_empty() {
        return Err(DataError::Invalid {
            path: dir.to_path_buf(),
            detail: "no .jpg, .jpeg or .png files in the class folders".into(),
        });
    }
    if u32::try_from(labels.len()).is_err() {
        return Err(DataError::Invalid {
            path: dir.to_path_buf(),
            detail: format!("{} pictures: more than this reader indexes", labels.len()),
        });
    }
    Ok(Dataset {
        images: vec![],
        labels,
        shape: ImageShape {
            channels: 3,
            height: side,
            width: side,
        },
        class_names: names,
        files: Some(Arc::new(files)),
    })
}

fn sorted_entries(dir: &Path) -> Result<Vec<PathBuf>, DataError> {
    let mut paths = vec![];
    for entry in std::fs::read_dir(dir).map_err(|e| io_error(dir, e))? {
        paths.push(entry.map_err(|e| io_error(dir, e))?.path());
    }
    paths.sort();
    Ok(paths)
}

fn class_dirs(dir: &Path) -> Result<Vec<(String, PathBuf)>, DataError> {
    Ok(sorted_entries(dir)?
        .into_iter()
        .filter(|p| p.is_dir())
        .filter_map(|p| Some((p.file_name()?.to_string_lossy().into_owned(), p)))
        .filter(|(name, _)| !name.starts_with('.'))
        .collect())
}

/// An RGBA picture (a browser's decoded image or camera frame) as
/// `side` x `side` CHW bytes, prepared as `load_image` prepares a file.
pub fn prepare_rgba(
    rgba: &[u8],
    width: u32,
    height: u32,
    side: usize,
    crop: f64,
) -> Result<Vec<u8>, String> {
    let mut out = vec![0; 3 * side * side];
    let side32 = u32::try_from(side).map_err(|_| format!("image side {side} is too large"))?;
    Decoder::new().sample_rgba(
        rgba,
        width,
        height,
        &Transform::Eval { crop },
        0,
        side32,
        &mut out,
    )?;
    Ok(out)
}

/// A JPEG or PNG as `side` x `side` CHW bytes, prepared as evaluation
/// prepares it: the shorter side resized to `side / crop`, the center square
/// taken (`crop` 1.0: the whole shorter side; 0.875: torchvision's
/// Resize(256) + CenterCrop(224) at 224).
pub fn load_image(path: &Path, side: usize, crop: f64) -> Result<Vec<u8>, DataError> {
    let mut out = vec![0; 3 * side * side];
    let side32 = u32::try_from(side).map_err(|_| DataError::Invalid {
        path: path.to_path_buf(),
        detail: format!("image side {side} is too large"),
    })?;
    Decoder::new()
        .sample(path, &Transform::Eval { crop }, 0, 0, side32, &mut out)
        .map_err(|detail| match std::fs::metadata(path) {
            Err(e) => io_error(path, e),
            Ok(_) => DataError::Invalid {
                path: path.to_path_buf(),
                detail,
            },
        })?;
    Ok(out)
}
