//! One body per link-end operation for every C export that calls or registers: the
//! `cellshm_peer_*`, `cellshm_cell_*`, `cellshm_supervisor_call` and `cellshm_hub_*`
//! exports check their handle and hand the rest here, so a call means the same thing
//! whichever end C makes it from (core's `cellshm::LinkEnd` and `cellshm::Registry`).

use cellshm::{LinkEnd, Registry};

use crate::*;

/// What every call-like export takes after its handle, checked.
pub(crate) struct CRequest<'a> {
    method: &'a str,
    payload: &'a [u8],
    options: CallOptions,
}

impl<'a> CRequest<'a> {
    /// Checks a call's arguments as C passed them (`options` NULL: the defaults).
    ///
    /// # Safety
    /// `method` is NULL or NUL-terminated; `request` points to `request_len` readable
    /// bytes (or is NULL with 0); `options` is NULL or a cellshm_call_options with its
    /// `size` set; all outlive `'a`.
    pub(crate) unsafe fn from_c(
        method: *const c_char,
        request: *const u8,
        request_len: usize,
        options: *const cellshm_call_options,
    ) -> Result<CRequest<'a>, cellshm_status> {
        // SAFETY: the pointers are as `method_and_request` and `call_options` need, by
        // this function's own contract, which every caller states in its documentation.
        let (method, payload) = unsafe { method_and_request(method, request, request_len) }?;
        // SAFETY: as above.
        let options = unsafe { call_options(options) }?;
        Ok(CRequest { method, payload, options })
    }
}

/// A unary call that waits; `*out_response` on success.
pub(crate) fn call(
    end: &impl LinkEnd,
    request: CRequest<'_>,
    out_response: Out<'_, *mut cellshm_response>,
) -> cellshm_status {
    deliver_response(end.call(request.method, request.payload, &request.options), out_response)
}

/// A notification (no response).
pub(crate) fn notify(end: &impl LinkEnd, request: CRequest<'_>) -> cellshm_status {
    try_cellshm!(end.notify(request.method, request.payload, &request.options));
    CELLSHM_OK
}

/// A unary call started without waiting; `*out_call` on success.
pub(crate) fn call_start(
    end: &impl LinkEnd,
    request: CRequest<'_>,
    out_call: Out<'_, *mut cellshm_call>,
) -> cellshm_status {
    start_call(|done| end.call_start(request.method, request.payload, &request.options, done), out_call)
}

/// A stream opened with the request as its opening message; `*out_stream` on success.
pub(crate) fn open_stream(
    end: &impl LinkEnd,
    request: CRequest<'_>,
    out_stream: Out<'_, *mut cellshm_stream>,
) -> cellshm_status {
    deliver_stream(end.open_stream(request.method, request.payload, &request.options), out_stream)
}

/// Serves a unary method with a C handler; `userdata` lives as long as `registrations`
/// (released at once if this fails).
pub(crate) fn register(
    registry: &impl Registry,
    registrations: &Registrations,
    name: &str,
    handler: cellshm_handler_fn,
    userdata: Arc<Registration>,
) -> cellshm_status {
    let Some(handler) = handler else { return invalid("handler is NULL") };
    try_cellshm!(registry.method(name, c_handler(handler, userdata.clone())));
    registrations.keep(&userdata);
    CELLSHM_OK
}

/// Serves a stream method of `kind` (a cellshm_method_kind number) with a C handler.
pub(crate) fn register_stream(
    registry: &impl Registry,
    registrations: &Registrations,
    name: &str,
    kind: u32,
    handler: cellshm_stream_handler_fn,
    userdata: Arc<Registration>,
) -> cellshm_status {
    let kind = try_c!(stream_kind(kind));
    let Some(handler) = handler else { return invalid("handler is NULL") };
    try_cellshm!(registry.stream_method_as(name, kind, c_stream_handler(handler, userdata.clone())));
    registrations.keep(&userdata);
    CELLSHM_OK
}
