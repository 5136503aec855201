//! Named pipes: the region's pipe directory (name → queue), and the seed's
//! ServerSide (creates a pipe) and ClientSide (waits for one) for Rust users.
//!
//! The directory header sits at the boot block's `pipe_dir_offset`; its
//! entries live in a separate block that doubles when full. Adding a pipe
//! bumps `version`, a futex word, and wakes everyone sleeping on it, so a
//! ClientSide waiting for a pipe sleeps instead of polling.
//!
//! A second ServerSide of a name that exists attaches to the same pipe when
//! the capacity matches (a restarted server picks up its queue) and is refused
//! with `ERR_SHM_EXISTS` when it does not; nothing is ever silently replaced.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};
use std::time::Instant;

use crate::error::{Error, ErrorCode, Result};
use crate::lock::ShmMutex;
use crate::platform;
use crate::queue::{validate_capacity, Queue};
use crate::region::{AttachOptions, Region};
use crate::value::Values;

pub const DIR_MAGIC: u64 = u64::from_le_bytes(*b"SHMPIPES");
pub const MAX_PIPE_NAME: usize = 63;
pub const ENTRY_SIZE: u64 = 96;

/// Shared-memory layout of the directory header (64 bytes).
#[repr(C)]
pub struct DirHeader {
    pub magic: AtomicU64,
    pub lock: ShmMutex,
    pub count: AtomicU64,
    pub cap: AtomicU64,
    /// Offset of the entries block (cap × 96 bytes), 0 while cap is 0.
    pub entries: AtomicU64,
    /// Bumped (and woken) whenever a pipe is added.
    pub version: AtomicU32,
    pub _pad: AtomicU32,
    pub _reserved: AtomicU64,
}
pub const DIR_HEADER_SIZE: u64 = std::mem::size_of::<DirHeader>() as u64;
const _: () = assert!(DIR_HEADER_SIZE == 64);
const _: () = assert!(std::mem::offset_of!(DirHeader, lock) == 8);
const _: () = assert!(std::mem::offset_of!(DirHeader, count) == 24);
const _: () = assert!(std::mem::offset_of!(DirHeader, cap) == 32);
const _: () = assert!(std::mem::offset_of!(DirHeader, entries) == 40);
const _: () = assert!(std::mem::offset_of!(DirHeader, version) == 48);

// Entry layout (96 bytes): name[64] (UTF-8, NUL-padded), queue u64 @64,
// capacity u64 @72, creator_pid u32 @80, flags u32 @84, created_ms u64 @88.
const E_QUEUE: u64 = 64;
const E_CAPACITY: u64 = 72;
const E_PID: u64 = 80;
const E_CREATED: u64 = 88;

/// One pipe, as `shmtools inspect` and the directory report it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PipeInfo {
    pub name: String,
    pub queue: u64,
    pub capacity: u64,
    pub creator_pid: u32,
    pub created_unix_ms: u64,
}

/// Check a pipe name: 1 ..= 63 bytes, no NUL.
pub fn validate_pipe_name(name: &str) -> Result<()> {
    if name.is_empty() || name.len() > MAX_PIPE_NAME || name.contains('\0') {
        return Err(Error::invalid(format!(
            "pipe name {name:?} must be 1 to {MAX_PIPE_NAME} bytes without NUL"
        )));
    }
    Ok(())
}

/// The pipe directory of a region.
#[derive(Clone, Copy)]
pub struct Directory<'a> {
    values: Values<'a>,
    header: &'a DirHeader,
    off: u64,
}

impl<'a> Directory<'a> {
    /// Lay out an empty directory at `off` (a zeroed block of at least 64 bytes).
    pub fn init(values: Values<'a>, off: u64) -> Result<()> {
        let h = header_at(values, off)?;
        h.lock.init();
        h.magic.store(DIR_MAGIC, Relaxed);
        Ok(())
    }

    pub fn open(region: &'a Region) -> Result<Directory<'a>> {
        let values = region.values()?;
        let off = region.info().pipe_dir_offset;
        let h = header_at(values, off)?;
        if h.magic.load(Relaxed) != DIR_MAGIC {
            return Err(Error::corrupt("the pipe directory has a bad magic number"));
        }
        Ok(Directory {
            values,
            header: h,
            off,
        })
    }

    fn entries(&self) -> Result<(u64, u64)> {
        let h = self.header;
        let (count, cap, entries) = (
            h.count.load(Relaxed),
            h.cap.load(Relaxed),
            h.entries.load(Relaxed),
        );
        if count > cap || (cap > 0 && entries == 0) {
            return Err(Error::corrupt(
                "the pipe directory's sizes contradict each other",
            ));
        }
        if cap > 0 {
            let room = self
                .values
                .pool()
                .linked_capacity(entries, "the pipe directory")?;
            if cap.saturating_mul(ENTRY_SIZE) > room {
                return Err(Error::corrupt(
                    "the pipe directory is larger than its block",
                ));
            }
        }
        Ok((count, entries))
    }

    /// The directory's own blocks: its header and its entries block (for
    /// `repair`).
    pub(crate) fn blocks(&self) -> Result<Vec<u64>> {
        let (_, entries) = self.entries()?;
        let cap = self.header.cap.load(Relaxed);
        Ok(if cap > 0 {
            vec![self.off, entries]
        } else {
            vec![self.off]
        })
    }

    fn read_entry(&self, e: u64) -> Result<PipeInfo> {
        let span = self.values.pool().span();
        let mut name = [0u8; 64];
        span.read(e, &mut name)?;
        let len = name.iter().position(|&b| b == 0).unwrap_or(64);
        let name = std::str::from_utf8(&name[..len])
            .map_err(|_| Error::corrupt("a pipe name is not UTF-8"))?
            .to_string();
        Ok(PipeInfo {
            name,
            queue: span.u64_at(e + E_QUEUE)?.load(Relaxed),
            capacity: span.u64_at(e + E_CAPACITY)?.load(Relaxed),
            creator_pid: span.u32_at(e + E_PID)?.load(Relaxed),
            created_unix_ms: span.u64_at(e + E_CREATED)?.load(Relaxed),
        })
    }

    fn find_locked(&self, name: &str) -> Result<Option<PipeInfo>> {
        let (count, entries) = self.entries()?;
        for i in 0..count {
            let p = self.read_entry(entries + i * ENTRY_SIZE)?;
            if p.name == name {
                return Ok(Some(p));
            }
        }
        Ok(None)
    }

    /// The pipe called `name`, if there is one.
    pub fn find(&self, name: &str) -> Result<Option<PipeInfo>> {
        validate_pipe_name(name)?;
        let _g = self.header.lock.lock();
        self.find_locked(name)
    }

    /// Every pipe, in creation order.
    pub fn list(&self) -> Result<Vec<PipeInfo>> {
        let _g = self.header.lock.lock();
        let (count, entries) = self.entries()?;
        (0..count)
            .map(|i| self.read_entry(entries + i * ENTRY_SIZE))
            .collect()
    }

    /// Create the pipe `name`, or return the existing one if its capacity is
    /// `capacity`. Returns the pipe and whether it was created now.
    pub fn create(&self, name: &str, capacity: u64) -> Result<(PipeInfo, bool)> {
        validate_pipe_name(name)?;
        validate_capacity(capacity)?;
        let g = self.header.lock.lock();
        if let Some(p) = self.find_locked(name)? {
            if p.capacity != capacity {
                return Err(Error::new(
                    ErrorCode::Exists,
                    format!(
                        "pipe '{name}' already exists with capacity {}, not {capacity}; use the same capacity to share it, or another name",
                        p.capacity
                    ),
                ));
            }
            return Ok((p, false));
        }
        let (count, entries) = self.entries()?;
        let cap = self.header.cap.load(Relaxed);
        let entries = if count == cap {
            self.grow(count, cap, entries)?
        } else {
            entries
        };
        let queue = Queue::create(self.values, capacity)?;
        let info = PipeInfo {
            name: name.to_string(),
            queue,
            capacity,
            creator_pid: platform::current_pid(),
            created_unix_ms: platform::now_unix_ms(),
        };
        let e = entries + count * ENTRY_SIZE;
        let span = self.values.pool().span();
        let mut raw = [0u8; 64];
        raw[..name.len()].copy_from_slice(name.as_bytes());
        span.write(e, &raw)?;
        span.u64_at(e + E_QUEUE)?.store(queue, Relaxed);
        span.u64_at(e + E_CAPACITY)?.store(capacity, Relaxed);
        span.u32_at(e + E_PID)?.store(info.creator_pid, Relaxed);
        span.u64_at(e + E_CREATED)?
            .store(info.created_unix_ms, Relaxed);
        self.header.count.store(count + 1, Relaxed);
        drop(g);
        self.header
            .version
            .fetch_add(1, std::sync::atomic::Ordering::Release);
        platform::futex_wake(&self.header.version, u32::MAX);
        Ok((info, true))
    }

    fn grow(&self, count: u64, cap: u64, entries: u64) -> Result<u64> {
        let new_cap = (cap * 2).max(8);
        let pool = self.values.pool();
        let block = pool.allocate(new_cap * ENTRY_SIZE)?;
        let span = pool.span();
        if count > 0 {
            let mut buf = vec![0u8; (count * ENTRY_SIZE) as usize];
            span.read(entries, &mut buf)?;
            span.write(block, &buf)?;
        }
        self.header.entries.store(block, Relaxed);
        self.header.cap.store(new_cap, Relaxed);
        if cap > 0 {
            pool.free(entries)?;
        }
        Ok(block)
    }

    /// Wait until a pipe called `name` exists. Sleeps on the directory's
    /// futex between looks (no polling); `break_checker` is consulted at least
    /// every `poll`.
    pub fn wait_for(&self, name: &str, opts: &AttachOptions<'_>) -> Result<PipeInfo> {
        validate_pipe_name(name)?;
        let deadline = platform::deadline(opts.timeout);
        loop {
            let seen = self
                .header
                .version
                .load(std::sync::atomic::Ordering::Acquire);
            if let Some(p) = self.find(name)? {
                return Ok(p);
            }
            let nap = opts.next_nap(deadline, &format!("pipe '{name}'"), "its ServerSide")?;
            platform::futex_wait(&self.header.version, seen, Some(nap));
        }
    }

    /// The directory's version (bumped whenever a pipe is added).
    pub fn version(&self) -> u32 {
        self.header
            .version
            .load(std::sync::atomic::Ordering::Acquire)
    }

    /// Region offset of the version futex word.
    pub fn version_offset(&self) -> u64 {
        self.off + std::mem::offset_of!(DirHeader, version) as u64
    }

    /// The queue of a pipe.
    pub fn queue(&self, p: &PipeInfo) -> Result<Queue<'a>> {
        Queue::open(self.values, p.queue)
    }
}

fn header_at<'a>(values: Values<'a>, off: u64) -> Result<&'a DirHeader> {
    if !off.is_multiple_of(16) {
        return Err(Error::corrupt("the pipe directory is misaligned"));
    }
    let p = values.pool().span().ptr_at(off, DIR_HEADER_SIZE)?;
    // SAFETY: in bounds (ptr_at) and 16-aligned; DirHeader is all atomics.
    Ok(unsafe { &*(p as *const DirHeader) })
}

/// One end of a pipe: the mapped region and the pipe's directory entry.
/// What ServerSide and ClientSide have once started.
pub struct PipeEnd {
    region: Region,
    pipe: PipeInfo,
}

impl PipeEnd {
    /// The pipe's queue (the seed's `CQ& pipe()`).
    pub fn pipe(&self) -> Result<Queue<'_>> {
        Directory::open(&self.region)?.queue(&self.pipe)
    }

    pub fn info(&self) -> &PipeInfo {
        &self.pipe
    }

    pub fn region(&self) -> &Region {
        &self.region
    }

    /// The region's values, to make shared values to send (the seed's `pool()`).
    pub fn values(&self) -> Result<Values<'_>> {
        self.region.values()
    }
}

/// The seed's ServerSide: attaches to the region (waiting for it) and creates
/// the pipe, or joins it if it exists with the same capacity.
pub struct ServerSide(PipeEnd);

impl ServerSide {
    pub fn start(
        region: &str,
        pipe: &str,
        capacity: u64,
        opts: &AttachOptions<'_>,
    ) -> Result<ServerSide> {
        validate_pipe_name(pipe)?;
        validate_capacity(capacity)?;
        let region = Region::attach(region, opts)?;
        let (info, _) = Directory::open(&region)?.create(pipe, capacity)?;
        Ok(ServerSide(PipeEnd { region, pipe: info }))
    }
}

impl std::ops::Deref for ServerSide {
    type Target = PipeEnd;
    fn deref(&self) -> &PipeEnd {
        &self.0
    }
}

/// The seed's ClientSide: waits for the region and then for the pipe.
pub struct ClientSide(PipeEnd);

impl ClientSide {
    pub fn start(region: &str, pipe: &str, opts: &AttachOptions<'_>) -> Result<ClientSide> {
        validate_pipe_name(pipe)?;
        let started = Instant::now();
        let region = Region::attach(region, opts)?;
        let left = AttachOptions {
            timeout: opts.timeout.map(|t| t.saturating_sub(started.elapsed())),
            poll: opts.poll,
            break_checker: opts.break_checker,
            debug: opts.debug,
        };
        let info = Directory::open(&region)?.wait_for(pipe, &left)?;
        Ok(ClientSide(PipeEnd { region, pipe: info }))
    }
}

impl std::ops::Deref for ClientSide {
    type Target = PipeEnd;
    fn deref(&self) -> &PipeEnd {
        &self.0
    }
}
