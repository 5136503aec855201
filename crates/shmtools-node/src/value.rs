//! Shared-value handles. Each owns one reference to a value in the region,
//! recorded in this process's ledger, and is an entry of its region's
//! [`HandleTable`]: JavaScript names it by a number and owns it with an
//! ordinary object (src/values.ts), which gives the reference back on
//! `release()` or, as a safety net, through a FinalizationRegistry when the
//! object is collected. Not a `#[napi]` class instance per handle: making a
//! native object with a finalizer cost 1.2-2.5 us (the GC's work on its weak
//! handle included), and every call on a class instance about 200 ns more,
//! for napi-rs' check of its borrows (docs/BENCHMARKS.md, "Handles owned by
//! JavaScript"). Values cross as wire bytes (see shmtools_core::value::wire);
//! the facade encodes and decodes them in JavaScript.

use std::sync::Arc;

use napi::bindgen_prelude::{ArrayBuffer, Buffer, BufferSlice, Either4, External, Uint8Array};
use napi::Env;
use napi_derive::napi;
use shmtools_core::holders::Held;
use shmtools_core::value::{scalar_wire, shape_coded, wire::Writer, Elem, KeyRef, Slot, Values};
use shmtools_core::value::{
    T_ARR, T_BIGINT, T_BYTES, T_F32, T_F64, T_INT, T_PACKED, T_SSTR, T_STR, T_TAB, T_TYPED, T_UINT,
};
use shmtools_core::ErrorCode;

use crate::convert::{err, js};
use crate::region::RegionCell;
use napi::Result;

/// Handles a region may have at once in one process (the low bits of a
/// handle number).
const INDEX_BITS: u32 = 24;
/// Releases of one table entry before its generation wraps.
const GEN_LIMIT: u64 = 1 << 26;

/// The handles JavaScript holds in one region. A handle number is
/// `index + 2^24 * generation`: the generation moves on each time an entry
/// is released, so a number kept after its release names nothing, not even
/// the next handle that reuses the entry, until that entry has been
/// released 2^26 times more and its generation wraps. (The facade never
/// uses a number after its release; only direct callers of the binding
/// could keep one that long. The number does not name its region either:
/// the table it is used with decides what it means.)
#[derive(Default)]
pub struct HandleTable {
    entries: Vec<Entry>,
    free: Vec<u32>,
}

#[derive(Clone, Copy)]
struct Entry {
    gen: u64,
    /// The value and where its reference is recorded in the ledger; None
    /// once released.
    live: Option<(Slot, Option<Held>)>,
}

impl HandleTable {
    fn insert(&mut self, slot: Slot, held: Option<Held>) -> Result<f64> {
        let index = match self.free.pop() {
            Some(i) => i,
            None if self.entries.len() < 1 << INDEX_BITS => {
                self.entries.push(Entry { gen: 0, live: None });
                (self.entries.len() - 1) as u32
            }
            None => {
                return Err(err(
                    ErrorCode::OutOfMemory,
                    "this process holds 16777216 handles of this region at once; release some",
                ))
            }
        };
        let e = &mut self.entries[index as usize];
        e.live = Some((slot, held));
        Ok((index as u64 + (e.gen << INDEX_BITS)) as f64)
    }

    /// The entry a handle number names: None if it is not a handle number
    /// of this table at all.
    fn at(&self, id: f64) -> Option<(usize, u64)> {
        if !(id.is_finite()
            && id >= 0.0
            && id.fract() == 0.0
            && id < (GEN_LIMIT << INDEX_BITS) as f64)
        {
            return None;
        }
        let n = id as u64;
        let index = (n & ((1 << INDEX_BITS) - 1)) as usize;
        (index < self.entries.len()).then_some((index, n >> INDEX_BITS))
    }

    /// The value of a live handle.
    fn get(&self, id: f64) -> Result<Slot> {
        let Some((index, gen)) = self.at(id) else {
            return Err(not_a_handle(id));
        };
        match self.entries[index] {
            Entry {
                gen: g,
                live: Some((slot, _)),
            } if g == gen => Ok(slot),
            _ => Err(released()),
        }
    }

    /// Take a live handle out (its reference is the caller's to give back);
    /// None if it was released already.
    fn take(&mut self, id: f64) -> Result<Option<(Slot, Option<Held>)>> {
        let Some((index, gen)) = self.at(id) else {
            return Err(not_a_handle(id));
        };
        let e = &mut self.entries[index];
        if e.gen != gen || e.live.is_none() {
            return Ok(None);
        }
        let live = e.live.take();
        e.gen = (e.gen + 1) % GEN_LIMIT;
        self.free.push(index as u32);
        Ok(live)
    }

    /// Every live handle's value and ledger entry, the table left empty.
    pub fn drain(&mut self) -> Vec<(Slot, Option<Held>)> {
        self.free.clear();
        let out = self.entries.iter().filter_map(|e| e.live).collect();
        self.entries.clear();
        out
    }
}

fn not_a_handle(id: f64) -> napi::Error {
    err(
        ErrorCode::InvalidArg,
        format!("{id} is not a shared value handle of this region"),
    )
}

fn released() -> napi::Error {
    err(
        ErrorCode::Closed,
        "this shared value was released; take a new handle to use it",
    )
}

/// A region as the value functions take it (`NativeRegion.fast()`).
pub type RegionRef = External<Arc<RegionCell>>;

/// What JavaScript gets for a slot that owns one reference: a handle for a
/// container or a typed array, as a BigInt `4 * handle number + kind` (kind
/// 0 a table, 1 a list, 2 a typed array; nothing else comes back as a
/// BigInt, so the type says what it is); a number or a string directly for
/// those (the common cases, without a Buffer); the wire bytes for the rest
/// (None, booleans, big integers, bytes, 64-bit integers beyond ±2^53).
pub type Out = Either4<u64, f64, String, Buffer>;

/// The [`Out`] for a slot that owns one reference. Anything not a handle
/// has its reference released here.
/// The slot's reference is consumed even when this fails, so the caller
/// never releases it again. Call inside `values.busy()`, the mark of the
/// dequeue that produced the slot.
pub fn from_slot(cell: &Arc<RegionCell>, slot: Slot) -> Result<Out> {
    const SAFE: u64 = 1 << 53;
    // The queue builds packed packets into objects before handing them out;
    // a packed slot met anywhere else (a damaged container) is built here
    // too, so no handle ever points at one.
    let slot = if slot.tag == T_PACKED {
        let v = cell.region.values().map_err(js)?;
        v.unpack(slot).map_err(js)?
    } else {
        slot
    };
    match slot.tag {
        T_INT if (slot.bits as i64).unsigned_abs() <= SAFE => {
            return Ok(Either4::B(slot.bits as i64 as f64))
        }
        T_UINT if slot.bits <= SAFE => return Ok(Either4::B(slot.bits as f64)),
        T_F64 => return Ok(Either4::B(f64::from_bits(slot.bits))),
        T_F32 => return Ok(Either4::B(f32::from_bits(slot.bits as u32) as f64)),
        T_SSTR => {
            let v = cell.region.values().map_err(js)?;
            return v.load_str(slot).map(Either4::C).map_err(js);
        }
        _ => {}
    }
    if let Some(w) = scalar_wire(slot) {
        return Ok(Either4::D(w.into()));
    }
    if matches!(slot.tag, T_STR | T_BYTES | T_BIGINT) {
        let v = cell.region.values().map_err(js)?;
        let out = if slot.tag == T_STR {
            v.load_str(slot).map(Either4::C)
        } else {
            let mut w = Writer::default();
            v.load_wire(slot, &mut w).map(|()| Either4::D(w.buf.into()))
        };
        let released = v.release(slot);
        let out = out.map_err(js)?;
        released.map_err(js)?;
        return Ok(out);
    }
    adopt(cell, slot).map(Either4::A)
}

fn opt(cell: &Arc<RegionCell>, s: Option<Slot>) -> Result<Option<Out>> {
    s.map(|s| from_slot(cell, s)).transpose()
}

/// JavaScript property keys are strings; a Tab written from Rust may have
/// integer keys, which JS reaches through their decimal spelling.
fn int_key(key: &str) -> Option<i64> {
    let i: i64 = key.parse().ok()?;
    (i.to_string() == key).then_some(i)
}

/// Make a handle of a reference the caller owns (a container or a typed
/// array), recording it in the ledger, so it is given back if this process
/// dies; the BigInt of [`Out`]. Call inside `busy()`. The reference is
/// consumed even when this fails.
pub fn adopt(cell: &Arc<RegionCell>, slot: Slot) -> Result<u64> {
    let kind = match slot.tag {
        T_TAB => 0,
        T_ARR => 1,
        T_TYPED => 2,
        t => {
            let _ = cell.region.values().map(|v| v.release(slot));
            return Err(err(
                ErrorCode::Corrupt,
                format!("a value of tag {t} cannot be a handle"),
            ));
        }
    };
    let values = cell.region.values().ok();
    let held = values.as_ref().and_then(|v| v.hold(slot));
    match cell.handles.lock().insert(slot, held) {
        Ok(id) => Ok(id as u64 * 4 + kind),
        Err(e) => {
            if let Some(v) = values {
                if v.unhold(held).unwrap_or(false) {
                    let _ = v.release(slot);
                }
            }
            Err(e)
        }
    }
}

/// Give back the references of the handles among `outs` (made for a call
/// that then failed, so JavaScript never sees them).
pub fn give_back_all(cell: &RegionCell, outs: Vec<Out>) {
    for o in outs {
        if let Either4::A(h) = o {
            let _ = give_back(cell, (h / 4) as f64);
        }
    }
}

/// Give a handle's reference back (once; a handle released already is left
/// as it is). Works on a closed region too: the GC's safety net runs late.
fn give_back(cell: &RegionCell, id: f64) -> Result<()> {
    let Some((slot, held)) = cell.handles.lock().take(id)? else {
        return Ok(());
    };
    let out = (|| {
        let v = cell.region.values()?;
        let _b = v.busy();
        if v.unhold(held)? {
            v.release(slot)
        } else {
            Ok(())
        }
    })();
    cell.end_session_if_idle();
    out.map_err(js)
}

/// A live handle: its region's values (ERR_SHM_CLOSED once the region is
/// closed) and its slot.
struct Hv<'a> {
    cell: &'a Arc<RegionCell>,
    v: Values<'a>,
    slot: Slot,
}

/// A live handle's plain wire encoding (for bench.rs).
pub fn value_wire(r: &RegionRef, id: f64) -> Result<Vec<u8>> {
    hv(r, id)?.wire()
}

fn hv(cell: &Arc<RegionCell>, id: f64) -> Result<Hv<'_>> {
    let slot = cell.handles.lock().get(id)?;
    let v = cell.open()?.values().map_err(js)?;
    Ok(Hv { cell, v, slot })
}

impl Hv<'_> {
    fn expect(&self, tag: u8, what: &str) -> Result<&Self> {
        if self.slot.tag != tag {
            return Err(err(
                ErrorCode::InvalidArg,
                format!("this shared value is not {what}"),
            ));
        }
        Ok(self)
    }

    /// Build the value in `wire` for storing into this container, refusing
    /// one that would contain the container (a cycle is never freed).
    fn store_for_me(&self, wire: &[u8]) -> Result<Slot> {
        let v = &self.v;
        let (value, refs) = v.store_wire_refs(wire).map_err(js)?;
        if refs && v.would_cycle(self.slot, value).map_err(js)? {
            let _ = v.release(value);
            return Err(err(
                ErrorCode::InvalidArg,
                "storing this value here would make a cycle (it contains this container), which would never be freed",
            ));
        }
        Ok(value)
    }

    /// Look a JS key up: as a string, then as an integer key.
    fn find<T>(
        &self,
        key: &str,
        f: impl Fn(KeyRef<'_>) -> shmtools_core::Result<Option<T>>,
    ) -> Result<Option<T>> {
        if let Some(found) = f(KeyRef::str(key)).map_err(js)? {
            return Ok(Some(found));
        }
        match int_key(key) {
            Some(i) => f(KeyRef::Int(i)).map_err(js),
            None => Ok(None),
        }
    }

    /// Deep copy out as wire bytes (plain, not shape coded).
    fn wire(&self) -> Result<Vec<u8>> {
        let mut w = Writer::default();
        self.v.load_wire(self.slot, &mut w).map_err(js)?;
        Ok(w.buf)
    }
}

// The functions below take a handle as (region, handle number); each
// answers ERR_SHM_CLOSED for a released handle or a closed region, and
// ERR_SHM_INVALID_ARG for a number that names no handle.

/// Offset of the value in its region (the same in every process); read
/// from the table, so it answers after the region is closed too.
#[napi(catch_unwind)]
pub fn value_offset(r: &RegionRef, id: f64) -> Result<f64> {
    Ok(r.handles.lock().get(id)?.bits as f64)
}

/// Cross-process reference count of the value.
#[napi(catch_unwind)]
pub fn value_ref_count(r: &RegionRef, id: f64) -> Result<u32> {
    let h = hv(r, id)?;
    h.v.refcount(h.slot).map_err(js)
}

/// Give the handle's reference back now. Idempotent; works after the
/// region is closed (the GC's safety net calls it too). (The facade calls
/// it through fastcall.rs.)
pub fn value_release(cell: &Arc<RegionCell>, id: f64) -> Result<()> {
    give_back(cell, id)
}

/// Deep copy out, as wire bytes, shape coded for the JS reader (see
/// shmtools_core::value::shape_code: a large table of rows carries each
/// key list once); should the coding fail, the plain encoding, which the
/// reader reads too.
#[napi(catch_unwind)]
pub fn value_to_wire(r: &RegionRef, id: f64) -> Result<Buffer> {
    value_to_js_bytes(r, id, -1.0)
}

/// `toJS()`'s bytes: for a table or list whose wire encoding is at least
/// `v8_min` bytes, V8's serialization format if it takes the value
/// (shmtools_core::value::v8out; src/coldwire.ts reads it with a
/// `v8.Deserializer`), else what [`value_to_wire`] gives. The first byte
/// tells them apart: V8's format starts with 0xFF, which no wire tag is.
/// A negative `v8_min` never asks for V8's format.
#[napi(catch_unwind)]
pub fn value_to_js_bytes(r: &RegionRef, id: f64, v8_min: f64) -> Result<Buffer> {
    let h = hv(r, id)?;
    let wire = h.wire()?;
    if !matches!(h.slot.tag, T_TAB | T_ARR) {
        // (nothing to code, and no second copy of a large array)
        return Ok(wire.into());
    }
    if v8_min >= 0.0 && wire.len() as f64 >= v8_min {
        if let Some(v8) = shmtools_core::value::v8out::wire_to_v8(&wire) {
            return Ok(v8.into());
        }
    }
    Ok(shape_coded(wire, 0).into())
}

/// A typed array of element type `elem` (the wire's element code) holding
/// `data`'s bytes, built in the region (`Shared(pool, typedArray)`): one
/// copy, straight from the JS array's memory into the new object.
#[napi(catch_unwind)]
pub fn region_store_typed(r: &RegionRef, elem: u32, data: Uint8Array) -> Result<Out> {
    let elem = u8::try_from(elem)
        .ok()
        .and_then(Elem::from_code)
        .ok_or_else(|| err(ErrorCode::InvalidArg, "unknown typed-array element type"))?;
    build_in(r, |v| v.store_typed(elem, &data))
}

/// Build a value from its wire encoding in the region (`Shared()`): a
/// handle for containers and typed arrays, the value itself for the rest
/// (see [`Out`]). `NativeRegion.store` without the class call.
#[napi(catch_unwind)]
pub fn region_store(r: &RegionRef, wire: BufferSlice) -> Result<Out> {
    store_in(r, &wire)
}

/// Build the value encoded in `wire` in the region of `cell` (the one body
/// of `region_store` and `NativeRegion.store`).
pub fn store_in(cell: &Arc<RegionCell>, wire: &[u8]) -> Result<Out> {
    build_in(cell, |v| v.store_wire(wire))
}

/// Build a new value in the region of `cell` with `build`, inside an
/// in-progress mark, and hand it to JS as [`from_slot`] does.
fn build_in(
    cell: &Arc<RegionCell>,
    build: impl FnOnce(&Values<'_>) -> shmtools_core::Result<Slot>,
) -> Result<Out> {
    let v = cell.open()?.values().map_err(js)?;
    let _b = v.busy();
    let slot = build(&v).map_err(js)?;
    from_slot(cell, slot)
}

// ---- Tab ---------------------------------------------------------------

/// That `id` is a live table handle (the check every table call makes).
pub fn tab_expect(cell: &Arc<RegionCell>, id: f64) -> Result<()> {
    hv(cell, id)?.expect(T_TAB, "a table").map(|_| ())
}

/// The value at `key` of a table handle (null: none). (The facade calls it
/// through fastcall.rs.)
pub fn tab_get(cell: &Arc<RegionCell>, id: f64, key: &str) -> Result<Option<Out>> {
    let h = hv(cell, id)?;
    h.expect(T_TAB, "a table")?;
    let _b = h.v.busy();
    let s = h.find(key, |k| h.v.tab_get(h.slot, k))?;
    opt(h.cell, s)
}

/// Set `key` to the value encoded in `wire` (a T_REF stores a reference).
/// (The facade calls it through fastcall.rs.)
pub fn tab_set(cell: &Arc<RegionCell>, id: f64, key: &str, wire: &[u8]) -> Result<()> {
    let h = hv(cell, id)?;
    h.expect(T_TAB, "a table")?;
    let _b = h.v.busy();
    let value = h.store_for_me(wire)?;
    let k = match int_key(key) {
        Some(i) if h.v.tab_has(h.slot, KeyRef::Int(i)).map_err(js)? => KeyRef::Int(i),
        _ => KeyRef::str(key),
    };
    h.v.tab_set(h.slot, k, value).map_err(js)
}

/// Whether a table handle has `key`. (The facade calls it through
/// fastcall.rs.)
pub fn tab_has(cell: &Arc<RegionCell>, id: f64, key: &str) -> Result<bool> {
    let h = hv(cell, id)?;
    h.expect(T_TAB, "a table")?;
    Ok(
        h.find(key, |k| h.v.tab_has(h.slot, k).map(|b| b.then_some(())))?
            .is_some(),
    )
}

/// Delete `key` from a table handle; false if it was not there. (The
/// facade calls it through fastcall.rs.)
pub fn tab_delete(cell: &Arc<RegionCell>, id: f64, key: &str) -> Result<bool> {
    let h = hv(cell, id)?;
    h.expect(T_TAB, "a table")?;
    let _b = h.v.busy();
    Ok(
        h.find(key, |k| h.v.tab_delete(h.slot, k).map(|b| b.then_some(())))?
            .is_some(),
    )
}

/// Keys in insertion order (integer keys spelled in decimal).
#[napi(catch_unwind)]
pub fn tab_keys(r: &RegionRef, id: f64) -> Result<Vec<String>> {
    let h = hv(r, id)?;
    h.expect(T_TAB, "a table")?;
    let keys = h.v.tab_keys(h.slot).map_err(js)?;
    Ok(keys
        .into_iter()
        .map(|k| match k {
            shmtools_core::Key::Str(s) => s,
            shmtools_core::Key::Int(i) => i.to_string(),
        })
        .collect())
}

/// How many keys a table handle has. (The facade calls it through
/// fastcall.rs.)
pub fn tab_len(cell: &Arc<RegionCell>, id: f64) -> Result<f64> {
    let h = hv(cell, id)?;
    h.expect(T_TAB, "a table")?;
    Ok(h.v.tab_len(h.slot).map_err(js)? as f64)
}

// ---- Arr ---------------------------------------------------------------

/// How many items a list handle has. (The facade calls it through
/// fastcall.rs.)
pub fn arr_len(cell: &Arc<RegionCell>, id: f64) -> Result<f64> {
    let h = hv(cell, id)?;
    h.expect(T_ARR, "a list")?;
    Ok(h.v.arr_len(h.slot).map_err(js)? as f64)
}

/// The value at `index` of a list handle (null: past the end). (The facade
/// calls it through fastcall.rs.)
pub fn arr_get(cell: &Arc<RegionCell>, id: f64, index: u32) -> Result<Option<Out>> {
    let h = hv(cell, id)?;
    h.expect(T_ARR, "a list")?;
    let _b = h.v.busy();
    let s = h.v.arr_get(h.slot, index as u64).map_err(js)?;
    opt(h.cell, s)
}

/// Set item `index` of a list handle to the value encoded in `wire`. (The
/// facade calls it through fastcall.rs.)
pub fn arr_set(cell: &Arc<RegionCell>, id: f64, index: u32, wire: &[u8]) -> Result<()> {
    let h = hv(cell, id)?;
    h.expect(T_ARR, "a list")?;
    let _b = h.v.busy();
    let value = h.store_for_me(wire)?;
    h.v.arr_set(h.slot, index as u64, value).map_err(js)
}

/// Append; returns the new length. (The facade calls it through
/// fastcall.rs.)
pub fn arr_push(cell: &Arc<RegionCell>, id: f64, wire: &[u8]) -> Result<f64> {
    let h = hv(cell, id)?;
    h.expect(T_ARR, "a list")?;
    let _b = h.v.busy();
    let value = h.store_for_me(wire)?;
    Ok(h.v.arr_push(h.slot, value).map_err(js)? as f64)
}

/// Take the last item of a list handle (null if empty). (The facade calls
/// it through fastcall.rs.)
pub fn arr_pop(cell: &Arc<RegionCell>, id: f64) -> Result<Option<Out>> {
    let h = hv(cell, id)?;
    h.expect(T_ARR, "a list")?;
    let _b = h.v.busy();
    let s = h.v.arr_pop(h.slot).map_err(js)?;
    opt(h.cell, s)
}

// ---- typed arrays ------------------------------------------------------

/// Element type code (shmtools_core::value::Elem) of a typed array.
#[napi(catch_unwind)]
pub fn typed_elem(r: &RegionRef, id: f64) -> Result<u32> {
    let h = hv(r, id)?;
    h.expect(T_TYPED, "a typed array")?;
    Ok(h.v.typed_info(h.slot).map_err(js)?.0 as u32)
}

/// An ArrayBuffer over the array's bytes in the region: no copy. It keeps
/// the mapping alive; the facade detaches it when the handle is released.
#[napi(catch_unwind)]
pub fn typed_view<'env>(env: &'env Env, r: &RegionRef, id: f64) -> Result<ArrayBuffer<'env>> {
    let h = hv(r, id)?;
    h.expect(T_TYPED, "a typed array")?;
    let (off, n) = h.v.data(h.slot).map_err(js)?;
    if n == 0 {
        return ArrayBuffer::from_data(env, Vec::<u8>::new());
    }
    let ptr = h.v.pool().span().ptr_at(off, n).map_err(js)?;
    let keep = h.cell.clone();
    // SAFETY: `ptr..ptr+n` lies inside the live mapping (checked by
    // ptr_at) and the mapping stays mapped while `keep` (an Arc of it) is
    // alive, which the finalizer holds until V8 drops the buffer.
    let ab =
        unsafe { ArrayBuffer::from_external(env, ptr, n as usize, keep, |_env, keep| drop(keep)) }?;
    if ab.as_ptr() != ptr.cast_const() {
        // The runtime refused external memory and napi-rs copied instead:
        // a copy would silently diverge from the region. Say so.
        return Err(err(
            ErrorCode::InvalidState,
            "this JavaScript runtime does not allow views of external memory (Electron?); use toJS() to copy values out",
        ));
    }
    Ok(ab)
}

/// A copy of a typed array's bytes in a new ArrayBuffer of V8's own, made
/// straight from the region (`SharedTyped.toJS()`): one copy, where the wire
/// took three and a fresh allocation for each (1 MiB: 0.6-0.8 ms, most of it
/// page faults; docs/BENCHMARKS.md, "A typed array's copy").
#[napi(catch_unwind)]
pub fn typed_copy<'env>(env: &'env Env, r: &RegionRef, id: f64) -> Result<ArrayBuffer<'env>> {
    let h = hv(r, id)?;
    h.expect(T_TYPED, "a typed array")?;
    let (off, n) = h.v.data(h.slot).map_err(js)?;
    let n = usize::try_from(n).map_err(|_| {
        err(
            ErrorCode::Corrupt,
            "a typed array too large for this process",
        )
    })?;
    let mut data = std::ptr::null_mut();
    let mut raw = std::ptr::null_mut();
    // SAFETY: a plain N-API call on the calling (JS) thread's env, with out
    // pointers to two locals.
    let status = unsafe { napi::sys::napi_create_arraybuffer(env.raw(), n, &mut data, &mut raw) };
    if status != napi::sys::Status::napi_ok {
        return Err(err(
            ErrorCode::OutOfMemory,
            format!("JavaScript could not allocate {n} bytes for the copy"),
        ));
    }
    if n > 0 {
        // SAFETY: V8 handed `data` over as `n` writable bytes of the new
        // buffer, which nothing else can reach before this call returns it.
        let dst = unsafe { std::slice::from_raw_parts_mut(data.cast::<u8>(), n) };
        h.v.pool().span().read(off, dst).map_err(js)?;
    }
    // SAFETY: `raw` is the ArrayBuffer just made in `env`.
    unsafe {
        <ArrayBuffer as napi::bindgen_prelude::FromNapiValue>::from_napi_value(env.raw(), raw)
    }
}

/// Detach a view made by typed_view(), so reads through it fail instead of
/// seeing freed memory.
#[napi(catch_unwind)]
pub fn detach_view(buffer: ArrayBuffer) -> Result<()> {
    buffer.detach()
}

/// V8's serialization of a value (src/coldwire.ts) in the wire format, or
/// null when it holds anything the JS encoder would write otherwise or
/// refuse (see shmtools_core::value::v8in): the caller then encodes it the
/// usual way. `holes`: how many holes the facade's walk found in its arrays.
#[napi(catch_unwind)]
pub fn v8_to_wire(v8: BufferSlice, holes: f64) -> Option<Buffer> {
    // (a count from JS: anything but a whole number that fits is no count)
    if !(holes >= 0.0 && holes.fract() == 0.0 && holes < 2f64.powi(53)) {
        return None;
    }
    shmtools_core::value::v8in::v8_to_wire(&v8, holes as u64).map(Buffer::from)
}
