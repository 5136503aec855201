//! CQ: a bounded multi-producer multi-consumer queue of value slots in a
//! region, with futex wake-ups between processes.
//!
//! A ring of `capacity` slots; `head` and `tail` count dequeues and
//! enqueues since creation. Each end has its own process-shared
//! [`ShmMutex`]: producers take `enq_lock` and write only `tail` and what
//! lies past it (slots, byte-ring records, `ring_write`); consumers take
//! `deq_lock` and write only `head` and what lies behind it (emptied slots,
//! `ring_read`). So a producer copying a batch in and a consumer copying
//! one out run at the same time. Each side publishes with one store of its
//! counter, after everything it wrote (Release), and reads the other's
//! counter before touching what it covers (Acquire). A packet that goes
//! into an empty queue is written to the header's front slot instead of
//! the ring (`front_pos` names its position), so when a producer and a
//! consumer take turns, as in a request/reply exchange, each hop moves
//! mostly the header's first cache line between the cores.
//!
//! Two futex words are sequence numbers: `not_empty` for consumers,
//! `not_full` for producers. A caller that finds nothing to do notes the
//! word's value before its try and, after the try failed, sleeps while the
//! word still has that value. The operation that moves the other counter
//! on from where that failed try saw it moves the word on (it stores its
//! counter and then reads the count of sleepers, against the sleeper's
//! count-in and read of the counter in the other order, with a fence on
//! both sides, so one of the two sees the other; see [`Queue::signal`]),
//! so the wake-up cannot be lost; operations in between move it only if
//! someone is asleep, so a busy pipe writes neither word. Sleepers are
//! counted, so the common case makes no system call. The publisher's fence
//! is normally not an instruction at all: the sleeper, the rare side, runs
//! the kernel's global memory barrier for both ([`platform::fast_publish`]).
//!
//! Crash safety: an enqueue writes its slots, then advances `tail`; a
//! dequeue takes each slot out and empties it, then advances `head`. A
//! process killed in between leaves either unpublished slots (its messages,
//! lost with it) or empty slots at the head, which the next dequeue skips.
//! No message is ever delivered twice. Both locks are robust (a dead
//! holder's lock is taken over), and nothing under them needs rebuilding
//! after such a death.

use std::sync::atomic::{
    AtomicU32, AtomicU64,
    Ordering::{Acquire, Relaxed, Release, SeqCst},
};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::holders::Held;
use crate::lock::ShmMutex;
use crate::platform;
use crate::value::wire::{check_packet, lone_bytes, Reader, Skipped, Writer};
use crate::value::{
    Shared, Slot, Values, SLOT_SIZE, S_EMPTY, T_BOOL, T_F32, T_F64, T_INLINE, T_INT, T_NONE, T_UINT,
};

/// An in-progress mark (`Values::busy`) taken only once an operation
/// handles a reference: a pool object, a packed packet, or objects built
/// from an inline packet. An operation on inline bytes copied in or out, or
/// on scalar slots, moves no reference, so a process killed inside one
/// leaves nothing for a repair to find and needs no mark; the queue's own
/// state is the locks' to recover. The mark is a locked increment on the
/// process's holder record, and on x86 a locked instruction first waits
/// for the stores before it, which one message per call keeps pending on
/// lines the other side has just read: skipping it is most of what a call
/// of one inline packet saves (see docs/BENCHMARKS.md).
struct Mark<'a> {
    values: Values<'a>,
    busy: Option<crate::holders::Busy<'a>>,
}

impl<'a> Mark<'a> {
    fn new(values: Values<'a>) -> Mark<'a> {
        Mark { values, busy: None }
    }

    /// Mark the operation as in progress, from now until the mark drops.
    fn set(&mut self) {
        if self.busy.is_none() {
            self.busy = Some(self.values.busy());
        }
    }
}

pub const QUEUE_MAGIC: u64 = u64::from_le_bytes(*b"SHMQUEUE");
/// First word of a byte ring's block.
pub const RING_MAGIC: u64 = u64::from_le_bytes(*b"SHMRING\0");
/// Where a byte ring's bytes start in its block (after the magic, on a cache
/// line of their own).
pub const RING_START: u64 = 64;
/// Smallest and largest byte ring.
pub const RING_MIN: u64 = 4 << 10;
pub const RING_MAX: u64 = 1 << 20;
/// Ring bytes a queue gets per packet of capacity (before rounding up to a
/// power of two and clamping to RING_MIN ..= RING_MAX).
const RING_PER_PACKET: u64 = 128;
/// Largest encoding sent inline; larger values go through the pool.
pub const INLINE_MAX: usize = 1024;
/// An inline record's header: the encoding's length (u32) and the low 32
/// bits of the packet's queue position (u32), one little-endian u64.
pub const RECORD_HEADER: u64 = 8;
/// Most packets a queue may hold.
pub const MAX_CAPACITY: u64 = 1 << 24;
/// Spins on the counter a consumer waits for before sleeping (a message
/// often arrives within microseconds when the other side runs on another
/// core; a spin is about 10 ns here, so this is tens of microseconds).
const SPINS: u32 = 4000;
/// Longest a consumer's wait spins in all, [`SPINS`] and the adaptive
/// spin after them together (see `Queue::wait`). Putting a consumer to
/// sleep and waking it costs both sides: the sleeper's kernel barrier,
/// then the publisher's futex wake, which on this VM took 30-50 us of the
/// producer's time per message in a stream of 1 MiB arrays, one every
/// 100-130 us (strace -T, 2026-12-06; docs/BENCHMARKS.md, "Large arrays by
/// reference, and waking a consumer").
pub const SPIN_MAX: Duration = Duration::from_micros(250);

thread_local! {
    /// How long this thread's next wait for a packet spins, counted from
    /// the wait's start, before it sleeps: zero for [`SPINS`] alone. Set by
    /// each wait that got past [`SPINS`]: to 1.5 times that wait's length
    /// (at most [`SPIN_MAX`]) when a packet ended it that soon, else back to
    /// zero (a deadline or a sleep that ran out).
    /// Per thread, not per queue: a thread that blocks usually blocks on
    /// the same pipe over and over.
    static SPIN_MORE: std::cell::Cell<Duration> = const { std::cell::Cell::new(Duration::ZERO) };
}
/// Spins before a producer waiting for room sleeps: a few microseconds,
/// looking at `head` every [`ROOM_LOOK_EVERY`] spins. Room comes when a
/// consumer ends a dequeue, and a producer spinning on the consumers' line
/// through a long one slowed that consumer down (`bash bench/rust.sh --only
/// 5a`, 2026-12-05: the batched row took 58-61 ns per message with 4000
/// spins, 42-45 with 100-400, 47-49 sleeping at once; the Int row 210-270
/// looking at every spin, 160-175 at every 16th).
const SPINS_FOR_ROOM: u32 = 256;
const ROOM_LOOK_EVERY: u32 = 16;
/// Most slots a producer waiting for room waits to see free while it
/// spins (see [`room_worth_taking`]).
const ROOM_RUN_MAX: u64 = 32;

/// A wait's deadline, from the call's start. A zero timeout (a try and no
/// wait) never reads the clock: that read was 3-4 % of a one-message
/// enqueue from Node in a profile (2026-12-06), and neither does no
/// timeout. A timeout too long for the clock to count (a `Duration` of
/// centuries) is no deadline at all.
struct Deadline {
    zero: bool,
    at: Option<Instant>,
}

impl Deadline {
    fn new(timeout: Option<Duration>) -> Deadline {
        match timeout {
            Some(t) if t.is_zero() => Deadline {
                zero: true,
                at: None,
            },
            Some(t) => Deadline {
                zero: false,
                at: platform::deadline(Some(t)),
            },
            None => Deadline {
                zero: false,
                at: None,
            },
        }
    }

    /// When the wait ends (None: never).
    fn get(&self) -> Option<Instant> {
        if self.zero {
            return Some(Instant::now());
        }
        self.at
    }

    /// Whether it has passed (a zero timeout has, without a clock read).
    fn passed(&self) -> bool {
        self.zero || self.at.is_some_and(|d| Instant::now() >= d)
    }
}

/// How many slots a producer that found a queue of `capacity` full waits to
/// see free while it spins ([`SPINS_FOR_ROOM`]): a sixteenth of the queue,
/// 1 to [`ROOM_RUN_MAX`]. After its spins it takes any room at all.
///
/// Taking each slot as soon as it frees up locks the two sides in step:
/// the producer writes the slot, the record and `tail` the consumer has
/// just touched, and reads `head` after every packet, so each of those
/// lines crosses between the cores once per packet, and both sides' lock
/// releases wait for them. Waiting for a run lets the consumer work through
/// lines the producer is not writing, and the producer then fills the run
/// in lines the consumer left a while ago. `bash bench/rust.sh --only 5a`
/// (2026-12-06, one run each, same machine): one per call 158 → 91 ns a
/// message, the Value API 205 → 131, the Int slot 133 → 67; batched 41
/// either way. A queue that only ever holds a few packets is not full, so
/// this never delays it. What it can cost: a producer that waits spins its
/// 256 spins (a few microseconds) when the consumer stops after freeing
/// fewer slots than the run, and with several producers, those that are
/// not waiting may take the freed slots first, so the waiting one tries
/// again, or sleeps, more often than before.
fn room_worth_taking(capacity: u64) -> u32 {
    (capacity / 16).clamp(1, ROOM_RUN_MAX) as u32
}
/// Most values [`Queue::enqueue_wire_many`] builds under one hold of the pool
/// lock (others wait for it meanwhile), or copies into the byte ring under
/// one hold of the producers' lock.
pub const BATCH: usize = 64;

/// What [`Queue::open`] checked and keeps of a queue header, all of it fixed
/// when the queue was made (see [`Queue::reopen`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Opened {
    off: u64,
    capacity: u64,
    slots: u64,
    ring: u64,
    ring_size: u64,
}

/// Shared-memory layout of a queue header (320 bytes, at a 64-byte aligned
/// offset inside its block; see [`Queue::create`]).
///
/// Five cache lines, laid out so that a pipe in steady use moves as few of
/// them between cores as it can, and so that no locked instruction works
/// on a line the other side reads:
/// - the first is the producers' own: their lock and what they last read
///   of the consumers' counters;
/// - the second is what producers publish: `tail`, `ring_write` and the
///   front slot. Consumers read it only when what they last read of it says
///   the queue is empty, and write it only to take a packet out of the
///   front slot (and note that in `head_hint`);
/// - the third holds what is fixed at creation and the two futex words with
///   their sleeper counts: read by everyone, written only around a sleep;
/// - the fourth is what consumers publish: `head`, `ring_read` (and
///   `high_water`, written when the queue gets deeper than ever). Producers
///   read it only when what they know of `head` says the queue is full (or
///   its ring has no room);
/// - the fifth is the consumers' own: their lock and what they last read of
///   the second line.
///
/// So a producer and a consumer streaming packets each work in their own
/// lines and read the other side's once per burst, not per packet, and the
/// lock operations a call makes never wait for a line the other side took.
#[repr(C)]
pub struct QueueHeader {
    /// The producers' lock: held by an enqueue while it writes packets in
    /// and moves `tail` on. Consumers never take it.
    pub enq_lock: ShmMutex,
    /// `head` as a producer last read it (never ahead of it).
    pub head_seen: AtomicU64,
    /// `ring_read` as a producer last read it (never ahead of it).
    pub ring_read_seen: AtomicU64,
    /// Zero.
    pub reserved0: [AtomicU64; 4],
    /// Enqueues so far; the next packet goes to position `tail`. Written by
    /// producers only (SeqCst), after the packets it publishes.
    pub tail: AtomicU64,
    /// Bytes written into the byte ring so far: the next inline packet's
    /// record goes at `ring_write` (mod `ring_size`), or at the ring's start
    /// if it would not fit before the end. Written by producers, before
    /// `tail`.
    pub ring_write: AtomicU64,
    /// The position whose packet is in `front` rather than in the ring.
    pub front_pos: AtomicU64,
    /// A slot (tag, bits) for the packet at `front_pos`.
    pub front: [AtomicU64; 2],
    /// The position after the last packet a consumer took from the front
    /// slot: stored after `head` moved past it, so never ahead of `head`.
    /// Producers read it as what they know of `head` (it tells a producer
    /// that the queue it fed is empty again without reading the consumers'
    /// line).
    pub head_hint: AtomicU64,
    /// Zero.
    pub reserved1: [AtomicU64; 2],
    pub magic: AtomicU64,
    pub capacity: AtomicU64,
    /// Offset of the slots block (capacity × 16 bytes): the packet at
    /// position p is slot `p % capacity` unless p is `front_pos`.
    pub slots: AtomicU64,
    /// Futex word producers sleep on: moved on by a dequeue while
    /// `sleepers_full` > 0.
    pub not_full: AtomicU32,
    /// Producers asleep waiting for room.
    pub sleepers_full: AtomicU32,
    /// Offset of the byte ring's block (it starts with [`RING_MAGIC`]; the
    /// ring's bytes follow 64 bytes in).
    pub ring: AtomicU64,
    /// Offset of the pool block the header lives in (it starts with
    /// [`QUEUE_MAGIC`]; the header is the first 64-byte aligned offset at
    /// least 16 bytes into it).
    pub block: AtomicU64,
    /// Futex word consumers sleep on: moved on by an enqueue while
    /// `sleepers_empty` > 0.
    pub not_empty: AtomicU32,
    /// Consumers asleep waiting for a packet.
    pub sleepers_empty: AtomicU32,
    /// Bytes in the ring: a power of two, [`RING_MIN`] ..= [`RING_MAX`].
    pub ring_size: AtomicU64,
    /// Dequeues so far; the next packet is at position `head`. Written by
    /// consumers only (SeqCst).
    pub head: AtomicU64,
    /// Bytes of the byte ring given back so far: everything before
    /// `ring_read` may be written over. The end of the last inline packet
    /// dequeued. Written by consumers.
    pub ring_read: AtomicU64,
    /// Deepest the queue has been when a producer or consumer read the
    /// other side's counter.
    pub high_water: AtomicU64,
    /// Zero.
    pub reserved3: [AtomicU64; 5],
    /// The consumers' lock: held by a dequeue while it takes packets out
    /// and moves `head` on. Producers never take it.
    pub deq_lock: ShmMutex,
    /// `tail` as a consumer last read it (never ahead of it).
    pub tail_seen: AtomicU64,
    /// `front_pos` as read just after `tail_seen`.
    pub front_seen: AtomicU64,
    /// `ring_write` as read just after `tail_seen`.
    pub ring_write_seen: AtomicU64,
    /// Zero.
    pub reserved4: [AtomicU64; 3],
}

pub const QUEUE_HEADER_SIZE: u64 = std::mem::size_of::<QueueHeader>() as u64;
/// Bytes of a queue's header block: the header and room to align it to 64
/// bytes (blocks are 16-byte aligned).
pub const QUEUE_BLOCK_SIZE: u64 = QUEUE_HEADER_SIZE + 64;
const FRONT: u64 = std::mem::offset_of!(QueueHeader, front) as u64;
const _: () = assert!(QUEUE_HEADER_SIZE == 320);
const _: () = assert!(std::mem::offset_of!(QueueHeader, enq_lock) == 0);
const _: () = assert!(std::mem::offset_of!(QueueHeader, head_seen) == 16);
const _: () = assert!(std::mem::offset_of!(QueueHeader, ring_read_seen) == 24);
const _: () = assert!(std::mem::offset_of!(QueueHeader, reserved0) == 32);
const _: () = assert!(std::mem::offset_of!(QueueHeader, tail) == 64);
const _: () = assert!(std::mem::offset_of!(QueueHeader, ring_write) == 72);
const _: () = assert!(std::mem::offset_of!(QueueHeader, front_pos) == 80);
const _: () = assert!(FRONT == 88);
const _: () = assert!(std::mem::offset_of!(QueueHeader, head_hint) == 104);
const _: () = assert!(std::mem::offset_of!(QueueHeader, reserved1) == 112);
const _: () = assert!(std::mem::offset_of!(QueueHeader, magic) == 128);
const _: () = assert!(std::mem::offset_of!(QueueHeader, capacity) == 136);
const _: () = assert!(std::mem::offset_of!(QueueHeader, slots) == 144);
const _: () = assert!(std::mem::offset_of!(QueueHeader, not_full) == 152);
const _: () = assert!(std::mem::offset_of!(QueueHeader, sleepers_full) == 156);
const _: () = assert!(std::mem::offset_of!(QueueHeader, ring) == 160);
const _: () = assert!(std::mem::offset_of!(QueueHeader, block) == 168);
const _: () = assert!(std::mem::offset_of!(QueueHeader, not_empty) == 176);
const _: () = assert!(std::mem::offset_of!(QueueHeader, sleepers_empty) == 180);
const _: () = assert!(std::mem::offset_of!(QueueHeader, ring_size) == 184);
const _: () = assert!(std::mem::offset_of!(QueueHeader, head) == 192);
const _: () = assert!(std::mem::offset_of!(QueueHeader, ring_read) == 200);
const _: () = assert!(std::mem::offset_of!(QueueHeader, high_water) == 208);
const _: () = assert!(std::mem::offset_of!(QueueHeader, reserved3) == 216);
const _: () = assert!(std::mem::offset_of!(QueueHeader, deq_lock) == 256);
const _: () = assert!(std::mem::offset_of!(QueueHeader, tail_seen) == 272);
const _: () = assert!(std::mem::offset_of!(QueueHeader, front_seen) == 280);
const _: () = assert!(std::mem::offset_of!(QueueHeader, ring_write_seen) == 288);
const _: () = assert!(std::mem::offset_of!(QueueHeader, reserved4) == 296);

/// Which futex word a waiter sleeps on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitFor {
    /// A packet to dequeue.
    NotEmpty,
    /// Room to enqueue.
    NotFull,
}

/// Figures for `inspect`/`top`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueStats {
    pub depth: u64,
    pub capacity: u64,
    pub high_water: u64,
    pub total_enqueued: u64,
    pub total_dequeued: u64,
}

/// Check a capacity: 1 ..= MAX_CAPACITY packets.
pub fn validate_capacity(capacity: u64) -> Result<()> {
    if !(1..=MAX_CAPACITY).contains(&capacity) {
        return Err(Error::invalid(format!(
            "pipe capacity {capacity} is out of range: give 1 to {MAX_CAPACITY} packets"
        )));
    }
    Ok(())
}

/// A queue in a region (cheap to create; bounds validated once).
#[derive(Clone, Copy)]
pub struct Queue<'a> {
    values: Values<'a>,
    header: &'a QueueHeader,
    off: u64,
    capacity: u64,
    slots: u64,
    /// Offset of the byte ring's first byte (past its block's magic).
    ring: u64,
    ring_size: u64,
}

/// A packet as a dequeue takes it out: a slot, whose reference is now the
/// taker's; an inline packet's encoding, copied out of the byte ring (this
/// range of the buffer the dequeue was given); or an inline packet whose
/// record was damaged, taken out all the same so the pipe goes on, which
/// the taker reports (as it reports a damaged packed packet).
#[derive(Debug, Clone)]
pub(crate) enum Packet {
    Slot(Slot),
    Inline(std::ops::Range<usize>),
    Damaged(Error),
}

/// What the consumers know of the producers' line (see
/// [`Queue::known_to_consumers`]).
#[derive(Debug, Clone, Copy)]
struct Known {
    /// `tail` as last read: every packet before it is published.
    tail: u64,
    /// `front_pos` as read after it.
    front: u64,
    /// `ring_write` as read after it: past every record of those packets.
    ring_write: u64,
}

/// What a dequeue hands out, which decides when an inline packet is built.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Form {
    /// Copies (encodings, or values decoded from them): an inline packet is
    /// copied out of the ring and never built.
    Copy,
    /// Slots for handles: an inline packet is built into objects under the
    /// consumers' lock, before it is taken, so a pool with no room for it leaves
    /// it in the queue (the dequeue answers the pool's error and the packet
    /// waits for a later one) instead of losing it.
    Handles,
}

/// Bytes of the byte ring for a queue of `capacity` packets.
pub fn ring_size_for(capacity: u64) -> u64 {
    (capacity.saturating_mul(RING_PER_PACKET))
        .clamp(RING_MIN, RING_MAX)
        .next_power_of_two()
}

/// Ring bytes an inline record of an `n`-byte encoding takes (8-aligned).
fn record_len(n: u64) -> u64 {
    (RECORD_HEADER + n).next_multiple_of(8)
}

/// Whether the next value of `r` is sent inline, leaving `r` past it if so
/// (else where it was): an encoding of at most [`INLINE_MAX`] bytes with no
/// references, that is not a scalar (a scalar travels in its slot). A value
/// that does not read is not sent inline, so the pool path reports it.
fn next_inline(r: &mut Reader<'_>) -> bool {
    let at = r.pos();
    match r.peek() {
        None | Some(T_NONE | T_BOOL | T_INT | T_UINT | T_F64 | T_F32) => return false,
        _ => {}
    }
    if matches!(r.skip_value_upto(INLINE_MAX), Ok(Some(seen)) if !seen.refs) {
        return true;
    }
    r.rewind(at);
    false
}

/// What `Queue::dequeue_value` copied out of a packet: its encoding, to
/// decode once the queue is done with, or a byte string already a value.
enum Copied {
    Wire(Vec<u8>),
    Value(crate::value::Value),
}

/// Encode `v` into this thread's reusable buffer and run `f` on the
/// encoding, so that sending a value allocates nothing once the buffer has
/// grown to fit (a buffer grown past 64 KiB is let go again). A nested
/// call, which nothing makes today, gets a buffer of its own.
fn with_encoding<T>(v: &crate::value::Value, f: impl FnOnce(&[u8]) -> Result<T>) -> Result<T> {
    thread_local! {
        static BUF: std::cell::RefCell<Writer> = std::cell::RefCell::new(Writer::default());
    }
    BUF.with(|b| match b.try_borrow_mut() {
        Ok(mut w) => {
            w.buf.clear();
            w.non_ascii = false;
            let out = v.encode_into(&mut w).and_then(|()| f(&w.buf));
            if w.buf.capacity() > 64 << 10 {
                *w = Writer::default();
            }
            out
        }
        Err(_) => f(&v.encode()?),
    })
}

/// Check the encoding of an inline packet read from the ring: exactly one
/// well-formed value without references (ERR_SHM_CORRUPT if not: it was
/// damaged in the region).
fn check_inline(bytes: &[u8]) -> Result<Skipped> {
    check_packet(bytes)
        .map_err(|e| Error::corrupt(format!("an inline packet is damaged: {}", e.message())))
}

/// Read a queue slot: an inline packet's slot as it is (its position is
/// checked when it is taken), any other checked as [`Slot::read_at`] checks
/// it. The tag is read once: [`Queue::open`] reads a slot without the lock,
/// while a producer may be writing it.
fn read_packet_slot(values: Values<'_>, at: u64) -> Result<Slot> {
    let span = values.pool().span();
    let tag = span.u64_at(at)?.load(Relaxed);
    let bits = span.u64_at(at + 8)?.load(Relaxed);
    if tag == T_INLINE as u64 {
        return Ok(Slot {
            tag: T_INLINE,
            bits,
        });
    }
    Slot::from_words(tag, bits, at)
}

impl<'a> Queue<'a> {
    /// Allocate and lay out a new empty queue; returns its offset.
    pub fn create(values: Values<'a>, capacity: u64) -> Result<u64> {
        validate_capacity(capacity)?;
        let pool = values.pool();
        let ring_size = ring_size_for(capacity);
        let mut blocks = Vec::with_capacity(3);
        for n in [
            QUEUE_BLOCK_SIZE,
            capacity * SLOT_SIZE,
            RING_START + ring_size,
        ] {
            match pool.allocate(n) {
                Ok(b) => blocks.push(b),
                Err(e) => {
                    pool.free_many(&blocks)?;
                    return Err(e);
                }
            }
        }
        let (block, slots, ring) = (blocks[0], blocks[1], blocks[2]);
        let span = pool.span();
        span.fill(block, QUEUE_BLOCK_SIZE, 0)?;
        span.fill(slots, capacity * SLOT_SIZE, 0)?;
        span.fill(ring, RING_START, 0)?;
        span.u64_at(ring)?.store(RING_MAGIC, Relaxed);
        // (16 to 64 bytes in, as the block is 16-byte aligned)
        let off = (block + 16).next_multiple_of(64);
        span.u64_at(block)?.store(QUEUE_MAGIC, Relaxed);
        let h = header_at(values, off)?;
        h.deq_lock.init();
        h.enq_lock.init();
        h.capacity.store(capacity, Relaxed);
        h.slots.store(slots, Relaxed);
        h.block.store(block, Relaxed);
        h.front_pos.store(u64::MAX, Relaxed);
        h.front_seen.store(u64::MAX, Relaxed);
        h.ring.store(ring, Relaxed);
        h.ring_size.store(ring_size, Relaxed);
        h.magic
            .store(QUEUE_MAGIC, std::sync::atomic::Ordering::Release);
        Ok(off)
    }

    /// Open the queue at `off`, validating its header.
    pub fn open(values: Values<'a>, off: u64) -> Result<Queue<'a>> {
        let h = header_at(values, off)?;
        if h.magic.load(std::sync::atomic::Ordering::Acquire) != QUEUE_MAGIC {
            return Err(Error::corrupt(format!("no queue at offset {off}")));
        }
        let capacity = h.capacity.load(Relaxed);
        let slots = h.slots.load(Relaxed);
        validate_capacity(capacity).map_err(|_| Error::corrupt("a queue has a bad capacity"))?;
        let room = values.pool().linked_capacity(slots, "a queue")?;
        if capacity * SLOT_SIZE > room {
            return Err(Error::corrupt("a queue's slots block is too small"));
        }
        // The slots link must name slots, not just a block big enough for
        // them: a slot written elsewhere can land on another structure's
        // lock word and make it name a live thread (a tag of 1 names init),
        // which every later locker waits for. Every block with a lock in
        // it (the pipe directory, queue header blocks, the holder table,
        // tables and lists) starts with a magic number or an object header,
        // and neither reads as a slot tag; the slots block starts with a
        // slot (zeroed at creation, only ever rewritten with slots).
        if read_packet_slot(values, slots).is_err() {
            return Err(Error::corrupt(format!(
                "queue at {off}: its slots link names block {slots}, which does not hold slots"
            )));
        }
        // The same for the byte ring, which producers write bytes into: its
        // block must start with the ring's own magic.
        let (ring, ring_size) = (h.ring.load(Relaxed), h.ring_size.load(Relaxed));
        if !ring_size.is_power_of_two() || !(RING_MIN..=RING_MAX).contains(&ring_size) {
            return Err(Error::corrupt(format!(
                "queue at {off}: its byte ring has a bad size {ring_size}"
            )));
        }
        let room = values.pool().linked_capacity(ring, "a queue's byte ring")?;
        if room < RING_START + ring_size
            || values.pool().span().u64_at(ring)?.load(Relaxed) != RING_MAGIC
        {
            return Err(Error::corrupt(format!(
                "queue at {off}: its ring link names block {ring}, which is not its byte ring"
            )));
        }
        Ok(Queue {
            values,
            header: h,
            off,
            capacity,
            slots,
            ring: ring + RING_START,
            ring_size,
        })
    }

    /// What [`Queue::open`] checked of this queue's header, to open it again
    /// with [`Queue::reopen`].
    pub fn opened(&self) -> Opened {
        Opened {
            off: self.off,
            capacity: self.capacity,
            slots: self.slots,
            ring: self.ring,
            ring_size: self.ring_size,
        }
    }

    /// The queue that [`Queue::open`] returned `o` for, without checking its
    /// header again (opening costs a walk of the pool's block headers, a
    /// fifth of a one-message call from Node): only that the header is
    /// still in bounds. What was checked is all fixed at creation, and no
    /// queue is ever freed, so it still holds; a peer that rewrites it later
    /// changes nothing for a queue reopened so (every access stays bounds
    /// checked either way). `values` must be the same region's.
    pub fn reopen(values: Values<'a>, o: Opened) -> Result<Queue<'a>> {
        Ok(Queue {
            values,
            header: header_at(values, o.off)?,
            off: o.off,
            capacity: o.capacity,
            slots: o.slots,
            ring: o.ring,
            ring_size: o.ring_size,
        })
    }

    /// The pool block the header lives in (checked: an allocated block that
    /// holds the whole header).
    pub fn block(&self) -> Result<u64> {
        let block = self.header.block.load(Relaxed);
        let bad = || Error::corrupt(format!("queue at {}: a bad block link", self.off));
        if block >= self.off || self.off - block > 64 {
            return Err(bad());
        }
        let room = self
            .values
            .pool()
            .linked_capacity(block, "a queue header")?;
        if room < self.off - block + QUEUE_HEADER_SIZE
            || self.values.pool().span().u64_at(block)?.load(Relaxed) != QUEUE_MAGIC
        {
            return Err(bad());
        }
        Ok(block)
    }

    /// Region offset of the slot that holds the packet at position `pos`
    /// (`head ≤ pos < tail`), given `front`, what `front_pos` was read as
    /// (after a `tail` past `pos`). `front_pos` is only ever set to the
    /// position of a packet going into an empty queue, which is `head` then,
    /// and head only grows; so it is `head` or behind it (or the u64::MAX it
    /// starts as). Anything ahead of `head` was written by someone else, and
    /// taking it at its word would skip a ring packet.
    fn slot_of(&self, head: u64, front: u64, pos: u64) -> Result<u64> {
        if front == pos {
            return Ok(self.off + FRONT);
        }
        self.check_front(head, front)?;
        Ok(self.slots + (pos % self.capacity) * SLOT_SIZE)
    }

    /// `front_pos` (as read) is `head` or behind it, or the u64::MAX it
    /// starts as: one ahead was written by someone else.
    fn check_front(&self, head: u64, front: u64) -> Result<()> {
        if front != u64::MAX && front > head {
            return Err(Error::corrupt(format!(
                "queue at {}: its front slot names position {front}, ahead of its head {head}",
                self.off
            )));
        }
        Ok(())
    }

    /// Where to write the packet going in at position `tail`: the front
    /// slot if the queue is known to be empty (`head`, what the producer
    /// knows of it, has reached `tail`), else the ring. Under the lock;
    /// published only when `tail` moves past it.
    fn slot_for_enqueue(&self, head: u64, tail: u64) -> u64 {
        if head == tail {
            self.header.front_pos.store(tail, Relaxed);
            self.off + FRONT
        } else {
            self.slots + (tail % self.capacity) * SLOT_SIZE
        }
    }

    pub fn offset(&self) -> u64 {
        self.off
    }

    pub fn capacity(&self) -> u64 {
        self.capacity
    }

    pub fn values(&self) -> Values<'a> {
        self.values
    }

    /// Packets in the queue now. Reads `tail`, then `head`, both SeqCst:
    /// a producer that finds the queue full this way (and then waits on
    /// `not_full`, as [`Queue::try_enqueue_wire_many`] and the binding's
    /// try do) has read the counters as a try under the lock does, so the
    /// dequeue that makes room moves the word on (see [`Queue::signal`]).
    /// (Loaded in the other order, a `head` read before a dequeue and a
    /// `tail` read after the next enqueue could look full to a producer
    /// while that dequeue saw no edge.)
    pub fn len(&self) -> u64 {
        let h = self.header;
        let tail = h.tail.load(SeqCst);
        tail.saturating_sub(h.head.load(SeqCst)).min(self.capacity)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn stats(&self) -> QueueStats {
        let h = self.header;
        let depth = self.len();
        QueueStats {
            depth,
            capacity: self.capacity,
            // (noted when one side reads the other's counter, so the
            // depth now may be past it)
            high_water: h.high_water.load(Relaxed).max(depth),
            // (every enqueue moves tail on by one, every dequeue head,
            // including a skip of a slot a dead dequeuer emptied)
            total_enqueued: h.tail.load(Relaxed),
            total_dequeued: h.head.load(Relaxed),
        }
    }

    fn word(&self, w: WaitFor) -> &'a AtomicU32 {
        match w {
            WaitFor::NotEmpty => &self.header.not_empty,
            WaitFor::NotFull => &self.header.not_full,
        }
    }

    /// Region offset of a futex word (for waiter threads that hold the mapping).
    pub fn word_offset(&self, w: WaitFor) -> u64 {
        self.off
            + match w {
                WaitFor::NotEmpty => std::mem::offset_of!(QueueHeader, not_empty),
                WaitFor::NotFull => std::mem::offset_of!(QueueHeader, not_full),
            } as u64
    }

    /// Region offset of the sleeper count that goes with a futex word (for
    /// waiter threads, which count themselves in while they sleep).
    pub fn sleepers_offset(&self, w: WaitFor) -> u64 {
        self.off
            + match w {
                WaitFor::NotEmpty => std::mem::offset_of!(QueueHeader, sleepers_empty),
                WaitFor::NotFull => std::mem::offset_of!(QueueHeader, sleepers_full),
            } as u64
    }

    /// The counter a waiter for `w` watches: `tail` for a packet (it moves
    /// on with every enqueue), `head` for room (with every dequeue).
    fn counter(&self, w: WaitFor) -> &'a AtomicU64 {
        match w {
            WaitFor::NotEmpty => &self.header.tail,
            WaitFor::NotFull => &self.header.head,
        }
    }

    /// Region offset of the counter a waiter for `w` watches (for waiter
    /// threads that hold the mapping; its low 32 bits are [`Queue::seq`]).
    pub fn counter_offset(&self, w: WaitFor) -> u64 {
        self.off
            + match w {
                WaitFor::NotEmpty => std::mem::offset_of!(QueueHeader, tail),
                WaitFor::NotFull => std::mem::offset_of!(QueueHeader, head),
            } as u64
    }

    /// Where the queue is for a waiter for `w`: the low 32 bits of `tail`
    /// (for a packet) or `head` (for room). Read it *before* a failed try_*:
    /// a change after that means "try again" ([`Queue::wait`] waits for
    /// one).
    pub fn seq(&self, w: WaitFor) -> u32 {
        self.counter(w).load(SeqCst) as u32
    }

    /// [`Queue::seq`] as a try that just failed left it, read from the
    /// caller's own side: for a packet, `head` (the queue was empty, so
    /// `tail` was there, and any enqueue since moves `tail` past it); for
    /// room, `tail` less the capacity (the queue was full, so `head` was
    /// there, and any dequeue since moves `head` past it). Any other value
    /// only means one needless look.
    fn seq_after_failed_try(&self, w: WaitFor) -> u32 {
        match w {
            WaitFor::NotEmpty => self.header.head.load(SeqCst) as u32,
            WaitFor::NotFull => (self.header.tail.load(SeqCst).wrapping_sub(self.capacity)) as u32,
        }
    }

    /// Note a depth one side saw (with the other side's counter just read)
    /// in `high_water`, if it is a new deepest.
    fn note_depth(&self, depth: u64) {
        let hw = &self.header.high_water;
        if depth > hw.load(Relaxed) {
            hw.fetch_max(depth.min(self.capacity), Relaxed);
        }
    }

    fn sleepers(&self, w: WaitFor) -> &'a AtomicU32 {
        match w {
            WaitFor::NotEmpty => &self.header.sleepers_empty,
            WaitFor::NotFull => &self.header.sleepers_full,
        }
    }

    /// Take the producers' lock.
    fn lock_enq(&self) -> crate::lock::Guard<'a> {
        self.lock_end(&self.header.enq_lock)
    }

    /// Take the consumers' lock.
    fn lock_deq(&self) -> crate::lock::Guard<'a> {
        self.lock_end(&self.header.deq_lock)
    }

    fn lock_end(&self, m: &'a ShmMutex) -> crate::lock::Guard<'a> {
        // A holder that died mid-operation leaves at worst unpublished or
        // empty slots, both handled below; nothing to rebuild. But it may
        // have died before moving a futex word on for what it did, and a
        // waiter that only watches the word (a JS waiter thread) would not
        // look again: move both on and wake everyone, who then recheck.
        let g = m.lock();
        if g.recovered {
            for w in [WaitFor::NotEmpty, WaitFor::NotFull] {
                self.wake(w, u32::MAX);
            }
        }
        g
    }

    fn check_state(&self, head: u64, tail: u64) -> Result<()> {
        if tail < head || tail - head > self.capacity {
            return Err(Error::corrupt(format!(
                "queue at {}: head {head} and tail {tail} contradict capacity {}",
                self.off, self.capacity
            )));
        }
        Ok(())
    }

    /// Enqueue without waiting. On `Ok(true)` the slot's reference moved into
    /// the queue; on `Ok(false)` (full) the caller still owns it.
    pub fn try_enqueue(&self, slot: Slot) -> Result<bool> {
        let (g, head, tail, room) = self.lock_for_enqueue(1)?;
        if room == 0 {
            return Ok(false);
        }
        slot.write_at(self.values, self.slot_for_enqueue(head, tail))?;
        self.enqueued(g, tail, tail + 1);
        Ok(true)
    }

    /// Take the producers' lock for an enqueue of up to `want` packets:
    /// what is known of `head` (a lower bound, see below), `tail`, and how
    /// many packets fit now.
    ///
    /// A producer reads the consumers' `head` only when what it knows of it
    /// leaves too little room: the `head_seen` of the last such read, or
    /// the `head_hint` a consumer leaves on the producers' line when it
    /// takes a packet from the front slot, whichever is further. Both only
    /// ever lag `head` (and a value that could not be one is read again),
    /// so room is at worst understated.
    fn lock_for_enqueue(&self, want: usize) -> Result<(crate::lock::Guard<'a>, u64, u64, usize)> {
        let g = self.lock_enq();
        let h = self.header;
        // (tail is the producers' own)
        let tail = h.tail.load(Relaxed);
        // (Acquire: what a consumer emptied before it moved these on is
        // done with before it is written over)
        let mut head = h.head_seen.load(Relaxed).max(h.head_hint.load(Acquire));
        if head > tail || tail - head > self.capacity || self.capacity - (tail - head) < want as u64
        {
            head = self.look_at_head(tail)?;
        }
        let room = want.min((self.capacity - (tail - head)) as usize);
        // The counters only grow; one that would pass the end of its range
        // was written by someone else, and moving it on would overflow.
        if tail.checked_add(room as u64).is_none() {
            return Err(Error::corrupt(format!(
                "queue at {}: its tail counter is at the end of its range",
                self.off
            )));
        }
        Ok((g, head, tail, room))
    }

    /// Read the consumers' `head` itself (with the producers' lock held),
    /// check it against `tail`, and keep it in `head_seen` for the next
    /// calls. A head that contradicts `tail` is an error and is not kept.
    fn look_at_head(&self, tail: u64) -> Result<u64> {
        let h = self.header;
        // (Acquire: what a consumer emptied before it moved head on is done
        // with before it is written over)
        let head = h.head.load(Acquire);
        self.check_state(head, tail)?;
        h.head_seen.store(head, Relaxed);
        self.note_depth(tail - head);
        Ok(head)
    }

    /// Read the consumers' `ring_read` itself (producers' lock held) and
    /// keep it in `ring_read_seen`; `None` if it cannot be one, being past
    /// `write` or more than the ring behind it (damage: the caller sends
    /// through the pool instead).
    fn look_at_ring_read(&self, write: u64) -> Option<u64> {
        // (Acquire: the bytes before it were copied out before it moved)
        let read = self.header.ring_read.load(Acquire);
        if read > write || write - read > self.ring_size {
            return None;
        }
        self.header.ring_read_seen.store(read, Relaxed);
        Some(read)
    }

    /// Room for how many packets a producer can count on now without the
    /// lock (at least 1 if there is room at all): what it knows of `head`,
    /// read again from the consumers' line only if that says full.
    fn room_hint(&self) -> u64 {
        let h = self.header;
        let tail = h.tail.load(Relaxed);
        let known = h.head_seen.load(Relaxed).max(h.head_hint.load(Relaxed));
        match tail.checked_sub(known) {
            Some(d) if d < self.capacity => self.capacity - d,
            _ => self
                .capacity
                .saturating_sub(tail.saturating_sub(h.head.load(Acquire))),
        }
    }

    /// Publish the packets written at `from..tail`: move `tail` on, let go of
    /// the producers' lock, and wake consumers if any sleep.
    fn enqueued(&self, g: crate::lock::Guard<'a>, from: u64, tail: u64) {
        // (Release: for what was written before it; see `publish` for the
        // StoreLoad against sleepers that signal needs)
        publish(&self.header.tail, tail);
        drop(g);
        self.signal(WaitFor::NotEmpty, (tail - from) as u32);
    }

    /// After a dequeue moved `head` on by `n` (and let go of the consumers'
    /// lock): wake producers if any sleep.
    fn dequeued(&self, n: u64) {
        self.signal(WaitFor::NotFull, n.min(u32::MAX as u64) as u32);
    }

    /// Dequeue without waiting; the returned slot's reference is the caller's.
    /// A packed packet is built into real objects first (see
    /// [`Values::unpack`]): if that fails (damaged bytes, a full pool) the
    /// packet is released and the error returned. Call inside
    /// `values.busy()`.
    pub fn try_dequeue(&self) -> Result<Option<Slot>> {
        let mut inl = Vec::new();
        match self.try_dequeue_raw(Form::Handles, &mut inl, &mut Mark::new(self.values))? {
            Some(p) => self.settle(p, &inl).map(Some),
            None => Ok(None),
        }
    }

    /// The value a packet taken out stands for, as a slot a handle can hold:
    /// a packed packet built into objects ([`Values::unpack`]), an inline
    /// one built from its bytes (checked first; [`Form::Handles`] has built
    /// them already). Consumes the packet's reference even when it fails.
    /// Call inside `values.busy()`.
    fn settle(&self, p: Packet, inl: &[u8]) -> Result<Slot> {
        match p {
            Packet::Slot(s) => self.values.unpack(s),
            Packet::Inline(r) => self.build_inline(&inl[r]),
            Packet::Damaged(e) => Err(e),
        }
    }

    /// Build an inline packet's bytes (checked first) into objects, under
    /// one hold of the pool lock, as unpack builds a packed one.
    fn build_inline(&self, bytes: &[u8]) -> Result<Slot> {
        check_inline(bytes)?;
        self.values.with_pool_held(|v| v.store_wire(bytes))
    }

    /// Give back the references of packets taken out (inline packets hold
    /// none).
    fn release_packets(&self, ps: &[Packet]) -> Result<()> {
        if !ps.iter().any(|p| matches!(p, Packet::Slot(_))) {
            return Ok(());
        }
        let slots: Vec<Slot> = ps
            .iter()
            .filter_map(|p| match p {
                Packet::Slot(s) => Some(*s),
                Packet::Inline(_) | Packet::Damaged(_) => None,
            })
            .collect();
        self.values.release_many(&slots)
    }

    /// Take the packet at position `head` out, under the consumers' lock: read its
    /// slot, copy an inline packet's encoding onto `inl` (for
    /// [`Form::Handles`], build it into objects) and give its ring bytes
    /// back, and empty the slot; the caller then moves head on. None: the
    /// slot was empty (left by a dequeuer that died between emptying it and
    /// moving head). On an error nothing has changed: a slot that does not
    /// read stays where it is, as does an inline packet the pool has no
    /// room to build; an inline packet whose record or bytes do not check
    /// out is taken, as [`Packet::Damaged`].
    fn take_at(
        &self,
        form: Form,
        head: u64,
        known: Known,
        read: &mut u64,
        inl: &mut Vec<u8>,
        mark: &mut Mark<'a>,
    ) -> Result<Option<Packet>> {
        let at = self.slot_of(head, known.front, head)?;
        let slot = read_packet_slot(self.values, at)?;
        if slot.is_object() || (slot.tag == T_INLINE && form == Form::Handles) {
            // (before the reference leaves the queue, or objects are built)
            mark.set();
        }
        let start = inl.len();
        let (p, ring_end) = match slot.tag {
            S_EMPTY => (None, None),
            T_INLINE => match self.copy_inline(head, slot.bits, *read, known.ring_write, inl) {
                Ok((range, end)) if form == Form::Handles => {
                    // (the pool lock inside the consumers' lock: no path takes
                    // them the other way round)
                    let built = self.build_inline(&inl[range]);
                    inl.truncate(start);
                    match built {
                        Ok(s) => (Some(Packet::Slot(s)), Some(end)),
                        // (no room: the packet stays for a later dequeue)
                        Err(e) if e.code() == crate::error::ErrorCode::OutOfMemory => {
                            return Err(e)
                        }
                        // Bytes that do not build (damage the check missed)
                        // would fail every later dequeue the same way.
                        Err(e) => (
                            Some(Packet::Damaged(Error::corrupt(format!(
                                "an inline packet is damaged: {}",
                                e.message()
                            )))),
                            Some(end),
                        ),
                    }
                }
                Ok((range, end)) => (Some(Packet::Inline(range)), Some(end)),
                // (its ring bytes come back once a later record is taken,
                // or the queue is seen empty)
                Err(e) => (Some(Packet::Damaged(e)), None),
            },
            _ => (Some(Packet::Slot(slot)), None),
        };
        if let Err(e) = Slot::EMPTY.write_at(self.values, at) {
            inl.truncate(start);
            if let Some(Packet::Slot(s)) = p.filter(|_| slot.tag == T_INLINE) {
                let _ = self.values.release(s);
            }
            return Err(e);
        }
        if let Some(end) = ring_end {
            // Records are dequeued in the order they were written, so this
            // one is the oldest still in the ring: all before its end is
            // free, once `move_head` gives it back.
            *read = end;
        }
        Ok(p)
    }

    /// Copy the encoding of the inline packet at ring position `pos`, the
    /// packet at queue position `head`, onto `inl`; returns where it is in
    /// `inl` and where its record ends in the ring. Every bound is checked
    /// against the ring's counters (`read`: the end of the last record this
    /// dequeue took, or `ring_read`; `write`: `ring_write` as the consumers
    /// know it, read after a `tail` past this packet, so past its record)
    /// and the record's stamp.
    fn copy_inline(
        &self,
        head: u64,
        pos: u64,
        read: u64,
        write: u64,
        inl: &mut Vec<u8>,
    ) -> Result<(std::ops::Range<usize>, u64)> {
        let bad = |why: &str| {
            Error::corrupt(format!(
                "queue at {}: the inline packet at ring position {pos} {why}",
                self.off
            ))
        };
        if !pos.is_multiple_of(8) || pos < read || pos > write || write - pos < RECORD_HEADER {
            return Err(bad(&format!(
                "is outside the ring's live bytes {read}..{write}"
            )));
        }
        let off = pos & (self.ring_size - 1);
        let span = self.values.pool().span();
        let word = span.u64_at(self.ring + off)?.load(Relaxed);
        let (len, stamp) = (word & 0xffff_ffff, (word >> 32) as u32);
        if stamp != head as u32 {
            return Err(bad("was written for another packet"));
        }
        let end = pos.saturating_add(record_len(len));
        if len > INLINE_MAX as u64 || off + RECORD_HEADER + len > self.ring_size || end > write {
            return Err(bad(&format!("has a bad length {len}")));
        }
        let start = inl.len();
        span.read_append(self.ring + off + RECORD_HEADER, len as usize, inl)?;
        Ok((start..inl.len(), end))
    }

    /// What the consumers know of the producers' line, under their lock,
    /// for a dequeue of up to `want` packets at `head`: `tail_seen` and the
    /// `front_pos` and `ring_write` read with it, read again from the
    /// producers' line when they say fewer than `want` packets are there
    /// (or could not be true). Checked against `head` and the capacity.
    fn known_to_consumers(&self, head: u64, want: usize) -> Result<Known> {
        let h = self.header;
        let tail = h.tail_seen.load(Relaxed);
        if tail > head && tail - head <= self.capacity && tail - head >= want as u64 {
            return Ok(Known {
                tail,
                front: h.front_seen.load(Relaxed),
                ring_write: h.ring_write_seen.load(Relaxed),
            });
        }
        // (Acquire: what the producers published with it is visible, and
        // the two words read after it are at least as new: a front slot or
        // a record of a packet before `tail` was written before it)
        let tail = h.tail.load(Acquire);
        let k = Known {
            tail,
            front: h.front_pos.load(Relaxed),
            ring_write: h.ring_write.load(Relaxed),
        };
        self.check_state(head, tail)?;
        // (a front slot ahead of head was written by someone else: said
        // here, before it is cached, as slot_of would say it)
        self.check_front(head, k.front)?;
        // (the other two before tail_seen: a consumer killed in between
        // leaves a newer front_seen with an older tail_seen, which still
        // tells every packet before that tail where it is, as a front slot
        // once used only moves on to a later packet into an empty queue)
        h.front_seen.store(k.front, Relaxed);
        h.ring_write_seen.store(k.ring_write, Relaxed);
        h.tail_seen.store(tail, Relaxed);
        self.note_depth(tail - head);
        Ok(k)
    }

    /// After taking packets up to (not including) `head` under the
    /// consumers' lock: give back their ring bytes (all before `read`, if
    /// that moved on from `was`), move `head` there, and if one of them came
    /// from the front slot, leave that on the producers' line too
    /// (`head_hint`). (Once per dequeue, not per packet: a producer that
    /// waits for room reads this line, and each write takes it away.)
    fn move_head(&self, head: u64, took_front: bool, was: u64, read: u64) {
        let h = self.header;
        if read != was {
            // (Release: the copies are done before a producer writes over
            // the bytes. A consumer killed before this leaves them taken
            // until the queue is next seen empty, which frees the ring.)
            h.ring_read.store(read, Release);
        }
        // (Release: for the slots emptied and ring bytes copied out; the
        // StoreLoad against sleepers as in `enqueued`)
        publish(&h.head, head);
        if took_front {
            // (after head: never ahead of it)
            h.head_hint.store(head, Release);
        }
    }

    /// [`Queue::try_dequeue`] giving packed packets as they are (and inline
    /// ones as their bytes, appended to `inl`).
    fn try_dequeue_raw(
        &self,
        form: Form,
        inl: &mut Vec<u8>,
        mark: &mut Mark<'a>,
    ) -> Result<Option<Packet>> {
        let g = self.lock_deq();
        let h = self.header;
        let start = h.head.load(Relaxed);
        let was = h.ring_read.load(Relaxed);
        let mut read = was;
        // Each round moves head one step towards tail, at most `capacity`
        // away (check_state), so a round more than that means the counters
        // are being rewritten under our lock: the loop does not trust them
        // to end it.
        for _ in 0..=self.capacity {
            // (head is the consumers' own)
            let head = h.head.load(Relaxed);
            let known = match self.known_to_consumers(head, 1) {
                Ok(k) => k,
                Err(e) => {
                    drop(g);
                    if head != start {
                        self.dequeued(head - start);
                    }
                    return Err(e);
                }
            };
            if head == known.tail {
                drop(g);
                if head != start {
                    // (empty slots skipped: room was made all the same)
                    self.dequeued(head - start);
                }
                self.found_empty();
                return Ok(None);
            }
            let p = match self.take_at(form, head, known, &mut read, inl, mark) {
                Ok(p) => p,
                Err(e) => {
                    drop(g);
                    if head != start {
                        // (empty slots skipped before the failure: room
                        // was made, which a producer may be waiting for)
                        self.dequeued(head - start);
                    }
                    return Err(e);
                }
            };
            self.move_head(head + 1, known.front == head, was, read);
            let Some(p) = p else {
                // Left by a dequeuer that died between emptying and advancing.
                continue;
            };
            drop(g);
            self.dequeued(head + 1 - start);
            return Ok(Some(p));
        }
        Err(Error::corrupt(format!(
            "queue at {}: more empty slots than its capacity {}",
            self.off, self.capacity
        )))
    }

    /// Enqueue as many of `slots` as there is room for, without waiting,
    /// under one hold of the lock; returns how many went in (always a
    /// prefix). The references of those moved into the queue; the caller
    /// still owns the rest. An error is returned only if nothing went in
    /// (after a packet went in, a failure ends the prefix there), so the
    /// caller always knows which references are still its own. Call inside
    /// `values.busy()`, as the caller still owns references it must put
    /// somewhere (queue, ledger or release) before the mark ends.
    pub fn try_enqueue_many(&self, slots: &[Slot]) -> Result<usize> {
        if slots.is_empty() {
            return Ok(0);
        }
        let (g, head, from, room) = self.lock_for_enqueue(slots.len())?;
        let (mut tail, mut n) = (from, 0);
        for &slot in &slots[..room] {
            // The slots first, then tail once: a process killed half-way
            // has published nothing. (One store to the header's first line,
            // not one per packet: a consumer waiting for the lock spins on
            // that line, and each store there would take it from its cache.)
            let at = self.slot_for_enqueue(head, tail);
            if let Err(e) = slot.write_at(self.values, at) {
                if n == 0 {
                    return Err(e);
                }
                break;
            }
            tail += 1;
            n += 1;
        }
        if n == 0 {
            return Ok(0);
        }
        self.enqueued(g, from, tail);
        Ok(n)
    }

    /// Enqueue encodings as inline packets, copied into the byte ring, as
    /// many as there is room for in both the queue and the ring, under one
    /// hold of the lock and without waiting. Returns how many went in (a
    /// prefix) and whether the ring's room was what stopped it (the rest
    /// may then go through the pool). Each must be a checked encoding of at
    /// most [`INLINE_MAX`] bytes with no references ([`next_inline`]).
    ///
    /// Per packet the record (its length and stamp, then the encoding) goes
    /// into the ring and the slot names it; then `ring_write` moves past the
    /// records and `tail` past the packets, once each (as in
    /// [`Queue::try_enqueue_many`]). A process killed part way has published
    /// nothing and leaves at worst ring bytes no packet names, which the
    /// ring gets back when a later record is dequeued or the queue is empty.
    fn try_enqueue_inline(&self, encs: &[&[u8]]) -> Result<(usize, bool)> {
        if encs.is_empty() {
            return Ok((0, false));
        }
        let (g, mut head, from, room) = self.lock_for_enqueue(encs.len())?;
        let mut tail = from;
        let h = self.header;
        let mut write = h.ring_write.load(Relaxed);
        if head != tail {
            // What we know of the ring says it is damaged or short of room:
            // look at head itself first. A queue that is really empty gives
            // the whole ring back (and resets damaged counters), as below.
            let seen = h.ring_read_seen.load(Relaxed);
            let first = record_len(encs[0].len() as u64);
            if !write.is_multiple_of(8)
                || write > u64::MAX / 2
                || write < seen
                || write - seen > self.ring_size.saturating_sub(2 * first)
            {
                // (a contradicting head was refused by the lock already or
                // is refused by the next call: here it only means no reset)
                if let Ok(now) = self.look_at_head(tail) {
                    head = now;
                }
            }
        }
        // How much of the ring is free: all before `read` may be written
        // over. Lazily: the consumers' ring_read is read only when what the
        // producers last read of it leaves too little room.
        let mut read = if head == tail {
            // Known to be empty, so no record is live: the whole ring is
            // free (this also takes back bytes a killed producer left).
            // Counters no operation could have left (unaligned, or half way
            // to the end of their range) start again from 0: a stale slot
            // naming an old position is never read, as head reads only what
            // is published from now on, and the stamp would tell anyway.
            // The consumers check a record against their ring_read, so it
            // is set to where the next record goes (unless it is there
            // already: a load, not a store, on the consumers' line, as it
            // usually is). (ring_read is the consumers', but none writes it
            // now: a dequeue writes it only while taking packets, before it
            // moves head on, and head has reached tail, which only we can
            // move; our store is published with tail.) So a ring_read
            // damaged past ring_write is mended here too.
            if !write.is_multiple_of(8) || write > u64::MAX / 2 {
                write = 0;
                h.ring_write.store(0, Relaxed);
            }
            if h.ring_read.load(Relaxed) != write {
                h.ring_read.store(write, Relaxed);
            }
            h.ring_read_seen.store(write, Relaxed);
            write
        } else {
            h.ring_read_seen.load(Relaxed)
        };
        let mut fresh = head == tail;
        // Counters that contradict each other were written by someone else:
        // no inline send until the queue is next seen empty (which resets
        // them); values go through the pool meanwhile, as with a full ring.
        if !write.is_multiple_of(8) {
            return Ok((0, true));
        }
        if write < read || write - read > self.ring_size {
            fresh = true;
            match self.look_at_ring_read(write) {
                Some(now) => read = now,
                // (nothing written: the lock goes with g)
                None => return Ok((0, true)),
            }
        }
        let span = self.values.pool().span();
        let (mut n, mut ring_full) = (0, false);
        for enc in &encs[..room] {
            let len = enc.len() as u64;
            let rec = record_len(len);
            // A record never wraps: one that would cross the ring's end
            // starts at its beginning instead.
            let off = write & (self.ring_size - 1);
            let skip = if off + rec > self.ring_size {
                self.ring_size - off
            } else {
                0
            };
            // (a sum past the end of the range is damage, as above)
            let Some(end) = write.checked_add(skip + rec) else {
                ring_full = true;
                break;
            };
            if end - read > self.ring_size {
                if fresh {
                    ring_full = true;
                    break;
                }
                // Read the consumers' ring_read again, once: they may have
                // given back more since. (Damage sends the rest through the
                // pool; a value behind what we knew is only older news.)
                fresh = true;
                let Some(now) = self.look_at_ring_read(write) else {
                    ring_full = true;
                    break;
                };
                read = read.max(now);
                if end - read > self.ring_size {
                    ring_full = true;
                    break;
                }
            }
            let pos = end - rec;
            let at = self.ring + (pos & (self.ring_size - 1));
            let wrote = span
                .u64_at(at)
                .map(|w| w.store(len | (tail as u32 as u64) << 32, Relaxed))
                .and_then(|()| span.write(at + RECORD_HEADER, enc));
            if let Err(e) = wrote {
                if n == 0 {
                    return Err(e);
                }
                break;
            }
            let slot = Slot {
                tag: T_INLINE,
                bits: pos,
            };
            if let Err(e) = slot.write_at(self.values, self.slot_for_enqueue(head, tail)) {
                if n == 0 {
                    return Err(e);
                }
                break;
            }
            write = end;
            tail += 1;
            n += 1;
        }
        if n == 0 {
            return Ok((0, ring_full));
        }
        // Past the records before they are published: a producer killed
        // after publishing must not leave their bytes to be written over.
        h.ring_write.store(write, Relaxed);
        self.enqueued(g, from, tail);
        Ok((n, ring_full))
    }

    /// Dequeue up to `max` packets without waiting, under one hold of the
    /// lock, appending them to `out` (their references are the caller's,
    /// unrecorded); returns how many. An error is returned only if nothing
    /// is appended: packed packets are built into real objects after the
    /// lock is let go (see [`Values::unpack`]), and if one cannot be, every
    /// packet this call took is released and the error returned. Call inside
    /// `values.busy()` and record or release what comes out before the mark
    /// ends: prefer [`Queue::dequeue_many_then`].
    pub fn try_dequeue_many(&self, max: usize, out: &mut Vec<Slot>) -> Result<usize> {
        let (mut ps, mut inl) = (Vec::new(), Vec::new());
        self.try_dequeue_many_raw(
            Form::Handles,
            max,
            &mut ps,
            &mut inl,
            &mut Mark::new(self.values),
        )?;
        let slots = self.settle_all(ps, &inl)?;
        out.extend_from_slice(&slots);
        Ok(slots.len())
    }

    /// [`Queue::settle`] every packet of a batch; on a failure, release
    /// them all (those settled and those not yet) and return the error.
    fn settle_all(&self, ps: Vec<Packet>, inl: &[u8]) -> Result<Vec<Slot>> {
        let mut out = Vec::with_capacity(ps.len());
        for (i, p) in ps.iter().enumerate() {
            match self.settle(p.clone(), inl) {
                Ok(s) => out.push(s),
                Err(e) => {
                    // (settle consumed ps[i] itself)
                    let _ = self.values.release_many(&out);
                    let _ = self.release_packets(&ps[i + 1..]);
                    return Err(e);
                }
            }
        }
        Ok(out)
    }

    /// [`Queue::try_dequeue_many`] giving packed packets as they are (and
    /// inline ones as their bytes, appended to `inl`).
    fn try_dequeue_many_raw(
        &self,
        form: Form,
        max: usize,
        out: &mut Vec<Packet>,
        inl: &mut Vec<u8>,
        mark: &mut Mark<'a>,
    ) -> Result<usize> {
        if max == 0 {
            return Ok(0);
        }
        let g = self.lock_deq();
        let h = self.header;
        // (as in try_dequeue_raw)
        let mut head = h.head.load(Relaxed);
        let known = self.known_to_consumers(head, max)?;
        let start = head;
        let was = h.ring_read.load(Relaxed);
        let mut read = was;
        let mut got = 0;
        let mut taken = 0;
        while got < max && head != known.tail {
            // As in try_dequeue: take each packet out and empty its slot,
            // then move head (once, for the lot, as try_enqueue_many moves
            // tail), so a packet is never delivered twice: a process killed
            // half-way leaves empty slots at the head, which are skipped.
            let p = match self.take_at(form, head, known, &mut read, inl, mark) {
                Ok(p) => p,
                // Nothing to hand out: the error is the answer (not an
                // empty batch, which would send the caller to wait). Empty
                // slots skipped before it are passed all the same, and the
                // room they made is signalled.
                Err(e) if got == 0 => {
                    if taken > 0 {
                        self.move_head(head, (start..head).contains(&known.front), was, read);
                        drop(g);
                        self.dequeued(taken);
                    }
                    return Err(e);
                }
                Err(_) => break,
            };
            head += 1;
            taken += 1;
            if let Some(p) = p {
                out.push(p);
                got += 1;
            }
        }
        if taken == 0 {
            drop(g);
            self.found_empty();
            return Ok(0);
        }
        self.move_head(head, (start..head).contains(&known.front), was, read);
        drop(g);
        self.dequeued(taken);
        Ok(got)
    }

    /// Dequeue up to `max` packets, waiting up to `timeout` (None: forever)
    /// for the first one, and hand them to `take` inside the same
    /// in-progress mark as the dequeue (as [`Queue::dequeue_then`] does for
    /// one): `take` must record every reference (a handle) or consume it
    /// (copy out and release) before it returns. On timeout, or if `max` is
    /// 0, `take` gets an empty batch.
    pub fn dequeue_many_then<T>(
        &self,
        max: usize,
        timeout: Option<Duration>,
        take: impl FnOnce(Vec<Slot>) -> T,
    ) -> Result<T> {
        self.dequeue_many_raw_then(Form::Handles, max, timeout, &mut Vec::new(), |ps, inl| {
            Ok(take(self.settle_all(ps, inl)?))
        })?
    }

    /// [`Queue::dequeue_many_then`] giving packed packets as they are, and
    /// inline ones as their bytes, appended to `inl` in the order taken
    /// (ranges of it; `take` gets it too).
    fn dequeue_many_raw_then<T>(
        &self,
        form: Form,
        max: usize,
        timeout: Option<Duration>,
        inl: &mut Vec<u8>,
        take: impl FnOnce(Vec<Packet>, &mut Vec<u8>) -> T,
    ) -> Result<T> {
        if max == 0 {
            return Ok(take(Vec::new(), inl));
        }
        let deadline = Deadline::new(timeout);
        loop {
            {
                // (held until `take` has dealt with what was taken)
                let mut mark = Mark::new(self.values);
                let mut ps = Vec::with_capacity(max.min(self.capacity as usize));
                if self.try_dequeue_many_raw(form, max, &mut ps, inl, &mut mark)? > 0 {
                    return Ok(take(ps, inl));
                }
            }
            let seen = self.seq_after_failed_try(WaitFor::NotEmpty);
            if deadline.passed() {
                self.values.reclaim_if_due();
                return Ok(take(Vec::new(), inl));
            }
            self.wait(WaitFor::NotEmpty, seen, deadline.get());
        }
    }

    /// Dequeue up to `max` packets, waiting up to `timeout` (None: forever)
    /// for the first one; appends them to `out` and returns how many (0 only
    /// on timeout, or if `max` is 0). The slots are the caller's, unrecorded:
    /// prefer [`Queue::dequeue_many_shared`] or [`Queue::dequeue_many_then`].
    pub fn dequeue_many(
        &self,
        max: usize,
        timeout: Option<Duration>,
        out: &mut Vec<Slot>,
    ) -> Result<usize> {
        self.dequeue_many_then(max, timeout, |slots| {
            let n = slots.len();
            out.extend(slots);
            n
        })
    }

    /// Dequeue up to `max` packets into [`Shared`] handles, each recorded in
    /// the ledger inside the mark of the dequeue; empty on timeout.
    pub fn dequeue_many_shared(
        &self,
        max: usize,
        timeout: Option<Duration>,
    ) -> Result<Vec<Shared<'a>>> {
        let values = self.values;
        self.dequeue_many_then(max, timeout, |slots| {
            slots
                .into_iter()
                .map(|s| Shared::from_owned(values, s))
                .collect()
        })
    }

    /// Send `count` values from their concatenated encodings (`bytes`),
    /// as many as fit now, without waiting; returns how many went in (a
    /// prefix). The values go in chunks of up to [`BATCH`]: a run of values
    /// that go inline is copied into the byte ring under one hold of the
    /// producers' lock; a run of others is built under one hold of the pool
    /// lock and then enqueued under one hold of the producers' lock (and so is
    /// everything after the ring is found out of room). A value that cannot
    /// be sent (bad bytes, a dead reference, a full pool) leaves nothing of
    /// its chunk behind: it is an error if nothing went in yet, and
    /// otherwise ends the call, which returns the count sent so far (so a
    /// retry with the rest meets the error). Values past those that fit are
    /// not looked at.
    ///
    /// From the first value built in the pool on, the call is one
    /// in-progress mark: every value built is in the queue or released
    /// again before it ends, so none is left in this process's hands
    /// unrecorded (a process killed inside is reclaimed as uncertain, and a
    /// repair finds what it was building). Values sent inline move no
    /// reference and need no mark (see `Mark`).
    pub fn try_enqueue_wire_many(&self, bytes: &[u8], count: usize) -> Result<usize> {
        if count == 1 && bytes.len() <= INLINE_MAX && lone_bytes(bytes).is_some() {
            // One small byte string: inline, without the parser (see
            // `lone_bytes`). With the ring out of room it goes on below, to
            // the pool.
            match self.try_enqueue_inline(&[bytes])? {
                (1, _) => return Ok(1),
                (_, false) => return Ok(0), // (the queue is full)
                _ => {}
            }
        }
        // (set before anything is built in the pool; inline sends need none)
        let mut mark = Mark::new(self.values);
        let mut r = Reader::new(bytes);
        let mut sent = 0;
        // Set once the byte ring is out of room: the rest of this call goes
        // through the pool.
        let mut ring_full = false;
        while sent < count {
            let room = self.room_hint() as usize;
            let n = (count - sent).min(room).min(BATCH);
            if n == 0 {
                break;
            }
            // The longest run ahead of values sent inline, up to BATCH.
            // (256 per hold measured 47-48 ns per message batched against
            // 50 in bench_rust, but zeroing a run array 4 times the size
            // made a call of one value 15% slower.)
            let start = r.pos();
            // On the stack, so a call of one value allocates nothing, and
            // only as large as this round needs: zeroing BATCH entries (1
            // KiB) for a call of one value took most of a lock-free
            // producer's time in a profile, its stores queued behind the
            // previous call's stores to lines the consumer had read.
            let mut small: [&[u8]; 4] = [&[]; 4];
            let mut big: [&[u8]; BATCH];
            let run: &mut [&[u8]] = if n <= small.len() {
                &mut small
            } else {
                big = [&[]; BATCH];
                &mut big
            };
            let mut m = 0;
            let mut at = start;
            while !ring_full && m < n && next_inline(&mut r) {
                run[m] = &bytes[at..r.pos()];
                at = r.pos();
                m += 1;
            }
            let encs = &run[..m];
            if !encs.is_empty() {
                if sent + encs.len() == count && !r.at_end() {
                    if sent == 0 {
                        return Err(Error::invalid("trailing bytes after the encoded values"));
                    }
                    break;
                }
                let (k, full) = match self.try_enqueue_inline(encs) {
                    Ok(x) => x,
                    Err(e) if sent == 0 => return Err(e),
                    Err(_) => break,
                };
                sent += k;
                if k < encs.len() {
                    r.rewind(start + encs[..k].iter().map(|e| e.len()).sum::<usize>());
                    if !full {
                        // The queue filled up meanwhile.
                        break;
                    }
                    ring_full = true;
                }
                continue;
            }
            // Values that do not go inline (or all, with the ring full): as
            // many as the next value's kind allows, built through the pool.
            let n = if ring_full {
                n
            } else {
                // (the first is known not to go inline; a value that does
                // not read ends the run, and fails it)
                let mut k = 0;
                while k < n {
                    if k > 0 && next_inline(&mut r) {
                        break;
                    }
                    if r.skip_value().is_err() {
                        // (in the run, so the run fails whole)
                        k += 1;
                        break;
                    }
                    k += 1;
                }
                r.rewind(start);
                k
            };
            let last = sent + n == count;
            mark.set();
            let built = self.values.with_pool_held(|v| {
                let mut slots = Vec::with_capacity(n);
                if let Err(e) = v.store_packets(&mut r, n, &mut slots) {
                    let _ = v.release_many(&slots);
                    return Err(e);
                }
                if last && !r.at_end() {
                    let _ = v.release_many(&slots);
                    return Err(Error::invalid("trailing bytes after the encoded values"));
                }
                Ok(slots)
            });
            let slots = match built {
                Ok(s) => s,
                Err(e) if sent == 0 => return Err(e),
                Err(_) => break,
            };
            // Another producer may have taken some of the room meanwhile.
            let k = match self.try_enqueue_many(&slots) {
                Ok(k) => k,
                Err(e) => {
                    // Nothing of this chunk went in (see try_enqueue_many).
                    let _ = self.values.release_many(&slots);
                    if sent == 0 {
                        return Err(e);
                    }
                    break;
                }
            };
            sent += k;
            if k < slots.len() {
                // Built for nothing: free them again. (Packets already went
                // in, so the count is what the caller must hear.)
                let _ = self.values.release_many(&slots[k..]);
                break;
            }
        }
        Ok(sent)
    }

    /// [`Queue::try_enqueue_wire_many`], waiting up to `timeout` (None:
    /// forever) for room for the first value; 0 only on timeout (or if
    /// `count` is 0). Nothing is built while it waits: each try builds only
    /// what there is room for, so a process killed while waiting holds none
    /// of the batch.
    pub fn enqueue_wire_many(
        &self,
        bytes: &[u8],
        count: usize,
        timeout: Option<Duration>,
    ) -> Result<usize> {
        if count == 0 {
            return Ok(0);
        }
        let deadline = Deadline::new(timeout);
        loop {
            let n = self.try_enqueue_wire_many(bytes, count)?;
            if n > 0 {
                return Ok(n);
            }
            let seen = self.seq_after_failed_try(WaitFor::NotFull);
            if deadline.passed() {
                self.values.reclaim_if_due();
                return Ok(0);
            }
            self.wait(WaitFor::NotFull, seen, deadline.get());
        }
    }

    /// Dequeue up to `max` packets (waiting up to `timeout` for the first, as
    /// [`Queue::dequeue_many`]), append a deep copy of each to `w` as
    /// concatenated encodings, and release them, freeing their blocks under
    /// one hold of the pool lock; returns how many. The packets themselves
    /// are ordinary shared values: only the reader gets copies. If one cannot
    /// be copied out (a damaged value), every packet taken is still released
    /// and the error is returned.
    ///
    /// Dequeue, copy and release happen inside one in-progress mark, so the
    /// packets need no ledger entries: a process killed in between is
    /// reclaimed as uncertain and a repair gives back what it had taken.
    pub fn dequeue_many_wire(
        &self,
        max: usize,
        timeout: Option<Duration>,
        w: &mut crate::value::wire::Writer,
    ) -> Result<usize> {
        self.dequeue_many_wire_inner(max, timeout, w, None)
    }

    /// [`Queue::dequeue_many_wire`] for a caller that checks the bytes
    /// itself, as [`crate::value::shape_code_packets`] does: packed packets
    /// are copied out unchecked (save that each starts as a table or list),
    /// and `ends` gets where each packet's encoding ends in `w`. The bytes
    /// must not be read as values before that check.
    pub fn dequeue_many_wire_unchecked(
        &self,
        max: usize,
        timeout: Option<Duration>,
        w: &mut crate::value::wire::Writer,
        ends: &mut Vec<usize>,
    ) -> Result<usize> {
        self.dequeue_many_wire_inner(max, timeout, w, Some(ends))
    }

    fn dequeue_many_wire_inner(
        &self,
        max: usize,
        timeout: Option<Duration>,
        w: &mut crate::value::wire::Writer,
        mut ends: Option<&mut Vec<usize>>,
    ) -> Result<usize> {
        let values = self.values;
        let Writer { buf, non_ascii } = w;
        let start = buf.len();
        // Inline packets are copied out of the ring straight onto `buf`, in
        // the order taken; packed packets are copied out as they are, not
        // built; both are checked here unless the caller checks.
        let copied = self.dequeue_many_raw_then(Form::Copy, max, timeout, buf, |ps, buf| {
            let mut out: Result<()> = Ok(());
            if ps.iter().all(|p| matches!(p, Packet::Inline(_))) {
                // (the common case: every byte is in place already)
                for p in &ps {
                    let Packet::Inline(r) = p else { continue };
                    match ends.as_deref_mut() {
                        Some(ends) => ends.push(r.end),
                        None => match check_inline(&buf[r.clone()]) {
                            Ok(seen) => *non_ascii |= seen.non_ascii,
                            Err(e) => {
                                out = Err(e);
                                break;
                            }
                        },
                    }
                }
            } else {
                // Mixed: lift the inline bytes out, then write every packet
                // in order.
                let inline = buf.split_off(start);
                let mut w = Writer {
                    buf: std::mem::take(buf),
                    non_ascii: *non_ascii,
                };
                for p in &ps {
                    // (the mark of dequeue_many_then covers the copy too)
                    out = match (p, ends.as_deref_mut()) {
                        (Packet::Slot(s), Some(ends)) => values
                            .emit_packet_unchecked(*s, &mut w)
                            .map(|_| ends.push(w.buf.len())),
                        (Packet::Slot(s), None) => values.emit_owned(*s, &mut w, 0),
                        (Packet::Inline(r), ends) => {
                            let bytes = &inline[r.start - start..r.end - start];
                            // (unchecked: the caller checks, shape_code_packets)
                            let seen = match ends {
                                Some(_) => Ok(Skipped::default()),
                                None => check_inline(bytes),
                            };
                            seen.map(|seen| {
                                w.non_ascii |= seen.non_ascii;
                                w.buf.extend_from_slice(bytes);
                                if let Some(ends) = ends {
                                    ends.push(w.buf.len());
                                }
                            })
                        }
                        (Packet::Damaged(e), _) => Err(e.clone()),
                    };
                    if out.is_err() {
                        break;
                    }
                }
                *buf = w.buf;
                *non_ascii = w.non_ascii;
            }
            let released = self.release_packets(&ps);
            out.and(released).map(|()| ps.len())
        });
        match copied {
            Ok(Ok(n)) => Ok(n),
            Ok(Err(e)) | Err(e) => {
                // (nothing of a batch that failed is left in the writer)
                buf.truncate(start);
                if let Some(ends) = ends {
                    ends.retain(|&e| e <= start);
                }
                Err(e)
            }
        }
    }

    /// After an operation moved its side's counter on (with its lock let
    /// go): if anyone sleeps waiting for that, move the futex word `w` on and
    /// wake up to `n` of them.
    ///
    /// Waiters watch the other side's counter, not the word (see `wait`):
    /// one that only spins needs no wake-up, so the word moves only for
    /// sleepers, and a pipe in steady use writes neither word. A sleeper
    /// counts itself in, then (after a fence, and the kernel's global
    /// barrier that stands in for ours, see `publish`) reads the word, then
    /// the counter, and sleeps only if the counter has not moved; we store
    /// the counter, then read the count: one of the two sees the other's
    /// store. So either
    /// the sleeper sees the counter move and does not sleep, or we see it
    /// counted and move the word on, which it either read already (then the
    /// kernel sees the word changed and it does not sleep) or not (then it
    /// sees the counter moved). One wake-up for the first packet does not
    /// reach a second sleeper: the next packet, finding it still counted,
    /// wakes it.
    fn signal(&self, w: WaitFor, n: u32) {
        let sleepers = self.sleepers(w);
        // (the counter's store before the count's load: see `publish`)
        let counted = if platform::fast_publish() {
            std::sync::atomic::compiler_fence(SeqCst);
            sleepers.load(Relaxed)
        } else {
            sleepers.load(SeqCst)
        };
        if counted > 0 {
            self.wake(w, n);
        }
    }

    /// Move the futex word for `w` on and wake up to `n` of its sleepers.
    fn wake(&self, w: WaitFor, n: u32) {
        let word = self.word(w);
        bump(word);
        platform::futex_wake(word, n);
    }

    /// After a dequeue found the queue empty: wake any producer still
    /// counted asleep for room, after a fence. A consumer publishes `head`
    /// without a fence (see `publish`), and a producer's first nap runs no
    /// barrier ([`FIRST_NAP`]), so that publish can miss a producer that
    /// just counted itself in. The next dequeue's `signal` sees the count;
    /// this covers the case where there is no next dequeue because the
    /// consumer emptied the queue (then no producer has reason to wait).
    /// A consumer finding nothing is idle, so the fence costs it nothing.
    fn found_empty(&self) {
        if !platform::fast_publish() {
            return;
        }
        std::sync::atomic::fence(SeqCst);
        if self.sleepers(WaitFor::NotFull).load(Relaxed) > 0 {
            self.wake(WaitFor::NotFull, u32::MAX);
        }
    }

    /// Wait until the counter for `w` ([`Queue::seq`]) moves on from
    /// `seen`, or `deadline` passes: spinning on it a little first, then
    /// asleep on the futex word (counted in, see `signal`). Callers recheck
    /// their condition either way. Returns [`platform::Wake::TimedOut`]
    /// only when a sleep that a publisher should have ended ran its whole
    /// slice (a second, or less before `deadline`; 10 ms where the
    /// kernel's barrier failed, see [`SLICE_UNFENCED`]) and the counter had
    /// not moved: a missed wake-up, or nothing happening for that long.
    pub fn wait(&self, w: WaitFor, seen: u32, deadline: Option<Instant>) -> platform::Wake {
        let counter = self.counter(w);
        let (spins, every) = match w {
            WaitFor::NotEmpty => (SPINS, 1),
            WaitFor::NotFull => (SPINS_FOR_ROOM, ROOM_LOOK_EVERY),
        };
        // A consumer's wait is timed, to learn how long to spin next time.
        let began = (w == WaitFor::NotEmpty).then(Instant::now);
        // A consumer wants one packet; a producer waiting for room spins
        // until a run of slots is free (see `room_worth_taking`), and takes
        // whatever there is once its spins are done.
        let want = match w {
            WaitFor::NotEmpty => 1,
            WaitFor::NotFull => room_worth_taking(self.capacity),
        };
        let moved = || (counter.load(Relaxed) as u32).wrapping_sub(seen);
        for i in 0..spins {
            if i % every == 0 && moved() >= want {
                return platform::Wake::Woken;
            }
            std::hint::spin_loop();
        }
        if moved() != 0 {
            return platform::Wake::Woken;
        }
        // However this wait ends from here on, it sets the next one's spin.
        let _learn = began.map(|began| Learn {
            began,
            counter,
            seen,
        });
        if let Some(began) = began {
            // Packets lately came soon after a sleep: spin on for that
            // long instead.
            let past = |now: Instant| deadline.is_some_and(|d| now >= d);
            if spin_until_moved(counter, seen, began, learnt_spin(), past) {
                return platform::Wake::Woken;
            }
        }
        // Slices of at most a second, so a sleeper whose wake-up was lost to
        // a crashed peer still rechecks.
        let mut slice = Duration::from_secs(1);
        if let Some(d) = deadline {
            slice = slice.min(d.saturating_duration_since(Instant::now()));
            if slice.is_zero() {
                return platform::Wake::Woken;
            }
        }
        let word = self.word(w);
        // (counted in, a fence, then the word and the counter, in this
        // order: see `signal`)
        let mut me = Sleeper::count_in(self.sleepers(w));
        let unmoved = || counter.load(SeqCst) as u32 == seen;
        let mut out = platform::Wake::Woken;
        if w == WaitFor::NotFull {
            // A producer waiting for room first naps without the barrier
            // (see `FIRST_NAP`): a consumer's publish can miss it, which
            // costs at most the nap.
            let now = word.load(SeqCst);
            if unmoved() {
                platform::futex_wait(word, now, Some(slice.min(FIRST_NAP)));
            }
            slice = slice.saturating_sub(FIRST_NAP);
        }
        if !slice.is_zero() && unmoved() {
            me.fence_publishers();
            slice = me.slice(slice);
            let now = word.load(SeqCst);
            if unmoved()
                && platform::futex_wait(word, now, Some(slice)) == platform::Wake::TimedOut
                && unmoved()
            {
                out = platform::Wake::TimedOut;
            }
        }
        drop(me);
        out
    }

    /// Enqueue, waiting up to `timeout` for room (None: forever). On
    /// `Ok(false)` (timed out) or an error the caller still owns the slot,
    /// except for `ERR_SHM_CLOSED`: the session was closed while waiting and
    /// the slot, recorded in its ledger meanwhile, went back with it.
    ///
    /// While it waits, the slot is recorded in the process's ledger (when the
    /// queue's values have a session), so a process killed while blocked on
    /// a full pipe gives its packet back.
    pub fn enqueue(&self, slot: Slot, timeout: Option<Duration>) -> Result<bool> {
        self.enqueue_inner(slot, None, timeout, false)
    }

    /// [`Queue::enqueue`] of a reference the caller owns and may have
    /// recorded in its ledger (`held`), which it consumes: on `Ok(true)` it
    /// is in the queue; on `Ok(false)` (timed out) or an error it has been
    /// released (inside the same in-progress mark, so a crash is never an
    /// unflagged leak).
    pub fn enqueue_recorded(
        &self,
        slot: Slot,
        held: Option<Held>,
        timeout: Option<Duration>,
    ) -> Result<bool> {
        self.enqueue_inner(slot, held, timeout, true)
    }

    fn enqueue_inner(
        &self,
        slot: Slot,
        mut held: Option<Held>,
        timeout: Option<Duration>,
        consume: bool,
    ) -> Result<bool> {
        let deadline = Deadline::new(timeout);
        // Release `slot` if it is ours to release, keeping the error.
        let give_up = |e: Option<Error>| -> Result<bool> {
            if consume {
                let _ = self.values.release(slot);
            }
            e.map_or(Ok(false), Err)
        };
        loop {
            {
                // (a scalar slot, unrecorded, moves no reference: see Mark)
                let mut mark = Mark::new(self.values);
                if slot.is_object() || held.is_some() {
                    mark.set();
                }
                match self.values.unhold(held.take()) {
                    Ok(true) => {}
                    // Closed (or reclaimed) while we waited: the reference
                    // went back with the ledger; nothing is left to release.
                    Ok(false) => {
                        return Err(Error::new(
                            crate::error::ErrorCode::Closed,
                            "the region was closed while enqueueing",
                        ))
                    }
                    Err(e) => return give_up(Some(e)),
                }
                match self.try_enqueue(slot) {
                    Ok(true) => return Ok(true),
                    Ok(false) => {}
                    Err(e) => return give_up(Some(e)),
                }
                if deadline.passed() {
                    let out = give_up(None);
                    drop(mark);
                    self.values.reclaim_if_due();
                    return out;
                }
                held = self.values.hold(slot);
            }
            // (once the deadline has passed, this returns at once and the
            // next round answers false)
            let seen = self.seq_after_failed_try(WaitFor::NotFull);
            self.wait(WaitFor::NotFull, seen, deadline.get());
        }
    }

    /// Dequeue, waiting up to `timeout` for a packet (None: forever). The
    /// slot is the caller's, unrecorded: prefer [`Queue::dequeue_then`] or
    /// [`Queue::dequeue_shared`], which record it as they take it.
    pub fn dequeue(&self, timeout: Option<Duration>) -> Result<Option<Slot>> {
        self.dequeue_then(timeout, |s| s)
    }

    /// Dequeue, waiting up to `timeout`, and hand the packet to `take` inside
    /// the same in-progress mark as the dequeue itself (so a crash between
    /// the two is known to the reclaimer). `take` usually records the
    /// reference in the ledger by wrapping it in a handle.
    pub fn dequeue_then<T>(
        &self,
        timeout: Option<Duration>,
        mut take: impl FnMut(Slot) -> T,
    ) -> Result<Option<T>> {
        self.dequeue_raw_then(Form::Handles, timeout, |p, inl| {
            self.settle(p, inl).map(&mut take)
        })?
        .transpose()
    }

    /// [`Queue::dequeue_then`] giving a packed packet as it is, and an
    /// inline one as its bytes (a range of the buffer `take` gets too).
    fn dequeue_raw_then<T>(
        &self,
        form: Form,
        timeout: Option<Duration>,
        mut take: impl FnMut(Packet, &[u8]) -> T,
    ) -> Result<Option<T>> {
        let deadline = Deadline::new(timeout);
        let mut inl = Vec::new();
        loop {
            {
                // (held until `take` has dealt with what was taken)
                let mut mark = Mark::new(self.values);
                if let Some(p) = self.try_dequeue_raw(form, &mut inl, &mut mark)? {
                    return Ok(Some(take(p, &inl)));
                }
            }
            let seen = self.seq_after_failed_try(WaitFor::NotEmpty);
            if deadline.passed() {
                self.values.reclaim_if_due();
                return Ok(None);
            }
            self.wait(WaitFor::NotEmpty, seen, deadline.get());
        }
    }

    /// Dequeue into a [`Shared`] handle (recorded in the ledger).
    pub fn dequeue_shared(&self, timeout: Option<Duration>) -> Result<Option<Shared<'a>>> {
        let values = self.values;
        self.dequeue_then(timeout, |s| Shared::from_owned(values, s))
    }

    /// Enqueue another reference to `v` (zero copy); false on timeout.
    pub fn enqueue_shared(&self, v: &Shared<'_>, timeout: Option<Duration>) -> Result<bool> {
        let held = {
            let _b = self.values.busy();
            self.values.retain(v.slot())?;
            self.values.hold(v.slot())
        };
        self.enqueue_recorded(v.slot(), held, timeout)
    }

    /// Enqueue a copy of `v`, waiting up to `timeout` for room (None:
    /// forever); false on timeout. As [`Queue::enqueue_wire_many`] of its
    /// encoding: inline if small, else stored in the pool, and nothing is
    /// built while it waits.
    pub fn enqueue_value(
        &self,
        v: &crate::value::Value,
        timeout: Option<Duration>,
    ) -> Result<bool> {
        // (inline if small, else stored; nothing is built while it waits)
        with_encoding(v, |enc| Ok(self.enqueue_wire_many(enc, 1, timeout)? == 1))
    }

    /// Dequeue and deep-copy the packet out (its reference is released); a
    /// packed packet's bytes are checked and decoded as they are, without
    /// building objects. The copy is made inside the mark of the dequeue.
    pub fn dequeue_value(&self, timeout: Option<Duration>) -> Result<Option<crate::value::Value>> {
        let values = self.values;
        let wire = self.dequeue_raw_then(Form::Copy, timeout, |p, inl| match p {
            Packet::Slot(s) => {
                let mut w = Writer::default();
                let copied = values.emit_owned(s, &mut w, 0);
                let released = values.release(s);
                copied.and(released).map(|()| Copied::Wire(w.buf))
            }
            Packet::Inline(r) => {
                let enc = &inl[r];
                if let Some(bytes) = lone_bytes(enc) {
                    // (a byte string's bytes are the value: no decoding)
                    return Ok(Copied::Value(crate::value::Value::Bytes(bytes.to_vec())));
                }
                check_inline(enc).map(|_| Copied::Wire(enc.to_vec()))
            }
            Packet::Damaged(e) => Err(e),
        })?;
        match wire {
            Some(Ok(Copied::Value(v))) => Ok(Some(v)),
            Some(Ok(Copied::Wire(buf))) => crate::value::Value::decode(&buf).map(Some),
            Some(Err(e)) => Err(e),
            None => Ok(None),
        }
    }

    /// The queue's blocks (header, slots) and the packets it holds, read
    /// without the lock (for `repair`, which runs alone).
    pub(crate) fn parts(&self) -> Result<(Vec<u64>, Vec<Slot>)> {
        let h = self.header;
        let (head, tail) = (h.head.load(Relaxed), h.tail.load(Relaxed));
        self.check_state(head, tail)?;
        let mut slots = Vec::new();
        for i in head..tail {
            // (an inline packet holds no object)
            let front = h.front_pos.load(Relaxed);
            let s = read_packet_slot(self.values, self.slot_of(head, front, i)?)?;
            if s.is_object() {
                slots.push(s);
            }
        }
        let ring = self.ring - RING_START;
        Ok((vec![self.block()?, self.slots, ring], slots))
    }

    /// Release every packet still queued (when a queue is torn down).
    pub fn drain(&self) -> Result<u64> {
        let mut n = 0;
        let mut inl = Vec::new();
        let mut mark = Mark::new(self.values);
        while let Some(p) = self.try_dequeue_raw(Form::Copy, &mut inl, &mut mark)? {
            // (a damaged inline packet is dropped as it is taken)
            if let Packet::Slot(s) = p {
                self.values.release(s)?;
            }
            inl.clear();
            n += 1;
        }
        Ok(n)
    }
}

/// How long a sleeper sleeps at most when the kernel's global barrier
/// failed for it ([`platform::sleeper_fence`]).
pub const SLICE_UNFENCED: Duration = Duration::from_millis(10);

/// A sleeper's side of the handshake with publishers (see
/// `Queue::signal`): counted in on a queue's sleeper count while it lives,
/// and counted out when dropped. Every thread that sleeps on a queue's
/// futex word, `Queue::wait` and the Node binding's waiter threads alike,
/// goes through it, so the order (count in, fence, the publishers'
/// barrier, then read the word and the counter) is written once.
pub struct Sleeper<'a> {
    count: &'a AtomicU32,
    /// None until [`Sleeper::fence_publishers`]; then whether the kernel's
    /// barrier ran.
    fenced: Option<bool>,
}

impl<'a> Sleeper<'a> {
    /// Count in on `count` (a queue's sleeper count for one direction,
    /// [`Queue::sleepers_offset`]), with a full fence after it.
    pub fn count_in(count: &'a AtomicU32) -> Sleeper<'a> {
        count.fetch_add(1, SeqCst);
        std::sync::atomic::fence(SeqCst);
        Sleeper {
            count,
            fenced: None,
        }
    }

    /// Run the publishers' fence (the kernel's global barrier, see
    /// `publish`), once however often it is called. Until it has run, a
    /// publisher storing its counter without a fence can miss this
    /// sleeper; read the word and the counter after it.
    pub fn fence_publishers(&mut self) {
        if self.fenced.is_none() {
            self.fenced = Some(platform::sleeper_fence());
        }
    }

    /// The longest sleep this sleeper may take at once, at most `want`:
    /// [`SLICE_UNFENCED`] when the barrier failed (or has not run), since
    /// a publisher may then miss it once and it must look again by itself.
    pub fn slice(&self, want: Duration) -> Duration {
        match self.fenced {
            Some(true) => want,
            _ => want.min(SLICE_UNFENCED),
        }
    }
}

impl Drop for Sleeper<'_> {
    fn drop(&mut self) {
        self.count.fetch_sub(1, Relaxed);
    }
}

/// How long a producer waiting for room first sleeps without running the
/// kernel's global barrier. Under load such a producer sleeps often (it
/// spins only briefly, see [`SPINS_FOR_ROOM`]), and each barrier
/// interrupts every CPU running a registered process: a barrier before
/// every such sleep took the batched row of `bash bench/rust.sh --only 5a`
/// from 40-44 ns to 62-66 ns a message (its producer slept about 1900
/// times a run). Without the barrier a consumer's unfenced publish can
/// miss the sleeper, which this nap bounds; and the consumer's next
/// dequeue, or its finding the queue empty (`found_empty`), wakes it
/// sooner. A producer still waiting after the nap runs the barrier and
/// sleeps on. (Not shorter: on this VM naps of 200 us or 1 ms, each
/// arming a timer that is then cancelled, kept the batched row at 52-55
/// ns; 10 ms gave 40-42, as did sleeping without a bound.) Consumers
/// waiting for packets spin for tens of microseconds first and run the
/// barrier before every sleep.
pub const FIRST_NAP: Duration = Duration::from_millis(10);

/// Publish a side's counter (`tail` or `head`) after everything it covers
/// was written (Release), ready for [`Queue::signal`]'s look at the
/// sleepers, which must not be ordered before this store (a StoreLoad).
/// Where this process is registered for the kernel's global barrier
/// ([`platform::fast_publish`]) a plain release store does: every sleeper
/// runs that barrier between counting itself in and reading the counter
/// (a producer's first nap aside, see [`FIRST_NAP`]), which fences this
/// side too, and `signal` keeps the compiler from moving its load up.
/// Otherwise the store and then a SeqCst fence, the fence on this side:
/// a fence, not a SeqCst store, so that a `signal` that finds the process
/// registered by then (registration ends on a thread of its own, see
/// [`platform::start_fast_publish`]) and loads the count Relaxed is still
/// ordered after this store.
fn publish(counter: &AtomicU64, v: u64) {
    counter.store(v, Release);
    if !platform::fast_publish() {
        std::sync::atomic::fence(SeqCst);
    }
}

/// A consumer's wait past its fixed spins: when it ends, by a packet, its
/// deadline or a slice that ran out, it sets the thread's next spin
/// ([`next_spin`]).
struct Learn<'c> {
    began: Instant,
    counter: &'c AtomicU64,
    seen: u32,
}

impl Drop for Learn<'_> {
    fn drop(&mut self) {
        let moved = self.counter.load(Relaxed) as u32 != self.seen;
        learn(self.began.elapsed(), moved);
    }
}

/// How long this thread's next wait for a packet spins on after its fixed
/// spins ([`SPIN_MORE`]); zero: not at all.
pub fn learnt_spin() -> Duration {
    SPIN_MORE.get()
}

/// Set this thread's next spin from a wait for a packet that took
/// `waited` in all and was (`moved`) or was not ended by one
/// ([`next_spin`]). A JS waiter thread learns through this too
/// (crates/shmtools-node/src/waiter.rs).
pub fn learn(waited: Duration, moved: bool) {
    SPIN_MORE.set(next_spin(waited, moved));
}

/// Spin on `counter` until its low 32 bits move on from `seen` (true), or
/// until `more` has passed since `began` or `give_up` says so (false);
/// the clock and `give_up` are looked at every 64 spins. Zero `more`: no
/// spin at all. A queue's consumer spins so on in [`Queue::wait`], and a
/// JS waiter thread before it sleeps.
pub fn spin_until_moved(
    counter: &AtomicU64,
    seen: u32,
    began: Instant,
    more: Duration,
    mut give_up: impl FnMut(Instant) -> bool,
) -> bool {
    let mut i = 0u32;
    while !more.is_zero() {
        if counter.load(Relaxed) as u32 != seen {
            return true;
        }
        std::hint::spin_loop();
        i = i.wrapping_add(1);
        if i.is_multiple_of(64) {
            let now = Instant::now();
            if now - began >= more || give_up(now) {
                break;
            }
        }
    }
    false
}

/// How long a consumer's next wait spins (counted from its start) after a
/// wait that got past [`SPINS`] and took `waited` in all: 1.5 times that, at most
/// [`SPIN_MAX`], if a packet (`moved`) ended it within [`SPIN_MAX`]; else
/// zero, which leaves the fixed [`SPINS`]. A stream whose packets come a
/// little too far apart for [`SPINS`] is met spinning from its second
/// packet on; a pipe gone quiet costs one longer spin, then none.
fn next_spin(waited: Duration, moved: bool) -> Duration {
    if moved && waited <= SPIN_MAX {
        (waited + waited / 2).min(SPIN_MAX)
    } else {
        Duration::ZERO
    }
}

/// Move a futex sequence on by one: SeqCst, so a waiter that sees the new
/// value also sees the slots written before it, and so the sleeper count
/// read next is ordered after it (see `Queue::signal`). A read-modify-write
/// even under a queue lock: a cancelled JS wait moves the sequences on
/// without the lock (crates/shmtools-node/src/waiter.rs).
fn bump(word: &AtomicU32) {
    word.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
}

fn header_at<'a>(values: Values<'a>, off: u64) -> Result<&'a QueueHeader> {
    let span = values.pool().span();
    if !off.is_multiple_of(64) {
        return Err(Error::corrupt(format!("queue offset {off} is misaligned")));
    }
    let p = span.ptr_at(off, QUEUE_HEADER_SIZE)?;
    // SAFETY: in bounds (ptr_at) and 16-aligned; QueueHeader is all atomics,
    // valid for any bit pattern.
    Ok(unsafe { &*(p as *const QueueHeader) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_deadline_counts_from_the_call_and_a_zero_or_absent_or_endless_one_reads_no_clock() {
        let never = Deadline::new(None);
        assert!(!never.passed());
        assert_eq!(never.get(), None);
        // A zero timeout has passed at once, and no clock was read for it.
        let zero = Deadline::new(Some(Duration::ZERO));
        assert!(zero.passed());
        assert!(zero.at.is_none());
        // A timeout longer than the clock counts is no deadline (no panic).
        let endless = Deadline::new(Some(Duration::MAX));
        assert!(!endless.passed());
        assert_eq!(endless.get(), None);
        // Otherwise the deadline is put when the call starts, and stays.
        let before = Instant::now();
        let long = Deadline::new(Some(Duration::from_secs(600)));
        let at = long.get().unwrap();
        assert!(at >= before + Duration::from_secs(600));
        assert!(!long.passed());
        assert_eq!(long.get(), Some(at));
        let short = Deadline::new(Some(Duration::from_millis(1)));
        let at = short.get().unwrap();
        while Instant::now() < at {
            std::hint::spin_loop();
        }
        assert!(short.passed());
    }

    #[test]
    fn a_queue_reopened_from_what_its_open_checked_is_the_same_queue_and_an_out_of_bounds_one_is_refused(
    ) {
        let sc = crate::scratch::Scratch::new("reopen", 1 << 20);
        let vals = sc.values();
        let q = Queue::open(vals, Queue::create(vals, 8).unwrap()).unwrap();
        let one = Slot {
            tag: crate::value::T_INT,
            bits: 11,
        };
        assert!(q.try_enqueue(one).unwrap());
        let o = q.opened();
        let again = Queue::reopen(vals, o).unwrap();
        assert_eq!(again.opened(), o);
        assert_eq!(again.capacity(), 8);
        assert_eq!(again.len(), 1);
        assert_eq!(again.try_dequeue().unwrap(), Some(one));
        assert!(q.is_empty());
        // A header out of the region's bounds is an error, not a wild access.
        let past = Opened {
            off: vals.pool().span().len() + 64,
            ..o
        };
        assert!(Queue::reopen(vals, past).is_err());
    }

    #[test]
    fn a_consumer_spins_longer_only_after_a_packet_came_soon_after_it_fell_asleep() {
        let us = Duration::from_micros;
        // Soon: spin half as long again next time, within the cap.
        assert_eq!(next_spin(us(100), true), us(150));
        assert_eq!(next_spin(us(200), true), SPIN_MAX);
        assert_eq!(next_spin(SPIN_MAX, true), SPIN_MAX);
        // Too late, or no packet (a timeout, a slice that ran out): back to
        // the fixed spins.
        assert_eq!(next_spin(SPIN_MAX + us(1), true), Duration::ZERO);
        assert_eq!(next_spin(Duration::from_secs(1), true), Duration::ZERO);
        assert_eq!(next_spin(us(100), false), Duration::ZERO);
    }

    #[test]
    fn a_wait_that_reaches_its_deadline_forgets_the_learnt_spin_and_one_met_at_once_keeps_it() {
        let sc = crate::scratch::Scratch::new("spin", 1 << 20);
        let vals = sc.values();
        let q = Queue::open(vals, Queue::create(vals, 4).unwrap()).unwrap();
        let e = WaitFor::NotEmpty;
        // Learnt from an earlier stream; the pipe is quiet now, and the
        // caller's deadline ends the wait while it spins: the spin must not
        // be kept for the next wait (it would spin out every short timeout).
        SPIN_MORE.set(SPIN_MAX);
        let seen = q.seq(e);
        let deadline = Instant::now() + Duration::from_micros(50);
        assert_eq!(q.wait(e, seen, Some(deadline)), platform::Wake::Woken);
        assert_eq!(SPIN_MORE.get(), Duration::ZERO);
        // A packet already there is seen in the fixed spins: nothing learnt.
        SPIN_MORE.set(SPIN_MAX);
        let seen = q.seq(e);
        assert!(q
            .try_enqueue(Slot {
                tag: crate::value::T_INT,
                bits: 1
            })
            .unwrap());
        assert_eq!(q.wait(e, seen, None), platform::Wake::Woken);
        assert_eq!(SPIN_MORE.get(), SPIN_MAX);
        // A producer's wait for room learns nothing.
        SPIN_MORE.set(Duration::ZERO);
        let f = WaitFor::NotFull;
        let deadline = Instant::now() + Duration::from_millis(1);
        q.wait(f, q.seq(f), Some(deadline));
        assert_eq!(SPIN_MORE.get(), Duration::ZERO);
    }

    #[test]
    fn a_producer_waits_for_a_run_of_room_only_while_it_spins() {
        assert_eq!(room_worth_taking(1), 1);
        assert_eq!(room_worth_taking(31), 1);
        assert_eq!(room_worth_taking(64), 4);
        assert_eq!(room_worth_taking(1024), 32);
        assert_eq!(room_worth_taking(MAX_CAPACITY), ROOM_RUN_MAX as u32);
        // A producer asleep on a full queue of 1024 (it wants 32 slots
        // while it spins) is let in by a single dequeue.
        let sc = crate::scratch::Scratch::new("room", 1 << 20);
        let vals = sc.values();
        let off = Queue::create(vals, 1024).unwrap();
        let q = Queue::open(vals, off).unwrap();
        let int = |bits| Slot {
            tag: crate::value::T_INT,
            bits,
        };
        for i in 0..1024 {
            assert!(q.try_enqueue(int(i)).unwrap());
        }
        std::thread::scope(|s| {
            let name = sc.region().name().to_string();
            let producer = s.spawn(move || {
                // (its own mapping: a region's values stay in one thread)
                let r = crate::region::Region::attach(&name, &Default::default()).unwrap();
                let q = Queue::open(r.values().unwrap(), off).unwrap();
                assert!(!q.try_enqueue(int(1024)).unwrap());
                let seen = q.seq_after_failed_try(WaitFor::NotFull);
                // (TimedOut: a whole slice of a second went by unwoken)
                let woke = q.wait(WaitFor::NotFull, seen, None);
                (woke, q.try_enqueue(int(1024)))
            });
            let asleep = Instant::now() + Duration::from_secs(20);
            while q.sleepers(WaitFor::NotFull).load(SeqCst) == 0 {
                assert!(Instant::now() < asleep, "the producer never slept");
                std::thread::sleep(Duration::from_millis(1));
            }
            assert_eq!(q.try_dequeue().unwrap(), Some(int(0)));
            let (woke, got_in) = producer.join().unwrap();
            assert_eq!(woke, platform::Wake::Woken);
            assert!(got_in.unwrap());
        });
        assert_eq!(q.len(), 1024);
    }
}
