//! The host's handle on one cell and what it knows of it.

use super::*;

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

pub(super) type DeathCallback = Box<dyn FnOnce(&Error) + Send>;

/// What the host knows of one peer that changes over its life, under one lock.
///
/// Lock order: the hub's peers table, then a peer's record; nothing else is taken under a
/// record. Nothing that can call back into the host runs under it either: a session is
/// cloned out before it is used or failed, death callbacks run after it is released, and
/// waits on the cell's process or stderr use copies taken out of it.
pub(crate) struct PeerRecord {
    /// The link, until it is closed or its slot reused.
    pub(super) session: Option<Arc<Session>>,
    pub(super) state: PeerState,
    /// What the cell sent in `cellshm.Lifecycle.ready`.
    pub(super) ready: Option<Ready>,
    /// From fork or SO_PEERCRED, never from what the cell says.
    pub(super) pid: Option<u32>,
    /// From SO_PEERCRED (attached), or read from `/proc` once the cell calls (spawned: by
    /// then it has exec'd, so a uid the spawn changed is the one it runs as).
    pub(super) uid: Option<u32>,
    /// For a cell we spawned: how it ended.
    pub(super) pidfd: Option<Pidfd>,
    /// The end of its stderr, if asked for (`PeerOptions::stderr_tail`).
    pub(super) stderr: Option<Arc<crate::sys::process::StderrTail>>,
    pub(super) on_death: Vec<DeathCallback>,
    /// Tasks awaiting a state change ([`Peer::wait_ready_async`]), by future.
    pub(super) state_wakers: Vec<(u64, std::task::Waker)>,
}

impl PeerRecord {
    /// A peer just added: starting, nothing known yet.
    pub(super) fn new() -> PeerRecord {
        PeerRecord {
            session: None,
            state: PeerState::Starting,
            ready: None,
            pid: None,
            uid: None,
            pidfd: None,
            stderr: None,
            on_death: Vec::new(),
            state_wakers: Vec::new(),
        }
    }

    /// Wakes the tasks awaiting a state change; called with the state changed.
    pub(super) fn state_changed(&mut self) {
        for (_, waker) in self.state_wakers.drain(..) {
            waker.wake();
        }
    }
}

pub(crate) struct PeerInner {
    pub(super) id: u32,
    /// The slot's epoch for this launch.
    pub(super) epoch: u32,
    pub(super) name: String,
    pub(super) hub: Arc<HubShared>,
    /// Both memfds of the link (the session maps them too; kept for `inspect`).
    pub(super) link: LinkMemory,
    pub(super) record: Mutex<PeerRecord>,
    /// Notified under the record whenever its state changes.
    pub(super) changed: Condvar,
    /// The cell said goodbye (kept after it dies, unlike the Leaving state).
    pub(super) said_goodbye: std::sync::atomic::AtomicBool,
    /// The host asked the cell to leave: its death that follows is the normal end.
    pub(super) host_said_goodbye: std::sync::atomic::AtomicBool,
    /// It attached under a name it chose (set before it can call: its link does not exist
    /// for it until the attach reply).
    pub(super) attached: std::sync::atomic::AtomicBool,
}

impl PeerInner {
    pub(super) fn goodbye(&self) {
        self.said_goodbye.store(true, std::sync::atomic::Ordering::SeqCst);
        self.set_state(PeerState::Leaving);
    }

    pub(super) fn set_state(&self, state: PeerState) {
        let mut record = self.record.lock();
        if matches!(record.state, PeerState::Dead(_)) {
            return;
        }
        record.state = state;
        record.state_changed();
        self.changed.notify_all();
    }

    /// The state now.
    pub(super) fn state(&self) -> PeerState {
        self.record.lock().state.clone()
    }

    /// The link if it still exists, cloned out of the record (so that using it never
    /// holds the record).
    pub(super) fn link_session(&self) -> Option<Arc<Session>> {
        self.record.lock().session.clone()
    }

    /// Waits under the record until `done` says so or `until` passes; false on timeout.
    pub(super) fn wait_until(&self, until: Instant, done: impl Fn(&PeerRecord) -> bool) -> bool {
        let mut record = self.record.lock();
        while !done(&record) {
            if self.changed.wait_until(&mut record, until).timed_out() {
                return done(&record);
            }
        }
        true
    }

    /// The link, while it exists. Once it is gone (closed, or its slot reused after the
    /// cell died) a call reports why: the death if the cell died, else SESSION_CLOSED.
    pub(crate) fn session(&self) -> Result<Arc<Session>> {
        let record = self.record.lock();
        if let Some(session) = record.session.clone() {
            return Ok(session);
        }
        match &record.state {
            PeerState::Dead(e) if e.status() == Status::PeerDead => Err(e.clone()),
            _ => Err(Error::new(Status::SessionClosed, format!("peer {} is closed", self.name))),
        }
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

/// The host's handle on one cell. Cheap to clone; every clone is the same peer.
/// All methods may be called from any thread.
///
/// A call fails with the status its handler (or the link) gave, gRPC's codes:
///
/// ```
/// use cellshm::{CallOptions, Cell, Hub, HubConfig, LinkEnd, PeerOptions, Registry, Status};
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
/// let (peer, mut child) = hub
///     .add_peer("echo", PeerOptions::default())?
///     .spawn(&mut std::process::Command::new(std::env::current_exe().unwrap()))?;
/// peer.wait_ready(Duration::from_secs(10))?;
/// let options = CallOptions::timeout(Duration::from_secs(5));
/// let e = peer.call("Echo.nothing", b"", &options).unwrap_err();
/// assert_eq!(e.status(), Status::Unimplemented);
/// // Clones share the link: calls from several threads at once are fine.
/// let other = peer.clone();
/// let thread = std::thread::spawn(move || other.call("Echo.echo", b"from a thread", &options));
/// assert_eq!(thread.join().unwrap()?.bytes(), b"from a thread");
/// peer.shutdown(Duration::from_secs(5));
/// child.wait().unwrap();
/// # Ok::<(), cellshm::Error>(())
/// ```
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
        self.inner.record.lock().pid
    }

    /// What the cell sent in `cellshm.Lifecycle.ready`.
    pub fn ready_info(&self) -> Option<Ready> {
        self.inner.record.lock().ready.clone()
    }

    /// True if the cell said goodbye (it left on purpose), also after it died.
    pub fn said_goodbye(&self) -> bool {
        self.inner.said_goodbye.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// The current state.
    pub fn state(&self) -> PeerState {
        self.inner.state()
    }

    /// The doorbell fd the host uses for this peer (readable when the peer writes).
    pub fn doorbell_fd(&self) -> Option<i32> {
        self.inner.link_session().map(|s| s.doorbell_fd())
    }

    /// Waits until the cell is ready; fails if it dies first or `timeout` passes.
    pub fn wait_ready(&self, timeout: Duration) -> Result<()> {
        let until = Instant::now() + timeout;
        let mut record = self.inner.record.lock();
        loop {
            match &record.state {
                PeerState::Ready => return Ok(()),
                PeerState::Dead(e) => {
                    return Err(e.clone().context(format!("cell {:?} died before it was ready", self.inner.name)))
                }
                PeerState::Leaving => {
                    return Err(Error::new(Status::Unavailable, format!("cell {:?} is leaving", self.inner.name)))
                }
                _ => {}
            }
            if self.inner.changed.wait_until(&mut record, until).timed_out() {
                return Err(Error::new(
                    Status::DeadlineExceeded,
                    format!(
                        "cell {:?} did not become ready within {} ms (state {:?})",
                        self.inner.name,
                        timeout.as_millis(),
                        record.state
                    ),
                ));
            }
        }
    }

    /// Registers `callback` to run once when the peer dies, with the reason. Runs at
    /// once if it is already dead.
    pub fn on_death(&self, callback: impl FnOnce(&Error) + Send + 'static) {
        let mut record = self.inner.record.lock();
        if let PeerState::Dead(e) = &record.state {
            let e = e.clone();
            drop(record);
            run_death_callback(&self.inner.name, Box::new(callback), &e);
        } else {
            record.on_death.push(Box::new(callback));
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
            self.inner.wait_until(until, |r| matches!(r.state, PeerState::Dead(_)));
        }
        self.close_with(Error::new(Status::SessionClosed, format!("cell {:?} was shut down", self.inner.name)));
    }

    pub(super) fn close_with(&self, error: Error) {
        let session = self.inner.record.lock().session.take();
        if let Some(session) = session {
            session.fail(error);
            session.close();
        }
    }

    /// What the host measured of this link: per method, the calls it made to the cell and
    /// the ones it served for it (calls, errors by status, in flight, latency p50/p99/max),
    /// and its streams. Kept in the host's memory, so a cell cannot skew it.
    pub fn metrics(&self) -> PeerMetrics {
        let link = self.inner.link_session().and_then(|s| s.metrics()).unwrap_or_default();
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

    /// Who the host knows this peer to be (what its handlers' [`crate::Call::caller`] says).
    pub fn identity(&self) -> PeerIdentity {
        self.inner.identity()
    }

    /// Its calls and streams refused by an access rule so far ([`Hub::allow`],
    /// [`Hub::set_access_policy`]): counted by the host, not by the cell.
    pub fn refused_calls(&self) -> u64 {
        self.inner.link_session().map_or(0, |s| s.refused_calls())
    }

    /// The counters the cell keeps in its control block. They are informational: the
    /// cell writes them and the host does not trust them for anything.
    pub fn cell_counters(&self) -> Option<Counters> {
        self.inner.link_session().map(|s| s.peer_counters())
    }

    /// Slots of the cell's pool the host currently holds.
    #[doc(hidden)]
    pub fn held_slots(&self) -> Option<u32> {
        self.inner.link_session().map(|s| s.held_slots())
    }

    /// Free slots per class of the host's pool towards this peer.
    #[doc(hidden)]
    pub fn free_slots(&self) -> Result<Vec<usize>> {
        self.inner.session()?.free_slots()
    }
}
