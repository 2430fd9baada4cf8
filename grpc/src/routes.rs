//! Which cell serves a method: the methods each ready cell serves (its introspection),
//! kept until the set of ready cells changes, and a round robin among the cells that
//! serve one method. Each rebuild is a new generation: reflection rebuilds what it
//! serves from the cells' descriptors only when the generation changed.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use cellshm::{CallOptions, MethodKind};

use crate::target::{Source, Target, TargetKey};

/// How long asking one cell what it serves may take.
const INTROSPECTION_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Default)]
struct Table {
    /// The ready cells the table was built from.
    built_from: Vec<TargetKey>,
    /// When the source was last asked which cells are ready.
    checked: Option<Instant>,
    /// `"pkg.Svc.Method"` → the cells serving it, and its kind.
    methods: HashMap<String, Vec<(Target, MethodKind)>>,
    /// The cells that serve `cellshm.Introspect.descriptors`.
    describers: Vec<Target>,
    /// Which build this is (0: none yet).
    generation: u64,
}

/// What reflection needs of the routes: the services served now, who can describe
/// them, and which build of the table said so.
pub(crate) struct Described {
    pub(crate) generation: u64,
    pub(crate) services: std::collections::BTreeSet<String>,
    pub(crate) describers: Vec<Target>,
}

pub(crate) struct Routes {
    source: Source,
    table: tokio::sync::Mutex<Table>,
    next: AtomicUsize,
    builds: AtomicU64,
}

impl Routes {
    pub(crate) fn new(source: Source) -> Routes {
        Routes {
            source,
            table: tokio::sync::Mutex::new(Table::default()),
            next: AtomicUsize::new(0),
            builds: AtomicU64::new(0),
        }
    }

    /// Where the cells are.
    pub(crate) fn source(&self) -> &Source {
        &self.source
    }

    /// The table for the cells ready now (rebuilt if they changed).
    async fn current(&self) -> tokio::sync::MutexGuard<'_, Table> {
        let mut table = self.table.lock().await;
        let due = table.checked.is_none_or(|at| at.elapsed() >= self.source.refresh_every());
        if due {
            let mut ready = self.source.ready(INTROSPECTION_TIMEOUT).await;
            ready.sort_unstable_by(|a, b| a.0.cmp(&b.0));
            let keys: Vec<TargetKey> = ready.iter().map(|(key, _)| key.clone()).collect();
            if table.built_from != keys || table.generation == 0 {
                let generation = self.builds.fetch_add(1, Ordering::Relaxed) + 1;
                *table = build(ready.into_iter().map(|(_, t)| t).collect(), keys, generation).await;
            }
            table.checked = Some(Instant::now());
        }
        table
    }

    /// The services (`"pkg.Svc"`) some ready cell serves a method of.
    pub(crate) async fn ready_services(&self) -> std::collections::BTreeSet<String> {
        services_of(&*self.current().await)
    }

    /// The services served now and the cells that can describe them.
    pub(crate) async fn described(&self) -> Described {
        let table = self.current().await;
        Described { generation: table.generation, services: services_of(&table), describers: table.describers.clone() }
    }

    /// A ready cell serving `method`, and how it serves it; UNIMPLEMENTED if none does.
    pub(crate) async fn route(&self, method: &str) -> Result<(Target, MethodKind), tonic::Status> {
        let table = self.current().await;
        let serving: Vec<&(Target, MethodKind)> = table
            .methods
            .get(method)
            .map(|cells| cells.iter().filter(|(t, _)| t.is_ready()).collect())
            .unwrap_or_default();
        if serving.is_empty() {
            return Err(tonic::Status::unimplemented(format!("no ready cell serves {method}")));
        }
        let (target, kind) = serving[self.next.fetch_add(1, Ordering::Relaxed) % serving.len()];
        Ok((target.clone(), *kind))
    }
}

fn services_of(table: &Table) -> std::collections::BTreeSet<String> {
    table.methods.keys().filter_map(|m| m.rsplit_once('.').map(|(service, _)| service.to_string())).collect()
}

/// Asks every ready cell what it serves, all at once.
async fn build(ready: Vec<Target>, built_from: Vec<TargetKey>, generation: u64) -> Table {
    let options = CallOptions::timeout(INTROSPECTION_TIMEOUT);
    let asked = ready.iter().map(|target| async {
        let answer = target.call(cellshm::wire::builtin::INTROSPECT_METHODS, &[], &options, None).await;
        (target.clone(), answer.and_then(|a| cellshm::wire::decode_methods(a.bytes()).map_err(protocol_error)))
    });
    let answers = futures_join_all(asked).await;
    let mut methods: HashMap<String, Vec<(Target, MethodKind)>> = HashMap::new();
    let mut describers = Vec::new();
    for (target, answer) in answers {
        match answer {
            Ok(served) => {
                for (name, _, kind) in served {
                    if name == cellshm::wire::builtin::INTROSPECT_DESCRIPTORS {
                        describers.push(target.clone());
                    } else if !name.starts_with("cellshm.") {
                        methods.entry(name).or_default().push((target.clone(), kind));
                    }
                }
            }
            Err(e) => tracing::warn!(cell = target.name(), "the gateway could not ask what it serves: {e}"),
        }
    }
    Table { built_from, checked: None, methods, describers, generation }
}

fn protocol_error(message: String) -> cellshm::Error {
    cellshm::Error::new(cellshm::Status::ProtocolError, message)
}

/// Runs `futures` together and returns their outputs in order.
async fn futures_join_all<F: std::future::Future>(futures: impl IntoIterator<Item = F>) -> Vec<F::Output> {
    let mut set: Vec<std::pin::Pin<Box<F>>> = futures.into_iter().map(Box::pin).collect();
    let mut outputs: Vec<Option<F::Output>> = (0..set.len()).map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (i, future) in set.iter_mut().enumerate() {
            if outputs[i].is_none() {
                match future.as_mut().poll(cx) {
                    std::task::Poll::Ready(out) => outputs[i] = Some(out),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    outputs.into_iter().map(|o| o.expect("every future finished")).collect()
}
