//! asyncio support: completions signalled through an eventfd the loop watches; started calls.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::Arc;

use cellshm::{Error, PendingCall as CorePendingCall};
use parking_lot::Mutex;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyBytes;

use crate::*;

/// An eventfd an event loop watches (`loop.add_reader`): started calls push their token
/// here when they complete and signal the fd; `drain` hands the tokens to the loop.
#[pyclass(module = "cellshm._native", frozen)]
pub(crate) struct AsyncNotifier {
    pub(crate) inner: Arc<NotifierInner>,
}

pub(crate) struct NotifierInner {
    pub(crate) fd: OwnedFd,
    pub(crate) done: Mutex<Vec<u64>>,
}

impl NotifierInner {
    pub(crate) fn signal(&self, token: u64) {
        self.done.lock().push(token);
        let one = 1u64;
        // SAFETY: writes 8 bytes from a live local to our eventfd; a full counter already
        // means "signalled".
        unsafe { libc::write(self.fd.as_raw_fd(), (&one as *const u64).cast(), 8) };
    }
}

#[pymethods]
impl AsyncNotifier {
    #[new]
    pub(crate) fn new() -> PyResult<Self> {
        // SAFETY: eventfd takes no pointers.
        let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if fd < 0 {
            return Err(err(Error::system("creating an eventfd", std::io::Error::last_os_error())));
        }
        // SAFETY: eventfd succeeded; the fd is ours.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(AsyncNotifier { inner: Arc::new(NotifierInner { fd, done: Mutex::new(Vec::new()) }) })
    }

    /// The fd to watch for readability.
    pub(crate) fn fileno(&self) -> i32 {
        self.inner.fd.as_raw_fd()
    }

    /// Clears the fd and returns the tokens of the calls completed since the last drain.
    pub(crate) fn drain(&self) -> Vec<u64> {
        let mut value = 0u64;
        // SAFETY: reads 8 bytes into a live local from our non-blocking eventfd.
        unsafe { libc::read(self.inner.fd.as_raw_fd(), (&mut value as *mut u64).cast(), 8) };
        std::mem::take(&mut *self.inner.done.lock())
    }
}

/// Wakes a polled stream's loop: pushes `token` on the notifier.
struct TokenWake {
    inner: Arc<NotifierInner>,
    token: u64,
}

impl std::task::Wake for TokenWake {
    fn wake(self: Arc<Self>) {
        self.inner.signal(self.token);
    }
}

/// Polls `poll` once with a waker that pushes `token` on `notifier` when what it waits
/// for may have changed: how asyncio code waits on a stream without a thread.
pub(crate) fn poll_once<T>(
    notifier: &AsyncNotifier,
    token: u64,
    poll: impl FnOnce(&mut std::task::Context<'_>) -> std::task::Poll<T>,
) -> Option<T> {
    let waker = std::task::Waker::from(Arc::new(TokenWake { inner: notifier.inner.clone(), token }));
    match poll(&mut std::task::Context::from_waker(&waker)) {
        std::task::Poll::Ready(value) => Some(value),
        std::task::Poll::Pending => None,
    }
}

pub(crate) fn completion(notifier: &AsyncNotifier, token: u64) -> cellshm::Completion {
    let inner = notifier.inner.clone();
    Box::new(move || inner.signal(token))
}

/// A call started by `call_start`; its notifier token says when `take` has the result.
#[pyclass(module = "cellshm._native", frozen)]
pub(crate) struct PendingCall {
    pub(crate) call: CorePendingCall,
}

#[pymethods]
impl PendingCall {
    /// True once the result is in.
    pub(crate) fn done(&self) -> bool {
        self.call.is_done()
    }

    /// The response (raises the call's error). Only once the call is done.
    pub(crate) fn take(&self, py: Python<'_>) -> PyResult<Py<PyBytes>> {
        match self.call.try_take() {
            None => Err(PyValueError::new_err("the call has not completed yet")),
            Some(Ok(response)) => response_bytes(py, &response),
            Some(Err(e)) => Err(to_py(py, &e)),
        }
    }

    /// Stops waiting; True if the call was still outstanding.
    pub(crate) fn cancel(&self) -> bool {
        self.call.cancel()
    }
}
