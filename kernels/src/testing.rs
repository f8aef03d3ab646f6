//! Test support shared by every kernel family and by the runtime's tests: the test devices,
//! deterministic data, a macro that stamps one generic test body out per backend, and the
//! registry of the families' WGSL exercises (`wgsl_exercise!`, run by `kernels/tests/wgsl.rs`).
//! Built with the `testing` feature only (the crates' dev-dependencies), never into a shipped
//! binary.

use std::sync::OnceLock;

use crate::cpu::CpuBackend;
use crate::device::{wgpu_device, AdapterChoice};
use crate::gpu::GpuBackend;

/// The CPU backend.
pub fn cpu() -> CpuBackend {
    CpuBackend::new()
}

/// The wgpu backend on the machine's default adapter (lavapipe in CI), created once per process.
/// `KERNELS_TEST_ADAPTER=software` forces a software adapter. Panics with the reason when there
/// is no adapter: a GPU test must not pass without a GPU.
pub fn gpu() -> GpuBackend {
    static GPU: OnceLock<GpuBackend> = OnceLock::new();
    GPU.get_or_init(|| {
        let choice = match std::env::var("KERNELS_TEST_ADAPTER").as_deref() {
            Ok("software") => AdapterChoice::Software,
            _ => AdapterChoice::Default,
        };
        let device = wgpu_device(choice).unwrap_or_else(|e| {
            panic!("GPU tests need a wgpu adapter (CI uses Mesa's lavapipe: apt-get install mesa-vulkan-drivers): {e}")
        });
        GpuBackend::new(device)
    })
    .clone()
}

pub use crate::block_on;

/// The wgpu backend storing tensors in f16 (lavapipe has `shader-f16`).
pub fn gpu_f16() -> GpuBackend {
    gpu().with_dtype(crate::backend::DType::F16).unwrap_or_else(|e| panic!("f16 GPU tests need an adapter with shader-f16: {e}"))
}

/// The wgpu backend f16 end to end: weights and activations stored in f16.
pub fn gpu_f16_activations() -> GpuBackend {
    gpu_f16().with_activations(crate::backend::DType::F16).unwrap_or_else(|e| panic!("f16 GPU tests need an adapter with shader-f16: {e}"))
}

/// Deterministic values uniform in [-scale, scale) (xorshift32).
pub fn rand_vec(n: usize, seed: u32, scale: f32) -> Vec<f32> {
    let mut s = seed.wrapping_mul(2_654_435_761).wrapping_add(0x9E37_79B9) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            ((s >> 8) as f32 / (1u32 << 24) as f32 * 2.0 - 1.0) * scale
        })
        .collect()
}

/// `rand_vec` rounded to what backend `b` stores (f16 or f32), so that the reference sees the
/// same inputs as the kernel and a test measures the kernel's own error.
pub fn rand_for<B: crate::backend::Backend>(b: &B, n: usize, seed: u32, scale: f32) -> Vec<f32> {
    representable(b.dtype(), rand_vec(n, seed, scale))
}

/// Values rounded to a storage dtype.
pub fn representable(dtype: crate::backend::DType, mut v: Vec<f32>) -> Vec<f32> {
    match dtype {
        crate::backend::DType::F16 => v.iter_mut().for_each(|x| *x = half::f16::from_f32(*x).to_f32()),
        crate::backend::DType::BF16 | crate::backend::DType::Int8 => v.iter_mut().for_each(|x| *x = half::bf16::from_f32(*x).to_f32()),
        crate::backend::DType::F32 => {}
    }
    v
}

/// Deterministic integers in [0, bound).
pub fn rand_ids(n: usize, seed: u32, bound: u32) -> Vec<u32> {
    let mut s = seed.wrapping_mul(747_796_405).wrapping_add(2_891_336_453) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            s % bound
        })
        .collect()
}

/// `cu_seqlens` [B+1] for the given lengths.
pub fn cu_seqlens(lengths: &[usize]) -> Vec<u32> {
    let mut cu = vec![0u32];
    for &l in lengths {
        cu.push(cu.last().unwrap() + l as u32);
    }
    cu
}

/// The CPU backend with bf16 weights.
pub fn cpu_bf16() -> CpuBackend {
    CpuBackend::new().with_dtype(crate::backend::DType::BF16).expect("the CPU backend accepts bf16")
}

/// Stamp out generic test functions `fn name<B: Backend>(b: &B)` once per backend: `cpu`,
/// `cpu_bf16`, `wgpu` (f32) and `wgpu_f16` modules with one `#[test]` each. Weights come from
/// `rand_for` (representable in the backend's weight dtype), so only products that round their
/// activations (bf16) need a looser tolerance (`tolerance::linear`).
#[macro_export]
macro_rules! backend_tests {
    ($($name:ident),* $(,)?) => {
        mod cpu {
            $( #[test] fn $name() { super::$name(&$crate::testing::cpu()); } )*
        }
        mod cpu_bf16 {
            $( #[test] fn $name() { super::$name(&$crate::testing::cpu_bf16()); } )*
        }
        mod wgpu {
            $( #[test] fn $name() { super::$name(&$crate::testing::gpu()); } )*
        }
        mod wgpu_f16 {
            $( #[test] fn $name() { super::$name(&$crate::testing::gpu_f16()); } )*
        }
    };
}

/// Like `backend_tests!`, for the training ops (f32 parameters and activations): `cpu` and `wgpu`
/// modules.
#[macro_export]
macro_rules! training_backend_tests {
    ($($name:ident),* $(,)?) => {
        mod cpu_training {
            $( #[test] fn $name() { super::$name(&$crate::testing::cpu()); } )*
        }
        mod wgpu_training {
            $( #[test] fn $name() { super::$name(&$crate::testing::gpu()); } )*
        }
    };
}

/// A family's WGSL exercise: every op of the family on the comptime variants the model uses, run
/// on the f32, f16-weight and f16-activation GPU backends so that `kernels/tests/wgsl.rs` can
/// validate every module cubecl compiles as WebGPU WGSL; and the kernels it must have compiled.
pub struct Exercise {
    /// The family's folder (`layernorm`, …).
    pub family: &'static str,
    /// Substrings of the kernel names the exercise compiles.
    pub kernels: &'static [&'static str],
    /// Training ops run where `b` is f32 end to end; mixed precision where weights are f16.
    pub run: fn(&GpuBackend),
}

inventory::collect!(Exercise);

/// Every family's registered exercise.
pub fn exercises() -> impl Iterator<Item = &'static Exercise> {
    inventory::iter::<Exercise>.into_iter()
}

/// Register a family's WGSL exercise: `wgsl_exercise!("family", ["kernel", …], function)`.
#[macro_export]
macro_rules! wgsl_exercise {
    ($family:literal, [$($kernel:literal),* $(,)?], $run:path) => {
        inventory::submit! { $crate::testing::Exercise { family: $family, kernels: &[$($kernel),*], run: $run } }
    };
}

/// The shapes every exercise covers: (heads, head dim) of 4 × 12 and 2 × 64 (hidden 48 and 128),
/// and sequences of 1, 5, 70 and 130 tokens (cu_seqlens).
pub fn exercise_shapes() -> impl Iterator<Item = (usize, usize, Vec<u32>)> {
    [(4usize, 12usize), (2, 64)].into_iter().map(|(nh, hd)| (nh, hd, cu_seqlens(&[1, 5, 70, 130])))
}

/// Whether `b` runs training ops (f32 weights and activations).
pub fn trains(b: &GpuBackend) -> bool {
    use crate::backend::DType;
    use crate::prelude::*;
    b.dtype() == DType::F32 && b.activation_dtype() == DType::F32
}
