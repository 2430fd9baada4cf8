//! The clock every deadline on the wire refers to: absolute CLOCK_MONOTONIC nanoseconds.

/// CLOCK_MONOTONIC now, in ns: the clock every deadline on the wire refers to.
pub fn monotonic_now_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_MONOTONIC always exists on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// The absolute deadline `timeout` from now (saturating; never 0, which means "none").
pub fn deadline_after(timeout: std::time::Duration) -> u64 {
    let ns = u64::try_from(timeout.as_nanos()).unwrap_or(u64::MAX);
    monotonic_now_ns().saturating_add(ns).max(1)
}
