//! Receiving: polling the receive ring, parking and unparking, and routing what
//! arrives (answers to their waiters, requests to the servers, stream frames to their
//! streams).

use super::*;

impl Session {
    /// Polls the receive ring while holding it; returns a request when the poller is a
    /// server that should now run it (the ring has been released by then).
    pub(super) fn poll_ring(self: &Arc<Self>, mut rx: RxGuard<'_>, poller: Poller<'_>) -> Option<Incoming> {
        // Claimed: the parked flag is clear.
        let parked = self.region.parked(self.side);
        // Clock reads and liveness checks happen on the first empty poll and then every
        // CHECK_EVERY empty polls, not on every iteration of the hot loop.
        const CHECK_EVERY: u32 = 64;
        let mut empty_polls: u32 = 0;
        let mut idle_since: Option<Instant> = None;
        let mut last_liveness: Option<Instant> = None;
        let mut frames: u32 = 0;
        let mut drained_after_done: u32 = 0;
        // A server's permit to spin on the empty ring, held until it parks or leaves.
        let server_spinner = Spinner::new(SpinPermits::process());
        loop {
            let popped = match rx.try_pop_tagged() {
                Ok(p) => p,
                Err(c) => {
                    drop(rx);
                    self.protocol_error(format_args!("receive ring cursor corrupt ({c:?})"));
                    self.release_parked();
                    return None;
                }
            };
            if let Some(words) = popped {
                empty_polls = 0;
                if let Some(request) = self.process(Frame::from_words(words)) {
                    match poller {
                        Poller::Server => {
                            // A spinning server claims the ring again once the handler
                            // returns (a handler that runs long hands it to the
                            // standby); a blocking one parks it as it would anyway.
                            self.let_go(rx, self.server_wait);
                            return Some(request);
                        }
                        Poller::Waiting { .. } => self.enqueue(request),
                    }
                }
                if let Poller::Waiting { awaited, deadline_ns, .. } = poller {
                    // A peer that keeps sending must not keep a waiter past its deadline:
                    // the clock is read every CHECK_EVERY frames as well as when idle.
                    frames = frames.wrapping_add(1);
                    let expired = || frames % CHECK_EVERY == 0 && deadline_ns != 0 && monotonic_now_ns() >= deadline_ns;
                    // Once done, what is already in the ring is taken too (up to a ring's
                    // worth) before letting go: a ring let go with frames in it costs
                    // wakeups of other threads to drain it, and those frames are likely
                    // the next ones this waiter wants (a stream's next items).
                    if awaited.is_done() {
                        drained_after_done += 1;
                    }
                    if expired() {
                        self.release_ring(rx);
                        return None;
                    }
                    if drained_after_done > DRAIN_AFTER_DONE {
                        self.let_go(rx, self.wait);
                        return None;
                    }
                }
                continue;
            }
            // Ring empty.
            empty_polls = empty_polls.wrapping_add(1);
            if let Poller::Waiting { awaited, .. } = poller {
                // Done (by what we drained, or another thread delivered it).
                if awaited.is_done() {
                    self.let_go(rx, self.wait);
                    return None;
                }
            }
            if empty_polls % CHECK_EVERY != 1 {
                std::hint::spin_loop();
                continue;
            }
            let now = Instant::now();
            let idle_started = *idle_since.get_or_insert(now);
            let keep_polling = match poller {
                Poller::Waiting { awaited, deadline_ns, may_spin } => {
                    !awaited.is_done() && (deadline_ns == 0 || monotonic_now_ns() < deadline_ns) && may_spin()
                }
                Poller::Server => {
                    self.server_wait.spin_budget().is_none_or(|b| now - idle_started < b) && server_spinner.may_spin()
                }
            };
            if self.failed.load(Ordering::Relaxed) {
                self.release_ring(rx);
                return None;
            }
            if !keep_polling {
                // Park: announce it, then recheck so a descriptor pushed before the
                // announcement is not left behind.
                // The recheck polls the entry, as the pop does: the peer's tail may lie
                // (a tail past an entry it never wrote would fail every park, forever).
                if !handshake::try_park(parked, || rx.next_ready()) {
                    continue;
                }
                drop(rx);
                self.after_release();
                return None;
            }
            if now - *last_liveness.get_or_insert(now) >= LIVENESS_CHECK {
                last_liveness = Some(now);
                if !self.doorbell.is_alive() {
                    drop(rx);
                    self.peer_dead();
                    self.release_parked();
                    return None;
                }
            }
            std::hint::spin_loop();
        }
    }

    /// Takes the receive ring if nobody polls it, ends any lease on it, and says so
    /// (parked = 0) right away. The flag is written only if it changes: the peer reads
    /// its line after every push, and a store would take that line from it.
    pub(super) fn claim_ring(&self) -> Option<RxGuard<'_>> {
        let rx = self.rx_ring.try_lock()?;
        self.lease.end();
        let parked = self.region.parked(self.side);
        if parked.load(Ordering::Relaxed) != 0 {
            parked.store(0, Ordering::Relaxed);
        }
        Some(rx)
    }

    /// Lets go of the ring without parking it: the thread will be back in a moment (see
    /// `runtime::lease`; the standby bounds the lease). Without a standby, parks.
    ///
    /// A waiter asleep on the doorbell (one that did not get the ring) is woken by the
    /// peer's ring only if we park: with one asleep, we do, or its answer could wait for
    /// the lease to run out. (A waiter that falls asleep just after this check costs at
    /// most that: the lease still bounds it.)
    pub(super) fn lease_ring(&self, rx: RxGuard<'_>) {
        if !self.has_standby.load(Ordering::Relaxed) || self.waiters_asleep.load(Ordering::Relaxed) > 0 {
            return self.release_ring(rx);
        }
        let unwatched = self.lease.grant(|| drop(rx));
        if unwatched {
            self.standby_kick.notify();
        }
        // `grant` fenced after letting go, as `after_release` would.
        self.wake_for_frames_left();
    }

    /// A poller that waits with `strategy` lets go of the ring: under a lease if it
    /// spins (it is likely to poll again soon: the next call, the stream's next item,
    /// the end of the handler it is about to run), parked if it blocks.
    pub(super) fn let_go(&self, rx: RxGuard<'_>, strategy: WaitStrategy) {
        if strategy == WaitStrategy::Block {
            self.release_ring(rx);
        } else {
            self.lease_ring(rx);
        }
    }

    pub(super) fn release_parked(&self) {
        self.region.parked(self.side).store(1, Ordering::SeqCst);
    }

    /// Lets go of the ring while it may still hold descriptors: park, then make sure
    /// somebody looks at what is left.
    pub(super) fn release_ring(&self, rx: RxGuard<'_>) {
        self.release_parked();
        drop(rx);
        // `after_release` fences before rechecking the ring: with the SeqCst store of
        // the parked flag above that is the receiver's half of the parked handshake.
        self.after_release();
    }

    pub(super) fn after_release(&self) {
        // Pairs with the fence a woken thread issues before `try_lock`: if it failed to
        // take the ring because we still held it, we see its descriptor here.
        fence(Ordering::SeqCst);
        self.wake_for_frames_left();
    }

    /// After letting go of the ring and a full fence: frames still in it get a poller.
    pub(super) fn wake_for_frames_left(&self) {
        if self.ring_nonempty() {
            self.kick.notify();
            self.standby_kick.notify();
            self.workers.wake_one();
        }
    }

    /// The ring holds frames and nobody will look at them: nobody polls it and no
    /// lease is out (a leaseholder comes back, or the standby takes a lease that stays
    /// unclaimed). A standby that left its sleep for frames somebody else polls would
    /// spin between the serve loop and its sleep.
    pub(super) fn ring_needs_a_poller(&self) -> bool {
        self.ring_nonempty() && !self.rx_ring.is_locked() && !self.lease.is_out()
    }

    /// The entry at our cursor was written for this lap (the peer's tail is not trusted).
    pub(super) fn ring_nonempty(&self) -> bool {
        ring::ready_at(&self.rx_peek, self.rx_peek.load_head(Ordering::Relaxed))
    }

    /// Hands one descriptor to the link and carries out what it decides. Returns
    /// requests for a server to run. Never waits on a send and never runs user code:
    /// answers owed to the peer go out with `flush_owed`, in one attempt.
    pub(super) fn process(self: &Arc<Self>, frame: Frame) -> Option<Incoming> {
        let d = frame.desc;
        let inbound = {
            let mut link = self.link.lock();
            let inbound = link.handle_frame(&d);
            if link.owes() {
                self.owes.store(true, Ordering::Release);
            }
            inbound
        };
        if let Inbound::Violation(error) = inbound {
            self.fail_protocol(error);
            return None;
        }
        let payload = match self.accept_payload(&frame) {
            Ok(payload) => payload,
            Err(error) => {
                // What the link handed out is no longer in its tables: fail it here.
                match inbound {
                    Inbound::Deliver(w) => w.complete(Err(error.clone())),
                    Inbound::Stream(stream, _) => stream.stop(error.clone()),
                    _ => {}
                }
                self.fail_protocol(error);
                return None;
            }
        };
        let request = match inbound {
            Inbound::Deliver(w) => {
                w.complete(Ok(Message { desc: d, payload }));
                self.deliveries.fetch_add(1, Ordering::Relaxed);
                None
            }
            Inbound::Discard | Inbound::Violation(_) => None,
            // Built-in notifications whose order matters (log records) are handled right
            // here, in arrival order, instead of on whichever server thread is free.
            Inbound::Request { no_reply: true } if self.hooks.in_order(d.method_id) => {
                if let Some(Err(e)) = self.hooks.builtin(d.method_id, payload.shared()) {
                    tracing::warn!(peer = %self.label, method_id = d.method_id, "notification failed: {e}");
                }
                None
            }
            Inbound::Request { no_reply } => Some(Incoming { desc: d, payload, no_reply }),
            Inbound::Hello => {
                self.answer_hello(&d, &payload);
                None
            }
            // The caller gave up on a unary call: its handler may see it and stop. The
            // response, if any, is dropped by the caller when it arrives.
            Inbound::Cancelled(msg_id) => {
                self.cancelled_calls.add(msg_id);
                None
            }
            Inbound::Goodbye => {
                self.hooks.on_goodbye();
                None
            }
            Inbound::Open(channel) => {
                self.accept_stream(channel, d, payload);
                None
            }
            Inbound::Stream(stream, frame) => {
                self.on_stream_frame(&stream, frame, d, payload);
                self.deliveries.fetch_add(1, Ordering::Relaxed);
                None
            }
        };
        self.flush_owed();
        request
    }

    /// The payload of an accepted frame: inline bytes, or the slot it names, checked.
    pub(super) fn accept_payload(self: &Arc<Self>, frame: &Frame) -> Result<Payload> {
        let d = &frame.desc;
        let body = if d.is_inline() {
            let (bytes, len) = frame.inline_payload();
            Body::Inline(bytes, len)
        } else {
            let slot = self.rx_pool.accept(d).map_err(|m| {
                Error::new(
                    Status::ProtocolError,
                    format!("{} broke the protocol: bad slot (msg_id {}): {m}", self.label, d.msg_id),
                )
            })?;
            Body::Slot(slot)
        };
        Ok(Payload::new(self.clone(), body))
    }

    /// The cell's HELLO (host side): the hooks decide, the link owes the answer.
    pub(super) fn answer_hello(&self, d: &Descriptor, payload: &Payload) {
        let answer = wire::Hello::decode(payload.bytes())
            .map_err(|m| Error::new(Status::ProtocolError, m))
            .and_then(|hello| self.hooks.on_hello(hello));
        match answer {
            Ok(ack) => self.owing(|link| link.answer_hello(d.msg_id, &ack.encode())),
            Err(e) => self.fail(e),
        }
    }
}

#[derive(Clone, Copy)]
pub(super) enum Poller<'a> {
    /// A thread waiting for something (a call's answer, a stream's change) that receives
    /// meanwhile: requests it finds go to the servers.
    Waiting {
        awaited: &'a dyn Awaited,
        deadline_ns: u64,
        /// Within the spin budget and holding a spin permit.
        may_spin: &'a dyn Fn() -> bool,
    },
    Server,
}

/// Waiting for ring or pool space: spin briefly, then yield, then sleep in short steps.
pub(super) struct Backoff {
    pub(super) step: u32,
}

impl Backoff {
    pub(super) fn new() -> Backoff {
        Backoff { step: 0 }
    }

    /// True once the waits are sleeps: the moment to check that the peer still lives.
    pub(super) fn sleeping(&self) -> bool {
        self.step >= 128
    }

    pub(super) fn snooze(&mut self) {
        self.step += 1;
        if self.step < 64 {
            std::hint::spin_loop();
        } else if self.step < 128 {
            std::thread::yield_now();
        } else {
            std::thread::sleep(Duration::from_micros(100));
        }
    }
}
