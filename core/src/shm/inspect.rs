//! A read-only look at a live hub from outside its processes: what `cellshm inspect`
//! shows. The hub hands out read-only descriptors of every link's memfds through its
//! discovery socket; they are mapped read-only, so inspecting cannot disturb the links.

use std::fs::File;
use std::sync::atomic::Ordering;

use super::layout::{control, cursors, PeerSlotState, SideLayout, RING_HEADER_SIZE};
use super::{memfd, view_of, RawView};
use crate::error::{Error, Result};
use crate::host::discovery::{self, HubListing};
use crate::runtime::session::Counters;
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

fn counters(v: &RawView) -> Counters {
    let read = |field: usize| v.atomic_u64(control::BLOCK + field).load(Ordering::Relaxed);
    Counters {
        calls_sent: read(control::CALLS_SENT),
        requests_served: read(control::REQUESTS_SERVED),
        errors: read(control::ERRORS),
        bytes_sent: read(control::BYTES_SENT),
    }
}

/// Messages read from shared memory or from the hub are not trusted: bad values are
/// clamped, never followed out of bounds.
fn depth(producer: &RawView, consumer: &RawView, ring: super::layout::RingLayout, head_at: usize) -> u64 {
    let tail = producer.atomic_u64(ring.offset).load(Ordering::Acquire);
    let head = consumer.atomic_u64(head_at).load(Ordering::Acquire);
    tail.wrapping_sub(head).min(ring.capacity)
}

/// Slots of `writer`'s pool handed out, minus those already on the return ring but not
/// yet collected (the allocator collects lazily, when it runs short).
fn in_use(writer: &RawView, returner: &RawView, layout: &SideLayout) -> Vec<u32> {
    let classes = layout.classes.len();
    let mut used: Vec<u32> = (0..classes)
        .map(|c| writer.atomic_u32(control::BLOCK + control::IN_USE + c * 4).load(Ordering::Relaxed))
        .collect();
    let returns = layout.returns;
    let tail = returner.atomic_u64(returns.offset).load(Ordering::Acquire);
    let head = writer.atomic_u64(cursors::RETURN_HEAD).load(Ordering::Acquire);
    for i in 0..tail.wrapping_sub(head).min(returns.capacity) {
        let index = (head.wrapping_add(i) % returns.capacity) as usize;
        let entry = returner.read_u64(returns.offset + RING_HEADER_SIZE as usize + index * 8);
        let class = ((entry >> 32) as u32 >> 24) as usize;
        if let Some(count) = used.get_mut(class) {
            *count = count.saturating_sub(1);
        }
    }
    used
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
        let (host, cell) = (File::from(host), File::from(cell));
        memfd::check_received(&host, layout.size, memfd::SIZE_SEALS, "the host memory")?;
        memfd::check_received(&cell, layout.size, memfd::SIZE_SEALS, "the cell memory")?;
        let host_map = memfd::map(&host, layout.size, false, "the host memory")?;
        let cell_map = memfd::map(&cell, layout.size, false, "the cell memory")?;
        let (h, c) = (view_of(&host_map), view_of(&cell_map));
        peers.push(PeerSnapshot {
            id,
            state,
            epoch,
            pid,
            name,
            host_to_cell_depth: depth(&h, &c, layout.descriptors, cursors::DESCRIPTOR_HEAD),
            cell_to_host_depth: depth(&c, &h, layout.descriptors, cursors::DESCRIPTOR_HEAD),
            host_pool_in_use: in_use(&h, &c, &layout),
            cell_pool_in_use: in_use(&c, &h, &layout),
            host_counters: counters(&h),
            cell_counters: counters(&c),
        });
    }
    Ok(HubSnapshot { info, peers })
}
