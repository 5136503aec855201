//! The boot block: the first 4 KiB page of every region. It says what the
//! object is (magic, layout version), whether it is ready, who made it and
//! when, and where the pool and the pipe directory are. See docs/LAYOUT.md.
//!
//! The creator fills every field while `magic` is still 0 and `state` is
//! INITIALIZING, stores `magic`, then publishes READY with release ordering
//! and wakes futex waiters on `state`. A reader loads `state` with acquire
//! ordering before it trusts anything else, then checks the header checksum
//! and every offset against the size of the file it actually mapped.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use crate::error::{Error, ErrorCode, Result};
use crate::mem::Span;
use crate::pool;

pub const MAGIC: u64 = u64::from_le_bytes(*b"SHMTOOLS");
/// 4: queue packets may be packed (slot tag 15), which a version-3 reader
/// would refuse as an unknown tag. 7: each queue has a producers' and a
/// consumers' lock, where a version-6 process would take only the one. 8:
/// the queue header is five lines with each side's caches of the other's
/// counters, and waiters watch the counters (a version-7 process would
/// read the counters at other offsets).
pub const LAYOUT_VERSION: u32 = 8;
/// The boot block occupies the whole first page; the pool header follows.
pub const BOOT_SIZE: u64 = 4096;

pub const STATE_INITIALIZING: u32 = 0;
pub const STATE_READY: u32 = 1;
pub const STATE_CLOSING: u32 = 2;

/// Shared-memory layout of the boot block's fields (the rest of the page is
/// zero and reserved).
#[repr(C)]
pub struct BootBlock {
    pub magic: AtomicU64,
    pub layout_version: AtomicU32,
    /// INITIALIZING / READY / CLOSING; a futex word.
    pub state: AtomicU32,
    pub region_size: AtomicU64,
    /// Incarnation of this name: one more than the region it replaced.
    pub generation: AtomicU64,
    pub creator_pid: AtomicU32,
    /// Size of the boot block (BOOT_SIZE), so readers can find the pool.
    pub boot_size: AtomicU32,
    /// Creator's start time in clock ticks since boot (/proc/<pid>/stat #22).
    pub creator_start_time: AtomicU64,
    /// Wall-clock creation time, milliseconds since the Unix epoch.
    pub created_unix_ms: AtomicU64,
    pub pool_offset: AtomicU64,
    pub pool_size: AtomicU64,
    pub pipe_dir_offset: AtomicU64,
    /// Offset of the holder table (who is attached, who holds what).
    pub holders_offset: AtomicU64,
    /// FNV-1a over every field above except `state` (see `checksum`).
    pub checksum: AtomicU64,
}

pub const BOOT_FIELDS_SIZE: u64 = std::mem::size_of::<BootBlock>() as u64;
const _: () = assert!(BOOT_FIELDS_SIZE == 96);
const _: () = assert!(std::mem::offset_of!(BootBlock, magic) == 0);
const _: () = assert!(std::mem::offset_of!(BootBlock, layout_version) == 8);
const _: () = assert!(std::mem::offset_of!(BootBlock, state) == 12);
const _: () = assert!(std::mem::offset_of!(BootBlock, region_size) == 16);
const _: () = assert!(std::mem::offset_of!(BootBlock, generation) == 24);
const _: () = assert!(std::mem::offset_of!(BootBlock, creator_pid) == 32);
const _: () = assert!(std::mem::offset_of!(BootBlock, boot_size) == 36);
const _: () = assert!(std::mem::offset_of!(BootBlock, creator_start_time) == 40);
const _: () = assert!(std::mem::offset_of!(BootBlock, created_unix_ms) == 48);
const _: () = assert!(std::mem::offset_of!(BootBlock, pool_offset) == 56);
const _: () = assert!(std::mem::offset_of!(BootBlock, pool_size) == 64);
const _: () = assert!(std::mem::offset_of!(BootBlock, pipe_dir_offset) == 72);
const _: () = assert!(std::mem::offset_of!(BootBlock, holders_offset) == 80);
const _: () = assert!(std::mem::offset_of!(BootBlock, checksum) == 88);
const _: () = assert!(BOOT_FIELDS_SIZE <= BOOT_SIZE);

/// A validated copy of the boot block's fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BootInfo {
    pub layout_version: u32,
    pub state: u32,
    pub region_size: u64,
    pub generation: u64,
    pub creator_pid: u32,
    pub creator_start_time: u64,
    pub created_unix_ms: u64,
    pub pool_offset: u64,
    pub pool_size: u64,
    pub pipe_dir_offset: u64,
    pub holders_offset: u64,
}

impl BootInfo {
    pub fn state_name(&self) -> &'static str {
        match self.state {
            STATE_INITIALIZING => "initializing",
            STATE_READY => "ready",
            STATE_CLOSING => "closing",
            _ => "unknown",
        }
    }

    fn checksum(&self) -> u64 {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        let words = [
            MAGIC,
            self.layout_version as u64,
            self.region_size,
            self.generation,
            self.creator_pid as u64,
            BOOT_SIZE,
            self.creator_start_time,
            self.created_unix_ms,
            self.pool_offset,
            self.pool_size,
            self.pipe_dir_offset,
            self.holders_offset,
        ];
        for w in words {
            for b in w.to_le_bytes() {
                h ^= b as u64;
                h = h.wrapping_mul(0x0100_0000_01b3);
            }
        }
        h
    }
}

pub fn boot_block<'a>(span: Span<'a>) -> Result<&'a BootBlock> {
    let p = span.ptr_at(0, BOOT_FIELDS_SIZE)?;
    // SAFETY: offset 0 of a page-aligned mapping of at least BOOT_FIELDS_SIZE
    // bytes (checked); BootBlock consists only of atomics, valid for any bits.
    Ok(unsafe { &*(p as *const BootBlock) })
}

/// Write every field but `magic` and `state`; the caller publishes after
/// laying out the pool.
pub fn write(b: &BootBlock, info: &BootInfo) {
    let r = Ordering::Relaxed;
    b.layout_version.store(info.layout_version, r);
    b.region_size.store(info.region_size, r);
    b.generation.store(info.generation, r);
    b.creator_pid.store(info.creator_pid, r);
    b.boot_size.store(BOOT_SIZE as u32, r);
    b.creator_start_time.store(info.creator_start_time, r);
    b.created_unix_ms.store(info.created_unix_ms, r);
    b.pool_offset.store(info.pool_offset, r);
    b.pool_size.store(info.pool_size, r);
    b.pipe_dir_offset.store(info.pipe_dir_offset, r);
    b.holders_offset.store(info.holders_offset, r);
    b.checksum.store(info.checksum(), r);
    b.state.store(STATE_INITIALIZING, r);
}

/// Make the region visible to attachers: magic, then READY (release), then
/// wake anyone sleeping on the state word.
pub fn publish(b: &BootBlock) {
    b.magic.store(MAGIC, Ordering::Release);
    b.state.store(STATE_READY, Ordering::Release);
    crate::platform::futex_wake(&b.state, u32::MAX);
}

/// What a reader found in the first page.
pub enum Peek {
    /// Zero magic: a creator is still laying the region out.
    Unwritten,
    /// Our magic and version, state not READY yet (or CLOSING).
    NotReady(BootInfo),
    Ready(BootInfo),
}

fn read_fields(b: &BootBlock, state: u32) -> BootInfo {
    let r = Ordering::Relaxed;
    BootInfo {
        layout_version: b.layout_version.load(r),
        state,
        region_size: b.region_size.load(r),
        generation: b.generation.load(r),
        creator_pid: b.creator_pid.load(r),
        creator_start_time: b.creator_start_time.load(r),
        created_unix_ms: b.created_unix_ms.load(r),
        pool_offset: b.pool_offset.load(r),
        pool_size: b.pool_size.load(r),
        pipe_dir_offset: b.pipe_dir_offset.load(r),
        holders_offset: b.holders_offset.load(r),
    }
}

/// Read the boot block of a mapped object of `file_size` bytes and decide
/// what it is. Never trusts a field it has not checked.
pub fn peek(span: Span<'_>, name: &str) -> Result<Peek> {
    let b = boot_block(span)?;
    let state = b.state.load(Ordering::Acquire);
    let magic = b.magic.load(Ordering::Acquire);
    if magic == 0 {
        return Ok(Peek::Unwritten);
    }
    if magic != MAGIC {
        return Err(Error::new(
            ErrorCode::Incompatible,
            format!("'{name}' is not a shmtools region (unknown magic {magic:#018x}); remove it or pick another name"),
        ));
    }
    let version = b.layout_version.load(Ordering::Relaxed);
    if version != LAYOUT_VERSION {
        return Err(Error::new(
            ErrorCode::Incompatible,
            format!("region '{name}' has layout version {version}, this build reads version {LAYOUT_VERSION}; use matching shmtools versions"),
        ));
    }
    let info = read_fields(b, state);
    if state != STATE_READY {
        return Ok(Peek::NotReady(info));
    }
    validate(&info, b.checksum.load(Ordering::Relaxed), span.len(), name)?;
    Ok(Peek::Ready(info))
}

fn validate(info: &BootInfo, checksum: u64, file_size: u64, name: &str) -> Result<()> {
    let bad = |what: &str| {
        Err(Error::corrupt(format!(
            "region '{name}': {what}; remove it (SHMMain.remove) and create it again"
        )))
    };
    if checksum != info.checksum() {
        return bad("the boot block's checksum does not match its fields");
    }
    if info.region_size != file_size {
        return bad("the boot block's size contradicts the size of the file");
    }
    if info.pool_offset != BOOT_SIZE
        || info.pool_offset.checked_add(info.pool_size) != Some(info.region_size)
    {
        return bad("the boot block's pool bounds contradict the region");
    }
    let arena = info.pool_offset + pool::arena_offset_in_pool();
    if info.pipe_dir_offset < arena
        || !info.pipe_dir_offset.is_multiple_of(pool::ALIGN)
        || info.pipe_dir_offset >= info.region_size
    {
        return bad("the pipe directory offset lies outside the pool");
    }
    if info.holders_offset < arena
        || !info.holders_offset.is_multiple_of(pool::ALIGN)
        || info.holders_offset >= info.region_size
    {
        return bad("the holder table offset lies outside the pool");
    }
    Ok(())
}
