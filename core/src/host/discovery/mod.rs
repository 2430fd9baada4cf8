//! The hub's discovery socket: `@cellshm/<uid>/<hub name>` in the abstract namespace.
//!
//! Which file holds what: this file, the protocol (names, limits, the request verbs);
//! `server.rs`, the hub's thread that answers; `client.rs`, how tools and attaching
//! cells reach a hub (`list_hubs`, `hub_listing`, connect, request).
//!
//! One thread per hub serves it. Requests are single SOCK_SEQPACKET messages:
//! `INFO` (what `cellshm list` shows), `INSPECT` (INFO, then one message per peer with
//! read-only descriptors of both memfds of its link) and `ATTACH <name>` (a doorbell for
//! a process the host did not spawn, see [`super::attach`]). Every connection is
//! checked with SO_PEERCRED: INFO and INSPECT only for the host's own uid, ATTACH for the
//! uids of the attach policy. The loop polls every client with a deadline, so a silent
//! or slow client cannot stall the others, and it keeps at most `MAX_CLIENTS`, at most
//! `MAX_CLIENTS_PER_UID` of one uid: a uid's flood evicts only that uid's clients.

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

mod client;
mod server;

pub(crate) use client::{connect, parse_listing, recv_reply, request};
pub use client::{hub_listing, list_hubs, HubListing};
pub(crate) use server::{DiscoveryServer, DiscoveryState};

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

pub(crate) use crate::sys::process::euid;

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
