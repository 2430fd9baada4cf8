//! What the multi-process test files share: the test cell binary, a running hub with
//! one ready cell, and call options.

#![allow(dead_code)] // each test file uses a different part

use std::process::{Child, Command};
use std::time::Duration;

use cellshm::{CallOptions, Hub, HubConfig, LinkEnd, Peer, PeerOptions};

/// `cellshm-testkit cell` is the test cell (see `tools/testkit/src/lib.rs`).
pub const CELL: &str = env!("CARGO_BIN_EXE_cellshm-testkit");

/// A hub with one ready test cell; the cell is killed on drop.
pub struct Running {
    pub hub: Hub,
    pub peer: Peer,
    pub child: Child,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Spawns a test cell named `name` on `hub` with extra environment, and waits until it
/// is ready.
pub fn spawn_cell_on(hub: &Hub, name: &str, env: &[(&str, &str)]) -> (Peer, Child) {
    let ticket = hub.add_peer(name, PeerOptions::default()).unwrap();
    let mut cmd = Command::new(CELL);
    cmd.arg("cell").env("CELLSHM_QUIET", "1");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let (peer, child) = ticket.spawn(&mut cmd).unwrap();
    peer.wait_ready(Duration::from_secs(10)).unwrap();
    (peer, child)
}

/// A new hub with one ready test cell called "test".
pub fn start(config: HubConfig, env: &[(&str, &str)]) -> Running {
    let hub = Hub::create(config).unwrap();
    let (peer, child) = spawn_cell_on(&hub, "test", env);
    Running { hub, peer, child }
}

pub fn secs(n: u64) -> CallOptions {
    CallOptions::timeout(Duration::from_secs(n))
}

/// Waits for `peer`'s death, an event (its death callback), and returns the reason.
pub fn wait_dead(peer: &Peer) -> cellshm::Error {
    let (tx, rx) = std::sync::mpsc::channel();
    peer.on_death(move |e| {
        let _ = tx.send(e.clone());
    });
    rx.recv_timeout(Duration::from_secs(10)).unwrap_or_else(|_| panic!("{} did not die within 10 s", peer.name()))
}

/// Checks `done` every few milliseconds until it holds, and fails the test with
/// `what()` after `limit`. Only for states nothing signals (a thread count, a peer
/// attaching, another process's counters): events are waited on directly.
pub fn poll_until(limit: Duration, what: impl Fn() -> String, mut done: impl FnMut() -> bool) {
    let started = std::time::Instant::now();
    while !done() {
        assert!(started.elapsed() < limit, "{}", what());
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The ready peer named `name` (one that attached), once there is one.
pub fn wait_for_peer(hub: &Hub, name: &str) -> Peer {
    let find = || hub.peers().into_iter().find(|p| p.name() == name && p.state() == cellshm::PeerState::Ready);
    poll_until(Duration::from_secs(10), || format!("{name} did not attach"), || find().is_some());
    find().expect("found above")
}

/// A numeric field of `/proc/<pid>/status` (`pid` may be "self"), e.g. `VmRSS:` in KiB.
pub fn proc_status(pid: &str, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}

/// The library's link threads in this process (servers, stream handlers: all named
/// `cellshm-…`). The test harness's own threads come and go as tests start and wait for
/// their turn, and the hub's discovery thread is left out: a thread is named only once
/// it runs, so a new hub's may not be counted yet.
pub fn link_threads() -> u64 {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .filter(|comm| comm.starts_with("cellshm") && !comm.starts_with("cellshm-discov"))
        .count() as u64
}

/// How long threads waited for a CPU (their run-queue delay, from the kernel's
/// `schedstat`) since this was started: on a busy machine a thread that should run at
/// time t runs at t + its run delay, and that part of a lateness is the scheduler's, not
/// the library's. Timing assertions allow it on top of their bound, so two CPU hogs
/// beside the tests cannot fail them, while a real stall (a thread asleep, not waiting
/// for a CPU) still does.
pub struct RunDelay {
    tasks: Vec<String>,
    at_start: u64,
}

impl RunDelay {
    /// The calling thread's run delay from now on.
    pub fn this_thread() -> RunDelay {
        RunDelay { tasks: Vec::new(), at_start: 0 }.add(vec![format!("/proc/self/task/{}", thread_id())])
    }

    /// The calling thread's and the library's threads in this process (`cellshm-…`:
    /// link, server and stream threads, which wake it).
    pub fn this_thread_and_links() -> RunDelay {
        let links = threads("self")
            .into_iter()
            .filter(|t| std::fs::read_to_string(format!("{t}/comm")).is_ok_and(|comm| comm.starts_with("cellshm")));
        RunDelay::this_thread().add(links.collect())
    }

    /// Also every thread of process `pid` (a cell).
    pub fn and_process(self, pid: u32) -> RunDelay {
        self.add(threads(&pid.to_string()))
    }

    fn add(mut self, tasks: Vec<String>) -> RunDelay {
        self.at_start += run_delay_ns(&tasks);
        self.tasks.extend(tasks);
        self
    }

    /// The run delay since the start.
    pub fn so_far(&self) -> Duration {
        Duration::from_nanos(run_delay_ns(&self.tasks).saturating_sub(self.at_start))
    }
}

fn threads(pid: &str) -> Vec<String> {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|dir| dir.filter_map(|t| Some(t.ok()?.path().display().to_string())).collect())
        .unwrap_or_default()
}

fn thread_id() -> i64 {
    // SAFETY: gettid has no preconditions.
    unsafe { libc::syscall(libc::SYS_gettid) }
}

/// The summed run delay (second field of `schedstat`) of the tasks still alive.
fn run_delay_ns(tasks: &[String]) -> u64 {
    tasks
        .iter()
        .filter_map(|t| std::fs::read_to_string(format!("{t}/schedstat")).ok())
        .filter_map(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .sum()
}

/// Lets this process (its uid) inspect `hub`, which is off by default.
pub fn inspectable(hub: &Hub) {
    // SAFETY: geteuid has no preconditions.
    hub.enable_inspect(&[unsafe { libc::geteuid() }]);
}

/// How long after `since_ns` (CLOCK_MONOTONIC) the test cell's handler saw a call
/// cancelled; the cell answers once it has (an event in its process, not a poll), and the
/// test fails if it has not within 5 s.
pub fn cancel_seen_after(peer: &Peer, since_ns: u64) -> Duration {
    let reply = peer.call("Test.cancel_seen_since", &since_ns.to_le_bytes(), &secs(10)).unwrap();
    let seen = u64::from_le_bytes(reply.bytes().try_into().unwrap());
    assert!(seen >= since_ns, "the handler never saw the cancellation");
    Duration::from_nanos(seen - since_ns)
}
