//! Cells that speak the protocol by hand, as a cell in another language would from
//! docs/PROTOCOL.md: `cellshm-testkit hostile` attacks the host through every descriptor it holds,
//! `bad-hello` joins and sends a HELLO the host must refuse, `ping-flood` stops
//! reading and floods PINGs, `attach-flood` hammers a hub's socket with attach requests.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use cellshm::wire::{flags, ControlKind, Descriptor, Hello, ROLE_CELL, SLOT_INLINE};
use cellshm::{Error, Status};

/// Where things lie, as a foreign cell writes them down from docs/PROTOCOL.md (§3 the
/// link's memory, §4 ring entries, §6 the descriptor). The tests below hold them to the
/// library's own `cellshm::wire::frame`, so the document, the library and this cell
/// cannot drift apart unnoticed.
mod at {
    /// Our ring's tail, in our memory; the host's ring towards us has its tail at the
    /// same offset in its memory.
    pub const RING_TAIL: usize = 384;
    /// The host's head of our ring, in its memory.
    pub const PEER_HEAD: usize = 256;
    /// Our parked flag, in our memory.
    pub const PARKED: usize = 128;
    /// The first entry, after the ring's 64-byte header.
    pub const ENTRIES: usize = RING_TAIL + 64;
    /// Bytes per entry: the descriptor's cache line and the inline extension's.
    pub const ENTRY_SIZE: usize = 128;
    /// The descriptor's `channel_id`.
    pub const CHANNEL: usize = 8;
    /// The descriptor's `flags` and `status`: the word written last, with the lap parity.
    pub const FLAGS_WORD: usize = 16;
    /// The descriptor's bytes after that word.
    pub const AFTER_FLAGS_WORD: usize = 24;
    /// The inline payload bytes past the descriptor's own 16.
    pub const EXTENSION: usize = 64;
}

fn fail(m: impl Into<String>) -> Error {
    Error::new(Status::Internal, m.into())
}

/// What arrives first on a doorbell: the join record and the two memfds.
#[derive(Debug)]
pub struct Joined {
    pub doorbell: OwnedFd,
    pub record: Vec<u8>,
    pub host_memory: OwnedFd,
    pub cell_memory: OwnedFd,
}

impl Joined {
    pub fn u32_at(&self, at: usize) -> u32 {
        u32::from_le_bytes(self.record[at..at + 4].try_into().unwrap_or_default())
    }
    pub fn peer_id(&self) -> u32 {
        self.u32_at(12)
    }
    pub fn epoch(&self) -> u32 {
        self.u32_at(16)
    }
    pub fn host_pid(&self) -> u32 {
        self.u32_at(20)
    }
    pub fn size(&self) -> usize {
        u64::from_le_bytes(self.record[96..104].try_into().unwrap_or_default()) as usize
    }
    pub fn hub_name(&self) -> String {
        let len = (self.u32_at(104) as usize).min(64);
        String::from_utf8_lossy(&self.record[112..112 + len]).into_owned()
    }
}

/// Joins as §2 of the protocol says, by hand: not dumpable first, then a join request
/// on the socket in `CELLSHM_DOORBELL_FD` carrying one end of a socket pair of our own,
/// and the join record with the host memory, the cell memory and the doorbell on the
/// other end.
pub fn join_by_hand() -> Result<Joined, Error> {
    let fd: RawFd = std::env::var("CELLSHM_DOORBELL_FD")
        .ok()
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| fail("CELLSHM_DOORBELL_FD is not set"))?;
    // SAFETY: the host handed us this descriptor; we own it from now on.
    let bootstrap = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut pair = [0 as RawFd; 2];
    // SAFETY: prctl takes no pointers; socketpair writes two ints into `pair`.
    unsafe {
        libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0);
        if libc::socketpair(libc::AF_UNIX, libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC, 0, pair.as_mut_ptr()) != 0 {
            return Err(fail(format!("socketpair: {}", errno())));
        }
    }
    // SAFETY: socketpair succeeded: both are ours.
    let (private, theirs) = unsafe { (OwnedFd::from_raw_fd(pair[0]), OwnedFd::from_raw_fd(pair[1])) };
    send_fds(&bootstrap, b"CSHMJREQ", &[theirs.as_raw_fd()])?;
    drop((theirs, bootstrap));
    let (record, fds) = recv_fds(&private)?;
    if record.len() != 176 {
        return Err(fail(format!("join record of {} bytes", record.len())));
    }
    let mut fds = fds.into_iter();
    let (Some(host_memory), Some(cell_memory), Some(doorbell)) = (fds.next(), fds.next(), fds.next()) else {
        return Err(fail("the join record came without the two memfds and the doorbell"));
    };
    // SAFETY: F_GETFL/F_SETFL on a descriptor we own.
    unsafe {
        let flags = libc::fcntl(doorbell.as_raw_fd(), libc::F_GETFL);
        libc::fcntl(doorbell.as_raw_fd(), libc::F_SETFL, flags | libc::O_NONBLOCK);
    }
    Ok(Joined { doorbell, record, host_memory, cell_memory })
}

/// Sends `data` with `fds` attached (SCM_RIGHTS).
pub fn send_fds(socket: &OwnedFd, data: &[u8], fds: &[RawFd]) -> Result<(), Error> {
    let mut control = [0u8; 64];
    let mut iov = libc::iovec { iov_base: data.as_ptr() as *mut libc::c_void, iov_len: data.len() };
    // SAFETY: msghdr is plain data; the pointers below stay valid during sendmsg, and the
    // control buffer holds one header with `fds` (at most a few).
    let sent = unsafe {
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        let bytes = std::mem::size_of_val(fds) as u32;
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = libc::CMSG_SPACE(bytes) as usize;
        let header = libc::CMSG_FIRSTHDR(&msg);
        (*header).cmsg_level = libc::SOL_SOCKET;
        (*header).cmsg_type = libc::SCM_RIGHTS;
        (*header).cmsg_len = libc::CMSG_LEN(bytes) as usize;
        std::ptr::copy_nonoverlapping(fds.as_ptr(), libc::CMSG_DATA(header).cast::<RawFd>(), fds.len());
        libc::sendmsg(socket.as_raw_fd(), &msg, libc::MSG_NOSIGNAL)
    };
    if sent != data.len() as isize {
        return Err(fail(format!("sendmsg: {}", errno())));
    }
    Ok(())
}

/// Receives one message (blocking) and the fds attached to it.
pub fn recv_fds(socket: &OwnedFd) -> Result<(Vec<u8>, Vec<OwnedFd>), Error> {
    receive(socket, 0).map_err(|e| fail(format!("recvmsg: {e}")))
}

/// One `recvmsg` on `socket` with `flags` (close-on-exec added): the message and the
/// descriptors that came with it (an empty message at EOF).
fn receive(socket: &OwnedFd, flags: i32) -> std::io::Result<(Vec<u8>, Vec<OwnedFd>)> {
    let mut buf = [0u8; 512];
    let mut control = [0u8; 128];
    let mut iov = libc::iovec { iov_base: buf.as_mut_ptr().cast(), iov_len: buf.len() };
    // SAFETY: msghdr is plain data; the pointers below stay valid during recvmsg.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = control.len();
    // SAFETY: a recvmsg into live buffers.
    let n = unsafe { libc::recvmsg(socket.as_raw_fd(), &mut msg, flags | libc::MSG_CMSG_CLOEXEC) };
    if n < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let mut fds = Vec::new();
    // SAFETY: walks the control data the kernel filled in; each descriptor it passed is
    // ours now (also under MSG_PEEK, which installs them too) and owned once here.
    unsafe {
        let mut header = libc::CMSG_FIRSTHDR(&msg);
        while !header.is_null() {
            if (*header).cmsg_type == libc::SCM_RIGHTS {
                let data = libc::CMSG_DATA(header).cast::<RawFd>();
                let count = ((*header).cmsg_len - libc::CMSG_LEN(0) as usize) / 4;
                for i in 0..count {
                    fds.push(OwnedFd::from_raw_fd(std::ptr::read_unaligned(data.add(i))));
                }
            }
            header = libc::CMSG_NXTHDR(&msg, header);
        }
    }
    Ok((buf[..n as usize].to_vec(), fds))
}

fn errno() -> String {
    std::io::Error::last_os_error().to_string()
}

/// One attack: `Ok(how it was refused)` or `Err(what it achieved)`.
type Outcome = Result<String, String>;

fn refused_if(rc: i64, what: &str) -> Outcome {
    if rc < 0 {
        Ok(errno())
    } else {
        Err(format!("{what} succeeded"))
    }
}

fn map(fd: RawFd, size: usize, prot: i32) -> Result<*mut libc::c_void, String> {
    // SAFETY: a new mapping; nothing else is touched.
    let p = unsafe { libc::mmap(std::ptr::null_mut(), size, prot, libc::MAP_SHARED, fd, 0) };
    if p == libc::MAP_FAILED {
        Err(errno())
    } else {
        Ok(p)
    }
}

fn size_of_fd(fd: RawFd) -> i64 {
    // SAFETY: stat is plain data; fstat writes it.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    unsafe { libc::fstat(fd, &mut st) };
    st.st_size
}

// Thin wrappers: each syscall below takes a descriptor we hold and live arguments, so
// calling it cannot affect this process's memory; the outcome is what is tested.
fn ftruncate(fd: RawFd, len: usize) -> i64 {
    // SAFETY: see above.
    unsafe { libc::ftruncate(fd, len as libc::off_t) as i64 }
}
fn fallocate(fd: RawFd, mode: i32, offset: usize, len: usize) -> i64 {
    // SAFETY: see above.
    unsafe { libc::fallocate(fd, mode, offset as libc::off_t, len as libc::off_t) as i64 }
}
fn pwrite(fd: RawFd) -> i64 {
    // SAFETY: see above; one byte from a static buffer.
    unsafe { libc::pwrite(fd, b"X".as_ptr().cast(), 1, 0) as i64 }
}
pub(crate) fn mprotect_writable(p: *mut libc::c_void, size: usize) -> i64 {
    // SAFETY: `p..p+size` is a mapping this process made; only its protection changes.
    unsafe { libc::mprotect(p, size, libc::PROT_READ | libc::PROT_WRITE) as i64 }
}
fn mremap_double(p: *mut libc::c_void, size: usize) -> *mut libc::c_void {
    // SAFETY: `p..p+size` is a mapping this process made and nothing refers into it.
    unsafe { libc::mremap(p, size, 2 * size, libc::MREMAP_MAYMOVE) }
}

/// The attacks on descriptors that refer to the host's memory.
fn attack_host_memory(label: &str, fd: RawFd, size: usize, report: &mut Vec<(String, Outcome)>) {
    let mut add = |what: &str, outcome: Outcome| report.push((format!("{label}: {what}"), outcome));
    add("ftruncate to 0", refused_if(ftruncate(fd, 0), "shrinking"));
    add("ftruncate to twice its size", refused_if(ftruncate(fd, 2 * size), "growing"));
    let punch = libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE;
    add("fallocate punch hole", refused_if(fallocate(fd, punch, 0, 4096), "punching a hole"));
    add("fallocate beyond its end", refused_if(fallocate(fd, 0, size, 4096), "growing"));
    add("write", refused_if(pwrite(fd), "writing"));
    add(
        "mmap PROT_WRITE MAP_SHARED",
        match map(fd, size, libc::PROT_READ | libc::PROT_WRITE) {
            Ok(_) => Err("a writable shared mapping".into()),
            Err(e) => Ok(e),
        },
    );
    let outcome = match map(fd, size, libc::PROT_READ) {
        Err(e) => Ok(format!("not even mappable read-only: {e}")),
        Ok(p) => refused_if(mprotect_writable(p, size), "making the mapping writable"),
    };
    add("mprotect a read-only mapping to PROT_WRITE", outcome);
    let outcome = match map(fd, size, libc::PROT_READ) {
        Err(e) => Ok(format!("not mappable: {e}")),
        Ok(p) => {
            let moved = mremap_double(p, size);
            if moved == libc::MAP_FAILED {
                Ok(errno())
            } else if mprotect_writable(moved, size) == 0 {
                Err("mremap gave a writable mapping".into())
            } else if size_of_fd(fd) != size as i64 {
                Err("mremap resized the memfd".into())
            } else {
                Ok(format!("remapped, still read-only ({}), memfd still {size} bytes", errno()))
            }
        }
    };
    add("mremap to twice its size", outcome);
}

/// `hostile`: joins by hand and tries everything a cell could do to the host or to
/// other cells; prints one line per attempt and fails if any succeeded. With
/// `HOSTILE_ONLY=socket` only the hub-socket attempts run (for a same-uid run as root,
/// where /proc access is root's privilege, outside the threat model).
pub fn hostile() -> Result<(), Error> {
    let joined = join_by_hand()?;
    let only_socket = std::env::var("HOSTILE_ONLY").is_ok_and(|v| v == "socket");
    let size = joined.size();
    let host = joined.host_pid();
    let mut report: Vec<(String, Outcome)> = Vec::new();
    if !only_socket {
        attack_host_memory("host memory fd", joined.host_memory.as_raw_fd(), size, &mut report);
        // Reopening the same memfd read-write through /proc/self/fd.
        let reopened = format!("/proc/self/fd/{}", joined.host_memory.as_raw_fd());
        match std::fs::OpenOptions::new().read(true).write(true).open(&reopened) {
            Err(e) => report.push(("reopen host memory read-write".into(), Ok(e.to_string()))),
            Ok(f) => attack_host_memory("host memory reopened read-write", f.as_raw_fd(), size, &mut report),
        }
        // The cell's own memory is the host's to read: it must not change size either.
        let cell = joined.cell_memory.as_raw_fd();
        // SAFETY: ftruncate on a descriptor we hold.
        report.push((
            "cell memory: ftruncate to 0".into(),
            refused_if(unsafe { libc::ftruncate(cell, 0) } as i64, "shrinking"),
        ));
        // SAFETY: as above.
        let grown = unsafe { libc::ftruncate(cell, 2 * size as i64) } as i64;
        report.push(("cell memory: ftruncate to twice its size".into(), refused_if(grown, "growing")));
        for dir in ["fd", "map_files"] {
            let path = format!("/proc/{host}/{dir}");
            let outcome = match std::fs::read_dir(&path) {
                Err(e) => Ok(e.to_string()),
                Ok(entries) => Err(format!("listed {} entries", entries.count())),
            };
            report.push((format!("list {path}"), outcome));
        }
        let opened: Vec<u32> =
            (0..256).filter(|n| std::fs::File::open(format!("/proc/{host}/fd/{n}")).is_ok()).collect();
        let outcome =
            if opened.is_empty() { Ok("none of 0..256 opened".into()) } else { Err(format!("opened {opened:?}")) };
        report.push((format!("open /proc/{host}/fd/N"), outcome));
        let outcome = match std::fs::read(format!("/proc/{host}/mem")) {
            Err(e) => Ok(e.to_string()),
            Ok(_) => Err("read the host's memory".into()),
        };
        report.push((format!("read /proc/{host}/mem"), outcome));
    }
    // The hub's socket: INSPECT would hand out every link's memory.
    let status = std::fs::read_to_string(format!("/proc/{host}/status")).unwrap_or_default();
    let host_uid: u32 = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|u| u.parse().ok())
        .unwrap_or(0);
    let hub = format!("{host_uid}/{}", joined.hub_name());
    let outcome = match cellshm::snapshot(&hub) {
        Err(e) => Ok(e.to_string()),
        Ok(snap) => Err(format!("INSPECT gave {} links", snap.peers.len())),
    };
    report.push((format!("INSPECT hub {hub}"), outcome));
    let mut broken = 0;
    for (what, outcome) in &report {
        match outcome {
            Ok(why) => println!("refused  {what}: {why}"),
            Err(how) => {
                broken += 1;
                println!("BROKEN   {what}: {how}")
            }
        }
    }
    println!("hostile: {} attempts, {broken} succeeded", report.len());
    if broken == 0 {
        Ok(())
    } else {
        Err(fail(format!("{broken} attacks succeeded")))
    }
}

/// A link joined by hand, as a foreign cell would: both memfds mapped (ours read-write,
/// the host's read-only) and our descriptor ring, written at the offsets
/// docs/PROTOCOL.md §3 gives.
struct RawLink {
    joined: Joined,
    cell: *mut u8,
    host: *const u8,
    capacity: u64,
    /// Frames published so far (our private copy of the ring's tail).
    sent: u64,
}

impl RawLink {
    /// Joins by hand and maps both memfds; our parked flag says "polling", so the host
    /// never rings us (we never read).
    fn open() -> Result<RawLink, Error> {
        let joined = join_by_hand()?;
        let size = joined.size();
        let cell = map(joined.cell_memory.as_raw_fd(), size, libc::PROT_READ | libc::PROT_WRITE).map_err(fail)?;
        let host = map(joined.host_memory.as_raw_fd(), size, libc::PROT_READ).map_err(fail)?;
        let capacity = u64::from(joined.u32_at(24));
        let link = RawLink { joined, cell: cell.cast(), host: host.cast(), capacity, sent: 0 };
        link.word32(link.cell, at::PARKED).store(0, Ordering::SeqCst);
        Ok(link)
    }

    /// The 4-aligned shared word at `offset` of a mapping (atomics are how shared words
    /// are read and written).
    fn word32(&self, base: *const u8, offset: usize) -> &AtomicU32 {
        // SAFETY: `offset` is one of the protocol's 4-aligned offsets, inside a mapping of
        // `size` bytes that lives as long as the process (never unmapped).
        unsafe { &*base.add(offset).cast::<AtomicU32>() }
    }

    fn word64(&self, base: *const u8, offset: usize) -> &AtomicU64 {
        // SAFETY: as for `word32`, 8-aligned.
        unsafe { &*base.add(offset).cast::<AtomicU64>() }
    }

    /// A HELLO for `epoch` (the right one is the record's).
    fn hello(&self, epoch: u32) -> Descriptor {
        let hello = Hello {
            major: 2,
            minor: 0,
            role: ROLE_CELL,
            epoch: epoch & 0x00ff_ffff,
            peer_id: self.joined.peer_id(),
            max_payload: 0,
        }
        .encode();
        Descriptor {
            msg_id: 1,
            method_id: ControlKind::Hello as u32,
            flags: flags::CONTROL,
            payload_len: 16,
            slot: SLOT_INLINE,
            inline: hello,
            ..Descriptor::default()
        }
    }

    /// Publishes `d` on our ring and rings the doorbell; false if the ring is full.
    fn try_push(&mut self, d: &Descriptor) -> bool {
        self.try_push_with(d, &[])
    }

    /// Publishes an inline frame of up to 80 payload bytes: `d` with the first 16 in its
    /// `inline`, and the rest (`extension`, up to 64) in the entry's second line.
    fn try_push_with(&mut self, d: &Descriptor, extension: &[u8]) -> bool {
        // Our ring's tail is at 384 in our memory; the host's head of it at 256 in its.
        if self.sent.wrapping_sub(self.word64(self.host, at::PEER_HEAD).load(Ordering::Acquire)) >= self.capacity {
            return false;
        }
        // Entries are two cache lines (docs/PROTOCOL.md §4); these frames carry at most 16
        // payload bytes, so only the first line (the descriptor) is written.
        let entry = at::ENTRIES + (self.sent % self.capacity) as usize * at::ENTRY_SIZE;
        // Every byte but the flags/status word first; that word last, with Release and
        // the lap's parity in the top bit of flags (1 on lap 0, 0 on lap 1, ...), which
        // is what the host polls (docs/PROTOCOL.md §4).
        let bytes = d.encode();
        let extension = &extension[..extension.len().min(64)];
        // SAFETY: the entry lies inside our ring, in our read-write mapping.
        unsafe {
            std::ptr::copy_nonoverlapping(extension.as_ptr(), self.cell.add(entry + at::EXTENSION), extension.len());
            std::ptr::copy_nonoverlapping(bytes.as_ptr(), self.cell.add(entry), at::FLAGS_WORD);
            std::ptr::copy_nonoverlapping(
                bytes.as_ptr().add(at::AFTER_FLAGS_WORD),
                self.cell.add(entry + at::AFTER_FLAGS_WORD),
                bytes.len() - at::AFTER_FLAGS_WORD,
            );
        }
        let mut word = u64::from_le_bytes(bytes[at::FLAGS_WORD..at::AFTER_FLAGS_WORD].try_into().unwrap_or_default());
        if (self.sent / self.capacity) % 2 == 0 {
            word |= u64::from(flags::LAP);
        }
        self.word64(self.cell, entry + at::FLAGS_WORD).store(word, Ordering::Release);
        self.sent += 1;
        self.word64(self.cell, at::RING_TAIL).store(self.sent, Ordering::Release);
        // SAFETY: a one-byte send on our doorbell; EAGAIN (coalesced) is fine.
        unsafe {
            libc::send(
                self.joined.doorbell.as_raw_fd(),
                b"\x01".as_ptr().cast(),
                1,
                libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
            )
        };
        true
    }

    /// Whether the host has taken every frame we published off the ring.
    fn all_taken(&self) -> bool {
        self.word64(self.host, at::PEER_HEAD).load(Ordering::Acquire) == self.sent
    }
}

/// `bad-hello`: joins by hand and sends a HELLO for the wrong epoch, then waits for
/// the host to drop it (doorbell EOF). Exits 0 once dropped.
///
/// `bad-hello request-first`: sends a request for `Host.secret` before a correct HELLO;
/// the host must drop it without serving the request.
pub fn bad_hello(request_first: bool) -> Result<(), Error> {
    let mut link = RawLink::open()?;
    if request_first {
        let request = Descriptor {
            msg_id: 1,
            method_id: cellshm::method_id("Host.secret"),
            flags: flags::REQUEST,
            slot: SLOT_INLINE,
            ..Descriptor::default()
        };
        let hello = link.hello(link.joined.epoch());
        if !link.try_push(&request) || !link.try_push(&hello) {
            return Err(fail("a new ring is full"));
        }
    } else {
        let hello = link.hello(link.joined.epoch() + 7);
        if !link.try_push(&hello) {
            return Err(fail("a new ring is full"));
        }
    }
    if host_gone(&link.joined.doorbell, 10_000) {
        println!("bad-hello: dropped by the host");
        return Ok(());
    }
    Err(fail("the host did not drop a cell with a bad HELLO within 10 s"))
}

/// The abstract socket name of the hub given as `UID/NAME` on the command line.
fn hub_address(hub: &str) -> Result<String, Error> {
    let (uid, name) = hub.split_once('/').ok_or_else(|| Error::new(Status::InvalidArgument, "HUB is UID/NAME"))?;
    Ok(format!("cellshm/{uid}/{name}"))
}

/// A SOCK_SEQPACKET connection to the abstract socket `address`, made by hand as a
/// foreign client would (docs/PROTOCOL.md §2).
fn connect_abstract(address: &str) -> std::io::Result<OwnedFd> {
    // SAFETY: socket takes no pointers; a non-negative result is a descriptor we own.
    let fd = unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: as above: ours from here on, closed on drop.
    let socket = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: sockaddr_un is plain data.
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    for (d, s) in addr.sun_path[1..].iter_mut().zip(address.bytes()) {
        *d = s as libc::c_char;
    }
    let len = (2 + 1 + address.len()) as libc::socklen_t;
    // SAFETY: `addr` is a live sockaddr_un of at least `len` bytes.
    if unsafe { libc::connect(socket.as_raw_fd(), (&addr as *const libc::sockaddr_un).cast(), len) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(socket)
}

/// `attach-flood N HUB`: N attach requests, each refused; prints how many.
pub fn attach_flood(args: &[String]) -> Result<(), Error> {
    let (Some(n), Some(hub)) = (args.first().and_then(|n| n.parse::<u64>().ok()), args.get(1)) else {
        return Err(Error::new(Status::InvalidArgument, "usage: __attach-flood N HUB"));
    };
    let address = hub_address(hub)?;
    let mut refused = 0u64;
    // What happened to the requests that were not refused, with the first example of each.
    let mut other: std::collections::BTreeMap<&str, (u64, String)> = Default::default();
    let mut note = |kind: &'static str, example: String| other.entry(kind).or_insert((0, example)).0 += 1;
    for _ in 0..n {
        let socket = match connect_abstract(&address) {
            Ok(socket) => socket,
            Err(e) => {
                note("connect failed", e.to_string());
                continue;
            }
        };
        let fd = socket.as_raw_fd();
        // SAFETY: a send from a live 13-byte buffer on a descriptor we own.
        if unsafe { libc::send(fd, b"ATTACH flood\n".as_ptr().cast(), 13, libc::MSG_NOSIGNAL) } != 13 {
            note("send failed", std::io::Error::last_os_error().to_string());
            continue;
        }
        let mut buf = [0u8; 256];
        // SAFETY: a recv into a live buffer of its length, on a descriptor we own.
        let got = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), 0) };
        if got > 8 && buf.starts_with(b"REFUSED") {
            refused += 1;
        } else if got < 0 {
            note("recv failed", std::io::Error::last_os_error().to_string());
        } else {
            note("other answer", String::from_utf8_lossy(&buf[..got as usize]).into_owned());
        }
    }
    for (kind, (count, example)) in &other {
        println!("attach-flood: {count} {kind}, first: {example:?}");
    }
    println!("attach-flood: {refused} of {n} refused");
    Ok(())
}

/// What a flooding cell sends after its HELLO.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flood {
    /// PING after PING, forever.
    Pings,
    /// `n` requests of `Host.echo`, whose responses it never reads.
    Requests(u64),
    /// `n` notifications (NO_REPLY) of `Host.count`.
    Notifications(u64),
    /// `n` streams opened to `Host.hold`, none ever read or closed.
    Streams(u64),
}

/// `ping-flood`, `request-flood N`, `notify-flood N`, `stream-flood N`: joins by hand with a correct
/// HELLO, then never reads its ring and sends as fast as the host consumes. Prints
/// `flooding` once its ring has been full, `sent` when a finite flood is all out and
/// `taken` once the host has taken all of it off the ring; then waits to be killed.
pub fn flood(kind: Flood) -> Result<(), Error> {
    use std::io::Write;
    let mut link = RawLink::open()?;
    let hello = link.hello(link.joined.epoch());
    let total = match kind {
        Flood::Pings => u64::MAX,
        Flood::Requests(n) | Flood::Notifications(n) | Flood::Streams(n) => n.saturating_add(1),
    };
    let frame = |next: u64| -> Descriptor {
        let mut d = Descriptor { msg_id: next + 1, slot: SLOT_INLINE, ..Descriptor::default() };
        match (next, kind) {
            (0, _) => return hello,
            (_, Flood::Pings) => {
                d.flags = flags::CONTROL;
                d.method_id = ControlKind::Ping as u32;
            }
            (_, Flood::Requests(_)) => {
                d.flags = flags::REQUEST;
                d.method_id = cellshm::method_id("Host.echo");
                d.payload_len = 8;
                d.inline[..8].copy_from_slice(&next.to_le_bytes());
            }
            (_, Flood::Notifications(_)) => {
                d.flags = flags::REQUEST | flags::NO_REPLY;
                d.method_id = cellshm::method_id("Host.count");
            }
            (_, Flood::Streams(_)) => {
                // OPEN on a channel of the cell's parity (even), with a window of 8.
                d.flags = flags::REQUEST;
                d.channel_id = (2 * next) as u32;
                d.method_id = cellshm::method_id("Host.hold");
                d.credit = 8;
            }
        }
        d
    };
    let mut next: u64 = 0;
    let mut said_flooding = false;
    // The test may stop reading our stdout: a closed pipe must not end the flood.
    // SAFETY: setting a signal's disposition to SIG_IGN has no preconditions.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) };
    let say = |what: &str| {
        let mut out = std::io::stdout();
        let _ = writeln!(out, "{what}").and_then(|_| out.flush());
    };
    while next < total {
        if link.try_push(&frame(next)) {
            next += 1;
        } else {
            if !said_flooding {
                said_flooding = true;
                say("flooding");
            }
            if host_gone(&link.joined.doorbell, 0) {
                return Ok(());
            }
            std::thread::yield_now();
        }
    }
    say("sent");
    while !link.all_taken() {
        if host_gone(&link.joined.doorbell, 0) {
            return Ok(());
        }
        std::thread::yield_now();
    }
    say("taken");
    // Until the host closes the doorbell (or we are killed).
    while !host_gone(&link.joined.doorbell, 1000) {}
    Ok(())
}

/// `pour-and-watch`: joins by hand, opens a stream to `Host.pour` granting it a million
/// DATA frames of credit, and never reads its ring: the host's stream handler sends
/// until cellshm stops it short of the ring's reserve. Prints `poured N` once N = three
/// quarters of the ring are in flight, then watches the entries after them and prints
/// `through K` for the first unary request (channel 0) it finds, K entries in; `breached`
/// if a DATA frame ever takes the reserve.
pub fn pour_and_watch() -> Result<(), Error> {
    use std::io::Write;
    let mut link = RawLink::open()?;
    let hello = link.hello(link.joined.epoch());
    let open = Descriptor {
        msg_id: 2,
        channel_id: 2,
        method_id: cellshm::method_id("Host.pour"),
        flags: flags::REQUEST,
        slot: SLOT_INLINE,
        credit: 1_000_000,
        ..Descriptor::default()
    };
    for d in [&hello, &open] {
        while !link.try_push(d) {
            std::thread::yield_now();
        }
    }
    let say = |what: String| {
        let mut out = std::io::stdout();
        let _ = writeln!(out, "{what}").and_then(|_| out.flush());
    };
    // The host's ring towards us: its tail at 384 in its memory, entries after it.
    let bulk_limit = link.capacity - link.capacity / 4;
    let mut seen: u64 = 0;
    let mut said_poured = false;
    loop {
        let tail = link.word64(link.host, at::RING_TAIL).load(Ordering::Acquire);
        while seen < tail {
            let entry = at::ENTRIES + (seen % link.capacity) as usize * at::ENTRY_SIZE;
            let flags_word = link.word32(link.host, entry + at::FLAGS_WORD).load(Ordering::Acquire) & !flags::LAP;
            let channel = link.word32(link.host, entry + at::CHANNEL).load(Ordering::Relaxed);
            seen += 1;
            if flags_word & flags::DATA != 0 && seen > bulk_limit {
                say("breached".into());
            }
            if channel == 0 && flags_word & flags::REQUEST != 0 {
                say(format!("through {seen}"));
            }
        }
        if !said_poured && tail >= bulk_limit {
            said_poured = true;
            say(format!("poured {tail}"));
        }
        if host_gone(&link.joined.doorbell, 0) {
            return Ok(());
        }
        std::thread::yield_now();
    }
}

impl RawLink {
    /// Says HELLO and `ready` (the host then takes us for a ready cell), without waiting
    /// for the answer.
    fn hello_and_ready(&mut self) {
        let hello = self.hello(self.joined.epoch());
        let ready = cellshm::wire::Ready {
            peer_id: self.joined.peer_id(),
            pid: std::process::id(),
            name: "raw".into(),
            version: "0".into(),
            features: Vec::new(),
        }
        .encode();
        let (head, rest) = ready.split_at(16);
        let mut request = Descriptor {
            msg_id: 2,
            method_id: cellshm::method_id(cellshm::wire::builtin::LIFECYCLE_READY),
            flags: flags::REQUEST,
            slot: SLOT_INLINE,
            payload_len: ready.len() as u32,
            ..Descriptor::default()
        };
        request.inline.copy_from_slice(head);
        while !self.try_push(&hello) {
            std::thread::yield_now();
        }
        while !self.try_push_with(&request, rest) {
            std::thread::yield_now();
        }
    }

    /// The next frame the host publishes on its ring (its descriptor only), once there is
    /// one; `None` once the host is gone.
    fn next_from_host(&self, seen: &mut u64) -> Option<Descriptor> {
        loop {
            let tail = self.word64(self.host, at::RING_TAIL).load(Ordering::Acquire);
            if *seen < tail {
                let entry = at::ENTRIES + (*seen % self.capacity) as usize * at::ENTRY_SIZE;
                let mut bytes = [0u8; 64];
                for (i, chunk) in bytes.chunks_mut(8).enumerate() {
                    chunk.copy_from_slice(&self.word64(self.host, entry + 8 * i).load(Ordering::Relaxed).to_le_bytes());
                }
                *seen += 1;
                let mut d = Descriptor::decode(&bytes);
                d.flags &= !flags::LAP;
                return Some(d);
            }
            if host_gone(&self.joined.doorbell, 1) {
                return None;
            }
        }
    }

    fn push(&mut self, d: &Descriptor, extension: &[u8]) {
        while !self.try_push_with(d, extension) {
            std::thread::yield_now();
        }
    }
}

/// `mute`: joins by hand, says HELLO and `ready` (a cell the host takes for ready), then
/// never reads its ring again: nothing it is sent (a heartbeat, a call) is answered. Waits
/// to be killed, or for the host to go.
pub fn mute() -> Result<(), Error> {
    let mut link = RawLink::open()?;
    link.hello_and_ready();
    while !host_gone(&link.joined.doorbell, 1000) {}
    Ok(())
}

/// `forged-tail`: joins by hand, says HELLO and `ready`, then publishes its ring's tail 5
/// entries past what it wrote (entries it never wrote) and rings the doorbell; prints
/// `forged` and waits to be killed. The host must poll the entries, not believe the tail.
pub fn forged_tail() -> Result<(), Error> {
    use std::io::Write;
    let mut link = RawLink::open()?;
    link.hello_and_ready();
    while !link.all_taken() {
        if host_gone(&link.joined.doorbell, 1) {
            return Ok(());
        }
    }
    link.word64(link.cell, 384).store(link.sent + 5, Ordering::Release);
    // SAFETY: a one-byte send on our doorbell; EAGAIN (coalesced) is fine.
    unsafe {
        libc::send(
            link.joined.doorbell.as_raw_fd(),
            b"\x01".as_ptr().cast(),
            1,
            libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
        )
    };
    let mut out = std::io::stdout();
    let _ = writeln!(out, "forged").and_then(|_| out.flush());
    while !host_gone(&link.joined.doorbell, 1000) {}
    Ok(())
}

/// `stream-ends eos|cancel`: a foreign callee that answers every stream the host opens
/// with three items (u32 0, 1, 2), then either EOS followed a moment later by a FINISH
/// with ABORTED "after EOS" (`eos`), or CANCEL (`cancel`). Unary calls go unanswered.
pub fn stream_ends(args: &[String]) -> Result<(), Error> {
    let cancel = match args.first().map(String::as_str) {
        Some("eos") => false,
        Some("cancel") => true,
        _ => return Err(Error::new(Status::InvalidArgument, "usage: stream-ends eos|cancel")),
    };
    let mut link = RawLink::open()?;
    link.hello_and_ready();
    let (mut seen, mut msg_id) = (0u64, 100u64);
    while let Some(open) = link.next_from_host(&mut seen) {
        if open.channel_id == 0 || open.flags & flags::REQUEST == 0 {
            continue;
        }
        let frame = |flags_word: u32, msg_id: u64| Descriptor {
            msg_id,
            channel_id: open.channel_id,
            method_id: open.method_id,
            flags: flags_word,
            slot: SLOT_INLINE,
            ..Descriptor::default()
        };
        for i in 0..3u32 {
            msg_id += 1;
            let mut data = Descriptor { payload_len: 4, ..frame(flags::DATA, msg_id) };
            data.inline[..4].copy_from_slice(&i.to_le_bytes());
            link.push(&data, &[]);
        }
        msg_id += 1;
        if cancel {
            link.push(&frame(flags::CANCEL, msg_id), &[]);
            continue;
        }
        link.push(&frame(flags::EOS, msg_id), &[]);
        // The status comes later than the EOS: a caller that ends at EOS loses it.
        std::thread::sleep(std::time::Duration::from_millis(20));
        msg_id += 1;
        let text = b"after EOS";
        let mut finish = Descriptor {
            status: Status::Aborted.code(),
            payload_len: text.len() as u32,
            ..frame(flags::RESPONSE | flags::ERROR, msg_id)
        };
        finish.inline[..text.len()].copy_from_slice(text);
        link.push(&finish, &[]);
    }
    Ok(())
}

/// True once the host's end of the doorbell is closed (waits up to `ms` for it).
fn host_gone(doorbell: &OwnedFd, ms: i32) -> bool {
    let mut pfd = libc::pollfd { fd: doorbell.as_raw_fd(), events: 0, revents: 0 };
    // SAFETY: one valid pollfd.
    let n = unsafe { libc::poll(&mut pfd, 1, ms) };
    n > 0 && pfd.revents & (libc::POLLHUP | libc::POLLERR) != 0
}

/// `steal-bootstrap`: a process of the cell's uid that tries to take a spawned cell's
/// link in the window before the cell is not dumpable. Reads commands on stdin:
/// `grab PID` copies fd 3 of PID (`pidfd_getfd`), peeks at what waits on it (a join
/// record queued there would come with descriptors) and sends a join request of its own
/// on it, answering `grabbed N` (N descriptors peeked) or `failed <why>`; `report`
/// answers `fds N`, the descriptors it could read from the copy and from its own
/// request's socket since, and exits.
pub fn steal_bootstrap() -> Result<(), Error> {
    use std::io::{BufRead, Write};
    let mut taken: Vec<OwnedFd> = Vec::new();
    let say = |what: String| {
        let mut out = std::io::stdout();
        let _ = writeln!(out, "{what}").and_then(|_| out.flush());
    };
    for line in std::io::stdin().lock().lines() {
        let line = line.map_err(|e| Error::system("reading stdin", e))?;
        match line.split_whitespace().collect::<Vec<_>>()[..] {
            ["grab", pid] => {
                let pid: i32 = pid.parse().map_err(|_| fail("grab PID"))?;
                // SAFETY: plain syscalls with integer arguments.
                let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) } as RawFd;
                if pidfd < 0 {
                    say(format!("failed pidfd_open: {}", errno()));
                    continue;
                }
                // SAFETY: as above; the pidfd is ours and closed right after.
                let copy = unsafe { libc::syscall(libc::SYS_pidfd_getfd, pidfd, 3, 0) } as RawFd;
                let why = errno();
                // SAFETY: closing the pidfd we opened.
                unsafe { libc::close(pidfd) };
                if copy < 0 {
                    say(format!("failed pidfd_getfd: {why}"));
                    continue;
                }
                // SAFETY: pidfd_getfd gave us this descriptor.
                let copy = unsafe { OwnedFd::from_raw_fd(copy) };
                let peeked = read_fds(&copy, libc::MSG_PEEK);
                // A join request of our own: the host must not answer it.
                let mut pair = [0 as RawFd; 2];
                // SAFETY: socketpair writes two ints into `pair`.
                if unsafe {
                    libc::socketpair(libc::AF_UNIX, libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC, 0, pair.as_mut_ptr())
                } == 0
                {
                    // SAFETY: socketpair succeeded: both are ours.
                    let (ours, theirs) = unsafe { (OwnedFd::from_raw_fd(pair[0]), OwnedFd::from_raw_fd(pair[1])) };
                    let _ = send_fds(&copy, b"CSHMJREQ", &[theirs.as_raw_fd()]);
                    taken.push(ours);
                }
                taken.push(copy);
                say(format!("grabbed {peeked}"));
            }
            ["report"] => {
                let fds: usize = taken.iter().map(|socket| read_fds(socket, 0)).sum();
                say(format!("fds {fds}"));
                return Ok(());
            }
            _ => say(format!("failed: unknown command {line:?}")),
        }
    }
    Ok(())
}

/// Descriptors in the messages waiting on `socket` (all of them, or the first with
/// `MSG_PEEK`), without waiting; they are installed here, as a thief would get them.
fn read_fds(socket: &OwnedFd, flags: i32) -> usize {
    let mut fds = 0usize;
    // Whatever is waiting, without waiting; one message only when peeking.
    while let Ok((message, received)) = receive(socket, flags | libc::MSG_DONTWAIT) {
        if message.is_empty() {
            break;
        }
        fds += received.len();
        if flags & libc::MSG_PEEK != 0 {
            break;
        }
    }
    fds
}

/// `idle-flood UID/NAME`: opens connection after connection to a hub's discovery socket
/// and never sends anything, keeping the last 64 open, until killed; prints `flooding`
/// once it has 64 open.
pub fn idle_flood(args: &[String]) -> Result<(), Error> {
    use std::io::Write;
    let hub = args.first().ok_or_else(|| Error::new(Status::InvalidArgument, "usage: idle-flood UID/NAME"))?;
    let address = hub_address(hub)?;
    let mut open: std::collections::VecDeque<OwnedFd> = std::collections::VecDeque::new();
    let mut said = false;
    loop {
        let fd = match connect_abstract(&address) {
            Ok(socket) => socket,
            // The hub is gone (or never was): nothing left to flood.
            Err(e) if e.raw_os_error() == Some(libc::ECONNREFUSED) => return Ok(()),
            Err(_) => {
                std::thread::yield_now();
                continue;
            }
        };
        open.push_back(fd);
        if open.len() > 64 {
            open.pop_front();
            if !said {
                said = true;
                let mut out = std::io::stdout();
                let _ = writeln!(out, "flooding").and_then(|_| out.flush());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::at;
    use cellshm::wire::{frame, DESCRIPTOR_INLINE, DESCRIPTOR_SIZE, RING_ENTRY_SIZE};

    #[test]
    fn the_hand_written_frame_positions_are_the_librarys() {
        assert_eq!(at::ENTRY_SIZE, RING_ENTRY_SIZE);
        assert_eq!(at::ENTRY_SIZE, frame::ENTRY_WORDS * frame::WORD);
        assert_eq!(at::CHANNEL, frame::offset::CHANNEL_ID);
        assert_eq!(at::FLAGS_WORD, frame::offset::FLAGS);
        assert_eq!(at::FLAGS_WORD, frame::LAP_WORD * frame::WORD);
        assert_eq!(at::AFTER_FLAGS_WORD, (frame::LAP_WORD + 1) * frame::WORD);
        assert_eq!(at::AFTER_FLAGS_WORD, frame::offset::PAYLOAD_LEN);
        assert_eq!(at::EXTENSION, frame::EXTENSION);
        assert_eq!(at::EXTENSION, DESCRIPTOR_SIZE);
        assert_eq!(frame::offset::INLINE + DESCRIPTOR_INLINE, DESCRIPTOR_SIZE);
    }
}
