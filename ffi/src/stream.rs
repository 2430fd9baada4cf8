//! Streams, both ways.

use crate::*;

/// The caller's end of a stream (cellshm_peer_open_stream, cellshm_cell_open_stream).
/// Owned by the caller; release it with cellshm_stream_free, which cancels a stream
/// that has not ended. Use it from one thread at a time, except cellshm_stream_cancel,
/// which any thread may call to wake a thread blocked in cellshm_stream_next, and
/// cellshm_stream_free, which may be called while another thread is blocked in
/// cellshm_stream_next (it cancels the stream and returns once that thread has left).
#[derive(Debug)]
pub struct cellshm_stream {
    /// What the calls share; a call keeps its own reference while it runs, so a free
    /// from another thread never pulls the state from under it.
    pub(crate) shared: Arc<StreamHandle>,
}

#[derive(Debug)]
pub(crate) struct StreamHandle {
    state: std::sync::Mutex<HandleState>,
    /// Signalled when a call leaves (cellshm_stream_free waits for them).
    left: std::sync::Condvar,
}

#[derive(Debug)]
struct HandleState {
    stream: StreamState,
    /// Calls using the stream right now.
    users: usize,
}

#[derive(Debug)]
enum StreamState {
    Open(Arc<Stream>),
    Cancelled,
    Finished,
}

impl StreamHandle {
    fn lock(&self) -> std::sync::MutexGuard<'_, HandleState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The open stream, and a guard that counts this call as a user until it is dropped;
    /// `None` once finished (cellshm_stream_finish), CANCELLED once cancelled.
    fn enter(self: &Arc<Self>) -> Result<Option<(Arc<Stream>, StreamUser)>, cellshm_status> {
        let mut state = self.lock();
        match &state.stream {
            StreamState::Open(stream) => {
                let stream = stream.clone();
                state.users += 1;
                Ok(Some((stream, StreamUser(self.clone()))))
            }
            StreamState::Cancelled => Err(fail(Error::new(Status::Cancelled, "the stream was cancelled"))),
            StreamState::Finished => Ok(None),
        }
    }

    /// As `enter`, for an operation a finished stream refuses.
    fn enter_open(self: &Arc<Self>) -> Result<(Arc<Stream>, StreamUser), cellshm_status> {
        self.enter()?.ok_or_else(|| {
            fail(Error::new(Status::FailedPrecondition, "the stream was finished (cellshm_stream_finish)"))
        })
    }

    /// Ends the stream as `to` says, returning it if it was still open.
    fn end(&self, to: StreamState) -> Option<Arc<Stream>> {
        let mut state = self.lock();
        // An ended stream stays as it ended.
        if !matches!(state.stream, StreamState::Open(_)) {
            return None;
        }
        match std::mem::replace(&mut state.stream, to) {
            StreamState::Open(stream) => Some(stream),
            _ => None,
        }
    }
}

/// A call using a stream; counted until dropped.
pub(crate) struct StreamUser(Arc<StreamHandle>);

impl Drop for StreamUser {
    fn drop(&mut self) {
        let mut state = self.0.lock();
        state.users -= 1;
        self.0.left.notify_all();
    }
}

impl Drop for cellshm_stream {
    /// Cancels a stream that has not ended, and waits for the calls another thread is
    /// making on it (the cancel wakes them).
    fn drop(&mut self) {
        if let Some(stream) = self.shared.end(StreamState::Cancelled) {
            stream.cancel();
        }
        let mut state = self.shared.lock();
        while state.users > 0 {
            state = self.shared.left.wait(state).unwrap_or_else(|e| e.into_inner());
        }
    }
}

/// One item of a stream, read in place from shared memory. Owned by the caller;
/// cellshm_stream_item_free releases its slot and lets the sender send one more.
#[derive(Debug)]
pub struct cellshm_stream_item {
    pub(crate) item: StreamItem,
}

pub(crate) fn deliver_item(
    result: cellshm::Result<Option<StreamItem>>,
    out: Out<'_, *mut cellshm_stream_item>,
) -> cellshm_status {
    match try_cellshm!(result) {
        Some(item) => out.hand_over(cellshm_stream_item { item }),
        None => out.write(std::ptr::null_mut()),
    }
}

pub(crate) fn deliver_stream(result: cellshm::Result<Stream>, out: Out<'_, *mut cellshm_stream>) -> cellshm_status {
    let stream = try_cellshm!(result);
    let shared = StreamHandle {
        state: std::sync::Mutex::new(HandleState { stream: StreamState::Open(Arc::new(stream)), users: 0 }),
        left: std::sync::Condvar::new(),
    };
    out.hand_over(cellshm_stream { shared: Arc::new(shared) })
}

/// Opens a stream to the cell's stream method "Service.method" with `request_len`
/// bytes at `request` as its opening message. `options` may be NULL; its timeout covers
/// the whole stream (streams have no default timeout). On success `*out_stream` is owned
/// by the caller. Opening does not wait for the cell: a method it does not serve as a
/// stream (unknown, or unary) is reported by the first cellshm_stream_next (or
/// cellshm_stream_finish) as CELLSHM_UNIMPLEMENTED.
///
/// # Safety
/// `peer` is live; `method` NUL-terminated; `request` has `request_len` readable bytes;
/// `out_stream` is writable.
#[no_mangle]
pub unsafe extern "C" fn cellshm_peer_open_stream(
    peer: *const cellshm_peer,
    method: *const c_char,
    request: *const u8,
    request_len: usize,
    options: *const cellshm_call_options,
    out_stream: *mut *mut cellshm_stream,
) -> cellshm_status {
    boundary("cellshm_peer_open_stream", || {
        // SAFETY: cellshm_peer_open_stream's contract, which C keeps: a live `peer`, the call's arguments as
        // CRequest::from_c needs them, a writable `out_stream`.
        let (arg0, arg1, arg2) = unsafe {
            (
                Out::new(out_stream, "out_stream"),
                Handle::borrow(peer),
                CRequest::from_c(method, request, request_len, options),
            )
        };
        let (out_stream, peer, request) = (try_c!(arg0), try_c!(arg1), try_c!(arg2));
        link_end::open_stream(&peer.peer, request, out_stream)
    })
}

/// Opens a stream to the host's stream method "Service.method" (see
/// cellshm_peer_open_stream).
///
/// # Safety
/// As for cellshm_peer_open_stream, with a live `cell`.
#[no_mangle]
pub unsafe extern "C" fn cellshm_cell_open_stream(
    cell: *const cellshm_cell,
    method: *const c_char,
    request: *const u8,
    request_len: usize,
    options: *const cellshm_call_options,
    out_stream: *mut *mut cellshm_stream,
) -> cellshm_status {
    boundary("cellshm_cell_open_stream", || {
        // SAFETY: cellshm_cell_open_stream's contract, which C keeps: a live `cell`, the call's arguments as
        // CRequest::from_c needs them, a writable `out_stream`.
        let (arg0, arg1, arg2) = unsafe {
            (
                Out::new(out_stream, "out_stream"),
                Handle::borrow(cell),
                CRequest::from_c(method, request, request_len, options),
            )
        };
        let (out_stream, cell, request) = (try_c!(arg0), try_c!(arg1), try_c!(arg2));
        link_end::open_stream(&cell.cell, request, out_stream)
    })
}

/// Waits for the next item of the stream. On CELLSHM_OK `*out_item` is an item owned
/// by the caller, or NULL once the handler finished successfully. Any other status is
/// the stream's end: the handler's error, CELLSHM_CANCELLED, CELLSHM_DEADLINE_EXCEEDED,
/// CELLSHM_PEER_DEAD, ... with the message in cellshm_last_error_message(). One
/// exception: CELLSHM_FAILED_PRECONDITION while the caller still holds a whole window
/// (the peer's stream window, 8 by default) of items, which could never be followed by
/// more; free some and call again (no other case returns it).
///
/// After the end, calling again returns the end again: NULL (CELLSHM_OK) after a
/// successful end, the same error after a failed one. After cellshm_stream_cancel (on
/// any thread, before or during this call) it returns CELLSHM_CANCELLED; after
/// cellshm_stream_finish, NULL. Items stay valid after their stream, peer or hub is
/// freed, until they are freed themselves.
///
/// # Safety
/// `stream` is live; `out_item` is writable.
#[no_mangle]
pub unsafe extern "C" fn cellshm_stream_next(
    stream: *const cellshm_stream,
    out_item: *mut *mut cellshm_stream_item,
) -> cellshm_status {
    boundary("cellshm_stream_next", || {
        // SAFETY: cellshm_stream_next's contract, which C keeps: `stream` is live; `out_item` is writable.
        let (out_item, stream) = unsafe { (Out::new(out_item, "out_item"), Handle::borrow(stream)) };
        let (out_item, stream) = (try_c!(out_item), try_c!(stream));
        let Some((stream, _user)) = try_c!(stream.shared.enter()) else {
            return deliver_item(Ok(None), out_item);
        };
        deliver_item(stream.recv(), out_item)
    })
}

/// Sends one item (a copy of `len` bytes at `data`) to the handler; waits while the
/// handler's window is full.
///
/// # Safety
/// `stream` is live; `data` has `len` readable bytes.
#[no_mangle]
pub unsafe extern "C" fn cellshm_stream_send(
    stream: *const cellshm_stream,
    data: *const u8,
    len: usize,
) -> cellshm_status {
    boundary("cellshm_stream_send", || {
        // SAFETY: cellshm_stream_send's contract, which C keeps: `stream` is live; `data` has `len` readable bytes.
        let (stream, data) = unsafe { (Handle::borrow(stream), c_bytes(data, len, "data")) };
        let (stream, data) = (try_c!(stream), try_c!(data));
        let (stream, _user) = try_c!(stream.shared.enter_open());
        try_cellshm!(stream.send(data));
        CELLSHM_OK
    })
}

/// Tells the handler that no more items follow.
///
/// # Safety
/// `stream` is live.
#[no_mangle]
pub unsafe extern "C" fn cellshm_stream_close_send(stream: *const cellshm_stream) -> cellshm_status {
    boundary("cellshm_stream_close_send", || {
        // SAFETY: cellshm_stream_close_send's contract, which C keeps: `stream` is live.
        let stream: &cellshm_stream = try_c!(unsafe { Handle::borrow(stream) });
        let (stream, _user) = try_c!(stream.shared.enter_open());
        try_cellshm!(stream.close_send());
        CELLSHM_OK
    })
}

/// Closes sending, drops items still coming, and waits for the handler's response
/// (client streaming). On success `*out_response` is owned by the caller. The stream
/// is finished afterwards either way; it still has to be freed.
///
/// # Safety
/// `stream` is live; `out_response` is writable.
#[no_mangle]
pub unsafe extern "C" fn cellshm_stream_finish(
    stream: *const cellshm_stream,
    out_response: *mut *mut cellshm_response,
) -> cellshm_status {
    boundary("cellshm_stream_finish", || {
        // SAFETY: cellshm_stream_finish's contract, which C keeps: `stream` is live; `out_response` is writable.
        let (arg0, arg1) = unsafe { (Out::new(out_response, "out_response"), Handle::borrow(stream)) };
        let (out_response, handle) = (try_c!(arg0), try_c!(arg1));
        let Some(stream) = handle.shared.end(StreamState::Finished) else {
            return handle.shared.enter_open().err().unwrap_or(CELLSHM_INTERNAL);
        };
        match Arc::try_unwrap(stream) {
            Ok(stream) => deliver_response(stream.finish(), out_response),
            Err(stream) => {
                handle.shared.lock().stream = StreamState::Open(stream);
                fail(Error::new(Status::FailedPrecondition, "another thread is using the stream"))
            }
        }
    })
}

/// Cancels the stream: the handler sees it cancelled, a thread blocked in
/// cellshm_stream_next returns CELLSHM_CANCELLED, late items are dropped. Idempotent.
///
/// # Safety
/// `stream` is live.
#[no_mangle]
pub unsafe extern "C" fn cellshm_stream_cancel(stream: *const cellshm_stream) -> cellshm_status {
    boundary("cellshm_stream_cancel", || {
        // SAFETY: cellshm_stream_cancel's contract, which C keeps: `stream` is live.
        let handle = try_c!(unsafe { Handle::borrow(stream) });
        if let Some(stream) = handle.shared.end(StreamState::Cancelled) {
            stream.cancel();
        }
        CELLSHM_OK
    })
}

/// Releases a stream, cancelling it if it has not ended. NULL is a no-op.
///
/// # Safety
/// `stream` is NULL or a stream not yet freed, used by no other thread; it must not be
/// used afterwards.
#[no_mangle]
pub unsafe extern "C" fn cellshm_stream_free(stream: *mut cellshm_stream) {
    // SAFETY: cellshm_stream_free's contract, which C keeps: `stream` is NULL or a stream not yet freed, used by no other thread; it must not be used afterwards.
    unsafe { free_with(stream, drop) }
}

/// The item's bytes (NULL for a NULL item), read in place (zero-copy). Valid until
/// cellshm_stream_item_free. Like a response's, they may lie in memory a hostile sender
/// can change while you read: copy what you validate.
///
/// # Safety
/// `item` is NULL or a live item.
#[no_mangle]
pub unsafe extern "C" fn cellshm_stream_item_data(item: *const cellshm_stream_item) -> *const u8 {
    boundary_value(std::ptr::null(), || {
        // SAFETY: cellshm_stream_item_data's contract, which C keeps: `item` is NULL or a live item.
        unsafe { item.as_ref() }.map_or(std::ptr::null(), |i| i.item.payload().as_ptr())
    })
}

/// The item's length in bytes (0 for a NULL item).
///
/// # Safety
/// `item` is NULL or a live item.
#[no_mangle]
pub unsafe extern "C" fn cellshm_stream_item_len(item: *const cellshm_stream_item) -> usize {
    // SAFETY: cellshm_stream_item_len's contract, which C keeps: `item` is NULL or a live item.
    boundary_value(0, || unsafe { item.as_ref() }.map_or(0, |i| i.item.len()))
}

/// Releases an item: its slot goes back and the sender gets credit. NULL is a no-op.
///
/// # Safety
/// `item` is NULL or an item not yet freed; it must not be used afterwards.
#[no_mangle]
pub unsafe extern "C" fn cellshm_stream_item_free(item: *mut cellshm_stream_item) {
    // SAFETY: cellshm_stream_item_free's contract, which C keeps: `item` is NULL or an item not yet freed; it must not be used afterwards.
    unsafe { free_with(item, drop) }
}

/// The handler's end of a stream; valid only during the stream handler call.
#[derive(Debug)]
pub struct cellshm_stream_call {
    pub(crate) _opaque: (),
}

pub(crate) struct StreamCallState<'a> {
    pub(crate) call: &'a mut StreamCall,
    pub(crate) error_message: Option<String>,
    /// Keeps the name cellshm_stream_call_caller hands out alive until the handler returns.
    pub(crate) caller_name: Option<CString>,
}

/// A stream handler. It runs on its own thread for each stream opened to it; `request`
/// (the opening message, `request_len` bytes) is valid until it returns. It sends items
/// with cellshm_stream_call_send, reads the caller's with cellshm_stream_call_next, and
/// returns CELLSHM_OK to end the stream (with the response set by
/// cellshm_stream_call_set_response), or another status to end it with that error.
pub type cellshm_stream_handler_fn = Option<
    unsafe extern "C" fn(
        userdata: *mut c_void,
        request: *const u8,
        request_len: usize,
        call: *mut cellshm_stream_call,
    ) -> u32,
>;

pub(crate) fn c_stream_handler(
    handler: unsafe extern "C" fn(*mut c_void, *const u8, usize, *mut cellshm_stream_call) -> u32,
    userdata: Arc<Registration>,
) -> impl Fn(&mut StreamCall) -> cellshm::Result<()> + Send + Sync + 'static {
    move |call| {
        let Some(running) = userdata.enter() else { return Err(ended()) };
        let request = call.request().to_vec();
        let mut state = StreamCallState { call, error_message: None, caller_name: None };
        let raw = (&mut state as *mut StreamCallState<'_>).cast::<cellshm_stream_call>();
        // SAFETY: registered by C for this purpose; `request` and `raw` stay valid for the
        // duration of the call.
        let code = unsafe { handler(running.userdata(), request.as_ptr(), request.len(), raw) };
        if code == CELLSHM_OK as u32 {
            return Ok(());
        }
        let name = Status::from_code(code).map_or_else(|| format!("status {code}"), |s| s.name().to_string());
        let message = state.error_message.take().unwrap_or_else(|| format!("stream handler returned {name}"));
        Err(Error::with_code(code, message))
    }
}

/// # Safety
/// `call` is NULL or the pointer passed to the running stream handler.
pub(crate) unsafe fn stream_call_state<'a>(
    call: *mut cellshm_stream_call,
) -> Result<&'a mut StreamCallState<'a>, cellshm_status> {
    // SAFETY: a non-NULL call is the StreamCallState the running handler was given.
    unsafe { call.cast::<StreamCallState<'a>>().as_mut() }.ok_or_else(|| invalid("call is NULL"))
}

/// How a method is called, as `cellshm.Introspect.methods` reports it and clients
/// generated from a `.proto` check at connect time. A stream method registered with
/// cellshm_hub_register_stream or cellshm_cell_register_stream is CELLSHM_METHOD_STREAM
/// (its direction undeclared: it passes the check for any stream kind).
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum cellshm_method_kind {
    /// One request, one response.
    CELLSHM_METHOD_UNARY = 0,
    /// A stream method that does not say which way its items flow.
    CELLSHM_METHOD_STREAM = 1,
    /// One request, a stream of responses.
    CELLSHM_METHOD_SERVER_STREAMING = 2,
    /// A stream of requests, one response.
    CELLSHM_METHOD_CLIENT_STREAMING = 3,
    /// Streams both ways.
    CELLSHM_METHOD_BIDI = 4,
}

/// A stream method's kind from the number C passed (INVALID_ARGUMENT for unary and
/// unknown numbers).
pub(crate) fn stream_kind(kind: u32) -> Result<cellshm::MethodKind, cellshm_status> {
    cellshm::MethodKind::stream_from_code(kind).map_err(invalid)
}

/// Serves the stream method "Service.method" to every cell of the hub. `userdata` is
/// passed to every call and released with `free_userdata` (may be NULL) exactly once.
///
/// # Safety
/// `hub` is live; `name` NUL-terminated; `handler` a valid function.
#[no_mangle]
pub unsafe extern "C" fn cellshm_hub_register_stream(
    hub: *const cellshm_hub,
    name: *const c_char,
    handler: cellshm_stream_handler_fn,
    userdata: *mut c_void,
    free_userdata: cellshm_free_fn,
) -> cellshm_status {
    // SAFETY: cellshm_hub_register_stream's contract, which C keeps: `hub` is live; `name` NUL-terminated; `handler` a valid function.
    unsafe {
        cellshm_hub_register_stream_kind(
            hub,
            name,
            cellshm_method_kind::CELLSHM_METHOD_STREAM as u32,
            handler,
            userdata,
            free_userdata,
        )
    }
}

/// cellshm_hub_register_stream that also says which way items flow: `kind` is a
/// cellshm_method_kind other than CELLSHM_METHOD_UNARY (else CELLSHM_INVALID_ARGUMENT;
/// `userdata` is released then too).
///
/// # Safety
/// `hub` is live; `name` NUL-terminated; `handler` a valid function.
#[no_mangle]
pub unsafe extern "C" fn cellshm_hub_register_stream_kind(
    hub: *const cellshm_hub,
    name: *const c_char,
    kind: u32,
    handler: cellshm_stream_handler_fn,
    userdata: *mut c_void,
    free_userdata: cellshm_free_fn,
) -> cellshm_status {
    let userdata = Registration::new(userdata, free_userdata);
    boundary("cellshm_hub_register_stream_kind", move || {
        // SAFETY: C passes a live hub and a NUL-terminated name, as cellshm_hub_register_stream_kind's
        // documentation requires.
        let (hub, name) = unsafe { (Handle::borrow(hub), c_str(name, "name")) };
        let (hub, name) = (try_c!(hub), try_c!(name));
        link_end::register_stream(&hub.hub, &hub.registrations, name, kind, handler, userdata)
    })
}

/// Serves the stream method "Service.method" (see cellshm_hub_register_stream).
///
/// # Safety
/// `cell` is live; `name` NUL-terminated; `handler` a valid function.
#[no_mangle]
pub unsafe extern "C" fn cellshm_cell_register_stream(
    cell: *const cellshm_cell,
    name: *const c_char,
    handler: cellshm_stream_handler_fn,
    userdata: *mut c_void,
    free_userdata: cellshm_free_fn,
) -> cellshm_status {
    // SAFETY: cellshm_cell_register_stream's contract, which C keeps: `cell` is live; `name` NUL-terminated; `handler` a valid function.
    unsafe {
        cellshm_cell_register_stream_kind(
            cell,
            name,
            cellshm_method_kind::CELLSHM_METHOD_STREAM as u32,
            handler,
            userdata,
            free_userdata,
        )
    }
}

/// cellshm_cell_register_stream that also says which way items flow (see
/// cellshm_hub_register_stream_kind).
///
/// # Safety
/// `cell` is live; `name` NUL-terminated; `handler` a valid function.
#[no_mangle]
pub unsafe extern "C" fn cellshm_cell_register_stream_kind(
    cell: *const cellshm_cell,
    name: *const c_char,
    kind: u32,
    handler: cellshm_stream_handler_fn,
    userdata: *mut c_void,
    free_userdata: cellshm_free_fn,
) -> cellshm_status {
    let userdata = Registration::new(userdata, free_userdata);
    boundary("cellshm_cell_register_stream_kind", move || {
        // SAFETY: C passes a live cell and a NUL-terminated name, as cellshm_cell_register_stream_kind's
        // documentation requires.
        let (cell, name) = unsafe { (Handle::borrow(cell), c_str(name, "name")) };
        let (cell, name) = (try_c!(cell), try_c!(name));
        link_end::register_stream(&cell.cell, &cell.registrations, name, kind, handler, userdata)
    })
}

/// Sends one item (a copy of `len` bytes at `data`) to the caller; waits while the
/// caller's window is full. CELLSHM_CANCELLED once the caller gave up: return then.
///
/// # Safety
/// `call` is the running stream handler's; `data` has `len` readable bytes.
#[no_mangle]
pub unsafe extern "C" fn cellshm_stream_call_send(
    call: *mut cellshm_stream_call,
    data: *const u8,
    len: usize,
) -> cellshm_status {
    boundary("cellshm_stream_call_send", || {
        // SAFETY: cellshm_stream_call_send's contract, which C keeps: `call` is the running stream handler's; `data` has `len` readable bytes.
        let (arg0, arg1) = unsafe { (stream_call_state(call), c_bytes(data, len, "data")) };
        let (state, data) = (try_c!(arg0), try_c!(arg1));
        try_cellshm!(state.call.send(data));
        CELLSHM_OK
    })
}

/// Waits for the caller's next item: on CELLSHM_OK `*out_item` is an item owned by the
/// handler (free it with cellshm_stream_item_free), or NULL once the caller closed its
/// sending side.
///
/// # Safety
/// `call` is the running stream handler's; `out_item` is writable.
#[no_mangle]
pub unsafe extern "C" fn cellshm_stream_call_next(
    call: *mut cellshm_stream_call,
    out_item: *mut *mut cellshm_stream_item,
) -> cellshm_status {
    boundary("cellshm_stream_call_next", || {
        // SAFETY: cellshm_stream_call_next's contract, which C keeps: `call` is the running stream handler's; `out_item` is writable.
        let (arg0, arg1) = unsafe { (Out::new(out_item, "out_item"), stream_call_state(call)) };
        let (out_item, state) = (try_c!(arg0), try_c!(arg1));
        deliver_item(state.call.recv(), out_item)
    })
}

/// 1 once the caller cancelled (or its deadline passed, or it went away), else 0 (also
/// for NULL).
///
/// # Safety
/// `call` is NULL or the running stream handler's.
#[no_mangle]
pub unsafe extern "C" fn cellshm_stream_call_cancelled(call: *mut cellshm_stream_call) -> c_int {
    boundary_value(0, || {
        // SAFETY: cellshm_stream_call_cancelled's contract, which C keeps: `call` is NULL or the running stream handler's.
        unsafe { stream_call_state(call) }.map_or(0, |state| c_int::from(state.call.is_cancelled()))
    })
}

/// Sets the response sent when the handler returns CELLSHM_OK (a copy of `len` bytes).
/// The caller reads it with cellshm_stream_finish (client streaming, and bidi callers
/// that finish); a caller that reads the stream to its end with cellshm_stream_next
/// (server streaming) gets NULL at the end and never sees a response, so a server-stream
/// handler need not set one.
///
/// # Safety
/// `call` is the running stream handler's; `data` has `len` readable bytes.
#[no_mangle]
pub unsafe extern "C" fn cellshm_stream_call_set_response(
    call: *mut cellshm_stream_call,
    data: *const u8,
    len: usize,
) -> cellshm_status {
    boundary("cellshm_stream_call_set_response", || {
        // SAFETY: cellshm_stream_call_set_response's contract, which C keeps: `call` is the running stream handler's; `data` has `len` readable bytes.
        let (arg0, arg1) = unsafe { (stream_call_state(call), c_bytes(data, len, "data")) };
        let (state, data) = (try_c!(arg0), try_c!(arg1));
        state.call.set_response(data);
        CELLSHM_OK
    })
}

/// Sets the message that goes with the error status the handler is about to return.
///
/// # Safety
/// `call` is the running stream handler's; `message` NUL-terminated.
#[no_mangle]
pub unsafe extern "C" fn cellshm_stream_call_error_message(
    call: *mut cellshm_stream_call,
    message: *const c_char,
) -> cellshm_status {
    boundary("cellshm_stream_call_error_message", || {
        // SAFETY: cellshm_stream_call_error_message's contract, which C keeps: `call` is the running stream handler's; `message` NUL-terminated.
        let (arg0, arg1) = unsafe { (stream_call_state(call), c_str(message, "message")) };
        let (state, message) = (try_c!(arg0), try_c!(arg1));
        state.error_message = Some(message.to_string());
        CELLSHM_OK
    })
}
