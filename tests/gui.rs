//! The window's panels and controls, driven through egui's test harness
//! (egui_kittest) over the real trainer on the test GPU: start, pause, resume,
//! stop, settings, the plots' data, the picture grid and the confusion matrix.
#![cfg(feature = "gui")]

mod common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use egui_kittest::Harness;
use egui_kittest::kittest::Queryable;
use resnet_wgpu::settings::{NormChoice, RunSettings};
use resnet_wgpu::ui::gallery::confusion_counts;
use resnet_wgpu::ui::session::queue_depth;
use resnet_wgpu::ui::{App, AppOptions, RunState};
use resnet_wgpu::{headless, run_folder};

use common::shared_ctx;

fn out_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("resnet-wgpu-gui-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// ResNet-8 on 64 pictures, batch 16: 4 steps per epoch.
fn tiny_settings(out: &str, epochs: usize) -> RunSettings {
    let mut args = RunSettings::default();
    args.model.name = "resnet8".into();
    args.recipe.batch_size = 16;
    args.data.synthetic_train = 64;
    args.data.synthetic_test = 24;
    args.recipe.epochs = Some(epochs);
    args.run.out = out_dir(out);
    args.run.name = Some("run".into());
    args
}

fn window(settings: RunSettings, options: AppOptions) -> Harness<'static, App> {
    let app = App::new(shared_ctx(), settings, options);
    Harness::builder()
        .with_size([1280.0, 800.0])
        .build_ui_state(|ui, app: &mut App| app.show(ui), app)
}

/// Runs frames (the GPU works between them) until `done` holds.
fn frames_until(h: &mut Harness<'_, App>, what: &str, done: impl Fn(&App) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(180);
    while !done(h.state()) {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        h.step();
        std::thread::sleep(Duration::from_millis(5));
    }
    h.step();
}

fn state(app: &App) -> Option<RunState> {
    app.session.as_ref().map(|s| s.state().clone())
}

fn steps_done(app: &App) -> u64 {
    app.session.as_ref().map_or(0, |s| s.history.steps_done())
}

#[test]
fn start_pause_resume_stop_and_save() {
    let settings = tiny_settings("controls", 50);
    let run_dir = settings.run.out.join("run");
    let mut h = window(settings, AppOptions::default());
    h.step();
    h.get_by_label("Press Start to train.");
    assert!(h.state().session.is_none());

    h.get_by_label("Start").click();
    frames_until(&mut h, "the first steps", |a| steps_done(a) >= 2);
    assert_eq!(state(h.state()), Some(RunState::Running));
    // Settings are locked while a run is active: the model list does not open.
    h.get_by_label("Model").click();
    h.run_steps(3); // as many frames as the list takes to open when enabled
    assert!(h.query_by_label("resnet32").is_none());
    assert!(h.query_by_label("Start").is_none());

    h.get_by_label("Pause").click();
    h.step();
    assert_eq!(state(h.state()), Some(RunState::Paused));
    // Paused: the steps in flight come back, then nothing more is submitted.
    frames_until(&mut h, "the steps in flight", |a| {
        a.session.as_ref().is_some_and(|s| s.trainer.is_idle())
    });
    let paused_at = steps_done(h.state());
    for _ in 0..20 {
        h.step();
    }
    assert_eq!(steps_done(h.state()), paused_at);
    assert_eq!(
        h.state()
            .session
            .as_ref()
            .unwrap()
            .trainer
            .progress()
            .global_step,
        paused_at
    );

    h.get_by_label("Save checkpoint").click();
    h.step();
    let saved = h.state().session.as_ref().unwrap().saved.clone().unwrap();
    assert!(saved.starts_with("saved"), "{saved}");
    let last = std::fs::read_to_string(run_dir.join("checkpoints/last")).unwrap();
    assert_eq!(last, format!("step-{paused_at:08}"));

    h.get_by_label("Resume").click();
    frames_until(&mut h, "steps after resuming", |a| {
        steps_done(a) > paused_at + 1
    });

    h.get_by_label("Stop").click();
    frames_until(&mut h, "the stop", |a| state(a) == Some(RunState::Stopped));
    let stopped_at = steps_done(h.state());
    let last = std::fs::read_to_string(run_dir.join("checkpoints/last")).unwrap();
    assert_eq!(last, format!("step-{stopped_at:08}"), "Stop checkpoints");
    // A stopped run can be followed by a new one: Start is offered again.
    h.get_by_label("Start");
    h.get_by_label_contains("stopped");

    // The terminal continues the window's run from its run folder, once the
    // window has let go of it (a session holds its folder's lock).
    let mut resume = tiny_settings("unused", 50);
    resume.run.resume = Some(run_dir.clone());
    let held = run_folder::prepare(shared_ctx(), &resume)
        .err()
        .unwrap()
        .to_string();
    assert!(held.contains("in use by another trainer"), "{held}");
    drop(h);
    resume.run.resume = Some(run_dir.clone());
    resume.run.max_steps = Some(stopped_at + 4);
    let (mut trainer, dir) = run_folder::prepare(shared_ctx(), &resume).unwrap();
    assert_eq!(dir.dir, run_dir);
    assert_eq!(trainer.progress().global_step, stopped_at);
    headless::run(&mut trainer, &dir, true).unwrap();
    let last = std::fs::read_to_string(run_dir.join("checkpoints/last")).unwrap();
    assert_eq!(last, format!("step-{:08}", stopped_at + 4));
}

#[test]
fn a_finished_run_shows_plots_pictures_and_the_confusion_matrix() {
    let settings = tiny_settings("finished", 2);
    let run_dir = settings.run.out.join("run");
    let mut h = window(
        settings,
        AppOptions {
            autostart: true,
            defaults_may_shrink: false,
        },
    );
    frames_until(&mut h, "the end of the run", |a| {
        state(a).is_some_and(|s| s.is_over()) && a.session.as_ref().unwrap().predictions.is_some()
    });
    let app = h.state();
    assert_eq!(state(app), Some(RunState::Finished), "{:?}", app.error);
    let s = app.session.as_ref().unwrap();
    // Every step's loss is plotted, raw and smoothed; both evaluations are.
    assert_eq!(s.history.batch_loss.len(), 8);
    assert_eq!(s.history.smoothed_loss.len(), 8);
    assert_eq!(s.history.test_acc.len(), 2);
    assert_eq!(s.history.lr_schedule.first().unwrap()[1], 0.1f32 as f64);
    // The same metrics file as a headless run: one line per evaluation.
    let lines = std::fs::read_to_string(run_dir.join("metrics.jsonl")).unwrap();
    assert_eq!(lines.lines().count(), 2);
    // And the same best checkpoint: the first epoch with the top accuracy.
    let accs: Vec<f64> = lines
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["test_acc"]
                .as_f64()
                .unwrap()
        })
        .collect();
    let first_best = if accs[1] > accs[0] { 8 } else { 4 };
    let best = std::fs::read_to_string(run_dir.join("checkpoints/best")).unwrap();
    assert_eq!(best, format!("step-{first_best:08}"), "{accs:?}");
    // The predictions cover the whole test set and agree with its accuracy.
    let predicted = s.predictions.as_ref().unwrap();
    let labels = &s.trainer.test_data().labels;
    assert_eq!(predicted.len(), 24);
    let right = predicted.iter().zip(labels).filter(|(p, l)| p == l).count();
    let last = s.history.last_epoch.as_ref().unwrap();
    assert!((right as f32 / 24.0 - last.test_acc).abs() < 1e-6);

    h.get_by_label("Confusion matrix");
    h.get_by_label_contains("rows: true class, columns: predicted (24 images)");
    h.get_by_label("Training loss per step");
    h.get_by_label("Accuracy per epoch");
    h.get_by_label("Learning-rate schedule");
    h.get_by_label("finished");
    h.get_by_label_contains("resnet8");
    h.get_by_label_contains("step 8/8");
}

#[test]
fn the_model_is_picked_from_the_list() {
    let mut h = window(tiny_settings("pick", 1), AppOptions::default());
    h.step();
    h.get_by_label("Model").click();
    h.run_steps(3);
    h.get_by_label("resnet32").click();
    h.step();
    assert_eq!(h.state().settings.model.name, "resnet32");
    h.get_by_label("B (1x1 conv)").click();
    h.step();
    assert_eq!(
        h.state().settings.model.shortcut,
        resnet_wgpu::model::ShortcutKind::B
    );
    h.get_by_label("group").click();
    h.step();
    assert_eq!(h.state().settings.model.norm, NormChoice::Group);
    h.get_by_label("groups");
}

#[test]
fn a_start_that_fails_says_why_in_the_window() {
    let mut settings = tiny_settings("bad", 1);
    settings.recipe.batch_size = 1000; // more than the 64 training images
    let mut h = window(settings, AppOptions::default());
    h.step();
    h.get_by_label("Start").click();
    frames_until(&mut h, "the error", |a| a.error.is_some());
    h.get_by_label_contains("fewer than one batch of 1000");
    h.get_by_label("The run could not start: see the message on the left.");
}

#[test]
fn defaults_shrink_on_a_cpu_adapter_and_say_so() {
    let gpu = shared_ctx();
    let software = gpu.adapter_info.device_type == wgpu::DeviceType::Cpu;
    let app = App::new(
        gpu,
        RunSettings::default(),
        AppOptions {
            autostart: false,
            defaults_may_shrink: true,
        },
    );
    assert_eq!(app.notice.is_some(), software);
    let expected = if software { "resnet8" } else { "resnet20" };
    assert_eq!(app.settings.model.name, expected);
    // Explicit settings are never changed.
    let kept = App::new(shared_ctx(), RunSettings::default(), AppOptions::default());
    assert_eq!(kept.settings.model.name, "resnet20");
    assert!(kept.notice.is_none());
}

#[test]
fn confusion_counts_rows_are_true_classes() {
    let counts = confusion_counts(&[0, 0, 1, 2, 2, 2], &[0, 1, 1, 2, 0, 2], 3);
    assert_eq!(counts, vec![vec![1, 1, 0], vec![0, 1, 0], vec![1, 0, 2]]);
    // Predictions cover only the first images: the rest are not counted.
    let partial = confusion_counts(&[0, 1, 1], &[1], 2);
    assert_eq!(partial, vec![vec![0, 1], vec![0, 0]]);
}

#[test]
fn queued_steps_cover_about_one_frame() {
    assert_eq!(queue_depth(None, 0.1), 2);
    assert_eq!(queue_depth(Some(1.0), 0.3), 2);
    assert_eq!(queue_depth(Some(0.01), 0.1), 11);
    assert_eq!(queue_depth(Some(1e-9), 0.1), 65);
}
