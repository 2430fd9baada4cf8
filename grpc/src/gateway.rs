//! The gateway's service: every gRPC request, whatever its path, routed to a cell and
//! passed through in both directions.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use cellshm::{AsyncStream, CallOptions, Cell, Hub, HubView, MethodKind, PeerIdentity, Supervisor, SupervisorEvents};
use tonic::body::Body;
use tonic::server::Grpc;
use tonic::{Request, Response, Status, Streaming};

use crate::codec::{GatewayCodec, Outgoing};
use crate::health::Health;
use crate::reflection::Reflection;
use crate::routes::Routes;
use crate::status::to_grpc_status;
use crate::target::{Source, Target};
use crate::timeout::parse_grpc_timeout;
use crate::tls::{subject_name, Tls};

/// Turns a bearer token into the caller's name (None: the token is refused).
pub type TokenCheck = dyn Fn(&str) -> Option<String> + Send + Sync;

/// How long a client may take over its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

pub(crate) type BoxFuture<T> = Pin<Box<dyn std::future::Future<Output = T> + Send>>;

/// The largest message a client may send or receive through the gateway unless
/// configured otherwise (cellshm's own limit is the largest slot of the hub).
pub const DEFAULT_MAX_MESSAGE: usize = 16 << 20;

/// Streams one client connection may have open at once, unless configured otherwise.
pub const DEFAULT_MAX_CONCURRENT_STREAMS: u32 = 256;

/// A gRPC server in front of a hub's cells (see the crate's documentation). Configure
/// it, then `serve` it (or mount `into_routes` on a server of your own).
pub struct Gateway {
    routes: Arc<Routes>,
    /// The supervisor's events, to keep health from them.
    events: Option<SupervisorEvents>,
    max_message: usize,
    max_concurrent_streams: u32,
    keepalive: Option<(Duration, Duration)>,
    tls: Option<Tls>,
    tokens: Option<Arc<TokenCheck>>,
    /// The address `cellshm list` shows (`serve` knows it; see [`Gateway::advertise`]).
    advertised: Option<String>,
}

/// What the gateway's service needs for each request.
struct Inner {
    routes: Arc<Routes>,
    max_message: usize,
    /// The host's access rules, checked for every remote call (through a relay, the
    /// host checks them itself).
    access: Option<HubView>,
    tokens: Option<Arc<TokenCheck>>,
    /// Its calls, as `cellshm list` shows them.
    endpoint: cellshm::Endpoint,
}

/// Who a connection's client is, from its TLS certificate (none without mTLS).
#[derive(Clone)]
struct ConnectionCaller(Option<PeerIdentity>);

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway")
            .field("max_message", &self.max_message)
            .field("max_concurrent_streams", &self.max_concurrent_streams)
            .field("keepalive", &self.keepalive)
            .field("tls", &self.tls)
            .field("tokens", &self.tokens.is_some())
            .finish_non_exhaustive()
    }
}

impl Gateway {
    /// A gateway to the cells of `hub` (it keeps a view of the hub's peers, not the hub).
    /// Its health service reports the services served when it starts serving.
    pub fn new(hub: &Hub) -> Gateway {
        Gateway::build(hub, None)
    }

    /// A gateway to the cells of `supervisor`, whose health service follows the
    /// supervisor's events: a service is NOT_SERVING while its cell restarts.
    pub fn with_supervisor(supervisor: &Supervisor) -> Gateway {
        Gateway::build(supervisor.hub(), Some(supervisor.events()))
    }

    /// A gateway in a process of its own, to the cells of another process's hub: `relay`
    /// is this process attached to that hub (`Cell::attach`), whose host enabled its
    /// relay for this uid (`Hub::enable_relay`), and serving (`Cell::serve`: its receive
    /// side is what the gateway's calls wait on). Calls go through that host, which checks
    /// its access rules for the callers the gateway names; health is polled (every
    /// half second), not followed.
    pub fn relayed(relay: Cell) -> Gateway {
        Gateway::from_source(Source::Relay(Arc::new(relay)), None)
    }

    fn build(hub: &Hub, events: Option<SupervisorEvents>) -> Gateway {
        Gateway::from_source(Source::Hub(hub.view()), events)
    }

    fn from_source(source: Source, events: Option<SupervisorEvents>) -> Gateway {
        Gateway {
            routes: Arc::new(Routes::new(source)),
            events,
            max_message: DEFAULT_MAX_MESSAGE,
            max_concurrent_streams: DEFAULT_MAX_CONCURRENT_STREAMS,
            keepalive: None,
            tls: None,
            tokens: None,
            advertised: None,
        }
    }

    /// The address `cellshm list` shows for this gateway (default: the one
    /// [`Gateway::serve`] binds; `serve_with_incoming` knows none, so say it here).
    pub fn advertise(mut self, address: impl Into<String>) -> Gateway {
        self.advertised = Some(address.into());
        self
    }

    /// Serves over TLS (see [`Tls`]); with a client CA, only clients with a certificate
    /// it signed get through the handshake, and each certificate's subject (its Common
    /// Name) is the caller the host's access rules see: [`Hub::allow`] lists and
    /// [`Hub::set_access_policy`] (as a [`PeerIdentity::remote`] caller).
    pub fn tls(mut self, tls: Tls) -> Gateway {
        self.tls = Some(tls);
        self
    }

    /// Checks `authorization: Bearer TOKEN` with `check`: the name it returns is the
    /// caller the host's access rules see (over a certificate's subject); a request
    /// whose token it refuses (None) is UNAUTHENTICATED. A request without the header
    /// is the connection's certificate's caller, or unauthenticated (which a method with
    /// an allow list, or a policy, refuses).
    pub fn bearer_tokens(mut self, check: impl Fn(&str) -> Option<String> + Send + Sync + 'static) -> Gateway {
        self.tokens = Some(Arc::new(check));
        self
    }

    /// The largest message either way (default [`DEFAULT_MAX_MESSAGE`]); larger ones are
    /// RESOURCE_EXHAUSTED.
    pub fn max_message_size(mut self, bytes: usize) -> Gateway {
        self.max_message = bytes;
        self
    }

    /// Streams (calls) one connection may have open at once (default
    /// [`DEFAULT_MAX_CONCURRENT_STREAMS`]): HTTP/2's SETTINGS_MAX_CONCURRENT_STREAMS.
    pub fn max_concurrent_streams(mut self, streams: u32) -> Gateway {
        self.max_concurrent_streams = streams;
        self
    }

    /// Pings each connection every `interval` and closes it when a ping goes unanswered
    /// for `timeout` (default: no pings).
    pub fn keepalive(mut self, interval: Duration, timeout: Duration) -> Gateway {
        self.keepalive = Some((interval, timeout));
        self
    }

    /// The routes to mount on a tonic server: `grpc.health.v1.Health`, server reflection
    /// (`grpc.reflection.v1` and `v1alpha`), and every other
    /// path to the cells, with the health statuses set before it returns. Call it inside
    /// a tokio runtime: the health service's later updates run on it. (A tonic server
    /// races each unary call with a timer read from `grpc-timeout`, which answers
    /// CANCELLED where the call's deadline answers DEADLINE_EXCEEDED: `serve` does not.)
    pub async fn into_routes(self) -> tonic::service::Routes {
        let address = self.advertised.clone().unwrap_or_else(|| "-".to_string());
        let endpoint = cellshm::Endpoint::new("grpc-gateway", &address, self.tls.is_some());
        let hub = self.routes.source().hub().cloned();
        if let Some(hub) = &hub {
            hub.announce(&endpoint);
        }
        let inner = Inner {
            routes: self.routes.clone(),
            max_message: self.max_message,
            access: hub,
            tokens: self.tokens.clone(),
            endpoint,
        };
        let service = GatewayService { inner: Arc::new(inner) };
        let router = axum::Router::new()
            .fallback_service(tower::ServiceExt::map_request(service, |request: http::Request<axum::body::Body>| {
                request.map(Body::new)
            }));
        let (reporter, health_service) = tonic_health::server::health_reporter();
        let mut health = Health::new(self.routes.clone(), reporter);
        health.update().await;
        match (&self.events, self.routes.source()) {
            (None, Source::Relay(_)) => tokio::spawn(health.poll(std::time::Duration::from_millis(500))),
            _ => tokio::spawn(health.follow(self.events)),
        };
        let reflection = Reflection::new(self.routes.clone());
        tonic::service::Routes::from(router)
            .add_service(health_service)
            .add_service(reflection.service::<false>())
            .add_service(reflection.service::<true>())
    }

    /// Serves on `addr` (plain HTTP/2) until the future is dropped or fails.
    pub async fn serve(self, addr: SocketAddr) -> std::io::Result<()> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let gateway = match (&self.advertised, listener.local_addr()) {
            (None, Ok(bound)) => self.advertise(bound.to_string()),
            _ => self,
        };
        gateway.serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)).await
    }

    /// Serves the connections `incoming` yields (a TCP or Unix socket's, or any
    /// acceptor's) over HTTP/2, with TLS first if [`Gateway::tls`] set it up, until
    /// `incoming` ends or fails, or the future is dropped: then every connection it
    /// serves is closed too.
    pub async fn serve_with_incoming<I, IO>(self, incoming: I) -> std::io::Result<()>
    where
        I: tokio_stream::Stream<Item = std::io::Result<IO>>,
        IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        use tokio_stream::StreamExt;
        let settings = Http2Settings { max_concurrent_streams: self.max_concurrent_streams, keepalive: self.keepalive };
        let tls = self.tls.clone();
        let router = self.into_routes().await.prepare().into_axum_router();
        let mut connections = tokio::task::JoinSet::new();
        let mut incoming = std::pin::pin!(incoming);
        loop {
            tokio::select! {
                next = incoming.next() => {
                    let Some(io) = next else { return Ok(()) };
                    let (router, tls) = (router.clone(), tls.clone());
                    connections.spawn(async move {
                        let io = match io {
                            Ok(io) => io,
                            Err(e) => return tracing::debug!("a gateway connection failed: {e}"),
                        };
                        let Some(tls) = tls else { return settings.serve(io, router, ConnectionCaller(None)).await };
                        match tokio::time::timeout(HANDSHAKE_TIMEOUT, tls.acceptor.accept(io)).await {
                            Ok(Ok(stream)) => {
                                let certificate = stream.get_ref().1.peer_certificates().and_then(|c| c.first());
                                let caller = certificate.and_then(|c| subject_name(c)).map(PeerIdentity::remote);
                                settings.serve(stream, router, ConnectionCaller(caller)).await
                            }
                            Ok(Err(e)) => tracing::debug!("a TLS handshake failed: {e}"),
                            Err(_) => tracing::debug!("a TLS handshake took longer than {HANDSHAKE_TIMEOUT:?}"),
                        }
                    });
                }
                // Finished connections are reaped as they end.
                Some(_) = connections.join_next(), if !connections.is_empty() => {}
            }
        }
    }
}

/// How each connection's HTTP/2 is set up.
#[derive(Clone, Copy)]
struct Http2Settings {
    max_concurrent_streams: u32,
    keepalive: Option<(Duration, Duration)>,
}

impl Http2Settings {
    /// Serves one connection, every request of it tagged with its caller.
    async fn serve<IO>(self, io: IO, router: axum::Router, caller: ConnectionCaller)
    where
        IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let tagged =
            tower::ServiceExt::map_request(router, move |mut request: http::Request<hyper::body::Incoming>| {
                request.extensions_mut().insert(caller.clone());
                request
            });
        let service = hyper_util::service::TowerToHyperService::new(tagged);
        let mut builder = hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
        let mut http2 = builder.http2();
        http2.max_concurrent_streams(self.max_concurrent_streams).timer(hyper_util::rt::TokioTimer::new());
        if let Some((interval, timeout)) = self.keepalive {
            http2.keep_alive_interval(interval).keep_alive_timeout(timeout);
        }
        let http2 = builder.http2_only();
        if let Err(e) = http2.serve_connection(hyper_util::rt::TokioIo::new(io), service).await {
            tracing::debug!("a gateway connection ended: {e}");
        }
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
        Box::pin(async move {
            let response = inner.handle(request).await.unwrap_or_else(|status| status.into_http());
            // An error before any message is in the headers; a stream's end is not seen here.
            inner.endpoint.count(response.headers().get("grpc-status").is_some_and(|s| s != "0"));
            Ok(response)
        })
    }
}

impl Inner {
    /// The request's caller: its bearer token's (if tokens are checked and it has one),
    /// else its connection's certificate's, else none.
    fn caller(&self, request: &http::Request<Body>) -> Result<Option<PeerIdentity>, Status> {
        let connection = || request.extensions().get::<ConnectionCaller>().and_then(|c| c.0.clone());
        let (Some(check), Some(authorization)) = (&self.tokens, request.headers().get(http::header::AUTHORIZATION))
        else {
            return Ok(connection());
        };
        let token = authorization
            .to_str()
            .ok()
            .and_then(|a| a.strip_prefix("Bearer ").or_else(|| a.strip_prefix("bearer ")))
            .ok_or_else(|| Status::unauthenticated("the authorization header is not \"Bearer TOKEN\""))?;
        match check(token.trim()) {
            Some(name) => Ok(Some(PeerIdentity::remote(name))),
            None => Err(Status::unauthenticated("the bearer token was refused")),
        }
    }

    async fn handle(&self, request: http::Request<Body>) -> Result<http::Response<Body>, Status> {
        let method = method_of(request.uri().path())
            .ok_or_else(|| Status::unimplemented(format!("{:?} is not a gRPC method path", request.uri().path())))?;
        let caller = self.caller(&request)?;
        if let Some(access) = &self.access {
            access.check_access(&method, caller.as_ref()).map_err(grpc_error)?;
        }
        let (target, kind) = self.routes.route(&method).await?;
        let options = options_of(request.headers(), kind)?;
        let call = Call { target, method: Arc::from(method.as_str()), options, caller };
        let mut grpc = Grpc::new(GatewayCodec)
            .max_decoding_message_size(self.max_message)
            .max_encoding_message_size(self.max_message);
        let response = match kind {
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
        };
        // A request tonic could not decode is answered in the response's headers, for
        // every kind that opens with one message (unary, server streaming).
        Ok(too_large_is_resource_exhausted(response))
    }
}

/// tonic's message-size limit answers OUT_OF_RANGE; gRPC's status table says a message
/// larger than the limit is RESOURCE_EXHAUSTED, which is what the gateway answers.
fn message_too_large(status: Status) -> Status {
    if status.code() == tonic::Code::OutOfRange && status.message().contains("message length too large") {
        return Status::resource_exhausted(status.message().to_string());
    }
    status
}

/// [`message_too_large`] for a response whose status tonic put in its headers.
fn too_large_is_resource_exhausted(mut response: http::Response<Body>) -> http::Response<Body> {
    let headers = response.headers_mut();
    let too_large = headers.get("grpc-status").is_some_and(|s| s == "11")
        && headers
            .get("grpc-message")
            .and_then(|m| m.to_str().ok())
            .is_some_and(|m| m.contains("message%20length%20too%20large") || m.contains("message length too large"));
    if too_large {
        headers.insert("grpc-status", http::HeaderValue::from_static("8"));
    }
    response
}

/// One request's call: to whom, what, within what deadline.
#[derive(Clone)]
struct Call {
    target: Target,
    method: Arc<str>,
    options: CallOptions,
    /// Who calls, for a host that checks its rules itself (through a relay).
    caller: Option<PeerIdentity>,
}

fn grpc_error(error: cellshm::Error) -> Status {
    to_grpc_status(&error)
}

impl Call {
    async fn unary(self, request: Request<Bytes>) -> Result<Response<Outgoing>, Status> {
        let reply = self
            .target
            .call(&self.method, request.get_ref(), &self.options, self.caller.as_ref())
            .await
            .map_err(grpc_error)?;
        Ok(Response::new(Outgoing::Response(reply)))
    }

    async fn open(&self, request: &[u8]) -> Result<Arc<AsyncStream>, Status> {
        let stream = self
            .target
            .open_stream(&self.method, request, &self.options, self.caller.as_ref())
            .await
            .map_err(grpc_error)?;
        Ok(Arc::new(stream))
    }

    async fn server_streaming(self, request: Request<Bytes>) -> Result<Response<Items>, Status> {
        let stream = self.open(request.get_ref()).await?;
        // The client sends nothing more: say so, so that a relaying host's pipe towards
        // the cell ends with the cell's answer. (A stream that ended already refuses it;
        // its items and end are still read below.)
        let _ = stream.close_send().await;
        Ok(Response::new(Items { stream }))
    }

    async fn client_streaming(self, request: Request<Streaming<Bytes>>) -> Result<Response<Outgoing>, Status> {
        let stream = self.open(&[]).await?;
        let mut incoming = request.into_inner();
        while let Some(message) = incoming.message().await.map_err(message_too_large)? {
            stream.send(&message).await.map_err(grpc_error)?;
        }
        let stream = Arc::into_inner(stream).expect("the only handle");
        let reply = stream.finish().await.map_err(grpc_error)?;
        Ok(Response::new(Outgoing::Response(reply)))
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
    type Item = Result<Outgoing, Status>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Outgoing, Status>>> {
        self.stream.poll_message(cx).map(|item| match item {
            Ok(Some(item)) => Some(Ok(Outgoing::Item(item))),
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
