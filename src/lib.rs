//! resnet-wgpu: deep residual networks trained end to end on the GPU, with WGSL
//! compute shaders on wgpu (Vulkan, Metal, DX12, WebGPU).
//!
//! Layers, bottom up: [`shapes`] (tensor geometry shared by everything),
//! [`reference`] (the plain-Rust CPU oracle of every op), [`gpu`] (device,
//! tensors, kernel cache, prepared dispatches), [`ops`] (the host side of each
//! shader), [`bench`] (GPU timings per op).

pub mod bench;
pub mod cli;
pub mod data;
pub mod gpu;
pub mod headless;
pub mod model;
pub mod ops;
pub mod reference;
pub mod shapes;
pub mod train;
