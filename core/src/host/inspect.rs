//! A read-only look at a live hub from outside its processes: what `cellshm inspect`
//! shows. The hub hands out read-only descriptors of every link's memfds through its
//! discovery socket; `shm::inspect` maps them read-only, so inspecting cannot disturb
//! the links.

use std::fs::File;

use super::discovery::{self, HubListing};
use crate::error::{Error, Result};
use crate::shm::inspect::read_link;
use crate::shm::{Counters, PeerSlotState};
use crate::wire::Status;

/// One peer slot as seen from outside.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerSnapshot {
    /// Slot number.
    pub id: u32,
    /// Slot state, as the host keeps it.
    pub state: PeerSlotState,
    /// Launches of this slot so far.
    pub epoch: u32,
    /// The cell's pid, as the kernel reported it to the host (0 if unknown).
    pub pid: u32,
    /// The cell's name.
    pub name: String,
    /// Descriptors waiting in the host → cell ring.
    pub host_to_cell_depth: u64,
    /// Descriptors waiting in the cell → host ring.
    pub cell_to_host_depth: u64,
    /// Host pool slots in use, per class.
    pub host_pool_in_use: Vec<u32>,
    /// Cell pool slots in use, per class.
    pub cell_pool_in_use: Vec<u32>,
    /// Counters kept by the host for this link.
    pub host_counters: Counters,
    /// Counters kept by the cell (written by the cell: informational).
    pub cell_counters: Counters,
}

/// A hub as seen from outside.
#[derive(Clone, Debug)]
pub struct HubSnapshot {
    /// What the hub says about itself.
    pub info: HubListing,
    /// Every peer not yet reclaimed.
    pub peers: Vec<PeerSnapshot>,
}

fn parse_peer_line(line: &str) -> Option<(u32, u32, PeerSlotState, u32, String)> {
    let rest = line.trim_end().strip_prefix("PEER ")?;
    let mut parts = rest.splitn(5, ' ');
    let id = parts.next()?.parse().ok()?;
    let epoch = parts.next()?.parse().ok()?;
    let state = PeerSlotState::from_raw(parts.next()?.parse().ok()?)?;
    let pid = parts.next()?.parse().ok()?;
    Some((id, epoch, state, pid, parts.next().unwrap_or_default().to_string()))
}

/// Reads every link of the live hub `name` (of this user).
pub fn snapshot(name: &str) -> Result<HubSnapshot> {
    let socket = discovery::connect(name)?;
    let (text, _) = discovery::request(&socket, "INSPECT\n")?;
    let info = discovery::parse_listing(&text)?;
    let records: usize = text
        .lines()
        .find_map(|l| l.strip_prefix("peer_records="))
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| Error::new(Status::ProtocolError, "the INSPECT reply has no peer_records"))?;
    let layout = info.geometry.side_layout();
    let mut peers = Vec::new();
    for _ in 0..records.min(info.max_peers as usize) {
        let (line, fds) = discovery::recv_reply(&socket)?;
        let bad = || Error::new(Status::ProtocolError, format!("unexpected INSPECT record {line:?}"));
        let (id, epoch, state, pid, name) = parse_peer_line(&line).ok_or_else(bad)?;
        let mut fds = fds.into_iter();
        let (Some(host), Some(cell)) = (fds.next(), fds.next()) else { return Err(bad()) };
        let link = read_link(File::from(host), File::from(cell), &layout)?;
        peers.push(PeerSnapshot {
            id,
            state,
            epoch,
            pid,
            name,
            host_to_cell_depth: link.host_to_cell_depth,
            cell_to_host_depth: link.cell_to_host_depth,
            host_pool_in_use: link.host_pool_in_use,
            cell_pool_in_use: link.cell_pool_in_use,
            host_counters: link.host_counters,
            cell_counters: link.cell_counters,
        });
    }
    Ok(HubSnapshot { info, peers })
}
