//! The compute layer of the ModernBERT runtime: cubecl kernels (wgpu, CUDA), a CPU backend, and a
//! plain-Rust reference for every kernel.
//!
//! Layout: `backend` (the trait the model is written against), `device` (GPU set-up),
//! `reference` (the oracles), `cpu` (the CPU backend), `gpu` (the cubecl backend), and one folder
//! per kernel family (`attention`, `elementwise`, `embedding`, `layernorm`, `linear`, `loss`,
//! `rope`) holding its kernels, launcher and tests.

pub mod attention;
pub mod backend;
pub mod cpu;
pub mod device;
pub mod elementwise;
pub mod embedding;
mod error;
pub mod gpu;
pub mod layernorm;
pub mod linear;
pub mod loss;
pub mod reference;
pub mod rope;
pub mod testing;
pub mod tolerance;

pub use backend::{Backend, DeviceInfo};
pub use cpu::CpuBackend;
pub use error::{Error, Result};
pub use gpu::GpuBackend;
