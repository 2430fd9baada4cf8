//! The C ABI of cellshm (`libcellshm.so`, `libcellshm.a`, `include/cellshm.h`).
//!
//! Every exported function runs inside `boundary`, so no panic unwinds into C; checks
//! every pointer before use (NULL → `CELLSHM_INVALID_ARGUMENT`); writes out-parameters
//! only on success; and records a message for `cellshm_last_error_message`.
//!
//! Ownership is in types (`ownership`, rustls-ffi's `Castable`): each export turns its
//! raw arguments into borrowed handles (`Handle::borrow`), checked strings and slices,
//! and out-parameters (`Out`) in one `unsafe` block whose `// SAFETY:` states that
//! export's contract; handles C owns go out with `Out::hand_over` and come back in
//! their `_free` through `free_with`; C callbacks are trusted once where they are
//! registered (`callbacks::Trusted`). The call and register bodies shared by the peer,
//! cell, hub and supervisor exports are in `link_end`.
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

pub(crate) fn remember(message: &str, code: u32) {
    let text = CString::new(message.replace('\0', "\\0")).unwrap_or_default();
    LAST_ERROR.with(|e| *e.borrow_mut() = text);
    LAST_ERROR_CODE.with(|c| c.set(code));
}

/// `s` for C, without the NUL bytes C could not see past.
pub(crate) fn c_string(s: &str) -> CString {
    CString::new(s.replace('\0', "")).unwrap_or_default()
}

pub(crate) fn fail(error: Error) -> cellshm_status {
    remember(error.message(), error.code());
    error.status().into()
}

pub(crate) fn invalid(message: impl Into<String>) -> cellshm_status {
    fail(Error::new(Status::InvalidArgument, message))
}

/// Runs an exported function's body: a panic becomes `CELLSHM_INTERNAL`.
pub(crate) fn boundary(name: &str, body: impl FnOnce() -> cellshm_status) -> cellshm_status {
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(status) => status,
        Err(panic) => {
            fail(Error::new(Status::Internal, format!("{name} panicked: {}", cellshm::panic_message(&*panic))))
        }
    }
}

/// Like `boundary` for functions that return a value instead of a status.
pub(crate) fn boundary_value<T>(default: T, body: impl FnOnce() -> T) -> T {
    catch_unwind(AssertUnwindSafe(body)).unwrap_or(default)
}

/// A borrowed NUL-terminated UTF-8 string argument.
///
/// # Safety
/// `ptr` is NULL or points to a NUL-terminated string that outlives `'a`.
pub(crate) unsafe fn c_str<'a>(ptr: *const c_char, what: &str) -> Result<&'a str, cellshm_status> {
    if ptr.is_null() {
        return Err(invalid(format!("{what} is NULL")));
    }
    // SAFETY: non-NULL, and the caller guarantees NUL termination and lifetime.
    unsafe { CStr::from_ptr(ptr) }.to_str().map_err(|_| invalid(format!("{what} is not valid UTF-8")))
}

/// A borrowed array argument of `len` values (`ptr` may be NULL only when `len` is 0).
///
/// # Safety
/// `ptr` points to `len` readable, aligned values that outlive `'a`.
pub(crate) unsafe fn c_slice<'a, T>(ptr: *const T, len: usize, what: &str) -> Result<&'a [T], cellshm_status> {
    if len == 0 {
        return Ok(&[]);
    }
    if ptr.is_null() {
        return Err(invalid(format!("{what} is NULL but its length is {len}")));
    }
    // SAFETY: non-NULL, and the caller guarantees `len` readable values.
    Ok(unsafe { std::slice::from_raw_parts(ptr, len) })
}

/// A borrowed byte buffer argument: [`c_slice`] of bytes.
///
/// # Safety
/// As for [`c_slice`].
pub(crate) unsafe fn c_bytes<'a>(ptr: *const u8, len: usize, what: &str) -> Result<&'a [u8], cellshm_status> {
    // SAFETY: as the contract above says.
    unsafe { c_slice(ptr, len, what) }
}

/// The arguments after argv[0] of an `argc`/`argv` pair (NULL allowed with argc 0).
///
/// # Safety
/// `argv` has `argc` NUL-terminated strings that outlive `'a`, or is NULL with argc 0.
pub(crate) unsafe fn c_args<'a>(argc: c_int, argv: *const *const c_char) -> Result<Vec<&'a str>, cellshm_status> {
    if argc < 0 || (argc > 0 && argv.is_null()) {
        return Err(invalid(format!("argc is {argc} but argv is {argv:?}")));
    }
    // SAFETY: `argv` has `argc` entries, by the contract above.
    let entries = unsafe { c_slice(argv, argc as usize, "argv") }?;
    // SAFETY: each entry is a NUL-terminated string, by the contract above.
    entries.iter().skip(1).map(|&arg| unsafe { c_str(arg, "argv entry") }).collect()
}

/// The "Service.method" name and request buffer every call-like export takes.
///
/// # Safety
/// As for [`c_str`] on `method` and [`c_bytes`] on `request`/`request_len`.
pub(crate) unsafe fn method_and_request<'a>(
    method: *const c_char,
    request: *const u8,
    request_len: usize,
) -> Result<(&'a str, &'a [u8]), cellshm_status> {
    // SAFETY: `method` is as c_str needs, by the contract above.
    let method = unsafe { c_str(method, "method") }?;
    // SAFETY: `request` and `request_len` are as c_bytes needs, by the contract above.
    let request = unsafe { c_bytes(request, request_len, "request") }?;
    Ok((method, request))
}

/// A NULL-terminated array of strings (NULL itself means none).
///
/// # Safety
/// `list` is NULL or a NULL-terminated array of valid C strings.
pub(crate) unsafe fn c_str_list<'a>(list: *const *const c_char, what: &str) -> Result<Vec<&'a str>, cellshm_status> {
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

pub mod call;
pub mod callbacks;
pub mod cell;
pub mod hub;
pub mod identity;
pub mod info;
pub(crate) mod link_end;
pub mod log;
pub mod metrics;
pub mod options;
pub(crate) mod ownership;
pub mod peer;
pub mod remote;
pub mod response;
pub mod stream;
pub mod supervisor;
pub mod topic;

pub use call::*;
pub use callbacks::*;
pub use cell::*;
pub use hub::*;
pub use identity::*;
pub use info::*;
use link_end::CRequest;
pub use log::*;
pub use metrics::*;
pub use options::*;
pub(crate) use ownership::{free_with, Handle, Out, OwnedHandle};
pub use peer::*;
pub use remote::*;
pub use response::*;
pub use stream::*;
pub use supervisor::*;
pub use topic::*;
