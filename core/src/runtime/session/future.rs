//! A call as a `Future`, on any executor: the thread that receives the answer (or fails
//! the link, or expires the deadline) wakes the task through the waker the future last
//! registered. No thread waits, no timer runs: the link's standby thread already
//! watches the deadlines of started calls.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use crate::error::Result;
use crate::runtime::sync::Mutex;

use super::{Completion, PendingCall, Response};

/// Where the completer finds the task to wake.
#[derive(Debug, Default)]
struct WakeSlot {
    waker: Mutex<Option<Waker>>,
}

impl WakeSlot {
    fn wake(&self) {
        if let Some(waker) = self.waker.lock().take() {
            waker.wake();
        }
    }
}

/// The future of a call started with [`crate::LinkEnd::call_async`]: its response, or the
/// error it ended with. Dropping it before it is ready cancels the call (its handler sees
/// CANCEL, as for a dropped [`PendingCall`]). Runtime-agnostic: tokio, async-std, smol or
/// `futures::executor::block_on`.
#[derive(Debug)]
#[must_use = "a call future does nothing useful unless awaited; dropping it cancels the call"]
pub struct CallFuture {
    state: State,
    slot: Arc<WakeSlot>,
}

#[derive(Debug)]
enum State {
    /// It could not be started: the error, once.
    Failed(Option<crate::Error>),
    Pending(PendingCall),
    Done,
}

impl CallFuture {
    /// Starts a call with `start` (given the completion that wakes this future).
    pub(crate) fn start(start: impl FnOnce(Completion) -> Result<PendingCall>) -> CallFuture {
        let slot = Arc::new(WakeSlot::default());
        let completer = slot.clone();
        let state = match start(Box::new(move || completer.wake())) {
            Ok(pending) => State::Pending(pending),
            Err(e) => State::Failed(Some(e)),
        };
        CallFuture { state, slot }
    }
}

impl Future for CallFuture {
    type Output = Result<Response>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<Response>> {
        let this = &mut *self;
        let result = match &mut this.state {
            State::Failed(error) => error.take().map(Err),
            State::Pending(pending) => match pending.try_take() {
                Some(result) => Some(result),
                None => {
                    // Registered, then checked again: a completion between the first check
                    // and the registration finds no waker, so the second check sees it.
                    *this.slot.waker.lock() = Some(cx.waker().clone());
                    pending.try_take()
                }
            },
            State::Done => panic!("CallFuture polled after it completed"),
        };
        match result {
            Some(result) => {
                this.state = State::Done;
                Poll::Ready(result)
            }
            None => Poll::Pending,
        }
    }
}
