//! Unary calls in flight: started without waiting, waited for with a limit of the
//! caller's choosing, cancelled from any thread.

use std::sync::{Condvar, Mutex};

use cellshm::PendingCall;

use crate::*;

/// A unary call in flight (cellshm_peer_call_start, cellshm_cell_call_start). Owned by
/// the caller; cellshm_call_free releases it, cancelling the call if it is still out.
/// Thread-safe: cellshm_call_cancel and cellshm_call_is_done may be called from any
/// thread while another waits in cellshm_call_wait.
#[derive(Debug)]
pub struct cellshm_call {
    pending: PendingCall,
    progress: Arc<Progress>,
}

/// Where the call is; the completion and cancel signal `changed`.
#[derive(Debug, Default)]
struct Progress {
    state: Mutex<CallState>,
    changed: Condvar,
}

#[derive(Debug, Default)]
struct CallState {
    /// The answer (or the call's own failure) is in.
    answered: bool,
    /// Cancelled by the caller before it was answered: no answer will come.
    cancelled: bool,
    /// The response was handed out.
    taken: bool,
}

impl Progress {
    fn lock(&self) -> std::sync::MutexGuard<'_, CallState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Starts `method` on `start`'s link and hands the call to C.
pub(crate) fn start_call(
    start: impl FnOnce(cellshm::Completion) -> cellshm::Result<PendingCall>,
    out_call: Out<'_, *mut cellshm_call>,
) -> cellshm_status {
    let progress = Arc::new(Progress::default());
    let signal = progress.clone();
    let on_complete: cellshm::Completion = Box::new(move || {
        signal.lock().answered = true;
        signal.changed.notify_all();
    });
    let pending = try_cellshm!(start(on_complete));
    out_call.hand_over(cellshm_call { pending, progress })
}

/// Starts a call of the cell's method "Service.method" and returns at once: wait for its
/// answer with cellshm_call_wait, or give up on it with cellshm_call_cancel. `options` as
/// for cellshm_peer_call (its deadline goes on running while nobody waits). On success
/// `*out_call` is owned by the caller.
///
/// # Safety
/// `peer` is live; `method` NUL-terminated; `request` has `request_len` readable bytes;
/// `options` NULL or a sized cellshm_call_options; `out_call` writable.
#[no_mangle]
pub unsafe extern "C" fn cellshm_peer_call_start(
    peer: *const cellshm_peer,
    method: *const c_char,
    request: *const u8,
    request_len: usize,
    options: *const cellshm_call_options,
    out_call: *mut *mut cellshm_call,
) -> cellshm_status {
    boundary("cellshm_peer_call_start", || {
        // SAFETY: cellshm_peer_call_start's contract, which C keeps: a live `peer`, the call's arguments as
        // CRequest::from_c needs them, a writable `out_call`.
        let (arg0, arg1, arg2) = unsafe {
            (
                Out::new(out_call, "out_call"),
                Handle::borrow(peer),
                CRequest::from_c(method, request, request_len, options),
            )
        };
        let (out_call, peer, request) = (try_c!(arg0), try_c!(arg1), try_c!(arg2));
        link_end::call_start(&peer.peer, request, out_call)
    })
}

/// Starts a call of a host method; as cellshm_peer_call_start.
///
/// # Safety
/// As for cellshm_peer_call_start, with a live `cell`.
#[no_mangle]
pub unsafe extern "C" fn cellshm_cell_call_start(
    cell: *const cellshm_cell,
    method: *const c_char,
    request: *const u8,
    request_len: usize,
    options: *const cellshm_call_options,
    out_call: *mut *mut cellshm_call,
) -> cellshm_status {
    boundary("cellshm_cell_call_start", || {
        // SAFETY: cellshm_cell_call_start's contract, which C keeps: a live `cell`, the call's arguments as
        // CRequest::from_c needs them, a writable `out_call`.
        let (arg0, arg1, arg2) = unsafe {
            (
                Out::new(out_call, "out_call"),
                Handle::borrow(cell),
                CRequest::from_c(method, request, request_len, options),
            )
        };
        let (out_call, cell, request) = (try_c!(arg0), try_c!(arg1), try_c!(arg2));
        link_end::call_start(&cell.cell, request, out_call)
    })
}

/// Waits up to `timeout_ms` (CELLSHM_TIMEOUT_FOREVER: no limit; 0: just looks) for the
/// call's answer. On CELLSHM_OK `*out_response` is the response, owned by the caller.
/// Otherwise the status is the call's end (the handler's error, CELLSHM_DEADLINE_EXCEEDED
/// once the call's own deadline passed, CELLSHM_CANCELLED after cellshm_call_cancel,
/// CELLSHM_PEER_DEAD, ...), with one exception: CELLSHM_DEADLINE_EXCEEDED while
/// cellshm_call_is_done still says 0 means `timeout_ms` passed first and the call goes on
/// (wait again, or cancel it). Once the response was taken, CELLSHM_FAILED_PRECONDITION.
///
/// # Safety
/// `call` is live; `out_response` writable.
#[no_mangle]
pub unsafe extern "C" fn cellshm_call_wait(
    call: *const cellshm_call,
    timeout_ms: u64,
    out_response: *mut *mut cellshm_response,
) -> cellshm_status {
    boundary("cellshm_call_wait", || {
        // SAFETY: cellshm_call_wait's contract, which C keeps: `call` is live; `out_response` writable.
        let (arg0, arg1) = unsafe { (Out::new(out_response, "out_response"), Handle::borrow(call)) };
        let (out_response, call) = (try_c!(arg0), try_c!(arg1));
        let until = (timeout_ms != CELLSHM_TIMEOUT_FOREVER)
            .then(|| std::time::Instant::now() + Duration::from_millis(timeout_ms));
        let mut state = call.progress.lock();
        loop {
            if state.taken {
                return fail(Error::new(Status::FailedPrecondition, "the call's response was taken already"));
            }
            if state.cancelled {
                return fail(Error::new(Status::Cancelled, "the call was cancelled"));
            }
            if state.answered {
                state.taken = true;
                drop(state);
                let result = call
                    .pending
                    .try_take()
                    .unwrap_or_else(|| Err(Error::new(Status::Internal, "the call completed without a result")));
                return deliver_response(result, out_response);
            }
            let left = match until {
                None => Duration::from_secs(3600),
                Some(until) => until.saturating_duration_since(std::time::Instant::now()),
            };
            if left.is_zero() {
                return fail(Error::new(
                    Status::DeadlineExceeded,
                    format!("no answer within {timeout_ms} ms; the call goes on"),
                ));
            }
            state = call.progress.changed.wait_timeout(state, left).unwrap_or_else(|p| p.into_inner()).0;
        }
    })
}

/// 1 once the call's answer is in or the call was cancelled (cellshm_call_wait then
/// returns at once), else 0 (also for NULL).
///
/// # Safety
/// `call` is NULL or live.
#[no_mangle]
pub unsafe extern "C" fn cellshm_call_is_done(call: *const cellshm_call) -> c_int {
    boundary_value(0, || {
        // SAFETY: cellshm_call_is_done's contract, which C keeps: `call` is NULL or live.
        unsafe { call.as_ref() }.map_or(0, |c| {
            let state = c.progress.lock();
            c_int::from(state.answered || state.cancelled)
        })
    })
}

/// Gives up on the call: the callee's handler sees it cancelled (cellshm_reply_cancelled),
/// a late answer is dropped, and cellshm_call_wait (also one waiting now, on another
/// thread) returns CELLSHM_CANCELLED. A call already answered is left as it is (its
/// response can still be taken). Idempotent.
///
/// # Safety
/// `call` is live.
#[no_mangle]
pub unsafe extern "C" fn cellshm_call_cancel(call: *const cellshm_call) -> cellshm_status {
    boundary("cellshm_call_cancel", || {
        // SAFETY: cellshm_call_cancel's contract, which C keeps: `call` is live.
        let call = try_c!(unsafe { Handle::borrow(call) });
        let mut state = call.progress.lock();
        if !state.answered && call.pending.cancel() {
            state.cancelled = true;
            call.progress.changed.notify_all();
        }
        CELLSHM_OK
    })
}

/// Releases a call, cancelling it if it is still out. NULL is a no-op.
///
/// # Safety
/// `call` is NULL or a call not yet freed, used by no other thread; it must not be used
/// afterwards.
#[no_mangle]
pub unsafe extern "C" fn cellshm_call_free(call: *mut cellshm_call) {
    // SAFETY: cellshm_call_free's contract, which C keeps: `call` is NULL or a call not yet freed, used by no other thread; it must not be used afterwards.
    // Dropping a pending call that is still out cancels it.
    unsafe { free_with(call, drop) }
}
