//! `cellshm-bench`: round trips and streams beside their floors (a raw shared-memory
//! ping-pong, a socketpair ping-pong, memcpy) and peers (iceoryx2 request-response, gRPC
//! over a Unix socket with tonic), all measured in one run, in interleaved rounds.
//!
//! ```text
//! cellshm-bench [--quick] [--json]
//! ```
//! `--json` prints one object, `{"cases": {NAME: {"p50_ns": n, "p99_ns": n} | {"gbps": x} |
//! {"calls_per_s": x}}}`,
//! instead of a `NAME key=value ...` line per case and `# ...` notes.
//! With `CELLSHM_C_BENCH=path` the C API caller is a case too (`cellshm_64B_spin_c_api`).

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::{Command, ExitCode};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use cellshm::LinkEnd;
use cellshm::{CallOptions, Error, Hub, HubConfig, PeerOptions, SlotClass, Status, WaitStrategy};

mod asynchronous;
mod grpc;
mod peers;
mod pubsub;
mod typed;

fn main() -> ExitCode {
    // Behave like other Unix tools when stdout is a closed pipe (`cellshm-bench | head`).
    // SAFETY: restoring the default disposition of SIGPIPE at startup, before any thread.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        // The cell this benchmark spawns: the test kit's test cell, plus kv.Store.
        Some("__cell") => typed::bench_cell(&args[1..]),
        Some("__floor-shm") => floor_shm_child(&args[1..]),
        Some("__floor-sock") => floor_socket_child(&args[1..]),
        Some("__iceoryx2-server") => peers::iceoryx2_server(&args[1..]),
        Some("__iceoryx2-pubsub") => pubsub::iceoryx2_child(&args[1..]),
        Some("__grpc-server") => grpc::grpc_server(&args[1..]),
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

/// Set by `--json`: one JSON object at the end instead of a line per case.
static JSON: AtomicBool = AtomicBool::new(false);

/// Prints a `# ...` note (not in `--json` output).
fn note(text: impl std::fmt::Display) {
    if !JSON.load(Ordering::Relaxed) {
        println!("# {text}");
    }
}

/// Round-trip times of `iterations` calls of `once`, after a tenth as many to warm up.
fn sample(iterations: usize, mut once: impl FnMut()) -> Vec<u64> {
    for _ in 0..iterations / 10 {
        once();
    }
    let mut samples = Vec::with_capacity(iterations);
    for _ in 0..iterations {
        let t = Instant::now();
        once();
        samples.push(t.elapsed().as_nanos() as u64);
    }
    samples
}

/// The value at quantile `q` of sorted samples.
fn quantile<T: Copy>(sorted: &[T], q: f64) -> T {
    sorted[((sorted.len() as f64 - 1.0) * q).round() as usize]
}

/// What the cases measured, by name, in the order they first reported.
#[derive(Default)]
struct Results {
    order: Vec<String>,
    latencies: std::collections::HashMap<String, Vec<u64>>,
    /// Cases that report each round's p50 and p99 themselves (another program).
    summaries: std::collections::HashMap<String, Vec<(u64, u64)>>,
    rates: std::collections::HashMap<String, Vec<f64>>,
    /// Calls per second, per round.
    throughputs: std::collections::HashMap<String, Vec<f64>>,
    /// Samples per second (publish/subscribe), per round.
    sample_rates: std::collections::HashMap<String, Vec<f64>>,
}

impl Results {
    fn seen(&mut self, name: &str) {
        if !self.order.iter().any(|n| n == name) {
            self.order.push(name.to_string());
        }
    }

    /// Round trips (ns) of one round of `name`: its p50 and p99 are over every round's.
    fn latency(&mut self, name: &str, samples: Vec<u64>) {
        self.seen(name);
        self.latencies.entry(name.to_string()).or_default().extend(samples);
    }

    /// One round's p50 and p99 of `name`, measured elsewhere: the medians over rounds
    /// are reported.
    fn summary(&mut self, name: &str, p50: u64, p99: u64) {
        self.seen(name);
        self.summaries.entry(name.to_string()).or_default().push((p50, p99));
    }

    /// One round's rate of `name` (GB/s): the median round is reported.
    fn rate(&mut self, name: &str, gbps: f64) {
        self.seen(name);
        self.rates.entry(name.to_string()).or_default().push(gbps);
    }

    /// One round's calls per second of `name`: the median round is reported.
    fn per_second(&mut self, name: &str, calls: f64) {
        self.seen(name);
        self.throughputs.entry(name.to_string()).or_default().push(calls);
    }

    /// One round's samples per second of `name`: the median round is reported.
    fn samples_per_second(&mut self, name: &str, samples: f64) {
        self.seen(name);
        self.sample_rates.entry(name.to_string()).or_default().push(samples);
    }

    fn sample_rate(&self, name: &str) -> Option<f64> {
        let mut v = self.sample_rates.get(name)?.clone();
        v.sort_by(|a, b| a.total_cmp(b));
        (!v.is_empty()).then(|| quantile(&v, 0.5))
    }

    fn calls_per_second(&self, name: &str) -> Option<f64> {
        let mut v = self.throughputs.get(name)?.clone();
        v.sort_by(|a, b| a.total_cmp(b));
        (!v.is_empty()).then(|| quantile(&v, 0.5))
    }

    /// p50 and p99 of `name`: over every sample, or the medians of its rounds' own.
    fn percentiles(&self, name: &str) -> Option<(u64, u64)> {
        let median = |mut v: Vec<u64>| {
            v.sort_unstable();
            quantile(&v, 0.5)
        };
        if let Some(samples) = self.latencies.get(name).filter(|v| !v.is_empty()) {
            let mut v = samples.clone();
            v.sort_unstable();
            return Some((quantile(&v, 0.5), quantile(&v, 0.99)));
        }
        let rounds = self.summaries.get(name).filter(|v| !v.is_empty())?;
        Some((median(rounds.iter().map(|r| r.0).collect()), median(rounds.iter().map(|r| r.1).collect())))
    }

    fn p50(&self, name: &str) -> Option<u64> {
        self.percentiles(name).map(|(p50, _)| p50)
    }

    fn gbps(&self, name: &str) -> Option<f64> {
        let mut v = self.rates.get(name)?.clone();
        v.sort_by(|a, b| a.total_cmp(b));
        (!v.is_empty()).then(|| quantile(&v, 0.5))
    }

    /// `{"cases": {NAME: {"p50_ns": n, "p99_ns": n} | {"gbps": x} | {"calls_per_s": x}}}`,
    /// or a line per case.
    fn print(&self) {
        let mut entries = Vec::new();
        for name in &self.order {
            if let Some((p50, p99)) = self.percentiles(name) {
                entries.push((
                    name,
                    format!("\"p50_ns\":{p50},\"p99_ns\":{p99}"),
                    format!("p50_ns={p50} p99_ns={p99}"),
                ));
            } else if let Some(gbps) = self.gbps(name) {
                entries.push((name, format!("\"gbps\":{gbps:.2}"), format!("gbps={gbps:.2}")));
            } else if let Some(rate) = self.calls_per_second(name) {
                entries.push((name, format!("\"calls_per_s\":{rate:.0}"), format!("calls_per_s={rate:.0}")));
            } else if let Some(rate) = self.sample_rate(name) {
                entries.push((name, format!("\"rate\":{rate:.0}"), format!("rate={rate:.0}")));
            }
        }
        if JSON.load(Ordering::Relaxed) {
            let body: Vec<String> = entries.iter().map(|(n, json, _)| format!("\"{n}\":{{{json}}}")).collect();
            println!("{{\"cases\":{{{}}}}}", body.join(","));
        } else {
            for (name, _, text) in &entries {
                println!("{name} {text}");
            }
        }
    }
}

/// A benchmark case: one round of it at a time, setting up and tearing down its own
/// processes, so that no case's spinning threads share the cores with another's.
type Case<'a> = Box<dyn FnMut(&mut Results) -> Result<(), Error> + 'a>;

fn bench(quick: bool) -> Result<(), Error> {
    const ROUNDS: usize = 5;
    let scale = if quick { 10 } else { 1 };
    let n_fast = 200_000 / scale / ROUNDS;
    let n_block = 20_000 / scale / ROUNDS;
    let n_large = 2_000 / scale / ROUNDS;
    let stream_bytes: usize = if quick { 64 << 20 } else { 512 << 20 };
    // 64 KiB messages per gRPC stream case.
    let grpc_stream = (stream_bytes >> 16) / 4;
    note(format_args!(
        "two processes each, {} cpus; {ROUNDS} interleaved rounds of every case, so that drift hits all alike; \
         per round {n_fast} samples (spin/adaptive), {n_block} (block), {n_large} (1 MiB), {} MiB per stream case",
        num_cpus(),
        stream_bytes >> 20
    ));
    let mut cases: Vec<(&str, Case<'_>)> = vec![
        (
            "floor_shm_spin_64B",
            Box::new(|r| {
                r.latency("floor_shm_spin_64B", floor_shm(n_fast)?);
                Ok(())
            }),
        ),
        (
            "floor_socketpair_64B",
            Box::new(|r| {
                r.latency("floor_socketpair_64B", floor_socket(n_block)?);
                Ok(())
            }),
        ),
        (
            "floor_memcpy",
            Box::new(|r| {
                r.rate("floor_memcpy_64KiB", memcpy_rate(64 << 10, 2_000 / scale));
                r.rate("floor_memcpy_1MiB", memcpy_rate(1 << 20, n_large.max(20)));
                Ok(())
            }),
        ),
        ("cellshm_16B_spin", Box::new(|r| echo_case(r, "cellshm_16B_spin", WaitStrategy::Spin, n_fast, 16))),
        ("cellshm_64B_spin", Box::new(|r| echo_case(r, "cellshm_64B_spin", WaitStrategy::Spin, n_fast, 64))),
        (
            "cellshm_64B_adaptive",
            Box::new(|r| echo_case(r, "cellshm_64B_adaptive", WaitStrategy::default(), n_fast, 64)),
        ),
        ("cellshm_64B_async_tokio", Box::new(|r| asynchronous::one_at_a_time(r, n_fast))),
        ("cellshm_64B_async_tokio_concurrent", Box::new(|r| asynchronous::concurrent(r, n_fast))),
        ("cellshm_typed_get_64B_spin", Box::new(|r| typed_case(r, n_fast))),
        ("cellshm_64B_adaptive_3_cells", Box::new(|r| three_cells_case(r, n_block))),
        ("cellshm_64B_block", Box::new(|r| echo_case(r, "cellshm_64B_block", WaitStrategy::Block, n_block, 64))),
        ("cellshm_1MiB_spin", Box::new(|r| echo_in_place_case(r, "cellshm_1MiB_spin", n_large))),
        (
            "iceoryx2_rr_64B",
            Box::new(|r| {
                r.latency("iceoryx2_rr_64B", peers::iceoryx2_request_response(n_fast)?);
                Ok(())
            }),
        ),
        (
            "cellshm_pubsub_64B_1sub",
            Box::new(|r| measured(r, "cellshm_pubsub_64B_1sub", pubsub::cellshm_latency(1, n_fast))),
        ),
        (
            "iceoryx2_pubsub_64B_1sub",
            Box::new(|r| measured(r, "iceoryx2_pubsub_64B_1sub", pubsub::iceoryx2_latency(1, n_fast))),
        ),
        (
            "cellshm_pubsub_64B_4subs",
            Box::new(|r| measured(r, "cellshm_pubsub_64B_4subs", pubsub::cellshm_latency(4, n_fast / 10))),
        ),
        (
            "iceoryx2_pubsub_64B_4subs",
            Box::new(|r| measured(r, "iceoryx2_pubsub_64B_4subs", pubsub::iceoryx2_latency(4, n_fast / 10))),
        ),
        (
            "cellshm_pubsub_1MiB_1sub",
            Box::new(|r| {
                r.rate("cellshm_pubsub_1MiB_1sub", pubsub::cellshm_large_rate(n_large.max(20))?);
                Ok(())
            }),
        ),
        (
            "cellshm_pubsub_64B_1sub_rate",
            Box::new(|r| {
                r.samples_per_second("cellshm_pubsub_64B_1sub_rate", pubsub::cellshm_rate(n_fast * 5)?);
                Ok(())
            }),
        ),
        (
            "iceoryx2_pubsub_64B_1sub_rate",
            Box::new(|r| {
                r.samples_per_second("iceoryx2_pubsub_64B_1sub_rate", pubsub::iceoryx2_rate(n_fast * 5)?);
                Ok(())
            }),
        ),
        ("grpc_uds_64B", Box::new(|r| measured(r, "grpc_uds_64B", grpc::unary_direct(n_block, false)))),
        ("grpc_tcp_64B", Box::new(|r| measured(r, "grpc_tcp_64B", grpc::unary_direct(n_block, true)))),
        (
            "grpc_gateway_tcp_64B",
            Box::new(|r| measured(r, "grpc_gateway_tcp_64B", grpc::unary_gateway(n_block, true, WaitStrategy::Spin))),
        ),
        (
            "grpc_gateway_uds_64B",
            Box::new(|r| measured(r, "grpc_gateway_uds_64B", grpc::unary_gateway(n_block, false, WaitStrategy::Spin))),
        ),
        (
            "grpc_gateway_tcp_64B_adaptive",
            Box::new(|r| {
                let samples = grpc::unary_gateway(n_block, true, WaitStrategy::default());
                measured(r, "grpc_gateway_tcp_64B_adaptive", samples)
            }),
        ),
        (
            "grpc_gateway_tcp_64B_adaptive300",
            Box::new(|r| {
                let wait = WaitStrategy::Adaptive { spin: Duration::from_micros(300) };
                measured(r, "grpc_gateway_tcp_64B_adaptive300", grpc::unary_gateway(n_block, true, wait))
            }),
        ),
        ("grpc_stream_64KiB", Box::new(|r| rated(r, "grpc_stream_64KiB", grpc::stream_direct(grpc_stream)))),
        (
            "grpc_gateway_stream_64KiB",
            Box::new(|r| rated(r, "grpc_gateway_stream_64KiB", grpc::stream_gateway(grpc_stream))),
        ),
        ("cellshm_stream_64KiB", Box::new(|r| stream_case(r, "cellshm_stream_64KiB", 64 << 10, stream_bytes))),
        ("cellshm_stream_1MiB", Box::new(|r| stream_case(r, "cellshm_stream_1MiB", 1 << 20, stream_bytes))),
        ("cellshm_8_streams", Box::new(|r| eight_streams_case(r, n_block / 2))),
    ];
    // The C API caller, when `make bench` built it: a case like the others, so that it
    // alternates with the Rust API's `cellshm_64B_spin`.
    if let Some(program) = std::env::var_os("CELLSHM_C_BENCH") {
        cases.push(("cellshm_64B_spin_c_api", Box::new(move |r| c_api_case(r, &program, n_fast))));
    }
    // CELLSHM_BENCH_ONLY=a,b runs only the cases whose names contain one of those (for
    // looking at a few cases closely; the full run is what BENCHMARKS.md reports).
    if let Some(only) = std::env::var("CELLSHM_BENCH_ONLY").ok().filter(|o| !o.is_empty()) {
        cases.retain(|(name, _)| only.split(',').any(|part| name.contains(part.trim())));
    }
    let mut results = Results::default();
    for _ in 0..ROUNDS {
        for (_, case) in &mut cases {
            case(&mut results)?;
        }
    }
    results.print();
    summarize(&results);
    Ok(())
}

/// Records a latency case's samples (or its failure).
fn measured(r: &mut Results, name: &str, samples: Result<Vec<u64>, Error>) -> Result<(), Error> {
    r.latency(name, samples?);
    Ok(())
}

/// Records a rate case's GB/s (or its failure).
fn rated(r: &mut Results, name: &str, gbps: Result<f64, Error>) -> Result<(), Error> {
    r.rate(name, gbps?);
    Ok(())
}

/// The ratios the targets are stated in (docs: BENCHMARKS.md), as notes.
fn summarize(r: &Results) {
    let ratio = |a: Option<u64>, b: Option<u64>| match (a, b) {
        (Some(a), Some(b)) if b > 0 => format!("{:.2}", a as f64 / b as f64),
        _ => "?".into(),
    };
    let floor = r.p50("floor_shm_spin_64B");
    let ice = r.p50("iceoryx2_rr_64B");
    for name in ["cellshm_16B_spin", "cellshm_64B_spin", "cellshm_64B_adaptive"] {
        note(format_args!(
            "{name}: {}x the shm floor; iceoryx2 request-response is {}x it",
            ratio(r.p50(name), floor),
            ratio(ice, r.p50(name))
        ));
    }
    note(format_args!(
        "cellshm_64B_async_tokio: {}x the blocking cellshm_64B_spin; tonic over a Unix socket is {}x it",
        ratio(r.p50("cellshm_64B_async_tokio"), r.p50("cellshm_64B_spin")),
        ratio(r.p50("grpc_uds_64B"), r.p50("cellshm_64B_async_tokio"))
    ));
    for (through, direct) in [
        ("grpc_gateway_tcp_64B", "grpc_tcp_64B"),
        ("grpc_gateway_uds_64B", "grpc_uds_64B"),
        ("grpc_gateway_tcp_64B_adaptive", "grpc_tcp_64B"),
        ("grpc_gateway_tcp_64B_adaptive300", "grpc_tcp_64B"),
    ] {
        note(format_args!(
            "{through}: {}x {direct} (a tonic server answering itself)",
            ratio(r.p50(through), r.p50(direct))
        ));
    }
    if let (Some(a), Some(b)) = (r.gbps("grpc_gateway_stream_64KiB"), r.gbps("grpc_stream_64KiB")) {
        note(format_args!("grpc_gateway_stream_64KiB: {:.2}x grpc_stream_64KiB", a / b));
    }
    note(format_args!(
        "cellshm_64B_block: {}x the socketpair floor",
        ratio(r.p50("cellshm_64B_block"), r.p50("floor_socketpair_64B"))
    ));
    for subs in ["1sub", "4subs"] {
        let (ours, theirs) = (format!("cellshm_pubsub_64B_{subs}"), format!("iceoryx2_pubsub_64B_{subs}"));
        note(format_args!("{ours}: {}x {theirs} (p50)", ratio(r.p50(&ours), r.p50(&theirs))));
    }
    if let (Some(a), Some(b)) =
        (r.sample_rate("cellshm_pubsub_64B_1sub_rate"), r.sample_rate("iceoryx2_pubsub_64B_1sub_rate"))
    {
        note(format_args!("cellshm_pubsub_64B_1sub_rate: {:.2}x iceoryx2_pubsub_64B_1sub_rate", a / b));
    }
    for (case, floor) in [
        ("cellshm_stream_64KiB", "floor_memcpy_64KiB"),
        ("cellshm_stream_1MiB", "floor_memcpy_1MiB"),
        ("cellshm_pubsub_1MiB_1sub", "floor_memcpy_1MiB"),
    ] {
        if let (Some(a), Some(b)) = (r.gbps(case), r.gbps(floor)) {
            note(format_args!("{case}: {:.2}x memcpy of its chunk size", a / b));
        }
    }
}

/// `kv.Store.Get` through the generated client (a 3-byte request, a 66-byte response
/// holding 64 bytes), Spin: the typed path's cost beside `cellshm_64B_spin`.
fn typed_case(r: &mut Results, n: usize) -> Result<(), Error> {
    let cell = BenchCell::spawn(HubConfig::default(), WaitStrategy::Spin)?;
    let store = cellshm_kv_example::kv::StoreClient::new(&cell.peer);
    let request = cellshm_kv_example::kv::GetRequest { key: "k".into() };
    let samples = sample(n, || {
        let reply = store.get(&request).expect("kv.Store.Get");
        assert_eq!(reply.value.len(), 64);
    });
    r.latency("cellshm_typed_get_64B_spin", samples);
    Ok(())
}

fn echo_case(r: &mut Results, name: &str, wait: WaitStrategy, n: usize, size: usize) -> Result<(), Error> {
    let cell = BenchCell::spawn(HubConfig::default(), wait)?;
    let peer = &cell.peer;
    let opts = CallOptions::default();
    let payload = vec![7u8; size];
    let samples = sample(n, || {
        let reply = peer.call("Echo.echo", &payload, &opts).expect("echo");
        assert_eq!(reply.len(), size);
    });
    r.latency(name, samples);
    Ok(())
}

/// A caller thread towards each of three cells at once, Adaptive (the default): on two
/// cores they share the process's one spinner, the others park their rings.
fn three_cells_case(r: &mut Results, n: usize) -> Result<(), Error> {
    let cells: Vec<BenchCell> =
        (0..3).map(|_| BenchCell::spawn(HubConfig::default(), WaitStrategy::default())).collect::<Result<_, _>>()?;
    let per_cell: Vec<Vec<u64>> = std::thread::scope(|scope| {
        let callers: Vec<_> = cells
            .iter()
            .map(|cell| {
                scope.spawn(|| {
                    let opts = CallOptions::default();
                    sample(n, || {
                        let reply = cell.peer.call("Echo.echo", &[7u8; 64], &opts).expect("echo");
                        assert_eq!(reply.len(), 64);
                    })
                })
            })
            .collect();
        callers.into_iter().map(|c| c.join().expect("caller thread")).collect()
    });
    r.latency("cellshm_64B_adaptive_3_cells", per_cell.concat());
    Ok(())
}

/// The largest payload each way, written in place on both sides.
fn echo_in_place_case(r: &mut Results, name: &str, n: usize) -> Result<(), Error> {
    let cell = BenchCell::spawn(HubConfig::default(), WaitStrategy::Spin)?;
    let peer = &cell.peer;
    let big = peer.max_payload();
    let opts = CallOptions::default();
    let samples = sample(n, || {
        let fill = |buf: &mut [u8]| {
            buf.fill(0x5A);
            buf.len()
        };
        let reply = peer.call_with("Echo.echo", big, fill, &opts).expect("echo 1 MiB");
        assert_eq!(reply.len(), big);
    });
    r.latency(name, samples);
    Ok(())
}

fn stream_config() -> HubConfig {
    HubConfig {
        slot_classes: vec![
            SlotClass { slot_size: 256, slot_count: 256 },
            SlotClass { slot_size: 64 << 10, slot_count: 96 },
            SlotClass { slot_size: 1 << 20, slot_count: 16 },
        ],
        ..HubConfig::default()
    }
}

/// One stream of `chunk`-byte items the cell writes in place (`Stream.fill`); the host
/// checks each item's first and last byte where it lies.
fn stream_case(r: &mut Results, name: &str, chunk: usize, bytes: usize) -> Result<(), Error> {
    let wait =
        if std::env::var_os("CELLSHM_BENCH_SPIN").is_some() { WaitStrategy::Spin } else { WaitStrategy::default() };
    let cell = BenchCell::spawn(stream_config(), wait)?;
    let peer = &cell.peer;
    let n = (bytes / chunk).max(1);
    let request: Vec<u8> = [n as u32, chunk as u32].iter().flat_map(|v| v.to_le_bytes()).collect();
    let started = Instant::now();
    let mut received = 0usize;
    for (i, item) in peer.open_stream("Stream.fill", &request, &CallOptions::default())?.enumerate() {
        let item = item?;
        let bytes = item.payload();
        assert!(bytes.len() == chunk && bytes.get(0) == Some(i as u8) && bytes.get(chunk - 1) == Some(i as u8));
        received += bytes.len();
    }
    r.rate(name, received as f64 / started.elapsed().as_secs_f64() / 1e9);
    Ok(())
}

/// Eight streams of 256 KiB chunks at once on one peer, and `unary_calls` unary 64 B calls
/// on the same peer meanwhile, one every 100 µs. Both are measured in the steady state:
/// the calls start once every stream has its first chunk (slots faulted in, threads
/// started), the rate counts the bytes received while the calls ran, and the streams are
/// cancelled after the last call.
fn eight_streams_case(r: &mut Results, unary_calls: usize) -> Result<(), Error> {
    const STREAMS: u32 = 8;
    let config = HubConfig {
        slot_classes: vec![
            SlotClass { slot_size: 256, slot_count: 256 },
            SlotClass { slot_size: 256 << 10, slot_count: STREAMS * cellshm::STREAM_WINDOW + 8 },
        ],
        ..HubConfig::default()
    };
    let chunk = 256usize << 10;
    let cell = BenchCell::spawn(config, WaitStrategy::default())?;
    let peer = &cell.peer;
    let received = AtomicU64::new(0);
    let stop = AtomicBool::new(false);
    let flowing = std::sync::Barrier::new(STREAMS as usize + 1);
    let (rate, unary) = std::thread::scope(|scope| -> Result<(f64, Vec<u64>), Error> {
        let threads: Vec<_> = (0..STREAMS)
            .map(|_| {
                let (received, stop, flowing) = (&received, &stop, &flowing);
                scope.spawn(move || -> Result<(), Error> {
                    // As many chunks as a stream could ever want: it ends by cancellation.
                    let request: Vec<u8> = [u32::MAX, chunk as u32].iter().flat_map(|v| v.to_le_bytes()).collect();
                    let mut stream = peer.open_stream("Stream.fill", &request, &CallOptions::default())?;
                    let first = stream.next().ok_or_else(|| Error::new(Status::Internal, "stream ended at once"))??;
                    received.fetch_add(first.len() as u64, Ordering::Relaxed);
                    drop(first);
                    flowing.wait();
                    for item in stream.by_ref() {
                        received.fetch_add(item?.len() as u64, Ordering::Relaxed);
                        if stop.load(Ordering::Relaxed) {
                            break;
                        }
                    }
                    Ok(())
                })
            })
            .collect();
        flowing.wait();
        let (started, bytes_before) = (Instant::now(), received.load(Ordering::Relaxed));
        let mut unary = Vec::with_capacity(unary_calls);
        let mut outcome = Ok(());
        for _ in 0..unary_calls {
            let t = Instant::now();
            if let Err(e) = peer.call("Echo.echo", &[7u8; 64], &CallOptions::timeout(Duration::from_secs(5))) {
                outcome = Err(e);
                break;
            }
            unary.push(t.elapsed().as_nanos() as u64);
            std::thread::sleep(Duration::from_micros(100));
        }
        let rate = (received.load(Ordering::Relaxed) - bytes_before) as f64 / started.elapsed().as_secs_f64() / 1e9;
        stop.store(true, Ordering::Relaxed);
        for t in threads {
            t.join().map_err(|_| Error::new(Status::Internal, "stream thread panicked"))??;
        }
        outcome.map(|()| (rate, unary))
    })?;
    r.rate("cellshm_8_streams_256KiB", rate);
    r.latency("cellshm_unary_during_8_streams", unary);
    Ok(())
}

/// Single-thread memcpy of `chunk`-byte buffers, GB/s at the median copy, from a
/// source that changes every copy (so no copy is elided or served from a cached result).
fn memcpy_rate(chunk: usize, copies: usize) -> f64 {
    let mut src = vec![0x5Au8; chunk];
    let mut dst = vec![0u8; chunk];
    let mut samples = sample(copies, || {
        src[0] = src[0].wrapping_add(1);
        dst.copy_from_slice(&src);
        std::hint::black_box(&dst);
    });
    samples.sort_unstable();
    chunk as f64 / quantile(&samples, 0.5) as f64
}

/// One round of the C-API caller (tests/c/bench_c_caller.c) against a fresh Spin-mode
/// cell. It reports its own p50 and p99; the median round is kept.
fn c_api_case(r: &mut Results, program: &std::ffi::OsStr, iterations: usize) -> Result<(), Error> {
    let out = Command::new(program)
        .arg(iterations.max(1000).to_string())
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
        (Some(p50), Some(p99)) => r.summary("cellshm_64B_spin_c_api", p50, p99),
        _ => return Err(Error::new(Status::Internal, format!("unexpected C bench output: {text}"))),
    }
    Ok(())
}

fn self_exe() -> Result<std::path::PathBuf, Error> {
    std::env::current_exe().map_err(|e| Error::system("locating the cellshm-bench binary", e))
}

fn num_cpus() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
}

/// A hub with one test cell on it, stopped (GOODBYE, then reaped) when dropped.
struct BenchCell {
    hub: Option<Hub>,
    peer: cellshm::Peer,
    child: std::process::Child,
}

impl BenchCell {
    fn spawn(config: HubConfig, wait: WaitStrategy) -> Result<BenchCell, Error> {
        BenchCell::spawn_with(config, wait, &[])
    }

    /// [`BenchCell::spawn`] with more of the test cell's environment.
    fn spawn_with(config: HubConfig, wait: WaitStrategy, env: &[(&str, &str)]) -> Result<BenchCell, Error> {
        let hub = Hub::create(config)?;
        let ticket = hub.add_peer("bench", PeerOptions { wait, ..PeerOptions::default() })?;
        let mut cmd = Command::new(self_exe()?);
        cmd.arg("__cell").env("CELLSHM_WAIT", wait.to_string()).env("CELLSHM_WORKERS", "2").envs(env.iter().copied());
        let (peer, child) = ticket.spawn(&mut cmd)?;
        let cell = BenchCell { hub: Some(hub), peer, child };
        cell.peer.wait_ready(Duration::from_secs(10))?;
        Ok(cell)
    }
}

impl Drop for BenchCell {
    fn drop(&mut self) {
        self.peer.shutdown(Duration::from_secs(1));
        drop(self.hub.take());
        let _ = self.child.wait();
    }
}

/// Raw shared-memory ping-pong: two cache lines in a shared file, each side spins.
fn floor_shm(iterations: usize) -> Result<Vec<u64>, Error> {
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
    let s = sample(iterations, || {
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
fn floor_socket(iterations: usize) -> Result<Vec<u64>, Error> {
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
    let s = sample(iterations, || {
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
