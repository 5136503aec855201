//! `NativeValue`: a handle owning one reference to a shared value. Dropping it
//! (explicit `release()`, or the GC finalizer as a safety net) releases the
//! reference. Values cross as wire bytes (see shmtools_core::value::wire);
//! the facade encodes and decodes them in JavaScript.

use std::sync::Arc;

use napi::bindgen_prelude::{ArrayBuffer, Buffer, Either4};
use napi::Env;
use napi_derive::napi;
use shmtools_core::holders::Held;
use shmtools_core::value::{scalar_wire, shape_coded, wire::Writer, KeyRef, Slot, Values};
use shmtools_core::value::{
    T_ARR, T_BIGINT, T_BYTES, T_F32, T_F64, T_INT, T_PACKED, T_SSTR, T_STR, T_TAB, T_TYPED, T_UINT,
};
use shmtools_core::ErrorCode;

use crate::convert::{err, js};
use crate::region::RegionCell;
use napi::Result;

#[napi]
pub struct NativeValue {
    cell: Arc<RegionCell>,
    slot: Slot,
    /// Where the reference is recorded in this process's ledger.
    held: Option<Held>,
    released: bool,
}

/// What JavaScript gets for a slot that owns one reference.
pub type Out = Either4<NativeValue, f64, String, Buffer>;

/// What JavaScript gets for a slot that owns one reference: a handle for
/// containers and typed arrays (which keep their identity); a number or a
/// string directly for those (the common cases, without a Buffer); the wire
/// bytes for the rest (None, booleans, big integers, bytes, 64-bit integers
/// beyond ±2^53). Anything not a handle has its reference released here.
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
    Ok(Either4::A(NativeValue::adopt(cell.clone(), slot)))
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

impl NativeValue {
    /// Wrap a reference the caller owns, recording it in the ledger (so it
    /// is given back if this process dies). Call inside `busy()`.
    pub fn adopt(cell: Arc<RegionCell>, slot: Slot) -> NativeValue {
        let held = cell.region.values().ok().and_then(|v| v.hold(slot));
        NativeValue {
            cell,
            slot,
            held,
            released: false,
        }
    }

    /// Unrecord and release this handle's reference (once).
    fn give_back(&mut self) -> shmtools_core::Result<()> {
        if self.released {
            return Ok(());
        }
        self.released = true;
        let v = self.cell.region.values()?;
        let _b = v.busy();
        let out = if v.unhold(self.held.take())? {
            v.release(self.slot)
        } else {
            Ok(())
        };
        drop(_b);
        self.cell.end_session_if_idle();
        out
    }

    fn values(&self) -> Result<Values<'_>> {
        if self.released {
            return Err(err(
                ErrorCode::Closed,
                "this shared value was released; take a new handle to use it",
            ));
        }
        self.cell.open()?.values().map_err(js)
    }

    /// Build the value in `wire` for storing into this container, refusing
    /// one that would contain the container (a cycle is never freed).
    fn store_for_me(&self, v: &Values<'_>, wire: &[u8]) -> Result<Slot> {
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

    fn expect(&self, tag: u8, what: &str) -> Result<()> {
        if self.slot.tag != tag {
            return Err(err(
                ErrorCode::InvalidArg,
                format!("this shared value is not {what}"),
            ));
        }
        Ok(())
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
}

#[napi]
impl NativeValue {
    /// "tab" | "arr" | "str" | "bytes" | "bigint" | "typed"
    #[napi(getter)]
    pub fn kind(&self) -> &'static str {
        match self.slot.tag {
            T_TAB => "tab",
            T_ARR => "arr",
            T_STR => "str",
            T_BYTES => "bytes",
            T_BIGINT => "bigint",
            T_TYPED => "typed",
            _ => "scalar",
        }
    }

    /// Offset of the object in its region (the same in every process).
    #[napi(getter)]
    pub fn offset(&self) -> f64 {
        self.slot.bits as f64
    }

    /// "dev:inode" of the region this value lives in.
    #[napi(getter)]
    pub fn region_key(&self) -> String {
        let (dev, ino) = self.cell.region.identity();
        format!("{dev}:{ino}")
    }

    #[napi(getter)]
    pub fn released(&self) -> bool {
        self.released
    }

    #[napi(catch_unwind)]
    pub fn ref_count(&self) -> Result<u32> {
        self.values()?.refcount(self.slot).map_err(js)
    }

    /// Drop this handle's reference now. Idempotent.
    #[napi(catch_unwind)]
    pub fn release(&mut self) -> Result<()> {
        self.give_back().map_err(js)
    }

    /// Another handle to the same value (reference + 1).
    #[napi(catch_unwind)]
    pub fn duplicate(&self) -> Result<NativeValue> {
        let v = self.values()?;
        let _b = v.busy();
        v.retain(self.slot).map_err(js)?;
        Ok(NativeValue::adopt(self.cell.clone(), self.slot))
    }

    /// Deep copy out, as wire bytes, shape coded for the JS reader (see
    /// shmtools_core::value::shape_code: a large table of rows carries each
    /// key list once); should the coding fail, the plain encoding, which the
    /// reader reads too.
    #[napi(catch_unwind)]
    pub fn to_wire(&self) -> Result<Buffer> {
        let mut w = Writer::default();
        self.values()?.load_wire(self.slot, &mut w).map_err(js)?;
        Ok(shape_coded(w.buf, 0).into())
    }

    // ---- Tab ---------------------------------------------------------------

    #[napi(catch_unwind)]
    pub fn tab_get(&self, key: String) -> Result<Option<Out>> {
        self.expect(T_TAB, "a table")?;
        let v = self.values()?;
        let _b = v.busy();
        let s = self.find(&key, |k| v.tab_get(self.slot, k))?;
        opt(&self.cell, s)
    }

    /// Set `key` to the value encoded in `wire` (a T_REF stores a reference).
    #[napi(catch_unwind)]
    pub fn tab_set(&self, key: String, wire: Buffer) -> Result<()> {
        self.expect(T_TAB, "a table")?;
        let v = self.values()?;
        let _b = v.busy();
        let value = self.store_for_me(&v, &wire)?;
        let k = match int_key(&key) {
            Some(i) if v.tab_has(self.slot, KeyRef::Int(i)).map_err(js)? => KeyRef::Int(i),
            _ => KeyRef::str(&key),
        };
        v.tab_set(self.slot, k, value).map_err(js)
    }

    #[napi(catch_unwind)]
    pub fn tab_has(&self, key: String) -> Result<bool> {
        self.expect(T_TAB, "a table")?;
        let v = self.values()?;
        Ok(self
            .find(&key, |k| v.tab_has(self.slot, k).map(|b| b.then_some(())))?
            .is_some())
    }

    #[napi(catch_unwind)]
    pub fn tab_delete(&self, key: String) -> Result<bool> {
        self.expect(T_TAB, "a table")?;
        let v = self.values()?;
        let _b = v.busy();
        Ok(self
            .find(&key, |k| {
                v.tab_delete(self.slot, k).map(|b| b.then_some(()))
            })?
            .is_some())
    }

    /// Keys in insertion order (integer keys spelled in decimal).
    #[napi(catch_unwind)]
    pub fn tab_keys(&self) -> Result<Vec<String>> {
        self.expect(T_TAB, "a table")?;
        let keys = self.values()?.tab_keys(self.slot).map_err(js)?;
        Ok(keys
            .into_iter()
            .map(|k| match k {
                shmtools_core::Key::Str(s) => s,
                shmtools_core::Key::Int(i) => i.to_string(),
            })
            .collect())
    }

    #[napi(catch_unwind)]
    pub fn tab_len(&self) -> Result<f64> {
        self.expect(T_TAB, "a table")?;
        Ok(self.values()?.tab_len(self.slot).map_err(js)? as f64)
    }

    // ---- Arr ---------------------------------------------------------------

    #[napi(catch_unwind)]
    pub fn arr_len(&self) -> Result<f64> {
        self.expect(T_ARR, "a list")?;
        Ok(self.values()?.arr_len(self.slot).map_err(js)? as f64)
    }

    #[napi(catch_unwind)]
    pub fn arr_get(&self, index: u32) -> Result<Option<Out>> {
        self.expect(T_ARR, "a list")?;
        let v = self.values()?;
        let _b = v.busy();
        let s = v.arr_get(self.slot, index as u64).map_err(js)?;
        opt(&self.cell, s)
    }

    #[napi(catch_unwind)]
    pub fn arr_set(&self, index: u32, wire: Buffer) -> Result<()> {
        self.expect(T_ARR, "a list")?;
        let v = self.values()?;
        let _b = v.busy();
        let value = self.store_for_me(&v, &wire)?;
        v.arr_set(self.slot, index as u64, value).map_err(js)
    }

    /// Append; returns the new length.
    #[napi(catch_unwind)]
    pub fn arr_push(&self, wire: Buffer) -> Result<f64> {
        self.expect(T_ARR, "a list")?;
        let v = self.values()?;
        let _b = v.busy();
        let value = self.store_for_me(&v, &wire)?;
        Ok(v.arr_push(self.slot, value).map_err(js)? as f64)
    }

    #[napi(catch_unwind)]
    pub fn arr_pop(&self) -> Result<Option<Out>> {
        self.expect(T_ARR, "a list")?;
        let v = self.values()?;
        let _b = v.busy();
        let s = v.arr_pop(self.slot).map_err(js)?;
        opt(&self.cell, s)
    }

    // ---- typed arrays ------------------------------------------------------

    /// Element type code (shmtools_core::value::Elem) of a typed array.
    #[napi(catch_unwind)]
    pub fn elem_type(&self) -> Result<u32> {
        self.expect(T_TYPED, "a typed array")?;
        Ok(self.values()?.typed_info(self.slot).map_err(js)?.0 as u32)
    }

    /// An ArrayBuffer over the array's bytes in the region: no copy. It keeps
    /// the mapping alive; the facade detaches it when the handle is released.
    #[napi(catch_unwind)]
    pub fn view<'env>(&self, env: &'env Env) -> Result<ArrayBuffer<'env>> {
        self.expect(T_TYPED, "a typed array")?;
        let v = self.values()?;
        let (off, n) = v.data(self.slot).map_err(js)?;
        if n == 0 {
            return ArrayBuffer::from_data(env, Vec::<u8>::new());
        }
        let ptr = v.pool().span().ptr_at(off, n).map_err(js)?;
        let keep = self.cell.clone();
        // SAFETY: `ptr..ptr+n` lies inside the live mapping (checked by
        // ptr_at) and the mapping stays mapped while `keep` (an Arc of it) is
        // alive, which the finalizer holds until V8 drops the buffer.
        let ab = unsafe {
            ArrayBuffer::from_external(env, ptr, n as usize, keep, |_env, keep| drop(keep))
        }?;
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

    /// Detach a view made by view(), so reads through it fail instead of
    /// seeing freed memory.
    #[napi(catch_unwind)]
    pub fn detach_view(&self, buffer: ArrayBuffer) -> Result<()> {
        buffer.detach()
    }
}

impl Drop for NativeValue {
    fn drop(&mut self) {
        // The GC safety net: a handle never released explicitly gives its
        // reference back when V8 collects it.
        let _ = self.give_back();
    }
}
