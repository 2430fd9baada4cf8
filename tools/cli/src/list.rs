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
    }
    Ok(())
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
    })
}
