//! Training ModernBERT-family encoders on the runtime's kernels: the backward pass, the
//! optimizers and schedules, parity checks against transformers' training fixtures.

pub mod backward;
pub mod check;
pub mod checkpoint;
pub mod data;
mod error;
pub mod finetune;
pub mod mask;
pub mod optim;
pub mod pretrain;
pub mod schedule;

pub use error::{Error, Result};
