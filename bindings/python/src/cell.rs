//! The cell side: `Cell`.

use std::sync::Arc;

use cellshm::{Cell as CoreCell, CellOptions, Error, JoinArgs, Status};
use parking_lot::Mutex;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

use crate::*;
use cellshm::Registry;

/// A joined cell (see `cellshm.Cell`).
#[pyclass(module = "cellshm._native", frozen)]
pub(crate) struct Cell {
    pub(crate) cell: Closable<CoreCell>,
}

impl Cell {
    pub(crate) fn get(&self) -> PyResult<Arc<CoreCell>> {
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
    pub(crate) fn join(py: Python<'_>, argv: Option<Vec<String>>) -> PyResult<Cell> {
        let args = argv.unwrap_or_default().into_iter().skip(1).map(Into::into);
        let join = JoinArgs::parse(args).map_err(err)?;
        let options = CellOptions::from_env().map_err(err)?;
        let cell = py.detach(|| CoreCell::join(join, options)).map_err(err)?;
        Ok(Cell { cell: Arc::new(Mutex::new(Some(Arc::new(cell)))) })
    }

    /// Joins the running hub `hub` (its name, or "UID/NAME") by attaching as `name`.
    #[staticmethod]
    pub(crate) fn attach(py: Python<'_>, hub: &str, name: &str) -> PyResult<Cell> {
        let options = CellOptions::from_env().map_err(err)?;
        let cell = py.detach(|| CoreCell::attach(hub, name, options)).map_err(err)?;
        Ok(Cell { cell: Arc::new(Mutex::new(Some(Arc::new(cell)))) })
    }

    #[getter]
    pub(crate) fn peer_id(&self) -> PyResult<u32> {
        Ok(self.get()?.peer_id())
    }

    /// Publishes topic `name`; `options` are (sample_size, depth, history,
    /// max_subscribers, max_borrowed) (see `cellshm.Hub.publish`).
    pub(crate) fn publish(
        &self,
        py: Python<'_>,
        name: &str,
        options: (u32, u32, u32, u32, u32),
    ) -> PyResult<crate::topic::Publisher> {
        let cell = self.get()?;
        crate::topic::publish(py, name, options, |name, options| cell.publish(name, options).map_err(err))
    }

    /// Subscribes to topic `name` (see `cellshm.Hub.subscribe`).
    #[pyo3(signature = (name, policy, n, wait, spin_us))]
    pub(crate) fn subscribe(
        &self,
        py: Python<'_>,
        name: &str,
        policy: u32,
        n: u32,
        wait: &str,
        spin_us: u64,
    ) -> PyResult<crate::topic::Subscriber> {
        let cell = self.get()?;
        crate::topic::subscribe(py, name, (policy, n), (wait, spin_us), |name, policy| {
            cell.subscribe(name, policy).map_err(err)
        })
    }

    /// Calls to the host go through this.
    #[getter]
    pub(crate) fn link(&self) -> LinkEnd {
        LinkEnd::cell(self.cell.clone())
    }

    #[pyo3(signature = (name, handler, view=false))]
    pub(crate) fn method(&self, name: &str, handler: Py<PyAny>, view: bool) -> PyResult<()> {
        let name = method_name(name)?;
        self.get()?.method(name, py_handler(handler, view)).map_err(err)
    }

    #[pyo3(signature = (name, handler, kind=1))]
    pub(crate) fn stream_method(&self, name: &str, handler: Py<PyAny>, kind: u32) -> PyResult<()> {
        let name = method_name(name)?;
        let kind = stream_kind(kind)?;
        self.get()?.stream_method_as(name, kind, py_stream_handler(handler)).map_err(err)
    }

    /// Keeps a serialized `google.protobuf.FileDescriptorSet` describing what is served.
    pub(crate) fn describe(&self, file_descriptor_set: &[u8]) -> PyResult<()> {
        self.get()?.describe(file_descriptor_set).map_err(err)
    }

    /// Starts serving and announces readiness to the host.
    pub(crate) fn serve(&self, py: Python<'_>) -> PyResult<()> {
        let cell = self.get()?;
        py.detach(|| cell.serve()).map_err(err)
    }

    /// Serves until the host says goodbye; raises if the host goes away. Ctrl-C works.
    pub(crate) fn run(&self, py: Python<'_>) -> PyResult<()> {
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
    pub(crate) fn notify_on_stop(&self, notifier: &AsyncNotifier, token: u64) -> PyResult<()> {
        let done = completion(notifier, token);
        self.get()?.on_stop(done);
        Ok(())
    }

    /// Ok if the host said goodbye; the error that stopped the cell otherwise.
    pub(crate) fn outcome(&self) -> PyResult<()> {
        self.get()?.outcome().map_err(err)
    }

    /// Sends a log record to the host (level: 1 error ... 5 trace) if the host's filter
    /// lets it through.
    pub(crate) fn log(&self, level: u32, target: &str, message: &str) -> PyResult<()> {
        self.get()?.log_event(level, target, message).map_err(err)
    }

    /// A record with its own time (ns since the Unix epoch), source location and fields.
    #[pyo3(signature = (level, target, message, time_unix_ns, file, line, fields))]
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn log_record(
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
    pub(crate) fn log_records_dropped(&self) -> PyResult<u64> {
        Ok(self.get()?.log_records_dropped())
    }

    /// True if a record of `level` from `target` passes the host's filter.
    pub(crate) fn log_enabled(&self, level: u32, target: &str) -> PyResult<bool> {
        Ok(self.get()?.log_enabled(level, target))
    }

    /// Tells the host goodbye and closes the cell.
    pub(crate) fn goodbye(&self, py: Python<'_>) -> PyResult<()> {
        let cell = self.cell.lock().take();
        match cell {
            Some(cell) => py.detach(move || cell.goodbye()).map_err(err),
            None => Ok(()),
        }
    }

    /// Closes the cell (the host sees it leave).
    pub(crate) fn close(&self, py: Python<'_>) {
        let cell = self.cell.lock().take();
        py.detach(move || drop(cell));
    }

    #[getter]
    pub(crate) fn closed(&self) -> bool {
        self.cell.lock().is_none()
    }
}
