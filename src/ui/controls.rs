//! The settings and buttons on the left of the window.

use eframe::egui;

use super::session::RunState;
use crate::data::DatasetKind;
use crate::gpu::Precision;
use crate::model::ShortcutKind;
use crate::settings::{NormChoice, RunSettings};

/// The models offered in the window (the CLI takes any 6n+2 and ImageNet sizes).
pub const MODELS: &[&str] = &[
    "resnet8",
    "resnet14",
    "resnet20",
    "resnet32",
    "resnet44",
    "resnet56",
    "resnet110",
    "resnet18-cifar",
];

/// What a button asked for; the app carries it out after drawing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Start,
    Pause,
    Resume,
    Stop,
    Save,
    ChooseData,
}

fn dataset_label(kind: DatasetKind) -> &'static str {
    match kind {
        DatasetKind::Synthetic => "built-in shapes",
        DatasetKind::Cifar10 => "CIFAR-10 folder",
        DatasetKind::Cifar100 => "CIFAR-100 folder",
        DatasetKind::Folder => "image folder",
        DatasetKind::Shards => "packed shards",
    }
}

/// The run settings, editable while no run is active. `picked_files`: the
/// browser's count of CIFAR files picked or dropped (it has no folders).
pub fn settings(
    ui: &mut egui::Ui,
    args: &mut RunSettings,
    editable: bool,
    picked_files: Option<usize>,
) -> Option<Action> {
    let mut action = None;
    ui.add_enabled_ui(editable, |ui| {
        egui::Grid::new("settings")
            .num_columns(2)
            .spacing([8.0, 6.0])
            .show(ui, |ui| {
                let label = ui.label("Model");
                egui::ComboBox::from_id_salt("model")
                    .selected_text(args.model.name.as_str())
                    .show_ui(ui, |ui| {
                        for &m in MODELS {
                            ui.selectable_value(&mut args.model.name, m.to_string(), m);
                        }
                    })
                    .response
                    .labelled_by(label.id);
                ui.end_row();

                ui.label("Shortcut");
                ui.horizontal(|ui| {
                    ui.radio_value(&mut args.model.shortcut, ShortcutKind::A, "A (pad)")
                        .on_hover_text(
                            "identity with zero-padded channels (the paper's CIFAR choice)",
                        );
                    ui.radio_value(&mut args.model.shortcut, ShortcutKind::B, "B (1x1 conv)")
                        .on_hover_text("projection where the shape changes");
                });
                ui.end_row();

                ui.label("Norm");
                ui.horizontal(|ui| {
                    ui.radio_value(&mut args.model.norm, NormChoice::Batch, "batch")
                        .on_hover_text("BatchNorm2d (the paper's)");
                    ui.radio_value(&mut args.model.norm, NormChoice::Group, "group")
                        .on_hover_text("GroupNorm: per-sample statistics over groups of channels");
                    if args.model.norm == NormChoice::Group {
                        let label = ui.label("groups");
                        ui.add(egui::DragValue::new(&mut args.model.groups).range(1..=512))
                            .labelled_by(label.id)
                            .on_hover_text("must divide every layer's channels");
                    }
                });
                ui.end_row();

                ui.label("Precision");
                ui.horizontal(|ui| {
                    ui.radio_value(&mut args.run.precision, Precision::F32, "f32");
                    ui.radio_value(&mut args.run.precision, Precision::F16, "f16 (mixed)")
                        .on_hover_text(
                            "f16 activations, f32 master weights and dynamic loss scaling \
                             (needs the adapter's shader-f16)",
                        );
                });
                ui.end_row();

                let label = ui.label("Dataset");
                let mut kind = args.data.kind();
                egui::ComboBox::from_id_salt("dataset")
                    .selected_text(dataset_label(kind))
                    .show_ui(ui, |ui| {
                        let kinds: &[DatasetKind] = if picked_files.is_some() {
                            &[DatasetKind::Synthetic, DatasetKind::Cifar10]
                        } else {
                            &[
                                DatasetKind::Synthetic,
                                DatasetKind::Cifar10,
                                DatasetKind::Cifar100,
                            ]
                        };
                        for &k in kinds {
                            ui.selectable_value(&mut kind, k, dataset_label(k));
                        }
                    })
                    .response
                    .labelled_by(label.id);
                if kind != args.data.kind() {
                    args.data.dataset = Some(kind);
                    if kind == DatasetKind::Synthetic {
                        args.data.path = None;
                    }
                }
                ui.end_row();

                if let (true, Some(count)) = (kind != DatasetKind::Synthetic, picked_files) {
                    let label = ui.label("Files");
                    ui.horizontal(|ui| {
                        let button = ui.button("Choose files…").labelled_by(label.id);
                        if button.clicked() {
                            action = Some(Action::ChooseData);
                        }
                        ui.label(format!("{count} picked (or drop them here)"));
                    });
                    ui.end_row();
                } else if kind != DatasetKind::Synthetic {
                    let label = ui.label("Folder");
                    ui.horizontal(|ui| {
                        if ui.button("Choose…").clicked() {
                            action = Some(Action::ChooseData);
                        }
                        // Typed paths work where no file dialog service runs.
                        let mut text = args
                            .data
                            .path
                            .as_ref()
                            .map_or(String::new(), |p| p.display().to_string());
                        let field = egui::TextEdit::singleline(&mut text)
                            .hint_text("path of the folder")
                            .desired_width(110.0);
                        if ui.add(field).labelled_by(label.id).changed() {
                            args.data.path = (!text.is_empty()).then(|| text.into());
                        }
                    });
                    ui.end_row();
                }

                let label = ui.label("Batch size");
                ui.add(egui::DragValue::new(&mut args.recipe.batch_size).range(1..=4096))
                    .labelled_by(label.id);
                ui.end_row();

                let label = ui.label("Learning rate");
                ui.add(
                    egui::DragValue::new(&mut args.recipe.lr)
                        .range(1e-5..=2.0)
                        .speed(0.002)
                        .max_decimals(5),
                )
                .labelled_by(label.id);
                ui.end_row();

                let label = ui.label("Epochs");
                let mut epochs = args.epochs();
                let field = ui.add(egui::DragValue::new(&mut epochs).range(1..=1000));
                if field.labelled_by(label.id).changed() {
                    args.recipe.epochs = Some(epochs);
                }
                ui.end_row();
            });
    });
    action
}

/// Start / pause / resume / stop / save, as the run's state allows.
pub fn buttons(ui: &mut egui::Ui, state: Option<&RunState>, can_save: bool) -> Option<Action> {
    let mut action = None;
    ui.horizontal_wrapped(|ui| {
        let running = state.is_some_and(|s| !s.is_over());
        if !running && ui.button("Start").clicked() {
            action = Some(Action::Start);
        }
        if state == Some(&RunState::Running) && ui.button("Pause").clicked() {
            action = Some(Action::Pause);
        }
        if state == Some(&RunState::Paused) && ui.button("Resume").clicked() {
            action = Some(Action::Resume);
        }
        let stopping = state == Some(&RunState::Stopping);
        if running
            && ui
                .add_enabled(!stopping, egui::Button::new("Stop"))
                .clicked()
        {
            action = Some(Action::Stop);
        }
        if state.is_some()
            && cfg!(not(target_arch = "wasm32"))
            && ui
                .add_enabled(can_save, egui::Button::new("Save checkpoint"))
                .on_disabled_hover_text("waiting for the steps in flight")
                .clicked()
        {
            action = Some(Action::Save);
        }
    });
    action
}
