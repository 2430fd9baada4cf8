//! RPC over one link (its two memfds plus its doorbell): calls, correlation,
//! deadlines, dispatch to handlers, and the receive protocol.
//!
//! Which file holds what (one `impl Session` block each, after quinn's `connection/`):
//! - this file: the session's state, its construction and the types every part shares.
//! - `fail.rs`: failing the link once, and what that ends.
//! - `send.rs`: pushing descriptors and payloads, waiting for room, the doorbell.
//! - `call.rs`: calls and their waits, cancellation, `Response`, `PendingCall`.
//! - `future.rs`: `CallFuture`, a started call as a runtime-agnostic `Future`.
//! - `recv.rs`: polling the receive ring, parking, routing what arrives.
//! - `serve.rs`: server threads and handlers.
//! - `serve_async.rs`: async handlers, run as futures on a runtime the user chose.
//! - `dispatch.rs`: the handler table, access rules, a handler's `Call`.
//! - `stream/`: streams: their state, what the session does for them, the two ends.
//! - `options.rs`: `CallOptions`, `WaitStrategy`, the default timeouts.
//! - `pair.rs` (tests): a host and a cell session in one process, for unit tests.
//! - `model.rs` (loom): the call/answer path's rules, model-checked.
//!
//! # How receiving works
//! At most one thread of this process polls the receive ring at a time: whoever holds
//! the `rx` lock (taken with `try_lock` only, so nobody ever blocks on it). While it
//! holds it, our *parked* flag in shared memory is 0 and the peer sends without any
//! syscall. A thread that stops polling for good sets parked = 1, issues a full fence
//! and rechecks the ring before letting go; the peer pushes, fences and then reads the
//! flag, so either we see its descriptor or it sees our flag and rings the doorbell. A
//! thread that will be back in a moment leaves the flag at 0 under a lease instead,
//! which the standby server bounds (`runtime::lease`).
//!
//! Whoever waits receives (`wait_polling`): a caller polls for its own response, a
//! stream's reader for its items and its writer for credit, with no thread hop on the
//! fast path; requests they find go to the servers. Server threads run handlers: a
//! server that pops a request lets go of the ring (under a lease) *before* running the
//! handler, so a slow handler never stalls receiving. Threads that have nothing to do
//! sleep: waiters on the doorbell and their own kick, one server ("standby") on the
//! doorbell, other servers on a condition variable. On two cores or fewer a waiter
//! that does not get the ring sleeps at once instead of spinning beside its holder.

use std::fmt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{fence, AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::runtime::sync::{Mutex, MutexGuard, RwLock};

mod call;
mod dispatch;
mod fail;
mod future;
#[cfg(all(test, loom))]
mod model;
mod options;
#[cfg(all(test, not(loom)))]
pub(crate) mod pair;
mod recv;
mod send;
mod serve;
mod serve_async;
mod stream;
#[cfg(test)]
mod tests;

use crate::runtime::alarms::{Alarms, ROOM_RETRY};
use crate::runtime::cancellation::CancelledCalls;
use crate::runtime::lease::{Lease, LEASE};
use crate::runtime::metrics;
use crate::runtime::pool::{self, TaskPool};
use crate::runtime::spinning::{OpenLink, SpinPermits, Spinner};
use crate::runtime::waiter;
pub use crate::runtime::waiter::Completion;
pub use dispatch::{AccessPolicy, Call, CancelToken, Dispatcher, Handler, PeerIdentity, RetainCheck};
use dispatch::{ReplyBody, Unary};
pub(crate) use options::instant_after;
pub use options::{CallOptions, WaitStrategy, DEFAULT_CALL_TIMEOUT, FOREVER};
pub use serve_async::{AsyncCall, AsyncStreamCall, BoxFuture, Spawn};
use stream::StreamState;
pub use stream::{
    AsyncStream, OpenStreamFuture, Stream, StreamCall, StreamEnd, StreamHandler, StreamItem, MAX_INBOUND_STREAMS,
    STREAM_THREADS, STREAM_WINDOW,
};

use crate::error::{Error, Result};
use crate::proto::frames;
use crate::proto::link::{Answer, Expired, Inbound, Link, Timer};
use crate::proto::status::{self, Verdict};
use crate::runtime::workers::Workers;
use crate::shm::layout::control;
use crate::shm::pool::{InSlot, OutSlot, SlotAllocator, SlotReceiver};
use crate::shm::ring::{self, Consumer, Producer, PushError, RingMemory};
pub use crate::shm::Counters;
use crate::shm::{EntryWords, Frame, Region, SharedBytes, ShmRing, Side};
use crate::sys::clock::monotonic_now_ns;
use crate::sys::doorbell::{handshake, Doorbell, Kick, Signal, Wake};
use crate::wire::{self, flags, ControlKind, Descriptor, Status, INLINE_CAPACITY};

/// A `fill` function for the `*_with` calls that copies `bytes`.
pub(crate) fn copy_of(bytes: &[u8]) -> impl FnOnce(&mut [u8]) -> usize + '_ {
    move |buf| {
        buf.copy_from_slice(bytes);
        bytes.len()
    }
}

/// The link's protocol state, with the runtime's handles on its callers and streams.
type LinkState = Link<Arc<Waiter>, Arc<StreamState>>;

/// The receive ring, held by the one thread polling it.
type RxGuard<'a> = MutexGuard<'a, Consumer<ShmRing<EntryWords>>>;

/// A sender without a deadline gives up on a full ring or pool after this long.
const SEND_TIMEOUT: Duration = Duration::from_secs(5);
/// Sleeping threads wake at least this often to recheck their state.
const RECHECK: Duration = Duration::from_millis(250);
/// While frames are owed to a peer whose ring is full, the standby retries this often.
const OWED_RETRY: Duration = Duration::from_millis(50);
/// A thread polling the ring checks the doorbell for the peer's death this often.
const LIVENESS_CHECK: Duration = Duration::from_millis(1);

/// True on a machine with two cores or fewer: at most one thread per process spins there
/// (`runtime::spinning`), and a waiter that does not hold the ring sleeps at once.
pub(crate) fn few_cores() -> bool {
    static FEW: OnceLock<bool> = OnceLock::new();
    *FEW.get_or_init(|| std::thread::available_parallelism().is_ok_and(|n| n.get() <= 2))
}

/// The earlier of two optional timeouts (`None` is forever).
fn earlier(a: Option<Duration>, b: Option<Duration>) -> Option<Duration> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Frames a waiter takes from the ring after it is done, at most, before letting go.
const DRAIN_AFTER_DONE: u32 = 64;
/// Error messages longer than this are cut (with a marker) to fit a slot.
const MAX_ERROR_MESSAGE: usize = 4096;

/// What is said after an error text cut to [`MAX_ERROR_MESSAGE`] bytes.
const CUT_MARKER: &str = "… (message cut)";

/// An error text as it may travel (docs/PROTOCOL.md §9): at most [`MAX_ERROR_MESSAGE`]
/// bytes, a longer one cut at a character boundary and marked. Applied by the sender and
/// again by the receiver, which keeps no more of a peer's text than that.
fn cut_error_text(text: &str) -> std::borrow::Cow<'_, str> {
    if text.len() <= MAX_ERROR_MESSAGE + CUT_MARKER.len()
        && (text.len() <= MAX_ERROR_MESSAGE || text.ends_with(CUT_MARKER))
    {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut end = MAX_ERROR_MESSAGE;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    std::borrow::Cow::Owned(format!("{}{CUT_MARKER}", &text[..end]))
}
/// Requests waiting for a server thread, at most; more are refused (RESOURCE_EXHAUSTED).
const MAX_QUEUED: usize = 1024;

/// Side-specific behaviour plugged into a session (host peer or cell).
pub(crate) trait Hooks: Send + Sync {
    /// A HELLO arrived (host side). Returns the HELLO_ACK to send, or the reason to
    /// drop the peer.
    fn on_hello(&self, _hello: wire::Hello) -> Result<wire::Hello> {
        Err(Error::new(Status::ProtocolError, "unexpected HELLO"))
    }
    /// Built-in methods handled before user methods: `Some(result)` if handled.
    fn builtin(&self, _method_id: u32, _payload: SharedBytes<'_>) -> Option<Result<Vec<u8>>> {
        None
    }
    /// A request was served and counted in the link's metrics; its response is not sent
    /// yet. What a built-in makes visible to other threads belongs here, so whoever sees
    /// it also sees the call counted.
    fn on_served(&self, _method_id: u32, _ok: bool) {}
    /// The peer sent GOODBYE.
    fn on_goodbye(&self) {}
    /// Built-in notifications to handle on the receiving thread, in arrival order.
    fn in_order(&self, _method_id: u32) -> bool {
        false
    }
    /// The peer is gone: the error callers get, with what is known about how it ended
    /// (the host adds a spawned cell's exit status).
    fn explain_death(&self, error: Error) -> Error {
        error
    }
    /// The session failed for good (called once).
    fn on_dead(&self, _error: &Error) {}
    /// Who the other side is (the host knows its cells; a cell says `None`).
    fn caller(&self) -> Option<PeerIdentity> {
        None
    }
}
use call::Body;
pub(crate) use call::Payload;
pub use call::{PendingCall, Response};
pub use future::{CallFuture, NotifyFuture};
use recv::{Backoff, Poller};
pub(crate) use send::{found_no_room, Room};

struct Message {
    desc: Descriptor,
    payload: Payload,
}

thread_local! {
    /// Each calling thread's own wakeup: a completion must reach *that* caller, and a
    /// shared eventfd could be drained by another thread polling it.
    static THREAD_KICK: Option<Arc<Kick>> = Kick::new().ok().map(Arc::new);
}

/// One outstanding call (see `runtime::waiter`), kicked through its thread's eventfd.
type Waiter = waiter::Waiter<Result<Message>, Kick>;

impl waiter::Wakeup for Kick {
    fn notify(&self) {
        Kick::notify(self);
    }
}

/// This thread's own kick (`None` if creating its eventfd failed).
fn thread_kick() -> Option<Arc<Kick>> {
    THREAD_KICK.with(|k| k.clone())
}

fn new_waiter() -> Arc<Waiter> {
    Arc::new(Waiter::new(thread_kick()))
}

/// The result of a call whose waiter was seen done.
fn take_result(waiter: &Waiter) -> Result<Message> {
    waiter.take().unwrap_or_else(|| Err(Error::new(Status::Internal, "call result taken twice")))
}

/// What a thread waits for while it polls the receive ring itself
/// (`Session::wait_polling`): a call's answer, or a change of a stream it reads or writes.
trait Awaited {
    /// True once the wait is over.
    fn is_done(&self) -> bool;
    /// Runs `sleep` (a wait on the doorbell and on `kick`) unless done already; whatever
    /// makes it done from the moment this is called kicks `kick`.
    fn sleep_unless_done(&self, sleep: &mut dyn FnMut());
    /// The waiting thread's own kick.
    fn kick(&self) -> Option<&Kick>;
}

impl Awaited for Waiter {
    fn is_done(&self) -> bool {
        waiter::Waiter::is_done(self)
    }

    fn sleep_unless_done(&self, sleep: &mut dyn FnMut()) {
        waiter::Waiter::sleep_unless_done(self, sleep)
    }

    fn kick(&self) -> Option<&Kick> {
        waiter::Waiter::kick(self)
    }
}

/// How `Session::wait_polling` ended (the ring is let go in every case).
enum Waited {
    Done,
    DeadlinePassed,
    /// The link failed or was closed.
    Failed(Error),
}

/// A request waiting for a server thread.
struct Incoming {
    desc: Descriptor,
    payload: Payload,
    no_reply: bool,
}

/// A payload ready to send.
pub(crate) enum OutBody {
    Inline([u8; INLINE_CAPACITY], usize),
    Slot(OutSlot, usize),
}

/// The metrics a host keeps of one link.
pub(crate) struct LinkMetrics {
    /// Calls this side made.
    pub(crate) outgoing: metrics::MethodTable,
    /// Calls this side served.
    pub(crate) incoming: metrics::MethodTable,
    /// Streams opened, either way.
    pub(crate) streams_opened: AtomicU64,
}

impl LinkMetrics {
    fn new() -> LinkMetrics {
        LinkMetrics {
            outgoing: metrics::MethodTable::new(),
            incoming: metrics::MethodTable::new(),
            streams_opened: AtomicU64::new(0),
        }
    }
}

/// A link's metrics at one moment (see [`crate::Peer::metrics`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LinkSnapshot {
    /// The calls this side made, by method.
    pub outgoing: Vec<metrics::MethodMetrics>,
    /// The calls this side served, by method.
    pub incoming: Vec<metrics::MethodMetrics>,
    /// Streams open now, either way.
    pub open_streams: u64,
    /// Streams opened so far, either way.
    pub streams_opened: u64,
}

/// How a session is set up.
pub(crate) struct SessionConfig {
    pub side: Side,
    pub label: String,
    pub region: Region,
    pub doorbell: Doorbell,
    pub wait: WaitStrategy,
    /// How idle server threads wait (the host's default is `Block`: its callers poll
    /// for their own responses, so its servers need not burn a core).
    pub server_wait: WaitStrategy,
    pub dispatcher: Arc<RwLock<Dispatcher>>,
    pub hooks: Box<dyn Hooks>,
    /// Streams the peer may have open towards us at once.
    pub max_inbound_streams: usize,
    /// Threads that run those streams' handlers, at most (the others wait for one).
    pub stream_threads: usize,
    /// For calls whose options set no time limit ([`FOREVER`]: none).
    pub default_timeout: Duration,
    /// Keep per-method metrics (the host does; cells need none).
    pub metrics: bool,
    /// The receive window this side grants each stream.
    pub stream_window: u32,
}

/// RPC over one link.
pub(crate) struct Session {
    label: String,
    side: Side,
    region: Region,
    doorbell: Doorbell,
    /// Wakes whoever sleeps on the doorbell (callers and the standby server) to look at
    /// the ring; a thread that drains it polls the ring or passes it on.
    kick: Kick,
    /// Wakes the standby server only: queued work must reach a server, and a kick that
    /// callers also wait on can be drained by one of them instead.
    standby_kick: Kick,
    wait: WaitStrategy,
    server_wait: WaitStrategy,
    default_timeout: Duration,
    /// The receive window this side grants each stream.
    stream_window: u32,
    /// Calls and streams refused by an access rule (private memory: the count the host
    /// reports is its own, not what the cell writes).
    refused: std::sync::atomic::AtomicU64,
    /// Per-method metrics, when kept (host side).
    metrics: Option<Box<LinkMetrics>>,
    dispatcher: Arc<RwLock<Dispatcher>>,
    hooks: Box<dyn Hooks>,
    tx_ring: Mutex<Producer<ShmRing<EntryWords>>>,
    tx_pool: Mutex<SlotAllocator>,
    tx_max_payload: usize,
    /// Entries of the send ring that stream DATA leaves free (a quarter): calls, their
    /// responses and control frames never wait behind bulk frames.
    bulk_reserve: u64,
    rx_ring: Mutex<Consumer<ShmRing<EntryWords>>>,
    rx_peek: ShmRing<EntryWords>,
    rx_pool: SlotReceiver,
    /// The protocol state: calls waiting, open channels, frames owed to the peer.
    link: Mutex<LinkState>,
    /// Frames are owed to the peer (`Link::owes`, mirrored; written under the link's lock).
    owes: AtomicBool,
    /// The link watches deadlines (of calls nobody waits on, of streams) the standby must
    /// sleep no longer than (set with the link's lock held, cleared by the standby once
    /// `Link::poll_timeout` says none are left).
    link_timed: AtomicBool,
    /// The link deadline the standby's sleep ends at (`u64::MAX`: none), written under the
    /// link's lock when it computes its sleep: a deadline registered later (under that
    /// lock too) kicks it only if it is earlier, so a call started while the standby
    /// already wakes before its deadline costs no syscall.
    standby_until: AtomicU64,
    /// Futures waiting for a time (room in our send ring or pool, a grace period), woken
    /// by the standby.
    alarms: Alarms,
    /// Bumped for every answer and stream frame the receive path delivers: a future that
    /// receives while it is polled stops once anything it delivered may have made another
    /// task runnable (`future::Receiving`).
    deliveries: AtomicU64,
    /// Requests waiting for a server, and which server sleeps where.
    workers: Workers<Incoming>,
    /// The receive ring let go without parking (see `runtime::lease`); only with a
    /// standby server to bound it (`has_standby`).
    lease: Lease,
    has_standby: AtomicBool,
    /// Waiters asleep on the doorbell (see `lease_ring`).
    waiters_asleep: AtomicUsize,
    failure: Mutex<Option<Error>>,
    failed: AtomicBool,
    failing: AtomicBool,
    failing_thread: Mutex<Option<std::thread::ThreadId>>,
    servers: Mutex<Vec<JoinHandle<()>>>,
    /// Runs the handlers of the streams the peer opens.
    stream_pool: Arc<TaskPool>,
    cancelled_calls: CancelledCalls,
    /// Requests a handler kept past its return (see `Call::retain_request_until`), with
    /// the check that frees each; at most one per slot of the peer's pool.
    retained: Mutex<Vec<(Payload, RetainCheck)>>,
    has_retained: AtomicBool,
    /// Counted among the process's links while the session lives (`runtime::spinning`).
    _open_link: OpenLink<'static>,
}

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Session").field("label", &self.label).field("side", &self.side).finish()
    }
}

/// The start of a peer's label, for thread names (which Linux cuts at 15 bytes).
fn label_prefix(label: &str) -> String {
    label.chars().take(8).collect()
}

fn other(side: Side) -> Side {
    match side {
        Side::Host => Side::Cell,
        Side::Cell => Side::Host,
    }
}

impl Session {
    /// Hands `fd` to the peer on the doorbell under a new token (name it in the call
    /// that follows); the token.
    pub(crate) fn hand_over(&self, fd: &impl std::os::fd::AsRawFd) -> Result<u64> {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        let token = ((std::process::id() as u64) << 32) | NEXT.fetch_add(1, Ordering::Relaxed);
        self.doorbell
            .hand_over(token, fd.as_raw_fd(), Duration::from_secs(5))
            .map_err(|e| Error::system(format!("handing a descriptor to {}", self.label), e))?;
        Ok(token)
    }

    /// The descriptor the peer handed over under `token` (PROTOCOL_ERROR if it did not).
    pub(crate) fn take_handed(&self, token: u64) -> Result<std::fs::File> {
        self.doorbell.take_handed(token).map(std::fs::File::from).ok_or_else(|| {
            Error::new(
                Status::ProtocolError,
                format!("{} named descriptor {token:#x} but handed none over", self.label),
            )
        })
    }

    /// Attaches to the region as `side`.
    ///
    /// # Safety
    /// At most one session exists per (region, side) across all processes: it becomes
    /// the only producer and consumer of that side's rings and pools.
    pub unsafe fn new(cfg: SessionConfig) -> Result<Arc<Session>> {
        let region = cfg.region;
        let side = cfg.side;
        let peer = other(side);
        // SAFETY: per this function's contract we are the single producer of the ring we
        // send on, single consumer of the ring we receive on, single allocator of our pool
        // and single receiver of the peer's pool.
        let (tx_ring, rx_ring, tx_pool, rx_pool) = unsafe {
            (
                Producer::new(region.ring(side)),
                Consumer::new(region.ring(peer)),
                SlotAllocator::new(&region, side),
                SlotReceiver::new(&region, peer),
            )
        };
        let link = Link::new(side, cfg.label.clone(), cfg.max_inbound_streams);
        let stream_pool =
            TaskPool::new(format!("cellshm-{}-s", label_prefix(&cfg.label)), cfg.stream_threads, pool::os_thread);
        let kick = Kick::new().map_err(|e| Error::system("creating an eventfd", e))?;
        let standby_kick = Kick::new().map_err(|e| Error::system("creating an eventfd", e))?;
        region.parked(side).store(1, Ordering::SeqCst);
        Ok(Arc::new(Session {
            label: cfg.label,
            side,
            rx_peek: region.ring(peer),
            doorbell: cfg.doorbell,
            kick,
            standby_kick,
            wait: cfg.wait,
            server_wait: cfg.server_wait,
            default_timeout: cfg.default_timeout,
            stream_window: cfg.stream_window,
            refused: std::sync::atomic::AtomicU64::new(0),
            metrics: cfg.metrics.then(|| Box::new(LinkMetrics::new())),
            dispatcher: cfg.dispatcher,
            hooks: cfg.hooks,
            tx_max_payload: tx_pool.max_payload(),
            bulk_reserve: region.ring(side).capacity() / 4,
            tx_ring: Mutex::new(tx_ring),
            tx_pool: Mutex::new(tx_pool),
            rx_ring: Mutex::new(rx_ring),
            rx_pool,
            region,
            link: Mutex::new(link),
            owes: AtomicBool::new(false),
            link_timed: AtomicBool::new(false),
            standby_until: AtomicU64::new(u64::MAX),
            alarms: Alarms::default(),
            deliveries: AtomicU64::new(0),
            workers: Workers::new(MAX_QUEUED),
            lease: Lease::default(),
            has_standby: AtomicBool::new(false),
            waiters_asleep: AtomicUsize::new(0),
            failure: Mutex::new(None),
            failed: AtomicBool::new(false),
            failing: AtomicBool::new(false),
            failing_thread: Mutex::new(None),
            servers: Mutex::new(Vec::new()),
            stream_pool,
            cancelled_calls: CancelledCalls::default(),
            retained: Mutex::new(Vec::new()),
            _open_link: SpinPermits::process().link_opened(),
            has_retained: AtomicBool::new(false),
        }))
    }

    pub fn doorbell_fd(&self) -> i32 {
        std::os::fd::AsRawFd::as_raw_fd(&self.doorbell)
    }

    /// Counts the end of the process behind `pidfd` as the peer's death, like EOF on the
    /// doorbell, and wakes the sleeping threads so that they watch it too.
    pub fn watch_process(&self, pidfd: crate::sys::process::Pidfd) {
        self.doorbell.watch_process(pidfd);
        self.kick.notify();
        self.standby_kick.notify();
    }

    /// The counters the peer keeps in its control block (untrusted, informational).
    pub fn peer_counters(&self) -> Counters {
        let peer = other(self.side);
        let read = |field| self.region.counter(peer, field).load(Ordering::Relaxed);
        Counters {
            calls_sent: read(control::CALLS_SENT),
            requests_served: read(control::REQUESTS_SERVED),
            errors: read(control::ERRORS),
            bytes_sent: read(control::BYTES_SENT),
        }
    }

    /// Marks our lifecycle word in the region (read by tools such as `inspect`).
    pub fn set_lifecycle(&self, state: u32) {
        self.region.state_word(self.side).store(state, Ordering::Release);
    }

    /// Slots of the peer's pool we currently hold.
    pub fn held_slots(&self) -> u32 {
        self.rx_pool.held_count()
    }

    /// Free slots per class of our own pool.
    pub fn free_slots(&self) -> Result<Vec<usize>> {
        self.tx_pool.lock().free_counts().map_err(|m| Error::new(Status::ProtocolError, m))
    }

    /// The error the session failed with, if it did.
    pub fn failure(&self) -> Option<Error> {
        if self.failed.load(Ordering::Acquire) {
            self.failure.lock().clone()
        } else {
            None
        }
    }

    /// Whether the session failed or is failing right now (its failure is recorded, its
    /// death hooks may still run on another thread).
    pub(crate) fn has_failed(&self) -> bool {
        self.failure.lock().is_some()
    }

    fn check_open(&self) -> Result<()> {
        if let Some(e) = self.failure() {
            return Err(e);
        }
        // While `fail` runs the death hooks, only the thread running them is refused
        // (so it cannot wait on a dead peer); everyone else learns after the hooks.
        if self.failing.load(Ordering::Relaxed) && *self.failing_thread.lock() == Some(std::thread::current().id()) {
            return Err(self.failure.lock().clone().unwrap_or_else(|| Error::new(Status::SessionClosed, "closed")));
        }
        Ok(())
    }

    fn count(&self, field: usize, n: u64) {
        self.region.counter(self.side, field).fetch_add(n, Ordering::Relaxed);
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.doorbell.shutdown();
        // Idle stream threads wait on the pool's condvar: let them end (a running one
        // holds the session, so none runs now).
        drop(self.stream_pool.stop());
    }
}
