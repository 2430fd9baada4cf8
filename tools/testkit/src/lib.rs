//! cellshm's test kit: the cells and hosts its multi-process tests, chaos runs, the
//! cross-language matrix and the benchmark spawn. Not part of the shipped `cellshm`
//! binary; `cellshm-testkit` (src/main.rs) runs them.

pub mod raw;

use cellshm::{LinkEnd, Registry};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use cellshm::{CallOptions, Cell, Error, Status};

/// Joins as the test cell from the environment (`CELLSHM_DOORBELL_FD`) and serves
/// [`test_cell`]'s methods. Strict, like a clap program: any argument is an error, so
/// every test that spawns this cell proves the host left its argv alone.
pub fn run_test_cell(extra_args: &[String]) -> Result<(), Error> {
    if let Some(extra) = extra_args.first() {
        return Err(Error::new(Status::InvalidArgument, format!("the test cell takes no arguments, got {extra:?}")));
    }
    let mut options = cellshm::CellOptions::from_env()?;
    // A forged pid in `ready`, for the test proving the host ignores it.
    options.announced_pid = std::env::var("TEST_CELL_ANNOUNCED_PID").ok().and_then(|p| p.parse().ok());
    let cell = Cell::join(cellshm::JoinArgs::parse(std::iter::empty::<std::ffi::OsString>())?, options)?;
    test_cell(cell)
}

pub fn u32_at(bytes: &[u8], at: usize) -> Result<u32, Error> {
    bytes
        .get(at..at + 4)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .ok_or_else(|| Error::new(Status::InvalidArgument, format!("expected a u32 at byte {at}")))
}

/// The cell spawned by tests and benchmarks. Methods:
/// - `Echo.echo`: replies with the request, written in place.
/// - `Test.sleep`: sleeps u32 ms, replies empty.
/// - `Test.panic`: panics.
/// - `Test.fail`: returns status u32 with the rest of the payload as message.
/// - `Test.cancelled_at_deadline`: waits for cancellation (its deadline included), then
///   answers CANCELLED.
/// - `Test.cancel_seen_since`: waits (up to 5 s) until `Stream.forever` or
///   `Test.until_cancelled` saw a cancellation at or after u64 ns (CLOCK_MONOTONIC), and
///   replies when the last one was seen (u64 ns).
/// - `Test.sized`: replies with u32 bytes of a pattern.
/// - `Test.garbage`: pushes a garbage descriptor towards the host.
/// - `Test.call_host`: calls the host's `Host.echo` with the payload, replies with its answer.
/// - `Test.call_host_method`: u32 timeout ms, a method name ended by a NUL byte, then a
///   request: calls that host method with it, replies with its answer (or its error).
/// - `Test.log`: sends the payload as a log line.
/// - `Test.flood_logs`: sends u32 n log records from its thread; replies the longest send
///   in CPU time (u64 ns), the records dropped, n, the thread's voluntary context switches
///   meanwhile and the longest send in wall-clock time (u64 each).
/// - `Test.goodbye`: answers, then leaves on purpose (goodbye).
/// - `Test.trace`: emits `tracing` events (forwarded to the host through the log filter).
/// - `Test.exit`: exits the process at once with code u32.
/// - `Test.hang`: never returns (its thread stays blocked while the process lives).
/// - `Test.env`: replies with the value of the environment variable the payload names
///   (empty if unset).
pub fn test_cell(cell: Cell) -> Result<(), Error> {
    use tracing_subscriber::layer::SubscriberExt;
    let subscriber = tracing_subscriber::registry().with(cellshm::log::CellLayer::new(cell.log_sender()));
    let _ = tracing::subscriber::set_global_default(subscriber);
    cell.method("Test.trace", |_| {
        tracing::info!(target: "other", "info from other");
        tracing::warn!(target: "other", "warn from other");
        tracing::debug!(target: "mycell::db", "debug from mycell");
        tracing::trace!(target: "mycell::db", "trace from mycell");
        tracing::error!(target: "mycell", answer = 42, "error with a field");
        Ok(())
    })?;
    let cell = std::sync::Arc::new(cell);
    cell.method("Echo.echo", |call| {
        // Straight from the request's slot into the reply's, without a private copy.
        let request = call.request();
        call.reply_with(request.len(), |buf| {
            request.copy_to_slice(0, buf);
            request.len()
        })
    })?;
    cell.method("Test.sleep", |call| {
        std::thread::sleep(Duration::from_millis(u32_at(call.payload(), 0)? as u64));
        Ok(())
    })?;
    cell.method("Test.panic", |_| panic!("deliberate panic in Test.panic"))?;
    cell.method("Test.fail", |call| {
        // The status as given, also one this side does not know: it must arrive as is.
        let code = u32_at(call.payload(), 0)?;
        Err(Error::with_code(code, String::from_utf8_lossy(&call.payload()[4..]).into_owned()))
    })?;
    cell.method("Test.sized", |call| {
        let n = u32_at(call.payload(), 0)? as usize;
        call.reply_with(n, |buf| {
            for (i, b) in buf.iter_mut().enumerate() {
                *b = (i % 251) as u8;
            }
            n
        })
    })?;
    let weak = std::sync::Arc::downgrade(&cell);
    cell.method("Test.garbage", move |_| {
        let cell = weak.upgrade().ok_or_else(|| Error::new(Status::Unavailable, "cell gone"))?;
        let mut garbage = [0xA5u8; 64];
        let flags = cellshm::wire::frame::offset::FLAGS;
        garbage[flags..flags + 4].copy_from_slice(&0xFFFF_FFFFu32.to_le_bytes());
        cell.push_raw_descriptor_for_tests(garbage)
    })?;
    let weak = std::sync::Arc::downgrade(&cell);
    cell.method("Test.call_host", move |call| {
        let cell = weak.upgrade().ok_or_else(|| Error::new(Status::Unavailable, "cell gone"))?;
        let answer = cell.call("Host.echo", call.payload(), &CallOptions::timeout(Duration::from_secs(5)))?;
        call.reply(answer.bytes())
    })?;
    let weak = std::sync::Arc::downgrade(&cell);
    cell.method("Test.call_host_method", move |call| {
        let cell = weak.upgrade().ok_or_else(|| Error::new(Status::Unavailable, "cell gone"))?;
        let (timeout_ms, rest) = call.payload().split_at_checked(4).ok_or_else(|| short("Test.call_host_method"))?;
        let timeout = Duration::from_millis(u32::from_le_bytes(timeout_ms.try_into().expect("4 bytes")).into());
        let (method, request) = match rest.iter().position(|&b| b == 0) {
            Some(end) => {
                (std::str::from_utf8(&rest[..end]).map_err(|_| short("Test.call_host_method"))?, &rest[end + 1..])
            }
            None => return Err(short("Test.call_host_method")),
        };
        let answer = cell.call(method, request, &CallOptions::timeout(timeout))?;
        call.reply(answer.bytes())
    })?;
    let weak = std::sync::Arc::downgrade(&cell);
    cell.method("Test.goodbye", move |_| {
        // Answer first, then leave on purpose.
        let weak = weak.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            if let Some(cell) = weak.upgrade() {
                let _ = cell.goodbye();
            }
        });
        Ok(())
    })?;
    cell.method("Test.exit", |call| std::process::exit(u32_at(call.payload(), 0)? as i32))?;
    cell.method("Test.hang", |_| loop {
        std::thread::park();
    })?;
    cell.method("Test.env", |call| {
        let name = String::from_utf8_lossy(call.payload()).into_owned();
        call.reply(std::env::var(name).unwrap_or_default().as_bytes())
    })?;
    serve_test_streams(&cell)?;
    let weak = std::sync::Arc::downgrade(&cell);
    cell.stream_method("Stream.ignore_credit", move |call| {
        // A misbehaving cell: 100 inline DATA frames at once, ignoring the window.
        let cell = weak.upgrade().ok_or_else(|| Error::new(Status::Unavailable, "cell gone"))?;
        for i in 0..100u64 {
            let d = cellshm::wire::Descriptor {
                msg_id: 1 << 40 | i,
                channel_id: call.channel_id(),
                method_id: cellshm::method_id("Stream.ignore_credit"),
                flags: cellshm::wire::flags::DATA,
                slot: cellshm::wire::SLOT_INLINE,
                ..Default::default()
            };
            cell.push_raw_descriptor_for_tests(d.encode())?;
        }
        Ok(())
    })?;
    let weak = std::sync::Arc::downgrade(&cell);
    cell.method("Test.stream_from_host", move |call| {
        let cell = weak.upgrade().ok_or_else(|| Error::new(Status::Unavailable, "cell gone"))?;
        let stream =
            cell.open_stream("Host.countdown", call.payload(), &CallOptions::timeout(Duration::from_secs(5)))?;
        let mut got = Vec::new();
        for item in stream {
            got.extend_from_slice(item?.bytes());
        }
        call.reply(&got)
    })?;
    let weak = std::sync::Arc::downgrade(&cell);
    cell.method("Test.log", move |call| {
        let cell = weak.upgrade().ok_or_else(|| Error::new(Status::Unavailable, "cell gone"))?;
        cell.log(&String::from_utf8_lossy(call.payload()))
    })?;
    let weak = std::sync::Arc::downgrade(&cell);
    cell.method("Test.flood_logs", move |call| {
        // From this handler's thread, as an application thread would: n records, each
        // timed. A send that waited would have slept (a voluntary context switch) or spun
        // (CPU time); being preempted on a busy machine is neither. Replies u64 longest
        // send in CPU ns, u64 records dropped, u64 n, u64 sends that slept and took more
        // than 1 ms, u64 longest send in wall-clock ns.
        let cell = weak.upgrade().ok_or_else(|| Error::new(Status::Unavailable, "cell gone"))?;
        let n = u32_at(call.payload(), 0)?;
        let dropped_before = cell.log_records_dropped();
        let (mut longest_cpu, mut longest_wall) = (0u64, Duration::ZERO);
        let mut slept_long = 0u64;
        for i in 0..n {
            let (cpu, wall, switches) = (thread_cpu_ns(), std::time::Instant::now(), voluntary_context_switches());
            cell.log_event(cellshm::wire::log_level::INFO, "flood", &format!("record {i}"))?;
            let (took, slept) = (wall.elapsed(), voluntary_context_switches() > switches);
            if slept && took > Duration::from_millis(1) {
                slept_long += 1;
            }
            longest_cpu = longest_cpu.max(thread_cpu_ns() - cpu);
            longest_wall = longest_wall.max(took);
        }
        let dropped = cell.log_records_dropped() - dropped_before;
        let mut reply = Vec::new();
        for v in [longest_cpu, dropped, n as u64, slept_long, longest_wall.as_nanos() as u64] {
            reply.extend_from_slice(&v.to_le_bytes());
        }
        call.reply(&reply)
    })?;
    serve_topic_methods(&cell)?;
    if let Ok(topic) = std::env::var("TEST_CELL_PUBLISH") {
        publish_while_alive(&cell, topic);
    }
    // Kept for as long as the cell serves.
    let _runtime = match std::env::var("TEST_CELL_ASYNC").as_deref() {
        Ok("1") => Some(serve_async_methods(&cell)?),
        _ => None,
    };
    cell.run()
}

/// Publish/subscribe from the test cell (bodies in `cellshm::wire::BodyWriter` encoding):
/// - `Topic.read {str name} {u32 policy} {u32 n} {u32 count}`: subscribes and reads
///   `count` samples (each starts with its u64 number, 1, 2, ...: checked to match the
///   sample's sequence number), then answers u64 received, u64 missed, u64 last seq,
///   u32 the status that ended it early (0: none);
/// - `Topic.open {str name} {u32 sample size} {u32 depth}`: publishes the topic (kept
///   until `Topic.close`); `Topic.send {str name} {u32 count} {u32 size}`: publishes
///   `count` samples numbered from the topic's next sequence number; `Topic.close {str name}`;
/// - `Topic.echo {str ping} {str pong} {u32 count}`: subscribes to `ping` (Block, spinning)
///   and, unless `pong` is empty, publishes each of `count` samples back on `pong` (with
///   `pong` empty it only reads, yielding the CPU between polls).
fn serve_topic_methods(cell: &std::sync::Arc<Cell>) -> Result<(), Error> {
    use cellshm::wire::{BodyReader, BodyWriter};
    use cellshm::{Publisher, TopicOptions, TopicPolicy};
    use std::collections::HashMap;
    static PUBLISHERS: std::sync::Mutex<Option<HashMap<String, Publisher>>> = std::sync::Mutex::new(None);
    let bad = |m: String| Error::new(Status::InvalidArgument, m);
    let weak = std::sync::Arc::downgrade(cell);
    cell.method("Topic.read", move |call| {
        let cell = weak.upgrade().ok_or_else(|| Error::new(Status::Unavailable, "cell gone"))?;
        let mut r = BodyReader::new(call.payload());
        let (name, code, n, count) =
            (r.str().map_err(bad)?, r.u32().map_err(bad)?, r.u32().map_err(bad)?, r.u32().map_err(bad)?);
        let policy = TopicPolicy::from_code(code, n).ok_or_else(|| bad(format!("policy {code}")))?;
        let subscriber = cell.subscribe(&name, policy)?;
        let (mut received, mut missed, mut last, mut ended) = (0u64, 0u64, 0u64, 0u32);
        while received < count as u64 {
            match subscriber.recv(Duration::from_secs(30)) {
                Ok(Some(sample)) => {
                    // Read in place: the number, not a copy of the whole sample.
                    let bytes = sample.bytes();
                    let mut head = [0u8; 8];
                    let number = match bytes.len() >= 8 {
                        true => {
                            bytes.copy_to_slice(0, &mut head);
                            u64::from_le_bytes(head)
                        }
                        false => 0,
                    };
                    if number != sample.seq() {
                        return Err(Error::new(Status::DataLoss, format!("sample {} says {number}", sample.seq())));
                    }
                    received += 1;
                    missed += sample.missed();
                    last = sample.seq();
                }
                Ok(None) => return Err(Error::new(Status::DeadlineExceeded, "no sample in 30 s")),
                Err(e) => {
                    ended = e.status().code();
                    break;
                }
            }
        }
        call.reply(&BodyWriter::default().u64(received).u64(missed).u64(last).u32(ended).finish())
    })?;
    let weak = std::sync::Arc::downgrade(cell);
    cell.method("Topic.open", move |call| {
        let cell = weak.upgrade().ok_or_else(|| Error::new(Status::Unavailable, "cell gone"))?;
        let mut r = BodyReader::new(call.payload());
        let (name, sample_size, depth) = (r.str().map_err(bad)?, r.u32().map_err(bad)?, r.u32().map_err(bad)?);
        let options = TopicOptions { sample_size, depth, ..TopicOptions::default() };
        let publisher = cell.publish(&name, options)?;
        PUBLISHERS.lock().expect("publishers").get_or_insert_with(HashMap::new).insert(name, publisher);
        Ok(())
    })?;
    cell.method("Topic.send", move |call| {
        let mut r = BodyReader::new(call.payload());
        let (name, count, size) = (r.str().map_err(bad)?, r.u32().map_err(bad)?, r.u32().map_err(bad)?);
        let publisher = PUBLISHERS.lock().expect("publishers").as_ref().and_then(|p| p.get(&name).cloned());
        let publisher = publisher.ok_or_else(|| Error::new(Status::NotFound, format!("no topic {name:?} here")))?;
        let len = (size as usize).max(8);
        for _ in 0..count {
            let mut loan = publisher.loan(Duration::from_secs(30))?;
            let seq = loan.seq();
            loan.bytes_mut()[..8].copy_from_slice(&seq.to_le_bytes());
            loan.publish(len)?;
        }
        Ok(())
    })?;
    let weak = std::sync::Arc::downgrade(cell);
    cell.method("Topic.echo", move |call| {
        let cell = weak.upgrade().ok_or_else(|| Error::new(Status::Unavailable, "cell gone"))?;
        let mut r = BodyReader::new(call.payload());
        let (ping, pong, count) = (r.str().map_err(bad)?, r.str().map_err(bad)?, r.u32().map_err(bad)?);
        let subscriber = cell.subscribe(&ping, TopicPolicy::Block)?;
        subscriber.set_wait(cellshm::WaitStrategy::Spin);
        let answer = if pong.is_empty() {
            None
        } else {
            Some(cell.publish(&pong, TopicOptions { sample_size: 64, depth: 16, ..TopicOptions::default() })?)
        };
        // Ready: the host starts once it sees this cell's subscription (and topic).
        for _ in 0..count {
            let sample = if answer.is_some() {
                subscriber.recv(Duration::from_secs(30))?
            } else {
                // A reader that only reads polls and yields between polls: on a machine
                // with fewer cores than spinners, the one that answers gets a core.
                let deadline = std::time::Instant::now() + Duration::from_secs(30);
                loop {
                    match subscriber.try_recv()? {
                        Some(sample) => break Some(sample),
                        None if std::time::Instant::now() > deadline => break None,
                        None => std::thread::yield_now(),
                    }
                }
            };
            let sample = sample.ok_or_else(|| Error::new(Status::DeadlineExceeded, "no ping"))?;
            if let Some(answer) = &answer {
                let mut loan = answer.loan(Duration::from_secs(30))?;
                sample.bytes().copy_to_slice(0, &mut loan.bytes_mut()[..sample.bytes().len()]);
                let len = sample.bytes().len();
                drop(sample);
                loan.publish(len)?;
            }
        }
        Ok(())
    })?;
    let weak = std::sync::Arc::downgrade(cell);
    cell.method("Topic.lie", move |call| {
        let cell = weak.upgrade().ok_or_else(|| Error::new(Status::Unavailable, "cell gone"))?;
        let mut r = BodyReader::new(call.payload());
        let (name, how) = (r.str().map_err(bad)?, r.u32().map_err(bad)?);
        hostile_subscriber(&cell, &name, how)
            .and_then(|(ended, writable)| call.reply(&BodyWriter::default().u32(ended).u32(writable).finish()))
    })?;
    cell.method("Topic.close", move |call| {
        let name = BodyReader::new(call.payload()).str().map_err(bad)?;
        PUBLISHERS.lock().expect("publishers").as_mut().and_then(|p| p.remove(&name));
        Ok(())
    })?;
    Ok(())
}

/// With `TEST_CELL_PUBLISH=NAME`, the cell publishes topic NAME from the start (64-byte
/// samples that begin with their sequence number, one every millisecond) for as long as
/// it lives: what a supervised publisher that is relaunched does again each time.
fn publish_while_alive(cell: &std::sync::Arc<Cell>, topic: String) {
    let weak = std::sync::Arc::downgrade(cell);
    std::thread::spawn(move || {
        let publisher = loop {
            let Some(cell) = weak.upgrade() else { return };
            match cell.publish(&topic, cellshm::TopicOptions { sample_size: 64, ..Default::default() }) {
                Ok(publisher) => break publisher,
                Err(_) => std::thread::sleep(Duration::from_millis(5)),
            }
        };
        while weak.strong_count() > 0 {
            let Ok(mut loan) = publisher.loan(Duration::from_secs(1)) else { continue };
            let seq = loan.seq();
            loan.bytes_mut()[..8].copy_from_slice(&seq.to_le_bytes());
            let _ = loan.publish(64);
            std::thread::sleep(Duration::from_millis(1));
        }
    });
}

/// A subscriber that lies, for the hostile-subscriber tests: subscribes to `name`
/// (drop-oldest), reads two samples and keeps them (never releases them), then, as `how`
/// says, forges its read position far ahead (1), fills its whole subscription memory with
/// garbage (2), or names sixteen samples it does not hold and lets go of one twice (3);
/// then tries to make the topic's memory writable, and reads on until its subscription ends or
/// nothing comes for 3 s. Answers (the status that ended it or 0; 0 if the topic's
/// memory could not be written, 1 if it could, 2 if there was no mapping to try).
fn hostile_subscriber(cell: &Cell, name: &str, how: u32) -> Result<(u32, u32), Error> {
    use cellshm::TopicPolicy;
    let subscriber = cell.subscribe(name, TopicPolicy::DropOldest)?;
    let kept: Vec<cellshm::Sample> = (0..2)
        .map(|_| {
            subscriber.recv(Duration::from_secs(30))?.ok_or_else(|| Error::new(Status::DeadlineExceeded, "no sample"))
        })
        .collect::<Result<_, _>>()?;
    let own = mapping("cellshm-subscription", "rw-s")
        .ok_or_else(|| Error::new(Status::NotFound, "no writable subscription mapping"))?;
    let word = |offset: usize| own.0 + offset;
    // SAFETY: these are this process's own subscription pages, mapped read-write and
    // shared for its whole life (the subscriber above keeps them): writing them is what a
    // hostile subscriber can do, and the library must survive it.
    unsafe {
        match how {
            1 => std::ptr::write_volatile(word(64) as *mut u64, u64::MAX / 2),
            2 => {
                let mut x = 0x9e3779b97f4a7c15u64;
                for offset in (0..own.1).step_by(8) {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    std::ptr::write_volatile(word(offset) as *mut u64, x);
                }
            }
            _ => {
                for k in 0..16 {
                    std::ptr::write_volatile(word(128 + 8 * k) as *mut u64, 1 + k as u64);
                }
                std::ptr::write_volatile(word(128) as *mut u64, 0);
                std::ptr::write_volatile(word(128) as *mut u64, 0);
            }
        }
    }
    let writable = match topic_memory_writable(name) {
        Some(writable) => u32::from(writable),
        None => 2,
    };
    let mut ended = 0;
    loop {
        match subscriber.recv(Duration::from_secs(3)) {
            Ok(Some(sample)) => drop(sample),
            Ok(None) => break,
            Err(e) => {
                ended = e.status().code();
                break;
            }
        }
    }
    drop(kept);
    Ok((ended, writable))
}

/// (start, length) of this process's last mapping whose path contains `what`, with
/// permissions `perms` (as /proc/self/maps writes them).
fn mapping(what: &str, perms: &str) -> Option<(usize, usize)> {
    let maps = std::fs::read_to_string("/proc/self/maps").ok()?;
    maps.lines().rfind(|l| l.contains(what) && l.split_whitespace().nth(1) == Some(perms)).and_then(|l| {
        let (start, end) = l.split_whitespace().next()?.split_once('-')?;
        let (start, end) = (usize::from_str_radix(start, 16).ok()?, usize::from_str_radix(end, 16).ok()?);
        Some((start, end - start))
    })
}

/// Tries to make this process's mapping of topic `name`'s memory writable (the attack
/// `raw::attack_host_memory` makes on the host's memory; the subscriber keeps no
/// descriptor of the topic to try the others with). True if it worked; None if the
/// process has no mapping of it.
fn topic_memory_writable(name: &str) -> Option<bool> {
    let (start, len) = mapping(&format!("cellshm-topic-{name}"), "r--s")?;
    Some(raw::mprotect_writable(start as *mut libc::c_void, len) == 0)
}

/// `Async.relay` handlers sleeping now, and the most there ever were at once.
static RELAYS_IN_FLIGHT: AtomicU64 = AtomicU64::new(0);
static MOST_RELAYS_IN_FLIGHT: AtomicU64 = AtomicU64::new(0);

/// With `TEST_CELL_ASYNC=1`, async handlers on a two-thread tokio runtime:
/// - `Async.relay {ms} {bytes}`: sleeps ms on the runtime's timer, then calls the host's
///   `Host.relay` with the bytes and replies its answer;
/// - `Async.most_in_flight`: the most `Async.relay` handlers asleep at once (u64);
/// - `Async.until_cancelled`: waits for its cancel (or deadline), records it, answers
///   CANCELLED (or DEADLINE_EXCEEDED);
/// - `AsyncStream.count {n} {size}`, `AsyncStream.sum`, `AsyncStream.echo`: as their
///   blocking `Stream.*` twins.
fn serve_async_methods(cell: &std::sync::Arc<Cell>) -> Result<tokio::runtime::Runtime, Error> {
    use cellshm::MethodKind;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("test-cell-rt")
        .enable_time()
        .build()
        .map_err(|e| Error::system("starting the test cell's runtime", e))?;
    cell.spawn_handlers_on(runtime.handle().clone());
    let weak = std::sync::Arc::downgrade(cell);
    cell.method_async("Async.relay", move |call| {
        let weak = weak.clone();
        async move {
            let ms = u32_at(call.payload(), 0)?;
            let now = RELAYS_IN_FLIGHT.fetch_add(1, Ordering::SeqCst) + 1;
            MOST_RELAYS_IN_FLIGHT.fetch_max(now, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(ms as u64)).await;
            RELAYS_IN_FLIGHT.fetch_sub(1, Ordering::SeqCst);
            let cell = weak.upgrade().ok_or_else(|| Error::new(Status::Unavailable, "cell gone"))?;
            let answer = cell.call_async("Host.relay", &call.payload()[4..], &call.onward()).await?;
            Ok(answer.to_vec())
        }
    })?;
    cell.method("Async.most_in_flight", |call| {
        call.reply(&MOST_RELAYS_IN_FLIGHT.load(Ordering::SeqCst).to_le_bytes())
    })?;
    cell.method_async("Async.until_cancelled", |call| async move {
        call.cancelled().await;
        saw_cancel();
        if call.remaining() == Some(Duration::ZERO) {
            return Err::<Vec<u8>, _>(Error::new(Status::DeadlineExceeded, "the caller's deadline passed"));
        }
        Err(Error::new(Status::Cancelled, "the caller cancelled"))
    })?;
    cell.stream_method_async("AsyncStream.count", MethodKind::ServerStreaming, |call| async move {
        let n = u32_at(call.request(), 0)?;
        let size = (u32_at(call.request(), 4)? as usize).max(4);
        let mut item = vec![0u8; size];
        for i in 0..n {
            item[..4].copy_from_slice(&i.to_le_bytes());
            call.send(&item).await?;
        }
        Ok(Vec::new())
    })?;
    cell.stream_method_async("AsyncStream.sum", MethodKind::ClientStreaming, |call| async move {
        let (mut total, mut hash) = (0u64, 0xcbf2_9ce4_8422_2325u64);
        while let Some(item) = call.recv().await? {
            total += item.bytes().len() as u64;
            hash = fnv1a(hash, item.bytes());
        }
        let mut answer = total.to_le_bytes().to_vec();
        answer.extend_from_slice(&hash.to_le_bytes());
        Ok(answer)
    })?;
    cell.stream_method_async("AsyncStream.echo", MethodKind::Bidi, |call| async move {
        while let Some(item) = call.recv().await? {
            let bytes = item.to_vec();
            drop(item);
            call.send(&bytes).await?;
        }
        Ok(Vec::new())
    })?;
    Ok(runtime)
}

/// CPU time of the calling thread, in ns.
fn thread_cpu_ns() -> u64 {
    let mut now = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `now` is a valid timespec to write.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut now) };
    now.tv_sec as u64 * 1_000_000_000 + now.tv_nsec as u64
}

/// Times the calling thread gave up the CPU to wait for something.
fn voluntary_context_switches() -> u64 {
    // SAFETY: an all-zero rusage is valid; getrusage writes it.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `usage` is a valid rusage to write.
    unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut usage) };
    usage.ru_nvcsw as u64
}

/// When `Stream.forever` or `Test.until_cancelled` last saw a cancellation (CLOCK_MONOTONIC
/// ns), so a test can measure how long a cancellation takes to reach the handler;
/// `Test.cancel_seen_since` waits on the condvar for it to pass a time.
static LAST_CANCEL_SEEN_NS: parking_lot::Mutex<u64> = parking_lot::const_mutex(0);
static CANCEL_SEEN: parking_lot::Condvar = parking_lot::Condvar::new();

/// A handler saw its call cancelled: recorded, and whoever waits for it is woken.
fn saw_cancel() {
    *LAST_CANCEL_SEEN_NS.lock() = cellshm::monotonic_now_ns();
    CANCEL_SEEN.notify_all();
}

/// FNV-1a over a stream of items: what `Stream.sum` answers, and what callers check.
pub fn fnv1a(mut hash: u64, bytes: &[u8]) -> u64 {
    for b in bytes {
        hash = (hash ^ *b as u64).wrapping_mul(0x100_0000_01b3);
    }
    hash
}

/// The stream methods of the test cell:
/// - `Stream.count {n, size, sleep_ms}`: n items of `size` bytes, each starting with its index
///   (the rest is not written);
/// - `Stream.fail_after {n}`: n items, then ABORTED;
/// - `Stream.fail_with {status}`: ends at once with that status number;
/// - `Stream.forever {size}`: items until cancelled; records when it saw the cancel;
/// - `Stream.sum`: reads every item, answers {bytes: u64, fnv1a: u64};
/// - `Stream.echo`: sends every item it receives back.
fn serve_test_streams(cell: &Cell) -> Result<(), Error> {
    cell.stream_method("Stream.count", |call| {
        let n = u32_at(call.request(), 0)?;
        let size = (u32_at(call.request(), 4)? as usize).max(4);
        let sleep = Duration::from_millis(u32_at(call.request(), 8).unwrap_or(0) as u64);
        for i in 0..n {
            // Only the index is written: the tests check order and length, and the
            // large-chunk ones measure flow control, not how fast we fill memory.
            call.send_with(size, |buf| {
                buf[..4].copy_from_slice(&i.to_le_bytes());
                size
            })?;
            if !sleep.is_zero() {
                std::thread::sleep(sleep);
            }
        }
        Ok(())
    })?;
    cell.stream_method("Stream.fill", |call| {
        // The benchmark's producer: every byte of every chunk written in place.
        let n = u32_at(call.request(), 0)?;
        let size = u32_at(call.request(), 4)? as usize;
        for i in 0..n {
            call.send_with(size, |buf| {
                buf.fill(i as u8);
                size
            })?;
        }
        Ok(())
    })?;
    cell.stream_method("Stream.fail_after", |call| {
        let n = u32_at(call.request(), 0)?;
        for i in 0..n {
            call.send(&i.to_le_bytes())?;
        }
        Err(Error::new(Status::Aborted, format!("gave up after {n} items")))
    })?;
    cell.stream_method("Stream.fail_with", |call| {
        // Ends with the status given, whatever it is (link-local ones included).
        Err(Error::with_code(u32_at(call.request(), 0)?, "as asked"))
    })?;
    cell.stream_method("Stream.forever", |call| {
        let size = u32_at(call.request(), 0)? as usize;
        loop {
            if let Err(e) = call.send_with(size, |buf| buf.len()) {
                if call.is_cancelled() {
                    saw_cancel();
                }
                return Err(e);
            }
        }
    })?;
    cell.method("Test.until_cancelled", |call| {
        if call.wait_cancelled(Duration::from_secs(10)) {
            saw_cancel();
            if call.remaining() == Some(Duration::ZERO) {
                return Err(Error::new(Status::DeadlineExceeded, "the caller's deadline passed"));
            }
            return Err(Error::new(Status::Cancelled, "the caller cancelled"));
        }
        Ok(())
    })?;
    // Answers CANCELLED as soon as it sees the call cancelled, also when that is only
    // its deadline passing: the library must turn that into DEADLINE_EXCEEDED.
    cell.method("Test.cancelled_at_deadline", |call| {
        call.wait_cancelled(Duration::from_secs(10));
        Err(Error::new(Status::Cancelled, "stopped: the call was cancelled"))
    })?;
    cell.method("Test.cancel_seen_since", |call| {
        let bytes: [u8; 8] =
            call.payload().try_into().map_err(|_| Error::new(Status::InvalidArgument, "expected a u64"))?;
        let since = u64::from_le_bytes(bytes);
        let give_up = std::time::Instant::now() + Duration::from_secs(5);
        let mut seen = LAST_CANCEL_SEEN_NS.lock();
        while *seen < since && !CANCEL_SEEN.wait_until(&mut seen, give_up).timed_out() {}
        call.reply(&seen.to_le_bytes())
    })?;
    cell.stream_method("Stream.sum", |call| {
        let (mut total, mut hash) = (0u64, 0xcbf2_9ce4_8422_2325u64);
        while let Some(item) = call.recv()? {
            total += item.bytes().len() as u64;
            hash = fnv1a(hash, item.bytes());
        }
        let mut answer = total.to_le_bytes().to_vec();
        answer.extend_from_slice(&hash.to_le_bytes());
        call.set_response(&answer);
        Ok(())
    })?;
    cell.stream_method("Stream.echo", |call| {
        while let Some(item) = call.recv()? {
            let bytes = item.bytes();
            call.send_with(bytes.len(), |buf| {
                buf.copy_from_slice(bytes);
                bytes.len()
            })?;
        }
        Ok(())
    })?;
    Ok(())
}

/// INVALID_ARGUMENT for a request to `method` that is not as its description says.
fn short(method: &str) -> Error {
    Error::new(Status::InvalidArgument, format!("{method}: the request is not as documented"))
}
