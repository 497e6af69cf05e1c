//! resnet-wgpu: deep residual networks trained end to end on the GPU, with WGSL
//! compute shaders on wgpu (Vulkan, Metal, DX12, WebGPU).
//!
//! Layers, bottom up: [`shapes`] (tensor geometry shared by everything),
//! `reference` (the plain-Rust CPU oracle of every op; feature `oracle`, which
//! the tests turn on), [`gpu`] (device,
//! tensors, kernel cache, prepared dispatches), [`ops`] (the host side of each
//! shader), [`model`] (the ResNet family with torchvision names), [`data`]
//! (datasets), [`train`] (memory plan, trainer, checkpoints), and the front ends
//! [`cli`] and `headless`, with [`bench`] (GPU timings).

// First: the `out!` macro every later module prints with.
#[macro_use]
pub mod output;

// Native front ends and tools (they block on the GPU); the core builds for wasm32.
#[cfg(not(target_arch = "wasm32"))]
pub mod bench;
#[cfg(not(target_arch = "wasm32"))]
pub mod cli;
pub mod data;
#[cfg(not(target_arch = "wasm32"))]
pub mod dist;
#[cfg(not(target_arch = "wasm32"))]
pub mod download;
pub mod driver;
pub mod gpu;
#[cfg(not(target_arch = "wasm32"))]
pub mod headless;
pub mod model;
pub mod ops;
pub mod predict;
#[cfg(feature = "oracle")]
pub mod reference;
#[cfg(not(target_arch = "wasm32"))]
pub mod run_folder;
pub mod seeded;
pub mod setting;
pub mod settings;
pub mod shapes;
pub mod train;
#[cfg(feature = "gui")]
pub mod ui;
#[cfg(all(target_arch = "wasm32", feature = "gui"))]
pub mod web;
