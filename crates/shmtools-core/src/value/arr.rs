//! Arr: a growable list of value slots in one block.
//!
//! The elements block starts with a 16-byte header holding its capacity, so
//! a grow is published by the one store of `elems` (the new capacity is in
//! the block). Crash safety, as for tables: a push writes beyond `len` and
//! publishes by storing `len`; a pop stores `len` first; an element replaced
//! in place passes through an empty tag. `arr_recover`, run by whoever takes
//! the lock over from a dead writer, makes the list consistent again.

use std::sync::atomic::Ordering::Relaxed;

use super::{fits, ArrBody, Slot, Values, ARR_OBJ_SIZE, OBJ_HEADER, SLOT_SIZE, S_EMPTY, T_ARR};
use crate::error::{Error, ErrorCode, Result};
use crate::lock::Guard;

/// Bytes before the first element in an elements block: the capacity and a
/// spare word.
pub const ELEMS_HEADER: u64 = 16;

struct ArrState {
    len: u64,
    cap: u64,
    elems: u64,
}

/// A list being built by [`Values::arr_new_fresh`]: not yet stored anywhere,
/// so only its builder can reach it (as [`super::tab::FreshTab`]).
pub(super) struct FreshArr<'a> {
    pub(super) slot: Slot,
    body: &'a ArrBody,
    state: ArrState,
}

impl<'a> Values<'a> {
    pub(super) fn arr_body(&self, arr: Slot) -> Result<&'a ArrBody> {
        self.arr_body_checked(arr, true)
    }

    fn arr_body_checked(&self, arr: Slot, live: bool) -> Result<&'a ArrBody> {
        if arr.tag != T_ARR {
            return Err(Error::invalid("not a list"));
        }
        let o = if live {
            self.obj(arr)?
        } else {
            self.obj_dying(arr)?
        };
        let p = self
            .span
            .ptr_at(o.off + OBJ_HEADER, ARR_OBJ_SIZE - OBJ_HEADER)?;
        // SAFETY: inside the object's block (obj() checked it holds a whole
        // Arr body), 16-aligned; ArrBody is all atomics.
        Ok(unsafe { &*(p as *const ArrBody) })
    }

    fn arr_lock(&self, arr: Slot) -> Result<(&'a ArrBody, Guard<'a>, ArrState)> {
        let b = self.arr_body(arr)?;
        let g = b.lock.lock();
        if g.recovered {
            self.arr_recover(b, arr.bits)?;
        }
        let s = ArrState {
            len: b.len.load(Relaxed),
            cap: b.cap.load(Relaxed),
            elems: b.elems.load(Relaxed),
        };
        if s.len > s.cap || (s.cap > 0 && s.elems == 0) {
            return Err(Error::corrupt(format!(
                "list {} has inconsistent sizes",
                arr.bits
            )));
        }
        if s.cap > 0 {
            self.check_elems(s.elems, s.cap)?;
        }
        Ok((b, g, s))
    }

    /// Check that an elements block at `elems` holds `cap` elements and says so.
    fn check_elems(&self, elems: u64, cap: u64) -> Result<()> {
        let block = elems
            .checked_sub(ELEMS_HEADER)
            .ok_or_else(|| Error::corrupt(format!("list elements at {elems}")))?;
        let room = self.pool.linked_capacity(block, "a list")?;
        fits(cap, SLOT_SIZE, room.saturating_sub(ELEMS_HEADER))?;
        if self.span.u64_at(block)?.load(Relaxed) != cap {
            return Err(Error::corrupt(format!(
                "list elements at {elems}: the block's header disagrees with the list's capacity"
            )));
        }
        Ok(())
    }

    /// A new elements block for `cap` elements (header written), unlinked.
    fn new_elems(&self, cap: u64) -> Result<u64> {
        let bytes = cap
            .checked_mul(SLOT_SIZE)
            .and_then(|n| n.checked_add(ELEMS_HEADER))
            .ok_or_else(|| {
                Error::new(
                    ErrorCode::OutOfMemory,
                    format!("a list of {cap} elements cannot be allocated"),
                )
            })?;
        let block = self.pool.allocate(bytes)?;
        self.span.u64_at(block)?.store(cap, Relaxed);
        self.span.u64_at(block + 8)?.store(0, Relaxed);
        Ok(block + ELEMS_HEADER)
    }

    /// For a list read without its lock (being dropped, or by a repair): a
    /// holder of the lock can only be a writer that died; take it over and
    /// recover.
    fn arr_recover_if_abandoned(&self, b: &ArrBody, off: u64) -> Result<()> {
        if b.lock.lock().recovered {
            self.arr_recover(b, off)?;
        }
        Ok(())
    }

    /// Make a list whose lock was taken over from a dead writer consistent
    /// again (see the module's note); idempotent.
    pub(crate) fn arr_recover(&self, b: &ArrBody, off: u64) -> Result<()> {
        self.note_container_recovered();
        let elems = b.elems.load(Relaxed);
        if elems == 0 {
            b.len.store(0, Relaxed);
            b.cap.store(0, Relaxed);
            return Ok(());
        }
        let block = elems
            .checked_sub(ELEMS_HEADER)
            .ok_or_else(|| Error::corrupt(format!("list {off}: elements at {elems}")))?;
        // The block's own capacity wins: a grow publishes `elems` first.
        let cap = self.span.u64_at(block)?.load(Relaxed);
        self.check_elems(elems, cap)?;
        let len = b.len.load(Relaxed);
        if len > cap {
            return Err(Error::corrupt(format!(
                "list {off}: longer than its capacity after its writer died"
            )));
        }
        for i in 0..len {
            let so = elems + i * SLOT_SIZE;
            if Slot::read(self.span, so)?.tag == S_EMPTY {
                // A replacement cut short: the element is lost, now null.
                Slot::NONE.write(self.span, so)?;
            }
        }
        b.cap.store(cap, Relaxed);
        Ok(())
    }

    /// Create an empty list with room for `cap` elements; refcount 1.
    pub fn arr_new(&self, cap: u64) -> Result<Slot> {
        let off = self.new_obj(T_ARR, 0, 0, ARR_OBJ_SIZE - OBJ_HEADER)?;
        self.span
            .fill(off + OBJ_HEADER, ARR_OBJ_SIZE - OBJ_HEADER, 0)?;
        let slot = Slot::object(T_ARR, off);
        if cap > 0 {
            let b = self.arr_body(slot)?;
            match self.new_elems(cap) {
                Ok(e) => {
                    b.elems.store(e, Relaxed);
                    b.cap.store(cap, Relaxed);
                }
                Err(e) => {
                    let _ = self.release(slot);
                    return Err(e);
                }
            }
        }
        Ok(slot)
    }

    /// [`Values::arr_new`] for a list its caller fills before anyone else
    /// can reach it: the body and the elements block are checked once here,
    /// not again for every element.
    pub(super) fn arr_new_fresh(&self, cap: u64) -> Result<FreshArr<'a>> {
        let slot = self.arr_new(cap)?;
        let built = (|| {
            let body = self.arr_body(slot)?;
            let state = ArrState {
                len: 0,
                cap: body.cap.load(Relaxed),
                elems: body.elems.load(Relaxed),
            };
            if state.cap > 0 {
                self.check_elems(state.elems, state.cap)?;
            }
            Ok(FreshArr { slot, body, state })
        })();
        if built.is_err() {
            let _ = self.release(slot);
        }
        built
    }

    /// [`Values::arr_push`] on a list being built: nobody else holds a
    /// reference to it or can reach it, so its lock is not taken, nor its
    /// geometry revalidated per element. `value`'s reference moves in; on
    /// error it is released.
    pub(super) fn fresh_arr_push(&self, a: &mut FreshArr<'a>, value: Slot) -> Result<()> {
        let r = (|| {
            if value.is_object() && value == a.slot {
                return Err(Error::invalid("a list cannot contain itself"));
            }
            let s = &mut a.state;
            if s.len == s.cap {
                self.arr_grow(a.body, s)?;
            }
            value.write(self.span, s.elems + s.len * SLOT_SIZE)?;
            s.len += 1;
            // Kept current element by element, so that releasing a
            // half-built list releases exactly what it holds.
            a.body.len.store(s.len, Relaxed);
            Ok(())
        })();
        if r.is_err() {
            let _ = self.release(value);
        }
        r
    }

    pub fn arr_len(&self, arr: Slot) -> Result<u64> {
        Ok(self.arr_lock(arr)?.2.len)
    }

    /// Element `i`, with a new reference for the caller; None past the end.
    pub fn arr_get(&self, arr: Slot, i: u64) -> Result<Option<Slot>> {
        let (_b, _g, s) = self.arr_lock(arr)?;
        if i >= s.len {
            return Ok(None);
        }
        let v = Slot::read(self.span, s.elems + i * SLOT_SIZE)?;
        self.retain(v)?;
        Ok(Some(v))
    }

    /// Replace element `i` (which must exist) or append at `i == len`, moving
    /// `value`'s reference in. On error the reference is released.
    pub fn arr_set(&self, arr: Slot, i: u64, value: Slot) -> Result<()> {
        let r = (|| {
            if value.is_object() && value == arr {
                return Err(Error::invalid("a list cannot contain itself"));
            }
            let (b, _g, mut s) = self.arr_lock(arr)?;
            if i < s.len {
                let so = s.elems + i * SLOT_SIZE;
                let old = Slot::read(self.span, so)?;
                value.replace(self.span, so)?;
                return Ok(old);
            }
            if i > s.len {
                return Err(Error::invalid(format!(
                    "index {i} is past the end of a list of {} (holes are not allowed)",
                    s.len
                )));
            }
            if s.len == s.cap {
                self.arr_grow(b, &mut s)?;
            }
            value.write(self.span, s.elems + s.len * SLOT_SIZE)?;
            b.len.store(s.len + 1, Relaxed);
            Ok(Slot::NONE)
        })();
        self.settle_store(r, value)
    }

    /// Append, moving `value`'s reference in; returns the new length.
    pub fn arr_push(&self, arr: Slot, value: Slot) -> Result<u64> {
        let r = (|| {
            if value.is_object() && value == arr {
                return Err(Error::invalid("a list cannot contain itself"));
            }
            let (b, _g, mut s) = self.arr_lock(arr)?;
            if s.len == s.cap {
                self.arr_grow(b, &mut s)?;
            }
            value.write(self.span, s.elems + s.len * SLOT_SIZE)?;
            b.len.store(s.len + 1, Relaxed);
            Ok(s.len + 1)
        })();
        if r.is_err() {
            let _ = self.release(value);
        }
        r
    }

    /// Remove and return the last element (its reference moves to the caller).
    pub fn arr_pop(&self, arr: Slot) -> Result<Option<Slot>> {
        let (b, _g, s) = self.arr_lock(arr)?;
        if s.len == 0 {
            return Ok(None);
        }
        let so = s.elems + (s.len - 1) * SLOT_SIZE;
        let v = Slot::read(self.span, so)?;
        // `len` first: a crash after it leaves the list popped (the element,
        // now the dead caller's, goes to a repair).
        b.len.store(s.len - 1, Relaxed);
        Slot::EMPTY.write(self.span, so)?;
        Ok(Some(v))
    }

    /// Every element, each with a new reference for the caller.
    pub(crate) fn arr_snapshot(&self, arr: Slot) -> Result<Vec<Slot>> {
        let (_b, _g, s) = self.arr_lock(arr)?;
        let mut out = Vec::with_capacity(s.len as usize);
        for i in 0..s.len {
            let v = Slot::read(self.span, s.elems + i * SLOT_SIZE)?;
            if let Err(e) = self.retain(v) {
                for v in out {
                    let _ = self.release(v);
                }
                return Err(e);
            }
            out.push(v);
        }
        Ok(out)
    }

    fn arr_grow(&self, b: &ArrBody, s: &mut ArrState) -> Result<()> {
        let cap = (s.cap * 2).max(4);
        let elems = self.new_elems(cap)?;
        if s.len > 0 {
            let mut buf = vec![0; (s.len * SLOT_SIZE) as usize];
            self.span.read(s.elems, &mut buf)?;
            self.span.write(elems, &buf)?;
        }
        let old = s.elems;
        // `elems` first: the new block (which holds its capacity) is the list
        // from this store on.
        b.elems.store(elems, Relaxed);
        b.cap.store(cap, Relaxed);
        if s.cap > 0 {
            self.pool.free(old - ELEMS_HEADER)?;
        }
        s.elems = elems;
        s.cap = cap;
        Ok(())
    }

    /// The elements block of an array and every object slot in it, without
    /// locking (for `repair`).
    pub(crate) fn arr_parts(&self, off: u64) -> Result<(Vec<u64>, Vec<Slot>)> {
        let b = self.arr_body_checked(Slot::object(T_ARR, off), false)?;
        self.arr_recover_if_abandoned(b, off)?;
        let (len, cap, elems) = (
            b.len.load(Relaxed),
            b.cap.load(Relaxed),
            b.elems.load(Relaxed),
        );
        let (mut blocks, mut slots) = (Vec::new(), Vec::new());
        if cap == 0 {
            return Ok((blocks, slots));
        }
        if len > cap {
            return Err(Error::corrupt(format!(
                "array {off} is longer than its capacity"
            )));
        }
        self.check_elems(elems, cap)?;
        for i in 0..len {
            let v = Slot::read(self.span, elems + i * SLOT_SIZE)?;
            if v.is_object() {
                slots.push(v);
            }
        }
        blocks.push(elems - ELEMS_HEADER);
        Ok((blocks, slots))
    }

    pub(super) fn arr_drop_children(
        &self,
        off: u64,
        todo: &mut Vec<Slot>,
        frees: &mut Vec<u64>,
    ) -> Result<()> {
        let b = self.arr_body_checked(Slot::object(T_ARR, off), false)?;
        self.arr_recover_if_abandoned(b, off)?;
        let len = b.len.load(Relaxed);
        let cap = b.cap.load(Relaxed);
        let elems = b.elems.load(Relaxed);
        if cap == 0 {
            return Ok(());
        }
        self.check_elems(elems, cap)?;
        for i in 0..len.min(cap) {
            let v = Slot::read(self.span, elems + i * SLOT_SIZE)?;
            if v.is_object() {
                todo.push(v);
            }
        }
        frees.push(elems - ELEMS_HEADER);
        Ok(())
    }
}
