//! Tests against real `/dev/shm` objects and real separate processes.
//!
//! Child processes are this test binary run again (`current_exe`) with only
//! the `child_entry` test selected and `SHMT_CHILD_ROLE` set; without that
//! variable `child_entry` does nothing, so it passes in a normal run. A child
//! reports to its parent with `SHMT:key=value` lines on stdout (the helpers
//! for both sides are in common/mod.rs).
//!
//! Every region name holds this process's id and a test tag, and every test
//! removes its names at the end (also when it fails).

use std::fs::OpenOptions;
use std::os::unix::fs::{FileExt, PermissionsExt};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use shmtools_core::boot::{BootBlock, BOOT_SIZE, STATE_CLOSING, STATE_READY};
use shmtools_core::pool::{PoolHeader, FL_COUNT, POOL_HEADER_SIZE, SL_COUNT};
use shmtools_core::region::{MAX_NAME, MIN_REGION};
use shmtools_core::{AttachOptions, CreateOptions, ErrorCode, Pool, Region, TryAttach};

mod common;

use common::{
    attach, attach_opts, child_role, create, env_u64, say, spawn, unique_name, Proc, RemoveOnDrop,
    Rng, CHILD_ATTACH_TIMEOUT, OFFSET, OPS, SEED,
};

const LEN: &str = "SHMT_LEN";
const UMASK: &str = "SHMT_UMASK";
const MODE: &str = "SHMT_MODE";

/// How long a child that is meant to be killed keeps going on its own.
const CHILD_MAX_LIFETIME: Duration = Duration::from_secs(60);

// ---- helpers ----------------------------------------------------------------

fn unique(tag: &str) -> String {
    unique_name("", tag)
}

fn shm_path(name: &str) -> String {
    format!("/dev/shm/{name}")
}

fn code<T>(r: shmtools_core::Result<T>) -> ErrorCode {
    match r {
        Ok(_) => panic!("expected an error, got Ok"),
        Err(e) => e.code(),
    }
}

/// Bytes that identify block `id` (which includes the writing process) at
/// every position, so any overlap with another block shows up.
fn pattern(id: u64, len: u64) -> Vec<u8> {
    let word = id.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|i| (word >> ((i % 8) * 8)) as u8 ^ (i / 8) as u8)
        .collect()
}

fn write_pattern(region: &Region, off: u64, id: u64, len: u64) {
    region
        .span()
        .write(off, &pattern(id, len))
        .expect("payload inside the region");
}

fn assert_pattern(region: &Region, off: u64, id: u64, len: u64) {
    let mut got = vec![0u8; len as usize];
    region
        .span()
        .read(off, &mut got)
        .expect("payload inside the region");
    assert!(
        got == pattern(id, len),
        "process {}: block {id:#x} at {off} (+{len}) was overwritten",
        std::process::id()
    );
}

/// The pool header of a region, for tests that must reach its lock.
fn pool_header(region: &Region) -> &PoolHeader {
    let p = region
        .span()
        .ptr_at(region.info().pool_offset, POOL_HEADER_SIZE)
        .expect("pool header inside the region");
    // SAFETY: `ptr_at` checked that the POOL_HEADER_SIZE bytes at `p` lie in
    // the region's mapping, which lives as long as the `region` borrow we
    // return under; the pool offset is 4096 into a page-aligned mapping, so
    // `p` is 8-aligned; PoolHeader consists of atomics (and a padding word
    // nobody touches), for which every bit pattern is a valid value.
    unsafe { &*(p as *const PoolHeader) }
}

fn boot_block(region: &Region) -> &BootBlock {
    let p = region
        .span()
        .ptr_at(0, std::mem::size_of::<BootBlock>() as u64)
        .expect("boot block inside the region");
    // SAFETY: as for `pool_header`: in bounds (checked), offset 0 of a
    // page-aligned mapping that outlives the borrow, atomics only.
    unsafe { &*(p as *const BootBlock) }
}

/// Overwrite bytes of the object `name` in /dev/shm through the file system.
fn poke(name: &str, off: u64, bytes: &[u8]) {
    let f = OpenOptions::new()
        .write(true)
        .open(shm_path(name))
        .expect("open the object for writing");
    f.write_all_at(bytes, off).expect("write into the object");
}

// ---- child processes (see common/mod.rs) ------------------------------------

/// The body of every child process; a no-op in the parent's own run.
#[test]
fn child_entry() {
    let Some((role, name)) = child_role() else {
        return;
    };
    match role.as_str() {
        "write_block" => child_write_block(&name),
        "check_and_free_block" => child_check_and_free_block(&name),
        "await_region" => child_await_region(&name),
        "create_with_umask" => child_create_with_umask(&name),
        "stress" => child_stress(&name),
        "churn_until_killed" => child_churn_until_killed(&name),
        "die_holding_pool_lock" => child_die_holding_pool_lock(&name),
        "exit" => {}
        "sleep" => child_sleep(),
        other => panic!("unknown child role {other}"),
    }
}

fn child_write_block(name: &str) {
    let region = attach(name);
    let pool = region.pool().unwrap();
    let len = env_u64(LEN);
    let off = pool.allocate(len).unwrap();
    write_pattern(&region, off, env_u64(SEED), len);
    say("offset", off);
}

fn child_check_and_free_block(name: &str) {
    let region = attach(name);
    let pool = region.pool().unwrap();
    let off = env_u64(OFFSET);
    assert_pattern(&region, off, env_u64(SEED), env_u64(LEN));
    pool.free(off).unwrap();
    say("freed", off);
}

fn child_await_region(name: &str) {
    say("waiting", 1);
    let region = attach(name);
    let info = region.info();
    assert_eq!(info.state, STATE_READY);
    let pool = region.pool().unwrap();
    let p = pool.allocate(100).unwrap();
    pool.free(p).unwrap();
    say("generation", info.generation);
    say("creator_pid", info.creator_pid);
}

fn child_create_with_umask(name: &str) {
    let umask = u32::from_str_radix(&std::env::var(UMASK).unwrap(), 8).unwrap();
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(umask));
    let mut opts = CreateOptions::default();
    if let Ok(m) = std::env::var(MODE) {
        opts.mode = u32::from_str_radix(&m, 8).unwrap();
    }
    // Dropped without destroy: the object stays for the parent to inspect.
    let region = Region::create(name, MIN_REGION, &opts).unwrap();
    say("created", region.info().generation);
}

/// Random allocate/free against the shared pool, with a pattern unique to
/// this process and block in every live block, verified before each free.
fn child_stress(name: &str) {
    let seed = env_u64(SEED);
    let ops = env_u64(OPS);
    let region = attach(name);
    let pool = region.pool().unwrap();
    let mut rng = Rng(seed);
    let mut live: Vec<(u64, u64, u64)> = Vec::new();
    let mut next_id = 0u64;
    let mut ooms = 0u64;
    let free_one = |live: &mut Vec<(u64, u64, u64)>, rng: &mut Rng| {
        let (off, len, id) = live.swap_remove(rng.below(live.len() as u64) as usize);
        assert_pattern(&region, off, id, len);
        pool.free(off).unwrap();
    };
    for i in 0..ops {
        // Free with a probability that grows with the number of live blocks.
        if !live.is_empty() && rng.below(256) < live.len() as u64 {
            free_one(&mut live, &mut rng);
        } else {
            let len = match rng.below(100) {
                0..=79 => 1 + rng.below(256),
                80..=94 => 257 + rng.below(2048 - 256),
                _ => 2049 + rng.below(8192 - 2048),
            };
            match pool.allocate(len) {
                Ok(off) => {
                    assert_eq!(off % 16, 0);
                    let id = (seed << 32) | next_id;
                    next_id += 1;
                    write_pattern(&region, off, id, len);
                    live.push((off, len, id));
                }
                Err(e) if e.code() == ErrorCode::OutOfMemory => {
                    ooms += 1;
                    if !live.is_empty() {
                        free_one(&mut live, &mut rng);
                    }
                }
                Err(e) => panic!("allocate({len}): {e}"),
            }
        }
        if i % 1000 == 999 {
            pool.check().unwrap();
            for &(off, len, id) in &live {
                assert_pattern(&region, off, id, len);
            }
        }
    }
    while !live.is_empty() {
        free_one(&mut live, &mut rng);
    }
    say("ooms", ooms);
    say("done", ops);
}

/// Allocate and free forever (until killed), keeping some blocks live.
fn child_churn_until_killed(name: &str) {
    let region = attach(name);
    let pool = region.pool().unwrap();
    let mut rng = Rng(env_u64(SEED));
    let mut live = Vec::new();
    let started = Instant::now();
    let mut i = 0u64;
    while started.elapsed() < CHILD_MAX_LIFETIME {
        if live.len() > 32 || (!live.is_empty() && rng.below(2) == 0) {
            let off = live.swap_remove(rng.below(live.len() as u64) as usize);
            pool.free(off).unwrap();
        } else if let Ok(off) = pool.allocate(1 + rng.below(3000)) {
            live.push(off);
        }
        i += 1;
        if i == 200 {
            say("ready", 1);
        }
    }
}

/// Report, then idle until killed.
fn child_sleep() {
    say("sleeping", 1);
    let started = Instant::now();
    while started.elapsed() < CHILD_MAX_LIFETIME {
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Take the pool lock, wreck the free lists and the counters as a process
/// dying half-way through an update might, and wait to be killed.
fn child_die_holding_pool_lock(name: &str) {
    let region = attach(name);
    let header = pool_header(&region);
    let guard = header.lock.lock();
    assert!(!guard.recovered);
    header.fl_bitmap.store(0, Ordering::Relaxed);
    for fl in 0..FL_COUNT {
        header.sl_bitmap[fl].store(0, Ordering::Relaxed);
        for sl in 0..SL_COUNT {
            header.heads[fl][sl].store(0, Ordering::Relaxed);
        }
    }
    header.bytes_used.store(u64::MAX / 3, Ordering::Relaxed);
    header.blocks_used.store(424_242, Ordering::Relaxed);
    // Never unlock: the lock must be recovered from our death.
    std::mem::forget(guard);
    say("locked", 1);
    let started = Instant::now();
    while started.elapsed() < CHILD_MAX_LIFETIME {
        std::thread::sleep(Duration::from_millis(50));
    }
}

// ---- a. sharing -------------------------------------------------------------

#[test]
fn bytes_written_by_one_process_are_read_by_another_and_blocks_free_across_processes() {
    let name = unique("share");
    let _rm = RemoveOnDrop(name.clone());
    let region = create(&name, 1 << 20);
    let pool = region.pool().unwrap();
    let initial = pool.stats().unwrap();

    let len = 5000u64;
    let out = spawn(
        "write_block",
        &name,
        &[(SEED, "77".into()), (LEN, len.to_string())],
    )
    .finish_ok();
    let off: u64 = out["offset"].parse().unwrap();
    assert_pattern(&region, off, 77, len);
    assert!(pool.capacity(off).unwrap() >= len);
    assert_eq!(pool.stats().unwrap().blocks_used, initial.blocks_used + 1);
    pool.check().unwrap();

    // The other way round: the parent writes, another child checks and frees.
    write_pattern(&region, off, 78, len);
    spawn(
        "check_and_free_block",
        &name,
        &[
            (SEED, "78".into()),
            (LEN, len.to_string()),
            (OFFSET, off.to_string()),
        ],
    )
    .finish_ok();
    assert_eq!(code(pool.free(off)), ErrorCode::InvalidArg, "already freed");
    assert_eq!(pool.stats().unwrap(), initial);
    pool.check().unwrap();
    assert!(region.destroy().unwrap());
    assert!(std::fs::metadata(shm_path(&name)).is_err());
}

// ---- b. attach before create ------------------------------------------------

#[test]
fn attach_started_before_the_region_exists_succeeds_once_it_is_created() {
    let name = unique("late");
    let _rm = RemoveOnDrop(name.clone());
    let mut child = spawn("await_region", &name, &[]);
    child.expect("waiting");
    // Give the child time to be inside attach; correctness does not depend
    // on it getting there first.
    std::thread::sleep(Duration::from_millis(200));
    let region = create(&name, 1 << 20);
    let out = child.finish_ok();
    assert_eq!(out["generation"], region.info().generation.to_string());
    assert_eq!(out["creator_pid"], std::process::id().to_string());
    region.pool().unwrap().check().unwrap();
    assert!(region.destroy().unwrap());
}

// ---- c. timeout and abort ---------------------------------------------------

#[test]
fn attach_to_a_missing_region_times_out_no_sooner_than_the_timeout() {
    let name = unique("missing");
    let _rm = RemoveOnDrop(name.clone());
    assert!(matches!(
        Region::try_attach(&name).unwrap(),
        TryAttach::NotYet(_)
    ));
    let timeout = Duration::from_millis(300);
    let started = Instant::now();
    assert_eq!(
        code(Region::attach(&name, &attach_opts(timeout))),
        ErrorCode::Timeout
    );
    assert!(started.elapsed() >= timeout);
    // A zero timeout still looks once and then times out.
    assert_eq!(
        code(Region::attach(&name, &attach_opts(Duration::ZERO))),
        ErrorCode::Timeout
    );
}

#[test]
fn a_break_checker_returning_true_aborts_attach() {
    let name = unique("abort");
    let _rm = RemoveOnDrop(name.clone());
    let always = || true;
    let opts = AttachOptions {
        break_checker: Some(&always),
        ..attach_opts(CHILD_ATTACH_TIMEOUT)
    };
    assert_eq!(code(Region::attach(&name, &opts)), ErrorCode::Aborted);

    // It is asked between looks, and the wait goes on while it says false.
    let calls = std::cell::Cell::new(0u32);
    let third = || {
        calls.set(calls.get() + 1);
        calls.get() == 3
    };
    let opts = AttachOptions {
        break_checker: Some(&third),
        ..attach_opts(CHILD_ATTACH_TIMEOUT)
    };
    assert_eq!(code(Region::attach(&name, &opts)), ErrorCode::Aborted);
    assert_eq!(calls.get(), 3);
}

#[test]
fn an_empty_object_is_waited_for_as_a_region_being_sized() {
    let name = unique("empty");
    let _rm = RemoveOnDrop(name.clone());
    std::fs::write(shm_path(&name), b"").unwrap();
    assert!(matches!(
        Region::try_attach(&name).unwrap(),
        TryAttach::NotYet(_)
    ));
    assert_eq!(
        code(Region::attach(
            &name,
            &attach_opts(Duration::from_millis(50))
        )),
        ErrorCode::Timeout
    );
}

// ---- d. stale regions -------------------------------------------------------

#[test]
fn a_stale_region_is_replaced_by_the_next_generation_and_old_mappings_keep_their_data() {
    let name = unique("stale");
    let _rm = RemoveOnDrop(name.clone());
    let first = create(&name, 256 * 1024);
    assert_eq!(first.info().generation, 1);
    assert_eq!(first.replaced_generation(), None);
    let old = Region::attach(&name, &attach_opts(Duration::from_secs(5))).unwrap();
    let off = old.pool().unwrap().allocate(300).unwrap();
    write_pattern(&old, off, 1, 300);
    drop(first); // unmapped, not destroyed: the object stays behind
                 // (dropping it also ended its session, giving its ledger back)
    let old_stats = old.pool().unwrap().stats().unwrap();

    let second = create(&name, 256 * 1024);
    assert_eq!(second.info().generation, 2);
    assert_eq!(second.replaced_generation(), Some(1));
    // The new region is fresh; the old mapping still sees the old object.
    let new_pool = second.pool().unwrap();
    assert_eq!(
        new_pool.check().unwrap().blocks_used,
        3,
        "only the pipe directory, the holder table and the creator's ledger"
    );
    assert_ne!(new_pool.stats().unwrap(), old_stats);
    assert_pattern(&old, off, 1, 300);
    assert_eq!(old.info().generation, 1);
    assert_eq!(old.pool().unwrap().stats().unwrap(), old_stats);
    old.pool().unwrap().free(off).unwrap();
    old.pool().unwrap().check().unwrap();

    // An attacher now finds generation 2.
    let fresh = Region::attach(&name, &attach_opts(Duration::from_secs(5))).unwrap();
    assert_eq!(fresh.info().generation, 2);

    // Destroying through the old mapping must not remove the new region.
    assert!(!old.destroy().unwrap());
    assert!(std::fs::metadata(shm_path(&name)).is_ok());
    assert!(second.destroy().unwrap());
    // Attachers of the destroyed region see it closing; the name is gone.
    assert_eq!(fresh.info().state, STATE_CLOSING);
    assert!(matches!(
        Region::try_attach(&name).unwrap(),
        TryAttach::NotYet(_)
    ));
    drop(fresh);

    // After a destroy the next region starts again at generation 1.
    let third = create(&name, MIN_REGION);
    assert_eq!(third.info().generation, 1);
    assert_eq!(third.replaced_generation(), None);
    assert!(third.destroy().unwrap());
}

#[test]
fn create_replaces_a_foreign_object_of_the_same_name() {
    let name = unique("foreign");
    let _rm = RemoveOnDrop(name.clone());
    std::fs::write(shm_path(&name), Rng(5).bytes(100_000)).unwrap();
    let region = create(&name, MIN_REGION);
    assert_eq!(region.info().generation, 1);
    assert_eq!(region.replaced_generation(), None);
    region.pool().unwrap().check().unwrap();
    assert!(region.destroy().unwrap());
}

// ---- e. permissions ---------------------------------------------------------

#[test]
fn the_region_mode_is_the_requested_one_whatever_the_umask() {
    let cases: [(u32, Option<u32>, u32); 5] = [
        (0o000, None, 0o600),
        (0o000, Some(0o640), 0o640),
        (0o077, Some(0o640), 0o640),
        (0o022, Some(0o666), 0o666),
        (0o777, None, 0o600),
    ];
    for (umask, mode, expect) in cases {
        let name = unique(&format!("mode-{umask:o}-{}", mode.unwrap_or(0)));
        let _rm = RemoveOnDrop(name.clone());
        let mut env = vec![(UMASK, format!("{umask:o}"))];
        if let Some(m) = mode {
            env.push((MODE, format!("{m:o}")));
        }
        spawn("create_with_umask", &name, &env).finish_ok();
        let got = std::fs::metadata(shm_path(&name))
            .expect("the child left the object")
            .permissions()
            .mode()
            & 0o7777;
        assert_eq!(
            got, expect,
            "umask {umask:o}, mode {mode:?}: got {got:o}, want {expect:o}"
        );
        assert!(Region::remove(&name).unwrap());
    }
}

#[test]
fn a_mode_beyond_the_permission_bits_is_rejected() {
    let name = unique("badmode");
    let _rm = RemoveOnDrop(name.clone());
    for mode in [0o1600, 0o4600, 0o2600, 0o10000] {
        let opts = CreateOptions {
            mode,
            ..CreateOptions::default()
        };
        assert_eq!(
            code(Region::create(&name, MIN_REGION, &opts)),
            ErrorCode::InvalidArg
        );
    }
    assert!(std::fs::metadata(shm_path(&name)).is_err());
}

// ---- f. concurrency ---------------------------------------------------------

#[test]
fn four_processes_allocating_and_freeing_concurrently_never_overlap_and_leave_the_pool_as_it_was() {
    let name = unique("stress");
    let _rm = RemoveOnDrop(name.clone());
    let region = create(&name, 4 << 20);
    let pool = region.pool().unwrap();
    let initial = pool.stats().unwrap();
    let initial_check = pool.check().unwrap();
    let children: Vec<Proc> = (1..=4u64)
        .map(|k| {
            spawn(
                "stress",
                &name,
                &[(SEED, (0x5EED_0000 + k).to_string()), (OPS, "20000".into())],
            )
        })
        .collect();
    for c in children {
        let out = c.finish_ok();
        assert_eq!(out["done"], "20000");
    }
    assert_eq!(pool.check().unwrap(), initial_check);
    assert_eq!(pool.stats().unwrap(), initial);
    assert!(region.destroy().unwrap());
}

#[test]
fn a_tiny_region_shared_by_processes_runs_out_of_memory_gracefully() {
    let name = unique("tiny");
    let _rm = RemoveOnDrop(name.clone());
    let region = create(&name, MIN_REGION);
    let pool = region.pool().unwrap();
    let initial = pool.stats().unwrap();
    let children: Vec<Proc> = (1..=2u64)
        .map(|k| {
            spawn(
                "stress",
                &name,
                &[(SEED, (0x7100 + k).to_string()), (OPS, "3000".into())],
            )
        })
        .collect();
    let ooms: u64 = children
        .into_iter()
        .map(|c| c.finish_ok()["ooms"].parse::<u64>().unwrap())
        .sum();
    assert!(ooms > 0, "a 64 KiB region must run out of memory here");
    pool.check().unwrap();
    assert_eq!(pool.stats().unwrap(), initial);
    assert!(region.destroy().unwrap());
}

// ---- g. crashes -------------------------------------------------------------

fn churn_in_parent(region: &Region, rounds: u64) {
    let pool = region.pool().unwrap();
    let mut rng = Rng(rounds);
    let mut live = Vec::new();
    for i in 0..rounds {
        let len = 1 + rng.below(2000);
        let off = pool.allocate(len).unwrap();
        write_pattern(region, off, i, len);
        live.push((off, len, i));
        if live.len() > 8 {
            let (off, len, id) = live.swap_remove(rng.below(live.len() as u64) as usize);
            assert_pattern(region, off, id, len);
            pool.free(off).unwrap();
        }
    }
    for (off, len, id) in live {
        assert_pattern(region, off, id, len);
        pool.free(off).unwrap();
    }
}

#[test]
fn a_process_killed_while_allocating_leaves_a_pool_others_can_use() {
    let name = unique("killed");
    let _rm = RemoveOnDrop(name.clone());
    let region = create(&name, 1 << 20);
    let pool = region.pool().unwrap();
    let initial = pool.stats().unwrap();
    for round in 0..4u64 {
        let mut c = spawn("churn_until_killed", &name, &[(SEED, round.to_string())]);
        c.expect("ready");
        c.kill_and_reap();
        // The dead process may have held the lock (then the next locker
        // rebuilds the pool) and leaves its blocks allocated.
        let chk = pool.check().unwrap();
        let st = pool.stats().unwrap();
        assert_eq!(chk.blocks_used, st.blocks_used);
        assert_eq!(chk.bytes_used, st.bytes_used);
        churn_in_parent(&region, 500);
        pool.check().unwrap();
    }
    spawn(
        "stress",
        &name,
        &[(SEED, "99".into()), (OPS, "2000".into())],
    )
    .finish_ok();
    let chk = pool.check().unwrap();
    let st = pool.stats().unwrap();
    assert_eq!(chk.blocks_used, st.blocks_used);
    assert!(st.blocks_used >= initial.blocks_used);
    assert!(region.destroy().unwrap());
}

#[test]
fn a_process_dying_while_holding_the_pool_lock_is_taken_over_and_the_pool_rebuilt() {
    let name = unique("lockdeath");
    let _rm = RemoveOnDrop(name.clone());
    let region = create(&name, 1 << 20);
    let pool = region.pool().unwrap();
    let initial = pool.stats().unwrap();
    let initial_check = pool.check().unwrap();

    let mut c = spawn("die_holding_pool_lock", &name, &[]);
    c.expect("locked");
    let header = pool_header(&region);
    assert_ne!(header.lock.holder(), 0, "the child holds the pool lock");
    let child_pid = c.pid();
    // A thread of ours waits for the lock while its holder is killed.
    let off = std::thread::scope(|s| {
        let waiter = s.spawn(|| {
            let pool = region.pool().unwrap();
            let off = pool.allocate(1000).unwrap();
            write_pattern(&region, off, 5, 1000);
            off
        });
        c.kill_and_reap();
        waiter.join().expect("the waiting thread")
    });
    assert!(!std::path::Path::new(&format!("/proc/{child_pid}")).exists());
    // The child's session (its ledger) is given back by the reclaim.
    let got = region.reclaim_dead().unwrap();
    assert_eq!(got.sessions, 1, "{got:?}");
    // The child emptied the free lists: the allocation succeeded only
    // because the lock was recovered and the pool rebuilt from its blocks.
    assert_pattern(&region, off, 5, 1000);
    assert_eq!(pool.stats().unwrap().blocks_used, initial.blocks_used + 1);
    pool.free(off).unwrap();
    assert_eq!(pool.check().unwrap(), initial_check);
    assert_eq!(pool.stats().unwrap(), initial);
    assert_eq!(header.lock.holder(), 0);
    assert!(region.destroy().unwrap());
}

/// A process whose main thread holds the pool lock (as a Node.js process
/// does: JavaScript runs on the main thread) is killed, and its parent has not
/// reaped it yet: it is a zombie with an entry in /proc. Its lock must still
/// be taken over, or a parent that waits for the lock before it gets round to
/// reaping its child waits forever.
#[test]
fn a_lock_held_by_a_killed_but_unreaped_process_is_taken_over() {
    let name = unique("zombie");
    let _rm = RemoveOnDrop(name.clone());
    let region = create(&name, 1 << 20);
    let initial_check = region.pool().unwrap().check().unwrap();
    let mut c = spawn("sleep", &name, &[]);
    c.expect("sleeping");
    let pid = c.pid();
    let start = shmtools_core::platform::start_time(pid).expect("the child runs");
    // The lock's documented layout (see lock.rs): word (owner tid) at +0,
    // owner_tid at +4, owner_start at +8. Write what the child's main
    // thread would have written on taking the lock.
    let lock_at = region.info().pool_offset + std::mem::offset_of!(PoolHeader, lock) as u64;
    let span = region.span();
    span.u64_at(lock_at + 8)
        .unwrap()
        .store(start, Ordering::Relaxed);
    span.u32_at(lock_at + 4)
        .unwrap()
        .store(pid, Ordering::Relaxed);
    span.u32_at(lock_at).unwrap().store(pid, Ordering::Release);
    c.kill_leaving_a_zombie();

    let header = pool_header(&region);
    let deadline = Instant::now() + CHILD_ATTACH_TIMEOUT;
    let guard = header
        .lock
        .lock_until(Some(deadline))
        .expect("the lock of a killed (zombie) owner is taken over");
    assert!(guard.recovered);
    drop(guard);
    assert_eq!(region.pool().unwrap().check().unwrap(), initial_check);
    drop(c); // reaps the zombie
    assert!(region.destroy().unwrap());
}

// ---- h. corruption ----------------------------------------------------------

/// What a pool operation on damaged metadata may answer.
fn assert_tolerable<T>(what: &str, seed: u64, r: shmtools_core::Result<T>, allowed: &[ErrorCode]) {
    if let Err(e) = r {
        assert!(
            e.code() == ErrorCode::Corrupt || allowed.contains(&e.code()),
            "seed {seed}: {what} returned {e}"
        );
    }
}

#[test]
fn random_damage_to_pool_metadata_gives_errors_never_panics() {
    let name = unique("damage");
    let _rm = RemoveOnDrop(name.clone());
    let region = create(&name, 256 * 1024);
    let span = region.span();
    let pool_off = region.info().pool_offset;
    // A mixed population of used and free blocks.
    let payloads: Vec<u64> = {
        let pool = region.pool().unwrap();
        let mut rng = Rng(1);
        let all: Vec<u64> = (0..80)
            .map(|_| pool.allocate(rng.below(3000)).unwrap())
            .collect();
        for (i, &p) in all.iter().enumerate() {
            if i % 3 == 0 || i % 5 == 0 {
                pool.free(p).unwrap();
            }
        }
        pool.check().unwrap();
        all
    };
    let mut snapshot = vec![0u8; (span.len() - pool_off) as usize];
    span.read(pool_off, &mut snapshot).unwrap();

    // Words worth damaging: the pool header (but not its lock, at 8..24,
    // whose owner field is a thread id we would then wait for) and the
    // header, back-link and list links of every block we know.
    let mut targets: Vec<u64> = (0..POOL_HEADER_SIZE / 8)
        .map(|w| pool_off + w * 8)
        .filter(|&o| !(pool_off + 8..pool_off + 24).contains(&o))
        .collect();
    for &p in &payloads {
        targets.extend([p - 16, p - 8, p, p + 8]);
    }

    for seed in 0..1500u64 {
        span.write(pool_off, &snapshot).unwrap();
        region.pool().unwrap().check().expect("snapshot restored");
        let mut rng = Rng(seed);
        for _ in 0..1 + rng.below(4) {
            let at = targets[rng.below(targets.len() as u64) as usize];
            let word = span.u64_at(at).unwrap();
            let value = match rng.below(4) {
                0 => rng.next(),
                1 => word.load(Ordering::Relaxed) ^ (1 << rng.below(64)),
                // A plausible offset: somewhere a real block starts.
                2 => payloads[rng.below(payloads.len() as u64) as usize] - 16 * rng.below(2),
                _ => rng.below(1 << 20),
            };
            word.store(value, Ordering::Relaxed);
        }
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let pool = match region.pool() {
                Ok(p) => p,
                Err(e) => {
                    assert_eq!(e.code(), ErrorCode::Corrupt, "seed {seed}: open: {e}");
                    return;
                }
            };
            assert_tolerable("stats", seed, pool.stats(), &[]);
            assert_tolerable("check", seed, pool.check(), &[]);
            let mut mine = Vec::new();
            for n in [0u64, 16, 100, 1000, 5000] {
                match pool.allocate(n) {
                    Ok(p) => mine.push(p),
                    r => assert_tolerable("allocate", seed, r, &[ErrorCode::OutOfMemory]),
                }
            }
            for &p in payloads.iter().step_by(1 + rng.below(4) as usize) {
                assert_tolerable("free", seed, pool.free(p), &[ErrorCode::InvalidArg]);
            }
            for p in mine {
                assert_tolerable("free", seed, pool.free(p), &[ErrorCode::InvalidArg]);
            }
            let bogus = rng.below(span.len() + 64);
            assert_tolerable(
                "free bogus",
                seed,
                pool.free(bogus),
                &[ErrorCode::InvalidArg],
            );
            assert_tolerable(
                "capacity",
                seed,
                pool.capacity(bogus),
                &[ErrorCode::InvalidArg],
            );
            assert_tolerable("rebuild", seed, pool.rebuild(), &[]);
            assert_tolerable("check", seed, pool.check(), &[]);
            assert_tolerable("stats", seed, pool.stats(), &[]);
        }));
        if outcome.is_err() {
            panic!("seed {seed}: a pool operation panicked on damaged metadata");
        }
    }
    span.write(pool_off, &snapshot).unwrap();
    region.pool().unwrap().check().unwrap();
    assert!(region.destroy().unwrap());
}

#[test]
fn an_object_of_random_bytes_is_incompatible_not_waited_for() {
    for seed in 0..20u64 {
        let name = unique(&format!("random-{seed}"));
        let _rm = RemoveOnDrop(name.clone());
        let mut rng = Rng(seed);
        let size = MIN_REGION + rng.below(4) * 4096 + rng.below(4096);
        let mut bytes = rng.bytes(size as usize);
        bytes[0] |= 1; // a zero magic would mean "being initialised"
        std::fs::write(shm_path(&name), &bytes).unwrap();
        assert_eq!(
            code(Region::try_attach(&name)),
            ErrorCode::Incompatible,
            "seed {seed}"
        );
        assert_eq!(
            code(Region::attach(&name, &attach_opts(CHILD_ATTACH_TIMEOUT))),
            ErrorCode::Incompatible,
            "seed {seed}: attach must fail at once, not wait"
        );
    }
    // Too small to be a region at all.
    let name = unique("random-small");
    let _rm = RemoveOnDrop(name.clone());
    std::fs::write(shm_path(&name), Rng(3).bytes(1000)).unwrap();
    assert_eq!(code(Region::try_attach(&name)), ErrorCode::Incompatible);
}

#[test]
fn boot_block_damage_is_reported_as_corrupt_or_incompatible() {
    let name = unique("bootdamage");
    let _rm = RemoveOnDrop(name.clone());
    let fresh = || {
        let r = create(&name, 256 * 1024);
        let generation = r.info().generation;
        drop(r); // leave the object, unmapped
        generation
    };
    let off = |f: usize| f as u64;
    let gen_at = off(std::mem::offset_of!(BootBlock, generation));
    let version_at = off(std::mem::offset_of!(BootBlock, layout_version));
    let state_at = off(std::mem::offset_of!(BootBlock, state));
    let pid_at = off(std::mem::offset_of!(BootBlock, creator_pid));

    // Valid magic, field changed behind the checksum's back.
    let g = fresh();
    poke(&name, gen_at, &(g + 1000).to_le_bytes());
    assert_eq!(code(Region::try_attach(&name)), ErrorCode::Corrupt);

    // The file grew after creation: its size contradicts the boot block.
    fresh();
    let f = OpenOptions::new()
        .write(true)
        .open(shm_path(&name))
        .unwrap();
    f.set_len(256 * 1024 + 4096).unwrap();
    drop(f);
    assert_eq!(code(Region::try_attach(&name)), ErrorCode::Corrupt);

    // The pool header's magic is gone.
    fresh();
    poke(&name, BOOT_SIZE, &[0u8; 8]);
    assert_eq!(code(Region::try_attach(&name)), ErrorCode::Corrupt);

    // A layout version this build does not read.
    fresh();
    poke(
        &name,
        version_at,
        &(shmtools_core::boot::LAYOUT_VERSION + 1).to_le_bytes(),
    );
    assert_eq!(code(Region::try_attach(&name)), ErrorCode::Incompatible);

    // Still initialising, creator (us) alive: not ready yet, so wait.
    fresh();
    poke(&name, state_at, &0u32.to_le_bytes());
    assert!(matches!(
        Region::try_attach(&name).unwrap(),
        TryAttach::NotYet(_)
    ));
    assert_eq!(
        code(Region::attach(
            &name,
            &attach_opts(Duration::from_millis(50))
        )),
        ErrorCode::Timeout
    );

    // Still initialising and the creator is dead: waiting cannot help.
    let dead = spawn("exit", &name, &[]);
    let dead_pid = dead.pid();
    dead.finish_ok();
    poke(&name, pid_at, &dead_pid.to_le_bytes());
    assert_eq!(code(Region::try_attach(&name)), ErrorCode::Corrupt);
    assert_eq!(
        code(Region::attach(&name, &attach_opts(CHILD_ATTACH_TIMEOUT))),
        ErrorCode::Corrupt
    );

    // A new SHMMain replaces the wreck.
    let r = create(&name, MIN_REGION);
    r.pool().unwrap().check().unwrap();
    assert!(r.destroy().unwrap());
}

#[test]
fn a_symbolic_link_in_dev_shm_is_never_followed() {
    let target = unique("symlink-target");
    let link = unique("symlink");
    let _rm = (RemoveOnDrop(target.clone()), RemoveOnDrop(link.clone()));
    let region = create(&target, MIN_REGION);
    std::os::unix::fs::symlink(shm_path(&target), shm_path(&link)).unwrap();
    assert_eq!(code(Region::try_attach(&link)), ErrorCode::Permission);
    assert!(region.destroy().unwrap());
}

#[test]
fn bad_region_names_are_invalid_arguments() {
    let long = "n".repeat(300);
    let just_over = "n".repeat(MAX_NAME + 1);
    for bad in ["", "a/b", "/x", "a\0b", ".", "..", &long, &just_over] {
        let shown = format!("{bad:?}");
        assert_eq!(
            code(Region::create(bad, MIN_REGION, &CreateOptions::default())),
            ErrorCode::InvalidArg,
            "create {shown}"
        );
        assert_eq!(
            code(Region::try_attach(bad)),
            ErrorCode::InvalidArg,
            "{shown}"
        );
        assert_eq!(
            code(Region::attach(bad, &attach_opts(CHILD_ATTACH_TIMEOUT))),
            ErrorCode::InvalidArg,
            "attach {shown}"
        );
        assert_eq!(
            code(Region::remove(bad)),
            ErrorCode::InvalidArg,
            "remove {shown}"
        );
    }
    // The longest allowed name works.
    let prefix = unique("long-");
    let longest = format!("{prefix}{}", "x".repeat(MAX_NAME - prefix.len()));
    let _rm = RemoveOnDrop(longest.clone());
    let r = create(&longest, MIN_REGION);
    assert!(r.destroy().unwrap());
}

#[test]
fn region_sizes_out_of_range_are_invalid_arguments() {
    let name = unique("badsize");
    let _rm = RemoveOnDrop(name.clone());
    for bytes in [0, 1000, MIN_REGION - 1, (1 << 40) + 1, 1 << 41, u64::MAX] {
        assert_eq!(
            code(Region::create(&name, bytes, &CreateOptions::default())),
            ErrorCode::InvalidArg,
            "size {bytes}"
        );
    }
    assert!(std::fs::metadata(shm_path(&name)).is_err());
    let r = create(&name, MIN_REGION);
    let pool: Pool<'_> = r.pool().unwrap();
    pool.check().unwrap();
    assert!(boot_block(&r).state.load(Ordering::Acquire) == STATE_READY);
    assert!(r.destroy().unwrap());
}
