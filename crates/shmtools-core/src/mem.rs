//! Bounds-checked access to a mapped region. Nothing outside this module
//! turns an offset into a pointer: every offset read from shared memory (and
//! so possibly written by a faulty or hostile process) passes through these
//! checks, and every access is atomic or a byte copy, never a Rust reference
//! to plain data that another process could change underneath it.

use std::marker::PhantomData;
use std::sync::atomic::{AtomicU32, AtomicU64};

use crate::error::{Error, Result};

/// A view of `len` bytes of shared memory, valid while the mapping lives.
#[derive(Clone, Copy)]
pub struct Span<'a> {
    base: *mut u8,
    len: u64,
    _map: PhantomData<&'a [u8]>,
}

impl<'a> Span<'a> {
    /// # Safety
    /// `base..base+len` must be one live mapping that outlives `'a`, and
    /// `base` must be aligned to at least 16 bytes (mmap gives page alignment).
    pub unsafe fn new(base: *mut u8, len: u64) -> Span<'a> {
        Span {
            base,
            len,
            _map: PhantomData,
        }
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Is `off..off+n` inside the span?
    pub fn contains(&self, off: u64, n: u64) -> bool {
        off.checked_add(n).is_some_and(|end| end <= self.len)
    }

    #[inline]
    fn check(&self, off: u64, n: u64, align: u64) -> Result<()> {
        if !off.is_multiple_of(align) || !self.contains(off, n) {
            return Err(self.outside(off, n));
        }
        Ok(())
    }

    /// The error of a failed check, kept out of line: checks run on every
    /// access, and building the message inline slows the path that passes.
    #[cold]
    #[inline(never)]
    fn outside(&self, off: u64, n: u64) -> Error {
        Error::corrupt(format!(
            "offset {off} (+{n} bytes) is outside the {} byte region or misaligned",
            self.len
        ))
    }

    #[inline]
    pub fn u64_at(&self, off: u64) -> Result<&'a AtomicU64> {
        self.check(off, 8, 8)?;
        // SAFETY: in bounds and 8-aligned (checked above, base is page-aligned);
        // the mapping lives for 'a; AtomicU64 has the size and alignment of u64
        // and any bit pattern is a valid value.
        Ok(unsafe { &*(self.base.add(off as usize) as *const AtomicU64) })
    }

    #[inline]
    pub fn u32_at(&self, off: u64) -> Result<&'a AtomicU32> {
        self.check(off, 4, 4)?;
        // SAFETY: as for u64_at, with 4-byte size and alignment.
        Ok(unsafe { &*(self.base.add(off as usize) as *const AtomicU32) })
    }

    pub fn read(&self, off: u64, out: &mut [u8]) -> Result<()> {
        self.check(off, out.len() as u64, 1)?;
        // SAFETY: the source range is inside the mapping (checked); the
        // destination is a distinct local buffer. Another process may write the
        // source concurrently; we copy bytes and validate them afterwards.
        unsafe {
            std::ptr::copy_nonoverlapping(self.base.add(off as usize), out.as_mut_ptr(), out.len())
        };
        Ok(())
    }

    /// Append the `n` bytes at `off` to `out` (as [`Span::read`] into
    /// fresh room at its end, without zeroing that room first).
    pub fn read_append(&self, off: u64, n: usize, out: &mut Vec<u8>) -> Result<()> {
        self.check(off, n as u64, 1)?;
        out.reserve(n);
        let len = out.len();
        // SAFETY: the source range is inside the mapping (checked); the
        // destination is the vector's spare capacity, at least `n` bytes
        // (reserved), which the copy initializes before the length covers
        // it. As in `read`, another process may write the source meanwhile;
        // the caller validates the bytes.
        unsafe {
            std::ptr::copy_nonoverlapping(
                self.base.add(off as usize),
                out.as_mut_ptr().add(len),
                n,
            );
            out.set_len(len + n);
        }
        Ok(())
    }

    pub fn write(&self, off: u64, data: &[u8]) -> Result<()> {
        self.check(off, data.len() as u64, 1)?;
        // SAFETY: the destination range is inside the mapping (checked) and
        // writable (mapped read-write); the source is a distinct local slice.
        unsafe {
            std::ptr::copy_nonoverlapping(data.as_ptr(), self.base.add(off as usize), data.len())
        };
        Ok(())
    }

    pub fn fill(&self, off: u64, n: u64, byte: u8) -> Result<()> {
        self.check(off, n, 1)?;
        // SAFETY: in-bounds writable range (checked).
        unsafe { std::ptr::write_bytes(self.base.add(off as usize), byte, n as usize) };
        Ok(())
    }

    /// Raw address of `off` for a `len`-byte view (zero-copy typed arrays).
    pub fn ptr_at(&self, off: u64, n: u64) -> Result<*mut u8> {
        self.check(off, n, 1)?;
        // SAFETY: in bounds (checked), so the pointer stays inside the mapping.
        Ok(unsafe { self.base.add(off as usize) })
    }
}
