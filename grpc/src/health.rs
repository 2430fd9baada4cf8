//! `grpc.health.v1.Health` for the services the cells serve: a service is SERVING while a
//! ready cell serves it and NOT_SERVING otherwise (its cell crashed and is relaunching, or
//! was stopped); the empty service name is SERVING while any is. With a supervisor the
//! statuses follow its events (Watch sees each transition); with a plain hub they are
//! those of the moment the gateway started serving. Either way the updates end with the
//! gateway: they hold its routes weakly.

use std::collections::BTreeMap;
use std::sync::{Arc, Weak};

use cellshm::SupervisorEvents;
use tokio_stream::StreamExt;
use tonic_health::server::HealthReporter;
use tonic_health::ServingStatus;

use crate::routes::Routes;

/// The health of what the cells serve, as a reporter sees it.
pub(crate) struct Health {
    /// Weak: once the gateway's services (which hold the routes) are dropped, there is
    /// nobody to report to and the updates end.
    routes: Weak<Routes>,
    reporter: HealthReporter,
    /// Every service once seen, with the status last reported: a service whose cell is
    /// down is NOT_SERVING, not unknown (a client's Watch of it sees it come back), and
    /// only changes are reported (a Watch sees each transition once).
    known: BTreeMap<String, ServingStatus>,
}

impl Health {
    pub(crate) fn new(routes: Arc<Routes>, reporter: HealthReporter) -> Health {
        Health { routes: Arc::downgrade(&routes), reporter, known: BTreeMap::new() }
    }

    /// Sets every known service's status from the cells ready now; false once the
    /// gateway is gone.
    pub(crate) async fn update(&mut self) -> bool {
        let Some(routes) = self.routes.upgrade() else { return false };
        let ready = routes.ready_services().await;
        drop(routes);
        for service in &ready {
            self.known.entry(service.clone()).or_insert(ServingStatus::Unknown);
        }
        let overall = if ready.is_empty() { ServingStatus::NotServing } else { ServingStatus::Serving };
        let mut statuses: Vec<(String, ServingStatus)> = self
            .known
            .keys()
            .filter(|s| !s.is_empty())
            .map(|s| (s.clone(), if ready.contains(s) { ServingStatus::Serving } else { ServingStatus::NotServing }))
            .collect();
        statuses.push((String::new(), overall));
        for (service, status) in statuses {
            if self.known.insert(service.clone(), status) != Some(status) {
                self.reporter.set_service_status(&service, status).await;
            }
        }
        true
    }

    /// Updates every `interval` while the gateway lives (a relayed hub's cells, whose
    /// events this process does not see).
    pub(crate) async fn poll(mut self, interval: std::time::Duration) {
        loop {
            tokio::time::sleep(interval).await;
            if !self.update().await {
                return;
            }
        }
    }

    /// Updates on each of the supervisor's events, until they end (at once, without) or
    /// the gateway is gone.
    pub(crate) async fn follow(mut self, mut events: Option<SupervisorEvents>) {
        let Some(events) = &mut events else { return };
        while events.next().await.is_some() {
            if !self.update().await {
                return;
            }
        }
    }
}
