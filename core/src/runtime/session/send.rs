//! Sending: pushing descriptors and payloads to the peer, waiting for ring and pool
//! space within the caller's deadline, ringing the doorbell when the peer sleeps.

use super::*;

/// How long a sender waits for room in the send ring or the slot pool.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Room {
    /// Until the deadline it is given (a blocking sender).
    UntilDeadline,
    /// Not at all: no room is RESOURCE_EXHAUSTED at once (a future, which waits for
    /// room with [`Session::wait_for_room`] instead, or a sender that must not wait).
    AtOnce,
}

impl Room {
    /// When a sender with this patience and `deadline_ns` gives up.
    pub(crate) fn give_up(self, deadline_ns: u64) -> u64 {
        // A give-up time in the past: one attempt at the pool and one at the ring.
        const AT_ONCE: u64 = 1;
        match self {
            Room::UntilDeadline => deadline_ns,
            Room::AtOnce => AT_ONCE,
        }
    }
}

/// Whether an attempt with [`Room::AtOnce`] failed only for want of room (then it may
/// be tried again once [`Session::wait_for_room`] wakes its future).
pub(crate) fn found_no_room(e: &Error) -> bool {
    e.status() == Status::ResourceExhausted
}

impl Session {
    /// Wakes `waker` when room may have appeared in the send ring or pool (the standby
    /// looks again `ROOM_RETRY` later), or when the link fails.
    pub(crate) fn wait_for_room(&self, waker: &std::task::Waker) {
        self.wake_at(crate::sys::clock::deadline_after(ROOM_RETRY), waker);
    }

    /// Wakes `waker` at `at_ns` (CLOCK_MONOTONIC), or when the link fails: for futures
    /// with a time limit that is no call's deadline. Needs the standby (a host's links
    /// always have one; a cell's once it serves).
    pub(crate) fn wake_at(&self, at_ns: u64, waker: &std::task::Waker) {
        if self.alarms.wake_at(at_ns, waker) {
            self.standby_kick.notify();
        }
        // `fail` marks the link failed, then fires every alarm: registered before that
        // fire, we are woken by it; after it, we see the mark.
        if self.failed.load(Ordering::Acquire) {
            self.alarms.fire(u64::MAX);
        }
    }

    pub(super) fn fill_body(
        &self,
        max_len: usize,
        deadline_ns: u64,
        fill: impl FnOnce(&mut [u8]) -> usize,
    ) -> Result<OutBody> {
        let overfilled = |n: usize| {
            Error::new(
                Status::InvalidArgument,
                format!("the fill function reported {n} bytes written into a {max_len}-byte buffer"),
            )
        };
        if max_len <= INLINE_CAPACITY {
            let mut buf = [0u8; INLINE_CAPACITY];
            let n = fill(&mut buf[..max_len]);
            return if n <= max_len { Ok(OutBody::Inline(buf, n)) } else { Err(overfilled(n)) };
        }
        let mut slot = self.alloc_slot(max_len, deadline_ns)?;
        let n = fill(&mut slot.buffer()[..max_len]);
        if n > max_len {
            self.tx_pool.lock().free_unsent(slot);
            return Err(overfilled(n));
        }
        Ok(OutBody::Slot(slot, n))
    }

    pub(super) fn give_up_at(deadline_ns: u64) -> u64 {
        if deadline_ns != 0 {
            deadline_ns
        } else {
            crate::sys::clock::deadline_after(SEND_TIMEOUT)
        }
    }

    pub(super) fn alloc_slot(&self, len: usize, deadline_ns: u64) -> Result<OutSlot> {
        if len > self.tx_max_payload {
            return Err(Error::new(
                Status::PayloadTooLarge,
                format!(
                    "payload of {len} bytes exceeds the largest slot ({} bytes) towards {}",
                    self.tx_max_payload, self.label
                ),
            ));
        }
        let give_up = Self::give_up_at(deadline_ns);
        let mut backoff = Backoff::new();
        loop {
            self.check_open()?;
            match self.tx_pool.lock().alloc(len) {
                Ok(Some(slot)) => return Ok(slot),
                Ok(None) => {}
                Err(m) => {
                    self.protocol_error(&m);
                    return Err(Error::new(Status::ProtocolError, m));
                }
            }
            if monotonic_now_ns() >= give_up {
                return Err(Error::new(
                    Status::ResourceExhausted,
                    format!("no free {len}-byte slot towards {} before the deadline (all are in flight)", self.label),
                ));
            }
            if backoff.sleeping() && !self.doorbell.is_alive() {
                self.peer_dead();
                self.check_open()?;
            }
            backoff.snooze();
        }
    }

    pub(super) fn send(&self, mut d: Descriptor, body: OutBody, deadline_ns: u64) -> Result<()> {
        let (frame, slot) = match body {
            OutBody::Inline(bytes, n) => (Frame::inline(d, &bytes[..n]), None),
            OutBody::Slot(s, n) => {
                d.slot = s.slot;
                d.slot_gen = s.generation;
                d.payload_len = n as u32;
                (Frame::bare(d), Some(s))
            }
        };
        let len = frame.desc.payload_len as u64;
        match self.push(&frame, deadline_ns) {
            // On success the slot belongs to the receiver until it comes back on the
            // return ring; the `OutSlot` handle (no destructor) is simply let go.
            Ok(()) => {
                self.count(control::BYTES_SENT, len);
                Ok(())
            }
            Err(e) => {
                if let Some(s) = slot {
                    self.tx_pool.lock().free_unsent(s);
                }
                Err(e)
            }
        }
    }

    pub(super) fn push(&self, frame: &Frame, deadline_ns: u64) -> Result<()> {
        let words = frame.to_words();
        let reserve = if frame.desc.flags & flags::DATA != 0 { self.bulk_reserve } else { 0 };
        let mut give_up = 0;
        let mut backoff = Backoff::new();
        loop {
            self.check_open()?;
            let pushed = self.tx_ring.lock().try_push_tagged_leaving(words, reserve);
            match pushed {
                Ok(()) => break,
                Err(PushError::Corrupt(c)) => {
                    self.protocol_error(format_args!("send ring cursor corrupt ({c:?})"));
                    return self.check_open();
                }
                Err(PushError::Full) => {
                    // Make sure the receiver is awake to drain it.
                    self.ring_doorbell_if_parked();
                    // A peer that died with its ring full is seen here, not after the
                    // deadline: nobody else may be polling its doorbell.
                    if backoff.sleeping() && !self.doorbell.is_alive() {
                        self.peer_dead();
                        return self.check_open();
                    }
                    if give_up == 0 {
                        give_up = Self::give_up_at(deadline_ns);
                    }
                    if monotonic_now_ns() >= give_up {
                        return Err(Error::new(
                            Status::ResourceExhausted,
                            format!("ring towards {} stayed full until the deadline", self.label),
                        ));
                    }
                    backoff.snooze();
                }
            }
        }
        self.ring_doorbell_if_parked();
        // The ring had room: send what is owed too.
        self.flush_owed();
        Ok(())
    }

    /// Runs `change` on the link, mirrors in `owes` whether the link now owes the peer
    /// frames (under its lock, as `owes` requires), and sends what it owes.
    pub(super) fn owing<R>(&self, change: impl FnOnce(&mut LinkState) -> R) -> R {
        let result = {
            let mut link = self.link.lock();
            let result = change(&mut link);
            self.owes.store(link.owes(), Ordering::Release);
            result
        };
        self.flush_owed();
        result
    }

    /// Sends the control frames the link owes the peer (PONG, HELLO_ACK, CANCEL,
    /// refusals) while the ring has room, without waiting: what does not fit stays owed
    /// for the next attempt.
    pub(super) fn flush_owed(&self) {
        if !self.owes.load(Ordering::Acquire) {
            return;
        }
        let mut sent = false;
        loop {
            let next = {
                let mut link = self.link.lock();
                let next = link.poll_transmit();
                self.owes.store(link.owes(), Ordering::Release);
                next
            };
            let Some(d) = next else { break };
            let pushed = self.tx_ring.lock().try_push_tagged(Frame::bare(d).to_words());
            match pushed {
                Ok(()) => sent = true,
                Err(PushError::Full) => {
                    let mut link = self.link.lock();
                    link.retransmit_first(d);
                    self.owes.store(true, Ordering::Release);
                    break;
                }
                Err(PushError::Corrupt(c)) => {
                    self.protocol_error(format_args!("send ring cursor corrupt ({c:?})"));
                    return;
                }
            }
        }
        if sent {
            self.ring_doorbell_if_parked();
        }
    }

    /// Lets go of a payload that was filled but will not be sent.
    pub(super) fn discard(&self, body: OutBody) {
        if let OutBody::Slot(slot, _) = body {
            self.tx_pool.lock().free_unsent(slot);
        }
    }

    pub(super) fn ring_doorbell_if_parked(&self) {
        if handshake::must_ring(self.region.parked(other(self.side))) && self.doorbell.ring() == Signal::PeerDead {
            self.peer_dead();
        }
    }

    pub(super) fn send_control(&self, kind: ControlKind, msg_id: u64, payload: &[u8]) -> Result<()> {
        self.send_control_until(kind, msg_id, payload, 0)
    }

    pub(super) fn send_control_until(
        &self,
        kind: ControlKind,
        msg_id: u64,
        payload: &[u8],
        deadline_ns: u64,
    ) -> Result<()> {
        let mut inline = [0u8; INLINE_CAPACITY];
        inline[..payload.len()].copy_from_slice(payload);
        self.send(frames::control(msg_id, kind), OutBody::Inline(inline, payload.len()), deadline_ns)
    }
}
