//! The real binary: `info` names the adapter; `bench ops` prints its table.

use std::process::Command;

fn run(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_resnet-wgpu"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

#[test]
fn info_names_the_adapter_and_limits() {
    let (ok, out, err) = run(&["info"]);
    assert!(ok, "info failed: {err}");
    assert!(
        out.contains("adapter: ") && out.contains("max storage buffer binding"),
        "{out}"
    );
}

#[test]
fn bench_ops_prints_every_pass_with_rates() {
    let (ok, out, err) = run(&[
        "bench",
        "ops",
        "--batch",
        "2",
        "--reps",
        "1",
        "--gemm-size",
        "64",
    ]);
    assert!(ok, "bench failed: {err}");
    for op in [
        "gemm",
        "conv forward",
        "conv backward_input",
        "conv backward_weight",
        "bn+add+relu backward",
        "stage3 64->64",
    ] {
        assert!(out.contains(op), "missing {op} in:\n{out}");
    }
    let conv_line = out.lines().find(|l| l.starts_with("conv forward")).unwrap();
    let rate: f64 = conv_line
        .split_whitespace()
        .rev()
        .nth(2)
        .unwrap()
        .parse()
        .unwrap();
    assert!(rate > 0.0, "{conv_line}");
}

#[test]
fn unknown_backend_is_a_clear_error() {
    let (ok, _, err) = run(&["--backend", "glide", "info"]);
    assert!(!ok && err.contains("--backend"), "{err}");
}
