//! The host's relay (`Hub::enable_relay`): a process the host names by uid attaches and
//! reaches the host's cells through the host (what a gRPC gateway in a process of its
//! own needs), calls and streams both, with the host's access rules applied to the
//! remote callers it names; spawned cells may not use it.

mod common;

use std::time::Duration;

use cellshm::host::attach::AttachPolicy;
use cellshm::host::relay::{Routed, CALL, PEERS, STREAM};
use cellshm::wire::BodyReader;
use cellshm::{CallOptions, Cell, CellOptions, Hub, HubConfig, LinkEnd, Status};
use common::spawn_cell_on;

fn secs(n: u64) -> CallOptions {
    CallOptions::timeout(Duration::from_secs(n))
}

#[test]
fn an_attached_relay_reaches_the_hosts_cells_and_the_hosts_rules_hold_for_its_callers() {
    let hub = Hub::create(HubConfig::default()).unwrap();
    let (peer, mut child) = spawn_cell_on(&hub, "echo", &[]);
    let _attach = hub.enable_attach(AttachPolicy::default()).unwrap();
    // SAFETY: geteuid has no preconditions.
    let me = unsafe { libc::geteuid() };
    hub.enable_relay(&[me + 1]).unwrap();
    // Enabled again: for these uids instead.
    hub.enable_relay(&[me]).unwrap();
    hub.allow("Test.sleep", &["ops"]).unwrap();
    let relay = Cell::attach(hub.name(), "gateway", CellOptions::from_env().unwrap()).unwrap();

    let peers = relay.call(PEERS, &[], &secs(5)).unwrap();
    let mut reader = BodyReader::new(peers.bytes());
    let listed: Vec<(String, u32)> =
        (0..reader.u32().unwrap()).map(|_| (reader.str().unwrap(), reader.u32().unwrap())).collect();
    assert!(listed.contains(&("echo".to_string(), peer.identity().epoch)), "{listed:?}");

    let call = |method: &str, caller: Option<&str>, request: &[u8]| {
        relay.call(CALL, &Routed::encode("echo", method, caller, request), &secs(5))
    };
    assert_eq!(call("Echo.echo", None, b"relayed").unwrap().bytes(), b"relayed");
    let mut fail = (Status::NotFound.code()).to_le_bytes().to_vec();
    fail.extend_from_slice(b"not here");
    let e = call("Test.fail", None, &fail).unwrap_err();
    assert_eq!((e.status(), e.message()), (Status::NotFound, "not here"));
    let e = relay.call(CALL, &Routed::encode("nobody", "Echo.echo", None, b""), &secs(5)).unwrap_err();
    assert_eq!(e.status(), Status::Unavailable, "{e}");
    // The host's rules, for the remote callers the relay names.
    assert!(call("Test.sleep", Some("ops"), &0u32.to_le_bytes()).is_ok());
    let e = call("Test.sleep", Some("guest"), &0u32.to_le_bytes()).unwrap_err();
    assert_eq!(e.status(), Status::PermissionDenied, "{e}");
    assert_eq!(call("Test.sleep", None, &0u32.to_le_bytes()).unwrap_err().status(), Status::PermissionDenied);
    // A stream both ways, ended as the cell ends it.
    let stream = relay.open_stream(STREAM, &Routed::encode("echo", "Stream.echo", None, b""), &secs(10)).unwrap();
    for i in 0..20u32 {
        stream.send(&i.to_le_bytes()).unwrap();
        assert_eq!(stream.recv().unwrap().unwrap().bytes(), i.to_le_bytes());
    }
    stream.close_send().unwrap();
    assert!(stream.recv().unwrap().is_none());
    stream.finish().unwrap();
    // A cell that ends its stream while the relay still may send: the relay sees the end
    // at once (the host does not wait for the relay's side to close).
    let mut count = Vec::new();
    for v in [3u32, 16, 0] {
        count.extend_from_slice(&v.to_le_bytes());
    }
    let started = std::time::Instant::now();
    let stream = relay.open_stream(STREAM, &Routed::encode("echo", "Stream.count", None, &count), &secs(20)).unwrap();
    let mut items = 0;
    while stream.recv().unwrap().is_some() {
        items += 1;
    }
    assert_eq!(items, 3);
    stream.finish().unwrap();
    assert!(started.elapsed() < Duration::from_secs(10), "the end waited for the relay: {:?}", started.elapsed());
    // A spawned cell is not a relay.
    let mut body = 5000u32.to_le_bytes().to_vec();
    body.extend_from_slice(PEERS.as_bytes());
    body.push(0);
    let e = peer.call("Test.call_host_method", &body, &secs(10)).unwrap_err();
    assert_eq!(e.status(), Status::PermissionDenied, "{e}");
    let _ = child.kill();
    let _ = child.wait();
}
