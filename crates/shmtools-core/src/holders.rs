//! Who holds what: a table of the processes attached to a region, each with a
//! ledger of the references it holds, so the share of a process that died
//! (SIGKILL, a crash, `process.exit` without closing) can be given back.
//!
//! Each attached `Region` is one *session*: a 64-byte record in the holder
//! table naming the process (pid + start time, so a reused pid is not taken
//! for the dead one) and the offset of its *ledger*, an array of u64 entries
//! in a pool block. An entry is `kind << 56 | offset`: a value slot's tag and
//! its object, or [`RAW`] and a block taken from the pool directly. Only the
//! owning process writes its ledger while it lives; after it dies, one
//! reclaimer (under the table lock) releases every entry and frees the ledger.
//!
//! Ordering keeps every crash window on the safe side: a reference enters the
//! ledger only after the process owns it, and leaves the ledger before it is
//! given away or released. So a process killed between the two steps leaks
//! that one reference; it is never released twice. To know when that
//! happened, a session counts the operations it has in progress in its `busy`
//! word; a session found dead with `busy != 0` (or a reclaim that itself was
//! cut short) sets the table's `needs_repair`, and [`crate::Region::repair`]
//! (run by `gc` when no other process is attached) rebuilds every reference
//! count from what is reachable and frees the rest.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::error::{Error, ErrorCode, Result};
use crate::lock::{Guard, ShmMutex};
use crate::mem::Span;
use crate::platform;
use crate::pool::Pool;
use crate::value::{Slot, Values};

pub const HOLDERS_MAGIC: u64 = u64::from_le_bytes(*b"SHMHOLDR");
/// Ledger entry kind of a raw pool block (not a value).
pub const RAW: u8 = 0xFF;
/// Entries of a fresh ledger (and the size it shrinks back to when empty).
pub const LEDGER_START: u64 = 256;
/// Most entries a ledger may grow to (one process holding 16M references).
pub const LEDGER_MAX: u64 = 1 << 24;
const OFF_MASK: u64 = (1 << 56) - 1;

pub const STATE_FREE: u32 = 0;
pub const STATE_LIVE: u32 = 1;

/// How many sessions a region of `bytes` has room for: one per 4 KiB, at
/// least 32, at most 1024.
pub fn capacity_for(bytes: u64) -> u32 {
    (bytes / 4096).clamp(32, 1024) as u32
}

/// Shared-memory layout of the holder table's header (64 bytes); `capacity`
/// records of [`HolderRecord`] follow.
#[repr(C)]
pub struct HoldersHeader {
    pub magic: AtomicU64,
    /// Taken to add, remove or reclaim a session, and by `repair`.
    pub lock: ShmMutex,
    pub capacity: AtomicU32,
    /// 1 when a reclaim could not be exact (a process died inside an
    /// operation): `repair` should run when nobody else is attached.
    pub needs_repair: AtomicU32,
    /// Dead sessions reclaimed since creation.
    pub reclaimed_sessions: AtomicU64,
    /// References and raw blocks those reclaims gave back.
    pub reclaimed_refs: AtomicU64,
    /// Completed repairs.
    pub repairs: AtomicU64,
    /// Reclaims that could not be exact (the process died inside an
    /// operation, or a reclaimer died mid-way).
    pub uncertain_reclaims: AtomicU64,
}
pub const HOLDERS_HEADER_SIZE: u64 = std::mem::size_of::<HoldersHeader>() as u64;
const _: () = assert!(HOLDERS_HEADER_SIZE == 64);
const _: () = assert!(std::mem::offset_of!(HoldersHeader, lock) == 8);
const _: () = assert!(std::mem::offset_of!(HoldersHeader, capacity) == 24);
const _: () = assert!(std::mem::offset_of!(HoldersHeader, needs_repair) == 28);
const _: () = assert!(std::mem::offset_of!(HoldersHeader, reclaimed_sessions) == 32);
const _: () = assert!(std::mem::offset_of!(HoldersHeader, reclaimed_refs) == 40);
const _: () = assert!(std::mem::offset_of!(HoldersHeader, repairs) == 48);
const _: () = assert!(std::mem::offset_of!(HoldersHeader, uncertain_reclaims) == 56);

/// Shared-memory layout of one session (64 bytes).
#[repr(C)]
pub struct HolderRecord {
    /// FREE or LIVE.
    pub state: AtomicU32,
    pub pid: AtomicU32,
    /// The process's start time (clock ticks since boot, /proc/<pid>/stat #22).
    pub start_time: AtomicU64,
    /// Offset of the ledger block (u64 entries), 0 while there is none.
    pub ledger: AtomicU64,
    /// Operations in progress that move references (0 when idle).
    pub busy: AtomicU32,
    /// 1 while a reclaimer is giving this dead session's share back.
    pub reclaiming: AtomicU32,
    pub attached_unix_ms: AtomicU64,
    /// Live ledger entries (kept by the owner, for `inspect`).
    pub held: AtomicU64,
    /// A number drawn at registration: tells a session its record is still
    /// its own (not reclaimed and handed to someone else).
    pub nonce: AtomicU64,
    /// References this session took but could not record (its ledger could
    /// not grow). While non-zero, this process may not run a repair (it
    /// would free them under its own feet); the table's `needs_repair` is
    /// set, so a later process repairs once alone.
    pub unrecorded: AtomicU64,
}
pub const RECORD_SIZE: u64 = std::mem::size_of::<HolderRecord>() as u64;
const _: () = assert!(RECORD_SIZE == 64);
const _: () = assert!(std::mem::offset_of!(HolderRecord, pid) == 4);
const _: () = assert!(std::mem::offset_of!(HolderRecord, start_time) == 8);
const _: () = assert!(std::mem::offset_of!(HolderRecord, ledger) == 16);
const _: () = assert!(std::mem::offset_of!(HolderRecord, busy) == 24);
const _: () = assert!(std::mem::offset_of!(HolderRecord, reclaiming) == 28);
const _: () = assert!(std::mem::offset_of!(HolderRecord, attached_unix_ms) == 32);
const _: () = assert!(std::mem::offset_of!(HolderRecord, held) == 40);
const _: () = assert!(std::mem::offset_of!(HolderRecord, nonce) == 48);
const _: () = assert!(std::mem::offset_of!(HolderRecord, unrecorded) == 56);

/// One session as `inspect` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HolderInfo {
    pub index: u32,
    pub pid: u32,
    pub start_time: u64,
    pub attached_unix_ms: u64,
    pub held: u64,
    pub alive: bool,
    /// This process's own session (the caller's `Region`).
    pub own: bool,
}

/// What a reclaim gave back.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Reclaim {
    pub sessions: u64,
    pub references: u64,
    pub raw_blocks: u64,
    /// Sessions that died inside an operation: what they had in hand at that
    /// instant may still be held until the next repair.
    pub uncertain: u64,
}

/// What a repair found and fixed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Repair {
    pub blocks_freed: u64,
    pub bytes_freed: u64,
    pub refcounts_fixed: u64,
    pub objects_live: u64,
}

/// The holder table of a mapped region.
#[derive(Clone, Copy)]
pub struct Holders<'a> {
    span: Span<'a>,
    off: u64,
    header: &'a HoldersHeader,
    capacity: u32,
}

impl<'a> Holders<'a> {
    /// Allocate and lay out an empty table for `capacity` sessions.
    pub fn create(pool: Pool<'a>, capacity: u32) -> Result<u64> {
        let bytes = HOLDERS_HEADER_SIZE + capacity as u64 * RECORD_SIZE;
        let off = pool.allocate(bytes)?;
        pool.span().fill(off, bytes, 0)?;
        let t = Holders::at(pool.span(), off)?;
        t.header.lock.init();
        t.header.capacity.store(capacity, Relaxed);
        t.header
            .magic
            .store(HOLDERS_MAGIC, std::sync::atomic::Ordering::Release);
        Ok(off)
    }

    fn at(span: Span<'a>, off: u64) -> Result<Holders<'a>> {
        if !off.is_multiple_of(16) {
            return Err(Error::corrupt("the holder table is misaligned"));
        }
        let p = span.ptr_at(off, HOLDERS_HEADER_SIZE)?;
        // SAFETY: in bounds (ptr_at) and 16-aligned; HoldersHeader is all
        // atomics, valid for any bit pattern.
        let header = unsafe { &*(p as *const HoldersHeader) };
        Ok(Holders {
            span,
            off,
            header,
            capacity: 0,
        })
    }

    /// Open the table at `off`, validating its header against the span.
    pub fn open(span: Span<'a>, off: u64) -> Result<Holders<'a>> {
        let mut t = Holders::at(span, off)?;
        if t.header.magic.load(std::sync::atomic::Ordering::Acquire) != HOLDERS_MAGIC {
            return Err(Error::corrupt(format!("no holder table at offset {off}")));
        }
        let cap = t.header.capacity.load(Relaxed);
        let bytes = HOLDERS_HEADER_SIZE + cap as u64 * RECORD_SIZE;
        if cap == 0 || cap > 1 << 16 || !span.contains(off, bytes) {
            return Err(Error::corrupt("the holder table has a bad capacity"));
        }
        t.capacity = cap;
        Ok(t)
    }

    pub fn offset(&self) -> u64 {
        self.off
    }

    pub fn capacity(&self) -> u32 {
        self.capacity
    }

    pub fn header(&self) -> &'a HoldersHeader {
        self.header
    }

    pub fn record(&self, i: u32) -> Result<&'a HolderRecord> {
        if i >= self.capacity {
            return Err(Error::invalid(format!("no holder record {i}")));
        }
        record_at(self.span, record_offset(self.off, i))
    }

    fn lock(&self) -> Guard<'a> {
        // A holder of this lock that died mid-update left at worst a record
        // half written while still FREE, or a reclaim half done (flagged by
        // `reclaiming`); both are handled where they are read.
        self.header.lock.lock()
    }

    /// Claim a record for this process and give it a fresh ledger. Dead
    /// sessions are reclaimed first when the table is full. A pool too full
    /// for the ledger does not stop the attach: the ledger is then made with
    /// the first reference held.
    pub fn register(&self, values: Values<'a>) -> Result<Session> {
        let pid = platform::current_pid();
        let start = platform::current_process_start_time();
        let _g = self.lock();
        let mut found = self.find_free()?;
        if found.is_none() {
            self.reclaim_locked(values)?;
            found = self.find_free()?;
        }
        let Some(i) = found else {
            return Err(Error::new(
                ErrorCode::Busy,
                format!(
                    "all {} holder records of this region are taken by live processes; close regions you no longer use, or create the region larger (one record per 4 KiB, up to 1024)",
                    self.capacity
                ),
            ));
        };
        let r = self.record(i)?;
        // Allocated under the table lock, so a repair (which holds it) never
        // sees the new ledger before the record that owns it.
        let ledger = new_ledger(values.pool(), LEDGER_START).unwrap_or(0);
        let cap = if ledger == 0 { 0 } else { LEDGER_START };
        r.pid.store(pid, Relaxed);
        r.start_time.store(start, Relaxed);
        r.ledger.store(ledger, Relaxed);
        r.unrecorded.store(0, Relaxed);
        r.busy.store(0, Relaxed);
        r.reclaiming.store(0, Relaxed);
        r.held.store(0, Relaxed);
        r.attached_unix_ms.store(platform::now_unix_ms(), Relaxed);
        let nonce = fresh_nonce();
        r.nonce.store(nonce, Relaxed);
        r.state
            .store(STATE_LIVE, std::sync::atomic::Ordering::Release);
        Ok(Session {
            table: self.off,
            record: record_offset(self.off, i),
            index: i,
            pid,
            nonce,
            local: Mutex::new(Local {
                ledger,
                cap,
                next: 0,
                count: 0,
                free: Vec::new(),
                raw: HashMap::new(),
                closed: false,
            }),
            last_reclaim: Mutex::new(None),
        })
    }

    fn find_free(&self) -> Result<Option<u32>> {
        for i in 0..self.capacity {
            if self.record(i)?.state.load(Relaxed) == STATE_FREE {
                return Ok(Some(i));
            }
        }
        Ok(None)
    }

    /// Every session, live or dead (dead ones not yet reclaimed).
    pub fn list(&self, own: Option<u32>) -> Result<Vec<HolderInfo>> {
        let mut out = Vec::new();
        for i in 0..self.capacity {
            let r = self.record(i)?;
            if r.state.load(std::sync::atomic::Ordering::Acquire) != STATE_LIVE {
                continue;
            }
            let (pid, start) = (r.pid.load(Relaxed), r.start_time.load(Relaxed));
            out.push(HolderInfo {
                index: i,
                pid,
                start_time: start,
                attached_unix_ms: r.attached_unix_ms.load(Relaxed),
                held: r.held.load(Relaxed),
                alive: platform::is_process_alive(pid, start),
                own: own == Some(i),
            });
        }
        Ok(out)
    }

    /// Give back the share of every session whose process is gone.
    pub fn reclaim_dead(&self, values: Values<'a>) -> Result<Reclaim> {
        let _g = self.lock();
        self.reclaim_locked(values)
    }

    /// Reclaim every dead session; the table lock is held.
    pub(crate) fn reclaim_locked(&self, values: Values<'a>) -> Result<Reclaim> {
        let mut got = Reclaim::default();
        for i in 0..self.capacity {
            let r = self.record(i)?;
            if r.state.load(Relaxed) != STATE_LIVE
                || platform::is_process_alive(r.pid.load(Relaxed), r.start_time.load(Relaxed))
            {
                continue;
            }
            let died_busy = r.busy.load(Relaxed) != 0 || r.reclaiming.swap(1, Relaxed) != 0;
            // Unlinked before anything is released: a reclaimer that dies
            // part way leaves `reclaiming` set and no ledger to give back
            // twice (the next one calls it uncertain; a repair finishes).
            let ledger = r.ledger.swap(0, Relaxed);
            let (refs, raws, clean) = release_ledger(values, ledger);
            if died_busy || !clean {
                self.header.needs_repair.store(1, Relaxed);
                self.header.uncertain_reclaims.fetch_add(1, Relaxed);
                got.uncertain += 1;
            }
            got.references += refs;
            got.raw_blocks += raws;
            got.sessions += 1;
            self.header.reclaimed_sessions.fetch_add(1, Relaxed);
            self.header.reclaimed_refs.fetch_add(refs + raws, Relaxed);
            free_record(r);
        }
        Ok(got)
    }

    /// Remove `s` (this process's own session) from the table, releasing
    /// whatever its ledger still holds.
    pub fn deregister(&self, values: Values<'a>, s: &Session) -> Result<()> {
        if s.pid != platform::current_pid() {
            // A forked child's copy of its parent's session: not ours to end.
            return Ok(());
        }
        let mut local = s.local.lock().unwrap_or_else(|p| p.into_inner());
        local.closed = true;
        let _g = self.lock();
        let r = self.record(s.index)?;
        if r.state.load(Relaxed) != STATE_LIVE || r.nonce.load(Relaxed) != s.nonce {
            return Ok(()); // reclaimed already (taken for dead), not ours now
        }
        // Marked like a reclaim, so a kill part way through is known.
        r.reclaiming.store(1, Relaxed);
        let ledger = r.ledger.swap(0, Relaxed);
        let (_, _, clean) = release_ledger(values, ledger);
        if !clean || r.unrecorded.load(Relaxed) != 0 {
            self.header.needs_repair.store(1, Relaxed);
        }
        free_record(r);
        if clean {
            Ok(())
        } else {
            Err(Error::corrupt(
                "this process's ledger could not be given back entirely (damaged region bytes); run `shmtools gc` once no other process is attached",
            ))
        }
    }

    /// Pids of the live processes attached, other than this one (its other
    /// sessions, e.g. a second `Region` of the same name, do not count).
    pub(crate) fn others_alive(&self) -> Result<Vec<u32>> {
        let me = platform::current_pid();
        let mut pids = Vec::new();
        for h in self.list(None)? {
            if h.pid != me && h.alive && !pids.contains(&h.pid) {
                pids.push(h.pid);
            }
        }
        Ok(pids)
    }

    pub(crate) fn lock_for_repair(&self) -> Guard<'a> {
        self.lock()
    }
}

fn record_offset(table: u64, i: u32) -> u64 {
    table + HOLDERS_HEADER_SIZE + i as u64 * RECORD_SIZE
}

fn record_at(span: Span<'_>, off: u64) -> Result<&HolderRecord> {
    let p = span.ptr_at(off, RECORD_SIZE)?;
    // SAFETY: in bounds (ptr_at); 16-aligned, as every record offset is a
    // table (a pool block) plus 64 + 64 × i; HolderRecord is all atomics,
    // valid for any bit pattern.
    Ok(unsafe { &*(p as *const HolderRecord) })
}

fn free_record(r: &HolderRecord) {
    r.state
        .store(STATE_FREE, std::sync::atomic::Ordering::Release);
    r.pid.store(0, Relaxed);
    r.start_time.store(0, Relaxed);
    r.busy.store(0, Relaxed);
    r.held.store(0, Relaxed);
    r.reclaiming.store(0, Relaxed);
    r.nonce.store(0, Relaxed);
    r.unrecorded.store(0, Relaxed);
}

fn fresh_nonce() -> u64 {
    use std::sync::atomic::AtomicU64 as Counter;
    static N: Counter = Counter::new(0);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let mix = t ^ (platform::current_pid() as u64) << 32 ^ N.fetch_add(1, Relaxed);
    // Never 0 (the value of a free record).
    mix.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1
}

fn new_ledger(pool: Pool<'_>, entries: u64) -> Result<u64> {
    let off = pool.allocate(entries * 8)?;
    pool.span().fill(off, entries * 8, 0)?;
    Ok(off)
}

/// Release every entry of the ledger at `ledger` (already unlinked from its
/// record; each entry is cleared before what it names is released), then
/// free the ledger block. Returns (references, raw blocks, clean): an entry
/// that fails (a damaged region) is skipped, the others still go back, and
/// `clean` is false so the caller flags a repair.
fn release_ledger(values: Values<'_>, ledger: u64) -> (u64, u64, bool) {
    if ledger == 0 {
        return (0, 0, true);
    }
    let pool = values.pool();
    let (mut refs, mut raws, mut clean) = (0, 0, true);
    let walked = for_each_entry(
        pool,
        ledger,
        |e| e.swap(0, Relaxed),
        |entry| {
            let r = match entry {
                Entry::Raw(off) => pool.free(off).map(|()| raws += 1),
                Entry::Value(slot) => values.release(slot).map(|()| refs += 1),
            };
            clean &= r.is_ok();
        },
    );
    // A ledger block that cannot be walked is not freed either: a repair
    // finds it unreachable and frees it then.
    clean &= walked.is_ok() && pool.free(ledger).is_ok();
    (refs, raws, clean)
}

/// Visit every non-empty entry of the ledger at `ledger`, reading each word
/// with `take` (a load, or a swap that clears it).
fn for_each_entry(
    pool: Pool<'_>,
    ledger: u64,
    take: impl Fn(&AtomicU64) -> u64,
    mut visit: impl FnMut(Entry),
) -> Result<()> {
    let n = pool.capacity_unlocked(ledger)? / 8;
    for i in 0..n {
        let v = take(pool.span().u64_at(ledger + i * 8)?);
        if v != 0 {
            visit(decode(v));
        }
    }
    Ok(())
}

enum Entry {
    Raw(u64),
    Value(Slot),
}

fn encode_value(slot: Slot) -> u64 {
    (slot.tag as u64) << 56 | (slot.bits & OFF_MASK)
}

fn decode(v: u64) -> Entry {
    let kind = (v >> 56) as u8;
    let off = v & OFF_MASK;
    if kind == RAW {
        Entry::Raw(off)
    } else {
        Entry::Value(Slot::object(kind, off))
    }
}

/// Every object slot and raw block a ledger holds (for `repair`).
pub(crate) fn ledger_entries(pool: Pool<'_>, ledger: u64) -> Result<(Vec<Slot>, Vec<u64>)> {
    let (mut slots, mut raws) = (Vec::new(), Vec::new());
    if ledger != 0 {
        for_each_entry(
            pool,
            ledger,
            |e| e.load(Relaxed),
            |entry| match entry {
                Entry::Raw(off) => raws.push(off),
                Entry::Value(s) => slots.push(s),
            },
        )?;
    }
    Ok((slots, raws))
}

/// A ledger position, returned by [`Session::hold`] and given back to
/// [`Session::unhold`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Held(u32);

struct Local {
    ledger: u64,
    cap: u64,
    /// Entries below this index have been used at least once.
    next: u64,
    /// Live entries.
    count: u64,
    free: Vec<u32>,
    /// Raw blocks held: payload offset → ledger index.
    raw: HashMap<u64, u32>,
    /// Deregistered: holds are refused and unholds are no-ops.
    closed: bool,
}

/// This process's session in a region (owned by its `Region`).
pub struct Session {
    table: u64,
    /// Offset of this session's record (inside the table, checked at
    /// registration).
    record: u64,
    index: u32,
    pid: u32,
    nonce: u64,
    local: Mutex<Local>,
    last_reclaim: Mutex<Option<Instant>>,
}

/// Marks an operation in progress on a session; ends it when dropped.
pub struct Busy<'a>(Option<&'a AtomicU32>);

impl Busy<'_> {
    /// A guard that marks nothing (no session).
    pub fn none() -> Busy<'static> {
        Busy(None)
    }
}

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        if let Some(w) = self.0 {
            w.fetch_sub(1, Relaxed);
        }
    }
}

impl Session {
    pub fn index(&self) -> u32 {
        self.index
    }

    pub fn table(&self) -> u64 {
        self.table
    }

    fn record<'a>(&self, span: Span<'a>) -> Result<&'a HolderRecord> {
        record_at(span, self.record)
    }

    /// Count an operation in progress until the guard drops.
    pub fn busy<'a>(&self, span: Span<'a>) -> Busy<'a> {
        match self.record(span) {
            Ok(r) if self.pid == platform::current_pid() && r.nonce.load(Relaxed) == self.nonce => {
                r.busy.fetch_add(1, Relaxed);
                Busy(Some(&r.busy))
            }
            _ => Busy(None),
        }
    }

    fn check_owner(&self, span: Span<'_>) -> Result<()> {
        if self.pid != platform::current_pid() {
            return Err(Error::new(
                ErrorCode::InvalidState,
                "this region was attached by the parent of a fork(); attach again in the child",
            ));
        }
        if self.record(span)?.nonce.load(Relaxed) != self.nonce {
            return Err(Error::new(
                ErrorCode::Closed,
                "this process's holder record was reclaimed (was the process taken for dead?); attach again",
            ));
        }
        Ok(())
    }

    /// Record `entry` in the ledger (growing it if needed); the caller must
    /// already own what it names.
    fn hold_entry(&self, pool: Pool<'_>, entry: u64) -> Result<Held> {
        self.check_owner(pool.span())?;
        let mut l = self.local.lock().unwrap_or_else(|p| p.into_inner());
        if l.closed {
            return Err(Error::new(
                ErrorCode::Closed,
                "the region was closed; attach again",
            ));
        }
        let i = match l.free.pop() {
            Some(i) => i as u64,
            None => {
                if l.next == l.cap {
                    self.grow(pool, &mut l)?;
                }
                l.next += 1;
                l.next - 1
            }
        };
        let span = pool.span();
        span.u64_at(l.ledger + i * 8)?.store(entry, Relaxed);
        l.count += 1;
        self.record(span)?.held.store(l.count, Relaxed);
        Ok(Held(i as u32))
    }

    fn grow(&self, pool: Pool<'_>, l: &mut Local) -> Result<()> {
        if l.cap >= LEDGER_MAX {
            return Err(Error::new(
                ErrorCode::OutOfMemory,
                format!("this process holds {LEDGER_MAX} references to one region; release some"),
            ));
        }
        let span = pool.span();
        let _b = self.busy(span);
        let cap = (l.cap * 2).max(LEDGER_START);
        let new = new_ledger(pool, cap)?;
        for i in 0..l.cap {
            let v = span.u64_at(l.ledger + i * 8)?.load(Relaxed);
            span.u64_at(new + i * 8)?.store(v, Relaxed);
        }
        // Publish, then free the old block (a crash between leaks it, flagged
        // by `busy`; the other order could free it twice).
        self.record(span)?.ledger.store(new, Relaxed);
        let old = std::mem::replace(&mut l.ledger, new);
        l.cap = cap;
        match old {
            0 => Ok(()), // none yet: the pool was full at attach
            old => pool.free(old),
        }
    }

    /// Record an object reference the caller owns. Scalars need no record.
    pub fn hold(&self, pool: Pool<'_>, slot: Slot) -> Result<Option<Held>> {
        if !slot.is_object() {
            return Ok(None);
        }
        self.hold_entry(pool, encode_value(slot)).map(Some)
    }

    /// Note that a reference the caller owns could not be recorded: repairs
    /// by this process are refused from now on, and the region owes one.
    pub fn note_unrecorded(&self, span: Span<'_>) {
        self.flag_repair(span);
        if let Ok(r) = self.record(span) {
            if self.pid == platform::current_pid() && r.nonce.load(Relaxed) == self.nonce {
                r.unrecorded.fetch_add(1, Relaxed);
            }
        }
    }

    /// Mark the region as owing a repair.
    pub fn flag_repair(&self, span: Span<'_>) {
        if let Ok(t) = Holders::open(span, self.table) {
            t.header.needs_repair.store(1, Relaxed);
        }
    }

    /// Record a raw pool block the caller allocated.
    pub fn hold_raw(&self, pool: Pool<'_>, off: u64) -> Result<()> {
        let h = self.hold_entry(pool, (RAW as u64) << 56 | (off & OFF_MASK))?;
        let mut l = self.local.lock().unwrap_or_else(|p| p.into_inner());
        l.raw.insert(off, h.0);
        Ok(())
    }

    /// Take a reference out of the ledger; the caller owns it again. False if
    /// the session was closed meanwhile (the reference was released then).
    pub fn unhold(&self, pool: Pool<'_>, h: Held) -> Result<bool> {
        let mut l = self.local.lock().unwrap_or_else(|p| p.into_inner());
        if l.closed {
            return Ok(false);
        }
        if let Err(e) = self.check_owner(pool.span()) {
            // Our ledger was given back by someone else: the reference was
            // released with it.
            if e.code() == ErrorCode::Closed {
                l.closed = true;
                return Ok(false);
            }
            return Err(e);
        }
        let span = pool.span();
        let e = span.u64_at(l.ledger + h.0 as u64 * 8)?;
        if e.swap(0, Relaxed) == 0 {
            return Err(Error::invalid(
                "this reference was not held (released twice?)",
            ));
        }
        l.free.push(h.0);
        l.count -= 1;
        let r = self.record(span)?;
        r.held.store(l.count, Relaxed);
        if l.count == 0 && l.cap > LEDGER_START {
            // Everything was given back: return the big ledger to the pool.
            if let Ok(small) = new_ledger(pool, LEDGER_START) {
                r.ledger.store(small, Relaxed);
                let old = std::mem::replace(&mut l.ledger, small);
                l.cap = LEDGER_START;
                l.next = 0;
                l.free.clear();
                let _ = pool.free(old);
            }
        }
        Ok(true)
    }

    /// Drop the record of a raw block about to be freed. False if it was not
    /// held through this session.
    pub fn unhold_raw(&self, pool: Pool<'_>, off: u64) -> Result<bool> {
        let idx = {
            let mut l = self.local.lock().unwrap_or_else(|p| p.into_inner());
            l.raw.remove(&off)
        };
        match idx {
            Some(i) => self.unhold(pool, Held(i)),
            None => Ok(false),
        }
    }

    /// References and raw blocks recorded now.
    pub fn held_count(&self) -> u64 {
        self.local.lock().unwrap_or_else(|p| p.into_inner()).count
    }

    /// Has a reclaim of dead sessions run in the last `every`? If not, note
    /// that one runs now.
    pub fn reclaim_due(&self, every: Duration) -> bool {
        let mut t = self.last_reclaim.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        if t.is_some_and(|t| now.duration_since(t) < every) {
            return false;
        }
        *t = Some(now);
        true
    }
}
