//! Byte layout of a link's two memfds (protocol 2.0).
//!
//! Every link has two memfds of the same layout: the host writes one (its "side
//! memory"), the cell writes the other. Each holds what its writer produces: a header
//! (written by the host before sealing), the writer's control block, the consumer cursors
//! of the rings the writer *reads*, the descriptor ring it sends on, the return ring on
//! which it hands back slots of the other side's pool, and its own slot pool. So every
//! byte has exactly one writer, and the kernel enforces it: the other side maps the memfd
//! read-only and its seals forbid writes, writable mappings and resizing.
//!
//! Both sides compute every offset from the geometry with the same functions, so a
//! layout change is a change here and in `docs/PROTOCOL.md`.

/// First 8 bytes of both memfds of a link.
pub const MAGIC: [u8; 8] = *b"CELLSHM2";
/// Layout major version: a mismatch is refused with a clear error.
pub const LAYOUT_MAJOR: u16 = 2;
/// Layout minor version: additive changes.
pub const LAYOUT_MINOR: u16 = 0;
/// Most slot classes a pool may have.
pub const MAX_CLASSES: usize = 8;
/// Most peers a hub may have.
pub const MAX_PEERS: u32 = 1024;
/// Slot indices must fit the 24 low bits of the descriptor's `slot` field.
pub const MAX_SLOTS_PER_CLASS: u32 = 1 << 16;
/// Largest slot size accepted (1 GiB).
pub const MAX_SLOT_SIZE: u32 = 1 << 30;
/// Largest side memory accepted (8 GiB): refuses geometries that overflow or exhaust memory.
pub const MAX_SIDE_SIZE: u64 = 8 << 30;

pub(crate) const PAGE: u64 = 4096;
pub(crate) const CACHE_LINE: u64 = 64;
/// Longest peer name a hub keeps.
pub const PEER_NAME_MAX: usize = 48;
/// A ring in its producer's memory: the producer cursor (tail) on its own cache line,
/// then the entries.
pub(crate) const RING_HEADER_SIZE: u64 = 64;

/// Header field offsets (bytes 0..128, written by the host before sealing; never
/// read back by the host, checked by the cell at join).
pub(crate) mod header {
    pub const MAGIC: usize = 0;
    /// u16 major, u16 minor.
    pub const MAJOR: usize = 8;
    pub const MINOR: usize = 10;
    /// u32: 0 = written by the host, 1 = written by the cell.
    pub const WRITER: usize = 12;
    pub const PEER_ID: usize = 16;
    pub const EPOCH: usize = 20;
    pub const HOST_PID: usize = 24;
    pub const RING_CAPACITY: usize = 28;
    /// u64: bytes of this memfd.
    pub const SIZE: usize = 32;
    pub const CREATED_UNIX_NS: usize = 40;
    pub const CLASS_COUNT: usize = 48;
    /// `MAX_CLASSES` pairs of (slot_size u32, slot_count u32).
    pub const CLASSES: usize = 64;
}

/// The writer's control block: bytes 128..256 of its memfd.
pub(crate) mod control {
    pub const BLOCK: usize = 128;
    /// u32: 1 while no thread of the writer polls its receive ring (ring the doorbell).
    pub const PARKED: usize = 0;
    /// u32: the writer's lifecycle state (cell: 0 joining, 1 serving, 2 leaving).
    pub const STATE: usize = 4;
    /// u64 counters from +64: calls sent, requests served, errors, payload bytes sent.
    pub const CALLS_SENT: usize = 64;
    pub const REQUESTS_SERVED: usize = 72;
    pub const ERRORS: usize = 80;
    pub const BYTES_SENT: usize = 88;
    /// u32 per slot class (up to 8): slots of the writer's pool handed out and not yet
    /// returned, published by the pool's allocator (for `cellshm inspect`).
    pub const IN_USE: usize = 96;
}

/// Consumer cursors the writer publishes for the rings the *other* side produces, each
/// on its own cache line.
pub(crate) mod cursors {
    /// u64: head of the other side's descriptor ring.
    pub const DESCRIPTOR_HEAD: usize = 256;
    /// u64: head of the other side's return ring (the slots of our pool it handed back).
    pub const RETURN_HEAD: usize = 320;
}

/// Where the descriptor ring starts.
const RINGS_OFFSET: u64 = 384;

/// State of a peer slot, as the host keeps it (shown by `cellshm inspect`).
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PeerSlotState {
    /// Unused.
    Free = 0,
    /// A ticket was issued; the cell has not joined yet.
    Reserved = 1,
    /// The cell joined.
    Active = 2,
    /// The cell is leaving.
    Draining = 3,
    /// The cell died or was dropped; the slot is not reused yet.
    Dead = 4,
}

impl PeerSlotState {
    /// The state for a raw value.
    pub fn from_raw(raw: u32) -> Option<PeerSlotState> {
        Some(match raw {
            0 => PeerSlotState::Free,
            1 => PeerSlotState::Reserved,
            2 => PeerSlotState::Active,
            3 => PeerSlotState::Draining,
            4 => PeerSlotState::Dead,
            _ => return None,
        })
    }
}

/// One size class of a slot pool.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SlotClass {
    /// Bytes per slot; a multiple of 64.
    pub slot_size: u32,
    /// Slots of this size.
    pub slot_count: u32,
}

/// Everything that determines a link's layout; sent in the join record and repeated in
/// each memfd's header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Geometry {
    /// Descriptors per ring; a power of two.
    pub ring_capacity: u32,
    /// Slot classes of each pool, smallest first.
    pub classes: Vec<SlotClass>,
}

impl Geometry {
    /// Checks every limit; the message says which one is broken.
    pub fn validate(&self) -> Result<(), String> {
        let cap = self.ring_capacity;
        if !(2..=65_536).contains(&cap) || !cap.is_power_of_two() {
            return Err(format!("ring_capacity {cap} is not a power of two in 2..=65536"));
        }
        if self.classes.is_empty() || self.classes.len() > MAX_CLASSES {
            return Err(format!("{} slot classes (1..={MAX_CLASSES} allowed)", self.classes.len()));
        }
        let mut previous = 0;
        for (i, c) in self.classes.iter().enumerate() {
            if c.slot_size < 64 || c.slot_size > MAX_SLOT_SIZE || c.slot_size % 64 != 0 {
                return Err(format!("class {i}: slot_size {} is not a multiple of 64 in 64..=1GiB", c.slot_size));
            }
            if c.slot_size <= previous {
                return Err(format!("class {i}: slot sizes must increase"));
            }
            if c.slot_count == 0 || c.slot_count > MAX_SLOTS_PER_CLASS {
                return Err(format!("class {i}: slot_count {} is not in 1..={MAX_SLOTS_PER_CLASS}", c.slot_count));
            }
            previous = c.slot_size;
        }
        let size = self.unchecked_layout().size;
        if size > MAX_SIDE_SIZE {
            return Err(format!("each side of a link would take {size} bytes (max {MAX_SIDE_SIZE})"));
        }
        Ok(())
    }

    /// Writes the class table as it appears in the join record and the memfd headers:
    /// (slot_size u32, slot_count u32) per class, little-endian, from `out[0]`.
    pub(crate) fn put_classes(&self, out: &mut [u8]) {
        for (pair, c) in out.chunks_exact_mut(8).zip(self.classes.iter().take(MAX_CLASSES)) {
            pair[..4].copy_from_slice(&c.slot_size.to_le_bytes());
            pair[4..].copy_from_slice(&c.slot_count.to_le_bytes());
        }
    }

    /// Largest payload a slot can carry.
    pub fn max_payload(&self) -> u32 {
        self.classes.iter().map(|c| c.slot_size).max().unwrap_or(0)
    }

    fn total_slots(&self) -> u64 {
        self.classes.iter().map(|c| c.slot_count as u64).sum()
    }

    /// The return ring holds every slot of the other side's pool at once, so handing a
    /// slot back never waits.
    fn return_ring_capacity(&self) -> u64 {
        self.total_slots().next_power_of_two().max(2)
    }

    /// Offsets inside one memfd (the same for both sides of a link). Only meaningful
    /// for a geometry that [`Geometry::validate`] accepted.
    pub(crate) fn side_layout(&self) -> SideLayout {
        self.unchecked_layout()
    }

    fn unchecked_layout(&self) -> SideLayout {
        let mut at = RINGS_OFFSET;
        let mut ring = |entry: u64, capacity: u64| {
            let r = RingLayout { offset: at as usize, capacity };
            at += ring_bytes(capacity, entry);
            r
        };
        let descriptors = ring(crate::wire::RING_ENTRY_SIZE as u64, self.ring_capacity as u64);
        let returns = ring(8, self.return_ring_capacity());
        let classes = self
            .classes
            .iter()
            .map(|c| {
                let l = ClassLayout { offset: at as usize, slot_size: c.slot_size, slot_count: c.slot_count };
                at += c.slot_size as u64 * c.slot_count as u64;
                l
            })
            .collect();
        SideLayout { descriptors, returns, classes, size: round_up(at, PAGE) }
    }
}

fn ring_bytes(capacity: u64, entry: u64) -> u64 {
    RING_HEADER_SIZE + round_up(capacity * entry, CACHE_LINE)
}

pub(crate) fn round_up(v: u64, to: u64) -> u64 {
    v.div_ceil(to) * to
}

/// One ring inside its producer's memfd.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct RingLayout {
    pub offset: usize,
    pub capacity: u64,
}

/// One slot class inside a pool.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ClassLayout {
    pub offset: usize,
    pub slot_size: u32,
    pub slot_count: u32,
}

/// Offsets inside one memfd.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct SideLayout {
    /// The descriptor ring this side sends on.
    pub descriptors: RingLayout,
    /// The ring on which this side returns slots of the other side's pool.
    pub returns: RingLayout,
    /// This side's slot pool (the payloads it sends).
    pub classes: Vec<ClassLayout>,
    /// Bytes of the memfd.
    pub size: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn geometry() -> Geometry {
        Geometry {
            ring_capacity: 8,
            classes: vec![SlotClass { slot_size: 64, slot_count: 3 }, SlotClass { slot_size: 4096, slot_count: 2 }],
        }
    }

    #[test]
    fn everything_is_aligned_and_disjoint() {
        let g = geometry();
        g.validate().unwrap();
        let l = g.side_layout();
        let mut spans = vec![(0usize, 128usize), (control::BLOCK, control::BLOCK + 128)];
        spans.push((cursors::DESCRIPTOR_HEAD, cursors::DESCRIPTOR_HEAD + 64));
        spans.push((cursors::RETURN_HEAD, cursors::RETURN_HEAD + 64));
        spans.push((l.descriptors.offset, l.descriptors.offset + 64 + 8 * 64));
        assert_eq!(l.returns.capacity, 8, "5 slots round up to 8 return entries");
        spans.push((l.returns.offset, l.returns.offset + 64 + 64));
        for c in &l.classes {
            assert_eq!(c.offset % 64, 0);
            spans.push((c.offset, c.offset + (c.slot_size * c.slot_count) as usize));
        }
        spans.sort();
        for pair in spans.windows(2) {
            assert!(pair[0].1 <= pair[1].0, "{:?} overlaps {:?}", pair[0], pair[1]);
        }
        for (start, _) in &spans {
            assert_eq!(start % 64, 0, "every field group starts on its own cache line");
        }
        assert!(spans.last().unwrap().1 as u64 <= l.size);
        assert_eq!(l.size % PAGE, 0);
    }

    #[test]
    fn bad_geometry_is_refused_with_a_reason() {
        let mut g = geometry();
        g.ring_capacity = 6;
        assert!(g.validate().unwrap_err().contains("power of two"));
        let mut g = geometry();
        g.classes[1].slot_size = 100;
        assert!(g.validate().unwrap_err().contains("multiple of 64"));
        let mut g = geometry();
        g.classes.swap(0, 1);
        assert!(g.validate().unwrap_err().contains("increase"));
        let mut g = geometry();
        g.classes.clear();
        assert!(g.validate().is_err());
        let mut g = geometry();
        g.classes = vec![SlotClass { slot_size: 1 << 30, slot_count: 65_536 }];
        assert!(g.validate().unwrap_err().contains("each side"));
    }
}
