//! Keeping cells alive: a recipe per logical cell name, relaunch on crash with capped
//! exponential backoff, stable names over changing peer ids, events on every
//! transition, graceful stop, restart, removal and a new recipe at run time.
//!
//! Which file holds what:
//! - `spec.rs`: the recipe ([`CellSpec`], [`RestartPolicy`], [`Heartbeat`]) and its checks.
//! - `policy.rs`: the decisions as plain functions of state and time (relaunch after a
//!   backoff, give up, reset the count after a long run; a heartbeat answered, missed, or
//!   the cell unresponsive), each a table test.
//! - `events.rs`: statuses, events and their one delivery thread, listeners.
//! - `watch.rs`: peers it watches but does not launch (remote servers), whose health a
//!   watcher reports.
//! - `monitor.rs`: the monitor thread, which carries the decisions out: launches, reads
//!   deaths and readiness, sends heartbeats, schedules relaunches.
//! - this file: the [`Supervisor`] and the operations a user asks for.
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
//!
//! Lock order: `operations`, then `cells`, then `events` or `notices` or `listeners`
//! (each of the last three is taken alone, never two at once).

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::runtime::sync::{Condvar, Mutex};

use super::{CellProcess, Hub, Peer, PeerOptions};
use crate::error::{Error, Result};
use crate::link_end::LinkEnd;
use crate::runtime::session::{CallOptions, PendingCall, Response};
use crate::wire::{builtin, Status};

mod events;
mod monitor;
pub(crate) mod policy;
mod spec;
mod watch;

pub use events::{CellStatus, EventSubscription, ExitReason, SupervisorEvent, SupervisorEvents};
use events::{EventQueue, Listeners};
use spec::validate;
pub use spec::{CellSpec, Heartbeat, RestartPolicy};
pub use watch::WatchedPeer;

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
    /// The last one sent (or that could not be sent), judged when the next is due.
    last: LastBeat,
    state: policy::HeartbeatState,
}

/// The last heartbeat of an instance.
enum LastBeat {
    None,
    SendFailed,
    InFlight(PendingCall),
}

struct ManagedCell {
    /// Tells this cell from an earlier one of the same name (removed, then added again).
    key: u64,
    /// None for a watched peer ([`Supervisor::watch`]): nothing to launch or stop, its
    /// status is what its watcher reports.
    spec: Option<CellSpec>,
    status: CellStatus,
    /// The last status whose event the listeners have seen: what `wait_for` waits on.
    reported: CellStatus,
    instance: Option<Instance>,
    /// (peer id, pid) of the latest instance, kept after it ended for the events that
    /// report its end.
    last_instance: Option<(u32, Option<u32>)>,
    /// Bumped by every launch and by every operation that ends an instance.
    generation: u64,
    restart: policy::RestartState,
    next_start: Option<Instant>,
    /// Instances launched so far (every one after the first is a relaunch, counted in the
    /// hub's metrics).
    launches: u64,
}

impl ManagedCell {
    /// A cell just added, Starting: launched at once if it has a spec (else watched).
    fn new(key: u64, spec: Option<CellSpec>) -> ManagedCell {
        ManagedCell {
            key,
            next_start: spec.is_some().then(Instant::now),
            spec,
            status: CellStatus::Starting,
            reported: CellStatus::Starting,
            instance: None,
            last_instance: None,
            generation: 0,
            restart: policy::RestartState::default(),
            launches: 0,
        }
    }

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
///
/// ```
/// use cellshm::{CallOptions, Cell, CellSpec, CellStatus, Hub, HubConfig, Registry, Supervisor};
/// use std::time::Duration;
///
/// // This example is its own cell: started by the host below (which hands it
/// // CELLSHM_DOORBELL_FD), it serves `Echo.echo` until the host says goodbye.
/// if std::env::var_os("CELLSHM_DOORBELL_FD").is_some() {
///     let cell = Cell::from_args()?;
///     cell.method("Echo.echo", |call| {
///         let echo = call.payload().to_vec();
///         call.reply(&echo)
///     })?;
///     return cell.run();
/// }
/// let supervisor = Supervisor::new(Hub::create(HubConfig::default())?)?;
/// let exe = std::env::current_exe().unwrap();
/// supervisor.add(CellSpec::new("echo", exe).heartbeat(Duration::from_millis(200), 2))?;
/// supervisor.wait_for("echo", Duration::from_secs(10), |s| *s == CellStatus::Ready)?;
/// // Calls go to whichever instance is running (a crashed one is relaunched).
/// let reply = supervisor.call("echo", "Echo.echo", b"hi", &CallOptions::timeout(Duration::from_secs(5)))?;
/// assert_eq!(reply.bytes(), b"hi");
/// supervisor.stop_all(Duration::from_secs(5));
/// # Ok::<(), cellshm::Error>(())
/// ```
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

fn no_such_cell(name: &str) -> Error {
    Error::new(Status::NotFound, format!("no cell named {name:?}"))
}

fn watched_only(name: &str) -> Error {
    Error::new(
        Status::FailedPrecondition,
        format!("{name:?} is a peer the supervisor watches, not a cell it launches: it has no instance to start, stop or call"),
    )
}

/// The cell `name`, if the supervisor launches it: NOT_FOUND for a name not supervised,
/// FAILED_PRECONDITION for a watched peer.
fn launched<'a>(cells: &'a mut HashMap<String, ManagedCell>, name: &str) -> Result<&'a mut ManagedCell> {
    match cells.get_mut(name) {
        None => Err(no_such_cell(name)),
        Some(cell) if cell.spec.is_none() => Err(watched_only(name)),
        Some(cell) => Ok(cell),
    }
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
            .spawn(move || events::deliver_events(events_shared))
            .map_err(|e| Error::system("spawning the supervisor's event thread", e))?;
        let monitor_shared = shared.clone();
        let monitor = match std::thread::Builder::new()
            .name("cellshm-supervisor".into())
            .spawn(move || monitor::run(monitor_shared))
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

    /// The events of every cell as a `futures_core::Stream`, for async code (see
    /// [`SupervisorEvents`]); [`Supervisor::on_event`] is the callback form.
    ///
    /// ```no_run
    /// # async fn f(supervisor: &cellshm::Supervisor) {
    /// use futures::StreamExt;
    /// let mut events = supervisor.events();
    /// while let Some(event) = events.next().await {
    ///     println!("{} is {}", event.name, event.status.name());
    /// }
    /// # }
    /// ```
    pub fn events(&self) -> SupervisorEvents {
        SupervisorEvents::subscribe(self)
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
        cells.insert(spec.name.clone(), ManagedCell::new(key, Some(spec)));
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
        self.shared.cells.lock().get(name).and_then(|c| c.spec.clone())
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
        if cell.spec.is_none() {
            return Err(watched_only(name));
        }
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
        launched(&mut self.shared.cells.lock(), name)?;
        let code = self.halt(name, grace)?.unwrap_or(0);
        self.shared.wait_events_seen();
        Ok(code)
    }

    /// Starts a cell that is not running (exited, stopped or failed) again, with a fresh
    /// restart count. A cell running, starting or due to relaunch is left alone.
    pub fn start(&self, name: &str) -> Result<()> {
        let _operation = self.shared.operations.lock();
        let mut cells = self.shared.cells.lock();
        let cell = launched(&mut cells, name)?;
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
        launched(&mut self.shared.cells.lock(), name)?;
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
            let cell = launched(&mut cells, &name)?;
            cell.spec = Some(spec);
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
            let cell = launched(&mut cells, name)?;
            if let Some(spec) = &mut cell.spec {
                spec.log_filter = Some(filter.to_string());
            }
            (cell.status == CellStatus::Ready).then(|| cell.instance.as_ref().map(|i| i.peer.clone())).flatten()
        };
        match peer {
            Some(peer) => peer.set_log_filter(filter, Duration::from_secs(5)),
            None => Ok(()),
        }
    }

    /// Stops every cell (see [`Supervisor::stop`]); watched peers stay watched.
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
            // A watched peer is not the supervisor's to stop.
            if cell.spec.is_none() || !cell.is_active() {
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
        let cell = launched(&mut cells, name)?;
        schedule_now(cell);
        self.shared.wake.notify_all();
        Ok(())
    }
}

fn schedule_now(cell: &mut ManagedCell) {
    cell.restart.reset();
    cell.next_start = Some(Instant::now());
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
