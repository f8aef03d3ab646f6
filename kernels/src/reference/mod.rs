//! Plain-Rust oracles for every kernel: loops and shape comments, no cleverness.
//!
//! Every kernel test compares a backend (cubecl on wgpu/CUDA, the CPU backend) against these
//! functions. They take and return `f32` like the kernels, and accumulate in `f64` so that the
//! oracle itself sits well below float32 noise.
//!
//! Dimension names used everywhere: T tokens of an unpadded batch (all sequences concatenated),
//! B sequences, H hidden, nh heads, hd head dim (H = nh·hd), I intermediate, V vocabulary,
//! C labels, N rows of a generic matrix. `cu_seqlens` [B+1] holds the cumulative sequence offsets
//! (`cu_seqlens[0] = 0`, `cu_seqlens[B] = T`).

mod attention;
mod elementwise;
mod embedding;
#[cfg(test)]
mod gradcheck;
mod layernorm;
mod linear;
mod loss;
mod optim;
mod pool;
mod rope;

pub use attention::*;
pub use elementwise::*;
pub use embedding::*;
pub use layernorm::*;
pub use linear::*;
pub use loss::*;
pub use optim::*;
pub use pool::*;
pub use rope::*;
