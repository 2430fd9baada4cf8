//! The driver's building blocks that coordinate threads, written against [`sync`] so
//! loom can check them (`make test-loom`).
//!
//! - [`workers`]: how the server threads of one link share the queued requests and the
//!   standby role (who sleeps on the doorbell), with no timer anywhere;
//! - [`cancellation`]: the calls their callers cancelled, and the handlers waiting for it.
//!
//! The rest of the driver (the receive path, callers' waits, streams) is still in
//! `session`; DESIGN.md §4 moves it here.

pub(crate) mod cancellation;
pub(crate) mod sync;
pub(crate) mod workers;
