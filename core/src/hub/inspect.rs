//! A read-only look at a hub from outside its processes: what `cellshm inspect` shows.
//! The file is mapped read-only, so inspecting cannot disturb the links.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;

use super::layout::{
    control, peer_entry, PeerSlotState, PEER_ENTRY_SIZE, PEER_NAME_MAX, PEER_TABLE_OFFSET, RING_HEADER_SIZE,
};
use super::{map_raw, read_header, view_of, HubInfo, RawView};
use crate::error::{Error, Result};
use crate::session::Counters;

/// One peer slot as seen from outside.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerSnapshot {
    /// Slot number.
    pub id: u32,
    /// Slot state in the peer table.
    pub state: PeerSlotState,
    /// Launches of this slot so far.
    pub epoch: u32,
    /// The cell's pid (0 if unknown).
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
    /// Counters kept by the cell.
    pub cell_counters: Counters,
}

/// A hub as seen from outside.
#[derive(Clone, Debug)]
pub struct HubSnapshot {
    /// The file.
    pub path: PathBuf,
    /// Its header.
    pub info: HubInfo,
    /// Every slot that is not Free.
    pub peers: Vec<PeerSnapshot>,
}

fn counters(v: &RawView, block: usize) -> Counters {
    let read = |field: usize| v.atomic_u64(block + field).load(Ordering::Relaxed);
    Counters {
        calls_sent: read(control::CALLS_SENT),
        requests_served: read(control::REQUESTS_SERVED),
        errors: read(control::ERRORS),
        bytes_sent: read(control::BYTES_SENT),
    }
}

/// Reads the hub at `path`.
pub fn snapshot(path: &Path) -> Result<HubSnapshot> {
    let file = File::open(path).map_err(|e| Error::system(format!("opening hub file {}", path.display()), e))?;
    let (info, layout) = read_header(&file, path)?;
    let map = map_raw(&file, 0, layout.total_size, false, "the hub file")?;
    let v = view_of(&map);
    let region = info.geometry.region_layout();
    let classes = info.geometry.classes.len();
    let mut peers = Vec::new();
    for id in 0..info.geometry.max_peers {
        let entry = PEER_TABLE_OFFSET as usize + id as usize * PEER_ENTRY_SIZE as usize;
        let raw_state = v.atomic_u32(entry + peer_entry::STATE).load(Ordering::Acquire);
        let state = PeerSlotState::from_raw(raw_state).unwrap_or(PeerSlotState::Dead);
        if state == PeerSlotState::Free {
            continue;
        }
        let name_len = (v.read_u32(entry + peer_entry::NAME_LEN) as usize).min(PEER_NAME_MAX);
        let mut name = vec![0u8; name_len];
        v.read_bytes(entry + peer_entry::NAME, &mut name);
        let base = layout.region_offset(id) as usize;
        let depth = |ring: super::layout::RingLayout| {
            let tail = v.atomic_u64(base + ring.offset).load(Ordering::Acquire);
            let head = v.atomic_u64(base + ring.offset + 64).load(Ordering::Acquire);
            tail.wrapping_sub(head)
        };
        // Slots handed out, minus those already handed back on the return ring but not
        // yet collected by the allocator (it collects lazily, when it runs short).
        let in_use = |block: usize, returns: super::layout::RingLayout| -> Vec<u32> {
            let mut used: Vec<u32> = (0..classes)
                .map(|c| v.atomic_u32(base + block + control::IN_USE + c * 4).load(Ordering::Relaxed))
                .collect();
            let tail = v.atomic_u64(base + returns.offset).load(Ordering::Acquire);
            let head = v.atomic_u64(base + returns.offset + 64).load(Ordering::Acquire);
            for i in 0..tail.wrapping_sub(head).min(returns.capacity) {
                let index = (head.wrapping_add(i) % returns.capacity) as usize;
                let entry = v.read_u64(base + returns.offset + RING_HEADER_SIZE as usize + index * 8);
                let class = ((entry >> 32) as u32 >> 24) as usize;
                if let Some(count) = used.get_mut(class) {
                    *count = count.saturating_sub(1);
                }
            }
            used
        };
        peers.push(PeerSnapshot {
            id,
            state,
            epoch: v.read_u32(entry + peer_entry::EPOCH),
            pid: v.read_u32(entry + peer_entry::PID),
            name: String::from_utf8_lossy(&name).into_owned(),
            host_to_cell_depth: depth(region.host_to_cell),
            cell_to_host_depth: depth(region.cell_to_host),
            host_pool_in_use: in_use(control::HOST_BLOCK, region.host_pool.returns),
            cell_pool_in_use: in_use(control::CELL_BLOCK, region.cell_pool.returns),
            host_counters: counters(&v, base + control::HOST_BLOCK),
            cell_counters: counters(&v, base + control::CELL_BLOCK),
        });
    }
    Ok(HubSnapshot { path: path.to_path_buf(), info, peers })
}
