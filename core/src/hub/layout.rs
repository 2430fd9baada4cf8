//! Byte layout of the hub file: header, peer table and per-peer regions.
//!
//! Both sides compute every offset from the geometry in the header with the same
//! functions, so a layout change is a change here and in `docs/PROTOCOL.md`.

/// First 8 bytes of every hub file.
pub const MAGIC: [u8; 8] = *b"CELLSHM\0";
/// Layout major version: a mismatch is refused with a clear error.
pub const LAYOUT_MAJOR: u16 = 1;
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
/// Largest region accepted (16 GiB): refuses geometries that overflow or exhaust memory.
pub const MAX_REGION_SIZE: u64 = 16 << 30;

pub(crate) const PAGE: u64 = 4096;
pub(crate) const CACHE_LINE: u64 = 64;
/// The peer table starts here; the header proper is 128 bytes.
pub(crate) const PEER_TABLE_OFFSET: u64 = 256;
pub(crate) const PEER_ENTRY_SIZE: u64 = 64;
/// Longest peer name stored in the peer table.
pub const PEER_NAME_MAX: usize = 48;
/// A ring's header: the producer cursor (tail) at +0, the consumer cursor (head) at +64.
pub(crate) const RING_HEADER_SIZE: u64 = 128;

/// Header field offsets.
pub(crate) mod header {
    pub const MAGIC: usize = 0;
    pub const MAJOR: usize = 8;
    pub const MINOR: usize = 10;
    pub const HOST_PID: usize = 16;
    pub const MAX_PEERS: usize = 20;
    pub const CREATED_UNIX_NS: usize = 24;
    pub const REGION_SIZE: usize = 32;
    pub const REGIONS_OFFSET: usize = 40;
    pub const TOTAL_SIZE: usize = 48;
    pub const RING_CAPACITY: usize = 56;
    pub const CLASS_COUNT: usize = 60;
    /// `MAX_CLASSES` pairs of (slot_size u32, slot_count u32).
    pub const CLASSES: usize = 64;
}

/// Peer-table entry field offsets (each entry is 64 bytes, written by the host only).
pub(crate) mod peer_entry {
    pub const STATE: usize = 0;
    pub const EPOCH: usize = 4;
    pub const PID: usize = 8;
    pub const NAME_LEN: usize = 12;
    pub const NAME: usize = 16;
}

/// Control-block field offsets. The host's block is at region +0 and written by the
/// host only; the cell's block is at region +128 and written by the cell only.
pub(crate) mod control {
    pub const HOST_BLOCK: usize = 0;
    pub const CELL_BLOCK: usize = 128;
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

/// State of a peer-table entry.
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
    /// The cell died or was dropped; the region is not reused yet.
    Dead = 4,
}

impl PeerSlotState {
    /// The state for a raw value read from the table.
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

/// Everything that determines the layout; stored in the header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Geometry {
    /// Peer slots.
    pub max_peers: u32,
    /// Descriptors per ring; a power of two.
    pub ring_capacity: u32,
    /// Slot classes of each pool, smallest first.
    pub classes: Vec<SlotClass>,
}

impl Geometry {
    /// Checks every limit; the message says which one is broken.
    pub fn validate(&self) -> Result<(), String> {
        if self.max_peers == 0 || self.max_peers > MAX_PEERS {
            return Err(format!("max_peers {} is not in 1..={MAX_PEERS}", self.max_peers));
        }
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
        let region = self.unchecked_region_size();
        if region > MAX_REGION_SIZE {
            return Err(format!("a peer region would take {region} bytes (max {MAX_REGION_SIZE})"));
        }
        Ok(())
    }

    /// Largest payload a slot can carry.
    pub fn max_payload(&self) -> u32 {
        self.classes.iter().map(|c| c.slot_size).max().unwrap_or(0)
    }

    fn unchecked_region_size(&self) -> u64 {
        let mut size = 256u64; // two control blocks
        size += 2 * ring_bytes(self.ring_capacity as u64, 64);
        size += 2 * self.pool_bytes();
        round_up(size, PAGE)
    }

    fn total_slots(&self) -> u64 {
        self.classes.iter().map(|c| c.slot_count as u64).sum()
    }

    fn return_ring_capacity(&self) -> u64 {
        self.total_slots().next_power_of_two().max(2)
    }

    fn pool_bytes(&self) -> u64 {
        let slots: u64 = self.classes.iter().map(|c| c.slot_size as u64 * c.slot_count as u64).sum();
        ring_bytes(self.return_ring_capacity(), 8) + slots
    }

    /// Offsets inside one peer region.
    pub(crate) fn region_layout(&self) -> RegionLayout {
        let cap = self.ring_capacity as u64;
        let mut at = 256u64;
        let ring = |entry: u64, capacity: u64, at: &mut u64| {
            let r = RingLayout { offset: *at as usize, capacity };
            *at += ring_bytes(capacity, entry);
            r
        };
        let host_to_cell = ring(64, cap, &mut at);
        let cell_to_host = ring(64, cap, &mut at);
        let pool = |at: &mut u64| {
            let returns = ring(8, self.return_ring_capacity(), at);
            let classes = self
                .classes
                .iter()
                .map(|c| {
                    let l = ClassLayout { offset: *at as usize, slot_size: c.slot_size, slot_count: c.slot_count };
                    *at += c.slot_size as u64 * c.slot_count as u64;
                    l
                })
                .collect();
            PoolLayout { returns, classes }
        };
        let host_pool = pool(&mut at);
        let cell_pool = pool(&mut at);
        RegionLayout { host_to_cell, cell_to_host, host_pool, cell_pool, size: round_up(at, PAGE) }
    }

    /// Offsets of the whole file.
    pub(crate) fn hub_layout(&self) -> HubLayout {
        let regions_offset = round_up(PEER_TABLE_OFFSET + self.max_peers as u64 * PEER_ENTRY_SIZE, PAGE);
        let region_size = self.unchecked_region_size();
        HubLayout { regions_offset, region_size, total_size: regions_offset + region_size * self.max_peers as u64 }
    }
}

fn ring_bytes(capacity: u64, entry: u64) -> u64 {
    RING_HEADER_SIZE + round_up(capacity * entry, CACHE_LINE)
}

pub(crate) fn round_up(v: u64, to: u64) -> u64 {
    v.div_ceil(to) * to
}

/// Offsets of the whole file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct HubLayout {
    pub regions_offset: u64,
    pub region_size: u64,
    pub total_size: u64,
}

impl HubLayout {
    pub fn region_offset(&self, peer: u32) -> u64 {
        self.regions_offset + peer as u64 * self.region_size
    }
}

/// One ring inside a region.
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

/// A pool: its return ring and its slots.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct PoolLayout {
    pub returns: RingLayout,
    pub classes: Vec<ClassLayout>,
}

/// Offsets inside one peer region.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct RegionLayout {
    pub host_to_cell: RingLayout,
    pub cell_to_host: RingLayout,
    /// Slots the host writes (payloads host → cell).
    pub host_pool: PoolLayout,
    /// Slots the cell writes (payloads cell → host).
    pub cell_pool: PoolLayout,
    pub size: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn geometry() -> Geometry {
        Geometry {
            max_peers: 3,
            ring_capacity: 8,
            classes: vec![SlotClass { slot_size: 64, slot_count: 3 }, SlotClass { slot_size: 4096, slot_count: 2 }],
        }
    }

    #[test]
    fn everything_is_aligned_and_disjoint() {
        let g = geometry();
        g.validate().unwrap();
        let r = g.region_layout();
        let mut spans = vec![(0usize, 128usize), (128, 256)];
        for ring in [r.host_to_cell, r.cell_to_host] {
            spans.push((ring.offset, ring.offset + 128 + ring.capacity as usize * 64));
        }
        for pool in [&r.host_pool, &r.cell_pool] {
            assert_eq!(pool.returns.capacity, 8, "5 slots round up to 8 return entries");
            spans.push((pool.returns.offset, pool.returns.offset + 128 + 64));
            for c in &pool.classes {
                assert_eq!(c.offset % 64, 0);
                spans.push((c.offset, c.offset + (c.slot_size * c.slot_count) as usize));
            }
        }
        spans.sort();
        for pair in spans.windows(2) {
            assert!(pair[0].1 <= pair[1].0, "{:?} overlaps {:?}", pair[0], pair[1]);
        }
        assert!(spans.last().unwrap().1 as u64 <= r.size);
        assert_eq!(r.size % PAGE, 0);
        let h = g.hub_layout();
        assert_eq!(h.regions_offset % PAGE, 0);
        assert_eq!(h.total_size, h.regions_offset + 3 * r.size);
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
        g.max_peers = 0;
        assert!(g.validate().is_err());
        let mut g = geometry();
        g.classes = vec![SlotClass { slot_size: 1 << 30, slot_count: 65_536 }];
        assert!(g.validate().unwrap_err().contains("region"));
    }
}
