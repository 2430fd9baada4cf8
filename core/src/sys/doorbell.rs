//! Doorbells: one `AF_UNIX SOCK_SEQPACKET` socketpair per peer for wakeups and liveness,
//! and an in-process eventfd ("kick") to wake this process's own waiting thread.
//!
//! A byte on the doorbell means "look at your ring". Such bytes carry no data that
//! matters, so they may be coalesced, and the peer's death shows up as EOF/POLLHUP at
//! once, idle or not. The one other message is a descriptor handed over after the join
//! (a topic's memory, PROTOCOL.md §19): 16 bytes, `FDTX`, 4 reserved, a u64 token, with
//! one fd attached. Whoever drains the doorbell keeps such fds by token (a few at most)
//! for the built-in call that names the token. Every fd is CLOEXEC; the child's end is placed on its fixed fd
//! only inside the child, between fork and exec.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::time::Duration;

/// What ringing the doorbell did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Signal {
    /// A wakeup byte was queued.
    Sent,
    /// The socket buffer is full of earlier wakeups; the peer is alive and will wake.
    Coalesced,
    /// The other end is closed.
    PeerDead,
}

/// Why a wait returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wake {
    /// The doorbell or the kick fired (or both); check the ring.
    Woken,
    /// The timeout passed.
    TimedOut,
    /// The other end is closed.
    PeerDead,
}

/// The parked handshake between a receiver going to sleep and a sender that has just
/// published a descriptor (docs/PROTOCOL.md §4). Either the receiver's recheck sees the
/// descriptor, or the sender sees the flag and rings. Generic so the loom model checks
/// exactly this code.
pub mod handshake {
    use std::sync::atomic::Ordering;

    /// A parked flag in shared memory, plus the fence of the memory model in use.
    pub trait ParkedFlag {
        /// Loads the flag.
        fn load(&self, order: Ordering) -> u32;
        /// Stores the flag.
        fn store(&self, value: u32, order: Ordering);
        /// A full fence.
        fn fence(&self);
    }

    impl ParkedFlag for std::sync::atomic::AtomicU32 {
        fn load(&self, order: Ordering) -> u32 {
            std::sync::atomic::AtomicU32::load(self, order)
        }
        fn store(&self, value: u32, order: Ordering) {
            std::sync::atomic::AtomicU32::store(self, value, order)
        }
        fn fence(&self) {
            std::sync::atomic::fence(Ordering::SeqCst)
        }
    }

    /// Receiver: announces that it stops polling, then rechecks. Returns true if it may
    /// sleep; false (flag cleared again) if a descriptor arrived meanwhile.
    pub fn try_park(parked: &impl ParkedFlag, has_pending: impl FnOnce() -> bool) -> bool {
        parked.store(1, Ordering::SeqCst);
        parked.fence();
        if has_pending() {
            parked.store(0, Ordering::Relaxed);
            return false;
        }
        true
    }

    /// Sender, after publishing a descriptor: whether the receiver must be woken.
    pub fn must_ring(parked: &impl ParkedFlag) -> bool {
        parked.fence();
        parked.load(Ordering::Relaxed) != 0
    }
}

use super::cvt;

/// What a spawned cell sends on the socket it inherited to ask for its link, with one end
/// of a socket pair it made attached (docs/PROTOCOL.md §2.2).
pub const JOIN_REQUEST: &[u8] = b"CSHMJREQ";

/// One end of a doorbell socketpair, and optionally a pidfd of the process at the other
/// end: its exit counts as death even if a child it forked still holds the other end.
#[derive(Debug)]
pub struct Doorbell {
    fd: OwnedFd,
    process: std::sync::OnceLock<super::process::Pidfd>,
    /// Descriptors the other end handed over, by token, oldest first.
    handed: std::sync::Mutex<std::collections::VecDeque<(u64, OwnedFd)>>,
}

/// The first bytes of a descriptor hand-over on a doorbell.
pub const FD_MESSAGE: [u8; 4] = *b"FDTX";
/// Hand-overs kept unclaimed at most: an older one is closed when another comes.
pub const MAX_HANDED: usize = 16;

/// Creates a doorbell pair: (our end, the child's end). Both are CLOEXEC and non-blocking.
pub fn pair() -> io::Result<(Doorbell, OwnedFd)> {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: `fds` has room for the two descriptors socketpair writes.
    cvt(unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
            0,
            fds.as_mut_ptr(),
        )
    })?;
    // SAFETY: socketpair succeeded, so both fds are open and owned by nobody else.
    let (ours, theirs) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    Ok((Doorbell::new(ours), theirs))
}

impl Doorbell {
    /// Takes over an inherited fd (a cell's `CELLSHM_DOORBELL_FD`), after checking it is an
    /// open `AF_UNIX SOCK_SEQPACKET` socket. Sets CLOEXEC and O_NONBLOCK on it.
    pub fn from_inherited(fd: RawFd) -> Result<Doorbell, String> {
        if fd < 0 {
            return Err(format!("doorbell fd {fd} is negative"));
        }
        // SAFETY: F_GETFD only queries the descriptor table; any int is acceptable.
        let flags = unsafe { libc::fcntl(fd, libc::F_GETFD) };
        if flags < 0 {
            return Err(format!("doorbell fd {fd} is not an open file descriptor ({})", io::Error::last_os_error()));
        }
        let sockopt = |opt: libc::c_int| -> io::Result<libc::c_int> {
            let mut value: libc::c_int = 0;
            let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
            // SAFETY: value/len point at a c_int-sized buffer as getsockopt requires.
            cvt(unsafe {
                libc::getsockopt(fd, libc::SOL_SOCKET, opt, (&mut value as *mut libc::c_int).cast(), &mut len)
            })?;
            Ok(value)
        };
        match (sockopt(libc::SO_DOMAIN), sockopt(libc::SO_TYPE)) {
            (Ok(libc::AF_UNIX), Ok(libc::SOCK_SEQPACKET)) => {}
            (Err(e), _) | (_, Err(e)) => return Err(format!("doorbell fd {fd} is not a socket ({e})")),
            (Ok(d), Ok(t)) => {
                return Err(format!("doorbell fd {fd} is a socket of domain {d} type {t}, not AF_UNIX SOCK_SEQPACKET"))
            }
        }
        // SAFETY: fd is open (checked); setting CLOEXEC and O_NONBLOCK changes no ownership.
        unsafe {
            libc::fcntl(fd, libc::F_SETFD, flags | libc::FD_CLOEXEC);
            let fl = libc::fcntl(fd, libc::F_GETFL);
            libc::fcntl(fd, libc::F_SETFL, fl | libc::O_NONBLOCK);
        }
        // SAFETY: the fd was handed to this process for exactly this purpose; from now on
        // the Doorbell owns it and nothing else in the process closes it.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Doorbell::new(fd))
    }

    fn new(fd: OwnedFd) -> Doorbell {
        Doorbell { fd, process: std::sync::OnceLock::new(), handed: Default::default() }
    }

    /// Hands `fd` to the other end under `token` (it claims it with
    /// [`Doorbell::take_handed`]), waiting up to `timeout` for room in the socket's
    /// buffer (wakeups the other end has not drained yet may fill it).
    pub fn hand_over(&self, token: u64, fd: RawFd, timeout: Duration) -> io::Result<()> {
        let mut message = [0u8; 16];
        message[..4].copy_from_slice(&FD_MESSAGE);
        message[8..].copy_from_slice(&token.to_le_bytes());
        let deadline = std::time::Instant::now() + timeout;
        loop {
            match unix::send_with_fds(&self.fd, &message, &[fd]) {
                Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => {}
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
                other => return other,
            }
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return Err(io::Error::new(io::ErrorKind::TimedOut, "the doorbell's buffer stayed full"));
            }
            let mut pfd = libc::pollfd { fd: self.fd.as_raw_fd(), events: libc::POLLOUT, revents: 0 };
            // SAFETY: one valid pollfd; the timeout is a plain int.
            unsafe { libc::poll(&mut pfd, 1, left.as_millis().clamp(1, 100) as libc::c_int) };
        }
    }

    /// The descriptor the other end handed over under `token`, if it came (it was sent
    /// before the call that names it, so it is in the socket if not here). Draining
    /// happens under the same lock, so a hand-over another thread is draining right now
    /// is found too.
    pub fn take_handed(&self, token: u64) -> Option<OwnedFd> {
        let mut handed = self.handed.lock().unwrap_or_else(|e| e.into_inner());
        let take = |handed: &mut std::collections::VecDeque<(u64, OwnedFd)>| {
            let at = handed.iter().position(|(t, _)| *t == token)?;
            handed.remove(at).map(|(_, fd)| fd)
        };
        if let Some(fd) = take(&mut handed) {
            return Some(fd);
        }
        self.drain_into(&mut handed);
        take(&mut handed)
    }

    /// Keeps a hand-over that came while draining.
    fn keep_handed(handed: &mut std::collections::VecDeque<(u64, OwnedFd)>, message: &[u8], mut fds: Vec<OwnedFd>) {
        if message.len() != 16 || message[..4] != FD_MESSAGE || fds.len() != 1 {
            return; // not a hand-over: any fds attached are closed here
        }
        let token = u64::from_le_bytes(message[8..16].try_into().unwrap_or_default());
        if handed.len() >= MAX_HANDED {
            handed.pop_front();
        }
        handed.push_back((token, fds.remove(0)));
    }

    /// The cell's side of joining through the socket its host spawned it with (fd 3,
    /// `CELLSHM_DOORBELL_FD`; docs/PROTOCOL.md §2): makes a socket pair of its own, sends
    /// one end with a [`JOIN_REQUEST`], and receives the join record, the link's memfds and
    /// its doorbell on the other end, waiting up to `timeout`. Call it only once the
    /// process is not dumpable: the private pair is then out of reach of other processes
    /// of the uid, and nothing secret ever travels on the inherited socket, which one of
    /// them may have copied while the process was still dumpable.
    pub fn request_join(&self, timeout: Duration) -> Result<(Vec<u8>, Vec<OwnedFd>), String> {
        let (ours, theirs) = unix::seqpacket_pair().map_err(|e| format!("creating the join socket pair: {e}"))?;
        unix::send_with_fds(&self.fd, JOIN_REQUEST, &[theirs.as_raw_fd()])
            .map_err(|e| format!("sending the join request on fd {}: {e}", self.fd.as_raw_fd()))?;
        drop(theirs);
        unix::recv_join_reply(&ours, timeout)
    }

    /// Wakes the other end.
    pub fn ring(&self) -> Signal {
        loop {
            let byte = 1u8;
            // SAFETY: sends one byte from a live local; MSG_NOSIGNAL avoids SIGPIPE.
            let n = unsafe {
                libc::send(self.fd.as_raw_fd(), (&byte as *const u8).cast(), 1, libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL)
            };
            if n == 1 {
                return Signal::Sent;
            }
            let err = io::Error::last_os_error();
            match err.raw_os_error() {
                Some(libc::EINTR) => continue,
                Some(libc::EAGAIN) => return Signal::Coalesced,
                _ => return Signal::PeerDead,
            }
        }
    }

    /// Reads every queued wakeup (keeping any descriptor handed over). Returns false when
    /// the other end is closed.
    pub fn drain(&self) -> bool {
        let mut handed = self.handed.lock().unwrap_or_else(|e| e.into_inner());
        self.drain_into(&mut handed)
    }

    fn drain_into(&self, handed: &mut std::collections::VecDeque<(u64, OwnedFd)>) -> bool {
        let mut buf = [0u8; 16];
        loop {
            match unix::recv_nonblocking(&self.fd, &mut buf) {
                Ok(unix::Received { len: 0, .. }) => return false,
                Ok(unix::Received { len, fds, .. }) => {
                    if !fds.is_empty() {
                        Self::keep_handed(handed, &buf[..len.min(buf.len())], fds);
                    }
                }
                Err(e) => match e.raw_os_error() {
                    Some(libc::EINTR) => continue,
                    Some(libc::EAGAIN) => return true,
                    // Too many fds in one message (the kernel closed them): not ours.
                    _ if e.kind() == io::ErrorKind::InvalidData => continue,
                    _ => return false,
                },
            }
        }
    }

    /// Also treats the exit of the process `pidfd` refers to as the other end's death
    /// (a cell that forked without exec leaves its doorbell open in the child). Threads
    /// already asleep see it at their next wait; callers kick them.
    pub fn watch_process(&self, pidfd: super::process::Pidfd) {
        let _ = self.process.set(pidfd);
    }

    /// True while the other end of the socket is open. One `poll` with a zero timeout.
    pub fn socket_open(&self) -> bool {
        let mut pfd = libc::pollfd { fd: self.fd.as_raw_fd(), events: 0, revents: 0 };
        // SAFETY: one valid pollfd.
        let n = unsafe { libc::poll(&mut pfd, 1, 0) };
        !(n > 0 && pfd.revents & (libc::POLLHUP | libc::POLLERR) != 0)
    }

    /// True while the other end is open and its process, if watched, runs.
    pub fn is_alive(&self) -> bool {
        self.socket_open() && !self.process.get().is_some_and(|p| p.wait_gone(Duration::ZERO))
    }

    /// Sleeps until the doorbell rings, one of `kicks` fires, the peer dies or `timeout`
    /// passes. Wakeups are consumed.
    pub fn wait(&self, kicks: &[&Kick], timeout: Option<Duration>) -> Wake {
        const MAX_KICKS: usize = 2;
        assert!(kicks.len() <= MAX_KICKS);
        let mut fds = [libc::pollfd { fd: self.fd.as_raw_fd(), events: libc::POLLIN, revents: 0 }; 2 + MAX_KICKS];
        for (slot, kick) in fds[1..].iter_mut().zip(kicks) {
            slot.fd = kick.fd.as_raw_fd();
        }
        let mut nfds = 1 + kicks.len();
        if let Some(process) = self.process.get() {
            fds[nfds].fd = process.as_raw_fd();
            nfds += 1;
        }
        // ppoll, not poll: a lease (`runtime::lease`) is a fraction of a millisecond,
        // which poll's millisecond timeout would round up.
        let timespec = timeout.map(|t| libc::timespec {
            tv_sec: t.as_secs().min(libc::time_t::MAX as u64) as libc::time_t,
            tv_nsec: libc::c_long::from(t.subsec_nanos() as i32),
        });
        let timespec_ptr = timespec.as_ref().map_or(std::ptr::null(), |t| t as *const libc::timespec);
        // SAFETY: `nfds` valid pollfds; the timespec (or null: no timeout) lives across
        // the call; a null signal mask leaves the thread's mask as it is.
        let n = unsafe { libc::ppoll(fds.as_mut_ptr(), nfds as libc::nfds_t, timespec_ptr, std::ptr::null()) };
        if n < 0 {
            // EINTR: treat as a spurious wakeup; callers recheck their condition.
            return Wake::Woken;
        }
        if n == 0 {
            return Wake::TimedOut;
        }
        for (pfd, kick) in fds[1..].iter().zip(kicks) {
            if pfd.revents != 0 {
                kick.drain();
            }
        }
        if self.process.get().is_some() && fds[1 + kicks.len()].revents != 0 {
            return Wake::PeerDead;
        }
        let bell = fds[0].revents;
        if bell & (libc::POLLHUP | libc::POLLERR) != 0 {
            return Wake::PeerDead;
        }
        if bell & libc::POLLIN != 0 && !self.drain() {
            return Wake::PeerDead;
        }
        Wake::Woken
    }

    /// Shuts the socket down so the other end sees EOF now (the fd stays open).
    pub fn shutdown(&self) {
        // SAFETY: shutdown on an fd we own.
        unsafe { libc::shutdown(self.fd.as_raw_fd(), libc::SHUT_RDWR) };
    }
}

impl AsRawFd for Doorbell {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

/// An in-process wakeup (eventfd) for the thread sleeping on a doorbell.
#[derive(Debug)]
pub struct Kick {
    fd: OwnedFd,
}

impl Kick {
    /// A new, unsignalled kick.
    pub fn new() -> io::Result<Kick> {
        // SAFETY: eventfd takes no pointers.
        let fd = cvt(unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) })?;
        // SAFETY: eventfd succeeded; the fd is ours.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Kick { fd })
    }

    /// Wakes whoever waits on this kick (now or at its next wait).
    pub fn notify(&self) {
        let one = 1u64;
        // SAFETY: writes 8 bytes from a live local, as eventfd requires. A full counter
        // (EAGAIN) already means "signalled".
        unsafe { libc::write(self.fd.as_raw_fd(), (&one as *const u64).cast(), 8) };
    }

    /// Sleeps until the kick is signalled (true; the notification stays pending) or the
    /// wait is interrupted (false: a signal handler ran, or poll failed): for a binding's
    /// main thread, which must get back to its interpreter's signal handling (Python's
    /// Ctrl-C) but has nothing else to wake it up for.
    pub fn wait_or_signal(&self) -> bool {
        let mut fd = libc::pollfd { fd: self.fd.as_raw_fd(), events: libc::POLLIN, revents: 0 };
        // SAFETY: one live pollfd; no timeout, so 0 (timed out) cannot come back.
        unsafe { libc::poll(&mut fd, 1, -1) > 0 }
    }

    /// Consumes a pending notification, if any.
    pub fn drain(&self) {
        let mut value = 0u64;
        // SAFETY: reads 8 bytes into a live local.
        unsafe { libc::read(self.fd.as_raw_fd(), (&mut value as *mut u64).cast(), 8) };
    }
}

impl AsRawFd for Kick {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

/// Arranges for `child_end` to be open on fd `target` in the child `command` spawns,
/// and in no other process: the dup happens between fork and exec, in the child only.
/// The parent must close `child_end` right after spawning.
pub fn place_in_child(command: &mut Command, child_end: RawFd, target: RawFd) {
    let place = move || -> io::Result<()> {
        if child_end == target {
            // SAFETY: async-signal-safe fcntl on an fd open in this (child) process.
            let flags = cvt(unsafe { libc::fcntl(target, libc::F_GETFD) })?;
            // SAFETY: as above.
            cvt(unsafe { libc::fcntl(target, libc::F_SETFD, flags & !libc::FD_CLOEXEC) })?;
        } else {
            // SAFETY: async-signal-safe dup2; the duplicate does not inherit CLOEXEC.
            cvt(unsafe { libc::dup2(child_end, target) })?;
        }
        Ok(())
    };
    // SAFETY: the closure only calls async-signal-safe functions (fcntl, dup2) and
    // allocates nothing, as required between fork and exec.
    unsafe { command.pre_exec(place) };
}

/// Unix-socket plumbing for attaching a process the host did not spawn: the peer's
/// credentials, and file descriptors passed with SCM_RIGHTS.
pub mod unix {
    use std::io;
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
    use std::time::Duration;

    use super::cvt;

    /// (pid, uid, gid) of the process at the other end of a connected Unix socket.
    pub fn peer_credentials(socket: &impl AsRawFd) -> io::Result<(u32, u32, u32)> {
        let mut cred = libc::ucred { pid: 0, uid: 0, gid: 0 };
        let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
        // SAFETY: `cred`/`len` describe a writable ucred, as SO_PEERCRED requires.
        cvt(unsafe {
            libc::getsockopt(
                socket.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_PEERCRED,
                (&mut cred as *mut libc::ucred).cast(),
                &mut len,
            )
        })?;
        Ok((cred.pid as u32, cred.uid, cred.gid))
    }

    const MAX_FDS: usize = 4;

    /// A connected `AF_UNIX SOCK_SEQPACKET` pair, close-on-exec.
    pub fn seqpacket_pair() -> io::Result<(OwnedFd, OwnedFd)> {
        let mut fds = [0 as RawFd; 2];
        // SAFETY: `fds` has room for the two descriptors socketpair writes.
        cvt(unsafe {
            libc::socketpair(libc::AF_UNIX, libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC, 0, fds.as_mut_ptr())
        })?;
        // SAFETY: socketpair succeeded: both fds are open and owned by nobody else.
        Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
    }

    /// Asks the kernel to attach the sender's credentials (pid, uid, gid, checked by the
    /// kernel: an unprivileged sender cannot state another's) to every message this
    /// socket receives.
    pub fn pass_credentials(socket: &impl AsRawFd) -> io::Result<()> {
        let on: libc::c_int = 1;
        // SAFETY: an int option, passed by pointer and size.
        cvt(unsafe {
            libc::setsockopt(
                socket.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_PASSCRED,
                (&on as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        })?;
        Ok(())
    }

    /// One received message: its bytes, the fds attached (ours now, CLOEXEC) and the
    /// sender's (pid, uid, gid) if the socket passes credentials.
    #[derive(Debug)]
    pub struct Received {
        pub len: usize,
        pub fds: Vec<OwnedFd>,
        pub sender: Option<(u32, u32, u32)>,
    }

    /// Waits up to `timeout` for a message on `socket` (a cell waiting for its join
    /// reply); the message is the join record with the host memory, the cell memory and
    /// the doorbell attached.
    pub fn recv_join_reply(socket: &impl AsRawFd, timeout: Duration) -> Result<(Vec<u8>, Vec<OwnedFd>), String> {
        let mut pfd = libc::pollfd { fd: socket.as_raw_fd(), events: libc::POLLIN, revents: 0 };
        let ms = timeout.as_millis().min(i32::MAX as u128) as i32;
        loop {
            // SAFETY: one valid pollfd.
            let n = unsafe { libc::poll(&mut pfd, 1, ms) };
            if n > 0 {
                break;
            }
            if n == 0 {
                return Err(format!("no join record from the host within {} ms", timeout.as_millis()));
            }
            if io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
                return Err(format!("waiting for the join record: {}", io::Error::last_os_error()));
            }
        }
        let mut buf = [0u8; 512];
        match recv_message(socket, &mut buf) {
            Ok(Received { len: 0, .. }) => Err("the host closed the socket before sending the join record".into()),
            Ok(Received { len, fds, .. }) => Ok((buf[..len].to_vec(), fds)),
            Err(e) => Err(format!("reading the join record: {e}")),
        }
    }

    /// Sends `data` with `fds` attached (SCM_RIGHTS). The fds stay open here.
    pub fn send_with_fds(socket: &impl AsRawFd, data: &[u8], fds: &[RawFd]) -> io::Result<()> {
        assert!(fds.len() <= MAX_FDS && !data.is_empty());
        let mut control = [0u8; 64];
        let mut iov = libc::iovec { iov_base: data.as_ptr() as *mut libc::c_void, iov_len: data.len() };
        // SAFETY: msghdr is plain data; every pointer set below stays valid during sendmsg.
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        if !fds.is_empty() {
            let bytes = std::mem::size_of_val(fds) as u32;
            // SAFETY: CMSG_SPACE only computes a size.
            msg.msg_controllen = unsafe { libc::CMSG_SPACE(bytes) } as usize;
            assert!(msg.msg_controllen <= control.len());
            msg.msg_control = control.as_mut_ptr().cast();
            // SAFETY: the control buffer is large enough for one header with `bytes` of
            // data (asserted above); CMSG_FIRSTHDR/CMSG_DATA point inside it.
            unsafe {
                let header = libc::CMSG_FIRSTHDR(&msg);
                (*header).cmsg_level = libc::SOL_SOCKET;
                (*header).cmsg_type = libc::SCM_RIGHTS;
                (*header).cmsg_len = libc::CMSG_LEN(bytes) as usize;
                std::ptr::copy_nonoverlapping(fds.as_ptr(), libc::CMSG_DATA(header).cast::<RawFd>(), fds.len());
            }
        }
        // SAFETY: `msg` describes valid buffers; MSG_NOSIGNAL avoids SIGPIPE.
        let sent = unsafe { libc::sendmsg(socket.as_raw_fd(), &msg, libc::MSG_NOSIGNAL) };
        if sent < 0 {
            return Err(io::Error::last_os_error());
        }
        if sent as usize != data.len() {
            return Err(io::Error::new(io::ErrorKind::WriteZero, "short write on a Unix socket"));
        }
        Ok(())
    }

    /// Receives up to `buf.len()` bytes and any fds attached (which we then own; each is
    /// made CLOEXEC).
    pub fn recv_with_fds(socket: &impl AsRawFd, buf: &mut [u8]) -> io::Result<(usize, Vec<OwnedFd>)> {
        recv_message(socket, buf).map(|r| (r.len, r.fds))
    }

    /// Receives up to `buf.len()` bytes, any fds attached and the sender's credentials if
    /// the socket passes them (call it once the socket is readable: it waits otherwise).
    pub fn recv_message(socket: &impl AsRawFd, buf: &mut [u8]) -> io::Result<Received> {
        recv_message_with(socket, buf, 0)
    }

    /// [`recv_message`] that never waits (EAGAIN when nothing is queued).
    pub fn recv_nonblocking(socket: &impl AsRawFd, buf: &mut [u8]) -> io::Result<Received> {
        recv_message_with(socket, buf, libc::MSG_DONTWAIT)
    }

    fn recv_message_with(socket: &impl AsRawFd, buf: &mut [u8], flags: libc::c_int) -> io::Result<Received> {
        let mut control = [0u8; 128];
        let mut iov = libc::iovec { iov_base: buf.as_mut_ptr().cast(), iov_len: buf.len() };
        // SAFETY: msghdr is plain data; every pointer set below stays valid during recvmsg.
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = control.len();
        // SAFETY: `msg` describes valid, writable buffers.
        let n = unsafe { libc::recvmsg(socket.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC | flags) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut fds = Vec::new();
        let mut sender = None;
        // SAFETY: the kernel filled `control` (msg_controllen says how much); the CMSG
        // macros walk only within it, and each SCM_RIGHTS entry holds fds now ours.
        unsafe {
            let mut header = libc::CMSG_FIRSTHDR(&msg);
            while !header.is_null() {
                if (*header).cmsg_level == libc::SOL_SOCKET && (*header).cmsg_type == libc::SCM_RIGHTS {
                    let data = libc::CMSG_DATA(header).cast::<RawFd>();
                    let count = ((*header).cmsg_len - libc::CMSG_LEN(0) as usize) / std::mem::size_of::<RawFd>();
                    for i in 0..count {
                        fds.push(OwnedFd::from_raw_fd(std::ptr::read_unaligned(data.add(i))));
                    }
                } else if (*header).cmsg_level == libc::SOL_SOCKET && (*header).cmsg_type == libc::SCM_CREDENTIALS {
                    let cred = std::ptr::read_unaligned(libc::CMSG_DATA(header).cast::<libc::ucred>());
                    sender = Some((cred.pid as u32, cred.uid, cred.gid));
                }
                header = libc::CMSG_NXTHDR(&msg, header);
            }
        }
        if msg.msg_flags & libc::MSG_CTRUNC != 0 {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "too many file descriptors in one message"));
        }
        Ok(Received { len: n as usize, fds, sender })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[test]
    fn descriptors_handed_over_among_wakeups_are_kept_by_token_and_bounded() {
        let (a, b_fd) = pair().unwrap();
        let b = Doorbell::new(b_fd);
        let file = |name: &str| crate::shm::memfd::create(name, 4096).unwrap();
        let first = file("first");
        a.ring();
        a.hand_over(7, first.as_raw_fd(), Duration::from_secs(1)).unwrap();
        a.ring();
        // Draining (as a waiting thread does) keeps it; taking finds it once.
        assert!(b.drain());
        assert_eq!(b.take_handed(8).map(|_| ()), None);
        let got = b.take_handed(7).expect("handed over");
        assert_eq!(std::fs::File::from(got).metadata().unwrap().len(), 4096);
        assert!(b.take_handed(7).is_none());
        // Taken straight from the socket when nobody drained yet.
        a.hand_over(9, first.as_raw_fd(), Duration::from_secs(1)).unwrap();
        assert!(b.take_handed(9).is_some());
        // At most MAX_HANDED wait unclaimed: the oldest go.
        for token in 0..MAX_HANDED as u64 + 3 {
            a.hand_over(100 + token, first.as_raw_fd(), Duration::from_secs(1)).unwrap();
        }
        assert!(b.drain());
        assert!(b.take_handed(100).is_none() && b.take_handed(102).is_none());
        assert!(b.take_handed(103).is_some());
        // Two fds, or fds on a message that is not a hand-over: closed, not kept.
        let second = file("second");
        unix::send_with_fds(&a.fd, b"FDTX\0\0\0\0\x05\0\0\0\0\0\0\0", &[first.as_raw_fd(), second.as_raw_fd()])
            .unwrap();
        unix::send_with_fds(&a.fd, b"x", &[first.as_raw_fd()]).unwrap();
        assert!(b.drain());
        assert!(b.take_handed(5).is_none());
        drop(a);
        assert!(!b.drain(), "the other end's close still reads as death");
    }

    #[test]
    fn ring_wait_coalesce_and_death() {
        let (a, b_fd) = pair().unwrap();
        let b = Doorbell::new(b_fd);
        let kick = Kick::new().unwrap();
        assert_eq!(b.wait(&[&kick], Some(Duration::from_millis(1))), Wake::TimedOut);
        assert_eq!(a.ring(), Signal::Sent);
        assert_eq!(b.wait(&[&kick], Some(Duration::from_secs(1))), Wake::Woken);
        assert_eq!(b.wait(&[&kick], Some(Duration::ZERO)), Wake::TimedOut, "wakeups are consumed");
        let mut saw_coalesced = false;
        for _ in 0..100_000 {
            if a.ring() == Signal::Coalesced {
                saw_coalesced = true;
                break;
            }
        }
        assert!(saw_coalesced, "a full buffer coalesces instead of blocking");
        assert!(b.drain());
        kick.notify();
        assert_eq!(b.wait(&[&kick], Some(Duration::from_secs(1))), Wake::Woken);
        assert!(a.is_alive());
        drop(b);
        // Other tests of this binary fork: a child between fork and exec briefly holds a
        // copy of every fd (CLOEXEC closes it at exec), so EOF may come a moment later.
        let start = Instant::now();
        assert_eq!(a.wait(&[&kick], Some(Duration::from_secs(5))), Wake::PeerDead);
        assert!(start.elapsed() < Duration::from_secs(1));
        assert!(!a.is_alive());
        assert_eq!(a.ring(), Signal::PeerDead);
    }

    #[test]
    fn fds_travel_over_a_unix_socket_with_credentials() {
        let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
        let (pid, uid, _) = unix::peer_credentials(&b).unwrap();
        assert_eq!(pid, std::process::id());
        // SAFETY: geteuid has no preconditions.
        assert_eq!(uid, unsafe { libc::geteuid() });
        let (bell, _theirs) = pair().unwrap();
        unix::send_with_fds(&a, b"hello", &[bell.as_raw_fd()]).unwrap();
        let mut buf = [0u8; 16];
        let (n, fds) = unix::recv_with_fds(&b, &mut buf).unwrap();
        assert_eq!(&buf[..n], b"hello");
        assert_eq!(fds.len(), 1);
        let received =
            Doorbell::from_inherited(std::os::fd::IntoRawFd::into_raw_fd(fds.into_iter().next().unwrap())).unwrap();
        assert!(received.is_alive());
    }

    #[test]
    fn inherited_fds_are_checked() {
        assert!(Doorbell::from_inherited(-1).unwrap_err().contains("negative"));
        assert!(Doorbell::from_inherited(9_999).unwrap_err().contains("not an open file descriptor"));
        let file = std::fs::File::open("/dev/null").unwrap();
        let err = Doorbell::from_inherited(file.as_raw_fd()).unwrap_err();
        assert!(err.contains("not a socket"), "{err}");
        let (_a, b) = pair().unwrap();
        let raw = std::os::fd::IntoRawFd::into_raw_fd(b);
        let bell = Doorbell::from_inherited(raw).unwrap();
        assert!(bell.is_alive());
    }
}

#[cfg(all(test, loom))]
mod loom_model {
    use super::handshake::{must_ring, try_park, ParkedFlag};
    use loom::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
    use loom::sync::Arc;

    struct LoomFlag(AtomicU32);

    impl ParkedFlag for LoomFlag {
        fn load(&self, order: Ordering) -> u32 {
            self.0.load(order)
        }
        fn store(&self, value: u32, order: Ordering) {
            self.0.store(value, order)
        }
        fn fence(&self) {
            loom::sync::atomic::fence(Ordering::SeqCst)
        }
    }

    /// No lost wakeup: a receiver that decides to sleep while a sender publishes is
    /// either told to keep polling (it saw the descriptor) or woken by the doorbell.
    #[test]
    fn parked_handshake_never_loses_a_wakeup() {
        loom::model(|| {
            let parked = Arc::new(LoomFlag(AtomicU32::new(0)));
            let tail = Arc::new(AtomicU64::new(0));
            let rung = Arc::new(AtomicBool::new(false));
            let sender = {
                let (parked, tail, rung) = (parked.clone(), tail.clone(), rung.clone());
                loom::thread::spawn(move || {
                    tail.store(1, Ordering::Release);
                    if must_ring(&*parked) {
                        rung.store(true, Ordering::Relaxed);
                    }
                })
            };
            let slept = try_park(&*parked, || tail.load(Ordering::Acquire) != 0);
            sender.join().unwrap();
            if slept {
                assert!(rung.load(Ordering::Relaxed), "receiver slept, descriptor published, no doorbell");
            }
        });
    }
}
