//! `cellshm.Lifecycle.ready`: the cell serves and says who it is; `.goodbye`: it leaves
//! on purpose (the host does not treat its end as a crash); `.heartbeat`: the
//! supervisor's question whether the cell's handler threads still serve.

use super::{bad, HostSide};
use crate::error::{Error, Result};
use crate::shm::SharedBytes;
use crate::wire::{Ready, Status};

/// The cell's ready message: who it is and what it runs.
pub(crate) fn ready_message(peer_id: u32, pid: u32, name: &str, version: &str) -> Vec<u8> {
    Ready { peer_id, pid, name: name.to_string(), version: version.to_string(), features: Vec::new() }.encode()
}

/// The host's side of `ready`: checked for this link, then recorded.
pub(crate) fn serve_ready(host: &impl HostSide, payload: SharedBytes<'_>) -> Result<Vec<u8>> {
    host.ready(accept_ready(host.peer_id(), payload)?);
    Ok(Vec::new())
}

/// The host's side of `goodbye`.
pub(crate) fn serve_goodbye(host: &impl HostSide) -> Result<Vec<u8>> {
    host.goodbye();
    Ok(Vec::new())
}

/// The cell's side of `heartbeat`: answered on a thread that runs handlers, so when
/// they are all stuck the heartbeat waits with the other requests and goes unanswered.
pub(crate) fn serve_heartbeat() -> Result<Vec<u8>> {
    Ok(Vec::new())
}

/// The host's check of a cell's ready message on the link of `peer_id`. The pid it
/// states is informational only: the kernel's word (fork, SO_PEERCRED) is the one kept.
pub(crate) fn accept_ready(peer_id: u32, payload: SharedBytes<'_>) -> Result<Ready> {
    let ready = Ready::decode(&payload.to_vec()).map_err(|m| bad("ready message", m))?;
    if ready.peer_id != peer_id {
        return Err(Error::new(
            Status::InvalidArgument,
            format!("ready for peer {} on the link of peer {peer_id}", ready.peer_id),
        ));
    }
    Ok(ready)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ready(peer_id: u32) -> Vec<u8> {
        Ready { peer_id, pid: 42, name: "w".into(), version: "1.0".into(), features: Vec::new() }.encode()
    }

    #[test]
    fn a_ready_message_is_accepted_only_on_its_own_link() {
        let good = ready(3);
        assert_eq!(accept_ready(3, SharedBytes::private(&good)).unwrap().pid, 42);
        let other = accept_ready(4, SharedBytes::private(&good)).unwrap_err();
        assert!(other.status() == Status::InvalidArgument && other.message().contains("peer 3"), "{other}");
        let cut = accept_ready(3, SharedBytes::private(&good[..good.len() - 1])).unwrap_err();
        assert!(cut.message().starts_with("bad ready message"), "{cut}");
    }
}
