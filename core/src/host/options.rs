//! How the host talks to one peer, and the checks of what a user passes.

use super::*;

/// Most server threads one peer may have (threads are a bounded resource of the host).
pub const MAX_SERVER_THREADS: usize = 64;

/// The fd a cell finds its doorbell on unless [`PeerOptions::doorbell_fd`] says otherwise.
pub const DEFAULT_DOORBELL_FD: i32 = 3;

/// How the host talks to one peer.
#[derive(Clone, Debug)]
pub struct PeerOptions {
    /// How host threads wait for this peer.
    pub wait: WaitStrategy,
    /// Host threads receiving from this peer and running host methods it calls.
    pub server_threads: usize,
    /// How those threads wait when idle. `Block` by default: host callers poll for their
    /// own responses, so idle servers need not spin (on 2 cores a third spinner costs
    /// milliseconds of scheduling latency).
    pub server_wait: WaitStrategy,
    /// The fd number the doorbell gets in the child (`CELLSHM_DOORBELL_FD` tells it).
    pub doorbell_fd: i32,
    /// Also append `--doorbell-fd=N` to the cell's arguments, for cells that read their
    /// join values from flags. Off by default: the host leaves argv alone.
    pub append_join_args: bool,
    /// Streams the cell may have open towards the host at once; more are refused with
    /// RESOURCE_EXHAUSTED. 1 to 1024, default 64.
    pub max_streams: usize,
    /// Host threads that run the handlers of those streams, at most; a stream beyond
    /// them waits for one to finish its handler. 1 to 1024, default 8.
    pub stream_threads: usize,
    /// Keep the last this many bytes of a spawned cell's stderr and add them to its death
    /// reason (0, the default: the cell's stderr is left alone). Its stderr still reaches
    /// ours, through a thread per cell that passes it on.
    pub stderr_tail: usize,
    /// How long a call to this peer may take when its options set no timeout and no
    /// deadline ([`crate::FOREVER`]: no limit). `None`, the default: the supervisor's
    /// default for cells it launches, else [`crate::DEFAULT_CALL_TIMEOUT`] (30 s).
    pub default_timeout: Option<Duration>,
    /// DATA frames the cell may have in flight per stream towards the host (the host's
    /// receive window), 1 to 1024, default [`crate::STREAM_WINDOW`] (8). Larger windows
    /// keep more in flight for fast streams, at the cost of slots.
    pub stream_window: u32,
}

/// The longest an adaptive wait may spin before it sleeps: beyond it a wait burns a core
/// for nothing a sleep would not do.
pub const MAX_SPIN: Duration = Duration::from_millis(100);

/// The most of a cell's stderr a host keeps for its death reason.
pub const MAX_STDERR_TAIL: usize = 1 << 20;

/// Checks a cell's name, the one rule for every way a cell gets one (spawned, supervised,
/// attached): 1 to `PEER_NAME_MAX` (48) bytes of UTF-8 without control
/// characters (names are shown on one line by `cellshm inspect` and in logs).
pub fn validate_cell_name(name: &str) -> Result<()> {
    let max = crate::shm::PEER_NAME_MAX;
    if name.is_empty() || name.len() > max || name.chars().any(char::is_control) {
        let shown: String = name.chars().take(64).collect();
        return Err(Error::new(
            Status::InvalidArgument,
            format!(
                "cell name {shown:?}{} is not 1 to {max} bytes without control characters",
                if name.chars().count() > 64 { "..." } else { "" }
            ),
        ));
    }
    Ok(())
}

pub(super) fn validate_wait(what: &str, wait: WaitStrategy) -> Result<()> {
    match wait {
        WaitStrategy::Adaptive { spin } if spin > MAX_SPIN => Err(Error::new(
            Status::InvalidArgument,
            format!("{what}: an adaptive spin of {} µs is not in 0..={} µs", spin.as_micros(), MAX_SPIN.as_micros()),
        )),
        _ => Ok(()),
    }
}

impl PeerOptions {
    /// Checks every limit; the error (INVALID_ARGUMENT) names the one broken.
    pub fn validate(&self) -> Result<()> {
        validate_wait("wait", self.wait)?;
        validate_wait("server_wait", self.server_wait)?;
        if !(3..=i32::from(u16::MAX)).contains(&self.doorbell_fd) {
            return Err(Error::new(
                Status::InvalidArgument,
                format!(
                    "doorbell_fd {} is not in 3..=65535 (0, 1 and 2 are stdin, stdout and stderr)",
                    self.doorbell_fd
                ),
            ));
        }
        if self.stderr_tail > MAX_STDERR_TAIL {
            return Err(Error::new(
                Status::InvalidArgument,
                format!("stderr_tail {} is not in 0..={MAX_STDERR_TAIL}", self.stderr_tail),
            ));
        }
        if !(1..=1024).contains(&self.max_streams) {
            return Err(Error::new(
                Status::InvalidArgument,
                format!("max_streams {} is not in 1..=1024", self.max_streams),
            ));
        }
        if !(1..=1024).contains(&self.stream_threads) {
            return Err(Error::new(
                Status::InvalidArgument,
                format!("stream_threads {} is not in 1..=1024", self.stream_threads),
            ));
        }
        if !(1..=MAX_SERVER_THREADS).contains(&self.server_threads) {
            return Err(Error::new(
                Status::InvalidArgument,
                format!("server_threads {} is not in 1..={MAX_SERVER_THREADS}", self.server_threads),
            ));
        }
        if !(1..=crate::proto::stream::MAX_STREAM_WINDOW).contains(&self.stream_window) {
            return Err(Error::new(
                Status::InvalidArgument,
                format!(
                    "stream_window {} is not in 1..={}",
                    self.stream_window,
                    crate::proto::stream::MAX_STREAM_WINDOW
                ),
            ));
        }
        Ok(())
    }
}

impl Default for PeerOptions {
    fn default() -> Self {
        PeerOptions {
            wait: WaitStrategy::default(),
            server_threads: 2,
            server_wait: WaitStrategy::Block,
            doorbell_fd: DEFAULT_DOORBELL_FD,
            append_join_args: false,
            max_streams: crate::runtime::session::MAX_INBOUND_STREAMS,
            stream_threads: crate::runtime::session::STREAM_THREADS,
            stderr_tail: 0,
            default_timeout: None,
            stream_window: crate::STREAM_WINDOW,
        }
    }
}
