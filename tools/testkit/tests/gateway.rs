//! The gRPC gateway (`cellshm-grpc`) with a real tonic client over loopback TCP: the four
//! method kinds pass through, `grpc-timeout` is the call's deadline, a client that drops
//! its call cancels it in the cell, statuses keep their codes and messages (cellshm's own
//! mapped, the original in `cellshm-status`), and a remote reader that stops holds the
//! cell's producer to a bounded amount.

mod common;

use std::time::Duration;

use bytes::Bytes;
use cellshm::{Hub, HubConfig, Peer};
use cellshm_grpc::{Gateway, RawCodec, STATUS_METADATA};
use common::{cancel_seen_after, spawn_cell_on};
use tonic::transport::Channel;

struct Running {
    _hub: Hub,
    peer: Peer,
    child: std::process::Child,
    channel: Channel,
    address: std::net::SocketAddr,
    runtime: tokio::runtime::Runtime,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A hub with one async test cell and a gateway in front of it on a loopback port.
fn start() -> Running {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let hub = Hub::create(HubConfig::default()).unwrap();
    let (peer, child) = spawn_cell_on(&hub, "cell", &[("TEST_CELL_ASYNC", "1")]);
    let gateway = Gateway::new(&hub);
    let (channel, address) = runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(gateway.serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)));
        (Channel::from_shared(format!("http://{address}")).unwrap().connect().await.unwrap(), address)
    });
    Running { _hub: hub, peer, child, channel, address, runtime }
}

fn path(method: &'static str) -> http::uri::PathAndQuery {
    http::uri::PathAndQuery::from_static(method)
}

fn words(values: &[u32]) -> Bytes {
    Bytes::from(values.iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<u8>>())
}

async fn unary(channel: &Channel, method: &'static str, body: Bytes) -> Result<Bytes, tonic::Status> {
    let mut client = tonic::client::Grpc::new(channel.clone());
    client.ready().await.unwrap();
    client.unary(tonic::Request::new(body), path(method), RawCodec).await.map(|r| r.into_inner())
}

/// A unary call with `grpc-timeout: timeout` over a plain HTTP/2 client.
async fn unary_without_client_timer(
    address: &std::net::SocketAddr,
    method: &'static str,
    body: Bytes,
    timeout: &'static str,
) -> Result<Bytes, tonic::Status> {
    let http2 = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .http2_only(true)
        .build_http::<tonic::body::Body>();
    let origin = http::Uri::try_from(format!("http://{address}")).unwrap();
    let mut client = tonic::client::Grpc::with_origin(http2, origin);
    client.ready().await.unwrap();
    let mut request = tonic::Request::new(body);
    request.metadata_mut().insert("grpc-timeout", tonic::metadata::MetadataValue::from_static(timeout));
    client.unary(request, path(method), RawCodec).await.map(|r| r.into_inner())
}

#[test]
fn unary_calls_statuses_deadlines_and_cancels_pass_through() {
    let r = start();
    let dropped_at = r.runtime.block_on(async {
        let reply = unary(&r.channel, "/Echo/echo", Bytes::from_static(b"through the gateway")).await.unwrap();
        assert_eq!(&reply[..], b"through the gateway");
        // A status and its message, 1:1.
        let mut failing = 5u32.to_le_bytes().to_vec();
        failing.extend_from_slice(b"no such key");
        let e = unary(&r.channel, "/Test/fail", failing.into()).await.unwrap_err();
        assert_eq!((e.code(), e.message()), (tonic::Code::NotFound, "no such key"));
        // No cell serves it.
        let e = unary(&r.channel, "/No.Such/method", Bytes::new()).await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::Unimplemented, "{e:?}");
        // grpc-timeout is the call's deadline: DEADLINE_EXCEEDED, never CANCELLED. (A
        // client without a timer of its own: tonic's Channel races the server with one.)
        let e = unary_without_client_timer(&r.address, "/Test/sleep", words(&[5_000]), "100m").await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::DeadlineExceeded, "{e:?}");
        // A client that drops its call cancels it in the cell.
        let dropped_at = cellshm::monotonic_now_ns();
        let abandoned =
            tokio::time::timeout(Duration::from_millis(100), unary(&r.channel, "/Async/until_cancelled", Bytes::new()))
                .await;
        assert!(abandoned.is_err(), "the call should still be waiting");
        dropped_at
    });
    cancel_seen_after(&r.peer, dropped_at);
    r.runtime.block_on(async {
        // cellshm's own status: the cell dies under the call.
        let e = unary(&r.channel, "/Test/exit", words(&[3])).await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::Unavailable, "{e:?}");
        let original = e.metadata().get(STATUS_METADATA).expect("the original status").to_str().unwrap();
        assert_eq!(original, "100 PEER_DEAD");
    });
}

#[test]
fn every_stream_kind_passes_through() {
    let r = start();
    r.runtime.block_on(async {
        let mut client = tonic::client::Grpc::new(r.channel.clone());
        // Server streaming: the request opens the stream, items come back in order.
        client.ready().await.unwrap();
        let response = client
            .server_streaming(tonic::Request::new(words(&[1_000, 64])), path("/AsyncStream/count"), RawCodec)
            .await
            .unwrap();
        let mut items = response.into_inner();
        let mut n = 0u32;
        while let Some(item) = items.message().await.unwrap() {
            assert_eq!(item[..4], n.to_le_bytes());
            assert_eq!(item.len(), 64);
            n += 1;
        }
        assert_eq!(n, 1_000);
        // Client streaming: the messages, then the handler's one answer.
        client.ready().await.unwrap();
        let chunks = tokio_stream::iter((0..200u32).map(|i| Bytes::from(vec![(i % 256) as u8; 500])));
        let answer = client
            .client_streaming(tonic::Request::new(chunks), path("/AsyncStream/sum"), RawCodec)
            .await
            .unwrap()
            .into_inner();
        assert_eq!(answer[..8], (200u64 * 500).to_le_bytes());
        // Bidi: every message echoed, in order.
        client.ready().await.unwrap();
        let messages = tokio_stream::iter((0..300u32).map(|i| Bytes::from(i.to_le_bytes().to_vec())));
        let mut echoes = client
            .streaming(tonic::Request::new(messages), path("/AsyncStream/echo"), RawCodec)
            .await
            .unwrap()
            .into_inner();
        let mut n = 0u32;
        while let Some(echo) = echoes.message().await.unwrap() {
            assert_eq!(&echo[..], n.to_le_bytes());
            n += 1;
        }
        assert_eq!(n, 300);
    });
}

#[test]
fn a_remote_reader_that_stops_holds_the_cells_producer_to_a_bounded_amount() {
    let r = start();
    let before = r.peer.cell_counters().unwrap().bytes_sent;
    r.runtime.block_on(async {
        let mut client = tonic::client::Grpc::new(r.channel.clone());
        client.ready().await.unwrap();
        // 100,000 items of 16 KiB (1.6 GB) asked for; the reader takes 10 and stops.
        let response = client
            .server_streaming(tonic::Request::new(words(&[100_000, 16 << 10])), path("/AsyncStream/count"), RawCodec)
            .await
            .unwrap();
        let mut items = response.into_inner();
        for _ in 0..10 {
            items.message().await.unwrap().unwrap();
        }
        // The window in which a producer not held back would run far past the bound (it
        // makes gigabytes per second): the measurement, not a wait for an event.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let sent = r.peer.cell_counters().unwrap().bytes_sent - before;
        assert!(sent < 64 << 20, "the cell produced {sent} bytes for a reader that stopped");
        drop(items);
    });
    // The stream was cancelled: the cell goes on serving.
    let reply = r.runtime.block_on(unary(&r.channel, "/Echo/echo", Bytes::from_static(b"still here"))).unwrap();
    assert_eq!(&reply[..], b"still here");
}

#[test]
fn health_follows_the_supervisor_serving_not_serving_while_a_cell_relaunches_and_serving_again() {
    use cellshm::{CellSpec, RestartPolicy, Supervisor};
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::{health_client::HealthClient, HealthCheckRequest};
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let supervisor = Supervisor::new(Hub::create(HubConfig::default()).unwrap()).unwrap();
    let policy = RestartPolicy {
        max_restarts: 10,
        initial_backoff: Duration::from_millis(200),
        max_backoff: Duration::from_millis(200),
        reset_after: Duration::from_secs(60),
    };
    let spec = CellSpec::new("cell", common::CELL).args(["cell"]).env("CELLSHM_QUIET", "1").restart(policy);
    supervisor.add(spec).unwrap();
    supervisor.wait_for("cell", Duration::from_secs(10), |s| *s == cellshm::CellStatus::Ready).unwrap();
    let gateway = Gateway::with_supervisor(&supervisor);
    let serving = runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let serving =
            tokio::spawn(gateway.serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)));
        let channel = Channel::from_shared(format!("http://{address}")).unwrap().connect().await.unwrap();
        let mut health = HealthClient::new(channel);
        let check = |service: &str| HealthCheckRequest { service: service.to_string() };
        let status = |s: i32| ServingStatus::try_from(s).unwrap();
        // The gateway's first update runs as it starts serving: watch until SERVING.
        let mut watch = health.watch(check("Echo")).await.unwrap().into_inner();
        let mut seen = vec![status(watch.message().await.unwrap().unwrap().status)];
        while seen.last() != Some(&ServingStatus::Serving) {
            seen.push(status(watch.message().await.unwrap().unwrap().status));
        }
        assert_eq!(status(health.check(check("Echo")).await.unwrap().into_inner().status), ServingStatus::Serving);
        assert_eq!(status(health.check(check("")).await.unwrap().into_inner().status), ServingStatus::Serving);
        let e = health.check(check("No.Such")).await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::NotFound, "{e:?}");
        // SIGKILL: NOT_SERVING while it relaunches, then SERVING, in order.
        let pid = supervisor.peer("cell").unwrap().pid().unwrap();
        // SAFETY: a signal to the cell's own process.
        unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        for expected in [ServingStatus::NotServing, ServingStatus::Serving] {
            let update = tokio::time::timeout(Duration::from_secs(10), watch.message()).await.expect("an update");
            assert_eq!(status(update.unwrap().unwrap().status), expected);
        }
        assert_eq!(status(health.check(check("Echo")).await.unwrap().into_inner().status), ServingStatus::Serving);
        serving.abort_handle()
    });

    // The gateway stops serving: its health updates end with it at the supervisor's next
    // event (they do not follow a supervisor that outlives it), and nothing of it is left
    // on the runtime.
    serving.abort();
    supervisor.restart("cell", Duration::from_secs(2)).unwrap();
    let metrics = runtime.metrics();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while metrics.num_alive_tasks() > 0 {
        assert!(std::time::Instant::now() < deadline, "{} tasks still alive", metrics.num_alive_tasks());
        supervisor.wait_for("cell", Duration::from_secs(10), |s| *s == cellshm::CellStatus::Ready).unwrap();
        std::thread::yield_now();
    }
}

#[test]
fn garbage_oversized_messages_and_ten_thousand_abandoned_streams_leave_it_serving_and_bounded() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let r = start();
    let tasks_before = r.runtime.metrics().num_alive_tasks();
    r.runtime.block_on(async {
        // Garbage where HTTP/2 is expected: that connection is closed, nothing else.
        let mut raw = tokio::net::TcpStream::connect(r.address).await.unwrap();
        raw.write_all(&[0xA5; 4096]).await.unwrap();
        let mut rest = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(10), raw.read_to_end(&mut rest)).await.expect("closed");
        // A message past the limit: RESOURCE_EXHAUSTED, and the next call goes through.
        let e = unary(&r.channel, "/Echo/echo", Bytes::from(vec![0u8; cellshm_grpc::DEFAULT_MAX_MESSAGE + 1]))
            .await
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::ResourceExhausted, "{e:?}");
        // 10,000 streams opened, read once and abandoned, 50 at a time. The cell bounds
        // the streams open towards it (64): a stream beyond is refused with
        // RESOURCE_EXHAUSTED, the only failure allowed here.
        let mut refused = 0;
        for _ in 0..200 {
            let opened = (0..50).map(|_| {
                let mut client = tonic::client::Grpc::new(r.channel.clone());
                async move {
                    client.ready().await.unwrap();
                    let request = tonic::Request::new(words(&[1_000_000, 64]));
                    let mut items =
                        client.server_streaming(request, path("/AsyncStream/count"), RawCodec).await?.into_inner();
                    items.message().await.map(|_| ())
                }
            });
            for outcome in futures::future::join_all(opened).await {
                match outcome {
                    Ok(()) => {}
                    Err(e) if e.code() == tonic::Code::ResourceExhausted => refused += 1,
                    Err(e) => panic!("an abandoned stream failed otherwise: {e:?}"),
                }
            }
        }
        eprintln!("10,000 streams opened and abandoned, {refused} refused by the cell's bound");
        let reply = unary(&r.channel, "/Echo/echo", Bytes::from_static(b"after the flood")).await.unwrap();
        assert_eq!(&reply[..], b"after the flood");
    });
    // Every abandoned stream was cancelled in the link (none left open), and the gateway
    // keeps no task for them: its runtime's tasks come back to a constant few (the
    // gateway's, the health updater's, the connections'; CI once saw one more than the
    // count taken at the start, which a leak of one task per stream would dwarf).
    common::poll_until(
        Duration::from_secs(10),
        || format!("{:?}", r.peer.metrics()),
        || r.peer.metrics().open_streams == 0,
    );
    let alive = || r.runtime.metrics().num_alive_tasks();
    common::poll_until(
        Duration::from_secs(10),
        || format!("{} tasks alive, {tasks_before} before", alive()),
        || alive() <= tasks_before + 2,
    );
}

#[test]
fn reflection_lists_every_service_served_and_describes_what_was_described() {
    use tonic_reflection::pb::v1alpha::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1alpha::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1alpha::server_reflection_response::MessageResponse;
    use tonic_reflection::pb::v1alpha::ServerReflectionRequest;
    let r = start();
    r.runtime.block_on(async {
        // v1alpha, which older clients speak (grpcurl's test in test_gateway.py speaks v1).
        let mut client = ServerReflectionClient::new(r.channel.clone());
        let ask =
            |message: MessageRequest| ServerReflectionRequest { host: String::new(), message_request: Some(message) };
        let requests = [
            ask(MessageRequest::ListServices(String::new())),
            ask(MessageRequest::FileContainingSymbol("grpc.health.v1.Health".into())),
        ];
        let mut answers = client.server_reflection_info(tokio_stream::iter(requests)).await.unwrap().into_inner();
        let Some(MessageResponse::ListServicesResponse(listed)) =
            answers.message().await.unwrap().unwrap().message_response
        else {
            panic!("not a list of services")
        };
        let listed: Vec<String> = listed.service.into_iter().map(|s| s.name).collect();
        // The test cell registered no descriptors: its services are listed all the same.
        for service in ["Echo", "Test", "grpc.health.v1.Health", "grpc.reflection.v1.ServerReflection"] {
            assert!(listed.iter().any(|s| s == service), "{service} not in {listed:?}");
        }
        let Some(MessageResponse::FileDescriptorResponse(files)) =
            answers.message().await.unwrap().unwrap().message_response
        else {
            panic!("not a file")
        };
        assert_eq!(files.file_descriptor_proto.len(), 1);
        // A service nobody described is listed, not described.
        let requests = [ask(MessageRequest::FileContainingSymbol("Echo".into()))];
        let mut answers = client.server_reflection_info(tokio_stream::iter(requests)).await.unwrap().into_inner();
        assert_eq!(answers.message().await.unwrap_err().code(), tonic::Code::NotFound);
    });
}

/// A certificate (PEM) and its key (PEM) for `common_name`, signed by `issuer`.
fn leaf(
    issuer: &rcgen::Issuer<'_, rcgen::KeyPair>,
    common_name: &str,
    purpose: rcgen::ExtendedKeyUsagePurpose,
) -> (String, String) {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    params.distinguished_name.push(rcgen::DnType::CommonName, common_name);
    params.extended_key_usages = vec![purpose];
    (params.signed_by(&key, issuer).unwrap().pem(), key.serialize_pem())
}

#[test]
fn mtls_refuses_a_client_without_a_certificate_and_the_hosts_allow_list_refuses_a_subject_it_does_not_name() {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair};
    use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name.push(DnType::CommonName, "cellshm test CA");
    let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate().unwrap()).unwrap();
    let (server_cert, server_key) = leaf(&ca, "gateway", ExtendedKeyUsagePurpose::ServerAuth);
    let tls =
        cellshm_grpc::Tls::from_pem(server_cert.as_bytes(), server_key.as_bytes(), Some(ca.pem().as_bytes())).unwrap();

    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let hub = Hub::create(HubConfig::default()).unwrap();
    let (_peer, mut child) = spawn_cell_on(&hub, "cell", &[]);
    // The rule a cell calling a host method would meet: here it guards a cell's method.
    hub.allow("Echo.echo", &["ops"]).unwrap();
    let gateway = Gateway::new(&hub).tls(tls);
    // The same hub behind a plain gateway whose callers are named by bearer tokens.
    let tokens = Gateway::new(&hub).bearer_tokens(|token| (token == "s3cret").then(|| "ops".to_string()));
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(gateway.serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)));
        let plain = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let plain_address = plain.local_addr().unwrap();
        tokio::spawn(tokens.serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(plain)));

        let client = |identity: Option<(&str, &str)>| {
            let mut config =
                ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca.pem())).domain_name("localhost");
            if let Some((cert, key)) = identity {
                config = config.identity(Identity::from_pem(cert, key));
            }
            Endpoint::from_shared(format!("https://{address}")).unwrap().tls_config(config).unwrap()
        };
        let (ops_cert, ops_key) = leaf(&ca, "ops", ExtendedKeyUsagePurpose::ClientAuth);
        let (guest_cert, guest_key) = leaf(&ca, "guest", ExtendedKeyUsagePurpose::ClientAuth);

        // No certificate: the server ends the handshake (under TLS 1.3 the client learns
        // it at its first request), and nothing reaches the cell.
        if let Ok(channel) = client(None).connect().await {
            let refused = unary(&channel, "/Echo/echo", Bytes::from_static(b"hi")).await.unwrap_err();
            // A transport error (how tonic words it varies with the moment), not a status
            // an HTTP/2 response carried.
            let codes = [tonic::Code::Unknown, tonic::Code::Unavailable, tonic::Code::Cancelled];
            assert!(codes.contains(&refused.code()), "{refused:?}");
            assert!(std::error::Error::source(&refused).is_some(), "{refused:?}");
        }

        let ops = client(Some((&ops_cert, &ops_key))).connect().await.unwrap();
        assert_eq!(&unary(&ops, "/Echo/echo", Bytes::from_static(b"hi")).await.unwrap()[..], b"hi");
        let guest = client(Some((&guest_cert, &guest_key))).connect().await.unwrap();
        let denied = unary(&guest, "/Echo/echo", Bytes::from_static(b"hi")).await.unwrap_err();
        assert_eq!(denied.code(), tonic::Code::PermissionDenied, "{denied:?}");
        assert!(denied.message().contains("remote caller \"guest\""), "{denied:?}");
        // A method without a rule is open to any authenticated client.
        assert_eq!(unary(&guest, "/Test/sleep", words(&[0])).await.unwrap().len(), 0);

        // Bearer tokens: the name the check gives is the caller; a refused token is
        // UNAUTHENTICATED; no token at all is an unknown caller, which the list refuses.
        let channel = Channel::from_shared(format!("http://{plain_address}")).unwrap().connect().await.unwrap();
        let with_token = |token: &'static str| {
            let mut request = tonic::Request::new(Bytes::from_static(b"tok"));
            request.metadata_mut().insert("authorization", tonic::metadata::MetadataValue::from_static(token));
            request
        };
        let mut grpc = tonic::client::Grpc::new(channel.clone());
        grpc.ready().await.unwrap();
        let ok = grpc.unary(with_token("Bearer s3cret"), path("/Echo/echo"), RawCodec).await.unwrap();
        assert_eq!(&ok.into_inner()[..], b"tok");
        grpc.ready().await.unwrap();
        let bad = grpc.unary(with_token("Bearer wrong"), path("/Echo/echo"), RawCodec).await.unwrap_err();
        assert_eq!(bad.code(), tonic::Code::Unauthenticated, "{bad:?}");
        let anonymous = unary(&channel, "/Echo/echo", Bytes::from_static(b"hi")).await.unwrap_err();
        assert_eq!(anonymous.code(), tonic::Code::PermissionDenied, "{anonymous:?}");

        // `cellshm list` shows both gateways with their calls (the refusals as failed).
        let listing = cellshm::list_hubs().unwrap().into_iter().find(|h| h.name == hub.name()).unwrap();
        let gateways: Vec<_> = listing.endpoints.iter().filter(|e| e.kind == "grpc-gateway").collect();
        assert_eq!(gateways.len(), 2, "{:?}", listing.endpoints);
        assert!(gateways.iter().any(|e| e.tls && e.calls == 3 && e.failed == 1), "{gateways:?}");
        assert!(gateways.iter().any(|e| !e.tls && e.calls == 3 && e.failed == 2), "{gateways:?}");
    });
    let _ = child.kill();
    let _ = child.wait();
}
