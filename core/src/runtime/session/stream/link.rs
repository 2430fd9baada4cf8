//! What the session does for streams: opening, frames both ways, running handlers,
//! flow control.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::task::{Context, Poll};

use std::sync::atomic::Ordering;

use crate::runtime::sync::MutexGuard;

use super::{CallOptions, OutBody, Payload, Session, Waited, FOREVER};
use crate::error::{Error, Result};
use crate::proto::frames::{self, OutFrame, StreamHeader};
use crate::proto::stream::Arrival;
use crate::runtime::pool::Refused;
use crate::runtime::session::dispatch::Streaming;
use crate::runtime::session::{copy_of, found_no_room, Room};
use crate::wire::{Descriptor, StreamFrame, INLINE_CAPACITY};
use crate::Status;

use super::*;

/// What a reader does next (`Session::recv_step`).
enum RecvStep {
    Done(Result<Option<StreamItem>>),
    /// Grant this much credit first (the reader is about to wait).
    Grant(u32),
    Wait,
}

impl Session {
    /// Sends one frame on a stream channel, with a payload written by `body` (or
    /// none). Credit it grants is counted before it is sent: the DATA it allows may
    /// arrive before we return.
    pub(super) fn stream_frame(&self, stream: &StreamState, kind: OutFrame, body: Option<OutBody>) -> Result<()> {
        self.stream_frame_within(stream, kind, body, Room::UntilDeadline)
    }

    /// [`Session::stream_frame`] that waits for room in the ring as `room` says. A
    /// CREDIT that could not be sent is owed again (granted before the next wait).
    pub(crate) fn stream_frame_within(
        &self,
        stream: &StreamState,
        kind: OutFrame,
        body: Option<OutBody>,
        room: Room,
    ) -> Result<()> {
        let granted = match kind {
            OutFrame::Open { window: credit } | OutFrame::Credit(credit) if credit > 0 => {
                stream.inner.lock().flow.grant(credit);
                credit
            }
            _ => 0,
        };
        let d = frames::stream(self.stream_header(stream), kind);
        let body = body.unwrap_or(OutBody::Inline([0; INLINE_CAPACITY], 0));
        let sent = self.send(d, body, room.give_up(stream.deadline_ns));
        if sent.is_err() && granted > 0 && matches!(kind, OutFrame::Credit(_)) {
            stream.inner.lock().flow.grant_failed(granted);
        }
        sent
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

    /// Sends a handler's FINISH: OK with its final response, or its error; waiting for
    /// room as `room` says (a blocking handler a while, an async one not at all).
    pub(crate) fn finish_stream_frame(
        &self,
        stream: &StreamState,
        status: std::result::Result<&[u8], &Error>,
        room: Room,
    ) -> Result<()> {
        let give_up = room.give_up(0);
        match status {
            Ok(bytes) => {
                let body = self.fill_body(bytes.len(), give_up, copy_of(bytes))?;
                self.send(frames::stream(self.stream_header(stream), OutFrame::Finish { error: None }), body, give_up)
            }
            Err(e) => {
                // A stream handler has no more say over link-local statuses than a unary
                // one. A cancelled stream sends no FINISH, so "cancelled by its caller"
                // never applies here.
                let e = self.error_to_send(e.clone(), stream.deadline_ns, false);
                let body = self.error_body(e.message(), give_up)?;
                let d = frames::stream(self.stream_header(stream), OutFrame::Finish { error: Some(e.code()) });
                self.send(d, body, give_up)
            }
        }
    }

    /// A stream handler returned: handles it gave away may not send or wait any more,
    /// its channel closes, what the caller sent and it did not read is dropped (which
    /// returns the slots). Returns whether it sends its FINISH: not after the caller's
    /// CANCEL or the link's failure, but after its deadline passed (docs/PROTOCOL.md §16).
    pub(crate) fn end_stream_handler(&self, stream: &StreamState) -> bool {
        let finishes = {
            let mut inner = stream.inner.lock();
            inner.handler_done = true;
            stream.changed(&mut inner);
            inner.stopped.as_ref().is_none_or(|e| e.status() == Status::DeadlineExceeded)
        };
        self.close_channel(stream.channel);
        stream.inner.lock().inbound.clear();
        finishes && self.failure().is_none()
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
        self.open_stream_within(method_id, name, request, opts, Room::UntilDeadline)
    }

    /// [`Session::open_stream`] that waits for room in the ring and pool as `room` says.
    pub(crate) fn open_stream_within(
        self: &Arc<Self>,
        method_id: u32,
        name: Option<&str>,
        request: &[u8],
        opts: &CallOptions,
        room: Room,
    ) -> Result<Stream> {
        self.check_open()?;
        // Streams live as long as their two ends want: no default time limit.
        let deadline_ns = opts.deadline_for_call_starting_now(FOREVER);
        // The callee grants its own window with its first credit frame.
        let name = name.map(str::to_owned);
        // The link watches its deadline: it ends whether or not anyone waits on it.
        let stream = self.link_watching(deadline_ns, |link| {
            link.open_channel(deadline_ns, |channel| {
                StreamState::new(channel, method_id, name, true, deadline_ns, 0, self.stream_window)
            })
        })?;
        let body = self.fill_body(request.len(), room.give_up(deadline_ns), crate::runtime::session::copy_of(request));
        let open = OutFrame::Open { window: self.stream_window };
        let sent = body.and_then(|body| self.stream_frame_within(&stream, open, Some(body), room));
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
                stream.changed(&mut inner);
                return;
            }
        }
        stream.changed(&mut inner);
    }

    /// The peer opened `channel` (the link checked its parity and the bound): its
    /// handler runs on the stream pool, at once or when a pool thread comes free.
    pub(crate) fn accept_stream(self: &Arc<Self>, channel: u32, d: Descriptor, request: Payload) {
        let stream = StreamState::new(channel, d.method_id, None, false, d.deadline_ns, d.credit, self.stream_window);
        let accepted =
            self.link_watching(d.deadline_ns, |link| link.accept_channel(channel, stream.clone(), d.deadline_ns));
        if accepted.is_err() {
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
        let handler = match handler {
            Some(Streaming::Async(handler, spawn)) => {
                return self.spawn_stream_handler(stream, request, access, handler, spawn.as_ref());
            }
            Some(Streaming::Blocking(handler)) => Some(handler),
            None => None,
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
            if session.end_stream_handler(&stream) {
                if let Err(e) = session.finish_stream_frame(&stream, outcome.as_deref(), Room::UntilDeadline) {
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

    /// Why `stream` can send no more items now, if it cannot (stopped, finished, closed
    /// for sending).
    fn send_refused(&self, stream: &StreamState, inner: &StreamInner) -> Option<Error> {
        if let Some(e) = &inner.stopped {
            return Some(e.clone());
        }
        match &inner.finished {
            Some(Err(e)) => return Some(e.clone()),
            Some(Ok(_)) => {
                return Some(Error::new(Status::FailedPrecondition, format!("{} has finished", stream.what())))
            }
            None => {}
        }
        if inner.flow.send_closed() {
            return Some(Error::new(Status::FailedPrecondition, format!("{} was closed for sending", stream.what())));
        }
        None
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
                if let Some(e) = self.send_refused(stream, &inner) {
                    return Err(e);
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

    /// [`Session::send_item`] for an async end: sends `item` once there is credit and
    /// room, registering `cx`'s waker for whichever it waits for.
    pub(crate) fn poll_send_item(
        self: &Arc<Self>,
        stream: &StreamState,
        item: &[u8],
        cx: &mut Context<'_>,
    ) -> Poll<Result<()>> {
        {
            let mut inner = stream.inner.lock();
            if let Some(e) = self.send_refused(stream, &inner) {
                return Poll::Ready(Err(e));
            }
            if let Err(e) = self.check_open() {
                return Poll::Ready(Err(e));
            }
            if !inner.flow.take_send_credit() {
                inner.wake_on_change(cx.waker());
                return Poll::Pending;
            }
        }
        let body = self.fill_body(item.len(), Room::AtOnce.give_up(0), copy_of(item));
        match body.and_then(|body| self.stream_frame_within(stream, OutFrame::Data, Some(body), Room::AtOnce)) {
            Err(e) if found_no_room(&e) => {
                stream.inner.lock().flow.return_send_credit();
                self.wait_for_room(cx.waker());
                Poll::Pending
            }
            sent => Poll::Ready(sent),
        }
    }

    /// Closes our sending side of `stream` (its EOS) for an async end, once the ring
    /// has room.
    pub(crate) fn poll_close_send(&self, stream: &StreamState, cx: &mut Context<'_>) -> Poll<Result<()>> {
        {
            let mut inner = stream.inner.lock();
            if inner.flow.send_closed() {
                return Poll::Ready(Ok(()));
            }
            if let Some(e) = self.send_refused(stream, &inner) {
                return Poll::Ready(Err(e));
            }
            inner.flow.close_send();
        }
        match self.stream_frame_within(stream, OutFrame::Eos, None, Room::AtOnce) {
            Err(e) if found_no_room(&e) => {
                stream.inner.lock().flow.reopen_send();
                self.wait_for_room(cx.waker());
                Poll::Pending
            }
            sent => Poll::Ready(sent),
        }
    }

    /// What a reader of `stream` does next: take an item (or the end, or an error),
    /// grant credit before it waits, or wait.
    fn recv_step(self: &Arc<Self>, stream: &Arc<StreamState>, inner: &mut StreamInner) -> RecvStep {
        if let Some(payload) = inner.inbound.pop_front() {
            inner.flow.item_taken();
            let item = StreamItem { payload: Some(payload), stream: stream.clone(), session: self.clone() };
            return RecvStep::Done(Ok(Some(item)));
        }
        if let Some(e) = &inner.stopped {
            return RecvStep::Done(Err(e.clone()));
        }
        if stream.items_ended(inner) {
            return RecvStep::Done(Ok(None));
        }
        if inner.handler_done {
            return RecvStep::Done(Err(Error::new(
                Status::FailedPrecondition,
                format!("{} has finished", stream.what()),
            )));
        }
        match &inner.finished {
            Some(Ok(_)) => return RecvStep::Done(Ok(None)),
            Some(Err(e)) => return RecvStep::Done(Err(e.clone())),
            None => {}
        }
        if let Some(e) = self.failure() {
            return RecvStep::Done(Err(e));
        }
        if inner.flow.holds_whole_window() {
            // The sender has no credit left until some of these are dropped: waiting
            // would never end.
            return RecvStep::Done(Err(Error::new(
                Status::FailedPrecondition,
                format!(
                    "{} holds all {} items of its window; items are read in place, drop (or copy \
                     and drop) some before asking for more",
                    stream.what(),
                    self.stream_window
                ),
            )));
        }
        // About to wait: grant what was released but not yet granted (credit goes back
        // in batches), or a sender waiting for it and we would wait on each other.
        match inner.flow.grant_before_waiting() {
            0 => RecvStep::Wait,
            pending => RecvStep::Grant(pending),
        }
    }

    pub(super) fn recv_item(self: &Arc<Self>, stream: &Arc<StreamState>) -> Result<Option<StreamItem>> {
        let mut inner = stream.inner.lock();
        loop {
            match self.recv_step(stream, &mut inner) {
                RecvStep::Done(got) => return got,
                RecvStep::Grant(credit) => {
                    drop(inner);
                    let _ = self.stream_frame(stream, OutFrame::Credit(credit), None);
                    inner = stream.inner.lock();
                }
                RecvStep::Wait => inner = self.wait_for_change(stream, inner)?,
            }
        }
    }

    /// [`Session::recv_item`] for an async end: the next item once there is one,
    /// registering `cx`'s waker for the change (or the room) it waits for.
    pub(crate) fn poll_recv_item(
        self: &Arc<Self>,
        stream: &Arc<StreamState>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Option<StreamItem>>> {
        let mut inner = stream.inner.lock();
        loop {
            match self.recv_step(stream, &mut inner) {
                RecvStep::Done(got) => return Poll::Ready(got),
                RecvStep::Grant(credit) => {
                    drop(inner);
                    let granted = self.stream_frame_within(stream, OutFrame::Credit(credit), None, Room::AtOnce);
                    inner = stream.inner.lock();
                    if granted.as_ref().is_err_and(found_no_room) {
                        // Owed again (`grant_failed`): granted once the ring has room.
                        drop(inner);
                        self.wait_for_room(cx.waker());
                        return Poll::Pending;
                    }
                }
                RecvStep::Wait => {
                    inner.wake_on_change(cx.waker());
                    return Poll::Pending;
                }
            }
        }
    }

    /// The link saw `stream`'s deadline pass: it stops with DEADLINE_EXCEEDED whether or
    /// not anyone waits on it. The end that opened it also cancels it (the callee's
    /// handler may still be running); a handler's end only stops: the handler sees it,
    /// returns, and sends no FINISH, as for a cancel.
    pub(crate) fn expire_stream(&self, stream: &StreamState) {
        let error = Error::new(Status::DeadlineExceeded, format!("{} passed its deadline", stream.what()));
        if stream.opened_here {
            self.cancel_stream(stream, error);
        } else {
            stream.stop(error);
        }
    }

    /// Gives up `stream` (ours): it stops with `reason`, and its CANCEL is owed to the
    /// peer, sent now if the ring has room, else with the next frame or the standby's
    /// retry: a cancel never waits (a drop may run on an executor).
    pub(super) fn cancel_stream(&self, stream: &StreamState, reason: Error) {
        let already = stream.inner.lock().stopped.is_some();
        stream.stop(reason);
        let closed =
            self.owing(|link| link.cancel_channel(stream.channel, stream.method_id, stream.deadline_ns, !already));
        // Dropped outside the link's lock (see `close_channel`).
        drop(closed);
        stream.inner.lock().inbound.clear();
    }
}
