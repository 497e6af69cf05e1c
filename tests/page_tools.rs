//! The browser page's model tools, run natively on the test adapter: the
//! non-blocking model snapshot behind "Save model", a model opened from
//! bytes ("Open model", the kept copy), and the live predictor behind a
//! dropped picture or a camera frame, each against the blocking paths the
//! command line uses (`read_model`, `predict`).

mod common;

use std::path::Path;

use common::shared_ctx;
use resnet_wgpu::predict::{self, ModelCard, OpenedModel, Predictor};
use resnet_wgpu::settings::RunSettings;
use resnet_wgpu::train::checkpoint::{self, Values};
use resnet_wgpu::train::{ModelSnapshot, Trainer};

fn out_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("resnet-wgpu-page-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// ResNet-8 trained for a few steps on a little of the built-in data.
fn trained() -> Trainer {
    let mut s = RunSettings::default();
    s.shrink_for_cpu();
    s.data.synthetic_train = 32;
    s.data.synthetic_test = 8;
    s.recipe.batch_size = 8;
    s.recipe.epochs = Some(1);
    let data = s.data.load(3).unwrap();
    let mut trainer = Trainer::new(shared_ctx(), s.config(&data).unwrap(), data).unwrap();
    trainer.submit_steps(3);
    trainer
}

fn wait(snapshot: &ModelSnapshot) {
    while !snapshot.is_ready().unwrap() {
        shared_ctx().wait_idle().unwrap();
    }
}

/// A `width` x `height` RGBA picture (opaque), the same every call.
fn picture(width: u32, height: u32) -> Vec<u8> {
    (0..width * height)
        .flat_map(|i| {
            let (x, y) = (i % width, i / width);
            [(x * 9) as u8, (y * 7) as u8, ((x + y) * 5) as u8, 255]
        })
        .collect()
}

fn f32s(values: &Values) -> Vec<f32> {
    match values {
        Values::F32(v) => v.clone(),
        Values::I64(v) => v.iter().map(|&x| x as f32).collect(),
        _ => unreachable!("the model is saved as f32 and i64"),
    }
}

#[test]
fn a_snapshot_is_the_saved_model_and_predicts_as_the_command_line() {
    let trainer = trained();
    let snapshot = trainer.request_model_snapshot().unwrap();
    assert_eq!(snapshot.step, 3);
    wait(&snapshot);
    let (tensors, metadata) = snapshot.take().unwrap();
    let blocking = checkpoint::read_model(&trainer).unwrap();
    assert_eq!(tensors.len(), blocking.len());
    for ((name, shape, values), (bname, bshape, bvalues)) in tensors.iter().zip(&blocking) {
        assert_eq!((name, shape), (bname, bshape));
        assert_eq!(f32s(values), f32s(bvalues), "{name}");
    }
    // The page's download is a model file as the desktop writes it.
    let bytes = checkpoint::encode_safetensors(&tensors, metadata, Path::new("x")).unwrap();
    let opened = OpenedModel::from_bytes("tab.safetensors", &bytes).unwrap();
    assert_eq!(opened.card, ModelCard::of_trainer(&trainer).unwrap());
    assert_eq!(opened.card.class_names, trainer.test_data().class_names);
    assert_eq!(opened.card.side, 32);

    // The same picture three ways: the file's weights, the trainer's copied
    // on the GPU, and the command line's predict of a PNG of it.
    let (width, height) = (45, 37);
    let rgba = picture(width, height);
    let ctx = shared_ctx();
    let mut from_file =
        Predictor::new(ctx.clone(), opened.card.clone(), trainer.config.precision).unwrap();
    from_file
        .load(&opened.dict, Path::new(&opened.name))
        .unwrap();
    from_file.submit(&rgba, width, height).unwrap();
    assert!(
        from_file.submit(&rgba, width, height).is_err(),
        "one at a time"
    );
    let a = from_file.wait().unwrap();
    let mut copied =
        Predictor::new(ctx.clone(), opened.card.clone(), trainer.config.precision).unwrap();
    copied.copy_weights(&trainer).unwrap();
    copied.submit(&rgba, width, height).unwrap();
    let b = copied.wait().unwrap();
    let dir = out_dir("predict");
    let model = dir.join("model.safetensors");
    std::fs::write(&model, &bytes).unwrap();
    let png = dir.join("picture.png");
    image::RgbaImage::from_raw(width, height, rgba.clone())
        .unwrap()
        .save(&png)
        .unwrap();
    let c = &predict::predict(ctx.clone(), &model, std::slice::from_ref(&png), 5).unwrap()[0].top;
    assert_eq!(a.len(), 5);
    for ((a, b), c) in a.iter().zip(&b).zip(c) {
        assert_eq!(
            (&a.class, &a.class),
            (&b.class, &c.class),
            "{a:?} {b:?} {c:?}"
        );
        assert!((a.probability - b.probability).abs() < 1e-6, "{a:?} {b:?}");
        assert!((a.probability - c.probability).abs() < 1e-5, "{a:?} {c:?}");
    }
    let total: f32 = a.iter().map(|p| p.probability).sum();
    assert!(a.windows(2).all(|w| w[0].probability >= w[1].probability) && total <= 1.0 + 1e-5);

    // A second picture on the same plan is predicted, not the first again.
    let other = picture(8, 8).iter().map(|v| 255 - v).collect::<Vec<u8>>();
    from_file.submit(&other, 8, 8).unwrap();
    let d = from_file.wait().unwrap();
    assert_ne!(d, a);
    assert!(
        from_file
            .submit(&[0; 7], 2, 2)
            .unwrap_err()
            .to_string()
            .contains("RGBA")
    );
}

#[test]
fn files_the_page_cannot_use_are_refused_naming_them() {
    let e = OpenedModel::from_bytes("notes.safetensors", b"not a model")
        .err()
        .unwrap();
    assert!(
        format!("{e:#}").contains("notes.safetensors: not a readable safetensors file"),
        "{e:#}"
    );

    // A torchvision-style file (no metadata) of a known model: its card
    // says what was assumed; a file of no known model is refused.
    let trainer = trained();
    let snapshot = trainer.request_model_snapshot().unwrap();
    wait(&snapshot);
    let (mut tensors, _) = snapshot.take().unwrap();
    let bare =
        checkpoint::encode_safetensors(&tensors, Default::default(), Path::new("x")).unwrap();
    let opened = OpenedModel::from_bytes("hub.safetensors", &bare).unwrap();
    assert_eq!(opened.card.spec.name, "resnet8");
    let note = opened.card.assumed.clone().unwrap();
    assert!(
        note.contains("hub.safetensors") && note.contains("ImageNet normalization"),
        "{note}"
    );
    let unknown: Vec<_> = tensors
        .drain(..)
        .filter(|(n, _, _)| !n.starts_with("layer1"))
        .collect();
    let bytes =
        checkpoint::encode_safetensors(&unknown, Default::default(), Path::new("x")).unwrap();
    let e = OpenedModel::from_bytes("odd.safetensors", &bytes)
        .err()
        .unwrap();
    assert!(
        format!("{e:#}").contains("odd.safetensors: no model metadata"),
        "{e:#}"
    );

    // A file whose tensors do not fit its metadata's model: the predictor
    // refuses it as eval does, and a run from it as --init does.
    let snapshot = trainer.request_model_snapshot().unwrap();
    wait(&snapshot);
    let (mut tensors, metadata) = snapshot.take().unwrap();
    let conv = tensors
        .iter_mut()
        .find(|(n, _, _)| n == "conv1.weight")
        .unwrap();
    conv.1 = vec![1, conv.1.iter().product()];
    let bytes = checkpoint::encode_safetensors(&tensors, metadata, Path::new("x")).unwrap();
    let opened = OpenedModel::from_bytes("bent.safetensors", &bytes).unwrap();
    let mut predictor =
        Predictor::new(shared_ctx(), opened.card.clone(), trainer.config.precision).unwrap();
    let e = predictor
        .load(&opened.dict, Path::new(&opened.name))
        .unwrap_err();
    assert!(
        format!("{e:#}").contains("bent.safetensors: 'conv1.weight' has shape"),
        "{e:#}"
    );
    let mut run = trained();
    let e = opened.init(&mut run).unwrap_err();
    assert!(
        format!("{e:#}").contains("bent.safetensors: 'conv1.weight' has shape"),
        "{e:#}"
    );
}
