//! `cellshm` command line: list and inspect live hubs. One file per command (`list.rs`,
//! `inspect.rs`, `top.rs`), as iceoryx2's `iox2`; this file parses the command line.
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

mod inspect;
mod list;
mod text;
mod top;

use text::CLEAR_SCREEN;

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
        Command::List { json } => list::run(json),
        Command::Inspect { hub, json, watch: None } => inspect::run(&hub, json),
        Command::Inspect { hub, json, watch: Some(interval) } => loop {
            print!("{CLEAR_SCREEN}");
            inspect::run(&hub, json)?;
            std::thread::sleep(interval);
        },
        Command::Top { interval, count } => top::run(interval, count),
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cellshm: {}", e.message());
            ExitCode::from(if e.status() == Status::InvalidArgument { 2 } else { 1 })
        }
    }
}
