//! Between the wire format and the region: build shared objects from encoded
//! bytes (all or nothing), and encode a shared value back out.

use super::wire::{Elem, Reader, Skipped, Writer, MAX_DEPTH, T_REF};
use super::{
    KeyRef, Slot, Values, OBJ_HEADER, PACKED_MAX, T_ARR, T_BIGINT, T_BOOL, T_BYTES, T_F32, T_F64,
    T_INT, T_NONE, T_PACKED, T_SSTR, T_STR, T_TAB, T_TYPED, T_UINT,
};
use crate::error::{Error, ErrorCode, Result};
use crate::pool::BlockCache;

impl<'a> Values<'a> {
    /// A new string object holding `bytes` (UTF-8 already checked).
    pub(super) fn new_str(&self, bytes: &[u8]) -> Result<Slot> {
        match Slot::short_str(bytes) {
            Some(inline) => Ok(inline),
            None => self.new_blob(T_STR, 0, bytes.len() as u64, bytes),
        }
    }

    fn new_blob(&self, kind: u8, sub: u8, len: u64, bytes: &[u8]) -> Result<Slot> {
        let off = self.new_obj(kind, sub, len, bytes.len() as u64)?;
        self.span.write_streaming(off + OBJ_HEADER, bytes)?;
        Ok(Slot::object(kind, off))
    }

    /// A new typed array of `elem` elements holding `bytes` (their raw,
    /// little-endian contents), copied in once; the result owns one
    /// reference. The same object `store_wire` builds from a typed array's
    /// encoding, without the encoding: a caller holding the elements in
    /// memory already (the Node binding's `Shared(pool, typedArray)`) skips
    /// one copy of them. ERR_SHM_INVALID_ARG if `bytes` is not a whole
    /// number of elements, or holds more than 2^32-1 of them (the wire
    /// format's limit).
    pub fn store_typed(&self, elem: Elem, bytes: &[u8]) -> Result<Slot> {
        let size = elem.size() as usize;
        if !bytes.len().is_multiple_of(size) {
            return Err(Error::invalid(format!(
                "{} bytes are not a whole number of {size}-byte elements",
                bytes.len()
            )));
        }
        let n = bytes.len() / size;
        if n > u32::MAX as usize {
            return Err(Error::invalid(
                "a typed array longer than 2^32-1 elements cannot be shared",
            ));
        }
        self.new_blob(T_TYPED, elem as u8, n as u64, bytes)
    }

    /// Build the value encoded in `bytes`; the result owns one reference.
    /// On any error, everything built so far is freed again.
    pub fn store_wire(&self, bytes: &[u8]) -> Result<Slot> {
        Ok(self.store_wire_refs(bytes)?.0)
    }

    /// [`Values::store_wire`], also telling whether the value holds references
    /// to existing objects (only such a value can close a cycle when stored
    /// into a container: see [`Values::would_cycle`]).
    pub fn store_wire_refs(&self, bytes: &[u8]) -> Result<(Slot, bool)> {
        let mut r = Reader::new(bytes);
        let before = r.refs_seen();
        let slot = self.build_cached(&mut r)?;
        let refs = r.refs_seen() > before;
        if !r.at_end() {
            let _ = self.release(slot);
            return Err(Error::invalid("trailing bytes after the encoded value"));
        }
        Ok((slot, refs))
    }

    /// Would storing `value` into `container` make the container reach
    /// itself? Reference-counted cycles would never be freed, so containers
    /// refuse them. Walks `value`'s containers (each once).
    pub fn would_cycle(&self, container: Slot, value: Slot) -> Result<bool> {
        if !matches!(value.tag, T_TAB | T_ARR) {
            return Ok(false);
        }
        // The walk holds snapshot references for a moment (see load_wire).
        let _b = self.busy();
        let target = container.bits;
        let mut seen = std::collections::HashSet::new();
        let mut todo = vec![value];
        while let Some(s) = todo.pop() {
            if s.bits == target {
                return Ok(true);
            }
            if !seen.insert(s.bits) {
                continue;
            }
            let children: Vec<Slot> = match s.tag {
                T_TAB => self
                    .tab_snapshot(s)?
                    .into_iter()
                    .flat_map(|(k, v)| [k, v])
                    .collect(),
                T_ARR => self.arr_snapshot(s)?,
                _ => continue,
            };
            for c in &children {
                if matches!(c.tag, T_TAB | T_ARR) {
                    todo.push(*c);
                }
            }
            // The snapshot's references only kept the children alive while
            // we looked; the walk goes on by offset (a concurrent delete can
            // at worst make us miss or see a cycle a moment out of date).
            for c in children {
                self.release(c)?;
            }
        }
        Ok(false)
    }

    /// Build the next value from a reader positioned at one (for a run of
    /// concatenated encodings); the result owns one reference.
    pub fn store_one(&self, r: &mut Reader<'_>) -> Result<Slot> {
        self.build_cached(r)
    }

    /// Build the next value with its blocks carved in runs (see
    /// [`crate::pool::BlockCache`]), not taking the pool lock per object.
    fn build_cached(&self, r: &mut Reader<'_>) -> Result<Slot> {
        if !matches!(r.peek(), Some(T_TAB) | Some(T_ARR)) {
            // At most one block: nothing to carve ahead.
            return self.build(r, 0);
        }
        let cache = BlockCache::new(self.pool);
        let built = Values {
            span: self.span,
            pool: self.pool.with_cache(&cache),
            session: self.session,
        }
        .build(r, 0);
        let freed = cache.finish();
        let slot = built?;
        if let Err(e) = freed {
            let _ = self.release(slot);
            return Err(e);
        }
        Ok(slot)
    }

    /// Store a value about to be sent as a queue packet: a table or list
    /// whose encoding is at most [`PACKED_MAX`] bytes and holds no
    /// references to existing objects is kept as a packed object (its
    /// encoding, copied once); anything else is built as [`Values::store_wire`]
    /// builds it. The bytes are checked either way (a malformed encoding is
    /// ERR_SHM_INVALID_ARG and stores nothing). The result owns one reference.
    pub fn store_packet(&self, bytes: &[u8]) -> Result<Slot> {
        let mut r = Reader::new(bytes);
        let slot = self.store_packet_one(&mut r)?;
        if !r.at_end() {
            let _ = self.release(slot);
            return Err(Error::invalid("trailing bytes after the encoded value"));
        }
        Ok(slot)
    }

    /// [`Values::store_packet`] of the next value of a run of concatenated
    /// encodings, leaving the reader past it.
    pub fn store_packet_one(&self, r: &mut Reader<'_>) -> Result<Slot> {
        let start = r.pos();
        if !matches!(r.peek(), Some(T_TAB) | Some(T_ARR)) {
            return self.store_one(r);
        }
        // The skip stops early once the value is known to be too large.
        match r.skip_value_upto(PACKED_MAX)? {
            Some(seen) if !seen.refs => {
                let bytes = r.since(start);
                self.new_blob(T_PACKED, 0, bytes.len() as u64, bytes)
            }
            _ => {
                r.rewind(start);
                self.store_one(r)
            }
        }
    }

    /// [`Values::store_packet_one`] of the next `n` values of a run of
    /// concatenated encodings, appending each result to `out` (on an error,
    /// what was built before it stays in `out`, for the caller to release).
    /// Values that are one block each (tables and lists that pack, and
    /// bytes) are stored in blocks carved back to back in one go
    /// ([`crate::pool::Pool::allocate_run`]), which their reader then frees
    /// in one go.
    pub fn store_packets(&self, r: &mut Reader<'_>, n: usize, out: &mut Vec<Slot>) -> Result<()> {
        let mut left = n;
        while left > 0 {
            // The longest run ahead of values that are one block each: kind,
            // and where the block's body starts and ends in the input.
            let start = r.pos();
            let mut run: Vec<(u8, usize, usize)> = Vec::new();
            while run.len() < left {
                let at = r.pos();
                let one = match r.peek() {
                    Some(T_TAB) | Some(T_ARR) => match r.skip_value_upto(PACKED_MAX) {
                        Ok(Some(seen)) if !seen.refs => Some((T_PACKED, at, r.pos())),
                        _ => None,
                    },
                    Some(T_BYTES) => (|| {
                        r.u8()?;
                        let len = r.count(1)?;
                        r.take(len)?;
                        // (the body follows the tag and the u32 length)
                        Ok::<_, Error>((T_BYTES, at + 1 + 4, r.pos()))
                    })()
                    .ok(),
                    _ => None,
                };
                match one {
                    Some(b) => run.push(b),
                    None => {
                        r.rewind(at);
                        break;
                    }
                }
            }
            if run.len() < 2 {
                // Zero or one: as one value (this also reports a bad one).
                r.rewind(start);
                out.push(self.store_packet_one(r)?);
                left -= 1;
                continue;
            }
            let sizes: Vec<u64> = run
                .iter()
                .map(|&(_, from, to)| OBJ_HEADER + (to - from) as u64)
                .collect();
            let mut offs = Vec::with_capacity(run.len());
            if self.pool.allocate_run(&sizes, &mut offs).is_err() {
                // No one free block holds them all: one by one.
                r.rewind(start);
                for _ in 0..run.len() {
                    out.push(self.store_packet_one(r)?);
                }
            } else {
                // (the reader is past the last of them)
                for (i, (&off, &(kind, from, to))) in offs.iter().zip(&run).enumerate() {
                    let body = r.read_between(from, to);
                    let made = self
                        .init_obj(off, kind, 0, body.len() as u64)
                        .and_then(|_| self.span.write(off + OBJ_HEADER, body));
                    if let Err(e) = made {
                        let _ = self.pool.free_many(&offs[i..]);
                        return Err(e);
                    }
                    out.push(Slot::object(kind, off));
                }
            }
            left -= run.len();
        }
        Ok(())
    }

    /// Check the bytes of the packed object `slot` (copied out already, so
    /// no other process can change them under the check): exactly one
    /// well-formed table or list, without references. A damaged body is
    /// ERR_SHM_CORRUPT.
    fn check_packed(slot: Slot, bytes: &[u8]) -> Result<Skipped> {
        let damaged = |why: &str| {
            Error::corrupt(format!(
                "the packed value at {} is damaged: {why}",
                slot.bits
            ))
        };
        let seen = super::wire::check_packet(bytes).map_err(|e| damaged(e.message()))?;
        // (the size limit is the producer's choice, not checked here)
        if !matches!(bytes.first(), Some(&T_TAB) | Some(&T_ARR)) {
            return Err(damaged("not a table or list"));
        }
        Ok(seen)
    }

    /// The value a packet stands for, as the objects a handle can point at:
    /// a packed packet is built into real objects (its bytes checked again
    /// first) and its own reference released; any other slot comes back as
    /// it is. Consumes the reference in `slot` even when it fails. Call
    /// inside `busy()`, with the caller's mark around the dequeue too.
    pub fn unpack(&self, slot: Slot) -> Result<Slot> {
        if slot.tag != T_PACKED {
            return Ok(slot);
        }
        let mut w = Writer::default();
        // A packet names an object its slot owns: one already released is
        // damage too, not a caller's stale handle.
        let copied = self.copy_packed(slot, &mut w).map_err(|e| match e.code() {
            ErrorCode::Closed => Error::corrupt(e.message()),
            _ => e,
        });
        // Built under one hold of the pool lock (as a batch enqueue builds):
        // the new objects are reachable by nobody else until returned.
        let built = copied.and_then(|_| self.with_pool_held(|v| v.store_wire(&w.buf)));
        let released = self.release(slot);
        let out = built?;
        if let Err(e) = released {
            let _ = self.release(out);
            return Err(e);
        }
        Ok(out)
    }

    /// [`Values::emit_owned`] of a packet, except that a packed one is
    /// copied out without checking its body (only that it starts as a table
    /// or list): for a caller that checks the bytes itself before reading
    /// them ([`crate::value::shape_code_packets`]).
    pub(crate) fn emit_packet_unchecked(&self, slot: Slot, w: &mut Writer) -> Result<()> {
        if slot.tag != T_PACKED {
            return self.emit_owned(slot, w, 0);
        }
        let (off, n) = self.data(slot)?;
        let start = w.buf.len();
        self.copy_out(off, n, w)?;
        if !matches!(w.buf.get(start), Some(&T_TAB) | Some(&T_ARR)) {
            w.buf.truncate(start);
            return Err(Error::corrupt(format!(
                "the packed value at {} is damaged: not a table or list",
                slot.bits
            )));
        }
        Ok(())
    }

    /// Append the checked bytes of the packed object `slot` to `w`; nothing
    /// is appended if they are damaged.
    fn copy_packed(&self, slot: Slot, w: &mut Writer) -> Result<()> {
        let (off, n) = self.data(slot)?;
        let start = w.buf.len();
        self.copy_out(off, n, w)?;
        match Values::check_packed(slot, &w.buf[start..]) {
            Ok(seen) => {
                w.non_ascii |= seen.non_ascii;
                Ok(())
            }
            Err(e) => {
                w.buf.truncate(start);
                Err(e)
            }
        }
    }

    fn build(&self, r: &mut Reader<'_>, depth: usize) -> Result<Slot> {
        if depth > MAX_DEPTH {
            return Err(Error::invalid(format!(
                "values nest deeper than {MAX_DEPTH} levels"
            )));
        }
        let tag = r.u8()?;
        let scalar = |tag, bits| Ok(Slot { tag, bits });
        match tag {
            T_NONE => scalar(T_NONE, 0),
            T_BOOL => scalar(T_BOOL, (r.u8()? != 0) as u64),
            T_INT => scalar(T_INT, r.u64()?),
            T_UINT => scalar(T_UINT, r.u64()?),
            T_F64 => scalar(T_F64, r.u64()?),
            T_F32 => scalar(T_F32, r.u32()? as u64),
            T_STR => {
                let n = r.count(1)?;
                let s = r.take(n)?;
                std::str::from_utf8(s)
                    .map_err(|_| Error::invalid("a string is not valid UTF-8"))?;
                self.new_str(s)
            }
            T_BYTES => {
                let n = r.count(1)?;
                let b = r.take(n)?;
                self.new_blob(T_BYTES, 0, n as u64, b)
            }
            T_BIGINT => {
                let neg = r.u8()? != 0;
                let n = r.count(1)?;
                let mut mag = r.take(n)?;
                while let [rest @ .., 0] = mag {
                    mag = rest;
                }
                self.new_blob(
                    T_BIGINT,
                    (neg && !mag.is_empty()) as u8,
                    mag.len() as u64,
                    mag,
                )
            }
            T_TYPED => {
                let elem = Elem::from_code(r.u8()?)
                    .ok_or_else(|| Error::invalid("unknown typed-array element type"))?;
                let n = r.count(elem.size() as usize)?;
                self.store_typed(elem, r.take(n * elem.size() as usize)?)
            }
            T_TAB => {
                let n = r.count(2)?;
                let mut tab = self.tab_new_fresh(n as u64)?;
                let filled = (|| {
                    for _ in 0..n {
                        let kt = r.u8()?;
                        let key_bytes;
                        let key = match kt {
                            T_STR => {
                                let len = r.count(1)?;
                                key_bytes = r.take(len)?;
                                std::str::from_utf8(key_bytes)
                                    .map_err(|_| Error::invalid("a key is not valid UTF-8"))?;
                                KeyRef::Str(key_bytes)
                            }
                            T_INT => KeyRef::Int(r.u64()? as i64),
                            _ => {
                                return Err(Error::invalid(
                                    "a table key must be a string or an integer",
                                ))
                            }
                        };
                        let v = self.build(r, depth + 1)?;
                        // The table is ours alone until build returns it.
                        self.fresh_tab_set(&mut tab, key, v)?;
                    }
                    Ok(())
                })();
                match filled {
                    Ok(()) => Ok(tab.slot),
                    Err(e) => {
                        let _ = self.release(tab.slot);
                        Err(e)
                    }
                }
            }
            T_ARR => {
                let n = r.count(1)?;
                let mut arr = self.arr_new_fresh(n as u64)?;
                let filled = (|| {
                    for _ in 0..n {
                        let v = self.build(r, depth + 1)?;
                        // The list is ours alone until build returns it.
                        self.fresh_arr_push(&mut arr, v)?;
                    }
                    Ok(())
                })();
                match filled {
                    Ok(()) => Ok(arr.slot),
                    Err(e) => {
                        let _ = self.release(arr.slot);
                        Err(e)
                    }
                }
            }
            T_REF => {
                r.note_ref();
                let off = r.u64()?;
                let slot = self.slot_of(off)?;
                self.retain(slot)?;
                Ok(slot)
            }
            t => Err(Error::invalid(format!("unknown value tag {t}"))),
        }
    }

    /// The slot of the live object at `off` (its kind read from the header).
    /// `off` is a caller's (a `valueAt` offset, a wire reference): if no live
    /// value is there, the offset is what is wrong, so every refusal is
    /// ERR_SHM_INVALID_ARG, except ERR_SHM_CLOSED for a released value.
    pub fn slot_of(&self, off: u64) -> Result<Slot> {
        let not_a_value = || Error::invalid(format!("no shared value at offset {off}"));
        let h = self.header(off).map_err(|_| not_a_value())?;
        let kind = (h.meta.load(std::sync::atomic::Ordering::Relaxed) >> 16) as u8;
        let slot = Slot::object(kind, off);
        // A packed packet is no value a caller can name: it is only ever in
        // a queue, and is built into real objects before anyone sees it.
        if !slot.is_object() || kind == T_PACKED {
            return Err(not_a_value());
        }
        match self.obj(slot) {
            Ok(_) => Ok(slot),
            Err(e) if e.code() == ErrorCode::Closed => Err(e),
            Err(_) => Err(not_a_value()),
        }
    }

    /// [`Values::load_wire`] for a value whose reference the caller owns
    /// (a packet just dequeued): if that is the only reference (count 1),
    /// nobody else can reach the value, so a table is read in place without
    /// its lock and without retaining each entry. Values shared with others
    /// are read as load_wire reads them.
    pub fn load_wire_owned(&self, slot: Slot, w: &mut Writer) -> Result<()> {
        // Shared containers are still read from snapshots (see load_wire).
        let _b = self.busy();
        self.emit_owned(slot, w, 0)
    }

    /// [`Values::load_wire_owned`] without its in-progress mark, for callers
    /// that already hold one around a whole batch.
    pub(crate) fn emit_owned(&self, slot: Slot, w: &mut Writer, depth: usize) -> Result<()> {
        if depth > MAX_DEPTH {
            return Err(Error::invalid(format!(
                "values nest deeper than {MAX_DEPTH} levels (or contain themselves)"
            )));
        }
        // Count 1 is the reference held by whoever gave us `slot` (the caller,
        // or a table only the caller holds): no one else can take another,
        // since taking one needs a reference or the lock of a container that
        // holds one.
        if slot.tag == T_TAB && self.refcount(slot)? == 1 {
            return self.tab_emit_owned(slot, w, depth);
        }
        self.emit(slot, w, depth)
    }

    /// Encode the value in `slot` (deep copy) onto `w`.
    pub fn load_wire(&self, slot: Slot, w: &mut Writer) -> Result<()> {
        // Containers are copied from snapshots that hold a reference to each
        // child until the copy is done: a process killed meanwhile must be
        // known to have been inside an operation.
        let _b = self.busy();
        self.emit(slot, w, 0)
    }

    pub(super) fn emit(&self, slot: Slot, w: &mut Writer, depth: usize) -> Result<()> {
        if depth > MAX_DEPTH {
            return Err(Error::invalid(format!(
                "values nest deeper than {MAX_DEPTH} levels (or contain themselves)"
            )));
        }
        match slot.tag {
            T_NONE => w.u8(T_NONE),
            T_BOOL => {
                w.u8(T_BOOL);
                w.u8((slot.bits != 0) as u8);
            }
            T_INT | T_UINT | T_F64 => {
                w.u8(slot.tag);
                w.u64(slot.bits);
            }
            T_F32 => {
                w.u8(T_F32);
                w.u32(slot.bits as u32);
            }
            T_SSTR => {
                let (a, n) = slot.short_bytes()?;
                w.u8(T_STR);
                w.len(n)?;
                w.bytes(&a[..n]);
                w.non_ascii |= !a[..n].is_ascii();
            }
            T_STR | T_BYTES => {
                let (off, n) = self.data(slot)?;
                w.u8(slot.tag);
                w.len(n as usize)?;
                let start = w.buf.len();
                self.copy_out(off, n, w)?;
                if slot.tag == T_STR {
                    w.non_ascii |= !w.buf[start..].is_ascii();
                }
            }
            T_BIGINT => {
                let o = self.obj(slot)?;
                let (off, n) = self.data(slot)?;
                w.u8(T_BIGINT);
                w.u8(o.sub);
                w.len(n as usize)?;
                self.copy_out(off, n, w)?;
            }
            T_TYPED => {
                let (elem, count) = self.typed_info(slot)?;
                let (off, n) = self.data(slot)?;
                w.u8(T_TYPED);
                w.u8(elem as u8);
                w.len(count as usize)?;
                self.copy_out(off, n, w)?;
            }
            T_TAB => {
                let entries = self.tab_snapshot(slot)?;
                let r = (|| {
                    w.u8(T_TAB);
                    w.len(entries.len())?;
                    for (k, v) in &entries {
                        self.emit(*k, w, depth + 1)?;
                        self.emit(*v, w, depth + 1)?;
                    }
                    Ok(())
                })();
                for (k, v) in entries {
                    let _ = self.release(k);
                    let _ = self.release(v);
                }
                r?;
            }
            T_ARR => {
                let items = self.arr_snapshot(slot)?;
                let r = (|| {
                    w.u8(T_ARR);
                    w.len(items.len())?;
                    for v in &items {
                        self.emit(*v, w, depth + 1)?;
                    }
                    Ok(())
                })();
                for v in items {
                    let _ = self.release(v);
                }
                r?;
            }
            T_PACKED => self.copy_packed(slot, w)?,
            t => return Err(Error::corrupt(format!("a slot of unknown kind {t}"))),
        }
        Ok(())
    }

    fn copy_out(&self, off: u64, n: u64, w: &mut Writer) -> Result<()> {
        // (into the room past the end, not zeroed first: a large array is
        // written once, not twice)
        self.span.read_append(off, n as usize, &mut w.buf)
    }
}

/// Encode a scalar slot on its own (what a container read returns for
/// non-objects).
pub fn scalar_wire(slot: Slot) -> Option<Vec<u8>> {
    if slot.is_object() {
        return None;
    }
    let mut w = Writer::default();
    match slot.tag {
        T_NONE => w.u8(T_NONE),
        T_SSTR => {
            let (a, n) = slot.short_bytes().ok()?;
            w.u8(T_STR);
            w.u32(n as u32);
            w.bytes(&a[..n]);
        }
        T_BOOL => {
            w.u8(T_BOOL);
            w.u8((slot.bits != 0) as u8);
        }
        T_F32 => {
            w.u8(T_F32);
            w.u32(slot.bits as u32);
        }
        t => {
            w.u8(t);
            w.u64(slot.bits);
        }
    }
    Some(w.buf)
}
