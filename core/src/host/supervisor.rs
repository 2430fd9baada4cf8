//! Keeping cells alive: a recipe per logical cell name, relaunch on crash with capped
//! exponential backoff, stable names over changing peer ids, events on every
//! transition, graceful stop.
//!
//! One monitor thread owns every decision. Deaths and readiness reach it as events, so
//! relaunching never happens on a thread of the link that died: that link's region
//! can only be reused once its threads are gone.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use super::{CellProcess, Hub, Peer, PeerOptions};
use crate::error::{Error, Result};
use crate::runtime::session::{CallOptions, Response};
use crate::wire::Status;

/// When and how often a crashed cell is started again.
#[derive(Clone, Debug)]
pub struct RestartPolicy {
    /// Relaunches allowed within `reset_after`; one more crash and the cell is Failed.
    pub max_restarts: u32,
    /// Delay before the first relaunch; doubled after each crash.
    pub initial_backoff: Duration,
    /// Upper bound of the delay.
    pub max_backoff: Duration,
    /// A cell that stayed up this long has its restart count reset.
    pub reset_after: Duration,
}

impl Default for RestartPolicy {
    fn default() -> Self {
        RestartPolicy {
            max_restarts: 5,
            initial_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_secs(5),
            reset_after: Duration::from_secs(60),
        }
    }
}

/// The recipe of one logical cell.
#[derive(Clone, Debug)]
pub struct CellSpec {
    /// The stable name callers use.
    pub name: String,
    /// The program to run.
    pub program: PathBuf,
    /// Its arguments (the join arguments are appended).
    pub args: Vec<String>,
    /// Variables added to the inherited environment.
    pub env: Vec<(String, String)>,
    /// How the host talks to it (wait strategy, server threads).
    pub peer: PeerOptions,
    /// How long it may take to become ready before it counts as crashed.
    pub ready_timeout: Duration,
    /// Relaunch policy.
    pub restart: RestartPolicy,
}

impl CellSpec {
    /// A spec with default options.
    pub fn new(name: impl Into<String>, program: impl Into<PathBuf>) -> CellSpec {
        CellSpec {
            name: name.into(),
            program: program.into(),
            args: Vec::new(),
            env: Vec::new(),
            peer: PeerOptions::default(),
            ready_timeout: Duration::from_secs(10),
            restart: RestartPolicy::default(),
        }
    }

    /// Adds arguments.
    pub fn args<I: IntoIterator<Item = S>, S: Into<String>>(mut self, args: I) -> CellSpec {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Adds an environment variable.
    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> CellSpec {
        self.env.push((key.into(), value.into()));
        self
    }

    /// Sets the relaunch policy.
    pub fn restart(mut self, policy: RestartPolicy) -> CellSpec {
        self.restart = policy;
        self
    }
}

/// Why a cell instance ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ExitReason {
    /// The process exited with this code.
    Code(i32),
    /// A signal ended the process.
    Signal(i32),
    /// The cell said goodbye (it is not relaunched).
    Goodbye,
    /// The cell broke the protocol and was dropped.
    ProtocolError(String),
    /// It did not become ready in time (it was killed).
    ReadyTimeout,
    /// It could not be started at all.
    SpawnFailed(String),
    /// The supervisor stopped it; the exit code it ended with.
    Stopped(i32),
}

/// Short text for logs and the language bindings: "code 3", "signal 9", "goodbye", ...
impl fmt::Display for ExitReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExitReason::Code(c) => write!(f, "code {c}"),
            ExitReason::Signal(s) => write!(f, "signal {s}"),
            ExitReason::Goodbye => f.write_str("goodbye"),
            ExitReason::ProtocolError(m) => write!(f, "protocol error: {m}"),
            ExitReason::ReadyTimeout => f.write_str("ready timeout"),
            ExitReason::SpawnFailed(m) => write!(f, "spawn failed: {m}"),
            ExitReason::Stopped(c) => write!(f, "stopped (exit code {c})"),
        }
    }
}

/// Where a logical cell is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CellStatus {
    /// Launched, not ready yet.
    Starting,
    /// Serving.
    Ready,
    /// Being stopped.
    Stopping,
    /// Ended on purpose (goodbye, a clean exit, or a stop): not relaunched.
    Exited(ExitReason),
    /// Crashed; a relaunch is scheduled.
    Crashed(ExitReason),
    /// Crashed too often (or cannot start): given up.
    Failed(ExitReason),
}

/// A status change of one cell.
#[derive(Clone, Debug)]
pub struct SupervisorEvent {
    /// The cell's name.
    pub name: String,
    /// The new status.
    pub status: CellStatus,
    /// The instance's peer id, if it got one.
    pub peer_id: Option<u32>,
    /// The instance's process id, if it got one.
    pub pid: Option<u32>,
    /// Relaunches counted in the current window.
    pub restarts: u32,
}

type Listener = Arc<dyn Fn(&SupervisorEvent) + Send + Sync>;

struct Instance {
    peer: Peer,
    process: Arc<CellProcess>,
    generation: u64,
    up_since: Instant,
}

struct ManagedCell {
    spec: CellSpec,
    status: CellStatus,
    instance: Option<Instance>,
    generation: u64,
    restarts: u32,
    next_start: Option<Instant>,
    stopping: bool,
}

enum Notice {
    Ready { name: String, generation: u64, result: Result<()> },
    Died { name: String, generation: u64, error: Error },
}

struct Shared {
    hub: Hub,
    cells: Mutex<HashMap<String, ManagedCell>>,
    notices: Mutex<VecDeque<Notice>>,
    wake: Condvar,
    listeners: Mutex<Vec<Listener>>,
    shutting_down: std::sync::atomic::AtomicBool,
}

/// Supervises the cells of one hub. Thread-safe; dropping it stops every cell.
pub struct Supervisor {
    shared: Arc<Shared>,
    monitor: Option<JoinHandle<()>>,
}

impl fmt::Debug for Supervisor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Supervisor").field("hub", &self.shared.hub).finish()
    }
}

impl Supervisor {
    /// Supervises cells on `hub` (register host methods on it before adding cells).
    pub fn new(hub: Hub) -> Result<Supervisor> {
        let shared = Arc::new(Shared {
            hub,
            cells: Mutex::new(HashMap::new()),
            notices: Mutex::new(VecDeque::new()),
            wake: Condvar::new(),
            listeners: Mutex::new(Vec::new()),
            shutting_down: std::sync::atomic::AtomicBool::new(false),
        });
        let monitor_shared = shared.clone();
        let monitor = std::thread::Builder::new()
            .name("cellshm-supervisor".into())
            .spawn(move || monitor(monitor_shared))
            .map_err(|e| Error::system("spawning the supervisor thread", e))?;
        Ok(Supervisor { shared, monitor: Some(monitor) })
    }

    /// The hub.
    pub fn hub(&self) -> &Hub {
        &self.shared.hub
    }

    /// Calls `listener` on every status change (from the supervisor's thread).
    pub fn on_event(&self, listener: impl Fn(&SupervisorEvent) + Send + Sync + 'static) {
        self.shared.listeners.lock().push(Arc::new(listener));
    }

    /// Adds a cell and starts it.
    pub fn add(&self, spec: CellSpec) -> Result<()> {
        let mut cells = self.shared.cells.lock();
        if cells.contains_key(&spec.name) {
            return Err(Error::new(
                Status::AlreadyExists,
                format!("a cell named {:?} is already supervised", spec.name),
            ));
        }
        cells.insert(
            spec.name.clone(),
            ManagedCell {
                spec: spec.clone(),
                status: CellStatus::Starting,
                instance: None,
                generation: 0,
                restarts: 0,
                next_start: Some(Instant::now()),
                stopping: false,
            },
        );
        self.shared.wake.notify_all();
        Ok(())
    }

    /// The cell's status.
    pub fn status(&self, name: &str) -> Option<CellStatus> {
        self.shared.cells.lock().get(name).map(|c| c.status.clone())
    }

    /// The current instance's peer (while one runs).
    pub fn peer(&self, name: &str) -> Option<Peer> {
        self.shared.cells.lock().get(name).and_then(|c| c.instance.as_ref().map(|i| i.peer.clone()))
    }

    /// Waits until `name` reaches a status for which `until` is true; the status.
    pub fn wait_for(&self, name: &str, timeout: Duration, until: impl Fn(&CellStatus) -> bool) -> Result<CellStatus> {
        let deadline = Instant::now() + timeout;
        let mut cells = self.shared.cells.lock();
        loop {
            let status = cells
                .get(name)
                .map(|c| c.status.clone())
                .ok_or_else(|| Error::new(Status::NotFound, format!("no cell named {name:?}")))?;
            if until(&status) {
                return Ok(status);
            }
            if self.shared.wake.wait_until(&mut cells, deadline).timed_out() {
                return Err(Error::new(
                    Status::DeadlineExceeded,
                    format!("cell {name:?} is still {status:?} after {} ms", timeout.as_millis()),
                ));
            }
        }
    }

    /// Calls the current instance of `name`. While it is (re)starting this fails with
    /// UNAVAILABLE; retrying is the caller's choice.
    pub fn call(&self, name: &str, method: &str, payload: &[u8], options: &CallOptions) -> Result<Response> {
        self.ready_peer(name)?.call(method, payload, options)
    }

    /// The peer of the current instance of `name` once it is ready: NOT_FOUND for a
    /// name never added, UNAVAILABLE while it is (re)starting or stopped.
    pub fn ready_peer(&self, name: &str) -> Result<Peer> {
        let cells = self.shared.cells.lock();
        let cell = cells.get(name).ok_or_else(|| Error::new(Status::NotFound, format!("no cell named {name:?}")))?;
        match (&cell.status, &cell.instance) {
            (CellStatus::Ready, Some(instance)) => Ok(instance.peer.clone()),
            (status, _) => Err(Error::new(Status::Unavailable, format!("cell {name:?} is not ready ({status:?})"))),
        }
    }

    /// Stops `name` gracefully: GOODBYE, then SIGTERM, then SIGKILL, each after `grace`.
    /// It is not relaunched. Returns the exit code.
    pub fn stop(&self, name: &str, grace: Duration) -> Result<i32> {
        let instance = {
            let mut cells = self.shared.cells.lock();
            let cell =
                cells.get_mut(name).ok_or_else(|| Error::new(Status::NotFound, format!("no cell named {name:?}")))?;
            cell.stopping = true;
            cell.next_start = None;
            cell.instance.as_ref().map(|i| (i.peer.clone(), i.process.clone()))
        };
        self.shared.emit(name, CellStatus::Stopping);
        let code = match instance {
            Some((peer, process)) => process.shutdown(&peer, grace),
            None => 0,
        };
        let mut cells = self.shared.cells.lock();
        if let Some(cell) = cells.get_mut(name) {
            cell.instance = None;
            cell.status = CellStatus::Exited(ExitReason::Stopped(code));
        }
        drop(cells);
        self.shared.emit(name, CellStatus::Exited(ExitReason::Stopped(code)));
        Ok(code)
    }

    /// Stops every cell (see [`Supervisor::stop`]).
    pub fn stop_all(&self, grace: Duration) {
        let names: Vec<String> = self.shared.cells.lock().keys().cloned().collect();
        for name in names {
            let _ = self.stop(&name, grace);
        }
    }
}

impl Drop for Supervisor {
    fn drop(&mut self) {
        self.stop_all(Duration::from_millis(500));
        {
            // Under the cells lock, like every wakeup of the monitor: it checks for work
            // and sleeps holding it, so nothing falls in between.
            let _cells = self.shared.cells.lock();
            self.shared.shutting_down.store(true, std::sync::atomic::Ordering::SeqCst);
            self.shared.wake.notify_all();
        }
        if let Some(monitor) = self.monitor.take() {
            let _ = monitor.join();
        }
    }
}

impl Shared {
    fn emit(&self, name: &str, status: CellStatus) {
        let event = {
            let cells = self.cells.lock();
            let cell = cells.get(name);
            let instance = cell.and_then(|c| c.instance.as_ref());
            SupervisorEvent {
                name: name.to_string(),
                status,
                peer_id: instance.map(|i| i.peer.id()),
                pid: instance.and_then(|i| i.peer.pid()),
                restarts: cell.map_or(0, |c| c.restarts),
            }
        };
        let listeners: Vec<Listener> = self.listeners.lock().clone();
        for listener in listeners {
            listener(&event);
        }
        // Waiters are woken only after the listeners saw the event: otherwise a thread
        // returning from `wait_for(ready)` could stop the cell and have its "stopping"
        // event delivered before this "ready" one.
        self.wake.notify_all();
    }

    fn notify(&self, notice: Notice) {
        self.notices.lock().push_back(notice);
        // Take the cells lock so the monitor cannot miss the wakeup between checking
        // the notice queue and waiting.
        let _cells = self.cells.lock();
        self.wake.notify_all();
    }
}

fn monitor(shared: Arc<Shared>) {
    loop {
        if shared.shutting_down.load(std::sync::atomic::Ordering::SeqCst) {
            return;
        }
        let notices: Vec<Notice> = shared.notices.lock().drain(..).collect();
        for notice in notices {
            handle(&shared, notice);
        }
        let now = Instant::now();
        let due: Vec<String> = {
            let cells = shared.cells.lock();
            cells.iter().filter(|(_, c)| c.next_start.is_some_and(|t| t <= now)).map(|(n, _)| n.clone()).collect()
        };
        for name in due {
            launch(&shared, &name);
        }
        let mut cells = shared.cells.lock();
        if !shared.notices.lock().is_empty() || shared.shutting_down.load(std::sync::atomic::Ordering::SeqCst) {
            continue;
        }
        // No timer unless a restart is due: notices, new cells and shutdown all wake
        // us under the cells lock.
        match cells.values().filter_map(|c| c.next_start).min() {
            Some(t) => {
                shared.wake.wait_until(&mut cells, t);
            }
            None => shared.wake.wait(&mut cells),
        }
    }
}

fn launch(shared: &Arc<Shared>, name: &str) {
    let (spec, generation) = {
        let mut cells = shared.cells.lock();
        let Some(cell) = cells.get_mut(name) else { return };
        cell.next_start = None;
        if cell.stopping {
            return;
        }
        cell.generation += 1;
        cell.status = CellStatus::Starting;
        (cell.spec.clone(), cell.generation)
    };
    let mut command = Command::new(&spec.program);
    command.args(&spec.args);
    for (k, v) in &spec.env {
        command.env(k, v);
    }
    let started = shared.hub.add_peer(&spec.name, spec.peer.clone()).and_then(|ticket| ticket.spawn(&mut command));
    let (peer, child) = match started {
        Ok(pair) => pair,
        Err(e) => {
            crashed(shared, name, generation, ExitReason::SpawnFailed(e.to_string()));
            return;
        }
    };
    {
        let mut cells = shared.cells.lock();
        if let Some(cell) = cells.get_mut(name) {
            cell.instance = Some(Instance {
                peer: peer.clone(),
                process: Arc::new(CellProcess::new(child)),
                generation,
                up_since: Instant::now(),
            });
        }
    }
    shared.emit(name, CellStatus::Starting);
    let weak = Arc::downgrade(shared);
    let cell_name = name.to_string();
    peer.on_death(move |error| {
        if let Some(shared) = weak.upgrade() {
            shared.notify(Notice::Died { name: cell_name, generation, error: error.clone() });
        }
    });
    let weak = Arc::downgrade(shared);
    let cell_name = name.to_string();
    let timeout = spec.ready_timeout;
    let _ = std::thread::Builder::new().name("cellshm-ready".into()).spawn(move || {
        let result = peer.wait_ready(timeout);
        if let Some(shared) = weak.upgrade() {
            shared.notify(Notice::Ready { name: cell_name, generation, result });
        }
    });
}

fn handle(shared: &Arc<Shared>, notice: Notice) {
    match notice {
        Notice::Ready { name, generation, result } => {
            let instance = {
                let mut cells = shared.cells.lock();
                let Some(cell) = cells.get_mut(&name) else { return };
                if cell.generation != generation || cell.status != CellStatus::Starting {
                    return;
                }
                match &result {
                    Ok(()) => {
                        cell.status = CellStatus::Ready;
                        None
                    }
                    Err(e) if e.status() == Status::DeadlineExceeded => {
                        cell.instance.as_ref().map(|i| i.process.clone())
                    }
                    // It died before it was ready: the death notice decides.
                    Err(_) => return,
                }
            };
            match (result, instance) {
                (Ok(()), _) => shared.emit(&name, CellStatus::Ready),
                (Err(_), Some(process)) => {
                    let _ = process.kill();
                    let _ = process.wait_exit(Duration::from_secs(5));
                    crashed(shared, &name, generation, ExitReason::ReadyTimeout);
                }
                (Err(_), None) => {}
            }
        }
        Notice::Died { name, generation, error } => {
            let (instance, leaving, stopping) = {
                let cells = shared.cells.lock();
                let Some(cell) = cells.get(&name) else { return };
                let Some(instance) = cell.instance.as_ref().filter(|i| i.generation == generation) else { return };
                let leaving = instance.peer.said_goodbye();
                ((instance.process.clone(), instance.up_since), leaving, cell.stopping)
            };
            if stopping {
                return; // `stop` reports it
            }
            let (process, up_since) = instance;
            // The doorbell closes as the process exits: give it a moment to be reaped.
            let status = process
                .wait_exit(Duration::from_millis(500))
                .ok()
                .and_then(|_| process.try_exit_status().ok().flatten());
            let reason = if error.status() == Status::ProtocolError {
                let _ = process.kill();
                ExitReason::ProtocolError(error.message().to_string())
            } else if leaving {
                ExitReason::Goodbye
            } else {
                match status.and_then(|s| s.signal().map(ExitReason::Signal).or(s.code().map(ExitReason::Code))) {
                    Some(reason) => reason,
                    None => {
                        let _ = process.kill();
                        ExitReason::Signal(libc::SIGKILL)
                    }
                }
            };
            if matches!(reason, ExitReason::Goodbye | ExitReason::Code(0)) {
                {
                    let mut cells = shared.cells.lock();
                    if let Some(cell) = cells.get_mut(&name) {
                        cell.instance = None;
                        cell.status = CellStatus::Exited(reason.clone());
                    }
                }
                shared.emit(&name, CellStatus::Exited(reason));
                return;
            }
            if up_since.elapsed()
                >= shared.cells.lock().get(&name).map_or(Duration::MAX, |c| c.spec.restart.reset_after)
            {
                if let Some(cell) = shared.cells.lock().get_mut(&name) {
                    cell.restarts = 0;
                }
            }
            crashed(shared, &name, generation, reason);
        }
    }
}

/// Records a crash and schedules the relaunch, or gives up.
fn crashed(shared: &Arc<Shared>, name: &str, generation: u64, reason: ExitReason) {
    let instance = {
        let mut cells = shared.cells.lock();
        let Some(cell) = cells.get_mut(name) else { return };
        if cell.generation != generation || cell.stopping {
            return;
        }
        cell.instance.take()
    };
    // Reaped outside the lock: waiting for a process must not hold up every other call.
    if let Some(instance) = instance {
        let _ = instance.process.wait_exit(Duration::from_secs(5));
    }
    let status = {
        let mut cells = shared.cells.lock();
        let Some(cell) = cells.get_mut(name) else { return };
        if cell.generation != generation || cell.stopping {
            return;
        }
        let policy = &cell.spec.restart;
        if matches!(reason, ExitReason::SpawnFailed(_)) || cell.restarts >= policy.max_restarts {
            cell.status = CellStatus::Failed(reason);
        } else {
            let shift = cell.restarts.min(20);
            let backoff = policy.initial_backoff.saturating_mul(1 << shift).min(policy.max_backoff);
            cell.restarts += 1;
            cell.next_start = Some(Instant::now() + backoff);
            cell.status = CellStatus::Crashed(reason);
        }
        cell.status.clone()
    };
    shared.emit(name, status);
}
