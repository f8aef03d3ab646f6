//! The one error type of the kernels crate.

/// What can go wrong in the compute layer.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An operand has the wrong shape or dtype; caught at the launcher, before any dispatch.
    #[error("{op}: {message}")]
    Shape { op: &'static str, message: String },
    /// The device cannot hold or bind a tensor of this size.
    #[error("{op}: {message}")]
    Limit { op: &'static str, message: String },
    /// No usable device, or the device was lost.
    #[error("device: {0}")]
    Device(String),
    /// A kernel failed to compile or launch, or a read-back failed.
    #[error("{op}: {message}")]
    Launch { op: &'static str, message: String },
}

/// `Result` with the crate's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub(crate) fn shape(op: &'static str, message: impl Into<String>) -> Self {
        Error::Shape { op, message: message.into() }
    }
    pub(crate) fn limit(op: &'static str, message: impl Into<String>) -> Self {
        Error::Limit { op, message: message.into() }
    }
    pub(crate) fn launch(op: &'static str, message: impl std::fmt::Display) -> Self {
        Error::Launch { op, message: message.to_string() }
    }
}
