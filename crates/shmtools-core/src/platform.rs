//! Every operating-system call the core makes lives here, so that a port to
//! another OS (macOS has POSIX shm but no futex) replaces this one file.
//!
//! Linux implementation on `rustix`: shared-memory objects are files in
//! `/dev/shm` opened with `O_NOFOLLOW | O_CLOEXEC` (exactly what glibc's
//! `shm_open` does, but without needing libc and with the flags in plain sight),
//! mappings are `mmap(MAP_SHARED)`, and waits are process-shared futexes (no
//! `FUTEX_PRIVATE_FLAG`, so a wake in one process reaches a waiter in another).

use std::cell::Cell;
use std::ffi::c_void;
use std::os::fd::{AsFd, OwnedFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rustix::fs::{self, FallocateFlags, Mode, OFlags};
use rustix::io::Errno;
use rustix::mm::{self, MapFlags, ProtFlags};
use rustix::thread::{futex, membarrier, membarrier_query, MembarrierCommand};

use crate::error::{Error, ErrorCode, Result};

/// Where POSIX shared-memory objects live on Linux.
pub const SHM_DIR: &str = "/dev/shm";

/// Map an errno from a call on the object called `name` to our error codes.
fn os_error(errno: Errno, what: &str, name: &str) -> Error {
    let code = match errno {
        Errno::NOENT => ErrorCode::NotFound,
        Errno::EXIST => ErrorCode::Exists,
        Errno::ACCESS | Errno::PERM => ErrorCode::Permission,
        Errno::NOSPC | Errno::FBIG => ErrorCode::NoSpace,
        Errno::NOMEM => ErrorCode::NoSpace,
        Errno::LOOP => ErrorCode::Permission,
        Errno::NAMETOOLONG | Errno::INVAL => ErrorCode::InvalidArg,
        Errno::ISDIR => ErrorCode::Incompatible,
        _ => ErrorCode::Io,
    };
    let hint = if errno == Errno::LOOP {
        "; it is a symbolic link, which shmtools never follows"
    } else {
        match code {
        ErrorCode::NotFound => "; create it first with SHMMain",
        ErrorCode::Permission => "; it belongs to another user or has a restrictive mode",
        ErrorCode::NoSpace => {
            "; /dev/shm has less free space than asked: choose a smaller size or enlarge /dev/shm"
        }
        _ => "",
        }
    };
    Error::new(code, format!("{what} '{name}' failed: {errno}{hint}"))
}

fn shm_dir() -> Result<OwnedFd> {
    fs::open(
        SHM_DIR,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| os_error(e, "opening", SHM_DIR))
}

/// Create a new shared-memory object; fails with `ERR_SHM_EXISTS` if one of
/// that name exists. The mode is set with `fchmod` afterwards because the
/// creation mode is masked by the process umask.
pub fn shm_create_exclusive(name: &str, mode: u32) -> Result<OwnedFd> {
    let dir = shm_dir()?;
    let fd = fs::openat(
        &dir,
        name,
        OFlags::RDWR | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::from_raw_mode(mode),
    )
    .map_err(|e| os_error(e, "creating shared memory", name))?;
    fs::fchmod(&fd, Mode::from_raw_mode(mode))
        .map_err(|e| os_error(e, "setting the mode of", name))?;
    Ok(fd)
}

/// Open an existing shared-memory object read-write; `Ok(None)` if there is
/// none of that name (yet). Symbolic links are refused (`O_NOFOLLOW`).
pub fn shm_open_existing(name: &str) -> Result<Option<OwnedFd>> {
    let dir = shm_dir()?;
    match fs::openat(
        &dir,
        name,
        OFlags::RDWR | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    ) {
        Ok(fd) => Ok(Some(fd)),
        Err(Errno::NOENT) => Ok(None),
        Err(e) => Err(os_error(e, "opening shared memory", name)),
    }
}

/// Remove the name of a shared-memory object; `Ok(false)` if there was none.
/// Processes that have it mapped keep their mapping.
pub fn shm_unlink(name: &str) -> Result<bool> {
    let dir = shm_dir()?;
    match fs::unlinkat(&dir, name, fs::AtFlags::empty()) {
        Ok(()) => Ok(true),
        Err(Errno::NOENT) => Ok(false),
        Err(e) => Err(os_error(e, "removing shared memory", name)),
    }
}

/// Owner uid, mode bits and size of an open object.
pub struct FileInfo {
    pub size: u64,
    pub mode: u32,
    pub uid: u32,
    pub regular: bool,
    /// (device, inode): tells two objects of the same name apart.
    pub identity: (u64, u64),
}

pub fn file_info(fd: impl AsFd, name: &str) -> Result<FileInfo> {
    let st = fs::fstat(fd).map_err(|e| os_error(e, "inspecting", name))?;
    let kind = fs::FileType::from_raw_mode(st.st_mode);
    Ok(FileInfo {
        size: st.st_size as u64,
        mode: st.st_mode & 0o7777,
        uid: st.st_uid,
        regular: kind == fs::FileType::RegularFile,
        identity: (st.st_dev as u64, st.st_ino as u64),
    })
}

/// Give the object its size and reserve every page now, so that a `/dev/shm`
/// too small for it is an error here rather than a SIGBUS on first touch.
pub fn reserve(fd: impl AsFd, len: u64, name: &str) -> Result<()> {
    match fs::fallocate(&fd, FallocateFlags::empty(), 0, len) {
        Ok(()) => Ok(()),
        // A filesystem without fallocate: size it, and accept the weaker promise.
        Err(Errno::OPNOTSUPP) => {
            fs::ftruncate(&fd, len).map_err(|e| os_error(e, "sizing shared memory", name))
        }
        Err(e) => Err(os_error(e, "reserving memory for", name)),
    }
}

/// A shared read-write mapping of a whole object; unmapped on drop.
pub struct Mapping {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: the mapping is plain shared memory; all access to it goes through
// atomics or through validated byte copies, and it may be used from any thread.
unsafe impl Send for Mapping {}
// SAFETY: as above; `&Mapping` only hands out raw pointers and atomics.
unsafe impl Sync for Mapping {}

impl Mapping {
    pub fn map(fd: impl AsFd, len: usize, name: &str) -> Result<Mapping> {
        if len == 0 {
            return Err(Error::new(
                ErrorCode::InvalidArg,
                "cannot map an empty object",
            ));
        }
        // SAFETY: a fresh mapping (null hint, no MAP_FIXED) cannot alias any Rust
        // object; `len` is the size we checked against the file.
        let ptr = unsafe {
            mm::mmap(
                std::ptr::null_mut(),
                len,
                ProtFlags::READ | ProtFlags::WRITE,
                MapFlags::SHARED,
                fd,
                0,
            )
        }
        .map_err(|e| os_error(e, "mapping", name))?;
        let ptr = NonNull::new(ptr.cast::<u8>())
            .ok_or_else(|| Error::new(ErrorCode::Io, "mmap returned a null address"))?;
        Ok(Mapping { ptr, len })
    }

    pub fn base(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: `ptr`/`len` are exactly what mmap returned and nothing can use
        // the mapping after its owner is dropped (borrows end first).
        let _ = unsafe { mm::munmap(self.ptr.as_ptr().cast::<c_void>(), self.len) };
    }
}

/// Outcome of a futex wait; callers recheck their condition in every case.
#[derive(Debug, PartialEq, Eq)]
pub enum Wake {
    /// Woken, or the word no longer held the expected value.
    Woken,
    TimedOut,
}

/// When a wait of `timeout` that starts now ends: None for no timeout, and
/// for one too long for the clock to count (that waits as forever does).
pub fn deadline(timeout: Option<Duration>) -> Option<Instant> {
    timeout.and_then(|t| Instant::now().checked_add(t))
}

/// Sleep while `*word == expected`, at most `timeout` (None: no limit).
/// Process-shared: no FUTEX_PRIVATE_FLAG.
pub fn futex_wait(word: &AtomicU32, expected: u32, timeout: Option<Duration>) -> Wake {
    let ts = timeout.map(|d| rustix::time::Timespec {
        tv_sec: d.as_secs().min(i64::MAX as u64) as i64,
        tv_nsec: d.subsec_nanos() as _,
    });
    match futex::wait(word, futex::Flags::empty(), expected, ts.as_ref()) {
        Err(Errno::TIMEDOUT) => Wake::TimedOut,
        _ => Wake::Woken,
    }
}

/// Wake up to `n` waiters on `word`, in any process. The kernel reads the
/// count as a signed int, so "all" (u32::MAX) must be sent as i32::MAX: as -1
/// it would wake exactly one.
pub fn futex_wake(word: &AtomicU32, n: u32) {
    let _ = futex::wake(word, futex::Flags::empty(), n.min(i32::MAX as u32));
}

/// Set to the fork epoch + 1 once this process has registered for
/// `membarrier(MEMBARRIER_CMD_GLOBAL_EXPEDITED)` (0: not yet; u64::MAX:
/// the kernel does not offer it, or registering failed).
static FAST_PUBLISH: AtomicU64 = AtomicU64::new(0);

/// Whether the kernel offers the global expedited memory barrier (cached).
fn global_barrier_offered() -> bool {
    static OFFERED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *OFFERED.get_or_init(|| {
        let q = membarrier_query();
        q.contains_command(MembarrierCommand::GlobalExpedited)
            && q.contains_command(MembarrierCommand::RegisterGlobalExpedited)
    })
}

/// True when this process may publish a queue counter with a plain release
/// store and then look for sleepers with a plain load, with no fence
/// between the two (and so no locked instruction): it is registered for
/// the kernel's global expedited memory barrier, which every sleeper issues
/// after counting itself in and before it looks at the counter
/// ([`sleeper_fence`]). The barrier runs a full fence on every CPU that is
/// running a registered process at that moment, so the pair of
/// store-then-load on each side cannot both miss the other's store, as if
/// both sides had a fence; a publisher that is not running at that moment
/// passes through the scheduler, which fences too. False until this
/// process is registered (once per process, again in a forked child; see
/// [`start_fast_publish`], which this starts if nothing has yet), and
/// where the kernel does not offer the barrier: the caller then uses
/// SeqCst. Once true it stays true until a fork.
pub fn fast_publish() -> bool {
    let epoch = FORK_EPOCH.load(Ordering::Relaxed).wrapping_add(1);
    match FAST_PUBLISH.load(Ordering::Acquire) {
        e if e == epoch => true,
        u64::MAX => false,
        _ => {
            start_fast_publish();
            false
        }
    }
}

/// The fork epoch + 1 for which [`start_fast_publish`] has started the
/// registration.
static REGISTERING: AtomicU64 = AtomicU64::new(0);

/// Register this process for the kernel's global expedited barrier (see
/// [`fast_publish`]) on a short-lived thread of its own, once per process
/// (and again in a forked child); until it is done, publishes are fenced.
/// Opening a region calls this, so a process is usually registered before
/// it first publishes.
///
/// On a thread because registering a process that has more than one
/// thread waits for the kernel to pass a grace period on every CPU: 15.8
/// ms here (`strace -T` of a Node child, 2026-12-06). When the first
/// enqueue of a fresh process registered, that enqueue took 8-19 ms instead
/// of 0.1 (a 20-worker fan-in pays it in every worker). A process of one
/// thread registers at once, which costs it no wait.
pub fn start_fast_publish() {
    register_at_fork();
    let epoch = FORK_EPOCH.load(Ordering::Relaxed).wrapping_add(1);
    let now = FAST_PUBLISH.load(Ordering::Relaxed);
    // (a load before the swap: every publish calls this until registration
    // is done, and a swap on a line all threads share would cost each one)
    if now == epoch
        || now == u64::MAX
        || REGISTERING.load(Ordering::Relaxed) == epoch
        || REGISTERING.swap(epoch, Ordering::AcqRel) == epoch
    {
        return;
    }
    if !global_barrier_offered() {
        FAST_PUBLISH.store(u64::MAX, Ordering::Release);
        return;
    }
    if thread_count() == Some(1) {
        // (a process of one thread registers at once: the kernel then
        // needs no grace period, and a thread of our own would make two)
        register_fast_publish(epoch);
        return;
    }
    let spawned = std::thread::Builder::new()
        .name("shmtools-barrier".into())
        .stack_size(64 * 1024)
        .spawn(move || register_fast_publish(epoch));
    if spawned.is_err() {
        register_fast_publish(epoch);
    }
}

/// Registrations this process made (tests: the first is the only one).
#[cfg(test)]
static REGISTRATIONS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

/// Threads of this process (field 20 of `/proc/self/stat`, the 18th from
/// field 3).
fn thread_count() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    fields_after_name(&stat)?.nth(17)?.parse().ok()
}

/// The fields of a `/proc/.../stat` line from field 3 on: after the
/// command name (field 2), which is in parentheses and may hold spaces or
/// ')'.
fn fields_after_name(stat: &str) -> Option<std::str::SplitAsciiWhitespace<'_>> {
    Some(stat[stat.rfind(')')? + 1..].split_ascii_whitespace())
}

/// Register for fork epoch `epoch` (+ 1), here and now, and say so in
/// `FAST_PUBLISH`.
fn register_fast_publish(epoch: u64) {
    #[cfg(test)]
    REGISTRATIONS.fetch_add(1, Ordering::Relaxed);
    let ok = membarrier(MembarrierCommand::RegisterGlobalExpedited).is_ok();
    // (Release: whoever sees the epoch sees a registered process; a fork
    // meanwhile leaves the child without this thread, and its own epoch
    // starts again)
    FAST_PUBLISH.store(if ok { epoch } else { u64::MAX }, Ordering::Release);
}

/// The sleeper's half of [`fast_publish`]: call after counting oneself in
/// as a sleeper (a SeqCst read-modify-write) and before reading the counter
/// one waits on. True when the barrier ran, so a publisher can no longer
/// miss the count. False when it did not: the kernel lacks it, or this
/// process may not call it (a seccomp filter; the query then reads as
/// "not offered" too), while another process on the machine may be
/// registered and publish without a fence. A publisher may then miss this
/// sleeper once, so the caller sleeps in short slices.
pub fn sleeper_fence() -> bool {
    global_barrier_offered() && membarrier(MembarrierCommand::GlobalExpedited).is_ok()
}

/// This process's id and start time, cached per thread and refreshed after
/// a fork:
/// the holder code asks for the pid on every operation that moves a
/// reference, and getpid is a system call.
fn process_identity() -> (u32, u64) {
    register_at_fork();
    thread_local! {
        static CACHE: Cell<(u64, u32, u64)> = const { Cell::new((u64::MAX, 0, 0)) };
    }
    let epoch = FORK_EPOCH.load(Ordering::Relaxed);
    CACHE.with(|c| {
        let (e, pid, start) = c.get();
        if e == epoch {
            return (pid, start);
        }
        let pid = rustix::process::getpid().as_raw_nonzero().get() as u32;
        let start = start_time(pid).unwrap_or(0);
        c.set((epoch, pid, start));
        (pid, start)
    })
}

pub fn current_pid() -> u32 {
    process_identity().0
}

/// Wall-clock time in milliseconds since the Unix epoch (0 if the clock is
/// before it).
pub fn now_unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Bumped in the child after every fork(), so per-thread caches of the
/// thread id and start time (which a forked child would otherwise inherit from
/// its parent's thread) are refreshed.
static FORK_EPOCH: AtomicU64 = AtomicU64::new(0);

extern "C" fn after_fork_in_child() {
    FORK_EPOCH.fetch_add(1, Ordering::Relaxed);
}

/// The calling thread's identity: (thread id, thread start time), cached per
/// thread. gettid is a system call (~100 ns) and the lock needs it twice per
/// operation, so the cache matters on the allocator's hot path.
fn register_at_fork() {
    static AT_FORK: std::sync::Once = std::sync::Once::new();
    AT_FORK.call_once(|| {
        // SAFETY: registers a handler that only bumps an atomic counter, which
        // is async-signal-safe as fork requires of child handlers.
        unsafe { libc::pthread_atfork(None, None, Some(after_fork_in_child)) };
    });
}

pub fn thread_identity() -> (u32, u64) {
    register_at_fork();
    thread_local! {
        static CACHE: Cell<(u64, u32, u64)> = const { Cell::new((u64::MAX, 0, 0)) };
    }
    let epoch = FORK_EPOCH.load(Ordering::Relaxed);
    CACHE.with(|c| {
        let (e, tid, start) = c.get();
        if e == epoch {
            return (tid, start);
        }
        let tid = rustix::thread::gettid().as_raw_nonzero().get() as u32;
        let start = start_time(tid).unwrap_or(0);
        c.set((epoch, tid, start));
        (tid, start)
    })
}

pub fn current_tid() -> u32 {
    thread_identity().0
}

/// Start time of a process or thread (field 22 of `/proc/<id>/stat`, clock
/// ticks since boot). Together with the id it names one incarnation: a reused
/// id has a different start time. `None` if the id does not exist.
pub fn start_time(id: u32) -> Option<u64> {
    stat_fields(id).map(|(_, start)| start)
}

/// State letter (field 3) and start time (field 22) of `/proc/<id>/stat`.
fn stat_fields(id: u32) -> Option<(u8, u64)> {
    stat_fields_at(&format!("/proc/{id}/stat"))
}

/// State letter and start time of the stat file at `path`.
fn stat_fields_at(path: &str) -> Option<(u8, u64)> {
    let stat = std::fs::read_to_string(path).ok()?;
    // The start time is field 22, the 20th from field 3.
    let mut fields = fields_after_name(&stat)?;
    let state = *fields.next()?.as_bytes().first()?;
    let start = fields.nth(18)?.parse().ok()?;
    Some((state, start))
}

/// Start time of the calling thread, cached per thread.
pub fn current_thread_start_time() -> u64 {
    thread_identity().1
}

/// Start time of this process, cached (and refreshed in a forked child,
/// which is a new process with a start time of its own).
pub fn current_process_start_time() -> u64 {
    process_identity().1
}

/// Is the process or thread `id` that started at `start` (0: unknown) still there?
pub fn is_alive(id: u32, start: u64) -> bool {
    if id == 0 {
        return false;
    }
    match stat_fields(id) {
        None => false,
        // A zombie ('Z', killed or exited but not yet reaped by its parent)
        // or dead ('X') task never runs again, though /proc still lists it.
        Some((b'Z' | b'X', _)) => false,
        Some((_, now)) => start == 0 || now == start,
    }
}

/// Is the process `pid` that started at `start` still there? Like
/// [`is_alive`], except that a zombie leader whose other threads still run
/// (its main thread called `pthread_exit`) counts as alive: the process
/// can still use what it holds.
pub fn is_process_alive(pid: u32, start: u64) -> bool {
    match stat_fields(pid) {
        Some((b'Z', now)) if pid != 0 && (start == 0 || now == start) => other_task_runs(pid),
        _ => is_alive(pid, start),
    }
}

/// Does any thread of `pid` other than its leader still run?
fn other_task_runs(pid: u32) -> bool {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return false;
    };
    tasks.flatten().any(|t| {
        let Some(tid) = t.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
            return false;
        };
        tid != pid
            && stat_fields_at(&format!("/proc/{pid}/task/{tid}/stat"))
                .is_some_and(|(state, _)| state != b'Z' && state != b'X')
    })
}

/// Sleep the calling thread (used only where nothing can wake us: waiting for
/// an object to be created by another process).
pub fn sleep(d: Duration) {
    std::thread::sleep(d);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Start registering and wait until it is done: whether this process
    /// may publish without a fence.
    fn registered() -> bool {
        start_fast_publish();
        let done = std::time::Instant::now() + Duration::from_secs(20);
        while FAST_PUBLISH.load(Ordering::Acquire) == 0 {
            assert!(std::time::Instant::now() < done, "registering never ended");
            std::thread::sleep(Duration::from_millis(1));
        }
        fast_publish()
    }

    #[test]
    fn this_process_counts_its_threads_as_the_kernel_does() {
        let status = || {
            std::fs::read_to_string("/proc/self/status")
                .ok()?
                .lines()
                .find_map(|l| l.strip_prefix("Threads:"))?
                .trim()
                .parse::<u64>()
                .ok()
        };
        // (other tests start and end threads meanwhile: a few tries)
        let agree = (0..20).any(|_| {
            let (a, b, c) = (status(), thread_count(), status());
            a.is_some() && a == b && b == c
        });
        assert!(agree, "field 20 of /proc/self/stat is not the thread count");
    }

    #[test]
    fn registering_for_the_barrier_happens_once_and_then_holds() {
        // (other tests in this process may have started it already)
        start_fast_publish();
        start_fast_publish();
        let fast = registered();
        let epoch = FORK_EPOCH.load(Ordering::Relaxed).wrapping_add(1);
        assert_eq!(REGISTERING.load(Ordering::Relaxed), epoch);
        if fast {
            assert_eq!(FAST_PUBLISH.load(Ordering::Relaxed), epoch);
        } else {
            // A kernel without the barrier: publishes stay fenced.
            assert_eq!(FAST_PUBLISH.load(Ordering::Relaxed), u64::MAX);
        }
        start_fast_publish();
        assert_eq!(fast_publish(), fast, "registered stays registered");
        let once = if global_barrier_offered() { 1 } else { 0 };
        assert_eq!(
            REGISTRATIONS.load(Ordering::Relaxed),
            once,
            "registered again"
        );
    }

    /// Publishing without a fence is allowed exactly where every sleeper
    /// can run the barrier that stands in for it; and a forked child (a
    /// new process, which must register again) gets the same answer.
    #[test]
    fn unfenced_publish_is_used_only_where_the_sleepers_barrier_works() {
        let fast = registered();
        assert_eq!(fast, global_barrier_offered(), "registering failed here");
        assert_eq!(
            sleeper_fence(),
            fast,
            "the barrier and registering disagree"
        );
        if !fast {
            // (correct all the same: every publish is then SeqCst)
            eprintln!("membarrier(GLOBAL_EXPEDITED) is not offered here");
        }
        // SAFETY: the child makes system calls and reads /proc/self/stat
        // (one allocation: glibc's fork handlers leave malloc usable in the
        // child; no other lock is taken, as every cache it reads was filled
        // above) and _exits. A forked child has one thread, so it registers
        // for its own fork epoch in place, with no thread of its own.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork failed");
        if pid == 0 {
            // (the parent's registration is not the child's: a new fork
            // epoch, set by the fork handler)
            let epoch = FORK_EPOCH.load(Ordering::Relaxed).wrapping_add(1);
            let inherited = FAST_PUBLISH.load(Ordering::Relaxed) == epoch;
            start_fast_publish();
            // (done by now: no thread was left to finish it)
            let now = FAST_PUBLISH.load(Ordering::Relaxed);
            let inline = now == epoch || now == u64::MAX;
            let ok = !inherited
                && inline
                && fast_publish() == global_barrier_offered()
                && sleeper_fence() == fast;
            // SAFETY: ends the forked child without running the parent's
            // destructors or test harness.
            unsafe { libc::_exit(if ok { 0 } else { 1 }) };
        }
        let mut status = 0;
        // SAFETY: waits for the child forked above; status is a valid out
        // pointer.
        assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
        assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0);
    }

    #[test]
    fn a_process_whose_main_thread_exited_is_alive_while_another_thread_runs() {
        // python3 stands in for such a process: its main thread calls
        // pthread_exit while a second thread sleeps on.
        let script = "import threading,time,ctypes,sys\n\
                      t=threading.Thread(target=lambda: time.sleep(30))\n\
                      t.start()\n\
                      print('up', flush=True)\n\
                      ctypes.CDLL(None).pthread_exit(None)\n";
        let child = std::process::Command::new("python3")
            .args(["-c", script])
            .stdout(std::process::Stdio::piped())
            .spawn();
        let Ok(mut child) = child else {
            eprintln!("skipped: python3 is not installed (needed to make a zombie leader)");
            return;
        };
        let pid = child.id();
        let mut line = String::new();
        use std::io::BufRead;
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        // Wait (bounded) for the leader to turn into a zombie.
        let mut state = 0;
        for _ in 0..500 {
            state = stat_fields(pid).map_or(0, |f| f.0);
            if state == b'Z' {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let start = stat_fields(pid).map_or(0, |f| f.1);
        let (as_thread, as_process) = (is_alive(pid, start), is_process_alive(pid, start));
        let _ = child.kill();
        let _ = child.wait();
        assert_eq!(state, b'Z', "the leader never became a zombie");
        assert!(!as_thread, "the leader thread itself is gone");
        assert!(as_process, "but its process still runs");
        assert!(!is_process_alive(pid, start), "after the kill it is gone");
    }

    #[test]
    fn a_wake_of_all_wakes_every_sleeper_not_just_one() {
        let word = std::sync::Arc::new(AtomicU32::new(0));
        let sleepers: Vec<_> = (0..3)
            .map(|_| {
                let w = word.clone();
                std::thread::spawn(move || futex_wait(&w, 0, Some(Duration::from_secs(20))))
            })
            .collect();
        // Let them fall asleep, then move the word on and wake "all".
        std::thread::sleep(Duration::from_millis(200));
        word.store(1, Ordering::Release);
        futex_wake(&word, u32::MAX);
        for s in sleepers {
            assert_eq!(s.join().unwrap(), Wake::Woken);
        }
    }
}
