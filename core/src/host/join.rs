//! Handing a spawned cell its link (docs/PROTOCOL.md §2.2), so that no other process of
//! the uid can take it.
//!
//! A spawned process is dumpable from `execve` until the cell library makes it not (the
//! kernel resets the flag at exec), and in that window any process of the same uid may
//! copy its descriptors (`pidfd_getfd`). So nothing of the link is put where the child
//! can be robbed of it: the child inherits only a *bootstrap* socket, on which the host
//! sends nothing at all. Once the cell is not dumpable any more, it makes a socket pair
//! of its own and sends one end in a join request on the bootstrap socket; the kernel
//! attaches the sender's credentials, which an unprivileged process cannot forge. The
//! host answers a request only from the process it spawned (or one it started, for
//! launchers that fork), on that private socket: the join record with the host memory,
//! the cell memory and the doorbell attached. A same-uid process that copied the
//! bootstrap socket can read nothing from it, and its own requests are refused.
//!
//! The hub's discovery thread serves the bootstrap sockets of the cells not joined yet
//! (see `discovery::serve`): no thread per spawn, and nothing waits on a cell.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};

use crate::shm::join::JOIN_RECORD_LEN;
use crate::sys::doorbell::{unix, JOIN_REQUEST};

/// What a cell receives when it joins: the join record, both memfds and its end of the
/// doorbell. Dropping it closes the host's copies.
#[derive(Debug)]
pub(crate) struct JoinOffer {
    pub record: [u8; JOIN_RECORD_LEN],
    pub host_memory: OwnedFd,
    pub cell_memory: OwnedFd,
    pub doorbell: OwnedFd,
}

impl JoinOffer {
    /// Sends the offer on `socket` (one message, three descriptors).
    pub fn deliver(&self, socket: &impl AsRawFd) -> io::Result<()> {
        unix::send_with_fds(
            socket,
            &self.record,
            &[self.host_memory.as_raw_fd(), self.cell_memory.as_raw_fd(), self.doorbell.as_raw_fd()],
        )
    }
}

/// The bootstrap socket pair of a spawn: the host's end (passing credentials, not
/// blocking) and the child's.
pub(crate) fn bootstrap_pair() -> crate::error::Result<(OwnedFd, OwnedFd)> {
    let system = |e| crate::error::Error::system("creating the bootstrap socket pair", e);
    let (host, child) = unix::seqpacket_pair().map_err(system)?;
    unix::pass_credentials(&host).map_err(system)?;
    crate::sys::socket::set_nonblocking(host.as_raw_fd()).map_err(system)?;
    Ok((host, child))
}

/// A spawned cell that has not asked for its link yet.
#[derive(Debug)]
pub(crate) struct PendingJoin {
    /// The cell's name, for messages.
    pub name: String,
    /// The process the host spawned.
    pub pid: u32,
    /// The host's end of the bootstrap socket (credentials passed).
    pub bootstrap: OwnedFd,
    pub offer: JoinOffer,
}

/// What one readable bootstrap socket came to.
#[derive(Debug)]
pub(crate) enum JoinStep {
    /// The cell has its link: forget the pending join.
    Joined,
    /// The bootstrap socket was closed (the process ended, or exec'd something that
    /// closed it) before asking: forget it; its death is the link's to report.
    Closed,
    /// A request that does not come from the cell: refused, the join still waits.
    Refused(String),
    /// Nothing to read after all.
    Nothing,
}

impl PendingJoin {
    /// Reads what arrived on the bootstrap socket and answers a request of the cell.
    pub fn on_readable(&self) -> JoinStep {
        let mut buf = [0u8; 64];
        let received = match unix::recv_message(&self.bootstrap, &mut buf) {
            Ok(r) => r,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock || e.kind() == io::ErrorKind::Interrupted => {
                return JoinStep::Nothing
            }
            Err(e) => return JoinStep::Refused(format!("unreadable join request: {e}")),
        };
        if received.len == 0 {
            return JoinStep::Closed;
        }
        let Some((pid, uid, _)) = received.sender else {
            return JoinStep::Refused("a join request without credentials".into());
        };
        if !crate::sys::process::is_self_or_descendant(pid, self.pid) {
            return JoinStep::Refused(format!(
                "pid {pid} (uid {uid}) asked for the link of cell {:?}, which is pid {}: refused",
                self.name, self.pid
            ));
        }
        let mut fds = received.fds.into_iter();
        let (true, Some(private), None) = (&buf[..received.len] == JOIN_REQUEST, fds.next(), fds.next()) else {
            return JoinStep::Refused(format!("cell {:?} sent a malformed join request", self.name));
        };
        match self.offer.deliver(&private) {
            Ok(()) => JoinStep::Joined,
            Err(e) => {
                tracing::warn!(cell = %self.name, "could not send the join record: {e}");
                JoinStep::Joined
            }
        }
    }
}
