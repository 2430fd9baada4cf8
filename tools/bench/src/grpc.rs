//! gRPC over a Unix socket as a peer case: tonic (hyper, h2), as a tokio program would
//! use it for IPC, unary 64-byte echoes between two processes. Raw bytes both ways (a
//! pass-through codec), so no protobuf encoding is measured, as none is in cellshm's
//! 64-byte echo either.

use std::convert::Infallible;
use std::path::PathBuf;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use cellshm::{Error, Status};
use cellshm_grpc::RawCodec;

fn failed(what: &str, e: impl std::fmt::Display) -> Error {
    Error::new(Status::Internal, format!("tonic: {what}: {e}"))
}

/// `bench.Echo/Echo` answers the request's bytes; `bench.Echo/Fill` streams {count} messages
/// of {size} bytes (two u32s).
#[derive(Clone, Copy, Debug)]
struct EchoServer;

impl tonic::server::NamedService for EchoServer {
    const NAME: &'static str = "bench.Echo";
}

struct Echo;

impl tonic::server::UnaryService<Bytes> for Echo {
    type Response = Bytes;
    type Future = std::future::Ready<Result<tonic::Response<Bytes>, tonic::Status>>;
    fn call(&mut self, request: tonic::Request<Bytes>) -> Self::Future {
        std::future::ready(Ok(tonic::Response::new(request.into_inner())))
    }
}

type Messages = Pin<Box<dyn tokio_stream::Stream<Item = Result<Bytes, tonic::Status>> + Send>>;

struct Fill;

impl tonic::server::ServerStreamingService<Bytes> for Fill {
    type Response = Bytes;
    type ResponseStream = Messages;
    type Future = std::future::Ready<Result<tonic::Response<Messages>, tonic::Status>>;
    fn call(&mut self, request: tonic::Request<Bytes>) -> Self::Future {
        let word = |at: usize| request.get_ref().get(at..at + 4).map(|b| u32::from_le_bytes(b.try_into().unwrap()));
        let (count, size) = (word(0).unwrap_or(0), word(4).unwrap_or(0) as usize);
        let message = Bytes::from(vec![7u8; size]);
        let messages: Messages = Box::pin(tokio_stream::iter((0..count).map(move |_| Ok(message.clone()))));
        std::future::ready(Ok(tonic::Response::new(messages)))
    }
}

type BoxFuture<T> = Pin<Box<dyn std::future::Future<Output = T> + Send>>;

impl tower::Service<http::Request<tonic::body::Body>> for EchoServer {
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<tonic::body::Body>) -> Self::Future {
        Box::pin(async move {
            let mut grpc = tonic::server::Grpc::new(RawCodec);
            Ok(match request.uri().path() {
                "/bench.Echo/Fill" => grpc.server_streaming(Fill, request).await,
                _ => grpc.unary(Echo, request).await,
            })
        })
    }
}

fn runtime() -> Result<tokio::runtime::Runtime, Error> {
    tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| failed("starting tokio", e))
}

/// Where a client dials.
#[derive(Clone, Debug)]
pub enum Transport {
    Uds(PathBuf),
    Tcp(std::net::SocketAddr),
}

/// The server (`cellshm-bench __grpc-server PATH|tcp`): serves on the socket at PATH, or
/// on a free loopback TCP port it prints, until killed.
pub fn grpc_server(args: &[String]) -> Result<(), Error> {
    let at = args.first().ok_or_else(|| Error::new(Status::InvalidArgument, "a socket path or tcp"))?.clone();
    runtime()?.block_on(async {
        let server = tonic::transport::Server::builder().add_service(EchoServer);
        if at == "tcp" {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.map_err(|e| failed("binding", e))?;
            println!("{}", listener.local_addr().map_err(|e| failed("the address", e))?);
            use std::io::Write;
            let _ = std::io::stdout().flush();
            server.serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)).await
        } else {
            let listener = tokio::net::UnixListener::bind(&at).map_err(|e| failed("binding the socket", e))?;
            server.serve_with_incoming(tokio_stream::wrappers::UnixListenerStream::new(listener)).await
        }
        .map_err(|e| failed("serving", e))
    })
}

async fn connect(to: &Transport) -> Result<tonic::transport::Channel, Error> {
    match to {
        Transport::Tcp(address) => tonic::transport::Endpoint::from_shared(format!("http://{address}"))
            .map_err(|e| failed("the address", e))?
            .tcp_nodelay(true)
            .connect()
            .await
            .map_err(|e| failed("connecting", e)),
        Transport::Uds(path) => {
            let path = path.clone();
            // The URI is not used: the connector dials the socket.
            tonic::transport::Endpoint::from_static("http://[::]:50051")
                .connect_with_connector(tower::service_fn(move |_: http::Uri| {
                    let path = path.clone();
                    async move {
                        Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(
                            tokio::net::UnixStream::connect(path).await?,
                        ))
                    }
                }))
                .await
                .map_err(|e| failed("connecting", e))
        }
    }
}

/// A direct tonic server in a child process, on a Unix socket or loopback TCP.
struct DirectServer {
    child: std::process::Child,
    at: Transport,
}

impl DirectServer {
    fn start(tcp: bool) -> Result<DirectServer, Error> {
        let mut command = std::process::Command::new(super::self_exe()?);
        command.arg("__grpc-server");
        if tcp {
            let mut child = command
                .arg("tcp")
                .stdout(std::process::Stdio::piped())
                .spawn()
                .map_err(|e| Error::system("spawning the gRPC server", e))?;
            let mut line = String::new();
            use std::io::BufRead;
            std::io::BufReader::new(child.stdout.take().expect("piped"))
                .read_line(&mut line)
                .map_err(|e| failed("its address", e))?;
            let address = line.trim().parse().map_err(|e| failed("its address", e))?;
            return Ok(DirectServer { child, at: Transport::Tcp(address) });
        }
        let path = std::env::temp_dir().join(format!("cellshm-bench-grpc-{}.sock", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let child = command.arg(&path).spawn().map_err(|e| Error::system("spawning the gRPC server", e))?;
        let started = Instant::now();
        while !path.exists() {
            if started.elapsed() > Duration::from_secs(10) {
                return Err(Error::new(Status::DeadlineExceeded, "the gRPC server did not listen within 10 s"));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        Ok(DirectServer { child, at: Transport::Uds(path) })
    }
}

impl Drop for DirectServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Transport::Uds(path) = &self.at {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// `iterations` unary round trips of 64 bytes to `route` (after a tenth as many to warm
/// up) from a current-thread tokio client, one at a time.
fn unary_round_trips(to: &Transport, route: &'static str, iterations: usize) -> Result<Vec<u64>, Error> {
    runtime()?.block_on(async {
        let mut client = tonic::client::Grpc::new(connect(to).await?);
        let route = http::uri::PathAndQuery::from_static(route);
        let payload = Bytes::from(vec![7u8; 64]);
        let mut samples = Vec::with_capacity(iterations);
        for i in 0..iterations + iterations / 10 {
            let t = Instant::now();
            client.ready().await.map_err(|e| failed("waiting for the channel", e))?;
            let reply = client
                .unary(tonic::Request::new(payload.clone()), route.clone(), RawCodec)
                .await
                .map_err(|e| failed("calling", e))?;
            assert_eq!(reply.get_ref().len(), 64);
            if i >= iterations / 10 {
                samples.push(t.elapsed().as_nanos() as u64);
            }
        }
        Ok(samples)
    })
}

/// GB/s of one server-streaming call of `count` messages of `size` bytes to `route`.
fn stream_rate(to: &Transport, route: &'static str, request: Bytes, count: usize, size: usize) -> Result<f64, Error> {
    runtime()?.block_on(async {
        let mut client = tonic::client::Grpc::new(connect(to).await?)
            .max_decoding_message_size(size + 1024)
            .max_encoding_message_size(size + 1024);
        client.ready().await.map_err(|e| failed("waiting for the channel", e))?;
        let started = Instant::now();
        let mut messages = client
            .server_streaming(tonic::Request::new(request), http::uri::PathAndQuery::from_static(route), RawCodec)
            .await
            .map_err(|e| failed("opening", e))?
            .into_inner();
        let mut bytes = 0usize;
        while let Some(message) = messages.message().await.map_err(|e| failed("reading", e))? {
            bytes += message.len();
        }
        assert_eq!(bytes, count * size);
        Ok(bytes as f64 / started.elapsed().as_secs_f64() / 1e9)
    })
}

/// 64-byte unary round trips to a tonic server that answers them itself.
pub fn unary_direct(iterations: usize, tcp: bool) -> Result<Vec<u64>, Error> {
    let server = DirectServer::start(tcp)?;
    unary_round_trips(&server.at, "/bench.Echo/Echo", iterations)
}

/// A stream of 64 KiB messages from a tonic server that makes them itself.
pub fn stream_direct(count: usize) -> Result<f64, Error> {
    let server = DirectServer::start(true)?;
    let request = Bytes::from([count as u32, 64 << 10].iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<u8>>());
    stream_rate(&server.at, "/bench.Echo/Fill", request, count, 64 << 10)
}

/// The gateway in this process (on a runtime of its own, one worker) in front of a
/// bench cell, on loopback TCP or a Unix socket.
struct GatewayServer {
    _cell: super::BenchCell,
    _runtime: tokio::runtime::Runtime,
    at: Transport,
}

impl GatewayServer {
    /// The gateway's link to the cell waits with `wait`: Spin keeps the gateway's worker
    /// polling between requests, as a blocking Spin caller does; Adaptive lets it and the
    /// cell sleep, each request then paying for their wakeups.
    fn start(tcp: bool, wait: cellshm::WaitStrategy) -> Result<GatewayServer, Error> {
        let cell = super::BenchCell::spawn_with(cellshm::HubConfig::default(), wait, &[("TEST_CELL_ASYNC", "1")])?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .map_err(|e| failed("starting tokio", e))?;
        let gateway = cellshm_grpc::Gateway::new(cell.hub.as_ref().expect("the hub"));
        let at = runtime.block_on(async {
            if tcp {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.map_err(|e| failed("binding", e))?;
                let address = listener.local_addr().map_err(|e| failed("the address", e))?;
                tokio::spawn(gateway.serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)));
                Ok::<_, Error>(Transport::Tcp(address))
            } else {
                let path = std::env::temp_dir().join(format!("cellshm-bench-gateway-{}.sock", std::process::id()));
                let _ = std::fs::remove_file(&path);
                let listener = tokio::net::UnixListener::bind(&path).map_err(|e| failed("binding", e))?;
                tokio::spawn(gateway.serve_with_incoming(tokio_stream::wrappers::UnixListenerStream::new(listener)));
                Ok(Transport::Uds(path))
            }
        })?;
        Ok(GatewayServer { _cell: cell, _runtime: runtime, at })
    }
}

impl Drop for GatewayServer {
    fn drop(&mut self) {
        if let Transport::Uds(path) = &self.at {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// 64-byte unary round trips through the gateway to a cell's `Echo.echo`.
pub fn unary_gateway(iterations: usize, tcp: bool, wait: cellshm::WaitStrategy) -> Result<Vec<u64>, Error> {
    let server = GatewayServer::start(tcp, wait)?;
    unary_round_trips(&server.at, "/Echo/echo", iterations)
}

/// A stream of 64 KiB messages through the gateway from a cell (`AsyncStream.count`),
/// the link waiting as it does by default: on two CPUs a Spin receiver would take the
/// CPU the three-stage pipeline (cell, gateway, client) needs.
pub fn stream_gateway(count: usize) -> Result<f64, Error> {
    let server = GatewayServer::start(true, cellshm::WaitStrategy::default())?;
    let request = Bytes::from([count as u32, 64 << 10].iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<u8>>());
    stream_rate(&server.at, "/AsyncStream/count", request, count, 64 << 10)
}
