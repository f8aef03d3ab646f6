//! Training ModernBERT-family encoders on the runtime's kernels: the backward pass, the
//! optimizers and schedules, parity checks against transformers' training fixtures.

pub mod backward;
pub mod check;
pub mod checkpoint;
pub mod corpus;
pub mod data;
pub mod deid_eval;
pub mod dist;
mod error;
pub mod finetune;
pub mod mask;
pub mod optim;
pub mod pretrain;
pub mod report;
pub mod schedule;
pub mod synth;

pub use error::{Error, Result};
