//! The hub's discovery socket: `@cellshm/<uid>/<hub name>` in the abstract namespace.
//!
//! One thread per hub serves it. Requests are single SOCK_SEQPACKET messages:
//! `INFO` (what `cellshm list` shows), `INSPECT` (INFO, then one message per peer with
//! read-only descriptors of both memfds of its link) and `ATTACH <name>` (a doorbell for
//! a process the host did not spawn, see [`super::attach`]). Every connection is
//! checked with SO_PEERCRED: INFO and INSPECT only for the host's own uid, ATTACH for the
//! uids of the attach policy. The loop polls every client with a deadline, so a silent
//! or slow client cannot stall the others, and it keeps at most [`MAX_CLIENTS`], at most
//! [`MAX_CLIENTS_PER_UID`] of one uid: a uid's flood evicts only that uid's clients.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::{Arc, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, UNIX_EPOCH};

use crate::runtime::sync::Mutex;

use super::attach::AttachPolicy;
use super::join::{JoinStep, PendingJoin};
use super::{HubShared, PeerState};
use crate::error::{Error, Result};
use crate::shm::{Geometry, PeerSlotState, SlotClass, LAYOUT_MAJOR, LAYOUT_MINOR};
use crate::sys::doorbell::{unix, Kick};
use crate::sys::socket;
use crate::wire::Status;

/// Every hub's socket name starts with this.
pub(crate) const SOCKET_PREFIX: &str = "cellshm/";
/// Connections served at once, of all uids.
pub(crate) const MAX_CLIENTS: usize = 64;
/// Connections of one uid served at once; beyond it, that uid's oldest is dropped, so a
/// uid that floods the socket with idle connections only pushes out its own.
pub(crate) const MAX_CLIENTS_PER_UID: usize = 16;
/// How long a client may take to send its request. Generous: a client of a busy machine
/// may wait seconds for a CPU between connecting and sending, and an idle one holds only
/// a place of its own uid's share.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Refusal reasons kept (all are counted).
pub(crate) const RECENT_REFUSALS: usize = 16;
/// Longest hub name.
pub const HUB_NAME_MAX: usize = crate::shm::join::HUB_NAME_MAX;

/// The abstract socket name of hub `name` of user `uid`.
pub(crate) fn socket_name(uid: u32, name: &str) -> String {
    format!("{SOCKET_PREFIX}{uid}/{name}")
}

pub(crate) fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() }
}

/// Checks a hub name: 1 to 64 of `A-Z a-z 0-9 . _ -`, not starting with a dot.
pub fn validate_hub_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= HUB_NAME_MAX
        && !name.starts_with('.')
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(Error::new(
            Status::InvalidArgument,
            format!("hub name {name:?} must be 1 to {HUB_NAME_MAX} of A-Z a-z 0-9 . _ - (not starting with '.')"),
        ))
    }
}

/// Refused requests: all counted, the last few kept.
#[derive(Debug, Default)]
pub(crate) struct Refusals {
    pub count: u64,
    pub recent: VecDeque<String>,
}

/// What the discovery thread shares with the hub.
#[derive(Debug, Default)]
pub(crate) struct DiscoveryState {
    pub attach: Mutex<Option<AttachPolicy>>,
    /// The uids that may INSPECT (none by default).
    pub inspect_uids: Mutex<Vec<u32>>,
    pub refusals: Mutex<Refusals>,
    /// Spawned cells that have not asked for their link yet (`super::join`), and the kick
    /// that tells the discovery thread about a new one.
    joins: Mutex<Vec<PendingJoin>>,
    joins_kick: std::sync::OnceLock<Arc<Kick>>,
}

impl DiscoveryState {
    /// Forgets the cells that never asked for their link (the hub is going away).
    pub fn forget_joins(&self) {
        let forgotten = std::mem::take(&mut *self.joins.lock());
        drop(forgotten);
    }

    /// Serves the bootstrap socket of a cell just spawned until the cell asks for its link.
    pub fn await_join(&self, join: PendingJoin) {
        self.joins.lock().push(join);
        if let Some(kick) = self.joins_kick.get() {
            kick.notify();
        }
    }

    pub fn refuse(&self, hub: &str, reason: String) {
        tracing::warn!(hub, "discovery request refused: {reason}");
        let mut r = self.refusals.lock();
        r.count += 1;
        if r.recent.len() == RECENT_REFUSALS {
            r.recent.pop_front();
        }
        r.recent.push_back(reason);
    }
}

/// The running discovery thread. Stopped (and joined) by [`DiscoveryServer::stop`].
#[derive(Debug)]
pub(crate) struct DiscoveryServer {
    kick: Arc<Kick>,
    thread: Option<JoinHandle<()>>,
    /// The filesystem socket, if the hub has one: removed when the server stops.
    path: Option<std::path::PathBuf>,
}

impl DiscoveryServer {
    /// Binds the hub's socket and starts serving it. ALREADY_EXISTS if a live hub of
    /// this user has the name.
    pub(super) fn start(hub: &Arc<HubShared>, path: Option<&std::path::Path>) -> Result<DiscoveryServer> {
        let name = socket_name(euid(), &hub.name);
        let mut listeners = vec![socket::listen(socket::Address::Abstract(&name)).map_err(|e| {
            if e.kind() == std::io::ErrorKind::AddrInUse {
                Error::new(Status::AlreadyExists, format!("a live hub is already named {:?}", hub.name))
            } else {
                Error::system(format!("listening on @{name}"), e)
            }
        })?];
        if let Some(path) = path {
            listeners.push(socket::listen(socket::Address::Path(path)).map_err(|e| {
                if e.kind() == std::io::ErrorKind::AddrInUse {
                    Error::new(Status::AlreadyExists, format!("a live hub already listens on {}", path.display()))
                } else {
                    Error::system(format!("listening on {}", path.display()), e)
                }
            })?);
        }
        let kick = Arc::new(Kick::new().map_err(|e| Error::system("creating an eventfd", e))?);
        let joins = Arc::new(Kick::new().map_err(|e| Error::system("creating an eventfd", e))?);
        let _ = hub.discovery.joins_kick.set(joins.clone());
        let (weak, stop) = (Arc::downgrade(hub), kick.clone());
        let thread = std::thread::Builder::new()
            .name("cellshm-discovery".into())
            .spawn(move || serve(listeners, &stop, &joins, weak))
            .map_err(|e| Error::system("spawning the discovery thread", e))?;
        Ok(DiscoveryServer { kick, thread: Some(thread), path: path.map(Into::into) })
    }

    /// Stops serving: the socket is closed (its name is free again) when this returns.
    pub fn stop(&mut self) {
        self.kick.notify();
        if let Some(thread) = self.thread.take() {
            if thread.thread().id() != std::thread::current().id() {
                let _ = thread.join();
            }
        }
        if let Some(path) = self.path.take() {
            let _ = std::fs::remove_file(path);
        }
    }
}

impl Drop for DiscoveryServer {
    fn drop(&mut self) {
        self.stop();
    }
}

struct Client {
    socket: OwnedFd,
    deadline: Instant,
    /// Its uid (SO_PEERCRED, at accept).
    uid: u32,
}

/// Makes room for a new client of `uid`: the oldest of that uid goes if it has its share,
/// else, when the table is full, the oldest of the uid that holds the most.
fn make_room(clients: &mut VecDeque<Client>, uid: u32) {
    let count = |uid: u32| clients.iter().filter(|c| c.uid == uid).count();
    let evict = if count(uid) >= MAX_CLIENTS_PER_UID {
        Some(uid)
    } else if clients.len() >= MAX_CLIENTS {
        clients.iter().map(|c| c.uid).max_by_key(|u| count(*u))
    } else {
        None
    };
    if let Some(evict) = evict {
        if let Some(oldest) = clients.iter().position(|c| c.uid == evict) {
            clients.remove(oldest);
        }
    }
}

fn serve(listeners: Vec<OwnedFd>, stop: &Kick, joins_kick: &Kick, hub: Weak<HubShared>) {
    let mut clients: VecDeque<Client> = VecDeque::new();
    let first_listener = 2;
    let first_client = first_listener + listeners.len();
    loop {
        let now = Instant::now();
        let timeout = clients.iter().map(|c| c.deadline.saturating_duration_since(now)).min();
        let mut fds = vec![
            libc::pollfd { fd: stop.as_raw_fd(), events: libc::POLLIN, revents: 0 },
            libc::pollfd { fd: joins_kick.as_raw_fd(), events: libc::POLLIN, revents: 0 },
        ];
        fds.extend(listeners.iter().map(|l| libc::pollfd { fd: l.as_raw_fd(), events: libc::POLLIN, revents: 0 }));
        fds.extend(clients.iter().map(|c| libc::pollfd { fd: c.socket.as_raw_fd(), events: libc::POLLIN, revents: 0 }));
        // The bootstrap sockets of cells not joined yet, after the clients. Only this thread
        // removes pending joins, so the first `pending` of them stay where they are.
        let first_join = fds.len();
        let pending = match hub.upgrade() {
            Some(hub) => {
                let joins = hub.discovery.joins.lock();
                fds.extend(joins.iter().map(|j| libc::pollfd {
                    fd: j.bootstrap.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                }));
                joins.len()
            }
            None => return,
        };
        let ms = timeout.map_or(-1, |t| t.as_millis().min(i32::MAX as u128) as i32 + 1);
        // SAFETY: `fds` is a live array of `fds.len()` pollfds.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, ms) };
        if n < 0 {
            continue;
        }
        if fds[0].revents != 0 {
            return;
        }
        if fds[1].revents != 0 {
            joins_kick.drain();
        }
        let Some(hub) = hub.upgrade() else { return };
        serve_joins(&hub, &fds[first_join..first_join + pending]);
        // Clients first (their indices follow the order of `fds`), then new ones.
        let mut done = Vec::new();
        for (i, pfd) in fds[first_client..first_join].iter().enumerate() {
            if pfd.revents == 0 {
                continue;
            }
            match socket::recv_message(&clients[i].socket, 512) {
                Ok(None) => {}
                Ok(Some(message)) if !message.is_empty() => {
                    answer(&hub, &clients[i].socket, &message);
                    done.push(i);
                }
                _ => done.push(i),
            }
        }
        for i in done.into_iter().rev() {
            clients.remove(i);
        }
        // Only now, after reading what arrived: a client whose request came in while this
        // thread waited for a CPU past the deadline is answered, not dropped.
        let now = Instant::now();
        clients.retain(|c| c.deadline > now);
        for (listener, pfd) in listeners.iter().zip(&fds[first_listener..first_client]) {
            if pfd.revents == 0 {
                continue;
            }
            // At most a table's worth per turn: a uid that connects as fast as it can must
            // not keep this thread accepting while the requests of others wait.
            for _ in 0..MAX_CLIENTS {
                let Ok(Some(socket)) = socket::accept(listener) else { break };
                // A socket without credentials counts as a uid of its own, the same for all.
                let uid = unix::peer_credentials(&socket).map_or(u32::MAX, |(_, uid, _)| uid);
                make_room(&mut clients, uid);
                clients.push_back(Client { socket, deadline: Instant::now() + REQUEST_TIMEOUT, uid });
            }
        }
    }
}

/// Answers the pending joins whose bootstrap socket `polled` says is readable (or closed),
/// in the order they were polled, and forgets those that are done.
fn serve_joins(hub: &HubShared, polled: &[libc::pollfd]) {
    let mut done = Vec::new();
    {
        let joins = hub.discovery.joins.lock();
        for (i, pfd) in polled.iter().enumerate() {
            if pfd.revents == 0 {
                continue;
            }
            match joins[i].on_readable() {
                JoinStep::Joined | JoinStep::Closed => done.push(i),
                JoinStep::Refused(reason) => hub.discovery.refuse(&hub.name, reason),
                JoinStep::Nothing => {}
            }
        }
    }
    // Dropped outside the lock: closing their descriptors is all it does.
    let mut joins = hub.discovery.joins.lock();
    let finished: Vec<PendingJoin> = done.into_iter().rev().map(|i| joins.remove(i)).collect();
    drop(joins);
    drop(finished);
}

fn answer(hub: &Arc<HubShared>, client: &OwnedFd, message: &[u8]) {
    let refuse = |reason: String| {
        hub.discovery.refuse(&hub.name, reason.clone());
        let _ = unix::send_with_fds(client, format!("REFUSED {reason}\n").as_bytes(), &[]);
    };
    let (pid, uid, _) = match unix::peer_credentials(client) {
        Ok(c) => c,
        Err(e) => return refuse(format!("no peer credentials: {e}")),
    };
    let request = String::from_utf8_lossy(message);
    let request = request.trim_end();
    let (verb, argument) = request.split_once(' ').unwrap_or((request, ""));
    match verb {
        "INFO" if uid != euid() => refuse(format!("uid {uid} (pid {pid}) may not INFO a hub of uid {}", euid())),
        // INSPECT hands out read-only memfds of every link: only to the uids the host
        // named. Its own uid is not enough: a cell of that uid could double-fork a process
        // that no parent chain ties to it.
        "INSPECT" if !hub.discovery.inspect_uids.lock().contains(&uid) => refuse(format!(
            "uid {uid} (pid {pid}) may not INSPECT hub {:?}: its host did not enable it for that uid \
             (Hub::enable_inspect, cellshm_hub_enable_inspect, Hub.enable_inspect)",
            hub.name
        )),
        "INSPECT" if is_cell_or_descendant(hub, pid) => {
            refuse(format!("pid {pid} is a cell of this hub (or started by one): cells may not INSPECT"))
        }
        "INFO" => {
            let _ = unix::send_with_fds(client, info_text(hub).as_bytes(), &[]);
        }
        "INSPECT" => inspect(hub, client),
        "ATTACH" => super::attach::serve(hub, client, pid, uid, argument, &refuse),
        _ => refuse(format!("pid {pid} sent {:?}, not INFO, INSPECT or ATTACH <name>", truncate(request, 64))),
    }
}

/// True if `pid` is one of the hub's cells or a process they started, as far as the
/// parent chain in /proc shows (a process re-parented away from its cell is not caught:
/// run cells that must not read other links as another uid, see docs/PROTOCOL.md §1).
fn is_cell_or_descendant(hub: &HubShared, pid: u32) -> bool {
    let cells: Vec<u32> = hub.peers.lock().live.iter().filter_map(|p| *p.pid.lock()).collect();
    cells.iter().any(|cell| crate::sys::process::is_self_or_descendant(pid, *cell))
}

fn truncate(s: &str, max: usize) -> &str {
    let mut cut = s.len().min(max);
    while !s.is_char_boundary(cut) {
        cut -= 1;
    }
    &s[..cut]
}

fn slot_state(state: &PeerState) -> PeerSlotState {
    match state {
        PeerState::Starting => PeerSlotState::Reserved,
        PeerState::Joined | PeerState::Ready => PeerSlotState::Active,
        PeerState::Leaving => PeerSlotState::Draining,
        PeerState::Dead(_) => PeerSlotState::Dead,
    }
}

fn info_text(hub: &HubShared) -> String {
    let peers = hub.peers.lock().live.iter().filter(|p| !matches!(*p.state.lock(), PeerState::Dead(_))).count();
    let started_ms = hub.started.duration_since(UNIX_EPOCH).map(|d| d.as_millis()).unwrap_or(0);
    let classes: Vec<String> =
        hub.geometry.classes.iter().map(|c| format!("{}x{}", c.slot_size, c.slot_count)).collect();
    let mut out = String::from("OK\n");
    let _ = write!(
        out,
        "name={}\nversion={LAYOUT_MAJOR}.{LAYOUT_MINOR}\npid={}\nuid={}\nstarted_unix_ms={started_ms}\nuptime_ms={}\npeers={peers}\nmax_peers={}\nattach={}\nring_capacity={}\nclasses={}\n",
        hub.name,
        std::process::id(),
        euid(),
        hub.started_at.elapsed().as_millis(),
        hub.max_peers,
        u8::from(hub.discovery.attach.lock().is_some()),
        hub.geometry.ring_capacity,
        classes.join(","),
    );
    out
}

fn inspect(hub: &HubShared, client: &OwnedFd) {
    // The replies carry descriptors: send them blocking, within a bound.
    let _ = socket::set_blocking_sends(client, Duration::from_secs(1));
    let peers: Vec<_> = hub.peers.lock().live.clone();
    let metrics: Vec<String> =
        peers.iter().flat_map(|p| super::inspect::metric_lines(&super::Peer { inner: p.clone() }.metrics())).collect();
    let mut text = info_text(hub);
    let _ = writeln!(text, "peer_records={}", peers.len());
    let _ = writeln!(text, "metric_records={}", metrics.len());
    if unix::send_with_fds(client, text.as_bytes(), &[]).is_err() {
        return;
    }
    for peer in peers {
        let state = slot_state(&peer.state.lock());
        let pid = peer.pid.lock().unwrap_or(0);
        let (host, cell) = peer.link.read_only_files();
        let line = format!("PEER {} {} {} {pid} {}\n", peer.id, peer.epoch, state as u32, peer.name);
        if unix::send_with_fds(client, line.as_bytes(), &[host.as_raw_fd(), cell.as_raw_fd()]).is_err() {
            return;
        }
    }
    for line in metrics {
        if unix::send_with_fds(client, line.as_bytes(), &[]).is_err() {
            return;
        }
    }
}

// ----- the client side -------------------------------------------------------------

/// A live hub, as `cellshm list` shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HubListing {
    /// The hub's name.
    pub name: String,
    /// Protocol/layout version (major, minor).
    pub version: (u16, u16),
    /// The host's process id.
    pub host_pid: u32,
    /// The host's uid.
    pub uid: u32,
    /// Peers that are not dead.
    pub peers: u32,
    /// Peer slots.
    pub max_peers: u32,
    /// Since when the hub runs (ms since the Unix epoch).
    pub started_unix_ms: u64,
    /// How long it has been running (ms).
    pub uptime_ms: u64,
    /// Whether processes may attach.
    pub attach: bool,
    /// Ring and pool shape of its links.
    pub geometry: Geometry,
}

impl HubListing {
    fn parse(text: &str) -> Result<HubListing> {
        let bad = |m: String| Error::new(Status::ProtocolError, format!("hub INFO reply: {m}"));
        let mut lines = text.lines();
        match lines.next() {
            Some("OK") => {}
            Some(line) if line.starts_with("REFUSED ") => {
                return Err(Error::new(Status::PermissionDenied, line.trim_start_matches("REFUSED ").to_string()))
            }
            other => return Err(bad(format!("unexpected first line {other:?}"))),
        }
        let fields: std::collections::HashMap<&str, &str> = lines.filter_map(|l| l.split_once('=')).collect();
        let get = |k: &str| fields.get(k).copied().ok_or_else(|| bad(format!("no {k}")));
        let num = |k: &str| get(k).and_then(|v| v.parse::<u64>().map_err(|_| bad(format!("{k}={v:?}"))));
        let (major, minor) = get("version")?.split_once('.').ok_or_else(|| bad("version".into()))?;
        let classes = get("classes")?
            .split(',')
            .map(|c| {
                let (size, count) = c.split_once('x')?;
                Some(SlotClass { slot_size: size.parse().ok()?, slot_count: count.parse().ok()? })
            })
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| bad("classes".into()))?;
        let geometry = Geometry { ring_capacity: num("ring_capacity")? as u32, classes };
        geometry.validate().map_err(bad)?;
        Ok(HubListing {
            name: get("name")?.to_string(),
            version: (
                major.parse().map_err(|_| bad("version".into()))?,
                minor.parse().map_err(|_| bad("version".into()))?,
            ),
            host_pid: num("pid")? as u32,
            uid: num("uid")? as u32,
            peers: num("peers")? as u32,
            max_peers: num("max_peers")? as u32,
            started_unix_ms: num("started_unix_ms")?,
            uptime_ms: num("uptime_ms")?,
            attach: num("attach")? != 0,
            geometry,
        })
    }
}

/// True if `hub` names a filesystem socket (`/...` or `./...`) rather than a hub name.
fn is_path(hub: &str) -> bool {
    hub.starts_with('/') || hub.starts_with("./") || hub.starts_with("../")
}

/// Connects to a hub: `NAME` (a hub of this user), `UID/NAME` (of user `UID`, for
/// attaching across users) or the path of a hub's filesystem socket (`/...`, `./...`).
/// For a name, checks that the process listening is of that uid (an abstract name can
/// be taken by anyone: an impostor of another uid is refused); for a path, the file's
/// permissions decide who could have bound it.
pub(crate) fn connect(hub: &str) -> Result<OwnedFd> {
    if is_path(hub) {
        let path = std::path::Path::new(hub);
        return socket::connect(socket::Address::Path(path), Duration::from_secs(10)).map_err(|e| match e.kind() {
            std::io::ErrorKind::ConnectionRefused | std::io::ErrorKind::NotFound => {
                Error::new(Status::NotFound, format!("no live hub listens on {hub}"))
            }
            _ => Error::system(format!("connecting to {hub}"), e),
        });
    }
    let (owner, name) = match hub.split_once('/') {
        Some((uid, name)) => (
            uid.parse()
                .map_err(|_| Error::new(Status::InvalidArgument, format!("hub {hub:?}: expected NAME or UID/NAME")))?,
            name,
        ),
        None => (euid(), hub),
    };
    validate_hub_name(name)?;
    let address = socket_name(owner, name);
    let socket =
        socket::connect(socket::Address::Abstract(&address), Duration::from_secs(10)).map_err(|e| match e.kind() {
            std::io::ErrorKind::ConnectionRefused | std::io::ErrorKind::NotFound => {
                Error::new(Status::NotFound, format!("no live hub named {name:?} (socket @{address})"))
            }
            _ => Error::system(format!("connecting to hub {name:?} (@{address})"), e),
        })?;
    let (pid, uid, _) =
        unix::peer_credentials(&socket).map_err(|e| Error::system("reading the hub's credentials", e))?;
    if uid != owner {
        return Err(Error::new(
            Status::PermissionDenied,
            format!("@{address} is served by pid {pid} of uid {uid}, not by a hub of uid {owner}"),
        ));
    }
    Ok(socket)
}

/// Sends one request and reads the first reply message (and its fds).
pub(crate) fn request(socket: &OwnedFd, line: &str) -> Result<(String, Vec<OwnedFd>)> {
    unix::send_with_fds(socket, line.as_bytes(), &[]).map_err(|e| Error::system("sending to the hub", e))?;
    recv_reply(socket)
}

pub(crate) fn recv_reply(socket: &OwnedFd) -> Result<(String, Vec<OwnedFd>)> {
    let mut buf = vec![0u8; 4096];
    let (n, fds) = unix::recv_with_fds(socket, &mut buf).map_err(|e| Error::system("reading the hub's reply", e))?;
    if n == 0 {
        return Err(Error::new(Status::Unavailable, "the hub closed the connection without replying"));
    }
    Ok((String::from_utf8_lossy(&buf[..n]).into_owned(), fds))
}

/// What hub `name` says about itself.
pub fn hub_listing(name: &str) -> Result<HubListing> {
    let socket = connect(name)?;
    let (text, _) = request(&socket, "INFO\n")?;
    HubListing::parse(&text)
}

pub(crate) fn parse_listing(text: &str) -> Result<HubListing> {
    HubListing::parse(text)
}

/// The live hubs of this user on this machine, by name.
pub fn list_hubs() -> Result<Vec<HubListing>> {
    let prefix = socket_name(euid(), "");
    let names = socket::listening_abstract_names(&prefix).map_err(|e| Error::system("reading /proc/net/unix", e))?;
    Ok(names.iter().filter_map(|n| hub_listing(&n[prefix.len()..]).ok()).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(uid: u32) -> Client {
        let (socket, _) = unix::seqpacket_pair().unwrap();
        Client { socket, deadline: Instant::now() + REQUEST_TIMEOUT, uid }
    }

    /// A flooding uid pushes out only its own clients; when the table is full, the uid
    /// with the most gives way, never one that has few.
    #[test]
    fn a_uid_that_floods_evicts_only_its_own_clients() {
        let mut clients: VecDeque<Client> = VecDeque::new();
        clients.push_back(client(0));
        for _ in 0..1000 {
            make_room(&mut clients, 65534);
            clients.push_back(client(65534));
        }
        assert_eq!(clients.iter().filter(|c| c.uid == 65534).count(), MAX_CLIENTS_PER_UID);
        assert_eq!(clients.iter().filter(|c| c.uid == 0).count(), 1, "the honest client stays");
        // Many uids, each within its share, fill the table: the largest share gives way.
        let mut clients: VecDeque<Client> = VecDeque::new();
        for uid in 0..MAX_CLIENTS as u32 {
            clients.push_back(client(uid % 5));
        }
        make_room(&mut clients, 1000);
        assert_eq!(clients.len(), MAX_CLIENTS - 1);
        // 64 clients of 5 uids: four hold 13, uid 4 holds 12 and keeps them.
        assert_eq!(clients.iter().filter(|c| c.uid == 4).count(), 12);
    }
}
