//! Metrics: what the host measured of each link, per method and direction.

use crate::*;

/// `direction` of cellshm_peer_method_metrics: calls the host made to the cell.
pub const CELLSHM_HOST_TO_CELL: u32 = 0;
/// `direction` of cellshm_peer_method_metrics: calls the cell made to the host.
pub const CELLSHM_CELL_TO_HOST: u32 = 1;

/// What the host measured of one method in one direction of one link.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct cellshm_method_metrics {
    /// Calls finished (answered, failed or given up).
    pub calls: u64,
    /// Finished calls that ended with an error (any status).
    pub errors: u64,
    /// Calls started and not finished yet.
    pub in_flight: u64,
    /// Latency of the finished calls, in ns: median and 99th percentile (each within
    /// 19 %) and the longest (exact).
    pub p50_ns: u64,
    /// See `p50_ns`.
    pub p99_ns: u64,
    /// See `p50_ns`.
    pub max_ns: u64,
}

/// Writes what the host measured of calls of `method` ("Service.method") in `direction`
/// (CELLSHM_HOST_TO_CELL or CELLSHM_CELL_TO_HOST) on this peer's link to `*out_metrics`.
/// CELLSHM_NOT_FOUND if no such call was made yet.
///
/// # Safety
/// `peer` is live; `method` NUL-terminated; `out_metrics` writable.
#[no_mangle]
pub unsafe extern "C" fn cellshm_peer_method_metrics(
    peer: *const cellshm_peer,
    direction: u32,
    method: *const c_char,
    out_metrics: *mut cellshm_method_metrics,
) -> cellshm_status {
    boundary("cellshm_peer_method_metrics", || {
        // SAFETY: cellshm_peer_method_metrics's contract, which C keeps: `peer` is live; `method` NUL-terminated; `out_metrics` writable.
        let (arg0, arg1, arg2) =
            unsafe { (Out::new(out_metrics, "out_metrics"), Handle::borrow(peer), c_str(method, "method")) };
        let (out_metrics, peer, method) = (try_c!(arg0), try_c!(arg1), try_c!(arg2));
        let metrics = peer.peer.metrics();
        let methods = match direction {
            CELLSHM_HOST_TO_CELL => &metrics.outgoing,
            CELLSHM_CELL_TO_HOST => &metrics.incoming,
            other => {
                return invalid(format!("direction {other} is neither CELLSHM_HOST_TO_CELL nor CELLSHM_CELL_TO_HOST"))
            }
        };
        let id = cellshm::method_id(method);
        let Some(m) = methods.iter().find(|m| m.method_id == id) else {
            return fail(Error::new(Status::NotFound, format!("no call of {method:?} was made that way yet")));
        };
        let out = cellshm_method_metrics {
            calls: m.calls,
            errors: m.error_count(),
            in_flight: m.in_flight,
            p50_ns: m.latency.p50_ns,
            p99_ns: m.latency.p99_ns,
            max_ns: m.latency.max_ns,
        };
        out_metrics.write(out)
    })
}

/// Writes every metric of every peer of the hub as one JSON array (the objects
/// `cellshm inspect --json` shows under `metrics`, with `peer_id`, `name`, `state` and
/// `pid`) to `*out_json`, owned by the caller: release it with cellshm_string_free.
///
/// # Safety
/// `hub` is live; `out_json` writable.
#[no_mangle]
pub unsafe extern "C" fn cellshm_hub_metrics_json(
    hub: *const cellshm_hub,
    out_json: *mut *mut c_char,
) -> cellshm_status {
    boundary("cellshm_hub_metrics_json", || {
        // SAFETY: cellshm_hub_metrics_json's contract, which C keeps: `hub` is live; `out_json` writable.
        let (arg0, arg1) = unsafe { (Out::new(out_json, "out_json"), Handle::borrow(hub)) };
        let (out_json, hub) = (try_c!(arg0), try_c!(arg1));
        let json = hub_metrics_json(&hub.hub);
        let text = CString::new(json).unwrap_or_default();
        out_json.write(text.into_raw())
    })
}

/// The JSON array of every peer's metrics.
pub(crate) fn hub_metrics_json(hub: &Hub) -> String {
    let peers: Vec<String> = hub.metrics().iter().map(cellshm::PeerMetrics::to_json).collect();
    format!("[{}]", peers.join(","))
}

/// Frees a string this library allocated for the caller. NULL is a no-op.
///
/// # Safety
/// `text` is NULL or a string from this library not freed before.
#[no_mangle]
pub unsafe extern "C" fn cellshm_string_free(text: *mut c_char) {
    if !text.is_null() {
        // SAFETY: made by CString::into_raw in this library and not freed before.
        let _ = catch_unwind(AssertUnwindSafe(|| drop(unsafe { CString::from_raw(text) })));
    }
}
