//! The network endpoints a host runs beside its hub (a gRPC gateway serving its cells,
//! a remote gRPC server it serves to them), announced so that `cellshm list` and
//! `cellshm inspect` show them (INFO, docs/PROTOCOL.md §13.1) with their call counts.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};

use crate::runtime::sync::Mutex;

/// The most endpoints INFO lists (a reader bounds what it parses by it).
pub const MAX_LISTED_ENDPOINTS: usize = 32;

/// One endpoint and its counts. Cheap to clone; announce it with
/// [`crate::Hub::announce`]: it is listed while a clone of it lives.
#[derive(Clone, Debug)]
pub struct Endpoint {
    record: Arc<EndpointRecord>,
}

#[derive(Debug)]
struct EndpointRecord {
    kind: String,
    address: String,
    tls: bool,
    calls: AtomicU64,
    failed: AtomicU64,
}

/// An endpoint as INFO lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EndpointListing {
    /// What it is: `grpc-gateway`, `grpc-remote:<name>`, ...
    pub kind: String,
    /// Where: the address it listens on, or the remote's URL.
    pub address: String,
    /// Whether it speaks TLS.
    pub tls: bool,
    /// Calls through it so far.
    pub calls: u64,
    /// Of those, how many failed.
    pub failed: u64,
}

/// A word of an INFO line: no whitespace, no control characters.
fn word(text: &str) -> String {
    let cleaned: String = text.chars().map(|c| if c.is_whitespace() || c.is_control() { '_' } else { c }).collect();
    if cleaned.is_empty() {
        "-".to_string()
    } else {
        cleaned
    }
}

impl Endpoint {
    /// An endpoint of `kind` at `address` (each one word: whitespace becomes `_`).
    pub fn new(kind: &str, address: &str, tls: bool) -> Endpoint {
        Endpoint {
            record: Arc::new(EndpointRecord {
                kind: word(kind),
                address: word(address),
                tls,
                calls: AtomicU64::new(0),
                failed: AtomicU64::new(0),
            }),
        }
    }

    /// Counts a call through it, and whether it failed.
    pub fn count(&self, failed: bool) {
        self.record.calls.fetch_add(1, Ordering::Relaxed);
        if failed {
            self.record.failed.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Counts a failure of a call counted already (one whose end came later).
    pub fn count_failure(&self) {
        self.record.failed.fetch_add(1, Ordering::Relaxed);
    }

    /// (calls, failed) so far.
    pub fn counters(&self) -> (u64, u64) {
        (self.record.calls.load(Ordering::Relaxed), self.record.failed.load(Ordering::Relaxed))
    }

    /// What INFO says of it now.
    pub fn listing(&self) -> EndpointListing {
        let (calls, failed) = self.counters();
        EndpointListing {
            kind: self.record.kind.clone(),
            address: self.record.address.clone(),
            tls: self.record.tls,
            calls,
            failed,
        }
    }
}

/// The endpoints a hub lists: held weakly, so one is listed while its owner keeps it.
#[derive(Default)]
pub(crate) struct Endpoints {
    list: Mutex<Vec<Weak<EndpointRecord>>>,
}

impl Endpoints {
    pub(crate) fn announce(&self, endpoint: &Endpoint) {
        let mut list = self.list.lock();
        list.retain(|e| e.strong_count() > 0);
        if !list.iter().any(|e| e.ptr_eq(&Arc::downgrade(&endpoint.record))) {
            list.push(Arc::downgrade(&endpoint.record));
        }
    }

    /// Those alive now, at most [`MAX_LISTED_ENDPOINTS`].
    pub(crate) fn listing(&self) -> Vec<EndpointListing> {
        let list = self.list.lock();
        list.iter()
            .filter_map(Weak::upgrade)
            .take(MAX_LISTED_ENDPOINTS)
            .map(|record| Endpoint { record }.listing())
            .collect()
    }
}

impl EndpointListing {
    /// Its INFO value: `<kind> <tls 0|1> <calls> <failed> <address>`.
    pub(crate) fn info_value(&self) -> String {
        format!("{} {} {} {} {}", self.kind, u8::from(self.tls), self.calls, self.failed, self.address)
    }

    /// The INFO value read back (None if malformed).
    pub(crate) fn parse(value: &str) -> Option<EndpointListing> {
        let mut fields = value.splitn(5, ' ');
        let kind = fields.next()?.to_string();
        let tls = match fields.next()? {
            "0" => false,
            "1" => true,
            _ => return None,
        };
        let calls = fields.next()?.parse().ok()?;
        let failed = fields.next()?.parse().ok()?;
        let address = fields.next()?.to_string();
        Some(EndpointListing { kind, address, tls, calls, failed })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_are_listed_while_held_and_read_back_from_info() {
        let endpoints = Endpoints::default();
        let gateway = Endpoint::new("grpc-gateway", "127.0.0.1:50051", true);
        let remote = Endpoint::new("grpc-remote:store", "http://10.0.0.7:50051 x\n", false);
        endpoints.announce(&gateway);
        endpoints.announce(&gateway);
        endpoints.announce(&remote);
        gateway.count(false);
        gateway.count(true);
        let listed = endpoints.listing();
        assert_eq!(listed.len(), 2);
        assert_eq!((listed[0].calls, listed[0].failed, listed[0].tls), (2, 1, true));
        assert_eq!(listed[1].address, "http://10.0.0.7:50051_x_", "one word");
        for l in &listed {
            assert_eq!(EndpointListing::parse(&l.info_value()).as_ref(), Some(l));
        }
        assert_eq!(EndpointListing::parse("grpc 2 0 0 a"), None);
        drop(remote);
        assert_eq!(endpoints.listing().len(), 1, "a dropped endpoint is not listed");
    }
}
