//! What a host-side session asks of the host: HELLO, the lifecycle built-ins, logs, death.

use super::*;
use crate::wire::LogEvent;

/// A log record a cell sent with `cellshm.Log.event`.
#[derive(Debug)]
pub struct LogRecord<'a> {
    /// The cell's name (as given to [`Hub::add_peer`]).
    pub cell: &'a str,
    /// The cell's peer id.
    pub peer_id: u32,
    /// One of [`wire::log_level`].
    pub level: u32,
    /// The logger or module the record comes from (may be empty).
    pub target: &'a str,
    /// The message.
    pub message: &'a str,
    /// When the cell made it (CLOCK_REALTIME ns since the Unix epoch; the arrival time
    /// when the cell did not say).
    pub time_unix_ns: u64,
    /// The source file it was made in (may be empty).
    pub file: &'a str,
    /// The line in `file` (0 = not said).
    pub line: u32,
    /// Its structured fields, in the cell's order.
    pub fields: &'a [(String, String)],
    /// True for the library's own notices ([`crate::log::NoticeLayer`]): `cell` is then
    /// the cell the notice is about, if any, else empty.
    pub notice: bool,
}

/// Receives the log records of every cell of a hub (see [`Hub::set_log_sink`]).
pub type LogSink = Arc<dyn Fn(&LogRecord<'_>) + Send + Sync>;

pub(super) fn log_to_tracing(r: &LogRecord<'_>) {
    let (cell, peer_id, target, message) = (r.cell, r.peer_id, r.target, r.message);
    // `tracing` fields are named at compile time: the cell's fields travel as one.
    let fields: String = r.fields.iter().map(|(k, v)| format!("{k}={v} ")).collect();
    let fields = fields.trim_end();
    let location = if r.file.is_empty() { String::new() } else { format!("{}:{}", r.file, r.line) };
    match r.level {
        wire::log_level::ERROR => tracing::error!(cell, peer_id, target, fields, location, "{message}"),
        wire::log_level::WARN => tracing::warn!(cell, peer_id, target, fields, location, "{message}"),
        wire::log_level::DEBUG => tracing::debug!(cell, peer_id, target, fields, location, "{message}"),
        wire::log_level::TRACE => tracing::trace!(cell, peer_id, target, fields, location, "{message}"),
        _ => tracing::info!(cell, peer_id, target, fields, location, "{message}"),
    }
}

/// Hooks of a host-side session: HELLO, the lifecycle built-ins, death.
pub(super) struct PeerHooks {
    pub(super) peer: Weak<PeerInner>,
}

impl PeerInner {
    pub(super) fn identity(&self) -> PeerIdentity {
        let (pid, uid) = {
            let mut record = self.record.lock();
            if record.uid.is_none() {
                record.uid = record.pid.and_then(crate::sys::process::real_uid);
            }
            (record.pid, record.uid)
        };
        let attached = self.attached.load(std::sync::atomic::Ordering::Relaxed);
        PeerIdentity { peer_id: self.id, name: self.name.clone(), epoch: self.epoch, pid, uid, attached, remote: false }
    }
}

impl Hooks for PeerHooks {
    fn caller(&self) -> Option<PeerIdentity> {
        self.peer.upgrade().map(|p| p.identity())
    }

    fn on_hello(&self, hello: Hello) -> Result<Hello> {
        let peer = self.peer.upgrade().ok_or_else(|| Error::new(Status::SessionClosed, "peer dropped"))?;
        // Any HELLO this host cannot accept drops the peer (PROTOCOL_ERROR shuts the
        // doorbell down), so its slot can be reclaimed at once.
        let link = hello::LinkId { peer_id: peer.id, epoch: peer.epoch };
        hello::host_accepts(link, &hello).map_err(|refusal| {
            Error::new(
                Status::ProtocolError,
                format!("HELLO refused: {}", refusal.describe(link, &format!("cell {}", peer.name))),
            )
        })?;
        peer.set_state(PeerState::Joined);
        Ok(hello::host_ack(link, peer.hub.geometry.max_payload()))
    }

    fn builtin(&self, method_id: u32, payload: SharedBytes<'_>) -> Option<Result<Vec<u8>>> {
        crate::builtin::serve_on_host(&*self.peer.upgrade()?, method_id, payload)
    }

    fn on_served(&self, method_id: u32, ok: bool) {
        if let Some(peer) = self.peer.upgrade() {
            crate::builtin::served_on_host(&*peer, method_id, ok);
        }
    }

    fn on_goodbye(&self) {
        if let Some(peer) = self.peer.upgrade() {
            peer.goodbye();
        }
    }

    fn in_order(&self, method_id: u32) -> bool {
        crate::builtin::in_order(method_id)
    }

    fn explain_death(&self, error: Error) -> Error {
        let Some(peer) = self.peer.upgrade() else { return error };
        let mut message = error.message().to_string();
        // Copies out of the record: the waits below must not hold it.
        let (pidfd, stderr) = {
            let record = peer.record.lock();
            (record.pidfd.as_ref().and_then(|p| p.try_clone().ok()), record.stderr.clone())
        };
        if let Some(pidfd) = &pidfd {
            // EOF on the doorbell comes as the process closes its files on the way out;
            // its exit status follows within microseconds.
            if !pidfd.wait_gone(Duration::from_millis(100)) {
                message.push_str(" (its process is still running)");
            } else if let Some(reason) = pidfd.exit_reason() {
                message = format!("{message}: {reason}");
            }
        }
        if let Some(tail) = &stderr {
            let text = tail.text(Duration::from_millis(100));
            if !text.is_empty() {
                message = format!("{message}; its stderr ended with:\n{text}");
            }
        }
        Error::new(error.status(), message)
    }

    fn on_dead(&self, error: &Error) {
        let Some(peer) = self.peer.upgrade() else {
            return;
        };
        let callbacks: Vec<_> = {
            let mut record = peer.record.lock();
            if matches!(record.state, PeerState::Dead(_)) {
                return;
            }
            record.state = PeerState::Dead(error.clone());
            record.state_changed();
            peer.changed.notify_all();
            record.on_death.drain(..).collect()
        };
        let expected = peer.said_goodbye.load(std::sync::atomic::Ordering::SeqCst)
            || peer.host_said_goodbye.load(std::sync::atomic::Ordering::SeqCst);
        if expected || error.status() == Status::SessionClosed {
            tracing::debug!(cell = %peer.name, peer_id = peer.id, "cell left: {error}");
        } else {
            tracing::warn!(cell = %peer.name, peer_id = peer.id, "peer lost: {error}");
        }
        super::topics::peer_died(&peer.hub, &peer);
        for callback in callbacks {
            run_death_callback(&peer.name, callback, error);
        }
    }
}

/// A death callback that panics is logged; the callbacks after it still run, and the
/// link's failure (which fails every pending call) goes on.
pub(super) fn run_death_callback(cell: &str, callback: DeathCallback, error: &Error) {
    if let Err(panic) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| callback(error))) {
        tracing::error!(cell, "a death callback panicked: {}", crate::error::panic_message(&*panic));
    }
}

/// What the host does with the built-ins its cell calls (`builtin::serve_on_host`).
impl crate::builtin::HostSide for PeerInner {
    fn ready(&self, ready: Ready) {
        tracing::info!(cell = %self.name, peer_id = self.id, pid = ready.pid, version = %ready.version, "cell ready");
        // Ready once the call is counted (on_served): wait_ready returns then.
        self.record.lock().ready = Some(ready);
    }

    fn goodbye(&self) {
        PeerInner::goodbye(self);
    }

    fn log_event(&self, event: LogEvent) {
        let time_unix_ns = if event.time_unix_ns == 0 { wire::unix_now_ns() } else { event.time_unix_ns };
        let record = LogRecord {
            cell: &self.name,
            peer_id: self.id,
            level: event.level,
            target: &event.target,
            message: &event.message,
            time_unix_ns,
            file: &event.file,
            line: event.line,
            fields: &event.fields,
            notice: false,
        };
        let sink = self.hub.log_sink.read().clone();
        match sink {
            Some(sink) => sink(&record),
            None => log_to_tracing(&record),
        }
    }

    fn ready_counted(&self) {
        self.set_state(PeerState::Ready);
    }

    fn peer_id(&self) -> u32 {
        self.id
    }

    fn topic_create(&self, create: crate::builtin::topic::Create) -> Result<()> {
        super::topics::create_for_cell(self, create)
    }

    fn topic_subscribe(
        &self,
        subscribe: crate::builtin::topic::Subscribe,
    ) -> Result<crate::builtin::topic::Subscribed> {
        super::topics::subscribe_for_cell(self, subscribe)
    }

    fn topic_unsubscribe(&self, leave: crate::builtin::topic::Leave) {
        super::topics::unsubscribe_for_cell(self, leave)
    }

    fn topic_close(&self, name: String) {
        super::topics::close_for_cell(self, &name)
    }
}
