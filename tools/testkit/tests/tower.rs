//! A peer as a `tower::Service` (`cellshm::tower`, feature `tower`): tower's middleware
//! over real calls: a concurrency limit with `call_all`, a timeout whose drop cancels the
//! call in the cell, and cellshm's own errors coming through.

mod common;

use std::time::Duration;

use cellshm::tower::{CallRequest, LinkService};
use cellshm::{CallOptions, HubConfig, Status};
use common::{cancel_seen_after, start};
use tower::{Service, ServiceBuilder, ServiceExt};

#[test]
fn tower_middleware_limits_times_out_and_cancels_real_calls() {
    let r = start(HubConfig::default(), &[]);
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_time().build().unwrap();
    runtime.block_on(async {
        let service = ServiceBuilder::new()
            .concurrency_limit(8)
            .timeout(Duration::from_secs(10))
            .service(LinkService::new(r.peer.clone()).with_options(CallOptions::timeout(Duration::from_secs(30))));
        let requests = (0..500u32).map(|i| CallRequest::new("Echo.echo", i.to_le_bytes().to_vec()));
        let replies: Vec<_> =
            futures::StreamExt::collect(service.clone().call_all(futures::stream::iter(requests))).await;
        assert_eq!(replies.len(), 500);
        for (i, reply) in replies.into_iter().enumerate() {
            assert_eq!(reply.unwrap().bytes(), (i as u32).to_le_bytes());
        }

        // tower's timeout drops the call's future: the handler sees the cancel.
        let mut short =
            ServiceBuilder::new().timeout(Duration::from_millis(50)).service(LinkService::new(r.peer.clone()));
        let dropped_at = cellshm::monotonic_now_ns();
        let e =
            short.ready().await.unwrap().call(CallRequest::new("Test.until_cancelled", Vec::new())).await.unwrap_err();
        assert!(e.is::<tower::timeout::error::Elapsed>(), "{e}");
        cancel_seen_after(&r.peer, dropped_at);

        // A cellshm error comes through as itself.
        let mut plain = LinkService::new(r.peer.clone());
        let e = plain.ready().await.unwrap().call(CallRequest::new("No.such", Vec::new())).await.unwrap_err();
        assert_eq!(e.status(), Status::Unimplemented, "{e}");
    });
}
