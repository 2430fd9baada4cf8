//! `cellshm list`: the live hubs of this user.

use cellshm::Error;
use serde_json::json;

use crate::text::duration_text;

/// `cellshm list [--json]`.
pub(crate) fn run(json: bool) -> Result<(), Error> {
    let hubs = cellshm::list_hubs()?;
    if json {
        let items: Vec<serde_json::Value> = hubs.iter().map(listing_json).collect();
        println!("{}", serde_json::Value::Array(items));
        return Ok(());
    }
    if hubs.is_empty() {
        println!("(no live hubs)");
        return Ok(());
    }
    println!("{:<32} {:>8} {:>9} {:>9} {:>6}", "hub", "pid", "peers", "uptime", "attach");
    for h in &hubs {
        println!(
            "{:<32} {:>8} {:>9} {:>9} {:>6}",
            h.name,
            h.host_pid,
            format!("{}/{}", h.peers, h.max_peers),
            duration_text(h.uptime_ms),
            if h.attach { "yes" } else { "no" }
        );
        for e in &h.endpoints {
            println!("  {}", endpoint_text(e));
        }
    }
    Ok(())
}

/// One endpoint a host runs beside its hub, as a line: kind, address, TLS, calls.
pub(crate) fn endpoint_text(e: &cellshm::EndpointListing) -> String {
    format!("{} {}{}  {} calls, {} failed", e.kind, e.address, if e.tls { " (TLS)" } else { "" }, e.calls, e.failed)
}

pub(crate) fn endpoints_json(endpoints: &[cellshm::EndpointListing]) -> serde_json::Value {
    endpoints
        .iter()
        .map(|e| json!({"kind": e.kind, "address": e.address, "tls": e.tls, "calls": e.calls, "failed": e.failed}))
        .collect()
}

fn listing_json(h: &cellshm::HubListing) -> serde_json::Value {
    json!({
        "name": h.name,
        "layout": format!("{}.{}", h.version.0, h.version.1),
        "host_pid": h.host_pid,
        "uid": h.uid,
        "peers": h.peers,
        "max_peers": h.max_peers,
        "uptime_ms": h.uptime_ms,
        "started_unix_ms": h.started_unix_ms,
        "attach": h.attach,
        "endpoints": endpoints_json(&h.endpoints),
    })
}
