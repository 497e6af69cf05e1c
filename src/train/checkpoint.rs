//! Checkpoints. `model.safetensors` holds the state dict under torchvision's
//! names (PyTorch loads it with `load_state_dict(strict=True)` into the same
//! architecture); `trainer.safetensors` beside it holds the SGD momenta and, in
//! its metadata, the run's position and config. Each checkpoint is written to a
//! temporary folder and renamed into place, then `last` (itself replaced by
//! rename) points at it: a kill at any moment leaves the previous one intact.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use safetensors::tensor::{Dtype, TensorView};

use super::trainer::{Progress, TrainConfig, Trainer};
use crate::model::{Network, TensorRole};

pub const MODEL_FILE: &str = "model.safetensors";
pub const TRAINER_FILE: &str = "trainer.safetensors";
const LAST_FILE: &str = "last";
#[cfg(not(target_arch = "wasm32"))]
const KEEP: usize = 2;

#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: not a readable safetensors file: {detail}")]
    Format { path: PathBuf, detail: String },
    #[error("{path}: {detail}")]
    Mismatch { path: PathBuf, detail: String },
    #[error(transparent)]
    Gpu(#[from] crate::gpu::GpuError),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> CheckpointError + '_ {
    move |source| CheckpointError::Io {
        path: path.to_path_buf(),
        source,
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
        let format = |detail: String| CheckpointError::Format {
            path: path.to_path_buf(),
            detail,
        };
        let (_, header) =
            safetensors::SafeTensors::read_metadata(&bytes).map_err(|e| format(e.to_string()))?;
        let file =
            safetensors::SafeTensors::deserialize(&bytes).map_err(|e| format(e.to_string()))?;
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
        Dtype::U8 => b.iter().map(|&v| f32::from(v)).collect(),
        Dtype::I64 => b
            .chunks_exact(8)
            .map(|c| i64::from_le_bytes(c.try_into().unwrap()) as f32)
            .collect(),
        _ => return None,
    })
}

/// One tensor to write.
pub enum Values {
    F32(Vec<f32>),
    I64(Vec<i64>),
}

impl Values {
    fn bytes(&self) -> (Dtype, Vec<u8>) {
        match self {
            Values::F32(v) => (Dtype::F32, bytemuck::cast_slice(v).to_vec()),
            Values::I64(v) => (Dtype::I64, v.iter().flat_map(|x| x.to_le_bytes()).collect()),
        }
    }
}

/// Writes a safetensors file (temp file + rename, fsynced).
pub fn write_safetensors(
    path: &Path,
    tensors: &[(String, Vec<usize>, Values)],
    metadata: HashMap<String, String>,
) -> Result<(), CheckpointError> {
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
    let bytes =
        safetensors::serialize(views, Some(metadata)).map_err(|e| CheckpointError::Format {
            path: path.to_path_buf(),
            detail: e.to_string(),
        })?;
    write_atomically(path, &bytes)
}

/// Writes `bytes` to `path` so a reader sees either the old or the new file.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), CheckpointError> {
    let tmp = path.with_extension("tmp");
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&tmp).map_err(io(&tmp))?;
        f.write_all(bytes).map_err(io(&tmp))?;
        f.sync_all().map_err(io(&tmp))?;
    }
    std::fs::rename(&tmp, path).map_err(io(path))
}

/// The model's metadata: enough for `eval` to rebuild the architecture.
pub fn model_metadata(trainer: &Trainer) -> HashMap<String, String> {
    let m = &trainer.config.model;
    HashMap::from([
        ("format".into(), "resnet-wgpu".into()),
        (
            "model".into(),
            serde_json::to_string(m).expect("serializable"),
        ),
        ("step".into(), trainer.progress().global_step.to_string()),
    ])
}

/// Copies the GPU state into a state dict in torchvision order (blocks until
/// the GPU is idle).
#[cfg(not(target_arch = "wasm32"))]
pub fn read_model(trainer: &Trainer) -> Result<Vec<(String, Vec<usize>, Values)>, CheckpointError> {
    trainer.wait_for_gpu()?;
    let plan = trainer.plan();
    let mut out = vec![];
    for e in plan.state_entries() {
        let values = match plan.state_tensor(&e.name) {
            Some(t) => Values::F32(t.read_f32(trainer.ctx())?),
            None => Values::I64(vec![trainer.batches_tracked() as i64]),
        };
        out.push((e.name, e.shape, values));
    }
    Ok(out)
}

/// Saves model and trainer state under `run_dir/checkpoints/step-N/` and points
/// `last` at it; keeps the newest two. Returns the checkpoint folder.
#[cfg(not(target_arch = "wasm32"))]
pub fn save(trainer: &Trainer, run_dir: &Path) -> Result<PathBuf, CheckpointError> {
    let root = run_dir.join("checkpoints");
    std::fs::create_dir_all(&root).map_err(io(&root))?;
    let progress = trainer.progress();
    let name = format!("step-{:08}", progress.global_step);
    let tmp = root.join(format!(".{name}.tmp"));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).map_err(io(&tmp))?;

    let model = read_model(trainer)?;
    write_safetensors(&tmp.join(MODEL_FILE), &model, model_metadata(trainer))?;
    let mut momenta = vec![];
    for (pname, value, _, momentum) in trainer.plan().params() {
        momenta.push((
            format!("{pname}.momentum_buffer"),
            value.shape().to_vec(),
            Values::F32(momentum.read_f32(trainer.ctx())?),
        ));
    }
    let mut progress = progress;
    progress.train_metrics = read_train_metrics(trainer)?;
    let meta = HashMap::from([
        (
            "progress".into(),
            serde_json::to_string(&progress).expect("serializable"),
        ),
        (
            "config".into(),
            serde_json::to_string(&trainer.config).expect("serializable"),
        ),
    ]);
    write_safetensors(&tmp.join(TRAINER_FILE), &momenta, meta)?;

    let dir = root.join(&name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::rename(&tmp, &dir).map_err(io(&dir))?;
    write_atomically(&root.join(LAST_FILE), name.as_bytes())?;
    prune(&root, &name);
    Ok(dir)
}

#[cfg(not(target_arch = "wasm32"))]
fn read_train_metrics(trainer: &Trainer) -> Result<[f32; 4], CheckpointError> {
    let plan = trainer.plan();
    let v = plan.tensor(plan.train_metrics).read_f32(trainer.ctx())?;
    Ok([v[0], v[1], v[2], v[3]])
}

/// Removes all but the newest `KEEP` checkpoints (never `keep`).
#[cfg(not(target_arch = "wasm32"))]
fn prune(root: &Path, keep: &str) {
    let Ok(entries) = std::fs::read_dir(root) else {
        return;
    };
    let mut names: Vec<String> = entries
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("step-"))
        .collect();
    names.sort();
    let excess = names.len().saturating_sub(KEEP);
    for old in names.into_iter().take(excess).filter(|n| n != keep) {
        let _ = std::fs::remove_dir_all(root.join(old));
    }
}

/// The checkpoint folder a path names: a run folder (its `last`), a checkpoint
/// folder, or the folder of a model.safetensors file.
pub fn resolve(path: &Path) -> Result<PathBuf, CheckpointError> {
    let missing = |detail: &str| CheckpointError::Mismatch {
        path: path.to_path_buf(),
        detail: detail.to_string(),
    };
    if path.is_file() {
        return path
            .parent()
            .map(Path::to_path_buf)
            .ok_or_else(|| missing("has no folder"));
    }
    if path.join(MODEL_FILE).is_file() {
        return Ok(path.to_path_buf());
    }
    let last = path.join("checkpoints").join(LAST_FILE);
    if last.is_file() {
        let name = std::fs::read_to_string(&last).map_err(io(&last))?;
        return Ok(path.join("checkpoints").join(name.trim()));
    }
    if !path.exists() {
        return Err(CheckpointError::Io {
            path: path.to_path_buf(),
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "no such file or folder"),
        });
    }
    Err(missing(
        "is neither a run folder (with checkpoints/last) nor a checkpoint folder (with model.safetensors)",
    ))
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
        serde_json::from_str(&field("config")?).map_err(|e| bad(format!("config: {e}")))?;
    let progress =
        serde_json::from_str(&field("progress")?).map_err(|e| bad(format!("progress: {e}")))?;
    Ok((config, progress, dict))
}

/// How strictly a state dict must match the model.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LoadMode {
    /// Every entry present with the right shape (resume, eval).
    Strict,
    /// Pretrained init: the classifier is skipped when its class count differs.
    Init,
}

/// Writes a state dict's values into the trainer's model; returns the names
/// it skipped. `num_batches_tracked` becomes the run's starting count.
pub fn load_model(
    trainer: &mut Trainer,
    dict: &StateDict,
    path: &Path,
    mode: LoadMode,
) -> Result<Vec<String>, CheckpointError> {
    let bad = |detail: String| CheckpointError::Mismatch {
        path: path.to_path_buf(),
        detail,
    };
    let entries = trainer.plan().state_entries();
    check_names(&trainer.plan().network, dict).map_err(bad)?;
    let mut skipped = vec![];
    let mut tracked = None;
    for e in &entries {
        let (shape, values) = &dict.tensors[&e.name];
        if *shape != e.shape {
            let classifier = matches!(e.role, TensorRole::FcWeight | TensorRole::FcBias);
            if mode == LoadMode::Init && classifier {
                skipped.push(e.name.clone());
                continue;
            }
            return Err(bad(format!(
                "'{}' has shape {shape:?}, the model expects {:?}",
                e.name, e.shape
            )));
        }
        match trainer.plan().state_tensor(&e.name) {
            Some(t) => t.write_f32(trainer.ctx(), values)?,
            None => tracked = tracked.max(values.first().map(|&v| v as u64)),
        }
    }
    trainer.set_batches_tracked_base(tracked.unwrap_or(0));
    Ok(skipped)
}

/// Every entry the model needs is in the dict, and nothing else is.
fn check_names(network: &Network, dict: &StateDict) -> Result<(), String> {
    let wanted: Vec<String> = network
        .state_entries()
        .into_iter()
        .map(|e| e.name)
        .collect();
    let missing: Vec<&String> = wanted
        .iter()
        .filter(|n| !dict.tensors.contains_key(*n))
        .collect();
    let mut unexpected: Vec<&String> = dict
        .tensors
        .keys()
        .filter(|k| !wanted.contains(k))
        .collect();
    unexpected.sort();
    if missing.is_empty() && unexpected.is_empty() {
        return Ok(());
    }
    let head = |v: &[&String]| {
        v.iter()
            .take(5)
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    Err(format!(
        "does not match the model: {} missing ({}), {} unexpected ({})",
        missing.len(),
        head(&missing),
        unexpected.len(),
        head(&unexpected)
    ))
}

/// Restores the momenta saved by `save`.
pub fn load_momenta(
    trainer: &Trainer,
    dict: &StateDict,
    path: &Path,
) -> Result<(), CheckpointError> {
    for (name, value, _, momentum) in trainer.plan().params() {
        let key = format!("{name}.momentum_buffer");
        let (shape, values) = dict
            .tensors
            .get(&key)
            .ok_or_else(|| CheckpointError::Mismatch {
                path: path.to_path_buf(),
                detail: format!("lacks '{key}'"),
            })?;
        if shape.as_slice() != value.shape() {
            return Err(CheckpointError::Mismatch {
                path: path.to_path_buf(),
                detail: format!("'{key}' has shape {shape:?}, expected {:?}", value.shape()),
            });
        }
        momentum.write_f32(trainer.ctx(), values)?;
    }
    Ok(())
}
