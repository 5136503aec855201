//! Values that live in a region: scalars in 16-byte slots, and refcounted
//! objects (strings, bytes, big integers, typed arrays, Tabs, Arrs) in pool
//! blocks. See docs/LAYOUT.md ("Values") for the byte tables.
//!
//! Ownership: a slot that holds an object owns one reference to it. Storing a
//! value in a container moves a reference in; reading one out of a container
//! retains a new reference for the reader; the last `release` frees the object
//! and releases whatever it held, iteratively (no recursion, so a deep tree
//! cannot overflow the stack).
//!
//! Concurrency: each Tab and Arr has its own [`ShmMutex`]; every operation on a
//! container holds only that lock (plus the pool lock inside it when it
//! allocates). Refcounts are atomics. A reference is only ever retained by
//! someone who already holds one (the container, under its lock, or a handle),
//! so an object whose count reached zero is unreachable and can be freed
//! without its lock.

mod arr;
mod store;
pub use store::scalar_wire;
#[cfg(test)]
mod packed_tests;
mod shaped;
mod tab;
#[cfg(test)]
mod tests;
pub use shaped::{shape_code, shape_code_packets, shape_coded};
pub mod v8in;
pub mod v8out;
pub mod wire;

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use crate::error::{Error, ErrorCode, Result};
use crate::holders::{Busy, Held, Session};
use crate::lock::ShmMutex;
use crate::mem::Span;
use crate::pool::Pool;
pub use wire::{Elem, Key, Value};

static CONTAINERS_RECOVERED: AtomicU64 = AtomicU64::new(0);

/// How many times this process has rebuilt a table or list whose writer
/// died holding its lock (for tests and diagnostics).
pub fn containers_recovered() -> u64 {
    CONTAINERS_RECOVERED.load(Ordering::Relaxed)
}

/// Slot tags (the same numbers as the wire tags). 0 is an empty slot.
pub const S_EMPTY: u8 = 0;
/// A string of at most [`SSTR_MAX`] bytes kept inside its slot, with no
/// object: bytes in the low 7 bytes of `bits`, the length in the top byte.
/// Region-only (the wire says T_STR); most table keys are this short, and an
/// inline key costs no allocation, no free and no indirection to compare.
pub const T_SSTR: u8 = 14;
pub const SSTR_MAX: usize = 7;
/// A packed packet: an object whose body is the wire encoding of one table
/// or list, stored with one allocation and one copy instead of an object per
/// container and per long string. Region-only, and only ever a queue packet
/// (or a ledger entry of one being enqueued): a dequeue that hands out
/// handles builds the real objects from it first, and the copy form copies
/// its bytes out as they are (after checking them again). See
/// docs/ARCHITECTURE.md ("Packed packets").
pub const T_PACKED: u8 = 15;
/// Largest encoding stored packed; larger values are built as objects.
pub const PACKED_MAX: usize = 4 << 10;
/// An inline packet: a queue slot whose value's encoding is in the queue's
/// byte ring, at the ring position in `bits` (see [`crate::queue`]). Only
/// ever a queue slot, with no object and no reference: [`Slot::read_at`]
/// refuses it, so a container never takes one for a value.
pub const T_INLINE: u8 = 16;
pub use wire::{
    T_ARR, T_BIGINT, T_BOOL, T_BYTES, T_F32, T_F64, T_INT, T_NONE, T_STR, T_TAB, T_TYPED, T_UINT,
};

/// One value as stored in a container: a tag and 8 bytes of payload (the
/// scalar's bits, or the region offset of an object).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slot {
    pub tag: u8,
    pub bits: u64,
}

pub const SLOT_SIZE: u64 = 16;

impl Slot {
    pub const NONE: Slot = Slot {
        tag: T_NONE,
        bits: 0,
    };
    pub const EMPTY: Slot = Slot {
        tag: S_EMPTY,
        bits: 0,
    };

    pub fn is_object(&self) -> bool {
        (T_STR..=T_TYPED).contains(&self.tag) || self.tag == T_PACKED
    }

    pub fn object(tag: u8, off: u64) -> Slot {
        Slot { tag, bits: off }
    }

    /// An inline string slot, if `b` is short enough.
    pub fn short_str(b: &[u8]) -> Option<Slot> {
        if b.len() > SSTR_MAX {
            return None;
        }
        let mut a = [0u8; 8];
        a[..b.len()].copy_from_slice(b);
        a[7] = b.len() as u8;
        Some(Slot {
            tag: T_SSTR,
            bits: u64::from_le_bytes(a),
        })
    }

    /// The bytes of an inline string slot (its length byte checked).
    pub fn short_bytes(&self) -> Result<([u8; 8], usize)> {
        let a = self.bits.to_le_bytes();
        let n = a[7] as usize;
        if self.tag != T_SSTR || n > SSTR_MAX {
            return Err(Error::corrupt("an inline string slot has a bad length"));
        }
        // Stored only from valid UTF-8: anything else was written over.
        if std::str::from_utf8(&a[..n]).is_err() {
            return Err(Error::corrupt(
                "an inline string slot holds bytes that are not UTF-8",
            ));
        }
        Ok((a, n))
    }

    fn read(span: Span<'_>, off: u64) -> Result<Slot> {
        let tag = span.u64_at(off)?.load(Ordering::Relaxed);
        let bits = span.u64_at(off + 8)?.load(Ordering::Relaxed);
        Slot::from_words(tag, bits, off)
    }

    /// A slot from the two words read at `off`, checking the tag (the one
    /// read, once: another process may be rewriting the slot meanwhile).
    pub(crate) fn from_words(tag: u64, bits: u64, off: u64) -> Result<Slot> {
        if tag > T_TYPED as u64 && tag != T_SSTR as u64 && tag != T_PACKED as u64 {
            return Err(Error::corrupt(format!(
                "slot at {off} has an unknown tag {tag}"
            )));
        }
        Ok(Slot {
            tag: tag as u8,
            bits,
        })
    }

    fn write(self, span: Span<'_>, off: u64) -> Result<()> {
        span.u64_at(off)?.store(self.tag as u64, Ordering::Relaxed);
        span.u64_at(off + 8)?.store(self.bits, Ordering::Relaxed);
        Ok(())
    }

    /// Overwrite a slot that readers may see after a crash: the tag passes
    /// through empty, so a writer killed part way leaves an empty slot (which
    /// a recovery reads as a lost value), never a new tag with old bits.
    fn replace(self, span: Span<'_>, off: u64) -> Result<()> {
        span.u64_at(off)?.store(S_EMPTY as u64, Ordering::Relaxed);
        span.u64_at(off + 8)?.store(self.bits, Ordering::Relaxed);
        span.u64_at(off)?.store(self.tag as u64, Ordering::Relaxed);
        Ok(())
    }

    /// Read the slot stored at region offset `off` (validating its tag).
    pub fn read_at(values: Values<'_>, off: u64) -> Result<Slot> {
        Slot::read(values.span, off)
    }

    /// Store this slot at region offset `off` (ownership moves with it).
    pub fn write_at(self, values: Values<'_>, off: u64) -> Result<()> {
        self.write(values.span, off)
    }
}

/// Every object starts with this 16-byte header.
#[repr(C)]
pub struct ObjHeader {
    pub refcount: AtomicU32,
    /// magic (bits 0-15) | kind (16-23, the slot tag) | sub (24-31: sign or element type)
    pub meta: AtomicU32,
    /// Byte length (Str, Bytes, BigInt) or element count (Typed); 0 for Tab/Arr.
    pub len: AtomicU64,
}

pub const OBJ_HEADER: u64 = 16;
pub const OBJ_MAGIC: u32 = 0x5653;
const _: () = assert!(std::mem::size_of::<ObjHeader>() == 16);
const _: () = assert!(std::mem::offset_of!(ObjHeader, refcount) == 0);
const _: () = assert!(std::mem::offset_of!(ObjHeader, meta) == 4);
const _: () = assert!(std::mem::offset_of!(ObjHeader, len) == 8);

/// Tab object: header, then this body.
#[repr(C)]
pub struct TabBody {
    pub lock: ShmMutex,
    /// Live entries.
    pub count: AtomicU64,
    /// Entry slots used so far, deleted ones included.
    pub used: AtomicU64,
    /// Entry slots in the entries block.
    pub cap: AtomicU64,
    /// Offset of the entries block (cap × 40 bytes), 0 if cap is 0.
    pub entries: AtomicU64,
    /// Offset of the index block (index_cap × u32), 0 if cap is 0.
    pub index: AtomicU64,
    /// Power of two, at least 2 × cap.
    pub index_cap: AtomicU64,
}
pub const TAB_OBJ_SIZE: u64 = OBJ_HEADER + std::mem::size_of::<TabBody>() as u64;
const _: () = assert!(TAB_OBJ_SIZE == 80);
const _: () = assert!(std::mem::offset_of!(TabBody, lock) == 0);
const _: () = assert!(std::mem::offset_of!(TabBody, count) == 16);
const _: () = assert!(std::mem::offset_of!(TabBody, used) == 24);
const _: () = assert!(std::mem::offset_of!(TabBody, cap) == 32);
const _: () = assert!(std::mem::offset_of!(TabBody, entries) == 40);
const _: () = assert!(std::mem::offset_of!(TabBody, index) == 48);
const _: () = assert!(std::mem::offset_of!(TabBody, index_cap) == 56);

/// One Tab entry: the key's hash, the key slot, the value slot.
pub const ENTRY_SIZE: u64 = 40;

/// Arr object: header, then this body.
#[repr(C)]
pub struct ArrBody {
    pub lock: ShmMutex,
    pub len: AtomicU64,
    pub cap: AtomicU64,
    /// Offset of the elements block (cap × 16-byte slots), 0 if cap is 0.
    pub elems: AtomicU64,
}
pub const ARR_OBJ_SIZE: u64 = OBJ_HEADER + std::mem::size_of::<ArrBody>() as u64;
const _: () = assert!(ARR_OBJ_SIZE == 56);
const _: () = assert!(std::mem::offset_of!(ArrBody, lock) == 0);
const _: () = assert!(std::mem::offset_of!(ArrBody, len) == 16);
const _: () = assert!(std::mem::offset_of!(ArrBody, cap) == 24);
const _: () = assert!(std::mem::offset_of!(ArrBody, elems) == 32);

/// What an object is, read and validated from its header.
#[derive(Debug, Clone, Copy)]
pub struct Obj {
    pub off: u64,
    pub kind: u8,
    pub sub: u8,
    pub len: u64,
}

/// The value operations of one mapped region.
#[derive(Clone, Copy)]
pub struct Values<'a> {
    pub(crate) span: Span<'a>,
    pub(crate) pool: Pool<'a>,
    /// The attached process's session, where held references are recorded
    /// (None for a bare pool, as in tools that only inspect).
    pub(crate) session: Option<&'a Session>,
}

impl<'a> Values<'a> {
    /// Value operations without a session: references taken through this are
    /// not recorded, so a crash leaks them until a repair.
    pub fn new(pool: Pool<'a>) -> Values<'a> {
        Values {
            span: pool.span(),
            pool,
            session: None,
        }
    }

    pub fn with_session(pool: Pool<'a>, session: Option<&'a Session>) -> Values<'a> {
        Values {
            span: pool.span(),
            pool,
            session,
        }
    }

    pub fn pool(&self) -> Pool<'a> {
        self.pool
    }

    pub fn session(&self) -> Option<&'a Session> {
        self.session
    }

    /// Mark an operation that moves references as in progress until the
    /// guard drops: a process killed meanwhile is reclaimed as "uncertain".
    pub fn busy(&self) -> Busy<'a> {
        match self.session {
            Some(s) => s.busy(self.span),
            None => Busy::none(),
        }
    }

    /// Record a reference the caller owns in this process's ledger, so it is
    /// given back if the process dies. None for scalars or without a session.
    /// If the ledger cannot take it (no room to grow), the reference stays
    /// the caller's, unrecorded, and the region is flagged for a repair
    /// (which this process is then no longer allowed to run).
    pub fn hold(&self, slot: Slot) -> Option<Held> {
        let s = self.session?;
        match s.hold(self.pool, slot) {
            Ok(h) => h,
            // A closed session records nothing; the caller's release works
            // as usual.
            Err(e) if e.code() == ErrorCode::Closed => None,
            Err(_) => {
                s.note_unrecorded(self.span);
                None
            }
        }
    }

    /// Take a reference back out of the ledger before giving it away or
    /// releasing it. False: the session was closed and already released it.
    pub fn unhold(&self, held: Option<Held>) -> Result<bool> {
        match (self.session, held) {
            (Some(s), Some(h)) => s.unhold(self.pool, h),
            _ => Ok(true),
        }
    }

    /// Count a container recovered from a dead writer, and flag the region
    /// as owing a repair (the writer may have left something unreachable).
    pub(crate) fn note_container_recovered(&self) {
        CONTAINERS_RECOVERED.fetch_add(1, Ordering::Relaxed);
        if let Some(s) = self.session {
            s.flag_repair(self.span);
        }
    }

    /// Give back what dead processes held, at most once a second per
    /// process (called after a wait timed out). Errors are ignored: this is
    /// housekeeping on behalf of others.
    pub fn reclaim_if_due(&self) {
        if let Some(s) = self.session {
            if s.reclaim_due(std::time::Duration::from_secs(1)) {
                if let Ok(t) = crate::holders::Holders::open(self.span, s.table()) {
                    let _ = t.reclaim_dead(*self);
                }
            }
        }
    }

    pub(crate) fn header_at(&self, off: u64) -> Result<&'a ObjHeader> {
        self.header(off)
    }

    /// Run `f` with the pool lock held once for every allocation and free it
    /// makes (see [`Pool::with_held`] for what `f` may and may not do). The
    /// copy `f` gets keeps the session, for `busy()`; it must not hold or
    /// unhold (the ledger takes its process-local lock before the pool lock,
    /// so doing it under the pool lock could deadlock with another thread).
    /// The caller marks itself busy around the whole call.
    pub(crate) fn with_pool_held<R>(&self, f: impl FnOnce(Values<'a>) -> Result<R>) -> Result<R> {
        self.pool.with_held(|pool| {
            f(Values {
                span: self.span,
                pool,
                session: self.session,
            })
        })
    }

    fn header(&self, off: u64) -> Result<&'a ObjHeader> {
        let p = self.span.ptr_at(off, OBJ_HEADER)?;
        if !off.is_multiple_of(16) {
            return Err(Error::corrupt(format!("object offset {off} is misaligned")));
        }
        // SAFETY: in bounds (checked by ptr_at) and 16-aligned; ObjHeader is
        // made of atomics, valid for any bit pattern.
        Ok(unsafe { &*(p as *const ObjHeader) })
    }

    /// Validate the object a slot points at: header magic, kind matching the
    /// slot, a live refcount, and a length that fits its block.
    pub fn obj(&self, slot: Slot) -> Result<Obj> {
        self.obj_checked(slot, true)
    }

    /// [`Values::obj`] without the live-refcount check: for the object being
    /// freed, whose count just reached zero.
    pub(crate) fn obj_dying(&self, slot: Slot) -> Result<Obj> {
        self.obj_checked(slot, false)
    }

    fn obj_checked(&self, slot: Slot, live: bool) -> Result<Obj> {
        if !slot.is_object() {
            return Err(Error::invalid("not an object value"));
        }
        let off = slot.bits;
        // A slot names an object it was given; an offset that holds no block
        // means the slot (or the block) was written over.
        let no_block = |e: Error| match e.code() {
            ErrorCode::InvalidArg => Error::corrupt(format!(
                "a value names offset {off}, which holds no object ({e})"
            )),
            _ => e,
        };
        let h = self.header(off).map_err(no_block)?;
        let meta = h.meta.load(Ordering::Relaxed);
        let kind = (meta >> 16) as u8;
        if meta & 0xffff != OBJ_MAGIC || kind != slot.tag {
            return Err(Error::corrupt(format!(
                "no object of kind {} at {off}",
                slot.tag
            )));
        }
        if live && h.refcount.load(Ordering::Relaxed) == 0 {
            return Err(Error::new(
                ErrorCode::Closed,
                format!("the value at {off} was already released"),
            ));
        }
        let cap = self.pool.capacity_unlocked(off).map_err(no_block)?;
        let len = h.len.load(Ordering::Relaxed);
        let sub = (meta >> 24) as u8;
        let body = match kind {
            T_STR | T_BYTES | T_BIGINT | T_PACKED => Some(len),
            T_TYPED => Elem::from_code(sub)
                .ok_or_else(|| Error::corrupt("bad typed-array element type"))?
                .size()
                .checked_mul(len),
            T_TAB => Some(TAB_OBJ_SIZE - OBJ_HEADER),
            T_ARR => Some(ARR_OBJ_SIZE - OBJ_HEADER),
            _ => None,
        };
        match body {
            Some(b) if b <= cap.saturating_sub(OBJ_HEADER) => Ok(Obj {
                off,
                kind,
                sub,
                len,
            }),
            _ => Err(Error::corrupt(format!(
                "object at {off} is larger than its block"
            ))),
        }
    }

    /// Allocate an object of `kind` with `body` bytes after the header, with
    /// refcount 1.
    fn new_obj(&self, kind: u8, sub: u8, len: u64, body: u64) -> Result<u64> {
        let size = body
            .checked_add(OBJ_HEADER)
            .ok_or_else(|| Error::invalid("value too large"))?;
        let off = self.pool.allocate(size)?;
        if let Err(e) = self.init_obj(off, kind, sub, len) {
            let _ = self.pool.free(off);
            return Err(e);
        }
        Ok(off)
    }

    /// Write the header of a new object (count 1) at `off`, a block just
    /// allocated for it.
    fn init_obj(&self, off: u64, kind: u8, sub: u8, len: u64) -> Result<()> {
        let h = self.header(off)?;
        h.len.store(len, Ordering::Relaxed);
        h.meta.store(
            OBJ_MAGIC | (kind as u32) << 16 | (sub as u32) << 24,
            Ordering::Relaxed,
        );
        h.refcount.store(1, Ordering::Release);
        Ok(())
    }

    /// Take one more reference to the object in `slot` (no-op for scalars).
    pub fn retain(&self, slot: Slot) -> Result<()> {
        if !slot.is_object() {
            return Ok(());
        }
        let o = self.obj(slot)?;
        let h = self.header(o.off)?;
        let old = h.refcount.fetch_add(1, Ordering::Relaxed);
        if old == 0 || old == u32::MAX {
            h.refcount.fetch_sub(1, Ordering::Relaxed);
            return Err(Error::corrupt(format!(
                "reference count of {} was {old}; cannot take another",
                o.off
            )));
        }
        Ok(())
    }

    /// The object's current reference count (0 for scalars).
    pub fn refcount(&self, slot: Slot) -> Result<u32> {
        if !slot.is_object() {
            return Ok(0);
        }
        let o = self.obj(slot)?;
        Ok(self.header(o.off)?.refcount.load(Ordering::Relaxed))
    }

    /// Drop one reference; the last one frees the object and releases what it
    /// held. Iterative, so depth does not matter. The blocks of everything
    /// freed go back to the pool under one hold of its lock.
    pub fn release(&self, slot: Slot) -> Result<()> {
        if !slot.is_object() {
            return Ok(());
        }
        // Vec::new() does not allocate: dropping one of several references
        // (the common case) costs no allocation.
        let (mut todo, mut frees) = (Vec::new(), Vec::new());
        let first = self.release_one(slot, &mut todo, &mut frees).err();
        self.finish_release(todo, frees, first)
    }

    /// The end of a store that consumes the reference in `value`: on
    /// success, release what it replaced (`Slot::NONE` if nothing); on
    /// failure, release `value` itself and pass the error on.
    fn settle_store(&self, stored: Result<Slot>, value: Slot) -> Result<()> {
        match stored {
            Ok(old) => self.release(old),
            Err(e) => {
                let _ = self.release(value);
                Err(e)
            }
        }
    }

    /// Drop one reference of each slot (as [`Values::release`] does for
    /// one), freeing every block that becomes unused under a single hold of
    /// the pool lock. Every slot is released even if one fails; the first
    /// error is returned.
    pub fn release_many(&self, slots: &[Slot]) -> Result<()> {
        // One mark for the batch (releases are usually inside the caller's
        // already; nested marks just count).
        let _b = self.busy();
        let todo = slots
            .iter()
            .rev()
            .copied()
            .filter(Slot::is_object)
            .collect();
        self.finish_release(todo, Vec::new(), None)
    }

    fn finish_release(
        &self,
        mut todo: Vec<Slot>,
        frees: Vec<u64>,
        mut first_err: Option<Error>,
    ) -> Result<()> {
        let mut frees = frees;
        while let Some(s) = todo.pop() {
            if let Err(e) = self.release_one(s, &mut todo, &mut frees) {
                first_err.get_or_insert(e);
            }
        }
        if let Err(e) = self.pool.free_many(&frees) {
            first_err.get_or_insert(e);
        }
        first_err.map_or(Ok(()), Err)
    }

    /// Drop one reference to `slot`; if it was the last, queue its children
    /// on `todo` and its blocks on `frees`.
    fn release_one(&self, slot: Slot, todo: &mut Vec<Slot>, frees: &mut Vec<u64>) -> Result<()> {
        let o = self.obj(slot)?;
        let h = self.header(o.off)?;
        let old = h.refcount.fetch_sub(1, Ordering::AcqRel);
        if old == 0 {
            h.refcount.store(0, Ordering::Relaxed);
            return Err(Error::corrupt(format!(
                "{} released more often than taken",
                o.off
            )));
        }
        if old > 1 {
            return Ok(());
        }
        match o.kind {
            T_TAB => self.tab_drop_children(o.off, todo, frees)?,
            T_ARR => self.arr_drop_children(o.off, todo, frees)?,
            _ => {}
        }
        // Make stale slots pointing here fail validation rather than alias.
        h.meta.store(0, Ordering::Relaxed);
        frees.push(o.off);
        Ok(())
    }

    /// Body offset and byte length of a Str, Bytes, BigInt, Typed or packed
    /// object.
    pub fn data(&self, slot: Slot) -> Result<(u64, u64)> {
        let o = self.obj(slot)?;
        let n = match o.kind {
            T_STR | T_BYTES | T_BIGINT | T_PACKED => o.len,
            T_TYPED => o.len * Elem::from_code(o.sub).map_or(1, Elem::size),
            _ => {
                return Err(Error::invalid(
                    "not a string, bytes, big integer or typed array",
                ))
            }
        };
        Ok((o.off + OBJ_HEADER, n))
    }

    /// Element type and count of a typed array.
    pub fn typed_info(&self, slot: Slot) -> Result<(Elem, u64)> {
        let o = self.obj(slot)?;
        if o.kind != T_TYPED {
            return Err(Error::invalid("not a typed array"));
        }
        let e = Elem::from_code(o.sub).ok_or_else(|| Error::corrupt("bad element type"))?;
        Ok((e, o.len))
    }

    fn read_bytes(&self, slot: Slot) -> Result<Vec<u8>> {
        let (off, n) = self.data(slot)?;
        let mut v = vec![0; n as usize];
        self.span.read(off, &mut v)?;
        Ok(v)
    }

    /// The text of a string object.
    pub fn load_str(&self, slot: Slot) -> Result<String> {
        self.read_str(slot)
    }

    fn read_str(&self, slot: Slot) -> Result<String> {
        let bytes = if slot.tag == T_SSTR {
            let (a, n) = slot.short_bytes()?;
            a[..n].to_vec()
        } else {
            self.read_bytes(slot)?
        };
        String::from_utf8(bytes).map_err(|_| Error::corrupt("a shared string is not valid UTF-8"))
    }

    /// Store an owned value tree; returns a slot owning one reference.
    pub fn store(&self, v: &Value) -> Result<Slot> {
        self.store_wire(&v.encode()?)
    }

    /// Deep-copy a slot's value out into an owned tree.
    pub fn load(&self, slot: Slot) -> Result<Value> {
        let mut w = wire::Writer::default();
        self.load_wire(slot, &mut w)?;
        // The bytes came out of the region: what does not decode was damaged
        // there (a caller's bad input cannot reach this point).
        Value::decode(&w.buf).map_err(|e| match e.code() {
            ErrorCode::InvalidArg => Error::corrupt(format!("a stored value does not decode: {e}")),
            _ => e,
        })
    }
}

/// FNV-1a 64 of a key, typed so "1" and 1 differ.
fn key_hash(k: KeyRef<'_>) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |b: u8| {
        h ^= b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    };
    match k {
        KeyRef::Str(s) => {
            eat(T_STR);
            s.iter().for_each(|b| eat(*b));
        }
        KeyRef::Int(i) => {
            eat(T_INT);
            i.to_le_bytes().iter().for_each(|b| eat(*b));
        }
    }
    h
}

/// A borrowed key.
#[derive(Debug, Clone, Copy)]
pub enum KeyRef<'k> {
    Str(&'k [u8]),
    Int(i64),
}

impl<'k> From<&'k Key> for KeyRef<'k> {
    fn from(k: &'k Key) -> Self {
        match k {
            Key::Str(s) => KeyRef::Str(s.as_bytes()),
            Key::Int(i) => KeyRef::Int(*i),
        }
    }
}

impl<'k> KeyRef<'k> {
    pub fn str(s: &'k str) -> KeyRef<'k> {
        KeyRef::Str(s.as_bytes())
    }
}

/// Check that `n` more atomics are allowed to be in a fresh block of `cap`.
fn fits(n: u64, each: u64, cap: u64) -> Result<()> {
    match n.checked_mul(each) {
        Some(b) if b <= cap => Ok(()),
        _ => Err(Error::corrupt(
            "a container claims more items than its block holds",
        )),
    }
}

/// The u64 atomic at `off`, as a typed helper for bodies.
fn at(span: Span<'_>, off: u64) -> Result<&AtomicU64> {
    span.u64_at(off)
}

/// A reference to a shared value that releases itself when dropped: the Rust
/// face of the seed's `Shared(pool, v)` proxy.
///
/// The reference is recorded in the process's ledger (when the `Values` came
/// from an attached [`crate::Region`]), so it is given back if the process dies
/// holding it.
pub struct Shared<'a> {
    values: Values<'a>,
    slot: Slot,
    held: Option<Held>,
}

impl<'a> Shared<'a> {
    /// Deep-copy `v` into the region (the seed's `Shared(shm, Tab())`).
    pub fn new(values: Values<'a>, v: &Value) -> Result<Shared<'a>> {
        let _b = values.busy();
        let slot = values.store(v)?;
        Ok(Shared::from_owned(values, slot))
    }

    /// Adopt a slot that already owns one reference, recording it in the
    /// ledger (if the ledger cannot grow, the reference is kept unrecorded).
    pub fn from_owned(values: Values<'a>, slot: Slot) -> Shared<'a> {
        let held = values.hold(slot);
        Shared { values, slot, held }
    }

    pub fn slot(&self) -> Slot {
        self.slot
    }

    /// Give up ownership without releasing (the caller now owns the
    /// reference, no longer recorded in the ledger).
    pub fn into_slot(self) -> Slot {
        let s = self.slot;
        let _ = self.values.unhold(self.held);
        std::mem::forget(self);
        s
    }

    pub fn refcount(&self) -> Result<u32> {
        self.values.refcount(self.slot)
    }

    /// Deep copy out.
    pub fn load(&self) -> Result<Value> {
        self.values.load(self.slot)
    }

    /// `t[key]`, as an owned copy (None if absent).
    pub fn get(&self, key: &Key) -> Result<Option<Value>> {
        let _b = self.values.busy();
        match self.values.tab_get(self.slot, key.into())? {
            Some(s) => Shared::from_owned(self.values, s).load().map(Some),
            None => Ok(None),
        }
    }

    /// `t[key] = v` (deep copy of `v`).
    pub fn set(&self, key: &Key, v: &Value) -> Result<()> {
        let _b = self.values.busy();
        let s = self.values.store(v)?;
        self.values.tab_set(self.slot, key.into(), s)
    }

    /// `t[key] = other` by reference: no copy, one more reference to `other`.
    /// Refused if `other` contains this table (a cycle would never be freed).
    pub fn set_shared(&self, key: &Key, other: &Shared<'_>) -> Result<()> {
        if self.values.would_cycle(self.slot, other.slot)? {
            return Err(Error::invalid("storing this value here would make a cycle"));
        }
        let _b = self.values.busy();
        self.values.retain(other.slot)?;
        self.values.tab_set(self.slot, key.into(), other.slot)
    }

    /// Another handle to the same value (reference count + 1).
    pub fn try_clone(&self) -> Result<Shared<'a>> {
        let _b = self.values.busy();
        self.values.retain(self.slot)?;
        Ok(Shared::from_owned(self.values, self.slot))
    }
}

impl Drop for Shared<'_> {
    fn drop(&mut self) {
        let _b = self.values.busy();
        if let Ok(true) = self.values.unhold(self.held) {
            let _ = self.values.release(self.slot);
        }
    }
}
