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
        // writable (mapped read-write); the source is a slice that does not
        // overlap it (the caller's memory, or another object of the region).
        unsafe {
            std::ptr::copy_nonoverlapping(data.as_ptr(), self.base.add(off as usize), data.len())
        };
        Ok(())
    }

    /// [`Span::write`] for a large copy that another process will read:
    /// from [`STREAM_MIN`] bytes up (on x86-64), the bytes go to memory with
    /// non-temporal stores, past this CPU's caches, so the copy does not
    /// evict everything this process works with next (see [`STREAM_MIN`]).
    /// A streaming copy ends with a store fence, so that, like a plain
    /// copy's, its bytes are ordered before anything published after it
    /// with a release store.
    pub fn write_streaming(&self, off: u64, data: &[u8]) -> Result<()> {
        if data.len() < STREAM_MIN {
            return self.write(off, data);
        }
        self.check(off, data.len() as u64, 1)?;
        // SAFETY: the destination range is inside the mapping (checked) and
        // writable; the source is a slice of the same length that does not
        // overlap it (the caller's memory, or another object of the region).
        unsafe { stream_copy(self.base.add(off as usize), data) };
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

/// Smallest copy [`Span::write_streaming`] sends past the caches.
///
/// A copy of 1 MiB through the caches reads 1 MiB and writes 1 MiB, which
/// evicts this core's L2 and its code and data for the next steps: in
/// `bench/large-ref.ts` (2026-12-06) a producer's enqueue of a handle took
/// 2.4 us p50 after sharing a 16-element array, and 8.7 us when the same
/// loop also copied 1 MiB between two JS arrays first. The consumer, on
/// another core, reads the bytes from memory or the shared L3 either way.
/// Streaming the 1 MiB copy into the region with 16-byte stores: enqueue
/// p50 9.4-10.4 → 5.2-7.5 us, the consumer's time a message 97-109 → 75-93
/// us (three interleaved pairs); with 32-byte stores (see `stream_copy`)
/// 2.4-4.4 us and 62-79 us (three runs). Smaller copies fit in the caches
/// and stay plain.
pub const STREAM_MIN: usize = 256 << 10;

/// Copy `src` to `dst` with non-temporal stores (the 32-byte aligned
/// middle; the ends by plain copies), then a store fence. 32-byte stores
/// where the CPU has AVX2, else 16-byte ones (SSE2, on every x86-64): a
/// 1 MiB copy to memory not in the cache took 48-50 us with the first,
/// 56-61 with the second and 63-69 as a plain copy (a throwaway loop over
/// 32 destinations, 2026-12-06, this machine).
///
/// # Safety
/// `dst..dst + src.len()` must be writable and not overlap `src`.
#[cfg(target_arch = "x86_64")]
unsafe fn stream_copy(dst: *mut u8, src: &[u8]) {
    let n = src.len();
    let head = dst.align_offset(32).min(n);
    // SAFETY: the first `head` bytes and the rest are inside `dst` and
    // `src` (the caller's promise), and `dst + head` is 32-byte aligned as
    // the stream loops need; AVX2 is used only where the CPU has it.
    unsafe {
        std::ptr::copy_nonoverlapping(src.as_ptr(), dst, head);
        let (d, s) = (dst.add(head), &src[head..]);
        let done = if std::arch::is_x86_feature_detected!("avx2") {
            stream_avx2(d, s)
        } else {
            stream_sse2(d, s)
        };
        std::ptr::copy_nonoverlapping(s.as_ptr().add(done), d.add(done), s.len() - done);
        std::arch::x86_64::_mm_sfence();
    }
}

/// The 64-byte blocks of `src` to the 32-byte aligned `dst` with 32-byte
/// non-temporal stores; returns how many bytes it copied.
///
/// # Safety
/// As for [`stream_copy`], with `dst` 32-byte aligned and AVX2 present.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn stream_avx2(dst: *mut u8, src: &[u8]) -> usize {
    use std::arch::x86_64::{__m256i, _mm256_loadu_si256, _mm256_stream_si256};
    let mut i = 0;
    while i + 64 <= src.len() {
        // SAFETY: `i + 64 <= len`, so both 32-byte halves are inside `src`
        // and `dst`; `dst + i` is 32-byte aligned (the caller's promise).
        unsafe {
            let s = src.as_ptr().add(i) as *const __m256i;
            let d = dst.add(i) as *mut __m256i;
            let (a, b) = (_mm256_loadu_si256(s), _mm256_loadu_si256(s.add(1)));
            _mm256_stream_si256(d, a);
            _mm256_stream_si256(d.add(1), b);
        }
        i += 64;
    }
    i
}

/// [`stream_avx2`] with 16-byte stores, for any x86-64 CPU.
///
/// # Safety
/// As for [`stream_copy`], with `dst` 16-byte aligned.
#[cfg(target_arch = "x86_64")]
unsafe fn stream_sse2(dst: *mut u8, src: &[u8]) -> usize {
    use std::arch::x86_64::{__m128i, _mm_loadu_si128, _mm_stream_si128};
    let mut i = 0;
    while i + 64 <= src.len() {
        // SAFETY: `i + 64 <= len`, so the four 16-byte parts are inside
        // `src` and `dst`; `dst + i` is 16-byte aligned (the caller's
        // promise).
        unsafe {
            let s = src.as_ptr().add(i) as *const __m128i;
            let d = dst.add(i) as *mut __m128i;
            let (a, b) = (_mm_loadu_si128(s), _mm_loadu_si128(s.add(1)));
            let (c, e) = (_mm_loadu_si128(s.add(2)), _mm_loadu_si128(s.add(3)));
            _mm_stream_si128(d, a);
            _mm_stream_si128(d.add(1), b);
            _mm_stream_si128(d.add(2), c);
            _mm_stream_si128(d.add(3), e);
        }
        i += 64;
    }
    i
}

/// Elsewhere a plain copy.
///
/// # Safety
/// As for the x86-64 form.
#[cfg(not(target_arch = "x86_64"))]
unsafe fn stream_copy(dst: *mut u8, src: &[u8]) {
    // SAFETY: the caller's promise.
    unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), dst, src.len()) };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_streaming_write_puts_every_byte_where_a_plain_one_does() {
        let total = STREAM_MIN + 4096;
        let size = total + 64;
        let mut a = vec![0u8; size];
        let mut b = vec![0u8; size];
        let src: Vec<u8> = (0..total).map(|i| (i * 7 + i / 251) as u8).collect();
        // SAFETY: both spans are live local buffers, outliving the spans.
        let (sa, sb) = unsafe {
            (
                Span::new(a.as_mut_ptr(), size as u64),
                Span::new(b.as_mut_ptr(), size as u64),
            )
        };
        // Every alignment of the destination, lengths on both sides of the
        // threshold and with every remainder of the 64-byte loop.
        for off in [0u64, 1, 7, 8, 15, 16, 33] {
            for len in [
                0,
                1,
                100,
                STREAM_MIN - 1,
                STREAM_MIN,
                STREAM_MIN + 17,
                total - 64,
            ] {
                sa.fill(0, size as u64, 0xAA).unwrap();
                sb.fill(0, size as u64, 0xAA).unwrap();
                sa.write_streaming(off, &src[..len]).unwrap();
                sb.write(off, &src[..len]).unwrap();
                let (mut x, mut y) = (Vec::new(), Vec::new());
                sa.read_append(0, size, &mut x).unwrap();
                sb.read_append(0, size, &mut y).unwrap();
                assert!(x == y, "offset {off}, {len} bytes");
            }
        }
        // The 16-byte form, which CPUs without AVX2 take, on its own.
        #[cfg(target_arch = "x86_64")]
        {
            let mut d = vec![0u8; 4096 + 64];
            let at = d.as_ptr().align_offset(32);
            // SAFETY: `at + 4000 <= d.len()`, `d` and `src` do not overlap,
            // and `d + at` is 32-byte (so 16-byte) aligned.
            let done = unsafe { stream_sse2(d.as_mut_ptr().add(at), &src[..4000]) };
            assert_eq!(done, 3968);
            assert!(d[at..at + done] == src[..done]);
            assert!(d[at + done..].iter().all(|&b| b == 0));
        }
        // Past the end is refused, as by write.
        assert!(sa.write_streaming(65, &src).is_err());
        assert!(sa.write_streaming(64, &src).is_ok());
    }
}
