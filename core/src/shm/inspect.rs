//! Reading one link's two memfds from outside its processes, for `cellshm inspect`
//! (`host::inspect` gets the descriptors from the hub). They are mapped read-only, so
//! reading cannot disturb the link; nothing read is trusted: bad values are clamped,
//! never followed out of bounds.

use std::fs::File;
use std::sync::atomic::Ordering;

use super::layout::{control, cursors, PeerSlotState, SideLayout, RING_HEADER_SIZE};
use super::{memfd, view_of, Counters, RawView};
use crate::error::Result;

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

/// What the hub says of a peer slot, beside its memfds.
pub(crate) struct SlotRecord {
    pub id: u32,
    pub epoch: u32,
    pub state: PeerSlotState,
    pub pid: u32,
    pub name: String,
}

/// Checks the seals and sizes of a link's two memfds (received from the hub), maps them
/// read-only and reads them.
pub(crate) fn read_peer(slot: SlotRecord, host: File, cell: File, layout: &SideLayout) -> Result<PeerSnapshot> {
    memfd::check_received(&host, layout.size, memfd::SIZE_SEALS, "the host memory")?;
    memfd::check_received(&cell, layout.size, memfd::SIZE_SEALS, "the cell memory")?;
    let host_map = memfd::map(&host, layout.size, false, "the host memory")?;
    let cell_map = memfd::map(&cell, layout.size, false, "the cell memory")?;
    let (h, c) = (view_of(&host_map), view_of(&cell_map));
    let SlotRecord { id, epoch, state, pid, name } = slot;
    Ok(PeerSnapshot {
        id,
        state,
        epoch,
        pid,
        name,
        host_to_cell_depth: depth(&h, &c, layout.descriptors, cursors::DESCRIPTOR_HEAD),
        cell_to_host_depth: depth(&c, &h, layout.descriptors, cursors::DESCRIPTOR_HEAD),
        host_pool_in_use: in_use(&h, &c, layout),
        cell_pool_in_use: in_use(&c, &h, layout),
        host_counters: counters(&h),
        cell_counters: counters(&c),
    })
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

/// Descriptors waiting in a ring, clamped to its capacity.
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
