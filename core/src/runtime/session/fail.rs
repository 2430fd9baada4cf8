//! Failing a link once: the first fault (the peer died, broke the protocol, or the
//! link was closed) ends every call, stream and waiter with that error.

use super::*;

impl Session {
    /// Fails the session for good: every pending and future call gets `error`.
    pub fn fail(&self, error: Error) {
        if self.failure.lock().is_some() {
            return;
        }
        let error = if error.status() == Status::PeerDead { self.hooks.explain_death(error) } else { error };
        {
            let mut slot = self.failure.lock();
            if slot.is_some() {
                return;
            }
            *slot = Some(error.clone());
        }
        if matches!(error.status(), Status::ProtocolError | Status::SessionClosed) {
            // Drop the peer: it sees EOF on its doorbell now.
            self.doorbell.shutdown();
        }
        // State and death callbacks first, and only then is the failure published: no
        // caller sees this error before the peer is marked dead and its callbacks ran.
        // A callback that calls this session fails at once (see `check_open`).
        *self.failing_thread.lock() = Some(std::thread::current().id());
        self.failing.store(true, Ordering::SeqCst);
        self.hooks.on_dead(&error);
        self.failed.store(true, Ordering::Release);
        let (waiters, streams) = self.link.lock().fail(error.clone());
        for w in waiters {
            w.complete(Err(error.clone()));
        }
        for stream in streams {
            stream.stop(error.clone());
        }
        // Handlers waiting for cancellation, and futures waiting for a time, see the
        // failure now.
        self.cancelled_calls.wake_all();
        self.alarms.fire(u64::MAX);
        // Queued requests and streams are dropped (their slots go nowhere: the link is
        // over) outside the queues' locks; condvar sleepers are woken by `stop`, the
        // standby by the kick.
        drop(self.workers.stop());
        drop(self.stream_pool.stop());
        self.kick.notify();
        self.standby_kick.notify();
    }

    pub(super) fn protocol_error(&self, message: impl fmt::Display) {
        self.fail_protocol(Error::new(Status::ProtocolError, format!("{} broke the protocol: {message}", self.label)));
    }

    pub(super) fn fail_protocol(&self, error: Error) {
        tracing::error!(peer = %self.label, "{}", error.message());
        self.fail(error);
    }

    /// Says whether the link still works, asking the doorbell and the peer's pidfd
    /// without waiting; a dead peer fails the link here and now.
    pub fn check_alive(&self) -> bool {
        if self.failed.load(Ordering::Acquire) {
            return false;
        }
        if !self.doorbell.is_alive() {
            self.peer_dead();
            return false;
        }
        true
    }

    pub(super) fn peer_dead(&self) {
        let how = if self.doorbell.socket_open() { "its process ended" } else { "doorbell closed" };
        self.fail(Error::new(Status::PeerDead, format!("{} is gone ({how})", self.label)));
    }

    /// Closes the session: the peer sees EOF; pending calls fail with SESSION_CLOSED;
    /// server threads stop and are joined, unless called from one of them: then this
    /// returns false and that thread finishes on its own.
    pub fn close(&self) -> bool {
        self.fail(Error::new(Status::SessionClosed, format!("session with {} was closed", self.label)));
        let mut handles: Vec<_> = self.servers.lock().drain(..).collect();
        handles.extend(self.stream_pool.take_threads());
        let me = std::thread::current().id();
        let mut all_joined = true;
        for h in handles {
            if h.thread().id() == me {
                all_joined = false;
            } else {
                let _ = h.join();
            }
        }
        all_joined
    }
}
