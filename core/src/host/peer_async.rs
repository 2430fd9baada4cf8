//! A peer's own futures (its calls are the [`crate::LinkEnd`] futures): readiness and a
//! graceful shutdown, woken by the peer's state changes and the link's alarms, on any
//! executor, with no thread and no timer of their own.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use super::peer::{Peer, PeerRecord, PeerState};
use crate::error::{Error, Result};
use crate::runtime::session::Room;
use crate::wire::Status;

/// Tells one future's waker from the others in a peer's record.
fn next_key() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// Wakes `waker` at the peer's next state change.
fn wake_on_state_change(record: &mut PeerRecord, key: u64, waker: &Waker) {
    match record.state_wakers.iter_mut().find(|(k, _)| *k == key) {
        Some((_, registered)) => {
            if !registered.will_wake(waker) {
                *registered = waker.clone();
            }
        }
        None => record.state_wakers.push((key, waker.clone())),
    }
}

impl Peer {
    /// [`Peer::wait_ready`] as a future, on any executor: ready, or the reason it died
    /// first (or UNAVAILABLE if it is leaving). No timeout of its own and no thread: the
    /// state change wakes the task; bound it with your runtime's timeout
    /// (`tokio::time::timeout(d, peer.wait_ready_async())`).
    pub fn wait_ready_async(&self) -> ReadyFuture {
        ReadyFuture { peer: self.clone(), key: next_key() }
    }

    /// [`Peer::shutdown`] as a future: asks the cell to leave (GOODBYE), waits up to
    /// `grace` for it to go, then closes the link. Done once the link is closed. The
    /// cell's exit wakes it, or the link's alarm when the grace is over; a GOODBYE that
    /// finds the ring full is not waited for (the link is closed at once). Dropping the
    /// future before it is done closes the link at once.
    pub fn shutdown_async(&self, grace: Duration) -> ShutdownFuture {
        let mut future = ShutdownFuture { peer: self.clone(), key: next_key(), until_ns: 0, done: false };
        let Ok(session) = self.inner.session() else {
            future.done = true;
            return future;
        };
        self.inner.host_said_goodbye.store(true, Ordering::SeqCst);
        if session.send_goodbye_within(Room::AtOnce).is_ok() {
            future.until_ns = crate::sys::clock::deadline_after(grace);
        }
        future
    }
}

/// The future of [`Peer::wait_ready_async`]. Dropping it forgets its waker.
#[derive(Debug)]
#[must_use = "futures do nothing unless awaited"]
pub struct ReadyFuture {
    peer: Peer,
    key: u64,
}

impl Future for ReadyFuture {
    type Output = Result<()>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<()>> {
        let mut record = self.peer.inner.record.lock();
        let name = &self.peer.inner.name;
        match &record.state {
            PeerState::Ready => Poll::Ready(Ok(())),
            PeerState::Dead(e) => {
                Poll::Ready(Err(e.clone().context(format!("cell {name:?} died before it was ready"))))
            }
            PeerState::Leaving => {
                Poll::Ready(Err(Error::new(Status::Unavailable, format!("cell {name:?} is leaving"))))
            }
            PeerState::Starting | PeerState::Joined => {
                wake_on_state_change(&mut record, self.key, cx.waker());
                Poll::Pending
            }
        }
    }
}

impl Drop for ReadyFuture {
    fn drop(&mut self) {
        self.peer.inner.record.lock().state_wakers.retain(|(key, _)| *key != self.key);
    }
}

/// The future of [`Peer::shutdown_async`].
#[derive(Debug)]
#[must_use = "a shutdown future closes the link at once when dropped unawaited"]
pub struct ShutdownFuture {
    peer: Peer,
    key: u64,
    /// When the grace is over (0: close at once).
    until_ns: u64,
    done: bool,
}

impl ShutdownFuture {
    fn close(&mut self) {
        self.done = true;
        self.peer.inner.record.lock().state_wakers.retain(|(key, _)| *key != self.key);
        let name = &self.peer.inner.name;
        self.peer.close_with(Error::new(Status::SessionClosed, format!("cell {name:?} was shut down")));
    }
}

impl Future for ShutdownFuture {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.done {
            return Poll::Ready(());
        }
        let over = crate::monotonic_now_ns() >= self.until_ns;
        let gone = {
            let mut record = self.peer.inner.record.lock();
            let gone = matches!(record.state, PeerState::Dead(_));
            if !gone && !over {
                wake_on_state_change(&mut record, self.key, cx.waker());
            }
            gone
        };
        if gone || over {
            self.close();
            return Poll::Ready(());
        }
        match self.peer.inner.session() {
            Ok(session) => session.wake_at(self.until_ns, cx.waker()),
            Err(_) => {
                self.close();
                return Poll::Ready(());
            }
        }
        Poll::Pending
    }
}

impl Drop for ShutdownFuture {
    fn drop(&mut self) {
        if !self.done {
            self.close();
        }
    }
}
