//! Fuzz target for the pipe directory and queue readers: `Directory::open`,
//! `list`, `find`, `create`, `wait_for`, `ClientSide::start`, and
//! `Queue::open` with every queue operation (`len`, `stats`, `try_enqueue`,
//! `try_dequeue`, `enqueue_value`, `dequeue_value`, `dequeue_many_wire`,
//! `dequeue_many_shared`, `drain`) and the values that come out of a damaged
//! queue (`load`, `release`).
//!
//! Each case makes a region with a few pipes holding a few packets (some
//! already taken, so head and tail have moved), damages the directory
//! header (not its lock), its entries block, queue headers (not their
//! two locks), slot blocks and the bodies of packed packets (small tables and
//! lists), block headers included, and calls everything.
//!
//! Properties: no panic, no wait beyond what was asked (every wait here is
//! given no time at all); every error of the directory and the queues is
//! ERR_SHM_CORRUPT, or ERR_SHM_OUT_OF_MEMORY, ERR_SHM_EXISTS (a pipe name
//! whose capacity was damaged) or ERR_SHM_TIMEOUT (a pipe that is gone);
//! values taken out of a damaged queue load and release with a value or the
//! codes of the value readers (READ in fuzz_support); and the pool's
//! `check()` afterwards passes or reports corruption.
//!
//! Replay: proptest prints the failing input (pipes, packets and damage
//! seed) and records it in tests/fuzz_pipes.proptest-regressions.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use proptest::prelude::*;
use shmtools_core::pipes::ENTRY_SIZE;
use shmtools_core::queue::{INLINE_MAX, QUEUE_BLOCK_SIZE, RING_START};
use shmtools_core::value::{SLOT_SIZE, T_PACKED};
use shmtools_core::{
    AttachOptions, ClientSide, Directory, ErrorCode, Key, PipeInfo, Queue, Slot, Value,
};

mod common;
mod fuzz_support;

use common::{
    create, unique_name, RemoveOnDrop, Rng, Q_BLOCK, Q_DEQ_LOCK, Q_ENQ_LOCK, Q_FRONT, Q_HEAD,
    Q_RING, Q_RING_READ, Q_RING_SIZE, Q_RING_WRITE, Q_SLOTS, Q_TAIL,
};
use fuzz_support::{canon, carve, finishes, same, scribble, tolerate, Watchdog, READ};

/// The directory and the queues only ever read offsets from the region, so
/// what they find wrong is corruption, whatever the field.
const CORRUPT: &[ErrorCode] = &[ErrorCode::Corrupt];
/// A dequeue that hands out handles builds a packed packet's objects, which
/// takes pool memory (a damaged pool may also look full).
const TAKE: &[ErrorCode] = &[ErrorCode::Corrupt, ErrorCode::OutOfMemory];
const TAKE_READ: &[ErrorCode] = &[
    ErrorCode::Corrupt,
    ErrorCode::InvalidArg,
    ErrorCode::Closed,
    ErrorCode::OutOfMemory,
];

const SIZE: u64 = 256 * 1024;

/// Scalars (in their slot), small values (inline, in the byte ring) and
/// a table over the inline limit (packed, in a pool block).
fn packet(i: u64) -> Value {
    match i % 5 {
        0 => Value::Int(i as i64),
        1 => Value::Str(format!("packet number {i}, long enough for an object")),
        2 => Value::Tab(vec![
            (Key::Str("seq".into()), Value::UInt(i)),
            (Key::Str("body".into()), Value::Bytes(vec![i as u8; 24])),
        ]),
        3 => Value::Tab(vec![
            (Key::Str("seq".into()), Value::UInt(i)),
            (
                Key::Str("body".into()),
                Value::Bytes(vec![i as u8; INLINE_MAX]),
            ),
        ]),
        _ => Value::Arr(vec![Value::F64(i as f64), Value::Str("x".into())]),
    }
}

fn no_wait() -> AttachOptions<'static> {
    AttachOptions {
        timeout: Some(Duration::ZERO),
        ..AttachOptions::default()
    }
}

fn word(span: shmtools_core::mem::Span<'_>, off: u64) -> u64 {
    span.u64_at(off).unwrap().load(Ordering::Relaxed)
}

/// Every queue operation on a (possibly damaged) queue.
fn exercise_queue(ctx: &str, q: Queue<'_>) {
    let vals = q.values();
    let _ = (q.len(), q.stats(), q.is_empty(), q.capacity(), q.offset());
    for _ in 0..2 {
        if let Some(Some(slot)) = tolerate(ctx, "try_dequeue", q.try_dequeue(), TAKE) {
            tolerate(ctx, "load", vals.load(slot), READ);
            tolerate(ctx, "release", vals.release(slot), READ);
        }
    }
    tolerate(
        ctx,
        "dequeue_value",
        q.dequeue_value(Some(Duration::ZERO)),
        READ,
    );
    let mut w = shmtools_core::value::wire::Writer::default();
    let many = q.dequeue_many_wire(2, Some(Duration::ZERO), &mut w);
    tolerate(ctx, "dequeue_many_wire", many, READ);
    let handles = q.dequeue_many_shared(2, Some(Duration::ZERO));
    if let Some(hs) = tolerate(ctx, "dequeue_many_shared", handles, TAKE_READ) {
        for h in hs {
            tolerate(ctx, "load handle", h.load(), READ);
        }
    }
    tolerate(ctx, "try_enqueue", q.try_enqueue(Slot::NONE), CORRUPT);
    let two = [Slot::NONE, Slot::NONE];
    tolerate(ctx, "try_enqueue_many", q.try_enqueue_many(&two), CORRUPT);
    let mut wire = packet(2).encode().unwrap();
    wire.extend(packet(3).encode().unwrap());
    tolerate(
        ctx,
        "try_enqueue_wire_many",
        q.try_enqueue_wire_many(&wire, 2),
        &[ErrorCode::Corrupt, ErrorCode::OutOfMemory],
    );
    tolerate(
        ctx,
        "enqueue_value",
        q.enqueue_value(&packet(1), Some(Duration::ZERO)),
        &[ErrorCode::Corrupt, ErrorCode::OutOfMemory],
    );
    tolerate(ctx, "drain", q.drain(), READ);
    let _ = q.stats();
}

proptest! {
    #![proptest_config(fuzz_support::config(500, "tests/fuzz_pipes.proptest-regressions"))]

    #[test]
    fn a_damaged_pipe_directory_or_queue_gives_values_or_coded_errors(
        pipes in prop::collection::vec((1u64..=6, 0u64..=8, 0u64..=4), 1..5),
        seed in any::<u64>(),
    ) {
        static N: AtomicU64 = AtomicU64::new(0);
        let name = unique_name("fuzz-", &format!("pipes-{}", N.fetch_add(1, Ordering::Relaxed)));
        let _rm = RemoveOnDrop(name.clone());
        let ctx = format!("seed {seed}, pipes {pipes:?}");
        let _dog = Watchdog::new(format!("fuzz_pipes {ctx}"));
        let region = create(&name, SIZE);
        let span = region.span();

        // Pipes (capacity, packets put, packets taken), before any damage.
        let infos: Vec<PipeInfo> = {
            let dir = Directory::open(&region).unwrap();
            let mut infos = Vec::new();
            for (i, &(cap, put, take)) in pipes.iter().enumerate() {
                let (p, _) = dir.create(&format!("pipe-{i}"), cap).unwrap();
                let q = dir.queue(&p).unwrap();
                for k in 0..put {
                    q.enqueue_value(&packet(k), Some(Duration::ZERO)).unwrap();
                }
                for _ in 0..take {
                    q.dequeue_value(Some(Duration::ZERO)).unwrap();
                }
                infos.push(p);
            }
            infos
        };
        region.pool().unwrap().check().unwrap();

        // Where damage may go.
        let dir = region.info().pipe_dir_offset;
        let dir_header = carve(&[(dir - 16, dir + 64)], &[(dir + 8, dir + 24)]);
        let entries = word(span, dir + 40);
        let dir_cap = word(span, dir + 32);
        let entry_block = vec![(entries - 16, entries + dir_cap * ENTRY_SIZE)];
        let mut queues = Vec::new();
        let mut slots = Vec::new();
        let mut packed = Vec::new();
        let mut rings = Vec::new();
        let mut plausible = vec![dir, entries];
        for p in &infos {
            let q = p.queue;
            // The header sits 16 to 64 bytes into its block; its locks
            // are 16 bytes each.
            let block = word(span, q + Q_BLOCK);
            queues.push((block - 16, block + QUEUE_BLOCK_SIZE));
            queues = carve(
                &queues,
                &[
                    (q + Q_DEQ_LOCK, q + Q_DEQ_LOCK + 16),
                    (q + Q_ENQ_LOCK, q + Q_ENQ_LOCK + 16),
                ],
            );
            let s = word(span, q + Q_SLOTS);
            slots.push((s - 16, s + p.capacity * SLOT_SIZE));
            plausible.extend([q, s]);
            // the byte ring's block: its magic, and the live records
            let ring = word(span, q + Q_RING);
            let (read, write) = (word(span, q + Q_RING_READ), word(span, q + Q_RING_WRITE));
            let size = word(span, q + Q_RING_SIZE);
            rings.push((ring - 16, ring + RING_START));
            if read < write {
                let (a, b) = (read % size, write % size);
                let live = if a < b { vec![(a, b)] } else { vec![(a, size), (0, b)] };
                rings.extend(live.into_iter().map(|(a, b)| (ring + RING_START + a, ring + RING_START + b)));
            }
            plausible.extend([ring, read, write]);
            // every ring slot, then the front slot
            let slot_offsets = (0..p.capacity).map(|i| s + i * SLOT_SIZE).chain([q + Q_FRONT]);
            for at in slot_offsets {
                let bits = word(span, at + 8);
                if bits != 0 {
                    plausible.push(bits);
                }
                if word(span, at) == T_PACKED as u64 {
                    // header and body of a packed packet
                    packed.push((bits, bits + 16 + word(span, bits + 8)));
                }
            }
        }
        let mut rng = Rng(seed);
        let mut did = Vec::new();
        for _ in 0..1 + rng.below(4) {
            let ranges = match rng.below(12) {
                0..=1 => &dir_header,
                2..=3 => &entry_block,
                4..=7 => &queues,
                8 if !packed.is_empty() => &packed,
                9 => &rings,
                _ => &slots,
            };
            did.push(scribble(span, &mut rng, ranges, &plausible));
        }
        let ctx = format!("{ctx}, damage {did:?}");

        // Everything, on the damaged pipes.
        let Some(dir) = tolerate(&ctx, "Directory::open", Directory::open(&region), CORRUPT) else {
            return Ok(());
        };
        let _ = dir.version();
        let listed = tolerate(&ctx, "list", dir.list(), CORRUPT).unwrap_or_default();
        for p in infos.iter().chain(&listed) {
            if let Some(q) = tolerate(&ctx, "queue", dir.queue(p), CORRUPT) {
                exercise_queue(&ctx, q);
            }
        }
        for p in &infos {
            tolerate(&ctx, "find", dir.find(&p.name), CORRUPT);
            let again = dir.create(&p.name, p.capacity);
            tolerate(&ctx, "create existing", again, &[ErrorCode::Corrupt, ErrorCode::Exists]);
            let waited = dir.wait_for(&p.name, &no_wait());
            tolerate(&ctx, "wait_for", waited, &[ErrorCode::Corrupt, ErrorCode::Timeout]);
        }
        let client = ClientSide::start(&name, &infos[0].name, &no_wait());
        if let Some(c) = tolerate(&ctx, "ClientSide::start", client, &[ErrorCode::Corrupt, ErrorCode::Timeout]) {
            if let Some(q) = tolerate(&ctx, "ClientSide pipe", c.pipe(), CORRUPT) {
                exercise_queue(&ctx, q);
            }
        }
        let made = dir.create("made-after-damage", 3);
        let allowed = [ErrorCode::Corrupt, ErrorCode::OutOfMemory, ErrorCode::Exists];
        if let Some((p, _)) = tolerate(&ctx, "create new", made, &allowed) {
            if let Some(q) = tolerate(&ctx, "new queue", dir.queue(&p), CORRUPT) {
                exercise_queue(&ctx, q);
            }
        }
        tolerate(&ctx, "find absent", dir.find("absent"), CORRUPT);
        if let Ok(pool) = region.pool() {
            tolerate(&ctx, "check", pool.check(), &[ErrorCode::Corrupt]);
        }
        let _ = region.destroy();
    }
}

/// Found by the target above: a queue whose head and tail both read
/// u64::MAX passed the state check (empty, within capacity), and the next
/// enqueue overflowed `tail + 1` (a panic in a debug build, a wrapped tail in
/// a release build). It must be ERR_SHM_CORRUPT, the queue left as it was.
#[test]
fn an_enqueue_at_the_end_of_the_counter_range_is_corrupt_not_an_overflow() {
    let name = unique_name("fuzz-", "tail-max");
    let _rm = RemoveOnDrop(name.clone());
    let region = create(&name, SIZE);
    let dir = Directory::open(&region).unwrap();
    let (p, _) = dir.create("edge", 4).unwrap();
    let q = dir.queue(&p).unwrap();
    let span = region.span();
    for field in [Q_HEAD, Q_TAIL] {
        span.u64_at(p.queue + field)
            .unwrap()
            .store(u64::MAX, Ordering::Relaxed);
    }
    let e = q
        .try_enqueue(Slot::NONE)
        .expect_err("no room past the counter's end");
    assert_eq!(e.code(), ErrorCode::Corrupt, "{e}");
    let e = q
        .try_enqueue_many(&[Slot::NONE, Slot::NONE])
        .expect_err("the same through the batch form");
    assert_eq!(e.code(), ErrorCode::Corrupt, "{e}");
    let e = q
        .enqueue_value(&packet(2), Some(Duration::ZERO))
        .expect_err("the same through enqueue_value");
    assert_eq!(e.code(), ErrorCode::Corrupt, "{e}");
    assert_eq!(word(span, p.queue + Q_TAIL), u64::MAX, "tail unchanged");
    assert_eq!(q.try_dequeue().unwrap(), None, "still empty");
    region.pool().unwrap().check().unwrap();
    assert!(region.destroy().unwrap());
}

/// Found by the target above: a pipe directory whose entries link had been
/// overwritten answered ERR_SHM_INVALID_ARG ("not an allocated block"), the
/// code for a caller's bad offset, though the offset came from the region.
/// The same held for a queue's slots link. Both are ERR_SHM_CORRUPT now.
#[test]
fn a_damaged_link_in_the_directory_or_a_queue_is_corrupt_not_a_bad_argument() {
    let name = unique_name("fuzz-", "links");
    let _rm = RemoveOnDrop(name.clone());
    let region = create(&name, SIZE);
    let dir = Directory::open(&region).unwrap();
    let (p, _) = dir.create("linked", 2).unwrap();
    let span = region.span();
    let at = |off: u64| span.u64_at(off).unwrap();
    let slots = at(p.queue + Q_SLOTS).load(Ordering::Relaxed);
    at(p.queue + Q_SLOTS).store(slots + 32, Ordering::Relaxed);
    let e = dir
        .queue(&p)
        .err()
        .expect("a queue whose slots are not a block");
    assert_eq!(e.code(), ErrorCode::Corrupt, "{e}");
    at(p.queue + Q_SLOTS).store(slots, Ordering::Relaxed);
    dir.queue(&p).unwrap();

    let dir_off = region.info().pipe_dir_offset;
    let entries = at(dir_off + 40).load(Ordering::Relaxed);
    at(dir_off + 40).store(1, Ordering::Relaxed);
    assert_eq!(dir.list().unwrap_err().code(), ErrorCode::Corrupt);
    assert_eq!(dir.find("linked").unwrap_err().code(), ErrorCode::Corrupt);
    at(dir_off + 40).store(entries, Ordering::Relaxed);
    assert_eq!(dir.list().unwrap(), vec![p]);
    assert!(region.destroy().unwrap());
}

/// Found by the target above (the run that hung, case 333; its region was
/// kept): a queue's slots link overwritten with the offset of a table that
/// another pipe held as a packet passed `Queue::open`, since the table's
/// block is big enough for the slots. Slot 0 there is the table's object
/// header, so every dequeue failed, but `try_enqueue(Slot::NONE)` wrote its
/// slot into slot 1: the table's lock word, which became 1 (the tag of
/// None), the thread id of init. The next load of that table waited for
/// init to let go of the lock, for ever. Whatever a slots link names, the
/// queue must refuse it before writing there unless it holds slots, and the
/// structure it names must keep working.
#[test]
fn a_slots_link_redirected_onto_another_structure_is_corrupt_and_writes_nothing_there() {
    // Each target is a block with a lock in it that the slots of a
    // 3-packet queue (48 bytes) fit in.
    for target in ["table", "list", "queue header", "pipe directory"] {
        let name = unique_name("fuzz-", &format!("alias-{}", target.replace(' ', "-")));
        let _rm = RemoveOnDrop(name.clone());
        let what = format!("a slots link redirected onto a {target}");
        let n = name.clone();
        finishes(&what.clone(), move || {
            let region = create(&n, SIZE);
            let span = region.span();
            let dir = Directory::open(&region).unwrap();
            // As in the hung case: the damaged queue holds one packet, so
            // its next enqueue goes to slot 1.
            let (victim, _) = dir.create("victim", 3).unwrap();
            dir.queue(&victim)
                .unwrap()
                .enqueue_value(&packet(0), Some(Duration::ZERO))
                .unwrap();
            let (held, _) = dir.create("held", 4).unwrap();
            let hq = dir.queue(&held).unwrap();
            for k in [2, 3] {
                hq.enqueue_value(&packet(k), Some(Duration::ZERO)).unwrap();
            }
            let (other, _) = dir.create("other", 2).unwrap();
            // Packet 2 went into an empty queue, so into the front slot;
            // packet 3 into the ring at position 1.
            let held_slots = word(span, held.queue + Q_SLOTS);
            let to = match target {
                "table" => word(span, held.queue + Q_FRONT + 8),
                "list" => word(span, held_slots + SLOT_SIZE + 8),
                // (the block; the header inside it is no block at all)
                "queue header" => word(span, other.queue + Q_BLOCK),
                _ => region.info().pipe_dir_offset,
            };
            let link = span.u64_at(victim.queue + Q_SLOTS).unwrap();
            let slots = link.load(Ordering::Relaxed);
            link.store(to, Ordering::Relaxed);

            // What the fuzz target does with a damaged queue.
            let ctx = what.as_str();
            if let Some(q) = tolerate(ctx, "queue", dir.queue(&victim), CORRUPT) {
                exercise_queue(ctx, q);
            }

            // What the link pointed at works as before, its lock included.
            for k in [2, 3] {
                let got = hq.dequeue_value(Some(Duration::ZERO)).unwrap();
                let got = got.expect("the packets held are still there");
                assert!(
                    same(&got, &canon(&packet(k))),
                    "{what}: packet {k} is {got:?}"
                );
            }
            let oq = dir.queue(&other).unwrap();
            assert!(oq.enqueue_value(&packet(1), Some(Duration::ZERO)).unwrap());
            assert_eq!(oq.drain().unwrap(), 1);
            let names: Vec<String> = dir.list().unwrap().into_iter().map(|p| p.name).collect();
            assert_eq!(names, ["victim", "held", "other"], "{what}");

            // The link is what is reported, whenever the queue is opened.
            let e = dir
                .queue(&victim)
                .err()
                .unwrap_or_else(|| panic!("{what}: the queue opened"));
            assert_eq!(e.code(), ErrorCode::Corrupt, "{what}: {e}");

            // With the link put back, the queue is whole.
            link.store(slots, Ordering::Relaxed);
            let q = dir.queue(&victim).unwrap();
            assert_eq!(q.len(), 1, "{what}");
            assert_eq!(q.drain().unwrap(), 1);
            region.pool().unwrap().check().unwrap();
            assert!(region.destroy().unwrap());
        });
    }
}
