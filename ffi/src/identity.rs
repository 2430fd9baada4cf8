//! Who calls: the caller a host handler serves, allow lists per host method, an access
//! policy, and the count of refusals.

use crate::*;

/// `cellshm_caller.uid` when the caller's user id is not known.
pub const CELLSHM_UID_UNKNOWN: u32 = u32::MAX;

/// The cell calling a host handler, as the host knows it (from the kernel and its own
/// records, never from what the cell says).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct cellshm_caller {
    /// Its peer id (its slot in the hub).
    pub peer_id: u32,
    /// The slot's launch count (tells this instance from earlier ones of the slot).
    pub epoch: u32,
    /// Its process id; 0 if not known.
    pub pid: u32,
    /// Its real user id; CELLSHM_UID_UNKNOWN if not known.
    pub uid: u32,
    /// The name the host gave it (cellshm_hub_spawn, the supervisor's name, the attach
    /// name). Valid while the handler (or the policy callback) runs.
    pub name: *const c_char,
    /// True if it attached under a name it chose (the host did not spawn it): name
    /// allow-lists never admit it (see cellshm_hub_allow_attached).
    pub attached: bool,
    /// True for a client of the hub's gRPC gateway (an access policy's caller), named by
    /// its TLS client certificate's subject or its token; peer_id, epoch and pid are 0.
    pub remote: bool,
}

/// `identity` for C, its name kept alive in `name`.
pub(crate) fn c_caller(identity: &cellshm::PeerIdentity, name: &mut Option<CString>) -> cellshm_caller {
    let kept = name.insert(c_string(&identity.name));
    cellshm_caller {
        peer_id: identity.peer_id,
        epoch: identity.epoch,
        pid: identity.pid.unwrap_or(0),
        uid: identity.uid.unwrap_or(CELLSHM_UID_UNKNOWN),
        name: kept.as_ptr(),
        attached: identity.attached,
        remote: identity.remote,
    }
}

fn unknown_caller() -> cellshm_status {
    fail(Error::new(Status::NotFound, "no caller is known here: a cell's handlers are called by its host"))
}

/// Writes the caller of the running host handler to `*out_caller` (its `name` valid
/// until the handler returns). CELLSHM_NOT_FOUND in a cell's handler (its caller is
/// its host).
///
/// # Safety
/// `reply` is the running handler's reply; `out_caller` writable.
#[no_mangle]
pub unsafe extern "C" fn cellshm_reply_caller(
    reply: *mut cellshm_reply,
    out_caller: *mut cellshm_caller,
) -> cellshm_status {
    boundary("cellshm_reply_caller", || {
        // SAFETY: cellshm_reply_caller's contract, which C keeps: `reply` is the running handler's reply; `out_caller` writable.
        let (arg0, arg1) = unsafe { (Out::new(out_caller, "out_caller"), reply_state(reply)) };
        let (out_caller, state) = (try_c!(arg0), try_c!(arg1));
        let Some(identity) = state.call.caller() else { return unknown_caller() };
        let caller = c_caller(&identity, &mut state.caller_name);
        out_caller.write(caller)
    })
}

/// Writes who opened the stream the running host stream handler serves to `*out_caller`
/// (its `name` valid until the handler returns). CELLSHM_NOT_FOUND in a cell.
///
/// # Safety
/// `call` is the running stream handler's call; `out_caller` writable.
#[no_mangle]
pub unsafe extern "C" fn cellshm_stream_call_caller(
    call: *mut cellshm_stream_call,
    out_caller: *mut cellshm_caller,
) -> cellshm_status {
    boundary("cellshm_stream_call_caller", || {
        // SAFETY: cellshm_stream_call_caller's contract, which C keeps: `call` is the running stream handler's call; `out_caller` writable.
        let (arg0, arg1) = unsafe { (Out::new(out_caller, "out_caller"), stream_call_state(call)) };
        let (out_caller, state) = (try_c!(arg0), try_c!(arg1));
        let Some(identity) = state.call.caller() else { return unknown_caller() };
        let caller = c_caller(&identity, &mut state.caller_name);
        out_caller.write(caller)
    })
}

/// Only the cells named in `cells` (a NULL-terminated list; empty or NULL admits none)
/// may call the host method `method` (unary or stream); any other gets
/// CELLSHM_PERMISSION_DENIED, counted in cellshm_peer_refused_calls, and the handler
/// never runs. The rule is the method's by name, registered yet or not: a gRPC gateway
/// (cellshm-grpc) checks it too for remote callers of a cell's method, admitting those
/// whose certificate subject or token names one of `cells`.
///
/// # Safety
/// `hub` is live; `method` NUL-terminated; `cells` NULL or a NULL-terminated list.
#[no_mangle]
pub unsafe extern "C" fn cellshm_hub_allow(
    hub: *const cellshm_hub,
    method: *const c_char,
    cells: *const *const c_char,
) -> cellshm_status {
    boundary("cellshm_hub_allow", || {
        // SAFETY: cellshm_hub_allow's contract, which C keeps: `hub` is live; `method` NUL-terminated; `cells` NULL or a NULL-terminated list.
        let (arg0, arg1, arg2) = unsafe { (Handle::borrow(hub), c_str(method, "method"), c_str_list(cells, "cells")) };
        let (hub, method, cells) = (try_c!(arg0), try_c!(arg1), try_c!(arg2));
        try_cellshm!(hub.hub.allow(method, &cells));
        CELLSHM_OK
    })
}

/// Lifts cellshm_hub_allow's restriction of `method`.
///
/// # Safety
/// `hub` is live; `method` NUL-terminated.
#[no_mangle]
pub unsafe extern "C" fn cellshm_hub_allow_everyone(hub: *const cellshm_hub, method: *const c_char) -> cellshm_status {
    boundary("cellshm_hub_allow_everyone", || {
        // SAFETY: cellshm_hub_allow_everyone's contract, which C keeps: `hub` is live; `method` NUL-terminated.
        let (arg0, arg1) = unsafe { (Handle::borrow(hub), c_str(method, "method")) };
        let (hub, method) = (try_c!(arg0), try_c!(arg1));
        try_cellshm!(hub.hub.allow_everyone(method));
        CELLSHM_OK
    })
}

/// Decides whether `caller` may call the host method `method`: true admits it. Runs on
/// the serving thread before every call and stream: keep it short. `caller` and `method`
/// are valid during the call.
pub type cellshm_access_policy_fn =
    Option<unsafe extern "C" fn(userdata: *mut c_void, caller: *const cellshm_caller, method: *const c_char) -> bool>;

/// Asks `policy` before every call and stream of every host method (after the method's
/// allow list, if any); false refuses it as cellshm_hub_allow does. A NULL `policy`
/// removes the one set. `free_userdata` (may be NULL) is called once the policy is
/// replaced, removed or the hub freed (or at once if this fails).
///
/// # Safety
/// `hub` is live; `policy` NULL or a valid function.
#[no_mangle]
pub unsafe extern "C" fn cellshm_hub_set_access_policy(
    hub: *const cellshm_hub,
    policy: cellshm_access_policy_fn,
    userdata: *mut c_void,
    free_userdata: cellshm_free_fn,
) -> cellshm_status {
    let userdata = Registration::new(userdata, free_userdata);
    boundary("cellshm_hub_set_access_policy", move || {
        // SAFETY: cellshm_hub_set_access_policy's contract, which C keeps: `hub` is live; `policy` NULL or a valid function.
        // (A NULL policy removes the one set.)
        let (hub, policy) = unsafe { (Handle::borrow(hub), Trusted::new(policy, "policy").ok()) };
        let hub: &cellshm_hub = try_c!(hub);
        let Some(policy) = policy else {
            hub.hub.set_access_policy(None);
            hub.access_policy.replace(None);
            return CELLSHM_OK;
        };
        let current = userdata.clone();
        hub.hub.set_access_policy(Some(Arc::new(move |who: &cellshm::PeerIdentity, method: &str| {
            // A policy being replaced refuses what it is asked meanwhile.
            let Some(running) = userdata.enter() else { return false };
            let mut name = None;
            let caller = c_caller(who, &mut name);
            let Ok(method) = CString::new(method) else { return false };
            // A panic (none is expected) refuses.
            catch_unwind(AssertUnwindSafe(|| policy.call(running.userdata(), &caller, &method))).unwrap_or(false)
        })));
        hub.access_policy.replace(Some(current));
        CELLSHM_OK
    })
}

/// Calls and streams of `peer` refused by an access rule so far (counted by the host).
/// 0 for NULL.
///
/// # Safety
/// `peer` is NULL or live.
#[no_mangle]
pub unsafe extern "C" fn cellshm_peer_refused_calls(peer: *const cellshm_peer) -> u64 {
    // SAFETY: cellshm_peer_refused_calls's contract, which C keeps: `peer` is NULL or live.
    boundary_value(0, || unsafe { peer.as_ref() }.map_or(0, |p| p.peer.refused_calls()))
}

/// Lets the processes of the `count` uids at `uids` that attached (see
/// cellshm_hub_enable_attach) reach the hub's ready cells through the host with the
/// `cellshm.Relay.*` methods (docs/PROTOCOL.md §12): what a gRPC gateway in a process of
/// its own needs. The host checks its access rules for the remote callers the relay
/// names; spawned cells are never admitted.
///
/// # Safety
/// `hub` is live; `uids` points to `count` readable uids (or is NULL with `count` 0).
#[no_mangle]
pub unsafe extern "C" fn cellshm_hub_enable_relay(
    hub: *const cellshm_hub,
    uids: *const u32,
    count: usize,
) -> cellshm_status {
    boundary("cellshm_hub_enable_relay", || {
        // SAFETY: cellshm_hub_enable_relay's contract, which C keeps: `hub` is live; `uids` points to `count` readable uids (or is NULL with `count` 0).
        let (arg0, arg1) = unsafe { (Handle::borrow(hub), uid_list(uids, count)) };
        let (hub, uids) = (try_c!(arg0), try_c!(arg1));
        try_cellshm!(hub.hub.enable_relay(uids));
        CELLSHM_OK
    })
}

/// Lets processes of the `count` uids at `uids` inspect the hub (`cellshm inspect`,
/// `cellshm top`): off by default, even for the host's own uid, since inspecting hands
/// out read-only views of every link's memory and a cell of that uid could start a
/// process nothing ties to it. Best given to an operator's uid that no cell runs as.
/// `count` 0 (`uids` may then be NULL) turns it off again.
///
/// # Safety
/// `hub` is live; `uids` points to `count` readable uids (or is NULL with `count` 0).
#[no_mangle]
pub unsafe extern "C" fn cellshm_hub_enable_inspect(
    hub: *const cellshm_hub,
    uids: *const u32,
    count: usize,
) -> cellshm_status {
    boundary("cellshm_hub_enable_inspect", || {
        // SAFETY: cellshm_hub_enable_inspect's contract, which C keeps: `hub` is live; `uids` points to `count` readable uids (or is NULL with `count` 0).
        let (arg0, arg1) = unsafe { (Handle::borrow(hub), uid_list(uids, count)) };
        let (hub, uids) = (try_c!(arg0), try_c!(arg1));
        hub.hub.enable_inspect(uids);
        CELLSHM_OK
    })
}

/// Lets processes that attached (cellshm_caller.attached) call the host method `method`
/// if they run as one of the `count` uids at `uids`, beside the cells cellshm_hub_allow
/// names: an attached process chose its name, so name lists never admit it.
///
/// # Safety
/// `hub` is live; `method` NUL-terminated; `uids` points to `count` readable uids (or is
/// NULL with `count` 0).
#[no_mangle]
pub unsafe extern "C" fn cellshm_hub_allow_attached(
    hub: *const cellshm_hub,
    method: *const c_char,
    uids: *const u32,
    count: usize,
) -> cellshm_status {
    boundary("cellshm_hub_allow_attached", || {
        // SAFETY: cellshm_hub_allow_attached's contract, which C keeps: `hub` is live; `method` NUL-terminated; `uids` points to `count` readable uids (or is NULL with `count` 0).
        let (arg0, arg1, arg2) = unsafe { (Handle::borrow(hub), c_str(method, "method"), uid_list(uids, count)) };
        let (hub, method, uids) = (try_c!(arg0), try_c!(arg1), try_c!(arg2));
        try_cellshm!(hub.hub.allow_attached(method, uids));
        CELLSHM_OK
    })
}

/// `count` uids at `uids` (NULL allowed with 0).
///
/// # Safety
/// `uids` points to `count` readable uids, or is NULL.
unsafe fn uid_list<'a>(uids: *const u32, count: usize) -> Result<&'a [u32], cellshm_status> {
    // SAFETY: as the contract above says.
    unsafe { c_slice(uids, count, "uids") }
}
