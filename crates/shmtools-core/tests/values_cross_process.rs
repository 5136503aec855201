//! Values shared between real processes.
//!
//! Child processes are this test binary run again (`current_exe`) with only
//! the `child_entry` test selected and `SHMT_CHILD_ROLE` set; without that
//! variable `child_entry` does nothing, so it passes in a normal run. A child
//! reports to its parent with `SHMT:key=value` lines on stdout and takes its
//! cues ("go", "release") as lines on stdin, so the parent decides the order
//! of the steps that matter without any sleeping (the helpers for both sides
//! are in common/mod.rs).
//!
//! Every region name holds this process's id and a test tag, and every test
//! removes its names at the end (also when it fails).

use shmtools_core::value::wire::{T_ARR, T_TAB};
use shmtools_core::{Elem, ErrorCode, Key, KeyRef, Slot, Value, Values};

mod common;

use common::{
    attach, await_cue, baseline, child_role, create, env_u64, ks, say, spawn_with_cues,
    unique_name, Proc, RemoveOnDrop, Rng, ID, OFFSET, OPS, SEED,
};

const CHILDREN: &str = "SHMT_CHILDREN";

// ---- helpers ----------------------------------------------------------------

fn unique(tag: &str) -> String {
    unique_name("values-", tag)
}

/// FNV-1a 64, to compare values across processes in one short line.
fn digest(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ *b as u64).wrapping_mul(0x0100_0000_01b3)
    })
}

fn s(x: &str) -> Value {
    Value::Str(x.to_string())
}

/// Read a value out of a container slot (a new reference) and drop it again.
fn take(vals: &Values<'_>, got: Option<Slot>) -> Option<Value> {
    got.map(|v| {
        let out = vals.load(v).expect("load a value read from a container");
        vals.release(v).expect("release it");
        out
    })
}

// ---- child processes (see common/mod.rs) ------------------------------------

/// The body of every child process; a no-op in the parent's own run.
#[test]
fn child_entry() {
    let Some((role, name)) = child_role() else {
        return;
    };
    match role.as_str() {
        "mutate" => child_mutate(&name),
        "hammer" => child_hammer(&name),
        "bulk" => child_bulk(&name),
        other => panic!("unknown child role {other}"),
    }
}

// ---- one process changes what another made ----------------------------------

fn shared_start() -> Value {
    Value::Tab(vec![
        (ks("n"), Value::Int(1)),
        (ks("gone"), s("bye")),
        (ks("list"), Value::Arr(vec![Value::Int(1), Value::Int(2)])),
        (
            ks("nested"),
            Value::Tab(vec![(ks("deep"), Value::Arr(vec![]))]),
        ),
        (Key::Int(-7), Value::BigInt(true, vec![1, 2, 3])),
    ])
}

/// What `child_mutate` leaves behind.
fn shared_after() -> Value {
    Value::Tab(vec![
        (ks("n"), Value::Int(2)),
        (
            ks("list"),
            Value::Arr(vec![
                Value::Int(1),
                Value::Int(2),
                s("pushed by the child"),
                Value::Tab(vec![(ks("k"), Value::Int(7))]),
            ]),
        ),
        (
            ks("nested"),
            Value::Tab(vec![(ks("deep"), Value::Arr(vec![Value::UInt(99)]))]),
        ),
        (Key::Int(-7), Value::Typed(Elem::U16, vec![1, 0, 2, 0])),
        (ks("from_child"), s("héllo from the child 😀")),
        (ks("made"), Value::Bytes((0..=255).collect())),
    ])
}

/// Find the parent's Tab by its offset and change it in every way: set,
/// replace, delete, push into nested containers, hand over a new object.
fn child_mutate(name: &str) {
    let region = attach(name);
    let vals = region.values().unwrap();
    let t = vals.slot_of(env_u64(OFFSET)).unwrap();
    assert_eq!(t.tag, T_TAB);
    vals.retain(t).unwrap();
    assert_eq!(vals.refcount(t).unwrap(), 2, "the parent's and ours");
    vals.tab_set(t, KeyRef::str("n"), vals.store(&Value::Int(2)).unwrap())
        .unwrap();
    assert!(vals.tab_delete(t, KeyRef::str("gone")).unwrap());
    vals.tab_set(
        t,
        KeyRef::str("from_child"),
        vals.store(&s("héllo from the child 😀")).unwrap(),
    )
    .unwrap();
    let list = vals.tab_get(t, KeyRef::str("list")).unwrap().unwrap();
    assert_eq!(list.tag, T_ARR);
    vals.arr_push(list, vals.store(&s("pushed by the child")).unwrap())
        .unwrap();
    vals.arr_push(
        list,
        vals.store(&Value::Tab(vec![(ks("k"), Value::Int(7))]))
            .unwrap(),
    )
    .unwrap();
    vals.release(list).unwrap();
    let nested = vals.tab_get(t, KeyRef::str("nested")).unwrap().unwrap();
    let deep = vals.tab_get(nested, KeyRef::str("deep")).unwrap().unwrap();
    vals.arr_push(deep, vals.store(&Value::UInt(99)).unwrap())
        .unwrap();
    vals.release(deep).unwrap();
    vals.release(nested).unwrap();
    vals.tab_set(
        t,
        KeyRef::Int(-7),
        vals.store(&Value::Typed(Elem::U16, vec![1, 0, 2, 0]))
            .unwrap(),
    )
    .unwrap();
    // An object made here, moved into the parent's Tab by reference.
    let made = vals.store(&Value::Bytes((0..=255).collect())).unwrap();
    vals.tab_set(t, KeyRef::str("made"), made).unwrap();
    say("keys", vals.tab_len(t).unwrap());
    vals.release(t).unwrap();
    say("done", 1);
}

#[test]
fn a_tab_changed_by_another_process_is_seen_changed_by_its_creator() {
    let name = unique("mutate");
    let _rm = RemoveOnDrop(name.clone());
    let region = create(&name, 1 << 20);
    let vals = region.values().unwrap();
    let base = baseline(&vals);
    let t = vals.store(&shared_start()).unwrap();
    let out = spawn_with_cues("mutate", &name, &[(OFFSET, t.bits.to_string())]).finish_ok();
    assert_eq!(out["keys"], "6");
    assert_eq!(
        vals.refcount(t).unwrap(),
        1,
        "the child gave its reference back"
    );
    let want = shared_after();
    assert_eq!(vals.load(t).unwrap(), want);
    let Value::Tab(entries) = &want else {
        unreachable!()
    };
    let keys: Vec<Key> = entries.iter().map(|(k, _)| k.clone()).collect();
    assert_eq!(vals.tab_keys(t).unwrap(), keys);
    assert_eq!(vals.tab_get(t, KeyRef::str("gone")).unwrap(), None);
    // Objects the child allocated are freed here, and ones we allocated were
    // freed there: everything adds up.
    vals.release(t).unwrap();
    assert_eq!(baseline(&vals), base);
    assert!(region.destroy().unwrap());
}

// ---- several processes share one Tab ------------------------------------------

const PRIVATE_KEYS: u64 = 16;
const SHARED_KEYS: u64 = 8;
const MAX_PUSHES: u64 = 400;

fn private_key(id: u64, j: u64) -> String {
    format!("c{id}-{j}")
}

fn shared_key(j: u64) -> String {
    format!("shared-{j}")
}

/// A value written to a shared key by process `id` at step `i`; every
/// shape carries both numbers, so a reader can check it is whole.
fn shared_value(id: u64, i: u64, shape: u64) -> Value {
    let tag = format!("w{id}-{i}");
    match shape % 4 {
        0 => Value::Str(tag),
        1 => Value::Arr(vec![Value::UInt(id), Value::UInt(i), Value::Str(tag)]),
        2 => Value::Tab(vec![
            (ks("w"), Value::UInt(id)),
            (ks("i"), Value::UInt(i)),
            (ks("tag"), Value::Str(tag)),
        ]),
        _ => Value::UInt(id << 32 | i),
    }
}

/// Is `v` one whole value that `shared_value` makes for some writer?
fn is_shared_value(v: &Value, children: u64) -> bool {
    let ok = |id: u64, i: u64| (1..=children).contains(&id) && i < 1 << 32;
    let tagged = |id: u64, i: u64, t: &str| ok(id, i) && t == format!("w{id}-{i}");
    match v {
        Value::Str(t) => t
            .strip_prefix('w')
            .and_then(|r| r.split_once('-'))
            .and_then(|(a, b)| Some((a.parse().ok()?, b.parse().ok()?)))
            .is_some_and(|(id, i)| tagged(id, i, t)),
        Value::Arr(items) => matches!(items.as_slice(),
            [Value::UInt(id), Value::UInt(i), Value::Str(t)] if tagged(*id, *i, t)),
        Value::Tab(entries) => match entries.as_slice() {
            [(kw, Value::UInt(id)), (ki, Value::UInt(i)), (kt, Value::Str(t))] => {
                *kw == ks("w") && *ki == ks("i") && *kt == ks("tag") && tagged(*id, *i, t)
            }
            _ => false,
        },
        Value::UInt(x) => ok(x >> 32, x & 0xffff_ffff),
        _ => false,
    }
}

/// A value for one of a process's own keys.
fn private_value(rng: &mut Rng, id: u64, i: u64) -> Value {
    match rng.below(6) {
        0 => Value::Int(i as i64 - 1000),
        1 => s(&format!("p{id}-{i}-{}", "x".repeat(rng.below(64) as usize))),
        2 => Value::Bytes((0..rng.below(100)).map(|b| b as u8).collect()),
        3 => Value::Arr(vec![Value::UInt(i), s("in arr"), Value::Arr(vec![])]),
        4 => Value::Tab(vec![(
            Key::Int(i as i64),
            Value::BigInt(i.is_multiple_of(2), vec![1, 2]),
        )]),
        _ => Value::Typed(Elem::I32, (i as i32).to_le_bytes().repeat(3)),
    }
}

/// The digest of a process's own keys as `vals` sees them in `t`.
fn private_digest(vals: &Values<'_>, t: Slot, id: u64) -> u64 {
    let entries = (0..PRIVATE_KEYS)
        .map(|j| {
            let k = private_key(id, j);
            let v = take(vals, vals.tab_get(t, KeyRef::str(&k)).unwrap());
            (ks(&k), Value::Arr(v.into_iter().collect()))
        })
        .collect();
    digest(&Value::Tab(entries).encode().unwrap())
}

/// Retain the shared Tab, wait for "go", then set/get/delete its own keys
/// (checked against a model) and the shared ones (checked for wholeness),
/// and push into a shared list; report, wait for "release", release.
fn child_hammer(name: &str) {
    let region = attach(name);
    let vals = region.values().unwrap();
    let id = env_u64(ID);
    let children = env_u64(CHILDREN);
    let ops = env_u64(OPS);
    let mut rng = Rng(env_u64(SEED));
    let t = vals.slot_of(env_u64(OFFSET)).unwrap();
    vals.retain(t).unwrap();
    say("retained", 1);
    await_cue("go");

    let list = vals.tab_get(t, KeyRef::str("list")).unwrap().unwrap();
    let mut mine: Vec<Option<Value>> = vec![None; PRIVATE_KEYS as usize];
    let mut pushes = 0u64;
    let mut shared_reads = 0u64;
    for i in 0..ops {
        let j = rng.below(PRIVATE_KEYS);
        let pk = private_key(id, j);
        let sk = shared_key(rng.below(SHARED_KEYS));
        match rng.below(10) {
            0..=2 => {
                let v = private_value(&mut rng, id, i);
                vals.tab_set(t, KeyRef::str(&pk), vals.store(&v).unwrap())
                    .unwrap();
                mine[j as usize] = Some(v);
            }
            3 => {
                let deleted = vals.tab_delete(t, KeyRef::str(&pk)).unwrap();
                assert_eq!(deleted, mine[j as usize].is_some(), "delete {pk}");
                mine[j as usize] = None;
            }
            4 => {
                let got = take(&vals, vals.tab_get(t, KeyRef::str(&pk)).unwrap());
                assert_eq!(got, mine[j as usize], "get {pk} at step {i}");
            }
            5 | 6 => {
                let v = shared_value(id, i, rng.next());
                vals.tab_set(t, KeyRef::str(&sk), vals.store(&v).unwrap())
                    .unwrap();
            }
            7 => {
                if let Some(v) = take(&vals, vals.tab_get(t, KeyRef::str(&sk)).unwrap()) {
                    assert!(is_shared_value(&v, children), "{sk} holds {v:?}");
                    shared_reads += 1;
                }
            }
            8 => {
                if rng.below(4) == 0 {
                    vals.tab_delete(t, KeyRef::str(&sk)).unwrap();
                } else {
                    assert!(vals.tab_len(t).unwrap() >= 1);
                }
            }
            _ => {
                if pushes < MAX_PUSHES {
                    let v = vals.store(&Value::UInt(id << 32 | pushes)).unwrap();
                    vals.arr_push(list, v).unwrap();
                    pushes += 1;
                }
            }
        }
    }
    for (j, want) in mine.iter().enumerate() {
        let pk = private_key(id, j as u64);
        let got = take(&vals, vals.tab_get(t, KeyRef::str(&pk)).unwrap());
        assert_eq!(&got, want, "final {pk}");
    }
    vals.release(list).unwrap();
    say("digest", private_digest(&vals, t, id));
    say("pushes", pushes);
    say("shared_reads", shared_reads);
    say("done", ops);

    await_cue("release");
    say("refcount_before", vals.refcount(t).unwrap());
    vals.release(t).unwrap();
    say("released", 1);
}

/// When the parent drops its own reference to the shared Tab.
#[derive(Clone, Copy, Debug)]
enum ParentRelease {
    /// Right after the children start working.
    WhileChildrenWork,
    /// Between the children's releases, after this many of them.
    AfterChildren(usize),
    /// After every child has released.
    Last,
}

fn processes_share_one_tab(tag: &str, when: ParentRelease, seed: u64) {
    const N: u64 = 4;
    const OPS_EACH: u64 = 3000;
    let name = unique(tag);
    let _rm = RemoveOnDrop(name.clone());
    let region = create(&name, 8 << 20);
    let vals = region.values().unwrap();
    let base = baseline(&vals);
    let mut start = vec![(ks("list"), Value::Arr(vec![]))];
    start.extend((0..SHARED_KEYS).map(|j| (ks(&shared_key(j)), Value::UInt(1 << 32))));
    let t = vals.store(&Value::Tab(start)).unwrap();

    let mut children: Vec<Proc> = (1..=N)
        .map(|id| {
            spawn_with_cues(
                "hammer",
                &name,
                &[
                    (OFFSET, t.bits.to_string()),
                    (ID, id.to_string()),
                    (CHILDREN, N.to_string()),
                    (OPS, OPS_EACH.to_string()),
                    (SEED, (seed + id).to_string()),
                ],
            )
        })
        .collect();
    for c in &mut children {
        c.expect("retained");
    }
    assert_eq!(vals.refcount(t).unwrap(), N as u32 + 1);
    for c in &mut children {
        c.send("go");
    }
    let mut parent_holds = true;
    if let ParentRelease::WhileChildrenWork = when {
        vals.release(t).unwrap();
        parent_holds = false;
    }
    let mut pushes = Vec::new();
    let mut digests = Vec::new();
    for c in &mut children {
        assert_eq!(c.expect_u64("done"), OPS_EACH);
        pushes.push(c.expect_u64("pushes"));
        digests.push(c.expect_u64("digest"));
        assert!(
            c.expect_u64("shared_reads") > 0,
            "a child read no shared key"
        );
    }
    assert!(pushes.iter().all(|&p| p > 0), "pushes {pushes:?}");

    if parent_holds {
        // Everything every child did is there: its own keys as it left them,
        // its pushes in its order, and whole values under the shared keys.
        for id in 1..=N {
            assert_eq!(
                private_digest(&vals, t, id),
                digests[id as usize - 1],
                "keys of child {id}"
            );
        }
        let list = take(&vals, vals.tab_get(t, KeyRef::str("list")).unwrap());
        let Some(Value::Arr(items)) = list else {
            panic!("the list is gone: {list:?}")
        };
        assert_eq!(items.len() as u64, pushes.iter().sum::<u64>());
        let mut next = vec![0u64; N as usize + 1];
        for v in items {
            let Value::UInt(x) = v else {
                panic!("{v:?} in the list")
            };
            let (id, n) = ((x >> 32) as usize, x & 0xffff_ffff);
            assert_eq!(n, next[id], "pushes of child {id} out of order");
            next[id] += 1;
        }
        for j in 0..SHARED_KEYS {
            if let Some(v) = take(&vals, vals.tab_get(t, KeyRef::str(&shared_key(j))).unwrap()) {
                assert!(v == Value::UInt(1 << 32) || is_shared_value(&v, N), "{v:?}");
            }
        }
    }

    // Release in a random order, the parent at its chosen place; each
    // releaser sees exactly the holders that are left.
    let mut rng = Rng(seed);
    let mut order: Vec<usize> = (0..N as usize).collect();
    for i in (1..order.len()).rev() {
        order.swap(i, rng.below(i as u64 + 1) as usize);
    }
    let mut holders = N as u32 + u32::from(parent_holds);
    for (done, &k) in order.iter().enumerate() {
        if let ParentRelease::AfterChildren(n) = when {
            if n == done {
                assert_eq!(vals.refcount(t).unwrap(), holders);
                vals.release(t).unwrap();
                parent_holds = false;
                holders -= 1;
            }
        }
        let c = &mut children[k];
        c.send("release");
        assert_eq!(c.expect_u64("refcount_before"), u64::from(holders));
        c.expect("released");
        holders -= 1;
    }
    if parent_holds {
        assert_eq!(vals.refcount(t).unwrap(), 1, "only the parent's is left");
        vals.release(t).unwrap();
    }
    for c in children {
        c.finish_ok();
    }
    assert_eq!(
        baseline(&vals),
        base,
        "the pool is as before the Tab was stored"
    );
    assert!(vals.refcount(t).is_err(), "the Tab is gone");
    assert!(region.destroy().unwrap());
}

#[test]
fn four_processes_sharing_a_tab_with_the_parent_releasing_last_leave_the_pool_as_it_was() {
    processes_share_one_tab("share-last", ParentRelease::Last, 0x5EED_1000);
}

#[test]
fn four_processes_sharing_a_tab_with_the_parent_releasing_between_them_leave_the_pool_as_it_was() {
    processes_share_one_tab("share-mid", ParentRelease::AfterChildren(2), 0x5EED_2000);
}

#[test]
fn four_processes_sharing_a_tab_the_parent_dropped_while_they_work_leave_the_pool_as_it_was() {
    processes_share_one_tab("share-early", ParentRelease::WhileChildrenWork, 0x5EED_3000);
}

/// An offset handed out for a value that has since been freed is refused
/// through another mapping of the region (as a child given a stale offset
/// would see it): an error, not a crash, and nothing changes.
#[test]
fn an_offset_of_a_freed_value_is_refused_through_another_mapping() {
    let name = unique("stale");
    let _rm = RemoveOnDrop(name.clone());
    let region = create(&name, 1 << 20);
    let vals = region.values().unwrap();
    let base = baseline(&vals);
    let t = vals.store(&shared_start()).unwrap();
    let fence = vals.store(&s("fence")).unwrap();
    vals.release(t).unwrap();
    let other = attach(&name);
    let ovals = other.values().unwrap();
    let e = ovals.slot_of(t.bits).expect_err("a freed Tab");
    assert!(
        [ErrorCode::InvalidArg, ErrorCode::Corrupt, ErrorCode::Closed].contains(&e.code()),
        "{e}"
    );
    assert!(ovals.load(t).is_err());
    assert!(ovals.release(t).is_err());
    drop(other);
    vals.release(fence).unwrap();
    assert_eq!(baseline(&vals), base);
    assert!(region.destroy().unwrap());
}

// ---- large values built by several processes at once ------------------------

const ROWS: &str = "SHMT_ROWS";

/// Rows as a worker returns them: small tables of a few shapes, with
/// strings too long to live in a slot, and a nested list now and then.
fn bulk_value(id: u64, round: u64, rows: u64) -> Value {
    let rows = (0..rows)
        .map(|i| {
            let mut row = vec![
                (
                    ks("id"),
                    Value::Int((id * 1_000_000 + round * 10_000 + i) as i64),
                ),
                (ks("name"), s(&format!("worker {id} row {i}"))),
                (ks("score"), Value::F64(i as f64 * 0.5)),
            ];
            if i % 7 == 0 {
                row.push((
                    ks("tags"),
                    Value::Arr(vec![s("a tag of some length"), Value::UInt(i)]),
                ));
            }
            Value::Tab(row)
        })
        .collect();
    Value::Tab(vec![
        (ks("worker"), Value::UInt(id)),
        (ks("rows"), Value::Arr(rows)),
    ])
}

/// Wait for "go"; then, round after round, store a large value, read it
/// back whole, and release the one of the round before (so frees of one
/// value interleave with the build of the next, here and in the others).
fn child_bulk(name: &str) {
    let region = attach(name);
    let vals = region.values().unwrap();
    let id = env_u64(ID);
    let rounds = env_u64(OPS);
    let rows = env_u64(ROWS);
    say("attached", 1);
    await_cue("go");
    let mut last = None;
    for round in 0..rounds {
        let v = bulk_value(id, round, rows);
        let slot = vals.store(&v).unwrap();
        assert!(
            vals.load(slot).unwrap() == v,
            "child {id}: round {round} came back changed"
        );
        if let Some(old) = last.replace(slot) {
            vals.release(old).unwrap();
        }
    }
    if let Some(old) = last {
        vals.release(old).unwrap();
    }
    say("done", rounds);
}

/// Several processes building large values at once each get theirs back
/// whole, and the pool is as it was once they are released. (Builds carve
/// their blocks in runs, so this is where runs of one process meet the
/// allocations, runs and frees of the others.)
#[test]
fn four_processes_building_large_values_at_once_get_them_whole_and_leave_the_pool_as_it_was() {
    const N: u64 = 4;
    let name = unique("bulk");
    let _rm = RemoveOnDrop(name.clone());
    let region = create(&name, 64 << 20);
    let vals = region.values().unwrap();
    let base = baseline(&vals);
    let mut children: Vec<Proc> = (1..=N)
        .map(|id| {
            spawn_with_cues(
                "bulk",
                &name,
                &[
                    (ID, id.to_string()),
                    (OPS, "12".into()),
                    (ROWS, "3000".into()),
                ],
            )
        })
        .collect();
    for c in &mut children {
        c.expect("attached");
    }
    for c in &mut children {
        c.send("go");
    }
    // The parent builds and frees too, meanwhile.
    for round in 0..12 {
        let v = bulk_value(0, round, 1000);
        let slot = vals.store(&v).unwrap();
        assert!(
            vals.load(slot).unwrap() == v,
            "parent: round {round} came back changed"
        );
        vals.release(slot).unwrap();
    }
    for c in &mut children {
        assert_eq!(c.expect_u64("done"), 12);
    }
    for c in children {
        c.finish_ok();
    }
    assert_eq!(baseline(&vals), base, "the pool is as it was");
    assert!(region.destroy().unwrap());
}
