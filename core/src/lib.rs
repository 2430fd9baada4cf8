//! cellshm: RPC between a host process and the cells it spawns, through shared memory.
//!
//! A [`Hub`] is a named set of links created by the host. Each cell's link is two sealed
//! memfds, one written by each side and read-only to the other (two descriptor rings,
//! two return rings, two slot pools), and a doorbell socket for wakeups and liveness.
//! Calls are 64-byte descriptors in two-line ring entries; payloads up to 80 bytes travel
//! inline (16 in the descriptor, the rest in the entry's second cache line), larger ones
//! are written in place into slots. Nothing of a hub outlives its process.
//!
//! ```no_run
//! use cellshm::{CallOptions, Hub, HubConfig, LinkEnd, PeerOptions};
//! use std::process::Command;
//! use std::time::Duration;
//!
//! let hub = Hub::create(HubConfig::default())?;
//! let ticket = hub.add_peer("echo", PeerOptions::default())?;
//! let (peer, mut child) = ticket.spawn(&mut Command::new("./echo-cell"))?;
//! peer.wait_ready(Duration::from_secs(10))?;
//! let reply = peer.call("Echo.echo", b"hello", &CallOptions::timeout(Duration::from_secs(1)))?;
//! assert_eq!(reply.bytes(), b"hello");
//! peer.shutdown(Duration::from_secs(1));
//! child.wait().ok();
//! # Ok::<(), cellshm::Error>(())
//! ```
//!
//! The module map follows `DESIGN.md` §4: [`wire`] is the wire vocabulary, `sys` the
//! doorbell, clock, pidfd and socket calls, `shm` the memfds and everything in them,
//! `proto` the link's rules as plain state, `runtime` the driver that carries them out
//! over one link ([`session`] is its public face: calls, handlers, streams), `builtin`
//! the built-in services, [`host`] and [`cell`] the two ends.

#![warn(missing_docs)]

pub(crate) mod builtin;
pub mod cell;
mod error;
pub mod host;
mod link_end;
pub mod log;
pub(crate) mod proto;
pub(crate) mod runtime;
pub use runtime::session;
pub(crate) mod shm;
pub(crate) mod sys;
#[cfg(feature = "tower")]
pub mod tower;
#[cfg(feature = "prost")]
pub mod typed;
pub mod wire;

/// What most programs use: `use cellshm::prelude::*;`.
pub mod prelude {
    pub use crate::{
        CallOptions, Cell, Error, Hub, HubConfig, LinkEnd, MethodKind, Peer, PeerOptions, Registry, Status, Supervised,
    };
}

pub use cell::{Cell, CellOptions, JoinArgs};
pub use error::{panic_message, Error, Result};
pub use host::discovery::{hub_listing, list_hubs, HubListing};
pub use host::inspect::{snapshot, HubSnapshot};
pub use host::supervisor::{
    CellSpec, CellStatus, EventSubscription, ExitReason, RestartPolicy, Supervisor, SupervisorEvent, SupervisorEvents,
    WatchedPeer,
};
pub use host::topics::TopicReport;
pub use host::{
    peer_state_name, CellProcess, Endpoint, EndpointListing, Hub, HubView, LogRecord, LogSink, Peer, PeerMetrics,
    PeerOptions, PeerState, PeerTicket, ReadyFuture, ShutdownFuture,
};
pub use link_end::{LinkEnd, Registry, Supervised};
pub use proto::topic::TopicPolicy;
pub use runtime::metrics::{LatencySummary, MethodMetrics, METHOD_SLOTS};
pub use runtime::topic::{Loan, Publisher, Sample, Subscriber, TopicOptions, Topics, WaitSet};
pub use session::{
    AccessPolicy, AsyncCall, AsyncStream, AsyncStreamCall, BoxFuture, Call, CallFuture, CallOptions, CancelToken,
    Completion, Counters, Dispatcher, NotifyFuture, OpenStreamFuture, PeerIdentity, PendingCall, Response, Spawn,
    Stream, StreamCall, StreamEnd, StreamHandler, StreamItem, WaitStrategy, DEFAULT_CALL_TIMEOUT, FOREVER,
    MAX_INBOUND_STREAMS, STREAM_THREADS, STREAM_WINDOW,
};
pub use shm::inspect::PeerSnapshot;
pub use shm::topic::{SubscriptionStats, TopicStats};
pub use shm::{Geometry, HubConfig, HubInfo, PeerSlotState, SharedBytes, SlotClass};
pub use sys::clock::{deadline_after, monotonic_now_ns};
pub use wire::{method_id, MethodKind, Status};
