//! Tab: a hash table of key → value that keeps insertion order.
//!
//! Entries live in one block, appended in insertion order (40 bytes each:
//! hash, key slot, value slot); an open-addressing index of u32 cells (entry
//! number plus one; 0 is empty) finds them. Deleting empties the entry's key
//! slot and keeps its index cell, so probes pass over it; when the entries
//! block is full it is rebuilt without the deleted ones. Keys are strings
//! (string objects owned by the Tab) or integers.
//!
//! A new table keeps its first entries and index inside its own block; a
//! grown one has them in a separate block that starts with a header saying
//! its geometry (see docs/LAYOUT.md).
//!
//! Crash safety: every change is ordered so that a writer killed at any
//! instruction leaves a state that `tab_recover` (run by the next process to
//! take the table's lock, which is told its owner died) turns back into a
//! consistent table, at worst leaking what the dead writer was moving (a
//! repair returns that). An append writes its entry beyond `used` and
//! publishes it by storing `used`; a value replaced in place passes through
//! an empty tag, never a torn (tag, bits) pair; a grow builds its new block
//! completely and publishes it with the one store of `entries`.

use std::sync::atomic::Ordering::Relaxed;

use super::{
    at, key_hash, KeyRef, Slot, Values, ENTRY_SIZE, OBJ_HEADER, S_EMPTY, TAB_OBJ_SIZE, T_INT,
    T_SSTR, T_STR, T_TAB,
};
use crate::error::{Error, ErrorCode, Result};
use crate::lock::Guard;
use crate::value::wire::Writer;
use crate::value::{Key, TabBody};

/// A table being built by [`Values::tab_new_fresh`]: not yet stored
/// anywhere, so only its builder can reach it.
pub(super) struct FreshTab<'a> {
    pub(super) slot: Slot,
    body: &'a TabBody,
    state: TabState,
}

/// Bytes before the entries of a grown table's block: cap, index_cap, the
/// entry count at the grow, and a spare word.
pub const GROWN_HEADER: u64 = 32;

/// Validated view of a Tab's body, read under its lock.
struct TabState {
    off: u64,
    count: u64,
    used: u64,
    cap: u64,
    entries: u64,
    index: u64,
    index_cap: u64,
}

impl<'a> Values<'a> {
    pub(super) fn tab_body(&self, tab: Slot) -> Result<&'a TabBody> {
        self.tab_body_checked(tab, true)
    }

    fn tab_body_checked(&self, tab: Slot, live: bool) -> Result<&'a TabBody> {
        if tab.tag != T_TAB {
            return Err(Error::invalid("not a table"));
        }
        let o = if live {
            self.obj(tab)?
        } else {
            self.obj_dying(tab)?
        };
        let p = self
            .span
            .ptr_at(o.off + OBJ_HEADER, TAB_OBJ_SIZE - OBJ_HEADER)?;
        // SAFETY: inside the object's block (obj() checked the block holds a
        // whole Tab body), 16-aligned; TabBody is all atomics.
        Ok(unsafe { &*(p as *const TabBody) })
    }

    fn tab_lock(&self, tab: Slot) -> Result<(Guard<'a>, TabState)> {
        let b = self.tab_body(tab)?;
        let g = b.lock.lock();
        if g.recovered {
            self.tab_recover(b, tab.bits)?;
        }
        let s = self.tab_state(tab, b)?;
        Ok((g, s))
    }

    /// Read and validate a table's geometry (under its lock, or when nobody
    /// else can reach the table).
    fn tab_state(&self, tab: Slot, b: &TabBody) -> Result<TabState> {
        let s = TabState {
            off: tab.bits,
            count: b.count.load(Relaxed),
            used: b.used.load(Relaxed),
            cap: b.cap.load(Relaxed),
            entries: b.entries.load(Relaxed),
            index: b.index.load(Relaxed),
            index_cap: b.index_cap.load(Relaxed),
        };
        // Validate the geometry once; every later access is bounds-checked too.
        let ok = s.used <= s.cap
            && s.count <= s.used
            // (index_cap / 2, not 2 * cap: a damaged cap must not overflow)
            && (s.cap == 0 || s.index_cap.is_power_of_two() && s.index_cap / 2 >= s.cap)
            && (s.cap == 0 || s.entries != 0 && s.index != 0);
        if !ok {
            return Err(Error::corrupt(format!(
                "table {} has inconsistent sizes",
                tab.bits
            )));
        }
        self.check_blocks(s.off, s.cap, s.entries, s.index, s.index_cap)?;
        Ok(s)
    }

    /// A new empty table (refcount 1) to fill with [`Values::fresh_tab_set`]
    /// before anyone else can see it.
    pub(super) fn tab_new_fresh(&self, cap: u64) -> Result<FreshTab<'a>> {
        let slot = self.tab_new(cap)?;
        let built = (|| {
            let body = self.tab_body(slot)?;
            let state = self.tab_state(slot, body)?;
            Ok(FreshTab { slot, body, state })
        })();
        if built.is_err() {
            let _ = self.release(slot);
        }
        built
    }

    /// [`Values::tab_set`] on a table being built: nobody else holds a
    /// reference to it or can reach it, so its lock is not needed (nor taken
    /// and its geometry revalidated per entry). `value`'s reference moves in;
    /// on error it is released.
    pub(super) fn fresh_tab_set(
        &self,
        t: &mut FreshTab<'a>,
        key: KeyRef<'_>,
        value: Slot,
    ) -> Result<()> {
        let r = (|| {
            let s = &mut t.state;
            let hash = key_hash(key);
            if let Some(e) = self.tab_find(s, key, hash)? {
                let vo = s.entries + e * ENTRY_SIZE + 24;
                let old = Slot::read(self.span, vo)?;
                value.write(self.span, vo)?;
                return Ok(old);
            }
            if s.used == s.cap {
                self.tab_grow(t.body, s)?;
            }
            let k = self.key_slot(key)?;
            let eo = s.entries + s.used * ENTRY_SIZE;
            let written = (|| {
                at(self.span, eo)?.store(hash, Relaxed);
                k.write(self.span, eo + 8)?;
                value.write(self.span, eo + 24)?;
                self.index_insert(s, hash, s.used)
            })();
            if let Err(e) = written {
                let _ = self.release(k);
                return Err(e);
            }
            s.used += 1;
            s.count += 1;
            // Kept current entry by entry, so that releasing a half-built
            // table releases exactly what it holds.
            t.body.used.store(s.used, Relaxed);
            t.body.count.store(s.count, Relaxed);
            Ok(Slot::NONE)
        })();
        self.settle_store(r, value)
    }

    /// Encode a table that only the caller holds (see
    /// [`Values::load_wire_owned`]): read in place, without its lock and
    /// without taking a reference to each entry. Nested tables held only by
    /// this one are read the same way; anything else shared takes the
    /// ordinary locked path.
    pub(super) fn tab_emit_owned(&self, tab: Slot, w: &mut Writer, depth: usize) -> Result<()> {
        let b = self.tab_body(tab)?;
        if b.lock.holder() != 0 {
            // Nobody else has a reference, so only a writer that died inside
            // a change can hold the lock: take the locked path, whose lock
            // rebuilds the table before it is read.
            return self.emit(tab, w, depth);
        }
        let s = self.tab_state(tab, b)?;
        w.u8(T_TAB);
        let count_at = w.buf.len();
        w.u32(0);
        let mut n: u32 = 0;
        for e in 0..s.used {
            let eo = s.entries + e * ENTRY_SIZE;
            let k = Slot::read(self.span, eo + 8)?;
            if k.tag == S_EMPTY {
                continue;
            }
            let v = Slot::read(self.span, eo + 24)?;
            self.emit_owned(k, w, depth + 1)?;
            self.emit_owned(v, w, depth + 1)?;
            n += 1;
        }
        if n as u64 != s.count {
            return Err(Error::corrupt(format!(
                "table {} holds {n} entries but counts {}",
                tab.bits, s.count
            )));
        }
        w.buf[count_at..count_at + 4].copy_from_slice(&n.to_le_bytes());
        Ok(())
    }

    /// Create an empty table with room for `cap` entries; refcount 1.
    pub fn tab_new(&self, cap: u64) -> Result<Slot> {
        // The first entries and index live in the table's own block, right
        // after its body: a new table is one allocation, not three. (When it
        // outgrows them, bigger separate blocks take over; see tab_grow.)
        let (index_cap, extra) = match cap {
            0 => (0, 0),
            _ => {
                let too_big = || {
                    Error::new(
                        ErrorCode::OutOfMemory,
                        format!("a table of {cap} entries cannot be allocated"),
                    )
                };
                let index_cap = cap
                    .checked_mul(2)
                    .and_then(u64::checked_next_power_of_two)
                    .ok_or_else(too_big)?
                    .max(8);
                let extra = cap
                    .checked_mul(ENTRY_SIZE)
                    .and_then(|e| e.checked_add(index_cap.checked_mul(4)?))
                    .ok_or_else(too_big)?;
                (index_cap, extra)
            }
        };
        let body = TAB_OBJ_SIZE - OBJ_HEADER;
        let off = self.new_obj(T_TAB, 0, 0, body + extra)?;
        self.span.fill(off + OBJ_HEADER, body + extra, 0)?;
        let slot = Slot::object(T_TAB, off);
        if cap > 0 {
            let b = self.tab_body(slot)?;
            let entries = off + TAB_OBJ_SIZE;
            b.cap.store(cap, Relaxed);
            b.entries.store(entries, Relaxed);
            b.index.store(entries + cap * ENTRY_SIZE, Relaxed);
            b.index_cap.store(index_cap, Relaxed);
        }
        Ok(slot)
    }

    /// Are the entries (and index) those inside the table's own block?
    fn inline_entries(off: u64, entries: u64) -> bool {
        entries == off + TAB_OBJ_SIZE
    }

    /// Check that the entries and index of a table at `off` fit where they are.
    fn check_blocks(
        &self,
        off: u64,
        cap: u64,
        entries: u64,
        index: u64,
        index_cap: u64,
    ) -> Result<()> {
        if cap == 0 {
            return Ok(());
        }
        if Self::inline_entries(off, entries) {
            if Some(index)
                != cap
                    .checked_mul(ENTRY_SIZE)
                    .and_then(|n| entries.checked_add(n))
            {
                return Err(Error::corrupt(format!(
                    "table {off}: index not after its entries"
                )));
            }
            let room = self
                .pool
                .capacity_unlocked(off)?
                .saturating_sub(TAB_OBJ_SIZE - OBJ_HEADER);
            let need = cap
                .checked_mul(ENTRY_SIZE)
                .and_then(|e| e.checked_add(index_cap.checked_mul(4)?));
            return match need {
                Some(n) if n <= room => Ok(()),
                _ => Err(Error::corrupt(format!(
                    "table {off}: entries larger than its block"
                ))),
            };
        }
        let (block, room) = self.grown_block(entries)?;
        let need = cap
            .checked_mul(ENTRY_SIZE)
            .and_then(|e| e.checked_add(index_cap.checked_mul(4)?));
        if need.is_none_or(|n| n > room) || Some(index) != entries.checked_add(cap * ENTRY_SIZE) {
            return Err(Error::corrupt(format!(
                "table {off}: entries and index do not fit their block"
            )));
        }
        let h = self.grown_header(block)?;
        if h.0 != cap || h.1 != index_cap {
            return Err(Error::corrupt(format!(
                "table {off}: its sizes differ from its block's header"
            )));
        }
        Ok(())
    }

    /// The block holding out-of-line entries that start at `entries`, and
    /// the room after its header.
    fn grown_block(&self, entries: u64) -> Result<(u64, u64)> {
        let block = entries
            .checked_sub(GROWN_HEADER)
            .ok_or_else(|| Error::corrupt(format!("table entries at {entries}")))?;
        let room = self
            .pool
            .linked_capacity(block, "a table's entries")?
            .checked_sub(GROWN_HEADER)
            .ok_or_else(|| Error::corrupt(format!("table entries block {block} too small")))?;
        Ok((block, room))
    }

    /// (cap, index_cap, used at the grow) from a grown block's header.
    fn grown_header(&self, block: u64) -> Result<(u64, u64, u64)> {
        let w = |i: u64| self.span.u64_at(block + i * 8).map(|a| a.load(Relaxed));
        Ok((w(0)?, w(1)?, w(2)?))
    }

    /// For a table read without its lock (being dropped, or by a repair,
    /// which runs alone): a holder of the lock can only be a writer that
    /// died, so take the lock over and recover what it left half done.
    fn tab_recover_if_abandoned(&self, b: &TabBody, off: u64) -> Result<()> {
        if b.lock.lock().recovered {
            self.tab_recover(b, off)?;
        }
        Ok(())
    }

    /// Bring back to a consistent state a table whose lock was taken over
    /// from a dead writer (see the module's note). Idempotent: if this
    /// process dies here too, the next one starts over. What the dead writer
    /// was moving in or out is left unreachable, for a repair.
    pub(crate) fn tab_recover(&self, b: &TabBody, off: u64) -> Result<()> {
        self.note_container_recovered();
        let entries = b.entries.load(Relaxed);
        if entries == 0 {
            // Never had entries (a grow publishes `entries` before the rest).
            for f in [&b.count, &b.used, &b.cap, &b.index, &b.index_cap] {
                f.store(0, Relaxed);
            }
            return Ok(());
        }
        let (cap, index_cap, used) = if Self::inline_entries(off, entries) {
            // Never grown: the geometry is still the one set at creation.
            let (c, i, u) = (&b.cap, &b.index_cap, &b.used);
            (c.load(Relaxed), i.load(Relaxed), u.load(Relaxed))
        } else {
            let (block, _) = self.grown_block(entries)?;
            let (cap, index_cap, grow_used) = self.grown_header(block)?;
            let index = entries.checked_add(cap.saturating_mul(ENTRY_SIZE));
            if Some(b.index.load(Relaxed)) == index {
                (cap, index_cap, b.used.load(Relaxed)) // the grow was published
            } else {
                (cap, index_cap, grow_used) // killed while publishing a grow
            }
        };
        if used > cap || cap > 0 && !index_cap.is_power_of_two() {
            return Err(Error::corrupt(format!(
                "table {off}: sizes beyond repair after its writer died"
            )));
        }
        let index = entries + cap * ENTRY_SIZE;
        self.check_blocks(off, cap, entries, index, index_cap)?;
        let mut s = TabState {
            off,
            count: 0,
            used,
            cap,
            entries,
            index,
            index_cap,
        };
        self.span.fill(index, index_cap * 4, 0)?;
        for e in 0..used {
            let eo = entries + e * ENTRY_SIZE;
            let k = Slot::read(self.span, eo + 8)?;
            if k.tag == S_EMPTY {
                // Deleted (perhaps half way): its value goes with it.
                Slot::EMPTY.write(self.span, eo + 24)?;
                continue;
            }
            if Slot::read(self.span, eo + 24)?.tag == S_EMPTY {
                // A replacement cut short: the key stays, with no value.
                Slot::NONE.write(self.span, eo + 24)?;
            }
            self.index_insert(&s, at(self.span, eo)?.load(Relaxed), e)?;
            s.count += 1;
        }
        s.used = used;
        b.index_cap.store(index_cap, Relaxed);
        b.cap.store(cap, Relaxed);
        b.used.store(used, Relaxed);
        b.count.store(s.count, Relaxed);
        b.index.store(index, Relaxed);
        Ok(())
    }

    fn key_matches(&self, slot: Slot, key: KeyRef<'_>) -> Result<bool> {
        Ok(match (slot.tag, key) {
            (T_INT, KeyRef::Int(i)) => slot.bits as i64 == i,
            (T_SSTR, KeyRef::Str(s)) => {
                let (a, n) = slot.short_bytes()?;
                &a[..n] == s
            }
            (T_STR, KeyRef::Str(s)) => {
                let (off, n) = self.data(slot)?;
                if n != s.len() as u64 {
                    return Ok(false);
                }
                let mut buf = vec![0; s.len()];
                self.span.read(off, &mut buf)?;
                buf == s
            }
            _ => false,
        })
    }

    /// Entry number holding `key`, if any.
    fn tab_find(&self, s: &TabState, key: KeyRef<'_>, hash: u64) -> Result<Option<u64>> {
        if s.cap == 0 {
            return Ok(None);
        }
        let mask = s.index_cap - 1;
        let mut i = hash & mask;
        for _ in 0..s.index_cap {
            let cell = self.span.u32_at(s.index + i * 4)?.load(Relaxed) as u64;
            if cell == 0 {
                return Ok(None);
            }
            let e = cell - 1;
            if e >= s.used {
                return Err(Error::corrupt(format!(
                    "table {}: index points past the entries",
                    s.off
                )));
            }
            let eo = s.entries + e * ENTRY_SIZE;
            if at(self.span, eo)?.load(Relaxed) == hash {
                let k = Slot::read(self.span, eo + 8)?;
                if k.tag != S_EMPTY && self.key_matches(k, key)? {
                    return Ok(Some(e));
                }
            }
            i = (i + 1) & mask;
        }
        Ok(None)
    }

    fn index_insert(&self, s: &TabState, hash: u64, entry: u64) -> Result<()> {
        let mask = s.index_cap - 1;
        let mut i = hash & mask;
        for _ in 0..s.index_cap {
            let cell = self.span.u32_at(s.index + i * 4)?;
            if cell.load(Relaxed) == 0 {
                cell.store(entry as u32 + 1, Relaxed);
                return Ok(());
            }
            i = (i + 1) & mask;
        }
        Err(Error::corrupt(format!("table {}: index is full", s.off)))
    }

    /// Make room for one more entry: rebuild into a bigger block, dropping
    /// deleted entries. Called with the lock held.
    fn tab_grow(&self, b: &TabBody, s: &mut TabState) -> Result<()> {
        let new_cap = (s.count * 2).max(4);
        let index_cap = (new_cap * 2).next_power_of_two().max(8);
        let block = self
            .pool
            .allocate(GROWN_HEADER + new_cap * ENTRY_SIZE + index_cap * 4)?;
        let entries = block + GROWN_HEADER;
        let mut n = TabState {
            off: s.off,
            count: 0,
            used: 0,
            cap: new_cap,
            entries,
            index: entries + new_cap * ENTRY_SIZE,
            index_cap,
        };
        let copied = (|| {
            self.span.fill(n.index, index_cap * 4, 0)?;
            for e in 0..s.used {
                let eo = s.entries + e * ENTRY_SIZE;
                let k = Slot::read(self.span, eo + 8)?;
                if k.tag == S_EMPTY {
                    continue;
                }
                // new_cap > count: stopping here keeps every write (and the
                // append that follows) inside the new block.
                if n.used == s.count {
                    return Err(Error::corrupt(format!(
                        "table {} holds more entries than its count {}",
                        s.off, s.count
                    )));
                }
                let hash = at(self.span, eo)?.load(Relaxed);
                let v = Slot::read(self.span, eo + 24)?;
                let no = n.entries + n.used * ENTRY_SIZE;
                at(self.span, no)?.store(hash, Relaxed);
                k.write(self.span, no + 8)?;
                v.write(self.span, no + 24)?;
                self.index_insert(&n, hash, n.used)?;
                n.used += 1;
                n.count += 1;
            }
            for (i, w) in [new_cap, index_cap, n.used, 0].into_iter().enumerate() {
                self.span.u64_at(block + i as u64 * 8)?.store(w, Relaxed);
            }
            Ok(())
        })();
        if let Err(e) = copied {
            let _ = self.pool.free(block);
            return Err(e);
        }
        let old_entries = s.entries;
        // `entries` first: from this store on, the new block is the table
        // (a recovery reads the rest from its header); `index` last says the
        // publication is complete.
        b.entries.store(n.entries, Relaxed);
        b.index_cap.store(n.index_cap, Relaxed);
        b.cap.store(n.cap, Relaxed);
        b.used.store(n.used, Relaxed);
        b.count.store(n.count, Relaxed);
        b.index.store(n.index, Relaxed);
        if old_entries != 0 && !Self::inline_entries(s.off, old_entries) {
            self.pool.free(old_entries - GROWN_HEADER)?;
        }
        *s = n;
        Ok(())
    }

    /// A key slot owning what it needs (a string object for string keys).
    fn key_slot(&self, key: KeyRef<'_>) -> Result<Slot> {
        match key {
            KeyRef::Int(i) => Ok(Slot {
                tag: T_INT,
                bits: i as u64,
            }),
            KeyRef::Str(s) => self.new_str(s),
        }
    }

    /// Set `key` to `value`, moving `value`'s reference into the table.
    /// On error the reference is released.
    pub fn tab_set(&self, tab: Slot, key: KeyRef<'_>, value: Slot) -> Result<()> {
        self.settle_store(self.tab_set_inner(tab, key, value), value)
    }

    fn tab_set_inner(&self, tab: Slot, key: KeyRef<'_>, value: Slot) -> Result<Slot> {
        if value.is_object() && value == tab {
            return Err(Error::invalid("a table cannot contain itself"));
        }
        let b = self.tab_body(tab)?;
        let (_g, mut s) = self.tab_lock(tab)?;
        let hash = key_hash(key);
        if let Some(e) = self.tab_find(&s, key, hash)? {
            let vo = s.entries + e * ENTRY_SIZE + 24;
            let old = Slot::read(self.span, vo)?;
            value.replace(self.span, vo)?;
            return Ok(old);
        }
        if s.used == s.cap {
            self.tab_grow(b, &mut s)?;
        }
        let k = self.key_slot(key)?;
        let eo = s.entries + s.used * ENTRY_SIZE;
        let written = (|| {
            at(self.span, eo)?.store(hash, Relaxed);
            k.write(self.span, eo + 8)?;
            value.write(self.span, eo + 24)?;
            self.index_insert(&s, hash, s.used)
        })();
        if let Err(e) = written {
            let _ = self.release(k);
            return Err(e);
        }
        b.used.store(s.used + 1, Relaxed);
        b.count.store(s.count + 1, Relaxed);
        Ok(Slot::NONE)
    }

    /// The value at `key`, with a new reference for the caller.
    pub fn tab_get(&self, tab: Slot, key: KeyRef<'_>) -> Result<Option<Slot>> {
        let (_g, s) = self.tab_lock(tab)?;
        match self.tab_find(&s, key, key_hash(key))? {
            Some(e) => {
                let v = Slot::read(self.span, s.entries + e * ENTRY_SIZE + 24)?;
                self.retain(v)?;
                Ok(Some(v))
            }
            None => Ok(None),
        }
    }

    pub fn tab_has(&self, tab: Slot, key: KeyRef<'_>) -> Result<bool> {
        let (_g, s) = self.tab_lock(tab)?;
        Ok(self.tab_find(&s, key, key_hash(key))?.is_some())
    }

    /// Remove `key`; true if it was there.
    pub fn tab_delete(&self, tab: Slot, key: KeyRef<'_>) -> Result<bool> {
        let b = self.tab_body(tab)?;
        let (k, v) = {
            let (_g, s) = self.tab_lock(tab)?;
            let Some(e) = self.tab_find(&s, key, key_hash(key))? else {
                return Ok(false);
            };
            let count = s.count.checked_sub(1).ok_or_else(|| {
                Error::corrupt(format!("table {}: an entry but a count of 0", s.off))
            })?;
            let eo = s.entries + e * ENTRY_SIZE;
            let k = Slot::read(self.span, eo + 8)?;
            let v = Slot::read(self.span, eo + 24)?;
            Slot::EMPTY.write(self.span, eo + 8)?;
            Slot::EMPTY.write(self.span, eo + 24)?;
            b.count.store(count, Relaxed);
            (k, v)
        };
        self.release(k)?;
        self.release(v)?;
        Ok(true)
    }

    pub fn tab_len(&self, tab: Slot) -> Result<u64> {
        let (_g, s) = self.tab_lock(tab)?;
        Ok(s.count)
    }

    /// The keys, in insertion order.
    pub fn tab_keys(&self, tab: Slot) -> Result<Vec<Key>> {
        let (_g, s) = self.tab_lock(tab)?;
        let mut keys = Vec::with_capacity(s.count as usize);
        for e in 0..s.used {
            let k = Slot::read(self.span, s.entries + e * ENTRY_SIZE + 8)?;
            match k.tag {
                S_EMPTY => {}
                T_INT => keys.push(Key::Int(k.bits as i64)),
                T_STR | T_SSTR => keys.push(Key::Str(self.read_str(k)?)),
                _ => {
                    return Err(Error::corrupt(format!(
                        "table {}: a key of kind {}",
                        s.off, k.tag
                    )))
                }
            }
        }
        Ok(keys)
    }

    /// Every (key, value) in insertion order, each value with a new reference
    /// for the caller (so the snapshot survives concurrent deletes).
    pub(crate) fn tab_snapshot(&self, tab: Slot) -> Result<Vec<(Slot, Slot)>> {
        let (_g, s) = self.tab_lock(tab)?;
        let mut out = Vec::with_capacity(s.count as usize);
        for e in 0..s.used {
            let eo = s.entries + e * ENTRY_SIZE;
            let k = Slot::read(self.span, eo + 8)?;
            if k.tag == S_EMPTY {
                continue;
            }
            let v = Slot::read(self.span, eo + 24)?;
            let taken = self.retain(k).and_then(|_| match self.retain(v) {
                Ok(()) => Ok(()),
                Err(e) => {
                    let _ = self.release(k);
                    Err(e)
                }
            });
            if let Err(e) = taken {
                for (k, v) in out {
                    let _ = self.release(k);
                    let _ = self.release(v);
                }
                return Err(e);
            }
            out.push((k, v));
        }
        Ok(out)
    }

    /// The separate blocks a table owns (entries and index, unless they are
    /// inside its own block) and every object slot in it, without locking:
    /// for `repair`, which runs with no other process attached.
    pub(crate) fn tab_parts(&self, off: u64) -> Result<(Vec<u64>, Vec<Slot>)> {
        let b = self.tab_body_checked(Slot::object(T_TAB, off), false)?;
        self.tab_recover_if_abandoned(b, off)?;
        let (used, cap, count) = (
            b.used.load(Relaxed),
            b.cap.load(Relaxed),
            b.count.load(Relaxed),
        );
        let (entries, index, index_cap) = (
            b.entries.load(Relaxed),
            b.index.load(Relaxed),
            b.index_cap.load(Relaxed),
        );
        if used > cap || count > used {
            return Err(Error::corrupt(format!(
                "table {off} has inconsistent sizes"
            )));
        }
        let (mut blocks, mut slots) = (Vec::new(), Vec::new());
        if cap == 0 {
            return Ok((blocks, slots));
        }
        self.check_blocks(off, cap, entries, index, index_cap)?;
        for e in 0..used {
            let eo = entries + e * ENTRY_SIZE;
            for so in [eo + 8, eo + 24] {
                let s = Slot::read(self.span, so)?;
                if s.is_object() {
                    slots.push(s);
                }
            }
        }
        if !Self::inline_entries(off, entries) {
            blocks.push(entries - GROWN_HEADER);
        }
        Ok((blocks, slots))
    }

    /// Called when the last reference goes: queue children, free the blocks.
    pub(super) fn tab_drop_children(
        &self,
        off: u64,
        todo: &mut Vec<Slot>,
        frees: &mut Vec<u64>,
    ) -> Result<()> {
        let b = self.tab_body_checked(Slot::object(T_TAB, off), false)?;
        self.tab_recover_if_abandoned(b, off)?;
        let used = b.used.load(Relaxed);
        let cap = b.cap.load(Relaxed);
        let entries = b.entries.load(Relaxed);
        let index = b.index.load(Relaxed);
        if cap == 0 {
            return Ok(());
        }
        let index_cap = b.index_cap.load(Relaxed);
        self.check_blocks(off, cap, entries, index, index_cap)?;
        for e in 0..used.min(cap) {
            let eo = entries + e * ENTRY_SIZE;
            for so in [eo + 8, eo + 24] {
                let s = Slot::read(self.span, so)?;
                if s.is_object() {
                    todo.push(s);
                }
            }
        }
        if Self::inline_entries(off, entries) {
            return Ok(()); // freed with the table's own block
        }
        frees.push(entries - GROWN_HEADER);
        Ok(())
    }
}
