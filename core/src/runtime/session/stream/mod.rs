//! Streams on channels other than 0: server streaming, client streaming and both at
//! once, with cancellation and per-channel flow control.
//!
//! Flow control: a side may have at most `window` DATA frames of a channel that the
//! other side has not released yet. The receiver grants credit back when the *user*
//! drops an item (not when it is received), so a stream never holds more slots than its
//! window, and a slow consumer slows its own producer and nobody else.
//!
//! Which file holds what: this file, a stream's shared state and its items; `link.rs`,
//! what the session does for streams (opening, frames both ways, running handlers,
//! flow control); `ends.rs`, the two ends users hold (`Stream`, the caller's;
//! `StreamCall`, a handler's; `StreamEnd`, a handle on it); `async_end.rs`, the
//! caller's end for async code (`AsyncStream`) and the async methods of `StreamEnd`.

use std::collections::VecDeque;
use std::fmt;
use std::sync::Arc;

use std::sync::atomic::{AtomicU64, Ordering};
use std::task::Waker;

use crate::runtime::sync::{Condvar, Mutex};

use super::{Awaited, CallOptions, OutBody, Payload, Response, Room, Session, Waited, FOREVER};
use crate::error::{Error, Result};
use crate::proto::frames::OutFrame;
use crate::proto::stream::StreamFlow;
use crate::shm::SharedBytes;
use crate::sys::doorbell::Kick;

pub use crate::proto::stream::STREAM_WINDOW;

mod async_end;
mod ends;
mod link;

pub use async_end::{AsyncStream, OpenStreamFuture};
pub use ends::{Stream, StreamCall, StreamEnd};

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
    pub(super) channel: u32,
    pub(super) method_id: u32,
    pub(super) name: Option<String>,
    /// We opened it (the caller's end): the peer's EOS ends its items, not the stream,
    /// whose end is the callee's FINISH (or CANCEL).
    pub(super) opened_here: bool,
    pub(super) deadline_ns: u64,
    pub(super) inner: Mutex<StreamInner>,
    /// Bumped (under `inner`'s lock) on every change a waiter may wait for: a thread
    /// that polls the ring while it waits looks at this, not at the lock.
    pub(super) changes: AtomicU64,
    /// For `StreamEnd::wait_cancelled`, the one wait that does not poll the ring.
    pub(super) cv: Condvar,
}

#[derive(Default)]
pub(super) struct StreamInner {
    pub(super) inbound: VecDeque<Payload>,
    /// Credit, window and which side closed (the protocol's half of the stream).
    pub(super) flow: StreamFlow,
    /// Caller side: the callee's final status (with its payload).
    pub(super) finished: Option<Result<Option<Payload>>>,
    /// Why the stream stopped early (cancelled by either side, deadline, link failure).
    pub(super) stopped: Option<Error>,
    /// Handler side: the handler returned (its FINISH is sent or being sent).
    pub(super) handler_done: bool,
    /// The kicks of the threads asleep waiting for a change (see `StreamChange`).
    pub(super) sleepers: Vec<Arc<Kick>>,
    /// The tasks of async ends waiting for a change (each woken once, then gone).
    pub(super) wakers: Vec<Waker>,
}

impl StreamInner {
    /// Wakes `waker` at the next change (registered under the stream's lock, as every
    /// change is announced, so none falls between a look and the registration).
    pub(super) fn wake_on_change(&mut self, waker: &Waker) {
        if !self.wakers.iter().any(|w| w.will_wake(waker)) {
            self.wakers.push(waker.clone());
        }
    }
}

impl fmt::Debug for StreamState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Stream").field("channel", &self.channel).field("method_id", &self.method_id).finish()
    }
}

impl StreamState {
    pub(super) fn new(
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
        self.changed(&mut inner);
    }

    /// Tells every waiter that `inner` changed; called with its lock held, which is what
    /// makes a change between a waiter's look and its sleep impossible to miss.
    pub(super) fn changed(&self, inner: &mut StreamInner) {
        self.changes.fetch_add(1, Ordering::Release);
        for kick in &inner.sleepers {
            kick.notify();
        }
        self.cv.notify_all();
        // Async ends' wakers are taken: a woken task registers again if it still waits.
        for waker in inner.wakers.drain(..) {
            waker.wake();
        }
    }

    /// Nothing more will arrive: finished, stopped, or (callee's end) the caller closed
    /// its side.
    pub(super) fn is_over(&self) -> bool {
        let inner = self.inner.lock();
        inner.finished.is_some() || inner.stopped.is_some() || self.items_ended(&inner)
    }

    /// The peer sends no more items and that is the end for this side: the callee's
    /// end, once the caller's EOS came. The caller's end waits for the callee's status.
    pub(super) fn items_ended(&self, inner: &StreamInner) -> bool {
        inner.flow.peer_closed() && !self.opened_here
    }

    pub(super) fn what(&self) -> String {
        match &self.name {
            Some(n) => format!("stream {n:?} (channel {})", self.channel),
            None => format!("stream {:#010x} (channel {})", self.method_id, self.channel),
        }
    }
}

/// A thread waiting for a stream to change from what it saw (`seen`, read under the
/// stream's lock): done once `changes` moved on. It sleeps with its kick in the stream's
/// `sleepers`, so that a change reaches it whichever thread makes it.
pub(super) struct StreamChange<'a> {
    pub(super) stream: &'a StreamState,
    pub(super) seen: u64,
    pub(super) kick: Option<Arc<Kick>>,
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
    pub(super) payload: Option<Payload>,
    pub(super) stream: Arc<StreamState>,
    pub(super) session: Arc<Session>,
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
            // Never waits for room (a drop may run on an executor): a grant that finds
            // the ring full is owed again and goes out before the reader's next wait.
            let _ = self.session.stream_frame_within(&self.stream, OutFrame::Credit(grant), None, Room::AtOnce);
        }
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
