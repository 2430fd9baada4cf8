//! The recipe of a supervised cell and its checks.

use super::*;

/// When and how often a crashed cell is started again.
#[derive(Clone, Debug)]
pub struct RestartPolicy {
    /// Relaunches allowed within `reset_after`; one more crash and the cell is Failed.
    pub max_restarts: u32,
    /// Delay before the first relaunch; doubled after each crash.
    pub initial_backoff: Duration,
    /// Upper bound of the delay.
    pub max_backoff: Duration,
    /// A cell that stayed up this long has its restart count reset.
    pub reset_after: Duration,
}

impl RestartPolicy {
    /// Checks the policy; the error (INVALID_ARGUMENT) names what is wrong.
    pub fn validate(&self) -> Result<()> {
        if self.initial_backoff > self.max_backoff {
            return Err(Error::new(
                Status::InvalidArgument,
                format!(
                    "initial_backoff {} ms is above max_backoff {} ms",
                    self.initial_backoff.as_millis(),
                    self.max_backoff.as_millis()
                ),
            ));
        }
        Ok(())
    }
}

impl Default for RestartPolicy {
    fn default() -> Self {
        RestartPolicy {
            max_restarts: 5,
            initial_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_secs(5),
            reset_after: Duration::from_secs(60),
        }
    }
}

/// How a supervisor tells a cell that is alive but cannot serve (its handler threads
/// deadlocked or stuck) from one that works: a `cellshm.Lifecycle.heartbeat` call every
/// `interval`, answered from the cell's handler threads. A cell that leaves more than
/// `allowed_misses` heartbeats in a row unanswered (each had `interval` to be answered)
/// is killed and relaunched as [`ExitReason::Unresponsive`]: `interval × (allowed_misses
/// + 1)` after the first heartbeat it left unanswered was sent. The first is sent as the
/// cell becomes ready (a cell that never answers is killed that long after it was
/// ready); one that stops answering later is killed at most `interval × (allowed_misses
/// + 2)` after it stopped (it may stop just after answering one).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Heartbeat {
    /// Time between heartbeats, and the time each has to be answered.
    pub interval: Duration,
    /// Unanswered heartbeats in a row that are tolerated.
    pub allowed_misses: u32,
}

/// The recipe of one logical cell.
///
/// ```
/// use cellshm::{CellSpec, RestartPolicy};
/// use std::time::Duration;
///
/// let spec = CellSpec::new("resizer", "/usr/libexec/app/resizer")
///     .args(["--quality", "90"])
///     .env("RUST_LOG", "info")
///     .heartbeat(Duration::from_secs(1), 2) // killed and relaunched after 3 s unanswered
///     .default_timeout(Duration::from_secs(2))
///     .restart(RestartPolicy { max_restarts: 10, ..RestartPolicy::default() });
/// assert!(spec.restart.validate().is_ok());
/// assert_eq!(spec.args, ["--quality", "90"]);
/// ```
#[derive(Clone, Debug)]
pub struct CellSpec {
    /// The stable name callers use.
    pub name: String,
    /// The program to run.
    pub program: PathBuf,
    /// Its arguments (the join arguments are appended).
    pub args: Vec<String>,
    /// Variables added to the inherited environment.
    pub env: Vec<(String, String)>,
    /// How the host talks to it (wait strategy, server threads).
    pub peer: PeerOptions,
    /// How long it may take to become ready before it counts as crashed.
    pub ready_timeout: Duration,
    /// Relaunch policy.
    pub restart: RestartPolicy,
    /// Heartbeats once it is ready (`None`, the default: none; a hung cell is then
    /// noticed only by the time limits of the calls made to it).
    pub heartbeat: Option<Heartbeat>,
    /// The log filter of every instance (`"warn,mycell=debug"`): given to it in
    /// `CELLSHM_LOG_FILTER` when it starts, and set with `cellshm.Log.set_filter` once it
    /// is ready (for cells that do not read the variable), so it survives relaunches.
    /// `None`: the cell's default (`info`).
    pub log_filter: Option<String>,
}

impl CellSpec {
    /// A spec with default options.
    pub fn new(name: impl Into<String>, program: impl Into<PathBuf>) -> CellSpec {
        CellSpec {
            name: name.into(),
            program: program.into(),
            args: Vec::new(),
            env: Vec::new(),
            peer: PeerOptions::default(),
            ready_timeout: Duration::from_secs(10),
            restart: RestartPolicy::default(),
            heartbeat: None,
            log_filter: None,
        }
    }

    /// Sets the log filter every instance starts with (see [`CellSpec::log_filter`]).
    pub fn log_filter(mut self, filter: impl Into<String>) -> CellSpec {
        self.log_filter = Some(filter.into());
        self
    }

    /// Checks the cell with a heartbeat every `interval` and relaunches it as
    /// unresponsive after more than `allowed_misses` in a row went unanswered.
    pub fn heartbeat(mut self, interval: Duration, allowed_misses: u32) -> CellSpec {
        self.heartbeat = Some(Heartbeat { interval, allowed_misses });
        self
    }

    /// How long a call to this cell may take when its options set no time limit (see
    /// [`PeerOptions::default_timeout`]; [`crate::FOREVER`] for none).
    pub fn default_timeout(mut self, timeout: Duration) -> CellSpec {
        self.peer.default_timeout = Some(timeout);
        self
    }

    /// Adds arguments.
    pub fn args<I: IntoIterator<Item = S>, S: Into<String>>(mut self, args: I) -> CellSpec {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Adds an environment variable.
    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> CellSpec {
        self.env.push((key.into(), value.into()));
        self
    }

    /// Sets the relaunch policy.
    pub fn restart(mut self, policy: RestartPolicy) -> CellSpec {
        self.restart = policy;
        self
    }
}

pub(super) fn validate(spec: &CellSpec) -> Result<()> {
    crate::host::validate_cell_name(&spec.name)?;
    spec.peer.validate().map_err(|e| e.context(format!("cell {:?}", spec.name)))?;
    spec.restart.validate().map_err(|e| e.context(format!("cell {:?}", spec.name)))?;
    if spec.ready_timeout.is_zero() {
        return Err(Error::new(Status::InvalidArgument, format!("cell {:?}: a ready timeout of 0", spec.name)));
    }
    if spec.program.as_os_str().is_empty() {
        return Err(Error::new(Status::InvalidArgument, format!("cell {:?} has no program", spec.name)));
    }
    if let Some(filter) = &spec.log_filter {
        crate::log::LogFilter::parse(filter)?;
    }
    if spec.heartbeat.is_some_and(|h| h.interval.is_zero()) {
        return Err(Error::new(Status::InvalidArgument, format!("cell {:?}: a heartbeat interval of 0", spec.name)));
    }
    Ok(())
}
