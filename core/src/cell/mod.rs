//! The cell side: join a hub from the arguments the host passed, announce readiness,
//! serve methods, call the host.

use std::fmt;
use std::fs::File;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::runtime::sync::{Condvar, Mutex, RwLock};

use crate::error::{Error, Result};
use crate::proto::hello;
use crate::runtime::session::{copy_of, CallOptions, Dispatcher, Hooks, Session, SessionConfig};
use crate::shm::{HubInfo, JoinHandoff, JoinRecord, SharedBytes, Side};
use crate::sys::doorbell::{Doorbell, Kick};
use crate::wire::{self, builtin, ControlKind, Hello, Status};

mod attach;
mod options;
mod topics;
pub use options::{CellOptions, JoinArgs};

/// Values of the cell's lifecycle word (region control block, see `docs/PROTOCOL.md`).
const LIFECYCLE_SERVING: u32 = 1;
const LIFECYCLE_LEAVING: u32 = 2;
/// Exit status of a cell whose host went away without GOODBYE (EX_SOFTWARE).
pub const EXIT_HOST_GONE: i32 = 70;

struct CellState {
    log_filter: Arc<RwLock<crate::log::LogFilter>>,
    log_overflow: crate::log::LogOverflow,
    /// Log records dropped for want of room towards the host.
    log_dropped: Arc<std::sync::atomic::AtomicU64>,
    host_goodbye: AtomicBool,
    stopped: Mutex<bool>,
    stopped_cv: Condvar,
    /// Signalled once stopped, for waits that must also end on a signal.
    stopped_kick: Kick,
    on_stop: Mutex<Vec<Box<dyn FnOnce() + Send>>>,
    exit_with_host: bool,
    quiet: bool,
    topics: topics::CellTopics,
}

struct CellHooks {
    state: Arc<CellState>,
}

/// What a cell does with the built-ins its host calls (`builtin::serve_on_cell`).
impl crate::builtin::CellSide for CellState {
    fn set_log_filter(&self, filter: crate::log::LogFilter) {
        *self.log_filter.write() = filter;
    }

    fn topic_attach(&self, attach: crate::builtin::topic::Subscribe) -> Result<crate::builtin::topic::Subscribed> {
        self.topics.attach(attach)
    }

    fn topic_detach(&self, leave: crate::builtin::topic::Leave) {
        self.topics.detach(leave)
    }

    fn topic_ended(&self, name: String) {
        self.topics.ended(&name)
    }
}

impl CellState {
    fn stop(&self) {
        *self.stopped.lock() = true;
        self.stopped_cv.notify_all();
        self.stopped_kick.notify();
        let listeners: Vec<_> = self.on_stop.lock().drain(..).collect();
        for listener in listeners {
            listener();
        }
    }
}

impl Hooks for CellHooks {
    fn builtin(&self, method_id: u32, payload: SharedBytes<'_>) -> Option<Result<Vec<u8>>> {
        crate::builtin::serve_on_cell(&*self.state, method_id, payload)
    }

    fn on_goodbye(&self) {
        self.state.host_goodbye.store(true, Ordering::SeqCst);
        self.state.stop();
    }

    fn on_dead(&self, error: &Error) {
        // Exit before anything else wakes: a `run()` woken by `stop` would otherwise race
        // this exit with its own error and exit status.
        if error.status() == Status::PeerDead
            && self.state.exit_with_host
            && !self.state.host_goodbye.load(Ordering::SeqCst)
        {
            if !self.state.quiet {
                eprintln!("cellshm: {}; exiting", error.message());
            }
            std::process::exit(EXIT_HOST_GONE);
        }
        self.state.stop();
    }
}

/// A join that failed before the link existed: the host closing the socket means it is
/// gone; anything else leaves it unavailable.
fn join_failed(message: String) -> Error {
    let status = if message.contains("closed") { Status::PeerDead } else { Status::Unavailable };
    Error::new(status, message)
}

/// A joined cell. Register methods, then [`Cell::run`]. A cell's `main` is usually no
/// more than this (it is started by a host, never by hand):
///
/// ```no_run
/// use cellshm::{Cell, CallOptions, LinkEnd, Registry};
/// use std::time::Duration;
///
/// let cell = Cell::from_args()?;
/// cell.method("Text.upper", |call| {
///     let upper = call.payload().to_ascii_uppercase();
///     call.reply(&upper)
/// })?;
/// // A cell calls its host as the host calls it.
/// let clock = cell.call("Host.time", b"", &CallOptions::timeout(Duration::from_secs(1)))?;
/// println!("the host says {:?}", clock.bytes());
/// cell.run()?; // serves until the host says goodbye
/// # Ok::<(), cellshm::Error>(())
/// ```
///
/// The examples of [`Hub`](crate::Hub) and [`Supervisor`](crate::Supervisor) run one.
pub struct Cell {
    pub(crate) session: Arc<Session>,
    pub(crate) dispatcher: Arc<RwLock<Dispatcher>>,
    state: Arc<CellState>,
    options: CellOptions,
    hub: HubInfo,
    serving: AtomicBool,
}

impl fmt::Debug for Cell {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cell").field("peer_id", &self.hub.peer_id).field("name", &self.options.name).finish()
    }
}

impl Cell {
    /// Joins from this process's arguments and environment, with options from the
    /// environment.
    pub fn from_args() -> Result<Cell> {
        let args = JoinArgs::parse(std::env::args_os().skip(1))?;
        Cell::join(args, CellOptions::from_env()?)
    }

    /// Joins the hub whose host spawned us through the socket `args` names: out of reach
    /// of other processes first (not dumpable), then asks for the link on a socket pair of
    /// our own and receives the join record, the link's memfds and the doorbell on it;
    /// checks and maps the memfds, sends HELLO (docs/PROTOCOL.md §2).
    pub fn join(args: JoinArgs, options: CellOptions) -> Result<Cell> {
        let started = Instant::now();
        let bootstrap =
            Doorbell::from_inherited(args.doorbell_fd).map_err(|m| Error::new(Status::InvalidArgument, m))?;
        // Before anything of the link is here: from now on no other process of our uid
        // can take our descriptors (pidfd_getfd) or read our memory.
        crate::sys::process::harden();
        let reply = bootstrap.request_join(options.ready_timeout).map_err(join_failed)?;
        drop(bootstrap);
        Cell::join_with(reply, options, started)
    }

    /// Joins a running hub the host did not spawn us for, through its discovery socket
    /// (`@cellshm/<uid>/<hub_name>`, see [`crate::host::attach`]); the host must have
    /// enabled attaching and allow our uid.
    pub fn attach(hub_name: &str, name: &str, mut options: CellOptions) -> Result<Cell> {
        let started = Instant::now();
        // As in `join`: nothing of the link may be reachable through us.
        crate::sys::process::harden();
        let reply = attach::request(hub_name, name, options.ready_timeout)?;
        options.name = name.to_string();
        Cell::join_with(reply, options, started)
    }

    /// The rest of joining, once the join record arrived with the host memory, the cell
    /// memory and the doorbell attached.
    fn join_with(
        (message, fds): (Vec<u8>, Vec<std::os::fd::OwnedFd>),
        options: CellOptions,
        started: Instant,
    ) -> Result<Cell> {
        let protocol = |m: String| Error::new(Status::ProtocolError, m);
        let record = JoinRecord::decode(&message).map_err(protocol)?;
        let mut fds = fds.into_iter();
        let (Some(host_memory), Some(cell_memory), Some(doorbell), None) =
            (fds.next(), fds.next(), fds.next(), fds.next())
        else {
            return Err(protocol("the join record must carry exactly the two memfds and the doorbell".into()));
        };
        let doorbell = Doorbell::from_inherited(std::os::fd::IntoRawFd::into_raw_fd(doorbell))
            .map_err(|m| protocol(format!("the doorbell the host sent: {m}")))?;
        let handoff =
            JoinHandoff { record, host_memory: File::from(host_memory), cell_memory: File::from(cell_memory) };
        let region = handoff.map_as_cell()?;
        let record = handoff.record;
        // Our memfds stay mapped; their descriptors are not needed any more.
        drop((handoff.host_memory, handoff.cell_memory));
        let hub = HubInfo::from(&record);
        let state = Arc::new(CellState {
            log_filter: Arc::new(RwLock::new(options.log_filter.clone())),
            log_overflow: options.log_overflow,
            log_dropped: Arc::new(std::sync::atomic::AtomicU64::new(0)),
            host_goodbye: AtomicBool::new(false),
            stopped: Mutex::new(false),
            stopped_cv: Condvar::new(),
            stopped_kick: Kick::new().map_err(|e| Error::system("creating an eventfd", e))?,
            on_stop: Mutex::new(Vec::new()),
            exit_with_host: options.exit_with_host,
            quiet: options.quiet,
            topics: topics::CellTopics::default(),
        });
        let dispatcher = Arc::new(RwLock::new(Dispatcher::new()));
        crate::builtin::introspect::serve_on(&dispatcher)?;
        let config = SessionConfig {
            side: Side::Cell,
            label: "the host".into(),
            region,
            doorbell,
            wait: options.wait,
            server_wait: options.wait,
            dispatcher: dispatcher.clone(),
            hooks: Box::new(CellHooks { state: state.clone() }),
            max_inbound_streams: crate::runtime::session::MAX_INBOUND_STREAMS,
            stream_threads: crate::runtime::session::STREAM_THREADS,
            default_timeout: options.default_timeout,
            metrics: false,
            stream_window: crate::STREAM_WINDOW,
        };
        // SAFETY: the memfds arrived on the doorbell the host made for this cell alone, so
        // we are the only cell-side session on them.
        let session = unsafe { Session::new(config) }?;
        let _ = state.topics.session.set(Arc::downgrade(&session));
        let link = hello::LinkId { peer_id: record.peer_id, epoch: record.epoch };
        let hello = hello::cell_hello(link, options.protocol_minor, hub.geometry.max_payload());
        let left = options.ready_timeout.saturating_sub(started.elapsed()).max(Duration::from_millis(1));
        let ack = session
            .control_call(ControlKind::Hello, &hello.encode(), left)
            .map_err(|e| e.context("HELLO to the host"))?;
        let mut inline = [0u8; 16];
        inline[..ack.payload_len.min(16) as usize].copy_from_slice(&ack.inline[..ack.payload_len.min(16) as usize]);
        let ack = Hello::decode(&inline[..ack.payload_len.min(16) as usize])
            .map_err(|m| Error::new(Status::ProtocolError, m))?;
        hello::cell_accepts_ack(link, &ack).map_err(|refusal| {
            Error::new(Status::FailedPrecondition, format!("HELLO_ACK refused: {}", refusal.describe(link, "the host")))
        })?;
        Ok(Cell { session, dispatcher, state, options, hub, serving: AtomicBool::new(false) })
    }

    /// Our peer id.
    pub fn peer_id(&self) -> u32 {
        self.hub.peer_id
    }

    /// What the join record said about the hub.
    pub fn hub_info(&self) -> &HubInfo {
        &self.hub
    }

    /// The doorbell fd (readable when the host writes).
    pub fn doorbell_fd(&self) -> i32 {
        self.session.doorbell_fd()
    }

    /// Starts the worker threads and announces `ready` (with retry and backoff within
    /// the ready timeout). Returns at once; [`Cell::run`] also waits.
    pub fn serve(&self) -> Result<()> {
        if self.serving.swap(true, Ordering::SeqCst) {
            return Ok(());
        }
        self.session.start_servers(self.options.workers)?;
        self.session.set_lifecycle(LIFECYCLE_SERVING);
        let ready = crate::builtin::lifecycle::ready_message(
            self.hub.peer_id,
            self.options.announced_pid.unwrap_or_else(std::process::id),
            &self.options.name,
            &self.options.version,
        );
        let give_up = Instant::now() + self.options.ready_timeout;
        let mut pause = Duration::from_millis(5);
        loop {
            let attempt =
                CallOptions::timeout(Duration::from_secs(1).min(give_up.saturating_duration_since(Instant::now())));
            match self.session.call_with(
                builtin::LIFECYCLE_READY_ID,
                Some(builtin::LIFECYCLE_READY),
                ready.len(),
                copy_of(&ready),
                &attempt,
            ) {
                Ok(_) => return Ok(()),
                Err(e)
                    if matches!(
                        e.status(),
                        Status::DeadlineExceeded | Status::Unavailable | Status::ResourceExhausted
                    ) && Instant::now() + pause < give_up =>
                {
                    std::thread::sleep(pause);
                    pause = (pause * 2).min(Duration::from_millis(500));
                }
                Err(e) => return Err(e.context("announcing ready to the host")),
            }
        }
    }

    /// Serves until the host says goodbye (Ok) or goes away (the error).
    pub fn run(&self) -> Result<()> {
        self.serve()?;
        while !self.wait_stopped(Duration::from_secs(3600)) {}
        self.outcome()
    }

    /// Waits up to `timeout` for the cell to stop serving; true if it has.
    pub fn wait_stopped(&self, timeout: Duration) -> bool {
        let mut stopped = self.state.stopped.lock();
        if !*stopped {
            let _ = self.state.stopped_cv.wait_for(&mut stopped, timeout);
        }
        *stopped
    }

    /// Waits until the cell stops serving (true) or a signal handler runs on this
    /// thread (false), without a timer: for a binding's main thread that must handle
    /// signals (Python's `Cell.run` checks for Ctrl-C between waits).
    pub fn wait_stopped_or_signal(&self) -> bool {
        *self.state.stopped.lock() || (self.state.stopped_kick.wait_or_signal() && *self.state.stopped.lock())
    }

    /// Why the cell stopped: Ok after the host's goodbye, the error otherwise (also
    /// while it still serves: SESSION_CLOSED is not reported until it stopped).
    pub fn outcome(&self) -> Result<()> {
        if self.state.host_goodbye.load(Ordering::SeqCst) {
            return Ok(());
        }
        match self.session.failure() {
            Some(e) => Err(e),
            None if self.is_stopped() => Err(Error::new(Status::SessionClosed, "the cell stopped")),
            None => Ok(()),
        }
    }

    /// Sends a log line to the host at INFO level (`cellshm.Log.event`).
    pub fn log(&self, line: &str) -> Result<()> {
        self.log_event(wire::log_level::INFO, "", line)
    }

    /// Sends a log record to the host: `level` from [`wire::log_level`], `target` the
    /// logger or module it comes from.
    /// Records the host's filter excludes are not sent at all; one that finds the ring
    /// full is dropped and counted ([`Cell::log_records_dropped`]), never waited for
    /// (unless [`crate::CellOptions::log_overflow`] says so).
    pub fn log_event(&self, level: u32, target: &str, message: &str) -> Result<()> {
        self.log_sender().send(level, target, message)
    }

    /// Sends a record with its own timestamp, source location and structured fields.
    pub fn log_record(&self, record: &wire::LogEvent) -> Result<()> {
        self.log_sender().send_event(record)
    }

    /// Log records dropped so far because the ring or pool towards the host was full.
    pub fn log_records_dropped(&self) -> u64 {
        self.state.log_dropped.load(Ordering::Relaxed)
    }

    /// A handle sending log records after the host's filter (for `tracing` layers and
    /// other threads).
    pub fn log_sender(&self) -> crate::log::LogSender {
        crate::log::LogSender {
            session: Arc::downgrade(&self.session),
            filter: self.state.log_filter.clone(),
            overflow: self.state.log_overflow,
            dropped: self.state.log_dropped.clone(),
        }
    }

    /// True if a record of `level` from `target` passes the host's filter.
    pub fn log_enabled(&self, level: u32, target: &str) -> bool {
        self.state.log_filter.read().enabled(level, target)
    }

    /// Runs `callback` once when the cell stops serving (the host said goodbye, went
    /// away, or the cell was closed); at once if it already has.
    pub fn on_stop(&self, callback: impl FnOnce() + Send + 'static) {
        let mut listeners = self.state.on_stop.lock();
        if *self.state.stopped.lock() {
            drop(listeners);
            callback();
        } else {
            // `stop` sets the flag before draining the listeners under this lock, so a
            // listener pushed here either runs there or saw the flag above.
            listeners.push(Box::new(callback));
        }
    }

    /// True once the cell has stopped serving.
    pub fn is_stopped(&self) -> bool {
        *self.state.stopped.lock()
    }

    /// Tells the host we are leaving on purpose, then stops serving.
    pub fn goodbye(&self) -> Result<()> {
        let result = self.session.call_with(
            builtin::LIFECYCLE_GOODBYE_ID,
            Some(builtin::LIFECYCLE_GOODBYE),
            0,
            |_| 0,
            &CallOptions::timeout(Duration::from_secs(1)),
        );
        self.session.set_lifecycle(LIFECYCLE_LEAVING);
        let _ = self.session.send_goodbye();
        self.state.host_goodbye.store(true, Ordering::SeqCst);
        self.session.close();
        result.map(drop)
    }

    /// Writes raw bytes into the ring towards the host. Only for tests proving the host
    /// survives a misbehaving cell.
    #[doc(hidden)]
    pub fn push_raw_descriptor_for_tests(&self, bytes: [u8; 64]) -> Result<()> {
        self.session.push_raw_for_tests(bytes)
    }
}

impl Drop for Cell {
    fn drop(&mut self) {
        self.state.host_goodbye.store(true, Ordering::SeqCst);
        self.session.close();
    }
}
