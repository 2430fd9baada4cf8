//! The driver: what carries out the link's rules (`proto`) over its rings, pools and
//! doorbell, with threads, waits and user callbacks.
//!
//! - [`session`]: the driver of one link: the receive path, callers' waits, serving,
//!   streams (and the public types of calls, handlers and streams);
//! - [`topic`]: publishers, loans, subscribers and samples of publish/subscribe, the same
//!   for the host and for cells;
//!
//! and its building blocks that coordinate threads, written against [`sync`] so loom
//! can check them (`make test-loom`):
//!
//! - [`waiter`]: a caller waiting for its answer and the one thread that delivers it;
//! - [`workers`]: how the server threads of one link share the queued requests and the
//!   standby role (who sleeps on the doorbell), with no timer anywhere;
//! - [`pool`]: the bounded pool of threads that run stream handlers;
//! - [`cancellation`]: the calls their callers cancelled, and the handlers waiting for it;
//! - [`alarms`]: futures woken at a time by the standby (async senders retrying a full
//!   ring or pool, a shutdown's grace), with no timer of their own;
//! - [`lease`]: letting go of the receive ring without parking it, bounded by the standby;
//! - [`futex_reactor`]: one thread per process that wakes async subscribers when their
//!   words in shared memory change (FUTEX_WAITV), instead of a thread per wait;
//! - [`spinning`]: who may spin (one thread per process on two cores or fewer);
//! - [`metrics`]: per-method calls, errors, calls in flight and latency of a link (its
//!   lock-free slot claiming is a loom model).

pub(crate) mod alarms;
pub(crate) mod cancellation;
pub(crate) mod futex_reactor;
pub(crate) mod lease;
pub mod metrics;
pub(crate) mod pool;
pub mod session;
pub(crate) mod spinning;
pub(crate) mod sync;
pub mod topic;
pub(crate) mod waiter;
pub(crate) mod workers;
