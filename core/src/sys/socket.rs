//! The hub's discovery socket: `AF_UNIX SOCK_SEQPACKET` in the abstract namespace, so
//! it vanishes with the process and nothing stale is ever left on disk.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

use super::cvt;

/// Where a discovery socket lives.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Address<'a> {
    /// In the abstract namespace (no file; gone with its process).
    Abstract(&'a str),
    /// A filesystem path (for containers that share a directory, not a network namespace).
    Path(&'a std::path::Path),
}

fn socket_address(address: Address<'_>) -> io::Result<(libc::sockaddr_un, libc::socklen_t)> {
    // SAFETY: sockaddr_un is plain data; zeroed is valid.
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    let (bytes, skip): (&[u8], usize) = match address {
        Address::Abstract(name) => (name.as_bytes(), 1),
        Address::Path(path) => (std::os::unix::ffi::OsStrExt::as_bytes(path.as_os_str()), 0),
    };
    // A path needs its terminating NUL; an abstract name its leading one.
    if bytes.len() + 1 > addr.sun_path.len() || bytes.contains(&0) {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "socket address too long or with a NUL byte"));
    }
    for (dst, &src) in addr.sun_path[skip..].iter_mut().zip(bytes) {
        *dst = src as libc::c_char;
    }
    let len = std::mem::size_of::<libc::sa_family_t>() + skip + bytes.len() + (1 - skip);
    Ok((addr, len as libc::socklen_t))
}

fn seqpacket_socket() -> io::Result<OwnedFd> {
    // SAFETY: socket takes no pointers.
    let fd = cvt(unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC, 0) })?;
    // SAFETY: a new descriptor nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Listens on `address`. Fails with `AddrInUse` while another live process listens on
/// it (a path left behind by a process that died is taken over).
pub(crate) fn listen(address: Address<'_>) -> io::Result<OwnedFd> {
    let fd = seqpacket_socket()?;
    let (addr, len) = socket_address(address)?;
    // SAFETY: `addr` is a valid sockaddr_un of `len` bytes.
    let bind = || cvt(unsafe { libc::bind(fd.as_raw_fd(), (&addr as *const libc::sockaddr_un).cast(), len) });
    match (bind(), address) {
        (Err(e), Address::Path(path)) if e.kind() == io::ErrorKind::AddrInUse => {
            // Stale only if nobody answers there.
            if connect(address, Duration::from_millis(100)).is_ok() {
                return Err(e);
            }
            std::fs::remove_file(path)?;
            bind()?;
        }
        (result, _) => {
            result?;
        }
    }
    // SAFETY: listen on a socket we own.
    cvt(unsafe { libc::listen(fd.as_raw_fd(), 64) })?;
    set_nonblocking(fd.as_raw_fd())?;
    Ok(fd)
}

/// Connects to `address`; replies are awaited up to `timeout`.
pub(crate) fn connect(address: Address<'_>, timeout: Duration) -> io::Result<OwnedFd> {
    let fd = seqpacket_socket()?;
    let (addr, len) = socket_address(address)?;
    // SAFETY: `addr` is a valid sockaddr_un of `len` bytes.
    cvt(unsafe { libc::connect(fd.as_raw_fd(), (&addr as *const libc::sockaddr_un).cast(), len) })?;
    set_timeout(&fd, libc::SO_RCVTIMEO, timeout)?;
    set_timeout(&fd, libc::SO_SNDTIMEO, timeout)?;
    Ok(fd)
}

/// Sets `SO_RCVTIMEO` or `SO_SNDTIMEO`: how long a blocking receive or send may wait.
fn set_timeout(socket: &OwnedFd, option: libc::c_int, timeout: Duration) -> io::Result<()> {
    let tv = libc::timeval { tv_sec: timeout.as_secs() as libc::time_t, tv_usec: timeout.subsec_micros() as _ };
    // SAFETY: `tv` is a timeval, as these options require, and lives for the call.
    cvt(unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            option,
            (&tv as *const libc::timeval).cast(),
            std::mem::size_of::<libc::timeval>() as libc::socklen_t,
        )
    })
    .map(drop)
}

/// Makes an accepted (non-blocking) socket blocking, with sends bounded by `timeout`:
/// for replies that carry descriptors and must not be dropped on a full buffer.
pub(crate) fn set_blocking_sends(socket: &OwnedFd, timeout: Duration) -> io::Result<()> {
    // SAFETY: fcntl on a descriptor we own.
    let flags = cvt(unsafe { libc::fcntl(socket.as_raw_fd(), libc::F_GETFL) })?;
    // SAFETY: as above.
    cvt(unsafe { libc::fcntl(socket.as_raw_fd(), libc::F_SETFL, flags & !libc::O_NONBLOCK) })?;
    set_timeout(socket, libc::SO_SNDTIMEO, timeout)
}

/// Accepts one pending connection (non-blocking; `None` when there is none).
pub(crate) fn accept(listener: &OwnedFd) -> io::Result<Option<OwnedFd>> {
    // SAFETY: accept4 with NULL address pointers.
    let fd = unsafe {
        libc::accept4(
            listener.as_raw_fd(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
        )
    };
    if fd < 0 {
        let e = io::Error::last_os_error();
        return match e.raw_os_error() {
            Some(libc::EAGAIN) | Some(libc::EINTR) | Some(libc::ECONNABORTED) => Ok(None),
            _ => Err(e),
        };
    }
    // SAFETY: a new descriptor nobody else owns.
    Ok(Some(unsafe { OwnedFd::from_raw_fd(fd) }))
}

pub(crate) fn set_nonblocking(fd: RawFd) -> io::Result<()> {
    // SAFETY: fcntl on a descriptor we own.
    let flags = cvt(unsafe { libc::fcntl(fd, libc::F_GETFL) })?;
    // SAFETY: as above.
    cvt(unsafe { libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) }).map(drop)
}

/// One message (up to `max` bytes), without fds; `Ok(None)` if none is waiting on a
/// non-blocking socket, an empty vector at EOF.
pub(crate) fn recv_message(socket: &OwnedFd, max: usize) -> io::Result<Option<Vec<u8>>> {
    let mut buf = vec![0u8; max];
    // SAFETY: receives into a live buffer of the stated size.
    let n = unsafe { libc::recv(socket.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), libc::MSG_DONTWAIT) };
    if n < 0 {
        let e = io::Error::last_os_error();
        return match e.raw_os_error() {
            Some(libc::EAGAIN) | Some(libc::EINTR) => Ok(None),
            _ => Err(e),
        };
    }
    buf.truncate(n as usize);
    Ok(Some(buf))
}

/// The names of the abstract Unix sockets listening on this machine (as far as this
/// process's network namespace shows), from `/proc/net/unix`.
pub(crate) fn listening_abstract_names(prefix: &str) -> io::Result<Vec<String>> {
    let table = std::fs::read_to_string("/proc/net/unix")?;
    let mut names: Vec<String> = table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            // Num RefCount Protocol Flags Type St Inode Path; listening sockets carry
            // __SO_ACCEPTCON (0x10000) in Flags.
            let flags = u32::from_str_radix(fields.get(3)?, 16).ok()?;
            let path = fields.get(7)?.strip_prefix('@')?;
            (flags & 0x10000 != 0 && path.starts_with(prefix)).then(|| path.to_string())
        })
        .collect();
    names.sort();
    names.dedup();
    Ok(names)
}

/// Waits until one of `fds` is readable, hung up or in error, or `timeout` passes
/// (`None`: no limit); returns which of them are, in order (all false after a timeout or
/// an interrupted wait).
pub(crate) fn poll_readable(fds: &[RawFd], timeout: Option<Duration>) -> io::Result<Vec<bool>> {
    let mut polled: Vec<libc::pollfd> =
        fds.iter().map(|&fd| libc::pollfd { fd, events: libc::POLLIN, revents: 0 }).collect();
    // Rounded up, so a wait never ends just before its deadline.
    let ms = timeout.map_or(-1, |t| t.as_millis().min(i32::MAX as u128 - 1) as i32 + 1);
    // SAFETY: `polled` is a live array of `polled.len()` pollfds.
    let n = unsafe { libc::poll(polled.as_mut_ptr(), polled.len() as libc::nfds_t, ms) };
    if n < 0 {
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
    Ok(polled.iter().map(|p| n > 0 && p.revents != 0).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_abstract_listener_is_found_connected_to_and_gone_when_closed() {
        let name = format!("cellshm-unit/{}/sock", std::process::id());
        let listener = listen(Address::Abstract(&name)).unwrap();
        assert_eq!(listen(Address::Abstract(&name)).unwrap_err().kind(), io::ErrorKind::AddrInUse);
        assert!(listening_abstract_names("cellshm-unit/").unwrap().contains(&name));
        let client = connect(Address::Abstract(&name), Duration::from_secs(1)).unwrap();
        let server = loop {
            if let Some(s) = accept(&listener).unwrap() {
                break s;
            }
        };
        crate::sys::doorbell::unix::send_with_fds(&client, b"PING", &[]).unwrap();
        let got = loop {
            if let Some(m) = recv_message(&server, 64).unwrap() {
                break m;
            }
        };
        assert_eq!(got, b"PING");
        drop(listener);
        assert!(!listening_abstract_names("cellshm-unit/").unwrap().contains(&name));
        assert!(connect(Address::Abstract(&name), Duration::from_secs(1)).is_err());
    }

    #[test]
    fn a_path_socket_left_by_a_dead_listener_is_taken_over_but_a_live_one_is_not() {
        let path = std::env::temp_dir().join(format!("cellshm-unit-{}.sock", std::process::id()));
        let first = listen(Address::Path(&path)).unwrap();
        assert_eq!(listen(Address::Path(&path)).unwrap_err().kind(), io::ErrorKind::AddrInUse);
        drop(first); // the file stays, as after a crash
        assert!(path.exists());
        let second = listen(Address::Path(&path)).unwrap();
        assert!(connect(Address::Path(&path), Duration::from_secs(1)).is_ok());
        drop(second);
        std::fs::remove_file(&path).unwrap();
    }
}
