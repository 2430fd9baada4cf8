//! Futures that must be woken at a time, without a timer of their own: the link's
//! standby sleeps no longer than the earliest alarm and wakes what is due.
//!
//! Two kinds of future need one. An async sender that found the send ring or the slot
//! pool full: room appears when the peer consumes our ring or returns slots, and the
//! peer tells us neither (it rings no doorbell for that), so somebody must look again;
//! the standby does, [`ROOM_RETRY`] later, and wakes the future to try again. That wait is
//! an overload condition (a peer that reads slower than we send), so the retry period
//! costs nothing on the fast path: nothing is registered then. And a future with a time
//! limit of its own that is no call's deadline (a graceful shutdown's grace).

use std::sync::atomic::{AtomicU64, Ordering};
use std::task::Waker;
use std::time::Duration;

use super::sync::Mutex;

/// How soon a future that found no room tries again.
pub(crate) const ROOM_RETRY: Duration = Duration::from_millis(1);

/// The alarms of one link.
#[derive(Debug)]
pub(crate) struct Alarms {
    /// (when, whom to wake), one entry per waker.
    entries: Mutex<Vec<(u64, Waker)>>,
    /// The earliest entry's time, `u64::MAX` for none: the standby's cheap look.
    earliest: AtomicU64,
}

impl Default for Alarms {
    fn default() -> Alarms {
        Alarms { entries: Mutex::new(Vec::new()), earliest: AtomicU64::new(u64::MAX) }
    }
}

impl Alarms {
    /// Wakes `waker` at `at_ns` (CLOCK_MONOTONIC), or when the link fails. Returns true
    /// if this is now the earliest alarm: the standby, which sleeps until the earliest it
    /// knew of, must be kicked.
    pub(crate) fn wake_at(&self, at_ns: u64, waker: &Waker) -> bool {
        let mut entries = self.entries.lock();
        match entries.iter_mut().find(|(_, w)| w.will_wake(waker)) {
            Some((when, _)) => *when = (*when).min(at_ns),
            None => entries.push((at_ns, waker.clone())),
        }
        self.earliest.fetch_min(at_ns, Ordering::AcqRel) > at_ns
    }

    /// When the earliest alarm is due, if any.
    pub(crate) fn earliest(&self) -> Option<u64> {
        Some(self.earliest.load(Ordering::Acquire)).filter(|at| *at != u64::MAX)
    }

    /// Wakes the futures due at `now_ns` (all of them with `u64::MAX`).
    pub(crate) fn fire(&self, now_ns: u64) {
        if self.earliest.load(Ordering::Acquire) > now_ns {
            return;
        }
        let due = {
            let mut entries = self.entries.lock();
            let (due, later): (Vec<_>, Vec<_>) = entries.drain(..).partition(|(at, _)| *at <= now_ns);
            *entries = later;
            let earliest = entries.iter().map(|(at, _)| *at).min().unwrap_or(u64::MAX);
            self.earliest.store(earliest, Ordering::Release);
            due
        };
        for (_, waker) in due {
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

    fn woken(count: &Arc<Count>) -> usize {
        count.0.load(Ordering::SeqCst)
    }

    #[test]
    fn alarms_fire_when_due_once_each_and_only_an_earlier_one_kicks_the_standby() {
        let alarms = Alarms::default();
        let (a, b) = (Arc::new(Count(AtomicUsize::new(0))), Arc::new(Count(AtomicUsize::new(0))));
        let (wa, wb) = (Waker::from(a.clone()), Waker::from(b.clone()));
        assert_eq!(alarms.earliest(), None);
        assert!(alarms.wake_at(200, &wa), "the first alarm kicks");
        assert!(!alarms.wake_at(300, &wb), "a later one does not");
        assert!(!alarms.wake_at(250, &wa), "registered once, at its earliest time");
        assert_eq!(alarms.earliest(), Some(200));
        alarms.fire(199);
        assert_eq!((woken(&a), woken(&b)), (0, 0));
        alarms.fire(200);
        assert_eq!((woken(&a), woken(&b)), (1, 0));
        assert_eq!(alarms.earliest(), Some(300));
        alarms.fire(u64::MAX);
        assert_eq!((woken(&a), woken(&b)), (1, 1));
        assert_eq!(alarms.earliest(), None);
        assert!(alarms.wake_at(500, &wa), "after all fired the next one kicks again");
    }
}
