//! The browser entry: the desktop app on the tab's WebGPU device, ticked from
//! the page's frame loop (no threads, no blocking readback), and the page's
//! model tools (`tools`: save, open, predict).

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;

use eframe::egui;
use wasm_bindgen::JsCast;
use wasm_bindgen::prelude::*;

use crate::gpu::{GpuContext, Precision};
use crate::settings::RunSettings;
use crate::ui::{App, AppOptions};

mod tools;

pub use tools::Page;
use tools::{Inbox, Tools};

/// Starts the app in the canvas `canvas_id`, training at once when
/// `autostart` (the page holds it back while it offers a kept model).
/// Resolves to the page's handle on the app; rejects with a readable message
/// when WebGPU cannot start, which the page shows.
#[wasm_bindgen]
pub async fn start(canvas_id: String, autostart: bool) -> Result<Page, JsValue> {
    let document = web_sys::window()
        .and_then(|w| w.document())
        .ok_or("no document")?;
    let canvas = document
        .get_element_by_id(&canvas_id)
        .ok_or_else(|| format!("the page has no element #{canvas_id}"))?
        .dyn_into::<web_sys::HtmlCanvasElement>()?;
    let query = query_string();
    let mut settings = settings_from_query(&query);
    let status = canvas.clone();
    let inbox = Rc::new(RefCell::new(Inbox::default()));
    let tools = Tools::new(inbox.clone());
    eframe::WebRunner::new()
        .start(
            canvas,
            web_options(),
            Box::new(move |cc| {
                let state = cc
                    .wgpu_render_state
                    .as_ref()
                    .ok_or("WebGPU did not start")?;
                // A validation error would otherwise only make later commands
                // invalid; say it where the page (and its test) can see it.
                state.device.on_uncaptured_error(Arc::new(|e: wgpu::Error| {
                    web_sys::console::error_1(&format!("WebGPU error: {e}").into());
                }));
                let gpu = GpuContext::from_device(
                    state.device.clone(),
                    state.queue.clone(),
                    state.adapter.get_info(),
                );
                // Mixed precision where the tab's adapter has shader-f16,
                // unless the address asks for a precision.
                if !query.contains("precision=") && gpu.supports_f16() {
                    settings.run.precision = Precision::F16;
                }
                let options = AppOptions {
                    autostart,
                    defaults_may_shrink: false,
                };
                let app = App::new(Arc::new(gpu), settings, options);
                Ok(Box::new(WebApp { app, status, tools }))
            }),
        )
        .await?;
    Ok(Page::new(inbox))
}

fn web_options() -> eframe::WebOptions {
    let mut setup = eframe::egui_wgpu::WgpuSetupCreateNew::without_display_handle();
    // Compute needs WebGPU; there is no WebGL fallback to offer.
    setup.instance_descriptor.backends = wgpu::Backends::BROWSER_WEBGPU;
    setup.device_descriptor = Arc::new(GpuContext::device_descriptor);
    eframe::WebOptions {
        wgpu_options: eframe::egui_wgpu::WgpuConfiguration {
            wgpu_setup: eframe::egui_wgpu::WgpuSetup::CreateNew(setup),
            ..Default::default()
        },
        ..Default::default()
    }
}

fn query_string() -> String {
    web_sys::window()
        .and_then(|w| w.location().search().ok())
        .unwrap_or_default()
}

/// The browser's default run (small: it should learn visibly in a minute),
/// adjusted by the page address:
/// `?model=resnet20&batch=64&train=5000&test=1000&epochs=10&lr=0.1&precision=f32`.
pub fn settings_from_query(query: &str) -> RunSettings {
    let mut s = RunSettings::default();
    s.shrink_for_cpu();
    for pair in query.trim_start_matches('?').split('&') {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        match key {
            "model" => s.model.name = value.to_string(),
            "batch" => s.recipe.batch_size = value.parse().unwrap_or(s.recipe.batch_size),
            "train" => s.data.synthetic_train = value.parse().unwrap_or(s.data.synthetic_train),
            "test" => s.data.synthetic_test = value.parse().unwrap_or(s.data.synthetic_test),
            "epochs" => s.recipe.epochs = value.parse().ok().or(s.recipe.epochs),
            "lr" => s.recipe.lr = value.parse().unwrap_or(s.recipe.lr),
            "precision" => {
                s.run.precision = match value {
                    "f16" => Precision::F16,
                    _ => Precision::F32,
                }
            }
            _ => {}
        }
    }
    s
}

/// The app plus what the page (and its end-to-end test) can read: the run's
/// progress as data attributes of the canvas.
struct WebApp {
    app: App,
    status: web_sys::HtmlCanvasElement,
    tools: Tools,
}

impl WebApp {
    fn publish(&self) {
        let data = self.status.dataset();
        let _ = data.set("adapter", &self.app.adapter_name());
        let _ = data.set("precision", self.app.settings.run.precision.name());
        if let Some(e) = &self.app.error {
            let _ = data.set("error", e);
        }
        if let Some(s) = &self.app.session {
            let losses: Vec<String> = s
                .history
                .batch_loss
                .iter()
                .map(|[_, loss]| format!("{loss:.5}"))
                .collect();
            let _ = data.set("steps", &s.history.steps_done().to_string());
            let _ = data.set("model", &s.trainer.config.model.name);
            // Evaluations so far and the last one's accuracy (the page keeps
            // the model after each; its test compares the desktop's eval).
            let _ = data.set("evaluations", &s.history.test_acc.len().to_string());
            if let Some(e) = &s.history.last_epoch {
                let _ = data.set("testAcc", &e.test_acc.to_string());
                let _ = data.set("testLoss", &e.test_loss.to_string());
            }
            let _ = data.set("losses", &losses.join(","));
            let _ = data.set("state", s.state().label());
            if let crate::ui::RunState::Failed(why) = s.state() {
                let _ = data.set("error", why);
            }
        }
    }
}

impl eframe::App for WebApp {
    fn ui(&mut self, ui: &mut egui::Ui, _frame: &mut eframe::Frame) {
        self.tools.serve(&mut self.app, ui.ctx());
        self.app.show(ui);
        self.publish();
    }

    fn as_any_mut(&mut self) -> Option<&mut dyn std::any::Any> {
        Some(&mut *self)
    }
}
