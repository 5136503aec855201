//! The queue against a model, in one process: first in, first out through
//! the front slot (the packet that goes into an empty queue lives in the
//! header's cache line) and the ring, with every mix of single and batch
//! calls and every capacity from 1 up; the wake-up contract the waiters rely
//! on (after a failed try, the next operation moves the futex word on); and
//! a repair that must count a packet in the front slot as live.
//!
//! Many processes at once on the same queues: pipes_cross_process.rs and
//! chaos.rs.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::time::Duration;

use shmtools_core::platform;
use shmtools_core::queue::{Sleeper, SLICE_UNFENCED};
use shmtools_core::value::T_INT;
use shmtools_core::{Directory, ErrorCode, Queue, Region, Slot, Value, WaitFor};

mod common;

use common::{
    attach_opts, create, unique_name, RemoveOnDrop, Rng, Q_DEQ_LOCK, Q_FRONT, Q_FRONT_POS,
};

const SIZE: u64 = 4 << 20;

/// The u64 at `field` of the queue's header.
fn word(q: &Queue<'_>, field: u64) -> u64 {
    let span = q.values().pool().span();
    span.u64_at(q.offset() + field)
        .unwrap()
        .load(Ordering::Relaxed)
}

fn int(i: u64) -> Slot {
    Slot {
        tag: T_INT,
        bits: i,
    }
}

#[test]
fn packets_come_out_in_order_through_front_slot_and_ring_at_every_capacity() {
    let name = unique_name("qmodel-", "fifo");
    let _rm = RemoveOnDrop(name.clone());
    let region = create(&name, SIZE);
    let dir = Directory::open(&region).unwrap();
    let mut rng = Rng(0x5eed_f1f0);
    for capacity in [1u64, 2, 3, 4, 7, 16] {
        let (p, _) = dir.create(&format!("fifo-{capacity}"), capacity).unwrap();
        let q = dir.queue(&p).unwrap();
        let mut model = VecDeque::new();
        let mut next = 0u64;
        let mut fronts = 0;
        for step in 0..20_000 {
            let ctx = format!("capacity {capacity}, step {step}");
            match rng.below(4) {
                0 => {
                    let was_empty = model.is_empty();
                    let ok = q.try_enqueue(int(next)).unwrap();
                    assert_eq!(ok, (model.len() as u64) < capacity, "{ctx}");
                    // The header's front slot takes a packet only into a
                    // queue its producer knows to be empty (what it knows of
                    // head lags, so not every one).
                    if ok && word(&q, Q_FRONT_POS) == next {
                        assert!(
                            was_empty,
                            "{ctx}: front slot used for a queue that held packets"
                        );
                        assert_eq!(word(&q, Q_FRONT + 8), next, "{ctx}: the packet's bits");
                        fronts += 1;
                    }
                    if ok {
                        model.push_back(next);
                        next += 1;
                    }
                }
                1 => {
                    let want = 1 + rng.below(2 * capacity) as usize;
                    let batch: Vec<Slot> = (next..next + want as u64).map(int).collect();
                    let n = q.try_enqueue_many(&batch).unwrap();
                    assert_eq!(n, want.min(capacity as usize - model.len()), "{ctx}");
                    model.extend(next..next + n as u64);
                    next += n as u64;
                }
                2 => {
                    let got = q.try_dequeue().unwrap().map(|s| s.bits);
                    assert_eq!(got, model.pop_front(), "{ctx}");
                }
                _ => {
                    let max = 1 + rng.below(2 * capacity) as usize;
                    let mut out = Vec::new();
                    let n = q.try_dequeue_many(max, &mut out).unwrap();
                    let want: Vec<u64> = (0..n).filter_map(|_| model.pop_front()).collect();
                    assert_eq!(
                        out.iter().map(|s| s.bits).collect::<Vec<_>>(),
                        want,
                        "{ctx}"
                    );
                    assert!(n == max || model.is_empty(), "{ctx}: took {n} of {max}");
                }
            }
            assert_eq!(q.len(), model.len() as u64, "{ctx}");
        }
        assert!(
            fronts > 0,
            "capacity {capacity}: the front slot was never used"
        );
        let st = q.stats();
        assert_eq!(st.total_enqueued, next);
        assert_eq!(st.total_dequeued, next - model.len() as u64);
        assert_eq!(q.drain().unwrap(), model.len() as u64);
    }
    region.pool().unwrap().check().unwrap();
    assert!(region.destroy().unwrap());
}

/// The sleeper count that goes with `w`, as a waiter thread sees it.
fn sleepers<'a>(q: &Queue<'a>, w: WaitFor) -> &'a std::sync::atomic::AtomicU32 {
    q.values()
        .pool()
        .span()
        .u32_at(q.sleepers_offset(w))
        .unwrap()
}

/// The futex word that goes with `w`.
fn futex_word<'a>(q: &Queue<'a>, w: WaitFor) -> &'a std::sync::atomic::AtomicU32 {
    q.values().pool().span().u32_at(q.word_offset(w)).unwrap()
}

#[test]
fn the_counters_move_with_every_operation_and_the_futex_words_only_for_counted_sleepers() {
    let name = unique_name("qmodel-", "words");
    let _rm = RemoveOnDrop(name.clone());
    let region = create(&name, SIZE);
    let dir = Directory::open(&region).unwrap();
    let (p, _) = dir.create("words", 3).unwrap();
    let q = dir.queue(&p).unwrap();
    let (e, f) = (WaitFor::NotEmpty, WaitFor::NotFull);
    let (word_e, word_f) = (futex_word(&q, e), futex_word(&q, f));

    // A consumer finds the queue empty: the next enqueue moves what it
    // watches (tail), and, with no one asleep, not the word.
    let (seen, w0) = (q.seq(e), word_e.load(Ordering::Relaxed));
    assert_eq!(q.try_dequeue().unwrap(), None);
    assert_eq!(q.seq(e), seen, "a failed try moves nothing");
    assert!(q.try_enqueue(int(1)).unwrap());
    assert_ne!(q.seq(e), seen, "enqueue into an empty queue");
    assert_eq!(word_e.load(Ordering::Relaxed), w0, "no sleeper, no word");

    // A sleeper counted in is told, through the batch form too.
    let sl = sleepers(&q, e);
    sl.fetch_add(1, Ordering::Relaxed);
    assert_eq!(q.try_enqueue_many(&[int(2)]).unwrap(), 1);
    assert_ne!(word_e.load(Ordering::Relaxed), w0, "enqueue with a sleeper");
    sl.fetch_sub(1, Ordering::Relaxed);

    // A producer finds the queue full: the next dequeue moves head.
    assert!(q.try_enqueue(int(3)).unwrap());
    let (seen, w1) = (q.seq(f), word_f.load(Ordering::Relaxed));
    assert!(!q.try_enqueue(int(4)).unwrap());
    assert_eq!(q.try_enqueue_many(&[int(4)]).unwrap(), 0);
    assert_eq!(q.seq(f), seen, "failed tries move nothing");
    assert_eq!(q.try_dequeue().unwrap().map(|s| s.bits), Some(1));
    assert_ne!(q.seq(f), seen, "dequeue from a full queue");
    assert_eq!(word_f.load(Ordering::Relaxed), w1, "no sleeper, no word");

    // With a producer counted asleep, a batch dequeue moves the word.
    let sl = sleepers(&q, f);
    sl.fetch_add(1, Ordering::Relaxed);
    let seen = q.seq(f);
    let mut out = Vec::new();
    assert_eq!(q.try_dequeue_many(1, &mut out).unwrap(), 1);
    assert_eq!(out[0].bits, 2);
    assert_ne!(q.seq(f), seen);
    assert_ne!(word_f.load(Ordering::Relaxed), w1, "dequeue with a sleeper");
    sl.fetch_sub(1, Ordering::Relaxed);
    assert_eq!(q.try_dequeue().unwrap().map(|s| s.bits), Some(3));
    assert!(q.is_empty());
    assert!(region.destroy().unwrap());
}

#[test]
fn two_threads_asleep_on_one_pipe_are_both_woken_by_two_packets() {
    let name = unique_name("qmodel-", "two-sleepers");
    let _rm = RemoveOnDrop(name.clone());
    let region = create(&name, SIZE);
    let dir = Directory::open(&region).unwrap();
    let (p, _) = dir.create("two", 8).unwrap();
    let q = dir.queue(&p).unwrap();
    let sl = sleepers(&q, WaitFor::NotEmpty);
    std::thread::scope(|s| {
        let takers: Vec<_> = (0..2)
            .map(|_| {
                // (a mapping of its own: a Queue is not shared between threads)
                s.spawn(|| {
                    let r = Region::attach(&name, &attach_opts(Duration::from_secs(5))).unwrap();
                    let dir = Directory::open(&r).unwrap();
                    let p = dir.find("two").unwrap().unwrap();
                    let q = dir.queue(&p).unwrap();
                    q.dequeue(Some(Duration::from_secs(60))).unwrap()
                })
            })
            .collect();
        // Both asleep in the kernel (past their spins) before anything goes in.
        while sl.load(Ordering::Relaxed) < 2 {
            std::thread::sleep(Duration::from_millis(1));
        }
        let word = futex_word(&q, WaitFor::NotEmpty);
        let seen = word.load(Ordering::Relaxed);
        assert!(q.try_enqueue(int(10)).unwrap());
        let mid = word.load(Ordering::Relaxed);
        assert_ne!(mid, seen, "sleepers counted: the word moves");
        // One wake-up went out; the other thread sleeps on in the kernel
        // (until woken, or its one-second slice ends) and is still counted.
        // The second packet may find the first still queued, so only the
        // count makes it move the word and wake the sleeper: without that
        // the sleeper would wait out its slice, which the join below could
        // not tell from a prompt wake-up.
        let counted = sl.load(Ordering::Relaxed);
        assert!(q.try_enqueue(int(11)).unwrap());
        if counted > 0 {
            assert_ne!(
                word.load(Ordering::Relaxed),
                mid,
                "a counted sleeper must be told"
            );
        }
        let mut got: Vec<u64> = takers
            .into_iter()
            .map(|t| t.join().unwrap().expect("a packet, not a timeout").bits)
            .collect();
        got.sort();
        assert_eq!(got, [10, 11]);
        assert_eq!(sl.load(Ordering::Relaxed), 0, "both counted out again");
    });
    assert!(region.destroy().unwrap());
}

#[test]
fn a_sleeper_is_counted_in_while_it_lives_and_sleeps_briefly_until_the_publishers_are_fenced() {
    let count = std::sync::atomic::AtomicU32::new(5);
    let long = Duration::from_secs(1);
    {
        let mut me = Sleeper::count_in(&count);
        assert_eq!(count.load(Ordering::Relaxed), 6);
        // Before the barrier a publisher may miss it: short slices only.
        assert_eq!(me.slice(long), SLICE_UNFENCED);
        me.fence_publishers();
        me.fence_publishers();
        let want = if platform::sleeper_fence() {
            long
        } else {
            SLICE_UNFENCED
        };
        assert_eq!(me.slice(long), want);
        assert_eq!(me.slice(Duration::from_millis(1)), Duration::from_millis(1));
        assert_eq!(count.load(Ordering::Relaxed), 6, "fencing counts nothing");
    }
    assert_eq!(count.load(Ordering::Relaxed), 5, "counted out when dropped");
}

#[test]
fn a_front_slot_naming_a_position_ahead_of_the_head_is_corrupt_and_nothing_is_taken() {
    let name = unique_name("qmodel-", "front-ahead");
    let _rm = RemoveOnDrop(name.clone());
    let region = create(&name, SIZE);
    let dir = Directory::open(&region).unwrap();
    let (p, _) = dir.create("ahead", 4).unwrap();
    let q = dir.queue(&p).unwrap();
    // 0 in the front slot, 1 and 2 in the ring.
    for i in 0..3 {
        assert!(q.try_enqueue(int(i)).unwrap());
    }
    let span = region.span();
    let front_pos = span.u64_at(q.offset() + Q_FRONT_POS).unwrap();
    assert_eq!(front_pos.load(Ordering::Relaxed), 0);
    // Damage: the front slot now claims position 1, so the ring's packet 1
    // would be skipped.
    front_pos.store(1, Ordering::Relaxed);
    let e = q.try_dequeue().expect_err("a front slot ahead of the head");
    assert_eq!(e.code(), ErrorCode::Corrupt, "{e}");
    let mut out = Vec::new();
    let e = q
        .try_dequeue_many(4, &mut out)
        .expect_err("the same, batched");
    assert_eq!(e.code(), ErrorCode::Corrupt, "{e}");
    assert!(out.is_empty());
    assert_eq!(q.len(), 3, "nothing was taken");
    // Put back, the queue is whole and in order.
    front_pos.store(0, Ordering::Relaxed);
    let got: Vec<u64> = (0..3)
        .map(|_| q.try_dequeue().unwrap().unwrap().bits)
        .collect();
    assert_eq!(got, [0, 1, 2]);
    assert!(region.destroy().unwrap());
}

#[test]
fn a_repair_counts_the_packet_in_the_front_slot_as_live() {
    let name = unique_name("qmodel-", "repair");
    let _rm = RemoveOnDrop(name.clone());
    let region = create(&name, SIZE);
    let dir = Directory::open(&region).unwrap();
    let (p, _) = dir.create("front", 4).unwrap();
    let q = dir.queue(&p).unwrap();
    let text = |i: u32| {
        Value::Str(format!(
            "packet {i}, long enough to be an object of its own"
        ))
    };
    // The first goes into the empty queue, so into the front slot; the
    // second into the ring.
    for i in 0..2 {
        assert!(q.enqueue_value(&text(i), Some(Duration::ZERO)).unwrap());
    }
    let r = region.repair().unwrap();
    assert_eq!((r.blocks_freed, r.refcounts_fixed), (0, 0), "{r:?}");
    for i in 0..2 {
        assert_eq!(
            q.dequeue_value(Some(Duration::ZERO)).unwrap(),
            Some(text(i))
        );
    }
    // Empty again, the next one goes to the front slot once more.
    assert!(q.enqueue_value(&text(2), Some(Duration::ZERO)).unwrap());
    let r = region.repair().unwrap();
    assert_eq!((r.blocks_freed, r.refcounts_fixed), (0, 0), "{r:?}");
    assert_eq!(
        q.dequeue_value(Some(Duration::ZERO)).unwrap(),
        Some(text(2))
    );
    region.pool().unwrap().check().unwrap();
    assert!(region.destroy().unwrap());
}

#[test]
fn a_queue_lock_taken_over_from_a_dead_holder_moves_both_futex_words_on() {
    let name = unique_name("qmodel-", "dead-holder");
    let _rm = RemoveOnDrop(name.clone());
    let region = create(&name, SIZE);
    let dir = Directory::open(&region).unwrap();
    let (p, _) = dir.create("dead", 4).unwrap();
    let q = dir.queue(&p).unwrap();
    assert!(q.try_enqueue(int(7)).unwrap());
    // A holder that died inside an operation, perhaps before moving a word
    // on: the lock word names a thread that no longer exists (a child that
    // has exited and been reaped), as it would after a SIGKILL.
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let dead = child.id();
    child.wait().unwrap();
    let lock_word = region.span().u32_at(q.offset() + Q_DEQ_LOCK).unwrap();
    lock_word.store(dead, Ordering::Relaxed);
    let words = [
        futex_word(&q, WaitFor::NotEmpty),
        futex_word(&q, WaitFor::NotFull),
    ];
    let before = words.map(|w| w.load(Ordering::Relaxed));
    // The next locker takes the lock over, and the packet is still there.
    assert_eq!(q.try_dequeue().unwrap().map(|s| s.bits), Some(7));
    let after = words.map(|w| w.load(Ordering::Relaxed));
    assert_ne!(
        after[0], before[0],
        "not_empty moved on: a sleeper the dead holder owed a wake-up looks again"
    );
    assert_ne!(after[1], before[1], "not_full too");
    assert_eq!(
        lock_word.load(Ordering::Relaxed),
        0,
        "and the lock was let go"
    );
    assert!(region.destroy().unwrap());
}
