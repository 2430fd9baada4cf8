//! How numbers read in a terminal.

/// Home, then clear the screen: a redraw without scrolling.
pub(crate) const CLEAR_SCREEN: &str = "\x1b[H\x1b[2J";

pub(crate) fn duration_text(ms: u64) -> String {
    match ms / 1000 {
        s if s >= 86_400 => format!("{}d{}h", s / 86_400, s % 86_400 / 3600),
        s if s >= 3600 => format!("{}h{}m", s / 3600, s % 3600 / 60),
        s if s >= 60 => format!("{}m{}s", s / 60, s % 60),
        s => format!("{s}.{}s", ms % 1000 / 100),
    }
}

pub(crate) fn latency_text(ns: u64) -> String {
    match ns {
        0 => "-".into(),
        ns if ns < 10_000 => format!("{ns}ns"),
        ns if ns < 10_000_000 => format!("{}us", ns / 1_000),
        ns if ns < 10_000_000_000 => format!("{}ms", ns / 1_000_000),
        ns => format!("{}s", ns / 1_000_000_000),
    }
}

pub(crate) fn human(bytes: u64) -> String {
    match bytes {
        b if b >= 1 << 20 && b % (1 << 20) == 0 => format!("{}MiB", b >> 20),
        b if b >= 1 << 10 && b % (1 << 10) == 0 => format!("{}KiB", b >> 10),
        b => format!("{b}B"),
    }
}
