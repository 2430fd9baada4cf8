//! Streams on channels other than 0: server streaming, client streaming and both at
//! once, with cancellation and per-channel flow control.
//!
//! Flow control: a side may have at most `window` DATA frames of a channel that the
//! other side has not released yet. The receiver grants credit back when the *user*
//! drops an item (not when it is received), so a stream never holds more slots than its
//! window, and a slow consumer slows its own producer and nobody else.

use std::collections::VecDeque;
use std::fmt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::time::Duration;

use std::sync::atomic::{AtomicU64, Ordering};

use crate::runtime::sync::{Condvar, Mutex, MutexGuard};

use super::{Awaited, CallOptions, OutBody, Payload, Response, Session, Waited, FOREVER};
use crate::error::{Error, Result};
use crate::proto::frames::{self, OutFrame, StreamHeader};
use crate::proto::stream::{Arrival, StreamFlow};
use crate::runtime::pool::Refused;
use crate::shm::SharedBytes;
use crate::sys::clock::monotonic_now_ns;
use crate::sys::doorbell::Kick;
use crate::wire::{Descriptor, StreamFrame, INLINE_CAPACITY};
use crate::Status;

pub use crate::proto::stream::STREAM_WINDOW;

/// Streams a peer may have open towards us at once, unless configured otherwise
/// (`PeerOptions::max_streams`): a misbehaving peer must not be able to open them
/// without bound. More are refused with RESOURCE_EXHAUSTED.
pub const MAX_INBOUND_STREAMS: usize = 64;

/// Threads that run the handlers of one peer's streams, at most, unless configured
/// otherwise (`PeerOptions::stream_threads`). A stream beyond them waits for one of them
/// to finish its handler; its caller cannot send items before then (the handler's first
/// credit goes out when it starts).
pub const STREAM_THREADS: usize = 8;

/// A stream handler: reads items with [`StreamCall::recv`], sends with
/// [`StreamCall::send`]; returning ends the stream (Ok, or the error for the caller).
pub type StreamHandler = dyn Fn(&mut StreamCall) -> Result<()> + Send + Sync;

pub(crate) struct StreamState {
    channel: u32,
    method_id: u32,
    name: Option<String>,
    /// We opened it (the caller's end): the peer's EOS ends its items, not the stream,
    /// whose end is the callee's FINISH (or CANCEL).
    opened_here: bool,
    deadline_ns: u64,
    inner: Mutex<StreamInner>,
    /// Bumped (under `inner`'s lock) on every change a waiter may wait for: a thread
    /// that polls the ring while it waits looks at this, not at the lock.
    changes: AtomicU64,
    /// For `StreamEnd::wait_cancelled`, the one wait that does not poll the ring.
    cv: Condvar,
}

#[derive(Default)]
struct StreamInner {
    inbound: VecDeque<Payload>,
    /// Credit, window and which side closed (the protocol's half of the stream).
    flow: StreamFlow,
    /// Caller side: the callee's final status (with its payload).
    finished: Option<Result<Option<Payload>>>,
    /// Why the stream stopped early (cancelled by either side, deadline, link failure).
    stopped: Option<Error>,
    /// Handler side: the handler returned (its FINISH is sent or being sent).
    handler_done: bool,
    /// The kicks of the threads asleep waiting for a change (see `StreamChange`).
    sleepers: Vec<Arc<Kick>>,
}

impl fmt::Debug for StreamState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Stream").field("channel", &self.channel).field("method_id", &self.method_id).finish()
    }
}

impl StreamState {
    fn new(
        channel: u32,
        method_id: u32,
        name: Option<String>,
        opened_here: bool,
        deadline_ns: u64,
        send_credits: u32,
        window: u32,
    ) -> Arc<StreamState> {
        Arc::new(StreamState {
            channel,
            method_id,
            name,
            opened_here,
            deadline_ns,
            inner: Mutex::new(StreamInner { flow: StreamFlow::new(send_credits, window), ..StreamInner::default() }),
            changes: AtomicU64::new(0),
            cv: Condvar::new(),
        })
    }

    pub(crate) fn stop(&self, error: Error) {
        let mut inner = self.inner.lock();
        if inner.stopped.is_none() {
            inner.stopped = Some(error);
        }
        self.changed(&inner);
    }

    /// Tells every waiter that `inner` changed; called with its lock held, which is what
    /// makes a change between a waiter's look and its sleep impossible to miss.
    fn changed(&self, inner: &StreamInner) {
        self.changes.fetch_add(1, Ordering::Release);
        for kick in &inner.sleepers {
            kick.notify();
        }
        self.cv.notify_all();
    }

    /// Nothing more will arrive: finished, stopped, or (callee's end) the caller closed
    /// its side.
    fn is_over(&self) -> bool {
        let inner = self.inner.lock();
        inner.finished.is_some() || inner.stopped.is_some() || self.items_ended(&inner)
    }

    /// The peer sends no more items and that is the end for this side: the callee's
    /// end, once the caller's EOS came. The caller's end waits for the callee's status.
    fn items_ended(&self, inner: &StreamInner) -> bool {
        inner.flow.peer_closed() && !self.opened_here
    }

    fn what(&self) -> String {
        match &self.name {
            Some(n) => format!("stream {n:?} (channel {})", self.channel),
            None => format!("stream {:#010x} (channel {})", self.method_id, self.channel),
        }
    }
}

/// A thread waiting for a stream to change from what it saw (`seen`, read under the
/// stream's lock): done once `changes` moved on. It sleeps with its kick in the stream's
/// `sleepers`, so that a change reaches it whichever thread makes it.
struct StreamChange<'a> {
    stream: &'a StreamState,
    seen: u64,
    kick: Option<Arc<Kick>>,
}

impl Awaited for StreamChange<'_> {
    fn is_done(&self) -> bool {
        self.stream.changes.load(Ordering::Acquire) != self.seen
    }

    fn sleep_unless_done(&self, sleep: &mut dyn FnMut()) {
        let Some(kick) = &self.kick else {
            // No kick of our own (creating it failed): the doorbell and its recheck only.
            if !self.is_done() {
                sleep();
            }
            return;
        };
        {
            let mut inner = self.stream.inner.lock();
            if self.is_done() {
                return;
            }
            inner.sleepers.push(kick.clone());
        }
        sleep();
        let mut inner = self.stream.inner.lock();
        if let Some(at) = inner.sleepers.iter().position(|k| Arc::ptr_eq(k, kick)) {
            inner.sleepers.swap_remove(at);
        }
    }

    fn kick(&self) -> Option<&Kick> {
        self.kick.as_deref()
    }
}

/// One item of a stream, read in place. Dropping it releases its slot and gives the
/// sender credit for one more item.
pub struct StreamItem {
    payload: Option<Payload>,
    stream: Arc<StreamState>,
    session: Arc<Session>,
}

impl StreamItem {
    /// The item's bytes. Items larger than 80 bytes are copied out of shared memory on
    /// the first call (the sender could change them under a reference); read them in
    /// place with [`StreamItem::payload`] instead.
    pub fn bytes(&self) -> &[u8] {
        self.payload.as_ref().map_or(&[], |p| p.bytes())
    }

    /// The item where it lies, without a copy.
    pub fn payload(&self) -> SharedBytes<'_> {
        self.payload.as_ref().map_or(SharedBytes::private(&[]), |p| p.shared())
    }

    /// The item's length.
    pub fn len(&self) -> usize {
        self.payload.as_ref().map_or(0, |p| p.len())
    }

    /// True for an empty item.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Copies the item out.
    pub fn to_vec(&self) -> Vec<u8> {
        self.payload().to_vec()
    }
}

impl fmt::Debug for StreamItem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StreamItem").field("len", &self.len()).finish()
    }
}

impl Drop for StreamItem {
    fn drop(&mut self) {
        // Release the slot first, then grant credit: the sender never gets credit for a
        // slot we still hold.
        drop(self.payload.take());
        let grant = { self.stream.inner.lock().flow.item_released() };
        if grant > 0 {
            let _ = self.session.stream_frame(&self.stream, OutFrame::Credit(grant), None);
        }
    }
}

impl Session {
    /// Sends one frame on a stream channel, with a payload written by `body` (or
    /// none). Credit it grants is counted before it is sent: the DATA it allows may
    /// arrive before we return.
    fn stream_frame(&self, stream: &StreamState, kind: OutFrame, body: Option<OutBody>) -> Result<()> {
        if let OutFrame::Open { window: credit } | OutFrame::Credit(credit) = kind {
            if credit > 0 {
                stream.inner.lock().flow.grant(credit);
            }
        }
        let d = frames::stream(self.stream_header(stream), kind);
        let body = body.unwrap_or(OutBody::Inline([0; INLINE_CAPACITY], 0));
        self.send(d, body, stream.deadline_ns)
    }

    /// What every frame of `stream` carries, with a fresh msg id.
    fn stream_header(&self, stream: &StreamState) -> StreamHeader {
        StreamHeader {
            msg_id: self.link.lock().next_msg_id(),
            channel: stream.channel,
            method_id: stream.method_id,
            deadline_ns: stream.deadline_ns,
        }
    }

    fn finish_stream_frame(&self, stream: &StreamState, status: &Result<Vec<u8>>) -> Result<()> {
        match status {
            Ok(bytes) => {
                let body = self.fill_body(bytes.len(), 0, super::copy_of(bytes))?;
                self.send(frames::stream(self.stream_header(stream), OutFrame::Finish { error: None }), body, 0)
            }
            Err(e) => {
                // A stream handler has no more say over link-local statuses than a unary
                // one. A cancelled stream sends no FINISH, so "cancelled by its caller"
                // never applies here.
                let e = self.error_to_send(e.clone(), stream.deadline_ns, false);
                let body = self.error_body(e.message())?;
                let d = frames::stream(self.stream_header(stream), OutFrame::Finish { error: Some(e.code()) });
                self.send(d, body, 0)
            }
        }
    }

    /// Closes `channel` in the link; returns its stream if it was open. The stream is
    /// handed back after the link's lock is let go: dropping the last handle on it drops
    /// its queued items, whose slot release may fail the link, which takes that lock.
    pub(crate) fn close_channel(&self, channel: u32) -> Option<Arc<StreamState>> {
        let closed = self.link.lock().close_channel(channel);
        closed
    }

    /// Opens a stream to `method_id` with `request` as its initial message.
    pub(crate) fn open_stream(
        self: &Arc<Self>,
        method_id: u32,
        name: Option<&str>,
        request: &[u8],
        opts: &CallOptions,
    ) -> Result<Stream> {
        self.check_open()?;
        // Streams live as long as their two ends want: no default time limit.
        let deadline_ns = opts.deadline_for_call_starting_now(FOREVER);
        // The callee grants its own window with its first credit frame.
        let name = name.map(str::to_owned);
        let stream = self.link.lock().open_channel(|channel| {
            StreamState::new(channel, method_id, name, true, deadline_ns, 0, self.stream_window)
        })?;
        let body = self.fill_body(request.len(), deadline_ns, super::copy_of(request));
        let sent =
            body.and_then(|body| self.stream_frame(&stream, OutFrame::Open { window: self.stream_window }, Some(body)));
        if let Err(e) = sent {
            self.close_channel(stream.channel);
            return Err(e);
        }
        if let Some(metrics) = &self.metrics {
            metrics.streams_opened.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        Ok(Stream { state: stream, session: self.clone(), ended: std::sync::atomic::AtomicBool::new(false) })
    }

    /// A frame arrived on an open stream's channel (the link routed it; a FINISH has
    /// closed the channel there already).
    pub(crate) fn on_stream_frame(
        &self,
        stream: &Arc<StreamState>,
        kind: StreamFrame,
        d: Descriptor,
        payload: Payload,
    ) {
        let mut inner = stream.inner.lock();
        let arrival = match inner.flow.handle_frame(kind, d.credit) {
            Ok(arrival) => arrival,
            Err(violation) => {
                drop(inner);
                return self.protocol_error(format_args!("{violation} on channel {}", d.channel_id));
            }
        };
        match arrival {
            Arrival::Item => inner.inbound.push_back(payload),
            Arrival::PeerClosed | Arrival::Credit => {}
            Arrival::Cancelled => {
                if inner.stopped.is_none() {
                    inner.stopped =
                        Some(Error::new(Status::Cancelled, format!("{} was cancelled by the peer", stream.what())));
                }
            }
            Arrival::Finished { error } => {
                inner.finished = Some(if error {
                    let text = String::from_utf8_lossy(payload.bytes()).into_owned();
                    Err(self.received_error(d.status, text, stream.deadline_ns))
                } else {
                    Ok(Some(payload))
                });
                stream.changed(&inner);
                return;
            }
        }
        stream.changed(&inner);
    }

    /// The peer opened `channel` (the link checked its parity and the bound): its
    /// handler runs on the stream pool, at once or when a pool thread comes free.
    pub(crate) fn accept_stream(self: &Arc<Self>, channel: u32, d: Descriptor, request: Payload) {
        let stream = StreamState::new(channel, d.method_id, None, false, d.deadline_ns, d.credit, self.stream_window);
        if self.link.lock().accept_channel(channel, stream.clone()).is_err() {
            // The link failed meanwhile.
            return;
        }
        if let Some(metrics) = &self.metrics {
            metrics.streams_opened.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        let (handler, access) = {
            let dispatcher = self.dispatcher.read();
            (dispatcher.get_stream(d.method_id), dispatcher.access_check(d.method_id))
        };
        let session = self.clone();
        let run = Box::new(move || {
            if stream.inner.lock().stopped.is_some() {
                // Cancelled (or the link failed) while it waited for a thread.
                session.close_channel(stream.channel);
                stream.inner.lock().inbound.clear();
                return;
            }
            let admitted = access.map_or(Ok(()), |access| session.admit(&access));
            let outcome = match (handler, admitted) {
                (_, Err(refused)) => Err(refused),
                (None, Ok(())) => {
                    Err(Error::new(Status::Unimplemented, format!("no stream method with id {:#010x}", d.method_id)))
                }
                (Some(handler), Ok(())) => {
                    // Give the caller our window before the handler runs.
                    let _ = session.stream_frame(&stream, OutFrame::Credit(session.stream_window), None);
                    let mut call = StreamCall {
                        request: Some(request),
                        end: StreamEnd { stream: stream.clone(), session: session.clone() },
                        response: Vec::new(),
                    };
                    match catch_unwind(AssertUnwindSafe(|| handler(&mut call))) {
                        Ok(Ok(())) => Ok(std::mem::take(&mut call.response)),
                        Ok(Err(e)) => Err(e),
                        Err(_) => Err(Error::new(Status::Internal, "the stream handler panicked")),
                    }
                }
            };
            let cancelled = {
                let mut inner = stream.inner.lock();
                // Handles the handler gave away may not send or wait after its FINISH.
                inner.handler_done = true;
                stream.changed(&inner);
                inner.stopped.is_some()
            };
            session.close_channel(stream.channel);
            // Drop what the caller sent and we did not read: that returns the slots.
            stream.inner.lock().inbound.clear();
            if !cancelled {
                if let Err(e) = session.finish_stream_frame(&stream, &outcome) {
                    tracing::debug!("could not finish a stream: {e}");
                }
            }
        });
        match self.stream_pool.submit(run) {
            Ok(()) => {}
            // The link failed: its streams are stopped already.
            Err(Refused::Stopped(run)) => drop(run),
            Err(Refused::NoThread(run, e)) => {
                tracing::error!(peer = %self.label, "could not start a stream handler thread: {e}");
                drop(run);
                // The stream cannot run: refused, like one beyond the bound.
                self.close_channel(channel);
                self.refuse(&d, Status::ResourceExhausted, "no thread for the stream");
            }
        }
    }

    /// Waits until `stream` changes (with `inner`, its lock, let go meanwhile) or its
    /// deadline passes, receiving on the ring meanwhile: no thread hop between the frame
    /// that arrives and the thread that waits for it. No timer otherwise: every change a
    /// waiter can be waiting for is announced under the lock (a frame, a stop — which the
    /// link's failure is for every stream still open —, the handler's return), and a
    /// stream leaves the link's table only through one of those.
    fn wait_for_change<'a>(
        self: &Arc<Self>,
        stream: &'a StreamState,
        inner: MutexGuard<'a, StreamInner>,
    ) -> Result<MutexGuard<'a, StreamInner>> {
        let seen = stream.changes.load(Ordering::Acquire);
        drop(inner);
        let change = StreamChange { stream, seen, kick: super::thread_kick() };
        match self.wait_polling(&change, stream.deadline_ns, None) {
            Waited::Done => Ok(stream.inner.lock()),
            Waited::DeadlinePassed => {
                Err(Error::new(Status::DeadlineExceeded, format!("{} passed its deadline", stream.what())))
            }
            Waited::Failed(e) => Err(e),
        }
    }

    fn send_item(
        self: &Arc<Self>,
        stream: &StreamState,
        max_len: usize,
        fill: impl FnOnce(&mut [u8]) -> usize,
    ) -> Result<()> {
        {
            let mut inner = stream.inner.lock();
            loop {
                if let Some(e) = &inner.stopped {
                    return Err(e.clone());
                }
                if let Some(Err(e)) = &inner.finished {
                    return Err(e.clone());
                }
                if inner.finished.is_some() {
                    return Err(Error::new(Status::FailedPrecondition, format!("{} has finished", stream.what())));
                }
                if inner.flow.send_closed() {
                    return Err(Error::new(
                        Status::FailedPrecondition,
                        format!("{} was closed for sending", stream.what()),
                    ));
                }
                if inner.flow.take_send_credit() {
                    break;
                }
                self.check_open()?;
                inner = self.wait_for_change(stream, inner)?;
            }
        }
        let body = self.fill_body(max_len, stream.deadline_ns, fill)?;
        self.stream_frame(stream, OutFrame::Data, Some(body))
    }

    fn recv_item(self: &Arc<Self>, stream: &Arc<StreamState>) -> Result<Option<StreamItem>> {
        let mut inner = stream.inner.lock();
        loop {
            if let Some(payload) = inner.inbound.pop_front() {
                inner.flow.item_taken();
                return Ok(Some(StreamItem { payload: Some(payload), stream: stream.clone(), session: self.clone() }));
            }
            if let Some(e) = &inner.stopped {
                return Err(e.clone());
            }
            if stream.items_ended(&inner) {
                return Ok(None);
            }
            if inner.handler_done {
                return Err(Error::new(Status::FailedPrecondition, format!("{} has finished", stream.what())));
            }
            match &inner.finished {
                Some(Ok(_)) => return Ok(None),
                Some(Err(e)) => return Err(e.clone()),
                None => {}
            }
            if let Some(e) = self.failure() {
                return Err(e);
            }
            if inner.flow.holds_whole_window() {
                // The sender has no credit left until some of these are dropped: waiting
                // would never end.
                return Err(Error::new(
                    Status::FailedPrecondition,
                    format!(
                        "{} holds all {} items of its window; items are read in place, drop (or copy \
                         and drop) some before asking for more",
                        stream.what(),
                        self.stream_window
                    ),
                ));
            }
            // About to wait: grant what was released but not yet granted (credit goes
            // back in batches), or a sender waiting for it and we would wait on each other.
            let pending = inner.flow.grant_before_waiting();
            if pending > 0 {
                drop(inner);
                let _ = self.stream_frame(stream, OutFrame::Credit(pending), None);
                inner = stream.inner.lock();
                continue;
            }
            inner = self.wait_for_change(stream, inner)?;
        }
    }

    fn cancel_stream(&self, stream: &StreamState, reason: Error) {
        let already = stream.inner.lock().stopped.is_some();
        stream.stop(reason);
        if self.close_channel(stream.channel).is_some() && !already {
            let _ = self.stream_frame(stream, OutFrame::Cancel, None);
        }
        stream.inner.lock().inbound.clear();
    }
}

/// The caller's end of a stream. Dropping it before the stream finished cancels it.
pub struct Stream {
    state: Arc<StreamState>,
    session: Arc<Session>,
    /// Set once the caller saw the end (or cancelled): no CANCEL on drop then.
    ended: std::sync::atomic::AtomicBool,
}

impl fmt::Debug for Stream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.state.fmt(f)
    }
}

impl Stream {
    /// Sends one item to the handler (client streaming); waits for credit.
    pub fn send(&self, item: &[u8]) -> Result<()> {
        self.with_deadline(self.session.send_item(&self.state, item.len(), super::copy_of(item)))
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
            inner.inbound.clear();
            match inner.finished.take() {
                Some(Ok(Some(payload))) => {
                    self.set_ended();
                    return Ok(Response { payload });
                }
                Some(Ok(None)) => {
                    self.set_ended();
                    return Err(Error::new(Status::Internal, "stream finished twice"));
                }
                Some(Err(e)) => {
                    self.set_ended();
                    return Err(e);
                }
                None => {}
            }
            if let Some(e) = inner.stopped.clone() {
                self.set_ended();
                return Err(e);
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

    /// Gives up the stream: the handler sees it cancelled; late items are dropped.
    pub fn cancel(&self) {
        if !self.ended.swap(true, std::sync::atomic::Ordering::AcqRel) {
            self.session.cancel_stream(&self.state, Error::new(Status::Cancelled, "cancelled by the caller"));
        }
    }

    fn set_ended(&self) {
        self.ended.store(true, std::sync::atomic::Ordering::Release);
    }

    fn is_ended(&self) -> bool {
        self.ended.load(std::sync::atomic::Ordering::Acquire)
    }

    fn with_deadline<T>(&self, result: Result<T>) -> Result<T> {
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
    request: Option<Payload>,
    end: StreamEnd,
    response: Vec<u8>,
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
    pub fn caller(&self) -> Option<super::PeerIdentity> {
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
    stream: Arc<StreamState>,
    session: Arc<Session>,
}

impl fmt::Debug for StreamEnd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.stream.fmt(f)
    }
}

impl StreamEnd {
    /// Sends one item to the caller (see [`StreamCall::send`]).
    pub fn send(&self, item: &[u8]) -> Result<()> {
        self.send_with(item.len(), super::copy_of(item))
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

#[cfg(test)]
mod tests {
    #[test]
    fn stream_handles_can_move_between_threads() {
        fn is_send<T: Send>() {}
        is_send::<super::Stream>();
        is_send::<super::StreamItem>();
        is_send::<super::StreamCall>();
        is_send::<super::StreamEnd>();
    }
}
