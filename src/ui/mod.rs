//! The egui front end: one app for the desktop window and the browser page.
//! It drives the same non-blocking trainer as the terminal, a little per frame.

mod app;
mod controls;
#[cfg(not(target_arch = "wasm32"))]
pub mod desktop;
pub mod gallery;
pub mod history;
mod plots;
pub mod session;

pub use app::{App, AppOptions};
pub use controls::MODELS;
pub use session::{RunState, Session};
