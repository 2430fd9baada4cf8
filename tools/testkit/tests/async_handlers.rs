//! Async handlers (`Registry::method_async`, `stream_method_async`) in a cell and on the
//! host: a thousand calls in flight that await a timer and another cell need no more
//! threads; cancellation and deadlines reach the handler's future; async stream
//! handlers of each kind.

mod common;

use std::time::Duration;

use cellshm::{CallOptions, Hub, HubConfig, LinkEnd, MethodKind, PeerOptions, Registry, Status};
use common::{cancel_seen_after, proc_status, secs, spawn_cell_on};
use futures::StreamExt;

fn words(values: &[u32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

fn multi_thread() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(4).enable_time().build().unwrap()
}

#[test]
fn a_thousand_async_calls_await_a_timer_and_another_cell_with_no_more_threads() {
    let runtime = multi_thread();
    let hub = Hub::create(HubConfig::default()).unwrap();
    let (echo, _echo_child) = spawn_cell_on(&hub, "echo", &[]);
    // The host relays to the other cell, as an async host method on the host's runtime.
    hub.spawn_handlers_on(runtime.handle().clone());
    hub.method_async("Host.relay", move |call| {
        let echo = echo.clone();
        async move { Ok(echo.call_async("Echo.echo", call.payload(), &call.onward()).await?.to_vec()) }
    })
    .unwrap();
    let (relay, relay_child) = spawn_cell_on(&hub, "relay", &[("TEST_CELL_ASYNC", "1")]);
    let pid = relay_child.id().to_string();
    assert_eq!(relay.call("Async.relay", &words(&[0, 7]), &secs(10)).unwrap().bytes(), words(&[7]));
    let threads_before = proc_status(&pid, "Threads:");
    let replies = runtime.block_on(async {
        let calls = (0..1_000u32).map(|i| {
            let relay = relay.clone();
            tokio::spawn(async move {
                let request = words(&[20, i]);
                let reply = relay.call_async("Async.relay", &request, &secs(30)).await.unwrap();
                assert_eq!(reply.bytes(), &request[4..]);
            })
        });
        futures::future::join_all(calls).await
    });
    assert_eq!(replies.into_iter().filter(Result::is_ok).count(), 1_000);
    let threads_after = proc_status(&pid, "Threads:");
    assert_eq!(threads_after, threads_before, "the cell started threads for calls in flight");
    // The handlers waited side by side, not one per server thread.
    let most = relay.call("Async.most_in_flight", b"", &secs(5)).unwrap();
    let most = u64::from_le_bytes(most.bytes().try_into().unwrap());
    eprintln!("{most} async handlers waited at once");
    assert!(most > 32, "at most {most} async handlers waited at once");
}

#[test]
fn cancellation_and_the_deadline_reach_an_async_handler_s_future() {
    let hub = Hub::create(HubConfig::default()).unwrap();
    let (peer, _child) = spawn_cell_on(&hub, "async", &[("TEST_CELL_ASYNC", "1")]);
    let runtime = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
    let dropped_at = runtime.block_on(async {
        let call = peer.call_async("Async.until_cancelled", b"", &secs(30));
        assert!(tokio::time::timeout(Duration::from_millis(50), call).await.is_err());
        cellshm::monotonic_now_ns()
    });
    cancel_seen_after(&peer, dropped_at);
    // The deadline: nobody cancels, the handler's future is woken when it passes.
    let before = cellshm::monotonic_now_ns();
    let short = CallOptions::timeout(Duration::from_millis(40));
    let e = peer.call("Async.until_cancelled", b"", &short).unwrap_err();
    assert_eq!(e.status(), Status::DeadlineExceeded, "{e}");
    cancel_seen_after(&peer, before);
}

#[test]
fn async_stream_handlers_of_each_kind() {
    let hub = Hub::create(HubConfig::default()).unwrap();
    let (peer, _child) = spawn_cell_on(&hub, "async", &[("TEST_CELL_ASYNC", "1")]);
    let runtime = multi_thread();
    runtime.block_on(async {
        let mut items = peer.open_stream_async("AsyncStream.count", &words(&[5_000, 100]), &secs(30)).await.unwrap();
        let mut n = 0u32;
        while let Some(item) = items.next().await {
            assert_eq!(item.unwrap().bytes()[..4], n.to_le_bytes());
            n += 1;
        }
        assert_eq!(n, 5_000);

        let sum = peer.open_stream_async("AsyncStream.sum", b"", &secs(30)).await.unwrap();
        for i in 0..500u32 {
            sum.send(&[(i % 256) as u8; 300]).await.unwrap();
        }
        let answer = sum.finish().await.unwrap();
        assert_eq!(answer.bytes()[..8], (500u64 * 300).to_le_bytes());

        let echo = std::sync::Arc::new(peer.open_stream_async("AsyncStream.echo", b"", &secs(30)).await.unwrap());
        let sender = {
            let echo = echo.clone();
            tokio::spawn(async move {
                for i in 0..2_000u32 {
                    echo.send(&i.to_le_bytes()).await.unwrap();
                }
                echo.close_send().await.unwrap();
            })
        };
        let mut n = 0u32;
        while let Some(item) = echo.message().await.unwrap() {
            assert_eq!(item.bytes(), n.to_le_bytes());
            n += 1;
        }
        sender.await.unwrap();
        assert_eq!(n, 2_000);
    });
    // The kinds are what introspection reports.
    let kinds = peer.served_methods(Duration::from_secs(5)).unwrap();
    assert!(kinds.iter().any(|(n, _, k)| n == "AsyncStream.sum" && *k == MethodKind::ClientStreaming));
}

#[test]
fn an_async_method_without_a_runtime_is_refused_clearly() {
    let hub = Hub::create(HubConfig::default()).unwrap();
    let e = hub.method_async("Host.nowhere", |_| async { Ok(Vec::new()) }).unwrap_err();
    assert_eq!(e.status(), Status::FailedPrecondition, "{e}");
    assert!(e.message().contains("spawn_handlers_on"), "{e}");
    let _ = PeerOptions::default();
}
