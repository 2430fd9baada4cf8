//! How calls wait and when they give up: wait strategies and per-call options.

use std::time::Duration;

use crate::error::{Error, Result};
use crate::wire::Status;

/// How a thread waits for the other side.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WaitStrategy {
    /// Poll the ring without ever sleeping: lowest latency, one core busy while waiting.
    Spin,
    /// Poll for `spin`, then sleep on the doorbell.
    Adaptive {
        /// How long to poll before sleeping.
        spin: Duration,
    },
    /// Sleep on the doorbell at once: no CPU while waiting, a wakeup per message.
    Block,
}

impl Default for WaitStrategy {
    fn default() -> Self {
        WaitStrategy::Adaptive { spin: Duration::from_micros(50) }
    }
}

/// As [`WaitStrategy::parse`] reads it (and `CELLSHM_WAIT` takes it): `spin`, `block`,
/// `adaptive:<microseconds>`.
impl std::fmt::Display for WaitStrategy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WaitStrategy::Spin => f.write_str("spin"),
            WaitStrategy::Block => f.write_str("block"),
            WaitStrategy::Adaptive { spin } => write!(f, "adaptive:{}", spin.as_micros()),
        }
    }
}

impl WaitStrategy {
    /// Parses `spin`, `block`, `adaptive` or `adaptive:<microseconds>`.
    pub fn parse(text: &str) -> Result<WaitStrategy> {
        let bad = || {
            Error::new(
                Status::InvalidArgument,
                format!("wait strategy {text:?}: expected spin, block, adaptive or adaptive:<µs>"),
            )
        };
        match text.trim() {
            "spin" => Ok(WaitStrategy::Spin),
            "block" => Ok(WaitStrategy::Block),
            "adaptive" => Ok(WaitStrategy::default()),
            other => {
                let us = other.strip_prefix("adaptive:").ok_or_else(bad)?;
                let us: u64 = us.trim_end_matches("us").parse().map_err(|_| bad())?;
                Ok(WaitStrategy::Adaptive { spin: Duration::from_micros(us) })
            }
        }
    }

    pub(crate) fn spin_budget(&self) -> Option<Duration> {
        match *self {
            WaitStrategy::Spin => None,
            WaitStrategy::Adaptive { spin } => Some(spin),
            WaitStrategy::Block => Some(Duration::ZERO),
        }
    }
}

/// How long a unary call with neither a timeout nor a deadline may take, unless the
/// peer, the cell or the supervisor says otherwise: waiting forever is asked for
/// explicitly ([`CallOptions::forever`]), never the default.
pub const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// The timeout that means "no limit" ([`CallOptions::forever`]; as a default timeout,
/// calls that set none wait as long as they take).
pub const FOREVER: Duration = Duration::MAX;

/// The instant `timeout` from now; for [`FOREVER`] (or any timeout past what an
/// `Instant` holds), one so far away that waiting until it is waiting forever.
pub(crate) fn instant_after(timeout: Duration) -> std::time::Instant {
    const FAR: Duration = Duration::from_secs(100 * 365 * 24 * 3600);
    let now = std::time::Instant::now();
    now.checked_add(timeout.min(FAR)).unwrap_or(now)
}

/// Per-call options. Reusable: a timeout counts from the start of each call.
///
/// ```
/// use cellshm::{CallOptions, FOREVER};
/// use std::time::Duration;
///
/// let each = CallOptions::timeout(Duration::from_millis(500)); // every call gets 500 ms
/// let never = CallOptions::forever(); // no limit: until answered, cancelled or dead
/// assert_eq!(never.timeout, Some(FOREVER));
/// // A deadline passed on from an incoming call keeps the caller's budget.
/// let deadline = each.deadline_for_call_starting_now(Duration::from_secs(30));
/// let inherited = CallOptions::deadline(deadline);
/// assert_eq!(inherited.deadline_ns, deadline);
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct CallOptions {
    /// Time each call may take, counted from its start. `None` (with no deadline either):
    /// the link's default timeout ([`DEFAULT_CALL_TIMEOUT`] unless configured; streams
    /// have none). [`FOREVER`]: no limit.
    pub timeout: Option<Duration>,
    /// An absolute CLOCK_MONOTONIC deadline in ns (for example `Call::deadline_ns` of
    /// the request being served, to propagate it); 0 = none. With both set, the earlier
    /// one applies.
    pub deadline_ns: u64,
}

impl CallOptions {
    /// Each call may take `timeout` from its start.
    pub fn timeout(timeout: Duration) -> CallOptions {
        CallOptions { timeout: Some(timeout), deadline_ns: 0 }
    }

    /// Every call must finish by the absolute CLOCK_MONOTONIC time `deadline_ns`.
    pub fn deadline(deadline_ns: u64) -> CallOptions {
        CallOptions { timeout: None, deadline_ns }
    }

    /// No time limit: the call waits until it is answered, cancelled or the peer dies.
    pub fn forever() -> CallOptions {
        CallOptions { timeout: Some(FOREVER), deadline_ns: 0 }
    }

    /// The absolute deadline of a call starting now (0 = none), `default_timeout`
    /// applying when the options set neither a timeout nor a deadline.
    pub fn deadline_for_call_starting_now(&self, default_timeout: Duration) -> u64 {
        self.deadline_for_call_starting_at(crate::sys::clock::monotonic_now_ns(), default_timeout)
    }

    /// [`CallOptions::deadline_for_call_starting_now`] for a call starting at `now_ns`
    /// (CLOCK_MONOTONIC), for callers that read the clock anyway.
    pub fn deadline_for_call_starting_at(&self, now_ns: u64, default_timeout: Duration) -> u64 {
        let timeout = match (self.timeout, self.deadline_ns) {
            (None, 0) => Some(default_timeout),
            (timeout, _) => timeout,
        };
        let after = |t: Duration| now_ns.saturating_add(u64::try_from(t.as_nanos()).unwrap_or(u64::MAX)).max(1);
        let from_timeout = timeout.filter(|t| *t != FOREVER).map_or(0, after);
        match (from_timeout, self.deadline_ns) {
            (0, d) | (d, 0) => d,
            (a, b) => a.min(b),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wait_strategy_reads_back_as_it_is_written() {
        let strategies =
            [WaitStrategy::Spin, WaitStrategy::Block, WaitStrategy::Adaptive { spin: Duration::from_micros(300) }];
        for wait in strategies {
            assert_eq!(WaitStrategy::parse(&wait.to_string()).unwrap(), wait);
        }
        assert_eq!(WaitStrategy::parse("adaptive").unwrap(), WaitStrategy::default());
        assert_eq!(WaitStrategy::default().to_string(), "adaptive:50");
        assert_eq!(WaitStrategy::parse("sometimes").unwrap_err().status(), Status::InvalidArgument);
    }
}
