//! `cellshm._native.LinkEnd`: calling the other side of a link, written once for the
//! host's peers, cells and supervised cells (the package's `cellshm.LinkEnd`).

use std::sync::Arc;

use cellshm::{Cell as CoreCell, Peer as CorePeer, Supervised, Supervisor as CoreSupervisor};
use parking_lot::Mutex;
use pyo3::prelude::*;
use pyo3::types::PyBytes;

use crate::{
    call_args, completion, duration, err, method_name, payload, response_bytes, AsyncNotifier, PendingCall, Stream,
};
use cellshm::{CallOptions, Error, Status};

/// A slot a Python object may empty (`close()`), shared by the object and its link ends.
pub(crate) type Closable<T> = Arc<Mutex<Option<Arc<T>>>>;

/// What a [`LinkEnd`] calls through.
enum End {
    Peer(CorePeer),
    Cell(Closable<CoreCell>),
    Supervised(Closable<CoreSupervisor>, String),
}

/// One end of a link (see `cellshm.LinkEnd`).
#[pyclass(module = "cellshm._native", frozen)]
pub(crate) struct LinkEnd {
    end: End,
}

fn open<T>(slot: &Closable<T>, what: &str) -> PyResult<Arc<T>> {
    slot.lock().clone().ok_or_else(|| err(Error::new(Status::SessionClosed, format!("the {what} is closed"))))
}

impl LinkEnd {
    pub(crate) fn peer(peer: CorePeer) -> LinkEnd {
        LinkEnd { end: End::Peer(peer) }
    }

    pub(crate) fn cell(cell: Closable<CoreCell>) -> LinkEnd {
        LinkEnd { end: End::Cell(cell) }
    }

    pub(crate) fn supervised(supervisor: Closable<CoreSupervisor>, name: String) -> LinkEnd {
        LinkEnd { end: End::Supervised(supervisor, name) }
    }

    /// Runs `f` on the end with the GIL released.
    fn with<T: Send>(
        &self,
        py: Python<'_>,
        f: impl FnOnce(&(dyn cellshm::LinkEnd + Sync)) -> cellshm::Result<T> + Send,
    ) -> PyResult<T> {
        match &self.end {
            End::Peer(peer) => py.detach(|| f(peer)),
            End::Cell(slot) => {
                let cell = open(slot, "cell")?;
                py.detach(|| f(&*cell))
            }
            End::Supervised(slot, name) => {
                let supervisor = open(slot, "supervisor")?;
                py.detach(|| f(&Supervised::new(&supervisor, name.as_str())))
            }
        }
        .map_err(err)
    }
}

#[pymethods]
impl LinkEnd {
    #[pyo3(signature = (method, payload=None, timeout=None))]
    fn call(
        &self,
        py: Python<'_>,
        method: &str,
        payload: Option<&Bound<'_, PyAny>>,
        timeout: Option<f64>,
    ) -> PyResult<Py<PyBytes>> {
        let (method, data, options) = call_args(method, payload, timeout)?;
        let response = self.with(py, |end| end.call(method, data.as_slice(), &options))?;
        response_bytes(py, &response)
    }

    /// Starts a call; `token` is signalled on `notifier` once its result is in.
    #[pyo3(signature = (method, payload, timeout, notifier, token))]
    fn call_start(
        &self,
        py: Python<'_>,
        method: &str,
        payload: Option<&Bound<'_, PyAny>>,
        timeout: Option<f64>,
        notifier: &AsyncNotifier,
        token: u64,
    ) -> PyResult<PendingCall> {
        let (method, data, options) = call_args(method, payload, timeout)?;
        let done = completion(notifier, token);
        let call = self.with(py, |end| end.call_start(method, data.as_slice(), &options, done))?;
        Ok(PendingCall { call })
    }

    #[pyo3(signature = (method, payload=None, timeout=None))]
    fn open_stream(
        &self,
        py: Python<'_>,
        method: &str,
        payload: Option<&Bound<'_, PyAny>>,
        timeout: Option<f64>,
    ) -> PyResult<Stream> {
        let (method, data, options) = call_args(method, payload, timeout)?;
        let stream = self.with(py, |end| end.open_stream(method, data.as_slice(), &options))?;
        Ok(Stream::new(stream))
    }

    #[pyo3(signature = (method, payload=None))]
    fn notify(&self, py: Python<'_>, method: &str, payload: Option<&Bound<'_, PyAny>>) -> PyResult<()> {
        let method = method_name(method)?;
        let data = self::payload(payload)?;
        self.with(py, |end| end.notify(method, data.as_slice(), &CallOptions::default()))
    }

    /// Round-trip time of a PING, in seconds.
    fn ping(&self, py: Python<'_>, timeout: f64) -> PyResult<f64> {
        let timeout = duration(timeout, "timeout")?;
        self.with(py, |end| end.ping(timeout)).map(|d| d.as_secs_f64())
    }

    /// The methods the other side serves, as (name, id, kind number), sorted by name.
    fn served_methods(&self, py: Python<'_>, timeout: f64) -> PyResult<Vec<(String, u32, u32)>> {
        let timeout = duration(timeout, "timeout")?;
        let methods = self.with(py, |end| end.served_methods(timeout))?;
        Ok(methods.into_iter().map(|(name, id, kind)| (name, id, kind as u32)).collect())
    }
}
