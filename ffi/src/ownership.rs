//! Who owns what crosses the C boundary, in types (rustls-ffi's `Castable`): a handle
//! C borrows ([`Handle::borrow`]), a handle C owns until its `_free`
//! ([`OwnedHandle::into_raw`] and [`OwnedHandle::from_raw`]), an out-parameter written
//! only on success ([`Out`]). Each export turns its raw arguments into these in one
//! `unsafe` block whose `// SAFETY:` states the export's own contract; everything after
//! that is safe code.

use std::mem::MaybeUninit;

use crate::{cellshm_status, invalid, CELLSHM_OK};

/// A type C holds by pointer (an opaque handle).
pub(crate) trait Handle: Sized {
    /// How messages name it ("peer", "hub", ...).
    const WHAT: &'static str;

    /// Borrows the handle C passed: INVALID_ARGUMENT naming it for NULL.
    ///
    /// # Safety
    /// `ptr` is NULL or a live handle of this type that this library handed out, not
    /// freed before, and not freed while the borrow lasts.
    unsafe fn borrow<'a>(ptr: *const Self) -> Result<&'a Self, cellshm_status> {
        // SAFETY: a non-NULL `ptr` is live and of this type, by the contract above.
        unsafe { ptr.as_ref() }.ok_or_else(|| invalid(format!("{} is NULL", Self::WHAT)))
    }
}

/// A handle C owns alone from its `_new` (or an out-parameter) until its `_free`.
pub(crate) trait OwnedHandle: Handle {
    /// Hands `self` to C.
    fn into_raw(self) -> *mut Self {
        Box::into_raw(Box::new(self))
    }

    /// Takes back what [`OwnedHandle::into_raw`] handed out (`None` for NULL).
    ///
    /// # Safety
    /// `ptr` is NULL or from `into_raw` of this type, not taken back before, and no
    /// other thread uses it any more.
    unsafe fn from_raw(ptr: *mut Self) -> Option<Box<Self>> {
        // SAFETY: by the contract above, a non-NULL `ptr` came from Box::into_raw of a
        // `Self` and this is the one place that turns it back into its box.
        (!ptr.is_null()).then(|| unsafe { Box::from_raw(ptr) })
    }
}

/// An out-parameter C passed: checked non-NULL up front, written only on success.
pub(crate) struct Out<'a, T>(&'a mut MaybeUninit<T>);

impl<'a, T> Out<'a, T> {
    /// Checks `ptr` (INVALID_ARGUMENT naming `what` for NULL).
    ///
    /// # Safety
    /// `ptr` is NULL or valid and aligned for writes of a `T` for `'a`.
    pub(crate) unsafe fn new(ptr: *mut T, what: &'static str) -> Result<Out<'a, T>, cellshm_status> {
        // SAFETY: a non-NULL `ptr` is writable and aligned for a `T` for `'a`, by the
        // contract above; MaybeUninit makes no claim about what it holds now.
        match unsafe { ptr.cast::<MaybeUninit<T>>().as_mut() } {
            Some(slot) => Ok(Out(slot)),
            None => Err(invalid(format!("{what} is NULL"))),
        }
    }

    /// `None` for NULL: an out-parameter C may leave out.
    ///
    /// # Safety
    /// As for [`Out::new`].
    pub(crate) unsafe fn optional(ptr: *mut T, what: &'static str) -> Option<Out<'a, T>> {
        // SAFETY: as above.
        unsafe { Out::new(ptr, what) }.ok()
    }

    /// Writes the result; the call succeeded.
    pub(crate) fn write(self, value: T) -> cellshm_status {
        self.0.write(value);
        CELLSHM_OK
    }
}

impl<T: OwnedHandle> Out<'_, *mut T> {
    /// Hands `value` to C through the out-parameter: C owns it from now on.
    pub(crate) fn hand_over(self, value: T) -> cellshm_status {
        self.write(value.into_raw())
    }
}

/// The handles of the C API: how messages name them, and which ones C owns (freed by
/// their `_free`) rather than only borrows (a handler's reply and stream call live as
/// long as the handler runs).
macro_rules! handles {
    (owned $ty:ident $what:literal) => {
        handles!($ty $what);
        impl OwnedHandle for crate::$ty {}
    };
    ($ty:ident $what:literal) => {
        impl Handle for crate::$ty {
            const WHAT: &'static str = $what;
        }
    };
}

handles!(owned cellshm_hub "hub");
handles!(owned cellshm_peer "peer");
handles!(owned cellshm_cell "cell");
handles!(owned cellshm_stream "stream");
handles!(owned cellshm_stream_item "item");
handles!(owned cellshm_call "call");
handles!(owned cellshm_response "response");
handles!(owned cellshm_supervisor "supervisor");
handles!(owned cellshm_subscription "subscription");
handles!(owned cellshm_method_list "list");
handles!(owned cellshm_remote "remote");
handles!(owned cellshm_publisher "publisher");
handles!(owned cellshm_subscriber "subscriber");
handles!(owned cellshm_loan "loan");
handles!(owned cellshm_sample "sample");
handles!(cellshm_stream_call "call");
handles!(cellshm_reply "reply");

/// The body of a `_free`: takes `ptr` back (NULL: nothing to do) and ends it with `end`
/// (a drop, or a teardown in a set order), never letting a panic unwind into C.
///
/// # Safety
/// As for [`OwnedHandle::from_raw`].
pub(crate) unsafe fn free_with<T: OwnedHandle>(ptr: *mut T, end: impl FnOnce(Box<T>)) {
    // SAFETY: as the contract above says.
    if let Some(boxed) = unsafe { T::from_raw(ptr) } {
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| end(boxed)));
    }
}
