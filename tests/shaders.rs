//! Every file in shaders/ parses and validates with naga, and is the one the
//! binary embeds (so a shader on disk can't drift from what runs).

use std::path::Path;

use resnet_wgpu::gpu::SHADERS;

#[test]
fn every_shader_validates_with_naga() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("shaders");
    let mut names = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let source = std::fs::read_to_string(&path).unwrap();
        let shown = path.display().to_string();
        let module = naga::front::wgsl::parse_str(&source)
            .unwrap_or_else(|e| panic!("{}", e.emit_to_string_with_path(&source, &shown)));
        naga::valid::Validator::new(
            naga::valid::ValidationFlags::all(),
            naga::valid::Capabilities::empty(),
        )
        .validate(&module)
        .unwrap_or_else(|e| panic!("{}", e.emit_to_string_with_path(&source, &shown)));
        let name = path.file_stem().unwrap().to_str().unwrap().to_string();
        let embedded = SHADERS
            .iter()
            .find(|s| s.name == name)
            .unwrap_or_else(|| panic!("{shown} is not in gpu::SHADERS"));
        assert_eq!(
            embedded.source, source,
            "{shown} differs from the embedded copy"
        );
        names.push(name);
    }
    assert_eq!(
        names.len(),
        SHADERS.len(),
        "gpu::SHADERS lists a shader that shaders/ lacks"
    );
}
