//! Publish/subscribe: topics a host, a supervisor's host or a cell publishes, and
//! subscriptions to them (PROTOCOL.md §19 for the memory underneath).

use crate::*;
use cellshm::{Loan, Publisher, Sample, Subscriber, TopicOptions, TopicPolicy, Topics};

/// `cellshm_subscriber_options.policy`: the publisher waits (up to its publish timeout)
/// while this subscriber's queue is full. Only for subscribers that read promptly.
pub const CELLSHM_TOPIC_BLOCK: u32 = 0;
/// `cellshm_subscriber_options.policy`: a full queue loses its oldest sample; the next
/// sample read says how many were missed (the default).
pub const CELLSHM_TOPIC_DROP_OLDEST: u32 = 1;
/// `cellshm_subscriber_options.policy`: a full queue refuses the new sample; the next
/// sample read says how many were missed.
pub const CELLSHM_TOPIC_DROP_NEWEST: u32 = 2;
/// `cellshm_subscriber_options.policy`: a subscriber more than `disconnect_after`
/// samples behind is detached; its next read returns CELLSHM_RESOURCE_EXHAUSTED.
pub const CELLSHM_TOPIC_DISCONNECT_AFTER: u32 = 3;

/// The shape of a topic, chosen by its publisher. Start from
/// cellshm_topic_options_default().
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct cellshm_topic_options {
    /// sizeof(cellshm_topic_options) as the caller knows it; set by the default.
    pub size: usize,
    /// Largest sample in bytes (1 to 1 MiB; default 4096). Samples up to 40 bytes travel
    /// in the subscribers' queue entries, larger ones in a slot of the topic's memory.
    pub sample_size: u32,
    /// Samples each subscriber's queue holds: a power of two up to 65536 (default 16).
    pub depth: u32,
    /// The last samples kept for subscribers that join later (0 to `depth`; default 0).
    pub history: u32,
    /// Subscribers at once (1 to 64; default 8).
    pub max_subscribers: u32,
    /// Samples a subscriber may hold (not yet freed) at once (1 to 16; default 2).
    pub max_borrowed: u32,
}

/// The default topic options, `size` set.
#[no_mangle]
pub extern "C" fn cellshm_topic_options_default() -> cellshm_topic_options {
    let d = TopicOptions::default();
    cellshm_topic_options {
        size: std::mem::size_of::<cellshm_topic_options>(),
        sample_size: d.sample_size,
        depth: d.depth,
        history: d.history,
        max_subscribers: d.max_subscribers,
        max_borrowed: d.max_borrowed,
    }
}

/// The options of a "last value" topic (a blackboard) of samples up to `sample_size`
/// bytes: each subscriber's queue holds only the newest sample, and a new subscriber
/// gets the current one at once. Readers take the newest with
/// cellshm_subscriber_latest whenever they want (subscribe with
/// CELLSHM_TOPIC_DROP_OLDEST, the default, so that the publisher never waits).
#[no_mangle]
pub extern "C" fn cellshm_topic_options_last_value(sample_size: u32) -> cellshm_topic_options {
    let last = TopicOptions::last_value(sample_size);
    cellshm_topic_options { sample_size, depth: last.depth, history: last.history, ..cellshm_topic_options_default() }
}

/// The options of an event topic: samples of at most 8 bytes (or none) that travel in
/// the queue entries (no slot), coalesced for a subscriber that has not read yet (it
/// reads the newest, and cellshm_sample_missed says how many it stands for).
#[no_mangle]
pub extern "C" fn cellshm_topic_options_events() -> cellshm_topic_options {
    let events = TopicOptions::events();
    cellshm_topic_options {
        sample_size: events.sample_size,
        depth: events.depth,
        history: events.history,
        ..cellshm_topic_options_default()
    }
}

/// How a subscriber's queue behaves and how it waits. Start from
/// cellshm_subscriber_options_default().
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct cellshm_subscriber_options {
    /// sizeof(cellshm_subscriber_options) as the caller knows it; set by the default.
    pub size: usize,
    /// A CELLSHM_TOPIC_* policy (default CELLSHM_TOPIC_DROP_OLDEST).
    pub policy: u32,
    /// With CELLSHM_TOPIC_DISCONNECT_AFTER: how many samples behind is too far (1 to the
    /// topic's depth).
    pub disconnect_after: u32,
    /// How cellshm_subscriber_next waits: CELLSHM_WAIT_ADAPTIVE (the default),
    /// CELLSHM_WAIT_SPIN or CELLSHM_WAIT_BLOCK.
    pub wait: u32,
    /// With CELLSHM_WAIT_ADAPTIVE: microseconds to poll before sleeping (default 50).
    pub spin_us: u32,
}

/// The default subscriber options, `size` set.
#[no_mangle]
pub extern "C" fn cellshm_subscriber_options_default() -> cellshm_subscriber_options {
    cellshm_subscriber_options {
        size: std::mem::size_of::<cellshm_subscriber_options>(),
        policy: CELLSHM_TOPIC_DROP_OLDEST,
        disconnect_after: 0,
        wait: CELLSHM_WAIT_ADAPTIVE,
        spin_us: 50,
    }
}

fn topic_options(o: &cellshm_topic_options) -> TopicOptions {
    TopicOptions {
        sample_size: o.sample_size,
        depth: o.depth,
        history: o.history,
        max_subscribers: o.max_subscribers,
        max_borrowed: o.max_borrowed,
    }
}

fn subscriber_options(o: &cellshm_subscriber_options) -> Result<(TopicPolicy, WaitStrategy), cellshm_status> {
    let policy = TopicPolicy::from_code(o.policy, o.disconnect_after).ok_or_else(|| {
        invalid(format!("cellshm_subscriber_options.policy = {} is not a CELLSHM_TOPIC_* value", o.policy))
    })?;
    let wait = wait_strategy(o.wait, o.spin_us, "cellshm_subscriber_options.wait")?;
    Ok((policy, wait))
}

/// A topic's publishing end (cellshm_hub_publish, cellshm_cell_publish,
/// cellshm_supervisor_publish). Owned by the caller; any thread may use it, several at
/// once (publishes are serialised). cellshm_publisher_free closes the topic once no
/// loan of it is out: subscribers read what was queued, then see CELLSHM_UNAVAILABLE.
#[derive(Debug)]
pub struct cellshm_publisher {
    pub(crate) publisher: Publisher,
}

/// A topic's subscribing end (cellshm_hub_subscribe, cellshm_cell_subscribe,
/// cellshm_supervisor_subscribe). Owned by the caller; one thread at a time reads it.
/// cellshm_subscriber_free unsubscribes; free the samples read from it first (a sample
/// freed later is still safe to read, but its bytes may have changed).
#[derive(Debug)]
pub struct cellshm_subscriber {
    pub(crate) subscriber: Subscriber,
}

/// A slot loaned from a topic (cellshm_publisher_loan), written in place through
/// cellshm_loan_data and published with cellshm_loan_publish. Owned by the caller;
/// may move to another thread. While it is out, other publishes of the topic wait.
#[derive(Debug)]
pub struct cellshm_loan {
    pub(crate) loan: Loan,
}

/// One sample read in place from a topic's memory (cellshm_subscriber_next). Owned by
/// the caller; cellshm_sample_free lets the publisher use its slot again (a subscriber
/// holds at most the topic's `max_borrowed` samples at once).
#[derive(Debug)]
pub struct cellshm_sample {
    pub(crate) sample: Sample,
}

fn deliver_publisher(result: cellshm::Result<Publisher>, out: Out<'_, *mut cellshm_publisher>) -> cellshm_status {
    out.hand_over(cellshm_publisher { publisher: try_cellshm!(result) })
}

fn deliver_sample(result: cellshm::Result<Option<Sample>>, out: Out<'_, *mut cellshm_sample>) -> cellshm_status {
    match try_cellshm!(result) {
        Some(sample) => out.hand_over(cellshm_sample { sample }),
        None => out.write(std::ptr::null_mut()),
    }
}

fn deliver_subscriber(
    result: cellshm::Result<Subscriber>,
    wait: WaitStrategy,
    out: Out<'_, *mut cellshm_subscriber>,
) -> cellshm_status {
    let subscriber = try_cellshm!(result);
    subscriber.set_wait(wait);
    out.hand_over(cellshm_subscriber { subscriber })
}

/// The handles topics are published and subscribed from: hubs, supervisors and cells.
trait TopicsHandle: Handle {
    fn topics(&self) -> &dyn Topics;
}

impl TopicsHandle for cellshm_hub {
    fn topics(&self) -> &dyn Topics {
        &self.hub
    }
}

impl TopicsHandle for cellshm_supervisor {
    fn topics(&self) -> &dyn Topics {
        &self.sup
    }
}

impl TopicsHandle for cellshm_cell {
    fn topics(&self) -> &dyn Topics {
        &self.cell
    }
}

/// What cellshm_hub_publish, cellshm_supervisor_publish and cellshm_cell_publish do,
/// from whichever handle (`export` names the one C called).
///
/// # Safety
/// Their contract: `owner` is live; `topic` NUL-terminated; `options` NULL or a
/// cellshm_topic_options with its `size` set; `out_publisher` writable.
unsafe fn publish_from<H: TopicsHandle>(
    export: &str,
    owner: *const H,
    topic: *const c_char,
    options: *const cellshm_topic_options,
    out_publisher: *mut *mut cellshm_publisher,
) -> cellshm_status {
    boundary(export, || {
        // SAFETY: this function's contract, which its callers pass on from C's.
        let (arg0, arg1, arg2, arg3) = unsafe {
            (
                Out::new(out_publisher, "out_publisher"),
                Handle::borrow(owner),
                c_str(topic, "topic"),
                sized_options(options, cellshm_topic_options_default(), "cellshm_topic_options"),
            )
        };
        let (out, owner, topic, options) = (try_c!(arg0), try_c!(arg1), try_c!(arg2), try_c!(arg3));
        deliver_publisher(owner.topics().publish(topic, topic_options(&options)), out)
    })
}

/// What cellshm_hub_subscribe, cellshm_supervisor_subscribe and cellshm_cell_subscribe
/// do, from whichever handle (`export` names the one C called).
///
/// # Safety
/// Their contract: `owner` is live; `topic` NUL-terminated; `options` NULL or a
/// cellshm_subscriber_options with its `size` set; `out_subscriber` writable.
unsafe fn subscribe_from<H: TopicsHandle>(
    export: &str,
    owner: *const H,
    topic: *const c_char,
    options: *const cellshm_subscriber_options,
    out_subscriber: *mut *mut cellshm_subscriber,
) -> cellshm_status {
    boundary(export, || {
        // SAFETY: this function's contract, which its callers pass on from C's.
        let (arg0, arg1, arg2, arg3) = unsafe {
            (
                Out::new(out_subscriber, "out_subscriber"),
                Handle::borrow(owner),
                c_str(topic, "topic"),
                sized_options(options, cellshm_subscriber_options_default(), "cellshm_subscriber_options"),
            )
        };
        let (out, owner, topic, options) = (try_c!(arg0), try_c!(arg1), try_c!(arg2), try_c!(arg3));
        let (policy, wait) = try_c!(subscriber_options(&options));
        deliver_subscriber(owner.topics().subscribe(topic, policy), wait, out)
    })
}

/// Creates topic `topic`, published by the host. `options` may be NULL (the defaults).
/// On success `*out_publisher` is owned by the caller. CELLSHM_ALREADY_EXISTS while
/// another topic of that name lives; CELLSHM_INVALID_ARGUMENT for options out of range.
///
/// # Safety
/// `hub` is live; `topic` NUL-terminated; `options` NULL or a cellshm_topic_options
/// with its `size` set; `out_publisher` writable.
#[no_mangle]
pub unsafe extern "C" fn cellshm_hub_publish(
    hub: *const cellshm_hub,
    topic: *const c_char,
    options: *const cellshm_topic_options,
    out_publisher: *mut *mut cellshm_publisher,
) -> cellshm_status {
    // SAFETY: cellshm_hub_publish's contract, which C keeps, is publish_from's.
    unsafe { publish_from("cellshm_hub_publish", hub, topic, options, out_publisher) }
}

/// Creates topic `topic`, published by the supervisor's host (see cellshm_hub_publish).
///
/// # Safety
/// As for cellshm_hub_publish, with a live `supervisor`.
#[no_mangle]
pub unsafe extern "C" fn cellshm_supervisor_publish(
    supervisor: *const cellshm_supervisor,
    topic: *const c_char,
    options: *const cellshm_topic_options,
    out_publisher: *mut *mut cellshm_publisher,
) -> cellshm_status {
    // SAFETY: cellshm_supervisor_publish's contract, which C keeps, is publish_from's.
    unsafe { publish_from("cellshm_supervisor_publish", supervisor, topic, options, out_publisher) }
}

/// Creates topic `topic`, published by this cell; the host brokers it to subscribers
/// (see cellshm_hub_publish). The topic ends when the publisher is freed or this
/// process dies.
///
/// # Safety
/// As for cellshm_hub_publish, with a live `cell`.
#[no_mangle]
pub unsafe extern "C" fn cellshm_cell_publish(
    cell: *const cellshm_cell,
    topic: *const c_char,
    options: *const cellshm_topic_options,
    out_publisher: *mut *mut cellshm_publisher,
) -> cellshm_status {
    // SAFETY: cellshm_cell_publish's contract, which C keeps, is publish_from's.
    unsafe { publish_from("cellshm_cell_publish", cell, topic, options, out_publisher) }
}

/// Subscribes the host to topic `topic` (published by the host or a cell). `options`
/// may be NULL (drop-oldest, adaptive waiting). On success `*out_subscriber` is owned by
/// the caller; it reads the topic's history (if any) first, then what is published from
/// now on. CELLSHM_NOT_FOUND when no such topic lives; CELLSHM_RESOURCE_EXHAUSTED when
/// it has its `max_subscribers` already.
///
/// # Safety
/// `hub` is live; `topic` NUL-terminated; `options` NULL or a
/// cellshm_subscriber_options with its `size` set; `out_subscriber` writable.
#[no_mangle]
pub unsafe extern "C" fn cellshm_hub_subscribe(
    hub: *const cellshm_hub,
    topic: *const c_char,
    options: *const cellshm_subscriber_options,
    out_subscriber: *mut *mut cellshm_subscriber,
) -> cellshm_status {
    // SAFETY: cellshm_hub_subscribe's contract, which C keeps, is subscribe_from's.
    unsafe { subscribe_from("cellshm_hub_subscribe", hub, topic, options, out_subscriber) }
}

/// Subscribes the supervisor's host to topic `topic` (see cellshm_hub_subscribe).
///
/// # Safety
/// As for cellshm_hub_subscribe, with a live `supervisor`.
#[no_mangle]
pub unsafe extern "C" fn cellshm_supervisor_subscribe(
    supervisor: *const cellshm_supervisor,
    topic: *const c_char,
    options: *const cellshm_subscriber_options,
    out_subscriber: *mut *mut cellshm_subscriber,
) -> cellshm_status {
    // SAFETY: cellshm_supervisor_subscribe's contract, which C keeps, is subscribe_from's.
    unsafe { subscribe_from("cellshm_supervisor_subscribe", supervisor, topic, options, out_subscriber) }
}

/// Subscribes this cell to topic `topic`, published by the host or another cell, if the
/// host's access policy allows "topic:NAME" (see cellshm_hub_subscribe;
/// CELLSHM_PERMISSION_DENIED otherwise).
///
/// # Safety
/// As for cellshm_hub_subscribe, with a live `cell`.
#[no_mangle]
pub unsafe extern "C" fn cellshm_cell_subscribe(
    cell: *const cellshm_cell,
    topic: *const c_char,
    options: *const cellshm_subscriber_options,
    out_subscriber: *mut *mut cellshm_subscriber,
) -> cellshm_status {
    // SAFETY: cellshm_cell_subscribe's contract, which C keeps, is subscribe_from's.
    unsafe { subscribe_from("cellshm_cell_subscribe", cell, topic, options, out_subscriber) }
}

/// Publishes a copy of `len` bytes at `data` (a sample of 40 bytes or less travels in
/// the subscribers' queue entries). `timeout_ms` bounds the wait for a Block
/// subscriber's full queue or another thread's loan (0: no wait;
/// CELLSHM_TIMEOUT_FOREVER: none), then CELLSHM_DEADLINE_EXCEEDED and nobody got it.
/// CELLSHM_INVALID_ARGUMENT for a sample larger than the topic's sample size;
/// CELLSHM_RESOURCE_EXHAUSTED when every slot is held by subscribers. `out_seq` may be
/// NULL; on success it receives the sample's sequence number (1 for the first).
///
/// # Safety
/// `publisher` is live; `data` has `len` readable bytes; `out_seq` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn cellshm_publisher_publish(
    publisher: *const cellshm_publisher,
    data: *const u8,
    len: usize,
    timeout_ms: u64,
    out_seq: *mut u64,
) -> cellshm_status {
    boundary("cellshm_publisher_publish", || {
        // SAFETY: cellshm_publisher_publish's contract, which C keeps.
        let (arg0, arg1, out_seq) =
            unsafe { (Handle::borrow(publisher), c_bytes(data, len, "data"), Out::optional(out_seq, "out_seq")) };
        let (publisher, data) = (try_c!(arg0), try_c!(arg1));
        let seq = try_cellshm!(publisher.publisher.publish(data, c_timeout(timeout_ms)));
        out_seq.map_or(CELLSHM_OK, |out| out.write(seq))
    })
}

/// Loans a slot of the topic to write a sample in place, waiting up to `timeout_ms` as
/// cellshm_publisher_publish does. On success `*out_loan` is owned by the caller:
/// publish it with cellshm_loan_publish or give it back with cellshm_loan_free.
///
/// # Safety
/// `publisher` is live; `out_loan` writable.
#[no_mangle]
pub unsafe extern "C" fn cellshm_publisher_loan(
    publisher: *const cellshm_publisher,
    timeout_ms: u64,
    out_loan: *mut *mut cellshm_loan,
) -> cellshm_status {
    boundary("cellshm_publisher_loan", || {
        // SAFETY: cellshm_publisher_loan's contract, which C keeps.
        let (arg0, arg1) = unsafe { (Out::new(out_loan, "out_loan"), Handle::borrow(publisher)) };
        let (out, publisher) = (try_c!(arg0), try_c!(arg1));
        out.hand_over(cellshm_loan { loan: try_cellshm!(publisher.publisher.loan(c_timeout(timeout_ms))) })
    })
}

/// Waits up to `timeout_ms` until exactly `count` subscribers are attached (before
/// publishing to subscribers that are still joining, or until those that left are gone:
/// a cell's unsubscribe reaches the host as a notification); CELLSHM_DEADLINE_EXCEEDED
/// otherwise.
///
/// # Safety
/// `publisher` is live.
#[no_mangle]
pub unsafe extern "C" fn cellshm_publisher_wait_subscribers(
    publisher: *const cellshm_publisher,
    count: usize,
    timeout_ms: u64,
) -> cellshm_status {
    boundary("cellshm_publisher_wait_subscribers", || {
        // SAFETY: cellshm_publisher_wait_subscribers's contract, which C keeps.
        let publisher = try_c!(unsafe { Handle::borrow(publisher) });
        try_cellshm!(publisher.publisher.wait_for_subscribers(count, c_timeout(timeout_ms)));
        CELLSHM_OK
    })
}

/// Subscribers attached to the topic now (0 for a NULL publisher).
///
/// # Safety
/// `publisher` is NULL or live.
#[no_mangle]
pub unsafe extern "C" fn cellshm_publisher_subscribers(publisher: *const cellshm_publisher) -> usize {
    // SAFETY: cellshm_publisher_subscribers's contract, which C keeps.
    boundary_value(0, || unsafe { publisher.as_ref() }.map_or(0, |p| p.publisher.subscribers()))
}

/// Closes the topic once no loan of it is out (subscribers read what was queued, then
/// see CELLSHM_UNAVAILABLE) and frees the publisher. NULL is a no-op.
///
/// # Safety
/// `publisher` is NULL or a publisher not yet freed, and no thread uses it any more.
#[no_mangle]
pub unsafe extern "C" fn cellshm_publisher_free(publisher: *mut cellshm_publisher) {
    // SAFETY: cellshm_publisher_free's contract, which C keeps.
    unsafe { free_with(publisher, drop) }
}

/// The loaned slot, cellshm_loan_capacity bytes to write the sample into; valid until
/// the loan is published or freed (NULL for a NULL loan).
///
/// # Safety
/// `loan` is NULL or live, and no other thread uses it during the call.
#[no_mangle]
pub unsafe extern "C" fn cellshm_loan_data(loan: *mut cellshm_loan) -> *mut u8 {
    boundary_value(std::ptr::null_mut(), || {
        // SAFETY: cellshm_loan_data's contract, which C keeps: NULL or a live loan that
        // this thread alone uses.
        unsafe { loan.as_mut() }.map_or(std::ptr::null_mut(), |l| l.loan.bytes_mut().as_mut_ptr())
    })
}

/// The loaned slot's size: the topic's sample size (0 for a NULL loan).
///
/// # Safety
/// `loan` is NULL or live.
#[no_mangle]
pub unsafe extern "C" fn cellshm_loan_capacity(loan: *const cellshm_loan) -> usize {
    // SAFETY: cellshm_loan_capacity's contract, which C keeps.
    boundary_value(0, || unsafe { loan.as_ref() }.map_or(0, |l| l.loan.capacity()))
}

/// The sequence number the loaned sample gets when published: no other sample of the
/// topic can be published first while the loan is out (0 for a NULL loan).
///
/// # Safety
/// `loan` is NULL or live.
#[no_mangle]
pub unsafe extern "C" fn cellshm_loan_seq(loan: *const cellshm_loan) -> u64 {
    // SAFETY: cellshm_loan_seq's contract, which C keeps.
    boundary_value(0, || unsafe { loan.as_ref() }.map_or(0, |l| l.loan.seq()))
}

/// Publishes the first `len` bytes of the loaned slot, and frees the loan whatever the
/// result (CELLSHM_INVALID_ARGUMENT for `len` larger than the slot: the slot goes back
/// unpublished). `out_seq` may be NULL; on success it receives the sample's sequence
/// number.
///
/// # Safety
/// `loan` is a loan not yet freed (it must not be used afterwards); `out_seq` NULL or
/// writable.
#[no_mangle]
pub unsafe extern "C" fn cellshm_loan_publish(
    loan: *mut cellshm_loan,
    len: usize,
    out_seq: *mut u64,
) -> cellshm_status {
    boundary("cellshm_loan_publish", || {
        // SAFETY: cellshm_loan_publish's contract, which C keeps: `loan` came from
        // cellshm_publisher_loan and is handed back here for good.
        let (loan, out_seq) = unsafe { (cellshm_loan::from_raw(loan), Out::optional(out_seq, "out_seq")) };
        let loan = try_c!(loan.ok_or_else(|| invalid("loan is NULL")));
        let seq = try_cellshm!(loan.loan.publish(len));
        out_seq.map_or(CELLSHM_OK, |out| out.write(seq))
    })
}

/// Gives a loan back unpublished. NULL is a no-op.
///
/// # Safety
/// `loan` is NULL or a loan not yet published or freed; it must not be used afterwards.
#[no_mangle]
pub unsafe extern "C" fn cellshm_loan_free(loan: *mut cellshm_loan) {
    // SAFETY: cellshm_loan_free's contract, which C keeps.
    unsafe { free_with(loan, drop) }
}

/// Waits up to `timeout_ms` for the next sample (0: only looks;
/// CELLSHM_TIMEOUT_FOREVER: until one comes or the subscription ends). On CELLSHM_OK
/// `*out_sample` is a sample owned by the caller, or NULL if none came in time. Any other
/// status is the end of the subscription, once what was queued has been read:
/// CELLSHM_UNAVAILABLE (the topic was closed), CELLSHM_PEER_DEAD (its publisher died),
/// CELLSHM_RESOURCE_EXHAUSTED (detached for lagging past its disconnect_after),
/// CELLSHM_PROTOCOL_ERROR; the message is in cellshm_last_error_message(). While the
/// caller holds the topic's `max_borrowed` samples, the next waits for one to be freed:
/// free them promptly.
///
/// # Safety
/// `subscriber` is live; `out_sample` writable.
#[no_mangle]
pub unsafe extern "C" fn cellshm_subscriber_next(
    subscriber: *const cellshm_subscriber,
    timeout_ms: u64,
    out_sample: *mut *mut cellshm_sample,
) -> cellshm_status {
    boundary("cellshm_subscriber_next", || {
        // SAFETY: cellshm_subscriber_next's contract, which C keeps.
        let (arg0, arg1) = unsafe { (Out::new(out_sample, "out_sample"), Handle::borrow(subscriber)) };
        let (out, subscriber) = (try_c!(arg0), try_c!(arg1));
        deliver_sample(subscriber.subscriber.recv(c_timeout(timeout_ms)), out)
    })
}

/// The newest sample queued, without waiting (the older ones it skips count in its
/// cellshm_sample_missed): on CELLSHM_OK `*out_sample` is a sample owned by the caller,
/// or NULL when nothing came since the last read. Other statuses as for
/// cellshm_subscriber_next. What a reader of a last-value topic calls whenever it wants
/// the current value.
///
/// # Safety
/// `subscriber` is live; `out_sample` writable.
#[no_mangle]
pub unsafe extern "C" fn cellshm_subscriber_latest(
    subscriber: *const cellshm_subscriber,
    out_sample: *mut *mut cellshm_sample,
) -> cellshm_status {
    boundary("cellshm_subscriber_latest", || {
        // SAFETY: cellshm_subscriber_latest's contract, which C keeps.
        let (arg0, arg1) = unsafe { (Out::new(out_sample, "out_sample"), Handle::borrow(subscriber)) };
        let (out, subscriber) = (try_c!(arg0), try_c!(arg1));
        deliver_sample(subscriber.subscriber.latest(), out)
    })
}

/// Waits up to `timeout_ms` until one of the `count` subscribers at `subscribers` is
/// ready (a read would find a sample or its subscription's end), in one wait on all of
/// them (no thread of its own). On CELLSHM_OK, `ready[i]` is 1 for each ready one and 0
/// for the others, and `*out_ready_count` (may be NULL) how many are: 0 if the timeout
/// passed. Take the ready ones' samples with cellshm_subscriber_next(.., 0, ..).
///
/// # Safety
/// `subscribers` has `count` live subscribers; `ready` has `count` writable bytes;
/// `out_ready_count` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn cellshm_subscribers_wait(
    subscribers: *const *const cellshm_subscriber,
    count: usize,
    timeout_ms: u64,
    ready: *mut u8,
    out_ready_count: *mut usize,
) -> cellshm_status {
    boundary("cellshm_subscribers_wait", || {
        // SAFETY: cellshm_subscribers_wait's contract, which C keeps: `count` pointers at
        // `subscribers`.
        let (list, out_count) =
            unsafe { (c_slice(subscribers, count, "subscribers"), Out::optional(out_ready_count, "out_ready_count")) };
        let list = try_c!(list);
        if count > 0 && ready.is_null() {
            return invalid(format!("ready is NULL but count is {count}"));
        }
        let mut set = cellshm::WaitSet::new();
        for (i, &subscriber) in list.iter().enumerate() {
            // SAFETY: each entry is a live subscriber, by the contract above.
            let subscriber =
                try_c!(unsafe { Handle::borrow(subscriber) }.map_err(|_| invalid(format!("subscribers[{i}] is NULL"))));
            set.add(&subscriber.subscriber);
        }
        let woken = set.wait(c_timeout(timeout_ms));
        if count > 0 {
            // SAFETY: `ready` is non-NULL (checked above) with `count` writable bytes, by
            // the contract above.
            let flags = unsafe { std::slice::from_raw_parts_mut(ready, count) };
            flags.fill(0);
            for &i in &woken {
                flags[i] = 1;
            }
        }
        out_count.map_or(CELLSHM_OK, |out| out.write(woken.len()))
    })
}

/// Samples the publisher could not queue for this subscriber so far (0 for NULL).
///
/// # Safety
/// `subscriber` is NULL or live.
#[no_mangle]
pub unsafe extern "C" fn cellshm_subscriber_dropped(subscriber: *const cellshm_subscriber) -> u64 {
    // SAFETY: cellshm_subscriber_dropped's contract, which C keeps.
    boundary_value(0, || unsafe { subscriber.as_ref() }.map_or(0, |s| s.subscriber.dropped()))
}

/// Unsubscribes and frees the subscriber. NULL is a no-op.
///
/// # Safety
/// `subscriber` is NULL or a subscriber not yet freed, and no thread uses it any more.
#[no_mangle]
pub unsafe extern "C" fn cellshm_subscriber_free(subscriber: *mut cellshm_subscriber) {
    // SAFETY: cellshm_subscriber_free's contract, which C keeps.
    unsafe { free_with(subscriber, drop) }
}

/// The sample's bytes, read in place; valid until the sample is freed (NULL for NULL).
/// Read them, do not keep pointers into them: the memory is the publisher's.
///
/// # Safety
/// `sample` is NULL or live.
#[no_mangle]
pub unsafe extern "C" fn cellshm_sample_data(sample: *const cellshm_sample) -> *const u8 {
    boundary_value(std::ptr::null(), || {
        // SAFETY: cellshm_sample_data's contract, which C keeps.
        unsafe { sample.as_ref() }.map_or(std::ptr::null(), |s| s.sample.bytes().as_ptr())
    })
}

/// The sample's length in bytes (0 for NULL).
///
/// # Safety
/// `sample` is NULL or live.
#[no_mangle]
pub unsafe extern "C" fn cellshm_sample_len(sample: *const cellshm_sample) -> usize {
    // SAFETY: cellshm_sample_len's contract, which C keeps.
    boundary_value(0, || unsafe { sample.as_ref() }.map_or(0, |s| s.sample.bytes().len()))
}

/// The sample's sequence number: 1 for the topic's first, one more for each after (0
/// for NULL).
///
/// # Safety
/// `sample` is NULL or live.
#[no_mangle]
pub unsafe extern "C" fn cellshm_sample_seq(sample: *const cellshm_sample) -> u64 {
    // SAFETY: cellshm_sample_seq's contract, which C keeps.
    boundary_value(0, || unsafe { sample.as_ref() }.map_or(0, |s| s.sample.seq()))
}

/// Samples this subscriber missed just before this one (its queue was full; 0 for NULL).
///
/// # Safety
/// `sample` is NULL or live.
#[no_mangle]
pub unsafe extern "C" fn cellshm_sample_missed(sample: *const cellshm_sample) -> u64 {
    // SAFETY: cellshm_sample_missed's contract, which C keeps.
    boundary_value(0, || unsafe { sample.as_ref() }.map_or(0, |s| s.sample.missed()))
}

/// Releases a sample: the publisher may use its slot again. NULL is a no-op.
///
/// # Safety
/// `sample` is NULL or a sample not yet freed; it must not be used afterwards.
#[no_mangle]
pub unsafe extern "C" fn cellshm_sample_free(sample: *mut cellshm_sample) {
    // SAFETY: cellshm_sample_free's contract, which C keeps.
    unsafe { free_with(sample, drop) }
}
