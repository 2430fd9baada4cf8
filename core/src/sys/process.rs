//! Process identity and lifetime from the kernel: pidfds for the cells we spawn, and
//! how a process ended, in words.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::Duration;

/// A pidfd: refers to one process for its whole life, never to a later process that
/// reuses its pid.
#[derive(Debug)]
pub(crate) struct Pidfd {
    fd: OwnedFd,
}

impl Pidfd {
    /// Opens a pidfd for `pid`. Race-free only for an unreaped child of ours (its pid
    /// cannot be reused before we reap it).
    pub fn open(pid: u32) -> io::Result<Pidfd> {
        // SAFETY: pidfd_open takes a pid and flags, no pointers.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: the syscall returned a new descriptor that nobody else owns.
        Ok(Pidfd { fd: unsafe { OwnedFd::from_raw_fd(fd as i32) } })
    }

    /// A second descriptor of the same pidfd.
    pub fn try_clone(&self) -> io::Result<Pidfd> {
        Ok(Pidfd { fd: self.fd.try_clone()? })
    }

    /// Waits up to `timeout` for the process to end; true once it has.
    pub fn wait_gone(&self, timeout: Duration) -> bool {
        let mut pfd = libc::pollfd { fd: self.fd.as_raw_fd(), events: libc::POLLIN, revents: 0 };
        let ms = timeout.as_millis().min(i32::MAX as u128) as i32;
        // SAFETY: one valid pollfd.
        let n = unsafe { libc::poll(&mut pfd, 1, ms) };
        n > 0
    }

    /// How the process ended, without reaping it (WNOWAIT: its owner still can).
    /// `None` while it runs, or if it is not our child or was already reaped.
    pub fn exit_reason(&self) -> Option<String> {
        // SAFETY: siginfo_t is plain data; zeroed is a valid value.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: waitid writes into `info`, which lives for the call.
        let rc = unsafe {
            libc::waitid(
                libc::P_PIDFD,
                self.fd.as_raw_fd() as libc::id_t,
                &mut info,
                libc::WEXITED | libc::WNOWAIT | libc::WNOHANG,
            )
        };
        // SAFETY: waitid filled `info` (or left it zeroed: si_pid 0 means "still running").
        let (pid, status) = unsafe { (info.si_pid(), info.si_status()) };
        if rc != 0 || pid == 0 {
            return None;
        }
        Some(match info.si_code {
            libc::CLD_EXITED => format!("exited with status {status}"),
            libc::CLD_KILLED => format!("killed by signal {status} ({})", signal_name(status)),
            libc::CLD_DUMPED => format!("killed by signal {status} ({}, core dumped)", signal_name(status)),
            code => format!("ended (code {code}, status {status})"),
        })
    }
}

impl AsRawFd for Pidfd {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.fd.as_raw_fd()
    }
}

/// The last bytes a child wrote to its stderr, collected by a thread that also passes
/// everything through to our own stderr (so nothing is hidden from the user).
#[derive(Debug, Default)]
pub(crate) struct StderrTail {
    /// (the last bytes, whether earlier ones were dropped, whether the pipe ended)
    state: crate::runtime::sync::Mutex<(std::collections::VecDeque<u8>, bool, bool)>,
    ended: crate::runtime::sync::Condvar,
}

impl StderrTail {
    /// Starts collecting from `pipe`, keeping the last `keep` bytes.
    pub fn collect(pipe: std::process::ChildStderr, keep: usize) -> io::Result<std::sync::Arc<StderrTail>> {
        use std::io::{Read, Write};
        let tail = std::sync::Arc::new(StderrTail::default());
        let sink = tail.clone();
        std::thread::Builder::new().name("cellshm-stderr".into()).spawn(move || {
            let mut pipe = pipe;
            let mut buf = [0u8; 4096];
            loop {
                match pipe.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        let _ = std::io::stderr().write_all(&buf[..n]);
                        let mut state = sink.state.lock();
                        state.0.extend(&buf[..n]);
                        let excess = state.0.len().saturating_sub(keep);
                        state.0.drain(..excess);
                        state.1 |= excess > 0;
                    }
                }
            }
            sink.state.lock().2 = true;
            sink.ended.notify_all();
        })?;
        Ok(tail)
    }

    /// The tail, from the first whole line kept, once the child closed its stderr or
    /// `timeout` passed.
    pub fn text(&self, timeout: Duration) -> String {
        let mut state = self.state.lock();
        if !state.2 {
            let _ = self.ended.wait_for(&mut state, timeout);
        }
        let mut bytes: Vec<u8> = state.0.iter().copied().collect();
        if state.1 {
            if let Some(newline) = bytes.iter().position(|&b| b == b'\n') {
                bytes.drain(..=newline);
            }
        }
        String::from_utf8_lossy(&bytes).trim_end().to_string()
    }
}

/// The usual name of a signal.
/// This process's effective uid.
pub(crate) fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// Sends `signal` to the child `child`. The caller holds it unreaped, so its pid cannot
/// have been given to another process meanwhile.
pub(crate) fn signal_child(child: &std::process::Child, signal: i32) -> io::Result<()> {
    // SAFETY: kill takes no pointers; see above for why the pid is the child's.
    super::cvt(unsafe { libc::kill(child.id() as libc::pid_t, signal) }).map(drop)
}

pub(crate) fn signal_name(signal: i32) -> &'static str {
    match signal {
        libc::SIGHUP => "SIGHUP",
        libc::SIGINT => "SIGINT",
        libc::SIGQUIT => "SIGQUIT",
        libc::SIGILL => "SIGILL",
        libc::SIGTRAP => "SIGTRAP",
        libc::SIGABRT => "SIGABRT",
        libc::SIGBUS => "SIGBUS",
        libc::SIGFPE => "SIGFPE",
        libc::SIGKILL => "SIGKILL",
        libc::SIGUSR1 => "SIGUSR1",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGUSR2 => "SIGUSR2",
        libc::SIGPIPE => "SIGPIPE",
        libc::SIGALRM => "SIGALRM",
        libc::SIGTERM => "SIGTERM",
        _ => "signal",
    }
}

/// The real user id of process `pid`, from `/proc/<pid>/status` (readable for any
/// process, dumpable or not). `None` if it is gone or the line is missing.
pub(crate) fn real_uid(pid: u32) -> Option<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let uids = status.lines().find_map(|l| l.strip_prefix("Uid:"))?;
    uids.split_whitespace().next()?.parse().ok()
}

/// Makes this process non-dumpable: other processes of the same uid can then no longer
/// open its `/proc/<pid>/fd`, `map_files` or `mem` (so a cell cannot reach the memfds
/// of other links through the host, or of a cell through that cell). Core dumps are
/// off too; `CELLSHM_DUMPABLE=1` keeps them (for debugging).
pub(crate) fn harden() {
    if std::env::var_os("CELLSHM_DUMPABLE").is_some_and(|v| v == "1") {
        return;
    }
    // SAFETY: prctl(PR_SET_DUMPABLE, 0) takes no pointers.
    unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) };
}

/// The parent of `pid`, as /proc shows it now.
fn parent_of(pid: u32) -> Option<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| stat.rsplit(')').next()?.split_whitespace().nth(1)?.parse::<u32>().ok())
}

/// True if `pid` is `ancestor` or one of its descendants, as the parent chain in /proc
/// shows now (a process re-parented away from `ancestor` is not one; nor is anything above
/// this process: the chain stops at us and at init).
pub(crate) fn is_self_or_descendant(pid: u32, ancestor: u32) -> bool {
    let mut current = pid;
    for _ in 0..64 {
        if current == ancestor {
            return true;
        }
        match parent_of(current) {
            Some(p) if p > 1 && p != std::process::id() => current = p,
            _ => return false,
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_real_uid_of_a_process_is_read_from_proc() {
        // SAFETY: getuid has no preconditions.
        assert_eq!(real_uid(std::process::id()), Some(unsafe { libc::getuid() }));
        assert_eq!(real_uid(u32::MAX), None);
    }

    #[test]
    fn a_pidfd_tells_how_a_child_ended_and_leaves_it_reapable() {
        let mut child = std::process::Command::new("sh").args(["-c", "exit 3"]).spawn().unwrap();
        let pidfd = Pidfd::open(child.id()).unwrap();
        assert!(pidfd.wait_gone(Duration::from_secs(10)));
        assert_eq!(pidfd.exit_reason().as_deref(), Some("exited with status 3"));
        assert_eq!(child.wait().unwrap().code(), Some(3), "WNOWAIT left it to its owner");
        let mut child = std::process::Command::new("sleep").arg("10").spawn().unwrap();
        let pidfd = Pidfd::open(child.id()).unwrap();
        assert!(!pidfd.wait_gone(Duration::ZERO));
        assert_eq!(pidfd.exit_reason(), None);
        child.kill().unwrap();
        assert!(pidfd.wait_gone(Duration::from_secs(10)));
        assert_eq!(pidfd.exit_reason().as_deref(), Some("killed by signal 9 (SIGKILL)"));
        child.wait().unwrap();
    }
}
