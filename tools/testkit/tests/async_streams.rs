//! `LinkEnd::open_stream_async`: streams of each kind as `futures_core::Stream`s with an
//! async `send`, on tokio and on `futures::executor::block_on`; back-pressure from a
//! slow async reader; dropping cancels; the deadline ends a stream nobody awaits.

mod common;

use std::time::Duration;

use cellshm::{CallOptions, HubConfig, LinkEnd, Status, STREAM_WINDOW};
use common::{cancel_seen_after, secs, start};
use futures::StreamExt;

fn words(values: &[u32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

fn index_of(item: &cellshm::StreamItem) -> u32 {
    u32::from_le_bytes(item.bytes()[..4].try_into().unwrap())
}

fn current_thread() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap()
}

#[test]
fn a_server_stream_arrives_in_order_as_a_futures_stream() {
    let r = start(HubConfig::default(), &[]);
    current_thread().block_on(async {
        let mut items = r.peer.open_stream_async("Stream.count", &words(&[10_000, 64]), &secs(60)).await.unwrap();
        let mut n = 0;
        while let Some(item) = items.next().await {
            assert_eq!(index_of(&item.unwrap()), n);
            n += 1;
        }
        assert_eq!(n, 10_000);
        // Ended: the stream stays ended.
        assert!(items.next().await.is_none());
    });
}

#[test]
fn a_client_stream_and_a_bidi_stream_on_a_multi_thread_runtime() {
    let r = start(HubConfig::default(), &[]);
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(4).build().unwrap();
    runtime.block_on(async {
        // Client streaming: 1,000 items of 1 KiB (in slots), then the handler's answer.
        let sum = r.peer.open_stream_async("Stream.sum", b"", &secs(60)).await.unwrap();
        let mut hash = 0xcbf2_9ce4_8422_2325u64;
        for i in 0..1_000u32 {
            let item = [(i % 251) as u8; 1024];
            sum.send(&item).await.unwrap();
            for b in item {
                hash = (hash ^ b as u64).wrapping_mul(0x100_0000_01b3);
            }
        }
        let answer = sum.finish().await.unwrap();
        assert_eq!(answer.bytes()[..8], (1_000u64 * 1024).to_le_bytes());
        assert_eq!(answer.bytes()[8..], hash.to_le_bytes());

        // Bidi: one task sends, this one reads the echoes, more items than a window.
        let echo = std::sync::Arc::new(r.peer.open_stream_async("Stream.echo", b"", &secs(60)).await.unwrap());
        let sender = {
            let echo = echo.clone();
            tokio::spawn(async move {
                for i in 0..(STREAM_WINDOW * 20) {
                    echo.send(&i.to_le_bytes()).await.unwrap();
                }
                echo.close_send().await.unwrap();
            })
        };
        let mut n = 0;
        while let Some(item) = echo.message().await.unwrap() {
            assert_eq!(index_of(&item), n);
            n += 1;
        }
        sender.await.unwrap();
        assert_eq!(n, STREAM_WINDOW * 20);
    });
}

#[test]
fn a_slow_async_reader_slows_its_producer_and_nothing_else() {
    let r = start(HubConfig::default(), &[]);
    current_thread().block_on(async {
        let before = r.peer.cell_counters().unwrap().bytes_sent;
        let mut items = r.peer.open_stream_async("Stream.count", &words(&[100_000, 1024]), &secs(60)).await.unwrap();
        for n in 0..30 {
            let item = items.next().await.unwrap().unwrap();
            assert_eq!(index_of(&item), n);
            drop(item);
            tokio::time::sleep(Duration::from_millis(2)).await;
            // Calls go on beside the stream the reader holds back.
            let reply = r.peer.call_async("Echo.echo", b"beside", &secs(5)).await.unwrap();
            assert_eq!(reply.bytes(), b"beside");
        }
        // The producer sent what we read plus at most a window (plus the echoes).
        let sent = r.peer.cell_counters().unwrap().bytes_sent - before;
        let bound = (30 + STREAM_WINDOW as u64 + 1) * 1024 + 30 * 6;
        assert!(sent <= bound, "the cell sent {sent} bytes, more than {bound}: credit was not honoured");
    });
}

#[test]
fn dropping_an_async_stream_cancels_it_and_its_deadline_ends_it_unawaited() {
    let r = start(HubConfig::default(), &[]);
    let runtime = current_thread();
    let dropped_at = runtime.block_on(async {
        let mut items = r.peer.open_stream_async("Stream.forever", &words(&[64]), &secs(30)).await.unwrap();
        items.next().await.unwrap().unwrap();
        let dropped_at = cellshm::monotonic_now_ns();
        drop(items);
        dropped_at
    });
    cancel_seen_after(&r.peer, dropped_at);

    // Nobody awaits the stream when its deadline passes: the link ends it anyway, and the
    // handler sees it (its send fails, and it records the cancel).
    let before = cellshm::monotonic_now_ns();
    let short = CallOptions::timeout(Duration::from_millis(50));
    let mut items = runtime.block_on(r.peer.open_stream_async("Stream.forever", &words(&[64]), &short)).unwrap();
    cancel_seen_after(&r.peer, before);
    let e = runtime.block_on(async {
        loop {
            match items.next().await {
                Some(Ok(_)) => continue,
                Some(Err(e)) => break e,
                None => panic!("a stream cut by its deadline ended OK"),
            }
        }
    });
    assert_eq!(e.status(), Status::DeadlineExceeded, "{e}");
}

#[test]
fn async_streams_need_no_runtime() {
    let r = start(HubConfig::default(), &[]);
    futures::executor::block_on(async {
        let items = r.peer.open_stream_async("Stream.count", &words(&[1_000, 200]), &secs(60)).await.unwrap();
        let mut n = 0;
        while let Some(item) = items.message().await.unwrap() {
            assert_eq!(index_of(&item), n);
            n += 1;
        }
        assert_eq!(n, 1_000);
        let e = r.peer.open_stream_async("Stream.fail_after", &words(&[3]), &secs(5)).await.unwrap();
        let got: Vec<_> = e.collect().await;
        assert_eq!(got.len(), 4, "three items, then the error");
        assert_eq!(got[3].as_ref().unwrap_err().status(), Status::Aborted);
    });
}
