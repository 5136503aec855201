//! The wire format, written as V8's serialization format.
//!
//! The other way round from [`super::v8in`]. `toJS()` of a large value
//! reads the value's wire encoding in JS, and in a young process that
//! reader runs in V8's interpreter: a fresh process's first `toJS()` of a
//! 10 000-row table took 16-21 ms, where `v8.deserialize` of the same table
//! took 3.4 ms from its first call (it is native code). So, while a process
//! is young, the facade (src/coldwire.ts) asks for a large value in V8's
//! format instead and reads it with a `v8.Deserializer`.
//!
//! The output means exactly what the JS reader (src/wire.ts, `Decoder`)
//! makes of the same encoding: None is null; an integer in [-2^53, 2^53) is
//! a number, any other integer a BigInt, as is a BigInt (its magnitude in
//! whole 64-bit digits, as V8 writes it); an F32 is the number it widens
//! to; a table's keys are strings, defined as own data properties in order
//! (so `__proto__` is a key like any other); Bytes and
//! typed arrays are host objects in the form src/coldwire.ts reads and
//! v8in.rs takes (`[code varint][byte length varint][bytes]`, code 0 a
//! Buffer, 1..=10 the wire's element codes), each read into memory of its
//! own. Anything else gives `None`, and the facade reads the wire encoding
//! as before: a reference, a shape tag, a malformed encoding, nesting
//! deeper than [`MAX_DEPTH`], an integer key (see the table case), and any
//! length past what V8's reader takes (a string over its longest, where
//! the JS reader fails too, a BigInt over 2^30 bits, a view of 4 GiB or
//! more), which V8 would otherwise cut short and read the rest of as
//! values. Nothing here panics on any input.

use super::wire::{
    Elem, Reader, MAX_DEPTH, T_ARR, T_BIGINT, T_BOOL, T_BYTES, T_F32, T_F64, T_INT, T_NONE, T_STR,
    T_TAB, T_TYPED, T_UINT,
};

/// The format version written: 15, which V8 has written since 2019 and
/// every Node this package supports reads.
const VERSION: u8 = 15;

/// The longest string V8 makes (`String::kMaxLength` on 64-bit builds),
/// which is also where Node's UTF-8 decoding of the JS reader stops: a
/// longer encoding gives `None`, so both readers refuse it alike.
const MAX_STRING: usize = (1 << 29) - 24;

/// The largest BigInt V8 makes: 2^30 bits, in bytes.
const MAX_BIGINT_BYTES: usize = 1 << 27;

/// Host objects are read with 32-bit lengths (`readUint32`).
const MAX_HOST_BYTES: usize = u32::MAX as usize;

/// Integers from -2^53 to 2^53 - 1 are numbers to the JS reader.
const NUMBER_RANGE: std::ops::Range<i128> = -(1 << 53)..(1 << 53);

/// One value's wire encoding (nothing after it) in V8's format, header
/// included; `None` if it holds anything outside what the module comment
/// lists.
pub fn wire_to_v8(wire: &[u8]) -> Option<Vec<u8>> {
    let mut w = V8Out {
        r: Reader::new(wire),
        out: Vec::with_capacity(wire.len() + 16),
    };
    w.out.extend_from_slice(&[0xFF, VERSION]);
    w.value(0)?;
    w.r.at_end().then_some(w.out)
}

struct V8Out<'a> {
    /// The wire's own reader: bounds-checked reads, and counts that the
    /// input left can hold (so a corrupt count reserves nothing).
    r: Reader<'a>,
    out: Vec<u8>,
}

impl<'a> V8Out<'a> {
    fn varint(&mut self, mut v: u64) {
        while v >= 0x80 {
            self.out.push((v as u8) | 0x80);
            v >>= 7;
        }
        self.out.push(v as u8);
    }

    /// A number: a Smi-sized integer as V8 writes one ('I', zigzag), any
    /// other as a double ('N'). -0 is a double (its sign is kept).
    fn number(&mut self, x: f64) {
        let i = x as i32;
        if f64::from(i) == x && !(x == 0.0 && x.is_sign_negative()) {
            self.out.push(b'I');
            self.varint(u64::from(((i << 1) ^ (i >> 31)) as u32));
        } else {
            self.out.push(b'N');
            self.out.extend_from_slice(&x.to_le_bytes());
        }
    }

    /// An integer as the JS reader makes it: a number in range (where the
    /// conversion to a double is exact), else a BigInt.
    fn integer(&mut self, n: i128) -> Option<()> {
        if NUMBER_RANGE.contains(&n) {
            self.number(n as f64);
            Some(())
        } else {
            self.bigint(n < 0, &n.unsigned_abs().to_le_bytes())
        }
    }

    /// A BigInt ('Z'): sign in bit 0 of the bit field, the magnitude's byte
    /// length above it, then the magnitude, little-endian, in whole 64-bit
    /// digits with no zero digit on top (zero: no digits, no sign).
    /// `None` past V8's largest BigInt (its bit field has room for no more).
    fn bigint(&mut self, neg: bool, mag: &[u8]) -> Option<()> {
        let used = mag.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
        let bytes = used.div_ceil(8) * 8;
        if bytes > MAX_BIGINT_BYTES {
            return None;
        }
        self.out.push(b'Z');
        self.varint(((bytes as u64) << 1) | u64::from(neg && used > 0));
        self.out.extend_from_slice(&mag[..used]);
        self.out.resize(self.out.len() + (bytes - used), 0);
        Some(())
    }

    /// A string from UTF-8 bytes: one byte a character if every character
    /// is below U+0100 (V8's own choice for such strings), else UTF-16
    /// after a padding byte if needed to start the characters at an even
    /// offset, as V8's serializer places them.
    fn string(&mut self, utf8: &[u8]) -> Option<()> {
        if utf8.len() > MAX_STRING {
            return None;
        }
        if utf8.is_ascii() {
            self.out.push(b'"');
            self.varint(utf8.len() as u64);
            self.out.extend_from_slice(utf8);
            return Some(());
        }
        let s = std::str::from_utf8(utf8).ok()?;
        if s.chars().all(|c| (c as u32) < 0x100) {
            self.out.push(b'"');
            self.varint(s.chars().count() as u64);
            self.out.extend(s.chars().map(|c| c as u8));
            return Some(());
        }
        let units = s.encode_utf16().count();
        let bytes = (units as u64).checked_mul(2)?;
        let mut v = bytes;
        let mut varint_len = 1;
        while v >= 0x80 {
            v >>= 7;
            varint_len += 1;
        }
        if (self.out.len() + 1 + varint_len) % 2 == 1 {
            self.out.push(0);
        }
        self.out.push(b'c');
        self.varint(bytes);
        for u in s.encode_utf16() {
            self.out.extend_from_slice(&u.to_le_bytes());
        }
        Some(())
    }

    /// Bytes as a host object: the view's code, its byte length, its bytes.
    fn host(&mut self, code: u8, bytes: &[u8]) -> Option<()> {
        if bytes.len() > MAX_HOST_BYTES {
            return None;
        }
        self.out.push(b'\\');
        self.varint(u64::from(code));
        self.varint(bytes.len() as u64);
        self.out.extend_from_slice(bytes);
        Some(())
    }

    fn value(&mut self, depth: usize) -> Option<()> {
        if depth > MAX_DEPTH {
            return None;
        }
        match self.r.u8().ok()? {
            T_NONE => self.out.push(b'0'),
            T_BOOL => {
                let t = self.r.u8().ok()? != 0;
                self.out.push(if t { b'T' } else { b'F' });
            }
            T_INT => {
                let n = self.r.u64().ok()? as i64;
                self.integer(i128::from(n))?;
            }
            T_UINT => {
                let n = self.r.u64().ok()?;
                self.integer(i128::from(n))?;
            }
            T_BIGINT => {
                let neg = self.r.u8().ok()? != 0;
                let n = self.r.count(1).ok()?;
                let mag = self.r.take(n).ok()?;
                self.bigint(neg, mag)?;
            }
            T_F64 => {
                let x = f64::from_bits(self.r.u64().ok()?);
                self.number(x);
            }
            T_F32 => {
                let x = f32::from_bits(self.r.u32().ok()?);
                self.number(f64::from(x));
            }
            T_STR => {
                let n = self.r.count(1).ok()?;
                let s = self.r.take(n).ok()?;
                self.string(s)?;
            }
            T_BYTES => {
                let n = self.r.count(1).ok()?;
                let b = self.r.take(n).ok()?;
                self.host(0, b)?;
            }
            T_TYPED => {
                let code = self.r.u8().ok()?;
                let elem = Elem::from_code(code)?;
                let size = elem.size() as usize;
                let n = self.r.count(size).ok()?;
                let b = self.r.take(n.checked_mul(size)?).ok()?;
                self.host(code, b)?;
            }
            T_TAB => {
                // A key is at least a tag and a length or an integer.
                let n = self.r.count(6).ok()?;
                self.out.push(b'o');
                for _ in 0..n {
                    match self.r.u8().ok()? {
                        T_STR => {
                            let len = self.r.count(1).ok()?;
                            let k = self.r.take(len).ok()?;
                            self.string(k)?;
                        }
                        // An integer key (made by a Rust writer) may share
                        // its digits with a string key of the same table,
                        // which the JS reader takes (the later wins) and V8
                        // refuses: the JS reader reads such tables.
                        _ => return None,
                    }
                    self.value(depth + 1)?;
                }
                self.out.push(b'{');
                self.varint(n as u64);
            }
            T_ARR => {
                let n = self.r.count(1).ok()?;
                self.out.push(b'A');
                self.varint(n as u64);
                for _ in 0..n {
                    self.value(depth + 1)?;
                }
                self.out.push(b'$');
                self.varint(0);
                self.varint(n as u64);
            }
            _ => return None,
        }
        Some(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::v8in::v8_to_wire;
    use super::super::wire::{Key, Value, T_BIGINT, T_STR};
    use super::*;

    fn round_trip(v: &Value) {
        let wire = v.encode().unwrap();
        let v8 = wire_to_v8(&wire).unwrap_or_else(|| panic!("not written: {v:?}"));
        // What v8in reads back is the JS encoder's form of the same value:
        // the same bytes here, for values that form has no choice about.
        assert_eq!(v8_to_wire(&v8, 0).as_deref(), Some(&wire[..]), "{v:?}");
    }

    #[test]
    fn values_the_js_reader_and_v8_read_alike_go_there_and_back() {
        use Value::*;
        let tab = |kv: Vec<(&str, Value)>| {
            Tab(kv
                .into_iter()
                .map(|(k, v)| (Key::Str(k.into()), v))
                .collect())
        };
        for v in [
            None,
            Bool(true),
            Bool(false),
            Int(0),
            Int(-1),
            Int(i64::from(i32::MAX) + 1),
            Int((1 << 53) - 1),
            F64(0.5),
            F64(-1e300),
            Str("".into()),
            Str("plain".into()),
            Str("café".into()),
            Str("日本語 and 😀".into()),
            Bytes(vec![1, 2, 3]),
            Arr(vec![Int(1), Str("x".into()), Arr(vec![]), tab(vec![])]),
            tab(vec![
                ("a", Int(1)),
                ("__proto__", Str("data".into())),
                ("é", None),
            ]),
        ] {
            round_trip(&v);
        }
    }

    #[test]
    fn integers_past_2_53_and_bigints_are_bigints() {
        use Value::*;
        let read = |v: Value| v8_to_wire(&wire_to_v8(&v.encode().unwrap()).unwrap(), 0).unwrap();
        let big = |neg: bool, mag: Vec<u8>| BigInt(neg, mag).encode().unwrap();
        assert_eq!(read(Int(1 << 53)), big(false, vec![0, 0, 0, 0, 0, 0, 0x20]));
        assert_eq!(
            read(Int(i64::MIN)),
            big(true, vec![0, 0, 0, 0, 0, 0, 0, 0x80])
        );
        assert_eq!(read(UInt(u64::MAX)), big(false, vec![0xFF; 8]));
        for v in [
            BigInt(false, vec![]),
            BigInt(true, vec![5]),
            BigInt(false, vec![1, 2, 3, 4, 5, 6, 7, 8, 9]),
        ] {
            round_trip(&v);
        }
        // whole digits, as V8 writes them: 9 bytes of magnitude take two
        let v8 = wire_to_v8(&BigInt(true, vec![1; 9]).encode().unwrap()).unwrap();
        assert_eq!(&v8[2..4], &[b'Z', (16 << 1) | 1]);
        assert_eq!(v8.len(), 4 + 16);
    }

    #[test]
    fn integer_keys_and_lengths_past_v8s_limits_are_not_written() {
        let int_key = Value::Tab(vec![
            (Key::Int(7), Value::None),
            (Key::Str("7".into()), Value::None),
        ]);
        assert_eq!(wire_to_v8(&int_key.encode().unwrap()), Option::None);
        // A BigInt one digit past 2^30 bits; a string one byte past the
        // longest (built as wire bytes, without a Value of that size).
        let mut big = vec![T_BIGINT, 0];
        let mag = MAX_BIGINT_BYTES + 1;
        big.extend_from_slice(&(mag as u32).to_le_bytes());
        big.resize(big.len() + mag, 0xAB);
        assert_eq!(wire_to_v8(&big), Option::None);
        let mut long = vec![T_STR];
        long.extend_from_slice(&((MAX_STRING + 1) as u32).to_le_bytes());
        long.resize(long.len() + MAX_STRING + 1, b'a');
        assert_eq!(wire_to_v8(&long), Option::None);
        // at the limit, written
        long[1..5].copy_from_slice(&(MAX_STRING as u32).to_le_bytes());
        long.truncate(5 + MAX_STRING);
        assert!(wire_to_v8(&long).is_some());
    }

    #[test]
    fn a_reference_or_a_shape_tag_is_not_written() {
        assert_eq!(
            wire_to_v8(&[super::super::wire::T_REF, 0, 0, 0, 0, 0, 0, 0, 0]),
            Option::None
        );
        assert_eq!(wire_to_v8(&[32, 0, 0, 0, 0]), Option::None);
    }

    #[test]
    fn the_ends_of_the_number_range_are_numbers() {
        // -2^53 is a number to the JS reader, though not a safe integer
        // (the JS encoder would send it as a double).
        let v8 = wire_to_v8(&Value::Int(-(1 << 53)).encode().unwrap()).unwrap();
        let mut want = vec![0xFF, VERSION, b'N'];
        want.extend_from_slice(&(-9_007_199_254_740_992f64).to_le_bytes());
        assert_eq!(v8, want);
        let v8 = wire_to_v8(&Value::F64(-0.0).encode().unwrap()).unwrap();
        assert_eq!(v8[2], b'N');
        let v8 = wire_to_v8(&Value::Int(-3).encode().unwrap()).unwrap();
        assert_eq!(v8, vec![0xFF, VERSION, b'I', 5]);
    }

    #[test]
    fn two_byte_strings_start_at_an_even_offset() {
        for prefix in ["", "a", "ab"] {
            let v = Value::Arr(vec![Value::Str(prefix.into()), Value::Str("😀".into())]);
            let v8 = wire_to_v8(&v.encode().unwrap()).unwrap();
            let c = v8.iter().rposition(|&b| b == b'c').unwrap();
            // the tag, then a one-byte varint: the characters follow at c + 2
            assert_eq!((c + 2) % 2, 0, "{v8:?}");
        }
    }

    #[test]
    fn truncated_or_altered_input_gives_none_or_a_value_never_a_panic() {
        let v = Value::Arr(vec![
            Value::Str("row 1".into()),
            Value::Bytes(vec![9; 40]),
            Value::F64(1.5),
            Value::Tab(vec![(Key::Str("k".into()), Value::Int(7))]),
        ]);
        let wire = v.encode().unwrap();
        for cut in 0..wire.len() {
            assert_eq!(wire_to_v8(&wire[..cut]), Option::None, "cut at {cut}");
        }
        let mut seed = 0x9E37_79B9_7F4A_7C15u64;
        for _ in 0..20_000 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let mut bad = wire.clone();
            let i = (seed % bad.len() as u64) as usize;
            bad[i] = (seed >> 32) as u8;
            let _ = wire_to_v8(&bad);
        }
    }
}
