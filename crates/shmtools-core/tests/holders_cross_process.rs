//! Who holds what, across real processes: a process that dies holding values,
//! raw blocks and packets has them given back by `gc`; a reused pid is not
//! taken for the dead; `repair` refuses while another process is attached and
//! fixes what no ledger knew about once it is alone.
//!
//! Children are this test binary run again with `SHMT_CHILD_ROLE` set (see
//! common/mod.rs); they report with `SHMT:key=value` lines.

mod common;

use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use common::{
    attach, await_cue, baseline, child_role, create, ks, say, spawn, spawn_with_cues, unique_name,
    RemoveOnDrop,
};
use shmtools_core::{ErrorCode, Shared, Value};

const GUARD: Duration = Duration::from_secs(20);

fn big_value(i: i64) -> Value {
    Value::Tab(vec![
        (ks("i"), Value::Int(i)),
        (
            ks("text"),
            Value::Str("held by a process about to die".repeat(4)),
        ),
        (
            ks("list"),
            Value::Arr(vec![Value::Int(1), Value::Str("a longer string".into())]),
        ),
    ])
}

/// The body of every child process; a no-op in the parent's own run.
#[test]
fn child_entry() {
    let Some((role, name)) = child_role() else {
        return;
    };
    match role.as_str() {
        "hoard" => child_hoard(&name),
        "hoard-many" => child_hoard_many(&name),
        "sit" => {
            let _r = attach(&name);
            say("ready", 1);
            std::thread::sleep(GUARD * 2);
        }
        other => panic!("unknown child role {other}"),
    }
}

/// Hold 300 values (the ledger grows past its first block), a raw block, a
/// dequeued packet and a packet stuck waiting on a full pipe; then wait to be
/// killed.
fn child_hoard(name: &str) {
    let end = shmtools_core::ClientSide::start(name, "full", &common::attach_opts(GUARD)).unwrap();
    let region = end.region();
    let v = region.values().unwrap();
    let held: Vec<Shared<'_>> = (0..300)
        .map(|i| Shared::new(v, &big_value(i)).unwrap())
        .collect();
    let raw = region.pool().unwrap().allocate(5000).unwrap();
    region
        .session()
        .unwrap()
        .hold_raw(region.pool().unwrap(), raw)
        .unwrap();
    let q = end.pipe().unwrap();
    let got = q.dequeue_shared(Some(GUARD)).unwrap().expect("a packet");
    say("held", held.len() + 1);
    // Once the parent has refilled the pipe (capacity 1), this blocks with
    // its packet recorded until the parent kills us. (Stored first, as a
    // value too large to go inline is: enqueue_value of a small one would
    // build nothing while it waits.)
    await_cue("go");
    say("blocking", 1);
    let (slot, held_packet) = {
        let _b = v.busy();
        let slot = v.store_packet(&big_value(-1).encode().unwrap()).unwrap();
        (slot, v.hold(slot))
    };
    let _ = q.enqueue_recorded(slot, held_packet, Some(GUARD * 2));
    drop((held, got));
}

fn batch_value(i: i64) -> Value {
    Value::Tab(vec![
        (ks("i"), Value::Int(i)),
        (
            ks("text"),
            Value::Str(format!("packet {i} of a batch, ").repeat(3)),
        ),
    ])
}

/// Take 4 packets of pipe "many" with the copy form and 28 as handles (kept),
/// then block in a batch enqueue on the full pipe "full" until killed.
fn child_hoard_many(name: &str) {
    let region = attach(name);
    let dir = shmtools_core::Directory::open(&region).unwrap();
    let queue = |p: &str| dir.queue(&dir.find(p).unwrap().expect("the pipe")).unwrap();
    let (many, full) = (queue("many"), queue("full"));
    let mut w = shmtools_core::value::wire::Writer::default();
    say(
        "copied",
        many.dequeue_many_wire(4, Some(GUARD), &mut w).unwrap(),
    );
    let kept = many.dequeue_many_shared(28, Some(GUARD)).unwrap();
    say("took", kept.len());
    say("held", region.session().unwrap().held_count());
    let bytes: Vec<u8> = (0..10)
        .flat_map(|i| batch_value(100 + i).encode().unwrap())
        .collect();
    say("blocking", 1);
    let _ = full.enqueue_wire_many(&bytes, 10, Some(GUARD * 2));
    drop(kept);
}

#[test]
fn a_process_killed_holding_batch_dequeued_handles_and_waiting_in_a_batch_enqueue_gives_back_exactly_those(
) {
    let name = unique_name("holders-", "many");
    let _rm = RemoveOnDrop(name.clone());
    let region = create(&name, 4 << 20);
    let many =
        shmtools_core::ServerSide::start(&name, "many", 64, &common::attach_opts(GUARD)).unwrap();
    let full =
        shmtools_core::ServerSide::start(&name, "full", 2, &common::attach_opts(GUARD)).unwrap();
    let (mq, fq) = (many.pipe().unwrap(), full.pipe().unwrap());
    let vals = region.values().unwrap();
    let base = baseline(&vals);
    let bytes: Vec<u8> = (0..40)
        .flat_map(|i| batch_value(i).encode().unwrap())
        .collect();
    assert_eq!(mq.enqueue_wire_many(&bytes, 40, Some(GUARD)).unwrap(), 40);
    for i in 0..2 {
        assert!(fq.enqueue_value(&batch_value(-1 - i), Some(GUARD)).unwrap());
    }

    let mut child = spawn("hoard-many", &name, &[]);
    assert_eq!(child.expect_u64("copied"), 4);
    assert_eq!(child.expect_u64("took"), 28);
    assert_eq!(
        child.expect_u64("held"),
        28,
        "one ledger entry per handle, none for the copies"
    );
    child.expect("blocking");
    // (a condition, with a guard) until the child sleeps waiting for room
    let sleepers = region
        .span()
        .u32_at(fq.sleepers_offset(shmtools_core::WaitFor::NotFull))
        .unwrap();
    let give_up = std::time::Instant::now() + GUARD;
    while sleepers.load(Relaxed) == 0 {
        assert!(
            std::time::Instant::now() < give_up,
            "the child never waited"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    let pid = child.pid();
    let h = region.holder_list().unwrap();
    let h = h
        .iter()
        .find(|h| h.pid == pid)
        .expect("the child is listed");
    assert_eq!(h.held, 28, "nothing of the waiting batch is held: {h:?}");

    child.kill_and_reap();
    let gc = region.gc().unwrap();
    assert_eq!(gc.reclaim.sessions, 1, "{gc:?}");
    assert_eq!(gc.reclaim.references, 28, "{gc:?}");
    assert_eq!(gc.reclaim.uncertain, 0, "killed while asleep: {gc:?}");

    // What is still queued comes out whole; then the pool is as it was.
    let mut left = Vec::new();
    for s in mq.dequeue_many_shared(64, Some(Duration::ZERO)).unwrap() {
        left.push(s.load().unwrap());
    }
    assert_eq!(left, (32..40).map(batch_value).collect::<Vec<_>>());
    for i in 0..2 {
        assert_eq!(
            fq.dequeue_value(Some(Duration::ZERO)).unwrap(),
            Some(batch_value(-1 - i))
        );
    }
    assert_eq!(fq.len(), 0, "the waiting batch never went in");
    let used = |b: common::Baseline| (b.stats.bytes_used, b.stats.blocks_used);
    assert_eq!(used(baseline(&vals)), used(base));
    let r = region.repair().unwrap();
    assert_eq!((r.blocks_freed, r.refcounts_fixed), (0, 0), "{r:?}");
    drop((many, full));
    assert!(region.destroy().unwrap());
}

#[test]
fn a_killed_process_has_its_values_blocks_and_packets_given_back() {
    let name = unique_name("holders-", "hoard");
    let _rm = RemoveOnDrop(name.clone());
    let region = create(&name, 4 << 20);
    let server =
        shmtools_core::ServerSide::start(&name, "full", 1, &common::attach_opts(GUARD)).unwrap();
    let q = server.pipe().unwrap();
    let vals = region.values().unwrap();
    let base = baseline(&vals);

    assert!(q.enqueue_value(&big_value(1000), Some(GUARD)).unwrap());
    let mut child = spawn_with_cues("hoard", &name, &[]);
    assert_eq!(child.expect_u64("held"), 301);
    assert!(q.enqueue_value(&big_value(1001), Some(GUARD)).unwrap());
    child.send("go");
    child.expect("blocking");
    // (a condition, with a guard) until its packet waits in its ledger
    let give_up = std::time::Instant::now() + GUARD;
    let held = || {
        region
            .holder_list()
            .unwrap()
            .iter()
            .find(|h| h.pid == child.pid())
            .map_or(0, |h| h.held)
    };
    while held() < 303 {
        assert!(
            std::time::Instant::now() < give_up,
            "the packet was never recorded"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    let pid = child.pid();
    let listed = region.holder_list().unwrap();
    let h = listed
        .iter()
        .find(|h| h.pid == pid)
        .expect("the child is listed");
    assert!(h.alive && !h.own, "{h:?}");
    assert_eq!(h.held, 303, "values, the raw block, two packets: {h:?}");

    // While it lives, nothing of it is reclaimed and repair is refused.
    assert_eq!(region.reclaim_dead().unwrap().sessions, 0);
    let e = region.repair().unwrap_err();
    assert_eq!(e.code(), ErrorCode::Busy, "{e}");

    child.kill_and_reap();
    let gc = region.gc().unwrap();
    assert_eq!(gc.reclaim.sessions, 1, "{gc:?}");
    assert_eq!(gc.reclaim.raw_blocks, 1, "{gc:?}");
    // 300 values, the dequeued packet and the one waiting for room.
    assert_eq!(gc.reclaim.references, 302, "{gc:?}");
    assert_eq!(
        gc.reclaim.uncertain, 0,
        "it was killed while asleep: {gc:?}"
    );
    assert!(region.holder_list().unwrap().iter().all(|h| h.pid != pid));

    // Only the packet still queued remains; once taken, the pool is back to
    // where it started, and a repair finds nothing to do.
    let left = q.dequeue_value(Some(Duration::ZERO)).unwrap();
    assert_eq!(left, Some(big_value(1001)));
    assert_eq!(baseline(&vals), base);
    let r = region.repair().unwrap();
    assert_eq!((r.blocks_freed, r.refcounts_fixed), (0, 0), "{r:?}");
    drop(server);
    assert!(region.destroy().unwrap());
}

#[test]
fn a_record_whose_pid_lives_on_under_another_start_time_is_reclaimed() {
    let name = unique_name("holders-", "pidreuse");
    let _rm = RemoveOnDrop(name.clone());
    let region = create(&name, 1 << 20);
    let vals = region.values().unwrap();
    let base = baseline(&vals);
    {
        // A second session of this process, with a value recorded in it...
        let other = attach(&name);
        let ov = other.values().unwrap();
        let s = Shared::new(ov, &big_value(7)).unwrap();
        std::mem::forget(s); // as if the process vanished holding it
                             // ...whose record is made to look like an earlier process that had
                             // our pid: same pid, different start time.
        let t = region.holders().unwrap();
        let idx = other.session().unwrap().index();
        let rec = t.record(idx).unwrap();
        rec.start_time.fetch_add(1, Relaxed);
        let got = region.reclaim_dead().unwrap();
        assert_eq!((got.sessions, got.references), (1, 1), "{got:?}");
        // `other` going away must not end a record that is no longer its.
    }
    assert_eq!(baseline(&vals), base);
    assert_eq!(region.holder_list().unwrap().len(), 1);
    assert!(region.destroy().unwrap());
}

#[test]
fn repair_frees_what_no_ledger_knew_and_corrects_counts_once_alone() {
    let name = unique_name("holders-", "repair");
    let _rm = RemoveOnDrop(name.clone());
    let region = create(&name, 1 << 20);
    let vals = region.values().unwrap();
    let base = baseline(&vals);

    // A value taken without recording it (a raw slot), a counted reference
    // too many on a recorded one, and a raw block nobody recorded.
    let lost = vals.store(&big_value(1)).unwrap();
    let kept = Shared::new(vals, &big_value(2)).unwrap();
    vals.retain(kept.slot()).unwrap();
    let stray = region.pool().unwrap().allocate(777).unwrap();

    // Not while another process is attached.
    let mut sitter = spawn("sit", &name, &[]);
    sitter.expect("ready");
    assert_eq!(region.repair().unwrap_err().code(), ErrorCode::Busy);
    sitter.kill_and_reap();

    let r = region.repair().unwrap();
    assert_eq!(r.refcounts_fixed, 1, "{r:?}");
    assert!(
        r.blocks_freed >= 2,
        "the lost value's blocks and the stray block: {r:?}"
    );
    assert_eq!(kept.refcount().unwrap(), 1);
    assert_eq!(kept.load().unwrap(), big_value(2));
    // The stale slot of the freed value is refused, not misread.
    assert!(vals.load(lost).is_err());
    let _ = stray;
    drop(kept);
    assert_eq!(baseline(&vals), base);
    assert_eq!(region.holders().unwrap().header().repairs.load(Relaxed), 1);
    assert!(region.destroy().unwrap());
}

#[test]
fn the_ledger_grows_and_shrinks_back_and_a_clean_close_gives_everything_back() {
    let name = unique_name("holders-", "ledger");
    let _rm = RemoveOnDrop(name.clone());
    let region = create(&name, 4 << 20);
    let vals = region.values().unwrap();
    let base = baseline(&vals);
    let many: Vec<_> = (0..1000)
        .map(|i| Shared::new(vals, &Value::Str(format!("value number {i}"))).unwrap())
        .collect();
    let me = region.holder_list().unwrap();
    assert_eq!(me.len(), 1);
    assert!(me[0].own && me[0].alive && me[0].held == 1000, "{me:?}");
    drop(many);
    assert_eq!(region.holder_list().unwrap()[0].held, 0);
    // (the same bytes and blocks; the small ledger may sit elsewhere now)
    let used = |b: common::Baseline| (b.stats.bytes_used, b.stats.blocks_used);
    assert_eq!(
        used(baseline(&vals)),
        (base.stats.bytes_used, base.stats.blocks_used),
        "the grown ledger went back to its first size"
    );

    // A second attachment that still holds values when it is dropped.
    {
        let other = attach(&name);
        let ov = other.values().unwrap();
        for i in 0..10 {
            std::mem::forget(Shared::new(ov, &big_value(i)).unwrap());
        }
        assert_eq!(region.holder_list().unwrap().len(), 2);
    }
    assert_eq!(region.holder_list().unwrap().len(), 1);
    assert_eq!(
        used(baseline(&vals)),
        (base.stats.bytes_used, base.stats.blocks_used)
    );
    assert!(region.destroy().unwrap());
}

#[test]
fn a_damaged_ledger_entry_does_not_stop_a_reclaim_and_a_repair_finishes_it() {
    let name = unique_name("holders-", "damaged");
    let _rm = RemoveOnDrop(name.clone());
    let region = create(&name, 1 << 20);
    let vals = region.values().unwrap();
    let base = baseline(&vals);
    {
        // A second session holding three values, then made to look like a
        // process that died (see the pid-reuse test) with one of its ledger
        // entries overwritten.
        let other = attach(&name);
        let ov = other.values().unwrap();
        for i in 0..3 {
            std::mem::forget(Shared::new(ov, &big_value(i)).unwrap());
        }
        let t = region.holders().unwrap();
        let rec = t.record(other.session().unwrap().index()).unwrap();
        let ledger = rec.ledger.load(Relaxed);
        let first = region.span().u64_at(ledger).unwrap();
        let e = first.load(Relaxed);
        assert_ne!(e, 0, "the first value is recorded in entry 0");
        first.store((e >> 56) << 56 | 16, Relaxed); // same kind, no object there
        rec.start_time.fetch_add(1, Relaxed);

        let gc = region.gc().unwrap();
        assert_eq!(gc.reclaim.sessions, 1, "{gc:?}");
        assert_eq!(gc.reclaim.references, 2, "the two intact entries: {gc:?}");
        assert_eq!(gc.reclaim.uncertain, 1, "{gc:?}");
        // Alone, gc repairs at once: the value behind the damaged entry is
        // unreachable and goes back to the pool.
        let r = gc
            .repair
            .expect("a repair was owed and this process is alone");
        assert!(r.blocks_freed >= 1, "{r:?}");
        assert!(!gc.repair_pending);
    }
    assert_eq!(baseline(&vals), base);
    assert!(region.destroy().unwrap());
}

#[test]
fn a_reference_the_ledger_cannot_take_forbids_repair_by_its_process_until_it_closes() {
    let name = unique_name("holders-", "unrecorded");
    let _rm = RemoveOnDrop(name.clone());
    let region = create(&name, 256 << 10);
    let vals = region.values().unwrap();
    let base = baseline(&vals);
    {
        let worker = attach(&name);
        let wv = worker.values().unwrap();
        let pool = worker.pool().unwrap();
        // Fill the ledger's first block exactly, keep one more value aside,
        // then fill the pool so the ledger cannot double.
        let start = shmtools_core::holders::LEDGER_START as usize;
        let held: Vec<_> = (0..start)
            .map(|i| Shared::new(wv, &Value::Str(format!("recorded value {i:04}"))).unwrap())
            .collect();
        let extra = wv.store(&Value::Str("one value too many".into())).unwrap();
        let mut filler = Vec::new();
        while let Ok(off) = pool.allocate(start as u64 * 16) {
            filler.push(off);
        }
        let unrecorded = Shared::from_owned(wv, extra);
        assert_eq!(
            worker
                .holder_list()
                .unwrap()
                .iter()
                .find(|h| h.own)
                .unwrap()
                .held,
            start as u64,
            "the extra value could not be recorded"
        );

        for who in [&region, &worker] {
            let e = who.repair().unwrap_err();
            assert_eq!(e.code(), ErrorCode::Busy, "{e}");
            assert!(e.to_string().contains("could not record"), "{e}");
        }
        let gc = region.gc().unwrap();
        assert!(gc.repair.is_none() && gc.repair_pending, "{gc:?}");
        // It stays usable meanwhile.
        assert_eq!(
            unrecorded.load().unwrap(),
            Value::Str("one value too many".into())
        );
        for off in filler {
            pool.free(off).unwrap();
        }
        drop((held, unrecorded));
    }
    // Closed: the repair it owed runs, and finds everything in order.
    let gc = region.gc().unwrap();
    let r = gc
        .repair
        .expect("the owed repair runs once the session closed");
    assert_eq!((r.blocks_freed, r.refcounts_fixed), (0, 0), "{r:?}");
    assert_eq!(baseline(&vals), base);
    assert!(region.destroy().unwrap());
}
