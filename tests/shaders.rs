//! Every module the binary embeds (gpu::SHADERS) is made of the files in
//! shaders/ as they are on disk, uses every one of them, and parses and
//! validates with naga (the subgroup candidates with the subgroup capability).

use std::path::Path;

use resnet_wgpu::gpu::{Precision, SHADERS};

#[test]
fn every_shader_validates_with_naga() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("shaders");
    let mut on_disk: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| {
            e.unwrap()
                .path()
                .file_stem()
                .unwrap()
                .to_str()
                .unwrap()
                .to_string()
        })
        .collect();
    on_disk.sort();
    let mut used: Vec<String> = SHADERS
        .iter()
        .flat_map(|s| s.files.iter().map(|f| f.to_string()))
        .collect();
    used.sort();
    used.dedup();
    assert_eq!(on_disk, used, "shaders/ and gpu::SHADERS disagree");

    for shader in SHADERS {
        let source: String = shader
            .files
            .iter()
            .map(|f| std::fs::read_to_string(dir.join(format!("{f}.wgsl"))).unwrap())
            .collect();
        assert_eq!(
            shader.source, source,
            "module {} differs from its files {:?}",
            shader.name, shader.files
        );
        // As compiled at f32 (tests/contract.rs validates the f16 build);
        // cooperative-matrix modules at both matrix sizes adapters list.
        let sizes: &[u32] = if shader.needs_cooperative_matrices() {
            &[8, 16]
        } else {
            &[8]
        };
        for &size in sizes {
            let source = shader.source_with(Precision::F32, size);
            let shown = format!("module {} ({:?}, {size}x{size})", shader.name, shader.files);
            let module = naga::front::wgsl::parse_str(&source)
                .unwrap_or_else(|e| panic!("{}", e.emit_to_string_with_path(&source, &shown)));
            let mut capabilities = if shader.needs_subgroups() {
                naga::valid::Capabilities::SUBGROUP
            } else {
                naga::valid::Capabilities::empty()
            };
            if shader.needs_cooperative_matrices() {
                capabilities |= naga::valid::Capabilities::COOPERATIVE_MATRIX
                    | naga::valid::Capabilities::SHADER_FLOAT16;
            }
            naga::valid::Validator::new(naga::valid::ValidationFlags::all(), capabilities)
                .subgroup_stages(naga::valid::ShaderStages::COMPUTE)
                .subgroup_operations(naga::valid::SubgroupOperationSet::all())
                .validate(&module)
                .unwrap_or_else(|e| panic!("{}", e.emit_to_string_with_path(&source, &shown)));
        }
    }
}
