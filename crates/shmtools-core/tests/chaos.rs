//! A seeded chaos run over one pipe: producer and consumer processes are
//! SIGKILLed at random moments and replaced, round after round.
//!
//! Child processes are this test binary run again (see common/mod.rs). A
//! producer reports every packet it has enqueued (`SHMT:sent=<seq>`), a
//! consumer every packet it has dequeued (`SHMT:got=<id>:<seq>`), one line
//! each, flushed at once, so the parent knows what a child did even when it
//! kills it a moment later. Each round ends with a marker file that tells the
//! survivors to stop.
//!
//! What must hold (and is asserted): no packet is delivered twice, no packet
//! arrives that no producer sent, a packet comes back exactly as it was sent,
//! every survivor makes progress, the pool stays consistent (a lock held by a
//! killed process is taken over and the pool rebuilt), the queue keeps
//! working, and packets go missing only with a killed consumer (at most one
//! each: the packet it had just taken), and everything the killed processes
//! held is given back: after each round `gc` reclaims every dead session, and
//! a repair (which recounts every reference from what is reachable) then
//! finds nothing left to fix, unless the reclaim reported a process killed
//! inside an operation; at the end the pool is back to its starting figures.
//!
//! Children with an odd id use the batch calls (a producer `enqueue_wire_many`
//! of up to BATCH messages, whose packed blocks are carved back to back; a
//! consumer `dequeue_many_wire`, which frees them as runs), so kills also land
//! inside those; such a child may take up to BATCH packets with it.
//!
//! The seed is printed; `SHMT_CHAOS_SEED=<n>` replays a run's schedule (the
//! scheduling of the processes themselves is not reproducible, of course).

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use shmtools_core::value::wire::{Reader, Writer};
use shmtools_core::{ClientSide, PoolCheck, PoolStats, Region, ServerSide, Value};

mod common;

use common::{
    attach_opts, child_role, create, env_str, env_u64, ks, seed_from_env, unique_name,
    RemoveFileOnDrop, RemoveOnDrop, Rng, ID, MARK, REGION, ROLE,
};

const PIPE: &str = "chaos";
const STOP: &str = "SHMT_STOP";
const SEED_VAR: &str = "SHMT_CHAOS_SEED";

const REGION_BYTES: u64 = 8 << 20;
const CAPACITY: u64 = 16;
const ROUNDS: u64 = 8;
/// How long a round runs before its survivors are told to stop (a lower
/// bound: the round also waits until every survivor has made progress).
const ROUND: Duration = Duration::from_millis(1200);
/// Kills fall in [KILL_FROM, KILL_UNTIL) after the round starts.
const KILL_FROM: u64 = 100;
const KILL_UNTIL: u64 = 900;
/// The timeout of one enqueue / dequeue attempt in a child, so it notices
/// the stop marker soon.
const STEP: Duration = Duration::from_millis(50);
/// Waits that only stop a hung test; never an expectation about speed.
const GUARD: Duration = Duration::from_secs(30);
/// Messages per call of a batch child (odd ids).
const BATCH: u64 = 8;

fn batched(id: u64) -> bool {
    id % 2 == 1
}

// ---- messages -----------------------------------------------------------------

fn message(id: u64, seq: u64) -> Value {
    Value::Tab(vec![
        (ks("producer"), Value::UInt(id)),
        (ks("seq"), Value::UInt(seq)),
        (
            ks("payload"),
            Value::Str(format!(
                "payload-{id}-{seq}-{}",
                "x".repeat((seq % 13) as usize)
            )),
        ),
    ])
}

fn marker() -> Value {
    Value::Tab(vec![(ks("marker"), Value::Str("parent was here".into()))])
}

/// The (producer, seq) of a packet, or why it is not one we sent.
fn classify(v: &Value) -> Result<(u64, u64), String> {
    let Value::Tab(entries) = v else {
        return Err(format!("not a Tab: {v:?}"));
    };
    let num = |k: &str| match entries.iter().find(|(key, _)| *key == ks(k)) {
        Some((_, Value::UInt(n))) => Some(*n),
        Some((_, Value::Int(n))) if *n >= 0 => Some(*n as u64),
        _ => None,
    };
    let (Some(id), Some(seq)) = (num("producer"), num("seq")) else {
        return Err(format!("no producer or seq: {v:?}"));
    };
    if *v != message(id, seq) {
        return Err(format!("{id}:{seq} differs from what was sent: {v:?}"));
    }
    Ok((id, seq))
}

// ---- child processes ------------------------------------------------------------

/// The body of every child process; a no-op in the parent's own run.
#[test]
fn child_entry() {
    let Some((role, name)) = child_role() else {
        return;
    };
    match role.as_str() {
        "produce" => child_produce(&name),
        "consume" => child_consume(&name),
        other => panic!("unknown child role {other}"),
    }
}

/// Write one report line and flush it, so it survives a SIGKILL right after.
fn report(out: &mut impl Write, key: &str, value: impl std::fmt::Display) {
    writeln!(out, "\n{MARK}{key}={value}").expect("write to the parent");
    out.flush().expect("flush to the parent");
}

fn child_produce(name: &str) {
    let (id, stop) = (env_u64(ID), PathBuf::from(env_str(STOP)));
    let end = ClientSide::start(name, PIPE, &attach_opts(GUARD)).unwrap();
    let q = end.pipe().unwrap();
    let mut out = std::io::stdout().lock();
    let give_up = Instant::now() + GUARD;
    let mut seq = 0;
    while !stop.exists() && Instant::now() < give_up {
        if batched(id) {
            let bytes: Vec<u8> = (seq..seq + BATCH)
                .flat_map(|s| message(id, s).encode().unwrap())
                .collect();
            let n = q
                .enqueue_wire_many(&bytes, BATCH as usize, Some(STEP))
                .unwrap();
            for _ in 0..n {
                report(&mut out, "sent", seq);
                seq += 1;
            }
        } else if q.enqueue_value(&message(id, seq), Some(STEP)).unwrap() {
            report(&mut out, "sent", seq);
            seq += 1;
        }
    }
    report(&mut out, "done", seq);
}

fn child_consume(name: &str) {
    let stop = PathBuf::from(env_str(STOP));
    let end = ClientSide::start(name, PIPE, &attach_opts(GUARD)).unwrap();
    let q = end.pipe().unwrap();
    let mut out = std::io::stdout().lock();
    let give_up = Instant::now() + GUARD;
    let mut n = 0;
    let id = env_u64(ID);
    while !stop.exists() && Instant::now() < give_up {
        let mut got = Vec::new();
        if batched(id) {
            let mut w = Writer::default();
            q.dequeue_many_wire(BATCH as usize, Some(STEP), &mut w)
                .unwrap();
            let mut r = Reader::new(&w.buf);
            while !r.at_end() {
                let at = r.pos();
                r.skip_value().unwrap();
                got.push(Value::decode(r.since(at)).unwrap());
            }
        } else if let Some(v) = q.dequeue_value(Some(STEP)).unwrap() {
            got.push(v);
        }
        for v in got {
            match classify(&v) {
                Ok((id, seq)) => report(&mut out, "got", format!("{id}:{seq}")),
                Err(why) => report(&mut out, "bad", why),
            }
            n += 1;
        }
    }
    report(&mut out, "done", n);
}

// ---- the parent's side ------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Producer,
    Consumer,
}

/// A child whose report lines a thread collects as they come.
struct Kid {
    role: Role,
    id: u64,
    child: Option<Child>,
    reader: Option<JoinHandle<()>>,
    lines: Arc<Mutex<Vec<(String, String)>>>,
    /// "sent" or "got" reports so far.
    progress: Arc<AtomicU64>,
    killed: bool,
    /// Did it exit by itself with status 0?
    clean_exit: bool,
}

fn spawn_kid(role: Role, id: u64, region: &str, stop: &Path) -> Kid {
    let exe = std::env::current_exe().expect("the test binary's path");
    let mut child = Command::new(exe)
        .args(["--exact", "child_entry", "--nocapture", "--test-threads=1"])
        .env(
            ROLE,
            match role {
                Role::Producer => "produce",
                Role::Consumer => "consume",
            },
        )
        .env(REGION, region)
        .env(ID, id.to_string())
        .env(STOP, stop)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn a child test process");
    let out = BufReader::new(child.stdout.take().expect("piped stdout"));
    let lines = Arc::new(Mutex::new(Vec::new()));
    let progress = Arc::new(AtomicU64::new(0));
    let reader = {
        let (lines, progress) = (lines.clone(), progress.clone());
        std::thread::spawn(move || {
            for line in out.lines() {
                let Ok(line) = line else { break };
                let Some((k, v)) = line
                    .find(MARK)
                    .and_then(|at| line[at + MARK.len()..].trim_end().split_once('='))
                else {
                    continue;
                };
                if k == "sent" || k == "got" {
                    progress.fetch_add(1, Ordering::Relaxed);
                }
                lines.lock().unwrap().push((k.to_string(), v.to_string()));
            }
        })
    };
    Kid {
        role,
        id,
        child: Some(child),
        reader: Some(reader),
        lines,
        progress,
        killed: false,
        clean_exit: false,
    }
}

impl Kid {
    fn label(&self) -> String {
        match self.role {
            Role::Producer => format!("producer {}", self.id),
            Role::Consumer => format!("consumer {}", self.id),
        }
    }

    fn progress(&self) -> u64 {
        self.progress.load(Ordering::Relaxed)
    }

    /// SIGKILL and reap it, then collect what it reported before.
    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        self.killed = true;
        self.join_reader();
    }

    /// Wait for it to exit by itself (it has been told to stop); kill it if
    /// it is still there when the guard passes (`clean_exit` says which).
    fn finish(&mut self, guard: Instant) {
        let mut c = self.child.take().expect("child not reaped");
        loop {
            if let Some(status) = c.try_wait().expect("wait for a child") {
                self.clean_exit = status.success();
                break;
            }
            if Instant::now() >= guard {
                eprintln!("{} did not stop: killing it", self.label());
                let _ = c.kill();
                let _ = c.wait();
                self.killed = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        self.join_reader();
    }

    fn join_reader(&mut self) {
        if let Some(r) = self.reader.take() {
            r.join().expect("the reader thread");
        }
    }

    fn reports(&self, key: &str) -> Vec<String> {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
            .collect()
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

fn parse_pair(s: &str) -> (u64, u64) {
    let (a, b) = s.split_once(':').expect("id:seq");
    (a.parse().expect("an id"), b.parse().expect("a seq"))
}

/// Everything the parent has learned over all rounds.
#[derive(Default)]
struct Ledger {
    /// Per producer incarnation: how many it reported sent (seqs 0..n), and
    /// whether it was killed (so it may have enqueued seq n unreported).
    sent: HashMap<u64, (u64, bool)>,
    /// Every (producer, seq) received, and who received it.
    received: HashMap<(u64, u64), String>,
    duplicates: Vec<String>,
    bad: Vec<String>,
    consumer_kills: u64,
    producer_kills: u64,
    /// Killed consumers that took batches (each may lose up to BATCH).
    batch_consumer_kills: u64,
    /// References given back by gc from killed processes' ledgers.
    reclaimed_refs: u64,
    /// Killed processes whose reclaim could not be exact.
    uncertain: u64,
}

impl Ledger {
    fn receive(&mut self, pair: (u64, u64), by: String) {
        if let Some(first) = self.received.get(&pair) {
            self.duplicates
                .push(format!("{}:{} by {first} and by {by}", pair.0, pair.1));
        } else {
            self.received.insert(pair, by);
        }
    }

    /// Take in what a finished (exited or killed) child reported.
    fn absorb(&mut self, kid: &Kid) {
        match kid.role {
            Role::Producer => {
                let seqs = kid.reports("sent");
                for (i, s) in seqs.iter().enumerate() {
                    assert_eq!(s, &i.to_string(), "{}: seqs out of order", kid.label());
                }
                self.sent.insert(kid.id, (seqs.len() as u64, kid.killed));
            }
            Role::Consumer => {
                for p in kid.reports("got") {
                    self.receive(parse_pair(&p), kid.label());
                }
                for b in kid.reports("bad") {
                    self.bad.push(format!("{}: {b}", kid.label()));
                }
            }
        }
    }
}

fn pool_line(stats: &PoolStats, check: &PoolCheck) -> String {
    format!(
        "{} blocks / {} bytes used, {} bytes free, largest free {}, {} free blocks",
        stats.blocks_used,
        stats.bytes_used,
        stats.bytes_free,
        stats.largest_free,
        check.blocks_free
    )
}

#[test]
fn producers_and_consumers_killed_at_random_never_duplicate_and_leave_a_working_pipe() {
    let seed = seed();
    eprintln!("chaos seed {seed} (replay the schedule with {SEED_VAR}={seed})");
    let mut rng = Rng(seed);
    let name = unique_name("chaos-", "pipe");
    let _rm = RemoveOnDrop(name.clone());
    let region = create(&name, REGION_BYTES);
    let server = ServerSide::start(&name, PIPE, CAPACITY, &attach_opts(GUARD)).unwrap();
    let q = server.pipe().unwrap();
    let pool = region.pool().unwrap();
    let start_stats = pool.stats().unwrap();
    let t0 = Instant::now();
    let mut reclaimed_before = (0, 0, 0);

    let mut ledger = Ledger::default();
    let mut next_id = 0u64;
    let mut new_kid = |role: Role, stop: &Path| {
        next_id += 1;
        spawn_kid(role, next_id, &name, stop)
    };

    for round in 0..ROUNDS {
        let stop = std::env::temp_dir().join(format!(
            "shmt-chaos-{}-{seed}-round{round}.stop",
            std::process::id()
        ));
        let _rm_stop = RemoveFileOnDrop(stop.clone());
        let _ = std::fs::remove_file(&stop);
        let producers = 2 + rng.below(2);
        let mut kids = Vec::new();
        for _ in 0..producers {
            kids.push(new_kid(Role::Producer, &stop));
        }
        for _ in 0..2 {
            kids.push(new_kid(Role::Consumer, &stop));
        }
        let mut kill_at: Vec<Duration> = (0..1 + rng.below(3))
            .map(|_| Duration::from_millis(KILL_FROM + rng.below(KILL_UNTIL - KILL_FROM)))
            .collect();
        kill_at.sort();
        let started = Instant::now();
        let mut dead = Vec::new();
        for at in kill_at {
            std::thread::sleep((started + at).saturating_duration_since(Instant::now()));
            let i = rng.below(kids.len() as u64) as usize;
            let mut victim = kids.swap_remove(i);
            victim.kill();
            match victim.role {
                Role::Producer => ledger.producer_kills += 1,
                Role::Consumer => {
                    ledger.consumer_kills += 1;
                    if batched(victim.id) {
                        ledger.batch_consumer_kills += 1;
                    }
                }
            }
            eprintln!(
                "round {round}: killed {} at {:?} after {} reports",
                victim.label(),
                at,
                victim.progress()
            );
            kids.push(new_kid(victim.role, &stop));
            dead.push(victim);
        }
        std::thread::sleep((started + ROUND).saturating_duration_since(Instant::now()));
        // Every survivor makes progress (a condition, with a hang guard).
        let guard = Instant::now() + GUARD;
        while let Some(k) = kids.iter().find(|k| k.progress() == 0) {
            assert!(
                Instant::now() < guard,
                "round {round} (seed {seed}): {} made no progress in {GUARD:?}",
                k.label()
            );
            std::thread::sleep(Duration::from_millis(5));
        }

        std::fs::write(&stop, b"stop").expect("write the stop marker");
        let guard = Instant::now() + GUARD;
        for k in &mut kids {
            k.finish(guard);
        }
        let mut summary = Vec::new();
        for k in kids.iter().chain(&dead) {
            ledger.absorb(k);
            summary.push(format!(
                "{}{}:{}",
                k.label(),
                if k.killed { " (killed)" } else { "" },
                k.progress()
            ));
        }
        for k in &kids {
            assert!(
                k.clean_exit,
                "round {round} (seed {seed}): {} did not exit cleanly when told to stop",
                k.label()
            );
        }
        eprintln!("round {round}: {}", summary.join(", "));

        // What the dead held is given back: their sessions are reclaimed, and
        // a repair, which recounts every reference from what is reachable,
        // finds nothing more to free or fix (unless a reclaim said it could
        // not be exact: a kill inside an operation).
        let counters = |r: &Region| {
            let h = r.holders().unwrap().header();
            (
                h.reclaimed_sessions.load(Ordering::Relaxed),
                h.uncertain_reclaims.load(Ordering::Relaxed),
                h.reclaimed_refs.load(Ordering::Relaxed),
            )
        };
        let gc = region
            .gc()
            .unwrap_or_else(|e| panic!("round {round} (seed {seed}): gc: {e}"));
        let (sessions, uncertain, refs) = counters(&region);
        // Replacements that attached may have reclaimed some already; a
        // process killed before it attached (no report yet) had no session.
        let attached = dead.iter().filter(|k| k.progress() > 0).count() as u64;
        let got = sessions - reclaimed_before.0;
        assert!(
            (attached..=dead.len() as u64).contains(&got),
            "round {round} (seed {seed}): {got} sessions reclaimed for {} killed processes \
             ({attached} of them had attached): {gc:?}",
            dead.len()
        );
        let dead_listed: Vec<_> = region
            .holder_list()
            .unwrap()
            .into_iter()
            .filter(|h| !h.alive)
            .collect();
        assert!(
            dead_listed.is_empty(),
            "round {round} (seed {seed}): dead sessions left: {dead_listed:?}"
        );
        let round_uncertain = uncertain - reclaimed_before.1;
        ledger.reclaimed_refs += refs - reclaimed_before.2;
        ledger.uncertain += round_uncertain;
        let repair = region
            .repair()
            .unwrap_or_else(|e| panic!("round {round} (seed {seed}): repair: {e}"));
        // After gc, what is left over is at most what processes killed in
        // mid-operation had in hand: a few blocks, never a count to fix; and
        // after a round whose reclaims were all exact, nothing at all.
        assert_eq!(
            repair.refcounts_fixed, 0,
            "round {round} (seed {seed}): a repair after gc corrected counts: {repair:?} (gc: {gc:?})"
        );
        // (a batch child may have had a whole batch in hand)
        let in_hand: u64 = dead
            .iter()
            .map(|k| if batched(k.id) { 4 + BATCH } else { 4 })
            .sum();
        assert!(
            repair.blocks_freed <= in_hand,
            "round {round} (seed {seed}): after gc a repair freed more than the killed processes \
             could have had in hand: {repair:?} (gc: {gc:?}, uncertain reclaims this round: {round_uncertain})"
        );
        if round_uncertain == 0 {
            assert_eq!(
                repair.blocks_freed, 0,
                "round {round} (seed {seed}): every reclaim was exact, yet a repair found \
                 blocks nobody held: {repair:?} (gc: {gc:?})"
            );
        }
        if let Some(r) = gc.repair {
            assert_eq!(r.refcounts_fixed, 0, "round {round} (seed {seed}): {gc:?}");
        }
        reclaimed_before = (sessions, uncertain, refs);
        eprintln!(
            "round {round}: {got} killed sessions reclaimed ({round_uncertain} not exact); gc: {gc:?}"
        );

        // The pool is consistent, whoever died holding its lock.
        let check = pool
            .check()
            .unwrap_or_else(|e| panic!("round {round} (seed {seed}): pool check: {e}"));
        // The queue still works: take out what is left for the next round,
        // send a marker through, and put the leftovers back in order.
        let mut left = Vec::new();
        while let Some(slot) = q.dequeue(Some(Duration::ZERO)).unwrap() {
            left.push(slot);
        }
        assert!(q.enqueue_value(&marker(), Some(GUARD)).unwrap());
        assert_eq!(
            q.dequeue_value(Some(GUARD)).unwrap(),
            Some(marker()),
            "round {round} (seed {seed}): the marker did not come back"
        );
        for slot in &left {
            assert!(q.enqueue(*slot, Some(GUARD)).unwrap());
        }
        eprintln!(
            "round {round}: {} packets carried over; pool: {}",
            left.len(),
            pool_line(&pool.stats().unwrap(), &check)
        );
    }

    // Drain what is left (it counts as received, by the parent).
    let before = (pool.stats().unwrap(), pool.check().unwrap());
    let mut drained = 0;
    while let Some(v) = q.dequeue_value(Some(Duration::ZERO)).unwrap() {
        match classify(&v) {
            Ok(pair) => ledger.receive(pair, "the parent's drain".into()),
            Err(why) => ledger.bad.push(format!("drain: {why}")),
        }
        drained += 1;
    }
    let after = (pool.stats().unwrap(), pool.check().unwrap());

    let sent: u64 = ledger.sent.values().map(|(n, _)| n).sum();
    let mut lost = Vec::new();
    for (&id, &(n, _)) in &ledger.sent {
        for seq in 0..n {
            if !ledger.received.contains_key(&(id, seq)) {
                lost.push(format!("{id}:{seq}"));
            }
        }
    }
    // Received but never reported sent: allowed only for what a killed
    // producer may have enqueued just before its report (one packet, or one
    // batch).
    let mut unreported = 0;
    let mut phantoms = Vec::new();
    for (&(id, seq), by) in &ledger.received {
        let window = if batched(id) { BATCH } else { 1 };
        match ledger.sent.get(&id) {
            Some(&(n, _)) if seq < n => {}
            Some(&(n, true)) if seq < n + window => unreported += 1,
            _ => phantoms.push(format!("{id}:{seq} (received by {by})")),
        }
    }
    lost.sort();
    phantoms.sort();
    let st = q.stats();
    eprintln!(
        "chaos seed {seed}: {ROUNDS} rounds, {} producers and {} consumers killed, \
         {} producer incarnations; {sent} packets reported sent, {} received \
         ({unreported} by killed producers before their report, {drained} drained \
         at the end), {} lost with killed consumers: {lost:?}; queue totals \
         {} in / {} out; {:?}",
        ledger.producer_kills,
        ledger.consumer_kills,
        ledger.sent.len(),
        ledger.received.len(),
        lost.len(),
        st.total_enqueued,
        st.total_dequeued,
        t0.elapsed()
    );
    eprintln!("pool at the start:     {start_stats:?}");
    eprintln!("pool before the drain: {}", pool_line(&before.0, &before.1));
    eprintln!("pool after the drain:  {}", pool_line(&after.0, &after.1));
    eprintln!(
        "reclaimed from killed processes: {} references; reclaims that were not exact: {}",
        ledger.reclaimed_refs, ledger.uncertain
    );
    assert_eq!(
        after.0, start_stats,
        "seed {seed}: the pool is back to its starting figures once drained"
    );

    assert_eq!(
        ledger.duplicates,
        Vec::<String>::new(),
        "seed {seed}: delivered twice"
    );
    assert_eq!(
        ledger.bad,
        Vec::<String>::new(),
        "seed {seed}: damaged packets"
    );
    assert_eq!(phantoms, Vec::<String>::new(), "seed {seed}: never sent");
    // A consumer holds at most one packet (a batch consumer one batch) that
    // it has not reported yet.
    let may_lose = ledger.consumer_kills + (BATCH - 1) * ledger.batch_consumer_kills;
    assert!(
        lost.len() as u64 <= may_lose,
        "seed {seed}: {} packets lost but only {} consumers killed ({} of them batch): {lost:?}",
        lost.len(),
        ledger.consumer_kills,
        ledger.batch_consumer_kills
    );
    assert!(sent > 0, "seed {seed}: nothing was sent");
    assert_eq!(q.len(), 0);
    // The queue still works at the very end.
    assert!(q.enqueue_value(&marker(), Some(GUARD)).unwrap());
    assert_eq!(q.dequeue_value(Some(GUARD)).unwrap(), Some(marker()));
    drop(server);
    assert!(region.destroy().unwrap());
}
