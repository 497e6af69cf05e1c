//! The trainer end to end on the GPU: a tiny ResNet overfits, resume equals an
//! uninterrupted run, a diverging run stops and keeps its checkpoint, and a
//! batch too large for the adapter is refused with the batch that fits.

mod common;

use std::path::{Path, PathBuf};

use clap::Parser;
use resnet_wgpu::cli::TrainArgs;
use resnet_wgpu::data::{DataSplit, Dataset, SyntheticOptions, synthetic};
use resnet_wgpu::gpu::{GpuError, Precision};
use resnet_wgpu::model::{ModelSpec, ShortcutKind};
use resnet_wgpu::setting::Setting;
use resnet_wgpu::settings::RunSettings;
use resnet_wgpu::shapes::{ImageShape, SgdConfig};
use resnet_wgpu::train::checkpoint::{StateDict, Values, read_model, write_safetensors};
use resnet_wgpu::train::{EpochReport, Plan, PlanRequest, TrainEvent, Trainer};
use resnet_wgpu::{headless, run_folder};

use common::{metrics, shared_ctx};

#[derive(Parser)]
struct Args {
    #[command(flatten)]
    train: TrainArgs,
}

fn out_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("resnet-wgpu-train-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// Parses the `train` options exactly as the CLI does, into the core's
/// settings (whose messages then name flags, as the CLI's do).
fn train_args(out: &Path, extra: &str) -> RunSettings {
    resnet_wgpu::cli::name_settings_by_flags();
    let line = format!("t --out {} --name run {extra}", out.display());
    Args::try_parse_from(line.split_whitespace())
        .unwrap()
        .train
        .settings()
}

fn train(out: &Path, extra: &str) -> anyhow::Result<headless::RunSummary> {
    let args = train_args(out, extra);
    let (mut trainer, run_dir) = run_folder::prepare(shared_ctx(), &args)?;
    headless::run(&mut trainer, &run_dir, true)
}

const TINY: &str = "--model resnet8 --synthetic-test 32 --report-every 2";

/// The synthetic pictures at half size (2x2 average), so the test is quick.
fn half_size(d: &Dataset) -> Dataset {
    let (c, h, w) = (d.shape.channels, d.shape.height / 2, d.shape.width / 2);
    let mut images = vec![];
    for i in 0..d.len() {
        let img = d.image(i);
        for ch in 0..c {
            for y in 0..h {
                for x in 0..w {
                    let at = |dy: usize, dx: usize| {
                        u32::from(img[ch * 4 * h * w + (2 * y + dy) * 2 * w + 2 * x + dx])
                    };
                    images.push(((at(0, 0) + at(0, 1) + at(1, 0) + at(1, 1)) / 4) as u8);
                }
            }
        }
    }
    Dataset {
        images,
        labels: d.labels.clone(),
        shape: ImageShape {
            channels: c,
            height: h,
            width: w,
        },
        class_names: d.class_names.clone(),
        files: None,
    }
}

/// The built-in dataset at 16x16, for quick trainer tests.
fn half_size_synthetic(train: usize, test: usize, seed: u64) -> DataSplit {
    let full = synthetic(SyntheticOptions { train, test, seed });
    DataSplit {
        train: half_size(&full.train),
        test: half_size(&full.test),
        ..full
    }
}

#[test]
fn tiny_resnet_overfits_64_images() {
    let data = half_size_synthetic(64, 32, 9);
    let args = train_args(
        &out_dir("overfit"),
        &format!("{TINY} --batch-size 64 --epochs 40 --crop-pad 0 --no-flip --schedule constant"),
    );
    let run_dir = out_dir("overfit-run");
    std::fs::create_dir_all(&run_dir).unwrap();
    let mut trainer = Trainer::new(shared_ctx(), args.config(&data).unwrap(), data).unwrap();
    headless::run(&mut trainer, &run_dir, true).unwrap();
    let m = metrics(&run_dir);
    assert_eq!(m.len(), 40);
    let last = m.last().unwrap();
    assert_eq!(last.train_acc, 1.0, "{last:?}");
    assert!(
        m[0].train_loss > 10.0 * last.train_loss,
        "{:?} -> {last:?}",
        m[0]
    );
    for line in &m {
        assert!(line.images_per_sec > 0.0 && line.elapsed_s > 0.0);
    }
}

#[test]
fn resume_continues_the_same_curve() {
    // 3 steps per epoch; the interrupted run stops mid-epoch 2 (after step 4).
    let recipe =
        format!("{TINY} --synthetic-train 96 --batch-size 32 --epochs 3 --seed 5 --milestones 2");
    let whole = out_dir("whole");
    train(&whole, &recipe).unwrap();

    let split = out_dir("split");
    let first = train(&split, &format!("{recipe} --max-steps 4")).unwrap();
    assert!(first.checkpoint.unwrap().ends_with("step-00000004"));
    let resumed = train_args(
        &split,
        &format!(
            "{TINY} --synthetic-train 96 --resume {}",
            split.join("run").display()
        ),
    );
    let (mut trainer, run_dir) = run_folder::prepare(shared_ctx(), &resumed).unwrap();
    assert_eq!(trainer.progress().global_step, 4);
    headless::run(&mut trainer, &run_dir, true).unwrap();

    let a = metrics(&whole.join("run"));
    let b: Vec<EpochReport> = metrics(&split.join("run"))
        .into_iter()
        .filter(|m| m.step != 4)
        .collect();
    assert_eq!(a.len(), 3);
    assert_eq!(b.len(), 3);
    for (x, y) in a.iter().zip(&b) {
        assert_eq!(x.step, y.step);
        for (what, u, v) in [
            ("train loss", x.train_loss, y.train_loss),
            ("train acc", x.train_acc, y.train_acc),
            ("test loss", x.test_loss, y.test_loss),
            ("test acc", x.test_acc, y.test_acc),
            ("lr", x.lr, y.lr),
        ] {
            assert!(
                (u - v).abs() <= 1e-6 * u.abs().max(1.0),
                "step {}: {what} {u} vs {v}",
                x.step
            );
        }
    }
    let model = |dir: &Path| {
        StateDict::read(&dir.join("run/checkpoints/step-00000009/model.safetensors")).unwrap()
    };
    let (ma, mb) = (model(&whole), model(&split));
    assert_eq!(ma.tensors.len(), mb.tensors.len());
    for (name, (_, va)) in &ma.tensors {
        let vb = &mb.tensors[name].1;
        let worst = va
            .iter()
            .zip(vb)
            .map(|(p, q)| (p - q).abs())
            .fold(0.0, f32::max);
        assert!(worst <= 1e-6, "{name} differs by {worst}");
    }
    assert_eq!(ma.tensors["bn1.num_batches_tracked"].1, [9.0]);
}

/// Checkpoints are f32 at either precision, so a run may resume at the other
/// one when `--precision` is given (and keeps its own when it is not).
#[test]
fn resume_may_switch_precision() {
    let recipe = format!("{TINY} --synthetic-train 64 --batch-size 32 --epochs 2 --seed 6");
    let dir = out_dir("switch");
    train(&dir, &format!("{recipe} --max-steps 2")).unwrap();
    let run = dir.join("run");
    let resume = |extra: &str| {
        let line = format!(
            "{TINY} --synthetic-train 64 --resume {} {extra}",
            run.display()
        );
        let (trainer, _) = run_folder::prepare(shared_ctx(), &train_args(&dir, &line)).unwrap();
        trainer.config.precision
    };
    assert_eq!(resume(""), Precision::F32);
    let args = train_args(
        &dir,
        &format!(
            "{TINY} --synthetic-train 64 --resume {} --precision f16",
            run.display()
        ),
    );
    let (mut trainer, run_dir) = run_folder::prepare(shared_ctx(), &args).unwrap();
    assert_eq!(trainer.config.precision, Precision::F16);
    headless::run(&mut trainer, &run_dir, true).unwrap();
    drop((trainer, run_dir)); // the run folder's lock
    let last = metrics(&run).pop().unwrap();
    assert_eq!(last.step, 4);
    assert_eq!(last.loss_scale, Some(65536.0), "{last:?}");
    assert_eq!(resume(""), Precision::F16, "config.json follows the switch");
}

#[test]
fn diverging_run_stops_and_keeps_the_last_good_checkpoint() {
    let out = out_dir("nan");
    // Epoch 1 trains normally; at epoch 2 the rate jumps by 1e30.
    let e = train(
        &out,
        &format!("{TINY} --synthetic-train 64 --batch-size 32 --epochs 4 --lr 0.01 --milestones 1 --gamma 1e30"),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("loss became"), "{e}");
    assert!(e.contains("step-00000002"), "{e}");
    let last = std::fs::read_to_string(out.join("run/checkpoints/last")).unwrap();
    assert_eq!(last, "step-00000002");
    let kept =
        StateDict::read(&out.join("run/checkpoints/step-00000002/model.safetensors")).unwrap();
    assert!(
        kept.tensors
            .values()
            .all(|(_, v)| v.iter().all(|x| x.is_finite()))
    );
}

#[test]
fn too_large_a_batch_is_refused_with_the_batch_that_fits() {
    let ctx = shared_ctx();
    let net = ModelSpec::new("resnet8", ShortcutKind::A, 10)
        .unwrap()
        .network();
    let image = ImageShape {
        channels: 3,
        height: 32,
        width: 32,
    };
    let sgd = SgdConfig {
        momentum: 0.9,
        weight_decay: 0.0,
        nesterov: false,
    };
    let limit = ctx.max_binding_bytes();
    let fits = (limit / (16 * 32 * 32 * 4)) as usize;
    let request = PlanRequest {
        network: &net,
        batch: fits + 1,
        image,
        sgd: &sgd,
        tuning: Default::default(),
        precision: Default::default(),
    };
    let err = Plan::new(&ctx, request).err().unwrap();
    match &err {
        GpuError::BatchTooLarge {
            max_batch, tensor, ..
        } => {
            assert_eq!(*max_batch, fits);
            assert_eq!(tensor, "conv1 output");
        }
        other => panic!("expected BatchTooLarge, got {other}"),
    }
    assert!(
        err.to_string()
            .contains(&format!("largest batch that fits is {fits}")),
        "{err}"
    );
}

#[test]
fn resume_refuses_other_data_and_a_taken_run_name() {
    let out = out_dir("refuse");
    train(
        &out,
        &format!("{TINY} --synthetic-train 32 --batch-size 32 --epochs 1"),
    )
    .unwrap();
    let again = train(
        &out,
        &format!("{TINY} --synthetic-train 32 --batch-size 32 --epochs 1"),
    );
    assert!(again.unwrap_err().to_string().contains("--resume"));
    let other = train_args(
        &out,
        &format!(
            "{TINY} --synthetic-train 40 --resume {}",
            out.join("run").display()
        ),
    );
    let e = run_folder::prepare(shared_ctx(), &other)
        .err()
        .unwrap()
        .to_string();
    // Data flags that pick other data than the run's are refused, named.
    assert!(e.contains("--synthetic-train 40 (the run has 32)"), "{e}");
    // A folder for a run of the built-in set would be ignored: refused.
    let folder = train_args(
        &out,
        &format!(
            "{TINY} --synthetic-train 32 --data {} --resume {}",
            out.display(),
            out.join("run").display()
        ),
    );
    let e = run_folder::prepare(shared_ctx(), &folder)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("--data") && e.contains("built-in set"), "{e}");
    let missing = train_args(
        &out,
        &format!("{TINY} --resume {}", out.join("nothing").display()),
    );
    let e = run_folder::prepare(shared_ctx(), &missing)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("nothing"), "{e}");
}

#[test]
fn init_loads_a_state_dict_and_names_what_is_wrong() {
    // The golden fixture's initial ResNet-8 weights, as a state dict file.
    let fixture =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/golden_resnet8.safetensors");
    let dict = StateDict::read(&fixture).unwrap();
    let mut entries: Vec<(String, Vec<usize>, Values)> = dict
        .tensors
        .iter()
        .filter_map(|(k, (shape, v))| {
            Some((
                k.strip_prefix("init.")?.to_string(),
                shape.clone(),
                Values::F32(v.clone()),
            ))
        })
        .collect();
    let out = out_dir("init");
    std::fs::create_dir_all(&out).unwrap();
    let file = out.join("weights.safetensors");
    write_safetensors(&file, &entries, Default::default()).unwrap();

    let args = train_args(
        &out,
        &format!(
            "{TINY} --synthetic-train 32 --batch-size 32 --init {}",
            file.display()
        ),
    );
    let (trainer, _) = run_folder::prepare(shared_ctx(), &args).unwrap();
    for (name, _, values) in read_model(&trainer).unwrap() {
        let Values::F32(gpu) = values else { continue };
        assert_eq!(gpu, dict.tensors[&format!("init.{name}")].1, "{name}");
    }

    // Half-precision files (as hub weights often are) load, rounded.
    let rounded = |v: &[f32], f: fn(f32) -> f32| v.iter().map(|&x| f(x)).collect::<Vec<_>>();
    // (name, rounding to the type, storing as the type)
    type Half = (&'static str, fn(f32) -> f32, fn(Vec<f32>) -> Values);
    let halves: [Half; 2] = [
        ("f16", |x| half::f16::from_f32(x).to_f32(), Values::F16),
        ("bf16", |x| half::bf16::from_f32(x).to_f32(), Values::BF16),
    ];
    for (kind, round, store) in halves {
        let half_entries: Vec<(String, Vec<usize>, Values)> = entries
            .iter()
            .map(|(n, shape, v)| match v {
                Values::F32(v) => (n.clone(), shape.clone(), store(v.clone())),
                Values::I64(v) => (n.clone(), shape.clone(), Values::I64(v.clone())),
                _ => unreachable!("the fixture is f32"),
            })
            .collect();
        let half_file = out.join(format!("weights-{kind}.safetensors"));
        write_safetensors(&half_file, &half_entries, Default::default()).unwrap();
        let args = train_args(
            &out.join(kind),
            &format!(
                "{TINY} --synthetic-train 32 --batch-size 32 --init {}",
                half_file.display()
            ),
        );
        let (trainer, _) = run_folder::prepare(shared_ctx(), &args).unwrap();
        for (name, _, values) in read_model(&trainer).unwrap() {
            let Values::F32(gpu) = values else { continue };
            let want = rounded(&dict.tensors[&format!("init.{name}")].1, round);
            assert_eq!(gpu, want, "{kind} {name}");
        }
    }

    entries.retain(|(name, _, _)| name != "layer2.0.bn1.running_var");
    write_safetensors(&file, &entries, Default::default()).unwrap();
    let args = train_args(
        &out.join("second"),
        &format!(
            "{TINY} --synthetic-train 32 --batch-size 32 --init {}",
            file.display()
        ),
    );
    let e = run_folder::prepare(shared_ctx(), &args)
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("weights.safetensors") && e.contains("layer2.0.bn1.running_var"),
        "{e}"
    );
}

/// The `init.*` entries of a golden fixture written as a state dict file.
fn fixture_weights(fixture: &str, out: &Path) -> (PathBuf, StateDict) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(format!("tests/fixtures/golden_{fixture}.safetensors"));
    let dict = StateDict::read(&path).unwrap();
    let entries: Vec<(String, Vec<usize>, Values)> = dict
        .tensors
        .iter()
        .filter_map(|(k, (shape, v))| {
            let name = k.strip_prefix("init.")?.to_string();
            let values = if name.ends_with("num_batches_tracked") {
                Values::I64(vec![v[0] as i64])
            } else {
                Values::F32(v.clone())
            };
            Some((name, shape.clone(), values))
        })
        .collect();
    std::fs::create_dir_all(out).unwrap();
    let file = out.join(format!("{fixture}.safetensors"));
    write_safetensors(&file, &entries, Default::default()).unwrap();
    (file, dict)
}

/// PyTorch models with GroupNorm or with conv biases load with --init given
/// the matching flags, and without them the error names the flag.
#[test]
fn init_loads_group_norm_and_conv_bias_models_with_their_flags() {
    let out = out_dir("init-layers");
    let cases = [
        (
            "resnet8_groupnorm",
            "--shortcut b --norm group --groups 4",
            "--shortcut b",
            "add --norm group",
        ),
        ("resnet8_conv_bias", "--conv-bias", "", "add --conv-bias"),
    ];
    for (fixture, flags, without, hint) in cases {
        let (file, dict) = fixture_weights(fixture, &out);
        let init = format!(
            "{TINY} --synthetic-train 32 --batch-size 32 --init {}",
            file.display()
        );
        let args = train_args(&out.join(fixture), &format!("{init} {flags}"));
        let (trainer, _) = run_folder::prepare(shared_ctx(), &args).unwrap();
        for (name, _, values) in read_model(&trainer).unwrap() {
            let Values::F32(gpu) = values else { continue };
            assert_eq!(
                gpu,
                dict.tensors[&format!("init.{name}")].1,
                "{fixture} {name}"
            );
        }
        drop(trainer);
        let args = train_args(
            &out.join(format!("{fixture}-without")),
            &format!("{init} {without}"),
        );
        let e = run_folder::prepare(shared_ctx(), &args)
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains(hint), "{fixture}: {e}");
    }
}

/// The images of `d` whose class is in `keep`, relabelled 0.. in that order.
fn classes_of(d: &Dataset, keep: &[u32]) -> Dataset {
    let mut out = Dataset {
        images: vec![],
        labels: vec![],
        class_names: keep
            .iter()
            .map(|&k| d.class_names[k as usize].clone())
            .collect(),
        ..d.clone()
    };
    for i in 0..d.len() {
        if let Some(new) = keep.iter().position(|&k| k == d.labels[i]) {
            out.images.extend_from_slice(&d.image(i));
            out.labels.push(new as u32);
        }
    }
    out
}

/// Mixed precision trains as well as f32: ResNet-8 on two classes of the
/// built-in dataset (horizontal and vertical stripes at 16x16, about 380
/// training and 580 test images), the same recipe and seed, ends within one
/// point of test accuracy (measured on lavapipe: 98.6% and 98.4%). Two
/// classes a small model learns in a few epochs, so that both runs reach
/// their plateau within CI's time and the point measures precision, not where
/// in a noisy climb each run stopped (on three classes after 45 steps the two
/// runs stood at 84% and 66%, both still climbing). The f16 run records its
/// loss scale and skipped steps; the f32 run records neither.
#[test]
fn f16_reaches_the_f32_test_accuracy_within_one_point() {
    let recipe = "--model resnet8 --batch-size 32 --epochs 6 --seed 5 --lr 0.05 --crop-pad 0 \
                  --no-flip --schedule cosine --report-every 6";
    let full = half_size_synthetic(1920, 2880, 11);
    let keep = [6, 7];
    let data = DataSplit {
        train: classes_of(&full.train, &keep),
        test: classes_of(&full.test, &keep),
        ..full
    };
    let mut last = vec![];
    for precision in ["f32", "f16"] {
        let args = train_args(
            &out_dir(&format!("precision-{precision}")),
            &format!("{recipe} --precision {precision}"),
        );
        let run_dir = out_dir(&format!("precision-{precision}-run"));
        std::fs::create_dir_all(&run_dir).unwrap();
        let mut trainer =
            Trainer::new(shared_ctx(), args.config(&data).unwrap(), data.clone()).unwrap();
        headless::run(&mut trainer, &run_dir, true).unwrap();
        last.push(metrics(&run_dir).pop().unwrap());
    }
    let (f32_run, f16_run) = (&last[0], &last[1]);
    eprintln!("f32: {f32_run:?}\nf16: {f16_run:?}");
    assert!(f32_run.test_acc > 0.9, "the recipe must learn: {f32_run:?}");
    assert!(
        (f32_run.test_acc - f16_run.test_acc).abs() <= 0.01 + 1e-6,
        "f32 {:.1}% vs f16 {:.1}%",
        100.0 * f32_run.test_acc,
        100.0 * f16_run.test_acc
    );
    assert_eq!((f32_run.loss_scale, f32_run.skipped_steps), (None, None));
    let scale = f16_run.loss_scale.expect("f16 records its loss scale");
    assert!(
        scale >= 1.0 && scale.log2().fract() == 0.0,
        "a power of two: {scale}"
    );
    assert!(f16_run.skipped_steps.is_some());
}

#[test]
fn streamed_batches_train_exactly_like_a_resident_dataset() {
    let recipe = format!("{TINY} --synthetic-train 96 --batch-size 32 --epochs 1 --seed 4");
    let resident = out_dir("resident");
    train(&resident, &recipe).unwrap();
    let streamed = out_dir("streamed");
    train(&streamed, &format!("{recipe} --stream-data")).unwrap();
    let (a, b) = (
        metrics(&resident.join("run")),
        metrics(&streamed.join("run")),
    );
    assert_eq!(a.len(), 1);
    assert_eq!(
        (a[0].train_loss, a[0].test_loss, a[0].test_acc),
        (b[0].train_loss, b[0].test_loss, b[0].test_acc)
    );
}

#[test]
fn imagenet_models_train_a_step_and_checkpoint_torchvision_names() {
    for model in ["resnet18", "resnet50"] {
        let out = out_dir(model);
        let summary = train(
            &out,
            &format!(
                "--model {model} --batch-size 4 --synthetic-train 4 --synthetic-test 4 --epochs 1"
            ),
        )
        .unwrap();
        let report = summary.last.unwrap();
        assert!(
            report.train_loss.is_finite() && report.train_loss > 0.0,
            "{model}: {report:?}"
        );
        let dict = StateDict::read(&summary.checkpoint.unwrap().join("model.safetensors")).unwrap();
        let network = ModelSpec::new(model, ShortcutKind::B, 10)
            .unwrap()
            .network();
        for entry in network.state_entries() {
            assert_eq!(
                dict.tensors[&entry.name].0, entry.shape,
                "{model} {}",
                entry.name
            );
        }
        assert_eq!(dict.tensors["layer4.1.bn2.num_batches_tracked"].1, [1.0]);
    }
}

#[test]
fn captured_predictions_agree_with_the_evaluated_accuracy() {
    // 37 test images at batch 16: the last evaluation batch is partial.
    let data = half_size_synthetic(64, 37, 3);
    let labels = data.test.labels.clone();
    let args = train_args(
        &out_dir("predictions"),
        &format!("{TINY} --batch-size 16 --epochs 2 --schedule constant"),
    );
    let mut trainer = Trainer::new(shared_ctx(), args.config(&data).unwrap(), data).unwrap();
    trainer.capture_predictions();
    let mut evaluations = vec![];
    let mut predictions = vec![];
    while !(trainer.is_finished() && trainer.is_idle()) {
        trainer.submit_steps(usize::MAX);
        trainer.wait_for_gpu().unwrap();
        for event in trainer.poll().unwrap() {
            match event {
                TrainEvent::Epoch(e) => evaluations.push(e),
                TrainEvent::Predictions { step, predicted } => predictions.push((step, predicted)),
                _ => {}
            }
        }
    }
    assert_eq!(evaluations.len(), 2);
    assert_eq!(predictions.len(), 2);
    // Ten classes: top-5 says little and is not recorded.
    assert!(evaluations.iter().all(|e| e.test_top5.is_none()));
    for (e, (step, predicted)) in evaluations.iter().zip(&predictions) {
        assert_eq!(e.step, *step);
        assert_eq!(predicted.len(), labels.len());
        assert!(predicted.iter().all(|&p| p < 10));
        let right = predicted
            .iter()
            .zip(&labels)
            .filter(|(p, l)| **p == (**l))
            .count();
        let accuracy = right as f32 / labels.len() as f32;
        assert!(
            (accuracy - e.test_acc).abs() < 1e-6,
            "step {step}: predictions give {accuracy}, the GPU counted {}",
            e.test_acc
        );
    }
}

#[test]
fn parameter_arena_chunks_are_aligned_and_bounded() {
    use resnet_wgpu::train::ParamArena;
    let network = ModelSpec::new("resnet20", ShortcutKind::B, 10)
        .unwrap()
        .network();
    let params: Vec<_> = network
        .state_entries()
        .into_iter()
        .filter(|e| e.role.is_parameter())
        .collect();
    let (align, limit) = (256, 64 * 1024);
    let (slots, sizes) = ParamArena::layout(&network, align, limit);
    assert_eq!(slots.len(), params.len());
    assert!(sizes.len() > 1, "ResNet-20 does not fit one 64 KiB chunk");
    let mut ranges: Vec<(usize, u64, u64)> = vec![];
    for p in &params {
        let (chunk, offset) = slots[&p.name];
        let bytes = 4 * p.shape.iter().product::<usize>() as u64;
        assert_eq!(offset % align, 0, "{}", p.name);
        assert!(
            offset + bytes <= sizes[chunk] && sizes[chunk] <= limit.max(bytes),
            "{}",
            p.name
        );
        ranges.push((chunk, offset, offset + bytes));
    }
    ranges.sort();
    for pair in ranges.windows(2) {
        assert!(
            pair[0].0 != pair[1].0 || pair[0].2 <= pair[1].1,
            "overlap: {pair:?}"
        );
    }
}

#[test]
fn top5_accuracy_is_recorded_above_ten_classes() {
    // The built-in shapes under a 12-way classifier (two classes unused).
    let mut data = half_size_synthetic(64, 24, 5);
    let names: Vec<String> = (0..12).map(|c| format!("c{c}")).collect();
    data.train.class_names = names.clone();
    data.test.class_names = names;
    let run_dir = out_dir("top5");
    std::fs::create_dir_all(&run_dir).unwrap();
    let args = train_args(&run_dir, &format!("{TINY} --batch-size 32 --epochs 2"));
    let mut trainer = Trainer::new(shared_ctx(), args.config(&data).unwrap(), data).unwrap();
    headless::run(&mut trainer, &run_dir, true).unwrap();
    for e in metrics(&run_dir) {
        let (train, test) = (e.train_top5.unwrap(), e.test_top5.unwrap());
        assert!(test >= e.test_acc && test <= 1.0, "{e:?}");
        assert!(train >= e.train_acc && train <= 1.0, "{e:?}");
        // Five of twelve classes: even an untrained model hits some.
        assert!(test > 0.0, "{e:?}");
    }
}

/// A device with WebGPU's default limits (8 storage buffers per stage, 256
/// invocations, 16 KiB of workgroup storage, 128 MiB per binding), what a
/// browser may grant and no more, and the browser's features (no subgroups):
/// every kernel of a ResNet-20 plan and of a ResNet-18 plan at 224 builds
/// within them, with the CPU adapter's built-in kernels and with a GPU's.
#[test]
fn plans_build_within_webgpu_default_limits() {
    use resnet_wgpu::gpu::{GpuContext, TunePolicy};
    use resnet_wgpu::model::Norm;
    let instance =
        wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle().with_env());
    let adapter = pollster::block_on(instance.request_adapter(&Default::default()))
        .expect("GPU tests need an adapter");
    let features = adapter.features() & wgpu::Features::SHADER_F16;
    let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
        required_features: features,
        required_limits: wgpu::Limits::default(),
        ..Default::default()
    }))
    .unwrap();
    let ctx = std::sync::Arc::new(GpuContext::from_device(device, queue, adapter.get_info()));
    *ctx.choices.lock().unwrap() = resnet_wgpu::gpu::KernelChoices::in_memory(&ctx.adapter_info);
    assert_eq!(ctx.limits.max_storage_buffers_per_shader_stage, 8);
    let sgd = SgdConfig {
        momentum: 0.9,
        weight_decay: 1e-4,
        nesterov: false,
    };
    for policy in [TunePolicy::Off, TunePolicy::Gpu] {
        ctx.set_tune_policy(policy);
        let group_norm = Norm::Group { groups: 8 };
        for (model, norm, side, batch) in [
            ("resnet20", Norm::Batch, 32, 128),
            ("resnet20", group_norm, 32, 16),
            ("resnet18", Norm::Batch, 224, 8),
        ] {
            let spec = ModelSpec::new(model, ShortcutKind::B, 10).unwrap();
            let network = spec.with_layers(norm, false).unwrap().network();
            let request = PlanRequest {
                network: &network,
                batch,
                image: ImageShape {
                    channels: 3,
                    height: side,
                    width: side,
                },
                sgd: &sgd,
                tuning: Default::default(),
                precision: Precision::F32,
            };
            let plan = Plan::new(&ctx, request);
            assert!(
                plan.is_ok(),
                "{model} {norm} {policy:?}: {}",
                plan.err().unwrap()
            );
        }
        // The page's predictor: an evaluation plan, its feed and a logits copy.
        let card = resnet_wgpu::predict::ModelCard {
            spec: ModelSpec::new("resnet20", ShortcutKind::A, 10).unwrap(),
            side: 32,
            eval_crop: 1.0,
            mean: [0.5; 3],
            std: [0.25; 3],
            class_names: (0..10).map(|c| format!("class {c}")).collect(),
            assumed: None,
        };
        let mut predictor =
            resnet_wgpu::predict::Predictor::new(ctx.clone(), card, Precision::F32).unwrap();
        predictor.submit(&[128; 4 * 40 * 30], 40, 30).unwrap();
        assert_eq!(predictor.wait().unwrap().len(), 5, "{policy:?}");
    }
    ctx.check_uncaptured().unwrap();
}

/// The run policy without a front end (`RunDriver`, which the terminal and
/// the window both tick): with a checkpoint every step, each of the 4 steps
/// of a 2-epoch run is saved once (the epoch ends coincide with the timer's),
/// the run ends Finished; a stop asked mid-run writes its checkpoint and ends
/// Stopped.
#[test]
fn the_run_driver_checkpoints_on_its_timer_marks_the_best_stops_and_fails_on_divergence() {
    use resnet_wgpu::driver::{RunDriver, RunEvent, RunFiles, RunState};
    use resnet_wgpu::train::CheckpointEvery;
    let tiny = "--model resnet8 --batch-size 32 --synthetic-train 64 --synthetic-test 16";
    // Drives a run as every front end does (no window, no terminal loop):
    // tick, show nothing, wait for the GPU when ahead. Returns the final
    // state and the checkpoint folders written, in order.
    let drive = |out: &Path, flags: &str, stop_after: Option<usize>| {
        let args = train_args(out, &format!("{tiny} {flags}"));
        let (mut trainer, folder) = run_folder::prepare(shared_ctx(), &args).unwrap();
        let files = RunFiles::open(&folder).unwrap();
        let every = Some(CheckpointEvery::Steps(1));
        let mut driver = RunDriver::with_files(&trainer, files, every);
        let mut saved = vec![];
        while !driver.state.is_over() {
            for event in driver.tick(&mut trainer, 3).unwrap() {
                if let RunEvent::Saved(dir) = event {
                    saved.push(dir.file_name().unwrap().to_string_lossy().into_owned());
                }
            }
            if stop_after == Some(saved.len()) && driver.state == RunState::Running {
                driver.stop(&mut trainer);
            }
            if !trainer.is_idle() {
                trainer.wait_for_report().unwrap();
            }
        }
        (driver.state, saved)
    };
    let step = |n: u64| format!("step-{n:08}");

    // The cadence: a checkpoint after every step, the epoch ends included.
    let out = out_dir("driver");
    let (state, saved) = drive(&out, "--epochs 2", None);
    assert_eq!(state, RunState::Finished);
    assert_eq!(saved, (1..=4).map(step).collect::<Vec<_>>());
    // The best: the evaluation with the highest accuracy (the first of
    // equals) names its checkpoint, which pruning keeps.
    let records = metrics(&out.join("run"));
    assert_eq!(records.len(), 2, "{records:?}");
    let best = records
        .iter()
        .fold(None::<&EpochReport>, |b, r| match b {
            Some(b) if b.test_acc >= r.test_acc => Some(b),
            _ => Some(r),
        })
        .unwrap();
    let named = std::fs::read_to_string(out.join("run/checkpoints/best")).unwrap();
    assert_eq!(named, step(best.step));
    assert!(out.join("run/checkpoints").join(&named).is_dir());

    // A stop: the steps in flight finish, one more checkpoint, no more steps.
    let (state, saved) = drive(&out_dir("driver-stop"), "--epochs 2", Some(1));
    assert_eq!(state, RunState::Stopped);
    assert_eq!(saved.first(), Some(&step(1)));
    assert!(saved.len() < 4, "the stop did not stop: {saved:?}");

    // Divergence: two good epochs, then the rate jumps by 1e30. The run
    // fails in words, and no checkpoint after the last good one is kept.
    let out = out_dir("driver-nan");
    let flags = "--epochs 4 --lr 0.01 --milestones 2 --gamma 1e30";
    let (state, saved) = drive(&out, flags, None);
    let RunState::Failed(why) = &state else {
        panic!("a diverging run ended {state:?}");
    };
    assert!(why.contains("loss became") || why.contains("NaN"), "{why}");
    assert!(why.contains("lower learning rate"), "{why}");
    assert_eq!(saved[..4], (1..=4).map(step).collect::<Vec<_>>());
    let last = std::fs::read_to_string(out.join("run/checkpoints/last")).unwrap();
    assert_eq!(&last, saved.last().unwrap());
    let kept = StateDict::read(
        &out.join("run/checkpoints")
            .join(&last)
            .join("model.safetensors"),
    )
    .unwrap();
    assert!(
        kept.tensors
            .values()
            .all(|(_, v)| v.iter().all(|x| x.is_finite()))
    );
}

/// The rate the progress line, the window and the page show is timed by the
/// steps' completion on the GPU, not by when their metrics arrive: steps of
/// 1 s at batch 128 (128 images/s), an evaluation of 8 s after every 10th
/// step, a data stall of 0.5 s, a 30 s checkpoint pause, read at arbitrary
/// moments (reports come in pairs after long gaps): every reading after the
/// second step is within 20% of 128. Below 1 image/s the rate reads as
/// seconds per step.
#[test]
fn the_shown_rate_is_steady_over_bursty_reports_and_pauses() {
    use resnet_wgpu::train::{StepClock, format_rate};
    use std::time::Duration;
    let clock = StepClock::default();
    let t0 = web_time::Instant::now();
    let at = |s: f64| t0 + Duration::from_secs_f64(s);
    let mut now = 0.0;
    let mut readings = vec![];
    for step in 1..=40u64 {
        let submitted = now;
        if step == 6 {
            now += 0.5; // the GPU waited for data
        }
        if step == 26 {
            // The trainer wrote a checkpoint before submitting step 26.
            clock.pause_before(26);
            now += 30.0;
        }
        let submitted = if step == 26 { now } else { submitted };
        now += 1.0;
        clock.step_done(step, at(submitted), at(now));
        if step % 10 == 0 {
            now += 8.0; // the evaluation after the epoch
            clock.other_done(at(now));
        }
        // Reports arrive in pairs: read only every other step.
        if step % 2 == 0 && step > 2 {
            readings.push((step, clock.images_per_sec(128).unwrap()));
        }
    }
    for (step, rate) in &readings {
        assert!(
            (rate - 128.0).abs() <= 0.2 * 128.0,
            "step {step}: {rate} images/s"
        );
    }
    // The first step compiles the kernels: not counted.
    let fresh = StepClock::default();
    fresh.step_done(1, at(0.0), at(60.0));
    assert_eq!(fresh.images_per_sec(128), None);
    assert_eq!(format_rate(None, 16), "- img/s");
    assert_eq!(format_rate(Some(9.64), 16), "9.6 img/s");
    assert_eq!(format_rate(Some(16.0 / 1197.0), 16), "1197 s/step");
    assert_eq!(format_rate(Some(0.5), 1), "2.00 s/step");
}

/// What a `train` flag does on `--resume`.
enum OnResume {
    /// Refused, naming the flag.
    Refused,
    /// Taken, and kept in the run's config.json under this key with this value.
    Saved(&'static str, serde_json::Value),
    /// Taken: it picks where this process runs, not what the run is.
    ThisProcess,
}

/// A non-default value of `setting`'s flag and what `--resume` must do with
/// it (no wildcard: a new setting fails to compile here until it is placed).
fn on_resume(setting: Setting) -> (&'static str, OnResume) {
    use OnResume::*;
    use Setting::*;
    use serde_json::json;
    match setting {
        Model => ("--model resnet20", Refused),
        Shortcut => ("--shortcut b", Refused),
        Norm => ("--norm group --groups 4", Refused),
        Groups => ("--groups 4", Refused),
        ConvBias => ("--conv-bias", Refused),
        Dataset => ("--dataset cifar10", Refused),
        Data => ("--data .", Refused),
        Cifar100Labels => ("--cifar100-labels coarse", Refused),
        ImageSize => ("--image-size 32", Refused),
        SyntheticTrain => ("--synthetic-train 40", Refused),
        SyntheticTest => ("--synthetic-test 40", Refused),
        ValSplit => ("--val-split 8", Refused),
        Epochs => ("--epochs 3", Saved("epochs", json!(3))),
        BatchSize => ("--batch-size 16", Refused),
        Lr => ("--lr 0.5", Refused),
        Momentum => ("--momentum 0.5", Refused),
        WeightDecay => ("--weight-decay 0.001", Refused),
        Nesterov => ("--nesterov", Refused),
        Schedule => ("--schedule cosine", Refused),
        Milestones => ("--milestones 1", Refused),
        Gamma => ("--gamma 0.5", Refused),
        WarmupEpochs => ("--warmup-epochs 1", Refused),
        WarmupLr => ("--warmup-lr 0.5", Refused),
        CropPad => ("--crop-pad 2", Refused),
        Flip => ("--no-flip", Refused),
        Normalize => ("--normalize cifar", Refused),
        Seed => ("--seed 5", Refused),
        Init => ("--init weights.safetensors", Refused),
        Out => ("--out elsewhere", Refused),
        Name => ("--name other", Refused),
        // The resume itself: every case gives it.
        Resume => ("", ThisProcess),
        MaxSteps => ("--max-steps 3", Saved("max_steps", json!(3))),
        CheckpointEvery => (
            "--checkpoint-every 5",
            Saved("checkpoint_every", json!({"steps": 5})),
        ),
        ReportEvery => ("--report-every 3", Saved("report_every", json!(3))),
        StreamData => ("--stream-data", Saved("stream_data", json!(true))),
        Workers => ("--workers 2", Saved("workers", json!(2))),
        Precision => ("--precision f16", Saved("precision", json!("f16"))),
        // Global flags of the binary (not train's): they pick the device.
        Backend | Adapter => ("", ThisProcess),
    }
}

/// Every `train` flag with `--resume`: it applies (and is saved), or it
/// contradicts the run and is refused naming it; none is accepted and
/// ignored. A shorter `--epochs` is refused too (it used to be ignored).
#[test]
fn every_train_flag_on_resume_applies_or_is_refused() {
    let out = out_dir("resume-flags");
    let base = format!("{TINY} --synthetic-train 32 --batch-size 32 --epochs 2");
    train(&out, &base).unwrap();
    let run = out.join("run");
    let config = || -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(run.join("config.json")).unwrap()).unwrap()
    };
    let flags = resnet_wgpu::cli::FLAGS;
    let mut cases: Vec<(String, &str, OnResume)> = flags
        .iter()
        .map(|&(setting, flag)| {
            let (extra, expect) = on_resume(setting);
            (extra.to_string(), flag, expect)
        })
        .collect();
    cases.push(("--epochs 1".into(), "--epochs", OnResume::Refused));
    for (extra, flag, expect) in cases {
        resnet_wgpu::cli::name_settings_by_flags();
        let named = if flag == "--out" || flag == "--name" {
            String::new()
        } else {
            format!("--out {} --name run", out.display())
        };
        let line = format!("t {named} --resume {} {extra}", run.display());
        // The flags typed, as the binary records them (a typed flag that
        // equals its default still contradicts a run that differs).
        let typed = line.split_whitespace().filter(|w| w.starts_with("--"));
        let prepared = Args::try_parse_from(line.split_whitespace())
            .map_err(|e| anyhow::anyhow!("{e}"))
            .and_then(|mut a| {
                a.train.given = typed.map(str::to_string).collect();
                run_folder::prepare(shared_ctx(), &a.train.settings())
            });
        match (expect, prepared) {
            (OnResume::Refused, Err(e)) => {
                let e = format!("{e:#}");
                assert!(
                    e.contains(flag),
                    "{extra}: the refusal does not name {flag}: {e}"
                );
            }
            (OnResume::Saved(key, value), Ok(_)) => {
                assert_eq!(config()[key], value, "{extra}: config.json {key}");
            }
            (OnResume::ThisProcess, Ok(_)) => {}
            (OnResume::Refused, Ok(_)) => panic!("{extra}: accepted on --resume"),
            (_, Err(e)) => panic!("{extra}: refused on --resume: {e:#}"),
        }
    }
}

/// A GPU lost mid-run (`Device::destroy`, as a driver reset or an unplugged
/// GPU would) ends the run within seconds with one message naming the last
/// good checkpoint and how to resume; nothing waits for the steps in flight;
/// and the run resumes from that checkpoint on a working device.
#[test]
fn a_lost_device_stops_the_run_naming_its_checkpoint() {
    use resnet_wgpu::driver::{RunDriver, RunEvent, RunFiles, RunState};
    use std::time::{Duration, Instant};
    let ctx = common::own_ctx();
    let out = out_dir("lost-device");
    let recipe = format!("{TINY} --synthetic-train 64 --batch-size 16 --epochs 3");
    let args = train_args(&out, &format!("{recipe} --checkpoint-every 2"));
    let (mut trainer, folder) = run_folder::prepare(ctx.clone(), &args).unwrap();
    let every = args.run.checkpoint_every;
    let mut driver = RunDriver::with_files(&trainer, RunFiles::open(&folder).unwrap(), every);
    let depth = 3;
    let started = Instant::now();
    let saved = loop {
        let events = driver.tick(&mut trainer, depth).unwrap();
        if let Some(dir) = events.iter().find_map(|e| match e {
            RunEvent::Saved(dir) => Some(dir.clone()),
            _ => None,
        }) {
            break dir;
        }
        assert!(!driver.state.is_over(), "{:?}", driver.state);
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "no checkpoint"
        );
        if !trainer.is_idle() {
            trainer.wait_for_report().unwrap();
        }
    };
    // Steps in flight when the device goes.
    driver.tick(&mut trainer, depth).unwrap();
    ctx.device.destroy();
    let lost = Instant::now();
    while !driver.state.is_over() {
        driver.tick(&mut trainer, depth).unwrap();
        assert!(
            lost.elapsed() < Duration::from_secs(30),
            "the run waits on a lost device"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let RunState::Failed(why) = &driver.state else {
        panic!("{:?}", driver.state);
    };
    assert!(why.contains("GPU device was lost"), "{why}");
    let run = out.join("run");
    assert!(
        why.contains(&format!("--resume {}", run.display())),
        "{why}"
    );
    let named = run_folder::resolve(&run).unwrap().dir;
    assert!(why.contains(&named.display().to_string()), "{why}");
    assert!(
        named.starts_with(&run) && saved.starts_with(&run),
        "{saved:?}"
    );
    drop((driver, trainer, folder));
    let resumed = train(&out, &format!("{recipe} --resume {}", run.display())).unwrap();
    assert_eq!(resumed.last.unwrap().step, 12, "3 epochs of 4 steps");
}
