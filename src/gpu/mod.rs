//! The GPU substrate: one context (adapter, device, queue, kernel cache), tensors
//! that know their shape, and prepared dispatches that record into a compute pass.

mod choices;
mod context;
mod contract;
mod dispatch;
mod error;
mod kernels;
mod profiler;
mod readback;
mod tensor;

pub use choices::{Choice, ChoiceSource, KernelChoices, RunKernels, TunePolicy};
pub use context::{BackendChoice, CoopConfig, GpuContext, ModeledGpu, cooperative_config};
pub use contract::{Kernel, PARAMS_ROLE, ShaderConstant, StructLayout, WgslStruct, Workgroup};
pub use dispatch::{
    Binding, Dispatch, DispatchSpec, Work, elementwise_grid, encoder, record_pass, submit,
};
pub use error::GpuError;
pub use kernels::{SHADERS, Shader, sources_hash};
pub use profiler::OpTiming;
#[cfg(not(target_arch = "wasm32"))]
pub use profiler::time_dispatches;
pub use readback::{MapState, Mapping};
pub use tensor::{DType, Precision, Tensor, f32_values};
