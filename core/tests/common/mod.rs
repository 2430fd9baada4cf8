//! What the multi-process test files share: the test cell binary, a running hub with
//! one ready cell, and call options.

#![allow(dead_code)] // each test file uses a different part

use std::process::{Child, Command};
use std::time::Duration;

use cellshm::{CallOptions, Hub, HubConfig, Peer, PeerOptions};

/// `cellshm __cell` is the test cell (see `src/bin/cellshm.rs`).
pub const CELL: &str = env!("CARGO_BIN_EXE_cellshm");

/// A hub with one ready test cell; the cell is killed on drop.
pub struct Running {
    pub hub: Hub,
    pub peer: Peer,
    pub child: Child,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Spawns a test cell named `name` on `hub` with extra environment, and waits until it
/// is ready.
pub fn spawn_cell_on(hub: &Hub, name: &str, env: &[(&str, &str)]) -> (Peer, Child) {
    let ticket = hub.add_peer(name, PeerOptions::default()).unwrap();
    let mut cmd = Command::new(CELL);
    cmd.arg("__cell").env("CELLSHM_QUIET", "1");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let (peer, child) = ticket.spawn(&mut cmd).unwrap();
    peer.wait_ready(Duration::from_secs(10)).unwrap();
    (peer, child)
}

/// A new hub with one ready test cell called "test".
pub fn start(config: HubConfig, env: &[(&str, &str)]) -> Running {
    let hub = Hub::create(config).unwrap();
    let (peer, child) = spawn_cell_on(&hub, "test", env);
    Running { hub, peer, child }
}

pub fn secs(n: u64) -> CallOptions {
    CallOptions::timeout(Duration::from_secs(n))
}
