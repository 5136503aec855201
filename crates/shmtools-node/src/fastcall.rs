//! The calls made once per message or per field, as plain Node-API
//! callbacks: a pipe's enqueue and dequeue forms, and a shared table's or
//! list's reads, writes and release.
//!
//! napi-rs 3 wraps every generated callback that takes arguments in a
//! borrow scope (a thread-local scope, a lock on a table of borrows, an
//! allocation), which cost 93-99 ns a call here against 19-21 ns for a
//! callback written against Node-API directly (a call taking one number and
//! returning it plus one, 3 million calls each, 2026-12-06; see
//! docs/BENCHMARKS.md, "One message at a time"). A message sent and taken
//! one at a time makes two to four such calls, so these few are written by
//! hand; everything else stays with napi-rs.
//!
//! The pipe or region they take is an external made here
//! ([`pipe_external`], [`region_external`]) and type tagged, so a call
//! checks what it was given before using it: any other value is an
//! ERR_SHM_INVALID_ARG, never a wild pointer. Arguments are checked for
//! their type, never coerced. Errors cross as the rest of the binding's do
//! (convert.rs): a JS `Error` whose message starts with the stable code; a
//! panic becomes such an error too.
//! The facade reaches these through `fastCalls()` (src/fastcalls.ts), which
//! also declares their types.

use std::ffi::{c_void, CStr};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::ptr;
use std::sync::Arc;

use napi::bindgen_prelude::{Object, ToNapiValue};
use napi::sys;
use napi::{Env, Result};
use napi_derive::napi;
use shmtools_core::ErrorCode;

use crate::convert::err;
use crate::pipe::PipeRef;
use crate::region::RegionCell;
use crate::value::Out;

/// The type tags of the externals made here (random, fixed): one per kind,
/// so a call can tell a pipe from a region from anything else.
const PIPE_TAG: sys::napi_type_tag = sys::napi_type_tag {
    lower: 0x5d1c_3a7e_94b2_06f1,
    upper: 0xa8e4_1f60_2c9b_d357,
};
const REGION_TAG: sys::napi_type_tag = sys::napi_type_tag {
    lower: 0x0b7f_e2c4_6d19_a853,
    upper: 0x3c62_9ae1_f04d_7b28,
};

/// Wrap `p` in a type-tagged external that owns it (freed when collected).
pub fn pipe_external(env: &Env, p: PipeRef) -> Result<sys::napi_value> {
    tagged_external(env, p, &PIPE_TAG)
}

/// Wrap a region's cell in a type-tagged external that owns one reference
/// to it (dropped when collected).
pub fn region_external(env: &Env, cell: Arc<RegionCell>) -> Result<sys::napi_value> {
    tagged_external(env, cell, &REGION_TAG)
}

fn tagged_external<T>(env: &Env, value: T, tag: &sys::napi_type_tag) -> Result<sys::napi_value> {
    let env = env.raw();
    let data = Box::into_raw(Box::new(value));
    let mut out = ptr::null_mut();
    // SAFETY: `env` is the live environment of the current callback; `data`
    // is a valid, uniquely owned pointer that the external takes over, and
    // `drop_boxed::<T>` (its finalizer) is the only place it is freed.
    let status = unsafe {
        sys::napi_create_external(
            env,
            data.cast(),
            Some(drop_boxed::<T>),
            ptr::null_mut(),
            &mut out,
        )
    };
    if status != sys::Status::napi_ok {
        // SAFETY: the external was not made, so `data` is still ours alone.
        drop(unsafe { Box::from_raw(data) });
        return Err(err(ErrorCode::OutOfMemory, "could not make an external"));
    }
    // SAFETY: `out` is the external just made in this environment.
    let status = unsafe { sys::napi_type_tag_object(env, out, tag) };
    if status != sys::Status::napi_ok {
        return Err(err(ErrorCode::InvalidArg, "could not tag an external"));
    }
    Ok(out)
}

/// Finalizer of an external made by [`tagged_external`]: frees its box.
unsafe extern "C" fn drop_boxed<T>(_env: sys::napi_env, data: *mut c_void, _hint: *mut c_void) {
    // SAFETY: `data` is the pointer tagged_external boxed as a `T` (each
    // external gets the finalizer of its own type); Node-API runs a
    // finalizer once, after which nothing can reach the external.
    drop(unsafe { Box::from_raw(data.cast::<T>()) });
}

/// The arguments of one call, read once.
struct Args<const N: usize> {
    env: sys::napi_env,
    argv: [sys::napi_value; N],
    argc: usize,
}

impl<const N: usize> Args<N> {
    /// # Safety
    /// `env` and `info` must be those Node-API passed to the running callback.
    unsafe fn read(env: sys::napi_env, info: sys::napi_callback_info) -> Result<Args<N>> {
        let mut argc = N;
        let mut argv = [ptr::null_mut(); N];
        // SAFETY: per this function's contract; `argv` has room for `argc`
        // values, and Node-API writes at most that many.
        let status = unsafe {
            sys::napi_get_cb_info(
                env,
                info,
                &mut argc,
                argv.as_mut_ptr(),
                ptr::null_mut(),
                ptr::null_mut(),
            )
        };
        if status != sys::Status::napi_ok {
            return Err(err(
                ErrorCode::InvalidArg,
                "could not read the call's arguments",
            ));
        }
        Ok(Args { env, argv, argc })
    }

    /// Argument `i`, or None if the call passed fewer (undefined counts as
    /// given: see [`Args::is_nullish`]).
    fn get(&self, i: usize) -> Option<sys::napi_value> {
        (i < self.argc.min(N)).then(|| self.argv[i])
    }

    fn type_of(&self, v: sys::napi_value) -> Result<sys::napi_valuetype> {
        let mut t = 0;
        // SAFETY: `v` is an argument of the running callback in `self.env`.
        let status = unsafe { sys::napi_typeof(self.env, v, &mut t) };
        if status != sys::Status::napi_ok {
            return Err(err(
                ErrorCode::InvalidArg,
                "could not read an argument's type",
            ));
        }
        Ok(t)
    }

    fn is_nullish(&self, i: usize) -> Result<bool> {
        match self.get(i) {
            None => Ok(true),
            Some(v) => {
                let t = self.type_of(v)?;
                Ok(t == sys::ValueType::napi_undefined || t == sys::ValueType::napi_null)
            }
        }
    }

    /// Argument `i` as the value of an external [`tagged_external`] made
    /// with `tag` (whose value is a `T`); `what` names it in the error.
    fn tagged<T>(&self, i: usize, tag: &sys::napi_type_tag, what: &str) -> Result<&T> {
        let bad = || err(ErrorCode::InvalidArg, format!("not {what}"));
        let v = self.get(i).ok_or_else(bad)?;
        if self.type_of(v)? != sys::ValueType::napi_external {
            return Err(bad());
        }
        let mut tagged = false;
        // SAFETY: `v` is an external argument of the running callback.
        let status = unsafe { sys::napi_check_object_type_tag(self.env, v, tag, &mut tagged) };
        if status != sys::Status::napi_ok || !tagged {
            return Err(bad());
        }
        let mut data = ptr::null_mut();
        // SAFETY: as above.
        let status = unsafe { sys::napi_get_value_external(self.env, v, &mut data) };
        if status != sys::Status::napi_ok || data.is_null() {
            return Err(bad());
        }
        // SAFETY: only tagged_external tags externals, each kind with its
        // own tag (the callers pair PIPE_TAG with PipeRef and REGION_TAG
        // with Arc<RegionCell>, as pipe_external and region_external make
        // them), and it gives them a boxed `T` that lives until the external
        // is collected; the external is an argument of this call, so it is
        // alive until the call returns, and the reference does not outlive
        // `self` (borrowed for the call). Nothing hands out a mutable
        // reference to it.
        Ok(unsafe { &*data.cast::<T>() })
    }

    /// Argument `i` as the pipe a [`pipe_external`] wraps.
    fn pipe(&self, i: usize) -> Result<&PipeRef> {
        self.tagged(i, &PIPE_TAG, "a pipe handle (NativeQueue.raw())")
    }

    /// Argument `i` as the region a [`region_external`] wraps.
    fn region(&self, i: usize) -> Result<&Arc<RegionCell>> {
        self.tagged(i, &REGION_TAG, "a region handle (NativeRegion.raw())")
    }

    /// Argument `i` as a string.
    fn string(&self, i: usize, what: &str) -> Result<String> {
        let bad = || err(ErrorCode::InvalidArg, format!("{what} must be a string"));
        let v = self.get(i).ok_or_else(bad)?;
        if self.type_of(v)? != sys::ValueType::napi_string {
            return Err(bad());
        }
        let mut len = 0usize;
        // SAFETY: `v` is a string argument of the running callback; with no
        // buffer, Node-API only writes the length in UTF-8 bytes.
        let status =
            unsafe { sys::napi_get_value_string_utf8(self.env, v, ptr::null_mut(), 0, &mut len) };
        if status != sys::Status::napi_ok {
            return Err(bad());
        }
        let mut buf = vec![0u8; len + 1];
        let mut got = 0usize;
        // SAFETY: as above; `buf` has room for `len` bytes and the NUL
        // Node-API writes after them.
        let status = unsafe {
            sys::napi_get_value_string_utf8(
                self.env,
                v,
                buf.as_mut_ptr().cast(),
                buf.len(),
                &mut got,
            )
        };
        if status != sys::Status::napi_ok || got != len {
            return Err(bad());
        }
        buf.truncate(got);
        // (Node-API writes lone surrogates as U+FFFD, so this is UTF-8)
        String::from_utf8(buf).map_err(|_| bad())
    }

    /// Argument `i` as a table key: None if it holds a lone surrogate,
    /// which is not UTF-8, so no table can have it as a key. (Node-API
    /// would read it as U+FFFD, another key; only a string with a U+FFFD in
    /// its UTF-8 is looked at again, as UTF-16.)
    fn key(&self, i: usize) -> Result<Option<String>> {
        let s = self.string(i, "a key")?;
        if !s.contains('\u{FFFD}') {
            return Ok(Some(s));
        }
        let v = self
            .get(i)
            .ok_or_else(|| err(ErrorCode::InvalidArg, "a key must be a string"))?;
        let bad = || err(ErrorCode::InvalidArg, "could not read a key");
        let mut len = 0usize;
        // SAFETY: `v` is a string argument of the running callback (checked
        // by `string` above); with no buffer, Node-API only writes the
        // length in UTF-16 units.
        let status =
            unsafe { sys::napi_get_value_string_utf16(self.env, v, ptr::null_mut(), 0, &mut len) };
        if status != sys::Status::napi_ok {
            return Err(bad());
        }
        let mut units = vec![0u16; len + 1];
        let mut got = 0usize;
        // SAFETY: as above; `units` has room for `len` units and the NUL.
        let status = unsafe {
            sys::napi_get_value_string_utf16(self.env, v, units.as_mut_ptr(), units.len(), &mut got)
        };
        if status != sys::Status::napi_ok || got != len {
            return Err(bad());
        }
        let lone = char::decode_utf16(units[..got].iter().copied()).any(|c| c.is_err());
        Ok((!lone).then_some(s))
    }

    fn f64(&self, i: usize, what: &str) -> Result<f64> {
        let bad = || err(ErrorCode::InvalidArg, format!("{what} must be a number"));
        let v = self.get(i).ok_or_else(bad)?;
        if self.type_of(v)? != sys::ValueType::napi_number {
            return Err(bad());
        }
        let mut x = 0.0;
        // SAFETY: `v` is a number argument of the running callback.
        let status = unsafe { sys::napi_get_value_double(self.env, v, &mut x) };
        if status != sys::Status::napi_ok {
            return Err(bad());
        }
        Ok(x)
    }

    /// A number, or None for undefined / null / not given.
    fn opt_f64(&self, i: usize, what: &str) -> Result<Option<f64>> {
        if self.is_nullish(i)? {
            return Ok(None);
        }
        self.f64(i, what).map(Some)
    }

    fn u32(&self, i: usize, what: &str) -> Result<u32> {
        let x = self.f64(i, what)?;
        if !(x.is_finite() && x >= 0.0 && x.fract() == 0.0 && x <= u32::MAX as f64) {
            return Err(err(
                ErrorCode::InvalidArg,
                format!("{what} must be an integer >= 0, got {x}"),
            ));
        }
        Ok(x as u32)
    }

    /// The first `len` bytes of the Buffer (or other Uint8Array) argument
    /// `i`. (Node-API's `napi_is_buffer` says yes to any view on Node 20,
    /// so the kind is checked as a typed array's.)
    fn bytes(&self, i: usize, len: usize) -> Result<&[u8]> {
        let bad = || {
            err(
                ErrorCode::InvalidArg,
                "the encoded value must be a Buffer or a Uint8Array",
            )
        };
        let v = self.get(i).ok_or_else(bad)?;
        let mut is_typed = false;
        // SAFETY: `v` is an argument of the running callback.
        let status = unsafe { sys::napi_is_typedarray(self.env, v, &mut is_typed) };
        if status != sys::Status::napi_ok || !is_typed {
            return Err(bad());
        }
        let mut kind = 0;
        let mut n = 0usize;
        let mut data = ptr::null_mut();
        // SAFETY: as above; `v` is a typed array. (Its ArrayBuffer and
        // offset are not asked for.)
        let status = unsafe {
            sys::napi_get_typedarray_info(
                self.env,
                v,
                &mut kind,
                &mut n,
                &mut data,
                ptr::null_mut(),
                ptr::null_mut(),
            )
        };
        if status != sys::Status::napi_ok || kind != sys::TypedarrayType::uint8_array {
            return Err(bad());
        }
        if len > n {
            return Err(err(
                ErrorCode::InvalidArg,
                format!("length {len} is past the end of a Buffer of {n} bytes"),
            ));
        }
        if len == 0 || data.is_null() {
            return if len == 0 { Ok(&[]) } else { Err(bad()) };
        }
        // SAFETY: Node-API gave `data` as the first of the view's `n` >=
        // `len` bytes (one byte per element: a Uint8Array); the view is an
        // argument of this call, so it stays alive, and no JavaScript runs
        // (nothing can detach or resize its buffer) before the call
        // returns, which the borrow of `self` bounds.
        Ok(unsafe { std::slice::from_raw_parts(data.cast::<u8>(), len) })
    }
}

/// Run a call body: its value, or a thrown JS error (a panic included).
fn run(env: sys::napi_env, body: impl FnOnce() -> Result<sys::napi_value>) -> sys::napi_value {
    let out = catch_unwind(AssertUnwindSafe(body)).unwrap_or_else(|_| {
        Err(err(
            ErrorCode::InvalidState,
            "a native call failed unexpectedly (a panic): a bug in shmtools, please report it",
        ))
    });
    match out {
        Ok(v) => v,
        Err(e) => {
            let mut pending = false;
            // SAFETY: `env` is the running callback's.
            let status = unsafe { sys::napi_is_exception_pending(env, &mut pending) };
            if status == sys::Status::napi_ok && pending {
                // A Node-API call in the body threw already: that error is
                // the one to see.
                return ptr::null_mut();
            }
            // Reasons from napi-rs' own conversions carry no code: give them one.
            let reason = if e.reason.starts_with("ERR_SHM_") {
                e.reason
            } else {
                format!(
                    "{}: a native call could not make its result ({})",
                    ErrorCode::InvalidState.as_str(),
                    e.reason
                )
            };
            let msg = std::ffi::CString::new(reason.replace('\0', " ")).unwrap_or_default();
            // SAFETY: `env` is the running callback's and no exception is
            // pending; the message is a valid C string.
            unsafe { sys::napi_throw_error(env, ptr::null(), msg.as_ptr()) };
            ptr::null_mut()
        }
    }
}

/// Run the body of a call on its arguments (at most `N` are read).
///
/// # Safety
/// `env` and `info` must be those Node-API passed to the running callback.
unsafe fn call<const N: usize>(
    env: sys::napi_env,
    info: sys::napi_callback_info,
    body: fn(&Args<N>) -> Result<sys::napi_value>,
) -> sys::napi_value {
    run(env, || {
        // SAFETY: per this function's contract.
        let a = unsafe { Args::<N>::read(env, info) }?;
        body(&a)
    })
}

fn to_js<T: ToNapiValue>(env: sys::napi_env, v: T) -> Result<sys::napi_value> {
    // SAFETY: `env` is the running callback's.
    unsafe { T::to_napi_value(env, v) }
}

/// pipeEnqueue(pipe, wire: Buffer, len, timeoutMs?): enqueue the encoded
/// value `wire[0..len)`, waiting up to `timeoutMs` (undefined: forever; 0:
/// not at all); false if there was no room. A small value is copied into
/// the pipe's byte ring, a larger one stored in the pool (packed if it can
/// be). Nothing is built while it waits. (The length rides along so the
/// facade can pass its encoder's buffer as it is, without making a view.)
fn pipe_enqueue(a: &Args<4>) -> Result<sys::napi_value> {
    let p = a.pipe(0)?;
    let len = a.u32(2, "length")? as usize;
    let wire = a.bytes(1, len)?;
    let t = a.opt_f64(3, "timeoutMs")?;
    to_js(a.env, p.enqueue(wire, t)?)
}

/// pipeDequeue(pipe, timeoutMs?): dequeue a packet as a handle or a value
/// (see `Out` in value.rs), waiting up to `timeoutMs` (undefined: forever;
/// 0: not at all); null if nothing came.
fn pipe_dequeue(a: &Args<2>) -> Result<sys::napi_value> {
    let p = a.pipe(0)?;
    let t = a.opt_f64(1, "timeoutMs")?;
    to_js(a.env, p.dequeue(t)?)
}

/// pipeDequeueSpin(pipe, spinUs): dequeue if a packet is there or arrives
/// within `spinUs` microseconds, spinning on the futex word (no sleep); the
/// async forms call this once before parking, since a reply often comes
/// within a few microseconds and waking through a thread costs tens.
fn pipe_dequeue_spin(a: &Args<2>) -> Result<sys::napi_value> {
    let p = a.pipe(0)?;
    let spin = a.u32(1, "spinUs")?;
    to_js(a.env, p.dequeue_spin(spin)?)
}

/// pipeDequeueCopy(pipe, timeoutMs?, spinUs): dequeue one packet, waiting
/// up to `timeoutMs` (undefined: forever; 0: not at all) or, with a
/// `spinUs` above 0, spinning up to that long instead (as pipeDequeueSpin),
/// and return a deep copy of it, the packet released here: as
/// pipe_dequeue_many_copy returns a batch of one, without the shape coding
/// (one message has no key list to repeat). Nothing came: an empty string.
fn pipe_dequeue_copy(a: &Args<3>) -> Result<sys::napi_value> {
    let p = a.pipe(0)?;
    let t = a.opt_f64(1, "timeoutMs")?;
    let spin = a.u32(2, "spinUs")?;
    to_js(a.env, p.dequeue_copy(&Env::from_raw(a.env), t, spin)?)
}

/// pipeSeq(pipe, kind): the futex sequence for `kind` (0 not empty, 1 not
/// full); read it before a failed attempt, then wait for it to move.
fn pipe_seq(a: &Args<2>) -> Result<sys::napi_value> {
    let p = a.pipe(0)?;
    let kind = a.u32(1, "kind")?;
    to_js(a.env, p.seq(kind)?)
}

/// tabGet(region, id, key): the value at `key` of table handle `id` (a
/// handle or a value as a dequeue gives them; null if there is none).
fn tab_get(a: &Args<3>) -> Result<sys::napi_value> {
    let cell = a.region(0)?;
    let id = a.f64(1, "a handle number")?;
    match a.key(2)? {
        Some(key) => to_js(a.env, crate::value::tab_get(cell, id, &key)?),
        // (a key no table can have is not there)
        None => {
            crate::value::tab_expect(cell, id)?;
            to_js(a.env, Option::<Out>::None)
        }
    }
}

/// arrGet(region, id, index): the value at `index` of list handle `id`
/// (null past the end).
fn arr_get(a: &Args<3>) -> Result<sys::napi_value> {
    let cell = a.region(0)?;
    let id = a.f64(1, "a handle number")?;
    let index = a.u32(2, "index")?;
    to_js(a.env, crate::value::arr_get(cell, id, index)?)
}

/// valueRelease(region, id): give handle `id`'s reference back now.
/// Idempotent, and a number whose entry has moved on gives nothing back;
/// works after the region is closed (the GC's safety net calls it too).
fn value_release(a: &Args<2>) -> Result<sys::napi_value> {
    let cell = a.region(0)?;
    let id = a.f64(1, "a handle number")?;
    crate::value::value_release(cell, id)?;
    to_js(a.env, ())
}

/// tabSet(region, id, key, wire, len): set `key` of table handle `id` to
/// the value encoded in `wire[0..len)`.
fn tab_set(a: &Args<5>) -> Result<sys::napi_value> {
    let cell = a.region(0)?;
    let id = a.f64(1, "a handle number")?;
    let key = a.key(2)?.ok_or_else(|| {
        err(
            ErrorCode::InvalidArg,
            "a key with a lone surrogate cannot be stored (it is not UTF-8)",
        )
    })?;
    let len = a.u32(4, "length")? as usize;
    let wire = a.bytes(3, len)?;
    crate::value::tab_set(cell, id, &key, wire)?;
    to_js(a.env, ())
}

/// tabHas(region, id, key): whether table handle `id` has `key`.
fn tab_has(a: &Args<3>) -> Result<sys::napi_value> {
    let cell = a.region(0)?;
    let id = a.f64(1, "a handle number")?;
    match a.key(2)? {
        Some(key) => to_js(a.env, crate::value::tab_has(cell, id, &key)?),
        None => {
            crate::value::tab_expect(cell, id)?;
            to_js(a.env, false)
        }
    }
}

/// tabDelete(region, id, key): delete `key`; false if it was not there.
fn tab_delete(a: &Args<3>) -> Result<sys::napi_value> {
    let cell = a.region(0)?;
    let id = a.f64(1, "a handle number")?;
    match a.key(2)? {
        Some(key) => to_js(a.env, crate::value::tab_delete(cell, id, &key)?),
        None => {
            crate::value::tab_expect(cell, id)?;
            to_js(a.env, false)
        }
    }
}

/// tabLen(region, id): how many keys a table handle has.
fn tab_len(a: &Args<2>) -> Result<sys::napi_value> {
    let cell = a.region(0)?;
    let id = a.f64(1, "a handle number")?;
    to_js(a.env, crate::value::tab_len(cell, id)?)
}

/// arrLen(region, id): how many items a list handle has.
fn arr_len(a: &Args<2>) -> Result<sys::napi_value> {
    let cell = a.region(0)?;
    let id = a.f64(1, "a handle number")?;
    to_js(a.env, crate::value::arr_len(cell, id)?)
}

/// arrSet(region, id, index, wire, len): set item `index` of list handle
/// `id` to the value encoded in `wire[0..len)`.
fn arr_set(a: &Args<5>) -> Result<sys::napi_value> {
    let cell = a.region(0)?;
    let id = a.f64(1, "a handle number")?;
    let index = a.u32(2, "index")?;
    let len = a.u32(4, "length")? as usize;
    let wire = a.bytes(3, len)?;
    crate::value::arr_set(cell, id, index, wire)?;
    to_js(a.env, ())
}

/// arrPush(region, id, wire, len): append the value encoded in
/// `wire[0..len)`; the new length.
fn arr_push(a: &Args<4>) -> Result<sys::napi_value> {
    let cell = a.region(0)?;
    let id = a.f64(1, "a handle number")?;
    let len = a.u32(3, "length")? as usize;
    let wire = a.bytes(2, len)?;
    to_js(a.env, crate::value::arr_push(cell, id, wire)?)
}

/// arrPop(region, id): take the last item (null if empty).
fn arr_pop(a: &Args<2>) -> Result<sys::napi_value> {
    let cell = a.region(0)?;
    let id = a.f64(1, "a handle number")?;
    to_js(a.env, crate::value::arr_pop(cell, id)?)
}

type Callback = unsafe extern "C" fn(sys::napi_env, sys::napi_callback_info) -> sys::napi_value;

/// The Node-API callback that runs `body`: its arguments read, its errors
/// and panics thrown as JS errors (see [`call`]).
macro_rules! callback {
    ($body:path) => {{
        unsafe extern "C" fn cb(
            env: sys::napi_env,
            info: sys::napi_callback_info,
        ) -> sys::napi_value {
            // SAFETY: Node-API calls a callback with its own env and info.
            unsafe { call(env, info, $body) }
        }
        cb as Callback
    }};
}

const CALLS: [(&CStr, Callback); 16] = [
    (c"pipeEnqueue", callback!(pipe_enqueue)),
    (c"pipeDequeue", callback!(pipe_dequeue)),
    (c"pipeDequeueSpin", callback!(pipe_dequeue_spin)),
    (c"pipeDequeueCopy", callback!(pipe_dequeue_copy)),
    (c"pipeSeq", callback!(pipe_seq)),
    (c"tabGet", callback!(tab_get)),
    (c"tabSet", callback!(tab_set)),
    (c"tabHas", callback!(tab_has)),
    (c"tabDelete", callback!(tab_delete)),
    (c"tabLen", callback!(tab_len)),
    (c"arrGet", callback!(arr_get)),
    (c"arrSet", callback!(arr_set)),
    (c"arrPush", callback!(arr_push)),
    (c"arrPop", callback!(arr_pop)),
    (c"arrLen", callback!(arr_len)),
    (c"valueRelease", callback!(value_release)),
];

/// The hand-written per-message calls, as an object of functions (see the
/// module docs; src/fastcalls.ts declares them).
#[napi(catch_unwind, ts_return_type = "object")]
pub fn fast_calls<'env>(env: &'env Env) -> Result<Object<'env>> {
    let raw = env.raw();
    let mut obj = ptr::null_mut();
    // SAFETY: `raw` is the running callback's environment.
    if unsafe { sys::napi_create_object(raw, &mut obj) } != sys::Status::napi_ok {
        return Err(err(ErrorCode::OutOfMemory, "could not make an object"));
    }
    for (name, cb) in CALLS {
        let mut f = ptr::null_mut();
        // SAFETY: as above; `name` is a NUL-terminated string and `cb` a
        // callback with the Node-API signature.
        let made = unsafe {
            sys::napi_create_function(
                raw,
                name.as_ptr(),
                name.to_bytes().len() as isize,
                Some(cb),
                ptr::null_mut(),
                &mut f,
            )
        };
        if made != sys::Status::napi_ok {
            return Err(err(
                ErrorCode::OutOfMemory,
                "could not make a per-message call",
            ));
        }
        // SAFETY: as above; `obj` and `f` were made in this environment.
        let set = unsafe { sys::napi_set_named_property(raw, obj, name.as_ptr(), f) };
        if set != sys::Status::napi_ok {
            return Err(err(
                ErrorCode::OutOfMemory,
                "could not make a per-message call",
            ));
        }
    }
    Ok(Object::from_raw(raw, obj))
}
