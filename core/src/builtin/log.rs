//! `cellshm.Log.event` (cell → host, NO_REPLY, handled in arrival order) and
//! `cellshm.Log.set_filter` (host → cell: records the filter excludes are not sent).

use super::{bad, CellSide, HostSide};
use crate::error::Result;
use crate::log::LogFilter;
use crate::shm::SharedBytes;
use crate::wire::{BodyReader, BodyWriter, LogEvent};

/// The host's side of `event`.
pub(crate) fn serve_event(host: &impl HostSide, payload: SharedBytes<'_>) -> Result<Vec<u8>> {
    host.log_event(decode_event(payload)?);
    Ok(Vec::new())
}

/// The cell's side of `set_filter`.
pub(crate) fn serve_set_filter(cell: &impl CellSide, payload: SharedBytes<'_>) -> Result<Vec<u8>> {
    cell.set_log_filter(decode_filter(payload)?);
    Ok(Vec::new())
}

/// The host's reading of a log record a cell sent.
pub(crate) fn decode_event(payload: SharedBytes<'_>) -> Result<LogEvent> {
    LogEvent::decode(&payload.to_vec()).map_err(|m| bad("log event", m))
}

/// The body of a set_filter call: the filter text, checked before it is sent.
pub(crate) fn encode_filter(filter: &str) -> Result<Vec<u8>> {
    LogFilter::parse(filter)?;
    Ok(BodyWriter::default().str(filter).finish())
}

/// The cell's reading of the filter its host pushed.
pub(crate) fn decode_filter(payload: SharedBytes<'_>) -> Result<LogFilter> {
    let payload = payload.to_vec();
    let mut r = BodyReader::new(&payload);
    let text = r.str().map_err(|m| bad("filter", m))?;
    r.finish().map_err(|m| bad("filter", m))?;
    LogFilter::parse(&text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{log_level, Status};

    #[test]
    fn a_filter_travels_as_text_and_is_checked_on_both_ends() {
        let body = encode_filter("warn,mycell=debug").unwrap();
        let filter = decode_filter(SharedBytes::private(&body)).unwrap();
        assert!(filter.enabled(log_level::DEBUG, "mycell::db") && !filter.enabled(log_level::INFO, "other"));
        assert_eq!(encode_filter("warn,=nonsense=").unwrap_err().status(), Status::InvalidArgument);
        let mut trailing = body.clone();
        trailing.push(0);
        assert!(decode_filter(SharedBytes::private(&trailing)).unwrap_err().message().starts_with("bad filter"));
    }

    #[test]
    fn a_log_event_that_does_not_decode_is_refused_by_name() {
        let e = decode_event(SharedBytes::private(&[1, 2, 3])).unwrap_err();
        assert!(e.status() == Status::InvalidArgument && e.message().starts_with("bad log event"), "{e}");
    }
}
