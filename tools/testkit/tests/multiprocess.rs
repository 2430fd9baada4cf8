//! Multi-process tests: a real host (this test process), real cells (`cellshm-testkit cell`
//! child processes), real shared memory and real doorbell sockets.

use cellshm::{LinkEnd, Registry};
use std::io::{BufRead, BufReader};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use cellshm::{CallOptions, Hub, HubConfig, Peer, PeerOptions, PeerState, SlotClass, Status};

mod common;
use common::{secs, spawn_cell_on, start, wait_for_peer, RunDelay, CELL};

fn pattern(n: usize, seed: u8) -> Vec<u8> {
    (0..n).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect()
}

#[test]
fn echo_every_payload_size_and_refuse_oversize() {
    let r = start(HubConfig::default(), &[]);
    assert_eq!(r.peer.state(), PeerState::Ready);
    let ready = r.peer.ready_info().unwrap();
    assert_eq!(ready.pid, r.child.id());
    let largest = r.peer.max_payload();
    assert_eq!(largest, 1 << 20);
    // Every inline length (16 in the descriptor, up to 80 with the ring entry's second
    // line), the first slot sizes after it, then the larger ones.
    for size in (0..=100).chain([1024, 4096, 4097, 65_536, largest]) {
        let payload = pattern(size, size as u8);
        let reply = r.peer.call("Echo.echo", &payload, &secs(5)).unwrap_or_else(|e| panic!("size {size}: {e}"));
        assert_eq!(reply.bytes(), &payload[..], "size {size}");
    }
    let err = r.peer.call("Echo.echo", &vec![0u8; largest + 1], &secs(5)).unwrap_err();
    assert_eq!(err.status(), Status::PayloadTooLarge);
    assert!(err.message().contains(&format!("{}", largest + 1)), "{err}");
    // In-place request, larger response than request.
    let reply = r
        .peer
        .call_with(
            "Test.sized",
            4,
            |buf| {
                buf.copy_from_slice(&300_000u32.to_le_bytes());
                4
            },
            &secs(5),
        )
        .unwrap();
    assert_eq!(reply.len(), 300_000);
    assert!(reply.bytes().iter().enumerate().all(|(i, &b)| b == (i % 251) as u8));
    drop(reply);
    assert_eq!(r.peer.held_slots(), Some(0), "dropped responses return their slots");
}

#[test]
fn eight_threads_times_1000_concurrent_calls() {
    let r = Arc::new(start(HubConfig::default(), &[]));
    let threads: Vec<_> = (0..8u8)
        .map(|t| {
            let r = r.clone();
            thread::spawn(move || {
                for i in 0..1000u32 {
                    // Mix inline and slot payloads; every payload is unique to (thread, i).
                    let len = if i % 2 == 0 { 12 } else { 200 + (i as usize % 700) };
                    let mut payload = pattern(len, t);
                    payload[..4].copy_from_slice(&i.to_le_bytes());
                    payload[4] = t;
                    let reply = r.peer.call("Echo.echo", &payload, &secs(10)).unwrap();
                    assert_eq!(reply.bytes(), &payload[..], "thread {t} call {i}");
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let counters = r.peer.cell_counters().unwrap();
    assert_eq!(counters.requests_served, 8000, "every call served exactly once");
}

#[test]
fn a_call_completes_while_another_handler_of_the_same_cell_blocks() {
    // Whichever server thread runs a handler that blocks, another one must take over the
    // ring: calls complete while the first handler is still blocked, in every wait
    // strategy (a fast path may run short handlers inline, never a blocked one). The
    // blocked handler is `Test.call_host`, waiting for a host handler that tells us it
    // runs and then waits for our word.
    for wait in ["spin", "adaptive", "block"] {
        let hub = Hub::create(HubConfig::default()).unwrap();
        let (started_tx, started_rx) = std::sync::mpsc::channel::<()>();
        let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
        let (started_tx, release_rx) = (std::sync::Mutex::new(started_tx), std::sync::Mutex::new(release_rx));
        hub.method("Host.echo", move |call| {
            started_tx.lock().unwrap().send(()).unwrap();
            let _ = release_rx.lock().unwrap().recv_timeout(Duration::from_secs(4));
            call.reply(b"released")
        })
        .unwrap();
        let (peer, mut child) = spawn_cell_on(&hub, "blocker", &[("CELLSHM_WAIT", wait)]);
        let blocked = {
            let peer = peer.clone();
            thread::spawn(move || peer.call("Test.call_host", b"x", &secs(10)).map(|r| r.to_vec()))
        };
        started_rx.recv_timeout(Duration::from_secs(5)).expect("the cell's handler called the host");
        for i in 0..10u32 {
            let reply = peer.call("Echo.echo", &i.to_le_bytes(), &secs(2)).unwrap();
            assert_eq!(reply.bytes(), &i.to_le_bytes(), "{wait}: echo {i} while a handler is blocked");
        }
        assert!(!blocked.is_finished(), "{wait}: the blocked handler was not blocked");
        release_tx.send(()).unwrap();
        assert_eq!(blocked.join().unwrap().unwrap(), b"released", "{wait}");
        let _ = child.kill();
        let _ = child.wait();
    }
}

#[test]
fn deadlines_are_honoured_on_both_sides() {
    let r = Arc::new(start(HubConfig::default(), &[("CELLSHM_WORKERS", "1")]));
    // Caller side: a slow handler and a short deadline.
    let (t, delay) = (Instant::now(), RunDelay::this_thread_and_links());
    let err =
        r.peer.call("Test.sleep", &300u32.to_le_bytes(), &CallOptions::timeout(Duration::from_millis(50))).unwrap_err();
    assert_eq!(err.status(), Status::DeadlineExceeded);
    assert!(err.message().contains("Test.sleep"), "{err}");
    // Before the handler's 300 ms, but for what the scheduler made us wait.
    let (took, scheduler) = (t.elapsed(), delay.so_far());
    assert!(took < Duration::from_millis(250) + scheduler, "gave up after {took:?} ({scheduler:?} waiting for a CPU)");

    // Callee side: with its only worker busy, a request whose deadline passes while it
    // waits is answered with an error instead of running the handler.
    thread::sleep(Duration::from_millis(300));
    let before = r.peer.cell_counters().unwrap();
    let busy = {
        let r = r.clone();
        thread::spawn(move || r.peer.call("Test.sleep", &200u32.to_le_bytes(), &secs(5)).unwrap())
    };
    thread::sleep(Duration::from_millis(30));
    let err =
        r.peer.call("Test.sized", &10u32.to_le_bytes(), &CallOptions::timeout(Duration::from_millis(20))).unwrap_err();
    assert_eq!(err.status(), Status::DeadlineExceeded);
    busy.join().unwrap();
    thread::sleep(Duration::from_millis(50));
    let after = r.peer.cell_counters().unwrap();
    assert_eq!(after.requests_served - before.requests_served, 2);
    assert_eq!(after.errors - before.errors, 1, "the expired request was skipped, not run");
    // Options are reusable: a timeout counts from the start of each call, not from
    // when the options were made.
    let options = CallOptions::timeout(Duration::from_millis(100));
    thread::sleep(Duration::from_millis(150));
    for _ in 0..3 {
        r.peer.call("Echo.echo", b"fresh", &options).unwrap();
    }
    // An absolute deadline in the past fails at once, without a round trip.
    let past = CallOptions::deadline(cellshm::monotonic_now_ns() - 1);
    assert_eq!(r.peer.call("Echo.echo", b"late", &past).unwrap_err().status(), Status::DeadlineExceeded);
    // The link is healthy afterwards and no slot leaked.
    assert_eq!(r.peer.call("Echo.echo", b"still here", &secs(5)).unwrap().bytes(), b"still here");
    assert_eq!(r.peer.held_slots(), Some(0));
}

#[test]
fn errors_unknown_methods_and_panics_come_back_and_the_cell_keeps_serving() {
    let r = start(HubConfig::default(), &[]);
    let err = r.peer.call("No.such", b"", &secs(5)).unwrap_err();
    assert_eq!(err.status(), Status::Unimplemented);
    let id = format!("{:#010x}", cellshm::method_id("No.such"));
    assert!(err.message().contains(&id) && err.message().contains("No.such"), "{err}");

    let err = r.peer.call("Test.panic", b"", &secs(5)).unwrap_err();
    assert_eq!(err.status(), Status::Internal);
    assert!(err.message().contains("deliberate panic"), "{err}");

    let mut failing = 5u32.to_le_bytes().to_vec();
    failing.extend_from_slice("the thing is not there, and this message is long enough to need a slot".as_bytes());
    let err = r.peer.call("Test.fail", &failing, &secs(5)).unwrap_err();
    assert_eq!(err.status(), Status::NotFound);
    assert!(err.message().starts_with("the thing is not there"), "{err}");

    let err = r.peer.call("Test.fail", b"", &secs(5)).unwrap_err();
    assert_eq!(err.status(), Status::InvalidArgument, "handler argument errors propagate: {err}");

    assert_eq!(r.peer.call("Echo.echo", b"alive", &secs(5)).unwrap().bytes(), b"alive");
    assert_eq!(r.peer.state(), PeerState::Ready);
    let rtt = r.peer.ping(Duration::from_secs(5)).unwrap();
    assert!(rtt < Duration::from_secs(5));
}

#[test]
fn cells_call_the_host_and_notifications_need_no_reply() {
    let hub = Hub::create(HubConfig::default()).unwrap();
    hub.method("Host.echo", |call| {
        let mut answer = b"host:".to_vec();
        answer.extend_from_slice(call.payload());
        call.reply(&answer)
    })
    .unwrap();
    let (peer, mut child) = spawn_cell_on(&hub, "caller", &[]);
    let big = pattern(5000, 9);
    for payload in [&b"ping"[..], &big[..]] {
        let reply = peer.call("Test.call_host", payload, &secs(5)).unwrap();
        assert_eq!(&reply.bytes()[..5], b"host:");
        assert_eq!(&reply.bytes()[5..], payload);
    }
    let before = peer.cell_counters().unwrap().requests_served;
    for _ in 0..10 {
        peer.notify("Test.sleep", &0u32.to_le_bytes(), &CallOptions::default()).unwrap();
    }
    let t = Instant::now();
    while peer.cell_counters().unwrap().requests_served < before + 10 {
        assert!(t.elapsed() < Duration::from_secs(5), "notifications were not served");
        thread::sleep(Duration::from_millis(5));
    }
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn full_pools_wait_for_the_deadline_then_report_resource_exhausted() {
    let config = HubConfig {
        ring_capacity: 8,
        slot_classes: vec![SlotClass { slot_size: 256, slot_count: 2 }],
        ..HubConfig::default()
    };
    let r = Arc::new(start(config, &[("CELLSHM_WORKERS", "1")]));
    // Two slow calls hold both host slots (their payloads need slots).
    let mut request = 250u32.to_le_bytes().to_vec();
    request.resize(100, 0);
    let holders: Vec<_> = (0..2)
        .map(|_| {
            let (r, request) = (r.clone(), request.clone());
            thread::spawn(move || r.peer.call("Test.sleep", &request, &secs(5)).map(|_| ()))
        })
        .collect();
    thread::sleep(Duration::from_millis(50));
    let (t, delay) = (Instant::now(), RunDelay::this_thread_and_links());
    let err = r.peer.call("Echo.echo", &[1u8; 100], &CallOptions::timeout(Duration::from_millis(60))).unwrap_err();
    assert_eq!(err.status(), Status::ResourceExhausted, "{err}");
    let (took, scheduler) = (t.elapsed(), delay.so_far());
    assert!(
        took >= Duration::from_millis(50) && took < Duration::from_millis(400) + scheduler,
        "{took:?} ({scheduler:?} waiting for a CPU)"
    );
    for h in holders {
        h.join().unwrap().unwrap();
    }
    // Once the slots are back, large payloads flow again.
    assert_eq!(r.peer.call("Echo.echo", &[2u8; 100], &secs(5)).unwrap().bytes(), &[2u8; 100][..]);
}

#[test]
fn kill_9_mid_call_fails_the_call_with_peer_dead_within_a_second() {
    let mut r = start(HubConfig::default(), &[]);
    let peer = r.peer.clone();
    let died = Arc::new(std::sync::Mutex::new(None));
    {
        let died = died.clone();
        peer.on_death(move |e| *died.lock().unwrap() = Some(e.status()));
    }
    let call = thread::spawn(move || {
        let t = Instant::now();
        let result = peer.call("Test.sleep", &10_000u32.to_le_bytes(), &CallOptions::default());
        (result.map(|_| ()), t)
    });
    thread::sleep(Duration::from_millis(100));
    let killed_at = Instant::now();
    r.child.kill().unwrap();
    let (result, _) = call.join().unwrap();
    let err = result.unwrap_err();
    assert_eq!(err.status(), Status::PeerDead, "{err}");
    assert!(killed_at.elapsed() < Duration::from_secs(1), "took {:?}", killed_at.elapsed());
    assert!(matches!(r.peer.state(), PeerState::Dead(e) if e.status() == Status::PeerDead));
    assert_eq!(*died.lock().unwrap(), Some(Status::PeerDead));
    assert_eq!(r.peer.call("Echo.echo", b"x", &secs(1)).unwrap_err().status(), Status::PeerDead);
}

fn process_gone(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        // A zombie (state Z) has exited; only its parent's reaping is left.
        Ok(stat) => stat.rsplit(')').next().is_some_and(|rest| rest.trim_start().starts_with('Z')),
    }
}

#[test]
fn a_cell_exits_within_a_second_of_its_host() {
    let mut host = Command::new(CELL).arg("host").env("CELLSHM_QUIET", "1").stdout(Stdio::piped()).spawn().unwrap();
    let mut line = String::new();
    BufReader::new(host.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let cell_pid: u32 = line.trim().strip_prefix("cell_pid=").unwrap().parse().unwrap();
    assert!(!process_gone(cell_pid));
    host.kill().unwrap();
    let killed_at = Instant::now();
    host.wait().unwrap();
    while !process_gone(cell_pid) {
        assert!(killed_at.elapsed() < Duration::from_secs(1), "cell {cell_pid} outlived its host by 1 s");
        thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn garbage_from_one_cell_drops_that_peer_and_the_host_keeps_serving_another() {
    let hub = Hub::create(HubConfig::default()).unwrap();
    let (bad, mut bad_child) = spawn_cell_on(&hub, "bad", &[]);
    let (good, mut good_child) = spawn_cell_on(&hub, "good", &[]);
    let err = bad.call("Test.garbage", b"", &secs(5)).unwrap_err();
    assert_eq!(err.status(), Status::ProtocolError, "{err}");
    assert!(matches!(bad.state(), PeerState::Dead(e) if e.status() == Status::ProtocolError));
    // The dropped cell sees EOF and exits; the other one is unaffected.
    let status = bad_child.wait().unwrap();
    assert!(!status.success());
    for i in 0..100u32 {
        let payload = pattern(100, i as u8);
        assert_eq!(good.call("Echo.echo", &payload, &secs(5)).unwrap().bytes(), &payload[..]);
    }
    let _ = good_child.kill();
    let _ = good_child.wait();
}

/// Runs the cell binary by hand with `env` and a bootstrap socket on fd 3; a thread plays
/// the host and answers the cell's join request with `first_message` (if any).
fn run_cell_by_hand(env: &[(&str, &str)], first_message: Option<&[u8]>) -> (i32, String) {
    let mut fds = [0; 2];
    // SAFETY: fds has room for two descriptors.
    let made =
        unsafe { libc::socketpair(libc::AF_UNIX, libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC, 0, fds.as_mut_ptr()) };
    assert_eq!(made, 0);
    // SAFETY: fresh fds owned by nobody else.
    let (ours, theirs) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    let host = first_message.map(|message| {
        let message = message.to_vec();
        let ours = ours.try_clone().unwrap();
        thread::spawn(move || {
            // The request, with the cell's private socket: the answer goes there.
            let (request, mut fds) = cellshm_testkit::raw::recv_fds(&ours).unwrap();
            assert_eq!(request, b"CSHMJREQ");
            let private = fds.pop().expect("the join request carries a socket");
            // SAFETY: sends from a live buffer on a socket we own.
            let sent = unsafe { libc::send(private.as_raw_fd(), message.as_ptr().cast(), message.len(), 0) };
            assert_eq!(sent, message.len() as isize);
        })
    });
    let child_fd = theirs.as_raw_fd();
    let mut cmd = Command::new(CELL);
    cmd.arg("cell").env_remove("CELLSHM_DOORBELL_FD").env("CELLSHM_READY_TIMEOUT_MS", "200").stderr(Stdio::piped());
    cmd.envs(env.iter().copied());
    // SAFETY: dup2 is async-signal-safe.
    unsafe {
        cmd.pre_exec(move || if libc::dup2(child_fd, 3) < 0 { Err(std::io::Error::last_os_error()) } else { Ok(()) })
    };
    let out = cmd.output().unwrap();
    drop(ours);
    if let Some(host) = host {
        host.join().unwrap();
    }
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn bad_join_values_fail_with_clear_errors() {
    let (code, err) = run_cell_by_hand(&[], None);
    assert_ne!(code, 0);
    assert!(err.contains("CELLSHM_DOORBELL_FD is not set"), "{err}");

    let (code, err) = run_cell_by_hand(&[("CELLSHM_DOORBELL_FD", "77")], None);
    assert_ne!(code, 0);
    assert!(err.contains("doorbell fd 77 is not an open file descriptor"), "{err}");

    let (code, err) = run_cell_by_hand(&[("CELLSHM_DOORBELL_FD", "1")], None);
    assert_ne!(code, 0);
    assert!(err.contains("doorbell fd 1 is not a socket"), "{err}");

    let (code, err) = run_cell_by_hand(&[("CELLSHM_DOORBELL_FD", "x")], None);
    assert_ne!(code, 0);
    assert!(err.contains("CELLSHM_DOORBELL_FD=\"x\" is not a file descriptor number"), "{err}");

    let t = Instant::now();
    let (code, err) = run_cell_by_hand(&[("CELLSHM_DOORBELL_FD", "3")], None);
    assert_ne!(code, 0);
    assert!(err.contains("no join record from the host within 200 ms"), "{err}");
    assert!(t.elapsed() < Duration::from_secs(3));

    let (code, err) = run_cell_by_hand(&[("CELLSHM_DOORBELL_FD", "3")], Some(b"hello"));
    assert_ne!(code, 0);
    assert!(err.contains("PROTOCOL_ERROR") && err.contains("a join record is 176 bytes"), "{err}");
    let (code, err) = run_cell_by_hand(&[("CELLSHM_DOORBELL_FD", "3")], Some(&[0x41; 176]));
    assert_ne!(code, 0);
    assert!(err.contains("bad magic"), "{err}");
    let mut no_fds = [0u8; 176];
    no_fds[..8].copy_from_slice(b"CSHMJOIN");
    no_fds[8] = 2;
    let (code, err) = run_cell_by_hand(&[("CELLSHM_DOORBELL_FD", "3")], Some(&no_fds));
    assert_ne!(code, 0);
    assert!(err.contains("slot classes") || err.contains("exactly the two memfds and the doorbell"), "{err}");
}

#[test]
fn wait_strategies_all_work_and_peers_shut_down_gracefully() {
    for wait in ["spin", "block", "adaptive:10"] {
        let hub = Hub::create(HubConfig::default()).unwrap();
        let strategy = cellshm::WaitStrategy::parse(wait).unwrap();
        let ticket = hub.add_peer(wait, PeerOptions { wait: strategy, ..PeerOptions::default() }).unwrap();
        let mut cmd = Command::new(CELL);
        cmd.arg("cell").env("CELLSHM_WAIT", wait);
        let (peer, mut child) = ticket.spawn(&mut cmd).unwrap();
        peer.wait_ready(Duration::from_secs(10)).unwrap();
        for i in 0..2000u32 {
            let reply = peer.call("Echo.echo", &i.to_le_bytes(), &secs(5)).unwrap();
            assert_eq!(reply.bytes(), &i.to_le_bytes(), "{wait}");
        }
        peer.shutdown(Duration::from_secs(2));
        let status = child.wait().unwrap();
        assert!(status.success(), "{wait}: a cell told goodbye exits cleanly, got {status}");
    }
}

/// On two cores one thread per process may spin (`runtime::spinning`): a spinning caller
/// towards one cell leaves the callers towards the others to park their rings and be
/// rung. Every call of every link still completes, in order, on any machine.
#[test]
fn spinning_callers_towards_three_cells_at_once_all_complete() {
    let hub = Hub::create(HubConfig::default()).unwrap();
    let cells: Vec<_> = (0..3)
        .map(|i| {
            let ticket = hub
                .add_peer(
                    &format!("spin-{i}"),
                    PeerOptions { wait: cellshm::WaitStrategy::Spin, ..PeerOptions::default() },
                )
                .unwrap();
            let mut cmd = Command::new(CELL);
            cmd.arg("cell").env("CELLSHM_WAIT", "spin").env("CELLSHM_QUIET", "1");
            let (peer, child) = ticket.spawn(&mut cmd).unwrap();
            peer.wait_ready(Duration::from_secs(10)).unwrap();
            (peer, child)
        })
        .collect();
    thread::scope(|scope| {
        for (c, (peer, _)) in cells.iter().enumerate() {
            for t in 0..2u32 {
                scope.spawn(move || {
                    for i in 0..1500u32 {
                        let payload = [c as u32, t, i].map(u32::to_le_bytes).concat();
                        let reply = peer.call("Echo.echo", &payload, &secs(10)).unwrap();
                        assert_eq!(reply.bytes(), &payload[..], "cell {c}, thread {t}, call {i}");
                    }
                });
            }
        }
    });
    for (peer, mut child) in cells {
        peer.shutdown(Duration::from_secs(2));
        assert!(child.wait().unwrap().success());
    }
}

#[test]
fn blocking_mode_under_concurrency_never_loses_a_wakeup() {
    blocking_calls_in_both_directions("3");
}

#[test]
fn blocking_mode_with_one_and_two_servers_never_loses_a_wakeup() {
    // Few servers: requests a handler's own call finds while it waits for the host are
    // queued for a server asleep on the doorbell; the kick that wakes it must be its own.
    blocking_calls_in_both_directions("1");
    blocking_calls_in_both_directions("2");
}

fn blocking_calls_in_both_directions(workers: &str) {
    // Every thread sleeps on the doorbell between messages; a lost wakeup would show up
    // as a call stalled until its deadline (servers have no recheck timer).
    let hub = Hub::create(HubConfig::default()).unwrap();
    hub.method("Host.echo", |call| call.reply(call.payload())).unwrap();
    let ticket =
        hub.add_peer("blocking", PeerOptions { wait: cellshm::WaitStrategy::Block, ..PeerOptions::default() }).unwrap();
    let mut cmd = Command::new(CELL);
    cmd.arg("cell").env("CELLSHM_WAIT", "block").env("CELLSHM_WORKERS", workers);
    let (peer, mut child) = ticket.spawn(&mut cmd).unwrap();
    peer.wait_ready(Duration::from_secs(10)).unwrap();
    let cell_pid = child.id();
    let threads: Vec<_> = (0..4u8)
        .map(|t| {
            let peer = peer.clone();
            thread::spawn(move || {
                // The latest call beyond what the scheduler explains (the threads of both
                // sides waiting for a CPU): a lost wakeup stalls a call until its 5 s
                // deadline, asleep, which no run delay covers.
                let mut latest = (Duration::ZERO, Duration::ZERO);
                for i in 0..300u32 {
                    let payload = pattern(8 + (i as usize % 60), t);
                    let (started, delay) = (Instant::now(), RunDelay::this_thread_and_links().and_process(cell_pid));
                    // Half the calls bounce through a host method: both directions at once.
                    let method = if i % 2 == 0 { "Echo.echo" } else { "Test.call_host" };
                    let reply = peer.call(method, &payload, &secs(5)).unwrap();
                    let (took, scheduler) = (started.elapsed(), delay.so_far());
                    if took.saturating_sub(scheduler) > latest.0.saturating_sub(latest.1) {
                        latest = (took, scheduler);
                    }
                    assert_eq!(reply.bytes(), &payload[..], "thread {t} call {i}");
                }
                latest
            })
        })
        .collect();
    for t in threads {
        let (took, scheduler) = t.join().unwrap();
        assert!(
            took < Duration::from_millis(200) + scheduler,
            "{workers} servers: a call took {took:?} ({scheduler:?} of it waiting for a CPU): a wakeup was lost"
        );
    }
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn a_process_that_never_joins_is_reported_dead_not_waited_for() {
    let hub = Hub::create(HubConfig::default()).unwrap();
    let ticket = hub.add_peer("not-a-cell", PeerOptions::default()).unwrap();
    let (peer, mut child) = ticket.spawn(&mut Command::new("true")).unwrap();
    let t = Instant::now();
    let err = peer.wait_ready(Duration::from_secs(10)).unwrap_err();
    assert_eq!(err.status(), Status::PeerDead, "{err}");
    assert!(err.message().contains("died before it was ready"), "{err}");
    assert!(t.elapsed() < Duration::from_secs(1));
    child.wait().unwrap();
}

#[test]
fn a_full_hub_says_so() {
    let hub = Hub::create(HubConfig { max_peers: 2, ..HubConfig::default() }).unwrap();
    let _a = hub.add_peer("a", PeerOptions::default()).unwrap();
    let _b = hub.add_peer("b", PeerOptions::default()).unwrap();
    let err = hub.add_peer("c", PeerOptions::default()).unwrap_err();
    assert_eq!(err.status(), Status::HubFull);
    assert!(err.message().contains("all 2 peer slots"), "{err}");
    let err = hub.add_peer("d", PeerOptions { doorbell_fd: 1, ..PeerOptions::default() }).unwrap_err();
    assert_eq!(err.status(), Status::InvalidArgument);
}

#[test]
fn started_calls_complete_through_their_callback_cancel_on_drop_and_fail_on_death() {
    let mut r = start(HubConfig::default(), &[]);
    let (tx, rx) = std::sync::mpsc::channel::<u32>();
    let mut started = Vec::new();
    for i in 0..50u32 {
        let tx = tx.clone();
        let call =
            r.peer.call_start("Echo.echo", &i.to_le_bytes(), &secs(5), Box::new(move || tx.send(i).unwrap())).unwrap();
        started.push((i, call));
    }
    let mut completed: Vec<u32> = (0..50).map(|_| rx.recv_timeout(Duration::from_secs(5)).unwrap()).collect();
    completed.sort();
    assert_eq!(completed, (0..50).collect::<Vec<_>>());
    for (i, call) in &started {
        assert_eq!(call.try_take().unwrap().unwrap().bytes(), &i.to_le_bytes());
    }
    // Dropped before completion: the response is dropped when it comes, nothing leaks.
    let slow =
        r.peer.call_start("Test.sleep", &50u32.to_le_bytes(), &secs(5), Box::new(|| panic!("cancelled"))).unwrap();
    assert!(!slow.is_done());
    drop(slow);
    thread::sleep(Duration::from_millis(100));
    assert_eq!(r.peer.held_slots(), Some(0));
    // A death completes every started call with PEER_DEAD.
    let (tx, rx) = std::sync::mpsc::channel();
    let doomed = r
        .peer
        .call_start("Test.sleep", &5000u32.to_le_bytes(), &secs(10), Box::new(move || tx.send(()).unwrap()))
        .unwrap();
    r.child.kill().unwrap();
    rx.recv_timeout(Duration::from_secs(1)).unwrap();
    assert_eq!(doomed.try_take().unwrap().unwrap_err().status(), Status::PeerDead);
}

#[test]
fn cell_log_records_reach_the_hubs_log_sink_with_the_cell_name() {
    let hub = Hub::create(HubConfig::default()).unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let tx = std::sync::Mutex::new(tx);
    hub.set_log_sink(Some(Arc::new(move |record: &cellshm::LogRecord<'_>| {
        let _ = tx.lock().unwrap().send((record.cell.to_string(), record.level, record.message.to_string()));
    })));
    let (peer, mut child) = spawn_cell_on(&hub, "chatty", &[]);
    peer.call("Test.log", b"hello from the cell", &secs(5)).unwrap();
    let (cell, level, message) = rx.recv_timeout(Duration::from_secs(5)).unwrap();
    assert_eq!(
        (cell.as_str(), level, message.as_str()),
        ("chatty", cellshm::wire::log_level::INFO, "hello from the cell")
    );
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn dead_peer_slots_are_reused_with_a_new_epoch_many_times() {
    // 4 slots, 40 launches: every relaunch must reuse the slot of a dead cell.
    let hub = Hub::create(HubConfig { max_peers: 4, ..HubConfig::default() }).unwrap();
    let mut epochs = std::collections::HashMap::new();
    for round in 0..40u32 {
        let (peer, mut child) = spawn_cell_on(&hub, &format!("round-{round}"), &[]);
        let payload = round.to_le_bytes();
        assert_eq!(peer.call("Echo.echo", &payload, &secs(5)).unwrap().bytes(), &payload);
        let epoch = epochs.entry(peer.id()).or_insert(0u32);
        *epoch += 1;
        if round % 2 == 0 {
            child.kill().unwrap();
        } else {
            peer.shutdown(Duration::from_secs(2));
        }
        child.wait().unwrap();
        let t = Instant::now();
        while !matches!(peer.state(), PeerState::Dead(_)) {
            assert!(t.elapsed() < Duration::from_secs(2));
            thread::sleep(Duration::from_millis(1));
        }
    }
    assert!(epochs.values().sum::<u32>() == 40 && epochs.len() <= 4, "{epochs:?}");
}

#[test]
fn a_dropped_ticket_frees_its_slot_and_shares_nothing_with_the_next_launch() {
    let hub = Hub::create(HubConfig { max_peers: 1, ..HubConfig::default() }).unwrap();
    let stale = hub.add_peer("first", PeerOptions::default()).unwrap();
    drop(stale);
    // The slot dies unused (its doorbell closed) and is reused for a new cell, with new
    // memfds: nothing the first launch could have held reaches the second.
    let t = Instant::now();
    while !matches!(hub.peers()[0].state(), PeerState::Dead(_)) {
        assert!(t.elapsed() < Duration::from_secs(2));
        thread::sleep(Duration::from_millis(1));
    }
    let (peer, mut child) = spawn_cell_on(&hub, "second", &[]);
    assert_eq!(peer.id(), 0);
    assert_eq!(peer.call("Echo.echo", b"unharmed", &secs(5)).unwrap().bytes(), b"unharmed");
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn the_slot_of_a_cell_whose_exit_was_reaped_is_free_at_once() {
    // Once the caller has reaped the killed cell, a new spawn on a one-slot hub must not
    // race the link's threads noticing the death: add_peer asks the link itself.
    let hub = Hub::create(HubConfig { max_peers: 1, ..HubConfig::default() }).unwrap();
    for round in 0..20 {
        let (peer, mut child) = spawn_cell_on(&hub, &format!("cell-{round}"), &[]);
        child.kill().unwrap();
        child.wait().unwrap();
        let next = hub.add_peer("next", PeerOptions::default());
        assert!(next.is_ok(), "round {round}: {:?} (old peer {:?})", next.err(), peer.state());
    }
}

#[test]
fn an_idle_cell_killed_with_sigkill_is_seen_dead_within_100_ms() {
    let mut r = start(HubConfig::default(), &[]);
    let (tx, rx) = std::sync::mpsc::channel();
    r.peer.on_death(move |_| tx.send(Instant::now()).unwrap());
    thread::sleep(Duration::from_millis(100)); // idle: every thread of both sides asleep
                                               // The library's threads notice; their wait for a CPU is the scheduler's part.
    let delay = RunDelay::this_thread_and_links();
    let killed = Instant::now();
    r.child.kill().unwrap();
    let seen = rx.recv_timeout(Duration::from_secs(5)).unwrap();
    let (latency, scheduler) = (seen - killed, delay.so_far());
    println!("death seen {latency:?} after SIGKILL ({scheduler:?} waiting for a CPU)");
    assert!(
        latency < Duration::from_millis(100) + scheduler,
        "death seen after {latency:?} ({scheduler:?} waiting for a CPU)"
    );
}

#[test]
fn inspect_shows_peers_rings_pools_and_counters() {
    let hub = Hub::create(HubConfig::default()).unwrap();
    // Not even the host's own uid may inspect until the host says so.
    let refused = cellshm::snapshot(hub.name()).unwrap_err();
    assert_eq!(refused.status(), Status::PermissionDenied, "{refused}");
    assert!(refused.message().contains("did not enable it"), "{refused}");
    common::inspectable(&hub);
    let (a, mut child_a) = spawn_cell_on(&hub, "alpha", &[]);
    let (b, mut child_b) = spawn_cell_on(&hub, "beta", &[]);
    for i in 0..20u32 {
        a.call("Echo.echo", &vec![i as u8; 300], &secs(5)).unwrap();
    }
    let held = b.call("Test.sized", &5000u32.to_le_bytes(), &secs(5)).unwrap();
    let snap = cellshm::snapshot(hub.name()).unwrap();
    assert_eq!(snap.peers.len(), 2);
    let pa = snap.peers.iter().find(|p| p.name == "alpha").unwrap();
    let pb = snap.peers.iter().find(|p| p.name == "beta").unwrap();
    assert_eq!((pa.state, pa.epoch, pa.pid), (cellshm::PeerSlotState::Active, 1, child_a.id()));
    assert_eq!(pa.host_counters.calls_sent, 20);
    assert_eq!(pa.cell_counters.requests_served, 20);
    assert_eq!((pa.host_to_cell_depth, pa.cell_to_host_depth), (0, 0));
    assert!(pa.host_pool_in_use.iter().chain(&pa.cell_pool_in_use).all(|&n| n == 0), "{pa:?}");
    // The 5000-byte response we still hold occupies one slot of beta's pool.
    assert_eq!(pb.cell_pool_in_use.iter().sum::<u32>(), 1, "{pb:?}");
    drop(held);
    let snap = cellshm::snapshot(hub.name()).unwrap();
    let pb = snap.peers.iter().find(|p| p.name == "beta").unwrap();
    assert_eq!(pb.cell_pool_in_use.iter().sum::<u32>(), 0, "{pb:?}");
    let _ = child_a.kill();
    let _ = child_b.kill();
    let _ = child_a.wait();
    let _ = child_b.wait();
}

#[test]
fn both_sides_list_the_methods_they_serve() {
    let hub = Hub::create(HubConfig::default()).unwrap();
    hub.method("Host.echo", |call| call.reply(call.payload())).unwrap();
    let (peer, mut child) = spawn_cell_on(&hub, "listed", &[]);
    let methods = peer.served_methods(Duration::from_secs(5)).unwrap();
    let names: Vec<&str> = methods.iter().map(|(n, _, _)| n.as_str()).collect();
    for expected in ["Echo.echo", "Test.sleep", "Test.panic", "cellshm.Introspect.methods"] {
        assert!(names.contains(&expected), "{names:?}");
    }
    assert!(methods.iter().all(|(n, id, _)| cellshm::method_id(n) == *id));
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(names, sorted);
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn a_process_the_host_did_not_spawn_attaches_through_the_hub_socket() {
    let hub = Hub::create(HubConfig::default()).unwrap();
    let listener = hub.enable_attach(cellshm::host::attach::AttachPolicy::default()).unwrap();
    assert_eq!(listener.hub_name(), hub.name());
    let mut stranger =
        Command::new(CELL).args(["attach", hub.name(), "stranger"]).env("CELLSHM_QUIET", "1").spawn().unwrap();
    let peer = wait_for_peer(&hub, "stranger");
    assert_eq!(peer.pid(), Some(stranger.id()));
    assert_eq!(peer.call("Echo.echo", b"attached", &secs(5)).unwrap().bytes(), b"attached");
    // Its death is seen like any other cell's.
    stranger.kill().unwrap();
    stranger.wait().unwrap();
    let t = Instant::now();
    while !matches!(peer.state(), PeerState::Dead(_)) {
        assert!(t.elapsed() < Duration::from_secs(1));
        thread::sleep(Duration::from_millis(1));
    }
    assert!(listener.refusals().is_empty());
    drop(listener);
    let out = Command::new(CELL).args(["attach", hub.name(), "late"]).env("CELLSHM_QUIET", "1").output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains("attaching is not enabled"), "{stderr}");
}

#[test]
fn a_process_of_another_uid_is_refused_with_a_logged_reason() {
    let hub = Hub::create(HubConfig::default()).unwrap();
    let listener = hub.enable_attach(cellshm::host::attach::AttachPolicy::default()).unwrap();
    let out = Command::new("runuser")
        .args(["-u", "nobody", "--", CELL, "attach", &format!("{}/{}", host_uid(), hub.name()), "intruder"])
        .output()
        .expect("runuser (util-linux) is needed to run a process as another user");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("attach refused") && stderr.contains("not allowed"), "{stderr}");
    let refusals = listener.refusals();
    assert_eq!((refusals.len(), listener.refusal_count()), (1, 1), "{refusals:?}");
    assert!(refusals[0].contains("uid 65534"), "{refusals:?}");
    assert!(hub.peers().is_empty(), "no slot was reserved for the refused process");
}

#[test]
fn tracing_events_of_a_rust_cell_reach_the_host_through_the_filter_it_pushed() {
    let hub = Hub::create(HubConfig::default()).unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let tx = std::sync::Mutex::new(tx);
    hub.set_log_sink(Some(Arc::new(move |r: &cellshm::LogRecord<'_>| {
        let mut message = r.message.to_string();
        for (key, value) in r.fields {
            message.push_str(&format!(" {key}={value}"));
        }
        let _ = tx.lock().unwrap().send((r.cell.to_string(), r.level, r.target.to_string(), message));
    })));
    let (peer, mut child) = spawn_cell_on(&hub, "tracer", &[]);
    let collect = |expected: usize| {
        let sent_before = peer.cell_counters().unwrap().calls_sent;
        peer.call("Test.trace", b"", &secs(5)).unwrap();
        let got: Vec<_> = (0..expected).map(|_| rx.recv_timeout(Duration::from_secs(5)).unwrap()).collect();
        assert!(rx.recv_timeout(Duration::from_millis(100)).is_err(), "more records than expected");
        // Filtered-out events were never sent: the cell sent exactly what arrived.
        assert_eq!(peer.cell_counters().unwrap().calls_sent - sent_before, expected as u64);
        got.into_iter()
            .map(|(cell, level, target, message)| {
                assert_eq!(cell, "tracer");
                (level, target, message)
            })
            .collect::<Vec<_>>()
    };
    use cellshm::wire::log_level::{DEBUG, ERROR, INFO, WARN};
    // The default filter: info and more severe.
    let got = collect(3);
    assert_eq!(got[0], (INFO, "other".into(), "info from other".into()));
    assert_eq!(got[1], (WARN, "other".into(), "warn from other".into()));
    assert_eq!(got[2], (ERROR, "mycell".into(), "error with a field answer=42".into()));
    // The host pushes "warn,mycell=debug".
    peer.set_log_filter("warn,mycell=debug", Duration::from_secs(5)).unwrap();
    let got = collect(3);
    assert_eq!(got[0], (WARN, "other".into(), "warn from other".into()));
    assert_eq!(got[1], (DEBUG, "mycell::db".into(), "debug from mycell".into()));
    assert_eq!(got[2].0, ERROR);
    let err = peer.set_log_filter("loud", Duration::from_secs(5)).unwrap_err();
    assert_eq!(err.status(), Status::InvalidArgument);
    let _ = child.kill();
    let _ = child.wait();
}

fn host_uid() -> u32 {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() }
}

#[test]
fn dropping_a_hub_says_goodbye_and_its_cells_exit_0_and_print_nothing() {
    let hub = Hub::create(HubConfig::default()).unwrap();
    let mut children = Vec::new();
    for i in 0..3 {
        let ticket = hub.add_peer(&format!("leaver-{i}"), PeerOptions::default()).unwrap();
        // Not quiet: anything a cell would print about its end shows here.
        let mut cmd = Command::new(CELL);
        cmd.arg("cell").stderr(Stdio::piped());
        let (peer, child) = ticket.spawn(&mut cmd).unwrap();
        peer.wait_ready(Duration::from_secs(10)).unwrap();
        children.push(child);
    }
    let started = Instant::now();
    drop(hub);
    // Generous: the cells leave at once; the grace (2 s) is only for cells that do not.
    assert!(started.elapsed() < Duration::from_millis(1500), "dropping took {:?}", started.elapsed());
    for child in children {
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{stderr}");
        assert!(stderr.is_empty(), "a cell told goodbye printed {stderr:?}");
    }
}

/// Runs `f` on a thread and fails the test if it does not return within `limit`.
fn within<T: Send + 'static>(limit: Duration, what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    thread::spawn(move || tx.send(f()).unwrap());
    rx.recv_timeout(limit).unwrap_or_else(|_| panic!("{what} did not finish within {limit:?}: a deadlock"))
}

#[test]
fn dropping_a_hub_while_a_host_handler_calls_back_into_its_cell_does_not_deadlock() {
    let hub = Hub::create(HubConfig::default()).unwrap();
    let callee: Arc<std::sync::Mutex<Option<Peer>>> = Arc::default();
    let (entered_tx, entered_rx) = std::sync::mpsc::channel();
    let entered_tx = std::sync::Mutex::new(entered_tx);
    let target = callee.clone();
    hub.method("Host.echo", move |call| {
        let _ = entered_tx.lock().unwrap().send(());
        let peer = target.lock().unwrap().clone().expect("set before the first call");
        // Calls back into the cell while the hub is being dropped.
        let _ = peer.call("Test.sleep", &300u32.to_le_bytes(), &secs(5));
        call.reply(call.payload())
    })
    .unwrap();
    let (peer, mut child) = spawn_cell_on(&hub, "caller", &[]);
    *callee.lock().unwrap() = Some(peer.clone());
    let caller = thread::spawn(move || peer.call("Test.call_host", b"round", &secs(10)));
    entered_rx.recv_timeout(Duration::from_secs(5)).unwrap();
    within(Duration::from_secs(10), "dropping the hub", move || drop(hub));
    let _ = caller.join().unwrap();
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn reusing_the_slot_of_a_cell_that_died_mid_handler_does_not_wait_for_that_handler() {
    let hub = Arc::new(Hub::create(HubConfig { max_peers: 1, ..HubConfig::default() }).unwrap());
    let (entered_tx, entered_rx) = std::sync::mpsc::channel();
    let entered_tx = std::sync::Mutex::new(entered_tx);
    let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
    let release_rx = std::sync::Mutex::new(release_rx);
    hub.method("Host.echo", move |call| {
        let _ = entered_tx.lock().unwrap().send(());
        // Held until the test has reused the slot.
        let _ = release_rx.lock().unwrap().recv_timeout(Duration::from_secs(20));
        call.reply(call.payload())
    })
    .unwrap();
    let (peer, mut child) = spawn_cell_on(&hub, "first", &[]);
    let caller = thread::spawn(move || peer.call("Test.call_host", b"x", &secs(20)));
    entered_rx.recv_timeout(Duration::from_secs(5)).unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    let _ = caller.join().unwrap();
    let h = hub.clone();
    let (next, mut next_child) =
        within(Duration::from_secs(10), "reusing the slot", move || spawn_cell_on(&h, "second", &[]));
    assert_eq!(next.call("Echo.echo", b"fresh", &secs(5)).unwrap().bytes(), b"fresh");
    release_tx.send(()).unwrap();
    let _ = next_child.kill();
    let _ = next_child.wait();
}

#[test]
fn a_handler_cannot_answer_a_link_local_status() {
    let r = start(HubConfig::default(), &[]);
    for status in [Status::PeerDead, Status::SessionClosed, Status::ProtocolError] {
        let mut request = status.code().to_le_bytes().to_vec();
        request.extend_from_slice(b"pretending");
        let e = r.peer.call("Test.fail", &request, &secs(5)).unwrap_err();
        assert_eq!(e.status(), Status::Internal, "{e}");
        assert!(e.message().contains(status.name()) && e.message().contains("pretending"), "{e}");
    }
    assert_eq!(r.peer.state(), PeerState::Ready, "the peer is alive whatever its handler said");
}
