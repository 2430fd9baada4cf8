//! What a failed start leaves behind: nothing. Its own test binary, so that no other
//! test's threads come and go while threads are counted.

use std::process::Command;
use std::time::{Duration, Instant};

use cellshm::{Hub, HubConfig, PeerOptions, Status};

const CELL: &str = env!("CARGO_BIN_EXE_cellshm");

fn threads() -> usize {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .and_then(|n| n.trim().parse().ok())
        .unwrap()
}

/// Threads of a failed start may still be on their way out: wait for the count (an
/// event), within a generous bound.
fn settles_at(expected: usize) -> bool {
    let t = Instant::now();
    while threads() != expected {
        if t.elapsed() > Duration::from_secs(5) {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    true
}

#[test]
fn failed_spawns_and_absurd_thread_counts_leave_the_thread_count_as_it_was() {
    let hub = Hub::create(HubConfig::default()).unwrap();
    // A working cell first, so every lazily started thread exists already.
    let ticket = hub.add_peer("ok", PeerOptions::default()).unwrap();
    let (peer, mut child) = ticket.spawn(Command::new(CELL).arg("__cell").env("CELLSHM_QUIET", "1")).unwrap();
    peer.wait_ready(Duration::from_secs(10)).unwrap();
    let before = threads();

    for round in 0..20 {
        let ticket = hub.add_peer(&format!("missing-{round}"), PeerOptions::default()).unwrap();
        let err = ticket.spawn(&mut Command::new("/nonexistent/cell")).unwrap_err();
        assert_eq!(err.status(), Status::SystemError, "{err}");
    }
    assert!(settles_at(before), "a failed spawn left threads: {} -> {}", before, threads());

    let err = hub.add_peer("greedy", PeerOptions { server_threads: 100_000, ..PeerOptions::default() }).unwrap_err();
    assert_eq!(err.status(), Status::InvalidArgument, "{err}");
    assert!(err.message().contains("server_threads"), "{err}");
    assert!(settles_at(before), "a refused peer left threads: {} -> {}", before, threads());

    // Every failed slot is reusable: the hub is not full.
    assert_eq!(
        peer.call("Echo.echo", b"ok", &cellshm::CallOptions::timeout(Duration::from_secs(5))).unwrap().bytes(),
        b"ok"
    );
    let _ = child.kill();
    let _ = child.wait();
}
