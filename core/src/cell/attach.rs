//! Attaching: the cell side of `ATTACH <name>` on a hub's socket (the hub's side is
//! `host::attach`).

use crate::error::{Error, Result};
use crate::host::discovery;
use crate::sys::doorbell::unix;
use crate::wire::Status;

/// The cell side: asks hub `hub_name` to attach us as `name`; returns the join record
/// with the link's memfds and our doorbell, which follow the hub's OK on the connection.
pub(crate) fn request(
    hub_name: &str,
    name: &str,
    timeout: std::time::Duration,
) -> Result<(Vec<u8>, Vec<std::os::fd::OwnedFd>)> {
    let socket = discovery::connect(hub_name)?;
    let (reply, fds) = discovery::request(&socket, &format!("ATTACH {name}\n"))?;
    let reply = reply.trim_end();
    if let Some(reason) = reply.strip_prefix("REFUSED ") {
        return Err(Error::new(Status::PermissionDenied, format!("attach refused: {reason}")));
    }
    if !reply.starts_with("OK ") || !fds.is_empty() {
        return Err(Error::new(Status::ProtocolError, format!("unexpected attach reply {reply:?}")));
    }
    unix::recv_join_reply(&socket, timeout).map_err(|m| Error::new(Status::ProtocolError, m))
}
