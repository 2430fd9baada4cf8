//! A topic's publisher-side bookkeeping as plain state: which sample slot a loan may
//! take, and what each subscriber's queue does with a published sample under the
//! subscriber's policy. No memory access and no clock: what subscribers published in
//! their own memory (how far they read, which samples they hold) comes in through
//! [`Observe`], already copied out of shared memory and not trusted. A value no honest
//! subscriber can publish detaches that subscriber; anything else it writes can only pin
//! the few slots it is allowed to hold, so a subscriber can hurt only itself.
//!
//! The model (see `shm::topic` for the memory):
//! - Samples have sequence numbers from 1, one per publish, the same for everyone.
//! - Each attached subscriber has a queue of `depth` entries that only the publisher
//!   writes; positions count up from where the subscription started. The subscriber
//!   reads position `head` and publishes `head` in its own memory.
//! - A sample is stored in a slot of the topic's pool (or inline in the queue entry when
//!   small). A slot is in use while a loan, a queue entry not yet passed by its reader,
//!   or the history refers to it, and while any subscriber says it holds the sample
//!   (its `held` seqs). Only slots that nothing refers to are loaned again.
//!
//! Step 1 of publish/subscribe (issue 26): the memory and the decisions, tested here;
//! the runtime's topics (brokering by the host, waiting, the language APIs) use them
//! next, so until then only the tests do.

use std::collections::VecDeque;

/// What a subscriber's queue does when it is full, chosen per subscription.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TopicPolicy {
    /// The publisher waits (bounded by its deadline) until the subscriber reads.
    Block,
    /// The oldest unread sample is overwritten; the subscriber sees the gap.
    DropOldest,
    /// The new sample is not queued for this subscriber; it sees the gap.
    DropNewest,
    /// A subscriber `n` samples behind is detached (with a reason it can read).
    DisconnectAfter(u32),
}

impl TopicPolicy {
    /// The policy's wire code (PROTOCOL.md): 0 block, 1 drop oldest, 2 drop newest,
    /// 3 disconnect after (with its `n` beside it).
    pub fn code(&self) -> (u32, u32) {
        match *self {
            TopicPolicy::Block => (0, 0),
            TopicPolicy::DropOldest => (1, 0),
            TopicPolicy::DropNewest => (2, 0),
            TopicPolicy::DisconnectAfter(n) => (3, n),
        }
    }

    /// The policy of a wire code; None for an unknown code.
    pub fn from_code(code: u32, n: u32) -> Option<TopicPolicy> {
        match code {
            0 => Some(TopicPolicy::Block),
            1 => Some(TopicPolicy::DropOldest),
            2 => Some(TopicPolicy::DropNewest),
            3 => Some(TopicPolicy::DisconnectAfter(n)),
            _ => None,
        }
    }
}

/// Where a sample's bytes are.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SampleAt {
    /// In slot `slot` of the pool, `len` bytes.
    Slot { slot: u32, len: u32 },
    /// In the queue entry itself (small samples); the bytes, kept for the history.
    Inline(Vec<u8>),
}

/// One queue entry the publisher is to write: `position` of subscriber `subscriber`'s
/// queue holds sample `seq`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Push {
    pub subscriber: usize,
    pub position: u64,
    pub seq: u64,
    pub at: SampleAt,
}

/// Why a subscriber is detached by the publisher.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DetachReason {
    /// Its policy `DisconnectAfter(n)`: it fell `n` samples behind.
    Lagging,
    /// It published a read position no honest subscriber can (ahead of what was queued).
    Lied,
}

/// What a publish does to each subscriber.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Publication {
    /// The sample's sequence number.
    pub seq: u64,
    /// The entries to write, in subscriber order.
    pub pushes: Vec<Push>,
    /// Subscribers whose full queue dropped this sample (DropNewest), or whose oldest
    /// unread sample it overwrote (DropOldest).
    pub dropped_for: Vec<usize>,
    /// Subscribers detached by this publish.
    pub detached: Vec<(usize, DetachReason)>,
}

/// What the publisher reads of its subscribers' memory, for one decision.
pub trait Observe {
    /// Subscriber `subscriber`'s published read position (Acquire).
    fn head(&self, subscriber: usize) -> u64;
    /// Whether subscriber `subscriber` says it holds sample `seq` (after a full fence).
    fn holds(&self, subscriber: usize, seq: u64) -> bool;
}

/// A publish cannot go on now: the queue of this Block subscriber is full. Wait until
/// its head moves (or the publisher's deadline passes) and try again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MustWait {
    pub subscriber: usize,
}

#[derive(Clone, Debug, Default)]
struct SlotUse {
    /// Loans, queue entries not yet passed and history entries referring to it.
    refs: u32,
    /// The sample it held last (what a subscriber holding it would name).
    last_seq: u64,
}

#[derive(Debug)]
struct Queue {
    policy: TopicPolicy,
    /// Next position to write.
    tail: u64,
    /// Where the current subscription started: a head below it (the subscriber has not
    /// set its head yet) reads as this.
    start: u64,
    /// The head read last. Heads only grow, so while it shows the queue less full than a
    /// decision's threshold the decision holds without reading the subscriber's line
    /// again (its cache line crosses cores only when the queue looks full).
    seen_head: std::cell::Cell<u64>,
    /// Positions below this have had their slot references dropped.
    released_to: u64,
    /// The slot of each position in `released_to..tail` (None: inline).
    slots: VecDeque<Option<u32>>,
    attached: bool,
    ever_attached: bool,
}

/// The publisher's private state of one topic.
#[derive(Debug)]
pub struct PublisherBook {
    depth: u64,
    slots: Vec<SlotUse>,
    /// Slots nothing refers to and no subscriber was seen holding.
    free: Vec<u32>,
    /// Slots nothing refers to any more, not yet checked against what subscribers hold.
    retired: Vec<u32>,
    queues: Vec<Queue>,
    history: VecDeque<(u64, SampleAt)>,
    history_depth: usize,
    next_seq: u64,
    /// Reclaim on every loan, not only when no slot is free: see
    /// [`PublisherBook::reuse_warm_slots`].
    reclaim_each_loan: bool,
}

impl PublisherBook {
    /// A topic with `slots` sample slots, queues of `depth` entries (a power of two) for
    /// up to `max_subscribers`, keeping the last `history` samples for late joiners.
    pub fn new(slots: u32, depth: u32, max_subscribers: usize, history: usize) -> PublisherBook {
        PublisherBook {
            depth: depth as u64,
            slots: vec![SlotUse::default(); slots as usize],
            free: (0..slots).rev().collect(),
            retired: Vec::new(),
            queues: (0..max_subscribers)
                .map(|_| Queue {
                    policy: TopicPolicy::DropOldest,
                    tail: 0,
                    start: 0,
                    seen_head: std::cell::Cell::new(0),
                    released_to: 0,
                    slots: VecDeque::new(),
                    attached: false,
                    ever_attached: false,
                })
                .collect(),
            history: VecDeque::new(),
            history_depth: history,
            next_seq: 1,
            reclaim_each_loan: false,
        }
    }

    /// Loans the slot the subscribers let go of last rather than the one free longest.
    /// For large samples: a slot written a moment ago is still in this core's cache,
    /// while cycling through every slot walks the whole topic (7 MiB for 1 MiB samples at
    /// depth 4) through memory; it costs a read of each subscriber's head line per loan,
    /// a few percent of copying such a sample, too much for small ones.
    pub fn reuse_warm_slots(mut self) -> PublisherBook {
        self.reclaim_each_loan = true;
        self
    }

    /// The sequence number the next publish gets.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Next position of `subscriber`'s queue (where a new subscription there starts).
    #[cfg(test)]
    pub fn tail(&self, subscriber: usize) -> u64 {
        self.queues[subscriber].tail
    }

    /// Where `subscriber`'s current (or last) subscription started: with its index, what
    /// names one subscription (a new one at an index never starts where the last did).
    pub fn start(&self, subscriber: usize) -> u64 {
        self.queues[subscriber].start
    }

    /// Whether `subscriber` is attached.
    pub fn is_attached(&self, subscriber: usize) -> bool {
        self.queues.get(subscriber).is_some_and(|q| q.attached)
    }

    /// A free slot for a loan, reclaiming what the subscribers passed or let go of; None
    /// while every slot is in use.
    pub fn loan(&mut self, observe: &impl Observe) -> Option<u32> {
        if self.free.is_empty() || (self.reclaim_each_loan && self.reclaimable()) {
            self.reclaim(observe);
        }
        let slot = self.free.pop()?;
        self.slots[slot as usize].refs = 1;
        Some(slot)
    }

    /// Whether a reclaim could free anything: a queue entry still refers to a slot, or a
    /// slot waits to be checked against what subscribers hold.
    fn reclaimable(&self) -> bool {
        !self.retired.is_empty() || self.queues.iter().any(|q| q.slots.iter().any(Option::is_some))
    }

    /// Gives back a loan that was not published.
    pub fn unloan(&mut self, slot: u32) {
        self.unref(slot);
    }

    /// Drops the references of queue entries the subscribers read past, then frees the
    /// retired slots no subscriber holds. The caller has fenced (SeqCst) after its last
    /// overwrite of a queue entry, so a subscriber that took a sample before the
    /// overwrite is seen holding it.
    fn reclaim(&mut self, observe: &impl Observe) {
        for index in 0..self.queues.len() {
            if !self.queues[index].attached {
                continue;
            }
            let head = self.head(index, observe);
            let queue = &mut self.queues[index];
            // A head beyond the tail is a lie, caught by the next publish; meanwhile it
            // releases nothing more than what was queued.
            let passed = head.min(queue.tail);
            let mut unref = Vec::new();
            while queue.released_to < passed {
                if let Some(Some(slot)) = queue.slots.pop_front() {
                    unref.push(slot);
                }
                queue.released_to += 1;
            }
            for slot in unref {
                self.unref(slot);
            }
        }
        let subscribers: Vec<usize> = (0..self.queues.len()).filter(|&i| self.queues[i].attached).collect();
        let slots = &self.slots;
        let (held, free): (Vec<u32>, Vec<u32>) = self.retired.drain(..).partition(|&slot| {
            let seq = slots[slot as usize].last_seq;
            subscribers.iter().any(|&sub| observe.holds(sub, seq))
        });
        self.retired = held;
        self.free.extend(free);
    }

    /// Subscriber `index`'s read position as it published it (not below its start).
    fn head(&self, index: usize, observe: &impl Observe) -> u64 {
        let queue = &self.queues[index];
        let head = observe.head(index).max(queue.start);
        queue.seen_head.set(head);
        head
    }

    /// Subscriber `index`'s read position, as seen last if that shows it less than `lag`
    /// behind, else read again.
    fn head_within(&self, index: usize, observe: &impl Observe, lag: u64) -> u64 {
        let queue = &self.queues[index];
        let seen = queue.seen_head.get();
        if seen <= queue.tail && queue.tail - seen < lag {
            return seen;
        }
        self.head(index, observe)
    }

    fn unref(&mut self, slot: u32) {
        let used = &mut self.slots[slot as usize];
        used.refs = used.refs.saturating_sub(1);
        if used.refs == 0 {
            self.retired.push(slot);
        }
    }

    /// Whether a publish can go on now: Err names a Block subscriber whose queue is full.
    pub fn check_room(&self, observe: &impl Observe) -> Result<(), MustWait> {
        for (index, queue) in self.queues.iter().enumerate() {
            if queue.attached && queue.policy == TopicPolicy::Block {
                let head = self.head_within(index, observe, self.depth);
                if head <= queue.tail && queue.tail - head >= self.depth {
                    return Err(MustWait { subscriber: index });
                }
            }
        }
        Ok(())
    }

    /// Publishes a sample (from a loaned slot, which the publication takes over, or
    /// inline): decides for each attached subscriber, in its policy, whether the sample
    /// is queued, dropped, or the subscriber detached. Call after [`check_room`] said
    /// there is room (a Block subscriber found full here is treated as DropNewest).
    ///
    /// [`check_room`]: PublisherBook::check_room
    pub fn publish(&mut self, at: SampleAt, observe: &impl Observe) -> Publication {
        let seq = self.next_seq;
        self.next_seq += 1;
        let slot = match at {
            SampleAt::Slot { slot, .. } => Some(slot),
            SampleAt::Inline(_) => None,
        };
        if let Some(slot) = slot {
            self.slots[slot as usize].last_seq = seq;
        }
        let mut publication = Publication { seq, ..Publication::default() };
        for index in 0..self.queues.len() {
            if !self.queues[index].attached {
                continue;
            }
            let threshold = match self.queues[index].policy {
                TopicPolicy::DisconnectAfter(n) => (n as u64).min(self.depth),
                _ => self.depth,
            };
            let head = self.head_within(index, observe, threshold);
            let queue = &self.queues[index];
            if head > queue.tail {
                publication.detached.push((index, DetachReason::Lied));
                continue;
            }
            let lag = queue.tail - head;
            match queue.policy {
                TopicPolicy::DisconnectAfter(n) if lag >= (n as u64).min(self.depth) => {
                    publication.detached.push((index, DetachReason::Lagging));
                    continue;
                }
                TopicPolicy::DropNewest | TopicPolicy::Block if lag >= self.depth => {
                    publication.dropped_for.push(index);
                    continue;
                }
                TopicPolicy::DropOldest if lag >= self.depth => publication.dropped_for.push(index),
                _ => {}
            }
            self.enqueue(index, seq, &at, &mut publication.pushes);
        }
        for &(index, _) in &publication.detached {
            self.detach(index);
        }
        if self.history_depth > 0 {
            // The loan's reference becomes the history's.
            self.history.push_back((seq, at));
        } else if let Some(slot) = slot {
            self.unref(slot);
        }
        while self.history.len() > self.history_depth {
            if let Some((_, SampleAt::Slot { slot, .. })) = self.history.pop_front() {
                self.unref(slot);
            }
        }
        publication
    }

    /// Queues `seq` at the tail of `index`'s queue, overwriting (and unreferencing) the
    /// entry `depth` positions back if it was never released.
    fn enqueue(&mut self, index: usize, seq: u64, at: &SampleAt, pushes: &mut Vec<Push>) {
        let depth = self.depth;
        let queue = &mut self.queues[index];
        let position = queue.tail;
        let mut overwritten = None;
        if position >= depth && queue.released_to <= position - depth {
            overwritten = queue.slots.pop_front().flatten();
            queue.released_to += 1;
        }
        let slot = match at {
            SampleAt::Slot { slot, .. } => Some(*slot),
            SampleAt::Inline(_) => None,
        };
        queue.slots.push_back(slot);
        queue.tail += 1;
        if let Some(slot) = slot {
            self.slots[slot as usize].refs += 1;
        }
        if let Some(old) = overwritten {
            self.unref(old);
        }
        pushes.push(Push { subscriber: index, position, seq, at: at.clone() });
    }

    /// Attaches a subscriber at `index` (free) with `policy`; its queue starts at
    /// [`PublisherBook::tail`] and the history is queued first (up to the queue's depth).
    pub fn attach(&mut self, index: usize, policy: TopicPolicy) -> Vec<Push> {
        let queue = &mut self.queues[index];
        if queue.ever_attached && queue.tail == queue.start {
            // The last subscription here got nothing: skip a position, so that no two
            // subscriptions of one index start alike (an unsubscribe names its start).
            queue.tail += 1;
        }
        queue.ever_attached = true;
        queue.policy = policy;
        queue.attached = true;
        queue.start = queue.tail;
        queue.seen_head.set(queue.tail);
        queue.released_to = queue.tail;
        queue.slots.clear();
        let history: Vec<(u64, SampleAt)> =
            self.history.iter().rev().take(self.depth as usize).rev().cloned().collect();
        let mut pushes = Vec::new();
        for (seq, at) in history {
            self.enqueue(index, seq, &at, &mut pushes);
        }
        pushes
    }

    /// Detaches `index`: its queue's references go (what it still holds is checked
    /// against its memory no more: a detached subscriber's slots are free once reclaimed).
    pub fn detach(&mut self, index: usize) {
        let queue = &mut self.queues[index];
        if !queue.attached {
            return;
        }
        queue.attached = false;
        let slots: Vec<u32> = queue.slots.drain(..).flatten().collect();
        queue.released_to = queue.tail;
        for slot in slots {
            self.unref(slot);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;
    use std::collections::HashMap;

    /// Subscribers' memory as the test sets it.
    #[derive(Default)]
    struct Memory {
        heads: RefCell<HashMap<usize, u64>>,
        held: RefCell<HashMap<usize, Vec<u64>>>,
    }

    impl Observe for Memory {
        fn head(&self, subscriber: usize) -> u64 {
            self.heads.borrow().get(&subscriber).copied().unwrap_or(0)
        }
        fn holds(&self, subscriber: usize, seq: u64) -> bool {
            self.held.borrow().get(&subscriber).is_some_and(|h| h.contains(&seq))
        }
    }

    impl Memory {
        fn read_to(&self, subscriber: usize, head: u64) {
            self.heads.borrow_mut().insert(subscriber, head);
        }
        fn hold(&self, subscriber: usize, seqs: &[u64]) {
            self.held.borrow_mut().insert(subscriber, seqs.to_vec());
        }
    }

    fn publish_slot(book: &mut PublisherBook, memory: &Memory) -> Publication {
        let slot = book.loan(memory).expect("a free slot");
        book.publish(SampleAt::Slot { slot, len: 8 }, memory)
    }

    #[test]
    fn every_attached_subscriber_gets_every_sample_in_order_at_its_own_positions() {
        let memory = Memory::default();
        let mut book = PublisherBook::new(8, 4, 2, 0);
        assert!(book.attach(0, TopicPolicy::DropOldest).is_empty());
        let first = publish_slot(&mut book, &memory);
        assert_eq!(first.seq, 1);
        book.attach(1, TopicPolicy::Block);
        let second = publish_slot(&mut book, &memory);
        let positions: Vec<(usize, u64, u64)> =
            second.pushes.iter().map(|p| (p.subscriber, p.position, p.seq)).collect();
        assert_eq!(positions, [(0, 1, 2), (1, 0, 2)]);
        assert!(second.dropped_for.is_empty() && second.detached.is_empty());
    }

    #[test]
    fn each_policy_does_its_own_thing_when_a_queue_is_full() {
        let memory = Memory::default();
        let mut book = PublisherBook::new(64, 2, 4, 0);
        book.attach(0, TopicPolicy::Block);
        book.attach(1, TopicPolicy::DropOldest);
        book.attach(2, TopicPolicy::DropNewest);
        book.attach(3, TopicPolicy::DisconnectAfter(2));
        publish_slot(&mut book, &memory);
        publish_slot(&mut book, &memory);
        // Every queue holds 2 unread samples now: the Block subscriber stops the publisher.
        assert_eq!(book.check_room(&memory), Err(MustWait { subscriber: 0 }));
        memory.read_to(0, 1);
        assert_eq!(book.check_room(&memory), Ok(()));
        let third = publish_slot(&mut book, &memory);
        let queued: Vec<usize> = third.pushes.iter().map(|p| p.subscriber).collect();
        assert_eq!(queued, [0, 1], "block (room again) and drop-oldest (overwriting) queue it");
        assert_eq!(third.dropped_for, [1, 2], "drop-oldest lost its oldest, drop-newest this one");
        assert_eq!(third.detached, [(3, DetachReason::Lagging)]);
        assert!(!book.is_attached(3));
        assert_eq!(third.pushes[1].position, 2, "drop-oldest's third entry overwrites position 0");
    }

    #[test]
    fn a_subscriber_that_claims_to_have_read_more_than_was_queued_is_detached() {
        let memory = Memory::default();
        let mut book = PublisherBook::new(8, 4, 2, 0);
        book.attach(0, TopicPolicy::DropOldest);
        book.attach(1, TopicPolicy::DropOldest);
        publish_slot(&mut book, &memory);
        memory.read_to(1, 1_000_000);
        // Its claim is looked at once its queue looks full (the publisher does not read
        // a subscriber's line on every publish): within a queue's depth of samples.
        let mut detached = Vec::new();
        for _ in 0..4 {
            memory.read_to(0, book.tail(0));
            let next = publish_slot(&mut book, &memory);
            assert!(next.pushes.iter().any(|p| p.subscriber == 0), "the honest subscriber gets every sample");
            detached.extend(next.detached);
        }
        assert_eq!(detached, [(1, DetachReason::Lied)]);
        assert!(!book.is_attached(1));
        // Nor does a lying Block subscriber stop the publisher.
        let mut book = PublisherBook::new(8, 2, 1, 0);
        book.attach(0, TopicPolicy::Block);
        memory.read_to(0, u64::MAX);
        assert_eq!(book.check_room(&memory), Ok(()));
    }

    #[test]
    fn a_slot_is_loaned_again_only_once_every_reader_passed_it_and_nobody_holds_it() {
        let memory = Memory::default();
        let mut book = PublisherBook::new(2, 4, 1, 0);
        book.attach(0, TopicPolicy::DropOldest);
        publish_slot(&mut book, &memory); // seq 1 in slot 0
        publish_slot(&mut book, &memory); // seq 2 in slot 1
        assert_eq!(book.loan(&memory), None, "both slots are queued, unread");
        // Read past seq 1 but still holding it: not free.
        memory.read_to(0, 1);
        memory.hold(0, &[1]);
        assert_eq!(book.loan(&memory), None);
        memory.hold(0, &[]);
        let slot = book.loan(&memory).expect("released");
        assert_eq!(slot, 0);
        // A subscriber that claims to hold seqs that no slot last held pins nothing.
        book.unloan(slot);
        memory.hold(0, &[77, 0, u64::MAX]);
        assert_eq!(book.loan(&memory), Some(0));
    }

    #[test]
    fn with_warm_reuse_the_slot_released_last_is_loaned_next() {
        let memory = Memory::default();
        let mut cold = PublisherBook::new(4, 4, 1, 0);
        let mut warm = PublisherBook::new(4, 4, 1, 0).reuse_warm_slots();
        let loaned = |book: &mut PublisherBook| {
            book.attach(0, TopicPolicy::DropOldest);
            (0..6)
                .map(|_| {
                    let slot = book.loan(&memory).expect("a free slot");
                    book.publish(SampleAt::Slot { slot, len: 8 }, &memory);
                    // The subscriber reads each sample before the next loan.
                    memory.read_to(0, book.tail(0));
                    slot
                })
                .collect::<Vec<u32>>()
        };
        assert_eq!(loaned(&mut cold)[..4], [0, 1, 2, 3], "without, every slot takes its turn");
        assert_eq!(loaned(&mut warm), [0, 0, 0, 0, 0, 0]);
        // A slot the subscriber still holds is not the one loaned.
        memory.hold(0, &[warm.next_seq() - 1]);
        assert_ne!(warm.loan(&memory), Some(0));
    }

    #[test]
    fn an_overwritten_entry_frees_its_slot_unless_the_reader_took_it_in_time() {
        let memory = Memory::default();
        let mut book = PublisherBook::new(3, 1, 1, 0);
        book.attach(0, TopicPolicy::DropOldest);
        publish_slot(&mut book, &memory); // seq 1, slot 0, position 0
        memory.hold(0, &[1]); // the reader is reading it in place
        publish_slot(&mut book, &memory); // seq 2 overwrites position 0
        publish_slot(&mut book, &memory); // seq 3 overwrites position 1
                                          // Slot 0 (seq 1) is held; slot 1 (seq 2) was overwritten and is free; slot 2 queued.
        assert_eq!(book.loan(&memory), Some(1));
        assert_eq!(book.loan(&memory), None);
        memory.hold(0, &[]);
        assert_eq!(book.loan(&memory), Some(0));
    }

    #[test]
    fn a_late_joiner_gets_the_history_and_history_keeps_its_slots() {
        let memory = Memory::default();
        let mut book = PublisherBook::new(8, 4, 2, 2);
        for _ in 0..5 {
            publish_slot(&mut book, &memory);
        }
        // Nobody subscribed: only the last two samples keep a slot.
        let free = (0..8).filter_map(|_| book.loan(&memory)).count();
        assert_eq!(free, 6);
        let mut book = PublisherBook::new(8, 4, 2, 2);
        for _ in 0..5 {
            publish_slot(&mut book, &memory);
        }
        let pushes = book.attach(0, TopicPolicy::DropOldest);
        let seqs: Vec<(u64, u64)> = pushes.iter().map(|p| (p.position, p.seq)).collect();
        assert_eq!(seqs, [(0, 4), (1, 5)]);
        book.publish(SampleAt::Inline(b"small".to_vec()), &memory);
        let pushes = book.attach(1, TopicPolicy::Block);
        assert_eq!(pushes.last().map(|p| p.at.clone()), Some(SampleAt::Inline(b"small".to_vec())));
    }

    #[test]
    fn a_detached_subscribers_queue_lets_go_of_its_slots_and_its_index_starts_where_it_ended() {
        let memory = Memory::default();
        let mut book = PublisherBook::new(2, 4, 1, 0);
        book.attach(0, TopicPolicy::DropNewest);
        publish_slot(&mut book, &memory);
        publish_slot(&mut book, &memory);
        assert_eq!(book.loan(&memory), None);
        book.detach(0);
        assert!(book.loan(&memory).is_some());
        assert_eq!(book.tail(0), 2);
        book.attach(0, TopicPolicy::DropNewest);
        assert_eq!(book.tail(0), 2, "a new subscription continues the queue's positions");
        assert_eq!(book.start(0), 2);
        // One that got nothing is not started alike by the next.
        book.detach(0);
        book.attach(0, TopicPolicy::DropNewest);
        assert_eq!(book.start(0), 3);
    }

    #[test]
    fn policies_read_back_from_their_codes() {
        for policy in
            [TopicPolicy::Block, TopicPolicy::DropOldest, TopicPolicy::DropNewest, TopicPolicy::DisconnectAfter(9)]
        {
            let (code, n) = policy.code();
            assert_eq!(TopicPolicy::from_code(code, n), Some(policy));
        }
        assert_eq!(TopicPolicy::from_code(4, 0), None);
    }
}
