//! Run-folder integrity with the real binary: two writers, kills at chosen
//! points of a checkpoint save (`RESNET_WGPU_CRASH_AT`), divergence, hostile
//! files and sizes beyond the adapter. Every case ends in one clear line or a
//! folder that resumes, never a panic or silently mixed data.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use resnet_wgpu::train::checkpoint::{StateDict, Values, write_safetensors};

/// ResNet-8 on 64 built-in images at batch 32: two steps per epoch.
const TINY: &[&str] = &[
    "--model",
    "resnet8",
    "--synthetic-train",
    "64",
    "--synthetic-test",
    "16",
    "--batch-size",
    "32",
    "--report-every",
    "1",
];

/// TINY with `extra` appended, minus the TINY flags that `extra` sets again.
fn tiny_with<'a>(extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec![];
    for pair in TINY.chunks(2) {
        if !extra.contains(&pair[0]) {
            args.extend_from_slice(pair);
        }
    }
    args.extend_from_slice(extra);
    args
}

fn binary() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_resnet-wgpu"));
    let cache = std::env::temp_dir().join(format!("resnet-wgpu-runs-cache-{}", std::process::id()));
    command.env("RESNET_WGPU_CACHE_DIR", cache);
    command
}

fn temp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("resnet-wgpu-runs-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// `train --no-gui` of TINY into `out/run` with `extra` flags (and env).
fn train(out: &Path, extra: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = binary();
    command
        .args(["train", "--no-gui", "--out"])
        .arg(out)
        .args(["--name", "run"])
        .args(tiny_with(extra));
    for (k, v) in env {
        command.env(k, v);
    }
    command.output().unwrap()
}

fn resume(out: &Path, from: &Path, extra: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = binary();
    command
        .args(["train", "--no-gui", "--out"])
        .arg(out)
        .args(tiny_with(extra))
        .arg("--resume")
        .arg(from);
    for (k, v) in env {
        command.env(k, v);
    }
    command.output().unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn assert_clear_failure(o: &Output, expect: &str) {
    let err = stderr(o);
    assert!(!o.status.success(), "succeeded; stderr: {err}");
    assert!(!err.contains("panicked"), "panicked: {err}");
    assert!(err.contains(expect), "expected '{expect}' in: {err}");
}

fn assert_ok(o: &Output) {
    assert!(o.status.success(), "failed: {}", stderr(o));
}

/// The steps of metrics.jsonl's records, in file order.
fn metric_steps(run: &Path) -> Vec<u64> {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap_or_default()
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            assert!(v["test_loss"].is_number(), "non-finite record: {l}");
            v["step"].as_u64().unwrap()
        })
        .collect()
}

fn last(run: &Path) -> String {
    std::fs::read_to_string(run.join("checkpoints/last")).unwrap_or_default()
}

#[test]
fn a_second_trainer_on_a_run_folder_is_refused_naming_the_holder() {
    let out = temp("two");
    let run = out.join("run");
    let mut first = binary()
        .args(["train", "--no-gui", "--out"])
        .arg(&out)
        .args(["--name", "run", "--seed", "1", "--epochs", "500"])
        .args(TINY)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while !run.join("config.json").is_file() {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "first trainer never started"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let second = train(&out, &["--seed", "2"], &[]);
    let resumed = resume(&out, &run, &[], &[]);
    first.kill().unwrap();
    first.wait().unwrap();
    let holder = format!("process {}", first.id());
    assert_clear_failure(&second, &holder);
    assert_clear_failure(&resumed, &holder);
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["seed"], 1, "the refused trainer wrote its config");
    // The lock went with the killed process: the run resumes.
    assert_ok(&resume(&out, &run, &["--max-steps", "2"], &[]));
}

#[test]
fn a_kill_during_the_first_checkpoint_leaves_a_run_that_resumes() {
    let out = temp("first-kill");
    let run = out.join("run");
    let crash = [("RESNET_WGPU_CRASH_AT", "checkpoint-renamed")];
    let killed = train(&out, &["--epochs", "2"], &crash);
    assert!(!killed.status.success());
    assert!(run.join("checkpoints/step-00000002").is_dir() && last(&run).is_empty());
    // Not a new run under that name...
    assert_clear_failure(&train(&out, &["--epochs", "2"], &[]), "--resume");
    // ...but one that resumes from its newest complete checkpoint.
    let resumed = resume(&out, &run, &[], &[]);
    assert_ok(&resumed);
    assert!(
        stderr(&resumed).contains("newest complete checkpoint"),
        "{}",
        stderr(&resumed)
    );
    assert_eq!(last(&run), "step-00000004");
    assert_eq!(metric_steps(&run), [2, 4]);
}

#[test]
fn a_kill_while_replacing_a_rewound_step_keeps_a_checkpoint_in_place() {
    let out = temp("rewind");
    let run = out.join("run");
    assert_ok(&train(&out, &["--epochs", "2"], &[]));
    let older = run.join("checkpoints/step-00000002");
    let crash = [("RESNET_WGPU_CRASH_AT", "old-moved-aside")];
    let killed = resume(&out, &older, &[], &crash);
    assert!(!killed.status.success(), "{}", stderr(&killed));
    assert!(
        !run.join("checkpoints/step-00000004").exists(),
        "the crash point moved it aside"
    );
    // The next start puts the old folder back; `last` names a real checkpoint.
    let resumed = resume(&out, &run, &[], &[]);
    assert_ok(&resumed);
    assert!(
        stderr(&resumed).contains("restored"),
        "{}",
        stderr(&resumed)
    );
    assert_eq!(last(&run), "step-00000004");
    assert!(
        run.join("checkpoints/step-00000004/model.safetensors")
            .is_file()
    );
    let names: Vec<String> = std::fs::read_dir(run.join("checkpoints"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        names.iter().all(|n| !n.starts_with('.')),
        "stale entries left: {names:?}"
    );
}

#[test]
fn a_kill_between_the_metrics_line_and_its_checkpoint_adds_no_duplicate() {
    let out = temp("dup");
    let run = out.join("run");
    assert_ok(&train(&out, &["--epochs", "1"], &[]));
    let crash = [("RESNET_WGPU_CRASH_AT", "checkpoint-written")];
    let killed = resume(&out, &run, &["--epochs", "2"], &crash);
    assert!(!killed.status.success());
    assert_eq!(
        metric_steps(&run),
        [2, 4],
        "the epoch line is written before its checkpoint"
    );
    assert_ok(&resume(&out, &run, &["--epochs", "2"], &[]));
    assert_eq!(metric_steps(&run), [2, 4]);
}

#[test]
fn a_diverging_run_never_keeps_a_non_finite_checkpoint() {
    let out = temp("diverge");
    let run = out.join("run");
    let o = train(&out, &["--lr", "1e9", "--epochs", "20"], &[]);
    assert_clear_failure(&o, "training stopped");
    // Whatever was kept is finite, and every metrics record has finite losses.
    metric_steps(&run);
    if let Ok(dir) = std::fs::read_to_string(run.join("checkpoints/last")) {
        let dict =
            StateDict::read(&run.join("checkpoints").join(dir).join("model.safetensors")).unwrap();
        for (name, (_, v)) in &dict.tensors {
            assert!(v.iter().all(|x| x.is_finite()), "{name} is not finite");
        }
    }
}

/// A finished tiny run to doctor.
fn finished_run(name: &str) -> (PathBuf, PathBuf) {
    let out = temp(name);
    assert_ok(&train(&out, &["--epochs", "1"], &[]));
    let ckpt = out.join("run/checkpoints/step-00000002");
    (out, ckpt)
}

/// Rewrites one safetensors file of a checkpoint through `edit`.
fn doctor(file: &Path, edit: impl FnOnce(&mut StateDict)) {
    let mut dict = StateDict::read(file).unwrap();
    edit(&mut dict);
    let tensors: Vec<(String, Vec<usize>, Values)> = dict
        .tensors
        .iter()
        .map(|(k, (s, v))| (k.clone(), s.clone(), Values::F32(v.clone())))
        .collect();
    write_safetensors(file, &tensors, dict.metadata.clone()).unwrap();
}

fn eval(checkpoint: &Path) -> Output {
    binary()
        .args([
            "eval",
            "--json",
            "--synthetic-train",
            "64",
            "--synthetic-test",
            "16",
            "--checkpoint",
        ])
        .arg(checkpoint)
        .output()
        .unwrap()
}

#[test]
fn values_read_from_disk_are_checked_like_flags() {
    let (out, ckpt) = finished_run("hostile");
    let model = ckpt.join("model.safetensors");
    let trainer = ckpt.join("trainer.safetensors");
    let edit_json = |file: &Path, key: &str, field: &str, value: serde_json::Value| {
        doctor(file, |d| {
            let mut v: serde_json::Value = serde_json::from_str(&d.metadata[key]).unwrap();
            v[field] = value;
            d.metadata.insert(key.into(), v.to_string());
        })
    };
    let pristine = |f: &Path| std::fs::read(f).unwrap();
    let (model_bytes, trainer_bytes) = (pristine(&model), pristine(&trainer));
    let restore = || {
        std::fs::write(&model, &model_bytes).unwrap();
        std::fs::write(&trainer, &trainer_bytes).unwrap();
    };

    edit_json(&model, "model", "name", "resnet21".into());
    assert_clear_failure(&eval(&ckpt), "resnet21");
    restore();

    edit_json(&trainer, "config", "batch_size", 0.into());
    assert_clear_failure(&resume(&out, &ckpt, &[], &[]), "--batch-size");
    restore();

    edit_json(&trainer, "progress", "step_in_epoch", 1000.into());
    assert_clear_failure(&resume(&out, &ckpt, &[], &[]), "does not fit");
    restore();

    // A data flag that picks other data than the run's is refused, named.
    let fewer = resume(&out, &ckpt, &["--synthetic-train", "32"], &[]);
    assert_clear_failure(&fewer, "--synthetic-train 32 (the run has 64)");
    restore();

    doctor(&model, |d| {
        d.tensors.get_mut("conv1.weight").unwrap().1[3] = f32::NAN
    });
    assert_clear_failure(&eval(&ckpt), "'conv1.weight' holds NaN");
    restore();

    // NaN momenta are damage in the checkpoint, named as such (one step
    // later the run blamed --lr and called this "the last good checkpoint").
    doctor(&trainer, |d| {
        d.tensors.get_mut("conv1.weight.momentum_buffer").unwrap().1[0] = f32::NAN
    });
    let o = resume(&out, &ckpt, &["--epochs", "2"], &[]);
    assert_clear_failure(&o, "'conv1.weight.momentum_buffer' holds NaN");
    assert!(stderr(&o).contains("trainer.safetensors"), "{}", stderr(&o));
    restore();

    // A running variance that cannot be one is refused.
    doctor(&model, |d| {
        d.tensors.get_mut("bn1.running_var").unwrap().1[0] = -1.0
    });
    assert_clear_failure(&eval(&ckpt), "'bn1.running_var' holds a negative variance");
    restore();

    // Finite weights whose outputs are not: eval fails instead of printing null.
    doctor(&model, |d| {
        for v in d.tensors.get_mut("fc.weight").unwrap().1.iter_mut() {
            *v = 3e38;
        }
    });
    assert_clear_failure(&eval(&ckpt), "loss is");
    restore();

    // A schedule that disagrees with the run's epochs is named as such (it
    // said "--epochs must be 1 to 1000000, got 5" of a valid 5).
    edit_json(&trainer, "config", "epochs", 5.into());
    let o = resume(&out, &ckpt, &[], &[]);
    assert_clear_failure(&o, "schedule");
    assert!(!stderr(&o).contains("got 5"), "{}", stderr(&o));
    restore();

    // A model file without trainer.safetensors beside it is prepared by its
    // own metadata: a std of 0 there is refused, naming the file (it was
    // accepted).
    let lone = out.join("lone.safetensors");
    std::fs::copy(&model, &lone).unwrap();
    doctor(&lone, |d| {
        d.metadata.insert("std".into(), "[0.0,0.2,0.2]".into());
    });
    let o = eval(&lone);
    assert_clear_failure(&o, "lone.safetensors");
    assert!(stderr(&o).contains("std"), "{}", stderr(&o));

    // Without model metadata, eval builds the run's model (it built the
    // default ResNet-20 and suggested "--norm group"), and a lone file's
    // model is recognised from its tensors' names and shapes.
    doctor(&model, |d| {
        d.metadata.remove("model");
    });
    assert_ok(&eval(&ckpt));
    std::fs::copy(&model, &lone).unwrap();
    let o = eval(&lone);
    assert_ok(&o);
    assert!(stderr(&o).contains("resnet8"), "{}", stderr(&o));
    restore();

    // A transposed classifier is named as such, not as another class count.
    let init = out.join("transposed.safetensors");
    std::fs::copy(&model, &init).unwrap();
    doctor(&init, |d| {
        let (shape, v) = d.tensors.get_mut("fc.weight").unwrap();
        let (rows, cols) = (shape[0], shape[1]);
        let mut t = vec![0.0; v.len()];
        for r in 0..rows {
            for c in 0..cols {
                t[c * rows + r] = v[r * cols + c];
            }
        }
        *v = t;
        *shape = vec![cols, rows];
    });
    let new_out = temp("hostile-init");
    let o = train(&new_out, &["--init", init.to_str().unwrap()], &[]);
    assert_clear_failure(&o, "the classifier has fc.weight [64, 10]");
    assert!(
        !new_out.join("run").exists(),
        "a failed start left a run folder behind"
    );
}

#[test]
fn sizes_beyond_the_adapter_are_refused_with_what_fits() {
    // A plan over the memory cap: refused with the largest batch under it.
    let limit = [("RESNET_WGPU_MEMORY_LIMIT_MIB", "40")];
    let info = |batch: &str| {
        let o = binary()
            .args(["info", "--model", "resnet8", "--batch-size", batch])
            .env(limit[0].0, limit[0].1)
            .output()
            .unwrap();
        assert_ok(&o);
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    let report = info("1024");
    let fits: usize = report
        .split("the largest batch that fits is ")
        .nth(1)
        .and_then(|rest| rest.split(')').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no batch that fits in: {report}"));
    assert!(fits > 1 && fits < 1024, "{report}");
    assert!(!info(&fits.to_string()).contains("does not fit"));
    assert!(info(&(fits + 1).to_string()).contains("does not fit"));

    let cases: [(&[&str], &str); 5] = [
        (&["--model", "resnet18446744073709551614"], "resnet1202"),
        (
            &[
                "--dataset",
                "folder",
                "--data",
                "/tmp",
                "--image-size",
                "100000",
            ],
            "--image-size",
        ),
        (&["--crop-pad", "4294967295"], "--crop-pad"),
        (&["--max-steps", "0"], "--max-steps"),
        (&["--synthetic-train", "1000000000"], "--synthetic-train"),
    ];
    let out = temp("bounds");
    for (args, expect) in cases {
        assert_clear_failure(&train(&out, args, &[]), expect);
    }
    assert!(
        !out.join("run").exists(),
        "a refused start left a run folder behind"
    );
}

#[test]
fn a_tiny_batch_at_the_papers_rate_gets_a_warning() {
    let out = temp("tiny-batch");
    let o = binary()
        .args([
            "train",
            "--no-gui",
            "--model",
            "resnet8",
            "--batch-size",
            "8",
        ])
        .args([
            "--synthetic-train",
            "16",
            "--synthetic-test",
            "8",
            "--max-steps",
            "1",
            "--out",
        ])
        .arg(&out)
        .output()
        .unwrap();
    assert_ok(&o);
    assert!(
        stderr(&o).contains("linear scaling rule gives 0.0063"),
        "{}",
        stderr(&o)
    );
}

/// An image folder (recognised without --dataset): `train/` with `per_class`
/// 8x8 pictures in each of two classes, `val/` with two each.
fn image_folder(dir: &Path, per_class: usize) {
    for (split, n) in [("train", per_class), ("val", 2)] {
        for (class, colour) in [("dark", 40u8), ("light", 220u8)] {
            let d = dir.join(split).join(class);
            std::fs::create_dir_all(&d).unwrap();
            for i in 0..n {
                let shade = colour.wrapping_add(3 * i as u8);
                image::RgbImage::from_pixel(8, 8, image::Rgb([shade, shade, 255 - shade]))
                    .save(d.join(format!("{i}.png")))
                    .unwrap();
            }
        }
    }
}

#[test]
fn a_run_folder_carries_its_data_and_recipe() {
    let out = temp("self");
    let run = out.join("run");
    let data = out.join("pictures");
    image_folder(&data, 9);
    let data_s = data.to_str().unwrap().to_string();
    let first = [
        "--image-size",
        "8",
        "--batch-size",
        "6",
        "--crop-pad",
        "2",
        "--data",
        &data_s,
        "--epochs",
        "1",
    ];
    assert_ok(&train(&out, &first, &[]));
    let config = || -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(run.join("config.json")).unwrap()).unwrap()
    };
    assert_eq!(config()["source"]["kind"], "folder", "{}", config());
    // Three channels of the dataset's own statistics (not CIFAR data).
    assert_eq!(config()["augment"]["std"].as_array().unwrap().len(), 3);

    // eval with no data flags evaluates on the run's own validation set.
    let o = binary()
        .args(["eval", "--json", "--checkpoint"])
        .arg(&run)
        .output()
        .unwrap();
    assert_ok(&o);
    let e: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(e["samples"], 4, "{e}");

    // Flags that contradict the run are refused, each named.
    let plain = |extra: &[&str]| {
        binary()
            .args(["train", "--no-gui", "--resume"])
            .arg(&run)
            .args(extra)
            .output()
            .unwrap()
    };
    let o = plain(&["--lr", "0.5", "--batch-size", "64", "--model", "resnet56"]);
    for named in ["--lr 0.5", "--batch-size 64", "--model resnet56"] {
        assert_clear_failure(&o, named);
    }

    // The same data moved elsewhere resumes without data flags but --data;
    // config.json follows the extension.
    let moved = out.join("moved");
    std::fs::rename(&data, &moved).unwrap();
    assert_ok(&plain(&[
        "--data",
        moved.to_str().unwrap(),
        "--epochs",
        "2",
    ]));
    assert_eq!(config()["epochs"], 2);
    assert_eq!(config()["source"]["path"], moved.to_str().unwrap());

    // The folder shrank in place: refused by its content, not a panic.
    for class in ["dark", "light"] {
        for i in 3..9 {
            std::fs::remove_file(moved.join(format!("train/{class}/{i}.png"))).unwrap();
        }
    }
    let o = plain(&["--epochs", "3"]);
    assert_clear_failure(&o, "6 training and 4 test images");
}

#[cfg(unix)]
#[test]
fn ctrl_c_checkpoints_mid_epoch_and_the_run_resumes_from_there() {
    use std::io::{BufRead, BufReader};
    let out = temp("sigint");
    let run = out.join("run");
    // 8 steps per epoch; output to a pipe, as under nohup or CI.
    let mut child = binary()
        .args(["train", "--no-gui", "--out"])
        .arg(&out)
        .args(["--name", "run", "--epochs", "3"])
        .args(tiny_with(&["--synthetic-train", "256"]))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut seen = vec![];
    // Plain progress lines replace the bar when stdout is not a terminal.
    for line in lines.by_ref() {
        let line = line.unwrap();
        let progressed = line.starts_with("step ");
        seen.push(line);
        if progressed {
            break;
        }
    }
    let kill = |signal: &str| {
        Command::new("kill")
            .args([signal, &child.id().to_string()])
            .status()
            .unwrap()
    };
    assert!(kill("-INT").success());
    seen.extend(lines.map(|l| l.unwrap()));
    let status = child.wait().unwrap();
    let stdout = seen.join("\n");
    assert_eq!(status.code(), Some(130), "{stdout}");
    assert!(stdout.contains("stopped by signal 2"), "{stdout}");
    let saved = last(&run);
    let step: u64 = saved.trim_start_matches("step-").parse().unwrap();
    assert!(step > 0 && step < 24, "checkpoint {saved}");
    // Resumes from the interrupted step, and the epoch lines reach a pipe.
    let resumed = resume(
        &out,
        &run,
        &["--synthetic-train", "256", "--max-steps", "10"],
        &[],
    );
    assert_ok(&resumed);
    let stdout = String::from_utf8_lossy(&resumed.stdout);
    assert!(stdout.contains("epoch   1.00"), "{stdout}");
    assert_eq!(last(&run), "step-00000010");
}

#[test]
fn a_run_killed_before_its_first_checkpoint_starts_again() {
    let out = temp("no-checkpoint");
    let run = out.join("run");
    let killed = train(
        &out,
        &["--epochs", "1"],
        &[("RESNET_WGPU_CRASH_AT", "checkpoint-written")],
    );
    assert!(!killed.status.success());
    assert!(run.join("config.json").is_file() && last(&run).is_empty());
    let resumed = resume(&out, &run, &[], &[]);
    assert_ok(&resumed);
    assert!(
        stderr(&resumed).contains("no checkpoint yet"),
        "{}",
        stderr(&resumed)
    );
    assert_eq!(last(&run), "step-00000002");
    assert_eq!(metric_steps(&run), [2]);
}

#[test]
fn checkpoints_between_epochs_and_the_best_one_is_kept() {
    let out = temp("every");
    let run = out.join("run");
    // 4 steps per epoch, a checkpoint every 3 steps besides the epoch ends.
    let o = train(
        &out,
        &[
            "--synthetic-train",
            "128",
            "--epochs",
            "2",
            "--checkpoint-every",
            "3",
        ],
        &[],
    );
    assert_ok(&o);
    let steps: Vec<String> = std::fs::read_dir(run.join("checkpoints"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("step-"))
        .collect();
    let best = std::fs::read_to_string(run.join("checkpoints/best")).unwrap();
    let records: Vec<serde_json::Value> = std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    // The first of equals stays the best.
    let acc = |r: &serde_json::Value| r["test_acc"].as_f64().unwrap();
    let most = records.iter().map(acc).fold(f64::MIN, f64::max);
    let top = records.iter().find(|r| acc(r) == most).unwrap();
    let best_step = top["step"].as_u64().unwrap();
    assert_eq!(best, format!("step-{best_step:08}"), "{records:?}");
    // Newest two (8, and 7: three steps after the epoch end at 4) plus the best.
    for kept in ["step-00000008", "step-00000007", best.as_str()] {
        assert!(
            steps.iter().any(|s| s == kept),
            "{kept} missing from {steps:?}"
        );
    }
    assert!(steps.len() <= 3, "{steps:?}");
    let o = eval(&run.join("checkpoints/best"));
    assert_ok(&o);
}

/// A metrics record cut short by a full disk (a last line without its
/// newline) is the crash it is: a resume drops it, says so, and goes on;
/// garbage in the middle of the log is still refused, naming the line
/// (issue 25).
#[test]
fn a_torn_last_metrics_line_is_dropped_and_damage_in_the_middle_refused() {
    let out = temp("torn-metrics");
    assert_ok(&train(&out, &["--epochs", "1"], &[]));
    let run = out.join("run");
    let log = run.join("metrics.jsonl");
    let whole = std::fs::read_to_string(&log).unwrap();
    std::fs::write(&log, format!("{whole}{{\"epoch\": 2.0, \"st")).unwrap();
    let o = resume(&out, &run, &["--epochs", "2"], &[]);
    assert_ok(&o);
    assert!(stderr(&o).contains("torn"), "{}", stderr(&o));
    assert_eq!(metric_steps(&run), [2, 4]);
    let two = std::fs::read_to_string(&log).unwrap();
    std::fs::write(&log, format!("not json\n{two}")).unwrap();
    assert_clear_failure(
        &resume(&out, &run, &["--epochs", "3"], &[]),
        "metrics.jsonl line 1: not a metrics record",
    );
    let _ = std::fs::remove_dir_all(out);
}

/// `--checkpoint-every` is a run option saved with the run: a resume without
/// the flag keeps the cadence (it checkpointed only at epoch ends, issue 25).
#[test]
fn a_resume_keeps_the_checkpoint_cadence() {
    let out = temp("cadence");
    let first = [
        "--epochs",
        "2",
        "--checkpoint-every",
        "1",
        "--max-steps",
        "1",
    ];
    assert_ok(&train(&out, &first, &[]));
    let run = out.join("run");
    let config = std::fs::read_to_string(run.join("config.json")).unwrap();
    assert!(config.contains("checkpoint_every"), "{config}");
    assert_ok(&resume(&out, &run, &["--epochs", "2"], &[]));
    // Steps 2, 3 and 4 checkpointed (the newest two kept): step 3 is the
    // cadence's; epoch ends alone would have kept steps 2 and 4.
    assert!(
        run.join("checkpoints/step-00000003").is_dir(),
        "{:?}",
        std::fs::read_dir(run.join("checkpoints"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect::<Vec<_>>()
    );
    let _ = std::fs::remove_dir_all(out);
}

/// A resumed run runs the kernels it ran before, recorded in its folder's
/// kernel-choices.json (by cache key: pass, precision, shape, tuning, shader
/// hash), whatever the kernel cache says by then; a record made on another
/// adapter is set aside with a note.
#[test]
fn a_resumed_run_runs_the_kernels_it_ran() {
    let out = temp("kernels");
    assert_ok(&train(&out, &["--epochs", "1"], &[]));
    let run = out.join("run");
    let file = run.join("kernel-choices.json");
    let read = || -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap()
    };
    let mut record = read();
    let choices = record["choices"].as_object_mut().unwrap();
    assert!(
        choices.keys().any(|k| k.starts_with("batchnorm reduce")),
        "{choices:?}"
    );
    // As if the run had measured another kernel for one conv pass.
    let key = choices
        .iter()
        .find(|(k, v)| k.starts_with("conv forward f32") && *v == "rows8")
        .map(|(k, _)| k.clone())
        .expect("a rows8 forward pass in ResNet-8");
    choices.insert(key.clone(), "regtile".into());
    std::fs::write(&file, record.to_string()).unwrap();

    let o = resume(&out, &run, &["--epochs", "2"], &[]);
    assert_ok(&o);
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(stdout.contains("as the run ran them before"), "{stdout}");
    assert_eq!(read()["choices"][&key], "regtile");

    // Another adapter's record: chosen again for this one, said so.
    let mut record = read();
    record["adapter"] = "another adapter".into();
    std::fs::write(&file, record.to_string()).unwrap();
    let o = resume(&out, &run, &["--epochs", "3"], &[]);
    assert_ok(&o);
    assert!(
        stderr(&o).contains("records the kernels of another adapter"),
        "{}",
        stderr(&o)
    );
    assert_eq!(read()["choices"][&key], "rows8");
}
