//! The gateway's service: every gRPC request, whatever its path, routed to a cell and
//! passed through in both directions.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use cellshm::{AsyncStream, CallOptions, Hub, LinkEnd, MethodKind, Peer};
use tonic::body::Body;
use tonic::server::Grpc;
use tonic::{Request, Response, Status, Streaming};

use crate::codec::RawCodec;
use crate::routes::Routes;
use crate::status::to_grpc_status;
use crate::timeout::parse_grpc_timeout;

type BoxFuture<T> = Pin<Box<dyn std::future::Future<Output = T> + Send>>;

/// The largest message a client may send or receive through the gateway unless
/// configured otherwise (cellshm's own limit is the largest slot of the hub).
pub const DEFAULT_MAX_MESSAGE: usize = 16 << 20;

/// A gRPC server in front of a hub's cells (see the crate's documentation).
#[derive(Clone)]
pub struct Gateway {
    inner: Arc<Inner>,
}

struct Inner {
    routes: Routes,
    max_message: usize,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway").field("max_message", &self.inner.max_message).finish_non_exhaustive()
    }
}

impl Gateway {
    /// A gateway to the cells of `hub` (it keeps a view of the hub's peers, not the hub).
    pub fn new(hub: &Hub) -> Gateway {
        Gateway { inner: Arc::new(Inner { routes: Routes::new(hub.view()), max_message: DEFAULT_MAX_MESSAGE }) }
    }

    /// The largest message either way (default [`DEFAULT_MAX_MESSAGE`]); larger ones are
    /// RESOURCE_EXHAUSTED.
    pub fn max_message_size(self, bytes: usize) -> Gateway {
        let routes = Routes::new(self.inner.routes.hub().clone());
        Gateway { inner: Arc::new(Inner { routes, max_message: bytes }) }
    }

    /// The routes to mount on a tonic server: every path goes to the gateway.
    pub fn routes(&self) -> tonic::service::Routes {
        let service = GatewayService { inner: self.inner.clone() };
        let router = axum::Router::new()
            .fallback_service(tower::ServiceExt::map_request(service, |request: http::Request<axum::body::Body>| {
                request.map(Body::new)
            }));
        tonic::service::Routes::from(router)
    }

    /// Serves on `addr` (plain HTTP/2) until the future is dropped or fails.
    pub async fn serve(self, addr: SocketAddr) -> Result<(), tonic::transport::Error> {
        tonic::transport::Server::builder().add_routes(self.routes()).serve(addr).await
    }

    /// Serves the connections `incoming` yields (a Unix socket's, a TLS acceptor's).
    pub async fn serve_with_incoming<I, IO, IE>(self, incoming: I) -> Result<(), tonic::transport::Error>
    where
        I: tokio_stream::Stream<Item = Result<IO, IE>>,
        IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + tonic::transport::server::Connected + Unpin + Send + 'static,
        IO::ConnectInfo: Clone + Send + Sync + 'static,
        IE: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        tonic::transport::Server::builder().add_routes(self.routes()).serve_with_incoming(incoming).await
    }
}

/// The tower service behind [`Gateway::routes`].
#[derive(Clone)]
struct GatewayService {
    inner: Arc<Inner>,
}

/// `"pkg.Svc.Method"` from `/pkg.Svc/Method`.
fn method_of(path: &str) -> Option<String> {
    let (service, method) = path.strip_prefix('/')?.split_once('/')?;
    (!service.is_empty() && !method.is_empty() && !method.contains('/')).then(|| format!("{service}.{method}"))
}

/// The call's options from the request's `grpc-timeout`: its deadline, else the peer's
/// default timeout (a unary call) or none (a stream), as for any cellshm call.
fn options_of(headers: &http::HeaderMap, kind: MethodKind) -> Result<CallOptions, Status> {
    match headers.get("grpc-timeout") {
        Some(value) => value
            .to_str()
            .ok()
            .and_then(parse_grpc_timeout)
            .map(CallOptions::timeout)
            .ok_or_else(|| Status::invalid_argument(format!("malformed grpc-timeout {value:?}"))),
        None if kind == MethodKind::Unary => Ok(CallOptions::default()),
        None => Ok(CallOptions::forever()),
    }
}

impl tower::Service<http::Request<Body>> for GatewayService {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<Result<http::Response<Body>, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let inner = self.inner.clone();
        Box::pin(async move { Ok(inner.handle(request).await.unwrap_or_else(|status| status.into_http())) })
    }
}

impl Inner {
    async fn handle(&self, request: http::Request<Body>) -> Result<http::Response<Body>, Status> {
        let method = method_of(request.uri().path())
            .ok_or_else(|| Status::unimplemented(format!("{:?} is not a gRPC method path", request.uri().path())))?;
        let (peer, kind) = self.routes.route(&method).await?;
        let options = options_of(request.headers(), kind)?;
        let call = Call { peer, method: Arc::from(method.as_str()), options };
        let mut grpc =
            Grpc::new(RawCodec).max_decoding_message_size(self.max_message).max_encoding_message_size(self.max_message);
        Ok(match kind {
            MethodKind::Unary => grpc.unary(tower::service_fn(move |r| call.clone().unary(r)), request).await,
            MethodKind::ServerStreaming => {
                grpc.server_streaming(tower::service_fn(move |r| call.clone().server_streaming(r)), request).await
            }
            MethodKind::ClientStreaming => {
                grpc.client_streaming(tower::service_fn(move |r| call.clone().client_streaming(r)), request).await
            }
            MethodKind::Bidi | MethodKind::Stream => {
                grpc.streaming(tower::service_fn(move |r| call.clone().bidi(r)), request).await
            }
        })
    }
}

/// One request's call: to whom, what, within what deadline.
#[derive(Clone)]
struct Call {
    peer: Peer,
    method: Arc<str>,
    options: CallOptions,
}

fn grpc_error(error: cellshm::Error) -> Status {
    to_grpc_status(&error)
}

impl Call {
    async fn unary(self, request: Request<Bytes>) -> Result<Response<Bytes>, Status> {
        let reply = self.peer.call_async(&self.method, request.get_ref(), &self.options).await.map_err(grpc_error)?;
        Ok(Response::new(Bytes::copy_from_slice(reply.bytes())))
    }

    async fn open(&self, request: &[u8]) -> Result<Arc<AsyncStream>, Status> {
        let stream = self.peer.open_stream_async(&self.method, request, &self.options).await.map_err(grpc_error)?;
        Ok(Arc::new(stream))
    }

    async fn server_streaming(self, request: Request<Bytes>) -> Result<Response<Items>, Status> {
        Ok(Response::new(Items { stream: self.open(request.get_ref()).await? }))
    }

    async fn client_streaming(self, request: Request<Streaming<Bytes>>) -> Result<Response<Bytes>, Status> {
        let stream = self.open(&[]).await?;
        let mut incoming = request.into_inner();
        while let Some(message) = incoming.message().await? {
            stream.send(&message).await.map_err(grpc_error)?;
        }
        let stream = Arc::into_inner(stream).expect("the only handle");
        let reply = stream.finish().await.map_err(grpc_error)?;
        Ok(Response::new(Bytes::copy_from_slice(reply.bytes())))
    }

    async fn bidi(self, request: Request<Streaming<Bytes>>) -> Result<Response<Items>, Status> {
        let stream = self.open(&[]).await?;
        let mut incoming = request.into_inner();
        let sending = stream.clone();
        // The client's messages go to the cell as they come (each send waits for the
        // cell's credit); the cell's come back through `Items`. A client that goes away
        // ends both: `Items` dropped cancels the stream, which ends the sends.
        tokio::spawn(async move {
            loop {
                match incoming.message().await {
                    Ok(Some(message)) => {
                        if sending.send(&message).await.is_err() {
                            return;
                        }
                    }
                    Ok(None) => {
                        let _ = sending.close_send().await;
                        return;
                    }
                    Err(_) => {
                        sending.cancel();
                        return;
                    }
                }
            }
        });
        Ok(Response::new(Items { stream }))
    }
}

/// A cell's stream items as the response stream tonic sends: polled only as fast as
/// HTTP/2's window lets tonic send, so the cell's credit follows the remote reader.
/// Dropped before the end (the client went away), it cancels the cell's stream.
struct Items {
    stream: Arc<AsyncStream>,
}

impl tokio_stream::Stream for Items {
    type Item = Result<Bytes, Status>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, Status>>> {
        self.stream.poll_message(cx).map(|item| match item {
            Ok(Some(item)) => Some(Ok(Bytes::copy_from_slice(item.bytes()))),
            Ok(None) => None,
            Err(e) => Some(Err(grpc_error(e))),
        })
    }
}

impl Drop for Items {
    fn drop(&mut self) {
        // Cancels only a stream still running (an ended one says so and sends nothing).
        self.stream.cancel();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_paths_name_cellshm_methods() {
        assert_eq!(method_of("/kv.Store/Get").as_deref(), Some("kv.Store.Get"));
        assert_eq!(method_of("/a.b.c.Svc/M").as_deref(), Some("a.b.c.Svc.M"));
        for bad in ["", "/", "/kv.Store", "/kv.Store/", "//Get", "/kv.Store/Get/x", "kv.Store/Get"] {
            assert_eq!(method_of(bad), None, "{bad:?}");
        }
    }
}
