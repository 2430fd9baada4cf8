//! Publish/subscribe handles, the same for the host and for cells: a [`Publisher`] loans
//! a slot of its topic, the sample is written in place and published to every
//! subscriber's queue; a [`Subscriber`] reads samples in place ([`Sample`]) and lets go
//! of them when dropped. The memory and its rules are `shm::topic` and `proto::topic`;
//! who brokers a subscription is the host's (`host/topics.rs`).

use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::proto::topic::TopicPolicy;
use crate::runtime::futex_reactor;
use crate::runtime::session::instant_after;
use crate::runtime::session::WaitStrategy;
use crate::runtime::sync::{Condvar, Mutex};
use crate::shm::topic::{Next, Received, SampleAccess, TopicGeometry, TopicPublisher, TopicSubscriber, INLINE_MAX};
use crate::shm::SharedBytes;
use crate::wire::Status;

/// The shape of a topic, chosen by its publisher.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TopicOptions {
    /// Largest sample, in bytes (default 4096).
    pub sample_size: u32,
    /// Samples each subscriber's queue holds (a power of two; default 16).
    pub depth: u32,
    /// Samples kept for subscribers that join later (at most `depth`; default 0).
    pub history: u32,
    /// Subscribers at once (at most 64; default 8).
    pub max_subscribers: u32,
    /// Samples a subscriber may hold at once (at most 16; default 2).
    pub max_borrowed: u32,
}

impl Default for TopicOptions {
    fn default() -> TopicOptions {
        TopicOptions { sample_size: 4096, depth: 16, history: 0, max_subscribers: 8, max_borrowed: 2 }
    }
}

impl TopicOptions {
    /// A "last value" topic (a blackboard): each subscriber's queue holds only the newest
    /// sample and a new subscriber gets the current one at once (history 1). Readers
    /// take the newest with [`Subscriber::latest`] whenever they want; subscribe with
    /// `DropOldest` so that the publisher never waits.
    pub fn last_value(sample_size: u32) -> TopicOptions {
        TopicOptions { sample_size, depth: 1, history: 1, ..TopicOptions::default() }
    }

    /// An event topic: samples of at most 8 bytes (a counter, a flag; or none), which
    /// travel in the queue entry and cost no slot, coalesced for a subscriber that has
    /// not read yet (its queue holds one: with `DropOldest` it reads the newest, and
    /// `missed` says how many it stands for). Subscribers wait for them as for samples.
    pub fn events() -> TopicOptions {
        TopicOptions { sample_size: 8, depth: 1, history: 0, ..TopicOptions::default() }
    }

    pub(crate) fn geometry(&self) -> TopicGeometry {
        TopicGeometry::new(self.sample_size, self.depth, self.max_subscribers, self.max_borrowed, self.history)
    }
}

/// How long a publish polls a full Block queue before it sleeps: a subscriber that is
/// reading makes room within microseconds, and a futex round trip costs more.
const ROOM_SPIN: Duration = Duration::from_micros(20);

pub(crate) struct PublisherShared {
    pub(crate) name: String,
    pub(crate) memory: Mutex<TopicPublisher>,
    /// A read-only descriptor of the topic's memory, duplicated for each subscriber
    /// without the lock: a publish waiting for a Block subscriber holds the lock, and
    /// that subscriber may be the one being handed the memory.
    read_only: std::fs::File,
    /// Signalled when a loan is published or given back, and when a subscription is
    /// attached or ends: what `room` and `wait_for_subscribers` wait for.
    changed: Condvar,
    /// Called once when the last handle is dropped: the host or the cell forgets the topic.
    pub(crate) on_close: Mutex<Option<Box<dyn FnOnce() + Send>>>,
}

impl PublisherShared {
    /// A read-only descriptor of the topic's memory, for a subscriber.
    pub(crate) fn share(&self) -> Result<std::fs::File> {
        self.read_only.try_clone().map_err(|e| Error::system("duplicating a topic's descriptor", e))
    }

    /// Attaches the subscription whose memory is `subscription` (see
    /// [`TopicPublisher::attach`]), telling whoever waits for the subscribers.
    pub(crate) fn attach(&self, subscription: &std::fs::File, policy: TopicPolicy) -> Result<(usize, u64)> {
        let attached = self.memory.lock().attach(subscription, policy)?;
        self.changed.notify_all();
        Ok(attached)
    }

    /// Ends a subscription (see [`TopicPublisher::end_subscription`]), telling whoever
    /// waits for the subscribers.
    pub(crate) fn end_subscription(&self, index: usize, start: u64, status: Status) {
        self.memory.lock().end_subscription(index, start, status);
        self.changed.notify_all();
    }
}

impl Drop for PublisherShared {
    fn drop(&mut self) {
        self.memory.lock().close();
        if let Some(close) = self.on_close.lock().take() {
            close();
        }
    }
}

/// Publishes samples to a topic's subscribers. Cheap to clone; publishing from several
/// threads is serialised. Dropping the last clone (and the last [`Loan`]) closes the
/// topic: subscribers read what was queued, then see it end (UNAVAILABLE).
#[derive(Clone)]
pub struct Publisher {
    pub(crate) shared: Arc<PublisherShared>,
}

impl std::fmt::Debug for Publisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Publisher").field("topic", &self.shared.name).finish()
    }
}

impl Publisher {
    pub(crate) fn new(name: &str, memory: TopicPublisher) -> Result<Publisher> {
        Ok(Publisher {
            shared: Arc::new(PublisherShared {
                name: name.to_string(),
                read_only: memory.share()?,
                memory: Mutex::new(memory),
                changed: Condvar::new(),
                on_close: Mutex::new(None),
            }),
        })
    }

    /// The topic's name.
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// The largest sample, in bytes.
    pub fn sample_size(&self) -> usize {
        self.shared.memory.lock().geometry().sample_size as usize
    }

    /// Subscribers attached now.
    pub fn subscribers(&self) -> usize {
        self.shared.memory.lock().attached()
    }

    /// Waits up to `timeout` until exactly `count` subscribers are attached (before
    /// publishing to subscribers that are still joining, or until those that left are
    /// gone: a cell's unsubscribe reaches the host as a notification). DEADLINE_EXCEEDED
    /// naming how many are attached otherwise.
    pub fn wait_for_subscribers(&self, count: usize, timeout: Duration) -> Result<()> {
        let deadline = instant_after(timeout);
        let mut memory = self.shared.memory.lock();
        while memory.attached() != count {
            if self.shared.changed.wait_until(&mut memory, deadline).timed_out() && memory.attached() != count {
                return Err(Error::new(
                    Status::DeadlineExceeded,
                    format!("topic {:?}: {} subscribers attached, not {count}", self.shared.name, memory.attached()),
                ));
            }
        }
        Ok(())
    }

    /// Publishes a copy of `sample` (small ones travel in the queue entries themselves);
    /// its sequence number. A subscriber whose policy is Block and whose queue is full
    /// holds the publish up to `timeout` (then DEADLINE_EXCEEDED, and nobody got it), as
    /// does a [`Loan`] another thread has out; RESOURCE_EXHAUSTED when every slot is held
    /// by the subscribers, INVALID_ARGUMENT for a sample larger than the topic's sample
    /// size.
    pub fn publish(&self, sample: &[u8], timeout: Duration) -> Result<u64> {
        // Refused before any wait; small samples too (an event topic's limit is 8).
        let size = self.sample_size();
        if sample.len() > size {
            return Err(too_large(&self.shared.name, sample.len(), size));
        }
        if sample.len() <= INLINE_MAX {
            let mut memory = self.room(instant_after(timeout))?;
            let publication = memory.publish_inline(sample);
            if !publication.detached.is_empty() {
                self.shared.changed.notify_all();
            }
            return Ok(publication.seq);
        }
        let mut loan = self.loan(timeout)?;
        loan.bytes_mut()[..sample.len()].copy_from_slice(sample);
        loan.publish(sample.len())
    }

    /// Loans a slot to write a sample in place (see [`Loan`]), waiting up to `timeout`
    /// for room in the queues of Block subscribers and for a loan another thread has out.
    pub fn loan(&self, timeout: Duration) -> Result<Loan> {
        let mut memory = self.room(instant_after(timeout))?;
        let loan = memory.loan().ok_or_else(|| {
            Error::new(
                Status::ResourceExhausted,
                format!("topic {:?}: every sample slot is queued or held by its subscribers", self.shared.name),
            )
        })?;
        let seq = memory.next_seq();
        Ok(Loan { publisher: self.shared.clone(), loan: Some(loan), seq })
    }

    /// The topic's memory once no loan is out and every Block subscriber's queue has
    /// room, by `deadline`. A full queue is slept on without the lock, so that
    /// subscriptions can join and end meanwhile (the one waited for may be either).
    fn room(&self, deadline: Instant) -> Result<crate::runtime::sync::MutexGuard<'_, TopicPublisher>> {
        let mut memory = self.shared.memory.lock();
        let mut spin = ROOM_SPIN;
        loop {
            while memory.loaned() {
                if self.shared.changed.wait_until(&mut memory, deadline).timed_out() && memory.loaned() {
                    return Err(Error::new(
                        Status::DeadlineExceeded,
                        format!("topic {:?}: another thread's loan stayed out", self.shared.name),
                    ));
                }
            }
            let Some(full) = memory.full_queue(spin.min(deadline.saturating_duration_since(Instant::now()))) else {
                return Ok(memory);
            };
            spin = Duration::ZERO;
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                full.give_up();
                return Err(Error::new(
                    Status::DeadlineExceeded,
                    format!("topic {:?}: a Block subscriber's queue stayed full", self.shared.name),
                ));
            }
            drop(memory);
            // Slices of at most 100 ms: a missed wake costs that much, not the deadline.
            full.sleep(left.min(Duration::from_millis(100)));
            memory = self.shared.memory.lock();
        }
    }
}

fn too_large(topic: &str, len: usize, size: usize) -> Error {
    Error::new(Status::InvalidArgument, format!("topic {topic:?}: a {len}-byte sample, its limit is {size}"))
}

/// A slot loaned from a topic, written in place, then published with
/// [`Loan::publish`]; dropped unpublished, it goes back. It may move to another thread;
/// while it is out, other publishes on the topic wait (its sequence number is the next).
pub struct Loan {
    publisher: Arc<PublisherShared>,
    loan: Option<crate::shm::topic::Loan>,
    seq: u64,
}

impl std::fmt::Debug for Loan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Loan").field("topic", &self.publisher.name).field("seq", &self.seq).finish_non_exhaustive()
    }
}

impl Loan {
    /// The slot: the topic's sample size in bytes, to write the sample into.
    pub fn bytes_mut(&mut self) -> &mut [u8] {
        match &mut self.loan {
            Some(loan) => loan.bytes_mut(),
            None => &mut [],
        }
    }

    /// The slot's size: the topic's sample size in bytes.
    pub fn capacity(&self) -> usize {
        self.loan.as_ref().map_or(0, |loan| loan.len())
    }

    /// The sequence number the sample gets when published (no other publish can come
    /// first while the loan is out).
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// Publishes the first `len` bytes of the slot; the sample's sequence number.
    /// INVALID_ARGUMENT if `len` is larger than the slot (the loan goes back then).
    pub fn publish(mut self, len: usize) -> Result<u64> {
        let loan = self.loan.take().ok_or_else(|| Error::new(Status::Internal, "a loan published twice"))?;
        let mut memory = self.publisher.memory.lock();
        let size = memory.geometry().sample_size as usize;
        if len > size {
            memory.unloan(loan);
            self.publisher.changed.notify_all();
            return Err(too_large(&self.publisher.name, len, size));
        }
        let seq = memory.publish(loan, len).seq;
        self.publisher.changed.notify_all();
        Ok(seq)
    }
}

impl Drop for Loan {
    fn drop(&mut self) {
        if let Some(loan) = self.loan.take() {
            self.publisher.memory.lock().unloan(loan);
            self.publisher.changed.notify_all();
        }
    }
}

pub(crate) struct SubscriberShared {
    pub(crate) name: String,
    pub(crate) memory: Mutex<TopicSubscriber>,
    /// Set when the host says the publisher is gone (its process died): what the topic's
    /// memory cannot say, since its writer can no longer write it.
    ended: Mutex<Option<Error>>,
    /// Called once when the subscriber is dropped: the host or the cell unsubscribes.
    pub(crate) on_close: Mutex<Option<Box<dyn FnOnce() + Send>>>,
    /// How `recv` waits.
    wait: Mutex<WaitStrategy>,
    /// What each received sample reads and releases itself with (made once: both
    /// mappings stay as they are for the subscription's life); also the word an async
    /// wait registers with the futex reactor.
    access: Arc<SampleAccess>,
    /// The waker of the last `poll_recv` that found nothing: woken when the host ends
    /// the subscription (the memory's word does not change then).
    waker: Mutex<Option<Waker>>,
}

impl SubscriberShared {
    /// Ends the subscription with `why` (what the topic's memory cannot say: its
    /// publisher died), waking a reader that sleeps.
    pub(crate) fn end(&self, why: Error) {
        *self.ended.lock() = Some(why);
        self.access.wake_reader();
        if let Some(waker) = self.waker.lock().take() {
            waker.wake();
        }
    }
}

impl Drop for SubscriberShared {
    fn drop(&mut self) {
        if let Some(close) = self.on_close.lock().take() {
            close();
        }
    }
}

/// Receives a topic's samples, in order, each with how many it missed before it.
/// Dropping it unsubscribes.
pub struct Subscriber {
    pub(crate) shared: Arc<SubscriberShared>,
    /// As a `futures_core::Stream`: the end was yielded.
    finished: bool,
}

impl std::fmt::Debug for Subscriber {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscriber").field("topic", &self.shared.name).finish()
    }
}

/// How often a sleeping subscriber looks whether the host said the publisher died (its
/// memory cannot say so). The host wakes it when it says so; this bounds the one case
/// the wake misses (it came between the look and the sleep).
const DEATH_CHECK: Duration = Duration::from_millis(50);

impl Subscriber {
    pub(crate) fn new(name: &str, memory: TopicSubscriber) -> Subscriber {
        let access = Arc::new(memory.access());
        Subscriber {
            finished: false,
            shared: Arc::new(SubscriberShared {
                access,
                waker: Mutex::new(None),
                name: name.to_string(),
                memory: Mutex::new(memory),
                ended: Mutex::new(None),
                on_close: Mutex::new(None),
                wait: Mutex::new(WaitStrategy::default()),
            }),
        }
    }

    /// The topic's name.
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// How [`Subscriber::recv`] waits, as calls do: `Spin` polls the queue until the
    /// timeout (lowest latency, a core busy), `Adaptive` polls for its spin then sleeps
    /// until the publisher wakes it (the default), `Block` sleeps at once.
    pub fn set_wait(&self, wait: WaitStrategy) {
        *self.shared.wait.lock() = wait;
    }

    /// The next sample, waiting up to `timeout`; `Ok(None)` if none came. Once the
    /// subscription ends, what was queued read first: UNAVAILABLE (the topic was closed),
    /// PEER_DEAD (its publisher died) or the reason the publisher detached it
    /// (RESOURCE_EXHAUSTED: it lagged past its `DisconnectAfter`; PROTOCOL_ERROR).
    pub fn recv(&self, timeout: Duration) -> Result<Option<Sample>> {
        if timeout.is_zero() {
            return self.try_recv();
        }
        let started = Instant::now();
        let deadline = instant_after(timeout);
        let spin = self.shared.wait.lock().spin_budget().map_or(timeout, |spin| spin.min(timeout));
        let mut polls = 0u32;
        loop {
            let next = self.shared.memory.lock().try_next();
            if let Some(found) = self.found(next)? {
                return Ok(Some(found));
            }
            polls = polls.wrapping_add(1);
            // The clock and the host's word are looked at every so often, not per poll.
            if spin.is_zero() || polls % 64 == 0 {
                if let Some(e) = self.shared.ended.lock().clone() {
                    return Err(e);
                }
                if started.elapsed() >= spin {
                    break;
                }
            }
            std::hint::spin_loop();
        }
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let next = self.shared.memory.lock().next_timeout(left.min(DEATH_CHECK));
            if let Some(found) = self.found(next)? {
                return Ok(Some(found));
            }
            if let Some(e) = self.shared.ended.lock().clone() {
                return Err(e);
            }
            if left.is_zero() {
                return Ok(None);
            }
        }
    }

    /// A sample found, the end of the subscription, or nothing yet.
    fn found(&self, next: Next) -> Result<Option<Sample>> {
        match next {
            Next::Sample(received) => {
                Ok(Some(Sample { access: (*self.shared.access).clone(), received: Some(received) }))
            }
            Next::Ended(status) => Err(self.ended(status)),
            Next::Empty => Ok(None),
        }
    }

    /// The next sample for async code: Ready once one is queued or the subscription
    /// ended (as [`Subscriber::recv`] says), Pending with `cx`'s waker registered
    /// otherwise. No thread waits: the process's futex reactor sleeps on this
    /// subscriber's wake word with every other async wait's (see `runtime::futex_reactor`).
    pub fn poll_recv(&self, cx: &mut Context<'_>) -> Poll<Result<Sample>> {
        // The waker is in place before `ended` is looked at: an end that comes later
        // finds it.
        *self.shared.waker.lock() = Some(cx.waker().clone());
        let mut memory = self.shared.memory.lock();
        let next = memory.try_next();
        if let Some(ready) = self.ready(next) {
            memory.unpark();
            return Poll::Ready(ready);
        }
        if let Some(e) = self.shared.ended.lock().clone() {
            memory.unpark();
            return Poll::Ready(Err(e));
        }
        let (seen, next) = memory.park();
        if let Some(ready) = self.ready(next) {
            memory.unpark();
            return Poll::Ready(ready);
        }
        futex_reactor::wake_on(self.shared.access.clone(), seen, cx.waker());
        Poll::Pending
    }

    /// The next sample, awaited (see [`Subscriber::poll_recv`]; no timeout: wrap it in
    /// the runtime's, and dropping the future just stops waiting).
    pub async fn recv_async(&self) -> Result<Sample> {
        std::future::poll_fn(|cx| self.poll_recv(cx)).await
    }

    /// A sample or the end, if `next` is either.
    fn ready(&self, next: Next) -> Option<Result<Sample>> {
        self.found(next).transpose()
    }

    /// The newest sample queued, without waiting; the older ones it skips count as
    /// missed (in the sample it returns). None when nothing came since the last read.
    /// What a reader of a [`TopicOptions::last_value`] topic calls whenever it wants the
    /// current value.
    pub fn latest(&self) -> Result<Option<Sample>> {
        let mut newest: Option<Sample> = None;
        loop {
            let next = self.shared.memory.lock().try_next();
            match self.found(next) {
                Ok(Some(mut sample)) => {
                    if let Some(older) = newest.take() {
                        // The skipped one and what it stood for are missed too.
                        let skipped = 1 + older.missed();
                        if let Some(received) = sample.received.as_mut() {
                            received.missed += skipped;
                        }
                    }
                    newest = Some(sample);
                }
                Ok(None) if newest.is_none() => return self.shared.ended.lock().clone().map_or(Ok(None), Err),
                Ok(None) => return Ok(newest),
                // The end comes after what was queued: the newest first, if any.
                Err(e) => return if newest.is_some() { Ok(newest) } else { Err(e) },
            }
        }
    }

    /// The next sample if one is queued, without waiting: one look at the queue, never
    /// a sleep prepared (a parked subscriber costs its publisher a wake per publish).
    pub fn try_recv(&self) -> Result<Option<Sample>> {
        let next = self.shared.memory.lock().try_next();
        match self.found(next)? {
            Some(sample) => Ok(Some(sample)),
            None => self.shared.ended.lock().clone().map_or(Ok(None), Err),
        }
    }

    /// Samples lost at the publisher for this subscriber so far (its queue was full).
    pub fn dropped(&self) -> u64 {
        self.shared.memory.lock().dropped()
    }

    fn ended(&self, status: Status) -> Error {
        let why = match status {
            Status::Unavailable => "the topic was closed",
            Status::ResourceExhausted => "the publisher detached this subscriber: it lagged too far behind",
            Status::ProtocolError => "the publisher wrote what no honest publisher can",
            _ => "the subscription ended",
        };
        Error::new(status, format!("topic {:?}: {why}", self.shared.name))
    }
}

/// Waits for any of several subscribers at once, in blocking code (async code selects over
/// their `recv_async`): one FUTEX_WAITV on every subscriber's wake word, no thread of its
/// own. A subscriber is ready when a read would find a sample or its subscription's end.
///
/// ```ignore
/// let mut set = WaitSet::new();
/// let (frames, config) = (set.add(&frames), set.add(&config));
/// for ready in set.wait(Duration::from_secs(1)) {
///     if ready == frames { /* frames.try_recv() */ }
/// }
/// ```
#[derive(Debug, Default)]
pub struct WaitSet<'a> {
    subscribers: Vec<&'a Subscriber>,
}

impl<'a> WaitSet<'a> {
    /// An empty set.
    pub fn new() -> WaitSet<'a> {
        WaitSet { subscribers: Vec::new() }
    }

    /// Adds `subscriber`; its index in what [`WaitSet::wait`] returns.
    pub fn add(&mut self, subscriber: &'a Subscriber) -> usize {
        self.subscribers.push(subscriber);
        self.subscribers.len() - 1
    }

    /// The indices of the subscribers that are ready, waiting up to `timeout` for one to
    /// be; empty if none was by then. Ready ones are taken with `try_recv`.
    pub fn wait(&self, timeout: Duration) -> Vec<usize> {
        let deadline = instant_after(timeout);
        loop {
            let ready = self.ready();
            if !ready.is_empty() || self.subscribers.is_empty() {
                return ready;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return ready;
            }
            // Parked first, then one more look: a sample published in between is seen
            // by the look, or its publisher sees the subscriber parked and wakes it.
            let seen: Vec<u32> = self.subscribers.iter().map(|s| s.shared.memory.lock().park_only()).collect();
            if self.ready().is_empty() {
                let words: Vec<(&std::sync::atomic::AtomicU32, u32)> = self
                    .subscribers
                    .iter()
                    .zip(&seen)
                    .map(|(s, seen)| (futex_reactor::FutexWord::word(&*s.shared.access), *seen))
                    .collect();
                // The host's "publisher died" wakes without changing a word: a missed one
                // is seen within DEATH_CHECK, as in `recv`.
                crate::sys::futex::wait_any(&words, Some(left.min(DEATH_CHECK)));
            }
            for subscriber in &self.subscribers {
                subscriber.shared.memory.lock().unpark();
            }
        }
    }

    fn ready(&self) -> Vec<usize> {
        let ready = |s: &Subscriber| s.shared.memory.lock().has_next() || s.shared.ended.lock().is_some();
        self.subscribers.iter().enumerate().filter(|(_, s)| ready(s)).map(|(i, _)| i).collect()
    }
}

/// The samples as a `futures_core::Stream`: it ends (None) once the topic is closed
/// and what was queued was read; any other end (PEER_DEAD: the publisher died;
/// RESOURCE_EXHAUSTED: detached for lagging) comes as one `Err`, then None.
impl futures_core::Stream for Subscriber {
    type Item = Result<Sample>;

    fn poll_next(self: std::pin::Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Sample>>> {
        let this = self.get_mut();
        if this.finished {
            return Poll::Ready(None);
        }
        this.poll_recv(cx).map(|next| match next {
            Ok(sample) => Some(Ok(sample)),
            Err(e) => {
                this.finished = true;
                (e.status() != Status::Unavailable).then_some(Err(e))
            }
        })
    }
}

/// A sample read in place from the topic's memory; dropping it lets the publisher use
/// its slot again (a subscriber holds at most the topic's `max_borrowed` at once: past
/// that, `recv` waits for one to be dropped). Drop it before its [`Subscriber`]: once the
/// subscription ends, the publisher no longer sees what it holds, and the bytes of a
/// sample still held may change (reading them stays memory-safe: see [`SharedBytes`]).
pub struct Sample {
    access: SampleAccess,
    received: Option<Received>,
}

impl std::fmt::Debug for Sample {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sample").field("seq", &self.seq()).field("missed", &self.missed()).finish()
    }
}

impl Sample {
    /// Its sequence number (1 for a topic's first sample).
    pub fn seq(&self) -> u64 {
        self.received.as_ref().map_or(0, |r| r.seq)
    }

    /// Samples this subscriber missed just before it.
    pub fn missed(&self) -> u64 {
        self.received.as_ref().map_or(0, |r| r.missed)
    }

    /// Reads the sample's bytes (in place; see [`SharedBytes`]).
    pub fn bytes(&self) -> SharedBytes<'_> {
        match &self.received {
            Some(received) => self.access.bytes(received),
            None => SharedBytes::private(&[]),
        }
    }

    /// A copy of the sample's bytes.
    pub fn to_vec(&self) -> Vec<u8> {
        self.bytes().to_vec()
    }
}

impl Drop for Sample {
    fn drop(&mut self) {
        if let Some(received) = self.received.take() {
            self.access.release(received);
        }
    }
}

/// Where topics are published and subscribed to, the same for the host's hub (and its
/// supervisor) and for each cell: what the C and Python bindings are written against.
pub trait Topics {
    /// Creates topic `name` published from here: ALREADY_EXISTS while another of that
    /// name lives, INVALID_ARGUMENT for options out of range. Dropping the last
    /// [`Publisher`] clone closes it.
    fn publish(&self, name: &str, options: TopicOptions) -> Result<Publisher>;

    /// Subscribes to topic `name` (published by the host or any cell) with `policy`:
    /// NOT_FOUND when no such topic lives, PERMISSION_DENIED for a cell the host's rule
    /// for "topic:NAME" leaves out, RESOURCE_EXHAUSTED when it has its most subscribers.
    fn subscribe(&self, name: &str, policy: TopicPolicy) -> Result<Subscriber>;
}

impl Topics for crate::Hub {
    fn publish(&self, name: &str, options: TopicOptions) -> Result<Publisher> {
        crate::Hub::publish(self, name, options)
    }

    fn subscribe(&self, name: &str, policy: TopicPolicy) -> Result<Subscriber> {
        crate::Hub::subscribe(self, name, policy)
    }
}

impl Topics for crate::Cell {
    fn publish(&self, name: &str, options: TopicOptions) -> Result<Publisher> {
        crate::Cell::publish(self, name, options)
    }

    fn subscribe(&self, name: &str, policy: TopicPolicy) -> Result<Subscriber> {
        crate::Cell::subscribe(self, name, policy)
    }
}

impl Topics for crate::Supervisor {
    fn publish(&self, name: &str, options: TopicOptions) -> Result<Publisher> {
        self.hub().publish(name, options)
    }

    fn subscribe(&self, name: &str, policy: TopicPolicy) -> Result<Subscriber> {
        self.hub().subscribe(name, policy)
    }
}

/// Maps a topic's memory for a local subscriber and attaches it to `publisher`, both in
/// this process (the host publishing and subscribing itself).
pub(crate) fn subscribe_locally(publisher: &Publisher, policy: TopicPolicy) -> Result<Subscriber> {
    let builder = TopicSubscriber::prepare()?;
    let topic = publisher.shared.share()?;
    let (index, start) = publisher.shared.attach(&builder.share()?, policy)?;
    let subscriber = Subscriber::new(publisher.name(), builder.attached(&topic, index, start)?);
    let weak = Arc::downgrade(&publisher.shared);
    *subscriber.shared.on_close.lock() = Some(Box::new(move || {
        if let Some(publisher) = weak.upgrade() {
            publisher.end_subscription(index, start, Status::Cancelled);
        }
    }));
    Ok(subscriber)
}
