//! Telemetry that never blocks, with real processes: a cell flooding logs into a host
//! that reads nothing, records with fields and locations, and a supervisor's log filter
//! that survives relaunches.

use cellshm::LinkEnd;
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use cellshm::wire::log_level::{ERROR, INFO};
use cellshm::{CallOptions, CellSpec, CellStatus, ExitReason, Hub, HubConfig, RestartPolicy, Supervisor};

mod common;
use common::{poll_until, secs, spawn_cell_on, CELL};

/// A log sink that holds every thread delivering to it until released.
struct Gate {
    open: Mutex<bool>,
    opened: Condvar,
}

impl Gate {
    fn wait(&self) {
        let mut open = self.open.lock().unwrap();
        while !*open {
            open = self.opened.wait(open).unwrap();
        }
    }

    fn release(&self) {
        *self.open.lock().unwrap() = true;
        self.opened.notify_all();
    }
}

fn u64_at(bytes: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap())
}

#[test]
fn a_cell_flooding_logs_into_a_host_that_reads_nothing_never_blocks_and_counts_exactly_what_it_dropped() {
    let hub = Hub::create(HubConfig::default()).unwrap();
    let gate = Arc::new(Gate { open: Mutex::new(false), opened: Condvar::new() });
    let (tx, rx) = mpsc::channel();
    let (held, tx) = (gate.clone(), Mutex::new(tx));
    hub.set_log_sink(Some(Arc::new(move |r: &cellshm::LogRecord<'_>| {
        // Every host thread that takes a record from the ring stops here: nothing reads.
        held.wait();
        let _ = tx.lock().unwrap().send(r.message.to_string());
    })));
    let (peer, mut child) = spawn_cell_on(&hub, "flood", &[]);
    let n = 5_000u32;
    let (done_tx, done_rx) = mpsc::channel();
    let flood = peer
        .call_start(
            "Test.flood_logs",
            &n.to_le_bytes(),
            &CallOptions::timeout(secs(60).timeout.unwrap()),
            Box::new(move || {
                let _ = done_tx.send(());
            }),
        )
        .unwrap();
    // Its reply waits behind the records in the ring: tell the end of the flood from
    // the cell's own counter (another process's memory: nothing to wait on but it).
    poll_until(
        Duration::from_secs(30),
        || "the flood did not end".into(),
        || peer.cell_counters().is_some_and(|c| c.requests_served >= 1),
    );
    gate.release();
    done_rx.recv_timeout(Duration::from_secs(30)).expect("the flood's answer");
    let reply = flood.try_take().unwrap().unwrap();
    let field = |i: usize| u64_at(reply.bytes(), 8 * i);
    let (longest_cpu_ns, dropped, sent, slept_long, longest_wall_ns) =
        (field(0), field(1), field(2), field(3), field(4));
    assert_eq!(sent, n as u64);
    assert!(dropped > 0, "a ring of 256 entries cannot hold {n} records");
    // Blocking is waiting: sleeping (a voluntary context switch) or spinning (CPU time).
    // Wall-clock time alone also counts preemption, which a loaded 2-core machine adds at
    // will: a send blocked if it slept and took more than 1 ms.
    assert_eq!(slept_long, 0, "{slept_long} log calls slept for more than 1 ms");
    assert!(longest_cpu_ns < 1_000_000, "a log call spun for {longest_cpu_ns} ns");
    // Every record not dropped arrives, in order, and nothing else: a marker sent after
    // the flood is the next record once they are in.
    let delivered = n as u64 - dropped;
    let mut got = Vec::new();
    for _ in 0..delivered {
        got.push(rx.recv_timeout(Duration::from_secs(10)).expect("a record the cell counted as sent"));
    }
    peer.call("Test.log", b"marker", &secs(5)).unwrap();
    assert_eq!(rx.recv_timeout(Duration::from_secs(10)).unwrap(), "marker", "the drop count is exact");
    assert_eq!(got[0], "record 0");
    let numbers: Vec<u32> = got.iter().map(|m| m.strip_prefix("record ").unwrap().parse().unwrap()).collect();
    assert!(numbers.windows(2).all(|w| w[0] < w[1]), "in order");
    println!(
        "{n} records: {delivered} delivered, {dropped} dropped, longest send {longest_cpu_ns} ns of CPU, {longest_wall_ns} ns of wall-clock time"
    );
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn a_supervised_cells_log_filter_survives_relaunches_and_records_carry_fields_locations_and_times() {
    let sup = Supervisor::new(Hub::create(HubConfig::default()).unwrap()).unwrap();
    let (tx, rx) = mpsc::channel();
    let tx = Mutex::new(tx);
    sup.hub().set_log_sink(Some(Arc::new(move |r: &cellshm::LogRecord<'_>| {
        let _ = tx.lock().unwrap().send((
            r.level,
            r.target.to_string(),
            r.message.to_string(),
            r.fields.to_vec(),
            r.file.to_string(),
            r.line,
            r.time_unix_ns,
        ));
    })));
    let spec = CellSpec::new("quiet", CELL)
        .args(["cell"])
        .env("CELLSHM_QUIET", "1")
        .log_filter("error")
        .restart(RestartPolicy { initial_backoff: Duration::from_millis(5), ..RestartPolicy::default() });
    assert!(Supervisor::new(Hub::create(HubConfig::default()).unwrap())
        .unwrap()
        .add(spec.clone().log_filter("loud"))
        .is_err_and(|e| e.status() == cellshm::Status::InvalidArgument));
    sup.add(spec).unwrap();
    let ready = || sup.wait_for("quiet", secs(10).timeout.unwrap(), |s| *s == CellStatus::Ready).unwrap();
    ready();
    let only_errors = |rx: &mpsc::Receiver<_>| {
        sup.call("quiet", "Test.trace", b"", &secs(5)).unwrap();
        // Test.trace emits info, warn, debug, trace and one error: only the error passes.
        let (level, target, message, fields, file, line, time) = rx.recv_timeout(Duration::from_secs(5)).unwrap();
        sup.call("quiet", "Test.log", b"info line", &secs(5)).unwrap();
        assert!(rx.recv_timeout(Duration::from_millis(200)).is_err(), "an info record passed the filter");
        (level, target, message, fields, file, line, time)
    };
    let (level, target, message, fields, file, line, time) = only_errors(&rx);
    assert_eq!((level, target.as_str(), message.as_str()), (ERROR, "mycell", "error with a field"));
    assert_eq!(fields, vec![("answer".to_string(), "42".to_string())]);
    assert!(file.ends_with("lib.rs") && line > 0, "{file}:{line}");
    let now = cellshm::wire::unix_now_ns();
    assert!(time <= now && now - time < 60_000_000_000, "made {} ns ago", now.saturating_sub(time));

    let pid = sup.peer("quiet").unwrap().pid().unwrap();
    // SAFETY: kill takes no pointers.
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    sup.wait_for("quiet", secs(5).timeout.unwrap(), |s| *s == CellStatus::Crashed(ExitReason::Signal(9))).unwrap();
    ready();
    assert_eq!(only_errors(&rx).0, ERROR, "the relaunched instance has the filter too");

    // Changed at run time: the running instance and the next ones.
    sup.set_log_filter("quiet", "info").unwrap();
    sup.call("quiet", "Test.log", b"info line", &secs(5)).unwrap();
    assert_eq!(rx.recv_timeout(Duration::from_secs(5)).unwrap().0, INFO);
    assert_eq!(sup.spec("quiet").unwrap().log_filter.as_deref(), Some("info"));
    assert!(sup.set_log_filter("quiet", "=x").is_err());
}
