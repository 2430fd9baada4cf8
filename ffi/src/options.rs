//! Call and peer options as C passes them, checked into the core's.

use crate::*;

/// `cellshm_peer_options.wait`: poll for `spin_us`, then sleep (the default).
pub const CELLSHM_WAIT_ADAPTIVE: u32 = 0;
/// `cellshm_peer_options.wait`: poll, never sleep (lowest latency, one core busy).
pub const CELLSHM_WAIT_SPIN: u32 = 1;
/// `cellshm_peer_options.wait`: sleep at once (one wakeup per message).
pub const CELLSHM_WAIT_BLOCK: u32 = 2;

/// A timeout (`timeout_ms`, `default_timeout_ms`) that means "no limit": the call waits
/// until it is answered, cancelled or the peer dies. Never the default.
pub const CELLSHM_TIMEOUT_FOREVER: u64 = u64::MAX;

/// Per-call options; NULL: the peer's default timeout (30 s unless its options, the
/// supervisor or the cell's CELLSHM_CALL_TIMEOUT_MS say otherwise; streams have none).
/// Start from cellshm_call_options_default(): the struct may grow, and its `size` says
/// which fields the caller knows (a zeroed struct is refused).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct cellshm_call_options {
    /// sizeof(cellshm_call_options) as the caller knows it; set by the default.
    pub size: usize,
    /// Milliseconds each call may take from its start; 0 = the peer's default (unless
    /// `deadline_ns` is set); CELLSHM_TIMEOUT_FOREVER = no limit.
    pub timeout_ms: u64,
    /// Absolute CLOCK_MONOTONIC deadline in ns (see cellshm_monotonic_now_ns); 0 = none.
    /// With both set, the call ends at whichever comes first.
    pub deadline_ns: u64,
}

/// The default call options (`size` set; no timeout of their own, no deadline).
#[no_mangle]
pub extern "C" fn cellshm_call_options_default() -> cellshm_call_options {
    cellshm_call_options { size: std::mem::size_of::<cellshm_call_options>(), timeout_ms: 0, deadline_ns: 0 }
}

/// The core's options from C's (NULL: the defaults).
///
/// # Safety
/// `opts` is NULL or a cellshm_call_options with its `size` set (see [`sized_options`]).
pub(crate) unsafe fn call_options(opts: *const cellshm_call_options) -> Result<CallOptions, cellshm_status> {
    // SAFETY: this function's contract.
    let o = unsafe { sized_options(opts, cellshm_call_options_default(), "cellshm_call_options") }?;
    Ok(CallOptions { timeout: (o.timeout_ms != 0).then(|| c_timeout(o.timeout_ms)), deadline_ns: o.deadline_ns })
}

/// Milliseconds from C, CELLSHM_TIMEOUT_FOREVER being [`cellshm::FOREVER`].
pub(crate) fn c_timeout(ms: u64) -> Duration {
    match ms {
        CELLSHM_TIMEOUT_FOREVER => cellshm::FOREVER,
        ms => Duration::from_millis(ms),
    }
}

/// How the host talks to one peer. Start from cellshm_peer_options_default(): the
/// struct may grow, and its `size` says which fields the caller knows.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct cellshm_peer_options {
    /// sizeof(cellshm_peer_options) as the caller knows it; set by the default.
    pub size: usize,
    /// CELLSHM_WAIT_ADAPTIVE, CELLSHM_WAIT_SPIN or CELLSHM_WAIT_BLOCK.
    pub wait: u32,
    /// With CELLSHM_WAIT_ADAPTIVE: microseconds to poll before sleeping (0 to 100000).
    pub spin_us: u32,
    /// Host threads serving this peer's calls to the host (1 to 64; 0 is refused).
    pub server_threads: u32,
    /// The fd number the doorbell gets in the child (3 to 65535); the child finds it in
    /// CELLSHM_DOORBELL_FD.
    pub doorbell_fd: c_int,
    /// Also append `--doorbell-fd=N` to the cell's arguments (false: argv is left alone).
    pub append_join_args: bool,
    /// Keep the last this many bytes (at most 1 MiB) of the cell's stderr (which still
    /// reaches ours) and add them to the message it dies with; 0 (the default) leaves its
    /// stderr alone.
    pub stderr_tail: u32,
    /// Streams the cell may have open towards the host at once (1 to 1024, default 64);
    /// more are refused with CELLSHM_RESOURCE_EXHAUSTED.
    pub max_streams: u32,
    /// Host threads running the handlers of those streams, at most (1 to 1024, default
    /// 8); a stream beyond them waits for one to finish its handler.
    pub stream_threads: u32,
    /// The time limit of calls to this peer whose options set none, in ms: 0 (the
    /// default) = 30 s; CELLSHM_TIMEOUT_FOREVER = no limit.
    pub default_timeout_ms: u64,
    /// DATA frames the cell may have in flight per stream towards the host (1 to 1024,
    /// default 8).
    pub stream_window: u32,
}

/// The default peer options (adaptive waiting with a 50 µs spin, 2 server threads,
/// doorbell on fd 3).
#[no_mangle]
pub extern "C" fn cellshm_peer_options_default() -> cellshm_peer_options {
    let d = PeerOptions::default();
    let spin_us = match d.wait {
        WaitStrategy::Adaptive { spin } => spin.as_micros() as u32,
        _ => 50,
    };
    cellshm_peer_options {
        size: std::mem::size_of::<cellshm_peer_options>(),
        wait: CELLSHM_WAIT_ADAPTIVE,
        spin_us,
        server_threads: d.server_threads as u32,
        doorbell_fd: d.doorbell_fd,
        append_join_args: d.append_join_args,
        stderr_tail: d.stderr_tail as u32,
        max_streams: d.max_streams as u32,
        stream_threads: d.stream_threads as u32,
        default_timeout_ms: 0,
        stream_window: d.stream_window,
    }
}

/// A CELLSHM_WAIT_* value (and its spin) C passed in the field `what`.
pub(crate) fn wait_strategy(wait: u32, spin_us: u32, what: &str) -> Result<WaitStrategy, cellshm_status> {
    match wait {
        CELLSHM_WAIT_ADAPTIVE => Ok(WaitStrategy::Adaptive { spin: Duration::from_micros(spin_us as u64) }),
        CELLSHM_WAIT_SPIN => Ok(WaitStrategy::Spin),
        CELLSHM_WAIT_BLOCK => Ok(WaitStrategy::Block),
        other => Err(invalid(format!("{what} = {other} is not a CELLSHM_WAIT_* value"))),
    }
}

/// Reads an options struct C passed that starts with its own size: `default` where C
/// passed NULL, and `default`'s later fields where C's struct is older (shorter) than
/// ours; the fields of a newer (longer) one that this library does not know are ignored.
///
/// # Safety
/// `options` is NULL or points to `options->size` readable bytes, a prefix of a `T`
/// whose first field is its `usize` size, every field plain data.
pub(crate) unsafe fn sized_options<T: Copy>(options: *const T, default: T, what: &str) -> Result<T, cellshm_status> {
    let mut out = default;
    if options.is_null() {
        return Ok(out);
    }
    // SAFETY: `size` is the first field and a non-NULL `options` is readable for at
    // least it, by the contract above.
    let size = unsafe { options.cast::<usize>().read_unaligned() };
    if size <= std::mem::size_of::<usize>() || size > 1 << 16 {
        return Err(invalid(format!("{what}.size is {size}: start from its _default()")));
    }
    // SAFETY: C's struct has `size` readable bytes (the contract above) and we copy at
    // most ours, onto the defaults; every field is plain data that any bytes are a value of.
    unsafe {
        std::ptr::copy_nonoverlapping(
            options.cast::<u8>(),
            (&mut out as *mut T).cast::<u8>(),
            size.min(std::mem::size_of::<T>()),
        )
    };
    Ok(out)
}

/// The core's options from C's (NULL: the defaults).
///
/// # Safety
/// `options` is NULL or a cellshm_peer_options with its `size` set (see [`sized_options`]).
pub(crate) unsafe fn peer_options_from(options: *const cellshm_peer_options) -> Result<PeerOptions, cellshm_status> {
    // SAFETY: this function's contract.
    let o = &unsafe { sized_options(options, cellshm_peer_options_default(), "cellshm_peer_options") }?;
    let wait = wait_strategy(o.wait, o.spin_us, "cellshm_peer_options.wait")?;
    Ok(PeerOptions {
        wait,
        server_threads: o.server_threads as usize,
        doorbell_fd: o.doorbell_fd,
        append_join_args: o.append_join_args,
        stderr_tail: o.stderr_tail as usize,
        max_streams: o.max_streams as usize,
        stream_threads: o.stream_threads as usize,
        default_timeout: (o.default_timeout_ms != 0).then(|| c_timeout(o.default_timeout_ms)),
        stream_window: o.stream_window,
        ..PeerOptions::default()
    })
}
