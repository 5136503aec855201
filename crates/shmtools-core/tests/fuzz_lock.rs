//! Fuzz target for the lock word handling (`ShmMutex::lock_until`, `lock`,
//! the dead-owner check behind them, and `Guard` release): the 16 bytes of
//! the pool's lock are overwritten with an owner field naming nobody, a dead
//! thread, a live one (init, ourselves), or a random id; a recorded owner id
//! that matches it or not; and a start time that is right, wrong, zero or
//! random; with or without the sleeper bit.
//!
//! Properties: a free word (no owner id) is taken at once, not reported as
//! recovered; an owner that is certainly gone (no such thread, or a thread
//! whose start time is not the recorded one) is taken over and reported as
//! recovered; a live owner is waited for until the deadline and never robbed
//! (the word still names it); a deadline already past never sleeps on an
//! owned lock; and after the guard goes, the lock is free and the pool
//! under it works.
//!
//! Replay: proptest prints the failing input and records it in
//! tests/fuzz_lock.proptest-regressions.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use proptest::prelude::*;
use shmtools_core::platform;
use shmtools_core::pool::{PoolHeader, POOL_HEADER_SIZE};

mod common;
mod fuzz_support;

use common::{create, unique_name, RemoveOnDrop};
use fuzz_support::Watchdog;

const WAITERS: u32 = 1 << 31;
const TID_MASK: u32 = !WAITERS;

/// A thread id that existed and is gone: a child process, reaped.
fn dead_tid() -> u32 {
    static DEAD: AtomicU64 = AtomicU64::new(0);
    let known = DEAD.load(Ordering::Relaxed);
    if known != 0 {
        return known as u32;
    }
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let pid = child.id();
    child.wait().unwrap();
    DEAD.store(pid as u64, Ordering::Relaxed);
    pid
}

#[derive(Debug, Clone, Copy)]
enum Who {
    Nobody,
    Dead,
    Init,
    Me,
    Small(u32),
    Random(u32),
}

#[derive(Debug, Clone, Copy)]
enum Start {
    Zero,
    Right,
    Wrong,
    Random(u64),
}

fn who() -> impl Strategy<Value = Who> {
    prop_oneof![
        Just(Who::Nobody),
        Just(Who::Dead),
        Just(Who::Init),
        Just(Who::Me),
        (1u32..64).prop_map(Who::Small),
        any::<u32>().prop_map(Who::Random),
    ]
}

fn start() -> impl Strategy<Value = Start> {
    prop_oneof![
        Just(Start::Zero),
        Just(Start::Right),
        Just(Start::Wrong),
        any::<u64>().prop_map(Start::Random),
    ]
}

fn tid_of(w: Who) -> u32 {
    match w {
        Who::Nobody => 0,
        Who::Dead => dead_tid(),
        Who::Init => 1,
        Who::Me => platform::current_tid(),
        Who::Small(t) => t,
        Who::Random(t) => t & TID_MASK,
    }
}

proptest! {
    #![proptest_config(fuzz_support::config(160, "tests/fuzz_lock.proptest-regressions"))]

    #[test]
    fn any_lock_word_is_taken_taken_over_or_waited_for_as_its_owner_deserves(
        owner in who(),
        recorded in prop_oneof![Just(None), who().prop_map(Some)],
        start in start(),
        sleeper_bit in any::<bool>(),
        no_time in prop::bool::weighted(0.2),
    ) {
        static N: AtomicU64 = AtomicU64::new(0);
        let name = unique_name("fuzz-", &format!("lock-{}", N.fetch_add(1, Ordering::Relaxed)));
        let _rm = RemoveOnDrop(name.clone());
        let ctx = format!("{owner:?} {recorded:?} {start:?} bit {sleeper_bit} no_time {no_time}");
        let _dog = Watchdog::new(format!("fuzz_lock {ctx}"));
        let region = create(&name, 64 * 1024);
        let span = region.span();
        let pool_off = region.info().pool_offset;
        let p = span.ptr_at(pool_off, POOL_HEADER_SIZE).unwrap();
        // SAFETY: `ptr_at` checked that the header's bytes lie inside the
        // region's mapping, which outlives this test body; the pool header is
        // 4096 bytes into a page-aligned mapping, so 8-aligned; PoolHeader is
        // made of atomics (and a padding word), valid for any bit pattern.
        let header: &PoolHeader = unsafe { &*(p as *const PoolHeader) };
        let lock = &header.lock;

        let tid = tid_of(owner);
        let recorded_tid = recorded.map_or(0, tid_of);
        let start_of = |t: u32| platform::start_time(t).unwrap_or(0);
        let start_value = match start {
            Start::Zero => 0,
            Start::Right => start_of(recorded_tid),
            Start::Wrong => start_of(recorded_tid).wrapping_add(12_345),
            Start::Random(s) => s,
        };
        let word = tid | if sleeper_bit { WAITERS } else { 0 };
        let lock_at = pool_off + 8;
        span.u32_at(lock_at).unwrap().store(word, Ordering::Relaxed);
        span.u32_at(lock_at + 4).unwrap().store(recorded_tid, Ordering::Relaxed);
        span.u64_at(lock_at + 8).unwrap().store(start_value, Ordering::Relaxed);

        // What the owner deserves, decided the way a reader of the word can:
        // the recorded start time counts only when it belongs to this owner.
        let counted_start = if recorded_tid == tid { start_value } else { 0 };
        let alive = || platform::is_alive(tid, counted_start);

        if tid == 0 {
            let g = lock.lock_until(Some(Instant::now()));
            prop_assert!(g.as_ref().is_some_and(|g| !g.recovered), "{}: a free word was not taken", ctx);
        } else if no_time {
            let g = lock.lock_until(Some(Instant::now()));
            prop_assert!(g.is_none(), "{}: an owned lock was taken with no time to wait", ctx);
            prop_assert_eq!(lock.holder(), tid, "{}: the owner changed", ctx);
        } else if !alive() {
            // Unbounded on purpose: a gone owner must be taken over (the
            // watchdog turns a failure to do so into a report).
            let g = lock.lock();
            prop_assert!(g.recovered, "{}: a gone owner was not reported", ctx);
        } else {
            let g = lock.lock_until(Some(Instant::now() + Duration::from_millis(20)));
            match g {
                None => prop_assert_eq!(lock.holder(), tid, "{}: the owner changed", ctx),
                Some(g) => prop_assert!(
                    g.recovered && !alive(),
                    "{}: a live owner was robbed (recovered {})", ctx, g.recovered
                ),
            }
        }
        // Whatever happened, the lock is free again (our guard went, or we
        // clear what a live owner would eventually let go) and the pool works.
        if lock.holder() != 0 {
            span.u64_at(lock_at).unwrap().store(0, Ordering::Relaxed);
            span.u64_at(lock_at + 8).unwrap().store(0, Ordering::Relaxed);
        }
        prop_assert_eq!(lock.holder(), 0);
        let pool = region.pool().unwrap();
        pool.stats().unwrap();
        pool.check().unwrap();
        let _ = region.destroy();
    }
}
