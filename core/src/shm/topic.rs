//! A topic's shared memory: one sealed memfd written only by its publisher (header, the
//! publisher's line, a record and a queue per subscriber, the sample slots), mapped
//! read-only by every subscriber; and per subscription one small memfd written only by
//! its subscriber (how far it read, which samples it holds), mapped read-only by the
//! publisher. So no subscriber can write what another reads, and whatever a subscriber
//! writes in its own memory the publisher copies and checks before use
//! ([`crate::proto::topic`] decides with it).
//!
//! Reading a sample in place is safe against a publisher that overwrites it
//! (DropOldest): the subscriber names the sample in its `held` list, fences, and checks
//! that the queue entry still names it; the publisher overwrites an entry, fences, and
//! only then looks at `held` before loaning a slot again (Dekker's pattern: one of the
//! two sees the other). An entry's `tag` is its queue position + 1, stored last with
//! Release; the subscriber polls the tag of the entry at its position, never a cursor
//! the publisher keeps elsewhere.
//!
//! Step 1 of publish/subscribe (issue 26): the memory and the decisions, tested here;
//! the runtime's topics (brokering by the host, waiting, the language APIs) use them
//! next, so until then only the tests do.

use std::fs::File;
use std::sync::atomic::{fence, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use memmap2::MmapRaw;

use super::memfd;
use super::RawView;
use crate::error::{Error, Result};
use crate::proto::topic::{DetachReason, Observe, Publication, PublisherBook, SampleAt, TopicPolicy};
use crate::wire::Status;

/// First 8 bytes of a topic's memfd.
pub const TOPIC_MAGIC: [u8; 8] = *b"CELLTOPC";
/// First 8 bytes of a subscription's memfd.
pub const SUBSCRIPTION_MAGIC: [u8; 8] = *b"CELLSUBS";
/// Layout version of both.
pub const TOPIC_LAYOUT_MAJOR: u16 = 1;
/// Samples up to this many bytes travel in the queue entry itself.
pub const INLINE_MAX: usize = 40;
/// Most subscribers a topic may have.
pub const MAX_SUBSCRIBERS: u32 = 64;
/// Most samples a subscriber may hold at once.
pub const MAX_BORROWED: u32 = 16;
/// Longest topic name.
pub const TOPIC_NAME_MAX: usize = 63;

/// From this sample size up, a loan takes the slot released last (see
/// [`PublisherBook::reuse_warm_slots`]): copying 64 KiB costs microseconds, reading a
/// subscriber's head line a fraction of one.
const WARM_REUSE_MIN: u32 = 64 * 1024;
const LINE: usize = 64;
const PAGE: usize = 4096;
/// Bytes of a subscription's memfd.
const SUBSCRIPTION_SIZE: u64 = PAGE as u64;

/// Topic memfd offsets.
mod at {
    pub const MAGIC: usize = 0;
    pub const MAJOR: usize = 8;
    pub const SAMPLE_SIZE: usize = 16;
    pub const SLOTS: usize = 20;
    pub const DEPTH: usize = 24;
    pub const MAX_SUBSCRIBERS: usize = 28;
    pub const MAX_BORROWED: usize = 32;
    pub const HISTORY: usize = 36;
    pub const SIZE: usize = 40;
    pub const NAME: usize = 64;
    /// The publisher's line: u64 samples published, u32 state (0 open, 1 closed).
    pub const PUBLISHED: usize = 128;
    pub const STATE: usize = 136;
    /// Subscriber records, 64 bytes each.
    pub const RECORDS: usize = 192;
    pub mod record {
        /// u32: 0 free, 1 attached, 2 detached.
        pub const STATE: usize = 0;
        /// u32 policy code and its n.
        pub const POLICY: usize = 4;
        pub const POLICY_N: usize = 8;
        /// u32 status code of a detach.
        pub const DETACH_STATUS: usize = 12;
        /// u64: the queue position the subscription starts at.
        pub const START: usize = 16;
        /// u64: the next position the publisher writes (for lag).
        pub const TAIL: usize = 24;
        /// u32 futex word the subscriber sleeps on; bumped by the publisher to wake it.
        pub const WAKE: usize = 32;
        /// u32: 1 while the publisher waits for this subscriber's head (Block).
        pub const PUBLISHER_WAITING: usize = 36;
        /// u64: samples this subscriber lost at the publisher (dropped or overwritten).
        pub const DROPPED: usize = 40;
        /// u64: the sequence number of the subscription's first sample (the oldest of
        /// the history queued at attach, else the next published): what it missed is
        /// counted from there.
        pub const FIRST_SEQ: usize = 48;
    }
    /// Queue entry fields (64 bytes each).
    pub mod entry {
        /// u64: queue position + 1, stored last (Release); 0 = never written.
        pub const TAG: usize = 0;
        pub const SEQ: usize = 8;
        /// u32 slot index, or u32::MAX for an inline sample.
        pub const SLOT: usize = 16;
        pub const LEN: usize = 20;
        pub const INLINE: usize = 24;
    }
}

/// Subscription memfd offsets.
mod sub_at {
    pub const MAGIC: usize = 0;
    /// u64: the next queue position the subscriber reads; the publisher waits on its low
    /// 32 bits (Block).
    pub const HEAD: usize = 64;
    /// u32: 1 while the subscriber sleeps on its record's wake word. On a line of its own:
    /// the publisher reads it after every publish, the subscriber writes `head` after
    /// every read, and one line for both would cross cores twice per sample.
    pub const PARKED: usize = 256;
    /// u64 each: samples received, samples missed.
    pub const RECEIVED: usize = 80;
    pub const MISSED: usize = 88;
    /// u64 per borrowed sample (`MAX_BORROWED` of them, the publisher reads the topic's
    /// `max_borrowed`): its sequence number, 0 for none.
    pub const HELD: usize = 128;
}

/// The shape of a topic, fixed when it is created.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TopicGeometry {
    /// Largest sample, in bytes.
    pub sample_size: u32,
    /// Sample slots in the pool.
    pub slots: u32,
    /// Entries of each subscriber's queue (a power of two).
    pub depth: u32,
    pub max_subscribers: u32,
    /// Samples a subscriber may hold at once.
    pub max_borrowed: u32,
    /// Samples kept for late joiners.
    pub history: u32,
}

impl TopicGeometry {
    /// A geometry whose pool can never run dry whatever the subscribers do: a queue's
    /// worth per subscriber, what each may hold, the history and one loan.
    pub fn new(sample_size: u32, depth: u32, max_subscribers: u32, max_borrowed: u32, history: u32) -> TopicGeometry {
        let slots = max_subscribers
            .saturating_mul(depth.saturating_add(max_borrowed))
            .saturating_add(history)
            .saturating_add(1);
        TopicGeometry { sample_size, slots, depth, max_subscribers, max_borrowed, history }
    }

    /// Checks every limit; the message says which one is broken.
    pub fn validate(&self) -> std::result::Result<(), String> {
        if self.sample_size == 0 || self.sample_size > super::layout::MAX_SLOT_SIZE {
            return Err(format!("sample size {} is not in 1..={}", self.sample_size, super::layout::MAX_SLOT_SIZE));
        }
        if !self.depth.is_power_of_two() || self.depth > 1 << 16 {
            return Err(format!("queue depth {} is not a power of two up to 65536", self.depth));
        }
        if self.max_subscribers == 0 || self.max_subscribers > MAX_SUBSCRIBERS {
            return Err(format!("max subscribers {} is not in 1..={MAX_SUBSCRIBERS}", self.max_subscribers));
        }
        if self.max_borrowed == 0 || self.max_borrowed > MAX_BORROWED {
            return Err(format!("max borrowed {} is not in 1..={MAX_BORROWED}", self.max_borrowed));
        }
        if self.history > self.depth {
            return Err(format!("history {} is deeper than the queues ({})", self.history, self.depth));
        }
        if self.slots == 0 || self.slots == u32::MAX {
            return Err(format!("{} slots", self.slots));
        }
        match self.size() {
            Some(size) if size <= super::layout::MAX_SIDE_SIZE => Ok(()),
            _ => Err("the topic would take more than 8 GiB".to_string()),
        }
    }

    fn stride(&self) -> u64 {
        (self.sample_size as u64).next_multiple_of(LINE as u64)
    }

    fn queues_at(&self) -> u64 {
        (at::RECORDS + self.max_subscribers as usize * LINE) as u64
    }

    fn slots_at(&self) -> Option<u64> {
        let queues = (self.max_subscribers as u64).checked_mul(self.depth as u64)?.checked_mul(LINE as u64)?;
        Some(self.queues_at().checked_add(queues)?.next_multiple_of(PAGE as u64))
    }

    /// Bytes of the topic's memfd.
    pub fn size(&self) -> Option<u64> {
        let slots = (self.slots as u64).checked_mul(self.stride())?;
        Some(self.slots_at()?.checked_add(slots)?.next_multiple_of(PAGE as u64))
    }

    fn record(&self, index: usize) -> usize {
        at::RECORDS + index * LINE
    }

    fn entry(&self, index: usize, position: u64) -> usize {
        self.queues_at() as usize + (index * self.depth as usize + (position % self.depth as u64) as usize) * LINE
    }

    fn slot(&self, slot: u32) -> usize {
        self.slots_at().unwrap_or(0) as usize + slot as usize * self.stride() as usize
    }
}

fn protocol(what: impl Into<String>) -> Error {
    Error::new(Status::ProtocolError, what.into())
}

/// The publisher's side of a topic: its memory (read-write), its book, and the
/// subscriptions' memory it reads.
pub struct TopicPublisher {
    file: File,
    _map: Arc<MmapRaw>,
    view: RawView,
    geometry: TopicGeometry,
    book: PublisherBook,
    subscriptions: Vec<Option<SubscriptionView>>,
    /// A loan is out (the pool holds one loan's slot: see [`TopicGeometry::new`]).
    loaned: bool,
}

impl std::fmt::Debug for TopicPublisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TopicPublisher").field("geometry", &self.geometry).finish_non_exhaustive()
    }
}

/// A subscription's memory as the publisher sees it: read-only.
struct SubscriptionView {
    _map: Arc<MmapRaw>,
    view: RawView,
    max_borrowed: usize,
}

impl SubscriptionView {
    fn head(&self) -> &AtomicU64 {
        self.view.atomic_u64(sub_at::HEAD)
    }
}

/// A Block subscriber's full queue, as [`TopicPublisher::full_queue`] found it: the words
/// to sleep on (the low half of the subscriber's head, which its reads move, and its
/// record's wake word, which the end of its subscription bumps) and the publisher's
/// waiting flag, in mappings this value keeps alive.
pub struct FullQueue {
    head: *const AtomicU32,
    waiting: *const AtomicU32,
    wake: *const AtomicU32,
    seen: u32,
    seen_wake: u32,
    _subscription: Arc<MmapRaw>,
    _topic: Arc<MmapRaw>,
}

impl FullQueue {
    /// Sleeps until the subscriber moves its head, its subscription ends, or `timeout`.
    pub fn sleep(&self, timeout: Duration) {
        // SAFETY: the three words are live, aligned u32s in the mappings `self` keeps alive.
        let (head, waiting, wake) = unsafe { (&*self.head, &*self.waiting, &*self.wake) };
        use crate::sys::futex::{wait_any, WaitAny};
        if wait_any(&[(head, self.seen), (wake, self.seen_wake)], Some(timeout)) == WaitAny::Unsupported {
            // Before Linux 5.16 the end is noticed at the caller's next slice.
            crate::sys::futex::wait(head, self.seen, timeout);
        }
        waiting.store(0, Ordering::Relaxed);
    }

    /// Lowers the waiting flag without sleeping (the publisher gave up).
    pub fn give_up(self) {
        // SAFETY: as in `sleep`.
        unsafe { &*self.waiting }.store(0, Ordering::Relaxed);
    }
}

/// What the book reads of the subscriptions.
struct Subscriptions<'a>(&'a [Option<SubscriptionView>]);

impl Observe for Subscriptions<'_> {
    fn head(&self, subscriber: usize) -> u64 {
        self.0.get(subscriber).and_then(Option::as_ref).map_or(0, |s| s.head().load(Ordering::Acquire))
    }

    fn holds(&self, subscriber: usize, seq: u64) -> bool {
        let Some(Some(sub)) = self.0.get(subscriber) else { return false };
        // Acquire: a hold the subscriber let go of (Release) was let go of after it read
        // the slot, so writing the slot once we see it gone cannot race that read.
        (0..sub.max_borrowed).any(|k| sub.view.atomic_u64(sub_at::HELD + 8 * k).load(Ordering::Acquire) == seq)
    }
}

/// A slot the publisher writes a sample into before publishing it: its bytes are this
/// loan's alone until it is published or given back, so it can be written without the
/// publisher's lock (the mapping lives as long as the loan).
pub struct Loan {
    slot: u32,
    _map: Arc<MmapRaw>,
    bytes: *mut u8,
    len: usize,
}

impl std::fmt::Debug for Loan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Loan").field("slot", &self.slot).field("len", &self.len).finish()
    }
}

// SAFETY: a Loan is the one writer of its slot (see `bytes_mut`) and keeps the mapping
// alive; moving it to another thread moves that exclusive right with it.
unsafe impl Send for Loan {}

impl Loan {
    /// The slot's size: the topic's sample size in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// The slot: the topic's sample size in bytes.
    pub fn bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: `bytes..bytes + len` is in bounds of the read-write mapping `_map`
        // keeps alive (checked when loaned); the book gave this slot to this loan alone,
        // so no subscriber reads it (no entry or history names it) and no other loan
        // writes it until the loan is published or given back, which consumes it; `&mut
        // self` makes this the only reference.
        unsafe { std::slice::from_raw_parts_mut(self.bytes, self.len) }
    }
}

impl TopicPublisher {
    /// Creates a topic's memfd named `name` of `geometry`, mapped read-write here and
    /// sealed so that nobody else can ever write or resize it.
    pub fn create(name: &str, geometry: TopicGeometry) -> Result<TopicPublisher> {
        geometry.validate().map_err(|m| Error::new(Status::InvalidArgument, format!("topic {name:?}: {m}")))?;
        if name.is_empty() || name.len() > TOPIC_NAME_MAX {
            return Err(Error::new(Status::InvalidArgument, format!("topic name {name:?}: 1 to 63 bytes")));
        }
        let size = geometry.size().unwrap_or(0);
        let file = memfd::create(&format!("cellshm-topic-{name}"), size)?;
        let map = memfd::map(&file, size, true, "a topic's memory")?;
        let view = RawView { base: map.as_mut_ptr(), len: size as usize };
        let header: [(usize, u32); 6] = [
            (at::SAMPLE_SIZE, geometry.sample_size),
            (at::SLOTS, geometry.slots),
            (at::DEPTH, geometry.depth),
            (at::MAX_SUBSCRIBERS, geometry.max_subscribers),
            (at::MAX_BORROWED, geometry.max_borrowed),
            (at::HISTORY, geometry.history),
        ];
        view.write_bytes(at::MAGIC, &TOPIC_MAGIC);
        view.write_bytes(at::MAJOR, &TOPIC_LAYOUT_MAJOR.to_le_bytes());
        for (offset, value) in header {
            view.write_bytes(offset, &value.to_le_bytes());
        }
        view.write_bytes(at::SIZE, &size.to_le_bytes());
        view.write_bytes(at::NAME, name.as_bytes());
        memfd::seal(&file, memfd::READ_ONLY_SEALS)?;
        Ok(TopicPublisher {
            file,
            _map: map,
            view,
            geometry,
            book: {
                let book = PublisherBook::new(
                    geometry.slots,
                    geometry.depth,
                    geometry.max_subscribers as usize,
                    geometry.history as usize,
                );
                if geometry.sample_size >= WARM_REUSE_MIN {
                    book.reuse_warm_slots()
                } else {
                    book
                }
            },
            subscriptions: (0..geometry.max_subscribers).map(|_| None).collect(),
            loaned: false,
        })
    }

    /// The topic's shape.
    pub fn geometry(&self) -> TopicGeometry {
        self.geometry
    }

    /// A read-only descriptor of the topic's memory, for a subscriber.
    pub fn share(&self) -> Result<File> {
        memfd::reopen_read_only(&self.file)
    }

    /// Subscriptions attached now.
    pub fn attached(&self) -> usize {
        self.subscriptions.iter().filter(|s| s.is_some()).count()
    }

    /// The sequence number of the next sample published.
    pub fn next_seq(&self) -> u64 {
        self.book.next_seq()
    }

    /// A loan is out: no other can be, and no sample can be published before it.
    pub fn loaned(&self) -> bool {
        self.loaned
    }

    /// Loans a free slot (None while a loan is out, or every slot is in use: queued,
    /// held or in history).
    pub fn loan(&mut self) -> Option<Loan> {
        if self.loaned {
            return None;
        }
        // Whatever was overwritten before is seen by a subscriber after its own fence,
        // or we see it hold the sample (see the module's documentation).
        fence(Ordering::SeqCst);
        let slot = self.book.loan(&Subscriptions(&self.subscriptions))?;
        let offset = self.geometry.slot(slot);
        let len = self.geometry.sample_size as usize;
        self.view.check(offset, len);
        self.loaned = true;
        Some(Loan { slot, _map: self._map.clone(), bytes: self.view.ptr(offset), len })
    }

    /// Gives a loan back unpublished.
    pub fn unloan(&mut self, loan: Loan) {
        self.loaned = false;
        self.book.unloan(loan.slot);
    }

    /// None if every Block subscriber's queue has room (after polling up to `spin` for
    /// it); else the full queue to sleep on, with this publisher's waiting flag raised so
    /// that its reader wakes it. Sleep without the publisher's lock: the subscriber being
    /// waited for may be joining, or ending (which takes the lock and bumps the record's
    /// wake word, one of the two the sleep waits on).
    pub fn full_queue(&mut self, spin: Duration) -> Option<FullQueue> {
        // A subscriber that is reading makes room within microseconds: poll that long
        // before sleeping (a futex round trip costs more than it saves then).
        let spin_until = std::time::Instant::now() + spin;
        while self.book.check_room(&Subscriptions(&self.subscriptions)).is_err() {
            if std::time::Instant::now() >= spin_until {
                break;
            }
            std::hint::spin_loop();
        }
        let wait = self.book.check_room(&Subscriptions(&self.subscriptions)).err()?;
        let sub = self.subscriptions.get(wait.subscriber)?.as_ref()?;
        let record = self.geometry.record(wait.subscriber);
        let waiting = self.view.atomic_u32(record + at::record::PUBLISHER_WAITING);
        let wake = self.view.atomic_u32(record + at::record::WAKE);
        let head = sub.view.atomic_u32(sub_at::HEAD);
        let (seen, seen_wake) = (head.load(Ordering::Relaxed), wake.load(Ordering::Relaxed));
        waiting.store(1, Ordering::SeqCst);
        fence(Ordering::SeqCst);
        if self.book.check_room(&Subscriptions(&self.subscriptions)).is_ok() {
            waiting.store(0, Ordering::Relaxed);
            return None;
        }
        Some(FullQueue {
            head: head as *const AtomicU32,
            waiting: waiting as *const AtomicU32,
            wake: wake as *const AtomicU32,
            seen,
            seen_wake,
            _subscription: sub._map.clone(),
            _topic: self._map.clone(),
        })
    }

    /// Publishes the loaned sample of `len` bytes (at most the sample size).
    pub fn publish(&mut self, loan: Loan, len: usize) -> Publication {
        self.loaned = false;
        let len = len.min(self.geometry.sample_size as usize) as u32;
        let publication =
            self.book.publish(SampleAt::Slot { slot: loan.slot, len }, &Subscriptions(&self.subscriptions));
        self.carry_out(&publication);
        publication
    }

    /// Publishes a small sample (at most [`INLINE_MAX`] bytes) in the queue entries.
    pub fn publish_inline(&mut self, bytes: &[u8]) -> Publication {
        let bytes = &bytes[..bytes.len().min(INLINE_MAX)];
        let publication = self.book.publish(SampleAt::Inline(bytes.to_vec()), &Subscriptions(&self.subscriptions));
        self.carry_out(&publication);
        publication
    }

    /// Writes a publication's entries and records, then wakes the parked subscribers.
    fn carry_out(&mut self, publication: &Publication) {
        for push in &publication.pushes {
            let lapping = publication.dropped_for.contains(&push.subscriber);
            self.write_entry(push.subscriber, push.position, push.seq, &push.at, lapping);
        }
        for &index in &publication.dropped_for {
            let dropped = self.view.atomic_u64(self.geometry.record(index) + at::record::DROPPED);
            dropped.store(dropped.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
        }
        for &(index, reason) in &publication.detached {
            let status = match reason {
                DetachReason::Lagging => Status::ResourceExhausted,
                DetachReason::Lied => Status::ProtocolError,
            };
            self.end_detached(index, status);
        }
        self.view.atomic_u64(at::PUBLISHED).store(publication.seq, Ordering::Release);
        // Parked handshake (PROTOCOL.md §5's, on the record's wake word): either the
        // subscriber's recheck after `parked := 1` sees the entry, or we see it parked.
        fence(Ordering::SeqCst);
        let indices: Vec<usize> = publication.pushes.iter().map(|p| p.subscriber).collect();
        for index in indices {
            self.wake(index);
        }
    }

    fn wake(&self, index: usize) {
        let Some(Some(sub)) = self.subscriptions.get(index) else { return };
        if sub.view.atomic_u32(sub_at::PARKED).load(Ordering::Relaxed) == 1 {
            self.ring(index);
        }
    }

    /// Writes queue entry `position` of `index`. `lapping`: it overwrites an entry its
    /// subscriber has not read (DropOldest), whose tail is published first for the
    /// subscriber to go on from (the record's line is written only then, so the
    /// subscriber's reads of it on every sample stay local).
    fn write_entry(&self, index: usize, position: u64, seq: u64, at: &SampleAt, lapping: bool) {
        let entry = self.geometry.entry(index, position);
        if lapping {
            let record = self.geometry.record(index);
            self.view.atomic_u64(record + at::record::TAIL).store(position + 1, Ordering::Relaxed);
        }
        let (slot, len) = match at {
            SampleAt::Slot { slot, len } => (*slot, *len),
            SampleAt::Inline(bytes) => {
                self.view.write_bytes(entry + at::entry::INLINE, bytes);
                (u32::MAX, bytes.len() as u32)
            }
        };
        self.view.atomic_u64(entry + at::entry::SEQ).store(seq, Ordering::Relaxed);
        self.view.atomic_u32(entry + at::entry::SLOT).store(slot, Ordering::Relaxed);
        self.view.atomic_u32(entry + at::entry::LEN).store(len, Ordering::Relaxed);
        self.view.atomic_u64(entry + at::entry::TAG).store(position + 1, Ordering::Release);
    }

    /// Attaches the subscription whose memory `subscription` is (read-only here) at a
    /// free index with `policy`; the index, where its queue starts, and the history is
    /// already queued. RESOURCE_EXHAUSTED when every index is taken, PROTOCOL_ERROR for
    /// memory that is not a subscription's.
    pub fn attach(&mut self, subscription: &File, policy: TopicPolicy) -> Result<(usize, u64)> {
        let size = SUBSCRIPTION_SIZE;
        memfd::check_received(subscription, size, memfd::READ_ONLY_SEALS, "a subscription's memory")?;
        let map = memfd::map(subscription, size, false, "a subscription's memory")?;
        let view = RawView { base: map.as_mut_ptr(), len: size as usize };
        let mut magic = [0u8; 8];
        view.read_bytes(sub_at::MAGIC, &mut magic);
        if magic != SUBSCRIPTION_MAGIC {
            return Err(protocol("not a subscription's memory (magic)"));
        }
        let index = (0..self.subscriptions.len())
            .find(|&i| self.subscriptions[i].is_none())
            .ok_or_else(|| Error::new(Status::ResourceExhausted, "the topic has its most subscribers"))?;
        let pushes = self.book.attach(index, policy);
        let start = self.book.start(index);
        let first_seq = pushes.first().map_or(self.book.next_seq(), |push| push.seq);
        self.subscriptions[index] =
            Some(SubscriptionView { _map: map, view, max_borrowed: self.geometry.max_borrowed as usize });
        let record = self.geometry.record(index);
        let (code, n) = policy.code();
        self.view.atomic_u32(record + at::record::POLICY).store(code, Ordering::Relaxed);
        self.view.atomic_u32(record + at::record::POLICY_N).store(n, Ordering::Relaxed);
        self.view.atomic_u32(record + at::record::DETACH_STATUS).store(0, Ordering::Relaxed);
        self.view.atomic_u64(record + at::record::START).store(start, Ordering::Relaxed);
        self.view.atomic_u64(record + at::record::TAIL).store(start, Ordering::Relaxed);
        self.view.atomic_u64(record + at::record::DROPPED).store(0, Ordering::Relaxed);
        self.view.atomic_u64(record + at::record::FIRST_SEQ).store(first_seq, Ordering::Relaxed);
        self.view.atomic_u32(record + at::record::STATE).store(1, Ordering::Release);
        for push in pushes {
            self.write_entry(index, push.position, push.seq, &push.at, false);
        }
        Ok((index, start))
    }

    /// Ends the subscription at `index` that started at `start` (it left, or is detached
    /// with `status`): its record says so and its queue's slots are let go. Nothing if
    /// that subscription ended already (another may hold the index now).
    pub fn end_subscription(&mut self, index: usize, start: u64, status: Status) {
        if !self.book.is_attached(index) || self.book.start(index) != start {
            return;
        }
        self.book.detach(index);
        self.end_detached(index, status);
    }

    /// Says in the record of `index` (detached by the book already) why it ended.
    fn end_detached(&mut self, index: usize, status: Status) {
        if self.subscriptions.get_mut(index).and_then(Option::take).is_none() {
            return;
        }
        let record = self.geometry.record(index);
        self.view.atomic_u32(record + at::record::DETACH_STATUS).store(status.code(), Ordering::Relaxed);
        self.view.atomic_u32(record + at::record::STATE).store(2, Ordering::Release);
        self.ring(index);
    }

    /// Bumps subscriber `index`'s wake word and wakes whoever sleeps on it.
    fn ring(&self, index: usize) {
        let word = self.view.atomic_u32(self.geometry.record(index) + at::record::WAKE);
        word.fetch_add(1, Ordering::Release);
        crate::sys::futex::wake_all(word);
    }

    /// Marks the topic closed and wakes every subscriber.
    pub fn close(&mut self) {
        self.view.atomic_u32(at::STATE).store(1, Ordering::Release);
        for index in 0..self.subscriptions.len() {
            self.ring(index);
        }
    }
}

/// A subscriber's side of a topic: the topic's memory (read-only), its own subscription
/// memory (read-write), its index and position.
pub struct TopicSubscriber {
    _topic_map: Arc<MmapRaw>,
    topic: RawView,
    geometry: TopicGeometry,
    _own_map: Arc<MmapRaw>,
    own: RawView,
    index: usize,
    head: u64,
    last_seq: u64,
}

impl std::fmt::Debug for TopicSubscriber {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TopicSubscriber").field("index", &self.index).field("head", &self.head).finish_non_exhaustive()
    }
}

/// A sample taken from the queue. Slot samples are read in place until released.
#[derive(Debug)]
pub struct Received {
    /// Its sequence number.
    pub seq: u64,
    /// Samples missed just before it (dropped, overwritten, or before the subscription).
    pub missed: u64,
    /// Where its bytes are.
    bytes: ReceivedBytes,
}

#[derive(Debug)]
enum ReceivedBytes {
    Inline(Vec<u8>),
    Slot { offset: usize, len: usize, held: usize },
}

/// What [`TopicSubscriber::try_next`] found.
#[derive(Debug)]
pub enum Next {
    Sample(Received),
    /// Nothing new yet.
    Empty,
    /// The subscription ended (the publisher detached it, with this status, or closed the
    /// topic).
    Ended(Status),
}

impl TopicSubscriber {
    /// Makes the memory a subscription writes (its own memfd, sealed): hand
    /// [`TopicSubscriberBuilder::share`] to the publisher, then finish with
    /// [`TopicSubscriberBuilder::attached`] and the topic's memory.
    pub fn prepare() -> Result<TopicSubscriberBuilder> {
        let size = SUBSCRIPTION_SIZE;
        let own_file = memfd::create("cellshm-subscription", size)?;
        let own_map = memfd::map(&own_file, size, true, "a subscription's memory")?;
        let own = RawView { base: own_map.as_mut_ptr(), len: size as usize };
        own.write_bytes(sub_at::MAGIC, &SUBSCRIPTION_MAGIC);
        memfd::seal(&own_file, memfd::READ_ONLY_SEALS)?;
        Ok(TopicSubscriberBuilder { own_map, own, own_file })
    }

    fn record(&self) -> usize {
        self.geometry.record(self.index)
    }

    /// Its index among the topic's subscribers.
    #[cfg(test)]
    pub fn index(&self) -> usize {
        self.index
    }

    /// Samples this subscriber lost at the publisher (from the publisher's record).
    pub fn dropped(&self) -> u64 {
        self.topic.atomic_u64(self.record() + at::record::DROPPED).load(Ordering::Relaxed)
    }

    /// Takes the next sample, if one is queued.
    /// A closed topic's queued samples are still read (the publisher writes no more);
    /// a detached subscription ends at once (its slots may be loaned again).
    pub fn try_next(&mut self) -> Next {
        if let Some(status) = self.detached() {
            return Next::Ended(status);
        }
        let depth = self.geometry.depth as u64;
        loop {
            let entry = self.geometry.entry(self.index, self.head);
            let tag = self.topic.atomic_u64(entry + at::entry::TAG).load(Ordering::Acquire);
            if tag <= self.head {
                if self.topic.atomic_u32(at::STATE).load(Ordering::Acquire) == 1 {
                    // Closed: recheck the entry, which the close's Release ordered before.
                    let tag = self.topic.atomic_u64(entry + at::entry::TAG).load(Ordering::Acquire);
                    if tag <= self.head {
                        return Next::Ended(Status::Unavailable);
                    }
                    continue;
                }
                return Next::Empty;
            }
            if tag != self.head + 1 {
                // Overwritten a lap (or more) ahead: jump to the oldest entry still queued.
                let tail = self.topic.atomic_u64(self.record() + at::record::TAIL).load(Ordering::Acquire);
                let oldest = tail.saturating_sub(depth);
                if oldest <= self.head || tag % depth != (self.head + 1) % depth {
                    return Next::Ended(self.lied("a queue entry's tag"));
                }
                self.set_head(oldest);
                continue;
            }
            let seq = self.topic.atomic_u64(entry + at::entry::SEQ).load(Ordering::Relaxed);
            let slot = self.topic.atomic_u32(entry + at::entry::SLOT).load(Ordering::Relaxed);
            let len = self.topic.atomic_u32(entry + at::entry::LEN).load(Ordering::Relaxed) as usize;
            if seq <= self.last_seq {
                return Next::Ended(self.lied("a sequence number that went back"));
            }
            let bytes = if slot == u32::MAX {
                if len > INLINE_MAX {
                    return Next::Ended(self.lied("an inline sample's length"));
                }
                let mut inline = vec![0u8; len];
                self.topic.read_bytes(entry + at::entry::INLINE, &mut inline);
                ReceivedBytes::Inline(inline)
            } else {
                if slot >= self.geometry.slots || len > self.geometry.sample_size as usize {
                    return Next::Ended(self.lied("a sample's slot or length"));
                }
                let Some(held) = self.free_hold() else { return Next::Empty };
                self.own.atomic_u64(sub_at::HELD + 8 * held).store(seq, Ordering::Relaxed);
                ReceivedBytes::Slot { offset: self.geometry.slot(slot), len, held }
            };
            // Still ours? (See the module's documentation: the publisher may have
            // overwritten the entry meanwhile; then it sees the hold, or we see its tag.)
            fence(Ordering::SeqCst);
            if self.topic.atomic_u64(entry + at::entry::TAG).load(Ordering::Acquire) != tag {
                if let ReceivedBytes::Slot { held, .. } = bytes {
                    self.own.atomic_u64(sub_at::HELD + 8 * held).store(0, Ordering::Release);
                }
                continue;
            }
            let missed = seq - self.last_seq - 1;
            self.last_seq = seq;
            self.set_head(self.head + 1);
            self.count(sub_at::RECEIVED, 1);
            self.count(sub_at::MISSED, missed);
            return Next::Sample(Received { seq, missed, bytes });
        }
    }

    /// Whether a read would find something now (a sample, or the subscription's end),
    /// without taking it.
    pub fn has_next(&self) -> bool {
        let entry = self.geometry.entry(self.index, self.head);
        self.topic.atomic_u64(entry + at::entry::TAG).load(Ordering::Acquire) > self.head
            || self.topic.atomic_u32(at::STATE).load(Ordering::Acquire) == 1
            || self.detached().is_some()
    }

    /// Waits for the next sample, sleeping once at most, up to `timeout`: Empty if
    /// nothing came by then, or the sleep was cut short ([`SampleAccess::wake_reader`]).
    pub fn next_timeout(&mut self, timeout: Duration) -> Next {
        match self.try_next() {
            Next::Empty => {}
            other => return other,
        }
        let (seen, next) = self.park();
        if matches!(next, Next::Empty) && !timeout.is_zero() {
            let topic = self.topic;
            crate::sys::futex::wait(topic.atomic_u32(self.record() + at::record::WAKE), seen, timeout);
        }
        self.unpark();
        match next {
            Next::Empty => self.try_next(),
            other => other,
        }
    }

    /// Asks the publisher to wake this subscriber (`parked`: it bumps the record's wake
    /// word and FUTEX_WAKEs it after each publish), then looks at the queue again: the
    /// wake word's value before, to sleep on, and what the look found. Either the look
    /// sees a sample published meanwhile, or the publisher sees the subscriber parked.
    pub fn park(&mut self) -> (u32, Next) {
        let seen = self.park_only();
        (seen, self.try_next())
    }

    /// As [`TopicSubscriber::park`] without the look (the caller looks with
    /// [`TopicSubscriber::has_next`], taking nothing): the wake word's value before.
    pub fn park_only(&mut self) -> u32 {
        let (topic, own) = (self.topic, self.own);
        let seen = topic.atomic_u32(self.record() + at::record::WAKE).load(Ordering::Acquire);
        own.atomic_u32(sub_at::PARKED).store(1, Ordering::SeqCst);
        fence(Ordering::SeqCst);
        seen
    }

    /// Whether it asked to be woken (tests wait for a sleeper with it).
    #[cfg(test)]
    pub fn is_parked(&self) -> bool {
        self.own.atomic_u32(sub_at::PARKED).load(Ordering::SeqCst) == 1
    }

    /// Tells the publisher to stop waking this subscriber.
    pub fn unpark(&mut self) {
        self.own.atomic_u32(sub_at::PARKED).store(0, Ordering::Relaxed);
    }

    /// The bytes of a received sample, read in place (copies, never references: the
    /// publisher's memory). The runtime reads through [`SampleAccess`].
    #[cfg(test)]
    pub fn bytes<'a>(&'a self, received: &'a Received) -> super::SharedBytes<'a> {
        read_in_place(&self.topic, received)
    }

    /// Lets go of a received sample: the publisher may loan its slot again.
    #[cfg(test)]
    pub fn release(&self, received: Received) {
        release_hold(&self.own, received);
    }

    /// What reads and releases samples without this subscriber (another thread's).
    pub fn access(&self) -> SampleAccess {
        SampleAccess {
            _topic_map: self._topic_map.clone(),
            topic: self.topic,
            _own_map: self._own_map.clone(),
            own: self.own,
            wake: self.record() + at::record::WAKE,
        }
    }

    fn free_hold(&self) -> Option<usize> {
        (0..self.geometry.max_borrowed as usize)
            .find(|&k| self.own.atomic_u64(sub_at::HELD + 8 * k).load(Ordering::Relaxed) == 0)
    }

    fn set_head(&mut self, head: u64) {
        self.head = head;
        self.own.atomic_u64(sub_at::HEAD).store(head, Ordering::Release);
        fence(Ordering::SeqCst);
        let record = self.record();
        if self.topic.atomic_u32(record + at::record::PUBLISHER_WAITING).load(Ordering::Relaxed) == 1 {
            crate::sys::futex::wake_all(self.own.atomic_u32(sub_at::HEAD));
        }
    }

    fn count(&self, offset: usize, n: u64) {
        let counter = self.own.atomic_u64(offset);
        counter.store(counter.load(Ordering::Relaxed) + n, Ordering::Relaxed);
    }

    fn detached(&self) -> Option<Status> {
        if self.topic.atomic_u32(self.record() + at::record::STATE).load(Ordering::Acquire) != 2 {
            return None;
        }
        let code = self.topic.atomic_u32(self.record() + at::record::DETACH_STATUS).load(Ordering::Relaxed);
        Some(Status::from_code(code).unwrap_or(Status::Unavailable))
    }

    fn lied(&self, what: &str) -> Status {
        tracing::warn!(index = self.index, "a topic's publisher wrote {what} no honest publisher can");
        Status::ProtocolError
    }
}

fn read_in_place<'a>(topic: &RawView, received: &'a Received) -> super::SharedBytes<'a> {
    match &received.bytes {
        ReceivedBytes::Inline(bytes) => super::SharedBytes::private(bytes),
        ReceivedBytes::Slot { offset, len, .. } => {
            topic.check(*offset, *len);
            // SAFETY: in bounds (checked) of the topic's read-only mapping, which the
            // caller keeps alive for 'a (a subscriber or a SampleAccess holds its Arc);
            // the publisher may write it (SharedBytes only copies with volatile loads).
            unsafe { super::SharedBytes::from_raw(topic.ptr(*offset), *len) }
        }
    }
}

fn release_hold(own: &RawView, received: Received) {
    if let ReceivedBytes::Slot { held, .. } = received.bytes {
        own.atomic_u64(sub_at::HELD + 8 * held).store(0, Ordering::Release);
    }
}

/// Reads and releases received samples, apart from the subscriber that took them (a
/// sample handed to another thread): it keeps both mappings alive.
#[derive(Clone)]
pub struct SampleAccess {
    _topic_map: Arc<MmapRaw>,
    topic: RawView,
    _own_map: Arc<MmapRaw>,
    own: RawView,
    /// The subscriber's wake word in the topic's memory.
    wake: usize,
}

impl std::fmt::Debug for SampleAccess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SampleAccess").finish_non_exhaustive()
    }
}

impl SampleAccess {
    /// As [`TopicSubscriber::bytes`].
    pub fn bytes<'a>(&'a self, received: &'a Received) -> super::SharedBytes<'a> {
        read_in_place(&self.topic, received)
    }

    /// As [`TopicSubscriber::release`].
    pub fn release(&self, received: Received) {
        release_hold(&self.own, received);
    }

    /// Wakes the subscriber's reader if it sleeps in [`TopicSubscriber::next_timeout`],
    /// to look at what this process knows and the topic's memory cannot say (its
    /// publisher died). A FUTEX_WAKE needs no write access: the topic stays read-only.
    pub fn wake_reader(&self) {
        crate::sys::futex::wake_all(self.topic.atomic_u32(self.wake));
    }
}

impl crate::runtime::futex_reactor::FutexWord for SampleAccess {
    /// The subscriber's wake word, which the publisher bumps when it wakes it.
    fn word(&self) -> &AtomicU32 {
        self.topic.atomic_u32(self.wake)
    }
}

// SAFETY: as for the subscriber: the views point into mappings the Arcs keep alive, and
// every access is atomic or volatile.
unsafe impl Send for SampleAccess {}
// SAFETY: as above; nothing in it changes after it is made.
unsafe impl Sync for SampleAccess {}

/// A subscription's memory made, before the publisher attached it.
pub struct TopicSubscriberBuilder {
    own_map: Arc<MmapRaw>,
    own: RawView,
    own_file: File,
}

impl std::fmt::Debug for TopicSubscriberBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TopicSubscriberBuilder").finish_non_exhaustive()
    }
}

/// Maps a topic's memory received from its publisher (read-only), after checking its
/// seals, magic and geometry.
pub(crate) fn map_topic(topic: &File) -> Result<(Arc<MmapRaw>, RawView, TopicGeometry)> {
    let len = topic.metadata().map_err(|e| Error::system("stat of a topic's memory", e))?.len();
    memfd::check_received(topic, len, memfd::READ_ONLY_SEALS, "a topic's memory")?;
    if len < PAGE as u64 {
        return Err(protocol(format!("a topic's memory of {len} bytes")));
    }
    let map = memfd::map(topic, len, false, "a topic's memory")?;
    let view = RawView { base: map.as_mut_ptr(), len: len as usize };
    let mut magic = [0u8; 8];
    view.read_bytes(at::MAGIC, &mut magic);
    let major = view.read_u32(at::MAJOR) & 0xffff;
    if magic != TOPIC_MAGIC || major != TOPIC_LAYOUT_MAJOR as u32 {
        return Err(protocol("not a topic's memory (magic or layout version)"));
    }
    let geometry = TopicGeometry {
        sample_size: view.read_u32(at::SAMPLE_SIZE),
        slots: view.read_u32(at::SLOTS),
        depth: view.read_u32(at::DEPTH),
        max_subscribers: view.read_u32(at::MAX_SUBSCRIBERS),
        max_borrowed: view.read_u32(at::MAX_BORROWED),
        history: view.read_u32(at::HISTORY),
    };
    geometry.validate().map_err(|m| protocol(format!("a topic's memory: {m}")))?;
    if geometry.size() != Some(len) || view.read_u64(at::SIZE) != len {
        return Err(protocol(format!("a topic's memory is {len} bytes, its geometry says {:?}", geometry.size())));
    }
    Ok((map, view, geometry))
}

impl TopicSubscriberBuilder {
    /// A read-only descriptor of this subscription's memory, for the publisher.
    pub fn share(&self) -> Result<File> {
        memfd::reopen_read_only(&self.own_file)
    }

    /// The subscriber, once the publisher attached it at `index` starting at `start`
    /// (what [`TopicPublisher::attach`] answered), reading `topic` (the topic's memory as
    /// the publisher shared it). PROTOCOL_ERROR for memory that is not a topic's, or an
    /// index it does not have.
    pub fn attached(self, topic: &File, index: usize, start: u64) -> Result<TopicSubscriber> {
        let (topic_map, topic, geometry) = map_topic(topic)?;
        if index >= geometry.max_subscribers as usize {
            return Err(protocol(format!("subscriber index {index} out of the topic's range")));
        }
        self.own.atomic_u64(sub_at::HEAD).store(start, Ordering::Release);
        // What it missed counts from its first sample, not from the topic's. A lying
        // publisher's value can only make this subscriber refuse its samples.
        let record = geometry.record(index);
        let first_seq = topic.atomic_u64(record + at::record::FIRST_SEQ).load(Ordering::Relaxed);
        Ok(TopicSubscriber {
            _topic_map: topic_map,
            topic,
            geometry,
            _own_map: self.own_map,
            own: self.own,
            index,
            head: start,
            last_seq: first_seq.saturating_sub(1),
        })
    }
}

// SAFETY: the views point into mappings the Arcs beside them keep alive; every access
// to shared memory is atomic or volatile.
unsafe impl Send for TopicPublisher {}
// SAFETY: as above.
unsafe impl Send for TopicSubscriber {}
// SAFETY: as above.
unsafe impl Send for TopicSubscriberBuilder {}

impl RawView {
    /// Copies `bytes` into the mapping (volatile: another process reads it meanwhile).
    pub(crate) fn write_bytes(&self, offset: usize, bytes: &[u8]) {
        self.check(offset, bytes.len());
        for (i, b) in bytes.iter().enumerate() {
            // SAFETY: in bounds (checked above) of a live writable mapping.
            unsafe { std::ptr::write_volatile(self.base.add(offset + i), *b) };
        }
    }
}

/// What a topic's memory says of it and its subscriptions, for operators (`inspect`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TopicStats {
    /// Largest sample, in bytes.
    pub sample_size: u32,
    /// Entries of each subscriber's queue.
    pub depth: u32,
    /// Samples kept for late joiners.
    pub history: u32,
    /// Samples published so far.
    pub published: u64,
    /// The publisher closed it.
    pub closed: bool,
    /// Every attached subscription.
    pub subscriptions: Vec<SubscriptionStats>,
}

/// One subscription of a topic as its memory and the subscriber's say.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SubscriptionStats {
    /// Its index at the publisher.
    pub index: u32,
    /// What its full queue does.
    pub policy: TopicPolicy,
    /// Samples queued for it and not read yet (its lag).
    pub queued: u64,
    /// Samples the publisher could not queue for it (dropped or overwritten).
    pub dropped: u64,
    /// What the subscriber counted (its own memory, as it wrote it; None when the
    /// reader of the stats does not have it).
    pub received: Option<u64>,
    /// Samples it saw missing (the gaps in sequence numbers it read).
    pub missed: Option<u64>,
}

/// Reads `topic` (its memory, mapped read-only) and the subscriptions' memory that
/// `subscription(index)` gives: nothing here is written, and a lie in either memory
/// only makes these numbers wrong.
fn stats_of(topic: &RawView, geometry: &TopicGeometry, subscription: impl Fn(usize) -> Option<RawView>) -> TopicStats {
    let mut subscriptions = Vec::new();
    for index in 0..geometry.max_subscribers as usize {
        let record = geometry.record(index);
        if topic.atomic_u32(record + at::record::STATE).load(Ordering::Acquire) != 1 {
            continue;
        }
        let code = topic.atomic_u32(record + at::record::POLICY).load(Ordering::Relaxed);
        let n = topic.atomic_u32(record + at::record::POLICY_N).load(Ordering::Relaxed);
        let Some(policy) = TopicPolicy::from_code(code, n) else { continue };
        let own = subscription(index);
        // The lag: entries written after the subscriber's head (a queue's worth at most;
        // a full one if the publisher lapped it).
        let queued = own.as_ref().map_or(0, |own| {
            let head = own.atomic_u64(sub_at::HEAD).load(Ordering::Acquire);
            let at_head = topic.atomic_u64(geometry.entry(index, head) + at::entry::TAG).load(Ordering::Acquire);
            if at_head > head.wrapping_add(1) {
                return geometry.depth as u64;
            }
            (0..geometry.depth as u64)
                .take_while(|k| {
                    let position = head.wrapping_add(*k);
                    let entry = geometry.entry(index, position);
                    topic.atomic_u64(entry + at::entry::TAG).load(Ordering::Acquire) == position.wrapping_add(1)
                })
                .count() as u64
        });
        subscriptions.push(SubscriptionStats {
            index: index as u32,
            policy,
            queued,
            dropped: topic.atomic_u64(record + at::record::DROPPED).load(Ordering::Relaxed),
            received: own.as_ref().map(|own| own.atomic_u64(sub_at::RECEIVED).load(Ordering::Relaxed)),
            missed: own.as_ref().map(|own| own.atomic_u64(sub_at::MISSED).load(Ordering::Relaxed)),
        });
    }
    TopicStats {
        sample_size: geometry.sample_size,
        depth: geometry.depth,
        history: geometry.history,
        published: topic.atomic_u64(at::PUBLISHED).load(Ordering::Acquire),
        closed: topic.atomic_u32(at::STATE).load(Ordering::Acquire) != 0,
        subscriptions,
    }
}

impl TopicPublisher {
    /// The topic's numbers, from the memory it writes and the subscriptions it reads.
    pub fn stats(&self) -> TopicStats {
        stats_of(&self.view, &self.geometry, |index| {
            self.subscriptions.get(index).and_then(Option::as_ref).map(|s| s.view)
        })
    }
}

/// The numbers of a topic another process publishes: its memory, and the memory of the
/// subscriptions the caller knows (by index), all mapped read-only for the read.
pub(crate) fn read_stats(topic: &File, subscriptions: &[(u32, &File)]) -> Result<TopicStats> {
    let (_map, view, geometry) = map_topic(topic)?;
    let mut maps = Vec::new();
    for (index, file) in subscriptions {
        // Checked as the publisher checks it: a short memfd would fault the read.
        let checked = memfd::check_received(file, SUBSCRIPTION_SIZE, memfd::READ_ONLY_SEALS, "a subscription's memory");
        if let Ok(map) = checked.and_then(|_| memfd::map(file, SUBSCRIPTION_SIZE, false, "a subscription's memory")) {
            let own = RawView { base: map.as_mut_ptr(), len: SUBSCRIPTION_SIZE as usize };
            maps.push((*index as usize, own, map));
        }
    }
    Ok(stats_of(&view, &geometry, |index| maps.iter().find(|(i, _, _)| *i == index).map(|(_, own, _)| *own)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn geometry(depth: u32, history: u32) -> TopicGeometry {
        TopicGeometry::new(256, depth, 4, 2, history)
    }

    fn subscribe(publisher: &mut TopicPublisher, policy: TopicPolicy) -> TopicSubscriber {
        let builder = TopicSubscriber::prepare().unwrap();
        let (index, start) = publisher.attach(&builder.share().unwrap(), policy).unwrap();
        builder.attached(&publisher.share().unwrap(), index, start).unwrap()
    }

    /// Sleeps on full queues (as the runtime does, without its lock) until there is room
    /// or `timeout` passed.
    fn wait_for_room(publisher: &mut TopicPublisher, timeout: Duration) -> bool {
        let deadline = std::time::Instant::now() + timeout;
        while let Some(full) = publisher.full_queue(Duration::from_micros(20)) {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                full.give_up();
                return false;
            }
            full.sleep(left);
        }
        true
    }

    #[test]
    fn ending_the_subscription_a_publish_sleeps_on_wakes_it() {
        let mut publisher = TopicPublisher::create("ending", geometry(2, 0)).unwrap();
        let sub = subscribe(&mut publisher, TopicPolicy::Block);
        publish(&mut publisher, b"1");
        publish(&mut publisher, b"2");
        let full = publisher.full_queue(Duration::ZERO).expect("full");
        let publisher = std::sync::Arc::new(std::sync::Mutex::new(publisher));
        let ender = {
            let publisher = publisher.clone();
            std::thread::spawn(move || publisher.lock().unwrap().end_subscription(0, 0, Status::Unavailable))
        };
        let slept = std::time::Instant::now();
        full.sleep(Duration::from_secs(60));
        // The end bumps a word the sleep compares, so it cannot be missed even if it came
        // before the sleep began.
        assert!(slept.elapsed() < Duration::from_secs(30), "the end woke the sleeping publish");
        ender.join().unwrap();
        assert!(publisher.lock().unwrap().full_queue(Duration::ZERO).is_none(), "room once it ended");
        drop(sub);
    }

    fn publish(publisher: &mut TopicPublisher, bytes: &[u8]) -> u64 {
        if bytes.len() <= INLINE_MAX {
            return publisher.publish_inline(bytes).seq;
        }
        let loan = publisher.loan().expect("a free slot");
        let mut loan = loan;
        loan.bytes_mut()[..bytes.len()].copy_from_slice(bytes);
        publisher.publish(loan, bytes.len()).seq
    }

    fn take(subscriber: &mut TopicSubscriber) -> (u64, u64, Vec<u8>) {
        match subscriber.try_next() {
            Next::Sample(received) => {
                let bytes = subscriber.bytes(&received).to_vec();
                let (seq, missed) = (received.seq, received.missed);
                subscriber.release(received);
                (seq, missed, bytes)
            }
            other => panic!("no sample: {other:?}"),
        }
    }

    #[test]
    fn subscribers_read_inline_and_slot_samples_in_order_from_the_publishers_sealed_memory() {
        let mut publisher = TopicPublisher::create("frames", geometry(8, 0)).unwrap();
        let mut a = subscribe(&mut publisher, TopicPolicy::DropOldest);
        let mut b = subscribe(&mut publisher, TopicPolicy::Block);
        let big = vec![9u8; 200];
        assert_eq!(publish(&mut publisher, b"tiny"), 1);
        assert_eq!(publish(&mut publisher, &big), 2);
        for sub in [&mut a, &mut b] {
            assert_eq!(take(sub), (1, 0, b"tiny".to_vec()));
            assert_eq!(take(sub), (2, 0, big.clone()));
            assert!(matches!(sub.try_next(), Next::Empty));
        }
        // The subscriber's view of the topic cannot be written: its descriptor is
        // read-only and the memfd sealed.
        let shared = publisher.share().unwrap();
        assert!(memfd::map(&shared, publisher.geometry().size().unwrap(), true, "test").is_err());
    }

    #[test]
    fn a_lapped_drop_oldest_subscriber_jumps_to_the_oldest_queued_sample_and_counts_the_gap() {
        let mut publisher = TopicPublisher::create("lapped", geometry(2, 0)).unwrap();
        let mut slow = subscribe(&mut publisher, TopicPolicy::DropOldest);
        let mut newest = subscribe(&mut publisher, TopicPolicy::DropNewest);
        for i in 0..5u8 {
            publish(&mut publisher, &[i]);
        }
        assert_eq!(take(&mut slow), (4, 3, vec![3]));
        assert_eq!(take(&mut slow), (5, 0, vec![4]));
        // Drop-newest kept the first two and lost the rest.
        assert_eq!(take(&mut newest), (1, 0, vec![0]));
        assert_eq!(take(&mut newest), (2, 0, vec![1]));
        assert_eq!(newest.dropped(), 3);
        publish(&mut publisher, &[5]);
        assert_eq!(take(&mut newest), (6, 3, vec![5]));
    }

    #[test]
    fn a_sample_held_in_place_keeps_its_bytes_while_the_publisher_laps_the_queue() {
        let mut publisher = TopicPublisher::create("held", TopicGeometry::new(256, 1, 1, 1, 0)).unwrap();
        let mut sub = subscribe(&mut publisher, TopicPolicy::DropOldest);
        publish(&mut publisher, &[1u8; 100]);
        let Next::Sample(held) = sub.try_next() else { panic!("a sample") };
        for i in 2..50u8 {
            publish(&mut publisher, &[i; 100]);
        }
        assert_eq!(sub.bytes(&held).to_vec(), vec![1u8; 100], "its slot was not loaned again");
        sub.release(held);
        let (seq, missed, bytes) = take(&mut sub);
        assert_eq!((seq, missed, bytes), (49, 47, vec![49u8; 100]));
    }

    #[test]
    fn a_block_subscriber_holds_the_publisher_until_it_reads_and_a_waiting_subscriber_wakes() {
        let mut publisher = TopicPublisher::create("blocking", geometry(2, 0)).unwrap();
        let mut sub = subscribe(&mut publisher, TopicPolicy::Block);
        publish(&mut publisher, b"1");
        publish(&mut publisher, b"2");
        assert!(!wait_for_room(&mut publisher, Duration::from_millis(20)), "full");
        let reader = std::thread::spawn(move || {
            let mut seqs = Vec::new();
            while seqs.len() < 3 {
                match sub.next_timeout(Duration::from_secs(20)) {
                    Next::Sample(r) => {
                        seqs.push(r.seq);
                        sub.release(r);
                    }
                    other => panic!("{other:?}"),
                }
            }
            seqs
        });
        assert!(wait_for_room(&mut publisher, Duration::from_secs(20)), "the reader made room");
        publish(&mut publisher, b"3");
        assert_eq!(reader.join().unwrap(), [1, 2, 3]);
    }

    #[test]
    fn a_late_joiner_reads_the_history_and_a_lying_subscriber_is_detached_alone() {
        let mut publisher = TopicPublisher::create("history", geometry(16, 10)).unwrap();
        for i in 0..100u32 {
            publish(&mut publisher, &i.to_le_bytes());
        }
        let mut late = subscribe(&mut publisher, TopicPolicy::DropOldest);
        let seqs: Vec<u64> = (0..10).map(|_| take(&mut late).0).collect();
        assert_eq!(seqs, (91..=100).collect::<Vec<u64>>());
        let mut leaving = subscribe(&mut publisher, TopicPolicy::Block);
        publish(&mut publisher, b"after");
        assert_eq!(take(&mut late).0, 101);
        // Closing the topic ends every subscription, and a waiting one wakes.
        let waiter = std::thread::spawn(move || {
            let mut seen = Vec::new();
            loop {
                match leaving.next_timeout(Duration::from_secs(20)) {
                    Next::Sample(r) => seen.push(r.seq),
                    Next::Ended(status) => return (seen, status),
                    Next::Empty => panic!("the topic's end did not wake it"),
                }
            }
        });
        publisher.close();
        let (seen, status) = waiter.join().unwrap();
        assert_eq!(status, Status::Unavailable);
        assert_eq!(seen, (91..=101).collect::<Vec<u64>>(), "the history and what came after, read before the end");
    }

    #[test]
    fn a_subscriber_that_lies_about_its_head_is_detached_and_the_others_lose_nothing() {
        let mut publisher = TopicPublisher::create("liars", geometry(4, 0)).unwrap();
        let mut liar = subscribe(&mut publisher, TopicPolicy::Block);
        let mut honest = subscribe(&mut publisher, TopicPolicy::Block);
        // It claims to have read far beyond what was queued for it (and never reads).
        liar.own.atomic_u64(sub_at::HEAD).store(1 << 40, Ordering::Release);
        for i in 1..=6u64 {
            assert!(wait_for_room(&mut publisher, Duration::from_secs(1)), "the liar never holds the publisher");
            publish(&mut publisher, &i.to_le_bytes());
            assert_eq!(take(&mut honest).0, i);
        }
        assert!(matches!(liar.try_next(), Next::Ended(Status::ProtocolError)));
    }

    #[test]
    fn ending_a_subscription_that_ended_already_leaves_the_next_one_at_its_index_alone() {
        let mut publisher = TopicPublisher::create("reuse", geometry(4, 0)).unwrap();
        let builder = TopicSubscriber::prepare().unwrap();
        let (index, first) = publisher.attach(&builder.share().unwrap(), TopicPolicy::Block).unwrap();
        publisher.end_subscription(index, first, Status::Cancelled);
        let mut second = subscribe(&mut publisher, TopicPolicy::Block);
        assert_eq!(second.index(), index);
        // A late unsubscribe of the first (it named its start) ends nothing.
        publisher.end_subscription(index, first, Status::Cancelled);
        publish(&mut publisher, b"still here");
        assert_eq!(take(&mut second).2, b"still here");
    }

    #[test]
    fn memory_that_is_not_a_sealed_topic_or_subscription_is_refused() {
        let attach = |file: &File| TopicSubscriber::prepare().unwrap().attached(file, 0, 0).unwrap_err();
        let file = memfd::create("not-a-topic", 8192).unwrap();
        assert_eq!(attach(&file).status(), Status::ProtocolError);
        memfd::seal(&file, memfd::READ_ONLY_SEALS).unwrap();
        let e = attach(&file);
        assert!(e.status() == Status::ProtocolError && e.message().contains("magic"), "{e}");
        let mut publisher = TopicPublisher::create("t", geometry(4, 0)).unwrap();
        let e = TopicSubscriber::prepare().unwrap().attached(&publisher.share().unwrap(), 4, 0).unwrap_err();
        assert!(e.message().contains("index"), "{e}");
        let e = publisher.attach(&file, TopicPolicy::Block).unwrap_err();
        assert_eq!(e.status(), Status::ProtocolError, "{e}");
        for bad in
            [TopicGeometry::new(0, 8, 1, 1, 0), TopicGeometry::new(64, 3, 1, 1, 0), TopicGeometry::new(64, 8, 1, 1, 9)]
        {
            assert_eq!(TopicPublisher::create("bad", bad).unwrap_err().status(), Status::InvalidArgument);
        }
    }
}

/// The hold protocol of in-place reads (module documentation), every interleaving: the
/// subscriber names the sample, fences, rechecks the entry's tag, then reads the slot;
/// the publisher overwrites the entry's tag, fences (`TopicPublisher::loan`), looks at
/// the holds (`Observe::holds`), and writes the slot only if nobody holds its sample.
/// Loom fails it (a read racing a write of the slot) if either fence is removed, or if
/// the publisher loads a hold with Relaxed (it then may not see the subscriber's read of
/// the slot finished before the hold was let go of).
#[cfg(all(test, loom))]
mod loom_model {
    use loom::cell::UnsafeCell;
    use loom::sync::atomic::{fence, AtomicU64, Ordering};
    use loom::sync::Arc;

    #[test]
    fn loom_a_sample_held_in_place_is_never_written_under_its_reader() {
        loom::model(|| {
            let tag = Arc::new(AtomicU64::new(1)); // the entry names sample 1
            let held = Arc::new(AtomicU64::new(0));
            let slot = Arc::new(UnsafeCell::new(1u64));
            let publisher = {
                let (tag, held, slot) = (tag.clone(), held.clone(), slot.clone());
                loom::thread::spawn(move || {
                    tag.store(2, Ordering::Release); // overwritten (DropOldest)
                    fence(Ordering::SeqCst);
                    if held.load(Ordering::Acquire) != 1 {
                        slot.with_mut(|s| unsafe { *s = 2 }); // loaned again and written
                    }
                })
            };
            held.store(1, Ordering::Relaxed);
            fence(Ordering::SeqCst);
            if tag.load(Ordering::Acquire) == 1 {
                let value = slot.with(|s| unsafe { *s });
                assert_eq!(value, 1, "the held sample changed under its reader");
            }
            held.store(0, Ordering::Release);
            publisher.join().unwrap();
        });
    }
}
