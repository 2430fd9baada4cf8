//! A read-only look at a live hub from outside its processes: what `cellshm inspect`
//! shows. The hub hands out read-only descriptors of every link's memfds through its
//! discovery socket; `shm::inspect` maps them read-only, so inspecting cannot disturb
//! the links.

use std::fs::File;

use super::discovery::{self, HubListing};
use crate::error::{Error, Result};
use crate::shm::inspect::{read_peer, PeerSnapshot, SlotRecord};
use crate::shm::PeerSlotState;
use crate::wire::Status;

/// A hub as seen from outside.
#[derive(Clone, Debug)]
pub struct HubSnapshot {
    /// What the hub says about itself.
    pub info: HubListing,
    /// Every peer not yet reclaimed.
    pub peers: Vec<PeerSnapshot>,
}

fn parse_peer_line(line: &str) -> Option<SlotRecord> {
    let rest = line.trim_end().strip_prefix("PEER ")?;
    let mut parts = rest.splitn(5, ' ');
    let id = parts.next()?.parse().ok()?;
    let epoch = parts.next()?.parse().ok()?;
    let state = PeerSlotState::from_raw(parts.next()?.parse().ok()?)?;
    let pid = parts.next()?.parse().ok()?;
    Some(SlotRecord { id, epoch, state, pid, name: parts.next().unwrap_or_default().to_string() })
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
        let slot = parse_peer_line(&line).ok_or_else(bad)?;
        let mut fds = fds.into_iter();
        let (Some(host), Some(cell)) = (fds.next(), fds.next()) else { return Err(bad()) };
        peers.push(read_peer(slot, File::from(host), File::from(cell), &layout)?);
    }
    Ok(HubSnapshot { info, peers })
}
