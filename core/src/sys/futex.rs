//! Futexes on words in shared mappings (not `FUTEX_PRIVATE_FLAG`: the waiter and the
//! waker are different processes, and a waiter may have the word mapped read-only, which
//! the kernel allows for waiting). What a topic's subscribers wait on, and its publisher
//! when a Block subscriber's queue is full.

use std::sync::atomic::AtomicU32;
use std::time::Duration;

/// Sleeps while `word` holds `expected`, at most `timeout`; returns on a wake, a change,
/// a signal or the timeout alike (the caller rechecks what it waits for).
pub(crate) fn wait(word: &AtomicU32, expected: u32, timeout: Duration) {
    let ts = libc::timespec {
        tv_sec: timeout.as_secs().min(i64::MAX as u64) as libc::time_t,
        tv_nsec: timeout.subsec_nanos() as libc::c_long,
    };
    // SAFETY: `word` is a live, aligned u32 (an AtomicU32 in a mapping its owner keeps);
    // FUTEX_WAIT only reads it; `ts` is a valid relative timeout that outlives the call.
    unsafe {
        libc::syscall(libc::SYS_futex, word.as_ptr(), libc::FUTEX_WAIT, expected, &ts as *const libc::timespec);
    }
}

/// Wakes every waiter of `word`.
pub(crate) fn wake_all(word: &AtomicU32) {
    // SAFETY: `word` is a live, aligned u32; FUTEX_WAKE neither reads nor writes it.
    unsafe {
        libc::syscall(libc::SYS_futex, word.as_ptr(), libc::FUTEX_WAKE, i32::MAX);
    }
}
