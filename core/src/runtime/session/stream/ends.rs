//! The ends users hold: the caller's `Stream`, a handler's `StreamCall`, and
//! `StreamEnd`, how a stream ended.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use super::{Payload, Response, Session};
use crate::error::{Error, Result};
use crate::proto::frames::OutFrame;
use crate::shm::SharedBytes;
use crate::sys::clock::monotonic_now_ns;
use crate::Status;

use super::*;

/// The caller's end of a stream. Dropping it before the stream finished cancels it.
pub struct Stream {
    pub(super) state: Arc<StreamState>,
    pub(super) session: Arc<Session>,
    /// Set once the caller saw the end (or cancelled): no CANCEL on drop then.
    pub(super) ended: std::sync::atomic::AtomicBool,
}

impl fmt::Debug for Stream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.state.fmt(f)
    }
}

impl Stream {
    /// Sends one item to the handler (client streaming); waits for credit.
    pub fn send(&self, item: &[u8]) -> Result<()> {
        self.with_deadline(self.session.send_item(&self.state, item.len(), crate::runtime::session::copy_of(item)))
    }

    /// Sends one item written in place.
    pub fn send_with(&self, max_len: usize, fill: impl FnOnce(&mut [u8]) -> usize) -> Result<()> {
        self.with_deadline(self.session.send_item(&self.state, max_len, fill))
    }

    /// Tells the handler no more items follow.
    pub fn close_send(&self) -> Result<()> {
        if !self.state.inner.lock().flow.close_send() {
            return Ok(());
        }
        self.session.stream_frame(&self.state, OutFrame::Eos, None)
    }

    /// The next item from the handler; `None` once it finished successfully.
    pub fn recv(&self) -> Result<Option<StreamItem>> {
        let got = self.with_deadline(self.session.recv_item(&self.state));
        // Errors end the stream, except one the caller can fix (holding a whole window).
        let ended = match &got {
            Ok(item) => item.is_none(),
            Err(_) => self.state.is_over() || self.session.failure().is_some(),
        };
        if ended {
            self.set_ended();
        }
        got
    }

    /// Closes sending, drops any items still coming, and returns the handler's final
    /// response (client streaming).
    pub fn finish(self) -> Result<Response> {
        self.close_send()?;
        let mut inner = self.state.inner.lock();
        loop {
            if let Some(done) = self.finish_step(&mut inner) {
                return done;
            }
            inner = match self.session.wait_for_change(&self.state, inner) {
                Ok(inner) => inner,
                Err(e) => {
                    self.session.cancel_stream(&self.state, e.clone());
                    self.set_ended();
                    return Err(e);
                }
            };
        }
    }

    /// The handler's final response if it is in (items still coming are dropped), or
    /// why there will be none; `None` while the stream runs.
    pub(super) fn finish_step(&self, inner: &mut StreamInner) -> Option<Result<Response>> {
        inner.inbound.clear();
        let done = match inner.finished.take() {
            Some(Ok(Some(payload))) => Ok(Response { payload }),
            Some(Ok(None)) => Err(Error::new(Status::Internal, "stream finished twice")),
            Some(Err(e)) => Err(e),
            None => Err(inner.stopped.clone()?),
        };
        self.set_ended();
        Some(done)
    }

    /// Gives up the stream: the handler sees it cancelled; late items are dropped.
    pub fn cancel(&self) {
        if !self.ended.swap(true, std::sync::atomic::Ordering::AcqRel) {
            self.session.cancel_stream(&self.state, Error::new(Status::Cancelled, "cancelled by the caller"));
        }
    }

    pub(super) fn set_ended(&self) {
        self.ended.store(true, std::sync::atomic::Ordering::Release);
    }

    pub(super) fn is_ended(&self) -> bool {
        self.ended.load(std::sync::atomic::Ordering::Acquire)
    }

    pub(super) fn with_deadline<T>(&self, result: Result<T>) -> Result<T> {
        if let Err(e) = &result {
            if e.status() == Status::DeadlineExceeded {
                self.session.cancel_stream(&self.state, e.clone());
            }
        }
        result
    }
}

impl Iterator for Stream {
    type Item = Result<StreamItem>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.is_ended() {
            return None;
        }
        self.recv().transpose()
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        let finished = self.state.inner.lock().finished.is_some();
        if !self.is_ended() && !finished {
            self.cancel();
        }
    }
}

/// The handler's end of a stream.
pub struct StreamCall {
    pub(super) request: Option<Payload>,
    pub(super) end: StreamEnd,
    pub(super) response: Vec<u8>,
}

impl fmt::Debug for StreamCall {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.end.stream.fmt(f)
    }
}

impl StreamCall {
    /// The message the caller opened the stream with (copied out of shared memory on
    /// the first call when larger than 80 bytes, see [`StreamCall::request_payload`]).
    pub fn request(&self) -> &[u8] {
        self.request.as_ref().map_or(&[], |p| p.bytes())
    }

    /// The opening message where it lies, without a copy.
    pub fn request_payload(&self) -> SharedBytes<'_> {
        self.request.as_ref().map_or(SharedBytes::private(&[]), |p| p.shared())
    }

    /// Sends one item to the caller; waits for credit (a slow caller slows us down).
    /// Fails with CANCELLED once the caller cancelled.
    pub fn send(&mut self, item: &[u8]) -> Result<()> {
        self.end.send(item)
    }

    /// Sends one item written in place.
    pub fn send_with(&mut self, max_len: usize, fill: impl FnOnce(&mut [u8]) -> usize) -> Result<()> {
        self.end.send_with(max_len, fill)
    }

    /// The next item from the caller; `None` after it closed its sending side.
    pub fn recv(&mut self) -> Result<Option<StreamItem>> {
        self.end.recv()
    }

    /// True once the caller cancelled (or its deadline passed, or the link failed).
    pub fn is_cancelled(&self) -> bool {
        self.end.is_cancelled()
    }

    /// Who opened the stream, as the host knows it (host side; `None` in a cell).
    pub fn caller(&self) -> Option<crate::runtime::session::PeerIdentity> {
        self.end.session.hooks.caller()
    }

    /// Waits up to `timeout` for cancellation; true if the stream was cancelled.
    pub fn wait_cancelled(&self, timeout: Duration) -> bool {
        self.end.wait_cancelled(timeout)
    }

    /// The final response sent when the handler returns Ok (client streaming).
    pub fn set_response(&mut self, bytes: &[u8]) {
        self.response = bytes.to_vec();
    }

    /// The caller's deadline (CLOCK_MONOTONIC ns), 0 if none.
    pub fn deadline_ns(&self) -> u64 {
        self.end.stream.deadline_ns
    }

    /// The stream's channel id (for tests that forge frames on it).
    #[doc(hidden)]
    pub fn channel_id(&self) -> u32 {
        self.end.stream.channel
    }

    /// A cloneable handle to this end of the stream, for sending or receiving from
    /// another thread (and for language bindings). It stops working once the handler
    /// returned: the stream is finished then.
    pub fn end(&self) -> StreamEnd {
        self.end.clone()
    }
}

/// A handle to the handler's end of a stream (see [`StreamCall::end`]).
#[derive(Clone)]
pub struct StreamEnd {
    pub(crate) stream: Arc<StreamState>,
    pub(crate) session: Arc<Session>,
}

impl fmt::Debug for StreamEnd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.stream.fmt(f)
    }
}

impl StreamEnd {
    /// The caller's deadline (CLOCK_MONOTONIC ns), 0 if none.
    pub fn deadline_ns(&self) -> u64 {
        self.stream.deadline_ns
    }

    /// Sends one item to the caller (see [`StreamCall::send`]).
    pub fn send(&self, item: &[u8]) -> Result<()> {
        self.send_with(item.len(), crate::runtime::session::copy_of(item))
    }

    /// Sends one item written in place.
    pub fn send_with(&self, max_len: usize, fill: impl FnOnce(&mut [u8]) -> usize) -> Result<()> {
        if self.stream.inner.lock().handler_done {
            return Err(Error::new(Status::FailedPrecondition, format!("{} has finished", self.stream.what())));
        }
        self.session.send_item(&self.stream, max_len, fill)
    }

    /// The next item from the caller; `None` after it closed its sending side.
    pub fn recv(&self) -> Result<Option<StreamItem>> {
        self.session.recv_item(&self.stream)
    }

    /// True once the caller cancelled (or its deadline passed, or the link failed).
    pub fn is_cancelled(&self) -> bool {
        self.stream.inner.lock().stopped.is_some()
            || (self.stream.deadline_ns != 0 && monotonic_now_ns() >= self.stream.deadline_ns)
            || self.session.failure().is_some()
    }

    /// Waits up to `timeout` for cancellation; true if the stream was cancelled.
    pub fn wait_cancelled(&self, timeout: Duration) -> bool {
        // Until the timeout or the stream's deadline, whichever is first; a cancel, the
        // link's failure (a stop) and the handler's return notify.
        let mut until = std::time::Instant::now() + timeout;
        if self.stream.deadline_ns != 0 {
            let left = Duration::from_nanos(self.stream.deadline_ns.saturating_sub(monotonic_now_ns()));
            until = until.min(std::time::Instant::now() + left);
        }
        let mut inner = self.stream.inner.lock();
        while inner.stopped.is_none() && !inner.handler_done && self.session.failure().is_none() {
            if self.stream.cv.wait_until(&mut inner, until).timed_out() {
                break;
            }
        }
        drop(inner);
        self.is_cancelled()
    }
}
