//! Peer slots: reserving one, reclaiming a dead one, making the link.

use super::*;

/// Reserves a peer slot (a free one, or a dead one that can be reclaimed), creates the
/// link's memfds and doorbell, and queues the join record on the doorbell.
pub(super) fn add_peer(shared: &Arc<HubShared>, name: &str, options: PeerOptions) -> Result<PeerTicket> {
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
        record: Mutex::new(PeerRecord::new()),
        changed: Condvar::new(),
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
    inner.record.lock().session = Some(session);
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
pub(super) fn notice_dead_links(shared: &HubShared) {
    let sessions: Vec<Arc<Session>> = {
        let peers = shared.peers.lock();
        if peers.live.len() < shared.max_peers as usize {
            return;
        }
        peers.live.iter().filter_map(|p| p.link_session()).collect()
    };
    for session in sessions {
        session.check_alive();
    }
}

pub(super) fn reclaim(peers: &mut Vec<Arc<PeerInner>>, slot: u32) -> bool {
    let Some(index) = peers.iter().rposition(|p| p.id == slot) else { return true };
    // A link another thread is failing right now counts as dead: its state turns Dead a
    // moment later (once the death hooks run), and a spawn must not see HUB_FULL meanwhile.
    let failing = || peers[index].link_session().is_some_and(|s| s.has_failed());
    if !matches!(peers[index].state(), PeerState::Dead(_)) && !failing() {
        return false;
    }
    let old = peers.remove(index);
    // Out of the record before it is failed: failing runs the death hooks, which take it.
    let session = old.record.lock().session.take();
    if let Some(session) = session {
        // Fails it (if not yet) and wakes its threads; joins nothing.
        session.fail(Error::new(Status::SessionClosed, format!("the slot of cell {:?} was reused", old.name)));
    }
    true
}
