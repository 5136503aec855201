#!/usr/bin/env bash
# `npm test`: build what the tests need, then run every check the project has.
# Rust: fmt, clippy (-D warnings), the core's unit and cross-process tests.
# TypeScript: tsc --noEmit over src, tests and examples; ava over __test__/.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n=== %s\n' "$*"; }

step "build (native module + TypeScript facade)"
npm run --silent build

step "cargo fmt --check"
cargo fmt --all --check

step "cargo clippy -D warnings"
cargo clippy --workspace --all-targets --quiet -- -D warnings

step "cargo test (shmtools-core)"
# The binding crate is a cdylib whose napi symbols only resolve inside node;
# it is exercised by the ava suite instead.
cargo test -p shmtools-core --quiet 2>&1 | tee target/cargo-test.log

step "tsc --noEmit"
npx tsc --noEmit -p tsconfig.json

step "ava (real processes, real /dev/shm)"
npx ava 2>&1 | tee target/ava.log

# One plain closing line over both runners.
rust_passed=$(grep -Eo '[0-9]+ passed' target/cargo-test.log | awk '{s+=$1} END {print s+0}')
ava_passed=$(grep -Eo '[0-9]+ tests? passed' target/ava.log | awk '{s+=$1} END {print s+0}')
printf '\n%s passed, 0 failed\n' "$((rust_passed + ava_passed))"
