//! Errors both ways: a cellshm error as the exception of its status, an exception as a status.

use cellshm::{Error, Status};
use pyo3::prelude::*;

/// The `cellshm.errors` exception for `error`.
pub(crate) fn to_py(py: Python<'_>, error: &Error) -> PyErr {
    let made =
        py.import("cellshm.errors").and_then(|m| m.call_method1("_from_status", (error.code(), error.message())));
    match made {
        Ok(exception) => PyErr::from_value(exception),
        Err(import_failed) => import_failed,
    }
}

pub(crate) fn err(error: Error) -> PyErr {
    Python::attach(|py| to_py(py, &error))
}

/// The status and message for an exception raised by a Python handler: a
/// `cellshm.CellshmError` keeps its code; anything else is INTERNAL "Type: message".
pub(crate) fn from_py(py: Python<'_>, exception: PyErr) -> Error {
    let value = exception.value(py);
    let code = value.getattr("code").ok().and_then(|c| c.extract::<u32>().ok());
    let is_ours = py
        .import("cellshm.errors")
        .and_then(|m| m.getattr("CellshmError"))
        .map(|base| value.is_instance(&base).unwrap_or(false))
        .unwrap_or(false);
    match (is_ours, code) {
        // A code this side does not know is kept as it is (see Error::with_code).
        (true, Some(code)) if code != 0 => {
            let message = value.getattr("message").and_then(|m| m.extract::<String>()).unwrap_or_default();
            Error::with_code(code, message)
        }
        _ => {
            let kind = value.get_type().name().map(|n| n.to_string()).unwrap_or_else(|_| "Exception".into());
            let text = value.str().map(|s| s.to_string()).unwrap_or_default();
            Error::new(Status::Internal, if text.is_empty() { kind } else { format!("{kind}: {text}") })
        }
    }
}
