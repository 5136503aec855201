//! A named shared-memory region: one `/dev/shm` object whose first page is the
//! boot block and whose remainder is the pool. `Region::create` is the seed's
//! `SHMMain::start`; `Region::attach` is what ServerSide and ClientSide do to
//! find it.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::boot::{self, BootInfo, Peek, BOOT_SIZE};
use crate::error::{Error, ErrorCode, Result};
use crate::holders::{self, HolderInfo, Holders, Reclaim, Repair, Session};
use crate::mem::Span;
use crate::platform::{self, Mapping};
use crate::pool::{self, Pool};

/// Smallest region we create: the boot page, the pool header, the pipe
/// directory and room for some values.
pub const MIN_REGION: u64 = 64 * 1024;
/// Largest region: what the allocator's size classes cover (1 TiB).
pub const MAX_REGION: u64 = pool::MAX_REGION;
/// Longest name accepted (a file name in /dev/shm).
pub const MAX_NAME: usize = 255;
/// Bytes of the pipe directory header allocated at creation.
pub const PIPE_DIR_BYTES: u64 = crate::pipes::DIR_HEADER_SIZE;

/// Check a region name: 1..=255 bytes, no '/', no NUL, not "." or "..".
pub fn validate_name(name: &str) -> Result<()> {
    let why = if name.is_empty() {
        "is empty"
    } else if name.len() > MAX_NAME {
        "is longer than 255 bytes"
    } else if name.contains('/') {
        "contains '/' (give a bare name such as \"my_region\", not a path)"
    } else if name.contains('\0') {
        "contains a NUL character"
    } else if name == "." || name == ".." {
        "is '.' or '..'"
    } else {
        return Ok(());
    };
    Err(Error::invalid(format!("region name {name:?} {why}")))
}

/// Check a region size: 64 KiB ..= 1 TiB.
pub fn validate_size(bytes: u64) -> Result<()> {
    if !(MIN_REGION..=MAX_REGION).contains(&bytes) {
        return Err(Error::invalid(format!(
            "region size {bytes} is out of range: give between {MIN_REGION} and {MAX_REGION} bytes"
        )));
    }
    Ok(())
}

/// Options for [`Region::create`].
#[derive(Debug, Clone)]
pub struct CreateOptions {
    /// Permission bits of the object (default 0o600), applied with fchmod so
    /// the umask does not change them.
    pub mode: u32,
    /// Log each step to stderr (the seed's `debug` flag).
    pub debug: bool,
}

impl Default for CreateOptions {
    fn default() -> Self {
        CreateOptions {
            mode: 0o600,
            debug: false,
        }
    }
}

/// Options for [`Region::attach`].
pub struct AttachOptions<'a> {
    /// Give up after this long (None: wait forever).
    pub timeout: Option<Duration>,
    /// How long to sleep between looks while the region does not exist yet
    /// (the seed's `micro_sleep`; default 10 ms).
    pub poll: Duration,
    /// Called between looks; returning true stops the wait with
    /// `ERR_SHM_ABORTED` (the seed's BreakChecker).
    pub break_checker: Option<&'a dyn Fn() -> bool>,
    pub debug: bool,
}

impl AttachOptions<'_> {
    /// Between two looks for `what`: stop if the break checker says so or the
    /// deadline has passed (naming `maker`, who should have made it), else
    /// how long to wait before looking again.
    pub(crate) fn next_nap(
        &self,
        deadline: Option<Instant>,
        what: &str,
        maker: &str,
    ) -> Result<Duration> {
        if self.break_checker.is_some_and(|f| f()) {
            return Err(Error::new(
                ErrorCode::Aborted,
                format!("waiting for {what} was stopped by the break checker"),
            ));
        }
        let nap = self.poll.max(Duration::from_millis(1));
        match deadline {
            None => Ok(nap),
            Some(d) => {
                let now = Instant::now();
                if now >= d {
                    return Err(Error::new(
                        ErrorCode::Timeout,
                        format!("{what} was not ready in time; is {maker} running?"),
                    ));
                }
                Ok(nap.min(d - now))
            }
        }
    }
}

impl Default for AttachOptions<'_> {
    fn default() -> Self {
        AttachOptions {
            timeout: None,
            poll: Duration::from_millis(10),
            break_checker: None,
            debug: false,
        }
    }
}

/// The outcome of one look for a region.
#[allow(clippy::large_enum_variant)] // made once per attach; boxing buys nothing
pub enum TryAttach {
    Ready(Region),
    /// Not there yet, or being created; look again later.
    NotYet(&'static str),
}

/// A mapped region. Unmapped when dropped; the object in /dev/shm stays until
/// [`Region::destroy`] or [`Region::remove`].
pub struct Region {
    name: String,
    map: Mapping,
    info: BootInfo,
    replaced_generation: Option<u64>,
    /// (device, inode) of the object we mapped.
    identity: (u64, u64),
    /// This attachment's record in the holder table (None for an inspecting
    /// tool that holds nothing).
    session: Option<Session>,
}

/// What [`Region::gc`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Gc {
    pub reclaim: Reclaim,
    /// Set when a repair ran (it runs when a reclaim was uncertain, now or
    /// earlier, and no other process is attached).
    pub repair: Option<Repair>,
    /// A repair is owed but other processes are attached.
    pub repair_pending: bool,
    /// Live processes attached besides this one.
    pub others_alive: Vec<u32>,
}

impl Region {
    /// Create the region `name` of `bytes` bytes, replacing any stale one of
    /// that name (the seed's SHMMain::start).
    pub fn create(name: &str, bytes: u64, opts: &CreateOptions) -> Result<Region> {
        let mut log = |m: &str| {
            if opts.debug {
                eprintln!("shmtools: {m}");
            }
        };
        Region::create_logged(name, bytes, opts.mode, &mut log)
    }

    /// [`Region::create`] reporting each step to `log`.
    pub fn create_logged(
        name: &str,
        bytes: u64,
        mode: u32,
        log: &mut dyn FnMut(&str),
    ) -> Result<Region> {
        validate_name(name)?;
        validate_size(bytes)?;
        if mode & !0o777 != 0 {
            return Err(Error::invalid(format!(
                "mode {mode:#o} has bits beyond 0o777; give permission bits such as 0o600"
            )));
        }
        // (so this process can publish without a fence by its first
        // enqueue; see start_fast_publish)
        platform::start_fast_publish();
        let old_generation = stale_generation(name);
        if platform::shm_unlink(name)? {
            log(&format!("removed stale region '{name}'"));
        }
        log(&format!(
            "creating region '{name}' of {bytes} bytes, mode {mode:o}"
        ));
        let fd = platform::shm_create_exclusive(name, mode).map_err(|e| {
            if e.code() == ErrorCode::Exists {
                Error::new(
                    ErrorCode::Exists,
                    format!("another process created region '{name}' at the same moment; only one SHMMain may start a region"),
                )
            } else {
                e
            }
        })?;
        let made = (|| {
            let identity = platform::file_info(&fd, name)?.identity;
            platform::reserve(&fd, bytes, name)?;
            log(&format!("reserved {bytes} bytes in {}", platform::SHM_DIR));
            let len = usize::try_from(bytes).map_err(|_| Error::invalid("size too large"))?;
            let map = Mapping::map(&fd, len, name)?;
            log(&format!(
                "mapped at {:p} (offsets only are stored)",
                map.base()
            ));
            Ok::<_, Error>((map, identity))
        })();
        let (map, identity) = match made {
            Ok(m) => m,
            Err(e) => {
                // Leave nothing half-made in /dev/shm.
                let _ = platform::shm_unlink(name);
                return Err(e);
            }
        };
        let span = span_of(&map);
        let generation = old_generation.map_or(1, |g| g.saturating_add(1));
        let result = (|| {
            let pool = Pool::init(span, BOOT_SIZE)?;
            let dir = pool.allocate(PIPE_DIR_BYTES)?;
            span.fill(dir, PIPE_DIR_BYTES, 0)?;
            crate::pipes::Directory::init(crate::value::Values::new(pool), dir)?;
            let holders = Holders::create(pool, holders::capacity_for(bytes))?;
            let info = BootInfo {
                layout_version: boot::LAYOUT_VERSION,
                state: boot::STATE_INITIALIZING,
                region_size: bytes,
                generation,
                creator_pid: platform::current_pid(),
                creator_start_time: platform::current_process_start_time(),
                created_unix_ms: platform::now_unix_ms(),
                pool_offset: BOOT_SIZE,
                pool_size: bytes - BOOT_SIZE,
                pipe_dir_offset: dir,
                holders_offset: holders,
            };
            let b = boot::boot_block(span)?;
            boot::write(b, &info);
            boot::publish(b);
            Ok::<_, Error>(BootInfo {
                state: boot::STATE_READY,
                ..info
            })
        })();
        let info = match result {
            Ok(i) => i,
            Err(e) => {
                drop(map);
                let _ = platform::shm_unlink(name);
                return Err(e);
            }
        };
        log(&format!("region '{name}' ready (generation {generation})"));
        let mut region = Region {
            name: name.to_string(),
            map,
            info,
            replaced_generation: old_generation,
            identity,
            session: None,
        };
        region.register(false)?;
        Ok(region)
    }

    /// Take a record in the holder table, then give back what dead
    /// processes held (and repair, if one is owed and nobody else is here).
    fn register(&mut self, gc: bool) -> Result<()> {
        let s = {
            let v = self.values()?;
            Holders::open(self.span(), self.info.holders_offset)?.register(v)?
        };
        self.session = Some(s);
        if gc {
            // Housekeeping on behalf of the dead: its failure (a damaged
            // value, say) must not stop this process from attaching.
            let _ = self.gc();
        }
        Ok(())
    }

    /// Look once for the region: ready, not yet, or an error that waiting
    /// cannot fix (bad magic, corrupt header, permission, dead creator).
    pub fn try_attach(name: &str) -> Result<TryAttach> {
        Region::try_attach_as(name, Some(true))
    }

    /// [`Region::try_attach`] without the reclaim of the dead that attaching
    /// normally runs (for `shmtools gc`, which wants to report it).
    pub fn try_attach_without_gc(name: &str) -> Result<TryAttach> {
        Region::try_attach_as(name, Some(false))
    }

    /// Map a ready region without taking a holder record: for tools that
    /// look (`shmtools ls`, `inspect`) and must not count as attached. Values
    /// taken through such a region are not recorded in any ledger.
    pub fn try_inspect(name: &str) -> Result<TryAttach> {
        Region::try_attach_as(name, None)
    }

    /// `register`: None to take no record, Some(gc) to take one and then
    /// (if `gc`) reclaim the dead.
    fn try_attach_as(name: &str, register: Option<bool>) -> Result<TryAttach> {
        validate_name(name)?;
        if register.is_some() {
            // (so this process can publish without a fence by its first
            // enqueue; see start_fast_publish)
            platform::start_fast_publish();
        }
        let Some(fd) = platform::shm_open_existing(name)? else {
            return Ok(TryAttach::NotYet("the region does not exist yet"));
        };
        let st = platform::file_info(&fd, name)?;
        if !st.regular {
            return Err(Error::new(
                ErrorCode::Incompatible,
                format!("'{name}' in /dev/shm is not a regular file"),
            ));
        }
        if st.size == 0 {
            return Ok(TryAttach::NotYet(
                "the region is being sized by its creator",
            ));
        }
        if st.size < MIN_REGION {
            return Err(Error::new(
                ErrorCode::Incompatible,
                format!("'{name}' ({} bytes) is too small to be a shmtools region; remove it or pick another name", st.size),
            ));
        }
        let len = usize::try_from(st.size).map_err(|_| Error::invalid("region too large"))?;
        let map = Mapping::map(&fd, len, name)?;
        let span = span_of(&map);
        match boot::peek(span, name)? {
            Peek::Unwritten => Ok(TryAttach::NotYet("the region is being initialised")),
            Peek::NotReady(info) => {
                if info.state == boot::STATE_INITIALIZING
                    && !platform::is_process_alive(info.creator_pid, info.creator_start_time)
                {
                    return Err(Error::corrupt(format!(
                        "the creator of region '{name}' (pid {}) died before the region was ready; start a new SHMMain (it replaces this one)",
                        info.creator_pid
                    )));
                }
                Ok(TryAttach::NotYet("the region is not ready yet"))
            }
            Peek::Ready(info) => {
                Pool::open(span, info.pool_offset)?;
                Holders::open(span, info.holders_offset)?;
                let mut region = Region {
                    name: name.to_string(),
                    map,
                    info,
                    replaced_generation: None,
                    identity: st.identity,
                    session: None,
                };
                if let Some(gc) = register {
                    region.register(gc)?;
                }
                Ok(TryAttach::Ready(region))
            }
        }
    }

    /// Wait until the region exists and is ready, then map it.
    pub fn attach(name: &str, opts: &AttachOptions<'_>) -> Result<Region> {
        let deadline = platform::deadline(opts.timeout);
        let mut said = "";
        loop {
            match Region::try_attach(name)? {
                TryAttach::Ready(r) => {
                    if opts.debug {
                        eprintln!("shmtools: attached to region '{name}'");
                    }
                    return Ok(r);
                }
                TryAttach::NotYet(why) => {
                    if opts.debug && why != said {
                        eprintln!("shmtools: waiting for region '{name}': {why}");
                        said = why;
                    }
                }
            }
            let nap = opts.next_nap(deadline, &format!("region '{name}'"), "its SHMMain")?;
            platform::sleep(nap);
        }
    }

    /// Remove the name `name` from /dev/shm (mapped regions stay usable by the
    /// processes that have them). Returns false if there was none.
    pub fn remove(name: &str) -> Result<bool> {
        validate_name(name)?;
        platform::shm_unlink(name)
    }

    /// Mark the region CLOSING and remove its name (if the name still refers
    /// to this object). The mapping itself goes when the `Region` is dropped.
    pub fn destroy(&self) -> Result<bool> {
        if let Ok(b) = boot::boot_block(self.span()) {
            b.state.store(boot::STATE_CLOSING, Ordering::Release);
            platform::futex_wake(&b.state, u32::MAX);
        }
        // Only unlink the name if it still refers to our object, not to a
        // newer region created under the same name since.
        let ours = platform::shm_open_existing(&self.name)
            .ok()
            .flatten()
            .and_then(|fd| platform::file_info(&fd, &self.name).ok())
            .is_some_and(|st| st.identity == self.identity);
        if ours {
            platform::shm_unlink(&self.name)
        } else {
            Ok(false)
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// (device, inode) of the mapped object: equal for two mappings of the
    /// same region, different for a region re-created under the same name.
    pub fn identity(&self) -> (u64, u64) {
        self.identity
    }

    /// The boot block's fields as validated at create/attach time, with the
    /// state read now.
    pub fn info(&self) -> BootInfo {
        let state = boot::boot_block(self.span())
            .map(|b| b.state.load(Ordering::Acquire))
            .unwrap_or(u32::MAX);
        BootInfo { state, ..self.info }
    }

    /// The generation of the region this one replaced, if any.
    pub fn replaced_generation(&self) -> Option<u64> {
        self.replaced_generation
    }

    pub fn span(&self) -> Span<'_> {
        span_of(&self.map)
    }

    pub fn pool(&self) -> Result<Pool<'_>> {
        Pool::open(self.span(), self.info.pool_offset)
    }

    /// Value operations (store, load, Tab/Arr access, refcounts) on this
    /// region; references held through them are recorded in this process's
    /// ledger.
    pub fn values(&self) -> Result<crate::value::Values<'_>> {
        Ok(crate::value::Values::with_session(
            self.pool()?,
            self.session.as_ref(),
        ))
    }

    /// The holder table: who is attached and what they hold.
    pub fn holders(&self) -> Result<Holders<'_>> {
        Holders::open(self.span(), self.info.holders_offset)
    }

    /// This attachment's session, if it took a record.
    pub fn session(&self) -> Option<&Session> {
        self.session.as_ref()
    }

    /// Every attached process (and dead ones not yet reclaimed).
    pub fn holder_list(&self) -> Result<Vec<HolderInfo>> {
        self.holders()?
            .list(self.session.as_ref().map(Session::index))
    }

    /// Give back everything held by processes that are gone.
    pub fn reclaim_dead(&self) -> Result<Reclaim> {
        self.holders()?.reclaim_dead(self.values()?)
    }

    /// Reclaim the dead, then, if a reclaim could not be exact (a process
    /// died inside an operation) and no other live process is attached,
    /// repair: recount every reference from what is reachable and free the
    /// rest.
    pub fn gc(&self) -> Result<Gc> {
        let t = self.holders()?;
        let reclaim = t.reclaim_dead(self.values()?)?;
        let others_alive = t.others_alive()?;
        let owed = t.header().needs_repair.load(Ordering::Relaxed) != 0;
        let repair = if owed && others_alive.is_empty() {
            match crate::repair::repair(self) {
                Ok(r) => Some(r),
                Err(e) if e.code() == ErrorCode::Busy => None,
                Err(e) => return Err(e),
            }
        } else {
            None
        };
        Ok(Gc {
            reclaim,
            repair_pending: owed && repair.is_none(),
            repair,
            others_alive,
        })
    }

    /// Recount every reference from what is reachable (pipes and the
    /// ledgers) and free every block nothing reaches. Only when no other
    /// live process is attached (`ERR_SHM_BUSY` otherwise); this process must
    /// hold its references through handles (recorded), not raw slots.
    pub fn repair(&self) -> Result<Repair> {
        crate::repair::repair(self)
    }
}

impl Region {
    /// End this attachment's session now (it is ended when the Region is
    /// dropped anyway): whatever it still holds is released, and it no
    /// longer counts as attached. Later holds fail; later releases of what
    /// it held are no-ops. Idempotent.
    pub fn end_session(&self) -> Result<()> {
        match &self.session {
            Some(s) => self
                .holders()?
                .deregister(crate::value::Values::new(self.pool()?), s),
            None => Ok(()),
        }
    }
}

impl Drop for Region {
    fn drop(&mut self) {
        let _ = self.end_session();
    }
}

fn span_of(map: &Mapping) -> Span<'_> {
    // SAFETY: the span borrows the mapping, so it cannot outlive it; mmap
    // returns page-aligned memory of exactly `len` bytes.
    unsafe { Span::new(map.base(), map.len() as u64) }
}

/// Generation of the region currently named `name`, if it is a readable
/// shmtools region of our layout.
fn stale_generation(name: &str) -> Option<u64> {
    let fd = platform::shm_open_existing(name).ok()??;
    let st = platform::file_info(&fd, name).ok()?;
    if !st.regular || st.size < BOOT_SIZE {
        return None;
    }
    let map = Mapping::map(&fd, BOOT_SIZE as usize, name).ok()?;
    let b = boot::boot_block(span_of(&map)).ok()?;
    if b.magic.load(Ordering::Acquire) != boot::MAGIC
        || b.layout_version.load(Ordering::Relaxed) != boot::LAYOUT_VERSION
    {
        return None;
    }
    Some(b.generation.load(Ordering::Relaxed))
}
