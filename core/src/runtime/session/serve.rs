//! Serving: the server threads, running handlers, answering, the standby server.

use super::*;

impl Session {
    /// Starts `count` server threads, which receive and run handlers. If one cannot be
    /// started, the session is closed and the ones already started are joined: nothing
    /// of the attempt is left running.
    pub fn start_servers(self: &Arc<Self>, count: usize) -> Result<()> {
        let mut servers = self.servers.lock();
        // One of them is always the standby (or about to be), which bounds leases.
        self.has_standby.store(true, Ordering::Relaxed);
        for i in 0..count.max(1) {
            let me = self.clone();
            let started = std::thread::Builder::new()
                .name(format!("cellshm-{}-{i}", label_prefix(&self.label)))
                .spawn(move || me.serve_loop());
            match started {
                Ok(handle) => servers.push(handle),
                Err(e) => {
                    drop(servers);
                    self.close();
                    return Err(Error::system(format!("spawning server thread {} of {count}", i + 1), e));
                }
            }
        }
        Ok(())
    }

    pub(super) fn enqueue(&self, request: Incoming) {
        if let Err(request) = self.workers.push(request, || self.standby_kick.notify()) {
            self.refuse_queued(request);
        }
    }

    /// Answers a request the work queue has no room for with RESOURCE_EXHAUSTED, in one
    /// attempt (the receive path never waits on a send): a flood costs the flooder
    /// errors, not the host memory.
    pub(super) fn refuse_queued(&self, request: Incoming) {
        let Incoming { desc, payload, no_reply } = request;
        drop(payload);
        self.count(control::ERRORS, 1);
        if no_reply {
            return;
        }
        self.refuse(&desc, Status::ResourceExhausted, "queue full");
    }

    /// Owes the peer a refusal of `request` (a RESPONSE or a stream's FINISH with
    /// `status`) and sends it if the ring has room: refusals are decided on the receive
    /// path, which never waits on a send (or a slot).
    pub(crate) fn refuse(&self, request: &Descriptor, status: Status, text: &str) {
        self.owing(|link| link.refuse(request, status, text));
    }

    pub(super) fn serve_loop(self: Arc<Self>) {
        // The ring as claimed by `serve` before it sent its response.
        let mut held: Option<RxGuard<'_>> = None;
        while !self.failed.load(Ordering::Acquire) {
            let queued = if self.workers.has_work() { self.workers.pop() } else { None };
            if let Some(request) = queued {
                if let Some(rx) = held.take() {
                    self.lease_ring(rx);
                }
                held = self.serve(request);
                continue;
            }
            if let Some(rx) = held.take().or_else(|| self.claim_ring()) {
                if let Some(request) = self.poll_ring(rx, Poller::Server) {
                    self.workers.hand_over_standby();
                    held = self.serve(request);
                    continue;
                }
                // The ring is parked: sleep until the doorbell rings.
            }
            self.sleep_server();
        }
        if let Some(rx) = held {
            self.release_ring(rx);
        }
    }

    /// Sleeps until there may be something to do (see `runtime::workers`).
    pub(super) fn sleep_server(&self) {
        if self.failed.load(Ordering::Acquire) {
            return;
        }
        let mut last_seen = None;
        self.workers.sleep(|| loop {
            // No idle timer: the peer rings the doorbell for what it sends while we are
            // parked (the parked handshake, loom-checked), and every local event that
            // needs a receiver (a released ring with descriptors left, queued work with
            // no condvar sleeper, a failure, an earlier deadline to watch, a lease out
            // that nobody watched) kicks. Only work in hand sets a timeout: the deadline
            // of a call nobody waits on, frames owed to a peer whose ring was full, and a
            // lease out on the ring (`runtime::lease`).
            let watched = self.lease.watch(&mut last_seen);
            let timeout = earlier(self.standby_timeout(), watched.map(|_| LEASE));
            let woken = if self.ring_needs_a_poller() {
                Wake::Woken
            } else {
                self.doorbell.wait(&[&self.kick, &self.standby_kick], timeout)
            };
            self.lease.unwatch();
            if woken == Wake::PeerDead {
                self.peer_dead();
            }
            fence(Ordering::SeqCst);
            self.flush_owed();
            self.expire_calls();
            self.alarms.fire(monotonic_now_ns());
            // Back to the serve loop for work, a failure, frames to take, or a lease
            // nobody claimed for a whole lease (the loop takes the ring, then polls or
            // parks it); otherwise (the kick of a new lease, a new deadline, a lease
            // renewed meanwhile) watch on.
            let lease_expired = watched.is_some_and(|e| self.lease.expired(e));
            if self.workers.has_work()
                || self.failed.load(Ordering::Acquire)
                || self.ring_needs_a_poller()
                || lease_expired
            {
                break;
            }
        });
    }

    /// How long the standby may sleep: until the earliest deadline the link watches or
    /// alarm that is due, and no more than `OWED_RETRY` while frames are owed; `None` is
    /// forever.
    pub(super) fn standby_timeout(&self) -> Option<Duration> {
        let owed = self.owes.load(Ordering::Acquire).then_some(OWED_RETRY);
        let alarm = self.alarms.earliest().map(|at| Duration::from_nanos(at.saturating_sub(monotonic_now_ns())));
        let owed = earlier(owed, alarm);
        let deadline = {
            let mut link = self.link.lock();
            let deadline = if self.link_timed.load(Ordering::Acquire) { link.poll_timeout() } else { None };
            if deadline.is_none() {
                self.link_timed.store(false, Ordering::Release);
            }
            // Under the lock deadlines are registered under (see `link_watching`).
            self.standby_until.store(deadline.unwrap_or(u64::MAX), Ordering::Release);
            deadline
        };
        let until_deadline = deadline.map(|d| Duration::from_nanos(d.saturating_sub(monotonic_now_ns())));
        earlier(owed, until_deadline)
    }

    /// Fails the calls nobody waits on whose deadline passed, and stops the streams
    /// whose deadline passed (outside the link's lock: a completion runs the caller's
    /// callback, and a stop wakes the stream's waiters).
    pub(super) fn expire_calls(&self) {
        if !self.link_timed.load(Ordering::Acquire) {
            return;
        }
        let now = monotonic_now_ns();
        loop {
            let expired = self.link.lock().expire(now);
            match expired {
                None => break,
                Some(Expired::Call(waiter)) => {
                    waiter.complete(Err(Error::new(Status::DeadlineExceeded, "no response before the deadline")))
                }
                Some(Expired::Stream(stream)) => self.expire_stream(&stream),
                // The handler's cancel token sees the deadline by the clock; its future
                // must be woken to look.
                Some(Expired::Served(msg_id)) => self.cancelled_calls.wake(msg_id),
            }
        }
    }

    /// Runs one request and sends its response. Returns the receive ring if it claimed
    /// it before sending (so the next message finds this server polling, not parked).
    pub(super) fn serve(self: &Arc<Self>, request: Incoming) -> Option<RxGuard<'_>> {
        let Incoming { desc, payload, no_reply } = request;
        if self.has_retained.load(Ordering::Relaxed) {
            self.release_retained();
        }
        // One look at the handler table per request, whichever way it is served.
        let (handler, access) = {
            let dispatcher = self.dispatcher.read();
            (dispatcher.get(desc.method_id), dispatcher.access_check(desc.method_id))
        };
        let handler = match handler {
            Some(Unary::Async(handler, spawn)) => {
                // Handed to its runtime: this thread receives again at once.
                self.serve_async(&desc, payload, no_reply, handler, &*spawn, access);
                return None;
            }
            Some(Unary::Blocking(handler)) => Some(handler),
            None => None,
        };
        let started = self.metrics.as_ref().map(|m| m.incoming.start(desc.method_id, None, monotonic_now_ns()));
        let (outcome, retain) = self.run_handler(&desc, &payload, handler, access);
        if let Some(started) = started {
            let status = outcome.as_ref().map_or_else(Error::status, |_| Status::Ok);
            metrics::MethodTable::finish(started, status, monotonic_now_ns());
        }
        self.hooks.on_served(desc.method_id, outcome.is_ok());
        let outcome = outcome.map_err(|e| self.status_to_send(e, &desc));
        match retain {
            Some(check) => self.retain(payload, check),
            None => drop(payload),
        }
        self.cancelled_calls.forget(desc.msg_id);
        let claimed = self.claim_ring();
        self.count(control::REQUESTS_SERVED, 1);
        let (body, error) = match outcome {
            Ok(body) => (body, None),
            Err(e) => {
                self.count(control::ERRORS, 1);
                (ReplyBody::Empty, Some(e))
            }
        };
        if no_reply {
            if let Some(e) = error {
                tracing::warn!(peer = %self.label, method_id = desc.method_id, "notification failed: {e}");
            }
            if let ReplyBody::Slot(slot, _) = body {
                self.tx_pool.lock().free_unsent(slot);
            }
            return claimed;
        }
        let response = frames::response(&desc, error.as_ref().map(Error::code));
        let out = match error {
            None => match body {
                ReplyBody::Empty => OutBody::Inline([0; INLINE_CAPACITY], 0),
                ReplyBody::Inline(b, n) => OutBody::Inline(b, n),
                ReplyBody::Slot(s, n) => OutBody::Slot(s, n),
            },
            Some(e) => match self.error_body(e.message(), 0) {
                Ok(body) => body,
                Err(e) => {
                    tracing::warn!(peer = %self.label, "could not send an error response: {e}");
                    return claimed;
                }
            },
        };
        if let Err(e) = self.send(response, out, desc.deadline_ns) {
            tracing::debug!(peer = %self.label, "could not send a response: {e}");
        }
        claimed
    }

    pub(super) fn retain(&self, payload: Payload, check: RetainCheck) {
        tracing::warn!(
            peer = %self.label,
            "a request's zero-copy view outlived its handler: its slot stays held until the view is released"
        );
        self.retained.lock().push((payload, check));
        self.has_retained.store(true, Ordering::Relaxed);
    }

    /// Asks every retained request's check again and lets go of those it allows. The
    /// checks run outside the lock (a binding's check may need its interpreter lock).
    pub(super) fn release_retained(&self) {
        let candidates = std::mem::take(&mut *self.retained.lock());
        let mut still_held = Vec::new();
        for (payload, mut check) in candidates {
            if !check() {
                still_held.push((payload, check));
            }
        }
        let mut retained = self.retained.lock();
        retained.extend(still_held);
        self.has_retained.store(!retained.is_empty(), Ordering::Relaxed);
    }

    /// What a handler's error becomes on the wire: a link-local status is not the
    /// handler's to give (INTERNAL, naming it), and CANCELLED for a call nobody cancelled
    /// but whose deadline passed is DEADLINE_EXCEEDED.
    pub(super) fn status_to_send(&self, e: Error, desc: &Descriptor) -> Error {
        self.error_to_send(e, desc.deadline_ns, self.cancelled_calls.contains(desc.msg_id))
    }

    /// A received error (a response's or a stream's FINISH) as the caller reports it
    /// (see `proto::status::inbound`).
    pub(crate) fn received_error(&self, code: u32, text: String, deadline_ns: u64) -> Error {
        // A peer's longer text is cut as a sender cuts its own: the limit holds both ways.
        let text = match cut_error_text(&text) {
            std::borrow::Cow::Borrowed(_) => text,
            std::borrow::Cow::Owned(cut) => cut,
        };
        match status::inbound(code, deadline_ns, monotonic_now_ns()) {
            Verdict::Keep => Error::with_code(code, text),
            Verdict::LinkLocal(status) => Error::new(
                Status::Internal,
                format!("{} answered {status}, which only a link reports about itself: {text}", self.label),
            ),
            Verdict::Expired => Error::new(Status::DeadlineExceeded, format!("{text} (the call's deadline passed)")),
        }
    }

    /// A handler's error as it goes on the wire (see `proto::status::outbound`).
    pub(crate) fn error_to_send(&self, e: Error, deadline_ns: u64, caller_cancelled: bool) -> Error {
        match status::outbound(e.code(), deadline_ns, monotonic_now_ns(), caller_cancelled) {
            Verdict::Keep => e,
            Verdict::LinkLocal(status) => Error::new(
                Status::Internal,
                format!("the handler answered {status}, which only a link reports about itself: {}", e.message()),
            ),
            Verdict::Expired => {
                Error::new(Status::DeadlineExceeded, format!("{} (the call's deadline passed)", e.message()))
            }
        }
    }

    /// An error's text as a payload, waiting for a slot until `give_up_ns` (0: a while).
    pub(super) fn error_body(&self, message: &str, give_up_ns: u64) -> Result<OutBody> {
        let text = cut_error_text(message);
        let text = text.as_bytes();
        self.fill_body(text.len(), give_up_ns, |buf| {
            buf[..text.len()].copy_from_slice(text);
            text.len()
        })
    }

    /// Runs the handler of a request; also returns the check of a request the handler
    /// retained.
    /// Runs the handler of a request (found in the table with its access rules); also
    /// returns the check of a request the handler retained.
    pub(super) fn run_handler(
        self: &Arc<Self>,
        desc: &Descriptor,
        payload: &Payload,
        handler: Option<Arc<Handler>>,
        access: Option<dispatch::AccessCheck>,
    ) -> (Result<ReplyBody>, Option<RetainCheck>) {
        let mut call = Call {
            msg_id: desc.msg_id,
            request: payload,
            retain: None,
            method_id: desc.method_id,
            deadline_ns: desc.deadline_ns,
            session: self,
            reply: ReplyBody::Empty,
        };
        let outcome = self.run_call(&mut call, handler, access);
        (outcome, call.retain.take())
    }

    /// Checks a caller against a method's access rules (outside the dispatcher's lock: a
    /// policy may take locks of its own); a refusal is counted, and the handler never runs.
    pub(super) fn admit(&self, access: &dispatch::AccessCheck) -> Result<()> {
        let refused = access.check(self.hooks.caller().as_ref());
        if refused.is_err() {
            self.refused.fetch_add(1, Ordering::Relaxed);
        }
        refused
    }

    /// Calls and streams refused by an access rule so far (see [`Dispatcher::allow`]).
    pub fn refused_calls(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    /// The link's metrics now; `None` where none are kept (a cell).
    pub fn metrics(&self) -> Option<LinkSnapshot> {
        let metrics = self.metrics.as_ref()?;
        let builtins = wire::builtin::ALL.iter().map(|name| (wire::method_id(name), name.to_string()));
        let served: std::collections::HashMap<u32, String> =
            self.dispatcher.read().methods().into_iter().map(|(name, id)| (id, name)).chain(builtins).collect();
        Some(LinkSnapshot {
            outgoing: metrics.outgoing.snapshot(&served),
            incoming: metrics.incoming.snapshot(&served),
            open_streams: self.link.lock().open_channels() as u64,
            streams_opened: metrics.streams_opened.load(Ordering::Relaxed),
        })
    }

    pub(super) fn run_call(
        self: &Arc<Self>,
        call: &mut Call<'_>,
        handler: Option<Arc<Handler>>,
        access: Option<dispatch::AccessCheck>,
    ) -> Result<ReplyBody> {
        let (method_id, deadline_ns) = (call.method_id, call.deadline_ns);
        if deadline_ns != 0 && monotonic_now_ns() >= deadline_ns {
            return Err(Error::new(
                Status::DeadlineExceeded,
                format!("the request expired before {} served it", self.label),
            ));
        }
        if let Some(result) = self.hooks.builtin(method_id, call.request.shared()) {
            let bytes = result?;
            return Ok(self.fill_body(bytes.len(), deadline_ns, copy_of(&bytes))?.into());
        }
        if let Some(access) = access {
            self.admit(&access)?;
        }
        let Some(handler) = handler else {
            let side = match self.side {
                Side::Host => "the host",
                Side::Cell => "this cell",
            };
            return Err(Error::new(
                Status::Unimplemented,
                format!("{side} serves no method with id {:#010x}", method_id),
            ));
        };
        match catch_unwind(AssertUnwindSafe(|| handler(call))) {
            Ok(Ok(())) => Ok(std::mem::replace(&mut call.reply, ReplyBody::Empty)),
            Ok(Err(e)) => Err(e),
            Err(panic) => Err(Error::new(
                Status::Internal,
                format!("handler for method {:#010x} panicked: {}", method_id, crate::error::panic_message(&*panic)),
            )),
        }
    }

    /// Writes raw descriptor bytes into our send ring, bypassing every check. Only for
    /// tests that prove the other side survives garbage.
    #[doc(hidden)]
    pub fn push_raw_for_tests(&self, bytes: [u8; 64]) -> Result<()> {
        let words = Frame::bare(Descriptor::decode(&bytes)).to_words();
        self.tx_ring
            .lock()
            .try_push_tagged(words)
            .map_err(|e| Error::new(Status::ResourceExhausted, format!("{e:?}")))?;
        self.ring_doorbell_if_parked();
        Ok(())
    }
}
