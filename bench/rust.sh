#!/usr/bin/env bash
# The Rust side of the benchmark suite, in one command:
#
#   bash bench/rust.sh            # full run (about 2-3 minutes), writes docs/bench/rust-latest.md and .svg,
#                                 # and the rust-latest block of docs/BENCHMARKS.md (bench/latest-block.ts)
#   bash bench/rust.sh --quick    # tiny sizes (< 20 s), writes target/bench/rust-quick.md
#   bash bench/rust.sh --only 5b  # some scenarios (5a, 5b, 6), writes target/bench/rust-only.md
#
# Steps: make sure the Boost.Interprocess headers are there (installing
# Debian's libboost-dev when running as root; otherwise the Boost column is
# skipped, with the reason), compile the C++ peer bench/boost_mq_peer.cpp with
# g++ -O2 into target/, build the Rust harness
# (crates/shmtools-core/examples/bench_rust.rs) with cargo --release, and run
# it. Extra arguments are passed to the harness (see its --help).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
mkdir -p "$TARGET_DIR"
PEER="$TARGET_DIR/boost_mq_peer"
HEADER_TEST='#include <boost/interprocess/ipc/message_queue.hpp>'

have_boost_headers() {
    echo "$HEADER_TEST" | g++ -x c++ -fsyntax-only - >/dev/null 2>&1
}

BOOST_ARGS=()
skip_boost() {
    echo "bench/rust.sh: $1; the Boost column will be skipped" >&2
    BOOST_ARGS=(--no-boost "$1")
}

if ! command -v g++ >/dev/null 2>&1; then
    skip_boost "g++ is not installed (install g++ and libboost-dev for the Boost column)"
elif ! have_boost_headers; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "bench/rust.sh: Boost headers missing; installing libboost-dev with apt-get" >&2
        if apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y libboost-dev; then
            have_boost_headers || skip_boost "libboost-dev was installed but <boost/interprocess/ipc/message_queue.hpp> still does not compile"
        else
            skip_boost "apt-get install libboost-dev failed"
        fi
    elif [ "$(id -u)" != 0 ]; then
        skip_boost "Boost headers are missing and installing libboost-dev needs root (run: sudo apt-get install -y libboost-dev)"
    else
        skip_boost "Boost headers are missing and apt-get is not available to install libboost-dev"
    fi
fi

if [ ${#BOOST_ARGS[@]} -eq 0 ]; then
    echo "bench/rust.sh: compiling bench/boost_mq_peer.cpp -> $PEER" >&2
    if g++ -O2 -std=c++17 -pthread -o "$PEER" bench/boost_mq_peer.cpp -lrt; then
        BOOST_ARGS=(--boost-peer "$PEER")
    else
        skip_boost "compiling bench/boost_mq_peer.cpp failed"
    fi
fi

echo "bench/rust.sh: building the harness (cargo build --release -p shmtools-core --example bench_rust)" >&2
cargo build --release -p shmtools-core --example bench_rust

export BENCH_COMMAND="bash bench/rust.sh${*:+ $*}"
export BENCH_NPROC="$(nproc 2>/dev/null || echo '?')"
export BENCH_RUSTC="$(rustc --version 2>/dev/null || echo 'unknown')"
export BENCH_CXX="$( (g++ --version 2>/dev/null || echo 'no g++') | head -n 1)"
export BENCH_DATE="$(date -u '+%Y-%m-%d %H:%M UTC')"
# The commit measured; changes to tracked files outside docs/ are marked.
BENCH_COMMIT="$(git rev-parse --short HEAD 2>/dev/null || echo 'unknown (not a git checkout)')"
if [ -n "$(git status --porcelain --untracked-files=no -- . ':(exclude)docs' 2>/dev/null)" ]; then
    BENCH_COMMIT="$BENCH_COMMIT with uncommitted changes"
fi
export BENCH_COMMIT

"$TARGET_DIR/release/examples/bench_rust" "${BOOST_ARGS[@]}" "$@"

# A full run (no --quick, --only or --out) wrote docs/bench/rust-latest.md:
# its header, chart and targets also go into docs/BENCHMARKS.md.
for a in "$@"; do
    case "$a" in --quick | --only | --out | -h | --help) exit 0 ;; esac
done
if [ -d node_modules/@oxc-node/core ]; then
    node --import @oxc-node/core/register bench/latest-block.ts rust-latest
else
    echo "bench/rust.sh: node_modules is missing (run npm install), so docs/BENCHMARKS.md was not updated" >&2
fi
