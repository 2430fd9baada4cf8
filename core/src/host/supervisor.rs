//! Keeping cells alive: a recipe per logical cell name, relaunch on crash with capped
//! exponential backoff, stable names over changing peer ids, events on every
//! transition, graceful stop, restart, removal and a new recipe at run time.
//!
//! One monitor thread owns every automatic decision (launch, relaunch, give up). Deaths
//! and readiness reach it as notices, so relaunching never happens on a thread of the
//! link that died. Operations a user asks for (stop, restart, remove, update) run on the
//! caller's thread, one at a time. Each instance has a generation: whatever a notice,
//! a launch or an operation finds with another generation than the cell's current one
//! is about an instance that no longer counts, and is dropped.
//!
//! Events are queued in the order the statuses change (under the cells lock) and
//! delivered by one thread of their own, so a slow or panicking listener holds up
//! neither relaunches nor the operation that caused the event, and each listener sees
//! each event once, in order.

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
use crate::link_end::LinkEnd;
use crate::runtime::session::{CallOptions, PendingCall, Response};
use crate::wire::{builtin, Status};

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

impl RestartPolicy {
    /// Checks the policy; the error (INVALID_ARGUMENT) names what is wrong.
    pub fn validate(&self) -> Result<()> {
        if self.initial_backoff > self.max_backoff {
            return Err(Error::new(
                Status::InvalidArgument,
                format!(
                    "initial_backoff {} ms is above max_backoff {} ms",
                    self.initial_backoff.as_millis(),
                    self.max_backoff.as_millis()
                ),
            ));
        }
        Ok(())
    }
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

/// How a supervisor tells a cell that is alive but cannot serve (its handler threads
/// deadlocked or stuck) from one that works: a `cellshm.Lifecycle.heartbeat` call every
/// `interval`, answered from the cell's handler threads. A cell that leaves more than
/// `allowed_misses` heartbeats in a row unanswered (each had `interval` to be answered)
/// is killed and relaunched as [`ExitReason::Unresponsive`]: `interval × (allowed_misses
/// + 1)` after the first heartbeat it left unanswered was sent. The first is sent as the
/// cell becomes ready (a cell that never answers is killed that long after it was
/// ready); one that stops answering later is killed at most `interval × (allowed_misses
/// + 2)` after it stopped (it may stop just after answering one).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Heartbeat {
    /// Time between heartbeats, and the time each has to be answered.
    pub interval: Duration,
    /// Unanswered heartbeats in a row that are tolerated.
    pub allowed_misses: u32,
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
    /// Heartbeats once it is ready (`None`, the default: none; a hung cell is then
    /// noticed only by the time limits of the calls made to it).
    pub heartbeat: Option<Heartbeat>,
    /// The log filter of every instance (`"warn,mycell=debug"`): given to it in
    /// `CELLSHM_LOG_FILTER` when it starts, and set with `cellshm.Log.set_filter` once it
    /// is ready (for cells that do not read the variable), so it survives relaunches.
    /// `None`: the cell's default (`info`).
    pub log_filter: Option<String>,
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
            heartbeat: None,
            log_filter: None,
        }
    }

    /// Sets the log filter every instance starts with (see [`CellSpec::log_filter`]).
    pub fn log_filter(mut self, filter: impl Into<String>) -> CellSpec {
        self.log_filter = Some(filter.into());
        self
    }

    /// Checks the cell with a heartbeat every `interval` and relaunches it as
    /// unresponsive after more than `allowed_misses` in a row went unanswered.
    pub fn heartbeat(mut self, interval: Duration, allowed_misses: u32) -> CellSpec {
        self.heartbeat = Some(Heartbeat { interval, allowed_misses });
        self
    }

    /// How long a call to this cell may take when its options set no time limit (see
    /// [`PeerOptions::default_timeout`]; [`crate::FOREVER`] for none).
    pub fn default_timeout(mut self, timeout: Duration) -> CellSpec {
        self.peer.default_timeout = Some(timeout);
        self
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
    /// It was alive but left its heartbeats unanswered (see [`Heartbeat`]); it was killed.
    Unresponsive,
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
            ExitReason::Unresponsive => f.write_str("unresponsive"),
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
    /// Removed from the supervisor ([`Supervisor::remove`]): the last event of a cell.
    Removed,
}

impl CellStatus {
    /// The status's name, as every language spells it: "starting", "ready", "stopping",
    /// "exited", "crashed", "failed", "removed".
    pub fn name(&self) -> &'static str {
        match self {
            CellStatus::Starting => "starting",
            CellStatus::Ready => "ready",
            CellStatus::Stopping => "stopping",
            CellStatus::Exited(_) => "exited",
            CellStatus::Crashed(_) => "crashed",
            CellStatus::Failed(_) => "failed",
            CellStatus::Removed => "removed",
        }
    }

    /// Why the instance ended, for the statuses that say.
    pub fn reason(&self) -> Option<&ExitReason> {
        match self {
            CellStatus::Exited(r) | CellStatus::Crashed(r) | CellStatus::Failed(r) => Some(r),
            _ => None,
        }
    }
}

/// A status change of one cell.
#[derive(Clone, Debug)]
pub struct SupervisorEvent {
    /// The cell's name.
    pub name: String,
    /// The new status.
    pub status: CellStatus,
    /// The instance's peer id, if it got one (for an ending, of the instance that ended).
    pub peer_id: Option<u32>,
    /// The instance's process id, if it got one (for an ending, of the instance that ended).
    pub pid: Option<u32>,
    /// Relaunches counted in the current window.
    pub restarts: u32,
}

type Listener = Arc<dyn Fn(&SupervisorEvent) + Send + Sync>;

struct Instance {
    peer: Peer,
    process: Arc<CellProcess>,
    up_since: Instant,
    /// From the moment it is ready, if its spec asks for heartbeats.
    heartbeat: Option<Beating>,
}

/// The heartbeats of one ready instance.
struct Beating {
    every: Heartbeat,
    /// When the next heartbeat is sent (and the one in flight judged).
    next: Instant,
    in_flight: Option<PendingCall>,
    /// Unanswered in a row.
    misses: u32,
}

struct ManagedCell {
    /// Tells this cell from an earlier one of the same name (removed, then added again).
    key: u64,
    spec: CellSpec,
    status: CellStatus,
    /// The last status whose event the listeners have seen: what `wait_for` waits on.
    reported: CellStatus,
    instance: Option<Instance>,
    /// (peer id, pid) of the latest instance, kept after it ended for the events that
    /// report its end.
    last_instance: Option<(u32, Option<u32>)>,
    /// Bumped by every launch and by every operation that ends an instance.
    generation: u64,
    restarts: u32,
    next_start: Option<Instant>,
    /// Instances launched so far (every one after the first is a relaunch, counted in the
    /// hub's metrics).
    launches: u64,
}

impl ManagedCell {
    /// Running, starting, or due to start: something a stop has to end.
    fn is_active(&self) -> bool {
        self.instance.is_some()
            || self.next_start.is_some()
            || matches!(self.status, CellStatus::Starting | CellStatus::Ready | CellStatus::Stopping)
    }
}

enum Notice {
    Ready { name: String, generation: u64, result: Result<()> },
    Died { name: String, generation: u64, error: Error },
}

#[derive(Default)]
struct EventQueue {
    /// (cell key, sequence number, event).
    queue: VecDeque<(u64, u64, SupervisorEvent)>,
    /// The sequence number of the last event queued.
    last_queued: u64,
    closed: bool,
}

/// How long an operation waits for the listeners to see its events before it returns
/// anyway (a listener that blocks must not hang `stop`).
const EVENTS_SEEN_WAIT: Duration = Duration::from_secs(5);

#[derive(Default)]
struct Listeners {
    next_id: u64,
    registered: Vec<(u64, Listener)>,
    /// The listener the event thread is calling now.
    calling: Option<u64>,
    /// The event thread (a listener dropping its own subscription must not wait for itself).
    thread: Option<std::thread::ThreadId>,
}

struct Shared {
    hub: Hub,
    cells: Mutex<HashMap<String, ManagedCell>>,
    next_key: std::sync::atomic::AtomicU64,
    notices: Mutex<VecDeque<Notice>>,
    /// Wakes the monitor and `wait_for`; notified under the cells lock.
    wake: Condvar,
    events: Mutex<EventQueue>,
    events_ready: Condvar,
    /// The sequence number of the last event every listener has seen (written under the
    /// cells lock, then `wake` notified).
    last_seen: std::sync::atomic::AtomicU64,
    listeners: Mutex<Listeners>,
    listener_returned: Condvar,
    /// Serialises stop, restart, remove and update.
    operations: Mutex<()>,
    /// For the cells whose spec sets no default timeout.
    default_timeout: Mutex<Duration>,
    shutting_down: std::sync::atomic::AtomicBool,
}

/// Supervises the cells of one hub. Thread-safe; dropping it stops every cell.
pub struct Supervisor {
    shared: Arc<Shared>,
    monitor: Option<JoinHandle<()>>,
    event_thread: Option<JoinHandle<()>>,
}

impl fmt::Debug for Supervisor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Supervisor").field("hub", &self.shared.hub).finish()
    }
}

/// A listener registered with [`Supervisor::on_event`]. Dropping it unregisters the
/// listener: once the drop returns the listener is not called again (when dropped from
/// inside the listener itself, the call under way finishes first). [`detach`] keeps the
/// listener for the supervisor's life.
///
/// [`detach`]: EventSubscription::detach
#[must_use = "dropping the subscription unregisters the listener at once; call .detach() to keep it"]
pub struct EventSubscription {
    shared: std::sync::Weak<Shared>,
    /// `None` once detached or cancelled: dropping it then unregisters nothing. (Not
    /// `mem::forget`: that would leak the weak count, and with it the supervisor's memory.)
    id: Option<u64>,
}

impl fmt::Debug for EventSubscription {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EventSubscription").field("id", &self.id).finish()
    }
}

impl EventSubscription {
    /// Keeps the listener for as long as the supervisor lives.
    pub fn detach(mut self) {
        self.id = None;
    }

    /// Unregisters the listener without waiting for a call of it under way, for bindings
    /// whose listeners run under a lock the dropping thread may hold (Python's GIL): the
    /// listener may still be running when this returns, but is not called again after.
    pub fn cancel_without_waiting(mut self) {
        self.unregister(false);
    }

    fn unregister(&mut self, wait: bool) {
        let Some(id) = self.id.take() else { return };
        let Some(shared) = self.shared.upgrade() else { return };
        let removed = {
            let mut listeners = shared.listeners.lock();
            let index = listeners.registered.iter().position(|(registered, _)| *registered == id);
            let removed = index.map(|i| listeners.registered.remove(i));
            if wait && listeners.thread != Some(std::thread::current().id()) {
                while listeners.calling == Some(id) {
                    shared.listener_returned.wait(&mut listeners);
                }
            }
            removed
        };
        // Dropped outside the lock: a binding's listener may free its user data here.
        drop(removed);
    }
}

impl Drop for EventSubscription {
    fn drop(&mut self) {
        self.unregister(true);
    }
}

fn no_such_cell(name: &str) -> Error {
    Error::new(Status::NotFound, format!("no cell named {name:?}"))
}

impl Supervisor {
    /// Supervises cells on `hub` (register host methods on it before adding cells).
    pub fn new(hub: Hub) -> Result<Supervisor> {
        let shared = Arc::new(Shared {
            hub,
            cells: Mutex::new(HashMap::new()),
            next_key: std::sync::atomic::AtomicU64::new(0),
            notices: Mutex::new(VecDeque::new()),
            wake: Condvar::new(),
            events: Mutex::new(EventQueue::default()),
            events_ready: Condvar::new(),
            last_seen: std::sync::atomic::AtomicU64::new(0),
            listeners: Mutex::new(Listeners::default()),
            listener_returned: Condvar::new(),
            operations: Mutex::new(()),
            default_timeout: Mutex::new(crate::DEFAULT_CALL_TIMEOUT),
            shutting_down: std::sync::atomic::AtomicBool::new(false),
        });
        let events_shared = shared.clone();
        let event_thread = std::thread::Builder::new()
            .name("cellshm-sup-events".into())
            .spawn(move || deliver_events(events_shared))
            .map_err(|e| Error::system("spawning the supervisor's event thread", e))?;
        let monitor_shared = shared.clone();
        let monitor = match std::thread::Builder::new()
            .name("cellshm-supervisor".into())
            .spawn(move || monitor(monitor_shared))
        {
            Ok(monitor) => monitor,
            Err(e) => {
                shared.close_events();
                let _ = event_thread.join();
                return Err(Error::system("spawning the supervisor thread", e));
            }
        };
        Ok(Supervisor { shared, monitor: Some(monitor), event_thread: Some(event_thread) })
    }

    /// The hub.
    pub fn hub(&self) -> &Hub {
        &self.shared.hub
    }

    /// How long calls to the cells launched from now on may take when their options set
    /// no time limit, unless a cell's spec says otherwise ([`CellSpec::default_timeout`]).
    /// [`crate::DEFAULT_CALL_TIMEOUT`] (30 s) until set; [`crate::FOREVER`]: no limit.
    pub fn set_default_timeout(&self, timeout: Duration) {
        *self.shared.default_timeout.lock() = timeout;
    }

    /// Calls `listener` on every status change of every cell, in order, from the
    /// supervisor's event thread (never from the thread that caused the change). A
    /// panicking listener is logged and called again for the next event. Keep the
    /// returned subscription: dropping it unregisters the listener.
    pub fn on_event(&self, listener: impl Fn(&SupervisorEvent) + Send + Sync + 'static) -> EventSubscription {
        let mut listeners = self.shared.listeners.lock();
        listeners.next_id += 1;
        let id = listeners.next_id;
        listeners.registered.push((id, Arc::new(listener)));
        EventSubscription { shared: Arc::downgrade(&self.shared), id: Some(id) }
    }

    /// Adds a cell and starts it. ALREADY_EXISTS if the name is supervised already
    /// (see [`Supervisor::start`], [`Supervisor::restart`] and [`Supervisor::update`]).
    pub fn add(&self, spec: CellSpec) -> Result<()> {
        validate(&spec)?;
        let mut cells = self.shared.cells.lock();
        if cells.contains_key(&spec.name) {
            return Err(Error::new(
                Status::AlreadyExists,
                format!("a cell named {:?} is already supervised", spec.name),
            ));
        }
        let key = self.shared.next_key.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        cells.insert(
            spec.name.clone(),
            ManagedCell {
                key,
                spec,
                status: CellStatus::Starting,
                reported: CellStatus::Starting,
                instance: None,
                last_instance: None,
                generation: 0,
                restarts: 0,
                next_start: Some(Instant::now()),
                launches: 0,
            },
        );
        self.shared.wake.notify_all();
        Ok(())
    }

    /// The cell's status.
    pub fn status(&self, name: &str) -> Option<CellStatus> {
        self.shared.cells.lock().get(name).map(|c| c.status.clone())
    }

    /// The names of the supervised cells, sorted.
    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.shared.cells.lock().keys().cloned().collect();
        names.sort();
        names
    }

    /// The cell's recipe.
    pub fn spec(&self, name: &str) -> Option<CellSpec> {
        self.shared.cells.lock().get(name).map(|c| c.spec.clone())
    }

    /// The current instance's peer (while one runs).
    pub fn peer(&self, name: &str) -> Option<Peer> {
        self.shared.cells.lock().get(name).and_then(|c| c.instance.as_ref().map(|i| i.peer.clone()))
    }

    /// Waits until `name` reaches a status for which `until` is true, and the listeners
    /// have seen it; the status. DEADLINE_EXCEEDED after `timeout`, NOT_FOUND for a name
    /// not supervised (or removed meanwhile).
    pub fn wait_for(&self, name: &str, timeout: Duration, until: impl Fn(&CellStatus) -> bool) -> Result<CellStatus> {
        let deadline = Instant::now() + timeout;
        let mut cells = self.shared.cells.lock();
        loop {
            let status = cells.get(name).map(|c| c.reported.clone()).ok_or_else(|| no_such_cell(name))?;
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
        crate::Supervised::new(self, name).call(method, payload, options)
    }

    /// The peer of the current instance of `name` once it is ready: NOT_FOUND for a
    /// name never added, UNAVAILABLE while it is (re)starting or stopped.
    pub fn ready_peer(&self, name: &str) -> Result<Peer> {
        let cells = self.shared.cells.lock();
        let cell = cells.get(name).ok_or_else(|| no_such_cell(name))?;
        match (&cell.status, &cell.instance) {
            (CellStatus::Ready, Some(instance)) => Ok(instance.peer.clone()),
            (status, _) => Err(Error::new(Status::Unavailable, format!("cell {name:?} is not ready ({status:?})"))),
        }
    }

    /// Stops `name` gracefully: GOODBYE, then SIGTERM, then SIGKILL, each after `grace`.
    /// It is not relaunched until [`Supervisor::start`] or [`Supervisor::restart`].
    /// Returns the exit code (128 + the signal if one ended it; 0 when nothing ran).
    pub fn stop(&self, name: &str, grace: Duration) -> Result<i32> {
        let _operation = self.shared.operations.lock();
        let code = self.halt(name, grace)?.unwrap_or(0);
        self.shared.wait_events_seen();
        Ok(code)
    }

    /// Starts a cell that is not running (exited, stopped or failed) again, with a fresh
    /// restart count. A cell running, starting or due to relaunch is left alone.
    pub fn start(&self, name: &str) -> Result<()> {
        let _operation = self.shared.operations.lock();
        let mut cells = self.shared.cells.lock();
        let cell = cells.get_mut(name).ok_or_else(|| no_such_cell(name))?;
        if !cell.is_active() {
            schedule_now(cell);
            self.shared.wake.notify_all();
        }
        Ok(())
    }

    /// Stops the running instance of `name` (as [`Supervisor::stop`] does, `grace` per
    /// step) and starts a new one, with a fresh restart count; a cell not running is
    /// started. Returns once the old instance has ended: wait for "ready" to call the new.
    pub fn restart(&self, name: &str, grace: Duration) -> Result<()> {
        let _operation = self.shared.operations.lock();
        self.halt(name, grace)?;
        self.shared.wait_events_seen();
        self.schedule(name)
    }

    /// Replaces the recipe of a supervised cell (`spec.name` says which). A running
    /// instance is restarted with the new recipe (stopped with `grace` per step); a cell
    /// that is not running keeps its status and uses the recipe when next started.
    pub fn update(&self, spec: CellSpec, grace: Duration) -> Result<()> {
        validate(&spec)?;
        let _operation = self.shared.operations.lock();
        let name = spec.name.clone();
        let was_active = {
            let mut cells = self.shared.cells.lock();
            let cell = cells.get_mut(&name).ok_or_else(|| no_such_cell(&name))?;
            cell.spec = spec;
            cell.is_active()
        };
        if was_active {
            self.halt(&name, grace)?;
            self.shared.wait_events_seen();
            self.schedule(&name)?;
        }
        Ok(())
    }

    /// Stops `name` (as [`Supervisor::stop`] does) and forgets it; its last event is
    /// [`CellStatus::Removed`]. The name can be added again afterwards.
    pub fn remove(&self, name: &str, grace: Duration) -> Result<()> {
        let _operation = self.shared.operations.lock();
        self.halt(name, grace)?;
        let mut cells = self.shared.cells.lock();
        let cell = cells.remove(name).ok_or_else(|| no_such_cell(name))?;
        self.shared.queue_event(name, &cell, CellStatus::Removed);
        self.shared.wake.notify_all();
        drop(cells);
        self.shared.wait_events_seen();
        Ok(())
    }

    /// Sets the log filter of `name`: in its spec, so every later instance starts with
    /// it, and on the running instance, if one is ready. INVALID_ARGUMENT for a filter
    /// that does not parse.
    pub fn set_log_filter(&self, name: &str, filter: &str) -> Result<()> {
        crate::log::LogFilter::parse(filter)?;
        let peer = {
            let mut cells = self.shared.cells.lock();
            let cell = cells.get_mut(name).ok_or_else(|| no_such_cell(name))?;
            cell.spec.log_filter = Some(filter.to_string());
            (cell.status == CellStatus::Ready).then(|| cell.instance.as_ref().map(|i| i.peer.clone())).flatten()
        };
        match peer {
            Some(peer) => peer.set_log_filter(filter, Duration::from_secs(5)),
            None => Ok(()),
        }
    }

    /// Stops every cell (see [`Supervisor::stop`]).
    pub fn stop_all(&self, grace: Duration) {
        for name in self.names() {
            let _ = self.stop(&name, grace);
        }
    }

    /// Ends the current instance of `name` and cancels any launch due, reporting
    /// Stopping and then Exited(Stopped(code)); the exit code, or None if the cell was
    /// not active (nothing is reported then). Runs under the operations lock.
    fn halt(&self, name: &str, grace: Duration) -> Result<Option<i32>> {
        let instance = {
            let mut cells = self.shared.cells.lock();
            let cell = cells.get_mut(name).ok_or_else(|| no_such_cell(name))?;
            if !cell.is_active() {
                return Ok(None);
            }
            // Whatever the monitor is doing with the instance now (a launch under way, a
            // death being handled) is about an old generation from here on.
            cell.generation += 1;
            cell.next_start = None;
            self.shared.set_status(name, cell, CellStatus::Stopping);
            cell.instance.take()
        };
        let code = match instance {
            Some(instance) => instance.process.shutdown(&instance.peer, grace),
            None => 0,
        };
        let mut cells = self.shared.cells.lock();
        if let Some(cell) = cells.get_mut(name) {
            self.shared.set_status(name, cell, CellStatus::Exited(ExitReason::Stopped(code)));
        }
        Ok(Some(code))
    }

    fn schedule(&self, name: &str) -> Result<()> {
        let mut cells = self.shared.cells.lock();
        let cell = cells.get_mut(name).ok_or_else(|| no_such_cell(name))?;
        schedule_now(cell);
        self.shared.wake.notify_all();
        Ok(())
    }
}

fn schedule_now(cell: &mut ManagedCell) {
    cell.restarts = 0;
    cell.next_start = Some(Instant::now());
}

fn validate(spec: &CellSpec) -> Result<()> {
    crate::host::validate_cell_name(&spec.name)?;
    spec.peer.validate().map_err(|e| e.context(format!("cell {:?}", spec.name)))?;
    spec.restart.validate().map_err(|e| e.context(format!("cell {:?}", spec.name)))?;
    if spec.ready_timeout.is_zero() {
        return Err(Error::new(Status::InvalidArgument, format!("cell {:?}: a ready timeout of 0", spec.name)));
    }
    if spec.program.as_os_str().is_empty() {
        return Err(Error::new(Status::InvalidArgument, format!("cell {:?} has no program", spec.name)));
    }
    if let Some(filter) = &spec.log_filter {
        crate::log::LogFilter::parse(filter)?;
    }
    if spec.heartbeat.is_some_and(|h| h.interval.is_zero()) {
        return Err(Error::new(Status::InvalidArgument, format!("cell {:?}: a heartbeat interval of 0", spec.name)));
    }
    Ok(())
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
        // The events queued so far are still delivered, then the thread ends.
        self.shared.close_events();
        if let Some(events) = self.event_thread.take() {
            // A listener that drops the supervisor would wait for itself: let it go.
            if events.thread().id() != std::thread::current().id() {
                let _ = events.join();
            }
        }
    }
}

impl Shared {
    /// Sets the status and queues its event; called under the cells lock, so events are
    /// queued in the order the statuses change.
    fn set_status(&self, name: &str, cell: &mut ManagedCell, status: CellStatus) {
        cell.status = status.clone();
        self.queue_event(name, cell, status);
    }

    fn queue_event(&self, name: &str, cell: &ManagedCell, status: CellStatus) {
        let ids = cell.instance.as_ref().map(|i| (i.peer.id(), i.peer.pid())).or(cell.last_instance);
        let event = SupervisorEvent {
            name: name.to_string(),
            status,
            peer_id: ids.map(|(id, _)| id),
            pid: ids.and_then(|(_, pid)| pid),
            restarts: cell.restarts,
        };
        let mut events = self.events.lock();
        events.last_queued += 1;
        let seq = events.last_queued;
        events.queue.push_back((cell.key, seq, event));
        self.events_ready.notify_one();
    }

    /// Waits until the listeners have seen every event queued so far, so that an
    /// operation returns after its events (a `wait_for` that follows cannot see a status
    /// from before it). Not from the event thread (a listener calling an operation would
    /// wait for itself), and at most [`EVENTS_SEEN_WAIT`].
    fn wait_events_seen(&self) {
        if self.listeners.lock().thread == Some(std::thread::current().id()) {
            return;
        }
        let target = self.events.lock().last_queued;
        let deadline = Instant::now() + EVENTS_SEEN_WAIT;
        let mut cells = self.cells.lock();
        while self.last_seen.load(std::sync::atomic::Ordering::SeqCst) < target {
            if self.wake.wait_until(&mut cells, deadline).timed_out() {
                tracing::warn!("supervisor listeners took over {} s for one event", EVENTS_SEEN_WAIT.as_secs());
                return;
            }
        }
    }

    fn close_events(&self) {
        self.events.lock().closed = true;
        self.events_ready.notify_all();
    }

    fn notify(&self, notice: Notice) {
        self.notices.lock().push_back(notice);
        // Take the cells lock so the monitor cannot miss the wakeup between checking
        // the notice queue and waiting.
        let _cells = self.cells.lock();
        self.wake.notify_all();
    }
}

/// The event thread: calls every listener with every event, in order, then marks the
/// event seen (what `wait_for` waits on).
fn deliver_events(shared: Arc<Shared>) {
    shared.listeners.lock().thread = Some(std::thread::current().id());
    loop {
        let (key, seq, event) = {
            let mut events = shared.events.lock();
            loop {
                if let Some(next) = events.queue.pop_front() {
                    break next;
                }
                if events.closed {
                    return;
                }
                shared.events_ready.wait(&mut events);
            }
        };
        let ids: Vec<u64> = shared.listeners.lock().registered.iter().map(|(id, _)| *id).collect();
        for id in ids {
            let listener = {
                let mut listeners = shared.listeners.lock();
                // Unregistered since the list was taken: not called any more.
                let Some(listener) = listeners.registered.iter().find(|(i, _)| *i == id).map(|(_, l)| l.clone()) else {
                    continue;
                };
                listeners.calling = Some(id);
                listener
            };
            if let Err(panic) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| listener(&event))) {
                tracing::error!(
                    cell = %event.name,
                    status = event.status.name(),
                    "a supervisor listener panicked (it stays registered): {}",
                    crate::error::panic_message(&*panic)
                );
            }
            drop(listener);
            shared.listeners.lock().calling = None;
            shared.listener_returned.notify_all();
        }
        let mut cells = shared.cells.lock();
        if let Some(cell) = cells.get_mut(&event.name).filter(|c| c.key == key) {
            cell.reported = event.status;
        }
        shared.last_seen.store(seq, std::sync::atomic::Ordering::SeqCst);
        shared.wake.notify_all();
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
        let beats: Vec<String> = {
            let cells = shared.cells.lock();
            cells.iter().filter(|(_, c)| next_beat(c).is_some_and(|t| t <= now)).map(|(n, _)| n.clone()).collect()
        };
        for name in beats {
            beat(&shared, &name);
        }
        let mut cells = shared.cells.lock();
        if !shared.notices.lock().is_empty() || shared.shutting_down.load(std::sync::atomic::Ordering::SeqCst) {
            continue;
        }
        // No timer unless a restart or a heartbeat is due: notices, new cells and
        // shutdown all wake us under the cells lock.
        match cells.values().flat_map(|c| [c.next_start, next_beat(c)]).flatten().min() {
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
        if cell.next_start.is_none_or(|t| t > Instant::now()) {
            return; // an operation cancelled or moved it meanwhile
        }
        cell.next_start = None;
        cell.generation += 1;
        cell.last_instance = None;
        cell.status = CellStatus::Starting;
        cell.launches += 1;
        if cell.launches > 1 {
            shared.hub.count_restart(name);
        }
        (cell.spec.clone(), cell.generation)
    };
    let mut command = Command::new(&spec.program);
    command.args(&spec.args);
    for (k, v) in &spec.env {
        command.env(k, v);
    }
    if let Some(filter) = &spec.log_filter {
        command.env("CELLSHM_LOG_FILTER", filter);
    }
    let mut peer_options = spec.peer.clone();
    peer_options.default_timeout = Some(peer_options.default_timeout.unwrap_or(*shared.default_timeout.lock()));
    let started = shared.hub.add_peer(&spec.name, peer_options).and_then(|ticket| ticket.spawn(&mut command));
    let (peer, child) = match started {
        Ok(pair) => pair,
        Err(e) => {
            crashed(shared, name, generation, ExitReason::SpawnFailed(e.to_string()));
            return;
        }
    };
    let process = Arc::new(CellProcess::new(child));
    {
        let mut cells = shared.cells.lock();
        match cells.get_mut(name).filter(|c| c.generation == generation) {
            Some(cell) => {
                cell.instance = Some(Instance {
                    peer: peer.clone(),
                    process: process.clone(),
                    up_since: Instant::now(),
                    heartbeat: None,
                });
                cell.last_instance = Some((peer.id(), peer.pid()));
                shared.set_status(name, cell, CellStatus::Starting);
            }
            None => {
                // Stopped, restarted or removed while it was being spawned: this instance
                // was never reported and must not live on.
                drop(cells);
                let _ = process.kill();
                let _ = process.wait_exit(Duration::from_secs(5));
                return;
            }
        }
    }
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
    let log_filter = spec.log_filter.clone();
    let _ = std::thread::Builder::new().name("cellshm-ready".into()).spawn(move || {
        let result = peer.wait_ready(timeout);
        if let (Ok(()), Some(filter)) = (&result, log_filter) {
            // Before "ready" is reported: for cells that do not read CELLSHM_LOG_FILTER.
            if let Err(e) = peer.set_log_filter(&filter, Duration::from_secs(2)) {
                tracing::debug!(cell = %peer.name(), "could not set the log filter of the new instance: {e}");
            }
        }
        if let Some(shared) = weak.upgrade() {
            shared.notify(Notice::Ready { name: cell_name, generation, result });
        }
    });
}

/// When the cell's next heartbeat is due, if it is ready and has heartbeats.
fn next_beat(cell: &ManagedCell) -> Option<Instant> {
    if cell.status != CellStatus::Ready {
        return None;
    }
    cell.instance.as_ref()?.heartbeat.as_ref().map(|b| b.next)
}

/// A heartbeat is due: judges the one in flight (answered in time, or a miss), relaunches
/// the cell as unresponsive after too many misses, else sends the next one.
fn beat(shared: &Arc<Shared>, name: &str) {
    let (peer, in_flight, generation, every) = {
        let mut cells = shared.cells.lock();
        let Some(cell) = cells.get_mut(name).filter(|c| c.status == CellStatus::Ready) else { return };
        let generation = cell.generation;
        let Some(instance) = cell.instance.as_mut() else { return };
        let Some(beating) = instance.heartbeat.as_mut() else { return };
        beating.next = Instant::now() + beating.every.interval;
        (instance.peer.clone(), beating.in_flight.take(), generation, beating.every)
    };
    // Any answer, an error status included (UNIMPLEMENTED from a cell that does not know
    // the method), came from a thread that serves: the cell is responsive. Dropping one
    // still in flight cancels it.
    let answered = match in_flight.as_ref().map(PendingCall::try_take) {
        None => true,
        Some(Some(Ok(_))) => true,
        Some(Some(Err(e))) => !matches!(e.status(), Status::DeadlineExceeded | Status::Cancelled),
        Some(None) => false,
    };
    drop(in_flight);
    let misses = {
        let mut cells = shared.cells.lock();
        let Some(cell) = cells.get_mut(name).filter(|c| c.generation == generation) else { return };
        let Some(beating) = cell.instance.as_mut().and_then(|i| i.heartbeat.as_mut()) else { return };
        beating.misses = if answered { 0 } else { beating.misses + 1 };
        beating.misses
    };
    if misses > every.allowed_misses {
        tracing::warn!(
            cell = name,
            "{misses} heartbeats in a row unanswered within {} ms each: killing it as unresponsive",
            every.interval.as_millis()
        );
        if let Some((process, _, _)) = current_process(shared, name, generation) {
            let _ = process.kill();
        }
        crashed(shared, name, generation, ExitReason::Unresponsive);
        return;
    }
    // Outside the lock: a full ring makes starting a call wait (up to its timeout).
    let sent =
        peer.call_start(builtin::LIFECYCLE_HEARTBEAT, &[], &CallOptions::timeout(every.interval), Box::new(|| {}));
    let mut cells = shared.cells.lock();
    let Some(cell) = cells.get_mut(name).filter(|c| c.generation == generation) else { return };
    let Some(beating) = cell.instance.as_mut().and_then(|i| i.heartbeat.as_mut()) else { return };
    match sent {
        Ok(pending) => beating.in_flight = Some(pending),
        // Its death is reported by the death notice.
        Err(e) if matches!(e.status(), Status::PeerDead | Status::SessionClosed) => {}
        // Could not even be sent (a ring the cell does not drain): counted when judged.
        Err(_) => beating.misses += 1,
    }
}

/// The instance of `name` if it is of `generation`.
fn current_process(shared: &Shared, name: &str, generation: u64) -> Option<(Arc<CellProcess>, Instant, bool)> {
    let cells = shared.cells.lock();
    let cell = cells.get(name).filter(|c| c.generation == generation)?;
    let instance = cell.instance.as_ref()?;
    Some((instance.process.clone(), instance.up_since, instance.peer.said_goodbye()))
}

fn handle(shared: &Arc<Shared>, notice: Notice) {
    match notice {
        Notice::Ready { name, generation, result } => {
            let timed_out = {
                let mut cells = shared.cells.lock();
                let Some(cell) = cells.get_mut(&name) else { return };
                if cell.generation != generation || cell.status != CellStatus::Starting {
                    return;
                }
                match &result {
                    Ok(()) => {
                        if let (Some(every), Some(instance)) = (cell.spec.heartbeat, cell.instance.as_mut()) {
                            // The first heartbeat goes out as the cell becomes ready, so
                            // one that never answers is killed interval × (misses + 1)
                            // after it was ready.
                            instance.heartbeat =
                                Some(Beating { every, next: Instant::now(), in_flight: None, misses: 0 });
                        }
                        shared.set_status(&name, cell, CellStatus::Ready);
                        return;
                    }
                    Err(e) if e.status() == Status::DeadlineExceeded => {
                        cell.instance.as_ref().map(|i| i.process.clone())
                    }
                    // It died before it was ready: the death notice decides.
                    Err(_) => return,
                }
            };
            if let Some(process) = timed_out {
                let _ = process.kill();
                let _ = process.wait_exit(Duration::from_secs(5));
                crashed(shared, &name, generation, ExitReason::ReadyTimeout);
            }
        }
        Notice::Died { name, generation, error } => {
            let Some((process, up_since, leaving)) = current_process(shared, &name, generation) else { return };
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
                let mut cells = shared.cells.lock();
                if let Some(cell) = cells.get_mut(&name).filter(|c| c.generation == generation) {
                    cell.instance = None;
                    shared.set_status(&name, cell, CellStatus::Exited(reason));
                }
                return;
            }
            {
                let mut cells = shared.cells.lock();
                if let Some(cell) = cells.get_mut(&name).filter(|c| c.generation == generation) {
                    if up_since.elapsed() >= cell.spec.restart.reset_after {
                        cell.restarts = 0;
                    }
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
        let Some(cell) = cells.get_mut(name).filter(|c| c.generation == generation) else { return };
        cell.instance.take()
    };
    // Reaped outside the lock: waiting for a process must not hold up every other call.
    if let Some(instance) = instance {
        let _ = instance.process.wait_exit(Duration::from_secs(5));
    }
    let mut cells = shared.cells.lock();
    let Some(cell) = cells.get_mut(name).filter(|c| c.generation == generation) else { return };
    let policy = &cell.spec.restart;
    let status = if matches!(reason, ExitReason::SpawnFailed(_)) || cell.restarts >= policy.max_restarts {
        CellStatus::Failed(reason)
    } else {
        let shift = cell.restarts.min(20);
        let backoff = policy.initial_backoff.saturating_mul(1 << shift).min(policy.max_backoff);
        cell.restarts += 1;
        cell.next_start = Some(Instant::now() + backoff);
        CellStatus::Crashed(reason)
    };
    shared.set_status(name, cell, status);
}
