//! `NativeQueue`: one pipe's CQ as JavaScript sees it. Values cross as wire
//! bytes (a shared handle as a T_REF, so enqueueing it moves a reference, not a
//! copy); what comes out is a handle for containers and typed arrays, wire
//! bytes for the rest.

use std::sync::Arc;
use std::time::Duration;

use napi::bindgen_prelude::{Buffer, BufferSlice, Either, External, Object, Unknown};
use napi::JsString;
use napi::{Env, Result};
use napi_derive::napi;
use shmtools_core::queue::{Opened, Queue, WaitFor};
use shmtools_core::value::shape_code_packets;
use shmtools_core::value::wire::Writer;
use shmtools_core::{Directory, ErrorCode};

use crate::convert::{err, js, to_u64};
use crate::region::{NativeRegion, RegionCell};
use crate::value::{from_slot, give_back_all, Out};
use crate::waiter::{self, Job};

#[napi(object)]
pub struct PipeStats {
    pub depth: f64,
    pub capacity: f64,
    pub high_water: f64,
    pub total_enqueued: f64,
    pub total_dequeued: f64,
}

#[napi(object)]
pub struct PipeEntry {
    pub name: String,
    pub capacity: f64,
    pub creator_pid: u32,
    pub created_at_ms: f64,
    pub queue_offset: f64,
    /// The pool block the queue header lives in (the header is 16 to 64
    /// bytes into it; for tools and white-box tests), -1 if the header is
    /// damaged.
    pub queue_block: f64,
}

/// What a pipe call needs: the region and the queue's offset. It is behind
/// the `NativeQueue` class (capacity, stats, waits), the napi-rs external
/// the batch calls take (the `pipe_*` functions below) and the tagged
/// external of the hand-written per-message calls (fastcall.rs): napi-rs
/// checks each call on a class instance against a process-wide table of
/// borrows, which cost about 170 ns a call here, and wraps every generated
/// call in a borrow scope, about 75 ns more than a plain Node-API call
/// (docs/BENCHMARKS.md, "Calls into native code per message" and "One
/// message at a time").
pub struct PipeRef {
    cell: Arc<RegionCell>,
    off: u64,
    /// Bytes the last copied batch took: the next one's first guess, so its
    /// buffer is sized once instead of grown by doubling.
    copy_hint: std::cell::Cell<usize>,
    /// What the first open checked of the queue's header, so later calls
    /// skip the checks (see `Queue::reopen`).
    opened: std::cell::Cell<Option<Opened>>,
    /// The buffer a one-packet copy is read into, kept between calls
    /// (`dequeue_copy`; one larger than a Buffer's worth leaves with it).
    copy_buf: std::cell::RefCell<Vec<u8>>,
}

#[napi]
pub struct NativeQueue {
    p: PipeRef,
}

fn which(w: u32) -> Result<WaitFor> {
    match w {
        0 => Ok(WaitFor::NotEmpty),
        1 => Ok(WaitFor::NotFull),
        _ => Err(err(
            ErrorCode::InvalidArg,
            "wait kind must be 0 (not empty) or 1 (not full)",
        )),
    }
}

/// A timeout in ms from JS (None: forever), checked.
/// Largest copy handed to JavaScript as a latin1 string (with its flag
/// character); a longer one comes as a Buffer (see pipe_dequeue_many_copy).
const COPY_AS_TEXT_MAX: usize = 64 << 10;

fn timeout(ms: Option<f64>) -> Result<Option<Duration>> {
    match ms {
        None => Ok(None),
        Some(t) if t.is_infinite() && t > 0.0 => Ok(None),
        // (a finite timeout longer than a Duration holds, some 10^22 ms,
        // waits as long as forever does)
        Some(t) if t.is_finite() && t >= 0.0 => Ok(Duration::try_from_secs_f64(t / 1000.0).ok()),
        Some(t) => Err(err(
            ErrorCode::InvalidArg,
            format!("timeoutMs must be a number >= 0, got {t}"),
        )),
    }
}

impl NativeQueue {
    fn new(cell: &Arc<RegionCell>, off: u64) -> NativeQueue {
        NativeQueue {
            p: PipeRef::new(cell, off),
        }
    }
}

/// Try `take` once; if it finds nothing, spin on the pipe's futex word for
/// up to `spin_us` (at most 1 ms), trying again each time the word moves;
/// None if nothing came (no sleep). The clock is read only once the first
/// try found nothing.
fn spin_for<T>(
    q: &Queue<'_>,
    spin_us: u32,
    mut take: impl FnMut() -> Result<Option<T>>,
) -> Result<Option<T>> {
    let mut until = None;
    loop {
        let seen = q.seq(WaitFor::NotEmpty);
        if let Some(v) = take()? {
            return Ok(Some(v));
        }
        let end = *until.get_or_insert_with(|| {
            std::time::Instant::now() + Duration::from_micros(spin_us.min(1000) as u64)
        });
        while q.seq(WaitFor::NotEmpty) == seen {
            if std::time::Instant::now() >= end {
                return Ok(None);
            }
            std::hint::spin_loop();
        }
    }
}

impl PipeRef {
    fn new(cell: &Arc<RegionCell>, off: u64) -> PipeRef {
        PipeRef {
            cell: cell.clone(),
            off,
            copy_hint: std::cell::Cell::new(256),
            opened: std::cell::Cell::new(None),
            copy_buf: std::cell::RefCell::new(Vec::new()),
        }
    }

    fn queue(&self) -> Result<Queue<'_>> {
        let v = self.cell.open()?.values().map_err(js)?;
        if let Some(o) = self.opened.get() {
            return Queue::reopen(v, o).map_err(js);
        }
        let q = Queue::open(v, self.off).map_err(js)?;
        self.opened.set(Some(q.opened()));
        Ok(q)
    }
}

#[napi]
impl NativeQueue {
    #[napi(getter)]
    pub fn capacity(&self) -> Result<f64> {
        self.p.capacity()
    }

    #[napi(getter)]
    pub fn length(&self) -> Result<f64> {
        self.p.length()
    }

    #[napi(catch_unwind)]
    pub fn stats(&self) -> Result<PipeStats> {
        self.p.stats()
    }

    /// The futex sequence for `kind` (0 not empty, 1 not full); read it before
    /// a failed attempt, then wait for it to move.
    #[napi(catch_unwind)]
    pub fn seq(&self, kind: u32) -> Result<u32> {
        self.p.seq(kind)
    }

    /// Resolve once the `kind` sequence moves on from `seen` (0), after
    /// `timeout_ms` (1), or when cancel_wait(id) is called (2). Sleeps on one
    /// of shmtools' own threads, never on the event loop or libuv's pool.
    #[napi(catch_unwind)]
    pub fn wait_change<'env>(
        &self,
        env: &'env Env,
        kind: u32,
        seen: u32,
        timeout_ms: Option<f64>,
        id: u32,
    ) -> Result<Object<'env>> {
        self.p.wait_change(env, kind, seen, timeout_ms, id)
    }

    /// This pipe as an external, for the batch calls (`pipe_*`).
    #[napi(catch_unwind)]
    pub fn fast(&self) -> External<PipeRef> {
        External::new(PipeRef::new(&self.p.cell, self.p.off))
    }

    /// This pipe as the external the hand-written calls take (fastcall.rs).
    #[napi(catch_unwind, ts_return_type = "object")]
    pub fn raw<'env>(&self, env: &'env Env) -> Result<Unknown<'env>> {
        let v = crate::fastcall::pipe_external(env, PipeRef::new(&self.p.cell, self.p.off))?;
        // SAFETY: `v` is a value just made in this environment.
        Ok(unsafe { Unknown::from_raw_unchecked(env.raw(), v) })
    }
}

impl PipeRef {
    pub fn capacity(&self) -> Result<f64> {
        Ok(self.queue()?.capacity() as f64)
    }

    pub fn length(&self) -> Result<f64> {
        Ok(self.queue()?.len() as f64)
    }

    pub fn stats(&self) -> Result<PipeStats> {
        let s = self.queue()?.stats();
        Ok(PipeStats {
            depth: s.depth as f64,
            capacity: s.capacity as f64,
            high_water: s.high_water as f64,
            total_enqueued: s.total_enqueued as f64,
            total_dequeued: s.total_dequeued as f64,
        })
    }

    pub fn enqueue(&self, wire: &[u8], timeout_ms: Option<f64>) -> Result<bool> {
        let t = timeout(timeout_ms)?;
        let q = self.queue()?;
        // A try (no wait) on a full pipe: say so before reading the value
        // (the async form retries this way on every wake-up). The real
        // enqueue still rechecks.
        if t == Some(Duration::ZERO) && q.len() >= q.capacity() {
            return Ok(false);
        }
        Ok(q.enqueue_wire_many(wire, 1, t).map_err(js)? == 1)
    }

    pub fn enqueue_many(&self, wire: &[u8], count: u32, timeout_ms: Option<f64>) -> Result<u32> {
        let t = timeout(Some(timeout_ms.unwrap_or(0.0)))?;
        let q = self.queue()?;
        let sent = q.enqueue_wire_many(wire, count as usize, t).map_err(js)?;
        Ok(sent as u32)
    }

    pub fn dequeue(&self, timeout_ms: Option<f64>) -> Result<Option<Out>> {
        let t = timeout(timeout_ms)?;
        self.queue()?
            .dequeue_then(t, |s| from_slot(&self.cell, s))
            .map_err(js)?
            .transpose()
    }

    pub fn dequeue_spin(&self, spin_us: u32) -> Result<Option<Out>> {
        let q = self.queue()?;
        spin_for(&q, spin_us, || {
            // (the handle is made inside the mark, as every dequeue does)
            let _b = q.values().busy();
            q.try_dequeue()
                .map_err(js)?
                .map(|s| from_slot(&self.cell, s))
                .transpose()
        })
    }

    pub fn dequeue_many(&self, max: u32, timeout_ms: Option<f64>) -> Result<Vec<Out>> {
        let t = timeout(Some(timeout_ms.unwrap_or(0.0)))?;
        let q = self.queue()?;
        // Each packet gets its owner inside the in-progress mark of the
        // dequeue: a handle (recorded in the ledger as it is made) or a plain
        // value (copied out and released). from_slot consumes its reference
        // even when it fails, so a failed one is not released again here.
        let (out, first) = q
            .dequeue_many_then(max as usize, t, |slots| {
                let mut out = Vec::with_capacity(slots.len());
                let mut first = None;
                for s in slots {
                    match from_slot(&self.cell, s) {
                        Ok(o) => out.push(o),
                        Err(e) => {
                            first.get_or_insert(e);
                        }
                    }
                }
                (out, first)
            })
            .map_err(js)?;
        match first {
            Some(e) => {
                // (JavaScript will never see the handles made: give them back)
                give_back_all(&self.cell, out);
                Err(e)
            }
            None => Ok(out),
        }
    }

    pub fn dequeue_many_copy<'env>(
        &self,
        env: &'env Env,
        max: u32,
        timeout_ms: Option<f64>,
    ) -> Result<Either<JsString<'env>, Buffer>> {
        let t = timeout(Some(timeout_ms.unwrap_or(0.0)))?;
        let q = self.queue()?;
        let mut w = Writer {
            buf: Vec::with_capacity(self.copy_hint.get()),
            non_ascii: false,
        };
        w.u8(0); // the flag, set below
        let mut ends = Vec::with_capacity(max.min(4096) as usize);
        q.dequeue_many_wire_unchecked(max as usize, t, &mut w, &mut ends)
            .map_err(js)?;
        self.copy_hint.set(w.buf.len().clamp(256, 1 << 20));
        if ends.is_empty() {
            return env.create_string_latin1(b"").map(Either::A);
        }
        // Shape coded for the JS reader (see shmtools_core::value::shape_code),
        // which usually shrinks a batch of messages by a third; the limit is
        // on what crosses. The coding is also the check of the packed
        // packets' bytes, copied out unchecked.
        let (mut text, non_ascii) = shape_code_packets(&w.buf, 1, &ends).map_err(js)?;
        text[0] = non_ascii as u8;
        if text.len() > COPY_AS_TEXT_MAX {
            // Too long for text: a Buffer, without the flag (moved down in
            // place, not copied into a new vector).
            text.drain(..1);
            return Ok(Either::B(text.into()));
        }
        env.create_string_latin1(&text).map(Either::A)
    }

    /// One packet copied out, as [`pipe_dequeue_copy`] describes.
    pub fn dequeue_copy<'env>(
        &self,
        env: &'env Env,
        timeout_ms: Option<f64>,
        spin_us: u32,
    ) -> Result<Either<JsString<'env>, Buffer>> {
        let t = timeout(timeout_ms)?;
        let q = self.queue()?;
        // (this pipe's buffer, kept from the last call: no allocation)
        let mut w = Writer {
            buf: self.copy_buf.take(),
            non_ascii: false,
        };
        w.buf.clear();
        w.u8(0); // the flag, set below
        let got = if spin_us == 0 {
            q.dequeue_many_wire(1, t, &mut w).map_err(js)?
        } else {
            spin_for(&q, spin_us, || {
                let n = q
                    .dequeue_many_wire(1, Some(Duration::ZERO), &mut w)
                    .map_err(js)?;
                Ok((n > 0).then_some(n))
            })?
            .unwrap_or(0)
        };
        if got == 0 {
            self.copy_buf.replace(w.buf);
            return env.create_string_latin1(b"").map(Either::A);
        }
        if w.buf.len() > COPY_AS_TEXT_MAX {
            // Too long for text: a Buffer of the encoding, without the flag
            // (this buffer goes with it; the next call starts a new one).
            w.buf.drain(..1);
            return Ok(Either::B(w.buf.into()));
        }
        w.buf[0] = w.non_ascii as u8;
        let out = env.create_string_latin1(&w.buf).map(Either::A);
        self.copy_buf.replace(w.buf);
        out
    }

    pub fn seq(&self, kind: u32) -> Result<u32> {
        Ok(self.queue()?.seq(which(kind)?))
    }

    pub fn wait_change<'env>(
        &self,
        env: &'env Env,
        kind: u32,
        seen: u32,
        timeout_ms: Option<f64>,
        id: u32,
    ) -> Result<Object<'env>> {
        let w = which(kind)?;
        let q = self.queue()?;
        let deadline = shmtools_core::platform::deadline(timeout(timeout_ms)?);
        waiter::park(
            env,
            Job {
                cell: self.cell.clone(),
                word: q.word_offset(w),
                counter: Some((q.counter_offset(w), q.sleepers_offset(w))),
                for_packet: w == WaitFor::NotEmpty,
                seen,
                deadline,
                id,
            },
        )
    }
}

/// Enqueue as many of the `count` concatenated encoded values as fit,
/// waiting up to `timeout_ms` for room for the first (undefined or 0: no
/// wait; Infinity: forever); returns how many went in (the rest were not
/// stored). Built in batches under one hold of the pool lock each, and
/// enqueued under one hold of the pipe's producers' lock each.
#[napi(catch_unwind)]
pub fn pipe_enqueue_many(
    p: &External<PipeRef>,
    wire: BufferSlice,
    count: u32,
    timeout_ms: Option<f64>,
) -> Result<u32> {
    p.enqueue_many(&wire, count, timeout_ms)
}

/// Dequeue up to `max` packets, waiting up to `timeout_ms` for the first
/// (undefined or 0: no wait; Infinity: forever), as handles and values.
#[napi(catch_unwind)]
pub fn pipe_dequeue_many(
    p: &External<PipeRef>,
    max: u32,
    timeout_ms: Option<f64>,
) -> Result<Vec<Out>> {
    p.dequeue_many(max, timeout_ms)
}

/// Dequeue up to `max` packets, waiting up to `timeout_ms` for the first
/// (undefined or 0: no wait; Infinity: forever), and return deep copies of
/// them as concatenated encodings; the packets are released here, their
/// blocks going back to the pool together. Up to 64 KiB of encodings come
/// as a string, one character per byte (latin1), after a flag character
/// (0: every string in the batch is ASCII, 1: not): JavaScript reads that
/// faster than a Buffer (see decodeBatch in src/wire.ts), shape coded
/// (repeated key lists named by number; the 64 KiB are after coding).
/// Larger batches come as a Buffer of the encodings alone (shape coded
/// too). Nothing came: an empty string.
#[napi(catch_unwind)]
pub fn pipe_dequeue_many_copy<'env>(
    env: &'env Env,
    p: &External<PipeRef>,
    max: u32,
    timeout_ms: Option<f64>,
) -> Result<Either<JsString<'env>, Buffer>> {
    p.dequeue_many_copy(env, max, timeout_ms)
}

/// Check a pipe name (and a capacity, if given) against the core's rules.
#[napi(catch_unwind)]
pub fn check_pipe_args(name: String, capacity: Option<f64>) -> Result<()> {
    shmtools_core::pipes::validate_pipe_name(&name).map_err(js)?;
    if let Some(c) = capacity {
        shmtools_core::queue::validate_capacity(to_u64(c, "capacity")?).map_err(js)?;
    }
    Ok(())
}

/// Stop a parked wait started by wait_change / wait_pipes (AbortSignal).
#[napi(catch_unwind)]
pub fn cancel_wait(id: u32) {
    waiter::cancel(id);
}

#[napi]
impl NativeRegion {
    fn directory_cell(&self) -> Result<&Arc<RegionCell>> {
        let cell = self.cell_ref()?;
        Directory::open(&cell.region).map_err(js)?;
        Ok(cell)
    }

    /// Create pipe `name` (or join it, if it exists with this capacity).
    #[napi(catch_unwind)]
    pub fn create_pipe(&self, name: String, capacity: f64) -> Result<NativeQueue> {
        let cap = to_u64(capacity, "capacity")?;
        let cell = self.directory_cell()?;
        let dir = Directory::open(&cell.region).map_err(js)?;
        let (p, _created) = dir.create(&name, cap).map_err(js)?;
        Ok(NativeQueue::new(cell, p.queue))
    }

    /// The pipe called `name`, or null if it does not exist yet.
    #[napi(catch_unwind)]
    pub fn find_pipe(&self, name: String) -> Result<Option<NativeQueue>> {
        let cell = self.directory_cell()?;
        let dir = Directory::open(&cell.region).map_err(js)?;
        let found = dir.find(&name).map_err(js)?;
        match found {
            Some(p) => {
                dir.queue(&p).map_err(js)?;
                Ok(Some(NativeQueue::new(cell, p.queue)))
            }
            None => Ok(None),
        }
    }

    #[napi(catch_unwind)]
    pub fn list_pipes(&self) -> Result<Vec<PipeEntry>> {
        let cell = self.directory_cell()?;
        let dir = Directory::open(&cell.region).map_err(js)?;
        let pipes = dir.list().map_err(js)?;
        Ok(pipes
            .into_iter()
            .map(|p| {
                // (a damaged queue still lists, as -1: this is for tools)
                let block = dir.queue(&p).and_then(|q| q.block());
                PipeEntry {
                    name: p.name,
                    capacity: p.capacity as f64,
                    creator_pid: p.creator_pid,
                    created_at_ms: p.created_unix_ms as f64,
                    queue_offset: p.queue as f64,
                    queue_block: block.map_or(-1.0, |b| b as f64),
                }
            })
            .collect())
    }

    /// The directory's version (bumped when a pipe is added).
    #[napi(catch_unwind)]
    pub fn pipes_version(&self) -> Result<u32> {
        let cell = self.directory_cell()?;
        Ok(Directory::open(&cell.region).map_err(js)?.version())
    }

    /// Block this thread until a pipe is added after `seen` or `timeout_ms`
    /// passes (the sync ClientSide.start; the facade calls it in slices so a
    /// breakChecker still runs).
    #[napi(catch_unwind)]
    pub fn wait_pipes_sync(&self, seen: u32, timeout_ms: f64) -> Result<()> {
        let cell = self.directory_cell()?;
        let dir = Directory::open(&cell.region).map_err(js)?;
        let t = timeout(Some(timeout_ms))?.unwrap_or(Duration::from_secs(1));
        let word = cell
            .region
            .span()
            .u32_at(dir.version_offset())
            .map_err(js)?;
        shmtools_core::platform::futex_wait(word, seen, Some(t));
        Ok(())
    }

    /// Resolve when a pipe is added after `seen`, or on timeout / cancel.
    #[napi(catch_unwind)]
    pub fn wait_pipes<'env>(
        &self,
        env: &'env Env,
        seen: u32,
        timeout_ms: Option<f64>,
        id: u32,
    ) -> Result<Object<'env>> {
        let cell = self.directory_cell()?;
        let word = Directory::open(&cell.region).map_err(js)?.version_offset();
        let deadline = shmtools_core::platform::deadline(timeout(timeout_ms)?);
        waiter::park(
            env,
            Job {
                cell: cell.clone(),
                word,
                counter: None,
                for_packet: false,
                seen,
                deadline,
                id,
            },
        )
    }
}
