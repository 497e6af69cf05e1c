//! One training step on the GPU against PyTorch: logits, loss, every gradient,
//! every updated parameter and batch-norm buffer, from fixtures written by
//! scripts/make_golden.py. Also checks the ImageNet models' state-dict names
//! and shapes against torchvision's.

mod common;

use std::collections::HashMap;
use std::path::Path;

use resnet_wgpu::data::epoch_order;
use resnet_wgpu::data::{DataSplit, Dataset};
use resnet_wgpu::model::{ModelSpec, Norm, ShortcutKind};
use resnet_wgpu::shapes::{AugmentConfig, ImageShape};
use resnet_wgpu::train::checkpoint::{self, LoadMode, StateDict};
use resnet_wgpu::train::{TrainConfig, TrainEvent, Trainer};
use safetensors::{Dtype, SafeTensors};

use common::shared_ctx;

struct Fixture {
    images: Vec<u8>,
    labels: Vec<u32>,
    shape: [usize; 4],
    f32s: HashMap<String, (Vec<usize>, Vec<f32>)>,
}

fn load_fixture(name: &str) -> Fixture {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(format!("tests/fixtures/golden_{name}.safetensors"));
    let bytes = std::fs::read(&path).unwrap();
    let file = SafeTensors::deserialize(&bytes).unwrap();
    let images = file.tensor("images").unwrap();
    assert_eq!(images.dtype(), Dtype::U8);
    let labels = file.tensor("labels").unwrap();
    assert_eq!(labels.dtype(), Dtype::I64);
    let shape: [usize; 4] = images.shape().try_into().unwrap();
    let dict = StateDict::read(&path).unwrap();
    Fixture {
        images: images.data().to_vec(),
        labels: labels
            .data()
            .chunks_exact(8)
            .map(|c| i64::from_le_bytes(c.try_into().unwrap()) as u32)
            .collect(),
        shape,
        f32s: dict.tensors,
    }
}

impl Fixture {
    fn get(&self, key: &str) -> &[f32] {
        &self
            .f32s
            .get(key)
            .unwrap_or_else(|| panic!("fixture lacks {key}"))
            .1
    }

    /// The `prefix.*` entries with the prefix removed, as a state dict.
    fn state(&self, prefix: &str) -> StateDict {
        StateDict {
            tensors: self
                .f32s
                .iter()
                .filter_map(|(k, v)| Some((k.strip_prefix(prefix)?.to_string(), v.clone())))
                .collect(),
            metadata: HashMap::new(),
        }
    }
}

/// Max |gpu - torch| relative to the largest |torch| value of the tensor: a
/// scale-aware error that does not blow up on entries near zero.
fn relative_error(gpu: &[f32], torch: &[f32]) -> f64 {
    assert_eq!(gpu.len(), torch.len());
    let scale = torch
        .iter()
        .fold(0f64, |m, &v| m.max(f64::from(v).abs()))
        .max(1e-12);
    gpu.iter()
        .zip(torch)
        .map(|(&a, &b)| (f64::from(a) - f64::from(b)).abs() / scale)
        .fold(0.0, f64::max)
}

fn check(what: &str, gpu: &[f32], torch: &[f32], tol: f64) -> f64 {
    let err = relative_error(gpu, torch);
    assert!(
        err <= tol,
        "{what}: relative error {err:.3e} exceeds {tol:.0e}"
    );
    err
}

fn golden_step(name: &str, shortcut: ShortcutKind) {
    let model = ModelSpec::new(name, shortcut, 10).unwrap();
    golden_step_of(name, model);
}

/// One step of `model` against fixture golden_`file`.safetensors.
fn golden_step_of(file: &str, model: ModelSpec) {
    let name = model.name.clone();
    let name = name.as_str();
    let fx = load_fixture(file);
    let [batch, c, h, w] = fx.shape;
    let dataset = Dataset {
        images: fx.images.clone(),
        labels: fx.labels.clone(),
        shape: ImageShape {
            channels: c,
            height: h,
            width: w,
        },
        class_names: (0..10).map(|i| i.to_string()).collect(),
    };
    let data = DataSplit {
        name: name.into(),
        train: dataset.clone(),
        test: dataset,
        eval_set: resnet_wgpu::data::EvalSet::Test,
    };
    // The fixture's input is uint8 / 255 with no augmentation.
    let augment = AugmentConfig {
        pad: 0,
        flip: false,
        mean: [0.0; 4],
        std: [1.0; 4],
    };
    let config = TrainConfig {
        seed: 3,
        max_steps: Some(1),
        ..TrainConfig::one_epoch(model, name, batch, 0.1, augment)
    };
    let mut trainer = Trainer::new(shared_ctx(), config, data).unwrap();
    let path = Path::new(name);
    checkpoint::load_model(&mut trainer, &fx.state("init."), path, LoadMode::Strict).unwrap();
    assert!(trainer.submit_train_step(), "one step is the whole epoch");
    trainer.wait_for_gpu().unwrap();
    let ctx = shared_ctx();
    let plan = trainer.plan();

    // The trainer shuffles; row r of the GPU batch is fixture sample order[r].
    let order = epoch_order(3, 0, batch);
    let gpu_logits = plan.tensor(plan.logits).read_f32(&ctx).unwrap();
    let torch_logits = fx.get("logits");
    let mut permuted = vec![0.0; torch_logits.len()];
    for (row, &sample) in order.iter().enumerate() {
        let s = sample as usize;
        permuted[row * 10..(row + 1) * 10].copy_from_slice(&torch_logits[s * 10..(s + 1) * 10]);
    }
    check("logits", &gpu_logits, &permuted, 1e-5);

    let loss = loop {
        let events = trainer.poll().unwrap();
        if let Some(TrainEvent::Step(s)) = events
            .into_iter()
            .find(|e| matches!(e, TrainEvent::Step(_)))
        {
            break s.batch_loss;
        }
        trainer.wait_for_report().unwrap();
    };
    check("loss", &[loss], fx.get("loss"), 1e-5);

    let plan = trainer.plan();
    let mut worst = (0.0, String::new());
    let conv_biases: Vec<String> = plan
        .network
        .units()
        .filter(|u| u.bias)
        .map(|u| u.conv.clone())
        .collect();
    for (pname, value, grad, _) in plan.params() {
        let torch_grad = fx.get(&format!("grad.{pname}"));
        let gpu_grad = grad.read_f32(&ctx).unwrap();
        // A conv bias followed by batch norm has a zero gradient in exact
        // arithmetic (the norm subtracts the channel mean), so both sides hold
        // rounding noise (~1e-7): its error is measured against the scale of
        // its conv weight's gradient instead of its own.
        let e = match conv_biases.iter().find(|c| pname == format!("{c}.bias")) {
            Some(conv) => {
                let scale = fx
                    .get(&format!("grad.{conv}.weight"))
                    .iter()
                    .fold(0f64, |m, &v| m.max(f64::from(v).abs()));
                let err = gpu_grad
                    .iter()
                    .zip(torch_grad)
                    .map(|(&a, &b)| (f64::from(a) - f64::from(b)).abs() / scale)
                    .fold(0.0, f64::max);
                assert!(
                    err <= 2e-5,
                    "grad of {pname}: error {err:.3e} of the weight grad's scale"
                );
                err
            }
            None => check(&format!("grad of {pname}"), &gpu_grad, torch_grad, 2e-5),
        };
        if e > worst.0 {
            worst = (e, format!("grad of {pname}"));
        }
        let e = check(
            &format!("{pname} after the step"),
            &value.read_f32(&ctx).unwrap(),
            fx.get(&format!("after.{pname}")),
            1e-6,
        );
        if e > worst.0 {
            worst = (e, format!("{pname} after the step"));
        }
    }
    for entry in plan.state_entries() {
        if entry.name.ends_with("running_mean") || entry.name.ends_with("running_var") {
            let gpu = plan
                .state_tensor(&entry.name)
                .unwrap()
                .read_f32(&ctx)
                .unwrap();
            check(
                &entry.name,
                &gpu,
                fx.get(&format!("after.{}", entry.name)),
                1e-6,
            );
        }
    }
    assert_eq!(trainer.batches_tracked(), 1);
    eprintln!("{name}: worst relative error {:.2e} ({})", worst.0, worst.1);
}

#[test]
fn resnet8_shortcut_a_step_matches_pytorch() {
    golden_step("resnet8", ShortcutKind::A);
}

#[test]
fn resnet20_shortcut_b_step_matches_pytorch() {
    golden_step("resnet20", ShortcutKind::B);
}

/// GroupNorm(4, C) after every conv, the projection shortcut's included.
#[test]
fn resnet8_group_norm_step_matches_pytorch() {
    let model = ModelSpec::new("resnet8", ShortcutKind::B, 10)
        .unwrap()
        .with_layers(Norm::Group { groups: 4 }, false)
        .unwrap();
    golden_step_of("resnet8_groupnorm", model);
}

/// Convs with bias=True: the biases load with the weights and train.
#[test]
fn resnet8_conv_bias_step_matches_pytorch() {
    let model = ModelSpec::new("resnet8", ShortcutKind::A, 10)
        .unwrap()
        .with_layers(Norm::Batch, true)
        .unwrap();
    golden_step_of("resnet8_conv_bias", model);
}

#[test]
fn imagenet_models_have_torchvision_state_dicts() {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/torchvision_state_dicts.json");
    let all: HashMap<String, HashMap<String, Vec<usize>>> =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    for (name, torch) in &all {
        let ours: HashMap<String, Vec<usize>> = ModelSpec::new(name, ShortcutKind::B, 1000)
            .unwrap()
            .network()
            .state_entries()
            .into_iter()
            .map(|e| (e.name, e.shape))
            .collect();
        assert_eq!(&ours, torch, "{name}");
    }
}
