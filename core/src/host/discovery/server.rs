//! The hub's discovery thread: accepts, checks credentials, answers INFO, INSPECT and
//! ATTACH, serves the bootstrap sockets of cells not joined yet.

use super::*;

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
    pub(crate) fn start(hub: &Arc<HubShared>, path: Option<&std::path::Path>) -> Result<DiscoveryServer> {
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
        let mut fds = vec![stop.as_raw_fd(), joins_kick.as_raw_fd()];
        fds.extend(listeners.iter().map(AsRawFd::as_raw_fd));
        fds.extend(clients.iter().map(|c| c.socket.as_raw_fd()));
        // The bootstrap sockets of cells not joined yet, after the clients. Only this thread
        // removes pending joins, so the first `pending` of them stay where they are.
        let first_join = fds.len();
        let pending = match hub.upgrade() {
            Some(hub) => {
                let joins = hub.discovery.joins.lock();
                fds.extend(joins.iter().map(|j| j.bootstrap.as_raw_fd()));
                joins.len()
            }
            None => return,
        };
        let Ok(ready) = socket::poll_readable(&fds, timeout) else { continue };
        if ready[0] {
            return;
        }
        if ready[1] {
            joins_kick.drain();
        }
        let Some(hub) = hub.upgrade() else { return };
        serve_joins(&hub, &ready[first_join..first_join + pending]);
        // Clients first (their indices follow the order of `fds`), then new ones.
        let mut done = Vec::new();
        for (i, readable) in ready[first_client..first_join].iter().enumerate() {
            if !readable {
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
        for (listener, readable) in listeners.iter().zip(&ready[first_listener..first_client]) {
            if !readable {
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

/// Answers the pending joins whose bootstrap socket `readable` says is readable (or closed),
/// in the order they were polled, and forgets those that are done.
fn serve_joins(hub: &HubShared, readable: &[bool]) {
    let mut done = Vec::new();
    {
        let joins = hub.discovery.joins.lock();
        for (i, readable) in readable.iter().enumerate() {
            if !readable {
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
        "ATTACH" => crate::host::attach::serve(hub, client, pid, uid, argument, &refuse),
        _ => refuse(format!("pid {pid} sent {:?}, not INFO, INSPECT or ATTACH <name>", truncate(request, 64))),
    }
}

/// True if `pid` is one of the hub's cells or a process they started, as far as the
/// parent chain in /proc shows (a process re-parented away from its cell is not caught:
/// run cells that must not read other links as another uid, see docs/PROTOCOL.md §1).
fn is_cell_or_descendant(hub: &HubShared, pid: u32) -> bool {
    let cells: Vec<u32> = hub.peers.lock().live.iter().filter_map(|p| p.record.lock().pid).collect();
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
    let peers = hub.peers.lock().live.iter().filter(|p| !matches!(p.state(), PeerState::Dead(_))).count();
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
    let endpoints = hub.endpoints.listing();
    let _ = writeln!(out, "endpoints={}", endpoints.len());
    for (i, endpoint) in endpoints.iter().enumerate() {
        let _ = writeln!(out, "endpoint.{i}={}", endpoint.info_value());
    }
    out
}

fn inspect(hub: &HubShared, client: &OwnedFd) {
    // The replies carry descriptors: send them blocking, within a bound.
    let _ = socket::set_blocking_sends(client, Duration::from_secs(1));
    let peers: Vec<_> = hub.peers.lock().live.clone();
    let metrics: Vec<String> = peers
        .iter()
        .flat_map(|p| crate::host::inspect::metric_lines(&crate::host::Peer { inner: p.clone() }.metrics()))
        .collect();
    let topics = crate::host::inspect::topic_lines(&hub.topics.reports());
    let mut text = info_text(hub);
    let _ = writeln!(text, "peer_records={}", peers.len());
    let _ = writeln!(text, "metric_records={}", metrics.len());
    let _ = writeln!(text, "topic_records={}", topics.len());
    if unix::send_with_fds(client, text.as_bytes(), &[]).is_err() {
        return;
    }
    for peer in peers {
        let (state, pid) = {
            let record = peer.record.lock();
            (slot_state(&record.state), record.pid.unwrap_or(0))
        };
        let (host, cell) = peer.link.read_only_files();
        let line = format!("PEER {} {} {} {pid} {}\n", peer.id, peer.epoch, state as u32, peer.name);
        if unix::send_with_fds(client, line.as_bytes(), &[host.as_raw_fd(), cell.as_raw_fd()]).is_err() {
            return;
        }
    }
    for line in metrics.into_iter().chain(topics) {
        if unix::send_with_fds(client, line.as_bytes(), &[]).is_err() {
            return;
        }
    }
}

// ----- the client side -------------------------------------------------------------

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
