//! A read-only look at a live hub from outside its processes: what `cellshm inspect`
//! shows. The hub hands out read-only descriptors of every link's memfds through its
//! discovery socket; `shm::inspect` maps them read-only, so inspecting cannot disturb
//! the links.

use std::fs::File;

use std::fmt::Write as _;

use super::discovery::{self, HubListing};
use super::PeerMetrics;
use crate::error::{Error, Result};
use crate::runtime::metrics::{LatencySummary, MethodMetrics};
use crate::shm::inspect::{read_peer, PeerSnapshot, SlotRecord};
use crate::shm::topic::{SubscriptionStats, TopicStats};
use crate::shm::PeerSlotState;
use crate::wire::Status;
use crate::{TopicPolicy, TopicReport};

/// A hub as seen from outside.
#[derive(Clone, Debug)]
pub struct HubSnapshot {
    /// What the hub says about itself.
    pub info: HubListing,
    /// Every peer not yet reclaimed.
    pub peers: Vec<PeerSnapshot>,
    /// What the host measured of each of them (by peer id).
    pub metrics: Vec<PeerMetrics>,
    /// The hub's topics (empty from a host that sends none).
    pub topics: Vec<TopicReport>,
}

/// Most topic records a reader takes from one INSPECT reply: a host cannot make it read
/// without end.
const MOST_TOPIC_RECORDS: usize = 1 << 16;

/// The hub's topics as lines of the INSPECT reply (docs/PROTOCOL.md §13.2): per topic one
/// `TOPIC` line, then one `SUB` line per subscription.
pub(crate) fn topic_lines(reports: &[TopicReport]) -> Vec<String> {
    let mut lines = Vec::new();
    for t in reports {
        let s = &t.stats;
        lines.push(format!(
            "TOPIC {} {} {} {} {} {} {}{}\n",
            s.published,
            u8::from(s.closed),
            s.sample_size,
            s.depth,
            s.history,
            t.name.len(),
            t.name,
            t.publisher.replace('\n', " ")
        ));
        for (sub, holder) in s.subscriptions.iter().zip(&t.holders) {
            let (code, n) = sub.policy.code();
            let count = |v: Option<u64>| v.map_or("-".to_string(), |v| v.to_string());
            lines.push(format!(
                "SUB {} {code} {n} {} {} {} {} {}\n",
                sub.index,
                sub.queued,
                sub.dropped,
                count(sub.received),
                count(sub.missed),
                holder.replace('\n', " ")
            ));
        }
    }
    lines
}

/// Adds one `TOPIC` or `SUB` line to `topics`; None for a line that is neither.
fn apply_topic_line(line: &str, topics: &mut Vec<TopicReport>) -> Option<()> {
    let line = line.strip_suffix('\n').unwrap_or(line);
    if let Some(rest) = line.strip_prefix("TOPIC ") {
        let mut parts = rest.splitn(7, ' ');
        let mut number = || parts.next()?.parse::<u64>().ok();
        let (published, closed, sample_size, depth, history, name_len) =
            (number()?, number()?, number()?, number()?, number()?, number()? as usize);
        let names = parts.next()?;
        let (name, publisher) = (names.get(..name_len)?, names.get(name_len..)?);
        topics.push(TopicReport {
            name: name.to_string(),
            publisher: publisher.to_string(),
            stats: TopicStats {
                sample_size: u32::try_from(sample_size).ok()?,
                depth: u32::try_from(depth).ok()?,
                history: u32::try_from(history).ok()?,
                published,
                closed: closed != 0,
                subscriptions: Vec::new(),
            },
            holders: Vec::new(),
        });
        return Some(());
    }
    let rest = line.strip_prefix("SUB ")?;
    let topic = topics.last_mut()?;
    let mut parts = rest.splitn(8, ' ');
    let mut number = || parts.next()?.parse::<u64>().ok();
    let (index, code, n, queued, dropped) = (number()?, number()?, number()?, number()?, number()?);
    let mut optional = || parts.next().map(|v| v.parse::<u64>().ok());
    let (received, missed) = (optional()?, optional()?);
    let holder = parts.next().unwrap_or_default().to_string();
    topic.stats.subscriptions.push(SubscriptionStats {
        index: u32::try_from(index).ok()?,
        policy: TopicPolicy::from_code(u32::try_from(code).ok()?, u32::try_from(n).ok()?)?,
        queued,
        dropped,
        received,
        missed,
    });
    topic.holders.push(holder);
    Some(())
}

/// A peer's metrics as lines of the INSPECT reply (docs/PROTOCOL.md §13.2): one `STATS`
/// line, then one `METHOD` line per method and direction.
pub(crate) fn metric_lines(m: &PeerMetrics) -> Vec<String> {
    let mut lines = vec![format!(
        "STATS {} {} {} {} {} {} {}\n",
        m.peer_id,
        m.state,
        m.open_streams,
        m.streams_opened,
        m.refused_calls,
        m.restarts,
        m.pid.unwrap_or(0)
    )];
    for (direction, methods) in [("out", &m.outgoing), ("in", &m.incoming)] {
        for method in methods {
            let mut errors = String::new();
            for (status, n) in &method.errors {
                let _ = write!(errors, "{}{}:{n}", if errors.is_empty() { "" } else { "," }, status.code());
            }
            let l = &method.latency;
            lines.push(format!(
                "METHOD {} {direction} {} {} {} {} {} {} {} {} {}\n",
                m.peer_id,
                method.method_id,
                method.calls,
                method.in_flight,
                l.count,
                l.p50_ns,
                l.p99_ns,
                l.max_ns,
                if errors.is_empty() { "-" } else { &errors },
                // One record per line: a name is never allowed to start another.
                method.name.replace(['\n', '\r'], " ")
            ));
        }
    }
    lines
}

fn state_name(text: &str) -> &'static str {
    ["starting", "joined", "ready", "leaving", "dead"].into_iter().find(|s| *s == text).unwrap_or("unknown")
}

/// Applies one metrics line of an INSPECT reply to `metrics`.
fn apply_metric_line(line: &str, metrics: &mut Vec<PeerMetrics>, names: &[(u32, String)]) -> Option<()> {
    let line = line.trim_end();
    if let Some(rest) = line.strip_prefix("STATS ") {
        let f: Vec<&str> = rest.split(' ').collect();
        let peer_id: u32 = f.first()?.parse().ok()?;
        let pid: u32 = f.get(6)?.parse().ok()?;
        metrics.push(PeerMetrics {
            peer_id,
            name: names.iter().find(|(id, _)| *id == peer_id).map(|(_, n)| n.clone()).unwrap_or_default(),
            pid: (pid != 0).then_some(pid),
            state: state_name(f.get(1)?),
            outgoing: Vec::new(),
            incoming: Vec::new(),
            open_streams: f.get(2)?.parse().ok()?,
            streams_opened: f.get(3)?.parse().ok()?,
            refused_calls: f.get(4)?.parse().ok()?,
            restarts: f.get(5)?.parse().ok()?,
        });
        return Some(());
    }
    let rest = line.strip_prefix("METHOD ")?;
    let mut f = rest.splitn(11, ' ');
    let peer_id: u32 = f.next()?.parse().ok()?;
    let direction = f.next()?;
    let mut num = || -> Option<u64> { f.next()?.parse().ok() };
    let (method_id, calls, in_flight) = (num()? as u32, num()?, num()?);
    let latency = LatencySummary { count: num()?, p50_ns: num()?, p99_ns: num()?, max_ns: num()? };
    let errors_text = f.next()?;
    let name = f.next().unwrap_or_default().to_string();
    let errors = if errors_text == "-" {
        Vec::new()
    } else {
        errors_text
            .split(',')
            .map(|e| {
                let (code, n) = e.split_once(':')?;
                Some((Status::from_code(code.parse().ok()?).unwrap_or(Status::Unknown), n.parse().ok()?))
            })
            .collect::<Option<Vec<_>>>()?
    };
    let peer = metrics.iter_mut().find(|m| m.peer_id == peer_id)?;
    let method = MethodMetrics { method_id, name, calls, in_flight, errors, latency };
    match direction {
        "out" => peer.outgoing.push(method),
        "in" => peer.incoming.push(method),
        _ => return None,
    }
    Some(())
}

fn parse_peer_line(line: &str) -> Option<SlotRecord> {
    let rest = line.trim_end().strip_prefix("PEER ")?;
    let mut parts = rest.splitn(5, ' ');
    let id = parts.next()?.parse().ok()?;
    let epoch = parts.next()?.parse().ok()?;
    let state = PeerSlotState::from_raw(parts.next()?.parse().ok()?)?;
    let pid = parts.next()?.parse().ok()?;
    Some(SlotRecord { id, epoch, state, pid, name: parts.next().unwrap_or_default().to_string() })
}

/// Reads every link of the live hub `name` (of this user).
pub fn snapshot(name: &str) -> Result<HubSnapshot> {
    let socket = discovery::connect(name)?;
    let (text, _) = discovery::request(&socket, "INSPECT\n")?;
    let info = discovery::parse_listing(&text)?;
    let records: usize = text
        .lines()
        .find_map(|l| l.strip_prefix("peer_records="))
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| Error::new(Status::ProtocolError, "the INSPECT reply has no peer_records"))?;
    let metric_records: usize =
        text.lines().find_map(|l| l.strip_prefix("metric_records=")).and_then(|n| n.parse().ok()).unwrap_or(0);
    let layout = info.geometry.side_layout();
    let mut peers = Vec::new();
    for _ in 0..records.min(info.max_peers as usize) {
        let (line, fds) = discovery::recv_reply(&socket)?;
        let bad = || Error::new(Status::ProtocolError, format!("unexpected INSPECT record {line:?}"));
        let slot = parse_peer_line(&line).ok_or_else(bad)?;
        let mut fds = fds.into_iter();
        let (Some(host), Some(cell)) = (fds.next(), fds.next()) else { return Err(bad()) };
        peers.push(read_peer(slot, File::from(host), File::from(cell), &layout)?);
    }
    let names: Vec<(u32, String)> = peers.iter().map(|p| (p.id, p.name.clone())).collect();
    let mut metrics = Vec::new();
    // At most what every peer can have: a host cannot make us read without end.
    let bound = info.max_peers as usize * (1 + 2 * (crate::runtime::metrics::METHOD_SLOTS + 1));
    for _ in 0..metric_records.min(bound) {
        let (line, _) = discovery::recv_reply(&socket)?;
        apply_metric_line(&line, &mut metrics, &names)
            .ok_or_else(|| Error::new(Status::ProtocolError, format!("unexpected INSPECT metrics record {line:?}")))?;
    }
    let topic_records: usize =
        text.lines().find_map(|l| l.strip_prefix("topic_records=")).and_then(|n| n.parse().ok()).unwrap_or(0);
    let mut topics = Vec::new();
    for _ in 0..topic_records.min(MOST_TOPIC_RECORDS) {
        let (line, _) = discovery::recv_reply(&socket)?;
        apply_topic_line(&line, &mut topics)
            .ok_or_else(|| Error::new(Status::ProtocolError, format!("unexpected INSPECT topic record {line:?}")))?;
    }
    Ok(HubSnapshot { info, peers, metrics, topics })
}

/// `s` as a JSON string literal.
fn json_string(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn method_json(m: &MethodMetrics) -> String {
    let errors: Vec<String> = m
        .errors
        .iter()
        .map(|(s, n)| format!("{{\"status\":{},\"code\":{},\"count\":{n}}}", json_string(s.name()), s.code()))
        .collect();
    let l = &m.latency;
    format!(
        "{{\"method\":{},\"method_id\":{},\"calls\":{},\"errors\":{},\"errors_by_status\":[{}],\"in_flight\":{},\"latency_ns\":{{\"count\":{},\"p50\":{},\"p99\":{},\"max\":{}}}}}",
        json_string(&m.name),
        m.method_id,
        m.calls,
        m.error_count(),
        errors.join(","),
        m.in_flight,
        l.count,
        l.p50_ns,
        l.p99_ns,
        l.max_ns
    )
}

impl PeerMetrics {
    /// This peer's metrics as one JSON object: `peer_id`, `name`, `state`, `pid` (0 if
    /// unknown), then `host_to_cell` and `cell_to_host` (per method: calls, errors and
    /// errors by status, in flight, latency p50/p99/max in ns), `open_streams`,
    /// `streams_opened`, `refused_calls`, `restarts`. What `cellshm inspect --json`
    /// shows under `metrics` and `cellshm_hub_metrics_json` returns per peer.
    pub fn to_json(&self) -> String {
        let list = |v: &[MethodMetrics]| v.iter().map(method_json).collect::<Vec<_>>().join(",");
        format!(
            "{{\"peer_id\":{},\"name\":{},\"state\":{},\"pid\":{},\"host_to_cell\":[{}],\"cell_to_host\":[{}],\"open_streams\":{},\"streams_opened\":{},\"refused_calls\":{},\"restarts\":{}}}",
            self.peer_id,
            json_string(&self.name),
            json_string(self.state),
            self.pid.unwrap_or(0),
            list(&self.outgoing),
            list(&self.incoming),
            self.open_streams,
            self.streams_opened,
            self.refused_calls,
            self.restarts
        )
    }
}
