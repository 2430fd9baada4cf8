//! `cellshm.Lifecycle.ready`: the cell serves and says who it is; `.goodbye`: it leaves
//! on purpose (the host does not treat its end as a crash).

use super::bad;
use crate::error::{Error, Result};
use crate::shm::SharedBytes;
use crate::wire::{Ready, Status};

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
