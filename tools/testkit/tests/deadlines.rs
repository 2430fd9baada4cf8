//! A deadline is reported as DEADLINE_EXCEEDED, never as CANCELLED, whatever the handler
//! answers when it sees it. Its own test binary: 8 threads of calls timing out every
//! 20 ms load the 2 cores enough to disturb the timing-sensitive multi-process tests.

use cellshm::LinkEnd;
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use cellshm::{CallOptions, HubConfig, Status};

mod common;
use common::start;

#[test]
fn a_handler_that_stops_at_its_deadline_is_reported_as_deadline_exceeded_never_cancelled() {
    let r = start(HubConfig::default(), &[("CELLSHM_WORKERS", "8")]);
    let peer = Arc::new(r.peer.clone());
    let workers: Vec<_> = (0..8)
        .map(|t| {
            let peer = peer.clone();
            thread::spawn(move || {
                for i in 0..125u64 {
                    let timeout = Duration::from_millis(20 + (t + i) % 5);
                    let e = peer.call("Test.cancelled_at_deadline", b"", &CallOptions::timeout(timeout)).unwrap_err();
                    assert_eq!(e.status(), Status::DeadlineExceeded, "try {i}: {e}");
                }
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
}

#[test]
fn a_started_call_nobody_answers_fails_at_its_deadline_and_earlier_deadlines_come_first() {
    let r = start(HubConfig::default(), &[("CELLSHM_WORKERS", "4")]);
    let (tx, rx) = std::sync::mpsc::channel::<u64>();
    let started = std::time::Instant::now();
    // Started latest deadline first: each new one is earlier than the one the host's
    // standby sleeps until, so it must be woken to watch the new one.
    let calls: Vec<_> = [900u64, 600, 300]
        .into_iter()
        .map(|ms| {
            let tx = tx.clone();
            let opts = CallOptions::timeout(Duration::from_millis(ms));
            let call = r.peer.call_start(
                "Test.sleep",
                &10_000u32.to_le_bytes(),
                &opts,
                Box::new(move || {
                    tx.send(ms).unwrap();
                }),
            );
            (ms, call.unwrap())
        })
        .collect();
    let order: Vec<u64> =
        (0..3).map(|_| rx.recv_timeout(Duration::from_secs(5)).expect("a deadline passed unseen")).collect();
    assert_eq!(order, [300, 600, 900]);
    // A generous bound: the behaviour itself is about time.
    let elapsed = started.elapsed();
    assert!(elapsed >= Duration::from_millis(900) && elapsed < Duration::from_millis(2900), "{elapsed:?}");
    for (ms, call) in calls {
        let e = call.try_take().unwrap().unwrap_err();
        assert_eq!(e.status(), Status::DeadlineExceeded, "{ms} ms: {e}");
    }
}
