//! A host that spawns echo cells on one hub, calls each, prints the answers and shuts
//! them down. Cells are given as extra arguments (a program and its arguments, separated
//! by `--`); without any, it spawns the Rust `echo-cell` built next to it.
//!
//! ```text
//! echo-host
//! echo-host -- ./echo-cell -- python3 examples/python/echo_cell.py
//! ```

use cellshm::LinkEnd;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use cellshm::{CallOptions, Hub, HubConfig, PeerOptions};

fn cell_commands() -> Vec<Vec<String>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut commands: Vec<Vec<String>> =
        args.split(|a| a == "--").filter(|c| !c.is_empty()).map(|c| c.to_vec()).collect();
    if commands.is_empty() {
        let sibling: PathBuf = std::env::current_exe().expect("own path").with_file_name("echo-cell");
        commands.push(vec![sibling.display().to_string()]);
    }
    commands
}

fn main() -> Result<(), cellshm::Error> {
    let hub = Hub::create(HubConfig::default())?;
    println!("hub {}", hub.name());
    let mut running = Vec::new();
    for (i, command) in cell_commands().into_iter().enumerate() {
        let name = format!("echo-{i}");
        let ticket = hub.add_peer(&name, PeerOptions::default())?;
        let mut cmd = Command::new(&command[0]);
        cmd.args(&command[1..]);
        let (peer, child) = ticket.spawn(&mut cmd)?;
        peer.wait_ready(Duration::from_secs(10))?;
        println!("{name}: ready ({}, pid {})", command.join(" "), peer.pid().unwrap_or(0));
        running.push((peer, child));
    }
    // A timeout counts from the start of each call, so one options value serves them all.
    let options = CallOptions::timeout(Duration::from_secs(2));
    for (peer, _) in &running {
        let reply = peer.call("Echo.echo", b"hello from the Rust host", &options)?;
        println!("{}: Echo.echo -> {:?}", peer.name(), String::from_utf8_lossy(reply.bytes()));
        let t = Instant::now();
        let rounds = 10_000;
        for _ in 0..rounds {
            peer.call("Echo.echo", &[0u8; 64], &options)?;
        }
        println!(
            "{}: {rounds} round trips of 64 B, {:.2} us each on average",
            peer.name(),
            t.elapsed().as_secs_f64() * 1e6 / rounds as f64
        );
    }
    for (peer, mut child) in running {
        peer.shutdown(Duration::from_secs(2));
        let status = child.wait().map_err(|e| cellshm::Error::system("waiting for a cell", e))?;
        println!("{}: exited ({status})", peer.name());
    }
    Ok(())
}
