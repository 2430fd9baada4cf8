//! The one error type of the crate: a status from the shared table plus a message.

use std::fmt;

use crate::wire::Status;

/// A failed operation: a [`Status`] (the same numbers in Rust, C and Python) and a
/// human-readable message saying what went wrong and where. A status number this side
/// does not know (a newer peer's) is kept as it came: [`Error::status`] says
/// `Unknown`, [`Error::code`] keeps the number, and it travels on unchanged.
#[derive(Clone, PartialEq, Eq)]
pub struct Error {
    status: Status,
    code: u32,
    message: String,
}

impl std::error::Error for Error {}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.code == self.status.code() {
            write!(f, "{}: {}", self.status, self.message)
        } else {
            write!(f, "status {}: {}", self.code, self.message)
        }
    }
}

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// An error with `status` and `message`. `Status::Ok` is not an error and is
    /// turned into `Status::Unknown`.
    pub fn new(status: Status, message: impl Into<String>) -> Error {
        let status = if status == Status::Ok { Status::Unknown } else { status };
        Error { status, code: status.code(), message: message.into() }
    }

    /// An error with the status number `code`, as a peer or a handler in another
    /// language gave it: a number not in the table is kept (status `Unknown`); 0 (OK)
    /// is not an error and becomes `Unknown`.
    pub fn with_code(code: u32, message: impl Into<String>) -> Error {
        match Status::from_code(code) {
            Some(status) => Error::new(status, message),
            None => Error { status: Status::Unknown, code, message: message.into() },
        }
    }

    /// An operating-system failure while doing `what`.
    pub fn system(what: impl fmt::Display, err: std::io::Error) -> Error {
        Error::new(Status::SystemError, format!("{what}: {err}"))
    }

    /// The status code.
    pub fn status(&self) -> Status {
        self.status
    }

    /// The status number: `status().code()`, or the number as it came when this side
    /// does not know it.
    pub fn code(&self) -> u32 {
        self.code
    }

    /// The message.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The same error with `context: ` in front of the message.
    pub fn context(self, context: impl fmt::Display) -> Error {
        Error { message: format!("{context}: {}", self.message), ..self }
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Error({self})")
    }
}

/// What a caught panic said: its message if it was a string, else a placeholder.
pub fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a non-string panic".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_status_number_not_in_the_table_is_kept() {
        let e = Error::with_code(142, "from a newer peer");
        assert_eq!((e.status(), e.code()), (Status::Unknown, 142));
        assert_eq!(e.to_string(), "status 142: from a newer peer");
        let e = e.context("calling");
        assert_eq!((e.code(), e.message()), (142, "calling: from a newer peer"));
        let known = Error::with_code(Status::NotFound.code(), "gone");
        assert_eq!((known.status(), known.code()), (Status::NotFound, 5));
        assert_eq!(known.to_string(), "NOT_FOUND: gone");
        assert_eq!(Error::with_code(0, "ok is no error").status(), Status::Unknown);
        assert_eq!(Error::with_code(0, "ok is no error").code(), 2);
    }
}
