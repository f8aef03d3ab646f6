//! The trainer's one error type.

/// Everything that can go wrong while training.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// From the model, its files or the runtime.
    #[error(transparent)]
    Runtime(#[from] runtime::Error),
    /// From a kernel launch or the device.
    #[error(transparent)]
    Kernel(#[from] kernels::Error),
    /// A reference, data or configuration file that is not what was expected (names the file).
    #[error("{file}: {message}")]
    File { file: String, message: String },
    /// A request that cannot be carried out as given.
    #[error("{0}")]
    Input(String),
    #[error("{path}: {source}")]
    Io { path: String, source: std::io::Error },
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub fn file(file: impl Into<String>, message: impl Into<String>) -> Self {
        Error::File { file: file.into(), message: message.into() }
    }
}
