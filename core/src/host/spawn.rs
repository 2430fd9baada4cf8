//! Spawning a cell into a reserved slot, and its process.

use super::*;

/// A reserved peer slot: the arguments and doorbell a cell needs to join.
#[derive(Debug)]
pub struct PeerTicket {
    pub(super) peer: Peer,
    /// What the cell receives once it asks for it.
    pub(super) offer: Option<join::JoinOffer>,
    pub(super) doorbell_fd: i32,
    pub(super) append_join_args: bool,
    pub(super) stderr_tail: usize,
}

impl PeerTicket {
    /// The peer this ticket is for.
    pub fn peer(&self) -> &Peer {
        &self.peer
    }

    /// The environment a cell needs to join: `CELLSHM_DOORBELL_FD` (where the socket it
    /// asks for its link on is) and `CELLSHM_HUB` (the hub's name, informational).
    pub fn env(&self) -> Vec<(String, String)> {
        vec![
            ("CELLSHM_DOORBELL_FD".into(), self.doorbell_fd.to_string()),
            ("CELLSHM_HUB".into(), self.peer.inner.hub.name.clone()),
        ]
    }

    /// The flags [`PeerOptions::append_join_args`] appends: `--doorbell-fd=N`.
    pub fn args(&self) -> Vec<String> {
        vec![format!("--doorbell-fd={}", self.doorbell_fd)]
    }

    /// Hands the slot to a process that was not spawned for it (the attach path): the
    /// peer, and what to send that process on the connection it made.
    pub(crate) fn into_attached(mut self, pid: u32, uid: u32) -> (Peer, join::JoinOffer) {
        let offer = self.offer.take().expect("a ticket is handed over once");
        {
            let mut record = self.peer.inner.record.lock();
            record.pid = Some(pid);
            record.uid = Some(uid);
        }
        self.peer.inner.attached.store(true, std::sync::atomic::Ordering::Relaxed);
        (self.peer.clone(), offer)
    }

    /// The slot epoch this ticket is for.
    pub fn epoch(&self) -> u32 {
        self.peer.inner.epoch
    }

    /// Sets the join environment on `command` (and the flags, if asked), arranges the
    /// doorbell fd in the child, spawns it, and closes the host's copy of the child's
    /// end (so the child's death is seen as EOF at once). The cell's argv is otherwise
    /// left as given. The cell does not depend on the spawning thread living on: it
    /// ends with the host through its doorbell, not a parent-death signal.
    pub fn spawn(mut self, command: &mut Command) -> Result<(Peer, Child)> {
        let offer = self.offer.take().expect("a ticket spawns once");
        // The child gets only the bootstrap socket: it asks for its link on it (§2.2).
        let (bootstrap, child_end) = join::bootstrap_pair()?;
        command.envs(self.env());
        if self.stderr_tail > 0 {
            command.stderr(std::process::Stdio::piped());
        }
        if self.append_join_args {
            command.args(self.args());
        }
        doorbell::place_in_child(command, child_end.as_raw_fd(), self.doorbell_fd);
        let peer = self.peer.clone();
        // The record is held from before the fork until everything is known about the
        // child: a cell that dies (or asks the hub's socket something) at once is judged
        // with its pid, pidfd and stderr, never without. (Nothing below calls back into
        // the host: watching the process only kicks the link's threads.)
        let mut record = peer.inner.record.lock();
        let spawned = command.spawn();
        drop(child_end);
        match spawned {
            Ok(mut child) => {
                record.pid = Some(child.id());
                if let Some(pipe) = child.stderr.take() {
                    match crate::sys::process::StderrTail::collect(pipe, self.stderr_tail) {
                        Ok(tail) => record.stderr = Some(tail),
                        Err(e) => tracing::debug!("not collecting the stderr of {:?}: {e}", peer.inner.name),
                    }
                }
                // An unreaped child: its pid cannot have been reused yet.
                match Pidfd::open(child.id()) {
                    Ok(opened) => {
                        // Its end is its death, even if a child it forked keeps the
                        // doorbell open.
                        if let (Ok(watched), Some(session)) = (opened.try_clone(), record.session.as_ref()) {
                            session.watch_process(watched);
                        }
                        record.pidfd = Some(opened);
                    }
                    Err(e) => tracing::debug!("no pidfd for cell {:?}: {e}", peer.inner.name),
                }
                peer.inner.hub.discovery.await_join(join::PendingJoin {
                    name: peer.inner.name.clone(),
                    pid: child.id(),
                    bootstrap,
                    offer,
                });
                Ok((peer.clone(), child))
            }
            Err(e) => {
                drop(record);
                let err = Error::system(format!("spawning {:?}", command.get_program()), e);
                peer.close_with(err.clone());
                Err(err)
            }
        }
    }
}

/// A spawned cell's process, for hosts that manage it through the library (the C and
/// Python APIs): wait for it with a timeout, kill it, or stop it gracefully. The exit
/// code stays available after it was reaped. Thread-safe.
#[derive(Debug)]
pub struct CellProcess {
    pub(super) state: Mutex<ProcessState>,
    /// Readable once the process ended: waits sleep on it instead of polling.
    pub(super) pidfd: Option<Pidfd>,
}

#[derive(Debug)]
pub(super) enum ProcessState {
    Running(Child),
    /// Reaped.
    Exited(std::process::ExitStatus),
}

pub(super) fn exit_code(status: std::process::ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    status.code().unwrap_or_else(|| 128 + status.signal().unwrap_or(0))
}

impl CellProcess {
    /// Takes over `child`.
    pub fn new(child: Child) -> CellProcess {
        // An unreaped child: its pid cannot have been reused yet.
        let pidfd = Pidfd::open(child.id()).ok();
        CellProcess { state: Mutex::new(ProcessState::Running(child)), pidfd }
    }

    /// The process id.
    pub fn id(&self) -> Option<u32> {
        match &*self.state.lock() {
            ProcessState::Running(child) => Some(child.id()),
            ProcessState::Exited(_) => None,
        }
    }

    /// The exit status if the process has exited (reaping it), without waiting.
    pub fn try_exit_status(&self) -> Result<Option<std::process::ExitStatus>> {
        let mut state = self.state.lock();
        if let ProcessState::Running(child) = &mut *state {
            match child.try_wait().map_err(|e| Error::system("waiting for the cell", e))? {
                Some(status) => *state = ProcessState::Exited(status),
                None => return Ok(None),
            }
        }
        match *state {
            ProcessState::Exited(status) => Ok(Some(status)),
            ProcessState::Running(_) => Ok(None),
        }
    }

    /// The exit code (128 + signal when a signal ended it) if the process has exited.
    pub fn try_exit_code(&self) -> Result<Option<i32>> {
        Ok(self.try_exit_status()?.map(exit_code))
    }

    /// Sends `signal` to the process if it is still running.
    pub fn signal(&self, signal: i32) -> Result<()> {
        if let ProcessState::Running(child) = &*self.state.lock() {
            // Under the state lock: the child cannot be reaped (and its pid reused) meanwhile.
            crate::sys::process::signal_child(child, signal).map_err(|e| Error::system("signalling the cell", e))?;
        }
        Ok(())
    }

    /// Waits up to `timeout` for the process to exit; its exit code, or
    /// DEADLINE_EXCEEDED if it is still running.
    pub fn wait_exit(&self, timeout: Duration) -> Result<i32> {
        let until = Instant::now() + timeout;
        loop {
            if let Some(code) = self.try_exit_code()? {
                return Ok(code);
            }
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(Error::new(
                    Status::DeadlineExceeded,
                    format!("the cell is still running after {} ms", timeout.as_millis()),
                ));
            }
            // One sleep until it ends (or the time is up), not a poll every few ms.
            match &self.pidfd {
                Some(pidfd) => {
                    pidfd.wait_gone(left);
                }
                None => std::thread::sleep(left.min(Duration::from_millis(2))),
            }
        }
    }

    /// Sends SIGKILL (a process that already exited is left alone).
    pub fn kill(&self) -> Result<()> {
        if let ProcessState::Running(child) = &mut *self.state.lock() {
            child.kill().map_err(|e| Error::system("killing the cell", e))?;
        }
        Ok(())
    }

    /// Stops the cell: GOODBYE through `peer` and up to `grace` for the process to exit,
    /// then SIGTERM and `grace` again, then SIGKILL; reaps it and returns its exit code.
    pub fn shutdown(&self, peer: &Peer, grace: Duration) -> i32 {
        let started = Instant::now();
        peer.shutdown(grace);
        if let Ok(code) = self.wait_exit(grace.saturating_sub(started.elapsed())) {
            return code;
        }
        let _ = self.signal(libc::SIGTERM);
        if let Ok(code) = self.wait_exit(grace) {
            return code;
        }
        let _ = self.kill();
        self.wait_exit(Duration::from_secs(5)).unwrap_or(-1)
    }

    /// Lets go of the process without waiting: a thread reaps it once it exits, so no
    /// zombie is left behind.
    pub fn detach(self) {
        if let ProcessState::Running(mut child) = self.state.into_inner() {
            if !matches!(child.try_wait(), Ok(Some(_))) {
                let _ = std::thread::Builder::new().name("cellshm-reaper".into()).spawn(move || child.wait());
            }
        }
    }
}
