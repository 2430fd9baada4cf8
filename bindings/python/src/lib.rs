//! `cellshm._native`: the Python binding's native module. The pure-Python package
//! `cellshm` wraps it; `python/cellshm/_native.pyi` describes it (checked by stubtest).
//!
//! Every blocking wait and every large copy runs with the GIL released
//! (`Python::detach`); handlers run on cellshm's threads and take the GIL only while
//! Python code runs. Errors become the exception classes of `cellshm.errors`.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::Arc;
use std::time::Duration;

use cellshm::{
    wire, Call, CallOptions, CancelToken, Cell as CoreCell, CellOptions, CellProcess, Error, Hub as CoreHub, HubConfig,
    JoinArgs, LogRecord, Peer as CorePeer, PeerOptions, PeerState, PendingCall as CorePendingCall, Response,
    SharedBytes, Status, Stream as CoreStream, StreamCall as CoreStreamCall, StreamEnd, WaitStrategy,
};
use parking_lot::Mutex;
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyByteArray, PyBytes, PyDict, PyMemoryView, PyTuple};

mod link_end;
use cellshm::Registry;
use link_end::{Closable, LinkEnd};

/// Responses from this size on are copied into Python with the GIL released.
const LARGE_COPY: usize = 64 * 1024;

// ----- errors --------------------------------------------------------------------------

/// The `cellshm.errors` exception for `error`.
fn to_py(py: Python<'_>, error: &Error) -> PyErr {
    let made =
        py.import("cellshm.errors").and_then(|m| m.call_method1("_from_status", (error.code(), error.message())));
    match made {
        Ok(exception) => PyErr::from_value(exception),
        Err(import_failed) => import_failed,
    }
}

fn err(error: Error) -> PyErr {
    Python::attach(|py| to_py(py, &error))
}

/// The status and message for an exception raised by a Python handler: a
/// `cellshm.CellshmError` keeps its code; anything else is INTERNAL "Type: message".
fn from_py(py: Python<'_>, exception: PyErr) -> Error {
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

// ----- arguments -----------------------------------------------------------------------

/// A request payload borrowed from Python: bytes are read in place (immutable, kept
/// alive); other bytes-like objects are copied once while the GIL is held.
enum Payload {
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
    fn as_slice(&self) -> &[u8] {
        match self {
            // SAFETY: see `unsafe impl Send`: the bytes object outlives `self`.
            Payload::Bytes { ptr, len, .. } => unsafe { std::slice::from_raw_parts(*ptr, *len) },
            Payload::Owned(v) => v,
        }
    }
}

fn payload(obj: Option<&Bound<'_, PyAny>>) -> PyResult<Payload> {
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

fn duration(seconds: f64, what: &str) -> PyResult<Duration> {
    if !seconds.is_finite() || seconds < 0.0 {
        return Err(PyValueError::new_err(format!("{what} must be a non-negative number of seconds, got {seconds}")));
    }
    Ok(Duration::from_secs_f64(seconds.min(1e9)))
}

/// Seconds, where `math.inf` is [`cellshm::FOREVER`] (no limit).
fn timeout_or_forever(seconds: f64, what: &str) -> PyResult<Duration> {
    if seconds == f64::INFINITY {
        return Ok(cellshm::FOREVER);
    }
    duration(seconds, what)
}

/// `None`: the link's default timeout; `math.inf`: no limit.
fn call_options(timeout: Option<f64>) -> PyResult<CallOptions> {
    Ok(match timeout {
        None => CallOptions::default(),
        Some(t) => CallOptions::timeout(timeout_or_forever(t, "timeout")?),
    })
}

/// The arguments of every call-like method, checked in this order.
fn call_args<'a>(
    method: &'a str,
    payload: Option<&Bound<'_, PyAny>>,
    timeout: Option<f64>,
) -> PyResult<(&'a str, Payload, CallOptions)> {
    let method = method_name(method)?;
    let options = call_options(timeout)?;
    Ok((method, self::payload(payload)?, options))
}

fn method_name(method: &str) -> PyResult<&str> {
    if method.is_empty() {
        return Err(PyValueError::new_err("method name is empty; expected \"Service.method\""));
    }
    Ok(method)
}

fn wait_strategy(wait: &str, spin_us: u64) -> PyResult<WaitStrategy> {
    match wait {
        "spin" => Ok(WaitStrategy::Spin),
        "block" => Ok(WaitStrategy::Block),
        "adaptive" => Ok(WaitStrategy::Adaptive { spin: Duration::from_micros(spin_us) }),
        other => Err(PyValueError::new_err(format!("wait must be \"spin\", \"adaptive\" or \"block\", not {other:?}"))),
    }
}

/// Copies a response into a new bytes object; large ones with the GIL released.
fn response_bytes(py: Python<'_>, response: &Response) -> PyResult<Py<PyBytes>> {
    bytes_of(py, response.payload())
}

/// Copies `data` (straight out of shared memory) into a new bytes object; large ones
/// with the GIL released.
fn bytes_of(py: Python<'_>, data: SharedBytes<'_>) -> PyResult<Py<PyBytes>> {
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

// ----- handlers ------------------------------------------------------------------------

/// A Python callable as a cellshm handler. It gets the request as bytes (or, with
/// `view`, a read-only memoryview into shared memory, released when it returns) and
/// returns a bytes-like object or None.
fn py_handler(handler: Py<PyAny>, view: bool) -> impl Fn(&mut Call<'_>) -> cellshm::Result<()> + Send + Sync + 'static {
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
struct CurrentCall(Option<CancelToken>);

impl CurrentCall {
    fn enter(token: CancelToken) -> CurrentCall {
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
struct CallContext {
    token: CancelToken,
}

#[pymethods]
impl CallContext {
    /// True once the caller cancelled the call, its deadline passed, or it went away.
    #[getter]
    fn cancelled(&self) -> bool {
        self.token.is_cancelled()
    }

    /// Waits up to `timeout` seconds (GIL released) for cancellation; returns it.
    fn wait_cancelled(&self, py: Python<'_>, timeout: f64) -> PyResult<bool> {
        let timeout = duration(timeout, "timeout")?;
        Ok(py.detach(|| self.token.wait_cancelled(timeout)))
    }

    /// The caller's deadline (CLOCK_MONOTONIC ns, as `time.monotonic_ns()`), 0 if none.
    #[getter]
    fn deadline_ns(&self) -> u64 {
        self.token.deadline_ns()
    }

    /// Who calls (host side), a `cellshm.CallerInfo`; None in a cell.
    #[getter]
    fn caller(&self, py: Python<'_>) -> PyResult<Option<Py<PyAny>>> {
        let Some(caller) = py_caller(self.token.caller()) else { return Ok(None) };
        Ok(Some(py.import("cellshm")?.getattr("CallerInfo")?.call1(caller)?.unbind()))
    }
}

/// The unary call being handled on this thread; RuntimeError outside a handler.
#[pyfunction]
fn current_call() -> PyResult<CallContext> {
    CURRENT_CALL.with(|c| c.borrow().clone()).map(|token| CallContext { token }).ok_or_else(|| {
        pyo3::exceptions::PyRuntimeError::new_err("current_call() is only valid inside a (sync) method handler")
    })
}

/// Gives the calling cellshm server thread a Python thread state that lives as long as
/// the thread. Without it every `Python::attach` on a non-Python thread creates and
/// destroys one, which cost ~10 µs per handler call.
fn keep_thread_state() {
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
const PYBUF_READ: std::os::raw::c_int = 0x100;

/// A read-only memoryview of `data` where it lies (valid until released).
fn memoryview<'py>(py: Python<'py>, data: SharedBytes<'_>) -> PyResult<Bound<'py, PyAny>> {
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

// ----- asyncio support -----------------------------------------------------------------

/// An eventfd an event loop watches (`loop.add_reader`): started calls push their token
/// here when they complete and signal the fd; `drain` hands the tokens to the loop.
#[pyclass(module = "cellshm._native", frozen)]
struct AsyncNotifier {
    inner: Arc<NotifierInner>,
}

struct NotifierInner {
    fd: OwnedFd,
    done: Mutex<Vec<u64>>,
}

impl NotifierInner {
    fn signal(&self, token: u64) {
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
    fn new() -> PyResult<Self> {
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
    fn fileno(&self) -> i32 {
        self.inner.fd.as_raw_fd()
    }

    /// Clears the fd and returns the tokens of the calls completed since the last drain.
    fn drain(&self) -> Vec<u64> {
        let mut value = 0u64;
        // SAFETY: reads 8 bytes into a live local from our non-blocking eventfd.
        unsafe { libc::read(self.inner.fd.as_raw_fd(), (&mut value as *mut u64).cast(), 8) };
        std::mem::take(&mut *self.inner.done.lock())
    }
}

fn completion(notifier: &AsyncNotifier, token: u64) -> cellshm::Completion {
    let inner = notifier.inner.clone();
    Box::new(move || inner.signal(token))
}

/// A call started by `call_start`; its notifier token says when `take` has the result.
#[pyclass(module = "cellshm._native", frozen)]
struct PendingCall {
    call: CorePendingCall,
}

#[pymethods]
impl PendingCall {
    /// True once the result is in.
    fn done(&self) -> bool {
        self.call.is_done()
    }

    /// The response (raises the call's error). Only once the call is done.
    fn take(&self, py: Python<'_>) -> PyResult<Py<PyBytes>> {
        match self.call.try_take() {
            None => Err(PyValueError::new_err("the call has not completed yet")),
            Some(Ok(response)) => response_bytes(py, &response),
            Some(Err(e)) => Err(to_py(py, &e)),
        }
    }

    /// Stops waiting; True if the call was still outstanding.
    fn cancel(&self) -> bool {
        self.call.cancel()
    }
}

// ----- streams -------------------------------------------------------------------------

/// The caller's end of a stream (see `cellshm.Stream`). Every blocking wait releases
/// the GIL; the stream is cancelled if it is closed (or collected) before it ended.
#[pyclass(module = "cellshm._native", frozen)]
struct Stream {
    stream: Mutex<Option<Arc<CoreStream>>>,
}

impl Stream {
    fn new(stream: CoreStream) -> Stream {
        Stream { stream: Mutex::new(Some(Arc::new(stream))) }
    }

    fn get(&self) -> PyResult<Arc<CoreStream>> {
        self.stream.lock().clone().ok_or_else(|| err(Error::new(Status::FailedPrecondition, "the stream is closed")))
    }
}

#[pymethods]
impl Stream {
    /// The next item as bytes, or None once the handler finished.
    fn recv(&self, py: Python<'_>) -> PyResult<Option<Py<PyBytes>>> {
        let stream = self.get()?;
        match py.detach(|| stream.recv()).map_err(err)? {
            Some(item) => Ok(Some(bytes_of(py, item.payload())?)),
            None => Ok(None),
        }
    }

    fn send(&self, py: Python<'_>, payload: &Bound<'_, PyAny>) -> PyResult<()> {
        let data = self::payload(Some(payload))?;
        let stream = self.get()?;
        py.detach(|| stream.send(data.as_slice())).map_err(err)
    }

    fn close_send(&self, py: Python<'_>) -> PyResult<()> {
        let stream = self.get()?;
        py.detach(|| stream.close_send()).map_err(err)
    }

    /// Closes sending and waits for the handler's response (client streaming).
    fn finish(&self, py: Python<'_>) -> PyResult<Py<PyBytes>> {
        let stream = self
            .stream
            .lock()
            .take()
            .ok_or_else(|| err(Error::new(Status::FailedPrecondition, "the stream is closed")))?;
        let stream = match Arc::try_unwrap(stream) {
            Ok(stream) => stream,
            Err(shared) => {
                // Another thread is in recv/send: leave the stream as it was.
                *self.stream.lock() = Some(shared);
                return Err(err(Error::new(Status::FailedPrecondition, "another thread is using the stream")));
            }
        };
        let response = py.detach(|| stream.finish()).map_err(err)?;
        response_bytes(py, &response)
    }

    fn cancel(&self, py: Python<'_>) {
        if let Some(stream) = self.stream.lock().take() {
            py.detach(move || {
                stream.cancel();
                drop(stream)
            });
        }
    }

    #[getter]
    fn closed(&self) -> bool {
        self.stream.lock().is_none()
    }
}

/// The handler's end of a stream, given to Python stream handlers (see
/// `cellshm.StreamCall`). It stops working once the handler returned.
#[pyclass(module = "cellshm._native", frozen)]
struct StreamCall {
    end: StreamEnd,
    request: Py<PyBytes>,
    caller: Option<cellshm::PeerIdentity>,
}

/// One method's metrics for `cellshm.MethodMetrics`.
type PyMethodMetrics = (String, u32, u64, u64, Vec<(u32, u64)>, u64, u64, u64, u64);
/// A peer's metrics for `cellshm.PeerMetrics`.
type PyPeerMetrics = (&'static str, Vec<PyMethodMetrics>, Vec<PyMethodMetrics>, u64, u64, u64, u64);

fn py_metrics(m: &cellshm::PeerMetrics) -> PyPeerMetrics {
    let methods = |v: &[cellshm::MethodMetrics]| -> Vec<PyMethodMetrics> {
        v.iter()
            .map(|x| {
                let errors = x.errors.iter().map(|(s, n)| (s.code(), *n)).collect();
                let l = &x.latency;
                (x.name.clone(), x.method_id, x.calls, x.in_flight, errors, l.count, l.p50_ns, l.p99_ns, l.max_ns)
            })
            .collect()
    };
    (m.state, methods(&m.outgoing), methods(&m.incoming), m.open_streams, m.streams_opened, m.refused_calls, m.restarts)
}

/// (peer_id, name, epoch, pid, uid, attached) for `cellshm.CallerInfo`.
type PyCaller = (u32, String, u32, Option<u32>, Option<u32>, bool);

fn py_caller(identity: Option<cellshm::PeerIdentity>) -> Option<PyCaller> {
    identity.map(|i| (i.peer_id, i.name, i.epoch, i.pid, i.uid, i.attached))
}

#[pymethods]
impl StreamCall {
    /// Who opened the stream (host side), as (peer_id, name, epoch, pid, uid, attached); None in a cell.
    #[getter]
    fn caller(&self) -> Option<PyCaller> {
        py_caller(self.caller.clone())
    }

    #[getter]
    fn request(&self, py: Python<'_>) -> Py<PyBytes> {
        self.request.clone_ref(py)
    }

    fn send(&self, py: Python<'_>, payload: &Bound<'_, PyAny>) -> PyResult<()> {
        let data = self::payload(Some(payload))?;
        py.detach(|| self.end.send(data.as_slice())).map_err(err)
    }

    /// The next item from the caller, or None once it closed its sending side.
    fn recv(&self, py: Python<'_>) -> PyResult<Option<Py<PyBytes>>> {
        match py.detach(|| self.end.recv()).map_err(err)? {
            Some(item) => Ok(Some(bytes_of(py, item.payload())?)),
            None => Ok(None),
        }
    }

    #[getter]
    fn cancelled(&self) -> bool {
        self.end.is_cancelled()
    }

    fn wait_cancelled(&self, py: Python<'_>, timeout: f64) -> PyResult<bool> {
        let timeout = duration(timeout, "timeout")?;
        Ok(py.detach(|| self.end.wait_cancelled(timeout)))
    }
}

/// A Python callable as a stream handler: it gets a `StreamCall` and returns the final
/// response (bytes-like or None). Runs on the stream's own thread.
/// A stream method's kind from its wire number; unary (0) and unknown numbers are
/// ValueError.
fn stream_kind(code: u32) -> PyResult<cellshm::MethodKind> {
    cellshm::MethodKind::stream_from_code(code).map_err(pyo3::exceptions::PyValueError::new_err)
}

fn py_stream_handler(
    handler: Py<PyAny>,
) -> impl Fn(&mut CoreStreamCall) -> cellshm::Result<()> + Send + Sync + 'static {
    move |call| {
        let answer = Python::attach(|py| -> cellshm::Result<Option<Vec<u8>>> {
            let request = PyBytes::new(py, call.request()).unbind();
            let native = Py::new(py, StreamCall { end: call.end(), request, caller: call.caller() })
                .map_err(|e| from_py(py, e))?;
            let answer = handler.call1(py, (native,)).map_err(|e| from_py(py, e))?;
            let answer = answer.bind(py);
            if answer.is_none() {
                return Ok(None);
            }
            Ok(Some(payload(Some(answer)).map_err(|e| from_py(py, e))?.as_slice().to_vec()))
        })?;
        if let Some(bytes) = answer {
            call.set_response(&bytes);
        }
        Ok(())
    }
}

// ----- host ----------------------------------------------------------------------------

/// The host's hub (see `cellshm.Hub`).
#[pyclass(module = "cellshm._native", frozen)]
struct Hub {
    hub: Mutex<Option<CoreHub>>,
    name: String,
}

impl Hub {
    fn with<T>(&self, f: impl FnOnce(&CoreHub) -> cellshm::Result<T>) -> PyResult<T> {
        match self.hub.lock().as_ref() {
            Some(hub) => f(hub).map_err(err),
            None => Err(err(Error::new(Status::SessionClosed, "the hub is closed"))),
        }
    }
}

#[pymethods]
impl Hub {
    #[new]
    #[pyo3(signature = (name=None, max_peers=8, socket_path=None, ring_capacity=256, slot_classes=None, shutdown_grace=2.0))]
    fn new(
        py: Python<'_>,
        name: Option<String>,
        max_peers: u32,
        socket_path: Option<String>,
        ring_capacity: u32,
        slot_classes: Option<Vec<(u32, u32)>>,
        shutdown_grace: f64,
    ) -> PyResult<Self> {
        let mut config = hub_config(name, max_peers, ring_capacity, slot_classes, shutdown_grace)?;
        config.socket_path = socket_path.map(Into::into);
        let hub = py.detach(|| CoreHub::create(config)).map_err(err)?;
        let name = hub.name().to_string();
        Ok(Hub { hub: Mutex::new(Some(hub)), name })
    }

    #[getter]
    fn name(&self) -> String {
        self.name.clone()
    }

    /// Serves `name` to every cell of the hub.
    #[pyo3(signature = (name, handler, view=false))]
    fn method(&self, name: &str, handler: Py<PyAny>, view: bool) -> PyResult<()> {
        let name = method_name(name)?;
        self.with(|hub| hub.method(name, py_handler(handler, view)))
    }

    /// Serves the stream method `name` to every cell of the hub; `kind` (the numbers of
    /// `cellshm.Introspect.methods`: 1 undeclared, 2 server, 3 client streaming, 4 bidi)
    /// is what introspection reports.
    #[pyo3(signature = (name, handler, kind=1))]
    fn stream_method(&self, name: &str, handler: Py<PyAny>, kind: u32) -> PyResult<()> {
        let name = method_name(name)?;
        let kind = stream_kind(kind)?;
        self.with(|hub| hub.stream_method_as(name, kind, py_stream_handler(handler)))
    }

    /// Routes cells' log records to `sink(cell, peer_id, level, target, message,
    /// time_unix_ns, file, line, fields)`, or back to Rust `tracing` with None.
    fn set_log_sink(&self, sink: Option<Py<PyAny>>) -> PyResult<()> {
        let sink = sink.map(py_log_sink);
        self.with(|hub| {
            hub.set_log_sink(sink);
            Ok(())
        })
    }

    /// Only the cells named in `cells` may call `method`.
    fn allow(&self, method: &str, cells: Vec<String>) -> PyResult<()> {
        let cells: Vec<&str> = cells.iter().map(String::as_str).collect();
        self.with(|hub| hub.allow(method, &cells))
    }

    fn allow_everyone(&self, method: &str) -> PyResult<()> {
        self.with(|hub| hub.allow_everyone(method))
    }

    fn allow_attached(&self, method: &str, uids: Vec<u32>) -> PyResult<()> {
        self.with(|hub| hub.allow_attached(method, &uids))
    }

    /// The uids that may inspect the hub (none by default; an empty list: none again).
    fn enable_inspect(&self, uids: Vec<u32>) -> PyResult<()> {
        self.with(|hub| {
            hub.enable_inspect(&uids);
            Ok(())
        })
    }

    /// `policy(caller_tuple, method) -> bool` before every call (None removes it).
    fn set_access_policy(&self, policy: Option<Py<PyAny>>) -> PyResult<()> {
        let policy = policy.map(access_policy);
        self.with(|hub| {
            hub.set_access_policy(policy);
            Ok(())
        })
    }

    /// Spawns `argv` as a cell named `name`; returns its Peer (not yet ready).
    #[pyo3(signature = (name, argv, env=None, wait="adaptive", spin_us=50, server_threads=2, stderr_tail=0, max_streams=64, stream_threads=8, default_timeout=None, stream_window=8))]
    #[allow(clippy::too_many_arguments)]
    fn spawn(
        &self,
        py: Python<'_>,
        name: &str,
        argv: Vec<String>,
        env: Option<&Bound<'_, PyDict>>,
        wait: &str,
        spin_us: u64,
        server_threads: usize,
        stderr_tail: usize,
        max_streams: usize,
        stream_threads: usize,
        default_timeout: Option<f64>,
        stream_window: u32,
    ) -> PyResult<Peer> {
        let Some(program) = argv.first() else {
            return Err(PyValueError::new_err("argv is empty; expected [program, args...]"));
        };
        let mut command = std::process::Command::new(program);
        command.args(&argv[1..]);
        if let Some(env) = env {
            for (key, value) in env.iter() {
                command.env(key.extract::<String>()?, value.extract::<String>()?);
            }
        }
        let options = PeerOptions {
            wait: wait_strategy(wait, spin_us)?,
            server_threads: server_threads.max(1),
            stderr_tail,
            max_streams,
            stream_threads,
            default_timeout: default_timeout.map(|t| timeout_or_forever(t, "default_timeout")).transpose()?,
            stream_window,
            ..PeerOptions::default()
        };
        // Without the GIL: reserving a slot may take the hub's locks, which a server
        // thread finishing a Python handler could hold while it waits for the GIL.
        let ticket = py.detach(|| self.with(|hub| hub.add_peer(name, options)))?;
        let (peer, child) = py.detach(|| ticket.spawn(&mut command)).map_err(err)?;
        Ok(Peer { peer, process: Some(CellProcess::new(child)) })
    }

    /// The most recent peer named `name` (spawned or attached), if any.
    fn peer(&self, name: &str) -> PyResult<Option<Peer>> {
        let found = self.with(|hub| Ok(hub.peers().into_iter().rev().find(|p| p.name() == name)))?;
        Ok(found.map(|peer| Peer { peer, process: None }))
    }

    /// Lets processes this host did not spawn attach through the hub's discovery socket
    /// (uids in `allowed_uids`, the host's own by default).
    #[pyo3(signature = (allowed_uids=None))]
    fn enable_attach(&self, allowed_uids: Option<Vec<u32>>) -> PyResult<AttachListener> {
        let mut policy = cellshm::host::attach::AttachPolicy::default();
        if let Some(uids) = allowed_uids {
            policy.allowed_uids = uids;
        }
        let listener = self.with(|hub| hub.enable_attach(policy))?;
        Ok(AttachListener { listener: Mutex::new(Some(listener)) })
    }

    /// Closes every link (cells see EOF and leave) and the discovery socket.
    fn close(&self, py: Python<'_>) {
        let hub = self.hub.lock().take();
        py.detach(move || drop(hub));
    }

    #[getter]
    fn closed(&self) -> bool {
        self.hub.lock().is_none()
    }
}

/// The host's handle on one cell (see `cellshm.Peer`).
#[pyclass(module = "cellshm._native", frozen)]
struct Peer {
    peer: CorePeer,
    /// None for a cell that attached (the host did not spawn it).
    process: Option<CellProcess>,
}

impl Peer {
    fn process(&self) -> PyResult<&CellProcess> {
        self.process.as_ref().ok_or_else(|| {
            err(Error::new(
                Status::FailedPrecondition,
                format!("cell {:?} was not spawned by this host", self.peer.name()),
            ))
        })
    }
}

#[pymethods]
impl Peer {
    #[getter]
    fn id(&self) -> u32 {
        self.peer.id()
    }

    #[getter]
    fn name(&self) -> String {
        self.peer.name().to_string()
    }

    #[getter]
    fn pid(&self) -> Option<u32> {
        self.peer.pid()
    }

    /// (peer_id, name, epoch, pid, uid), as the host knows it.
    #[getter]
    fn identity(&self) -> PyCaller {
        py_caller(Some(self.peer.identity())).expect("an identity")
    }

    /// Its calls and streams refused by an access rule so far.
    #[getter]
    fn refused_calls(&self) -> u64 {
        self.peer.refused_calls()
    }

    /// (state, outgoing, incoming, open_streams, streams_opened, refused_calls, restarts),
    /// each method as (name, method_id, calls, in_flight, [(status code, count)], count,
    /// p50_ns, p99_ns, max_ns).
    fn metrics(&self) -> PyPeerMetrics {
        py_metrics(&self.peer.metrics())
    }

    /// "starting", "joined", "ready", "leaving" or "dead".
    #[getter]
    fn state(&self) -> &'static str {
        cellshm::peer_state_name(&self.peer.state())
    }

    /// Why the peer died, as (code, message), or None while alive.
    #[getter]
    fn death(&self) -> Option<(u32, String)> {
        match self.peer.state() {
            PeerState::Dead(e) => Some((e.code(), e.message().to_string())),
            _ => None,
        }
    }

    fn wait_ready(&self, py: Python<'_>, timeout: f64) -> PyResult<()> {
        let timeout = duration(timeout, "timeout")?;
        py.detach(|| self.peer.wait_ready(timeout)).map_err(err)
    }

    /// Calls to the cell go through this.
    #[getter]
    fn link(&self) -> LinkEnd {
        LinkEnd::peer(self.peer.clone())
    }

    /// Pushes a log filter ("warn,mycell=debug") to the cell.
    fn set_log_filter(&self, py: Python<'_>, filter: &str, timeout: f64) -> PyResult<()> {
        let timeout = duration(timeout, "timeout")?;
        py.detach(|| self.peer.set_log_filter(filter, timeout)).map_err(err)
    }

    /// Calls `callback(code, message)` once when the peer dies (at once if it has).
    fn on_death(&self, callback: Py<PyAny>) {
        self.peer.on_death(move |e| {
            Python::attach(|py| {
                if let Err(exception) = callback.call1(py, (e.code(), e.message())) {
                    exception.print(py);
                }
            })
        });
    }

    fn kill(&self) -> PyResult<()> {
        self.process()?.kill().map_err(err)
    }

    /// Waits for the process to exit; its exit code (128 + signal if killed).
    fn wait_exit(&self, py: Python<'_>, timeout: f64) -> PyResult<i32> {
        let timeout = duration(timeout, "timeout")?;
        let process = self.process()?;
        py.detach(|| process.wait_exit(timeout)).map_err(err)
    }

    /// GOODBYE, up to `grace` seconds, then SIGKILL; returns the exit code.
    fn shutdown(&self, py: Python<'_>, grace: f64) -> PyResult<i32> {
        let grace = duration(grace, "grace")?;
        match &self.process {
            Some(process) => Ok(py.detach(|| process.shutdown(&self.peer, grace))),
            None => {
                py.detach(|| self.peer.shutdown(grace));
                Ok(0)
            }
        }
    }

    #[getter]
    fn doorbell_fd(&self) -> Option<i32> {
        self.peer.doorbell_fd()
    }
}

// ----- supervision and attach ----------------------------------------------------------

fn status_parts(status: &cellshm::CellStatus) -> (&'static str, Option<String>) {
    (status.name(), status.reason().map(|r| r.to_string()))
}

/// `Supervisor.add`'s and `update`'s restart policy: (ready_timeout, max_restarts,
/// initial_backoff, max_backoff, reset_after), in seconds but for the count.
type PyRestartPolicy = (f64, u32, f64, f64, f64);

/// A recipe from `Supervisor.add`'s or `update`'s arguments; `heartbeat` is (interval,
/// allowed misses).
fn cell_spec(
    name: &str,
    argv: Vec<String>,
    env: Option<&Bound<'_, PyDict>>,
    policy: PyRestartPolicy,
    heartbeat: Option<(f64, u32)>,
    default_timeout: Option<f64>,
    log_filter: Option<String>,
) -> PyResult<cellshm::CellSpec> {
    let Some(program) = argv.first() else {
        return Err(PyValueError::new_err("argv is empty; expected [program, args...]"));
    };
    let mut spec = cellshm::CellSpec::new(name, program).args(argv[1..].iter().cloned());
    if let Some(env) = env {
        for (key, value) in env.iter() {
            spec = spec.env(key.extract::<String>()?, value.extract::<String>()?);
        }
    }
    let (ready_timeout, max_restarts, initial_backoff, max_backoff, reset_after) = policy;
    spec.ready_timeout = duration(ready_timeout, "ready_timeout")?;
    spec.restart = cellshm::RestartPolicy {
        max_restarts,
        initial_backoff: duration(initial_backoff, "initial_backoff")?,
        max_backoff: duration(max_backoff, "max_backoff")?,
        reset_after: duration(reset_after, "reset_after")?,
    };
    if let Some((interval, allowed_misses)) = heartbeat {
        let interval = duration(interval, "heartbeat_interval")?;
        if interval.is_zero() {
            return Err(PyValueError::new_err("heartbeat_interval must be positive"));
        }
        spec = spec.heartbeat(interval, allowed_misses);
    }
    if let Some(timeout) = default_timeout {
        spec = spec.default_timeout(timeout_or_forever(timeout, "default_timeout")?);
    }
    spec.log_filter = log_filter;
    Ok(spec)
}

/// A listener registered with `Supervisor.on_event`; closing it (or dropping the last
/// reference) unregisters it.
#[pyclass(module = "cellshm._native", frozen)]
struct EventSubscription {
    subscription: Mutex<Option<cellshm::EventSubscription>>,
    /// Checked under the GIL before each call: once `close` returns, the callback is
    /// not called again (a call already under way finishes).
    active: Arc<std::sync::atomic::AtomicBool>,
}

impl EventSubscription {
    fn cancel(&self) {
        self.active.store(false, std::sync::atomic::Ordering::SeqCst);
        if let Some(subscription) = self.subscription.lock().take() {
            // Not waiting: the event thread may be waiting for the GIL this thread holds.
            subscription.cancel_without_waiting();
        }
    }
}

#[pymethods]
impl EventSubscription {
    fn close(&self) {
        self.cancel();
    }

    #[getter]
    fn active(&self) -> bool {
        self.active.load(std::sync::atomic::Ordering::SeqCst)
    }
}

impl Drop for EventSubscription {
    fn drop(&mut self) {
        self.cancel();
    }
}

/// A hub's shape from Python's keyword arguments (checked by `Hub::create`).
fn hub_config(
    name: Option<String>,
    max_peers: u32,
    ring_capacity: u32,
    slot_classes: Option<Vec<(u32, u32)>>,
    shutdown_grace: f64,
) -> PyResult<HubConfig> {
    let mut config = HubConfig { name, max_peers, ring_capacity, ..HubConfig::default() };
    if let Some(classes) = slot_classes {
        config.slot_classes =
            classes.into_iter().map(|(slot_size, slot_count)| cellshm::SlotClass { slot_size, slot_count }).collect();
    }
    config.shutdown_grace = duration(shutdown_grace, "shutdown_grace")?;
    Ok(config)
}

/// A Python log sink for the core: `sink(cell, peer_id, level, target, message,
/// time_unix_ns, file, line, fields)`; an exception is printed and goes no further.
fn py_log_sink(sink: Py<PyAny>) -> cellshm::LogSink {
    Arc::new(move |r: &LogRecord<'_>| {
        Python::attach(|py| {
            let fields: Vec<(&str, &str)> = r.fields.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            let args = (r.cell, r.peer_id, r.level, r.target, r.message, r.time_unix_ns, r.file, r.line, fields);
            if let Err(e) = sink.call1(py, args) {
                e.print(py);
            }
        })
    })
}

/// A Python access policy for the core: `policy((peer_id, name, epoch, pid, uid),
/// method) -> bool`. An exception refuses the call (and is printed).
fn access_policy(policy: Py<PyAny>) -> cellshm::AccessPolicy {
    Arc::new(move |who: &cellshm::PeerIdentity, method: &str| {
        Python::attach(|py| match policy.call1(py, (py_caller(Some(who.clone())), method)) {
            Ok(answer) => answer.is_truthy(py).unwrap_or(false),
            Err(exception) => {
                exception.print(py);
                false
            }
        })
    })
}

/// Cells kept alive under stable names (see `cellshm.Supervisor`).
#[pyclass(module = "cellshm._native", frozen)]
struct Supervisor {
    sup: Closable<cellshm::Supervisor>,
    name: String,
    /// How the host talks to each cell (the constructor's peer options).
    peer_defaults: PeerOptions,
}

impl Supervisor {
    /// `spec` talking to its cell as the constructor's peer options say, its own default
    /// timeout (if it set one) winning.
    fn with_peer_defaults(&self, mut spec: cellshm::CellSpec) -> cellshm::CellSpec {
        spec.peer = PeerOptions { default_timeout: spec.peer.default_timeout, ..self.peer_defaults.clone() };
        spec
    }

    fn get(&self) -> PyResult<Arc<cellshm::Supervisor>> {
        self.sup.lock().clone().ok_or_else(|| err(Error::new(Status::SessionClosed, "the supervisor is closed")))
    }
}

#[pymethods]
impl Supervisor {
    #[new]
    #[pyo3(signature = (name=None, max_peers=8, ring_capacity=256, slot_classes=None, shutdown_grace=2.0, server_threads=2, max_streams=64, stream_threads=8, stream_window=8))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        name: Option<String>,
        max_peers: u32,
        ring_capacity: u32,
        slot_classes: Option<Vec<(u32, u32)>>,
        shutdown_grace: f64,
        server_threads: usize,
        max_streams: usize,
        stream_threads: usize,
        stream_window: u32,
    ) -> PyResult<Self> {
        let config = hub_config(name, max_peers, ring_capacity, slot_classes, shutdown_grace)?;
        let peer_defaults =
            PeerOptions { server_threads, max_streams, stream_threads, stream_window, ..PeerOptions::default() };
        peer_defaults.validate().map_err(err)?;
        let sup = py.detach(|| CoreHub::create(config).and_then(cellshm::Supervisor::new)).map_err(err)?;
        let name = sup.hub().name().to_string();
        Ok(Supervisor { sup: Arc::new(Mutex::new(Some(Arc::new(sup)))), name, peer_defaults })
    }

    #[getter]
    fn hub_name(&self) -> String {
        self.name.clone()
    }

    #[pyo3(signature = (name, handler, view=false))]
    fn method(&self, name: &str, handler: Py<PyAny>, view: bool) -> PyResult<()> {
        let name = method_name(name)?;
        self.get()?.hub().method(name, py_handler(handler, view)).map_err(err)
    }

    fn allow(&self, method: &str, cells: Vec<String>) -> PyResult<()> {
        let cells: Vec<&str> = cells.iter().map(String::as_str).collect();
        self.get()?.hub().allow(method, &cells).map_err(err)
    }

    fn set_log_sink(&self, sink: Option<Py<PyAny>>) -> PyResult<()> {
        self.get()?.hub().set_log_sink(sink.map(py_log_sink));
        Ok(())
    }

    fn set_log_filter(&self, py: Python<'_>, name: &str, filter: &str) -> PyResult<()> {
        let sup = self.get()?;
        py.detach(|| sup.set_log_filter(name, filter)).map_err(err)
    }

    fn enable_inspect(&self, uids: Vec<u32>) -> PyResult<()> {
        self.get()?.hub().enable_inspect(&uids);
        Ok(())
    }

    fn allow_attached(&self, method: &str, uids: Vec<u32>) -> PyResult<()> {
        self.get()?.hub().allow_attached(method, &uids).map_err(err)
    }

    fn allow_everyone(&self, method: &str) -> PyResult<()> {
        self.get()?.hub().allow_everyone(method).map_err(err)
    }

    fn set_access_policy(&self, policy: Option<Py<PyAny>>) -> PyResult<()> {
        self.get()?.hub().set_access_policy(policy.map(access_policy));
        Ok(())
    }

    /// Calls `callback(name, status, reason, peer_id, pid, restarts)` on every change,
    /// from the supervisor's event thread. The callback must not raise (the Python layer
    /// wraps it); an exception that gets here anyway is printed and goes no further.
    fn on_event(&self, callback: Py<PyAny>) -> PyResult<EventSubscription> {
        let active = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let still_active = active.clone();
        let subscription = self.get()?.on_event(move |e| {
            let (status, reason) = status_parts(&e.status);
            Python::attach(|py| {
                if !still_active.load(std::sync::atomic::Ordering::SeqCst) {
                    return;
                }
                if let Err(exception) =
                    callback.call1(py, (e.name.as_str(), status, reason, e.peer_id, e.pid, e.restarts))
                {
                    exception.print(py);
                }
            })
        });
        Ok(EventSubscription { subscription: Mutex::new(Some(subscription)), active })
    }

    #[pyo3(signature = (name, argv, env, policy, heartbeat, default_timeout, log_filter))]
    #[allow(clippy::too_many_arguments)]
    fn add(
        &self,
        py: Python<'_>,
        name: &str,
        argv: Vec<String>,
        env: Option<&Bound<'_, PyDict>>,
        policy: PyRestartPolicy,
        heartbeat: Option<(f64, u32)>,
        default_timeout: Option<f64>,
        log_filter: Option<String>,
    ) -> PyResult<()> {
        let spec = self.with_peer_defaults(cell_spec(name, argv, env, policy, heartbeat, default_timeout, log_filter)?);
        let sup = self.get()?;
        py.detach(|| sup.add(spec)).map_err(err)
    }

    #[pyo3(signature = (name, argv, env, policy, heartbeat, default_timeout, log_filter, grace))]
    #[allow(clippy::too_many_arguments)]
    fn update(
        &self,
        py: Python<'_>,
        name: &str,
        argv: Vec<String>,
        env: Option<&Bound<'_, PyDict>>,
        policy: PyRestartPolicy,
        heartbeat: Option<(f64, u32)>,
        default_timeout: Option<f64>,
        log_filter: Option<String>,
        grace: f64,
    ) -> PyResult<()> {
        let spec = self.with_peer_defaults(cell_spec(name, argv, env, policy, heartbeat, default_timeout, log_filter)?);
        let grace = duration(grace, "grace")?;
        let sup = self.get()?;
        py.detach(|| sup.update(spec, grace)).map_err(err)
    }

    /// The default timeout of the cells launched from now on (math.inf: none).
    fn set_default_timeout(&self, timeout: f64) -> PyResult<()> {
        self.get()?.set_default_timeout(timeout_or_forever(timeout, "default_timeout")?);
        Ok(())
    }

    fn start(&self, py: Python<'_>, name: &str) -> PyResult<()> {
        let sup = self.get()?;
        py.detach(|| sup.start(name)).map_err(err)
    }

    fn restart(&self, py: Python<'_>, name: &str, grace: f64) -> PyResult<()> {
        let grace = duration(grace, "grace")?;
        let sup = self.get()?;
        py.detach(|| sup.restart(name, grace)).map_err(err)
    }

    fn remove(&self, py: Python<'_>, name: &str, grace: f64) -> PyResult<()> {
        let grace = duration(grace, "grace")?;
        let sup = self.get()?;
        py.detach(|| sup.remove(name, grace)).map_err(err)
    }

    /// The supervised names, sorted.
    fn names(&self) -> PyResult<Vec<String>> {
        Ok(self.get()?.names())
    }

    /// (status, reason) of a cell, or None for an unknown name.
    fn status(&self, name: &str) -> PyResult<Option<(&'static str, Option<String>)>> {
        Ok(self.get()?.status(name).map(|s| status_parts(&s)))
    }

    /// Waits until the cell's status is `status` ("ready", "crashed", ...); the reason.
    fn wait_for(&self, py: Python<'_>, name: &str, status: &str, timeout: f64) -> PyResult<Option<String>> {
        const STATUSES: [&str; 7] = ["starting", "ready", "stopping", "exited", "crashed", "failed", "removed"];
        if !STATUSES.contains(&status) {
            return Err(PyValueError::new_err(format!("unknown cell status {status:?}; expected one of {STATUSES:?}")));
        }
        let timeout = duration(timeout, "timeout")?;
        let sup = self.get()?;
        let wanted = status.to_string();
        let got = py.detach(|| sup.wait_for(name, timeout, |s| status_parts(s).0 == wanted)).map_err(err)?;
        Ok(status_parts(&got).1)
    }

    /// Calls to the current instance of `name` go through this.
    fn link(&self, name: &str) -> LinkEnd {
        LinkEnd::supervised(self.sup.clone(), name.to_string())
    }

    /// The current instance's pid, if one runs.
    fn pid(&self, name: &str) -> PyResult<Option<u32>> {
        Ok(self.get()?.peer(name).and_then(|p| p.pid()))
    }

    fn stop(&self, py: Python<'_>, name: &str, grace: f64) -> PyResult<i32> {
        let grace = duration(grace, "grace")?;
        let sup = self.get()?;
        py.detach(|| sup.stop(name, grace)).map_err(err)
    }

    fn close(&self, py: Python<'_>, grace: f64) -> PyResult<()> {
        let grace = duration(grace, "grace")?;
        let sup = self.sup.lock().take();
        py.detach(move || {
            if let Some(sup) = sup {
                sup.stop_all(grace);
            }
        });
        Ok(())
    }
}

/// Attaching to a hub is enabled while this is open (see `cellshm.Hub.enable_attach`).
#[pyclass(module = "cellshm._native", frozen)]
struct AttachListener {
    listener: Mutex<Option<cellshm::host::attach::AttachListener>>,
}

#[pymethods]
impl AttachListener {
    fn refusals(&self) -> Vec<String> {
        self.listener.lock().as_ref().map(|l| l.refusals()).unwrap_or_default()
    }

    /// How many requests were refused in all (`refusals` keeps the last 16).
    fn refusal_count(&self) -> u64 {
        self.listener.lock().as_ref().map(|l| l.refusal_count()).unwrap_or(0)
    }

    fn close(&self, py: Python<'_>) {
        let listener = self.listener.lock().take();
        py.detach(move || drop(listener));
    }
}

// ----- cell ----------------------------------------------------------------------------

/// A joined cell (see `cellshm.Cell`).
#[pyclass(module = "cellshm._native", frozen)]
struct Cell {
    cell: Closable<CoreCell>,
}

impl Cell {
    fn get(&self) -> PyResult<Arc<CoreCell>> {
        self.cell.lock().clone().ok_or_else(|| err(Error::new(Status::SessionClosed, "the cell is closed")))
    }
}

#[pymethods]
impl Cell {
    /// Joins the hub that spawned this process: its doorbell is named by
    /// CELLSHM_DOORBELL_FD (or a `--doorbell-fd=N` in `argv`, like sys.argv: argv[0] is
    /// skipped; every other argument is left alone).
    #[staticmethod]
    #[pyo3(signature = (argv=None))]
    fn join(py: Python<'_>, argv: Option<Vec<String>>) -> PyResult<Cell> {
        let args = argv.unwrap_or_default().into_iter().skip(1).map(Into::into);
        let join = JoinArgs::parse(args).map_err(err)?;
        let options = CellOptions::from_env().map_err(err)?;
        let cell = py.detach(|| CoreCell::join(join, options)).map_err(err)?;
        Ok(Cell { cell: Arc::new(Mutex::new(Some(Arc::new(cell)))) })
    }

    /// Joins the running hub `hub` (its name, or "UID/NAME") by attaching as `name`.
    #[staticmethod]
    fn attach(py: Python<'_>, hub: &str, name: &str) -> PyResult<Cell> {
        let options = CellOptions::from_env().map_err(err)?;
        let cell = py.detach(|| CoreCell::attach(hub, name, options)).map_err(err)?;
        Ok(Cell { cell: Arc::new(Mutex::new(Some(Arc::new(cell)))) })
    }

    #[getter]
    fn peer_id(&self) -> PyResult<u32> {
        Ok(self.get()?.peer_id())
    }

    /// Calls to the host go through this.
    #[getter]
    fn link(&self) -> LinkEnd {
        LinkEnd::cell(self.cell.clone())
    }

    #[pyo3(signature = (name, handler, view=false))]
    fn method(&self, name: &str, handler: Py<PyAny>, view: bool) -> PyResult<()> {
        let name = method_name(name)?;
        self.get()?.method(name, py_handler(handler, view)).map_err(err)
    }

    #[pyo3(signature = (name, handler, kind=1))]
    fn stream_method(&self, name: &str, handler: Py<PyAny>, kind: u32) -> PyResult<()> {
        let name = method_name(name)?;
        let kind = stream_kind(kind)?;
        self.get()?.stream_method_as(name, kind, py_stream_handler(handler)).map_err(err)
    }

    /// Starts serving and announces readiness to the host.
    fn serve(&self, py: Python<'_>) -> PyResult<()> {
        let cell = self.get()?;
        py.detach(|| cell.serve()).map_err(err)
    }

    /// Serves until the host says goodbye; raises if the host goes away. Ctrl-C works.
    fn run(&self, py: Python<'_>) -> PyResult<()> {
        let cell = self.get()?;
        py.detach(|| cell.serve()).map_err(err)?;
        // No timer: the wait ends when the cell stops or a signal (Ctrl-C) interrupts
        // it, which the kernel delivers to the main thread first.
        while !py.detach(|| cell.wait_stopped_or_signal()) {
            py.check_signals()?;
        }
        cell.outcome().map_err(err)
    }

    /// Signals `token` on `notifier` once the cell stops serving.
    fn notify_on_stop(&self, notifier: &AsyncNotifier, token: u64) -> PyResult<()> {
        let done = completion(notifier, token);
        self.get()?.on_stop(done);
        Ok(())
    }

    /// Ok if the host said goodbye; the error that stopped the cell otherwise.
    fn outcome(&self) -> PyResult<()> {
        self.get()?.outcome().map_err(err)
    }

    /// Sends a log record to the host (level: 1 error ... 5 trace) if the host's filter
    /// lets it through.
    fn log(&self, level: u32, target: &str, message: &str) -> PyResult<()> {
        self.get()?.log_event(level, target, message).map_err(err)
    }

    /// A record with its own time (ns since the Unix epoch), source location and fields.
    #[pyo3(signature = (level, target, message, time_unix_ns, file, line, fields))]
    #[allow(clippy::too_many_arguments)]
    fn log_record(
        &self,
        level: u32,
        target: &str,
        message: &str,
        time_unix_ns: u64,
        file: &str,
        line: u32,
        fields: Vec<(String, String)>,
    ) -> PyResult<()> {
        if fields.len() > cellshm::wire::MAX_LOG_FIELDS {
            return Err(PyValueError::new_err(format!(
                "{} log fields (at most {})",
                fields.len(),
                cellshm::wire::MAX_LOG_FIELDS
            )));
        }
        let record = cellshm::wire::LogEvent {
            level,
            target: target.to_string(),
            message: message.to_string(),
            time_unix_ns,
            file: file.to_string(),
            line,
            fields,
        };
        self.get()?.log_record(&record).map_err(err)
    }

    /// Log records dropped because the ring towards the host was full.
    #[getter]
    fn log_records_dropped(&self) -> PyResult<u64> {
        Ok(self.get()?.log_records_dropped())
    }

    /// True if a record of `level` from `target` passes the host's filter.
    fn log_enabled(&self, level: u32, target: &str) -> PyResult<bool> {
        Ok(self.get()?.log_enabled(level, target))
    }

    /// Tells the host goodbye and closes the cell.
    fn goodbye(&self, py: Python<'_>) -> PyResult<()> {
        let cell = self.cell.lock().take();
        match cell {
            Some(cell) => py.detach(move || cell.goodbye()).map_err(err),
            None => Ok(()),
        }
    }

    /// Closes the cell (the host sees it leave).
    fn close(&self, py: Python<'_>) {
        let cell = self.cell.lock().take();
        py.detach(move || drop(cell));
    }

    #[getter]
    fn closed(&self) -> bool {
        self.cell.lock().is_none()
    }
}

// ----- module --------------------------------------------------------------------------

/// Method id of "Service.method" (FNV-1a 64 folded to 32 bits).
#[pyfunction]
fn method_id(name: &str) -> u32 {
    wire::method_id(name)
}

/// The canonical name of a status code, e.g. 4 -> "DEADLINE_EXCEEDED".
#[pyfunction]
fn status_name(code: u32) -> PyResult<&'static str> {
    Status::from_code(code)
        .map(Status::name)
        .ok_or_else(|| PyValueError::new_err(format!("{code} is not a cellshm status code")))
}

/// One live hub: (name, host_pid, uid, peers, max_peers, uptime_ms, attach).
type HubRow = (String, u32, u32, u32, u32, u64, bool);

/// The live hubs of this user.
#[pyfunction]
fn list_hubs(py: Python<'_>) -> PyResult<Vec<HubRow>> {
    let hubs = py.detach(cellshm::list_hubs).map_err(err)?;
    Ok(hubs.into_iter().map(|h| (h.name, h.host_pid, h.uid, h.peers, h.max_peers, h.uptime_ms, h.attach)).collect())
}

/// Generates stubs for `lang` (`rust`, `c`, `python`) from `files` (found in
/// `includes`) into `out`; returns the paths written, relative to `out`. ValueError
/// for a bad language, a `.proto` that does not compile or clashing method ids.
#[pyfunction]
fn codegen(py: Python<'_>, lang: &str, out: &str, includes: Vec<String>, files: Vec<String>) -> PyResult<Vec<String>> {
    let value_error = |e: cellshm_codegen::Error| pyo3::exceptions::PyValueError::new_err(e.0);
    let lang = cellshm_codegen::Lang::parse(lang).map_err(value_error)?;
    py.detach(|| {
        let fds = cellshm_codegen::parse(&files, &includes)?;
        let names = cellshm_codegen::file_names(&fds, &files, &includes);
        cellshm_codegen::generate(lang, &fds, &names)
    })
    .map_err(value_error)
    .and_then(|generated| {
        cellshm_codegen::write(std::path::Path::new(out), &generated)
            .map_err(|e| pyo3::exceptions::PyOSError::new_err(e.to_string()))?;
        Ok(generated.into_iter().map(|f| f.name).collect())
    })
}

/// The protoc plugin: an encoded CodeGeneratorRequest in, the encoded response out.
#[pyfunction]
fn codegen_plugin(request: &[u8]) -> PyResult<Vec<u8>> {
    cellshm_codegen::plugin::respond(request).map_err(|e| pyo3::exceptions::PyValueError::new_err(e.0))
}

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add("VERSION", env!("CARGO_PKG_VERSION"))?;
    let codes = PyDict::new(py);
    for status in Status::ALL {
        codes.set_item(status.name(), status.code())?;
    }
    m.add("STATUS_CODES", codes)?;
    let levels = PyTuple::new(
        py,
        [
            wire::log_level::ERROR,
            wire::log_level::WARN,
            wire::log_level::INFO,
            wire::log_level::DEBUG,
            wire::log_level::TRACE,
        ],
    )?;
    m.add("LOG_LEVELS", levels)?;
    m.add_function(wrap_pyfunction!(method_id, m)?)?;
    m.add_function(wrap_pyfunction!(list_hubs, m)?)?;
    m.add_function(wrap_pyfunction!(status_name, m)?)?;
    m.add_function(wrap_pyfunction!(current_call, m)?)?;
    m.add_function(wrap_pyfunction!(codegen, m)?)?;
    m.add_function(wrap_pyfunction!(codegen_plugin, m)?)?;
    m.add_class::<CallContext>()?;
    m.add_class::<Hub>()?;
    m.add_class::<Peer>()?;
    m.add_class::<LinkEnd>()?;
    m.add_class::<Cell>()?;
    m.add_class::<PendingCall>()?;
    m.add_class::<Stream>()?;
    m.add_class::<StreamCall>()?;
    m.add_class::<AsyncNotifier>()?;
    m.add_class::<Supervisor>()?;
    m.add_class::<EventSubscription>()?;
    m.add_class::<AttachListener>()?;
    Ok(())
}
