//! The one error type of the crate: a status from the shared table plus a message.

use std::fmt;

use crate::frame::Status;

/// A failed operation: a [`Status`] (the same numbers in Rust, C and Python) and a
/// human-readable message saying what went wrong and where.
#[derive(Clone, PartialEq, Eq, thiserror::Error)]
#[error("{status}: {message}")]
pub struct Error {
    status: Status,
    message: String,
}

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// An error with `status` and `message`. `Status::Ok` is not an error and is
    /// turned into `Status::Unknown`.
    pub fn new(status: Status, message: impl Into<String>) -> Error {
        let status = if status == Status::Ok { Status::Unknown } else { status };
        Error { status, message: message.into() }
    }

    /// An operating-system failure while doing `what`.
    pub fn system(what: impl fmt::Display, err: std::io::Error) -> Error {
        Error::new(Status::SystemError, format!("{what}: {err}"))
    }

    /// The status code.
    pub fn status(&self) -> Status {
        self.status
    }

    /// The message.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The same error with `context: ` in front of the message.
    pub fn context(self, context: impl fmt::Display) -> Error {
        Error { status: self.status, message: format!("{context}: {}", self.message) }
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Error({}: {:?})", self.status, self.message)
    }
}
