//! Which unary calls their callers cancelled while we serve them, and the handlers that
//! wait for it without a timer: blocking ones (`Call::wait_cancelled`) on a condition
//! variable, async ones (`CancelToken::cancelled`) as wakers.
//!
//! Message ids are never reused, so an id only has to be remembered while its handler
//! runs; a CANCEL that arrives after the handler finished is remembered until the bound
//! pushes it out. A waiter checks and sleeps under the lock; a cancel and the link's
//! failure ([`CancelledCalls::wake_all`]) notify under it, so no wakeup falls between
//! a waiter's check and its sleep (`loom_model` below).

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll, Waker};
use std::time::Instant;

use super::sync::{AtomicUsize, Condvar, Mutex};

/// The cancelled calls of one link.
#[derive(Debug, Default)]
pub(crate) struct CancelledCalls {
    /// Fast path: serving a call only takes the lock when some cancel (or an async
    /// handler's waker) is remembered.
    count: AtomicUsize,
    ids: Mutex<Remembered>,
    changed: Condvar,
}

#[derive(Debug, Default)]
struct Remembered {
    ids: VecDeque<u64>,
    /// Async handlers waiting for the cancel of their call (by msg id).
    wakers: Vec<(u64, Waker)>,
}

impl Remembered {
    fn contains(&self, msg_id: u64) -> bool {
        self.ids.contains(&msg_id)
    }

    fn len(&self) -> usize {
        self.ids.len() + self.wakers.len()
    }

    /// Wakes (and forgets) the wakers of `msg_id`, or all of them.
    fn wake(&mut self, msg_id: Option<u64>) {
        let mut i = 0;
        while i < self.wakers.len() {
            if msg_id.is_none_or(|id| self.wakers[i].0 == id) {
                self.wakers.swap_remove(i).1.wake();
            } else {
                i += 1;
            }
        }
    }
}

impl CancelledCalls {
    /// How many cancels of already finished calls are remembered at most.
    pub(crate) const BOUND: usize = 1024;

    /// The caller cancelled `msg_id`.
    pub(crate) fn add(&self, msg_id: u64) {
        let mut ids = self.ids.lock();
        if ids.ids.len() >= Self::BOUND {
            ids.ids.pop_front();
        }
        ids.ids.push_back(msg_id);
        ids.wake(Some(msg_id));
        self.count.store(ids.len(), Ordering::Release);
        self.changed.notify_all();
    }

    pub(crate) fn contains(&self, msg_id: u64) -> bool {
        self.count.load(Ordering::Acquire) != 0 && self.ids.lock().contains(msg_id)
    }

    /// Ready once `msg_id` is cancelled or `stop()` holds; else `cx`'s waker is woken by
    /// its cancel, [`CancelledCalls::wake`] or [`CancelledCalls::wake_all`].
    pub(crate) fn poll_cancelled(&self, msg_id: u64, cx: &mut Context<'_>, stop: impl Fn() -> bool) -> Poll<()> {
        let mut ids = self.ids.lock();
        if ids.contains(msg_id) || stop() {
            return Poll::Ready(());
        }
        if !ids.wakers.iter().any(|(id, w)| *id == msg_id && w.will_wake(cx.waker())) {
            ids.wakers.push((msg_id, cx.waker().clone()));
        }
        self.count.store(ids.len(), Ordering::Release);
        Poll::Pending
    }

    /// Wakes the async handler of `msg_id` to look again (its deadline passed).
    pub(crate) fn wake(&self, msg_id: u64) {
        let mut ids = self.ids.lock();
        ids.wake(Some(msg_id));
        self.count.store(ids.len(), Ordering::Release);
    }

    /// The handler of `msg_id` finished: its cancel need not be remembered.
    pub(crate) fn forget(&self, msg_id: u64) {
        if self.count.load(Ordering::Acquire) == 0 {
            return;
        }
        let mut ids = self.ids.lock();
        ids.ids.retain(|id| *id != msg_id);
        ids.wakers.retain(|(id, _)| *id != msg_id);
        self.count.store(ids.len(), Ordering::Release);
    }

    /// Waits until `msg_id` is cancelled, `stop()` holds or `until` passes.
    pub(crate) fn wait_for(&self, msg_id: u64, until: Instant, stop: impl Fn() -> bool) {
        let mut ids = self.ids.lock();
        while !ids.contains(msg_id) && !stop() {
            if self.changed.wait_until(&mut ids, until).timed_out() {
                return;
            }
        }
    }

    /// Wakes every waiter to recheck its `stop` condition. Called after the link
    /// failed; taking the lock orders it after any waiter's check.
    pub(crate) fn wake_all(&self) {
        let mut ids = self.ids.lock();
        ids.wake(None);
        self.count.store(ids.len(), Ordering::Release);
        self.changed.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn cancels_are_remembered_up_to_the_bound_and_forgotten_with_their_call() {
        let calls = CancelledCalls::default();
        assert!(!calls.contains(1));
        calls.add(1);
        calls.add(2);
        assert!(calls.contains(1) && calls.contains(2));
        calls.forget(1);
        assert!(!calls.contains(1) && calls.contains(2));
        for id in 10..10 + CancelledCalls::BOUND as u64 {
            calls.add(id);
        }
        assert!(!calls.contains(2), "the oldest cancel was pushed out by the bound");
        assert!(calls.contains(10 + CancelledCalls::BOUND as u64 - 1));
    }

    #[test]
    fn a_wait_ends_at_its_time_when_nothing_happens() {
        let calls = CancelledCalls::default();
        let started = Instant::now();
        calls.wait_for(5, started + Duration::from_millis(20), || false);
        assert!(started.elapsed() >= Duration::from_millis(20));
    }
}

#[cfg(all(test, loom))]
mod loom_model {
    use super::*;
    use loom::sync::atomic::AtomicBool;
    use loom::sync::Arc;

    /// A handler waiting for the cancel of its call returns once the caller's CANCEL is
    /// processed on another thread, even when other calls' cancels come first.
    #[test]
    fn loom_a_waiting_handler_sees_its_cancel() {
        loom::model(|| {
            let calls = Arc::new(CancelledCalls::default());
            let receiver = {
                let calls = calls.clone();
                loom::thread::spawn(move || {
                    calls.add(8);
                    calls.add(7);
                })
            };
            // Under loom a wait never times out: only a notify can end it.
            calls.wait_for(7, Instant::now(), || false);
            assert!(calls.contains(7));
            receiver.join().unwrap();
        });
    }

    /// A handler waiting for a cancel that never comes returns when the link fails.
    #[test]
    fn loom_a_waiting_handler_sees_the_link_fail() {
        loom::model(|| {
            let calls = Arc::new(CancelledCalls::default());
            let failed = Arc::new(AtomicBool::new(false));
            let failing = {
                let (calls, failed) = (calls.clone(), failed.clone());
                loom::thread::spawn(move || {
                    failed.store(true, Ordering::SeqCst);
                    calls.wake_all();
                })
            };
            calls.wait_for(7, Instant::now(), || failed.load(Ordering::SeqCst));
            assert!(failed.load(Ordering::SeqCst));
            failing.join().unwrap();
        });
    }
}
