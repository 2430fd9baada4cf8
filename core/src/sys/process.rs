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

/// The usual name of a signal.
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

#[cfg(test)]
mod tests {
    use super::*;

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
