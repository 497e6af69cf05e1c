//! The real binary: `info`, `bench`, a short headless `train` and `eval --json`,
//! and clear errors (never a panic) for bad flags and files.

use std::process::Command;

/// The binary with its own kernel-choice cache folder (tests never touch the
/// user's).
fn binary() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_resnet-wgpu"));
    let cache = std::env::temp_dir().join(format!("resnet-wgpu-cli-cache-{}", std::process::id()));
    command.env("RESNET_WGPU_CACHE_DIR", cache);
    command
}

fn run(args: &[&str]) -> (bool, String, String) {
    let out = binary().args(args).output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

#[test]
fn info_names_the_adapter_and_limits() {
    // --tune off: built-in choices on any adapter (auto measures on a GPU).
    let (ok, out, err) = run(&["--tune", "off", "info"]);
    assert!(ok, "info failed: {err}");
    assert!(
        out.contains("adapter: ") && out.contains("max storage buffer binding"),
        "{out}"
    );
    assert!(out.contains("memory plan of resnet20"), "{out}");
    // The adapters `--adapter N` indexes.
    assert!(out.contains("\n  adapter 0: "), "{out}");
    // Which kernel each conv pass runs, and why: every choice built in, the
    // CPU adapter's (rows8 for ResNet-20's 3x3/1 convs) or a GPU's (tiled).
    assert!(
        out.contains("conv kernels: 0 passes measured now, 0 from the cache"),
        "{out}"
    );
    let builtin = match out.lines().next().is_some_and(|l| l.contains(", Cpu,")) {
        true => "forward rows8 (built-in)",
        false => "forward tiled",
    };
    assert!(out.contains(builtin), "{out}");
    // The adapter's cooperative-matrix configurations are listed; an f32
    // plan never runs on them.
    assert!(out.contains("\ncooperative matrices: "), "{out}");
    assert!(
        out.contains("conv passes on cooperative matrices: 0 of 57"),
        "{out}"
    );
    // --tune gpu: a GPU's built-in choices on any adapter.
    let (ok, out, err) = run(&["--tune", "gpu", "info", "--model", "resnet8"]);
    assert!(ok, "info failed: {err}");
    assert!(!out.contains("rows8") && !out.contains("regtile"), "{out}");
    assert!(out.contains("forward tiled16x128 (built-in)"), "{out}");
    let (ok, out, err) = run(&[
        "info",
        "--model",
        "resnet50",
        "--batch-size",
        "2",
        "--image-size",
        "64",
    ]);
    assert!(ok, "info failed: {err}");
    assert!(
        out.contains("25557032 parameters") || out.contains("23528522 parameters"),
        "{out}"
    );
}

/// Every whole-number flag parses a negative value itself and refuses it
/// naming the flag and the value (clap took "-1" for an unknown flag), and
/// the float flags take "-inf" as a value to refuse.
#[test]
fn negative_numbers_are_refused_by_their_flags() {
    let cases: &[(&[&str], &str)] = &[
        (&["train", "--no-gui"], "--batch-size"),
        (&["train", "--no-gui"], "--epochs"),
        (&["train", "--no-gui"], "--seed"),
        (&["train", "--no-gui"], "--max-steps"),
        (&["train", "--no-gui"], "--crop-pad"),
        (&["train", "--no-gui"], "--synthetic-train"),
        (&["train", "--no-gui"], "--synthetic-test"),
        (&["train", "--no-gui"], "--report-every"),
        (&["train", "--no-gui"], "--milestones"),
        (&["train", "--no-gui"], "--workers"),
        (&["train", "--no-gui"], "--groups"),
        (&["train", "--no-gui"], "--image-size"),
        (&["train", "--no-gui"], "--val-split"),
        (&["train", "--no-gui"], "--collective-timeout"),
        (&["train", "--no-gui"], "--adapter"),
        (&["eval"], "--batch-size"),
        (&["info"], "--batch-size"),
        (&["info"], "--image-size"),
        (&["info"], "--classes"),
        (&["predict", "x.png"], "--top"),
        (&["pack"], "--max-side"),
        (&["pack"], "--shard-mib"),
        (&["pack"], "--quality"),
        (&["pack"], "--workers"),
        (&["check"], "--workers"),
        (&["download", "cifar10"], "--stall-timeout"),
        (&["bench", "ops"], "--batch"),
        (&["bench", "ops"], "--reps"),
        (&["bench", "ops"], "--gemm-size"),
        (&["bench", "ops"], "--wg-n"),
        (&["bench", "ops"], "--wg-m"),
        (&["bench", "train"], "--batch-size"),
        (&["bench", "train"], "--steps"),
        (&["bench", "train"], "--gemm-size"),
        (&["bench", "tune"], "--batch-size"),
        (&["bench", "tune"], "--image-size"),
        (&["bench", "data"], "--workers"),
        (&["bench", "data"], "--image-size"),
        (&["bench", "data"], "--batch-size"),
        (&["bench", "data"], "--images"),
    ];
    for (command, flag) in cases {
        let mut args = command.to_vec();
        args.extend([*flag, "-3"]);
        let (ok, _, err) = run(&args);
        let first = err.lines().next().unwrap_or_default();
        assert!(
            !ok && first.starts_with(&format!("error: {flag} must be"))
                && first.ends_with("got -3"),
            "{args:?}: {err}"
        );
    }
    for (flag, value) in [("--lr", "-inf"), ("--checkpoint-every", "-1m")] {
        let (ok, _, err) = run(&["train", "--no-gui", flag, value]);
        assert!(
            !ok && err.contains(flag) && err.contains(value),
            "{flag} {value}: {err}"
        );
        assert!(
            !err.contains("unexpected argument"),
            "{flag} {value}: {err}"
        );
    }
}

/// The dispatches of one step as the modeled H100 plans them (`info
/// --dispatches --json`): (kernel, workgroups) each.
fn modeled_step(args: &[&str]) -> Vec<(String, u64)> {
    let mut all = vec!["info", "--dispatches", "--json"];
    all.extend(args);
    let (ok, out, err) = run(&all);
    assert!(ok, "{args:?}: {err}");
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    report["dispatches"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let kernel = r["kernel"].as_str().unwrap().to_string();
            (kernel, r["workgroups"].as_u64().unwrap())
        })
        .collect()
}

/// What a GPU with 132 compute units needs, checked on its plan's structure
/// (no GPU): ResNet-20 at batch 128 records no more dispatches per step than
/// after the normalization issue (173 before it: 164, with the residual
/// gradient summed in the first conv's epilogue), and every batch-norm and
/// group-norm dispatch of ResNet-20 (both norms) and of ResNet-50 at 224
/// (batch 256), and every forward and input-gradient conv of ResNet-20,
/// launches at least 256 workgroups with the GPU's built-ins.
#[test]
fn a_step_fills_a_gpu_in_few_dispatches() {
    const RESNET20_DISPATCHES: usize = 164;
    let step = modeled_step(&["--model", "resnet20", "--batch-size", "128"]);
    assert!(
        step.len() <= RESNET20_DISPATCHES,
        "resnet20 at batch 128 records {} dispatches per step, more than {RESNET20_DISPATCHES}",
        step.len()
    );
    // The forward and input-gradient convs too, at f32 (the SIMT tiles step
    // down to a smaller one on the 64-channel 8x8 layers).
    let small_convs: Vec<_> = step
        .iter()
        .filter(|(k, wg)| k.starts_with("conv") && !k.contains("weight") && *wg < 256)
        .collect();
    assert!(small_convs.is_empty(), "{small_convs:?}");
    let runs: [&[&str]; 4] = [
        &["--model", "resnet20", "--batch-size", "128"],
        &[
            "--model",
            "resnet20",
            "--batch-size",
            "128",
            "--norm",
            "group",
            "--groups",
            "8",
        ],
        &["--model", "resnet50", "--batch-size", "256"],
        &[
            "--model",
            "resnet50",
            "--batch-size",
            "256",
            "--precision",
            "f16",
        ],
    ];
    for args in runs {
        let norms: Vec<_> = modeled_step(args)
            .into_iter()
            .filter(|(k, _)| k.starts_with("batchnorm") || k.starts_with("groupnorm"))
            .collect();
        assert!(norms.len() >= 4 * 19, "{args:?}: {norms:?}");
        let small: Vec<_> = norms.iter().filter(|(_, wg)| *wg < 256).collect();
        assert!(
            small.is_empty(),
            "{args:?}: under 256 workgroups: {small:?}"
        );
    }
}

/// `info --dispatches`: a step's dispatches planned on the modeled H100 (no
/// device), one row each under one header, the conv FLOPs those of the
/// network (3 passes x 2 x FMAs of each conv), and ResNet-50 at 224 planned
/// at batch 256, whose stem and bottlenecks no CPU adapter's binding
/// limits allow.
#[test]
fn info_dispatches_reports_every_dispatch_of_a_step_on_a_modeled_gpu() {
    let (ok, out, err) = run(&["info", "--dispatches", "--model", "resnet20"]);
    assert!(ok, "{err}");
    let mut lines = out.lines().skip_while(|l| !l.starts_with("dispatch "));
    let header = lines.next().unwrap_or_default();
    for column in [
        "kernel",
        "wg",
        "workgroups",
        "GFLOP",
        "MB read",
        "FMA/Bwg",
        "bound us",
    ] {
        assert!(header.contains(column), "{header}");
    }
    let rows: Vec<&str> = lines.take_while(|l| !l.starts_with("step: ")).collect();
    let step = out.lines().find(|l| l.starts_with("step: ")).unwrap();
    assert!(
        step.starts_with(&format!("step: {} dispatches", rows.len())),
        "{step}"
    );
    assert!(
        rows.iter()
            .any(|r| r.starts_with("layer1.0.bn1 train_stats")),
        "{out}"
    );
    // The GPU's built-in kernels, not a CPU adapter's.
    assert!(rows.iter().any(|r| r.contains("(tiled64x64)")), "{out}");
    assert!(!out.contains("rows8"), "{out}");

    let (ok, out, err) = run(&[
        "info",
        "--dispatches",
        "--json",
        "--model",
        "resnet20",
        "--precision",
        "f16",
    ]);
    assert!(ok, "{err}");
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    let rows = report["dispatches"].as_array().unwrap();
    let conv_flops: f64 = rows
        .iter()
        .filter(|r| r["kernel"].as_str().unwrap().starts_with("conv"))
        .map(|r| r["flops"].as_f64().unwrap())
        .sum();
    // ResNet-20's convs multiply 40,550,400 pairs per image forward (stem
    // 16*3*9*1024, six 16*16*9*1024, 32*16*9*256 + five 32*32*9*256, 64*32*9*64
    // + five 64*64*9*64); a step runs each pass at 2 FLOPs per pair, three
    // passes per conv but the stem's two (it computes no input gradient).
    let (forward, stem) = (40_550_400.0, 16.0 * 3.0 * 9.0 * 1024.0);
    let expected = 2.0 * 128.0 * (3.0 * forward - stem);
    assert!(
        (conv_flops - expected).abs() < 1.0,
        "{conv_flops} vs {expected}"
    );
    // At f16 the modeled H100's convs run on its tensor cores: every pass
    // of the 19 convs (the stem's two).
    let coop = rows.iter().filter(|r| r["matrix_units"] == true).count();
    assert_eq!(coop, 3 * 19 - 1, "{out}");
    assert!(report["step_bound_s"].as_f64().unwrap() > 0.0);

    // Batch 512: the stem's 100,352 column blocks pass 65,535 and are folded
    // into y (before the folding, batch 334 was the most any GPU planned).
    for batch in ["256", "512"] {
        let args = [
            "info",
            "--dispatches",
            "--model",
            "resnet50",
            "--batch-size",
            batch,
        ];
        let (ok, out, err) = run(&args);
        assert!(ok, "{err}");
        assert!(
            out.contains(&format!("at batch {batch} on 224x224")),
            "{out}"
        );
        assert!(out.lines().any(|l| l.starts_with("conv1 forward")), "{out}");
    }
}

fn temp(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("resnet-wgpu-cli-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

#[test]
fn train_then_eval_a_checkpoint() {
    let out = temp("train");
    let out_s = out.to_str().unwrap();
    let data = ["--synthetic-train", "64", "--synthetic-test", "40"];
    let mut args = vec![
        "train",
        "--no-gui",
        "--model",
        "resnet8",
        "--batch-size",
        "32",
        "--epochs",
        "1",
    ];
    args.extend(data);
    args.extend(["--out", out_s, "--name", "r"]);
    let (ok, stdout, err) = run(&args);
    assert!(ok, "train failed: {err}");
    assert!(stdout.contains("done: test loss"), "{stdout}");
    let run_dir = out.join("r");
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run_dir.join("config.json")).unwrap())
            .unwrap();
    assert_eq!(config["model"]["name"], "resnet8");
    assert_eq!(config["batch_size"], 32);
    let line = std::fs::read_to_string(run_dir.join("metrics.jsonl")).unwrap();
    let m: serde_json::Value = serde_json::from_str(line.lines().next().unwrap()).unwrap();
    for key in [
        "epoch",
        "step",
        "train_loss",
        "train_acc",
        "test_loss",
        "test_acc",
        "lr",
        "images_per_sec",
        "elapsed_s",
    ] {
        assert!(m[key].is_number(), "{key} missing in {line}");
    }
    let ckpt = run_dir.join("checkpoints/step-00000002");
    assert!(ckpt.join("model.safetensors").is_file() && ckpt.join("trainer.safetensors").is_file());

    // eval agrees with the training run's own evaluation (40 images: a partial batch).
    let run_s = run_dir.to_str().unwrap();
    let mut args = vec![
        "eval",
        "--checkpoint",
        run_s,
        "--json",
        "--batch-size",
        "32",
    ];
    args.extend(data);
    let (ok, stdout, err) = run(&args);
    assert!(ok, "eval failed: {err}");
    let e: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(e["samples"], 40);
    let (loss, acc) = (e["loss"].as_f64().unwrap(), e["accuracy"].as_f64().unwrap());
    assert!(
        (loss - m["test_loss"].as_f64().unwrap()).abs() < 1e-5,
        "{e} vs {m}"
    );
    assert!(
        (acc - m["test_acc"].as_f64().unwrap()).abs() < 1e-6,
        "{e} vs {m}"
    );
}

#[test]
fn bad_flags_and_files_are_clear_errors() {
    // A torchvision download (the pickled version) is named as such.
    let pickled = std::path::Path::new("/tmp/resnet-wgpu-cli-pickled");
    std::fs::create_dir_all(pickled).unwrap();
    std::fs::write(pickled.join("data_batch_1"), b"pickle").unwrap();
    let cases: [(&[&str], &str); 27] = [
        (&["info", "--adapter", "99"], "--adapter 99: the"),
        (
            &["train", "--no-gui", "--norm", "group", "--groups", "3"],
            "--norm: group norm with 3 groups: layer bn1 has 16 channels; --groups must divide every layer's channels (here: divisors of 16)",
        ),
        (
            &["train", "--no-gui", "--checkpoint-every", "0"],
            "--checkpoint-every",
        ),
        (
            &["train", "--no-gui", "--checkpoint-every", "0m"],
            "--checkpoint-every",
        ),
        (&["train", "--no-gui", "--model", "resnet21"], "resnet21"),
        (&["train", "--no-gui", "--batch-size", "0"], "--batch-size"),
        (&["train", "--no-gui", "--dataset", "cifar10"], "--data"),
        (
            &["train", "--no-gui", "--data", "/nonexistent/cifar"],
            "/nonexistent/cifar: no such folder",
        ),
        (
            &["train", "--no-gui", "--synthetic-train", "10"],
            "fewer than one batch",
        ),
        (
            &["eval", "--checkpoint", "/nonexistent/run"],
            "/nonexistent/run",
        ),
        (
            &["train", "--no-gui", "--init", "/nonexistent/w.safetensors"],
            "/nonexistent/w.safetensors: no such file or folder",
        ),
        (&["eval", "--checkpoint", "/"], "is neither a run folder"),
        // Zero and huge numbers are refused by name (they divided by zero,
        // aborted an allocation or wrapped the step count).
        // A negative number reaches the bound check that names the flag
        // (it was "unexpected argument '-0' found").
        (
            &["train", "--no-gui", "--lr", "-0.1"],
            "--lr must be a positive number, got -0.1",
        ),
        (
            &["train", "--no-gui", "--momentum", "-1"],
            "--momentum must be in [0, 1), got -1",
        ),
        (&["train", "--no-gui", "--name", ""], "--name"),
        (&["train", "--no-gui", "--name", "../.."], "--name"),
        (&["train", "--no-gui", "--name", "a/b"], "--name"),
        (&["info", "--image-size", "0"], "--image-size"),
        (&["info", "--batch-size", "0"], "--batch-size"),
        (&["bench", "ops", "--wg-n", "0"], "--wg-n"),
        (&["bench", "ops", "--gemm-size", "200000"], "--gemm-size"),
        (&["bench", "ops", "--batch", "100000000"], "--batch"),
        (&["bench", "train", "--batch-size", "0"], "--batch-size"),
        // More invocations than the adapter allows: named (it hung lavapipe,
        // or gave a raw wgpu validation dump).
        (
            &[
                "bench", "ops", "--wg-n", "256", "--wg-m", "256", "--batch", "2",
            ],
            "--wg-n 256 x --wg-m 256",
        ),
        (
            &["bench", "train", "--batch-size", "10000000"],
            "--batch-size",
        ),
        (
            &[
                "train",
                "--no-gui",
                "--epochs",
                "2305843009213693952",
                "--max-steps",
                "2",
            ],
            "--epochs",
        ),
        (
            &[
                "train",
                "--no-gui",
                "--data",
                "/tmp/resnet-wgpu-cli-pickled",
            ],
            "Python (pickle) version",
        ),
    ];
    for (args, expect) in cases {
        let (ok, _, err) = run(args);
        assert!(!ok, "{args:?} succeeded");
        assert!(err.contains(expect), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{args:?} panicked: {err}");
        // Each cause once: no "x: y: y".
        let parts: Vec<&str> = err.trim().split(": ").collect();
        assert!(
            parts.windows(2).all(|w| w[0] != w[1]),
            "{args:?} repeats its cause: {err}"
        );
    }
}

#[test]
fn bench_train_prints_images_per_second() {
    let (ok, out, err) = run(&[
        "bench",
        "train",
        "--models",
        "resnet8",
        "--batch-size",
        "8",
        "--steps",
        "1",
        "--gemm-size",
        "64",
        "--precision",
        "f32,f16",
    ]);
    assert!(ok, "bench failed: {err}");
    assert!(
        out.contains("yardstick: this project's best GEMM at 64x64x64"),
        "{out}"
    );
    // One row per precision, f32 then f16: model, precision, then the figures.
    let rows: Vec<&str> = out.lines().filter(|l| l.starts_with("resnet8")).collect();
    assert_eq!(rows.len(), 2, "{out}");
    for (line, precision) in rows.iter().zip(["f32", "f16"]) {
        let cells: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(cells[1], precision, "{line}");
        let images_per_sec: f64 = cells[5].parse().unwrap();
        let encode_ms: f64 = cells[7].parse().unwrap();
        let conv_gflops: f64 = cells[8].parse().unwrap();
        assert!(
            images_per_sec > 0.0 && encode_ms > 0.0 && conv_gflops > 0.0,
            "{line}"
        );
        assert!(cells[9].ends_with('%'), "{line}");
    }
    // The f16 plan holds half-size activations.
    let mib = |row: &str| {
        row.split_whitespace()
            .nth(2)
            .unwrap()
            .parse::<f64>()
            .unwrap()
    };
    assert!(mib(rows[1]) < mib(rows[0]), "{out}");
    // A row that fails is printed in its place and the others still run (an
    // f16 failure lost the f32 figures); the exit code says it failed.
    let out = binary()
        .args([
            "bench",
            "train",
            "--models",
            "resnet20,resnet8",
            "--batch-size",
            "8",
        ])
        .args(["--steps", "1", "--gemm-size", "0"])
        .env("RESNET_WGPU_MEMORY_LIMIT_MIB", "12")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{text}");
    assert!(text.contains("resnet20    f32 failed: "), "{text}");
    assert!(text.lines().any(|l| l.starts_with("resnet8 ")), "{text}");
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

/// Without a display the window says so in one line and the same run goes on
/// in the terminal.
#[test]
fn train_without_a_display_says_so_and_runs_in_the_terminal() {
    let out = temp("nodisplay");
    let output = binary()
        .args(["train", "--model", "resnet8", "--batch-size", "32"])
        .args([
            "--synthetic-train",
            "64",
            "--synthetic-test",
            "16",
            "--epochs",
            "1",
        ])
        .args(["--out", out.to_str().unwrap(), "--name", "r"])
        .env_remove("DISPLAY")
        .env_remove("WAYLAND_DISPLAY")
        .output()
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
    );
    assert!(output.status.success(), "{stderr}");
    let notes: Vec<&str> = stderr.lines().filter(|l| l.contains("no window")).collect();
    assert_eq!(notes.len(), 1, "{stderr}");
    assert!(
        notes[0].contains("no display") && notes[0].contains("--no-gui"),
        "{stderr}"
    );
    assert!(stdout.contains("done: test loss"), "{stdout}");
    assert!(out.join("r/checkpoints/last").is_file());
}

#[test]
fn bench_tune_caches_choices_that_training_then_uses() {
    // A cache folder of this test's own: the other tests expect none.
    let cache = temp("tune-cache");
    let with_cache = |args: &[&str]| {
        let out = binary()
            .env("RESNET_WGPU_CACHE_DIR", &cache)
            .args(args)
            .output()
            .unwrap();
        let text = |b: &[u8]| String::from_utf8_lossy(b).to_string();
        (out.status.success(), text(&out.stdout), text(&out.stderr))
    };
    let small = ["--batch-size", "2", "--image-size", "8"];
    let (ok, out, err) =
        with_cache(&[&["bench", "tune", "--models", "resnet8"], &small[..]].concat());
    assert!(ok, "bench tune failed: {err}");
    for candidate in [
        "rows8",
        "regtile",
        "tiled64x64",
        "tiled32x64",
        "tiled16x128",
    ] {
        assert!(out.contains(candidate), "{candidate} missing: {out}");
    }
    assert!(out.contains("loss sum of 2:"), "{out}");
    assert!(cache.join("kernel-choices.json").is_file());
    // Every conv pass and reduction of the same model now comes from the cache.
    let info = [
        &["--tune", "cached", "info", "--model", "resnet8"],
        &small[..],
    ]
    .concat();
    let (ok, out, err) = with_cache(&info);
    assert!(ok, "info failed: {err}");
    assert!(
        out.contains("passes measured now, 21 from the cache, 0 built-in"),
        "{out}"
    );
    assert!(!out.contains("(built-in)"), "{out}");
    // --tune off ignores it.
    let off = [&["--tune", "off", "info", "--model", "resnet8"], &small[..]].concat();
    let (_, out, _) = with_cache(&off);
    assert!(out.contains("0 from the cache, 21 built-in"), "{out}");
    let (ok, _, err) = run(&["--tune", "sometimes", "info"]);
    assert!(!ok && err.contains("--tune"), "{err}");
    let _ = std::fs::remove_dir_all(&cache);
}

#[test]
fn rust_log_shows_wgpus_records() {
    let out = binary()
        .arg("info")
        .env("RUST_LOG", "wgpu_hal=debug")
        .output()
        .unwrap();
    assert!(out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("wgpu_hal"), "{err}");
}

#[test]
fn predict_agrees_with_eval_on_the_runs_own_test_images() {
    let out = temp("predict");
    let (ok, _, err) = run(&[
        "train",
        "--no-gui",
        "--model",
        "resnet8",
        "--batch-size",
        "32",
        "--epochs",
        "2",
        "--synthetic-train",
        "64",
        "--synthetic-test",
        "24",
        "--out",
        out.to_str().unwrap(),
        "--name",
        "r",
    ]);
    assert!(ok, "train failed: {err}");
    let run_dir = out.join("r");
    // The run's test images as PNG files (lossless, already 32x32).
    let data = resnet_wgpu::data::synthetic(resnet_wgpu::data::SyntheticOptions {
        train: 64,
        test: 24,
        seed: 0,
    });
    let mut files = vec![];
    for i in 0..data.test.len() {
        let chw = data.test.image(i);
        let picture = image::RgbImage::from_fn(32, 32, |x, y| {
            let at = |c: usize| chw[c * 1024 + y as usize * 32 + x as usize];
            image::Rgb([at(0), at(1), at(2)])
        });
        let file = out.join(format!("{i}.png"));
        picture.save(&file).unwrap();
        files.push(file.to_str().unwrap().to_string());
    }
    let mut args = vec![
        "predict",
        "--json",
        "--top",
        "3",
        "--checkpoint",
        run_dir.to_str().unwrap(),
    ];
    args.extend(files.iter().map(String::as_str));
    let (ok, stdout, err) = run(&args);
    assert!(ok, "predict failed: {err}");
    let predictions: Vec<serde_json::Value> = serde_json::from_str(&stdout).unwrap();
    assert_eq!(predictions.len(), 24);
    let mut correct = 0;
    for (p, &label) in predictions.iter().zip(&data.test.labels) {
        let top = p["top"].as_array().unwrap();
        assert_eq!(top.len(), 3);
        let probs: Vec<f64> = top
            .iter()
            .map(|c| c["probability"].as_f64().unwrap())
            .collect();
        assert!(probs.windows(2).all(|w| w[0] >= w[1]) && probs.iter().sum::<f64>() <= 1.0 + 1e-6);
        if top[0]["class"] == data.test.class_names[label as usize] {
            correct += 1;
        }
    }
    let (ok, stdout, err) = run(&["eval", "--json", "--checkpoint", run_dir.to_str().unwrap()]);
    assert!(ok, "eval failed: {err}");
    let e: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    let accuracy = e["accuracy"].as_f64().unwrap();
    assert!(
        (correct as f64 / 24.0 - accuracy).abs() < 1e-6,
        "{correct}/24 vs {accuracy}"
    );
    // Plain output names each image with its classes.
    let (ok, stdout, _) = run(&[
        "predict",
        "--checkpoint",
        run_dir.to_str().unwrap(),
        &files[0],
    ]);
    assert!(
        ok && stdout.contains("0.png: ") && stdout.contains('%'),
        "{stdout}"
    );
    // --data picks other data for eval, even for a run on the built-in set
    // (it was ignored: the run's own data was evaluated without a word).
    let run_s = run_dir.to_str().unwrap();
    let (ok, _, err) = run(&[
        "eval",
        "--checkpoint",
        run_s,
        "--data",
        "/nonexistent/other",
    ]);
    assert!(!ok && err.contains("/nonexistent/other"), "{err}");
    let folder = jpeg_folder("eval-other", 4);
    let (ok, _, err) = run(&[
        "eval",
        "--checkpoint",
        run_s,
        "--data",
        folder.to_str().unwrap(),
    ]);
    assert!(
        !ok && err.contains("2 classes"),
        "evaluated the run's own data: {err}"
    );
    let _ = std::fs::remove_dir_all(folder);
    // An image size of 0 or 100000 in the file's metadata is refused, naming
    // the file (it divided by zero or aborted an allocation).
    let last = std::fs::read_to_string(run_dir.join("checkpoints/last")).unwrap();
    let model = run_dir
        .join("checkpoints")
        .join(last.trim())
        .join("model.safetensors");
    for side in [0, 100_000] {
        let edited = out.join(format!("side-{side}.safetensors"));
        with_metadata(&model, &edited, "image_size", &format!("[{side},{side}]"));
        let (ok, _, err) = run(&[
            "predict",
            "--checkpoint",
            edited.to_str().unwrap(),
            &files[0],
        ]);
        assert!(!ok, "predict accepted image_size {side}");
        assert!(
            err.contains("image_size") && err.contains(edited.to_str().unwrap()),
            "{err}"
        );
        assert!(!err.contains("panicked"), "{err}");
    }
}

/// A copy of the safetensors file `from` at `to` with metadata `key` set to `value`.
fn with_metadata(from: &std::path::Path, to: &std::path::Path, key: &str, value: &str) {
    use safetensors::SafeTensors;
    let bytes = std::fs::read(from).unwrap();
    let (_, meta) = SafeTensors::read_metadata(&bytes).unwrap();
    let mut metadata = meta.metadata().clone().unwrap_or_default();
    metadata.insert(key.to_string(), value.to_string());
    let tensors = SafeTensors::deserialize(&bytes).unwrap();
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = tensors.tensors();
    std::fs::write(to, safetensors::serialize(views, Some(metadata)).unwrap()).unwrap();
}

/// Serves HTTP on 127.0.0.1 (for `download`), each request on a thread of its
/// own: reads the request's headers, then `respond` answers. Returns the
/// address.
fn serve_with(respond: impl Fn(&mut std::net::TcpStream) + Send + Sync + 'static) -> String {
    use std::io::{BufRead, BufReader};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = format!(
        "http://{}/cifar-10-binary.tar.gz",
        listener.local_addr().unwrap()
    );
    let respond = std::sync::Arc::new(respond);
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let respond = respond.clone();
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut line = String::new();
                while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
                    line.clear();
                }
                respond(&mut stream);
            });
        }
    });
    address
}

/// Serves `body` to every request.
fn serve(body: Vec<u8>) -> String {
    serve_with(move |stream| {
        use std::io::Write;
        let head = format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        );
        let _ = stream.write_all(head.as_bytes());
        let _ = stream.write_all(&body);
    })
}

/// Serves the first 10 KB of a 10 MB archive to every request, then stalls
/// with the connection open (a server or network that hangs mid-transfer).
fn serve_stalling() -> String {
    serve_with(|stream| {
        use std::io::Write;
        let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 10000000\r\n\r\n");
        let _ = stream.write_all(&[7u8; 10_000]);
        std::thread::sleep(std::time::Duration::from_secs(600));
    })
}

/// What a failed or interrupted download left in `to` (nothing, it must be).
fn leftovers(to: &std::path::Path) -> Vec<String> {
    std::fs::read_dir(to)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// Waits for `child` up to `seconds`; kills it and fails the test after.
fn exit_within(child: &mut std::process::Child, seconds: u64) -> std::process::ExitStatus {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(seconds);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("still running after {seconds} s");
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// A transfer that stalls gives up (it waited forever) and a stop signal
/// mid-transfer exits with the signal's code (Ctrl-C left the .part file);
/// neither leaves anything in --to. A --to that cannot be written is named
/// (it was curl's "(23)").
#[test]
fn a_stalled_or_interrupted_download_leaves_nothing_behind() {
    let url = serve_stalling();
    let to = temp("stall");
    let to_s = to.to_str().unwrap();
    let args = [
        "download", "cifar10", "--to", to_s, "--url", &url, "--md5", "0",
    ];
    let mut stalled = binary()
        .args(args)
        .args(["--stall-timeout", "2"])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let status = exit_within(&mut stalled, 60);
    let mut err = String::new();
    std::io::Read::read_to_string(&mut stalled.stderr.take().unwrap(), &mut err).unwrap();
    assert!(!status.success(), "a stalled download succeeded");
    assert!(err.contains(&url) && err.contains("stalled"), "{err}");
    assert!(leftovers(&to).is_empty(), "left {:?}", leftovers(&to));

    // Ctrl-C reaches the terminal's whole process group; SIGTERM one process.
    use std::os::unix::process::CommandExt;
    for (signal, number, group) in [("INT", 2, true), ("TERM", 15, false)] {
        let mut child = binary()
            .args(args)
            .process_group(0)
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let part = to.join("cifar-10-binary.tar.gz.part");
        let started = std::time::Instant::now();
        while std::fs::metadata(&part).map_or(true, |m| m.len() == 0) {
            assert!(
                started.elapsed().as_secs() < 30,
                "the transfer never started"
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        let target = if group {
            format!("-{}", child.id())
        } else {
            child.id().to_string()
        };
        let killed = Command::new("kill")
            .args([&format!("-{signal}"), "--", &target])
            .status()
            .unwrap();
        assert!(killed.success());
        let status = exit_within(&mut child, 30);
        assert_eq!(status.code(), Some(128 + number), "SIG{signal}: {status:?}");
        assert!(
            leftovers(&to).is_empty(),
            "SIG{signal} left {:?}",
            leftovers(&to)
        );
    }

    // A --to whose files cannot be created is named (curl said "(23)").
    let (ok, _, err) = run(&[
        "download",
        "cifar10",
        "--to",
        "/proc/self",
        "--url",
        &url,
        "--md5",
        "0",
    ]);
    assert!(
        !ok && err.contains("/proc/self/cifar-10-binary.tar.gz.part"),
        "{err}"
    );
    assert!(!err.contains("(23)"), "{err}");
    let _ = std::fs::remove_dir_all(&to);
}

#[test]
fn download_checks_unpacks_and_trains_from_a_local_server() {
    // A CIFAR-10-shaped archive: a few records in each binary file.
    let mut archive = tar::Builder::new(flate2::write::GzEncoder::new(
        Vec::new(),
        flate2::Compression::fast(),
    ));
    let record = |i: usize| {
        let mut r = vec![(i % 10) as u8];
        r.extend((0..3072).map(|p| ((p * 7 + i * 13) % 256) as u8));
        r
    };
    let files = [
        "data_batch_1",
        "data_batch_2",
        "data_batch_3",
        "data_batch_4",
        "data_batch_5",
        "test_batch",
    ];
    for name in files {
        let bytes: Vec<u8> = (0..8).flat_map(record).collect();
        let mut header = tar::Header::new_gnu();
        header.set_size(bytes.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        archive
            .append_data(
                &mut header,
                format!("cifar-10-batches-bin/{name}.bin"),
                &bytes[..],
            )
            .unwrap();
    }
    let gz = archive.into_inner().unwrap().finish().unwrap();
    let md5 = {
        use md5::Digest;
        format!("{:x}", md5::Md5::digest(&gz))
    };
    let url = serve(gz);
    let to = temp("download");
    let to_s = to.to_str().unwrap();

    // A wrong checksum: refused, and nothing that looks like data is left.
    let (ok, _, err) = run(&[
        "download",
        "cifar10",
        "--to",
        to_s,
        "--url",
        &url,
        "--md5",
        &"0".repeat(32),
    ]);
    assert!(!ok && err.contains("MD5"), "{err}");
    assert!(!to.join("cifar-10-batches-bin").exists());
    assert!(
        std::fs::read_dir(&to).unwrap().next().is_none(),
        "leftovers in {to:?}"
    );

    // An empty data folder (a mkdir, an unpack cut short by hand) is not
    // "downloaded": it was kept, and training on it failed.
    let folder = to.join("cifar-10-batches-bin");
    std::fs::create_dir_all(&folder).unwrap();
    let (ok, stdout, err) = run(&[
        "download", "cifar10", "--to", to_s, "--url", &url, "--md5", &md5,
    ]);
    assert!(ok, "download failed: {err}");
    assert!(
        folder.join("data_batch_1.bin").is_file(),
        "the empty folder was kept"
    );
    assert_eq!(stdout.trim(), folder.to_str().unwrap());
    // Recognised as CIFAR-10 without --dataset; one step trains on it.
    let (ok, stdout, err) = run(&[
        "train",
        "--no-gui",
        "--model",
        "resnet8",
        "--batch-size",
        "8",
        "--max-steps",
        "1",
        "--data",
        folder.to_str().unwrap(),
        "--out",
        to_s,
        "--name",
        "r",
    ]);
    assert!(ok, "train failed: {err}");
    assert!(stdout.contains("cifar10"), "{stdout}");
    // CIFAR data is normalized with the recipe's constants, three channels.
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(to.join("r/config.json")).unwrap()).unwrap();
    let mean: Vec<f64> = serde_json::from_value(config["augment"]["mean"].clone()).unwrap();
    let std: Vec<f64> = serde_json::from_value(config["augment"]["std"].clone()).unwrap();
    let close = |a: &[f64], b: &[f64]| {
        a.len() == b.len() && a.iter().zip(b).all(|(x, y)| (x - y).abs() < 1e-6)
    };
    assert!(close(&mean, &[0.4914, 0.4822, 0.4465]), "{mean:?}");
    assert!(close(&std, &[0.2023, 0.1994, 0.2010]), "{std:?}");
}

#[test]
fn normalize_picks_the_constants_and_bad_values_are_named() {
    let out = temp("normalize");
    let train = |name: &str, normalize: &[&str]| {
        let mut args = vec![
            "train",
            "--no-gui",
            "--model",
            "resnet8",
            "--batch-size",
            "8",
            "--max-steps",
            "1",
            "--synthetic-train",
            "16",
            "--synthetic-test",
            "8",
            "--out",
            out.to_str().unwrap(),
            "--name",
            name,
        ];
        args.extend_from_slice(normalize);
        run(&args)
    };
    let std_of = |name: &str| -> Vec<f64> {
        let text = std::fs::read_to_string(out.join(name).join("config.json")).unwrap();
        let config: serde_json::Value = serde_json::from_str(&text).unwrap();
        serde_json::from_value(config["augment"]["std"].clone()).unwrap()
    };
    let (ok, _, err) = train("imagenet", &["--normalize", "imagenet"]);
    assert!(ok, "{err}");
    assert_eq!(std_of("imagenet").len(), 3);
    assert!((std_of("imagenet")[0] - 0.229).abs() < 1e-6);
    let (ok, _, err) = train("values", &["--normalize", "0.5,0.5,0.5,0.25,0.25,0.25"]);
    assert!(ok, "{err}");
    assert!((std_of("values")[2] - 0.25).abs() < 1e-6);
    // The built-in set defaults to its own statistics (not a constant set).
    let (ok, _, err) = train("dataset", &[]);
    assert!(ok, "{err}");
    assert!(
        std_of("dataset")
            .iter()
            .all(|s| (s - 0.229).abs() > 1e-3 && (s - 0.2023).abs() > 1e-3)
    );
    for bad in ["cifar11", "1,2,3", "0.5,0.5,0.5,0,1,1"] {
        let (ok, _, err) = train("bad", &["--normalize", bad]);
        assert!(
            !ok && err.contains("--normalize") && err.contains(bad),
            "{bad}: {err}"
        );
    }
    // A query for a batch that does not fit answers and exits 0.
    let (ok, stdout, err) = run(&["info", "--model", "resnet50", "--batch-size", "64"]);
    assert!(ok, "{err}");
    assert!(
        stdout.contains("does not fit") && stdout.contains("largest batch that fits"),
        "{stdout}"
    );
}

#[test]
fn train_help_is_grouped_and_every_option_says_what_it_does() {
    let (ok, help, _) = run(&["train", "--help"]);
    assert!(ok);
    for heading in ["Model:", "Data:", "Recipe:", "Run:"] {
        assert!(help.contains(heading), "no {heading} in {help}");
    }
    for value in [
        "--data <DIR>",
        "--resume <DIR>",
        "--batch-size <N>",
        "--init <FILE>",
    ] {
        assert!(help.contains(value), "no {value} in {help}");
    }
    // Each option line is followed by its description (long help: indented text).
    let lines: Vec<&str> = help.lines().collect();
    for (i, line) in lines.iter().enumerate() {
        if line.trim_start().starts_with("--") {
            let next = lines.get(i + 1).map_or("", |l| l.trim());
            let described = !next.is_empty() && !next.starts_with("--") && !next.starts_with('[');
            assert!(described, "{line} has no help text");
        }
    }
}

/// An image folder of `per_class` copies of one small JPEG in each of two
/// classes (train/ and val/): many files, cheaply.
fn jpeg_folder(name: &str, per_class: usize) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("resnet-wgpu-cli-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut jpeg = std::io::Cursor::new(vec![]);
    image::RgbImage::from_fn(48, 40, |x, y| {
        image::Rgb([(x * 5) as u8, (y * 6) as u8, 90])
    })
    .write_to(&mut jpeg, image::ImageFormat::Jpeg)
    .unwrap();
    for (split, n) in [("train", per_class), ("val", 4)] {
        for class in ["x", "y"] {
            let d = dir.join(split).join(class);
            std::fs::create_dir_all(&d).unwrap();
            for i in 0..n {
                std::fs::write(d.join(format!("{i:06}.jpg")), jpeg.get_ref()).unwrap();
            }
        }
    }
    dir
}

fn peak_rss_mib(out: &str) -> f64 {
    out.lines()
        .find_map(|l| l.strip_prefix("peak RSS: "))
        .and_then(|v| v.trim_end_matches(" MiB").parse().ok())
        .unwrap_or_else(|| panic!("no peak RSS in {out}"))
}

/// `bench data` prints a row per worker count, and its memory does not grow
/// with the folder: 20,000 pictures take less than 100 MiB more than 2,000
/// (the index holds paths, not pixels).
#[test]
fn bench_data_rows_and_memory_independent_of_the_folder_size() {
    let small = jpeg_folder("bench-small", 1_000);
    let large = jpeg_folder("bench-large", 10_000);
    let bench = |dir: &std::path::Path| {
        let (ok, out, err) = run(&[
            "bench",
            "data",
            "--data",
            dir.to_str().unwrap(),
            "--workers",
            "1,2",
            "--image-size",
            "32",
            "--batch-size",
            "16",
            "--images",
            "128",
        ]);
        assert!(ok, "{err}");
        out
    };
    let out = bench(&small);
    assert!(out.contains("2000 training pictures indexed"), "{out}");
    let rows: Vec<Vec<&str>> = out
        .lines()
        .skip_while(|l| !l.contains("images/s"))
        .skip(1)
        .take(2)
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        rows.iter().map(|r| (r[0], r[1])).collect::<Vec<_>>(),
        [("folder", "1"), ("folder", "2")],
        "{out}"
    );
    assert!(
        rows.iter().all(|r| r[2].parse::<f64>().unwrap() > 0.0),
        "{out}"
    );
    let large_out = bench(&large);
    assert!(
        large_out.contains("20000 training pictures indexed"),
        "{large_out}"
    );
    let (a, b) = (peak_rss_mib(&out), peak_rss_mib(&large_out));
    assert!(
        b - a < 100.0,
        "peak RSS {a} MiB for 2,000 pictures, {b} MiB for 20,000"
    );
    for dir in [small, large] {
        let _ = std::fs::remove_dir_all(dir);
    }
}

/// `check` names each unreadable picture and fails; a clean folder passes.
#[test]
fn check_lists_unreadable_pictures() {
    let dir = jpeg_folder("check", 6);
    let (ok, out, err) = run(&["check", "--data", dir.to_str().unwrap()]);
    assert!(ok, "{out}{err}");
    assert!(
        out.contains("training set: 12 pictures, 0 unreadable"),
        "{out}"
    );
    std::fs::write(dir.join("val/y/000002.jpg"), b"truncated").unwrap();
    let (ok, out, err) = run(&["check", "--data", dir.to_str().unwrap()]);
    assert!(!ok, "{out}");
    assert!(out.contains("val/y/000002.jpg: "), "{out}");
    assert!(
        out.contains("evaluation set: 8 pictures, 1 unreadable"),
        "{out}"
    );
    assert!(err.contains("1 pictures cannot be read"), "{err}");
    let _ = std::fs::remove_dir_all(dir);
}

/// A headless run on an image folder trains from the pipeline: the data line,
/// the data wait in metrics.jsonl, a skipped corrupt file named in a warning
/// and counted; `eval` then evaluates it with the eval transform.
#[test]
fn a_folder_trains_through_the_pipeline_and_skips_a_bad_file() {
    let dir = jpeg_folder("train-folder", 12);
    std::fs::write(dir.join("train/x/000003.jpg"), b"\xff\xd8 broken").unwrap();
    let out_dir = std::env::temp_dir().join(format!(
        "resnet-wgpu-cli-folder-runs-{}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&out_dir);
    let (ok, out, err) = run(&[
        "train",
        "--no-gui",
        "--data",
        dir.to_str().unwrap(),
        "--model",
        "resnet8",
        "--image-size",
        "16",
        "--batch-size",
        "4",
        "--epochs",
        "2",
        "--workers",
        "2",
        "--out",
        out_dir.to_str().unwrap(),
        "--name",
        "run",
    ]);
    assert!(ok, "{out}\n{err}");
    assert!(
        out.contains("pictures decoded by 2 worker threads"),
        "{out}"
    );
    assert!(
        err.contains("indexed 24 training and 8 evaluation pictures in "),
        "{err}"
    );
    assert!(
        err.contains("skipped ") && err.contains("000003.jpg"),
        "{err}"
    );
    assert_eq!(err.matches("000003.jpg").count(), 1, "reported once: {err}");
    assert!(out.contains("skipped 1 unreadable pictures"), "{out}");
    let metrics = std::fs::read_to_string(out_dir.join("run/metrics.jsonl")).unwrap();
    let last: serde_json::Value = serde_json::from_str(metrics.lines().last().unwrap()).unwrap();
    assert!(last["data_wait_s"].as_f64().is_some(), "{last}");
    assert_eq!(last["skipped_files"], 1, "{last}");
    let config = std::fs::read_to_string(out_dir.join("run/config.json")).unwrap();
    assert!(
        config.contains("\"pad\": 0"),
        "an image folder's recipe has no crop padding: {config}"
    );
    let (ok, out, err) = run(&[
        "eval",
        "--checkpoint",
        out_dir.join("run").to_str().unwrap(),
        "--json",
    ]);
    assert!(ok, "{err}");
    let eval: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(eval["samples"], 8, "{eval}");
    for d in [dir, out_dir] {
        let _ = std::fs::remove_dir_all(d);
    }
}

/// `pack` writes a folder as shards that `check`, `bench data` and `train`
/// read as they read the folder (recognised without --dataset).
#[test]
fn packed_shards_check_bench_and_train() {
    let dir = jpeg_folder("pack", 10);
    let shards = dir.with_extension("shards");
    let _ = std::fs::remove_dir_all(&shards);
    let s = |p: &std::path::Path| p.to_str().unwrap().to_string();
    let (ok, out, err) = run(&[
        "pack",
        "--data",
        &s(&dir),
        "--out",
        &s(&shards),
        "--max-side",
        "32",
        "--shard-mib",
        "1",
    ]);
    assert!(ok, "{err}");
    assert!(out.contains("28 pictures in 2 shards"), "{out}");
    let (ok, out, err) = run(&["check", "--data", &s(&shards)]);
    assert!(ok, "{err}");
    assert!(
        out.contains("training set: 20 pictures, 0 unreadable"),
        "{out}"
    );
    let (ok, out, err) = run(&[
        "bench",
        "data",
        "--data",
        &s(&shards),
        "--workers",
        "1",
        "--image-size",
        "16",
        "--batch-size",
        "4",
        "--images",
        "8",
    ]);
    assert!(ok, "{err}");
    assert!(
        out.lines().any(|l| l.trim_start().starts_with("shards")),
        "{out}"
    );
    let runs = dir.with_extension("runs");
    let (ok, out, err) = run(&[
        "train",
        "--no-gui",
        "--data",
        &s(&shards),
        "--model",
        "resnet8",
        "--image-size",
        "16",
        "--batch-size",
        "4",
        "--max-steps",
        "3",
        "--out",
        &s(&runs),
        "--name",
        "r",
    ]);
    assert!(ok, "{out}\n{err}");
    assert!(out.contains("dataset: shards ("), "{out}");
    let config = std::fs::read_to_string(runs.join("r/config.json")).unwrap();
    assert!(config.contains("\"kind\": \"shards\""), "{config}");
    for d in [dir, shards, runs] {
        let _ = std::fs::remove_dir_all(d);
    }
}

/// Output into a closed pipe is dropped, never a panic: `info | head -c 10`
/// and a training run whose reader left both end normally, and the run
/// still writes its checkpoint.
#[test]
fn a_closed_stdout_neither_panics_nor_stops_a_run() {
    use std::process::Stdio;
    // The reader closes its end before the program writes.
    let closed = |args: &[&str]| {
        let mut child = binary()
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        drop(child.stdout.take());
        child.wait_with_output().unwrap()
    };
    let o = closed(&["info"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        o.status.success(),
        "info into a closed pipe: {:?} {err}",
        o.status
    );
    assert!(!err.contains("panicked"), "{err}");
    let out = std::env::temp_dir().join(format!("resnet-wgpu-cli-pipe-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    let o = closed(&[
        "train",
        "--no-gui",
        "--model",
        "resnet8",
        "--batch-size",
        "8",
        "--epochs",
        "1",
        "--synthetic-train",
        "32",
        "--synthetic-test",
        "8",
        "--out",
        out.to_str().unwrap(),
        "--name",
        "r",
    ]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        o.status.success(),
        "train into a closed pipe: {:?} {err}",
        o.status
    );
    assert!(
        out.join("r/checkpoints/last").exists(),
        "no checkpoint: {err}"
    );
    let _ = std::fs::remove_dir_all(out);
}

/// A path that is not a checkpoint is named itself: `--resume notes.txt`
/// named `<folder>/trainer.safetensors`, and `--init`, `eval` and `predict`
/// given a picture named `<folder>/model.safetensors`.
#[test]
fn a_file_that_is_not_a_checkpoint_is_named() {
    let dir = temp("not-a-checkpoint");
    std::fs::create_dir_all(&dir).unwrap();
    let notes = dir.join("notes.txt");
    std::fs::write(&notes, "not weights").unwrap();
    let picture = dir.join("cat.jpg");
    image::RgbImage::new(8, 8).save(&picture).unwrap();
    let (notes, picture) = (notes.to_str().unwrap(), picture.to_str().unwrap());
    let cases: [&[&str]; 5] = [
        &["train", "--no-gui", "--resume", notes],
        &["train", "--no-gui", "--init", picture],
        &["eval", "--checkpoint", notes],
        &["eval", "--checkpoint", picture],
        &["predict", "--checkpoint", picture, picture],
    ];
    for args in cases {
        let named = args[args.len() - 1];
        let (ok, _, err) = run(args);
        assert!(!ok, "{args:?} succeeded");
        assert!(err.contains(named), "{args:?}: {err}");
        assert!(
            !err.contains(".safetensors"),
            "{args:?} names another file: {err}"
        );
    }
    let _ = std::fs::remove_dir_all(dir);
}

/// An ImageNet ResNet at 32x32 ends in 1x1 maps, where one image gives batch
/// norm a single value per channel: predicting one picture (or eval with
/// --batch-size 1) failed with "batch norm in training needs more than 1
/// value per channel".
#[test]
fn one_picture_is_predicted_by_a_model_with_one_by_one_maps() {
    let folder = jpeg_folder("one-by-one", 2);
    let out = temp("one-by-one-runs");
    let (ok, _, err) = run(&[
        "train",
        "--no-gui",
        "--model",
        "resnet18",
        "--image-size",
        "32",
        "--batch-size",
        "2",
        "--max-steps",
        "1",
        "--data",
        folder.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--name",
        "r",
    ]);
    assert!(ok, "train failed: {err}");
    let run_dir = out.join("r");
    let picture = folder.join("val/x/000000.jpg");
    let (ok, stdout, err) = run(&[
        "predict",
        "--checkpoint",
        run_dir.to_str().unwrap(),
        picture.to_str().unwrap(),
    ]);
    assert!(ok, "predict failed: {err}");
    assert_eq!(stdout.lines().count(), 1, "{stdout}");
    let (ok, _, err) = run(&[
        "eval",
        "--checkpoint",
        run_dir.to_str().unwrap(),
        "--batch-size",
        "1",
    ]);
    assert!(ok, "eval failed: {err}");
    let _ = std::fs::remove_dir_all(folder);
    let _ = std::fs::remove_dir_all(out);
}

/// scripts/gpu-check.sh refuses a CPU adapter within seconds when a GPU is
/// expected (it benchmarked llvmpipe for an hour and printed ratios against
/// CUDA), naming the adapter it got and the loader's driver files. Only the
/// lavapipe driver is offered to the loader, so this holds on a GPU machine.
#[test]
fn gpu_check_refuses_a_cpu_adapter_when_a_gpu_is_expected() {
    let icd = std::fs::read_dir("/usr/share/vulkan/icd.d")
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.to_string_lossy().contains("lvp_icd"))
        .expect("mesa-vulkan-drivers' lavapipe ICD");
    let report = temp("gpu-check").with_extension("txt");
    let started = std::time::Instant::now();
    let out = Command::new("bash")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/gpu-check.sh"))
        .arg("--expect-gpu")
        .arg(env!("CARGO_BIN_EXE_resnet-wgpu"))
        .arg(&report)
        .env("VK_ICD_FILENAMES", &icd)
        .env_remove("VK_DRIVER_FILES")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(3), "{text}");
    assert!(
        started.elapsed().as_secs() < 60,
        "took {:?}",
        started.elapsed()
    );
    assert!(text.contains("measured adapter: llvmpipe"), "{text}");
    assert!(
        text.contains("error: wgpu picked a CPU adapter (llvmpipe"),
        "{text}"
    );
    assert!(text.contains("lvp_icd"), "{text}");
    assert!(!text.contains("bench"), "it went on measuring: {text}");
    let kept = std::fs::read_to_string(&report).unwrap();
    assert!(kept.contains("error: wgpu picked a CPU adapter"), "{kept}");
    let _ = std::fs::remove_file(report);
}

/// A build without MPI launched as one of several MPI processes refuses
/// (each copy would train alone and write the same run folder).
#[cfg(not(feature = "mpi"))]
#[test]
fn a_build_without_mpi_refuses_to_be_one_of_several_processes() {
    let out = binary()
        .args(["train", "--no-gui", "--max-steps", "1"])
        .env("OMPI_COMM_WORLD_SIZE", "2")
        .env("OMPI_COMM_WORLD_RANK", "0")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("launched as one of 2 MPI processes, but this build has no MPI"),
        "{err}"
    );
}
