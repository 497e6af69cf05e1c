//! An image folder indexed, not loaded: the paths, sizes and labels of its
//! pictures, found by a directory walk over the class folders in parallel.
//! Pixels are decoded later, batch by batch, by the input pipeline.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::{DataError, io_error};

/// The picture files of one split (no pixels): `paths` relative to `root`,
/// in ImageFolder's order (class, then path).
#[derive(Debug, Default)]
pub struct ImageFiles {
    pub root: PathBuf,
    pub paths: Vec<PathBuf>,
    /// Bytes of each file: with the paths, the data's identity (no pass
    /// over the bytes).
    pub sizes: Vec<u64>,
    /// Files found unreadable so far (index -> reason); later epochs skip them.
    pub bad: Mutex<BTreeMap<u32, String>>,
}

impl ImageFiles {
    pub fn path(&self, i: usize) -> PathBuf {
        self.root.join(&self.paths[i])
    }

    /// The files at `indices`, in that order (a held-out validation set).
    pub fn select(&self, indices: &[usize]) -> ImageFiles {
        ImageFiles {
            root: self.root.clone(),
            paths: indices.iter().map(|&i| self.paths[i].clone()).collect(),
            sizes: indices.iter().map(|&i| self.sizes[i]).collect(),
            bad: Mutex::default(),
        }
    }

    /// Files found unreadable so far.
    pub fn bad_count(&self) -> usize {
        self.bad.lock().map_or(0, |b| b.len())
    }
}

/// Whether a file name is a picture the folder reader takes.
pub fn is_picture(path: &Path) -> bool {
    path.extension()
        .map(|e| e.to_string_lossy().to_lowercase())
        .is_some_and(|e| matches!(e.as_str(), "jpg" | "jpeg" | "png"))
}

/// A class folder's pictures: (path relative to the split folder, bytes),
/// subfolders included (as torchvision's ImageFolder takes them), sorted.
type ClassFiles = Vec<(PathBuf, u64)>;

/// Indexes `classes` (folders under `root`) on `threads` threads; returns
/// each class's files in the order given.
pub fn index_classes(
    root: &Path,
    classes: &[PathBuf],
    threads: usize,
) -> Result<Vec<ClassFiles>, DataError> {
    let next = AtomicUsize::new(0);
    let found: Vec<Mutex<Option<Result<ClassFiles, DataError>>>> =
        classes.iter().map(|_| Mutex::new(None)).collect();
    std::thread::scope(|scope| {
        for _ in 0..threads.clamp(1, classes.len().max(1)) {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(class) = classes.get(i) else { break };
                    let mut files = vec![];
                    let result = walk(root, class, &mut files).map(|()| {
                        files.sort();
                        files
                    });
                    *found[i].lock().expect("no panics under this lock") = Some(result);
                }
            });
        }
    });
    found
        .into_iter()
        .map(|m| {
            m.into_inner()
                .expect("no panics")
                .expect("every class walked")
        })
        .collect()
}

/// Adds the pictures under `dir` (recursively; hidden entries skipped).
fn walk(root: &Path, dir: &Path, files: &mut ClassFiles) -> Result<(), DataError> {
    for entry in std::fs::read_dir(dir).map_err(|e| io_error(dir, e))? {
        let entry = entry.map_err(|e| io_error(dir, e))?;
        if entry.file_name().to_string_lossy().starts_with('.') {
            continue;
        }
        let path = entry.path();
        // file_type() follows no link; a linked folder or file is stat'ed.
        let kind = entry.file_type().map_err(|e| io_error(&path, e))?;
        let meta = if kind.is_symlink() {
            std::fs::metadata(&path).map_err(|e| io_error(&path, e))?
        } else {
            entry.metadata().map_err(|e| io_error(&path, e))?
        };
        if meta.is_dir() {
            walk(root, &path, files)?;
        } else if is_picture(&path) {
            let relative = path.strip_prefix(root).unwrap_or(&path).to_path_buf();
            files.push((relative, meta.len()));
        }
    }
    Ok(())
}
