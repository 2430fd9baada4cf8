//! The deadlines a link watches itself: those of calls nobody waits on (a started call,
//! a call future), those of streams, whichever end holds them, and those of calls an
//! async handler serves. A waiting thread
//! watches its own deadline; nothing else does for these, so the runtime's standby sleeps
//! until [`Deadlines::earliest`] and ends what [`Deadlines::pop_due`] hands out.
//!
//! Entries are not removed when what they time ends otherwise (answered, finished,
//! cancelled): the link says which are still live when asked, stale ones are dropped as
//! they come up, and the heap is rebuilt from the live ones once stale ones outnumber
//! them, so it stays within twice what is live (plus a constant).

use std::cmp::Reverse;
use std::collections::BinaryHeap;

/// What a watched deadline belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Timed {
    /// The call with this msg id.
    Call(u64),
    /// The stream on this channel (as long as it is the stream the entry was made for:
    /// the link checks the deadline too, since channel ids are reused).
    Channel(u32),
    /// The peer's call with this msg id, served by an async handler, whose future must
    /// learn that its deadline passed.
    Served(u64),
}

/// Deadlines, earliest first.
#[derive(Debug, Default)]
pub(crate) struct Deadlines {
    heap: BinaryHeap<Reverse<(u64, Timed)>>,
}

/// Stale entries tolerated beyond twice the live ones before a rebuild.
const SLACK: usize = 64;

impl Deadlines {
    /// Watches `what` until `deadline_ns`. `live` is how many entries are live now and
    /// `rebuild` lists them, for when stale entries have piled up.
    pub(crate) fn watch(
        &mut self,
        deadline_ns: u64,
        what: Timed,
        live: usize,
        rebuild: impl FnOnce() -> Vec<(u64, Timed)>,
    ) {
        if self.heap.len() >= 2 * live + SLACK {
            self.heap = rebuild().into_iter().map(Reverse).collect();
        }
        self.heap.push(Reverse((deadline_ns, what)));
    }

    /// The earliest live deadline, if any (stale entries ahead of it are dropped).
    pub(crate) fn earliest(&mut self, is_live: impl Fn(u64, Timed) -> bool) -> Option<u64> {
        while let Some(&Reverse((deadline, what))) = self.heap.peek() {
            if is_live(deadline, what) {
                return Some(deadline);
            }
            self.heap.pop();
        }
        None
    }

    /// One live entry due at `now_ns` or earlier, removed. Call until it returns `None`.
    pub(crate) fn pop_due(&mut self, now_ns: u64, is_live: impl Fn(u64, Timed) -> bool) -> Option<Timed> {
        while let Some(&Reverse((deadline, what))) = self.heap.peek() {
            let live = is_live(deadline, what);
            if deadline > now_ns && live {
                return None;
            }
            self.heap.pop();
            if live {
                return Some(what);
            }
        }
        None
    }

    /// Forgets everything (the link failed).
    pub(crate) fn clear(&mut self) {
        self.heap.clear();
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.heap.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn due_entries_come_in_deadline_order_and_stale_ones_never() {
        let mut deadlines = Deadlines::default();
        let stale = Timed::Call(2);
        let live = |_: u64, what: Timed| what != stale;
        deadlines.watch(300, Timed::Channel(5), 0, Vec::new);
        deadlines.watch(100, stale, 0, Vec::new);
        deadlines.watch(200, Timed::Call(1), 0, Vec::new);
        assert_eq!(deadlines.earliest(live), Some(200), "the stale entry is skipped");
        assert_eq!(deadlines.pop_due(199, live), None);
        assert_eq!(deadlines.pop_due(250, live), Some(Timed::Call(1)));
        assert_eq!(deadlines.pop_due(250, live), None);
        assert_eq!(deadlines.pop_due(u64::MAX, live), Some(Timed::Channel(5)));
        assert_eq!(deadlines.earliest(live), None);
    }

    #[test]
    fn stale_entries_are_rebuilt_away() {
        let mut deadlines = Deadlines::default();
        for id in 0..10_000 {
            // One live entry at a time: the one just added.
            deadlines.watch(u64::MAX, Timed::Call(id), 1, || vec![(u64::MAX, Timed::Call(id - 1))]);
        }
        assert!(deadlines.len() <= 2 + SLACK + 1, "{} entries", deadlines.len());
    }
}
