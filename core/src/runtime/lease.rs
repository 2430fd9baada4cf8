//! The lease on our parked flag: letting go of the receive ring without parking it.
//!
//! The peer rings our doorbell only when our parked flag is set (docs/PROTOCOL.md §4),
//! so a ring nobody polls must be parked, or what the peer sends next lies there unseen.
//! Parking costs the flag's cache line twice per hand-over (set, then cleared by the
//! next poller), and a doorbell syscall plus a wakeup for every frame the peer sends in
//! between. A thread that lets go of the ring but will be back in a moment (a spinning
//! caller whose answer came, a server about to run a handler, a stream reader handing
//! over an item) *leases* it instead: the flag stays clear and nobody is woken.
//!
//! The lease is bounded by the standby server, not by the leaseholder's good will (a
//! handler may run for seconds, a reader may never ask for its next item):
//! - a lease is out while `epoch` is odd; the thread holding the ring makes it odd when
//!   it leases the ring and even again when it (or anyone) claims the ring;
//! - the standby, before it sleeps, clears `watched`, fences and reads `epoch`; if a
//!   lease is out it sets `watched` again and sleeps at most [`LEASE`]; if, when it
//!   wakes, `epoch` is still the one it saw, nobody claimed the ring for a whole lease:
//!   it takes the ring itself (and polls or parks it as servers do);
//! - the leaseholder makes `epoch` odd, fences and reads `watched`: if the standby does
//!   not watch, it kicks it (once, at the start of a burst of leases).
//!
//! Fences on both sides (Dekker's pattern, as in `runtime::waiter`): either the standby
//! sees the lease, or the leaseholder sees it unwatched and kicks it; the kick is
//! level-triggered. So a frame the peer sends under a lease waits at most about two
//! leases, and an idle ring ends up parked: no CPU, no wakeups.

use std::sync::atomic::Ordering;
use std::time::Duration;

use super::sync::{fence, AtomicBool, AtomicU64};

/// How long a lease may stand unclaimed before the standby takes the ring (it may wait
/// up to twice this: it watches in steps of one lease). While the ring changes hands the
/// standby wakes once per lease, and on two cores each wakeup takes a core from a
/// spinning thread for a few microseconds: 200 µs doubled the p99 of a spinning round
/// trip (measured), 1 ms does not show.
pub(crate) const LEASE: Duration = Duration::from_millis(1);

#[derive(Debug, Default)]
pub(crate) struct Lease {
    /// Odd while a lease is out. Written only by the thread that holds the ring.
    epoch: AtomicU64,
    /// The standby sleeps at most one lease (it saw a lease out).
    watched: AtomicBool,
}

impl Lease {
    /// The holder of the ring lets go of it under a lease: the lease is out from
    /// before `let_go` (which releases the ring) runs. Returns true if the standby does
    /// not watch and must be kicked. The full fence after `let_go` also orders the
    /// release before whatever the caller reads next (`Session::lease_ring` rechecks the
    /// ring, the check `Session::after_release` fences for).
    pub(crate) fn grant(&self, let_go: impl FnOnce()) -> bool {
        let epoch = self.epoch.load(Ordering::Relaxed);
        self.epoch.store(epoch | 1, Ordering::Relaxed);
        let_go();
        fence(Ordering::SeqCst);
        !self.watched.load(Ordering::Relaxed)
    }

    /// The ring was claimed (call with it held): any lease out ends.
    pub(crate) fn end(&self) {
        let epoch = self.epoch.load(Ordering::Relaxed);
        if epoch & 1 == 1 {
            self.epoch.store(epoch + 1, Ordering::Relaxed);
        }
    }

    /// The standby, about to sleep, with the epoch it saw when it last looked: the
    /// epoch to watch, or `None` to sleep untimed. It watches (sleeps at most [`LEASE`]
    /// and then asks [`Lease::expired`]) while a lease is out, and also while the ring
    /// changes hands: a ring leased and claimed in turn (a caller between its calls, a
    /// server between its handlers) would otherwise cost a kick per lease. It stops once
    /// the ring stayed in one poller's hands (or parked) for a whole lease.
    pub(crate) fn watch(&self, last_seen: &mut Option<u64>) -> Option<u64> {
        self.watched.store(false, Ordering::Relaxed);
        fence(Ordering::SeqCst);
        let epoch = self.epoch.load(Ordering::Relaxed);
        let unchanged = last_seen.replace(epoch) == Some(epoch);
        if epoch & 1 == 0 && unchanged {
            return None;
        }
        self.watched.store(true, Ordering::Relaxed);
        Some(epoch)
    }

    /// The standby stops watching (it leaves its sleep for any reason): the next lease
    /// kicks whoever is the standby then.
    pub(crate) fn unwatch(&self) {
        self.watched.store(false, Ordering::Relaxed);
    }

    /// True while a lease is out (nobody polls the ring, but somebody will be back).
    pub(crate) fn is_out(&self) -> bool {
        self.epoch.load(Ordering::Relaxed) & 1 == 1
    }

    /// True if the lease `watch` returned is still out: nobody claimed the ring since.
    pub(crate) fn expired(&self, watched: u64) -> bool {
        watched & 1 == 1 && self.epoch.load(Ordering::Relaxed) == watched
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn a_lease_is_watched_until_the_ring_is_claimed_and_kicks_only_an_unwatched_standby() {
        let lease = Lease::default();
        let mut seen = None;
        assert!(lease.watch(&mut seen).is_some(), "a first look: watch one lease");
        assert_eq!(lease.watch(&mut seen), None, "no lease out, nothing changed: sleep untimed");
        assert!(lease.grant(|| {}), "the standby sleeps untimed: kick it");
        let watched = lease.watch(&mut seen).expect("a lease is out");
        assert!(lease.is_out() && lease.expired(watched), "nobody claimed the ring");
        lease.end();
        assert!(!lease.is_out() && !lease.expired(watched), "claimed: over");
        let claimed = lease.watch(&mut seen).expect("the ring changed hands: watch on");
        assert!(!lease.expired(claimed), "a ring held is no lease to expire");
        assert!(!lease.grant(|| {}), "the standby watches: no kick");
        let again = lease.watch(&mut seen).expect("a new lease");
        assert_ne!(again, watched);
        lease.unwatch();
        lease.end();
        assert!(lease.grant(|| {}), "the standby left its sleep: kick");
        lease.end();
        lease.end();
        let _ = lease.watch(&mut seen);
        assert_eq!(lease.watch(&mut seen), None, "ending twice is ending once");
    }
}

#[cfg(all(test, loom))]
mod loom_model {
    use super::*;
    use loom::sync::atomic::{AtomicU32, AtomicUsize};
    use loom::sync::{Arc, Mutex};

    use crate::runtime::sync::Bell;

    /// The receive side of one link: the ring (frames pending, under its lock), our
    /// parked flag, the lease, and the standby's doorbell/kick.
    #[derive(Default)]
    struct Receiver {
        ring: Mutex<()>,
        pending: AtomicUsize,
        taken: AtomicUsize,
        parked: AtomicU32,
        lease: Lease,
        bell: Bell,
    }

    impl Receiver {
        /// Polls the ring it holds until empty, then parks it (the handshake: set the
        /// flag, fence, recheck).
        fn drain_and_park(&self) {
            self.lease.end();
            self.parked.store(0, Ordering::Relaxed);
            loop {
                while self.pending.load(Ordering::Acquire) > 0 {
                    self.pending.fetch_sub(1, Ordering::AcqRel);
                    self.taken.fetch_add(1, Ordering::AcqRel);
                }
                self.parked.store(1, Ordering::SeqCst);
                fence(Ordering::SeqCst);
                if self.pending.load(Ordering::Acquire) == 0 {
                    return;
                }
                self.parked.store(0, Ordering::Relaxed);
            }
        }
    }

    /// A thread holding the ring leases it and never comes back; the peer then sends a
    /// frame, sees the flag clear and does not ring. The standby must take the frame:
    /// if it could sleep untimed with the lease unseen, loom reports the deadlock.
    #[test]
    fn loom_a_frame_sent_under_a_lease_nobody_returns_from_is_taken_by_the_standby() {
        let mut builder = loom::model::Builder::new();
        builder.preemption_bound = Some(3);
        builder.check(|| {
            let rx = Arc::new(Receiver::default());
            let leaseholder = {
                let rx = rx.clone();
                loom::thread::spawn(move || {
                    if let Ok(held) = rx.ring.try_lock() {
                        rx.lease.end();
                        let kick = rx.lease.grant(|| drop(held));
                        if kick {
                            rx.bell.ring();
                        }
                    }
                })
            };
            let peer = {
                let rx = rx.clone();
                loom::thread::spawn(move || {
                    rx.pending.fetch_add(1, Ordering::AcqRel);
                    fence(Ordering::SeqCst);
                    if rx.parked.load(Ordering::Relaxed) != 0 {
                        rx.bell.ring();
                    }
                })
            };
            // The standby: look at the ring when woken, as the serve loop does after
            // every sleep, then sleep: one lease at most if one is out, else untimed.
            let (mut watched, mut seen) = (None, None);
            loop {
                let look = watched.is_none_or(|e| rx.lease.expired(e));
                if look {
                    if let Ok(_held) = rx.ring.try_lock() {
                        rx.drain_and_park();
                    }
                }
                if rx.taken.load(Ordering::Acquire) == 1 {
                    break;
                }
                watched = rx.lease.watch(&mut seen);
                match watched {
                    // A timed sleep can always end by its timeout.
                    Some(_) => loom::thread::yield_now(),
                    None => rx.bell.wait(),
                }
                rx.lease.unwatch();
            }
            leaseholder.join().unwrap();
            peer.join().unwrap();
        });
    }
}
