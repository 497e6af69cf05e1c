//! The checkpoint codec. `model.safetensors` holds the state dict under
//! torchvision's names (PyTorch loads it with `load_state_dict(strict=True)`
//! into the same architecture) and, in its metadata, what `eval` and `predict`
//! need to rebuild the model and prepare images; `trainer.safetensors` beside
//! it holds the SGD momenta and, in its metadata, the run's position and
//! config. Files are written durably (temporary file, fsync, rename);
//! `load.rs` puts a state dict back into a trainer. Where checkpoints live in
//! a run folder, and how they are named, kept and found, is `run_folder`'s.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use safetensors::tensor::{Dtype, TensorView};

use super::plan::Plan;
use super::trainer::{Progress, TrainConfig, Trainer};
#[cfg(not(target_arch = "wasm32"))]
use crate::model::TensorRole;
#[cfg(not(target_arch = "wasm32"))]
use crate::ops::loss::METRICS_LEN;

mod load;

pub use load::{LoadMode, load_model, load_momenta};

pub const MODEL_FILE: &str = "model.safetensors";
pub const TRAINER_FILE: &str = "trainer.safetensors";

#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// The cause is in the message, not chained as a source, so `{:#}`
    /// prints it once.
    #[error("{path}: {cause}")]
    Io {
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error("{path}: not a readable safetensors file: {detail}")]
    Format { path: PathBuf, detail: String },
    #[error("{path}: {detail}")]
    Mismatch { path: PathBuf, detail: String },
    #[error(
        "step {step}: '{tensor}' holds NaN or infinite values; the model diverged and is not \
         saved as a checkpoint"
    )]
    NonFinite { step: u64, tensor: String },
    #[error(transparent)]
    Gpu(#[from] crate::gpu::GpuError),
}

pub(crate) fn io(path: &Path) -> impl FnOnce(std::io::Error) -> CheckpointError + '_ {
    move |cause| CheckpointError::Io {
        path: path.to_path_buf(),
        cause,
    }
}

/// Tensors by name (as f32, whatever the stored float type) and the file's metadata.
#[derive(Clone, Debug, Default)]
pub struct StateDict {
    pub tensors: HashMap<String, (Vec<usize>, Vec<f32>)>,
    pub metadata: HashMap<String, String>,
}

impl StateDict {
    pub fn read(path: &Path) -> Result<Self, CheckpointError> {
        let bytes = std::fs::read(path).map_err(io(path))?;
        Self::from_bytes(&bytes, path)
    }

    /// A safetensors file already in memory (a browser's picked file);
    /// `path` names it in errors.
    pub fn from_bytes(bytes: &[u8], path: &Path) -> Result<Self, CheckpointError> {
        let format = |detail: String| CheckpointError::Format {
            path: path.to_path_buf(),
            detail,
        };
        let (_, header) =
            safetensors::SafeTensors::read_metadata(bytes).map_err(|e| format(e.to_string()))?;
        let file =
            safetensors::SafeTensors::deserialize(bytes).map_err(|e| format(e.to_string()))?;
        let mut tensors = HashMap::new();
        for (name, view) in file.tensors() {
            let data = to_f32(&view).ok_or_else(|| {
                format(format!(
                    "tensor '{name}' has unsupported type {:?}",
                    view.dtype()
                ))
            })?;
            tensors.insert(name, (view.shape().to_vec(), data));
        }
        Ok(StateDict {
            tensors,
            metadata: header.metadata().clone().unwrap_or_default(),
        })
    }
}

fn to_f32(view: &TensorView<'_>) -> Option<Vec<f32>> {
    let b = view.data();
    Some(match view.dtype() {
        Dtype::F32 => b
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect(),
        Dtype::F64 => b
            .chunks_exact(8)
            .map(|c| f64::from_le_bytes(c.try_into().unwrap()) as f32)
            .collect(),
        Dtype::F16 => b
            .chunks_exact(2)
            .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        Dtype::BF16 => b
            .chunks_exact(2)
            .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        Dtype::U8 => b.iter().map(|&v| f32::from(v)).collect(),
        Dtype::I64 => b
            .chunks_exact(8)
            .map(|c| i64::from_le_bytes(c.try_into().unwrap()) as f32)
            .collect(),
        _ => return None,
    })
}

/// One tensor to write (F16/BF16: hub-style files, for tests of `--init`).
pub enum Values {
    F32(Vec<f32>),
    I64(Vec<i64>),
    F16(Vec<f32>),
    BF16(Vec<f32>),
}

impl Values {
    fn bytes(&self) -> (Dtype, Vec<u8>) {
        match self {
            Values::F32(v) => (Dtype::F32, bytemuck::cast_slice(v).to_vec()),
            Values::I64(v) => (Dtype::I64, v.iter().flat_map(|x| x.to_le_bytes()).collect()),
            Values::F16(v) => (
                Dtype::F16,
                v.iter()
                    .flat_map(|&x| half::f16::from_f32(x).to_le_bytes())
                    .collect(),
            ),
            Values::BF16(v) => (
                Dtype::BF16,
                v.iter()
                    .flat_map(|&x| half::bf16::from_f32(x).to_le_bytes())
                    .collect(),
            ),
        }
    }
}

/// Writes a safetensors file (temp file + rename, fsynced).
pub fn write_safetensors(
    path: &Path,
    tensors: &[(String, Vec<usize>, Values)],
    metadata: HashMap<String, String>,
) -> Result<(), CheckpointError> {
    let bytes = encode_safetensors(tensors, metadata, path)?;
    write_atomically(path, &bytes)
}

/// A safetensors file's bytes (`path` names it in errors): what
/// `write_safetensors` writes, and what the browser downloads.
pub fn encode_safetensors(
    tensors: &[(String, Vec<usize>, Values)],
    metadata: HashMap<String, String>,
    path: &Path,
) -> Result<Vec<u8>, CheckpointError> {
    let encoded: Vec<(String, Vec<usize>, Dtype, Vec<u8>)> = tensors
        .iter()
        .map(|(n, s, v)| {
            let (dtype, bytes) = v.bytes();
            (n.clone(), s.clone(), dtype, bytes)
        })
        .collect();
    let views: Vec<(String, TensorView<'_>)> = encoded
        .iter()
        .map(|(n, s, d, b)| {
            let view = TensorView::new(*d, s.clone(), b).map_err(|e| CheckpointError::Format {
                path: path.to_path_buf(),
                detail: format!("tensor '{n}': {e}"),
            })?;
            Ok((n.clone(), view))
        })
        .collect::<Result<_, CheckpointError>>()?;
    safetensors::serialize(views, Some(metadata)).map_err(|e| CheckpointError::Format {
        path: path.to_path_buf(),
        detail: e.to_string(),
    })
}

/// Writes `bytes` to `path` so a reader sees either the old or the new file.
/// The temporary name is unique to this process and call (`.NAME.PID-N.tmp`),
/// so two writers never share one; stale ones are removed by `clean_stale`.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), CheckpointError> {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let file_name = path
        .file_name()
        .map_or("file".into(), |n| n.to_string_lossy());
    let tmp = path.with_file_name(format!(
        ".{file_name}.{}-{}.tmp",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let written = (|| {
        use std::io::Write;
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(io(&tmp)(e));
    }
    std::fs::rename(&tmp, path).map_err(io(path))?;
    sync_parent(path)
}

/// Makes a rename in `path`'s folder durable (a no-op where folders cannot be
/// opened as files).
pub(crate) fn sync_parent(path: &Path) -> Result<(), CheckpointError> {
    #[cfg(unix)]
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::File::open(dir)
            .and_then(|f| f.sync_all())
            .map_err(io(dir))?;
    }
    #[cfg(not(unix))]
    let _ = path;
    Ok(())
}

/// The model's metadata: enough for `eval` and `predict` to rebuild the
/// architecture and prepare an image as training did, from this file alone.
pub fn model_metadata(trainer: &Trainer) -> HashMap<String, String> {
    let c = &trainer.config;
    let data = trainer.test_data();
    let json = |v: serde_json::Value| v.to_string();
    let (mean, std) = c.augment.rgb_normalization();
    HashMap::from([
        ("format".into(), "resnet-wgpu".into()),
        (
            META_MODEL.into(),
            serde_json::to_string(&c.model).expect("serializable"),
        ),
        ("step".into(), trainer.progress().global_step.to_string()),
        (META_MEAN.into(), json(serde_json::json!(mean))),
        (META_STD.into(), json(serde_json::json!(std))),
        (
            META_IMAGE.into(),
            json(serde_json::json!([data.shape.height, data.shape.width])),
        ),
        (
            META_CLASSES.into(),
            json(serde_json::json!(data.class_names)),
        ),
        ("dataset".into(), c.dataset.clone()),
        // How evaluation prepared a picture: the center crop's share of the
        // resized shorter side (1: the whole side, CIFAR-like data).
        (META_EVAL_CROP.into(), eval_crop(trainer).to_string()),
    ])
}

/// An image folder is evaluated with torchvision's Resize(side / 0.875) +
/// CenterCrop(side); data in memory is evaluated whole.
fn eval_crop(trainer: &Trainer) -> f64 {
    match trainer.feed_modes().1 {
        super::FeedMode::Pipelined => crate::data::transform::EVAL_CROP,
        _ => 1.0,
    }
}

/// Metadata keys of the model file (`model_metadata`: the model spec, the
/// RGB normalization, the image size and class names, each as JSON) and of
/// the trainer file (`save`: the run's position and its config).
pub const META_MODEL: &str = "model";
pub const META_PROGRESS: &str = "progress";
pub const META_CONFIG: &str = "config";
pub const META_MEAN: &str = "mean";
pub const META_STD: &str = "std";
pub const META_IMAGE: &str = "image_size";
pub const META_CLASSES: &str = "class_names";
pub const META_EVAL_CROP: &str = "eval_crop";

/// The normalization a model file of this tool was trained with, from its
/// metadata: None for files without one, an error for values that cannot
/// normalize (checked like `--normalize`: finite means, positive finite stds).
pub fn normalization_in(
    meta: &HashMap<String, String>,
) -> Result<Option<([f32; 3], [f32; 3])>, String> {
    let three = |key: &str| -> Result<Option<[f32; 3]>, String> {
        meta.get(key)
            .map(|v| {
                serde_json::from_str::<[f32; 3]>(v)
                    .map_err(|_| format!("its metadata's {key} is {v}, not three numbers"))
            })
            .transpose()
    };
    let (Some(mean), Some(std)) = (three(META_MEAN)?, three(META_STD)?) else {
        return Ok(None);
    };
    if !mean.iter().all(|m| m.is_finite()) {
        return Err(format!("its metadata's {META_MEAN} {mean:?} is not finite"));
    }
    if !std.iter().all(|s| s.is_finite() && *s > 0.0) {
        return Err(format!(
            "its metadata's {META_STD} {std:?} must be finite and above 0"
        ));
    }
    Ok(Some((mean, std)))
}

/// `normalization_in` of the model file at `path` (a file, or a checkpoint
/// folder: `run_folder::model_file` finds one in a run folder), reading its
/// header only. A file that cannot be read has none here (loading it names
/// the problem).
pub fn saved_normalization(path: &Path) -> Result<Option<([f32; 3], [f32; 3])>, CheckpointError> {
    let file = match path.is_dir() {
        true => path.join(MODEL_FILE),
        false => path.to_path_buf(),
    };
    let Ok(meta) = read_metadata(&file) else {
        return Ok(None);
    };
    normalization_in(&meta).map_err(|detail| CheckpointError::Mismatch { path: file, detail })
}

/// A safetensors file's metadata, without reading its tensors.
pub fn read_metadata(path: &Path) -> Result<HashMap<String, String>, CheckpointError> {
    use std::io::Read;
    let format = |detail: String| CheckpointError::Format {
        path: path.to_path_buf(),
        detail,
    };
    let mut file = std::fs::File::open(path).map_err(io(path))?;
    let mut len = [0u8; 8];
    file.read_exact(&mut len).map_err(io(path))?;
    let len = u64::from_le_bytes(len);
    if len > 100 << 20 {
        return Err(format(format!("header of {len} bytes")));
    }
    let mut header = vec![0u8; len as usize];
    file.read_exact(&mut header).map_err(io(path))?;
    let header: serde_json::Value =
        serde_json::from_slice(&header).map_err(|e| format(e.to_string()))?;
    Ok(header
        .get("__metadata__")
        .and_then(|m| serde_json::from_value(m.clone()).ok())
        .unwrap_or_default())
}

/// Copies the GPU state into a state dict in torchvision order (blocks until
/// the GPU is idle).
#[cfg(not(target_arch = "wasm32"))]
pub fn read_model(trainer: &Trainer) -> Result<Vec<(String, Vec<usize>, Values)>, CheckpointError> {
    trainer.wait_for_gpu()?;
    let plan = trainer.plan();
    let mut out = vec![];
    for e in plan.state_entries() {
        let values = match e.role {
            TensorRole::BatchesTracked => Values::I64(vec![trainer.batches_tracked() as i64]),
            _ => Values::F32(gpu_tensor(plan, &e.name)?.read_f32(trainer.ctx())?),
        };
        out.push((e.name, e.shape, values));
    }
    Ok(out)
}

/// The GPU tensor of a state entry other than `num_batches_tracked`.
pub(crate) fn gpu_tensor<'p>(
    plan: &'p Plan,
    name: &str,
) -> Result<&'p crate::gpu::Tensor, CheckpointError> {
    plan.state_tensor(name)
        .ok_or_else(|| crate::gpu::GpuError::shape(name, "the plan has no tensor for it").into())
}

/// The first tensor holding NaN or infinity, as an error.
pub fn check_finite<'a>(
    tensors: impl Iterator<Item = &'a (String, Vec<usize>, Values)>,
    step: u64,
) -> Result<(), CheckpointError> {
    for (name, _, values) in tensors {
        if let Values::F32(v) = values
            && !v.iter().all(|x| x.is_finite())
        {
            return Err(CheckpointError::NonFinite {
                step,
                tensor: name.clone(),
            });
        }
    }
    Ok(())
}

/// trainer.safetensors' tensors and metadata: the SGD momenta, and the run's
/// position (with the training metrics' sums) and config.
#[cfg(not(target_arch = "wasm32"))]
pub fn trainer_state(
    trainer: &Trainer,
) -> Result<(Vec<(String, Vec<usize>, Values)>, HashMap<String, String>), CheckpointError> {
    let mut momenta = vec![];
    for (pname, value, _, momentum) in trainer.plan().params() {
        momenta.push((
            format!("{pname}.momentum_buffer"),
            value.shape().to_vec(),
            Values::F32(momentum.read_f32(trainer.ctx())?),
        ));
    }
    let mut progress = trainer.progress();
    progress.train_metrics = read_train_metrics(trainer)?;
    let meta = HashMap::from([
        (
            META_PROGRESS.into(),
            serde_json::to_string(&progress).expect("serializable"),
        ),
        (
            META_CONFIG.into(),
            serde_json::to_string(&trainer.config).expect("serializable"),
        ),
    ]);
    Ok((momenta, meta))
}

#[cfg(not(target_arch = "wasm32"))]
fn read_train_metrics(trainer: &Trainer) -> Result<[f32; METRICS_LEN], CheckpointError> {
    let plan = trainer.plan();
    let v = plan.tensor(plan.train_metrics).read_f32(trainer.ctx())?;
    let mut out = [0.0; METRICS_LEN];
    out.copy_from_slice(&v[..METRICS_LEN]);
    Ok(out)
}

/// Run config and position saved with a checkpoint.
pub fn read_trainer_state(
    dir: &Path,
) -> Result<(TrainConfig, Progress, StateDict), CheckpointError> {
    let path = dir.join(TRAINER_FILE);
    let dict = StateDict::read(&path)?;
    let bad = |detail: String| CheckpointError::Mismatch {
        path: path.clone(),
        detail,
    };
    let field = |key: &str| {
        dict.metadata
            .get(key)
            .cloned()
            .ok_or_else(|| bad(format!("metadata lacks '{key}'")))
    };
    let config =
        serde_json::from_str(&field(META_CONFIG)?).map_err(|e| bad(format!("config: {e}")))?;
    let progress =
        serde_json::from_str(&field(META_PROGRESS)?).map_err(|e| bad(format!("progress: {e}")))?;
    Ok((config, progress, dict))
}
