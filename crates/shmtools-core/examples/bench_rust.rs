//! The Rust side of the benchmark suite: shmtools against Boost's
//! `message_queue` and against raw shared-memory floors, every column
//! measured in the same run. Run it through `bash bench/rust.sh` (which
//! builds the C++ peer and this harness); by hand:
//!
//!   cargo run --release -p shmtools-core --example bench_rust -- \
//!       [--quick] [--no-pin] [--boost-peer PATH | --no-boost REASON] [--out FILE]
//!
//! Scenarios (each a table, with ratios and PASS/MISS against its targets):
//! - 5a: 64-byte messages one way, a producer process to a consumer process:
//!   shmtools (a 64-byte Bytes value by copy, one per call, which goes
//!   inline through the queue's byte ring; the same as a pool object, the
//!   path of a handle; the copy form in batches of 256 through the batch
//!   APIs; the Value API; a plain Int slot for the raw queue cost), Boost
//!   `message_queue`,
//!   and the floors: a one-slot mailbox in shared memory (spin, and futex),
//!   and a one-producer one-consumer ring with cached counters (spin only,
//!   and with the per-message fence a sleeping waiter needs).
//! - 5b: round trip p50/p99 between two processes: shmtools blocking
//!   enqueue/dequeue, Boost `message_queue`, the spin floor, the futex floor.
//! - 6: the allocator, ns per allocate+free pair, alone and with two
//!   processes contending.
//!
//! Every process is this program (re-executed through `current_exe()` with
//! `child <role> ...`) or the C++ peer (bench/boost_mq_peer.cpp). Each
//! variant's producer and consumer run as two fresh child processes; the
//! parent only starts them and reads what they print. Throughput is
//! messages ÷ (consumer's CLOCK_MONOTONIC after the last receive − producer's
//! before the first send), started once the consumer is attached and waiting.
//! The two processes of a measurement are bound to two different CPUs (unless
//! `--no-pin`), so they really run side by side even when other work shares
//! the machine. Variants are interleaved within each repetition, so drift on
//! a shared machine hits all columns alike; the table gives the median
//! repetition.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rustix::thread::{sched_getaffinity, sched_setaffinity, CpuSet};
use shmtools_core::platform::{futex_wait, futex_wake};
use shmtools_core::value::wire::Writer;
use shmtools_core::value::T_INT;
use shmtools_core::{
    AttachOptions, ClientSide, CreateOptions, Directory, Queue, Region, Slot, Value,
};

type R<T> = Result<T, String>;

/// Bytes per message in scenario 5a.
const MSG: usize = 64;
/// Packets a queue holds (shmtools pipes and Boost queues alike).
const CAPACITY: u64 = 1024;
/// Region size for each scenario.
const REGION_BYTES: u64 = 64 << 20;
/// The two CPUs the two sides of every measurement are bound to (None: not
/// pinned). Set once in `main`.
static PIN: OnceLock<Option<[usize; 2]>> = OnceLock::new();

/// The first two CPUs this process may run on, if there are two.
fn two_cpus() -> Option<[usize; 2]> {
    let set = sched_getaffinity(None).ok()?;
    let mut cpus = (0..CpuSet::MAX_CPU).filter(|&c| set.is_set(c));
    Some([cpus.next()?, cpus.next()?])
}

/// Longest a single child process may take before it is killed.
const CHILD_LIMIT: Duration = Duration::from_secs(90);

fn err<E: std::fmt::Display>(what: &str) -> impl FnOnce(E) -> String + '_ {
    move |e| format!("{what}: {e}")
}

/// CLOCK_MONOTONIC in ns: the clock `Instant` uses, readable as a number so
/// that two processes' readings can be subtracted.
fn mono_ns() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64
}

fn attach_opts() -> AttachOptions<'static> {
    AttachOptions {
        timeout: Some(Duration::from_secs(30)),
        ..Default::default()
    }
}

fn arg<T: std::str::FromStr>(args: &[String], i: usize, what: &str) -> R<T> {
    args.get(i)
        .ok_or_else(|| format!("missing argument {i} ({what})"))?
        .parse()
        .map_err(|_| format!("argument {i} ({what}) is not a number: {:?}", args[i]))
}

// ---------------------------------------------------------------------------
// Child roles
// ---------------------------------------------------------------------------

/// The payload of message `i`: its sequence number, then filler.
fn payload(i: u64, buf: &mut [u8; MSG]) {
    buf[..8].copy_from_slice(&i.to_le_bytes());
}

fn seq_of(buf: &[u8]) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&buf[..8]);
    u64::from_le_bytes(b)
}

fn ready() {
    println!("ready");
    let _ = std::io::stdout().flush();
}

/// A 32-bit word of a mailbox block.
fn word32(region: &Region, off: u64) -> R<&AtomicU32> {
    region.span().u32_at(off).map_err(err("mailbox word"))
}

/// Wait until `w` holds `want`: spinning, or asleep on the futex.
fn await_word(w: &AtomicU32, want: u32, futex: bool) {
    loop {
        let v = w.load(Ordering::Acquire);
        if v == want {
            return;
        }
        if futex {
            futex_wait(w, v, None);
        } else {
            std::hint::spin_loop();
        }
    }
}

/// How a consumer role ends a one-way run: the clock after its last
/// receive, printed for the parent, unless `wrong` of them (`what`) came
/// out of order.
fn received(wrong: u64, what: &str) -> R<()> {
    let t1 = mono_ns();
    if wrong > 0 {
        return Err(format!("{wrong} {what} out of order"));
    }
    println!("t1={t1}");
    Ok(())
}

/// The arguments of a floor role (region name, block offset, mode, count),
/// with the region attached: the region, the offset, whether the mode is
/// `second` (the role's other mode than plain spinning), the count.
fn floor_role(args: &[String], second: &str) -> R<(Region, u64, bool, u64)> {
    let off = arg::<u64>(args, 1, "offset")?;
    let n = arg(args, 3, "count")?;
    let region = Region::attach(&args[0], &attach_opts()).map_err(err("attach"))?;
    Ok((region, off, args[2] == second, n))
}

/// The batch size of a kind `batch<N>` (N ≥ 1), if `kind` is one.
fn batch_of(kind: &str) -> R<Option<usize>> {
    match kind.strip_prefix("batch") {
        None => Ok(None),
        Some(n) => match n.parse::<usize>() {
            Ok(b) if b > 0 => Ok(Some(b)),
            _ => Err(format!("bad batch kind {kind:?}")),
        },
    }
}

/// Consumer of 5a on a shmtools pipe. `kind`: bytes | value | int |
/// batch<N>.
fn q_recv(args: &[String]) -> R<()> {
    let (region, pipe, kind) = (&args[0], &args[1], args[2].as_str());
    let n: u64 = arg(args, 3, "count")?;
    if let Some(batch) = batch_of(kind)? {
        return q_recv_batch(region, pipe, n, batch);
    }
    let end = ClientSide::start(region, pipe, &attach_opts()).map_err(err("attach"))?;
    let q = end.pipe().map_err(err("open pipe"))?;
    let values = q.values();
    let span = values.pool().span();
    let mut buf = [0u8; MSG];
    let mut wrong = 0u64;
    let mut w = Writer::default();
    ready();
    for i in 0..n {
        let seq = match kind {
            "copy" => {
                // One packet's encoding, copied out (inline: from the byte
                // ring, under the consumers' lock) into a reused buffer.
                w.buf.clear();
                if q.dequeue_many_wire(1, None, &mut w)
                    .map_err(err("dequeue_many_wire"))?
                    != 1
                {
                    return Err("dequeue_many_wire without a timeout took nothing".into());
                }
                let body = w.buf.len().checked_sub(MSG).ok_or("a short packet")?;
                seq_of(&w.buf[body..])
            }
            "bytes" => {
                let slot = q
                    .dequeue(None)
                    .map_err(err("dequeue"))?
                    .ok_or("no packet")?;
                let (off, len) = values.data(slot).map_err(err("data"))?;
                if len != MSG as u64 {
                    return Err(format!("packet of {len} bytes, not {MSG}"));
                }
                span.read(off, &mut buf).map_err(err("read"))?;
                values.release(slot).map_err(err("release"))?;
                seq_of(&buf)
            }
            "value" => match q.dequeue_value(None).map_err(err("dequeue_value"))? {
                Some(Value::Bytes(b)) if b.len() == MSG => seq_of(&b),
                other => return Err(format!("unexpected packet {other:?}")),
            },
            "int" => {
                let slot = q
                    .dequeue(None)
                    .map_err(err("dequeue"))?
                    .ok_or("no packet")?;
                if slot.tag != T_INT {
                    return Err(format!("packet with tag {}, not Int", slot.tag));
                }
                slot.bits
            }
            _ => return Err(format!("unknown kind {kind}")),
        };
        wrong += u64::from(seq != i);
    }
    received(wrong, "packets")
}

/// Producer of 5a on a shmtools pipe.
fn q_send(args: &[String]) -> R<()> {
    let (region, pipe, kind) = (&args[0], &args[1], args[2].as_str());
    let n: u64 = arg(args, 3, "count")?;
    if let Some(batch) = batch_of(kind)? {
        return q_send_batch(region, pipe, n, batch);
    }
    let end = ClientSide::start(region, pipe, &attach_opts()).map_err(err("attach"))?;
    let q = end.pipe().map_err(err("open pipe"))?;
    let values = q.values();
    let mut buf = [b'x'; MSG];
    // The wire encoding of a 64-byte Bytes value; the payload is its tail, so
    // each message is patched in place instead of encoded afresh.
    let mut wire = Value::Bytes(buf.to_vec()).encode().map_err(err("encode"))?;
    let at = wire.len() - MSG;
    let mut value = Value::Bytes(buf.to_vec());
    let t0 = mono_ns();
    for i in 0..n {
        let sent = match kind {
            "copy" => {
                payload(i, &mut buf);
                wire[at..].copy_from_slice(&buf);
                q.enqueue_wire_many(&wire, 1, None)
                    .map_err(err("enqueue_wire_many"))?
                    == 1
            }
            "bytes" => {
                payload(i, &mut buf);
                wire[at..].copy_from_slice(&buf);
                let slot = values.store_wire(&wire).map_err(err("store_wire"))?;
                q.enqueue(slot, None).map_err(err("enqueue"))?
            }
            "value" => {
                if let Value::Bytes(b) = &mut value {
                    b[..8].copy_from_slice(&i.to_le_bytes());
                }
                q.enqueue_value(&value, None)
                    .map_err(err("enqueue_value"))?
            }
            "int" => q
                .enqueue(
                    Slot {
                        tag: T_INT,
                        bits: i,
                    },
                    None,
                )
                .map_err(err("enqueue"))?,
            _ => return Err(format!("unknown kind {kind}")),
        };
        if !sent {
            return Err("enqueue without a timeout returned false".into());
        }
    }
    println!("t0={t0}");
    Ok(())
}

/// Consumer of the batched 5a variant: takes up to `batch` packets per
/// call (one hold of the consumers' lock) as their encodings, copied out into one
/// reused buffer (`dequeue_many_wire`: inline packets straight from the byte
/// ring, any in pool blocks copied and freed under one hold of the pool
/// lock), and reads and checks each one's sequence number as `q_recv` does.
fn q_recv_batch(region: &str, pipe: &str, n: u64, batch: usize) -> R<()> {
    let end = ClientSide::start(region, pipe, &attach_opts()).map_err(err("attach"))?;
    let q = end.pipe().map_err(err("open pipe"))?;
    // Every packet is a 64-byte Bytes value: its encoding has this length,
    // with the payload at its end.
    let per = Value::Bytes(vec![0; MSG])
        .encode()
        .map_err(err("encode"))?
        .len();
    let mut w = Writer::default();
    let mut wrong = 0u64;
    let mut next = 0u64;
    ready();
    while next < n {
        let max = (n - next).min(batch as u64) as usize;
        w.buf.clear();
        let got = q
            .dequeue_many_wire(max, None, &mut w)
            .map_err(err("dequeue_many_wire"))?;
        if got == 0 {
            return Err("dequeue_many_wire without a timeout took nothing".into());
        }
        if w.buf.len() != got * per {
            return Err(format!("{} bytes for {got} packets", w.buf.len()));
        }
        for (j, one) in w.buf.chunks_exact(per).enumerate() {
            wrong += u64::from(seq_of(&one[per - MSG..]) != next + j as u64);
        }
        next += got as u64;
    }
    received(wrong, "packets")
}

/// Producer of the batched 5a variant: `batch` 64-byte Bytes values per
/// call of `enqueue_wire_many`, which copies a run of up to `queue::BATCH`
/// of them into the pipe's byte ring under one hold of the producers' lock
/// (inside one in-progress mark).
fn q_send_batch(region: &str, pipe: &str, n: u64, batch: usize) -> R<()> {
    let end = ClientSide::start(region, pipe, &attach_opts()).map_err(err("attach"))?;
    let q = end.pipe().map_err(err("open pipe"))?;
    // `batch` copies of a 64-byte Bytes value's encoding, back to back; the
    // payload is the tail of each, patched in place per message.
    let one = Value::Bytes(vec![b'x'; MSG])
        .encode()
        .map_err(err("encode"))?;
    let per = one.len();
    let mut wire = one.repeat(batch);
    let t0 = mono_ns();
    let mut next = 0u64;
    while next < n {
        let k = (n - next).min(batch as u64) as usize;
        for j in 0..k {
            let at = (j + 1) * per - MSG;
            let mut buf = [b'x'; MSG];
            payload(next + j as u64, &mut buf);
            wire[at..at + MSG].copy_from_slice(&buf);
        }
        let mut done = 0;
        while done < k {
            // (a call may send a prefix; the rest goes in the next one)
            let sent = q
                .enqueue_wire_many(&wire[done * per..k * per], k - done, None)
                .map_err(err("enqueue_wire_many"))?;
            if sent == 0 {
                return Err("enqueue_wire_many without a timeout sent nothing".into());
            }
            done += sent;
        }
        next += k as u64;
    }
    println!("t0={t0}");
    Ok(())
}

/// Mailbox block layout (64-byte aligned): flag u32 @0, payload @64..128.
const MB_DATA: u64 = 64;

/// Consumer of the 5a floor: a one-slot mailbox. `mode`: spin | futex.
fn mb_recv(args: &[String]) -> R<()> {
    let (region, off, futex, n) = floor_role(args, "futex")?;
    let span = region.span();
    let flag = word32(&region, off)?;
    let mut buf = [0u8; MSG];
    let mut wrong = 0u64;
    ready();
    for i in 0..n {
        await_word(flag, 1, futex);
        span.read(off + MB_DATA, &mut buf).map_err(err("read"))?;
        flag.store(0, Ordering::Release);
        if futex {
            futex_wake(flag, 1);
        }
        wrong += u64::from(seq_of(&buf) != i);
    }
    received(wrong, "messages")
}

/// Producer of the 5a floor: wait for the slot to be empty, write the
/// message, flip the flag (and wake the consumer, in futex mode).
fn mb_send(args: &[String]) -> R<()> {
    let (region, off, futex, n) = floor_role(args, "futex")?;
    let span = region.span();
    let flag = word32(&region, off)?;
    let mut buf = [b'x'; MSG];
    let t0 = mono_ns();
    for i in 0..n {
        await_word(flag, 0, futex);
        payload(i, &mut buf);
        span.write(off + MB_DATA, &buf).map_err(err("write"))?;
        flag.store(1, Ordering::Release);
        if futex {
            futex_wake(flag, 1);
        }
    }
    println!("t0={t0}");
    Ok(())
}

/// Ring floor block layout (64-byte aligned): the producer's counter @0,
/// the consumer's @64, the sleep words @128 (consumers' futex word, their
/// sleeper count, producers' word, theirs), `CAPACITY` records of `MSG`
/// bytes from @192. Each counter has a line to itself, and each side keeps
/// the last value it read of the other's, reading it again only when that
/// says the ring is empty (full): the least a queue of one producer and one
/// consumer can share per message.
const RF_HEAD: u64 = 64;
const RF_WORDS: u64 = 128;
const RF_DATA: u64 = 192;
const RF_BYTES: u64 = RF_DATA + CAPACITY * MSG as u64;

/// One side of the ring floor: its counter, the other's, and the sleep
/// words it waits on and wakes.
struct RingEnd<'r> {
    mine: &'r std::sync::atomic::AtomicU64,
    theirs: &'r std::sync::atomic::AtomicU64,
    /// (word, sleepers) this side waits on
    wait: (&'r AtomicU32, &'r AtomicU32),
    /// (word, sleepers) this side wakes
    wake: (&'r AtomicU32, &'r AtomicU32),
    sleep: bool,
}

impl<'r> RingEnd<'r> {
    fn open(region: &'r Region, off: u64, producer: bool, sleep: bool) -> R<Self> {
        let span = region.span();
        let c = |at: u64| span.u64_at(off + at).map_err(err("ring counter"));
        let w = |i: u64| word32(region, off + RF_WORDS + 4 * i);
        let (tail, head) = (c(0)?, c(RF_HEAD)?);
        let (empty, full) = ((w(0)?, w(1)?), (w(2)?, w(3)?));
        Ok(if producer {
            RingEnd {
                mine: tail,
                theirs: head,
                wait: full,
                wake: empty,
                sleep,
            }
        } else {
            RingEnd {
                mine: head,
                theirs: tail,
                wait: empty,
                wake: full,
                sleep,
            }
        })
    }

    /// Until `ok(the other's counter)`: spin on it, and in sleep mode go to
    /// sleep on the word after a while, counted in as a sleeper.
    fn await_other(&self, ok: impl Fn(u64) -> bool) -> u64 {
        let mut spins = 0u32;
        loop {
            let v = self.theirs.load(Ordering::Acquire);
            if ok(v) {
                return v;
            }
            spins += 1;
            if !self.sleep || spins < 4000 {
                std::hint::spin_loop();
                continue;
            }
            // Counted in, then the word, then the counter again (all
            // SeqCst, against publish's store and count read).
            self.wait.1.fetch_add(1, Ordering::SeqCst);
            let seen = self.wait.0.load(Ordering::SeqCst);
            if !ok(self.theirs.load(Ordering::SeqCst)) {
                futex_wait(self.wait.0, seen, Some(Duration::from_secs(1)));
            }
            self.wait.1.fetch_sub(1, Ordering::SeqCst);
        }
    }

    /// Publish `v` as this side's counter; in sleep mode, then wake a
    /// sleeper on the other side if there is one (the store and the load of
    /// the sleeper count SeqCst, as a queue whose waiters may sleep must do
    /// for every message: a StoreLoad fence).
    fn publish(&self, v: u64) {
        if !self.sleep {
            self.mine.store(v, Ordering::Release);
            return;
        }
        self.mine.store(v, Ordering::SeqCst);
        if self.wake.1.load(Ordering::SeqCst) > 0 {
            self.wake.0.fetch_add(1, Ordering::SeqCst);
            futex_wake(self.wake.0, 1);
        }
    }
}

/// Consumer of the ring floor. `mode`: spin | sleep.
fn rf_recv(args: &[String]) -> R<()> {
    let (region, off, sleep, n) = floor_role(args, "sleep")?;
    let span = region.span();
    let end = RingEnd::open(&region, off, false, sleep)?;
    let mut buf = [0u8; MSG];
    let (mut wrong, mut tail) = (0u64, 0u64);
    ready();
    for i in 0..n {
        if tail <= i {
            tail = end.await_other(|t| t > i);
        }
        let at = off + RF_DATA + (i % CAPACITY) * MSG as u64;
        span.read(at, &mut buf).map_err(err("read"))?;
        end.publish(i + 1);
        wrong += u64::from(seq_of(&buf) != i);
    }
    received(wrong, "messages")
}

/// Producer of the ring floor. `mode`: spin | sleep.
fn rf_send(args: &[String]) -> R<()> {
    let (region, off, sleep, n) = floor_role(args, "sleep")?;
    let span = region.span();
    let end = RingEnd::open(&region, off, true, sleep)?;
    let mut buf = [b'x'; MSG];
    let mut head = 0u64;
    let t0 = mono_ns();
    for i in 0..n {
        if i - head >= CAPACITY {
            head = end.await_other(|h| i - h < CAPACITY);
        }
        payload(i, &mut buf);
        let at = off + RF_DATA + (i % CAPACITY) * MSG as u64;
        span.write(at, &buf).map_err(err("write"))?;
        end.publish(i + 1);
    }
    println!("t0={t0}");
    Ok(())
}

/// Answerer of 5b on shmtools pipes: every request back on the answer pipe.
fn q_echo(args: &[String]) -> R<()> {
    let (region, req, ans) = (&args[0], &args[1], &args[2]);
    let n: u64 = arg(args, 3, "count")?;
    let a = ClientSide::start(region, req, &attach_opts()).map_err(err("attach"))?;
    let b = ClientSide::start(region, ans, &attach_opts()).map_err(err("attach"))?;
    let (req, ans) = (
        a.pipe().map_err(err("open pipe"))?,
        b.pipe().map_err(err("open pipe"))?,
    );
    ready();
    for _ in 0..n {
        let s = req
            .dequeue(None)
            .map_err(err("dequeue"))?
            .ok_or("no packet")?;
        if !ans.enqueue(s, None).map_err(err("enqueue"))? {
            return Err("enqueue without a timeout returned false".into());
        }
    }
    Ok(())
}

fn print_samples(samples: &[u64]) {
    let mut line = String::from("samples");
    for s in samples {
        line.push(' ');
        line.push_str(&s.to_string());
    }
    println!("{line}");
}

/// Timer of 5b on shmtools pipes: blocking enqueue of an Int, blocking
/// dequeue of the answer.
fn q_ping(args: &[String]) -> R<()> {
    let (region, req, ans) = (&args[0], &args[1], &args[2]);
    let warm: u64 = arg(args, 3, "warm-up")?;
    let n: u64 = arg(args, 4, "count")?;
    let a = ClientSide::start(region, req, &attach_opts()).map_err(err("attach"))?;
    let b = ClientSide::start(region, ans, &attach_opts()).map_err(err("attach"))?;
    let (req, ans): (Queue<'_>, Queue<'_>) = (
        a.pipe().map_err(err("open pipe"))?,
        b.pipe().map_err(err("open pipe"))?,
    );
    let mut samples = Vec::with_capacity(n as usize);
    for i in 0..warm + n {
        let t = Instant::now();
        let sent = Slot {
            tag: T_INT,
            bits: i,
        };
        if !req.enqueue(sent, None).map_err(err("enqueue"))? {
            return Err("enqueue without a timeout returned false".into());
        }
        let got = ans
            .dequeue(None)
            .map_err(err("dequeue"))?
            .ok_or("no packet")?;
        let dt = t.elapsed().as_nanos() as u64;
        if got != sent {
            return Err(format!("answer {got:?} to request {i}"));
        }
        if i >= warm {
            samples.push(dt);
        }
    }
    print_samples(&samples);
    Ok(())
}

/// Answerer of the 5b floor: one 32-bit word; the pinger writes 2i+1, the
/// answerer writes 2i+2.
fn w_echo(args: &[String]) -> R<()> {
    let (name, off, futex) = (&args[0], arg::<u64>(args, 1, "offset")?, args[2] == "futex");
    let n: u64 = arg(args, 3, "count")?;
    let region = Region::attach(name, &attach_opts()).map_err(err("attach"))?;
    let w = word32(&region, off)?;
    ready();
    for i in 0..n as u32 {
        await_word(w, 2 * i + 1, futex);
        w.store(2 * i + 2, Ordering::Release);
        if futex {
            futex_wake(w, 1);
        }
    }
    Ok(())
}

fn w_ping(args: &[String]) -> R<()> {
    let (name, off, futex) = (&args[0], arg::<u64>(args, 1, "offset")?, args[2] == "futex");
    let warm: u64 = arg(args, 3, "warm-up")?;
    let n: u64 = arg(args, 4, "count")?;
    let region = Region::attach(name, &attach_opts()).map_err(err("attach"))?;
    let w = word32(&region, off)?;
    let mut samples = Vec::with_capacity(n as usize);
    for i in 0..(warm + n) as u32 {
        let t = Instant::now();
        w.store(2 * i + 1, Ordering::Release);
        if futex {
            futex_wake(w, 1);
        }
        await_word(w, 2 * i + 2, futex);
        let dt = t.elapsed().as_nanos() as u64;
        if u64::from(i) >= warm {
            samples.push(dt);
        }
    }
    print_samples(&samples);
    Ok(())
}

/// xorshift: deterministic sizes without a dependency (as in pool_bench).
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    /// Mostly small sizes, like the values of a message: 90% 8-127 bytes,
    /// 10% 256-4351.
    fn size(&mut self) -> u64 {
        match self.next() % 10 {
            0 => 256 + self.next() % 4096,
            _ => 8 + self.next() % 120,
        }
    }
}

/// Allocator churn (scenario 6): attach, report ready, spin on the go word,
/// then time `pairs` allocate+free pairs.
fn alloc_role(args: &[String]) -> R<()> {
    let (name, ctl) = (&args[0], arg::<u64>(args, 1, "offset")?);
    let pairs: u64 = arg(args, 2, "pairs")?;
    let seed: u64 = arg(args, 3, "seed")?;
    let region = Region::attach(name, &attach_opts()).map_err(err("attach"))?;
    let pool = region.pool().map_err(err("pool"))?;
    let (ready_w, go) = (word32(&region, ctl)?, word32(&region, ctl + 4)?);
    ready_w.fetch_add(1, Ordering::AcqRel);
    futex_wake(ready_w, u32::MAX);
    // Spin rather than sleep, so that contending processes start together.
    let deadline = Instant::now() + CHILD_LIMIT;
    while go.load(Ordering::Acquire) == 0 {
        if Instant::now() > deadline {
            return Err("never told to go".into());
        }
        std::hint::spin_loop();
    }
    let mut rng = Rng(seed);
    let t = Instant::now();
    for _ in 0..pairs {
        let a = pool.allocate(rng.size()).map_err(err("allocate"))?;
        pool.free(a).map_err(err("free"))?;
    }
    println!("ns={}", t.elapsed().as_nanos() as f64 / pairs as f64);
    Ok(())
}

fn child_main(args: &[String]) -> R<()> {
    let role = args.first().ok_or("child: no role")?;
    let rest = &args[1..];
    let need = match role.as_str() {
        "q-recv" | "q-send" | "mb-recv" | "mb-send" | "rf-recv" | "rf-send" | "q-echo"
        | "w-echo" | "alloc" => 4,
        "q-ping" | "w-ping" => 5,
        _ => return Err(format!("unknown role {role}")),
    };
    if rest.len() != need {
        return Err(format!("{role}: {need} arguments expected"));
    }
    match role.as_str() {
        "q-recv" => q_recv(rest),
        "q-send" => q_send(rest),
        "mb-recv" => mb_recv(rest),
        "mb-send" => mb_send(rest),
        "rf-recv" => rf_recv(rest),
        "rf-send" => rf_send(rest),
        "q-echo" => q_echo(rest),
        "q-ping" => q_ping(rest),
        "w-echo" => w_echo(rest),
        "w-ping" => w_ping(rest),
        _ => alloc_role(rest),
    }
}

// ---------------------------------------------------------------------------
// Parent: starting peers and reading their answers
// ---------------------------------------------------------------------------

/// A child process whose stdout lines arrive on a channel (read by a thread,
/// so a chatty child never blocks on a full pipe). Killed if dropped while
/// still running.
struct Peer {
    what: String,
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Peer {
    /// Start `prog`; with pinning on, bind it to the CPU of `side` (0 or 1).
    fn spawn(what: &str, prog: &Path, args: &[String], side: usize) -> R<Peer> {
        let mut child = Command::new(prog)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("starting {what} ({}): {e}", prog.display()))?;
        if let Some(cpu) = PIN.get().copied().flatten().map(|c| c[side % 2]) {
            let mut set = CpuSet::new();
            set.set(cpu);
            let pid = rustix::process::Pid::from_child(&child);
            if let Err(e) = sched_setaffinity(Some(pid), &set) {
                eprintln!("bench_rust: could not pin {what} to CPU {cpu}: {e}");
            }
        }
        let out = child.stdout.take().ok_or("no stdout")?;
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Ok(Peer {
            what: what.to_string(),
            child,
            lines,
        })
    }

    /// Wait for the child to say "ready".
    fn ready(&mut self) -> R<()> {
        match self.lines.recv_timeout(CHILD_LIMIT) {
            Ok(l) if l == "ready" => Ok(()),
            Ok(l) => Err(format!("{}: said {l:?} instead of ready", self.what)),
            Err(RecvTimeoutError::Timeout) => Err(format!("{}: not ready in time", self.what)),
            Err(RecvTimeoutError::Disconnected) => {
                Err(format!("{} exited before it was ready", self.what))
            }
        }
    }

    /// Wait for the child to exit (killing it after CHILD_LIMIT); its lines.
    fn finish(mut self) -> R<Vec<String>> {
        let deadline = Instant::now() + CHILD_LIMIT;
        let mut out = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) => out.push(l),
                Err(RecvTimeoutError::Disconnected) => break,
                Err(RecvTimeoutError::Timeout) => {
                    return Err(format!(
                        "{} did not finish within {} s; killed",
                        self.what,
                        CHILD_LIMIT.as_secs()
                    ))
                }
            }
        }
        let status = self.child.wait().map_err(err("wait"))?;
        if !status.success() {
            return Err(format!("{} failed ({status})", self.what));
        }
        Ok(out)
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn field(lines: &[String], key: &str) -> R<String> {
    lines
        .iter()
        .find_map(|l| l.strip_prefix(key))
        .map(str::to_string)
        .ok_or_else(|| format!("no {key} in the output {lines:?}"))
}

fn field_u64(lines: &[String], key: &str) -> R<u64> {
    field(lines, key)?
        .parse()
        .map_err(|_| format!("bad {key} in {lines:?}"))
}

fn samples(lines: &[String]) -> R<Vec<u64>> {
    let s = field(lines, "samples")?;
    s.split_whitespace()
        .map(|x| x.parse().map_err(|_| format!("bad sample {x:?}")))
        .collect()
}

/// A program and its arguments.
type Cmd = (PathBuf, Vec<String>);

fn me(role: &str, args: &[String]) -> R<Cmd> {
    let exe = std::env::current_exe().map_err(err("current_exe"))?;
    let mut v = vec!["child".to_string(), role.to_string()];
    v.extend_from_slice(args);
    Ok((exe, v))
}

fn peer(prog: &Path, args: &[&str]) -> Cmd {
    (
        prog.to_path_buf(),
        args.iter().map(|s| s.to_string()).collect(),
    )
}

/// One one-way run: start the consumer, wait until it is ready, start the
/// producer; messages per second from the producer's first send to the
/// consumer's last receive.
fn one_way(recv: Cmd, send: Cmd, n: u64) -> R<f64> {
    let mut r = Peer::spawn("consumer", &recv.0, &recv.1, 0)?;
    r.ready()?;
    let s = Peer::spawn("producer", &send.0, &send.1, 1)?;
    // If the producer fails, `r` is dropped (and killed) by the `?`.
    let t0 = field_u64(&s.finish()?, "t0=")?;
    let t1 = field_u64(&r.finish()?, "t1=")?;
    if t1 <= t0 {
        return Err(format!(
            "consumer finished ({t1}) before producer began ({t0})"
        ));
    }
    Ok(n as f64 * 1e9 / (t1 - t0) as f64)
}

/// One round-trip run: start the answerer, then the timer; its samples (ns).
fn round_trip(echo: Cmd, ping: Cmd) -> R<Vec<u64>> {
    let mut e = Peer::spawn("answerer", &echo.0, &echo.1, 0)?;
    e.ready()?;
    let p = Peer::spawn("timer", &ping.0, &ping.1, 1)?;
    let s = samples(&p.finish()?)?;
    e.finish()?;
    Ok(s)
}

/// Removes the /dev/shm names it was given, however the run ends.
struct Cleanup(Vec<String>);
impl Drop for Cleanup {
    fn drop(&mut self) {
        for n in &self.0 {
            let _ = Region::remove(n);
        }
    }
}

/// A zeroed, 64-byte-aligned block of `n` bytes in the region; returns
/// (block to free, aligned offset).
fn block(region: &Region, n: u64) -> R<(u64, u64)> {
    let pool = region.pool().map_err(err("pool"))?;
    let b = pool.allocate(n + 64).map_err(err("allocate"))?;
    let at = (b + 63) & !63;
    region.span().fill(at, n, 0).map_err(err("fill"))?;
    Ok((b, at))
}

fn free(region: &Region, b: u64) -> R<()> {
    region
        .pool()
        .map_err(err("pool"))?
        .free(b)
        .map_err(err("free"))
}

// ---------------------------------------------------------------------------
// Statistics and report
// ---------------------------------------------------------------------------

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    s[s.len() / 2]
}

/// Nearest-rank percentile of sorted samples.
fn percentile(sorted: &[u64], p: f64) -> u64 {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Results of one row over the repetitions; the first error wins.
#[derive(Default)]
struct Runs<T> {
    ok: Vec<T>,
    error: Option<String>,
}

impl Runs<f64> {
    fn median(&self) -> Option<f64> {
        (self.error.is_none() && !self.ok.is_empty()).then(|| median(&self.ok))
    }

    fn range(&self) -> (f64, f64) {
        let lo = self.ok.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = self.ok.iter().copied().fold(0.0, f64::max);
        (lo, hi)
    }
}

impl<T> Runs<T> {
    fn add(&mut self, r: R<T>, label: &str) {
        match r {
            Ok(v) => self.ok.push(v),
            Err(e) => {
                eprintln!("bench_rust: {label}: {e}");
                self.error.get_or_insert(e);
            }
        }
    }
}

fn rate(x: f64) -> String {
    if x >= 1e6 {
        format!("{:.2} M msg/s", x / 1e6)
    } else {
        format!("{:.1} k msg/s", x / 1e3)
    }
}

fn micros(ns: u64) -> String {
    format!("{:.2} µs", ns as f64 / 1000.0)
}

fn ratio_text(x: f64) -> String {
    if x >= 10.0 {
        format!("{x:.0}")
    } else {
        format!("{x:.3}")
    }
}

fn verdict(ok: bool) -> &'static str {
    if ok {
        "**PASS**"
    } else {
        "**MISS**"
    }
}

struct Sizes {
    reps: usize,
    one_way: u64,
    one_way_futex: u64,
    rt_warm: u64,
    rt: u64,
    pairs: u64,
}

const FULL: Sizes = Sizes {
    reps: 5,
    one_way: 1_000_000,
    one_way_futex: 50_000,
    rt_warm: 5_000,
    rt: 100_000,
    pairs: 400_000,
};

const QUICK: Sizes = Sizes {
    reps: 1,
    one_way: 20_000,
    one_way_futex: 5_000,
    rt_warm: 500,
    rt: 3_000,
    pairs: 20_000,
};

enum Boost {
    Peer(PathBuf),
    Skipped(String),
}

fn env_or(key: &str, f: impl FnOnce() -> String) -> String {
    std::env::var(key)
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(f)
}

fn first_line_of(prog: &str, args: &[&str]) -> String {
    Command::new(prog)
        .args(args)
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .map(str::to_string)
        })
        .unwrap_or_else(|| "unknown".into())
}

/// "YYYY-MM-DD HH:MM UTC" from the system clock (civil-from-days).
fn utc_now() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs()) as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60
    )
}

/// The 1, 5 and 15 minute load averages (others' work on a shared machine).
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg").map_or("unknown".into(), |s| {
        s.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
    })
}

fn machine(boost: &Boost, quick: bool) -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into());
    let nproc = env_or("BENCH_NPROC", || {
        std::thread::available_parallelism().map_or("?".into(), |n| n.to_string())
    });
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map_or("unknown".into(), |s| s.trim().to_string());
    let load = load_average();
    let rustc = env_or("BENCH_RUSTC", || first_line_of("rustc", &["--version"]));
    let cxx = env_or("BENCH_CXX", || first_line_of("g++", &["--version"]));
    let boost = match boost {
        Boost::Peer(p) => {
            let cwd = std::env::current_dir().unwrap_or_default();
            format!(
                "{} (peer {})",
                first_line_of(&p.to_string_lossy(), &["version"]),
                p.strip_prefix(&cwd).unwrap_or(p).display()
            )
        }
        Boost::Skipped(why) => format!("skipped: {why}"),
    };
    let date = env_or("BENCH_DATE", utc_now);
    let commit = env_or("BENCH_COMMIT", || {
        "not recorded (run through bench/rust.sh)".into()
    });
    let pinned = match PIN.get().copied().flatten() {
        Some([a, b]) => format!(
            "the two processes of each measurement bound to CPUs {a} and {b} (sched_setaffinity)"
        ),
        None => "processes not bound to CPUs".into(),
    };
    let command = env_or("BENCH_COMMAND", || {
        let a: Vec<String> = std::env::args().skip(1).collect();
        format!(
            "cargo run --release -p shmtools-core --example bench_rust -- {}",
            a.join(" ")
        )
    });
    format!(
        "- command: `{command}`{}\n- date: {date}\n- commit: {commit}\n- machine: {nproc} CPUs (nproc), {cpu}, Linux {kernel}, load average at start {load}; {pinned}\n- rustc: {rustc}\n- C++: {cxx}; Boost: {boost}\n",
        if quick { " (quick sizes: indicative only)" } else { "" }
    )
}

/// What every scenario needs: the sizes, the Boost peer, one region and its
/// pipe directory, and the names to remove at the end.
struct Bench<'a> {
    boost: &'a Boost,
    sz: &'a Sizes,
    name: String,
    region: &'a Region,
    dir: Directory<'a>,
    cleanup: Cleanup,
}

impl Bench<'_> {
    /// A Boost queue name, removed at the end whatever happens.
    fn boost_queue(&mut self, tag: &str) -> String {
        let q = format!("{}-bmq-{tag}", self.name);
        self.cleanup.0.push(q.clone());
        q
    }

    fn boost_skipped(&self) -> Option<&str> {
        match self.boost {
            Boost::Skipped(why) => Some(why),
            Boost::Peer(_) => None,
        }
    }

    /// A fresh pipe of this region.
    fn pipe(&self, name: &str) -> R<()> {
        self.dir
            .create(name, CAPACITY)
            .map(|_| ())
            .map_err(err("create pipe"))
    }

    /// Run `f` on a zeroed 64-byte-aligned block of `n` bytes, freed after.
    fn with_block<T>(&self, n: u64, f: impl FnOnce(u64) -> R<T>) -> R<T> {
        let (b, at) = block(self.region, n)?;
        let r = f(at);
        free(self.region, b)?;
        r
    }
}

/// Rows of scenario 5a, in table order.
const OW_LABELS: [&str; 10] = [
    "shmtools: 64 B by copy, one per call (enqueue_wire_many of 1 → dequeue_many_wire of 1: inline, through the byte ring)",
    "shmtools: Bytes value of 64 B as a pool object (store_wire + enqueue → dequeue + read + release)",
    "shmtools: 64 B by copy, batched (enqueue_wire_many of 256 → dequeue_many_wire of ≤ 256)",
    "shmtools: Value API (enqueue_value / dequeue_value of Value::Bytes(64 B))",
    "shmtools: Int slot, raw queue cost (enqueue / dequeue, no allocation)",
    "Boost message_queue, 64 B messages (send / receive)",
    "floor: one-slot mailbox, spin (write 64 B, flip a flag)",
    "floor: one-slot mailbox, futex wait/wake",
    "floor: ring of 1024 × 64 B, one producer, one consumer, spin only (counters on lines of their own, cached)",
    "floor: the same ring, waiters may sleep (a SeqCst counter store and a sleeper check per message)",
];
/// Messages per call in the batched row (as the Node suite's batch forms;
/// the producer's call copies them into the ring `queue::BATCH` = 64 per
/// hold of the producers' lock, the consumer's takes up to 256 in one).
const OW_BATCH: usize = 256;
/// (`batch` stands for `batch<OW_BATCH>`.)
const OW_KINDS: [&str; 5] = ["copy", "bytes", "batch", "value", "int"];
const OW_BOOST: usize = 5;

/// Scenario 5a: messages per second of each row, over the repetitions.
fn one_way_scenario(b: &mut Bench<'_>) -> Vec<Runs<f64>> {
    let mut runs: Vec<Runs<f64>> = OW_LABELS.iter().map(|_| Runs::default()).collect();
    let (n, nf) = (b.sz.one_way.to_string(), b.sz.one_way_futex.to_string());
    let name = b.name.clone();
    for rep in 0..b.sz.reps {
        eprintln!(
            "bench_rust: 5a one way, repetition {}/{}",
            rep + 1,
            b.sz.reps
        );
        for (k, kind) in OW_KINDS.iter().enumerate() {
            let kind = match *kind {
                "batch" => format!("batch{OW_BATCH}"),
                other => other.to_string(),
            };
            let pipe = format!("ow-{kind}-{rep}");
            let r = b.pipe(&pipe).and_then(|_| {
                let a = [name.clone(), pipe.clone(), kind.to_string(), n.clone()];
                one_way(me("q-recv", &a)?, me("q-send", &a)?, b.sz.one_way)
            });
            runs[k].add(r, &kind);
        }
        if let Boost::Peer(p) = b.boost {
            let q = b.boost_queue(&format!("ow-{rep}"));
            let (size, cap) = (MSG.to_string(), CAPACITY.to_string());
            let r = one_way(
                peer(p, &["recv", &q, &n, &size, &cap]),
                peer(p, &["send", &q, &n, &size]),
                b.sz.one_way,
            );
            runs[OW_BOOST].add(r, "boost one way");
        }
        for (row, mode, count) in [(6, "spin", &n), (7, "futex", &nf)] {
            let r = b.with_block(MB_DATA + MSG as u64, |at| {
                let a = [name.clone(), at.to_string(), mode.into(), count.clone()];
                let total = count.parse().unwrap_or(0);
                one_way(me("mb-recv", &a)?, me("mb-send", &a)?, total)
            });
            runs[row].add(r, mode);
        }
        for (row, mode) in [(8, "spin"), (9, "sleep")] {
            let r = b.with_block(RF_BYTES, |at| {
                let a = [name.clone(), at.to_string(), mode.into(), n.clone()];
                one_way(me("rf-recv", &a)?, me("rf-send", &a)?, b.sz.one_way)
            });
            runs[row].add(r, mode);
        }
    }
    runs
}

fn one_way_table(b: &Bench<'_>, runs: &[Runs<f64>]) -> String {
    let boost = runs[OW_BOOST].median();
    let mut md = format!(
        "## 5a. 64-byte messages one way, producer process → consumer process\n\n\
         {} messages per run ({} for the futex floor), queues of {CAPACITY} packets; \
         median of {} interleaved run(s); rate = messages ÷ (consumer's clock after the \
         last receive − producer's clock before the first send).\n\n\
         | variant | throughput (median) | range | ns / msg | × Boost |\n\
         | --- | --- | --- | --- | --- |\n",
        b.sz.one_way, b.sz.one_way_futex, b.sz.reps
    );
    for (i, (label, r)) in OW_LABELS.iter().zip(runs).enumerate() {
        let row = match (r.median(), &r.error, b.boost_skipped()) {
            (_, _, Some(why)) if i == OW_BOOST => format!("skipped ({why}) | | |"),
            (_, Some(e), _) => format!("error: {e} | | |"),
            (None, None, _) => "no data | | |".to_string(),
            (Some(m), None, _) => {
                let (lo, hi) = r.range();
                format!(
                    "{} | {} – {} | {:.0} | {}",
                    rate(m),
                    rate(lo),
                    rate(hi),
                    1e9 / m,
                    boost.map_or("–".into(), |x| format!("{:.2}×", m / x))
                )
            }
        };
        md.push_str(&format!("| {label} | {row} |\n"));
    }
    md
}

/// Rows of scenario 5b, in table order.
const RT_LABELS: [&str; 4] = [
    "shmtools: blocking enqueue / dequeue of an Int slot (two pipes)",
    "Boost message_queue, 8 B messages (two queues; C++ processes)",
    "floor: one shared word, spin",
    "floor: one shared word, futex wait/wake",
];
const RT_BOOST: usize = 1;
const RT_SPIN: usize = 2;

/// Scenario 5b: the round-trip samples (ns) of each row.
fn round_trip_scenario(b: &mut Bench<'_>) -> Vec<Runs<Vec<u64>>> {
    let mut runs: Vec<Runs<Vec<u64>>> = RT_LABELS.iter().map(|_| Runs::default()).collect();
    let (warm, cnt) = (b.sz.rt_warm.to_string(), b.sz.rt.to_string());
    let total = (b.sz.rt_warm + b.sz.rt).to_string();
    let name = b.name.clone();
    for rep in 0..b.sz.reps {
        eprintln!(
            "bench_rust: 5b round trip, repetition {}/{}",
            rep + 1,
            b.sz.reps
        );
        let (req, ans) = (format!("rt-req-{rep}"), format!("rt-ans-{rep}"));
        let r = b.pipe(&req).and_then(|_| b.pipe(&ans)).and_then(|_| {
            let e = [name.clone(), req.clone(), ans.clone(), total.clone()];
            let p = [name.clone(), req, ans, warm.clone(), cnt.clone()];
            round_trip(me("q-echo", &e)?, me("q-ping", &p)?)
        });
        runs[0].add(r, "shmtools round trip");
        if let Boost::Peer(p) = b.boost {
            let rq = b.boost_queue(&format!("req-{rep}"));
            let aq = b.boost_queue(&format!("ans-{rep}"));
            let r = round_trip(
                peer(p, &["echo", &rq, &aq, &total]),
                peer(p, &["ping", &rq, &aq, &warm, &cnt]),
            );
            runs[RT_BOOST].add(r, "boost round trip");
        }
        for (row, mode) in [(RT_SPIN, "spin"), (3, "futex")] {
            let r = b.with_block(64, |at| {
                let at = at.to_string();
                let e = [name.clone(), at.clone(), mode.into(), total.clone()];
                let p = [name.clone(), at, mode.into(), warm.clone(), cnt.clone()];
                round_trip(me("w-echo", &e)?, me("w-ping", &p)?)
            });
            runs[row].add(r, mode);
        }
    }
    runs
}

/// (p50, p99) over all samples of each row, None if it has none or failed.
fn percentiles(runs: &[Runs<Vec<u64>>]) -> Vec<Option<(u64, u64)>> {
    runs.iter()
        .map(|r| {
            if r.error.is_some() || r.ok.is_empty() {
                return None;
            }
            let mut all: Vec<u64> = r.ok.concat();
            all.sort_unstable();
            Some((percentile(&all, 50.0), percentile(&all, 99.0)))
        })
        .collect()
}

fn round_trip_table(b: &Bench<'_>, runs: &[Runs<Vec<u64>>], pct: &[Option<(u64, u64)>]) -> String {
    let mut md = format!(
        "\n## 5b. Round trip between two processes\n\n\
         {} timed round trips per run after {} untimed, {} run(s), percentiles over all \
         timed round trips; the timer process writes a number, the answerer sends it back.\n\n\
         | variant | p50 | p99 | p50 ÷ Boost p50 | p50 ÷ spin floor p50 |\n\
         | --- | --- | --- | --- | --- |\n",
        b.sz.rt, b.sz.rt_warm, b.sz.reps
    );
    for (i, label) in RT_LABELS.iter().enumerate() {
        let row = match (pct[i], &runs[i].error, b.boost_skipped()) {
            (_, _, Some(why)) if i == RT_BOOST => format!("skipped ({why}) | | |"),
            (_, Some(e), _) => format!("error: {e} | | |"),
            (None, None, _) => "no data | | |".to_string(),
            (Some((p50, p99)), None, _) => {
                let ratio = |j: usize| {
                    pct[j].map_or("–".into(), |(x, _)| ratio_text(p50 as f64 / x as f64))
                };
                format!(
                    "{} | {} | {} | {}",
                    micros(p50),
                    micros(p99),
                    ratio(RT_BOOST),
                    ratio(RT_SPIN)
                )
            }
        };
        md.push_str(&format!("| {label} | {row} |\n"));
    }
    md
}

/// Scenario 6, measured and written up.
fn allocator_scenario(b: &Bench<'_>) -> String {
    let mut alone: Runs<f64> = Runs::default();
    let mut contended: Runs<Vec<f64>> = Runs::default();
    let mut malloc: Vec<f64> = Vec::new();
    let pairs = b.sz.pairs.to_string();
    for rep in 0..b.sz.reps {
        eprintln!(
            "bench_rust: 6 allocator, repetition {}/{}",
            rep + 1,
            b.sz.reps
        );
        alone.add(
            alloc_run(b.region, &b.name, 1, &pairs).map(|v| v[0]),
            "allocator alone",
        );
        contended.add(
            alloc_run(b.region, &b.name, 2, &pairs),
            "allocator contended",
        );
        malloc.push(malloc_churn(b.sz.pairs, 11 + rep as u64));
    }
    let mut md = format!(
        "\n## 6. Allocator: allocate + free pair\n\n\
         {} pairs per process per run, sizes as in examples/pool_bench.rs (90% 8–127 B, 10% \
         256–4351 B); each process is started by the harness and all of a run's processes \
         are released at once; median of {} run(s).\n\n\
         | case | ns / pair (median) | range |\n| --- | --- | --- |\n",
        b.sz.pairs, b.sz.reps
    );
    let row = |label: &str, r: &Runs<f64>| match (r.median(), &r.error) {
        (_, Some(e)) => format!("| {label} | error: {e} | |\n"),
        (None, None) => format!("| {label} | no data | |\n"),
        (Some(m), None) => {
            let (lo, hi) = r.range();
            format!("| {label} | {m:.1} | {lo:.1} – {hi:.1} |\n")
        }
    };
    md.push_str(&row("shmtools, one process alone", &alone));
    for (who, i) in [("the faster", 0), ("the slower", 1)] {
        let per = Runs {
            ok: contended
                .ok
                .iter()
                .map(|r| {
                    let mut r = r.clone();
                    r.sort_by(f64::total_cmp);
                    r[i]
                })
                .collect(),
            error: contended.error.clone(),
        };
        md.push_str(&row(
            &format!("shmtools, two processes contending ({who} of the two)"),
            &per,
        ));
    }
    md.push_str(&row(
        "glibc malloc/free of the same sizes, in one process (for scale)",
        &Runs {
            ok: malloc,
            error: None,
        },
    ));
    md
}

/// One judged target, for the table and the chart.
struct Judged {
    /// Short name for the chart.
    short: &'static str,
    /// measured ÷ required (or required ÷ measured for an "at most" target):
    /// ≥ 1 passes; None when not measured.
    headroom: Option<f64>,
    /// The measurement as the table and the chart print it.
    text: String,
}

/// The targets of this run, judged: the markdown section and the list the
/// chart is drawn from.
fn targets(ow: &[Runs<f64>], rt: &[Option<(u64, u64)>]) -> (String, Vec<Judged>) {
    let mut md =
        String::from("\n## Targets\n\n| target | measured | result |\n| --- | --- | --- |\n");
    let mut judged = Vec::new();
    // One target: its table label, its chart name, and (headroom, what was
    // measured) if both sides of it were measured.
    let mut row = |label: &str, short: &'static str, m: Option<(f64, String)>| {
        let (headroom, text) = match m {
            Some((h, text)) => (Some(h), text),
            None => (None, "not measured".to_string()),
        };
        let result = headroom.map_or("SKIP", |h| verdict(h >= 1.0));
        md.push_str(&format!("| {label} | {text} | {result} |\n"));
        judged.push(Judged {
            short,
            headroom,
            text,
        });
    };
    let boost = ow[OW_BOOST].median();
    for (i, label, short) in [
        (
            0,
            "64 B one way: shmtools (by copy, one per call) ≥ 3× Boost message_queue",
            "64 B one way ≥ 3× Boost",
        ),
        (
            2,
            "64 B one way, batched ≥ 3× Boost (shmtools batch API, 256 per call; Boost has none)",
            "64 B one way, batched ≥ 3× Boost",
        ),
        (
            3,
            "64 B one way through the Value API ≥ 3× Boost (same target, other API)",
            "64 B one way, Value API ≥ 3× Boost",
        ),
        (
            1,
            "(reference) 64 B as a pool object (a handle's path) ≥ 3× Boost",
            "(reference) pool object ≥ 3× Boost",
        ),
        (
            4,
            "(reference, not 64 B) Int slot one way ≥ 3× Boost",
            "(reference) Int slot ≥ 3× Boost",
        ),
    ] {
        let m = ow[i].median().zip(boost).map(|(m, x)| {
            let text = format!("{:.2}× ({} vs {})", m / x, rate(m), rate(x));
            (m / x / 3.0, text)
        });
        row(label, short, m);
    }
    let m = rt[0].zip(rt[RT_BOOST]).map(|((a, _), (x, _))| {
        let text = format!(
            "{:.3} ({} vs {})",
            a as f64 / x as f64,
            micros(a),
            micros(x)
        );
        (x as f64 / 10.0 / a as f64, text)
    });
    let label = "round trip p50 ≤ 1/10 of Boost's";
    row(label, label, m);
    let m = rt[0].zip(rt[RT_SPIN]).map(|((a, _), (s, _))| {
        let text = format!(
            "{:.2}× ({} vs {})",
            a as f64 / s as f64,
            micros(a),
            micros(s)
        );
        (3.0 * s as f64 / a as f64, text)
    });
    row(
        "round trip p50 within 3× of the spin floor",
        "round trip p50 ≤ 3× the spin floor",
        m,
    );
    (md, judged)
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// A horizontal bar per target: its headroom on a log scale from 0.01× to
/// 100×, green from the 1× line when met, red when missed; drawn from this
/// run's numbers only.
fn targets_svg(judged: &[Judged], title: &str) -> String {
    let (row_h, left, plot_w, top) = (34.0, 280.0, 440.0, 64.0);
    // (room on the right for the longest verdict line, throughputs included)
    let width = left + plot_w + 360.0;
    let height = top + row_h * judged.len() as f64 + 56.0;
    let (lo, hi) = (-2.0f64, 2.0f64);
    let x = |v: f64| {
        let l = v.max(1e-9).log10().clamp(lo, hi);
        left + (l - lo) / (hi - lo) * plot_w
    };
    let bottom = top + row_h * judged.len() as f64;
    let mut out = vec![
        format!(
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" \
             viewBox=\"0 0 {width} {height}\" font-family=\"sans-serif\" font-size=\"12\">"
        ),
        format!("<rect width=\"{width}\" height=\"{height}\" fill=\"#ffffff\"/>"),
        format!(
            "<text x=\"12\" y=\"22\" font-size=\"15\" font-weight=\"bold\">{}</text>",
            xml_escape(title)
        ),
        "<text x=\"12\" y=\"42\" fill=\"#555\">headroom = measured ÷ required (required ÷ \
         measured for \"at most\" targets), log scale; ≥ 1× is a PASS</text>"
            .to_string(),
    ];
    for e in -2..=2 {
        let gx = x(10f64.powi(e));
        let (stroke, sw) = if e == 0 { ("#000", 2) } else { ("#ddd", 1) };
        out.push(format!(
            "<line x1=\"{gx:.1}\" y1=\"{:.1}\" x2=\"{gx:.1}\" y2=\"{bottom:.1}\" stroke=\"{stroke}\" stroke-width=\"{sw}\"/>",
            top - 6.0
        ));
        out.push(format!(
            "<text x=\"{gx:.1}\" y=\"{:.1}\" text-anchor=\"middle\" fill=\"#555\">{}×</text>",
            bottom + 16.0,
            10f64.powi(e)
        ));
    }
    for (i, j) in judged.iter().enumerate() {
        let y = top + i as f64 * row_h;
        out.push(format!(
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
            left - 8.0,
            y + row_h / 2.0 + 4.0,
            xml_escape(j.short)
        ));
        let (color, verdict) = match j.headroom {
            Some(h) if h >= 1.0 => ("#2e9d48", "PASS"),
            Some(_) => ("#d04030", "MISS"),
            None => ("#888888", "SKIP"),
        };
        if let Some(h) = j.headroom {
            let (x0, x1) = (x(1.0), x(h));
            out.push(format!(
                "<rect x=\"{:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"{color}\"/>",
                x0.min(x1),
                y + 7.0,
                (x1 - x0).abs().max(1.0),
                row_h - 14.0
            ));
        }
        out.push(format!(
            "<text x=\"{:.1}\" y=\"{:.1}\">{} <tspan font-weight=\"bold\" fill=\"{color}\">{verdict}</tspan></text>",
            left + plot_w + 14.0,
            y + row_h / 2.0 + 4.0,
            xml_escape(&j.text)
        ));
    }
    out.push(format!(
        "<text x=\"12\" y=\"{:.1}\" fill=\"#555\">bars are clipped at 0.01× and 100×; numbers from one run of bench_rust</text>",
        height - 10.0
    ));
    out.push("</svg>".to_string());
    out.join("\n") + "\n"
}

/// Which scenarios a run measures (`--only`).
struct Only {
    one_way: bool,
    round_trip: bool,
    alloc: bool,
}

fn run(boost: &Boost, sz: &Sizes, only: &Only) -> R<(String, Vec<Judged>)> {
    let name = format!("shmtools-bench-{}", std::process::id());
    let cleanup = Cleanup(vec![name.clone()]);
    let region = Region::create(&name, REGION_BYTES, &CreateOptions::default())
        .map_err(err("create region"))?;
    let mut b = Bench {
        boost,
        sz,
        name,
        region: &region,
        dir: Directory::open(&region).map_err(err("pipe directory"))?,
        cleanup,
    };
    let ow = if only.one_way {
        one_way_scenario(&mut b)
    } else {
        OW_LABELS.iter().map(|_| Runs::default()).collect()
    };
    let rt = if only.round_trip {
        round_trip_scenario(&mut b)
    } else {
        RT_LABELS.iter().map(|_| Runs::default()).collect()
    };
    let pct = percentiles(&rt);
    let mut md = String::new();
    if only.one_way {
        md.push_str(&one_way_table(&b, &ow));
    }
    if only.round_trip {
        md.push_str(&round_trip_table(&b, &rt, &pct));
    }
    if only.alloc {
        md.push_str(&allocator_scenario(&b));
    }
    let (table, judged) = targets(&ow, &pct);
    md.push_str(&table);
    if let Err(e) = region.pool().and_then(|p| p.check()) {
        md.push_str(&format!("\nPool check after the run failed: {e}\n"));
    }
    region.destroy().map_err(err("destroy region"))?;
    Ok((md, judged))
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

/// `procs` churning children on one region, released together; ns per pair
/// of each.
fn alloc_run(region: &Region, name: &str, procs: usize, pairs: &str) -> R<Vec<f64>> {
    let (b, ctl) = block(region, 64)?;
    let r = (|| {
        let mut kids = Vec::new();
        for i in 0..procs {
            let a = [
                name.to_string(),
                ctl.to_string(),
                pairs.to_string(),
                (3 + i).to_string(),
            ];
            let (prog, args) = me("alloc", &a)?;
            kids.push(Peer::spawn("allocator", &prog, &args, i)?);
        }
        let (ready_w, go) = (word32(region, ctl)?, word32(region, ctl + 4)?);
        let deadline = Instant::now() + CHILD_LIMIT;
        loop {
            let v = ready_w.load(Ordering::Acquire);
            if v as usize >= procs {
                break;
            }
            if Instant::now() > deadline {
                return Err("allocator children not ready in time".to_string());
            }
            futex_wait(ready_w, v, Some(Duration::from_millis(50)));
        }
        go.store(1, Ordering::Release);
        kids.into_iter()
            .map(|k| {
                field(&k.finish()?, "ns=")?
                    .parse::<f64>()
                    .map_err(|e| e.to_string())
            })
            .collect()
    })();
    free(region, b)?;
    r
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("child") {
        if let Err(e) = child_main(&args[1..]) {
            eprintln!("bench_rust child {}: {e}", args[1..].join(" "));
            std::process::exit(1);
        }
        return;
    }
    let mut quick = false;
    let mut boost = Boost::Skipped("no --boost-peer given".into());
    let mut out: Option<PathBuf> = None;
    let mut pin = true;
    let mut only = Only {
        one_way: true,
        round_trip: true,
        alloc: true,
    };
    let mut partial = false;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--quick" => quick = true,
            "--no-pin" => pin = false,
            "--boost-peer" => match it.next() {
                Some(p) => boost = Boost::Peer(PathBuf::from(p)),
                None => fail("--boost-peer needs a path"),
            },
            "--no-boost" => match it.next() {
                Some(why) => boost = Boost::Skipped(why.clone()),
                None => fail("--no-boost needs a reason"),
            },
            "--only" => match it.next() {
                Some(list) => {
                    let has = |k: &str| list.split(',').any(|x| x.trim() == k);
                    only = Only {
                        one_way: has("5a"),
                        round_trip: has("5b"),
                        alloc: has("6"),
                    };
                    if !(only.one_way || only.round_trip || only.alloc) {
                        fail("--only takes a comma-separated list of 5a, 5b and 6");
                    }
                    partial = true;
                }
                None => fail("--only needs a list, such as 5b or 5a,6"),
            },
            "--out" => match it.next() {
                Some(p) => out = Some(PathBuf::from(p)),
                None => fail("--out needs a file"),
            },
            "-h" | "--help" => {
                println!(
                    "usage: bench_rust [--quick] [--no-pin] [--only 5a,5b,6] [--boost-peer PATH | --no-boost REASON] [--out FILE]\n\
                     --only measures some scenarios (5a one way, 5b round trip, 6 allocator);\n\
                     such a run is written to target/bench/rust-only.md unless --out is given.\n\
                     The two processes of each measurement are bound to two different CPUs\n\
                     unless --no-pin is given.\n\
                     Full runs write docs/bench/rust-latest.md, quick ones target/bench/rust-quick.md."
                );
                return;
            }
            other => fail(&format!("unknown argument {other:?} (see --help)")),
        }
    }
    let sizes = if quick { &QUICK } else { &FULL };
    let _ = PIN.set(if pin { two_cpus() } else { None });
    // Paths relative to the workspace root (two levels above this crate).
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let root = root.canonicalize().unwrap_or(root);
    let out = out.unwrap_or_else(|| {
        if quick {
            root.join("target/bench/rust-quick.md")
        } else if partial {
            root.join("target/bench/rust-only.md")
        } else {
            root.join("docs/bench/rust-latest.md")
        }
    });
    let started = Instant::now();
    let head = machine(&boost, quick);
    let (body, judged) = match run(&boost, sizes, &only) {
        Ok(b) => b,
        Err(e) => fail(&e),
    };
    // The chart sits beside the report, under the same name.
    let svg = out.with_extension("svg");
    let svg_name = svg
        .file_name()
        .map_or("chart.svg".into(), |n| n.to_string_lossy().into_owned());
    let report = format!(
        "# shmtools benchmarks: Rust side\n\n{head}- wall time of the run: {:.0} s; load average at the end {}\n\n\
         ![targets: headroom per target, log scale]({svg_name})\n\n{body}{NOTES}",
        started.elapsed().as_secs_f64(),
        load_average()
    );
    println!("{report}");
    if let Some(dir) = out.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    let title = format!(
        "shmtools, Rust side: targets of one run ({}{})",
        utc_now(),
        if quick { ", --quick: tiny sizes" } else { "" }
    );
    for (path, text) in [(&out, report), (&svg, targets_svg(&judged, &title))] {
        if let Err(e) = std::fs::write(path, text) {
            fail(&format!("writing {}: {e}", path.display()));
        }
    }
    eprintln!("bench_rust: written to {} and {svg_name}", out.display());
}

const NOTES: &str = "
## How it is measured

- Every producer, consumer, answerer and allocator is its own process, started
  fresh for each run by the harness (`crates/shmtools-core/examples/bench_rust.rs`,
  re-executing itself) or the C++ peer (`bench/boost_mq_peer.cpp`, built with
  `g++ -O2`); Boost's columns are C++ processes on both sides.
- One way: the consumer attaches and waits first; the producer records
  CLOCK_MONOTONIC before its first send and the consumer after its last receive.
  Every message carries its sequence number and the consumer checks the order.
- The first row sends each 64-byte Bytes value by copy, one per call: the
  producer's `enqueue_wire_many` of one encoding copies it into the queue's
  byte ring (an inline packet: no pool block), the consumer's
  `dequeue_many_wire` of one copies it out. The second row sends the same
  value as a pool object (`store_wire` + `enqueue`, then `dequeue` + read +
  `release`), the path of a shared handle. The batched row sends the same
  values by copy, 256 per call: the producer's `enqueue_wire_many` copies
  them in, 64 per hold of the producers' lock; the consumer's `dequeue_many_wire`
  takes up to 256 under one hold and copies them out in one buffer, and it
  checks every sequence number. Boost's `message_queue` has no batch calls,
  so its row is the same as for the others.
- The floors use a block of a shmtools region as raw shared memory (atomics and
  byte copies only, no queue, no lock, no allocation). One-way floors: a one-slot
  mailbox, so every message waits for the previous one to be taken; and a ring
  of 1024 records of 64 B for exactly one producer and one consumer, each
  side's counter on a cache line of its own and the other side's read again
  only when the ring looks empty (full), so lines move in bursts rather than
  per message. The ring's first form only spins (Release stores); the second
  does what a queue whose waiters can sleep must do per message: store its
  counter SeqCst and then read the other side's sleeper count (a StoreLoad
  fence), sleeping on a futex after 4000 spins. Neither has locks, crash
  recovery or more than one process per side. Round-trip
  floor: one word, written alternately by the two processes. The futex floors
  always sleep in `futex_wait` and always call `futex_wake`; the spin floors
  never make a system call.
- shmtools' blocking dequeue spins briefly on the queue's futex word before
  sleeping (see `crates/shmtools-core/src/queue.rs`).
- The consumer, answerer or first allocator is bound to one CPU and the
  producer, timer or second allocator to another (`sched_setaffinity`, unless
  `--no-pin`), so the two sides really run at the same time.
- Variants are interleaved within each repetition, so a noisy neighbour on a
  shared machine hits all of them alike; compare within one table, not across
  machines. The load averages at the top show how busy the machine was.
";

fn fail(msg: &str) -> ! {
    eprintln!("bench_rust: {msg}");
    std::process::exit(1);
}
