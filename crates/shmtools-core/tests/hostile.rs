//! A live region under attack: producer and consumer processes run on one
//! pipe while a separate hostile process writes random bytes at random
//! offsets of the same region (mostly where the pipe, its queue and the
//! packets live, sometimes anywhere, boot block and pool header included).
//!
//! What must hold (and is asserted): no worker dies of a signal or a panic
//! (each must exit by itself with status 0 when told to stop); every error a
//! worker sees carries one of the codes damage may cause (ERR_SHM_CORRUPT,
//! ERR_SHM_INVALID_ARG, ERR_SHM_CLOSED, ERR_SHM_OUT_OF_MEMORY; a worker
//! panics, and so fails the test, on any other); the parent's own look at
//! the pool afterwards answers with figures or ERR_SHM_CORRUPT. The counts
//! (packets moved, damaged packets read, errors by code, bytes written by the
//! hostile) are printed.
//!
//! The hostile never leaves a 4-byte word naming a live thread that it did
//! not name before (it takes such a write back): a lock word naming a live
//! thread makes lockers wait for it, which SECURITY.md lists as something a
//! peer can do and nobody can prevent; this test is about what can be
//! prevented.
//!
//! The seed of the hostile's writes is printed; `SHMT_HOSTILE_SEED=<n>`
//! replays them (the interleaving with the workers is up to the scheduler).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use shmtools_core::platform;
use shmtools_core::{ClientSide, Directory, Error, ErrorCode, Key, Value};

mod common;

use common::{
    attach, attach_opts, child_role, create, env_str, env_u64, seed_from_env, unique_name,
    RemoveFileOnDrop, RemoveOnDrop, Rng, ID, MARK, REGION, ROLE, SEED,
};

const PIPE: &str = "under-attack";
const STOP: &str = "SHMT_STOP";
const SEED_VAR: &str = "SHMT_HOSTILE_SEED";

const REGION_BYTES: u64 = 1 << 20;
const CAPACITY: u64 = 8;
const PRODUCERS: u64 = 2;
const CONSUMERS: u64 = 2;
/// How long the hostile writes while the workers run.
const RUN: Duration = Duration::from_secs(3);
/// Where the pipe, its queue and the packets live (the start of the arena).
const HOT: (u64, u64) = (8528, 128 * 1024);
/// The timeout of one enqueue / dequeue, so a worker notices the stop file.
const STEP: Duration = Duration::from_millis(20);
/// Waits that only stop a hung test; never an expectation about speed.
const GUARD: Duration = Duration::from_secs(30);

/// Codes that damage to the region may cause.
const DAMAGE: &[ErrorCode] = &[
    ErrorCode::Corrupt,
    ErrorCode::InvalidArg,
    ErrorCode::Closed,
    ErrorCode::OutOfMemory,
];

fn message(id: u64, seq: u64) -> Value {
    Value::Tab(vec![
        (Key::Str("producer".into()), Value::UInt(id)),
        (Key::Str("seq".into()), Value::UInt(seq)),
        (
            Key::Str("body".into()),
            Value::Str(format!(
                "packet {seq} of producer {id}, long enough for an object"
            )),
        ),
        (
            Key::Str("list".into()),
            Value::Arr(vec![Value::Int(seq as i64), Value::Bytes(vec![7; 20])]),
        ),
    ])
}

/// Is `v` a packet exactly as some producer sent it?
fn is_intact(v: &Value) -> bool {
    let Value::Tab(e) = v else { return false };
    let field = |k: &str| {
        e.iter()
            .find(|(key, _)| *key == Key::Str(k.into()))
            .map(|x| &x.1)
    };
    match (field("producer"), field("seq")) {
        (Some(Value::UInt(id)), Some(Value::UInt(seq))) => *v == message(*id, *seq),
        _ => false,
    }
}

// ---- child processes (see common/mod.rs) ------------------------------------

/// The body of every child process; a no-op in the parent's own run.
#[test]
fn child_entry() {
    let Some((role, name)) = child_role() else {
        return;
    };
    match role.as_str() {
        "produce" => child_work(&name, true),
        "consume" => child_work(&name, false),
        "hostile" => child_hostile(&name),
        other => panic!("unknown child role {other}"),
    }
}

/// Write one report line and flush it at once.
fn report(key: &str, value: impl std::fmt::Display) {
    let mut out = std::io::stdout().lock();
    writeln!(out, "\n{MARK}{key}={value}").expect("write to the parent");
    out.flush().expect("flush to the parent");
}

/// What a worker saw.
#[derive(Default)]
struct Tally {
    moved: u64,
    damaged: u64,
    idle: u64,
    errors: BTreeMap<&'static str, u64>,
}

impl Tally {
    fn error(&mut self, e: Error) {
        assert!(
            DAMAGE.contains(&e.code()),
            "a worker saw an error with a code damage cannot explain: {e}"
        );
        *self.errors.entry(e.code().as_str()).or_default() += 1;
        // Be kind to the other processes while the region is broken.
        std::thread::sleep(Duration::from_millis(1));
    }

    fn report(&self) {
        report("moved", self.moved);
        report("damaged", self.damaged);
        report("idle", self.idle);
        let errors: Vec<String> = self
            .errors
            .iter()
            .map(|(k, n)| format!("{k}:{n}"))
            .collect();
        report("errors", errors.join(","));
    }
}

/// A producer (`produce`) or consumer: move packets until the stop file
/// appears, reopening the pipe for every step (so the directory and the
/// queue header are validated again each time), and count what happens.
fn child_work(name: &str, produce: bool) {
    let (id, stop) = (env_u64(ID), PathBuf::from(env_str(STOP)));
    let end = ClientSide::start(name, PIPE, &attach_opts(GUARD)).unwrap();
    end.pipe().unwrap();
    report("ready", 1);
    let give_up = Instant::now() + GUARD;
    let mut t = Tally::default();
    let mut seq = 0;
    while !stop.exists() && Instant::now() < give_up {
        if produce {
            match end
                .pipe()
                .and_then(|q| q.enqueue_value(&message(id, seq), Some(STEP)))
            {
                Ok(true) => {
                    t.moved += 1;
                    seq += 1;
                }
                Ok(false) => t.idle += 1,
                Err(e) => t.error(e),
            }
        } else {
            match end.pipe().and_then(|q| q.dequeue_value(Some(STEP))) {
                Ok(Some(v)) if is_intact(&v) => t.moved += 1,
                Ok(Some(_)) => t.damaged += 1,
                Ok(None) => t.idle += 1,
                Err(e) => t.error(e),
            }
        }
    }
    t.report();
}

/// Scribble on the region until the stop file appears.
fn child_hostile(name: &str) {
    let stop = PathBuf::from(env_str(STOP));
    let mut rng = Rng(env_u64(SEED));
    let region = attach(name);
    let span = region.span();
    let len = span.len();
    let give_up = Instant::now() + GUARD;
    let (mut writes, mut bytes_written, mut taken_back) = (0u64, 0u64, 0u64);
    while !stop.exists() && Instant::now() < give_up {
        let at = if rng.below(10) < 7 {
            HOT.0 + rng.below(HOT.1 - HOT.0)
        } else {
            rng.below(len)
        };
        let (at, bytes) = match rng.below(6) {
            0 => (at, vec![rng.next() as u8]),
            1 => {
                let mut b = [0u8];
                span.read(at, &mut b).unwrap();
                (at, vec![b[0] ^ (1 << rng.below(8))])
            }
            2 => (at & !7, rng.next().to_le_bytes().to_vec()),
            3 => {
                let v = [
                    0,
                    1,
                    16,
                    u32::MAX as u64,
                    u64::MAX,
                    1 << 63,
                    rng.below(len) & !15,
                ][rng.below(7) as usize];
                (at & !7, v.to_le_bytes().to_vec())
            }
            4 => {
                let n = 1 + rng.below(4);
                let v = rng.next() & ((1 << (8 * n)) - 1);
                (at & !7, v.to_le_bytes().to_vec())
            }
            _ => {
                let n = 2 + rng.below(30) as usize;
                (at, rng.bytes(n))
            }
        };
        let n = (bytes.len() as u64).min(len - at);
        // The 4-byte words the write touches, before and after.
        let lo = at & !3;
        let hi = ((at + n + 3) & !3).min(len);
        let mut before = vec![0u8; (hi - lo) as usize];
        span.read(lo, &mut before).unwrap();
        span.write(at, &bytes[..n as usize]).unwrap();
        let mut after = vec![0u8; (hi - lo) as usize];
        span.read(lo, &mut after).unwrap();
        let names_someone_new = before.chunks(4).zip(after.chunks(4)).any(|(b, a)| {
            let tid = |w: &[u8]| u32::from_le_bytes(w.try_into().unwrap()) & !(1 << 31);
            let t = tid(a);
            t != 0 && t != tid(b) && platform::is_alive(t, 0)
        });
        if names_someone_new {
            span.write(lo, &before).unwrap();
            taken_back += 1;
        } else {
            writes += 1;
            bytes_written += n;
        }
        std::thread::sleep(Duration::from_micros(500 + rng.below(1500)));
    }
    report("writes", writes);
    report("bytes", bytes_written);
    report("taken_back", taken_back);
}

// ---- the parent's side ------------------------------------------------------------

/// A child whose report lines a thread collects as they come.
struct Kid {
    label: String,
    child: Option<Child>,
    reader: Option<JoinHandle<()>>,
    lines: Arc<Mutex<BTreeMap<String, String>>>,
}

fn spawn_kid(role: &str, id: u64, region: &str, stop: &Path, seed: u64) -> Kid {
    let exe = std::env::current_exe().expect("the test binary's path");
    let mut child = Command::new(exe)
        .args(["--exact", "child_entry", "--nocapture", "--test-threads=1"])
        .env(ROLE, role)
        .env(REGION, region)
        .env(ID, id.to_string())
        .env(SEED, seed.to_string())
        .env(STOP, stop)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn a child test process");
    let out = BufReader::new(child.stdout.take().expect("piped stdout"));
    let lines = Arc::new(Mutex::new(BTreeMap::new()));
    let reader = {
        let lines = lines.clone();
        std::thread::spawn(move || {
            for line in out.lines() {
                let Ok(line) = line else { break };
                if let Some((k, v)) = line
                    .find(MARK)
                    .and_then(|at| line[at + MARK.len()..].trim_end().split_once('='))
                {
                    lines.lock().unwrap().insert(k.to_string(), v.to_string());
                }
            }
        })
    };
    Kid {
        label: format!("{role} {id}"),
        child: Some(child),
        reader: Some(reader),
        lines,
    }
}

impl Kid {
    fn get(&self, key: &str) -> Option<String> {
        self.lines.lock().unwrap().get(key).cloned()
    }

    fn count(&self, key: &str) -> u64 {
        self.get(key).and_then(|v| v.parse().ok()).unwrap_or(0)
    }

    /// Wait until it has reported `key` (it must not exit first).
    fn await_report(&mut self, key: &str, guard: Instant) {
        while self.get(key).is_none() {
            let c = self.child.as_mut().expect("child not reaped");
            if let Some(status) = c.try_wait().expect("poll a child") {
                panic!("{} ended ({status}) before reporting '{key}'", self.label);
            }
            assert!(
                Instant::now() < guard,
                "{} never reported '{key}'",
                self.label
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Wait for it to exit by itself; None if it is still there at `guard`
    /// (then it is killed).
    fn finish(&mut self, guard: Instant) -> Option<ExitStatus> {
        let mut c = self.child.take().expect("child not reaped");
        let status = loop {
            if let Some(status) = c.try_wait().expect("poll a child") {
                break Some(status);
            }
            if Instant::now() >= guard {
                let _ = c.kill();
                let _ = c.wait();
                break None;
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        if let Some(r) = self.reader.take() {
            r.join().expect("the reader thread");
        }
        status
    }
}

impl Drop for Kid {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn seed() -> u64 {
    seed_from_env(SEED_VAR)
}

fn describe(status: Option<ExitStatus>) -> String {
    match status {
        None => "still running when told to stop long ago (killed)".into(),
        Some(s) => match s.signal() {
            Some(sig) => format!("killed by signal {sig}"),
            None => format!("exit status {:?}", s.code()),
        },
    }
}

#[test]
fn a_hostile_process_scribbling_on_a_live_region_never_crashes_producers_or_consumers() {
    let seed = seed();
    println!("hostile seed {seed} (replay its writes with {SEED_VAR}={seed})");
    let name = unique_name("hostile-", "live");
    let _rm = RemoveOnDrop(name.clone());
    let stop = std::env::temp_dir().join(format!("{name}.stop"));
    let _rm_stop = RemoveFileOnDrop(stop.clone());
    let _ = std::fs::remove_file(&stop);
    let region = create(&name, REGION_BYTES);
    Directory::open(&region)
        .unwrap()
        .create(PIPE, CAPACITY)
        .unwrap();

    let mut workers: Vec<Kid> = (0..PRODUCERS)
        .map(|i| spawn_kid("produce", i, &name, &stop, seed))
        .chain((0..CONSUMERS).map(|i| spawn_kid("consume", i, &name, &stop, seed)))
        .collect();
    let guard = Instant::now() + GUARD;
    for w in &mut workers {
        w.await_report("ready", guard);
    }
    let mut hostile = spawn_kid("hostile", 0, &name, &stop, seed);
    std::thread::sleep(RUN);
    std::fs::write(&stop, b"stop").unwrap();

    let guard = Instant::now() + GUARD;
    let hostile_status = hostile.finish(guard);
    let statuses: Vec<Option<ExitStatus>> = workers.iter_mut().map(|w| w.finish(guard)).collect();

    let mut errors: BTreeMap<String, u64> = BTreeMap::new();
    let (mut moved, mut damaged, mut idle) = (0, 0, 0);
    for w in &workers {
        moved += w.count("moved");
        damaged += w.count("damaged");
        idle += w.count("idle");
        for pair in w.get("errors").unwrap_or_default().split(',') {
            if let Some((code, n)) = pair.split_once(':') {
                *errors.entry(code.to_string()).or_default() += n.parse::<u64>().unwrap_or(0);
            }
        }
    }
    let pool_after = match region.pool().and_then(|p| p.check()) {
        Ok(c) => format!("consistent ({} blocks in use)", c.blocks_used),
        Err(e) => {
            assert_eq!(
                e.code(),
                ErrorCode::Corrupt,
                "seed {seed}: the parent's pool check: {e}"
            );
            format!("{e}")
        }
    };
    println!(
        "seed {seed}: the hostile made {} writes ({} bytes, {} taken back); workers moved {moved} packets, read {damaged} damaged ones, waited out {idle} steps; errors {errors:?}; pool afterwards: {pool_after}",
        hostile.count("writes"),
        hostile.count("bytes"),
        hostile.count("taken_back"),
    );

    assert!(
        hostile_status.is_some_and(|s| s.success()),
        "seed {seed}: the hostile process: {}",
        describe(hostile_status)
    );
    for (w, status) in workers.iter().zip(&statuses) {
        assert!(
            status.is_some_and(|s| s.success()),
            "seed {seed}: {}: {} (a worker must survive a hostile peer: no signal, no panic, no hang)",
            w.label,
            describe(*status)
        );
        assert!(
            w.get("errors").is_some(),
            "seed {seed}: {} exited without its report",
            w.label
        );
    }
    assert!(
        hostile.count("writes") > 0,
        "seed {seed}: the hostile wrote nothing"
    );
    assert!(moved > 0, "seed {seed}: no packet moved at all");
    let _ = region.destroy();
}
