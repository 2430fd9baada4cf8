//! Python handlers on cellshm threads: the GIL taken only while Python runs; the call's context (`current_call`).

use cellshm::{Call, CancelToken, SharedBytes};
use pyo3::prelude::*;

use crate::*;

/// A Python callable as a cellshm handler. It gets the request as bytes (or, with
/// `view`, a read-only memoryview into shared memory, released when it returns) and
/// returns a bytes-like object or None.
pub(crate) fn py_handler(
    handler: Py<PyAny>,
    view: bool,
) -> impl Fn(&mut Call<'_>) -> cellshm::Result<()> + Send + Sync + 'static {
    move |call| {
        keep_thread_state();
        Python::attach(|py| {
            let argument = if view {
                memoryview(py, call.request()).map_err(|e| from_py(py, e))?
            } else {
                bytes_of(py, call.request()).map_err(|e| from_py(py, e))?.into_bound(py).into_any()
            };
            let result = {
                let _current = CurrentCall::enter(call.cancel_token());
                handler.call1(py, (argument.clone(),))
            };
            if view && argument.call_method0("release").is_err() {
                // Something made from the view (a numpy array, a memoryview slice) is
                // still alive: the slot stays ours until the view can be released.
                let view = argument.unbind();
                call.retain_request_until(move || Python::attach(|py| view.bind(py).call_method0("release").is_ok()));
            }
            let answer = result.map_err(|e| from_py(py, e))?;
            let answer = answer.bind(py);
            if answer.is_none() {
                return Ok(());
            }
            let data = payload(Some(answer)).map_err(|e| from_py(py, e))?;
            call.reply(data.as_slice())
        })
    }
}

thread_local! {
    /// The unary call this thread's Python handler is running, for `current_call()`.
    static CURRENT_CALL: std::cell::RefCell<Option<CancelToken>> = const { std::cell::RefCell::new(None) };
}

/// Makes `current_call()` answer for one handler run; restores the previous on drop.
pub(crate) struct CurrentCall(Option<CancelToken>);

impl CurrentCall {
    pub(crate) fn enter(token: CancelToken) -> CurrentCall {
        CurrentCall(CURRENT_CALL.with(|c| c.replace(Some(token))))
    }
}

impl Drop for CurrentCall {
    fn drop(&mut self) {
        let previous = self.0.take();
        CURRENT_CALL.with(|c| *c.borrow_mut() = previous);
    }
}

/// The unary call a Python handler is serving (see `cellshm.current_call`).
#[pyclass(module = "cellshm._native", frozen)]
pub(crate) struct CallContext {
    pub(crate) token: CancelToken,
}

#[pymethods]
impl CallContext {
    /// True once the caller cancelled the call, its deadline passed, or it went away.
    #[getter]
    pub(crate) fn cancelled(&self) -> bool {
        self.token.is_cancelled()
    }

    /// Waits up to `timeout` seconds (GIL released) for cancellation; returns it.
    pub(crate) fn wait_cancelled(&self, py: Python<'_>, timeout: f64) -> PyResult<bool> {
        let timeout = duration(timeout, "timeout")?;
        Ok(py.detach(|| self.token.wait_cancelled(timeout)))
    }

    /// The caller's deadline (CLOCK_MONOTONIC ns, as `time.monotonic_ns()`), 0 if none.
    #[getter]
    pub(crate) fn deadline_ns(&self) -> u64 {
        self.token.deadline_ns()
    }

    /// Who calls (host side), a `cellshm.CallerInfo`; None in a cell.
    #[getter]
    pub(crate) fn caller(&self, py: Python<'_>) -> PyResult<Option<Py<PyAny>>> {
        let Some(caller) = py_caller(self.token.caller()) else { return Ok(None) };
        Ok(Some(py.import("cellshm")?.getattr("CallerInfo")?.call1(caller)?.unbind()))
    }
}

/// The unary call being handled on this thread; RuntimeError outside a handler.
#[pyfunction]
pub(crate) fn current_call() -> PyResult<CallContext> {
    CURRENT_CALL.with(|c| c.borrow().clone()).map(|token| CallContext { token }).ok_or_else(|| {
        pyo3::exceptions::PyRuntimeError::new_err("current_call() is only valid inside a (sync) method handler")
    })
}

/// Gives the calling cellshm server thread a Python thread state that lives as long as
/// the thread. Without it every `Python::attach` on a non-Python thread creates and
/// destroys one, which cost ~10 µs per handler call.
pub(crate) fn keep_thread_state() {
    thread_local!(static KEPT: std::cell::Cell<bool> = const { std::cell::Cell::new(false) });
    KEPT.with(|kept| {
        if !kept.get() {
            // SAFETY: handlers run only on cellshm's own server threads, which never hold
            // the GIL here. Ensure creates this thread's state and takes the GIL; SaveThread
            // releases the GIL but keeps the state (its Ensure count stays at 1), so later
            // attaches on this thread reuse it.
            unsafe {
                let _ = pyo3::ffi::PyGILState_Ensure();
                let _ = pyo3::ffi::PyEval_SaveThread();
            }
            kept.set(true);
        }
    });
}

/// CPython's `PyBUF_READ` flag for `PyMemoryView_FromMemory` (part of the stable ABI).
pub(crate) const PYBUF_READ: std::os::raw::c_int = 0x100;

/// A read-only memoryview of `data` where it lies (valid until released).
pub(crate) fn memoryview<'py>(py: Python<'py>, data: SharedBytes<'_>) -> PyResult<Bound<'py, PyAny>> {
    // SAFETY: PyMemoryView_FromMemory makes a read-only view (PyBUF_READ) of `data`; the
    // caller releases it before `data` stops being valid, or retains the request until
    // it can. Python reads it through C, never through a Rust reference.
    unsafe {
        let raw = pyo3::ffi::PyMemoryView_FromMemory(
            data.as_ptr() as *mut std::os::raw::c_char,
            data.len() as pyo3::ffi::Py_ssize_t,
            PYBUF_READ,
        );
        Bound::from_owned_ptr_or_err(py, raw)
    }
}
