//! The built-in services every link speaks (docs/PROTOCOL.md §12), each in one file
//! with both sides: what the caller sends, what the receiver checks, and what it does
//! with it through the side's trait below. The encodings themselves are in
//! `wire::codec`. The host's and the cell's session hooks hand every request to
//! [`serve_on_host`] or [`serve_on_cell`]: the one place a built-in's method id is
//! matched.
//!
//! - `cellshm.Lifecycle.ready`, `.goodbye` and `.heartbeat` in [`lifecycle`];
//! - `cellshm.Log.event` (cell → host) and `cellshm.Log.set_filter` (host → cell) in [`log`];
//! - `cellshm.Introspect.methods` in [`introspect`];
//! - `cellshm.Topic.*` (publish/subscribe brokered by the host) in [`topic`].

pub(crate) mod introspect;
pub(crate) mod lifecycle;
pub(crate) mod log;
pub(crate) mod topic;

use crate::error::{Error, Result};
use crate::log::LogFilter;
use crate::shm::SharedBytes;
use crate::wire::{builtin, LogEvent, Ready, Status};

/// A built-in message that does not decode: the caller gets INVALID_ARGUMENT naming it.
fn bad(what: &str, why: String) -> Error {
    Error::new(Status::InvalidArgument, format!("bad {what}: {why}"))
}

/// What the host does with the built-ins its cells call.
pub(crate) trait HostSide {
    /// The cell's ready message, checked to be for this link.
    fn ready(&self, ready: Ready);
    /// The cell leaves on purpose.
    fn goodbye(&self);
    /// A log record the cell sent.
    fn log_event(&self, event: LogEvent);
    /// The ready call was served and counted in the link's metrics: the cell is ready
    /// now (whoever sees it ready also sees the call counted).
    fn ready_counted(&self);
    /// The link's peer id (what a ready message must name).
    fn peer_id(&self) -> u32;
    /// The cell publishes a topic.
    fn topic_create(&self, create: topic::Create) -> Result<()>;
    /// The cell subscribes to a topic.
    fn topic_subscribe(&self, subscribe: topic::Subscribe) -> Result<topic::Subscribed>;
    /// The cell ends a subscription.
    fn topic_unsubscribe(&self, leave: topic::Leave);
    /// The cell closed a topic it published.
    fn topic_close(&self, name: String);
}

/// What a cell does with the built-ins its host calls.
pub(crate) trait CellSide {
    /// The host pushed a log filter.
    fn set_log_filter(&self, filter: LogFilter);
    /// The host attaches a subscriber to a topic this cell publishes.
    fn topic_attach(&self, attach: topic::Subscribe) -> Result<topic::Subscribed>;
    /// A subscriber of a topic this cell publishes left.
    fn topic_detach(&self, leave: topic::Leave);
    /// The publisher of a topic this cell subscribes to is gone.
    fn topic_ended(&self, name: String);
}

/// Serves a built-in request a cell sent to the host; `None` if `method_id` is none.
pub(crate) fn serve_on_host(host: &impl HostSide, method_id: u32, payload: SharedBytes<'_>) -> Option<Result<Vec<u8>>> {
    match method_id {
        builtin::LIFECYCLE_READY_ID => Some(lifecycle::serve_ready(host, payload)),
        builtin::LIFECYCLE_GOODBYE_ID => Some(lifecycle::serve_goodbye(host)),
        builtin::LOG_EVENT_ID => Some(log::serve_event(host, payload)),
        builtin::TOPIC_CREATE_ID => {
            Some(topic::Create::decode(payload).and_then(|c| host.topic_create(c)).map(|()| Vec::new()))
        }
        builtin::TOPIC_SUBSCRIBE_ID => {
            Some(topic::Subscribe::decode(payload).and_then(|s| host.topic_subscribe(s)).map(|s| s.encode()))
        }
        builtin::TOPIC_UNSUBSCRIBE_ID => Some(topic::Leave::decode(payload).map(|l| {
            host.topic_unsubscribe(l);
            Vec::new()
        })),
        builtin::TOPIC_CLOSE_ID => Some(topic::decode_name(payload).map(|name| {
            host.topic_close(name);
            Vec::new()
        })),
        _ => None,
    }
}

/// A request a cell sent was served and counted (`Hooks::on_served`): what a built-in
/// makes visible then.
pub(crate) fn served_on_host(host: &impl HostSide, method_id: u32, ok: bool) {
    if method_id == builtin::LIFECYCLE_READY_ID && ok {
        host.ready_counted();
    }
}

/// Serves a built-in request the host sent to a cell; `None` if `method_id` is none.
pub(crate) fn serve_on_cell(cell: &impl CellSide, method_id: u32, payload: SharedBytes<'_>) -> Option<Result<Vec<u8>>> {
    match method_id {
        builtin::LOG_SET_FILTER_ID => Some(log::serve_set_filter(cell, payload)),
        builtin::LIFECYCLE_HEARTBEAT_ID => Some(lifecycle::serve_heartbeat()),
        builtin::TOPIC_ATTACH_ID => {
            Some(topic::Subscribe::decode(payload).and_then(|a| cell.topic_attach(a)).map(|a| a.encode()))
        }
        builtin::TOPIC_DETACH_ID => Some(topic::Leave::decode(payload).map(|l| {
            cell.topic_detach(l);
            Vec::new()
        })),
        builtin::TOPIC_ENDED_ID => Some(topic::decode_name(payload).map(|name| {
            cell.topic_ended(name);
            Vec::new()
        })),
        _ => None,
    }
}

/// Built-in notifications the receiving thread handles in arrival order (log records
/// must reach the sink in the order the cell sent them).
pub(crate) fn in_order(method_id: u32) -> bool {
    method_id == builtin::LOG_EVENT_ID
}
