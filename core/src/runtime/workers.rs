//! How the server threads of one link share work without a timer.
//!
//! A link has a fixed set of server threads. Requests that arrive while every server is
//! busy (or that a caller's thread found while polling for its own response) wait in a
//! bounded queue. An idle server sleeps in one of two places: one of them, the
//! *standby*, sleeps on the link's doorbell and kick (the descriptor ring is its
//! business); the others sleep on a condition variable, woken for queued work or to
//! take over the standby role before a handler runs long.
//!
//! Rules, each a reason no wakeup is lost:
//! - every change of the queue and of who sleeps where happens under the queue's lock,
//!   and a server checks for work and goes to sleep under that same lock;
//! - queued work wakes a condvar sleeper if there is one, else kicks the standby (an
//!   eventfd: a kick sent before the standby sleeps is still there when it does). That
//!   kick must be the standby's alone: on a kick that callers also sleep on, a caller
//!   can drain it first and the request waits for nobody (CI saw a 5 s stall this way
//!   once the 250 ms recheck that used to hide it was gone);
//! - stopping wakes everyone.
//!
//! `loom_model` below checks these with loom through [`super::sync`].

use std::collections::VecDeque;
use std::sync::atomic::Ordering;

use super::sync::{AtomicBool, AtomicUsize, Condvar, Mutex};

/// The queue of requests waiting for a server, and who sleeps where.
#[derive(Debug)]
pub(crate) struct Workers<T> {
    queue: Mutex<VecDeque<T>>,
    wake: Condvar,
    capacity: usize,
    /// Queue length, readable without the lock (a hint: the lock decides).
    queued: AtomicUsize,
    /// A server sleeps on the doorbell.
    standby_taken: AtomicBool,
    /// Servers sleeping on the condvar.
    idle: AtomicUsize,
    stopped: AtomicBool,
}

impl<T> Workers<T> {
    /// Room for `capacity` queued requests.
    pub(crate) fn new(capacity: usize) -> Workers<T> {
        Workers {
            queue: Mutex::new(VecDeque::new()),
            wake: Condvar::new(),
            capacity,
            queued: AtomicUsize::new(0),
            standby_taken: AtomicBool::new(false),
            idle: AtomicUsize::new(0),
            stopped: AtomicBool::new(false),
        }
    }

    /// Queues `item` for a server; gives it back when the queue is full (the caller
    /// refuses it: a flood costs the flooder errors, not our memory). Wakes a condvar
    /// sleeper, or else calls `kick_standby` (outside the lock).
    pub(crate) fn push(&self, item: T, kick_standby: impl FnOnce()) -> Result<(), T> {
        let mut queue = self.queue.lock();
        if queue.len() >= self.capacity || self.stopped.load(Ordering::Acquire) {
            return Err(item);
        }
        queue.push_back(item);
        self.queued.fetch_add(1, Ordering::Release);
        if self.idle.load(Ordering::Relaxed) > 0 {
            self.wake.notify_one();
        } else {
            drop(queue);
            kick_standby();
        }
        Ok(())
    }

    /// Whether anything may be queued (without the lock: a hint for the hot loop).
    pub(crate) fn has_work(&self) -> bool {
        self.queued.load(Ordering::Acquire) > 0
    }

    /// The oldest queued request.
    pub(crate) fn pop(&self) -> Option<T> {
        let item = self.queue.lock().pop_front();
        if item.is_some() {
            self.queued.fetch_sub(1, Ordering::Release);
        }
        item
    }

    /// Before running a possibly slow handler: if nobody sleeps on the doorbell, wake a
    /// condvar sleeper to take that role, so what arrives meanwhile is received.
    pub(crate) fn hand_over_standby(&self) {
        if !self.standby_taken.load(Ordering::SeqCst) && self.idle.load(Ordering::SeqCst) > 0 {
            self.wake_one();
        }
    }

    /// Wakes one condvar sleeper (a thread let go of the ring with descriptors left).
    pub(crate) fn wake_one(&self) {
        let _queue = self.queue.lock();
        self.wake.notify_one();
    }

    /// Sleeps until there may be something to do: as the standby in `standby_wait` (the
    /// doorbell and kick) if nobody is, else on the condvar. Returns at once if work is
    /// queued or the workers are stopped.
    pub(crate) fn sleep(&self, standby_wait: impl FnOnce()) {
        let mut queue = self.queue.lock();
        if !queue.is_empty() || self.stopped.load(Ordering::Acquire) {
            return;
        }
        if !self.standby_taken.load(Ordering::SeqCst) {
            self.standby_taken.store(true, Ordering::SeqCst);
            drop(queue);
            standby_wait();
            let _queue = self.queue.lock();
            self.standby_taken.store(false, Ordering::SeqCst);
        } else {
            self.idle.fetch_add(1, Ordering::SeqCst);
            self.wake.wait(&mut queue);
            self.idle.fetch_sub(1, Ordering::SeqCst);
        }
    }

    /// Stops for good: wakes every condvar sleeper (the caller kicks the standby) and
    /// hands back what was queued, to be dropped outside the lock.
    pub(crate) fn stop(&self) -> Vec<T> {
        let mut queue = self.queue.lock();
        self.stopped.store(true, Ordering::Release);
        let left: Vec<T> = queue.drain(..).collect();
        self.queued.store(0, Ordering::Release);
        self.wake.notify_all();
        left
    }

    #[cfg(test)]
    pub(crate) fn is_stopped(&self) -> bool {
        self.stopped.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_queue_gives_the_item_back_and_kicks_only_when_nobody_is_idle() {
        let workers = Workers::new(2);
        let mut kicks = 0;
        assert!(workers.push(1, || kicks += 1).is_ok());
        assert!(workers.push(2, || kicks += 1).is_ok());
        assert_eq!(workers.push(3, || kicks += 1), Err(3));
        assert_eq!(kicks, 2, "no condvar sleeper: each push kicks the standby");
        assert!(workers.has_work());
        assert_eq!((workers.pop(), workers.pop(), workers.pop()), (Some(1), Some(2), None));
        assert!(!workers.has_work());
    }

    #[test]
    fn stopping_hands_back_the_queue_and_refuses_more() {
        let workers = Workers::new(4);
        workers.push("a", || {}).unwrap();
        assert_eq!(workers.stop(), ["a"]);
        assert!(workers.is_stopped() && !workers.has_work());
        assert_eq!(workers.push("b", || {}), Err("b"));
        workers.sleep(|| panic!("a stopped server does not sleep"));
    }

    #[test]
    fn a_server_with_work_queued_does_not_sleep() {
        let workers = Workers::new(4);
        workers.push(7, || {}).unwrap();
        workers.sleep(|| panic!("work is queued"));
        assert_eq!(workers.pop(), Some(7));
    }
}

#[cfg(all(test, loom))]
mod loom_model {
    use super::*;
    use loom::sync::Arc;

    /// The doorbell and kick as the standby sees them.
    use crate::runtime::sync::Bell;

    /// `servers` servers, requests queued from another thread (a caller that found
    /// them while polling), some while every server is busy or asleep on the doorbell:
    /// every request is served and every thread ends. A lost wakeup leaves a request
    /// queued with every server asleep, which loom reports as a deadlock.
    fn every_queued_request_is_served(servers: usize) {
        let mut builder = loom::model::Builder::new();
        builder.preemption_bound = Some(3);
        builder.check(move || {
            const REQUESTS: usize = 2;
            let workers = Arc::new(Workers::new(REQUESTS));
            let bell = Arc::new(Bell::default());
            let served = Arc::new((loom::sync::Mutex::new(0usize), loom::sync::Condvar::new()));
            let servers: Vec<_> = (0..servers)
                .map(|_| {
                    let (workers, bell, served) = (workers.clone(), bell.clone(), served.clone());
                    loom::thread::spawn(move || {
                        while !workers.is_stopped() {
                            if let Some(_request) = workers.pop() {
                                workers.hand_over_standby();
                                *served.0.lock().unwrap() += 1;
                                served.1.notify_all();
                                continue;
                            }
                            workers.sleep(|| bell.wait());
                        }
                    })
                })
                .collect();
            for request in 0..REQUESTS {
                let bell = bell.clone();
                assert!(workers.push(request, move || bell.ring()).is_ok());
            }
            // Wait for both to be served, as a caller waits for its responses.
            let mut count = served.0.lock().unwrap();
            while *count < REQUESTS {
                count = served.1.wait(count).unwrap();
            }
            drop(count);
            assert!(workers.stop().is_empty());
            bell.ring();
            for server in servers {
                server.join().unwrap();
            }
        });
    }

    #[test]
    fn loom_one_server_serves_every_queued_request_without_a_timer() {
        every_queued_request_is_served(1);
    }

    #[test]
    fn loom_two_servers_serve_every_queued_request_without_a_timer() {
        every_queued_request_is_served(2);
    }
}
