//! `cellshm` command line: list and inspect live hubs.
//!
//! ```text
//! cellshm list [--json]          the live hubs of this user: name, host pid, peers, uptime
//! cellshm inspect HUB [--json]   every link of a live hub, read through read-only memfds
//! cellshm --version | -h         and COMMAND --help; exit codes 0 done, 1 failed, 2 usage
//! ```
//! The benchmark is `cellshm-bench` (tools/bench) and the test programs are
//! `cellshm-testkit` (tools/testkit); neither ships in this binary.

use std::process::ExitCode;

use cellshm::{Error, Status};

const TOOL_USAGE: &str = "usage: cellshm [-h | --help] [--version] COMMAND [ARGS]

Commands:
  list [--json]          the live hubs of this user: name, host pid, peers, uptime, attach
  inspect HUB [--json]   every link of a live hub, read through read-only memfds

`cellshm COMMAND --help` describes a command.
Exit codes: 0 done; 1 the command failed (no such hub, a system error); 2 bad usage.";

const LIST_USAGE: &str = "usage: cellshm list [--json]

The live hubs of this user on this machine, found through their abstract sockets (a hub
whose process ended is never listed): name, host pid, peers in use / slots, uptime, and
whether attaching is on. --json prints one array of objects.";

const INSPECT_USAGE: &str = "usage: cellshm inspect HUB [--json]

Every peer of the live hub HUB (its name, or UID/NAME), read through read-only
descriptors of each link's memfds: state, epoch, pid, name, ring depths, slots in use
per class, and call, error and byte counters. --json prints one object.";

/// What the command line asks for.
#[derive(Debug, PartialEq, Eq)]
enum Command {
    Help(&'static str),
    Version,
    List { json: bool },
    Inspect { hub: String, json: bool },
}

/// A usage error: what was wrong, and the usage of the command it was for.
fn bad_usage(what: String, usage: &str) -> Error {
    Error::new(Status::InvalidArgument, format!("{what}\n{usage}"))
}

/// The flags and positional arguments after a command: `--json` and `-h/--help` are the
/// only flags; anything else starting with `-` is an error.
fn command_args(args: &[String], usage: &'static str) -> Result<(bool, Vec<String>, bool), Error> {
    let (mut json, mut help, mut positional) = (false, false, Vec::new());
    for a in args {
        match a.as_str() {
            "--json" => json = true,
            "-h" | "--help" => help = true,
            flag if flag.starts_with('-') && flag != "-" => {
                return Err(bad_usage(format!("unknown flag {flag}"), usage))
            }
            arg => positional.push(arg.to_string()),
        }
    }
    Ok((json, positional, help))
}

fn parse(args: &[String]) -> Result<Command, Error> {
    let Some(first) = args.first() else {
        return Err(bad_usage("no command given".into(), TOOL_USAGE));
    };
    let rest = &args[1..];
    match first.as_str() {
        "-h" | "--help" | "help" => Ok(Command::Help(TOOL_USAGE)),
        "-V" | "--version" => Ok(Command::Version),
        "list" => match command_args(rest, LIST_USAGE)? {
            (_, _, true) => Ok(Command::Help(LIST_USAGE)),
            (json, positional, false) if positional.is_empty() => Ok(Command::List { json }),
            (_, positional, false) => Err(bad_usage(format!("unexpected argument {}", positional[0]), LIST_USAGE)),
        },
        "inspect" => match command_args(rest, INSPECT_USAGE)? {
            (_, _, true) => Ok(Command::Help(INSPECT_USAGE)),
            (json, positional, false) => match positional.as_slice() {
                [hub] => Ok(Command::Inspect { hub: hub.clone(), json }),
                [] => Err(bad_usage("inspect needs the name of a hub".into(), INSPECT_USAGE)),
                [_, extra, ..] => Err(bad_usage(format!("unexpected argument {extra}"), INSPECT_USAGE)),
            },
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
        Command::Inspect { hub, json } => inspect(&hub, json),
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
            format!("{:?}", p.state),
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

fn json_string(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
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
            format!(
                "{{\"id\":{},\"state\":{},\"epoch\":{},\"pid\":{},\"name\":{},\"ring_host_to_cell\":{},\"ring_cell_to_host\":{},\"host_pool_in_use\":[{}],\"cell_pool_in_use\":[{}],\"host\":{},\"cell\":{}}}",
                p.id,
                json_string(&format!("{:?}", p.state)),
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
