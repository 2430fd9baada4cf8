//! Received payloads, read without Rust references into memory another process writes.
//!
//! A slot the peer sent us lives in the peer's memfd, which the peer keeps mapped
//! read-write: a hostile (or buggy) peer can change those bytes while we read them. A
//! `&[u8]` into them would let the compiler assume they do not change, which is
//! undefined behaviour the moment they do. [`SharedBytes`] is the only way the library
//! reads them: every access is a volatile load (rust-vmm's `vm-memory` does the same for
//! guest memory), so the worst a peer can do is change the bytes we copy, never their
//! bounds or our memory safety. Small copies go a machine word at a time (as fast as
//! memcpy up to a few hundred bytes); on x86-64 larger ones are one `rep movsb` in
//! inline assembly, which the compiler treats as opaque reads of the source, like a
//! volatile loop, and which runs at memcpy's speed (1 MiB: 43 vs 47 GB/s measured on a
//! 2-vCPU VM; the word loop manages 30).

use std::fmt;
use std::marker::PhantomData;

/// A read-only view of a received payload, possibly in memory the sender can still
/// write. It hands out copies, never references: read it with [`SharedBytes::get`],
/// [`SharedBytes::copy_to_slice`] or [`SharedBytes::to_vec`], and validate what you
/// copied, not what you read twice.
#[derive(Clone, Copy)]
pub struct SharedBytes<'a> {
    ptr: *const u8,
    len: usize,
    _payload: PhantomData<&'a [u8]>,
}

// SAFETY: a SharedBytes only reads (volatile loads) memory that stays mapped for 'a; it
// can be used from any thread, like the `&[u8]` it stands in for.
unsafe impl Send for SharedBytes<'_> {}
// SAFETY: as above.
unsafe impl Sync for SharedBytes<'_> {}

impl<'a> SharedBytes<'a> {
    /// A view of `len` bytes at `ptr`.
    ///
    /// # Safety
    /// `ptr..ptr+len` must stay mapped and readable for `'a`. Other processes may write
    /// it meanwhile; no thread of this process may write it through a Rust reference.
    pub(crate) unsafe fn from_raw(ptr: *const u8, len: usize) -> SharedBytes<'a> {
        SharedBytes { ptr, len, _payload: PhantomData }
    }

    /// A view of private bytes (inline payloads), so callers see one type.
    pub(crate) fn private(bytes: &'a [u8]) -> SharedBytes<'a> {
        SharedBytes { ptr: bytes.as_ptr(), len: bytes.len(), _payload: PhantomData }
    }

    /// The payload's length (fixed: it came from a validated private copy of the
    /// descriptor, not from shared memory).
    pub fn len(&self) -> usize {
        self.len
    }

    /// True for an empty payload.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The byte at `index`, as it is now.
    pub fn get(&self, index: usize) -> Option<u8> {
        // SAFETY: index < len, inside the mapping the constructor's contract keeps alive.
        (index < self.len).then(|| unsafe { self.ptr.add(index).read_volatile() })
    }

    /// Copies `dst.len()` bytes starting at `offset` into `dst`.
    ///
    /// # Panics
    /// If `offset + dst.len()` exceeds [`SharedBytes::len`], like `copy_from_slice`.
    pub fn copy_to_slice(&self, offset: usize, dst: &mut [u8]) {
        let end = offset.checked_add(dst.len()).filter(|&end| end <= self.len);
        assert!(end.is_some(), "copy of {} bytes at {offset} out of a {}-byte payload", dst.len(), self.len);
        // SAFETY: offset + dst.len() <= len was checked just above; `dst` is a unique
        // borrow of private memory.
        unsafe { volatile_copy(self.ptr.add(offset), dst.as_mut_ptr(), dst.len()) }
    }

    /// [`SharedBytes::copy_to_slice`] into memory that may be uninitialised (a buffer's
    /// spare capacity), saving the zeroing a `&mut [u8]` would need first; returns `dst`,
    /// now initialised.
    ///
    /// # Panics
    /// If `offset + dst.len()` exceeds [`SharedBytes::len`].
    pub fn copy_to_uninit<'d>(&self, offset: usize, dst: &'d mut [std::mem::MaybeUninit<u8>]) -> &'d mut [u8] {
        let end = offset.checked_add(dst.len()).filter(|&end| end <= self.len);
        assert!(end.is_some(), "copy of {} bytes at {offset} out of a {}-byte payload", dst.len(), self.len);
        // SAFETY: in range as checked; `dst` is a unique borrow of private memory, which
        // volatile_copy only writes.
        unsafe { volatile_copy(self.ptr.add(offset), dst.as_mut_ptr().cast::<u8>(), dst.len()) };
        // SAFETY: every byte of `dst` was written just above.
        unsafe { &mut *(dst as *mut [std::mem::MaybeUninit<u8>] as *mut [u8]) }
    }

    /// Copies the whole payload into a new vector.
    pub fn to_vec(&self) -> Vec<u8> {
        let mut out = vec![0u8; self.len];
        self.copy_to_slice(0, &mut out);
        out
    }

    /// The address of the first byte, for zero-copy consumers outside Rust (the C API
    /// and Python views hand it on, documenting that the bytes may change underneath).
    pub fn as_ptr(&self) -> *const u8 {
        self.ptr
    }

    /// Calls `f` with consecutive private copies of the payload, at most `chunk` bytes
    /// each: for checksums and parsers that should not copy the whole payload at once.
    pub fn for_each_chunk(&self, chunk: usize, mut f: impl FnMut(&[u8])) {
        let mut buffer = vec![0u8; chunk.clamp(1, self.len.max(1))];
        let mut offset = 0;
        while offset < self.len {
            let n = buffer.len().min(self.len - offset);
            self.copy_to_slice(offset, &mut buffer[..n]);
            f(&buffer[..n]);
            offset += n;
        }
    }
}

impl PartialEq<[u8]> for SharedBytes<'_> {
    fn eq(&self, other: &[u8]) -> bool {
        if self.len != other.len() {
            return false;
        }
        let mut buffer = [0u8; 256];
        other.chunks(buffer.len()).enumerate().all(|(i, expected)| {
            let got = &mut buffer[..expected.len()];
            self.copy_to_slice(i * 256, got);
            got == expected
        })
    }
}

impl fmt::Debug for SharedBytes<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedBytes").field("len", &self.len).finish()
    }
}

/// From this size on, x86-64 copies with `rep movsb` (below it the word loop is faster).
#[cfg(target_arch = "x86_64")]
const STRING_COPY_FROM: usize = 512;

/// Copies `len` bytes from `src` to `dst` without letting the compiler assume they stay
/// put: `rep movsb` for large copies on x86-64, volatile loads otherwise. `dst` may be
/// uninitialised: it is only written, through raw pointers.
///
/// # Safety
/// `src..src+len` must be mapped and readable; `dst..dst+len` writable and not
/// overlapping it.
unsafe fn volatile_copy(src: *const u8, dst: *mut u8, len: usize) {
    #[cfg(target_arch = "x86_64")]
    if len >= STRING_COPY_FROM {
        // SAFETY: the caller guarantees both ranges; the block reads only the source and
        // writes only the destination, clobbers rcx/rsi/rdi (declared) and leaves the
        // direction flag clear (the ABI guarantees it clear on entry, so movsb goes forward).
        unsafe {
            std::arch::asm!(
                "rep movsb",
                inout("rcx") len => _,
                inout("rsi") src => _,
                inout("rdi") dst => _,
                options(nostack, preserves_flags),
            );
        }
        return;
    }
    // SAFETY: as this function's.
    unsafe { volatile_word_copy(src, dst, len) }
}

/// Copies with volatile loads: bytes up to the first word boundary, then whole aligned
/// words, then the rest.
///
/// # Safety
/// As for [`volatile_copy`].
unsafe fn volatile_word_copy(src: *const u8, dst: *mut u8, len: usize) {
    const WORD: usize = std::mem::size_of::<u64>();
    let head = src.align_offset(WORD).min(len);
    for i in 0..head {
        // SAFETY: i < head <= len: inside both ranges.
        unsafe { dst.add(i).write(src.add(i).read_volatile()) };
    }
    let words = (len - head) / WORD;
    // SAFETY: src + head is word-aligned (align_offset) and in range.
    let word_src = unsafe { src.add(head) } as *const u64;
    for i in 0..words {
        // SAFETY: word i lies inside the source range (head + (i + 1) * WORD <= len) and
        // is aligned; the destination word may not be, hence the unaligned write.
        unsafe { dst.add(head + i * WORD).cast::<u64>().write_unaligned(word_src.add(i).read_volatile()) };
    }
    let tail = head + words * WORD;
    for i in tail..len {
        // SAFETY: i < len.
        unsafe { dst.add(i).write(src.add(i).read_volatile()) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_every_offset_and_length_exactly() {
        let source: Vec<u8> = (0..1100u32).map(|i| (i * 7 + 3) as u8).collect();
        for start in 0..9 {
            for len in [0, 1, 7, 8, 9, 15, 16, 17, 63, 64, 65, 200, 511, 512, 513, 1000] {
                let view = SharedBytes::private(&source[start..start + len]);
                assert_eq!(view.to_vec(), &source[start..start + len], "start {start} len {len}");
                assert!(view == source[start..start + len]);
                let mut spare = Vec::<u8>::with_capacity(len);
                let copied = view.copy_to_uninit(0, &mut spare.spare_capacity_mut()[..len]);
                assert_eq!(copied, &source[start..start + len], "uninit: start {start} len {len}");
                if len > 2 {
                    let mut part = vec![0u8; len - 2];
                    view.copy_to_slice(1, &mut part);
                    assert_eq!(part, &source[start + 1..start + len - 1]);
                }
            }
        }
    }

    #[test]
    fn get_and_chunks_see_the_bytes() {
        let source: Vec<u8> = (0..=255u8).collect();
        let view = SharedBytes::private(&source);
        assert_eq!((view.get(0), view.get(255), view.get(256)), (Some(0), Some(255), None));
        let mut seen = Vec::new();
        view.for_each_chunk(100, |c| seen.push(c.to_vec()));
        assert_eq!(seen.iter().map(Vec::len).collect::<Vec<_>>(), [100, 100, 56]);
        assert_eq!(seen.concat(), source);
        assert!(view != source[..255]);
        let mut other = source.clone();
        other[200] ^= 1;
        assert!(view != other[..]);
    }

    #[test]
    #[should_panic(expected = "out of a 4-byte payload")]
    fn a_copy_past_the_end_panics_before_reading() {
        SharedBytes::private(&[1, 2, 3, 4]).copy_to_slice(2, &mut [0u8; 3]);
    }
}
