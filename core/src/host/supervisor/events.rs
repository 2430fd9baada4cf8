//! Statuses, events, listeners and the one thread that delivers events in order.

use super::*;

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
    /// A watched peer ([`Supervisor::watch`], a remote server) that does not serve now:
    /// why its last health check failed. It is checked again; the supervisor does not
    /// launch it.
    Unavailable(String),
}

impl CellStatus {
    /// The status's name, as every language spells it: "starting", "ready", "stopping",
    /// "exited", "crashed", "failed", "removed", "unavailable".
    pub fn name(&self) -> &'static str {
        match self {
            CellStatus::Starting => "starting",
            CellStatus::Ready => "ready",
            CellStatus::Stopping => "stopping",
            CellStatus::Exited(_) => "exited",
            CellStatus::Crashed(_) => "crashed",
            CellStatus::Failed(_) => "failed",
            CellStatus::Removed => "removed",
            CellStatus::Unavailable(_) => "unavailable",
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

pub(super) type Listener = Arc<dyn Fn(&SupervisorEvent) + Send + Sync>;

#[derive(Default)]
pub(super) struct EventQueue {
    /// (cell key, sequence number, event).
    queue: VecDeque<(u64, u64, SupervisorEvent)>,
    /// The sequence number of the last event queued.
    last_queued: u64,
    closed: bool,
}

/// How long an operation waits for the listeners to see its events before it returns
/// anyway (a listener that blocks must not hang `stop`).
pub(super) const EVENTS_SEEN_WAIT: Duration = Duration::from_secs(5);

#[derive(Default)]
pub(super) struct Listeners {
    pub(super) next_id: u64,
    pub(super) registered: Vec<(u64, Listener)>,
    /// The listener the event thread is calling now.
    pub(super) calling: Option<u64>,
    /// The event thread (a listener dropping its own subscription must not wait for itself).
    pub(super) thread: Option<std::thread::ThreadId>,
}

/// A listener registered with [`Supervisor::on_event`]. Dropping it unregisters the
/// listener: once the drop returns the listener is not called again (when dropped from
/// inside the listener itself, the call under way finishes first). [`detach`] keeps the
/// listener for the supervisor's life.
///
/// [`detach`]: EventSubscription::detach
#[must_use = "dropping the subscription unregisters the listener at once; call .detach() to keep it"]
pub struct EventSubscription {
    pub(super) shared: std::sync::Weak<Shared>,
    /// `None` once detached or cancelled: dropping it then unregisters nothing. (Not
    /// `mem::forget`: that would leak the weak count, and with it the supervisor's memory.)
    pub(super) id: Option<u64>,
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

impl Shared {
    /// Sets the status and queues its event; called under the cells lock, so events are
    /// queued in the order the statuses change.
    pub(super) fn set_status(&self, name: &str, cell: &mut ManagedCell, status: CellStatus) {
        cell.status = status.clone();
        self.queue_event(name, cell, status);
    }

    pub(super) fn queue_event(&self, name: &str, cell: &ManagedCell, status: CellStatus) {
        let ids = cell.instance.as_ref().map(|i| (i.peer.id(), i.peer.pid())).or(cell.last_instance);
        let event = SupervisorEvent {
            name: name.to_string(),
            status,
            peer_id: ids.map(|(id, _)| id),
            pid: ids.and_then(|(_, pid)| pid),
            restarts: cell.restart.restarts,
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
    pub(super) fn wait_events_seen(&self) {
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

    pub(super) fn close_events(&self) {
        self.events.lock().closed = true;
        self.events_ready.notify_all();
    }
}

/// The event thread: calls every listener with every event, in order, then marks the
/// event seen (what `wait_for` waits on).
pub(super) fn deliver_events(shared: Arc<Shared>) {
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

/// The supervisor's events as a `futures_core::Stream` ([`Supervisor::events`]), for async
/// code: each status change of each cell, in order, woken by the supervisor's event
/// thread (no thread or timer of its own). At most [`SupervisorEvents::CAPACITY`] wait
/// unread; beyond that the oldest are dropped and counted ([`SupervisorEvents::missed`]),
/// so a reader that stops reading costs bounded memory. Ends once the supervisor is
/// dropped; dropping it unregisters it.
pub struct SupervisorEvents {
    inbox: Arc<crate::runtime::sync::Mutex<Inbox>>,
    _subscription: EventSubscription,
}

#[derive(Default)]
struct Inbox {
    events: VecDeque<SupervisorEvent>,
    missed: u64,
    waker: Option<std::task::Waker>,
    /// The supervisor is gone: nothing more will come.
    closed: bool,
}

impl Inbox {
    fn wake(&mut self) {
        if let Some(waker) = self.waker.take() {
            waker.wake();
        }
    }
}

/// Held by the listener: its drop (when the supervisor drops its listeners) ends the
/// stream.
struct ClosesInbox(Arc<crate::runtime::sync::Mutex<Inbox>>);

impl Drop for ClosesInbox {
    fn drop(&mut self) {
        let mut inbox = self.0.lock();
        inbox.closed = true;
        inbox.wake();
    }
}

impl fmt::Debug for SupervisorEvents {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let inbox = self.inbox.lock();
        f.debug_struct("SupervisorEvents").field("unread", &inbox.events.len()).field("missed", &inbox.missed).finish()
    }
}

impl SupervisorEvents {
    /// Events kept unread at most.
    pub const CAPACITY: usize = 1024;

    pub(super) fn subscribe(supervisor: &Supervisor) -> SupervisorEvents {
        let inbox = Arc::new(crate::runtime::sync::Mutex::new(Inbox::default()));
        let closes = ClosesInbox(inbox.clone());
        let subscription = supervisor.on_event(move |event| {
            let mut inbox = closes.0.lock();
            if inbox.events.len() >= Self::CAPACITY {
                inbox.events.pop_front();
                inbox.missed += 1;
            }
            inbox.events.push_back(event.clone());
            inbox.wake();
        });
        SupervisorEvents { inbox, _subscription: subscription }
    }

    /// Events dropped so far because [`SupervisorEvents::CAPACITY`] were unread.
    pub fn missed(&self) -> u64 {
        self.inbox.lock().missed
    }
}

impl futures_core::Stream for SupervisorEvents {
    type Item = SupervisorEvent;

    fn poll_next(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        let mut inbox = self.inbox.lock();
        if let Some(event) = inbox.events.pop_front() {
            return std::task::Poll::Ready(Some(event));
        }
        if inbox.closed {
            return std::task::Poll::Ready(None);
        }
        inbox.waker = Some(cx.waker().clone());
        std::task::Poll::Pending
    }
}
