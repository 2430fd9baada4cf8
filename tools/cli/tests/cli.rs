//! The shipped `cellshm` command line (`list`, `inspect`) against live hubs.
//!
//! The cells and the host this kills are this very test binary run again in a role
//! (`CELLSHM_CLI_TEST_ROLE`): the test kit's programs belong to another package, and the
//! CLI's own binary is only built for this package's tests.

use cellshm::{LinkEnd, Registry};
use serde_json::json;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use cellshm::{CallOptions, Cell, CellOptions, Hub, HubConfig, JoinArgs, PeerOptions};

const CLI: &str = env!("CARGO_BIN_EXE_cellshm");
const ROLE: &str = "CELLSHM_CLI_TEST_ROLE";

/// This test binary, started so that [`role`] becomes the program `role` names.
fn run_as(role: &str) -> Command {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args(["--exact", "role", "--nocapture", "--test-threads=1"]).env(ROLE, role).env("CELLSHM_QUIET", "1");
    cmd
}

/// Does nothing in a normal run. As `cell`: an echo cell joined through
/// `CELLSHM_DOORBELL_FD`, serving until the host says goodbye. As `host:NAME`: a hub
/// called NAME that prints `cli-test-host-ready` and waits to be killed.
#[test]
fn role() {
    match std::env::var(ROLE).as_deref() {
        Ok("cell") => {
            let args = JoinArgs::parse(std::iter::empty::<std::ffi::OsString>()).unwrap();
            let cell = Cell::join(args, CellOptions::from_env().unwrap()).unwrap();
            cell.method("Echo.echo", |call| call.reply(call.payload())).unwrap();
            // Publishes topic "readings" (64-byte samples, queues of 8), then as many
            // samples as the request's u32 says; the topic lives as long as the cell.
            let cell = std::sync::Arc::new(cell);
            let publisher = std::sync::OnceLock::new();
            let weak = std::sync::Arc::downgrade(&cell);
            cell.method("Readings.send", move |call| {
                let count = u32::from_le_bytes(call.payload()[..4].try_into().expect("a u32"));
                let cell = weak.upgrade().expect("the cell");
                let options = cellshm::TopicOptions { sample_size: 64, depth: 8, ..Default::default() };
                let publisher = match publisher.get() {
                    Some(publisher) => publisher,
                    None => publisher.get_or_init(|| cell.publish("readings", options).expect("publishes")),
                };
                for _ in 0..count {
                    publisher.publish(b"reading", Duration::from_secs(1))?;
                }
                Ok(())
            })
            .unwrap();
            cell.run().unwrap();
        }
        Ok(role) if role.starts_with("host:") => {
            let hub =
                Hub::create(HubConfig { name: Some(role["host:".len()..].into()), ..HubConfig::default() }).unwrap();
            hub.enable_inspect(&[own_uid()]);
            println!("\ncli-test-host-ready");
            loop {
                std::thread::park();
            }
        }
        _ => {}
    }
}

fn spawn_cell(hub: &Hub, name: &str) -> (cellshm::Peer, std::process::Child) {
    let ticket = hub.add_peer(name, PeerOptions::default()).unwrap();
    let (peer, child) = ticket.spawn(&mut run_as("cell")).unwrap();
    peer.wait_ready(Duration::from_secs(10)).unwrap();
    (peer, child)
}

#[test]
fn cellshm_list_shows_live_hubs_and_not_a_killed_one_and_inspect_reads_a_live_one() {
    let pid = std::process::id();
    let a = Hub::create(HubConfig { name: Some(format!("cli-a-{pid}")), ..HubConfig::default() }).unwrap();
    let b = Hub::create(HubConfig { name: Some(format!("cli-b-{pid}")), ..HubConfig::default() }).unwrap();
    a.enable_inspect(&[own_uid()]);
    let (_peer, mut child) = spawn_cell(&a, "listed");
    let killed = format!("cli-killed-{pid}");
    let mut host = run_as(&format!("host:{killed}")).stdout(Stdio::piped()).spawn().unwrap();
    let stdout = BufReader::new(host.stdout.take().unwrap());
    assert!(
        stdout.lines().any(|l| l.is_ok_and(|l| l.contains("cli-test-host-ready"))),
        "the host role never got ready"
    );
    host.kill().unwrap();
    host.wait().unwrap();

    let out = Command::new(CLI).args(["list", "--json"]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains(&format!("\"name\":\"cli-a-{pid}\"")) && text.contains(&format!("\"name\":\"cli-b-{pid}\"")));
    assert!(!text.contains(&killed), "{text}");
    let table = String::from_utf8_lossy(&Command::new(CLI).arg("list").output().unwrap().stdout).into_owned();
    assert!(table.contains(&format!("cli-a-{pid}")) && table.contains("1/8"), "{table}");

    let inspected = Command::new(CLI).args(["inspect", a.name()]).output().unwrap();
    let text = String::from_utf8_lossy(&inspected.stdout);
    assert!(inspected.status.success() && text.contains("listed") && text.contains("ready"), "{text}");
    let missing = Command::new(CLI).args(["inspect", &killed]).output().unwrap();
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("no live hub named"));
    drop(b);
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn cellshm_inspect_json_reports_each_link_and_its_counters() {
    let hub = Hub::create(HubConfig::default()).unwrap();
    hub.enable_inspect(&[own_uid()]);
    let (peer, mut child) = spawn_cell(&hub, "alpha");
    for _ in 0..20 {
        peer.call("Echo.echo", &[1u8; 100], &CallOptions::timeout(Duration::from_secs(5))).unwrap();
    }
    for _ in 0..3 {
        let e = peer.call("Nope.nope", b"", &CallOptions::timeout(Duration::from_secs(5))).unwrap_err();
        assert_eq!(e.status(), cellshm::Status::Unimplemented);
    }
    let out = Command::new(CLI).args(["inspect", hub.name(), "--json"]).output().unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(out.status.success(), "{text}");
    let snapshot: serde_json::Value = serde_json::from_str(&text).expect("one JSON object");
    let alpha = &snapshot["peers"][0];
    assert_eq!(
        (&alpha["name"], &alpha["state"], &alpha["slot_state"]),
        (&json!("alpha"), &json!("ready"), &json!("active"))
    );
    assert_eq!(alpha["host"]["calls_sent"], json!(23), "{text}");
    // The host's metrics, per method, match the calls made: 20 answered, 3 refused.
    let ours = peer.metrics();
    let echo = ours.outgoing.iter().find(|m| m.name == "Echo.echo").expect("Echo.echo measured");
    assert_eq!((echo.calls, echo.in_flight, echo.error_count(), echo.latency.count), (20, 0, 0, 20));
    assert!(echo.latency.p50_ns > 0 && echo.latency.p50_ns <= echo.latency.p99_ns, "{:?}", echo.latency);
    assert!(echo.latency.p99_ns <= echo.latency.max_ns, "{:?}", echo.latency);
    let l = &echo.latency;
    let method = |direction: &str, name: &str| {
        let all = alpha["metrics"][direction].as_array().cloned().unwrap_or_default();
        all.into_iter().find(|m| m["method"] == json!(name)).unwrap_or_else(|| panic!("{name} not in {text}"))
    };
    assert_eq!(
        method("host_to_cell", "Echo.echo"),
        json!({
            "method": "Echo.echo", "method_id": cellshm::method_id("Echo.echo"), "calls": 20, "errors": 0,
            "errors_by_status": [], "in_flight": 0,
            "latency_ns": {"count": 20, "p50": l.p50_ns, "p99": l.p99_ns, "max": l.max_ns},
        })
    );
    let nope = method("host_to_cell", "Nope.nope");
    assert_eq!((&nope["calls"], &nope["errors"]), (&json!(3), &json!(3)), "{text}");
    assert_eq!(nope["errors_by_status"], json!([{"status": "UNIMPLEMENTED", "code": 12, "count": 3}]), "{text}");
    // The cell's calls to the host (ready, from its join) are the other direction.
    assert_eq!(method("cell_to_host", "cellshm.Lifecycle.ready")["calls"], json!(1), "{text}");
    let table = String::from_utf8(Command::new(CLI).args(["inspect", hub.name()]).output().unwrap().stdout).unwrap();
    let row = table.lines().find(|l| l.contains("Nope.nope")).expect("a row per method");
    assert!(row.contains("host>cell") && row.contains("UNIMPLEMENTED=3"), "{table}");
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn cellshm_inspect_shows_each_topic_and_each_subscriptions_lag_and_drops() {
    use cellshm::{TopicOptions, TopicPolicy};
    let hub = Hub::create(HubConfig::default()).unwrap();
    hub.enable_inspect(&[own_uid()]);
    let (peer, mut child) = spawn_cell(&hub, "sensor");
    let timeout = CallOptions::timeout(Duration::from_secs(10));
    // A topic the host publishes, read by nobody yet: three samples queued.
    let frames = hub.publish("frames", TopicOptions { sample_size: 256, depth: 8, ..TopicOptions::default() }).unwrap();
    let _slow = hub.subscribe("frames", TopicPolicy::DropOldest).unwrap();
    for _ in 0..3 {
        frames.publish(b"frame", Duration::from_secs(1)).unwrap();
    }
    // A topic the cell publishes: its queue of 8 full, 2 refused.
    peer.call("Readings.send", &0u32.to_le_bytes(), &timeout).unwrap();
    let _readings = hub.subscribe("readings", TopicPolicy::DropNewest).unwrap();
    peer.call("Readings.send", &10u32.to_le_bytes(), &timeout).unwrap();
    let out = Command::new(CLI).args(["inspect", hub.name(), "--json"]).output().unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(out.status.success(), "{text}");
    let snapshot: serde_json::Value = serde_json::from_str(&text).expect("one JSON object");
    assert_eq!(
        snapshot["topics"],
        json!([
            {"name": "frames", "publisher": "host", "published": 3, "closed": false, "sample_size": 256, "depth": 8,
             "history": 0, "subscriptions": [{"index": 0, "holder": "host", "policy": "drop_oldest", "lag": 3,
             "dropped": 0, "received": 0, "missed": 0}]},
            {"name": "readings", "publisher": "sensor", "published": 10, "closed": false, "sample_size": 64,
             "depth": 8, "history": 0, "subscriptions": [{"index": 0, "holder": "host", "policy": "drop_newest",
             "lag": 8, "dropped": 2, "received": 0, "missed": 0}]},
        ]),
        "{text}"
    );
    let table = String::from_utf8(Command::new(CLI).args(["inspect", hub.name()]).output().unwrap().stdout).unwrap();
    let row = table.lines().find(|l| l.starts_with("readings")).expect("a row per topic");
    assert!(row.contains("sensor") && row.contains("drop_newest"), "{table}");
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn cellshm_without_a_known_command_prints_usage_and_exits_2() {
    for args in [&[][..], &["bench"][..], &["bench", "--help"][..], &["--bogus"][..]] {
        let out = Command::new(CLI).args(args).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("usage: cellshm [-h | --help] [--version] COMMAND") && err.contains("Exit codes"),
            "{args:?}: {err}"
        );
        assert!(out.stdout.is_empty(), "{args:?}: nothing on stdout for a usage error");
    }
}

#[test]
fn every_command_has_help_and_unknown_flags_or_arguments_exit_2_with_its_usage() {
    let run = |args: &[&str]| Command::new(CLI).args(args).output().unwrap();
    for (args, usage) in [
        (&["--help"][..], "usage: cellshm [-h"),
        (&["-h"][..], "usage: cellshm [-h"),
        (&["help"][..], "usage: cellshm [-h"),
        (&["list", "--help"][..], "usage: cellshm list [--json]"),
        (&["inspect", "-h"][..], "usage: cellshm inspect HUB [--json]"),
        (&["inspect", "some-hub", "--help"][..], "usage: cellshm inspect HUB [--json]"),
        (&["top", "--help"][..], "usage: cellshm top [--interval SECS] [--count N]"),
    ] {
        let out = run(args);
        assert_eq!(out.status.code(), Some(0), "{args:?}");
        assert!(String::from_utf8_lossy(&out.stdout).contains(usage), "{args:?}");
    }
    for (args, what, usage) in [
        (&["list", "--bogus"][..], "unknown flag --bogus", "usage: cellshm list"),
        (&["list", "extra"][..], "unexpected argument extra", "usage: cellshm list"),
        (&["inspect"][..], "inspect needs the name of a hub", "usage: cellshm inspect"),
        (&["inspect", "a", "b"][..], "unexpected argument b", "usage: cellshm inspect"),
        (&["inspect", "a", "--jsn"][..], "unknown flag --jsn", "usage: cellshm inspect"),
        (&["inspect", "a", "--interval", "1"][..], "--interval goes with --watch", "usage: cellshm inspect"),
        (&["inspect", "a", "--watch", "--interval", "soon"][..], "expected seconds", "usage: cellshm inspect"),
        (&["top", "--json"][..], "unknown flag --json", "usage: cellshm top"),
        (&["top", "--count"][..], "--count needs a value", "usage: cellshm top"),
        (&["top", "--count", "0"][..], "expected a positive number", "usage: cellshm top"),
        (&["top", "hub"][..], "unexpected argument hub", "usage: cellshm top"),
    ] {
        let out = run(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(what) && err.contains(usage), "{args:?}: {err}");
    }
    let version = run(&["--version"]);
    assert_eq!(version.status.code(), Some(0));
    let text = String::from_utf8_lossy(&version.stdout);
    assert!(text.starts_with(&format!("cellshm {} (protocol 2.1)", env!("CARGO_PKG_VERSION"))), "{text}");
    // A command that fails (not a usage error) exits 1.
    let missing = run(&["inspect", "no-such-hub-anywhere"]);
    assert_eq!(missing.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("no live hub named"));
}

/// Runs `command` under a pseudo-terminal (`script`), as a person at a terminal would, and
/// returns what it drew.
fn under_a_terminal(command: &str) -> String {
    let out = Command::new("script").args(["-qec", command, "/dev/null"]).output().expect("script(1) from util-linux");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn cellshm_top_draws_every_cell_of_every_hub_in_a_terminal_and_inspect_watch_redraws() {
    let pid = std::process::id();
    let hub = Hub::create(HubConfig { name: Some(format!("cli-top-{pid}")), ..HubConfig::default() }).unwrap();
    hub.enable_inspect(&[own_uid()]);
    let (peer, mut child) = spawn_cell(&hub, "topped");
    for _ in 0..10 {
        peer.call("Echo.echo", b"x", &CallOptions::timeout(Duration::from_secs(5))).unwrap();
    }
    let alerts = hub.publish("alerts", cellshm::TopicOptions::events()).unwrap();
    let _listener = hub.subscribe("alerts", cellshm::TopicPolicy::DropOldest).unwrap();
    for _ in 0..5 {
        alerts.publish(b"", Duration::from_secs(1)).unwrap();
    }
    let screen = under_a_terminal(&format!("{CLI} top --interval 0.2 --count 3"));
    assert_eq!(screen.matches("\x1b[H\x1b[2J").count(), 3, "three redraws: {screen}");
    assert!(
        screen.contains("cellshm top:") && screen.contains("calls/s h>c") && screen.contains("restarts"),
        "{screen}"
    );
    let row = screen
        .lines()
        .rev()
        .find(|l| l.contains(&format!("cli-top-{pid}")) && l.contains("topped"))
        .expect("a row for the cell");
    assert!(row.contains("ready"), "{row}");
    // Then a row per topic: its publisher, one subscriber lagging by one (the events
    // coalesced in its queue of one), four dropped.
    let topic = screen
        .lines()
        .rev()
        .find(|l| l.contains(&format!("cli-top-{pid}")) && l.contains("alerts"))
        .expect("a row for the topic");
    let fields: Vec<&str> = topic.split_whitespace().collect();
    assert_eq!(fields[1..3], ["alerts", "host"], "{topic}");
    assert_eq!(fields[4..], ["1", "1", "4"], "{topic}");

    // --watch redraws until interrupted (Ctrl-C here is timeout's SIGINT).
    let watched = under_a_terminal(&format!("timeout -s INT 1 {CLI} inspect {} --watch --interval 0.2", hub.name()));
    assert!(watched.matches("\x1b[H\x1b[2J").count() >= 2, "{watched}");
    assert!(watched.contains("topped") && watched.contains("Echo.echo"), "{watched}");
    let _ = child.kill();
    let _ = child.wait();
}

fn own_uid() -> u32 {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() }
}
