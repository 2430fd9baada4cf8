//! Protocol 2.0 isolation, with real processes: what a misbehaving cell can do to the
//! host and to other cells (nothing), what a dead host leaves behind (nothing), and
//! which of a cell's words the host trusts (none).

use cellshm::{LinkEnd, Registry};
use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use cellshm::{Hub, HubConfig, PeerOptions, Status};

mod common;
use common::{poll_until, proc_status, secs, spawn_cell_on, wait_dead, wait_for_peer, RunDelay, CELL};

fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() }
}

const NOBODY: u32 = 65534;

/// Runs `cellshm-testkit hostile` as a cell of `hub` (as `nobody` when we are root: root may read any
/// process's /proc, which the threat model leaves out) while another cell is called in
/// a loop; returns the hostile cell's report.
fn run_hostile(hub: &Hub, env: &[(&str, &str)], as_nobody: bool) -> (bool, String) {
    let ticket = hub.add_peer("hostile", PeerOptions::default()).unwrap();
    let mut cmd = Command::new(CELL);
    cmd.arg("hostile").envs(env.iter().copied()).stdout(Stdio::piped());
    if as_nobody {
        cmd.uid(NOBODY).gid(NOBODY);
    }
    let (_peer, child) = ticket.spawn(&mut cmd).unwrap();
    let out = child.wait_with_output().unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned())
}

#[test]
fn a_hostile_cell_fails_at_every_attempt_and_the_host_and_another_cell_never_notice() {
    let hub = Hub::create(HubConfig::default()).unwrap();
    hub.method("Host.echo", |call| call.reply(call.payload())).unwrap();
    let (honest, mut honest_child) = spawn_cell_on(&hub, "honest", &[]);
    let stop = Arc::new(AtomicBool::new(false));
    let (calls, failures) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let caller = {
        let (honest, stop, calls, failures) = (honest.clone(), stop.clone(), calls.clone(), failures.clone());
        thread::spawn(move || {
            let payload = vec![7u8; 300];
            while !stop.load(Ordering::Relaxed) {
                match honest.call("Echo.echo", &payload, &secs(5)) {
                    Ok(r) if r.bytes() == &payload[..] => calls.fetch_add(1, Ordering::Relaxed),
                    _ => failures.fetch_add(1, Ordering::Relaxed),
                };
            }
        })
    };
    let (ok, report) = run_hostile(&hub, &[], euid() == 0);
    println!("{report}");
    // A same-uid cell asking the hub's socket for every link's memory is refused too, even
    // where the host let its uid inspect.
    hub.enable_inspect(&[euid()]);
    let (socket_ok, socket_report) = run_hostile(&hub, &[("HOSTILE_ONLY", "socket")], false);
    println!("{socket_report}");
    stop.store(true, Ordering::Relaxed);
    caller.join().unwrap();
    assert!(ok && report.contains(", 0 succeeded"), "{report}");
    assert!(report.lines().filter(|l| l.starts_with("refused")).count() >= 20, "{report}");
    assert!(socket_ok && socket_report.contains("cells may not INSPECT"), "{socket_report}");
    assert_eq!(failures.load(Ordering::Relaxed), 0, "the honest cell lost calls");
    assert!(calls.load(Ordering::Relaxed) > 0);
    assert_eq!(honest.call("Echo.echo", b"still here", &secs(5)).unwrap().bytes(), b"still here");
    let _ = honest_child.kill();
    let _ = honest_child.wait();
}

/// Spawns the hand-made cell `cellshm-testkit bad-hello ARGS` on the only slot of `hub`:
/// the host drops it with a PROTOCOL_ERROR that names `reason`, the cell sees itself
/// dropped, and the slot serves the next cell at once.
fn a_bad_hello_is_dropped_and_its_slot_reused(hub: &Hub, args: &[&str], reason: &str) {
    let ticket = hub.add_peer("liar", PeerOptions::default()).unwrap();
    let mut cmd = Command::new(CELL);
    cmd.arg("bad-hello").args(args).stdout(Stdio::piped());
    let (peer, child) = ticket.spawn(&mut cmd).unwrap();
    let error = wait_dead(&peer);
    assert_eq!(error.status(), Status::ProtocolError, "{error}");
    assert!(error.message().contains(reason), "{error}");
    let out = child.wait_with_output().unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("dropped by the host"));
    let (again, mut child) = spawn_cell_on(hub, "next", &[]);
    assert_eq!(again.id(), peer.id(), "the only slot was reclaimed");
    assert_eq!(again.call("Echo.echo", b"ok", &secs(5)).unwrap().bytes(), b"ok");
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn a_garbage_hello_is_a_protocol_error_and_the_slot_is_reused() {
    let hub = Hub::create(HubConfig { max_peers: 1, ..HubConfig::default() }).unwrap();
    a_bad_hello_is_dropped_and_its_slot_reused(&hub, &[], "epoch");
}

#[test]
fn a_request_before_hello_is_a_protocol_error_and_never_served() {
    let hub = Hub::create(HubConfig { max_peers: 1, ..HubConfig::default() }).unwrap();
    let served = Arc::new(AtomicBool::new(false));
    let seen = served.clone();
    hub.method("Host.secret", move |_| {
        seen.store(true, Ordering::SeqCst);
        Ok(())
    })
    .unwrap();
    a_bad_hello_is_dropped_and_its_slot_reused(&hub, &["request-first"], "before HELLO");
    assert!(!served.load(Ordering::SeqCst), "a link nobody identified was served");
}

#[test]
fn a_forged_pid_in_ready_decides_nothing() {
    let hub = Hub::create(HubConfig { max_peers: 1, ..HubConfig::default() }).unwrap();
    let (peer, mut child) = spawn_cell_on(&hub, "forger", &[("TEST_CELL_ANNOUNCED_PID", "1")]);
    assert_eq!(peer.ready_info().unwrap().pid, 1, "the cell did say pid 1");
    assert_eq!(peer.pid(), Some(child.id()), "the host keeps the pid fork gave it");
    child.kill().unwrap();
    // Reaped only after the host saw the death: its reason carries the signal.
    let error = wait_dead(&peer);
    child.wait().unwrap();
    assert!(error.message().contains("killed by signal 9 (SIGKILL)"), "{error}");
    let (next, mut next_child) = spawn_cell_on(&hub, "next", &[]);
    assert_eq!(next.id(), peer.id());
    let _ = next_child.kill();
    let _ = next_child.wait();
}

#[test]
fn a_cell_that_exits_early_is_reported_with_its_exit_status_and_stderr() {
    let hub = Hub::create(HubConfig::default()).unwrap();
    let ticket = hub.add_peer("quitter", PeerOptions { stderr_tail: 50, ..PeerOptions::default() }).unwrap();
    let mut cmd = Command::new("sh");
    let script = "echo 'an earlier line, cut off' >&2; echo 'config not found: /etc/quitter.toml' >&2; exit 3";
    cmd.args(["-c", script]);
    let (peer, mut child) = ticket.spawn(&mut cmd).unwrap();
    let error = peer.wait_ready(Duration::from_secs(10)).unwrap_err();
    assert_eq!(error.status(), Status::PeerDead, "{error}");
    let message = error.message();
    assert!(message.contains("died before it was ready") && message.contains("exited with status 3"), "{error}");
    assert!(message.ends_with("its stderr ended with:\nconfig not found: /etc/quitter.toml"), "{error}");
    assert!(!message.contains("an earlier line"), "only the last 50 bytes, from a line start, are kept: {error}");
    assert_eq!(child.wait().unwrap().code(), Some(3), "still the caller's to reap");
    // Without a tail asked for, the cell's stderr is left alone and the reason is short.
    let ticket = hub.add_peer("quiet-quitter", PeerOptions::default()).unwrap();
    let (peer, mut child) = ticket.spawn(Command::new("sh").args(["-c", "exit 4"])).unwrap();
    let error = peer.wait_ready(Duration::from_secs(10)).unwrap_err();
    assert!(error.message().ends_with("exited with status 4"), "{error}");
    child.wait().unwrap();
}

/// Starts `cellshm-testkit host ARGS` (a host with one ready cell) and waits until it says so.
fn start_host(args: &[&str]) -> std::process::Child {
    let mut host =
        Command::new(CELL).arg("host").args(args).env("CELLSHM_QUIET", "1").stdout(Stdio::piped()).spawn().unwrap();
    let mut reader = BufReader::new(host.stdout.take().unwrap());
    let mut line = String::new();
    while !line.starts_with("ready") {
        line.clear();
        assert_ne!(reader.read_line(&mut line).unwrap(), 0, "the host ended before it was ready");
    }
    host
}

fn flood(uid_name: &str, n: u32) -> String {
    let out = Command::new("runuser")
        .args(["-u", "nobody", "--", CELL, "attach-flood", &n.to_string(), uid_name])
        .output()
        .expect("runuser (util-linux) is needed to run a process as another user");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn attach_refusals_from_another_uid_do_not_grow_the_host() {
    if euid() != 0 {
        eprintln!("skipped: needs root to run the flood as another user");
        return;
    }
    let name = format!("flooded-{}", std::process::id());
    let mut host = start_host(&["--attach", "--name", &name]);
    let target = format!("{}/{name}", euid());
    let warm_up = flood(&target, 10_000);
    assert!(warm_up.contains("10000 of 10000 refused"), "{warm_up}");
    let before = proc_status(&host.id().to_string(), "VmRSS:");
    let started = Instant::now();
    let flooded = flood(&target, 300_000);
    assert!(flooded.contains("300000 of 300000 refused"), "{flooded}");
    let after = proc_status(&host.id().to_string(), "VmRSS:");
    println!("300k refusals in {:?}: host RSS {before} KiB -> {after} KiB", started.elapsed());
    assert!(after <= before + 1024, "host RSS grew from {before} KiB to {after} KiB");
    let _ = host.kill();
    let _ = host.wait();
}

#[test]
fn list_hubs_shows_live_hubs_and_not_a_killed_one() {
    let pid = std::process::id();
    let a = Hub::create(HubConfig { name: Some(format!("list-a-{pid}")), ..HubConfig::default() }).unwrap();
    let b = Hub::create(HubConfig { name: Some(format!("list-b-{pid}")), ..HubConfig::default() }).unwrap();
    let (_peer, mut child) = spawn_cell_on(&a, "listed", &[]);
    let err = Hub::create(HubConfig { name: Some(format!("list-a-{pid}")), ..HubConfig::default() }).unwrap_err();
    assert_eq!(err.status(), Status::AlreadyExists, "{err}");
    let killed = format!("list-killed-{pid}");
    let mut host = start_host(&["--name", &killed]);
    let listed = |name: &str| cellshm::list_hubs().unwrap().iter().any(|h| h.name == name);
    assert!(listed(&killed));
    host.kill().unwrap();
    host.wait().unwrap();
    assert!(!listed(&killed), "a killed host's hub is gone at once");
    let listing = cellshm::list_hubs().unwrap();
    let mine = listing.iter().find(|h| h.name == format!("list-a-{pid}")).unwrap();
    assert_eq!(mine.host_pid, pid);
    assert!(listed(&format!("list-b-{pid}")));
    // (The `cellshm list` / `inspect` command line over the same is core/tests/cli.rs.)
    drop(b);
    assert!(!listed(&format!("list-b-{pid}")), "a dropped hub is gone at once");
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn a_hub_can_also_listen_on_a_filesystem_path_for_containers() {
    let path = std::env::temp_dir().join(format!("cellshm-path-{}.sock", std::process::id()));
    let hub = Hub::create(HubConfig { socket_path: Some(path.clone()), ..HubConfig::default() }).unwrap();
    let _attach = hub.enable_attach(cellshm::host::attach::AttachPolicy::default()).unwrap();
    hub.enable_inspect(&[euid()]);
    let path_text = path.display().to_string();
    let mut visitor =
        Command::new(CELL).args(["attach", &path_text, "visitor"]).env("CELLSHM_QUIET", "1").spawn().unwrap();
    let peer = wait_for_peer(&hub, "visitor");
    assert_eq!(peer.call("Echo.echo", b"via a path", &secs(5)).unwrap().bytes(), b"via a path");
    let snap = cellshm::snapshot(&path_text).unwrap();
    assert_eq!(snap.info.name, hub.name());
    assert!(snap.peers.iter().any(|p| p.name == "visitor"));
    let _ = visitor.kill();
    let _ = visitor.wait();
    drop(hub);
    assert!(!path.exists(), "the socket file is removed with its hub");
}

#[test]
fn a_cell_whose_child_keeps_the_doorbell_open_is_still_seen_dead_when_it_ends() {
    let hub = Hub::create(HubConfig::default()).unwrap();
    let ticket = hub.add_peer("forker", PeerOptions::default()).unwrap();
    // The shell's background `sleep` inherits the doorbell (fd 3, not close-on-exec in
    // the shell); then the shell becomes the cell. Killing the cell leaves the doorbell
    // open in `sleep`: only the pidfd tells the host the cell is gone.
    let mut cmd = Command::new("sh");
    cmd.args(["-c", "sleep 3 & exec \"$0\" cell", CELL]).env("CELLSHM_QUIET", "1");
    let (peer, mut child) = ticket.spawn(&mut cmd).unwrap();
    peer.wait_ready(Duration::from_secs(10)).unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    peer.on_death(move |e| tx.send((Instant::now(), e.clone())).unwrap());
    thread::sleep(Duration::from_millis(50)); // idle: every thread asleep
    let delay = RunDelay::this_thread_and_links();
    let killed = Instant::now();
    child.kill().unwrap();
    let (seen, error) = rx.recv_timeout(Duration::from_secs(5)).expect("the death was not seen");
    let scheduler = delay.so_far();
    child.wait().unwrap();
    assert!(
        seen - killed < Duration::from_millis(100) + scheduler,
        "seen after {:?} ({scheduler:?} waiting for a CPU)",
        seen - killed
    );
    // The inherited fd is only the bootstrap socket since 2.1 (the doorbell arrives on the
    // cell's own socket, close-on-exec), so `sleep` holds nothing of the link any more:
    // the death comes as the doorbell's EOF or the pidfd's, whichever is first.
    assert!(error.message().contains("SIGKILL"), "{error}");
}

#[test]
fn a_cell_that_stops_reading_and_floods_pings_cannot_hold_a_host_call_past_its_deadline() {
    let hub = Hub::create(HubConfig::default()).unwrap();
    let (honest, mut honest_child) = spawn_cell_on(&hub, "honest", &[]);
    let ticket = hub.add_peer("flooder", PeerOptions::default()).unwrap();
    let mut cmd = Command::new(CELL);
    cmd.arg("ping-flood").stdout(Stdio::piped());
    let (flooder, mut child) = ticket.spawn(&mut cmd).unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "flooding");
    let timeout = Duration::from_millis(300);
    // The bug this guards held a call 5 s per PONG sent: 50 ms over the deadline, plus
    // what the scheduler made the threads involved wait for a CPU, is a bound only a
    // stall can break.
    for round in 0..5 {
        let (started, delay) = (Instant::now(), RunDelay::this_thread_and_links());
        let e = flooder.call("Echo.echo", b"anyone?", &cellshm::CallOptions::timeout(timeout)).unwrap_err();
        let (took, scheduler) = (started.elapsed(), delay.so_far());
        assert!(
            took < timeout + Duration::from_millis(50) + scheduler,
            "round {round}: held {took:?} by a 300 ms deadline ({scheduler:?} waiting for a CPU; {e})"
        );
        assert!(matches!(e.status(), Status::DeadlineExceeded | Status::ResourceExhausted), "{e}");
    }
    let (started, delay) = (Instant::now(), RunDelay::this_thread_and_links());
    assert!(flooder.ping(timeout).is_err(), "a cell that does not read gets no PONG");
    let (took, scheduler) = (started.elapsed(), delay.so_far());
    assert!(
        took < timeout + Duration::from_millis(50) + scheduler,
        "a PING held {took:?} ({scheduler:?} waiting for a CPU)"
    );
    for i in 0..200u32 {
        let payload = i.to_le_bytes();
        assert_eq!(honest.call("Echo.echo", &payload, &secs(5)).unwrap().bytes(), &payload, "call {i}");
    }
    let _ = child.kill();
    let _ = child.wait();
    let _ = honest_child.kill();
    let _ = honest_child.wait();
}

/// Spawns the test cell `name`, as `nobody` when `as_nobody`.
fn spawn_test_cell(hub: &Hub, name: &str, as_nobody: bool) -> (cellshm::Peer, std::process::Child) {
    let ticket = hub.add_peer(name, PeerOptions::default()).unwrap();
    let mut cmd = Command::new(CELL);
    cmd.arg("cell").env("CELLSHM_QUIET", "1");
    if as_nobody {
        cmd.uid(NOBODY).gid(NOBODY);
    }
    let (peer, child) = ticket.spawn(&mut cmd).unwrap();
    peer.wait_ready(Duration::from_secs(10)).unwrap();
    (peer, child)
}

#[test]
fn a_host_method_allowed_to_one_cell_refuses_the_others_before_its_handler_and_sees_who_calls() {
    let hub = Hub::create(HubConfig::default()).unwrap();
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = seen.clone();
    hub.method("Host.echo", move |call| {
        sink.lock().unwrap().push(call.caller().expect("the host knows who calls"));
        call.reply(call.payload())
    })
    .unwrap();
    let streamed = Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = streamed.clone();
    hub.stream_method("Host.countdown", move |call| {
        sink.lock().unwrap().push(call.caller().expect("the host knows who opens").name);
        call.send(&0u32.to_le_bytes())
    })
    .unwrap();
    hub.allow("Host.echo", &["a"]).unwrap();
    hub.allow("Host.countdown", &["a"]).unwrap();
    assert_eq!(hub.allow("", &["a"]).unwrap_err().status(), Status::InvalidArgument);

    let root = euid() == 0;
    let (a, mut a_child) = spawn_test_cell(&hub, "a", false);
    // As root, b runs as nobody: its uid is what the kernel says, not ours.
    let (b, mut b_child) = spawn_test_cell(&hub, "b", root);

    assert_eq!(a.call("Test.call_host", b"from a", &secs(5)).unwrap().bytes(), b"from a");
    let err = b.call("Test.call_host", b"from b", &secs(5)).unwrap_err();
    assert_eq!(err.status(), Status::PermissionDenied, "{err}");
    assert!(err.message().contains("cell \"b\"") && err.message().contains("allow list"), "{err}");
    let seen_by_handler = seen.lock().unwrap().clone();
    assert_eq!(seen_by_handler.len(), 1, "the refused call never reached the handler");
    let who = &seen_by_handler[0];
    assert_eq!((who.name.as_str(), who.peer_id, who.pid, who.uid), ("a", a.id(), a.pid(), Some(euid())));
    assert_eq!(who, &a.identity());
    assert_eq!((a.refused_calls(), b.refused_calls()), (0, 1), "refusals are counted per peer");
    if root {
        assert_eq!(b.identity().uid, Some(NOBODY));
    }

    // Streams are checked the same way.
    assert_eq!(a.call("Test.stream_from_host", &1u32.to_le_bytes(), &secs(5)).unwrap().bytes(), &0u32.to_le_bytes());
    let err = b.call("Test.stream_from_host", &1u32.to_le_bytes(), &secs(5)).unwrap_err();
    assert_eq!(err.status(), Status::PermissionDenied, "{err}");
    assert_eq!(*streamed.lock().unwrap(), vec!["a".to_string()]);
    assert_eq!(b.refused_calls(), 2);

    // A policy instead of a list: here, by uid when b runs as nobody, else by pid.
    hub.allow_everyone("Host.echo").unwrap();
    let (a_pid, our_uid) = (a.pid(), euid());
    hub.set_access_policy(Some(Arc::new(move |who: &cellshm::PeerIdentity, method: &str| {
        method != "Host.echo" || if root { who.uid == Some(our_uid) } else { who.pid == a_pid }
    })));
    assert_eq!(a.call("Test.call_host", b"again", &secs(5)).unwrap().bytes(), b"again");
    let err = b.call("Test.call_host", b"again", &secs(5)).unwrap_err();
    assert_eq!(err.status(), Status::PermissionDenied, "{err}");
    assert!(err.message().contains("policy"), "{err}");
    hub.set_access_policy(None);
    assert_eq!(b.call("Test.call_host", b"free", &secs(5)).unwrap().bytes(), b"free");
    assert_eq!(seen.lock().unwrap().len(), 3);
    for child in [&mut a_child, &mut b_child] {
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// CPU time (user + system, in clock ticks turned into a Duration) of this process's
/// threads whose name starts with `prefix`.
fn cpu_of_threads(prefix: &str) -> Duration {
    // SAFETY: sysconf has no preconditions.
    let ticks = u64::try_from(unsafe { libc::sysconf(libc::_SC_CLK_TCK) }).unwrap_or(100).max(1);
    let total: u64 = std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|t| {
            let path = t.ok()?.path();
            let comm = std::fs::read_to_string(path.join("comm")).ok()?;
            if !comm.starts_with(prefix) {
                return None;
            }
            let stat = std::fs::read_to_string(path.join("stat")).ok()?;
            let fields: Vec<&str> = stat.rsplit(')').next()?.split_whitespace().collect();
            Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
        })
        .sum();
    Duration::from_millis(total * 1000 / ticks)
}

#[test]
fn a_tail_published_past_entries_never_written_neither_spins_the_host_nor_holds_a_call() {
    // The cell's name starts with a letter no other test's does: its link's threads are
    // the only ones named `cellshm-cell "Q…`.
    let hub = Hub::create(HubConfig::default()).unwrap();
    let ticket = hub.add_peer("Qforger", PeerOptions::default()).unwrap();
    let mut cmd = Command::new(CELL);
    cmd.arg("forged-tail").stdout(Stdio::piped());
    let (peer, mut child) = ticket.spawn(&mut cmd).unwrap();
    peer.wait_ready(Duration::from_secs(10)).unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "forged");

    // A call is held no longer than its deadline (it took 9.8 s to end, with PEER_DEAD).
    let timeout = Duration::from_millis(100);
    let (started, delay) = (Instant::now(), RunDelay::this_thread_and_links());
    let e = peer.call("Echo.echo", b"anyone?", &cellshm::CallOptions::timeout(timeout)).unwrap_err();
    let (took, scheduler) = (started.elapsed(), delay.so_far());
    assert_eq!(e.status(), Status::DeadlineExceeded, "{e}");
    assert!(
        took < timeout + Duration::from_millis(50) + scheduler,
        "held {took:?} by a 100 ms deadline ({scheduler:?} waiting for a CPU)"
    );

    // The link's threads sleep: a spinning one would burn most of this window (a third
    // of it beside two CPU hogs).
    let link_threads = "cellshm-cell \"Q";
    let before = cpu_of_threads(link_threads);
    thread::sleep(Duration::from_millis(300));
    let burnt = cpu_of_threads(link_threads) - before;
    assert!(burnt < Duration::from_millis(40), "the link's threads used {burnt:?} of CPU in 300 ms idle");

    // Its death is still seen at once.
    let delay = RunDelay::this_thread_and_links();
    let (tx, rx) = std::sync::mpsc::channel();
    peer.on_death(move |e| tx.send((Instant::now(), e.clone())).unwrap());
    let killed = Instant::now();
    child.kill().unwrap();
    let (seen, error) = rx.recv_timeout(Duration::from_secs(5)).expect("the death was not seen");
    let scheduler = delay.so_far();
    child.wait().unwrap();
    assert!(
        seen - killed < Duration::from_millis(100) + scheduler,
        "seen after {:?} ({scheduler:?} waiting for a CPU)",
        seen - killed
    );
    assert_eq!(error.status(), Status::PeerDead, "{error}");
}

#[test]
fn a_same_uid_process_that_copies_the_bootstrap_socket_gets_nothing_of_the_link() {
    if euid() != 0 {
        eprintln!("skipped: needs root to run the cell and the thief as another user");
        return;
    }
    let hub = Hub::create(HubConfig::default()).unwrap();
    let ticket = hub.add_peer("victim", PeerOptions::default()).unwrap();
    // The cell, as nobody, waits in a shell (dumpable, holding fd 3) until told to exec
    // the real cell: the window a thief has, held open for as long as the test needs.
    let mut cmd = Command::new("sh");
    cmd.args(["-c", "read go; exec \"$0\" cell", CELL]).env("CELLSHM_QUIET", "1").stdin(Stdio::piped());
    cmd.uid(NOBODY).gid(NOBODY);
    let (peer, mut child) = ticket.spawn(&mut cmd).unwrap();
    let mut thief = Command::new("runuser")
        .args(["-u", "nobody", "--", CELL, "steal-bootstrap"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("runuser (util-linux) is needed to run a process as another user");
    let mut orders = thief.stdin.take().unwrap();
    let mut answers = BufReader::new(thief.stdout.take().unwrap());
    let mut ask = |order: String| {
        use std::io::Write;
        writeln!(orders, "{order}").unwrap();
        let mut line = String::new();
        answers.read_line(&mut line).unwrap();
        line.trim().to_string()
    };
    // Before 2.1 the join record and both memfds waited on fd 3 from the spawn on: the
    // thief's peek got them (`grabbed 2`).
    let grabbed = ask(format!("grab {}", child.id()));
    assert_eq!(grabbed, "grabbed 0", "the thief copied fd 3 of a dumpable process of its uid and found that on it");
    {
        use std::io::Write;
        writeln!(child.stdin.take().unwrap(), "go").unwrap();
    }
    // The thief's own join request was refused; the cell's was answered.
    peer.wait_ready(Duration::from_secs(10)).unwrap();
    assert_eq!(peer.call("Echo.echo", b"still mine", &secs(5)).unwrap().bytes(), b"still mine");
    assert_eq!(ask("report".into()), "fds 0", "the thief got descriptors of the link");
    let _ = thief.wait();
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn another_uid_flooding_the_discovery_socket_with_idle_connections_evicts_no_honest_client() {
    if euid() != 0 {
        eprintln!("skipped: needs root to run the flood as another user");
        return;
    }
    let name = format!("idle-flooded-{}", std::process::id());
    let hub = Hub::create(HubConfig { name: Some(name.clone()), ..HubConfig::default() }).unwrap();
    let mut flood = Command::new("runuser")
        .args(["-u", "nobody", "--", CELL, "idle-flood", &format!("{}/{name}", euid())])
        .stdout(Stdio::piped())
        .spawn()
        .expect("runuser (util-linux) is needed to run a process as another user");
    let mut line = String::new();
    BufReader::new(flood.stdout.take().unwrap()).read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "flooding");
    // Every request of the hub's own uid is answered while the flood goes on (before, the
    // flood pushed the oldest clients out whatever their uid).
    for i in 0..200 {
        let listing = cellshm::hub_listing(&name);
        assert!(listing.is_ok(), "request {i}: {:?}", listing.err());
    }
    let _ = flood.kill();
    let _ = flood.wait();
    drop(hub);
}

/// Attaches `cellshm-testkit attach HUB NAME`; the peer once ready, or the refusal the
/// process printed when it exited.
fn attach_as(hub: &Hub, name: &str) -> Result<(cellshm::Peer, std::process::Child), String> {
    let mut child = Command::new(CELL).args(["attach", hub.name(), name]).stderr(Stdio::piped()).spawn().unwrap();
    let pid = child.id();
    let find = || {
        hub.peers()
            .into_iter()
            .find(|p| p.name() == name && p.state() == cellshm::PeerState::Ready && p.pid() == Some(pid))
    };
    // Attached and ready, or refused (the process exits with the reason on stderr).
    let mut exited = None;
    poll_until(
        Duration::from_secs(10),
        || format!("{name} neither attached nor exited"),
        || {
            exited = child.try_wait().unwrap();
            exited.is_some() || find().is_some()
        },
    );
    match (find(), exited) {
        (Some(peer), _) => Ok((peer, child)),
        (None, status) => {
            let mut err = String::new();
            std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
            Err(format!("{}: {err}", status.map_or("running".into(), |s| s.to_string())))
        }
    }
}

#[test]
fn an_attached_process_cannot_take_a_cell_s_name_or_pass_its_allow_list() {
    let hub = Hub::create(HubConfig::default()).unwrap();
    hub.method("Host.echo", |call| call.reply(call.payload())).unwrap();
    hub.allow("Host.echo", &["honest"]).unwrap();
    let _attach = hub.enable_attach(cellshm::host::attach::AttachPolicy::default()).unwrap();
    let (honest, mut honest_child) = spawn_cell_on(&hub, "honest", &[]);
    assert_eq!(honest.call("Test.call_host", b"mine", &secs(5)).unwrap().bytes(), b"mine");

    // Its name, while it lives, is refused (it was accepted, and then passed the list).
    let taken = attach_as(&hub, "honest").map(|_| ()).unwrap_err();
    assert!(taken.contains("a name in use"), "{taken}");

    // Under its own name an attached process is not on the list.
    let (mallory, mut mallory_child) = attach_as(&hub, "mallory").unwrap();
    let refused = mallory.call("Test.call_host", b"let me in", &secs(5)).unwrap_err();
    assert!(
        refused.message().contains("PERMISSION_DENIED") || refused.status() == Status::PermissionDenied,
        "{refused}"
    );
    let _ = mallory_child.kill();
    let _ = mallory_child.wait();

    // Once the cell is gone its name is free, but an attached process that takes it is
    // still not the cell the list names.
    let _ = honest_child.kill();
    let _ = honest_child.wait();
    wait_dead(&honest);
    let (impostor, mut impostor_child) = attach_as(&hub, "honest").unwrap();
    assert!(impostor.identity().attached);
    let refused = impostor.call("Test.call_host", b"it's me", &secs(5)).unwrap_err();
    assert!(refused.message().contains("it attached"), "{refused}");
    // Attached processes are admitted by uid, when the host says so.
    hub.allow_attached("Host.echo", &[euid()]).unwrap();
    assert_eq!(impostor.call("Test.call_host", b"by uid", &secs(5)).unwrap().bytes(), b"by uid");
    let _ = impostor_child.kill();
    let _ = impostor_child.wait();
}
