//! Which kernel candidate runs each (pass, shape) on this adapter. The choice is
//! measured on the adapter (ops time their candidates) and kept in a small JSON
//! file keyed by adapter (vendor, device, driver, API), in the platform's cache
//! folder, so a shape is measured once per machine. In the browser (no files)
//! choices live for the page's life.

use std::collections::BTreeMap;
#[cfg(not(target_arch = "wasm32"))]
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// When the plan measures kernel candidates.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum TunePolicy {
    /// Cached choices; shapes missing from the cache are measured on a hardware
    /// GPU and use the built-in choice on a CPU adapter (where measuring means
    /// an LLVM compile of every candidate: minutes for a ResNet).
    #[default]
    Auto,
    /// Cached choices, built-in ones for the rest; never measures.
    Cached,
    /// Built-in choices only (ignores the cache).
    Off,
    /// Measures every shape again and rewrites the cache (what `bench tune` does).
    All,
    /// The built-in choices a hardware GPU takes (workgroup-tiled convs,
    /// subgroup reductions), on any adapter; ignores the cache, never
    /// measures. For testing, on CPU drivers, the kernels a GPU runs.
    Gpu,
}

impl TunePolicy {
    pub const NAMES: [&'static str; 5] = ["auto", "cached", "off", "all", "gpu"];

    /// Whether the built-in choices are a CPU adapter's, on an adapter that
    /// is (`cpu_adapter`) or is not one.
    pub fn cpu_builtins(self, cpu_adapter: bool) -> bool {
        cpu_adapter && self != TunePolicy::Gpu
    }
}

impl std::str::FromStr for TunePolicy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(TunePolicy::Auto),
            "cached" => Ok(TunePolicy::Cached),
            "off" => Ok(TunePolicy::Off),
            "all" => Ok(TunePolicy::All),
            "gpu" => Ok(TunePolicy::Gpu),
            _ => Err(format!(
                "unknown tune policy '{s}' (expected one of {})",
                TunePolicy::NAMES.join(", ")
            )),
        }
    }
}

/// How a kernel came to be chosen, for `info` and the speed reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChoiceSource {
    /// Timed on this adapter just now.
    Measured,
    /// Timed on this adapter earlier (the cache file).
    Cached,
    /// The built-in default (no measurement).
    BuiltIn,
    /// What the resumed run ran before (its run folder's record).
    Run,
}

impl ChoiceSource {
    pub fn name(self) -> &'static str {
        match self {
            ChoiceSource::Measured => "measured",
            ChoiceSource::Cached => "cached",
            ChoiceSource::BuiltIn => "built-in",
            ChoiceSource::Run => "the run's",
        }
    }
}

/// One measured choice: the winning candidate and its time.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Choice {
    pub kernel: String,
    pub ms: f64,
}

/// The kernels a run ran (cache key -> kernel name) on its adapter: the run
/// folder's `kernel-choices.json`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RunKernels {
    pub adapter: String,
    pub choices: BTreeMap<String, String>,
}

/// The cache file: choices per adapter, per (pass, shape) key.
#[cfg(not(target_arch = "wasm32"))]
#[derive(Default, Serialize, Deserialize)]
struct ChoiceFile {
    format: u32,
    adapters: BTreeMap<String, BTreeMap<String, Choice>>,
}

#[cfg(not(target_arch = "wasm32"))]
const FORMAT: u32 = 1;

/// This adapter's choices and the policy for the missing ones.
pub struct KernelChoices {
    pub policy: TunePolicy,
    /// "vendor:device driver (api)" of the adapter the choices belong to.
    pub adapter_key: String,
    /// The cache file (None in the browser).
    #[cfg(not(target_arch = "wasm32"))]
    pub path: Option<PathBuf>,
    entries: BTreeMap<String, Choice>,
    /// A resumed run's own choices, taken before the cache's (see `pin`).
    pinned: BTreeMap<String, Choice>,
    /// What this process chose for each key it was asked (see `used`).
    used: BTreeMap<String, String>,
    /// Keys measured by this process (`All` measures each once, not once per layer).
    measured: std::collections::HashSet<String>,
    /// A choice was measured since the file was read.
    dirty: bool,
    /// A kernel every conv pass takes where it is a candidate (`force_conv`).
    forced: Option<Choice>,
}

impl KernelChoices {
    /// The choices cached for `info`'s adapter in the platform's cache file
    /// (none when there is no file or it cannot be read: the cache is an
    /// optimisation, never an error).
    pub fn load(info: &wgpu::AdapterInfo) -> Self {
        #[cfg(not(target_arch = "wasm32"))]
        return Self::load_from(info, cache_path());
        #[cfg(target_arch = "wasm32")]
        Self::in_memory(info)
    }

    /// Choices kept for the process's life only (the browser's).
    pub fn in_memory(info: &wgpu::AdapterInfo) -> Self {
        KernelChoices {
            policy: TunePolicy::default(),
            adapter_key: format!(
                "{:04x}:{:04x} {} {} {} ({:?})",
                info.vendor, info.device, info.name, info.driver, info.driver_info, info.backend
            ),
            #[cfg(not(target_arch = "wasm32"))]
            path: None,
            entries: BTreeMap::new(),
            pinned: BTreeMap::new(),
            used: BTreeMap::new(),
            measured: Default::default(),
            dirty: false,
            forced: None,
        }
    }

    /// The choices cached for `info`'s adapter in the file at `path`.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn load_from(info: &wgpu::AdapterInfo, path: Option<PathBuf>) -> Self {
        let mut choices = Self::in_memory(info);
        if let Some(entries) = path
            .as_deref()
            .and_then(read_file)
            .and_then(|mut file| file.adapters.remove(&choices.adapter_key))
        {
            choices.entries = entries;
        }
        choices.path = path;
        choices
    }

    /// The cached choice for `key` (a pinned run's first), unless the policy
    /// ignores it (`Off`, `Gpu`) or renews it (`All`, until this process has
    /// measured it).
    pub fn cached(&self, key: &str) -> Option<(&Choice, ChoiceSource)> {
        if let Some(forced) = self.forced.as_ref().filter(|_| key.starts_with("conv ")) {
            return Some((forced, ChoiceSource::Cached));
        }
        match self.policy {
            TunePolicy::Off | TunePolicy::Gpu => None,
            TunePolicy::All if !self.measured.contains(key) => None,
            _ => match self.pinned.get(key) {
                Some(choice) => Some((choice, ChoiceSource::Run)),
                None => self.entries.get(key).map(|c| (c, ChoiceSource::Cached)),
            },
        }
    }

    /// Every conv pass whose candidates include `kernel` (a name `info`
    /// shows) runs it, as if cached, whatever the policy: for tests that run
    /// a whole model on one kernel (the others keep their choice).
    pub fn force_conv(&mut self, kernel: &str) {
        self.forced = Some(Choice {
            kernel: kernel.to_string(),
            ms: 0.0,
        });
    }

    /// Takes a run's recorded kernels before the cache's (`auto`, `cached`),
    /// so a resumed run runs the kernels it ran, whatever was measured since.
    /// False (nothing taken) when they were recorded on another adapter.
    pub fn pin(&mut self, run: RunKernels) -> bool {
        if run.adapter != self.adapter_key {
            return false;
        }
        self.pinned = run
            .choices
            .into_iter()
            .map(|(key, kernel)| (key, Choice { kernel, ms: 0.0 }))
            .collect();
        true
    }

    /// Notes the kernel chosen for `key` (for `used`).
    pub fn note_used(&mut self, key: String, kernel: String) {
        self.used.insert(key, kernel);
    }

    /// Every choice this process made, for the run folder.
    pub fn used(&self) -> RunKernels {
        RunKernels {
            adapter: self.adapter_key.clone(),
            choices: self.used.clone(),
        }
    }

    /// Whether a shape without a usable cached choice is measured now (never
    /// in the browser, which cannot block on a timing).
    pub fn should_measure(&self, cpu_adapter: bool) -> bool {
        if cfg!(target_arch = "wasm32") {
            return false;
        }
        match self.policy {
            TunePolicy::All => true,
            TunePolicy::Auto => !cpu_adapter,
            TunePolicy::Cached | TunePolicy::Off | TunePolicy::Gpu => false,
        }
    }

    /// Records a measured choice (written by `save`).
    pub fn insert(&mut self, key: String, choice: Choice) {
        self.measured.insert(key.clone());
        self.entries.insert(key, choice);
        self.dirty = true;
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Writes measured choices into the cache file (merged with other
    /// adapters' entries, written to a private temporary file and renamed, so
    /// readers never see half a file). Does nothing when nothing changed.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn save(&mut self) -> std::io::Result<()> {
        let Some(path) = self.path.clone() else {
            return Ok(());
        };
        if !self.dirty {
            return Ok(());
        }
        let mut file = read_file(&path).unwrap_or_default();
        file.format = FORMAT;
        file.adapters
            .entry(self.adapter_key.clone())
            .or_default()
            .extend(self.entries.clone());
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
        let text = serde_json::to_string_pretty(&file).map_err(std::io::Error::other)?;
        std::fs::write(&tmp, text)?;
        std::fs::rename(&tmp, &path)?;
        self.dirty = false;
        Ok(())
    }
}

/// `$RESNET_WGPU_CACHE_DIR/kernel-choices.json`, else the platform's cache
/// folder (`~/.cache/resnet-wgpu` on Linux, `~/Library/Caches/resnet-wgpu` on
/// macOS, `%LOCALAPPDATA%\resnet-wgpu` on Windows).
#[cfg(not(target_arch = "wasm32"))]
fn cache_path() -> Option<PathBuf> {
    let dir = match std::env::var_os("RESNET_WGPU_CACHE_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => dirs::cache_dir()?.join("resnet-wgpu"),
    };
    Some(dir.join("kernel-choices.json"))
}

#[cfg(not(target_arch = "wasm32"))]
fn read_file(path: &std::path::Path) -> Option<ChoiceFile> {
    let text = std::fs::read_to_string(path).ok()?;
    serde_json::from_str::<ChoiceFile>(&text)
        .ok()
        .filter(|f| f.format == FORMAT)
}
