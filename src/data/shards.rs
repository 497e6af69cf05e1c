//! Packed shards: an image folder written once as WebDataset tar shards
//! (`train/shard-000000.tar`, ..., `val/...`, each a run of `<key>.jpg` +
//! `<key>.cls` members, about 1 GB a shard), the pictures re-encoded with
//! their longer side capped (FFCV's trick: a 256-512 px JPEG decodes several
//! times faster than a camera-sized one). Reading indexes the tar headers
//! only (name, offset, size of each member; the class members' few bytes),
//! so a shard set is random-access like a folder: the input pipeline reads
//! members in the shard order of `order::shard_order`, near-sequentially.
//! Shards written by Python's `webdataset` (any key, `.jpg`/`.jpeg`/`.png`
//! with `.cls`) read the same way.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::index::{ImageFiles, Member};
use super::{DataError, DataSplit, Dataset, FolderOptions, epoch_order, io_error, load_folder};
use crate::shapes::ImageShape;

/// The class names, one a line, beside the split folders (optional: shards
/// without it name classes by number).
pub const CLASSES_FILE: &str = "classes.txt";

/// Whether `dir` holds packed shards: `.tar` files in `dir/train`.
pub fn is_packed(dir: &Path) -> bool {
    tar_files(&dir.join("train")).is_ok_and(|t| !t.is_empty())
}

/// `dir/train/*.tar` and `dir/val/*.tar` (or `dir/test`), indexed.
pub fn load_shards(dir: &Path, image_size: usize) -> Result<DataSplit, DataError> {
    let (train_files, train_labels) = index_split(&dir.join("train"))?;
    let test_dir = ["val", "test"]
        .iter()
        .map(|n| dir.join(n))
        .find(|p| p.is_dir())
        .ok_or_else(|| DataError::Missing {
            path: dir.join("val"),
            hint: " (packed shards need val/ or test/ beside train/)".into(),
        })?;
    let (test_files, test_labels) = index_split(&test_dir)?;
    let classes = class_names(dir, &train_labels, &test_labels)?;
    let set = |files, labels| Dataset {
        images: vec![],
        labels,
        shape: ImageShape {
            channels: 3,
            height: image_size,
            width: image_size,
        },
        class_names: classes.clone(),
        files: Some(Arc::new(files)),
    };
    Ok(DataSplit {
        name: format!("shards ({})", dir.display()),
        train: set(train_files, train_labels),
        test: set(test_files, test_labels),
        eval_set: super::EvalSet::Validation,
    })
}

/// The names in `classes.txt`, else "0", "1", ... up to the largest label.
fn class_names(dir: &Path, train: &[u32], test: &[u32]) -> Result<Vec<String>, DataError> {
    let count = train
        .iter()
        .chain(test)
        .max()
        .map_or(0, |&m| m as usize + 1);
    let file = dir.join(CLASSES_FILE);
    let names: Vec<String> = match std::fs::read_to_string(&file) {
        Ok(text) => text.lines().map(str::to_string).collect(),
        Err(_) => (0..count).map(|c| c.to_string()).collect(),
    };
    if names.len() < count.max(2) {
        return Err(DataError::Invalid {
            path: file,
            detail: format!(
                "{} class names for labels up to {} (at least 2 classes)",
                names.len(),
                count.saturating_sub(1)
            ),
        });
    }
    Ok(names)
}

fn tar_files(dir: &Path) -> Result<Vec<PathBuf>, DataError> {
    let mut tars = vec![];
    for entry in std::fs::read_dir(dir).map_err(|e| io_error(dir, e))? {
        let path = entry.map_err(|e| io_error(dir, e))?.path();
        if path.extension().is_some_and(|e| e == "tar") {
            tars.push(path);
        }
    }
    tars.sort();
    Ok(tars)
}

/// One split's shards: every sample's picture member and label.
fn index_split(dir: &Path) -> Result<(ImageFiles, Vec<u32>), DataError> {
    let tars = tar_files(dir)?;
    if tars.is_empty() {
        return Err(DataError::Invalid {
            path: dir.to_path_buf(),
            detail: "no .tar shards".into(),
        });
    }
    let mut files = ImageFiles {
        root: dir.to_path_buf(),
        ..ImageFiles::default()
    };
    let mut labels = vec![];
    for (shard, tar) in tars.iter().enumerate() {
        files
            .shards
            .push(tar.strip_prefix(dir).unwrap_or(tar).to_path_buf());
        for sample in index_shard(tar)? {
            files.paths.push(sample.name.into());
            files.sizes.push(sample.member.len);
            files.members.push(Member {
                shard: shard as u32,
                ..sample.member
            });
            labels.push(sample.label);
        }
    }
    if u32::try_from(labels.len()).is_err() {
        return Err(DataError::Invalid {
            path: dir.to_path_buf(),
            detail: format!("{} pictures: more than this reader indexes", labels.len()),
        });
    }
    Ok((files, labels))
}

/// A sample of a shard: its picture member (shard index filled in later),
/// the member's name and the label.
struct Sample {
    name: String,
    member: Member,
    label: u32,
}

/// WebDataset's grouping: members whose names share the part before the
/// first dot of the file name form one sample.
fn key_and_extension(name: &str) -> (&str, String) {
    let base = name.rfind('/').map_or(0, |i| i + 1);
    match name[base..].find('.') {
        Some(dot) => (&name[..base + dot], name[base + dot + 1..].to_lowercase()),
        None => (name, String::new()),
    }
}

fn index_shard(tar: &Path) -> Result<Vec<Sample>, DataError> {
    let invalid = |detail: String| DataError::Invalid {
        path: tar.to_path_buf(),
        detail,
    };
    let file = std::fs::File::open(tar).map_err(|e| io_error(tar, e))?;
    let mut archive = tar::Archive::new(std::io::BufReader::new(file));
    let mut samples = vec![];
    // The sample being read: key, picture member, label.
    let mut open: Option<(String, Option<(String, Member)>, Option<u32>)> = None;
    let entries = archive
        .entries_with_seek()
        .map_err(|e| invalid(e.to_string()))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| invalid(format!("not a readable tar file: {e}")))?;
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let name = entry
            .path()
            .map_err(|e| invalid(e.to_string()))?
            .to_string_lossy()
            .into_owned();
        let (key, extension) = key_and_extension(&name);
        if open.as_ref().is_none_or(|(k, _, _)| k != key) {
            if let Some(done) = open.take() {
                samples.push(finish_sample(tar, done)?);
            }
            open = Some((key.to_string(), None, None));
        }
        let (_, picture, label) = open.as_mut().expect("opened above");
        match extension.as_str() {
            "jpg" | "jpeg" | "png" => {
                let member = Member {
                    shard: 0,
                    offset: entry.raw_file_position(),
                    len: entry.size(),
                };
                *picture = Some((name.clone(), member));
            }
            "cls" => {
                let mut text = String::new();
                entry
                    .by_ref()
                    .take(32)
                    .read_to_string(&mut text)
                    .map_err(|e| invalid(format!("{name}: {e}")))?;
                let value = text.trim().parse::<u32>().map_err(|_| {
                    invalid(format!("{name}: '{}' is not a class number", text.trim()))
                })?;
                *label = Some(value);
            }
            _ => {} // other fields of a sample (.json, .txt, ...) are not used
        }
    }
    if let Some(done) = open.take() {
        samples.push(finish_sample(tar, done)?);
    }
    Ok(samples)
}

fn finish_sample(
    tar: &Path,
    (key, picture, label): (String, Option<(String, Member)>, Option<u32>),
) -> Result<Sample, DataError> {
    match (picture, label) {
        (Some((name, member)), Some(label)) => Ok(Sample {
            name,
            member,
            label,
        }),
        (picture, _) => Err(DataError::Invalid {
            path: tar.to_path_buf(),
            detail: format!(
                "sample '{key}' has no {} member",
                if picture.is_none() {
                    ".jpg, .jpeg or .png"
                } else {
                    ".cls"
                }
            ),
        }),
    }
}

/// How `pack` writes shards.
#[derive(Clone, Copy, Debug)]
pub struct PackOptions {
    /// Longer side of the re-encoded pictures (smaller ones are kept as they are).
    pub max_side: u32,
    /// A shard is closed once it holds this many bytes.
    pub shard_bytes: u64,
    pub quality: u8,
    pub workers: usize,
}

/// What `pack` wrote.
#[derive(Clone, Debug, Default)]
pub struct PackSummary {
    pub samples: usize,
    pub shards: usize,
    pub bytes: u64,
    /// Pictures that could not be read (not packed), with the reason.
    pub bad: Vec<(PathBuf, String)>,
}

/// Writes the image folder `source` as shards in `out` (which must not exist
/// or be empty): `train/` in a seeded shuffled order (so a shard mixes the
/// classes), `val/` in order, and `classes.txt`.
pub fn pack(source: &Path, out: &Path, options: PackOptions) -> Result<PackSummary, DataError> {
    if std::fs::read_dir(out).is_ok_and(|mut d| d.next().is_some()) {
        return Err(DataError::Invalid {
            path: out.to_path_buf(),
            detail: "is not empty; pack writes into a new folder".into(),
        });
    }
    let split = load_folder(source, FolderOptions::new(8))?;
    std::fs::create_dir_all(out).map_err(|e| io_error(out, e))?;
    let classes = out.join(CLASSES_FILE);
    let names = split.train.class_names.join("\n") + "\n";
    std::fs::write(&classes, names).map_err(|e| io_error(&classes, e))?;
    let mut summary = PackSummary::default();
    let train_order = epoch_order(0, 0, split.train.len());
    let val_order: Vec<u32> = (0..split.test.len() as u32).collect();
    for (name, set, order) in [
        ("train", &split.train, train_order),
        ("val", &split.test, val_order),
    ] {
        write_split(&out.join(name), set, &order, options, &mut summary)?;
    }
    Ok(summary)
}

/// Pictures re-encoded per round of work (bounds pack's memory).
const PACK_ROUND: usize = 256;

fn write_split(
    dir: &Path,
    set: &Dataset,
    order: &[u32],
    options: PackOptions,
    summary: &mut PackSummary,
) -> Result<(), DataError> {
    std::fs::create_dir_all(dir).map_err(|e| io_error(dir, e))?;
    let files = set.files.as_ref().expect("an image folder is file-backed");
    let mut writer = ShardWriter::new(dir, options.shard_bytes);
    for round in order.chunks(PACK_ROUND) {
        for (i, encoded) in reencode_round(files, round, options)
            .into_iter()
            .enumerate()
        {
            let index = round[i] as usize;
            match encoded {
                Ok(jpeg) => {
                    let key = format!("{:09}", summary.samples);
                    writer.append(&key, &jpeg, set.labels[index])?;
                    summary.samples += 1;
                    summary.bytes += jpeg.len() as u64;
                }
                Err(reason) => summary.bad.push((files.path(index), reason)),
            }
        }
    }
    summary.shards += writer.finish()?;
    Ok(())
}

/// The pictures of `round`, re-encoded on `options.workers` threads.
fn reencode_round(
    files: &ImageFiles,
    round: &[u32],
    options: PackOptions,
) -> Vec<Result<Vec<u8>, String>> {
    let next = AtomicUsize::new(0);
    let results: Vec<std::sync::Mutex<Result<Vec<u8>, String>>> = round
        .iter()
        .map(|_| std::sync::Mutex::new(Err(String::new())))
        .collect();
    std::thread::scope(|scope| {
        for _ in 0..options.workers.clamp(1, round.len()) {
            scope.spawn(|| {
                let mut bytes = vec![];
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(&index) = round.get(i) else { break };
                    let result = files
                        .read(index as usize, &mut bytes)
                        .map_err(|e| e.to_string())
                        .and_then(|()| reencode(&bytes, options));
                    *results[i].lock().expect("no panics under this lock") = result;
                }
            });
        }
    });
    results
        .into_iter()
        .map(|m| m.into_inner().expect("no panics"))
        .collect()
}

/// A picture as an RGB JPEG with its longer side at most `max_side`.
fn reencode(bytes: &[u8], options: PackOptions) -> Result<Vec<u8>, String> {
    let picture = image::load_from_memory(bytes)
        .map_err(|e| format!("not a readable JPEG or PNG image: {e}"))?;
    let (w, h) = (picture.width(), picture.height());
    let longer = w.max(h);
    let picture = if longer > options.max_side {
        let scale = f64::from(options.max_side) / f64::from(longer);
        let side = |v: u32| ((f64::from(v) * scale).round() as u32).max(1);
        picture.resize_exact(side(w), side(h), image::imageops::FilterType::Triangle)
    } else {
        picture
    };
    let mut jpeg = vec![];
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, options.quality)
        .encode_image(&picture.to_rgb8())
        .map_err(|e| e.to_string())?;
    Ok(jpeg)
}

/// Writes samples into `shard-NNNNNN.tar` files of about `limit` bytes.
struct ShardWriter {
    dir: PathBuf,
    limit: u64,
    open: Option<(
        tar::Builder<std::io::BufWriter<std::fs::File>>,
        u64,
        PathBuf,
    )>,
    written: usize,
}

impl ShardWriter {
    fn new(dir: &Path, limit: u64) -> Self {
        ShardWriter {
            dir: dir.to_path_buf(),
            limit,
            open: None,
            written: 0,
        }
    }

    fn append(&mut self, key: &str, jpeg: &[u8], label: u32) -> Result<(), DataError> {
        if self
            .open
            .as_ref()
            .is_some_and(|(_, bytes, _)| *bytes >= self.limit)
        {
            self.close()?;
        }
        if self.open.is_none() {
            let path = self.dir.join(format!("shard-{:06}.tar", self.written));
            let file = std::fs::File::create(&path).map_err(|e| io_error(&path, e))?;
            self.open = Some((tar::Builder::new(std::io::BufWriter::new(file)), 0, path));
        }
        let (builder, bytes, path) = self.open.as_mut().expect("opened above");
        let class = label.to_string();
        for (name, data) in [
            (format!("{key}.jpg"), jpeg),
            (format!("{key}.cls"), class.as_bytes()),
        ] {
            let mut header = tar::Header::new_ustar();
            header.set_size(data.len() as u64);
            header.set_mode(0o644);
            header.set_mtime(0);
            builder
                .append_data(&mut header, &name, data)
                .map_err(|e| io_error(path, e))?;
            *bytes += 512 + (data.len() as u64).div_ceil(512) * 512;
        }
        Ok(())
    }

    fn close(&mut self) -> Result<(), DataError> {
        if let Some((builder, _, path)) = self.open.take() {
            let writer = builder.into_inner().map_err(|e| io_error(&path, e))?;
            writer
                .into_inner()
                .map_err(|e| io_error(&path, e.into_error()))?
                .sync_all()
                .map_err(|e| io_error(&path, e))?;
            self.written += 1;
        }
        Ok(())
    }

    /// Closes the last shard; returns how many were written.
    fn finish(mut self) -> Result<usize, DataError> {
        self.close()?;
        Ok(self.written)
    }
}
