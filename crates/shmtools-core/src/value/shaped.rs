//! Shape coding: a run of wire encodings rewritten for a JavaScript reader
//! that builds plain objects from it (the pipes' copy form, `dequeueMany(n,
//! { copy: true })`). Messages of one kind are tables with the same keys in
//! the same order; reading every key of every message costs a JS reader more
//! than reading the values. So the first table of each key list in a batch
//! is written with its keys and numbered, and every later table with the
//! same keys names that number and carries only its values. Small integers
//! get a 4-byte body. Everything else is the wire format unchanged.
//!
//! | tag | name     | body |
//! | --- | -------- | ---- |
//! | 32  | DefShape | u32 count (1..=16), count × (Str key, value): a table whose key list becomes shape number k: the k-th DefShape to *end* (from 0; an inner table's ends before its parent's) |
//! | 33  | Shape    | u16 shape number (of a DefShape that ended before this table began), then one value per key of that shape |
//! | 34  | I32      | i32: an Int (or a UInt) that fits |
//!
//! The rewrite is only between the binding and src/wire.ts (BatchDecoder);
//! nothing in a region is ever shape coded.
//!
//! The coder checks what it reads as [`Reader::skip_value`] does (known
//! tags, counts the input holds, UTF-8 strings, string or integer keys,
//! depth) and refuses references, so the copy form can hand it packed
//! packets copied out unchecked and check each byte once
//! ([`shape_code_packets`]).

use std::collections::HashMap;

use super::wire::{
    Reader, MAX_DEPTH, T_ARR, T_BYTES, T_F64, T_INT, T_NONE, T_REF, T_STR, T_TAB, T_UINT,
};
use crate::error::{Error, Result};

pub const T_DEFSHAPE: u8 = 32;
pub const T_SHAPE: u8 = 33;
pub const T_I32: u8 = 34;
/// Tables with more keys than this are written as they are.
pub const SHAPE_KEYS_MAX: usize = 16;
const SHAPES_MAX: usize = 1 << 16;

/// Rewrite the concatenated encodings `src` (as the copy forms produce them:
/// well formed, no references) shape coded onto `out`. On an error `out` is
/// left as it was; the caller can hand over `src` unchanged instead, which a
/// shape-coded reader reads too.
pub fn shape_code(src: &[u8], out: &mut Vec<u8>) -> Result<()> {
    let start = out.len();
    let mut c = Coder::new(src);
    while !c.r.at_end() {
        if let Err(e) = c.value(out, 0) {
            out.truncate(start);
            return Err(e);
        }
    }
    Ok(())
}

/// Shape code the packets in `src[keep..]` onto a copy of `src[..keep]`,
/// checking them: `ends` holds where each packet's encoding ends in `src`
/// (ascending, the last at `src.len()`), and each must be exactly one
/// well-formed value without references. Returns the coded bytes and
/// whether some string in them is not ASCII. A packet that fails the check
/// is ERR_SHM_CORRUPT (it was damaged in the region).
pub fn shape_code_packets(src: &[u8], keep: usize, ends: &[usize]) -> Result<(Vec<u8>, bool)> {
    let damaged =
        |why: &str| Error::corrupt(format!("a packet read from the pipe is damaged: {why}"));
    let mut out = Vec::with_capacity(src.len());
    out.extend_from_slice(src.get(..keep).ok_or_else(|| damaged("no packets"))?);
    let mut c = Coder::new(src);
    c.r.take(keep).map_err(|e| damaged(e.message()))?;
    for &end in ends {
        c.value(&mut out, 0).map_err(|e| damaged(e.message()))?;
        if c.r.pos() != end {
            return Err(damaged("its encoding does not end where the packet does"));
        }
    }
    if !c.r.at_end() {
        return Err(damaged("bytes after the last packet"));
    }
    Ok((out, c.non_ascii))
}

/// `buf` with everything past its first `keep` bytes shape coded (the first
/// `keep` bytes are copied as they are); `buf` itself, unchanged, if the
/// coding fails (a reader of shape-coded bytes reads plain ones too).
pub fn shape_coded(buf: Vec<u8>, keep: usize) -> Vec<u8> {
    let Some(head) = buf.get(..keep) else {
        return buf;
    };
    let mut out = Vec::with_capacity(buf.len());
    out.extend_from_slice(head);
    match shape_code(&buf[keep..], &mut out) {
        Ok(()) => out,
        Err(_) => buf,
    }
}

struct Coder<'a> {
    r: Reader<'a>,
    /// Shape number of each key list seen (the keys' encodings, back to back).
    ids: HashMap<Vec<u8>, u16>,
    /// Per nesting depth, the key list and number of the last shape used
    /// there: the usual hit, found without hashing.
    last: Vec<Option<(Vec<u8>, u16)>>,
    /// Per nesting depth, a buffer for the key list of the table being read.
    sigs: Vec<Vec<u8>>,
    /// Some string read so far (a key or a value) is not ASCII.
    non_ascii: bool,
}

impl<'a> Coder<'a> {
    fn new(src: &'a [u8]) -> Coder<'a> {
        Coder {
            r: Reader::new(src),
            ids: HashMap::new(),
            last: Vec::new(),
            sigs: Vec::new(),
            non_ascii: false,
        }
    }

    /// Step over a string's body (the reader past its tag), checking it is
    /// UTF-8.
    fn str_body(&mut self) -> Result<()> {
        let n = self.r.u32()? as usize;
        let s = self.r.take(n)?;
        if !s.is_ascii() {
            std::str::from_utf8(s).map_err(|_| Error::invalid("a string is not valid UTF-8"))?;
            self.non_ascii = true;
        }
        Ok(())
    }

    fn value(&mut self, out: &mut Vec<u8>, depth: usize) -> Result<()> {
        if depth > MAX_DEPTH {
            return Err(Error::invalid("values nest too deeply"));
        }
        let at = self.r.pos();
        match self.r.peek() {
            Some(T_INT) | Some(T_UINT) => {
                let tag = self.r.u8()?;
                let v = self.r.u64()?;
                let small = if tag == T_INT {
                    i32::try_from(v as i64).ok()
                } else {
                    i32::try_from(v).ok()
                };
                match small {
                    Some(s) => {
                        out.push(T_I32);
                        out.extend_from_slice(&s.to_le_bytes());
                    }
                    None => out.extend_from_slice(self.r.since(at)),
                }
            }
            Some(T_TAB) => {
                self.r.u8()?;
                let n = self.r.count(2)?;
                self.table(n, out, depth)?;
            }
            Some(T_ARR) => {
                self.r.u8()?;
                let n = self.r.count(1)?;
                out.push(T_ARR);
                out.extend_from_slice(&(n as u32).to_le_bytes());
                for _ in 0..n {
                    self.value(out, depth + 1)?;
                }
            }
            Some(T_STR) => {
                self.r.u8()?;
                self.str_body()?;
                out.extend_from_slice(self.r.since(at));
            }
            Some(T_BYTES) => {
                self.r.u8()?;
                let n = self.r.u32()? as usize;
                self.r.take(n)?;
                out.extend_from_slice(self.r.since(at));
            }
            Some(T_NONE) => out.push(self.r.u8()?),
            Some(T_F64) => out.extend_from_slice(self.r.take(9)?),
            Some(T_REF) => return Err(Error::invalid("a reference where a copy was due")),
            _ => {
                // The other scalars (the containers are handled above).
                self.r.skip_value()?;
                out.extend_from_slice(self.r.since(at));
            }
        }
        Ok(())
    }

    /// Step over a table key, appending its encoding to `sig`; false if
    /// it is not a string (an integer: nothing else is a key).
    fn key(&mut self, sig: &mut Vec<u8>) -> Result<bool> {
        let at = self.r.pos();
        let is_str = match self.r.u8()? {
            T_STR => {
                self.str_body()?;
                true
            }
            T_INT => {
                self.r.u64()?;
                false
            }
            _ => return Err(Error::invalid("a table key must be a string or an integer")),
        };
        sig.extend_from_slice(self.r.since(at));
        Ok(is_str)
    }

    /// A table of `n` entries, the reader past its count.
    fn table(&mut self, n: usize, out: &mut Vec<u8>, depth: usize) -> Result<()> {
        if n == 0 || n > SHAPE_KEYS_MAX {
            out.push(T_TAB);
            out.extend_from_slice(&(n as u32).to_le_bytes());
            for i in 0..2 * n {
                if i % 2 == 0 && !matches!(self.r.peek(), Some(T_STR) | Some(T_INT)) {
                    return Err(Error::invalid("a table key must be a string or an integer"));
                }
                self.value(out, depth + 1)?;
            }
            return Ok(());
        }
        // Values are written first, after room for a Shape header; the
        // header is filled in once the keys are known. A reader numbers a
        // key list when its DefShape ends, so this table may only name a
        // shape defined before it began (not one defined inside its values).
        let defined_before = self.ids.len();
        let head = out.len();
        out.extend_from_slice(&[T_SHAPE, 0, 0]);
        let mut sig = std::mem::take(self.sig_at(depth));
        sig.clear();
        let mut key_ends = [0usize; SHAPE_KEYS_MAX];
        let mut val_ends = [0usize; SHAPE_KEYS_MAX];
        let mut str_keys = true;
        for i in 0..n {
            str_keys &= self.key(&mut sig)?;
            key_ends[i] = sig.len();
            self.value(out, depth + 1)?;
            val_ends[i] = out.len();
        }
        let found = if !str_keys {
            None
        } else {
            match self.last.get(depth) {
                Some(Some((keys, id))) if *keys == sig => Some(*id),
                _ => self.ids.get(&sig).copied(),
            }
        };
        let known = found.filter(|&id| (id as usize) < defined_before);
        let fresh = str_keys && found.is_none() && self.ids.len() < SHAPES_MAX;
        if let Some(id) = known {
            out[head + 1..head + 3].copy_from_slice(&id.to_le_bytes());
        } else {
            // Rare (once per key list per batch): write keys and values
            // interleaved in place of the values alone.
            let vals = out.split_off(head + 3);
            out.truncate(head);
            out.push(if fresh { T_DEFSHAPE } else { T_TAB });
            out.extend_from_slice(&(n as u32).to_le_bytes());
            let (mut k0, mut v0) = (0, 0);
            for i in 0..n {
                let v1 = val_ends[i] - head - 3;
                out.extend_from_slice(&sig[k0..key_ends[i]]);
                out.extend_from_slice(&vals[v0..v1]);
                (k0, v0) = (key_ends[i], v1);
            }
        }
        let id = known.or_else(|| {
            fresh.then(|| {
                let id = self.ids.len() as u16;
                self.ids.insert(sig.clone(), id);
                id
            })
        });
        if let Some(id) = id {
            if self.last.len() <= depth {
                self.last.resize(depth + 1, None);
            }
            if !matches!(&self.last[depth], Some((_, l)) if *l == id) {
                self.last[depth] = Some((sig.clone(), id));
            }
        }
        *self.sig_at(depth) = sig;
        Ok(())
    }

    fn sig_at(&mut self, depth: usize) -> &mut Vec<u8> {
        if self.sigs.len() <= depth {
            self.sigs.resize_with(depth + 1, Vec::new);
        }
        &mut self.sigs[depth]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorCode;
    use crate::value::wire::{Key, Value, T_F64};

    fn tab(entries: &[(&str, Value)]) -> Value {
        Value::Tab(
            entries
                .iter()
                .map(|(k, v)| (Key::Str((*k).into()), v.clone()))
                .collect(),
        )
    }

    fn coded(values: &[Value]) -> Vec<u8> {
        let mut src = Vec::new();
        for v in values {
            src.extend(v.encode().unwrap());
        }
        let mut out = Vec::new();
        shape_code(&src, &mut out).unwrap();
        out
    }

    #[test]
    fn repeated_key_lists_are_written_once_and_named_after() {
        let m = |seq: i64| {
            tab(&[
                ("seq", Value::Int(seq)),
                ("payload", Value::Str("xy".into())),
            ])
        };
        let out = coded(&[m(1), m(2), m(-3)]);
        let key = |k: &str| {
            let mut b = vec![T_STR];
            b.extend((k.len() as u32).to_le_bytes());
            b.extend(k.as_bytes());
            b
        };
        let s = |v: &str| {
            let mut b = vec![T_STR];
            b.extend((v.len() as u32).to_le_bytes());
            b.extend(v.as_bytes());
            b
        };
        let i = |v: i32| {
            let mut b = vec![T_I32];
            b.extend(v.to_le_bytes());
            b
        };
        let mut want = vec![T_DEFSHAPE, 2, 0, 0, 0];
        want.extend(key("seq"));
        want.extend(i(1));
        want.extend(key("payload"));
        want.extend(s("xy"));
        for seq in [2, -3] {
            want.extend([T_SHAPE, 0, 0]);
            want.extend(i(seq));
            want.extend(s("xy"));
        }
        assert_eq!(out, want);
    }

    #[test]
    fn nested_tables_get_their_own_shapes_and_other_values_pass_unchanged() {
        let inner = |n: i64| tab(&[("i", Value::Int(n))]);
        let outer = |n: i64| {
            tab(&[
                ("rows", Value::Arr(vec![inner(n), inner(n + 1)])),
                ("big", Value::Int(1 << 40)),
                ("f", Value::F64(0.5)),
            ])
        };
        let out = coded(&[outer(1), outer(5)]);
        // First message: the outer table's DefShape comes first in the bytes
        // but ends last, so the inner list is number 0 and the outer one 1.
        assert_eq!(out[0], T_DEFSHAPE);
        let defs = out.iter().filter(|&&b| b == T_DEFSHAPE).count();
        assert!(defs >= 2);
        // Second message starts with a Shape naming the outer table's number.
        let second = out
            .windows(3)
            .position(|w| w == [T_SHAPE, 0, 0])
            .expect("the outer shape is named again");
        assert!(second > 0);
        // 2^40 does not fit an I32 and stays a full Int.
        let mut big = vec![T_INT];
        big.extend((1u64 << 40).to_le_bytes());
        assert!(out.windows(9).any(|w| w == big.as_slice()));
    }

    #[test]
    fn tables_with_integer_keys_or_many_keys_stay_tables() {
        let ints = Value::Tab(vec![(Key::Int(1), Value::Int(2))]);
        let out = coded(&[ints.clone(), ints]);
        assert_eq!(out[0], T_TAB);
        assert!(!out.contains(&T_SHAPE));
        let many = Value::Tab(
            (0..17)
                .map(|i| (Key::Str(format!("k{i}")), Value::None))
                .collect(),
        );
        let out = coded(&[many]);
        assert_eq!(out[0], T_TAB);
    }

    /// Undo the shape coding as a reader does (numbering a key list when
    /// its DefShape ends), giving plain wire bytes again.
    fn uncode(coded: &[u8]) -> Vec<u8> {
        fn value(r: &mut Reader<'_>, shapes: &mut Vec<Vec<Vec<u8>>>, out: &mut Vec<u8>) {
            let at = r.pos();
            match r.peek().unwrap() {
                T_I32 => {
                    r.u8().unwrap();
                    let v = i32::from_le_bytes(r.take(4).unwrap().try_into().unwrap());
                    out.push(T_INT);
                    out.extend((v as i64).to_le_bytes());
                }
                T_DEFSHAPE | T_TAB => {
                    let define = r.u8().unwrap() == T_DEFSHAPE;
                    let n = r.u32().unwrap() as usize;
                    out.push(T_TAB);
                    out.extend((n as u32).to_le_bytes());
                    let mut keys = Vec::new();
                    for _ in 0..n {
                        let k = r.pos();
                        r.skip_value().unwrap();
                        keys.push(r.since(k).to_vec());
                        out.extend(r.since(k));
                        value(r, shapes, out);
                    }
                    if define {
                        shapes.push(keys);
                    }
                }
                T_SHAPE => {
                    r.u8().unwrap();
                    let id = u16::from_le_bytes(r.take(2).unwrap().try_into().unwrap());
                    let keys = shapes
                        .get(id as usize)
                        .expect("a shape named before its end")
                        .clone();
                    out.push(T_TAB);
                    out.extend((keys.len() as u32).to_le_bytes());
                    for k in keys {
                        out.extend(k);
                        value(r, shapes, out);
                    }
                }
                T_ARR => {
                    r.u8().unwrap();
                    let n = r.u32().unwrap();
                    out.push(T_ARR);
                    out.extend(n.to_le_bytes());
                    for _ in 0..n {
                        value(r, shapes, out);
                    }
                }
                _ => {
                    r.skip_value().unwrap();
                    out.extend(r.since(at));
                }
            }
        }
        let mut r = Reader::new(coded);
        let (mut shapes, mut out) = (Vec::new(), Vec::new());
        while !r.at_end() {
            value(&mut r, &mut shapes, &mut out);
        }
        out
    }

    /// Plain wire of `values`, with every Int as the reader gives it back.
    fn plain(values: &[Value]) -> Vec<u8> {
        values.iter().flat_map(|v| v.encode().unwrap()).collect()
    }

    #[test]
    fn a_table_never_names_a_shape_defined_inside_its_own_values() {
        // The same key list at every depth: the innermost table defines it
        // first, and its ancestors must not name it (their headers come
        // before that definition in the bytes).
        let mut deep = Value::Int(1);
        for _ in 0..50 {
            deep = tab(&[("a", deep)]);
        }
        let rows = Value::Arr(
            (0..5)
                .map(|i| tab(&[("a", tab(&[("a", Value::Int(i))]))]))
                .collect(),
        );
        for case in [
            vec![deep.clone()],
            vec![deep.clone(), deep],
            vec![rows.clone(), rows],
        ] {
            let src = plain(&case);
            let mut out = Vec::new();
            shape_code(&src, &mut out).unwrap();
            assert_eq!(uncode(&out), src);
        }
    }

    #[test]
    fn shape_coded_keeps_its_head_and_gives_damaged_input_back_unchanged() {
        let src = plain(&[tab(&[("a", Value::Int(1))]), tab(&[("a", Value::Int(2))])]);
        let mut with_head = vec![7u8];
        with_head.extend(&src);
        let mut want = vec![7u8];
        shape_code(&src, &mut want).unwrap();
        assert_eq!(shape_coded(with_head, 1), want);
        let damaged = vec![7u8, 0xEE, 1, 2];
        assert_eq!(shape_coded(damaged.clone(), 1), damaged);
        assert_eq!(
            shape_coded(vec![1], 5),
            vec![1],
            "a head longer than the buffer"
        );
    }

    #[test]
    fn packets_are_coded_as_shape_code_codes_them_and_checked_at_their_ends() {
        let a = tab(&[("seq", Value::Int(1)), ("s", Value::Str("x".into()))]);
        let b = tab(&[("seq", Value::Int(2)), ("s", Value::Str("ü".into()))]);
        let list = Value::Arr(vec![Value::Int(3), a.clone()]);
        let (ea, eb, el) = (
            a.encode().unwrap(),
            b.encode().unwrap(),
            list.encode().unwrap(),
        );
        let mut src = vec![0u8];
        let mut ends = Vec::new();
        for e in [&ea, &eb, &el] {
            src.extend(e);
            ends.push(src.len());
        }
        let mut want = vec![0u8];
        shape_code(&src[1..], &mut want).unwrap();
        let (got, non_ascii) = shape_code_packets(&src, 1, &ends).unwrap();
        assert_eq!(got, want);
        assert!(non_ascii, "\"ü\" is not ASCII");
        let (_, ascii_only) = shape_code_packets(&src[..ends[0]], 1, &ends[..1]).unwrap();
        assert!(!ascii_only);
        // The same bytes split at other places: each packet must be one value.
        let corrupt = |ends: &[usize]| shape_code_packets(&src, 1, ends).unwrap_err().code();
        assert_eq!(
            corrupt(&[ends[1], ends[2]]),
            ErrorCode::Corrupt,
            "two values as one packet"
        );
        assert_eq!(
            corrupt(&[ends[0] - 1, ends[2]]),
            ErrorCode::Corrupt,
            "an end inside a value"
        );
        assert_eq!(
            corrupt(&ends[..2]),
            ErrorCode::Corrupt,
            "bytes after the last packet"
        );
        // What the copy-out check refuses, the coder refuses too.
        let mut bad_key = vec![0u8, T_TAB, 1, 0, 0, 0, T_ARR, 0, 0, 0, 0, T_NONE];
        assert!(
            shape_code_packets(&bad_key, 1, &[bad_key.len()]).is_err(),
            "a list as a key"
        );
        bad_key[6] = T_F64;
        assert!(
            shape_code_packets(&bad_key, 1, &[bad_key.len()]).is_err(),
            "a float as a key"
        );
        let bad_utf8 = [0u8, T_ARR, 1, 0, 0, 0, T_STR, 1, 0, 0, 0, 0xff];
        assert!(shape_code_packets(&bad_utf8, 1, &[bad_utf8.len()]).is_err());
        let a_ref = [0u8, T_ARR, 1, 0, 0, 0, T_REF, 0, 0, 0, 0, 0, 0, 0, 0];
        assert!(shape_code_packets(&a_ref, 1, &[a_ref.len()]).is_err());
        // a key list too long to shape is checked all the same
        let mut wide = vec![0u8, T_TAB, 17, 0, 0, 0];
        for i in 0..17u8 {
            wide.extend([T_STR, 1, 0, 0, 0, b'a' + i, T_NONE]);
        }
        assert!(shape_code_packets(&wide, 1, &[wide.len()]).is_ok());
        wide[6] = T_BYTES;
        assert!(
            shape_code_packets(&wide, 1, &[wide.len()]).is_err(),
            "a bytes key in a wide table"
        );
    }

    #[test]
    fn damaged_input_is_an_error_and_leaves_out_unchanged() {
        let mut out = vec![9, 9];
        let good = tab(&[("a", Value::Int(1))]).encode().unwrap();
        for cut in 1..good.len() {
            assert!(shape_code(&good[..cut], &mut out).is_err(), "cut {cut}");
            assert_eq!(out, [9, 9]);
        }
        assert!(shape_code(&[0xEE], &mut out).is_err());
        assert_eq!(out, [9, 9]);
    }
}
