//! The pool allocator that lives inside a region.
//!
//! Design: two-level segregated fits (the TLSF scheme) with boundary tags.
//! - Every block starts with a 16-byte header: a tagged size word (size is a
//!   multiple of 16; bit 0 = in use; the top 16 bits are a fixed tag so that a
//!   stray offset is caught) and the size of the physically preceding block.
//! - Free blocks are kept in 33 × 16 size classes. Sizes below 256 bytes have
//!   one exact class per 16 bytes: a small allocation pops the head of its
//!   class without searching (the small-block fast path). Larger sizes are
//!   split into 16 linear classes per power of two. Two bitmaps find the
//!   smallest non-empty class that fits in O(1), so allocate and free are
//!   constant time, unlike a first-fit list walk.
//! - Freed blocks merge with free neighbours at once, so there are never two
//!   adjacent free blocks.
//! - All links are offsets from the region base (0 = none).
//!
//! Concurrency: one process-shared [`ShmMutex`] guards the pool. Writes are
//! ordered so that the chain of headers, walked from the first block, is
//! always a valid tiling of the arena; if a process dies holding the lock, the
//! next locker rebuilds the free lists and the counters from that walk
//! ([`Pool::rebuild`]).
//!
//! Trust: every offset and size read from the region is validated before use
//! ([`Pool::block`]); a contradiction is reported as `ERR_SHM_CORRUPT`.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};

use crate::error::{Error, ErrorCode, Result};
use crate::lock::{Guard, ShmMutex};
use crate::mem::Span;

pub const ALIGN: u64 = 16;
pub const HEADER: u64 = 16;
pub const MIN_BLOCK: u64 = 32;
const SL_LOG2: u32 = 4;
pub const SL_COUNT: usize = 1 << SL_LOG2;
const FL_SHIFT: u32 = SL_LOG2 + 4; // 4 = log2(ALIGN)
const SMALL: u64 = 1 << FL_SHIFT;
/// Blocks up to 2^40 bytes (the largest region we create).
pub const FL_COUNT: usize = 33;
pub const MAX_REGION: u64 = 1 << 40;

const USED: u64 = 1;
const TAG: u64 = 0x5B1C << 48;
const TAG_MASK: u64 = 0xFFFF << 48;
const SIZE_MASK: u64 = !TAG_MASK & !(ALIGN - 1);

pub const POOL_MAGIC: u64 = u64::from_le_bytes(*b"SHMPOOL1");

/// Shared-memory layout of the pool header (at the region's `pool_offset`).
#[repr(C)]
pub struct PoolHeader {
    pub magic: AtomicU64,
    pub lock: ShmMutex,
    /// Region offsets bounding the blocks: [arena_start, arena_end).
    pub arena_start: AtomicU64,
    pub arena_end: AtomicU64,
    /// Sum of the sizes (headers included) of blocks in use.
    pub bytes_used: AtomicU64,
    pub blocks_used: AtomicU64,
    /// Bit f set: some class (f, _) is non-empty.
    pub fl_bitmap: AtomicU64,
    /// Bit s of entry f set: class (f, s) is non-empty.
    pub sl_bitmap: [AtomicU32; FL_COUNT],
    pub _pad: u32,
    /// Head of each class's free list (block offset, 0 = empty).
    pub heads: [[AtomicU64; SL_COUNT]; FL_COUNT],
}

pub const POOL_HEADER_SIZE: u64 = std::mem::size_of::<PoolHeader>() as u64;
const _: () = assert!(POOL_HEADER_SIZE == 4424);
const _: () = assert!(std::mem::offset_of!(PoolHeader, magic) == 0);
const _: () = assert!(std::mem::offset_of!(PoolHeader, lock) == 8);
const _: () = assert!(std::mem::offset_of!(PoolHeader, arena_start) == 24);
const _: () = assert!(std::mem::offset_of!(PoolHeader, arena_end) == 32);
const _: () = assert!(std::mem::offset_of!(PoolHeader, bytes_used) == 40);
const _: () = assert!(std::mem::offset_of!(PoolHeader, blocks_used) == 48);
const _: () = assert!(std::mem::offset_of!(PoolHeader, fl_bitmap) == 56);
const _: () = assert!(std::mem::offset_of!(PoolHeader, sl_bitmap) == 64);
const _: () = assert!(std::mem::offset_of!(PoolHeader, heads) == 200);

/// Where the first block starts, relative to the pool header.
pub const fn arena_offset_in_pool() -> u64 {
    (POOL_HEADER_SIZE + ALIGN - 1) & !(ALIGN - 1)
}

/// Usage figures, as `pool.stats()` reports them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolStats {
    /// Bytes the blocks can tile (the arena), headers included.
    pub bytes_total: u64,
    /// Bytes in blocks in use, their 16-byte headers included.
    pub bytes_used: u64,
    /// `bytes_total - bytes_used`.
    pub bytes_free: u64,
    /// The largest request (in bytes) that would succeed right now.
    pub largest_free: u64,
    pub blocks_used: u64,
}

/// Result of a full consistency walk ([`Pool::check`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolCheck {
    pub blocks_used: u64,
    pub blocks_free: u64,
    pub bytes_used: u64,
    pub bytes_free: u64,
    pub largest_free_block: u64,
}

/// The pool of one mapped region. Cheap to create; holds validated bounds.
#[derive(Clone, Copy)]
pub struct Pool<'a> {
    span: Span<'a>,
    header: &'a PoolHeader,
    start: u64,
    end: u64,
}

/// Size class of a block size.
fn mapping(size: u64) -> (usize, usize) {
    if size < SMALL {
        (0, (size >> 4) as usize)
    } else {
        let f = 63 - size.leading_zeros();
        let sl = ((size >> (f - SL_LOG2)) as usize) ^ SL_COUNT;
        ((f - FL_SHIFT + 1) as usize, sl)
    }
}

/// Smallest class whose every block can hold `size`.
fn mapping_search(size: u64) -> (usize, usize) {
    if size < SMALL {
        mapping(size)
    } else {
        let f = 63 - size.leading_zeros();
        mapping(size + (1u64 << (f - SL_LOG2)) - 1)
    }
}

/// Block size needed for a request of `n` payload bytes.
fn block_size_for(n: u64) -> Option<u64> {
    let s = n.checked_add(HEADER + ALIGN - 1)? & !(ALIGN - 1);
    Some(s.max(MIN_BLOCK))
}

struct Block {
    off: u64,
    size: u64,
    used: bool,
}

impl<'a> Pool<'a> {
    /// Lay out a fresh pool in `span` at `pool_off`, tiling the rest of the
    /// span with one free block. The span must be zero-filled there.
    pub fn init(span: Span<'a>, pool_off: u64) -> Result<Pool<'a>> {
        let start = pool_off + arena_offset_in_pool();
        let end = span.len();
        if end < start + MIN_BLOCK || end > MAX_REGION {
            return Err(Error::invalid("region too small for a pool"));
        }
        let header = header_at(span, pool_off)?;
        header.lock.init();
        header.arena_start.store(start, Relaxed);
        header.arena_end.store(end, Relaxed);
        let pool = Pool {
            span,
            header,
            start,
            end,
        };
        pool.write_header(start, (end - start) & SIZE_MASK, false)?;
        pool.set_prev_size(start, 0)?;
        pool.insert_free(start, (end - start) & SIZE_MASK)?;
        header.magic.store(POOL_MAGIC, Relaxed);
        Ok(pool)
    }

    /// Open the pool of an existing region, validating its header against the
    /// bounds the boot block promised.
    pub fn open(span: Span<'a>, pool_off: u64) -> Result<Pool<'a>> {
        let header = header_at(span, pool_off)?;
        if header.magic.load(Relaxed) != POOL_MAGIC {
            return Err(Error::corrupt("the pool header has a bad magic number"));
        }
        let start = pool_off + arena_offset_in_pool();
        let end = span.len();
        if header.arena_start.load(Relaxed) != start || header.arena_end.load(Relaxed) != end {
            return Err(Error::corrupt(
                "the pool header's bounds contradict the boot block",
            ));
        }
        Ok(Pool {
            span,
            header,
            start,
            end,
        })
    }

    pub fn span(&self) -> Span<'a> {
        self.span
    }

    /// Take the pool lock, rebuilding the pool first if its last holder died.
    fn lock(&self) -> Result<Guard<'a>> {
        let g = self.header.lock.lock();
        if g.recovered {
            self.rebuild()?;
        }
        Ok(g)
    }

    /// Allocate `n` bytes (16-byte aligned); returns the region offset of the
    /// payload. The payload's contents are unspecified.
    pub fn allocate(&self, n: u64) -> Result<u64> {
        let size = block_size_for(n)
            .filter(|&s| s <= self.end - self.start)
            .ok_or_else(|| self.out_of_memory(n))?;
        let _g = self.lock()?;
        let b = match self.find_free(size)? {
            Some(b) => b,
            None => return Err(self.out_of_memory(n)),
        };
        self.remove_free(b.off, b.size)?;
        let mut used = b.size;
        if b.size - size >= MIN_BLOCK {
            // Split. Order matters for crash recovery: the remainder's header
            // and its successor's back-link go first; shrinking `b` (one store)
            // is what makes the remainder part of the tiling.
            let rest = b.off + size;
            let rest_size = b.size - size;
            self.write_header(rest, rest_size, false)?;
            self.set_prev_size(rest, size)?;
            if rest + rest_size < self.end {
                self.set_prev_size(rest + rest_size, rest_size)?;
            }
            self.write_header(b.off, size, true)?;
            self.insert_free(rest, rest_size)?;
            used = size;
        } else {
            self.write_header(b.off, b.size, true)?;
        }
        self.header.bytes_used.fetch_add(used, Relaxed);
        self.header.blocks_used.fetch_add(1, Relaxed);
        Ok(b.off + HEADER)
    }

    /// Free the block whose payload starts at `payload` (as returned by
    /// [`Pool::allocate`]). Freeing anything else is an error, not UB.
    pub fn free(&self, payload: u64) -> Result<()> {
        let _g = self.lock()?;
        let b = self.used_block(payload)?;
        let mut off = b.off;
        let mut size = b.size;
        let next = b.off + b.size;
        if next < self.end {
            let n = self.block(next)?;
            if !n.used {
                self.remove_free(n.off, n.size)?;
                size += n.size;
            }
        }
        let prev_size = self.prev_size(b.off)?;
        if prev_size != 0 {
            let p = self.prev_block(b.off, prev_size)?;
            if !p.used {
                self.remove_free(p.off, p.size)?;
                off = p.off;
                size += p.size;
            }
        }
        self.write_header(off, size, false)?;
        if off + size < self.end {
            self.set_prev_size(off + size, size)?;
        }
        self.insert_free(off, size)?;
        self.header.bytes_used.fetch_sub(b.size, Relaxed);
        self.header.blocks_used.fetch_sub(1, Relaxed);
        Ok(())
    }

    /// Payload capacity of an allocated block (at least what was asked for).
    pub fn capacity(&self, payload: u64) -> Result<u64> {
        Ok(self.used_block(payload)?.size - HEADER)
    }

    /// Usage figures; cheap (no walk of the blocks).
    pub fn stats(&self) -> Result<PoolStats> {
        let _g = self.lock()?;
        let total = self.end - self.start;
        let used = self.header.bytes_used.load(Relaxed).min(total);
        let mut largest = 0;
        let fl_map = self.header.fl_bitmap.load(Relaxed);
        if fl_map != 0 {
            let fl = 63 - fl_map.leading_zeros() as usize;
            let sl_map = self.sl_bitmap(fl)?.load(Relaxed);
            if sl_map != 0 {
                let sl = 31 - sl_map.leading_zeros() as usize;
                self.for_each_in_class(fl, sl, |b| {
                    largest = largest.max(b.size);
                    Ok(())
                })?;
            }
        }
        Ok(PoolStats {
            bytes_total: total,
            bytes_used: used,
            bytes_free: total - used,
            largest_free: largest.saturating_sub(HEADER),
            blocks_used: self.header.blocks_used.load(Relaxed),
        })
    }

    /// Walk every block and every free list and verify all invariants:
    /// the headers tile the arena, back-links match, no two free blocks touch,
    /// every free block is in exactly its class's list, bitmaps match the
    /// lists, and the counters match the walk.
    pub fn check(&self) -> Result<PoolCheck> {
        let _g = self.lock()?;
        let mut c = PoolCheck {
            blocks_used: 0,
            blocks_free: 0,
            bytes_used: 0,
            bytes_free: 0,
            largest_free_block: 0,
        };
        let mut off = self.start;
        let mut prev: Option<Block> = None;
        while off < self.end {
            let b = self.block(off)?;
            let expect_prev = prev.as_ref().map_or(0, |p| p.size);
            if self.prev_size(off)? != expect_prev {
                return Err(Error::corrupt(format!("block {off}: wrong back-link")));
            }
            if b.used {
                c.blocks_used += 1;
                c.bytes_used += b.size;
            } else {
                if prev.as_ref().is_some_and(|p| !p.used) {
                    return Err(Error::corrupt(format!(
                        "block {off}: two free blocks touch"
                    )));
                }
                c.blocks_free += 1;
                c.bytes_free += b.size;
                c.largest_free_block = c.largest_free_block.max(b.size);
            }
            off += b.size;
            prev = Some(b);
        }
        if off != self.end {
            return Err(Error::corrupt("blocks overrun the arena"));
        }
        let mut listed = 0;
        let fl_map = self.header.fl_bitmap.load(Relaxed);
        for fl in 0..FL_COUNT {
            let sl_map = self.sl_bitmap(fl)?.load(Relaxed);
            if (sl_map != 0) != (fl_map & (1 << fl) != 0) {
                return Err(Error::corrupt(format!("class {fl}: bitmaps disagree")));
            }
            for sl in 0..SL_COUNT {
                let head = self.head(fl, sl)?.load(Relaxed);
                if (head != 0) != (sl_map & (1 << sl) != 0) {
                    return Err(Error::corrupt(format!("class {fl}/{sl}: bitmap vs list")));
                }
                self.for_each_in_class(fl, sl, |_| {
                    listed += 1;
                    Ok(())
                })?;
            }
        }
        if listed != c.blocks_free {
            return Err(Error::corrupt(format!(
                "{listed} blocks listed free but {} found free",
                c.blocks_free
            )));
        }
        if c.bytes_used != self.header.bytes_used.load(Relaxed)
            || c.blocks_used != self.header.blocks_used.load(Relaxed)
        {
            return Err(Error::corrupt("usage counters disagree with the blocks"));
        }
        Ok(c)
    }

    /// Rebuild free lists, back-links and counters from the chain of headers.
    /// Called when a process died holding the pool lock. Blocks in use stay in
    /// use (their owners may be alive); adjacent free blocks are merged.
    pub fn rebuild(&self) -> Result<()> {
        self.header.fl_bitmap.store(0, Relaxed);
        for fl in 0..FL_COUNT {
            self.sl_bitmap(fl)?.store(0, Relaxed);
            for sl in 0..SL_COUNT {
                self.head(fl, sl)?.store(0, Relaxed);
            }
        }
        let (mut used_bytes, mut used_blocks) = (0, 0);
        let mut prev_size = 0;
        let mut off = self.start;
        while off < self.end {
            let b = self.block(off)?;
            let mut size = b.size;
            if !b.used {
                // Absorb any free blocks that follow.
                while off + size < self.end {
                    let n = self.block(off + size)?;
                    if n.used {
                        break;
                    }
                    size += n.size;
                }
                self.write_header(off, size, false)?;
                self.insert_free(off, size)?;
            } else {
                used_bytes += size;
                used_blocks += 1;
            }
            self.set_prev_size(off, prev_size)?;
            prev_size = size;
            off += size;
        }
        self.header.bytes_used.store(used_bytes, Relaxed);
        self.header.blocks_used.store(used_blocks, Relaxed);
        Ok(())
    }

    fn out_of_memory(&self, n: u64) -> Error {
        Error::new(
            ErrorCode::OutOfMemory,
            format!(
                "the pool cannot allocate {n} bytes (arena {} bytes); free values or create a larger region",
                self.end - self.start
            ),
        )
    }

    // ---- free lists -------------------------------------------------------

    fn find_free(&self, size: u64) -> Result<Option<Block>> {
        let (fl, sl) = mapping_search(size);
        if fl < FL_COUNT {
            let mut sl_map = self.sl_bitmap(fl)?.load(Relaxed) & (!0u32 << sl);
            let mut fl = fl;
            if sl_map == 0 {
                let fl_map = self.header.fl_bitmap.load(Relaxed) & (!0u64 << (fl + 1).min(63));
                if fl_map != 0 && fl + 1 < 64 {
                    fl = fl_map.trailing_zeros() as usize;
                    sl_map = self.sl_bitmap(fl)?.load(Relaxed);
                }
            }
            if sl_map != 0 {
                let sl = sl_map.trailing_zeros() as usize;
                let head = self.head(fl, sl)?.load(Relaxed);
                let b = self.free_block_in(head, fl, sl)?;
                if b.size >= size {
                    return Ok(Some(b));
                }
                return Err(Error::corrupt(
                    "a free list holds a block too small for its class",
                ));
            }
        }
        // No class is sure to fit; blocks in the request's own class may still.
        let (fl, sl) = mapping(size);
        let mut found = None;
        self.for_each_in_class(fl, sl, |b| {
            if found.is_none() && b.size >= size {
                found = Some(b.off);
            }
            Ok(())
        })?;
        match found {
            Some(off) => Ok(Some(self.block(off)?)),
            None => Ok(None),
        }
    }

    fn insert_free(&self, off: u64, size: u64) -> Result<()> {
        let (fl, sl) = mapping(size);
        let head = self.head(fl, sl)?;
        let old = head.load(Relaxed);
        self.span.u64_at(off + 16)?.store(old, Relaxed);
        self.span.u64_at(off + 24)?.store(0, Relaxed);
        if old != 0 {
            self.free_block_in(old, fl, sl)?;
            self.span.u64_at(old + 24)?.store(off, Relaxed);
        }
        head.store(off, Relaxed);
        self.sl_bitmap(fl)?.fetch_or(1 << sl, Relaxed);
        self.header.fl_bitmap.fetch_or(1 << fl, Relaxed);
        Ok(())
    }

    fn remove_free(&self, off: u64, size: u64) -> Result<()> {
        let (fl, sl) = mapping(size);
        let next = self.span.u64_at(off + 16)?.load(Relaxed);
        let prev = self.span.u64_at(off + 24)?.load(Relaxed);
        if next != 0 {
            self.free_block_in(next, fl, sl)?;
            self.span.u64_at(next + 24)?.store(prev, Relaxed);
        }
        let head = self.head(fl, sl)?;
        if prev != 0 {
            self.free_block_in(prev, fl, sl)?;
            self.span.u64_at(prev + 16)?.store(next, Relaxed);
        } else {
            if head.load(Relaxed) != off {
                return Err(Error::corrupt(format!("free block {off} is not linked")));
            }
            head.store(next, Relaxed);
            if next == 0 {
                let left = self.sl_bitmap(fl)?.fetch_and(!(1 << sl), Relaxed) & !(1 << sl);
                if left == 0 {
                    self.header.fl_bitmap.fetch_and(!(1 << fl), Relaxed);
                }
            }
        }
        Ok(())
    }

    /// Visit each block of a class's list, with a step bound so a cycle
    /// written by a hostile process ends in an error instead of a hang.
    fn for_each_in_class(
        &self,
        fl: usize,
        sl: usize,
        mut f: impl FnMut(Block) -> Result<()>,
    ) -> Result<()> {
        let mut off = self.head(fl, sl)?.load(Relaxed);
        let mut steps = (self.end - self.start) / MIN_BLOCK + 1;
        while off != 0 {
            if steps == 0 {
                return Err(Error::corrupt("a free list loops"));
            }
            steps -= 1;
            let b = self.free_block_in(off, fl, sl)?;
            let next = self.span.u64_at(off + 16)?.load(Relaxed);
            f(b)?;
            off = next;
        }
        Ok(())
    }

    // ---- validated block access ------------------------------------------

    /// Read and validate the header of the block at `off`.
    fn block(&self, off: u64) -> Result<Block> {
        if off < self.start || off >= self.end || !off.is_multiple_of(ALIGN) {
            return Err(Error::corrupt(format!(
                "block offset {off} is outside the pool"
            )));
        }
        let word = self.span.u64_at(off)?.load(Relaxed);
        let size = word & SIZE_MASK;
        if word & TAG_MASK != TAG || size < MIN_BLOCK || size > self.end - off {
            return Err(Error::corrupt(format!("block {off} has a bad header")));
        }
        Ok(Block {
            off,
            size,
            used: word & USED != 0,
        })
    }

    fn free_block_in(&self, off: u64, fl: usize, sl: usize) -> Result<Block> {
        let b = self.block(off)?;
        if b.used || mapping(b.size) != (fl, sl) {
            return Err(Error::corrupt(format!(
                "free list {fl}/{sl} links a wrong block {off}"
            )));
        }
        Ok(b)
    }

    fn used_block(&self, payload: u64) -> Result<Block> {
        let b = payload
            .checked_sub(HEADER)
            .filter(|&o| o >= self.start && o < self.end && o % ALIGN == 0)
            .map(|o| self.block(o))
            .transpose()
            .ok()
            .flatten();
        match b {
            Some(b) if b.used => Ok(b),
            _ => Err(Error::invalid(format!(
                "offset {payload} is not an allocated block of this pool (freed twice?)"
            ))),
        }
    }

    fn prev_block(&self, off: u64, prev_size: u64) -> Result<Block> {
        let p = off
            .checked_sub(prev_size)
            .ok_or_else(|| Error::corrupt("a back-link points before the pool"))?;
        let b = self.block(p)?;
        if b.size != prev_size {
            return Err(Error::corrupt(format!("block {off}: back-link disagrees")));
        }
        Ok(b)
    }

    fn write_header(&self, off: u64, size: u64, used: bool) -> Result<()> {
        self.span
            .u64_at(off)?
            .store(TAG | size | if used { USED } else { 0 }, Relaxed);
        Ok(())
    }

    fn prev_size(&self, off: u64) -> Result<u64> {
        Ok(self.span.u64_at(off + 8)?.load(Relaxed))
    }

    fn set_prev_size(&self, off: u64, size: u64) -> Result<()> {
        self.span.u64_at(off + 8)?.store(size, Relaxed);
        Ok(())
    }

    fn head(&self, fl: usize, sl: usize) -> Result<&'a AtomicU64> {
        self.header
            .heads
            .get(fl)
            .and_then(|r| r.get(sl))
            .ok_or_else(|| Error::corrupt("size class out of range"))
    }

    fn sl_bitmap(&self, fl: usize) -> Result<&'a AtomicU32> {
        self.header
            .sl_bitmap
            .get(fl)
            .ok_or_else(|| Error::corrupt("size class out of range"))
    }
}

fn header_at(span: Span<'_>, pool_off: u64) -> Result<&PoolHeader> {
    if !pool_off.is_multiple_of(8) || !span.contains(pool_off, POOL_HEADER_SIZE) {
        return Err(Error::corrupt("the pool header lies outside the region"));
    }
    let p = span.ptr_at(pool_off, POOL_HEADER_SIZE)?;
    // SAFETY: the range is inside the live mapping (checked) and 8-aligned;
    // PoolHeader consists only of atomics (and a padding u32 nobody reads), for
    // which every bit pattern is valid, so a reference to it is sound even if
    // another process writes garbage there.
    Ok(unsafe { &*(p as *const PoolHeader) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_cover_sizes_monotonically() {
        assert_eq!(mapping(32), (0, 2));
        assert_eq!(mapping(240), (0, 15));
        assert_eq!(mapping(256), (1, 0));
        assert_eq!(mapping(272), (1, 1));
        assert_eq!(mapping(511), (1, 15));
        assert_eq!(mapping(512), (2, 0));
        assert_eq!(mapping((1 << 40) - 16).0, FL_COUNT - 1);
        let mut last = (0, 0);
        for s in (32..100_000).step_by(16) {
            let m = mapping(s);
            assert!(m >= last, "class order breaks at {s}");
            last = m;
            // Any block in the searched class is big enough.
            let (fl, sl) = mapping_search(s);
            if (fl, sl) != mapping(s) {
                assert!(lowest_size_of(fl, sl) >= s);
            }
        }
    }

    fn lowest_size_of(fl: usize, sl: usize) -> u64 {
        if fl == 0 {
            (sl as u64) << 4
        } else {
            let f = fl as u32 + FL_SHIFT - 1;
            (1u64 << f) + ((sl as u64) << (f - SL_LOG2))
        }
    }
}
