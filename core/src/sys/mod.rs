//! Every libc call outside `shm/`: doorbells, eventfds, fd passing, pidfds, process
//! hardening, the discovery socket and the clock.

pub mod clock;
pub(crate) mod doorbell;
pub(crate) mod futex;
pub(crate) mod process;
pub(crate) mod socket;

/// A libc return value as an `io::Result`: negative means `errno` says why.
pub(crate) fn cvt(ret: libc::c_int) -> std::io::Result<libc::c_int> {
    if ret < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}
