//! Fuzz target for the pool's validators: `Pool::open` (header magic and
//! bounds), the block header and free-list checks behind `allocate`, `free`,
//! `capacity` and `stats`, and `check()` and `rebuild()` themselves.
//!
//! Each case builds a pool with a random history of allocations and frees,
//! damages it (the pool header except its lock, block headers, back-links and
//! free-list links of the blocks it knows, or now and then any byte of the
//! arena but the lock words of the pipe directory and the holder table),
//! sometimes leaves the pool lock as a dead holder would (so the next call
//! rebuilds the damaged pool first), and then calls everything.
//!
//! Properties: no panic; every error is ERR_SHM_CORRUPT, or
//! ERR_SHM_INVALID_ARG for an offset that is not a live block, or
//! ERR_SHM_OUT_OF_MEMORY; a block `allocate` hands out lies inside the arena,
//! aligned, with room for the request; and whenever `rebuild()` succeeds, the
//! pool passes `check()` and works again (the recovery path's promise).
//!
//! Replay: proptest prints the failing input (history and damage seed) and
//! records it in tests/fuzz_pool.proptest-regressions.

use std::sync::atomic::{AtomicU64, Ordering};

use proptest::prelude::*;
use shmtools_core::pool::{arena_offset_in_pool, POOL_HEADER_SIZE};
use shmtools_core::ErrorCode;

mod common;
mod fuzz_support;

use common::{create, unique_name, RemoveOnDrop, Rng};
use fuzz_support::{carve, scribble, tolerate, Watchdog};

const SIZE: u64 = 128 * 1024;

#[derive(Debug, Clone)]
enum Op {
    Alloc(u64),
    Free(usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0u64..=300).prop_map(Op::Alloc),
        2 => (301u64..=5000).prop_map(Op::Alloc),
        3 => any::<usize>().prop_map(Op::Free),
    ]
}

const CORRUPT: &[ErrorCode] = &[ErrorCode::Corrupt];
const CORRUPT_OR_ARG: &[ErrorCode] = &[ErrorCode::Corrupt, ErrorCode::InvalidArg];
const CORRUPT_OR_FULL: &[ErrorCode] = &[ErrorCode::Corrupt, ErrorCode::OutOfMemory];

proptest! {
    #![proptest_config(fuzz_support::config(1000, "tests/fuzz_pool.proptest-regressions"))]

    #[test]
    fn a_damaged_pool_answers_every_call_with_a_value_or_a_coded_error(
        history in prop::collection::vec(op(), 0..60),
        seed in any::<u64>(),
    ) {
        static N: AtomicU64 = AtomicU64::new(0);
        let name = unique_name("fuzz-", &format!("pool-{}", N.fetch_add(1, Ordering::Relaxed)));
        let _rm = RemoveOnDrop(name.clone());
        let ctx = format!("seed {seed}, history {history:?}");
        let _dog = Watchdog::new(format!("fuzz_pool {ctx}"));
        let region = create(&name, SIZE);
        let span = region.span();
        let pool_off = region.info().pool_offset;
        let arena = (pool_off + arena_offset_in_pool(), SIZE & !15);
        let dir = region.info().pipe_dir_offset;
        let holders = region.info().holders_offset;

        let (live, freed) = {
            let pool = region.pool().unwrap();
            let (mut live, mut freed) = (Vec::new(), Vec::new());
            for op in &history {
                match *op {
                    Op::Alloc(n) => {
                        if let Ok(p) = pool.allocate(n) {
                            live.push(p);
                        }
                    }
                    Op::Free(i) if !live.is_empty() => {
                        let p = live.swap_remove(i % live.len());
                        pool.free(p).unwrap();
                        freed.push(p);
                    }
                    Op::Free(_) => {}
                }
            }
            pool.check().unwrap();
            (live, freed)
        };

        // Damage.
        let mut rng = Rng(seed);
        let lock = (pool_off + 8, pool_off + 24);
        let header = carve(&[(pool_off, pool_off + POOL_HEADER_SIZE)], &[lock]);
        let mut blocks: Vec<(u64, u64)> = live
            .iter()
            .chain(&freed)
            .map(|&p| (p - 16, p + 16))
            .collect();
        blocks.push((arena.0, arena.0 + 16));
        // Lock words are left alone: a lock cannot tell a stray write from an
        // owner (a word naming a live thread, init's tid 1 say, is waited
        // for; SECURITY.md), and the pipe directory and the holder table
        // live in the arena.
        let anywhere = carve(&[arena], &[(dir + 8, dir + 24), (holders + 8, holders + 24)]);
        let plausible: Vec<u64> = live.iter().chain(&freed).flat_map(|&p| [p, p - 16]).collect();
        let mut did = Vec::new();
        for _ in 0..1 + rng.below(5) {
            let ranges = match rng.below(8) {
                0..=2 => &header,
                3..=6 => &blocks,
                _ => &anywhere,
            };
            did.push(scribble(span, &mut rng, ranges, &plausible));
        }
        if rng.below(4) == 0 {
            // A holder that is certainly gone: its recorded start time is
            // one no thread has, so the next locker takes over and rebuilds.
            span.u32_at(lock.0).unwrap().store(1, Ordering::Relaxed);
            span.u32_at(lock.0 + 4).unwrap().store(1, Ordering::Relaxed);
            span.u64_at(lock.0 + 8).unwrap().store(u64::MAX, Ordering::Relaxed);
            did.push("pool lock left by a dead holder".into());
        }
        let ctx = format!("{ctx}, damage {did:?}");

        // Everything, on the damaged pool.
        let Some(pool) = tolerate(&ctx, "open", region.pool(), CORRUPT) else {
            return Ok(());
        };
        tolerate(&ctx, "stats", pool.stats(), CORRUPT);
        tolerate(&ctx, "check", pool.check(), CORRUPT);
        for &p in &live {
            tolerate(&ctx, "capacity", pool.capacity(p), &[ErrorCode::InvalidArg]);
        }
        let mut mine = Vec::new();
        for n in [0u64, 24, 200, 1000, 9000] {
            if let Some(p) = tolerate(&ctx, "allocate", pool.allocate(n), CORRUPT_OR_FULL) {
                let cap = pool.capacity(p);
                prop_assert!(cap.is_ok(), "{}: a block just handed out has no capacity: {:?}", ctx, cap);
                let cap = cap.unwrap();
                prop_assert!(
                    p % 16 == 0 && p - 16 >= arena.0 && p + cap <= arena.1 && cap >= n,
                    "{}: allocate({}) gave {} (+{}) outside the arena {:?}", ctx, n, p, cap, arena
                );
                mine.push(p);
            }
        }
        for &p in mine.iter().chain(live.iter().step_by(2)).chain(freed.iter().take(3)) {
            tolerate(&ctx, "free", pool.free(p), CORRUPT_OR_ARG);
        }
        let bogus = rng.below(SIZE + 64);
        tolerate(&ctx, "free bogus", pool.free(bogus), CORRUPT_OR_ARG);
        tolerate(&ctx, "capacity bogus", pool.capacity(bogus), &[ErrorCode::InvalidArg]);
        tolerate(&ctx, "stats", pool.stats(), CORRUPT);

        // The recovery path: a rebuild that succeeds leaves a sound pool.
        if tolerate(&ctx, "rebuild", pool.rebuild(), CORRUPT).is_some() {
            let c = pool.check();
            prop_assert!(c.is_ok(), "{}: rebuild succeeded but check says {:?}", ctx, c);
            let c = c.unwrap();
            let st = pool.stats().unwrap();
            prop_assert_eq!((st.bytes_used, st.blocks_used), (c.bytes_used, c.blocks_used));
            match pool.allocate(64) {
                Ok(p) => pool.free(p).unwrap(),
                Err(e) => prop_assert_eq!(e.code(), ErrorCode::OutOfMemory, "{}: {}", ctx, e),
            }
            let again = pool.check();
            prop_assert!(again.is_ok(), "{}: after rebuild, check says {:?}", ctx, again);
        }
        let _ = region.destroy();
    }
}
