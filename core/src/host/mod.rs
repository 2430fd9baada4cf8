//! The host side: create a hub, add peers, spawn cells, call them.
//!
//! Which file holds what:
//! - this file: the [`Hub`] (its shared state, host methods, access rules, peers).
//! - `options.rs`: [`PeerOptions`] and the checks of names and wait strategies.
//! - `slots.rs`: peer slots: reserving one (a free one, or a dead one reclaimed), making
//!   the link's memory and doorbell.
//! - `spawn.rs`: [`PeerTicket`] (spawning a cell into a reserved slot) and
//!   [`CellProcess`] (its process: exit status, signals, graceful stop).
//! - `peer.rs`: [`Peer`], the host's handle on one cell, and its state.
//! - `hooks.rs`: what the link's session asks of the host: HELLO, ready, goodbye, logs,
//!   and death, which ends every call to the cell and runs the death callbacks.
//! - `join.rs`, `attach.rs`, `discovery.rs`, `inspect.rs`: how a cell gets its link (spawned
//!   or attached), the hub's socket and what it answers, read-only views for tools.
//! - `supervisor/`: keeping cells alive under stable names.
//!
//! What happens when a cell dies: its doorbell reaches EOF (or its pidfd fires) in the
//! session's receive path, which calls `Session::fail` once (`runtime/session/fail.rs`).
//! That asks `hooks.rs` first (`explain_death`: the exit status and the end of its
//! stderr join the error), then `on_dead`: the peer's record turns Dead and its
//! `on_death` callbacks run; only then is the failure published and every call, stream
//! and waiter of the link ended with PEER_DEAD. The slot is reclaimed by the next
//! `add_peer` (`slots.rs`) once the peer is dead, and a supervisor hears of it as a notice
//! its policy decides on (`supervisor/policy.rs`).

pub mod attach;
pub mod discovery;
pub mod endpoints;
mod hooks;
pub mod inspect;
mod join;
mod options;
mod peer;
mod peer_async;
pub mod relay;
mod slots;
mod spawn;
pub mod supervisor;
pub(crate) mod topics;

pub use endpoints::{Endpoint, EndpointListing};
use hooks::{run_death_callback, PeerHooks};
pub use hooks::{LogRecord, LogSink};
pub use options::{
    validate_cell_name, PeerOptions, DEFAULT_DOORBELL_FD, MAX_SERVER_THREADS, MAX_SPIN, MAX_STDERR_TAIL,
};
use peer::DeathCallback;
pub use peer::{peer_state_name, Peer, PeerMetrics, PeerState};
pub(crate) use peer::{PeerInner, PeerRecord};
pub use peer_async::{ReadyFuture, ShutdownFuture};
use slots::add_peer;
pub use spawn::{CellProcess, PeerTicket};

use std::fmt;
use std::os::fd::AsRawFd;
use std::process::{Child, Command};
use std::sync::atomic::AtomicU32;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant, SystemTime};

use crate::runtime::sync::{Condvar, Mutex, RwLock};

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
    /// Network endpoints beside the hub (a gRPC gateway, remote peers), for INFO.
    pub(crate) endpoints: endpoints::Endpoints,
    /// Its topics, and who publishes each.
    pub(crate) topics: topics::Topics,
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

/// The host's hub: every peer link and the hub's discovery socket. Nothing of it
/// exists outside this process: its memory is memfds and its socket is abstract, so
/// when the process ends, however it ends, the hub is gone.
/// Dropping it closes every link (cells see EOF and exit).
///
/// ```
/// use cellshm::{CallOptions, Cell, Hub, HubConfig, LinkEnd, PeerOptions, Registry};
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
/// let hub = Hub::create(HubConfig::default())?;
/// // The host serves methods to its cells too.
/// hub.method("Host.time", |call| call.reply(b"noon"))?;
/// let ticket = hub.add_peer("echo", PeerOptions::default())?;
/// let (peer, mut child) = ticket.spawn(&mut std::process::Command::new(std::env::current_exe().unwrap()))?;
/// peer.wait_ready(Duration::from_secs(10))?;
/// let reply = peer.call("Echo.echo", b"hello", &CallOptions::timeout(Duration::from_secs(5)))?;
/// assert_eq!(reply.bytes(), b"hello");
/// peer.shutdown(Duration::from_secs(5));
/// assert!(child.wait().unwrap().success());
/// # Ok::<(), cellshm::Error>(())
/// ```
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
            endpoints: endpoints::Endpoints::default(),
            topics: topics::Topics::default(),
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
    /// stream); any other gets PERMISSION_DENIED, counted in its peer's
    /// [`Peer::refused_calls`], and the handler never runs. Names are the names the host
    /// gave its cells (`add_peer`, the supervisor's, the attach name), never what a cell
    /// says. An empty list admits no cell. The rule is the method's by name, registered
    /// yet or not: a gRPC gateway (`cellshm-grpc`) checks it too, with
    /// [`HubView::check_access`], for remote callers of a method a cell serves
    /// ([`PeerIdentity::remote`], named by their certificate or token).
    pub fn allow(&self, method: &str, cells: &[&str]) -> Result<()> {
        self.shared.dispatcher.write().allow(method, Some(cells))
    }

    /// Lets the processes of `uids` that attached (a gRPC gateway in a process of its own:
    /// `cellshm-grpc serve --hub NAME`) reach this hub's ready cells through the host
    /// with the `cellshm.Relay.*` methods (see [`relay`]); the host checks its access
    /// rules for each remote caller the relay names. Spawned cells are never admitted.
    pub fn enable_relay(&self, uids: &[u32]) -> Result<()> {
        relay::enable(self, uids)
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
        self.shared.view().peers()
    }

    /// A handle on this hub's peers that owns what it needs, for a server that routes
    /// to them from its own tasks (a gRPC gateway). It keeps the hub's records, not the
    /// hub: once the hub is dropped, it lists no peers.
    pub fn view(&self) -> HubView {
        self.shared.view()
    }

    /// Lists `endpoint` (a gRPC gateway in front of this hub, a remote server it serves to
    /// its cells) in the hub's INFO, so `cellshm list` shows it with its counts, while a
    /// clone of it lives.
    pub fn announce(&self, endpoint: &Endpoint) {
        self.shared.endpoints.announce(endpoint);
    }
}

/// See [`Hub::view`].
#[derive(Clone)]
pub struct HubView {
    shared: Arc<HubShared>,
}

impl fmt::Debug for HubView {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HubView").field("name", &self.shared.name).finish()
    }
}

impl HubView {
    /// Every peer added and not yet reclaimed, dead ones included (none once the hub is
    /// dropped).
    pub fn peers(&self) -> Vec<Peer> {
        self.shared.peers.lock().live.iter().map(|inner| Peer { inner: inner.clone() }).collect()
    }

    /// The hub's name.
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// See [`Hub::announce`].
    pub fn announce(&self, endpoint: &Endpoint) {
        self.shared.endpoints.announce(endpoint);
    }

    /// Whether `caller` (None: unauthenticated) may call `method` by the host's access
    /// rules ([`Hub::allow`], [`Hub::set_access_policy`]), whoever serves it: what a
    /// gateway asks before it routes a remote call. PERMISSION_DENIED as for a cell.
    pub fn check_access(&self, method: &str, caller: Option<&PeerIdentity>) -> Result<()> {
        self.shared.dispatcher.read().check(method, caller)
    }
}

impl HubShared {
    fn view(self: &Arc<Self>) -> HubView {
        HubView { shared: self.clone() }
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
            let joined = matches!(peer.state(), PeerState::Joined | PeerState::Ready | PeerState::Leaving);
            if !joined {
                continue;
            }
            peer.host_said_goodbye.store(true, std::sync::atomic::Ordering::SeqCst);
            if peer.session().and_then(|s| s.send_goodbye_until(deadline_ns)).is_ok() {
                leaving.push(peer);
            }
        }
        for peer in leaving {
            peer.wait_until(until, |r| matches!(r.state, PeerState::Dead(_)));
        }
        for peer in peers {
            // Taken out of the lock before closing: close joins the link's threads.
            let session = peer.record.lock().session.take();
            if let Some(session) = session {
                session.close();
            }
        }
    }
}
