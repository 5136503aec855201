//! CQ: a bounded multi-producer multi-consumer queue of value slots in a
//! region, with futex wake-ups between processes.
//!
//! A ring of `capacity` slots guarded by a process-shared [`ShmMutex`]; `head`
//! and `tail` count dequeues and enqueues since creation. Two futex words are
//! sequence numbers: `not_empty` is bumped by every enqueue, `not_full` by
//! every dequeue. A blocked caller notes the word's value under the lock,
//! lets go of the lock, and sleeps while the word still has that value, so a
//! wake-up between the two cannot be lost. Sleepers are counted, so the
//! common case (nobody asleep) makes no system call.
//!
//! Crash safety: an enqueue writes the slot, then advances `tail`; a dequeue
//! takes the slot out, empties it, then advances `head`. A process killed in
//! between leaves either an unpublished slot (its message, lost with it) or an
//! empty slot at the head, which the next dequeue skips. No message is ever
//! delivered twice.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::holders::Held;
use crate::lock::ShmMutex;
use crate::platform;
use crate::value::{Shared, Slot, Values, SLOT_SIZE, S_EMPTY};

pub const QUEUE_MAGIC: u64 = u64::from_le_bytes(*b"SHMQUEUE");
/// Most packets a queue may hold.
pub const MAX_CAPACITY: u64 = 1 << 24;
/// Spins on the futex word before sleeping (a message often arrives within a
/// few microseconds when the other side is running on another core).
const SPINS: u32 = 4000;

/// Shared-memory layout of a queue header (96 bytes).
#[repr(C)]
pub struct QueueHeader {
    pub magic: AtomicU64,
    pub lock: ShmMutex,
    pub capacity: AtomicU64,
    /// Dequeues so far; the next packet is at `head % capacity`.
    pub head: AtomicU64,
    /// Enqueues so far; the next free slot is at `tail % capacity`.
    pub tail: AtomicU64,
    /// Offset of the slots block (capacity × 16 bytes).
    pub slots: AtomicU64,
    /// Futex sequence bumped by every enqueue.
    pub not_empty: AtomicU32,
    /// Futex sequence bumped by every dequeue.
    pub not_full: AtomicU32,
    /// Callers asleep waiting for a packet / for room.
    pub sleepers_empty: AtomicU32,
    pub sleepers_full: AtomicU32,
    /// Deepest the queue has been.
    pub high_water: AtomicU64,
    pub total_enqueued: AtomicU64,
    pub total_dequeued: AtomicU64,
}

pub const QUEUE_HEADER_SIZE: u64 = std::mem::size_of::<QueueHeader>() as u64;
const _: () = assert!(QUEUE_HEADER_SIZE == 96);
const _: () = assert!(std::mem::offset_of!(QueueHeader, lock) == 8);
const _: () = assert!(std::mem::offset_of!(QueueHeader, capacity) == 24);
const _: () = assert!(std::mem::offset_of!(QueueHeader, head) == 32);
const _: () = assert!(std::mem::offset_of!(QueueHeader, tail) == 40);
const _: () = assert!(std::mem::offset_of!(QueueHeader, slots) == 48);
const _: () = assert!(std::mem::offset_of!(QueueHeader, not_empty) == 56);
const _: () = assert!(std::mem::offset_of!(QueueHeader, not_full) == 60);
const _: () = assert!(std::mem::offset_of!(QueueHeader, sleepers_empty) == 64);
const _: () = assert!(std::mem::offset_of!(QueueHeader, sleepers_full) == 68);
const _: () = assert!(std::mem::offset_of!(QueueHeader, high_water) == 72);
const _: () = assert!(std::mem::offset_of!(QueueHeader, total_enqueued) == 80);
const _: () = assert!(std::mem::offset_of!(QueueHeader, total_dequeued) == 88);

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
}

impl<'a> Queue<'a> {
    /// Allocate and lay out a new empty queue; returns its offset.
    pub fn create(values: Values<'a>, capacity: u64) -> Result<u64> {
        validate_capacity(capacity)?;
        let pool = values.pool();
        let off = pool.allocate(QUEUE_HEADER_SIZE)?;
        let slots = match pool.allocate(capacity * SLOT_SIZE) {
            Ok(s) => s,
            Err(e) => {
                pool.free(off)?;
                return Err(e);
            }
        };
        let span = pool.span();
        span.fill(off, QUEUE_HEADER_SIZE, 0)?;
        span.fill(slots, capacity * SLOT_SIZE, 0)?;
        let h = header_at(values, off)?;
        h.lock.init();
        h.capacity.store(capacity, Relaxed);
        h.slots.store(slots, Relaxed);
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
        // it (the pipe directory, queue headers, the holder table, tables
        // and lists) starts with a magic number or an object header, and
        // neither reads as a slot tag; the slots block starts with a slot
        // (zeroed at creation, only ever rewritten with slots).
        if Slot::read_at(values, slots).is_err() {
            return Err(Error::corrupt(format!(
                "queue at {off}: its slots link names block {slots}, which does not hold slots"
            )));
        }
        Ok(Queue {
            values,
            header: h,
            off,
            capacity,
            slots,
        })
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

    /// Packets in the queue now.
    pub fn len(&self) -> u64 {
        let h = self.header;
        h.tail
            .load(Relaxed)
            .saturating_sub(h.head.load(Relaxed))
            .min(self.capacity)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn stats(&self) -> QueueStats {
        let h = self.header;
        QueueStats {
            depth: self.len(),
            capacity: self.capacity,
            high_water: h.high_water.load(Relaxed),
            total_enqueued: h.total_enqueued.load(Relaxed),
            total_dequeued: h.total_dequeued.load(Relaxed),
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
                WaitFor::NotEmpty => 56,
                WaitFor::NotFull => 60,
            }
    }

    /// The current value of a futex sequence word. Read it *before* a failed
    /// try_*: a change after that means "try again".
    pub fn seq(&self, w: WaitFor) -> u32 {
        self.word(w).load(std::sync::atomic::Ordering::Acquire)
    }

    fn sleepers(&self, w: WaitFor) -> &'a AtomicU32 {
        match w {
            WaitFor::NotEmpty => &self.header.sleepers_empty,
            WaitFor::NotFull => &self.header.sleepers_full,
        }
    }

    fn lock(&self) -> crate::lock::Guard<'a> {
        // A holder that died mid-operation leaves at worst an unpublished or
        // an empty slot, both handled below; nothing to rebuild.
        self.header.lock.lock()
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
        let g = self.lock();
        let h = self.header;
        let (head, tail) = (h.head.load(Relaxed), h.tail.load(Relaxed));
        self.check_state(head, tail)?;
        if tail - head == self.capacity {
            return Ok(false);
        }
        // The counters only grow; one at the end of its range was written
        // by someone else, and moving it on would overflow.
        let next = tail.checked_add(1).ok_or_else(|| {
            Error::corrupt(format!(
                "queue at {}: its tail counter is at the end of its range",
                self.off
            ))
        })?;
        slot.write_at(self.values, self.slots + (tail % self.capacity) * SLOT_SIZE)?;
        h.tail.store(next, Relaxed);
        let depth = next - head;
        if depth > h.high_water.load(Relaxed) {
            h.high_water.store(depth, Relaxed);
        }
        h.total_enqueued.fetch_add(1, Relaxed);
        h.not_empty
            .fetch_add(1, std::sync::atomic::Ordering::Release);
        drop(g);
        if h.sleepers_empty.load(Relaxed) > 0 {
            platform::futex_wake(&h.not_empty, 1);
        }
        Ok(true)
    }

    /// Dequeue without waiting; the returned slot's reference is the caller's.
    pub fn try_dequeue(&self) -> Result<Option<Slot>> {
        let g = self.lock();
        let h = self.header;
        // Each round moves head one step towards tail, at most `capacity`
        // away (check_state), so a round more than that means the counters
        // are being rewritten under our lock: the loop does not trust them
        // to end it.
        for _ in 0..=self.capacity {
            let (head, tail) = (h.head.load(Relaxed), h.tail.load(Relaxed));
            self.check_state(head, tail)?;
            if head == tail {
                return Ok(None);
            }
            let at = self.slots + (head % self.capacity) * SLOT_SIZE;
            let slot = Slot::read_at(self.values, at)?;
            Slot::EMPTY.write_at(self.values, at)?;
            h.head.store(head + 1, Relaxed);
            h.total_dequeued.fetch_add(1, Relaxed);
            h.not_full
                .fetch_add(1, std::sync::atomic::Ordering::Release);
            if slot.tag == S_EMPTY {
                // Left by a dequeuer that died between emptying and advancing.
                continue;
            }
            drop(g);
            if h.sleepers_full.load(Relaxed) > 0 {
                platform::futex_wake(&h.not_full, 1);
            }
            return Ok(Some(slot));
        }
        Err(Error::corrupt(format!(
            "queue at {}: more empty slots than its capacity {}",
            self.off, self.capacity
        )))
    }

    /// Sleep until the word `w` moves on from `seen`, or `deadline` passes,
    /// spinning a little first. Callers recheck their condition either way.
    pub fn wait(&self, w: WaitFor, seen: u32, deadline: Option<Instant>) {
        let word = self.word(w);
        for _ in 0..SPINS {
            if word.load(Relaxed) != seen {
                return;
            }
            std::hint::spin_loop();
        }
        // Slices of at most a second, so a sleeper whose wake-up was lost to
        // a crashed peer still rechecks.
        let mut slice = Duration::from_secs(1);
        if let Some(d) = deadline {
            slice = slice.min(d.saturating_duration_since(Instant::now()));
            if slice.is_zero() {
                return;
            }
        }
        let sleepers = self.sleepers(w);
        sleepers.fetch_add(1, Relaxed);
        platform::futex_wait(word, seen, Some(slice));
        sleepers.fetch_sub(1, Relaxed);
    }

    /// Enqueue, waiting up to `timeout` for room (None: forever). On
    /// `Ok(false)` (timed out) the caller still owns the slot.
    ///
    /// While it waits, the slot is recorded in the process's ledger (when the
    /// queue's values have a session), so a process killed while blocked on
    /// a full pipe gives its packet back.
    pub fn enqueue(&self, slot: Slot, timeout: Option<Duration>) -> Result<bool> {
        self.enqueue_recorded(slot, None, timeout)
    }

    /// [`Queue::enqueue`] of a slot the caller already recorded in its
    /// ledger (`held`): it leaves the ledger as it enters the queue. On
    /// `Ok(false)` or an error the caller owns the slot again, unrecorded.
    pub fn enqueue_recorded(
        &self,
        slot: Slot,
        mut held: Option<Held>,
        timeout: Option<Duration>,
    ) -> Result<bool> {
        let deadline = timeout.map(|t| Instant::now() + t);
        loop {
            let seen = self.seq(WaitFor::NotFull);
            {
                let _b = self.values.busy();
                if !self.values.unhold(held.take())? {
                    return Err(Error::new(
                        crate::error::ErrorCode::Closed,
                        "the region was closed while enqueueing",
                    ));
                }
                if self.try_enqueue(slot)? {
                    return Ok(true);
                }
                if deadline.is_some_and(|d| Instant::now() >= d) {
                    self.values.reclaim_if_due();
                    return Ok(false);
                }
                held = self.values.hold(slot).ok().flatten();
            }
            // (once the deadline has passed, this returns at once and the
            // next round answers false)
            self.wait(WaitFor::NotFull, seen, deadline);
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
        let deadline = timeout.map(|t| Instant::now() + t);
        loop {
            let seen = self.seq(WaitFor::NotEmpty);
            {
                let _b = self.values.busy();
                if let Some(s) = self.try_dequeue()? {
                    return Ok(Some(take(s)));
                }
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                self.values.reclaim_if_due();
                return Ok(None);
            }
            self.wait(WaitFor::NotEmpty, seen, deadline);
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
            self.values.hold(v.slot()).ok().flatten()
        };
        match self.enqueue_recorded(v.slot(), held, timeout) {
            Ok(true) => Ok(true),
            other => {
                let _b = self.values.busy();
                let _ = self.values.release(v.slot());
                other
            }
        }
    }

    /// Store `v` and enqueue it; on timeout the stored copy is released again.
    pub fn enqueue_value(
        &self,
        v: &crate::value::Value,
        timeout: Option<Duration>,
    ) -> Result<bool> {
        let (slot, held) = {
            let _b = self.values.busy();
            let slot = self.values.store(v)?;
            (slot, self.values.hold(slot).ok().flatten())
        };
        match self.enqueue_recorded(slot, held, timeout) {
            Ok(true) => Ok(true),
            other => {
                let _b = self.values.busy();
                let _ = self.values.release(slot);
                other
            }
        }
    }

    /// Dequeue and deep-copy the packet out (its reference is released).
    pub fn dequeue_value(&self, timeout: Option<Duration>) -> Result<Option<crate::value::Value>> {
        match self.dequeue_shared(timeout)? {
            Some(s) => s.load().map(Some),
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
            let s = Slot::read_at(self.values, self.slots + (i % self.capacity) * SLOT_SIZE)?;
            if s.is_object() {
                slots.push(s);
            }
        }
        Ok((vec![self.off, self.slots], slots))
    }

    /// Release every packet still queued (when a queue is torn down).
    pub fn drain(&self) -> Result<u64> {
        let mut n = 0;
        while let Some(s) = self.try_dequeue()? {
            self.values.release(s)?;
            n += 1;
        }
        Ok(n)
    }
}

fn header_at<'a>(values: Values<'a>, off: u64) -> Result<&'a QueueHeader> {
    let span = values.pool().span();
    if !off.is_multiple_of(16) {
        return Err(Error::corrupt(format!("queue offset {off} is misaligned")));
    }
    let p = span.ptr_at(off, QUEUE_HEADER_SIZE)?;
    // SAFETY: in bounds (ptr_at) and 16-aligned; QueueHeader is all atomics,
    // valid for any bit pattern.
    Ok(unsafe { &*(p as *const QueueHeader) })
}
