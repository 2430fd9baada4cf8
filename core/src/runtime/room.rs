//! Async senders waiting for room in a full send ring or slot pool, without a thread.
//!
//! A blocking sender snoozes until room appears; a future must not park its executor.
//! Room appears when the peer consumes our ring or returns slots, and the peer tells us
//! neither (it rings no doorbell for that), so somebody must look again: the link's
//! standby does, every [`ROOM_RETRY`] while any future waits here, and wakes them all to
//! try again. The wait is an overload condition (a peer that reads slower than we send),
//! so a retry period costs nothing on the fast path: nothing is registered here then.

use std::sync::atomic::{AtomicBool, Ordering};
use std::task::Waker;
use std::time::Duration;

use super::sync::Mutex;

/// How often the standby wakes futures that wait for room, while any do.
pub(crate) const ROOM_RETRY: Duration = Duration::from_millis(1);

/// The futures of one link that wait for room.
#[derive(Debug, Default)]
pub(crate) struct RoomWaiters {
    wakers: Mutex<Vec<Waker>>,
    /// Somebody waits (mirrors `!wakers.is_empty()`, for the standby's cheap look).
    wanted: AtomicBool,
}

impl RoomWaiters {
    /// Wakes `waker` at the next retry (or when the link fails). Returns true if nobody
    /// waited before: the standby, which may sleep without a timeout, must be kicked.
    pub(crate) fn wait(&self, waker: &Waker) -> bool {
        let mut wakers = self.wakers.lock();
        if !wakers.iter().any(|w| w.will_wake(waker)) {
            wakers.push(waker.clone());
        }
        !self.wanted.swap(true, Ordering::AcqRel)
    }

    /// Whether any future waits.
    pub(crate) fn wanted(&self) -> bool {
        self.wanted.load(Ordering::Acquire)
    }

    /// Wakes every waiting future to try again (each registers anew if it still finds no
    /// room).
    pub(crate) fn wake_all(&self) {
        if !self.wanted() {
            return;
        }
        let wakers = {
            let mut wakers = self.wakers.lock();
            self.wanted.store(false, Ordering::Release);
            std::mem::take(&mut *wakers)
        };
        for waker in wakers {
            waker.wake();
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::sync::Arc;
    use std::task::Wake;

    struct Count(AtomicUsize);
    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn each_waiter_is_woken_once_per_retry_and_only_the_first_kicks_the_standby() {
        let room = RoomWaiters::default();
        let (a, b) = (Arc::new(Count(AtomicUsize::new(0))), Arc::new(Count(AtomicUsize::new(0))));
        let (wa, wb) = (Waker::from(a.clone()), Waker::from(b.clone()));
        assert!(room.wait(&wa), "the first waiter kicks");
        assert!(!room.wait(&wa), "registered once");
        assert!(!room.wait(&wb));
        room.wake_all();
        assert_eq!((a.0.load(Ordering::SeqCst), b.0.load(Ordering::SeqCst)), (1, 1));
        assert!(!room.wanted());
        room.wake_all();
        assert_eq!(a.0.load(Ordering::SeqCst), 1, "a waiter that did not register again is not woken again");
        assert!(room.wait(&wa), "after a retry the next waiter kicks again");
    }
}
