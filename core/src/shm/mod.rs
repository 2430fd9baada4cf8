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
pub(crate) mod topic;

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::ptr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use memmap2::MmapRaw;

use crate::error::{Error, Result};
use crate::wire::{self, Status};
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

/// A descriptor ring entry as stored: sixteen little-endian words, two cache lines.
/// Words 0..8 are the descriptor; words 8..16 carry the bytes of an inline payload past
/// the descriptor's 16 (`wire::INLINE_CAPACITY`), and are written and read only when
/// the descriptor says its payload has such bytes, so a small frame moves one line.
pub(crate) type EntryWords = [u64; crate::wire::frame::ENTRY_WORDS];

/// The words of an entry (`wire::frame`): the descriptor's, the one with the lap parity
/// (flags and status), the one with `payload_len` and `slot`.
use crate::wire::frame::{DESCRIPTOR_WORDS, LAP_WORD, LEN_SLOT_WORD};

/// The lap parity: the top bit of `flags`, which no descriptor uses (`wire::flags::LAP`).
const LAP_BIT: u64 = crate::wire::flags::LAP as u64;

/// Whether an entry's second line is in use, from its descriptor words: an inline
/// payload longer than the descriptor holds. (A peer may claim any length: the
/// descriptor's shape check refuses more than `INLINE_CAPACITY` afterwards.)
fn uses_extension(words: &[u64]) -> bool {
    let len_slot = words[LEN_SLOT_WORD];
    wire::entry_extension_used((len_slot >> 32) as u32, len_slot as u32)
}

impl ShmRing<EntryWords> {
    /// The word of entry `index` that carries its lap parity.
    fn lap_word(&self, index: usize) -> &AtomicU64 {
        self.entries.atomic_u64(RING_HEADER_SIZE as usize + index * std::mem::size_of::<EntryWords>() + LAP_WORD * 8)
    }
}

impl ring::LapTagged for ShmRing<EntryWords> {
    unsafe fn write_with_lap(&self, index: usize, entry: EntryWords, lap: bool) {
        let at = self.entry_ptr(index) as *mut u64;
        let used = if uses_extension(&entry) { entry.len() } else { DESCRIPTOR_WORDS };
        for (i, word) in entry[..used].iter().enumerate() {
            if i != LAP_WORD {
                // SAFETY: as in `write`: `at` points at this entry's 16 words, ours to write.
                unsafe { ptr::write_volatile(at.add(i), *word) };
            }
        }
        let tagged = (entry[LAP_WORD] & !LAP_BIT) | if lap { LAP_BIT } else { 0 };
        // Release: the consumer that sees this parity sees the words written above.
        self.lap_word(index).store(tagged, Ordering::Release);
    }

    fn holds_lap(&self, index: usize, lap: bool) -> bool {
        (self.lap_word(index).load(Ordering::Acquire) & LAP_BIT != 0) == lap
    }

    unsafe fn read_if_lap(&self, index: usize, lap: bool) -> Option<EntryWords> {
        let tagged = self.lap_word(index).load(Ordering::Acquire);
        if (tagged & LAP_BIT != 0) != lap {
            return None;
        }
        let at = self.entry_ptr(index) as *const u64;
        let mut words: EntryWords = [0; crate::wire::frame::ENTRY_WORDS];
        for (i, word) in words[..DESCRIPTOR_WORDS].iter_mut().enumerate() {
            *word = if i == LAP_WORD {
                tagged & !LAP_BIT
            } else {
                // SAFETY: as in `read`: volatile, since a misbehaving peer may write it.
                unsafe { ptr::read_volatile(at.add(i)) }
            };
        }
        if uses_extension(&words) {
            for (i, word) in words.iter_mut().enumerate().skip(DESCRIPTOR_WORDS) {
                // SAFETY: as above; the entry has 16 words.
                *word = unsafe { ptr::read_volatile(at.add(i)) };
            }
        }
        Some(words)
    }
}

/// A frame as it travels on a descriptor ring: the descriptor, and the inline payload
/// bytes past its own 16 (zero unless `Descriptor::uses_entry_extension`).
#[derive(Debug)]
pub(crate) struct Frame {
    pub desc: crate::wire::Descriptor,
    pub extension: [u8; wire::INLINE_CAPACITY - wire::DESCRIPTOR_INLINE],
}

impl Frame {
    /// A frame whose payload (if any) fits the descriptor or lies in a slot.
    pub fn bare(desc: crate::wire::Descriptor) -> Frame {
        Frame { desc, extension: [0; wire::INLINE_CAPACITY - wire::DESCRIPTOR_INLINE] }
    }

    /// A descriptor with an inline payload of `bytes` (at most `INLINE_CAPACITY`).
    pub fn inline(mut desc: crate::wire::Descriptor, bytes: &[u8]) -> Frame {
        debug_assert!(bytes.len() <= wire::INLINE_CAPACITY);
        let (head, rest) = bytes.split_at(bytes.len().min(wire::DESCRIPTOR_INLINE));
        desc.slot = wire::SLOT_INLINE;
        desc.payload_len = bytes.len() as u32;
        desc.inline = [0; wire::DESCRIPTOR_INLINE];
        desc.inline[..head.len()].copy_from_slice(head);
        let mut frame = Frame::bare(desc);
        frame.extension[..rest.len()].copy_from_slice(rest);
        frame
    }

    /// The inline payload (descriptor bytes, then extension bytes); only meaningful for
    /// an inline frame whose shape check passed.
    pub fn inline_payload(&self) -> ([u8; wire::INLINE_CAPACITY], usize) {
        let len = (self.desc.payload_len as usize).min(wire::INLINE_CAPACITY);
        let mut bytes = [0u8; wire::INLINE_CAPACITY];
        bytes[..wire::DESCRIPTOR_INLINE].copy_from_slice(&self.desc.inline);
        bytes[wire::DESCRIPTOR_INLINE..].copy_from_slice(&self.extension);
        (bytes, len)
    }

    pub fn from_words(words: EntryWords) -> Frame {
        let mut bytes = [0u8; wire::DESCRIPTOR_SIZE];
        for (i, w) in words[..DESCRIPTOR_WORDS].iter().enumerate() {
            bytes[i * 8..i * 8 + 8].copy_from_slice(&w.to_le_bytes());
        }
        let mut frame = Frame::bare(crate::wire::Descriptor::decode(&bytes));
        if uses_extension(&words) {
            for (chunk, w) in frame.extension.chunks_exact_mut(8).zip(&words[DESCRIPTOR_WORDS..]) {
                chunk.copy_from_slice(&w.to_le_bytes());
            }
        }
        frame
    }

    pub fn to_words(&self) -> EntryWords {
        let bytes = self.desc.encode();
        let mut words: EntryWords = [0; crate::wire::frame::ENTRY_WORDS];
        let descriptor_then_extension = bytes.chunks_exact(8).chain(self.extension.chunks_exact(8));
        for (w, chunk) in words.iter_mut().zip(descriptor_then_extension) {
            let mut b = [0u8; 8];
            b.copy_from_slice(chunk);
            *w = u64::from_le_bytes(b);
        }
        words
    }
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
    pub fn ring(&self, from: Side) -> ShmRing<EntryWords> {
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
    // The cell compares the headers with the record's minor, not its own constant.
    put(header::MINOR, &record.layout_minor.to_le_bytes());
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
        JoinRecord {
            layout_minor: LAYOUT_MINOR,
            peer_id: 0,
            epoch: 1,
            host_pid: std::process::id(),
            hub_name: "unit".into(),
            geometry,
        }
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

    /// Frames of every inline length from 0 to 80 bytes, then slot frames, through a
    /// link's real ring: each comes out as it went in, and a frame that fits the
    /// descriptor neither writes nor reads the entry's second line (what an earlier,
    /// longer frame left there stays, and is not mistaken for its payload).
    #[test]
    fn inline_payloads_up_to_80_bytes_use_the_entry_s_second_line_only_when_they_need_it() {
        use crate::shm::ring::{Consumer, Producer};
        use crate::wire::{Descriptor, DESCRIPTOR_INLINE, INLINE_CAPACITY};
        let (link, handoff) = LinkMemory::create(&record(HubConfig::default().geometry())).unwrap();
        let cell = handoff.map_as_cell().unwrap();
        // SAFETY: no session runs on this link: these are the ring's only two ends.
        let (mut producer, mut consumer) =
            unsafe { (Producer::new(link.region.ring(Side::Host)), Consumer::new(cell.ring(Side::Host))) };
        let capacity = ring::RingMemory::capacity(&link.region.ring(Side::Host)) as usize;
        for len in (0..=INLINE_CAPACITY).chain([5, 16, 80, 3]) {
            let bytes: Vec<u8> = (0..len as u8).map(|b| b.wrapping_mul(7).wrapping_add(1)).collect();
            let frame = Frame::inline(Descriptor { msg_id: len as u64, ..Descriptor::default() }, &bytes);
            assert_eq!(frame.desc.uses_entry_extension(), len > DESCRIPTOR_INLINE);
            producer.try_push_tagged(frame.to_words()).unwrap();
            let got = Frame::from_words(consumer.try_pop_tagged().unwrap().expect("pushed"));
            let (payload, n) = got.inline_payload();
            assert_eq!((got.desc.msg_id, &payload[..n]), (len as u64, &bytes[..]), "length {len}");
            if len <= DESCRIPTOR_INLINE {
                assert_eq!(got.extension, [0; INLINE_CAPACITY - DESCRIPTOR_INLINE], "second line not read");
            }
        }
        // Around the ring once more: every entry's second line now holds old bytes.
        for i in 0..capacity + 3 {
            let d = Descriptor { msg_id: i as u64, slot: 5, payload_len: 100, ..Descriptor::default() };
            producer.try_push_tagged(Frame::bare(d).to_words()).unwrap();
            let got = Frame::from_words(consumer.try_pop_tagged().unwrap().expect("pushed"));
            assert_eq!((got.desc.msg_id, got.desc.slot, got.desc.payload_len), (i as u64, 5, 100));
            assert!(!got.desc.uses_entry_extension() && got.extension.iter().all(|b| *b == 0));
        }
    }

    /// A host of a later minor (2.1) starts a cell of this library: the record and both
    /// headers say 1, and the cell checks them against the record, not its own constant.
    /// The minor travels through the encoded record as a cell receives it.
    #[test]
    fn a_cell_accepts_a_later_minor_that_the_record_and_both_headers_agree_on() {
        let mut later = record(HubConfig::default().geometry());
        later.layout_minor = LAYOUT_MINOR + 1;
        let (_link, mut handoff) = LinkMemory::create(&later).unwrap();
        handoff.record = JoinRecord::decode(&later.encode()).unwrap();
        assert_eq!(handoff.record.layout_minor, LAYOUT_MINOR + 1);
        handoff.map_as_cell().unwrap();
        // A record that says another minor than the headers is still refused.
        handoff.record.layout_minor = LAYOUT_MINOR;
        assert!(handoff.map_as_cell().unwrap_err().message().contains("does not match"));
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
