//! What the session does for streams: opening, frames both ways, running handlers,
//! flow control.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

use std::sync::atomic::Ordering;

use crate::runtime::sync::MutexGuard;

use super::{CallOptions, OutBody, Payload, Session, Waited, FOREVER};
use crate::error::{Error, Result};
use crate::proto::frames::{self, OutFrame, StreamHeader};
use crate::proto::stream::Arrival;
use crate::runtime::pool::Refused;
use crate::wire::{Descriptor, StreamFrame, INLINE_CAPACITY};
use crate::Status;

use super::*;

impl Session {
    /// Sends one frame on a stream channel, with a payload written by `body` (or
    /// none). Credit it grants is counted before it is sent: the DATA it allows may
    /// arrive before we return.
    pub(super) fn stream_frame(&self, stream: &StreamState, kind: OutFrame, body: Option<OutBody>) -> Result<()> {
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
    pub(super) fn stream_header(&self, stream: &StreamState) -> StreamHeader {
        StreamHeader {
            msg_id: self.link.lock().next_msg_id(),
            channel: stream.channel,
            method_id: stream.method_id,
            deadline_ns: stream.deadline_ns,
        }
    }

    pub(super) fn finish_stream_frame(&self, stream: &StreamState, status: &Result<Vec<u8>>) -> Result<()> {
        match status {
            Ok(bytes) => {
                let body = self.fill_body(bytes.len(), 0, crate::runtime::session::copy_of(bytes))?;
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
        let body = self.fill_body(request.len(), deadline_ns, crate::runtime::session::copy_of(request));
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
    pub(super) fn wait_for_change<'a>(
        self: &Arc<Self>,
        stream: &'a StreamState,
        inner: MutexGuard<'a, StreamInner>,
    ) -> Result<MutexGuard<'a, StreamInner>> {
        let seen = stream.changes.load(Ordering::Acquire);
        drop(inner);
        let change = StreamChange { stream, seen, kick: crate::runtime::session::thread_kick() };
        match self.wait_polling(&change, stream.deadline_ns, None) {
            Waited::Done => Ok(stream.inner.lock()),
            Waited::DeadlinePassed => {
                Err(Error::new(Status::DeadlineExceeded, format!("{} passed its deadline", stream.what())))
            }
            Waited::Failed(e) => Err(e),
        }
    }

    pub(super) fn send_item(
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

    pub(super) fn recv_item(self: &Arc<Self>, stream: &Arc<StreamState>) -> Result<Option<StreamItem>> {
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

    pub(super) fn cancel_stream(&self, stream: &StreamState, reason: Error) {
        let already = stream.inner.lock().stopped.is_some();
        stream.stop(reason);
        if self.close_channel(stream.channel).is_some() && !already {
            let _ = self.stream_frame(stream, OutFrame::Cancel, None);
        }
        stream.inner.lock().inbound.clear();
    }
}
