//! A clean end is quiet: shutting a peer down or dropping the hub logs no warning, while
//! a real death still does. Its own test binary: it installs a global `tracing`
//! subscriber that counts warnings from every thread.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use cellshm::{Hub, HubConfig};
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};

mod common;
use common::{spawn_cell_on, wait_dead};

struct CountWarnings(Arc<AtomicUsize>);

impl<S: tracing::Subscriber> Layer<S> for CountWarnings {
    fn on_event(&self, event: &tracing::Event<'_>, _: Context<'_, S>) {
        if *event.metadata().level() <= tracing::Level::WARN {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }
}

#[test]
fn a_clean_shutdown_logs_no_warning_and_a_real_death_does() {
    let warnings = Arc::new(AtomicUsize::new(0));
    let subscriber = tracing_subscriber::registry().with(CountWarnings(warnings.clone()));
    tracing::subscriber::set_global_default(subscriber).unwrap();

    let hub = Hub::create(HubConfig::default()).unwrap();
    let (peer, mut child) = spawn_cell_on(&hub, "polite", &[]);
    peer.shutdown(Duration::from_secs(2));
    assert_eq!(child.wait().unwrap().code(), Some(0));
    let (_other, mut other) = spawn_cell_on(&hub, "dropped-with-the-hub", &[]);
    drop(hub);
    assert_eq!(other.wait().unwrap().code(), Some(0));
    assert_eq!(warnings.load(Ordering::SeqCst), 0, "a clean end logged warnings");

    let hub = Hub::create(HubConfig::default()).unwrap();
    let (peer, mut child) = spawn_cell_on(&hub, "killed", &[]);
    child.kill().unwrap();
    // The warning is logged before the death callbacks run.
    wait_dead(&peer);
    child.wait().unwrap();
    assert_eq!(warnings.load(Ordering::SeqCst), 1, "a real death is a warning");
}
