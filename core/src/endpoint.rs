//! What a host's [`crate::Peer`] and a [`crate::Cell`] share: calling the other side of
//! their link by method name. Both public types keep their own documented methods and
//! delegate here, so a call means the same thing from either side.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::builtin;
use crate::error::Result;
use crate::runtime::session::{copy_of, CallOptions, Completion, PendingCall, Response, Session, Stream};
use crate::wire::{self, ControlKind, MethodKind};

/// One side's view of its link, for calls.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Endpoint<'a>(pub &'a Arc<Session>);

impl Endpoint<'_> {
    /// Calls `method` and waits for its response.
    pub(crate) fn call(self, method: &str, payload: &[u8], options: &CallOptions) -> Result<Response> {
        self.call_with(method, payload.len(), copy_of(payload), options)
    }

    /// Calls `method` with a request `fill` writes in place.
    pub(crate) fn call_with(
        self,
        method: &str,
        max_len: usize,
        fill: impl FnOnce(&mut [u8]) -> usize,
        options: &CallOptions,
    ) -> Result<Response> {
        self.0.call_with(wire::method_id(method), Some(method), max_len, fill, options)
    }

    /// Opens a stream to the stream method `method`.
    pub(crate) fn open_stream(self, method: &str, request: &[u8], options: &CallOptions) -> Result<Stream> {
        self.0.open_stream(wire::method_id(method), Some(method), request, options)
    }

    /// Starts a call; `on_complete` runs once its result is in.
    pub(crate) fn call_start(
        self,
        method: &str,
        payload: &[u8],
        options: &CallOptions,
        on_complete: Completion,
    ) -> Result<PendingCall> {
        self.0.call_start(wire::method_id(method), Some(method), payload.len(), copy_of(payload), options, on_complete)
    }

    /// Sends a notification (no response).
    pub(crate) fn notify(self, method: &str, payload: &[u8], options: &CallOptions) -> Result<()> {
        self.0.notify_with(wire::method_id(method), payload.len(), copy_of(payload), options)
    }

    /// PING, PONG: the other side's receive path is alive; the round-trip time.
    pub(crate) fn ping(self, timeout: Duration) -> Result<Duration> {
        let started = Instant::now();
        self.0.control_call(ControlKind::Ping, &[], timeout)?;
        Ok(started.elapsed())
    }

    /// The methods the other side serves, as (name, id, kind), sorted by name.
    pub(crate) fn methods(self, timeout: Duration) -> Result<Vec<(String, u32, MethodKind)>> {
        let response = self.call(wire::builtin::INTROSPECT_METHODS, &[], &CallOptions::timeout(timeout))?;
        builtin::introspect::decode(response.bytes())
    }
}
