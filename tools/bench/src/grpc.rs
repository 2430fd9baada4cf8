//! gRPC over a Unix socket as a peer case: tonic (hyper, h2), as a tokio program would
//! use it for IPC, unary 64-byte echoes between two processes. Raw bytes both ways (a
//! pass-through codec), so no protobuf encoding is measured, as none is in cellshm's
//! 64-byte echo either.

use std::convert::Infallible;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use cellshm::{Error, Status};
use cellshm_grpc::RawCodec;

fn failed(what: &str, e: impl std::fmt::Display) -> Error {
    Error::new(Status::Internal, format!("tonic: {what}: {e}"))
}

/// `bench.Echo/Echo`: answers the request's bytes.
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

type BoxFuture<T> = Pin<Box<dyn std::future::Future<Output = T> + Send>>;

impl tower::Service<http::Request<tonic::body::Body>> for EchoServer {
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<tonic::body::Body>) -> Self::Future {
        Box::pin(async move { Ok(tonic::server::Grpc::new(RawCodec).unary(Echo, request).await) })
    }
}

fn runtime() -> Result<tokio::runtime::Runtime, Error> {
    tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| failed("starting tokio", e))
}

/// The server (`cellshm-bench __grpc-server PATH`): serves on the socket at PATH until
/// killed.
pub fn grpc_server(args: &[String]) -> Result<(), Error> {
    let path = PathBuf::from(args.first().ok_or_else(|| Error::new(Status::InvalidArgument, "a socket path"))?);
    runtime()?.block_on(async {
        let listener = tokio::net::UnixListener::bind(&path).map_err(|e| failed("binding the socket", e))?;
        tonic::transport::Server::builder()
            .add_service(EchoServer)
            .serve_with_incoming(tokio_stream::wrappers::UnixListenerStream::new(listener))
            .await
            .map_err(|e| failed("serving", e))
    })
}

async fn connect(path: &Path) -> Result<tonic::transport::Channel, Error> {
    let path = path.to_path_buf();
    // The URI is not used: the connector dials the socket.
    tonic::transport::Endpoint::from_static("http://[::]:50051")
        .connect_with_connector(tower::service_fn(move |_: http::Uri| {
            let path = path.clone();
            async move {
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(tokio::net::UnixStream::connect(path).await?))
            }
        }))
        .await
        .map_err(|e| failed("connecting", e))
}

/// `iterations` unary round trips of 64 bytes (after a tenth as many to warm up) from a
/// current-thread tokio client, one at a time, against a server in a child process.
pub fn unary_uds(iterations: usize) -> Result<Vec<u64>, Error> {
    let path = std::env::temp_dir().join(format!("cellshm-bench-grpc-{}.sock", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let mut child = std::process::Command::new(super::self_exe()?)
        .arg("__grpc-server")
        .arg(&path)
        .spawn()
        .map_err(|e| Error::system("spawning the gRPC server", e))?;
    let measured = runtime()?.block_on(async {
        let started = Instant::now();
        while !path.exists() {
            if started.elapsed() > Duration::from_secs(10) {
                return Err(Error::new(Status::DeadlineExceeded, "the gRPC server did not listen within 10 s"));
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let mut client = tonic::client::Grpc::new(connect(&path).await?);
        let route = http::uri::PathAndQuery::from_static("/bench.Echo/Echo");
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
    });
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_file(&path);
    measured
}
