//! Supervision (`Supervisor`, its events) and attaching (`AttachListener`).

use std::sync::Arc;

use cellshm::{Error, Hub as CoreHub, HubConfig, LogRecord, PeerOptions, Status};
use parking_lot::Mutex;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyDict;

use crate::*;
use cellshm::Registry;

pub(crate) fn status_parts(status: &cellshm::CellStatus) -> (&'static str, Option<String>) {
    match status {
        cellshm::CellStatus::Unavailable(why) => (status.name(), Some(why.clone())),
        _ => (status.name(), status.reason().map(|r| r.to_string())),
    }
}

/// `Supervisor.add`'s and `update`'s restart policy: (ready_timeout, max_restarts,
/// initial_backoff, max_backoff, reset_after), in seconds but for the count.
pub(crate) type PyRestartPolicy = (f64, u32, f64, f64, f64);

/// A recipe from `Supervisor.add`'s or `update`'s arguments; `heartbeat` is (interval,
/// allowed misses).
pub(crate) fn cell_spec(
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
pub(crate) struct EventSubscription {
    pub(crate) subscription: Mutex<Option<cellshm::EventSubscription>>,
    /// Checked under the GIL before each call: once `close` returns, the callback is
    /// not called again (a call already under way finishes).
    pub(crate) active: Arc<std::sync::atomic::AtomicBool>,
}

impl EventSubscription {
    pub(crate) fn cancel(&self) {
        self.active.store(false, std::sync::atomic::Ordering::SeqCst);
        if let Some(subscription) = self.subscription.lock().take() {
            // Not waiting: the event thread may be waiting for the GIL this thread holds.
            subscription.cancel_without_waiting();
        }
    }
}

#[pymethods]
impl EventSubscription {
    pub(crate) fn close(&self) {
        self.cancel();
    }

    #[getter]
    pub(crate) fn active(&self) -> bool {
        self.active.load(std::sync::atomic::Ordering::SeqCst)
    }
}

impl Drop for EventSubscription {
    fn drop(&mut self) {
        self.cancel();
    }
}

/// A hub's shape from Python's keyword arguments (checked by `Hub::create`).
pub(crate) fn hub_config(
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
pub(crate) fn py_log_sink(sink: Py<PyAny>) -> cellshm::LogSink {
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
pub(crate) fn access_policy(policy: Py<PyAny>) -> cellshm::AccessPolicy {
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
pub(crate) struct Supervisor {
    pub(crate) sup: Closable<cellshm::Supervisor>,
    pub(crate) name: String,
    /// How the host talks to each cell (the constructor's peer options).
    pub(crate) peer_defaults: PeerOptions,
}

impl Supervisor {
    /// `spec` talking to its cell as the constructor's peer options say, its own default
    /// timeout (if it set one) winning.
    pub(crate) fn with_peer_defaults(&self, mut spec: cellshm::CellSpec) -> cellshm::CellSpec {
        spec.peer = PeerOptions { default_timeout: spec.peer.default_timeout, ..self.peer_defaults.clone() };
        spec
    }

    pub(crate) fn get(&self) -> PyResult<Arc<cellshm::Supervisor>> {
        self.sup.lock().clone().ok_or_else(|| err(Error::new(Status::SessionClosed, "the supervisor is closed")))
    }
}

#[pymethods]
impl Supervisor {
    #[new]
    #[pyo3(signature = (name=None, max_peers=8, ring_capacity=256, slot_classes=None, shutdown_grace=2.0, server_threads=2, max_streams=64, stream_threads=8, stream_window=8))]
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
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
    pub(crate) fn hub_name(&self) -> String {
        self.name.clone()
    }

    /// Publishes topic `name`; `options` are (sample_size, depth, history,
    /// max_subscribers, max_borrowed) (see `cellshm.Hub.publish`).
    pub(crate) fn publish(
        &self,
        py: Python<'_>,
        name: &str,
        options: (u32, u32, u32, u32, u32),
    ) -> PyResult<crate::topic::Publisher> {
        let sup = self.get()?;
        crate::topic::publish(py, name, options, |name, options| sup.hub().publish(name, options).map_err(err))
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
        let sup = self.get()?;
        crate::topic::subscribe(py, name, (policy, n), (wait, spin_us), |name, policy| {
            sup.hub().subscribe(name, policy).map_err(err)
        })
    }

    #[pyo3(signature = (name, handler, view=false))]
    pub(crate) fn method(&self, name: &str, handler: Py<PyAny>, view: bool) -> PyResult<()> {
        let name = method_name(name)?;
        self.get()?.hub().method(name, py_handler(handler, view)).map_err(err)
    }

    #[pyo3(signature = (name, url, methods=None, timeout=5.0, health_interval=1.0))]
    pub(crate) fn add_remote(
        &self,
        py: Python<'_>,
        name: &str,
        url: &str,
        methods: Option<Vec<(String, u32)>>,
        timeout: f64,
        health_interval: f64,
    ) -> PyResult<crate::remote::Remote> {
        let options =
            crate::remote::options(methods, timeout)?.health_interval(duration(health_interval, "health_interval")?);
        let remote = crate::remote::connect(py, name, url, options)?;
        remote.remote.serve_supervised(&*self.get()?).map_err(err)?;
        Ok(remote)
    }

    pub(crate) fn describe(&self, file_descriptor_set: &[u8]) -> PyResult<()> {
        self.get()?.hub().describe(file_descriptor_set).map_err(err)
    }

    pub(crate) fn allow(&self, method: &str, cells: Vec<String>) -> PyResult<()> {
        let cells: Vec<&str> = cells.iter().map(String::as_str).collect();
        self.get()?.hub().allow(method, &cells).map_err(err)
    }

    pub(crate) fn set_log_sink(&self, sink: Option<Py<PyAny>>) -> PyResult<()> {
        self.get()?.hub().set_log_sink(sink.map(py_log_sink));
        Ok(())
    }

    pub(crate) fn set_log_filter(&self, py: Python<'_>, name: &str, filter: &str) -> PyResult<()> {
        let sup = self.get()?;
        py.detach(|| sup.set_log_filter(name, filter)).map_err(err)
    }

    pub(crate) fn enable_inspect(&self, uids: Vec<u32>) -> PyResult<()> {
        self.get()?.hub().enable_inspect(&uids);
        Ok(())
    }

    pub(crate) fn allow_attached(&self, method: &str, uids: Vec<u32>) -> PyResult<()> {
        self.get()?.hub().allow_attached(method, &uids).map_err(err)
    }

    pub(crate) fn allow_everyone(&self, method: &str) -> PyResult<()> {
        self.get()?.hub().allow_everyone(method).map_err(err)
    }

    pub(crate) fn set_access_policy(&self, policy: Option<Py<PyAny>>) -> PyResult<()> {
        self.get()?.hub().set_access_policy(policy.map(access_policy));
        Ok(())
    }

    /// Calls `callback(name, status, reason, peer_id, pid, restarts)` on every change,
    /// from the supervisor's event thread. The callback must not raise (the Python layer
    /// wraps it); an exception that gets here anyway is printed and goes no further.
    pub(crate) fn on_event(&self, callback: Py<PyAny>) -> PyResult<EventSubscription> {
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
    pub(crate) fn add(
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
    pub(crate) fn update(
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
    pub(crate) fn set_default_timeout(&self, timeout: f64) -> PyResult<()> {
        self.get()?.set_default_timeout(timeout_or_forever(timeout, "default_timeout")?);
        Ok(())
    }

    pub(crate) fn start(&self, py: Python<'_>, name: &str) -> PyResult<()> {
        let sup = self.get()?;
        py.detach(|| sup.start(name)).map_err(err)
    }

    pub(crate) fn restart(&self, py: Python<'_>, name: &str, grace: f64) -> PyResult<()> {
        let grace = duration(grace, "grace")?;
        let sup = self.get()?;
        py.detach(|| sup.restart(name, grace)).map_err(err)
    }

    pub(crate) fn remove(&self, py: Python<'_>, name: &str, grace: f64) -> PyResult<()> {
        let grace = duration(grace, "grace")?;
        let sup = self.get()?;
        py.detach(|| sup.remove(name, grace)).map_err(err)
    }

    /// The supervised names, sorted.
    pub(crate) fn names(&self) -> PyResult<Vec<String>> {
        Ok(self.get()?.names())
    }

    /// (status, reason) of a cell, or None for an unknown name.
    pub(crate) fn status(&self, name: &str) -> PyResult<Option<(&'static str, Option<String>)>> {
        Ok(self.get()?.status(name).map(|s| status_parts(&s)))
    }

    /// Waits until the cell's status is `status` ("ready", "crashed", ...); the reason.
    pub(crate) fn wait_for(&self, py: Python<'_>, name: &str, status: &str, timeout: f64) -> PyResult<Option<String>> {
        const STATUSES: [&str; 8] =
            ["starting", "ready", "stopping", "exited", "crashed", "failed", "removed", "unavailable"];
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
    pub(crate) fn link(&self, name: &str) -> LinkEnd {
        LinkEnd::supervised(self.sup.clone(), name.to_string())
    }

    /// The current instance's pid, if one runs.
    pub(crate) fn pid(&self, name: &str) -> PyResult<Option<u32>> {
        Ok(self.get()?.peer(name).and_then(|p| p.pid()))
    }

    pub(crate) fn stop(&self, py: Python<'_>, name: &str, grace: f64) -> PyResult<i32> {
        let grace = duration(grace, "grace")?;
        let sup = self.get()?;
        py.detach(|| sup.stop(name, grace)).map_err(err)
    }

    pub(crate) fn close(&self, py: Python<'_>, grace: f64) -> PyResult<()> {
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
pub(crate) struct AttachListener {
    pub(crate) listener: Mutex<Option<cellshm::host::attach::AttachListener>>,
}

#[pymethods]
impl AttachListener {
    pub(crate) fn refusals(&self) -> Vec<String> {
        self.listener.lock().as_ref().map(|l| l.refusals()).unwrap_or_default()
    }

    /// How many requests were refused in all (`refusals` keeps the last 16).
    pub(crate) fn refusal_count(&self) -> u64 {
        self.listener.lock().as_ref().map(|l| l.refusal_count()).unwrap_or(0)
    }

    pub(crate) fn close(&self, py: Python<'_>) {
        let listener = self.listener.lock().take();
        py.detach(move || drop(listener));
    }
}
