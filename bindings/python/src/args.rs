//! Arguments from Python: payloads (bytes read in place), timeouts, method names.

use std::time::Duration;

use cellshm::{CallOptions, Response, SharedBytes, WaitStrategy};
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyByteArray, PyBytes, PyMemoryView};

use crate::*;

/// A request payload borrowed from Python: bytes are read in place (immutable, kept
/// alive); other bytes-like objects are copied once while the GIL is held.
pub(crate) enum Payload {
    Bytes { _keep: Py<PyBytes>, ptr: *const u8, len: usize },
    Owned(Vec<u8>),
}

// SAFETY: `ptr` points into the immutable buffer of a bytes object kept alive by `keep`;
// reading it from another thread while the GIL is released is sound because bytes
// objects never change after creation.
unsafe impl Send for Payload {}
// SAFETY: as above; the data is only ever read.
unsafe impl Sync for Payload {}

impl Payload {
    pub(crate) fn as_slice(&self) -> &[u8] {
        match self {
            // SAFETY: see `unsafe impl Send`: the bytes object outlives `self`.
            Payload::Bytes { ptr, len, .. } => unsafe { std::slice::from_raw_parts(*ptr, *len) },
            Payload::Owned(v) => v,
        }
    }
}

pub(crate) fn payload(obj: Option<&Bound<'_, PyAny>>) -> PyResult<Payload> {
    let Some(obj) = obj else { return Ok(Payload::Owned(Vec::new())) };
    if let Ok(bytes) = obj.cast::<PyBytes>() {
        let data = bytes.as_bytes();
        return Ok(Payload::Bytes { ptr: data.as_ptr(), len: data.len(), _keep: bytes.clone().unbind() });
    }
    if let Ok(array) = obj.cast::<PyByteArray>() {
        return Ok(Payload::Owned(array.to_vec()));
    }
    if obj.cast::<PyMemoryView>().is_ok() {
        let bytes = obj.call_method0("tobytes")?;
        let bytes = bytes.cast::<PyBytes>()?;
        return Ok(Payload::Owned(bytes.as_bytes().to_vec()));
    }
    let kind = obj.get_type().name().map(|n| n.to_string()).unwrap_or_default();
    Err(PyTypeError::new_err(format!("payload must be bytes, bytearray or memoryview, not {kind}")))
}

pub(crate) fn duration(seconds: f64, what: &str) -> PyResult<Duration> {
    if !seconds.is_finite() || seconds < 0.0 {
        return Err(PyValueError::new_err(format!("{what} must be a non-negative number of seconds, got {seconds}")));
    }
    Ok(Duration::from_secs_f64(seconds.min(1e9)))
}

/// Seconds, where `math.inf` is [`cellshm::FOREVER`] (no limit).
pub(crate) fn timeout_or_forever(seconds: f64, what: &str) -> PyResult<Duration> {
    if seconds == f64::INFINITY {
        return Ok(cellshm::FOREVER);
    }
    duration(seconds, what)
}

/// `None`: the link's default timeout; `math.inf`: no limit.
pub(crate) fn call_options(timeout: Option<f64>) -> PyResult<CallOptions> {
    Ok(match timeout {
        None => CallOptions::default(),
        Some(t) => CallOptions::timeout(timeout_or_forever(t, "timeout")?),
    })
}

/// The arguments of every call-like method, checked in this order.
pub(crate) fn call_args<'a>(
    method: &'a str,
    payload: Option<&Bound<'_, PyAny>>,
    timeout: Option<f64>,
) -> PyResult<(&'a str, Payload, CallOptions)> {
    let method = method_name(method)?;
    let options = call_options(timeout)?;
    Ok((method, self::payload(payload)?, options))
}

pub(crate) fn method_name(method: &str) -> PyResult<&str> {
    if method.is_empty() {
        return Err(PyValueError::new_err("method name is empty; expected \"Service.method\""));
    }
    Ok(method)
}

pub(crate) fn wait_strategy(wait: &str, spin_us: u64) -> PyResult<WaitStrategy> {
    match wait {
        "spin" => Ok(WaitStrategy::Spin),
        "block" => Ok(WaitStrategy::Block),
        "adaptive" => Ok(WaitStrategy::Adaptive { spin: Duration::from_micros(spin_us) }),
        other => Err(PyValueError::new_err(format!("wait must be \"spin\", \"adaptive\" or \"block\", not {other:?}"))),
    }
}

/// Copies a response into a new bytes object; large ones with the GIL released.
pub(crate) fn response_bytes(py: Python<'_>, response: &Response) -> PyResult<Py<PyBytes>> {
    bytes_of(py, response.payload())
}

/// Copies `data` (straight out of shared memory) into a new bytes object; large ones
/// with the GIL released.
pub(crate) fn bytes_of(py: Python<'_>, data: SharedBytes<'_>) -> PyResult<Py<PyBytes>> {
    let bytes = PyBytes::new_with(py, data.len(), |buf| {
        if data.len() >= LARGE_COPY {
            // The new bytes object is not shared yet, so filling it without the GIL is safe.
            py.detach(|| data.copy_to_slice(0, buf));
        } else {
            data.copy_to_slice(0, buf);
        }
        Ok(())
    })?;
    Ok(bytes.unbind())
}
