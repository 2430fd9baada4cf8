//! `cellshm` command line: list and inspect live hubs.
//!
//! ```text
//! cellshm list [--json]          the live hubs of this user: name, host pid, peers, uptime
//! cellshm inspect HUB [--json] [--watch [--interval SECS]]
//!                                every link of a live hub and what the host measured of it
//! cellshm top [--interval SECS] [--count N]
//!                                a live view of every hub: calls/s, p99, in flight, streams
//! cellshm --version | -h         and COMMAND --help; exit codes 0 done, 1 failed, 2 usage
//! ```
//! The benchmark is `cellshm-bench` (tools/bench) and the test programs are
//! `cellshm-testkit` (tools/testkit); neither ships in this binary.

use std::process::ExitCode;
use std::time::Duration;

use cellshm::host::inspect::json_string;
use cellshm::{Error, Status};

const TOOL_USAGE: &str = "usage: cellshm [-h | --help] [--version] COMMAND [ARGS]

Commands:
  list [--json]          the live hubs of this user: name, host pid, peers, uptime, attach
  inspect HUB [--json]   every link of a live hub and the host's metrics of it (--watch)
  top                    a live view of every hub: calls/s, p99, in flight, streams, restarts

`cellshm COMMAND --help` describes a command.
Exit codes: 0 done; 1 the command failed (no such hub, a system error); 2 bad usage.";

const LIST_USAGE: &str = "usage: cellshm list [--json]

The live hubs of this user on this machine, found through their abstract sockets (a hub
whose process ended is never listed): name, host pid, peers in use / slots, uptime, and
whether attaching is on. --json prints one array of objects.";

const INSPECT_USAGE: &str = "usage: cellshm inspect HUB [--json] [--watch [--interval SECS]]

Every peer of the live hub HUB (its name, or UID/NAME), read through read-only
descriptors of each link's memfds: state, epoch, pid, name, ring depths, slots in use
per class, and call, error and byte counters; then what the host measured per method,
both ways (host > cell: calls the host made; cell > host: calls it served): calls,
errors by status, calls in flight, latency p50/p99/max, and per peer its open streams,
refused calls and restarts. --json prints one object. --watch redraws it every
--interval seconds (default 1) until Ctrl-C.";

const TOP_USAGE: &str = "usage: cellshm top [--interval SECS] [--count N]

A live view of every hub of this user on this machine, one row per cell: its state,
calls per second both ways, the worst p99 latency of its methods, calls in flight, open
streams and restarts. Redraws every --interval seconds (default 1) until Ctrl-C, or N
times with --count.";

/// What the command line asks for.
#[derive(Debug, PartialEq, Eq)]
enum Command {
    Help(&'static str),
    Version,
    List { json: bool },
    Inspect { hub: String, json: bool, watch: Option<Duration> },
    Top { interval: Duration, count: Option<u64> },
}

/// A usage error: what was wrong, and the usage of the command it was for.
fn bad_usage(what: String, usage: &str) -> Error {
    Error::new(Status::InvalidArgument, format!("{what}\n{usage}"))
}

/// A command's flags and positional arguments.
#[derive(Default)]
struct Args {
    json: bool,
    help: bool,
    watch: bool,
    interval: Option<Duration>,
    count: Option<u64>,
    positional: Vec<String>,
}

/// The flags and positional arguments after a command: `allowed` lists the flags the
/// command takes besides `-h/--help`; anything else starting with `-` is an error.
fn command_args(args: &[String], allowed: &[&str], usage: &'static str) -> Result<Args, Error> {
    let mut out = Args::default();
    let mut args = args.iter();
    while let Some(a) = args.next() {
        let mut value =
            |flag: &str| args.next().cloned().ok_or_else(|| bad_usage(format!("{flag} needs a value"), usage));
        match a.as_str() {
            "-h" | "--help" => out.help = true,
            flag if allowed.contains(&flag) => match flag {
                "--json" => out.json = true,
                "--watch" => out.watch = true,
                "--interval" => {
                    let text = value(flag)?;
                    let seconds: f64 =
                        text.parse().ok().filter(|s: &f64| s.is_finite() && *s >= 0.05 && *s <= 3600.0).ok_or_else(
                            || bad_usage(format!("--interval {text}: expected seconds, 0.05 to 3600"), usage),
                        )?;
                    out.interval = Some(Duration::from_secs_f64(seconds));
                }
                "--count" => {
                    let text = value(flag)?;
                    let n = text.parse().ok().filter(|n| *n > 0);
                    out.count =
                        Some(n.ok_or_else(|| bad_usage(format!("--count {text}: expected a positive number"), usage))?);
                }
                _ => unreachable!("every allowed flag is handled"),
            },
            flag if flag.starts_with('-') && flag != "-" => {
                return Err(bad_usage(format!("unknown flag {flag}"), usage))
            }
            arg => out.positional.push(arg.to_string()),
        }
    }
    Ok(out)
}

fn parse(args: &[String]) -> Result<Command, Error> {
    let Some(first) = args.first() else {
        return Err(bad_usage("no command given".into(), TOOL_USAGE));
    };
    let rest = &args[1..];
    match first.as_str() {
        "-h" | "--help" | "help" => Ok(Command::Help(TOOL_USAGE)),
        "-V" | "--version" => Ok(Command::Version),
        "list" => match command_args(rest, &["--json"], LIST_USAGE)? {
            Args { help: true, .. } => Ok(Command::Help(LIST_USAGE)),
            Args { json, positional, .. } if positional.is_empty() => Ok(Command::List { json }),
            Args { positional, .. } => Err(bad_usage(format!("unexpected argument {}", positional[0]), LIST_USAGE)),
        },
        "inspect" => match command_args(rest, &["--json", "--watch", "--interval"], INSPECT_USAGE)? {
            Args { help: true, .. } => Ok(Command::Help(INSPECT_USAGE)),
            Args { interval: Some(_), watch: false, .. } => {
                Err(bad_usage("--interval goes with --watch".into(), INSPECT_USAGE))
            }
            Args { json, watch, interval, positional, .. } => match positional.as_slice() {
                [hub] => Ok(Command::Inspect {
                    hub: hub.clone(),
                    json,
                    watch: watch.then(|| interval.unwrap_or(Duration::from_secs(1))),
                }),
                [] => Err(bad_usage("inspect needs the name of a hub".into(), INSPECT_USAGE)),
                [_, extra, ..] => Err(bad_usage(format!("unexpected argument {extra}"), INSPECT_USAGE)),
            },
        },
        "top" => match command_args(rest, &["--interval", "--count"], TOP_USAGE)? {
            Args { help: true, .. } => Ok(Command::Help(TOP_USAGE)),
            Args { positional, .. } if !positional.is_empty() => {
                Err(bad_usage(format!("unexpected argument {}", positional[0]), TOP_USAGE))
            }
            Args { interval, count, .. } => {
                Ok(Command::Top { interval: interval.unwrap_or(Duration::from_secs(1)), count })
            }
        },
        other if other.starts_with('-') => Err(bad_usage(format!("unknown flag {other}"), TOOL_USAGE)),
        other => Err(bad_usage(format!("unknown command {other:?}"), TOOL_USAGE)),
    }
}

fn main() -> ExitCode {
    // Behave like other Unix tools when stdout is a closed pipe (`cellshm list | head`):
    // end quietly. Doorbell sends use MSG_NOSIGNAL and are unaffected.
    // SAFETY: restoring the default disposition of SIGPIPE at startup, before any thread.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = parse(&args).and_then(|command| match command {
        Command::Help(usage) => {
            println!("{usage}");
            Ok(())
        }
        Command::Version => {
            let (major, minor) = (cellshm::wire::PROTOCOL_VERSION_MAJOR, cellshm::wire::PROTOCOL_VERSION_MINOR);
            println!("cellshm {} (protocol {major}.{minor})", env!("CARGO_PKG_VERSION"));
            Ok(())
        }
        Command::List { json } => list(json),
        Command::Inspect { hub, json, watch: None } => inspect(&hub, json),
        Command::Inspect { hub, json, watch: Some(interval) } => loop {
            print!("{CLEAR_SCREEN}");
            inspect(&hub, json)?;
            std::thread::sleep(interval);
        },
        Command::Top { interval, count } => top(interval, count),
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cellshm: {}", e.message());
            ExitCode::from(if e.status() == Status::InvalidArgument { 2 } else { 1 })
        }
    }
}

fn duration_text(ms: u64) -> String {
    match ms / 1000 {
        s if s >= 86_400 => format!("{}d{}h", s / 86_400, s % 86_400 / 3600),
        s if s >= 3600 => format!("{}h{}m", s / 3600, s % 3600 / 60),
        s if s >= 60 => format!("{}m{}s", s / 60, s % 60),
        s => format!("{s}.{}s", ms % 1000 / 100),
    }
}

fn listing_json(h: &cellshm::HubListing) -> String {
    format!(
        "{{\"name\":{},\"layout\":\"{}.{}\",\"host_pid\":{},\"uid\":{},\"peers\":{},\"max_peers\":{},\"uptime_ms\":{},\"started_unix_ms\":{},\"attach\":{}}}",
        json_string(&h.name),
        h.version.0,
        h.version.1,
        h.host_pid,
        h.uid,
        h.peers,
        h.max_peers,
        h.uptime_ms,
        h.started_unix_ms,
        h.attach
    )
}

fn list(json: bool) -> Result<(), Error> {
    let hubs = cellshm::list_hubs()?;
    if json {
        let items: Vec<String> = hubs.iter().map(listing_json).collect();
        println!("[{}]", items.join(","));
        return Ok(());
    }
    if hubs.is_empty() {
        println!("(no live hubs)");
        return Ok(());
    }
    println!("{:<32} {:>8} {:>9} {:>9} {:>6}", "hub", "pid", "peers", "uptime", "attach");
    for h in &hubs {
        println!(
            "{:<32} {:>8} {:>9} {:>9} {:>6}",
            h.name,
            h.host_pid,
            format!("{}/{}", h.peers, h.max_peers),
            duration_text(h.uptime_ms),
            if h.attach { "yes" } else { "no" }
        );
    }
    Ok(())
}

/// Home, then clear the screen: a redraw without scrolling.
const CLEAR_SCREEN: &str = "\x1b[H\x1b[2J";

fn inspect(name: &str, json: bool) -> Result<(), Error> {
    let snap = cellshm::snapshot(name)?;
    if json {
        println!("{}", snapshot_json(&snap));
        return Ok(());
    }
    let g = &snap.info.geometry;
    println!(
        "hub {}  layout {}.{}  host pid {}  up {}",
        snap.info.name,
        snap.info.version.0,
        snap.info.version.1,
        snap.info.host_pid,
        duration_text(snap.info.uptime_ms)
    );
    let classes: Vec<String> =
        g.classes.iter().map(|c| format!("{}x{}", c.slot_count, human(c.slot_size as u64))).collect();
    println!(
        "{} peer slots, rings of {} descriptors, slot classes {}",
        snap.info.max_peers,
        g.ring_capacity,
        classes.join(" ")
    );
    println!(
        "{:>4} {:<10} {:>5} {:>7} {:<16} {:>9} {:>9} {:<16} {:<16} {:>9} {:>9} {:>7}",
        "peer",
        "state",
        "epoch",
        "pid",
        "name",
        "ring h>c",
        "ring c>h",
        "host pool",
        "cell pool",
        "calls h>c",
        "calls c>h",
        "errors"
    );
    for p in &snap.peers {
        let pool = |v: &[u32]| v.iter().map(u32::to_string).collect::<Vec<_>>().join("/");
        println!(
            "{:>4} {:<10} {:>5} {:>7} {:<16} {:>9} {:>9} {:<16} {:<16} {:>9} {:>9} {:>7}",
            p.id,
            state_of(&snap, p),
            p.epoch,
            p.pid,
            p.name,
            p.host_to_cell_depth,
            p.cell_to_host_depth,
            pool(&p.host_pool_in_use),
            pool(&p.cell_pool_in_use),
            p.host_counters.calls_sent,
            p.cell_counters.calls_sent,
            p.host_counters.errors + p.cell_counters.errors
        );
    }
    if snap.peers.is_empty() {
        println!("(no peers)");
        return Ok(());
    }
    println!();
    println!(
        "{:>4} {:<16} {:<9} {:<32} {:>9} {:>7} {:>9} {:>9} {:>9} {:>9}  errors",
        "peer", "name", "direction", "method", "calls", "errors", "in flight", "p50", "p99", "max"
    );
    for m in &snap.metrics {
        for (direction, methods) in [("host>cell", &m.outgoing), ("cell>host", &m.incoming)] {
            for method in methods {
                let errors: Vec<String> = method.errors.iter().map(|(s, n)| format!("{}={n}", s.name())).collect();
                println!(
                    "{:>4} {:<16} {:<9} {:<32} {:>9} {:>7} {:>9} {:>9} {:>9} {:>9}  {}",
                    m.peer_id,
                    m.name,
                    direction,
                    method.name,
                    method.calls,
                    method.error_count(),
                    method.in_flight,
                    latency_text(method.latency.p50_ns),
                    latency_text(method.latency.p99_ns),
                    latency_text(method.latency.max_ns),
                    errors.join(" ")
                );
            }
        }
        println!(
            "{:>4} {:<16} streams open {}, opened {}; refused calls {}; restarts {}",
            m.peer_id, m.name, m.open_streams, m.streams_opened, m.refused_calls, m.restarts
        );
    }
    Ok(())
}

/// The peer's state as the API names it ("ready", "dead", ...), from the host's own
/// record when it sent one, else from the slot in shared memory.
fn state_of(snap: &cellshm::HubSnapshot, p: &cellshm::PeerSnapshot) -> String {
    match snap.metrics.iter().find(|m| m.peer_id == p.id) {
        Some(m) => m.state.to_string(),
        None => format!("{:?}", p.state).to_lowercase(),
    }
}

fn latency_text(ns: u64) -> String {
    match ns {
        0 => "-".into(),
        ns if ns < 10_000 => format!("{ns}ns"),
        ns if ns < 10_000_000 => format!("{}us", ns / 1_000),
        ns if ns < 10_000_000_000 => format!("{}ms", ns / 1_000_000),
        ns => format!("{}s", ns / 1_000_000_000),
    }
}

/// One row of `cellshm top`: a cell of a hub, and what was counted when.
struct TopRow {
    hub: String,
    cell: String,
    state: &'static str,
    calls_out: u64,
    calls_in: u64,
    worst_p99_ns: u64,
    in_flight: u64,
    open_streams: u64,
    restarts: u64,
}

fn top_rows() -> Vec<TopRow> {
    let mut rows = Vec::new();
    for hub in cellshm::list_hubs().unwrap_or_default() {
        // A hub that ended (or refused us) since it was listed is left out of this round.
        let Ok(snap) = cellshm::snapshot(&hub.name) else { continue };
        for m in snap.metrics {
            let all = m.outgoing.iter().chain(m.incoming.iter());
            rows.push(TopRow {
                hub: hub.name.clone(),
                cell: m.name.clone(),
                state: m.state,
                calls_out: m.outgoing.iter().map(|x| x.calls).sum(),
                calls_in: m.incoming.iter().map(|x| x.calls).sum(),
                worst_p99_ns: all.clone().map(|x| x.latency.p99_ns).max().unwrap_or(0),
                in_flight: all.map(|x| x.in_flight).sum(),
                open_streams: m.open_streams,
                restarts: m.restarts,
            });
        }
    }
    rows
}

fn top(interval: Duration, count: Option<u64>) -> Result<(), Error> {
    let mut previous: Vec<TopRow> = Vec::new();
    let mut last = std::time::Instant::now();
    for round in 1.. {
        let rows = top_rows();
        let elapsed = last.elapsed().as_secs_f64().max(1e-3);
        last = std::time::Instant::now();
        let mut screen = String::from(CLEAR_SCREEN);
        screen.push_str(&format!(
            "cellshm top: {} hubs, {} cells, every {:.1} s (Ctrl-C to quit)\n\n",
            rows.iter().map(|r| &r.hub).collect::<std::collections::BTreeSet<_>>().len(),
            rows.len(),
            interval.as_secs_f64()
        ));
        screen.push_str(&format!(
            "{:<24} {:<16} {:<8} {:>11} {:>11} {:>9} {:>9} {:>7} {:>8}\n",
            "hub", "cell", "state", "calls/s h>c", "calls/s c>h", "p99", "in flight", "streams", "restarts"
        ));
        for r in &rows {
            let before = previous.iter().find(|p| p.hub == r.hub && p.cell == r.cell);
            let rate = |now: u64, then: Option<u64>| match then {
                Some(then) => format!("{:.0}", now.saturating_sub(then) as f64 / elapsed),
                None => "-".into(),
            };
            screen.push_str(&format!(
                "{:<24} {:<16} {:<8} {:>11} {:>11} {:>9} {:>9} {:>7} {:>8}\n",
                r.hub,
                r.cell,
                r.state,
                rate(r.calls_out, before.map(|b| b.calls_out)),
                rate(r.calls_in, before.map(|b| b.calls_in)),
                latency_text(r.worst_p99_ns),
                r.in_flight,
                r.open_streams,
                r.restarts
            ));
        }
        if rows.is_empty() {
            screen.push_str("(no cells on any live hub)\n");
        }
        print!("{screen}");
        use std::io::Write as _;
        let _ = std::io::stdout().flush();
        previous = rows;
        if count.is_some_and(|n| round >= n) {
            return Ok(());
        }
        std::thread::sleep(interval);
    }
    Ok(())
}

fn human(bytes: u64) -> String {
    match bytes {
        b if b >= 1 << 20 && b % (1 << 20) == 0 => format!("{}MiB", b >> 20),
        b if b >= 1 << 10 && b % (1 << 10) == 0 => format!("{}KiB", b >> 10),
        b => format!("{b}B"),
    }
}

fn counters_json(c: &cellshm::Counters) -> String {
    format!(
        "{{\"calls_sent\":{},\"requests_served\":{},\"errors\":{},\"bytes_sent\":{}}}",
        c.calls_sent, c.requests_served, c.errors, c.bytes_sent
    )
}

fn snapshot_json(snap: &cellshm::HubSnapshot) -> String {
    let g = &snap.info.geometry;
    let classes: Vec<String> = g
        .classes
        .iter()
        .map(|c| format!("{{\"slot_size\":{},\"slot_count\":{}}}", c.slot_size, c.slot_count))
        .collect();
    let list = |v: &[u32]| v.iter().map(u32::to_string).collect::<Vec<_>>().join(",");
    let peers: Vec<String> = snap
        .peers
        .iter()
        .map(|p| {
            let metrics = snap.metrics.iter().find(|m| m.peer_id == p.id).map_or("null".into(), cellshm::host::inspect::metrics_json);
            format!(
                "{{\"id\":{},\"state\":{},\"slot_state\":{},\"epoch\":{},\"pid\":{},\"name\":{},\"ring_host_to_cell\":{},\"ring_cell_to_host\":{},\"host_pool_in_use\":[{}],\"cell_pool_in_use\":[{}],\"host\":{},\"cell\":{},\"metrics\":{metrics}}}",
                p.id,
                json_string(&state_of(snap, p)),
                json_string(&format!("{:?}", p.state).to_lowercase()),
                p.epoch,
                p.pid,
                json_string(&p.name),
                p.host_to_cell_depth,
                p.cell_to_host_depth,
                list(&p.host_pool_in_use),
                list(&p.cell_pool_in_use),
                counters_json(&p.host_counters),
                counters_json(&p.cell_counters)
            )
        })
        .collect();
    format!(
        "{{\"name\":{},\"layout\":\"{}.{}\",\"host_pid\":{},\"max_peers\":{},\"ring_capacity\":{},\"slot_classes\":[{}],\"peers\":[{}]}}",
        json_string(&snap.info.name),
        snap.info.version.0,
        snap.info.version.1,
        snap.info.host_pid,
        snap.info.max_peers,
        g.ring_capacity,
        classes.join(","),
        peers.join(",")
    )
}
