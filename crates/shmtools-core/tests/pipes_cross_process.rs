//! Pipes (ServerSide / ClientSide / Queue) between real processes.
//!
//! Child processes are this test binary run again (`current_exe`) with only
//! the `child_entry` test selected and `SHMT_CHILD_ROLE` set; without that
//! variable `child_entry` does nothing, so it passes in a normal run. A child
//! reports to its parent with `SHMT:key=value` lines on stdout (the helpers
//! for both sides are in common/mod.rs).
//!
//! Every region name holds this process's id and a test tag, and every test
//! removes its names at the end (also when it fails). Timeouts given to waits
//! only guard against a hung test; the only timing assertions are lower bounds.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use shmtools_core::platform;
use shmtools_core::value::wire::{Reader, Writer};
use shmtools_core::{
    ClientSide, Directory, Elem, ErrorCode, KeyRef, Queue, Region, ServerSide, Value, Values,
    WaitFor,
};

mod common;

use common::{
    attach_opts, baseline, child_role, create, env_str, env_u64, ks, say, spawn, unique_name, Proc,
    RemoveOnDrop, ID, Q_DEQ_LOCK, Q_ENQ_LOCK,
};

const PIPE: &str = "SHMT_PIPE";
const COUNT: &str = "SHMT_COUNT";
const CAPACITY: &str = "SHMT_CAPACITY";
const NAMES: &str = "SHMT_NAMES";

/// Waits that only stop a hung test; never an expectation about speed.
const GUARD: Duration = Duration::from_secs(30);

// ---- helpers ----------------------------------------------------------------

fn unique(tag: &str) -> String {
    unique_name("pipes-", tag)
}

// ---- messages -----------------------------------------------------------------

/// What producer `p` puts under "payload" in message `seq`.
fn payload(p: u64, seq: u64) -> Value {
    match seq % 4 {
        0 => Value::Str(format!("p{p}-s{seq}")),
        1 => Value::Arr(vec![
            Value::UInt(p),
            Value::UInt(seq),
            Value::Str("x".repeat((seq % 9) as usize)),
        ]),
        2 => Value::Typed(
            Elem::U32,
            [p as u32, seq as u32]
                .iter()
                .flat_map(|x| x.to_le_bytes())
                .collect(),
        ),
        _ => Value::Bytes(vec![p as u8; (seq % 17) as usize]),
    }
}

fn message(p: u64, seq: u64) -> Value {
    Value::Tab(vec![
        (ks("producer"), Value::UInt(p)),
        (ks("seq"), Value::UInt(seq)),
        (ks("payload"), payload(p, seq)),
    ])
}

fn eof(p: u64) -> Value {
    Value::Tab(vec![
        (ks("producer"), Value::UInt(p)),
        (ks("eof"), Value::Bool(true)),
    ])
}

fn pill() -> Value {
    Value::Tab(vec![(ks("stop"), Value::Bool(true))])
}

enum Msg {
    Data(u64, u64),
    Eof(u64),
    Stop,
    Bad(String),
}

/// A message of the batched test: as [`message`], but every fifth carries
/// 1.5 KiB of bytes (over the inline limit: a pool object) and every
/// seventh a 2 KiB string (a table over the inline limit: packed), so the
/// batches mix byte-ring records with pool packets, and the 4 KiB byte ring
/// of a small queue fills up and sends values through the pool.
fn batch_message(p: u64, seq: u64) -> Value {
    let payload = if seq % 5 == 4 {
        Value::Bytes(vec![(p * 31 + seq) as u8; 1536])
    } else if seq % 7 == 3 {
        Value::Str(format!("{p}/{seq}/").repeat(1024)[..2048].to_string())
    } else {
        payload(p, seq)
    };
    Value::Tab(vec![
        (ks("producer"), Value::UInt(p)),
        (ks("seq"), Value::UInt(seq)),
        (ks("payload"), payload),
    ])
}

fn classify(v: &Value) -> Msg {
    classify_with(v, message)
}

fn classify_with(v: &Value, expect: fn(u64, u64) -> Value) -> Msg {
    let Value::Tab(entries) = v else {
        return Msg::Bad(format!("not a Tab: {v:?}"));
    };
    let get = |k: &str| entries.iter().find(|(key, _)| *key == ks(k)).map(|e| &e.1);
    if get("stop") == Some(&Value::Bool(true)) {
        return Msg::Stop;
    }
    let num = |k: &str| match get(k) {
        Some(Value::UInt(n)) => Some(*n),
        Some(Value::Int(n)) if *n >= 0 => Some(*n as u64),
        _ => None,
    };
    let Some(p) = num("producer") else {
        return Msg::Bad(format!("no producer: {v:?}"));
    };
    if get("eof") == Some(&Value::Bool(true)) {
        return Msg::Eof(p);
    }
    let Some(seq) = num("seq") else {
        return Msg::Bad(format!("no seq: {v:?}"));
    };
    if *v != expect(p, seq) {
        return Msg::Bad(format!("p{p} s{seq} differs from what was sent: {v:?}"));
    }
    Msg::Data(p, seq)
}

// ---- child processes (see common/mod.rs) ------------------------------------

/// The body of every child process; a no-op in the parent's own run.
#[test]
fn child_entry() {
    let Some((role, name)) = child_role() else {
        return;
    };
    match role.as_str() {
        "produce" => child_produce(&name),
        "consume" => child_consume(&name),
        "blocked" => child_blocked(&name),
        "produce_batches" => child_produce_batches(&name),
        "consume_batches" => child_consume_batches(&name),
        "find" => child_find(&name),
        "sleepy_produce" => child_sleepy(&name, true),
        "sleepy_consume" => child_sleepy(&name, false),
        other => panic!("unknown child role {other}"),
    }
}

/// Check consumers' reports (`pairs` of producer:seq in the order each took
/// them, and `bad`): every message `0..n` and the eof of each of `p`
/// producers came exactly once, each producer's in the order sent per
/// consumer, and nothing came damaged.
fn check_deliveries(outs: &[HashMap<String, String>], producers: u64, n: u64) {
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut dups = Vec::new();
    for (ci, out) in outs.iter().enumerate() {
        assert_eq!(
            out["bad"],
            "0",
            "consumer {ci}: {:?}",
            out.get("bad_example")
        );
        let mut last: HashMap<u64, u64> = HashMap::new();
        let mut taken = 0;
        for pair in out["pairs"].split(',').filter(|s| !s.is_empty()) {
            let (p, s) = pair.split_once(':').unwrap();
            let p: u64 = p.parse().unwrap();
            let order = if s == "eof" {
                u64::MAX
            } else {
                s.parse().unwrap()
            };
            // Per consumer, each producer's messages come in the order sent.
            if let Some(&before) = last.get(&p) {
                assert!(order > before, "consumer {ci}: {pair} after seq {before}");
            }
            last.insert(p, order);
            if seen.insert(pair.to_string(), ci).is_some() {
                dups.push(pair.to_string());
            }
            taken += 1;
        }
        eprintln!("consumer {ci} took {taken} packets");
    }
    assert_eq!(dups, Vec::<String>::new(), "delivered twice");
    let mut missing = Vec::new();
    for p in 0..producers {
        for s in (0..n).map(|s| s.to_string()).chain(["eof".to_string()]) {
            if !seen.contains_key(&format!("{p}:{s}")) {
                missing.push(format!("{p}:{s}"));
            }
        }
    }
    assert_eq!(missing, Vec::<String>::new(), "never delivered");
    assert_eq!(seen.len() as u64, producers * (n + 1));
}

/// Even ids join with a ServerSide of the same capacity, odd ids wait with a
/// ClientSide. Every third message goes as an object stored first and moved
/// in by reference, every third as a Tab holding a reference to another
/// object, the rest are stored by enqueue_value.
fn child_produce(name: &str) {
    let (pipe, id, count) = (env_str(PIPE), env_u64(ID), env_u64(COUNT));
    let o = attach_opts(GUARD);
    let run = |q: Queue<'_>, vals: Values<'_>| {
        for seq in 0..count {
            let sent = match seq % 3 {
                0 => {
                    let slot = vals.store(&message(id, seq)).unwrap();
                    let ok = q.enqueue(slot, Some(GUARD)).unwrap();
                    if !ok {
                        vals.release(slot).unwrap();
                    }
                    ok
                }
                1 => {
                    let outer = vals
                        .store(&Value::Tab(vec![
                            (ks("producer"), Value::UInt(id)),
                            (ks("seq"), Value::UInt(seq)),
                        ]))
                        .unwrap();
                    let inner = vals.store(&payload(id, seq)).unwrap();
                    vals.tab_set(outer, KeyRef::str("payload"), inner).unwrap();
                    let ok = q.enqueue(outer, Some(GUARD)).unwrap();
                    if !ok {
                        vals.release(outer).unwrap();
                    }
                    ok
                }
                _ => q.enqueue_value(&message(id, seq), Some(GUARD)).unwrap(),
            };
            assert!(sent, "no room for {GUARD:?}");
        }
        assert!(q.enqueue_value(&eof(id), Some(GUARD)).unwrap());
    };
    if id % 2 == 0 {
        let s = ServerSide::start(name, &pipe, env_u64(CAPACITY), &o).unwrap();
        run(s.pipe().unwrap(), s.values().unwrap());
    } else {
        let c = ClientSide::start(name, &pipe, &o).unwrap();
        run(c.pipe().unwrap(), c.values().unwrap());
    }
    say("sent", count);
}

fn child_consume(name: &str) {
    let pipe = env_str(PIPE);
    let c = ClientSide::start(name, &pipe, &attach_opts(GUARD)).unwrap();
    let q = c.pipe().unwrap();
    let mut pairs = Vec::new();
    let mut bad = Vec::new();
    loop {
        let v = q
            .dequeue_value(Some(GUARD))
            .unwrap()
            .unwrap_or_else(|| panic!("nothing came for {GUARD:?}"));
        match classify(&v) {
            Msg::Data(p, s) => pairs.push(format!("{p}:{s}")),
            Msg::Eof(p) => pairs.push(format!("{p}:eof")),
            Msg::Stop => break,
            Msg::Bad(why) => bad.push(why),
        }
    }
    say("bad", bad.len());
    for b in bad.iter().take(5) {
        say("bad_example", b);
    }
    say("pairs", pairs.join(","));
}

/// Send `batch_message`s `0..count` in batches of 1 to 40 through
/// `enqueue_wire_many` (which sends a prefix of what fits; the rest goes
/// again), then an eof.
fn child_produce_batches(name: &str) {
    let (pipe, id, count) = (env_str(PIPE), env_u64(ID), env_u64(COUNT));
    let c = ClientSide::start(name, &pipe, &attach_opts(GUARD)).unwrap();
    let q = c.pipe().unwrap();
    let mut seq = 0;
    while seq < count {
        let k = (1 + (seq * 7 + id * 13) % 40).min(count - seq);
        let encs: Vec<Vec<u8>> = (seq..seq + k)
            .map(|s| batch_message(id, s).encode().unwrap())
            .collect();
        let mut done = 0;
        while done < encs.len() {
            let rest = encs[done..].concat();
            let n = q
                .enqueue_wire_many(&rest, encs.len() - done, Some(GUARD))
                .unwrap();
            assert!(n > 0, "no room for {GUARD:?}");
            done += n;
        }
        seq += k;
    }
    assert!(q.enqueue_value(&eof(id), Some(GUARD)).unwrap());
    say("sent", count);
}

/// Take batches of up to 1..=32 packets, by turns as copies
/// (`dequeue_many_wire`) and as handles (`dequeue_many_shared`), until a
/// pill; report what came, as `child_consume` does.
fn child_consume_batches(name: &str) {
    let pipe = env_str(PIPE);
    let c = ClientSide::start(name, &pipe, &attach_opts(GUARD)).unwrap();
    let q = c.pipe().unwrap();
    let (mut pairs, mut bad) = (Vec::new(), Vec::new());
    let mut round = 0usize;
    loop {
        round += 1;
        let max = 1 + round * 5 % 32;
        let got: Vec<Value> = if round.is_multiple_of(2) {
            let mut w = Writer::default();
            let n = q.dequeue_many_wire(max, Some(GUARD), &mut w).unwrap();
            let mut r = Reader::new(&w.buf);
            let mut vals = Vec::new();
            for _ in 0..n {
                let at = r.pos();
                r.skip_value().unwrap();
                vals.push(Value::decode(&w.buf[at..r.pos()]).unwrap());
            }
            assert!(r.at_end(), "bytes after {n} packets");
            vals
        } else {
            let handles = q.dequeue_many_shared(max, Some(GUARD)).unwrap();
            handles.iter().map(|h| h.load().unwrap()).collect()
        };
        assert!(!got.is_empty(), "nothing came for {GUARD:?}");
        let mut pills = 0;
        for v in &got {
            match classify_with(v, batch_message) {
                Msg::Data(p, s) => pairs.push(format!("{p}:{s}")),
                Msg::Eof(p) => pairs.push(format!("{p}:eof")),
                Msg::Stop => pills += 1,
                Msg::Bad(why) => bad.push(why),
            }
        }
        if pills > 0 {
            // The parent sends one pill per consumer after every message:
            // one taken with others in a batch belongs to another consumer.
            for _ in 1..pills {
                assert!(q.enqueue_value(&pill(), Some(GUARD)).unwrap());
            }
            break;
        }
    }
    say("bad", bad.len());
    for b in bad.iter().take(5) {
        say("bad_example", b);
    }
    say("pairs", pairs.join(","));
}

/// Report, then block in dequeue until a packet comes (or the guard passes).
fn child_blocked(name: &str) {
    let c = ClientSide::start(name, &env_str(PIPE), &attach_opts(GUARD)).unwrap();
    let q = c.pipe().unwrap();
    say("ready", std::process::id());
    match q.dequeue_value(Some(GUARD)).unwrap() {
        Some(Value::Str(s)) => say("got", s),
        other => panic!("expected a string packet, got {other:?}"),
    }
}

/// Find every named pipe (Directory and ClientSide) and take its one packet.
fn child_find(name: &str) {
    let names = env_str(NAMES);
    let region = Region::attach(name, &attach_opts(GUARD)).unwrap();
    let dir = Directory::open(&region).unwrap();
    let mut found = 0;
    for n in names.split(',') {
        let p = dir
            .find(n)
            .unwrap()
            .unwrap_or_else(|| panic!("pipe {n} not found"));
        let c = ClientSide::start(name, n, &attach_opts(Duration::ZERO)).unwrap();
        let q = c.pipe().unwrap();
        assert_eq!(q.offset(), p.queue, "ClientSide and Directory agree on {n}");
        assert_eq!(
            q.dequeue_value(Some(Duration::ZERO)).unwrap(),
            Some(Value::Str(format!("for {n}")))
        );
        found += 1;
    }
    say("found", found);
}

// ---- exactly once -------------------------------------------------------------

/// One side of `every_sleeper_is_woken_...`: Int slots 0..count through a
/// pipe of one packet, by hand (try, then `Queue::wait`), after a pause of
/// a random length before each try (0 to about 150 us of spinning, so tries
/// land in the other side's spin, in its fall into sleep and while it
/// sleeps). Reports how many packets went through, how many arrived out
/// of order (consumer) and how many waits ran a whole slice without the
/// counter moving (`Wake::TimedOut`): each such wait is a wake-up the
/// other side's publish missed, as the other side never pauses for long.
fn child_sleepy(name: &str, produce: bool) {
    let (pipe, count, seed) = (env_str(PIPE), env_u64(COUNT), env_u64(ID));
    let c = ClientSide::start(name, &pipe, &attach_opts(GUARD)).unwrap();
    let q = c.pipe().unwrap();
    let mut rng = seed;
    let (mut missed, mut wrong) = (0u64, 0u64);
    let w = if produce {
        WaitFor::NotFull
    } else {
        WaitFor::NotEmpty
    };
    let deadline = Instant::now() + GUARD;
    for i in 0..count {
        rng = rng
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        for _ in 0..(rng >> 33) % 15_000 {
            std::hint::spin_loop();
        }
        loop {
            assert!(Instant::now() < deadline, "stuck at packet {i}");
            let seen = q.seq(w);
            let done = if produce {
                q.try_enqueue(shmtools_core::Slot {
                    tag: shmtools_core::value::T_INT,
                    bits: i,
                })
                .unwrap()
            } else {
                match q.try_dequeue().unwrap() {
                    Some(s) => {
                        wrong += u64::from(s.tag != shmtools_core::value::T_INT || s.bits != i);
                        true
                    }
                    None => false,
                }
            };
            if done {
                break;
            }
            if q.wait(w, seen, Some(deadline)) == platform::Wake::TimedOut {
                missed += 1;
            }
        }
    }
    say("moved", count);
    say("wrong", wrong);
    say("missed", missed);
}

/// Run `producers` and `consumers` processes in the given roles on a fresh
/// pipe of `cap` packets: each producer sends messages `0..n` and an eof;
/// once all are in, one pill per consumer. Checks what the consumers report
/// ([`check_deliveries`]), that the queue ends empty and never held more
/// than `cap`, and that every block is given back; returns the queue's
/// stats.
fn mpmc(
    tag: &str,
    (produce, consume): (&str, &str),
    producers: u64,
    consumers: u64,
    n: u64,
    cap: u64,
) -> shmtools_core::QueueStats {
    let name = unique(tag);
    let _rm = RemoveOnDrop(name.clone());
    let region = create(&name, 16 << 20);
    let server = ServerSide::start(&name, "work", cap, &attach_opts(GUARD)).unwrap();
    let q = server.pipe().unwrap();
    let vals = region.values().unwrap();
    let base = baseline(&vals);
    let t0 = Instant::now();
    let env = |id: u64| {
        vec![
            (PIPE, "work".to_string()),
            (ID, id.to_string()),
            (COUNT, n.to_string()),
            (CAPACITY, cap.to_string()),
        ]
    };
    let cs: Vec<Proc> = (0..consumers)
        .map(|i| spawn(consume, &name, &env(i)))
        .collect();
    let ps: Vec<Proc> = (0..producers)
        .map(|i| spawn(produce, &name, &env(i)))
        .collect();
    for p in ps {
        assert_eq!(p.finish_ok()["sent"], n.to_string());
    }
    // Every message and eof is in the pipe before the first pill.
    for _ in 0..consumers {
        assert!(q.enqueue_value(&pill(), Some(GUARD)).unwrap());
    }
    let outs: Vec<_> = cs.into_iter().map(|c| c.finish_ok()).collect();
    check_deliveries(&outs, producers, n);
    eprintln!(
        "{producers}×{consumers} processes moved {} messages in {:?}",
        producers * n,
        t0.elapsed()
    );
    let st = q.stats();
    assert_eq!(st.depth, 0);
    assert!(st.high_water <= cap, "high water {} > {cap}", st.high_water);
    // Every packet (copies, moved objects, nested references) was freed by
    // whichever process released it last.
    assert_eq!(baseline(&vals), base);
    drop(server);
    assert!(region.destroy().unwrap());
    st
}

/// The sleeper handshake (see `Queue::signal` and `publish`): each side
/// publishes its counter without a fence where the kernel's global barrier
/// is there, and a sleeper runs that barrier after counting itself in (a
/// producer after a first nap). A mistake there shows as a sleeper that a
/// publish missed, which sleeps out its whole slice. Two processes pass
/// packets through a pipe of one, each pausing at random before each try,
/// so both sides keep falling asleep just as the other publishes.
#[test]
fn every_sleeper_is_woken_by_the_publish_it_waits_for_across_processes() {
    const N: u64 = 4000;
    let name = unique("sleepy");
    let _rm = RemoveOnDrop(name.clone());
    let region = create(&name, 4 << 20);
    let server = ServerSide::start(&name, "nap", 1, &attach_opts(GUARD)).unwrap();
    let env = |seed: u64| {
        vec![
            (PIPE, "nap".to_string()),
            (ID, seed.to_string()),
            (COUNT, N.to_string()),
        ]
    };
    let consumer = spawn("sleepy_consume", &name, &env(1));
    let producer = spawn("sleepy_produce", &name, &env(2));
    let (p, c) = (producer.finish_ok(), consumer.finish_ok());
    assert_eq!((p["moved"].as_str(), c["moved"].as_str()), ("4000", "4000"));
    assert_eq!(c["wrong"], "0", "packets out of order or damaged");
    // A timed-out sleep is a missed wake-up (neither side ever pauses for
    // more than about 150 us between tries).
    assert_eq!(
        (p["missed"].as_str(), c["missed"].as_str()),
        ("0", "0"),
        "sleeps that ran out their slice (producer, consumer)"
    );
    let st = server.pipe().unwrap().stats();
    assert_eq!((st.total_enqueued, st.total_dequeued), (N, N));
    drop(server);
    assert!(region.destroy().unwrap());
}

#[test]
fn four_producer_and_four_consumer_processes_deliver_every_message_exactly_once() {
    const P: u64 = 4;
    const C: u64 = 4;
    const N: u64 = 2000;
    let st = mpmc("mpmc", ("produce", "consume"), P, C, N, 16);
    assert_eq!(st.total_enqueued, P * (N + 1) + C);
    assert_eq!(st.total_dequeued, P * (N + 1) + C);
}

/// The batch forms between processes, with each end's lock taken by
/// several processes at once and the two ends working side by side: three
/// producers send batches of 1 to 40 mixed values (byte-ring records, pool
/// objects, packed tables) into a queue of 8, three consumers take batches
/// as copies and as handles. Every message comes exactly once and in order
/// per producer, and every block is given back.
#[test]
fn batches_between_three_producer_and_three_consumer_processes_arrive_once_and_in_order() {
    const P: u64 = 3;
    const C: u64 = 3;
    const N: u64 = 20_000;
    let roles = ("produce_batches", "consume_batches");
    let st = mpmc("mpmc-batches", roles, P, C, N, 8);
    // (consumers that took more than one pill put the others back)
    assert_eq!(st.total_enqueued, st.total_dequeued);
    assert!(st.total_enqueued >= P * (N + 1) + C);
}

// ---- timeouts -----------------------------------------------------------------

#[test]
fn dequeue_and_enqueue_never_time_out_early_and_leave_the_queue_and_pool_as_they_were() {
    let name = unique("timeout");
    let _rm = RemoveOnDrop(name.clone());
    let region = create(&name, 1 << 20);
    let dir = Directory::open(&region).unwrap();
    let (p, created) = dir.create("t", 2).unwrap();
    assert!(created);
    let q = dir.queue(&p).unwrap();
    let vals = region.values().unwrap();
    let t = Duration::from_millis(200);

    let t0 = Instant::now();
    assert_eq!(q.dequeue(Some(t)).unwrap(), None);
    let d = t0.elapsed();
    assert!(d >= t, "dequeue timed out after {d:?}");
    eprintln!("dequeue({t:?}) on an empty queue: {d:?}");
    let t0 = Instant::now();
    assert_eq!(q.dequeue_value(Some(t)).unwrap(), None);
    assert!(t0.elapsed() >= t);

    assert!(q.enqueue_value(&Value::Str("a".into()), None).unwrap());
    assert!(q.enqueue_value(&Value::Str("b".into()), None).unwrap());
    let stats = q.stats();
    let base = baseline(&vals);
    let big = Value::Arr(vec![Value::Str("z".repeat(3000)), Value::Int(-1)]);
    let slot = vals.store(&big).unwrap();
    let t0 = Instant::now();
    assert!(!q.enqueue(slot, Some(t)).unwrap());
    let d = t0.elapsed();
    assert!(d >= t, "enqueue timed out after {d:?}");
    eprintln!("enqueue(_, {t:?}) on a full queue: {d:?}");
    // On a timeout the slot is still ours.
    assert_eq!(vals.load(slot).unwrap(), big);
    vals.release(slot).unwrap();
    let t0 = Instant::now();
    assert!(!q.enqueue_value(&big, Some(t)).unwrap());
    assert!(t0.elapsed() >= t);
    assert!(!q.enqueue_value(&big, Some(Duration::ZERO)).unwrap());
    assert_eq!(q.stats(), stats);
    assert_eq!(baseline(&vals), base, "the stored copies were released");
    assert_eq!(q.dequeue_value(None).unwrap(), Some(Value::Str("a".into())));
    assert_eq!(q.dequeue_value(None).unwrap(), Some(Value::Str("b".into())));

    // ClientSide for a pipe nobody creates.
    let t0 = Instant::now();
    let e = ClientSide::start(&name, "never", &attach_opts(t))
        .err()
        .expect("a timeout");
    assert_eq!(e.code(), ErrorCode::Timeout);
    assert!(t0.elapsed() >= t);
    assert!(region.destroy().unwrap());
}

/// Moves `word` on and wakes its sleepers every millisecond, from its own
/// mapping of the region, until stopped (or 20 s pass: a hang guard).
fn bumper(name: String, word: u64, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<(u64, bool)> {
    std::thread::spawn(move || {
        let region = Region::attach(&name, &attach_opts(GUARD)).unwrap();
        let w: &AtomicU32 = region.span().u32_at(word).unwrap();
        let give_up = Instant::now() + Duration::from_secs(20);
        let mut bumps = 0;
        while !stop.load(Ordering::Acquire) {
            if Instant::now() > give_up {
                return (bumps, true);
            }
            w.fetch_add(1, Ordering::Release);
            platform::futex_wake(w, u32::MAX);
            bumps += 1;
            std::thread::sleep(Duration::from_millis(1));
        }
        (bumps, false)
    })
}

#[test]
fn wake_ups_that_bring_nothing_do_not_push_a_deadline_back() {
    let name = unique("deadline");
    let _rm = RemoveOnDrop(name.clone());
    let region = create(&name, 1 << 20);
    let dir = Directory::open(&region).unwrap();
    let empty = dir.queue(&dir.create("empty", 2).unwrap().0).unwrap();
    let full = dir.queue(&dir.create("full", 1).unwrap().0).unwrap();
    assert!(full.enqueue_value(&Value::Int(1), None).unwrap());
    let t = Duration::from_millis(300);

    for (what, q, w) in [
        ("dequeue on an empty queue", empty, WaitFor::NotEmpty),
        ("enqueue on a full queue", full, WaitFor::NotFull),
    ] {
        let stop = Arc::new(AtomicBool::new(false));
        // (the futex word: the wait sleeps on it, and looks at the queue's
        // counter, which the bumper leaves alone, each time it is woken)
        let word = region.span().u32_at(q.word_offset(w)).unwrap();
        let before = word.load(Ordering::Acquire);
        let h = bumper(name.clone(), q.word_offset(w), stop.clone());
        // The bumper is running before the wait starts.
        while word.load(Ordering::Acquire) == before {
            std::thread::yield_now();
        }
        let t0 = Instant::now();
        let timed_out = match w {
            WaitFor::NotEmpty => q.dequeue(Some(t)).unwrap().is_none(),
            WaitFor::NotFull => !q.enqueue_value(&Value::Int(2), Some(t)).unwrap(),
        };
        let d = t0.elapsed();
        stop.store(true, Ordering::Release);
        let (bumps, gave_up) = h.join().unwrap();
        assert!(timed_out, "{what}: no packet / room was ever there");
        assert!(d >= t, "{what}: timed out after {d:?}");
        // Had every wake-up restarted the timeout, the wait would only have
        // ended once the bumper gave up.
        assert!(!gave_up, "{what}: only returned after the wake-ups stopped");
        assert!(bumps > 0);
        eprintln!("{what}: timed out after {d:?} with {bumps} wake-ups in all");
    }
    assert_eq!(empty.len(), 0);
    assert_eq!(full.len(), 1);
    assert!(region.destroy().unwrap());
}

// ---- a consumer killed while blocked -------------------------------------------

#[test]
fn a_consumer_killed_while_blocked_in_dequeue_does_not_break_the_queue_for_others() {
    let name = unique("killed");
    let _rm = RemoveOnDrop(name.clone());
    let region = create(&name, 1 << 20);
    let server = ServerSide::start(&name, "k", 4, &attach_opts(GUARD)).unwrap();
    let q = server.pipe().unwrap();
    let vals = region.values().unwrap();
    let base = baseline(&vals);
    let sleepers = region
        .span()
        .u32_at(q.sleepers_offset(WaitFor::NotEmpty))
        .unwrap();
    let env = [(PIPE, "k".to_string())];
    // Wait (a condition, with a guard) until `n` sleepers are counted.
    let wait_sleepers = |n: u32| {
        let give_up = Instant::now() + GUARD;
        while sleepers.load(Ordering::Relaxed) < n {
            assert!(Instant::now() < give_up, "no consumer ever slept");
            std::thread::sleep(Duration::from_millis(1));
        }
    };

    let mut victim = spawn("blocked", &name, &env);
    victim.expect("ready");
    wait_sleepers(1);
    let mut survivor = spawn("blocked", &name, &env);
    survivor.expect("ready");
    wait_sleepers(2);
    victim.kill_and_reap();

    // The lock is free and the queue whole: a packet goes to the survivor.
    assert!(q
        .enqueue_value(&Value::Str("for the survivor".into()), Some(GUARD))
        .unwrap());
    let out = survivor.finish_ok();
    assert_eq!(out["got"], "for the survivor");
    // And the queue keeps working here.
    assert!(q.enqueue_value(&Value::Int(7), Some(GUARD)).unwrap());
    assert_eq!(q.dequeue_value(Some(GUARD)).unwrap(), Some(Value::Int(7)));
    let st = q.stats();
    assert_eq!((st.depth, st.total_enqueued, st.total_dequeued), (0, 2, 2));
    eprintln!(
        "sleepers still counted after the kill: {}",
        sleepers.load(Ordering::Relaxed)
    );
    // The victim's session (it held nothing but its ledger) is given back.
    assert_eq!(region.reclaim_dead().unwrap().sessions, 1);
    assert_eq!(baseline(&vals), base);
    drop(server);
    assert!(region.destroy().unwrap());
}

// ---- peers that died strand nobody ---------------------------------------------

#[test]
fn waiters_whose_peers_died_time_out_on_schedule_even_past_a_lock_left_held() {
    let name = unique("stranded");
    let _rm = RemoveOnDrop(name.clone());
    let region = create(&name, 1 << 20);
    let server = ServerSide::start(&name, "s", 2, &attach_opts(GUARD)).unwrap();
    let q = server.pipe().unwrap();
    let env = [(PIPE, "s".to_string())];
    // A peer that attached, then was SIGKILLed: its thread id, now gone,
    // is written into one of the pipe's locks (the consumers', then the
    // producers') as if it had died holding it.
    let mut peer = spawn("blocked", &name, &env);
    peer.expect("ready");
    let dead_tid = peer.pid();
    peer.kill_and_reap();
    let deq_lock = region.span().u32_at(q.offset() + Q_DEQ_LOCK).unwrap();
    let enq_lock = region.span().u32_at(q.offset() + Q_ENQ_LOCK).unwrap();
    let wait = Duration::from_millis(300);

    // A consumer on an empty pipe whose producer and consumer died, each
    // holding its side's lock: it takes the consumers' lock over, and never
    // needs the producers'.
    enq_lock.store(dead_tid, Ordering::Relaxed);
    deq_lock.store(dead_tid, Ordering::Relaxed);
    let t0 = Instant::now();
    assert_eq!(q.dequeue_value(Some(wait)).unwrap(), None);
    assert!(t0.elapsed() >= wait, "returned before its timeout");
    assert_eq!(deq_lock.load(Ordering::Relaxed), 0, "taken over and let go");
    assert_eq!(enq_lock.load(Ordering::Relaxed), dead_tid);

    // The next producer takes the producers' lock over.
    assert!(q.enqueue_value(&Value::Int(1), Some(GUARD)).unwrap());
    assert_eq!(enq_lock.load(Ordering::Relaxed), 0, "taken over and let go");
    assert!(q.enqueue_value(&Value::Int(2), Some(GUARD)).unwrap());

    // A producer on a full pipe whose consumer died holding its lock.
    deq_lock.store(dead_tid, Ordering::Relaxed);
    let t0 = Instant::now();
    assert!(!q.enqueue_value(&Value::Int(3), Some(wait)).unwrap());
    assert!(t0.elapsed() >= wait, "gave up before its timeout");
    assert_eq!(
        deq_lock.load(Ordering::Relaxed),
        dead_tid,
        "a producer never takes it"
    );

    // Nothing was lost or duplicated, and the pipe works on.
    // (the first dequeue takes the consumers' lock over)
    assert_eq!(q.dequeue_value(Some(GUARD)).unwrap(), Some(Value::Int(1)));
    assert_eq!(deq_lock.load(Ordering::Relaxed), 0, "taken over and let go");
    assert_eq!(q.dequeue_value(Some(GUARD)).unwrap(), Some(Value::Int(2)));
    assert_eq!(q.dequeue_value(Some(Duration::ZERO)).unwrap(), None);
    // The waits that timed out reclaimed the dead peer's session on the way.
    let h = region.holders().unwrap();
    assert_eq!(h.header().reclaimed_sessions.load(Ordering::Relaxed), 1);
    assert!(region.holder_list().unwrap().iter().all(|h| h.alive));
    drop(server);
    assert!(region.destroy().unwrap());
}

// ---- the directory grows ---------------------------------------------------------

#[test]
fn the_pipe_directory_grows_past_eight_pipes_and_every_pipe_stays_findable() {
    let name = unique("grow");
    let _rm = RemoveOnDrop(name.clone());
    let region = create(&name, 4 << 20);
    let dir = Directory::open(&region).unwrap();
    let names: Vec<String> = (0..20).map(|i| format!("pipe-{i:02}")).collect();
    let mut offsets = HashSet::new();
    for (i, n) in names.iter().enumerate() {
        // Half through ServerSide (its own mapping), half through the directory.
        let (off, cap) = if i % 2 == 0 {
            let s = ServerSide::start(&name, n, 1 + i as u64, &attach_opts(GUARD)).unwrap();
            let q = s.pipe().unwrap();
            (q.offset(), q.capacity())
        } else {
            let (p, created) = dir.create(n, 1 + i as u64).unwrap();
            assert!(created);
            (p.queue, p.capacity)
        };
        assert_eq!(cap, 1 + i as u64);
        assert!(offsets.insert(off), "two pipes share a queue");
        // Every pipe made so far is still there after each growth.
        for earlier in &names[..=i] {
            assert!(
                dir.find(earlier).unwrap().is_some(),
                "{earlier} lost after {n}"
            );
        }
    }
    let list = dir.list().unwrap();
    assert_eq!(
        list.iter().map(|p| p.name.clone()).collect::<Vec<_>>(),
        names,
        "in creation order"
    );
    for (i, p) in list.iter().enumerate() {
        assert_eq!(p.capacity, 1 + i as u64);
        assert_eq!(p.creator_pid, std::process::id());
        let q = dir.queue(p).unwrap();
        assert!(q
            .enqueue_value(&Value::Str(format!("for {}", p.name)), None)
            .unwrap());
    }
    // Same name and capacity: the same pipe; another capacity: refused.
    let (again, created) = dir.create("pipe-05", 6).unwrap();
    assert!(!created);
    assert_eq!(again.queue, list[5].queue);
    assert_eq!(
        dir.create("pipe-05", 7).err().map(|e| e.code()),
        Some(ErrorCode::Exists)
    );

    // Another process finds all twenty and takes each one's packet.
    let out = spawn("find", &name, &[(NAMES, names.join(","))]).finish_ok();
    assert_eq!(out["found"], "20");
    for p in &list {
        assert_eq!(
            dir.queue(p).unwrap().len(),
            0,
            "{} still holds its packet",
            p.name
        );
    }
    assert_eq!(dir.list().unwrap().len(), 20);
    region.pool().unwrap().check().expect("a consistent pool");
    assert!(region.destroy().unwrap());
}
