//! A deadline is reported as DEADLINE_EXCEEDED, never as CANCELLED, whatever the handler
//! answers when it sees it. Its own test binary: 8 threads of calls timing out every
//! 20 ms load the 2 cores enough to disturb the timing-sensitive multi-process tests.

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
