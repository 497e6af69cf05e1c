//! The native window: eframe on wgpu, with the renderer's device shared by
//! the trainer.

use std::sync::Arc;

use super::app::{App, AppOptions};
use crate::gpu::{BackendChoice, GpuContext, TunePolicy};
use crate::settings::RunSettings;

/// Why the window did not open (no display, no adapter, ...): the caller
/// falls back to the terminal.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct WindowUnavailable(pub String);

/// On Linux a window needs an X11 or Wayland display; say which is missing
/// before winit fails on it.
pub fn display_missing() -> Option<&'static str> {
    let unset = |v: &str| std::env::var_os(v).is_none_or(|s| s.is_empty());
    (cfg!(all(unix, not(target_os = "macos"))) && unset("DISPLAY") && unset("WAYLAND_DISPLAY"))
        .then_some("no display (neither DISPLAY nor WAYLAND_DISPLAY is set)")
}

fn native_options(backend: BackendChoice) -> eframe::NativeOptions {
    let mut setup = eframe::egui_wgpu::WgpuSetupCreateNew::without_display_handle();
    setup.instance_descriptor.backends = backend.backends();
    // The trainer's limits (large storage bindings), not the renderer's defaults.
    setup.device_descriptor = Arc::new(GpuContext::device_descriptor);
    eframe::NativeOptions {
        viewport: eframe::egui::ViewportBuilder::default()
            .with_title("resnet-wgpu")
            .with_inner_size([1280.0, 800.0])
            .with_min_inner_size([900.0, 560.0]),
        renderer: eframe::Renderer::Wgpu,
        wgpu_options: eframe::egui_wgpu::WgpuConfiguration {
            wgpu_setup: eframe::egui_wgpu::WgpuSetup::CreateNew(setup),
            ..Default::default()
        },
        ..Default::default()
    }
}

/// Opens the window and trains in it until it is closed.
pub fn run(
    backend: BackendChoice,
    tune: TunePolicy,
    settings: RunSettings,
    options: AppOptions,
) -> Result<(), WindowUnavailable> {
    if let Some(why) = display_missing() {
        return Err(WindowUnavailable(why.into()));
    }
    eframe::run_native(
        "resnet-wgpu",
        native_options(backend),
        Box::new(move |cc| {
            let state = cc
                .wgpu_render_state
                .as_ref()
                .ok_or("the window opened without a wgpu renderer")?;
            let gpu = GpuContext::from_device(
                state.device.clone(),
                state.queue.clone(),
                state.adapter.get_info(),
            )
            .on_adapter_of(&state.adapter);
            gpu.set_tune_policy(tune);
            Ok(Box::new(App::new(Arc::new(gpu), settings, options)))
        }),
    )
    .map_err(|e| WindowUnavailable(e.to_string()))
}
