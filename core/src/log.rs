//! Log forwarding from cells to their host: the filter a host pushes to a cell
//! (`"warn,mycell=debug"`), applied by the cell before anything is sent, and the
//! `tracing` layer that forwards a Rust cell's events.

use std::fmt::{self, Write as _};
use std::sync::{Arc, Weak};

use parking_lot::RwLock;

use crate::error::{Error, Result};
use crate::runtime::session::{copy_of, CallOptions, Session};
use crate::wire::{self, builtin, log_level};
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

/// Sends a cell's log records to its host, after its filter. Cheap to clone; usable from
/// any thread; does nothing once the cell is gone.
#[derive(Clone, Debug)]
pub struct LogSender {
    pub(crate) session: Weak<Session>,
    pub(crate) filter: Arc<RwLock<LogFilter>>,
}

impl LogSender {
    /// True if a record of `level` from `target` would be sent.
    pub fn enabled(&self, level: u32, target: &str) -> bool {
        self.filter.read().enabled(level, target)
    }

    /// Sends one record (if the filter lets it through).
    pub fn send(&self, level: u32, target: &str, message: &str) -> Result<()> {
        if !self.enabled(level, target) {
            return Ok(());
        }
        let Some(session) = self.session.upgrade() else { return Ok(()) };
        let body = wire::LogEvent { level, target: target.to_string(), message: message.to_string() }.encode();
        session.notify_with(builtin::LOG_EVENT_ID, body.len(), copy_of(&body), &CallOptions::default())
    }
}

thread_local! {
    /// Set while a record is being forwarded: anything logged meanwhile is dropped, so
    /// forwarding can never recurse.
    static FORWARDING: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// A `tracing` layer forwarding a Rust cell's events to its host (fields become
/// `name=value` after the message). The library's own events (target `cellshm...`) are
/// not forwarded.
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

struct Message(String);

impl tracing::field::Visit for Message {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.0, "{value:?}");
        } else {
            let _ = write!(self.0, " {}={value:?}", field.name());
        }
    }

    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        if field.name() == "message" {
            self.0.push_str(value);
        } else {
            let _ = write!(self.0, " {}={value}", field.name());
        }
    }
}

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for CellLayer {
    fn on_event(&self, event: &tracing::Event<'_>, _ctx: tracing_subscriber::layer::Context<'_, S>) {
        let meta = event.metadata();
        if meta.target().starts_with("cellshm") {
            return;
        }
        let level = match *meta.level() {
            tracing::Level::ERROR => log_level::ERROR,
            tracing::Level::WARN => log_level::WARN,
            tracing::Level::INFO => log_level::INFO,
            tracing::Level::DEBUG => log_level::DEBUG,
            tracing::Level::TRACE => log_level::TRACE,
        };
        if !self.sender.enabled(level, meta.target()) || FORWARDING.with(|f| f.replace(true)) {
            return;
        }
        let mut message = Message(String::new());
        event.record(&mut message);
        let message = message.0.trim_start().to_string();
        let _ = self.sender.send(level, meta.target(), &message);
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
