//! The link's protocol rules as plain state and pure functions: no syscalls, threads,
//! clocks or user callbacks (time is passed in), so every rule is a table test here
//! rather than a multi-process test. The runtime (`session`) asks these for every
//! decision it makes about a frame and carries the I/O out.
//!
//! - [`deadlines`]: the deadlines a link watches itself (calls nobody waits on, streams);
//! - [`frames`]: the frames this side sends, each kind's flags and fields;
//! - [`hello`]: what HELLO and HELLO_ACK must say, on both sides;
//! - [`status`]: what a handler's status becomes on the wire, and what a received one
//!   means to the caller;
//! - [`stream`]: opening a channel, and a stream's flow control (credit, window, ends);
//! - [`topic`]: a topic publisher's bookkeeping: which slot a loan takes, what each
//!   subscriber's queue does with a sample under its policy;
//! - [`link`]: one link's state: calls waiting and their deadlines, msg ids, open
//!   channels, HELLO and GOODBYE, and the control frames owed to the peer.

pub(crate) mod deadlines;
pub(crate) mod frames;
pub(crate) mod hello;
pub(crate) mod link;
pub(crate) mod status;
pub(crate) mod stream;
pub(crate) mod topic;
