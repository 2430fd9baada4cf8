//! Calling: starting calls, waiting for their answers (polling the ring meanwhile),
//! cancelling them; the `Response` and `PendingCall` a caller holds.

use super::*;

/// A received payload: inline bytes or a held slot, released when dropped.
pub(crate) struct Payload {
    pub(super) session: Arc<Session>,
    pub(super) body: Body,
    /// The private copy of a slot's bytes that `bytes` hands out, made on first use:
    /// the slot itself is in memory the sender can write, so it is never borrowed.
    pub(super) copy: OnceLock<Box<[u8]>>,
}

pub(super) enum Body {
    Inline([u8; INLINE_CAPACITY], usize),
    Slot(InSlot),
}

impl Payload {
    pub(super) fn new(session: Arc<Session>, body: Body) -> Payload {
        Payload { session, body, copy: OnceLock::new() }
    }

    /// The payload where it lies, read through volatile loads.
    pub(crate) fn shared(&self) -> SharedBytes<'_> {
        match &self.body {
            Body::Inline(b, n) => SharedBytes::private(&b[..*n]),
            // SAFETY: the session (and so the mapping) is alive while `self` holds it, and
            // the slot is released only in Drop.
            Body::Slot(s) => unsafe { s.shared() },
        }
    }

    /// The payload as private bytes: inline ones as they are, a slot's copied once.
    pub(crate) fn bytes(&self) -> &[u8] {
        match &self.body {
            Body::Inline(b, n) => &b[..*n],
            Body::Slot(_) => self.copy.get_or_init(|| self.shared().to_vec().into_boxed_slice()),
        }
    }

    pub(crate) fn len(&self) -> usize {
        match &self.body {
            Body::Inline(_, n) => *n,
            Body::Slot(s) => s.len(),
        }
    }
}

impl Drop for Payload {
    fn drop(&mut self) {
        // Once the link failed, nothing is returned into it any more: the peer is gone
        // or dropped, and the slot's next launch has memfds of its own.
        if self.session.failed.load(Ordering::Acquire) {
            return;
        }
        if let Body::Slot(slot) = &self.body {
            if let Err(m) = self.session.rx_pool.release(slot) {
                self.session.protocol_error(m);
            }
        }
    }
}

/// A response: its payload stays in shared memory and its slot goes back to the sender
/// when the `Response` is dropped.
pub struct Response {
    pub(super) payload: Payload,
}

impl Response {
    /// The payload bytes. Payloads larger than 80 bytes are copied out of shared memory
    /// on the first call (the sender could change them under a reference); read them in
    /// place with [`Response::payload`] instead.
    pub fn bytes(&self) -> &[u8] {
        self.payload.bytes()
    }

    /// The payload where it lies, without a copy.
    pub fn payload(&self) -> SharedBytes<'_> {
        self.payload.shared()
    }

    /// Payload length.
    pub fn len(&self) -> usize {
        self.payload.len()
    }

    /// True for an empty payload.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Copies the payload out.
    pub fn to_vec(&self) -> Vec<u8> {
        self.payload.shared().to_vec()
    }
}

impl fmt::Debug for Response {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Response").field("len", &self.len()).finish()
    }
}

/// A call started with `Session::call_start`. Dropping it before completion cancels
/// it (a late response is then dropped and its slot returned).
pub struct PendingCall {
    pub(super) session: Arc<Session>,
    pub(super) msg_id: u64,
    pub(super) waiter: Arc<Waiter>,
    pub(super) method_id: u32,
    pub(super) name: Option<String>,
    pub(super) deadline_ns: u64,
    /// When it was sent, for the link's metrics; 0 once its end was counted.
    pub(super) started_ns: AtomicU64,
}

impl fmt::Debug for PendingCall {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PendingCall").field("msg_id", &self.msg_id).field("done", &self.is_done()).finish()
    }
}

impl PendingCall {
    /// True once the result is in.
    pub fn is_done(&self) -> bool {
        self.waiter.is_done()
    }

    /// The result, once in (`None` before). Returns it once; later calls get an error.
    pub fn try_take(&self) -> Option<Result<Response>> {
        if !self.is_done() {
            return None;
        }
        let result =
            self.session.finish_call(take_result(&self.waiter), self.method_id, self.name.as_deref(), self.deadline_ns);
        self.count_end(result.as_ref().map_or_else(Error::status, |_| Status::Ok));
        Some(result)
    }

    /// Counts the call's end in the link's metrics, once.
    pub(super) fn count_end(&self, status: Status) {
        let started_ns = self.started_ns.swap(0, Ordering::Relaxed);
        if let (Some(metrics), true) = (&self.session.metrics, started_ns != 0) {
            metrics.outgoing.finish_of(self.method_id, status, started_ns, monotonic_now_ns());
        }
    }

    /// Stops waiting and tells the callee (a CANCEL frame its handler sees through
    /// [`Call::is_cancelled`]). Returns true if the call was still outstanding (its
    /// completion callback will then never run); its late response is dropped.
    pub fn cancel(&self) -> bool {
        // The CANCEL is owed: sent now if the ring has room, else with the next frame
        // (a cancel never waits on a full ring).
        self.session.owing(|link| link.give_up(self.msg_id, true).is_some())
    }
}

impl Drop for PendingCall {
    fn drop(&mut self) {
        if !self.is_done() {
            self.cancel();
            self.count_end(Status::Cancelled);
        } else if self.started_ns.load(Ordering::Relaxed) != 0 {
            // Answered, never collected: counted with the status it was answered with.
            let _ = self.try_take();
        }
    }
}

impl Session {
    /// A request's deadline, its filled payload, and when the call started (one clock
    /// read serves the deadline, its check and the metrics); the caller builds its frame.
    pub(super) fn prepare_request(
        &self,
        method_id: u32,
        max_len: usize,
        fill: impl FnOnce(&mut [u8]) -> usize,
        opts: &CallOptions,
        room: Room,
    ) -> Result<(u64, OutBody, u64)> {
        self.check_open()?;
        if method_id == 0 {
            return Err(Error::new(Status::InvalidArgument, "method id 0 is reserved"));
        }
        let now_ns = monotonic_now_ns();
        let deadline_ns = opts.deadline_for_call_starting_at(now_ns, self.default_timeout);
        if deadline_ns != 0 && now_ns >= deadline_ns {
            return Err(Error::new(Status::DeadlineExceeded, "the deadline passed before the call was sent"));
        }
        let body = self.fill_body(max_len, room.give_up(deadline_ns), fill)?;
        // Counted before sending: the peer never sees a call the counter does not include.
        self.count(control::CALLS_SENT, 1);
        Ok((deadline_ns, body, now_ns))
    }

    /// Registers the call of `d` with the link, which gives it its msg id, and sends
    /// it; a link that failed meanwhile refuses it, and its payload is let go.
    pub(super) fn register_and_send(
        &self,
        mut d: Descriptor,
        body: OutBody,
        waiter: &Arc<Waiter>,
        timer: Timer,
        room: Room,
    ) -> Result<u64> {
        let watched = if timer == Timer::Link { d.deadline_ns } else { 0 };
        let registered =
            self.link_watching(watched, |link| link.start_call(waiter.clone(), Answer::Response, d.deadline_ns, timer));
        d.msg_id = match registered {
            Ok(msg_id) => msg_id,
            Err(e) => {
                self.discard(body);
                return Err(e);
            }
        };
        let (msg_id, deadline_ns) = (d.msg_id, d.deadline_ns);
        if let Err(e) = self.send(d, body, room.give_up(deadline_ns)) {
            self.link.lock().give_up(msg_id, false);
            return Err(e);
        }
        Ok(msg_id)
    }

    /// Runs `register` on the link, which then watches `deadline_ns` (0: none) if it
    /// succeeded, and wakes the standby if its sleep ends after that deadline.
    pub(super) fn link_watching<R>(
        &self,
        deadline_ns: u64,
        register: impl FnOnce(&mut LinkState) -> Result<R>,
    ) -> Result<R> {
        let (registered, earlier_deadline) = {
            let mut link = self.link.lock();
            let registered = register(&mut link);
            let watched = registered.is_ok() && deadline_ns != 0;
            if watched {
                self.link_timed.store(true, Ordering::Release);
            }
            // Read under the lock the standby writes it under (see `standby_until`).
            (registered, watched && deadline_ns < self.standby_until.load(Ordering::Acquire))
        };
        if earlier_deadline {
            self.standby_kick.notify();
        }
        registered
    }

    /// Calls `method_id` with a payload written in place by `fill`, and waits for the
    /// response. `name` only improves error messages.
    pub fn call_with(
        self: &Arc<Self>,
        method_id: u32,
        name: Option<&str>,
        max_len: usize,
        fill: impl FnOnce(&mut [u8]) -> usize,
        opts: &CallOptions,
    ) -> Result<Response> {
        let (deadline_ns, body, now_ns) = self.prepare_request(method_id, max_len, fill, opts, Room::UntilDeadline)?;
        let d = frames::request(method_id, deadline_ns);
        let started = self.metrics.as_ref().map(|m| m.outgoing.start(method_id, name, now_ns));
        let waiter = new_waiter();
        // Start polling before the request leaves, so a quick response never finds us
        // parked (which would cost the peer a doorbell syscall).
        let claimed = self.claim_ring();
        let msg_id = match self.register_and_send(d, body, &waiter, Timer::Caller, Room::UntilDeadline) {
            Ok(msg_id) => msg_id,
            Err(e) => {
                if let Some(rx) = claimed {
                    self.release_ring(rx);
                }
                if let Some(started) = started {
                    metrics::MethodTable::finish(started, e.status(), monotonic_now_ns());
                }
                return Err(e);
            }
        };
        let message = self.wait_response(&waiter, msg_id, deadline_ns, claimed);
        let result = self.finish_call(message, method_id, name, deadline_ns);
        if let Some(started) = started {
            let status = result.as_ref().map_or_else(Error::status, |_| Status::Ok);
            metrics::MethodTable::finish(started, status, monotonic_now_ns());
        }
        result
    }

    /// Turns a delivered message into the caller's result. The caller, not the callee,
    /// has the last word on two statuses: a link-local one in a response (a peer that
    /// relays one) is INTERNAL, and CANCELLED after the caller's own deadline passed (it
    /// never cancels a blocking call) is DEADLINE_EXCEEDED.
    pub(super) fn finish_call(
        &self,
        message: Result<Message>,
        method_id: u32,
        name: Option<&str>,
        deadline_ns: u64,
    ) -> Result<Response> {
        let message = message.map_err(|e| self.name_in(e, method_id, name))?;
        if message.desc.flags & flags::ERROR != 0 {
            let text = String::from_utf8_lossy(message.payload.bytes()).into_owned();
            let error = self.received_error(message.desc.status, text, deadline_ns);
            return Err(self.name_in(error, method_id, name));
        }
        Ok(Response { payload: message.payload })
    }

    /// Starts a call nobody blocks on: `on_complete` runs (on a receiving thread) once
    /// the response, an error, or the link's failure is in; then
    /// [`PendingCall::try_take`] returns it. Receiving is done by the server threads,
    /// so the session must have some (a host always does; a cell once it serves).
    pub fn call_start(
        self: &Arc<Self>,
        method_id: u32,
        name: Option<&str>,
        max_len: usize,
        fill: impl FnOnce(&mut [u8]) -> usize,
        opts: &CallOptions,
        on_complete: Completion,
    ) -> Result<PendingCall> {
        self.call_start_within(method_id, name, max_len, fill, opts, on_complete, Room::UntilDeadline)
    }

    /// [`Session::call_start`] that waits for room in the ring and pool as `room` says.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn call_start_within(
        self: &Arc<Self>,
        method_id: u32,
        name: Option<&str>,
        max_len: usize,
        fill: impl FnOnce(&mut [u8]) -> usize,
        opts: &CallOptions,
        on_complete: Completion,
        room: Room,
    ) -> Result<PendingCall> {
        let (deadline_ns, body, now_ns) = self.prepare_request(method_id, max_len, fill, opts, room)?;
        let d = frames::request(method_id, deadline_ns);
        let waiter = Arc::new(Waiter::with_completion(on_complete));
        // Nobody waits on it, so the link watches its deadline (the standby sleeps until
        // the earliest one and fails what expired).
        let msg_id = self.register_and_send(d, body, &waiter, Timer::Link, room)?;
        let started_ns = match &self.metrics {
            Some(metrics) => metrics.outgoing.start(method_id, name, now_ns).at_ns().max(1),
            None => 0,
        };
        Ok(PendingCall {
            session: self.clone(),
            msg_id,
            waiter,
            method_id,
            name: name.map(str::to_owned),
            deadline_ns,
            started_ns: AtomicU64::new(started_ns),
        })
    }

    pub(super) fn name_in(&self, e: Error, method_id: u32, name: Option<&str>) -> Error {
        match (e.status(), name) {
            (Status::Unimplemented, Some(name)) => {
                let message = format!("{} (called as {name:?})", e.message());
                Error::with_code(e.code(), message)
            }
            (Status::DeadlineExceeded, _) => {
                let what = name.map(|n| format!("{n:?}")).unwrap_or_else(|| format!("method {method_id:#010x}"));
                let message = format!("{what} on {}: {}", self.label, e.message());
                Error::with_code(e.code(), message)
            }
            _ => e,
        }
    }

    /// Sends a notification: no response, no waiting beyond a full ring or pool.
    pub fn notify_with(
        self: &Arc<Self>,
        method_id: u32,
        max_len: usize,
        fill: impl FnOnce(&mut [u8]) -> usize,
        opts: &CallOptions,
    ) -> Result<()> {
        self.notify_within_room(method_id, max_len, fill, opts, Room::UntilDeadline)
    }

    /// [`Session::notify_with`] that waits for room in the ring and pool as `room` says.
    pub(crate) fn notify_within_room(
        self: &Arc<Self>,
        method_id: u32,
        max_len: usize,
        fill: impl FnOnce(&mut [u8]) -> usize,
        opts: &CallOptions,
        room: Room,
    ) -> Result<()> {
        let (deadline_ns, body, _) = self.prepare_request(method_id, max_len, fill, opts, room)?;
        let d = frames::notification(self.link.lock().next_msg_id(), method_id, deadline_ns);
        self.send(d, body, room.give_up(deadline_ns))
    }

    /// Sends a notification only if the ring and the pool have room within `patience`
    /// (`None`: right now), else RESOURCE_EXHAUSTED: the telemetry path, where the thread
    /// that logs must never wait on a peer that does not read.
    pub(crate) fn notify_within(
        self: &Arc<Self>,
        method_id: u32,
        body: &[u8],
        patience: Option<Duration>,
    ) -> Result<()> {
        self.check_open()?;
        let give_up = patience.map_or(Room::AtOnce.give_up(0), crate::sys::clock::deadline_after);
        let out = self.fill_body(body.len(), give_up, copy_of(body))?;
        self.count(control::CALLS_SENT, 1);
        // Telemetry carries no deadline on the wire; `give_up` bounds only the wait here.
        let d = frames::notification(self.link.lock().next_msg_id(), method_id, 0);
        self.send(d, out, give_up)
    }

    /// Sends a control frame that expects an answer (HELLO → HELLO_ACK, PING → PONG).
    pub fn control_call(self: &Arc<Self>, kind: ControlKind, payload: &[u8], timeout: Duration) -> Result<Descriptor> {
        self.check_open()?;
        let answer = match kind {
            ControlKind::Hello => Answer::HelloAck,
            ControlKind::Ping => Answer::Pong,
            _ => return Err(Error::new(Status::Internal, format!("{kind:?} expects no answer"))),
        };
        let waiter = new_waiter();
        // The timeout covers the send too: a full ring must not hold a PING or HELLO
        // longer than its caller asked.
        let deadline = crate::sys::clock::deadline_after(timeout);
        let msg_id = self.link.lock().start_call(waiter.clone(), answer, deadline, Timer::Caller)?;
        if let Err(e) = self.send_control_until(kind, msg_id, payload, deadline) {
            self.link.lock().give_up(msg_id, false);
            return Err(e);
        }
        Ok(self.wait_response(&waiter, msg_id, deadline, None)?.desc)
    }

    /// Sends GOODBYE: we are leaving on purpose.
    pub fn send_goodbye(&self) -> Result<()> {
        self.send_control(ControlKind::Goodbye, 0, &[])
    }

    /// Sends GOODBYE, waiting for ring space as `room` says (with `Room::UntilDeadline`:
    /// a while).
    pub(crate) fn send_goodbye_within(&self, room: Room) -> Result<()> {
        self.send_control_until(ControlKind::Goodbye, 0, &[], room.give_up(0))
    }

    /// Sends GOODBYE, waiting for ring space no later than `deadline_ns`.
    pub fn send_goodbye_until(&self, deadline_ns: u64) -> Result<()> {
        self.send_control_until(ControlKind::Goodbye, 0, &[], deadline_ns)
    }

    pub(super) fn wait_response(
        self: &Arc<Self>,
        waiter: &Waiter,
        msg_id: u64,
        deadline_ns: u64,
        claimed: Option<RxGuard<'_>>,
    ) -> Result<Message> {
        match self.wait_polling(waiter, deadline_ns, claimed) {
            Waited::Done => take_result(waiter),
            Waited::Failed(e) => Err(e),
            Waited::DeadlinePassed => {
                if self.link.lock().give_up(msg_id, false).is_some() {
                    return Err(Error::new(Status::DeadlineExceeded, "no response before the deadline"));
                }
                // The response is being delivered right now.
                while !waiter.is_done() {
                    std::hint::spin_loop();
                }
                take_result(waiter)
            }
        }
    }

    /// Waits until `awaited` is done, polling the receive ring itself while it can (the
    /// thread that waits is the one that receives: no thread hop on the fast path), and
    /// sleeping on the doorbell and its own kick once the spin budget is spent. Returns
    /// with the ring let go.
    pub(super) fn wait_polling(
        self: &Arc<Self>,
        awaited: &dyn Awaited,
        deadline_ns: u64,
        mut claimed: Option<RxGuard<'_>>,
    ) -> Waited {
        let budget = self.wait.spin_budget();
        let started = Instant::now();
        // Spinning takes the process's permit too (one spinner per process on two cores).
        let spinner = Spinner::new(SpinPermits::process());
        let may_spin = || budget.is_none_or(|b| started.elapsed() < b) && spinner.may_spin();
        // Set once we slept on the doorbell: a wakeup we drained may have been meant for
        // a descriptor of another waiter, which we then must not swallow.
        let mut slept = false;
        loop {
            if awaited.is_done() {
                if slept {
                    // Someone else delivered what we waited for, but the doorbell byte we
                    // drained may announce another waiter's: pass the wakeup on if the
                    // ring holds anything (a lost wakeup here cost that waiter the 250 ms
                    // recheck).
                    self.after_release();
                }
                return Waited::Done;
            }
            if deadline_ns != 0 && monotonic_now_ns() >= deadline_ns {
                if let Some(rx) = claimed.take() {
                    self.release_ring(rx);
                } else if slept {
                    self.after_release();
                }
                return Waited::DeadlinePassed;
            }
            if let Err(e) = self.check_open() {
                if let Some(rx) = claimed.take() {
                    self.release_ring(rx);
                }
                return Waited::Failed(e);
            }
            if let Some(rx) = claimed.take().or_else(|| self.claim_ring()) {
                // Returns once we are done, the deadline passed, or the spin budget is
                // spent (then the ring is parked and we sleep below).
                self.poll_ring(rx, Poller::Waiting { awaited, deadline_ns, may_spin: &may_spin });
                if awaited.is_done() || may_spin() {
                    continue;
                }
            } else if !few_cores() && may_spin() {
                // Somebody else polls the ring and will deliver what we wait for; on a
                // machine with cores to spare we watch for it without a syscall.
                std::hint::spin_loop();
                continue;
            }
            // Sleep on the doorbell: whoever makes us done kicks us. On two cores or
            // fewer a waiter that does not hold the ring sleeps at once: the holder
            // already spins, and a second spinner would take the core the peer (or the
            // thread that has our answer) needs.
            spinner.stop();
            awaited.sleep_unless_done(&mut || {
                let left =
                    (deadline_ns != 0).then(|| Duration::from_nanos(deadline_ns.saturating_sub(monotonic_now_ns())));
                let timeout = left.map_or(RECHECK, |l| l.min(RECHECK));
                self.waiters_asleep.fetch_add(1, Ordering::Relaxed);
                let woken = match awaited.kick() {
                    Some(own) => self.doorbell.wait(&[&self.kick, own], Some(timeout)),
                    None => self.doorbell.wait(&[&self.kick], Some(timeout)),
                };
                self.waiters_asleep.fetch_sub(1, Ordering::Relaxed);
                slept = true;
                if woken == Wake::PeerDead {
                    self.peer_dead();
                }
                // Pairs with the fence in `release_ring`: after a wakeup we either see the
                // ring released or its holder sees the descriptor that woke us.
                fence(Ordering::SeqCst);
            });
        }
    }
}
