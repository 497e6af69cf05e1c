//! The contract between a WGSL entry point and the host code that dispatches
//! it, written once on each side and checked against each other:
//!
//! - WGSL declares the bindings (`@binding(N) var<...> name`); the host names
//!   them by role (`Binding::tensor("input", x)`) and the number is read from
//!   the module's source, so no binding number is written in Rust.
//! - Each op family lists its entry points as `Kernel`s: the roles the host
//!   supplies and the override constants that size the workgroup (which the
//!   host always passes, and uses for its grid). `DispatchSpec::build` refuses
//!   a dispatch whose bindings or constants differ from its `Kernel`, and
//!   `tests/contract.rs` checks every `Kernel` against naga's reflection of
//!   the entry point (bindings used, workgroup-size overrides).
//! - Every uniform struct is defined in Rust with `wgsl_struct!`, which records
//!   its size and field offsets; the same test compares them with the WGSL
//!   struct of the same name.

use std::collections::HashMap;
use std::sync::OnceLock;

use super::GpuError;
use super::kernels::{SHADERS, Shader};

/// The uniform every entry point reads its parameters from; `DispatchSpec`
/// creates and binds it.
pub const PARAMS_ROLE: &str = "p";

/// How an entry point's workgroup is sized.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Workgroup {
    /// By these override constants, which the host passes and sizes its grid
    /// with (the WGSL default is never relied on).
    Overrides(&'static [&'static str]),
    /// By a constant of the shader that the host does not need: one workgroup
    /// per channel or per sample, whatever its size (the channel reductions,
    /// whose workgroup arrays must have a constant length).
    PerItem,
}

/// One entry point as the host calls it.
#[derive(Debug)]
pub struct Kernel {
    /// The modules of `gpu::SHADERS` that hold this entry point.
    pub modules: &'static [&'static str],
    pub entry: &'static str,
    /// The bindings the host supplies, by their WGSL names (the parameter
    /// uniform `p` aside).
    pub roles: &'static [&'static str],
    pub workgroup: Workgroup,
}

impl Kernel {
    /// `shader::entry`, as errors name a kernel.
    pub fn name(&self, shader: &str) -> String {
        format!("{shader}::{}", self.entry)
    }

    /// Finds `entry` of `shader` in an op family's list of kernels.
    pub fn find(
        family: &'static [Kernel],
        shader: &str,
        entry: &str,
    ) -> Result<&'static Kernel, GpuError> {
        family
            .iter()
            .find(|k| k.entry == entry && k.modules.contains(&shader))
            .ok_or_else(|| GpuError::Contract {
                kernel: format!("{shader}::{entry}"),
                message: "no such kernel in its op family's list".into(),
            })
    }

    /// Checks what a dispatch supplies against the contract: the same roles
    /// (each once) and every workgroup override.
    pub(crate) fn check(
        &self,
        shader: &str,
        roles: &[&str],
        constants: &[(&str, u32)],
    ) -> Result<(), GpuError> {
        let error = |message: String| GpuError::Contract {
            kernel: self.name(shader),
            message,
        };
        if !self.modules.contains(&shader) {
            return Err(error(format!("is not in module '{shader}'")));
        }
        let mut given: Vec<&str> = roles.to_vec();
        given.sort_unstable();
        let mut wanted: Vec<&str> = self.roles.to_vec();
        wanted.sort_unstable();
        if given != wanted {
            return Err(error(format!(
                "the host supplies bindings {given:?}, the kernel takes {wanted:?}"
            )));
        }
        if let Workgroup::Overrides(names) = self.workgroup {
            if let Some(missing) = names
                .iter()
                .find(|n| !constants.iter().any(|(c, _)| c == *n))
            {
                return Err(error(format!(
                    "the workgroup size '{missing}' is not passed by the host"
                )));
            }
        }
        Ok(())
    }
}

/// A module-scope `const` of a shader that the host also computes with (rows
/// per invocation, tile sizes, metric slots): the host's value, checked
/// against the WGSL one by `tests/contract.rs`.
#[derive(Debug)]
pub struct ShaderConstant {
    pub module: &'static str,
    pub name: &'static str,
    pub value: u32,
}

/// The module of `gpu::SHADERS` named `name`.
pub(crate) fn shader(name: &str) -> Result<&'static Shader, GpuError> {
    SHADERS
        .iter()
        .find(|s| s.name == name)
        .ok_or_else(|| GpuError::Contract {
            kernel: name.into(),
            message: "no such shader module".into(),
        })
}

impl Shader {
    /// The binding number of the group-0 variable `name`, read from the
    /// module's own declarations (`@group(0) @binding(N) var<...> name`);
    /// each module's source is scanned once per process.
    pub fn binding(&self, name: &str) -> Option<u32> {
        static TABLES: OnceLock<HashMap<&'static str, Vec<(String, u32)>>> = OnceLock::new();
        let tables =
            TABLES.get_or_init(|| SHADERS.iter().map(|s| (s.name, s.bindings())).collect());
        let scanned;
        let table = match tables.get(self.name) {
            Some(table) => table,
            // A module outside SHADERS (none today) is scanned each time.
            None => {
                scanned = self.bindings();
                &scanned
            }
        };
        table
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, index)| *index)
    }

    /// Whether the module declares `name` as read-write storage.
    pub fn writable(&self, name: &str) -> bool {
        let code = self.code();
        code.split("var<storage, read_write>")
            .skip(1)
            .any(|rest| rest.split(':').next().is_some_and(|n| n.trim() == name))
    }

    /// Invocations per workgroup of `entry`: its `@workgroup_size` with each
    /// name read from `constants` (the overrides the host passes) or from a
    /// `const NAME: u32 = ...u;` of the module; 0 where neither says.
    pub fn workgroup_size(&self, entry: &str, constants: &[(&'static str, u32)]) -> u32 {
        let code = self.code();
        let Some(at) = code.find(&format!("fn {entry}(")) else {
            return 0;
        };
        let Some(attr) = code[..at].rfind("@workgroup_size(") else {
            return 0;
        };
        let args = &code[attr + "@workgroup_size(".len()..];
        let args = &args[..args.find(')').unwrap_or(0)];
        let value = |term: &str| -> Option<u32> {
            let term = term.trim().trim_end_matches('u');
            if let Ok(n) = term.parse() {
                return Some(n);
            }
            if let Some(&(_, v)) = constants.iter().find(|(n, _)| *n == term) {
                return Some(v);
            }
            let decl = code.split(&format!("const {term}: u32 = ")).nth(1)?;
            decl.split(';')
                .next()?
                .trim()
                .trim_end_matches('u')
                .parse()
                .ok()
        };
        args.split(',')
            .filter(|t| !t.trim().is_empty())
            .map(|t| value(t).unwrap_or(0))
            .product()
    }

    /// The module's WGSL without comments.
    fn code(&self) -> String {
        self.source
            .lines()
            .map(|line| line.split("//").next().unwrap_or(""))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Every resource variable of the module: (name, binding number). Comments
    /// are skipped; `tests/contract.rs` checks the result against naga.
    pub fn bindings(&self) -> Vec<(String, u32)> {
        let code = self.code();
        let mut found = Vec::new();
        let mut rest = code.as_str();
        while let Some(at) = rest.find("@binding(") {
            rest = &rest[at + "@binding(".len()..];
            let Some(close) = rest.find(')') else { break };
            let Ok(index) = rest[..close].trim().parse::<u32>() else {
                continue;
            };
            let Some(var) = rest.find("var") else { break };
            let mut decl = &rest[var + 3..];
            if decl.starts_with('<') {
                let Some(end) = decl.find('>') else { break };
                decl = &decl[end + 1..];
            }
            let name = decl.split(':').next().unwrap_or("").trim();
            found.push((name.to_string(), index));
        }
        found
    }
}

/// The layout of a `#[repr(C)]` struct that mirrors a WGSL uniform struct.
#[derive(Clone, Copy, Debug)]
pub struct StructLayout {
    /// Its name, the same on both sides.
    pub name: &'static str,
    pub size: usize,
    /// (field, byte offset); fields whose names start with `_` are padding.
    pub fields: &'static [(&'static str, usize)],
}

/// Implemented by `wgsl_struct!` for each uniform struct.
pub trait WgslStruct: bytemuck::Pod {
    const LAYOUT: StructLayout;
}

/// Defines a `#[repr(C)]` Pod struct that mirrors the WGSL struct of the same
/// name, and records its layout for the contract test.
#[macro_export]
macro_rules! wgsl_struct {
    ($(#[$meta:meta])* $vis:vis struct $name:ident { $($fvis:vis $field:ident : $ty:ty),* $(,)? }) => {
        $(#[$meta])*
        #[repr(C)]
        #[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable)]
        $vis struct $name { $($fvis $field: $ty),* }

        impl $crate::gpu::WgslStruct for $name {
            const LAYOUT: $crate::gpu::StructLayout = $crate::gpu::StructLayout {
                name: stringify!($name),
                size: ::std::mem::size_of::<$name>(),
                fields: &[$((stringify!($field), ::std::mem::offset_of!($name, $field))),*],
            };
        }
    };
}
