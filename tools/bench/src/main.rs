//! `cellshm-bench`: round trips and streams beside their floors (a raw shared-memory
//! ping-pong, a socketpair ping-pong, memcpy), all measured in one run.
//!
//! ```text
//! cellshm-bench [--quick] [--json]
//! ```
//! `--json` prints one JSON object per case instead of `name key=value ...` lines.
//! With `CELLSHM_C_BENCH=path` the C API caller is measured paired with the Rust API.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::{Command, ExitCode};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use cellshm::{CallOptions, Error, Hub, HubConfig, PeerOptions, SlotClass, Status, WaitStrategy};

fn main() -> ExitCode {
    // Behave like other Unix tools when stdout is a closed pipe (`cellshm-bench | head`).
    // SAFETY: restoring the default disposition of SIGPIPE at startup, before any thread.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        // The cell this benchmark spawns: the test kit's test cell.
        Some("__cell") => cellshm_testkit::run_test_cell(&args[1..]),
        Some("__floor-shm") => floor_shm_child(&args[1..]),
        Some("__floor-sock") => floor_socket_child(&args[1..]),
        Some("-h" | "--help" | "help") => {
            println!("{}", usage().message());
            Ok(())
        }
        _ if args.iter().all(|a| a == "--quick" || a == "--json") => {
            JSON.store(args.iter().any(|a| a == "--json"), Ordering::Relaxed);
            bench(args.iter().any(|a| a == "--quick"))
        }
        _ => Err(usage()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cellshm-bench: {e}");
            ExitCode::from(if e.status() == Status::InvalidArgument { 2 } else { 1 })
        }
    }
}

fn usage() -> Error {
    Error::new(Status::InvalidArgument, "usage: cellshm-bench [--quick] [--json]")
}

/// Set by `--json`: cases are printed as JSON objects, notes are left out.
static JSON: AtomicBool = AtomicBool::new(false);

/// Prints one case: `name k=v ...`, or with `--json` `{"case":"name","k":v,...}`.
fn emit(name: &str, fields: &[(&str, String)]) {
    if JSON.load(Ordering::Relaxed) {
        let body: Vec<String> = fields.iter().map(|(k, v)| format!("\"{k}\":{v}")).collect();
        println!("{{\"case\":\"{name}\",{}}}", body.join(","));
    } else {
        let body: Vec<String> = fields.iter().map(|(k, v)| format!("{k}={v}")).collect();
        println!("{name} {}", body.join(" "));
    }
}

/// Prints a `# ...` note (not in `--json` output).
fn note(text: impl std::fmt::Display) {
    if !JSON.load(Ordering::Relaxed) {
        println!("# {text}");
    }
}

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
        emit(name, &[("p50_ns", p50.to_string()), ("p99_ns", self.percentile(0.99).to_string())]);
        p50
    }
}

fn self_exe() -> Result<std::path::PathBuf, Error> {
    std::env::current_exe().map_err(|e| Error::system("locating the cellshm-bench binary", e))
}

fn bench(quick: bool) -> Result<(), Error> {
    let scale = if quick { 10 } else { 1 };
    let n_fast = 200_000 / scale;
    let n_block = 20_000 / scale;
    let n_large = 2_000 / scale;
    note(format_args!(
        "round trips between two processes, {} cpus, all measured in this run; samples: {n_fast} (spin/adaptive), {n_block} (block), {n_large} (1 MiB)",
        num_cpus()
    ));

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
    note(format_args!(
        "spin p50 {spin} ns = {:.1}x the shm floor ({shm_floor} ns); block p50 {block} ns = {:.2}x the socketpair floor ({sock_floor} ns)",
        spin as f64 / shm_floor.max(1) as f64,
        block as f64 / sock_floor.max(1) as f64
    ));
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
    note(format_args!("streams: {} MiB per round, {ROUNDS} rounds, median round reported", total_bytes >> 20));
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
        emit(
            &format!("cellshm_stream_{}KiB_in_place", chunk >> 10),
            &[
                ("gbps_median", format!("{median:.2}")),
                ("gbps_min", format!("{:.2}", rates[0])),
                ("chunk_gap_p50_ns", gaps[gaps.len() / 2].to_string()),
                ("chunk_gap_p99_ns", gaps[gaps.len() * 99 / 100].to_string()),
                ("floor_memcpy_gbps", format!("{floor:.2}")),
                ("ratio", format!("{:.2}", median / floor)),
            ],
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
        emit(
            "cellshm_unary_64B_during_8_streams",
            &[
                ("p50_ns", unary[unary.len() / 2].to_string()),
                ("p99_ns", unary[unary.len() * 99 / 100].to_string()),
                ("calls", unary.len().to_string()),
            ],
        );
    }
    emit(
        "cellshm_8_streams_256KiB_aggregate",
        &[
            ("gbps_median", format!("{:.2}", rates[ROUNDS / 2])),
            ("gbps_min", format!("{:.2}", rates[0])),
            ("floor_memcpy_256KiB_gbps", format!("{floor:.2}")),
        ],
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
        emit(
            name,
            &[("p50_ns", p50.to_string()), ("p99_ns", median(&mut rounds.iter().map(|r| r.1).collect()).to_string())],
        );
        p50
    };
    let rust_p50 = report("cellshm_rtt_64B_spin_rust_api_paired", &rust);
    let c_p50 = report("cellshm_rtt_64B_spin_c_api_paired", &c);
    note(format_args!(
        "C API vs Rust API, {ROUNDS} alternating rounds of {per_round}: C p50 {c_p50} ns = {:.2}x Rust p50 {rust_p50} ns",
        c_p50 as f64 / rust_p50.max(1) as f64
    ));
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
