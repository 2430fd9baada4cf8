//! Attaching: a process the host did not spawn joins through the hub's discovery socket
//! (`@cellshm/<uid>/<hub name>`, see [`super::discovery`]).
//!
//! The host checks the connecting process's uid with SO_PEERCRED against an allow-list
//! (the host's own uid by default), reserves a peer slot, and passes the cell's end of
//! its doorbell with SCM_RIGHTS. From there the process joins like a spawned cell: the
//! join record and the link's memfds are the doorbell's first message. Its pid is the
//! one the kernel reported, never one it states. A refused request gets the reason;
//! refusals are counted and the last few kept.
//!
//! Wire: client → host `ATTACH <name>\n`; host → client `OK <peer_id> <epoch>\n` with
//! the doorbell passed along, or `REFUSED <reason>\n`.

use std::os::fd::OwnedFd;
use std::sync::{Arc, Weak};

use super::discovery;
use super::{add_peer, HubShared, PeerOptions, PeerState};
use crate::error::{Error, Result};
use crate::sys::doorbell::unix;
use crate::wire::Status;

/// Who may attach, and how the host talks to attached cells.
#[derive(Clone, Debug)]
pub struct AttachPolicy {
    /// uids allowed to attach; the host's effective uid by default.
    pub allowed_uids: Vec<u32>,
    /// Options of the links to attached cells.
    pub peer: PeerOptions,
}

impl Default for AttachPolicy {
    fn default() -> Self {
        AttachPolicy { allowed_uids: vec![discovery::euid()], peer: PeerOptions::default() }
    }
}

/// Attaching is enabled while this lives; dropping it stops accepting attach requests.
#[derive(Debug)]
pub struct AttachListener {
    hub: Weak<HubShared>,
    name: String,
}

impl AttachListener {
    /// The name of the hub (what [`crate::Cell::attach`] takes).
    pub fn hub_name(&self) -> &str {
        &self.name
    }

    /// Why requests to the hub's socket were refused: the last 16, oldest first.
    pub fn refusals(&self) -> Vec<String> {
        self.hub.upgrade().map(|h| h.discovery.refusals.lock().recent.iter().cloned().collect()).unwrap_or_default()
    }

    /// How many requests were refused in all.
    pub fn refusal_count(&self) -> u64 {
        self.hub.upgrade().map(|h| h.discovery.refusals.lock().count).unwrap_or(0)
    }
}

impl Drop for AttachListener {
    fn drop(&mut self) {
        if let Some(hub) = self.hub.upgrade() {
            *hub.discovery.attach.lock() = None;
        }
    }
}

pub(super) fn enable(shared: &Arc<HubShared>, policy: AttachPolicy) -> Result<AttachListener> {
    let mut attach = shared.discovery.attach.lock();
    if attach.is_some() {
        return Err(Error::new(
            Status::AlreadyExists,
            format!("attaching to hub {:?} is already enabled", shared.name),
        ));
    }
    *attach = Some(policy);
    Ok(AttachListener { hub: Arc::downgrade(shared), name: shared.name.clone() })
}

/// Answers `ATTACH <name>` from the process `pid` of `uid`.
pub(super) fn serve(
    shared: &Arc<HubShared>,
    client: &OwnedFd,
    pid: u32,
    uid: u32,
    name: &str,
    refuse: &dyn Fn(String),
) {
    let Some(policy) = shared.discovery.attach.lock().clone() else {
        return refuse(format!("attaching is not enabled on hub {:?} (pid {pid} asked)", shared.name));
    };
    if !policy.allowed_uids.contains(&uid) {
        return refuse(format!("uid {uid} (pid {pid}) is not allowed to attach"));
    }
    if crate::host::validate_cell_name(name).is_err() {
        return refuse(format!("pid {pid} asked to attach as {name:?}, expected \"ATTACH <name>\""));
    }
    // Names are the host's to give: one a live peer has (a spawned cell, or another that
    // attached) is refused, so nobody takes over an identity while it is in use.
    let taken = shared.peers.lock().live.iter().any(|p| p.name == name && !matches!(p.state(), PeerState::Dead(_)));
    if taken {
        return refuse(format!("pid {pid} asked to attach as {name:?}, a name in use"));
    }
    let ticket = match add_peer(shared, name, policy.peer.clone()) {
        Ok(t) => t,
        Err(e) => return refuse(format!("no peer slot for {name:?}: {e}")),
    };
    let epoch = ticket.epoch();
    let (peer, offer) = ticket.into_attached(pid, uid);
    let reply = format!("OK {} {epoch}\n", peer.id());
    // The join record, the memfds and the doorbell follow on the connection the cell
    // made (after it stopped being dumpable): nobody else holds it.
    let sent = unix::send_with_fds(client, reply.as_bytes(), &[]).and_then(|()| offer.deliver(client));
    if let Err(e) = sent {
        tracing::warn!("attach of {name:?} (pid {pid}) failed: {e}");
    }
    // Our copy of the cell's doorbell end is closed with the offer: from now on its EOF
    // means the cell died.
    drop(offer);
    tracing::info!(cell = name, peer_id = peer.id(), pid, uid, "cell attached");
}
