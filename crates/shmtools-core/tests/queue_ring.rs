//! The queue's byte ring, in one process: small values go inline (their
//! encoding copied into the ring, no pool block), larger ones and ones met
//! with the ring out of room go through the pool, and every dequeue form
//! gives them all back in order; bytes a killed producer left in the ring
//! come back; and damage to the ring's counters, links or records is
//! ERR_SHM_CORRUPT, with a damaged record taken out so the pipe goes on.
//!
//! Many processes at once on inline packets: chaos.rs and
//! pipes_cross_process.rs (their messages are small enough to go inline).

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::time::Duration;

use shmtools_core::queue::{ring_size_for, INLINE_MAX, RING_START};
use shmtools_core::value::wire::Writer;
use shmtools_core::value::{shape_code_packets, T_INLINE, T_PACKED};
use shmtools_core::{Directory, ErrorCode, Key, Queue, Region, Value};

mod common;

use common::{
    baseline, create, unique_name, RemoveOnDrop, Rng, Q_FRONT, Q_FRONT_POS, Q_HEAD, Q_RING,
    Q_RING_READ, Q_RING_READ_SEEN, Q_RING_SIZE, Q_RING_WRITE, Q_SLOTS, Q_TAIL,
};

const NOW: Option<Duration> = Some(Duration::ZERO);

fn word(q: &Queue<'_>, field: u64) -> u64 {
    q.values()
        .pool()
        .span()
        .u64_at(q.offset() + field)
        .unwrap()
        .load(Ordering::Relaxed)
}

fn set_word(q: &Queue<'_>, field: u64, v: u64) {
    q.values()
        .pool()
        .span()
        .u64_at(q.offset() + field)
        .unwrap()
        .store(v, Ordering::Relaxed)
}

/// The slot (tag, bits) holding the packet at the head.
fn head_slot(q: &Queue<'_>) -> (u64, u64) {
    slot_at(q, word(q, Q_HEAD))
}

/// The slot (tag, bits) of the packet at queue position `pos`: the front
/// slot if it went into an empty queue, else its ring slot.
fn slot_at(q: &Queue<'_>, pos: u64) -> (u64, u64) {
    let span = q.values().pool().span();
    let at = slot_offset(q, pos);
    let get = |o: u64| span.u64_at(o).unwrap().load(Ordering::Relaxed);
    (get(at), get(at + 8))
}

/// Where the slot of the packet at queue position `pos` is.
fn slot_offset(q: &Queue<'_>, pos: u64) -> u64 {
    if word(q, Q_FRONT_POS) == pos {
        q.offset() + Q_FRONT
    } else {
        word(q, Q_SLOTS) + (pos % q.capacity()) * 16
    }
}

/// A message of `n` payload bytes, numbered `i`.
fn message(i: u64, n: usize) -> Value {
    Value::Tab(vec![
        (Key::Str("seq".into()), Value::Int(i as i64)),
        (
            Key::Str("payload".into()),
            Value::Bytes(vec![(i % 251) as u8; n]),
        ),
    ])
}

fn fresh(name: &str, capacity: u64) -> (RemoveOnDrop, Region, u64) {
    let name = unique_name("qring-", name);
    let rm = RemoveOnDrop(name.clone());
    let region = create(&name, 8 << 20);
    let off = {
        let dir = Directory::open(&region).unwrap();
        dir.create("p", capacity).unwrap().0.queue
    };
    (rm, region, off)
}

#[test]
fn small_values_go_inline_large_ones_through_the_pool_and_all_come_back_in_order() {
    for capacity in [1u64, 4, 16, 64] {
        let (_rm, region, off) = fresh(&format!("model-{capacity}"), capacity);
        let vals = region.values().unwrap();
        let q = Queue::open(vals, off).unwrap();
        let ring_size = word(&q, Q_RING_SIZE);
        assert_eq!(ring_size, ring_size_for(capacity));
        let before = baseline(&vals);
        let mut rng = Rng(0x1a11e + capacity);
        let mut model: VecDeque<Value> = VecDeque::new();
        let (mut next, mut inline_seen, mut pool_seen) = (0u64, 0, 0);
        for step in 0..6000 {
            let ctx = format!("capacity {capacity}, step {step}");
            // Mostly small (inline), some near the limit (the ring fills),
            // some over it (packed), some scalars.
            let size = |rng: &mut Rng| match rng.below(10) {
                0 => INLINE_MAX + 100,
                1..=2 => INLINE_MAX - 40,
                _ => rng.below(200) as usize,
            };
            match rng.below(7) {
                0 | 1 => {
                    let v = if rng.below(8) == 0 {
                        Value::Int(next as i64)
                    } else {
                        message(next, size(&mut rng))
                    };
                    let ok = q.enqueue_value(&v, NOW).unwrap();
                    assert_eq!(ok, (model.len() as u64) < capacity, "{ctx}");
                    if ok {
                        let tag = tail_tag(&q);
                        if tag == T_INLINE as u64 {
                            inline_seen += 1;
                        } else if tag == T_PACKED as u64 {
                            pool_seen += 1;
                        }
                        model.push_back(v);
                        next += 1;
                    }
                }
                2 => {
                    let k = 1 + rng.below(2 * capacity) as usize;
                    let batch: Vec<Value> = (0..k)
                        .map(|j| message(next + j as u64, size(&mut rng)))
                        .collect();
                    let bytes: Vec<u8> = batch.iter().flat_map(|v| v.encode().unwrap()).collect();
                    let n = q.try_enqueue_wire_many(&bytes, k).unwrap();
                    assert_eq!(n, k.min((capacity - model.len() as u64) as usize), "{ctx}");
                    model.extend(batch.into_iter().take(n));
                    next += n as u64;
                }
                3 => {
                    let got = q.dequeue_value(NOW).unwrap();
                    assert_eq!(got, model.pop_front(), "{ctx}");
                }
                4 => {
                    let max = 1 + rng.below(2 * capacity) as usize;
                    let mut w = Writer::default();
                    let n = q.dequeue_many_wire(max, NOW, &mut w).unwrap();
                    let want: Vec<u8> = (0..n)
                        .flat_map(|_| model.pop_front().unwrap().encode().unwrap())
                        .collect();
                    assert_eq!(w.buf, want, "{ctx}");
                }
                5 => {
                    // The binding's copy form: bytes after what the writer
                    // held, each packet's end noted, checked by the coder.
                    let max = 1 + rng.below(2 * capacity) as usize;
                    let mut w = Writer::default();
                    w.u8(0);
                    let mut ends = Vec::new();
                    let n = q
                        .dequeue_many_wire_unchecked(max, NOW, &mut w, &mut ends)
                        .unwrap();
                    assert_eq!(ends.len(), n, "{ctx}");
                    let mut want = vec![0u8];
                    let mut want_ends = Vec::new();
                    for _ in 0..n {
                        want.extend(model.pop_front().unwrap().encode().unwrap());
                        want_ends.push(want.len());
                    }
                    assert_eq!((&w.buf, &ends), (&want, &want_ends), "{ctx}");
                    if n > 0 {
                        shape_code_packets(&w.buf, 1, &ends).unwrap();
                    }
                }
                _ => {
                    let max = 1 + rng.below(2 * capacity) as usize;
                    for h in q.dequeue_many_shared(max, NOW).unwrap() {
                        assert_ne!(h.slot().tag, T_INLINE, "{ctx}: a handle is to objects");
                        assert_eq!(Some(h.load().unwrap()), model.pop_front(), "{ctx}");
                    }
                }
            }
            assert_eq!(q.len(), model.len() as u64, "{ctx}");
            let (read, write) = (word(&q, Q_RING_READ), word(&q, Q_RING_WRITE));
            assert!(
                read <= write && write - read <= ring_size,
                "{ctx}: {read}..{write}"
            );
        }
        assert!(
            inline_seen > 100,
            "capacity {capacity}: {inline_seen} inline"
        );
        assert!(
            pool_seen > 10,
            "capacity {capacity}: {pool_seen} through the pool"
        );
        assert!(
            word(&q, Q_RING_WRITE) > 4 * ring_size,
            "the ring wrapped round several times"
        );
        assert_eq!(q.drain().unwrap(), model.len() as u64);
        assert_eq!(baseline(&vals), before, "capacity {capacity}");
        region.pool().unwrap().check().unwrap();
    }
}

#[test]
fn with_the_ring_full_a_batch_goes_on_through_the_pool() {
    // Capacity 64 gets the smallest ring (8 KiB): seven records near the
    // inline limit fill it.
    let (_rm, region, off) = fresh("full", 64);
    let vals = region.values().unwrap();
    let q = Queue::open(vals, off).unwrap();
    assert_eq!(word(&q, Q_RING_SIZE), 8 << 10);
    let before = baseline(&vals);
    let batch: Vec<Value> = (0..20).map(|i| message(i, INLINE_MAX - 40)).collect();
    let bytes: Vec<u8> = batch.iter().flat_map(|v| v.encode().unwrap()).collect();
    assert_eq!(q.try_enqueue_wire_many(&bytes, 20).unwrap(), 20);
    let used = (word(&q, Q_RING_WRITE) - word(&q, Q_RING_READ)) / (INLINE_MAX as u64);
    assert_eq!(used, 7, "seven records in the ring");
    assert!(
        baseline(&vals).stats.blocks_used >= before.stats.blocks_used + 13,
        "the other thirteen in pool blocks"
    );
    let mut w = Writer::default();
    assert_eq!(q.dequeue_many_wire(64, NOW, &mut w).unwrap(), 20);
    assert_eq!(w.buf, bytes);
    assert_eq!(baseline(&vals), before);
    assert_eq!(word(&q, Q_RING_READ), word(&q, Q_RING_WRITE));
}

#[test]
fn a_lone_byte_string_goes_inline_or_with_the_ring_full_through_the_pool_and_waits_for_a_full_queue(
) {
    let (_rm, region, off) = fresh("lone", 64);
    let vals = region.values().unwrap();
    let q = Queue::open(vals, off).unwrap();
    let before = baseline(&vals);
    let lone = |i: u8, n: usize| Value::Bytes(vec![i; n]).encode().unwrap();
    // Inline: ring bytes, no pool block.
    let small = lone(1, 64);
    assert_eq!(q.try_enqueue_wire_many(&small, 1).unwrap(), 1);
    assert!(word(&q, Q_RING_WRITE) > word(&q, Q_RING_READ));
    assert_eq!(baseline(&vals).stats.blocks_used, before.stats.blocks_used);
    // Fill the ring (8 KiB) with records near the inline limit; the next
    // lone byte string, which would go inline, takes a pool block instead.
    let big: Vec<Vec<u8>> = (2..9).map(|i| lone(i, INLINE_MAX - 8)).collect();
    for b in &big {
        assert_eq!(q.try_enqueue_wire_many(b, 1).unwrap(), 1);
    }
    let last = lone(9, INLINE_MAX - 8);
    assert_eq!(q.try_enqueue_wire_many(&last, 1).unwrap(), 1);
    assert_eq!(
        baseline(&vals).stats.blocks_used,
        before.stats.blocks_used + 1,
        "the ring was full: one pool block"
    );
    // All come back, in order.
    let mut w = Writer::default();
    assert_eq!(q.dequeue_many_wire(64, NOW, &mut w).unwrap(), 9);
    let want: Vec<u8> = [small.clone()]
        .into_iter()
        .chain(big)
        .chain([last])
        .flatten()
        .collect();
    assert_eq!(w.buf, want);
    assert_eq!(baseline(&vals), before);
    // A full queue: nothing goes in, and nothing is left allocated.
    let (_rm1, region1, off1) = fresh("lone-full", 1);
    let vals1 = region1.values().unwrap();
    let q1 = Queue::open(vals1, off1).unwrap();
    let before1 = baseline(&vals1);
    assert_eq!(q1.try_enqueue_wire_many(&small, 1).unwrap(), 1);
    assert_eq!(q1.try_enqueue_wire_many(&small, 1).unwrap(), 0);
    assert_eq!(q1.try_enqueue_wire_many(&lone(3, 2000), 1).unwrap(), 0);
    let mut w = Writer::default();
    assert_eq!(q1.dequeue_many_wire(4, NOW, &mut w).unwrap(), 1);
    assert_eq!(w.buf, small);
    assert_eq!(baseline(&vals1), before1);
}

#[test]
fn the_value_api_sends_byte_strings_and_other_values_of_every_size_and_they_come_back_equal() {
    let (_rm, region, off) = fresh("values", 64);
    let vals = region.values().unwrap();
    let q = Queue::open(vals, off).unwrap();
    let before = baseline(&vals);
    let sent = [
        Value::Bytes(vec![0xff, 0, 0x80, 7]),
        Value::Bytes(vec![]),
        Value::Bytes(vec![3; INLINE_MAX - 5]),
        // Through the pool, and past the reused encoding buffer's keep limit.
        Value::Bytes(vec![4; 100 << 10]),
        message(5, 64),
        Value::Str("small again".into()),
        Value::Bytes(vec![6; 64]),
    ];
    for v in &sent {
        assert!(q.enqueue_value(v, NOW).unwrap());
    }
    for v in &sent {
        assert_eq!(q.dequeue_value(NOW).unwrap().as_ref(), Some(v));
    }
    assert_eq!(q.dequeue_value(NOW).unwrap(), None);
    assert_eq!(baseline(&vals), before);
}

#[test]
fn ring_bytes_a_killed_producer_left_come_back_and_its_packet_never_appears() {
    let (_rm, region, off) = fresh("killed", 16);
    let vals = region.values().unwrap();
    let q = Queue::open(vals, off).unwrap();
    assert!(q.enqueue_value(&message(1, 100), NOW).unwrap());
    // A producer that wrote its record and moved ring_write on, then died
    // before moving tail: the bytes are taken, no packet names them.
    let hole = 512;
    set_word(&q, Q_RING_WRITE, word(&q, Q_RING_WRITE) + hole);
    assert!(q.enqueue_value(&message(2, 100), NOW).unwrap());
    assert_eq!(q.dequeue_value(NOW).unwrap(), Some(message(1, 100)));
    assert_eq!(q.dequeue_value(NOW).unwrap(), Some(message(2, 100)));
    assert_eq!(q.dequeue_value(NOW).unwrap(), None);
    // ring_read moved past the hole with the record after it.
    assert_eq!(word(&q, Q_RING_READ), word(&q, Q_RING_WRITE));
    // A hole with nothing after it comes back with the next record (or, if
    // the ring runs short first, when a producer finds the queue empty).
    set_word(&q, Q_RING_WRITE, word(&q, Q_RING_WRITE) + hole);
    assert!(q.enqueue_value(&message(3, 100), NOW).unwrap());
    let (tag, _) = head_slot(&q);
    assert_eq!(tag, T_INLINE as u64);
    assert_eq!(q.dequeue_value(NOW).unwrap(), Some(message(3, 100)));
    assert_eq!(word(&q, Q_RING_READ), word(&q, Q_RING_WRITE));
}

#[test]
fn damaged_ring_records_are_corrupt_in_every_dequeue_form_and_the_pipe_goes_on() {
    let (_rm, region, off) = fresh("damaged", 16);
    let vals = region.values().unwrap();
    let q = Queue::open(vals, off).unwrap();
    let span = vals.pool().span();
    let ring = word(&q, Q_RING) + RING_START;
    let size = word(&q, Q_RING_SIZE);
    let before = baseline(&vals);
    // Each damage: to the head packet's slot bits (a ring position) or to
    // its record's header word, given the position.
    type Damage = fn(&Queue<'_>, u64, u64) -> (Option<u64>, Option<u64>);
    let damages: [(&str, Damage); 6] = [
        ("a position before ring_read", |q, pos, _| {
            set_word(q, Q_RING_READ, pos + 8);
            (None, None)
        }),
        ("a position past ring_write", |_, pos, _| {
            (Some(pos + 4096), None)
        }),
        ("a misaligned position", |_, pos, _| (Some(pos + 3), None)),
        ("a stamp of another packet", |_, _, rec| {
            (None, Some(rec + (1 << 32)))
        }),
        ("a length past ring_write", |_, _, rec| {
            (None, Some(rec + 600))
        }),
        ("a length over the inline limit", |_, _, rec| {
            (None, Some((rec & !0xffff_ffff) | (INLINE_MAX as u64 + 8)))
        }),
    ];
    for form in 0..4 {
        for (what, damage) in damages {
            let ctx = format!("form {form}, {what}");
            assert!(q.enqueue_value(&message(1, 100), NOW).unwrap());
            assert!(q.enqueue_value(&message(2, 100), NOW).unwrap());
            let (tag, pos) = head_slot(&q);
            assert_eq!(tag, T_INLINE as u64, "{ctx}");
            let rec_at = ring + (pos & (size - 1));
            let rec = span.u64_at(rec_at).unwrap().load(Ordering::Relaxed);
            let (new_pos, new_rec) = damage(&q, pos, rec);
            if let Some(p) = new_pos {
                let at = slot_offset(&q, word(&q, Q_HEAD));
                span.u64_at(at + 8).unwrap().store(p, Ordering::Relaxed);
            }
            if let Some(r) = new_rec {
                span.u64_at(rec_at).unwrap().store(r, Ordering::Relaxed);
            }
            let err = match form {
                0 => q.dequeue_value(NOW).map(|_| ()),
                1 => q.dequeue_shared(NOW).map(|_| ()),
                2 => q
                    .dequeue_many_wire(1, NOW, &mut Writer::default())
                    .map(|_| ()),
                _ => q.dequeue_many_shared(1, NOW).map(|_| ()),
            }
            .unwrap_err();
            assert_eq!(err.code(), ErrorCode::Corrupt, "{ctx}: {err}");
            assert_eq!(q.len(), 1, "{ctx}: the damaged packet was taken out");
            assert_eq!(
                q.dequeue_value(NOW).unwrap(),
                Some(message(2, 100)),
                "{ctx}: the next comes out whole"
            );
            assert_eq!(baseline(&vals), before, "{ctx}");
        }
    }
}

/// The tag of the slot of the packet last enqueued.
fn tail_tag(q: &Queue<'_>) -> u64 {
    slot_at(q, word(q, Q_TAIL) - 1).0
}

#[test]
fn damaged_ring_counters_send_through_the_pool_until_the_queue_is_empty_again() {
    let (_rm, region, off) = fresh("counters", 16);
    let vals = region.values().unwrap();
    let q = Queue::open(vals, off).unwrap();
    let size = word(&q, Q_RING_SIZE);
    let before = baseline(&vals);
    type Damage = fn(&Queue<'_>, u64, u64);
    let damages: [(&str, Damage); 4] = [
        // (ring_read and the producers' copy of it alike: a producer
        // reads ring_read itself only when its copy leaves no room)
        ("ring_read past ring_write", |q, write, _| {
            set_word(q, Q_RING_READ, write + 8);
            set_word(q, Q_RING_READ_SEEN, write + 8);
        }),
        ("more than the ring apart", |q, _, size| {
            set_word(q, Q_RING_WRITE, word(q, Q_RING_READ) + size + 8)
        }),
        ("an unaligned ring_write", |q, write, _| {
            set_word(q, Q_RING_WRITE, write + 4)
        }),
        ("at the end of their range", |q, _, _| {
            set_word(q, Q_RING_WRITE, u64::MAX - 7);
            set_word(q, Q_RING_READ, u64::MAX - 7);
            set_word(q, Q_RING_READ_SEEN, u64::MAX - 7);
        }),
    ];
    for (what, damage) in damages {
        // A packet queued, so the counters are not reset: the next small
        // value goes through the pool (packed), and the pipe goes on.
        assert!(q.enqueue_value(&message(1, 100), NOW).unwrap(), "{what}");
        damage(&q, word(&q, Q_RING_WRITE), size);
        assert!(q.enqueue_value(&message(2, 100), NOW).unwrap(), "{what}");
        assert_eq!(tail_tag(&q), T_PACKED as u64, "{what}: through the pool");
        // The first comes out through its own record (checked against the
        // damaged counters it may be refused: then as corrupt, and taken).
        match q.dequeue_value(NOW) {
            Ok(v) => assert_eq!(v, Some(message(1, 100)), "{what}"),
            Err(e) => assert_eq!(e.code(), ErrorCode::Corrupt, "{what}: {e}"),
        }
        assert_eq!(
            q.dequeue_value(NOW).unwrap(),
            Some(message(2, 100)),
            "{what}"
        );
        // Empty again: the next inline send resets what it cannot use.
        assert!(q.enqueue_value(&message(3, 100), NOW).unwrap(), "{what}");
        assert_eq!(tail_tag(&q), T_INLINE as u64, "{what}: inline again");
        assert_eq!(
            q.dequeue_value(NOW).unwrap(),
            Some(message(3, 100)),
            "{what}"
        );
        assert_eq!(baseline(&vals), before, "{what}");
    }
    // An unaligned ring_write on an empty queue is reset at once.
    set_word(&q, Q_RING_WRITE, word(&q, Q_RING_WRITE) + 4);
    assert!(q.enqueue_value(&message(4, 100), NOW).unwrap());
    assert_eq!(tail_tag(&q), T_INLINE as u64);
    assert_eq!(head_slot(&q).1, 0, "the record at the ring's start");
    assert_eq!(q.dequeue_value(NOW).unwrap(), Some(message(4, 100)));
}

/// A dequeue that passes an empty slot (left by a consumer killed between
/// emptying it and moving head on) and then meets a slot that does not
/// read answers ERR_SHM_CORRUPT, in the single and the batch forms, rather
/// than "nothing there" (which would send the caller to wait), and moves
/// head past the empty slot. Once the slot is mended the pipe goes on.
#[test]
fn a_dequeue_that_skips_an_empty_slot_and_meets_a_bad_one_answers_the_error() {
    let (_rm, region, off) = fresh("skip-then-bad", 8);
    let vals = region.values().unwrap();
    let q = Queue::open(vals, off).unwrap();
    for form in ["dequeue_many_wire", "dequeue_many_shared", "dequeue_value"] {
        let head = word(&q, Q_HEAD);
        for i in 0..3 {
            assert!(q.enqueue_value(&Value::Int(i), NOW).unwrap());
        }
        let span = vals.pool().span();
        let (empty, bad) = (slot_offset(&q, head), slot_offset(&q, head + 1));
        span.u64_at(empty).unwrap().store(0, Ordering::Relaxed);
        span.u64_at(empty + 8).unwrap().store(0, Ordering::Relaxed);
        span.u64_at(bad).unwrap().store(200, Ordering::Relaxed);
        let err = match form {
            "dequeue_many_wire" => q
                .dequeue_many_wire(8, NOW, &mut Writer::default())
                .map(|_| ()),
            "dequeue_many_shared" => q.dequeue_many_shared(8, NOW).map(|_| ()),
            _ => q.dequeue_value(NOW).map(|_| ()),
        }
        .unwrap_err();
        assert_eq!(err.code(), ErrorCode::Corrupt, "{form}: {err}");
        assert_eq!(word(&q, Q_HEAD), head + 1, "{form}: past the empty slot");
        // Mended, the bad slot's packet and the last come out in order.
        span.u64_at(bad).unwrap().store(3, Ordering::Relaxed); // T_INT
        assert_eq!(q.dequeue_value(NOW).unwrap(), Some(Value::Int(1)));
        assert_eq!(q.dequeue_value(NOW).unwrap(), Some(Value::Int(2)));
        assert_eq!(q.dequeue_value(NOW).unwrap(), None);
    }
}

#[test]
fn a_handle_dequeue_with_no_room_in_the_pool_leaves_an_inline_packet_in_the_queue() {
    let (_rm, region, off) = fresh("no-room", 16);
    let vals = region.values().unwrap();
    let q = Queue::open(vals, off).unwrap();
    let small = Value::Str("a string that goes inline and needs a block".into());
    assert!(q.enqueue_value(&small, NOW).unwrap());
    assert!(q.enqueue_value(&message(2, 100), NOW).unwrap());
    assert_eq!(head_slot(&q).0, T_INLINE as u64);
    // Fill the pool.
    let pool = vals.pool();
    let mut held = Vec::new();
    for size in [1 << 20, 64 << 10, 4 << 10, 256, 16] {
        while let Ok(b) = pool.allocate(size) {
            held.push(b);
        }
    }
    for form in ["dequeue_shared", "dequeue_many_shared", "try_dequeue"] {
        let err = match form {
            "dequeue_shared" => q.dequeue_shared(NOW).map(|_| ()),
            "dequeue_many_shared" => q.dequeue_many_shared(8, NOW).map(|_| ()),
            _ => {
                let _b = vals.busy();
                q.try_dequeue().map(|_| ())
            }
        }
        .unwrap_err();
        assert_eq!(err.code(), ErrorCode::OutOfMemory, "{form}: {err}");
        assert_eq!(q.len(), 2, "{form}: nothing was taken");
    }
    // With room again, the handle form takes it.
    pool.free_many(&held).unwrap();
    let h = q.dequeue_shared(NOW).unwrap().unwrap();
    assert_eq!(h.load().unwrap(), small);
    drop(h);
    assert_eq!(q.dequeue_value(NOW).unwrap(), Some(message(2, 100)));
}

#[test]
fn a_queue_whose_ring_link_or_size_is_damaged_does_not_open() {
    let (_rm, region, off) = fresh("links", 16);
    let vals = region.values().unwrap();
    let q = Queue::open(vals, off).unwrap();
    let (ring, size) = (word(&q, Q_RING), word(&q, Q_RING_SIZE));
    let slots = word(&q, Q_SLOTS);
    for (what, field, bad) in [
        ("a size that is no power of two", Q_RING_SIZE, size + 8),
        ("a size under the smallest", Q_RING_SIZE, 2048),
        ("a size larger than its block", Q_RING_SIZE, size * 2),
        ("a link to the slots block", Q_RING, slots),
        ("a link to no block", Q_RING, ring + 64),
        ("a link past the region", Q_RING, 1 << 40),
    ] {
        set_word(&q, field, bad);
        let err = Queue::open(vals, off)
            .err()
            .unwrap_or_else(|| panic!("{what}: opened"));
        assert_eq!(err.code(), ErrorCode::Corrupt, "{what}: {err}");
        set_word(&q, Q_RING, ring);
        set_word(&q, Q_RING_SIZE, size);
    }
    assert!(Queue::open(vals, off).is_ok());
}
