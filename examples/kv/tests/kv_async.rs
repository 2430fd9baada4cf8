//! The generated async client and async server of `kv.Store`: a tokio host
//! (`StoreAsyncClient`) and a cell serving `kv::StoreAsync` on tokio (`kv-async-cell`),
//! every method kind; then the async client against the blocking server and the
//! blocking client against the async server (one wire, whatever each side awaits).

use std::process::{Child, Command};
use std::time::Duration;

use cellshm::{CallOptions, Hub, HubConfig, Peer, PeerOptions, Status};
use cellshm_kv_example::kv::{ChatMessage, Chunk, GetRequest, PutRequest, StoreAsyncClient, StoreClient, WatchRequest};
use futures::StreamExt;

struct Running {
    _hub: Hub,
    peer: Peer,
    child: Child,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(program: &str) -> Running {
    let hub = Hub::create(HubConfig::default()).unwrap();
    let ticket = hub.add_peer("kv", PeerOptions::default()).unwrap();
    let (peer, child) = ticket.spawn(Command::new(program).env("CELLSHM_QUIET", "1")).unwrap();
    peer.wait_ready(Duration::from_secs(10)).unwrap();
    Running { _hub: hub, peer, child }
}

/// Every kind through the async client, on a current-thread runtime.
async fn every_kind(peer: &Peer) {
    let store = StoreAsyncClient::connect(peer, Duration::from_secs(5))
        .await
        .unwrap()
        .with_options(CallOptions::timeout(Duration::from_secs(10)));
    let put = |key: &'static str, value: &'static [u8]| {
        let store = &store;
        async move { store.put(&PutRequest { key: key.into(), value: value.to_vec() }).await.unwrap().sequence }
    };
    // Unary.
    let first = put("a/1", b"one").await;
    let reply = store.put(&PutRequest { key: "a/1".into(), value: b"uno".to_vec() }).await.unwrap();
    assert_eq!((reply.previous.as_deref(), reply.sequence), (Some(&b"one"[..]), first + 1));
    assert_eq!(store.get(&GetRequest { key: "a/1".into() }).await.unwrap().value, b"uno");
    let e = store.get(&GetRequest { key: "nothing".into() }).await.unwrap_err();
    assert_eq!(e.status(), Status::NotFound, "{e}");
    // Server streaming, as a futures Stream.
    put("b/x", b"another prefix").await;
    put("a/2", b"two").await;
    let watch = store.watch(&WatchRequest { prefix: "a/".into(), max_events: 2, since: first }).await.unwrap();
    let events: Vec<_> = watch.map(|e| e.unwrap()).map(|e| (e.key, e.value)).collect().await;
    assert_eq!(events, [("a/1".to_string(), b"uno".to_vec()), ("a/2".to_string(), b"two".to_vec())]);
    // Client streaming.
    let upload = store.upload().await.unwrap();
    let mut total = 0u64;
    for i in 0..100usize {
        let data = vec![i as u8; i * 37];
        total += data.len() as u64;
        upload.send(&Chunk { key: "blob".into(), data }).await.unwrap();
    }
    let reply = upload.finish().await.unwrap();
    assert_eq!((reply.chunks, reply.bytes), (100, total));
    // Bidi.
    let chat = store.chat().await.unwrap();
    for i in 0..50 {
        chat.send(&ChatMessage { text: format!("m{i}") }).await.unwrap();
        assert_eq!(chat.message().await.unwrap().unwrap().text, format!("you said: m{i}"));
    }
    chat.close_send().await.unwrap();
    assert!(chat.message().await.unwrap().is_none());
}

fn current_thread() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

#[test]
fn the_async_client_and_the_async_server_every_method_kind() {
    let r = start(env!("CARGO_BIN_EXE_kv-async-cell"));
    current_thread().block_on(every_kind(&r.peer));
}

#[test]
fn an_async_watcher_waits_for_changes_and_its_cancel_reaches_the_async_server() {
    let r = start(env!("CARGO_BIN_EXE_kv-async-cell"));
    current_thread().block_on(async {
        let store = StoreAsyncClient::new(&r.peer);
        let mut watch = store.watch(&WatchRequest { prefix: "w/".into(), max_events: 0, since: 0 }).await.unwrap();
        // Nothing yet: the watcher waits; a change from another client reaches it.
        let writer = StoreAsyncClient::new(&r.peer);
        writer.put(&PutRequest { key: "w/1".into(), value: b"x".to_vec() }).await.unwrap();
        let event = tokio::time::timeout(Duration::from_secs(10), watch.next()).await.unwrap().unwrap().unwrap();
        assert_eq!(event.key, "w/1");
        // Dropping the stream cancels it; the cell goes on serving.
        drop(watch);
        let got = writer.get(&GetRequest { key: "w/1".into() }).await.unwrap();
        assert!(got.found);
    });
}

#[test]
fn async_and_blocking_ends_speak_the_same_wire() {
    let blocking_server = start(env!("CARGO_BIN_EXE_kv-cell"));
    current_thread().block_on(every_kind(&blocking_server.peer));
    let async_server = start(env!("CARGO_BIN_EXE_kv-async-cell"));
    let store = StoreClient::connect(&async_server.peer, Duration::from_secs(5)).unwrap();
    store.put(&PutRequest { key: "k".into(), value: b"v".to_vec() }).unwrap();
    assert_eq!(store.get(&GetRequest { key: "k".into() }).unwrap().value, b"v");
    let chat = store.chat().unwrap();
    chat.send(&ChatMessage { text: "hi".into() }).unwrap();
    assert_eq!(chat.recv().unwrap().unwrap().text, "you said: hi");
}
