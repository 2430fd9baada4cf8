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

/// Most words one [`wait_any`] waits on (the kernel's `FUTEX_WAITV_MAX`).
pub(crate) const WAIT_ANY_MAX: usize = 128;

/// What [`wait_any`] returned.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum WaitAny {
    /// The word at this index was woken.
    Woken(usize),
    /// A word did not hold its expected value when the wait began, or a signal or the
    /// kernel cut the wait short: the caller looks at every word again.
    Recheck,
    /// The kernel has no FUTEX_WAITV (before Linux 5.16).
    Unsupported,
}

/// Sleeps until one of `words` is woken, each while it holds its expected value, or
/// `timeout` passed (FUTEX_WAITV, Linux 5.16; at most [`WAIT_ANY_MAX`] words, the rest
/// are not waited on). Shared futexes, as [`wait`].
pub(crate) fn wait_any(words: &[(&AtomicU32, u32)], timeout: Option<Duration>) -> WaitAny {
    /// `struct futex_waitv` of the kernel's uapi.
    #[repr(C)]
    struct FutexWaitv {
        val: u64,
        uaddr: u64,
        flags: u32,
        reserved: u32,
    }
    /// FUTEX2_SIZE_U32: a 32-bit word (not FUTEX2_PRIVATE: shared mappings).
    const FUTEX2_SIZE_U32: u32 = 0x02;
    let waiters: Vec<FutexWaitv> = words
        .iter()
        .take(WAIT_ANY_MAX)
        .map(|(word, expected)| FutexWaitv {
            val: *expected as u64,
            uaddr: word.as_ptr() as u64,
            flags: FUTEX2_SIZE_U32,
            reserved: 0,
        })
        .collect();
    // FUTEX_WAITV's timeout is an absolute CLOCK_MONOTONIC time.
    let until = timeout.map(|timeout| {
        let mut now = libc::timespec { tv_sec: 0, tv_nsec: 0 };
        // SAFETY: clock_gettime writes the live local `now`.
        unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) };
        let nanos = now.tv_nsec as u64 + timeout.subsec_nanos() as u64;
        libc::timespec {
            tv_sec: now.tv_sec.saturating_add(timeout.as_secs().min(i32::MAX as u64) as libc::time_t)
                + (nanos / 1_000_000_000) as libc::time_t,
            tv_nsec: (nanos % 1_000_000_000) as libc::c_long,
        }
    });
    let until_ptr = until.as_ref().map_or(std::ptr::null(), |t| t as *const libc::timespec);
    // SAFETY: `waiters` is a live array of `waiters.len()` kernel-shaped entries, each
    // naming a live, aligned u32 (AtomicU32s in mappings their owners keep while this
    // runs) that FUTEX_WAITV only reads; `until_ptr` is NULL or a live timespec; no flags.
    let woken = unsafe {
        libc::syscall(
            libc::SYS_futex_waitv,
            waiters.as_ptr(),
            waiters.len() as libc::c_uint,
            0 as libc::c_uint,
            until_ptr,
            libc::CLOCK_MONOTONIC,
        )
    };
    match usize::try_from(woken) {
        Ok(index) => WaitAny::Woken(index),
        Err(_) if std::io::Error::last_os_error().raw_os_error() == Some(libc::ENOSYS) => WaitAny::Unsupported,
        Err(_) => WaitAny::Recheck,
    }
}
