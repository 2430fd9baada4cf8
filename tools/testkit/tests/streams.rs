//! Streams between a real host (this test process) and a real cell (`cellshm-testkit cell`):
//! server streaming, client streaming, both at once, errors, cancellation, deadlines
//! and flow control, over real shared memory.

use cellshm::{LinkEnd, Registry};
use std::process::Command;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use cellshm::monotonic_now_ns;
use cellshm::{CallOptions, Hub, HubConfig, PeerOptions, SlotClass, Status, STREAM_WINDOW};

mod common;
use common::{cancel_seen_after, secs, spawn_cell_on, start as start_with, RunDelay, Running, CELL};

/// The CPU-heavy tests run one at a time: on a 2-core machine, the 256 MiB transfer
/// would otherwise decide the unary latency the 8-stream test checks.
static HEAVY: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn start(config: HubConfig) -> Running {
    start_with(config, &[])
}

fn words(values: &[u32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

fn fnv1a(mut hash: u64, bytes: &[u8]) -> u64 {
    for b in bytes {
        hash = (hash ^ *b as u64).wrapping_mul(0x100_0000_01b3);
    }
    hash
}

#[test]
fn ten_thousand_items_arrive_in_order_and_the_stream_ends_ok() {
    let r = start(HubConfig::default());
    let stream = r.peer.open_stream("Stream.count", &words(&[10_000, 64]), &secs(30)).unwrap();
    let mut expected = 0u32;
    for item in stream {
        let item = item.unwrap();
        assert_eq!(item.bytes().len(), 64);
        assert_eq!(u32::from_le_bytes(item.bytes()[..4].try_into().unwrap()), expected);
        expected += 1;
    }
    assert_eq!(expected, 10_000);
    // Every slot came back: nothing is held by the finished stream.
    assert_eq!(r.peer.call("Echo.echo", b"still serving", &secs(5)).unwrap().bytes(), b"still serving");
    assert_eq!(r.peer.held_slots().unwrap(), 0);
}

#[test]
fn a_stream_that_fails_delivers_its_items_then_the_error() {
    let r = start(HubConfig::default());
    let stream = r.peer.open_stream("Stream.fail_after", &words(&[5]), &secs(10)).unwrap();
    for i in 0..5u32 {
        let item = stream.recv().unwrap().expect("an item before the error");
        assert_eq!(item.bytes(), i.to_le_bytes());
    }
    let e = stream.recv().unwrap_err();
    assert_eq!(e.status(), Status::Aborted);
    assert!(e.message().contains("gave up after 5 items"), "{e}");
}

#[test]
fn a_stream_handler_cannot_end_with_a_link_local_status_and_unknown_ones_arrive_as_sent() {
    let r = start(HubConfig::default());
    for status in [Status::PeerDead, Status::SessionClosed, Status::ProtocolError] {
        let stream = r.peer.open_stream("Stream.fail_with", &words(&[status.code()]), &secs(5)).unwrap();
        let e = stream.recv().unwrap_err();
        assert_eq!(e.status(), Status::Internal, "{e}");
        assert!(e.message().contains(status.name()) && e.message().contains("as asked"), "{e}");
    }
    let stream = r.peer.open_stream("Stream.fail_with", &words(&[142]), &secs(5)).unwrap();
    let e = stream.recv().unwrap_err();
    assert_eq!((e.status(), e.code()), (Status::Unknown, 142), "{e}");
    assert_eq!(r.peer.state(), cellshm::PeerState::Ready, "the peer is alive whatever its handler said");
}

#[test]
fn unknown_stream_methods_and_unary_names_are_refused() {
    let r = start(HubConfig::default());
    let stream = r.peer.open_stream("Stream.nope", b"", &secs(5)).unwrap();
    assert_eq!(stream.recv().unwrap_err().status(), Status::Unimplemented);
    // A unary method is not a stream method.
    let stream = r.peer.open_stream("Echo.echo", b"", &secs(5)).unwrap();
    assert_eq!(stream.recv().unwrap_err().status(), Status::Unimplemented);
}

#[test]
fn cancelling_reaches_the_handler_within_10_ms_and_returns_every_slot() {
    let r = start(HubConfig::default());
    let stream = r.peer.open_stream("Stream.forever", &words(&[4096]), &secs(30)).unwrap();
    for _ in 0..100 {
        stream.recv().unwrap().unwrap();
    }
    let delay = RunDelay::this_thread_and_links().and_process(r.child.id());
    let cancelled_at = monotonic_now_ns();
    stream.cancel();
    let latency = cancel_seen_after(&r.peer, cancelled_at);
    // 10 ms, and what the scheduler made both sides wait for a CPU meanwhile.
    let scheduler = delay.so_far();
    assert!(
        latency < Duration::from_millis(10) + scheduler,
        "cancellation took {latency:?} ({scheduler:?} waiting for a CPU)"
    );
    // Late items were dropped by the host and their slots returned to the cell.
    let deadline = Instant::now() + Duration::from_secs(5);
    while r.peer.held_slots().unwrap() != 0 && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(r.peer.held_slots().unwrap(), 0);
    drop(stream);
    // The peer still serves.
    assert_eq!(r.peer.call("Echo.echo", b"after", &secs(5)).unwrap().bytes(), b"after");
}

#[test]
fn a_cancelled_unary_call_reaches_its_handler_within_10_ms() {
    let r = start(HubConfig::default());
    let pending = r.peer.call_start("Test.until_cancelled", b"", &secs(30), Box::new(|| {})).unwrap();
    thread::sleep(Duration::from_millis(50));
    assert!(!pending.is_done());
    let delay = RunDelay::this_thread_and_links().and_process(r.child.id());
    let cancelled_at = monotonic_now_ns();
    assert!(pending.cancel());
    let latency = cancel_seen_after(&r.peer, cancelled_at);
    let scheduler = delay.so_far();
    assert!(
        latency < Duration::from_millis(10) + scheduler,
        "cancellation took {latency:?} ({scheduler:?} waiting for a CPU)"
    );
    // Dropping an outstanding call cancels it the same way.
    let pending = r.peer.call_start("Test.until_cancelled", b"", &secs(30), Box::new(|| {})).unwrap();
    thread::sleep(Duration::from_millis(20));
    let dropped_at = monotonic_now_ns();
    drop(pending);
    cancel_seen_after(&r.peer, dropped_at);
    // A deadline cancels too: the handler stops at the deadline, the caller gets
    // DEADLINE_EXCEEDED.
    let e = r.peer.call("Test.until_cancelled", b"", &CallOptions::timeout(Duration::from_millis(30))).unwrap_err();
    assert_eq!(e.status(), Status::DeadlineExceeded);
    assert_eq!(r.peer.call("Echo.echo", b"fine", &secs(5)).unwrap().bytes(), b"fine");
}

#[test]
fn dropping_an_unfinished_stream_cancels_it() {
    let r = start(HubConfig::default());
    let stream = r.peer.open_stream("Stream.forever", &words(&[64]), &secs(30)).unwrap();
    stream.recv().unwrap().unwrap();
    let dropped_at = monotonic_now_ns();
    drop(stream);
    cancel_seen_after(&r.peer, dropped_at);
}

#[test]
fn a_deadline_mid_stream_ends_it_with_deadline_exceeded_on_both_sides() {
    let r = start(HubConfig::default());
    // 100 items, 10 ms apart, but only 150 ms to do it.
    let opts = CallOptions::timeout(Duration::from_millis(150));
    let started = Instant::now();
    let stream = r.peer.open_stream("Stream.count", &words(&[100, 16, 10]), &opts).unwrap();
    let mut got = 0;
    let e = loop {
        match stream.recv() {
            Ok(Some(_)) => got += 1,
            Ok(None) => panic!("the stream finished inside its deadline"),
            Err(e) => break e,
        }
    };
    assert_eq!(e.status(), Status::DeadlineExceeded, "{e}");
    assert!(got > 3 && got < 100, "{got} items before the deadline");
    assert!(started.elapsed() < Duration::from_secs(1), "took {:?}", started.elapsed());
    assert_eq!(r.peer.call("Echo.echo", b"ok", &secs(5)).unwrap().bytes(), b"ok");
}

#[test]
fn a_256_mib_client_stream_arrives_intact() {
    let _heavy = HEAVY.lock().unwrap_or_else(|e| e.into_inner());
    let r = start(HubConfig::default());
    let stream = r.peer.open_stream("Stream.sum", b"", &secs(120)).unwrap();
    let chunk = 64 << 10;
    let (mut hash, mut sent) = (0xcbf2_9ce4_8422_2325u64, 0u64);
    for i in 0..(256usize << 20) / chunk {
        stream
            .send_with(chunk, |buf| {
                for (k, b) in buf.iter_mut().enumerate() {
                    *b = (k.wrapping_mul(7) ^ i) as u8;
                }
                hash = fnv1a(hash, buf);
                chunk
            })
            .unwrap();
        sent += chunk as u64;
    }
    let answer = stream.finish().unwrap();
    let bytes = answer.bytes();
    assert_eq!(u64::from_le_bytes(bytes[..8].try_into().unwrap()), sent);
    assert_eq!(u64::from_le_bytes(bytes[8..16].try_into().unwrap()), hash);
}

#[test]
fn bidirectional_echo_interleaves_sends_and_receives() {
    let r = start(HubConfig::default());
    let stream = r.peer.open_stream("Stream.echo", b"", &secs(30)).unwrap();
    // More items than the window, one at a time, then a burst of a full window.
    for i in 0..100u32 {
        let item = words(&[i, i * 3]);
        stream.send(&item).unwrap();
        assert_eq!(stream.recv().unwrap().unwrap().bytes(), item);
    }
    for i in 0..STREAM_WINDOW {
        stream.send(&vec![i as u8; 1000]).unwrap();
    }
    for i in 0..STREAM_WINDOW {
        assert_eq!(stream.recv().unwrap().unwrap().bytes(), vec![i as u8; 1000]);
    }
    stream.close_send().unwrap();
    assert!(stream.recv().unwrap().is_none());
}

#[test]
fn eight_streams_of_256_kib_chunks_and_a_slow_consumer_do_not_starve_unary_calls() {
    let _heavy = HEAVY.lock().unwrap_or_else(|e| e.into_inner());
    let config = HubConfig {
        slot_classes: vec![
            SlotClass { slot_size: 256, slot_count: 256 },
            SlotClass { slot_size: 4 << 10, slot_count: 64 },
            // Room for every stream's window and the unary calls besides.
            SlotClass { slot_size: 256 << 10, slot_count: 8 * STREAM_WINDOW + 8 },
        ],
        ..HubConfig::default()
    };
    let r = Arc::new(start(config));
    let streams: Vec<_> = (0..8)
        .map(|s| {
            let r = r.clone();
            thread::spawn(move || -> Result<u32, cellshm::Error> {
                let stream = r.peer.open_stream("Stream.count", &words(&[300, 256 << 10]), &secs(120))?;
                let mut n = 0u32;
                for item in stream {
                    let item = item?;
                    assert_eq!(item.bytes().len(), 256 << 10);
                    assert_eq!(u32::from_le_bytes(item.bytes()[..4].try_into().unwrap()), n);
                    n += 1;
                    if s == 0 {
                        // The slow consumer: holds each item a while before releasing it.
                        thread::sleep(Duration::from_millis(2));
                    }
                }
                Ok(n)
            })
        })
        .collect();
    // Each call's time beyond what the scheduler explains (both sides' threads waiting
    // for a CPU): a unary call queued behind bulk stream data waits for the data, not
    // for a CPU.
    let mut latencies = Vec::new();
    let cell = r.child.id();
    while !streams.iter().all(|s| s.is_finished()) {
        let (started, delay) = (Instant::now(), RunDelay::this_thread_and_links().and_process(cell));
        r.peer.call("Echo.echo", &[7u8; 64], &secs(5)).unwrap();
        latencies.push(started.elapsed().saturating_sub(delay.so_far()));
        thread::sleep(Duration::from_millis(1));
    }
    for s in streams {
        // No stream failed (in particular none with RESOURCE_EXHAUSTED).
        assert_eq!(s.join().unwrap().unwrap(), 300);
    }
    latencies.sort();
    assert!(latencies.len() >= 20, "only {} unary calls ran", latencies.len());
    let p99 = latencies[latencies.len() * 99 / 100];
    eprintln!(
        "unary while streaming: {} calls, p50 {:?}, p99 {p99:?}",
        latencies.len(),
        latencies[latencies.len() / 2]
    );
    assert!(
        p99 < Duration::from_millis(10),
        "unary p99 {p99:?} beyond waiting for a CPU, while streaming ({} calls)",
        latencies.len()
    );
    let _ = &r.hub;
}

#[test]
fn a_killed_cell_ends_the_hosts_stream_with_peer_dead() {
    let r = start(HubConfig::default());
    let stream = r.peer.open_stream("Stream.forever", &words(&[64]), &secs(30)).unwrap();
    stream.recv().unwrap().unwrap();
    let mut child = Command::new("kill").arg("-9").arg(r.child.id().to_string()).spawn().unwrap();
    child.wait().unwrap();
    let started = Instant::now();
    let e = loop {
        match stream.recv() {
            Ok(_) => continue,
            Err(e) => break e,
        }
    };
    assert_eq!(e.status(), Status::PeerDead, "{e}");
    assert!(started.elapsed() < Duration::from_secs(2), "took {:?}", started.elapsed());
}

#[test]
fn a_cell_opens_a_stream_to_the_host() {
    let hub = Hub::create(HubConfig::default()).unwrap();
    hub.stream_method("Host.countdown", |call| {
        let n = u32::from_le_bytes(call.request()[..4].try_into().unwrap());
        for i in (0..n).rev() {
            call.send(&i.to_le_bytes())?;
        }
        Ok(())
    })
    .unwrap();
    let ticket = hub.add_peer("streamer", PeerOptions::default()).unwrap();
    let mut cmd = Command::new(CELL);
    cmd.arg("cell").env("CELLSHM_QUIET", "1");
    let (peer, child) = ticket.spawn(&mut cmd).unwrap();
    let r = Running { hub, peer, child };
    r.peer.wait_ready(Duration::from_secs(10)).unwrap();
    // The cell opens `Host.countdown` with {n} and answers the items it got, in order.
    let reply = r.peer.call("Test.stream_from_host", &words(&[50]), &secs(10)).unwrap();
    let expected: Vec<u8> = (0..50u32).rev().flat_map(|i| i.to_le_bytes()).collect();
    assert_eq!(reply.bytes(), expected);
}

#[test]
fn holding_a_whole_window_of_items_is_a_clear_error_not_a_hang() {
    let r = start(HubConfig::default());
    let stream = r.peer.open_stream("Stream.count", &words(&[100, 64]), &secs(30)).unwrap();
    // Holding 5 items (more than the credit batch) and asking for more still works.
    let mut held: Vec<_> = (0..5).map(|_| stream.recv().unwrap().unwrap()).collect();
    held.extend((0..3).map(|_| stream.recv().unwrap().unwrap()));
    let started = Instant::now();
    let e = stream.recv().unwrap_err();
    assert_eq!(e.status(), Status::FailedPrecondition);
    assert!(e.message().contains("holds all"), "{e}");
    assert!(started.elapsed() < Duration::from_secs(1));
    // Dropping them lets the stream go on to its end.
    drop(held);
    let rest = stream.count();
    assert_eq!(rest, 100 - STREAM_WINDOW as usize);
}

#[test]
fn a_cell_that_ignores_credit_is_dropped_with_protocol_error_and_the_hub_goes_on() {
    let r = start(HubConfig::default());
    let stream = r.peer.open_stream("Stream.ignore_credit", b"", &secs(10)).unwrap();
    // Read nothing yet: were we to release items (and grant credit) as fast as they
    // come, the flood might stay within the window.
    thread::sleep(Duration::from_millis(300));
    let e = loop {
        match stream.recv() {
            Ok(Some(_)) => continue,
            Ok(None) => panic!("the stream ended normally"),
            Err(e) => break e,
        }
    };
    assert_eq!(e.status(), Status::ProtocolError, "{e}");
    assert!(e.message().contains("beyond the granted credit"), "{e}");
    // The hub serves a new cell as before.
    let (peer, mut child) = spawn_cell_on(&r.hub, "next", &[]);
    assert_eq!(peer.call("Echo.echo", b"fine", &secs(5)).unwrap().bytes(), b"fine");
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn streams_beyond_the_cells_stream_threads_wait_their_turn_and_all_finish() {
    let r = start(HubConfig::default());
    // More streams than the cell has threads for their handlers, read last one first:
    // the later ones start only as earlier handlers finish (3 items fit their window,
    // so those finish without being read).
    let count = 2 * cellshm::STREAM_THREADS + 1;
    let streams: Vec<_> =
        (0..count).map(|_| r.peer.open_stream("Stream.count", &words(&[3, 16]), &secs(30)).unwrap()).collect();
    for (i, stream) in streams.into_iter().enumerate().rev() {
        let items: Vec<u32> =
            stream.map(|item| u32::from_le_bytes(item.unwrap().bytes()[..4].try_into().unwrap())).collect();
        assert_eq!(items, [0, 1, 2], "stream {i}");
    }
    assert_eq!(r.peer.held_slots(), Some(0));
}

/// Opens a stream to a foreign callee (`cellshm-testkit stream-ends HOW`) and reads it to
/// its end: the items, and how it ended.
fn read_foreign_stream(how: &str) -> (Vec<u32>, cellshm::Error) {
    let hub = Hub::create(HubConfig::default()).unwrap();
    let ticket = hub.add_peer("foreign", PeerOptions::default()).unwrap();
    let (peer, mut child) = ticket.spawn(Command::new(CELL).args(["stream-ends", how])).unwrap();
    peer.wait_ready(Duration::from_secs(10)).unwrap();
    let stream = peer.open_stream("Foreign.stream", b"", &secs(10)).unwrap();
    let mut items = Vec::new();
    let end = loop {
        match stream.recv() {
            Ok(Some(item)) => items.push(u32::from_le_bytes(item.bytes()[..4].try_into().unwrap())),
            Ok(None) => panic!("{how}: the stream ended as a success after {items:?}"),
            Err(e) => break e,
        }
    };
    let _ = child.kill();
    let _ = child.wait();
    (items, end)
}

#[test]
fn a_callee_s_eos_ends_only_its_items_and_its_finish_status_ends_the_stream() {
    let (items, end) = read_foreign_stream("eos");
    assert_eq!(items, [0, 1, 2]);
    assert_eq!((end.status(), end.message()), (Status::Aborted, "after EOS"), "{end}");
}

#[test]
fn a_callee_s_cancel_ends_the_stream_cancelled_after_the_items_it_sent() {
    let (items, end) = read_foreign_stream("cancel");
    assert_eq!(items, [0, 1, 2]);
    assert_eq!(end.status(), Status::Cancelled, "{end}");
}
