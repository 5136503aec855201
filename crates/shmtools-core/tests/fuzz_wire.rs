//! Fuzz targets for the wire format: `Value::decode` (and the `Reader` under
//! it) on random and damaged input, `scalar_wire` on arbitrary slots, and
//! `Values::store_wire`, which builds region objects from the same bytes and
//! is checked against the decoder (both must accept and refuse the same
//! inputs, references aside, and agree on the value).
//!
//! Replay: proptest prints the failing input (the seed of the damage is part
//! of it) and records it in tests/fuzz_wire.proptest-regressions.

use proptest::collection::vec as pvec;
use proptest::prelude::*;
use proptest::test_runner::{TestCaseError, TestRunner};
use shmtools_core::value::scalar_wire;
use shmtools_core::value::wire::{
    T_ARR, T_BIGINT, T_BOOL, T_BYTES, T_F32, T_F64, T_INT, T_NONE, T_REF, T_STR, T_TAB, T_TYPED,
    T_UINT,
};
use shmtools_core::value::T_SSTR;
use shmtools_core::{Error, ErrorCode, Key, KeyRef, Slot, Value};

mod common;
mod fuzz_support;

use common::{baseline, create, unique_name, RemoveOnDrop, Rng};
use fuzz_support::{arb_value, canon, same};

/// Edit an encoding 1 to 4 times, as `seed` says: overwritten, flipped,
/// inserted and deleted bytes, truncation, lying counts, swapped tags, and
/// references to `plausible` offsets (live objects, when there are any).
fn damage_encoding(mut b: Vec<u8>, seed: u64, plausible: &[u64]) -> Vec<u8> {
    let mut rng = Rng(seed);
    for _ in 0..1 + rng.below(4) {
        let n = b.len() as u64;
        match rng.below(8) {
            0 if n > 0 => {
                let at = rng.below(n) as usize;
                b[at] = rng.next() as u8;
            }
            1 if n > 0 => {
                let at = rng.below(n) as usize;
                b[at] ^= 1 << rng.below(8);
            }
            2 => b.truncate(rng.below(n + 1) as usize),
            3 => {
                let at = rng.below(n + 1) as usize;
                let len = 1 + rng.below(8) as usize;
                let extra = rng.bytes(len);
                b.splice(at..at, extra);
            }
            4 if n > 0 => {
                let at = rng.below(n) as usize;
                let end = (at + 1 + rng.below(8) as usize).min(b.len());
                b.drain(at..end);
            }
            5 if n >= 4 => {
                let at = rng.below(n - 3) as usize;
                let v: u32 =
                    [0, 1, 2, 255, 0x7fff_ffff, u32::MAX, rng.next() as u32][rng.below(7) as usize];
                b[at..at + 4].copy_from_slice(&v.to_le_bytes());
            }
            6 if n > 0 => {
                let at = rng.below(n) as usize;
                b[at] = rng.below(16) as u8;
            }
            7 if n >= 9 && !plausible.is_empty() => {
                let at = rng.below(n - 8) as usize;
                let p = plausible[rng.below(plausible.len() as u64) as usize];
                let p = [p, p + 16, p.wrapping_sub(16), rng.next()][rng.below(4) as usize];
                b[at] = T_REF;
                b[at + 1..at + 9].copy_from_slice(&p.to_le_bytes());
            }
            _ => b.push(rng.next() as u8),
        }
    }
    b
}

/// The decoder's contract on any input: a value or an InvalidArg error, and
/// a value it returns encodes again and decodes to itself.
fn decode_contract(bytes: &[u8]) -> Result<Result<Value, Error>, TestCaseError> {
    match Value::decode(bytes) {
        Ok(v) => {
            let again = v.encode().map_err(|e| {
                TestCaseError::fail(format!("a decoded value does not encode: {e}"))
            })?;
            let v2 = Value::decode(&again)
                .map_err(|e| TestCaseError::fail(format!("its encoding does not decode: {e}")))?;
            prop_assert!(same(&v, &v2), "decode(encode(v)) differs from v");
            Ok(Ok(v))
        }
        Err(e) => {
            prop_assert_eq!(e.code(), ErrorCode::InvalidArg, "decode: {}", e);
            Ok(Err(e))
        }
    }
}

/// Input built from plausible pieces (tags, small counts, words, short runs),
/// which gets much deeper into the decoder than uniform bytes.
fn pieces() -> impl Strategy<Value = Vec<u8>> {
    let piece = prop_oneof![
        3 => (0u8..16).prop_map(|t| vec![t]),
        3 => (0u32..5).prop_map(|n| n.to_le_bytes().to_vec()),
        1 => any::<u64>().prop_map(|w| w.to_le_bytes().to_vec()),
        2 => pvec(any::<u8>(), 0..6),
    ];
    pvec(piece, 0..40).prop_map(|ps| ps.concat())
}

proptest! {
    #![proptest_config(fuzz_support::config(3000, "tests/fuzz_wire.proptest-regressions"))]

    #[test]
    fn random_bytes_decode_to_a_value_or_an_invalid_arg_error(
        bytes in prop_oneof![
            pvec(any::<u8>(), 0..96),
            (prop::sample::select(vec![T_TAB, T_ARR, T_STR, T_TYPED, T_BIGINT]), pvec(any::<u8>(), 0..200))
                .prop_map(|(t, rest)| [vec![t], rest].concat()),
            pieces(),
        ]
    ) {
        let _ = decode_contract(&bytes)?;
    }
}

proptest! {
    #![proptest_config(fuzz_support::config(1500, "tests/fuzz_wire.proptest-regressions"))]

    #[test]
    fn damaged_encodings_decode_to_a_value_or_an_invalid_arg_error(
        v in arb_value(),
        seed in any::<u64>(),
    ) {
        let good = v.encode().unwrap();
        // The undamaged encoding decodes to the value itself.
        prop_assert!(same(&Value::decode(&good).unwrap(), &v));
        let _ = decode_contract(&damage_encoding(good, seed, &[]))?;
    }

    /// What a container read hands out for a scalar slot always decodes
    /// again (an inline string whose bytes are not UTF-8 gets none).
    #[test]
    fn scalar_slots_give_wire_bytes_that_decode(
        tag in prop::sample::select(vec![T_NONE, T_BOOL, T_INT, T_UINT, T_F64, T_F32, T_SSTR, T_STR, T_BYTES, T_TAB]),
        bits in prop_oneof![any::<u64>(), (0u64..8).prop_map(|n| n << 56 | 0x41_4243), Just(0)],
    ) {
        let slot = Slot { tag, bits };
        match scalar_wire(slot) {
            None => prop_assert!(
                slot.is_object() || (tag == T_SSTR && slot.short_bytes().is_err()),
                "no bytes for a good scalar {:?}", slot
            ),
            Some(b) => match Value::decode(&b) {
                Ok(v) => {
                    prop_assert!(!slot.is_object());
                    if tag != T_SSTR {
                        prop_assert_eq!(v.encode().unwrap(), b);
                    }
                }
                Err(e) => prop_assert!(false, "{:?} gave undecodable bytes: {}", slot, e),
            },
        }
    }
}

/// `store_wire` and `decode` read the same grammar: whatever one accepts the
/// other does (except references, which only a region can resolve), a stored
/// value loads back as the decoded one in stored form, and releasing it
/// leaves the pool exactly as it was.
#[test]
fn store_wire_accepts_what_decode_accepts_and_leaves_nothing_behind() {
    let name = unique_name("fuzz-", "wire");
    let _rm = RemoveOnDrop(name.clone());
    let region = create(&name, 1 << 20);
    let vals = region.values().unwrap();
    // A live table that damaged input may refer to (T_REF) by its offset.
    let anchor = vals
        .store(&Value::Tab(vec![(
            Key::Str("anchor".into()),
            Value::Str("a live table".into()),
        )]))
        .unwrap();
    let base = baseline(&vals);
    let plausible = [anchor.bits];

    let mut runner = TestRunner::new(fuzz_support::config(
        600,
        "tests/fuzz_wire.proptest-regressions",
    ));
    let strategy = (arb_value(), any::<u64>(), any::<bool>());
    let outcome = runner.run(&strategy, |(v, seed, damaged)| {
        let good = v.encode().unwrap();
        let bytes = if damaged {
            damage_encoding(good, seed, &plausible)
        } else {
            good
        };
        let decoded = decode_contract(&bytes)?;
        let stored = vals.store_wire(&bytes);
        match (decoded, stored) {
            (Ok(v), Ok(slot)) => {
                let back = vals.load(slot);
                vals.release(slot).unwrap();
                let back = back.map_err(|e| TestCaseError::fail(format!("load: {e}")))?;
                prop_assert!(
                    same(&back, &canon(&v)),
                    "stored {:?}, loaded {:?}",
                    canon(&v),
                    back
                );
            }
            (Ok(_), Err(e)) => {
                prop_assert_eq!(e.code(), ErrorCode::OutOfMemory, "store refused: {}", e)
            }
            (Err(d), Ok(slot)) => {
                let about_ref = d.message().contains("reference");
                let back = vals.load(slot);
                vals.release(slot).unwrap();
                prop_assert!(about_ref, "store took what decode refused ({})", d);
                back.map_err(|e| TestCaseError::fail(format!("load: {e}")))?;
            }
            (Err(d), Err(e)) => {
                let allowed: &[ErrorCode] = if d.message().contains("reference") {
                    &[
                        ErrorCode::InvalidArg,
                        ErrorCode::Corrupt,
                        ErrorCode::Closed,
                        ErrorCode::OutOfMemory,
                    ]
                } else {
                    &[ErrorCode::InvalidArg, ErrorCode::OutOfMemory]
                };
                prop_assert!(
                    allowed.contains(&e.code()),
                    "decode said {}, store said {}",
                    d,
                    e
                );
            }
        }
        prop_assert_eq!(&baseline(&vals), &base, "the pool is not as it was");
        prop_assert_eq!(vals.refcount(anchor).unwrap(), 1);
        prop_assert!(vals.tab_has(anchor, KeyRef::str("anchor")).unwrap());
        Ok(())
    });
    if let Err(e) = outcome {
        panic!("{e}");
    }
    vals.release(anchor).unwrap();
    assert!(region.destroy().unwrap());
}
