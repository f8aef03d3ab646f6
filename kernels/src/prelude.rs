//! Every op trait, for code that holds a concrete backend (`CpuBackend`, `GpuBackend`): a method
//! of a trait is callable only where the trait is in scope. Generic code bounds on `B: Backend`
//! and needs none of this.

pub use crate::backend::{AttentionOps, Backend, ElementwiseOps, EmbeddingOps, LayerNormOps, LinearOps, LossOps, OptimOps, ReduceOps, RopeOps, Storage};
