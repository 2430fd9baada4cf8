//! A link end as a [`tower_service::Service`] (feature `tower`), so tower's middleware applies to
//! cellshm calls: timeouts, retries, rate and concurrency limits, load shedding,
//! tracing. A request is a method name and its payload (with options of its own if it
//! needs them); the response is the call's [`Response`]. The call is
//! [`LinkEnd::call_async`]: a middleware that drops the future (a timeout) cancels the
//! call, and the handler sees CANCEL.
//!
//! ```no_run
//! # async fn f(peer: cellshm::Peer) -> Result<(), tower::BoxError> {
//! use cellshm::tower::{CallRequest, LinkService};
//! use tower::{Service, ServiceBuilder, ServiceExt};
//! let mut service = ServiceBuilder::new()
//!     .concurrency_limit(64)
//!     .service(LinkService::new(peer));
//! let reply = service.ready().await?.call(CallRequest::new("Echo.echo", b"hi".to_vec())).await?;
//! assert_eq!(reply.bytes(), b"hi");
//! # Ok(()) }
//! ```

use std::task::{Context, Poll};

use crate::error::{Error, Result};
use crate::runtime::session::{CallFuture, CallOptions, Response};
use crate::LinkEnd;

/// One call through a [`LinkService`]: `Clone`, so a retry layer can send it again.
#[derive(Clone, Debug)]
pub struct CallRequest {
    /// `"Service.method"`.
    pub method: String,
    /// The request payload.
    pub payload: Vec<u8>,
    /// Options for this call; `None`: the service's.
    pub options: Option<CallOptions>,
}

impl CallRequest {
    /// A call of `method` with `payload` and the service's options.
    pub fn new(method: impl Into<String>, payload: impl Into<Vec<u8>>) -> CallRequest {
        CallRequest { method: method.into(), payload: payload.into(), options: None }
    }

    /// The same call with options of its own.
    pub fn with_options(mut self, options: CallOptions) -> CallRequest {
        self.options = Some(options);
        self
    }
}

/// A link end (a host's [`crate::Peer`], an `Arc<Cell>`, ...) as a `tower::Service`.
#[derive(Clone, Debug)]
pub struct LinkService<E> {
    end: E,
    options: CallOptions,
}

impl<E: LinkEnd> LinkService<E> {
    /// Calls through `end` with default options (the end's default timeout).
    pub fn new(end: E) -> LinkService<E> {
        LinkService { end, options: CallOptions::default() }
    }

    /// The options of every call that brings none.
    pub fn with_options(mut self, options: CallOptions) -> LinkService<E> {
        self.options = options;
        self
    }

    /// The end it calls through.
    pub fn end(&self) -> &E {
        &self.end
    }
}

impl<E: LinkEnd> tower_service::Service<CallRequest> for LinkService<E> {
    type Response = Response;
    type Error = Error;
    type Future = CallFuture;

    /// Always ready: a call that cannot go (the link is down) fails as its future, with
    /// the reason; back-pressure beyond the ring is the concurrency limit's to add.
    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: CallRequest) -> CallFuture {
        let options = request.options.as_ref().unwrap_or(&self.options);
        self.end.call_async(&request.method, &request.payload, options)
    }
}
