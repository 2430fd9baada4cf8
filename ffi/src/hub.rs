//! The host's hub: create, serve methods, add peers, attach.

use crate::*;

/// The host's hub: one shared-memory file and the links to its cells. Thread-safe:
/// every function but cellshm_hub_free may be called from any thread at any time.
#[derive(Debug)]
pub struct cellshm_hub {
    pub(crate) hub: Hub,
    pub(crate) name: CString,
    pub(crate) attach: std::sync::Mutex<Option<cellshm::host::attach::AttachListener>>,
    /// Its log sink's registration for the library's notices.
    pub(crate) log_sink: std::sync::Mutex<RegisteredSink>,
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
        unsafe {
            put(
                out_hub,
                Box::into_raw(Box::new(cellshm_hub {
                    hub,
                    name,
                    attach: std::sync::Mutex::new(None),
                    log_sink: std::sync::Mutex::new(RegisteredSink::NONE),
                })),
            )
        }
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
