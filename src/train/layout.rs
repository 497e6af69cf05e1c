//! The run folder's names, in one place: `runs.rs` (the folder a native front
//! end writes) and `checkpoint.rs` (the checkpoints inside it) both use them.
//!
//! ```text
//! runs/<name>/config.json             the run's config (and data identity)
//!            /metrics.jsonl           one record per evaluation
//!            /kernel-choices.json     the kernels the run ran, by cache key
//!            /lock                    held by the one trainer writing here
//!            /checkpoints/step-N/     model.safetensors + trainer.safetensors
//!            /checkpoints/last, best  the newest and the best step's name
//! ```

pub const CONFIG_FILE: &str = "config.json";
pub const METRICS_FILE: &str = "metrics.jsonl";
pub const KERNELS_FILE: &str = "kernel-choices.json";
pub const LOCK_FILE: &str = "lock";
pub const CHECKPOINTS_DIR: &str = "checkpoints";
/// Names the newest complete checkpoint.
pub const LAST_FILE: &str = "last";
/// Names the checkpoint with the best evaluation accuracy (kept by `prune`).
pub const BEST_FILE: &str = "best";
