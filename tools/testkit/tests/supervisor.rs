//! The supervisor with real cell processes: relaunch, reasons, backoff, give-up,
//! goodbye, graceful stop, and many relaunches through reused peer slots.

use cellshm::LinkEnd;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cellshm::{
    CallOptions, CellSpec, CellStatus, ExitReason, Hub, HubConfig, RestartPolicy, Status, Supervisor, SupervisorEvent,
};

mod common;
use common::{RunDelay, CELL};

fn test_cell(name: &str) -> CellSpec {
    CellSpec::new(name, CELL).args(["cell"]).env("CELLSHM_QUIET", "1").restart(RestartPolicy {
        max_restarts: 100,
        initial_backoff: Duration::from_millis(5),
        max_backoff: Duration::from_millis(50),
        reset_after: Duration::from_secs(60),
    })
}

fn supervisor(max_peers: u32) -> (Supervisor, Arc<Mutex<Vec<SupervisorEvent>>>) {
    let sup = Supervisor::new(Hub::create(HubConfig { max_peers, ..HubConfig::default() }).unwrap()).unwrap();
    let events = Arc::new(Mutex::new(Vec::new()));
    let sink = events.clone();
    sup.on_event(move |e| sink.lock().unwrap().push(e.clone())).detach();
    (sup, events)
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

fn ready(sup: &Supervisor, name: &str) {
    sup.wait_for(name, secs(10), |s| *s == CellStatus::Ready).unwrap();
}

#[test]
fn a_crashed_cell_is_relaunched_under_the_same_name() {
    let (sup, events) = supervisor(4);
    sup.add(test_cell("echo")).unwrap();
    ready(&sup, "echo");
    let first = sup.peer("echo").unwrap().pid().unwrap();
    assert_eq!(sup.call("echo", "Echo.echo", b"one", &CallOptions::timeout(secs(5))).unwrap().bytes(), b"one");

    // SIGKILL: Crashed(Signal(9)), relaunched, reachable under the same name.
    // SAFETY: kill takes no pointers.
    unsafe { libc::kill(first as i32, libc::SIGKILL) };
    sup.wait_for("echo", secs(5), |s| *s == CellStatus::Crashed(ExitReason::Signal(9))).unwrap();
    ready(&sup, "echo");
    let second = sup.peer("echo").unwrap().pid().unwrap();
    assert_ne!(first, second);
    assert_eq!(sup.call("echo", "Echo.echo", b"two", &CallOptions::timeout(secs(5))).unwrap().bytes(), b"two");

    // An exit code is a crash too.
    let _ = sup.call("echo", "Test.exit", &3u32.to_le_bytes(), &CallOptions::timeout(secs(5)));
    sup.wait_for("echo", secs(5), |s| *s == CellStatus::Crashed(ExitReason::Code(3))).unwrap();
    ready(&sup, "echo");

    // `wait_for` returns once the listeners have seen the status.
    let statuses: Vec<CellStatus> = events.lock().unwrap().iter().map(|e| e.status.clone()).collect();
    assert_eq!(
        statuses,
        vec![
            CellStatus::Starting,
            CellStatus::Ready,
            CellStatus::Crashed(ExitReason::Signal(9)),
            CellStatus::Starting,
            CellStatus::Ready,
            CellStatus::Crashed(ExitReason::Code(3)),
            CellStatus::Starting,
            CellStatus::Ready
        ]
    );
}

#[test]
fn calls_while_restarting_are_unavailable_not_hanging() {
    let (sup, _) = supervisor(4);
    let err = sup.call("nobody", "Echo.echo", b"", &CallOptions::default()).unwrap_err();
    assert_eq!(err.status(), Status::NotFound);
    sup.add(test_cell("slow").env("CELLSHM_READY_TIMEOUT_MS", "5000")).unwrap();
    // Right after adding, it is starting.
    let err = sup.call("slow", "Echo.echo", b"", &CallOptions::default());
    if let Err(e) = err {
        assert_eq!(e.status(), Status::Unavailable);
    }
    assert_eq!(sup.add(test_cell("slow")).unwrap_err().status(), Status::AlreadyExists);
}

#[test]
fn a_cell_that_keeps_crashing_is_given_up_after_max_restarts_with_backoff() {
    let (sup, events) = supervisor(4);
    let spec = CellSpec::new("doomed", "false").restart(RestartPolicy {
        max_restarts: 3,
        initial_backoff: Duration::from_millis(20),
        max_backoff: Duration::from_millis(40),
        reset_after: Duration::from_secs(60),
    });
    sup.add(spec).unwrap();
    let status = sup.wait_for("doomed", secs(10), |s| matches!(s, CellStatus::Failed(_))).unwrap();
    assert_eq!(status, CellStatus::Failed(ExitReason::Code(1)));
    let events = events.lock().unwrap();
    let crashes = events.iter().filter(|e| matches!(e.status, CellStatus::Crashed(_))).count();
    assert_eq!(crashes, 3, "three relaunches, then given up");
    assert_eq!(events.last().unwrap().restarts, 3);
}

#[test]
fn a_cell_that_says_goodbye_is_not_relaunched() {
    let (sup, _) = supervisor(4);
    sup.add(test_cell("polite")).unwrap();
    ready(&sup, "polite");
    sup.call("polite", "Test.goodbye", b"", &CallOptions::timeout(secs(5))).unwrap();
    sup.wait_for("polite", secs(5), |s| *s == CellStatus::Exited(ExitReason::Goodbye)).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(sup.status("polite"), Some(CellStatus::Exited(ExitReason::Goodbye)));
}

#[test]
fn stop_is_graceful_and_final() {
    let (sup, _) = supervisor(4);
    sup.add(test_cell("a")).unwrap();
    sup.add(test_cell("b")).unwrap();
    ready(&sup, "a");
    ready(&sup, "b");
    assert_eq!(sup.stop("a", secs(2)).unwrap(), 0, "a cell told goodbye exits 0");
    assert_eq!(sup.status("a"), Some(CellStatus::Exited(ExitReason::Stopped(0))));
    assert_eq!(sup.call("b", "Echo.echo", b"b", &CallOptions::timeout(secs(5))).unwrap().bytes(), b"b");
    sup.stop_all(secs(2));
    assert_eq!(sup.status("b"), Some(CellStatus::Exited(ExitReason::Stopped(0))));
}

#[test]
fn a_hundred_relaunches_on_a_four_peer_hub() {
    let (sup, _) = supervisor(4);
    for name in ["x", "y"] {
        sup.add(test_cell(name)).unwrap();
        ready(&sup, name);
    }
    for round in 0..100 {
        let name = if round % 2 == 0 { "x" } else { "y" };
        let pid = sup.peer(name).unwrap().pid().unwrap();
        // SAFETY: kill takes no pointers.
        unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        sup.wait_for(name, secs(5), |s| matches!(s, CellStatus::Crashed(_))).unwrap();
        ready(&sup, name);
        let payload = (round as u32).to_le_bytes();
        assert_eq!(sup.call(name, "Echo.echo", &payload, &CallOptions::timeout(secs(5))).unwrap().bytes(), &payload);
    }
    common::inspectable(sup.hub());
    let snap = cellshm::snapshot(sup.hub().name()).unwrap();
    let live = snap.peers.iter().filter(|p| p.state == cellshm::PeerSlotState::Active).count();
    assert_eq!(live, 2, "{:?}", snap.peers);
}

#[test]
fn a_cell_that_never_becomes_ready_is_killed_and_counted_as_a_crash() {
    let (sup, _) = supervisor(4);
    let mut spec = CellSpec::new("mute", "sh").args(["-c", "exec sleep 30", "sh"]).restart(RestartPolicy {
        max_restarts: 1,
        initial_backoff: Duration::from_millis(10),
        max_backoff: Duration::from_millis(10),
        reset_after: Duration::from_secs(60),
    });
    spec.ready_timeout = Duration::from_millis(200);
    sup.add(spec).unwrap();
    sup.wait_for("mute", secs(5), |s| *s == CellStatus::Crashed(ExitReason::ReadyTimeout)).unwrap();
    let status = sup.wait_for("mute", secs(5), |s| matches!(s, CellStatus::Failed(_))).unwrap();
    assert_eq!(status, CellStatus::Failed(ExitReason::ReadyTimeout));
}

#[test]
fn stop_escalates_to_sigterm_when_goodbye_is_ignored() {
    let (sup, _) = supervisor(4);
    let mut spec = CellSpec::new("deaf", "sh").args(["-c", "exec sleep 30", "sh"]);
    spec.ready_timeout = secs(30);
    sup.add(spec).unwrap();
    sup.wait_for("deaf", secs(5), |s| *s == CellStatus::Starting).unwrap();
    while sup.peer("deaf").and_then(|p| p.pid()).is_none() {
        std::thread::sleep(Duration::from_millis(5));
    }
    let started = std::time::Instant::now();
    let code = sup.stop("deaf", Duration::from_millis(200)).unwrap();
    assert_eq!(code, 128 + libc::SIGTERM, "GOODBYE went unanswered, SIGTERM ended it");
    assert!(started.elapsed() < secs(2));
}

#[test]
fn stopping_a_cell_while_its_listener_calls_the_supervisor_does_not_deadlock() {
    let sup = Arc::new(Supervisor::new(Hub::create(HubConfig::default()).unwrap()).unwrap());
    let weak = Arc::downgrade(&sup);
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = seen.clone();
    let _listener = sup.on_event(move |e| {
        // Back into the supervisor from inside its own event.
        if let Some(sup) = weak.upgrade() {
            let status = sup.status(&e.name);
            let _ = sup.peer(&e.name).map(|p| p.ping(Duration::from_millis(200)));
            sink.lock().unwrap().push((e.status.clone(), status));
        }
    });
    sup.add(test_cell("busy")).unwrap();
    sup.wait_for("busy", secs(10), |s| *s == CellStatus::Ready).unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let stopper = sup.clone();
    std::thread::spawn(move || tx.send(stopper.stop("busy", secs(2))).unwrap());
    let code = rx.recv_timeout(secs(10)).expect("stop deadlocked with a listener calling the supervisor");
    assert_eq!(code.unwrap(), 0);
    let seen = seen.lock().unwrap();
    let stops = seen.iter().filter(|(s, _)| matches!(s, CellStatus::Stopping)).count();
    let exits = seen.iter().filter(|(s, _)| matches!(s, CellStatus::Exited(_))).count();
    assert_eq!((stops, exits), (1, 1), "each event once: {seen:?}");
}

fn statuses(events: &Mutex<Vec<SupervisorEvent>>) -> Vec<CellStatus> {
    events.lock().unwrap().iter().map(|e| e.status.clone()).collect()
}

fn echo(sup: &Supervisor, name: &str, payload: &[u8]) -> Vec<u8> {
    sup.call(name, "Echo.echo", payload, &CallOptions::timeout(secs(5))).unwrap().bytes().to_vec()
}

#[test]
fn restart_update_stop_start_and_remove_report_each_event_once_in_order_despite_a_panicking_listener() {
    let (sup, events) = supervisor(4);
    // Panics on every event: it is logged, stays registered, and holds up nothing.
    let panics = Arc::new(Mutex::new(0));
    let count = panics.clone();
    let _panicking = sup.on_event(move |_| {
        *count.lock().unwrap() += 1;
        panic!("deliberate panic in a supervisor listener");
    });
    sup.add(test_cell("w").env("FLAVOUR", "plain")).unwrap();
    ready(&sup, "w");
    let first = sup.peer("w").unwrap().pid().unwrap();

    sup.restart("w", secs(2)).unwrap();
    ready(&sup, "w");
    let second = sup.peer("w").unwrap().pid().unwrap();
    assert_ne!(first, second, "restart runs a new process");
    assert_eq!(echo(&sup, "w", b"after restart"), b"after restart");

    sup.update(test_cell("w").env("FLAVOUR", "spicy"), secs(2)).unwrap();
    ready(&sup, "w");
    assert_eq!(sup.call("w", "Test.env", b"FLAVOUR", &CallOptions::timeout(secs(5))).unwrap().bytes(), b"spicy");
    assert_eq!(
        sup.spec("w").unwrap().env,
        vec![("CELLSHM_QUIET".into(), "1".into()), ("FLAVOUR".into(), "spicy".into())]
    );

    assert_eq!(sup.stop("w", secs(2)).unwrap(), 0);
    assert_eq!(sup.stop("w", secs(2)).unwrap(), 0, "stopping a stopped cell changes nothing");
    sup.start("w").unwrap();
    ready(&sup, "w");
    sup.start("w").unwrap(); // running: left alone
    assert_eq!(echo(&sup, "w", b"started again"), b"started again");

    // A crash after all that is still relaunched.
    let pid = sup.peer("w").unwrap().pid().unwrap();
    // SAFETY: kill takes no pointers.
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    sup.wait_for("w", secs(5), |s| matches!(s, CellStatus::Crashed(_))).unwrap();
    ready(&sup, "w");

    sup.remove("w", secs(2)).unwrap();
    assert_eq!(sup.status("w"), None);
    assert_eq!(sup.restart("w", secs(1)).unwrap_err().status(), Status::NotFound);
    assert!(sup.names().is_empty());

    use CellStatus::*;
    let stopped = || Exited(ExitReason::Stopped(0));
    let expected = vec![
        Starting,
        Ready, // add
        Stopping,
        stopped(),
        Starting,
        Ready, // restart
        Stopping,
        stopped(),
        Starting,
        Ready, // update
        Stopping,
        stopped(), // stop (the second stop: nothing)
        Starting,
        Ready, // start
        Crashed(ExitReason::Signal(9)),
        Starting,
        Ready, // SIGKILL
        Stopping,
        stopped(),
        Removed, // remove
    ];
    assert_eq!(statuses(&events), expected);
    assert_eq!(*panics.lock().unwrap(), expected.len(), "the panicking listener saw every event too");

    // The name is free again.
    sup.add(test_cell("w")).unwrap();
    ready(&sup, "w");
    assert_eq!(echo(&sup, "w", b"new"), b"new");
}

#[test]
fn a_dropped_subscription_is_not_called_again_and_a_listener_may_drop_its_own() {
    let sup = Supervisor::new(Hub::create(HubConfig::default()).unwrap()).unwrap();
    let kept = Arc::new(Mutex::new(Vec::new()));
    let sink = kept.clone();
    let _kept = sup.on_event(move |e| sink.lock().unwrap().push(e.status.clone()));
    let dropped = Arc::new(Mutex::new(0));
    let count = dropped.clone();
    let subscription = sup.on_event(move |_| *count.lock().unwrap() += 1);
    // A listener that unsubscribes itself on its first event (it must not wait for itself).
    let once = Arc::new(Mutex::new(None::<cellshm::EventSubscription>));
    let slot = once.clone();
    let calls = Arc::new(Mutex::new(0));
    let count = calls.clone();
    *once.lock().unwrap() = Some(sup.on_event(move |_| {
        *count.lock().unwrap() += 1;
        drop(slot.lock().unwrap().take());
    }));
    sup.add(test_cell("s")).unwrap();
    ready(&sup, "s");
    drop(subscription);
    let seen_before = *dropped.lock().unwrap();
    assert_eq!(seen_before, 2, "starting and ready");
    sup.restart("s", secs(2)).unwrap();
    ready(&sup, "s");
    assert_eq!(*dropped.lock().unwrap(), seen_before, "no event after the drop");
    assert_eq!(*calls.lock().unwrap(), 1, "the self-dropping listener ran once");
    assert_eq!(kept.lock().unwrap().len(), 6);
}

#[test]
fn a_panicking_death_callback_neither_strands_callers_nor_skips_the_next_callback() {
    let hub = Hub::create(HubConfig::default()).unwrap();
    let ticket = hub.add_peer("victim", cellshm::PeerOptions::default()).unwrap();
    let mut command = std::process::Command::new(CELL);
    command.arg("cell").env("CELLSHM_QUIET", "1");
    let (peer, child) = ticket.spawn(&mut command).unwrap();
    let process = cellshm::CellProcess::new(child);
    peer.wait_ready(secs(10)).unwrap();
    peer.on_death(|_| panic!("deliberate panic in a death callback"));
    let (tx, rx) = std::sync::mpsc::channel();
    peer.on_death(move |e| tx.send(e.status()).unwrap());
    // A call in flight when the cell dies: its completion must still come.
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    let pending = peer
        .call_start(
            "Test.sleep",
            &10_000u32.to_le_bytes(),
            &CallOptions::default(),
            Box::new(move || done_tx.send(()).unwrap()),
        )
        .unwrap();
    process.kill().unwrap();
    assert_eq!(rx.recv_timeout(secs(5)).unwrap(), Status::PeerDead, "the callback after the panicking one ran");
    done_rx.recv_timeout(secs(5)).expect("the pending call was stranded");
    assert_eq!(pending.try_take().unwrap().unwrap_err().status(), Status::PeerDead);
    // One registered after the death runs at once, also when it panics.
    peer.on_death(|_| panic!("deliberate panic, registered late"));
}

#[test]
fn a_cell_whose_handler_threads_all_hang_is_relaunched_as_unresponsive_within_its_heartbeat_budget() {
    let (sup, events) = supervisor(4);
    let (interval, allowed_misses) = (Duration::from_millis(100), 2);
    let spec = test_cell("stuck")
        .env("CELLSHM_WORKERS", "2")
        .heartbeat(interval, allowed_misses)
        .default_timeout(Duration::from_millis(300));
    sup.add(spec).unwrap();
    ready(&sup, "stuck");
    let peer = sup.peer("stuck").unwrap();
    let pid = peer.pid().unwrap();

    // Busy is not unresponsive: one handler thread sleeps, the other answers heartbeats.
    peer.call("Test.sleep", &800u32.to_le_bytes(), &CallOptions::timeout(secs(5))).unwrap();
    assert_eq!(sup.status("stuck"), Some(CellStatus::Ready));
    assert_eq!(sup.peer("stuck").unwrap().pid(), Some(pid), "a busy cell is left alone");

    // Every handler thread blocks for good; the process stays alive.
    for _ in 0..4 {
        peer.notify("Test.hang", b"", &CallOptions::default()).unwrap();
    }
    let hung = std::time::Instant::now();
    // A call with no time limit of its own ends at the default timeout.
    let err = peer.call("Echo.echo", b"anyone?", &CallOptions::default()).unwrap_err();
    assert_eq!(err.status(), Status::DeadlineExceeded, "{err}");
    sup.wait_for("stuck", secs(10), |s| *s == CellStatus::Crashed(ExitReason::Unresponsive)).unwrap();
    let noticed = hung.elapsed();
    let budget = interval * (allowed_misses + 2); // the misses allowed, one more, and the one in flight
    assert!(noticed < budget + Duration::from_millis(500), "noticed after {noticed:?} (budget {budget:?})");
    ready(&sup, "stuck");
    assert_ne!(sup.peer("stuck").unwrap().pid(), Some(pid));
    assert_eq!(echo(&sup, "stuck", b"back"), b"back");
    let crashes: Vec<_> =
        events.lock().unwrap().iter().filter(|e| matches!(e.status, CellStatus::Crashed(_))).cloned().collect();
    assert_eq!(crashes.len(), 1);
    assert_eq!(crashes[0].pid, Some(pid));
    assert_eq!(crashes[0].status.reason().unwrap().to_string(), "unresponsive");
}

#[test]
fn a_call_asks_for_no_time_limit_explicitly() {
    let sup = Supervisor::new(Hub::create(HubConfig::default()).unwrap()).unwrap();
    sup.set_default_timeout(Duration::from_millis(200));
    sup.add(test_cell("slow")).unwrap();
    ready(&sup, "slow");
    let sleep = 500u32.to_le_bytes();
    let err = sup.call("slow", "Test.sleep", &sleep, &CallOptions::default()).unwrap_err();
    assert_eq!(err.status(), Status::DeadlineExceeded, "the supervisor's default applies");
    sup.call("slow", "Test.sleep", &sleep, &CallOptions::forever()).unwrap();
    sup.call("slow", "Test.sleep", &sleep, &CallOptions::timeout(secs(5))).unwrap();
}

#[test]
fn a_cell_that_never_answers_a_heartbeat_is_killed_interval_times_misses_plus_one_after_ready() {
    // The first heartbeat goes out as the cell becomes ready: with (200 ms, 2 misses) a
    // cell that never answers is killed 600 ms after it was ready (it was 800 ms when the
    // first heartbeat waited an interval).
    let (interval, misses) = (Duration::from_millis(200), 2);
    let sup = Supervisor::new(Hub::create(HubConfig::default()).unwrap()).unwrap();
    let seen: Arc<Mutex<Vec<(Instant, CellStatus)>>> = Arc::default();
    let sink = seen.clone();
    sup.on_event(move |e| sink.lock().unwrap().push((Instant::now(), e.status.clone()))).detach();
    let delay = RunDelay::this_thread_and_links();
    let spec = CellSpec::new("mute", CELL)
        .args(["mute"])
        .heartbeat(interval, misses)
        .restart(RestartPolicy { max_restarts: 0, ..RestartPolicy::default() });
    sup.add(spec).unwrap();
    sup.wait_for("mute", secs(10), |s| matches!(s, CellStatus::Crashed(_) | CellStatus::Failed(_))).unwrap();
    let scheduler = delay.so_far();
    let events = seen.lock().unwrap().clone();
    let at = |wanted: &dyn Fn(&CellStatus) -> bool| events.iter().find(|(_, s)| wanted(s)).map(|(t, _)| *t);
    let ready = at(&|s| *s == CellStatus::Ready).expect("the mute cell was never ready");
    // No restarts allowed: it fails for good, for that reason.
    let killed = at(&|s| *s == CellStatus::Failed(ExitReason::Unresponsive))
        .unwrap_or_else(|| panic!("not killed as unresponsive: {events:?}"));
    let took = killed - ready;
    let budget = interval * (misses + 1);
    assert!(took >= budget - interval / 2, "killed {took:?} after ready: before its {misses} misses were up");
    assert!(
        took < budget + Duration::from_millis(100) + scheduler,
        "killed {took:?} after ready, budget {budget:?} ({scheduler:?} waiting for a CPU)"
    );
}
