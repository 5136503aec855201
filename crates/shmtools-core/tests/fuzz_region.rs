//! Fuzz target for the boot block check and region attach (`boot::peek`,
//! `Region::try_attach` / `attach`, `Pool::open`): an object in /dev/shm
//! holding a valid region with random damage to its boot block (half the
//! time with the checksum recomputed, so the field checks behind it are
//! reached), to the rest of its first page, or to the pool header; with the
//! file cut short or grown; or made of random bytes altogether.
//!
//! Property: a look at the object is "not yet", a region, or an error coded
//! ERR_SHM_CORRUPT or ERR_SHM_INCOMPATIBLE; a region it returns answers
//! `info`, `pool().stats/check` and the pipe directory with values or
//! ERR_SHM_CORRUPT, never a panic. Each outcome must occur at least once, so
//! a generator that stopped reaching the deeper checks would fail the test.
//!
//! Replay: the failing case's seed is in the panic message.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::time::Duration;

use proptest::prelude::*;
use proptest::test_runner::TestRunner;
use shmtools_core::boot::{BOOT_FIELDS_SIZE, BOOT_SIZE};
use shmtools_core::mem::Span;
use shmtools_core::pool::POOL_HEADER_SIZE;
use shmtools_core::region::MIN_REGION;
use shmtools_core::{AttachOptions, Directory, ErrorCode, Region, TryAttach};

mod common;
mod fuzz_support;

use common::{create, unique_name, RemoveOnDrop, Rng};
use fuzz_support::{carve, scribble, tolerate, Watchdog};

const SIZE: u64 = 2 * MIN_REGION;

/// A 16-byte aligned heap buffer seen as a `Span`, to damage a copy of a
/// region's bytes with the same scribbler the live targets use.
struct Buf(Vec<u128>);

impl Buf {
    fn from_bytes(b: &[u8]) -> Buf {
        let mut v = vec![0u128; b.len().div_ceil(16)];
        for (i, chunk) in b.chunks(16).enumerate() {
            let mut w = [0u8; 16];
            w[..chunk.len()].copy_from_slice(chunk);
            v[i] = u128::from_le_bytes(w);
        }
        Buf(v)
    }

    fn span(&mut self) -> Span<'_> {
        // SAFETY: the vector's buffer is one live allocation of len × 16
        // bytes, aligned to 16 (u128), and the span borrows `self` mutably,
        // so the buffer neither moves nor is freed while the span lives.
        unsafe { Span::new(self.0.as_mut_ptr().cast::<u8>(), self.0.len() as u64 * 16) }
    }

    fn bytes(&self) -> Vec<u8> {
        self.0.iter().flat_map(|w| w.to_le_bytes()).collect()
    }
}

fn u64_at(b: &[u8], off: usize) -> u64 {
    u64::from_le_bytes(b[off..off + 8].try_into().unwrap())
}

fn u32_at(b: &[u8], off: usize) -> u64 {
    u32::from_le_bytes(b[off..off + 4].try_into().unwrap()) as u64
}

/// Recompute the boot block checksum over the fields as they now are (the
/// rule is in docs/LAYOUT.md), so damage behind it reaches the field checks.
fn reseal(b: &mut [u8]) {
    let words = [
        u64_at(b, 0),
        u32_at(b, 8),
        u64_at(b, 16),
        u64_at(b, 24),
        u32_at(b, 32),
        BOOT_SIZE,
        u64_at(b, 40),
        u64_at(b, 48),
        u64_at(b, 56),
        u64_at(b, 64),
        u64_at(b, 72),
    ];
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for w in words {
        for byte in w.to_le_bytes() {
            h ^= byte as u64;
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    b[80..88].copy_from_slice(&h.to_le_bytes());
}

fn outcome_of(e: &shmtools_core::Error) -> &'static str {
    match e.code() {
        ErrorCode::Corrupt => "corrupt",
        ErrorCode::Incompatible => "incompatible",
        _ => "other",
    }
}

#[test]
fn damaged_boot_blocks_and_pool_headers_are_refused_with_a_code_never_a_panic() {
    let name = unique_name("fuzz-", "region");
    let _rm = RemoveOnDrop(name.clone());
    let path = format!("/dev/shm/{name}");
    let good = {
        let r = create(&name, SIZE);
        Directory::open(&r).unwrap().create("p0", 4).unwrap();
        drop(r); // the object stays; only our mapping goes
        std::fs::read(&path).unwrap()
    };
    let pool_off = BOOT_SIZE;
    // Where damage goes: the boot block's fields most of the time, the rest
    // of its page, and the pool header except its lock (bytes 8..24).
    let fields = [(0, BOOT_FIELDS_SIZE)];
    let page = [(BOOT_FIELDS_SIZE, BOOT_SIZE)];
    let pool = carve(
        &[(pool_off, pool_off + POOL_HEADER_SIZE)],
        &[(pool_off + 8, pool_off + 24)],
    );
    let plausible = [BOOT_SIZE, SIZE, SIZE - BOOT_SIZE, 8528, 8528 + 16, 1];

    let outcomes = RefCell::new(BTreeMap::<&'static str, u64>::new());
    let mut runner = TestRunner::new(fuzz_support::config(
        800,
        "tests/fuzz_region.proptest-regressions",
    ));
    let result = runner.run(&any::<u64>(), |seed| {
        let ctx = format!("seed {seed}");
        let _dog = Watchdog::new(format!("fuzz_region {ctx}"));
        let mut rng = Rng(seed);
        let mut buf = Buf::from_bytes(&good);
        if rng.below(20) == 0 {
            buf = Buf::from_bytes(&rng.bytes(good.len()));
        } else {
            for _ in 0..1 + rng.below(3) {
                let ranges: &[(u64, u64)] = match rng.below(10) {
                    0..=6 => &fields,
                    7 => &page,
                    _ => &pool,
                };
                scribble(buf.span(), &mut rng, ranges, &plausible);
            }
        }
        let mut bytes = buf.bytes();
        if rng.below(2) == 0 {
            reseal(&mut bytes);
        }
        let len = match rng.below(12) {
            0 => [
                0,
                1,
                4095,
                MIN_REGION - 1,
                MIN_REGION,
                SIZE - 16,
                SIZE + 16,
                SIZE + 4096,
            ][rng.below(8) as usize],
            1 => rng.below(2 * SIZE),
            _ => SIZE,
        };
        {
            let f = OpenOptions::new().write(true).open(&path).unwrap();
            f.set_len(len).unwrap();
            let n = (len as usize).min(bytes.len());
            f.write_all_at(&bytes[..n], 0).unwrap();
        }

        let outcome = match Region::try_attach(&name) {
            Ok(TryAttach::NotYet(_)) => "not yet",
            Ok(TryAttach::Ready(region)) => {
                let _ = region.info();
                if let Some(pool) = tolerate(&ctx, "pool", region.pool(), &[ErrorCode::Corrupt]) {
                    tolerate(&ctx, "stats", pool.stats(), &[ErrorCode::Corrupt]);
                    tolerate(&ctx, "check", pool.check(), &[ErrorCode::Corrupt]);
                }
                let dir = tolerate(
                    &ctx,
                    "directory",
                    Directory::open(&region),
                    &[ErrorCode::Corrupt],
                );
                if let Some(dir) = dir {
                    tolerate(&ctx, "list", dir.list(), &[ErrorCode::Corrupt]);
                    tolerate(&ctx, "find", dir.find("p0"), &[ErrorCode::Corrupt]);
                }
                "ready"
            }
            Err(e) => {
                prop_assert!(
                    matches!(e.code(), ErrorCode::Corrupt | ErrorCode::Incompatible),
                    "{}: try_attach gave {}",
                    ctx,
                    e
                );
                outcome_of(&e)
            }
        };
        // The waiting form agrees, and with no time to wait it stops at once.
        let opts = AttachOptions {
            timeout: Some(Duration::ZERO),
            ..AttachOptions::default()
        };
        if let Err(e) = Region::attach(&name, &opts) {
            prop_assert!(
                matches!(
                    e.code(),
                    ErrorCode::Corrupt | ErrorCode::Incompatible | ErrorCode::Timeout
                ),
                "{}: attach gave {}",
                ctx,
                e
            );
        }
        *outcomes.borrow_mut().entry(outcome).or_default() += 1;
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    let outcomes = outcomes.into_inner();
    println!("fuzz_region outcomes: {outcomes:?}");
    for want in ["not yet", "ready", "corrupt", "incompatible"] {
        assert!(
            outcomes.get(want).copied().unwrap_or(0) > 0,
            "no case ended '{want}': {outcomes:?}"
        );
    }
}
