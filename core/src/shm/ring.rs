//! Single-producer single-consumer ring over memory shared with another process.
//!
//! The ring logic is generic over [`RingMemory`] so the same code runs on a shared
//! mapping and, under `--cfg loom`, on loom's checked atomics and cells.
//!
//! Each side keeps its own cursor privately and only *publishes* it to shared memory;
//! the only value read back from shared memory is the other side's cursor, and it is
//! validated before use. A peer that scribbles on the cursors therefore produces a
//! [`RingCorrupt`] error, never an out-of-bounds access.

use std::sync::atomic::Ordering;

/// The other side published a cursor that no well-behaved peer can produce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RingCorrupt {
    /// Our own cursor.
    pub ours: u64,
    /// The cursor read from shared memory.
    pub theirs: u64,
}

/// Where a ring's cursors and entries live.
pub trait RingMemory {
    /// One entry.
    type Entry: Copy;
    /// Entries in the ring; a power of two.
    fn capacity(&self) -> u64;
    /// Loads the consumer cursor.
    fn load_head(&self, order: Ordering) -> u64;
    /// Publishes the consumer cursor.
    fn store_head(&self, value: u64, order: Ordering);
    /// Loads the producer cursor.
    fn load_tail(&self, order: Ordering) -> u64;
    /// Publishes the producer cursor.
    fn store_tail(&self, value: u64, order: Ordering);
    /// Writes entry `index` (already reduced modulo capacity).
    ///
    /// # Safety
    /// Only the producer calls this, and only for an index the consumer has released.
    unsafe fn write(&self, index: usize, entry: Self::Entry);
    /// Reads entry `index` (already reduced modulo capacity).
    ///
    /// # Safety
    /// Only the consumer calls this, and only for an index the producer has published.
    unsafe fn read(&self, index: usize) -> Self::Entry;
}

/// Rings whose entries carry the parity of the lap they were written in, so that the
/// consumer polls the entry itself and never the producer's cursor: one cache line per
/// entry crosses between the cores instead of two (the entry, then the tail). The ring
/// must start at position 0 over zeroed entries (lap 0 writes parity 1).
pub trait LapTagged: RingMemory {
    /// Writes `entry` at `index` with lap parity `lap`: the word that carries it last,
    /// with Release ordering.
    ///
    /// # Safety
    /// As [`RingMemory::write`].
    unsafe fn write_with_lap(&self, index: usize, entry: Self::Entry, lap: bool);
    /// Entry `index` if the word that carries its parity (loaded with Acquire) says
    /// `lap`, with the parity cleared; `None` while it still holds an older lap's.
    ///
    /// # Safety
    /// As [`RingMemory::read`], for an index at the consumer's cursor.
    unsafe fn read_if_lap(&self, index: usize, lap: bool) -> Option<Self::Entry>;
    /// Whether entry `index` carries parity `lap` (its parity word loaded with Acquire):
    /// what a consumer polls, and all it may trust about what the producer published.
    fn holds_lap(&self, index: usize, lap: bool) -> bool;
}

/// Whether the entry at consumer position `head` of a [`LapTagged`] ring has been
/// written for this lap: the one test of "a frame is waiting" that no value the producer
/// writes elsewhere (its tail cursor, which may lie) can fool.
pub fn ready_at<M: LapTagged>(memory: &M, head: u64) -> bool {
    let capacity = memory.capacity();
    memory.holds_lap((head & (capacity - 1)) as usize, lap_parity(head, capacity))
}

/// The parity written into entries of the lap that contains `position`.
fn lap_parity(position: u64, capacity: u64) -> bool {
    (position / capacity) % 2 == 0
}

/// Why a push did not happen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushError {
    /// Every entry is in use; try again after the consumer advanced.
    Full,
    /// The consumer's cursor is impossible.
    Corrupt(RingCorrupt),
}

/// The producing end. Not `Sync`: callers serialize pushes (one writer per field).
#[derive(Debug)]
pub struct Producer<M: RingMemory> {
    memory: M,
    tail: u64,
    /// Last consumer cursor seen: reloaded only when the ring looks full, so a push
    /// does not pull the consumer's cache line across cores every time.
    cached_head: u64,
}

impl<M: RingMemory> Producer<M> {
    /// Takes the producing end, starting at the cursor currently published.
    ///
    /// # Safety
    /// At most one `Producer` exists per ring across all processes.
    pub unsafe fn new(memory: M) -> Self {
        let tail = memory.load_tail(Ordering::Relaxed);
        Producer { memory, tail, cached_head: tail }
    }

    fn published_head(&self) -> Result<u64, RingCorrupt> {
        let head = self.memory.load_head(Ordering::Acquire);
        // The consumer can never be ahead of us, nor further behind than the capacity.
        if self.tail.wrapping_sub(head) > self.memory.capacity() {
            return Err(RingCorrupt { ours: self.tail, theirs: head });
        }
        Ok(head)
    }

    /// The index of the entry at the tail, if the consumer has released it and more
    /// than `reserve` entries are free (otherwise the ring is full for this push).
    fn free_index(&mut self, reserve: u64) -> Result<usize, PushError> {
        let room = self.memory.capacity().saturating_sub(reserve);
        if self.tail.wrapping_sub(self.cached_head) >= room {
            self.cached_head = self.published_head().map_err(PushError::Corrupt)?;
            if self.tail.wrapping_sub(self.cached_head) >= room {
                return Err(PushError::Full);
            }
        }
        Ok((self.tail & (self.memory.capacity() - 1)) as usize)
    }

    /// Publishes the entry written at the tail.
    fn advance_tail(&mut self) {
        self.tail = self.tail.wrapping_add(1);
        self.memory.store_tail(self.tail, Ordering::Release);
    }

    /// Appends `entry` if there is room.
    pub fn try_push(&mut self, entry: M::Entry) -> Result<(), PushError> {
        let index = self.free_index(0)?;
        // SAFETY: we are the only producer (constructor contract), and `index` is not
        // between the cached head and tail, so the consumer has released it (the cached
        // head came from an Acquire load, and the consumer only moves forward).
        unsafe { self.memory.write(index, entry) };
        self.advance_tail();
        Ok(())
    }

    /// Appends `entry` with its lap parity (see [`LapTagged`]), if there is room. The
    /// tail is still published, for the parked handshake's recheck and for `inspect`;
    /// the consumer's fast path does not read it.
    pub fn try_push_tagged(&mut self, entry: M::Entry) -> Result<(), PushError>
    where
        M: LapTagged,
    {
        self.try_push_tagged_leaving(entry, 0)
    }

    /// [`Producer::try_push_tagged`] that also fails (`Full`) unless more than `reserve`
    /// entries are free: bulk frames leave room for the frames that must not wait
    /// behind them.
    pub fn try_push_tagged_leaving(&mut self, entry: M::Entry, reserve: u64) -> Result<(), PushError>
    where
        M: LapTagged,
    {
        let index = self.free_index(reserve)?;
        let lap = lap_parity(self.tail, self.memory.capacity());
        // SAFETY: as in `try_push`: the consumer has released `index`.
        unsafe { self.memory.write_with_lap(index, entry, lap) };
        self.advance_tail();
        Ok(())
    }

    /// Entries published and not yet consumed.
    #[cfg(test)]
    pub fn in_flight(&self) -> Result<u64, RingCorrupt> {
        Ok(self.tail.wrapping_sub(self.published_head()?))
    }
}

/// The consuming end. Not `Sync`: one receiving thread at a time.
#[derive(Debug)]
pub struct Consumer<M: RingMemory> {
    memory: M,
    head: u64,
    /// Last producer cursor seen: entries up to it can be taken without reloading.
    cached_tail: u64,
}

impl<M: RingMemory> Consumer<M> {
    /// Takes the consuming end, starting at the cursor currently published.
    ///
    /// # Safety
    /// At most one `Consumer` exists per ring across all processes.
    pub unsafe fn new(memory: M) -> Self {
        let head = memory.load_head(Ordering::Relaxed);
        Consumer { memory, head, cached_tail: head }
    }

    fn published_tail(&self) -> Result<u64, RingCorrupt> {
        let tail = self.memory.load_tail(Ordering::Acquire);
        if tail.wrapping_sub(self.head) > self.memory.capacity() {
            return Err(RingCorrupt { ours: self.head, theirs: tail });
        }
        Ok(tail)
    }

    /// Takes the oldest entry, if any.
    pub fn try_pop(&mut self) -> Result<Option<M::Entry>, RingCorrupt> {
        if self.cached_tail == self.head {
            self.cached_tail = self.published_tail()?;
            if self.cached_tail == self.head {
                return Ok(None);
            }
        }
        let index = (self.head & (self.memory.capacity() - 1)) as usize;
        // SAFETY: we are the only consumer, and `index` lies between head and a tail the
        // producer published with Release (paired with the Acquire load that cached it).
        let entry = unsafe { self.memory.read(index) };
        self.head = self.head.wrapping_add(1);
        self.memory.store_head(self.head, Ordering::Release);
        Ok(Some(entry))
    }

    /// Takes the oldest entry of a [`LapTagged`] ring, if its lap says it is there.
    pub fn try_pop_tagged(&mut self) -> Result<Option<M::Entry>, RingCorrupt>
    where
        M: LapTagged,
    {
        let index = (self.head & (self.memory.capacity() - 1)) as usize;
        let lap = lap_parity(self.head, self.memory.capacity());
        // SAFETY: we are the only consumer and `index` is at our cursor; the Acquire load
        // of the parity word pairs with the producer's Release store of it, after which
        // it does not write this entry until we move past it.
        let Some(entry) = (unsafe { self.memory.read_if_lap(index, lap) }) else { return Ok(None) };
        self.head = self.head.wrapping_add(1);
        self.cached_tail = self.head;
        self.memory.store_head(self.head, Ordering::Release);
        Ok(Some(entry))
    }

    /// Whether the next entry of a [`LapTagged`] ring is there (see [`ready_at`]).
    pub fn next_ready(&self) -> bool
    where
        M: LapTagged,
    {
        ready_at(&self.memory, self.head)
    }

    /// Entries waiting to be consumed, as the producer's tail says (which only a ring
    /// without lap tags may go by).
    #[cfg(test)]
    pub fn pending(&self) -> Result<u64, RingCorrupt> {
        Ok(self.published_tail()?.wrapping_sub(self.head))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::UnsafeCell;
    use std::sync::atomic::AtomicU64;

    struct HeapRing {
        head: AtomicU64,
        tail: AtomicU64,
        cells: Vec<UnsafeCell<u64>>,
    }

    impl RingMemory for &HeapRing {
        type Entry = u64;
        fn capacity(&self) -> u64 {
            self.cells.len() as u64
        }
        fn load_head(&self, order: Ordering) -> u64 {
            self.head.load(order)
        }
        fn store_head(&self, value: u64, order: Ordering) {
            self.head.store(value, order)
        }
        fn load_tail(&self, order: Ordering) -> u64 {
            self.tail.load(order)
        }
        fn store_tail(&self, value: u64, order: Ordering) {
            self.tail.store(value, order)
        }
        unsafe fn write(&self, index: usize, entry: u64) {
            // SAFETY: single-threaded test; the ring protocol gives the producer this cell.
            unsafe { *self.cells[index].get() = entry }
        }
        unsafe fn read(&self, index: usize) -> u64 {
            // SAFETY: single-threaded test; the ring protocol gives the consumer this cell.
            unsafe { *self.cells[index].get() }
        }
    }

    fn heap_ring(cap: usize, start: u64) -> HeapRing {
        HeapRing {
            head: AtomicU64::new(start),
            tail: AtomicU64::new(start),
            cells: (0..cap).map(|_| UnsafeCell::new(0)).collect(),
        }
    }

    #[test]
    fn wraps_around_many_times_in_order() {
        // Start near u64::MAX so the cursors themselves wrap too.
        let ring = heap_ring(4, u64::MAX - 5);
        // SAFETY: one producer and one consumer for this ring.
        let (mut p, mut c) = unsafe { (Producer::new(&ring), Consumer::new(&ring)) };
        let mut next_out = 0;
        for i in 0..1000u64 {
            p.try_push(i).unwrap();
            if i % 3 == 2 {
                while let Some(v) = c.try_pop().unwrap() {
                    assert_eq!(v, next_out);
                    next_out += 1;
                }
            }
            if p.in_flight().unwrap() == 4 {
                assert_eq!(p.try_push(99), Err(PushError::Full));
                assert_eq!(c.try_pop().unwrap(), Some(next_out));
                next_out += 1;
            }
        }
        while let Some(v) = c.try_pop().unwrap() {
            assert_eq!(v, next_out);
            next_out += 1;
        }
        assert_eq!(next_out, 1000);
        assert_eq!(c.pending().unwrap(), 0);
    }

    /// Entries of one value word and one tag word (the lap parity, 0 or 1).
    struct TaggedHeapRing {
        ring: HeapRing,
        tags: Vec<AtomicU64>,
    }

    impl RingMemory for &TaggedHeapRing {
        type Entry = u64;
        fn capacity(&self) -> u64 {
            (&self.ring).capacity()
        }
        fn load_head(&self, order: Ordering) -> u64 {
            (&self.ring).load_head(order)
        }
        fn store_head(&self, value: u64, order: Ordering) {
            (&self.ring).store_head(value, order)
        }
        fn load_tail(&self, order: Ordering) -> u64 {
            (&self.ring).load_tail(order)
        }
        fn store_tail(&self, value: u64, order: Ordering) {
            (&self.ring).store_tail(value, order)
        }
        unsafe fn write(&self, index: usize, entry: u64) {
            // SAFETY: forwarded under the same contract.
            unsafe { (&self.ring).write(index, entry) }
        }
        unsafe fn read(&self, index: usize) -> u64 {
            // SAFETY: forwarded under the same contract.
            unsafe { (&self.ring).read(index) }
        }
    }

    impl LapTagged for &TaggedHeapRing {
        unsafe fn write_with_lap(&self, index: usize, entry: u64, lap: bool) {
            // SAFETY: forwarded under the same contract.
            unsafe { (&self.ring).write(index, entry) };
            self.tags[index].store(lap as u64, Ordering::Release);
        }
        unsafe fn read_if_lap(&self, index: usize, lap: bool) -> Option<u64> {
            // SAFETY: forwarded under the same contract, once the tag says it is there.
            (self.tags[index].load(Ordering::Acquire) == lap as u64).then(|| unsafe { (&self.ring).read(index) })
        }
        fn holds_lap(&self, index: usize, lap: bool) -> bool {
            self.tags[index].load(Ordering::Acquire) == lap as u64
        }
    }

    #[test]
    fn a_lap_tagged_ring_wraps_in_order_and_never_rereads_an_old_lap() {
        let ring = TaggedHeapRing { ring: heap_ring(4, 0), tags: (0..4).map(|_| AtomicU64::new(0)).collect() };
        // SAFETY: one producer and one consumer for this ring.
        let (mut p, mut c) = unsafe { (Producer::new(&ring), Consumer::new(&ring)) };
        assert_eq!(c.try_pop_tagged(), Ok(None), "zeroed entries are no lap's");
        let mut next_out = 0u64;
        for i in 0..1000u64 {
            p.try_push_tagged(i).unwrap();
            if i % 3 == 2 {
                while let Some(v) = c.try_pop_tagged().unwrap() {
                    assert_eq!(v, next_out);
                    next_out += 1;
                }
                // Every entry of the ring now holds a value already taken, of this lap
                // or the last: none may come out again.
                assert_eq!(c.try_pop_tagged(), Ok(None), "after {i}");
            }
            if p.in_flight().unwrap() == 4 {
                assert_eq!(p.try_push_tagged(99), Err(PushError::Full));
            }
        }
        while let Some(v) = c.try_pop_tagged().unwrap() {
            assert_eq!(v, next_out);
            next_out += 1;
        }
        assert_eq!(next_out, 1000);
        assert_eq!(c.pending().unwrap(), 0, "the tail is still published");
    }

    #[test]
    fn a_push_leaving_a_reserve_stops_short_of_it_and_others_use_it() {
        let ring = TaggedHeapRing { ring: heap_ring(8, 0), tags: (0..8).map(|_| AtomicU64::new(0)).collect() };
        // SAFETY: one producer and one consumer for this ring.
        let (mut p, mut c) = unsafe { (Producer::new(&ring), Consumer::new(&ring)) };
        for v in 0..6 {
            p.try_push_tagged_leaving(v, 2).unwrap();
        }
        assert_eq!(p.try_push_tagged_leaving(6, 2), Err(PushError::Full), "two entries stay free for others");
        p.try_push_tagged(100).unwrap();
        p.try_push_tagged(101).unwrap();
        assert_eq!(p.try_push_tagged(102), Err(PushError::Full));
        assert_eq!(c.try_pop_tagged(), Ok(Some(0)));
        assert_eq!(p.try_push_tagged_leaving(6, 2), Err(PushError::Full), "7 of 8 in flight: still short");
        for want in [1, 2, 3] {
            assert_eq!(c.try_pop_tagged(), Ok(Some(want)));
        }
        p.try_push_tagged_leaving(6, 2).unwrap();
        p.try_push_tagged_leaving(7, 2).unwrap();
        assert_eq!(p.try_push_tagged_leaving(8, 2), Err(PushError::Full));
        let rest: Vec<u64> = std::iter::from_fn(|| c.try_pop_tagged().unwrap()).collect();
        assert_eq!(rest, [4, 5, 100, 101, 6, 7], "order is the order of the pushes");
    }

    #[test]
    fn impossible_cursors_are_reported_not_followed() {
        let ring = heap_ring(4, 0);
        // SAFETY: one producer and one consumer for this ring.
        let (mut p, mut c) = unsafe { (Producer::new(&ring), Consumer::new(&ring)) };
        ring.tail.store(1_000, Ordering::Relaxed); // a peer claims 1000 entries in a 4-ring
        assert!(c.try_pop().is_err());
        assert!(c.pending().is_err());
        ring.tail.store(0, Ordering::Relaxed);
        // The consumer claims to be ahead of the producer.
        ring.head.store(7, Ordering::Relaxed);
        // The producer rereads the consumer's cursor only when the ring looks full (its
        // writes stay masked to the ring meanwhile); at that reread it reports the lie.
        for v in 0..4 {
            p.try_push(v).unwrap();
        }
        assert!(matches!(p.try_push(4), Err(PushError::Corrupt(_))));
    }
}

#[cfg(all(test, loom))]
mod loom_model {
    use super::*;
    use loom::cell::UnsafeCell;
    use loom::sync::atomic::AtomicU64;
    use loom::sync::Arc;

    struct LoomRing {
        head: AtomicU64,
        tail: AtomicU64,
        cells: Vec<UnsafeCell<u64>>,
        tags: Vec<AtomicU64>,
    }

    #[derive(Clone)]
    struct Shared(Arc<LoomRing>);

    impl RingMemory for Shared {
        type Entry = u64;
        fn capacity(&self) -> u64 {
            self.0.cells.len() as u64
        }
        fn load_head(&self, order: Ordering) -> u64 {
            self.0.head.load(order)
        }
        fn store_head(&self, value: u64, order: Ordering) {
            self.0.head.store(value, order)
        }
        fn load_tail(&self, order: Ordering) -> u64 {
            self.0.tail.load(order)
        }
        fn store_tail(&self, value: u64, order: Ordering) {
            self.0.tail.store(value, order)
        }
        unsafe fn write(&self, index: usize, entry: u64) {
            // SAFETY: loom checks that no read of this cell races with the write.
            self.0.cells[index].with_mut(|p| unsafe { *p = entry })
        }
        unsafe fn read(&self, index: usize) -> u64 {
            // SAFETY: loom checks that no write of this cell races with the read.
            self.0.cells[index].with(|p| unsafe { *p })
        }
    }

    impl LapTagged for Shared {
        unsafe fn write_with_lap(&self, index: usize, entry: u64, lap: bool) {
            // SAFETY: loom checks that no read of this cell races with the write.
            self.0.cells[index].with_mut(|p| unsafe { *p = entry });
            self.0.tags[index].store(lap as u64, Ordering::Release);
        }
        unsafe fn read_if_lap(&self, index: usize, lap: bool) -> Option<u64> {
            if self.0.tags[index].load(Ordering::Acquire) != lap as u64 {
                return None;
            }
            // SAFETY: loom checks that no write of this cell races with the read.
            Some(self.0.cells[index].with(|p| unsafe { *p }))
        }
        fn holds_lap(&self, index: usize, lap: bool) -> bool {
            self.0.tags[index].load(Ordering::Acquire) == lap as u64
        }
    }

    fn loom_ring() -> Shared {
        Shared(Arc::new(LoomRing {
            head: AtomicU64::new(0),
            tail: AtomicU64::new(0),
            cells: (0..2).map(|_| UnsafeCell::new(0)).collect(),
            tags: (0..2).map(|_| AtomicU64::new(0)).collect(),
        }))
    }

    type Push = fn(&mut Producer<Shared>, u64) -> Result<(), PushError>;
    type Pop = fn(&mut Consumer<Shared>) -> Result<Option<u64>, RingCorrupt>;

    /// Every interleaving of a producer pushing 3 entries through a 2-entry ring (so
    /// into its second lap) and a consumer popping them: entries arrive complete, in
    /// order, and no cell is read while it is written.
    fn three_entries_through_two_cells(push: Push, pop: Pop) {
        loom::model(move || {
            let ring = loom_ring();
            // SAFETY: exactly one producer and one consumer are created.
            let mut producer = unsafe { Producer::new(ring.clone()) };
            // SAFETY: as above.
            let mut consumer = unsafe { Consumer::new(ring) };
            let t = loom::thread::spawn(move || {
                for v in 1..=3u64 {
                    while push(&mut producer, v * 11).is_err() {
                        loom::thread::yield_now();
                    }
                }
            });
            let mut got = Vec::new();
            while got.len() < 3 {
                match pop(&mut consumer).expect("cursors stay consistent") {
                    Some(v) => got.push(v),
                    None => loom::thread::yield_now(),
                }
            }
            t.join().unwrap();
            assert_eq!(got, vec![11, 22, 33]);
        });
    }

    /// By cursors: the consumer reads the producer's tail.
    #[test]
    fn spsc_ring_is_race_free_and_ordered() {
        three_entries_through_two_cells(Producer::try_push, Consumer::try_pop);
    }

    /// By laps: the consumer polls each entry's lap parity and never the tail (the model
    /// fails if the producer stores the parity before the rest of the entry).
    #[test]
    fn lap_tagged_ring_is_race_free_and_ordered() {
        three_entries_through_two_cells(Producer::try_push_tagged, Consumer::try_pop_tagged);
    }
}
