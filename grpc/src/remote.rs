//! Remote gRPC servers as peers of a hub: [`Remote::add`] (or `hub.add_remote(..)` with
//! [`AddRemote`]) serves each method of a remote server as a host method of the same
//! name, so a cell calls `pkg.Svc.Method` on its host as on any method and the call goes
//! on as real gRPC: the call's deadline becomes `grpc-timeout`, a cancel (or a cell that
//! goes away) resets the HTTP/2 stream, a stream's items flow only as the cell's credit
//! and HTTP/2's windows both allow, and statuses come back with their codes and
//! messages. The host's access rules apply as to any host method; its metrics count the
//! calls per method. The host itself calls the remote with [`Remote::call`].

use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use cellshm::{
    AsyncCall, AsyncStreamCall, CallOptions, Endpoint, Error, Hub, MethodKind, Registry, Status, StreamEnd, Supervisor,
    WatchedPeer,
};
use prost::Message;
use tonic::transport::{Channel, ClientTlsConfig};

use crate::codec::RawCodec;

/// How long connecting to a remote, and asking it what it serves, may take by default.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How often a supervisor's remote is health-checked by default (each check may take as
/// long).
pub const DEFAULT_HEALTH_INTERVAL: Duration = Duration::from_secs(1);

/// A tokio runtime for callers that have none (the C and Python bindings): two worker
/// threads named `cellshm-grpc`, made on first use and kept for the process.
pub fn shared_runtime() -> cellshm::Result<&'static tokio::runtime::Runtime> {
    static RUNTIME: std::sync::OnceLock<Option<tokio::runtime::Runtime>> = std::sync::OnceLock::new();
    RUNTIME
        .get_or_init(|| {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .thread_name("cellshm-grpc")
                .enable_all()
                .build()
                .ok()
        })
        .as_ref()
        .ok_or_else(|| Error::new(Status::SystemError, "could not start the runtime for remote gRPC peers"))
}

/// What [`Remote::add`] needs beyond the address.
#[derive(Clone, Debug)]
pub struct RemoteOptions {
    methods: Vec<(String, MethodKind)>,
    tls: Option<ClientTlsConfig>,
    connect_timeout: Duration,
    health_interval: Duration,
}

impl Default for RemoteOptions {
    fn default() -> RemoteOptions {
        RemoteOptions {
            methods: Vec::new(),
            tls: None,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            health_interval: DEFAULT_HEALTH_INTERVAL,
        }
    }
}

impl RemoteOptions {
    /// Options that discover the remote's methods through its gRPC server reflection.
    pub fn new() -> RemoteOptions {
        RemoteOptions::default()
    }

    /// Serves `method` (`"pkg.Svc.Method"`, called as `kind`) from the remote. Once any
    /// is named, only the named ones are served and reflection is not asked.
    pub fn method(mut self, method: impl Into<String>, kind: MethodKind) -> RemoteOptions {
        self.methods.push((method.into(), kind));
        self
    }

    /// TLS to an `https://` remote (its CA, a client identity for mTLS, the domain name).
    pub fn tls(mut self, tls: ClientTlsConfig) -> RemoteOptions {
        self.tls = Some(tls);
        self
    }

    /// How long connecting and asking reflection may take (default
    /// [`DEFAULT_CONNECT_TIMEOUT`]).
    pub fn connect_timeout(mut self, timeout: Duration) -> RemoteOptions {
        self.connect_timeout = timeout;
        self
    }

    /// How often a supervisor checks the remote's health once added to it (default
    /// [`DEFAULT_HEALTH_INTERVAL`]; at least 10 ms).
    pub fn health_interval(mut self, interval: Duration) -> RemoteOptions {
        self.health_interval = interval.max(Duration::from_millis(10));
        self
    }
}

/// A remote gRPC server added to a hub (see the module's documentation). Cheap to
/// clone; the host methods it registered stay while the hub lives.
#[derive(Clone)]
pub struct Remote {
    inner: Arc<RemoteInner>,
}

struct RemoteInner {
    name: String,
    url: String,
    channel: Channel,
    methods: Vec<(String, MethodKind)>,
    connect_timeout: Duration,
    health_interval: Duration,
    /// The runtime the forwarding runs on.
    handle: tokio::runtime::Handle,
    /// Its calls, and what `cellshm list` shows of it once served on a hub.
    endpoint: Endpoint,
}

impl std::fmt::Debug for Remote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Remote")
            .field("name", &self.inner.name)
            .field("url", &self.inner.url)
            .field("methods", &self.inner.methods)
            .finish_non_exhaustive()
    }
}

/// `hub.add_remote(name, url, options)`: [`Remote::add`] as a method of [`Hub`], and
/// `supervisor.add_remote(..)`: [`Remote::add_supervised`] as a method of [`Supervisor`].
pub trait AddRemote {
    /// See [`Remote::add`] and [`Remote::add_supervised`].
    fn add_remote(
        &self,
        name: &str,
        url: &str,
        options: RemoteOptions,
    ) -> impl std::future::Future<Output = cellshm::Result<Remote>> + Send;
}

impl AddRemote for Hub {
    fn add_remote(
        &self,
        name: &str,
        url: &str,
        options: RemoteOptions,
    ) -> impl std::future::Future<Output = cellshm::Result<Remote>> + Send {
        Remote::add(self, name, url, options)
    }
}

impl AddRemote for Supervisor {
    fn add_remote(
        &self,
        name: &str,
        url: &str,
        options: RemoteOptions,
    ) -> impl std::future::Future<Output = cellshm::Result<Remote>> + Send {
        Remote::add_supervised(self, name, url, options)
    }
}

fn unavailable(what: impl std::fmt::Display) -> Error {
    Error::new(Status::Unavailable, what.to_string())
}

/// A gRPC status as the cellshm error a cell sees: codes 1–16 are the same numbers.
pub fn from_grpc_status(status: &tonic::Status) -> Error {
    let code = Status::from_code(status.code() as u32).unwrap_or(Status::Unknown);
    Error::new(code, status.message().to_string())
}

impl Remote {
    /// Connects to the gRPC server at `url` (`http://host:port`, or `https://` with
    /// [`RemoteOptions::tls`]) and serves each of its methods (the ones the options name,
    /// else every one its server reflection lists, but reflection's and health's own) as
    /// a host method of `hub` under its gRPC name `pkg.Svc.Method`, forwarded on the
    /// tokio runtime this is called in. UNAVAILABLE if the remote cannot be reached,
    /// FAILED_PRECONDITION if it serves no reflection and no method was named,
    /// ALREADY_EXISTS if the hub serves one of the names already.
    pub async fn add(hub: &Hub, name: &str, url: &str, options: RemoteOptions) -> cellshm::Result<Remote> {
        let remote = Remote::connect(name, url, options).await?;
        remote.serve_on(hub)?;
        Ok(remote)
    }

    /// [`Remote::add`] on the supervisor's hub, and the remote in the supervisor's health
    /// view ([`Remote::report_health`]): listed among its cells under `name`, Ready while
    /// its gRPC health check passes, Unavailable (with why) while not, with an event on
    /// each change; the supervisor never launches or stops it. ALREADY_EXISTS if the
    /// supervisor has a cell of that name.
    pub async fn add_supervised(
        supervisor: &Supervisor,
        name: &str,
        url: &str,
        options: RemoteOptions,
    ) -> cellshm::Result<Remote> {
        let remote = Remote::connect(name, url, options).await?;
        remote.serve_supervised(supervisor)?;
        Ok(remote)
    }

    /// [`Remote::serve_on`] the supervisor's hub and [`Remote::report_health`] to it (the
    /// second step of [`Remote::add_supervised`]).
    pub fn serve_supervised(&self, supervisor: &Supervisor) -> cellshm::Result<()> {
        let watched = supervisor.watch(&self.inner.name)?;
        if let Err(e) = self.serve_on(supervisor.hub()) {
            let _ = supervisor.remove(&self.inner.name, Duration::ZERO);
            return Err(e);
        }
        self.report_health(watched);
        Ok(())
    }

    /// Checks the remote's health every interval ([`RemoteOptions::health_interval`]) on
    /// its runtime, each check allowed [`RemoteOptions::connect_timeout`] to answer (one
    /// that does not is a failure), and reports each result to `watched`, until it is no longer watched
    /// (removed, or its supervisor dropped). A server that answers the check with
    /// UNIMPLEMENTED (it has no health service) counts as serving while it answers.
    pub fn report_health(&self, watched: WatchedPeer) {
        let remote = self.clone();
        self.inner.handle.spawn(async move {
            let interval = remote.inner.health_interval;
            while watched.is_watched() {
                watched.report(remote.health(remote.inner.connect_timeout).await);
                tokio::time::sleep(interval).await;
            }
        });
    }

    /// One health check: `Ok` if the server serves (or answers without a health service).
    async fn health(&self, timeout: Duration) -> cellshm::Result<()> {
        match self.is_serving("", timeout).await {
            Ok(true) => Ok(()),
            Ok(false) => Err(unavailable(format!("remote {:?} reports NOT_SERVING", self.inner.name))),
            Err(e) if e.status() == Status::Unimplemented => Ok(()),
            Err(e) => Err(e.context(format!("remote {:?} health check", self.inner.name))),
        }
    }

    /// [`Remote::add`] in two steps: connects (and asks reflection) here, serves on a hub
    /// with [`Remote::serve_on`]. The calls are forwarded on the tokio runtime this is
    /// called in.
    pub async fn connect(name: &str, url: &str, options: RemoteOptions) -> cellshm::Result<Remote> {
        let handle = tokio::runtime::Handle::try_current().map_err(|_| {
            Error::new(
                Status::FailedPrecondition,
                "Remote::connect runs in a tokio runtime: the calls are forwarded on it",
            )
        })?;
        let mut endpoint = tonic::transport::Endpoint::from_shared(url.to_string())
            .map_err(|e| Error::new(Status::InvalidArgument, format!("remote {name:?}: bad address {url:?}: {e}")))?
            .connect_timeout(options.connect_timeout);
        if let Some(tls) = options.tls.clone() {
            endpoint = endpoint.tls_config(tls).map_err(|e| unavailable(format!("remote {name:?}: TLS: {e}")))?;
        }
        let (channel, methods) = if options.methods.is_empty() {
            let channel =
                endpoint.connect().await.map_err(|e| unavailable(format!("remote {name:?} at {url}: {e}")))?;
            let methods = tokio::time::timeout(options.connect_timeout, reflected_methods(channel.clone()))
                .await
                .map_err(|_| unavailable(format!("remote {name:?} at {url}: reflection did not answer in time")))?
                .map_err(|e| e.context(format!("remote {name:?} at {url}")))?;
            (channel, methods)
        } else {
            (endpoint.connect_lazy(), options.methods.clone())
        };
        Ok(Remote {
            inner: Arc::new(RemoteInner {
                name: name.to_string(),
                url: url.to_string(),
                channel,
                methods,
                connect_timeout: options.connect_timeout,
                health_interval: options.health_interval,
                handle,
                endpoint: Endpoint::new(&format!("grpc-remote:{name}"), url, url.starts_with("https:")),
            }),
        })
    }

    /// Serves each of the remote's methods as a host method of `hub` (ALREADY_EXISTS if
    /// the hub serves one of the names already: the ones before it stay served).
    pub fn serve_on(&self, hub: &Hub) -> cellshm::Result<()> {
        for (method, kind) in &self.inner.methods {
            self.serve(hub, method, *kind, self.inner.handle.clone())?;
        }
        hub.announce(&self.inner.endpoint);
        Ok(())
    }

    /// The name it was added under.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// Its address.
    pub fn url(&self) -> &str {
        &self.inner.url
    }

    /// The methods served from it, as host methods.
    pub fn methods(&self) -> &[(String, MethodKind)] {
        &self.inner.methods
    }

    /// Calls forwarded to it (by cells and by [`Remote::call`]), and how many of those
    /// failed.
    pub fn counters(&self) -> (u64, u64) {
        self.inner.endpoint.counters()
    }

    /// A unary call from the host itself: `method` is `"pkg.Svc.Method"`, the deadline
    /// of `options` (its timeout, else cellshm's default call timeout) becomes
    /// `grpc-timeout`.
    pub async fn call(&self, method: &str, request: &[u8], options: &CallOptions) -> cellshm::Result<Bytes> {
        let path = grpc_path(method)?;
        let deadline = options.deadline_for_call_starting_now(cellshm::DEFAULT_CALL_TIMEOUT);
        let request = grpc_request(Bytes::copy_from_slice(request), deadline)?;
        self.counted(async {
            let mut grpc = self.client().await?;
            grpc.unary(request, path, RawCodec).await.map(|r| r.into_inner()).map_err(|s| from_grpc_status(&s))
        })
        .await
        .map_err(|e| at_deadline(e, deadline))
    }

    /// The remote's `grpc.health.v1.Health/Check` of `service` (empty: the server):
    /// true for SERVING.
    pub async fn is_serving(&self, service: &str, timeout: Duration) -> cellshm::Result<bool> {
        use tonic_health::pb::{health_check_response::ServingStatus, health_client::HealthClient, HealthCheckRequest};
        let mut request = tonic::Request::new(HealthCheckRequest { service: service.to_string() });
        request.set_timeout(timeout);
        let answer = HealthClient::new(self.inner.channel.clone()).check(request).await;
        Ok(answer.map_err(|s| from_grpc_status(&s))?.into_inner().status == ServingStatus::Serving as i32)
    }

    async fn client(&self) -> cellshm::Result<tonic::client::Grpc<Channel>> {
        let mut grpc = tonic::client::Grpc::new(self.inner.channel.clone());
        grpc.ready().await.map_err(|e| unavailable(format!("remote {:?}: {e}", self.inner.name)))?;
        Ok(grpc)
    }

    async fn counted<T>(&self, call: impl std::future::Future<Output = cellshm::Result<T>>) -> cellshm::Result<T> {
        let result = call.await;
        self.inner.endpoint.count(result.is_err());
        result
    }

    /// Registers the host method that forwards `method` to the remote.
    fn serve(&self, hub: &Hub, method: &str, kind: MethodKind, handle: tokio::runtime::Handle) -> cellshm::Result<()> {
        let path = grpc_path(method)?;
        let remote = self.clone();
        if kind == MethodKind::Unary {
            return hub.method_async_on(method, handle, move |call: AsyncCall| {
                let (remote, path) = (remote.clone(), path.clone());
                async move {
                    let deadline = call.deadline_ns();
                    remote.counted(remote.forward_unary(call, path)).await.map_err(|e| at_deadline(e, deadline))
                }
            });
        }
        hub.stream_method_async_on(method, kind, handle, move |call: AsyncStreamCall| {
            let (remote, path) = (remote.clone(), path.clone());
            async move {
                let deadline = call.deadline_ns();
                remote.counted(remote.forward_stream(call, kind, path)).await.map_err(|e| at_deadline(e, deadline))
            }
        })
    }

    async fn forward_unary(&self, call: AsyncCall, path: http::uri::PathAndQuery) -> cellshm::Result<Bytes> {
        let request = grpc_request(Bytes::copy_from_slice(call.payload()), call.deadline_ns())?;
        let mut grpc = self.client().await?;
        // Dropping the gRPC call on a cancel resets its HTTP/2 stream.
        tokio::select! {
            reply = grpc.unary(request, path, RawCodec) => reply.map(|r| r.into_inner()).map_err(|s| from_grpc_status(&s)),
            () = call.cancelled() => Err(Error::new(Status::Cancelled, "the call was cancelled")),
        }
    }

    async fn forward_stream(
        &self,
        call: AsyncStreamCall,
        kind: MethodKind,
        path: http::uri::PathAndQuery,
    ) -> cellshm::Result<Bytes> {
        let mut grpc = self.client().await?;
        let deadline = call.deadline_ns();
        let forwarding = async {
            let (final_reply, responses) = match kind {
                MethodKind::ServerStreaming => {
                    let request = grpc_request(Bytes::copy_from_slice(call.request()), deadline)?;
                    let response = grpc.server_streaming(request, path, RawCodec).await;
                    (Bytes::new(), Some(response.map_err(|s| from_grpc_status(&s))?.into_inner()))
                }
                MethodKind::ClientStreaming => {
                    let request = grpc_request(CellItems(call.end()), deadline)?;
                    let response = grpc.client_streaming(request, path, RawCodec).await;
                    (response.map_err(|s| from_grpc_status(&s))?.into_inner(), None)
                }
                _ => {
                    let request = grpc_request(CellItems(call.end()), deadline)?;
                    let response = grpc.streaming(request, path, RawCodec).await;
                    (Bytes::new(), Some(response.map_err(|s| from_grpc_status(&s))?.into_inner()))
                }
            };
            if let Some(mut responses) = responses {
                // One message read from the remote per item the cell's credit lets
                // through: a slow cell leaves HTTP/2's window to fill and the remote waits.
                while let Some(message) = responses.message().await.map_err(|s| from_grpc_status(&s))? {
                    call.send(&message).await?;
                }
            }
            Ok(final_reply)
        };
        tokio::select! {
            done = forwarding => done,
            () = call.cancelled() => Err(Error::new(Status::Cancelled, "the stream was cancelled")),
        }
    }
}

/// DEADLINE_EXCEEDED for a call that ended CANCELLED once its deadline had passed:
/// tonic's client answers its own timer (the deadline as `grpc-timeout`) with CANCELLED
/// "Timeout expired", and a cell's cancel at its deadline ends the forwarding the same way.
fn at_deadline(error: Error, deadline_ns: u64) -> Error {
    if error.status() == Status::Cancelled && deadline_ns != 0 && cellshm::monotonic_now_ns() >= deadline_ns {
        return Error::new(Status::DeadlineExceeded, format!("the deadline passed ({})", error.message()));
    }
    error
}

/// `/pkg.Svc/Method` from `"pkg.Svc.Method"`.
fn grpc_path(method: &str) -> cellshm::Result<http::uri::PathAndQuery> {
    let (service, name) = method
        .rsplit_once('.')
        .filter(|(s, m)| !s.is_empty() && !m.is_empty())
        .ok_or_else(|| Error::new(Status::InvalidArgument, format!("{method:?} is not \"pkg.Svc.Method\"")))?;
    format!("/{service}/{name}")
        .parse()
        .map_err(|e| Error::new(Status::InvalidArgument, format!("{method:?} is not a gRPC method name: {e}")))
}

/// A gRPC request whose `grpc-timeout` is what is left before `deadline_ns` (0: none).
fn grpc_request<T>(message: T, deadline_ns: u64) -> cellshm::Result<tonic::Request<T>> {
    let mut request = tonic::Request::new(message);
    if deadline_ns != 0 {
        let left = deadline_ns.saturating_sub(cellshm::monotonic_now_ns());
        if left == 0 {
            return Err(Error::new(Status::DeadlineExceeded, "the deadline passed before the call went out"));
        }
        request.set_timeout(Duration::from_nanos(left));
    }
    Ok(request)
}

/// The items a cell sends on a stream, as the request stream of a gRPC call: polled
/// only as HTTP/2 can send, so the cell's credit follows the remote reader. It ends when
/// the cell closes its sending side; a failed stream ends it too (the cancel that
/// follows resets the gRPC call).
struct CellItems(StreamEnd);

impl tokio_stream::Stream for CellItems {
    type Item = Bytes;

    fn poll_next(self: std::pin::Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Bytes>> {
        self.0.poll_recv(cx).map(|item| match item {
            Ok(Some(item)) => Some(Bytes::copy_from_slice(item.bytes())),
            Ok(None) | Err(_) => None,
        })
    }
}

/// The methods a remote's server reflection lists (v1, else v1alpha), but reflection's
/// and health's own.
async fn reflected_methods(channel: Channel) -> cellshm::Result<Vec<(String, MethodKind)>> {
    match reflection_v1(channel.clone()).await {
        Err(e) if e.status() == Status::Unimplemented => reflection_v1alpha(channel).await,
        other => other,
    }
}

macro_rules! reflection_client {
    ($name:ident, $pb:path) => {
        async fn $name(channel: Channel) -> cellshm::Result<Vec<(String, MethodKind)>> {
            use pb::server_reflection_client::ServerReflectionClient;
            use pb::server_reflection_request::MessageRequest;
            use pb::server_reflection_response::MessageResponse;
            use $pb as pb;
            let ask = |message| pb::ServerReflectionRequest { host: String::new(), message_request: Some(message) };
            let mut client = ServerReflectionClient::new(channel);
            let list = [ask(MessageRequest::ListServices(String::new()))];
            let mut answers = client.server_reflection_info(tokio_stream::iter(list)).await.map_err(reflection)?;
            let services: Vec<String> = match answers.get_mut().message().await.map_err(reflection)? {
                Some(pb::ServerReflectionResponse {
                    message_response: Some(MessageResponse::ListServicesResponse(listed)),
                    ..
                }) => listed.service.into_iter().map(|s| s.name).filter(|s| !s.starts_with("grpc.")).collect(),
                _ => return Err(Error::new(Status::ProtocolError, "reflection did not list services")),
            };
            // One exchange per service: a server may list a service it cannot describe
            // (tonic's reflection then ends the exchange), and the others still count.
            let mut files = Vec::new();
            for service in &services {
                let asked = [ask(MessageRequest::FileContainingSymbol(service.clone()))];
                let answer = match client.server_reflection_info(tokio_stream::iter(asked)).await {
                    Ok(mut answers) => answers.get_mut().message().await,
                    Err(status) => Err(status),
                };
                match answer {
                    Ok(Some(pb::ServerReflectionResponse {
                        message_response: Some(MessageResponse::FileDescriptorResponse(found)),
                        ..
                    })) => files.extend(found.file_descriptor_proto),
                    other => tracing::warn!(service, "reflection does not describe it, so it is not served: {other:?}"),
                }
            }
            methods_of(&services, &files)
        }
    };
}

reflection_client!(reflection_v1, tonic_reflection::pb::v1);
reflection_client!(reflection_v1alpha, tonic_reflection::pb::v1alpha);

fn reflection(status: tonic::Status) -> Error {
    if status.code() == tonic::Code::Unimplemented {
        return Error::new(
            Status::Unimplemented,
            "it serves no gRPC server reflection: name its methods with RemoteOptions::method",
        );
    }
    from_grpc_status(&status)
}

/// The methods of `services` as the serialized file descriptors `files` declare them.
fn methods_of(services: &[String], files: &[Vec<u8>]) -> cellshm::Result<Vec<(String, MethodKind)>> {
    let mut methods = Vec::new();
    for file in files {
        let file = prost_types::FileDescriptorProto::decode(file.as_slice())
            .map_err(|e| Error::new(Status::ProtocolError, format!("reflection sent a bad descriptor: {e}")))?;
        for service in &file.service {
            let full = match file.package() {
                "" => service.name().to_string(),
                package => format!("{package}.{}", service.name()),
            };
            if !services.contains(&full) {
                continue;
            }
            for m in &service.method {
                let entry =
                    (format!("{full}.{}", m.name()), MethodKind::of(m.client_streaming(), m.server_streaming()));
                if !methods.contains(&entry) {
                    methods.push(entry);
                }
            }
        }
    }
    if methods.is_empty() {
        return Err(Error::new(Status::FailedPrecondition, "its reflection lists no method to serve"));
    }
    Ok(methods)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn methods_name_grpc_paths_and_deadlines_become_timeouts() {
        assert_eq!(grpc_path("kv.Store.Get").unwrap().as_str(), "/kv.Store/Get");
        assert_eq!(grpc_path("Echo.echo").unwrap().as_str(), "/Echo/echo");
        for bad in ["", "NoDot", ".x", "x."] {
            assert_eq!(grpc_path(bad).unwrap_err().status(), Status::InvalidArgument, "{bad:?}");
        }
        assert!(grpc_request((), 0).unwrap().metadata().get("grpc-timeout").is_none());
        let past = grpc_request((), 1).unwrap_err();
        assert_eq!(past.status(), Status::DeadlineExceeded);
        assert_eq!(from_grpc_status(&tonic::Status::not_found("gone")).status(), Status::NotFound);
    }
}
