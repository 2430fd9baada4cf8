//! `cellshm top`: a live view of every hub, one row per cell, then one per topic.

use std::time::Duration;

use cellshm::Error;

use crate::text::{latency_text, CLEAR_SCREEN};

/// One row of `cellshm top`: a cell of a hub, and what was counted when.
struct TopRow {
    hub: String,
    cell: String,
    state: &'static str,
    calls_out: u64,
    calls_in: u64,
    worst_p99_ns: u64,
    in_flight: u64,
    open_streams: u64,
    restarts: u64,
}

/// One topic row: a topic of a hub, its publisher, and its subscriptions summed up.
struct TopicRow {
    hub: String,
    topic: String,
    publisher: String,
    published: u64,
    subscribers: usize,
    /// The largest lag (samples queued and unread) of any subscription.
    worst_lag: u64,
    /// Samples dropped for its subscribers, all together.
    dropped: u64,
}

fn top_rows() -> (Vec<TopRow>, Vec<TopicRow>) {
    let mut rows = Vec::new();
    let mut topics = Vec::new();
    for hub in cellshm::list_hubs().unwrap_or_default() {
        // A hub that ended (or refused us) since it was listed is left out of this round.
        let Ok(snap) = cellshm::snapshot(&hub.name) else { continue };
        for t in snap.topics {
            let subs = &t.stats.subscriptions;
            topics.push(TopicRow {
                hub: hub.name.clone(),
                topic: t.name,
                publisher: t.publisher,
                published: t.stats.published,
                subscribers: subs.len(),
                worst_lag: subs.iter().map(|s| s.queued).max().unwrap_or(0),
                dropped: subs.iter().map(|s| s.dropped).sum(),
            });
        }
        for m in snap.metrics {
            let all = m.outgoing.iter().chain(m.incoming.iter());
            rows.push(TopRow {
                hub: hub.name.clone(),
                cell: m.name.clone(),
                state: m.state,
                calls_out: m.outgoing.iter().map(|x| x.calls).sum(),
                calls_in: m.incoming.iter().map(|x| x.calls).sum(),
                worst_p99_ns: all.clone().map(|x| x.latency.p99_ns).max().unwrap_or(0),
                in_flight: all.map(|x| x.in_flight).sum(),
                open_streams: m.open_streams,
                restarts: m.restarts,
            });
        }
    }
    (rows, topics)
}

/// `cellshm top`: redraws every `interval`, `count` times or until Ctrl-C.
pub(crate) fn run(interval: Duration, count: Option<u64>) -> Result<(), Error> {
    let mut previous: Vec<TopRow> = Vec::new();
    let mut previous_topics: Vec<TopicRow> = Vec::new();
    let mut last = std::time::Instant::now();
    for round in 1.. {
        let (rows, topics) = top_rows();
        let elapsed = last.elapsed().as_secs_f64().max(1e-3);
        last = std::time::Instant::now();
        let mut screen = String::from(CLEAR_SCREEN);
        screen.push_str(&format!(
            "cellshm top: {} hubs, {} cells, every {:.1} s (Ctrl-C to quit)\n\n",
            rows.iter().map(|r| &r.hub).collect::<std::collections::BTreeSet<_>>().len(),
            rows.len(),
            interval.as_secs_f64()
        ));
        screen.push_str(&format!(
            "{:<24} {:<16} {:<8} {:>11} {:>11} {:>9} {:>9} {:>7} {:>8}\n",
            "hub", "cell", "state", "calls/s h>c", "calls/s c>h", "p99", "in flight", "streams", "restarts"
        ));
        for r in &rows {
            let before = previous.iter().find(|p| p.hub == r.hub && p.cell == r.cell);
            let rate = |now: u64, then: Option<u64>| match then {
                Some(then) => format!("{:.0}", now.saturating_sub(then) as f64 / elapsed),
                None => "-".into(),
            };
            screen.push_str(&format!(
                "{:<24} {:<16} {:<8} {:>11} {:>11} {:>9} {:>9} {:>7} {:>8}\n",
                r.hub,
                r.cell,
                r.state,
                rate(r.calls_out, before.map(|b| b.calls_out)),
                rate(r.calls_in, before.map(|b| b.calls_in)),
                latency_text(r.worst_p99_ns),
                r.in_flight,
                r.open_streams,
                r.restarts
            ));
        }
        if rows.is_empty() {
            screen.push_str("(no cells on any live hub)\n");
        }
        if !topics.is_empty() {
            screen.push_str(&format!(
                "\n{:<24} {:<24} {:<16} {:>11} {:>11} {:>8} {:>9}\n",
                "hub", "topic", "publisher", "samples/s", "subscribers", "max lag", "dropped"
            ));
        }
        for t in &topics {
            let before = previous_topics.iter().find(|p| p.hub == t.hub && p.topic == t.topic);
            let rate = match before {
                Some(b) => format!("{:.0}", t.published.saturating_sub(b.published) as f64 / elapsed),
                None => "-".into(),
            };
            screen.push_str(&format!(
                "{:<24} {:<24} {:<16} {:>11} {:>11} {:>8} {:>9}\n",
                t.hub, t.topic, t.publisher, rate, t.subscribers, t.worst_lag, t.dropped
            ));
        }
        print!("{screen}");
        use std::io::Write as _;
        let _ = std::io::stdout().flush();
        previous = rows;
        previous_topics = topics;
        if count.is_some_and(|n| round >= n) {
            return Ok(());
        }
        std::thread::sleep(interval);
    }
    Ok(())
}
