//! `cellshm` command line: list and inspect live hubs, run the benchmarks.
//!
//! ```text
//! cellshm list [--json]          the live hubs of this user: name, host pid, peers, uptime
//! cellshm inspect HUB [--json]   every link of a live hub, read through read-only memfds
//! cellshm bench [--quick]        round-trip benchmarks beside their floors
//! ```
//! `cellshm __cell` is the cell the benchmarks and the multi-process tests spawn;
//! `cellshm __attach HUB NAME` is the same cell joining a running hub by attaching.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::{Command, ExitCode};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use cellshm::{CallOptions, Cell, Error, Hub, HubConfig, PeerOptions, SlotClass, Status, WaitStrategy};

#[path = "testkit/raw.rs"]
mod testkit;

fn main() -> ExitCode {
    // Behave like other Unix tools when stdout is a closed pipe (`cellshm bench | head`):
    // end quietly. Doorbell sends use MSG_NOSIGNAL and are unaffected.
    // SAFETY: restoring the default disposition of SIGPIPE at startup, before any thread.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("list") => list(args.iter().any(|a| a == "--json")),
        Some("inspect") => {
            let json = args.iter().any(|a| a == "--json");
            match args.iter().skip(1).find(|a| !a.starts_with("--")) {
                Some(name) => inspect(name, json),
                None => Err(usage()),
            }
        }
        Some("bench") => bench(args.iter().any(|a| a == "--quick")),
        // Strict, like a clap program: any argument is an error, so every test that
        // spawns this cell proves the host left its argv alone.
        Some("__cell") => match args.get(1) {
            Some(extra) => {
                Err(Error::new(Status::InvalidArgument, format!("__cell takes no arguments, got {extra:?}")))
            }
            None => cellshm::CellOptions::from_env()
                .and_then(|mut options| {
                    // A forged pid in `ready`, for the test proving the host ignores it.
                    options.announced_pid = std::env::var("TEST_CELL_ANNOUNCED_PID").ok().and_then(|p| p.parse().ok());
                    Cell::join(cellshm::JoinArgs::parse(std::env::args_os().skip(2))?, options)
                })
                .and_then(test_cell),
        },
        Some("__attach") => match (args.get(1), args.get(2)) {
            (Some(hub), Some(name)) => cellshm::CellOptions::from_env()
                .and_then(|options| Cell::attach(hub, name, options))
                .and_then(test_cell),
            _ => Err(usage()),
        },
        Some("__host") => test_host(&args[1..]),
        Some("__kill-hosts") => kill_hosts(&args[1..]),
        Some("__hostile") => testkit::hostile(),
        Some("__bad-hello") => testkit::bad_hello(),
        Some("__ping-flood") => testkit::flood(testkit::Flood::Pings),
        Some(flood @ ("__request-flood" | "__notify-flood" | "__stream-flood")) => {
            match args.get(1).and_then(|n| n.parse().ok()) {
                Some(n) if flood == "__request-flood" => testkit::flood(testkit::Flood::Requests(n)),
                Some(n) if flood == "__notify-flood" => testkit::flood(testkit::Flood::Notifications(n)),
                Some(n) => testkit::flood(testkit::Flood::Streams(n)),
                None => Err(usage()),
            }
        }
        Some("__attach-flood") => testkit::attach_flood(&args[1..]),
        Some("__matrix-host") => matrix_host(&args[1..]),
        Some("__chaos") => chaos(&args[1..]),
        Some("__floor-shm") => floor_shm_child(&args[1..]),
        Some("__floor-sock") => floor_socket_child(&args[1..]),
        Some("-h" | "--help" | "help") => {
            println!("{}", usage().message());
            Ok(())
        }
        _ => Err(usage()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cellshm: {e}");
            ExitCode::from(if e.status() == Status::InvalidArgument { 2 } else { 1 })
        }
    }
}

fn usage() -> Error {
    Error::new(
        Status::InvalidArgument,
        "usage: cellshm list [--json] | cellshm inspect HUB [--json] | cellshm bench [--quick]",
    )
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

// ----- the test / benchmark cell -----------------------------------------------------

fn u32_at(bytes: &[u8], at: usize) -> Result<u32, Error> {
    bytes
        .get(at..at + 4)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .ok_or_else(|| Error::new(Status::InvalidArgument, format!("expected a u32 at byte {at}")))
}

/// The cell spawned by tests and benchmarks. Methods:
/// - `Echo.echo`: replies with the request, written in place.
/// - `Test.sleep`: sleeps u32 ms, replies empty.
/// - `Test.panic`: panics.
/// - `Test.fail`: returns status u32 with the rest of the payload as message.
/// - `Test.cancelled_at_deadline`: waits for cancellation (its deadline included), then
///   answers CANCELLED.
/// - `Test.sized`: replies with u32 bytes of a pattern.
/// - `Test.garbage`: pushes a garbage descriptor towards the host.
/// - `Test.call_host`: calls the host's `Host.echo` with the payload, replies with its answer.
/// - `Test.log`: sends the payload as a log line.
/// - `Test.goodbye`: answers, then leaves on purpose (goodbye).
/// - `Test.trace`: emits `tracing` events (forwarded to the host through the log filter).
/// - `Test.exit`: exits the process at once with code u32.
fn test_cell(cell: Cell) -> Result<(), Error> {
    use tracing_subscriber::layer::SubscriberExt;
    let subscriber = tracing_subscriber::registry().with(cellshm::log::CellLayer::new(cell.log_sender()));
    let _ = tracing::subscriber::set_global_default(subscriber);
    cell.method("Test.trace", |_| {
        tracing::info!(target: "other", "info from other");
        tracing::warn!(target: "other", "warn from other");
        tracing::debug!(target: "mycell::db", "debug from mycell");
        tracing::trace!(target: "mycell::db", "trace from mycell");
        tracing::error!(target: "mycell", answer = 42, "error with a field");
        Ok(())
    })?;
    let cell = std::sync::Arc::new(cell);
    cell.method("Echo.echo", |call| {
        // Straight from the request's slot into the reply's, without a private copy.
        let request = call.request();
        call.reply_with(request.len(), |buf| {
            request.copy_to_slice(0, buf);
            request.len()
        })
    })?;
    cell.method("Test.sleep", |call| {
        std::thread::sleep(Duration::from_millis(u32_at(call.payload(), 0)? as u64));
        Ok(())
    })?;
    cell.method("Test.panic", |_| panic!("deliberate panic in Test.panic"))?;
    cell.method("Test.fail", |call| {
        let code = u32_at(call.payload(), 0)?;
        let status = Status::from_code(code).unwrap_or(Status::Unknown);
        Err(Error::new(status, String::from_utf8_lossy(&call.payload()[4..]).into_owned()))
    })?;
    cell.method("Test.sized", |call| {
        let n = u32_at(call.payload(), 0)? as usize;
        call.reply_with(n, |buf| {
            for (i, b) in buf.iter_mut().enumerate() {
                *b = (i % 251) as u8;
            }
            n
        })
    })?;
    let weak = std::sync::Arc::downgrade(&cell);
    cell.method("Test.garbage", move |_| {
        let cell = weak.upgrade().ok_or_else(|| Error::new(Status::Unavailable, "cell gone"))?;
        let mut garbage = [0xA5u8; 64];
        garbage[16..20].copy_from_slice(&0xFFFF_FFFFu32.to_le_bytes());
        cell.push_raw_descriptor_for_tests(garbage)
    })?;
    let weak = std::sync::Arc::downgrade(&cell);
    cell.method("Test.call_host", move |call| {
        let cell = weak.upgrade().ok_or_else(|| Error::new(Status::Unavailable, "cell gone"))?;
        let answer = cell.call("Host.echo", call.payload(), &CallOptions::timeout(Duration::from_secs(5)))?;
        call.reply(answer.bytes())
    })?;
    let weak = std::sync::Arc::downgrade(&cell);
    cell.method("Test.goodbye", move |_| {
        // Answer first, then leave on purpose.
        let weak = weak.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            if let Some(cell) = weak.upgrade() {
                let _ = cell.goodbye();
            }
        });
        Ok(())
    })?;
    cell.method("Test.exit", |call| std::process::exit(u32_at(call.payload(), 0)? as i32))?;
    serve_test_streams(&cell)?;
    let weak = std::sync::Arc::downgrade(&cell);
    cell.stream_method("Stream.ignore_credit", move |call| {
        // A misbehaving cell: 100 inline DATA frames at once, ignoring the window.
        let cell = weak.upgrade().ok_or_else(|| Error::new(Status::Unavailable, "cell gone"))?;
        for i in 0..100u64 {
            let d = cellshm::frame::Descriptor {
                msg_id: 1 << 40 | i,
                channel_id: call.channel_id(),
                method_id: cellshm::method_id("Stream.ignore_credit"),
                flags: cellshm::frame::flags::DATA,
                slot: cellshm::frame::SLOT_INLINE,
                ..Default::default()
            };
            cell.push_raw_descriptor_for_tests(d.encode())?;
        }
        Ok(())
    })?;
    let weak = std::sync::Arc::downgrade(&cell);
    cell.method("Test.stream_from_host", move |call| {
        let cell = weak.upgrade().ok_or_else(|| Error::new(Status::Unavailable, "cell gone"))?;
        let stream =
            cell.open_stream("Host.countdown", call.payload(), &CallOptions::timeout(Duration::from_secs(5)))?;
        let mut got = Vec::new();
        for item in stream {
            got.extend_from_slice(item?.bytes());
        }
        call.reply(&got)
    })?;
    let weak = std::sync::Arc::downgrade(&cell);
    cell.method("Test.log", move |call| {
        let cell = weak.upgrade().ok_or_else(|| Error::new(Status::Unavailable, "cell gone"))?;
        cell.log(&String::from_utf8_lossy(call.payload()))
    })?;
    cell.run()
}

/// When `Stream.forever` or `Test.until_cancelled` last saw a cancellation (CLOCK_MONOTONIC ns), so a test
/// can measure how long a cancellation takes to reach the handler.
static LAST_CANCEL_SEEN_NS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// FNV-1a over a stream of items: what `Stream.sum` answers, and what callers check.
fn fnv1a(mut hash: u64, bytes: &[u8]) -> u64 {
    for b in bytes {
        hash = (hash ^ *b as u64).wrapping_mul(0x100_0000_01b3);
    }
    hash
}

/// The stream methods of the test cell:
/// - `Stream.count {n, size, sleep_ms}`: n items of `size` bytes, each starting with its index
///   (the rest is not written);
/// - `Stream.fail_after {n}`: n items, then ABORTED;
/// - `Stream.forever {size}`: items until cancelled; records when it saw the cancel;
/// - `Stream.sum`: reads every item, answers {bytes: u64, fnv1a: u64};
/// - `Stream.echo`: sends every item it receives back.
fn serve_test_streams(cell: &Cell) -> Result<(), Error> {
    cell.stream_method("Stream.count", |call| {
        let n = u32_at(call.request(), 0)?;
        let size = (u32_at(call.request(), 4)? as usize).max(4);
        let sleep = Duration::from_millis(u32_at(call.request(), 8).unwrap_or(0) as u64);
        for i in 0..n {
            // Only the index is written: the tests check order and length, and the
            // large-chunk ones measure flow control, not how fast we fill memory.
            call.send_with(size, |buf| {
                buf[..4].copy_from_slice(&i.to_le_bytes());
                size
            })?;
            if !sleep.is_zero() {
                std::thread::sleep(sleep);
            }
        }
        Ok(())
    })?;
    cell.stream_method("Stream.fill", |call| {
        // The benchmark's producer: every byte of every chunk written in place.
        let n = u32_at(call.request(), 0)?;
        let size = u32_at(call.request(), 4)? as usize;
        for i in 0..n {
            call.send_with(size, |buf| {
                buf.fill(i as u8);
                size
            })?;
        }
        Ok(())
    })?;
    cell.stream_method("Stream.fail_after", |call| {
        let n = u32_at(call.request(), 0)?;
        for i in 0..n {
            call.send(&i.to_le_bytes())?;
        }
        Err(Error::new(Status::Aborted, format!("gave up after {n} items")))
    })?;
    cell.stream_method("Stream.forever", |call| {
        let size = u32_at(call.request(), 0)? as usize;
        loop {
            if let Err(e) = call.send_with(size, |buf| buf.len()) {
                if call.is_cancelled() {
                    LAST_CANCEL_SEEN_NS.store(cellshm::frame::monotonic_now_ns(), std::sync::atomic::Ordering::SeqCst);
                }
                return Err(e);
            }
        }
    })?;
    cell.method("Test.until_cancelled", |call| {
        if call.wait_cancelled(Duration::from_secs(10)) {
            LAST_CANCEL_SEEN_NS.store(cellshm::frame::monotonic_now_ns(), std::sync::atomic::Ordering::SeqCst);
            if call.remaining() == Some(Duration::ZERO) {
                return Err(Error::new(Status::DeadlineExceeded, "the caller's deadline passed"));
            }
            return Err(Error::new(Status::Cancelled, "the caller cancelled"));
        }
        Ok(())
    })?;
    // Answers CANCELLED as soon as it sees the call cancelled, also when that is only
    // its deadline passing: the library must turn that into DEADLINE_EXCEEDED.
    cell.method("Test.cancelled_at_deadline", |call| {
        call.wait_cancelled(Duration::from_secs(10));
        Err(Error::new(Status::Cancelled, "stopped: the call was cancelled"))
    })?;
    cell.method("Stream.last_cancel_seen", |call| {
        call.reply(&LAST_CANCEL_SEEN_NS.load(std::sync::atomic::Ordering::SeqCst).to_le_bytes())
    })?;
    cell.stream_method("Stream.sum", |call| {
        let (mut total, mut hash) = (0u64, 0xcbf2_9ce4_8422_2325u64);
        while let Some(item) = call.recv()? {
            total += item.bytes().len() as u64;
            hash = fnv1a(hash, item.bytes());
        }
        let mut answer = total.to_le_bytes().to_vec();
        answer.extend_from_slice(&hash.to_le_bytes());
        call.set_response(&answer);
        Ok(())
    })?;
    cell.stream_method("Stream.echo", |call| {
        while let Some(item) = call.recv()? {
            let bytes = item.bytes();
            call.send_with(bytes.len(), |buf| {
                buf.copy_from_slice(bytes);
                bytes.len()
            })?;
        }
        Ok(())
    })?;
    Ok(())
}

/// Splits `-- CMD ARGS... -- CMD ARGS...` into commands.
fn commands(args: &[String]) -> Vec<Vec<String>> {
    args.split(|a| a == "--").filter(|c| !c.is_empty()).map(<[String]>::to_vec).collect()
}

/// `__host [--name NAME] [--attach] [-- CELL ARGS...]...`: a host that spawns the cells
/// given (one `__cell` if none), prints `cell_pid=N` for each once it is ready and then
/// `ready`, and idles: tests kill it to check that its cells follow and nothing of the
/// hub remains.
fn test_host(args: &[String]) -> Result<(), Error> {
    let split = args.iter().position(|a| a == "--").unwrap_or(args.len());
    let (flags, cells) = args.split_at(split);
    let name = flags.iter().position(|a| a == "--name").and_then(|i| flags.get(i + 1)).cloned();
    let hub = Hub::create(HubConfig { name, ..HubConfig::default() })?;
    let _attach = if flags.iter().any(|a| a == "--attach") {
        Some(hub.enable_attach(cellshm::host::attach::AttachPolicy::default())?)
    } else {
        None
    };
    let mut cells = commands(cells);
    if cells.is_empty() {
        cells.push(vec![self_exe()?.display().to_string(), "__cell".into()]);
    }
    let mut children = Vec::new();
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    for (i, argv) in cells.iter().enumerate() {
        let ticket = hub.add_peer(&format!("cell-{i}"), PeerOptions::default())?;
        let mut command = Command::new(&argv[0]);
        command.args(&argv[1..]).env("CELLSHM_QUIET", "1");
        let (peer, child) = ticket.spawn(&mut command)?;
        peer.wait_ready(Duration::from_secs(20))?;
        writeln!(out, "cell_pid={}", child.id()).map_err(|e| Error::system("writing to stdout", e))?;
        children.push((peer, child));
    }
    writeln!(out, "ready {}", hub.name())
        .and_then(|_| out.flush())
        .map_err(|e| Error::system("writing to stdout", e))?;
    std::thread::sleep(Duration::from_secs(60));
    Ok(())
}

/// Names under `dir` (for leftover checks); empty if it does not exist.
fn entries(dir: &str) -> std::collections::BTreeSet<String> {
    std::fs::read_dir(dir)
        .map(|d| d.filter_map(|e| e.ok()).map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default()
}

/// Abstract Unix socket names starting with `cellshm`.
fn abstract_cellshm_sockets() -> std::collections::BTreeSet<String> {
    std::fs::read_to_string("/proc/net/unix")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_whitespace().nth(7))
        .filter(|p| p.starts_with("@cellshm"))
        .map(str::to_string)
        .collect()
}

/// A pidfd of `pid`, or `None` if the process is already gone.
fn pidfd_of(pid: u32) -> Result<Option<OwnedFd>, Error> {
    // SAFETY: pidfd_open takes a pid and flags, no pointers.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    if fd < 0 {
        let e = std::io::Error::last_os_error();
        return if e.raw_os_error() == Some(libc::ESRCH) { Ok(None) } else { Err(Error::system("pidfd_open", e)) };
    }
    // SAFETY: a new descriptor nobody else owns.
    Ok(Some(unsafe { OwnedFd::from_raw_fd(fd as i32) }))
}

/// Waits on a pidfd (readable once its process ended) until `until`; true if it ended.
fn ends_by(pidfd: &OwnedFd, until: Instant) -> bool {
    let ms = until.saturating_duration_since(Instant::now()).as_millis() as i32;
    let mut pfd = libc::pollfd { fd: pidfd.as_raw_fd(), events: libc::POLLIN, revents: 0 };
    // SAFETY: one valid pollfd.
    unsafe { libc::poll(&mut pfd, 1, ms) > 0 }
}

/// `__kill-hosts N -- CELL... -- CELL...`: N times, starts a host (`__host --attach`)
/// with the given cells, SIGKILLs it once they are ready, and checks that every cell
/// exits within 1 s and that nothing new is left in /dev/shm, $XDG_RUNTIME_DIR, /tmp or
/// the abstract socket namespace.
fn kill_hosts(args: &[String]) -> Result<(), Error> {
    let rounds: usize = args.first().and_then(|n| n.parse().ok()).ok_or_else(usage)?;
    let cells = &args[1..];
    let runtime = std::env::var("XDG_RUNTIME_DIR").unwrap_or_else(|_| "/run/user/none".into());
    let dirs = ["/dev/shm".to_string(), runtime, std::env::temp_dir().display().to_string()];
    let before: Vec<_> = dirs.iter().map(|d| entries(d)).collect();
    let sockets_before = abstract_cellshm_sockets();
    let fail = |m: String| Error::new(Status::Internal, m);
    let started = Instant::now();
    let mut slowest = Duration::ZERO;
    for round in 0..rounds {
        let mut host = Command::new(self_exe()?)
            .args(["__host", "--attach", "--name", &format!("kill-{}-{round}", std::process::id())])
            .args(cells)
            .env("CELLSHM_QUIET", "1")
            .stdout(std::process::Stdio::piped())
            .spawn()
            .map_err(|e| Error::system("spawning a host", e))?;
        // (pid, pidfd): opened while the cell is alive, so no other process can have its pid.
        let mut pids = Vec::new();
        let mut reader = std::io::BufReader::new(host.stdout.take().expect("piped"));
        loop {
            let mut line = String::new();
            if std::io::BufRead::read_line(&mut reader, &mut line).map_err(|e| Error::system("reading the host", e))?
                == 0
            {
                return Err(fail(format!("round {round}: the host ended before its cells were ready")));
            }
            if let Some(pid) = line.trim().strip_prefix("cell_pid=") {
                let pid = pid.parse::<u32>().map_err(|_| fail(format!("bad line {line:?}")))?;
                pids.push((pid, pidfd_of(pid)?));
            } else if line.starts_with("ready") {
                break;
            }
        }
        host.kill().map_err(|e| Error::system("killing the host", e))?;
        let killed = Instant::now();
        host.wait().map_err(|e| Error::system("reaping the host", e))?;
        let deadline = killed + Duration::from_secs(1);
        if let Some((pid, _)) = pids.iter().find(|(_, fd)| fd.as_ref().is_some_and(|fd| !ends_by(fd, deadline))) {
            return Err(fail(format!("round {round}: cell {pid} outlived its host by 1 s")));
        }
        slowest = slowest.max(killed.elapsed());
    }
    for (dir, before) in dirs.iter().zip(&before) {
        let new: Vec<_> = entries(dir).difference(before).cloned().collect();
        if !new.is_empty() {
            return Err(fail(format!("left behind in {dir}: {new:?}")));
        }
    }
    let new: Vec<_> = abstract_cellshm_sockets().difference(&sockets_before).cloned().collect();
    if !new.is_empty() {
        return Err(fail(format!("abstract sockets left behind: {new:?}")));
    }
    println!(
        "kill-hosts: {rounds} hosts SIGKILLed with {} cells each in {:.1} s; every cell gone within {} ms; nothing left in {} or the abstract namespace",
        commands(cells).len().max(1),
        started.elapsed().as_secs_f64(),
        slowest.as_millis(),
        dirs.join(", ")
    );
    Ok(())
}

/// The Rust host of the cross-language matrix (tests/matrix): runs the four checks
/// against the cell started by `argv` and prints `matrix host=rust: ok`.
fn matrix_host(argv: &[String]) -> Result<(), Error> {
    let fail = |what: &str| Error::new(Status::Internal, format!("matrix host=rust: {what}"));
    let program = argv.first().ok_or_else(usage)?;
    let hub = Hub::create(HubConfig::default())?;
    let ticket = hub.add_peer("matrix", PeerOptions::default())?;
    let mut cmd = Command::new(program);
    cmd.args(&argv[1..]).env("CELLSHM_QUIET", "1");
    let (peer, mut child) = ticket.spawn(&mut cmd)?;
    peer.wait_ready(Duration::from_secs(15))?;
    let opts = CallOptions::timeout(Duration::from_secs(5));
    // 1. echo
    let data: Vec<u8> = (0..1000u32).map(|i| (i % 251) as u8).collect();
    if peer.call("Echo.echo", &data, &opts)?.bytes() != &data[..] {
        return Err(fail("echo returned other bytes"));
    }
    // 2. error propagation: status and message
    let mut request = Status::NotFound.code().to_le_bytes().to_vec();
    request.extend_from_slice(b"no widget 7");
    match peer.call("Test.fail", &request, &opts) {
        Err(e) if e.status() == Status::NotFound && e.message().contains("no widget 7") => {}
        other => return Err(fail(&format!("Test.fail gave {other:?}"))),
    }
    // 3. deadline
    match peer.call("Test.sleep", &500u32.to_le_bytes(), &CallOptions::timeout(Duration::from_millis(50))) {
        Err(e) if e.status() == Status::DeadlineExceeded => {}
        other => return Err(fail(&format!("deadline gave {other:?}"))),
    }
    // 4. death detection: killed mid-call -> PEER_DEAD within a second
    let killer = std::thread::spawn({
        let pid = child.id();
        move || {
            std::thread::sleep(Duration::from_millis(200));
            // SAFETY: kill takes no pointers.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
            Instant::now()
        }
    });
    let result = peer.call("Test.sleep", &10_000u32.to_le_bytes(), &CallOptions::timeout(Duration::from_secs(30)));
    let ended = Instant::now();
    let killed = killer.join().map_err(|_| fail("killer thread"))?;
    match result {
        Err(e) if e.status() == Status::PeerDead && ended.duration_since(killed) < Duration::from_secs(1) => {}
        other => return Err(fail(&format!("death gave {other:?} after {:?}", ended.duration_since(killed)))),
    }
    let _ = child.wait();
    println!("matrix host=rust: ok");
    Ok(())
}

/// The chaos test: `__chaos ROUNDS -- CELL... [-- CELL...]`. Supervises the cells, keeps
/// 4 threads calling them, and SIGKILLs one at a random moment ROUNDS times. Every call
/// must end within its deadline, OK (with the right bytes), PEER_DEAD, or UNAVAILABLE
/// while the cell restarts; every kill must be followed by a relaunch; at the end every
/// pool must be free and no peer slot lost.
fn chaos(args: &[String]) -> Result<(), Error> {
    use std::sync::atomic::{AtomicBool, AtomicU64};
    use std::sync::Arc;
    let fail = |what: String| Error::new(Status::Internal, format!("chaos: {what}"));
    let rounds: u32 = args.first().and_then(|r| r.parse().ok()).ok_or_else(usage)?;
    let cells: Vec<Vec<String>> =
        args[1..].split(|a| a == "--").filter(|c| !c.is_empty()).map(|c| c.to_vec()).collect();
    if cells.is_empty() {
        return Err(usage());
    }
    let max_peers = 8;
    let sup = Arc::new(cellshm::Supervisor::new(Hub::create(HubConfig { max_peers, ..HubConfig::default() })?)?);
    let names: Vec<String> = (0..cells.len()).map(|i| format!("chaos-{i}")).collect();
    for (name, argv) in names.iter().zip(&cells) {
        let spec = cellshm::CellSpec::new(name.clone(), &argv[0])
            .args(argv[1..].iter().cloned())
            .env("CELLSHM_QUIET", "1")
            .restart(cellshm::RestartPolicy {
                max_restarts: u32::MAX,
                initial_backoff: Duration::from_millis(5),
                max_backoff: Duration::from_millis(20),
                reset_after: Duration::from_secs(1),
            });
        sup.add(spec)?;
    }
    let ready = |name: &str| sup.wait_for(name, Duration::from_secs(20), |s| *s == cellshm::CellStatus::Ready);
    for name in &names {
        ready(name)?;
    }
    let stop = Arc::new(AtomicBool::new(false));
    let counts: Arc<[AtomicU64; 4]> = Arc::new(Default::default()); // ok, peer dead, unavailable, calls
    let callers: Vec<_> = (0..4u64)
        .map(|t| {
            let (sup, stop, counts, names) = (sup.clone(), stop.clone(), counts.clone(), names.clone());
            std::thread::spawn(move || -> Result<(), String> {
                let mut rng = 0x9e37_79b9_7f4a_7c15u64 ^ (t + 1);
                while !stop.load(Ordering::Relaxed) {
                    rng ^= rng << 13;
                    rng ^= rng >> 7;
                    rng ^= rng << 17;
                    let name = &names[(rng % names.len() as u64) as usize];
                    let size = [8usize, 200, 5000, 70_000][(rng >> 8) as usize % 4];
                    let payload: Vec<u8> = (0..size).map(|i| (i as u64 ^ rng) as u8).collect();
                    let deadline = Duration::from_secs(2);
                    let started = Instant::now();
                    let result = sup.call(name, "Echo.echo", &payload, &CallOptions::timeout(deadline));
                    let took = started.elapsed();
                    if took > deadline + Duration::from_millis(500) {
                        return Err(format!("a call to {name} took {took:?}"));
                    }
                    counts[3].fetch_add(1, Ordering::Relaxed);
                    match result {
                        Ok(r) if r.bytes() == &payload[..] => counts[0].fetch_add(1, Ordering::Relaxed),
                        Ok(_) => return Err(format!("{name} answered with other bytes")),
                        Err(e) if e.status() == Status::PeerDead => counts[1].fetch_add(1, Ordering::Relaxed),
                        Err(e) if e.status() == Status::Unavailable => {
                            std::thread::sleep(Duration::from_millis(1));
                            counts[2].fetch_add(1, Ordering::Relaxed)
                        }
                        Err(e) => return Err(format!("{name}: unexpected {e}")),
                    };
                }
                Ok(())
            })
        })
        .collect();
    // Waits for an instance of `name` other than the one with `killed` pid to be ready.
    let relaunched = |name: &str, killed: Option<u32>| -> Result<(), Error> {
        let until = Instant::now() + Duration::from_secs(20);
        loop {
            let pid = sup.peer(name).and_then(|p| p.pid());
            if sup.status(name) == Some(cellshm::CellStatus::Ready) && pid.is_some() && pid != killed {
                return Ok(());
            }
            if Instant::now() >= until {
                return Err(fail(format!("{name} was not relaunched ({:?})", sup.status(name))));
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    };
    let mut killed: Vec<Option<u32>> = vec![None; names.len()];
    let mut rng = 0x2545_f491_4f6c_dd1du64 ^ std::process::id() as u64;
    let started = Instant::now();
    for _ in 0..rounds {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let which = (rng % names.len() as u64) as usize;
        relaunched(&names[which], killed[which])?;
        std::thread::sleep(Duration::from_micros(rng % 20_000));
        if let Some(pid) = sup.peer(&names[which]).and_then(|p| p.pid()) {
            // SAFETY: kill takes no pointers.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
            killed[which] = Some(pid);
        }
    }
    for (name, pid) in names.iter().zip(&killed) {
        relaunched(name, *pid)?;
    }
    stop.store(true, Ordering::Relaxed);
    for caller in callers {
        caller.join().map_err(|_| fail("a caller panicked".into()))?.map_err(fail)?;
    }
    // Every pool free, every launched cell accounted for, no slot lost.
    std::thread::sleep(Duration::from_millis(50));
    let snap = cellshm::snapshot(sup.hub().name())?;
    let active: Vec<_> = snap.peers.iter().filter(|p| p.state == cellshm::PeerSlotState::Active).collect();
    if active.len() != names.len() {
        return Err(fail(format!("{} active slots for {} cells: {:?}", active.len(), names.len(), snap.peers)));
    }
    for p in &active {
        if p.host_pool_in_use.iter().chain(&p.cell_pool_in_use).any(|&n| n != 0) {
            return Err(fail(format!("slots still in use: {p:?}")));
        }
    }
    let mut spare = Vec::new();
    for i in 0..max_peers as usize - names.len() {
        spare.push(sup.hub().add_peer(&format!("spare-{i}"), PeerOptions::default()).map_err(|e| {
            fail(format!(
                "peer slot lost: only {i} of {} spare slots could be reserved: {e}",
                max_peers as usize - names.len()
            ))
        })?);
    }
    println!(
        "chaos: {rounds} kills in {:.1} s; {} calls: {} ok, {} PEER_DEAD, {} unavailable while restarting; pools free; no slot lost",
        started.elapsed().as_secs_f64(),
        counts[3].load(Ordering::Relaxed),
        counts[0].load(Ordering::Relaxed),
        counts[1].load(Ordering::Relaxed),
        counts[2].load(Ordering::Relaxed)
    );
    drop(spare);
    Ok(())
}

// ----- benchmarks --------------------------------------------------------------------

struct Sampler {
    samples: Vec<u64>,
}

impl Sampler {
    fn run(iterations: usize, warmup: usize, mut once: impl FnMut()) -> Sampler {
        for _ in 0..warmup {
            once();
        }
        let mut samples = Vec::with_capacity(iterations);
        for _ in 0..iterations {
            let t = Instant::now();
            once();
            samples.push(t.elapsed().as_nanos() as u64);
        }
        samples.sort_unstable();
        Sampler { samples }
    }

    fn percentile(&self, p: f64) -> u64 {
        let i = ((self.samples.len() as f64 - 1.0) * p).round() as usize;
        self.samples[i]
    }

    fn report(&self, name: &str) -> u64 {
        let p50 = self.percentile(0.50);
        println!("{name} p50_ns={p50} p99_ns={}", self.percentile(0.99));
        p50
    }
}

fn self_exe() -> Result<std::path::PathBuf, Error> {
    std::env::current_exe().map_err(|e| Error::system("locating the cellshm binary", e))
}

fn bench(quick: bool) -> Result<(), Error> {
    let scale = if quick { 10 } else { 1 };
    let n_fast = 200_000 / scale;
    let n_block = 20_000 / scale;
    let n_large = 2_000 / scale;
    println!(
        "# round trips between two processes, {} cpus, all measured in this run; samples: {n_fast} (spin/adaptive), {n_block} (block), {n_large} (1 MiB)",
        num_cpus()
    );

    let shm_floor = floor_shm(n_fast)?.report("floor_shm_spin_pingpong_64B");
    let sock_floor = floor_socket(n_block)?.report("floor_socketpair_pingpong_64B");

    let mut p50s = Vec::new();
    for (name, wait, n, size) in [
        ("cellshm_rtt_16B_inline_spin", WaitStrategy::Spin, n_fast, 16),
        ("cellshm_rtt_64B_spin", WaitStrategy::Spin, n_fast, 64),
        ("cellshm_rtt_64B_adaptive", WaitStrategy::default(), n_fast, 64),
        ("cellshm_rtt_64B_block", WaitStrategy::Block, n_block, 64),
    ] {
        let (hub, peer, mut child) = spawn_bench_cell(wait)?;
        let opts = CallOptions::default();
        let payload = vec![7u8; size];
        let s = Sampler::run(n, n / 10, || {
            let r = peer.call("Echo.echo", &payload, &opts).expect("echo");
            assert_eq!(r.len(), size);
        });
        p50s.push((name, s.report(name)));
        peer.shutdown(Duration::from_secs(1));
        drop(hub);
        let _ = child.wait();
    }

    // 1 MiB each way, written in place on both sides.
    let (hub, peer, mut child) = spawn_bench_cell(WaitStrategy::Spin)?;
    let big = peer.max_payload();
    let opts = CallOptions::default();
    let s = Sampler::run(n_large, n_large / 10, || {
        let r = peer
            .call_with(
                "Echo.echo",
                big,
                |buf| {
                    buf.fill(0x5A);
                    buf.len()
                },
                &opts,
            )
            .expect("echo 1 MiB");
        assert_eq!(r.len(), big);
    });
    s.report("cellshm_rtt_1MiB_in_place_spin");
    let mut src = vec![0x5Au8; big];
    let mut dst = vec![0u8; big];
    let m = Sampler::run(n_large, n_large / 10, || {
        src[0] = src[0].wrapping_add(1);
        dst.copy_from_slice(&src);
        std::hint::black_box(&dst);
    });
    m.report("floor_memcpy_1MiB_x1");
    peer.shutdown(Duration::from_secs(1));
    drop(hub);
    let _ = child.wait();

    // The C API caller, when `make bench` built it (CELLSHM_C_BENCH=path): paired with the
    // Rust API in alternating rounds, so machine drift hits both alike.
    if let Some(program) = std::env::var_os("CELLSHM_C_BENCH") {
        bench_c_api_paired(&program, n_fast)?;
    }
    bench_streams(quick)?;
    let spin = p50s[1].1;
    let block = p50s[3].1;
    println!(
        "# spin p50 {spin} ns = {:.1}x the shm floor ({shm_floor} ns); block p50 {block} ns = {:.2}x the socketpair floor ({sock_floor} ns)",
        spin as f64 / shm_floor.max(1) as f64,
        block as f64 / sock_floor.max(1) as f64
    );
    Ok(())
}

/// Stream throughput: the cell writes every byte of each chunk in place (`Stream.fill`),
/// the host receives it and checks its first and last byte; beside a single-thread
/// memcpy of the same chunk size, measured in this run.
fn bench_streams(quick: bool) -> Result<(), Error> {
    const ROUNDS: usize = 5;
    let total_bytes: usize = if quick { 64 << 20 } else { 512 << 20 };
    let config = HubConfig {
        slot_classes: vec![
            SlotClass { slot_size: 256, slot_count: 256 },
            SlotClass { slot_size: 64 << 10, slot_count: 96 },
            SlotClass { slot_size: 1 << 20, slot_count: 16 },
        ],
        ..HubConfig::default()
    };
    println!("# streams: {} MiB per round, {ROUNDS} rounds, median round reported", total_bytes >> 20);
    for chunk in [64usize << 10, 1 << 20] {
        let n = total_bytes / chunk;
        // Measured before the cell exists: its receive thread would share our 2 cores.
        let floor = memcpy_rate(chunk, n.max(64));
        let wait =
            if std::env::var_os("CELLSHM_BENCH_SPIN").is_some() { WaitStrategy::Spin } else { WaitStrategy::default() };
        let (hub, peer, mut child) = spawn_bench_cell_with(config.clone(), wait)?;
        let mut rates = Vec::new();
        let mut gaps = Vec::new();
        for _ in 0..ROUNDS {
            let request: Vec<u8> = [n as u32, chunk as u32].iter().flat_map(|v| v.to_le_bytes()).collect();
            let started = Instant::now();
            let mut last = started;
            let mut received = 0usize;
            for (i, item) in peer.open_stream("Stream.fill", &request, &CallOptions::default())?.enumerate() {
                let item = item?;
                // Checked in place: a copy of each chunk is not what this case measures.
                let bytes = item.payload();
                assert!(bytes.len() == chunk && bytes.get(0) == Some(i as u8) && bytes.get(chunk - 1) == Some(i as u8));
                received += bytes.len();
                let now = Instant::now();
                gaps.push((now - last).as_nanos() as u64);
                last = now;
            }
            rates.push(received as f64 / started.elapsed().as_secs_f64() / 1e9);
        }
        rates.sort_by(|a, b| a.total_cmp(b));
        gaps.sort_unstable();
        let median = rates[ROUNDS / 2];
        println!(
            "cellshm_stream_{}KiB_in_place gbps_median={median:.2} gbps_min={:.2} chunk_gap_p50_ns={} chunk_gap_p99_ns={} floor_memcpy_gbps={floor:.2} ratio={:.2}",
            chunk >> 10,
            rates[0],
            gaps[gaps.len() / 2],
            gaps[gaps.len() * 99 / 100],
            median / floor
        );
        peer.shutdown(Duration::from_secs(1));
        drop(hub);
        let _ = child.wait();
    }
    // Eight streams of 256 KiB chunks at once on one peer.
    let config = HubConfig {
        slot_classes: vec![
            SlotClass { slot_size: 256, slot_count: 256 },
            SlotClass { slot_size: 256 << 10, slot_count: 8 * cellshm::STREAM_WINDOW + 8 },
        ],
        ..HubConfig::default()
    };
    let chunk = 256usize << 10;
    let per_stream = total_bytes / 8 / chunk;
    let floor = memcpy_rate(chunk, per_stream * 8);
    let (hub, peer, mut child) = spawn_bench_cell_with(config, WaitStrategy::default())?;
    let peer = std::sync::Arc::new(peer);
    let (mut rates, mut unary) = (Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        let started = Instant::now();
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let peer = peer.clone();
                std::thread::spawn(move || -> Result<usize, Error> {
                    let request: Vec<u8> =
                        [per_stream as u32, chunk as u32].iter().flat_map(|v| v.to_le_bytes()).collect();
                    let mut received = 0;
                    for item in peer.open_stream("Stream.fill", &request, &CallOptions::default())? {
                        received += item?.len();
                    }
                    Ok(received)
                })
            })
            .collect();
        // Unary calls on the same peer meanwhile, one every 100 µs.
        while !threads.iter().all(|t| t.is_finished()) {
            let t = Instant::now();
            peer.call("Echo.echo", &[7u8; 64], &CallOptions::timeout(Duration::from_secs(5)))?;
            unary.push(t.elapsed().as_nanos() as u64);
            std::thread::sleep(Duration::from_micros(100));
        }
        let mut received = 0;
        for t in threads {
            received += t.join().map_err(|_| Error::new(Status::Internal, "stream thread panicked"))??;
        }
        rates.push(received as f64 / started.elapsed().as_secs_f64() / 1e9);
    }
    rates.sort_by(|a, b| a.total_cmp(b));
    unary.sort_unstable();
    if !unary.is_empty() {
        println!(
            "cellshm_unary_64B_during_8_streams p50_ns={} p99_ns={} calls={}",
            unary[unary.len() / 2],
            unary[unary.len() * 99 / 100],
            unary.len()
        );
    }
    println!(
        "cellshm_8_streams_256KiB_aggregate gbps_median={:.2} gbps_min={:.2} floor_memcpy_256KiB_gbps={:.2}",
        rates[ROUNDS / 2],
        rates[0],
        floor
    );
    peer.shutdown(Duration::from_secs(1));
    drop(hub);
    let _ = child.wait();
    Ok(())
}

/// Single-thread memcpy of `chunk`-byte buffers, GB/s at the median copy, from a
/// source that changes every copy (so no copy is elided or served from a cached result).
fn memcpy_rate(chunk: usize, copies: usize) -> f64 {
    let mut src = vec![0x5Au8; chunk];
    let mut dst = vec![0u8; chunk];
    let s = Sampler::run(copies, copies / 10, || {
        src[0] = src[0].wrapping_add(1);
        dst.copy_from_slice(&src);
        std::hint::black_box(&dst);
    });
    chunk as f64 / s.percentile(0.5) as f64
}

/// Alternates rounds of the Rust API and the C-API caller (tests/c/bench_c_caller.c),
/// each against a fresh Spin-mode cell, and prints the median over rounds of each side's
/// p50 and p99.
fn bench_c_api_paired(program: &std::ffi::OsStr, iterations: usize) -> Result<(), Error> {
    const ROUNDS: usize = 6;
    let per_round = (iterations / ROUNDS).max(1000);
    let (mut rust, mut c) = (Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        let (hub, peer, mut child) = spawn_bench_cell(WaitStrategy::Spin)?;
        let payload = [7u8; 64];
        let s = Sampler::run(per_round, per_round / 10, || {
            let r = peer.call("Echo.echo", &payload, &CallOptions::default()).expect("echo");
            assert_eq!(r.len(), 64);
        });
        rust.push((s.percentile(0.50), s.percentile(0.99)));
        peer.shutdown(Duration::from_secs(1));
        drop(hub);
        let _ = child.wait();

        let out = Command::new(program)
            .arg(per_round.to_string())
            .arg(self_exe()?)
            .arg("__cell")
            .output()
            .map_err(|e| Error::system(format!("running {}", program.to_string_lossy()), e))?;
        if !out.status.success() {
            return Err(Error::new(
                Status::Internal,
                format!("the C bench failed: {}", String::from_utf8_lossy(&out.stderr)),
            ));
        }
        let text = String::from_utf8_lossy(&out.stdout);
        let field =
            |name: &str| text.split_whitespace().find_map(|w| w.strip_prefix(name)).and_then(|v| v.parse::<u64>().ok());
        match (field("p50_ns="), field("p99_ns=")) {
            (Some(p50), Some(p99)) => c.push((p50, p99)),
            _ => return Err(Error::new(Status::Internal, format!("unexpected C bench output: {text}"))),
        }
    }
    let median = |v: &mut Vec<u64>| {
        v.sort_unstable();
        v[v.len() / 2]
    };
    let report = |name: &str, rounds: &[(u64, u64)]| {
        let p50 = median(&mut rounds.iter().map(|r| r.0).collect());
        println!("{name} p50_ns={p50} p99_ns={}", median(&mut rounds.iter().map(|r| r.1).collect()));
        p50
    };
    let rust_p50 = report("cellshm_rtt_64B_spin_rust_api_paired", &rust);
    let c_p50 = report("cellshm_rtt_64B_spin_c_api_paired", &c);
    println!(
        "# C API vs Rust API, {ROUNDS} alternating rounds of {per_round}: C p50 {c_p50} ns = {:.2}x Rust p50 {rust_p50} ns",
        c_p50 as f64 / rust_p50.max(1) as f64
    );
    Ok(())
}

fn num_cpus() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
}

fn spawn_bench_cell(wait: WaitStrategy) -> Result<(Hub, cellshm::Peer, std::process::Child), Error> {
    spawn_bench_cell_with(HubConfig::default(), wait)
}

fn spawn_bench_cell_with(
    config: HubConfig,
    wait: WaitStrategy,
) -> Result<(Hub, cellshm::Peer, std::process::Child), Error> {
    let hub = Hub::create(config)?;
    let ticket = hub.add_peer("bench", PeerOptions { wait, ..PeerOptions::default() })?;
    let wait_text = match wait {
        WaitStrategy::Spin => "spin".to_string(),
        WaitStrategy::Block => "block".to_string(),
        WaitStrategy::Adaptive { spin } => format!("adaptive:{}", spin.as_micros()),
    };
    let mut cmd = Command::new(self_exe()?);
    cmd.arg("__cell").env("CELLSHM_WAIT", wait_text).env("CELLSHM_WORKERS", "2");
    let (peer, child) = ticket.spawn(&mut cmd)?;
    peer.wait_ready(Duration::from_secs(10))?;
    Ok((hub, peer, child))
}

/// Raw shared-memory ping-pong: two cache lines in a shared file, each side spins.
fn floor_shm(iterations: usize) -> Result<Sampler, Error> {
    let path = std::env::temp_dir().join(format!("cellshm-floor-{}.shm", std::process::id()));
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&path)
        .map_err(|e| Error::system("creating the floor file", e))?;
    file.set_len(4096).map_err(|e| Error::system("sizing the floor file", e))?;
    let lines = map_lines(&file)?;
    let mut child = Command::new(self_exe()?)
        .arg("__floor-shm")
        .arg(&path)
        .arg((iterations + iterations / 10).to_string())
        .spawn()
        .map_err(|e| Error::system("spawning the floor child", e))?;
    let (ping, pong) = (&lines[0], &lines[8]);
    let mut seq = 0u64;
    let s = Sampler::run(iterations, iterations / 10, || {
        seq += 1;
        ping.store(seq, Ordering::Release);
        while pong.load(Ordering::Acquire) != seq {
            std::hint::spin_loop();
        }
    });
    let _ = child.wait();
    let _ = std::fs::remove_file(&path);
    Ok(s)
}

fn map_lines(file: &std::fs::File) -> Result<&'static [AtomicU64], Error> {
    // SAFETY: maps 4096 bytes of a file we sized to 4096; the mapping is leaked on
    // purpose (the benchmark process is short-lived) so the 'static slice stays valid.
    let ptr = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            4096,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            file.as_raw_fd(),
            0,
        )
    };
    if ptr == libc::MAP_FAILED {
        return Err(Error::system("mapping the floor file", std::io::Error::last_os_error()));
    }
    // SAFETY: page-aligned, 4096 bytes = 512 AtomicU64, only accessed atomically.
    Ok(unsafe { std::slice::from_raw_parts(ptr as *const AtomicU64, 512) })
}

fn floor_shm_child(args: &[String]) -> Result<(), Error> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&args[0])
        .map_err(|e| Error::system("opening the floor file", e))?;
    let rounds: u64 = args[1].parse().map_err(|_| usage())?;
    let lines = map_lines(&file)?;
    let (ping, pong) = (&lines[0], &lines[8]);
    for seq in 1..=rounds {
        while ping.load(Ordering::Acquire) != seq {
            std::hint::spin_loop();
        }
        pong.store(seq, Ordering::Release);
    }
    Ok(())
}

/// Blocking socketpair ping-pong with 64-byte messages.
fn floor_socket(iterations: usize) -> Result<Sampler, Error> {
    let mut fds = [0; 2];
    // SAFETY: fds has room for two descriptors.
    if unsafe { libc::socketpair(libc::AF_UNIX, libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC, 0, fds.as_mut_ptr()) } != 0 {
        return Err(Error::system("socketpair", std::io::Error::last_os_error()));
    }
    // SAFETY: both fds are fresh and owned by nobody else.
    let (ours, theirs) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    let child_fd = theirs.as_raw_fd();
    let mut cmd = Command::new(self_exe()?);
    cmd.arg("__floor-sock");
    // SAFETY: dup2 is async-signal-safe; the duplicate on fd 3 is not CLOEXEC.
    unsafe {
        cmd.pre_exec(move || if libc::dup2(child_fd, 3) < 0 { Err(std::io::Error::last_os_error()) } else { Ok(()) });
    }
    let mut child = cmd.spawn().map_err(|e| Error::system("spawning the floor child", e))?;
    drop(theirs);
    let fd = ours.as_raw_fd();
    let mut buf = [0u8; 64];
    let s = Sampler::run(iterations, iterations / 10, || {
        // SAFETY: fd is open; buf is a live 64-byte buffer.
        unsafe {
            libc::write(fd, buf.as_ptr().cast(), 64);
            libc::read(fd, buf.as_mut_ptr().cast(), 64);
        }
    });
    drop(ours);
    let _ = child.wait();
    Ok(s)
}

fn floor_socket_child(_args: &[String]) -> Result<(), Error> {
    let mut buf = [0u8; 64];
    loop {
        // SAFETY: fd 3 was placed by the parent; buf is a live 64-byte buffer.
        let n = unsafe { libc::read(3, buf.as_mut_ptr().cast(), 64) };
        if n <= 0 {
            return Ok(());
        }
        // SAFETY: as above.
        unsafe { libc::write(3, buf.as_ptr().cast(), n as usize) };
    }
}
