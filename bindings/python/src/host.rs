//! The host: `Hub`, and `Peer`, its handle on one cell.

use cellshm::{CellProcess, Error, Hub as CoreHub, Peer as CorePeer, PeerOptions, PeerState, Status};
use parking_lot::Mutex;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyDict;

use crate::*;
use cellshm::Registry;

/// The host's hub (see `cellshm.Hub`).
#[pyclass(module = "cellshm._native", frozen)]
pub(crate) struct Hub {
    pub(crate) hub: Mutex<Option<CoreHub>>,
    pub(crate) name: String,
}

impl Hub {
    pub(crate) fn with<T>(&self, f: impl FnOnce(&CoreHub) -> cellshm::Result<T>) -> PyResult<T> {
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
    pub(crate) fn new(
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
    pub(crate) fn name(&self) -> String {
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
        crate::topic::publish(py, name, options, |name, options| self.with(|hub| hub.publish(name, options)))
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
        crate::topic::subscribe(py, name, (policy, n), (wait, spin_us), |name, policy| {
            self.with(|hub| hub.subscribe(name, policy))
        })
    }

    /// Serves `name` to every cell of the hub.
    #[pyo3(signature = (name, handler, view=false))]
    pub(crate) fn method(&self, name: &str, handler: Py<PyAny>, view: bool) -> PyResult<()> {
        let name = method_name(name)?;
        self.with(|hub| hub.method(name, py_handler(handler, view)))
    }

    /// Serves the stream method `name` to every cell of the hub; `kind` (the numbers of
    /// `cellshm.Introspect.methods`: 1 undeclared, 2 server, 3 client streaming, 4 bidi)
    /// is what introspection reports.
    #[pyo3(signature = (name, handler, kind=1))]
    pub(crate) fn stream_method(&self, name: &str, handler: Py<PyAny>, kind: u32) -> PyResult<()> {
        let name = method_name(name)?;
        let kind = stream_kind(kind)?;
        self.with(|hub| hub.stream_method_as(name, kind, py_stream_handler(handler)))
    }

    /// Serves a remote gRPC server's methods as host methods (see `cellshm.Hub.add_remote`).
    #[pyo3(signature = (name, url, methods=None, timeout=5.0))]
    pub(crate) fn add_remote(
        &self,
        py: Python<'_>,
        name: &str,
        url: &str,
        methods: Option<Vec<(String, u32)>>,
        timeout: f64,
    ) -> PyResult<crate::remote::Remote> {
        let remote = crate::remote::connect(py, name, url, crate::remote::options(methods, timeout)?)?;
        self.with(|hub| remote.remote.serve_on(hub))?;
        Ok(remote)
    }

    /// Keeps a serialized `google.protobuf.FileDescriptorSet` describing what is served.
    pub(crate) fn describe(&self, file_descriptor_set: &[u8]) -> PyResult<()> {
        self.with(|hub| hub.describe(file_descriptor_set))
    }

    /// Routes cells' log records to `sink(cell, peer_id, level, target, message,
    /// time_unix_ns, file, line, fields)`, or back to Rust `tracing` with None.
    pub(crate) fn set_log_sink(&self, sink: Option<Py<PyAny>>) -> PyResult<()> {
        let sink = sink.map(py_log_sink);
        self.with(|hub| {
            hub.set_log_sink(sink);
            Ok(())
        })
    }

    /// Only the cells named in `cells` may call `method`.
    pub(crate) fn allow(&self, method: &str, cells: Vec<String>) -> PyResult<()> {
        let cells: Vec<&str> = cells.iter().map(String::as_str).collect();
        self.with(|hub| hub.allow(method, &cells))
    }

    pub(crate) fn allow_everyone(&self, method: &str) -> PyResult<()> {
        self.with(|hub| hub.allow_everyone(method))
    }

    pub(crate) fn allow_attached(&self, method: &str, uids: Vec<u32>) -> PyResult<()> {
        self.with(|hub| hub.allow_attached(method, &uids))
    }

    /// The uids whose attached processes may relay to the hub's cells (`cellshm.Relay.*`).
    pub(crate) fn enable_relay(&self, uids: Vec<u32>) -> PyResult<()> {
        self.with(|hub| hub.enable_relay(&uids))
    }

    /// The uids that may inspect the hub (none by default; an empty list: none again).
    pub(crate) fn enable_inspect(&self, uids: Vec<u32>) -> PyResult<()> {
        self.with(|hub| {
            hub.enable_inspect(&uids);
            Ok(())
        })
    }

    /// `policy(caller_tuple, method) -> bool` before every call (None removes it).
    pub(crate) fn set_access_policy(&self, policy: Option<Py<PyAny>>) -> PyResult<()> {
        let policy = policy.map(access_policy);
        self.with(|hub| {
            hub.set_access_policy(policy);
            Ok(())
        })
    }

    /// Spawns `argv` as a cell named `name`; returns its Peer (not yet ready).
    #[pyo3(signature = (name, argv, env=None, wait="adaptive", spin_us=50, server_threads=2, stderr_tail=0, max_streams=64, stream_threads=8, default_timeout=None, stream_window=8))]
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn spawn(
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
    pub(crate) fn peer(&self, name: &str) -> PyResult<Option<Peer>> {
        let found = self.with(|hub| Ok(hub.peers().into_iter().rev().find(|p| p.name() == name)))?;
        Ok(found.map(|peer| Peer { peer, process: None }))
    }

    /// Lets processes this host did not spawn attach through the hub's discovery socket
    /// (uids in `allowed_uids`, the host's own by default).
    #[pyo3(signature = (allowed_uids=None))]
    pub(crate) fn enable_attach(&self, allowed_uids: Option<Vec<u32>>) -> PyResult<AttachListener> {
        let mut policy = cellshm::host::attach::AttachPolicy::default();
        if let Some(uids) = allowed_uids {
            policy.allowed_uids = uids;
        }
        let listener = self.with(|hub| hub.enable_attach(policy))?;
        Ok(AttachListener { listener: Mutex::new(Some(listener)) })
    }

    /// Closes every link (cells see EOF and leave) and the discovery socket.
    pub(crate) fn close(&self, py: Python<'_>) {
        let hub = self.hub.lock().take();
        py.detach(move || drop(hub));
    }

    #[getter]
    pub(crate) fn closed(&self) -> bool {
        self.hub.lock().is_none()
    }
}

/// The host's handle on one cell (see `cellshm.Peer`).
#[pyclass(module = "cellshm._native", frozen)]
pub(crate) struct Peer {
    pub(crate) peer: CorePeer,
    /// None for a cell that attached (the host did not spawn it).
    pub(crate) process: Option<CellProcess>,
}

impl Peer {
    pub(crate) fn process(&self) -> PyResult<&CellProcess> {
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
    pub(crate) fn id(&self) -> u32 {
        self.peer.id()
    }

    #[getter]
    pub(crate) fn name(&self) -> String {
        self.peer.name().to_string()
    }

    #[getter]
    pub(crate) fn pid(&self) -> Option<u32> {
        self.peer.pid()
    }

    /// (peer_id, name, epoch, pid, uid), as the host knows it.
    #[getter]
    pub(crate) fn identity(&self) -> PyCaller {
        py_caller(Some(self.peer.identity())).expect("an identity")
    }

    /// Its calls and streams refused by an access rule so far.
    #[getter]
    pub(crate) fn refused_calls(&self) -> u64 {
        self.peer.refused_calls()
    }

    /// (state, outgoing, incoming, open_streams, streams_opened, refused_calls, restarts),
    /// each method as (name, method_id, calls, in_flight, [(status code, count)], count,
    /// p50_ns, p99_ns, max_ns).
    pub(crate) fn metrics(&self) -> PyPeerMetrics {
        py_metrics(&self.peer.metrics())
    }

    /// "starting", "joined", "ready", "leaving" or "dead".
    #[getter]
    pub(crate) fn state(&self) -> &'static str {
        cellshm::peer_state_name(&self.peer.state())
    }

    /// Why the peer died, as (code, message), or None while alive.
    #[getter]
    pub(crate) fn death(&self) -> Option<(u32, String)> {
        match self.peer.state() {
            PeerState::Dead(e) => Some((e.code(), e.message().to_string())),
            _ => None,
        }
    }

    pub(crate) fn wait_ready(&self, py: Python<'_>, timeout: f64) -> PyResult<()> {
        let timeout = duration(timeout, "timeout")?;
        py.detach(|| self.peer.wait_ready(timeout)).map_err(err)
    }

    /// Calls to the cell go through this.
    #[getter]
    pub(crate) fn link(&self) -> LinkEnd {
        LinkEnd::peer(self.peer.clone())
    }

    /// Pushes a log filter ("warn,mycell=debug") to the cell.
    pub(crate) fn set_log_filter(&self, py: Python<'_>, filter: &str, timeout: f64) -> PyResult<()> {
        let timeout = duration(timeout, "timeout")?;
        py.detach(|| self.peer.set_log_filter(filter, timeout)).map_err(err)
    }

    /// Calls `callback(code, message)` once when the peer dies (at once if it has).
    pub(crate) fn on_death(&self, callback: Py<PyAny>) {
        self.peer.on_death(move |e| {
            Python::attach(|py| {
                if let Err(exception) = callback.call1(py, (e.code(), e.message())) {
                    exception.print(py);
                }
            })
        });
    }

    pub(crate) fn kill(&self) -> PyResult<()> {
        self.process()?.kill().map_err(err)
    }

    /// Waits for the process to exit; its exit code (128 + signal if killed).
    pub(crate) fn wait_exit(&self, py: Python<'_>, timeout: f64) -> PyResult<i32> {
        let timeout = duration(timeout, "timeout")?;
        let process = self.process()?;
        py.detach(|| process.wait_exit(timeout)).map_err(err)
    }

    /// GOODBYE, up to `grace` seconds, then SIGKILL; returns the exit code.
    pub(crate) fn shutdown(&self, py: Python<'_>, grace: f64) -> PyResult<i32> {
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
    pub(crate) fn doorbell_fd(&self) -> Option<i32> {
        self.peer.doorbell_fd()
    }
}
