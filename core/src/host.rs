//! The host side: create a hub, add peers, spawn cells, call them.

pub mod attach;
pub mod supervisor;

use std::fmt;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;
use std::process::{Child, Command};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex, RwLock};

use crate::doorbell;
use crate::error::{Error, Result};
use crate::frame::{
    self, builtin, ControlKind, Hello, Ready, Status, PROTOCOL_VERSION_MAJOR, PROTOCOL_VERSION_MINOR, ROLE_CELL,
    ROLE_HOST,
};
use crate::hub::{HostHubFile, HubConfig, PeerSlotState, Side};
use crate::session::{
    copy_of, Call, CallOptions, Completion, Counters, Dispatcher, Hooks, PendingCall, Response, Session, SessionConfig,
    Stream, StreamCall, WaitStrategy,
};

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
    /// The fd number the doorbell gets in the child.
    pub doorbell_fd: i32,
}

impl Default for PeerOptions {
    fn default() -> Self {
        PeerOptions {
            wait: WaitStrategy::default(),
            server_threads: 2,
            server_wait: WaitStrategy::Block,
            doorbell_fd: DEFAULT_DOORBELL_FD,
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

struct PeerInner {
    id: u32,
    /// The slot's epoch for this launch.
    epoch: u32,
    name: String,
    hub: Arc<HubShared>,
    session: Mutex<Option<Arc<Session>>>,
    state: Mutex<PeerState>,
    state_cv: Condvar,
    ready: Mutex<Option<Ready>>,
    pid: Mutex<Option<u32>>,
    on_death: Mutex<Vec<DeathCallback>>,
    /// The cell said goodbye (kept after it dies, unlike the Leaving state).
    said_goodbye: std::sync::atomic::AtomicBool,
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

    fn session(&self) -> Result<Arc<Session>> {
        self.session
            .lock()
            .clone()
            .ok_or_else(|| Error::new(Status::SessionClosed, format!("peer {} is closed", self.name)))
    }
}

struct HubShared {
    file: HostHubFile,
    dispatcher: Arc<RwLock<Dispatcher>>,
    peers: Mutex<Vec<Arc<PeerInner>>>,
    log_sink: RwLock<Option<LogSink>>,
}

/// A log record a cell sent with `cellshm.Log.event`.
#[derive(Debug)]
pub struct LogRecord<'a> {
    /// The cell's name (as given to [`Hub::add_peer`]).
    pub cell: &'a str,
    /// The cell's peer id.
    pub peer_id: u32,
    /// One of [`frame::log_level`].
    pub level: u32,
    /// The logger or module the record comes from (may be empty).
    pub target: &'a str,
    /// The message.
    pub message: &'a str,
}

/// Receives the log records of every cell of a hub (see [`Hub::set_log_sink`]).
pub type LogSink = Arc<dyn Fn(&LogRecord<'_>) + Send + Sync>;

fn log_to_tracing(r: &LogRecord<'_>) {
    let (cell, peer_id, target, message) = (r.cell, r.peer_id, r.target, r.message);
    match r.level {
        frame::log_level::ERROR => tracing::error!(cell, peer_id, target, "{message}"),
        frame::log_level::WARN => tracing::warn!(cell, peer_id, target, "{message}"),
        frame::log_level::DEBUG => tracing::debug!(cell, peer_id, target, "{message}"),
        frame::log_level::TRACE => tracing::trace!(cell, peer_id, target, "{message}"),
        _ => tracing::info!(cell, peer_id, target, "{message}"),
    }
}

/// Hooks of a host-side session: HELLO, the lifecycle built-ins, death.
struct PeerHooks {
    peer: Weak<PeerInner>,
}

impl Hooks for PeerHooks {
    fn on_hello(&self, hello: Hello) -> Result<Hello> {
        let peer = self.peer.upgrade().ok_or_else(|| Error::new(Status::SessionClosed, "peer dropped"))?;
        if hello.major != PROTOCOL_VERSION_MAJOR {
            return Err(Error::new(
                Status::FailedPrecondition,
                format!(
                    "cell {} speaks protocol {}.{}, the host {PROTOCOL_VERSION_MAJOR}.x",
                    peer.name, hello.major, hello.minor
                ),
            ));
        }
        if hello.epoch != peer.epoch & 0x00ff_ffff {
            return Err(Error::new(
                Status::FailedPrecondition,
                format!("HELLO for epoch {} of peer slot {}, which is at epoch {}", hello.epoch, peer.id, peer.epoch),
            ));
        }
        if hello.role != ROLE_CELL || hello.peer_id != peer.id {
            return Err(Error::new(
                Status::ProtocolError,
                format!("HELLO for peer {} with role {} on the link of peer {}", hello.peer_id, hello.role, peer.id),
            ));
        }
        peer.hub.file.set_peer_state(peer.id, PeerSlotState::Active);
        peer.set_state(PeerState::Joined);
        Ok(Hello {
            major: PROTOCOL_VERSION_MAJOR,
            minor: PROTOCOL_VERSION_MINOR,
            role: ROLE_HOST,
            epoch: peer.epoch & 0x00ff_ffff,
            peer_id: peer.id,
            max_payload: peer.hub.file.geometry().max_payload(),
        })
    }

    fn builtin(&self, method_id: u32, payload: &[u8]) -> Option<Result<Vec<u8>>> {
        let peer = self.peer.upgrade()?;
        match method_id {
            builtin::LIFECYCLE_READY_ID => Some((|| {
                let ready = Ready::decode(payload)
                    .map_err(|m| Error::new(Status::InvalidArgument, format!("bad ready message: {m}")))?;
                if ready.peer_id != peer.id {
                    return Err(Error::new(
                        Status::InvalidArgument,
                        format!("ready for peer {} on the link of peer {}", ready.peer_id, peer.id),
                    ));
                }
                tracing::info!(cell = %peer.name, peer_id = peer.id, pid = ready.pid, version = %ready.version, "cell ready");
                *peer.pid.lock() = Some(ready.pid);
                *peer.ready.lock() = Some(ready);
                peer.set_state(PeerState::Ready);
                Ok(Vec::new())
            })()),
            builtin::LIFECYCLE_GOODBYE_ID => {
                peer.goodbye();
                Some(Ok(Vec::new()))
            }
            builtin::LOG_EVENT_ID => Some((|| {
                let event = frame::LogEvent::decode(payload)
                    .map_err(|m| Error::new(Status::InvalidArgument, format!("bad log event: {m}")))?;
                let record = LogRecord {
                    cell: &peer.name,
                    peer_id: peer.id,
                    level: event.level,
                    target: &event.target,
                    message: &event.message,
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

    fn on_goodbye(&self) {
        if let Some(peer) = self.peer.upgrade() {
            peer.goodbye();
        }
    }

    fn in_order(&self, method_id: u32) -> bool {
        // Log records must reach the sink in the order the cell sent them.
        method_id == builtin::LOG_EVENT_ID
    }

    fn on_dead(&self, error: &Error) {
        let Some(peer) = self.peer.upgrade() else {
            return;
        };
        peer.hub.file.set_peer_state(peer.id, PeerSlotState::Dead);
        {
            let mut s = peer.state.lock();
            if matches!(*s, PeerState::Dead(_)) {
                return;
            }
            *s = PeerState::Dead(error.clone());
            peer.state_cv.notify_all();
        }
        if error.status() != Status::SessionClosed {
            tracing::warn!(cell = %peer.name, peer_id = peer.id, "peer lost: {error}");
        }
        let callbacks: Vec<_> = peer.on_death.lock().drain(..).collect();
        for cb in callbacks {
            cb(error);
        }
    }
}

/// The host's hub: owns the shared-memory file and every peer link.
/// Dropping it closes every link (cells see EOF and exit) and removes the file.
pub struct Hub {
    shared: Arc<HubShared>,
}

impl fmt::Debug for Hub {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Hub").field("path", &self.path()).finish()
    }
}

impl Hub {
    /// Creates the hub file.
    pub fn create(config: HubConfig) -> Result<Hub> {
        let file = HostHubFile::create(&config)?;
        Ok(Hub {
            shared: Arc::new(HubShared {
                file,
                dispatcher: Arc::new(RwLock::new(Dispatcher::new())),
                peers: Mutex::new(Vec::new()),
                log_sink: RwLock::new(None),
            }),
        })
    }

    /// The hub file's path.
    pub fn path(&self) -> &Path {
        self.shared.file.path()
    }

    /// Serves `"Service.method"` to every cell of this hub.
    pub fn method<F>(&self, name: &str, handler: F) -> Result<()>
    where
        F: Fn(&mut Call<'_>) -> Result<()> + Send + Sync + 'static,
    {
        self.shared.dispatcher.write().register(name, handler)
    }

    /// Serves the stream method `"Service.method"` to every cell of this hub: each
    /// stream a cell opens runs `handler` on its own thread (see [`StreamCall`]).
    pub fn stream_method<F>(&self, name: &str, handler: F) -> Result<()>
    where
        F: Fn(&mut StreamCall) -> Result<()> + Send + Sync + 'static,
    {
        self.shared.dispatcher.write().register_stream(name, handler)
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

    /// Lets processes the host did not spawn join through a Unix socket next to the hub
    /// file (see [`attach::AttachPolicy`]). Stops when the returned listener is dropped.
    pub fn enable_attach(&self, policy: attach::AttachPolicy) -> Result<attach::AttachListener> {
        attach::listen(self.shared.clone(), policy)
    }

    /// Every peer added so far, dead ones included.
    pub fn peers(&self) -> Vec<Peer> {
        self.shared.peers.lock().iter().map(|inner| Peer { inner: inner.clone() }).collect()
    }
}

impl Drop for Hub {
    fn drop(&mut self) {
        let peers: Vec<_> = self.shared.peers.lock().drain(..).collect();
        for peer in peers {
            if let Some(session) = peer.session.lock().take() {
                session.close();
            }
        }
    }
}

/// Reserves a peer slot (a Free one, or a Dead one that can be reclaimed) and its doorbell.
fn add_peer(shared: &Arc<HubShared>, name: &str, options: PeerOptions) -> Result<PeerTicket> {
    if options.doorbell_fd < 3 {
        return Err(Error::new(
            Status::InvalidArgument,
            format!("doorbell fd {} would replace stdin/stdout/stderr", options.doorbell_fd),
        ));
    }
    let file = &shared.file;
    let mut peers = shared.peers.lock();
    let id = (0..file.geometry().max_peers)
        .find(|&p| match file.peer_state(p) {
            PeerSlotState::Free => true,
            PeerSlotState::Dead => reclaim(&mut peers, p),
            _ => false,
        })
        .ok_or_else(|| {
            Error::new(
                Status::HubFull,
                format!(
                    "all {} peer slots of {} are in use (a dead cell's slot is reused once its process is gone)",
                    file.geometry().max_peers,
                    file.path().display()
                ),
            )
        })?;
    let (ours, child_end) = doorbell::pair().map_err(|e| Error::system("creating a doorbell socketpair", e))?;
    let epoch = file.reserve_peer(id, name);
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
        on_death: Mutex::new(Vec::new()),
        said_goodbye: std::sync::atomic::AtomicBool::new(false),
    });
    let config = SessionConfig {
        side: Side::Host,
        label: format!("cell {name:?} (peer {id})"),
        region: file.region(id),
        doorbell: ours,
        wait: options.wait,
        server_wait: options.server_wait,
        dispatcher: shared.dispatcher.clone(),
        hooks: Box::new(PeerHooks { peer: Arc::downgrade(&inner) }),
    };
    // SAFETY: the slot was Free and is now reserved by us under the peers lock, so this
    // is the only host-side session on this region.
    let session = unsafe { Session::new(config) }.inspect_err(|_| file.set_peer_state(id, PeerSlotState::Free))?;
    session.start_servers(options.server_threads)?;
    *inner.session.lock() = Some(session);
    peers.push(inner.clone());
    Ok(PeerTicket { peer: Peer { inner }, child_end: Some(child_end), doorbell_fd: options.doorbell_fd })
}

/// Makes a Dead slot reusable: only once its process is gone (it can no longer write
/// into the region) and every thread of its old link has been joined (none can touch
/// the region either). Called with the peers lock held.
fn reclaim(peers: &mut Vec<Arc<PeerInner>>, slot: u32) -> bool {
    let Some(index) = peers.iter().rposition(|p| p.id == slot) else { return true };
    let old = &peers[index];
    if !matches!(*old.state.lock(), PeerState::Dead(_)) {
        return false;
    }
    if let Some(pid) = *old.pid.lock() {
        if !process_gone(pid) {
            return false;
        }
    }
    let session = old.session.lock().clone();
    if let Some(session) = session {
        if !session.close() {
            // Called from one of that link's own threads (a death callback): try later.
            return false;
        }
    }
    peers.remove(index);
    true
}

/// True once `pid` has exited (gone, or a zombie waiting to be reaped: either way its
/// memory, and so its mapping of the hub, is gone).
fn process_gone(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => {
            stat.rsplit(')').next().is_some_and(|rest| matches!(rest.trim_start().chars().next(), Some('Z' | 'X')))
        }
    }
}

/// A reserved peer slot: the arguments and doorbell a cell needs to join.
#[derive(Debug)]
pub struct PeerTicket {
    peer: Peer,
    child_end: Option<OwnedFd>,
    doorbell_fd: i32,
}

impl PeerTicket {
    /// The peer this ticket is for.
    pub fn peer(&self) -> &Peer {
        &self.peer
    }

    /// The arguments appended to the cell's command line.
    pub fn args(&self) -> Vec<String> {
        vec![
            format!("--hub-path={}", self.peer.inner.hub.file.path().display()),
            format!("--peer-id={}", self.peer.inner.id),
            format!("--doorbell-fd={}", self.doorbell_fd),
            format!("--peer-epoch={}", self.peer.inner.epoch),
        ]
    }

    /// Hands the slot to a process that was not spawned for it (the attach path): the
    /// peer, and the child's end of the doorbell to pass to that process.
    pub(crate) fn into_attached(mut self, pid: u32) -> (Peer, OwnedFd) {
        let child_end = self.child_end.take().expect("a ticket is handed over once");
        *self.peer.inner.pid.lock() = Some(pid);
        self.peer.inner.hub.file.set_peer_pid(self.peer.inner.id, pid);
        (self.peer.clone(), child_end)
    }

    /// The slot epoch this ticket is for.
    pub fn epoch(&self) -> u32 {
        self.peer.inner.epoch
    }

    /// Appends the arguments to `command`, arranges the doorbell fd in the child, spawns
    /// it, and closes the host's copy of the child's end (so the child's death is seen
    /// as EOF at once).
    pub fn spawn(mut self, command: &mut Command) -> Result<(Peer, Child)> {
        let child_end = self.child_end.take().expect("a ticket spawns once");
        command.args(self.args());
        doorbell::place_in_child(command, child_end.as_raw_fd(), self.doorbell_fd);
        let spawned = command.spawn();
        drop(child_end);
        let peer = self.peer.clone();
        match spawned {
            Ok(child) => {
                *peer.inner.pid.lock() = Some(child.id());
                peer.inner.hub.file.set_peer_pid(peer.inner.id, child.id());
                Ok((peer, child))
            }
            Err(e) => {
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
    inner: Arc<PeerInner>,
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
            callback(&e);
        } else {
            self.inner.on_death.lock().push(Box::new(callback));
        }
    }

    /// Calls `"Service.method"` and waits for the response.
    pub fn call(&self, method: &str, payload: &[u8], options: &CallOptions) -> Result<Response> {
        self.call_with(method, payload.len(), copy_of(payload), options)
    }

    /// Calls a method by id.
    pub fn call_id(&self, method_id: u32, payload: &[u8], options: &CallOptions) -> Result<Response> {
        self.inner.session()?.call_with(method_id, None, payload.len(), copy_of(payload), options)
    }

    /// Calls with a request written in place: `fill` gets a buffer of `max_len` bytes
    /// (in shared memory when larger than 16) and returns how many bytes it wrote.
    pub fn call_with(
        &self,
        method: &str,
        max_len: usize,
        fill: impl FnOnce(&mut [u8]) -> usize,
        options: &CallOptions,
    ) -> Result<Response> {
        self.inner.session()?.call_with(frame::method_id(method), Some(method), max_len, fill, options)
    }

    /// Opens a stream to the cell's stream method `"Service.method"`, with `request` as
    /// its opening message. Read items with [`Stream::recv`] (or iterate), send with
    /// [`Stream::send`]; the deadline in `options` covers the whole stream.
    pub fn open_stream(&self, method: &str, request: &[u8], options: &CallOptions) -> Result<Stream> {
        self.inner.session()?.open_stream(frame::method_id(method), Some(method), request, options)
    }

    /// Pushes a log filter (`"warn,mycell=debug"`) to the cell: records it excludes are
    /// no longer sent at all.
    pub fn set_log_filter(&self, filter: &str, timeout: Duration) -> Result<()> {
        crate::log::LogFilter::parse(filter)?;
        let body = frame::BodyWriter::default().str(filter).finish();
        self.call(builtin::LOG_SET_FILTER, &body, &CallOptions::timeout(timeout)).map(drop)
    }

    /// The methods the cell serves, as (name, id), sorted by name
    /// (`cellshm.Introspect.methods`).
    pub fn methods(&self, timeout: Duration) -> Result<Vec<(String, u32)>> {
        let response = self.call(builtin::INTROSPECT_METHODS, &[], &CallOptions::timeout(timeout))?;
        frame::decode_methods(response.bytes()).map_err(|m| Error::new(Status::ProtocolError, m))
    }

    /// Sends PING and waits for PONG: proves the cell's receive path is alive and
    /// returns the round-trip time.
    pub fn ping(&self, timeout: Duration) -> Result<Duration> {
        let started = Instant::now();
        self.inner.session()?.control_call(ControlKind::Ping, &[], timeout)?;
        Ok(started.elapsed())
    }

    /// Starts a call without blocking: `on_complete` runs on a receiving thread once the
    /// result is in; collect it with [`PendingCall::try_take`]. For event loops.
    pub fn call_start(
        &self,
        method: &str,
        payload: &[u8],
        options: &CallOptions,
        on_complete: Completion,
    ) -> Result<PendingCall> {
        self.inner.session()?.call_start(
            frame::method_id(method),
            Some(method),
            payload.len(),
            copy_of(payload),
            options,
            on_complete,
        )
    }

    /// Sends a notification (no response).
    pub fn notify(&self, method: &str, payload: &[u8], options: &CallOptions) -> Result<()> {
        self.inner.session()?.notify_with(frame::method_id(method), payload.len(), copy_of(payload), options)
    }

    /// Largest payload that can be sent to this peer.
    pub fn max_payload(&self) -> usize {
        self.inner.hub.file.geometry().max_payload() as usize
    }

    /// Asks the cell to leave (GOODBYE), waits up to `grace` for it to close its end,
    /// then closes the link. The process itself is the caller's to reap.
    pub fn shutdown(&self, grace: Duration) {
        let Ok(session) = self.inner.session() else {
            return;
        };
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
        CellProcess { state: Mutex::new(ProcessState::Running(child)) }
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
            if Instant::now() >= until {
                return Err(Error::new(
                    Status::DeadlineExceeded,
                    format!("the cell is still running after {} ms", timeout.as_millis()),
                ));
            }
            std::thread::sleep(Duration::from_millis(2));
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
