//! Async handlers: a request (or a stream) whose handler is an `async fn` is handed to
//! the runtime the user chose ([`Spawn`]) as a future, and the server thread that
//! received it goes back to receiving at once. The future answers when it is done, from
//! the runtime's thread, without ever waiting for room in a blocking way. The receive
//! path never polls user futures itself, and a slow handler holds no server thread, so
//! a thousand requests in flight need no more threads than the runtime has.
//!
//! A handler learns of cancellation and its deadline through [`CancelToken::cancelled`],
//! a future woken by the caller's CANCEL, by the link's failure, or by the standby when
//! the deadline passes (the link watches it: `Link::serving`).

use std::future::{poll_fn, Future};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use super::dispatch::AccessCheck;
use super::*;
use crate::proto::frames::OutFrame;

/// A boxed future a [`Spawn`] runs.
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// A runtime that runs the futures of async handlers to completion on its own threads.
///
/// Implemented for `tokio::runtime::Handle` (feature `tokio`), and for any
/// `Fn(BoxFuture<()>)`, so other runtimes take one line:
/// `cell.spawn_handlers_on(|f| { smol::spawn(f).detach(); })`.
pub trait Spawn: Send + Sync + 'static {
    /// Runs `future` to completion. Dropping it instead (a runtime shutting down) answers
    /// its call with UNAVAILABLE.
    fn spawn(&self, future: BoxFuture<()>);
}

impl<F: Fn(BoxFuture<()>) + Send + Sync + 'static> Spawn for F {
    fn spawn(&self, future: BoxFuture<()>) {
        self(future)
    }
}

#[cfg(feature = "tokio")]
impl Spawn for tokio::runtime::Handle {
    fn spawn(&self, future: BoxFuture<()>) {
        drop(tokio::runtime::Handle::spawn(self, future));
    }
}

/// What an async handler answers with: any bytes.
pub(super) type Reply = Box<dyn AsRef<[u8]> + Send + Sync>;
/// A unary async handler, boxed.
pub(super) type AsyncHandler = dyn Fn(AsyncCall) -> BoxFuture<Result<Reply>> + Send + Sync;
/// A stream async handler, boxed.
pub(super) type AsyncStreamHandler = dyn Fn(AsyncStreamCall) -> BoxFuture<Result<Reply>> + Send + Sync;

/// A request served by an async handler ([`crate::Registry::method_async`]): it owns
/// the request (its slot stays held until the call is dropped) and can be moved into
/// the handler's future.
pub struct AsyncCall {
    payload: Payload,
    token: CancelToken,
    method_id: u32,
}

impl std::fmt::Debug for AsyncCall {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AsyncCall").field("method_id", &self.method_id).field("len", &self.payload.len()).finish()
    }
}

impl AsyncCall {
    /// The request payload (copied out of shared memory on the first call when larger
    /// than 80 bytes; read it in place with [`AsyncCall::request`]).
    pub fn payload(&self) -> &[u8] {
        self.payload.bytes()
    }

    /// The request where it lies, without a copy.
    pub fn request(&self) -> SharedBytes<'_> {
        self.payload.shared()
    }

    /// The method id of this call.
    pub fn method_id(&self) -> u32 {
        self.method_id
    }

    /// The caller's deadline (CLOCK_MONOTONIC ns), 0 if none.
    pub fn deadline_ns(&self) -> u64 {
        self.token.deadline_ns()
    }

    /// Time left before the caller's deadline, if it has one.
    pub fn remaining(&self) -> Option<Duration> {
        let deadline = self.deadline_ns();
        (deadline != 0).then(|| Duration::from_nanos(deadline.saturating_sub(monotonic_now_ns())))
    }

    /// Options that carry this call's deadline on to the calls its handler makes.
    pub fn onward(&self) -> CallOptions {
        match self.deadline_ns() {
            0 => CallOptions::default(),
            deadline => CallOptions::deadline(deadline),
        }
    }

    /// True once the caller cancelled, the deadline passed or the link failed.
    pub fn is_cancelled(&self) -> bool {
        self.token.is_cancelled()
    }

    /// Resolves once the call is cancelled (see [`CancelToken::cancelled`]).
    pub async fn cancelled(&self) {
        self.token.cancelled().await
    }

    /// A handle on the call's cancellation, to hand to other tasks.
    pub fn cancel_token(&self) -> CancelToken {
        self.token.clone()
    }

    /// Who made the call (host side; `None` in a cell).
    pub fn caller(&self) -> Option<PeerIdentity> {
        self.token.caller()
    }
}

impl CancelToken {
    /// Resolves once the caller cancelled the call, its deadline passed, or the link
    /// failed: for `select!` beside a handler's work. No timer runs: the caller's CANCEL,
    /// the link's failure and the standby (which watches the deadlines of calls async
    /// handlers serve) wake it.
    pub async fn cancelled(&self) {
        poll_fn(|cx| {
            if self.is_cancelled() {
                return Poll::Ready(());
            }
            self.session.cancelled_calls.poll_cancelled(self.msg_id, cx, || self.is_cancelled_otherwise())
        })
        .await
    }
}

/// A stream served by an async handler ([`crate::Registry::stream_method_async`]).
pub struct AsyncStreamCall {
    request: Payload,
    end: StreamEnd,
}

impl std::fmt::Debug for AsyncStreamCall {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.end.fmt(f)
    }
}

impl AsyncStreamCall {
    /// The message the caller opened the stream with.
    pub fn request(&self) -> &[u8] {
        self.request.bytes()
    }

    /// The opening message where it lies, without a copy.
    pub fn request_payload(&self) -> SharedBytes<'_> {
        self.request.shared()
    }

    /// Sends one item to the caller, once it has granted credit (a slow caller slows
    /// this handler, and nothing else).
    pub async fn send(&self, item: &[u8]) -> Result<()> {
        self.end.send_async(item).await
    }

    /// The next item from the caller; `None` after it closed its sending side.
    pub async fn recv(&self) -> Result<Option<StreamItem>> {
        self.end.recv_async().await
    }

    /// Resolves once the stream is cancelled (by the caller, its deadline, or the link).
    pub async fn cancelled(&self) {
        self.end.cancelled().await
    }

    /// True once the stream was cancelled.
    pub fn is_cancelled(&self) -> bool {
        self.end.is_cancelled()
    }

    /// The caller's deadline (CLOCK_MONOTONIC ns), 0 if none.
    pub fn deadline_ns(&self) -> u64 {
        self.end.stream.deadline_ns
    }

    /// Who opened the stream (host side; `None` in a cell).
    pub fn caller(&self) -> Option<PeerIdentity> {
        self.end.session.hooks.caller()
    }

    /// A cloneable handle on this end, for other tasks.
    pub fn end(&self) -> StreamEnd {
        self.end.clone()
    }
}

/// A future that turns a panic into INTERNAL, as for a blocking handler.
struct CatchUnwind(BoxFuture<Result<Reply>>);

impl Future for CatchUnwind {
    type Output = Result<Reply>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<Reply>> {
        match catch_unwind(AssertUnwindSafe(|| self.0.as_mut().poll(cx))) {
            Ok(poll) => poll,
            Err(panic) => Poll::Ready(Err(Error::new(
                Status::Internal,
                format!("an async handler panicked: {}", crate::error::panic_message(&*panic)),
            ))),
        }
    }
}

/// Polls `attempt` (a send with [`Room::AtOnce`]) until it finds room.
async fn with_room<T>(session: &Session, mut attempt: impl FnMut() -> Result<T>) -> Result<T> {
    poll_fn(|cx| match attempt() {
        Err(e) if found_no_room(&e) => {
            session.wait_for_room(cx.waker());
            Poll::Pending
        }
        done => Poll::Ready(done),
    })
    .await
}

/// A request an async handler serves, until it is answered: the book-keeping of its
/// end, once. Dropped unanswered (the runtime dropped the future), it answers
/// UNAVAILABLE in one attempt, so the caller does not wait for its deadline.
struct Serving {
    session: Arc<Session>,
    desc: Descriptor,
    no_reply: bool,
    started_ns: u64,
    done: bool,
}

impl Serving {
    /// Counts the call's end and turns its outcome into what goes on the wire.
    fn end(&mut self, outcome: Result<Reply>) -> Result<Reply> {
        self.done = true;
        let (session, desc) = (&self.session, &self.desc);
        if let (Some(metrics), true) = (&session.metrics, self.started_ns != 0) {
            let status = outcome.as_ref().map_or_else(Error::status, |_| Status::Ok);
            metrics.incoming.finish_of(desc.method_id, status, self.started_ns, monotonic_now_ns());
        }
        session.hooks.on_served(desc.method_id, outcome.is_ok());
        let outcome = outcome.map_err(|e| session.status_to_send(e, desc));
        session.cancelled_calls.forget(desc.msg_id);
        session.link.lock().served(desc.msg_id);
        session.count(control::REQUESTS_SERVED, 1);
        if outcome.is_err() {
            session.count(control::ERRORS, 1);
        }
        if let (true, Err(e)) = (self.no_reply, &outcome) {
            tracing::warn!(peer = %session.label, method_id = desc.method_id, "notification failed: {e}");
        }
        outcome
    }

    /// Sends the response, in one attempt at the ring and pool.
    fn try_answer(&self, outcome: &Result<Reply>) -> Result<()> {
        if self.no_reply {
            return Ok(());
        }
        let (session, desc) = (&self.session, &self.desc);
        let give_up = Room::AtOnce.give_up(0);
        let response = frames::response(desc, outcome.as_ref().err().map(Error::code));
        let body = match outcome {
            Ok(reply) => {
                let bytes = (**reply).as_ref();
                session.fill_body(bytes.len(), give_up, copy_of(bytes))?
            }
            Err(e) => session.error_body(e.message(), give_up)?,
        };
        session.send(response, body, give_up)
    }
}

impl Drop for Serving {
    fn drop(&mut self) {
        if !self.done {
            let error = Error::new(Status::Unavailable, "the handler's runtime dropped it before it finished");
            let outcome = self.end(Err(error));
            let _ = self.try_answer(&outcome);
        }
    }
}

impl Session {
    /// Serves `desc` with its async `handler` (found with its access rules by `serve`):
    /// checks it as a blocking request is checked, then spawns its future on `spawn`.
    pub(super) fn serve_async(
        self: &Arc<Self>,
        desc: &Descriptor,
        payload: Payload,
        no_reply: bool,
        handler: Arc<AsyncHandler>,
        spawn: &dyn Spawn,
        access: Option<AccessCheck>,
    ) {
        let started_ns = self
            .metrics
            .as_ref()
            .map_or(0, |m| m.incoming.start(desc.method_id, None, monotonic_now_ns()).at_ns().max(1));
        let mut serving = Serving { session: self.clone(), desc: *desc, no_reply, started_ns, done: false };
        let refused = if desc.deadline_ns != 0 && monotonic_now_ns() >= desc.deadline_ns {
            Some(Error::new(Status::DeadlineExceeded, format!("the request expired before {} served it", self.label)))
        } else {
            access.and_then(|access| self.admit(&access).err())
        };
        if let Some(refused) = refused {
            let outcome = serving.end(Err(refused));
            let _ = serving.try_answer(&outcome);
            return;
        }
        let _ = self.link_watching(desc.deadline_ns, |link| {
            link.serving(desc.msg_id, desc.deadline_ns);
            Ok(())
        });
        let token = CancelToken { session: self.clone(), msg_id: desc.msg_id, deadline_ns: desc.deadline_ns };
        let handled = CatchUnwind(handler(AsyncCall { payload, token, method_id: desc.method_id }));
        spawn.spawn(Box::pin(async move {
            let outcome = handled.await;
            let outcome = serving.end(outcome);
            let session = serving.session.clone();
            let _ = with_room(&session, || serving.try_answer(&outcome)).await;
        }));
    }

    /// Runs the async handler of a stream the peer opened, as a future on `spawn`: the
    /// blocking path's steps (access, first credit, the handler, FINISH), none waiting.
    pub(super) fn spawn_stream_handler(
        self: &Arc<Self>,
        stream: Arc<StreamState>,
        request: Payload,
        access: Option<AccessCheck>,
        handler: Arc<AsyncStreamHandler>,
        spawn: &dyn Spawn,
    ) {
        let session = self.clone();
        spawn.spawn(Box::pin(async move {
            let outcome = match access.map_or(Ok(()), |access| session.admit(&access)) {
                Err(refused) => Err(refused),
                Ok(()) => {
                    // Give the caller our window before the handler runs.
                    let credit = OutFrame::Credit(session.stream_window);
                    let granted =
                        with_room(&session, || session.stream_frame_within(&stream, credit, None, Room::AtOnce)).await;
                    match granted {
                        Err(e) => Err(e),
                        Ok(()) => {
                            let end = StreamEnd { stream: stream.clone(), session: session.clone() };
                            CatchUnwind(handler(AsyncStreamCall { request, end })).await
                        }
                    }
                }
            };
            if session.end_stream_handler(&stream) {
                let status = outcome.as_ref().map(|reply| (**reply).as_ref());
                let finished = with_room(&session, || session.finish_stream_frame(&stream, status, Room::AtOnce)).await;
                if let Err(e) = finished {
                    tracing::debug!("could not finish a stream: {e}");
                }
            }
        }));
    }
}
