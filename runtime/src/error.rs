//! The one error type of the runtime crate. Every message names the file (or input) and the
//! field, tensor or line at fault, and says what was expected.

/// What can go wrong when loading or running a model.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {source}")]
    Io { path: String, source: std::io::Error },
    /// A `config.json` that is not valid JSON, has a field of the wrong type or an unsupported value.
    #[error("{path}: {message}")]
    Config { path: String, message: String },
    /// A checkpoint that is truncated, corrupt, missing a tensor or has a wrong shape.
    #[error("{path}: {message}")]
    Weights { path: String, message: String },
    /// A tokenizer that cannot be read or disagrees with the config.
    #[error("{path}: {message}")]
    Tokenizer { path: String, message: String },
    /// Bad user input (documents, reference files, arguments).
    #[error("{0}")]
    Input(String),
    /// The model produced NaN or an infinity for a document: nothing computed from it can be
    /// trusted (a de-identification model whose logits are NaN finds no PHI), so it is an error,
    /// never an empty result. `doc` says which ("document 3" until the caller names it with
    /// `Error::naming_documents`), `index` is its place in the batch.
    #[error("{doc}: the model's {what} are not finite (NaN or infinity); its weights or the backend are broken, and no result is given for text the model cannot read")]
    NonFinite { doc: String, index: Option<usize>, what: String },
    /// The compute layer refused or failed.
    #[cfg(feature = "compute")]
    #[error(transparent)]
    Kernel(#[from] kernels::Error),
}

/// `Result` with the crate's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// A `NonFinite` error naming its document by `ids[index]` instead of its index.
    pub fn naming_documents(self, ids: &[String]) -> Self {
        match self {
            Error::NonFinite { index: Some(i), what, .. } if i < ids.len() => Error::NonFinite { doc: format!("document \"{}\"", ids[i]), index: Some(i), what },
            other => other,
        }
    }
    pub(crate) fn config(path: &str, message: impl Into<String>) -> Self {
        Error::Config { path: path.to_string(), message: message.into() }
    }
    pub(crate) fn weights(path: &str, message: impl Into<String>) -> Self {
        Error::Weights { path: path.to_string(), message: message.into() }
    }
    pub(crate) fn tokenizer(path: &str, message: impl Into<String>) -> Self {
        Error::Tokenizer { path: path.to_string(), message: message.into() }
    }
}
