//! Responses: owned by C until cellshm_response_free, recycled per thread.

use crate::*;

/// A response payload, read in place from shared memory. Owned by the caller; release
/// it with cellshm_response_free (that hands the slot back to the sender).
#[derive(Debug)]
pub struct cellshm_response {
    /// `None` only while the box waits in a thread's spare slot for reuse.
    pub(crate) response: Option<Response>,
}

/// The response bytes (NULL for a NULL response), read in place (zero-copy). Valid
/// until cellshm_response_free. Payloads larger than 80 bytes lie in the sender's shared
/// memory: a well-behaved sender never writes them before the free, a hostile one can
/// change them while you read, so copy what you validate before trusting it.
///
/// # Safety
/// `response` is NULL or a live response.
#[no_mangle]
pub unsafe extern "C" fn cellshm_response_data(response: *const cellshm_response) -> *const u8 {
    boundary_value(std::ptr::null(), || {
        // SAFETY: cellshm_response_data's contract, which C keeps: `response` is NULL or a live response.
        let response = unsafe { response.as_ref() };
        response.and_then(|r| r.response.as_ref()).map_or(std::ptr::null(), |r| r.payload().as_ptr())
    })
}

/// The response length in bytes (0 for a NULL response).
///
/// # Safety
/// `response` is NULL or a live response.
#[no_mangle]
pub unsafe extern "C" fn cellshm_response_len(response: *const cellshm_response) -> usize {
    // SAFETY: cellshm_response_len's contract, which C keeps: `response` is NULL or a live response.
    boundary_value(0, || unsafe { response.as_ref() }.and_then(|r| r.response.as_ref()).map_or(0, Response::len))
}

/// Releases a response. NULL is a no-op.
///
/// # Safety
/// `response` is NULL or a response not yet freed; it must not be used afterwards.
#[no_mangle]
pub unsafe extern "C" fn cellshm_response_free(response: *mut cellshm_response) {
    // SAFETY: cellshm_response_free's contract, which C keeps: `response` is NULL or a response not yet freed; it must not be used afterwards.
    unsafe { free_with(response, recycle) }
}

thread_local! {
    /// One spare response box per thread: a call loop then allocates nothing per call
    /// (this keeps the C API within a few percent of the Rust API on the hot path).
    static SPARE_RESPONSE: RefCell<Option<Box<cellshm_response>>> = const { RefCell::new(None) };
}

pub(crate) fn recycle(mut boxed: Box<cellshm_response>) {
    // Dropping the response hands its slot back before the box is kept for reuse.
    boxed.response = None;
    let _ = SPARE_RESPONSE.try_with(|spare| {
        let mut spare = spare.borrow_mut();
        if spare.is_none() {
            *spare = Some(boxed);
        }
    });
}

pub(crate) fn deliver_response(
    result: cellshm::Result<Response>,
    out: Out<'_, *mut cellshm_response>,
) -> cellshm_status {
    let response = try_cellshm!(result);
    let spare = SPARE_RESPONSE.try_with(|spare| spare.borrow_mut().take()).ok().flatten();
    let mut boxed = spare.unwrap_or_else(|| Box::new(cellshm_response { response: None }));
    boxed.response = Some(response);
    // A spare box is reused (it already holds a response's place): handed over as is.
    out.write(Box::into_raw(boxed))
}
