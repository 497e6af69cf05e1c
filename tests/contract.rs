//! The host/shader contract (src/gpu/contract.rs), checked without a GPU by
//! naga's reflection of every module the binary embeds:
//! - every entry point has exactly one `Kernel` in the op families' lists,
//!   and the bindings it uses are that kernel's roles plus the params uniform;
//! - its workgroup is sized by the overrides the kernel names (which the host
//!   passes), or by a shader constant where the kernel says `PerItem`;
//! - every `Kernel` names an entry point that exists;
//! - the binding numbers the host reads from the source are naga's;
//! - every uniform struct has the size and field offsets of its Rust mirror;
//! - every WGSL constant the host computes with has the host's value.

use std::collections::BTreeSet;

use naga::valid::{Capabilities, ModuleInfo, ShaderStages, SubgroupOperationSet, ValidationFlags};
use resnet_wgpu::gpu::{Kernel, PARAMS_ROLE, Precision, SHADERS, Shader, Workgroup};
use resnet_wgpu::ops::{KERNEL_FAMILIES, SHADER_CONSTANTS, UNIFORM_STRUCTS};

fn parse(shader: &Shader) -> (naga::Module, ModuleInfo) {
    parse_at(shader, Precision::F32)
}

/// The module as compiled at `precision` (its `act` header prepended).
fn parse_at(shader: &Shader, precision: Precision) -> (naga::Module, ModuleInfo) {
    let source = shader.source_at(precision);
    let module = naga::front::wgsl::parse_str(&source)
        .unwrap_or_else(|e| panic!("{}: {}", shader.name, e.emit_to_string(&source)));
    let mut capabilities = if shader.needs_subgroups() {
        Capabilities::SUBGROUP
    } else {
        Capabilities::empty()
    };
    if precision == Precision::F16 || shader.needs_cooperative_matrices() {
        capabilities |= Capabilities::SHADER_FLOAT16;
    }
    if shader.needs_cooperative_matrices() {
        capabilities |= Capabilities::COOPERATIVE_MATRIX;
    }
    let info = naga::valid::Validator::new(ValidationFlags::all(), capabilities)
        .subgroup_stages(ShaderStages::COMPUTE)
        .subgroup_operations(SubgroupOperationSet::all())
        .validate(&module)
        .unwrap_or_else(|e| panic!("{}: {}", shader.name, e.emit_to_string(&source)));
    (module, info)
}

fn kernels() -> impl Iterator<Item = &'static Kernel> {
    KERNEL_FAMILIES.iter().flat_map(|family| family.iter())
}

/// The names of the resource variables entry point `index` uses (directly
/// or through the functions it calls).
fn used_bindings(module: &naga::Module, info: &ModuleInfo, index: usize) -> BTreeSet<String> {
    let function = info.get_entry_point(index);
    module
        .global_variables
        .iter()
        .filter(|(handle, var)| var.binding.is_some() && !function[*handle].is_empty())
        .map(|(_, var)| var.name.clone().unwrap_or_default())
        .collect()
}

/// The override constants that size entry point `ep`'s workgroup.
fn workgroup_overrides(module: &naga::Module, ep: &naga::EntryPoint) -> BTreeSet<String> {
    let Some(sizes) = ep.workgroup_size_overrides else {
        return BTreeSet::new();
    };
    sizes
        .iter()
        .flatten()
        .map(|&expr| match module.global_expressions[expr] {
            naga::Expression::Override(o) => module.overrides[o].name.clone().unwrap_or_default(),
            ref other => panic!("{}: workgroup size {other:?} is not an override", ep.name),
        })
        .collect()
}

#[test]
fn every_entry_point_binds_what_its_kernel_supplies() {
    let mut failures = Vec::new();
    for shader in SHADERS {
        let (module, info) = parse(shader);
        for (index, ep) in module.entry_points.iter().enumerate() {
            let name = format!("{}::{}", shader.name, ep.name);
            let contracts: Vec<&Kernel> = kernels()
                .filter(|k| k.entry == ep.name && k.modules.contains(&shader.name))
                .collect();
            let [kernel] = contracts[..] else {
                failures.push(format!(
                    "{name}: {} kernels in ops::KERNEL_FAMILIES",
                    contracts.len()
                ));
                continue;
            };
            let used = used_bindings(&module, &info, index);
            let mut supplied: BTreeSet<String> =
                kernel.roles.iter().map(|r| r.to_string()).collect();
            supplied.insert(PARAMS_ROLE.to_string());
            if used != supplied {
                failures.push(format!(
                    "{name}: the shader uses bindings {used:?}, the host supplies {supplied:?}"
                ));
            }
            let overrides = workgroup_overrides(&module, ep);
            match kernel.workgroup {
                Workgroup::Overrides(names) => {
                    let named: BTreeSet<String> = names.iter().map(|n| n.to_string()).collect();
                    if overrides != named {
                        failures.push(format!(
                            "{name}: workgroup sized by {overrides:?}, the host passes {named:?}"
                        ));
                    }
                }
                Workgroup::PerItem if !overrides.is_empty() => failures.push(format!(
                    "{name}: workgroup sized by overrides {overrides:?}, the host passes none"
                )),
                Workgroup::PerItem => {}
            }
        }
    }
    assert!(
        failures.is_empty(),
        "contract broken:\n{}",
        failures.join("\n")
    );
}

#[test]
fn every_kernel_names_an_entry_point_that_exists() {
    for kernel in kernels() {
        assert!(
            !kernel.modules.is_empty(),
            "{} names no module",
            kernel.entry
        );
        for &module_name in kernel.modules {
            let shader = SHADERS
                .iter()
                .find(|s| s.name == module_name)
                .unwrap_or_else(|| panic!("{}: no module '{module_name}'", kernel.entry));
            let (module, _) = parse(shader);
            assert!(
                module.entry_points.iter().any(|ep| ep.name == kernel.entry),
                "{module_name} has no entry point '{}'",
                kernel.entry
            );
        }
    }
}

#[test]
fn binding_numbers_read_from_the_source_are_naga_s() {
    for shader in SHADERS {
        let (module, _) = parse(shader);
        let mut naga_bindings: Vec<(String, u32)> = module
            .global_variables
            .iter()
            .filter_map(|(_, var)| {
                let binding = var.binding.as_ref()?;
                assert_eq!(
                    binding.group, 0,
                    "{}: {:?} is not in group 0",
                    shader.name, var.name
                );
                Some((var.name.clone().unwrap_or_default(), binding.binding))
            })
            .collect();
        naga_bindings.sort();
        let mut scanned = shader.bindings();
        scanned.sort();
        assert_eq!(scanned, naga_bindings, "module {}", shader.name);
    }
}

#[test]
fn uniform_structs_match_their_rust_mirrors() {
    let mut checked = BTreeSet::new();
    for shader in SHADERS {
        let (module, _) = parse(shader);
        let uniforms = module
            .global_variables
            .iter()
            .filter(|(_, var)| var.space == naga::AddressSpace::Uniform);
        for (_, var) in uniforms {
            let ty = &module.types[var.ty];
            let name = ty.name.clone().unwrap_or_default();
            let naga::TypeInner::Struct { ref members, span } = ty.inner else {
                panic!("{}: uniform {:?} is not a struct", shader.name, var.name);
            };
            let rust = UNIFORM_STRUCTS
                .iter()
                .find(|l| l.name == name)
                .unwrap_or_else(|| panic!("{}: no Rust mirror of struct {name}", shader.name));
            assert_eq!(rust.size, span as usize, "{name}: size in Rust vs WGSL");
            for member in members {
                let field = member.name.clone().unwrap_or_default();
                if field.starts_with('_') {
                    continue;
                }
                let offset = rust
                    .fields
                    .iter()
                    .find(|(f, _)| *f == field)
                    .map(|(_, o)| *o);
                assert_eq!(
                    offset,
                    Some(member.offset as usize),
                    "{name}.{field}: offset in Rust vs WGSL"
                );
            }
            for (field, _) in rust.fields.iter().filter(|(f, _)| !f.starts_with('_')) {
                assert!(
                    members.iter().any(|m| m.name.as_deref() == Some(field)),
                    "{name}.{field} is in Rust but not in WGSL"
                );
            }
            checked.insert(name);
        }
    }
    let unused: Vec<&str> = UNIFORM_STRUCTS
        .iter()
        .map(|l| l.name)
        .filter(|n| !checked.contains(*n))
        .collect();
    assert!(
        unused.is_empty(),
        "Rust mirrors of no WGSL uniform: {unused:?}"
    );
}

#[test]
fn shader_constants_have_the_host_s_values() {
    for constant in SHADER_CONSTANTS.iter().flat_map(|list| list.iter()) {
        let shader = SHADERS.iter().find(|s| s.name == constant.module).unwrap();
        let (module, _) = parse(shader);
        let (_, declared) = module
            .constants
            .iter()
            .find(|(_, c)| c.name.as_deref() == Some(constant.name))
            .unwrap_or_else(|| panic!("{} has no const {}", constant.module, constant.name));
        let value = match module.global_expressions[declared.init] {
            naga::Expression::Literal(naga::Literal::U32(v)) => v,
            ref other => panic!("{}::{} is {other:?}", constant.module, constant.name),
        };
        assert_eq!(
            value, constant.value,
            "{}::{}",
            constant.module, constant.name
        );
    }
}

/// Every module also compiles with f16 activations (`--precision f16`): the
/// same source with `act = f16`, checked by naga without a GPU, and with the
/// same bindings as at f32.
#[test]
fn every_module_compiles_at_f16() {
    for shader in SHADERS {
        let (module, _) = parse_at(shader, Precision::F16);
        let (f32_module, _) = parse(shader);
        let names = |m: &naga::Module| -> BTreeSet<(String, u32)> {
            m.global_variables
                .iter()
                .filter_map(|(_, v)| Some((v.name.clone()?, v.binding.as_ref()?.binding)))
                .collect()
        };
        assert_eq!(names(&module), names(&f32_module), "{}", shader.name);
    }
}

/// The workgroup size the dispatch report reads from the source
/// (`Shader::workgroup_size`) is naga's, for every entry point: literal and
/// const sizes as naga resolved them, override sizes with a distinct value
/// given for each override.
#[test]
fn workgroup_sizes_read_from_the_source_are_naga_s() {
    let mut failures = Vec::new();
    for shader in SHADERS {
        let (module, _) = parse(shader);
        for ep in &module.entry_points {
            let overrides: Vec<String> = workgroup_overrides(&module, ep).into_iter().collect();
            let values: Vec<(&'static str, u32)> = overrides
                .iter()
                .enumerate()
                .map(|(i, n)| (&*n.clone().leak(), 3 + 2 * i as u32))
                .collect();
            let expected: u32 = (0..3)
                .map(|d| {
                    let from_override = ep.workgroup_size_overrides.and_then(|s| s[d]).map(|e| {
                        let naga::Expression::Override(o) = module.global_expressions[e] else {
                            unreachable!("checked by workgroup_overrides")
                        };
                        let name = module.overrides[o].name.clone().unwrap_or_default();
                        values.iter().find(|(n, _)| *n == name).unwrap().1
                    });
                    from_override.unwrap_or(ep.workgroup_size[d])
                })
                .product();
            let read = shader.workgroup_size(&ep.name, &values);
            if read != expected {
                failures.push(format!(
                    "{}::{}: read {read}, naga {expected}",
                    shader.name, ep.name
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Which bindings the dispatch report counts as written
/// (`Shader::writable`): exactly naga's read-write storage variables.
#[test]
fn writable_bindings_read_from_the_source_are_naga_s() {
    for shader in SHADERS {
        let (module, _) = parse(shader);
        for (_, var) in module.global_variables.iter() {
            let Some(name) = &var.name else { continue };
            let stored = matches!(var.space, naga::AddressSpace::Storage { access }
                if access.contains(naga::StorageAccess::STORE));
            assert_eq!(shader.writable(name), stored, "{}: {name}", shader.name);
        }
    }
}
