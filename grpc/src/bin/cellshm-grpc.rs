//! `cellshm-grpc`: a host that supervises cells and serves them to the network as gRPC.
//!
//! ```text
//! cellshm-grpc serve --listen ADDR [--hub NAME] [--max-message BYTES] [--wait STRATEGY]
//!                    [--tls-cert FILE --tls-key FILE [--client-ca FILE]]
//!                    [--allow METHOD=NAME[,NAME...]]... [--remote NAME=URL]...
//!                    -- NAME PROGRAM [ARGS...] [-- NAME PROGRAM [ARGS...]]...
//! ```
//! With cells: starts a hub (named NAME, for `cellshm list`), launches each cell under a supervisor
//! (relaunched when it crashes), and serves `/pkg.Svc/Method` on ADDR (HTTP/2, over TLS
//! with `--tls-cert`/`--tls-key`; with `--client-ca` clients must present a certificate
//! that CA signed) for every method a ready cell serves. `--allow kv.Store.Put=ops`
//! admits to that method only the clients whose certificate's Common Name is `ops`
//! (the host's allow-list: `Hub::allow`). `--remote store=http://10.0.0.7:50051` serves
//! every method that gRPC server's reflection lists as a host method, so the cells call
//! it through their host (`cellshm_grpc::Remote`). `--wait` is how the cells and the
//! host wait for each other (`spin`, `block`, `adaptive` or `adaptive:<µs>`; default
//! `adaptive`, which polls 50 µs before sleeping): requests from the network come a
//! round trip apart (100–300 µs on loopback), so with the default each one pays the
//! cell's and the host's wakeups; `adaptive:300` keeps both awake across that gap, for
//! up to 300 µs of CPU per message on each side.
//!
//! Without cells, `--hub NAME` is another process's hub: the gateway attaches to it
//! and calls its cells through its host's relay (the host enables attaching and
//! `Hub::enable_relay` for this uid, and its access rules apply to the callers). Prints `listening on HOST:PORT` once it accepts
//! connections (`--listen 127.0.0.1:0` picks a free port), and stops on SIGINT or
//! SIGTERM: the gateway stops accepting, the cells are told to leave.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use cellshm::{CellSpec, Error, Hub, HubConfig, SlotClass, Status, Supervisor, WaitStrategy};
use cellshm_grpc::{AddRemote, Gateway, RemoteOptions, Tls};

struct Serve {
    listen: SocketAddr,
    hub: Option<String>,
    max_message: usize,
    /// None: the library's default (for an attached gateway, `CELLSHM_WAIT`'s).
    wait: Option<WaitStrategy>,
    tls_cert: Option<std::path::PathBuf>,
    tls_key: Option<std::path::PathBuf>,
    client_ca: Option<std::path::PathBuf>,
    allow: Vec<(String, Vec<String>)>,
    remotes: Vec<(String, String)>,
    cells: Vec<(String, Vec<String>)>,
}

fn usage() -> Error {
    Error::new(
        Status::InvalidArgument,
        "usage: cellshm-grpc serve --listen ADDR [--hub NAME] [--max-message BYTES] [--wait STRATEGY] \
         [--tls-cert FILE --tls-key FILE [--client-ca FILE]] [--allow METHOD=NAME[,NAME...]]... [--remote NAME=URL]... \
         -- NAME PROGRAM [ARGS...] [-- NAME PROGRAM [ARGS...]]...",
    )
}

fn bad(what: impl std::fmt::Display) -> Error {
    Error::new(Status::InvalidArgument, format!("cellshm-grpc: {what}"))
}

fn parse(args: &[String]) -> Result<Serve, Error> {
    let (options, cells) = match args.iter().position(|a| a == "--") {
        Some(at) => (&args[..at], &args[at + 1..]),
        None => (args, &[][..]),
    };
    let mut serve = Serve {
        listen: "127.0.0.1:50051".parse().expect("an address"),
        hub: None,
        max_message: 16 << 20,
        wait: None,
        tls_cert: None,
        tls_key: None,
        client_ca: None,
        allow: Vec::new(),
        remotes: Vec::new(),
        cells: Vec::new(),
    };
    let mut options = options.iter();
    while let Some(option) = options.next() {
        let mut value = || options.next().ok_or_else(|| bad(format!("{option} needs a value")));
        match option.as_str() {
            "--listen" => serve.listen = value()?.parse().map_err(|e| bad(format!("--listen: {e}")))?,
            "--hub" => serve.hub = Some(value()?.clone()),
            "--max-message" => serve.max_message = value()?.parse().map_err(|e| bad(format!("--max-message: {e}")))?,
            "--wait" => serve.wait = Some(WaitStrategy::parse(value()?)?),
            "--tls-cert" => serve.tls_cert = Some(value()?.into()),
            "--tls-key" => serve.tls_key = Some(value()?.into()),
            "--client-ca" => serve.client_ca = Some(value()?.into()),
            "--allow" => {
                let rule = value()?;
                let (method, names) = rule
                    .split_once('=')
                    .ok_or_else(|| bad(format!("--allow wants METHOD=NAME[,NAME...], got {rule:?}")))?;
                let names = names.split(',').filter(|n| !n.is_empty()).map(str::to_string).collect();
                serve.allow.push((method.to_string(), names));
            }
            "--remote" => {
                let remote = value()?;
                let (name, url) =
                    remote.split_once('=').ok_or_else(|| bad(format!("--remote wants NAME=URL, got {remote:?}")))?;
                serve.remotes.push((name.to_string(), url.to_string()));
            }
            other => return Err(bad(format!("unknown option {other:?}"))),
        }
    }
    for cell in cells.split(|a| a == "--").filter(|c| !c.is_empty()) {
        match cell {
            [name, program, args @ ..] => {
                let mut argv = vec![program.clone()];
                argv.extend(args.iter().cloned());
                serve.cells.push((name.clone(), argv));
            }
            _ => return Err(bad(format!("a cell is NAME PROGRAM [ARGS...], got {cell:?}"))),
        }
    }
    if serve.cells.is_empty() && serve.hub.is_none() {
        return Err(usage());
    }
    if serve.tls_cert.is_some() != serve.tls_key.is_some() {
        return Err(bad("--tls-cert and --tls-key go together"));
    }
    if serve.client_ca.is_some() && serve.tls_cert.is_none() {
        return Err(bad("--client-ca needs --tls-cert and --tls-key"));
    }
    Ok(serve)
}

/// A hub whose largest slot holds the largest message the gateway passes.
fn hub_config(serve: &Serve) -> HubConfig {
    let mut config =
        HubConfig { name: serve.hub.clone(), max_peers: serve.cells.len().max(1) as u32 + 4, ..HubConfig::default() };
    let largest = config.slot_classes.iter().map(|c| c.slot_size as usize).max().unwrap_or(0);
    if serve.max_message > largest {
        let size = serve.max_message.next_multiple_of(64).min(u32::MAX as usize) as u32;
        config.slot_classes.push(SlotClass { slot_size: size, slot_count: 4 });
    }
    config
}

fn run(serve: Serve) -> Result<(), Error> {
    let runtime = tokio::runtime::Runtime::new().map_err(|e| Error::system("starting tokio", e))?;
    let tls = match (&serve.tls_cert, &serve.tls_key) {
        (Some(cert), Some(key)) => Some(
            Tls::from_pem_files(cert, key, serve.client_ca.as_deref())
                .map_err(|e| Error::new(Status::InvalidArgument, format!("cellshm-grpc: TLS: {e}")))?,
        ),
        _ => None,
    };
    if serve.cells.is_empty() {
        return relayed(serve, runtime, tls);
    }
    let supervisor = Supervisor::new(Hub::create(hub_config(&serve))?)?;
    for (method, names) in &serve.allow {
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        supervisor.hub().allow(method, &names)?;
    }
    for (name, url) in &serve.remotes {
        let remote = runtime.block_on(supervisor.add_remote(name, url, RemoteOptions::new()))?;
        tracing::info!(remote = name, url, methods = remote.methods().len(), "serving a remote's methods to the cells");
    }
    for (name, argv) in &serve.cells {
        let mut spec = CellSpec::new(name.clone(), &argv[0]).args(argv[1..].iter().cloned());
        if let Some(wait) = serve.wait {
            spec = spec.env("CELLSHM_WAIT", wait.to_string());
            spec.peer.wait = wait;
        }
        supervisor.add(spec)?;
    }
    for (name, _) in &serve.cells {
        supervisor.wait_for(name, Duration::from_secs(30), |s| *s == cellshm::CellStatus::Ready)?;
    }
    let mut gateway = Gateway::with_supervisor(&supervisor).max_message_size(serve.max_message);
    if let Some(tls) = tls {
        gateway = gateway.tls(tls);
    }
    runtime.block_on(listen(serve.listen, gateway))?;
    supervisor.stop_all(Duration::from_secs(2));
    Ok(())
}

/// `serve --hub NAME` without cells: a gateway in front of another process's hub,
/// attached to it and calling its cells through its host's relay.
fn relayed(serve: Serve, runtime: tokio::runtime::Runtime, tls: Option<Tls>) -> Result<(), Error> {
    let hub = serve.hub.as_deref().ok_or_else(usage)?;
    if !serve.remotes.is_empty() || !serve.allow.is_empty() {
        return Err(bad("--remote and --allow are the host's to set: they go with cells, not with --hub alone"));
    }
    let mut options = cellshm::CellOptions::from_env()?;
    if let Some(wait) = serve.wait {
        options.wait = wait;
    }
    let relay = cellshm::Cell::attach(hub, "grpc-gateway", options).map_err(|e| {
        e.context(format!(
            "attaching to hub {hub:?} (its host must enable attaching and its relay for this uid: \
             Hub::enable_attach, Hub::enable_relay)"
        ))
    })?;
    // Serving runs the link's receive side, which the gateway's async calls wait on.
    relay.serve()?;
    let mut gateway = Gateway::relayed(relay).max_message_size(serve.max_message);
    if let Some(tls) = tls {
        gateway = gateway.tls(tls);
    }
    runtime.block_on(listen(serve.listen, gateway))
}

/// Binds `address`, says where, and serves until SIGINT or SIGTERM.
async fn listen(address: SocketAddr, gateway: Gateway) -> Result<(), Error> {
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .map_err(|e| Error::system(format!("listening on {address}"), e))?;
    let bound = listener.local_addr().map_err(|e| Error::system("reading the listening address", e))?;
    let gateway = gateway.advertise(bound.to_string());
    println!("listening on {bound}");
    use std::io::Write;
    let _ = std::io::stdout().flush();
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
    tokio::select! {
        served = gateway.serve_with_incoming(incoming) => served.map_err(|e| Error::new(Status::Internal, format!("serving: {e}"))),
        () = stopped() => Ok(()),
    }
}

/// Resolves on SIGINT or SIGTERM.
async fn stopped() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(term) => term,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("serve") => parse(&args[1..]).and_then(run),
        Some("-h" | "--help" | "help") => {
            println!("{}", usage().message());
            Ok(())
        }
        _ => Err(usage()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cellshm-grpc: {}", e.message());
            ExitCode::from(if e.status() == Status::InvalidArgument { 2 } else { 1 })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(text: &str) -> Vec<String> {
        text.split_whitespace().map(str::to_string).collect()
    }

    #[test]
    fn serve_reads_its_options_and_cells_and_refuses_what_it_cannot_use() {
        let serve =
            parse(&args("--listen 127.0.0.1:0 --wait adaptive:300 --remote s=http://h:1 -- kv ./kv-cell -v")).unwrap();
        assert_eq!(serve.wait, Some(WaitStrategy::Adaptive { spin: Duration::from_micros(300) }));
        assert_eq!(serve.remotes, [("s".to_string(), "http://h:1".to_string())]);
        assert_eq!(serve.cells, [("kv".to_string(), vec!["./kv-cell".to_string(), "-v".to_string()])]);
        assert_eq!(parse(&args("--hub app")).unwrap().wait, None);
        for bad in [
            "--wait sometimes -- kv ./kv-cell",
            "--wait",
            "--remote nourl -- kv ./kv-cell",
            "--tls-cert c.pem -- kv ./kv-cell",
            "--bogus 1 -- kv ./kv-cell",
            "--listen 127.0.0.1:0",
            "-- kv",
        ] {
            let e = parse(&args(bad)).err().unwrap_or_else(|| panic!("{bad:?} was accepted"));
            assert_eq!(e.status(), Status::InvalidArgument, "{bad:?}: {e}");
        }
    }
}
