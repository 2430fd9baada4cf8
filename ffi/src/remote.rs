//! Remote gRPC servers as peers of a hub (`cellshm_grpc::Remote`): each method of a gRPC
//! server elsewhere becomes a host method its cells call; forwarded on the runtime
//! `cellshm_grpc::shared_runtime` makes.

use cellshm_grpc::{Remote, RemoteOptions};

use crate::*;

/// A remote gRPC server added to a hub (cellshm_hub_add_remote). Freeing it leaves the
/// host methods it serves in place while the hub lives.
#[derive(Debug)]
pub struct cellshm_remote {
    pub(crate) remote: Remote,
}

/// Where a remote is added: a hub's host methods, or a supervisor's (which also watches
/// its health).
enum AddTo<'a> {
    Hub(&'a cellshm::Hub),
    Supervisor(&'a cellshm::Supervisor),
}

/// The body both exports share: reads C's arguments, connects, serves.
///
/// # Safety
/// `name` and `url` NUL-terminated; `methods` NULL or a NULL-terminated list; `kinds`
/// NULL or as many readable values as `methods` has entries; `out_remote` writable.
unsafe fn add_remote(
    to: AddTo<'_>,
    name: *const c_char,
    url: *const c_char,
    methods: *const *const c_char,
    kinds: *const u32,
    connect_timeout_ms: u64,
    out_remote: *mut *mut cellshm_remote,
) -> cellshm_status {
    // SAFETY: the caller's contract, which is the exports' (C keeps it).
    let (arg0, arg1, arg2, arg3) = unsafe {
        (c_str(name, "name"), c_str(url, "url"), c_str_list(methods, "methods"), Out::new(out_remote, "out_remote"))
    };
    let (name, url, methods, out_remote) = (try_c!(arg0), try_c!(arg1), try_c!(arg2), try_c!(arg3));
    // SAFETY: `kinds` is NULL or has one value per entry of `methods`, per the contract.
    let kinds = try_c!(unsafe { c_slice(kinds, if kinds.is_null() { 0 } else { methods.len() }, "kinds") });
    let timeout = if connect_timeout_ms == 0 {
        cellshm_grpc::DEFAULT_CONNECT_TIMEOUT
    } else {
        Duration::from_millis(connect_timeout_ms)
    };
    let mut options = RemoteOptions::new().connect_timeout(timeout);
    for (i, method) in methods.iter().enumerate() {
        let code = kinds.get(i).copied().unwrap_or(0);
        let kind = try_c!(cellshm::MethodKind::from_code(code)
            .ok_or_else(|| invalid(format!("kinds[{i}] is {code}, not a method kind (0 to 4)"))));
        options = options.method(*method, kind);
    }
    let runtime = try_cellshm!(cellshm_grpc::shared_runtime());
    let remote = try_cellshm!(runtime.block_on(Remote::connect(name, url, options)));
    try_cellshm!(match to {
        AddTo::Hub(hub) => remote.serve_on(hub),
        AddTo::Supervisor(supervisor) => remote.serve_supervised(supervisor),
    });
    out_remote.hand_over(cellshm_remote { remote })
}

/// Connects to the gRPC server at `url` ("http://host:port") and serves each of its
/// methods as a host method of `hub` named "pkg.Svc.Method", so cells call it on their
/// host as on any host method (a call's deadline becomes grpc-timeout, a cancel resets
/// the HTTP/2 stream, statuses come back with their codes and messages). `methods` (a
/// NULL-terminated list, or NULL) names the methods, `kinds` (NULL: all unary) how each
/// is called; NULL `methods` asks the server's gRPC reflection for every method.
/// `connect_timeout_ms` 0 is 5000. `name` names it in logs and errors. On success
/// `*out_remote` is owned by the caller (cellshm_remote_free). CELLSHM_UNAVAILABLE if it
/// cannot be reached, CELLSHM_UNIMPLEMENTED if it serves no reflection and `methods` is
/// NULL, CELLSHM_ALREADY_EXISTS if the hub serves one of the names already.
///
/// # Safety
/// `hub` is live; `name` and `url` NUL-terminated; `methods` NULL or a NULL-terminated
/// list; `kinds` NULL or as many readable values as `methods` has entries;
/// `out_remote` writable.
#[no_mangle]
pub unsafe extern "C" fn cellshm_hub_add_remote(
    hub: *const cellshm_hub,
    name: *const c_char,
    url: *const c_char,
    methods: *const *const c_char,
    kinds: *const u32,
    connect_timeout_ms: u64,
    out_remote: *mut *mut cellshm_remote,
) -> cellshm_status {
    boundary("cellshm_hub_add_remote", || {
        // SAFETY: cellshm_hub_add_remote's contract, which C keeps: `hub` live.
        let hub = try_c!(unsafe { Handle::borrow(hub) });
        // SAFETY: the rest of the contract is add_remote's.
        unsafe { add_remote(AddTo::Hub(&hub.hub), name, url, methods, kinds, connect_timeout_ms, out_remote) }
    })
}

/// cellshm_hub_add_remote on the supervisor's hub, and the remote in the supervisor's
/// health view: listed by cellshm_supervisor_names under `name`, CELLSHM_CELL_READY while
/// its gRPC health check (every second) passes and CELLSHM_CELL_UNAVAILABLE (with the
/// reason) while not, with an event on each change; the supervisor never launches or
/// stops it, and cellshm_supervisor_remove forgets it. CELLSHM_ALREADY_EXISTS also if the
/// supervisor has a cell named `name`.
///
/// # Safety
/// As cellshm_hub_add_remote, with `supervisor` live.
#[no_mangle]
pub unsafe extern "C" fn cellshm_supervisor_add_remote(
    supervisor: *const cellshm_supervisor,
    name: *const c_char,
    url: *const c_char,
    methods: *const *const c_char,
    kinds: *const u32,
    connect_timeout_ms: u64,
    out_remote: *mut *mut cellshm_remote,
) -> cellshm_status {
    boundary("cellshm_supervisor_add_remote", || {
        // SAFETY: cellshm_supervisor_add_remote's contract, which C keeps: `supervisor` live.
        let supervisor = try_c!(unsafe { Handle::borrow(supervisor) });
        let to = AddTo::Supervisor(&supervisor.sup);
        // SAFETY: the rest of the contract is add_remote's.
        unsafe { add_remote(to, name, url, methods, kinds, connect_timeout_ms, out_remote) }
    })
}

/// The calls forwarded to the remote so far (by cells) and how many of those failed;
/// either out-parameter may be NULL.
///
/// # Safety
/// `remote` is live; `out_calls` and `out_failed` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn cellshm_remote_counters(
    remote: *const cellshm_remote,
    out_calls: *mut u64,
    out_failed: *mut u64,
) -> cellshm_status {
    boundary("cellshm_remote_counters", || {
        // SAFETY: cellshm_remote_counters's contract, which C keeps: `remote` is live; the
        // out-parameters are NULL or writable.
        let (remote, calls, failed) = unsafe {
            (Handle::borrow(remote), Out::optional(out_calls, "out_calls"), Out::optional(out_failed, "out_failed"))
        };
        let (n, f) = try_c!(remote).remote.counters();
        if let Some(calls) = calls {
            calls.write(n);
        }
        if let Some(failed) = failed {
            failed.write(f);
        }
        CELLSHM_OK
    })
}

/// Frees the handle; the host methods the remote serves stay while the hub lives. NULL
/// is a no-op.
///
/// # Safety
/// `remote` is NULL or not yet freed, not in use by another thread.
#[no_mangle]
pub unsafe extern "C" fn cellshm_remote_free(remote: *mut cellshm_remote) {
    // SAFETY: cellshm_remote_free's contract, which C keeps.
    unsafe { free_with(remote, drop) }
}
