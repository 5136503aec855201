//! V8's serialization format, read into the wire format.
//!
//! A fresh Node process encodes its first large values slowly: the JS
//! encoder runs in V8's interpreter until V8 has optimized it, about twenty
//! times slower than afterwards. V8's own serializer (`v8.Serializer`) is
//! native code from the first call. So, while a process is young, the
//! facade (src/coldwire.ts) serializes a large plain value with it, having
//! first checked every object's prototype (the one thing the format does
//! not record), and hands the bytes here to be turned into the wire format.
//!
//! Only the subset that means the same as the JS encoder's output is read:
//! primitives, strings, plain objects and arrays (dense, holey or sparse,
//! without named properties), BigInts, and array-buffer views written as
//! host objects by the facade (`[code varint][byte length varint][bytes]`,
//! code 0 a Buffer, 1..=10 the wire's typed-array element codes). Anything
//! else (a back reference to an object met before, a Date, a Map, a string
//! with a lone surrogate, a format version not known here, nesting deeper
//! than [`MAX_DEPTH`](super::wire::MAX_DEPTH), …) gives `None`, and the
//! facade encodes the value its usual way, which also words any refusal.
//! The bytes come from this process's own V8, but are read as untrusted
//! all the same: every read is bounds-checked and nothing panics.
//!
//! The facade also passes how many holes its walk found in arrays; V8 must
//! have written exactly as many (see [`v8_to_wire`]).
//!
//! The output follows the JS encoder (src/wire.ts) byte for byte: numbers
//! that are safe integers other than -0 become `T_INT`, all other numbers
//! `T_F64`; keys are strings (an array index key in decimal); a hole is
//! `T_NONE`; a BigInt's magnitude has no high zero bytes.

use super::wire::{
    Elem, MAX_DEPTH, T_ARR, T_BIGINT, T_BOOL, T_BYTES, T_F64, T_INT, T_NONE, T_STR, T_TAB, T_TYPED,
};

/// Format versions read here (V8 has written 15 since 2019 and Node 20-24).
const VERSIONS: std::ops::RangeInclusive<u32> = 13..=15;

/// The largest integer a double holds exactly with all below it (2^53 - 1).
const MAX_SAFE: f64 = 9_007_199_254_740_991.0;

/// Read one value serialized by V8 (header included, nothing after it) into
/// the wire format; `None` if it holds anything outside the subset above, or
/// if its arrays do not have exactly `holes` holes between them (the count
/// the facade's walk found: an element V8 leaves out, such as a
/// non-enumerable one, or a hole the JS encoder would read through a
/// prototype, makes them differ; it also bounds what holes can add).
pub fn v8_to_wire(input: &[u8], holes: u64) -> Option<Vec<u8>> {
    let mut r = V8In {
        b: input,
        p: 0,
        out: Vec::with_capacity(input.len() + input.len() / 2 + 16),
        holes,
    };
    if r.byte()? != 0xFF || !VERSIONS.contains(&r.varint()?) {
        return None;
    }
    r.value(0)?;
    (r.p == input.len() && r.holes == 0).then_some(r.out)
}

struct V8In<'a> {
    b: &'a [u8],
    p: usize,
    out: Vec<u8>,
    /// Holes not yet met.
    holes: u64,
}

impl<'a> V8In<'a> {
    fn byte(&mut self) -> Option<u8> {
        let v = *self.b.get(self.p)?;
        self.p += 1;
        Some(v)
    }

    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let b: &'a [u8] = self.b;
        let end = self.p.checked_add(n)?;
        let s = b.get(self.p..end)?;
        self.p = end;
        Some(s)
    }

    /// An unsigned LEB128 of at most 32 bits.
    fn varint(&mut self) -> Option<u32> {
        let mut v: u64 = 0;
        for shift in (0..35).step_by(7) {
            let b = self.byte()?;
            v |= u64::from(b & 0x7F) << shift;
            if b & 0x80 == 0 {
                return u32::try_from(v).ok();
            }
        }
        None
    }

    /// The next tag, past a padding byte (which V8 writes only before a
    /// two-byte string).
    fn tag(&mut self) -> Option<u8> {
        match self.byte()? {
            0 => (self.byte()? == b'c').then_some(b'c'),
            t => Some(t),
        }
    }

    /// The next tag without taking it (a padding byte is taken).
    fn peek(&mut self) -> Option<u8> {
        if *self.b.get(self.p)? == 0 {
            if *self.b.get(self.p + 1)? != b'c' {
                return None;
            }
            self.p += 1;
        }
        Some(self.b[self.p])
    }

    /// `n` holes written as `T_NONE`, if the walk counted that many more.
    fn fill(&mut self, n: u32) -> Option<()> {
        self.holes = self.holes.checked_sub(u64::from(n))?;
        self.out.resize(self.out.len() + n as usize, T_NONE);
        Some(())
    }

    fn u32_at(&mut self, at: usize, v: u32) {
        self.out[at..at + 4].copy_from_slice(&v.to_le_bytes());
    }

    fn len(&mut self, n: usize) -> Option<()> {
        self.out
            .extend_from_slice(&u32::try_from(n).ok()?.to_le_bytes());
        Some(())
    }

    fn int(&mut self, v: i64) {
        self.out.push(T_INT);
        self.out.extend_from_slice(&v.to_le_bytes());
    }

    fn number(&mut self, x: f64) {
        if x.fract() == 0.0 && x.abs() <= MAX_SAFE && !(x == 0.0 && x.is_sign_negative()) {
            // (exact: |x| < 2^53)
            self.int(x as i64)
        } else {
            self.out.push(T_F64);
            self.out.extend_from_slice(&x.to_le_bytes());
        }
    }

    fn f64(&mut self) -> Option<f64> {
        Some(f64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }

    /// A string value or key whose tag has been read.
    fn string(&mut self, tag: u8) -> Option<()> {
        let n = self.varint()? as usize;
        self.out.push(T_STR);
        let head = self.out.len();
        self.out.extend_from_slice(&[0; 4]);
        let start = self.out.len();
        match tag {
            b'"' => {
                // Latin-1: bytes below 0x80 as they are, the rest as two.
                let s = self.take(n)?;
                if s.is_ascii() {
                    self.out.extend_from_slice(s);
                } else {
                    for &c in s {
                        if c < 0x80 {
                            self.out.push(c);
                        } else {
                            self.out
                                .extend_from_slice(&[0xC0 | (c >> 6), 0x80 | (c & 0x3F)]);
                        }
                    }
                }
            }
            b'c' => {
                if !n.is_multiple_of(2) {
                    return None;
                }
                let s = self.take(n)?;
                let units = s.chunks_exact(2).map(|u| u16::from_le_bytes([u[0], u[1]]));
                let mut buf = [0u8; 4];
                for c in char::decode_utf16(units) {
                    // (a lone surrogate: the JS encoder's refusal says so)
                    self.out
                        .extend_from_slice(c.ok()?.encode_utf8(&mut buf).as_bytes());
                }
            }
            b'S' => {
                let s = self.take(n)?;
                std::str::from_utf8(s).ok()?;
                self.out.extend_from_slice(s);
            }
            _ => return None,
        }
        let n = self.out.len() - start;
        self.u32_at(head, u32::try_from(n).ok()?);
        Some(())
    }

    /// An array index written as a number key, if the tag is one.
    fn index_key(&mut self, tag: u8) -> Option<Option<u32>> {
        Some(match tag {
            b'I' => Some(u32::try_from(zigzag(self.varint()?)).ok()?),
            b'U' => Some(self.varint()?),
            b'N' => {
                let x = self.f64()?;
                if !(x.fract() == 0.0 && (0.0..4_294_967_295.0).contains(&x)) {
                    return None;
                }
                Some(x as u32)
            }
            _ => None,
        })
    }

    fn value(&mut self, depth: usize) -> Option<()> {
        let tag = self.tag()?;
        match tag {
            b'_' | b'0' => self.out.push(T_NONE),
            b'T' | b'F' => self.out.extend_from_slice(&[T_BOOL, (tag == b'T') as u8]),
            b'I' => {
                let v = zigzag(self.varint()?);
                self.int(i64::from(v))
            }
            b'U' => {
                let v = self.varint()?;
                self.int(i64::from(v))
            }
            b'N' => {
                let x = self.f64()?;
                self.number(x)
            }
            b'Z' => self.bigint()?,
            b'"' | b'c' | b'S' => self.string(tag)?,
            // Objects: as deep as the JS encoder goes, no deeper.
            _ if depth >= MAX_DEPTH => return None,
            b'o' => self.object(depth)?,
            b'A' => self.dense(depth)?,
            b'a' => self.sparse(depth)?,
            b'\\' => self.view()?,
            _ => return None,
        }
        Some(())
    }

    fn bigint(&mut self) -> Option<()> {
        let bits = self.varint()?;
        let neg = bits & 1 != 0;
        let digits = self.take((bits >> 1) as usize)?;
        let used = digits.iter().rposition(|&d| d != 0).map_or(0, |i| i + 1);
        let mag = &digits[..used];
        self.out
            .extend_from_slice(&[T_BIGINT, (neg && used > 0) as u8]);
        self.len(used)?;
        self.out.extend_from_slice(mag);
        Some(())
    }

    /// A plain object: its properties, then `{` and their count.
    fn object(&mut self, depth: usize) -> Option<()> {
        self.out.push(T_TAB);
        let head = self.out.len();
        self.out.extend_from_slice(&[0; 4]);
        let mut count: u32 = 0;
        loop {
            let tag = self.tag()?;
            if tag == b'{' {
                if self.varint()? != count {
                    return None;
                }
                self.u32_at(head, count);
                return Some(());
            }
            match self.index_key(tag)? {
                Some(i) => {
                    let k = i.to_string();
                    self.out.push(T_STR);
                    self.len(k.len())?;
                    self.out.extend_from_slice(k.as_bytes());
                }
                None => self.string(tag)?,
            }
            self.value(depth + 1)?;
            count = count.checked_add(1)?;
        }
    }

    /// A dense array: its length, each element (a hole as `-`), then `$`,
    /// the count of named properties (none taken here) and the length again.
    fn dense(&mut self, depth: usize) -> Option<()> {
        let n = self.varint()?;
        // (each element takes a byte at least: no output sized from a lie)
        if n as usize > self.b.len() - self.p {
            return None;
        }
        self.out.push(T_ARR);
        self.len(n as usize)?;
        for _ in 0..n {
            if self.peek()? == b'-' {
                self.p += 1;
                self.fill(1)?;
            } else {
                self.value(depth + 1)?;
            }
        }
        (self.tag()? == b'$' && self.varint()? == 0 && self.varint()? == n).then_some(())
    }

    /// A sparse array: its length, index and value pairs in rising order,
    /// then `@`, the count of pairs and the length again. The indices not
    /// given are holes.
    fn sparse(&mut self, depth: usize) -> Option<()> {
        let n = self.varint()?;
        self.out.push(T_ARR);
        self.len(n as usize)?;
        let (mut next, mut pairs) = (0u32, 0u32);
        loop {
            let tag = self.tag()?;
            if tag == b'@' {
                if self.varint()? != pairs || self.varint()? != n {
                    return None;
                }
                break;
            }
            // A named property of the array: not a list element.
            let i = self.index_key(tag)??;
            if i < next || i >= n {
                return None;
            }
            self.fill(i - next)?;
            self.value(depth + 1)?;
            next = i + 1;
            pairs += 1;
        }
        self.fill(n - next)
    }

    /// An array-buffer view, as the facade writes host objects.
    fn view(&mut self) -> Option<()> {
        let code = u8::try_from(self.varint()?).ok()?;
        let n = self.varint()? as usize;
        let bytes = self.take(n)?;
        if code == 0 {
            self.out.push(T_BYTES);
            self.len(n)?;
        } else {
            let elem = Elem::from_code(code)?;
            let size = elem.size() as usize;
            if !n.is_multiple_of(size) {
                return None;
            }
            self.out.extend_from_slice(&[T_TYPED, code]);
            self.len(n / size)?;
        }
        self.out.extend_from_slice(bytes);
        Some(())
    }
}

fn zigzag(v: u32) -> i32 {
    ((v >> 1) as i32) ^ -((v & 1) as i32)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::value::wire::Value;

    /// A writer of the format, as V8 writes it (for the tests only).
    #[derive(Default)]
    struct W(Vec<u8>);

    impl W {
        fn new() -> Self {
            W(vec![0xFF, 15])
        }
        fn var(mut self, mut v: u32) -> Self {
            loop {
                let b = (v & 0x7F) as u8;
                v >>= 7;
                if v == 0 {
                    self.0.push(b);
                    return self;
                }
                self.0.push(b | 0x80);
            }
        }
        fn t(mut self, tag: u8) -> Self {
            self.0.push(tag);
            self
        }
        fn smi(self, v: i32) -> Self {
            self.t(b'I').var(((v << 1) ^ (v >> 31)) as u32)
        }
        fn dbl(mut self, x: f64) -> Self {
            self.0.push(b'N');
            self.0.extend_from_slice(&x.to_le_bytes());
            self
        }
        fn s1(mut self, s: &[u8]) -> Self {
            self = self.t(b'"').var(s.len() as u32);
            self.0.extend_from_slice(s);
            self
        }
        fn s2(mut self, s: &str) -> Self {
            let u: Vec<u16> = s.encode_utf16().collect();
            self = self.t(0).t(b'c').var(u.len() as u32 * 2);
            for c in u {
                self.0.extend_from_slice(&c.to_le_bytes());
            }
            self
        }
        fn raw(mut self, b: &[u8]) -> Self {
            self.0.extend_from_slice(b);
            self
        }
    }

    fn read(w: W) -> Option<Value> {
        read_holes(w, 0)
    }

    fn read_holes(w: W, holes: u64) -> Option<Value> {
        let wire = v8_to_wire(&w.0, holes)?;
        Some(Value::decode(&wire).expect("the output is valid wire"))
    }

    #[test]
    fn numbers_follow_the_js_encoder() {
        assert_eq!(read(W::new().smi(-5)), Some(Value::Int(-5)));
        assert_eq!(read(W::new().dbl(2.0)), Some(Value::Int(2)));
        assert_eq!(
            read(W::new().dbl(MAX_SAFE)),
            Some(Value::Int(9_007_199_254_740_991))
        );
        assert_eq!(
            read(W::new().dbl(MAX_SAFE + 1.0)),
            Some(Value::F64(MAX_SAFE + 1.0))
        );
        assert_eq!(read(W::new().dbl(0.5)), Some(Value::F64(0.5)));
        match read(W::new().dbl(-0.0)) {
            Some(Value::F64(x)) => assert!(x == 0.0 && x.is_sign_negative()),
            other => panic!("-0 read as {other:?}"),
        }
        assert!(matches!(read(W::new().dbl(f64::NAN)), Some(Value::F64(x)) if x.is_nan()));
    }

    #[test]
    fn strings_become_utf8() {
        assert_eq!(
            read(W::new().s1(b"caf\xe9")),
            Some(Value::Str("café".into()))
        );
        assert_eq!(
            read(W::new().s2("z\u{1F600}")),
            Some(Value::Str("z\u{1F600}".into()))
        );
        // A lone surrogate is left to the JS encoder's refusal.
        let lone = W::new().t(b'c').var(2).raw(&0xD800u16.to_le_bytes());
        assert_eq!(read(lone), None);
        assert_eq!(read(W::new().t(b'c').var(3).raw(b"abc")), None);
    }

    #[test]
    fn objects_and_arrays() {
        // {a: 1, 7: true, b: [null, <hole>, "x"]}, the index key first as V8 writes it
        let w = W::new()
            .t(b'o')
            .smi(7)
            .t(b'T')
            .s1(b"a")
            .smi(1)
            .s1(b"b")
            .t(b'A')
            .var(3)
            .t(b'0')
            .t(b'-')
            .s1(b"x")
            .t(b'$')
            .var(0)
            .var(3)
            .t(b'{')
            .var(3);
        let tab = Value::Tab(vec![
            (crate::value::Key::Str("7".into()), Value::Bool(true)),
            (crate::value::Key::Str("a".into()), Value::Int(1)),
            (
                crate::value::Key::Str("b".into()),
                Value::Arr(vec![Value::None, Value::None, Value::Str("x".into())]),
            ),
        ]);
        assert_eq!(read_holes(w, 1), Some(tab));
        // a sparse array of length 4: [ , 5, , ], with its three holes counted
        let sparse = || W::new().t(b'a').var(4).smi(1).smi(5).t(b'@').var(1).var(4);
        assert_eq!(
            read_holes(sparse(), 3),
            Some(Value::Arr(vec![
                Value::None,
                Value::Int(5),
                Value::None,
                Value::None
            ]))
        );
        // a hole the walk did not count (an element V8 left out), or one it counted in vain
        assert_eq!(read_holes(sparse(), 2), None);
        assert_eq!(read_holes(sparse(), 4), None);
        // a huge sparse array is refused once its holes pass the count, before they are written
        assert_eq!(
            read_holes(
                W::new().t(b'a').var(u32::MAX).t(b'@').var(0).var(u32::MAX),
                1000
            ),
            None
        );
        // padding comes only before a two-byte string
        assert_eq!(read(W::new().t(0).smi(1)), None);
    }

    #[test]
    fn views_and_bigints() {
        let w = W::new().t(b'\\').var(10).var(8).raw(&1.5f64.to_le_bytes());
        assert_eq!(
            read(w),
            Some(Value::Typed(Elem::F64, 1.5f64.to_le_bytes().to_vec()))
        );
        let w = W::new().t(b'\\').var(0).var(2).raw(b"hi");
        assert_eq!(read(w), Some(Value::Bytes(b"hi".to_vec())));
        // -(2^64 + 1): two digits, sign bit set
        let mut digits = 1u64.to_le_bytes().to_vec();
        digits.extend_from_slice(&1u64.to_le_bytes());
        let w = W::new().t(b'Z').var((16 << 1) | 1).raw(&digits);
        let mut mag = vec![1, 0, 0, 0, 0, 0, 0, 0, 1];
        assert_eq!(read(w), Some(Value::BigInt(true, mag.clone())));
        mag.clear();
        assert_eq!(
            read(W::new().t(b'Z').var(0)),
            Some(Value::BigInt(false, mag))
        );
    }

    #[test]
    fn what_is_left_to_the_js_encoder() {
        // a back reference, a Date, a named property on an array, a bad
        // element code, trailing bytes, an unknown version, lengths that lie
        assert_eq!(
            read(
                W::new()
                    .t(b'A')
                    .var(2)
                    .t(b'o')
                    .t(b'{')
                    .var(0)
                    .t(b'^')
                    .var(1)
                    .t(b'$')
                    .var(0)
                    .var(2)
            ),
            None
        );
        assert_eq!(read(W::new().t(b'D').raw(&0f64.to_le_bytes())), None);
        assert_eq!(
            read(
                W::new()
                    .t(b'A')
                    .var(0)
                    .s1(b"k")
                    .smi(1)
                    .t(b'$')
                    .var(1)
                    .var(0)
            ),
            None
        );
        assert_eq!(read(W::new().t(b'\\').var(11).var(0)), None);
        assert_eq!(read(W::new().t(b'\\').var(10).var(3).raw(b"abc")), None);
        assert_eq!(read(W::new().t(b'_').t(b'_')), None);
        assert_eq!(read(W(vec![0xFF, 16, b'_'])), None);
        assert_eq!(read(W::new().t(b'A').var(1_000_000).smi(1)), None);
        assert_eq!(
            read(W::new().t(b'a').var(u32::MAX).t(b'@').var(0).var(u32::MAX)),
            None
        );
        assert_eq!(read(W::new().t(b'o').s1(b"a").smi(1).t(b'{').var(2)), None);
        assert_eq!(read(W::new().var(u32::MAX).var(u32::MAX)), None);
    }

    #[test]
    fn nesting_stops_where_the_js_encoder_stops() {
        let nest = |n: usize| {
            let mut w = W::new();
            for _ in 0..n {
                w = w.t(b'A').var(1);
            }
            w = w.t(b'_');
            for _ in 0..n {
                w = w.t(b'$').var(0).var(1);
            }
            w
        };
        assert!(read(nest(MAX_DEPTH)).is_some());
        assert_eq!(read(nest(MAX_DEPTH + 1)), None);
    }

    #[test]
    fn no_input_panics() {
        // Every prefix and many one-byte changes of a valid input.
        let good = W::new()
            .t(b'o')
            .s1(b"k")
            .t(b'a')
            .var(3)
            .smi(2)
            .s2("\u{e9}x")
            .t(b'@')
            .var(1)
            .var(3)
            .s1(b"v")
            .t(b'\\')
            .var(2)
            .var(2)
            .raw(b"ab")
            .t(b'{')
            .var(2)
            .0;
        assert!(v8_to_wire(&good, 2).is_some());
        for n in 0..good.len() {
            let _ = v8_to_wire(&good[..n], 2);
            for b in [0u8, 1, 0x7F, 0x80, 0xFF, b'o', b'A', b'a', b'{', b'$', b'@'] {
                let mut bad = good.clone();
                bad[n] = b;
                if let Some(w) = v8_to_wire(&bad, 2) {
                    Value::decode(&w).expect("whatever is accepted is valid wire");
                }
            }
        }
    }
}
