//! Typed calls and streams for async code: what generated async clients
//! (`<Svc>AsyncClient`) and async servers (`<Svc>Async`, `serve_<svc>_async`) build on.
//! The same mapping as the blocking half (see the module above), over
//! [`LinkEnd::call_async`], [`LinkEnd::open_stream_async`] and async handlers.

use std::marker::PhantomData;
use std::pin::Pin;
use std::task::{Context, Poll};

use prost::Message;

use super::{decode, encode};
use crate::error::Result;
use crate::session::{AsyncStream, AsyncStreamCall, CallOptions, StreamItem};
use crate::LinkEnd;

/// A unary call: encodes `request`, awaits the response, decodes it.
pub async fn unary_async<C, Req, Resp>(caller: &C, method: &str, request: &Req, options: &CallOptions) -> Result<Resp>
where
    C: LinkEnd,
    Req: Message,
    Resp: Message + Default,
{
    let response = caller.call_async(method, &encode(request), options).await?;
    decode(response.bytes(), method)
}

/// A server-streaming call: the responses, as a `futures_core::Stream`.
pub async fn server_streaming_async<C, Req, Resp>(
    caller: &C,
    method: &str,
    request: &Req,
    options: &CallOptions,
) -> Result<AsyncStreaming<Resp>>
where
    C: LinkEnd,
    Req: Message,
    Resp: Message + Default,
{
    let stream = caller.open_stream_async(method, &encode(request), options).await?;
    Ok(AsyncStreaming { stream, method: method.to_string(), _items: PhantomData })
}

/// Opens a client-streaming call: send the requests, then
/// [`AsyncClientStreaming::finish`].
pub async fn client_streaming_async<C, Req, Resp>(
    caller: &C,
    method: &str,
    options: &CallOptions,
) -> Result<AsyncClientStreaming<Req, Resp>>
where
    C: LinkEnd,
    Req: Message,
    Resp: Message + Default,
{
    let stream = caller.open_stream_async(method, &[], options).await?;
    Ok(AsyncClientStreaming { stream, method: method.to_string(), _messages: PhantomData })
}

/// Opens a bidi call: send requests and receive responses in any order (from two tasks,
/// sharing it in an `Arc`, if need be).
pub async fn bidi_async<C, Req, Resp>(caller: &C, method: &str, options: &CallOptions) -> Result<AsyncBidi<Req, Resp>>
where
    C: LinkEnd,
    Req: Message,
    Resp: Message + Default,
{
    let stream = caller.open_stream_async(method, &[], options).await?;
    Ok(AsyncBidi { stream, method: method.to_string(), _messages: PhantomData })
}

fn decoded<M: Message + Default>(item: Result<Option<StreamItem>>, method: &str) -> Result<Option<M>> {
    match item? {
        Some(item) => decode(item.bytes(), method).map(Some),
        None => Ok(None),
    }
}

fn poll_decoded<M: Message + Default>(
    stream: Pin<&mut AsyncStream>,
    cx: &mut Context<'_>,
    method: &str,
) -> Poll<Option<Result<M>>> {
    futures_core::Stream::poll_next(stream, cx).map(|item| decoded(item.transpose(), method).transpose())
}

/// The responses of an async server-streaming call: a `futures_core::Stream` of
/// messages. Dropping it before the end cancels the call.
#[derive(Debug)]
pub struct AsyncStreaming<M> {
    stream: AsyncStream,
    method: String,
    _items: PhantomData<fn() -> M>,
}

impl<M: Message + Default> AsyncStreaming<M> {
    /// The next response; `None` once the handler finished successfully.
    pub async fn message(&self) -> Result<Option<M>> {
        decoded(self.stream.message().await, &self.method)
    }

    /// Gives up the call: the handler sees it cancelled.
    pub fn cancel(&self) {
        self.stream.cancel()
    }
}

impl<M: Message + Default> futures_core::Stream for AsyncStreaming<M> {
    type Item = Result<M>;
    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<M>>> {
        let this = self.get_mut();
        poll_decoded(Pin::new(&mut this.stream), cx, &this.method)
    }
}

/// An async client-streaming call in progress.
#[derive(Debug)]
pub struct AsyncClientStreaming<Req, Resp> {
    stream: AsyncStream,
    method: String,
    _messages: PhantomData<fn(Req) -> Resp>,
}

impl<Req: Message, Resp: Message + Default> AsyncClientStreaming<Req, Resp> {
    /// Sends one request, once the handler has granted credit.
    pub async fn send(&self, request: &Req) -> Result<()> {
        self.stream.send(&encode(request)).await
    }

    /// Ends the requests and awaits the handler's response.
    pub async fn finish(self) -> Result<Resp> {
        let method = self.method;
        let response = self.stream.finish().await?;
        decode(response.bytes(), &method)
    }

    /// Gives up the call: the handler sees it cancelled.
    pub fn cancel(&self) {
        self.stream.cancel()
    }
}

/// An async bidi call in progress: send with [`AsyncBidi::send`], read as a
/// `futures_core::Stream` or with [`AsyncBidi::message`].
#[derive(Debug)]
pub struct AsyncBidi<Req, Resp> {
    stream: AsyncStream,
    method: String,
    _messages: PhantomData<fn(Req) -> Resp>,
}

impl<Req: Message, Resp: Message + Default> AsyncBidi<Req, Resp> {
    /// Sends one request.
    pub async fn send(&self, request: &Req) -> Result<()> {
        self.stream.send(&encode(request)).await
    }

    /// Tells the handler no more requests follow.
    pub async fn close_send(&self) -> Result<()> {
        self.stream.close_send().await
    }

    /// The next response; `None` once the handler finished successfully.
    pub async fn message(&self) -> Result<Option<Resp>> {
        decoded(self.stream.message().await, &self.method)
    }

    /// Gives up the call: the handler sees it cancelled.
    pub fn cancel(&self) {
        self.stream.cancel()
    }
}

impl<Req: Message, Resp: Message + Default> futures_core::Stream for AsyncBidi<Req, Resp> {
    type Item = Result<Resp>;
    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Resp>>> {
        let this = self.get_mut();
        poll_decoded(Pin::new(&mut this.stream), cx, &this.method)
    }
}

/// An async stream handler's typed end: what a generated `<Svc>Async` server's
/// streaming methods get, by value (it may move into other tasks). `In` is what the
/// caller sends, `Out` what the handler sends.
#[derive(Debug)]
pub struct AsyncServerStream<In, Out> {
    call: AsyncStreamCall,
    method: &'static str,
    _messages: PhantomData<fn(In) -> Out>,
}

impl<In: Message + Default, Out: Message> AsyncServerStream<In, Out> {
    /// Wraps the stream call of `method` (used by generated code).
    pub fn new(call: AsyncStreamCall, method: &'static str) -> AsyncServerStream<In, Out> {
        AsyncServerStream { call, method, _messages: PhantomData }
    }

    /// Sends one message to the caller, once it has granted credit. Fails with
    /// CANCELLED once the caller cancelled.
    pub async fn send(&self, message: &Out) -> Result<()> {
        self.call.send(&encode(message)).await
    }

    /// The next message from the caller; `None` after it closed its sending side.
    pub async fn recv(&self) -> Result<Option<In>> {
        decoded(self.call.recv().await, self.method)
    }

    /// Resolves once the stream is cancelled (by the caller, its deadline, or the link).
    pub async fn cancelled(&self) {
        self.call.cancelled().await
    }

    /// True once the caller cancelled (or its deadline passed, or the link failed).
    pub fn is_cancelled(&self) -> bool {
        self.call.is_cancelled()
    }

    /// The caller's deadline (`CLOCK_MONOTONIC` ns), 0 if none.
    pub fn deadline_ns(&self) -> u64 {
        self.call.deadline_ns()
    }

    /// The untyped stream call underneath.
    pub fn raw(&self) -> &AsyncStreamCall {
        &self.call
    }
}
