//! Shared memory of protocol 2.0: per link, two sealed memfds with one writer each.
//!
//! The host creates both memfds of a link (see [`layout`] for what each holds), maps its
//! own read-write and the cell's read-only, seals them, and hands the cell a read-only
//! descriptor of the host's memory and a read-write one of the cell's (see [`join`]).
//! There is no hub file: nothing of a hub exists outside its processes, and no process
//! ever sees another link's memory. Everything that crosses a mapping goes through
//! atomics or volatile copies, never through Rust references.

pub(crate) mod inspect;
pub(crate) mod join;
pub(crate) mod layout;
pub(crate) mod memfd;
pub(crate) mod pool;
pub(crate) mod ring;
pub mod shared_bytes;

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::ptr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use memmap2::MmapRaw;

use crate::error::{Error, Result};
use crate::wire::Status;
pub(crate) use join::JoinRecord;
use layout::{control, cursors, header, SideLayout, MAGIC, RING_HEADER_SIZE};
pub use layout::{Geometry, PeerSlotState, SlotClass, LAYOUT_MAJOR, LAYOUT_MINOR, PEER_NAME_MAX};
pub use shared_bytes::SharedBytes;

/// How a hub is shaped. The defaults suit a few dozen cells exchanging messages from
/// bytes to 1 MiB; everything is configurable.
#[derive(Clone, Debug)]
pub struct HubConfig {
    /// The hub's name, unique among the live hubs of this user: `cellshm list` shows it
    /// and `cellshm inspect` and attaching find the hub by it. `None` picks
    /// `hub-<pid>-<n>`.
    pub name: Option<String>,
    /// Also listen on this filesystem path (for containers that share a directory but
    /// not the network namespace, where abstract sockets live). Unlike the abstract
    /// socket, a path outlives a host that is killed; the next hub to bind it takes it
    /// over if nobody answers there.
    pub socket_path: Option<std::path::PathBuf>,
    /// Peer slots.
    pub max_peers: u32,
    /// Descriptors per ring (power of two).
    pub ring_capacity: u32,
    /// Slot classes of each pool, smallest first. The largest slot size is the largest
    /// payload a call can carry.
    pub slot_classes: Vec<SlotClass>,
    /// How long dropping the hub waits for its cells to leave after GOODBYE (2 s).
    pub shutdown_grace: std::time::Duration,
}

impl Default for HubConfig {
    fn default() -> Self {
        HubConfig {
            name: None,
            socket_path: None,
            max_peers: 8,
            ring_capacity: 256,
            slot_classes: vec![
                SlotClass { slot_size: 256, slot_count: 256 },
                SlotClass { slot_size: 4 << 10, slot_count: 128 },
                SlotClass { slot_size: 64 << 10, slot_count: 32 },
                SlotClass { slot_size: 1 << 20, slot_count: 4 },
            ],
            shutdown_grace: std::time::Duration::from_secs(2),
        }
    }
}

impl HubConfig {
    pub(crate) fn geometry(&self) -> Geometry {
        Geometry { ring_capacity: self.ring_capacity, classes: self.slot_classes.clone() }
    }

    /// Checks every limit; the error says which one is broken.
    pub(crate) fn validate(&self) -> Result<()> {
        let bad = |m: String| Error::new(Status::InvalidArgument, format!("hub configuration: {m}"));
        if self.max_peers == 0 || self.max_peers > layout::MAX_PEERS {
            return Err(bad(format!("max_peers {} is not in 1..={}", self.max_peers, layout::MAX_PEERS)));
        }
        self.geometry().validate().map_err(bad)
    }
}

/// Reads and writes of plain fields in a mapping. Values are copied with volatile
/// accesses: the other process may change them at any time, and we never hold a
/// reference into memory it writes.
#[derive(Clone, Copy, Debug)]
pub(crate) struct RawView {
    base: *mut u8,
    len: usize,
}

// SAFETY: a RawView is a pointer into a MAP_SHARED mapping that its owner keeps alive;
// every access is volatile or atomic, so sharing it between threads is as safe as
// sharing it between processes.
unsafe impl Send for RawView {}
// SAFETY: as above.
unsafe impl Sync for RawView {}

impl RawView {
    fn check(&self, offset: usize, size: usize) {
        // Offsets come from validated layouts; this is a bug guard, not input checking.
        assert!(offset.checked_add(size).is_some_and(|end| end <= self.len), "offset {offset} outside mapping");
    }

    pub fn read_u32(&self, offset: usize) -> u32 {
        self.check(offset, 4);
        let mut b = [0u8; 4];
        // SAFETY: in bounds (checked above) of a live mapping; volatile because another
        // process may write it; byte-wise copy has no alignment requirement.
        unsafe { ptr::copy_nonoverlapping(self.base.add(offset), b.as_mut_ptr(), 4) };
        u32::from_le_bytes(b)
    }

    pub fn read_u64(&self, offset: usize) -> u64 {
        (self.read_u32(offset) as u64) | ((self.read_u32(offset + 4) as u64) << 32)
    }

    pub fn read_bytes(&self, offset: usize, out: &mut [u8]) {
        self.check(offset, out.len());
        // SAFETY: in bounds of a live mapping; `out` is a private buffer.
        unsafe { ptr::copy_nonoverlapping(self.base.add(offset), out.as_mut_ptr(), out.len()) };
    }

    pub fn atomic_u32(&self, offset: usize) -> &AtomicU32 {
        self.check(offset, 4);
        assert_eq!(offset % 4, 0);
        // SAFETY: in bounds and 4-aligned (mapping bases are page-aligned); AtomicU32 has
        // the layout of u32 and atomics are the sanctioned way to share memory across
        // processes. The mapping outlives the view's users (owner keeps it alive).
        unsafe { &*(self.base.add(offset) as *const AtomicU32) }
    }

    pub fn atomic_u64(&self, offset: usize) -> &AtomicU64 {
        self.check(offset, 8);
        assert_eq!(offset % 8, 0);
        // SAFETY: as for `atomic_u32`, with 8-byte alignment.
        unsafe { &*(self.base.add(offset) as *const AtomicU64) }
    }

    pub fn sub(&self, offset: usize, len: usize) -> RawView {
        self.check(offset, len);
        // SAFETY: in bounds (checked above).
        let base = unsafe { self.base.add(offset) };
        RawView { base, len }
    }

    pub fn ptr(&self, offset: usize) -> *mut u8 {
        self.check(offset, 0);
        // SAFETY: in bounds (checked above).
        unsafe { self.base.add(offset) }
    }
}

/// A ring across the two memfds of a link: entries and the producer cursor (tail) in
/// the producer's memory, the consumer cursor (head) in the consumer's, as
/// [`ring::RingMemory`] for entries of type `E`.
#[derive(Debug)]
pub(crate) struct ShmRing<E> {
    /// Tail at +0, entries from +64.
    entries: RawView,
    /// The consumer cursor (8 bytes).
    head: RawView,
    capacity: u64,
    _keep: [Arc<MmapRaw>; 2],
    _entry: std::marker::PhantomData<E>,
}

// SAFETY: see RawView; the Arcs keep both mappings alive.
unsafe impl<E> Send for ShmRing<E> {}

impl<E> ShmRing<E> {
    fn entry_ptr(&self, index: usize) -> *mut E {
        debug_assert!((index as u64) < self.capacity);
        self.entries.ptr(RING_HEADER_SIZE as usize + index * std::mem::size_of::<E>()) as *mut E
    }
}

impl<E: Copy> ring::RingMemory for ShmRing<E> {
    type Entry = E;
    fn capacity(&self) -> u64 {
        self.capacity
    }
    fn load_head(&self, order: Ordering) -> u64 {
        self.head.atomic_u64(0).load(order)
    }
    fn store_head(&self, value: u64, order: Ordering) {
        self.head.atomic_u64(0).store(value, order)
    }
    fn load_tail(&self, order: Ordering) -> u64 {
        self.entries.atomic_u64(0).load(order)
    }
    fn store_tail(&self, value: u64, order: Ordering) {
        self.entries.atomic_u64(0).store(value, order)
    }
    unsafe fn write(&self, index: usize, entry: E) {
        // SAFETY: index < capacity (ring logic masks it), entries are 8-aligned; the ring
        // protocol makes us the only writer of this entry right now, and the producer's
        // memory is mapped writable only in the producer.
        unsafe { ptr::write_volatile(self.entry_ptr(index), entry) }
    }
    unsafe fn read(&self, index: usize) -> E {
        // SAFETY: index < capacity; volatile because a misbehaving peer may write it
        // concurrently, which can only give us garbage that validation then rejects.
        unsafe { ptr::read_volatile(self.entry_ptr(index)) }
    }
}

/// A descriptor ring entry as stored: eight little-endian words.
pub(crate) type DescriptorWords = [u64; 8];

/// The word of a descriptor entry that carries its lap parity (flags and status), and
/// the bit: the top bit of `flags`, which no descriptor uses (`wire::flags::LAP`).
const LAP_WORD: usize = 2;
const LAP_BIT: u64 = crate::wire::flags::LAP as u64;

impl ShmRing<DescriptorWords> {
    /// The word of entry `index` that carries its lap parity.
    fn lap_word(&self, index: usize) -> &AtomicU64 {
        self.entries
            .atomic_u64(RING_HEADER_SIZE as usize + index * std::mem::size_of::<DescriptorWords>() + LAP_WORD * 8)
    }
}

impl ring::LapTagged for ShmRing<DescriptorWords> {
    unsafe fn write_with_lap(&self, index: usize, entry: DescriptorWords, lap: bool) {
        let at = self.entry_ptr(index) as *mut u64;
        for (i, word) in entry.iter().enumerate() {
            if i != LAP_WORD {
                // SAFETY: as in `write`: `at` points at this entry's 8 words, ours to write.
                unsafe { ptr::write_volatile(at.add(i), *word) };
            }
        }
        let tagged = (entry[LAP_WORD] & !LAP_BIT) | if lap { LAP_BIT } else { 0 };
        // Release: the consumer that sees this parity sees the words written above.
        self.lap_word(index).store(tagged, Ordering::Release);
    }

    unsafe fn read_if_lap(&self, index: usize, lap: bool) -> Option<DescriptorWords> {
        let tagged = self.lap_word(index).load(Ordering::Acquire);
        if (tagged & LAP_BIT != 0) != lap {
            return None;
        }
        let at = self.entry_ptr(index) as *const u64;
        let mut words = [0u64; 8];
        for (i, word) in words.iter_mut().enumerate() {
            *word = if i == LAP_WORD {
                tagged & !LAP_BIT
            } else {
                // SAFETY: as in `read`: volatile, since a misbehaving peer may write it.
                unsafe { ptr::read_volatile(at.add(i)) }
            };
        }
        Some(words)
    }
}

/// Converts between ring entries and descriptors.
pub(crate) fn words_to_descriptor(words: DescriptorWords) -> crate::wire::Descriptor {
    let mut bytes = [0u8; 64];
    for (i, w) in words.iter().enumerate() {
        bytes[i * 8..i * 8 + 8].copy_from_slice(&w.to_le_bytes());
    }
    crate::wire::Descriptor::decode(&bytes)
}

pub(crate) fn descriptor_to_words(d: &crate::wire::Descriptor) -> DescriptorWords {
    let bytes = d.encode();
    let mut words = [0u64; 8];
    for (i, w) in words.iter_mut().enumerate() {
        let mut b = [0u8; 8];
        b.copy_from_slice(&bytes[i * 8..i * 8 + 8]);
        *w = u64::from_le_bytes(b);
    }
    words
}

/// What a cell knows of the hub it joined (from its join record).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HubInfo {
    /// The hub's name.
    pub name: String,
    /// Layout version (major, minor).
    pub version: (u16, u16),
    /// The host's process id.
    pub host_pid: u32,
    /// Our peer slot.
    pub peer_id: u32,
    /// The slot's launch counter.
    pub epoch: u32,
    /// Ring and pool shape of the link.
    pub geometry: Geometry,
}

impl From<&JoinRecord> for HubInfo {
    fn from(r: &JoinRecord) -> HubInfo {
        HubInfo {
            name: r.hub_name.clone(),
            version: (LAYOUT_MAJOR, LAYOUT_MINOR),
            host_pid: r.host_pid,
            peer_id: r.peer_id,
            epoch: r.epoch,
            geometry: r.geometry.clone(),
        }
    }
}

/// Counters each side keeps in its control block.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Calls and notifications sent.
    pub calls_sent: u64,
    /// Requests handled (successfully or not).
    pub requests_served: u64,
    /// Requests answered with an error.
    pub errors: u64,
    /// Payload bytes sent.
    pub bytes_sent: u64,
}

/// Which end of a link this process is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Side {
    Host,
    Cell,
}

impl Side {
    pub fn other(self) -> Side {
        match self {
            Side::Host => Side::Cell,
            Side::Cell => Side::Host,
        }
    }

    fn index(self) -> usize {
        match self {
            Side::Host => 0,
            Side::Cell => 1,
        }
    }
}

/// One memfd of a link as mapped here.
#[derive(Clone, Debug)]
struct SideMemory {
    view: RawView,
    keep: Arc<MmapRaw>,
}

impl SideMemory {
    fn new(keep: Arc<MmapRaw>) -> SideMemory {
        SideMemory { view: view_of(&keep), keep }
    }
}

/// Both memfds of one link, mapped by the host or by that cell: our own memory
/// read-write, the other side's read-only.
#[derive(Clone, Debug)]
pub(crate) struct Region {
    memory: [SideMemory; 2],
    layout: Arc<SideLayout>,
}

impl Region {
    pub fn layout(&self) -> &SideLayout {
        &self.layout
    }

    /// The memory written by `side`.
    pub fn view(&self, side: Side) -> RawView {
        self.memory[side.index()].view
    }

    /// The parked flag written by `side`.
    pub fn parked(&self, side: Side) -> &AtomicU32 {
        self.memory[side.index()].view.atomic_u32(control::BLOCK + control::PARKED)
    }

    /// The lifecycle word written by `side`.
    pub fn state_word(&self, side: Side) -> &AtomicU32 {
        self.memory[side.index()].view.atomic_u32(control::BLOCK + control::STATE)
    }

    /// A counter written by `side` (offset from `layout::control`).
    pub fn counter(&self, side: Side, field: usize) -> &AtomicU64 {
        self.memory[side.index()].view.atomic_u64(control::BLOCK + field)
    }

    /// The descriptor ring `from` sends on.
    pub fn ring(&self, from: Side) -> ShmRing<DescriptorWords> {
        self.ring_between(from, self.layout.descriptors, cursors::DESCRIPTOR_HEAD)
    }

    /// The ring on which the receiver of `pool_of`'s slots hands them back.
    pub fn return_ring(&self, pool_of: Side) -> ShmRing<u64> {
        self.ring_between(pool_of.other(), self.layout.returns, cursors::RETURN_HEAD)
    }

    fn ring_between<E>(&self, producer: Side, ring: layout::RingLayout, head_at: usize) -> ShmRing<E> {
        let bytes = RING_HEADER_SIZE as usize + ring.capacity as usize * std::mem::size_of::<E>();
        let consumer = producer.other();
        ShmRing {
            entries: self.view(producer).sub(ring.offset, bytes),
            head: self.view(consumer).sub(head_at, 8),
            capacity: ring.capacity,
            _keep: [self.memory[producer.index()].keep.clone(), self.memory[consumer.index()].keep.clone()],
            _entry: Default::default(),
        }
    }
}

fn view_of(map: &MmapRaw) -> RawView {
    RawView { base: map.as_mut_ptr(), len: map.len() }
}

fn header_bytes(record: &JoinRecord, writer: Side, size: u64) -> [u8; 128] {
    let mut out = [0u8; 128];
    let mut put = |off: usize, bytes: &[u8]| out[off..off + bytes.len()].copy_from_slice(bytes);
    put(header::MAGIC, &MAGIC);
    put(header::MAJOR, &LAYOUT_MAJOR.to_le_bytes());
    put(header::MINOR, &LAYOUT_MINOR.to_le_bytes());
    put(header::WRITER, &(writer.index() as u32).to_le_bytes());
    put(header::PEER_ID, &record.peer_id.to_le_bytes());
    put(header::EPOCH, &record.epoch.to_le_bytes());
    put(header::HOST_PID, &record.host_pid.to_le_bytes());
    put(header::RING_CAPACITY, &record.geometry.ring_capacity.to_le_bytes());
    put(header::SIZE, &size.to_le_bytes());
    let created = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0);
    put(header::CREATED_UNIX_NS, &created.to_le_bytes());
    put(header::CLASS_COUNT, &(record.geometry.classes.len() as u32).to_le_bytes());
    record.geometry.put_classes(&mut out[header::CLASSES..header::CLASSES + 8 * layout::MAX_CLASSES]);
    out
}

/// The host's side of one link's memory.
#[derive(Debug)]
pub(crate) struct LinkMemory {
    pub region: Region,
    /// Read-only descriptors of both memfds: for the cell (host memory) and for
    /// `cellshm inspect` (both).
    host_read_only: File,
    cell_read_only: File,
}

/// What a cell receives to join: the record and the two memfds it describes.
#[derive(Debug)]
pub(crate) struct JoinHandoff {
    pub record: JoinRecord,
    /// Host memory, read-only descriptor.
    pub host_memory: File,
    /// Cell memory, read-write descriptor.
    pub cell_memory: File,
}

impl LinkMemory {
    /// Creates, fills, maps and seals both memfds of a new link described by `record`.
    pub fn create(record: &JoinRecord) -> Result<(LinkMemory, JoinHandoff)> {
        let layout = record.geometry.side_layout();
        let name = |side: &str| format!("cellshm:{}:{}:{side}", record.hub_name, record.peer_id);
        let host = memfd::create(&name("host"), layout.size)?;
        let cell = memfd::create(&name("cell"), layout.size)?;
        for (file, side) in [(&host, Side::Host), (&cell, Side::Cell)] {
            file.write_all_at(&header_bytes(record, side, layout.size), 0)
                .map_err(|e| Error::system("writing a memfd header", e))?;
        }
        // Our writable mapping is made before FUTURE_WRITE, which forbids new ones.
        let host_map = memfd::map(&host, layout.size, true, "the host memory")?;
        memfd::seal(&host, memfd::READ_ONLY_SEALS)?;
        memfd::seal(&cell, memfd::SIZE_SEALS)?;
        let cell_map = memfd::map(&cell, layout.size, false, "the cell memory")?;
        let region =
            Region { memory: [SideMemory::new(host_map), SideMemory::new(cell_map)], layout: Arc::new(layout) };
        // Nobody polls either ring yet: senders must ring the doorbell. The cell's flag
        // is set by the cell when it joins.
        region.parked(Side::Host).store(1, Ordering::SeqCst);
        let host_read_only = memfd::reopen_read_only(&host)?;
        let cell_read_only = memfd::reopen_read_only(&cell)?;
        let host_for_cell = host_read_only.try_clone().map_err(|e| Error::system("duplicating a memfd", e))?;
        drop(host);
        let link = LinkMemory { region, host_read_only, cell_read_only };
        Ok((link, JoinHandoff { record: record.clone(), host_memory: host_for_cell, cell_memory: cell }))
    }

    /// Read-only descriptors of (host memory, cell memory), for `cellshm inspect`.
    pub fn read_only_files(&self) -> (&File, &File) {
        (&self.host_read_only, &self.cell_read_only)
    }
}

impl JoinHandoff {
    /// The cell's side: checks the memfds against the record (seals, sizes, headers)
    /// and maps them, host memory read-only and ours read-write.
    pub fn map_as_cell(&self) -> Result<Region> {
        let layout = self.record.geometry.side_layout();
        memfd::check_received(&self.host_memory, layout.size, memfd::READ_ONLY_SEALS, "the host memory")?;
        memfd::check_received(&self.cell_memory, layout.size, memfd::SIZE_SEALS, "the cell memory")?;
        let host_map = memfd::map(&self.host_memory, layout.size, false, "the host memory")?;
        let cell_map = memfd::map(&self.cell_memory, layout.size, true, "the cell memory")?;
        for (map, side) in [(&host_map, Side::Host), (&cell_map, Side::Cell)] {
            let mut found = [0u8; 128];
            view_of(map).read_bytes(0, &mut found);
            let mut expected = header_bytes(&self.record, side, layout.size);
            // The creation time is not part of the record.
            expected[header::CREATED_UNIX_NS..header::CREATED_UNIX_NS + 8]
                .copy_from_slice(&found[header::CREATED_UNIX_NS..header::CREATED_UNIX_NS + 8]);
            if found != expected {
                return Err(Error::new(
                    Status::ProtocolError,
                    format!("the header of the {side:?} memory does not match the join record"),
                ));
            }
        }
        Ok(Region { memory: [SideMemory::new(host_map), SideMemory::new(cell_map)], layout: Arc::new(layout) })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn record(geometry: Geometry) -> JoinRecord {
        JoinRecord { peer_id: 0, epoch: 1, host_pid: std::process::id(), hub_name: "unit".into(), geometry }
    }

    #[test]
    fn both_sides_map_one_link_and_see_each_others_writes() {
        let (link, handoff) = LinkMemory::create(&record(HubConfig::default().geometry())).unwrap();
        let cell = handoff.map_as_cell().unwrap();
        cell.parked(Side::Cell).store(1, Ordering::SeqCst);
        assert_eq!(link.region.parked(Side::Cell).load(Ordering::SeqCst), 1);
        link.region.counter(Side::Host, control::CALLS_SENT).store(5, Ordering::SeqCst);
        assert_eq!(cell.counter(Side::Host, control::CALLS_SENT).load(Ordering::SeqCst), 5);
        assert_eq!(cell.parked(Side::Host).load(Ordering::SeqCst), 1, "the host starts parked");
        let (h, c) = link.read_only_files();
        assert!(memfd::map(h, link.region.layout().size, true, "x").is_err());
        assert!(memfd::map(c, link.region.layout().size, true, "x").is_err());
    }

    #[test]
    fn a_cell_refuses_memory_that_does_not_match_its_record() {
        let (_link, mut handoff) = LinkMemory::create(&record(HubConfig::default().geometry())).unwrap();
        handoff.record.epoch = 2;
        assert!(handoff.map_as_cell().unwrap_err().message().contains("does not match"));
        let (_link, mut handoff) = LinkMemory::create(&record(HubConfig::default().geometry())).unwrap();
        std::mem::swap(&mut handoff.host_memory, &mut handoff.cell_memory);
        assert!(handoff.map_as_cell().unwrap_err().message().contains("seals"));
        let unsealed = memfd::create("unsealed", 4096).unwrap();
        let (_link, mut handoff) = LinkMemory::create(&record(HubConfig::default().geometry())).unwrap();
        handoff.cell_memory = unsealed;
        assert!(handoff.map_as_cell().unwrap_err().message().contains("seals"));
    }
}
