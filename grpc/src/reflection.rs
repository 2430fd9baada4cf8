//! gRPC server reflection (`grpc.reflection.v1` and `v1alpha`) for what the cells serve,
//! so `grpcurl list`, `describe` and `call` work without `.proto` files. The descriptors
//! come from the cells (`cellshm.Introspect.descriptors`, which generated code fills from
//! the sets `cellshm-codegen` embeds), asked again only when the set of ready cells
//! changed; tonic-reflection answers from them. Every service the cells serve is listed,
//! described or not (a foreign cell that registered no descriptors is still callable).

use std::collections::BTreeSet;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use prost::Message;
use prost_types::FileDescriptorSet;
use tonic::body::Body;
use tonic::server::NamedService;
use tonic_reflection::server::Builder;

use crate::routes::{Described, Routes};

/// How long asking one cell for its descriptors may take.
const DESCRIPTORS_TIMEOUT: Duration = Duration::from_secs(2);

/// The gRPC services the gateway serves itself, always listed.
const OWN_SERVICES: [&str; 3] =
    ["grpc.health.v1.Health", "grpc.reflection.v1.ServerReflection", "grpc.reflection.v1alpha.ServerReflection"];

type Service = tower::util::BoxCloneSyncService<http::Request<Body>, http::Response<Body>, Infallible>;

/// Both reflection services as built for one generation of the routes.
#[derive(Clone)]
struct Built {
    generation: u64,
    v1: Service,
    v1alpha: Service,
}

/// The reflection services, rebuilt from the cells when the routes change.
pub(crate) struct Reflection {
    routes: Arc<Routes>,
    built: Mutex<Option<Built>>,
}

impl Reflection {
    pub(crate) fn new(routes: Arc<Routes>) -> Arc<Reflection> {
        Arc::new(Reflection { routes, built: Mutex::new(None) })
    }

    /// The services for the cells ready now.
    async fn current(&self) -> Built {
        let described = self.routes.described().await;
        if let Some(built) = self.built.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
            if built.generation == described.generation {
                return built.clone();
            }
        }
        let sets = descriptors_of(&described).await;
        let built = build(described.generation, &described.services, sets);
        *self.built.lock().unwrap_or_else(|e| e.into_inner()) = Some(built.clone());
        built
    }

    /// The tower service of `grpc.reflection.v1.ServerReflection` (`V1ALPHA` false) or
    /// of `grpc.reflection.v1alpha.ServerReflection` (true).
    pub(crate) fn service<const V1ALPHA: bool>(self: &Arc<Reflection>) -> ReflectionService<V1ALPHA> {
        ReflectionService { reflection: self.clone() }
    }
}

/// Asks every describing cell for its descriptors, all at once; a cell that cannot
/// answer, or answers what does not decode, is left out (and logged).
async fn descriptors_of(described: &Described) -> Vec<FileDescriptorSet> {
    let asked: Vec<_> = described
        .describers
        .iter()
        .map(|target| {
            let options = cellshm::CallOptions::timeout(DESCRIPTORS_TIMEOUT);
            let method = cellshm::wire::builtin::INTROSPECT_DESCRIPTORS;
            (target.name().to_string(), async move { target.call(method, &[], &options, None).await })
        })
        .collect();
    let mut sets = Vec::new();
    for (peer, answer) in asked {
        match answer.await.map_err(|e| e.to_string()).and_then(|b| {
            FileDescriptorSet::decode(b.bytes()).map_err(|e| format!("its descriptors do not decode: {e}"))
        }) {
            Ok(set) => sets.push(set),
            Err(e) => tracing::warn!(peer, "reflection leaves out a cell's descriptors: {e}"),
        }
    }
    sets
}

/// The reflection services for `services`, described by `sets` (a set tonic-reflection
/// refuses is left out: the others still describe their services).
fn build(generation: u64, services: &BTreeSet<String>, sets: Vec<FileDescriptorSet>) -> Built {
    let builder = |sets: &[FileDescriptorSet]| {
        let mut builder = Builder::configure()
            .include_reflection_service(false)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET);
        for set in sets {
            builder = builder.register_file_descriptor_set(set.clone());
        }
        for service in services.iter().map(String::as_str).chain(OWN_SERVICES) {
            builder = builder.with_service_name(service);
        }
        builder
    };
    let usable: Vec<FileDescriptorSet> = sets
        .into_iter()
        .filter(|set| match builder(std::slice::from_ref(set)).build_v1() {
            Ok(_) => true,
            Err(e) => {
                tracing::warn!("reflection leaves out a descriptor set: {e}");
                false
            }
        })
        .collect();
    let (v1, v1alpha) = match (builder(&usable).build_v1(), builder(&usable).build_v1alpha()) {
        (Ok(v1), Ok(v1alpha)) => (Service::new(v1), Service::new(v1alpha)),
        // Each set built alone; together they still may clash (one symbol, two files).
        _ => (
            Service::new(builder(&[]).build_v1().expect("tonic's own descriptors build")),
            Service::new(builder(&[]).build_v1alpha().expect("tonic's own descriptors build")),
        ),
    };
    Built { generation, v1, v1alpha }
}

/// One version of the reflection service, answering from the current build.
#[derive(Clone)]
pub(crate) struct ReflectionService<const V1ALPHA: bool> {
    reflection: Arc<Reflection>,
}

impl NamedService for ReflectionService<false> {
    const NAME: &'static str = "grpc.reflection.v1.ServerReflection";
}

impl NamedService for ReflectionService<true> {
    const NAME: &'static str = "grpc.reflection.v1alpha.ServerReflection";
}

impl<const V1ALPHA: bool> tower::Service<http::Request<Body>> for ReflectionService<V1ALPHA> {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = crate::gateway::BoxFuture<Result<http::Response<Body>, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let reflection = self.reflection.clone();
        Box::pin(async move {
            let built = reflection.current().await;
            let mut service = if V1ALPHA { built.v1alpha } else { built.v1 };
            tower::ServiceExt::oneshot(&mut service, request).await
        })
    }
}
