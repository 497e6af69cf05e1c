use super::choices::{KernelChoices, TunePolicy};
use super::error::GpuError;
use super::kernels::KernelCache;

/// Which graphics API to run on. `Auto` honours the WGPU_BACKEND variable and
/// otherwise lets wgpu pick the best adapter of any API.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum BackendChoice {
    #[default]
    Auto,
    Vulkan,
    Metal,
    Dx12,
    Gl,
}

impl BackendChoice {
    pub fn backends(self) -> wgpu::Backends {
        match self {
            BackendChoice::Auto => wgpu::Backends::from_env().unwrap_or(wgpu::Backends::all()),
            BackendChoice::Vulkan => wgpu::Backends::VULKAN,
            BackendChoice::Metal => wgpu::Backends::METAL,
            BackendChoice::Dx12 => wgpu::Backends::DX12,
            BackendChoice::Gl => wgpu::Backends::GL,
        }
    }

    fn describe(self) -> String {
        match self {
            BackendChoice::Auto => match std::env::var("WGPU_BACKEND") {
                Ok(v) => format!("auto (WGPU_BACKEND={v})"),
                Err(_) => "auto".to_string(),
            },
            other => format!("{other:?}").to_lowercase(),
        }
    }
}

/// What to do when no adapter is found, naming the setting that picks the API.
fn no_adapter_hint() -> String {
    let api = crate::setting::Setting::Backend;
    if cfg!(target_os = "linux") {
        format!(
            "Install a GPU driver, or Mesa's CPU Vulkan device (Debian/Ubuntu: \
             `apt-get install mesa-vulkan-drivers`), or pick another {api}."
        )
    } else if cfg!(target_arch = "wasm32") {
        "This browser exposes no WebGPU adapter: use a recent Chrome, Edge or Safari, \
         or Firefox with WebGPU enabled."
            .into()
    } else {
        format!("Update the GPU driver, or pick another {api}.")
    }
}

/// The one device everything runs on, with the adapter's real limits and a cache
/// that compiles each (shader, entry point, constants) once.
pub struct GpuContext {
    pub device: wgpu::Device,
    pub queue: wgpu::Queue,
    pub adapter_info: wgpu::AdapterInfo,
    pub limits: wgpu::Limits,
    pub features: wgpu::Features,
    /// What the adapter offers (the device has only what was requested).
    pub adapter_features: wgpu::Features,
    pub(crate) kernels: KernelCache,
    /// Which kernel candidate each (pass, shape) runs on this adapter.
    pub choices: std::sync::Mutex<KernelChoices>,
    /// The cooperative-matrix configuration the conv candidates use, where
    /// the device was opened with one (see `cooperative_config`).
    pub coop: Option<CoopConfig>,
    /// Every configuration the adapter lists (for `info`).
    pub coop_listed: Vec<wgpu::CooperativeMatrixProperties>,
    /// The first wgpu error that no error scope caught.
    uncaptured: std::sync::Arc<std::sync::Mutex<Option<String>>>,
    /// Why the device was lost (a driver reset, an unplugged GPU, the
    /// browser's GPU process restarting, `Device::destroy`), once it is.
    lost: std::sync::Arc<std::sync::Mutex<Option<String>>>,
    /// On a modeled device, the one small buffer every tensor stands on.
    stand_in: Option<wgpu::Buffer>,
}

/// A GPU the dispatch report models (`GpuContext::modeled`): the limits and
/// subgroup and cooperative-matrix sizes its Vulkan driver reports, as
/// published for it (not read from a device here).
#[derive(Clone, Debug)]
pub struct ModeledGpu {
    pub name: &'static str,
    pub limits: wgpu::Limits,
    pub subgroup_size: u32,
    /// Square f16 x f16 -> f32 cooperative matrices, if it has them.
    pub coop_size: Option<u32>,
}

impl ModeledGpu {
    /// An NVIDIA H100 under Vulkan: 4 GiB storage bindings (maxStorageBufferRange
    /// 2^32 - 1, rounded down to words), 48 KiB of workgroup memory, 1024
    /// invocations, 65535 workgroups per dimension (wgpu's one limit for all
    /// three), subgroups of 32 and 16x16x16 f16 -> f32 cooperative matrices.
    pub fn h100() -> Self {
        let limits = wgpu::Limits {
            max_storage_buffer_binding_size: (1 << 32) - 4,
            max_buffer_size: u32::MAX as u64,
            max_storage_buffers_per_shader_stage: 1 << 20,
            max_compute_workgroup_storage_size: 48 << 10,
            max_compute_invocations_per_workgroup: 1024,
            max_compute_workgroup_size_x: 1024,
            max_compute_workgroup_size_y: 1024,
            max_compute_workgroup_size_z: 64,
            max_compute_workgroups_per_dimension: 65535,
            ..wgpu::Limits::default()
        };
        ModeledGpu {
            name: "NVIDIA H100 (modeled: no device)",
            limits,
            subgroup_size: 32,
            coop_size: Some(16),
        }
    }
}

/// A cooperative-matrix shape the conv kernels run on: square `size` (8 or
/// 16) f16 x f16 -> f32 at subgroup scope, and the adapter's largest
/// subgroup (the kernels' workgroups are 4 of them).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CoopConfig {
    pub size: u32,
    pub subgroup_max: u32,
}

impl CoopConfig {
    /// What `info` prints of a listed configuration.
    pub fn describe(p: &wgpu::CooperativeMatrixProperties) -> String {
        format!(
            "{}x{}x{} {:?} x {:?} -> {:?}",
            p.m_size, p.n_size, p.k_size, p.ab_type, p.ab_type, p.cr_type
        )
        .to_lowercase()
    }
}

/// `RESNET_WGPU_COOPERATIVE=off`: no cooperative matrices on any device.
fn cooperative_turned_off() -> bool {
    std::env::var("RESNET_WGPU_COOPERATIVE").is_ok_and(|v| v == "off")
}

/// The configuration the conv kernels would use on `adapter`: the largest
/// square f16 x f16 -> f32 one it lists, where the adapter also offers
/// wgpu's experimental feature and subgroups. `RESNET_WGPU_COOPERATIVE=off`
/// turns it off (benchmarks with and without; a driver that misbehaves).
pub fn cooperative_config(adapter: &wgpu::Adapter) -> Option<CoopConfig> {
    if cooperative_turned_off() {
        return None;
    }
    // A browser's adapter never has it: wgpu offers the feature natively only.
    let needed = wgpu::Features::EXPERIMENTAL_COOPERATIVE_MATRIX
        | wgpu::Features::SUBGROUP
        | wgpu::Features::SHADER_F16;
    if !adapter.features().contains(needed) {
        return None;
    }
    let info = adapter.get_info();
    let subgroup_max = info.subgroup_max_size;
    let f16 = wgpu::CooperativeScalarType::F16;
    let f32 = wgpu::CooperativeScalarType::F32;
    let size = adapter
        .cooperative_matrix_properties()
        .iter()
        .filter(|p| p.ab_type == f16 && p.cr_type == f32)
        .filter(|p| p.m_size == p.n_size && p.n_size == p.k_size)
        .map(|p| p.m_size)
        .filter(|&s| s == 8 || s == 16)
        .max()?;
    // A workgroup of 4 largest subgroups must fit the adapter and stage
    // whole columns of the 4 x size tile (see shaders/conv_coop.wgsl).
    let wg = 4 * subgroup_max;
    let fits = subgroup_max > 0
        && wg <= adapter.limits().max_compute_invocations_per_workgroup
        && wg.is_multiple_of(4 * size);
    fits.then_some(CoopConfig { size, subgroup_max })
}

impl GpuContext {
    /// Picks an adapter for `choice` and opens a device with every limit the
    /// adapter has (training needs large storage bindings) and timestamp queries
    /// where available (for `bench`).
    pub async fn new(choice: BackendChoice) -> Result<Self, GpuError> {
        let mut desc = wgpu::InstanceDescriptor::new_without_display_handle().with_env();
        desc.backends = choice.backends();
        let instance = wgpu::Instance::new(desc);
        let adapter = instance
            .request_adapter(&wgpu::RequestAdapterOptions {
                power_preference: wgpu::PowerPreference::HighPerformance,
                force_fallback_adapter: false,
                compatible_surface: None,
                // We want the adapter's real limits, not a privacy bucket of them.
                apply_limit_buckets: false,
            })
            .await
            .map_err(|_| GpuError::NoAdapter {
                backend: choice.describe(),
                hint: no_adapter_hint(),
            })?;
        Self::from_adapter(&adapter).await
    }

    #[cfg(not(target_arch = "wasm32"))]
    pub fn new_blocking(choice: BackendChoice) -> Result<Self, GpuError> {
        pollster::block_on(Self::new(choice))
    }

    /// The adapters `choice` offers, in the order `info` lists them (and
    /// `--adapter` indexes).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn adapters(choice: BackendChoice) -> Vec<wgpu::Adapter> {
        let mut desc = wgpu::InstanceDescriptor::new_without_display_handle().with_env();
        desc.backends = choice.backends();
        let instance = wgpu::Instance::new(desc);
        pollster::block_on(instance.enumerate_adapters(choice.backends()))
    }

    /// A device on adapter `index` of `adapters(choice)`; None picks as `new`.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn on_adapter(choice: BackendChoice, index: Option<usize>) -> Result<Self, GpuError> {
        let Some(index) = index else {
            return Self::new_blocking(choice);
        };
        let mut adapters = Self::adapters(choice);
        if index >= adapters.len() {
            return Err(GpuError::Setup(format!(
                "{} {index}: the {} backend offers {} adapter(s) (`info` lists them)",
                crate::setting::Setting::Adapter,
                choice.describe(),
                adapters.len()
            )));
        }
        pollster::block_on(Self::from_adapter(&adapters.swap_remove(index)))
    }

    /// Opens the device; where the adapter offers cooperative matrices it
    /// asks for them, and if the driver refuses that device, opens one
    /// without (today's kernels then train as before).
    pub async fn from_adapter(adapter: &wgpu::Adapter) -> Result<Self, GpuError> {
        let adapter_info = adapter.get_info();
        let mut opened = adapter
            .request_device(&Self::device_descriptor(adapter))
            .await;
        if opened.is_err() && cooperative_config(adapter).is_some() {
            log::warn!("the device refused cooperative matrices; opening it without them");
            let mut plain = Self::device_descriptor(adapter);
            plain
                .required_features
                .remove(wgpu::Features::EXPERIMENTAL_COOPERATIVE_MATRIX);
            plain.experimental_features = wgpu::ExperimentalFeatures::disabled();
            opened = adapter.request_device(&plain).await;
        }
        let (device, queue) = opened.map_err(|e| GpuError::RequestDevice {
            adapter: adapter_info.name.clone(),
            message: e.to_string(),
        })?;
        Ok(Self::from_device(device, queue, adapter_info).on_adapter_of(adapter))
    }

    /// This context with what `adapter` (the one its device came from)
    /// offers: its features and cooperative-matrix configurations, and the
    /// configuration the conv kernels use where the device has the feature.
    pub fn on_adapter_of(mut self, adapter: &wgpu::Adapter) -> Self {
        self.adapter_features = adapter.features();
        self.coop_listed = adapter.cooperative_matrix_properties();
        let opened_with = wgpu::Features::EXPERIMENTAL_COOPERATIVE_MATRIX;
        self.coop = if self.features.contains(opened_with) {
            cooperative_config(adapter)
        } else {
            None
        };
        self
    }

    /// What training asks of a device: every limit the adapter has (large
    /// storage bindings), and where available timestamp queries (for `bench`
    /// and kernel tuning) and, natively, subgroups (for the reduction
    /// candidates; the browser keeps to the tree reductions). `info` lists
    /// what the adapter offers.
    /// The window's renderer opens its device with this too, so both share it.
    /// Cooperative matrices (an experimental wgpu feature) are asked for
    /// only where `cooperative_config` finds a configuration the conv
    /// kernels use.
    pub fn device_descriptor(adapter: &wgpu::Adapter) -> wgpu::DeviceDescriptor<'static> {
        let coop = cooperative_config(adapter).is_some();
        let mut features = adapter.features() & Self::WANTED_FEATURES;
        let mut experimental = wgpu::ExperimentalFeatures::disabled();
        if coop {
            features |= wgpu::Features::EXPERIMENTAL_COOPERATIVE_MATRIX;
            // SAFETY: wgpu asks users of its experimental features to accept
            // that they may have bugs. Only the conv candidates in
            // shaders/conv_coop.wgsl use it, each checked against the CPU
            // oracle on odd shapes on a driver that has it (tests/gpu_ops.rs),
            // and any other device falls back to the plain kernels.
            experimental = unsafe { wgpu::ExperimentalFeatures::enabled() };
        }
        wgpu::DeviceDescriptor {
            label: Some("resnet-wgpu"),
            required_features: features,
            required_limits: adapter.limits(),
            experimental_features: experimental,
            memory_hints: wgpu::MemoryHints::Performance,
            trace: wgpu::Trace::Off,
        }
    }

    #[cfg(not(target_arch = "wasm32"))]
    const WANTED_FEATURES: wgpu::Features = wgpu::Features::TIMESTAMP_QUERY
        .union(wgpu::Features::SUBGROUP)
        .union(wgpu::Features::SHADER_F16);
    #[cfg(target_arch = "wasm32")]
    const WANTED_FEATURES: wgpu::Features =
        wgpu::Features::TIMESTAMP_QUERY.union(wgpu::Features::SHADER_F16);

    /// Wraps a device opened elsewhere (the window's renderer, opened with
    /// [`Self::device_descriptor`]).
    pub fn from_device(
        device: wgpu::Device,
        queue: wgpu::Queue,
        adapter_info: wgpu::AdapterInfo,
    ) -> Self {
        let limits = device.limits();
        let features = device.features();
        let uncaptured = std::sync::Arc::new(std::sync::Mutex::new(None));
        // Natively, keep wgpu's errors that no scope caught (an allocation that
        // failed outside a plan, a lost device) for `check_uncaptured` instead
        // of its default panic; the browser logs them to the console instead.
        #[cfg(not(target_arch = "wasm32"))]
        {
            let sink = uncaptured.clone();
            device.on_uncaptured_error(std::sync::Arc::new(move |e: wgpu::Error| {
                sink.lock().unwrap().get_or_insert_with(|| e.to_string());
            }));
        }
        let lost = std::sync::Arc::new(std::sync::Mutex::new(None));
        let why = lost.clone();
        device.set_device_lost_callback(move |reason, message| {
            let text = match message.trim() {
                "" => format!("{reason:?}"),
                m => format!("{reason:?}: {m}"),
            };
            why.lock().unwrap().get_or_insert(text);
        });
        GpuContext {
            uncaptured,
            lost,
            device,
            queue,
            limits,
            features,
            adapter_features: features,
            coop: None,
            coop_listed: vec![],
            stand_in: None,
            kernels: KernelCache::default(),
            choices: std::sync::Mutex::new(KernelChoices::load(&adapter_info)),
            adapter_info,
        }
    }

    /// A device that runs nothing and holds no memory, shaped like `gpu`
    /// (wgpu's noop backend): plans build on it exactly as on that GPU
    /// (kernel choices, grids, limits, every shader checked by naga through
    /// wgpu), every tensor standing on one small buffer, so that
    /// `info --dispatches` can list the dispatches of a step a real device
    /// of this machine could not hold.
    pub fn modeled(gpu: &ModeledGpu) -> Result<Self, GpuError> {
        let features = Self::WANTED_FEATURES | wgpu::Features::EXPERIMENTAL_COOPERATIVE_MATRIX;
        let mut desc = wgpu::InstanceDescriptor::new_without_display_handle();
        desc.backends = wgpu::Backends::NOOP;
        desc.backend_options.noop = wgpu::NoopBackendOptions {
            enable: true,
            limits: Some(gpu.limits.clone()),
            features: Some(features),
            device_type: Some(wgpu::DeviceType::DiscreteGpu),
            subgroup_min_size: Some(gpu.subgroup_size),
            subgroup_max_size: Some(gpu.subgroup_size),
        };
        let instance = wgpu::Instance::new(desc);
        let adapter = pollster::block_on(instance.request_adapter(&Default::default()))
            .map_err(|e| GpuError::Setup(format!("the modeled device: {e}")))?;
        let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
            label: Some("modeled"),
            required_features: features,
            required_limits: gpu.limits.clone(),
            // SAFETY: nothing runs on the noop backend; the feature only lets
            // the cooperative-matrix modules be checked and planned.
            experimental_features: unsafe { wgpu::ExperimentalFeatures::enabled() },
            memory_hints: wgpu::MemoryHints::Performance,
            trace: wgpu::Trace::Off,
        }))
        .map_err(|e| GpuError::Setup(format!("the modeled device: {e}")))?;
        let mut info = adapter.get_info();
        info.name = gpu.name.to_string();
        // wgpu 30's noop adapter reports a CPU whatever its options say.
        info.device_type = wgpu::DeviceType::DiscreteGpu;
        let mut ctx = Self::from_device(device, queue, info);
        ctx.choices = std::sync::Mutex::new(KernelChoices::in_memory(&ctx.adapter_info));
        ctx.set_tune_policy(TunePolicy::Off);
        ctx.coop = gpu
            .coop_size
            .filter(|_| !cooperative_turned_off())
            .map(|size| CoopConfig {
                size,
                subgroup_max: gpu.subgroup_size,
            });
        ctx.stand_in = Some(ctx.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("stand-in"),
            size: 1 << 16,
            usage: wgpu::BufferUsages::STORAGE
                | wgpu::BufferUsages::COPY_SRC
                | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        }));
        Ok(ctx)
    }

    /// The buffer tensors stand on, on a modeled device.
    pub(crate) fn stand_in_buffer(&self) -> Option<&wgpu::Buffer> {
        self.stand_in.as_ref()
    }

    /// Whether the device runs f16 kernels (`--precision f16`).
    pub fn supports_f16(&self) -> bool {
        self.features.contains(wgpu::Features::SHADER_F16)
    }

    /// Fails once wgpu has reported an error outside any error scope: after
    /// one (out of memory, device lost) the GPU's results cannot be trusted.
    pub fn check_uncaptured(&self) -> Result<(), GpuError> {
        if let Some(why) = self.device_lost() {
            return Err(GpuError::Device {
                message: format!("the GPU device was lost ({why})"),
            });
        }
        match self.uncaptured.lock().unwrap().clone() {
            Some(message) => Err(GpuError::Device { message }),
            None => Ok(()),
        }
    }

    /// Why the device was lost, once it is: nothing it was given will
    /// finish, so waiting for it would never return.
    pub fn device_lost(&self) -> Option<String> {
        self.lost.lock().unwrap().clone()
    }

    /// When plans measure kernel candidates (default: `TunePolicy::Auto`).
    pub fn set_tune_policy(&self, policy: TunePolicy) {
        self.choices.lock().unwrap().policy = policy;
    }

    /// Writes newly measured kernel choices to the cache file (native only).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn save_kernel_choices(&self) -> std::io::Result<()> {
        self.choices.lock().unwrap().save()
    }

    /// The most bytes one storage binding may hold on this device (the binding
    /// limit, capped by the buffer size limit).
    pub fn max_binding_bytes(&self) -> u64 {
        self.limits
            .max_storage_buffer_binding_size
            .min(self.limits.max_buffer_size)
    }

    /// A CPU implementation (lavapipe, SwiftShader, WARP): slow, and it
    /// shares the cores with everything else.
    pub fn is_software(&self) -> bool {
        self.adapter_info.device_type == wgpu::DeviceType::Cpu
    }

    /// The bytes a plan may take, where that is known: on a CPU adapter, the
    /// host memory available now (Linux: MemAvailable, capped by the cgroup's
    /// limit), because lavapipe accepts any allocation and the kernel kills
    /// the process when it is touched. None on GPUs: wgpu has no memory query
    /// (gfx-rs/wgpu#2447), so there an allocation failure is the signal.
    /// `RESNET_WGPU_MEMORY_LIMIT_MIB` caps it on any adapter.
    pub fn memory_budget(&self) -> Option<u64> {
        let cap = std::env::var("RESNET_WGPU_MEMORY_LIMIT_MIB")
            .ok()
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(|mib| mib << 20);
        let host = self.is_software().then(host_available_memory).flatten();
        match (cap, host) {
            (Some(cap), Some(host)) => Some(cap.min(host)),
            (cap, host) => cap.or(host),
        }
    }

    pub fn has_timestamps(&self) -> bool {
        self.features.contains(wgpu::Features::TIMESTAMP_QUERY)
    }

    /// One line naming the adapter, its API and device type.
    pub fn describe(&self) -> String {
        let info = &self.adapter_info;
        format!(
            "{} ({:?}, {:?}, driver {} {})",
            info.name, info.backend, info.device_type, info.driver, info.driver_info
        )
    }

    /// Blocks until the GPU has finished all submitted work (native only: tests,
    /// readback, benchmarks). The training loop never calls this.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn wait_idle(&self) -> Result<(), GpuError> {
        // A lost device finishes nothing: no wait.
        if let Some(why) = self.device_lost() {
            return Err(GpuError::Device {
                message: format!("the GPU device was lost ({why})"),
            });
        }
        self.device
            .poll(wgpu::PollType::wait_indefinitely())
            .map(|_| ())
            .map_err(|e| GpuError::Poll {
                what: "all submitted work".into(),
                message: e.to_string(),
            })
    }
}

/// MemAvailable from /proc/meminfo, capped by the cgroup v2 memory limit.
#[cfg(target_os = "linux")]
fn host_available_memory() -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    let available_kib: u64 = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemAvailable:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    let available = available_kib * 1024;
    let cgroup_limit = std::fs::read_to_string("/sys/fs/cgroup/memory.max")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok());
    Some(cgroup_limit.map_or(available, |limit| limit.min(available)))
}

#[cfg(not(target_os = "linux"))]
fn host_available_memory() -> Option<u64> {
    None
}
