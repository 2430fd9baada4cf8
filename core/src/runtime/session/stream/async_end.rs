//! Streams for async code: the caller's [`AsyncStream`] (a `futures_core::Stream` of
//! items with async `send`), the future that opens one, and the async methods of a
//! handler's [`StreamEnd`]. They wait as the blocking ends do, on the same changes, but
//! as wakers: the thread that receives a frame (or grants credit, or fails the link, or
//! expires the stream's deadline) wakes the task. No thread waits and no timer runs.

use std::fmt;
use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use super::{Session, Stream, StreamEnd, StreamItem};
use crate::error::{Error, Result};
use crate::runtime::session::future::Attempts;
use crate::runtime::session::{found_no_room, CallOptions, Response, Room};
use crate::Status;

/// The caller's end of a stream, for async code ([`crate::LinkEnd::open_stream_async`]).
/// Read items as a `futures_core::Stream` (`while let Some(item) = stream.next().await`)
/// or with [`AsyncStream::message`]; send with [`AsyncStream::send`]. A slow reader
/// slows its producer and nothing else (the stream's window), and a sender waits for
/// credit without parking its executor. Dropping it before the stream finished cancels
/// it: the handler sees CANCEL. The stream's deadline ends it with DEADLINE_EXCEEDED
/// whether or not anyone awaits it.
pub struct AsyncStream {
    stream: Stream,
}

impl fmt::Debug for AsyncStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.stream.fmt(f)
    }
}

impl AsyncStream {
    /// Sends one item to the handler (client streaming and bidi), once the handler has
    /// granted credit and the ring has room.
    pub async fn send(&self, item: &[u8]) -> Result<()> {
        poll_fn(|cx| self.stream.poll_send(item, cx)).await
    }

    /// Tells the handler no more items follow.
    pub async fn close_send(&self) -> Result<()> {
        poll_fn(|cx| self.stream.poll_close_send(cx)).await
    }

    /// The next item from the handler; `None` once it finished successfully. The same
    /// as the `futures_core::Stream` implementation's `next()`, with the error in a
    /// `Result` rather than an item; it takes `&self`, so one task may read while
    /// another sends (share the stream in an `Arc`).
    pub async fn message(&self) -> Result<Option<StreamItem>> {
        poll_fn(|cx| self.poll_message(cx)).await
    }

    /// Closes sending, drops any items still coming, and returns the handler's final
    /// response (client streaming).
    pub async fn finish(self) -> Result<Response> {
        self.close_send().await?;
        poll_fn(|cx| self.stream.poll_finish(cx)).await
    }

    /// Gives up the stream: the handler sees it cancelled; late items are dropped.
    pub fn cancel(&self) {
        self.stream.cancel();
    }

    /// [`AsyncStream::message`] without a future: the next item if there is one, else
    /// `Pending` with `cx`'s waker registered (for a stream shared in an `Arc`, which
    /// cannot be polled as a `futures_core::Stream`).
    pub fn poll_message(&self, cx: &mut Context<'_>) -> Poll<Result<Option<StreamItem>>> {
        self.stream.poll_recv(cx)
    }
}

impl Stream {
    /// [`Stream::recv`] without blocking, for code that drives its own waits (an async
    /// runtime, a language binding's event loop): the next item if there is one, or
    /// `Pending` with `cx`'s waker registered for the change that may bring one.
    pub fn poll_recv(&self, cx: &mut Context<'_>) -> Poll<Result<Option<StreamItem>>> {
        if self.is_ended() {
            return Poll::Ready(Ok(None));
        }
        let got = std::task::ready!(self.session.poll_recv_item(&self.state, cx));
        // As for `recv`: errors end the stream, except one the caller can fix (holding a
        // whole window).
        let ended = match &got {
            Ok(item) => item.is_none(),
            Err(_) => self.state.is_over() || self.session.failure().is_some(),
        };
        if ended {
            self.set_ended();
        }
        Poll::Ready(got)
    }

    /// [`Stream::send`] without blocking: sends `item` if the handler granted credit and
    /// the ring has room, else `Pending` with `cx`'s waker registered for either.
    pub fn poll_send(&self, item: &[u8], cx: &mut Context<'_>) -> Poll<Result<()>> {
        self.session.poll_send_item(&self.state, item, cx)
    }

    /// [`Stream::finish`] without blocking, after the sending side was closed (see
    /// [`Stream::poll_close_send`]): the handler's final response once it is in.
    pub fn poll_finish(&self, cx: &mut Context<'_>) -> Poll<Result<Response>> {
        let mut inner = self.state.inner.lock();
        match self.finish_step(&mut inner) {
            Some(done) => Poll::Ready(done),
            None => {
                inner.wake_on_change(cx.waker());
                Poll::Pending
            }
        }
    }

    /// [`Stream::close_send`] without blocking (its EOS waits for room in the ring).
    pub fn poll_close_send(&self, cx: &mut Context<'_>) -> Poll<Result<()>> {
        self.session.poll_close_send(&self.state, cx)
    }
}

impl futures_core::Stream for AsyncStream {
    type Item = Result<StreamItem>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<StreamItem>>> {
        self.poll_message(cx).map(Result::transpose)
    }
}

impl From<Stream> for AsyncStream {
    /// The async end of a stream opened with [`crate::LinkEnd::open_stream`].
    fn from(stream: Stream) -> AsyncStream {
        AsyncStream { stream }
    }
}

/// The future of [`crate::LinkEnd::open_stream_async`]: the stream once its OPEN is in
/// the ring (a full ring or pool makes it wait for room, not the executor).
#[must_use = "opening a stream does nothing unless awaited"]
pub struct OpenStreamFuture {
    state: Option<std::result::Result<Attempts<Stream>, Error>>,
    opened: Option<Stream>,
}

impl fmt::Debug for OpenStreamFuture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OpenStreamFuture").field("opened", &self.opened.is_some()).finish()
    }
}

impl OpenStreamFuture {
    pub(crate) fn start(
        session: &Arc<Session>,
        method_id: u32,
        name: Option<&str>,
        request: &[u8],
        options: &CallOptions,
    ) -> OpenStreamFuture {
        match session.open_stream_within(method_id, name, request, options, Room::AtOnce) {
            Ok(stream) => OpenStreamFuture { state: None, opened: Some(stream) },
            Err(e) if found_no_room(&e) => {
                // A stream's default is no time limit, not the link's call timeout.
                let options = match options.deadline_for_call_starting_now(crate::FOREVER) {
                    0 => CallOptions::forever(),
                    deadline_ns => CallOptions::deadline(deadline_ns),
                };
                let (name, request) = (name.map(str::to_owned), request.to_vec());
                let attempts = Attempts::new(session.clone(), move |session| {
                    session.open_stream_within(method_id, name.as_deref(), &request, &options, Room::AtOnce)
                });
                OpenStreamFuture { state: Some(Ok(attempts)), opened: None }
            }
            Err(e) => OpenStreamFuture::failed(e),
        }
    }

    pub(crate) fn failed(error: Error) -> OpenStreamFuture {
        OpenStreamFuture { state: Some(Err(error)), opened: None }
    }
}

impl Future for OpenStreamFuture {
    type Output = Result<AsyncStream>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<AsyncStream>> {
        if let Some(stream) = self.opened.take() {
            return Poll::Ready(Ok(AsyncStream { stream }));
        }
        match &mut self.state {
            Some(Ok(attempts)) => {
                let opened = std::task::ready!(attempts.poll_attempt(cx));
                self.state = None;
                Poll::Ready(opened.map(|stream| AsyncStream { stream }))
            }
            Some(Err(_)) => match self.state.take() {
                Some(Err(e)) => Poll::Ready(Err(e)),
                _ => unreachable!("matched above"),
            },
            None => Poll::Ready(Err(Error::new(Status::FailedPrecondition, "the stream was opened already"))),
        }
    }
}

impl StreamEnd {
    /// [`StreamEnd::send`] for an async handler: waits for credit and room as a future.
    pub async fn send_async(&self, item: &[u8]) -> Result<()> {
        poll_fn(|cx| self.poll_send(item, cx)).await
    }

    /// [`StreamEnd::recv`] for an async handler: the next item from the caller; `None`
    /// after it closed its sending side.
    pub async fn recv_async(&self) -> Result<Option<StreamItem>> {
        poll_fn(|cx| self.poll_recv(cx)).await
    }

    /// Resolves once the stream is cancelled (by the caller, its deadline, or the link's
    /// failure), for `select!` beside a handler's work.
    pub async fn cancelled(&self) {
        poll_fn(|cx| self.poll_cancelled(cx)).await
    }

    /// [`StreamEnd::send`] without blocking: sends if the caller granted credit and the
    /// ring has room, else `Pending` with `cx`'s waker registered for either.
    pub fn poll_send(&self, item: &[u8], cx: &mut Context<'_>) -> Poll<Result<()>> {
        if self.stream.inner.lock().handler_done {
            return Poll::Ready(Err(Error::new(
                Status::FailedPrecondition,
                format!("{} has finished", self.stream.what()),
            )));
        }
        self.session.poll_send_item(&self.stream, item, cx)
    }

    /// [`StreamEnd::recv`] without blocking: the caller's next item if there is one.
    pub fn poll_recv(&self, cx: &mut Context<'_>) -> Poll<Result<Option<StreamItem>>> {
        self.session.poll_recv_item(&self.stream, cx)
    }

    /// Ready once the stream is cancelled; else `cx`'s waker is registered for it.
    pub fn poll_cancelled(&self, cx: &mut Context<'_>) -> Poll<()> {
        let mut inner = self.stream.inner.lock();
        if inner.stopped.is_some() || self.session.failure().is_some() {
            return Poll::Ready(());
        }
        inner.wake_on_change(cx.waker());
        Poll::Pending
    }
}
