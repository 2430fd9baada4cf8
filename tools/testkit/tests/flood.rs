//! Floods from a cell: requests it never reads the answers of, then its death; a million
//! notifications. The host notices death at once, keeps its threads and memory bounded,
//! and reuses the slot. Its own test binary, so threads and RSS are this test's alone.

use cellshm::{LinkEnd, Registry};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cellshm::{CallOptions, Hub, HubConfig, PeerOptions, Status};

mod common;
use common::{inspectable, link_threads, poll_until, proc_status, RunDelay, CELL};

/// The tests of this binary count the process's threads and memory: one at a time.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Waits until the library's link threads are at most `bound` (what this test started
/// is gone; threads of earlier tests on their way out only lower the count).
fn settles(bound: u64) {
    poll_until(
        Duration::from_secs(10),
        || format!("{} link threads did not come back to {bound}", link_threads()),
        || link_threads() <= bound,
    );
}

/// Spawns a flooding cell and waits for the line `until` on its stdout.
fn flooder(hub: &Hub, args: &[&str], until: &str) -> (cellshm::Peer, Child) {
    let ticket = hub.add_peer("flooder", PeerOptions::default()).unwrap();
    let mut cmd = Command::new(CELL);
    cmd.args(args).stdout(Stdio::piped());
    let (peer, mut child) = ticket.spawn(&mut cmd).unwrap();
    let mut reader = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    while line.trim() != until {
        line.clear();
        assert_ne!(reader.read_line(&mut line).unwrap(), 0, "the flooder ended");
    }
    (peer, child)
}

#[test]
fn a_cell_that_floods_requests_then_dies_is_seen_dead_at_once_and_leaves_nothing_behind() {
    let _alone = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let hub = Hub::create(HubConfig { max_peers: 1, ..HubConfig::default() }).unwrap();
    hub.method("Host.echo", |call| call.reply(call.payload())).unwrap();
    let threads_before = link_threads();
    let (peer, mut child) = flooder(&hub, &["request-flood", "1000000"], "flooding");
    // A call of ours is pending when it dies.
    let pending = {
        let peer = peer.clone();
        std::thread::spawn(move || peer.call("Echo.echo", b"hello?", &CallOptions::timeout(Duration::from_secs(30))))
    };
    let (tx, rx) = std::sync::mpsc::channel();
    peer.on_death(move |e| tx.send((Instant::now(), e.clone())).unwrap());
    let delay = RunDelay::this_thread_and_links();
    let killed = Instant::now();
    child.kill().unwrap();
    let (seen, error) = rx.recv_timeout(Duration::from_secs(5)).expect("the death was not seen");
    let scheduler = delay.so_far();
    child.wait().unwrap();
    assert!(
        seen - killed < Duration::from_millis(100) + scheduler,
        "seen after {:?} ({scheduler:?} waiting for a CPU)",
        seen - killed
    );
    assert_eq!(error.status(), Status::PeerDead, "{error}");
    assert_eq!(pending.join().unwrap().unwrap_err().status(), Status::PeerDead);
    // The slot is reusable, and the flooded link's threads are gone.
    let ticket = hub.add_peer("next", PeerOptions::default()).unwrap();
    let (next, mut next_child) = ticket.spawn(Command::new(CELL).arg("cell").env("CELLSHM_QUIET", "1")).unwrap();
    next.wait_ready(Duration::from_secs(10)).unwrap();
    assert_eq!(next.call("Echo.echo", b"ok", &CallOptions::timeout(Duration::from_secs(5))).unwrap().bytes(), b"ok");
    settles(threads_before + PeerOptions::default().server_threads as u64);
    let _ = next_child.kill();
    let _ = next_child.wait();
}

#[test]
fn a_million_notifications_keep_the_host_bounded() {
    let _alone = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let hub = Hub::create(HubConfig::default()).unwrap();
    let counted = Arc::new(AtomicU64::new(0));
    let counter = counted.clone();
    // Reaching a million after the reset below is an event the handler reports.
    let (millionth_tx, millionth) = std::sync::mpsc::channel();
    let millionth_tx = std::sync::Mutex::new(millionth_tx);
    hub.method("Host.count", move |_| {
        if counter.fetch_add(1, Ordering::Relaxed) + 1 == 1_000_000 {
            let _ = millionth_tx.lock().unwrap().send(());
        }
        Ok(())
    })
    .unwrap();
    // Warm up (allocator arenas of the server threads), then measure.
    let (_, mut warm) = flooder(&hub, &["notify-flood", "20000"], "sent");
    let _ = warm.kill();
    let _ = warm.wait();
    counted.store(0, Ordering::SeqCst);
    let rss_before = proc_status("self", "VmRSS:");
    let started = Instant::now();
    let (_peer, mut child) = flooder(&hub, &["notify-flood", "1000000"], "sent");
    // The last ones may still be on their way through the ring.
    millionth
        .recv_timeout(Duration::from_secs(60))
        .unwrap_or_else(|_| panic!("only {} arrived", counted.load(Ordering::Relaxed)));
    let rss_after = proc_status("self", "VmRSS:");
    println!(
        "1,000,000 notifications in {:?}, {} handled: host RSS {rss_before} KiB -> {rss_after} KiB",
        started.elapsed(),
        counted.load(Ordering::Relaxed)
    );
    // All of them ran (plus, at most, the warm-up's last ring, killed mid-way).
    let n = counted.load(Ordering::Relaxed);
    assert!((1_000_000..=1_000_256).contains(&n), "{n} notifications ran");
    assert!(rss_after <= rss_before + 2048, "host RSS grew from {rss_before} KiB to {rss_after} KiB");
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn requests_beyond_the_work_queue_are_refused_not_stored() {
    let _alone = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let hub = Hub::create(HubConfig::default()).unwrap();
    let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
    let release_rx = std::sync::Mutex::new(release_rx);
    // Both server threads end up stuck here, so requests pile up for them.
    hub.method("Host.echo", move |call| {
        let _ = release_rx.lock().unwrap().recv_timeout(Duration::from_secs(10));
        call.reply(call.payload())
    })
    .unwrap();
    let (peer, mut child) = flooder(&hub, &["request-flood", "100000"], "flooding");
    // A caller waiting for a response that never comes polls the ring meanwhile, and
    // queues the requests it finds for the (busy) servers, up to the bound.
    let caller = {
        let peer = peer.clone();
        std::thread::spawn(move || peer.call("Echo.echo", b"?", &CallOptions::timeout(Duration::from_secs(2))))
    };
    inspectable(&hub);
    let refused = || {
        let snap = cellshm::snapshot(hub.name()).unwrap();
        snap.peers.iter().find(|p| p.name == "flooder").map_or(0, |p| p.host_counters.errors)
    };
    poll_until(Duration::from_secs(10), || "no request was refused: the queue is not bounded".into(), || refused() > 0);
    let e = caller.join().unwrap().unwrap_err();
    assert_eq!(e.status(), Status::DeadlineExceeded, "{e}");
    drop(release_tx);
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn a_thousand_streams_from_a_cell_keep_the_host_at_its_stream_bound() {
    let _alone = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let hub = Hub::create(HubConfig::default()).unwrap();
    let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
    let release_rx = Arc::new(std::sync::Mutex::new(release_rx));
    hub.stream_method("Host.hold", move |_call| {
        let _ = release_rx.lock().unwrap().recv_timeout(Duration::from_secs(10));
        Ok(())
    })
    .unwrap();
    let threads_before = link_threads();
    let options = PeerOptions { max_streams: 16, stream_threads: 4, ..PeerOptions::default() };
    let ticket = hub.add_peer("streamer", options).unwrap();
    let mut cmd = Command::new(CELL);
    cmd.args(["stream-flood", "1000"]).stdout(Stdio::piped());
    let (peer, mut child) = ticket.spawn(&mut cmd).unwrap();
    let mut reader = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    while line.trim() != "taken" {
        line.clear();
        assert_ne!(reader.read_line(&mut line).unwrap(), 0, "the flooder ended");
    }
    // All 1000 OPENs were taken off the ring: 16 were accepted, the rest refused; 4 of
    // the 16 run on the peer's stream threads and 12 wait for one (the handlers hold
    // their threads for 10 s, so none has ended yet). Once those 4 run, the count is
    // final and must be exactly the bound.
    let bound = threads_before + PeerOptions::default().server_threads as u64 + 4;
    poll_until(
        Duration::from_secs(10),
        || format!("{} link threads, expected {bound}", link_threads()),
        || link_threads() >= bound,
    );
    assert_eq!(link_threads(), bound, "more than 4 stream threads");
    assert!(matches!(peer.state(), cellshm::PeerState::Joined), "{:?}", peer.state());
    drop(release_tx);
    let _ = child.kill();
    let _ = child.wait();
    let err = hub.add_peer("greedy", PeerOptions { max_streams: 0, ..PeerOptions::default() }).unwrap_err();
    assert_eq!(err.status(), Status::InvalidArgument);
    let err = hub.add_peer("idle", PeerOptions { stream_threads: 0, ..PeerOptions::default() }).unwrap_err();
    assert_eq!(err.status(), Status::InvalidArgument);
}

/// A cell that grants a host stream a million frames of credit and never reads: the
/// stream's DATA stops at three quarters of the ring, and a call made then still gets
/// into the ring (it ends at its deadline, unanswered, instead of finding the ring full
/// of bulk frames).
#[test]
fn stream_data_leaves_a_quarter_of_the_ring_to_calls() {
    let _alone = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let hub = Hub::create(HubConfig::default()).unwrap();
    hub.stream_method("Host.pour", |call| loop {
        call.send(&[1u8; 8])?;
    })
    .unwrap();
    let ticket = hub.add_peer("pourer", PeerOptions::default()).unwrap();
    let mut cmd = Command::new(CELL);
    cmd.arg("pour-and-watch").stdout(Stdio::piped());
    let (peer, mut child) = ticket.spawn(&mut cmd).unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut next_line = move || lines.next().expect("the raw cell ended").unwrap();
    let poured = next_line();
    let in_flight: u64 =
        poured.strip_prefix("poured ").and_then(|n| n.parse().ok()).unwrap_or_else(|| panic!("{poured}"));
    let capacity = u64::from(HubConfig::default().ring_capacity);
    assert_eq!(in_flight, capacity - capacity / 4, "{poured}");
    let error = peer.call("Raw.never_answers", b"?", &CallOptions::timeout(Duration::from_millis(300))).unwrap_err();
    assert_eq!(error.status(), Status::DeadlineExceeded, "the call was sent and not answered: {error}");
    assert_eq!(next_line(), format!("through {}", in_flight + 1), "the request is the next entry after the DATA");
    let _ = child.kill();
    let _ = child.wait();
}
