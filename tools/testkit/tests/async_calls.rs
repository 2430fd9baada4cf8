//! The futures of a link end and a host: `call_async` on tokio (multi-thread and
//! current-thread) and on `futures::executor::block_on` (every call completes, a dropped
//! future cancels its call, a deadline ends it), `wait_ready_async`, `shutdown_async`,
//! supervisor events as a stream, and `notify_async` waiting for room without parking
//! its executor.

mod common;

use std::time::Duration;

use cellshm::{CallOptions, HubConfig, LinkEnd, Peer, Status};
use common::{cancel_seen_after, secs, start};

/// `n` echo calls in flight at once on the current runtime; each answer checked.
async fn echo_many(peer: Peer, n: u32) {
    let mut calls = tokio::task::JoinSet::new();
    for i in 0..n {
        let peer = peer.clone();
        calls.spawn(async move {
            let payload = [(i % 251) as u8; 64];
            let reply = peer.call_async("Echo.echo", &payload, &secs(30)).await.unwrap();
            assert_eq!(reply.bytes(), &payload[..]);
        });
    }
    let mut done = 0;
    while let Some(joined) = calls.join_next().await {
        joined.unwrap();
        done += 1;
    }
    assert_eq!(done, n);
}

#[test]
fn ten_thousand_concurrent_async_calls_complete_on_a_multi_thread_and_a_current_thread_runtime() {
    let r = start(HubConfig::default(), &[]);
    let multi = tokio::runtime::Builder::new_multi_thread().worker_threads(4).build().unwrap();
    multi.block_on(echo_many(r.peer.clone(), 10_000));
    let current = tokio::runtime::Builder::new_current_thread().build().unwrap();
    current.block_on(echo_many(r.peer.clone(), 10_000));
}

#[test]
fn async_calls_need_no_runtime() {
    let r = start(HubConfig::default(), &[]);
    let calls = (0..100u8).map(|i| {
        let peer = r.peer.clone();
        async move { (i, peer.call_async("Echo.echo", &[i; 100], &secs(30)).await) }
    });
    for (i, result) in futures::executor::block_on(futures::future::join_all(calls)) {
        assert_eq!(result.unwrap().bytes(), &[i; 100][..]);
    }
    // A call that cannot start fails when awaited, with the reason.
    let too_large = vec![0u8; r.peer.max_payload() + 1];
    let e = futures::executor::block_on(r.peer.call_async("Echo.echo", &too_large, &secs(1))).unwrap_err();
    assert_eq!(e.status(), Status::PayloadTooLarge, "{e}");
}

#[test]
fn dropping_a_call_future_cancels_the_call_and_a_deadline_ends_it() {
    let r = start(HubConfig::default(), &[]);
    let runtime = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
    let dropped_at = cellshm::monotonic_now_ns();
    runtime.block_on(async {
        let call = r.peer.call_async("Test.until_cancelled", b"", &secs(30));
        // Polled until the timer fires, then dropped unanswered.
        assert!(tokio::time::timeout(Duration::from_millis(50), call).await.is_err());
    });
    // The handler saw the dropped call cancelled (the cell answers once it has).
    cancel_seen_after(&r.peer, dropped_at);
    let short = CallOptions::timeout(Duration::from_millis(30));
    let e = runtime.block_on(r.peer.call_async("Test.until_cancelled", b"", &short)).unwrap_err();
    assert_eq!(e.status(), Status::DeadlineExceeded, "{e}");
}

#[test]
fn waiting_for_readiness_is_a_future_that_a_death_ends_too() {
    use cellshm::{Hub, PeerOptions};
    use std::process::Command;
    let hub = Hub::create(HubConfig::default()).unwrap();
    // Ready: awaited on block_on while the cell joins.
    let ticket = hub.add_peer("ready", PeerOptions::default()).unwrap();
    let mut command = Command::new(common::CELL);
    command.arg("cell").env("CELLSHM_QUIET", "1");
    let (peer, mut child) = ticket.spawn(&mut command).unwrap();
    // On block_on in a thread of its own, so that a wakeup that never comes fails the test
    // instead of hanging it.
    let (tx, rx) = std::sync::mpsc::channel();
    let waiting = peer.clone();
    std::thread::spawn(move || tx.send(futures::executor::block_on(waiting.wait_ready_async())));
    rx.recv_timeout(Duration::from_secs(10)).expect("the ready state woke the future").unwrap();
    assert_eq!(peer.call("Echo.echo", b"up", &secs(5)).unwrap().bytes(), b"up");
    // A process that exits without joining: the future ends with its death.
    let ticket = hub.add_peer("gone", PeerOptions::default()).unwrap();
    let (gone, mut gone_child) = ticket.spawn(&mut Command::new("true")).unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
    let e = runtime
        .block_on(async { tokio::time::timeout(Duration::from_secs(10), gone.wait_ready_async()).await })
        .expect("the death ended the wait")
        .unwrap_err();
    assert_eq!(e.status(), Status::PeerDead, "{e}");
    let _ = gone_child.wait();
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn a_graceful_shutdown_is_a_future_the_exit_or_the_grace_ends() {
    use cellshm::{Hub, PeerOptions};
    use std::process::Command;
    let hub = Hub::create(HubConfig::default()).unwrap();
    // A cell that leaves on GOODBYE: done when it exited, long before the grace.
    let (peer, mut child) = common::spawn_cell_on(&hub, "leaves", &[]);
    let started = std::time::Instant::now();
    futures::executor::block_on(peer.shutdown_async(Duration::from_secs(30)));
    assert!(started.elapsed() < Duration::from_secs(10), "waited {:?} for a cell that left", started.elapsed());
    assert!(matches!(peer.state(), cellshm::PeerState::Dead(_)), "{:?}", peer.state());
    let _ = child.wait();
    // A cell that never reads its ring: the link's alarm ends the grace, no timer of ours.
    let ticket = hub.add_peer("mute", PeerOptions::default()).unwrap();
    let (mute, mut mute_child) = ticket.spawn(Command::new(common::CELL).arg("mute")).unwrap();
    mute.wait_ready(Duration::from_secs(10)).unwrap();
    let started = std::time::Instant::now();
    let (tx, rx) = std::sync::mpsc::channel();
    let closing = mute.clone();
    std::thread::spawn(move || {
        futures::executor::block_on(closing.shutdown_async(Duration::from_millis(200)));
        tx.send(()).unwrap();
    });
    rx.recv_timeout(Duration::from_secs(10)).expect("the grace's alarm woke the future");
    assert!(started.elapsed() >= Duration::from_millis(200), "closed after {:?}", started.elapsed());
    assert_eq!(mute.call("Echo.echo", b"", &secs(1)).unwrap_err().status(), Status::SessionClosed);
    let _ = mute_child.kill();
    let _ = mute_child.wait();
}

#[test]
fn supervisor_events_are_a_stream_that_ends_with_the_supervisor() {
    use cellshm::{CellSpec, CellStatus, Hub, Supervisor};
    use futures::StreamExt;
    let supervisor = Supervisor::new(Hub::create(HubConfig::default()).unwrap()).unwrap();
    let mut events = supervisor.events();
    supervisor.add(CellSpec::new("streamed", common::CELL).args(["cell"]).env("CELLSHM_QUIET", "1")).unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
    let mut next = || {
        runtime
            .block_on(async { tokio::time::timeout(Duration::from_secs(10), events.next()).await })
            .expect("an event came")
            .expect("the stream goes on while the supervisor lives")
    };
    assert_eq!(next().status, CellStatus::Starting);
    let ready = next();
    assert_eq!((ready.name.as_str(), ready.status), ("streamed", CellStatus::Ready));
    supervisor.stop("streamed", Duration::from_secs(5)).unwrap();
    assert_eq!(next().status, CellStatus::Stopping);
    assert!(matches!(next().status, CellStatus::Exited(_)));
    drop(supervisor);
    let end = runtime.block_on(async { tokio::time::timeout(Duration::from_secs(10), events.next()).await });
    assert!(matches!(end, Ok(None)), "the stream ended with the supervisor: {end:?}");
    assert_eq!(events.missed(), 0);
}

#[test]
fn a_notification_that_finds_the_ring_full_waits_as_a_future_and_never_parks_the_executor() {
    use cellshm::{Hub, PeerOptions};
    use std::future::Future;
    use std::pin::Pin;
    use std::process::Command;
    use std::task::Poll;
    let hub = Hub::create(HubConfig::default()).unwrap();
    // A cell that never reads its ring: the host's sends to it fill the ring and stay.
    let ticket = hub.add_peer("mute", PeerOptions::default()).unwrap();
    let (mute, mut child) = ticket.spawn(Command::new(common::CELL).arg("mute")).unwrap();
    mute.wait_ready(Duration::from_secs(10)).unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
    runtime.block_on(async {
        let options = CallOptions::timeout(Duration::from_millis(300));
        let mut waiting = None;
        for _ in 0..100_000 {
            let mut notification = mute.notify_async("Mute.ignored", &[7u8; 64], &options);
            let polled = std::future::poll_fn(|cx| Poll::Ready(Pin::new(&mut notification).poll(cx))).await;
            match polled {
                Poll::Ready(sent) => sent.unwrap(),
                Poll::Pending => {
                    waiting = Some(notification);
                    break;
                }
            }
        }
        let waiting = waiting.expect("the ring filled up");
        // The executor goes on running other tasks while the notification waits for room
        // (a notification that parked this one thread would hold them until its deadline).
        let ticked = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let ticks = tokio::spawn({
            let ticked = ticked.clone();
            async move {
                for _ in 0..10 {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                ticked.store(true, std::sync::atomic::Ordering::SeqCst);
            }
        });
        let e = waiting.await.unwrap_err();
        assert_eq!(e.status(), Status::DeadlineExceeded, "{e}");
        assert!(ticked.load(std::sync::atomic::Ordering::SeqCst), "other tasks waited for the notification");
        ticks.await.unwrap();
    });
    let _ = child.kill();
    let _ = child.wait();
}
