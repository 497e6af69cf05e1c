//! An image folder as torchvision's ImageFolder reads it: one subfolder per
//! class (sorted names are the class indices), JPEG or PNG files inside. Each
//! picture is resized so its shorter side is `image_size`, center-cropped to a
//! square and kept as u8 RGB; random crops and flips happen on the GPU.

use std::path::{Path, PathBuf};

use image::imageops::FilterType;

use super::{DataError, DataSplit, Dataset, io_error};
use crate::shapes::ImageShape;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FolderOptions {
    /// Side of the square images the model sees.
    pub image_size: usize,
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
    let side = options.image_size;
    let mut out = Dataset {
        images: vec![],
        labels: vec![],
        shape: ImageShape {
            channels: 3,
            height: side,
            width: side,
        },
        class_names: names,
    };
    for (label, (name, class_dir)) in found.iter().enumerate() {
        let files = image_files(class_dir)?;
        // A class the model cannot see in training would still get an output.
        if files.is_empty() && classes.is_none() {
            return Err(DataError::Invalid {
                path: class_dir.clone(),
                detail: format!(
                    "class '{name}' has no .jpg, .jpeg or .png training images; add some or \
                     remove the folder"
                ),
            });
        }
        for file in files {
            out.images.extend(load_image(&file, side)?);
            out.labels.push(label as u32);
        }
    }
    if out.is_empty() {
        return Err(DataError::Invalid {
            path: dir.to_path_buf(),
            detail: "no .jpg, .jpeg or .png files in the class folders".into(),
        });
    }
    Ok(out)
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

fn image_files(dir: &Path) -> Result<Vec<PathBuf>, DataError> {
    Ok(sorted_entries(dir)?
        .into_iter()
        .filter(|p| {
            p.extension()
                .map(|e| e.to_string_lossy().to_lowercase())
                .is_some_and(|e| matches!(e.as_str(), "jpg" | "jpeg" | "png"))
        })
        .collect())
}

/// Decodes, resizes the shorter side to `side`, center-crops, and returns CHW u8.
/// A JPEG or PNG as `side` x `side` CHW bytes: the shorter side resized to
/// `side`, then center-cropped (an image already that size is taken as is).
pub fn load_image(path: &Path, side: usize) -> Result<Vec<u8>, DataError> {
    let bytes = std::fs::read(path).map_err(|e| io_error(path, e))?;
    let picture = image::load_from_memory(&bytes).map_err(|e| DataError::Invalid {
        path: path.to_path_buf(),
        detail: format!("not a readable JPEG or PNG image: {e}"),
    })?;
    let (w, h) = (picture.width() as usize, picture.height() as usize);
    let scale = side as f64 / w.min(h) as f64;
    let (nw, nh) = (
        ((w as f64 * scale).round() as u32).max(side as u32),
        ((h as f64 * scale).round() as u32).max(side as u32),
    );
    let rgb = if (w, h) == (nw as usize, nh as usize) {
        picture.to_rgb8()
    } else {
        picture.resize_exact(nw, nh, FilterType::Triangle).to_rgb8()
    };
    let (x0, y0) = ((nw as usize - side) / 2, (nh as usize - side) / 2);
    let mut chw = vec![0u8; 3 * side * side];
    for y in 0..side {
        for x in 0..side {
            let p = rgb.get_pixel((x0 + x) as u32, (y0 + y) as u32);
            for c in 0..3 {
                chw[c * side * side + y * side + x] = p[c];
            }
        }
    }
    Ok(chw)
}
