//! The window: settings on the left, live plots in the middle, test pictures
//! and the confusion matrix on the right, status on top.

use std::sync::Arc;

use eframe::egui;

use super::controls::{self, Action};
use super::gallery::{self, Gallery};
use super::plots;
use super::session::{RunState, Session, queue_depth};
use crate::gpu::GpuContext;
use crate::settings::RunSettings;
use crate::train::format_duration;

/// Test images shown in the grid.
const GALLERY_IMAGES: usize = 24;

/// How the window starts.
#[derive(Clone, Copy, Debug, Default)]
pub struct AppOptions {
    /// Start training on the first frame.
    pub autostart: bool,
    /// The settings are the defaults: on a CPU adapter, swap in a smaller run.
    pub defaults_may_shrink: bool,
}

pub struct App {
    gpu: Arc<GpuContext>,
    pub settings: RunSettings,
    pub session: Option<Session>,
    gallery: Option<Gallery>,
    /// Why the last start failed.
    pub error: Option<String>,
    /// Said once at the top of the settings (e.g. the smaller run on a CPU adapter).
    pub notice: Option<String>,
    /// Frames until a requested run starts: one frame shows "starting…"
    /// before the (blocking) data load and plan build.
    start_in_frames: Option<u8>,
    /// Seconds between repaints while training.
    frame_seconds: f64,
    /// CIFAR-10 files picked or dropped in the browser: (name, bytes). Shared
    /// with the file picker's future.
    #[cfg(target_arch = "wasm32")]
    picked: std::rc::Rc<std::cell::RefCell<Vec<(String, Vec<u8>)>>>,
    /// The browser's opened model that the next run starts from (`--init`'s
    /// rule: a classifier for another class count stays fresh).
    #[cfg(target_arch = "wasm32")]
    pub init_model: Option<std::rc::Rc<crate::predict::OpenedModel>>,
}

impl App {
    pub fn new(gpu: Arc<GpuContext>, mut settings: RunSettings, options: AppOptions) -> Self {
        let software = gpu.is_software();
        let mut notice = None;
        if software && options.defaults_may_shrink {
            settings.shrink_for_cpu();
            notice = Some(format!(
                "{} runs on the CPU, so this first run is small: ResNet-8, batch 32, \
                 2048 images, 6 epochs. Pick a bigger model on the left, or use a GPU.",
                gpu.adapter_info.name
            ));
        }
        // The plots want every step; a report per step costs one small copy.
        settings.run.report_every = 1;
        App {
            gpu,
            settings,
            session: None,
            gallery: None,
            error: None,
            notice,
            start_in_frames: options.autostart.then_some(1),
            // A software adapter renders on the cores that train: repaint rarely.
            frame_seconds: if software { 0.3 } else { 0.1 },
            #[cfg(target_arch = "wasm32")]
            picked: Default::default(),
            #[cfg(target_arch = "wasm32")]
            init_model: None,
        }
    }

    /// Draws the window and advances training; called once per frame.
    pub fn show(&mut self, ui: &mut egui::Ui) {
        #[cfg(target_arch = "wasm32")]
        self.take_dropped_files(ui.ctx());
        match self.start_in_frames {
            Some(0) => {
                self.start_in_frames = None;
                if self.session.as_ref().is_none_or(|s| s.state().is_over()) {
                    self.start(ui.ctx());
                }
            }
            Some(n) if n > 0 => self.start_in_frames = Some(n - 1),
            _ => {}
        }
        let depth = queue_depth(
            self.session.as_ref().and_then(|s| s.history.step_seconds()),
            self.frame_seconds,
        );
        if let Some(session) = &mut self.session {
            session.tick(depth);
        }
        let mut action = None;
        egui::Panel::top("status").show(ui, |ui| self.status(ui));
        egui::Panel::left("controls")
            .resizable(false)
            .exact_size(270.0)
            .show(ui, |ui| action = self.controls(ui));
        egui::Panel::right("pictures")
            .resizable(false)
            .exact_size(400.0)
            .show(ui, |ui| self.pictures(ui));
        egui::CentralPanel::default().show(ui, |ui| self.plots(ui));
        if let Some(action) = action {
            self.act(action, ui.ctx());
        }
        if self.start_in_frames.is_some() {
            ui.ctx().request_repaint();
        } else if self.session.as_ref().is_some_and(Session::is_busy) {
            ui.ctx()
                .request_repaint_after(std::time::Duration::from_secs_f64(self.frame_seconds));
        }
    }

    fn start(&mut self, ctx: &egui::Context) {
        if let Err(e) = self.try_start(ctx) {
            self.error = Some(format!("{e:#}"));
        }
    }

    /// Starts a run from the settings now (the data load and plan build
    /// block this frame); the window shows an error it returns.
    pub fn try_start(&mut self, ctx: &egui::Context) -> anyhow::Result<()> {
        self.error = None;
        self.start_in_frames = None;
        let session = self.new_session()?;
        self.gallery = Some(Gallery::new(
            ctx,
            session.trainer.test_data(),
            GALLERY_IMAGES,
        ));
        self.session = Some(session);
        // A second start is a new run, not the named or resumed one again.
        self.settings.run.name = None;
        self.settings.run.resume = None;
        self.settings.recipe.init = None;
        Ok(())
    }

    #[cfg(not(target_arch = "wasm32"))]
    fn new_session(&self) -> anyhow::Result<Session> {
        Session::start(self.gpu.clone(), &self.settings)
    }

    #[cfg(target_arch = "wasm32")]
    fn new_session(&mut self) -> anyhow::Result<Session> {
        let data = match self.settings.data.kind() {
            crate::data::DatasetKind::Synthetic => {
                self.settings.data.load(self.settings.recipe.seed)?
            }
            _ => crate::data::cifar10_from_files(&self.picked.borrow())?,
        };
        let config = self.settings.config(&data)?;
        let mut session = Session::start(self.gpu.clone(), config, data)?;
        if let Some(model) = &self.init_model {
            let fresh = model.init(&mut session.trainer)?;
            if !fresh.is_empty() {
                self.notice = Some(format!(
                    "{} has a classifier for {} classes: this run keeps a new one ({})",
                    model.name,
                    model.card.spec.num_classes,
                    fresh.join(", ")
                ));
            }
        }
        Ok(session)
    }

    fn act(&mut self, action: Action, ctx: &egui::Context) {
        let session = self.session.as_mut();
        match (action, session) {
            (Action::Start, _) => {
                self.start_in_frames = Some(1);
                ctx.request_repaint();
            }
            (Action::Pause, Some(s)) => s.pause(),
            (Action::Resume, Some(s)) => s.resume(),
            (Action::Stop, Some(s)) => s.stop(),
            (Action::Save, Some(s)) => s.save_checkpoint(),
            (Action::ChooseData, _) => self.choose_data(),
            _ => {}
        }
    }

    #[cfg(not(target_arch = "wasm32"))]
    fn choose_data(&mut self) {
        if let Some(folder) = rfd::FileDialog::new()
            .set_title("Folder with the CIFAR binary files")
            .pick_folder()
        {
            self.settings.data.path = Some(folder);
        }
    }

    /// The browser's file picker; the files arrive after this frame.
    #[cfg(target_arch = "wasm32")]
    fn choose_data(&mut self) {
        let picked = self.picked.clone();
        wasm_bindgen_futures::spawn_local(async move {
            let Some(handles) = rfd::AsyncFileDialog::new()
                .add_filter("CIFAR-10 binary batches", &["bin"])
                .pick_files()
                .await
            else {
                return;
            };
            let mut files = vec![];
            for handle in handles {
                files.push((handle.file_name(), handle.read().await));
            }
            *picked.borrow_mut() = files;
        });
    }

    /// CIFAR-10 batch files dropped on the page (read asynchronously, as
    /// browsers require; they count as picked once read).
    #[cfg(target_arch = "wasm32")]
    fn take_dropped_files(&mut self, ctx: &egui::Context) {
        let dropped = ctx.input(|i| i.raw.dropped_files.clone());
        if dropped.is_empty() {
            return;
        }
        self.settings.data.dataset = Some(crate::data::DatasetKind::Cifar10);
        let picked = self.picked.clone();
        let repaint = ctx.clone();
        wasm_bindgen_futures::spawn_local(async move {
            let mut files = vec![];
            for file in &dropped {
                if let Ok(bytes) = file.bytes_async().await {
                    let name = file.path().to_string_lossy().into_owned();
                    files.push((name, bytes));
                }
            }
            *picked.borrow_mut() = files;
            repaint.request_repaint();
        });
    }

    #[cfg(not(target_arch = "wasm32"))]
    fn picked_files(&self) -> Option<usize> {
        None
    }

    #[cfg(target_arch = "wasm32")]
    fn picked_files(&self) -> Option<usize> {
        Some(self.picked.borrow().len())
    }

    /// The device the app trains on.
    pub fn gpu(&self) -> Arc<GpuContext> {
        self.gpu.clone()
    }

    /// The adapter's name and API, e.g. "llvmpipe (Vulkan)". Browsers keep
    /// the adapter's name private.
    pub fn adapter_name(&self) -> String {
        let info = &self.gpu.adapter_info;
        let api = match info.backend {
            wgpu::Backend::Vulkan => "Vulkan",
            wgpu::Backend::Metal => "Metal",
            wgpu::Backend::Dx12 => "DX12",
            wgpu::Backend::Gl => "GL",
            wgpu::Backend::BrowserWebGpu => "WebGPU",
            wgpu::Backend::Noop => "no-op",
        };
        let name = if info.name.is_empty() {
            "GPU adapter"
        } else {
            info.name.as_str()
        };
        format!("{name} ({api})")
    }

    fn status(&self, ui: &mut egui::Ui) {
        ui.horizontal_wrapped(|ui| {
            ui.strong("resnet-wgpu");
            ui.separator();
            ui.label(self.adapter_name())
                .on_hover_text(self.gpu.describe());
            let Some(s) = &self.session else {
                ui.separator();
                ui.label(if self.start_in_frames.is_some() {
                    "starting…"
                } else {
                    "idle"
                });
                return;
            };
            let t = &s.trainer;
            let h = &s.history;
            ui.separator();
            ui.label(format!("{} · {}", t.config.model, t.config.dataset));
            ui.separator();
            let step = h.steps_done();
            ui.label(format!(
                "epoch {:.2}/{} · step {step}/{}",
                step as f64 / h.steps_per_epoch as f64,
                t.config.epochs,
                h.total_steps
            ));
            ui.separator();
            let rate = Some(h.images_per_sec()).filter(|&r| r > 0.0);
            ui.label(crate::train::format_rate(rate, h.batch_size));
            if let Some(wait) = h.last_step.as_ref().and_then(|r| r.data_wait) {
                ui.label(format!("data wait {:.0}%", 100.0 * wait))
                    .on_hover_text(
                        "share of this epoch's time the steps waited for decoded pictures \
                     (near 100%: input-bound; more --workers or packed pictures help)",
                    );
            }
            if let (Some(eta), false) = (h.eta(), s.state().is_over()) {
                ui.label(format!("ETA {}", format_duration(eta)));
            }
            ui.separator();
            ui.label(format!("plan {:.0} MiB", s.plan_mib))
                .on_hover_text("GPU memory of the training plan (tensors, data, metrics)");
            ui.separator();
            let color = match s.state() {
                RunState::Failed(_) => ui.visuals().error_fg_color,
                RunState::Running => egui::Color32::from_rgb(60, 180, 90),
                _ => ui.visuals().warn_fg_color,
            };
            ui.colored_label(color, s.state().label());
        });
    }

    fn controls(&mut self, ui: &mut egui::Ui) -> Option<Action> {
        ui.add_space(6.0);
        ui.heading("Run");
        if let Some(notice) = &self.notice {
            ui.label(egui::RichText::new(notice).small().italics());
        }
        ui.add_space(4.0);
        let editable = self.session.as_ref().is_none_or(|s| s.state().is_over())
            && self.start_in_frames.is_none();
        let picked = self.picked_files();
        let mut action = controls::settings(ui, &mut self.settings, editable, picked);
        ui.add_space(8.0);
        let state = self.session.as_ref().map(|s| s.state());
        let can_save = self.session.as_ref().is_some_and(Session::can_save);
        action = controls::buttons(ui, state, can_save).or(action);
        ui.add_space(8.0);
        if let Some(e) = &self.error {
            ui.colored_label(ui.visuals().error_fg_color, e);
        }
        if let Some(s) = &self.session {
            if let RunState::Failed(why) = s.state() {
                ui.colored_label(ui.visuals().error_fg_color, why);
            }
            self.run_details(ui, s);
        }
        action
    }

    fn run_details(&self, ui: &mut egui::Ui, s: &Session) {
        ui.separator();
        if let Some(e) = &s.history.last_epoch {
            let top5 = e
                .test_top5
                .map_or(String::new(), |a| format!(", top-5 {:.1}%", 100.0 * a));
            ui.label(format!(
                "{} accuracy {:.1}%{top5} (loss {:.3}) at epoch {:.2}",
                s.trainer.eval_name(),
                100.0 * e.test_acc,
                e.test_loss,
                e.epoch
            ));
        }
        if let Some(step) = &s.history.last_step {
            ui.label(format!(
                "train accuracy {:.1}%, loss {:.3}, lr {:.4}",
                100.0 * step.train_acc,
                step.train_loss,
                step.lr
            ));
        }
        #[cfg(not(target_arch = "wasm32"))]
        if let Some(files) = &s.files {
            ui.label(egui::RichText::new(format!("run folder: {}", files.dir.display())).small())
                .on_hover_text(
                    "resume it in the terminal: resnet-wgpu train --no-gui --resume <folder>",
                );
        }
        if let Some(saved) = &s.saved {
            ui.label(egui::RichText::new(saved).small());
        }
    }

    fn plots(&self, ui: &mut egui::Ui) {
        let Some(s) = &self.session else {
            ui.centered_and_justified(|ui| {
                ui.label(match (&self.error, self.start_in_frames.is_some()) {
                    (_, true) => "Starting: loading the data and building the memory plan…",
                    (Some(_), _) => "The run could not start: see the message on the left.",
                    _ => "Press Start to train.",
                });
            });
            return;
        };
        let height = ui.available_height();
        ui.label("Training loss per step");
        plots::loss(ui, &s.history, (height * 0.5 - 30.0).max(80.0));
        let lower = (height * 0.5 - 40.0).max(80.0);
        ui.columns(2, |columns| {
            columns[0].label("Accuracy per epoch");
            plots::accuracy(&mut columns[0], &s.history, lower);
            columns[1].label("Learning-rate schedule");
            plots::learning_rate(&mut columns[1], &s.history, lower);
        });
    }

    fn pictures(&self, ui: &mut egui::Ui) {
        let (Some(s), Some(g)) = (&self.session, &self.gallery) else {
            ui.label("Test images and the confusion matrix appear once a run starts.");
            return;
        };
        egui::ScrollArea::vertical().show(ui, |ui| {
            ui.heading(format!("{} images", capitalized(s.trainer.eval_name())));
            ui.label(
                egui::RichText::new(
                    "the predicted class under each: green when right, red when wrong",
                )
                .small(),
            );
            g.show(ui, s.predictions.as_deref(), 56.0);
            ui.add_space(10.0);
            ui.heading("Confusion matrix");
            match (&s.predictions, &s.confusion) {
                (Some(p), Some(counts)) => {
                    ui.label(
                        egui::RichText::new(format!(
                            "rows: true class, columns: predicted ({} images)",
                            p.len()
                        ))
                        .small(),
                    );
                    gallery::show_confusion(ui, counts, &s.trainer.test_data().class_names);
                }
                _ => {
                    ui.label("after the first evaluation");
                }
            }
        });
    }
}

fn capitalized(s: &str) -> String {
    let mut c = s.chars();
    c.next()
        .map(|f| f.to_uppercase().chain(c).collect())
        .unwrap_or_default()
}

impl eframe::App for App {
    fn ui(&mut self, ui: &mut egui::Ui, _frame: &mut eframe::Frame) {
        self.show(ui);
    }

    /// Closing the window mid-run keeps the work: finish the steps in flight
    /// and checkpoint, as Stop does.
    #[cfg(not(target_arch = "wasm32"))]
    fn on_exit(&mut self) {
        if let Some(s) = &mut self.session
            && !s.state().is_over()
        {
            s.stop();
            while *s.state() == RunState::Stopping {
                if s.trainer.wait_for_gpu().is_err() {
                    break;
                }
                s.tick(0);
            }
        }
    }
}
