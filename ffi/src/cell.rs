//! The cell side: join, serve, call the host.

use crate::*;

/// A cell: joins the hub its host named, serves methods, calls the host. Register
/// methods before cellshm_cell_serve / cellshm_cell_run; cellshm_cell_call,
/// cellshm_cell_notify and cellshm_cell_log may then be used from any thread.
#[derive(Debug)]
pub struct cellshm_cell {
    pub(crate) cell: Cell,
    /// The userdata of its handlers, released when it is freed.
    pub(crate) registrations: Registrations,
}

/// Joins the hub whose host spawned this process: finds the bootstrap socket through the
/// CELLSHM_DOORBELL_FD environment variable (or a `--doorbell-fd=N` entry of `argv`, if
/// the host was asked to append one; every other entry is left alone), makes the process
/// non-dumpable, asks for the link on it and receives the join record, the link's memfds
/// and the doorbell on a socket pair of its own, checks and maps them, and says HELLO.
/// `argv` has argc entries, `argv[0]` being the program; it may be NULL with argc 0. On
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
        // SAFETY: cellshm_cell_new's contract, which C keeps: `argv` has `argc` NUL-terminated strings (or is NULL with argc 0); `out_cell` writable.
        let (out_cell, args) = unsafe { (Out::new(out_cell, "out_cell"), c_args(argc, argv)) };
        let (out_cell, args) = (try_c!(out_cell), try_c!(args));
        let args = args.into_iter().map(std::ffi::OsString::from);
        let join = try_cellshm!(JoinArgs::parse(args));
        let options = try_cellshm!(CellOptions::from_env());
        let cell = try_cellshm!(Cell::join(join, options));
        out_cell.hand_over(cellshm_cell { cell, registrations: Registrations::default() })
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
        // SAFETY: cellshm_cell_attach's contract, which C keeps: `hub` and `name` NUL-terminated; `out_cell` writable.
        let (arg0, arg1, arg2) = unsafe { (Out::new(out_cell, "out_cell"), c_str(hub, "hub"), c_str(name, "name")) };
        let (out_cell, hub, name) = (try_c!(arg0), try_c!(arg1), try_c!(arg2));
        let options = try_cellshm!(CellOptions::from_env());
        let cell = try_cellshm!(Cell::attach(hub, name, options));
        out_cell.hand_over(cellshm_cell { cell, registrations: Registrations::default() })
    })
}

/// Serves "Service.method" with `handler`. `free_userdata` (may be NULL) is called
/// exactly once: when the cell is freed, or before this returns if it fails.
///
/// # Safety
/// `cell` is live; `name` NUL-terminated; `handler` a valid function.
#[no_mangle]
pub unsafe extern "C" fn cellshm_cell_register(
    cell: *const cellshm_cell,
    name: *const c_char,
    handler: cellshm_handler_fn,
    userdata: *mut c_void,
    free_userdata: cellshm_free_fn,
) -> cellshm_status {
    let userdata = Registration::new(userdata, free_userdata);
    boundary("cellshm_cell_register", move || {
        // SAFETY: C passes a live cell and a NUL-terminated name, as cellshm_cell_register's
        // documentation requires.
        let (cell, name) = unsafe { (Handle::borrow(cell), c_str(name, "name")) };
        let (cell, name) = (try_c!(cell), try_c!(name));
        link_end::register(&cell.cell, &cell.registrations, name, handler, userdata)
    })
}

/// Keeps `set` (`set_len` bytes: a serialized `google.protobuf.FileDescriptorSet`, such
/// as the `<FILE>_FILE_DESCRIPTOR_SET` array of a header from `cellshm-codegen --lang c`)
/// as the description of the services this cell serves: its host's gRPC gateway answers
/// reflection from it (`grpcurl describe`). The bytes are copied; a set given twice is
/// kept once. CELLSHM_RESOURCE_EXHAUSTED past 4 MiB in all.
///
/// # Safety
/// `cell` is live; `set` points to `set_len` readable bytes.
#[no_mangle]
pub unsafe extern "C" fn cellshm_cell_describe(
    cell: *const cellshm_cell,
    set: *const u8,
    set_len: usize,
) -> cellshm_status {
    boundary("cellshm_cell_describe", || {
        // SAFETY: cellshm_cell_describe's contract, which C keeps: `cell` is live, `set`
        // has `set_len` readable bytes.
        let (cell, set) = unsafe { (Handle::borrow(cell), c_bytes(set, set_len, "set")) };
        let (cell, set) = (try_c!(cell), try_c!(set));
        try_cellshm!(cellshm::Registry::describe(&cell.cell, set));
        CELLSHM_OK
    })
}

/// Starts serving and announces readiness to the host; returns once the host accepted.
///
/// # Safety
/// `cell` is live.
#[no_mangle]
pub unsafe extern "C" fn cellshm_cell_serve(cell: *const cellshm_cell) -> cellshm_status {
    boundary("cellshm_cell_serve", || {
        // SAFETY: cellshm_cell_serve's contract, which C keeps: `cell` is live.
        let cell = try_c!(unsafe { Handle::borrow(cell) });
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
pub unsafe extern "C" fn cellshm_cell_run(cell: *const cellshm_cell) -> cellshm_status {
    boundary("cellshm_cell_run", || {
        // SAFETY: cellshm_cell_run's contract, which C keeps: `cell` is live.
        let cell = try_c!(unsafe { Handle::borrow(cell) });
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
        // SAFETY: cellshm_cell_call's contract, which C keeps: a live `cell`, the call's arguments as
        // CRequest::from_c needs them, a writable `out_response`.
        let (arg0, arg1, arg2) = unsafe {
            (
                Out::new(out_response, "out_response"),
                Handle::borrow(cell),
                CRequest::from_c(method, request, request_len, options),
            )
        };
        let (out_response, cell, request) = (try_c!(arg0), try_c!(arg1), try_c!(arg2));
        link_end::call(&cell.cell, request, out_response)
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
        // SAFETY: C passes a live cell and the call's arguments as cellshm_cell_notify's documentation
        // requires (the same as CRequest::from_c's).
        let (cell, request) =
            unsafe { (Handle::borrow(cell), CRequest::from_c(method, request, request_len, std::ptr::null())) };
        let (cell, request) = (try_c!(cell), try_c!(request));
        link_end::notify(&cell.cell, request)
    })
}

/// This cell's peer id (0 for NULL).
///
/// # Safety
/// `cell` is NULL or live.
#[no_mangle]
pub unsafe extern "C" fn cellshm_cell_peer_id(cell: *const cellshm_cell) -> u32 {
    // SAFETY: cellshm_cell_peer_id's contract, which C keeps: `cell` is NULL or live.
    boundary_value(0, || unsafe { cell.as_ref() }.map_or(0, |c| c.cell.peer_id()))
}

/// Leaves the hub: tells the host goodbye and frees the cell. Registered userdata is
/// released. NULL is a no-op.
///
/// # Safety
/// `cell` is NULL or a cell not yet freed, not in use by another thread.
#[no_mangle]
pub unsafe extern "C" fn cellshm_cell_free(cell: *mut cellshm_cell) {
    // SAFETY: cellshm_cell_free's contract, which C keeps: `cell` is NULL or a cell not yet freed, not in use by another thread.
    unsafe {
        free_with(cell, |cell| {
            let cellshm_cell { cell, registrations } = *cell;
            // Closing the link joins the threads that run handlers.
            drop(cell);
            registrations.end_all();
        })
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
