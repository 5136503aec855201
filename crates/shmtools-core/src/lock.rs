//! A mutex that lives in shared memory, works across processes, and survives
//! the death of its holder.
//!
//! The lock word is a futex holding the owner's thread id (0 = free) with bit
//! 31 set while someone sleeps on it. Taking the lock and naming the owner is
//! one compare-and-swap, so there is no instant at which the lock is held by
//! nobody anyone could check. A waiter sleeps in bounded slices; when a slice
//! ends without a wake-up it asks the kernel whether the owner still exists
//! (`/proc/<tid>`, plus the owner's start time so a reused id is not mistaken
//! for the dead owner). If it does not, the waiter takes the lock over and is
//! told so (`Guard::recovered`), so the data under the lock can be repaired.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::platform;

const WAITERS: u32 = 1 << 31;
const TID_MASK: u32 = !WAITERS;

/// Shared-memory layout of the lock (16 bytes).
#[repr(C)]
pub struct ShmMutex {
    /// Owner tid | WAITERS, 0 when free. The futex word.
    word: AtomicU32,
    /// Copy of the owner tid, written after `owner_start`: tells a checker
    /// that `owner_start` belongs to the current owner.
    owner_tid: AtomicU32,
    /// Start time of the owning thread (see `platform::start_time`).
    owner_start: AtomicU64,
}

const _: () = assert!(std::mem::size_of::<ShmMutex>() == 16);
const _: () = assert!(std::mem::align_of::<ShmMutex>() == 8);
const _: () = assert!(std::mem::offset_of!(ShmMutex, word) == 0);
const _: () = assert!(std::mem::offset_of!(ShmMutex, owner_tid) == 4);
const _: () = assert!(std::mem::offset_of!(ShmMutex, owner_start) == 8);

/// How long a waiter sleeps before it checks the owner is alive; doubles up to
/// the cap. Locks here guard microsecond-long operations, so a slice that ends
/// without a wake-up is already unusual.
const FIRST_SLICE: Duration = Duration::from_millis(2);
const MAX_SLICE: Duration = Duration::from_millis(100);
/// Spins (`spin_loop`, about 10 ns each here) a waiter may spend before it
/// sleeps, and the longest gap between two looks at the lock word. The gap
/// starts at one spin and doubles: a waiter that reads the word on every
/// spin keeps pulling its cache line away from the holder, which writes
/// the data next to it (the pool's counters and bitmaps share the line),
/// and every such write then waits for the line to come back. With a look
/// at every spin and 64 spins, two processes allocating and freeing at
/// once took 2.2-2.4 us a pair; looking every 32nd spin, 0.38-0.43 us; with
/// this doubling gap, 0.47-0.49 us, and a short hold is still seen within a
/// few spins (`bash bench/rust.sh --only 6`, 2026-12-05).
const SPIN_BUDGET: u32 = 2048;
const MAX_GAP: u32 = 32;

/// Proof of holding the lock; releases it on drop.
pub struct Guard<'a> {
    mutex: &'a ShmMutex,
    /// The previous owner died holding the lock: the protected data may be
    /// half-updated and must be checked or rebuilt before use.
    pub recovered: bool,
}

impl ShmMutex {
    /// Initialise in place (the region is zero-filled at creation, which is
    /// already the unlocked state; this makes the intent explicit).
    pub fn init(&self) {
        self.word.store(0, Ordering::Relaxed);
        self.owner_tid.store(0, Ordering::Relaxed);
        self.owner_start.store(0, Ordering::Relaxed);
    }

    /// Take the lock, waiting as long as it takes for a live owner to let go.
    pub fn lock(&self) -> Guard<'_> {
        loop {
            // Without a deadline lock_until only returns once it holds the lock.
            if let Some(g) = self.lock_until(None) {
                return g;
            }
        }
    }

    /// Take the lock, or give up at `deadline` (None: never give up).
    pub fn lock_until(&self, deadline: Option<Instant>) -> Option<Guard<'_>> {
        let me = platform::current_tid() & TID_MASK;
        if self
            .word
            .compare_exchange(0, me, Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
        {
            return Some(self.owned(false));
        }
        // Spin a little, looking less and less often: the holder is usually
        // done within a few hundred ns, and sleeping costs far more (a futex
        // wake-up takes tens of microseconds here).
        let (mut spun, mut gap) = (0, 1);
        while spun < SPIN_BUDGET {
            for _ in 0..gap {
                std::hint::spin_loop();
            }
            spun += gap;
            gap = (gap * 2).min(MAX_GAP);
            let cur = self.word.load(Ordering::Relaxed);
            if cur == 0
                && self
                    .word
                    .compare_exchange(0, me, Ordering::Acquire, Ordering::Relaxed)
                    .is_ok()
            {
                return Some(self.owned(false));
            }
        }
        let mut slice = FIRST_SLICE;
        // A compare-and-swap below fails only because the word changed; one
        // that keeps changing (other lockers, or a process writing the word)
        // must not keep us past the deadline either.
        let past = || deadline.is_some_and(|d| Instant::now() >= d);
        loop {
            let cur = self.word.load(Ordering::Relaxed);
            // No owner: free (a lone WAITERS bit never occurs in normal use,
            // since unlock clears the whole word; treat it as free).
            if cur & TID_MASK == 0 {
                // Having slept, we cannot know whether others sleep too: keep the
                // WAITERS bit so our unlock wakes them.
                if self
                    .word
                    .compare_exchange(cur, me | WAITERS, Ordering::Acquire, Ordering::Relaxed)
                    .is_ok()
                {
                    return Some(self.owned(false));
                }
                if past() {
                    return None;
                }
                continue;
            }
            if cur & WAITERS == 0
                && self
                    .word
                    .compare_exchange(cur, cur | WAITERS, Ordering::Relaxed, Ordering::Relaxed)
                    .is_err()
            {
                if past() {
                    return None;
                }
                continue;
            }
            let mut wait_for = slice;
            if let Some(d) = deadline {
                let now = Instant::now();
                if now >= d {
                    return None;
                }
                wait_for = wait_for.min(d - now);
            }
            if platform::futex_wait(&self.word, cur | WAITERS, Some(wait_for))
                == platform::Wake::TimedOut
            {
                slice = (slice * 2).min(MAX_SLICE);
                if self.owner_is_dead(cur & TID_MASK)
                    && self
                        .word
                        .compare_exchange(
                            cur | WAITERS,
                            me | WAITERS,
                            Ordering::Acquire,
                            Ordering::Relaxed,
                        )
                        .is_ok()
                {
                    return Some(self.owned(true));
                }
            }
        }
    }

    fn owned(&self, recovered: bool) -> Guard<'_> {
        let (tid, start) = platform::thread_identity();
        self.owner_start.store(start, Ordering::Relaxed);
        self.owner_tid.store(tid & TID_MASK, Ordering::Release);
        Guard {
            mutex: self,
            recovered,
        }
    }

    /// Make the lock look held by a thread that no longer exists, as if its
    /// owner had been killed inside (for tests of recovery).
    #[cfg(test)]
    pub(crate) fn hold_as_dead_for_test(&self) {
        self.word.store(TID_MASK - 7, Ordering::Relaxed);
    }

    /// True only when the owner `tid` certainly no longer exists.
    fn owner_is_dead(&self, tid: u32) -> bool {
        if tid == 0 {
            return false;
        }
        // The recorded start time counts only if it was written by this owner.
        let start = if self.owner_tid.load(Ordering::Acquire) == tid {
            self.owner_start.load(Ordering::Relaxed)
        } else {
            0
        };
        if self.word.load(Ordering::Relaxed) & TID_MASK != tid {
            return false; // ownership moved on meanwhile: not dead, just busy
        }
        !platform::is_alive(tid, start)
    }

    /// Thread id of the current holder (0 if free), for diagnostics.
    pub fn holder(&self) -> u32 {
        self.word.load(Ordering::Relaxed) & TID_MASK
    }
}

impl Drop for Guard<'_> {
    fn drop(&mut self) {
        self.mutex.owner_tid.store(0, Ordering::Relaxed);
        let prev = self.mutex.word.swap(0, Ordering::Release);
        if prev & WAITERS != 0 {
            platform::futex_wake(&self.mutex.word, 1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    /// A counter guarded only by the ShmMutex.
    struct Guarded {
        m: ShmMutex,
        n: std::cell::UnsafeCell<u64>,
    }
    // SAFETY: `n` is only read or written while `m` is held.
    unsafe impl Sync for Guarded {}

    #[test]
    fn excludes_threads_and_counts_exactly() {
        let g = Arc::new(Guarded {
            m: ShmMutex::new_for_test(),
            n: std::cell::UnsafeCell::new(0),
        });
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let g = g.clone();
                std::thread::spawn(move || {
                    for _ in 0..20_000 {
                        let _l = g.m.lock();
                        // SAFETY: exclusive access under the lock.
                        unsafe { *g.n.get() += 1 };
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let _l = g.m.lock();
        // SAFETY: exclusive access under the lock.
        assert_eq!(unsafe { *g.n.get() }, 80_000);
    }

    #[test]
    fn a_dead_owner_is_taken_over_and_reported() {
        let m = ShmMutex::new_for_test();
        // Pretend a thread id that cannot exist holds the lock.
        m.word.store(TID_MASK - 7, Ordering::Relaxed);
        let g = m.lock();
        assert!(g.recovered);
        drop(g);
        let g = m.lock();
        assert!(!g.recovered);
    }

    #[test]
    fn a_lone_waiters_bit_with_no_owner_is_taken_as_free() {
        let m = ShmMutex::new_for_test();
        m.word.store(WAITERS, Ordering::Relaxed);
        let g = m.lock_until(Some(Instant::now() + Duration::from_secs(5)));
        assert!(g.is_some_and(|g| !g.recovered));
    }

    #[test]
    fn a_live_owner_is_waited_for_until_the_deadline() {
        let m = ShmMutex::new_for_test();
        let _held = m.lock();
        // Same thread id is alive, so a second locker must time out, not steal.
        let deadline = Instant::now() + Duration::from_millis(30);
        let other = std::thread::scope(|s| {
            s.spawn(|| m.lock_until(Some(deadline)).map(|g| g.recovered))
                .join()
                .unwrap()
        });
        assert_eq!(other, None);
    }

    impl ShmMutex {
        fn new_for_test() -> ShmMutex {
            ShmMutex {
                word: AtomicU32::new(0),
                owner_tid: AtomicU32::new(0),
                owner_start: AtomicU64::new(0),
            }
        }
    }
}
