//! Peers of a hub: spawn, call, watch, stop.

use crate::*;
use cellshm::LinkEnd;

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
    pub(crate) peer: Peer,
    /// None for a cell that attached (the host did not spawn it).
    pub(crate) process: Option<CellProcess>,
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
        // SAFETY: cellshm_peer_wait_ready's contract, which C keeps: `peer` is a live peer.
        let peer = try_c!(unsafe { Handle::borrow(peer) });
        try_cellshm!(peer.peer.wait_ready(Duration::from_millis(timeout_ms)));
        CELLSHM_OK
    })
}

/// Calls "Service.method" with `request_len` bytes at `request` and waits for the
/// response. `options` may be NULL (the defaults), else start from
/// cellshm_call_options_default(). On success `*out_response` is owned by the caller.
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
        // SAFETY: cellshm_peer_call's contract, which C keeps: a live `peer`, the call's arguments as
        // CRequest::from_c needs them, a writable `out_response`.
        let (arg0, arg1, arg2) = unsafe {
            (
                Out::new(out_response, "out_response"),
                Handle::borrow(peer),
                CRequest::from_c(method, request, request_len, options),
            )
        };
        let (out_response, peer, request) = (try_c!(arg0), try_c!(arg1), try_c!(arg2));
        link_end::call(&peer.peer, request, out_response)
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
        // SAFETY: C passes a live peer and the call's arguments as cellshm_peer_notify's documentation
        // requires (the same as CRequest::from_c's).
        let (peer, request) =
            unsafe { (Handle::borrow(peer), CRequest::from_c(method, request, request_len, std::ptr::null())) };
        let (peer, request) = (try_c!(peer), try_c!(request));
        link_end::notify(&peer.peer, request)
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
        // SAFETY: cellshm_peer_get_state's contract, which C keeps: `peer` is live; `out_state` writable.
        let (arg0, arg1) = unsafe { (Out::new(out_state, "out_state"), Handle::borrow(peer)) };
        let (out_state, peer) = (try_c!(arg0), try_c!(arg1));
        let state = match peer.peer.state() {
            PeerState::Starting => cellshm_peer_state::CELLSHM_PEER_STATE_STARTING,
            PeerState::Joined => cellshm_peer_state::CELLSHM_PEER_STATE_JOINED,
            PeerState::Ready => cellshm_peer_state::CELLSHM_PEER_STATE_READY,
            PeerState::Leaving => cellshm_peer_state::CELLSHM_PEER_STATE_LEAVING,
            PeerState::Dead(_) => cellshm_peer_state::CELLSHM_PEER_STATE_DEAD,
        };
        out_state.write(state)
    })
}

/// The cell's process id (0 for NULL).
///
/// # Safety
/// `peer` is NULL or live.
#[no_mangle]
pub unsafe extern "C" fn cellshm_peer_pid(peer: *const cellshm_peer) -> u32 {
    // SAFETY: cellshm_peer_pid's contract, which C keeps: `peer` is NULL or live.
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
        // SAFETY: cellshm_peer_on_death's contract, which C keeps: `peer` is live; `callback` a valid function.
        let (peer, callback) = unsafe { (Handle::borrow(peer), Trusted::new(callback, "callback")) };
        let (peer, callback): (&cellshm_peer, _) = (try_c!(peer), try_c!(callback));
        peer.peer.on_death(move |error| {
            let message = CString::new(error.message().replace('\0', "\\0")).unwrap_or_default();
            let _ = catch_unwind(AssertUnwindSafe(|| callback.call(userdata.ptr, error.code(), &message)));
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
        // SAFETY: cellshm_peer_wait_exit's contract, which C keeps: `peer` is live; `out_exit_code` NULL or writable.
        let (peer, out_exit_code) = unsafe { (Handle::borrow(peer), Out::optional(out_exit_code, "out_exit_code")) };
        let peer: &cellshm_peer = try_c!(peer);
        let code = try_cellshm!(peer.process().and_then(|p| p.wait_exit(Duration::from_millis(timeout_ms))));
        out_exit_code.map_or(CELLSHM_OK, |out| out.write(code))
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
        // SAFETY: cellshm_peer_kill's contract, which C keeps: `peer` is live.
        let peer = try_c!(unsafe { Handle::borrow(peer) });
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
        // SAFETY: cellshm_peer_shutdown's contract, which C keeps: `peer` is live.
        let peer = try_c!(unsafe { Handle::borrow(peer) });
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
    // SAFETY: cellshm_peer_free's contract, which C keeps: `peer` is NULL or a peer not yet freed, not in use by another thread.
    // A process still running is reaped in the background once it exits.
    unsafe {
        free_with(peer, |handle| {
            if let Some(process) = handle.process {
                process.detach();
            }
        })
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
    hub: *const cellshm_hub,
    uids: *const u32,
    uid_count: usize,
) -> cellshm_status {
    boundary("cellshm_hub_enable_attach", || {
        // SAFETY: cellshm_hub_enable_attach's contract, which C keeps: `hub` is live; `uids` has `uid_count` readable entries (or is NULL with 0).
        let (hub, uids) = unsafe { (Handle::borrow(hub), c_slice(uids, uid_count, "uids")) };
        let (hub, uids): (&cellshm_hub, _) = (try_c!(hub), try_c!(uids));
        let mut policy = cellshm::host::attach::AttachPolicy::default();
        if !uids.is_empty() {
            policy.allowed_uids = uids.to_vec();
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
        // SAFETY: cellshm_hub_find_peer's contract, which C keeps: `hub` is live; `name` NUL-terminated; `out_peer` writable.
        let (arg0, arg1, arg2) = unsafe { (Out::new(out_peer, "out_peer"), Handle::borrow(hub), c_str(name, "name")) };
        let (out_peer, hub, name) = (try_c!(arg0), try_c!(arg1), try_c!(arg2));
        let Some(peer) = hub.hub.peers().into_iter().rev().find(|p| p.name() == name) else {
            return fail(Error::new(Status::NotFound, format!("no peer named {name:?}")));
        };
        out_peer.hand_over(cellshm_peer { peer, process: None })
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
        // SAFETY: cellshm_peer_set_log_filter's contract, which C keeps: `peer` is live; `filter` NUL-terminated.
        let (arg0, arg1) = unsafe { (Handle::borrow(peer), c_str(filter, "filter")) };
        let (peer, filter) = (try_c!(arg0), try_c!(arg1));
        try_cellshm!(peer.peer.set_log_filter(filter, Duration::from_millis(timeout_ms)));
        CELLSHM_OK
    })
}

/// The methods a cell serves (cellshm_peer_methods). Owned by the caller; free it with
/// cellshm_method_list_free.
#[derive(Debug)]
pub struct cellshm_method_list {
    pub(crate) methods: Vec<(CString, u32)>,
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
        // SAFETY: cellshm_peer_methods's contract, which C keeps: `peer` is live; `out_list` writable.
        let (arg0, arg1) = unsafe { (Out::new(out_list, "out_list"), Handle::borrow(peer)) };
        let (out_list, peer) = (try_c!(arg0), try_c!(arg1));
        let methods = try_cellshm!(peer.peer.served_methods(Duration::from_millis(timeout_ms)));
        let methods = methods.into_iter().map(|(n, id, _)| (c_string(&n), id)).collect();
        out_list.hand_over(cellshm_method_list { methods })
    })
}

/// Number of methods in the list (0 for NULL).
///
/// # Safety
/// `list` is NULL or live.
#[no_mangle]
pub unsafe extern "C" fn cellshm_method_list_len(list: *const cellshm_method_list) -> usize {
    // SAFETY: cellshm_method_list_len's contract, which C keeps: `list` is NULL or live.
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
        // SAFETY: cellshm_method_list_name's contract, which C keeps: `list` is NULL or live.
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
        // SAFETY: cellshm_method_list_id's contract, which C keeps: `list` is NULL or live.
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
    // SAFETY: cellshm_method_list_free's contract, which C keeps: `list` is NULL or not yet freed.
    unsafe { free_with(list, drop) }
}

/// The largest payload a call to `peer` (or its answer) can carry: the hub's largest slot
/// size (cellshm_hub_options.slot_classes). 0 for NULL.
///
/// # Safety
/// `peer` is NULL or live.
#[no_mangle]
pub unsafe extern "C" fn cellshm_peer_max_payload(peer: *const cellshm_peer) -> usize {
    // SAFETY: cellshm_peer_max_payload's contract, which C keeps: `peer` is NULL or live.
    boundary_value(0, || unsafe { peer.as_ref() }.map_or(0, |p| p.peer.max_payload()))
}
