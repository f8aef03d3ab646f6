//! The compute layer of the ModernBERT runtime: cubecl kernels (wgpu, CUDA), a CPU backend, and a
//! plain-Rust reference for every kernel.
//!
//! Layout: `backend` (one op trait per family; `Backend` is all of them, what the model is
//! written against), `prelude` (the traits, for code holding a concrete backend), `device` (GPU
//! set-up), `reference` (the oracles), `cpu` (the CPU backend), `gpu` (the cubecl backend's
//! tensors and storage), and one folder per kernel family (`attention`, `elementwise`,
//! `embedding`, `layernorm`, `linear`, `loss`, `optim`, `reduce`, `rope`) holding its kernels,
//! launchers, GPU implementation, shape rules and tests.

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
pub mod optim;
pub mod prelude;
pub mod profile;
pub mod reduce;
pub mod reference;
pub mod rope;
mod shapes;
#[cfg(all(feature = "testing", not(target_family = "wasm")))]
pub mod testing;
pub mod tolerance;

pub use backend::{Backend, DeviceInfo};

/// Drive a future to completion (native targets; in the browser, `.await` instead).
#[cfg(not(target_family = "wasm"))]
pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
    cubecl::future::block_on(f)
}
pub use cpu::CpuBackend;
pub use error::{Error, Result};
pub use gpu::GpuBackend;
