//! CIFAR-10 and CIFAR-100 in their binary formats ("CIFAR-10 binary version"):
//! records of label byte(s) then 3072 bytes of R, G and B planes (32x32 each).

use std::path::{Path, PathBuf};

use super::{CIFAR10_CLASSES, DataError, DataSplit, Dataset, io_error};
use crate::shapes::ImageShape;

const IMAGE: ImageShape = ImageShape {
    channels: 3,
    height: 32,
    width: 32,
};
const PIXELS: usize = 3 * 32 * 32;

/// Which of CIFAR-100's two labels to train on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Cifar100Labels {
    /// 100 classes.
    Fine,
    /// 20 superclasses.
    Coarse,
}

/// The class-name files of the binary versions: CIFAR-10's, and CIFAR-100's
/// for its fine and coarse labels.
const CIFAR10_NAMES_FILE: &str = "batches.meta.txt";
const CIFAR100_FINE_NAMES_FILE: &str = "fine_label_names.txt";
const CIFAR100_COARSE_NAMES_FILE: &str = "coarse_label_names.txt";

/// data_batch_1.bin .. data_batch_5.bin and test_batch.bin from `dir`, with
/// the class names of its batches.meta.txt when it has one (a custom dataset
/// in CIFAR's layout names its own classes), else CIFAR-10's.
pub fn load_cifar10(dir: &Path) -> Result<DataSplit, DataError> {
    let names = names_in_folder(dir, CIFAR10_NAMES_FILE, 10)?
        .unwrap_or_else(|| CIFAR10_CLASSES.iter().map(|s| s.to_string()).collect());
    let format = cifar10_format();
    let train_files: Vec<PathBuf> = (1..=5)
        .map(|i| dir.join(format!("data_batch_{i}.bin")))
        .collect();
    let train = read_files(&train_files, &format, &names)?;
    let test = read_files(&[dir.join("test_batch.bin")], &format, &names)?;
    Ok(DataSplit {
        name: format!("cifar10 ({})", dir.display()),
        train,
        test,
        eval_set: super::EvalSet::Test,
    })
}

/// train.bin and test.bin from `dir`, with the coarse or fine label.
pub fn load_cifar100(dir: &Path, labels: Cifar100Labels) -> Result<DataSplit, DataError> {
    let (label_index, classes) = match labels {
        Cifar100Labels::Coarse => (0, 20),
        Cifar100Labels::Fine => (1, 100),
    };
    let names_file = match labels {
        Cifar100Labels::Coarse => CIFAR100_COARSE_NAMES_FILE,
        Cifar100Labels::Fine => CIFAR100_FINE_NAMES_FILE,
    };
    let names = names_in_folder(dir, names_file, classes)?
        .unwrap_or_else(|| (0..classes).map(|c| format!("class {c}")).collect());
    let format = Format {
        label_bytes: 2,
        label_index,
        classes,
        name: "CIFAR-100",
    };
    let train = read_files(&[dir.join("train.bin")], &format, &names)?;
    let test = read_files(&[dir.join("test.bin")], &format, &names)?;
    Ok(DataSplit {
        name: format!("cifar100 {labels:?} ({})", dir.display()).to_lowercase(),
        train,
        test,
        eval_set: super::EvalSet::Test,
    })
}

/// CIFAR-10 from files already in memory (a browser's file picker): any of
/// data_batch_1..5.bin for training and test_batch.bin, by name, and the
/// class names of a batches.meta.txt among them.
pub fn cifar10_from_files(files: &[(String, Vec<u8>)]) -> Result<DataSplit, DataError> {
    let (meta, files): (Vec<_>, Vec<_>) = files.iter().partition(|(n, _)| n == CIFAR10_NAMES_FILE);
    let names = match meta.first() {
        Some((name, bytes)) => class_names(Path::new(name), bytes, 10)?,
        None => CIFAR10_CLASSES.iter().map(|s| s.to_string()).collect(),
    };
    let format = cifar10_format();
    let mut split = DataSplit {
        name: String::new(),
        train: Dataset::empty(IMAGE, &names),
        test: Dataset::empty(IMAGE, &names),
        eval_set: super::EvalSet::Test,
    };
    let mut train_files = vec![];
    // Batches in name order, whatever order the picker gave them in.
    let mut files = files;
    files.sort_by(|a, b| a.0.cmp(&b.0));
    for (name, bytes) in files {
        let into = if name == "test_batch.bin" {
            &mut split.test
        } else if name.starts_with("data_batch_") && name.ends_with(".bin") {
            train_files.push(name.as_str());
            &mut split.train
        } else {
            return Err(DataError::Invalid {
                path: name.into(),
                detail: "not a CIFAR-10 binary batch (data_batch_N.bin or test_batch.bin)".into(),
            });
        };
        parse_records(Path::new(name), bytes, &format, into)?;
    }
    for (set, what) in [
        (&split.train, "data_batch_1.bin .. data_batch_5.bin"),
        (&split.test, "test_batch.bin"),
    ] {
        if set.is_empty() {
            return Err(DataError::Missing {
                path: what.into(),
                hint: " (pick the CIFAR-10 binary version's files)".into(),
            });
        }
    }
    split.name = format!("cifar10 ({})", train_files.join(", "));
    Ok(split)
}

/// The class names in `dir/file`, None when there is no such file.
fn names_in_folder(
    dir: &Path,
    file: &str,
    classes: usize,
) -> Result<Option<Vec<String>>, DataError> {
    let path = dir.join(file);
    match std::fs::read(&path) {
        Ok(bytes) => class_names(&path, &bytes, classes).map(Some),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_error(&path, e)),
    }
}

/// One class name per non-empty line (CIFAR's files end in blank lines), as
/// many as the layout has labels.
fn class_names(path: &Path, bytes: &[u8], classes: usize) -> Result<Vec<String>, DataError> {
    let invalid = |detail: String| DataError::Invalid {
        path: path.to_path_buf(),
        detail,
    };
    let text = std::str::from_utf8(bytes)
        .map_err(|_| invalid("is not text (one class name per line)".into()))?;
    let names: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect();
    if names.len() != classes {
        return Err(invalid(format!(
            "lists {} class names; the labels of this layout count {classes} classes \
             (one name per line, or remove the file for default names)",
            names.len()
        )));
    }
    Ok(names)
}

fn cifar10_format() -> Format {
    Format {
        label_bytes: 1,
        label_index: 0,
        classes: 10,
        name: "CIFAR-10",
    }
}

struct Format {
    label_bytes: usize,
    label_index: usize,
    classes: usize,
    name: &'static str,
}

fn read_files(paths: &[PathBuf], format: &Format, names: &[String]) -> Result<Dataset, DataError> {
    let mut out = Dataset::empty(IMAGE, names);
    for path in paths {
        let bytes = std::fs::read(path).map_err(|e| match io_error(path, e) {
            DataError::Missing { path, .. } => DataError::Missing {
                path,
                hint: format!(
                    " (expected the {} binary version: {})",
                    format.name,
                    paths
                        .iter()
                        .filter_map(|p| p.file_name())
                        .map(|n| n.to_string_lossy().into_owned())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            },
            other => other,
        })?;
        parse_records(path, &bytes, format, &mut out)?;
    }
    Ok(out)
}

fn parse_records(
    path: &Path,
    bytes: &[u8],
    format: &Format,
    out: &mut Dataset,
) -> Result<(), DataError> {
    let record = format.label_bytes + PIXELS;
    if bytes.is_empty() || bytes.len() % record != 0 {
        return Err(DataError::PartialRecord {
            path: path.to_path_buf(),
            size: bytes.len() as u64,
            record,
            format: format.name,
        });
    }
    for (i, rec) in bytes.chunks_exact(record).enumerate() {
        let label = u32::from(rec[format.label_index]);
        if label as usize >= format.classes {
            return Err(DataError::LabelOutOfRange {
                path: path.to_path_buf(),
                record: i,
                label,
                classes: format.classes,
            });
        }
        out.labels.push(label);
        out.images.extend_from_slice(&rec[format.label_bytes..]);
    }
    Ok(())
}
