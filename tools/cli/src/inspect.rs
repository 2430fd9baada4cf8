//! `cellshm inspect`: every link of a live hub and what its host measured, and its topics
//! with each subscription's lag and drops.

use cellshm::Error;
use serde_json::json;

use crate::text::{duration_text, human, latency_text};

/// `cellshm inspect HUB [--json]` (once; `--watch` repeats it).
pub(crate) fn run(name: &str, json: bool) -> Result<(), Error> {
    let snap = cellshm::snapshot(name)?;
    if json {
        println!("{}", snapshot_json(&snap));
        return Ok(());
    }
    let g = &snap.info.geometry;
    println!(
        "hub {}  layout {}.{}  host pid {}  up {}",
        snap.info.name,
        snap.info.version.0,
        snap.info.version.1,
        snap.info.host_pid,
        duration_text(snap.info.uptime_ms)
    );
    let classes: Vec<String> =
        g.classes.iter().map(|c| format!("{}x{}", c.slot_count, human(c.slot_size as u64))).collect();
    println!(
        "{} peer slots, rings of {} descriptors, slot classes {}",
        snap.info.max_peers,
        g.ring_capacity,
        classes.join(" ")
    );
    for e in &snap.info.endpoints {
        println!("endpoint {}", crate::list::endpoint_text(e));
    }
    println!(
        "{:>4} {:<10} {:>5} {:>7} {:<16} {:>9} {:>9} {:<16} {:<16} {:>9} {:>9} {:>7}",
        "peer",
        "state",
        "epoch",
        "pid",
        "name",
        "ring h>c",
        "ring c>h",
        "host pool",
        "cell pool",
        "calls h>c",
        "calls c>h",
        "errors"
    );
    for p in &snap.peers {
        let pool = |v: &[u32]| v.iter().map(u32::to_string).collect::<Vec<_>>().join("/");
        println!(
            "{:>4} {:<10} {:>5} {:>7} {:<16} {:>9} {:>9} {:<16} {:<16} {:>9} {:>9} {:>7}",
            p.id,
            state_of(&snap, p),
            p.epoch,
            p.pid,
            p.name,
            p.host_to_cell_depth,
            p.cell_to_host_depth,
            pool(&p.host_pool_in_use),
            pool(&p.cell_pool_in_use),
            p.host_counters.calls_sent,
            p.cell_counters.calls_sent,
            p.host_counters.errors + p.cell_counters.errors
        );
    }
    print_topics(&snap.topics);
    if snap.peers.is_empty() {
        println!("(no peers)");
        return Ok(());
    }
    println!();
    println!(
        "{:>4} {:<16} {:<9} {:<32} {:>9} {:>7} {:>9} {:>9} {:>9} {:>9}  errors",
        "peer", "name", "direction", "method", "calls", "errors", "in flight", "p50", "p99", "max"
    );
    for m in &snap.metrics {
        for (direction, methods) in [("host>cell", &m.outgoing), ("cell>host", &m.incoming)] {
            for method in methods {
                let errors: Vec<String> = method.errors.iter().map(|(s, n)| format!("{}={n}", s.name())).collect();
                println!(
                    "{:>4} {:<16} {:<9} {:<32} {:>9} {:>7} {:>9} {:>9} {:>9} {:>9}  {}",
                    m.peer_id,
                    m.name,
                    direction,
                    method.name,
                    method.calls,
                    method.error_count(),
                    method.in_flight,
                    latency_text(method.latency.p50_ns),
                    latency_text(method.latency.p99_ns),
                    latency_text(method.latency.max_ns),
                    errors.join(" ")
                );
            }
        }
        println!(
            "{:>4} {:<16} streams open {}, opened {}; refused calls {}; restarts {}",
            m.peer_id, m.name, m.open_streams, m.streams_opened, m.refused_calls, m.restarts
        );
    }
    Ok(())
}

/// A subscription's policy as the APIs name it.
fn policy_text(policy: cellshm::TopicPolicy) -> String {
    match policy {
        cellshm::TopicPolicy::Block => "block".into(),
        cellshm::TopicPolicy::DropOldest => "drop_oldest".into(),
        cellshm::TopicPolicy::DropNewest => "drop_newest".into(),
        cellshm::TopicPolicy::DisconnectAfter(n) => format!("disconnect_after({n})"),
    }
}

/// Each topic, then its subscriptions: lag (queued, unread) and drops.
fn print_topics(topics: &[cellshm::TopicReport]) {
    if topics.is_empty() {
        return;
    }
    println!();
    println!(
        "{:<24} {:<16} {:>11} {:>8} {:>6}  {:<20} {:<22} {:>6} {:>9} {:>9}",
        "topic", "publisher", "published", "sample", "depth", "subscriber", "policy", "lag", "dropped", "received"
    );
    for t in topics {
        let s = &t.stats;
        let first = format!(
            "{:<24} {:<16} {:>11} {:>8} {:>6}",
            t.name,
            t.publisher,
            s.published,
            human(s.sample_size as u64),
            s.depth
        );
        if s.subscriptions.is_empty() {
            println!("{first}  (no subscribers)");
        }
        for (i, (sub, holder)) in s.subscriptions.iter().zip(&t.holders).enumerate() {
            let lead = if i == 0 { first.clone() } else { " ".repeat(first.len()) };
            println!(
                "{lead}  {:<20} {:<22} {:>6} {:>9} {:>9}",
                holder,
                policy_text(sub.policy),
                sub.queued,
                sub.dropped,
                sub.received.map_or("-".to_string(), |r| r.to_string())
            );
        }
    }
}

fn topics_json(topics: &[cellshm::TopicReport]) -> serde_json::Value {
    let topics: Vec<serde_json::Value> = topics
        .iter()
        .map(|t| {
            let s = &t.stats;
            let subscriptions: Vec<serde_json::Value> = s
                .subscriptions
                .iter()
                .zip(&t.holders)
                .map(|(sub, holder)| {
                    json!({
                        "index": sub.index,
                        "holder": holder,
                        "policy": policy_text(sub.policy),
                        "lag": sub.queued,
                        "dropped": sub.dropped,
                        "received": sub.received,
                        "missed": sub.missed,
                    })
                })
                .collect();
            json!({
                "name": t.name,
                "publisher": t.publisher,
                "published": s.published,
                "closed": s.closed,
                "sample_size": s.sample_size,
                "depth": s.depth,
                "history": s.history,
                "subscriptions": subscriptions,
            })
        })
        .collect();
    serde_json::Value::Array(topics)
}

/// The peer's state as the API names it ("ready", "dead", ...), from the host's own
/// record when it sent one, else from the slot in shared memory.
fn state_of(snap: &cellshm::HubSnapshot, p: &cellshm::PeerSnapshot) -> String {
    match snap.metrics.iter().find(|m| m.peer_id == p.id) {
        Some(m) => m.state.to_string(),
        None => format!("{:?}", p.state).to_lowercase(),
    }
}

fn counters_json(c: &cellshm::Counters) -> serde_json::Value {
    json!({
        "calls_sent": c.calls_sent,
        "requests_served": c.requests_served,
        "errors": c.errors,
        "bytes_sent": c.bytes_sent,
    })
}

fn snapshot_json(snap: &cellshm::HubSnapshot) -> serde_json::Value {
    let g = &snap.info.geometry;
    let classes: Vec<serde_json::Value> =
        g.classes.iter().map(|c| json!({"slot_size": c.slot_size, "slot_count": c.slot_count})).collect();
    let peers: Vec<serde_json::Value> = snap
        .peers
        .iter()
        .map(|p| {
            // The library's own rendering of the metrics (the C API returns the same).
            let metrics = snap
                .metrics
                .iter()
                .find(|m| m.peer_id == p.id)
                .and_then(|m| serde_json::from_str(&m.to_json()).ok())
                .unwrap_or(serde_json::Value::Null);
            json!({
                "id": p.id,
                "state": state_of(snap, p),
                "slot_state": format!("{:?}", p.state).to_lowercase(),
                "epoch": p.epoch,
                "pid": p.pid,
                "name": p.name,
                "ring_host_to_cell": p.host_to_cell_depth,
                "ring_cell_to_host": p.cell_to_host_depth,
                "host_pool_in_use": p.host_pool_in_use,
                "cell_pool_in_use": p.cell_pool_in_use,
                "host": counters_json(&p.host_counters),
                "cell": counters_json(&p.cell_counters),
                "metrics": metrics,
            })
        })
        .collect();
    json!({
        "name": snap.info.name,
        "layout": format!("{}.{}", snap.info.version.0, snap.info.version.1),
        "host_pid": snap.info.host_pid,
        "max_peers": snap.info.max_peers,
        "ring_capacity": g.ring_capacity,
        "slot_classes": classes,
        "endpoints": crate::list::endpoints_json(&snap.info.endpoints),
        "peers": peers,
        "topics": topics_json(&snap.topics),
    })
}
