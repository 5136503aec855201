//! The wire format: a compact byte encoding of a value tree. JavaScript
//! encodes a plain JS value into it in one pass (src/wire.ts) and hands the
//! bytes over in a single call; the core builds the shared objects from it
//! (`Values::store_wire`) and writes it back out for `toJS()`
//! (`Values::load_wire`). Rust users get the same through [`Value`].
//!
//! Little-endian, unaligned, one tag byte per value:
//!
//! | tag | name   | body |
//! | --- | ------ | ---- |
//! | 1   | None   | — |
//! | 2   | Bool   | u8 (0/1) |
//! | 3   | Int    | i64 |
//! | 4   | UInt   | u64 |
//! | 5   | F64    | f64 |
//! | 6   | F32    | f32 |
//! | 7   | Str    | u32 byte length, UTF-8 bytes |
//! | 8   | Bytes  | u32 length, bytes |
//! | 9   | BigInt | u8 sign (1 = negative), u32 length, magnitude little-endian |
//! | 10  | Tab    | u32 count, count × (key, value); keys are Str or Int |
//! | 11  | Arr    | u32 count, count × value |
//! | 12  | Typed  | u8 element type, u32 count, count × element bytes |
//! | 13  | Ref    | u64 offset of a live shared object in the same region (store only) |

use crate::error::{Error, Result};

pub const T_NONE: u8 = 1;
pub const T_BOOL: u8 = 2;
pub const T_INT: u8 = 3;
pub const T_UINT: u8 = 4;
pub const T_F64: u8 = 5;
pub const T_F32: u8 = 6;
pub const T_STR: u8 = 7;
pub const T_BYTES: u8 = 8;
pub const T_BIGINT: u8 = 9;
pub const T_TAB: u8 = 10;
pub const T_ARR: u8 = 11;
pub const T_TYPED: u8 = 12;
pub const T_REF: u8 = 13;

/// Deepest nesting accepted in either direction.
pub const MAX_DEPTH: usize = 256;

/// Element types of typed arrays.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Elem {
    I8 = 1,
    U8 = 2,
    I16 = 3,
    U16 = 4,
    I32 = 5,
    U32 = 6,
    I64 = 7,
    U64 = 8,
    F32 = 9,
    F64 = 10,
}

impl Elem {
    pub fn from_code(c: u8) -> Option<Elem> {
        use Elem::*;
        Some(match c {
            1 => I8,
            2 => U8,
            3 => I16,
            4 => U16,
            5 => I32,
            6 => U32,
            7 => I64,
            8 => U64,
            9 => F32,
            10 => F64,
            _ => return None,
        })
    }

    pub fn size(self) -> u64 {
        use Elem::*;
        match self {
            I8 | U8 => 1,
            I16 | U16 => 2,
            I32 | U32 | F32 => 4,
            I64 | U64 | F64 => 8,
        }
    }
}

/// A key of a Tab.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Key {
    Str(String),
    Int(i64),
}

/// An owned value tree (what a Rust caller stores or reads back).
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    None,
    Bool(bool),
    Int(i64),
    UInt(u64),
    F64(f64),
    F32(f32),
    Str(String),
    Bytes(Vec<u8>),
    /// Sign (true = negative) and little-endian magnitude without trailing
    /// zero bytes (zero has an empty magnitude).
    BigInt(bool, Vec<u8>),
    /// Entries in insertion order.
    Tab(Vec<(Key, Value)>),
    Arr(Vec<Value>),
    /// Element type and raw little-endian element bytes.
    Typed(Elem, Vec<u8>),
}

/// Append-only encoder.
#[derive(Default)]
pub struct Writer {
    pub buf: Vec<u8>,
    /// Some string written so far (a key or a value) is not ASCII. A reader
    /// handed the bytes as latin1 text may take the string bytes as they are
    /// while this is false.
    pub non_ascii: bool,
}

impl Writer {
    pub fn u8(&mut self, v: u8) {
        self.buf.push(v);
    }
    pub fn u32(&mut self, v: u32) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }
    pub fn u64(&mut self, v: u64) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }
    pub fn bytes(&mut self, b: &[u8]) {
        self.buf.extend_from_slice(b);
    }
    /// A u32 length, refusing what does not fit.
    pub fn len(&mut self, n: usize) -> Result<()> {
        let n = u32::try_from(n)
            .map_err(|_| Error::invalid("a string, list or array longer than 2^32-1"))?;
        self.u32(n);
        Ok(())
    }
}

/// Bounds-checked decoder over untrusted bytes.
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    refs: usize,
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Reader<'a> {
        Reader {
            buf,
            pos: 0,
            refs: 0,
        }
    }
    /// Count a reference to an existing object (T_REF) read so far.
    pub fn note_ref(&mut self) {
        self.refs += 1;
    }
    pub fn refs_seen(&self) -> usize {
        self.refs
    }
    pub fn at_end(&self) -> bool {
        self.pos == self.buf.len()
    }
    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }
    #[inline]
    pub fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        if n > self.remaining() {
            return Err(Error::invalid("the encoded value ends too early"));
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }
    #[inline]
    pub fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }
    #[inline]
    pub fn u32(&mut self) -> Result<u32> {
        let mut a = [0; 4];
        a.copy_from_slice(self.take(4)?);
        Ok(u32::from_le_bytes(a))
    }
    #[inline]
    pub fn u64(&mut self) -> Result<u64> {
        let mut a = [0; 8];
        a.copy_from_slice(self.take(8)?);
        Ok(u64::from_le_bytes(a))
    }
    /// A count of items that each take at least `min_each` bytes: refuses
    /// counts the remaining input cannot possibly hold.
    #[inline]
    pub fn count(&mut self, min_each: usize) -> Result<usize> {
        let n = self.u32()? as usize;
        if n.saturating_mul(min_each) > self.remaining() {
            return Err(Error::invalid(
                "the encoded value claims more items than it holds",
            ));
        }
        Ok(n)
    }
}

/// What [`Reader::skip_value`] learnt about the value it stepped over.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Skipped {
    /// Some string in it (a key or a value) is not ASCII.
    pub non_ascii: bool,
    /// It holds references to existing objects (T_REF).
    pub refs: bool,
}

/// The containers around the innermost open one in
/// [`Reader::skip_value_upto`]'s walk, each as (is a table, items left).
/// The first few levels live on the stack, so checking the usual shallow
/// packet allocates nothing; deeper ones spill to the heap.
#[derive(Default)]
struct OpenLevels {
    near: [(bool, u64); 8],
    len: usize,
    deep: Vec<(bool, u64)>,
}

impl OpenLevels {
    fn len(&self) -> usize {
        self.len
    }
    fn push(&mut self, level: (bool, u64)) {
        match self.near.get_mut(self.len) {
            Some(at) => *at = level,
            None => self.deep.push(level),
        }
        self.len += 1;
    }
    /// Take the innermost level out.
    fn pop(&mut self) -> Option<(bool, u64)> {
        let i = self.len.checked_sub(1)?;
        self.len = i;
        match self.near.get(i) {
            Some(at) => Some(*at),
            None => self.deep.pop(),
        }
    }
}

impl<'a> Reader<'a> {
    /// The position of the next byte to read.
    pub fn pos(&self) -> usize {
        self.pos
    }

    /// Go back to position `start` (an earlier [`Reader::pos`]).
    pub fn rewind(&mut self, start: usize) {
        self.pos = start.min(self.pos);
    }

    /// The next byte, not consumed.
    pub fn peek(&self) -> Option<u8> {
        self.buf.get(self.pos).copied()
    }

    /// The bytes from position `from` to position `to`, both at most the
    /// current position (earlier [`Reader::pos`] values).
    pub fn read_between(&self, from: usize, to: usize) -> &'a [u8] {
        let to = to.min(self.pos);
        &self.buf[from.min(to)..to]
    }

    /// The bytes read since position `start` (an earlier [`Reader::pos`]).
    pub fn since(&self, start: usize) -> &'a [u8] {
        &self.buf[start.min(self.pos)..self.pos]
    }

    /// Step over one encoded value without building anything, checking it
    /// as the decoder would: known tags, counts the input can hold, string
    /// bytes that are UTF-8, table keys that are strings or integers, depth
    /// at most [`MAX_DEPTH`]. On success the reader is past the value. The
    /// walk keeps its own stack (no recursion), so hostile depth cannot
    /// overflow ours.
    pub fn skip_value(&mut self) -> Result<Skipped> {
        // (no value is longer than usize::MAX bytes: never None)
        self.skip_value_upto(usize::MAX)?
            .ok_or_else(|| Error::invalid("the encoded value is too long"))
    }

    /// [`Reader::skip_value`] that gives up, with `Ok(None)`, once the value
    /// is known to take more than `max` bytes (the reader is then somewhere
    /// inside it: rewind before reading it again).
    pub fn skip_value_upto(&mut self, max: usize) -> Result<Option<Skipped>> {
        let start = self.pos;
        let mut out = Skipped::default();
        // The innermost open container, as (is a table, items left), in a
        // local; those around it in `outer`. For a table, keys and values
        // count separately (2 per entry) and a key is due when the count
        // left is even.
        let mut top: Option<(bool, u64)> = None;
        let mut outer = OpenLevels::default();
        loop {
            if self.pos - start > max {
                return Ok(None);
            }
            let key_due = matches!(top, Some((true, left)) if left % 2 == 0);
            let tag = self.u8()?;
            if key_due && tag != T_STR && tag != T_INT {
                return Err(Error::invalid("a table key must be a string or an integer"));
            }
            match tag {
                T_NONE => {}
                T_BOOL => {
                    self.take(1)?;
                }
                T_INT | T_UINT | T_F64 => {
                    self.take(8)?;
                }
                T_F32 => {
                    self.take(4)?;
                }
                T_STR => {
                    let n = self.count(1)?;
                    let s = self.take(n)?;
                    if !s.is_ascii() {
                        std::str::from_utf8(s)
                            .map_err(|_| Error::invalid("a string is not valid UTF-8"))?;
                        out.non_ascii = true;
                    }
                }
                T_BYTES => {
                    let n = self.count(1)?;
                    self.take(n)?;
                }
                T_BIGINT => {
                    self.take(1)?;
                    let n = self.count(1)?;
                    self.take(n)?;
                }
                T_TYPED => {
                    let elem = Elem::from_code(self.u8()?)
                        .ok_or_else(|| Error::invalid("unknown typed-array element type"))?;
                    let n = self.count(elem.size() as usize)?;
                    self.take(n * elem.size() as usize)?;
                }
                T_REF => {
                    self.take(8)?;
                    out.refs = true;
                }
                T_TAB | T_ARR => {
                    let tab = tag == T_TAB;
                    let n = self.count(if tab { 2 } else { 1 })? as u64;
                    let items = if tab { 2 * n } else { n };
                    if items > 0 {
                        // Open: counted as an item of its parent once it
                        // closes.
                        if let Some(around) = top {
                            if outer.len() + 2 > MAX_DEPTH {
                                return Err(Error::invalid(format!(
                                    "values nest deeper than {MAX_DEPTH} levels"
                                )));
                            }
                            outer.push(around);
                        }
                        top = Some((tab, items));
                        continue;
                    }
                    // (an empty container is done at once)
                }
                t => return Err(Error::invalid(format!("unknown value tag {t}"))),
            }
            // One item done (a scalar, or a container now closed); close
            // every level it completes.
            loop {
                match &mut top {
                    None => return Ok(Some(out).filter(|_| self.pos - start <= max)),
                    Some((_, left)) => {
                        *left -= 1;
                        if *left > 0 {
                            break;
                        }
                    }
                }
                top = outer.pop();
            }
        }
    }
}

/// The bytes of `enc` if it is exactly one byte string's encoding: its
/// tag, its length (u32, little-endian) and that many bytes. The commonest
/// packet (a Rust `Value::Bytes`, a Node Buffer), told without the
/// parser's walk, which sets up a stack of open levels for every value and
/// cost the batched byte rows of `bash bench/rust.sh --only 5a` a fifth of
/// their time (2026-12-06: 50-53 against 38-41 ns a message). Such a value
/// is well formed and holds no references and no strings, exactly as the
/// walk would find it.
pub fn lone_bytes(enc: &[u8]) -> Option<&[u8]> {
    match enc {
        [T_BYTES, a, b, c, d, rest @ ..]
            if u32::from_le_bytes([*a, *b, *c, *d]) as usize == rest.len() =>
        {
            Some(rest)
        }
        _ => None,
    }
}

/// Check the bytes of a packet copied back out of a region: exactly one
/// well-formed value, with no references to existing objects (a producer
/// never stores those as bytes). The error (ERR_SHM_INVALID_ARG) says what
/// is wrong; a reader of region bytes reports it as damage.
pub fn check_packet(bytes: &[u8]) -> Result<Skipped> {
    if lone_bytes(bytes).is_some() {
        return Ok(Skipped::default());
    }
    let mut r = Reader::new(bytes);
    let seen = r.skip_value()?;
    if !r.at_end() {
        return Err(Error::invalid("bytes after its value"));
    }
    if seen.refs {
        return Err(Error::invalid("it holds references"));
    }
    Ok(seen)
}

impl Value {
    /// Encode into the wire format.
    pub fn encode(&self) -> Result<Vec<u8>> {
        let mut w = Writer::default();
        self.write(&mut w, 0)?;
        Ok(w.buf)
    }

    /// Encode, appending to `w` (whose buffer a caller may reuse from one
    /// value to the next). On an error `w` may hold part of the encoding.
    pub fn encode_into(&self, w: &mut Writer) -> Result<()> {
        self.write(w, 0)
    }

    fn write(&self, w: &mut Writer, depth: usize) -> Result<()> {
        if depth > MAX_DEPTH {
            return Err(Error::invalid(format!(
                "values nest deeper than {MAX_DEPTH} levels"
            )));
        }
        match self {
            Value::None => w.u8(T_NONE),
            Value::Bool(b) => {
                w.u8(T_BOOL);
                w.u8(*b as u8);
            }
            Value::Int(i) => {
                w.u8(T_INT);
                w.u64(*i as u64);
            }
            Value::UInt(u) => {
                w.u8(T_UINT);
                w.u64(*u);
            }
            Value::F64(f) => {
                w.u8(T_F64);
                w.u64(f.to_bits());
            }
            Value::F32(f) => {
                w.u8(T_F32);
                w.u32(f.to_bits());
            }
            Value::Str(s) => {
                w.u8(T_STR);
                w.len(s.len())?;
                w.bytes(s.as_bytes());
            }
            Value::Bytes(b) => {
                w.u8(T_BYTES);
                w.len(b.len())?;
                w.bytes(b);
            }
            Value::BigInt(neg, mag) => {
                w.u8(T_BIGINT);
                w.u8(*neg as u8);
                w.len(mag.len())?;
                w.bytes(mag);
            }
            Value::Tab(entries) => {
                w.u8(T_TAB);
                w.len(entries.len())?;
                for (k, v) in entries {
                    match k {
                        Key::Str(s) => Value::Str(s.clone()).write(w, depth + 1)?,
                        Key::Int(i) => Value::Int(*i).write(w, depth + 1)?,
                    }
                    v.write(w, depth + 1)?;
                }
            }
            Value::Arr(items) => {
                w.u8(T_ARR);
                w.len(items.len())?;
                for v in items {
                    v.write(w, depth + 1)?;
                }
            }
            Value::Typed(elem, raw) => {
                if !(raw.len() as u64).is_multiple_of(elem.size()) {
                    return Err(Error::invalid(
                        "typed array bytes are not a whole number of elements",
                    ));
                }
                w.u8(T_TYPED);
                w.u8(*elem as u8);
                w.len(raw.len() / elem.size() as usize)?;
                w.bytes(raw);
            }
        }
        Ok(())
    }

    /// Decode one value from the wire format (the whole input).
    pub fn decode(buf: &[u8]) -> Result<Value> {
        let mut r = Reader::new(buf);
        let v = Value::read(&mut r, 0)?;
        if !r.at_end() {
            return Err(Error::invalid("trailing bytes after the encoded value"));
        }
        Ok(v)
    }

    fn read(r: &mut Reader<'_>, depth: usize) -> Result<Value> {
        if depth > MAX_DEPTH {
            return Err(Error::invalid(format!(
                "values nest deeper than {MAX_DEPTH} levels"
            )));
        }
        Ok(match r.u8()? {
            T_NONE => Value::None,
            T_BOOL => Value::Bool(r.u8()? != 0),
            T_INT => Value::Int(r.u64()? as i64),
            T_UINT => Value::UInt(r.u64()?),
            T_F64 => Value::F64(f64::from_bits(r.u64()?)),
            T_F32 => Value::F32(f32::from_bits(r.u32()?)),
            T_STR => {
                let n = r.count(1)?;
                let s = std::str::from_utf8(r.take(n)?)
                    .map_err(|_| Error::invalid("a string is not valid UTF-8"))?;
                Value::Str(s.to_string())
            }
            T_BYTES => {
                let n = r.count(1)?;
                Value::Bytes(r.take(n)?.to_vec())
            }
            T_BIGINT => {
                let neg = r.u8()? != 0;
                let n = r.count(1)?;
                Value::BigInt(neg, r.take(n)?.to_vec())
            }
            T_TAB => {
                let n = r.count(2)?;
                let mut entries = Vec::with_capacity(n);
                for _ in 0..n {
                    let k = match Value::read(r, depth + 1)? {
                        Value::Str(s) => Key::Str(s),
                        Value::Int(i) => Key::Int(i),
                        _ => {
                            return Err(Error::invalid(
                                "a table key must be a string or an integer",
                            ))
                        }
                    };
                    entries.push((k, Value::read(r, depth + 1)?));
                }
                Value::Tab(entries)
            }
            T_ARR => {
                let n = r.count(1)?;
                let mut items = Vec::with_capacity(n);
                for _ in 0..n {
                    items.push(Value::read(r, depth + 1)?);
                }
                Value::Arr(items)
            }
            T_TYPED => {
                let elem = Elem::from_code(r.u8()?)
                    .ok_or_else(|| Error::invalid("unknown typed-array element type"))?;
                let n = r.count(elem.size() as usize)?;
                Value::Typed(elem, r.take(n * elem.size() as usize)?.to_vec())
            }
            T_REF => {
                return Err(Error::invalid(
                    "a reference cannot be decoded outside a region",
                ))
            }
            t => return Err(Error::invalid(format!("unknown value tag {t}"))),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_round_trips_through_the_wire() {
        let v = Value::Arr(vec![
            Value::None,
            Value::Bool(true),
            Value::Int(-5),
            Value::UInt(u64::MAX),
            Value::F64(1.5),
            Value::F32(2.5),
            Value::Str("héllo ✓".into()),
            Value::Bytes(vec![0, 1, 255]),
            Value::BigInt(true, vec![1, 2, 3]),
            Value::Tab(vec![
                (Key::Str("a".into()), Value::Int(1)),
                (Key::Int(7), Value::None),
            ]),
            Value::Typed(Elem::F64, 3.25f64.to_le_bytes().to_vec()),
        ]);
        assert_eq!(Value::decode(&v.encode().unwrap()).unwrap(), v);
    }

    #[test]
    fn truncated_or_lying_input_is_an_error_not_a_panic() {
        let buf = Value::Arr(vec![Value::Str("abc".into()); 3])
            .encode()
            .unwrap();
        for cut in 0..buf.len() {
            assert!(Value::decode(&buf[..cut]).is_err(), "cut at {cut}");
        }
        // A count far beyond the input.
        assert!(Value::decode(&[T_ARR, 0xff, 0xff, 0xff, 0xff]).is_err());
        assert!(Value::decode(&[T_STR, 2, 0, 0, 0, 0xff, 0xfe]).is_err());
        assert!(Value::decode(&[99]).is_err());
    }
}
