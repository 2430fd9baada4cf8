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
    /// What cellshm_hub_spawn uses when it is given no options.
    pub(crate) peer_defaults: PeerOptions,
    /// The userdata of its handlers and access policy, released when it is freed.
    pub(crate) registrations: Registrations,
    /// Its access policy's userdata.
    pub(crate) access_policy: CurrentRegistration,
}

/// Slot classes a hub's options may list.
pub const CELLSHM_MAX_SLOT_CLASSES: usize = 8;

/// One class of slots of every link's pools: `slot_count` slots of `slot_size` bytes (a
/// multiple of 64). The largest class's size is the largest payload a call can carry.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct cellshm_slot_class {
    /// Bytes per slot: a multiple of 64, 64 to 1 GiB, increasing from class to class.
    pub slot_size: u32,
    /// Slots of this size in each pool (1 to 65536).
    pub slot_count: u32,
}

/// How a hub is shaped. Start from cellshm_hub_options_default() (which sets `size`)
/// and change what you need: a program built against an older header passes a smaller
/// `size`, and the fields it does not know keep their defaults.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct cellshm_hub_options {
    /// sizeof(cellshm_hub_options) as the caller knows it; set by the default.
    pub size: usize,
    /// Peer slots (1 to 1024; default 8).
    pub max_peers: u32,
    /// Descriptors per ring: a power of two, 2 to 65536 (default 256).
    pub ring_capacity: u32,
    /// How many of `slot_classes` are used (1 to CELLSHM_MAX_SLOT_CLASSES; default 4:
    /// 256 x 256 B, 128 x 4 KiB, 32 x 64 KiB, 4 x 1 MiB).
    pub slot_class_count: u32,
    /// The slot classes, smallest first.
    pub slot_classes: [cellshm_slot_class; CELLSHM_MAX_SLOT_CLASSES],
    /// How long freeing the hub waits for its cells to leave after GOODBYE, in ms
    /// (default 2000).
    pub shutdown_grace_ms: u64,
    /// The options cellshm_hub_spawn uses when given none, and a supervisor uses for all
    /// its cells: server and stream threads, stream window, default timeout, ... NULL
    /// (the default): cellshm_peer_options_default(). Read during the call only.
    pub peer_defaults: *const cellshm_peer_options,
    /// Also listen on this filesystem path (NULL, the default: the abstract socket only).
    pub socket_path: *const c_char,
}

/// The default hub options, `size` set.
#[no_mangle]
pub extern "C" fn cellshm_hub_options_default() -> cellshm_hub_options {
    let d = HubConfig::default();
    let mut slot_classes = [cellshm_slot_class::default(); CELLSHM_MAX_SLOT_CLASSES];
    for (out, c) in slot_classes.iter_mut().zip(&d.slot_classes) {
        *out = cellshm_slot_class { slot_size: c.slot_size, slot_count: c.slot_count };
    }
    cellshm_hub_options {
        size: std::mem::size_of::<cellshm_hub_options>(),
        max_peers: d.max_peers,
        ring_capacity: d.ring_capacity,
        slot_class_count: d.slot_classes.len() as u32,
        slot_classes,
        shutdown_grace_ms: d.shutdown_grace.as_millis() as u64,
        peer_defaults: std::ptr::null(),
        socket_path: std::ptr::null(),
    }
}

/// The hub configuration and peer defaults C asks for, checked.
///
/// # Safety
/// `name` NULL or NUL-terminated; `options` NULL or pointing to `options->size` readable
/// bytes, a cellshm_hub_options prefix.
pub(crate) unsafe fn hub_config(
    name: *const c_char,
    options: *const cellshm_hub_options,
) -> Result<(HubConfig, PeerOptions), cellshm_status> {
    // SAFETY: `options` is as sized_options needs, by the contract above.
    let o = unsafe { sized_options(options, cellshm_hub_options_default(), "cellshm_hub_options") }?;
    let mut config = HubConfig::default();
    if !name.is_null() {
        // SAFETY: a non-NULL `name` is NUL-terminated, by the contract above.
        config.name = Some(unsafe { c_str(name, "name") }?.into());
    }
    config.max_peers = o.max_peers;
    config.ring_capacity = o.ring_capacity;
    let count = o.slot_class_count as usize;
    if count == 0 || count > CELLSHM_MAX_SLOT_CLASSES {
        return Err(invalid(format!("slot_class_count {count} is not in 1..={CELLSHM_MAX_SLOT_CLASSES}")));
    }
    config.slot_classes = o.slot_classes[..count]
        .iter()
        .map(|c| cellshm::SlotClass { slot_size: c.slot_size, slot_count: c.slot_count })
        .collect();
    config.shutdown_grace = Duration::from_millis(o.shutdown_grace_ms);
    if !o.socket_path.is_null() {
        // SAFETY: a non-NULL socket_path is NUL-terminated per the field's contract.
        config.socket_path = Some(unsafe { c_str(o.socket_path, "socket_path") }?.into());
    }
    // SAFETY: a non-NULL peer_defaults is a sized cellshm_peer_options, per the field's
    // contract.
    let peers = unsafe { peer_options_from(o.peer_defaults) }?;
    Ok((config, peers))
}

/// cellshm_hub_new with every option: `options` NULL for the defaults. Invalid options
/// are CELLSHM_INVALID_ARGUMENT, the message naming the one at fault. On success
/// `*out_hub` is owned by the caller.
///
/// # Safety
/// `name` NULL or NUL-terminated; `options` NULL or from cellshm_hub_options_default
/// (then changed); `out_hub` writable.
#[no_mangle]
pub unsafe extern "C" fn cellshm_hub_new_with(
    name: *const c_char,
    options: *const cellshm_hub_options,
    out_hub: *mut *mut cellshm_hub,
) -> cellshm_status {
    boundary("cellshm_hub_new_with", || {
        // SAFETY: cellshm_hub_new_with's contract, which C keeps: `name` NULL or NUL-terminated; `options` NULL or from cellshm_hub_options_default (then changed); `out_hub` writable.
        let (arg0, arg1) = unsafe { (Out::new(out_hub, "out_hub"), hub_config(name, options)) };
        let (out_hub, (config, peer_defaults)) = (try_c!(arg0), try_c!(arg1));
        // Checked now, not at the first spawn.
        try_cellshm!(peer_defaults.validate().map_err(|e| e.context("peer_defaults")));
        create_hub(config, peer_defaults, out_hub)
    })
}

/// Creates the hub and hands it to C.
fn create_hub(config: HubConfig, peer_defaults: PeerOptions, out_hub: Out<'_, *mut cellshm_hub>) -> cellshm_status {
    let hub = try_cellshm!(Hub::create(config));
    // Hub names are validated ASCII: no interior NUL.
    let name = CString::new(hub.name()).unwrap_or_default();
    let hub = cellshm_hub {
        hub,
        name,
        attach: std::sync::Mutex::new(None),
        log_sink: std::sync::Mutex::new(RegisteredSink::NONE),
        peer_defaults,
        registrations: Registrations::default(),
        access_policy: CurrentRegistration::default(),
    };
    out_hub.hand_over(hub)
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
        let mut options = cellshm_hub_options_default();
        if max_peers != 0 {
            options.max_peers = max_peers;
        }
        // SAFETY: cellshm_hub_new's contract, which C keeps: `name` is NULL or a
        // NUL-terminated string; `out_hub` points to writable storage. `options` is ours.
        let (out_hub, config) = unsafe { (Out::new(out_hub, "out_hub"), hub_config(name, &options)) };
        let (out_hub, (config, peer_defaults)) = (try_c!(out_hub), try_c!(config));
        create_hub(config, peer_defaults, out_hub)
    })
}

/// The hub's name. Borrowed: valid until cellshm_hub_free. NULL for a NULL hub.
///
/// # Safety
/// `hub` is NULL or a live hub.
#[no_mangle]
pub unsafe extern "C" fn cellshm_hub_name(hub: *const cellshm_hub) -> *const c_char {
    // SAFETY: cellshm_hub_name's contract, which C keeps: `hub` is NULL or a live hub.
    boundary_value(std::ptr::null(), || unsafe { hub.as_ref() }.map_or(std::ptr::null(), |h| h.name.as_ptr()))
}

/// Serves "Service.method" to every cell of the hub. `free_userdata` (may be NULL) is
/// called exactly once: when the hub is freed, or before this returns if it fails.
///
/// # Safety
/// `hub` is a live hub; `name` a NUL-terminated string; `handler` a valid function.
#[no_mangle]
pub unsafe extern "C" fn cellshm_hub_register(
    hub: *const cellshm_hub,
    name: *const c_char,
    handler: cellshm_handler_fn,
    userdata: *mut c_void,
    free_userdata: cellshm_free_fn,
) -> cellshm_status {
    let userdata = Registration::new(userdata, free_userdata);
    boundary("cellshm_hub_register", move || {
        // SAFETY: C passes a live hub and a NUL-terminated name, as cellshm_hub_register's
        // documentation requires.
        let (hub, name) = unsafe { (Handle::borrow(hub), c_str(name, "name")) };
        let (hub, name) = (try_c!(hub), try_c!(name));
        link_end::register(&hub.hub, &hub.registrations, name, handler, userdata)
    })
}

/// Keeps `set` (`set_len` bytes: a serialized `google.protobuf.FileDescriptorSet`, such
/// as the `<FILE>_FILE_DESCRIPTOR_SET` array of a header from `cellshm-codegen --lang c`)
/// as the description of the services the host serves to its cells. The bytes are
/// copied; a set given twice is kept once. CELLSHM_RESOURCE_EXHAUSTED past 4 MiB in all.
///
/// # Safety
/// `hub` is live; `set` points to `set_len` readable bytes.
#[no_mangle]
pub unsafe extern "C" fn cellshm_hub_describe(
    hub: *const cellshm_hub,
    set: *const u8,
    set_len: usize,
) -> cellshm_status {
    boundary("cellshm_hub_describe", || {
        // SAFETY: cellshm_hub_describe's contract, which C keeps: `hub` is live, `set` has
        // `set_len` readable bytes.
        let (hub, set) = unsafe { (Handle::borrow(hub), c_bytes(set, set_len, "set")) };
        let (hub, set) = (try_c!(hub), try_c!(set));
        try_cellshm!(cellshm::Registry::describe(&hub.hub, set));
        CELLSHM_OK
    })
}

/// Spawns `program` as a cell named `name` (1 to 48 bytes without control characters,
/// the rule cellshm_supervisor_add and attach follow too). `program` is looked up in PATH
/// if it has no slash, and is the cell's `argv[0]`. `argv` (may be NULL) is a
/// NULL-terminated list of the arguments after `argv[0]`; the hub does not add any (the
/// cell finds its doorbell through CELLSHM_DOORBELL_FD unless
/// `options->append_join_args` asks for `--doorbell-fd=N`).
/// `envp` (may be NULL) is a NULL-terminated list of "KEY=VALUE" added to the inherited
/// environment. `options` may be NULL for the defaults. On success `*out_peer` is owned
/// by the caller (free it with cellshm_peer_free); wait for it with
/// cellshm_peer_wait_ready.
///
/// # Safety
/// `hub` is live; all strings are NUL-terminated; the lists NULL-terminated; `options`
/// NULL or a cellshm_peer_options with its `size` set; `out_peer` writable.
#[no_mangle]
pub unsafe extern "C" fn cellshm_hub_spawn(
    hub: *const cellshm_hub,
    name: *const c_char,
    program: *const c_char,
    argv: *const *const c_char,
    envp: *const *const c_char,
    options: *const cellshm_peer_options,
    out_peer: *mut *mut cellshm_peer,
) -> cellshm_status {
    boundary("cellshm_hub_spawn", || {
        // SAFETY: cellshm_hub_spawn's contract, which C keeps: `hub` is live; all strings are
        // NUL-terminated; the lists NULL-terminated; `options` NULL or a sized
        // cellshm_peer_options; `out_peer` writable.
        let (arg0, arg1, arg2, arg3, arg4, arg5, options) = unsafe {
            (
                Out::new(out_peer, "out_peer"),
                Handle::borrow(hub),
                c_str(name, "name"),
                c_str(program, "program"),
                c_str_list(argv, "argv"),
                c_str_list(envp, "envp"),
                (!options.is_null()).then(|| peer_options_from(options)),
            )
        };
        let (out_peer, hub, name, program, args, env): (_, &cellshm_hub, _, _, _, _) =
            (try_c!(arg0), try_c!(arg1), try_c!(arg2), try_c!(arg3), try_c!(arg4), try_c!(arg5));
        let options = match options {
            Some(o) => try_c!(o),
            None => hub.peer_defaults.clone(),
        };
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
        out_peer.hand_over(handle)
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
    // SAFETY: cellshm_hub_free's contract, which C keeps: `hub` is NULL or a hub not yet freed, not in use by another thread.
    unsafe {
        free_with(hub, |hub| {
            let cellshm_hub { hub, log_sink, registrations, access_policy, .. } = *hub;
            // Closing the links joins the threads that run handlers: none runs after
            // this, even if peer handles keep the links' memory alive.
            drop(hub);
            drop(log_sink);
            access_policy.replace(None);
            registrations.end_all();
        })
    }
}
