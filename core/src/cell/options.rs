//! How a cell joins and serves: its options (from `CELLSHM_*` variables) and the
//! arguments that name its doorbell.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::runtime::session::WaitStrategy;
use crate::wire::{Status, PROTOCOL_VERSION_MINOR};

/// How a cell joins and serves. [`CellOptions::from_env`] reads the `CELLSHM_*` variables.
#[derive(Clone, Debug)]
pub struct CellOptions {
    /// The name announced in `ready` (defaults to the program name).
    pub name: String,
    /// The version announced in `ready`.
    pub version: String,
    /// How long joining may take: waiting for the join record, HELLO, and `ready`
    /// (`CELLSHM_READY_TIMEOUT_MS`, default 10 s).
    pub ready_timeout: Duration,
    /// How threads wait (`CELLSHM_WAIT`: spin, block, adaptive, adaptive:<µs>).
    pub wait: WaitStrategy,
    /// Threads running handlers (`CELLSHM_WORKERS`, default 4).
    pub workers: usize,
    /// No diagnostics on stderr (`CELLSHM_QUIET=1`).
    pub quiet: bool,
    /// How long a call to the host may take when its options set no timeout and no
    /// deadline (`CELLSHM_CALL_TIMEOUT_MS`, a number or `forever`; default
    /// [`crate::DEFAULT_CALL_TIMEOUT`], 30 s; [`crate::FOREVER`]: no limit).
    pub default_timeout: Duration,
    /// The log filter until the host sets another (`CELLSHM_LOG_FILTER`, which a
    /// supervisor sets from its cell spec; default `info`).
    pub log_filter: crate::log::LogFilter,
    /// What a log record does when the ring towards the host is full
    /// (`CELLSHM_LOG_OVERFLOW`: `drop`, the default, or `wait:<ms>`).
    pub log_overflow: crate::log::LogOverflow,
    /// Exit the process when the host goes away (default true: cells die with their host).
    pub exit_with_host: bool,
    /// The minor protocol version announced in HELLO. Only tests of version handling
    /// lower it, to act as an older cell.
    #[doc(hidden)]
    pub protocol_minor: u16,
    /// The pid announced in `ready` instead of ours. Only tests that prove the host
    /// ignores a cell's word about itself set it.
    #[doc(hidden)]
    pub announced_pid: Option<u32>,
}

impl CellOptions {
    /// Defaults, overridden by the `CELLSHM_*` environment variables.
    pub fn from_env() -> Result<CellOptions> {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        let mut o = CellOptions {
            name: std::env::args()
                .next()
                .and_then(|a| PathBuf::from(a).file_name().map(|n| n.to_string_lossy().into_owned()))
                .unwrap_or_else(|| "cell".into()),
            version: String::new(),
            ready_timeout: Duration::from_secs(10),
            wait: WaitStrategy::default(),
            workers: 4,
            quiet: false,
            default_timeout: crate::DEFAULT_CALL_TIMEOUT,
            log_filter: crate::log::LogFilter::default(),
            log_overflow: crate::log::LogOverflow::Drop,
            exit_with_host: true,
            protocol_minor: PROTOCOL_VERSION_MINOR,
            announced_pid: None,
        };
        if let Some(ms) = var("CELLSHM_READY_TIMEOUT_MS") {
            let ms: u64 = ms.parse().map_err(|_| {
                Error::new(
                    Status::InvalidArgument,
                    format!("CELLSHM_READY_TIMEOUT_MS={ms:?} is not a number of milliseconds"),
                )
            })?;
            o.ready_timeout = Duration::from_millis(ms);
        }
        if let Some(w) = var("CELLSHM_WAIT") {
            o.wait = WaitStrategy::parse(&w)?;
        }
        if let Some(n) = var("CELLSHM_WORKERS") {
            o.workers = n.parse().ok().filter(|&n| n > 0).ok_or_else(|| {
                Error::new(Status::InvalidArgument, format!("CELLSHM_WORKERS={n:?} is not a positive number"))
            })?;
        }
        if let Some(t) = var("CELLSHM_CALL_TIMEOUT_MS") {
            o.default_timeout = match t.as_str() {
                "forever" => crate::FOREVER,
                ms => Duration::from_millis(ms.parse().map_err(|_| {
                    Error::new(
                        Status::InvalidArgument,
                        format!("CELLSHM_CALL_TIMEOUT_MS={t:?} is neither a number of milliseconds nor \"forever\""),
                    )
                })?),
            };
        }
        if let Some(filter) = var("CELLSHM_LOG_FILTER") {
            o.log_filter = crate::log::LogFilter::parse(&filter)?;
        }
        if let Some(overflow) = var("CELLSHM_LOG_OVERFLOW") {
            o.log_overflow = crate::log::LogOverflow::parse(&overflow)?;
        }
        o.quiet = var("CELLSHM_QUIET").is_some_and(|v| v != "0");
        Ok(o)
    }
}

/// Where to join: the inherited doorbell, from `CELLSHM_DOORBELL_FD` (set by the host
/// when it spawns the cell) or a `--doorbell-fd=N` argument (appended only when the
/// host was asked to). Everything else arrives on the doorbell.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JoinArgs {
    /// The inherited doorbell fd.
    pub doorbell_fd: i32,
}

impl JoinArgs {
    /// Finds the doorbell in `args` (the program's arguments, without `argv[0]`), else in
    /// the environment. Every other argument is left to the program.
    pub fn parse<I: IntoIterator<Item = OsString>>(args: I) -> Result<JoinArgs> {
        let flag = args
            .into_iter()
            .filter_map(|a| a.to_str().and_then(|a| a.strip_prefix("--doorbell-fd=")).map(str::to_owned))
            .last();
        let (value, origin) =
            match flag {
                Some(v) => (v, "--doorbell-fd"),
                None => match std::env::var("CELLSHM_DOORBELL_FD").ok().filter(|v| !v.is_empty()) {
                    Some(v) => (v, "CELLSHM_DOORBELL_FD"),
                    None => return Err(Error::new(
                        Status::InvalidArgument,
                        "CELLSHM_DOORBELL_FD is not set: this program is a cellshm cell and must be started by a host",
                    )),
                },
            };
        let doorbell_fd = value.parse().map_err(|_| {
            Error::new(Status::InvalidArgument, format!("{origin}={value:?} is not a file descriptor number"))
        })?;
        Ok(JoinArgs { doorbell_fd })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(v: &[&str]) -> Vec<OsString> {
        v.iter().map(OsString::from).collect()
    }

    #[test]
    fn join_args_take_the_flag_else_the_environment_and_leave_other_arguments_alone() {
        let a = JoinArgs::parse(os(&["x", "--verbose", "--doorbell-fd=5", "-n", "3"])).unwrap();
        assert_eq!(a, JoinArgs { doorbell_fd: 5 });
        let e = JoinArgs::parse(os(&["--doorbell-fd=five"])).unwrap_err();
        assert!(e.message().contains("--doorbell-fd=\"five\""), "{e}");
        if std::env::var_os("CELLSHM_DOORBELL_FD").is_none() {
            let e = JoinArgs::parse(os(&["--peer-id=1"])).unwrap_err();
            assert!(e.message().contains("CELLSHM_DOORBELL_FD is not set"), "{e}");
        }
    }
}
