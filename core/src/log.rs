//! Log forwarding from cells to their host: the filter a host pushes to a cell
//! (`"warn,mycell=debug"`), applied by the cell before anything is sent, and the
//! `tracing` layer that forwards a Rust cell's events.

use std::fmt::{self, Write as _};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use crate::runtime::sync::RwLock;

use crate::error::{Error, Result};
use crate::runtime::session::Session;
use crate::wire::{self, builtin, log_level, LogEvent};
use crate::Status;

const NAMES: [(&str, u32); 6] = [
    ("off", 0),
    ("error", log_level::ERROR),
    ("warn", log_level::WARN),
    ("info", log_level::INFO),
    ("debug", log_level::DEBUG),
    ("trace", log_level::TRACE),
];

fn level_name(level: u32) -> &'static str {
    NAMES.iter().find(|(_, l)| *l == level).map_or("info", |(n, _)| n)
}

/// Which records a cell sends: a default level and per-target levels, as in
/// `RUST_LOG`: `"warn,mycell=debug,noisy=off"`. A target matches a directive equal to
/// it or starting with it followed by `::` or `.` (so Rust module paths and Python
/// logger names both work); the longest match wins.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogFilter {
    default: u32,
    directives: Vec<(String, u32)>,
}

impl Default for LogFilter {
    /// INFO and more severe, from every target.
    fn default() -> Self {
        LogFilter { default: log_level::INFO, directives: Vec::new() }
    }
}

impl LogFilter {
    /// Parses a filter; an empty string is the default.
    pub fn parse(text: &str) -> Result<LogFilter> {
        let level = |name: &str| {
            NAMES.iter().find(|(n, _)| n.eq_ignore_ascii_case(name.trim())).map(|(_, l)| *l).ok_or_else(|| {
                Error::new(
                    Status::InvalidArgument,
                    format!("log filter {text:?}: {name:?} is not a level (off, error, warn, info, debug, trace)"),
                )
            })
        };
        let mut filter = LogFilter::default();
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            match part.split_once('=') {
                Some((target, lvl)) if !target.trim().is_empty() => {
                    filter.directives.push((target.trim().to_string(), level(lvl)?))
                }
                Some(_) => {
                    return Err(Error::new(Status::InvalidArgument, format!("log filter {text:?}: empty target")))
                }
                None => filter.default = level(part)?,
            }
        }
        Ok(filter)
    }

    /// True if a record of `level` from `target` passes.
    pub fn enabled(&self, level: u32, target: &str) -> bool {
        let matches = |d: &str| {
            target == d || (target.starts_with(d) && matches!(target[d.len()..].chars().next(), Some(':') | Some('.')))
        };
        let limit = self
            .directives
            .iter()
            .filter(|(d, _)| matches(d))
            .max_by_key(|(d, _)| d.len())
            .map_or(self.default, |(_, l)| *l);
        level != 0 && level <= limit
    }
}

impl fmt::Display for LogFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(level_name(self.default))?;
        for (target, level) in &self.directives {
            write!(f, ",{target}={}", level_name(*level))?;
        }
        Ok(())
    }
}

/// What a cell does with a log record when its ring (or its pool) towards the host is
/// full: telemetry must never hold up the thread that logs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LogOverflow {
    /// Drop it at once and count it (the default; `CELLSHM_LOG_OVERFLOW=drop`).
    #[default]
    Drop,
    /// Wait up to this long for room, then drop it and count it
    /// (`CELLSHM_LOG_OVERFLOW=wait:<ms>`).
    Wait(Duration),
}

impl LogOverflow {
    /// Parses `drop` or `wait:<ms>`.
    pub fn parse(text: &str) -> Result<LogOverflow> {
        let bad = || {
            Error::new(
                Status::InvalidArgument,
                format!("log overflow policy {text:?}: expected \"drop\" or \"wait:<ms>\""),
            )
        };
        match text.trim() {
            "drop" => Ok(LogOverflow::Drop),
            other => {
                let ms = other.strip_prefix("wait:").ok_or_else(bad)?;
                Ok(LogOverflow::Wait(Duration::from_millis(ms.trim().parse().map_err(|_| bad())?)))
            }
        }
    }
}

/// Sends a cell's log records to its host, after its filter, never waiting on a full
/// ring longer than its [`LogOverflow`] allows (records that do not fit are dropped and
/// counted). Cheap to clone; usable from any thread; does nothing once the cell is gone.
#[derive(Clone, Debug)]
pub struct LogSender {
    pub(crate) session: Weak<Session>,
    pub(crate) filter: Arc<RwLock<LogFilter>>,
    pub(crate) overflow: LogOverflow,
    pub(crate) dropped: Arc<AtomicU64>,
}

impl LogSender {
    /// True if a record of `level` from `target` would be sent.
    pub fn enabled(&self, level: u32, target: &str) -> bool {
        self.filter.read().enabled(level, target)
    }

    /// Sends one record made now (if the filter lets it through).
    pub fn send(&self, level: u32, target: &str, message: &str) -> Result<()> {
        if !self.enabled(level, target) {
            return Ok(());
        }
        self.send_event(&LogEvent::new(level, target, message))
    }

    /// Sends one record with its own timestamp, location and fields (if the filter lets
    /// it through). A record that finds no room is dropped and counted ([`dropped`]):
    /// that is not an error.
    ///
    /// [`dropped`]: LogSender::dropped
    pub fn send_event(&self, event: &LogEvent) -> Result<()> {
        if !self.enabled(event.level, &event.target) {
            return Ok(());
        }
        let Some(session) = self.session.upgrade() else { return Ok(()) };
        let patience = match self.overflow {
            LogOverflow::Drop => None,
            LogOverflow::Wait(limit) => Some(limit),
        };
        match session.notify_within(builtin::LOG_EVENT_ID, &event.encode(), patience) {
            Err(e) if e.status() == Status::ResourceExhausted => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            other => other,
        }
    }

    /// Records dropped so far because the ring or pool towards the host was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

thread_local! {
    /// Set while a record is being forwarded: anything logged meanwhile is dropped, so
    /// forwarding can never recurse.
    static FORWARDING: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// A `tracing` layer forwarding a Rust cell's events to its host, with their fields as
/// structured fields, their source location and the time they were made. The library's
/// own events (target `cellshm...`) are not forwarded.
///
/// ```no_run
/// use tracing_subscriber::layer::SubscriberExt;
/// let cell = cellshm::Cell::from_args()?;
/// let subscriber = tracing_subscriber::registry().with(cellshm::log::CellLayer::new(cell.log_sender()));
/// tracing::subscriber::set_global_default(subscriber).ok();
/// # Ok::<(), cellshm::Error>(())
/// ```
#[derive(Debug)]
pub struct CellLayer {
    sender: LogSender,
}

impl CellLayer {
    /// A layer sending through `sender` (from [`crate::Cell::log_sender`]).
    pub fn new(sender: LogSender) -> CellLayer {
        CellLayer { sender }
    }
}

/// An event's message and its other fields.
#[derive(Default)]
pub(crate) struct EventFields {
    pub(crate) message: String,
    pub(crate) fields: Vec<(String, String)>,
}

impl tracing::field::Visit for EventFields {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.message, "{value:?}");
        } else if self.fields.len() < wire::MAX_LOG_FIELDS {
            self.fields.push((field.name().to_string(), format!("{value:?}")));
        }
    }

    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        if field.name() == "message" {
            self.message.push_str(value);
        } else if self.fields.len() < wire::MAX_LOG_FIELDS {
            self.fields.push((field.name().to_string(), value.to_string()));
        }
    }
}

/// A `tracing` level as a [`log_level`].
pub(crate) fn level_of(level: &tracing::Level) -> u32 {
    match *level {
        tracing::Level::ERROR => log_level::ERROR,
        tracing::Level::WARN => log_level::WARN,
        tracing::Level::INFO => log_level::INFO,
        tracing::Level::DEBUG => log_level::DEBUG,
        tracing::Level::TRACE => log_level::TRACE,
    }
}

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for CellLayer {
    fn on_event(&self, event: &tracing::Event<'_>, _ctx: tracing_subscriber::layer::Context<'_, S>) {
        let meta = event.metadata();
        if meta.target().starts_with("cellshm") {
            return;
        }
        let level = level_of(meta.level());
        if !self.sender.enabled(level, meta.target()) || FORWARDING.with(|f| f.replace(true)) {
            return;
        }
        let mut visited = EventFields::default();
        event.record(&mut visited);
        let record = LogEvent {
            level,
            target: meta.target().to_string(),
            message: visited.message,
            time_unix_ns: wire::unix_now_ns(),
            file: meta.file().unwrap_or_default().to_string(),
            line: meta.line().unwrap_or(0),
            fields: visited.fields,
        };
        let _ = self.sender.send_event(&record);
        FORWARDING.with(|f| f.set(false));
    }
}

/// A `tracing` layer handing the library's own events (target `cellshm...`, at
/// `max_level` and more severe) to `sink` as [`crate::LogRecord`]s with `notice` set: for
/// hosts that have no `tracing` subscriber of their own (the C API installs one for its
/// log sinks). The event's `cell` and `peer_id` fields, when it has them, fill the
/// record's; the others are its fields.
pub struct NoticeLayer<F> {
    sink: F,
    max_level: u32,
}

impl<F: Fn(&crate::LogRecord<'_>) + Send + Sync + 'static> NoticeLayer<F> {
    /// A layer handing notices of `max_level` (a [`log_level`]) and more severe to `sink`.
    pub fn new(max_level: u32, sink: F) -> NoticeLayer<F> {
        NoticeLayer { sink, max_level }
    }
}

impl<F> fmt::Debug for NoticeLayer<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NoticeLayer").field("max_level", &self.max_level).finish()
    }
}

impl<S: tracing::Subscriber, F: Fn(&crate::LogRecord<'_>) + Send + Sync + 'static> tracing_subscriber::Layer<S>
    for NoticeLayer<F>
{
    fn on_event(&self, event: &tracing::Event<'_>, _ctx: tracing_subscriber::layer::Context<'_, S>) {
        let meta = event.metadata();
        let level = level_of(meta.level());
        if !meta.target().starts_with("cellshm") || level > self.max_level || FORWARDING.with(|f| f.replace(true)) {
            return;
        }
        let mut visited = EventFields::default();
        event.record(&mut visited);
        let take = |fields: &mut Vec<(String, String)>, name: &str| {
            fields.iter().position(|(k, _)| k == name).map(|i| fields.remove(i).1)
        };
        let cell = take(&mut visited.fields, "cell").unwrap_or_default();
        let peer_id = take(&mut visited.fields, "peer_id").and_then(|p| p.parse().ok()).unwrap_or(u32::MAX);
        let record = crate::LogRecord {
            cell: &cell,
            peer_id,
            level,
            target: meta.target(),
            message: &visited.message,
            time_unix_ns: wire::unix_now_ns(),
            file: meta.file().unwrap_or_default(),
            line: meta.line().unwrap_or(0),
            fields: &visited.fields,
            notice: true,
        };
        // A sink that panics loses the notice, nothing else.
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| (self.sink)(&record)));
        FORWARDING.with(|f| f.set(false));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_parse_match_the_longest_target_and_refuse_garbage() {
        let f = LogFilter::parse("warn,mycell=debug,mycell.noisy=off").unwrap();
        assert!(f.enabled(log_level::WARN, "other"));
        assert!(!f.enabled(log_level::INFO, "other"));
        assert!(f.enabled(log_level::DEBUG, "mycell"));
        assert!(f.enabled(log_level::DEBUG, "mycell::db"));
        assert!(!f.enabled(log_level::TRACE, "mycell::db"));
        assert!(!f.enabled(log_level::ERROR, "mycell.noisy"));
        assert!(!f.enabled(log_level::DEBUG, "mycellar"), "a prefix must end at a separator");
        assert_eq!(f.to_string(), "warn,mycell=debug,mycell.noisy=off");
        assert_eq!(LogFilter::parse("").unwrap(), LogFilter::default());
        assert!(LogFilter::parse("loud").unwrap_err().message().contains("not a level"));
        assert!(LogFilter::parse("=debug").is_err());
    }
}
