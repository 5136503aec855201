//! Pieces shared by the fuzz targets (tests/fuzz_*.rs): a seeded scribbler
//! that damages chosen byte ranges of a region, the check that an error
//! carries an allowed code, random value trees, and a watchdog that turns a
//! hang into a failure naming the case.
//!
//! Every target draws its damage from a `u64` seed that is part of the
//! proptest input, so a failure report (or the proptest-regressions file)
//! names the seed and the case replays exactly.
//!
//! Lock words are never damaged directly by the structure targets: a lock
//! word naming a thread that is alive (pid 1, say) makes every locker wait
//! for it, which SECURITY.md lists as something a hostile peer can do and
//! nobody can prevent. The lock word itself has its own target
//! (fuzz_lock.rs), which only uses bounded waits.

#![allow(dead_code)]

use std::io::Write as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use proptest::collection::vec as pvec;
use proptest::prelude::*;
use shmtools_core::mem::Span;
use shmtools_core::{Elem, ErrorCode, Key, Result, Value};

use crate::common::Rng;

/// A proptest configuration running `cases` cases, which records failing
/// inputs in `file` (relative to the crate) and replays them first next time.
pub fn config(cases: u32, file: &'static str) -> ProptestConfig {
    ProptestConfig {
        cases,
        failure_persistence: Some(Box::new(
            proptest::test_runner::FileFailurePersistence::Direct(file),
        )),
        ..ProptestConfig::default()
    }
}

/// `ranges` (half-open byte ranges) with every byte of `holes` taken out.
pub fn carve(ranges: &[(u64, u64)], holes: &[(u64, u64)]) -> Vec<(u64, u64)> {
    let mut out: Vec<(u64, u64)> = ranges.iter().copied().filter(|r| r.0 < r.1).collect();
    for &(hs, he) in holes {
        let mut next = Vec::new();
        for (s, e) in out {
            if he <= s || hs >= e {
                next.push((s, e));
                continue;
            }
            if s < hs {
                next.push((s, hs));
            }
            if he < e {
                next.push((he, e));
            }
        }
        out = next;
    }
    out
}

/// Values that tend to sit on the edge of a check.
const EDGES: [u64; 12] = [
    0,
    1,
    2,
    8,
    15,
    16,
    17,
    32,
    u32::MAX as u64,
    1 << 32,
    1 << 63,
    u64::MAX,
];

/// Damage one spot of `ranges` (chosen with `rng`) in one of several ways;
/// `plausible` holds offsets of real things in the region (blocks, objects),
/// which make the most convincing lies. Returns what it did, for messages.
pub fn scribble(span: Span<'_>, rng: &mut Rng, ranges: &[(u64, u64)], plausible: &[u64]) -> String {
    let total: u64 = ranges.iter().map(|r| r.1 - r.0).sum();
    assert!(total > 0, "nothing to damage");
    let mut pick = rng.below(total);
    let &(start, end) = ranges
        .iter()
        .find(|r| {
            let n = r.1 - r.0;
            if pick < n {
                true
            } else {
                pick -= n;
                false
            }
        })
        .expect("pick lies in some range");
    let at = start + pick;
    let word = at & !7;
    let word_fits = word >= start && word + 8 <= end;
    let half = at & !3;
    let half_fits = half >= start && half + 4 <= end;
    let kind = rng.below(8);
    let put_word = |v: u64| {
        span.u64_at(word)
            .expect("damage inside the region")
            .store(v, Ordering::Relaxed);
        format!("u64 at {word} = {v:#x}")
    };
    let one_byte = |rng: &mut Rng| {
        let b = rng.next() as u8;
        span.write(at, &[b]).expect("damage inside the region");
        format!("byte at {at} = {b:#x}")
    };
    match kind {
        0 => one_byte(rng),
        1 => {
            let mut b = [0u8];
            span.read(at, &mut b).expect("inside the region");
            let bit = rng.below(8);
            span.write(at, &[b[0] ^ (1 << bit)]).expect("inside");
            format!("bit {bit} of byte {at} flipped")
        }
        2 if word_fits => put_word(rng.next()),
        3 if word_fits => {
            let i = rng.below((EDGES.len() + 3 * plausible.len().min(1)) as u64) as usize;
            let v = if i < EDGES.len() {
                EDGES[i]
            } else {
                let p = plausible[rng.below(plausible.len() as u64) as usize];
                [p, p.wrapping_sub(16), p.wrapping_add(8)][i - EDGES.len()]
            };
            put_word(v)
        }
        4 if word_fits => {
            let old = span.u64_at(word).expect("inside").load(Ordering::Relaxed);
            let d = [1u64, 8, 16, 40, 1 << 32, u64::MAX, u64::MAX - 15][rng.below(7) as usize];
            put_word(old.wrapping_add(d))
        }
        5 => {
            let n = (2 + rng.below(23)).min(end - at);
            let bytes = rng.bytes(n as usize);
            span.write(at, &bytes).expect("inside");
            format!("{n} random bytes at {at}")
        }
        6 if half_fits => {
            let v = match rng.below(3) {
                0 => rng.next() as u32,
                1 => [0, 1, 2, u32::MAX, 1 << 31][rng.below(5) as usize],
                _ => (rng.next() as u32) & 0xff,
            };
            span.u32_at(half)
                .expect("inside")
                .store(v, Ordering::Relaxed);
            format!("u32 at {half} = {v:#x}")
        }
        7 if word_fits => {
            // Another word of the damageable ranges, copied here.
            let &(s2, e2) = &ranges[rng.below(ranges.len() as u64) as usize];
            let from = (s2 + rng.below(e2 - s2)) & !7;
            if from >= s2 && from + 8 <= e2 {
                let v = span.u64_at(from).expect("inside").load(Ordering::Relaxed);
                put_word(v)
            } else {
                one_byte(rng)
            }
        }
        _ => one_byte(rng),
    }
}

/// `r` is Ok, or an error whose code is in `allowed`; anything else fails,
/// naming `what` and the case `ctx`.
#[track_caller]
pub fn tolerate<T>(ctx: &str, what: &str, r: Result<T>, allowed: &[ErrorCode]) -> Option<T> {
    match r {
        Ok(v) => Some(v),
        Err(e) if allowed.contains(&e.code()) => None,
        Err(e) => panic!("{ctx}: {what} gave {e}, a code this call must not give here"),
    }
}

/// Error codes a read of damaged bytes may give.
pub const READ: &[ErrorCode] = &[ErrorCode::Corrupt, ErrorCode::Closed];
/// Codes of a call whose argument the caller chose (an offset, a kind of
/// value to ask for): a wrong one is `ERR_SHM_INVALID_ARG`.
pub const ASKED: &[ErrorCode] = &[ErrorCode::Corrupt, ErrorCode::InvalidArg, ErrorCode::Closed];
/// Error codes a change to damaged bytes may give (a damaged pool may also
/// look full).
pub const WRITE: &[ErrorCode] = &[
    ErrorCode::Corrupt,
    ErrorCode::Closed,
    ErrorCode::OutOfMemory,
];

/// Aborts the process, naming the case, if it is not dropped within
/// `limit`: a hang becomes a failure that says which case hung instead of a
/// test run that never ends. A safety net, never a statement about speed.
pub struct Watchdog {
    done: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

/// Generous on purpose: the slowest case of any target takes well under a second.
pub const HANG: Duration = Duration::from_secs(120);

impl Watchdog {
    pub fn new(what: String) -> Watchdog {
        let done = Arc::new(AtomicBool::new(false));
        let flag = done.clone();
        let thread = std::thread::spawn(move || {
            let until = Instant::now() + HANG;
            while !flag.load(Ordering::Acquire) {
                let now = Instant::now();
                if now >= until {
                    // Straight to the stream, not eprintln!: the test
                    // harness captures that, and the abort would lose it.
                    let _ = writeln!(
                        std::io::stderr(),
                        "HANG: {what} has not finished after {HANG:?}; aborting"
                    );
                    std::process::abort();
                }
                std::thread::park_timeout((until - now).min(Duration::from_millis(200)));
            }
        });
        Watchdog {
            done,
            thread: Some(thread),
        }
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        self.done.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            t.thread().unpark();
            let _ = t.join();
        }
    }
}

/// Run `f` on a thread of its own and return its result; if it has not
/// finished after `HANG`, fail naming `what` (the stuck thread is left
/// behind). For regression tests of hangs, where a failure should say which
/// case hung without aborting the other tests. A safety net, never a
/// statement about speed.
#[track_caller]
pub fn finishes<T: Send + 'static>(what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    match rx.recv_timeout(HANG) {
        Ok(v) => v,
        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
            panic!("HANG: {what} has not finished after {HANG:?}")
        }
        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
            panic!("{what} failed (its panic is printed above)")
        }
    }
}

// ---- random values ------------------------------------------------------------

pub fn arb_key() -> impl Strategy<Value = Key> {
    prop_oneof![
        (-4i64..4).prop_map(Key::Int),
        any::<i64>().prop_map(Key::Int),
        "[a-c]{0,3}".prop_map(Key::Str),
        ".{0,12}".prop_map(Key::Str),
    ]
}

pub fn arb_leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::None),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::Int),
        any::<u64>().prop_map(Value::UInt),
        any::<u64>().prop_map(|b| Value::F64(f64::from_bits(b))),
        any::<u32>().prop_map(|b| Value::F32(f32::from_bits(b))),
        ".{0,20}".prop_map(Value::Str),
        pvec(any::<u8>(), 0..40).prop_map(Value::Bytes),
        (any::<bool>(), pvec(any::<u8>(), 0..12)).prop_map(|(n, m)| Value::BigInt(n, m)),
        (1u8..=10, 0usize..8).prop_flat_map(|(c, n)| {
            let e = Elem::from_code(c).expect("codes 1..=10 are element types");
            pvec(any::<u8>(), n * e.size() as usize).prop_map(move |raw| Value::Typed(e, raw))
        }),
    ]
}

pub fn arb_value() -> impl Strategy<Value = Value> {
    arb_leaf().prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            pvec(inner.clone(), 0..6).prop_map(Value::Arr),
            pvec((arb_key(), inner), 0..6).prop_map(Value::Tab),
        ]
    })
}

/// The form a value has once stored in a region: big integers without
/// trailing zero bytes and without the sign of zero; a key given twice keeps
/// its first place and its last value.
pub fn canon(v: &Value) -> Value {
    match v {
        Value::BigInt(neg, mag) => {
            let mut m = mag.clone();
            while m.last() == Some(&0) {
                m.pop();
            }
            Value::BigInt(*neg && !m.is_empty(), m)
        }
        Value::Tab(entries) => {
            let mut out: Vec<(Key, Value)> = Vec::new();
            for (k, v) in entries {
                let v = canon(v);
                match out.iter_mut().find(|(ok, _)| ok == k) {
                    Some(e) => e.1 = v,
                    None => out.push((k.clone(), v)),
                }
            }
            Value::Tab(out)
        }
        Value::Arr(items) => Value::Arr(items.iter().map(canon).collect()),
        other => other.clone(),
    }
}

/// Equal bit for bit (NaN payloads and -0.0 included): compared encoded.
pub fn same(a: &Value, b: &Value) -> bool {
    a.encode().expect("encodable") == b.encode().expect("encodable")
}
