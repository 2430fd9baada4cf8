//! `cellshm-testkit`: the programs cellshm's tests run (never shipped).
//!
//! ```text
//! cellshm-testkit cell                  the test cell (tests, chaos, matrix)
//! cellshm-testkit attach HUB NAME       the test cell, joining a running hub by attaching
//! cellshm-testkit host [--name N] [--attach] [-- CELL ARGS...]...   a host for kill tests
//! cellshm-testkit kill-hosts N -- CELL...   SIGKILLs N such hosts; checks nothing is left
//! cellshm-testkit chaos N -- CELL...    N SIGKILLs of supervised cells under load
//! cellshm-testkit matrix-host -- CELL...  the Rust host of the cross-language matrix
//! cellshm-testkit hostile | bad-hello [request-first] | ping-flood | request-flood N | notify-flood N |
//!                 stream-flood N | attach-flood N UID/NAME | pour-and-watch | mute
//!                 | forged-tail | stream-ends eos|cancel | steal-bootstrap | idle-flood UID/NAME
//!                                                              hand-made hostile cells
//! ```

use cellshm::LinkEnd;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::process::{Command, ExitCode};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use cellshm::{CallOptions, Cell, Error, Hub, HubConfig, PeerOptions, Status};
use cellshm_testkit::raw;
use cellshm_testkit::{run_test_cell, test_cell};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("cell") => run_test_cell(&args[1..]),
        Some("attach") => match (args.get(1), args.get(2)) {
            (Some(hub), Some(name)) => cellshm::CellOptions::from_env()
                .and_then(|options| Cell::attach(hub, name, options))
                .and_then(test_cell),
            _ => Err(usage()),
        },
        Some("host") => test_host(&args[1..]),
        Some("kill-hosts") => kill_hosts(&args[1..]),
        Some("hostile") => raw::hostile(),
        Some("bad-hello") => raw::bad_hello(args.get(1).map(String::as_str) == Some("request-first")),
        Some("ping-flood") => raw::flood(raw::Flood::Pings),
        Some(flood @ ("request-flood" | "notify-flood" | "stream-flood")) => {
            match args.get(1).and_then(|n| n.parse().ok()) {
                Some(n) if flood == "request-flood" => raw::flood(raw::Flood::Requests(n)),
                Some(n) if flood == "notify-flood" => raw::flood(raw::Flood::Notifications(n)),
                Some(n) => raw::flood(raw::Flood::Streams(n)),
                None => Err(usage()),
            }
        }
        Some("attach-flood") => raw::attach_flood(&args[1..]),
        Some("pour-and-watch") => raw::pour_and_watch(),
        Some("mute") => raw::mute(),
        Some("forged-tail") => raw::forged_tail(),
        Some("steal-bootstrap") => raw::steal_bootstrap(),
        Some("idle-flood") => raw::idle_flood(&args[1..]),
        Some("stream-ends") => raw::stream_ends(&args[1..]),
        Some("matrix-host") => matrix_host(&args[1..]),
        Some("chaos") => chaos(&args[1..]),
        _ => Err(usage()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cellshm-testkit: {e}");
            ExitCode::from(if e.status() == Status::InvalidArgument { 2 } else { 1 })
        }
    }
}

fn usage() -> Error {
    Error::new(
        Status::InvalidArgument,
        "usage: cellshm-testkit cell | attach HUB NAME | host ... | kill-hosts N -- CELL... | chaos N -- CELL... | \
         matrix-host -- CELL... | hostile | bad-hello [request-first] | ping-flood | request-flood N | notify-flood N | \
         stream-flood N | attach-flood N UID/NAME | pour-and-watch | mute | forged-tail | stream-ends eos|cancel | steal-bootstrap | idle-flood UID/NAME",
    )
}

fn self_exe() -> Result<std::path::PathBuf, Error> {
    std::env::current_exe().map_err(|e| Error::system("locating the cellshm-testkit binary", e))
}

/// Splits `-- CMD ARGS... -- CMD ARGS...` into commands.
fn commands(args: &[String]) -> Vec<Vec<String>> {
    args.split(|a| a == "--").filter(|c| !c.is_empty()).map(<[String]>::to_vec).collect()
}

/// `host [--name NAME] [--attach] [-- CELL ARGS...]...`: a host that spawns the cells
/// given (one test cell if none), prints `cell_pid=N` for each once it is ready and then
/// `ready`, and idles: tests kill it to check that its cells follow and nothing of the
/// hub remains.
/// `host [--attach] [--name NAME] [-- CELL...]`: a hub with the cells, `ready NAME` on
/// stdout once they are; it lives until the thread that started it ends (tests kill it
/// earlier). No timer: a flood that takes minutes on a busy machine must not outlive it.
fn test_host(args: &[String]) -> Result<(), Error> {
    let parent = std::os::unix::process::parent_id();
    // SAFETY: prctl(PR_SET_PDEATHSIG) takes a signal number and changes only this process.
    if unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) } != 0 {
        return Err(Error::system("prctl(PR_SET_PDEATHSIG)", std::io::Error::last_os_error()));
    }
    if std::os::unix::process::parent_id() != parent {
        return Ok(()); // the starter ended before the signal was armed
    }
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
        cells.push(vec![self_exe()?.display().to_string(), "cell".into()]);
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
    drop(out);
    loop {
        std::thread::park();
    }
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

/// `kill-hosts N -- CELL... -- CELL...`: N times, starts a host (`host --attach`)
/// with the given cells, SIGKILLs it once they are ready, and checks that every cell
/// exits within 1 s and that nothing new is left in /dev/shm, $XDG_RUNTIME_DIR, /tmp or
/// the abstract socket namespace.
fn kill_hosts(args: &[String]) -> Result<(), Error> {
    let rounds: usize = args.first().and_then(|n| n.parse().ok()).ok_or_else(usage)?;
    let cells = &args[1..];
    // Only what a hub could have made is looked at, not what other programs write: the
    // hosts and their cells get a TMPDIR and an XDG_RUNTIME_DIR of their own (anything in
    // them is left behind), /dev/shm is checked for names of ours, and the abstract
    // namespace for @cellshm sockets.
    let private = std::env::temp_dir().join(format!("cellshm-kill-hosts-{}", std::process::id()));
    let (tmp, runtime) = (private.join("tmp"), private.join("run"));
    for dir in [&tmp, &runtime] {
        std::fs::create_dir_all(dir).map_err(|e| Error::system("making a private directory", e))?;
    }
    let ours = |name: &String| name.contains("cellshm");
    let shm_before: std::collections::BTreeSet<String> = entries("/dev/shm").into_iter().filter(ours).collect();
    let sockets_before = abstract_cellshm_sockets();
    let fail = |m: String| Error::new(Status::Internal, m);
    let started = Instant::now();
    let mut slowest = Duration::ZERO;
    for round in 0..rounds {
        let mut host = Command::new(self_exe()?)
            .args(["host", "--attach", "--name", &format!("kill-{}-{round}", std::process::id())])
            .args(cells)
            .env("CELLSHM_QUIET", "1")
            .env("TMPDIR", &tmp)
            .env("XDG_RUNTIME_DIR", &runtime)
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
    for dir in [&tmp, &runtime] {
        let left = entries(&dir.display().to_string());
        if !left.is_empty() {
            return Err(fail(format!("left behind in {}: {left:?}", dir.display())));
        }
    }
    let _ = std::fs::remove_dir_all(&private);
    let shm: Vec<_> = entries("/dev/shm").into_iter().filter(|n| ours(n) && !shm_before.contains(n)).collect();
    if !shm.is_empty() {
        return Err(fail(format!("left behind in /dev/shm: {shm:?}")));
    }
    let new: Vec<_> = abstract_cellshm_sockets().difference(&sockets_before).cloned().collect();
    if !new.is_empty() {
        return Err(fail(format!("abstract sockets left behind: {new:?}")));
    }
    println!(
        "kill-hosts: {rounds} hosts SIGKILLed with {} cells each in {:.1} s; every cell gone within {} ms; nothing left in their TMPDIR, XDG_RUNTIME_DIR, /dev/shm or the abstract namespace",
        commands(cells).len().max(1),
        started.elapsed().as_secs_f64(),
        slowest.as_millis(),
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
    // 2b. a status number this side does not know arrives as it was sent
    let mut request = 142u32.to_le_bytes().to_vec();
    request.extend_from_slice(b"from the future");
    match peer.call("Test.fail", &request, &opts) {
        Err(e) if e.status() == Status::Unknown && e.code() == 142 && e.message().contains("from the future") => {}
        other => return Err(fail(&format!("Test.fail with status 142 gave {other:?}"))),
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

/// The chaos test: `chaos ROUNDS -- CELL... [-- CELL...]`. Supervises the cells, keeps
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
    // SAFETY: geteuid has no preconditions.
    sup.hub().enable_inspect(&[unsafe { libc::geteuid() }]);
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
