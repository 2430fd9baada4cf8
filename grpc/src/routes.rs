//! Which cell serves a method: the methods each ready peer serves (its introspection),
//! kept until the set of ready peers changes, and a round robin among the peers that
//! serve one method. Each rebuild is a new generation: reflection rebuilds what it
//! serves from the cells' descriptors only when the generation changed.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use cellshm::{HubView, LinkEnd, MethodKind, Peer, PeerState};

/// How long asking one peer what it serves may take.
const INTROSPECTION_TIMEOUT: Duration = Duration::from_secs(2);

/// A ready peer as routed to: (peer id, launch epoch).
type PeerKey = (u32, u32);

#[derive(Default)]
struct Table {
    /// The ready peers the table was built from.
    built_from: Vec<PeerKey>,
    /// `"pkg.Svc.Method"` → the peers serving it, and its kind.
    methods: HashMap<String, Vec<(Peer, MethodKind)>>,
    /// The peers that serve `cellshm.Introspect.descriptors`.
    describers: Vec<Peer>,
    /// Which build this is (0: none yet).
    generation: u64,
}

/// What reflection needs of the routes: the services served now, who can describe
/// them, and which build of the table said so.
pub(crate) struct Described {
    pub(crate) generation: u64,
    pub(crate) services: std::collections::BTreeSet<String>,
    pub(crate) describers: Vec<Peer>,
}

pub(crate) struct Routes {
    hub: HubView,
    table: tokio::sync::Mutex<Table>,
    next: AtomicUsize,
    builds: AtomicU64,
}

fn key(peer: &Peer) -> PeerKey {
    (peer.id(), peer.identity().epoch)
}

impl Routes {
    pub(crate) fn new(hub: HubView) -> Routes {
        Routes {
            hub,
            table: tokio::sync::Mutex::new(Table::default()),
            next: AtomicUsize::new(0),
            builds: AtomicU64::new(0),
        }
    }

    /// The hub routed to.
    pub(crate) fn hub(&self) -> &HubView {
        &self.hub
    }

    /// The table for the peers ready now (rebuilt if they changed).
    async fn current(&self) -> tokio::sync::MutexGuard<'_, Table> {
        let ready: Vec<Peer> = self.hub.peers().into_iter().filter(|p| matches!(p.state(), PeerState::Ready)).collect();
        let mut keys: Vec<PeerKey> = ready.iter().map(key).collect();
        keys.sort_unstable();
        let mut table = self.table.lock().await;
        if table.built_from != keys || table.generation == 0 {
            let generation = self.builds.fetch_add(1, Ordering::Relaxed) + 1;
            *table = build(ready, keys, generation).await;
        }
        table
    }

    /// The services (`"pkg.Svc"`) some ready peer serves a method of.
    pub(crate) async fn ready_services(&self) -> std::collections::BTreeSet<String> {
        services_of(&*self.current().await)
    }

    /// The services served now and the peers that can describe them.
    pub(crate) async fn described(&self) -> Described {
        let table = self.current().await;
        Described { generation: table.generation, services: services_of(&table), describers: table.describers.clone() }
    }

    /// A ready peer serving `method`, and how it serves it; UNIMPLEMENTED if none does.
    pub(crate) async fn route(&self, method: &str) -> Result<(Peer, MethodKind), tonic::Status> {
        let table = self.current().await;
        let serving: Vec<&(Peer, MethodKind)> = table
            .methods
            .get(method)
            .map(|peers| peers.iter().filter(|(p, _)| matches!(p.state(), PeerState::Ready)).collect())
            .unwrap_or_default();
        if serving.is_empty() {
            return Err(tonic::Status::unimplemented(format!("no ready cell serves {method}")));
        }
        let (peer, kind) = serving[self.next.fetch_add(1, Ordering::Relaxed) % serving.len()];
        Ok((peer.clone(), *kind))
    }
}

fn services_of(table: &Table) -> std::collections::BTreeSet<String> {
    table.methods.keys().filter_map(|m| m.rsplit_once('.').map(|(service, _)| service.to_string())).collect()
}

/// Asks every ready peer what it serves, all at once.
async fn build(ready: Vec<Peer>, built_from: Vec<PeerKey>, generation: u64) -> Table {
    let asked: Vec<_> =
        ready.iter().map(|peer| (peer.clone(), peer.served_methods_async(INTROSPECTION_TIMEOUT))).collect();
    let mut methods: HashMap<String, Vec<(Peer, MethodKind)>> = HashMap::new();
    let mut describers = Vec::new();
    for (peer, answer) in asked {
        match answer.await {
            Ok(served) => {
                for (name, _, kind) in served {
                    if name == cellshm::wire::builtin::INTROSPECT_DESCRIPTORS {
                        describers.push(peer.clone());
                    } else if !name.starts_with("cellshm.") {
                        methods.entry(name).or_default().push((peer.clone(), kind));
                    }
                }
            }
            Err(e) => tracing::warn!(peer = peer.name(), "the gateway could not ask what it serves: {e}"),
        }
    }
    Table { built_from, methods, describers, generation }
}
