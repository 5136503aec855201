//! Writers SIGKILLed inside container mutations, across real processes.
//!
//! A child mutates one shared table and one shared list as fast as it can
//! (sets that replace, append and grow; deletes; pushes, pops, replacements)
//! and is killed at a random moment; the parent then reads both. Whenever the
//! kill landed inside a mutation, the container's lock is held by a dead
//! thread: the parent takes it over and rebuilds the container (counted by
//! `containers_recovered`). What must hold: no hang, no error reading either
//! container after any kill, every key and value one the child could have
//! written, the pool consistent; at the end, after the dead are reclaimed and
//! a repair has returned what the dead writers had in hand, releasing both
//! containers brings the pool back to its starting figures.
//!
//! `SHMT_KILLS_SEED=<n>` replays a run's kill schedule.

mod common;
mod fuzz_support;

use std::time::Duration;

use common::{
    attach, baseline, child_role, create, env_u64, say, seed_from_env, spawn, unique_name,
    RemoveOnDrop, Rng, OFFSET, SEED,
};
use fuzz_support::Watchdog;
use shmtools_core::{Key, KeyRef, Shared, Value};

const ROUNDS: u64 = 80;
const KEYS: u64 = 48;

#[test]
fn child_entry() {
    let Some((role, name)) = child_role() else {
        return;
    };
    assert_eq!(role, "mutate", "unknown child role");
    let region = attach(&name);
    let v = region.values().unwrap();
    let offs = env_u64(OFFSET);
    let own = |off: u64| {
        let s = v.slot_of(off).unwrap();
        v.retain(s).unwrap();
        Shared::from_owned(v, s)
    };
    let (t, a) = (own(offs >> 32), own(offs & 0xFFFF_FFFF));
    let mut rng = Rng(env_u64(SEED));
    let value = |rng: &mut Rng, n: u64| match rng.below(4) {
        0 => Value::Int(n as i64),
        1 => Value::Str(format!("v{n} and enough text to need a block of its own")),
        2 => Value::Tab(vec![(
            Key::Int(1),
            Value::Str(format!("v{n} nested, long enough")),
        )]),
        _ => Value::None,
    };
    let _b = v.busy();
    for n in 0.. {
        if n == 200 {
            say("ready", 1);
        }
        let k = rng.below(KEYS) as i64;
        match rng.below(6) {
            0..=1 => {
                let s = v.store(&value(&mut rng, n)).unwrap();
                v.tab_set(t.slot(), KeyRef::Int(k), s).unwrap();
            }
            2 => {
                v.tab_delete(t.slot(), KeyRef::Int(k)).unwrap();
            }
            3 => {
                let s = v.store(&value(&mut rng, n)).unwrap();
                v.arr_push(a.slot(), s).unwrap();
            }
            4 => {
                let len = v.arr_len(a.slot()).unwrap();
                if len > 0 {
                    let s = v.store(&value(&mut rng, n)).unwrap();
                    v.arr_set(a.slot(), rng.below(len), s).unwrap();
                }
            }
            _ => {
                if let Some(s) = v.arr_pop(a.slot()).unwrap() {
                    v.release(s).unwrap();
                }
            }
        }
    }
}

/// A value the child could have written (or None, what a torn replacement
/// becomes).
fn plausible(v: &Value) -> bool {
    match v {
        Value::Int(_) | Value::None => true,
        Value::Str(s) => s.starts_with('v'),
        Value::Tab(e) => e.len() == 1 && matches!(&e[0].1, Value::Str(s) if s.starts_with('v')),
        _ => false,
    }
}

#[test]
fn writers_killed_inside_container_mutations_leave_consistent_containers() {
    let seed = seed_from_env("SHMT_KILLS_SEED");
    // A hang (a lock never taken over) must fail the run, not stall it.
    let _watchdog = Watchdog::new(format!("container_kills (seed {seed})"));
    eprintln!("kill schedule seed {seed} (SHMT_KILLS_SEED={seed} replays it)");
    let name = unique_name("kills-", "containers");
    let _rm = RemoveOnDrop(name.clone());
    let region = create(&name, 16 << 20);
    let vals = region.values().unwrap();
    let base = baseline(&vals);
    let recovered_at_start = shmtools_core::value::containers_recovered();
    // Small starting capacities, so the child's writes grow both often.
    let t = Shared::from_owned(vals, vals.tab_new(2).unwrap());
    let a = Shared::from_owned(vals, vals.arr_new(1).unwrap());
    assert!(t.slot().bits < 1 << 32 && a.slot().bits < 1 << 32);
    let offs = t.slot().bits << 32 | a.slot().bits;

    let mut rng = Rng(seed);
    for round in 0..ROUNDS {
        let mut child = spawn(
            "mutate",
            &name,
            &[(OFFSET, offs.to_string()), (SEED, rng.next().to_string())],
        );
        child.expect("ready");
        std::thread::sleep(Duration::from_micros(rng.below(3000)));
        child.kill_and_reap();

        let what = format!("round {round} (seed {seed})");
        let keys = vals
            .tab_keys(t.slot())
            .unwrap_or_else(|e| panic!("{what}: table keys: {e}"));
        for k in &keys {
            assert!(
                matches!(k, Key::Int(i) if (0..KEYS as i64).contains(i)),
                "{what}: a key the child never wrote: {k:?}"
            );
        }
        let mut sorted = keys.clone();
        sorted.sort_by_key(|k| format!("{k:?}"));
        sorted.dedup();
        assert_eq!(sorted.len(), keys.len(), "{what}: a key twice: {keys:?}");
        let len = vals.tab_len(t.slot()).unwrap();
        assert_eq!(len, keys.len() as u64, "{what}: len vs keys");
        for (label, c) in [("table", &t), ("list", &a)] {
            let got = c
                .load()
                .unwrap_or_else(|e| panic!("{what}: loading the {label}: {e}"));
            let items: Vec<Value> = match got {
                Value::Tab(e) => e.into_iter().map(|(_, v)| v).collect(),
                Value::Arr(v) => v,
                other => panic!("{what}: the {label} is now {other:?}"),
            };
            for v in &items {
                assert!(plausible(v), "{what}: a value never written: {v:?}");
            }
        }
        if let Err(e) = vals.pool().check() {
            panic!("{what}: pool check: {e}");
        }
    }
    let recovered = shmtools_core::value::containers_recovered() - recovered_at_start;
    eprintln!("{ROUNDS} kills; containers rebuilt after a kill inside a mutation: {recovered}");
    // At random moments, a child spends a good share of its time inside a
    // container's lock; 80 kills that all miss it do not happen in practice.
    assert!(
        recovered > 0,
        "no kill landed inside a mutation: the test did not test recovery"
    );

    // Reclaim the dead and repair what they had in hand, then let go of both
    // containers: the pool is as it was.
    let gc = region.gc().unwrap();
    assert!(!gc.repair_pending, "alone, the owed repair runs: {gc:?}");
    drop((t, a));
    let r = region.repair().unwrap();
    assert_eq!(r.refcounts_fixed, 0, "{r:?}");
    let now = baseline(&vals);
    assert_eq!(
        (now.stats.bytes_used, now.stats.blocks_used),
        (base.stats.bytes_used, base.stats.blocks_used),
        "seed {seed}: the pool is back to its starting figures"
    );
}
