//! An image folder indexed, not loaded: the paths, sizes and labels of its
//! pictures, found by a directory walk over the class folders in parallel.
//! Pixels are decoded later, batch by batch, by the input pipeline.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::{DataError, io_error};

/// The pictures of one split (no pixels): files of an image folder, or
/// members of packed tar shards. `paths` are relative to `root` (for shards:
/// the member names), in the dataset's order.
#[derive(Debug, Default)]
pub struct ImageFiles {
    pub root: PathBuf,
    pub paths: Vec<PathBuf>,
    /// Bytes of each picture: with the paths, the data's identity (no pass
    /// over the bytes).
    pub sizes: Vec<u64>,
    /// Packed shards only: the shard files (relative to `root`) and where
    /// each picture lies in them; empty for an image folder.
    pub shards: Vec<PathBuf>,
    pub members: Vec<Member>,
    /// Pictures found unreadable so far (index -> reason); later epochs skip them.
    pub bad: Mutex<BTreeMap<u32, String>>,
}

/// A picture inside a shard: which shard, and its byte range there.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Member {
    pub shard: u32,
    pub offset: u64,
    pub len: u64,
}

impl ImageFiles {
    /// Where picture `i` is, for messages (a shard member as `shard.tar/name`).
    pub fn path(&self, i: usize) -> PathBuf {
        match self.members.get(i) {
            None => self.root.join(&self.paths[i]),
            Some(m) => self
                .root
                .join(&self.shards[m.shard as usize])
                .join(&self.paths[i]),
        }
    }

    /// Picture `i`'s bytes into `buf` (replacing what it held).
    pub fn read(&self, i: usize, buf: &mut Vec<u8>) -> std::io::Result<()> {
        use std::io::{Read, Seek, SeekFrom};
        buf.clear();
        match self.members.get(i) {
            None => std::fs::File::open(self.path(i))?
                .read_to_end(buf)
                .map(|_| ()),
            Some(m) => {
                let mut shard =
                    std::fs::File::open(self.root.join(&self.shards[m.shard as usize]))?;
                shard.seek(SeekFrom::Start(m.offset))?;
                shard.take(m.len).read_to_end(buf)?;
                if (buf.len() as u64) < m.len {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        "the shard ends inside this picture",
                    ));
                }
                Ok(())
            }
        }
    }

    /// Whether the pictures are members of packed shards.
    pub fn is_packed(&self) -> bool {
        !self.members.is_empty()
    }

    /// The pictures at `indices`, in that order (a held-out validation set).
    pub fn select(&self, indices: &[usize]) -> ImageFiles {
        ImageFiles {
            root: self.root.clone(),
            paths: indices.iter().map(|&i| self.paths[i].clone()).collect(),
            sizes: indices.iter().map(|&i| self.sizes[i]).collect(),
            shards: self.shards.clone(),
            members: if self.is_packed() {
                indices.iter().map(|&i| self.members[i]).collect()
            } else {
                vec![]
            },
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
