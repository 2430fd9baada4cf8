//! The shared-memory hub file: header, peer table, per-peer regions, rings and pools.
//!
//! The host creates the file and maps all of it; a cell maps the header and peer table
//! read-only and its own region read-write, so a buggy cell can scribble only there.
//! Everything that crosses the mapping goes through atomics or volatile copies.

pub mod inspect;
pub(crate) mod layout;
pub(crate) mod pool;
pub(crate) mod ring;

use std::fs::{File, OpenOptions};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::ptr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use memmap2::{MmapOptions, MmapRaw};

use crate::error::{Error, Result};
use crate::frame::Status;
use layout::{control, header, peer_entry, RegionLayout, RingLayout, MAGIC, PEER_ENTRY_SIZE, PEER_TABLE_OFFSET};
pub use layout::{Geometry, PeerSlotState, SlotClass, LAYOUT_MAJOR, LAYOUT_MINOR, PEER_NAME_MAX};

/// How a hub is shaped. The defaults suit a few dozen cells exchanging messages from
/// bytes to 1 MiB; everything is configurable.
#[derive(Clone, Debug)]
pub struct HubConfig {
    /// Where to create the hub file; `None` picks a unique name under
    /// `$XDG_RUNTIME_DIR` (or `/dev/shm`).
    pub path: Option<PathBuf>,
    /// Peer slots.
    pub max_peers: u32,
    /// Descriptors per ring (power of two).
    pub ring_capacity: u32,
    /// Slot classes of each pool, smallest first. The largest slot size is the largest
    /// payload a call can carry.
    pub slot_classes: Vec<SlotClass>,
}

impl Default for HubConfig {
    fn default() -> Self {
        HubConfig {
            path: None,
            max_peers: 8,
            ring_capacity: 256,
            slot_classes: vec![
                SlotClass { slot_size: 256, slot_count: 256 },
                SlotClass { slot_size: 4 << 10, slot_count: 128 },
                SlotClass { slot_size: 64 << 10, slot_count: 32 },
                SlotClass { slot_size: 1 << 20, slot_count: 4 },
            ],
        }
    }
}

impl HubConfig {
    pub(crate) fn geometry(&self) -> Geometry {
        Geometry { max_peers: self.max_peers, ring_capacity: self.ring_capacity, classes: self.slot_classes.clone() }
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

    pub fn write_bytes(&self, offset: usize, data: &[u8]) {
        self.check(offset, data.len());
        // SAFETY: in bounds of a live, writable mapping (callers only write views they
        // mapped read-write, to fields this process is the single writer of).
        unsafe { ptr::copy_nonoverlapping(data.as_ptr(), self.base.add(offset), data.len()) };
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

/// A ring inside a mapping, as [`ring::RingMemory`] for entries of type `E`.
#[derive(Debug)]
pub(crate) struct ShmRing<E> {
    view: RawView,
    capacity: u64,
    _keep: Arc<MmapRaw>,
    _entry: std::marker::PhantomData<E>,
}

// SAFETY: see RawView; the Arc keeps the mapping alive.
unsafe impl<E> Send for ShmRing<E> {}

impl<E> ShmRing<E> {
    fn new(region: &Region, ring: RingLayout) -> Self {
        let bytes = layout::RING_HEADER_SIZE as usize + ring.capacity as usize * std::mem::size_of::<E>();
        ShmRing {
            view: region.view.sub(ring.offset, bytes),
            capacity: ring.capacity,
            _keep: region.keep.clone(),
            _entry: Default::default(),
        }
    }

    fn entry_ptr(&self, index: usize) -> *mut E {
        debug_assert!((index as u64) < self.capacity);
        self.view.ptr(layout::RING_HEADER_SIZE as usize + index * std::mem::size_of::<E>()) as *mut E
    }
}

impl<E: Copy> ring::RingMemory for ShmRing<E> {
    type Entry = E;
    fn capacity(&self) -> u64 {
        self.capacity
    }
    fn load_head(&self, order: Ordering) -> u64 {
        self.view.atomic_u64(64).load(order)
    }
    fn store_head(&self, value: u64, order: Ordering) {
        self.view.atomic_u64(64).store(value, order)
    }
    fn load_tail(&self, order: Ordering) -> u64 {
        self.view.atomic_u64(0).load(order)
    }
    fn store_tail(&self, value: u64, order: Ordering) {
        self.view.atomic_u64(0).store(value, order)
    }
    unsafe fn write(&self, index: usize, entry: E) {
        // SAFETY: index < capacity (ring logic masks it), entries are 8-aligned; the ring
        // protocol makes us the only writer of this entry right now.
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

/// Converts between ring entries and descriptors.
pub(crate) fn words_to_descriptor(words: DescriptorWords) -> crate::frame::Descriptor {
    let mut bytes = [0u8; 64];
    for (i, w) in words.iter().enumerate() {
        bytes[i * 8..i * 8 + 8].copy_from_slice(&w.to_le_bytes());
    }
    crate::frame::Descriptor::decode(&bytes)
}

pub(crate) fn descriptor_to_words(d: &crate::frame::Descriptor) -> DescriptorWords {
    let bytes = d.encode();
    let mut words = [0u64; 8];
    for (i, w) in words.iter_mut().enumerate() {
        let mut b = [0u8; 8];
        b.copy_from_slice(&bytes[i * 8..i * 8 + 8]);
        *w = u64::from_le_bytes(b);
    }
    words
}

/// Which end of a region this process is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Side {
    Host,
    Cell,
}

/// One peer's region, mapped by the host or by that cell.
#[derive(Clone, Debug)]
pub(crate) struct Region {
    view: RawView,
    layout: Arc<RegionLayout>,
    keep: Arc<MmapRaw>,
}

impl Region {
    pub fn layout(&self) -> &RegionLayout {
        &self.layout
    }

    pub fn view(&self) -> RawView {
        self.view
    }

    pub fn control_block(&self, side: Side) -> usize {
        match side {
            Side::Host => control::HOST_BLOCK,
            Side::Cell => control::CELL_BLOCK,
        }
    }

    /// The parked flag written by `side`.
    pub fn parked(&self, side: Side) -> &AtomicU32 {
        self.view.atomic_u32(self.control_block(side) + control::PARKED)
    }

    /// The lifecycle word written by `side`.
    pub fn state_word(&self, side: Side) -> &AtomicU32 {
        self.view.atomic_u32(self.control_block(side) + control::STATE)
    }

    /// A counter written by `side` (offset from `layout::control`).
    pub fn counter(&self, side: Side, field: usize) -> &AtomicU64 {
        self.view.atomic_u64(self.control_block(side) + field)
    }

    pub fn ring(&self, from: Side) -> ShmRing<DescriptorWords> {
        let l = match from {
            Side::Host => self.layout.host_to_cell,
            Side::Cell => self.layout.cell_to_host,
        };
        ShmRing::new(self, l)
    }

    pub fn return_ring(&self, pool_of: Side) -> ShmRing<u64> {
        let l = match pool_of {
            Side::Host => self.layout.host_pool.returns,
            Side::Cell => self.layout.cell_pool.returns,
        };
        ShmRing::new(self, l)
    }

    /// Zeroes the region: cursors, control blocks and (cheaply) nothing else; slot
    /// contents are never trusted, so they need no clearing.
    pub fn reset_control(&self) {
        let l = &self.layout;
        self.view.write_bytes(0, &[0u8; 256]);
        for ring in [l.host_to_cell, l.cell_to_host, l.host_pool.returns, l.cell_pool.returns] {
            self.view.write_bytes(ring.offset, &[0u8; layout::RING_HEADER_SIZE as usize]);
        }
        // Nobody polls either ring yet: senders must ring the doorbell.
        self.parked(Side::Host).store(1, Ordering::SeqCst);
        self.parked(Side::Cell).store(1, Ordering::SeqCst);
    }
}

fn map_raw(file: &File, offset: u64, len: u64, writable: bool, what: &str) -> Result<Arc<MmapRaw>> {
    let len = usize::try_from(len)
        .map_err(|_| Error::new(Status::InvalidArgument, format!("{what}: size {len} too large")))?;
    let mut opts = MmapOptions::new();
    opts.offset(offset).len(len);
    let map = if writable { opts.map_raw(file) } else { opts.map_raw_read_only(file) };
    map.map(Arc::new).map_err(|e| Error::system(format!("mapping {what}"), e))
}

fn view_of(map: &MmapRaw) -> RawView {
    RawView { base: map.as_mut_ptr(), len: map.len() }
}

/// Picks a fresh default hub path.
fn default_hub_path(attempt: u32) -> PathBuf {
    let dir = std::env::var_os("XDG_RUNTIME_DIR")
        .map(PathBuf::from)
        .filter(|d| d.is_dir())
        .unwrap_or_else(|| PathBuf::from("/dev/shm"));
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
    dir.join(format!("cellshm-{}-{nanos:08x}-{attempt}.hub", std::process::id()))
}

/// The host's mapping of the whole hub.
#[derive(Debug)]
pub(crate) struct HostHubFile {
    path: PathBuf,
    geometry: Geometry,
    layout: layout::HubLayout,
    region_layout: Arc<RegionLayout>,
    map: Arc<MmapRaw>,
    file: File,
}

impl HostHubFile {
    /// The open hub file (passed to attaching processes).
    pub fn file(&self) -> &File {
        &self.file
    }

    /// Creates the file exclusively (mode 0600), sizes it, writes the header, and only
    /// then makes it visible under its final name, so no reader ever sees half a header.
    pub fn create(config: &HubConfig) -> Result<HostHubFile> {
        let geometry = config.geometry();
        geometry
            .validate()
            .map_err(|m| Error::new(Status::InvalidArgument, format!("invalid hub configuration: {m}")))?;
        let layout = geometry.hub_layout();
        let mut attempt = 0;
        let path = loop {
            let candidate = config.path.clone().unwrap_or_else(|| default_hub_path(attempt));
            match Self::publish(&candidate, &geometry, layout) {
                Ok(()) => break candidate,
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && config.path.is_none() && attempt < 16 => {
                    attempt += 1;
                }
                Err(e) => return Err(Error::system(format!("creating hub file {}", candidate.display()), e)),
            }
        };
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_CLOEXEC)
            .open(&path)
            .map_err(|e| Error::system(format!("opening hub file {}", path.display()), e))?;
        let map = map_raw(&file, 0, layout.total_size, true, "the hub file")?;
        let hub = HostHubFile { path, region_layout: Arc::new(geometry.region_layout()), geometry, layout, map, file };
        for peer in 0..hub.geometry.max_peers {
            hub.region(peer).reset_control();
        }
        Ok(hub)
    }

    fn publish(path: &Path, geometry: &Geometry, layout: layout::HubLayout) -> std::io::Result<()> {
        let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_CLOEXEC)
            .open(&tmp)?;
        let result = (|| {
            file.set_len(layout.total_size)?;
            let mut header = vec![0u8; layout.regions_offset as usize];
            encode_header(&mut header, geometry, layout);
            std::os::unix::fs::FileExt::write_all_at(&file, &header, 0)?;
            // link() fails if the final name exists: exclusive creation, atomic appearance.
            std::fs::hard_link(&tmp, path)
        })();
        let _ = std::fs::remove_file(&tmp);
        result
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn geometry(&self) -> &Geometry {
        &self.geometry
    }

    fn view(&self) -> RawView {
        view_of(&self.map)
    }

    pub fn region(&self, peer: u32) -> Region {
        assert!(peer < self.geometry.max_peers);
        let offset = self.layout.region_offset(peer) as usize;
        Region {
            view: self.view().sub(offset, self.layout.region_size as usize),
            layout: self.region_layout.clone(),
            keep: self.map.clone(),
        }
    }

    fn entry(&self, peer: u32) -> usize {
        PEER_TABLE_OFFSET as usize + peer as usize * PEER_ENTRY_SIZE as usize
    }

    pub fn peer_state(&self, peer: u32) -> PeerSlotState {
        let raw = self.view().atomic_u32(self.entry(peer) + peer_entry::STATE).load(Ordering::Acquire);
        PeerSlotState::from_raw(raw).unwrap_or(PeerSlotState::Dead)
    }

    pub fn set_peer_state(&self, peer: u32, state: PeerSlotState) {
        self.view().atomic_u32(self.entry(peer) + peer_entry::STATE).store(state as u32, Ordering::Release);
    }

    pub fn set_peer_pid(&self, peer: u32, pid: u32) {
        self.view().atomic_u32(self.entry(peer) + peer_entry::PID).store(pid, Ordering::Release);
    }

    /// Fills a Free (or reclaimed) entry for a new peer and returns its new epoch; the
    /// name is cut at [`PEER_NAME_MAX`] bytes.
    pub fn reserve_peer(&self, peer: u32, name: &str) -> u32 {
        let entry = self.entry(peer);
        let mut cut = name.len().min(PEER_NAME_MAX);
        while !name.is_char_boundary(cut) {
            cut -= 1;
        }
        let mut bytes = [0u8; PEER_NAME_MAX];
        bytes[..cut].copy_from_slice(&name.as_bytes()[..cut]);
        let view = self.view();
        view.write_bytes(entry + peer_entry::NAME, &bytes);
        view.atomic_u32(entry + peer_entry::NAME_LEN).store(cut as u32, Ordering::Relaxed);
        view.atomic_u32(entry + peer_entry::PID).store(0, Ordering::Relaxed);
        let epoch = view.atomic_u32(entry + peer_entry::EPOCH).fetch_add(1, Ordering::Relaxed).wrapping_add(1);
        self.region(peer).reset_control();
        self.set_peer_state(peer, PeerSlotState::Reserved);
        epoch
    }
}

impl Drop for HostHubFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

fn encode_header(out: &mut [u8], g: &Geometry, l: layout::HubLayout) {
    let mut put = |off: usize, bytes: &[u8]| out[off..off + bytes.len()].copy_from_slice(bytes);
    put(header::MAGIC, &MAGIC);
    put(header::MAJOR, &LAYOUT_MAJOR.to_le_bytes());
    put(header::MINOR, &LAYOUT_MINOR.to_le_bytes());
    put(header::HOST_PID, &std::process::id().to_le_bytes());
    put(header::MAX_PEERS, &g.max_peers.to_le_bytes());
    let created = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0);
    put(header::CREATED_UNIX_NS, &created.to_le_bytes());
    put(header::REGION_SIZE, &l.region_size.to_le_bytes());
    put(header::REGIONS_OFFSET, &l.regions_offset.to_le_bytes());
    put(header::TOTAL_SIZE, &l.total_size.to_le_bytes());
    put(header::RING_CAPACITY, &g.ring_capacity.to_le_bytes());
    put(header::CLASS_COUNT, &(g.classes.len() as u32).to_le_bytes());
    for (i, c) in g.classes.iter().enumerate() {
        put(header::CLASSES + i * 8, &c.slot_size.to_le_bytes());
        put(header::CLASSES + i * 8 + 4, &c.slot_count.to_le_bytes());
    }
}

/// What the header of an existing hub says, after validation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HubInfo {
    /// Layout version (major, minor).
    pub version: (u16, u16),
    /// The host's process id.
    pub host_pid: u32,
    /// When the hub was created (ns since the Unix epoch).
    pub created_unix_ns: u64,
    /// Geometry of the hub.
    pub geometry: Geometry,
}

/// Reads and validates the header: magic, version, geometry, and that the file is as
/// large as the geometry says (so no later access can fault).
fn read_header(file: &File, path: &Path) -> Result<(HubInfo, layout::HubLayout)> {
    let bad = |m: String| Error::new(Status::FailedPrecondition, format!("{}: {m}", path.display()));
    let file_len = file.metadata().map_err(|e| Error::system(format!("stat {}", path.display()), e))?.len();
    if file_len < layout::PAGE {
        return Err(bad(format!("not a cellshm hub (only {file_len} bytes)")));
    }
    let map = map_raw(file, 0, layout::PAGE, false, "the hub header")?;
    let v = view_of(&map);
    let mut magic = [0u8; 8];
    v.read_bytes(header::MAGIC, &mut magic);
    if magic != MAGIC {
        return Err(bad("not a cellshm hub (bad magic)".into()));
    }
    let major = v.read_u32(header::MAJOR) as u16;
    let minor = (v.read_u32(header::MAJOR) >> 16) as u16;
    if major != LAYOUT_MAJOR {
        return Err(bad(format!(
            "hub layout version {major}.{minor} is not supported (this library speaks {LAYOUT_MAJOR}.x)"
        )));
    }
    let class_count = v.read_u32(header::CLASS_COUNT) as usize;
    if class_count == 0 || class_count > layout::MAX_CLASSES {
        return Err(bad(format!("header names {class_count} slot classes")));
    }
    let geometry = Geometry {
        max_peers: v.read_u32(header::MAX_PEERS),
        ring_capacity: v.read_u32(header::RING_CAPACITY),
        classes: (0..class_count)
            .map(|i| SlotClass {
                slot_size: v.read_u32(header::CLASSES + i * 8),
                slot_count: v.read_u32(header::CLASSES + i * 8 + 4),
            })
            .collect(),
    };
    geometry.validate().map_err(|m| bad(format!("invalid geometry in header: {m}")))?;
    let expected = geometry.hub_layout();
    let stated = layout::HubLayout {
        regions_offset: v.read_u64(header::REGIONS_OFFSET),
        region_size: v.read_u64(header::REGION_SIZE),
        total_size: v.read_u64(header::TOTAL_SIZE),
    };
    if stated != expected {
        return Err(bad(format!("header layout {stated:?} does not match its geometry ({expected:?})")));
    }
    if file_len < expected.total_size {
        return Err(bad(format!("file is {file_len} bytes, the header needs {}", expected.total_size)));
    }
    let info = HubInfo {
        version: (major, minor),
        host_pid: v.read_u32(header::HOST_PID),
        created_unix_ns: v.read_u64(header::CREATED_UNIX_NS),
        geometry,
    };
    Ok((info, expected))
}

/// A cell's mapping: header and peer table read-only, its own region read-write.
#[derive(Debug)]
pub(crate) struct CellHubFile {
    pub info: HubInfo,
    /// The slot's epoch when we joined.
    pub epoch: u32,
    table: Arc<MmapRaw>,
    region: Region,
    peer_id: u32,
}

impl CellHubFile {
    /// Opens `path` as peer `peer_id`, waiting up to `wait` for the file to appear. With
    /// `epoch`, the slot must still be at that epoch (a ticket of an earlier launch of
    /// this slot is refused before anything in the region is touched).
    pub fn open(path: &Path, peer_id: u32, epoch: Option<u32>, wait: Duration) -> Result<CellHubFile> {
        let start = Instant::now();
        let file = loop {
            match OpenOptions::new().read(true).write(true).custom_flags(libc::O_CLOEXEC).open(path) {
                Ok(f) => break f,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound && start.elapsed() < wait => {
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    return Err(Error::new(
                        Status::NotFound,
                        format!("hub file {} did not appear within {} ms", path.display(), wait.as_millis()),
                    ))
                }
                Err(e) => return Err(Error::system(format!("opening hub file {}", path.display()), e)),
            }
        };
        Self::open_file(file, path, peer_id, epoch)
    }

    /// Joins through an already open hub file (for example one passed over the attach
    /// socket); `path` is only used in messages.
    pub fn open_file(file: File, path: &Path, peer_id: u32, epoch: Option<u32>) -> Result<CellHubFile> {
        let (info, layout) = read_header(&file, path)?;
        if peer_id >= info.geometry.max_peers {
            return Err(Error::new(
                Status::InvalidArgument,
                format!(
                    "peer id {peer_id} is out of range for hub {} ({} peers)",
                    path.display(),
                    info.geometry.max_peers
                ),
            ));
        }
        let table = map_raw(&file, 0, layout.regions_offset, false, "the peer table")?;
        let entry = PEER_TABLE_OFFSET as usize + peer_id as usize * PEER_ENTRY_SIZE as usize;
        let current = view_of(&table).atomic_u32(entry + peer_entry::EPOCH).load(Ordering::Acquire);
        if let Some(expected) = epoch {
            if expected != current {
                return Err(Error::new(
                    Status::FailedPrecondition,
                    format!("peer slot {peer_id} is at epoch {current}, this cell was started for epoch {expected} (a stale ticket)"),
                ));
            }
        }
        let state = view_of(&table).atomic_u32(entry + peer_entry::STATE).load(Ordering::Acquire);
        match PeerSlotState::from_raw(state) {
            Some(PeerSlotState::Reserved) => {}
            other => {
                return Err(Error::new(
                    Status::FailedPrecondition,
                    format!(
                        "peer id {peer_id} is not reserved for a new cell in hub {} (its slot is {})",
                        path.display(),
                        other.map(|s| format!("{s:?}")).unwrap_or_else(|| format!("in unknown state {state}"))
                    ),
                ))
            }
        }
        let region_map = map_raw(&file, layout.region_offset(peer_id), layout.region_size, true, "the peer region")?;
        let region =
            Region { view: view_of(&region_map), layout: Arc::new(info.geometry.region_layout()), keep: region_map };
        Ok(CellHubFile { info, table, region, peer_id, epoch: current })
    }

    pub fn region(&self) -> Region {
        self.region.clone()
    }

    /// The host's view of our slot (Reserved until the host accepts our HELLO).
    pub fn peer_state(&self) -> Option<PeerSlotState> {
        let entry = PEER_TABLE_OFFSET as usize + self.peer_id as usize * PEER_ENTRY_SIZE as usize;
        PeerSlotState::from_raw(view_of(&self.table).atomic_u32(entry + peer_entry::STATE).load(Ordering::Acquire))
    }
}

/// Reads a hub's header without joining it (for tools and error messages).
pub fn inspect_header(path: &Path) -> Result<HubInfo> {
    let file = File::open(path).map_err(|e| Error::system(format!("opening hub file {}", path.display()), e))?;
    read_header(&file, path).map(|(info, _)| info)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_config(tag: &str) -> HubConfig {
        HubConfig {
            path: Some(std::env::temp_dir().join(format!("cellshm-unit-{tag}-{}.hub", std::process::id()))),
            max_peers: 2,
            ..HubConfig::default()
        }
    }

    #[test]
    fn create_open_and_refuse_bad_files() {
        let cfg = temp_config("open");
        let hub = HostHubFile::create(&cfg).unwrap();
        let path = hub.path().to_path_buf();
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!(std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o777, 0o600);
        assert!(HostHubFile::create(&cfg).is_err(), "O_EXCL: a second hub at the same path fails");

        let info = inspect_header(&path).unwrap();
        assert_eq!(info.geometry, cfg.geometry());
        assert_eq!(info.host_pid, std::process::id());

        let err = CellHubFile::open(&path, 0, None, Duration::ZERO).unwrap_err();
        assert!(err.message().contains("not reserved"), "{err}");
        let epoch = hub.reserve_peer(0, "unit");
        assert!(CellHubFile::open(&path, 0, Some(epoch + 1), Duration::ZERO)
            .unwrap_err()
            .message()
            .contains("stale ticket"));
        let cell = CellHubFile::open(&path, 0, Some(epoch), Duration::ZERO).unwrap();
        assert_eq!(cell.peer_state(), Some(PeerSlotState::Reserved));
        assert!(CellHubFile::open(&path, 5, None, Duration::ZERO).unwrap_err().message().contains("out of range"));

        // A truncated copy and a file of garbage are refused, never mapped past their end.
        let short = path.with_extension("short");
        std::fs::copy(&path, &short).unwrap();
        OpenOptions::new().write(true).open(&short).unwrap().set_len(8192).unwrap();
        assert!(inspect_header(&short).unwrap_err().message().contains("needs"));
        std::fs::write(&short, vec![0xAB; 8192]).unwrap();
        assert!(inspect_header(&short).unwrap_err().message().contains("magic"));
        std::fs::remove_file(&short).unwrap();
        drop(cell);
        drop(hub);
        assert!(!path.exists(), "the hub file is removed on drop");
    }

    #[test]
    fn missing_hub_times_out_with_a_clear_error() {
        let path = std::env::temp_dir().join("cellshm-unit-never-created.hub");
        let start = Instant::now();
        let err = CellHubFile::open(&path, 0, None, Duration::from_millis(50)).unwrap_err();
        assert_eq!(err.status(), Status::NotFound);
        assert!(err.message().contains("did not appear within 50 ms"), "{err}");
        assert!(start.elapsed() >= Duration::from_millis(50));
    }
}
