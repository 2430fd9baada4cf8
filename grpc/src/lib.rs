//! A gRPC gateway for a cellshm hub: real gRPC on HTTP/2 (tonic, hyper, h2) in front of
//! the hub's cells, so any gRPC client in any language, grpcurl, load balancers and
//! meshes reach them unchanged.
//!
//! A request for `/pkg.Svc/Method` goes to a ready cell that serves `pkg.Svc.Method`
//! (found through introspection; round robin among several; UNIMPLEMENTED for none), as
//! raw bytes: the gateway decodes nothing and needs no generated code. All four method
//! kinds pass through: the request's `grpc-timeout` becomes the call's deadline, a
//! client that resets its stream or goes away cancels the call (the handler sees CANCEL),
//! a stream's items flow only as fast as HTTP/2's windows and cellshm's credit both
//! allow, and statuses come back with their codes and messages (cellshm's own, such as
//! PEER_DEAD, as the nearest gRPC code with the original in the `cellshm-status`
//! metadata key). `grpc.health.v1.Health` reports each service's health, and gRPC server
//! reflection (v1 and v1alpha) lists what the cells serve and describes it from the
//! descriptors they registered (`cellshm::Registry::describe`, which generated code calls).
//!
//! A gateway can also run in a process of its own, in front of another process's hub:
//! [`Gateway::relayed`] with a `Cell` attached to that hub, whose host enabled its relay
//! (`Hub::enable_relay`); `cellshm-grpc serve --hub NAME` does that.
//!
//! ```no_run
//! # async fn f(hub: &cellshm::Hub) -> Result<(), Box<dyn std::error::Error>> {
//! let gateway = cellshm_grpc::Gateway::new(hub);
//! gateway.serve("127.0.0.1:50051".parse()?).await?;
//! # Ok(()) }
//! ```

mod codec;
mod gateway;
mod health;
mod reflection;
mod remote;
mod routes;
mod status;
mod target;
mod timeout;
mod tls;

pub use codec::RawCodec;
pub use gateway::{Gateway, TokenCheck, DEFAULT_MAX_CONCURRENT_STREAMS, DEFAULT_MAX_MESSAGE};
pub use remote::{
    from_grpc_status, shared_runtime, AddRemote, Remote, RemoteOptions, DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_HEALTH_INTERVAL,
};
pub use status::{to_grpc_status, STATUS_METADATA};
pub use timeout::parse_grpc_timeout;
pub use tls::Tls;
