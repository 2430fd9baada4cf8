//! Typed calls and streams over protobuf messages (the `prost` feature): what the code
//! `cellshm-codegen` generates from `.proto` services builds on.
//!
//! A service method `pkg.Svc/Method` is the cellshm method `"pkg.Svc.Method"`; its
//! request and response are prost messages encoded into the call's payload (written in
//! place into the slot, decoded from a private copy). The four kinds map onto cellshm's
//! calls and streams:
//!
//! | kind | caller | handler |
//! |---|---|---|
//! | unary | [`LinkEnd::call`] | a method handler |
//! | server streaming | a stream opened with the request, items are responses | a stream handler that sends |
//! | client streaming | a stream opened with no request, items are requests, the final response | a stream handler that receives, then sets the response |
//! | bidi | a stream opened with no request, items both ways | a stream handler that does both |
//!
//! A message that does not decode is INTERNAL for the side that received it, as in
//! gRPC; nothing of it reaches user code.
//!
//! Topics carry messages too: [`TypedPublisher`] and [`TypedSubscriber`] over any prost
//! message type.

/// Includes the Rust code `cellshm-codegen` generated for a protobuf package in a build
/// script ([`cellshm_codegen::compile_protos`]): one file per package in `OUT_DIR`, named
/// after the package with its dots (`acme.inventory.v1.rs`; `_.rs` for a file without a
/// package), as prost and tonic name them.
///
/// ```ignore
/// pub mod inventory {
///     cellshm::include_proto!("acme.inventory.v1");
/// }
/// ```
///
/// [`cellshm_codegen::compile_protos`]: https://docs.rs/cellshm-codegen
#[macro_export]
macro_rules! include_proto {
    ($package:tt) => {
        include!(concat!(env!("OUT_DIR"), concat!("/", $package, ".rs")));
    };
}

use std::marker::PhantomData;

use prost::Message;

use crate::error::{Error, Result};
use crate::session::{Call, CallOptions, Stream, StreamCall, StreamItem};
use crate::wire::Status;
use crate::LinkEnd;

pub use crate::wire::MethodKind;

mod asynchronous;
mod topic;
pub use asynchronous::{
    bidi_async, client_streaming_async, server_streaming_async, unary_async, AsyncBidi, AsyncClientStreaming,
    AsyncServerStream, AsyncStreaming,
};
pub use topic::{TypedPublisher, TypedSample, TypedSubscriber};

/// One method of a service, as the generated code describes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MethodInfo {
    /// `"pkg.Svc.Method"`.
    pub name: &'static str,
    /// `cellshm::method_id(name)`.
    pub id: u32,
    /// How it is called.
    pub kind: MethodKind,
}

/// Decodes a message that arrived for `what` (a method name); INTERNAL if it does not.
pub fn decode<M: Message + Default>(bytes: &[u8], what: &str) -> Result<M> {
    M::decode(bytes).map_err(|e| {
        Error::new(Status::Internal, format!("{what}: could not decode {}: {e}", std::any::type_name::<M>()))
    })
}

/// Encodes `message` into a fresh buffer (stream items and opening requests).
pub fn encode<M: Message>(message: &M) -> Vec<u8> {
    message.encode_to_vec()
}

/// Writes `message` into `buf` (at least `message.encoded_len()` bytes: the length the
/// call was started with) and returns how many bytes it wrote.
fn encode_into<M: Message>(message: &M, buf: &mut [u8]) -> usize {
    let capacity = buf.len();
    let mut rest = &mut buf[..];
    // Only a buffer shorter than `encoded_len` makes `encode` fail, and nothing is
    // written then: the caller asked for `encoded_len` bytes, so this does not happen.
    match message.encode(&mut rest) {
        Ok(()) => capacity - rest.len(),
        Err(_) => 0,
    }
}

/// A unary call: encodes `request` in place, decodes the response.
pub fn unary<C, Req, Resp>(caller: &C, method: &str, request: &Req, options: &CallOptions) -> Result<Resp>
where
    C: LinkEnd,
    Req: Message,
    Resp: Message + Default,
{
    let len = request.encoded_len();
    let response = caller.call_with(method, len, |buf| encode_into(request, buf), options)?;
    decode(response.bytes(), method)
}

/// A server-streaming call: the responses, as an iterator.
pub fn server_streaming<C, Req, Resp>(
    caller: &C,
    method: &str,
    request: &Req,
    options: &CallOptions,
) -> Result<Streaming<Resp>>
where
    C: LinkEnd,
    Req: Message,
    Resp: Message + Default,
{
    let stream = caller.open_stream(method, &encode(request), options)?;
    Ok(Streaming { stream, method: method.to_string(), _items: PhantomData })
}

/// Opens a client-streaming call: send the requests, then [`ClientStreaming::finish`].
pub fn client_streaming<C, Req, Resp>(
    caller: &C,
    method: &str,
    options: &CallOptions,
) -> Result<ClientStreaming<Req, Resp>>
where
    C: LinkEnd,
    Req: Message,
    Resp: Message + Default,
{
    let stream = caller.open_stream(method, &[], options)?;
    Ok(ClientStreaming { stream, method: method.to_string(), _messages: PhantomData })
}

/// Opens a bidi call: send requests and receive responses in any order.
pub fn bidi<C, Req, Resp>(caller: &C, method: &str, options: &CallOptions) -> Result<Bidi<Req, Resp>>
where
    C: LinkEnd,
    Req: Message,
    Resp: Message + Default,
{
    let stream = caller.open_stream(method, &[], options)?;
    Ok(Bidi { stream, method: method.to_string(), _messages: PhantomData })
}

fn send_message<M: Message>(stream: &Stream, message: &M) -> Result<()> {
    stream.send_with(message.encoded_len(), |buf| encode_into(message, buf))
}

fn recv_message<M: Message + Default>(item: Result<Option<StreamItem>>, method: &str) -> Result<Option<M>> {
    match item? {
        Some(item) => decode(item.bytes(), method).map(Some),
        None => Ok(None),
    }
}

/// The responses of a server-streaming call (or of a bidi call's receiving half).
/// Dropping it before the end cancels the call.
#[derive(Debug)]
pub struct Streaming<M> {
    stream: Stream,
    method: String,
    _items: PhantomData<fn() -> M>,
}

impl<M: Message + Default> Streaming<M> {
    /// The next response; `None` once the handler finished successfully.
    pub fn recv(&self) -> Result<Option<M>> {
        recv_message(self.stream.recv(), &self.method)
    }

    /// Gives up the call: the handler sees it cancelled.
    pub fn cancel(&self) {
        self.stream.cancel()
    }
}

impl<M: Message + Default> Iterator for Streaming<M> {
    type Item = Result<M>;
    fn next(&mut self) -> Option<Result<M>> {
        self.recv().transpose()
    }
}

/// A client-streaming call in progress.
#[derive(Debug)]
pub struct ClientStreaming<Req, Resp> {
    stream: Stream,
    method: String,
    _messages: PhantomData<fn(Req) -> Resp>,
}

impl<Req: Message, Resp: Message + Default> ClientStreaming<Req, Resp> {
    /// Sends one request; waits for credit (a slow handler slows the caller).
    pub fn send(&self, request: &Req) -> Result<()> {
        send_message(&self.stream, request)
    }

    /// Ends the requests and waits for the handler's response.
    pub fn finish(self) -> Result<Resp> {
        let method = self.method;
        let response = self.stream.finish()?;
        decode(response.bytes(), &method)
    }

    /// Gives up the call: the handler sees it cancelled.
    pub fn cancel(&self) {
        self.stream.cancel()
    }
}

/// A bidi call in progress.
#[derive(Debug)]
pub struct Bidi<Req, Resp> {
    stream: Stream,
    method: String,
    _messages: PhantomData<fn(Req) -> Resp>,
}

impl<Req: Message, Resp: Message + Default> Bidi<Req, Resp> {
    /// Sends one request.
    pub fn send(&self, request: &Req) -> Result<()> {
        send_message(&self.stream, request)
    }

    /// Tells the handler no more requests follow.
    pub fn close_send(&self) -> Result<()> {
        self.stream.close_send()
    }

    /// The next response; `None` once the handler finished successfully.
    pub fn recv(&self) -> Result<Option<Resp>> {
        recv_message(self.stream.recv(), &self.method)
    }

    /// Gives up the call: the handler sees it cancelled.
    pub fn cancel(&self) {
        self.stream.cancel()
    }
}

/// A stream handler's typed end: what a server-streaming, client-streaming or bidi
/// handler gets. `In` is what the caller sends, `Out` what the handler sends.
#[derive(Debug)]
pub struct ServerStream<'a, In, Out> {
    call: &'a mut StreamCall,
    method: &'static str,
    _messages: PhantomData<fn(In) -> Out>,
}

impl<'a, In: Message + Default, Out: Message> ServerStream<'a, In, Out> {
    /// Wraps the stream call of `method` (used by generated code).
    pub fn new(call: &'a mut StreamCall, method: &'static str) -> ServerStream<'a, In, Out> {
        ServerStream { call, method, _messages: PhantomData }
    }

    /// Sends one message to the caller; waits for credit. Fails with CANCELLED once the
    /// caller cancelled.
    pub fn send(&mut self, message: &Out) -> Result<()> {
        self.call.send_with(message.encoded_len(), |buf| encode_into(message, buf))
    }

    /// The next message from the caller; `None` after it closed its sending side.
    pub fn recv(&mut self) -> Result<Option<In>> {
        let item = self.call.recv();
        recv_message(item, self.method)
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
    pub fn raw(&mut self) -> &mut StreamCall {
        self.call
    }
}

/// Runs a typed unary handler on a call: decode, run, encode the response in place.
pub fn serve_unary<Req, Resp>(
    call: &mut Call<'_>,
    method: &'static str,
    handler: impl FnOnce(&Call<'_>, Req) -> Result<Resp>,
) -> Result<()>
where
    Req: Message + Default,
    Resp: Message,
{
    let request: Req = decode(call.payload(), method)?;
    let response = handler(call, request)?;
    call.reply_with(response.encoded_len(), |buf| encode_into(&response, buf))
}

/// Decodes the opening request of a server-streaming call.
pub fn opening_request<Req: Message + Default>(call: &StreamCall, method: &str) -> Result<Req> {
    decode(call.request(), method)
}

/// Sets a client-streaming handler's response.
pub fn set_stream_response<Resp: Message>(call: &mut StreamCall, response: &Resp) {
    call.set_response(&response.encode_to_vec());
}

/// Checks that the other side serves every method of a service, each as the kind the
/// service declares: FAILED_PRECONDITION naming the first one missing or served as
/// another kind, ALREADY_EXISTS if it serves another name under one of the service's
/// ids (a hash collision: its handler would run for our calls).
pub fn check_served(served: &[(String, u32, MethodKind)], service: &str, methods: &[MethodInfo]) -> Result<()> {
    for m in methods {
        match served.iter().find(|(_, id, _)| *id == m.id) {
            Some((name, _, _)) if name != m.name => {
                return Err(Error::new(
                    Status::AlreadyExists,
                    format!("{service}: the peer serves {name:?} with the id {:#010x} of {:?}", m.id, m.name),
                ))
            }
            Some((_, _, kind)) if !kind.serves(m.kind) => {
                return Err(Error::new(
                    Status::FailedPrecondition,
                    format!("{service}: the peer serves {} as a {} method, not {}", m.name, kind.name(), m.kind.name()),
                ))
            }
            Some(_) => {}
            None => {
                return Err(Error::new(
                    Status::FailedPrecondition,
                    format!("{service}: the peer does not serve {}", m.name),
                ))
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_follow_the_proto_markers_and_an_undeclared_stream_serves_any_stream() {
        assert_eq!(MethodKind::of(false, false), MethodKind::Unary);
        assert_eq!(MethodKind::of(false, true), MethodKind::ServerStreaming);
        assert_eq!(MethodKind::of(true, false), MethodKind::ClientStreaming);
        assert_eq!(MethodKind::of(true, true), MethodKind::Bidi);
        assert!(MethodKind::Stream.serves(MethodKind::Bidi) && MethodKind::Bidi.serves(MethodKind::Bidi));
        assert!(!MethodKind::Stream.serves(MethodKind::Unary) && !MethodKind::Bidi.serves(MethodKind::ServerStreaming));
    }

    #[test]
    fn the_contract_check_names_what_is_missing_collides_or_has_another_kind() {
        let method = |name: &'static str, kind| MethodInfo { name, id: crate::method_id(name), kind };
        let ours = [method("kv.Store.Get", MethodKind::Unary), method("kv.Store.Watch", MethodKind::ServerStreaming)];
        let all: Vec<(String, u32, MethodKind)> = ours.iter().map(|m| (m.name.to_string(), m.id, m.kind)).collect();
        check_served(&all, "kv.Store", &ours).unwrap();
        let untyped_stream = vec![all[0].clone(), (all[1].0.clone(), all[1].1, MethodKind::Stream)];
        check_served(&untyped_stream, "kv.Store", &ours).unwrap();
        let e = check_served(&all[..1], "kv.Store", &ours).unwrap_err();
        assert_eq!(e.status(), Status::FailedPrecondition);
        assert!(e.message().contains("does not serve kv.Store.Watch"), "{e}");
        let unary_watch = vec![all[0].clone(), (all[1].0.clone(), all[1].1, MethodKind::Unary)];
        let e = check_served(&unary_watch, "kv.Store", &ours).unwrap_err();
        assert_eq!(e.status(), Status::FailedPrecondition);
        assert!(e.message().contains("serves kv.Store.Watch as a unary method, not server streaming"), "{e}");
        let collided = vec![all[0].clone(), ("Svc.m79518".to_string(), ours[1].id, MethodKind::ServerStreaming)];
        let e = check_served(&collided, "kv.Store", &ours).unwrap_err();
        assert_eq!(e.status(), Status::AlreadyExists);
        assert!(e.message().contains("Svc.m79518"), "{e}");
    }

    #[test]
    fn a_message_that_does_not_decode_is_internal() {
        let e = decode::<prost_types_free::Probe>(&[0xff, 0xff, 0xff], "kv.Store.Get").unwrap_err();
        assert_eq!(e.status(), Status::Internal);
        assert!(e.message().starts_with("kv.Store.Get: could not decode"), "{e}");
    }

    mod prost_types_free {
        /// A message with one string field, by hand (no build script in this crate).
        #[derive(Clone, PartialEq, prost::Message)]
        pub struct Probe {
            #[prost(string, tag = "1")]
            pub text: String,
        }
    }
}
