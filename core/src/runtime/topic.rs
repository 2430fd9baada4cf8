//! Publish/subscribe handles, the same for the host and for cells: a [`Publisher`] loans
//! a slot of its topic, the sample is written in place and published to every
//! subscriber's queue; a [`Subscriber`] reads samples in place ([`Sample`]) and lets go
//! of them when dropped. The memory and its rules are `shm::topic` and `proto::topic`;
//! who brokers a subscription is the host's (`host/topics.rs`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::proto::topic::TopicPolicy;
use crate::runtime::session::WaitStrategy;
use crate::runtime::sync::Mutex;
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
    pub(crate) fn geometry(&self) -> TopicGeometry {
        TopicGeometry::new(self.sample_size, self.depth, self.max_subscribers, self.max_borrowed, self.history)
    }
}

pub(crate) struct PublisherShared {
    pub(crate) name: String,
    pub(crate) memory: Mutex<TopicPublisher>,
    /// Called once when the last handle is dropped: the host or the cell forgets the topic.
    pub(crate) on_close: Mutex<Option<Box<dyn FnOnce() + Send>>>,
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
/// threads is serialised. Dropping the last clone closes the topic: subscribers read
/// what was queued, then see it end (UNAVAILABLE).
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
    pub(crate) fn new(name: &str, memory: TopicPublisher) -> Publisher {
        Publisher {
            shared: Arc::new(PublisherShared {
                name: name.to_string(),
                memory: Mutex::new(memory),
                on_close: Mutex::new(None),
            }),
        }
    }

    /// The topic's name.
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// Publishes a copy of `sample` (small ones travel in the queue entries themselves);
    /// its sequence number. A subscriber whose policy is Block and whose queue is full
    /// holds the publish up to `timeout` (then DEADLINE_EXCEEDED, and nobody got it);
    /// RESOURCE_EXHAUSTED when every slot is held by the subscribers, INVALID_ARGUMENT
    /// for a sample larger than the topic's sample size.
    pub fn publish(&self, sample: &[u8], timeout: Duration) -> Result<u64> {
        if sample.len() <= INLINE_MAX {
            let mut memory = self.room(timeout)?;
            return Ok(memory.publish_inline(sample).seq);
        }
        let mut loan = self.loan(timeout)?;
        match loan.bytes_mut().get_mut(..sample.len()) {
            Some(slot) => slot.copy_from_slice(sample),
            None => return Err(too_large(&self.shared.name, sample.len(), loan.bytes_mut().len())),
        }
        loan.publish(sample.len())
    }

    /// Loans a slot to write a sample in place (see [`Loan`]), waiting up to `timeout`
    /// for room in the queues of Block subscribers.
    pub fn loan(&self, timeout: Duration) -> Result<Loan<'_>> {
        let mut memory = self.room(timeout)?;
        let loan = memory.loan().ok_or_else(|| {
            Error::new(
                Status::ResourceExhausted,
                format!("topic {:?}: every sample slot is queued or held by its subscribers", self.shared.name),
            )
        })?;
        Ok(Loan { memory, loan: Some(loan), name: &self.shared.name })
    }

    fn room(&self, timeout: Duration) -> Result<crate::runtime::sync::MutexGuard<'_, TopicPublisher>> {
        let mut memory = self.shared.memory.lock();
        if !memory.wait_for_room(timeout) {
            return Err(Error::new(
                Status::DeadlineExceeded,
                format!("topic {:?}: a Block subscriber's queue stayed full", self.shared.name),
            ));
        }
        Ok(memory)
    }
}

fn too_large(topic: &str, len: usize, size: usize) -> Error {
    Error::new(Status::InvalidArgument, format!("topic {topic:?}: a {len}-byte sample, its limit is {size}"))
}

/// A slot loaned from a topic, written in place, then published with
/// [`Loan::publish`]; dropped unpublished, it goes back. Publishing from other threads
/// waits while a loan is out.
pub struct Loan<'a> {
    memory: crate::runtime::sync::MutexGuard<'a, TopicPublisher>,
    loan: Option<crate::shm::topic::Loan>,
    name: &'a str,
}

impl std::fmt::Debug for Loan<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Loan").field("topic", &self.name).finish_non_exhaustive()
    }
}

impl Loan<'_> {
    /// The slot: the topic's sample size in bytes, to write the sample into.
    pub fn bytes_mut(&mut self) -> &mut [u8] {
        match &self.loan {
            Some(loan) => self.memory.loan_bytes(loan),
            None => &mut [],
        }
    }

    /// The sequence number the sample gets when published (no other publish can come
    /// first while the loan is out).
    pub fn seq(&self) -> u64 {
        self.memory.next_seq()
    }

    /// Publishes the first `len` bytes of the slot; the sample's sequence number.
    /// INVALID_ARGUMENT if `len` is larger than the slot.
    pub fn publish(mut self, len: usize) -> Result<u64> {
        let size = self.memory.geometry().sample_size as usize;
        if len > size {
            return Err(too_large(self.name, len, size));
        }
        let loan = self.loan.take().ok_or_else(|| Error::new(Status::Internal, "a loan published twice"))?;
        Ok(self.memory.publish(loan, len).seq)
    }
}

impl Drop for Loan<'_> {
    fn drop(&mut self) {
        if let Some(loan) = self.loan.take() {
            self.memory.unloan(loan);
        }
    }
}

pub(crate) struct SubscriberShared {
    pub(crate) name: String,
    pub(crate) memory: Mutex<TopicSubscriber>,
    /// Set when the host says the publisher is gone (its process died): what the topic's
    /// memory cannot say, since its writer can no longer write it.
    pub(crate) ended: Mutex<Option<Error>>,
    /// Called once when the subscriber is dropped: the host or the cell unsubscribes.
    pub(crate) on_close: Mutex<Option<Box<dyn FnOnce() + Send>>>,
    /// How `recv` waits.
    wait: Mutex<WaitStrategy>,
    /// What each received sample reads and releases itself with (made once: both
    /// mappings stay as they are for the subscription's life).
    access: SampleAccess,
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
}

impl std::fmt::Debug for Subscriber {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscriber").field("topic", &self.shared.name).finish()
    }
}

/// How often a waiting subscriber looks whether the host said the publisher died (its
/// memory cannot say so): the end of a dead publisher's topic is seen within this.
const DEATH_CHECK: Duration = Duration::from_millis(50);

impl Subscriber {
    pub(crate) fn new(name: &str, memory: TopicSubscriber) -> Subscriber {
        let access = memory.access();
        Subscriber {
            shared: Arc::new(SubscriberShared {
                access,
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
    /// subscription ends: UNAVAILABLE (the topic closed or its publisher died; what was
    /// queued is read first) or the reason the publisher detached it
    /// (RESOURCE_EXHAUSTED: it lagged past its `DisconnectAfter`; PROTOCOL_ERROR).
    pub fn recv(&self, timeout: Duration) -> Result<Option<Sample>> {
        let started = Instant::now();
        let deadline = started + timeout;
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
            Next::Sample(received) => Ok(Some(Sample { access: self.shared.access.clone(), received: Some(received) })),
            Next::Ended(status) => Err(self.ended(status)),
            Next::Empty => Ok(None),
        }
    }

    /// The next sample if one is queued, without waiting.
    pub fn try_recv(&self) -> Result<Option<Sample>> {
        self.recv(Duration::ZERO)
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

/// Maps a topic's memory for a local subscriber and attaches it to `publisher`, both in
/// this process (the host publishing and subscribing itself).
pub(crate) fn subscribe_locally(publisher: &Publisher, policy: TopicPolicy) -> Result<Subscriber> {
    let builder = TopicSubscriber::prepare()?;
    let (topic, index, start) = {
        let mut memory = publisher.shared.memory.lock();
        let (index, start) = memory.attach(&builder.share()?, policy)?;
        (memory.share()?, index, start)
    };
    let subscriber = Subscriber::new(publisher.name(), builder.attached(&topic, index, start)?);
    let weak = Arc::downgrade(&publisher.shared);
    *subscriber.shared.on_close.lock() = Some(Box::new(move || {
        if let Some(publisher) = weak.upgrade() {
            publisher.memory.lock().end_subscription(index, start, Status::Cancelled);
        }
    }));
    Ok(subscriber)
}
