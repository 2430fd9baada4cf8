//! Calls and notifications as `Future`s, on any executor: the thread that receives the
//! answer (or fails the link, or expires the deadline) wakes the task through the waker
//! the future last registered. No thread waits and no timer runs: the link's standby
//! already watches the deadlines of calls nobody waits on. Starting never parks the
//! executor either: a full ring or pool makes the future wait for room (`runtime::alarms`)
//! and try again.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::runtime::spinning::{SpinPermits, Spinner};
use crate::runtime::sync::Mutex;

use super::recv::Poller;
use super::{
    copy_of, found_no_room, Awaited, CallOptions, Completion, PendingCall, Response, Room, Session, WaitStrategy,
};
use crate::sys::doorbell::Kick;

/// How long a future of a link that spins receives per poll before it yields to its
/// executor (and asks to be polled again): other tasks of its thread wait no longer.
const SPIN_SLICE: Duration = Duration::from_micros(100);

/// A future receiving on the thread that polls it, as a blocking caller does: the answer
/// is then taken off the ring by the task that awaits it, with no thread hop and no
/// wakeup, which is what makes an awaited call cost about what a blocking one does. How
/// long it receives follows the link's wait strategy: not at all (Block), up to the spin
/// budget counted from the first wait (Adaptive), or in slices, yielding to the executor
/// between them (Spin). It stops as soon as it delivered anything (another task may be
/// runnable now) and never sleeps: past the budget, the standby receives and the waker
/// does the rest.
#[derive(Debug, Default)]
pub(crate) struct Receiving {
    /// Adaptive: when the spin budget runs out.
    spin_until: Option<Instant>,
}

/// What a receiving future waits for: its own completion, or any delivery at all.
struct Polled<'a> {
    done: &'a dyn Fn() -> bool,
    deliveries: &'a AtomicU64,
    seen: u64,
}

impl Awaited for Polled<'_> {
    fn is_done(&self) -> bool {
        (self.done)() || self.deliveries.load(Ordering::Relaxed) != self.seen
    }

    fn sleep_unless_done(&self, _sleep: &mut dyn FnMut()) {
        // A future never sleeps on the doorbell: it returns Pending instead.
    }

    fn kick(&self) -> Option<&Kick> {
        None
    }
}

impl Receiving {
    /// Receives on this thread while the wait strategy allows and `done` does not hold.
    /// Returns true if the future should ask to be polled again at once (Spin, a slice
    /// over and not done): it yields to its executor rather than waiting for a wakeup.
    pub(crate) fn receive(&mut self, session: &Arc<Session>, done: &dyn Fn() -> bool, deadline_ns: u64) -> bool {
        let now = Instant::now();
        let budget = match session.wait {
            WaitStrategy::Block => return false,
            WaitStrategy::Adaptive { spin } => {
                let until = *self.spin_until.get_or_insert(now + spin);
                match until.checked_duration_since(now) {
                    Some(left) if !left.is_zero() => left,
                    _ => return false,
                }
            }
            WaitStrategy::Spin => SPIN_SLICE,
        };
        let Some(rx) = session.claim_ring() else {
            // Another thread receives: it delivers what we wait for.
            return false;
        };
        let awaited =
            Polled { done, deliveries: &session.deliveries, seen: session.deliveries.load(Ordering::Relaxed) };
        let spinner = Spinner::new(SpinPermits::process());
        let may_spin = || now.elapsed() < budget && spinner.may_spin();
        session.poll_ring(rx, Poller::Waiting { awaited: &awaited, deadline_ns, may_spin: &may_spin });
        session.wait == WaitStrategy::Spin && !done() && now.elapsed() >= budget
    }
}

/// Where the completer finds the task to wake.
#[derive(Debug, Default)]
pub(crate) struct WakeSlot {
    waker: Mutex<Option<Waker>>,
}

impl WakeSlot {
    pub(crate) fn wake(&self) {
        if let Some(waker) = self.waker.lock().take() {
            waker.wake();
        }
    }

    pub(crate) fn register(&self, waker: &Waker) {
        let mut slot = self.waker.lock();
        if !slot.as_ref().is_some_and(|w| w.will_wake(waker)) {
            *slot = Some(waker.clone());
        }
    }

    /// A completion that wakes whoever is registered here.
    pub(crate) fn completion(self: &Arc<Self>) -> Completion {
        let slot = self.clone();
        Box::new(move || slot.wake())
    }
}

/// One try at sending something without waiting for room.
type Attempt<T> = Box<dyn FnMut(&Arc<Session>) -> Result<T> + Send>;

/// Something sent without waiting for room: tried at once, and again each time the
/// standby says room may have appeared, until it goes out or fails otherwise.
pub(crate) struct Attempts<T> {
    session: Arc<Session>,
    attempt: Attempt<T>,
}

impl<T> Attempts<T> {
    pub(crate) fn new(
        session: Arc<Session>,
        attempt: impl FnMut(&Arc<Session>) -> Result<T> + Send + 'static,
    ) -> Attempts<T> {
        Attempts { session, attempt: Box::new(attempt) }
    }

    pub(crate) fn poll_attempt(&mut self, cx: &mut Context<'_>) -> Poll<Result<T>> {
        match (self.attempt)(&self.session) {
            Err(e) if found_no_room(&e) => {
                // Registered after the failed attempt: room that appeared in between is
                // found by the standby's next retry, which wakes us.
                self.session.wait_for_room(cx.waker());
                Poll::Pending
            }
            done => Poll::Ready(done),
        }
    }
}

impl<T> std::fmt::Debug for Attempts<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Attempts").field("session", &self.session).finish()
    }
}

/// Options whose deadline is fixed now, for a call started later: a timeout counts from
/// the call's first attempt, not from each retry.
pub(crate) fn fixed_deadline(options: &CallOptions, session: &Session) -> CallOptions {
    match options.deadline_for_call_starting_now(session.default_timeout) {
        0 => CallOptions::forever(),
        deadline_ns => CallOptions::deadline(deadline_ns),
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
    receiving: Receiving,
}

#[derive(Debug)]
enum State {
    /// It could not be started: the error, once.
    Failed(Option<Error>),
    /// The ring or pool had no room: tried again when room may have appeared.
    Starting(Attempts<PendingCall>),
    Pending(PendingCall),
    Done,
}

impl CallFuture {
    /// Starts calling `method_id` on `session` with `payload`: at once if the ring and
    /// pool have room, else as soon as they do (the payload is copied then).
    pub(crate) fn start(
        session: &Arc<Session>,
        method_id: u32,
        name: Option<&str>,
        payload: &[u8],
        options: &CallOptions,
    ) -> CallFuture {
        let slot = Arc::new(WakeSlot::default());
        let first = session.call_start_within(
            method_id,
            name,
            payload.len(),
            copy_of(payload),
            options,
            slot.completion(),
            Room::AtOnce,
        );
        let state = match first {
            Ok(pending) => State::Pending(pending),
            Err(e) if found_no_room(&e) => {
                let (options, name, payload) =
                    (fixed_deadline(options, session), name.map(str::to_owned), payload.to_vec());
                let completer = slot.clone();
                State::Starting(Attempts::new(session.clone(), move |session| {
                    session.call_start_within(
                        method_id,
                        name.as_deref(),
                        payload.len(),
                        copy_of(&payload),
                        &options,
                        completer.completion(),
                        Room::AtOnce,
                    )
                }))
            }
            Err(e) => State::Failed(Some(e)),
        };
        CallFuture { state, slot, receiving: Receiving::default() }
    }

    /// A call that could not start: it fails with `error`.
    pub(crate) fn failed(error: Error) -> CallFuture {
        CallFuture { state: State::Failed(Some(error)), slot: Arc::default(), receiving: Receiving::default() }
    }
}

impl Future for CallFuture {
    type Output = Result<Response>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<Response>> {
        let this = &mut *self;
        if let State::Starting(attempts) = &mut this.state {
            this.state = match attempts.poll_attempt(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Ok(pending)) => State::Pending(pending),
                Poll::Ready(Err(e)) => State::Failed(Some(e)),
            };
        }
        let result = match &mut this.state {
            State::Failed(error) => error.take().map(Err),
            State::Pending(pending) => match pending.try_take() {
                Some(result) => Some(result),
                None => {
                    // Registered, then checked again: a completion between the first check
                    // and the registration finds no waker, so the second check sees it.
                    this.slot.register(cx.waker());
                    let session = pending.session.clone();
                    let again = this.receiving.receive(&session, &|| pending.is_done(), pending.deadline_ns);
                    let result = pending.try_take();
                    if result.is_none() && again {
                        cx.waker().wake_by_ref();
                    }
                    result
                }
            },
            State::Starting(_) => unreachable!("a started call moved on above"),
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

/// The future of [`crate::LinkEnd::notify_async`]: done once the notification is in the
/// ring (a notification has no answer). It waits for room without parking the executor;
/// dropping it before then sends nothing.
#[derive(Debug)]
#[must_use = "a notification future sends nothing unless awaited"]
pub struct NotifyFuture {
    state: Option<std::result::Result<Attempts<()>, Error>>,
}

impl NotifyFuture {
    pub(crate) fn start(session: &Arc<Session>, method_id: u32, payload: &[u8], options: &CallOptions) -> NotifyFuture {
        let first = session.notify_within_room(method_id, payload.len(), copy_of(payload), options, Room::AtOnce);
        let state = match first {
            Ok(()) => None,
            Err(e) if found_no_room(&e) => {
                let (options, payload) = (fixed_deadline(options, session), payload.to_vec());
                Some(Ok(Attempts::new(session.clone(), move |session| {
                    session.notify_within_room(method_id, payload.len(), copy_of(&payload), &options, Room::AtOnce)
                })))
            }
            Err(e) => Some(Err(e)),
        };
        NotifyFuture { state }
    }

    pub(crate) fn failed(error: Error) -> NotifyFuture {
        NotifyFuture { state: Some(Err(error)) }
    }
}

impl Future for NotifyFuture {
    type Output = Result<()>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<()>> {
        match &mut self.state {
            None => Poll::Ready(Ok(())),
            Some(Err(_)) => match self.state.take() {
                Some(Err(e)) => Poll::Ready(Err(e)),
                _ => unreachable!(),
            },
            Some(Ok(attempts)) => {
                let done = std::task::ready!(attempts.poll_attempt(cx));
                self.state = None;
                Poll::Ready(done)
            }
        }
    }
}
