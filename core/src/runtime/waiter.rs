//! One caller waiting for its call's answer, and the thread that delivers it.
//!
//! The caller polls for its own answer and, when it has nothing better to do, sleeps on
//! the link's doorbell together with a kick of its own thread. Whoever takes the call
//! out of the link's table (the thread that received the answer, the one that failed
//! the link, the standby expiring a deadline) is its only *completer*: it writes the
//! result, publishes it with `done`, and kicks the caller if the caller said it sleeps.
//!
//! Rules, each a reason no wakeup or result is lost (`loom_model` below):
//! - the completer stores `done`, fences and then reads `polling`; the caller stores
//!   `polling`, fences and then reads `done` (full fences, the Dekker pattern): at least
//!   one of them sees the other's store, so either the caller does not sleep or the
//!   completer kicks it. (Fences rather than SeqCst accesses: they cost the same, one
//!   full barrier per side, and loom models fences but treats SeqCst accesses as AcqRel,
//!   which cannot check this pattern.)
//! - the kick is level-triggered (an eventfd): a kick sent before the caller sleeps is
//!   still there when it does;
//! - a caller that gives up (its deadline) and finds the call already gone from the
//!   table waits for `done`: the completer is writing the result right now.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::sync::{fence, AtomicBool, UnsafeCell};

/// Runs once when an asynchronous call completes, on the thread that completed it.
pub type Completion = Box<dyn FnOnce() + Send>;

/// What wakes a sleeping caller (the caller thread's eventfd; a model under loom).
pub(crate) trait Wakeup: Send + Sync {
    fn notify(&self);
}

/// One outstanding call.
pub(crate) struct Waiter<T, K> {
    done: AtomicBool,
    /// The caller sleeps (or is about to) and must be kicked on completion.
    polling: AtomicBool,
    /// The caller thread's own kick (`None` for calls nobody waits on, or if creating
    /// one failed: the caller then rechecks on a timer).
    kick: Option<Arc<K>>,
    /// Written once by the completer before `done`; read only by the caller after it.
    result: UnsafeCell<Option<T>>,
    /// For calls nobody waits on: run by the completer, under the same rule.
    on_complete: UnsafeCell<Option<Completion>>,
}

// SAFETY: `result` and `on_complete` are written only by the single completer (the
// thread that removed the waiter from the link's table; the table hands it out once)
// before its Release store of `done`, and `result` is read only by the caller
// after an Acquire load of `done` saw true, so no access to them ever races. `T` is
// moved from the completer to the caller, hence `T: Send`.
unsafe impl<T: Send, K: Wakeup> Sync for Waiter<T, K> {}
// SAFETY: as above; every field is Send when `T` is.
unsafe impl<T: Send, K: Wakeup> Send for Waiter<T, K> {}

impl<T, K: Wakeup> Waiter<T, K> {
    /// A call its caller waits on, kicked through `kick`.
    pub(crate) fn new(kick: Option<Arc<K>>) -> Waiter<T, K> {
        Waiter {
            done: AtomicBool::new(false),
            polling: AtomicBool::new(false),
            kick,
            result: UnsafeCell::new(None),
            on_complete: UnsafeCell::new(None),
        }
    }

    /// A call nobody waits on: `on_complete` runs on the completing thread.
    pub(crate) fn with_completion(on_complete: Completion) -> Waiter<T, K> {
        Waiter { on_complete: UnsafeCell::new(Some(on_complete)), ..Waiter::new(None) }
    }

    /// The caller's own kick, to sleep on.
    pub(crate) fn kick(&self) -> Option<&K> {
        self.kick.as_deref()
    }

    pub(crate) fn is_done(&self) -> bool {
        self.done.load(Ordering::Acquire)
    }

    /// Delivers the result. Only the thread that removed this waiter from the link's
    /// table may call this, once.
    pub(crate) fn complete(&self, result: T) {
        // SAFETY: we are the single completer (see `unsafe impl Sync`), and the caller
        // does not read before `done` is set below.
        self.result.with_mut(|r| unsafe { *r = Some(result) });
        // SAFETY: as above: only the single completer touches `on_complete`.
        let on_complete = self.on_complete.with_mut(|c| unsafe { (*c).take() });
        self.done.store(true, Ordering::Release);
        if let Some(callback) = on_complete {
            callback();
        }
        fence(Ordering::SeqCst);
        if self.polling.load(Ordering::Relaxed) {
            if let Some(kick) = &self.kick {
                kick.notify();
            }
        }
    }

    /// Sleeps with `sleep` (which waits on the caller's kick among others) unless the
    /// result is in; a completion from now on kicks.
    pub(crate) fn sleep_unless_done(&self, sleep: impl FnOnce()) {
        self.polling.store(true, Ordering::Relaxed);
        fence(Ordering::SeqCst);
        if !self.done.load(Ordering::Acquire) {
            sleep();
        }
        self.polling.store(false, Ordering::Relaxed);
    }

    /// The result, once. Only the caller may call this, after seeing `is_done`.
    pub(crate) fn take(&self) -> Option<T> {
        if !self.is_done() {
            return None;
        }
        // SAFETY: `done` was observed true with Acquire, so the completer's single write
        // happened before and no other write follows; only the caller (us) reads.
        self.result.with_mut(|r| unsafe { (*r).take() })
    }
}

#[cfg(all(test, loom))]
mod loom_model {
    use super::*;
    use loom::sync::Mutex;

    use crate::runtime::sync::Bell;

    impl Wakeup for Bell {
        fn notify(&self) {
            self.ring();
        }
    }

    type TestWaiter = Waiter<u32, Bell>;

    /// The caller's loop: check, sleep on its kick, check again. A lost wakeup leaves
    /// the caller asleep for good, which loom reports as a deadlock.
    #[test]
    fn loom_a_sleeping_caller_is_woken_by_its_completion() {
        loom::model(|| {
            let bell = Arc::new(Bell::default());
            let waiter = Arc::new(TestWaiter::new(Some(bell.clone())));
            let completer = {
                let waiter = waiter.clone();
                loom::thread::spawn(move || waiter.complete(7))
            };
            while !waiter.is_done() {
                waiter.sleep_unless_done(|| bell.wait());
            }
            assert_eq!(waiter.take(), Some(7));
            assert_eq!(waiter.take(), None, "once");
            completer.join().unwrap();
        });
    }

    /// A caller whose deadline passes while the answer arrives: exactly one of them
    /// takes the call from the table, and a result delivered is never lost.
    #[test]
    fn loom_a_deadline_racing_the_answer_ends_the_call_exactly_once() {
        loom::model(|| {
            let waiter = Arc::new(TestWaiter::new(None));
            let table = Arc::new(Mutex::new(Some(waiter.clone())));
            let receiver = {
                let table = table.clone();
                loom::thread::spawn(move || {
                    let taken = table.lock().unwrap().take();
                    if let Some(w) = taken {
                        w.complete(7);
                        true
                    } else {
                        false
                    }
                })
            };
            // The caller's deadline passed: it gives up unless the answer was taken.
            let gave_up = table.lock().unwrap().take().is_some();
            if !gave_up {
                while !waiter.is_done() {
                    loom::thread::yield_now();
                }
                assert_eq!(waiter.take(), Some(7));
            }
            let delivered = receiver.join().unwrap();
            assert_ne!(gave_up, delivered, "exactly one ends the call");
        });
    }

    /// A call nobody waits on runs its completion once, on the completer.
    #[test]
    fn loom_a_completion_callback_runs_once_and_sees_the_result() {
        loom::model(|| {
            let runs = Arc::new(loom::sync::atomic::AtomicUsize::new(0));
            let seen = runs.clone();
            let waiter = Arc::new(TestWaiter::with_completion(Box::new(move || {
                seen.fetch_add(1, Ordering::SeqCst);
            })));
            let completer = {
                let waiter = waiter.clone();
                loom::thread::spawn(move || waiter.complete(9))
            };
            completer.join().unwrap();
            assert_eq!(runs.load(Ordering::SeqCst), 1);
            assert_eq!(waiter.take(), Some(9));
        });
    }
}
