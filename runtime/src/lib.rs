//! The ModernBERT (and classic BERT) runtime: config, weights, tokenizer, the encoder and its heads over any
//! [`kernels::Backend`], and the parity check against transformers' reference tensors.

pub mod bert;
pub mod bundled;
pub mod check;
pub mod config;
pub mod deid;
#[cfg(not(target_arch = "wasm32"))]
pub mod folder;
mod error;
pub mod init;
#[cfg(not(target_arch = "wasm32"))]
pub mod input;
pub mod model;
#[cfg(not(target_arch = "wasm32"))]
pub mod output;
pub mod pipeline;
#[cfg(not(target_arch = "wasm32"))]
pub mod progress;
#[cfg(not(target_arch = "wasm32"))]
pub mod serve;
pub mod tokenize;
pub mod tokenize_files;
pub mod torch;
pub mod weights;

pub use config::{BertConfig, ModelConfig, ModernBertConfig};
pub use error::{Error, Result};
pub use model::{Model, ModernBert};
pub use bert::Bert;
