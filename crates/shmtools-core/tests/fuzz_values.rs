//! Fuzz target for the region → value readers (value/mod.rs, store.rs,
//! tab.rs, arr.rs): random value trees, stored, then damaged, then read,
//! changed and released through the public API; and `slot_of` (what
//! `region.valueAt(offset)` calls) on arbitrary offsets.
//!
//! src/value/tests.rs already damages one fixed sample 600 times; this target
//! adds random trees (any mix of kinds, nesting, inline and separate table
//! blocks, long string keys) and damage anywhere in their blocks, block
//! headers included.
//!
//! Two kinds of case, by the seed: "read" cases damage any byte of the
//! value's blocks but lock words and then only read and release; "change"
//! cases also change every container, so they leave alone what would send
//! those writes somewhere else (block headers and the links to entries,
//! index and element blocks): a write through a redirected link may land on
//! a lock word, and a lock word naming a live thread is a wait nobody can
//! cut short (SECURITY.md).
//!
//! Properties: no panic; every error carries a code a reader of damaged
//! bytes may give (READ / WRITE in fuzz_support); the pool's `check()`
//! afterwards passes or reports corruption; `slot_of` of an offset that is
//! not a live value is an error with ERR_SHM_INVALID_ARG (ERR_SHM_CLOSED for
//! a released one), and of a live one gives a value that loads.
//!
//! Replay: proptest prints the failing input (tree and seed) and records it
//! in tests/fuzz_values.proptest-regressions.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};

use proptest::prelude::*;
use shmtools_core::mem::Span;
use shmtools_core::value::wire::{T_ARR, T_STR, T_TAB};
use shmtools_core::value::{ENTRY_SIZE, SLOT_SIZE};
use shmtools_core::{ErrorCode, Key, KeyRef, Pool, Slot, Value, Values};

mod common;
mod fuzz_support;

use common::{create, unique_name, RemoveOnDrop, Rng};
use fuzz_support::{arb_key, arb_value, carve, scribble, tolerate, Watchdog, ASKED, READ, WRITE};

// Byte offsets inside a Tab / Arr object (docs/LAYOUT.md, "Values").
const LOCK: (u64, u64) = (16, 32);
const TAB_USED: u64 = 40;
const TAB_CAP: u64 = 48;
const TAB_ENTRIES: u64 = 56;
const TAB_INDEX: u64 = 64;
const ARR_LEN: u64 = 32;
const ARR_ELEMS: u64 = 48;

fn word(span: Span<'_>, off: u64) -> u64 {
    span.u64_at(off).unwrap().load(Ordering::Relaxed)
}

/// What a stored tree is made of, found before any damage.
#[derive(Default)]
struct Found {
    tabs: Vec<(Slot, Vec<Key>)>,
    arrs: Vec<(Slot, u64)>,
    leaves: Vec<Slot>,
    /// Blocks (block start, end) of every object and container block.
    blocks: Vec<(u64, u64)>,
    /// Lock words of the containers.
    locks: Vec<(u64, u64)>,
    /// Links to separate blocks and block headers ("change" cases skip them).
    links: Vec<(u64, u64)>,
}

fn block_of(pool: &Pool<'_>, payload: u64) -> (u64, u64) {
    (payload - 16, payload + pool.capacity(payload).unwrap())
}

fn explore(vals: Values<'_>, root: Slot) -> Found {
    let span = vals.pool().span();
    let pool = vals.pool();
    let mut f = Found::default();
    let mut seen = HashSet::new();
    let mut todo = vec![root];
    while let Some(s) = todo.pop() {
        if !s.is_object() || !seen.insert(s.bits) {
            continue;
        }
        let off = s.bits;
        let b = block_of(&pool, off);
        f.blocks.push(b);
        f.links.push((b.0, b.0 + 16));
        match s.tag {
            T_TAB => {
                f.locks.push((off + LOCK.0, off + LOCK.1));
                f.links.push((off + TAB_ENTRIES, off + TAB_INDEX + 8));
                let (used, cap) = (word(span, off + TAB_USED), word(span, off + TAB_CAP));
                let entries = word(span, off + TAB_ENTRIES);
                if cap > 0 && entries != off + 80 {
                    // A grown block: 32 bytes of geometry, entries, index.
                    let b = block_of(&pool, entries - 32);
                    f.blocks.push(b);
                    f.links.push((b.0, b.0 + 16 + 32));
                }
                for e in 0..used {
                    for at in [entries + e * ENTRY_SIZE + 8, entries + e * ENTRY_SIZE + 24] {
                        todo.push(Slot::read_at(vals, at).unwrap());
                    }
                }
                f.tabs.push((s, vals.tab_keys(s).unwrap()));
            }
            T_ARR => {
                f.locks.push((off + LOCK.0, off + LOCK.1));
                f.links.push((off + ARR_ELEMS, off + ARR_ELEMS + 8));
                let len = word(span, off + ARR_LEN);
                let elems = word(span, off + ARR_ELEMS);
                if elems != 0 {
                    // The elements block: a 16-byte header (its capacity), slots.
                    let b = block_of(&pool, elems - 16);
                    f.blocks.push(b);
                    f.links.push((b.0, b.0 + 16 + 16));
                }
                for i in 0..len {
                    todo.push(Slot::read_at(vals, elems + i * SLOT_SIZE).unwrap());
                }
                f.arrs.push((s, len));
            }
            _ => f.leaves.push(s),
        }
    }
    f
}

/// A deep copy out of the (possibly damaged) tree: READ's codes, or the
/// depth limit. Damage can link a container into its own subtree, a cycle
/// the API can make too (a push of a list into one it holds; LAYOUT.md:
/// longer cycles are not detected), and copying out such a value is
/// ERR_SHM_INVALID_ARG, "values nest deeper than 256 levels (or contain
/// themselves)", whichever way it came about (value/tests.rs tests the
/// same code for a chain built by pushes). Any other INVALID_ARG fails.
#[track_caller]
fn tolerate_copy<T>(ctx: &str, what: &str, r: shmtools_core::Result<T>) -> Option<T> {
    match r {
        Err(e) if e.code() == ErrorCode::InvalidArg && e.to_string().contains("nest deeper") => {
            None
        }
        r => tolerate(ctx, what, r, READ),
    }
}

/// Every read of the (possibly damaged) tree.
fn read_all(ctx: &str, vals: Values<'_>, root: Slot, f: &Found) {
    let look = |v: Slot, what: &str| {
        tolerate_copy(ctx, what, vals.load(v));
        let mut w = shmtools_core::value::wire::Writer::default();
        tolerate_copy(ctx, what, vals.load_wire(v, &mut w));
        tolerate(ctx, what, vals.refcount(v), READ);
        if v.is_object() {
            // (asked of every kind: the wrong kind is the caller's error)
            tolerate(ctx, what, vals.data(v), ASKED);
            tolerate(ctx, what, vals.typed_info(v), ASKED);
            let s = tolerate(ctx, "slot_of", vals.slot_of(v.bits), ASKED);
            if v.tag == T_STR {
                tolerate(ctx, what, vals.load_str(v), READ);
            }
            let _ = s;
        }
    };
    look(root, "root");
    for (t, keys) in &f.tabs {
        tolerate(ctx, "tab_len", vals.tab_len(*t), READ);
        tolerate(ctx, "tab_keys", vals.tab_keys(*t), READ);
        for k in keys
            .iter()
            .chain([&Key::Int(-99), &Key::Str("absent key".into())])
        {
            tolerate(ctx, "tab_has", vals.tab_has(*t, k.into()), READ);
            if let Some(Some(v)) = tolerate(ctx, "tab_get", vals.tab_get(*t, k.into()), READ) {
                look(v, "tab_get value");
                tolerate(ctx, "release", vals.release(v), READ);
            }
        }
    }
    for &(a, len) in &f.arrs {
        tolerate(ctx, "arr_len", vals.arr_len(a), READ);
        for i in 0..len + 2 {
            if let Some(Some(v)) = tolerate(ctx, "arr_get", vals.arr_get(a, i), READ) {
                look(v, "arr_get value");
                tolerate(ctx, "release", vals.release(v), READ);
            }
        }
    }
    for &l in &f.leaves {
        look(l, "leaf");
    }
}

/// Change every container: replace, delete, add enough to grow, push, set, pop.
fn change_all(ctx: &str, vals: Values<'_>, f: &Found) {
    let text = |x: &str| tolerate(ctx, "store", vals.store(&Value::Str(x.into())), WRITE);
    for (t, keys) in &f.tabs {
        for (i, k) in keys.iter().enumerate() {
            if i % 2 == 0 {
                if let Some(v) = text("a replacement long enough for an object") {
                    tolerate(ctx, "tab_set", vals.tab_set(*t, k.into(), v), WRITE);
                }
            } else {
                tolerate(ctx, "tab_delete", vals.tab_delete(*t, k.into()), WRITE);
            }
        }
        for i in 0..10 {
            let k = format!("added key number {i}");
            tolerate(
                ctx,
                "tab_set new",
                vals.tab_set(*t, KeyRef::str(&k), Slot::NONE),
                WRITE,
            );
        }
    }
    for &(a, _) in &f.arrs {
        for _ in 0..5 {
            tolerate(ctx, "arr_push", vals.arr_push(a, Slot::NONE), WRITE);
        }
        if let Some(v) = text("set into a list, long enough for an object") {
            tolerate(ctx, "arr_set", vals.arr_set(a, 0, v), WRITE);
        }
        if let Some(Some(v)) = tolerate(ctx, "arr_pop", vals.arr_pop(a), WRITE) {
            tolerate(ctx, "release popped", vals.release(v), WRITE);
        }
    }
}

proptest! {
    #![proptest_config(fuzz_support::config(400, "tests/fuzz_values.proptest-regressions"))]

    #[test]
    fn a_damaged_value_tree_reads_changes_and_releases_with_values_or_coded_errors(
        entries in prop::collection::vec((arb_key(), arb_value()), 1..8),
        seed in any::<u64>(),
    ) {
        static N: AtomicU64 = AtomicU64::new(0);
        let name = unique_name("fuzz-", &format!("values-{}", N.fetch_add(1, Ordering::Relaxed)));
        let _rm = RemoveOnDrop(name.clone());
        let ctx = format!("seed {seed}");
        let _dog = Watchdog::new(format!("fuzz_values {ctx}, entries {entries:?}"));
        let region = create(&name, 512 * 1024);
        let vals = region.values().unwrap();
        let span = region.span();
        let root = vals.store(&Value::Tab(entries)).unwrap();
        let f = explore(vals, root);
        // One more reference to everything, so each is released twice.
        let held: Vec<Slot> = f.tabs.iter().map(|t| t.0).chain(f.arrs.iter().map(|a| a.0))
            .chain(f.leaves.iter().copied()).filter(|&s| s != root).collect();
        for &s in &held {
            vals.retain(s).unwrap();
        }

        let mut rng = Rng(seed);
        let change = rng.below(2) == 0;
        let holes: Vec<(u64, u64)> = if change {
            f.locks.iter().chain(&f.links).copied().collect()
        } else {
            f.locks.clone()
        };
        let ranges = carve(&f.blocks, &holes);
        let plausible: Vec<u64> = f.blocks.iter().flat_map(|b| [b.0, b.0 + 16]).collect();
        let mut did = Vec::new();
        if !ranges.is_empty() {
            for _ in 0..1 + rng.below(4) {
                did.push(scribble(span, &mut rng, &ranges, &plausible));
            }
        }
        let ctx = format!("{ctx}, change {change}, damage {did:?}");

        if change {
            change_all(&ctx, vals, &f);
        }
        read_all(&ctx, vals, root, &f);
        let mut all = held;
        all.push(root);
        while !all.is_empty() {
            let s = all.swap_remove(rng.below(all.len() as u64) as usize);
            tolerate(&ctx, "release", vals.release(s), READ);
        }
        tolerate(&ctx, "check", vals.pool().check(), &[ErrorCode::Corrupt]);
        let _ = region.destroy();
    }
}

proptest! {
    #![proptest_config(fuzz_support::config(300, "tests/fuzz_values.proptest-regressions"))]

    /// `slot_of` is how a caller's offset becomes a value (`valueAt`): an
    /// offset that is not a live value is refused as a bad argument (a
    /// released one as closed), never taken for a value.
    #[test]
    fn slot_of_any_offset_is_a_live_value_or_a_refusal(
        v in arb_value(),
        probes in prop::collection::vec((any::<u64>(), 0u64..4, -3i64..4), 1..40),
    ) {
        static N: AtomicU64 = AtomicU64::new(0);
        let name = unique_name("fuzz-", &format!("slotof-{}", N.fetch_add(1, Ordering::Relaxed)));
        let _rm = RemoveOnDrop(name.clone());
        let region = create(&name, 256 * 1024);
        let vals = region.values().unwrap();
        let len = region.span().len();
        let kept = vals.store(&Value::Arr(vec![v.clone(), Value::Str("keep this one alive".into())])).unwrap();
        let gone = vals.store(&Value::Tab(vec![(Key::Int(1), v)])).unwrap();
        vals.release(gone).unwrap();
        let f = explore(vals, kept);
        let live: HashSet<u64> = f.tabs.iter().map(|t| t.0.bits)
            .chain(f.arrs.iter().map(|a| a.0.bits))
            .chain(f.leaves.iter().map(|s| s.bits))
            .collect();
        let near: Vec<u64> = live.iter().copied().chain([gone.bits]).collect();
        for (r, how, delta) in probes {
            let off = match how {
                0 => r,
                1 => r % (len + 64),
                _ => near[(r % near.len() as u64) as usize].wrapping_add_signed(delta * 8),
            };
            match vals.slot_of(off) {
                Ok(s) => {
                    prop_assert!(live.contains(&off), "slot_of({}) took {:?} for a value", off, s);
                    prop_assert!(vals.load(s).is_ok());
                }
                Err(e) => {
                    prop_assert!(!live.contains(&off), "slot_of({}) refused a live value: {}", off, e);
                    let want = if off == gone.bits { ErrorCode::Closed } else { ErrorCode::InvalidArg };
                    prop_assert!(
                        e.code() == want || (off == gone.bits && e.code() == ErrorCode::InvalidArg),
                        "slot_of({}) gave {}", off, e
                    );
                }
            }
        }
        vals.release(kept).unwrap();
        let _ = region.destroy();
    }
}
