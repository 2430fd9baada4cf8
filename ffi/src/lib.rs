//! The C ABI of cellshm (`libcellshm.so`, `libcellshm.a`, `include/cellshm.h`).
//!
//! Every exported function runs inside [`boundary`], so no panic unwinds into C; checks
//! every pointer before use (NULL → `CELLSHM_INVALID_ARGUMENT`); writes out-parameters
//! only on success; and records a message for `cellshm_last_error_message`.
//! Values that come *from* C and name a status or an option are taken as plain integers
//! and validated, never as Rust enums (an out-of-range enum value would be undefined
//! behaviour on the Rust side).

#![allow(non_camel_case_types)]

use std::cell::RefCell;
use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use cellshm::{
    Call, CallOptions, Cell, CellOptions, CellProcess, Error, Hub, HubConfig, JoinArgs, Peer, PeerOptions, PeerState,
    Response, Status, Stream, StreamCall, StreamItem, WaitStrategy,
};

// ----- status ------------------------------------------------------------------------

/// Result of every fallible function. The numbers are cellshm's one status table
/// (gRPC's canonical codes, then cellshm's own from 100), the same in Rust and Python.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum cellshm_status {
    CELLSHM_OK = 0,
    CELLSHM_CANCELLED = 1,
    CELLSHM_UNKNOWN = 2,
    CELLSHM_INVALID_ARGUMENT = 3,
    CELLSHM_DEADLINE_EXCEEDED = 4,
    CELLSHM_NOT_FOUND = 5,
    CELLSHM_ALREADY_EXISTS = 6,
    CELLSHM_PERMISSION_DENIED = 7,
    CELLSHM_RESOURCE_EXHAUSTED = 8,
    CELLSHM_FAILED_PRECONDITION = 9,
    CELLSHM_ABORTED = 10,
    CELLSHM_OUT_OF_RANGE = 11,
    CELLSHM_UNIMPLEMENTED = 12,
    CELLSHM_INTERNAL = 13,
    CELLSHM_UNAVAILABLE = 14,
    CELLSHM_DATA_LOSS = 15,
    CELLSHM_UNAUTHENTICATED = 16,
    /// The peer process died or closed its doorbell.
    CELLSHM_PEER_DEAD = 100,
    /// The local link was closed.
    CELLSHM_SESSION_CLOSED = 101,
    /// The payload is larger than the largest slot class.
    CELLSHM_PAYLOAD_TOO_LARGE = 102,
    /// The peer broke the protocol and was dropped.
    CELLSHM_PROTOCOL_ERROR = 103,
    /// Every peer slot of the hub is in use.
    CELLSHM_HUB_FULL = 104,
    /// An operating-system call failed.
    CELLSHM_SYSTEM_ERROR = 105,
}

use cellshm_status::*;

impl From<Status> for cellshm_status {
    fn from(s: Status) -> cellshm_status {
        match s {
            Status::Ok => CELLSHM_OK,
            Status::Cancelled => CELLSHM_CANCELLED,
            Status::Unknown => CELLSHM_UNKNOWN,
            Status::InvalidArgument => CELLSHM_INVALID_ARGUMENT,
            Status::DeadlineExceeded => CELLSHM_DEADLINE_EXCEEDED,
            Status::NotFound => CELLSHM_NOT_FOUND,
            Status::AlreadyExists => CELLSHM_ALREADY_EXISTS,
            Status::PermissionDenied => CELLSHM_PERMISSION_DENIED,
            Status::ResourceExhausted => CELLSHM_RESOURCE_EXHAUSTED,
            Status::FailedPrecondition => CELLSHM_FAILED_PRECONDITION,
            Status::Aborted => CELLSHM_ABORTED,
            Status::OutOfRange => CELLSHM_OUT_OF_RANGE,
            Status::Unimplemented => CELLSHM_UNIMPLEMENTED,
            Status::Internal => CELLSHM_INTERNAL,
            Status::Unavailable => CELLSHM_UNAVAILABLE,
            Status::DataLoss => CELLSHM_DATA_LOSS,
            Status::Unauthenticated => CELLSHM_UNAUTHENTICATED,
            Status::PeerDead => CELLSHM_PEER_DEAD,
            Status::SessionClosed => CELLSHM_SESSION_CLOSED,
            Status::PayloadTooLarge => CELLSHM_PAYLOAD_TOO_LARGE,
            Status::ProtocolError => CELLSHM_PROTOCOL_ERROR,
            Status::HubFull => CELLSHM_HUB_FULL,
            Status::SystemError => CELLSHM_SYSTEM_ERROR,
        }
    }
}

thread_local! {
    static LAST_ERROR: RefCell<CString> = RefCell::new(CString::default());
    static LAST_ERROR_CODE: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
}

fn remember(message: &str, code: u32) {
    let text = CString::new(message.replace('\0', "\\0")).unwrap_or_default();
    LAST_ERROR.with(|e| *e.borrow_mut() = text);
    LAST_ERROR_CODE.with(|c| c.set(code));
}

fn fail(error: Error) -> cellshm_status {
    remember(error.message(), error.code());
    error.status().into()
}

fn invalid(message: impl Into<String>) -> cellshm_status {
    fail(Error::new(Status::InvalidArgument, message))
}

/// Runs an exported function's body: a panic becomes `CELLSHM_INTERNAL`.
fn boundary(name: &str, body: impl FnOnce() -> cellshm_status) -> cellshm_status {
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(status) => status,
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            fail(Error::new(Status::Internal, format!("{name} panicked: {what}")))
        }
    }
}

/// Like [`boundary`] for functions that return a value instead of a status.
fn boundary_value<T>(default: T, body: impl FnOnce() -> T) -> T {
    catch_unwind(AssertUnwindSafe(body)).unwrap_or(default)
}

/// A borrowed NUL-terminated UTF-8 string argument.
///
/// # Safety
/// `ptr` is NULL or points to a NUL-terminated string that outlives `'a`.
unsafe fn c_str<'a>(ptr: *const c_char, what: &str) -> Result<&'a str, cellshm_status> {
    if ptr.is_null() {
        return Err(invalid(format!("{what} is NULL")));
    }
    // SAFETY: non-NULL, and the caller guarantees NUL termination and lifetime.
    unsafe { CStr::from_ptr(ptr) }.to_str().map_err(|_| invalid(format!("{what} is not valid UTF-8")))
}

/// A borrowed byte buffer argument (`ptr` may be NULL only when `len` is 0).
///
/// # Safety
/// `ptr` points to `len` readable bytes that outlive `'a`.
unsafe fn c_bytes<'a>(ptr: *const u8, len: usize, what: &str) -> Result<&'a [u8], cellshm_status> {
    if len == 0 {
        return Ok(&[]);
    }
    if ptr.is_null() {
        return Err(invalid(format!("{what} is NULL but its length is {len}")));
    }
    // SAFETY: non-NULL, and the caller guarantees `len` readable bytes.
    Ok(unsafe { std::slice::from_raw_parts(ptr, len) })
}

/// The "Service.method" name and request buffer every call-like export takes.
///
/// # Safety
/// As for [`c_str`] on `method` and [`c_bytes`] on `request`/`request_len`.
unsafe fn method_and_request<'a>(
    method: *const c_char,
    request: *const u8,
    request_len: usize,
) -> Result<(&'a str, &'a [u8]), cellshm_status> {
    // SAFETY: per this function's contract.
    let method = unsafe { c_str(method, "method") }?;
    // SAFETY: per this function's contract.
    let request = unsafe { c_bytes(request, request_len, "request") }?;
    Ok((method, request))
}

/// A NULL-terminated array of strings (NULL itself means none).
///
/// # Safety
/// `list` is NULL or a NULL-terminated array of valid C strings.
unsafe fn c_str_list<'a>(list: *const *const c_char, what: &str) -> Result<Vec<&'a str>, cellshm_status> {
    let mut out = Vec::new();
    if list.is_null() {
        return Ok(out);
    }
    for i in 0.. {
        // SAFETY: the array is NULL-terminated, so every index up to the terminator is readable.
        let item = unsafe { *list.add(i) };
        if item.is_null() {
            break;
        }
        // SAFETY: a non-NULL entry of the list is a valid C string.
        out.push(unsafe { c_str(item, &format!("{what}[{i}]")) }?);
    }
    Ok(out)
}

/// Borrows `*ptr` or reports `what` as NULL.
///
/// # Safety
/// `ptr` is NULL or a live object created by this library.
unsafe fn object<'a, T>(ptr: *const T, what: &str) -> Result<&'a T, cellshm_status> {
    // SAFETY: the caller guarantees a non-NULL ptr is live and of this type.
    unsafe { ptr.as_ref() }.ok_or_else(|| invalid(format!("{what} is NULL")))
}

/// Writes an out-parameter (after the call succeeded).
///
/// # Safety
/// `out` was checked non-NULL and points to writable storage for a `T`.
unsafe fn put<T>(out: *mut T, value: T) -> cellshm_status {
    // SAFETY: per the contract above.
    unsafe { out.write(value) };
    CELLSHM_OK
}

macro_rules! try_c {
    ($e:expr) => {
        match $e {
            Ok(v) => v,
            Err(status) => return status,
        }
    };
}

macro_rules! try_cellshm {
    ($e:expr) => {
        match $e {
            Ok(v) => v,
            Err(error) => return fail(error),
        }
    };
}

macro_rules! out_param {
    ($out:ident) => {
        if $out.is_null() {
            return invalid(concat!(stringify!($out), " is NULL"));
        }
    };
}

// ----- library information ------------------------------------------------------------

/// The library version, e.g. "0.1.0". Static storage; never NULL.
#[no_mangle]
pub extern "C" fn cellshm_version() -> *const c_char {
    concat!(env!("CARGO_PKG_VERSION"), "\0").as_ptr().cast()
}

/// The canonical name of a status code ("OK", "DEADLINE_EXCEEDED", "PEER_DEAD", ...), or
/// "UNRECOGNIZED_STATUS" for a number outside the table. Static storage; never NULL.
#[no_mangle]
pub extern "C" fn cellshm_status_str(status: u32) -> *const c_char {
    boundary_value(c"UNRECOGNIZED_STATUS".as_ptr(), || {
        static NAMES: std::sync::OnceLock<Vec<(u32, CString)>> = std::sync::OnceLock::new();
        let names = NAMES.get_or_init(|| {
            Status::ALL.iter().map(|s| (s.code(), CString::new(s.name()).unwrap_or_default())).collect()
        });
        names.iter().find(|(code, _)| *code == status).map_or(c"UNRECOGNIZED_STATUS".as_ptr(), |(_, n)| n.as_ptr())
    })
}

/// The status number of the most recent failed cellshm call on this thread (0 if none),
/// as it came: a number this library does not know (a newer peer's) is kept here, while
/// the call itself returned CELLSHM_UNKNOWN.
#[no_mangle]
pub extern "C" fn cellshm_last_error_code() -> u32 {
    boundary_value(0, || LAST_ERROR_CODE.with(std::cell::Cell::get))
}

/// The message of the most recent failed cellshm call on this thread ("" if none). The
/// pointer stays valid until the next failing cellshm call on the same thread.
#[no_mangle]
pub extern "C" fn cellshm_last_error_message() -> *const c_char {
    boundary_value(c"".as_ptr(), || LAST_ERROR.with(|e| e.borrow().as_ptr()))
}

/// The method id of `name` ("Service.method"): FNV-1a 64 of its bytes folded to 32 bits.
/// Returns 0 (the reserved id) if `name` is NULL or not UTF-8.
///
/// # Safety
/// `name` is NULL or a NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn cellshm_method_id(name: *const c_char) -> u32 {
    boundary_value(0, || {
        if name.is_null() {
            return 0;
        }
        // SAFETY: non-NULL and NUL-terminated per this function's contract.
        match unsafe { CStr::from_ptr(name) }.to_str() {
            Ok(s) => cellshm::method_id(s),
            Err(_) => 0,
        }
    })
}

/// CLOCK_MONOTONIC now, in ns: the clock of `cellshm_call_options.deadline_ns`.
#[no_mangle]
pub extern "C" fn cellshm_monotonic_now_ns() -> u64 {
    cellshm::monotonic_now_ns()
}

// ----- options -------------------------------------------------------------------------

/// `cellshm_peer_options.wait`: poll for `spin_us`, then sleep (the default).
pub const CELLSHM_WAIT_ADAPTIVE: u32 = 0;
/// `cellshm_peer_options.wait`: poll, never sleep (lowest latency, one core busy).
pub const CELLSHM_WAIT_SPIN: u32 = 1;
/// `cellshm_peer_options.wait`: sleep at once (one wakeup per message).
pub const CELLSHM_WAIT_BLOCK: u32 = 2;

/// Per-call options. Pass NULL for "no timeout, no deadline".
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct cellshm_call_options {
    /// Milliseconds each call may take from its start; 0 = no timeout.
    pub timeout_ms: u64,
    /// Absolute CLOCK_MONOTONIC deadline in ns (see cellshm_monotonic_now_ns); 0 = none.
    pub deadline_ns: u64,
}

fn call_options(opts: *const cellshm_call_options) -> CallOptions {
    // SAFETY: the callers pass NULL or a pointer to a readable cellshm_call_options.
    match unsafe { opts.as_ref() } {
        None => CallOptions::default(),
        Some(o) => CallOptions {
            timeout: (o.timeout_ms != 0).then(|| Duration::from_millis(o.timeout_ms)),
            deadline_ns: o.deadline_ns,
        },
    }
}

/// How the host talks to one peer. Start from cellshm_peer_options_default().
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct cellshm_peer_options {
    /// CELLSHM_WAIT_ADAPTIVE, CELLSHM_WAIT_SPIN or CELLSHM_WAIT_BLOCK.
    pub wait: u32,
    /// With CELLSHM_WAIT_ADAPTIVE: microseconds to poll before sleeping.
    pub spin_us: u32,
    /// Host threads serving this peer's calls to the host (1 to 64).
    pub server_threads: u32,
    /// The fd number the doorbell gets in the child (at least 3); the child finds it in
    /// CELLSHM_DOORBELL_FD.
    pub doorbell_fd: c_int,
    /// Also append `--doorbell-fd=N` to the cell's arguments (false: argv is left alone).
    pub append_join_args: bool,
    /// Keep the last this many bytes of the cell's stderr (which still reaches ours) and
    /// add them to the message it dies with; 0 (the default) leaves its stderr alone.
    pub stderr_tail: u32,
    /// Streams the cell may have open towards the host at once (1 to 1024, default 64);
    /// more are refused with CELLSHM_RESOURCE_EXHAUSTED.
    pub max_streams: u32,
    /// Host threads running the handlers of those streams, at most (1 to 1024, default
    /// 8); a stream beyond them waits for one to finish its handler.
    pub stream_threads: u32,
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
        wait: CELLSHM_WAIT_ADAPTIVE,
        spin_us,
        server_threads: d.server_threads as u32,
        doorbell_fd: d.doorbell_fd,
        append_join_args: d.append_join_args,
        stderr_tail: d.stderr_tail as u32,
        max_streams: d.max_streams as u32,
        stream_threads: d.stream_threads as u32,
    }
}

fn peer_options(opts: *const cellshm_peer_options) -> Result<PeerOptions, cellshm_status> {
    let mut out = PeerOptions::default();
    // SAFETY: the callers pass NULL or a pointer to a readable cellshm_peer_options.
    let Some(o) = (unsafe { opts.as_ref() }) else { return Ok(out) };
    out.wait = match o.wait {
        CELLSHM_WAIT_ADAPTIVE => WaitStrategy::Adaptive { spin: Duration::from_micros(o.spin_us as u64) },
        CELLSHM_WAIT_SPIN => WaitStrategy::Spin,
        CELLSHM_WAIT_BLOCK => WaitStrategy::Block,
        other => return Err(invalid(format!("cellshm_peer_options.wait = {other} is not a CELLSHM_WAIT_* value"))),
    };
    out.server_threads = o.server_threads.max(1) as usize;
    out.doorbell_fd = o.doorbell_fd;
    out.append_join_args = o.append_join_args;
    out.stderr_tail = o.stderr_tail as usize;
    out.max_streams = o.max_streams as usize;
    out.stream_threads = o.stream_threads as usize;
    Ok(out)
}

// ----- callbacks and userdata ----------------------------------------------------------

/// Releases a userdata pointer. Called exactly once per registration, when the
/// registration ends (the owning object is freed) or at once if registration fails.
pub type cellshm_free_fn = Option<unsafe extern "C" fn(userdata: *mut c_void)>;

/// A method handler. `request` holds `request_len` bytes, valid until the handler
/// returns: read in place (zero-copy) when larger than 80 bytes, in memory the caller
/// can still write, so copy what you validate before trusting it. Answer with cellshm_reply_write or cellshm_reply_buffer
/// (no answer = empty reply) and return CELLSHM_OK; or return another status, with an
/// optional message set by cellshm_reply_error_message. Handlers of one object may run
/// concurrently on several threads.
pub type cellshm_handler_fn = Option<
    unsafe extern "C" fn(
        userdata: *mut c_void,
        request: *const u8,
        request_len: usize,
        reply: *mut cellshm_reply,
    ) -> u32,
>;

/// Called once when a peer dies, with the status (CELLSHM_PEER_DEAD,
/// CELLSHM_PROTOCOL_ERROR, CELLSHM_SESSION_CLOSED, ...) and a message valid during the call.
pub type cellshm_death_fn = Option<unsafe extern "C" fn(userdata: *mut c_void, status: u32, message: *const c_char)>;

/// C userdata with its optional free function, called exactly once on drop.
struct Userdata {
    ptr: *mut c_void,
    free: cellshm_free_fn,
}

// SAFETY: the C API documents that userdata passed with a handler or callback is used
// from several threads (handlers run concurrently); the caller takes on that contract.
unsafe impl Send for Userdata {}
// SAFETY: as above.
unsafe impl Sync for Userdata {}

impl Drop for Userdata {
    fn drop(&mut self) {
        if let Some(free) = self.free {
            // SAFETY: the C caller gave us this function for this pointer, to be called once.
            let _ = catch_unwind(AssertUnwindSafe(|| unsafe { free(self.ptr) }));
        }
    }
}

/// The reply being built by a handler; valid only during the handler call.
#[derive(Debug)]
pub struct cellshm_reply {
    _opaque: (),
}

struct ReplyState<'a, 'b> {
    call: &'a mut Call<'b>,
    error_message: Option<String>,
}

fn c_handler(
    handler: unsafe extern "C" fn(*mut c_void, *const u8, usize, *mut cellshm_reply) -> u32,
    userdata: Arc<Userdata>,
) -> impl Fn(&mut Call<'_>) -> cellshm::Result<()> + Send + Sync + 'static {
    move |call| {
        // Zero-copy: C reads the request where it lies (no Rust reference is made of it).
        let request = call.request();
        let mut state = ReplyState { call, error_message: None };
        let reply = (&mut state as *mut ReplyState<'_, '_>).cast::<cellshm_reply>();
        // SAFETY: the handler was registered by C for this purpose; `request` stays valid
        // and `reply` points to live state for the duration of the call.
        let code = unsafe { handler(userdata.ptr, request.as_ptr(), request.len(), reply) };
        if code == CELLSHM_OK as u32 {
            return Ok(());
        }
        let name = Status::from_code(code).map_or_else(|| format!("status {code}"), |s| s.name().to_string());
        let message = state.error_message.take().unwrap_or_else(|| format!("handler returned {name}"));
        Err(Error::with_code(code, message))
    }
}

/// # Safety
/// `reply` is NULL or the pointer passed to the running handler.
unsafe fn reply_state<'a>(reply: *mut cellshm_reply) -> Result<&'a mut ReplyState<'a, 'a>, cellshm_status> {
    // SAFETY: a non-NULL reply is the ReplyState the running handler was given.
    unsafe { reply.cast::<ReplyState<'a, 'a>>().as_mut() }.ok_or_else(|| invalid("reply is NULL"))
}

/// Sets the reply to a copy of `len` bytes at `data`.
///
/// # Safety
/// `reply` is the handler's reply; `data` points to `len` readable bytes.
#[no_mangle]
pub unsafe extern "C" fn cellshm_reply_write(reply: *mut cellshm_reply, data: *const u8, len: usize) -> cellshm_status {
    boundary("cellshm_reply_write", || {
        // SAFETY: per this function's contract.
        let state = try_c!(unsafe { reply_state(reply) });
        // SAFETY: per this function's contract.
        let bytes = try_c!(unsafe { c_bytes(data, len, "data") });
        try_cellshm!(state.call.reply(bytes));
        CELLSHM_OK
    })
}

/// In-place reply: sets `*out_buffer` to `max_len` writable bytes (in shared memory when
/// larger than 80) that become the reply, valid until the handler returns. Call
/// cellshm_reply_set_len afterwards if fewer bytes were written.
///
/// # Safety
/// `reply` is the handler's reply; `out_buffer` points to writable storage.
#[no_mangle]
pub unsafe extern "C" fn cellshm_reply_buffer(
    reply: *mut cellshm_reply,
    max_len: usize,
    out_buffer: *mut *mut u8,
) -> cellshm_status {
    boundary("cellshm_reply_buffer", || {
        // SAFETY: per this function's contract.
        let state = try_c!(unsafe { reply_state(reply) });
        out_param!(out_buffer);
        let buffer = try_cellshm!(state.call.reply_buffer(max_len));
        // SAFETY: out_buffer checked non-NULL.
        unsafe { put(out_buffer, buffer.as_mut_ptr()) }
    })
}

/// Sets how many bytes of the cellshm_reply_buffer buffer are the reply.
///
/// # Safety
/// `reply` is the handler's reply.
#[no_mangle]
pub unsafe extern "C" fn cellshm_reply_set_len(reply: *mut cellshm_reply, len: usize) -> cellshm_status {
    boundary("cellshm_reply_set_len", || {
        // SAFETY: per this function's contract.
        let state = try_c!(unsafe { reply_state(reply) });
        try_cellshm!(state.call.set_reply_len(len));
        CELLSHM_OK
    })
}

/// Sets the message sent with the error status the handler is about to return.
///
/// # Safety
/// `reply` is the handler's reply; `message` is a NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn cellshm_reply_error_message(
    reply: *mut cellshm_reply,
    message: *const c_char,
) -> cellshm_status {
    boundary("cellshm_reply_error_message", || {
        // SAFETY: per this function's contract.
        let state = try_c!(unsafe { reply_state(reply) });
        // SAFETY: per this function's contract.
        let message = try_c!(unsafe { c_str(message, "message") });
        state.error_message = Some(message.to_string());
        CELLSHM_OK
    })
}

/// The caller's absolute deadline (CLOCK_MONOTONIC ns) of the request being handled,
/// 0 if none; pass it on in cellshm_call_options.deadline_ns to propagate it.
///
/// # Safety
/// `reply` is NULL or the handler's reply.
#[no_mangle]
pub unsafe extern "C" fn cellshm_reply_deadline_ns(reply: *mut cellshm_reply) -> u64 {
    boundary_value(0, || {
        // SAFETY: per this function's contract.
        unsafe { reply.cast::<ReplyState<'_, '_>>().as_ref() }.map_or(0, |s| s.call.deadline_ns())
    })
}

/// 1 once the caller cancelled the request being handled (or its deadline passed, or it
/// went away), else 0 (also for NULL). A long handler polls this and returns early.
///
/// # Safety
/// `reply` is NULL or the handler's reply.
#[no_mangle]
pub unsafe extern "C" fn cellshm_reply_cancelled(reply: *mut cellshm_reply) -> c_int {
    boundary_value(0, || {
        // SAFETY: per this function's contract.
        unsafe { reply.cast::<ReplyState<'_, '_>>().as_ref() }.map_or(0, |s| c_int::from(s.call.is_cancelled()))
    })
}

// ----- responses -----------------------------------------------------------------------

/// A response payload, read in place from shared memory. Owned by the caller; release
/// it with cellshm_response_free (that hands the slot back to the sender).
#[derive(Debug)]
pub struct cellshm_response {
    /// `None` only while the box waits in a thread's spare slot for reuse.
    response: Option<Response>,
}

/// The response bytes (NULL for a NULL response), read in place (zero-copy). Valid
/// until cellshm_response_free. Payloads larger than 80 bytes lie in the sender's shared
/// memory: a well-behaved sender never writes them before the free, a hostile one can
/// change them while you read, so copy what you validate before trusting it.
///
/// # Safety
/// `response` is NULL or a live response.
#[no_mangle]
pub unsafe extern "C" fn cellshm_response_data(response: *const cellshm_response) -> *const u8 {
    boundary_value(std::ptr::null(), || {
        // SAFETY: per this function's contract.
        let response = unsafe { response.as_ref() };
        response.and_then(|r| r.response.as_ref()).map_or(std::ptr::null(), |r| r.payload().as_ptr())
    })
}

/// The response length in bytes (0 for a NULL response).
///
/// # Safety
/// `response` is NULL or a live response.
#[no_mangle]
pub unsafe extern "C" fn cellshm_response_len(response: *const cellshm_response) -> usize {
    // SAFETY: per this function's contract.
    boundary_value(0, || unsafe { response.as_ref() }.and_then(|r| r.response.as_ref()).map_or(0, Response::len))
}

/// Releases a response. NULL is a no-op.
///
/// # Safety
/// `response` is NULL or a response not yet freed; it must not be used afterwards.
#[no_mangle]
pub unsafe extern "C" fn cellshm_response_free(response: *mut cellshm_response) {
    if !response.is_null() {
        // SAFETY: created by Box::into_raw in deliver_response and not freed before.
        let boxed = unsafe { Box::from_raw(response) };
        let _ = catch_unwind(AssertUnwindSafe(|| recycle(boxed)));
    }
}

thread_local! {
    /// One spare response box per thread: a call loop then allocates nothing per call
    /// (this keeps the C API within a few percent of the Rust API on the hot path).
    static SPARE_RESPONSE: RefCell<Option<Box<cellshm_response>>> = const { RefCell::new(None) };
}

fn recycle(mut boxed: Box<cellshm_response>) {
    // Dropping the response hands its slot back before the box is kept for reuse.
    boxed.response = None;
    let _ = SPARE_RESPONSE.try_with(|spare| {
        let mut spare = spare.borrow_mut();
        if spare.is_none() {
            *spare = Some(boxed);
        }
    });
}

fn deliver_response(result: cellshm::Result<Response>, out: *mut *mut cellshm_response) -> cellshm_status {
    let response = try_cellshm!(result);
    let spare = SPARE_RESPONSE.try_with(|spare| spare.borrow_mut().take()).ok().flatten();
    let mut boxed = spare.unwrap_or_else(|| Box::new(cellshm_response { response: None }));
    boxed.response = Some(response);
    // SAFETY: callers checked `out` non-NULL.
    unsafe { put(out, Box::into_raw(boxed)) }
}

// ----- host: hub -----------------------------------------------------------------------

/// The host's hub: one shared-memory file and the links to its cells. Thread-safe:
/// every function but cellshm_hub_free may be called from any thread at any time.
#[derive(Debug)]
pub struct cellshm_hub {
    hub: Hub,
    name: CString,
    attach: std::sync::Mutex<Option<cellshm::host::attach::AttachListener>>,
}

/// Creates a hub and starts serving its discovery socket `@cellshm/<uid>/<name>`
/// (`cellshm list` and `cellshm inspect NAME` find it there). `name` may be NULL (a
/// unique `hub-<pid>-<n>`); otherwise 1 to 64 of A-Z a-z 0-9 . _ -, unique among this
/// user's live hubs (CELLSHM_ALREADY_EXISTS otherwise). `max_peers` 0 means the default
/// (8). Nothing of the hub outlives the process, even if it never calls cellshm_hub_free.
/// On success `*out_hub` is owned by the caller.
///
/// # Safety
/// `name` is NULL or a NUL-terminated string; `out_hub` points to writable storage.
#[no_mangle]
pub unsafe extern "C" fn cellshm_hub_new(
    name: *const c_char,
    max_peers: u32,
    out_hub: *mut *mut cellshm_hub,
) -> cellshm_status {
    boundary("cellshm_hub_new", || {
        out_param!(out_hub);
        let mut config = HubConfig::default();
        if !name.is_null() {
            // SAFETY: per this function's contract.
            config.name = Some(try_c!(unsafe { c_str(name, "name") }).into());
        }
        if max_peers != 0 {
            config.max_peers = max_peers;
        }
        let hub = try_cellshm!(Hub::create(config));
        // Hub names are validated ASCII: no interior NUL.
        let name = CString::new(hub.name()).unwrap_or_default();
        // SAFETY: out_hub checked non-NULL.
        unsafe { put(out_hub, Box::into_raw(Box::new(cellshm_hub { hub, name, attach: std::sync::Mutex::new(None) }))) }
    })
}

/// The hub's name. Borrowed: valid until cellshm_hub_free. NULL for a NULL hub.
///
/// # Safety
/// `hub` is NULL or a live hub.
#[no_mangle]
pub unsafe extern "C" fn cellshm_hub_name(hub: *const cellshm_hub) -> *const c_char {
    // SAFETY: per this function's contract.
    boundary_value(std::ptr::null(), || unsafe { hub.as_ref() }.map_or(std::ptr::null(), |h| h.name.as_ptr()))
}

/// Serves "Service.method" to every cell of the hub. `free_userdata` (may be NULL) is
/// called exactly once: when the hub is freed, or before this returns if it fails.
///
/// # Safety
/// `hub` is a live hub; `name` a NUL-terminated string; `handler` a valid function.
#[no_mangle]
pub unsafe extern "C" fn cellshm_hub_register(
    hub: *mut cellshm_hub,
    name: *const c_char,
    handler: cellshm_handler_fn,
    userdata: *mut c_void,
    free_userdata: cellshm_free_fn,
) -> cellshm_status {
    let userdata = Arc::new(Userdata { ptr: userdata, free: free_userdata });
    boundary("cellshm_hub_register", move || {
        // SAFETY: per this function's contract.
        let hub = try_c!(unsafe { object(hub, "hub") });
        // SAFETY: per this function's contract.
        let name = try_c!(unsafe { c_str(name, "name") });
        let Some(handler) = handler else { return invalid("handler is NULL") };
        try_cellshm!(hub.hub.method(name, c_handler(handler, userdata)));
        CELLSHM_OK
    })
}

/// Spawns `program` as a cell named `name`. `argv` (may be NULL) is a NULL-terminated
/// list of arguments; the hub does not add any (the cell finds its doorbell through
/// CELLSHM_DOORBELL_FD unless `options->append_join_args` asks for `--doorbell-fd=N`).
/// `envp` (may be NULL) is a NULL-terminated list of "KEY=VALUE" added to the inherited
/// environment. `options` may be NULL for the defaults. On success `*out_peer` is owned
/// by the caller (free it with cellshm_peer_free); wait for it with
/// cellshm_peer_wait_ready.
///
/// # Safety
/// All strings are NUL-terminated; the lists NULL-terminated; `out_peer` writable.
#[no_mangle]
pub unsafe extern "C" fn cellshm_hub_spawn(
    hub: *mut cellshm_hub,
    name: *const c_char,
    program: *const c_char,
    argv: *const *const c_char,
    envp: *const *const c_char,
    options: *const cellshm_peer_options,
    out_peer: *mut *mut cellshm_peer,
) -> cellshm_status {
    boundary("cellshm_hub_spawn", || {
        out_param!(out_peer);
        // SAFETY: per this function's contract.
        let hub = try_c!(unsafe { object(hub, "hub") });
        // SAFETY: per this function's contract.
        let name = try_c!(unsafe { c_str(name, "name") });
        // SAFETY: per this function's contract.
        let program = try_c!(unsafe { c_str(program, "program") });
        // SAFETY: per this function's contract.
        let args = try_c!(unsafe { c_str_list(argv, "argv") });
        // SAFETY: per this function's contract.
        let env = try_c!(unsafe { c_str_list(envp, "envp") });
        let options = try_c!(peer_options(options));
        let mut command = Command::new(program);
        command.args(&args);
        for entry in env {
            let Some((key, value)) = entry.split_once('=') else {
                return invalid(format!("envp entry {entry:?} is not KEY=VALUE"));
            };
            command.env(key, value);
        }
        let ticket = try_cellshm!(hub.hub.add_peer(name, options));
        let (peer, child) = try_cellshm!(ticket.spawn(&mut command));
        let handle = cellshm_peer { peer, process: Some(CellProcess::new(child)) };
        // SAFETY: out_peer checked non-NULL.
        unsafe { put(out_peer, Box::into_raw(Box::new(handle))) }
    })
}

/// Frees the hub: says GOODBYE to every cell, gives them the hub's shutdown grace (2 s)
/// to finish their calls and leave (they exit 0 and print nothing), then closes every
/// link; nothing of the hub remains. Peer handles stay valid: reap a cell with
/// cellshm_peer_wait_exit, then free the handle; calls on them fail with
/// CELLSHM_SESSION_CLOSED. NULL is a no-op.
///
/// # Safety
/// `hub` is NULL or a hub not yet freed, not in use by another thread.
#[no_mangle]
pub unsafe extern "C" fn cellshm_hub_free(hub: *mut cellshm_hub) {
    if !hub.is_null() {
        // SAFETY: created by Box::into_raw in cellshm_hub_new and not freed before.
        let _ = catch_unwind(AssertUnwindSafe(|| drop(unsafe { Box::from_raw(hub) })));
    }
}

// ----- host: peers ---------------------------------------------------------------------

/// Life cycle of a peer, as seen by the host.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum cellshm_peer_state {
    /// Spawned; no HELLO yet.
    CELLSHM_PEER_STATE_STARTING = 0,
    /// HELLO accepted; not ready yet.
    CELLSHM_PEER_STATE_JOINED = 1,
    /// Ready for calls.
    CELLSHM_PEER_STATE_READY = 2,
    /// Said goodbye.
    CELLSHM_PEER_STATE_LEAVING = 3,
    /// Gone (see cellshm_peer_on_death for why).
    CELLSHM_PEER_STATE_DEAD = 4,
}

/// The host's handle on one cell. Thread-safe: every function but cellshm_peer_free may
/// be called from any thread, concurrently.
#[derive(Debug)]
pub struct cellshm_peer {
    peer: Peer,
    /// None for a cell that attached (the host did not spawn it).
    process: Option<CellProcess>,
}

impl cellshm_peer {
    fn process(&self) -> cellshm::Result<&CellProcess> {
        self.process.as_ref().ok_or_else(|| {
            Error::new(Status::FailedPrecondition, format!("cell {:?} was not spawned by this host", self.peer.name()))
        })
    }
}

/// Waits until the cell is ready (CELLSHM_OK), dies first (its status, e.g.
/// CELLSHM_PEER_DEAD) or `timeout_ms` passes (CELLSHM_DEADLINE_EXCEEDED).
///
/// # Safety
/// `peer` is a live peer.
#[no_mangle]
pub unsafe extern "C" fn cellshm_peer_wait_ready(peer: *const cellshm_peer, timeout_ms: u64) -> cellshm_status {
    boundary("cellshm_peer_wait_ready", || {
        // SAFETY: per this function's contract.
        let peer = try_c!(unsafe { object(peer, "peer") });
        try_cellshm!(peer.peer.wait_ready(Duration::from_millis(timeout_ms)));
        CELLSHM_OK
    })
}

/// Calls "Service.method" with `request_len` bytes at `request` and waits for the
/// response. `options` may be NULL. On success `*out_response` is owned by the caller.
/// On failure the status says why and cellshm_last_error_message() has the message (for
/// a handler error: the handler's own message).
///
/// # Safety
/// `peer` is live; `method` NUL-terminated; `request` has `request_len` readable bytes;
/// `out_response` is writable.
#[no_mangle]
pub unsafe extern "C" fn cellshm_peer_call(
    peer: *const cellshm_peer,
    method: *const c_char,
    request: *const u8,
    request_len: usize,
    options: *const cellshm_call_options,
    out_response: *mut *mut cellshm_response,
) -> cellshm_status {
    boundary("cellshm_peer_call", || {
        out_param!(out_response);
        // SAFETY: per this function's contract.
        let peer = try_c!(unsafe { object(peer, "peer") });
        // SAFETY: per this function's contract.
        let (method, request) = try_c!(unsafe { method_and_request(method, request, request_len) });
        deliver_response(peer.peer.call(method, request, &call_options(options)), out_response)
    })
}

/// Sends a notification to "Service.method": no response is expected or waited for.
///
/// # Safety
/// As for cellshm_peer_call.
#[no_mangle]
pub unsafe extern "C" fn cellshm_peer_notify(
    peer: *const cellshm_peer,
    method: *const c_char,
    request: *const u8,
    request_len: usize,
) -> cellshm_status {
    boundary("cellshm_peer_notify", || {
        // SAFETY: per this function's contract.
        let peer = try_c!(unsafe { object(peer, "peer") });
        // SAFETY: per this function's contract.
        let (method, request) = try_c!(unsafe { method_and_request(method, request, request_len) });
        try_cellshm!(peer.peer.notify(method, request, &CallOptions::default()));
        CELLSHM_OK
    })
}

/// Writes the peer's current state to `*out_state`.
///
/// # Safety
/// `peer` is live; `out_state` writable.
#[no_mangle]
pub unsafe extern "C" fn cellshm_peer_get_state(
    peer: *const cellshm_peer,
    out_state: *mut cellshm_peer_state,
) -> cellshm_status {
    boundary("cellshm_peer_get_state", || {
        out_param!(out_state);
        // SAFETY: per this function's contract.
        let peer = try_c!(unsafe { object(peer, "peer") });
        let state = match peer.peer.state() {
            PeerState::Starting => cellshm_peer_state::CELLSHM_PEER_STATE_STARTING,
            PeerState::Joined => cellshm_peer_state::CELLSHM_PEER_STATE_JOINED,
            PeerState::Ready => cellshm_peer_state::CELLSHM_PEER_STATE_READY,
            PeerState::Leaving => cellshm_peer_state::CELLSHM_PEER_STATE_LEAVING,
            PeerState::Dead(_) => cellshm_peer_state::CELLSHM_PEER_STATE_DEAD,
        };
        // SAFETY: out_state checked non-NULL.
        unsafe { put(out_state, state) }
    })
}

/// The cell's process id (0 for NULL).
///
/// # Safety
/// `peer` is NULL or live.
#[no_mangle]
pub unsafe extern "C" fn cellshm_peer_pid(peer: *const cellshm_peer) -> u32 {
    // SAFETY: per this function's contract.
    boundary_value(0, || unsafe { peer.as_ref() }.and_then(|p| p.peer.pid()).unwrap_or(0))
}

/// Registers `callback` to run once when the peer dies (at once if it already has).
/// It runs on a cellshm thread. `free_userdata` (may be NULL) is called exactly once,
/// after the callback ran or when the peer handle's last reference goes away.
///
/// # Safety
/// `peer` is live; `callback` a valid function.
#[no_mangle]
pub unsafe extern "C" fn cellshm_peer_on_death(
    peer: *const cellshm_peer,
    callback: cellshm_death_fn,
    userdata: *mut c_void,
    free_userdata: cellshm_free_fn,
) -> cellshm_status {
    let userdata = Userdata { ptr: userdata, free: free_userdata };
    boundary("cellshm_peer_on_death", move || {
        // SAFETY: per this function's contract.
        let peer = try_c!(unsafe { object(peer, "peer") });
        let Some(callback) = callback else { return invalid("callback is NULL") };
        peer.peer.on_death(move |error| {
            let message = CString::new(error.message().replace('\0', "\\0")).unwrap_or_default();
            // SAFETY: registered by C for this purpose; message is valid during the call.
            let _ =
                catch_unwind(AssertUnwindSafe(|| unsafe { callback(userdata.ptr, error.code(), message.as_ptr()) }));
            drop(userdata);
        });
        CELLSHM_OK
    })
}

/// Waits up to `timeout_ms` for the cell's process to exit and reaps it. On success
/// `*out_exit_code` (may be NULL) is its exit code, or 128 + the signal that killed it
/// (also after cellshm_peer_shutdown reaped it). CELLSHM_DEADLINE_EXCEEDED if it is still
/// running.
///
/// # Safety
/// `peer` is live; `out_exit_code` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn cellshm_peer_wait_exit(
    peer: *const cellshm_peer,
    timeout_ms: u64,
    out_exit_code: *mut c_int,
) -> cellshm_status {
    boundary("cellshm_peer_wait_exit", || {
        // SAFETY: per this function's contract.
        let peer = try_c!(unsafe { object(peer, "peer") });
        let code = try_cellshm!(peer.process().and_then(|p| p.wait_exit(Duration::from_millis(timeout_ms))));
        if !out_exit_code.is_null() {
            // SAFETY: checked non-NULL; writable per this function's contract.
            unsafe { put(out_exit_code, code) };
        }
        CELLSHM_OK
    })
}

/// Sends SIGKILL to the cell's process (reap it with cellshm_peer_wait_exit). A process
/// that already exited is left alone.
///
/// # Safety
/// `peer` is live.
#[no_mangle]
pub unsafe extern "C" fn cellshm_peer_kill(peer: *const cellshm_peer) -> cellshm_status {
    boundary("cellshm_peer_kill", || {
        // SAFETY: per this function's contract.
        let peer = try_c!(unsafe { object(peer, "peer") });
        try_cellshm!(peer.process().and_then(|p| p.kill()));
        CELLSHM_OK
    })
}

/// Stops the cell: GOODBYE, then up to `grace_ms` for it to exit, then SIGKILL; the
/// process is reaped (its exit code stays available to cellshm_peer_wait_exit) and the
/// link closed. Safe to call more than once.
///
/// # Safety
/// `peer` is live.
#[no_mangle]
pub unsafe extern "C" fn cellshm_peer_shutdown(peer: *const cellshm_peer, grace_ms: u64) -> cellshm_status {
    boundary("cellshm_peer_shutdown", || {
        // SAFETY: per this function's contract.
        let peer = try_c!(unsafe { object(peer, "peer") });
        match &peer.process {
            Some(process) => drop(process.shutdown(&peer.peer, Duration::from_millis(grace_ms))),
            None => peer.peer.shutdown(Duration::from_millis(grace_ms)),
        }
        CELLSHM_OK
    })
}

/// Frees the handle. The cell keeps running until the hub is freed or it is shut down
/// (it exits when its link closes); a process still running is reaped in the background
/// when it exits. NULL is a no-op.
///
/// # Safety
/// `peer` is NULL or a peer not yet freed, not in use by another thread.
#[no_mangle]
pub unsafe extern "C" fn cellshm_peer_free(peer: *mut cellshm_peer) {
    if !peer.is_null() {
        // SAFETY: created by Box::into_raw in cellshm_hub_spawn and not freed before.
        let handle = unsafe { Box::from_raw(peer) };
        // A process still running is reaped in the background once it exits.
        let _ = catch_unwind(AssertUnwindSafe(move || {
            if let Some(process) = handle.process {
                process.detach();
            }
        }));
    }
}

/// Lets processes the host did not spawn join the hub through its discovery socket
/// (see cellshm_cell_attach). `uids` (may be NULL with `uid_count` 0)
/// lists the uids allowed; none means the host's own uid. Refused connections are
/// logged. Attaching stays enabled until the hub is freed.
///
/// # Safety
/// `hub` is live; `uids` has `uid_count` readable entries (or is NULL with 0).
#[no_mangle]
pub unsafe extern "C" fn cellshm_hub_enable_attach(
    hub: *mut cellshm_hub,
    uids: *const u32,
    uid_count: usize,
) -> cellshm_status {
    boundary("cellshm_hub_enable_attach", || {
        // SAFETY: per this function's contract.
        let hub = try_c!(unsafe { object(hub, "hub") });
        let mut policy = cellshm::host::attach::AttachPolicy::default();
        if uid_count > 0 {
            if uids.is_null() {
                return invalid("uids is NULL but uid_count is not 0");
            }
            // SAFETY: `uids` has `uid_count` readable entries per this function's contract.
            policy.allowed_uids = unsafe { std::slice::from_raw_parts(uids, uid_count) }.to_vec();
        }
        let listener = try_cellshm!(hub.hub.enable_attach(policy));
        *hub.attach.lock().unwrap_or_else(|p| p.into_inner()) = Some(listener);
        CELLSHM_OK
    })
}

/// Finds the most recent peer named `name`, spawned or attached. On success
/// `*out_peer` is a new handle owned by the caller (free it with cellshm_peer_free);
/// for an attached cell, cellshm_peer_kill and cellshm_peer_wait_exit fail with
/// CELLSHM_FAILED_PRECONDITION (the host did not spawn it). CELLSHM_NOT_FOUND if none.
///
/// # Safety
/// `hub` is live; `name` NUL-terminated; `out_peer` writable.
#[no_mangle]
pub unsafe extern "C" fn cellshm_hub_find_peer(
    hub: *const cellshm_hub,
    name: *const c_char,
    out_peer: *mut *mut cellshm_peer,
) -> cellshm_status {
    boundary("cellshm_hub_find_peer", || {
        out_param!(out_peer);
        // SAFETY: per this function's contract.
        let hub = try_c!(unsafe { object(hub, "hub") });
        // SAFETY: per this function's contract.
        let name = try_c!(unsafe { c_str(name, "name") });
        let Some(peer) = hub.hub.peers().into_iter().rev().find(|p| p.name() == name) else {
            return fail(Error::new(Status::NotFound, format!("no peer named {name:?}")));
        };
        // SAFETY: out_peer checked non-NULL.
        unsafe { put(out_peer, Box::into_raw(Box::new(cellshm_peer { peer, process: None }))) }
    })
}

/// Pushes a log filter (e.g. "warn,mycell=debug") to the cell: records it excludes are
/// no longer sent at all.
///
/// # Safety
/// `peer` is live; `filter` NUL-terminated.
#[no_mangle]
pub unsafe extern "C" fn cellshm_peer_set_log_filter(
    peer: *const cellshm_peer,
    filter: *const c_char,
    timeout_ms: u64,
) -> cellshm_status {
    boundary("cellshm_peer_set_log_filter", || {
        // SAFETY: per this function's contract.
        let peer = try_c!(unsafe { object(peer, "peer") });
        // SAFETY: per this function's contract.
        let filter = try_c!(unsafe { c_str(filter, "filter") });
        try_cellshm!(peer.peer.set_log_filter(filter, Duration::from_millis(timeout_ms)));
        CELLSHM_OK
    })
}

/// The methods a cell serves (cellshm_peer_methods). Owned by the caller; free it with
/// cellshm_method_list_free.
#[derive(Debug)]
pub struct cellshm_method_list {
    methods: Vec<(CString, u32)>,
}

/// Asks the cell which methods it serves (`cellshm.Introspect.methods`). On success
/// `*out_list` is owned by the caller.
///
/// # Safety
/// `peer` is live; `out_list` writable.
#[no_mangle]
pub unsafe extern "C" fn cellshm_peer_methods(
    peer: *const cellshm_peer,
    timeout_ms: u64,
    out_list: *mut *mut cellshm_method_list,
) -> cellshm_status {
    boundary("cellshm_peer_methods", || {
        out_param!(out_list);
        // SAFETY: per this function's contract.
        let peer = try_c!(unsafe { object(peer, "peer") });
        let methods = try_cellshm!(peer.peer.methods(Duration::from_millis(timeout_ms)));
        let methods =
            methods.into_iter().map(|(n, id)| (CString::new(n.replace('\0', "")).unwrap_or_default(), id)).collect();
        // SAFETY: out_list checked non-NULL.
        unsafe { put(out_list, Box::into_raw(Box::new(cellshm_method_list { methods }))) }
    })
}

/// Number of methods in the list (0 for NULL).
///
/// # Safety
/// `list` is NULL or live.
#[no_mangle]
pub unsafe extern "C" fn cellshm_method_list_len(list: *const cellshm_method_list) -> usize {
    // SAFETY: per this function's contract.
    boundary_value(0, || unsafe { list.as_ref() }.map_or(0, |l| l.methods.len()))
}

/// The name of method `index` (sorted by name), or NULL out of range. Borrowed: valid
/// until the list is freed.
///
/// # Safety
/// `list` is NULL or live.
#[no_mangle]
pub unsafe extern "C" fn cellshm_method_list_name(list: *const cellshm_method_list, index: usize) -> *const c_char {
    boundary_value(std::ptr::null(), || {
        // SAFETY: per this function's contract.
        let list = unsafe { list.as_ref() };
        list.and_then(|l| l.methods.get(index)).map_or(std::ptr::null(), |(n, _)| n.as_ptr())
    })
}

/// The id of method `index`, or 0 out of range.
///
/// # Safety
/// `list` is NULL or live.
#[no_mangle]
pub unsafe extern "C" fn cellshm_method_list_id(list: *const cellshm_method_list, index: usize) -> u32 {
    boundary_value(0, || {
        // SAFETY: per this function's contract.
        let list = unsafe { list.as_ref() };
        list.and_then(|l| l.methods.get(index)).map_or(0, |(_, id)| *id)
    })
}

/// Frees a method list. NULL is a no-op.
///
/// # Safety
/// `list` is NULL or not yet freed.
#[no_mangle]
pub unsafe extern "C" fn cellshm_method_list_free(list: *mut cellshm_method_list) {
    if !list.is_null() {
        // SAFETY: created by Box::into_raw in cellshm_peer_methods and not freed before.
        let _ = catch_unwind(AssertUnwindSafe(|| drop(unsafe { Box::from_raw(list) })));
    }
}

// ----- supervisor ----------------------------------------------------------------------

/// Status of a supervised cell: launched, not ready yet.
pub const CELLSHM_CELL_STARTING: u32 = 0;
/// Status of a supervised cell: serving.
pub const CELLSHM_CELL_READY: u32 = 1;
/// Status of a supervised cell: being stopped.
pub const CELLSHM_CELL_STOPPING: u32 = 2;
/// Status of a supervised cell: ended on purpose (goodbye, a clean exit, a stop).
pub const CELLSHM_CELL_EXITED: u32 = 3;
/// Status of a supervised cell: crashed; a relaunch is scheduled.
pub const CELLSHM_CELL_CRASHED: u32 = 4;
/// Status of a supervised cell: crashed too often, or cannot start: given up.
pub const CELLSHM_CELL_FAILED: u32 = 5;

fn cell_status_parts(status: &cellshm::CellStatus) -> (u32, String) {
    use cellshm::CellStatus as S;
    match status {
        S::Starting => (CELLSHM_CELL_STARTING, String::new()),
        S::Ready => (CELLSHM_CELL_READY, String::new()),
        S::Stopping => (CELLSHM_CELL_STOPPING, String::new()),
        S::Exited(r) => (CELLSHM_CELL_EXITED, r.to_string()),
        S::Crashed(r) => (CELLSHM_CELL_CRASHED, r.to_string()),
        S::Failed(r) => (CELLSHM_CELL_FAILED, r.to_string()),
    }
}

/// How often a crashed cell is started again. Start from cellshm_restart_policy_default().
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct cellshm_restart_policy {
    /// Relaunches allowed within `reset_after_ms`; one more crash and the cell is FAILED.
    pub max_restarts: u32,
    /// Delay before the first relaunch (doubled after each crash).
    pub initial_backoff_ms: u64,
    /// Upper bound of the delay.
    pub max_backoff_ms: u64,
    /// A cell up this long has its restart count reset.
    pub reset_after_ms: u64,
    /// How long a cell may take to become ready.
    pub ready_timeout_ms: u64,
}

/// The default restart policy: 5 restarts per minute, backoff 50 ms doubling to 5 s,
/// 10 s to become ready.
#[no_mangle]
pub extern "C" fn cellshm_restart_policy_default() -> cellshm_restart_policy {
    let d = cellshm::RestartPolicy::default();
    cellshm_restart_policy {
        max_restarts: d.max_restarts,
        initial_backoff_ms: d.initial_backoff.as_millis() as u64,
        max_backoff_ms: d.max_backoff.as_millis() as u64,
        reset_after_ms: d.reset_after.as_millis() as u64,
        ready_timeout_ms: 10_000,
    }
}

/// Called on every status change of a supervised cell, on the supervisor's thread:
/// `name` and `reason` (empty unless it ended) are valid during the call.
pub type cellshm_cell_event_fn =
    Option<unsafe extern "C" fn(userdata: *mut c_void, name: *const c_char, status: u32, reason: *const c_char)>;

/// Keeps cells alive under stable names (relaunch with backoff, graceful stop). Owns its
/// hub. Thread-safe: every function but cellshm_supervisor_free may be called from any
/// thread.
#[derive(Debug)]
pub struct cellshm_supervisor {
    sup: cellshm::Supervisor,
}

/// Creates a supervisor with its own hub (`name` as for cellshm_hub_new, may be NULL;
/// `max_peers` 0 = 8). On success `*out_supervisor` is owned by the caller.
///
/// # Safety
/// `name` is NULL or NUL-terminated; `out_supervisor` writable.
#[no_mangle]
pub unsafe extern "C" fn cellshm_supervisor_new(
    name: *const c_char,
    max_peers: u32,
    out_supervisor: *mut *mut cellshm_supervisor,
) -> cellshm_status {
    boundary("cellshm_supervisor_new", || {
        out_param!(out_supervisor);
        let mut config = HubConfig::default();
        if !name.is_null() {
            // SAFETY: per this function's contract.
            config.name = Some(try_c!(unsafe { c_str(name, "name") }).into());
        }
        if max_peers != 0 {
            config.max_peers = max_peers;
        }
        let sup = try_cellshm!(Hub::create(config).and_then(cellshm::Supervisor::new));
        // SAFETY: out_supervisor checked non-NULL.
        unsafe { put(out_supervisor, Box::into_raw(Box::new(cellshm_supervisor { sup }))) }
    })
}

/// Calls `callback` on every status change. `free_userdata` (may be NULL) is called
/// exactly once, when the supervisor is freed.
///
/// # Safety
/// `supervisor` is live; `callback` a valid function.
#[no_mangle]
pub unsafe extern "C" fn cellshm_supervisor_on_event(
    supervisor: *const cellshm_supervisor,
    callback: cellshm_cell_event_fn,
    userdata: *mut c_void,
    free_userdata: cellshm_free_fn,
) -> cellshm_status {
    let userdata = Arc::new(Userdata { ptr: userdata, free: free_userdata });
    boundary("cellshm_supervisor_on_event", move || {
        // SAFETY: per this function's contract.
        let sup = try_c!(unsafe { object(supervisor, "supervisor") });
        let Some(callback) = callback else { return invalid("callback is NULL") };
        sup.sup.on_event(move |event| {
            let (status, reason) = cell_status_parts(&event.status);
            let name = CString::new(event.name.replace('\0', "")).unwrap_or_default();
            let reason = CString::new(reason.replace('\0', "")).unwrap_or_default();
            // SAFETY: registered by C for this purpose; the strings live during the call.
            let _ = catch_unwind(AssertUnwindSafe(|| unsafe {
                callback(userdata.ptr, name.as_ptr(), status, reason.as_ptr())
            }));
        });
        CELLSHM_OK
    })
}

/// Adds a cell named `name` running `program` with `argv` (NULL-terminated, may be NULL)
/// and extra `envp` entries ("KEY=VALUE", NULL-terminated, may be NULL), and starts it.
/// `policy` may be NULL for the default.
///
/// # Safety
/// Strings NUL-terminated; lists NULL-terminated; `policy` NULL or readable.
#[no_mangle]
pub unsafe extern "C" fn cellshm_supervisor_add(
    supervisor: *const cellshm_supervisor,
    name: *const c_char,
    program: *const c_char,
    argv: *const *const c_char,
    envp: *const *const c_char,
    policy: *const cellshm_restart_policy,
) -> cellshm_status {
    boundary("cellshm_supervisor_add", || {
        // SAFETY: per this function's contract.
        let sup = try_c!(unsafe { object(supervisor, "supervisor") });
        // SAFETY: per this function's contract.
        let name = try_c!(unsafe { c_str(name, "name") });
        // SAFETY: per this function's contract.
        let program = try_c!(unsafe { c_str(program, "program") });
        // SAFETY: per this function's contract.
        let args = try_c!(unsafe { c_str_list(argv, "argv") });
        // SAFETY: per this function's contract.
        let env = try_c!(unsafe { c_str_list(envp, "envp") });
        let mut spec = cellshm::CellSpec::new(name, program).args(args.iter().map(|a| a.to_string()));
        for entry in env {
            let Some((key, value)) = entry.split_once('=') else {
                return invalid(format!("envp entry {entry:?} is not KEY=VALUE"));
            };
            spec = spec.env(key, value);
        }
        // SAFETY: per this function's contract.
        let policy = unsafe { policy.as_ref() }.copied().unwrap_or_else(|| cellshm_restart_policy_default());
        spec.ready_timeout = Duration::from_millis(policy.ready_timeout_ms);
        spec.restart = cellshm::RestartPolicy {
            max_restarts: policy.max_restarts,
            initial_backoff: Duration::from_millis(policy.initial_backoff_ms),
            max_backoff: Duration::from_millis(policy.max_backoff_ms),
            reset_after: Duration::from_millis(policy.reset_after_ms),
        };
        try_cellshm!(sup.sup.add(spec));
        CELLSHM_OK
    })
}

/// Writes the cell's status (CELLSHM_CELL_*) to `*out_status`; CELLSHM_NOT_FOUND for an
/// unknown name.
///
/// # Safety
/// `supervisor` is live; `name` NUL-terminated; `out_status` writable.
#[no_mangle]
pub unsafe extern "C" fn cellshm_supervisor_status(
    supervisor: *const cellshm_supervisor,
    name: *const c_char,
    out_status: *mut u32,
) -> cellshm_status {
    boundary("cellshm_supervisor_status", || {
        out_param!(out_status);
        // SAFETY: per this function's contract.
        let sup = try_c!(unsafe { object(supervisor, "supervisor") });
        // SAFETY: per this function's contract.
        let name = try_c!(unsafe { c_str(name, "name") });
        match sup.sup.status(name) {
            // SAFETY: out_status checked non-NULL.
            Some(status) => unsafe { put(out_status, cell_status_parts(&status).0) },
            None => fail(Error::new(Status::NotFound, format!("no cell named {name:?}"))),
        }
    })
}

/// Waits up to `timeout_ms` for the cell to reach `status` (a CELLSHM_CELL_* value).
///
/// # Safety
/// `supervisor` is live; `name` NUL-terminated.
#[no_mangle]
pub unsafe extern "C" fn cellshm_supervisor_wait_status(
    supervisor: *const cellshm_supervisor,
    name: *const c_char,
    status: u32,
    timeout_ms: u64,
) -> cellshm_status {
    boundary("cellshm_supervisor_wait_status", || {
        // SAFETY: per this function's contract.
        let sup = try_c!(unsafe { object(supervisor, "supervisor") });
        // SAFETY: per this function's contract.
        let name = try_c!(unsafe { c_str(name, "name") });
        try_cellshm!(sup.sup.wait_for(name, Duration::from_millis(timeout_ms), |s| cell_status_parts(s).0 == status));
        CELLSHM_OK
    })
}

/// The current instance's process id (0 if none runs).
///
/// # Safety
/// `supervisor` is NULL or live; `name` NULL or NUL-terminated.
#[no_mangle]
pub unsafe extern "C" fn cellshm_supervisor_pid(supervisor: *const cellshm_supervisor, name: *const c_char) -> u32 {
    boundary_value(0, || {
        if name.is_null() {
            return 0;
        }
        // SAFETY: per this function's contract.
        let Some(sup) = (unsafe { supervisor.as_ref() }) else { return 0 };
        // SAFETY: non-NULL and NUL-terminated per this function's contract.
        let Ok(name) = (unsafe { CStr::from_ptr(name) }).to_str() else { return 0 };
        sup.sup.peer(name).and_then(|p| p.pid()).unwrap_or(0)
    })
}

/// Calls the current instance of the cell named `cell`; CELLSHM_UNAVAILABLE while it
/// (re)starts. As cellshm_peer_call otherwise.
///
/// # Safety
/// As for cellshm_peer_call, with a live `supervisor` and a NUL-terminated `cell`.
#[no_mangle]
pub unsafe extern "C" fn cellshm_supervisor_call(
    supervisor: *const cellshm_supervisor,
    cell: *const c_char,
    method: *const c_char,
    request: *const u8,
    request_len: usize,
    options: *const cellshm_call_options,
    out_response: *mut *mut cellshm_response,
) -> cellshm_status {
    boundary("cellshm_supervisor_call", || {
        out_param!(out_response);
        // SAFETY: per this function's contract.
        let sup = try_c!(unsafe { object(supervisor, "supervisor") });
        // SAFETY: per this function's contract.
        let cell = try_c!(unsafe { c_str(cell, "cell") });
        // SAFETY: per this function's contract.
        let (method, request) = try_c!(unsafe { method_and_request(method, request, request_len) });
        deliver_response(sup.sup.call(cell, method, request, &call_options(options)), out_response)
    })
}

/// Stops the cell for good: GOODBYE, then SIGTERM, then SIGKILL, each after `grace_ms`.
/// `*out_exit_code` (may be NULL) gets its exit code.
///
/// # Safety
/// `supervisor` is live; `name` NUL-terminated; `out_exit_code` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn cellshm_supervisor_stop(
    supervisor: *const cellshm_supervisor,
    name: *const c_char,
    grace_ms: u64,
    out_exit_code: *mut c_int,
) -> cellshm_status {
    boundary("cellshm_supervisor_stop", || {
        // SAFETY: per this function's contract.
        let sup = try_c!(unsafe { object(supervisor, "supervisor") });
        // SAFETY: per this function's contract.
        let name = try_c!(unsafe { c_str(name, "name") });
        let code = try_cellshm!(sup.sup.stop(name, Duration::from_millis(grace_ms)));
        if !out_exit_code.is_null() {
            // SAFETY: checked non-NULL; writable per this function's contract.
            unsafe { put(out_exit_code, code) };
        }
        CELLSHM_OK
    })
}

/// Stops every cell (briefly) and frees the supervisor and its hub. NULL is a no-op.
///
/// # Safety
/// `supervisor` is NULL or not yet freed, not in use by another thread.
#[no_mangle]
pub unsafe extern "C" fn cellshm_supervisor_free(supervisor: *mut cellshm_supervisor) {
    if !supervisor.is_null() {
        // SAFETY: created by Box::into_raw in cellshm_supervisor_new and not freed before.
        let _ = catch_unwind(AssertUnwindSafe(|| drop(unsafe { Box::from_raw(supervisor) })));
    }
}

// ----- cell ----------------------------------------------------------------------------

/// A cell: joins the hub its host named, serves methods, calls the host. Register
/// methods before cellshm_cell_serve / cellshm_cell_run; cellshm_cell_call,
/// cellshm_cell_notify and cellshm_cell_log may then be used from any thread.
#[derive(Debug)]
pub struct cellshm_cell {
    cell: Cell,
}

/// Joins the hub whose host spawned this process: finds the doorbell through the
/// CELLSHM_DOORBELL_FD environment variable (or a `--doorbell-fd=N` entry of `argv`, if
/// the host was asked to append one; every other entry is left alone), receives the
/// join record and the link's memfds on it, checks and maps them, and says HELLO.
/// `argv` has argc entries, argv[0] being the program; it may be NULL with argc 0. On
/// success `*out_cell` is owned by the caller.
///
/// # Safety
/// `argv` has `argc` NUL-terminated strings (or is NULL with argc 0); `out_cell` writable.
#[no_mangle]
pub unsafe extern "C" fn cellshm_cell_new(
    argc: c_int,
    argv: *const *const c_char,
    out_cell: *mut *mut cellshm_cell,
) -> cellshm_status {
    boundary("cellshm_cell_new", || {
        out_param!(out_cell);
        if argc < 0 || (argc > 0 && argv.is_null()) {
            return invalid(format!("argc is {argc} but argv is {:?}", argv));
        }
        let mut args = Vec::new();
        for i in 1..argc.max(0) as usize {
            // SAFETY: argv has argc entries per this function's contract.
            let arg = unsafe { *argv.add(i) };
            // SAFETY: each entry is a NUL-terminated string.
            args.push(std::ffi::OsString::from(try_c!(unsafe { c_str(arg, "argv entry") })));
        }
        let join = try_cellshm!(JoinArgs::parse(args));
        let options = try_cellshm!(CellOptions::from_env());
        let cell = try_cellshm!(Cell::join(join, options));
        // SAFETY: out_cell checked non-NULL.
        unsafe { put(out_cell, Box::into_raw(Box::new(cellshm_cell { cell }))) }
    })
}

/// Joins a running hub whose host enabled attaching (cellshm_hub_enable_attach), as
/// `name`, through its discovery socket. `hub` is the hub's name (a hub of this user)
/// or "UID/NAME" (a hub of user UID). On success `*out_cell` is owned by the caller.
///
/// # Safety
/// `hub` and `name` NUL-terminated; `out_cell` writable.
#[no_mangle]
pub unsafe extern "C" fn cellshm_cell_attach(
    hub: *const c_char,
    name: *const c_char,
    out_cell: *mut *mut cellshm_cell,
) -> cellshm_status {
    boundary("cellshm_cell_attach", || {
        out_param!(out_cell);
        // SAFETY: per this function's contract.
        let hub = try_c!(unsafe { c_str(hub, "hub") });
        // SAFETY: per this function's contract.
        let name = try_c!(unsafe { c_str(name, "name") });
        let options = try_cellshm!(CellOptions::from_env());
        let cell = try_cellshm!(Cell::attach(hub, name, options));
        // SAFETY: out_cell checked non-NULL.
        unsafe { put(out_cell, Box::into_raw(Box::new(cellshm_cell { cell }))) }
    })
}

/// Serves "Service.method" with `handler`. `free_userdata` (may be NULL) is called
/// exactly once: when the cell is freed, or before this returns if it fails.
///
/// # Safety
/// `cell` is live; `name` NUL-terminated; `handler` a valid function.
#[no_mangle]
pub unsafe extern "C" fn cellshm_cell_register(
    cell: *mut cellshm_cell,
    name: *const c_char,
    handler: cellshm_handler_fn,
    userdata: *mut c_void,
    free_userdata: cellshm_free_fn,
) -> cellshm_status {
    let userdata = Arc::new(Userdata { ptr: userdata, free: free_userdata });
    boundary("cellshm_cell_register", move || {
        // SAFETY: per this function's contract.
        let cell = try_c!(unsafe { object(cell, "cell") });
        // SAFETY: per this function's contract.
        let name = try_c!(unsafe { c_str(name, "name") });
        let Some(handler) = handler else { return invalid("handler is NULL") };
        try_cellshm!(cell.cell.method(name, c_handler(handler, userdata)));
        CELLSHM_OK
    })
}

/// Starts serving and announces readiness to the host; returns once the host accepted.
///
/// # Safety
/// `cell` is live.
#[no_mangle]
pub unsafe extern "C" fn cellshm_cell_serve(cell: *mut cellshm_cell) -> cellshm_status {
    boundary("cellshm_cell_serve", || {
        // SAFETY: per this function's contract.
        let cell = try_c!(unsafe { object(cell, "cell") });
        try_cellshm!(cell.cell.serve());
        CELLSHM_OK
    })
}

/// Serves until the host says goodbye (CELLSHM_OK) or goes away (its status). By
/// default a cell whose host dies exits the process instead of returning.
///
/// # Safety
/// `cell` is live.
#[no_mangle]
pub unsafe extern "C" fn cellshm_cell_run(cell: *mut cellshm_cell) -> cellshm_status {
    boundary("cellshm_cell_run", || {
        // SAFETY: per this function's contract.
        let cell = try_c!(unsafe { object(cell, "cell") });
        try_cellshm!(cell.cell.run());
        CELLSHM_OK
    })
}

/// Calls a host method; as cellshm_peer_call.
///
/// # Safety
/// As for cellshm_peer_call, with a live `cell`.
#[no_mangle]
pub unsafe extern "C" fn cellshm_cell_call(
    cell: *const cellshm_cell,
    method: *const c_char,
    request: *const u8,
    request_len: usize,
    options: *const cellshm_call_options,
    out_response: *mut *mut cellshm_response,
) -> cellshm_status {
    boundary("cellshm_cell_call", || {
        out_param!(out_response);
        // SAFETY: per this function's contract.
        let cell = try_c!(unsafe { object(cell, "cell") });
        // SAFETY: per this function's contract.
        let (method, request) = try_c!(unsafe { method_and_request(method, request, request_len) });
        deliver_response(cell.cell.call(method, request, &call_options(options)), out_response)
    })
}

/// Sends a notification to a host method (no response).
///
/// # Safety
/// As for cellshm_peer_notify, with a live `cell`.
#[no_mangle]
pub unsafe extern "C" fn cellshm_cell_notify(
    cell: *const cellshm_cell,
    method: *const c_char,
    request: *const u8,
    request_len: usize,
) -> cellshm_status {
    boundary("cellshm_cell_notify", || {
        // SAFETY: per this function's contract.
        let cell = try_c!(unsafe { object(cell, "cell") });
        // SAFETY: per this function's contract.
        let (method, request) = try_c!(unsafe { method_and_request(method, request, request_len) });
        try_cellshm!(cell.cell.notify(method, request, &CallOptions::default()));
        CELLSHM_OK
    })
}

/// Sends a log line to the host, where it appears in the host's log with the cell's name.
///
/// # Safety
/// `cell` is live; `line` NUL-terminated.
#[no_mangle]
pub unsafe extern "C" fn cellshm_cell_log(cell: *const cellshm_cell, line: *const c_char) -> cellshm_status {
    boundary("cellshm_cell_log", || {
        // SAFETY: per this function's contract.
        let cell = try_c!(unsafe { object(cell, "cell") });
        // SAFETY: per this function's contract.
        let line = try_c!(unsafe { c_str(line, "line") });
        try_cellshm!(cell.cell.log(line));
        CELLSHM_OK
    })
}

/// Sends a log record to the host: `level` 1 error, 2 warn, 3 info, 4 debug, 5 trace;
/// `target` the logger or module (may be ""). Records the host's filter excludes are not
/// sent.
///
/// # Safety
/// `cell` is live; `target` and `message` NUL-terminated.
#[no_mangle]
pub unsafe extern "C" fn cellshm_cell_log_event(
    cell: *const cellshm_cell,
    level: u32,
    target: *const c_char,
    message: *const c_char,
) -> cellshm_status {
    boundary("cellshm_cell_log_event", || {
        // SAFETY: per this function's contract.
        let cell = try_c!(unsafe { object(cell, "cell") });
        // SAFETY: per this function's contract.
        let target = try_c!(unsafe { c_str(target, "target") });
        // SAFETY: per this function's contract.
        let message = try_c!(unsafe { c_str(message, "message") });
        try_cellshm!(cell.cell.log_event(level, target, message));
        CELLSHM_OK
    })
}

/// This cell's peer id (0 for NULL).
///
/// # Safety
/// `cell` is NULL or live.
#[no_mangle]
pub unsafe extern "C" fn cellshm_cell_peer_id(cell: *const cellshm_cell) -> u32 {
    // SAFETY: per this function's contract.
    boundary_value(0, || unsafe { cell.as_ref() }.map_or(0, |c| c.cell.peer_id()))
}

/// Leaves the hub: tells the host goodbye and frees the cell. Registered userdata is
/// released. NULL is a no-op.
///
/// # Safety
/// `cell` is NULL or a cell not yet freed, not in use by another thread.
#[no_mangle]
pub unsafe extern "C" fn cellshm_cell_free(cell: *mut cellshm_cell) {
    if !cell.is_null() {
        // SAFETY: created by Box::into_raw in cellshm_cell_new and not freed before.
        let _ = catch_unwind(AssertUnwindSafe(|| drop(unsafe { Box::from_raw(cell) })));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_c_status_table_is_the_rust_status_table() {
        for s in Status::ALL {
            let c: cellshm_status = s.into();
            assert_eq!(c as u32, s.code(), "{s}");
            assert_eq!(format!("{c:?}"), format!("CELLSHM_{}", s.name()));
            // SAFETY: cellshm_status_str returns a static C string.
            let name = unsafe { CStr::from_ptr(cellshm_status_str(s.code())) };
            assert_eq!(name.to_str().unwrap(), s.name());
        }
        // SAFETY: static C string.
        assert_eq!(unsafe { CStr::from_ptr(cellshm_status_str(999)) }.to_str().unwrap(), "UNRECOGNIZED_STATUS");
    }

    #[test]
    fn null_arguments_are_invalid_not_crashes() {
        let mut hub: *mut cellshm_hub = std::ptr::null_mut();
        // SAFETY: deliberately NULL out-parameter; the function must refuse it.
        assert_eq!(unsafe { cellshm_hub_new(std::ptr::null(), 0, std::ptr::null_mut()) }, CELLSHM_INVALID_ARGUMENT);
        // SAFETY: NULL peer / method, checked by the functions.
        unsafe {
            assert_eq!(
                cellshm_peer_call(
                    std::ptr::null(),
                    std::ptr::null(),
                    std::ptr::null(),
                    0,
                    std::ptr::null(),
                    &mut std::ptr::null_mut()
                ),
                CELLSHM_INVALID_ARGUMENT
            );
            assert_eq!(cellshm_method_id(std::ptr::null()), 0);
            assert_eq!(cellshm_method_id(c"Echo.echo".as_ptr()), 0x3e89_5c50);
            cellshm_hub_free(std::ptr::null_mut());
            cellshm_peer_free(std::ptr::null_mut());
            cellshm_cell_free(std::ptr::null_mut());
            cellshm_response_free(std::ptr::null_mut());
            assert!(hub.is_null());
            assert_eq!(cellshm_hub_new(std::ptr::null(), 0, &mut hub), CELLSHM_OK);
            assert!(!hub.is_null());
            cellshm_hub_free(hub);
        }
        // SAFETY: static or thread-local C string.
        let message = unsafe { CStr::from_ptr(cellshm_last_error_message()) };
        assert!(message.to_str().unwrap().contains("is NULL"), "{message:?}");
    }
}

// ----- streams -------------------------------------------------------------------------

/// The caller's end of a stream (cellshm_peer_open_stream, cellshm_cell_open_stream).
/// Owned by the caller; release it with cellshm_stream_free, which cancels a stream
/// that has not ended. Use it from one thread at a time, except cellshm_stream_cancel,
/// which any thread may call to wake a thread blocked in cellshm_stream_next.
#[derive(Debug)]
pub struct cellshm_stream {
    /// `None` once finished or cancelled.
    stream: std::sync::Mutex<Option<Arc<Stream>>>,
}

impl cellshm_stream {
    fn get(&self) -> Result<Arc<Stream>, cellshm_status> {
        let stream = self.stream.lock().unwrap_or_else(|e| e.into_inner()).clone();
        stream.ok_or_else(|| fail(Error::new(Status::FailedPrecondition, "the stream was finished or cancelled")))
    }
}

/// One item of a stream, read in place from shared memory. Owned by the caller;
/// cellshm_stream_item_free releases its slot and lets the sender send one more.
#[derive(Debug)]
pub struct cellshm_stream_item {
    item: StreamItem,
}

fn deliver_item(result: cellshm::Result<Option<StreamItem>>, out: *mut *mut cellshm_stream_item) -> cellshm_status {
    let item = try_cellshm!(result);
    let raw = item.map_or(std::ptr::null_mut(), |item| Box::into_raw(Box::new(cellshm_stream_item { item })));
    // SAFETY: callers checked `out` non-NULL.
    unsafe { put(out, raw) }
}

fn deliver_stream(result: cellshm::Result<Stream>, out: *mut *mut cellshm_stream) -> cellshm_status {
    let stream = try_cellshm!(result);
    let boxed = Box::new(cellshm_stream { stream: std::sync::Mutex::new(Some(Arc::new(stream))) });
    // SAFETY: callers checked `out` non-NULL.
    unsafe { put(out, Box::into_raw(boxed)) }
}

/// Opens a stream to the cell's stream method "Service.method" with `request_len`
/// bytes at `request` as its opening message. `options` may be NULL; its timeout covers
/// the whole stream. On success `*out_stream` is owned by the caller.
///
/// # Safety
/// `peer` is live; `method` NUL-terminated; `request` has `request_len` readable bytes;
/// `out_stream` is writable.
#[no_mangle]
pub unsafe extern "C" fn cellshm_peer_open_stream(
    peer: *const cellshm_peer,
    method: *const c_char,
    request: *const u8,
    request_len: usize,
    options: *const cellshm_call_options,
    out_stream: *mut *mut cellshm_stream,
) -> cellshm_status {
    boundary("cellshm_peer_open_stream", || {
        out_param!(out_stream);
        // SAFETY: per this function's contract.
        let peer = try_c!(unsafe { object(peer, "peer") });
        // SAFETY: per this function's contract.
        let (method, request) = try_c!(unsafe { method_and_request(method, request, request_len) });
        deliver_stream(peer.peer.open_stream(method, request, &call_options(options)), out_stream)
    })
}

/// Opens a stream to the host's stream method "Service.method" (see
/// cellshm_peer_open_stream).
///
/// # Safety
/// As for cellshm_peer_open_stream, with a live `cell`.
#[no_mangle]
pub unsafe extern "C" fn cellshm_cell_open_stream(
    cell: *const cellshm_cell,
    method: *const c_char,
    request: *const u8,
    request_len: usize,
    options: *const cellshm_call_options,
    out_stream: *mut *mut cellshm_stream,
) -> cellshm_status {
    boundary("cellshm_cell_open_stream", || {
        out_param!(out_stream);
        // SAFETY: per this function's contract.
        let cell = try_c!(unsafe { object(cell, "cell") });
        // SAFETY: per this function's contract.
        let (method, request) = try_c!(unsafe { method_and_request(method, request, request_len) });
        deliver_stream(cell.cell.open_stream(method, request, &call_options(options)), out_stream)
    })
}

/// Waits for the next item of the stream. On CELLSHM_OK `*out_item` is an item owned
/// by the caller, or NULL once the handler finished successfully. Any other status is
/// the stream's end: the handler's error, CELLSHM_CANCELLED, CELLSHM_DEADLINE_EXCEEDED,
/// CELLSHM_PEER_DEAD, ... with the message in cellshm_last_error_message(). One
/// exception: CELLSHM_FAILED_PRECONDITION while the caller still holds a whole window
/// (8) of items, which could never be followed by more; free some and call again.
///
/// # Safety
/// `stream` is live; `out_item` is writable.
#[no_mangle]
pub unsafe extern "C" fn cellshm_stream_next(
    stream: *const cellshm_stream,
    out_item: *mut *mut cellshm_stream_item,
) -> cellshm_status {
    boundary("cellshm_stream_next", || {
        out_param!(out_item);
        // SAFETY: per this function's contract.
        let stream = try_c!(try_c!(unsafe { object(stream, "stream") }).get());
        deliver_item(stream.recv(), out_item)
    })
}

/// Sends one item (a copy of `len` bytes at `data`) to the handler; waits while the
/// handler's window is full.
///
/// # Safety
/// `stream` is live; `data` has `len` readable bytes.
#[no_mangle]
pub unsafe extern "C" fn cellshm_stream_send(
    stream: *const cellshm_stream,
    data: *const u8,
    len: usize,
) -> cellshm_status {
    boundary("cellshm_stream_send", || {
        // SAFETY: per this function's contract.
        let stream = try_c!(try_c!(unsafe { object(stream, "stream") }).get());
        // SAFETY: per this function's contract.
        let data = try_c!(unsafe { c_bytes(data, len, "data") });
        try_cellshm!(stream.send(data));
        CELLSHM_OK
    })
}

/// Tells the handler that no more items follow.
///
/// # Safety
/// `stream` is live.
#[no_mangle]
pub unsafe extern "C" fn cellshm_stream_close_send(stream: *const cellshm_stream) -> cellshm_status {
    boundary("cellshm_stream_close_send", || {
        // SAFETY: per this function's contract.
        let stream = try_c!(try_c!(unsafe { object(stream, "stream") }).get());
        try_cellshm!(stream.close_send());
        CELLSHM_OK
    })
}

/// Closes sending, drops items still coming, and waits for the handler's response
/// (client streaming). On success `*out_response` is owned by the caller. The stream
/// is finished afterwards either way; it still has to be freed.
///
/// # Safety
/// `stream` is live; `out_response` is writable.
#[no_mangle]
pub unsafe extern "C" fn cellshm_stream_finish(
    stream: *const cellshm_stream,
    out_response: *mut *mut cellshm_response,
) -> cellshm_status {
    boundary("cellshm_stream_finish", || {
        out_param!(out_response);
        // SAFETY: per this function's contract.
        let handle = try_c!(unsafe { object(stream, "stream") });
        let taken = handle.stream.lock().unwrap_or_else(|e| e.into_inner()).take();
        let Some(stream) = taken else {
            return fail(Error::new(Status::FailedPrecondition, "the stream was finished or cancelled"));
        };
        match Arc::try_unwrap(stream) {
            Ok(stream) => deliver_response(stream.finish(), out_response),
            Err(stream) => {
                *handle.stream.lock().unwrap_or_else(|e| e.into_inner()) = Some(stream);
                fail(Error::new(Status::FailedPrecondition, "another thread is using the stream"))
            }
        }
    })
}

/// Cancels the stream: the handler sees it cancelled, a thread blocked in
/// cellshm_stream_next returns CELLSHM_CANCELLED, late items are dropped. Idempotent.
///
/// # Safety
/// `stream` is live.
#[no_mangle]
pub unsafe extern "C" fn cellshm_stream_cancel(stream: *const cellshm_stream) -> cellshm_status {
    boundary("cellshm_stream_cancel", || {
        // SAFETY: per this function's contract.
        let handle = try_c!(unsafe { object(stream, "stream") });
        let taken = handle.stream.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(stream) = taken {
            stream.cancel();
        }
        CELLSHM_OK
    })
}

/// Releases a stream, cancelling it if it has not ended. NULL is a no-op.
///
/// # Safety
/// `stream` is NULL or a stream not yet freed, used by no other thread; it must not be
/// used afterwards.
#[no_mangle]
pub unsafe extern "C" fn cellshm_stream_free(stream: *mut cellshm_stream) {
    if !stream.is_null() {
        // SAFETY: created by Box::into_raw in deliver_stream and not freed before.
        let boxed = unsafe { Box::from_raw(stream) };
        let _ = catch_unwind(AssertUnwindSafe(|| drop(boxed)));
    }
}

/// The item's bytes (NULL for a NULL item), read in place (zero-copy). Valid until
/// cellshm_stream_item_free. Like a response's, they may lie in memory a hostile sender
/// can change while you read: copy what you validate.
///
/// # Safety
/// `item` is NULL or a live item.
#[no_mangle]
pub unsafe extern "C" fn cellshm_stream_item_data(item: *const cellshm_stream_item) -> *const u8 {
    boundary_value(std::ptr::null(), || {
        // SAFETY: per this function's contract.
        unsafe { item.as_ref() }.map_or(std::ptr::null(), |i| i.item.payload().as_ptr())
    })
}

/// The item's length in bytes (0 for a NULL item).
///
/// # Safety
/// `item` is NULL or a live item.
#[no_mangle]
pub unsafe extern "C" fn cellshm_stream_item_len(item: *const cellshm_stream_item) -> usize {
    // SAFETY: per this function's contract.
    boundary_value(0, || unsafe { item.as_ref() }.map_or(0, |i| i.item.len()))
}

/// Releases an item: its slot goes back and the sender gets credit. NULL is a no-op.
///
/// # Safety
/// `item` is NULL or an item not yet freed; it must not be used afterwards.
#[no_mangle]
pub unsafe extern "C" fn cellshm_stream_item_free(item: *mut cellshm_stream_item) {
    if !item.is_null() {
        // SAFETY: created by Box::into_raw in deliver_item and not freed before.
        let boxed = unsafe { Box::from_raw(item) };
        let _ = catch_unwind(AssertUnwindSafe(|| drop(boxed)));
    }
}

/// The handler's end of a stream; valid only during the stream handler call.
#[derive(Debug)]
pub struct cellshm_stream_call {
    _opaque: (),
}

struct StreamCallState<'a> {
    call: &'a mut StreamCall,
    error_message: Option<String>,
}

/// A stream handler. It runs on its own thread for each stream opened to it; `request`
/// (the opening message, `request_len` bytes) is valid until it returns. It sends items
/// with cellshm_stream_call_send, reads the caller's with cellshm_stream_call_next, and
/// returns CELLSHM_OK to end the stream (with the response set by
/// cellshm_stream_call_set_response), or another status to end it with that error.
pub type cellshm_stream_handler_fn = Option<
    unsafe extern "C" fn(
        userdata: *mut c_void,
        request: *const u8,
        request_len: usize,
        call: *mut cellshm_stream_call,
    ) -> u32,
>;

fn c_stream_handler(
    handler: unsafe extern "C" fn(*mut c_void, *const u8, usize, *mut cellshm_stream_call) -> u32,
    userdata: Arc<Userdata>,
) -> impl Fn(&mut StreamCall) -> cellshm::Result<()> + Send + Sync + 'static {
    move |call| {
        let request = call.request().to_vec();
        let mut state = StreamCallState { call, error_message: None };
        let raw = (&mut state as *mut StreamCallState<'_>).cast::<cellshm_stream_call>();
        // SAFETY: registered by C for this purpose; `request` and `raw` stay valid for the
        // duration of the call.
        let code = unsafe { handler(userdata.ptr, request.as_ptr(), request.len(), raw) };
        if code == CELLSHM_OK as u32 {
            return Ok(());
        }
        let name = Status::from_code(code).map_or_else(|| format!("status {code}"), |s| s.name().to_string());
        let message = state.error_message.take().unwrap_or_else(|| format!("stream handler returned {name}"));
        Err(Error::with_code(code, message))
    }
}

/// # Safety
/// `call` is NULL or the pointer passed to the running stream handler.
unsafe fn stream_call_state<'a>(call: *mut cellshm_stream_call) -> Result<&'a mut StreamCallState<'a>, cellshm_status> {
    // SAFETY: a non-NULL call is the StreamCallState the running handler was given.
    unsafe { call.cast::<StreamCallState<'a>>().as_mut() }.ok_or_else(|| invalid("call is NULL"))
}

/// How a method is called, as `cellshm.Introspect.methods` reports it and clients
/// generated from a `.proto` check at connect time. A stream method registered with
/// cellshm_hub_register_stream or cellshm_cell_register_stream is CELLSHM_METHOD_STREAM
/// (its direction undeclared: it passes the check for any stream kind).
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum cellshm_method_kind {
    /// One request, one response.
    CELLSHM_METHOD_UNARY = 0,
    /// A stream method that does not say which way its items flow.
    CELLSHM_METHOD_STREAM = 1,
    /// One request, a stream of responses.
    CELLSHM_METHOD_SERVER_STREAMING = 2,
    /// A stream of requests, one response.
    CELLSHM_METHOD_CLIENT_STREAMING = 3,
    /// Streams both ways.
    CELLSHM_METHOD_BIDI = 4,
}

/// A stream method's kind from the number C passed (INVALID_ARGUMENT for unary and
/// unknown numbers).
fn stream_kind(kind: u32) -> Result<cellshm::MethodKind, cellshm_status> {
    cellshm::MethodKind::stream_from_code(kind).map_err(invalid)
}

/// Serves the stream method "Service.method" to every cell of the hub. `userdata` is
/// passed to every call and released with `free_userdata` (may be NULL) exactly once.
///
/// # Safety
/// `hub` is live; `name` NUL-terminated; `handler` a valid function.
#[no_mangle]
pub unsafe extern "C" fn cellshm_hub_register_stream(
    hub: *const cellshm_hub,
    name: *const c_char,
    handler: cellshm_stream_handler_fn,
    userdata: *mut c_void,
    free_userdata: cellshm_free_fn,
) -> cellshm_status {
    // SAFETY: per this function's contract, which is that function's.
    unsafe {
        cellshm_hub_register_stream_kind(
            hub,
            name,
            cellshm_method_kind::CELLSHM_METHOD_STREAM as u32,
            handler,
            userdata,
            free_userdata,
        )
    }
}

/// cellshm_hub_register_stream that also says which way items flow: `kind` is a
/// cellshm_method_kind other than CELLSHM_METHOD_UNARY (else CELLSHM_INVALID_ARGUMENT;
/// `userdata` is released then too).
///
/// # Safety
/// `hub` is live; `name` NUL-terminated; `handler` a valid function.
#[no_mangle]
pub unsafe extern "C" fn cellshm_hub_register_stream_kind(
    hub: *const cellshm_hub,
    name: *const c_char,
    kind: u32,
    handler: cellshm_stream_handler_fn,
    userdata: *mut c_void,
    free_userdata: cellshm_free_fn,
) -> cellshm_status {
    let userdata = Arc::new(Userdata { ptr: userdata, free: free_userdata });
    boundary("cellshm_hub_register_stream_kind", move || {
        // SAFETY: per this function's contract.
        let hub = try_c!(unsafe { object(hub, "hub") });
        // SAFETY: per this function's contract.
        let name = try_c!(unsafe { c_str(name, "name") });
        let kind = try_c!(stream_kind(kind));
        let Some(handler) = handler else { return invalid("handler is NULL") };
        try_cellshm!(hub.hub.stream_method_as(name, kind, c_stream_handler(handler, userdata)));
        CELLSHM_OK
    })
}

/// Serves the stream method "Service.method" (see cellshm_hub_register_stream).
///
/// # Safety
/// `cell` is live; `name` NUL-terminated; `handler` a valid function.
#[no_mangle]
pub unsafe extern "C" fn cellshm_cell_register_stream(
    cell: *mut cellshm_cell,
    name: *const c_char,
    handler: cellshm_stream_handler_fn,
    userdata: *mut c_void,
    free_userdata: cellshm_free_fn,
) -> cellshm_status {
    // SAFETY: per this function's contract, which is that function's.
    unsafe {
        cellshm_cell_register_stream_kind(
            cell,
            name,
            cellshm_method_kind::CELLSHM_METHOD_STREAM as u32,
            handler,
            userdata,
            free_userdata,
        )
    }
}

/// cellshm_cell_register_stream that also says which way items flow (see
/// cellshm_hub_register_stream_kind).
///
/// # Safety
/// `cell` is live; `name` NUL-terminated; `handler` a valid function.
#[no_mangle]
pub unsafe extern "C" fn cellshm_cell_register_stream_kind(
    cell: *mut cellshm_cell,
    name: *const c_char,
    kind: u32,
    handler: cellshm_stream_handler_fn,
    userdata: *mut c_void,
    free_userdata: cellshm_free_fn,
) -> cellshm_status {
    let userdata = Arc::new(Userdata { ptr: userdata, free: free_userdata });
    boundary("cellshm_cell_register_stream_kind", move || {
        // SAFETY: per this function's contract.
        let cell = try_c!(unsafe { object(cell, "cell") });
        // SAFETY: per this function's contract.
        let name = try_c!(unsafe { c_str(name, "name") });
        let kind = try_c!(stream_kind(kind));
        let Some(handler) = handler else { return invalid("handler is NULL") };
        try_cellshm!(cell.cell.stream_method_as(name, kind, c_stream_handler(handler, userdata)));
        CELLSHM_OK
    })
}

/// Sends one item (a copy of `len` bytes at `data`) to the caller; waits while the
/// caller's window is full. CELLSHM_CANCELLED once the caller gave up: return then.
///
/// # Safety
/// `call` is the running stream handler's; `data` has `len` readable bytes.
#[no_mangle]
pub unsafe extern "C" fn cellshm_stream_call_send(
    call: *mut cellshm_stream_call,
    data: *const u8,
    len: usize,
) -> cellshm_status {
    boundary("cellshm_stream_call_send", || {
        // SAFETY: per this function's contract.
        let state = try_c!(unsafe { stream_call_state(call) });
        // SAFETY: per this function's contract.
        let data = try_c!(unsafe { c_bytes(data, len, "data") });
        try_cellshm!(state.call.send(data));
        CELLSHM_OK
    })
}

/// Waits for the caller's next item: on CELLSHM_OK `*out_item` is an item owned by the
/// handler (free it with cellshm_stream_item_free), or NULL once the caller closed its
/// sending side.
///
/// # Safety
/// `call` is the running stream handler's; `out_item` is writable.
#[no_mangle]
pub unsafe extern "C" fn cellshm_stream_call_next(
    call: *mut cellshm_stream_call,
    out_item: *mut *mut cellshm_stream_item,
) -> cellshm_status {
    boundary("cellshm_stream_call_next", || {
        out_param!(out_item);
        // SAFETY: per this function's contract.
        let state = try_c!(unsafe { stream_call_state(call) });
        deliver_item(state.call.recv(), out_item)
    })
}

/// 1 once the caller cancelled (or its deadline passed, or it went away), else 0 (also
/// for NULL).
///
/// # Safety
/// `call` is NULL or the running stream handler's.
#[no_mangle]
pub unsafe extern "C" fn cellshm_stream_call_cancelled(call: *mut cellshm_stream_call) -> c_int {
    boundary_value(0, || {
        // SAFETY: per this function's contract.
        unsafe { stream_call_state(call) }.map_or(0, |state| c_int::from(state.call.is_cancelled()))
    })
}

/// Sets the response sent when the handler returns CELLSHM_OK (a copy of `len` bytes).
///
/// # Safety
/// `call` is the running stream handler's; `data` has `len` readable bytes.
#[no_mangle]
pub unsafe extern "C" fn cellshm_stream_call_set_response(
    call: *mut cellshm_stream_call,
    data: *const u8,
    len: usize,
) -> cellshm_status {
    boundary("cellshm_stream_call_set_response", || {
        // SAFETY: per this function's contract.
        let state = try_c!(unsafe { stream_call_state(call) });
        // SAFETY: per this function's contract.
        let data = try_c!(unsafe { c_bytes(data, len, "data") });
        state.call.set_response(data);
        CELLSHM_OK
    })
}

/// Sets the message that goes with the error status the handler is about to return.
///
/// # Safety
/// `call` is the running stream handler's; `message` NUL-terminated.
#[no_mangle]
pub unsafe extern "C" fn cellshm_stream_call_error_message(
    call: *mut cellshm_stream_call,
    message: *const c_char,
) -> cellshm_status {
    boundary("cellshm_stream_call_error_message", || {
        // SAFETY: per this function's contract.
        let state = try_c!(unsafe { stream_call_state(call) });
        // SAFETY: per this function's contract.
        let message = try_c!(unsafe { c_str(message, "message") });
        state.error_message = Some(message.to_string());
        CELLSHM_OK
    })
}
