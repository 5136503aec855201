//! Waiting without blocking the event loop or libuv's thread pool: a parked
//! async wait is handed to one of our own threads, which sleeps on the
//! region's futex word and then settles the JS promise. Threads are reused
//! (idle ones wait on a parking_lot condvar and retire after 30 s idle), so a
//! burst of waits costs one thread creation each at most once.
//!
//! The thread does not dequeue or enqueue itself: it only reports "the word
//! moved", "timed out" or "cancelled", and the JS side retries the operation on
//! its own thread. So no value ever sits in a thread between processes.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use napi::bindgen_prelude::Object;
use napi::{Env, JsDeferred};
use parking_lot::{Condvar, Mutex};
use shmtools_core::platform;
use shmtools_core::queue::{self, Sleeper};

use crate::region::RegionCell;

/// The wait ended because the word or the counter moved on (or, for a
/// wait without a counter, a whole `LOOK_AGAIN` passed): the caller looks
/// again.
pub const CHANGED: u32 = 0;
pub const TIMED_OUT: u32 = 1;
pub const CANCELLED: u32 = 2;

/// Longest sleep before a waiter looks at the counter again (or, without
/// one, answers CHANGED so its caller looks).
const LOOK_AGAIN: Duration = Duration::from_secs(1);

type Resolver = Box<dyn FnOnce(Env) -> napi::Result<u32> + Send>;

pub struct Job {
    pub cell: Arc<RegionCell>,
    /// Region offset of the futex word to sleep on.
    pub word: u64,
    /// What the wait is for: the word itself moving on from `seen` (None),
    /// or a queue's counter (the region offset of a u64 whose low 32 bits
    /// are compared with `seen`, see `Queue::seq`) with the sleeper count
    /// that goes with the word, held up while asleep: a queue moves its word
    /// on only for counted sleepers (`Queue::signal`).
    pub counter: Option<(u64, u64)>,
    /// A consumer's wait for a packet: it may spin before it sleeps (see
    /// `spin`). A producer's wait for room sleeps at once, as a spinning
    /// producer reading `head` slows the consumer down (queue.rs,
    /// `SPINS_FOR_ROOM`), and learns nothing.
    pub for_packet: bool,
    pub seen: u32,
    pub deadline: Option<Instant>,
    pub id: u32,
}

struct Parked {
    job: Job,
    cancel: Arc<AtomicBool>,
    deferred: JsDeferred<u32, Resolver>,
}

struct State {
    jobs: VecDeque<Parked>,
    idle: usize,
}

/// What cancel() needs to stop a parked wait: its flag and its futex word.
#[derive(Clone)]
struct Canceller {
    flag: Arc<AtomicBool>,
    cell: Arc<RegionCell>,
    word: u64,
}

struct Waiters {
    state: Mutex<State>,
    cv: Condvar,
    /// Every parked wait, by id.
    parked: Mutex<HashMap<u32, Canceller>>,
}

fn waiters() -> &'static Waiters {
    static W: OnceLock<Waiters> = OnceLock::new();
    W.get_or_init(|| Waiters {
        state: Mutex::new(State {
            jobs: VecDeque::new(),
            idle: 0,
        }),
        cv: Condvar::new(),
        parked: Mutex::new(HashMap::new()),
    })
}

/// Park `job`; the returned promise resolves with CHANGED, TIMED_OUT or
/// CANCELLED.
pub fn park<'env>(env: &'env Env, job: Job) -> napi::Result<Object<'env>> {
    let (deferred, promise) = env.create_deferred::<u32, Resolver>()?;
    let cancel = Arc::new(AtomicBool::new(false));
    let w = waiters();
    w.parked.lock().insert(
        job.id,
        Canceller {
            flag: cancel.clone(),
            cell: job.cell.clone(),
            word: job.word,
        },
    );
    let mut st = w.state.lock();
    st.jobs.push_back(Parked {
        job,
        cancel,
        deferred,
    });
    if st.idle > 0 {
        w.cv.notify_one();
    } else {
        drop(st);
        let spawned = std::thread::Builder::new()
            .name("shmtools-waiter".into())
            .stack_size(128 * 1024)
            .spawn(worker);
        if let Err(e) = spawned {
            // No thread: settle what is queued as a timeout rather than hang.
            let mut st = w.state.lock();
            while let Some(p) = st.jobs.pop_front() {
                w.parked.lock().remove(&p.job.id);
                p.deferred.reject(napi::Error::from_reason(format!(
                    "ERR_SHM_IO: cannot start a waiter thread: {e}"
                )));
            }
        }
    }
    Ok(promise)
}

/// Stop the parked wait `id` now (AbortSignal): flag it, then move its word
/// on and wake it. Moving the word (a sequence number: every sleeper on it
/// rechecks and goes back to sleep) is what makes the wake-up impossible to
/// lose: a worker that checked the flag just before it was set will find the
/// word changed when it goes to sleep, and not sleep.
pub fn cancel(id: u32) {
    if let Some(c) = waiters().parked.lock().get(&id).cloned() {
        c.flag.store(true, Ordering::Release);
        if let Ok(w) = c.cell.region.span().u32_at(c.word) {
            w.fetch_add(1, Ordering::Release);
            platform::futex_wake(w, u32::MAX);
        }
    }
}

fn worker() {
    let w = waiters();
    loop {
        let parked = {
            let mut st = w.state.lock();
            loop {
                if let Some(p) = st.jobs.pop_front() {
                    break p;
                }
                st.idle += 1;
                let timed_out = w.cv.wait_for(&mut st, Duration::from_secs(30)).timed_out();
                st.idle -= 1;
                if timed_out && st.jobs.is_empty() {
                    return;
                }
            }
        };
        let outcome = run(&parked.job, &parked.cancel);
        w.parked.lock().remove(&parked.job.id);
        parked.deferred.resolve(Box::new(move |_env| Ok(outcome)));
    }
}

fn run(job: &Job, cancel: &AtomicBool) -> u32 {
    let began = Instant::now();
    let outcome = watch(job, cancel);
    // A wait for a packet teaches this thread how long to spin next time
    // (see `spin`): by whether the counter moved, and how soon.
    if let (Some((c, _)), true) = (job.counter, job.for_packet) {
        let moved = outcome == CHANGED
            && job
                .cell
                .region
                .span()
                .u64_at(c)
                .is_ok_and(|c| c.load(Ordering::Relaxed) as u32 != job.seen);
        queue::learn(began.elapsed(), moved);
    }
    outcome
}

/// Spin on `counter` until it moves from `seen` (CHANGED), `cancel` is set
/// (CANCELLED), the job's deadline passes (TIMED_OUT) or the spin this
/// thread learnt, as a Rust consumer's `Queue::wait` learns it
/// (`queue::learn`), is over (None).
///
/// A sleeper costs both sides: counting in runs the kernel's barrier (58 us
/// on average here), and each packet's producer then pays a futex wake
/// (30-50 us of its own time on this VM; docs/BENCHMARKS.md, "Large arrays
/// by reference, and waking a consumer"). The JS side has spun 20 us on the
/// event loop before it parked the wait; this thread spins on, off the event
/// loop, when packets lately came that soon, and not at all on a quiet pipe.
fn spin(job: &Job, counter: &AtomicU64, cancel: &AtomicBool) -> Option<u32> {
    let mut ended = None;
    let give_up = |now: Instant| {
        if cancel.load(Ordering::Relaxed) {
            ended = Some(CANCELLED);
        } else if job.deadline.is_some_and(|d| now >= d) {
            ended = Some(TIMED_OUT);
        }
        ended.is_some()
    };
    let more = queue::learnt_spin();
    if queue::spin_until_moved(counter, job.seen, Instant::now(), more, give_up) {
        return Some(CHANGED);
    }
    ended
}

/// Wait for the job's word or counter to move on: spinning first where
/// this thread learnt to (`spin`), then asleep on the futex word.
fn watch(job: &Job, cancel: &AtomicBool) -> u32 {
    let span = job.cell.region.span();
    let Ok(word) = span.u32_at(job.word) else {
        return CHANGED; // let the JS side retry and report the real error
    };
    let (counter, sleepers) = match job.counter {
        Some((c, s)) => match (span.u64_at(c), span.u32_at(s)) {
            (Ok(c), Ok(s)) => (Some(c), Some(s)),
            _ => return CHANGED,
        },
        None => (None, None),
    };
    if let (Some(c), true) = (counter, job.for_packet) {
        if let Some(outcome) = spin(job, c, cancel) {
            return outcome;
        }
    }
    // Counted in, with the publishers' fence run, before the word and the
    // counter are read (counted out when this returns).
    let me = sleepers.map(|s| {
        let mut me = Sleeper::count_in(s);
        me.fence_publishers();
        me
    });
    loop {
        // The word first, then the flag: a cancel sets the flag and then
        // moves the word on, so either we see the flag or the kernel sees
        // the word changed.
        let now = word.load(Ordering::SeqCst);
        if cancel.load(Ordering::SeqCst) {
            break CANCELLED;
        }
        let current = counter.map_or(now, |c| c.load(Ordering::SeqCst) as u32);
        if current != job.seen {
            break CHANGED;
        }
        let mut slice = me.as_ref().map_or(LOOK_AGAIN, |me| me.slice(LOOK_AGAIN));
        if let Some(d) = job.deadline {
            let t = Instant::now();
            if t >= d {
                break TIMED_OUT;
            }
            slice = slice.min(d - t);
        }
        let woke = platform::futex_wait(word, now, Some(slice));
        if woke == platform::Wake::TimedOut && slice == LOOK_AGAIN {
            // A whole slice without a change. A peer killed between
            // publishing (its counter store) and moving the word on leaves
            // the word unmoved: the counter, read again at the top of the
            // loop, still shows it, so the wait for it is bounded by a
            // slice, as a Rust waiter's is, without the JS side waking up
            // to look. This thread does the housekeeping such a look did:
            // giving back what dead processes held, at most once a second.
            // (Without a counter, or once the region was closed, which
            // wakes no one, the JS side looks again itself: it then finds
            // the region closed and says so.)
            if counter.is_none() || job.cell.closed.load(Ordering::Acquire) {
                break CHANGED;
            }
            if let Ok(v) = job.cell.region.values() {
                v.reclaim_if_due();
            }
        }
    }
}
