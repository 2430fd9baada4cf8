//! The supervisor: cells kept alive under stable names.

use crate::*;

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
/// Status of a supervised cell: removed (cellshm_supervisor_remove); its last event.
pub const CELLSHM_CELL_REMOVED: u32 = 6;
/// Status of a watched peer (a remote gRPC server, cellshm_supervisor_add_remote) that
/// does not serve now; the reason says why its last health check failed.
pub const CELLSHM_CELL_UNAVAILABLE: u32 = 7;

pub(crate) fn cell_status_parts(status: &cellshm::CellStatus) -> (u32, String) {
    use cellshm::CellStatus as S;
    match status {
        S::Starting => (CELLSHM_CELL_STARTING, String::new()),
        S::Ready => (CELLSHM_CELL_READY, String::new()),
        S::Stopping => (CELLSHM_CELL_STOPPING, String::new()),
        S::Exited(r) => (CELLSHM_CELL_EXITED, r.to_string()),
        S::Crashed(r) => (CELLSHM_CELL_CRASHED, r.to_string()),
        S::Failed(r) => (CELLSHM_CELL_FAILED, r.to_string()),
        S::Removed => (CELLSHM_CELL_REMOVED, String::new()),
        S::Unavailable(why) => (CELLSHM_CELL_UNAVAILABLE, why.clone()),
    }
}

/// How a supervised cell is kept alive: relaunches after a crash, readiness, heartbeats
/// and its default call timeout. Start from cellshm_restart_policy_default(): the struct
/// may grow, and its `size` says which fields the caller knows.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct cellshm_restart_policy {
    /// sizeof(cellshm_restart_policy) as the caller knows it; set by the default.
    pub size: usize,
    /// Relaunches allowed within `reset_after_ms`; one more crash and the cell is FAILED.
    pub max_restarts: u32,
    /// Delay before the first relaunch (doubled after each crash); at most max_backoff_ms.
    pub initial_backoff_ms: u64,
    /// Upper bound of the delay.
    pub max_backoff_ms: u64,
    /// A cell up this long has its restart count reset.
    pub reset_after_ms: u64,
    /// How long a cell may take to become ready (0 is refused).
    pub ready_timeout_ms: u64,
    /// A heartbeat as it becomes ready and then every this many ms, answered from the
    /// cell's handler threads; 0 (the default) = no heartbeats.
    pub heartbeat_interval_ms: u64,
    /// Heartbeats in a row that may go unanswered; one more and the cell is killed and
    /// relaunched as "unresponsive" (interval × (misses + 1) after the first unanswered
    /// one was sent). 0: the first unanswered heartbeat is enough.
    pub heartbeat_allowed_misses: u32,
    /// The time limit of calls to the cell whose options set none, in ms; 0 (the default)
    /// = the supervisor's (cellshm_supervisor_set_default_timeout); CELLSHM_TIMEOUT_FOREVER
    /// = no limit.
    pub default_timeout_ms: u64,
}

/// The default restart policy: 5 restarts per minute, backoff 50 ms doubling to 5 s,
/// 10 s to become ready, no heartbeats (2 misses allowed once an interval is set), the
/// supervisor's default timeout.
#[no_mangle]
pub extern "C" fn cellshm_restart_policy_default() -> cellshm_restart_policy {
    let d = cellshm::RestartPolicy::default();
    cellshm_restart_policy {
        size: std::mem::size_of::<cellshm_restart_policy>(),
        max_restarts: d.max_restarts,
        initial_backoff_ms: d.initial_backoff.as_millis() as u64,
        max_backoff_ms: d.max_backoff.as_millis() as u64,
        reset_after_ms: d.reset_after.as_millis() as u64,
        ready_timeout_ms: 10_000,
        heartbeat_interval_ms: 0,
        heartbeat_allowed_misses: 2,
        default_timeout_ms: 0,
    }
}

/// Called on every status change of a supervised cell, in order, from the supervisor's
/// event thread: `name` and `reason` (empty unless it ended) are valid during the call.
/// It may call any cellshm_supervisor_* function; those that wait for events (operations
/// do not wait for the one being delivered, but cellshm_supervisor_wait_status for a
/// later event does, and times out: that event is delivered by this thread, after the
/// listener returns).
pub type cellshm_cell_event_fn =
    Option<unsafe extern "C" fn(userdata: *mut c_void, name: *const c_char, status: u32, reason: *const c_char)>;

/// A listener registered with cellshm_supervisor_on_event. Freeing it unregisters the
/// listener: once cellshm_subscription_free returns, the callback is not called again
/// (when freed from inside the callback, that call finishes first).
#[derive(Debug)]
pub struct cellshm_subscription {
    // Held for its drop, which unregisters the listener.
    pub(crate) _listener: cellshm::EventSubscription,
}

/// Frees (unregisters) a subscription; its `free_userdata` runs once the callback can no
/// longer be called. NULL is a no-op. A subscription may outlive its supervisor.
///
/// # Safety
/// `subscription` is NULL or not yet freed.
#[no_mangle]
pub unsafe extern "C" fn cellshm_subscription_free(subscription: *mut cellshm_subscription) {
    // SAFETY: cellshm_subscription_free's contract, which C keeps: `subscription` is NULL or not yet freed.
    unsafe { free_with(subscription, drop) }
}

/// Keeps cells alive under stable names (relaunch with backoff, graceful stop). Owns its
/// hub. Thread-safe: every function but cellshm_supervisor_free may be called from any
/// thread.
#[derive(Debug)]
pub struct cellshm_supervisor {
    pub(crate) sup: cellshm::Supervisor,
    /// Its log sink's registration for the library's notices.
    pub(crate) log_sink: std::sync::Mutex<RegisteredSink>,
    /// How the host talks to each of its cells (cellshm_hub_options.peer_defaults).
    pub(crate) peer_defaults: PeerOptions,
}

impl cellshm_supervisor {
    /// `spec` talking to its cell as `peer_defaults` say, its policy's default timeout
    /// (if it set one) winning.
    fn with_peer_defaults(&self, mut spec: cellshm::CellSpec) -> cellshm::CellSpec {
        let default_timeout = spec.peer.default_timeout.or(self.peer_defaults.default_timeout);
        spec.peer = PeerOptions { default_timeout, ..self.peer_defaults.clone() };
        spec
    }
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
        // SAFETY: cellshm_supervisor_new's contract, which C keeps: `name` is NULL or NUL-terminated; `out_supervisor` writable.
        let (out_supervisor, name) = unsafe {
            (
                Out::new(out_supervisor, "out_supervisor"),
                if name.is_null() { Ok(None) } else { c_str(name, "name").map(Some) },
            )
        };
        let (out_supervisor, name) = (try_c!(out_supervisor), try_c!(name));
        let mut config = HubConfig { name: name.map(Into::into), ..HubConfig::default() };
        if max_peers != 0 {
            config.max_peers = max_peers;
        }
        let sup = try_cellshm!(Hub::create(config).and_then(cellshm::Supervisor::new));
        out_supervisor.hand_over(cellshm_supervisor {
            sup,
            log_sink: std::sync::Mutex::new(RegisteredSink::NONE),
            peer_defaults: PeerOptions::default(),
        })
    })
}

/// cellshm_supervisor_new with every hub option (`options` NULL for the defaults); its
/// `peer_defaults` apply to every cell the supervisor launches (the restart policy's
/// `default_timeout_ms` still wins for its cell).
///
/// # Safety
/// `name` NULL or NUL-terminated; `options` NULL or from cellshm_hub_options_default;
/// `out_supervisor` writable.
#[no_mangle]
pub unsafe extern "C" fn cellshm_supervisor_new_with(
    name: *const c_char,
    options: *const cellshm_hub_options,
    out_supervisor: *mut *mut cellshm_supervisor,
) -> cellshm_status {
    boundary("cellshm_supervisor_new_with", || {
        // SAFETY: cellshm_supervisor_new_with's contract, which C keeps: `name` NULL or NUL-terminated; `options` NULL or from cellshm_hub_options_default; `out_supervisor` writable.
        let (arg0, arg1) = unsafe { (Out::new(out_supervisor, "out_supervisor"), hub_config(name, options)) };
        let (out_supervisor, (config, peer_defaults)) = (try_c!(arg0), try_c!(arg1));
        try_cellshm!(peer_defaults.validate().map_err(|e| e.context("peer_defaults")));
        let sup = try_cellshm!(Hub::create(config).and_then(cellshm::Supervisor::new));
        let sup = cellshm_supervisor { sup, log_sink: std::sync::Mutex::new(RegisteredSink::NONE), peer_defaults };
        out_supervisor.hand_over(sup)
    })
}

/// Calls `callback` on every status change of every cell, each event once, in order, on
/// the supervisor's event thread (never on the thread whose operation caused it).
/// With `out_subscription` NULL the listener stays for the supervisor's life; otherwise
/// `*out_subscription` is owned by the caller and freeing it unregisters the listener.
/// `free_userdata` (may be NULL) is called exactly once, when the listener can no longer
/// be called (also when this function fails).
///
/// # Safety
/// `supervisor` is live; `callback` a valid function; `out_subscription` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn cellshm_supervisor_on_event(
    supervisor: *const cellshm_supervisor,
    callback: cellshm_cell_event_fn,
    userdata: *mut c_void,
    free_userdata: cellshm_free_fn,
    out_subscription: *mut *mut cellshm_subscription,
) -> cellshm_status {
    let userdata = Arc::new(Userdata { ptr: userdata, free: free_userdata });
    boundary("cellshm_supervisor_on_event", move || {
        // SAFETY: cellshm_supervisor_on_event's contract, which C keeps: `supervisor` is live; `callback` a valid function; `out_subscription` NULL or writable.
        let (sup, callback, out_subscription) = unsafe {
            (
                Handle::borrow(supervisor),
                Trusted::new(callback, "callback"),
                Out::optional(out_subscription, "out_subscription"),
            )
        };
        let (sup, callback): (&cellshm_supervisor, _) = (try_c!(sup), try_c!(callback));
        let subscription = sup.sup.on_event(move |event| {
            let (status, reason) = cell_status_parts(&event.status);
            let (name, reason) = (c_string(&event.name), c_string(&reason));
            let _ = catch_unwind(AssertUnwindSafe(|| callback.call(userdata.ptr, &name, status, &reason)));
        });
        match out_subscription {
            Some(out) => out.hand_over(cellshm_subscription { _listener: subscription }),
            None => {
                subscription.detach();
                CELLSHM_OK
            }
        }
    })
}

/// The recipe C passes to cellshm_supervisor_add and cellshm_supervisor_update.
///
/// # Safety
/// `name` and `program` NUL-terminated; `argv` and `envp` NULL or NULL-terminated lists
/// of NUL-terminated strings; `policy` NULL or a cellshm_restart_policy with its `size`
/// set.
unsafe fn c_cell_spec(
    name: *const c_char,
    program: *const c_char,
    argv: *const *const c_char,
    envp: *const *const c_char,
    policy: *const cellshm_restart_policy,
) -> Result<cellshm::CellSpec, cellshm_status> {
    // SAFETY: the strings and lists are as c_str and c_str_list need, by the contract
    // above.
    let (name, program, args, env) =
        unsafe { (c_str(name, "name"), c_str(program, "program"), c_str_list(argv, "argv"), c_str_list(envp, "envp")) };
    let (name, program, args, env) = (name?, program?, args?, env?);
    let mut spec = cellshm::CellSpec::new(name, program).args(args.iter().map(|a| a.to_string()));
    for entry in env {
        let Some((key, value)) = entry.split_once('=') else {
            return Err(invalid(format!("envp entry {entry:?} is not KEY=VALUE")));
        };
        spec = spec.env(key, value);
    }
    // SAFETY: `policy` is NULL or sized, by the contract above.
    let policy = unsafe { sized_options(policy, cellshm_restart_policy_default(), "cellshm_restart_policy") }?;
    spec.ready_timeout = Duration::from_millis(policy.ready_timeout_ms);
    spec.restart = cellshm::RestartPolicy {
        max_restarts: policy.max_restarts,
        initial_backoff: Duration::from_millis(policy.initial_backoff_ms),
        max_backoff: Duration::from_millis(policy.max_backoff_ms),
        reset_after: Duration::from_millis(policy.reset_after_ms),
    };
    if policy.heartbeat_interval_ms != 0 {
        spec = spec.heartbeat(Duration::from_millis(policy.heartbeat_interval_ms), policy.heartbeat_allowed_misses);
    }
    if policy.default_timeout_ms != 0 {
        spec = spec.default_timeout(c_timeout(policy.default_timeout_ms));
    }
    Ok(spec)
}

/// The time limit, in ms, of calls to the cells launched from now on whose options set
/// none, unless their policy's `default_timeout_ms` says otherwise (30 s until set;
/// CELLSHM_TIMEOUT_FOREVER = no limit; 0 restores 30 s).
///
/// # Safety
/// `supervisor` is live.
#[no_mangle]
pub unsafe extern "C" fn cellshm_supervisor_set_default_timeout(
    supervisor: *const cellshm_supervisor,
    timeout_ms: u64,
) -> cellshm_status {
    boundary("cellshm_supervisor_set_default_timeout", || {
        // SAFETY: cellshm_supervisor_set_default_timeout's contract, which C keeps: `supervisor` is live.
        let sup = try_c!(unsafe { Handle::borrow(supervisor) });
        let timeout = if timeout_ms == 0 { cellshm::DEFAULT_CALL_TIMEOUT } else { c_timeout(timeout_ms) };
        sup.sup.set_default_timeout(timeout);
        CELLSHM_OK
    })
}

/// Adds a cell named `name` running `program` with `argv` (NULL-terminated, may be NULL)
/// and extra `envp` entries ("KEY=VALUE", NULL-terminated, may be NULL), and starts it.
/// `policy` may be NULL for the default. CELLSHM_ALREADY_EXISTS if `name` is supervised
/// already (see cellshm_supervisor_start, _restart and _update).
///
/// # Safety
/// Strings NUL-terminated; lists NULL-terminated; `policy` NULL or a sized cellshm_restart_policy.
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
        // SAFETY: cellshm_supervisor_add's contract, which C keeps: Strings NUL-terminated; lists NULL-terminated; `policy` NULL or a sized cellshm_restart_policy.
        let (sup, spec) = unsafe { (Handle::borrow(supervisor), c_cell_spec(name, program, argv, envp, policy)) };
        let (sup, spec): (&cellshm_supervisor, _) = (try_c!(sup), try_c!(spec));
        let spec = sup.with_peer_defaults(spec);
        try_cellshm!(sup.sup.add(spec));
        CELLSHM_OK
    })
}

/// Replaces the recipe of the supervised cell `name` (arguments as for
/// cellshm_supervisor_add). A running instance is restarted with it (stopped as
/// cellshm_supervisor_stop does, `grace_ms` per step); a cell not running keeps its status
/// and uses the recipe when next started. CELLSHM_NOT_FOUND for an unknown name.
///
/// # Safety
/// As for cellshm_supervisor_add.
#[no_mangle]
pub unsafe extern "C" fn cellshm_supervisor_update(
    supervisor: *const cellshm_supervisor,
    name: *const c_char,
    program: *const c_char,
    argv: *const *const c_char,
    envp: *const *const c_char,
    policy: *const cellshm_restart_policy,
    grace_ms: u64,
) -> cellshm_status {
    boundary("cellshm_supervisor_update", || {
        // SAFETY: cellshm_supervisor_update's contract, which C keeps: As for cellshm_supervisor_add.
        let (sup, spec) = unsafe { (Handle::borrow(supervisor), c_cell_spec(name, program, argv, envp, policy)) };
        let (sup, spec): (&cellshm_supervisor, _) = (try_c!(sup), try_c!(spec));
        let spec = sup.with_peer_defaults(spec);
        try_cellshm!(sup.sup.update(spec, Duration::from_millis(grace_ms)));
        CELLSHM_OK
    })
}

/// Starts a cell that is not running (exited, stopped or failed) again, with a fresh
/// restart count; a cell running or about to relaunch is left alone.
///
/// # Safety
/// `supervisor` is live; `name` NUL-terminated.
#[no_mangle]
pub unsafe extern "C" fn cellshm_supervisor_start(
    supervisor: *const cellshm_supervisor,
    name: *const c_char,
) -> cellshm_status {
    boundary("cellshm_supervisor_start", || {
        // SAFETY: cellshm_supervisor_start's contract, which C keeps: `supervisor` is live; `name` NUL-terminated.
        let (arg0, arg1) = unsafe { (Handle::borrow(supervisor), c_str(name, "name")) };
        let (sup, name) = (try_c!(arg0), try_c!(arg1));
        try_cellshm!(sup.sup.start(name));
        CELLSHM_OK
    })
}

/// Stops the running instance of `name` (as cellshm_supervisor_stop, `grace_ms` per step)
/// and starts a new one with a fresh restart count; a cell not running is started.
/// Returns once the old instance has ended (wait for CELLSHM_CELL_READY for the new one).
///
/// # Safety
/// `supervisor` is live; `name` NUL-terminated.
#[no_mangle]
pub unsafe extern "C" fn cellshm_supervisor_restart(
    supervisor: *const cellshm_supervisor,
    name: *const c_char,
    grace_ms: u64,
) -> cellshm_status {
    boundary("cellshm_supervisor_restart", || {
        // SAFETY: cellshm_supervisor_restart's contract, which C keeps: `supervisor` is live; `name` NUL-terminated.
        let (arg0, arg1) = unsafe { (Handle::borrow(supervisor), c_str(name, "name")) };
        let (sup, name) = (try_c!(arg0), try_c!(arg1));
        try_cellshm!(sup.sup.restart(name, Duration::from_millis(grace_ms)));
        CELLSHM_OK
    })
}

/// Stops `name` (as cellshm_supervisor_stop) and forgets it; its last event is
/// CELLSHM_CELL_REMOVED. The name may be added again.
///
/// # Safety
/// `supervisor` is live; `name` NUL-terminated.
#[no_mangle]
pub unsafe extern "C" fn cellshm_supervisor_remove(
    supervisor: *const cellshm_supervisor,
    name: *const c_char,
    grace_ms: u64,
) -> cellshm_status {
    boundary("cellshm_supervisor_remove", || {
        // SAFETY: cellshm_supervisor_remove's contract, which C keeps: `supervisor` is live; `name` NUL-terminated.
        let (arg0, arg1) = unsafe { (Handle::borrow(supervisor), c_str(name, "name")) };
        let (sup, name) = (try_c!(arg0), try_c!(arg1));
        try_cellshm!(sup.sup.remove(name, Duration::from_millis(grace_ms)));
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
        // SAFETY: cellshm_supervisor_status's contract, which C keeps: `supervisor` is live; `name` NUL-terminated; `out_status` writable.
        let (arg0, arg1, arg2) =
            unsafe { (Out::new(out_status, "out_status"), Handle::borrow(supervisor), c_str(name, "name")) };
        let (out_status, sup, name) = (try_c!(arg0), try_c!(arg1), try_c!(arg2));
        match sup.sup.status(name) {
            Some(status) => out_status.write(cell_status_parts(&status).0),
            None => fail(Error::new(Status::NotFound, format!("no cell named {name:?}"))),
        }
    })
}

/// Waits up to `timeout_ms` for the cell to reach `status` (a CELLSHM_CELL_* value) and
/// the listeners to have seen it.
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
        // SAFETY: cellshm_supervisor_wait_status's contract, which C keeps: `supervisor` is live; `name` NUL-terminated.
        let (arg0, arg1) = unsafe { (Handle::borrow(supervisor), c_str(name, "name")) };
        let (sup, name) = (try_c!(arg0), try_c!(arg1));
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
        // SAFETY: cellshm_supervisor_pid's contract, which C keeps: `supervisor` is NULL or live; `name` NULL or NUL-terminated.
        let (sup, name) = unsafe { (supervisor.as_ref(), CStr::from_ptr(name)) };
        let (Some(sup), Ok(name)) = (sup, name.to_str()) else { return 0 };
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
        // SAFETY: cellshm_supervisor_call's contract, which C keeps: a live `supervisor`, a
        // NUL-terminated `cell`, the call's arguments as CRequest::from_c needs them, a
        // writable `out_response`.
        let (arg0, arg1, arg2, arg3) = unsafe {
            (
                Out::new(out_response, "out_response"),
                Handle::borrow(supervisor),
                c_str(cell, "cell"),
                CRequest::from_c(method, request, request_len, options),
            )
        };
        let (out_response, sup, cell, request) = (try_c!(arg0), try_c!(arg1), try_c!(arg2), try_c!(arg3));
        link_end::call(&cellshm::Supervised::new(&sup.sup, cell), request, out_response)
    })
}

/// Stops the cell: GOODBYE, then SIGTERM, then SIGKILL, each after `grace_ms`; it is not
/// relaunched until cellshm_supervisor_start or _restart. `*out_exit_code` (may be NULL)
/// gets its exit code (0 if it was not running).
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
        // SAFETY: cellshm_supervisor_stop's contract, which C keeps: `supervisor` is live; `name` NUL-terminated; `out_exit_code` NULL or writable.
        let (arg0, arg1, out_exit_code) =
            unsafe { (Handle::borrow(supervisor), c_str(name, "name"), Out::optional(out_exit_code, "out_exit_code")) };
        let (sup, name): (&cellshm_supervisor, _) = (try_c!(arg0), try_c!(arg1));
        let code = try_cellshm!(sup.sup.stop(name, Duration::from_millis(grace_ms)));
        out_exit_code.map_or(CELLSHM_OK, |out| out.write(code))
    })
}

/// Stops every cell (briefly) and frees the supervisor and its hub. NULL is a no-op.
///
/// # Safety
/// `supervisor` is NULL or not yet freed, not in use by another thread.
#[no_mangle]
pub unsafe extern "C" fn cellshm_supervisor_free(supervisor: *mut cellshm_supervisor) {
    // SAFETY: cellshm_supervisor_free's contract, which C keeps: `supervisor` is NULL or not yet freed, not in use by another thread.
    unsafe { free_with(supervisor, drop) }
}
