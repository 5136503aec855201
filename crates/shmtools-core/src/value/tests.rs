//! Value-model tests on real regions in /dev/shm (one process; the
//! cross-process ones are in tests/values_cross_process.rs).
//!
//! What they pin down: every kind survives store → load bit for bit (with the
//! documented canonical form of big integers); storing and releasing anything
//! returns the pool to exactly its previous state; reference counts decide
//! when objects are freed; container mutations move references as documented;
//! a store that runs out of memory leaves nothing behind; and damaged objects
//! or bad wire input give errors, never panics.

use std::cell::Cell;
use std::collections::HashSet;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};

use proptest::collection::vec as pvec;
use proptest::prelude::*;

use super::wire::{Writer, MAX_DEPTH, T_REF};
use super::*;
use crate::pool::{PoolCheck, PoolStats};
use crate::region::Region;
use crate::scratch::Scratch;

// ---- helpers ----------------------------------------------------------------

/// The pool's figures at some moment, to compare against later.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
struct Baseline {
    stats: PoolStats,
    check: PoolCheck,
}

fn baseline(vals: &Values<'_>) -> Baseline {
    Baseline {
        stats: vals.pool().stats().expect("stats"),
        check: vals.pool().check().expect("a consistent pool"),
    }
}

#[track_caller]
fn assert_at(vals: &Values<'_>, want: &Baseline, what: &str) {
    let now = baseline(vals);
    assert_eq!(now, *want, "{what}: the pool is not as it was");
}

fn code<T>(r: Result<T>) -> ErrorCode {
    match r {
        Ok(_) => panic!("expected an error, got Ok"),
        Err(e) => e.code(),
    }
}

/// `r` is Ok or an error with one of the `allowed` codes; anything else fails.
#[track_caller]
fn tolerable<T>(r: Result<T>, allowed: &[ErrorCode], what: &str) -> Option<T> {
    match r {
        Ok(v) => Some(v),
        Err(e) if allowed.contains(&e.code()) => None,
        Err(e) => panic!("{what}: unexpected error {e}"),
    }
}

/// `tolerable`, counting the errors in `n`.
#[track_caller]
fn tally<T>(n: &Cell<usize>, r: Result<T>, allowed: &[ErrorCode], what: &str) -> Option<T> {
    if r.is_err() {
        n.set(n.get() + 1);
    }
    tolerable(r, allowed, what)
}

const READ_ERRORS: &[ErrorCode] = &[ErrorCode::Corrupt, ErrorCode::InvalidArg, ErrorCode::Closed];
const WRITE_ERRORS: &[ErrorCode] = &[
    ErrorCode::Corrupt,
    ErrorCode::InvalidArg,
    ErrorCode::Closed,
    ErrorCode::OutOfMemory,
];

/// splitmix64: small, seedable, good enough to drive tests.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

/// The element bytes of a `Value::Typed`.
fn v_raw(v: &Value) -> &[u8] {
    match v {
        Value::Typed(_, raw) => raw,
        other => panic!("not a typed array: {other:?}"),
    }
}

fn s(x: &str) -> Value {
    Value::Str(x.to_string())
}

fn ks(x: &str) -> Key {
    Key::Str(x.to_string())
}

fn all_elems() -> Vec<Elem> {
    (1..=10)
        .map(|c| Elem::from_code(c).expect("codes 1..=10 are element types"))
        .collect()
}

/// The form a value takes once stored: big integers lose trailing zero bytes
/// of their magnitude and the sign of zero; a Tab given the same key twice
/// keeps the key's first position and its last value.
fn canon(v: &Value) -> Value {
    match v {
        Value::BigInt(neg, mag) => {
            let mut m = mag.clone();
            while m.last() == Some(&0) {
                m.pop();
            }
            Value::BigInt(*neg && !m.is_empty(), m)
        }
        Value::Tab(entries) => {
            let mut out: Vec<(Key, Value)> = Vec::new();
            for (k, v) in entries {
                let v = canon(v);
                match out.iter_mut().find(|(ok, _)| ok == k) {
                    Some(e) => e.1 = v,
                    None => out.push((k.clone(), v)),
                }
            }
            Value::Tab(out)
        }
        Value::Arr(items) => Value::Arr(items.iter().map(canon).collect()),
        other => other.clone(),
    }
}

fn short_debug(v: &Value) -> String {
    let d = format!("{v:?}");
    if d.len() > 300 {
        let mut cut = 300;
        while !d.is_char_boundary(cut) {
            cut -= 1;
        }
        format!("{}… ({} chars)", &d[..cut], d.len())
    } else {
        d
    }
}

/// Equal bit for bit: compared through the wire encoding, so NaN payloads,
/// -0.0 and key order all count.
#[track_caller]
fn assert_same(got: &Value, want: &Value, what: &str) {
    let (g, w) = (got.encode().unwrap(), want.encode().unwrap());
    assert!(
        g == w,
        "{what}: got {} want {}",
        short_debug(got),
        short_debug(want)
    );
}

/// Store `v`, read it back (as a tree and as wire bytes) and compare with
/// its canonical form, release it, and check the pool is exactly as before.
#[track_caller]
fn assert_round_trip(vals: Values<'_>, v: &Value, what: &str) {
    let base = baseline(&vals);
    let want = canon(v);
    let slot = vals
        .store(v)
        .unwrap_or_else(|e| panic!("{what}: store: {e}"));
    let got = vals
        .load(slot)
        .unwrap_or_else(|e| panic!("{what}: load: {e}"));
    assert_same(&got, &want, what);
    let mut w = Writer::default();
    vals.load_wire(slot, &mut w).unwrap();
    assert!(w.buf == want.encode().unwrap(), "{what}: load_wire differs");
    vals.release(slot).unwrap();
    assert_at(&vals, &base, what);
}

/// The Tab's keys and full contents are exactly `model`, in order.
#[track_caller]
fn assert_tab_is(vals: Values<'_>, t: Slot, model: &[(Key, Value)], what: &str) {
    let keys: Vec<Key> = model.iter().map(|(k, _)| k.clone()).collect();
    assert_eq!(vals.tab_keys(t).unwrap(), keys, "{what}: keys");
    assert_eq!(vals.tab_len(t).unwrap(), model.len() as u64, "{what}: len");
    assert_same(&vals.load(t).unwrap(), &Value::Tab(model.to_vec()), what);
    for (k, v) in model {
        assert!(vals.tab_has(t, k.into()).unwrap(), "{what}: has {k:?}");
        let got = vals.tab_get(t, k.into()).unwrap().expect("present");
        assert_same(&vals.load(got).unwrap(), v, what);
        vals.release(got).unwrap();
    }
}

fn model_set(model: &mut Vec<(Key, Value)>, k: Key, v: Value) {
    match model.iter_mut().find(|(mk, _)| *mk == k) {
        Some(e) => e.1 = v,
        None => model.push((k, v)),
    }
}

fn model_delete(model: &mut Vec<(Key, Value)>, k: &Key) -> bool {
    let before = model.len();
    model.retain(|(mk, _)| mk != k);
    model.len() != before
}

/// A mixed value with one object of every kind, nested.
fn sample() -> Value {
    Value::Tab(vec![
        (ks("name"), s("héllo wörld 😀")),
        (Key::Int(7), Value::Bytes(vec![1, 2, 3, 4, 5])),
        (
            ks("big"),
            Value::BigInt(true, vec![1, 2, 3, 4, 5, 6, 7, 8, 9]),
        ),
        (
            ks("typed array"),
            Value::Typed(
                Elem::I32,
                [1i32, -2, 3, -4]
                    .iter()
                    .flat_map(|x| x.to_le_bytes())
                    .collect(),
            ),
        ),
        (
            ks("list"),
            Value::Arr(vec![
                Value::Int(1),
                s("x, long enough to be an object"),
                Value::Tab(vec![(Key::Int(1), Value::F64(1.5))]),
                Value::Arr(vec![]),
            ]),
        ),
        (
            Key::Int(-1),
            Value::Tab(vec![(
                ks("deep"),
                Value::Arr(vec![s("y, long enough too"), Value::None]),
            )]),
        ),
        (ks("f"), Value::F64(2.5)),
    ])
}

fn nested_arr(depth: usize) -> Value {
    let mut v = Value::Int(42);
    for _ in 0..depth {
        v = Value::Arr(vec![v]);
    }
    v
}

fn nested_tab(depth: usize) -> Value {
    let mut v = s("leaf");
    for i in 0..depth {
        v = Value::Tab(vec![(Key::Int(i as i64), v)]);
    }
    v
}

// ---- 1. round trips ---------------------------------------------------------

#[test]
fn scalars_round_trip_bit_exactly_and_take_no_pool_memory() {
    let sc = Scratch::new("scalars", 256 * 1024);
    let vals = sc.values();
    let base = baseline(&vals);
    let f64s = [
        0.0,
        -0.0,
        1.5,
        f64::INFINITY,
        f64::NEG_INFINITY,
        f64::NAN,
        f64::from_bits(0x7ff8_0000_0000_0001), // quiet NaN with a payload
        f64::from_bits(0xfff0_0000_0000_0001), // negative signalling NaN
        f64::from_bits(1),                     // smallest subnormal
        f64::MIN_POSITIVE,
        f64::MAX,
        f64::MIN,
    ];
    let f32s = [
        0.0f32,
        -0.0,
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::NAN,
        f32::from_bits(0x7fc0_0001),
        f32::from_bits(0xff80_0001),
        f32::from_bits(1),
        f32::MAX,
    ];
    let mut scalars = vec![
        Value::None,
        Value::Bool(false),
        Value::Bool(true),
        Value::Int(0),
        Value::Int(-1),
        Value::Int(i64::MIN),
        Value::Int(i64::MAX),
        Value::UInt(0),
        Value::UInt(u64::MAX),
    ];
    scalars.extend(f64s.iter().map(|&f| Value::F64(f)));
    scalars.extend(f32s.iter().map(|&f| Value::F32(f)));
    for v in &scalars {
        let slot = vals.store(v).unwrap();
        assert!(!slot.is_object(), "{v:?} is a slot scalar");
        assert_eq!(
            vals.pool().stats().unwrap(),
            base.stats,
            "{v:?} took memory"
        );
        assert_eq!(vals.refcount(slot).unwrap(), 0);
        vals.retain(slot).unwrap();
        assert_same(&vals.load(slot).unwrap(), v, &format!("{v:?}"));
        vals.release(slot).unwrap();
        vals.release(slot).unwrap();
        assert_round_trip(vals, v, &format!("{v:?}"));
    }
    // Any non-zero byte is true.
    let b = vals.store_wire(&[T_BOOL, 2]).unwrap();
    assert_same(&vals.load(b).unwrap(), &Value::Bool(true), "bool byte 2");
    // The scalar's own wire form is what a container read hands out.
    assert_eq!(
        scalar_wire(vals.store(&Value::Int(i64::MIN)).unwrap()).unwrap(),
        Value::Int(i64::MIN).encode().unwrap()
    );
    assert_eq!(
        scalar_wire(vals.store(&Value::F32(f32s[6])).unwrap()).unwrap(),
        Value::F32(f32s[6]).encode().unwrap()
    );
    let obj = vals.store(&s("x, long enough to be an object")).unwrap();
    assert_eq!(scalar_wire(obj), None);
    // A string of up to 7 bytes lives in its slot: no object, wire T_STR.
    let short = vals.store(&s("x")).unwrap();
    assert_eq!(short.tag, crate::value::T_SSTR);
    assert_eq!(scalar_wire(short).unwrap(), s("x").encode().unwrap());
    vals.release(obj).unwrap();
    assert_at(&vals, &base, "scalars");
}

#[test]
fn strings_round_trip_including_empty_astral_and_one_megabyte() {
    let sc = Scratch::new("strings", 4 << 20);
    let vals = sc.values();
    let mega = "aé€😀".repeat((1 << 20) / 10);
    assert!(mega.len() >= (1 << 20) - 10);
    for st in [
        String::new(),
        "a".into(),
        "héllo wörld".into(),
        "𝄞 astral 😀🎉 \u{10FFFF}".into(),
        "nul\0inside".into(),
        mega,
    ] {
        let what = format!("string of {} bytes", st.len());
        assert_round_trip(vals, &Value::Str(st.clone()), &what);
        // Stored as its UTF-8 bytes, no more, no less: in the slot itself up
        // to 7 bytes, in a string object beyond.
        let slot = vals.store(&Value::Str(st.clone())).unwrap();
        if st.len() <= crate::value::SSTR_MAX {
            assert_eq!(slot.tag, crate::value::T_SSTR, "{what}: inline");
            let (a, n) = slot.short_bytes().unwrap();
            assert!(&a[..n] == st.as_bytes(), "{what}: inline bytes");
        } else {
            let (off, n) = vals.data(slot).unwrap();
            assert_eq!(n, st.len() as u64, "{what}");
            let mut raw = vec![0; n as usize];
            vals.span.read(off, &mut raw).unwrap();
            assert!(raw == st.as_bytes(), "{what}: raw bytes");
        }
        vals.release(slot).unwrap();
    }
}

#[test]
fn bytes_round_trip_including_empty_and_one_megabyte() {
    let sc = Scratch::new("bytes", 4 << 20);
    let vals = sc.values();
    let mut rng = Rng(1);
    for b in [vec![], vec![0], (0..=255u8).collect(), rng.bytes(1 << 20)] {
        let what = format!("{} bytes", b.len());
        assert_round_trip(vals, &Value::Bytes(b.clone()), &what);
        let slot = vals.store(&Value::Bytes(b.clone())).unwrap();
        assert_eq!(vals.data(slot).unwrap().1, b.len() as u64, "{what}");
        vals.release(slot).unwrap();
    }
}

#[test]
fn big_integers_are_stored_without_trailing_zero_bytes_and_zero_is_never_negative() {
    let sc = Scratch::new("bigint", 1 << 20);
    let vals = sc.values();
    let mut rng = Rng(2);
    let mut huge = rng.bytes(100_000);
    huge.push(0x7f);
    let mut huge_padded = huge.clone();
    huge_padded.extend([0; 1000]);
    type Big = (bool, Vec<u8>);
    let cases: Vec<(Big, Big)> = vec![
        ((false, vec![]), (false, vec![])),
        ((true, vec![]), (false, vec![])),
        ((true, vec![0, 0]), (false, vec![])),
        ((false, vec![0]), (false, vec![])),
        ((false, vec![1]), (false, vec![1])),
        ((true, vec![1]), (true, vec![1])),
        ((true, vec![0xff, 0, 0]), (true, vec![0xff])),
        ((false, vec![0, 0, 1]), (false, vec![0, 0, 1])),
        ((false, huge.clone()), (false, huge.clone())),
        ((true, huge_padded.clone()), (true, huge.clone())),
    ];
    for ((neg, mag), (wneg, wmag)) in cases {
        let what = format!("bigint neg={neg} len={}", mag.len());
        let v = Value::BigInt(neg, mag);
        let want = Value::BigInt(wneg, wmag.clone());
        assert_same(&canon(&v), &want, &what);
        assert_round_trip(vals, &v, &what);
        let slot = vals.store(&v).unwrap();
        assert_eq!(vals.data(slot).unwrap().1, wmag.len() as u64, "{what}");
        assert_same(&vals.load(slot).unwrap(), &want, &what);
        vals.release(slot).unwrap();
    }
}

#[test]
fn typed_arrays_of_every_element_type_round_trip_with_their_type_and_count() {
    let sc = Scratch::new("typed", 1 << 20);
    let vals = sc.values();
    let mut rng = Rng(3);
    assert_eq!(Elem::from_code(0), None);
    assert_eq!(Elem::from_code(11), None);
    for e in all_elems() {
        for count in [0u64, 1, 7, 1000] {
            let what = format!("{e:?} × {count}");
            let raw = rng.bytes((count * e.size()) as usize);
            let v = Value::Typed(e, raw);
            assert_round_trip(vals, &v, &what);
            let slot = vals.store(&v).unwrap();
            assert_eq!(vals.typed_info(slot).unwrap(), (e, count), "{what}");
            assert_eq!(vals.data(slot).unwrap().1, count * e.size(), "{what}");
            // Straight from the elements' bytes: the same object as through
            // the encoding.
            let direct = vals.store_typed(e, v_raw(&v)).unwrap();
            assert_eq!(vals.typed_info(direct).unwrap(), (e, count), "{what}");
            assert_eq!(
                vals.load(direct).unwrap(),
                vals.load(slot).unwrap(),
                "{what}"
            );
            vals.release(direct).unwrap();
            vals.release(slot).unwrap();
        }
        if e.size() > 1 {
            let ragged = Value::Typed(e, vec![0; e.size() as usize + 1]);
            assert_eq!(code(ragged.encode()), ErrorCode::InvalidArg, "{e:?}");
            let before = baseline(&vals);
            let odd = vec![0; e.size() as usize + 1];
            assert_eq!(
                code(vals.store_typed(e, &odd)),
                ErrorCode::InvalidArg,
                "{e:?}"
            );
            assert_at(&vals, &before, "a refused store_typed allocates nothing");
        }
    }
    // Not a typed array: typed_info refuses, data() refuses containers.
    let t = vals.store(&Value::Tab(vec![])).unwrap();
    assert_eq!(code(vals.typed_info(t)), ErrorCode::InvalidArg);
    assert_eq!(code(vals.data(t)), ErrorCode::InvalidArg);
    assert_eq!(code(vals.data(Slot::NONE)), ErrorCode::InvalidArg);
    vals.release(t).unwrap();
}

#[test]
fn a_lone_byte_string_is_told_exactly_as_the_parsers_walk_tells_it() {
    use super::wire::{check_packet, lone_bytes, Reader, T_BYTES};
    // The walk itself, without check_packet's shortcut.
    let walk = |enc: &[u8]| {
        let mut r = Reader::new(enc);
        r.skip_value().map(|seen| (seen, r.at_end()))
    };
    let payload = vec![7; 64];
    let mut enc = Value::Bytes(payload.clone()).encode().unwrap();
    assert_eq!(lone_bytes(&enc), Some(&payload[..]));
    assert_eq!(walk(&enc).unwrap(), (Default::default(), true));
    assert!(check_packet(&enc).is_ok());
    let empty = Value::Bytes(vec![]).encode().unwrap();
    assert_eq!(lone_bytes(&empty), Some(&[][..]));
    assert_eq!(walk(&empty).unwrap(), (Default::default(), true));
    // A byte too many or too few, another kind, a short header: not one,
    // and the walk and check_packet refuse the damaged ones too.
    enc.push(0);
    assert!(lone_bytes(&enc).is_none() && check_packet(&enc).is_err());
    assert!(!matches!(walk(&enc), Ok((_, true))));
    enc.truncate(enc.len() - 2);
    assert!(lone_bytes(&enc).is_none() && check_packet(&enc).is_err());
    assert!(walk(&enc).is_err());
    assert!(lone_bytes(&s(&"x".repeat(64)).encode().unwrap()).is_none());
    assert!(lone_bytes(&[T_BYTES, 0, 0, 0]).is_none());
    assert!(lone_bytes(&[]).is_none());
    let list = Value::Arr(vec![Value::Bytes(vec![1, 2])]).encode().unwrap();
    assert!(lone_bytes(&list).is_none());
}

#[test]
fn tabs_round_trip_with_int_and_string_keys_in_insertion_order() {
    let sc = Scratch::new("tabs", 1 << 20);
    let vals = sc.values();
    assert_round_trip(vals, &Value::Tab(vec![]), "empty tab");
    let empty = vals.store(&Value::Tab(vec![])).unwrap();
    assert_eq!(vals.tab_len(empty).unwrap(), 0);
    assert_eq!(vals.tab_keys(empty).unwrap(), vec![]);
    assert_eq!(vals.tab_get(empty, KeyRef::Int(0)).unwrap(), None);
    assert!(!vals.tab_has(empty, KeyRef::str("")).unwrap());
    assert!(!vals.tab_delete(empty, KeyRef::str("x")).unwrap());
    vals.release(empty).unwrap();

    let ints = Value::Tab(
        [0, -1, 1, i64::MIN, i64::MAX, 42, -42]
            .iter()
            .map(|&i| (Key::Int(i), Value::Int(i.wrapping_mul(3))))
            .collect(),
    );
    assert_round_trip(vals, &ints, "int keys");
    let strs = Value::Tab(
        ["", "a", "b", "héllo", "😀 astral 𝄞", "zz", "A"]
            .iter()
            .map(|k| (ks(k), s(&format!("v-{k}"))))
            .collect(),
    );
    assert_round_trip(vals, &strs, "string keys");
    // "1" and 1 are different keys, and "1" is not confused with 1 by get.
    let mixed = Value::Tab(vec![
        (Key::Int(1), s("int")),
        (ks("1"), s("str")),
        (Key::Int(0), Value::None),
        (ks(""), Value::Bool(true)),
    ]);
    assert_round_trip(vals, &mixed, "mixed keys");
    let t = vals.store(&mixed).unwrap();
    let got = |k: KeyRef<'_>| {
        let v = vals.tab_get(t, k).unwrap().unwrap();
        let out = vals.load(v).unwrap();
        vals.release(v).unwrap();
        out
    };
    assert_eq!(got(KeyRef::Int(1)), s("int"));
    assert_eq!(got(KeyRef::str("1")), s("str"));
    assert_eq!(vals.tab_get(t, KeyRef::Int(2)).unwrap(), None);
    assert_eq!(vals.tab_get(t, KeyRef::str("0")).unwrap(), None);
    vals.release(t).unwrap();
    assert_round_trip(vals, &sample(), "sample");
}

#[test]
fn a_key_given_twice_in_the_wire_keeps_its_first_position_and_its_last_value() {
    let sc = Scratch::new("dupkey", 256 * 1024);
    let vals = sc.values();
    let v = Value::Tab(vec![
        (ks("a"), Value::Int(1)),
        (Key::Int(5), s("five")),
        (ks("a"), s("second a")),
        (ks("b"), Value::None),
        (Key::Int(5), Value::Arr(vec![Value::Int(5)])),
    ]);
    assert_same(
        &canon(&v),
        &Value::Tab(vec![
            (ks("a"), s("second a")),
            (Key::Int(5), Value::Arr(vec![Value::Int(5)])),
            (ks("b"), Value::None),
        ]),
        "canon",
    );
    assert_round_trip(vals, &v, "duplicate keys");
}

#[test]
fn tab_insertion_order_survives_deletes_reinserts_replacements_and_growth() {
    let sc = Scratch::new("order", 4 << 20);
    let vals = sc.values();
    let base = baseline(&vals);
    let key = |i: u64| {
        if i.is_multiple_of(2) {
            Key::Int(i as i64 * 1_000_003 - 50)
        } else {
            Key::Str(format!("key-{i}-ü"))
        }
    };
    for initial_cap in [0u64, 2, 64] {
        let what = format!("initial capacity {initial_cap}");
        let t = vals.tab_new(initial_cap).unwrap();
        let mut model = Vec::new();
        let set = |model: &mut Vec<(Key, Value)>, k: Key, v: Value| {
            vals.tab_set(t, (&k).into(), vals.store(&v).unwrap())
                .unwrap();
            model_set(model, k, v);
        };
        // Many times the initial capacity: several rebuilds.
        for i in 0..300 {
            set(&mut model, key(i), Value::Int(i as i64));
        }
        assert_tab_is(vals, t, &model, &format!("{what}, filled"));
        for i in (0..300).step_by(3) {
            assert!(vals.tab_delete(t, (&key(i)).into()).unwrap());
            assert!(model_delete(&mut model, &key(i)));
            assert!(!vals.tab_has(t, (&key(i)).into()).unwrap());
            assert_eq!(vals.tab_get(t, (&key(i)).into()).unwrap(), None);
        }
        assert_tab_is(vals, t, &model, &format!("{what}, after deletes"));
        // Re-inserted keys go to the end; replaced ones keep their place.
        for i in (0..300).step_by(6) {
            set(&mut model, key(i), s(&format!("back {i}")));
        }
        for i in (1..300).step_by(5) {
            set(&mut model, key(i), Value::UInt(i));
        }
        assert_tab_is(vals, t, &model, &format!("{what}, after re-inserts"));
        // Grow again with tombstones present: they are dropped, order kept.
        for i in 300..700 {
            set(&mut model, key(i), Value::Bool(i % 2 == 0));
            if i % 4 == 0 {
                let k = key(i - 150);
                assert_eq!(
                    vals.tab_delete(t, (&k).into()).unwrap(),
                    model_delete(&mut model, &k)
                );
            }
        }
        assert_tab_is(vals, t, &model, &format!("{what}, after growth"));
        vals.release(t).unwrap();
        assert_at(&vals, &base, &what);
    }
}

#[test]
fn arrs_round_trip_empty_and_nested() {
    let sc = Scratch::new("arrs", 1 << 20);
    let vals = sc.values();
    assert_round_trip(vals, &Value::Arr(vec![]), "empty arr");
    let nested = Value::Arr(vec![
        Value::Arr(vec![]),
        Value::Arr(vec![Value::Arr(vec![Value::Int(1)]), s("two")]),
        Value::Tab(vec![(
            ks("in"),
            Value::Arr(vec![Value::None, Value::Bool(true)]),
        )]),
        Value::Typed(Elem::F64, 3.25f64.to_le_bytes().to_vec()),
        Value::BigInt(true, vec![9]),
        Value::Bytes(vec![]),
    ]);
    assert_round_trip(vals, &nested, "nested arr");
    let a = vals.store(&nested).unwrap();
    assert_eq!(vals.arr_len(a).unwrap(), 6);
    let inner = vals.arr_get(a, 1).unwrap().unwrap();
    assert_eq!(inner.tag, T_ARR);
    assert_eq!(vals.arr_len(inner).unwrap(), 2);
    vals.release(inner).unwrap();
    assert_eq!(vals.arr_get(a, 6).unwrap(), None);
    vals.release(a).unwrap();
    let big = Value::Arr((0..5000).map(|i| Value::Int(i * 7)).collect());
    assert_round_trip(vals, &big, "5000 ints");
}

#[test]
fn nesting_up_to_max_depth_round_trips_and_one_level_more_is_an_error() {
    let sc = Scratch::new("depth", 4 << 20);
    let vals = sc.values();
    let base = baseline(&vals);
    assert_round_trip(vals, &nested_arr(MAX_DEPTH), "arrs at max depth");
    assert_round_trip(vals, &nested_tab(MAX_DEPTH), "tabs at max depth");
    assert_eq!(
        code(nested_arr(MAX_DEPTH + 1).encode()),
        ErrorCode::InvalidArg
    );
    assert_eq!(
        code(nested_tab(MAX_DEPTH + 1).encode()),
        ErrorCode::InvalidArg
    );
    assert_eq!(
        code(vals.store(&nested_arr(MAX_DEPTH + 1))),
        ErrorCode::InvalidArg
    );

    // Hand-made wire bytes one level too deep, with a string beside each
    // level so the store has built plenty before it meets the limit.
    let mut w = Writer::default();
    for _ in 0..=MAX_DEPTH {
        w.u8(T_ARR);
        w.u32(2);
        w.u8(T_STR);
        w.u32(3);
        w.bytes(b"abc");
    }
    w.u8(T_INT);
    w.u64(1);
    for _ in 0..=MAX_DEPTH {
        w.u8(T_NONE);
    }
    assert_eq!(code(vals.store_wire(&w.buf)), ErrorCode::InvalidArg);
    assert_eq!(code(Value::decode(&w.buf)), ErrorCode::InvalidArg);
    assert_at(&vals, &base, "after a too-deep store");

    // Far deeper input ends at the limit, not in a stack overflow.
    let mut deep = Vec::new();
    for _ in 0..1_000_000 {
        deep.extend_from_slice(&[T_ARR, 1, 0, 0, 0]);
    }
    deep.push(T_NONE);
    assert_eq!(code(vals.store_wire(&deep)), ErrorCode::InvalidArg);
    assert_eq!(code(Value::decode(&deep)), ErrorCode::InvalidArg);
    assert_at(&vals, &base, "after a million-deep store");
}

/// Containers nested by hand (not through the wire) can go deeper than the
/// wire allows: loading them is an error at the same limit, and releasing
/// them is iterative, so depth costs no stack.
#[test]
fn a_chain_pushed_deeper_than_max_depth_fails_to_load_and_releases_without_recursion() {
    let sc = Scratch::new("chain", 8 << 20);
    let vals = sc.values();
    let base = baseline(&vals);
    let chain = |depth: usize| {
        let mut cur = vals.arr_new(1).unwrap();
        vals.arr_push(
            cur,
            Slot {
                tag: T_INT,
                bits: 42,
            },
        )
        .unwrap();
        for _ in 1..depth {
            let a = vals.arr_new(1).unwrap();
            vals.arr_push(a, cur).unwrap();
            cur = a;
        }
        cur
    };
    let ok = chain(MAX_DEPTH);
    assert_same(
        &vals.load(ok).unwrap(),
        &nested_arr(MAX_DEPTH),
        "max depth by pushes",
    );
    vals.release(ok).unwrap();
    let too_deep = chain(MAX_DEPTH + 1);
    assert_eq!(code(vals.load(too_deep)), ErrorCode::InvalidArg);
    // The failed load released every reference it took on the way down.
    assert_eq!(vals.refcount(too_deep).unwrap(), 1);
    vals.release(too_deep).unwrap();
    assert_at(&vals, &base, "after the max-depth chains");
    let very_deep = chain(30_000);
    assert_eq!(code(vals.load(very_deep)), ErrorCode::InvalidArg);
    vals.release(very_deep).unwrap();
    assert_at(&vals, &base, "after the 30 000-deep chain");
}

// ---- 2. pool accounting -----------------------------------------------------

#[test]
fn storing_and_releasing_any_value_restores_the_pool_exactly() {
    let sc = Scratch::new("accounting", 1 << 20);
    let vals = sc.values();
    let base = baseline(&vals);
    let mut catalog = vec![
        s(""),
        s("short"),
        s(&"long ".repeat(1000)),
        Value::Bytes(vec![7; 3000]),
        Value::BigInt(true, vec![0; 40]),
        Value::BigInt(false, vec![1; 40]),
        Value::Typed(Elem::U16, vec![1; 200]),
        Value::Tab(vec![]),
        Value::Arr(vec![]),
        sample(),
        nested_arr(40),
        nested_tab(40),
    ];
    catalog.push(Value::Arr(catalog.clone()));
    for (i, v) in catalog.iter().enumerate() {
        assert_round_trip(vals, v, &format!("catalog {i}"));
    }
    // Several live at once, released in another order than stored.
    let slots: Vec<Slot> = catalog.iter().map(|v| vals.store(v).unwrap()).collect();
    for (i, &slot) in slots.iter().enumerate().rev() {
        if i % 2 == 1 {
            vals.release(slot).unwrap();
        }
    }
    for (i, &slot) in slots.iter().enumerate() {
        if i % 2 == 0 {
            assert_same(&vals.load(slot).unwrap(), &canon(&catalog[i]), "survivor");
            vals.release(slot).unwrap();
        }
    }
    assert_at(&vals, &base, "after the catalog");
}

fn arb_key() -> impl Strategy<Value = Key> {
    prop_oneof![
        (-3i64..3).prop_map(Key::Int),
        any::<i64>().prop_map(Key::Int),
        "[ab]{0,2}".prop_map(Key::Str),
        ".{0,8}".prop_map(Key::Str),
    ]
}

fn arb_elem() -> impl Strategy<Value = Elem> {
    (1u8..=10).prop_map(|c| Elem::from_code(c).expect("valid code"))
}

fn arb_leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::None),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::Int),
        any::<u64>().prop_map(Value::UInt),
        any::<u64>().prop_map(|b| Value::F64(f64::from_bits(b))),
        any::<u32>().prop_map(|b| Value::F32(f32::from_bits(b))),
        ".{0,24}".prop_map(Value::Str),
        pvec(any::<u8>(), 0..64).prop_map(Value::Bytes),
        (
            any::<bool>(),
            pvec(prop_oneof![Just(0u8), any::<u8>()], 0..24)
        )
            .prop_map(|(neg, mag)| Value::BigInt(neg, mag)),
        (arb_elem(), 0usize..16).prop_flat_map(|(e, n)| {
            pvec(any::<u8>(), n * e.size() as usize).prop_map(move |raw| Value::Typed(e, raw))
        }),
    ]
}

fn arb_value() -> impl Strategy<Value = Value> {
    arb_leaf().prop_recursive(5, 96, 8, |inner| {
        prop_oneof![
            pvec(inner.clone(), 0..8).prop_map(Value::Arr),
            pvec((arb_key(), inner), 0..8).prop_map(Value::Tab),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 160, ..ProptestConfig::default() })]

    /// load(store(v)) is v in canonical form, also when two copies are live
    /// and one refers to the other, and releasing brings the pool back.
    #[test]
    fn random_value_trees_round_trip_and_release_to_the_baseline(
        v in arb_value(),
        w in arb_value(),
    ) {
        let sc = Scratch::new("prop", 1 << 20);
        let vals = sc.values();
        let base = baseline(&vals);
        let want = canon(&v);
        let a = vals.store(&v).unwrap();
        prop_assert_eq!(vals.load(a).unwrap().encode().unwrap(), want.encode().unwrap());
        let mut bytes = Writer::default();
        vals.load_wire(a, &mut bytes).unwrap();
        prop_assert_eq!(&bytes.buf, &want.encode().unwrap());
        // A second value holding the first by reference.
        let mut enc = Writer::default();
        enc.u8(T_ARR);
        enc.u32(2);
        enc.bytes(&w.encode().unwrap());
        enc.u8(T_REF);
        enc.u64(a.bits);
        let b = if a.is_object() {
            let b = vals.store_wire(&enc.buf).unwrap();
            prop_assert_eq!(vals.refcount(a).unwrap(), 2);
            let both = Value::Arr(vec![canon(&w), want.clone()]);
            prop_assert_eq!(vals.load(b).unwrap().encode().unwrap(), both.encode().unwrap());
            Some(b)
        } else {
            None // a scalar has no offset to refer to
        };
        prop_assert_eq!(baseline(&vals).check.bytes_used, vals.pool().stats().unwrap().bytes_used);
        vals.release(a).unwrap();
        if let Some(b) = b {
            let both = Value::Arr(vec![canon(&w), want.clone()]);
            prop_assert_eq!(vals.load(b).unwrap().encode().unwrap(), both.encode().unwrap());
            vals.release(b).unwrap();
        }
        prop_assert_eq!(baseline(&vals), base);
    }
}

// ---- 3. reference counts ----------------------------------------------------

#[test]
fn retain_and_release_move_the_count_and_only_the_last_release_frees() {
    let sc = Scratch::new("refcount", 256 * 1024);
    let vals = sc.values();
    let base = baseline(&vals);
    for v in [s(&"x".repeat(100)), sample(), Value::Arr(vec![s("a")])] {
        let slot = vals.store(&v).unwrap();
        assert_eq!(vals.refcount(slot).unwrap(), 1);
        let held = vals.pool().stats().unwrap();
        for n in 2..=5 {
            vals.retain(slot).unwrap();
            assert_eq!(vals.refcount(slot).unwrap(), n);
        }
        assert_eq!(
            vals.pool().stats().unwrap(),
            held,
            "retain allocates nothing"
        );
        for n in (1..=4).rev() {
            vals.release(slot).unwrap();
            assert_eq!(vals.refcount(slot).unwrap(), n);
            assert_eq!(vals.pool().stats().unwrap(), held, "not the last release");
            assert_same(&vals.load(slot).unwrap(), &canon(&v), "still alive");
        }
        vals.release(slot).unwrap();
        assert_at(&vals, &base, "after the last release");
    }
    // Scalars have no count; retain and release are no-ops.
    let i = Slot {
        tag: T_INT,
        bits: 5,
    };
    assert_eq!(vals.refcount(i).unwrap(), 0);
    vals.retain(i).unwrap();
    vals.release(i).unwrap();
    assert_eq!(vals.refcount(Slot::NONE).unwrap(), 0);

    // The Shared handle: clone takes a reference, drop gives it back.
    let h = Shared::new(vals, &sample()).unwrap();
    let h2 = h.try_clone().unwrap();
    assert_eq!(h.refcount().unwrap(), 2);
    assert_eq!(h2.slot(), h.slot());
    drop(h);
    assert_eq!(h2.refcount().unwrap(), 1);
    let raw = h2.into_slot();
    assert_eq!(
        vals.refcount(raw).unwrap(),
        1,
        "into_slot keeps the reference"
    );
    let h3 = Shared::from_owned(vals, raw);
    assert_same(&h3.load().unwrap(), &canon(&sample()), "adopted");
    drop(h3);
    assert_at(&vals, &base, "after the handles");
}

/// Wire bytes for `Tab { key: Ref(off) }`.
fn tab_with_ref(key: &str, off: u64) -> Vec<u8> {
    let mut w = Writer::default();
    w.u8(T_TAB);
    w.u32(1);
    w.u8(T_STR);
    w.u32(key.len() as u32);
    w.bytes(key.as_bytes());
    w.u8(T_REF);
    w.u64(off);
    w.buf
}

/// Wire bytes for `Arr [before, Ref(off), after]`.
fn arr_with_ref(off: u64) -> Vec<u8> {
    let mut w = Writer::default();
    w.u8(T_ARR);
    w.u32(3);
    w.bytes(&s("before").encode().unwrap());
    w.u8(T_REF);
    w.u64(off);
    w.bytes(&s("after").encode().unwrap());
    w.buf
}

#[test]
fn a_tab_in_two_containers_through_wire_refs_is_one_object_freed_after_both_parents() {
    let sc = Scratch::new("wireref", 256 * 1024);
    let vals = sc.values();
    let base = baseline(&vals);
    for parent_a_first in [true, false] {
        let child = vals
            .store(&Value::Tab(vec![(ks("v"), s("shared"))]))
            .unwrap();
        let p1 = vals.store_wire(&tab_with_ref("c", child.bits)).unwrap();
        let p2 = vals.store_wire(&arr_with_ref(child.bits)).unwrap();
        assert_eq!(vals.refcount(child).unwrap(), 3);
        // The same object, not a copy: a change is seen through both parents.
        let via1 = vals.tab_get(p1, KeyRef::str("c")).unwrap().unwrap();
        assert_eq!(via1, child);
        vals.release(via1).unwrap();
        vals.tab_set(
            child,
            KeyRef::str("added"),
            Slot {
                tag: T_INT,
                bits: 9,
            },
        )
        .unwrap();
        let want_child = Value::Tab(vec![(ks("v"), s("shared")), (ks("added"), Value::Int(9))]);
        assert_same(
            &vals.load(p2).unwrap(),
            &Value::Arr(vec![s("before"), want_child.clone(), s("after")]),
            "seen through the arr",
        );
        vals.release(child).unwrap();
        assert_eq!(vals.refcount(child).unwrap(), 2);
        let (first, second) = if parent_a_first { (p1, p2) } else { (p2, p1) };
        vals.release(first).unwrap();
        assert_eq!(
            vals.refcount(child).unwrap(),
            1,
            "the other parent keeps it"
        );
        assert_same(&vals.load(child).unwrap(), &want_child, "alive");
        vals.release(second).unwrap();
        assert_at(&vals, &base, "after both parents");
    }
}

#[test]
fn a_value_set_into_two_tabs_with_set_shared_is_freed_only_after_both() {
    let sc = Scratch::new("setshared", 256 * 1024);
    let vals = sc.values();
    let base = baseline(&vals);
    let a = Shared::new(vals, &Value::Tab(vec![])).unwrap();
    let b = Shared::new(vals, &Value::Tab(vec![(Key::Int(0), s("zero"))])).unwrap();
    let c = Shared::new(vals, &Value::Arr(vec![Value::Int(1)])).unwrap();
    a.set_shared(&ks("x"), &c).unwrap();
    b.set_shared(&Key::Int(1), &c).unwrap();
    assert_eq!(c.refcount().unwrap(), 3);
    let c_slot = c.slot();
    drop(c);
    assert_eq!(vals.refcount(c_slot).unwrap(), 2);
    vals.arr_push(
        c_slot,
        Slot {
            tag: T_INT,
            bits: 2,
        },
    )
    .unwrap();
    let want = Value::Arr(vec![Value::Int(1), Value::Int(2)]);
    assert_eq!(b.get(&Key::Int(1)).unwrap(), Some(want.clone()));
    drop(a);
    assert_eq!(vals.refcount(c_slot).unwrap(), 1);
    assert_eq!(b.get(&Key::Int(1)).unwrap(), Some(want.clone()));
    assert_eq!(
        b.load().unwrap(),
        Value::Tab(vec![(Key::Int(0), s("zero")), (Key::Int(1), want)])
    );
    drop(b);
    assert_at(&vals, &base, "after both tabs");
}

#[test]
fn a_wire_ref_to_no_live_object_fails_the_whole_store_without_leaking() {
    let sc = Scratch::new("badref", 256 * 1024);
    let vals = sc.values();
    let region_len = sc.region().span().len();
    // `freed`'s block is taken back at once as a raw block (not an object),
    // so the stores below cannot reuse it for an object of their own (a ref
    // to a reused block would name that new object, legitimately).
    let live = vals.store(&Value::Tab(vec![])).unwrap();
    let freed = vals.store(&s("gone, a string object")).unwrap();
    let fence = vals.store(&s("fence, a string object")).unwrap();
    vals.release(freed).unwrap();
    let raw = vals.pool().allocate(4).unwrap();
    assert_eq!(raw, freed.bits, "the freed block is reused first");
    let base = baseline(&vals);
    let pipe_dir = sc.region().info().pipe_dir_offset;
    for off in [
        0,
        1,
        16,
        4096,
        pipe_dir,
        freed.bits,
        live.bits + 16,
        live.bits + 1,
        live.bits - 16,
        region_len - 16,
        region_len,
        u64::MAX - 15,
    ] {
        for wire in [arr_with_ref(off), tab_with_ref("k", off)] {
            let e = vals.store_wire(&wire).expect_err(&format!(
                "a ref to {off} (live {}, freed {})",
                live.bits, freed.bits
            ));
            assert!(READ_ERRORS.contains(&e.code()), "ref to {off}: {e}");
            assert_at(&vals, &base, &format!("ref to {off}"));
        }
        assert!(vals.slot_of(off).is_err(), "slot_of({off})");
    }
    assert_eq!(vals.refcount(live).unwrap(), 1);
    // A ref is only meaningful inside a region: decoding one is refused.
    assert_eq!(
        code(Value::decode(&arr_with_ref(live.bits))),
        ErrorCode::InvalidArg
    );
    assert_eq!(vals.slot_of(live.bits).unwrap(), live);
    vals.release(live).unwrap();
    vals.release(fence).unwrap();
    vals.pool().free(raw).unwrap();
}

#[test]
fn releasing_a_freed_value_is_an_error_and_never_a_double_free() {
    let sc = Scratch::new("doublerel", 512 * 1024);
    let vals = sc.values();
    let base = baseline(&vals);
    let kinds = [
        s("a string"),
        Value::Bytes(vec![1; 100]),
        Value::BigInt(true, vec![1, 2]),
        Value::Typed(Elem::U8, vec![1, 2, 3]),
        Value::Tab(vec![]),
        Value::Arr(vec![]),
        sample(),
        Value::Arr(vec![sample(), s(&"z".repeat(500))]),
    ];
    for (i, v) in kinds.iter().enumerate() {
        // A neighbour on each side, so the freed block both does and does
        // not merge with free space depending on the case.
        let fence = (i % 2 == 0).then(|| vals.store(&s("fence")).unwrap());
        let before = baseline(&vals);
        let slot = vals.store(v).unwrap();
        vals.release(slot).unwrap();
        assert_at(&vals, &before, &format!("kind {i} freed"));
        for _ in 0..3 {
            let e = vals.release(slot).expect_err("released twice");
            assert!(READ_ERRORS.contains(&e.code()), "kind {i}: {e}");
            assert!(vals.retain(slot).is_err(), "kind {i}: retain after free");
            assert!(vals.load(slot).is_err(), "kind {i}: load after free");
            assert!(
                vals.refcount(slot).is_err(),
                "kind {i}: refcount after free"
            );
            assert!(
                vals.slot_of(slot.bits).is_err(),
                "kind {i}: slot_of after free"
            );
            assert_at(&vals, &before, &format!("kind {i} released again"));
        }
        if slot.tag == T_TAB {
            assert!(vals.tab_get(slot, KeyRef::str("name")).is_err());
            assert!(vals.tab_set(slot, KeyRef::Int(1), Slot::NONE).is_err());
            assert!(vals.tab_keys(slot).is_err());
        }
        if slot.tag == T_ARR {
            assert!(vals.arr_get(slot, 0).is_err());
            assert!(vals.arr_push(slot, Slot::NONE).is_err());
        }
        assert_at(&vals, &before, &format!("kind {i} used after free"));
        if let Some(f) = fence {
            vals.release(f).unwrap();
        }
    }
    assert_at(&vals, &base, "after all kinds");
}

#[test]
fn a_container_is_refused_as_its_own_element_and_the_reference_given_is_returned() {
    let sc = Scratch::new("selfref", 256 * 1024);
    let vals = sc.values();
    let base = baseline(&vals);
    let t = vals
        .store(&Value::Tab(vec![(ks("a"), Value::Int(1))]))
        .unwrap();
    vals.retain(t).unwrap();
    assert_eq!(
        code(vals.tab_set(t, KeyRef::str("me"), t)),
        ErrorCode::InvalidArg
    );
    assert_eq!(
        vals.refcount(t).unwrap(),
        1,
        "the moved-in reference was released"
    );
    vals.retain(t).unwrap();
    assert_eq!(
        code(vals.tab_set(t, KeyRef::str("a"), t)),
        ErrorCode::InvalidArg
    );
    assert_eq!(vals.refcount(t).unwrap(), 1);
    assert_eq!(vals.tab_keys(t).unwrap(), vec![ks("a")]);
    // Through the wire: a Tab built around a ref to itself cannot be named
    // before it exists, but a ref to an existing Tab stored into that Tab is
    // refused the same way.
    let h = Shared::from_owned(vals, t);
    assert_eq!(
        h.set_shared(&ks("me"), &h).unwrap_err().code(),
        ErrorCode::InvalidArg
    );
    assert_eq!(h.refcount().unwrap(), 1);
    assert_eq!(
        h.load().unwrap(),
        Value::Tab(vec![(ks("a"), Value::Int(1))])
    );
    drop(h);

    let a = vals.store(&Value::Arr(vec![Value::None])).unwrap();
    vals.retain(a).unwrap();
    assert_eq!(code(vals.arr_push(a, a)), ErrorCode::InvalidArg);
    vals.retain(a).unwrap();
    assert_eq!(code(vals.arr_set(a, 0, a)), ErrorCode::InvalidArg);
    vals.retain(a).unwrap();
    assert_eq!(code(vals.arr_set(a, 1, a)), ErrorCode::InvalidArg);
    assert_eq!(vals.refcount(a).unwrap(), 1);
    assert_eq!(vals.load(a).unwrap(), Value::Arr(vec![Value::None]));
    vals.release(a).unwrap();
    assert_at(&vals, &base, "after the refusals");
}

/// Only direct self-containment is refused; a cycle through two containers
/// can be made by hand. Loading it is an error (at the depth limit), not a
/// hang or a stack overflow, and breaking the cycle frees everything.
#[test]
fn a_cycle_through_two_containers_loads_as_an_error_and_can_be_broken() {
    let sc = Scratch::new("cycle", 256 * 1024);
    let vals = sc.values();
    let base = baseline(&vals);
    let t = vals.store(&Value::Tab(vec![])).unwrap();
    let a = vals.store(&Value::Arr(vec![s("in a")])).unwrap();
    vals.retain(a).unwrap();
    vals.tab_set(t, KeyRef::str("a"), a).unwrap();
    vals.retain(t).unwrap();
    vals.arr_push(a, t).unwrap();
    assert_eq!(code(vals.load(t)), ErrorCode::InvalidArg);
    assert_eq!(code(vals.load(a)), ErrorCode::InvalidArg);
    assert_eq!(
        vals.refcount(t).unwrap(),
        2,
        "failed loads gave back their references"
    );
    assert_eq!(vals.refcount(a).unwrap(), 2);
    let back = vals.arr_pop(a).unwrap().unwrap();
    assert_eq!(back, t);
    vals.release(back).unwrap();
    vals.release(a).unwrap();
    vals.release(t).unwrap();
    assert_at(&vals, &base, "after breaking the cycle");
}

// ---- 4. mutation semantics --------------------------------------------------

#[test]
fn tab_set_replacing_a_value_releases_the_old_one_and_keeps_the_pool_flat() {
    let sc = Scratch::new("replace", 512 * 1024);
    let vals = sc.values();
    let base = baseline(&vals);
    let t = vals
        .store(&Value::Tab(vec![(ks("k"), s(&"old ".repeat(250)))]))
        .unwrap();
    let old = vals.tab_get(t, KeyRef::str("k")).unwrap().unwrap();
    assert_eq!(vals.refcount(old).unwrap(), 2);
    vals.tab_set(t, KeyRef::str("k"), vals.store(&s("new")).unwrap())
        .unwrap();
    assert_eq!(vals.refcount(old).unwrap(), 1, "the tab's reference went");
    let blocks = vals.pool().stats().unwrap().blocks_used;
    vals.release(old).unwrap();
    assert_eq!(
        vals.pool().stats().unwrap().blocks_used,
        blocks - 1,
        "old value freed"
    );
    assert_eq!(vals.tab_keys(t).unwrap(), vec![ks("k")]);
    // Replacing over and over does not grow the pool. (Only the totals are
    // compared: with the tab alive, free space may be split differently.)
    let steady = vals.pool().stats().unwrap();
    let totals = |st: PoolStats| (st.bytes_used, st.blocks_used);
    for i in 0..200 {
        let v = match i % 4 {
            0 => sample(),
            1 => Value::Int(i),
            2 => s(&"r".repeat(i as usize)),
            _ => s("new"),
        };
        vals.tab_set(t, KeyRef::str("k"), vals.store(&v).unwrap())
            .unwrap();
    }
    assert_eq!(
        totals(vals.pool().stats().unwrap()),
        totals(steady),
        "after 200 replacements"
    );
    // The same through the Shared handle.
    let h = Shared::from_owned(vals, t);
    for v in [sample(), s("new")] {
        h.set(&ks("k"), &v).unwrap();
        assert_eq!(h.get(&ks("k")).unwrap(), Some(canon(&v)));
    }
    assert_eq!(
        totals(vals.pool().stats().unwrap()),
        totals(steady),
        "after Shared::set"
    );
    drop(h);
    assert_at(&vals, &base, "after release");
}

#[test]
fn tab_delete_removes_the_entry_and_frees_its_key_and_value() {
    let sc = Scratch::new("delete", 256 * 1024);
    let vals = sc.values();
    let base = baseline(&vals);
    let mut model = vec![
        (ks("a"), s("value of a")),
        (Key::Int(5), Value::Bytes(vec![5; 50])),
        (ks("c"), sample()),
        (Key::Int(-5), Value::None),
    ];
    let t = vals.store(&Value::Tab(model.clone())).unwrap();
    // Keys are typed: "5" is not 5.
    assert!(!vals.tab_delete(t, KeyRef::str("5")).unwrap());
    assert!(!vals.tab_delete(t, KeyRef::Int(6)).unwrap());
    assert_tab_is(vals, t, &model, "nothing deleted");
    for k in [ks("a"), Key::Int(5), ks("c"), Key::Int(-5)] {
        assert!(vals.tab_delete(t, (&k).into()).unwrap(), "{k:?}");
        assert!(!vals.tab_delete(t, (&k).into()).unwrap(), "{k:?} again");
        model_delete(&mut model, &k);
        assert_tab_is(vals, t, &model, &format!("deleted {k:?}"));
    }
    // All that is left is the tab: one block, its entries and index inline.
    assert_eq!(
        vals.pool().stats().unwrap().blocks_used,
        base.stats.blocks_used + 1
    );
    vals.tab_set(t, KeyRef::str("a"), vals.store(&s("again")).unwrap())
        .unwrap();
    assert_tab_is(vals, t, &[(ks("a"), s("again"))], "re-set after deletes");
    vals.release(t).unwrap();
    assert_at(&vals, &base, "after release");
}

#[test]
fn arr_set_replaces_below_len_appends_at_len_and_refuses_past_len() {
    let sc = Scratch::new("arrset", 256 * 1024);
    let vals = sc.values();
    let base = baseline(&vals);
    let a = vals
        .store(&Value::Arr(vec![Value::Int(0), s("one, as an object")]))
        .unwrap();
    let one = vals.arr_get(a, 1).unwrap().unwrap();
    vals.arr_set(a, 1, vals.store(&s("uno")).unwrap()).unwrap();
    assert_eq!(vals.refcount(one).unwrap(), 1, "replaced element released");
    vals.release(one).unwrap();
    vals.arr_set(a, 2, vals.store(&s("two")).unwrap()).unwrap();
    assert_eq!(vals.arr_len(a).unwrap(), 3);
    // Appending through arr_set also grows past the initial capacity.
    for i in 3..20 {
        vals.arr_set(
            a,
            i,
            Slot {
                tag: T_UINT,
                bits: i,
            },
        )
        .unwrap();
    }
    assert_eq!(vals.arr_len(a).unwrap(), 20);
    let before = baseline(&vals);
    for i in [21, 100, u64::MAX] {
        let v = vals.store(&s("orphan")).unwrap();
        assert_eq!(
            code(vals.arr_set(a, i, v)),
            ErrorCode::InvalidArg,
            "index {i}"
        );
        assert_at(
            &vals,
            &before,
            &format!("index {i}: the value was released"),
        );
        assert_eq!(vals.arr_get(a, i).unwrap(), None);
    }
    let mut want = vec![Value::Int(0), s("uno"), s("two")];
    want.extend((3..20).map(Value::UInt));
    assert_same(&vals.load(a).unwrap(), &Value::Arr(want), "after sets");
    vals.release(a).unwrap();
    assert_at(&vals, &base, "after release");
}

#[test]
fn arr_pop_moves_the_last_reference_out_to_the_caller() {
    let sc = Scratch::new("pop", 256 * 1024);
    let vals = sc.values();
    let base = baseline(&vals);
    let a = vals
        .store(&Value::Arr(vec![s("x"), sample(), Value::Int(3)]))
        .unwrap();
    let before = vals.pool().stats().unwrap();
    assert_eq!(
        vals.arr_pop(a).unwrap(),
        Some(Slot {
            tag: T_INT,
            bits: 3
        })
    );
    let p = vals.arr_pop(a).unwrap().unwrap();
    assert_eq!(p.tag, T_TAB);
    assert_eq!(
        vals.refcount(p).unwrap(),
        1,
        "moved, not copied or retained"
    );
    assert_eq!(
        vals.pool().stats().unwrap(),
        before,
        "popping frees nothing"
    );
    assert_eq!(vals.arr_len(a).unwrap(), 1);
    assert_same(&vals.load(p).unwrap(), &canon(&sample()), "popped value");
    vals.release(p).unwrap();
    let x = vals.arr_pop(a).unwrap().unwrap();
    assert_eq!(vals.load(x).unwrap(), s("x"));
    vals.release(x).unwrap();
    assert_eq!(vals.arr_pop(a).unwrap(), None);
    assert_eq!(vals.arr_len(a).unwrap(), 0);
    // Push after pop reuses the slots.
    vals.arr_push(a, vals.store(&s("back")).unwrap()).unwrap();
    assert_eq!(vals.load(a).unwrap(), Value::Arr(vec![s("back")]));
    vals.release(a).unwrap();
    assert_at(&vals, &base, "after release");
}

#[test]
fn a_value_read_out_stays_valid_after_its_container_drops_it() {
    let sc = Scratch::new("readout", 256 * 1024);
    let vals = sc.values();
    let base = baseline(&vals);
    let t = vals.store(&sample()).unwrap();
    let got = vals.tab_get(t, KeyRef::str("list")).unwrap().unwrap();
    assert!(vals.tab_delete(t, KeyRef::str("list")).unwrap());
    let list = canon(&sample());
    let Value::Tab(entries) = &list else {
        unreachable!()
    };
    let want = entries
        .iter()
        .find(|(k, _)| *k == ks("list"))
        .unwrap()
        .1
        .clone();
    assert_same(&vals.load(got).unwrap(), &want, "after delete");
    let e = vals.arr_get(got, 0).unwrap().unwrap();
    vals.arr_set(got, 0, vals.store(&s("replaced")).unwrap())
        .unwrap();
    assert_eq!(
        vals.load(e).unwrap(),
        Value::Int(1),
        "a scalar read is a copy"
    );
    vals.release(got).unwrap();

    // A snapshot holds its own references: emptying the tab leaves it valid.
    let snap = vals.tab_snapshot(t).unwrap();
    let keys = vals.tab_keys(t).unwrap();
    for k in &keys {
        assert!(vals.tab_delete(t, k.into()).unwrap());
    }
    assert_eq!(vals.tab_len(t).unwrap(), 0);
    let Value::Tab(entries) = canon(&sample()) else {
        unreachable!()
    };
    let expect: Vec<_> = entries
        .into_iter()
        .filter(|(k, _)| *k != ks("list"))
        .collect();
    assert_eq!(snap.len(), expect.len());
    for ((k, v), (wk, wv)) in snap.iter().zip(&expect) {
        let key = vals.load(*k).unwrap();
        match wk {
            Key::Str(x) => assert_eq!(key, s(x)),
            Key::Int(i) => assert_eq!(key, Value::Int(*i)),
        }
        assert_same(&vals.load(*v).unwrap(), wv, "snapshot value");
        vals.release(*k).unwrap();
        vals.release(*v).unwrap();
    }
    vals.release(t).unwrap();
    assert_at(&vals, &base, "after release");
}

/// Readers on other threads (each with its own mapping of the region) load
/// a Tab while a writer keeps replacing its values: every read is a whole,
/// consistent value, never a torn slot or a freed object.
#[test]
fn readers_see_whole_values_while_a_writer_replaces_them() {
    let sc = Scratch::new("threads", 4 << 20);
    let name = sc.region().name().to_string();
    let vals = sc.values();
    let base = baseline(&vals);
    let keys: Vec<String> = (0..8).map(|i| format!("k{i}")).collect();
    let t = vals
        .store(&Value::Tab(
            keys.iter().map(|k| (ks(k), Value::Int(-1))).collect(),
        ))
        .unwrap();
    let done = AtomicBool::new(false);
    let gen_value = |i: u64| match i % 3 {
        0 => Value::Int(i as i64),
        1 => s(&format!("s{i}")),
        _ => Value::Arr(vec![Value::Int(i as i64), s(&format!("s{i}"))]),
    };
    let consistent = |v: &Value| match v {
        Value::Int(_) => true,
        Value::Str(x) => x.starts_with('s') && x[1..].parse::<u64>().is_ok(),
        Value::Arr(items) => match items.as_slice() {
            [Value::Int(i), Value::Str(x)] => *x == format!("s{i}"),
            _ => false,
        },
        _ => false,
    };
    std::thread::scope(|scope| {
        let writer = scope.spawn(|| {
            let region = Region::attach(&name, &Default::default()).unwrap();
            let vals = region.values().unwrap();
            for i in 0..3000u64 {
                let k = &keys[(i % 8) as usize];
                vals.tab_set(t, KeyRef::str(k), vals.store(&gen_value(i)).unwrap())
                    .unwrap();
            }
            done.store(true, Relaxed);
        });
        let readers: Vec<_> = (0..2)
            .map(|r| {
                let (name, keys, done) = (&name, &keys, &done);
                scope.spawn(move || {
                    let region = Region::attach(name, &Default::default()).unwrap();
                    let vals = region.values().unwrap();
                    let mut reads = 0u64;
                    while !done.load(Relaxed) || reads < 100 {
                        if r == 0 {
                            let Value::Tab(entries) = vals.load(t).unwrap() else {
                                panic!("not a tab")
                            };
                            let got: Vec<Key> = entries.iter().map(|(k, _)| k.clone()).collect();
                            let want: Vec<Key> = keys.iter().map(|k| ks(k)).collect();
                            assert_eq!(got, want, "order kept by replacements");
                            for (_, v) in &entries {
                                assert!(consistent(v), "torn value {v:?}");
                            }
                        } else {
                            let k = &keys[(reads % 8) as usize];
                            let v = vals.tab_get(t, KeyRef::str(k)).unwrap().unwrap();
                            let loaded = vals.load(v).unwrap();
                            assert!(consistent(&loaded), "torn value {loaded:?}");
                            vals.release(v).unwrap();
                        }
                        reads += 1;
                    }
                })
            })
            .collect();
        writer.join().unwrap();
        for r in readers {
            r.join().unwrap();
        }
    });
    vals.release(t).unwrap();
    assert_at(&vals, &base, "after the threads");
}

// ---- 5. all or nothing on out-of-memory -------------------------------------

/// In a 64 KiB region, stores of growing size eventually fail; every failure
/// is OutOfMemory and leaves the pool exactly as before (whatever point of
/// the build it failed at), every success round-trips.
#[test]
fn a_store_too_big_for_a_small_region_fails_with_out_of_memory_and_leaks_nothing() {
    let sc = Scratch::new("oom", crate::region::MIN_REGION);
    let vals = sc.values();
    let shapes: Vec<Box<dyn Fn(usize) -> Value>> = vec![
        Box::new(|n| {
            Value::Tab(
                (0..n)
                    .map(|i| (Key::Str(format!("key-{i}")), s(&"x".repeat(90))))
                    .collect(),
            )
        }),
        Box::new(|n| {
            Value::Arr(
                (0..n)
                    .map(|i| {
                        Value::Tab(vec![
                            (ks("a"), s(&"y".repeat(60))),
                            (Key::Int(i as i64), Value::Bytes(vec![1; 30])),
                        ])
                    })
                    .collect(),
            )
        }),
        Box::new(|n| Value::Arr((0..n).map(|_| sample()).collect())),
        // Deep, and wider at every level as n grows.
        Box::new(|n| {
            let mut v = Value::None;
            for i in 0..n.min(MAX_DEPTH) {
                v = Value::Tab(vec![
                    (Key::Int(i as i64), v),
                    (ks("pad"), s(&"p".repeat(n))),
                ]);
            }
            v
        }),
        Box::new(|n| Value::Typed(Elem::F64, vec![0; n * 8 * 32])),
    ];
    // Then again with the pool fragmented by blocks held outside values.
    let pool = vals.pool();
    let mut holes = Vec::new();
    for fragmented in [false, true] {
        if fragmented {
            let blocks: Vec<u64> = (0..60)
                .map(|i| pool.allocate(16 + i * 24).unwrap())
                .collect();
            for (i, b) in blocks.into_iter().enumerate() {
                if i % 2 == 0 {
                    pool.free(b).unwrap();
                } else {
                    holes.push(b);
                }
            }
        }
        let base = baseline(&vals);
        for (k, shape) in shapes.iter().enumerate() {
            let (mut ok, mut oom) = (0, 0);
            for n in (1..=400).step_by(7) {
                let v = shape(n);
                let what = format!("shape {k} n {n} fragmented {fragmented}");
                match vals.store(&v) {
                    Ok(slot) => {
                        ok += 1;
                        assert_same(&vals.load(slot).unwrap(), &canon(&v), &what);
                        vals.release(slot).unwrap();
                    }
                    Err(e) => {
                        oom += 1;
                        assert_eq!(e.code(), ErrorCode::OutOfMemory, "{what}: {e}");
                    }
                }
                assert_at(&vals, &base, &what);
            }
            assert!(ok > 0 && oom > 0, "shape {k}: {ok} fitted, {oom} did not");
        }
    }
    for h in holes {
        pool.free(h).unwrap();
    }
}

/// Take every free byte of the pool; returns the blocks to give back.
fn fill_pool(pool: crate::pool::Pool<'_>) -> Vec<u64> {
    let mut held = Vec::new();
    for n in [4096u64, 256, 0] {
        while let Ok(b) = pool.allocate(n) {
            held.push(b);
        }
    }
    assert_eq!(pool.stats().unwrap().largest_free, 0);
    held
}

#[test]
fn out_of_memory_inside_tab_set_and_arr_push_leaves_the_container_unchanged() {
    let sc = Scratch::new("oomset", crate::region::MIN_REGION);
    let vals = sc.values();
    let pool = vals.pool();
    let base = baseline(&vals);
    // Full: 4 entries in a tab made for 4, 2 in an arr made for 2; a tab with
    // room for more entries; a value stored before the pool filled up.
    let full_tab_v = Value::Tab((0..4).map(|i| (Key::Int(i), Value::Int(i))).collect());
    let full_tab = vals.store(&full_tab_v).unwrap();
    let roomy = vals.tab_new(8).unwrap();
    vals.tab_set(roomy, KeyRef::Int(0), Slot::NONE).unwrap();
    let arr_v = Value::Arr(vec![s("a"), s("b")]);
    let arr = vals.store(&arr_v).unwrap();
    let spare = vals.store(&s(&"spare".repeat(20))).unwrap();
    let held = fill_pool(pool);
    let full = baseline(&vals);

    // Needs a bigger entries block: refused, the value's reference is gone.
    vals.retain(spare).unwrap();
    assert_eq!(
        code(vals.tab_set(full_tab, KeyRef::Int(9), spare)),
        ErrorCode::OutOfMemory
    );
    assert_eq!(vals.refcount(spare).unwrap(), 1);
    assert_eq!(
        code(vals.tab_set(full_tab, KeyRef::Int(9), Slot::NONE)),
        ErrorCode::OutOfMemory
    );
    assert_same(
        &vals.load(full_tab).unwrap(),
        &full_tab_v,
        "full tab unchanged",
    );
    // Needs a string key object: refused; an int key fits in the room left.
    assert_eq!(
        code(vals.tab_set(roomy, KeyRef::str("a new, long key"), Slot::NONE)),
        ErrorCode::OutOfMemory
    );
    assert_eq!(vals.tab_keys(roomy).unwrap(), vec![Key::Int(0)]);
    vals.tab_set(roomy, KeyRef::Int(1), Slot::NONE).unwrap();
    assert_eq!(
        vals.tab_keys(roomy).unwrap(),
        vec![Key::Int(0), Key::Int(1)]
    );
    // Replacing needs no memory at all.
    vals.retain(spare).unwrap();
    vals.tab_set(full_tab, KeyRef::Int(3), spare).unwrap();
    vals.tab_set(
        full_tab,
        KeyRef::Int(3),
        Slot {
            tag: T_INT,
            bits: 3,
        },
    )
    .unwrap();
    assert_same(&vals.load(full_tab).unwrap(), &full_tab_v, "replaced back");
    // Arr growth refused; replacing in place works.
    vals.retain(spare).unwrap();
    assert_eq!(code(vals.arr_push(arr, spare)), ErrorCode::OutOfMemory);
    assert_eq!(
        code(vals.arr_set(arr, 2, Slot::NONE)),
        ErrorCode::OutOfMemory
    );
    assert_eq!(vals.refcount(spare).unwrap(), 1);
    assert_same(&vals.load(arr).unwrap(), &arr_v, "arr unchanged");
    // A store of anything that needs memory fails whole.
    assert_eq!(code(vals.store(&sample())), ErrorCode::OutOfMemory);
    let h = Shared::from_owned(vals, full_tab);
    assert_eq!(
        h.set(&ks("big"), &sample()).unwrap_err().code(),
        ErrorCode::OutOfMemory
    );
    assert_same(&h.load().unwrap(), &full_tab_v, "after Shared::set");
    assert_eq!(
        baseline(&vals).stats.blocks_used,
        full.stats.blocks_used,
        "nothing allocated by the refusals"
    );
    drop(h);
    for b in held {
        pool.free(b).unwrap();
    }
    for slot in [roomy, arr, spare] {
        vals.release(slot).unwrap();
    }
    assert_at(&vals, &base, "after release");
}

#[test]
fn containers_asked_for_impossible_capacities_fail_with_out_of_memory() {
    let sc = Scratch::new("hugecap", 256 * 1024);
    let vals = sc.values();
    let base = baseline(&vals);
    for cap in [u64::MAX, u64::MAX / 16, u64::MAX / 40 + 1, 1 << 40] {
        assert_eq!(code(vals.tab_new(cap)), ErrorCode::OutOfMemory, "tab {cap}");
        assert_eq!(code(vals.arr_new(cap)), ErrorCode::OutOfMemory, "arr {cap}");
        assert_at(&vals, &base, &format!("capacity {cap}"));
    }
}

// ---- 6. damage --------------------------------------------------------------

/// Where a stored value lives, found by walking it.
#[derive(Default)]
struct Layout {
    /// Byte ranges damage may hit: object headers and bodies, entries,
    /// index and element blocks. Container lock words are left out: a lock
    /// word naming a live thread is a held lock, and waiting for it is right.
    data: Vec<(u64, u64)>,
    /// Container fields holding block offsets (entries, index, elems).
    pointers: Vec<(u64, u64)>,
    /// The pool's 16-byte header in front of each of those blocks.
    block_headers: Vec<(u64, u64)>,
    tabs: Vec<(Slot, Vec<Key>)>,
    arrs: Vec<(Slot, u64)>,
    leaves: Vec<Slot>,
}

fn body_u64(vals: &Values<'_>, off: u64, field: usize) -> u64 {
    vals.span
        .u64_at(off + OBJ_HEADER + field as u64)
        .unwrap()
        .load(Relaxed)
}

fn layout(vals: Values<'_>, root: Slot) -> Layout {
    let mut l = Layout::default();
    let mut seen = HashSet::new();
    let mut todo = vec![root];
    let mut refs = Vec::new();
    while let Some(slot) = todo.pop() {
        if !slot.is_object() || !seen.insert(slot.bits) {
            continue;
        }
        let off = slot.bits;
        let lock = std::mem::size_of::<crate::lock::ShmMutex>() as u64;
        l.data.push((off, OBJ_HEADER));
        match slot.tag {
            T_TAB => {
                use std::mem::offset_of;
                let b = off + OBJ_HEADER;
                l.data
                    .push((b + lock, offset_of!(TabBody, entries) as u64 - lock));
                l.pointers
                    .push((b + offset_of!(TabBody, entries) as u64, 16));
                l.data.push((b + offset_of!(TabBody, index_cap) as u64, 8));
                let cap = body_u64(&vals, off, offset_of!(TabBody, cap));
                if cap > 0 {
                    let entries = body_u64(&vals, off, offset_of!(TabBody, entries));
                    let index = body_u64(&vals, off, offset_of!(TabBody, index));
                    let index_cap = body_u64(&vals, off, offset_of!(TabBody, index_cap));
                    l.data.push((entries, cap * ENTRY_SIZE));
                    l.data.push((index, index_cap * 4));
                    if entries != off + crate::value::TAB_OBJ_SIZE {
                        // a grown block's header
                        l.data.push((entries - 32, 32));
                    }
                }
                l.tabs.push((slot, vals.tab_keys(slot).unwrap()));
                for (k, v) in vals.tab_snapshot(slot).unwrap() {
                    todo.extend([k, v]);
                    refs.extend([k, v]);
                }
            }
            T_ARR => {
                use std::mem::offset_of;
                let b = off + OBJ_HEADER;
                l.data
                    .push((b + lock, offset_of!(ArrBody, elems) as u64 - lock));
                l.pointers.push((b + offset_of!(ArrBody, elems) as u64, 8));
                let cap = body_u64(&vals, off, offset_of!(ArrBody, cap));
                if cap > 0 {
                    let elems = body_u64(&vals, off, offset_of!(ArrBody, elems));
                    l.data.push((elems - 16, 16 + cap * SLOT_SIZE));
                }
                l.arrs.push((slot, vals.arr_len(slot).unwrap()));
                for v in vals.arr_snapshot(slot).unwrap() {
                    todo.push(v);
                    refs.push(v);
                }
            }
            _ => {
                let (_, n) = vals.data(slot).unwrap();
                if n > 0 {
                    l.data.push((off + OBJ_HEADER, n));
                }
                l.leaves.push(slot);
            }
        }
    }
    for r in refs {
        vals.release(r).unwrap();
    }
    let header = crate::pool::HEADER;
    l.block_headers = seen.iter().map(|&off| (off - header, header)).collect();
    for (t, _) in &l.tabs {
        use std::mem::offset_of;
        if body_u64(&vals, t.bits, offset_of!(TabBody, cap)) > 0 {
            for f in [offset_of!(TabBody, entries), offset_of!(TabBody, index)] {
                l.block_headers
                    .push((body_u64(&vals, t.bits, f) - header, header));
            }
        }
    }
    for (a, _) in &l.arrs {
        use std::mem::offset_of;
        if body_u64(&vals, a.bits, offset_of!(ArrBody, cap)) > 0 {
            let elems = body_u64(&vals, a.bits, offset_of!(ArrBody, elems));
            l.block_headers.push((elems - header, header));
        }
    }
    l.block_headers.sort_unstable();
    l
}

/// Damage `ranges` in one of several ways, chosen by `rng`.
fn damage(vals: &Values<'_>, rng: &mut Rng, ranges: &[(u64, u64)], others: &[u64]) {
    let (start, len) = ranges[rng.below(ranges.len() as u64) as usize];
    let at = start + rng.below(len);
    let word = at & !7;
    match rng.below(6) {
        0 => vals.span.write(at, &[rng.next() as u8]).unwrap(),
        1 => {
            let mut b = [0];
            vals.span.read(at, &mut b).unwrap();
            vals.span.write(at, &[b[0] ^ (1 << rng.below(8))]).unwrap();
        }
        2 => vals.span.u64_at(word).unwrap().store(rng.next(), Relaxed),
        3 => {
            let interesting = [0, 1, 2, 7, 16, u32::MAX as u64, u64::MAX, 1 << 63, 1 << 32];
            let v = interesting[rng.below(interesting.len() as u64) as usize];
            vals.span.u64_at(word).unwrap().store(v, Relaxed);
        }
        4 => {
            let v = vals.span.u64_at(word).unwrap().load(Relaxed);
            let delta = [1u64, 16, 40, 8, u64::MAX, u64::MAX - 15][rng.below(6) as usize];
            vals.span
                .u64_at(word)
                .unwrap()
                .store(v.wrapping_add(delta), Relaxed);
        }
        _ => {
            // Another object's offset, where an offset or a length belongs.
            let v = if others.is_empty() {
                0
            } else {
                others[rng.below(others.len() as u64) as usize]
            };
            vals.span.u64_at(word).unwrap().store(v, Relaxed);
        }
    }
}

/// Run every read on the (possibly damaged) value, then release the root
/// and the extra references; returns how many calls gave an error.
fn read_everything(
    vals: Values<'_>,
    root: Slot,
    l: &Layout,
    held: &[Slot],
    rng: &mut Rng,
    errors: &Cell<usize>,
) {
    let r = READ_ERRORS;
    let n = errors;
    let load_and_drop = |v: Slot, what: &str| {
        tally(n, vals.load(v), r, what);
        let mut w = Writer::default();
        tally(n, vals.load_wire(v, &mut w), r, what);
        tally(n, vals.refcount(v), r, what);
        if v.is_object() {
            tally(n, vals.slot_of(v.bits), r, what);
        }
        if matches!(v.tag, T_STR | T_BYTES | T_BIGINT | T_TYPED) {
            tally(n, vals.data(v), r, what);
        }
        if v.tag == T_TYPED {
            tally(n, vals.typed_info(v), r, what);
        }
    };
    load_and_drop(root, "root");
    for (t, keys) in &l.tabs {
        tally(n, vals.tab_len(*t), r, "tab_len");
        tally(n, vals.tab_keys(*t), r, "tab_keys");
        for k in keys.iter().chain([&Key::Int(123_456), &ks("absent")]) {
            tally(n, vals.tab_has(*t, k.into()), r, "tab_has");
            if let Some(Some(v)) = tally(n, vals.tab_get(*t, k.into()), r, "tab_get") {
                load_and_drop(v, "tab_get value");
                tally(n, vals.release(v), r, "release tab_get value");
            }
        }
        load_and_drop(*t, "tab");
    }
    for &(a, len) in &l.arrs {
        tally(n, vals.arr_len(a), r, "arr_len");
        for i in 0..len + 2 {
            if let Some(Some(v)) = tally(n, vals.arr_get(a, i), r, "arr_get") {
                load_and_drop(v, "arr_get value");
                tally(n, vals.release(v), r, "release arr_get value");
            }
        }
        load_and_drop(a, "arr");
    }
    for &leaf in &l.leaves {
        load_and_drop(leaf, "leaf");
    }
    // Release the root and the extra references in a random order.
    let mut all: Vec<Slot> = held.to_vec();
    all.push(root);
    while !all.is_empty() {
        let s = all.swap_remove(rng.below(all.len() as u64) as usize);
        tally(n, vals.release(s), r, "release");
    }
}

/// Store the sample with a deleted entry (a tombstone) in its top Tab and
/// take one extra reference to every container and leaf in it.
fn stored_sample(vals: Values<'_>) -> (Slot, Layout, Vec<Slot>) {
    let root = vals.store(&sample()).unwrap();
    assert!(vals.tab_delete(root, KeyRef::str("f")).unwrap());
    vals.tab_set(
        root,
        KeyRef::str("after"),
        vals.store(&s("tombstone value")).unwrap(),
    )
    .unwrap();
    let l = layout(vals, root);
    let mut held = Vec::new();
    for s in l
        .tabs
        .iter()
        .map(|t| t.0)
        .chain(l.arrs.iter().map(|a| a.0))
        .chain(l.leaves.iter().copied())
    {
        if s != root {
            vals.retain(s).unwrap();
            held.push(s);
        }
    }
    (root, l, held)
}

/// Run `f(seed, errors)` for each seed, naming the seed if it panics;
/// returns how many seeds saw at least one error.
fn for_seeds(seeds: std::ops::Range<u64>, f: impl Fn(u64, &Cell<usize>)) -> usize {
    let mut hit = 0;
    for seed in seeds {
        let errors = Cell::new(0);
        if let Err(p) = catch_unwind(AssertUnwindSafe(|| f(seed, &errors))) {
            let msg = p
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            panic!("seed {seed}: {msg}");
        }
        hit += usize::from(errors.get() > 0);
    }
    hit
}

/// The harness itself: on an undamaged value every call succeeds (so an
/// error in the damage tests is the damage's doing), and the releases at
/// its end bring the pool back exactly.
#[test]
fn the_damage_harness_sees_no_error_on_an_undamaged_value_and_releases_it_all() {
    let sc = Scratch::new("dmgnone", 256 * 1024);
    let vals = sc.values();
    let base = baseline(&vals);
    let (root, l, held) = stored_sample(vals);
    assert_eq!(
        (l.tabs.len(), l.arrs.len()),
        (3, 3),
        "the sample's containers"
    );
    assert!(l.leaves.len() >= 8, "its strings, keys and blobs");
    let errors = Cell::new(0);
    read_everything(vals, root, &l, &held, &mut Rng(0), &errors);
    assert_eq!(errors.get(), 0);
    assert_at(&vals, &base, "after the reads");
    let (root, l, held) = stored_sample(vals);
    mutate_everything(vals, &l, &errors);
    read_everything(vals, root, &l, &held, &mut Rng(1), &errors);
    assert_eq!(errors.get(), 0);
    assert_at(&vals, &base, "after the changes and reads");
}

#[test]
fn random_damage_to_stored_objects_gives_errors_on_read_and_release_never_panics() {
    let hit = for_seeds(0..300, |seed, errors| {
        let sc = Scratch::new("dmgread", 256 * 1024);
        let vals = sc.values();
        let (root, l, held) = stored_sample(vals);
        let mut rng = Rng(seed);
        let mut ranges = l.data.clone();
        ranges.extend(&l.pointers);
        ranges.extend(&l.block_headers);
        let others: Vec<u64> = l.leaves.iter().chain(&held).map(|s| s.bits).collect();
        for _ in 0..1 + rng.below(4) {
            damage(&vals, &mut rng, &ranges, &others);
        }
        read_everything(vals, root, &l, &held, &mut rng, errors);
        // Whatever happened, the pool's own bookkeeping is still readable.
        let _ = vals.pool().check();
    });
    assert!(hit >= 100, "only {hit} of 300 seeds hit anything");
}

/// Change every container of the (possibly damaged) value: replace, delete,
/// add enough keys to rebuild each Tab, push, set and pop in each Arr.
fn mutate_everything(vals: Values<'_>, l: &Layout, n: &Cell<usize>) {
    let w = WRITE_ERRORS;
    let new_str = |x: &str| tally(n, vals.store(&s(x)), w, "store");
    for (t, keys) in &l.tabs {
        for (i, k) in keys.iter().enumerate() {
            if i % 2 == 0 {
                if let Some(v) = new_str("replacement") {
                    tally(n, vals.tab_set(*t, k.into(), v), w, "tab_set existing");
                }
            } else {
                tally(n, vals.tab_delete(*t, k.into()), w, "tab_delete");
            }
        }
        // Enough new keys to make the tab grow (and rebuild) at least once.
        for i in 0..12 {
            let k = format!("new-{i}");
            if let Some(v) = new_str(&k) {
                tally(n, vals.tab_set(*t, KeyRef::str(&k), v), w, "tab_set new");
            }
            tally(
                n,
                vals.tab_set(*t, KeyRef::Int(1000 + i), Slot::NONE),
                w,
                "tab_set int",
            );
        }
        tally(
            n,
            vals.tab_delete(*t, KeyRef::str("new-3")),
            w,
            "tab_delete new",
        );
    }
    for &(a, _) in &l.arrs {
        if let Some(v) = new_str("pushed") {
            tally(n, vals.arr_push(a, v), w, "arr_push");
        }
        if let Some(v) = new_str("set") {
            tally(n, vals.arr_set(a, 0, v), w, "arr_set 0");
        }
        for i in 0..6 {
            tally(
                n,
                vals.arr_push(
                    a,
                    Slot {
                        tag: T_INT,
                        bits: i,
                    },
                ),
                w,
                "arr_push int",
            );
        }
        if let Some(Some(p)) = tally(n, vals.arr_pop(a), w, "arr_pop") {
            tally(n, vals.release(p), w, "release popped");
        }
        if let Some(len) = tally(n, vals.arr_len(a), w, "arr_len") {
            tally(n, vals.arr_set(a, len, Slot::NONE), w, "arr_set at len");
        }
    }
}

#[test]
fn random_damage_to_container_sizes_and_slots_gives_errors_on_mutation_never_panics() {
    let hit = for_seeds(1000..1300, |seed, errors| {
        let sc = Scratch::new("dmgwrite", 256 * 1024);
        let vals = sc.values();
        let (root, l, held) = stored_sample(vals);
        let mut rng = Rng(seed);
        // Not the block offsets: writes through a redirected block pointer
        // may land anywhere in the region, lock words of other objects
        // included (see Layout::data).
        let others: Vec<u64> = l.leaves.iter().chain(&held).map(|s| s.bits).collect();
        for _ in 0..1 + rng.below(4) {
            damage(&vals, &mut rng, &l.data, &others);
        }
        mutate_everything(vals, &l, errors);
        read_everything(vals, root, &l, &held, &mut rng, errors);
        let _ = vals.pool().check();
    });
    assert!(hit >= 100, "only {hit} of 300 seeds hit anything");
}

#[test]
fn random_truncated_or_altered_wire_input_is_refused_and_leaves_the_pool_at_baseline() {
    let sc = Scratch::new("badwire", 1 << 20);
    let vals = sc.values();
    let base = baseline(&vals);
    let good = sample().encode().unwrap();
    // Every proper prefix is refused, whatever it had built so far.
    for cut in 0..good.len() {
        let e = vals.store_wire(&good[..cut]).expect_err("truncated");
        assert_eq!(e.code(), ErrorCode::InvalidArg, "cut at {cut}");
        assert_at(&vals, &base, &format!("cut at {cut}"));
    }
    // Trailing bytes: the complete value is built, then dropped again.
    let mut long = good.clone();
    long.push(T_NONE);
    assert_eq!(code(vals.store_wire(&long)), ErrorCode::InvalidArg);
    assert_at(&vals, &base, "trailing bytes");
    let crafted: Vec<(&str, Vec<u8>)> = vec![
        ("empty", vec![]),
        ("unknown tag", vec![99]),
        ("tag 0", vec![0]),
        (
            "count beyond input",
            vec![T_ARR, 0xff, 0xff, 0xff, 0xff, T_NONE],
        ),
        (
            "tab count beyond input",
            vec![T_TAB, 0xff, 0xff, 0xff, 0x7f],
        ),
        ("string count beyond input", vec![T_STR, 9, 0, 0, 0, b'a']),
        ("bad utf-8", vec![T_STR, 2, 0, 0, 0, 0xff, 0xfe]),
        (
            "bad utf-8 key",
            vec![T_TAB, 1, 0, 0, 0, T_STR, 1, 0, 0, 0, 0xff, T_NONE],
        ),
        ("bool key", vec![T_TAB, 1, 0, 0, 0, T_BOOL, 1, T_NONE]),
        (
            "uint key",
            [vec![T_TAB, 1, 0, 0, 0, T_UINT], vec![0; 8], vec![T_NONE]].concat(),
        ),
        ("unknown element type", vec![T_TYPED, 11, 1, 0, 0, 0, 0]),
        ("element type 0", vec![T_TYPED, 0, 0, 0, 0, 0]),
        (
            "typed count beyond input",
            vec![T_TYPED, 10, 2, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8],
        ),
        ("short int", vec![T_INT, 1, 2, 3]),
        ("ref cut short", vec![T_REF, 1, 2]),
        (
            "bad tail after good entries",
            [
                vec![T_ARR, 3, 0, 0, 0],
                s("one").encode().unwrap(),
                sample().encode().unwrap(),
                vec![T_STR, 1, 0, 0, 0, 0x80],
            ]
            .concat(),
        ),
    ];
    for (what, bytes) in crafted {
        let e = vals.store_wire(&bytes).expect_err(what);
        assert_eq!(e.code(), ErrorCode::InvalidArg, "{what}: {e}");
        assert_at(&vals, &base, what);
    }
    // Random bytes, and the good encoding with a few bytes changed: refused
    // or stored, and after releasing whatever was stored, nothing is left.
    let mut rng = Rng(77);
    for i in 0..3000 {
        let bytes = if i % 2 == 0 {
            let n = rng.below(64) as usize;
            let mut b = rng.bytes(n);
            if let Some(first) = b.first_mut() {
                *first = [T_TAB, T_ARR, T_STR, T_TYPED, T_BIGINT, *first][rng.below(6) as usize];
            }
            b
        } else {
            let mut b = good.clone();
            for _ in 0..1 + rng.below(3) {
                let at = rng.below(b.len() as u64) as usize;
                b[at] = rng.next() as u8;
            }
            b
        };
        match vals.store_wire(&bytes) {
            Ok(slot) => {
                tolerable(vals.load(slot), &[ErrorCode::InvalidArg], "load");
                vals.release(slot).unwrap();
            }
            Err(e) => assert!(
                [
                    ErrorCode::InvalidArg,
                    ErrorCode::Corrupt,
                    ErrorCode::OutOfMemory
                ]
                .contains(&e.code()),
                "input {i}: {e}"
            ),
        }
        assert_at(&vals, &base, &format!("input {i}"));
    }
}

// ---- damage found while writing these tests (regressions) ------------------

fn set_tab_field(vals: &Values<'_>, t: Slot, field: usize, v: u64) {
    vals.span
        .u64_at(t.bits + OBJ_HEADER + field as u64)
        .unwrap()
        .store(v, Relaxed);
}

#[test]
fn a_tab_claiming_a_huge_capacity_is_reported_corrupt() {
    let sc = Scratch::new("hugetab", 256 * 1024);
    let vals = sc.values();
    let base = baseline(&vals);
    let t = vals.store(&Value::Tab(vec![(ks("a"), s("b"))])).unwrap();
    let cap_field = std::mem::offset_of!(TabBody, cap);
    for cap in [u64::MAX, 1 << 63, (1 << 63) + 1] {
        set_tab_field(&vals, t, cap_field, cap);
        assert_eq!(code(vals.tab_len(t)), ErrorCode::Corrupt, "cap {cap}");
        assert_eq!(code(vals.tab_get(t, KeyRef::str("a"))), ErrorCode::Corrupt);
        assert_eq!(code(vals.load(t)), ErrorCode::Corrupt);
        assert_eq!(
            code(vals.tab_set(t, KeyRef::Int(1), Slot::NONE)),
            ErrorCode::Corrupt
        );
    }
    set_tab_field(&vals, t, cap_field, 1);
    vals.release(t).unwrap();
    assert_at(&vals, &base, "after release");
}

#[test]
fn deleting_from_a_tab_whose_count_was_zeroed_is_an_error_that_changes_nothing() {
    let sc = Scratch::new("zerocount", 256 * 1024);
    let vals = sc.values();
    let base = baseline(&vals);
    let v = Value::Tab(vec![(ks("a"), s("b")), (Key::Int(2), Value::Int(3))]);
    let t = vals.store(&v).unwrap();
    let count_field = std::mem::offset_of!(TabBody, count);
    set_tab_field(&vals, t, count_field, 0);
    assert_eq!(
        code(vals.tab_delete(t, KeyRef::str("a"))),
        ErrorCode::Corrupt
    );
    set_tab_field(&vals, t, count_field, 2);
    assert_same(&vals.load(t).unwrap(), &v, "unchanged");
    vals.release(t).unwrap();
    assert_at(&vals, &base, "after release");
}

/// A count lower than the live entries must not make a rebuild copy more
/// entries than its new block holds (which would overwrite whatever block
/// follows it in the region).
#[test]
fn growing_a_tab_whose_count_understates_its_entries_writes_nothing_outside_its_blocks() {
    let sc = Scratch::new("lowcount", 256 * 1024);
    let vals = sc.values();
    let base = baseline(&vals);
    let v = Value::Tab((0..4).map(|i| (Key::Int(i), Value::Int(i))).collect());
    let t = vals.store(&v).unwrap();
    let count_field = std::mem::offset_of!(TabBody, count);
    for count in [0, 1] {
        set_tab_field(&vals, t, count_field, count);
        // Fences after whatever the rebuild would allocate.
        let fences: Vec<Slot> = (0..8).map(|_| vals.store(&s("fence")).unwrap()).collect();
        let before = baseline(&vals);
        let e = vals
            .tab_set(t, KeyRef::Int(99), Slot::NONE)
            .expect_err("a count too low");
        assert_eq!(e.code(), ErrorCode::Corrupt, "count {count}: {e}");
        assert_at(
            &vals,
            &before,
            &format!("count {count}: nothing allocated or overwritten"),
        );
        for f in fences {
            assert_eq!(vals.load(f).unwrap(), s("fence"));
            vals.release(f).unwrap();
        }
    }
    set_tab_field(&vals, t, count_field, 4);
    assert_same(&vals.load(t).unwrap(), &v, "unchanged");
    vals.release(t).unwrap();
    assert_at(&vals, &base, "after release");
}

// ---- crash recovery of containers -------------------------------------------
//
// A writer SIGKILLed inside a container mutation leaves the container's lock
// held by a dead thread and its fields part way through a change. These tests
// build each such state exactly (a real mutation, then the fields it would
// not yet have written put back), make the lock look held by a dead owner,
// and check that the next user gets a consistent container. (The
// cross-process version, with real kills, is tests/chaos.rs.)

/// The body fields after the lock, in the order a grow publishes them
/// (entries first, index last) — values: [count, used, cap, entries, index, index_cap].
fn tab_fields(vals: Values<'_>, t: Slot) -> [u64; 6] {
    let b = vals.tab_body(t).unwrap();
    [
        &b.count,
        &b.used,
        &b.cap,
        &b.entries,
        &b.index,
        &b.index_cap,
    ]
    .map(|f| f.load(Relaxed))
}

fn int(i: i64) -> Slot {
    Slot {
        tag: T_INT,
        bits: i as u64,
    }
}

fn int_keys(keys: &[i64]) -> Vec<Key> {
    keys.iter().map(|&k| Key::Int(k)).collect()
}

#[test]
fn a_table_grow_cut_short_after_any_of_its_stores_is_recovered() {
    let sc = Scratch::new("growcut", 1 << 20);
    let vals = sc.values();
    let base = baseline(&vals);
    // Integer keys and values own no objects, so nothing leaks and the pool
    // must come back exactly.
    for published in 0..=5usize {
        let t = vals.tab_new(4).unwrap();
        for k in 0..4 {
            vals.tab_set(t, KeyRef::Int(k), int(k * 10)).unwrap();
        }
        assert!(vals.tab_delete(t, KeyRef::Int(1)).unwrap());
        let old = tab_fields(vals, t);
        // This set grows the table (used == cap), then appends key 4.
        vals.tab_set(t, KeyRef::Int(4), int(40)).unwrap();
        let grown = tab_fields(vals, t);
        assert_ne!(grown[3], old[3], "the entries moved to a grown block");
        // What the grow itself published: three live entries.
        let b = vals.tab_body(t).unwrap();
        let after_grow = [3, 3, grown[2], grown[3], grown[4], grown[5]];
        // Publication order after `entries`: index_cap, cap, used, count, index.
        let order: [(usize, &std::sync::atomic::AtomicU64); 5] = [
            (5, &b.index_cap),
            (2, &b.cap),
            (1, &b.used),
            (0, &b.count),
            (4, &b.index),
        ];
        for (i, (field, word)) in order.iter().enumerate() {
            let v = if i < published {
                after_grow[*field]
            } else {
                old[*field]
            };
            word.store(v, Relaxed);
        }
        b.lock.hold_as_dead_for_test();
        let what = format!("grow cut after {published} of its 5 later stores");
        assert_eq!(vals.tab_keys(t).unwrap(), int_keys(&[0, 2, 3]), "{what}");
        assert_eq!(vals.tab_len(t).unwrap(), 3, "{what}");
        assert_eq!(vals.tab_get(t, KeyRef::Int(4)).unwrap(), None, "{what}");
        assert_eq!(
            vals.tab_get(t, KeyRef::Int(3)).unwrap(),
            Some(int(30)),
            "{what}"
        );
        // And it goes on working: the append again, more growth.
        for k in 4..40 {
            vals.tab_set(t, KeyRef::Int(k), int(k * 10)).unwrap();
        }
        assert_eq!(vals.tab_len(t).unwrap(), 39, "{what}");
        vals.release(t).unwrap();
        assert_at(&vals, &base, &what);
    }
}

#[test]
fn a_table_append_not_yet_committed_is_dropped_and_the_index_rebuilt() {
    let sc = Scratch::new("appendcut", 1 << 20);
    let vals = sc.values();
    let t = vals.tab_new(8).unwrap();
    for k in 0..3 {
        vals.tab_set(t, KeyRef::Int(k), int(k)).unwrap();
    }
    let before = tab_fields(vals, t);
    vals.tab_set(t, KeyRef::Int(7), int(7)).unwrap();
    // Killed after the index cell, before `used` (and `count`) went up.
    let b = vals.tab_body(t).unwrap();
    b.used.store(before[1], Relaxed);
    b.count.store(before[0], Relaxed);
    // Unrecovered, the table is inconsistent: its index names an entry
    // past `used`.
    assert_eq!(
        code(vals.tab_get(t, KeyRef::Int(7))),
        ErrorCode::Corrupt,
        "the crafted state is the broken one"
    );
    b.lock.hold_as_dead_for_test();
    assert_eq!(vals.tab_get(t, KeyRef::Int(7)).unwrap(), None);
    assert_eq!(vals.tab_keys(t).unwrap(), int_keys(&[0, 1, 2]));
    vals.tab_set(t, KeyRef::Int(7), int(70)).unwrap();
    assert_eq!(vals.tab_get(t, KeyRef::Int(7)).unwrap(), Some(int(70)));
    vals.release(t).unwrap();
}

#[test]
fn a_torn_replacement_or_half_delete_in_a_table_reads_as_none_or_gone() {
    let sc = Scratch::new("torn", 1 << 20);
    let vals = sc.values();
    let base = baseline(&vals);
    let t = vals.tab_new(4).unwrap();
    let long = vals
        .store(&s("a string long enough to be an object"))
        .unwrap();
    let other = vals
        .store(&s("another string long enough for a block"))
        .unwrap();
    vals.tab_set(t, KeyRef::Str(b"a"), long).unwrap();
    vals.tab_set(t, KeyRef::Str(b"b"), other).unwrap();
    vals.tab_set(t, KeyRef::Str(b"c"), int(3)).unwrap();
    let b = vals.tab_body(t).unwrap();
    let entries = b.entries.load(Relaxed);
    // "a": killed inside a replacement, after its tag went to empty.
    vals.span.u64_at(entries + 24).unwrap().store(0, Relaxed);
    // "b": killed inside a delete, after the key was emptied.
    vals.span
        .u64_at(entries + ENTRY_SIZE + 8)
        .unwrap()
        .store(0, Relaxed);
    b.lock.hold_as_dead_for_test();
    assert_eq!(
        vals.tab_keys(t).unwrap(),
        vec![ks("a"), ks("c")],
        "the half-deleted key is gone"
    );
    assert_eq!(vals.tab_len(t).unwrap(), 2);
    let a = vals.tab_get(t, KeyRef::Str(b"a")).unwrap().unwrap();
    assert_eq!(a, Slot::NONE, "the torn value reads as None");
    // The two strings were in the dead writer's hands: unreachable now (a
    // repair frees them); here we give them back by hand.
    vals.release(t).unwrap();
    vals.release(long).unwrap();
    vals.release(other).unwrap();
    assert_at(&vals, &base, "after the lost strings are released");
}

#[test]
fn a_list_grow_or_replacement_cut_short_is_recovered() {
    let sc = Scratch::new("arrcut", 1 << 20);
    let vals = sc.values();
    let base = baseline(&vals);
    let a = vals.arr_new(2).unwrap();
    vals.arr_push(a, int(1)).unwrap();
    vals.arr_push(a, int(2)).unwrap();
    // Grows to 4, then appends: killed after `elems`, before `cap` and `len`.
    vals.arr_push(a, int(3)).unwrap();
    let b = vals.arr_body(a).unwrap();
    b.cap.store(2, Relaxed);
    b.len.store(2, Relaxed);
    assert_eq!(
        code(vals.arr_len(a)),
        ErrorCode::Corrupt,
        "unrecovered, the new block's size disagrees with cap"
    );
    b.lock.hold_as_dead_for_test();
    assert_eq!(vals.arr_len(a).unwrap(), 2);
    assert_eq!(b.cap.load(Relaxed), 4);
    // Element 1 torn in a replacement.
    let elems = b.elems.load(Relaxed);
    vals.span
        .u64_at(elems + SLOT_SIZE)
        .unwrap()
        .store(0, Relaxed);
    b.lock.hold_as_dead_for_test();
    assert_eq!(vals.arr_get(a, 1).unwrap(), Some(Slot::NONE));
    assert_eq!(vals.arr_get(a, 0).unwrap(), Some(int(1)));
    for i in 0..20 {
        vals.arr_push(a, int(i)).unwrap();
    }
    assert_eq!(vals.arr_len(a).unwrap(), 22);
    vals.release(a).unwrap();
    assert_at(&vals, &base, "list released");
}

#[test]
fn a_container_dropped_while_its_dead_writer_held_the_lock_frees_its_blocks() {
    let sc = Scratch::new("dropdead", 1 << 20);
    let vals = sc.values();
    let base = baseline(&vals);
    // A grown table and a list, each left with an append cut short.
    let t = vals.tab_new(2).unwrap();
    for k in 0..10 {
        vals.tab_set(t, KeyRef::Int(k), int(k)).unwrap();
    }
    let before = tab_fields(vals, t);
    vals.tab_set(t, KeyRef::Int(10), int(10)).unwrap();
    let tb = vals.tab_body(t).unwrap();
    if tab_fields(vals, t)[3] == before[3] {
        // (no grow on this append: cut it before `used`)
        tb.used.store(before[1], Relaxed);
        tb.count.store(before[0], Relaxed);
    }
    tb.lock.hold_as_dead_for_test();
    let a = vals.arr_new(1).unwrap();
    for i in 0..5 {
        vals.arr_push(a, int(i)).unwrap();
    }
    let ab = vals.arr_body(a).unwrap();
    ab.len.store(4, Relaxed);
    ab.lock.hold_as_dead_for_test();
    // The last references go: the drop recovers, then frees every block.
    vals.release(t).unwrap();
    vals.release(a).unwrap();
    assert_at(&vals, &base, "both dropped after recovery");
}

#[test]
fn a_table_copied_out_by_its_only_holder_is_recovered_first_if_a_dead_writer_held_its_lock() {
    let sc = Scratch::new("ownedcut", 1 << 20);
    let vals = sc.values();
    let base = baseline(&vals);
    let t = vals.tab_new(4).unwrap();
    for k in 0..4 {
        vals.tab_set(t, KeyRef::Int(k), int(k * 10)).unwrap();
    }
    let old = tab_fields(vals, t);
    // This set grows the table; cut it right after the store of `entries`.
    vals.tab_set(t, KeyRef::Int(4), int(40)).unwrap();
    let b = vals.tab_body(t).unwrap();
    for (field, word) in [(5, &b.index_cap), (2, &b.cap), (1, &b.used), (0, &b.count)] {
        word.store(old[field], Relaxed);
    }
    b.index.store(old[4], Relaxed);
    assert_eq!(vals.refcount(t).unwrap(), 1, "the reader's reference only");
    let mut w = Writer::default();
    assert_eq!(
        code(vals.load_wire_owned(t, &mut w)),
        ErrorCode::Corrupt,
        "the crafted state is the broken one"
    );
    b.lock.hold_as_dead_for_test();
    let mut w = Writer::default();
    vals.load_wire_owned(t, &mut w).unwrap();
    let want = Value::Tab((0..4).map(|k| (Key::Int(k), Value::Int(k * 10))).collect());
    assert_eq!(Value::decode(&w.buf).unwrap(), want);
    assert_eq!(b.lock.holder(), 0, "recovered and let go");
    vals.release(t).unwrap();
    assert_at(&vals, &base, "released after the copy");
}

/// Found by fuzz_values: a list or table slot gone stale (its block freed
/// and reused for another kind of object, or its link damaged) with a value
/// that now sits at the same offset was refused as "cannot contain itself",
/// ERR_SHM_INVALID_ARG, as if the caller had put a container into itself.
/// The same offset under another kind is another object: the container is
/// what is wrong, and checking it says so (ERR_SHM_CORRUPT). A container
/// given itself is still the caller's error.
#[test]
fn a_stale_container_slot_is_not_taken_for_the_container_containing_itself() {
    let sc = Scratch::new("stale-self", 256 * 1024);
    let vals = sc.values();
    let base = baseline(&vals);
    let text = || {
        vals.store(&s("a string long enough to be an object"))
            .unwrap()
    };
    let v = text();
    let as_arr = Slot {
        tag: T_ARR,
        bits: v.bits,
    };
    let as_tab = Slot {
        tag: T_TAB,
        bits: v.bits,
    };
    // (each call takes over a reference to the value it is given, and
    // releases it on error)
    vals.retain(v).unwrap();
    vals.retain(v).unwrap();
    assert_eq!(code(vals.arr_set(as_arr, 0, v)), ErrorCode::Corrupt);
    assert_eq!(code(vals.arr_push(as_arr, v)), ErrorCode::Corrupt);
    assert_eq!(
        code(vals.tab_set(as_tab, KeyRef::str("k"), v)),
        ErrorCode::Corrupt
    );
    assert_at(
        &vals,
        &base,
        "the string was released by the three failed calls",
    );

    let a = vals.arr_new(1).unwrap();
    vals.retain(a).unwrap();
    assert_eq!(code(vals.arr_push(a, a)), ErrorCode::InvalidArg);
    vals.retain(a).unwrap();
    assert_eq!(code(vals.arr_set(a, 0, a)), ErrorCode::InvalidArg);
    assert_eq!(
        vals.refcount(a).unwrap(),
        1,
        "each failed call released its reference"
    );
    vals.release(a).unwrap();
    let t = vals.tab_new(1).unwrap();
    vals.retain(t).unwrap();
    assert_eq!(
        code(vals.tab_set(t, KeyRef::str("k"), t)),
        ErrorCode::InvalidArg
    );
    vals.release(t).unwrap();
    assert_at(&vals, &base, "after the containers");
}
