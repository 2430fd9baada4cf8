//! Streams, both ends: the caller's `Stream` and a handler's `StreamCall`.

use std::sync::Arc;

use cellshm::{Error, Status, Stream as CoreStream, StreamCall as CoreStreamCall, StreamEnd};
use parking_lot::Mutex;
use pyo3::prelude::*;
use pyo3::types::PyBytes;

use crate::*;

/// The caller's end of a stream (see `cellshm.Stream`). Every blocking wait releases
/// the GIL; the stream is cancelled if it is closed (or collected) before it ended.
#[pyclass(module = "cellshm._native", frozen)]
pub(crate) struct Stream {
    pub(crate) stream: Mutex<Option<Arc<CoreStream>>>,
}

impl Stream {
    pub(crate) fn new(stream: CoreStream) -> Stream {
        Stream { stream: Mutex::new(Some(Arc::new(stream))) }
    }

    pub(crate) fn get(&self) -> PyResult<Arc<CoreStream>> {
        self.stream.lock().clone().ok_or_else(|| err(Error::new(Status::FailedPrecondition, "the stream is closed")))
    }
}

#[pymethods]
impl Stream {
    /// The next item as bytes, or None once the handler finished.
    pub(crate) fn recv(&self, py: Python<'_>) -> PyResult<Option<Py<PyBytes>>> {
        let stream = self.get()?;
        match py.detach(|| stream.recv()).map_err(err)? {
            Some(item) => Ok(Some(bytes_of(py, item.payload())?)),
            None => Ok(None),
        }
    }

    pub(crate) fn send(&self, py: Python<'_>, payload: &Bound<'_, PyAny>) -> PyResult<()> {
        let data = self::payload(Some(payload))?;
        let stream = self.get()?;
        py.detach(|| stream.send(data.as_slice())).map_err(err)
    }

    pub(crate) fn close_send(&self, py: Python<'_>) -> PyResult<()> {
        let stream = self.get()?;
        py.detach(|| stream.close_send()).map_err(err)
    }

    /// Closes sending and waits for the handler's response (client streaming).
    pub(crate) fn finish(&self, py: Python<'_>) -> PyResult<Py<PyBytes>> {
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

    pub(crate) fn cancel(&self, py: Python<'_>) {
        if let Some(stream) = self.stream.lock().take() {
            py.detach(move || {
                stream.cancel();
                drop(stream)
            });
        }
    }

    #[getter]
    pub(crate) fn closed(&self) -> bool {
        self.stream.lock().is_none()
    }

    /// For asyncio, without blocking: (True, the next item or None at the end), or
    /// (False, None) with `token` pushed on `notifier` once an item may have come.
    pub(crate) fn poll_recv(
        &self,
        py: Python<'_>,
        notifier: &AsyncNotifier,
        token: u64,
    ) -> PyResult<(bool, Option<Py<PyBytes>>)> {
        let stream = self.get()?;
        polled_item(py, poll_once(notifier, token, |cx| stream.poll_recv(cx)))
    }

    /// For asyncio: True once `payload` was sent; False with `token` pushed on
    /// `notifier` once credit or room may have come (then call again).
    pub(crate) fn poll_send(&self, payload: &Bound<'_, PyAny>, notifier: &AsyncNotifier, token: u64) -> PyResult<bool> {
        let data = self::payload(Some(payload))?;
        let stream = self.get()?;
        poll_once(notifier, token, |cx| stream.poll_send(data.as_slice(), cx))
            .transpose()
            .map_err(err)
            .map(|s| s.is_some())
    }

    /// For asyncio: True once the sending side is closed (its EOS sent).
    pub(crate) fn poll_close_send(&self, notifier: &AsyncNotifier, token: u64) -> PyResult<bool> {
        let stream = self.get()?;
        poll_once(notifier, token, |cx| stream.poll_close_send(cx)).transpose().map_err(err).map(|s| s.is_some())
    }

    /// For asyncio, after `poll_close_send`: (True, the handler's response) once it is
    /// in; the stream is closed then.
    pub(crate) fn poll_finish(
        &self,
        py: Python<'_>,
        notifier: &AsyncNotifier,
        token: u64,
    ) -> PyResult<(bool, Option<Py<PyBytes>>)> {
        let stream = self.get()?;
        match poll_once(notifier, token, |cx| stream.poll_finish(cx)) {
            None => Ok((false, None)),
            Some(done) => {
                self.stream.lock().take();
                Ok((true, Some(response_bytes(py, &done.map_err(err)?)?)))
            }
        }
    }
}

/// What `poll_recv` hands Python: (done, the item or None at the end), or the error.
fn polled_item(
    py: Python<'_>,
    polled: Option<cellshm::Result<Option<cellshm::StreamItem>>>,
) -> PyResult<(bool, Option<Py<PyBytes>>)> {
    match polled {
        None => Ok((false, None)),
        Some(Ok(Some(item))) => Ok((true, Some(bytes_of(py, item.payload())?))),
        Some(Ok(None)) => Ok((true, None)),
        Some(Err(e)) => Err(err(e)),
    }
}

/// The handler's end of a stream, given to Python stream handlers (see
/// `cellshm.StreamCall`). It stops working once the handler returned.
#[pyclass(module = "cellshm._native", frozen)]
pub(crate) struct StreamCall {
    pub(crate) end: StreamEnd,
    pub(crate) request: Py<PyBytes>,
    pub(crate) caller: Option<cellshm::PeerIdentity>,
}

/// One method's metrics for `cellshm.MethodMetrics`.
pub(crate) type PyMethodMetrics = (String, u32, u64, u64, Vec<(u32, u64)>, u64, u64, u64, u64);
/// A peer's metrics for `cellshm.PeerMetrics`.
pub(crate) type PyPeerMetrics = (&'static str, Vec<PyMethodMetrics>, Vec<PyMethodMetrics>, u64, u64, u64, u64);

pub(crate) fn py_metrics(m: &cellshm::PeerMetrics) -> PyPeerMetrics {
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

/// (peer_id, name, epoch, pid, uid, attached, remote) for `cellshm.CallerInfo`.
pub(crate) type PyCaller = (u32, String, u32, Option<u32>, Option<u32>, bool, bool);

pub(crate) fn py_caller(identity: Option<cellshm::PeerIdentity>) -> Option<PyCaller> {
    identity.map(|i| (i.peer_id, i.name, i.epoch, i.pid, i.uid, i.attached, i.remote))
}

#[pymethods]
impl StreamCall {
    /// Who opened the stream (host side), as (peer_id, name, epoch, pid, uid, attached); None in a cell.
    #[getter]
    pub(crate) fn caller(&self) -> Option<PyCaller> {
        py_caller(self.caller.clone())
    }

    /// The caller's deadline (CLOCK_MONOTONIC ns, as `time.monotonic_ns()`), 0 if none.
    #[getter]
    pub(crate) fn deadline_ns(&self) -> u64 {
        self.end.deadline_ns()
    }

    #[getter]
    pub(crate) fn request(&self, py: Python<'_>) -> Py<PyBytes> {
        self.request.clone_ref(py)
    }

    pub(crate) fn send(&self, py: Python<'_>, payload: &Bound<'_, PyAny>) -> PyResult<()> {
        let data = self::payload(Some(payload))?;
        py.detach(|| self.end.send(data.as_slice())).map_err(err)
    }

    /// The next item from the caller, or None once it closed its sending side.
    pub(crate) fn recv(&self, py: Python<'_>) -> PyResult<Option<Py<PyBytes>>> {
        match py.detach(|| self.end.recv()).map_err(err)? {
            Some(item) => Ok(Some(bytes_of(py, item.payload())?)),
            None => Ok(None),
        }
    }

    #[getter]
    pub(crate) fn cancelled(&self) -> bool {
        self.end.is_cancelled()
    }

    pub(crate) fn wait_cancelled(&self, py: Python<'_>, timeout: f64) -> PyResult<bool> {
        let timeout = duration(timeout, "timeout")?;
        Ok(py.detach(|| self.end.wait_cancelled(timeout)))
    }

    /// For asyncio, without blocking: (True, the caller's next item or None once it
    /// closed its side), or (False, None) with `token` pushed on `notifier` later.
    pub(crate) fn poll_recv(
        &self,
        py: Python<'_>,
        notifier: &AsyncNotifier,
        token: u64,
    ) -> PyResult<(bool, Option<Py<PyBytes>>)> {
        polled_item(py, poll_once(notifier, token, |cx| self.end.poll_recv(cx)))
    }

    /// For asyncio: True once `payload` was sent, else False with `token` pushed later.
    pub(crate) fn poll_send(&self, payload: &Bound<'_, PyAny>, notifier: &AsyncNotifier, token: u64) -> PyResult<bool> {
        let data = self::payload(Some(payload))?;
        poll_once(notifier, token, |cx| self.end.poll_send(data.as_slice(), cx))
            .transpose()
            .map_err(err)
            .map(|s| s.is_some())
    }

    /// For asyncio: True once the stream is cancelled, else False with `token` pushed
    /// when it is.
    pub(crate) fn poll_cancelled(&self, notifier: &AsyncNotifier, token: u64) -> bool {
        poll_once(notifier, token, |cx| self.end.poll_cancelled(cx)).is_some()
    }
}

/// A Python callable as a stream handler: it gets a `StreamCall` and returns the final
/// response (bytes-like or None). Runs on the stream's own thread.
/// A stream method's kind from its wire number; unary (0) and unknown numbers are
/// ValueError.
pub(crate) fn stream_kind(code: u32) -> PyResult<cellshm::MethodKind> {
    cellshm::MethodKind::stream_from_code(code).map_err(pyo3::exceptions::PyValueError::new_err)
}

pub(crate) fn py_stream_handler(
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
