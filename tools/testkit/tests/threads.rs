//! Threads: what a failed start leaves behind (nothing), and waits that sleep instead of
//! polling. Its own test binary, so that no other test's threads come and go while
//! threads and context switches are counted.

use cellshm::{LinkEnd, Registry};
use std::process::Command;
use std::time::Duration;

use cellshm::{Hub, HubConfig, PeerOptions, Status};

mod common;
use common::{link_threads, poll_until, CELL};

fn limit() -> Duration {
    Duration::from_secs(5)
}

/// These tests count the process's threads and a thread's context switches: one at a time.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[test]
fn failed_spawns_and_absurd_thread_counts_leave_the_thread_count_as_it_was() {
    let _alone = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let hub = Hub::create(HubConfig::default()).unwrap();
    // A working cell first, so every lazily started thread exists already.
    let ticket = hub.add_peer("ok", PeerOptions::default()).unwrap();
    let (peer, mut child) = ticket.spawn(Command::new(CELL).arg("cell").env("CELLSHM_QUIET", "1")).unwrap();
    peer.wait_ready(Duration::from_secs(10)).unwrap();
    // A thread takes its name once it runs: under load a server thread of the peer can
    // still carry its parent's name here, and be counted only later.
    let servers = PeerOptions::default().server_threads as u64;
    poll_until(limit(), || format!("the peer's {servers} server threads did not start"), || link_threads() >= servers);
    let before = link_threads();

    for round in 0..20 {
        let ticket = hub.add_peer(&format!("missing-{round}"), PeerOptions::default()).unwrap();
        let err = ticket.spawn(&mut Command::new("/nonexistent/cell")).unwrap_err();
        assert_eq!(err.status(), Status::SystemError, "{err}");
    }
    // Threads of a failed start may still be on their way out: wait for the count.
    poll_until(
        limit(),
        || format!("a failed spawn left threads: {before} -> {}", link_threads()),
        || link_threads() == before,
    );

    let err = hub.add_peer("greedy", PeerOptions { server_threads: 100_000, ..PeerOptions::default() }).unwrap_err();
    assert_eq!(err.status(), Status::InvalidArgument, "{err}");
    assert!(err.message().contains("server_threads"), "{err}");
    poll_until(
        limit(),
        || format!("a refused peer left threads: {before} -> {}", link_threads()),
        || link_threads() == before,
    );

    // Every failed slot is reusable: the hub is not full.
    assert_eq!(
        peer.call("Echo.echo", b"ok", &cellshm::CallOptions::timeout(Duration::from_secs(5))).unwrap().bytes(),
        b"ok"
    );
    let _ = child.kill();
    let _ = child.wait();
}

/// Context switches of the calling thread so far.
fn my_context_switches() -> u64 {
    std::fs::read_to_string("/proc/thread-self/status")
        .unwrap()
        .lines()
        .filter_map(|l| {
            l.strip_prefix("voluntary_ctxt_switches:").or_else(|| l.strip_prefix("nonvoluntary_ctxt_switches:"))
        })
        .map(|v| v.trim().parse::<u64>().unwrap())
        .sum()
}

#[test]
fn a_handler_waiting_for_cancellation_sleeps_without_timers() {
    let _alone = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let hub = Hub::create(HubConfig::default()).unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let tx = std::sync::Mutex::new(tx);
    hub.method("Host.echo", move |call| {
        let before = my_context_switches();
        let cancelled = call.wait_cancelled(Duration::from_secs(10));
        let _ = tx.lock().unwrap().send((cancelled, my_context_switches() - before));
        call.reply(call.payload())
    })
    .unwrap();
    let ticket = hub.add_peer("caller", PeerOptions::default()).unwrap();
    let (peer, mut child) = ticket.spawn(Command::new(CELL).arg("cell").env("CELLSHM_QUIET", "1")).unwrap();
    peer.wait_ready(Duration::from_secs(10)).unwrap();
    // The cell calls Host.echo with a deadline of 5 s (Test.call_host); the handler waits
    // for it to pass.
    let _ = peer.call("Test.call_host", b"x", &cellshm::CallOptions::timeout(Duration::from_secs(10)));
    let (cancelled, switches) = rx.recv_timeout(Duration::from_secs(10)).unwrap();
    assert!(cancelled, "the deadline counts as cancellation");
    // One sleep for the whole wait (a few switches at most), not a wakeup every 50 ms.
    assert!(switches <= 5, "{switches} context switches while waiting 5 s");
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn waiting_for_a_cell_to_exit_sleeps_until_it_does() {
    let _alone = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let child = Command::new("sleep").arg("1").spawn().unwrap();
    let process = cellshm::CellProcess::new(child);
    let before = my_context_switches();
    assert_eq!(process.wait_exit(Duration::from_secs(10)).unwrap(), 0);
    let switches = my_context_switches() - before;
    assert!(switches <= 5, "{switches} context switches while waiting for a 1 s process");
    let child = Command::new("sleep").arg("10").spawn().unwrap();
    let process = cellshm::CellProcess::new(child);
    let e = process.wait_exit(Duration::from_millis(100)).unwrap_err();
    assert_eq!(e.status(), Status::DeadlineExceeded);
    process.kill().unwrap();
    assert_eq!(process.wait_exit(Duration::from_secs(5)).unwrap(), 128 + 9);
}
