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
//!
//! Termination: no loop relies on the region to end it. The walk along the
//! headers (`check`, `used_blocks`, `rebuild`) advances by a block's size,
//! which [`Pool::block`] refuses below `MIN_BLOCK` or past the arena's end,
//! so it takes at most arena / `MIN_BLOCK` steps; a free-list walk
//! (`for_each_in_class`) stops with `ERR_SHM_CORRUPT` after that many steps,
//! which only a cycle needs; `allocate` and `free` look at a block's
//! neighbours only.

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
/// Written at +16 of a free block (where its list links go) while a run is
/// carved out of it or freed into it, with the end of the run at +24: a
/// process killed before the run's headers are settled leaves it there, and
/// `rebuild` clears the block headers the run left inside the free block.
/// No list link has its top bits set, so it is never mistaken for one.
const RUN_MARK: u64 = u64::from_le_bytes(*b"SHMRUN!\xff");

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
    /// This copy is used inside [`Pool::with_held`], whose caller already
    /// holds the pool lock: its operations do not take it again.
    held: bool,
    /// Allocations go through this cache (see [`Pool::with_cache`]).
    cache: Option<&'a BlockCache<'a>>,
}

/// End of the arena that starts at `start` in a span of `len` bytes: the
/// last 16-byte boundary, so that blocks (multiples of 16) tile it exactly
/// whatever the region's size.
fn arena_end(len: u64, start: u64) -> u64 {
    start + (len.saturating_sub(start) & !(ALIGN - 1))
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

/// Distinct block sizes a [`BlockCache`] keeps spares of.
const CACHE_SIZES: usize = 8;
/// Most blocks a [`BlockCache`] carves in one run.
const CACHE_RUN: u64 = 256;

/// Blocks carved ahead, by size, for one build of a value of many small
/// objects (a table of thousands of rows is thousands of blocks, most of a
/// few sizes). Taking the pool lock once per object made several processes
/// building at once queue up on the lock (two processes each storing
/// 10 000 rows at once took 12-13 ms each, against 5 ms alone; twenty took
/// 286 ms in all, for about 50 ms of work on 2 cores). The cache takes the
/// lock only to carve a run of blocks of one size ([`Pool::allocate_run`]),
/// and the objects are then written without it.
///
/// The n-th block of a size asked for comes with a run of about n more
/// (doubling, at most [`CACHE_RUN`]), so a size met once costs one ordinary
/// allocation and nothing is carved ahead of what the build has shown it
/// needs by more than as much again. [`BlockCache::finish`] frees the
/// spares; until then they are blocks in use that nothing refers to, like
/// the objects of a build that is under way (a process killed inside its
/// in-progress mark is reclaimed as uncertain either way).
pub(crate) struct BlockCache<'a> {
    /// The pool the runs are carved from (itself without a cache).
    pool: Pool<'a>,
    /// By block size; `size` 0 marks an unused entry. (A fixed array: a
    /// small value built through the cache allocates nothing for it.)
    sizes: std::cell::RefCell<[Spares; CACHE_SIZES]>,
}

struct Spares {
    /// Block size (as `block_size_for` gives it).
    size: u64,
    /// Payload offsets carved and not handed out, the lowest last.
    spare: Vec<u64>,
    /// Blocks of this size handed out so far.
    served: u64,
}

impl<'a> BlockCache<'a> {
    pub(crate) fn new(pool: Pool<'a>) -> BlockCache<'a> {
        BlockCache {
            pool: Pool {
                cache: None,
                ..pool
            },
            sizes: std::cell::RefCell::new(std::array::from_fn(|_| Spares {
                size: 0,
                spare: Vec::new(),
                served: 0,
            })),
        }
    }

    fn allocate(&self, n: u64) -> Result<u64> {
        let Some(size) = block_size_for(n) else {
            return self.pool.allocate(n); // (its error)
        };
        let mut sizes = self.sizes.borrow_mut();
        let Some(s) = sizes.iter_mut().find(|s| s.size == size || s.size == 0) else {
            return self.pool.allocate(n);
        };
        s.size = size;
        if let Some(off) = s.spare.pop() {
            s.served += 1;
            return Ok(off);
        }
        let run = s.served.clamp(1, CACHE_RUN);
        let off = if run == 1 {
            self.pool.allocate(n)?
        } else {
            let mut offs = Vec::with_capacity(run as usize);
            match self.pool.allocate_run(&vec![n; run as usize], &mut offs) {
                Ok(()) => {
                    // Handed out lowest first, so the objects of a build lie
                    // in address order (their frees then merge into runs).
                    s.spare.extend(offs[1..].iter().rev());
                    offs[0]
                }
                // No one free block holds the run: just this one.
                Err(_) => self.pool.allocate(n)?,
            }
        };
        s.served += 1;
        Ok(off)
    }

    /// Free the spares (under one hold of the pool lock).
    pub(crate) fn finish(&self) -> Result<()> {
        let spare: Vec<u64> = self
            .sizes
            .borrow_mut()
            .iter_mut()
            .flat_map(|s| std::mem::take(&mut s.spare))
            .collect();
        self.pool.free_many(&spare)
    }
}

impl Drop for BlockCache<'_> {
    fn drop(&mut self) {
        // (finish on every path that can report an error; this catches the
        // others, such as a panic unwinding through a build)
        let _ = self.finish();
    }
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
        let end = arena_end(span.len(), start);
        if end < start + MIN_BLOCK || span.len() > MAX_REGION {
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
            held: false,
            cache: None,
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
        let end = arena_end(span.len(), start);
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
            held: false,
            cache: None,
        })
    }

    pub fn span(&self) -> Span<'a> {
        self.span
    }

    /// Take the pool lock, rebuilding the pool first if its last holder died
    /// (nothing to take inside [`Pool::with_held`]: the caller holds it).
    fn lock(&self) -> Result<Option<Guard<'a>>> {
        if self.held {
            return Ok(None);
        }
        let g = self.header.lock.lock();
        if g.recovered {
            self.rebuild()?;
        }
        Ok(Some(g))
    }

    /// Run `f` with the pool lock held once for all of its allocations and
    /// frees: `f` gets a copy of the pool that does not lock again. For
    /// batches (a run of messages stored or freed together), where taking
    /// the lock per block would bounce its cache line between the processes
    /// allocating and freeing. `f` must not keep the copy, and must not take
    /// a lock that someone holding it could be waiting on the pool under:
    /// only locks of objects nobody else can reach (values being built, and
    /// containers being freed: their count reached 0, so a holder of their
    /// lock can only be a writer that died, whose lock is taken over) are
    /// safe. Nor may it hold or unhold in a ledger (see
    /// `Values::with_pool_held`).
    pub(crate) fn with_held<R>(&self, f: impl FnOnce(Pool<'a>) -> Result<R>) -> Result<R> {
        let _g = self.lock()?;
        f(Pool {
            held: true,
            // (a cache would take the lock again for its runs)
            cache: None,
            ..*self
        })
    }

    /// This pool with its allocations served by `cache` (blocks carved in
    /// runs, see [`BlockCache`]); frees are unchanged.
    pub(crate) fn with_cache<'b>(&self, cache: &'b BlockCache<'b>) -> Pool<'b>
    where
        'a: 'b,
    {
        Pool {
            cache: Some(cache),
            ..*self
        }
    }

    /// Free several blocks under one hold of the pool lock. Every block is
    /// tried; the first error is returned (the blocks it concerns are left
    /// as they were, as [`Pool::free`] leaves them).
    ///
    /// Blocks that lie back to back (a batch allocated together usually
    /// does) are freed as one run: one merge with the run's free neighbours
    /// and one free-list insertion for all of them, instead of one each.
    pub fn free_many(&self, payloads: &[u64]) -> Result<()> {
        match payloads {
            [] => Ok(()),
            [one] => self.free(*one),
            _ => self.with_held(|p| {
                let mut sorted = payloads.to_vec();
                sorted.sort_unstable();
                let mut first = None;
                let mut i = 0;
                while i < sorted.len() {
                    let b = match p.used_block(sorted[i]) {
                        Ok(b) => b,
                        Err(e) => {
                            first.get_or_insert(e);
                            i += 1;
                            continue;
                        }
                    };
                    let mut end = b.off + b.size;
                    let mut j = i + 1;
                    while j < sorted.len() && sorted[j] == end + HEADER {
                        match p.used_block(sorted[j]) {
                            Ok(n) => end += n.size,
                            Err(_) => break,
                        }
                        j += 1;
                    }
                    let run = &sorted[i..j];
                    if let Err(e) = p.free_run(b.off, end, run) {
                        // Block by block, so that only those the error
                        // concerns stay allocated.
                        first.get_or_insert(e);
                        for &at in run {
                            let _ = p.free(at);
                        }
                    }
                    i = j;
                }
                first.map_or(Ok(()), Err)
            }),
        }
    }

    /// Allocate `n` bytes (16-byte aligned); returns the region offset of the
    /// payload. The payload's contents are unspecified.
    pub fn allocate(&self, n: u64) -> Result<u64> {
        if let Some(cache) = self.cache {
            return cache.allocate(n);
        }
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

    /// Allocate blocks for each of `sizes` (bytes, as [`Pool::allocate`]
    /// takes them) back to back, carved from one free block: one free-list
    /// removal and one insertion for the lot, instead of one each, and a run
    /// that [`Pool::free_many`] frees as one later. Appends the payload
    /// offsets to `out`. Out of memory if no single free block holds them all
    /// (smaller free blocks might still hold them one by one); nothing is
    /// allocated then.
    pub fn allocate_run(&self, sizes: &[u64], out: &mut Vec<u64>) -> Result<()> {
        let mut total = 0u64;
        for &n in sizes {
            let s = block_size_for(n)
                .filter(|&s| s <= self.end - self.start)
                .ok_or_else(|| self.out_of_memory(n))?;
            total = total
                .checked_add(s)
                .filter(|&t| t <= self.end - self.start)
                .ok_or_else(|| self.out_of_memory(total.saturating_add(s)))?;
        }
        if sizes.is_empty() {
            return Ok(());
        }
        let _g = self.lock()?;
        let f = match self.find_free(total)? {
            Some(b) => b,
            None => return Err(self.out_of_memory(total)),
        };
        let base = out.len();
        let carved = self.carve(f, total, sizes, out);
        if carved.is_err() {
            out.truncate(base);
        }
        carved
    }

    /// The body of [`Pool::allocate_run`], the lock held: carve blocks of
    /// `sizes` (`total` bytes of blocks) from the free block `f`.
    fn carve(&self, f: Block, total: u64, sizes: &[u64], out: &mut Vec<u64>) -> Result<()> {
        self.remove_free(f.off, f.size)?;
        // Crash order as in allocate: everything past the first block is
        // written inside the free block first, where no walk of the tiling
        // looks; the first block's header (one store) then makes the run and
        // the rest part of the tiling. Until that store, the free block holds
        // "in use" headers of blocks that do not exist yet: the run mark lets
        // a rebuild clear them should we die first.
        self.mark_run(f.off, f.off + total)?;
        let rest = f.size - total;
        let last_extra = if rest >= MIN_BLOCK { 0 } else { rest };
        let mut at = f.off;
        let mut prev = 0u64;
        let mut first_size = 0;
        for (i, &n) in sizes.iter().enumerate() {
            let mut s = block_size_for(n).unwrap_or(MIN_BLOCK);
            if i + 1 == sizes.len() {
                s += last_extra;
            }
            if i == 0 {
                first_size = s;
            } else {
                self.write_header(at, s, true)?;
                self.set_prev_size(at, prev)?;
            }
            out.push(at + HEADER);
            prev = s;
            at += s;
        }
        if last_extra == 0 && rest > 0 {
            self.write_header(at, rest, false)?;
            self.set_prev_size(at, prev)?;
            prev = rest;
            at += rest;
        }
        if at < self.end {
            self.set_prev_size(at, prev)?;
        }
        #[cfg(test)]
        if tests::crash_now() {
            return Ok(());
        }
        self.write_header(f.off, first_size, true)?;
        // (now the first block's payload, the caller's to fill)
        self.span.u64_at(f.off + 16)?.store(0, Relaxed);
        if last_extra == 0 && rest > 0 {
            self.insert_free(f.off + total, rest)?;
        }
        self.header
            .bytes_used
            .fetch_add(total + last_extra, Relaxed);
        self.header
            .blocks_used
            .fetch_add(sizes.len() as u64, Relaxed);
        Ok(())
    }

    /// Free the block whose payload starts at `payload` (as returned by
    /// [`Pool::allocate`]). Freeing anything else is an error, not UB.
    pub fn free(&self, payload: u64) -> Result<()> {
        let _g = self.lock()?;
        let b = self.used_block(payload)?;
        self.free_run(b.off, b.off + b.size, &[payload])
    }

    /// Free the used blocks tiling `start..end`, whose payloads are `run`
    /// (checked to be used blocks, back to back, by the caller), merging
    /// them with free neighbours into one free block. Call with the lock
    /// held. On an error nothing has changed.
    fn free_run(&self, start: u64, end: u64, run: &[u64]) -> Result<()> {
        // Validate both neighbours before changing anything, so that an error
        // leaves the pool as it was.
        let next = match end {
            n if n < self.end => Some(self.block(n)?).filter(|n| !n.used),
            _ => None,
        };
        let prev = match self.prev_size(start)? {
            0 => None,
            ps => Some(self.prev_block(start, ps)?).filter(|p| !p.used),
        };
        // Both must come out of their lists cleanly: a failure on the
        // second after the first was unlinked would leave the first in no
        // list, lost to every later allocation.
        for n in next.iter().chain(&prev) {
            self.check_listed(n.off, n.size)?;
        }
        let mut off = start;
        let mut size = end - start;
        if let Some(n) = &next {
            self.remove_free(n.off, n.size)?;
            size += n.size;
        }
        if let Some(p) = &prev {
            self.remove_free(p.off, p.size)?;
            off = p.off;
            size += p.size;
        }
        // One store makes the whole run (and its neighbours) one free block;
        // the headers it swallows are zeroed after it, so first the run mark
        // (at +16, free now that the neighbours are unlisted, or in the
        // payload of a block being freed), which a rebuild after our death in
        // between uses to clear them.
        self.mark_run(off, end)?;
        self.write_header(off, size, false)?;
        #[cfg(test)]
        if tests::crash_now() {
            return Ok(());
        }
        // Headers now inside the merged block must not pass for blocks: a
        // stale "in use" header would let a second free of a payload through.
        for &at in run {
            if at - HEADER != off {
                self.span.u64_at(at - HEADER)?.store(0, Relaxed);
            }
        }
        if let Some(n) = &next {
            self.span.u64_at(n.off)?.store(0, Relaxed);
        }
        if off + size < self.end {
            self.set_prev_size(off + size, size)?;
        }
        self.insert_free(off, size)?;
        self.header.bytes_used.fetch_sub(end - start, Relaxed);
        self.header.blocks_used.fetch_sub(run.len() as u64, Relaxed);
        Ok(())
    }

    /// Mark the free (or being freed) block at `off` as holding, up to `to`,
    /// a run whose block headers are not settled yet (see [`RUN_MARK`]).
    fn mark_run(&self, off: u64, to: u64) -> Result<()> {
        self.span.u64_at(off + 24)?.store(to, Relaxed);
        self.span.u64_at(off + 16)?.store(RUN_MARK, Relaxed);
        Ok(())
    }

    /// If the free block at `off` carries a run mark, the range it names.
    fn run_mark(&self, off: u64, size: u64) -> Result<Option<(u64, u64)>> {
        if size < MIN_BLOCK || self.span.u64_at(off + 16)?.load(Relaxed) != RUN_MARK {
            return Ok(None);
        }
        Ok(Some((off + 32, self.span.u64_at(off + 24)?.load(Relaxed))))
    }

    /// Zero every word in `from..to` (16-byte steps) that looks like a block
    /// header: inside a free block, such words are headers a run left behind.
    fn clear_stale_headers(&self, from: u64, to: u64) -> Result<()> {
        let mut at = from.next_multiple_of(ALIGN);
        while at < to {
            let w = self.span.u64_at(at)?;
            if w.load(Relaxed) & TAG_MASK == TAG {
                w.store(0, Relaxed);
            }
            at += ALIGN;
        }
        Ok(())
    }

    /// Payload capacity of an allocated block, without taking the pool lock.
    /// Only for blocks the caller holds a reference to: a block in use never
    /// changes its own header until it is freed.
    pub fn capacity_unlocked(&self, payload: u64) -> Result<u64> {
        Ok(self.used_block(payload)?.size - HEADER)
    }

    /// [`Pool::capacity_unlocked`] of an offset read from the region itself
    /// (a link from one structure to its block), not passed by a caller: if
    /// it is not an allocated block, the region contradicts itself, so the
    /// error is ERR_SHM_CORRUPT. `what` names the link for the message.
    pub fn linked_capacity(&self, payload: u64, what: &str) -> Result<u64> {
        self.capacity_unlocked(payload).map_err(|_| {
            Error::corrupt(format!(
                "{what} links offset {payload}, which is not an allocated block"
            ))
        })
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

    /// Every block in use, as (payload offset, payload capacity), in address
    /// order (for `repair`).
    pub fn used_blocks(&self) -> Result<Vec<(u64, u64)>> {
        let _g = self.lock()?;
        let mut out = Vec::new();
        let mut off = self.start;
        while off < self.end {
            let b = self.block(off)?;
            if b.used {
                out.push((off + HEADER, b.size - HEADER));
            }
            off += b.size;
        }
        if off != self.end {
            return Err(Error::corrupt("blocks overrun the arena"));
        }
        Ok(out)
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
                // Absorb any free blocks that follow, noting run marks (a run
                // carved or freed by a process that died before its headers
                // were settled: see RUN_MARK).
                let mut marks: Vec<(u64, u64)> = self.run_mark(off, size)?.into_iter().collect();
                while off + size < self.end {
                    let n = self.block(off + size)?;
                    if n.used {
                        break;
                    }
                    marks.extend(self.run_mark(n.off, n.size)?);
                    size += n.size;
                }
                for (from, to) in marks {
                    self.clear_stale_headers(from.max(off + 32), to.min(off + size))?;
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

    /// What `remove_free` needs of the free block at `off`, checked without
    /// changing anything: its list neighbours are free blocks of its class,
    /// and with no predecessor it heads its class's list.
    fn check_listed(&self, off: u64, size: u64) -> Result<()> {
        let (fl, sl) = mapping(size);
        let next = self.span.u64_at(off + 16)?.load(Relaxed);
        let prev = self.span.u64_at(off + 24)?.load(Relaxed);
        if next != 0 {
            self.free_block_in(next, fl, sl)?;
        }
        if prev != 0 {
            self.free_block_in(prev, fl, sl)?;
        } else if self.head(fl, sl)?.load(Relaxed) != off {
            return Err(Error::corrupt(format!("free block {off} is not linked")));
        }
        Ok(())
    }

    fn remove_free(&self, off: u64, size: u64) -> Result<()> {
        self.check_listed(off, size)?;
        let (fl, sl) = mapping(size);
        let next = self.span.u64_at(off + 16)?.load(Relaxed);
        let prev = self.span.u64_at(off + 24)?.load(Relaxed);
        if next != 0 {
            self.span.u64_at(next + 24)?.store(prev, Relaxed);
        }
        let head = self.head(fl, sl)?;
        if prev != 0 {
            self.span.u64_at(prev + 16)?.store(next, Relaxed);
        } else {
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
    #[inline]
    fn block(&self, off: u64) -> Result<Block> {
        if off < self.start || off >= self.end || !off.is_multiple_of(ALIGN) {
            return Err(block_outside(off));
        }
        let word = self.span.u64_at(off)?.load(Relaxed);
        let size = word & SIZE_MASK;
        if word & TAG_MASK != TAG || size < MIN_BLOCK || size > self.end - off {
            return Err(bad_header(off));
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

    #[inline]
    fn used_block(&self, payload: u64) -> Result<Block> {
        if let Some(o) = payload.checked_sub(HEADER) {
            if o >= self.start && o < self.end && o.is_multiple_of(ALIGN) {
                if let Ok(b) = self.block(o) {
                    if b.used {
                        return Ok(b);
                    }
                }
            }
        }
        Err(not_allocated(payload))
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

// Errors of the checks on every block access, built out of line (see
// Span::outside).
#[cold]
#[inline(never)]
fn block_outside(off: u64) -> Error {
    Error::corrupt(format!("block offset {off} is outside the pool"))
}

#[cold]
#[inline(never)]
fn bad_header(off: u64) -> Error {
    Error::corrupt(format!("block {off} has a bad header"))
}

#[cold]
#[inline(never)]
fn not_allocated(payload: u64) -> Error {
    Error::invalid(format!(
        "offset {payload} is not an allocated block of this pool (freed twice?)"
    ))
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
    use std::cell::Cell;

    thread_local! {
        /// Set by a test: the next run operation of this thread stops at its
        /// crash point (carve: before the store that publishes the run;
        /// free_run: after the store that frees it, before the swallowed
        /// headers are cleared), as a process killed there would.
        pub(super) static CRASH: Cell<bool> = const { Cell::new(false) };
    }

    pub(super) fn crash_now() -> bool {
        CRASH.with(|c| c.replace(false))
    }

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

/// Allocator tests on real regions in /dev/shm (single process).
#[cfg(test)]
mod region_tests {
    use super::*;
    use crate::scratch::Scratch;
    use proptest::prelude::*;

    fn code<T: std::fmt::Debug>(r: Result<T>) -> ErrorCode {
        r.expect_err("expected an error").code()
    }

    /// A byte pattern that depends on the block's id and position. Every byte
    /// has its top bit set, so no aligned word of it can carry the header tag
    /// (0x5B1C in the top 16 bits) and pass for a block header.
    fn pattern(id: u64, len: u64) -> Vec<u8> {
        (0..len)
            .map(|i| {
                let x = id
                    .wrapping_mul(0x9E37_79B9_7F4A_7C15)
                    .wrapping_add(i.wrapping_mul(0xBF58_476D_1CE4_E5B9));
                0x80 | (((x >> 57) as u8 ^ i as u8) & 0x7F)
            })
            .collect()
    }

    fn write_pattern(pool: &Pool<'_>, payload: u64, id: u64, len: u64) {
        pool.span()
            .write(payload, &pattern(id, len))
            .expect("payload inside the region");
    }

    fn assert_pattern(pool: &Pool<'_>, payload: u64, id: u64, len: u64) {
        let mut got = vec![0u8; len as usize];
        pool.span()
            .read(payload, &mut got)
            .expect("payload inside the region");
        assert!(
            got == pattern(id, len),
            "block {id} at {payload} (+{len}) was overwritten"
        );
    }

    #[test]
    fn freeing_everything_restores_the_initial_stats_exactly() {
        let s = Scratch::new("restore", 1 << 20);
        let pool = s.pool();
        let initial = pool.stats().unwrap();
        let initial_check = pool.check().unwrap();
        assert_eq!(initial_check.blocks_free, 1);
        assert_eq!(initial.bytes_used, initial_check.bytes_used);
        assert_eq!(initial.bytes_free, initial.bytes_total - initial.bytes_used);

        let sizes = [
            1u64, 15, 16, 17, 31, 32, 100, 255, 256, 257, 1000, 4096, 5000, 65_536,
        ];
        for round in 0..3 {
            let blocks: Vec<u64> = sizes.iter().map(|&n| pool.allocate(n).unwrap()).collect();
            let mid = pool.stats().unwrap();
            assert_eq!(mid.blocks_used, initial.blocks_used + sizes.len() as u64);
            let caps: u64 = blocks
                .iter()
                .map(|&p| pool.capacity(p).unwrap() + HEADER)
                .sum();
            assert_eq!(mid.bytes_used, initial.bytes_used + caps);
            // Free in a different order each round: forwards, backwards, odd/even.
            let mut order: Vec<usize> = (0..blocks.len()).collect();
            match round {
                0 => {}
                1 => order.reverse(),
                _ => order.sort_by_key(|&i| (i % 2, i)),
            }
            for i in order {
                pool.free(blocks[i]).unwrap();
            }
            assert_eq!(pool.stats().unwrap(), initial, "round {round}");
            assert_eq!(pool.check().unwrap(), initial_check, "round {round}");
        }
    }

    #[test]
    fn freeing_three_neighbours_in_any_order_coalesces_them() {
        let orders = [
            [0, 1, 2],
            [0, 2, 1],
            [1, 0, 2],
            [1, 2, 0],
            [2, 0, 1],
            [2, 1, 0],
        ];
        for order in orders {
            for fenced in [false, true] {
                let s = Scratch::new("coalesce", 128 * 1024);
                let pool = s.pool();
                let initial = pool.stats().unwrap();
                let p = [
                    pool.allocate(100).unwrap(),
                    pool.allocate(300).unwrap(),
                    pool.allocate(1000).unwrap(),
                ];
                let sizes: Vec<u64> = p
                    .iter()
                    .map(|&x| pool.capacity(x).unwrap() + HEADER)
                    .collect();
                // They are physical neighbours, carved in order from the one free block.
                assert_eq!(p[1], p[0] + sizes[0]);
                assert_eq!(p[2], p[1] + sizes[1]);
                // A fence keeps the third block from touching the free tail.
                let fence = fenced.then(|| pool.allocate(50).unwrap());
                let mut freed = [false; 3];
                for &i in &order {
                    pool.free(p[i]).unwrap();
                    freed[i] = true;
                    // Expected free blocks: runs of freed neighbours, plus the
                    // tail unless it merged with a freed third block.
                    let runs = (0..3)
                        .filter(|&k| freed[k] && (k == 0 || !freed[k - 1]))
                        .count();
                    let tail_merged = !fenced && freed[2];
                    let expect = runs as u64 + 1 - u64::from(tail_merged);
                    let c = pool.check().unwrap();
                    assert_eq!(
                        c.blocks_free, expect,
                        "order {order:?} fenced {fenced} freed {freed:?}"
                    );
                }
                let c = pool.check().unwrap();
                if let Some(f) = fence {
                    assert_eq!(c.blocks_free, 2, "order {order:?}");
                    // The merged block is exactly the three blocks.
                    let merged = pool.block(p[0] - HEADER).unwrap();
                    assert!(!merged.used);
                    assert_eq!(merged.size, sizes.iter().sum::<u64>());
                    pool.free(f).unwrap();
                }
                let c = pool.check().unwrap();
                assert_eq!(c.blocks_free, 1, "order {order:?} fenced {fenced}");
                assert_eq!(pool.stats().unwrap(), initial);
            }
        }
    }

    #[test]
    fn largest_free_is_exactly_the_largest_request_that_succeeds() {
        let s = Scratch::new("largest", 256 * 1024);
        let pool = s.pool();
        let initial = pool.stats().unwrap();
        assert_eq!(pool.check().unwrap().blocks_free, 1);
        let largest = initial.largest_free;
        assert!(largest > 0);
        assert_eq!(
            largest + HEADER,
            pool.check().unwrap().largest_free_block,
            "with one free block, largest_free is that block minus its header"
        );
        assert_eq!(code(pool.allocate(largest + 16)), ErrorCode::OutOfMemory);
        assert_eq!(code(pool.allocate(largest + 1)), ErrorCode::OutOfMemory);
        let p = pool.allocate(largest).unwrap();
        assert!(pool.capacity(p).unwrap() >= largest);
        let full = pool.stats().unwrap();
        assert_eq!(full.largest_free, 0);
        assert_eq!(full.bytes_free, 0);
        assert_eq!(code(pool.allocate(0)), ErrorCode::OutOfMemory);
        pool.check().unwrap();
        pool.free(p).unwrap();
        assert_eq!(pool.stats().unwrap(), initial);

        // With several free blocks of different sizes, largest_free is still
        // the biggest request that succeeds.
        let blocks: Vec<u64> = (0..40)
            .map(|i| pool.allocate(64 + i * 97).unwrap())
            .collect();
        for (i, &b) in blocks.iter().enumerate() {
            if i % 3 != 0 {
                pool.free(b).unwrap();
            }
        }
        for _ in 0..20 {
            let st = pool.stats().unwrap();
            if st.largest_free == 0 {
                break;
            }
            assert_eq!(
                code(pool.allocate(st.largest_free + 1)),
                ErrorCode::OutOfMemory
            );
            pool.allocate(st.largest_free).unwrap();
            pool.check().unwrap();
        }
    }

    #[test]
    fn out_of_memory_is_reported_and_leaves_the_pool_consistent() {
        let s = Scratch::new("oom", 128 * 1024);
        let pool = s.pool();
        let initial = pool.stats().unwrap();
        let initial_check = pool.check().unwrap();
        for n in [
            u64::MAX,
            u64::MAX - 15,
            1 << 40,
            initial.bytes_total,
            initial.bytes_total * 2,
        ] {
            assert_eq!(code(pool.allocate(n)), ErrorCode::OutOfMemory, "n = {n}");
        }
        assert_eq!(pool.stats().unwrap(), initial);
        assert_eq!(pool.check().unwrap(), initial_check);

        // Fill the pool with 1000-byte blocks until it refuses, then with
        // small ones, and make sure the refusals change nothing.
        let mut blocks = Vec::new();
        for n in [1000u64, 100, 0] {
            loop {
                match pool.allocate(n) {
                    Ok(p) => blocks.push(p),
                    Err(e) => {
                        assert_eq!(e.code(), ErrorCode::OutOfMemory);
                        break;
                    }
                }
            }
        }
        assert!(blocks.len() > 100);
        let full = pool.stats().unwrap();
        let c = pool.check().unwrap();
        assert_eq!(c.bytes_used, full.bytes_used);
        assert_eq!(c.blocks_used, full.blocks_used);
        assert_eq!(
            c.blocks_free, 0,
            "a pool that refuses 0 bytes has no free block"
        );
        assert_eq!(code(pool.allocate(0)), ErrorCode::OutOfMemory);
        assert_eq!(pool.stats().unwrap(), full);
        for p in blocks {
            pool.free(p).unwrap();
        }
        assert_eq!(pool.stats().unwrap(), initial);
        assert_eq!(pool.check().unwrap(), initial_check);
    }

    #[test]
    fn double_free_and_bogus_offsets_are_invalid_args_that_change_nothing() {
        let s = Scratch::new("bogus", 128 * 1024);
        let pool = s.pool();
        let a = pool.allocate(200).unwrap();
        let b = pool.allocate(200).unwrap();
        pool.span().fill(a, 200, 0).unwrap();
        let before = pool.stats().unwrap();
        let end = s.region().span().len();
        let bogus = [
            0,
            1,
            8,
            16,
            pool.start,
            pool.start + 8,
            a + 1,
            a + 8,
            a + 16,
            a + 32,
            a - HEADER,
            end,
            end - 16,
            end + 16,
            u64::MAX,
            u64::MAX - 15,
        ];
        for off in bogus {
            assert_eq!(code(pool.free(off)), ErrorCode::InvalidArg, "free({off})");
            assert_eq!(
                code(pool.capacity(off)),
                ErrorCode::InvalidArg,
                "capacity({off})"
            );
        }
        assert_eq!(pool.stats().unwrap(), before);
        pool.check().unwrap();

        pool.free(a).unwrap();
        assert_eq!(code(pool.free(a)), ErrorCode::InvalidArg);
        pool.check().unwrap();
        pool.free(b).unwrap();
        assert_eq!(code(pool.free(b)), ErrorCode::InvalidArg);
        assert_eq!(code(pool.free(a)), ErrorCode::InvalidArg);
        pool.check().unwrap();
        assert_eq!(pool.check().unwrap().blocks_free, 1);
    }

    /// Found by tests/fuzz_pipes.rs: a block marked free by its header but
    /// in no free list sat before the block being freed, whose other
    /// neighbour was the free tail of the arena. `free` took the tail out of
    /// its list, then failed on the unlisted block, so the tail was in no
    /// list any more and every later allocation was out of memory. A free
    /// that fails must leave the pool as it was.
    #[test]
    fn a_free_that_fails_on_a_neighbour_leaves_both_neighbours_listed() {
        let s = Scratch::new("freefail", 128 * 1024);
        let pool = s.pool();
        let a = pool.allocate(16).unwrap();
        let b = pool.allocate(64).unwrap();
        // `a` looks free, but no list holds it (as if a header was damaged).
        let blk = pool.block(a - HEADER).unwrap();
        pool.write_header(blk.off, blk.size, false).unwrap();
        let before = pool.stats().unwrap();
        assert_eq!(code(pool.free(b)), ErrorCode::Corrupt);
        assert_eq!(pool.stats().unwrap(), before, "nothing changed");
        let big = pool.allocate(before.largest_free).unwrap();
        pool.free(big).unwrap();
        assert_eq!(pool.stats().unwrap(), before);
    }

    /// A block freed next to a free neighbour is absorbed into it; its old
    /// header must not still say "in use", or a second free of it is taken
    /// for a valid one and damages the free lists.
    #[test]
    fn double_free_of_a_block_absorbed_by_its_neighbour_is_rejected_without_damage() {
        let s = Scratch::new("absorbed", 128 * 1024);
        let pool = s.pool();
        let initial = pool.stats().unwrap();
        let a = pool.allocate(64).unwrap();
        let b = pool.allocate(64).unwrap();
        let c = pool.allocate(64).unwrap();
        let fence = pool.allocate(64).unwrap();
        pool.free(a).unwrap();
        pool.free(b).unwrap(); // merges into a's block
        assert_eq!(code(pool.free(b)), ErrorCode::InvalidArg);
        pool.check().unwrap();

        // Reuse the merged block, free its right neighbour, then free the
        // stale `b` again: nothing may change.
        let ab = pool.allocate(64 + 64 + HEADER).unwrap();
        assert_eq!(ab, a, "the merged block is reused");
        pool.free(c).unwrap();
        let before = pool.check().unwrap();
        assert_eq!(code(pool.free(b)), ErrorCode::InvalidArg);
        assert_eq!(pool.check().unwrap(), before);

        pool.free(ab).unwrap();
        pool.free(fence).unwrap();
        assert_eq!(pool.stats().unwrap(), initial);
        assert_eq!(pool.check().unwrap().blocks_free, 1);
    }

    #[test]
    fn every_payload_is_16_byte_aligned_inside_the_arena_and_disjoint() {
        let s = Scratch::new("align", 1 << 20);
        let pool = s.pool();
        let initial = pool.stats().unwrap();
        let mut live: Vec<(u64, u64)> = Vec::new();
        for n in (0..=700u64).chain([1023, 1024, 1025, 4095, 4097, 10_000]) {
            let p = pool.allocate(n).unwrap();
            assert_eq!(p % ALIGN, 0, "payload of a {n}-byte block at {p}");
            let cap = pool.capacity(p).unwrap();
            assert!(cap >= n, "capacity {cap} < {n}");
            assert_eq!(cap % ALIGN, 0);
            assert!(p - HEADER >= pool.start && p + cap <= pool.end);
            write_pattern(&pool, p, p, cap);
            live.push((p, cap));
        }
        live.sort_unstable();
        for w in live.windows(2) {
            assert!(w[0].0 + w[0].1 + HEADER <= w[1].0, "blocks {w:?} overlap");
        }
        for &(p, cap) in &live {
            assert_pattern(&pool, p, p, cap);
        }
        pool.check().unwrap();
        for (i, &(p, _)) in live.iter().enumerate().rev() {
            if i % 2 == 0 {
                pool.free(p).unwrap();
            }
        }
        for (i, &(p, _)) in live.iter().enumerate() {
            if i % 2 == 1 {
                pool.free(p).unwrap();
            }
        }
        assert_eq!(pool.stats().unwrap(), initial);
    }

    #[test]
    fn rebuild_of_a_consistent_pool_changes_nothing_visible() {
        let s = Scratch::new("rebuild", 256 * 1024);
        let pool = s.pool();
        let blocks: Vec<u64> = (0..60)
            .map(|i| pool.allocate(i * 37 + 1).unwrap())
            .collect();
        for (i, &b) in blocks.iter().enumerate() {
            if i % 3 == 1 || i % 7 == 0 {
                pool.free(b).unwrap();
            }
        }
        let stats = pool.stats().unwrap();
        let c = pool.check().unwrap();
        pool.rebuild().unwrap();
        assert_eq!(pool.check().unwrap(), c);
        assert_eq!(pool.stats().unwrap(), stats);
        // And the pool works normally afterwards.
        let x = pool.allocate(500).unwrap();
        pool.free(x).unwrap();
        assert_eq!(pool.stats().unwrap(), stats);
    }

    /// Replay the first writes of a split (what `allocate` does), then stop
    /// as if the process died there; `rebuild` must make the pool whole.
    #[test]
    fn rebuild_repairs_a_pool_left_mid_allocation() {
        for stop_after in 0..5 {
            let s = Scratch::new("midalloc", 128 * 1024);
            let pool = s.pool();
            let keep = pool.allocate(300).unwrap();
            let initial = pool.stats().unwrap();
            let size = block_size_for(1000).unwrap();
            let b = pool.find_free(size).unwrap().unwrap();
            let rest = b.off + size;
            let rest_size = b.size - size;
            let steps: [&dyn Fn() -> Result<()>; 5] = [
                &|| pool.remove_free(b.off, b.size),
                &|| pool.write_header(rest, rest_size, false),
                &|| pool.set_prev_size(rest, size),
                &|| pool.write_header(b.off, size, true),
                &|| pool.insert_free(rest, rest_size),
            ];
            for step in &steps[..=stop_after] {
                step().unwrap();
            }
            pool.rebuild().unwrap();
            let c = pool.check().unwrap();
            let st = pool.stats().unwrap();
            if stop_after >= 3 {
                // The block was carved and marked in use: it stays in use
                // (its owner is gone, so it leaks, but the pool is sound).
                assert_eq!(st.blocks_used, initial.blocks_used + 1);
                assert_eq!(st.bytes_used, initial.bytes_used + size);
                pool.free(b.off + HEADER).unwrap();
            } else {
                assert_eq!(c.blocks_free, 1);
            }
            assert_eq!(
                pool.stats().unwrap(),
                initial,
                "stop after step {stop_after}"
            );
            pool.free(keep).unwrap();
            assert_eq!(pool.check().unwrap().blocks_free, 1);
        }
    }

    /// A process died after unlinking neighbours from their lists during a
    /// free, or after scribbling the counters: rebuild restores both.
    #[test]
    fn rebuild_repairs_emptied_free_lists_and_wrong_counters() {
        let s = Scratch::new("midfree", 128 * 1024);
        let pool = s.pool();
        let blocks: Vec<u64> = (0..20)
            .map(|i| pool.allocate(50 + i * 40).unwrap())
            .collect();
        for &b in blocks.iter().step_by(2) {
            pool.free(b).unwrap();
        }
        let stats = pool.stats().unwrap();
        let c = pool.check().unwrap();
        pool.header.fl_bitmap.store(0, Relaxed);
        for fl in 0..FL_COUNT {
            pool.header.sl_bitmap[fl].store(0, Relaxed);
            for sl in 0..SL_COUNT {
                pool.header.heads[fl][sl].store(0, Relaxed);
            }
        }
        pool.header.bytes_used.store(12_345, Relaxed);
        pool.header.blocks_used.store(999, Relaxed);
        // Break a back-link too: rebuild rewrites them from the walk.
        pool.set_prev_size(blocks[5] - HEADER, 16).unwrap();
        assert_eq!(code(pool.check()), ErrorCode::Corrupt);
        pool.rebuild().unwrap();
        assert_eq!(pool.check().unwrap(), c);
        assert_eq!(pool.stats().unwrap(), stats);
    }

    /// Two adjacent free blocks (which `free` never leaves, but a torn
    /// update could) are merged by rebuild.
    #[test]
    fn rebuild_merges_adjacent_free_blocks() {
        let s = Scratch::new("merge", 128 * 1024);
        let pool = s.pool();
        let initial = pool.stats().unwrap();
        let a = pool.allocate(100).unwrap();
        let b = pool.allocate(100).unwrap();
        let fence = pool.allocate(100).unwrap();
        // Mark both free by their headers only, as a dead process might have.
        for p in [a, b] {
            let blk = pool.block(p - HEADER).unwrap();
            pool.write_header(blk.off, blk.size, false).unwrap();
        }
        pool.rebuild().unwrap();
        let c = pool.check().unwrap();
        assert_eq!(c.blocks_free, 2, "a+b merged, plus the tail");
        pool.free(fence).unwrap();
        assert_eq!(pool.stats().unwrap(), initial);
        assert_eq!(pool.check().unwrap().blocks_free, 1);
    }

    /// A region whose size is not a multiple of 16 still gets a pool whose
    /// blocks tile it exactly.
    #[test]
    fn a_region_size_that_is_not_a_multiple_of_16_gives_a_consistent_pool() {
        for extra in [1u64, 8, 15, 4095] {
            let s = Scratch::new("oddsize", 64 * 1024 + extra);
            let pool = s.pool();
            let initial = pool.stats().unwrap();
            pool.check().unwrap();
            let mut blocks = Vec::new();
            while let Ok(p) = pool.allocate(100) {
                blocks.push(p);
            }
            pool.check().unwrap();
            for p in blocks {
                pool.free(p).unwrap();
            }
            pool.check().unwrap();
            assert_eq!(pool.stats().unwrap(), initial, "size 64 KiB + {extra}");
        }
    }

    /// A batch freed together: back-to-back blocks become one free block
    /// whatever the order given, a duplicate among them is refused without
    /// keeping the others allocated, and the pool ends as it began.
    #[test]
    fn free_many_merges_back_to_back_blocks_and_refuses_a_duplicate() {
        let s = Scratch::new("freemany", 128 * 1024);
        let pool = s.pool();
        let initial = pool.stats().unwrap();
        let blocks: Vec<u64> = (0..12)
            .map(|i| pool.allocate(40 + i * 8).unwrap())
            .collect();
        let fence = pool.allocate(64).unwrap();
        // Every other block of the first six, then the rest shuffled, with a
        // duplicate: runs of one and a run of several.
        pool.free_many(&[blocks[0], blocks[2], blocks[4]]).unwrap();
        assert_eq!(
            pool.check().unwrap().blocks_free,
            4,
            "three holes and the tail"
        );
        let mut rest = vec![blocks[9], blocks[1], blocks[11], blocks[3], blocks[7]];
        rest.extend([blocks[5], blocks[10], blocks[6], blocks[8], blocks[7]]);
        assert_eq!(code(pool.free_many(&rest)), ErrorCode::InvalidArg);
        let c = pool.check().unwrap();
        assert_eq!(c.blocks_free, 2, "the twelve merged into one, and the tail");
        assert_eq!(c.blocks_used, initial.blocks_used + 1);
        assert_eq!(code(pool.free(blocks[3])), ErrorCode::InvalidArg);
        pool.free(fence).unwrap();
        assert_eq!(pool.stats().unwrap(), initial);
        assert_eq!(pool.check().unwrap().blocks_free, 1);
    }

    /// A run is carved back to back from one free block, each block holding
    /// what was asked; the tail of a free block too small to stay free goes
    /// to the last block; a run no free block holds is refused whole.
    #[test]
    fn allocate_run_carves_back_to_back_blocks_or_nothing() {
        let s = Scratch::new("allocrun", 128 * 1024);
        let pool = s.pool();
        let initial = pool.stats().unwrap();
        let sizes = [1u64, 40, 100, 0, 300];
        let mut run = Vec::new();
        pool.allocate_run(&sizes, &mut run).unwrap();
        assert_eq!(run.len(), sizes.len());
        for (i, (&p, &n)) in run.iter().zip(&sizes).enumerate() {
            let cap = pool.capacity(p).unwrap();
            assert!(cap >= n);
            if let Some(&next) = run.get(i + 1) {
                assert_eq!(p + cap + HEADER, next, "block {i} is followed by the next");
            }
            write_pattern(&pool, p, i as u64, cap);
        }
        for (i, &p) in run.iter().enumerate() {
            assert_pattern(&pool, p, i as u64, pool.capacity(p).unwrap());
        }
        let c = pool.check().unwrap();
        let st = pool.stats().unwrap();
        assert_eq!(
            (c.bytes_used, c.blocks_used),
            (st.bytes_used, st.blocks_used)
        );
        assert_eq!(st.blocks_used, initial.blocks_used + 5);
        // Too large for any free block: refused, nothing taken.
        let before = pool.stats().unwrap();
        let mut none = Vec::new();
        let big = [st.largest_free / 2, st.largest_free / 2 + 64];
        assert_eq!(
            code(pool.allocate_run(&big, &mut none)),
            ErrorCode::OutOfMemory
        );
        assert!(none.is_empty());
        assert_eq!(pool.stats().unwrap(), before);
        // Exactly the largest free block less a sliver: the sliver is kept
        // by the last block, not left as a block too small to be one.
        let fill = [64, st.largest_free - 64 - HEADER - 24];
        let mut all = Vec::new();
        pool.allocate_run(&fill, &mut all).unwrap();
        assert_eq!(pool.stats().unwrap().largest_free, 0);
        // (8 bytes of rounding to 16, and the 16-byte sliver)
        assert_eq!(
            pool.capacity(all[1]).unwrap(),
            fill[1] + 8 + 16,
            "kept the sliver"
        );
        pool.check().unwrap();
        all.extend(run);
        pool.free_many(&all).unwrap();
        assert_eq!(pool.stats().unwrap(), initial);
        assert_eq!(pool.check().unwrap().blocks_free, 1);
    }

    /// A block cache hands out distinct, writable blocks; after its first
    /// few blocks of a size it carves runs (back to back, even where a
    /// fragmented pool would give plain allocations its holes), falls back
    /// to one block at a time when no free block holds a run, and gives
    /// back every spare on finish.
    #[test]
    fn a_block_cache_carves_runs_and_gives_back_its_spares() {
        let s = Scratch::new("cache", 1 << 20);
        let pool = s.pool();
        let initial = pool.stats().unwrap();
        // Holes of the size asked for below, one between each two blocks.
        let pins: Vec<u64> = (0..64).map(|_| pool.allocate(40).unwrap()).collect();
        for &p in pins.iter().step_by(2) {
            pool.free(p).unwrap();
        }
        let fragmented = pool.stats().unwrap();
        let mut got = Vec::new();
        {
            let cache = BlockCache::new(pool);
            let cached = pool.with_cache(&cache);
            for i in 0..600u64 {
                let p = cached.allocate(40).unwrap();
                write_pattern(&pool, p, i, 40);
                got.push(p);
            }
            cache.finish().unwrap();
        }
        for (i, &p) in got.iter().enumerate() {
            assert_pattern(&pool, p, i as u64, 40);
        }
        let mut sorted = got.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), got.len(), "a block was handed out twice");
        // Past the first runs, each block follows the one before it.
        let back_to_back = got
            .windows(2)
            .filter(|w| w[1] == w[0] + pool.capacity(w[0]).unwrap() + HEADER)
            .count();
        assert!(
            back_to_back >= 580,
            "only {back_to_back} of 599 back to back"
        );
        let st = pool.stats().unwrap();
        assert_eq!(
            st.blocks_used,
            fragmented.blocks_used + 600,
            "spares left over"
        );
        pool.free_many(&got).unwrap();
        assert_eq!(pool.stats().unwrap(), fragmented);

        // Full but for holes of one block each: no free block holds a run
        // (the cache must fall back to one block at a time), yet every
        // request that fits is met.
        let mut fill = Vec::new();
        while let Ok(p) = pool.allocate(40) {
            fill.push(p);
        }
        let mut holes = Vec::new();
        for (i, &p) in fill.iter().enumerate() {
            if i % 2 == 1 {
                pool.free(p).unwrap();
                holes.push(p);
            }
        }
        assert!(pool.stats().unwrap().largest_free < 2 * 64);
        let before = pool.stats().unwrap();
        let cache = BlockCache::new(pool);
        let cached = pool.with_cache(&cache);
        let few: Vec<u64> = (0..100).map(|_| cached.allocate(40).unwrap()).collect();
        cache.finish().unwrap();
        assert!(few.iter().all(|p| holes.contains(p)), "not from the holes");
        assert_eq!(pool.stats().unwrap().blocks_used, before.blocks_used + 100);
        pool.free_many(&few).unwrap();
        let kept: Vec<u64> = fill.iter().step_by(2).copied().collect();
        pool.free_many(&kept).unwrap();
        pool.free_many(&pins[1..].iter().step_by(2).copied().collect::<Vec<_>>())
            .unwrap();
        assert_eq!(pool.stats().unwrap(), initial);
        pool.check().unwrap();
    }

    /// A process killed in the middle of a run leaves "in use" headers
    /// inside a free block; the rebuild that follows (the next lock holder
    /// runs it) clears them, so a wrong free of such an offset is still
    /// refused instead of corrupting the free lists.
    #[test]
    fn a_rebuild_after_a_death_inside_a_run_leaves_no_header_a_wrong_free_could_use() {
        let s = Scratch::new("runcrash", 256 * 1024);
        let pool = s.pool();
        let initial = pool.stats().unwrap();
        // Dead inside allocate_run: the run's later headers were written,
        // the store that publishes the run was not.
        let mut run = Vec::new();
        super::tests::CRASH.with(|c| c.set(true));
        pool.allocate_run(&[100, 200, 300], &mut run).unwrap();
        pool.rebuild().unwrap();
        pool.check().unwrap();
        assert_eq!(
            pool.stats().unwrap(),
            initial,
            "nothing of the run is allocated"
        );
        for &p in &run[1..] {
            assert_eq!(
                code(pool.free(p)),
                ErrorCode::InvalidArg,
                "stale header at {p}"
            );
        }
        pool.check().unwrap();
        assert_eq!(pool.stats().unwrap(), initial);

        // Dead inside free_many: the run was freed by one store, its other
        // headers not yet cleared.
        let mut run = Vec::new();
        pool.allocate_run(&[64, 64, 64, 64], &mut run).unwrap();
        let fence = pool.allocate(64).unwrap();
        super::tests::CRASH.with(|c| c.set(true));
        pool.free_many(&run).unwrap();
        pool.rebuild().unwrap();
        pool.check().unwrap();
        for &p in &run {
            assert_eq!(
                code(pool.free(p)),
                ErrorCode::InvalidArg,
                "stale header at {p}"
            );
        }
        pool.check().unwrap();
        pool.free(fence).unwrap();
        assert_eq!(pool.stats().unwrap(), initial);
        assert_eq!(pool.check().unwrap().blocks_free, 1);
    }

    #[derive(Debug, Clone)]
    enum Op {
        Alloc(u64),
        Free(usize),
        /// Free an offset freed earlier (unless it was handed out again).
        FreeAgain(usize),
        /// free_many of up to 8 live blocks next to each other by offset,
        /// from a start index, with a stale offset among them if true.
        FreeMany(usize, usize, bool),
        /// allocate_run of these sizes.
        AllocRun(Vec<u64>),
        Check,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            5 => (0u64..=256).prop_map(Op::Alloc),
            2 => (257u64..=4096).prop_map(Op::Alloc),
            1 => (4097u64..=40_000).prop_map(Op::Alloc),
            6 => any::<usize>().prop_map(Op::Free),
            1 => any::<usize>().prop_map(Op::FreeAgain),
            2 => (any::<usize>(), any::<usize>(), any::<bool>()).prop_map(|(k, at, stale)| Op::FreeMany(k, at, stale)),
            2 => prop::collection::vec(0u64..=600, 1..10).prop_map(Op::AllocRun),
            1 => Just(Op::Check),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

        #[test]
        fn random_allocate_free_sequences_never_overlap_and_keep_the_pool_consistent(
            ops in prop::collection::vec(op(), 1..300)
        ) {
            let s = Scratch::new("prop", 128 * 1024);
            let pool = s.pool();
            let initial = pool.stats().unwrap();
            // Live blocks: (payload, capacity, id); freed payloads.
            let mut live: Vec<(u64, u64, u64)> = Vec::new();
            let mut freed: Vec<u64> = Vec::new();
            for (id, op) in ops.into_iter().enumerate() {
                let id = id as u64;
                match op {
                    Op::Alloc(n) => match pool.allocate(n) {
                        Ok(p) => {
                            prop_assert_eq!(p % ALIGN, 0);
                            let cap = pool.capacity(p).unwrap();
                            prop_assert!(cap >= n);
                            for &(q, qcap, _) in &live {
                                prop_assert!(
                                    p + cap + HEADER <= q || q + qcap + HEADER <= p,
                                    "new block {}+{} overlaps live {}+{}", p, cap, q, qcap
                                );
                            }
                            write_pattern(&pool, p, id, cap);
                            live.push((p, cap, id));
                        }
                        Err(e) => {
                            prop_assert_eq!(e.code(), ErrorCode::OutOfMemory);
                            // Refused only if no free block could hold it.
                            prop_assert!(pool.stats().unwrap().largest_free < n);
                        }
                    },
                    Op::Free(i) => {
                        if !live.is_empty() {
                            let (p, cap, bid) = live.swap_remove(i % live.len());
                            assert_pattern(&pool, p, bid, cap);
                            pool.free(p).unwrap();
                            freed.push(p);
                        }
                    }
                    Op::FreeAgain(i) => {
                        if !freed.is_empty() {
                            let p = freed[i % freed.len()];
                            if !live.iter().any(|&(q, _, _)| q == p) {
                                prop_assert_eq!(code(pool.free(p)), ErrorCode::InvalidArg);
                            }
                        }
                    }
                    Op::AllocRun(sizes) => {
                        let mut got = Vec::new();
                        match pool.allocate_run(&sizes, &mut got) {
                            Ok(()) => {
                                prop_assert_eq!(got.len(), sizes.len());
                                for (j, (&p, &n)) in got.iter().zip(&sizes).enumerate() {
                                    let cap = pool.capacity(p).unwrap();
                                    prop_assert!(cap >= n);
                                    for &(q, qcap, _) in &live {
                                        prop_assert!(p + cap + HEADER <= q || q + qcap + HEADER <= p);
                                    }
                                    let bid = id * 16 + j as u64;
                                    write_pattern(&pool, p, bid, cap);
                                    live.push((p, cap, bid));
                                }
                            }
                            Err(e) => {
                                prop_assert_eq!(e.code(), ErrorCode::OutOfMemory);
                                prop_assert!(got.is_empty());
                            }
                        }
                    }
                    Op::FreeMany(k, at, stale) => {
                        if !live.is_empty() {
                            live.sort_by_key(|l| l.0);
                            let k = (k % 8 + 1).min(live.len());
                            let at = at % (live.len() - k + 1);
                            let chosen: Vec<_> = live.drain(at..at + k).collect();
                            let mut ps = Vec::new();
                            for &(p, cap, bid) in chosen.iter().rev() {
                                assert_pattern(&pool, p, bid, cap);
                                ps.push(p);
                            }
                            let stale = freed
                                .iter()
                                .copied()
                                .rfind(|&f| stale && !live.iter().any(|l| l.0 == f) && !ps.contains(&f));
                            ps.extend(stale);
                            let r = pool.free_many(&ps);
                            match stale {
                                Some(_) => prop_assert_eq!(code(r), ErrorCode::InvalidArg),
                                None => prop_assert!(r.is_ok(), "{:?}", r),
                            }
                            freed.extend(chosen.iter().map(|c| c.0));
                        }
                    }
                    Op::Check => {
                        let c = pool.check().unwrap();
                        let st = pool.stats().unwrap();
                        prop_assert_eq!(c.bytes_used, st.bytes_used);
                        prop_assert_eq!(c.blocks_used, st.blocks_used);
                        prop_assert_eq!(c.largest_free_block.saturating_sub(HEADER), st.largest_free);
                        if st.largest_free > 0 {
                            prop_assert_eq!(code(pool.allocate(st.largest_free + 1)), ErrorCode::OutOfMemory);
                            let p = pool.allocate(st.largest_free).unwrap();
                            pool.free(p).unwrap();
                        }
                        for &(p, cap, bid) in &live {
                            assert_pattern(&pool, p, bid, cap);
                        }
                    }
                }
                let st = pool.stats().unwrap();
                let used: u64 = live.iter().map(|&(_, cap, _)| cap + HEADER).sum();
                prop_assert_eq!(st.bytes_used, initial.bytes_used + used);
                prop_assert_eq!(st.blocks_used, initial.blocks_used + live.len() as u64);
            }
            for &(p, cap, bid) in &live {
                assert_pattern(&pool, p, bid, cap);
            }
            pool.check().unwrap();
            for (p, cap, bid) in live {
                assert_pattern(&pool, p, bid, cap);
                pool.free(p).unwrap();
            }
            let c = pool.check().unwrap();
            prop_assert_eq!(c.blocks_free, 1);
            prop_assert_eq!(pool.stats().unwrap(), initial);
        }
    }
}
