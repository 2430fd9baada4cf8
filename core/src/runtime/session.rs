//! RPC over one link (its two memfds plus its doorbell): calls, correlation,
//! deadlines, dispatch to handlers, and the receive protocol.
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

use parking_lot::{Mutex, MutexGuard, RwLock};

mod dispatch;
mod options;
mod stream;

use crate::runtime::cancellation::CancelledCalls;
use crate::runtime::lease::{Lease, LEASE};
use crate::runtime::metrics;
use crate::runtime::pool::{self, TaskPool};
use crate::runtime::spinning::{OpenLink, SpinPermits, Spinner};
use crate::runtime::waiter;
pub use crate::runtime::waiter::Completion;
use dispatch::ReplyBody;
pub use dispatch::{AccessPolicy, Call, CancelToken, Dispatcher, Handler, PeerIdentity, RetainCheck};
pub use options::{CallOptions, WaitStrategy, DEFAULT_CALL_TIMEOUT, FOREVER};
use stream::StreamState;
pub use stream::{
    Stream, StreamCall, StreamEnd, StreamHandler, StreamItem, MAX_INBOUND_STREAMS, STREAM_THREADS, STREAM_WINDOW,
};

use crate::error::{Error, Result};
use crate::proto::link::{Answer, Inbound, Link, Timer};
use crate::proto::status::{self, Verdict};
use crate::runtime::workers::Workers;
use crate::shm::layout::control;
use crate::shm::pool::{InSlot, OutSlot, SlotAllocator, SlotReceiver};
use crate::shm::ring::{self, Consumer, Producer, PushError, RingMemory};
pub use crate::shm::Counters;
use crate::shm::{EntryWords, Frame, Region, SharedBytes, ShmRing, Side};
use crate::sys::clock::monotonic_now_ns;
use crate::sys::doorbell::{handshake, Doorbell, Kick, Signal, Wake};
use crate::wire::{self, flags, ControlKind, Descriptor, Status, CONTROL_CHANNEL, INLINE_CAPACITY};

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

/// A received payload: inline bytes or a held slot, released when dropped.
pub(crate) struct Payload {
    session: Arc<Session>,
    body: Body,
    /// The private copy of a slot's bytes that `bytes` hands out, made on first use:
    /// the slot itself is in memory the sender can write, so it is never borrowed.
    copy: OnceLock<Box<[u8]>>,
}

enum Body {
    Inline([u8; INLINE_CAPACITY], usize),
    Slot(InSlot),
}

impl Payload {
    fn new(session: Arc<Session>, body: Body) -> Payload {
        Payload { session, body, copy: OnceLock::new() }
    }

    /// The payload where it lies, read through volatile loads.
    pub(crate) fn shared(&self) -> SharedBytes<'_> {
        match &self.body {
            Body::Inline(b, n) => SharedBytes::private(&b[..*n]),
            // SAFETY: the session (and so the mapping) is alive while `self` holds it, and
            // the slot is released only in Drop.
            Body::Slot(s) => unsafe { s.shared() },
        }
    }

    /// The payload as private bytes: inline ones as they are, a slot's copied once.
    pub(crate) fn bytes(&self) -> &[u8] {
        match &self.body {
            Body::Inline(b, n) => &b[..*n],
            Body::Slot(_) => self.copy.get_or_init(|| self.shared().to_vec().into_boxed_slice()),
        }
    }

    pub(crate) fn len(&self) -> usize {
        match &self.body {
            Body::Inline(_, n) => *n,
            Body::Slot(s) => s.len(),
        }
    }
}

impl Drop for Payload {
    fn drop(&mut self) {
        // Once the link failed, nothing is returned into it any more: the peer is gone
        // or dropped, and the slot's next launch has memfds of its own.
        if self.session.failed.load(Ordering::Acquire) {
            return;
        }
        if let Body::Slot(slot) = &self.body {
            if let Err(m) = self.session.rx_pool.release(slot) {
                self.session.protocol_error(m);
            }
        }
    }
}

/// A response: its payload stays in shared memory and its slot goes back to the sender
/// when the `Response` is dropped.
pub struct Response {
    payload: Payload,
}

impl Response {
    /// The payload bytes. Payloads larger than 80 bytes are copied out of shared memory
    /// on the first call (the sender could change them under a reference); read them in
    /// place with [`Response::payload`] instead.
    pub fn bytes(&self) -> &[u8] {
        self.payload.bytes()
    }

    /// The payload where it lies, without a copy.
    pub fn payload(&self) -> SharedBytes<'_> {
        self.payload.shared()
    }

    /// Payload length.
    pub fn len(&self) -> usize {
        self.payload.len()
    }

    /// True for an empty payload.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Copies the payload out.
    pub fn to_vec(&self) -> Vec<u8> {
        self.payload.shared().to_vec()
    }
}

impl fmt::Debug for Response {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Response").field("len", &self.len()).finish()
    }
}

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
enum OutBody {
    Inline([u8; INLINE_CAPACITY], usize),
    Slot(OutSlot, usize),
}

/// A call started with [`Session::call_start`]. Dropping it before completion cancels
/// it (a late response is then dropped and its slot returned).
pub struct PendingCall {
    session: Arc<Session>,
    msg_id: u64,
    waiter: Arc<Waiter>,
    method_id: u32,
    name: Option<String>,
    deadline_ns: u64,
    /// When it was sent, for the link's metrics; 0 once its end was counted.
    started_ns: AtomicU64,
}

impl fmt::Debug for PendingCall {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PendingCall").field("msg_id", &self.msg_id).field("done", &self.is_done()).finish()
    }
}

impl PendingCall {
    /// True once the result is in.
    pub fn is_done(&self) -> bool {
        self.waiter.is_done()
    }

    /// The result, once in (`None` before). Returns it once; later calls get an error.
    pub fn try_take(&self) -> Option<Result<Response>> {
        if !self.is_done() {
            return None;
        }
        let result =
            self.session.finish_call(take_result(&self.waiter), self.method_id, self.name.as_deref(), self.deadline_ns);
        self.count_end(result.as_ref().map_or_else(Error::status, |_| Status::Ok));
        Some(result)
    }

    /// Counts the call's end in the link's metrics, once.
    fn count_end(&self, status: Status) {
        let started_ns = self.started_ns.swap(0, Ordering::Relaxed);
        if let (Some(metrics), true) = (&self.session.metrics, started_ns != 0) {
            metrics.outgoing.finish_of(self.method_id, status, started_ns, monotonic_now_ns());
        }
    }

    /// Stops waiting and tells the callee (a CANCEL frame its handler sees through
    /// [`Call::is_cancelled`]). Returns true if the call was still outstanding (its
    /// completion callback will then never run); its late response is dropped.
    pub fn cancel(&self) -> bool {
        // The CANCEL is owed: sent now if the ring has room, else with the next frame
        // (a cancel never waits on a full ring).
        self.session.owing(|link| link.give_up(self.msg_id, true).is_some())
    }
}

impl Drop for PendingCall {
    fn drop(&mut self) {
        if !self.is_done() {
            self.cancel();
            self.count_end(Status::Cancelled);
        } else if self.started_ns.load(Ordering::Relaxed) != 0 {
            // Answered, never collected: counted with the status it was answered with.
            let _ = self.try_take();
        }
    }
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
    /// Calls nobody waits on have deadlines the standby must watch (set with the link's
    /// lock held, cleared by the standby once `Link::poll_timeout` says none are left).
    link_timed: AtomicBool,
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

    // ----- failure -----------------------------------------------------------------

    /// Fails the session for good: every pending and future call gets `error`.
    pub fn fail(&self, error: Error) {
        if self.failure.lock().is_some() {
            return;
        }
        let error = if error.status() == Status::PeerDead { self.hooks.explain_death(error) } else { error };
        {
            let mut slot = self.failure.lock();
            if slot.is_some() {
                return;
            }
            *slot = Some(error.clone());
        }
        if matches!(error.status(), Status::ProtocolError | Status::SessionClosed) {
            // Drop the peer: it sees EOF on its doorbell now.
            self.doorbell.shutdown();
        }
        // State and death callbacks first, and only then is the failure published: no
        // caller sees this error before the peer is marked dead and its callbacks ran.
        // A callback that calls this session fails at once (see `check_open`).
        *self.failing_thread.lock() = Some(std::thread::current().id());
        self.failing.store(true, Ordering::SeqCst);
        self.hooks.on_dead(&error);
        self.failed.store(true, Ordering::Release);
        let (waiters, streams) = self.link.lock().fail(error.clone());
        for w in waiters {
            w.complete(Err(error.clone()));
        }
        for stream in streams {
            stream.stop(error.clone());
        }
        // Handlers waiting for cancellation see the failure now.
        self.cancelled_calls.wake_all();
        // Queued requests and streams are dropped (their slots go nowhere: the link is
        // over) outside the queues' locks; condvar sleepers are woken by `stop`, the
        // standby by the kick.
        drop(self.workers.stop());
        drop(self.stream_pool.stop());
        self.kick.notify();
        self.standby_kick.notify();
    }

    fn protocol_error(&self, message: impl fmt::Display) {
        self.fail_protocol(Error::new(Status::ProtocolError, format!("{} broke the protocol: {message}", self.label)));
    }

    fn fail_protocol(&self, error: Error) {
        tracing::error!(peer = %self.label, "{}", error.message());
        self.fail(error);
    }

    /// Says whether the link still works, asking the doorbell and the peer's pidfd
    /// without waiting; a dead peer fails the link here and now.
    pub fn check_alive(&self) -> bool {
        if self.failed.load(Ordering::Acquire) {
            return false;
        }
        if !self.doorbell.is_alive() {
            self.peer_dead();
            return false;
        }
        true
    }

    fn peer_dead(&self) {
        let how = if self.doorbell.socket_open() { "its process ended" } else { "doorbell closed" };
        self.fail(Error::new(Status::PeerDead, format!("{} is gone ({how})", self.label)));
    }

    /// Closes the session: the peer sees EOF; pending calls fail with SESSION_CLOSED;
    /// server threads stop and are joined, unless called from one of them: then this
    /// returns false and that thread finishes on its own.
    pub fn close(&self) -> bool {
        self.fail(Error::new(Status::SessionClosed, format!("session with {} was closed", self.label)));
        let mut handles: Vec<_> = self.servers.lock().drain(..).collect();
        handles.extend(self.stream_pool.take_threads());
        let me = std::thread::current().id();
        let mut all_joined = true;
        for h in handles {
            if h.thread().id() == me {
                all_joined = false;
            } else {
                let _ = h.join();
            }
        }
        all_joined
    }

    // ----- sending -----------------------------------------------------------------

    fn fill_body(&self, max_len: usize, deadline_ns: u64, fill: impl FnOnce(&mut [u8]) -> usize) -> Result<OutBody> {
        let overfilled = |n: usize| {
            Error::new(
                Status::InvalidArgument,
                format!("the fill function reported {n} bytes written into a {max_len}-byte buffer"),
            )
        };
        if max_len <= INLINE_CAPACITY {
            let mut buf = [0u8; INLINE_CAPACITY];
            let n = fill(&mut buf[..max_len]);
            return if n <= max_len { Ok(OutBody::Inline(buf, n)) } else { Err(overfilled(n)) };
        }
        let mut slot = self.alloc_slot(max_len, deadline_ns)?;
        let n = fill(&mut slot.buffer()[..max_len]);
        if n > max_len {
            self.tx_pool.lock().free_unsent(slot);
            return Err(overfilled(n));
        }
        Ok(OutBody::Slot(slot, n))
    }

    fn give_up_at(deadline_ns: u64) -> u64 {
        if deadline_ns != 0 {
            deadline_ns
        } else {
            crate::sys::clock::deadline_after(SEND_TIMEOUT)
        }
    }

    fn alloc_slot(&self, len: usize, deadline_ns: u64) -> Result<OutSlot> {
        if len > self.tx_max_payload {
            return Err(Error::new(
                Status::PayloadTooLarge,
                format!(
                    "payload of {len} bytes exceeds the largest slot ({} bytes) towards {}",
                    self.tx_max_payload, self.label
                ),
            ));
        }
        let give_up = Self::give_up_at(deadline_ns);
        let mut backoff = Backoff::new();
        loop {
            self.check_open()?;
            match self.tx_pool.lock().alloc(len) {
                Ok(Some(slot)) => return Ok(slot),
                Ok(None) => {}
                Err(m) => {
                    self.protocol_error(&m);
                    return Err(Error::new(Status::ProtocolError, m));
                }
            }
            if monotonic_now_ns() >= give_up {
                return Err(Error::new(
                    Status::ResourceExhausted,
                    format!("no free {len}-byte slot towards {} before the deadline (all are in flight)", self.label),
                ));
            }
            if backoff.sleeping() && !self.doorbell.is_alive() {
                self.peer_dead();
                self.check_open()?;
            }
            backoff.snooze();
        }
    }

    fn send(&self, mut d: Descriptor, body: OutBody, deadline_ns: u64) -> Result<()> {
        let (frame, slot) = match body {
            OutBody::Inline(bytes, n) => (Frame::inline(d, &bytes[..n]), None),
            OutBody::Slot(s, n) => {
                d.slot = s.slot;
                d.slot_gen = s.generation;
                d.payload_len = n as u32;
                (Frame::bare(d), Some(s))
            }
        };
        let len = frame.desc.payload_len as u64;
        match self.push(&frame, deadline_ns) {
            // On success the slot belongs to the receiver until it comes back on the
            // return ring; the `OutSlot` handle (no destructor) is simply let go.
            Ok(()) => {
                self.count(control::BYTES_SENT, len);
                Ok(())
            }
            Err(e) => {
                if let Some(s) = slot {
                    self.tx_pool.lock().free_unsent(s);
                }
                Err(e)
            }
        }
    }

    fn push(&self, frame: &Frame, deadline_ns: u64) -> Result<()> {
        let words = frame.to_words();
        let reserve = if frame.desc.flags & flags::DATA != 0 { self.bulk_reserve } else { 0 };
        let mut give_up = 0;
        let mut backoff = Backoff::new();
        loop {
            self.check_open()?;
            let pushed = self.tx_ring.lock().try_push_tagged_leaving(words, reserve);
            match pushed {
                Ok(()) => break,
                Err(PushError::Corrupt(c)) => {
                    self.protocol_error(format_args!("send ring cursor corrupt ({c:?})"));
                    return self.check_open();
                }
                Err(PushError::Full) => {
                    // Make sure the receiver is awake to drain it.
                    self.ring_doorbell_if_parked();
                    // A peer that died with its ring full is seen here, not after the
                    // deadline: nobody else may be polling its doorbell.
                    if backoff.sleeping() && !self.doorbell.is_alive() {
                        self.peer_dead();
                        return self.check_open();
                    }
                    if give_up == 0 {
                        give_up = Self::give_up_at(deadline_ns);
                    }
                    if monotonic_now_ns() >= give_up {
                        return Err(Error::new(
                            Status::ResourceExhausted,
                            format!("ring towards {} stayed full until the deadline", self.label),
                        ));
                    }
                    backoff.snooze();
                }
            }
        }
        self.ring_doorbell_if_parked();
        // The ring had room: send what is owed too.
        self.flush_owed();
        Ok(())
    }

    /// Runs `change` on the link, mirrors in `owes` whether the link now owes the peer
    /// frames (under its lock, as `owes` requires), and sends what it owes.
    fn owing<R>(&self, change: impl FnOnce(&mut LinkState) -> R) -> R {
        let result = {
            let mut link = self.link.lock();
            let result = change(&mut link);
            self.owes.store(link.owes(), Ordering::Release);
            result
        };
        self.flush_owed();
        result
    }

    /// Sends the control frames the link owes the peer (PONG, HELLO_ACK, CANCEL,
    /// refusals) while the ring has room, without waiting: what does not fit stays owed
    /// for the next attempt.
    fn flush_owed(&self) {
        if !self.owes.load(Ordering::Acquire) {
            return;
        }
        let mut sent = false;
        loop {
            let next = {
                let mut link = self.link.lock();
                let next = link.poll_transmit();
                self.owes.store(link.owes(), Ordering::Release);
                next
            };
            let Some(d) = next else { break };
            let pushed = self.tx_ring.lock().try_push_tagged(Frame::bare(d).to_words());
            match pushed {
                Ok(()) => sent = true,
                Err(PushError::Full) => {
                    let mut link = self.link.lock();
                    link.retransmit_first(d);
                    self.owes.store(true, Ordering::Release);
                    break;
                }
                Err(PushError::Corrupt(c)) => {
                    self.protocol_error(format_args!("send ring cursor corrupt ({c:?})"));
                    return;
                }
            }
        }
        if sent {
            self.ring_doorbell_if_parked();
        }
    }

    /// Lets go of a payload that was filled but will not be sent.
    fn discard(&self, body: OutBody) {
        if let OutBody::Slot(slot, _) = body {
            self.tx_pool.lock().free_unsent(slot);
        }
    }

    fn ring_doorbell_if_parked(&self) {
        if handshake::must_ring(self.region.parked(other(self.side))) && self.doorbell.ring() == Signal::PeerDead {
            self.peer_dead();
        }
    }

    fn send_control(&self, kind: ControlKind, msg_id: u64, payload: &[u8]) -> Result<()> {
        self.send_control_until(kind, msg_id, payload, 0)
    }

    fn send_control_until(&self, kind: ControlKind, msg_id: u64, payload: &[u8], deadline_ns: u64) -> Result<()> {
        let mut inline = [0u8; INLINE_CAPACITY];
        inline[..payload.len()].copy_from_slice(payload);
        let d = Descriptor {
            msg_id,
            channel_id: CONTROL_CHANNEL,
            method_id: kind as u32,
            flags: flags::CONTROL,
            ..Default::default()
        };
        self.send(d, OutBody::Inline(inline, payload.len()), deadline_ns)
    }

    // ----- calling -----------------------------------------------------------------

    /// A request descriptor (its msg id still 0), its filled payload, and when the call
    /// started (one clock read serves the deadline, its check and the metrics).
    fn prepare_request(
        &self,
        method_id: u32,
        extra_flags: u32,
        max_len: usize,
        fill: impl FnOnce(&mut [u8]) -> usize,
        opts: &CallOptions,
    ) -> Result<(Descriptor, OutBody, u64)> {
        self.check_open()?;
        if method_id == 0 {
            return Err(Error::new(Status::InvalidArgument, "method id 0 is reserved"));
        }
        let now_ns = monotonic_now_ns();
        let deadline_ns = opts.deadline_for_call_starting_at(now_ns, self.default_timeout);
        if deadline_ns != 0 && now_ns >= deadline_ns {
            return Err(Error::new(Status::DeadlineExceeded, "the deadline passed before the call was sent"));
        }
        let body = self.fill_body(max_len, deadline_ns, fill)?;
        let flags = flags::REQUEST | extra_flags;
        // Counted before sending: the peer never sees a call the counter does not include.
        self.count(control::CALLS_SENT, 1);
        Ok((Descriptor { method_id, flags, deadline_ns, ..Default::default() }, body, now_ns))
    }

    /// Registers the call of `d` with the link, which gives it its msg id, and sends
    /// it; a link that failed meanwhile refuses it, and its payload is let go.
    fn register_and_send(&self, mut d: Descriptor, body: OutBody, waiter: &Arc<Waiter>, timer: Timer) -> Result<u64> {
        let (registered, earlier_deadline) = {
            let mut link = self.link.lock();
            let earliest = if timer == Timer::Link { link.poll_timeout() } else { None };
            let registered = link.start_call(waiter.clone(), Answer::Response, d.deadline_ns, timer);
            let watched = registered.is_ok() && timer == Timer::Link && d.deadline_ns != 0;
            if watched {
                self.link_timed.store(true, Ordering::Release);
            }
            (registered, watched && earliest.is_none_or(|e| d.deadline_ns < e))
        };
        if earlier_deadline {
            // The standby sleeps until the earliest deadline it knew of.
            self.standby_kick.notify();
        }
        d.msg_id = match registered {
            Ok(msg_id) => msg_id,
            Err(e) => {
                self.discard(body);
                return Err(e);
            }
        };
        let (msg_id, deadline_ns) = (d.msg_id, d.deadline_ns);
        if let Err(e) = self.send(d, body, deadline_ns) {
            self.link.lock().give_up(msg_id, false);
            return Err(e);
        }
        Ok(msg_id)
    }

    /// Calls `method_id` with a payload written in place by `fill`, and waits for the
    /// response. `name` only improves error messages.
    pub fn call_with(
        self: &Arc<Self>,
        method_id: u32,
        name: Option<&str>,
        max_len: usize,
        fill: impl FnOnce(&mut [u8]) -> usize,
        opts: &CallOptions,
    ) -> Result<Response> {
        let (d, body, now_ns) = self.prepare_request(method_id, 0, max_len, fill, opts)?;
        let deadline_ns = d.deadline_ns;
        let started = self.metrics.as_ref().map(|m| m.outgoing.start(method_id, name, now_ns));
        let waiter = new_waiter();
        // Start polling before the request leaves, so a quick response never finds us
        // parked (which would cost the peer a doorbell syscall).
        let claimed = self.claim_ring();
        let msg_id = match self.register_and_send(d, body, &waiter, Timer::Caller) {
            Ok(msg_id) => msg_id,
            Err(e) => {
                if let Some(rx) = claimed {
                    self.release_ring(rx);
                }
                if let Some(started) = started {
                    metrics::MethodTable::finish(started, e.status(), monotonic_now_ns());
                }
                return Err(e);
            }
        };
        let message = self.wait_response(&waiter, msg_id, deadline_ns, claimed);
        let result = self.finish_call(message, method_id, name, deadline_ns);
        if let Some(started) = started {
            let status = result.as_ref().map_or_else(Error::status, |_| Status::Ok);
            metrics::MethodTable::finish(started, status, monotonic_now_ns());
        }
        result
    }

    /// Turns a delivered message into the caller's result. The caller, not the callee,
    /// has the last word on two statuses: a link-local one in a response (a peer that
    /// relays one) is INTERNAL, and CANCELLED after the caller's own deadline passed (it
    /// never cancels a blocking call) is DEADLINE_EXCEEDED.
    fn finish_call(
        &self,
        message: Result<Message>,
        method_id: u32,
        name: Option<&str>,
        deadline_ns: u64,
    ) -> Result<Response> {
        let message = message.map_err(|e| self.name_in(e, method_id, name))?;
        if message.desc.flags & flags::ERROR != 0 {
            let text = String::from_utf8_lossy(message.payload.bytes()).into_owned();
            let error = self.received_error(message.desc.status, text, deadline_ns);
            return Err(self.name_in(error, method_id, name));
        }
        Ok(Response { payload: message.payload })
    }

    /// Starts a call nobody blocks on: `on_complete` runs (on a receiving thread) once
    /// the response, an error, or the link's failure is in; then
    /// [`PendingCall::try_take`] returns it. Receiving is done by the server threads,
    /// so the session must have some (a host always does; a cell once it serves).
    pub fn call_start(
        self: &Arc<Self>,
        method_id: u32,
        name: Option<&str>,
        max_len: usize,
        fill: impl FnOnce(&mut [u8]) -> usize,
        opts: &CallOptions,
        on_complete: Completion,
    ) -> Result<PendingCall> {
        let (d, body, now_ns) = self.prepare_request(method_id, 0, max_len, fill, opts)?;
        let deadline_ns = d.deadline_ns;
        let waiter = Arc::new(Waiter::with_completion(on_complete));
        // Nobody waits on it, so the link watches its deadline (the standby sleeps until
        // the earliest one and fails what expired).
        let msg_id = self.register_and_send(d, body, &waiter, Timer::Link)?;
        let started_ns = match &self.metrics {
            Some(metrics) => metrics.outgoing.start(method_id, name, now_ns).at_ns().max(1),
            None => 0,
        };
        Ok(PendingCall {
            session: self.clone(),
            msg_id,
            waiter,
            method_id,
            name: name.map(str::to_owned),
            deadline_ns,
            started_ns: AtomicU64::new(started_ns),
        })
    }

    fn name_in(&self, e: Error, method_id: u32, name: Option<&str>) -> Error {
        match (e.status(), name) {
            (Status::Unimplemented, Some(name)) => {
                let message = format!("{} (called as {name:?})", e.message());
                Error::with_code(e.code(), message)
            }
            (Status::DeadlineExceeded, _) => {
                let what = name.map(|n| format!("{n:?}")).unwrap_or_else(|| format!("method {method_id:#010x}"));
                let message = format!("{what} on {}: {}", self.label, e.message());
                Error::with_code(e.code(), message)
            }
            _ => e,
        }
    }

    /// Sends a notification: no response, no waiting beyond a full ring or pool.
    pub fn notify_with(
        self: &Arc<Self>,
        method_id: u32,
        max_len: usize,
        fill: impl FnOnce(&mut [u8]) -> usize,
        opts: &CallOptions,
    ) -> Result<()> {
        let (mut d, body, _) = self.prepare_request(method_id, flags::NO_REPLY, max_len, fill, opts)?;
        d.msg_id = self.link.lock().next_msg_id();
        let deadline_ns = d.deadline_ns;
        self.send(d, body, deadline_ns)?;
        Ok(())
    }

    /// Sends a notification only if the ring and the pool have room within `patience`
    /// (`None`: right now), else RESOURCE_EXHAUSTED: the telemetry path, where the thread
    /// that logs must never wait on a peer that does not read.
    pub(crate) fn notify_within(
        self: &Arc<Self>,
        method_id: u32,
        body: &[u8],
        patience: Option<Duration>,
    ) -> Result<()> {
        self.check_open()?;
        // A give-up time in the past: one attempt at the pool and one at the ring.
        const AT_ONCE: u64 = 1;
        let give_up = patience.map_or(AT_ONCE, crate::sys::clock::deadline_after);
        let out = self.fill_body(body.len(), give_up, copy_of(body))?;
        self.count(control::CALLS_SENT, 1);
        let mut d = Descriptor { method_id, flags: flags::REQUEST | flags::NO_REPLY, ..Default::default() };
        d.msg_id = self.link.lock().next_msg_id();
        self.send(d, out, give_up)
    }

    /// Sends a control frame that expects an answer (HELLO → HELLO_ACK, PING → PONG).
    pub fn control_call(self: &Arc<Self>, kind: ControlKind, payload: &[u8], timeout: Duration) -> Result<Descriptor> {
        self.check_open()?;
        let answer = match kind {
            ControlKind::Hello => Answer::HelloAck,
            ControlKind::Ping => Answer::Pong,
            _ => return Err(Error::new(Status::Internal, format!("{kind:?} expects no answer"))),
        };
        let waiter = new_waiter();
        // The timeout covers the send too: a full ring must not hold a PING or HELLO
        // longer than its caller asked.
        let deadline = crate::sys::clock::deadline_after(timeout);
        let msg_id = self.link.lock().start_call(waiter.clone(), answer, deadline, Timer::Caller)?;
        if let Err(e) = self.send_control_until(kind, msg_id, payload, deadline) {
            self.link.lock().give_up(msg_id, false);
            return Err(e);
        }
        Ok(self.wait_response(&waiter, msg_id, deadline, None)?.desc)
    }

    /// Sends GOODBYE: we are leaving on purpose.
    pub fn send_goodbye(&self) -> Result<()> {
        self.send_control(ControlKind::Goodbye, 0, &[])
    }

    /// Sends GOODBYE, waiting for ring space no later than `deadline_ns`.
    pub fn send_goodbye_until(&self, deadline_ns: u64) -> Result<()> {
        self.send_control_until(ControlKind::Goodbye, 0, &[], deadline_ns)
    }

    fn wait_response(
        self: &Arc<Self>,
        waiter: &Waiter,
        msg_id: u64,
        deadline_ns: u64,
        claimed: Option<RxGuard<'_>>,
    ) -> Result<Message> {
        match self.wait_polling(waiter, deadline_ns, claimed) {
            Waited::Done => take_result(waiter),
            Waited::Failed(e) => Err(e),
            Waited::DeadlinePassed => {
                if self.link.lock().give_up(msg_id, false).is_some() {
                    return Err(Error::new(Status::DeadlineExceeded, "no response before the deadline"));
                }
                // The response is being delivered right now.
                while !waiter.is_done() {
                    std::hint::spin_loop();
                }
                take_result(waiter)
            }
        }
    }

    /// Waits until `awaited` is done, polling the receive ring itself while it can (the
    /// thread that waits is the one that receives: no thread hop on the fast path), and
    /// sleeping on the doorbell and its own kick once the spin budget is spent. Returns
    /// with the ring let go.
    fn wait_polling(
        self: &Arc<Self>,
        awaited: &dyn Awaited,
        deadline_ns: u64,
        mut claimed: Option<RxGuard<'_>>,
    ) -> Waited {
        let budget = self.wait.spin_budget();
        let started = Instant::now();
        // Spinning takes the process's permit too (one spinner per process on two cores).
        let spinner = Spinner::new(SpinPermits::process());
        let may_spin = || budget.is_none_or(|b| started.elapsed() < b) && spinner.may_spin();
        // Set once we slept on the doorbell: a wakeup we drained may have been meant for
        // a descriptor of another waiter, which we then must not swallow.
        let mut slept = false;
        loop {
            if awaited.is_done() {
                if slept {
                    // Someone else delivered what we waited for, but the doorbell byte we
                    // drained may announce another waiter's: pass the wakeup on if the
                    // ring holds anything (a lost wakeup here cost that waiter the 250 ms
                    // recheck).
                    self.after_release();
                }
                return Waited::Done;
            }
            if deadline_ns != 0 && monotonic_now_ns() >= deadline_ns {
                if let Some(rx) = claimed.take() {
                    self.release_ring(rx);
                } else if slept {
                    self.after_release();
                }
                return Waited::DeadlinePassed;
            }
            if let Err(e) = self.check_open() {
                if let Some(rx) = claimed.take() {
                    self.release_ring(rx);
                }
                return Waited::Failed(e);
            }
            if let Some(rx) = claimed.take().or_else(|| self.claim_ring()) {
                // Returns once we are done, the deadline passed, or the spin budget is
                // spent (then the ring is parked and we sleep below).
                self.poll_ring(rx, Poller::Waiting { awaited, deadline_ns, may_spin: &may_spin });
                if awaited.is_done() || may_spin() {
                    continue;
                }
            } else if !few_cores() && may_spin() {
                // Somebody else polls the ring and will deliver what we wait for; on a
                // machine with cores to spare we watch for it without a syscall.
                std::hint::spin_loop();
                continue;
            }
            // Sleep on the doorbell: whoever makes us done kicks us. On two cores or
            // fewer a waiter that does not hold the ring sleeps at once: the holder
            // already spins, and a second spinner would take the core the peer (or the
            // thread that has our answer) needs.
            spinner.stop();
            awaited.sleep_unless_done(&mut || {
                let left =
                    (deadline_ns != 0).then(|| Duration::from_nanos(deadline_ns.saturating_sub(monotonic_now_ns())));
                let timeout = left.map_or(RECHECK, |l| l.min(RECHECK));
                self.waiters_asleep.fetch_add(1, Ordering::Relaxed);
                let woken = match awaited.kick() {
                    Some(own) => self.doorbell.wait(&[&self.kick, own], Some(timeout)),
                    None => self.doorbell.wait(&[&self.kick], Some(timeout)),
                };
                self.waiters_asleep.fetch_sub(1, Ordering::Relaxed);
                slept = true;
                if woken == Wake::PeerDead {
                    self.peer_dead();
                }
                // Pairs with the fence in `release_ring`: after a wakeup we either see the
                // ring released or its holder sees the descriptor that woke us.
                fence(Ordering::SeqCst);
            });
        }
    }

    // ----- receiving ---------------------------------------------------------------

    /// Polls the receive ring while holding it; returns a request when the poller is a
    /// server that should now run it (the ring has been released by then).
    fn poll_ring(self: &Arc<Self>, mut rx: RxGuard<'_>, poller: Poller<'_>) -> Option<Incoming> {
        // Claimed: the parked flag is clear.
        let parked = self.region.parked(self.side);
        // Clock reads and liveness checks happen on the first empty poll and then every
        // CHECK_EVERY empty polls, not on every iteration of the hot loop.
        const CHECK_EVERY: u32 = 64;
        let mut empty_polls: u32 = 0;
        let mut idle_since: Option<Instant> = None;
        let mut last_liveness: Option<Instant> = None;
        let mut frames: u32 = 0;
        let mut drained_after_done: u32 = 0;
        // A server's permit to spin on the empty ring, held until it parks or leaves.
        let server_spinner = Spinner::new(SpinPermits::process());
        loop {
            let popped = match rx.try_pop_tagged() {
                Ok(p) => p,
                Err(c) => {
                    drop(rx);
                    self.protocol_error(format_args!("receive ring cursor corrupt ({c:?})"));
                    self.release_parked();
                    return None;
                }
            };
            if let Some(words) = popped {
                empty_polls = 0;
                if let Some(request) = self.process(Frame::from_words(words)) {
                    match poller {
                        Poller::Server => {
                            // A spinning server claims the ring again once the handler
                            // returns (a handler that runs long hands it to the
                            // standby); a blocking one parks it as it would anyway.
                            self.let_go(rx, self.server_wait);
                            return Some(request);
                        }
                        Poller::Waiting { .. } => self.enqueue(request),
                    }
                }
                if let Poller::Waiting { awaited, deadline_ns, .. } = poller {
                    // A peer that keeps sending must not keep a waiter past its deadline:
                    // the clock is read every CHECK_EVERY frames as well as when idle.
                    frames = frames.wrapping_add(1);
                    let expired = || frames % CHECK_EVERY == 0 && deadline_ns != 0 && monotonic_now_ns() >= deadline_ns;
                    // Once done, what is already in the ring is taken too (up to a ring's
                    // worth) before letting go: a ring let go with frames in it costs
                    // wakeups of other threads to drain it, and those frames are likely
                    // the next ones this waiter wants (a stream's next items).
                    if awaited.is_done() {
                        drained_after_done += 1;
                    }
                    if expired() {
                        self.release_ring(rx);
                        return None;
                    }
                    if drained_after_done > DRAIN_AFTER_DONE {
                        self.let_go(rx, self.wait);
                        return None;
                    }
                }
                continue;
            }
            // Ring empty.
            empty_polls = empty_polls.wrapping_add(1);
            if let Poller::Waiting { awaited, .. } = poller {
                // Done (by what we drained, or another thread delivered it).
                if awaited.is_done() {
                    self.let_go(rx, self.wait);
                    return None;
                }
            }
            if empty_polls % CHECK_EVERY != 1 {
                std::hint::spin_loop();
                continue;
            }
            let now = Instant::now();
            let idle_started = *idle_since.get_or_insert(now);
            let keep_polling = match poller {
                Poller::Waiting { awaited, deadline_ns, may_spin } => {
                    !awaited.is_done() && (deadline_ns == 0 || monotonic_now_ns() < deadline_ns) && may_spin()
                }
                Poller::Server => {
                    self.server_wait.spin_budget().is_none_or(|b| now - idle_started < b) && server_spinner.may_spin()
                }
            };
            if self.failed.load(Ordering::Relaxed) {
                self.release_ring(rx);
                return None;
            }
            if !keep_polling {
                // Park: announce it, then recheck so a descriptor pushed before the
                // announcement is not left behind.
                // The recheck polls the entry, as the pop does: the peer's tail may lie
                // (a tail past an entry it never wrote would fail every park, forever).
                if !handshake::try_park(parked, || rx.next_ready()) {
                    continue;
                }
                drop(rx);
                self.after_release();
                return None;
            }
            if now - *last_liveness.get_or_insert(now) >= LIVENESS_CHECK {
                last_liveness = Some(now);
                if !self.doorbell.is_alive() {
                    drop(rx);
                    self.peer_dead();
                    self.release_parked();
                    return None;
                }
            }
            std::hint::spin_loop();
        }
    }

    /// Takes the receive ring if nobody polls it, ends any lease on it, and says so
    /// (parked = 0) right away. The flag is written only if it changes: the peer reads
    /// its line after every push, and a store would take that line from it.
    fn claim_ring(&self) -> Option<RxGuard<'_>> {
        let rx = self.rx_ring.try_lock()?;
        self.lease.end();
        let parked = self.region.parked(self.side);
        if parked.load(Ordering::Relaxed) != 0 {
            parked.store(0, Ordering::Relaxed);
        }
        Some(rx)
    }

    /// Lets go of the ring without parking it: the thread will be back in a moment (see
    /// `runtime::lease`; the standby bounds the lease). Without a standby, parks.
    ///
    /// A waiter asleep on the doorbell (one that did not get the ring) is woken by the
    /// peer's ring only if we park: with one asleep, we do, or its answer could wait for
    /// the lease to run out. (A waiter that falls asleep just after this check costs at
    /// most that: the lease still bounds it.)
    fn lease_ring(&self, rx: RxGuard<'_>) {
        if !self.has_standby.load(Ordering::Relaxed) || self.waiters_asleep.load(Ordering::Relaxed) > 0 {
            return self.release_ring(rx);
        }
        let unwatched = self.lease.grant(|| drop(rx));
        if unwatched {
            self.standby_kick.notify();
        }
        // `grant` fenced after letting go, as `after_release` would.
        self.wake_for_frames_left();
    }

    /// A poller that waits with `strategy` lets go of the ring: under a lease if it
    /// spins (it is likely to poll again soon: the next call, the stream's next item,
    /// the end of the handler it is about to run), parked if it blocks.
    fn let_go(&self, rx: RxGuard<'_>, strategy: WaitStrategy) {
        if strategy == WaitStrategy::Block {
            self.release_ring(rx);
        } else {
            self.lease_ring(rx);
        }
    }

    fn release_parked(&self) {
        self.region.parked(self.side).store(1, Ordering::SeqCst);
    }

    /// Lets go of the ring while it may still hold descriptors: park, then make sure
    /// somebody looks at what is left.
    fn release_ring(&self, rx: RxGuard<'_>) {
        self.release_parked();
        drop(rx);
        // `after_release` fences before rechecking the ring: with the SeqCst store of
        // the parked flag above that is the receiver's half of the parked handshake.
        self.after_release();
    }

    fn after_release(&self) {
        // Pairs with the fence a woken thread issues before `try_lock`: if it failed to
        // take the ring because we still held it, we see its descriptor here.
        fence(Ordering::SeqCst);
        self.wake_for_frames_left();
    }

    /// After letting go of the ring and a full fence: frames still in it get a poller.
    fn wake_for_frames_left(&self) {
        if self.ring_nonempty() {
            self.kick.notify();
            self.standby_kick.notify();
            self.workers.wake_one();
        }
    }

    /// The ring holds frames and nobody will look at them: nobody polls it and no
    /// lease is out (a leaseholder comes back, or the standby takes a lease that stays
    /// unclaimed). A standby that left its sleep for frames somebody else polls would
    /// spin between the serve loop and its sleep.
    fn ring_needs_a_poller(&self) -> bool {
        self.ring_nonempty() && !self.rx_ring.is_locked() && !self.lease.is_out()
    }

    /// The entry at our cursor was written for this lap (the peer's tail is not trusted).
    fn ring_nonempty(&self) -> bool {
        ring::ready_at(&self.rx_peek, self.rx_peek.load_head(Ordering::Relaxed))
    }

    /// Hands one descriptor to the link and carries out what it decides. Returns
    /// requests for a server to run. Never waits on a send and never runs user code:
    /// answers owed to the peer go out with `flush_owed`, in one attempt.
    fn process(self: &Arc<Self>, frame: Frame) -> Option<Incoming> {
        let d = frame.desc;
        let inbound = {
            let mut link = self.link.lock();
            let inbound = link.handle_frame(&d);
            if link.owes() {
                self.owes.store(true, Ordering::Release);
            }
            inbound
        };
        if let Inbound::Violation(error) = inbound {
            self.fail_protocol(error);
            return None;
        }
        let payload = match self.accept_payload(&frame) {
            Ok(payload) => payload,
            Err(error) => {
                // What the link handed out is no longer in its tables: fail it here.
                match inbound {
                    Inbound::Deliver(w) => w.complete(Err(error.clone())),
                    Inbound::Stream(stream, _) => stream.stop(error.clone()),
                    _ => {}
                }
                self.fail_protocol(error);
                return None;
            }
        };
        let request = match inbound {
            Inbound::Deliver(w) => {
                w.complete(Ok(Message { desc: d, payload }));
                None
            }
            Inbound::Discard | Inbound::Violation(_) => None,
            // Built-in notifications whose order matters (log records) are handled right
            // here, in arrival order, instead of on whichever server thread is free.
            Inbound::Request { no_reply: true } if self.hooks.in_order(d.method_id) => {
                if let Some(Err(e)) = self.hooks.builtin(d.method_id, payload.shared()) {
                    tracing::warn!(peer = %self.label, method_id = d.method_id, "notification failed: {e}");
                }
                None
            }
            Inbound::Request { no_reply } => Some(Incoming { desc: d, payload, no_reply }),
            Inbound::Hello => {
                self.answer_hello(&d, &payload);
                None
            }
            // The caller gave up on a unary call: its handler may see it and stop. The
            // response, if any, is dropped by the caller when it arrives.
            Inbound::Cancelled(msg_id) => {
                self.cancelled_calls.add(msg_id);
                None
            }
            Inbound::Goodbye => {
                self.hooks.on_goodbye();
                None
            }
            Inbound::Open(channel) => {
                self.accept_stream(channel, d, payload);
                None
            }
            Inbound::Stream(stream, frame) => {
                self.on_stream_frame(&stream, frame, d, payload);
                None
            }
        };
        self.flush_owed();
        request
    }

    /// The payload of an accepted frame: inline bytes, or the slot it names, checked.
    fn accept_payload(self: &Arc<Self>, frame: &Frame) -> Result<Payload> {
        let d = &frame.desc;
        let body = if d.is_inline() {
            let (bytes, len) = frame.inline_payload();
            Body::Inline(bytes, len)
        } else {
            let slot = self.rx_pool.accept(d).map_err(|m| {
                Error::new(
                    Status::ProtocolError,
                    format!("{} broke the protocol: bad slot (msg_id {}): {m}", self.label, d.msg_id),
                )
            })?;
            Body::Slot(slot)
        };
        Ok(Payload::new(self.clone(), body))
    }

    /// The cell's HELLO (host side): the hooks decide, the link owes the answer.
    fn answer_hello(&self, d: &Descriptor, payload: &Payload) {
        let answer = wire::Hello::decode(payload.bytes())
            .map_err(|m| Error::new(Status::ProtocolError, m))
            .and_then(|hello| self.hooks.on_hello(hello));
        match answer {
            Ok(ack) => self.owing(|link| link.answer_hello(d.msg_id, &ack.encode())),
            Err(e) => self.fail(e),
        }
    }

    // ----- serving -----------------------------------------------------------------

    /// Starts `count` server threads, which receive and run handlers. If one cannot be
    /// started, the session is closed and the ones already started are joined: nothing
    /// of the attempt is left running.
    pub fn start_servers(self: &Arc<Self>, count: usize) -> Result<()> {
        let mut servers = self.servers.lock();
        // One of them is always the standby (or about to be), which bounds leases.
        self.has_standby.store(true, Ordering::Relaxed);
        for i in 0..count.max(1) {
            let me = self.clone();
            let started = std::thread::Builder::new()
                .name(format!("cellshm-{}-{i}", label_prefix(&self.label)))
                .spawn(move || me.serve_loop());
            match started {
                Ok(handle) => servers.push(handle),
                Err(e) => {
                    drop(servers);
                    self.close();
                    return Err(Error::system(format!("spawning server thread {} of {count}", i + 1), e));
                }
            }
        }
        Ok(())
    }

    fn enqueue(&self, request: Incoming) {
        if let Err(request) = self.workers.push(request, || self.standby_kick.notify()) {
            self.refuse_queued(request);
        }
    }

    /// Answers a request the work queue has no room for with RESOURCE_EXHAUSTED, in one
    /// attempt (the receive path never waits on a send): a flood costs the flooder
    /// errors, not the host memory.
    fn refuse_queued(&self, request: Incoming) {
        let Incoming { desc, payload, no_reply } = request;
        drop(payload);
        self.count(control::ERRORS, 1);
        if no_reply {
            return;
        }
        self.refuse(&desc, Status::ResourceExhausted, "queue full");
    }

    /// Owes the peer a refusal of `request` (a RESPONSE or a stream's FINISH with
    /// `status`) and sends it if the ring has room: refusals are decided on the receive
    /// path, which never waits on a send (or a slot).
    pub(crate) fn refuse(&self, request: &Descriptor, status: Status, text: &str) {
        self.owing(|link| link.refuse(request, status, text));
    }

    fn serve_loop(self: Arc<Self>) {
        // The ring as claimed by `serve` before it sent its response.
        let mut held: Option<RxGuard<'_>> = None;
        while !self.failed.load(Ordering::Acquire) {
            let queued = if self.workers.has_work() { self.workers.pop() } else { None };
            if let Some(request) = queued {
                if let Some(rx) = held.take() {
                    self.lease_ring(rx);
                }
                held = self.serve(request);
                continue;
            }
            if let Some(rx) = held.take().or_else(|| self.claim_ring()) {
                if let Some(request) = self.poll_ring(rx, Poller::Server) {
                    self.workers.hand_over_standby();
                    held = self.serve(request);
                    continue;
                }
                // The ring is parked: sleep until the doorbell rings.
            }
            self.sleep_server();
        }
        if let Some(rx) = held {
            self.release_ring(rx);
        }
    }

    /// Sleeps until there may be something to do (see `runtime::workers`).
    fn sleep_server(&self) {
        if self.failed.load(Ordering::Acquire) {
            return;
        }
        let mut last_seen = None;
        self.workers.sleep(|| loop {
            // No idle timer: the peer rings the doorbell for what it sends while we are
            // parked (the parked handshake, loom-checked), and every local event that
            // needs a receiver (a released ring with descriptors left, queued work with
            // no condvar sleeper, a failure, an earlier deadline to watch, a lease out
            // that nobody watched) kicks. Only work in hand sets a timeout: the deadline
            // of a call nobody waits on, frames owed to a peer whose ring was full, and a
            // lease out on the ring (`runtime::lease`).
            let watched = self.lease.watch(&mut last_seen);
            let timeout = earlier(self.standby_timeout(), watched.map(|_| LEASE));
            let woken = if self.ring_needs_a_poller() {
                Wake::Woken
            } else {
                self.doorbell.wait(&[&self.kick, &self.standby_kick], timeout)
            };
            self.lease.unwatch();
            if woken == Wake::PeerDead {
                self.peer_dead();
            }
            fence(Ordering::SeqCst);
            self.flush_owed();
            self.expire_calls();
            // Back to the serve loop for work, a failure, frames to take, or a lease
            // nobody claimed for a whole lease (the loop takes the ring, then polls or
            // parks it); otherwise (the kick of a new lease, a new deadline, a lease
            // renewed meanwhile) watch on.
            let lease_expired = watched.is_some_and(|e| self.lease.expired(e));
            if self.workers.has_work()
                || self.failed.load(Ordering::Acquire)
                || self.ring_needs_a_poller()
                || lease_expired
            {
                break;
            }
        });
    }

    /// How long the standby may sleep: until the earliest deadline of a call nobody
    /// waits on, and no more than `OWED_RETRY` while frames are owed; `None` is forever.
    fn standby_timeout(&self) -> Option<Duration> {
        let owed = self.owes.load(Ordering::Acquire).then_some(OWED_RETRY);
        if !self.link_timed.load(Ordering::Acquire) {
            return owed;
        }
        let deadline = {
            let mut link = self.link.lock();
            let deadline = link.poll_timeout();
            if deadline.is_none() {
                self.link_timed.store(false, Ordering::Release);
            }
            deadline
        };
        let until_deadline = deadline.map(|d| Duration::from_nanos(d.saturating_sub(monotonic_now_ns())));
        earlier(owed, until_deadline)
    }

    /// Fails the calls nobody waits on whose deadline passed (outside the link's lock:
    /// a completion runs the caller's callback).
    fn expire_calls(&self) {
        if !self.link_timed.load(Ordering::Acquire) {
            return;
        }
        let now = monotonic_now_ns();
        loop {
            let expired = self.link.lock().expire(now);
            let Some(waiter) = expired else { break };
            waiter.complete(Err(Error::new(Status::DeadlineExceeded, "no response before the deadline")));
        }
    }

    /// Runs one request and sends its response. Returns the receive ring if it claimed
    /// it before sending (so the next message finds this server polling, not parked).
    fn serve(self: &Arc<Self>, request: Incoming) -> Option<RxGuard<'_>> {
        let Incoming { desc, payload, no_reply } = request;
        if self.has_retained.load(Ordering::Relaxed) {
            self.release_retained();
        }
        let started = self.metrics.as_ref().map(|m| m.incoming.start(desc.method_id, None, monotonic_now_ns()));
        let (outcome, retain) = self.run_handler(&desc, &payload);
        if let Some(started) = started {
            let status = outcome.as_ref().map_or_else(Error::status, |_| Status::Ok);
            metrics::MethodTable::finish(started, status, monotonic_now_ns());
        }
        self.hooks.on_served(desc.method_id, outcome.is_ok());
        let outcome = outcome.map_err(|e| self.status_to_send(e, &desc));
        match retain {
            Some(check) => self.retain(payload, check),
            None => drop(payload),
        }
        self.cancelled_calls.forget(desc.msg_id);
        let claimed = self.claim_ring();
        self.count(control::REQUESTS_SERVED, 1);
        let (body, error) = match outcome {
            Ok(body) => (body, None),
            Err(e) => {
                self.count(control::ERRORS, 1);
                (ReplyBody::Empty, Some(e))
            }
        };
        if no_reply {
            if let Some(e) = error {
                tracing::warn!(peer = %self.label, method_id = desc.method_id, "notification failed: {e}");
            }
            if let ReplyBody::Slot(slot, _) = body {
                self.tx_pool.lock().free_unsent(slot);
            }
            return claimed;
        }
        let mut response =
            Descriptor { msg_id: desc.msg_id, method_id: desc.method_id, flags: flags::RESPONSE, ..Default::default() };
        let out = match error {
            None => match body {
                ReplyBody::Empty => OutBody::Inline([0; INLINE_CAPACITY], 0),
                ReplyBody::Inline(b, n) => OutBody::Inline(b, n),
                ReplyBody::Slot(s, n) => OutBody::Slot(s, n),
            },
            Some(e) => {
                response.flags |= flags::ERROR;
                response.status = e.code();
                match self.error_body(e.message()) {
                    Ok(body) => body,
                    Err(e) => {
                        tracing::warn!(peer = %self.label, "could not send an error response: {e}");
                        return claimed;
                    }
                }
            }
        };
        if let Err(e) = self.send(response, out, desc.deadline_ns) {
            tracing::debug!(peer = %self.label, "could not send a response: {e}");
        }
        claimed
    }

    fn retain(&self, payload: Payload, check: RetainCheck) {
        tracing::warn!(
            peer = %self.label,
            "a request's zero-copy view outlived its handler: its slot stays held until the view is released"
        );
        self.retained.lock().push((payload, check));
        self.has_retained.store(true, Ordering::Relaxed);
    }

    /// Asks every retained request's check again and lets go of those it allows. The
    /// checks run outside the lock (a binding's check may need its interpreter lock).
    fn release_retained(&self) {
        let candidates = std::mem::take(&mut *self.retained.lock());
        let mut still_held = Vec::new();
        for (payload, mut check) in candidates {
            if !check() {
                still_held.push((payload, check));
            }
        }
        let mut retained = self.retained.lock();
        retained.extend(still_held);
        self.has_retained.store(!retained.is_empty(), Ordering::Relaxed);
    }

    /// What a handler's error becomes on the wire: a link-local status is not the
    /// handler's to give (INTERNAL, naming it), and CANCELLED for a call nobody cancelled
    /// but whose deadline passed is DEADLINE_EXCEEDED.
    fn status_to_send(&self, e: Error, desc: &Descriptor) -> Error {
        self.error_to_send(e, desc.deadline_ns, self.cancelled_calls.contains(desc.msg_id))
    }

    /// A received error (a response's or a stream's FINISH) as the caller reports it
    /// (see `proto::status::inbound`).
    pub(crate) fn received_error(&self, code: u32, text: String, deadline_ns: u64) -> Error {
        // A peer's longer text is cut as a sender cuts its own: the limit holds both ways.
        let text = match cut_error_text(&text) {
            std::borrow::Cow::Borrowed(_) => text,
            std::borrow::Cow::Owned(cut) => cut,
        };
        match status::inbound(code, deadline_ns, monotonic_now_ns()) {
            Verdict::Keep => Error::with_code(code, text),
            Verdict::LinkLocal(status) => Error::new(
                Status::Internal,
                format!("{} answered {status}, which only a link reports about itself: {text}", self.label),
            ),
            Verdict::Expired => Error::new(Status::DeadlineExceeded, format!("{text} (the call's deadline passed)")),
        }
    }

    /// A handler's error as it goes on the wire (see `proto::status::outbound`).
    pub(crate) fn error_to_send(&self, e: Error, deadline_ns: u64, caller_cancelled: bool) -> Error {
        match status::outbound(e.code(), deadline_ns, monotonic_now_ns(), caller_cancelled) {
            Verdict::Keep => e,
            Verdict::LinkLocal(status) => Error::new(
                Status::Internal,
                format!("the handler answered {status}, which only a link reports about itself: {}", e.message()),
            ),
            Verdict::Expired => {
                Error::new(Status::DeadlineExceeded, format!("{} (the call's deadline passed)", e.message()))
            }
        }
    }

    fn error_body(&self, message: &str) -> Result<OutBody> {
        let text = cut_error_text(message);
        let text = text.as_bytes();
        self.fill_body(text.len(), 0, |buf| {
            buf[..text.len()].copy_from_slice(text);
            text.len()
        })
    }

    /// Runs the handler of a request; also returns the check of a request the handler
    /// retained.
    fn run_handler(self: &Arc<Self>, desc: &Descriptor, payload: &Payload) -> (Result<ReplyBody>, Option<RetainCheck>) {
        let mut call = Call {
            msg_id: desc.msg_id,
            request: payload,
            retain: None,
            method_id: desc.method_id,
            deadline_ns: desc.deadline_ns,
            session: self,
            reply: ReplyBody::Empty,
        };
        let outcome = self.run_call(&mut call);
        (outcome, call.retain.take())
    }

    /// Checks a caller against a method's access rules (outside the dispatcher's lock: a
    /// policy may take locks of its own); a refusal is counted, and the handler never runs.
    fn admit(&self, access: &dispatch::AccessCheck) -> Result<()> {
        let refused = access.check(self.hooks.caller().as_ref());
        if refused.is_err() {
            self.refused.fetch_add(1, Ordering::Relaxed);
        }
        refused
    }

    /// Calls and streams refused by an access rule so far (see [`Dispatcher::allow`]).
    pub fn refused_calls(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    /// The link's metrics now; `None` where none are kept (a cell).
    pub fn metrics(&self) -> Option<LinkSnapshot> {
        let metrics = self.metrics.as_ref()?;
        let builtins = wire::builtin::ALL.iter().map(|name| (wire::method_id(name), name.to_string()));
        let served: std::collections::HashMap<u32, String> =
            self.dispatcher.read().methods().into_iter().map(|(name, id)| (id, name)).chain(builtins).collect();
        Some(LinkSnapshot {
            outgoing: metrics.outgoing.snapshot(&served),
            incoming: metrics.incoming.snapshot(&served),
            open_streams: self.link.lock().open_channels() as u64,
            streams_opened: metrics.streams_opened.load(Ordering::Relaxed),
        })
    }

    fn run_call(self: &Arc<Self>, call: &mut Call<'_>) -> Result<ReplyBody> {
        let (method_id, deadline_ns) = (call.method_id, call.deadline_ns);
        if deadline_ns != 0 && monotonic_now_ns() >= deadline_ns {
            return Err(Error::new(
                Status::DeadlineExceeded,
                format!("the request expired before {} served it", self.label),
            ));
        }
        if let Some(result) = self.hooks.builtin(method_id, call.request.shared()) {
            let bytes = result?;
            return Ok(self.fill_body(bytes.len(), deadline_ns, copy_of(&bytes))?.into());
        }
        let (handler, access) = {
            let dispatcher = self.dispatcher.read();
            (dispatcher.get(method_id), dispatcher.access_check(method_id))
        };
        if let Some(access) = access {
            self.admit(&access)?;
        }
        let Some(handler) = handler else {
            let side = match self.side {
                Side::Host => "the host",
                Side::Cell => "this cell",
            };
            return Err(Error::new(
                Status::Unimplemented,
                format!("{side} serves no method with id {:#010x}", method_id),
            ));
        };
        match catch_unwind(AssertUnwindSafe(|| handler(call))) {
            Ok(Ok(())) => Ok(std::mem::replace(&mut call.reply, ReplyBody::Empty)),
            Ok(Err(e)) => Err(e),
            Err(panic) => Err(Error::new(
                Status::Internal,
                format!("handler for method {:#010x} panicked: {}", method_id, crate::error::panic_message(&*panic)),
            )),
        }
    }

    /// Writes raw descriptor bytes into our send ring, bypassing every check. Only for
    /// tests that prove the other side survives garbage.
    #[doc(hidden)]
    pub fn push_raw_for_tests(&self, bytes: [u8; 64]) -> Result<()> {
        let words = Frame::bare(Descriptor::decode(&bytes)).to_words();
        self.tx_ring
            .lock()
            .try_push_tagged(words)
            .map_err(|e| Error::new(Status::ResourceExhausted, format!("{e:?}")))?;
        self.ring_doorbell_if_parked();
        Ok(())
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

#[derive(Clone, Copy)]
enum Poller<'a> {
    /// A thread waiting for something (a call's answer, a stream's change) that receives
    /// meanwhile: requests it finds go to the servers.
    Waiting {
        awaited: &'a dyn Awaited,
        deadline_ns: u64,
        /// Within the spin budget and holding a spin permit.
        may_spin: &'a dyn Fn() -> bool,
    },
    Server,
}

/// Waiting for ring or pool space: spin briefly, then yield, then sleep in short steps.
struct Backoff {
    step: u32,
}

impl Backoff {
    fn new() -> Backoff {
        Backoff { step: 0 }
    }

    /// True once the waits are sleeps: the moment to check that the peer still lives.
    fn sleeping(&self) -> bool {
        self.step >= 128
    }

    fn snooze(&mut self) {
        self.step += 1;
        if self.step < 64 {
            std::hint::spin_loop();
        } else if self.step < 128 {
            std::thread::yield_now();
        } else {
            std::thread::sleep(Duration::from_micros(100));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_texts_are_cut_to_the_limit_at_a_character_boundary_both_ways() {
        let short = "short";
        assert!(matches!(cut_error_text(short), std::borrow::Cow::Borrowed(_)));
        let exact = "x".repeat(MAX_ERROR_MESSAGE);
        assert_eq!(cut_error_text(&exact), exact.as_str());
        // A sender's cut text passes a receiver unchanged.
        let long = "é".repeat(MAX_ERROR_MESSAGE);
        let cut = cut_error_text(&long).into_owned();
        assert!(cut.ends_with(CUT_MARKER) && cut.len() <= MAX_ERROR_MESSAGE + CUT_MARKER.len(), "{}", cut.len());
        assert_eq!(cut_error_text(&cut), cut.as_str());
        // A peer's text beyond the limit (marked or not) is cut on receipt.
        let forged = format!("{}{CUT_MARKER}", "y".repeat(100_000));
        let kept = cut_error_text(&forged);
        assert_eq!(kept.len(), MAX_ERROR_MESSAGE + CUT_MARKER.len());
    }
}
