//! The cubecl backend: every op is a `#[cube]` kernel from its family folder (GEMM from
//! cubek-matmul), on wgpu (Vulkan, Metal, DX12, WebGPU) or CUDA.
//!
//! Weights are stored in the backend's weight dtype: f32, or f16 where the adapter has
//! `shader-f16` (half the memory and bandwidth). Activations are f32, or f16 as well
//! (`with_activations`: f16 end to end); every kernel computes in f32 whatever it reads and
//! writes. A tensor larger than one binding allows (ModernBERT-base's embedding
//! table is 155 MB; lavapipe and WebGPU bind at most 128 MiB) is stored as several row chunks,
//! each its own allocation; the ops that take weights (`embedding`, `linear`) walk the chunks.
//! An activation must fit one binding: an op whose output would not is refused with a `Limit`
//! error. The model runs the MLP in row chunks where its [T, 2I] intermediate could exceed a
//! binding; callers keep batches within the device's budget (`pipeline::Settings`).
//!
//! Training: parameters are uploaded f32 (in row chunks like any tensor above one binding), and the
//! outputs that can be as large as a parameter (the gradients of `embedding_backward` and
//! `matmul_tn`, and `adam_step`'s p, m, v) come in the same row chunks (`alloc_parts`);
//! `add`, `scale`, `sum_squares`, `adam_step` and `read` walk them part by part, and `matmul`
//! accepts a chunked right operand. Every other op needs its tensors in one binding.

mod backend;
pub mod tensor;

pub use tensor::{GpuBackend, GpuIds, GpuSeqs, GpuTensor};
