//! Library information: version, status names, the last error, method ids, the clock.

use crate::*;

/// The version of the header a program was compiled with; cellshm_version() is the
/// library's it runs against (the same major version is ABI-compatible: the shared
/// library's soname is libcellshm.so.MAJOR).
pub const CELLSHM_VERSION_MAJOR: u32 = 0;
/// See CELLSHM_VERSION_MAJOR.
pub const CELLSHM_VERSION_MINOR: u32 = 1;
/// See CELLSHM_VERSION_MAJOR.
pub const CELLSHM_VERSION_PATCH: u32 = 0;

/// The library's version, "MAJOR.MINOR.PATCH" (e.g. "0.1.0"), which a program may compare
/// with the CELLSHM_VERSION_* it was compiled with. Static storage; never NULL.
#[no_mangle]
pub extern "C" fn cellshm_version() -> *const c_char {
    concat!(env!("CARGO_PKG_VERSION"), "\0").as_ptr().cast()
}

/// The canonical name of a status code ("OK", "DEADLINE_EXCEEDED", "PEER_DEAD", ...), or
/// "UNRECOGNIZED_STATUS" for a number outside the table. Static storage; never NULL.
#[no_mangle]
pub extern "C" fn cellshm_status_str(status: u32) -> *const c_char {
    boundary_value(c"UNRECOGNIZED_STATUS".as_ptr(), || {
        static NAMES: std::sync::OnceLock<Vec<(u32, CString)>> = std::sync::OnceLock::new();
        let names = NAMES.get_or_init(|| {
            Status::ALL.iter().map(|s| (s.code(), CString::new(s.name()).unwrap_or_default())).collect()
        });
        names.iter().find(|(code, _)| *code == status).map_or(c"UNRECOGNIZED_STATUS".as_ptr(), |(_, n)| n.as_ptr())
    })
}

/// The status number of the most recent failed cellshm call on this thread (0 if none),
/// as it came: a number this library does not know (a newer peer's) is kept here, while
/// the call itself returned CELLSHM_UNKNOWN.
#[no_mangle]
pub extern "C" fn cellshm_last_error_code() -> u32 {
    boundary_value(0, || LAST_ERROR_CODE.with(std::cell::Cell::get))
}

/// The message of the most recent failed cellshm call on this thread ("" if none). The
/// pointer stays valid until the next failing cellshm call on the same thread.
#[no_mangle]
pub extern "C" fn cellshm_last_error_message() -> *const c_char {
    boundary_value(c"".as_ptr(), || LAST_ERROR.with(|e| e.borrow().as_ptr()))
}

/// The method id of `name` ("Service.method"): FNV-1a 64 of its bytes folded to 32 bits.
/// Returns 0 (the reserved id) if `name` is NULL or not UTF-8.
///
/// # Safety
/// `name` is NULL or a NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn cellshm_method_id(name: *const c_char) -> u32 {
    boundary_value(0, || {
        if name.is_null() {
            return 0;
        }
        // SAFETY: cellshm_method_id's contract, which C keeps: `name` is NULL (handled
        // above) or a NUL-terminated string.
        match unsafe { CStr::from_ptr(name) }.to_str() {
            Ok(s) => cellshm::method_id(s),
            Err(_) => 0,
        }
    })
}

/// CLOCK_MONOTONIC now, in ns: the clock of `cellshm_call_options.deadline_ns`.
#[no_mangle]
pub extern "C" fn cellshm_monotonic_now_ns() -> u64 {
    cellshm::monotonic_now_ns()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_headers_version_macros_are_the_crates_version() {
        let numbers = [CELLSHM_VERSION_MAJOR, CELLSHM_VERSION_MINOR, CELLSHM_VERSION_PATCH].map(|n| n.to_string());
        assert_eq!(numbers.join("."), env!("CARGO_PKG_VERSION"), "bump the CELLSHM_VERSION_* constants");
        // SAFETY: cellshm_version returns a static NUL-terminated string.
        let library = unsafe { std::ffi::CStr::from_ptr(cellshm_version()) };
        assert_eq!(library.to_str(), Ok(env!("CARGO_PKG_VERSION")));
    }
}
