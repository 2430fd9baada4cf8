//! User data C hands us with its free function, and the unary handler trampoline.

use crate::*;

/// Releases a userdata pointer. Called exactly once per registration, when the
/// registration ends (the owning object is freed) or at once if registration fails.
pub type cellshm_free_fn = Option<unsafe extern "C" fn(userdata: *mut c_void)>;

/// A method handler. `request` holds `request_len` bytes, valid until the handler
/// returns: read in place (zero-copy) when larger than 80 bytes, in memory the caller
/// can still write, so copy what you validate before trusting it. Answer with cellshm_reply_write or cellshm_reply_buffer
/// (no answer = empty reply) and return CELLSHM_OK; or return another status, with an
/// optional message set by cellshm_reply_error_message. Handlers of one object may run
/// concurrently on several threads.
pub type cellshm_handler_fn = Option<
    unsafe extern "C" fn(
        userdata: *mut c_void,
        request: *const u8,
        request_len: usize,
        reply: *mut cellshm_reply,
    ) -> u32,
>;

/// Called once when a peer dies, with the status (CELLSHM_PEER_DEAD,
/// CELLSHM_PROTOCOL_ERROR, CELLSHM_SESSION_CLOSED, ...) and a message valid during the call.
pub type cellshm_death_fn = Option<unsafe extern "C" fn(userdata: *mut c_void, status: u32, message: *const c_char)>;

/// C userdata with its optional free function, called exactly once on drop.
pub(crate) struct Userdata {
    pub(crate) ptr: *mut c_void,
    pub(crate) free: cellshm_free_fn,
}

// SAFETY: the C API documents that userdata passed with a handler or callback is used
// from several threads (handlers run concurrently); the caller takes on that contract.
unsafe impl Send for Userdata {}
// SAFETY: as above.
unsafe impl Sync for Userdata {}

impl Drop for Userdata {
    fn drop(&mut self) {
        if let Some(free) = self.free {
            // SAFETY: the C caller gave us this function for this pointer, to be called once.
            let _ = catch_unwind(AssertUnwindSafe(|| unsafe { free(self.ptr) }));
        }
    }
}

/// A C callback's userdata, shared by every closure that calls the callback, released
/// (its free function called) exactly once:
/// - by [`Registration::end`], which refuses new calls, waits for the calls running on
///   other threads to return and then releases it, so the C function that ended the
///   registration (a replacing setter, a `_free`) returns only after the release. A call
///   running on the ending thread itself (the callback replaced from inside itself)
///   releases it as it returns instead;
/// - or when the last closure holding it is dropped (a registration that failed, or one
///   nothing ended).
pub(crate) struct Registration {
    ptr: *mut c_void,
    free: cellshm_free_fn,
    state: std::sync::Mutex<RegistrationState>,
    idle: std::sync::Condvar,
}

#[derive(Default)]
struct RegistrationState {
    /// Calls of the callback running now, on any thread.
    running: usize,
    /// No new call may start.
    ended: bool,
    /// `end` waits for the running calls and releases the userdata itself once they
    /// returned (so that it returns after the free function did).
    ender_waiting: bool,
    /// The free function ran (or there is none to run any more).
    released: bool,
}

// SAFETY: the C API documents that userdata passed with a callback is used from several
// threads (handlers run concurrently); the caller takes on that contract. The state is
// behind a mutex.
unsafe impl Send for Registration {}
// SAFETY: as above.
unsafe impl Sync for Registration {}

thread_local! {
    /// The registrations whose callback this thread is running (by address), to tell
    /// an `end` from inside the callback from one on another thread.
    static RUNNING_HERE: RefCell<Vec<usize>> = const { RefCell::new(Vec::new()) };
}

impl Registration {
    pub(crate) fn new(ptr: *mut c_void, free: cellshm_free_fn) -> Arc<Registration> {
        Arc::new(Registration { ptr, free, state: Default::default(), idle: Default::default() })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, RegistrationState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn address(&self) -> usize {
        self as *const Registration as usize
    }

    /// Starts a call of the callback; `None` once the registration ended.
    pub(crate) fn enter(&self) -> Option<Entered<'_>> {
        let mut state = self.lock();
        if state.ended {
            return None;
        }
        state.running += 1;
        drop(state);
        RUNNING_HERE.with(|r| r.borrow_mut().push(self.address()));
        Some(Entered { registration: self })
    }

    /// Ends the registration: no new call starts, and the userdata is released once the
    /// calls on other threads have returned (see the type's documentation).
    pub(crate) fn end(&self) {
        let here = RUNNING_HERE.with(|r| r.borrow().iter().filter(|a| **a == self.address()).count());
        let mut state = self.lock();
        state.ended = true;
        state.ender_waiting = true;
        while state.running > here {
            state = self.idle.wait(state).unwrap_or_else(|p| p.into_inner());
        }
        state.ender_waiting = false;
        if state.running == 0 {
            self.release(state);
        }
    }

    /// Calls the free function once (outside the lock: it is the user's code).
    fn release(&self, mut state: std::sync::MutexGuard<'_, RegistrationState>) {
        if std::mem::replace(&mut state.released, true) {
            return;
        }
        drop(state);
        if let Some(free) = self.free {
            // SAFETY: C gave us this function for this pointer, to be called once; the
            // `released` flag makes this the only call, and no call of the callback runs.
            let _ = catch_unwind(AssertUnwindSafe(|| unsafe { free(self.ptr) }));
        }
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        let state = self.lock();
        self.release(state);
    }
}

/// A running call of a registered callback.
pub(crate) struct Entered<'a> {
    registration: &'a Registration,
}

impl Entered<'_> {
    /// The userdata to pass to the callback.
    pub(crate) fn userdata(&self) -> *mut c_void {
        self.registration.ptr
    }
}

impl Drop for Entered<'_> {
    fn drop(&mut self) {
        let registration = self.registration;
        RUNNING_HERE.with(|r| {
            let mut r = r.borrow_mut();
            if let Some(i) = r.iter().rposition(|a| *a == registration.address()) {
                r.remove(i);
            }
        });
        let mut state = registration.lock();
        state.running -= 1;
        registration.idle.notify_all();
        // The last call of a registration ended from inside one of its calls releases it;
        // one `end` waits for releases it itself.
        if state.running == 0 && state.ended && !state.ender_waiting {
            registration.release(state);
        }
    }
}

/// The registrations an object (a hub, a cell) ends when it is freed.
#[derive(Default)]
pub(crate) struct Registrations(std::sync::Mutex<Vec<Arc<Registration>>>);

impl Registrations {
    /// Keeps `registration` to end it with the object.
    pub(crate) fn keep(&self, registration: &Arc<Registration>) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).push(registration.clone());
    }

    /// Ends every one (after the object stopped calling them).
    pub(crate) fn end_all(&self) {
        let all = std::mem::take(&mut *self.0.lock().unwrap_or_else(|p| p.into_inner()));
        for registration in all {
            registration.end();
        }
    }
}

/// The one registration of a callback that can be replaced (an access policy).
#[derive(Default)]
pub(crate) struct CurrentRegistration(std::sync::Mutex<Option<Arc<Registration>>>);

impl CurrentRegistration {
    /// Makes `new` current and ends the one it replaces (call it once the object stopped
    /// calling the old one: the end waits for the calls still running).
    pub(crate) fn replace(&self, new: Option<Arc<Registration>>) {
        let old = std::mem::replace(&mut *self.0.lock().unwrap_or_else(|p| p.into_inner()), new);
        if let Some(old) = old {
            old.end();
        }
    }
}

impl std::fmt::Debug for CurrentRegistration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CurrentRegistration")
    }
}

impl std::fmt::Debug for Registrations {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Registrations")
    }
}

/// The reply being built by a handler; valid only during the handler call.
#[derive(Debug)]
pub struct cellshm_reply {
    pub(crate) _opaque: (),
}

pub(crate) struct ReplyState<'a, 'b> {
    pub(crate) call: &'a mut Call<'b>,
    pub(crate) error_message: Option<String>,
    /// Keeps the name cellshm_reply_caller hands out alive until the handler returns.
    pub(crate) caller_name: Option<CString>,
}

/// The error a callback whose registration ended answers with.
pub(crate) fn ended() -> Error {
    Error::new(Status::Unavailable, "its handler was unregistered: the hub or cell that served it was freed")
}

pub(crate) fn c_handler(
    handler: unsafe extern "C" fn(*mut c_void, *const u8, usize, *mut cellshm_reply) -> u32,
    userdata: Arc<Registration>,
) -> impl Fn(&mut Call<'_>) -> cellshm::Result<()> + Send + Sync + 'static {
    move |call| {
        let Some(running) = userdata.enter() else { return Err(ended()) };
        // Zero-copy: C reads the request where it lies (no Rust reference is made of it).
        let request = call.request();
        let mut state = ReplyState { call, error_message: None, caller_name: None };
        let reply = (&mut state as *mut ReplyState<'_, '_>).cast::<cellshm_reply>();
        // SAFETY: the handler was registered by C for this purpose; `request` stays valid
        // and `reply` points to live state for the duration of the call.
        let code = unsafe { handler(running.userdata(), request.as_ptr(), request.len(), reply) };
        if code == CELLSHM_OK as u32 {
            return Ok(());
        }
        let name = Status::from_code(code).map_or_else(|| format!("status {code}"), |s| s.name().to_string());
        let message = state.error_message.take().unwrap_or_else(|| format!("handler returned {name}"));
        Err(Error::with_code(code, message))
    }
}

/// # Safety
/// `reply` is NULL or the pointer passed to the running handler.
pub(crate) unsafe fn reply_state<'a>(reply: *mut cellshm_reply) -> Result<&'a mut ReplyState<'a, 'a>, cellshm_status> {
    // SAFETY: a non-NULL reply is the ReplyState the running handler was given.
    unsafe { reply.cast::<ReplyState<'a, 'a>>().as_mut() }.ok_or_else(|| invalid("reply is NULL"))
}

/// Sets the reply to a copy of `len` bytes at `data`.
///
/// # Safety
/// `reply` is the handler's reply; `data` points to `len` readable bytes.
#[no_mangle]
pub unsafe extern "C" fn cellshm_reply_write(reply: *mut cellshm_reply, data: *const u8, len: usize) -> cellshm_status {
    boundary("cellshm_reply_write", || {
        // SAFETY: cellshm_reply_write's contract, which C keeps: `reply` is the handler's reply; `data` points to `len` readable bytes.
        let (arg0, arg1) = unsafe { (reply_state(reply), c_bytes(data, len, "data")) };
        let (state, bytes) = (try_c!(arg0), try_c!(arg1));
        try_cellshm!(state.call.reply(bytes));
        CELLSHM_OK
    })
}

/// In-place reply: sets `*out_buffer` to `max_len` writable bytes (in shared memory when
/// larger than 80) that become the reply, valid until the handler returns. Call
/// cellshm_reply_set_len afterwards if fewer bytes were written.
///
/// # Safety
/// `reply` is the handler's reply; `out_buffer` points to writable storage.
#[no_mangle]
pub unsafe extern "C" fn cellshm_reply_buffer(
    reply: *mut cellshm_reply,
    max_len: usize,
    out_buffer: *mut *mut u8,
) -> cellshm_status {
    boundary("cellshm_reply_buffer", || {
        // SAFETY: cellshm_reply_buffer's contract, which C keeps: `reply` is the handler's reply; `out_buffer` points to writable storage.
        let (arg0, arg1) = unsafe { (reply_state(reply), Out::new(out_buffer, "out_buffer")) };
        let (state, out_buffer) = (try_c!(arg0), try_c!(arg1));
        let buffer = try_cellshm!(state.call.reply_buffer(max_len));
        out_buffer.write(buffer.as_mut_ptr())
    })
}

/// Sets how many bytes of the cellshm_reply_buffer buffer are the reply.
///
/// # Safety
/// `reply` is the handler's reply.
#[no_mangle]
pub unsafe extern "C" fn cellshm_reply_set_len(reply: *mut cellshm_reply, len: usize) -> cellshm_status {
    boundary("cellshm_reply_set_len", || {
        // SAFETY: cellshm_reply_set_len's contract, which C keeps: `reply` is the handler's reply.
        let state = try_c!(unsafe { reply_state(reply) });
        try_cellshm!(state.call.set_reply_len(len));
        CELLSHM_OK
    })
}

/// Sets the message sent with the error status the handler is about to return.
///
/// # Safety
/// `reply` is the handler's reply; `message` is a NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn cellshm_reply_error_message(
    reply: *mut cellshm_reply,
    message: *const c_char,
) -> cellshm_status {
    boundary("cellshm_reply_error_message", || {
        // SAFETY: cellshm_reply_error_message's contract, which C keeps: `reply` is the handler's reply; `message` is a NUL-terminated string.
        let (arg0, arg1) = unsafe { (reply_state(reply), c_str(message, "message")) };
        let (state, message) = (try_c!(arg0), try_c!(arg1));
        state.error_message = Some(message.to_string());
        CELLSHM_OK
    })
}

/// The caller's absolute deadline (CLOCK_MONOTONIC ns) of the request being handled,
/// 0 if none; pass it on in cellshm_call_options.deadline_ns to propagate it.
///
/// # Safety
/// `reply` is NULL or the handler's reply.
#[no_mangle]
pub unsafe extern "C" fn cellshm_reply_deadline_ns(reply: *mut cellshm_reply) -> u64 {
    boundary_value(0, || {
        // SAFETY: cellshm_reply_deadline_ns's contract, which C keeps: `reply` is NULL or the handler's reply.
        unsafe { reply.cast::<ReplyState<'_, '_>>().as_ref() }.map_or(0, |s| s.call.deadline_ns())
    })
}

/// 1 once the caller cancelled the request being handled (or its deadline passed, or it
/// went away), else 0 (also for NULL). A long handler polls this and returns early.
///
/// # Safety
/// `reply` is NULL or the handler's reply.
#[no_mangle]
pub unsafe extern "C" fn cellshm_reply_cancelled(reply: *mut cellshm_reply) -> c_int {
    boundary_value(0, || {
        // SAFETY: cellshm_reply_cancelled's contract, which C keeps: `reply` is NULL or the handler's reply.
        unsafe { reply.cast::<ReplyState<'_, '_>>().as_ref() }.map_or(0, |s| c_int::from(s.call.is_cancelled()))
    })
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    static RELEASED: AtomicUsize = AtomicUsize::new(0);

    unsafe extern "C" fn count_release(_: *mut c_void) {
        RELEASED.fetch_add(1, Ordering::SeqCst);
    }

    /// The cases a C program meets: ended with no call running, from inside its own
    /// call, while another thread's call runs, and never ended (dropped). Released once
    /// each, and never while a call of it runs.
    #[test]
    fn userdata_is_released_once_when_no_call_of_it_runs_any_more() {
        let before = RELEASED.load(Ordering::SeqCst);
        let idle = Registration::new(std::ptr::null_mut(), Some(count_release));
        idle.end();
        assert_eq!(RELEASED.load(Ordering::SeqCst), before + 1, "ended while idle: at once");
        assert!(idle.enter().is_none(), "no call starts after the end");
        drop(idle);
        assert_eq!(RELEASED.load(Ordering::SeqCst), before + 1, "once");

        // Ended from inside its own call: released as that call returns.
        let inside = Registration::new(std::ptr::null_mut(), Some(count_release));
        let call = inside.enter().unwrap();
        inside.end();
        assert_eq!(RELEASED.load(Ordering::SeqCst), before + 1, "not while its call runs");
        drop(call);
        assert_eq!(RELEASED.load(Ordering::SeqCst), before + 2);

        // Ended while another thread's call runs: end returns after that call and the release.
        let shared = Registration::new(std::ptr::null_mut(), Some(count_release));
        let (entered_tx, entered_rx) = std::sync::mpsc::channel();
        let (leave_tx, leave_rx) = std::sync::mpsc::channel::<()>();
        let other = {
            let shared = shared.clone();
            std::thread::spawn(move || {
                let call = shared.enter().unwrap();
                entered_tx.send(()).unwrap();
                leave_rx.recv().unwrap();
                assert_eq!(RELEASED.load(Ordering::SeqCst), before + 2, "released under a running call");
                drop(call);
            })
        };
        entered_rx.recv().unwrap();
        let ender = {
            let shared = shared.clone();
            std::thread::spawn(move || shared.end())
        };
        leave_tx.send(()).unwrap();
        ender.join().unwrap();
        assert_eq!(RELEASED.load(Ordering::SeqCst), before + 3, "end returned after the release");
        other.join().unwrap();

        // Never ended: released with its last holder.
        drop(Registration::new(std::ptr::null_mut(), Some(count_release)));
        assert_eq!(RELEASED.load(Ordering::SeqCst), before + 4);
    }
}

/// A C function pointer trusted once, where C registered it: the export's contract says
/// it is a valid function of its type for as long as its registration lasts. Calling it
/// is then safe code: each `call` passes pointers to values that live through the call.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Trusted<F>(F);

impl<F> Trusted<F> {
    /// `f` as registered (INVALID_ARGUMENT naming `what` if it is NULL).
    ///
    /// # Safety
    /// A non-NULL `f` is a valid function of its type for as long as the returned value
    /// (or a copy of it) is used.
    pub(crate) unsafe fn new(f: Option<F>, what: &str) -> Result<Trusted<F>, cellshm_status> {
        f.map(Trusted).ok_or_else(|| invalid(format!("{what} is NULL")))
    }
}

type DeathFn = unsafe extern "C" fn(*mut c_void, u32, *const c_char);
type PolicyFn = unsafe extern "C" fn(*mut c_void, *const crate::cellshm_caller, *const c_char) -> bool;
type EventFn = unsafe extern "C" fn(*mut c_void, *const c_char, u32, *const c_char);

impl Trusted<DeathFn> {
    pub(crate) fn call(self, userdata: *mut c_void, status: u32, message: &CStr) {
        // SAFETY: the function was trusted where it was registered; `message` lives
        // through the call; `userdata` is what C registered with it.
        unsafe { (self.0)(userdata, status, message.as_ptr()) }
    }
}

impl Trusted<PolicyFn> {
    pub(crate) fn call(self, userdata: *mut c_void, caller: &crate::cellshm_caller, method: &CStr) -> bool {
        // SAFETY: as for the death callback; `caller` (and the name it points to) and
        // `method` live through the call.
        unsafe { (self.0)(userdata, caller, method.as_ptr()) }
    }
}

impl Trusted<EventFn> {
    pub(crate) fn call(self, userdata: *mut c_void, name: &CStr, status: u32, reason: &CStr) {
        // SAFETY: as for the death callback; `name` and `reason` live through the call.
        unsafe { (self.0)(userdata, name.as_ptr(), status, reason.as_ptr()) }
    }
}
