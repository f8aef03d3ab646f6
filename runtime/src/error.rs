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
    /// The compute layer refused or failed.
    #[error(transparent)]
    Kernel(#[from] kernels::Error),
}

/// `Result` with the crate's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
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
