use thiserror::Error;

/// Everything the GPU layer can report; each message names the op, tensor or
/// adapter involved so a failure deep in a step is traceable.
#[derive(Debug, Error)]
pub enum GpuError {
    #[error("no GPU adapter found for backend '{backend}'. {hint}")]
    NoAdapter { backend: String, hint: String },
    #[error("could not open a device on adapter '{adapter}': {message}")]
    RequestDevice { adapter: String, message: String },
    #[error(
        "{what} needs {needed} bytes in one storage binding, but adapter '{adapter}' allows \
         {limit} (max_storage_buffer_binding_size); use a smaller batch or model"
    )]
    BindingTooLarge {
        what: String,
        needed: u64,
        limit: u64,
        adapter: String,
    },
    #[error(
        "batch {batch} does not fit: tensor '{tensor}' would need {needed} bytes in one storage \
         binding and adapter '{adapter}' allows {limit}; the largest batch that fits is {max_batch}"
    )]
    BatchTooLarge {
        batch: usize,
        max_batch: usize,
        tensor: String,
        needed: u64,
        limit: u64,
        adapter: String,
    },
    #[error("{what} does not fit in the adapter's memory ({})", match max_batch {
        Some(b) => format!("the largest batch that fits is {b}"),
        None => "not even batch 1 fits".to_string(),
    })]
    OutOfMemory {
        what: String,
        max_batch: Option<usize>,
    },
    #[error("{op}: {detail}")]
    Shape { op: String, detail: String },
    #[error("the GPU reported an error and training cannot go on: {message}")]
    Device { message: String },
    #[error("waiting for the GPU failed ({what}): {message}")]
    Poll { what: String, message: String },
    #[error("{0}")]
    Setup(String),
    #[error("kernel {kernel} and its host code disagree: {message}")]
    Contract { kernel: String, message: String },
    #[error("wgpu rejected {what}: {message}")]
    Validation { what: String, message: String },
    #[error("reading back '{what}' failed: {message}")]
    Readback { what: String, message: String },
}

impl GpuError {
    pub fn shape(op: &str, detail: impl Into<String>) -> Self {
        GpuError::Shape {
            op: op.to_string(),
            detail: detail.into(),
        }
    }
}
