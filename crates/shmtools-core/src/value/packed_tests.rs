//! Packed packets (T_PACKED): which values go in packed, that every kind
//! comes back the same through each dequeue form, that the validating skip
//! agrees with the decoder, and that damaged packed bytes are reported as
//! ERR_SHM_CORRUPT (never a panic) with the pool back at its baseline.

use std::time::Duration;

use super::wire::{Reader, Writer, MAX_DEPTH, T_REF};
use super::*;
use crate::pool::{PoolCheck, PoolStats};
use crate::queue::Queue;
use crate::scratch::Scratch;

const NOW: Option<Duration> = Some(Duration::ZERO);

fn base(vals: &Values<'_>) -> (PoolStats, PoolCheck) {
    (vals.pool().stats().unwrap(), vals.pool().check().unwrap())
}

fn s(x: &str) -> Value {
    Value::Str(x.to_string())
}

/// One of every kind, inside a table (with string and integer keys) and a
/// list, nested.
fn every_kind() -> Value {
    let leaves = vec![
        Value::None,
        Value::Bool(true),
        Value::Int(-5),
        Value::UInt(u64::MAX),
        Value::F64(f64::from_bits(0x7ff8_0000_0000_0001)),
        Value::F32(-0.0),
        s("short"),
        s("héllo wörld, long enough to be an object 😀"),
        Value::Bytes(vec![0, 1, 255]),
        Value::BigInt(true, vec![1, 2, 3, 4, 5, 6, 7, 8, 9]),
        Value::Typed(Elem::F64, 3.25f64.to_le_bytes().to_vec()),
        Value::Tab(vec![]),
        Value::Arr(vec![]),
    ];
    Value::Tab(vec![
        (Key::Str("list".into()), Value::Arr(leaves.clone())),
        (
            Key::Int(-7),
            Value::Tab(
                leaves
                    .into_iter()
                    .enumerate()
                    .map(|(i, v)| (Key::Str(format!("k{i}")), v))
                    .collect(),
            ),
        ),
    ])
}

/// Values the producer stores packed, and some it does not.
fn packed_cases() -> Vec<Value> {
    vec![
        every_kind(),
        Value::Arr(vec![every_kind(), Value::Int(1)]),
        Value::Tab(vec![]),
        Value::Arr(vec![]),
        Value::Tab(vec![
            (Key::Str("seq".into()), Value::Int(1)),
            (Key::Str("payload".into()), s(&"x".repeat(32))),
        ]),
    ]
}

fn unpacked_cases() -> Vec<Value> {
    vec![
        Value::Int(3),
        s("a top-level string is its own object already"),
        Value::Bytes(vec![9; 100]),
        // over the threshold
        Value::Arr(vec![Value::Bytes(vec![7; PACKED_MAX])]),
    ]
}

/// The queue's packets now, as slots (without taking them).
/// Equal bit for bit (NaN payloads included), through the encoding.
#[track_caller]
fn same(got: &Value, want: &Value) {
    assert_eq!(
        got.encode().unwrap(),
        want.encode().unwrap(),
        "{got:?} vs {want:?}"
    );
}

fn packets(q: &Queue<'_>) -> Vec<Slot> {
    q.parts().unwrap().1
}

fn queue(vals: Values<'_>, cap: u64) -> Queue<'_> {
    Queue::open(vals, Queue::create(vals, cap).unwrap()).unwrap()
}

/// Store `v` as a queue packet through the pool and enqueue it: the path a
/// value takes when it does not go inline (over [`crate::queue::INLINE_MAX`],
/// or with the byte ring out of room). (`enqueue_value` sends small values
/// inline; see tests/queue_model.rs.)
fn send_packed(vals: Values<'_>, q: &Queue<'_>, v: &Value) {
    let slot = vals.store_packet(&v.encode().unwrap()).unwrap();
    assert!(q.enqueue(slot, NOW).unwrap());
}

#[test]
fn small_tables_and_lists_go_in_packed_and_the_rest_as_objects() {
    let sc = Scratch::new("packed-which", 4 << 20);
    let vals = sc.values();
    let q = queue(vals, 16);
    for v in packed_cases() {
        send_packed(vals, &q, &v);
        let p = packets(&q);
        assert_eq!(p.last().unwrap().tag, T_PACKED, "{v:?}");
        q.drain().unwrap();
    }
    for v in unpacked_cases() {
        send_packed(vals, &q, &v);
        let p = packets(&q);
        // (a scalar packet is no object, so parts() lists nothing)
        assert!(p.iter().all(|s| s.tag != T_PACKED), "{v:?}");
        q.drain().unwrap();
    }
    // A value holding a reference to an existing object is built, never
    // packed (its bytes would name an object nothing holds).
    let held = vals
        .store(&s("an object to refer to, long enough"))
        .unwrap();
    let mut w = Writer::default();
    w.u8(T_ARR);
    w.u32(1);
    w.u8(T_REF);
    w.u64(held.bits);
    let slot = vals.store_packet(&w.buf).unwrap();
    assert_eq!(slot.tag, T_ARR);
    assert_eq!(vals.refcount(held).unwrap(), 2);
    vals.release(slot).unwrap();
    vals.release(held).unwrap();
}

#[test]
fn every_kind_comes_back_the_same_through_every_dequeue_form() {
    let sc = Scratch::new("packed-trip", 4 << 20);
    let vals = sc.values();
    let q = queue(vals, 16);
    let before = base(&vals);
    let cases: Vec<Value> = packed_cases().into_iter().chain(unpacked_cases()).collect();
    for v in &cases {
        // copy form, one value
        assert!(q.enqueue_value(v, NOW).unwrap());
        same(&q.dequeue_value(NOW).unwrap().unwrap(), v);
        // handle form: the real objects, never a packed handle
        assert!(q.enqueue_value(v, NOW).unwrap());
        let h = q.dequeue_shared(NOW).unwrap().unwrap();
        assert_ne!(h.slot().tag, T_PACKED);
        assert_eq!(h.slot().tag == T_TAB, matches!(v, Value::Tab(_)));
        same(&h.load().unwrap(), v);
        drop(h);
        assert_eq!(base(&vals), before, "{v:?}");
    }
    // The batch forms: built from concatenated encodings, copied out as
    // concatenated encodings (packed ones verbatim) or taken as handles.
    let bytes: Vec<u8> = cases.iter().flat_map(|v| v.encode().unwrap()).collect();
    assert_eq!(
        q.try_enqueue_wire_many(&bytes, cases.len()).unwrap(),
        cases.len()
    );
    let mut w = Writer::default();
    assert_eq!(q.dequeue_many_wire(64, NOW, &mut w).unwrap(), cases.len());
    assert_eq!(
        w.buf, bytes,
        "the copy form gives back the encodings as sent"
    );
    assert!(w.non_ascii, "a string in the batch is not ASCII");
    assert_eq!(base(&vals), before);
    assert_eq!(
        q.try_enqueue_wire_many(&bytes, cases.len()).unwrap(),
        cases.len()
    );
    let hs = q.dequeue_many_shared(64, NOW).unwrap();
    assert_eq!(hs.len(), cases.len());
    for (h, v) in hs.iter().zip(&cases) {
        assert_ne!(h.slot().tag, T_PACKED);
        same(&h.load().unwrap(), v);
    }
    drop(hs);
    // and the one-at-a-time handle form, raw slots (try_dequeue)
    assert_eq!(
        q.try_enqueue_wire_many(&bytes, cases.len()).unwrap(),
        cases.len()
    );
    while let Some(s) = {
        let _b = vals.busy();
        q.try_dequeue().unwrap()
    } {
        assert_ne!(s.tag, T_PACKED);
        vals.release(s).unwrap();
    }
    assert_eq!(base(&vals), before);
}

#[test]
fn the_skip_agrees_with_the_decoder_on_every_cut_and_altered_byte() {
    let good = every_kind().encode().unwrap();
    let agree = |buf: &[u8], what: &str| {
        let mut r = Reader::new(buf);
        let skipped = r.skip_value();
        let skip_ok = matches!(skipped, Ok(k) if !k.refs) && r.at_end();
        assert_eq!(skip_ok, Value::decode(buf).is_ok(), "{what}: {buf:?}");
    };
    agree(&good, "intact");
    for cut in 0..good.len() {
        agree(&good[..cut], &format!("cut at {cut}"));
    }
    for i in 0..good.len() {
        for b in [0u8, 1, 7, 10, 11, 13, 99, 0x80, 0xff] {
            let mut bad = good.clone();
            bad[i] = b;
            agree(&bad, &format!("byte {i} set to {b}"));
        }
    }
    // depth: exactly the decoder's limit
    for depth in [MAX_DEPTH - 1, MAX_DEPTH, MAX_DEPTH + 1, MAX_DEPTH + 5] {
        let mut buf = vec![];
        for _ in 0..depth {
            buf.extend([T_ARR, 1, 0, 0, 0]);
        }
        buf.push(T_NONE);
        agree(&buf, &format!("depth {depth}"));
    }
    // a huge depth with no recursion to overflow
    let deep: Vec<u8> = std::iter::repeat_n([T_ARR, 1, 0, 0, 0], 1 << 16)
        .flatten()
        .collect();
    assert!(Reader::new(&deep).skip_value().is_err());
}

/// Enqueue `v` packed, damage its body with `f`, and check every dequeue
/// form reports ERR_SHM_CORRUPT (or, if the damage happens to leave a valid
/// value, succeeds), never panics, and leaves the pool at its baseline.
fn damaged(vals: Values<'_>, q: &Queue<'_>, v: &Value, f: &dyn Fn(&mut Vec<u8>, u64)) -> usize {
    let before = base(&vals);
    let mut errors = 0;
    let mut failed = [false; 5];
    for (form, failed) in failed.iter_mut().enumerate() {
        send_packed(vals, q, v);
        let p = *packets(q).last().unwrap();
        assert_eq!(p.tag, T_PACKED);
        let (off, n) = vals.data(p).unwrap();
        let mut body = vec![0; n as usize];
        vals.span.read(off, &mut body).unwrap();
        f(&mut body, p.bits);
        vals.span.write(off, &body).unwrap();
        let r = match form {
            0 => q.dequeue_value(NOW).map(|_| ()),
            1 => q.dequeue_shared(NOW).map(|_| ()),
            2 => q
                .dequeue_many_wire(8, NOW, &mut Writer::default())
                .map(|_| ()),
            3 => q.dequeue_many_shared(8, NOW).map(|_| ()),
            // the copy form of the binding: copied out unchecked, checked
            // by the shape coding
            _ => {
                let (mut w, mut ends) = (Writer::default(), Vec::new());
                w.u8(0);
                q.dequeue_many_wire_unchecked(8, NOW, &mut w, &mut ends)
                    .and_then(|_| shape_code_packets(&w.buf, 1, &ends))
                    .map(|_| ())
            }
        };
        if let Err(e) = r {
            assert_eq!(e.code(), ErrorCode::Corrupt, "form {form}: {e}");
            errors += 1;
            *failed = true;
        }
        assert!(q.is_empty(), "form {form}: the packet was taken");
        assert_eq!(base(&vals), before, "form {form}: pool");
    }
    assert_eq!(
        failed[4], failed[2],
        "the coder's check agrees with the copy-out check"
    );
    errors
}

#[test]
fn a_damaged_packed_packet_is_corrupt_in_every_dequeue_form_and_is_freed() {
    let sc = Scratch::new("packed-damage", 4 << 20);
    let vals = sc.values();
    let q = queue(vals, 4);
    let v = every_kind();
    // specific damage: an unknown tag, a count beyond the body, bad UTF-8,
    // a reference smuggled in, a key that is a list
    assert_eq!(damaged(vals, &q, &v, &|b, _| b[0] = 99), 5);
    assert_eq!(
        damaged(vals, &q, &v, &|b, _| b[1..5]
            .copy_from_slice(&u32::MAX.to_le_bytes())),
        5
    );
    let at =
        |b: &Vec<u8>, needle: &[u8]| b.windows(needle.len()).position(|w| w == needle).unwrap();
    assert_eq!(
        damaged(vals, &q, &v, &|b, _| {
            let i = at(b, "héllo".as_bytes());
            b[i + 1] = 0xff;
        }),
        5
    );
    assert_eq!(
        damaged(vals, &q, &v, &|b, _| {
            let i = at(b, &[T_STR, 4, 0, 0, 0, b'l']);
            b[i] = T_REF;
        }),
        5
    );
    assert_eq!(
        damaged(vals, &q, &v, &|b, _| {
            let i = at(b, &[T_STR, 4, 0, 0, 0, b'l']);
            b[i] = T_ARR;
        }),
        5
    );
    // random damage: never a panic, never another error code
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut errors = 0;
    for _ in 0..200 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let seed = x;
        errors += damaged(vals, &q, &v, &|b, _| {
            let i = (seed % b.len() as u64) as usize;
            b[i] = (seed >> 32) as u8;
        });
    }
    assert!(errors > 0, "some random damage was caught");
    // damage to the header: a length past its block
    send_packed(vals, &q, &v);
    let p = *packets(&q).last().unwrap();
    vals.header_at(p.bits)
        .unwrap()
        .len
        .store(1 << 40, std::sync::atomic::Ordering::Relaxed);
    assert_eq!(q.dequeue_value(NOW).unwrap_err().code(), ErrorCode::Corrupt);
}

#[test]
fn a_packed_object_is_no_value_a_caller_can_name() {
    let sc = Scratch::new("packed-name", 1 << 20);
    let vals = sc.values();
    let q = queue(vals, 4);
    send_packed(vals, &q, &every_kind());
    let p = *packets(&q).last().unwrap();
    assert_eq!(
        vals.slot_of(p.bits).unwrap_err().code(),
        ErrorCode::InvalidArg
    );
    q.drain().unwrap();
}

/// A batch whose values are one block each (tables and lists up to
/// PACKED_MAX, bytes), too large to go inline, gets them carved back to
/// back; other values (and small ones, sent inline) break the run and are
/// built as before; a bad value in a run leaves nothing behind; and a pool
/// with no free block large enough for the whole run stores it block by
/// block.
#[test]
fn runs_of_one_block_values_are_carved_back_to_back_and_come_back_the_same() {
    let sc = Scratch::new("packed-runs", 4 << 20);
    let vals = sc.values();
    let q = queue(vals, 64);
    let before = base(&vals);
    let big = crate::queue::INLINE_MAX;
    let row = |i: i64| {
        Value::Tab(vec![
            (Key::Str("seq".into()), Value::Int(i)),
            (Key::Str("payload".into()), s(&"x".repeat(big))),
        ])
    };
    let cases = vec![
        row(1),
        Value::Bytes(vec![1; big + 1]),
        Value::Bytes(vec![9; big + 64]),
        row(2),
        Value::Int(5),
        row(3),
        row(4),
        s("a top-level string is its own object already"),
        Value::Arr(vec![Value::Bytes(vec![7; PACKED_MAX])]),
        Value::Bytes(vec![2; 10]),
        row(5),
    ];
    let bytes: Vec<u8> = cases.iter().flat_map(|v| v.encode().unwrap()).collect();
    assert_eq!(
        q.try_enqueue_wire_many(&bytes, cases.len()).unwrap(),
        cases.len()
    );
    // The first four are one run: each block starts where the one before ends.
    let objs = packets(&q);
    for w in objs[..4].windows(2) {
        let cap = vals.pool().capacity(w[0].bits).unwrap();
        assert_eq!(w[0].bits + cap + 16, w[1].bits, "{objs:?}");
    }
    assert_eq!(objs[1].tag, T_BYTES);
    let mut w = Writer::default();
    assert_eq!(q.dequeue_many_wire(64, NOW, &mut w).unwrap(), cases.len());
    assert_eq!(w.buf, bytes);
    assert_eq!(base(&vals), before);

    // A bad value inside a run: an error, and nothing of the batch is left.
    let mut bad: Vec<u8> = [row(1), Value::Bytes(vec![3; big + 8])]
        .iter()
        .flat_map(|v| v.encode().unwrap())
        .collect();
    let cut = bad.len();
    bad.extend([T_BYTES, 0xff, 0xff, 0, 0]); // claims 65535 bytes
    assert_eq!(
        q.try_enqueue_wire_many(&bad, 3).unwrap_err().code(),
        ErrorCode::InvalidArg
    );
    assert_eq!(q.len(), 0);
    assert_eq!(base(&vals), before);
    // After a small value that went inline, the bad one ends the call with
    // the count sent so far, and a retry with the rest meets the error.
    let mut mixed = Value::Bytes(vec![3; 8]).encode().unwrap();
    let first = mixed.len();
    mixed.extend_from_slice(&bad[cut..]);
    assert_eq!(q.try_enqueue_wire_many(&mixed, 2).unwrap(), 1);
    assert_eq!(
        q.try_enqueue_wire_many(&mixed[first..], 1)
            .unwrap_err()
            .code(),
        ErrorCode::InvalidArg
    );
    assert_eq!(q.drain().unwrap(), 1);
    assert_eq!(base(&vals), before);

    // Fragment the pool so that no free block holds 40 rows at once.
    let pool = vals.pool();
    let mut held = Vec::new();
    while let Ok(p) = pool.allocate(4000) {
        held.push(p);
    }
    let (keep, free): (Vec<_>, Vec<_>) = held.iter().enumerate().partition(|(i, _)| i % 2 == 0);
    for (_, &p) in &free {
        pool.free(p).unwrap();
    }
    assert!(pool.stats().unwrap().largest_free < 40 * big as u64);
    let rows: Vec<Value> = (0..40).map(row).collect();
    let bytes: Vec<u8> = rows.iter().flat_map(|v| v.encode().unwrap()).collect();
    assert_eq!(
        q.try_enqueue_wire_many(&bytes, rows.len()).unwrap(),
        rows.len()
    );
    let mut w = Writer::default();
    assert_eq!(q.dequeue_many_wire(64, NOW, &mut w).unwrap(), rows.len());
    assert_eq!(w.buf, bytes);
    for (_, &p) in &keep {
        pool.free(p).unwrap();
    }
    assert_eq!(base(&vals), before);
}
