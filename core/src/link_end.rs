//! The two shapes every end of a link has, written once.
//!
//! [`LinkEnd`]: whatever calls the other side of a link: a host's [`Peer`] (calls its
//! cell), a [`Cell`] (calls its host), a [`Supervised`] cell (calls whichever instance of
//! a supervised cell is current). Every call, notification and stream goes through the
//! one body of each operation here; the typed layer, the C API and the Python binding
//! each write one body per operation on top of it, and the async API adds its futures
//! here.
//!
//! [`Registry`]: whatever serves methods: a [`Cell`] (to its host) and a [`Hub`] (host
//! methods, to every cell).
//!
//! Both traits are sealed: the link they reach is the crate's to define. Their
//! supertraits live in a private module and name crate-private types; nobody outside the
//! crate can name, implement or call them, which is what `private_interfaces` would
//! otherwise warn about.
#![allow(private_interfaces)]

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::builtin;
use crate::error::Result;
use crate::runtime::session::{
    copy_of, AsyncCall, AsyncStreamCall, Call, CallFuture, CallOptions, Completion, Dispatcher, NotifyFuture,
    OpenStreamFuture, PendingCall, Response, Session, Spawn, Stream, StreamCall,
};
use crate::wire::{self, ControlKind, MethodKind};
use crate::{Cell, Hub, Peer, Supervisor};

pub(crate) mod sealed {
    use super::*;

    /// What an end holds: the session its calls go through now, or the dispatcher its
    /// handlers live in. Not implementable outside the crate.
    pub trait LinkSession {
        /// The session calls go through now, or why there is none (the peer died, the
        /// link was closed, a supervised cell is not ready).
        fn session(&self) -> Result<SessionRef<'_>>;
    }

    /// The session an end calls through: borrowed where the end holds it for good (a
    /// cell), owned where it is looked up per call (a peer's, a supervised cell's), so a
    /// cell's call costs no reference count.
    #[derive(Debug)]
    pub(crate) enum SessionRef<'a> {
        Borrowed(&'a Arc<Session>),
        Owned(Arc<Session>),
    }

    impl std::ops::Deref for SessionRef<'_> {
        type Target = Arc<Session>;
        fn deref(&self) -> &Arc<Session> {
            match self {
                SessionRef::Borrowed(session) => session,
                SessionRef::Owned(session) => session,
            }
        }
    }

    /// See [`LinkSession`].
    pub trait HandlerTable {
        /// The methods this end serves.
        fn dispatcher(&self) -> &crate::runtime::sync::RwLock<Dispatcher>;
    }
}

/// An end of a link that calls the other side: a host's [`Peer`], a [`Cell`], a
/// [`Supervised`] cell. Bring it into scope (`use cellshm::LinkEnd;`, also in
/// [`crate::prelude`]) to call.
///
/// Methods are named `"Service.method"`. Every call has a deadline: the one in its
/// [`CallOptions`], else the end's default (30 s unless configured).
pub trait LinkEnd: sealed::LinkSession {
    /// Calls `method` with `payload` and waits for the response.
    fn call(&self, method: &str, payload: &[u8], options: &CallOptions) -> Result<Response> {
        self.session()?.call_with(wire::method_id(method), Some(method), payload.len(), copy_of(payload), options)
    }

    /// Calls a method by its id ([`crate::method_id`]).
    fn call_id(&self, method_id: u32, payload: &[u8], options: &CallOptions) -> Result<Response> {
        self.session()?.call_with(method_id, None, payload.len(), copy_of(payload), options)
    }

    /// Calls with a request written in place: `fill` gets a buffer of `max_len` bytes
    /// (in shared memory when larger than 80) and returns how many bytes it wrote.
    fn call_with(
        &self,
        method: &str,
        max_len: usize,
        fill: impl FnOnce(&mut [u8]) -> usize,
        options: &CallOptions,
    ) -> Result<Response>
    where
        Self: Sized,
    {
        self.session()?.call_with(wire::method_id(method), Some(method), max_len, fill, options)
    }

    /// Starts a call without blocking: `on_complete` runs on a receiving thread once the
    /// result is in; collect it with [`PendingCall::try_take`]. Dropping the
    /// [`PendingCall`] cancels the call (the handler sees CANCEL). For event loops. On a
    /// [`Cell`], the cell must be serving: its server threads receive the response.
    fn call_start(
        &self,
        method: &str,
        payload: &[u8],
        options: &CallOptions,
        on_complete: Completion,
    ) -> Result<PendingCall> {
        self.session()?.call_start(
            wire::method_id(method),
            Some(method),
            payload.len(),
            copy_of(payload),
            options,
            on_complete,
        )
    }

    /// Calls `method` as a `Future` for async code, on any executor (tokio, async-std,
    /// smol, `futures::executor::block_on`): the thread that receives the answer wakes
    /// the task, so awaiting costs no thread and no timer, and the call's deadline ends it
    /// with DEADLINE_EXCEEDED. Dropping the future cancels the call (its handler sees
    /// CANCEL). It never parks the executor: a full ring or pool makes it wait for room
    /// as a future too. On a [`Cell`], the cell must be serving.
    ///
    /// ```no_run
    /// # async fn f(peer: &cellshm::Peer) -> cellshm::Result<()> {
    /// use cellshm::{CallOptions, LinkEnd};
    /// let reply = peer.call_async("Echo.echo", b"hi", &CallOptions::default()).await?;
    /// assert_eq!(reply.bytes(), b"hi");
    /// # Ok(()) }
    /// ```
    fn call_async(&self, method: &str, payload: &[u8], options: &CallOptions) -> CallFuture {
        match self.session() {
            Ok(session) => CallFuture::start(&session, wire::method_id(method), Some(method), payload, options),
            Err(e) => CallFuture::failed(e),
        }
    }

    /// Sends a notification: no response is expected or waited for.
    fn notify(&self, method: &str, payload: &[u8], options: &CallOptions) -> Result<()> {
        self.session()?.notify_with(wire::method_id(method), payload.len(), copy_of(payload), options)
    }

    /// [`LinkEnd::notify`] as a `Future`: done once the notification is sent. A full ring
    /// or pool makes it wait for room without parking the executor, within the deadline
    /// of `options`.
    fn notify_async(&self, method: &str, payload: &[u8], options: &CallOptions) -> NotifyFuture {
        match self.session() {
            Ok(session) => NotifyFuture::start(&session, wire::method_id(method), payload, options),
            Err(e) => NotifyFuture::failed(e),
        }
    }

    /// Opens a stream to the stream method `method`, with `request` as its opening
    /// message. Read items with [`Stream::recv`] (or iterate), send with
    /// [`Stream::send`]; the deadline in `options` covers the whole stream.
    ///
    /// ```
    /// use cellshm::{CallOptions, Cell, Hub, HubConfig, LinkEnd, PeerOptions, Registry};
    /// use std::time::Duration;
    ///
    /// // This example is its own cell: started by the host below, it serves a stream of
    /// // as many numbers as the opening message asks for.
    /// if std::env::var_os("CELLSHM_DOORBELL_FD").is_some() {
    ///     let cell = Cell::from_args()?;
    ///     cell.stream_method("Feed.numbers", |call| {
    ///         let count = call.request().first().copied().unwrap_or(0);
    ///         for i in 0..count {
    ///             call.send(&[i])?; // waits for the window; CANCELLED once the caller gave up
    ///         }
    ///         Ok(())
    ///     })?;
    ///     return cell.run();
    /// }
    /// let hub = Hub::create(HubConfig::default())?;
    /// let (peer, mut child) = hub
    ///     .add_peer("feed", PeerOptions::default())?
    ///     .spawn(&mut std::process::Command::new(std::env::current_exe().unwrap()))?;
    /// peer.wait_ready(Duration::from_secs(10))?;
    /// let mut seen = Vec::new();
    /// for item in peer.open_stream("Feed.numbers", &[100], &CallOptions::timeout(Duration::from_secs(5)))? {
    ///     seen.push(item?.bytes()[0]); // each item is read from shared memory
    /// }
    /// assert_eq!(seen, (0..100).collect::<Vec<u8>>());
    /// // Dropping a stream before its end cancels it; the handler sees CANCELLED.
    /// let mut early = peer.open_stream("Feed.numbers", &[200], &CallOptions::timeout(Duration::from_secs(5)))?;
    /// assert_eq!(early.next().unwrap()?.bytes(), [0]);
    /// drop(early);
    /// peer.shutdown(Duration::from_secs(5));
    /// child.wait().unwrap();
    /// # Ok::<(), cellshm::Error>(())
    /// ```
    fn open_stream(&self, method: &str, request: &[u8], options: &CallOptions) -> Result<Stream> {
        self.session()?.open_stream(wire::method_id(method), Some(method), request, options)
    }

    /// [`LinkEnd::open_stream`] for async code: the stream is an [`AsyncStream`](crate::AsyncStream), a
    /// `futures_core::Stream` of items with an async `send`. Opening never parks the
    /// executor (a full ring waits for room as a future); dropping the stream cancels it.
    ///
    /// ```no_run
    /// # async fn f(peer: &cellshm::Peer) -> cellshm::Result<()> {
    /// use cellshm::{CallOptions, LinkEnd};
    /// let mut numbers = peer.open_stream_async("Counter.count", b"5", &CallOptions::default()).await?;
    /// while let Some(item) = numbers.message().await? {
    ///     println!("{:?}", item.bytes());
    /// }
    /// # Ok(()) }
    /// ```
    fn open_stream_async(&self, method: &str, request: &[u8], options: &CallOptions) -> OpenStreamFuture {
        match self.session() {
            Ok(session) => OpenStreamFuture::start(&session, wire::method_id(method), Some(method), request, options),
            Err(e) => OpenStreamFuture::failed(e),
        }
    }

    /// Sends PING and waits for PONG: proves the other side's receive path is alive and
    /// returns the round-trip time.
    fn ping(&self, timeout: Duration) -> Result<Duration> {
        let session = self.session()?;
        let started = Instant::now();
        session.control_call(ControlKind::Ping, &[], timeout)?;
        Ok(started.elapsed())
    }

    /// The methods the other side serves, as (name, id, kind), sorted by name
    /// (`cellshm.Introspect.methods`).
    fn served_methods(&self, timeout: Duration) -> Result<Vec<(String, u32, MethodKind)>> {
        let response = self.call(wire::builtin::INTROSPECT_METHODS, &[], &CallOptions::timeout(timeout))?;
        builtin::introspect::decode(response.bytes())
    }

    /// The descriptors of the services the other side serves, as one serialized
    /// `google.protobuf.FileDescriptorSet` (`cellshm.Introspect.descriptors`; empty when
    /// none were registered, UNIMPLEMENTED from a side that does not serve it).
    fn served_descriptors(&self, timeout: Duration) -> Result<Vec<u8>> {
        let response = self.call(wire::builtin::INTROSPECT_DESCRIPTORS, &[], &CallOptions::timeout(timeout))?;
        Ok(response.bytes().to_vec())
    }

    /// [`LinkEnd::served_descriptors`] as a future.
    fn served_descriptors_async(&self, timeout: Duration) -> impl Future<Output = Result<Vec<u8>>> + Send + 'static
    where
        Self: Sized,
    {
        let answer = self.call_async(wire::builtin::INTROSPECT_DESCRIPTORS, &[], &CallOptions::timeout(timeout));
        async move { Ok(answer.await?.bytes().to_vec()) }
    }

    /// [`LinkEnd::served_methods`] as a future.
    fn served_methods_async(
        &self,
        timeout: Duration,
    ) -> impl Future<Output = Result<Vec<(String, u32, MethodKind)>>> + Send + 'static
    where
        Self: Sized,
    {
        let answer = self.call_async(wire::builtin::INTROSPECT_METHODS, &[], &CallOptions::timeout(timeout));
        async move { builtin::introspect::decode(answer.await?.bytes()) }
    }
}

/// An end that serves methods: a [`Cell`] (to its host) or a [`Hub`] (host methods, to
/// every cell). A name (or id) served already is refused with ALREADY_EXISTS.
pub trait Registry: sealed::HandlerTable {
    /// Serves the unary method `"Service.method"` with `handler`.
    fn method<F>(&self, name: &str, handler: F) -> Result<()>
    where
        F: Fn(&mut Call<'_>) -> Result<()> + Send + Sync + 'static,
        Self: Sized,
    {
        self.dispatcher().write().register(name, handler)
    }

    /// Serves the stream method `"Service.method"`: each stream the other side opens
    /// runs `handler` on its own thread (see [`StreamCall`]). Introspection reports it as
    /// bidirectional; [`Registry::stream_method_as`] says which way items flow.
    fn stream_method<F>(&self, name: &str, handler: F) -> Result<()>
    where
        F: Fn(&mut StreamCall) -> Result<()> + Send + Sync + 'static,
        Self: Sized,
    {
        self.dispatcher().write().register_stream(name, handler)
    }

    /// [`Registry::stream_method`] that also says which way items flow (what
    /// `cellshm.Introspect.methods` reports and generated clients check).
    fn stream_method_as<F>(&self, name: &str, kind: MethodKind, handler: F) -> Result<()>
    where
        F: Fn(&mut StreamCall) -> Result<()> + Send + Sync + 'static,
        Self: Sized,
    {
        self.dispatcher().write().register_stream_as(name, kind, handler)
    }

    /// Keeps `file_descriptor_set` (a serialized `google.protobuf.FileDescriptorSet`) as
    /// the description of services served here, answered by
    /// `cellshm.Introspect.descriptors`: what a gRPC gateway's reflection serves, so
    /// `grpcurl describe` works without the `.proto` files. Generated `serve_<svc>`
    /// functions call it with the set `cellshm-codegen` embeds; a set given twice is kept
    /// once. RESOURCE_EXHAUSTED past 4 MiB in all.
    fn describe(&self, file_descriptor_set: &[u8]) -> Result<()>
    where
        Self: Sized,
    {
        self.dispatcher().write().add_descriptors(file_descriptor_set)
    }

    /// Where async handlers run ([`Registry::method_async`],
    /// [`Registry::stream_method_async`]): a `tokio::runtime::Handle` (feature `tokio`),
    /// or any `Fn(BoxFuture<()>)` that spawns on another runtime. With the `tokio`
    /// feature and none set, a registration made inside a tokio runtime uses that one.
    fn spawn_handlers_on(&self, spawn: impl Spawn) {
        self.dispatcher().write().set_spawner(Arc::new(spawn));
    }

    /// Serves `"Service.method"` with an async handler: each call's future runs on the
    /// runtime handed over with [`Registry::spawn_handlers_on`], so it may `.await` a
    /// database or another cell, and the server threads that receive requests never wait
    /// for it (a thousand calls in flight need no more of them). Its output is the reply
    /// (any bytes) or the error. Cancellation and the deadline reach it through
    /// [`AsyncCall::cancelled`]. FAILED_PRECONDITION without a runtime.
    ///
    /// ```no_run
    /// # fn f(cell: &cellshm::Cell) -> cellshm::Result<()> {
    /// use cellshm::Registry;
    /// # let runtime = tokio::runtime::Runtime::new().unwrap();
    /// // With the `tokio` feature: `cell.spawn_handlers_on(runtime.handle().clone())`.
    /// let handle = runtime.handle().clone();
    /// cell.spawn_handlers_on(move |future| drop(handle.spawn(future)));
    /// cell.method_async("Lookup.get", |call| async move {
    ///     let key = call.payload().to_vec();
    ///     tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    ///     Ok(key)
    /// })?;
    /// # Ok(()) }
    /// ```
    fn method_async<F, Fut, R>(&self, name: &str, handler: F) -> Result<()>
    where
        F: Fn(AsyncCall) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<R>> + Send + 'static,
        R: AsRef<[u8]> + Send + Sync + 'static,
        Self: Sized,
    {
        self.dispatcher().write().register_async(name, None, handler)
    }

    /// Serves the stream method `"Service.method"` (items flowing as `kind` says) with an
    /// async handler, one future per stream on the runtime of
    /// [`Registry::spawn_handlers_on`]: no stream thread is held while it waits. Its
    /// output is the final response (client streaming; empty otherwise) or the error.
    fn stream_method_async<F, Fut, R>(&self, name: &str, kind: MethodKind, handler: F) -> Result<()>
    where
        F: Fn(AsyncStreamCall) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<R>> + Send + 'static,
        R: AsRef<[u8]> + Send + Sync + 'static,
        Self: Sized,
    {
        self.dispatcher().write().register_stream_async(name, kind, None, handler)
    }

    /// [`Registry::method_async`] on the runtime `spawn`, whatever
    /// [`Registry::spawn_handlers_on`] set: for a handler that needs its own runtime (a
    /// gRPC client's tokio).
    fn method_async_on<F, Fut, R>(&self, name: &str, spawn: impl Spawn, handler: F) -> Result<()>
    where
        F: Fn(AsyncCall) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<R>> + Send + 'static,
        R: AsRef<[u8]> + Send + Sync + 'static,
        Self: Sized,
    {
        self.dispatcher().write().register_async(name, Some(Arc::new(spawn)), handler)
    }

    /// [`Registry::stream_method_async`] on the runtime `spawn` (see
    /// [`Registry::method_async_on`]).
    fn stream_method_async_on<F, Fut, R>(
        &self,
        name: &str,
        kind: MethodKind,
        spawn: impl Spawn,
        handler: F,
    ) -> Result<()>
    where
        F: Fn(AsyncStreamCall) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<R>> + Send + 'static,
        R: AsRef<[u8]> + Send + Sync + 'static,
        Self: Sized,
    {
        self.dispatcher().write().register_stream_async(name, kind, Some(Arc::new(spawn)), handler)
    }
}

/// A supervised cell, by name: each call goes to its current instance (after a
/// relaunch, the new one); while it is not ready, calls fail with UNAVAILABLE.
///
/// ```no_run
/// use cellshm::{CallOptions, LinkEnd, Supervised};
/// # fn f(supervisor: &cellshm::Supervisor) -> cellshm::Result<()> {
/// let kv = Supervised::new(supervisor, "kv");
/// kv.call("Kv.get", b"key", &CallOptions::default())?;
/// // Generated clients take it too: kv::StoreClient::new(&kv).
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Supervised<'a> {
    supervisor: &'a Supervisor,
    name: String,
}

impl<'a> Supervised<'a> {
    /// The cell `name` of `supervisor`.
    pub fn new(supervisor: &'a Supervisor, name: impl Into<String>) -> Supervised<'a> {
        Supervised { supervisor, name: name.into() }
    }
}

impl sealed::LinkSession for Peer {
    fn session(&self) -> Result<sealed::SessionRef<'_>> {
        self.inner.session().map(sealed::SessionRef::Owned)
    }
}

impl sealed::LinkSession for Cell {
    fn session(&self) -> Result<sealed::SessionRef<'_>> {
        Ok(sealed::SessionRef::Borrowed(&self.session))
    }
}

impl sealed::LinkSession for Supervised<'_> {
    fn session(&self) -> Result<sealed::SessionRef<'_>> {
        self.supervisor.ready_peer(&self.name)?.inner.session().map(sealed::SessionRef::Owned)
    }
}

/// An end shared in an `Arc` (an `Arc<Cell>` handlers capture, a tower service's end)
/// calls as the end itself.
impl<T: sealed::LinkSession> sealed::LinkSession for Arc<T> {
    fn session(&self) -> Result<sealed::SessionRef<'_>> {
        (**self).session()
    }
}

impl<T: LinkEnd> LinkEnd for Arc<T> {}
impl LinkEnd for Peer {}
impl LinkEnd for Cell {}
impl LinkEnd for Supervised<'_> {}

impl sealed::HandlerTable for Cell {
    fn dispatcher(&self) -> &crate::runtime::sync::RwLock<Dispatcher> {
        &self.dispatcher
    }
}

impl sealed::HandlerTable for Hub {
    fn dispatcher(&self) -> &crate::runtime::sync::RwLock<Dispatcher> {
        &self.shared.dispatcher
    }
}

impl Registry for Cell {}
impl Registry for Hub {}
