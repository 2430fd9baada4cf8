//! Per-method call metrics of one link, kept by the host in its own memory (a cell
//! cannot write them): calls, errors by status, calls in flight and a latency histogram,
//! for the calls the host makes (outgoing) and the ones it serves (incoming).
//!
//! Recording is a few relaxed atomic adds on the recording thread's own cache lines: no
//! lock, no allocation. A method's slot is found by open addressing on its id (ids are
//! FNV hashes already) and claimed once with a compare-and-swap; a link that sees more
//! than [`METHOD_SLOTS`] distinct methods counts the rest in one overflow slot.

use std::collections::HashMap;
use std::sync::atomic::Ordering;

use super::sync::{AtomicU32, AtomicU64, Mutex};
use crate::wire::Status;

/// Distinct methods a link keeps apart, per direction.
pub const METHOD_SLOTS: usize = 64;

/// Sub-buckets per power of two: bucket bounds are 19 % apart, so a percentile read from
/// the histogram is within 19 % of the true value.
const SUB_BUCKETS: u32 = 4;
/// The smallest octave kept apart: everything under 2^6 ns = 64 ns is bucket 0.
const FIRST_OCTAVE: u32 = 6;
/// Octaves kept: 64 ns up to 2^36 ns (about 69 s); above is the last bucket.
const OCTAVES: u32 = 30;
const BUCKETS: usize = (1 + OCTAVES * SUB_BUCKETS + 1) as usize;

/// The bucket of a latency of `ns`.
fn bucket_of(ns: u64) -> usize {
    if ns < 1 << FIRST_OCTAVE {
        return 0;
    }
    let msb = 63 - ns.leading_zeros();
    let octave = msb - FIRST_OCTAVE;
    if octave >= OCTAVES {
        return BUCKETS - 1;
    }
    let sub = ((ns >> (msb - 2)) & u64::from(SUB_BUCKETS - 1)) as u32;
    (1 + octave * SUB_BUCKETS + sub) as usize
}

/// The largest latency bucket `index` holds (what a percentile in it is reported as).
fn bucket_upper(index: usize) -> u64 {
    if index == 0 {
        return (1 << FIRST_OCTAVE) - 1;
    }
    if index >= BUCKETS - 1 {
        return u64::MAX;
    }
    let (octave, sub) = ((index as u32 - 1) / SUB_BUCKETS, (index as u32 - 1) % SUB_BUCKETS);
    let msb = octave + FIRST_OCTAVE;
    let base = 1u64 << msb;
    base + (u64::from(sub) + 1) * (base / u64::from(SUB_BUCKETS)) - 1
}

/// A summary of a latency histogram.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LatencySummary {
    /// Calls measured.
    pub count: u64,
    /// Median, in ns (the upper bound of its histogram bucket: within 19 %).
    pub p50_ns: u64,
    /// 99th percentile, in ns (likewise).
    pub p99_ns: u64,
    /// The longest call, in ns (exact).
    pub max_ns: u64,
}

struct Histogram {
    buckets: [AtomicU64; BUCKETS],
    max_ns: AtomicU64,
}

impl Histogram {
    fn new() -> Histogram {
        Histogram { buckets: std::array::from_fn(|_| AtomicU64::new(0)), max_ns: AtomicU64::new(0) }
    }

    fn record(&self, ns: u64) {
        self.buckets[bucket_of(ns)].fetch_add(1, Ordering::Relaxed);
        if ns > self.max_ns.load(Ordering::Relaxed) {
            self.max_ns.fetch_max(ns, Ordering::Relaxed);
        }
    }

    fn summary(&self) -> LatencySummary {
        let counts: Vec<u64> = self.buckets.iter().map(|b| b.load(Ordering::Relaxed)).collect();
        let count: u64 = counts.iter().sum();
        let max_ns = self.max_ns.load(Ordering::Relaxed);
        let percentile = |q: f64| {
            if count == 0 {
                return 0;
            }
            let rank = ((count as f64 * q).ceil() as u64).max(1);
            let mut seen = 0;
            for (i, c) in counts.iter().enumerate() {
                seen += c;
                if seen >= rank {
                    return bucket_upper(i).min(max_ns);
                }
            }
            max_ns
        };
        LatencySummary { count, p50_ns: percentile(0.50), p99_ns: percentile(0.99), max_ns }
    }
}

/// One method's counters in one direction.
struct MethodStats {
    started: AtomicU64,
    finished: AtomicU64,
    /// Finished calls by status, in the order of [`Status::ALL`] (OK included).
    by_status: [AtomicU64; Status::ALL.len()],
    latency: Histogram,
}

impl MethodStats {
    fn new() -> MethodStats {
        MethodStats {
            started: AtomicU64::new(0),
            finished: AtomicU64::new(0),
            by_status: std::array::from_fn(|_| AtomicU64::new(0)),
            latency: Histogram::new(),
        }
    }
}

/// What a link knows about calls of one method, one direction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MethodMetrics {
    /// The method id (0 for the overflow slot of methods beyond [`METHOD_SLOTS`]).
    pub method_id: u32,
    /// Its name when known (the caller named it, or it is served here), else the id in hex.
    pub name: String,
    /// Calls finished (answered, failed or given up).
    pub calls: u64,
    /// Calls started and not finished yet.
    pub in_flight: u64,
    /// Finished calls that ended with an error, by status (only statuses seen).
    pub errors: Vec<(Status, u64)>,
    /// How long the finished calls took (outgoing: from sending to the answer; incoming:
    /// the handler's run).
    pub latency: LatencySummary,
}

impl MethodMetrics {
    /// Errors of every status together.
    pub fn error_count(&self) -> u64 {
        self.errors.iter().map(|(_, n)| n).sum()
    }
}

/// The methods of one direction of one link.
pub(crate) struct MethodTable {
    /// The method id each slot counts (0: free), claimed once and never given back.
    ids: Box<[AtomicU32]>,
    /// One per slot, and the overflow slot last.
    stats: Box<[MethodStats]>,
    /// Names learnt when a slot was claimed (not on every call).
    names: Mutex<HashMap<u32, String>>,
}

/// A started call: where its result goes, and when it began.
#[derive(Clone, Copy)]
pub(crate) struct Started<'a> {
    stats: &'a MethodStats,
    at_ns: u64,
}

impl Started<'_> {
    /// When the call started.
    pub(crate) fn at_ns(&self) -> u64 {
        self.at_ns
    }
}

impl MethodTable {
    pub(crate) fn new() -> MethodTable {
        MethodTable::with_slots(METHOD_SLOTS)
    }

    fn with_slots(slots: usize) -> MethodTable {
        MethodTable {
            ids: (0..slots).map(|_| AtomicU32::new(0)).collect(),
            stats: (0..=slots).map(|_| MethodStats::new()).collect(),
            names: Mutex::new(HashMap::new()),
        }
    }

    /// The slot of `method_id`, claiming a free one the first time (the overflow slot
    /// when all are taken). `name` is remembered when a slot is claimed.
    fn slot(&self, method_id: u32, name: Option<&str>) -> &MethodStats {
        let slots = self.ids.len();
        let start = method_id as usize % slots;
        for probe in 0..slots {
            let i = (start + probe) % slots;
            match self.ids[i].load(Ordering::Acquire) {
                id if id == method_id => return &self.stats[i],
                0 => match self.ids[i].compare_exchange(0, method_id, Ordering::AcqRel, Ordering::Acquire) {
                    Ok(_) => {
                        if let Some(name) = name {
                            self.names.lock().insert(method_id, name.to_string());
                        }
                        return &self.stats[i];
                    }
                    Err(id) if id == method_id => return &self.stats[i],
                    Err(_) => continue,
                },
                _ => continue,
            }
        }
        &self.stats[slots]
    }

    /// Counts a call of `method_id` as started at `now_ns`.
    pub(crate) fn start(&self, method_id: u32, name: Option<&str>, now_ns: u64) -> Started<'_> {
        let stats = self.slot(method_id, name);
        stats.started.fetch_add(1, Ordering::Relaxed);
        Started { stats, at_ns: now_ns }
    }

    /// Counts a call started at `started_ns` (with [`MethodTable::start`]) as finished,
    /// found by its id again: for calls whose start and end are far apart.
    pub(crate) fn finish_of(&self, method_id: u32, status: Status, started_ns: u64, now_ns: u64) {
        MethodTable::finish(Started { stats: self.slot(method_id, None), at_ns: started_ns }, status, now_ns);
    }

    /// Counts a started call as finished at `now_ns` with `status`.
    pub(crate) fn finish(started: Started<'_>, status: Status, now_ns: u64) {
        let stats = started.stats;
        let index = Status::ALL.iter().position(|s| *s == status).unwrap_or(0);
        stats.by_status[index].fetch_add(1, Ordering::Relaxed);
        stats.latency.record(now_ns.saturating_sub(started.at_ns));
        stats.finished.fetch_add(1, Ordering::Relaxed);
    }

    /// What every method seen so far did; `names` adds names of methods served here.
    pub(crate) fn snapshot(&self, names: &HashMap<u32, String>) -> Vec<MethodMetrics> {
        let known = self.names.lock().clone();
        let slots = self.ids.iter().map(|id| id.load(Ordering::Acquire)).chain(std::iter::once(0));
        let mut out: Vec<MethodMetrics> = slots
            .zip(self.stats.iter())
            .filter(|(_, stats)| stats.started.load(Ordering::Relaxed) > 0)
            .map(|(method_id, stats)| {
                // `finished` is read first and added last: in flight is never negative.
                let finished = stats.finished.load(Ordering::Relaxed);
                let started = stats.started.load(Ordering::Relaxed);
                let errors = Status::ALL
                    .iter()
                    .zip(stats.by_status.iter())
                    .map(|(s, n)| (*s, n.load(Ordering::Relaxed)))
                    .filter(|(s, n)| *s != Status::Ok && *n > 0)
                    .collect();
                let name = match method_id {
                    0 => format!("(more than {METHOD_SLOTS} methods)"),
                    id => known.get(&id).or(names.get(&id)).cloned().unwrap_or_else(|| format!("{id:#010x}")),
                };
                MethodMetrics {
                    method_id,
                    name,
                    calls: finished,
                    in_flight: started.saturating_sub(finished),
                    errors,
                    latency: stats.latency.summary(),
                }
            })
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }
}

#[cfg(all(test, loom))]
mod loom_model {
    use super::*;
    use loom::sync::Arc;

    /// Two threads counting calls of two methods whose home slot is the same, and one
    /// method twice: each method gets one slot (never two, never one shared), and every
    /// call is counted in its method's.
    #[test]
    fn loom_concurrent_first_calls_claim_one_slot_per_method() {
        loom::model(|| {
            let table = Arc::new(MethodTable::with_slots(2));
            // 4 and 6 share home slot 0 and race for it; 4 is counted by both threads.
            let other = {
                let table = table.clone();
                loom::thread::spawn(move || {
                    MethodTable::finish(table.start(6, None, 0), Status::Ok, 1);
                    MethodTable::finish(table.start(4, None, 0), Status::Ok, 1);
                })
            };
            MethodTable::finish(table.start(4, None, 0), Status::Ok, 1);
            other.join().unwrap();
            let ids: Vec<u32> = table.ids.iter().map(|id| id.load(Ordering::SeqCst)).collect();
            assert!(ids == [4, 6] || ids == [6, 4], "{ids:?}");
            let counted = |id: u32| {
                let i = ids.iter().position(|x| *x == id).unwrap();
                table.stats[i].finished.load(Ordering::SeqCst)
            };
            assert_eq!((counted(4), counted(6)), (2, 1));
            assert_eq!(table.stats[2].started.load(Ordering::SeqCst), 0, "nothing overflowed");
        });
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn buckets_cover_every_latency_in_order_and_bound_it_within_a_fifth() {
        let mut last = 0;
        for ns in (0..40).map(|shift| 1u64 << shift).flat_map(|b| [b, b + b / 3, b + b / 2, b * 2 - 1]) {
            let i = bucket_of(ns);
            assert!(i >= last, "{ns} ns went to bucket {i} after {last}");
            last = i;
            assert!(bucket_upper(i) >= ns, "{ns} ns above its bucket's bound {}", bucket_upper(i));
            if (64..1 << 36).contains(&ns) {
                assert!(bucket_upper(i) as f64 <= ns as f64 * 1.26, "bucket {i} too wide for {ns} ns");
            }
        }
        assert_eq!(bucket_of(u64::MAX), BUCKETS - 1);
    }

    #[test]
    fn percentiles_in_flight_and_errors_by_status_follow_the_calls() {
        let table = MethodTable::new();
        for i in 0..100u64 {
            let started = table.start(7, Some("A.b"), 0);
            // 99 calls of ~1 µs, one of ~1 ms.
            let took = if i == 99 { 1_000_000 } else { 1_000 + i };
            let status = if i % 10 == 0 { Status::NotFound } else { Status::Ok };
            MethodTable::finish(started, status, took);
        }
        let _pending = table.start(7, None, 0);
        let m = &table.snapshot(&HashMap::new())[0];
        assert_eq!((m.method_id, m.name.as_str(), m.calls, m.in_flight), (7, "A.b", 100, 1));
        assert_eq!(m.errors, vec![(Status::NotFound, 10)]);
        assert_eq!(m.latency.count, 100);
        assert!((1_000..=1_300).contains(&m.latency.p50_ns), "{:?}", m.latency);
        assert!((1_000..=1_300).contains(&m.latency.p99_ns), "the one slow call is the 100th: {:?}", m.latency);
        assert_eq!(m.latency.max_ns, 1_000_000);
    }

    #[test]
    fn more_methods_than_slots_go_to_the_overflow_slot_and_names_come_from_either_side() {
        let table = MethodTable::new();
        for id in 1..=(METHOD_SLOTS as u32 + 3) {
            let started = table.start(id * 977, None, 0);
            MethodTable::finish(started, Status::Ok, 10);
        }
        let served: HashMap<u32, String> = [(977, "Served.here".to_string())].into();
        let all = table.snapshot(&served);
        assert_eq!(all.len(), METHOD_SLOTS + 1);
        let overflow = all.iter().find(|m| m.method_id == 0).unwrap();
        assert_eq!(overflow.calls, 3);
        assert!(all.iter().any(|m| m.name == "Served.here"));
        assert!(all.iter().any(|m| m.name == format!("{:#010x}", 2 * 977)));
    }
}
