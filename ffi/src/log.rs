//! Logs: what cells send (records with a time, a source location and fields, dropped and
//! counted rather than waited for when the ring is full), and the host's sink, which also
//! receives the library's own notices.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};

use crate::*;

/// One structured field of a log record; both strings are valid during the call they
/// are passed to.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct cellshm_log_field {
    /// The field's name.
    pub key: *const c_char,
    /// Its value, as text.
    pub value: *const c_char,
}

/// A log record, as a log sink receives it. Every pointer is valid during the call only.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct cellshm_log_record {
    /// The name of the cell that sent it; for a notice, the cell it is about ("" if none).
    pub cell: *const c_char,
    /// That cell's peer id; UINT32_MAX when a notice is about no cell.
    pub peer_id: u32,
    /// 1 error, 2 warn, 3 info, 4 debug, 5 trace (anything else: info).
    pub level: u32,
    /// The logger or module it comes from (may be "").
    pub target: *const c_char,
    /// The message.
    pub message: *const c_char,
    /// When it was made: CLOCK_REALTIME ns since the Unix epoch.
    pub time_unix_ns: u64,
    /// The source file it was made in ("" if not said).
    pub file: *const c_char,
    /// The line in `file` (0 if not said).
    pub line: u32,
    /// Its structured fields, `field_count` of them (NULL when there are none).
    pub fields: *const cellshm_log_field,
    /// How many `fields` there are.
    pub field_count: usize,
    /// True for the library's own notices (a peer lost, a listener that panicked, a cell
    /// relaunched as unresponsive, ...), false for a cell's record.
    pub notice: bool,
}

/// Receives log records (see cellshm_hub_set_log_sink). Called from the thread that got
/// the record (a cell's records in the order the cell sent them); it must not block for
/// long: it holds up that cell's receive path.
pub type cellshm_log_sink_fn = Option<unsafe extern "C" fn(userdata: *mut c_void, record: *const cellshm_log_record)>;

/// A C log sink and its user data.
pub(crate) struct CSink {
    sink: unsafe extern "C" fn(*mut c_void, *const cellshm_log_record),
    userdata: Arc<Registration>,
}

impl CSink {
    fn deliver(&self, r: &cellshm::LogRecord<'_>) {
        // A sink being replaced or removed takes no more records.
        let Some(running) = self.userdata.enter() else { return };
        let (cell, target, message, file) =
            (c_string(r.cell), c_string(r.target), c_string(r.message), c_string(r.file));
        let strings: Vec<(CString, CString)> = r.fields.iter().map(|(k, v)| (c_string(k), c_string(v))).collect();
        let fields: Vec<cellshm_log_field> =
            strings.iter().map(|(k, v)| cellshm_log_field { key: k.as_ptr(), value: v.as_ptr() }).collect();
        let record = cellshm_log_record {
            cell: cell.as_ptr(),
            peer_id: r.peer_id,
            level: r.level,
            target: target.as_ptr(),
            message: message.as_ptr(),
            time_unix_ns: r.time_unix_ns,
            file: file.as_ptr(),
            line: r.line,
            fields: if fields.is_empty() { std::ptr::null() } else { fields.as_ptr() },
            field_count: fields.len(),
            notice: r.notice,
        };
        // SAFETY: registered by C for this purpose; every pointer in `record` lives until
        // this call returns.
        let _ = catch_unwind(AssertUnwindSafe(|| unsafe { (self.sink)(running.userdata(), &record) }));
    }
}

/// The sinks that receive the library's notices, one per hub or supervisor that set one.
static NOTICE_SINKS: Mutex<Vec<(u64, Arc<CSink>)>> = Mutex::new(Vec::new());
static NEXT_SINK: AtomicU64 = AtomicU64::new(1);

/// Installs, once, the `tracing` subscriber that hands the library's notices (info and
/// more severe) to every registered sink. A program that set its own global subscriber
/// first keeps it: its notices then go there.
fn capture_notices() {
    static INSTALLED: OnceLock<()> = OnceLock::new();
    INSTALLED.get_or_init(|| {
        use tracing_subscriber::layer::SubscriberExt;
        let layer = cellshm::log::NoticeLayer::new(cellshm::wire::log_level::INFO, |record| {
            let sinks: Vec<Arc<CSink>> =
                NOTICE_SINKS.lock().unwrap_or_else(|p| p.into_inner()).iter().map(|(_, s)| s.clone()).collect();
            for sink in sinks {
                sink.deliver(record);
            }
        });
        let _ = tracing::subscriber::set_global_default(tracing_subscriber::registry().with(layer));
    });
}

/// A hub's sink, registered for notices too: the id to unregister it with, and its
/// userdata.
pub(crate) struct RegisteredSink(Option<(u64, Arc<Registration>)>);

impl std::fmt::Debug for RegisteredSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("RegisteredSink").field(&self.0.as_ref().map(|(id, _)| id)).finish()
    }
}

impl RegisteredSink {
    pub(crate) const NONE: RegisteredSink = RegisteredSink(None);

    /// Registers `sink` for notices in place of the current one, and returns the
    /// replaced one's userdata, to end once no lock is held (the end waits for the
    /// records being delivered to it, and a sink may replace itself).
    #[must_use]
    fn replace(&mut self, sink: Option<Arc<CSink>>) -> Option<Arc<Registration>> {
        let old = {
            let mut sinks = NOTICE_SINKS.lock().unwrap_or_else(|p| p.into_inner());
            let old = self.0.take();
            if let Some((old, _)) = &old {
                sinks.retain(|(id, _)| id != old);
            }
            if let Some(sink) = sink {
                let id = NEXT_SINK.fetch_add(1, Ordering::Relaxed);
                self.0 = Some((id, sink.userdata.clone()));
                sinks.push((id, sink));
            }
            old
        };
        old.map(|(_, userdata)| userdata)
    }
}

impl Drop for RegisteredSink {
    fn drop(&mut self) {
        if let Some(old) = self.replace(None) {
            old.end();
        }
    }
}

/// Installs `sink` on `hub` (or removes it, `sink` NULL) and registers it for notices.
fn set_sink(
    hub: &Hub,
    registered: &Mutex<RegisteredSink>,
    sink: cellshm_log_sink_fn,
    userdata: Arc<Registration>,
) -> cellshm_status {
    let replaced = {
        let mut registered = registered.lock().unwrap_or_else(|p| p.into_inner());
        match sink {
            None => {
                hub.set_log_sink(None);
                registered.replace(None)
            }
            Some(sink) => {
                let sink = Arc::new(CSink { sink, userdata });
                let for_cells = sink.clone();
                hub.set_log_sink(Some(Arc::new(move |record: &cellshm::LogRecord<'_>| for_cells.deliver(record))));
                capture_notices();
                registered.replace(Some(sink))
            }
        }
    };
    // Returns once no record is being delivered to the old sink (but on this thread, if
    // the sink replaced itself), and its userdata was released.
    if let Some(old) = replaced {
        old.end();
    }
    CELLSHM_OK
}

/// Sends every log record the hub's cells send, and the library's own notices (info and
/// more severe, from any hub of the process), to `sink`; NULL restores the default
/// (cells' records go to the library's `tracing` events, unseen in C). `free_userdata`
/// (may be NULL) is called exactly once: when the sink is replaced or removed (by this
/// function, which returns after the records being delivered to the old sink on other
/// threads were, and its userdata released; called from inside the sink itself, the
/// release comes as that sink call returns), when the hub is freed (before
/// cellshm_hub_free returns), or at once if this fails. Notices reach C sinks only if the
/// program installed no `tracing` subscriber of its own (a C or C++ program never does).
///
/// # Safety
/// `hub` is live; `sink` NULL or a valid function.
#[no_mangle]
pub unsafe extern "C" fn cellshm_hub_set_log_sink(
    hub: *const cellshm_hub,
    sink: cellshm_log_sink_fn,
    userdata: *mut c_void,
    free_userdata: cellshm_free_fn,
) -> cellshm_status {
    let userdata = Registration::new(userdata, free_userdata);
    boundary("cellshm_hub_set_log_sink", move || {
        // SAFETY: cellshm_hub_set_log_sink's contract, which C keeps: `hub` is live; `sink` NULL or a valid function.
        let hub = try_c!(unsafe { Handle::borrow(hub) });
        set_sink(&hub.hub, &hub.log_sink, sink, userdata)
    })
}

/// cellshm_hub_set_log_sink for the supervisor's hub.
///
/// # Safety
/// `supervisor` is live; `sink` NULL or a valid function.
#[no_mangle]
pub unsafe extern "C" fn cellshm_supervisor_set_log_sink(
    supervisor: *const cellshm_supervisor,
    sink: cellshm_log_sink_fn,
    userdata: *mut c_void,
    free_userdata: cellshm_free_fn,
) -> cellshm_status {
    let userdata = Registration::new(userdata, free_userdata);
    boundary("cellshm_supervisor_set_log_sink", move || {
        // SAFETY: cellshm_supervisor_set_log_sink's contract, which C keeps: `supervisor` is live; `sink` NULL or a valid function.
        let sup = try_c!(unsafe { Handle::borrow(supervisor) });
        set_sink(sup.sup.hub(), &sup.log_sink, sink, userdata)
    })
}

/// Sends a log line to the host, where it appears in the host's log with the cell's name.
///
/// # Safety
/// `cell` is live; `line` NUL-terminated.
#[no_mangle]
pub unsafe extern "C" fn cellshm_cell_log(cell: *const cellshm_cell, line: *const c_char) -> cellshm_status {
    boundary("cellshm_cell_log", || {
        // SAFETY: cellshm_cell_log's contract, which C keeps: `cell` is live; `line` NUL-terminated.
        let (arg0, arg1) = unsafe { (Handle::borrow(cell), c_str(line, "line")) };
        let (cell, line) = (try_c!(arg0), try_c!(arg1));
        try_cellshm!(cell.cell.log(line));
        CELLSHM_OK
    })
}

/// Sends a log record to the host: `level` 1 error, 2 warn, 3 info, 4 debug, 5 trace;
/// `target` the logger or module (may be ""). Records the host's filter excludes are not
/// sent; one that finds the ring full is dropped and counted (cellshm_cell_log_dropped),
/// and CELLSHM_OK is returned: logging never waits on the host.
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
        // SAFETY: cellshm_cell_log_event's contract, which C keeps: `cell` is live; `target` and `message` NUL-terminated.
        let (arg0, arg1, arg2) = unsafe { (Handle::borrow(cell), c_str(target, "target"), c_str(message, "message")) };
        let (cell, target, message) = (try_c!(arg0), try_c!(arg1), try_c!(arg2));
        try_cellshm!(cell.cell.log_event(level, target, message));
        CELLSHM_OK
    })
}

/// Sends a log record with structured fields (`fields`, `field_count` of them; NULL when
/// 0) to the host, stamped with the current time; `file` (may be NULL) and `line` say
/// where it was made. As cellshm_cell_log_event otherwise.
///
/// # Safety
/// `cell` is live; strings NUL-terminated (`file` may be NULL); `fields` points to
/// `field_count` fields whose strings are NUL-terminated.
#[no_mangle]
pub unsafe extern "C" fn cellshm_cell_log_fields(
    cell: *const cellshm_cell,
    level: u32,
    target: *const c_char,
    message: *const c_char,
    file: *const c_char,
    line: u32,
    fields: *const cellshm_log_field,
    field_count: usize,
) -> cellshm_status {
    boundary("cellshm_cell_log_fields", || {
        // SAFETY: cellshm_cell_log_fields's contract, which C keeps: `cell` is live;
        // `target` and `message` NUL-terminated, `file` NULL or NUL-terminated; `fields`
        // points to `field_count` fields whose strings are NUL-terminated.
        let (arg0, arg1, arg2, arg3, arg4) = unsafe {
            (
                Handle::borrow(cell),
                c_str(target, "target"),
                c_str(message, "message"),
                if file.is_null() { Ok("") } else { c_str(file, "file") },
                log_fields(fields, field_count),
            )
        };
        let (cell, target, message, file, fields) =
            (try_c!(arg0), try_c!(arg1), try_c!(arg2), try_c!(arg3), try_c!(arg4));
        let mut record = cellshm::wire::LogEvent::new(level, target, message);
        record.file = file.to_string();
        record.line = line;
        record.fields = fields.into_iter().map(|(key, value)| (key.to_string(), value.to_string())).collect();
        try_cellshm!(cell.cell.log_record(&record));
        CELLSHM_OK
    })
}

/// Log records this cell dropped so far because its ring (or pool) towards the host was
/// full: a log call never waits for room (`CELLSHM_LOG_OVERFLOW=wait:<ms>` lets it wait
/// that long). 0 for NULL.
///
/// # Safety
/// `cell` is NULL or live.
#[no_mangle]
pub unsafe extern "C" fn cellshm_cell_log_dropped(cell: *const cellshm_cell) -> u64 {
    // SAFETY: cellshm_cell_log_dropped's contract, which C keeps: `cell` is NULL or live.
    boundary_value(0, || unsafe { cell.as_ref() }.map_or(0, |c| c.cell.log_records_dropped()))
}

/// The key/value strings of `count` log fields at `fields`.
///
/// # Safety
/// `fields` points to `count` readable fields whose strings are NUL-terminated (or is
/// NULL with 0), all outliving `'a`.
unsafe fn log_fields<'a>(
    fields: *const cellshm_log_field,
    count: usize,
) -> Result<Vec<(&'a str, &'a str)>, cellshm_status> {
    if count > cellshm::wire::MAX_LOG_FIELDS {
        return Err(invalid(format!("{count} log fields (at most {})", cellshm::wire::MAX_LOG_FIELDS)));
    }
    if count > 0 && fields.is_null() {
        return Err(invalid(format!("fields is NULL but field_count is {count}")));
    }
    let mut out = Vec::with_capacity(count);
    for i in 0..count {
        // SAFETY: `fields` holds `count` readable entries, by the contract above.
        let field = unsafe { *fields.add(i) };
        // SAFETY: each field's strings are NUL-terminated, by the contract above.
        let key = unsafe { c_str(field.key, &format!("fields[{i}].key")) }?;
        // SAFETY: as above.
        let value = unsafe { c_str(field.value, &format!("fields[{i}].value")) }?;
        out.push((key, value));
    }
    Ok(out)
}
