//! The ModernBERT (and classic BERT) runtime: config, weights, tokenizer, the encoder and its heads over any
//! [`kernels::Backend`], and the parity check against transformers' reference tensors. Without
//! the default `compute` feature, only the parsers and file handling (what users feed the tools)
//! are built: the fuzz targets of `fuzz/` use that.

pub mod args;
pub mod bundled;
#[cfg(feature = "compute")]
pub mod check;
pub mod config;
pub mod deid;
pub mod detect;
pub mod phi_dict;
pub mod phi_rules;
pub mod dtype;
mod error;
pub mod files;
#[cfg(not(target_arch = "wasm32"))]
pub mod folder;
pub mod init;
#[cfg(not(target_arch = "wasm32"))]
pub mod input;
pub mod memory;
#[cfg(feature = "compute")]
pub mod model;
#[cfg(feature = "compute")]
pub mod pipeline;
pub mod surrogate;
pub mod tokenize;
pub mod tokenize_files;
pub mod torch;
pub mod weights;

pub use config::{BertConfig, ModelConfig, ModernBertConfig};
pub use error::{Error, Result};
#[cfg(feature = "compute")]
pub use model::{Bert, Encoder, Model, ModernBert};
