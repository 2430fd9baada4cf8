//! The host side: create a hub, add peers, spawn cells, call them.

pub mod attach;
pub mod discovery;
pub mod inspect;
mod join;
pub mod supervisor;

use std::fmt;
use std::os::fd::AsRawFd;
use std::process::{Child, Command};
use std::sync::atomic::AtomicU32;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant, SystemTime};

use parking_lot::{Condvar, Mutex, RwLock};

use crate::error::{Error, Result};
use crate::link_end::LinkEnd;
use crate::proto::hello;
use crate::runtime::session::{
    AccessPolicy, CallOptions, Counters, Dispatcher, Hooks, PeerIdentity, Session, SessionConfig, WaitStrategy,
};
use crate::shm::{Geometry, HubConfig, JoinRecord, LinkMemory, SharedBytes, Side};
use crate::sys::doorbell;
use crate::sys::process::Pidfd;
use crate::wire::{self, builtin, Hello, Ready, Status};

/// Most server threads one peer may have (threads are a bounded resource of the host).
pub const MAX_SERVER_THREADS: usize = 64;

/// The fd a cell finds its doorbell on unless [`PeerOptions::doorbell_fd`] says otherwise.
pub const DEFAULT_DOORBELL_FD: i32 = 3;

/// How the host talks to one peer.
#[derive(Clone, Debug)]
pub struct PeerOptions {
    /// How host threads wait for this peer.
    pub wait: WaitStrategy,
    /// Host threads receiving from this peer and running host methods it calls.
    pub server_threads: usize,
    /// How those threads wait when idle. `Block` by default: host callers poll for their
    /// own responses, so idle servers need not spin (on 2 cores a third spinner costs
    /// milliseconds of scheduling latency).
    pub server_wait: WaitStrategy,
    /// The fd number the doorbell gets in the child (`CELLSHM_DOORBELL_FD` tells it).
    pub doorbell_fd: i32,
    /// Also append `--doorbell-fd=N` to the cell's arguments, for cells that read their
    /// join values from flags. Off by default: the host leaves argv alone.
    pub append_join_args: bool,
    /// Streams the cell may have open towards the host at once; more are refused with
    /// RESOURCE_EXHAUSTED. 1 to 1024, default 64.
    pub max_streams: usize,
    /// Host threads that run the handlers of those streams, at most; a stream beyond
    /// them waits for one to finish its handler. 1 to 1024, default 8.
    pub stream_threads: usize,
    /// Keep the last this many bytes of a spawned cell's stderr and add them to its death
    /// reason (0, the default: the cell's stderr is left alone). Its stderr still reaches
    /// ours, through a thread per cell that passes it on.
    pub stderr_tail: usize,
    /// How long a call to this peer may take when its options set no timeout and no
    /// deadline ([`crate::FOREVER`]: no limit). `None`, the default: the supervisor's
    /// default for cells it launches, else [`crate::DEFAULT_CALL_TIMEOUT`] (30 s).
    pub default_timeout: Option<Duration>,
    /// DATA frames the cell may have in flight per stream towards the host (the host's
    /// receive window), 1 to 1024, default [`crate::STREAM_WINDOW`] (8). Larger windows
    /// keep more in flight for fast streams, at the cost of slots.
    pub stream_window: u32,
}

/// The longest an adaptive wait may spin before it sleeps: beyond it a wait burns a core
/// for nothing a sleep would not do.
pub const MAX_SPIN: Duration = Duration::from_millis(100);

/// The most of a cell's stderr a host keeps for its death reason.
pub const MAX_STDERR_TAIL: usize = 1 << 20;

/// Checks a cell's name, the one rule for every way a cell gets one (spawned, supervised,
/// attached): 1 to [`crate::shm::PEER_NAME_MAX`] bytes of UTF-8 without control
/// characters (names are shown on one line by `cellshm inspect` and in logs).
pub fn validate_cell_name(name: &str) -> Result<()> {
    let max = crate::shm::PEER_NAME_MAX;
    if name.is_empty() || name.len() > max || name.chars().any(char::is_control) {
        let shown: String = name.chars().take(64).collect();
        return Err(Error::new(
            Status::InvalidArgument,
            format!(
                "cell name {shown:?}{} is not 1 to {max} bytes without control characters",
                if name.chars().count() > 64 { "..." } else { "" }
            ),
        ));
    }
    Ok(())
}

fn validate_wait(what: &str, wait: WaitStrategy) -> Result<()> {
    match wait {
        WaitStrategy::Adaptive { spin } if spin > MAX_SPIN => Err(Error::new(
            Status::InvalidArgument,
            format!("{what}: an adaptive spin of {} µs is not in 0..={} µs", spin.as_micros(), MAX_SPIN.as_micros()),
        )),
        _ => Ok(()),
    }
}

impl PeerOptions {
    /// Checks every limit; the error (INVALID_ARGUMENT) names the one broken.
    pub fn validate(&self) -> Result<()> {
        validate_wait("wait", self.wait)?;
        validate_wait("server_wait", self.server_wait)?;
        if !(3..=i32::from(u16::MAX)).contains(&self.doorbell_fd) {
            return Err(Error::new(
                Status::InvalidArgument,
                format!(
                    "doorbell_fd {} is not in 3..=65535 (0, 1 and 2 are stdin, stdout and stderr)",
                    self.doorbell_fd
                ),
            ));
        }
        if self.stderr_tail > MAX_STDERR_TAIL {
            return Err(Error::new(
                Status::InvalidArgument,
                format!("stderr_tail {} is not in 0..={MAX_STDERR_TAIL}", self.stderr_tail),
            ));
        }
        if !(1..=1024).contains(&self.max_streams) {
            return Err(Error::new(
                Status::InvalidArgument,
                format!("max_streams {} is not in 1..=1024", self.max_streams),
            ));
        }
        if !(1..=1024).contains(&self.stream_threads) {
            return Err(Error::new(
                Status::InvalidArgument,
                format!("stream_threads {} is not in 1..=1024", self.stream_threads),
            ));
        }
        if !(1..=MAX_SERVER_THREADS).contains(&self.server_threads) {
            return Err(Error::new(
                Status::InvalidArgument,
                format!("server_threads {} is not in 1..={MAX_SERVER_THREADS}", self.server_threads),
            ));
        }
        if !(1..=crate::proto::stream::MAX_STREAM_WINDOW).contains(&self.stream_window) {
            return Err(Error::new(
                Status::InvalidArgument,
                format!(
                    "stream_window {} is not in 1..={}",
                    self.stream_window,
                    crate::proto::stream::MAX_STREAM_WINDOW
                ),
            ));
        }
        Ok(())
    }
}

impl Default for PeerOptions {
    fn default() -> Self {
        PeerOptions {
            wait: WaitStrategy::default(),
            server_threads: 2,
            server_wait: WaitStrategy::Block,
            doorbell_fd: DEFAULT_DOORBELL_FD,
            append_join_args: false,
            max_streams: crate::runtime::session::MAX_INBOUND_STREAMS,
            stream_threads: crate::runtime::session::STREAM_THREADS,
            stderr_tail: 0,
            default_timeout: None,
            stream_window: crate::STREAM_WINDOW,
        }
    }
}

/// Where a peer is in its life.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PeerState {
    /// Ticket issued or process spawned; no HELLO yet.
    Starting,
    /// HELLO accepted; waiting for `cellshm.Lifecycle.ready`.
    Joined,
    /// The cell announced itself ready.
    Ready,
    /// The cell said goodbye and is leaving.
    Leaving,
    /// The peer is gone; the error says why (PEER_DEAD, PROTOCOL_ERROR, ...).
    Dead(Error),
}

type DeathCallback = Box<dyn FnOnce(&Error) + Send>;

pub(crate) struct PeerInner {
    id: u32,
    /// The slot's epoch for this launch.
    epoch: u32,
    name: String,
    hub: Arc<HubShared>,
    /// Both memfds of the link (the session maps them too; kept for `inspect`).
    link: LinkMemory,
    session: Mutex<Option<Arc<Session>>>,
    state: Mutex<PeerState>,
    state_cv: Condvar,
    ready: Mutex<Option<Ready>>,
    /// From fork or SO_PEERCRED, never from what the cell says.
    pid: Mutex<Option<u32>>,
    /// From SO_PEERCRED (attached), or read from `/proc` once the cell calls (spawned: by
    /// then it has exec'd, so a uid the spawn changed is the one it runs as).
    uid: Mutex<Option<u32>>,
    /// For a cell we spawned: how it ended.
    pidfd: Mutex<Option<Pidfd>>,
    /// The end of its stderr, if asked for (`PeerOptions::stderr_tail`).
    stderr: Mutex<Option<Arc<crate::sys::process::StderrTail>>>,
    on_death: Mutex<Vec<DeathCallback>>,
    /// The cell said goodbye (kept after it dies, unlike the Leaving state).
    said_goodbye: std::sync::atomic::AtomicBool,
    /// The host asked the cell to leave: its death that follows is the normal end.
    host_said_goodbye: std::sync::atomic::AtomicBool,
    /// It attached under a name it chose (set before it can call: its link does not exist
    /// for it until the attach reply).
    attached: std::sync::atomic::AtomicBool,
}

impl PeerInner {
    fn goodbye(&self) {
        self.said_goodbye.store(true, std::sync::atomic::Ordering::SeqCst);
        self.set_state(PeerState::Leaving);
    }

    fn set_state(&self, state: PeerState) {
        let mut s = self.state.lock();
        if matches!(*s, PeerState::Dead(_)) {
            return;
        }
        *s = state;
        self.state_cv.notify_all();
    }

    /// The link, while it exists. Once it is gone (closed, or its slot reused after the
    /// cell died) a call reports why: the death if the cell died, else SESSION_CLOSED.
    pub(crate) fn session(&self) -> Result<Arc<Session>> {
        if let Some(session) = self.session.lock().clone() {
            return Ok(session);
        }
        match &*self.state.lock() {
            PeerState::Dead(e) if e.status() == Status::PeerDead => Err(e.clone()),
            _ => Err(Error::new(Status::SessionClosed, format!("peer {} is closed", self.name))),
        }
    }
}

pub(crate) struct HubShared {
    name: String,
    max_peers: u32,
    shutdown_grace: Duration,
    geometry: Geometry,
    started: SystemTime,
    started_at: Instant,
    pub(crate) dispatcher: Arc<RwLock<Dispatcher>>,
    peers: Mutex<PeerTable>,
    log_sink: RwLock<Option<LogSink>>,
    discovery: discovery::DiscoveryState,
    /// Relaunches per cell name, counted by a supervisor (the peers change, the name stays).
    restarts: Mutex<std::collections::HashMap<String, u64>>,
}

/// The host's record of its peer slots (private memory: nothing a cell writes decides
/// which slot is free).
#[derive(Default)]
struct PeerTable {
    /// Every peer not yet reclaimed, dead ones included.
    live: Vec<Arc<PeerInner>>,
    /// Launches per slot so far.
    epochs: Vec<u32>,
}

/// A log record a cell sent with `cellshm.Log.event`.
#[derive(Debug)]
pub struct LogRecord<'a> {
    /// The cell's name (as given to [`Hub::add_peer`]).
    pub cell: &'a str,
    /// The cell's peer id.
    pub peer_id: u32,
    /// One of [`wire::log_level`].
    pub level: u32,
    /// The logger or module the record comes from (may be empty).
    pub target: &'a str,
    /// The message.
    pub message: &'a str,
    /// When the cell made it (CLOCK_REALTIME ns since the Unix epoch; the arrival time
    /// when the cell did not say).
    pub time_unix_ns: u64,
    /// The source file it was made in (may be empty).
    pub file: &'a str,
    /// The line in `file` (0 = not said).
    pub line: u32,
    /// Its structured fields, in the cell's order.
    pub fields: &'a [(String, String)],
    /// True for the library's own notices ([`crate::log::NoticeLayer`]): `cell` is then
    /// the cell the notice is about, if any, else empty.
    pub notice: bool,
}

/// Receives the log records of every cell of a hub (see [`Hub::set_log_sink`]).
pub type LogSink = Arc<dyn Fn(&LogRecord<'_>) + Send + Sync>;

fn log_to_tracing(r: &LogRecord<'_>) {
    let (cell, peer_id, target, message) = (r.cell, r.peer_id, r.target, r.message);
    // `tracing` fields are named at compile time: the cell's fields travel as one.
    let fields: String = r.fields.iter().map(|(k, v)| format!("{k}={v} ")).collect();
    let fields = fields.trim_end();
    let location = if r.file.is_empty() { String::new() } else { format!("{}:{}", r.file, r.line) };
    match r.level {
        wire::log_level::ERROR => tracing::error!(cell, peer_id, target, fields, location, "{message}"),
        wire::log_level::WARN => tracing::warn!(cell, peer_id, target, fields, location, "{message}"),
        wire::log_level::DEBUG => tracing::debug!(cell, peer_id, target, fields, location, "{message}"),
        wire::log_level::TRACE => tracing::trace!(cell, peer_id, target, fields, location, "{message}"),
        _ => tracing::info!(cell, peer_id, target, fields, location, "{message}"),
    }
}

/// Hooks of a host-side session: HELLO, the lifecycle built-ins, death.
struct PeerHooks {
    peer: Weak<PeerInner>,
}

impl PeerInner {
    fn identity(&self) -> PeerIdentity {
        let pid = *self.pid.lock();
        let uid = {
            let mut uid = self.uid.lock();
            if uid.is_none() {
                *uid = pid.and_then(crate::sys::process::real_uid);
            }
            *uid
        };
        let attached = self.attached.load(std::sync::atomic::Ordering::Relaxed);
        PeerIdentity { peer_id: self.id, name: self.name.clone(), epoch: self.epoch, pid, uid, attached }
    }
}

impl Hooks for PeerHooks {
    fn caller(&self) -> Option<PeerIdentity> {
        self.peer.upgrade().map(|p| p.identity())
    }

    fn on_hello(&self, hello: Hello) -> Result<Hello> {
        let peer = self.peer.upgrade().ok_or_else(|| Error::new(Status::SessionClosed, "peer dropped"))?;
        // Any HELLO this host cannot accept drops the peer (PROTOCOL_ERROR shuts the
        // doorbell down), so its slot can be reclaimed at once.
        let link = hello::LinkId { peer_id: peer.id, epoch: peer.epoch };
        hello::host_accepts(link, &hello).map_err(|refusal| {
            Error::new(
                Status::ProtocolError,
                format!("HELLO refused: {}", refusal.describe(link, &format!("cell {}", peer.name))),
            )
        })?;
        peer.set_state(PeerState::Joined);
        Ok(hello::host_ack(link, peer.hub.geometry.max_payload()))
    }

    fn builtin(&self, method_id: u32, payload: SharedBytes<'_>) -> Option<Result<Vec<u8>>> {
        let peer = self.peer.upgrade()?;
        match method_id {
            builtin::LIFECYCLE_READY_ID => Some((|| {
                let ready = crate::builtin::lifecycle::accept_ready(peer.id, payload)?;
                tracing::info!(cell = %peer.name, peer_id = peer.id, pid = ready.pid, version = %ready.version, "cell ready");
                *peer.ready.lock() = Some(ready);
                // Ready once the call is counted (on_served): wait_ready returns then.
                Ok(Vec::new())
            })()),
            builtin::LIFECYCLE_GOODBYE_ID => {
                peer.goodbye();
                Some(Ok(Vec::new()))
            }
            builtin::LOG_EVENT_ID => Some((|| {
                let event = crate::builtin::log::decode_event(payload)?;
                let time_unix_ns = if event.time_unix_ns == 0 { wire::unix_now_ns() } else { event.time_unix_ns };
                let record = LogRecord {
                    cell: &peer.name,
                    peer_id: peer.id,
                    level: event.level,
                    target: &event.target,
                    message: &event.message,
                    time_unix_ns,
                    file: &event.file,
                    line: event.line,
                    fields: &event.fields,
                    notice: false,
                };
                let sink = peer.hub.log_sink.read().clone();
                match sink {
                    Some(sink) => sink(&record),
                    None => log_to_tracing(&record),
                }
                Ok(Vec::new())
            })()),
            _ => None,
        }
    }

    fn on_served(&self, method_id: u32, ok: bool) {
        if method_id == builtin::LIFECYCLE_READY_ID && ok {
            if let Some(peer) = self.peer.upgrade() {
                peer.set_state(PeerState::Ready);
            }
        }
    }

    fn on_goodbye(&self) {
        if let Some(peer) = self.peer.upgrade() {
            peer.goodbye();
        }
    }

    fn in_order(&self, method_id: u32) -> bool {
        // Log records must reach the sink in the order the cell sent them.
        method_id == builtin::LOG_EVENT_ID
    }

    fn explain_death(&self, error: Error) -> Error {
        let Some(peer) = self.peer.upgrade() else { return error };
        let mut message = error.message().to_string();
        if let Some(pidfd) = peer.pidfd.lock().as_ref() {
            // EOF on the doorbell comes as the process closes its files on the way out;
            // its exit status follows within microseconds.
            if !pidfd.wait_gone(Duration::from_millis(100)) {
                message.push_str(" (its process is still running)");
            } else if let Some(reason) = pidfd.exit_reason() {
                message = format!("{message}: {reason}");
            }
        }
        if let Some(tail) = peer.stderr.lock().as_ref() {
            let text = tail.text(Duration::from_millis(100));
            if !text.is_empty() {
                message = format!("{message}; its stderr ended with:\n{text}");
            }
        }
        Error::new(error.status(), message)
    }

    fn on_dead(&self, error: &Error) {
        let Some(peer) = self.peer.upgrade() else {
            return;
        };
        {
            let mut s = peer.state.lock();
            if matches!(*s, PeerState::Dead(_)) {
                return;
            }
            *s = PeerState::Dead(error.clone());
            peer.state_cv.notify_all();
        }
        let expected = peer.said_goodbye.load(std::sync::atomic::Ordering::SeqCst)
            || peer.host_said_goodbye.load(std::sync::atomic::Ordering::SeqCst);
        if expected || error.status() == Status::SessionClosed {
            tracing::debug!(cell = %peer.name, peer_id = peer.id, "cell left: {error}");
        } else {
            tracing::warn!(cell = %peer.name, peer_id = peer.id, "peer lost: {error}");
        }
        let callbacks: Vec<_> = peer.on_death.lock().drain(..).collect();
        for callback in callbacks {
            run_death_callback(&peer.name, callback, error);
        }
    }
}

/// A death callback that panics is logged; the callbacks after it still run, and the
/// link's failure (which fails every pending call) goes on.
fn run_death_callback(cell: &str, callback: DeathCallback, error: &Error) {
    if let Err(panic) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| callback(error))) {
        tracing::error!(cell, "a death callback panicked: {}", crate::error::panic_message(&*panic));
    }
}

/// What a host measured of one peer (see [`Peer::metrics`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerMetrics {
    /// The peer's id.
    pub peer_id: u32,
    /// Its name.
    pub name: String,
    /// Its process id, once known.
    pub pid: Option<u32>,
    /// Its state, as [`PeerState`] names it ("starting", "joined", "ready", "leaving", "dead").
    pub state: &'static str,
    /// The calls the host made to it, by method.
    pub outgoing: Vec<crate::MethodMetrics>,
    /// The calls it made to the host, by method.
    pub incoming: Vec<crate::MethodMetrics>,
    /// Streams open now, either way.
    pub open_streams: u64,
    /// Streams opened so far, either way.
    pub streams_opened: u64,
    /// Its calls refused by an access rule.
    pub refused_calls: u64,
    /// Relaunches of the cell of this name by a supervisor, in all.
    pub restarts: u64,
}

/// The lowercase name of a peer state, as every language spells it.
pub fn peer_state_name(state: &PeerState) -> &'static str {
    match state {
        PeerState::Starting => "starting",
        PeerState::Joined => "joined",
        PeerState::Ready => "ready",
        PeerState::Leaving => "leaving",
        PeerState::Dead(_) => "dead",
    }
}

/// The host's hub: every peer link and the hub's discovery socket. Nothing of it
/// exists outside this process: its memory is memfds and its socket is abstract, so
/// when the process ends, however it ends, the hub is gone.
/// Dropping it closes every link (cells see EOF and exit).
pub struct Hub {
    pub(crate) shared: Arc<HubShared>,
    discovery: Mutex<Option<discovery::DiscoveryServer>>,
}

impl fmt::Debug for Hub {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Hub").field("name", &self.name()).finish()
    }
}

/// Names hubs created without one: `hub-<pid>-<n>`.
static NEXT_HUB: AtomicU32 = AtomicU32::new(0);

impl Hub {
    /// Creates a hub and starts serving its discovery socket
    /// (`@cellshm/<uid>/<name>`). ALREADY_EXISTS if a live hub of this user has its name.
    pub fn create(config: HubConfig) -> Result<Hub> {
        config.validate()?;
        let name = match &config.name {
            Some(name) => name.clone(),
            None => {
                format!("hub-{}-{}", std::process::id(), NEXT_HUB.fetch_add(1, std::sync::atomic::Ordering::Relaxed))
            }
        };
        discovery::validate_hub_name(&name)?;
        // Same-uid processes (cells among them) must not reach our memfds through
        // /proc/<pid>/fd or map_files.
        crate::sys::process::harden();
        let dispatcher = Arc::new(RwLock::new(Dispatcher::new()));
        crate::builtin::introspect::serve_on(&dispatcher)?;
        let shared = Arc::new(HubShared {
            name,
            max_peers: config.max_peers,
            shutdown_grace: config.shutdown_grace,
            geometry: config.geometry(),
            started: SystemTime::now(),
            started_at: Instant::now(),
            dispatcher,
            peers: Mutex::new(PeerTable { live: Vec::new(), epochs: vec![0; config.max_peers as usize] }),
            log_sink: RwLock::new(None),
            discovery: discovery::DiscoveryState::default(),
            restarts: Mutex::new(std::collections::HashMap::new()),
        });
        let server = discovery::DiscoveryServer::start(&shared, config.socket_path.as_deref())?;
        Ok(Hub { shared, discovery: Mutex::new(Some(server)) })
    }

    /// The hub's name: `cellshm list` shows it; `cellshm inspect`, [`crate::Cell::attach`]
    /// and [`crate::snapshot`] take it.
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// [`Peer::metrics`] of every peer not yet reclaimed, by peer id.
    pub fn metrics(&self) -> Vec<PeerMetrics> {
        let mut all: Vec<PeerMetrics> = self.peers().iter().map(Peer::metrics).collect();
        all.sort_by_key(|m| m.peer_id);
        all
    }

    /// Counts a relaunch of the cell named `name` (what [`PeerMetrics::restarts`] shows);
    /// the supervisor calls it for every relaunch.
    pub fn count_restart(&self, name: &str) {
        *self.shared.restarts.lock().entry(name.to_string()).or_insert(0) += 1;
    }

    /// Only the cells named in `cells` may call the host method `method` (unary or
    /// stream, registered already); any other gets PERMISSION_DENIED, counted in its
    /// peer's [`Peer::refused_calls`], and the handler never runs. Names are the names
    /// the host gave its cells (`add_peer`, the supervisor's, the attach name), never
    /// what a cell says. An empty list admits no cell. NOT_FOUND for an unknown method.
    pub fn allow(&self, method: &str, cells: &[&str]) -> Result<()> {
        self.shared.dispatcher.write().allow(method, Some(cells))
    }

    /// Lets processes that attached (see [`PeerIdentity::attached`]) call `method` if they
    /// run as one of `uids`, beside the cells [`Hub::allow`] names: an attached process
    /// chose its name, so name lists never admit it.
    pub fn allow_attached(&self, method: &str, uids: &[u32]) -> Result<()> {
        self.shared.dispatcher.write().allow_attached(method, uids)
    }

    /// Lifts [`Hub::allow`]'s restriction of `method`.
    pub fn allow_everyone(&self, method: &str) -> Result<()> {
        self.shared.dispatcher.write().allow(method, None)
    }

    /// Asks `policy(caller, method_name)` before every call and stream of every host
    /// method (after the method's allow list, if any); false refuses it as
    /// [`Hub::allow`] does. It runs on the serving thread for each call: keep it short.
    /// `None` removes it. Built-in methods (ready, goodbye, log) are not subject to it.
    pub fn set_access_policy(&self, policy: Option<AccessPolicy>) {
        self.shared.dispatcher.write().set_access_policy(policy);
    }

    /// Where cells' log records go. `None` (the default) emits them as `tracing` events
    /// with the fields `cell`, `peer_id` and `target`.
    pub fn set_log_sink(&self, sink: Option<LogSink>) {
        *self.shared.log_sink.write() = sink;
    }

    /// Reserves a peer slot and its doorbell. Spawn the cell with [`PeerTicket::spawn`].
    pub fn add_peer(&self, name: &str, options: PeerOptions) -> Result<PeerTicket> {
        add_peer(&self.shared, name, options)
    }

    /// Lets processes of `uids` inspect the hub (`cellshm inspect`, `cellshm top`,
    /// [`crate::snapshot`]): INSPECT hands out read-only descriptors of every link's
    /// memory, so it is off by default, even for the host's own uid: a cell of that uid
    /// could start a process that nothing ties to it and read the other links. Enable it
    /// for an operator's uid, ideally one no cell runs as (run cells as another uid). The
    /// hub's cells and the processes they started are refused whatever their uid, as far
    /// as the parent chain shows. An empty list turns it off again.
    pub fn enable_inspect(&self, uids: &[u32]) {
        *self.shared.discovery.inspect_uids.lock() = uids.to_vec();
    }

    /// Lets processes the host did not spawn join through the hub's discovery socket
    /// (see [`attach::AttachPolicy`]). Stops when the returned listener is dropped.
    pub fn enable_attach(&self, policy: attach::AttachPolicy) -> Result<attach::AttachListener> {
        attach::enable(&self.shared, policy)
    }

    /// Every peer added and not yet reclaimed, dead ones included.
    pub fn peers(&self) -> Vec<Peer> {
        self.shared.peers.lock().live.iter().map(|inner| Peer { inner: inner.clone() }).collect()
    }
}

impl Drop for Hub {
    /// Stops answering the discovery socket, asks every joined cell to leave (GOODBYE),
    /// gives them up to [`HubConfig::shutdown_grace`] to close their ends, then closes
    /// every link. A cell told goodbye exits 0; only a real host death reads as one.
    fn drop(&mut self) {
        // Stop answering first: nobody attaches to a hub that is going away.
        let server = self.discovery.lock().take();
        drop(server);
        self.shared.discovery.forget_joins();
        let peers: Vec<_> = self.shared.peers.lock().live.drain(..).collect();
        let grace = self.shared.shutdown_grace;
        let until = Instant::now() + grace;
        // A full ring must not hold the hub past its grace: the GOODBYE waits no longer.
        let deadline_ns = crate::sys::clock::deadline_after(grace);
        let mut leaving = Vec::new();
        for peer in &peers {
            let joined = matches!(*peer.state.lock(), PeerState::Joined | PeerState::Ready | PeerState::Leaving);
            if !joined {
                continue;
            }
            peer.host_said_goodbye.store(true, std::sync::atomic::Ordering::SeqCst);
            if peer.session().and_then(|s| s.send_goodbye_until(deadline_ns)).is_ok() {
                leaving.push(peer);
            }
        }
        for peer in leaving {
            let mut state = peer.state.lock();
            while !matches!(*state, PeerState::Dead(_)) {
                if peer.state_cv.wait_until(&mut state, until).timed_out() {
                    break;
                }
            }
        }
        for peer in peers {
            // Taken out of the lock before closing: close joins the link's threads.
            let session = peer.session.lock().take();
            if let Some(session) = session {
                session.close();
            }
        }
    }
}

/// Reserves a peer slot (a free one, or a dead one that can be reclaimed), creates the
/// link's memfds and doorbell, and queues the join record on the doorbell.
fn add_peer(shared: &Arc<HubShared>, name: &str, options: PeerOptions) -> Result<PeerTicket> {
    validate_cell_name(name)?;
    options.validate()?;
    notice_dead_links(shared);
    let mut peers = shared.peers.lock();
    let id = (0..shared.max_peers).find(|&p| reclaim(&mut peers.live, p)).ok_or_else(|| {
        Error::new(
            Status::HubFull,
            format!(
                "all {} peer slots of hub {:?} are in use (a dead cell's slot is reused once its link is closed)",
                shared.max_peers, shared.name
            ),
        )
    })?;
    let epoch = peers.epochs[id as usize].wrapping_add(1).max(1);
    let record = JoinRecord {
        layout_minor: crate::shm::LAYOUT_MINOR,
        peer_id: id,
        epoch,
        host_pid: std::process::id(),
        hub_name: shared.name.clone(),
        geometry: shared.geometry.clone(),
    };
    let (link, handoff) = LinkMemory::create(&record)?;
    let (ours, child_end) = doorbell::pair().map_err(|e| Error::system("creating a doorbell socketpair", e))?;
    // Handed over only when the cell asks for it from where nobody else can read
    // (`host::join`): the record, both memfds and the cell's end of the doorbell.
    let offer = join::JoinOffer {
        record: record.encode(),
        host_memory: handoff.host_memory.into(),
        cell_memory: handoff.cell_memory.into(),
        doorbell: child_end,
    };
    peers.epochs[id as usize] = epoch;
    let inner = Arc::new(PeerInner {
        id,
        epoch,
        name: name.to_string(),
        hub: shared.clone(),
        session: Mutex::new(None),
        state: Mutex::new(PeerState::Starting),
        state_cv: Condvar::new(),
        ready: Mutex::new(None),
        pid: Mutex::new(None),
        uid: Mutex::new(None),
        pidfd: Mutex::new(None),
        stderr: Mutex::new(None),
        on_death: Mutex::new(Vec::new()),
        said_goodbye: std::sync::atomic::AtomicBool::new(false),
        host_said_goodbye: std::sync::atomic::AtomicBool::new(false),
        attached: std::sync::atomic::AtomicBool::new(false),
        link,
    });
    let config = SessionConfig {
        side: Side::Host,
        label: format!("cell {name:?} (peer {id})"),
        region: inner.link.region.clone(),
        doorbell: ours,
        wait: options.wait,
        server_wait: options.server_wait,
        dispatcher: shared.dispatcher.clone(),
        hooks: Box::new(PeerHooks { peer: Arc::downgrade(&inner) }),
        max_inbound_streams: options.max_streams,
        stream_threads: options.stream_threads,
        default_timeout: options.default_timeout.unwrap_or(crate::DEFAULT_CALL_TIMEOUT),
        metrics: true,
        stream_window: options.stream_window,
    };
    // SAFETY: the memfds were created for this link just now, so this is the only
    // host-side session on them.
    let session = unsafe { Session::new(config) }?;
    // On failure the session joined the threads it had started; the slot stays free.
    session.start_servers(options.server_threads)?;
    *inner.session.lock() = Some(session);
    peers.live.push(inner.clone());
    Ok(PeerTicket {
        peer: Peer { inner },
        offer: Some(offer),
        doorbell_fd: options.doorbell_fd,
        append_join_args: options.append_join_args,
        stderr_tail: options.stderr_tail,
    })
}

/// True if `slot` is free, or held by a dead link (which is then removed). A new launch
/// gets new memfds, so nothing of the old link, its process or its threads can touch
/// the new one: the old link's threads need not be joined first, and are not (this runs
/// under the peers lock, possibly under the GIL; they end on their own, the link having
/// failed). Called with the peers lock held.
/// When every slot is taken, asks each link at once (doorbell and pidfd, no wait)
/// whether its cell still lives: a cell that has just died frees its slot for this very
/// call instead of the caller getting HUB_FULL until a link thread notices. Runs
/// outside the peers lock, because noticing a death runs on_death callbacks.
fn notice_dead_links(shared: &HubShared) {
    let sessions: Vec<Arc<Session>> = {
        let peers = shared.peers.lock();
        if peers.live.len() < shared.max_peers as usize {
            return;
        }
        peers.live.iter().filter_map(|p| p.session.lock().clone()).collect()
    };
    for session in sessions {
        session.check_alive();
    }
}

fn reclaim(peers: &mut Vec<Arc<PeerInner>>, slot: u32) -> bool {
    let Some(index) = peers.iter().rposition(|p| p.id == slot) else { return true };
    // A link another thread is failing right now counts as dead: its state turns Dead a
    // moment later (once the death hooks run), and a spawn must not see HUB_FULL meanwhile.
    let failing = || peers[index].session.lock().as_ref().is_some_and(|s| s.has_failed());
    if !matches!(*peers[index].state.lock(), PeerState::Dead(_)) && !failing() {
        return false;
    }
    let old = peers.remove(index);
    if let Some(session) = old.session.lock().take() {
        // Fails it (if not yet) and wakes its threads; joins nothing.
        session.fail(Error::new(Status::SessionClosed, format!("the slot of cell {:?} was reused", old.name)));
    }
    true
}

/// A reserved peer slot: the arguments and doorbell a cell needs to join.
#[derive(Debug)]
pub struct PeerTicket {
    peer: Peer,
    /// What the cell receives once it asks for it.
    offer: Option<join::JoinOffer>,
    doorbell_fd: i32,
    append_join_args: bool,
    stderr_tail: usize,
}

impl PeerTicket {
    /// The peer this ticket is for.
    pub fn peer(&self) -> &Peer {
        &self.peer
    }

    /// The environment a cell needs to join: `CELLSHM_DOORBELL_FD` (where the socket it
    /// asks for its link on is) and `CELLSHM_HUB` (the hub's name, informational).
    pub fn env(&self) -> Vec<(String, String)> {
        vec![
            ("CELLSHM_DOORBELL_FD".into(), self.doorbell_fd.to_string()),
            ("CELLSHM_HUB".into(), self.peer.inner.hub.name.clone()),
        ]
    }

    /// The flags [`PeerOptions::append_join_args`] appends: `--doorbell-fd=N`.
    pub fn args(&self) -> Vec<String> {
        vec![format!("--doorbell-fd={}", self.doorbell_fd)]
    }

    /// Hands the slot to a process that was not spawned for it (the attach path): the
    /// peer, and what to send that process on the connection it made.
    pub(crate) fn into_attached(mut self, pid: u32, uid: u32) -> (Peer, join::JoinOffer) {
        let offer = self.offer.take().expect("a ticket is handed over once");
        *self.peer.inner.pid.lock() = Some(pid);
        *self.peer.inner.uid.lock() = Some(uid);
        self.peer.inner.attached.store(true, std::sync::atomic::Ordering::Relaxed);
        (self.peer.clone(), offer)
    }

    /// The slot epoch this ticket is for.
    pub fn epoch(&self) -> u32 {
        self.peer.inner.epoch
    }

    /// Sets the join environment on `command` (and the flags, if asked), arranges the
    /// doorbell fd in the child, spawns it, and closes the host's copy of the child's
    /// end (so the child's death is seen as EOF at once). The cell's argv is otherwise
    /// left as given. The cell does not depend on the spawning thread living on: it
    /// ends with the host through its doorbell, not a parent-death signal.
    pub fn spawn(mut self, command: &mut Command) -> Result<(Peer, Child)> {
        let offer = self.offer.take().expect("a ticket spawns once");
        // The child gets only the bootstrap socket: it asks for its link on it (§2.2).
        let (bootstrap, child_end) = join::bootstrap_pair()?;
        command.envs(self.env());
        if self.stderr_tail > 0 {
            command.stderr(std::process::Stdio::piped());
        }
        if self.append_join_args {
            command.args(self.args());
        }
        doorbell::place_in_child(command, child_end.as_raw_fd(), self.doorbell_fd);
        let peer = self.peer.clone();
        // Held from before the fork until everything is known about the child: a cell
        // that dies (or asks the hub's socket something) at once is judged with its pid,
        // pidfd and stderr, never without. Lock order: pid, pidfd, stderr, session.
        let mut pid = peer.inner.pid.lock();
        let mut pidfd = peer.inner.pidfd.lock();
        let mut stderr = peer.inner.stderr.lock();
        let spawned = command.spawn();
        drop(child_end);
        match spawned {
            Ok(mut child) => {
                *pid = Some(child.id());
                if let Some(pipe) = child.stderr.take() {
                    match crate::sys::process::StderrTail::collect(pipe, self.stderr_tail) {
                        Ok(tail) => *stderr = Some(tail),
                        Err(e) => tracing::debug!("not collecting the stderr of {:?}: {e}", peer.inner.name),
                    }
                }
                // An unreaped child: its pid cannot have been reused yet.
                match Pidfd::open(child.id()) {
                    Ok(opened) => {
                        // Its end is its death, even if a child it forked keeps the
                        // doorbell open.
                        if let (Ok(watched), Some(session)) = (opened.try_clone(), peer.inner.session.lock().as_ref()) {
                            session.watch_process(watched);
                        }
                        *pidfd = Some(opened);
                    }
                    Err(e) => tracing::debug!("no pidfd for cell {:?}: {e}", peer.inner.name),
                }
                peer.inner.hub.discovery.await_join(join::PendingJoin {
                    name: peer.inner.name.clone(),
                    pid: child.id(),
                    bootstrap,
                    offer,
                });
                Ok((peer.clone(), child))
            }
            Err(e) => {
                drop((pid, pidfd, stderr));
                let err = Error::system(format!("spawning {:?}", command.get_program()), e);
                peer.close_with(err.clone());
                Err(err)
            }
        }
    }
}

/// The host's handle on one cell. Cheap to clone; every clone is the same peer.
/// All methods may be called from any thread.
#[derive(Clone)]
pub struct Peer {
    pub(crate) inner: Arc<PeerInner>,
}

impl fmt::Debug for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Peer")
            .field("id", &self.inner.id)
            .field("name", &self.inner.name)
            .field("state", &self.state())
            .finish()
    }
}

impl Peer {
    /// The peer slot id.
    pub fn id(&self) -> u32 {
        self.inner.id
    }

    /// The name given to [`Hub::add_peer`].
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The cell's process id, once spawned or announced.
    pub fn pid(&self) -> Option<u32> {
        *self.inner.pid.lock()
    }

    /// What the cell sent in `cellshm.Lifecycle.ready`.
    pub fn ready_info(&self) -> Option<Ready> {
        self.inner.ready.lock().clone()
    }

    /// True if the cell said goodbye (it left on purpose), also after it died.
    pub fn said_goodbye(&self) -> bool {
        self.inner.said_goodbye.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// The current state.
    pub fn state(&self) -> PeerState {
        self.inner.state.lock().clone()
    }

    /// The doorbell fd the host uses for this peer (readable when the peer writes).
    pub fn doorbell_fd(&self) -> Option<i32> {
        self.inner.session.lock().as_ref().map(|s| s.doorbell_fd())
    }

    /// Waits until the cell is ready; fails if it dies first or `timeout` passes.
    pub fn wait_ready(&self, timeout: Duration) -> Result<()> {
        let until = Instant::now() + timeout;
        let mut state = self.inner.state.lock();
        loop {
            match &*state {
                PeerState::Ready => return Ok(()),
                PeerState::Dead(e) => {
                    return Err(e.clone().context(format!("cell {:?} died before it was ready", self.inner.name)))
                }
                PeerState::Leaving => {
                    return Err(Error::new(Status::Unavailable, format!("cell {:?} is leaving", self.inner.name)))
                }
                _ => {}
            }
            if self.inner.state_cv.wait_until(&mut state, until).timed_out() {
                return Err(Error::new(
                    Status::DeadlineExceeded,
                    format!(
                        "cell {:?} did not become ready within {} ms (state {:?})",
                        self.inner.name,
                        timeout.as_millis(),
                        *state
                    ),
                ));
            }
        }
    }

    /// Registers `callback` to run once when the peer dies, with the reason. Runs at
    /// once if it is already dead.
    pub fn on_death(&self, callback: impl FnOnce(&Error) + Send + 'static) {
        let state = self.inner.state.lock();
        if let PeerState::Dead(e) = &*state {
            let e = e.clone();
            drop(state);
            run_death_callback(&self.inner.name, Box::new(callback), &e);
        } else {
            self.inner.on_death.lock().push(Box::new(callback));
        }
    }

    /// Pushes a log filter (`"warn,mycell=debug"`) to the cell: records it excludes are
    /// no longer sent at all.
    pub fn set_log_filter(&self, filter: &str, timeout: Duration) -> Result<()> {
        let body = crate::builtin::log::encode_filter(filter)?;
        self.call(builtin::LOG_SET_FILTER, &body, &CallOptions::timeout(timeout)).map(drop)
    }

    /// Largest payload that can be sent to this peer.
    pub fn max_payload(&self) -> usize {
        self.inner.hub.geometry.max_payload() as usize
    }

    /// Asks the cell to leave (GOODBYE), waits up to `grace` for it to close its end,
    /// then closes the link. The process itself is the caller's to reap.
    pub fn shutdown(&self, grace: Duration) {
        let Ok(session) = self.inner.session() else {
            return;
        };
        self.inner.host_said_goodbye.store(true, std::sync::atomic::Ordering::SeqCst);
        if session.send_goodbye().is_ok() {
            let until = Instant::now() + grace;
            let mut state = self.inner.state.lock();
            while !matches!(*state, PeerState::Dead(_)) {
                if self.inner.state_cv.wait_until(&mut state, until).timed_out() {
                    break;
                }
            }
        }
        self.close_with(Error::new(Status::SessionClosed, format!("cell {:?} was shut down", self.inner.name)));
    }

    fn close_with(&self, error: Error) {
        let session = self.inner.session.lock().take();
        if let Some(session) = session {
            session.fail(error);
            session.close();
        }
    }

    /// What the host measured of this link: per method, the calls it made to the cell and
    /// the ones it served for it (calls, errors by status, in flight, latency p50/p99/max),
    /// and its streams. Kept in the host's memory, so a cell cannot skew it.
    pub fn metrics(&self) -> PeerMetrics {
        let link = self.inner.session.lock().as_ref().and_then(|s| s.metrics()).unwrap_or_default();
        let restarts = self.inner.hub.restarts.lock().get(&self.inner.name).copied().unwrap_or(0);
        PeerMetrics {
            peer_id: self.inner.id,
            name: self.inner.name.clone(),
            pid: self.pid(),
            state: peer_state_name(&self.state()),
            outgoing: link.outgoing,
            incoming: link.incoming,
            open_streams: link.open_streams,
            streams_opened: link.streams_opened,
            refused_calls: self.refused_calls(),
            restarts,
        }
    }

    /// Who the host knows this peer to be (what its handlers' [`Call::caller`] says).
    pub fn identity(&self) -> PeerIdentity {
        self.inner.identity()
    }

    /// Its calls and streams refused by an access rule so far ([`Hub::allow`],
    /// [`Hub::set_access_policy`]): counted by the host, not by the cell.
    pub fn refused_calls(&self) -> u64 {
        self.inner.session.lock().as_ref().map_or(0, |s| s.refused_calls())
    }

    /// The counters the cell keeps in its control block. They are informational: the
    /// cell writes them and the host does not trust them for anything.
    pub fn cell_counters(&self) -> Option<Counters> {
        self.inner.session.lock().as_ref().map(|s| s.peer_counters())
    }

    /// Slots of the cell's pool the host currently holds.
    #[doc(hidden)]
    pub fn held_slots(&self) -> Option<u32> {
        self.inner.session.lock().as_ref().map(|s| s.held_slots())
    }

    /// Free slots per class of the host's pool towards this peer.
    #[doc(hidden)]
    pub fn free_slots(&self) -> Result<Vec<usize>> {
        self.inner.session()?.free_slots()
    }
}

/// A spawned cell's process, for hosts that manage it through the library (the C and
/// Python APIs): wait for it with a timeout, kill it, or stop it gracefully. The exit
/// code stays available after it was reaped. Thread-safe.
#[derive(Debug)]
pub struct CellProcess {
    state: Mutex<ProcessState>,
    /// Readable once the process ended: waits sleep on it instead of polling.
    pidfd: Option<Pidfd>,
}

#[derive(Debug)]
enum ProcessState {
    Running(Child),
    /// Reaped.
    Exited(std::process::ExitStatus),
}

fn exit_code(status: std::process::ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    status.code().unwrap_or_else(|| 128 + status.signal().unwrap_or(0))
}

impl CellProcess {
    /// Takes over `child`.
    pub fn new(child: Child) -> CellProcess {
        // An unreaped child: its pid cannot have been reused yet.
        let pidfd = Pidfd::open(child.id()).ok();
        CellProcess { state: Mutex::new(ProcessState::Running(child)), pidfd }
    }

    /// The process id.
    pub fn id(&self) -> Option<u32> {
        match &*self.state.lock() {
            ProcessState::Running(child) => Some(child.id()),
            ProcessState::Exited(_) => None,
        }
    }

    /// The exit status if the process has exited (reaping it), without waiting.
    pub fn try_exit_status(&self) -> Result<Option<std::process::ExitStatus>> {
        let mut state = self.state.lock();
        if let ProcessState::Running(child) = &mut *state {
            match child.try_wait().map_err(|e| Error::system("waiting for the cell", e))? {
                Some(status) => *state = ProcessState::Exited(status),
                None => return Ok(None),
            }
        }
        match *state {
            ProcessState::Exited(status) => Ok(Some(status)),
            ProcessState::Running(_) => Ok(None),
        }
    }

    /// The exit code (128 + signal when a signal ended it) if the process has exited.
    pub fn try_exit_code(&self) -> Result<Option<i32>> {
        Ok(self.try_exit_status()?.map(exit_code))
    }

    /// Sends `signal` to the process if it is still running.
    pub fn signal(&self, signal: i32) -> Result<()> {
        if let ProcessState::Running(child) = &*self.state.lock() {
            // SAFETY: kill takes no pointers; the pid is our unreaped child, so it cannot
            // have been reused by another process.
            if unsafe { libc::kill(child.id() as libc::pid_t, signal) } != 0 {
                return Err(Error::system("signalling the cell", std::io::Error::last_os_error()));
            }
        }
        Ok(())
    }

    /// Waits up to `timeout` for the process to exit; its exit code, or
    /// DEADLINE_EXCEEDED if it is still running.
    pub fn wait_exit(&self, timeout: Duration) -> Result<i32> {
        let until = Instant::now() + timeout;
        loop {
            if let Some(code) = self.try_exit_code()? {
                return Ok(code);
            }
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(Error::new(
                    Status::DeadlineExceeded,
                    format!("the cell is still running after {} ms", timeout.as_millis()),
                ));
            }
            // One sleep until it ends (or the time is up), not a poll every few ms.
            match &self.pidfd {
                Some(pidfd) => {
                    pidfd.wait_gone(left);
                }
                None => std::thread::sleep(left.min(Duration::from_millis(2))),
            }
        }
    }

    /// Sends SIGKILL (a process that already exited is left alone).
    pub fn kill(&self) -> Result<()> {
        if let ProcessState::Running(child) = &mut *self.state.lock() {
            child.kill().map_err(|e| Error::system("killing the cell", e))?;
        }
        Ok(())
    }

    /// Stops the cell: GOODBYE through `peer` and up to `grace` for the process to exit,
    /// then SIGTERM and `grace` again, then SIGKILL; reaps it and returns its exit code.
    pub fn shutdown(&self, peer: &Peer, grace: Duration) -> i32 {
        let started = Instant::now();
        peer.shutdown(grace);
        if let Ok(code) = self.wait_exit(grace.saturating_sub(started.elapsed())) {
            return code;
        }
        let _ = self.signal(libc::SIGTERM);
        if let Ok(code) = self.wait_exit(grace) {
            return code;
        }
        let _ = self.kill();
        self.wait_exit(Duration::from_secs(5)).unwrap_or(-1)
    }

    /// Lets go of the process without waiting: a thread reaps it once it exits, so no
    /// zombie is left behind.
    pub fn detach(self) {
        if let ProcessState::Running(mut child) = self.state.into_inner() {
            if !matches!(child.try_wait(), Ok(Some(_))) {
                let _ = std::thread::Builder::new().name("cellshm-reaper".into()).spawn(move || child.wait());
            }
        }
    }
}
