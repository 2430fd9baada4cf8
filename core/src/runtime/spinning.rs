//! Who may spin: at most one thread per process on a machine with two cores or fewer.
//!
//! A thread polling a receive ring that is empty either spins (an answer a few hundred
//! nanoseconds away is taken at once) or parks the ring and sleeps on the doorbell
//! (a wakeup, tens of microseconds on a VM). On two cores a second spinner in the process
//! takes the core the peer (or the thread that has its answer) needs, so every link's
//! threads share one permit there: a poller spins only while it holds it, and parks its
//! ring at once otherwise. Within one link the ring's holder is the only poller anyway,
//! so a process with one link (every cell, a host with one cell) counts nothing; the
//! permit is what keeps a host that talks to several cells at one spinning thread, and
//! only there it costs two atomic operations per wait (a version that counted for every
//! link cost 5–11 % of a round trip).
//!
//! A permit is taken only once a poll finds the ring empty (the fast path's frames are
//! taken without one) and given back as soon as its holder stops spinning or leaves to
//! run a handler. (A waiter that polls may complete `call_start` callbacks meanwhile.)
//!
//! Plain std atomics, not the loom facade: the count only decides between spinning and
//! parking, and parking is the loom-checked handshake.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;

/// The permits of one process (or of a test).
pub(crate) struct SpinPermits {
    /// How many threads may spin at once; `usize::MAX` when cores are plentiful.
    limit: usize,
    spinning: AtomicUsize,
    /// Links open in the process: with one, its ring's holder is the only spinner.
    links: AtomicUsize,
}

impl SpinPermits {
    pub(crate) fn new(limit: usize) -> SpinPermits {
        SpinPermits { limit, spinning: AtomicUsize::new(0), links: AtomicUsize::new(0) }
    }

    /// Counts a link as open until the returned value is dropped.
    pub(crate) fn link_opened(&self) -> OpenLink<'_> {
        self.links.fetch_add(1, Ordering::Relaxed);
        OpenLink(self)
    }

    /// Whether spinners must share the permits: there is a limit, and more than one link
    /// whose threads could spin.
    fn shared(&self) -> bool {
        self.limit != usize::MAX && self.links.load(Ordering::Relaxed) > 1
    }

    /// The process's permits: one on two cores or fewer, no limit otherwise.
    pub(crate) fn process() -> &'static SpinPermits {
        static PERMITS: OnceLock<SpinPermits> = OnceLock::new();
        PERMITS.get_or_init(|| SpinPermits::new(if super::session::few_cores() { 1 } else { usize::MAX }))
    }

    /// A permit to spin, if one is free.
    pub(crate) fn try_acquire(&self) -> Option<SpinPermit<'_>> {
        if self.limit == usize::MAX {
            return Some(SpinPermit { permits: None });
        }
        // Relaxed: the count only decides who spins; no data is published through it.
        let mut current = self.spinning.load(Ordering::Relaxed);
        loop {
            if current >= self.limit {
                return None;
            }
            match self.spinning.compare_exchange_weak(current, current + 1, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => return Some(SpinPermit { permits: Some(self) }),
                Err(seen) => current = seen,
            }
        }
    }

    /// Threads spinning now.
    #[cfg(all(test, not(loom)))]
    pub(crate) fn spinning(&self) -> usize {
        self.spinning.load(Ordering::Relaxed)
    }
}

/// The right to spin, given back on drop.
pub(crate) struct SpinPermit<'a> {
    /// `None` where there is no limit (nothing to count).
    permits: Option<&'a SpinPermits>,
}

impl Drop for SpinPermit<'_> {
    fn drop(&mut self) {
        if let Some(p) = self.permits {
            p.spinning.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// A link counted by [`SpinPermits::link_opened`] (the session holds it).
pub(crate) struct OpenLink<'a>(&'a SpinPermits);

impl Drop for OpenLink<'_> {
    fn drop(&mut self) {
        self.0.links.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A poller's hold on a permit: taken when it first wants to spin, kept while it spins,
/// given back before it sleeps or leaves.
pub(crate) struct Spinner<'a> {
    permits: &'a SpinPermits,
    held: std::cell::Cell<Option<SpinPermit<'a>>>,
}

impl<'a> Spinner<'a> {
    pub(crate) fn new(permits: &'a SpinPermits) -> Spinner<'a> {
        Spinner { permits, held: std::cell::Cell::new(None) }
    }

    /// Whether this poller may spin now: it holds a permit, or just got one.
    ///
    /// Asked again at every check of a spin: a spinner that needed no permit (one link)
    /// takes one, or stops, once a second link opens.
    pub(crate) fn may_spin(&self) -> bool {
        let held = self.held.take();
        if held.is_none() && !self.permits.shared() {
            return true;
        }
        let held = held.or_else(|| self.permits.try_acquire());
        let may = held.is_some();
        self.held.set(held);
        may
    }

    /// Gives the permit back (before sleeping).
    pub(crate) fn stop(&self) {
        drop(self.held.take());
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn one_permit_is_shared_and_given_back() {
        let permits = SpinPermits::new(1);
        let _links = (permits.link_opened(), permits.link_opened());
        let (a, b) = (Spinner::new(&permits), Spinner::new(&permits));
        assert!(a.may_spin());
        assert!(a.may_spin(), "the holder keeps its permit");
        assert!(!b.may_spin(), "a second spinner is refused");
        assert_eq!(permits.spinning(), 1);
        a.stop();
        assert_eq!(permits.spinning(), 0);
        assert!(b.may_spin(), "a permit given back is free for the next");
        drop(b);
        assert_eq!(permits.spinning(), 0, "dropping a spinner gives its permit back");
    }

    #[test]
    fn with_one_link_nothing_is_counted_until_a_second_opens() {
        let permits = SpinPermits::new(1);
        let first = permits.link_opened();
        let (a, b) = (Spinner::new(&permits), Spinner::new(&permits));
        assert!(a.may_spin() && b.may_spin(), "one link: its ring's holder is the only spinner anyway");
        assert_eq!(permits.spinning(), 0);
        let second = permits.link_opened();
        assert!(a.may_spin(), "a second link: the next check takes the permit");
        assert!(!b.may_spin());
        assert_eq!(permits.spinning(), 1);
        drop((second, first));
        a.stop();
        assert!(b.may_spin());
        assert_eq!(permits.spinning(), 0);
    }

    #[test]
    fn no_limit_never_refuses() {
        let permits = SpinPermits::new(usize::MAX);
        let spinners: Vec<_> = (0..8).map(|_| Spinner::new(&permits)).collect();
        assert!(spinners.iter().all(|s| s.may_spin()));
    }
}
