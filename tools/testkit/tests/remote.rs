//! Remote gRPC servers as peers (`cellshm_grpc::Remote`): a tonic server that answers
//! itself is added to a hub, and a Rust cell calls its methods as host methods: the
//! answer and the statuses come back, the cell's deadline reaches the remote as
//! `grpc-timeout` and ends its handler, and the host calls it too.

mod common;

use std::convert::Infallible;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use cellshm::{CallOptions, Hub, HubConfig, LinkEnd, MethodKind, Status};
use cellshm_grpc::{AddRemote, RawCodec, RemoteOptions};
use common::spawn_cell_on;
use tonic::server::Grpc;

/// What the remote saw.
#[derive(Default)]
struct Seen {
    timeouts: Mutex<Vec<String>>,
    /// `Host.wait` handlers that ended without answering (their call was reset).
    abandoned: AtomicU32,
    ended: tokio::sync::Notify,
}

/// Counts a `Host.wait` handler dropped before it answered.
struct Abandoned(Arc<Seen>);

impl Drop for Abandoned {
    fn drop(&mut self) {
        self.0.abandoned.fetch_add(1, Ordering::SeqCst);
        self.0.ended.notify_waiters();
    }
}

async fn serve(seen: Arc<Seen>, request: http::Request<tonic::body::Body>) -> http::Response<tonic::body::Body> {
    if let Some(timeout) = request.headers().get("grpc-timeout") {
        seen.timeouts.lock().unwrap().push(timeout.to_str().unwrap().to_string());
    }
    let mut grpc = Grpc::new(RawCodec);
    match request.uri().path() {
        "/Host/echo" => {
            let echo = |r: tonic::Request<Bytes>| async move { Ok(tonic::Response::new(r.into_inner())) };
            grpc.unary(tower::service_fn(echo), request).await
        }
        "/Host/fail" => {
            let fail = |_: tonic::Request<Bytes>| async {
                Err::<tonic::Response<Bytes>, _>(tonic::Status::not_found("no such thing"))
            };
            grpc.unary(tower::service_fn(fail), request).await
        }
        "/Host/wait" => {
            let wait = move |_: tonic::Request<Bytes>| {
                let guard = Abandoned(seen.clone());
                async move {
                    let _guard = guard;
                    std::future::pending::<Result<tonic::Response<Bytes>, tonic::Status>>().await
                }
            };
            grpc.unary(tower::service_fn(wait), request).await
        }
        other => tonic::Status::unimplemented(format!("no {other}")).into_http(),
    }
}

#[test]
fn a_rust_cell_calls_a_remote_grpc_server_through_its_host_with_statuses_and_deadlines() {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let seen = Arc::new(Seen::default());
    let address = runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let seen = seen.clone();
        let service = tower::service_fn(move |request: http::Request<axum::body::Body>| {
            let seen = seen.clone();
            async move { Ok::<_, Infallible>(serve(seen, request.map(tonic::body::Body::new)).await) }
        });
        let routes = tonic::service::Routes::from(axum::Router::new().fallback_service(service));
        let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
        tokio::spawn(tonic::transport::Server::builder().add_routes(routes).serve_with_incoming(incoming));
        address
    });
    let hub = Hub::create(HubConfig::default()).unwrap();
    let options = RemoteOptions::new()
        .method("Host.echo", MethodKind::Unary)
        .method("Host.fail", MethodKind::Unary)
        .method("Host.wait", MethodKind::Unary);
    let url = format!("http://{address}");
    let remote = runtime.block_on(hub.add_remote("upstream", &url, options)).unwrap();
    let (peer, mut child) = spawn_cell_on(&hub, "cell", &[]);
    let through_cell = |timeout_ms: u32, method: &str, request: &[u8]| {
        let mut body = timeout_ms.to_le_bytes().to_vec();
        body.extend_from_slice(method.as_bytes());
        body.push(0);
        body.extend_from_slice(request);
        peer.call("Test.call_host_method", &body, &CallOptions::timeout(Duration::from_secs(20)))
    };

    // Cell → host → remote and back.
    assert_eq!(through_cell(5_000, "Host.echo", b"over the network").unwrap().bytes(), b"over the network");
    let e = through_cell(5_000, "Host.fail", b"").unwrap_err();
    assert_eq!((e.status(), e.message()), (Status::NotFound, "no such thing"));
    // The cell's deadline is the remote call's grpc-timeout: the remote's handler ends
    // (its stream reset), and the cell sees DEADLINE_EXCEEDED.
    let abandoned_before = seen.abandoned.load(Ordering::SeqCst);
    let ended = seen.ended.notified();
    let e = through_cell(300, "Host.wait", b"").unwrap_err();
    assert_eq!(e.status(), Status::DeadlineExceeded, "{e}");
    runtime.block_on(async {
        if seen.abandoned.load(Ordering::SeqCst) == abandoned_before {
            tokio::time::timeout(Duration::from_secs(10), ended).await.expect("the remote's handler ends");
        }
    });
    let timeout = seen.timeouts.lock().unwrap().last().cloned().unwrap();
    let (digits, unit) = timeout.split_at(timeout.len() - 1);
    let nanos = digits.parse::<u64>().unwrap()
        * match unit {
            "n" => 1,
            "u" => 1_000,
            "m" => 1_000_000,
            other => panic!("unit {other}"),
        };
    assert!(nanos > 0 && nanos <= 300_000_000, "grpc-timeout {timeout} for a 300 ms deadline");

    // The host calls it itself; every forwarded call was counted.
    let reply =
        runtime.block_on(remote.call("Host.echo", b"from the host", &CallOptions::timeout(Duration::from_secs(5))));
    assert_eq!(&reply.unwrap()[..], b"from the host");
    let e =
        runtime.block_on(remote.call("Host.wait", b"", &CallOptions::timeout(Duration::from_millis(200)))).unwrap_err();
    assert_eq!(e.status(), Status::DeadlineExceeded, "{e}");
    assert_eq!(remote.counters(), (5, 3));
    // `cellshm list` (the hub's INFO) shows the remote with its counts.
    let listing = cellshm::list_hubs().unwrap().into_iter().find(|h| h.name == hub.name()).unwrap();
    let listed = listing.endpoints.iter().find(|e| e.kind == "grpc-remote:upstream").expect("the remote is listed");
    assert_eq!((listed.address.as_str(), listed.tls, listed.calls, listed.failed), (url.as_str(), false, 5, 3));
    let _ = child.kill();
    let _ = child.wait();
}

/// A tonic server with only `grpc.health.v1.Health`, whose status the test sets; dropped
/// `stop` ends it.
async fn health_server(
) -> (std::net::SocketAddr, tonic_health::server::HealthReporter, tokio::sync::oneshot::Sender<()>) {
    let (reporter, service) = tonic_health::server::health_reporter();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
    tokio::spawn(tonic::transport::Server::builder().add_service(service).serve_with_incoming_shutdown(
        incoming,
        async {
            let _ = stopped.await;
        },
    ));
    (address, reporter, stop)
}

#[test]
fn a_supervisor_shows_a_remote_by_its_grpc_health_with_an_event_on_each_change() {
    use cellshm::{CellStatus, Supervisor};
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let (address, reporter, stop) = runtime.block_on(health_server());
    let supervisor = Supervisor::new(Hub::create(HubConfig::default()).unwrap()).unwrap();
    let events = Arc::new(Mutex::new(Vec::new()));
    let seen = events.clone();
    let _subscription = supervisor.on_event(move |e| seen.lock().unwrap().push((e.name.clone(), e.status.clone())));
    let options =
        RemoteOptions::new().method("Store.get", MethodKind::Unary).health_interval(Duration::from_millis(20));
    let url = format!("http://{address}");
    runtime.block_on(supervisor.add_remote("store", &url, options.clone())).unwrap();
    let is = |name: &'static str| move |s: &CellStatus| s.name() == name;
    let wait = |name: &'static str| supervisor.wait_for("store", Duration::from_secs(20), is(name)).unwrap();

    // tonic's reporter says SERVING for the server ("") from the start.
    wait("ready");
    assert_eq!(supervisor.names(), vec!["store".to_string()]);
    runtime.block_on(reporter.set_service_status("", tonic_health::ServingStatus::NotServing));
    match wait("unavailable") {
        CellStatus::Unavailable(why) => assert!(why.contains("NOT_SERVING"), "{why}"),
        other => panic!("{other:?}"),
    }
    runtime.block_on(reporter.set_service_status("", tonic_health::ServingStatus::Serving));
    wait("ready");
    // The server goes away: unavailable, with the transport's reason.
    let _ = stop.send(());
    wait("unavailable");

    // It is not the supervisor's to launch, stop or call; a second one of the name is refused.
    for e in [
        supervisor.stop("store", Duration::ZERO).unwrap_err(),
        supervisor.restart("store", Duration::ZERO).unwrap_err(),
        supervisor.start("store").unwrap_err(),
        supervisor.ready_peer("store").unwrap_err(),
    ] {
        assert_eq!(e.status(), Status::FailedPrecondition, "{e}");
    }
    assert!(supervisor.spec("store").is_none() && supervisor.peer("store").is_none());
    let e = runtime.block_on(supervisor.add_remote("store", &url, options)).unwrap_err();
    assert_eq!(e.status(), Status::AlreadyExists, "{e}");

    // Removing it ends the watch: "removed" is its last event.
    supervisor.remove("store", Duration::ZERO).unwrap();
    assert!(supervisor.names().is_empty());
    let statuses: Vec<&'static str> = events.lock().unwrap().iter().map(|(_, s)| s.name()).collect();
    assert_eq!(statuses, ["starting", "ready", "unavailable", "ready", "unavailable", "removed"]);
}
