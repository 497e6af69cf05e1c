//! Loading a state dict into a trainer: the model's values (strictly, or for
//! initial weights with a classifier for another class count left fresh) and
//! the SGD momenta, with every name, shape and value checked.

use std::path::Path;

use super::{CheckpointError, StateDict, gpu_tensor};
use crate::model::{Network, TensorRole};
use crate::train::Trainer;

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
/// Refuses NaN or infinite values, and any shape it does not expect.
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
    let skipped = if mode == LoadMode::Init {
        other_classifier(&trainer.plan().network, dict).map_err(bad)?
    } else {
        vec![]
    };
    let mut tracked = None;
    for e in entries.iter().filter(|e| !skipped.contains(&e.name)) {
        let (shape, values) = &dict.tensors[&e.name];
        if *shape != e.shape {
            return Err(bad(format!(
                "'{}' has shape {shape:?}, the model expects {:?}",
                e.name, e.shape
            )));
        }
        if !values.iter().all(|v| v.is_finite()) {
            return Err(bad(format!("'{}' holds NaN or infinite values", e.name)));
        }
        if e.role == TensorRole::RunningVar && values.iter().any(|&v| v < 0.0) {
            return Err(bad(format!("'{}' holds a negative variance", e.name)));
        }
        match e.role {
            TensorRole::BatchesTracked => tracked = tracked.max(values.first().map(|&v| v as u64)),
            _ => gpu_tensor(trainer.plan(), &e.name)?.write_f32(trainer.ctx(), values)?,
        }
    }
    trainer.set_batches_tracked_base(tracked.unwrap_or(0));
    Ok(skipped)
}

/// For `--init`: the classifier entries to keep fresh because the file's
/// classifier is for another class count (`fc.weight` [classes', features],
/// `fc.bias` [classes']): both or neither. Any other shape is an error.
fn other_classifier(network: &Network, dict: &StateDict) -> Result<Vec<String>, String> {
    let (weight, bias) = ("fc.weight", "fc.bias");
    let (Some((ws, _)), Some((bs, _))) = (dict.tensors.get(weight), dict.tensors.get(bias)) else {
        return Ok(vec![]);
    };
    let (classes, features) = (network.num_classes, network.features);
    if ws.as_slice() == [classes, features] && bs.as_slice() == [classes] {
        return Ok(vec![]);
    }
    match (ws.as_slice(), bs.as_slice()) {
        ([c, f], [cb]) if *f == features && c == cb => Ok(vec![weight.into(), bias.into()]),
        _ => Err(format!(
            "the classifier has fc.weight {ws:?} and fc.bias {bs:?}; the model expects \
             [classes, {features}] and [classes] ({classes} classes here; another class count \
             is replaced by a fresh classifier)"
        )),
    }
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
        "does not match the model: {} missing ({}), {} unexpected ({}){}",
        missing.len(),
        head(&missing),
        unexpected.len(),
        head(&unexpected),
        layer_hint(network, &missing, &unexpected)
    ))
}

/// Which model setting would make a file whose names differ in a layer kind
/// fit: conv biases, or batch vs group norm.
fn layer_hint(network: &Network, missing: &[&String], unexpected: &[&String]) -> String {
    use crate::setting::Setting::{ConvBias, Norm};
    let conv_bias = |name: &&String| {
        network
            .units()
            .any(|u| **name == format!("{}.bias", u.conv))
    };
    let running = |name: &&String| name.ends_with(".running_mean");
    if unexpected.iter().any(conv_bias) {
        format!("; the file's convs have biases: add {ConvBias}")
    } else if missing.iter().any(conv_bias) {
        format!("; the file's convs have no biases: drop {ConvBias}")
    } else if missing.iter().any(running) {
        format!("; the file has no batch-norm statistics (a group-norm model?): add {Norm} group")
    } else if unexpected.iter().any(running) {
        format!("; the file has batch-norm statistics: use {Norm} batch")
    } else {
        String::new()
    }
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
        // Checked like the weights: a NaN momentum made the next step
        // diverge and blame --lr.
        if !values.iter().all(|v| v.is_finite()) {
            return Err(CheckpointError::Mismatch {
                path: path.to_path_buf(),
                detail: format!("'{key}' holds NaN or infinite values"),
            });
        }
        momentum.write_f32(trainer.ctx(), values)?;
    }
    Ok(())
}
