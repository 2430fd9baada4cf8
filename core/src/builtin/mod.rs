//! The built-in services every link speaks (docs/PROTOCOL.md §12), each in one place:
//! what its messages must say and what each side makes of them. The hooks in `host`
//! and `cell` apply these to their own state; the encodings are in `wire::codec`.
//!
//! - `cellshm.Lifecycle.ready` and `.goodbye` in [`lifecycle`];
//! - `cellshm.Log.event` (cell → host) and `cellshm.Log.set_filter` (host → cell) in [`log`];
//! - `cellshm.Introspect.methods` in [`introspect`].

pub(crate) mod introspect;
pub(crate) mod lifecycle;
pub(crate) mod log;

use crate::error::Error;
use crate::wire::Status;

/// A built-in message that does not decode: the caller gets INVALID_ARGUMENT naming it.
fn bad(what: &str, why: String) -> Error {
    Error::new(Status::InvalidArgument, format!("bad {what}: {why}"))
}
