//! A clean end is quiet: shutting a peer down or dropping the hub logs no warning, while
//! a real death still does. Its own test binary: it installs a global `tracing`
//! subscriber that counts warnings from every thread.

use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use cellshm::{Hub, HubConfig, PeerOptions, PeerState};
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};

const CELL: &str = env!("CARGO_BIN_EXE_cellshm");

struct CountWarnings(Arc<AtomicUsize>);

impl<S: tracing::Subscriber> Layer<S> for CountWarnings {
    fn on_event(&self, event: &tracing::Event<'_>, _: Context<'_, S>) {
        if *event.metadata().level() <= tracing::Level::WARN {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }
}

fn spawn(hub: &Hub, name: &str) -> (cellshm::Peer, std::process::Child) {
    let ticket = hub.add_peer(name, PeerOptions::default()).unwrap();
    let (peer, child) = ticket.spawn(Command::new(CELL).arg("__cell").env("CELLSHM_QUIET", "1")).unwrap();
    peer.wait_ready(Duration::from_secs(10)).unwrap();
    (peer, child)
}

fn wait_dead(peer: &cellshm::Peer) {
    let t = std::time::Instant::now();
    while !matches!(peer.state(), PeerState::Dead(_)) {
        assert!(t.elapsed() < Duration::from_secs(5));
        std::thread::sleep(Duration::from_millis(2));
    }
}

#[test]
fn a_clean_shutdown_logs_no_warning_and_a_real_death_does() {
    let warnings = Arc::new(AtomicUsize::new(0));
    let subscriber = tracing_subscriber::registry().with(CountWarnings(warnings.clone()));
    tracing::subscriber::set_global_default(subscriber).unwrap();

    let hub = Hub::create(HubConfig::default()).unwrap();
    let (peer, mut child) = spawn(&hub, "polite");
    peer.shutdown(Duration::from_secs(2));
    assert_eq!(child.wait().unwrap().code(), Some(0));
    let (_other, mut other) = spawn(&hub, "dropped-with-the-hub");
    drop(hub);
    assert_eq!(other.wait().unwrap().code(), Some(0));
    assert_eq!(warnings.load(Ordering::SeqCst), 0, "a clean end logged warnings");

    let hub = Hub::create(HubConfig::default()).unwrap();
    let (peer, mut child) = spawn(&hub, "killed");
    child.kill().unwrap();
    wait_dead(&peer);
    child.wait().unwrap();
    assert_eq!(warnings.load(Ordering::SeqCst), 1, "a real death is a warning");
}
