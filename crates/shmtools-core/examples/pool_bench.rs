//! Allocator cost: nanoseconds per allocate+free pair in a shared region,
//! against glibc malloc/free in the same run, as the number of live blocks
//! (fragmentation) grows; then the same with two processes contending.
//!
//!   cargo run --release -p shmtools-core --example pool_bench
//!
//! A first-fit allocator (PicklingTools' StreamingPool) pays for every free
//! block it walks past, so its cost grows with fragmentation; segregated fits
//! should stay flat. The child-process mode (`pool_bench child <name> <n>`) is
//! used for the contended figure.

use std::process::Command;
use std::time::Instant;

use shmtools_core::{AttachOptions, CreateOptions, Region};

const PAIRS: u64 = 400_000;

/// xorshift: deterministic sizes without a dependency.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    /// Mostly small sizes, like the values of a message.
    fn size(&mut self) -> u64 {
        match self.next() % 10 {
            0 => 256 + self.next() % 4096,
            _ => 8 + self.next() % 120,
        }
    }
}

fn churn(region: &Region, pairs: u64, seed: u64) -> f64 {
    let pool = region.pool().expect("pool");
    let mut rng = Rng(seed);
    let t = Instant::now();
    for _ in 0..pairs {
        let a = pool.allocate(rng.size()).expect("allocate");
        pool.free(a).expect("free");
    }
    t.elapsed().as_nanos() as f64 / pairs as f64
}

fn malloc_churn(pairs: u64, seed: u64) -> f64 {
    let mut rng = Rng(seed);
    let t = Instant::now();
    for _ in 0..pairs {
        let v: Vec<u8> = Vec::with_capacity(rng.size() as usize);
        std::hint::black_box(&v);
        drop(v);
    }
    t.elapsed().as_nanos() as f64 / pairs as f64
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("child") {
        let region = Region::attach(&args[2], &AttachOptions::default()).expect("attach");
        let pairs: u64 = args[3].parse().expect("pairs");
        println!("{:.1}", churn(&region, pairs, std::process::id() as u64));
        return;
    }

    let name = format!("shmtools-pool-bench-{}", std::process::id());
    let region = Region::create(&name, 256 << 20, &CreateOptions::default()).expect("create");
    let pool = region.pool().expect("pool");

    println!("allocate+free pair, ns (mostly small sizes; {PAIRS} pairs per row)");
    println!(
        "{:>12} {:>10} {:>10} {:>8}",
        "live blocks", "shmtools", "malloc", "ratio"
    );
    let mut rng = Rng(7);
    let mut live = Vec::new();
    for target in [0usize, 1_000, 10_000, 100_000] {
        // Fragment: allocate up to `target` blocks, then free every other one,
        // leaving many free holes between live blocks.
        while live.len() < target * 2 {
            live.push(pool.allocate(rng.size()).expect("allocate"));
        }
        let holes: Vec<u64> = live.iter().copied().skip(1).step_by(2).collect();
        live = live.iter().copied().step_by(2).collect();
        for h in holes {
            pool.free(h).expect("free");
        }
        let ours = churn(&region, PAIRS, 11);
        let theirs = malloc_churn(PAIRS, 11);
        println!(
            "{:>12} {:>10.1} {:>10.1} {:>8.2}",
            live.len(),
            ours,
            theirs,
            ours / theirs
        );
    }
    for off in live.drain(..) {
        pool.free(off).expect("free");
    }

    // Contended: this process and one child churn the same pool at once.
    let me = std::env::current_exe().expect("exe");
    let child = Command::new(me)
        .args(["child", &name, &PAIRS.to_string()])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("spawn child");
    let ours = churn(&region, PAIRS, 3);
    let out = child.wait_with_output().expect("child");
    let theirs = String::from_utf8_lossy(&out.stdout).trim().to_string();
    println!("two processes contending: {ours:.1} ns here, {theirs} ns in the other");
    pool.check().expect("pool consistent after the run");
    region.destroy().expect("destroy");
}
