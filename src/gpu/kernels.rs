use std::collections::HashMap;
use std::sync::Mutex;

use super::GpuContext;
use super::error::GpuError;
use super::tensor::Precision;

/// A shader module: one WGSL file from shaders/, or a prelude and an op file
/// joined, embedded in the binary.
pub struct Shader {
    pub name: &'static str,
    /// The shaders/ files it is made of, in order.
    pub files: &'static [&'static str],
    pub source: &'static str,
}

impl Shader {
    /// Modules built with a subgroup prelude need the SUBGROUP feature (the
    /// cooperative-matrix kernels read subgroup builtins).
    pub fn needs_subgroups(&self) -> bool {
        self.files.contains(&"reduce_subgroup") || self.needs_cooperative_matrices()
    }

    /// Modules of cooperative-matrix kernels need the experimental feature
    /// and a matrix size (`source_with`).
    pub fn needs_cooperative_matrices(&self) -> bool {
        self.files.contains(&"conv_coop")
    }

    /// The module's WGSL at `precision`: the header that defines the
    /// activation storage type `act`, then the files. A cooperative-matrix
    /// module is written for 8x8 matrices here (what naga checks without a
    /// device); `source_with` gives it the device's size.
    pub fn source_at(&self, precision: Precision) -> String {
        self.source_with(precision, 8)
    }

    /// The module's WGSL at `precision`, with `coop_size` x `coop_size`
    /// cooperative matrices where the module uses them (the tiles are f16
    /// at either storage precision).
    pub fn source_with(&self, precision: Precision, coop_size: u32) -> String {
        let mut header = precision.wgsl_header().to_string();
        if self.needs_cooperative_matrices() {
            // Directives before any declaration (WGSL's rule).
            let n = coop_size;
            header = format!(
                "enable f16;\nenable wgpu_cooperative_matrix;\n{}const CM: u32 = {n}u;\n\
                 alias coop_a = coop_mat{n}x{n}<f16, A>;\n\
                 alias coop_b = coop_mat{n}x{n}<f16, B>;\n\
                 alias coop_c = coop_mat{n}x{n}<f32, C>;\n",
                header.replace("enable f16;\n", "")
            );
        }
        format!("{header}{}", self.source)
    }
}

macro_rules! shader {
    ($name:literal) => {
        shader!($name: $name)
    };
    ($name:literal: $($file:literal),+) => {
        Shader {
            name: $name,
            files: &[$($file),+],
            source: concat!($(include_str!(concat!("../../shaders/", $file, ".wgsl"))),+),
        }
    };
}

/// Every module the crate runs; tests check these cover shaders/ exactly. The
/// channel reductions of batch norm and the loss come with the portable
/// workgroup-memory tree (reduce) or, as candidates for adapters with
/// subgroups, with subgroup operations (reduce_subgroup): one module each, since
/// a module that uses subgroup operations only compiles on devices with them.
pub const SHADERS: &[Shader] = &[
    shader!("augment": "prelude", "augment"),
    shader!("bias": "prelude", "reduce", "bias"),
    shader!("batchnorm": "prelude", "reduce", "norm_reduce", "batchnorm"),
    shader!("batchnorm_subgroup": "prelude", "reduce_subgroup", "norm_reduce", "batchnorm"),
    shader!("conv": "conv_params", "conv"),
    shader!("conv_tiled": "conv_params", "conv_tiled"),
    shader!("conv_coop": "conv_params", "conv_coop"),
    shader!("conv_wide": "conv_params", "conv_wide"),
    shader!("elementwise": "prelude", "elementwise"),
    shader!("gemm"),
    shader!("groupnorm": "prelude", "reduce", "norm_reduce", "groupnorm"),
    shader!("linear"),
    shader!("loss": "reduce", "loss"),
    shader!("loss_subgroup": "reduce_subgroup", "loss"),
    shader!("optim": "prelude", "optim"),
    shader!("pool": "prelude", "pool"),
    shader!("scaler": "prelude", "scaler"),
    shader!("shortcut": "prelude", "shortcut"),
];

/// A short hash of every module's WGSL (FNV-1a, in hex): kernel choices
/// measured on other shader code are not reused after a code change.
/// Computed once: every conv pass's cache key carries it.
pub fn sources_hash() -> &'static str {
    static HASH: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    HASH.get_or_init(|| {
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        for byte in SHADERS.iter().flat_map(|s| s.source.bytes()) {
            hash = (hash ^ u64::from(byte)).wrapping_mul(0x100_0000_01b3);
        }
        format!("{:08x}", hash >> 32)
    })
}

/// (shader, precision, entry point, override constants): what makes a
/// pipeline distinct.
#[derive(Clone, PartialEq, Eq, Hash)]
struct KernelKey {
    shader: &'static str,
    precision: Precision,
    entry: &'static str,
    constants: Vec<(&'static str, u32)>,
}

/// Compiles each shader module and each pipeline once per device. Pipelines use
/// the layout wgpu derives from the entry point, so a binding an entry point does
/// not touch is not part of its bind group.
#[derive(Default)]
pub(crate) struct KernelCache {
    modules: Mutex<HashMap<(&'static str, Precision), wgpu::ShaderModule>>,
    pipelines: Mutex<HashMap<KernelKey, wgpu::ComputePipeline>>,
}

impl GpuContext {
    /// The compute pipeline for `entry` of shaders/`shader`.wgsl at
    /// `precision` with the given override constants, compiled on first use.
    pub fn pipeline(
        &self,
        shader: &'static str,
        precision: Precision,
        entry: &'static str,
        constants: &[(&'static str, u32)],
    ) -> Result<wgpu::ComputePipeline, GpuError> {
        let key = KernelKey {
            shader,
            precision,
            entry,
            constants: constants.to_vec(),
        };
        if let Some(p) = self.kernels.pipelines.lock().unwrap().get(&key) {
            return Ok(p.clone());
        }
        let module = self.shader_module(shader, precision)?;
        let label = format!("{shader}::{entry}");
        let constants: Vec<(&str, f64)> =
            constants.iter().map(|&(n, v)| (n, f64::from(v))).collect();
        let pipeline = self.checked(&label, || {
            self.device
                .create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                    label: Some(&label),
                    layout: None,
                    module: &module,
                    entry_point: Some(entry),
                    compilation_options: wgpu::PipelineCompilationOptions {
                        constants: &constants,
                        zero_initialize_workgroup_memory: false,
                    },
                    cache: None,
                })
        })?;
        self.kernels
            .pipelines
            .lock()
            .unwrap()
            .insert(key, pipeline.clone());
        Ok(pipeline)
    }

    fn shader_module(
        &self,
        name: &'static str,
        precision: Precision,
    ) -> Result<wgpu::ShaderModule, GpuError> {
        let key = (name, precision);
        if let Some(m) = self.kernels.modules.lock().unwrap().get(&key) {
            return Ok(m.clone());
        }
        if precision == Precision::F16 && !self.supports_f16() {
            return Err(GpuError::Contract {
                kernel: name.into(),
                message: format!(
                    "f16 kernels need the SHADER_F16 feature, which {} does not have",
                    self.adapter_info.name
                ),
            });
        }
        let shader = super::contract::shader(name)?;
        let coop_size = match self.coop {
            Some(coop) => coop.size,
            None if shader.needs_cooperative_matrices() => {
                return Err(GpuError::Contract {
                    kernel: name.into(),
                    message: format!(
                        "cooperative-matrix kernels need a device opened with them, \
                         and {} lists no f16 configuration wgpu can use",
                        self.adapter_info.name
                    ),
                });
            }
            None => 8,
        };
        let module = self.checked(
            &format!("shaders/{name}.wgsl ({})", precision.name()),
            || {
                self.device
                    .create_shader_module(wgpu::ShaderModuleDescriptor {
                        label: Some(name),
                        source: wgpu::ShaderSource::Wgsl(
                            shader.source_with(precision, coop_size).into(),
                        ),
                    })
            },
        )?;
        self.kernels
            .modules
            .lock()
            .unwrap()
            .insert(key, module.clone());
        Ok(module)
    }

    /// Runs `create` inside a validation error scope and turns a wgpu error into
    /// a GpuError naming `what` (instead of wgpu's default panic).
    pub(crate) fn checked<T>(&self, what: &str, create: impl FnOnce() -> T) -> Result<T, GpuError> {
        let scope = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let value = create();
        #[cfg(not(target_arch = "wasm32"))]
        if let Some(error) = pollster::block_on(scope.pop()) {
            return Err(GpuError::Validation {
                what: what.to_string(),
                message: error.to_string(),
            });
        }
        // In a browser the scope cannot be awaited here: its error is
        // reported to the console when it arrives.
        #[cfg(target_arch = "wasm32")]
        {
            let what = what.to_string();
            let pop = scope.pop();
            wasm_bindgen_futures::spawn_local(async move {
                if let Some(error) = pop.await {
                    web_sys::console::error_1(&format!("WebGPU error in {what}: {error}").into());
                }
            });
        }
        Ok(value)
    }
}
