//! Sealed memfds: creating, sealing, reopening read-only, checking and mapping them.
//!
//! The kernel is what enforces "one writer per byte" between processes: the memfd a
//! side must only read is handed over as a read-only descriptor (so `write`,
//! `ftruncate`, `fallocate` and writable shared mappings fail with EBADF/EACCES) and is
//! sealed against growing, shrinking and writing (`F_SEAL_FUTURE_WRITE` also stops
//! `mprotect` from making a read-only mapping writable), so whatever a peer does with
//! its descriptors, no page we mapped can disappear (no SIGBUS) or change under a
//! writer we did not expect.

use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::sync::Arc;

use memmap2::{MmapOptions, MmapRaw};

use crate::error::{Error, Result};
use crate::sys::cvt;

/// Seals of every memfd of a link: its size is fixed and the seals themselves too.
pub(crate) const SIZE_SEALS: i32 = libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_SEAL;
/// Seals of the memfd the other side may only read.
pub(crate) const READ_ONLY_SEALS: i32 = SIZE_SEALS | libc::F_SEAL_FUTURE_WRITE;

/// A new memfd of `size` bytes (zeroed), close-on-exec and sealable.
pub(crate) fn create(name: &str, size: u64) -> Result<File> {
    let cname = CString::new(name.replace('\0', "?")).unwrap_or_default();
    // SAFETY: `cname` is a NUL-terminated string that outlives the call.
    let fd = unsafe { libc::memfd_create(cname.as_ptr(), libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING) };
    if fd < 0 {
        return Err(Error::system(format!("memfd_create({name})"), io::Error::last_os_error()));
    }
    // SAFETY: memfd_create returned a new descriptor that nobody else owns.
    let file = File::from(unsafe { OwnedFd::from_raw_fd(fd) });
    file.set_len(size).map_err(|e| Error::system(format!("sizing memfd {name} to {size} bytes"), e))?;
    Ok(file)
}

/// Adds `seals` to a memfd.
pub(crate) fn seal(file: &File, seals: i32) -> Result<()> {
    // SAFETY: fcntl on a descriptor we own; F_ADD_SEALS takes an int.
    cvt(unsafe { libc::fcntl(file.as_raw_fd(), libc::F_ADD_SEALS, seals) })
        .map(drop)
        .map_err(|e| Error::system("sealing a memfd (needs Linux 5.1 or later for F_SEAL_FUTURE_WRITE)", e))
}

/// The seals a memfd carries.
pub(crate) fn seals(file: &impl AsRawFd) -> io::Result<i32> {
    // SAFETY: fcntl on an open descriptor; F_GET_SEALS takes no argument.
    cvt(unsafe { libc::fcntl(file.as_raw_fd(), libc::F_GET_SEALS) })
}

/// A second, read-only open file description of the same memfd: the only kind of
/// descriptor we ever hand to a process that must not write it.
pub(crate) fn reopen_read_only(file: &File) -> Result<File> {
    let path = format!("/proc/self/fd/{}", file.as_raw_fd());
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_CLOEXEC)
        .open(&path)
        .map_err(|e| Error::system(format!("reopening a memfd read-only through {path}"), e))
}

/// Checks a memfd received from another process: it has at least `required` seals and
/// exactly `size` bytes, so mapping `size` bytes can never fault.
pub(crate) fn check_received(file: &File, size: u64, required: i32, what: &str) -> Result<()> {
    let bad = |m: String| Error::new(crate::Status::ProtocolError, format!("{what}: {m}"));
    let actual = seals(file).map_err(|e| bad(format!("not a sealable memfd ({e})")))?;
    if actual & required != required {
        return Err(bad(format!("its seals are {actual:#x}, {required:#x} are required")));
    }
    let len = file.metadata().map_err(|e| Error::system(format!("stat of {what}"), e))?.len();
    if len != size {
        return Err(bad(format!("it is {len} bytes, the geometry needs {size}")));
    }
    Ok(())
}

/// Maps all of `file` (`len` bytes), shared.
pub(crate) fn map(file: &File, len: u64, writable: bool, what: &str) -> Result<Arc<MmapRaw>> {
    let len = usize::try_from(len)
        .map_err(|_| Error::new(crate::Status::InvalidArgument, format!("{what}: size {len} too large")))?;
    let mut opts = MmapOptions::new();
    opts.len(len);
    let map = if writable { opts.map_raw(file) } else { opts.map_raw_read_only(file) };
    map.map(Arc::new).map_err(|e| Error::system(format!("mapping {what}"), e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::FileExt;

    #[test]
    fn a_read_only_sealed_memfd_cannot_be_written_resized_or_mapped_writable() {
        let file = create("cellshm-unit", 8192).unwrap();
        let writable = map(&file, 8192, true, "test").unwrap();
        seal(&file, READ_ONLY_SEALS).unwrap();
        let ro = reopen_read_only(&file).unwrap();
        check_received(&ro, 8192, READ_ONLY_SEALS, "test").unwrap();
        assert!(check_received(&ro, 4096, READ_ONLY_SEALS, "test").unwrap_err().message().contains("8192 bytes"));
        // The writer's mapping made before sealing stays writable.
        // SAFETY: in bounds of a live mapping we own.
        unsafe { *writable.as_mut_ptr() = 7 };
        assert!(ro.write_at(b"x", 0).is_err());
        assert!(file.write_at(b"x", 0).is_err(), "FUTURE_WRITE stops write() on any descriptor");
        assert!(ro.set_len(0).is_err());
        assert!(file.set_len(0).is_err() && file.set_len(1 << 20).is_err(), "SHRINK and GROW");
        // SAFETY: fallocate on a descriptor we own.
        assert!(unsafe { libc::fallocate(ro.as_raw_fd(), 0, 0, 4096) } != 0);
        assert!(map(&ro, 8192, true, "test").is_err());
        assert!(map(&file, 8192, true, "test").is_err(), "no new writable mapping even through the rw fd");
        let read = map(&ro, 8192, false, "test").unwrap();
        // SAFETY: mprotect on a mapping we own; it must fail.
        let rc = unsafe { libc::mprotect(read.as_mut_ptr().cast(), 4096, libc::PROT_READ | libc::PROT_WRITE) };
        assert_ne!(rc, 0, "a read-only mapping cannot be made writable");
        // SAFETY: in bounds of a live mapping.
        assert_eq!(unsafe { *read.as_ptr() }, 7);
        assert!(seal(&file, libc::F_SEAL_WRITE).is_err(), "F_SEAL_SEAL");
    }
}
