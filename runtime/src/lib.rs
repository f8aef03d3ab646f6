//! The ModernBERT (and classic BERT) runtime: config, weights, tokenizer, the encoder and its heads over any
//! [`kernels::Backend`], and the parity check against transformers' reference tensors. Without
//! the default `compute` feature, only the parsers and file handling (what users feed the tools)
//! are built: the fuzz targets of `fuzz/` use that.

pub mod args;
#[cfg(feature = "compute")]
pub mod bert;
pub mod bundled;
#[cfg(feature = "compute")]
pub mod check;
pub mod config;
pub mod deid;
#[cfg(not(target_arch = "wasm32"))]
pub mod folder;
mod error;
pub mod files;
pub mod init;
#[cfg(not(target_arch = "wasm32"))]
pub mod input;
pub mod memory;
#[cfg(feature = "compute")]
pub mod model;
#[cfg(not(target_arch = "wasm32"))]
pub mod output;
#[cfg(feature = "compute")]
pub mod pipeline;
#[cfg(all(feature = "compute", not(target_arch = "wasm32")))]
pub mod progress;
#[cfg(not(target_arch = "wasm32"))]
pub mod serve;
pub mod surrogate;
pub mod tokenize;
pub mod tokenize_files;
pub mod torch;
pub mod weights;

pub use config::{BertConfig, ModelConfig, ModernBertConfig};
pub use error::{Error, Result};
#[cfg(feature = "compute")]
pub use model::{Model, ModernBert};
#[cfg(feature = "compute")]
pub use bert::Bert;
