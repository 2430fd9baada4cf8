//! Every libc call outside `shm/`: doorbells, eventfds, fd passing, pidfds, process
//! hardening and the discovery socket.

pub(crate) mod doorbell;
pub(crate) mod process;
pub(crate) mod socket;
