//! The generated Rust client and server of `kv.Store` between a real host (this test)
//! and real cells (`kv-cell`, `kv-partial-cell`): every method kind, a deadline, a
//! cancellation, error statuses, the contract check, and `kv-host` end to end.

use std::process::{Child, Command};
use std::time::Duration;

use cellshm::{CallOptions, Hub, HubConfig, Peer, PeerOptions, Status};
use cellshm_kv_example::kv::{ChatMessage, Chunk, GetRequest, PutRequest, StoreClient, WatchRequest};

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
    start_with(program, &[])
}

fn start_with(program: &str, args: &[&str]) -> Running {
    let hub = Hub::create(HubConfig::default()).unwrap();
    let ticket = hub.add_peer("kv", PeerOptions::default()).unwrap();
    let (peer, child) = ticket.spawn(Command::new(program).args(args).env("CELLSHM_QUIET", "1")).unwrap();
    peer.wait_ready(Duration::from_secs(10)).unwrap();
    Running { _hub: hub, peer, child }
}

fn put(store: &StoreClient<'_, Peer>, key: &str, value: &[u8]) -> u64 {
    store.put(&PutRequest { key: key.into(), value: value.to_vec() }).unwrap().sequence
}

#[test]
fn every_method_kind_through_the_generated_client() {
    let r = start(env!("CARGO_BIN_EXE_kv-cell"));
    let store = StoreClient::connect(&r.peer, Duration::from_secs(5))
        .unwrap()
        .with_options(CallOptions::timeout(Duration::from_secs(10)));
    // Unary, and what a key had before.
    let first = put(&store, "a/1", b"one");
    let reply = store.put(&PutRequest { key: "a/1".into(), value: b"uno".to_vec() }).unwrap();
    assert_eq!(reply.previous.as_deref(), Some(&b"one"[..]));
    assert_eq!(reply.sequence, first + 1);
    let got = store.get(&GetRequest { key: "a/1".into() }).unwrap();
    assert!(got.found);
    assert_eq!(got.value, b"uno");
    // Server streaming: the changes under a prefix after `since`, in order.
    put(&store, "b/x", b"skipped: another prefix");
    put(&store, "a/2", b"two");
    let events: Vec<_> = store
        .watch(&WatchRequest { prefix: "a/".into(), max_events: 2, since: first })
        .unwrap()
        .map(|e| e.unwrap())
        .map(|e| (e.key, e.value))
        .collect();
    assert_eq!(events, [("a/1".to_string(), b"uno".to_vec()), ("a/2".to_string(), b"two".to_vec())]);
    // Client streaming: 100 chunks of growing size, then the handler's one answer.
    let upload = store.upload().unwrap();
    let mut total = 0u64;
    for i in 0..100usize {
        let data = vec![i as u8; i * 37];
        total += data.len() as u64;
        upload.send(&Chunk { key: "blob".into(), data }).unwrap();
    }
    let reply = upload.finish().unwrap();
    assert_eq!((reply.chunks, reply.bytes), (100, total));
    assert_eq!(store.get(&GetRequest { key: "blob".into() }).unwrap().value.len() as u64, total);
    // Bidi: each message answered in turn, then the end once we close.
    let chat = store.chat().unwrap();
    for i in 0..50 {
        chat.send(&ChatMessage { text: format!("m{i}") }).unwrap();
        assert_eq!(chat.recv().unwrap().unwrap().text, format!("you said: m{i}"));
    }
    chat.close_send().unwrap();
    assert!(chat.recv().unwrap().is_none(), "the handler ends once we close");
}

#[test]
fn statuses_and_their_messages_come_back_typed() {
    let r = start(env!("CARGO_BIN_EXE_kv-cell"));
    let store = StoreClient::new(&r.peer).with_options(CallOptions::timeout(Duration::from_secs(10)));
    let e = store.get(&GetRequest { key: "absent".into() }).unwrap_err();
    assert_eq!(e.status(), Status::NotFound);
    assert!(e.message().contains("no key \"absent\""), "{e}");
    let e = store.put(&PutRequest { key: String::new(), value: vec![1] }).unwrap_err();
    assert_eq!(e.status(), Status::InvalidArgument);
    assert!(e.message().contains("the key is empty"), "{e}");
}

#[test]
fn a_deadline_ends_a_stream_that_waits_and_cancelled_watchers_end() {
    let r = start(env!("CARGO_BIN_EXE_kv-cell"));
    let store = StoreClient::new(&r.peer);
    let quiet = WatchRequest { prefix: "never/".into(), max_events: 0, since: 0 };
    let short = CallOptions::timeout(Duration::from_millis(200));
    let e = store.watch_with(&quiet, &short).unwrap().next().unwrap().unwrap_err();
    assert_eq!(e.status(), Status::DeadlineExceeded, "{e}");
    // Twice as many watchers as the cell has stream threads, each cancelled: if their
    // handlers did not end, the last watcher below would never run.
    for _ in 0..2 * cellshm::STREAM_THREADS {
        let watch = store.watch(&quiet).unwrap();
        watch.cancel();
    }
    let since = put(&store, "c/0", b"");
    let watch = store
        .watch_with(
            &WatchRequest { prefix: "c/".into(), max_events: 1, since },
            &CallOptions::timeout(Duration::from_secs(10)),
        )
        .unwrap();
    put(&store, "c/1", b"seen");
    let events: Vec<_> = watch.map(|e| e.unwrap().key).collect();
    assert_eq!(events, ["c/1"]);
}

#[test]
fn the_contract_check_names_the_first_method_a_cell_does_not_serve() {
    let r = start(env!("CARGO_BIN_EXE_kv-partial-cell"));
    let e = StoreClient::connect(&r.peer, Duration::from_secs(5)).unwrap_err();
    assert_eq!(e.status(), Status::FailedPrecondition);
    assert!(e.message().contains("does not serve kv.Store.Watch"), "{e}");
    // Without the check, the methods it serves work and the others are UNIMPLEMENTED.
    let store = StoreClient::new(&r.peer).with_options(CallOptions::timeout(Duration::from_secs(5)));
    assert_eq!(store.get(&GetRequest { key: "k".into() }).unwrap_err().status(), Status::NotFound);
    let e = store.watch(&WatchRequest::default()).unwrap().next().unwrap().unwrap_err();
    assert_eq!(e.status(), Status::Unimplemented, "{e}");
    // A method served as another kind than the service declares is caught too.
    let r = start_with(env!("CARGO_BIN_EXE_kv-partial-cell"), &["--watch-as-unary"]);
    let e = StoreClient::connect(&r.peer, Duration::from_secs(5)).unwrap_err();
    assert_eq!(e.status(), Status::FailedPrecondition);
    assert!(e.message().contains("serves kv.Store.Watch as a unary method, not server streaming"), "{e}");
}

#[test]
fn the_example_host_runs_against_the_rust_cell() {
    let out = Command::new(env!("CARGO_BIN_EXE_kv-host"))
        .arg(env!("CARGO_BIN_EXE_kv-cell"))
        .env("CELLSHM_QUIET", "1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    for line in [
        "watch: #3 fruit/apple = \"green\"",
        "get nothing: NOT_FOUND",
        "upload: 2 chunks, 22 bytes",
        "chat: you said: bye",
    ] {
        assert!(stdout.contains(line), "missing {line:?} in:\n{stdout}");
    }
}

#[test]
fn a_client_of_a_supervised_cell_follows_it_across_a_relaunch() {
    use cellshm::Supervised;
    use cellshm::{CellSpec, CellStatus, ExitReason, Supervisor};

    let supervisor = Supervisor::new(Hub::create(HubConfig::default()).unwrap()).unwrap();
    supervisor.add(CellSpec::new("kv", env!("CARGO_BIN_EXE_kv-cell")).env("CELLSHM_QUIET", "1")).unwrap();
    let ready = |s: &CellStatus| *s == CellStatus::Ready;
    supervisor.wait_for("kv", Duration::from_secs(10), ready).unwrap();
    let cell = Supervised::new(&supervisor, "kv");
    let store = StoreClient::connect(&cell, Duration::from_secs(5))
        .unwrap()
        .with_options(CallOptions::timeout(Duration::from_secs(5)));
    store.put(&PutRequest { key: "k".into(), value: b"v".to_vec() }).unwrap();
    assert_eq!(store.get(&GetRequest { key: "k".into() }).unwrap().value, b"v");
    let pid = supervisor.peer("kv").unwrap().pid().unwrap();
    assert!(Command::new("kill").args(["-9", &pid.to_string()]).status().unwrap().success());
    supervisor.wait_for("kv", Duration::from_secs(5), |s| *s == CellStatus::Crashed(ExitReason::Signal(9))).unwrap();
    supervisor.wait_for("kv", Duration::from_secs(10), ready).unwrap();
    // The same client reaches the new instance, whose memory starts empty.
    assert_eq!(store.get(&GetRequest { key: "k".into() }).unwrap_err().status(), Status::NotFound);
    store.put(&PutRequest { key: "k".into(), value: b"again".to_vec() }).unwrap();
    assert_eq!(store.get(&GetRequest { key: "k".into() }).unwrap().value, b"again");
    supervisor.stop_all(Duration::from_secs(2));
    let e = store.get(&GetRequest { key: "k".into() }).unwrap_err();
    assert_eq!(e.status(), Status::Unavailable, "{e}");
}
