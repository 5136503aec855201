//! `NativeRegion`: one mapped region and its pool, as the facade's SHMMain and
//! attach() see it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use napi::bindgen_prelude::{Buffer, Uint8Array, Unknown};
use napi::Env;
use napi_derive::napi;
use shmtools_core::{boot, ErrorCode, Region, TryAttach};

use crate::value::{adopt, store_in, HandleTable, Out, RegionRef};

use crate::convert::{err, js, to_u64};
use napi::Result;

#[napi(object)]
pub struct RegionInfo {
    pub name: String,
    pub magic: String,
    pub layout_version: u32,
    /// "initializing" | "ready" | "closing"
    pub state: String,
    pub size: f64,
    pub generation: f64,
    pub creator_pid: u32,
    pub creator_start_time: f64,
    pub created_at_ms: f64,
    pub pool_offset: f64,
    pub pool_size: f64,
    pub pipe_dir_offset: f64,
}

#[napi(object)]
pub struct PoolStats {
    pub bytes_total: f64,
    pub bytes_used: f64,
    pub bytes_free: f64,
    pub largest_free: f64,
    pub blocks_used: f64,
}

#[napi(object)]
pub struct PoolCheck {
    pub blocks_used: f64,
    pub blocks_free: f64,
    pub bytes_used: f64,
    pub bytes_free: f64,
    pub largest_free_block: f64,
}

/// A mapped region shared by its NativeRegion, the externals of its pipes
/// and its handle table (held by the JS handles and, until the region is
/// closed, its Region object) and every typed-array view taken from it: the
/// mapping goes when the last of them goes, so a view can never outlive the
/// memory under it.
pub struct RegionCell {
    pub region: Region,
    /// Set by close()/destroy(): handles then refuse to work (ERR_SHM_CLOSED),
    /// but finalizers may still release their references.
    pub closed: AtomicBool,
    /// The value handles JavaScript holds in this region (value.rs).
    pub handles: parking_lot::Mutex<HandleTable>,
}

impl Drop for RegionCell {
    /// The last owner of the mapping is gone (every handle's object, the
    /// region's and its pipes'): handles still in the table were never
    /// released, and their FinalizationRegistry went with them. Give their
    /// references back here.
    fn drop(&mut self) {
        let live = self.handles.get_mut().drain();
        if live.is_empty() {
            return;
        }
        if let Ok(v) = self.region.values() {
            let _b = v.busy();
            for (slot, held) in live {
                if v.unhold(held).unwrap_or(false) {
                    let _ = v.release(slot);
                }
            }
        }
    }
}

impl RegionCell {
    /// A closed mapping stops counting as attached once it holds nothing
    /// (its handles were all released); until then its session keeps their
    /// references recorded.
    pub fn end_session_if_idle(&self) {
        if self.closed.load(Ordering::Acquire)
            && self.region.session().is_some_and(|s| s.held_count() == 0)
        {
            let _ = self.region.end_session();
        }
    }

    pub fn open(&self) -> Result<&Region> {
        if self.closed.load(Ordering::Acquire) {
            return Err(err(
                ErrorCode::Closed,
                "the region was closed; attach again to use its values",
            ));
        }
        Ok(&self.region)
    }
}

#[napi]
pub struct NativeRegion {
    cell: Option<Arc<RegionCell>>,
    log: Vec<String>,
}

fn wrap(region: Region, log: Vec<String>) -> NativeRegion {
    NativeRegion {
        cell: Some(Arc::new(RegionCell {
            region,
            closed: AtomicBool::new(false),
            handles: Default::default(),
        })),
        log,
    }
}

/// Create a region (the seed's SHMMain::start). Replaces a stale one.
#[napi(catch_unwind)]
pub fn create_region(name: String, bytes: f64, mode: u32) -> Result<NativeRegion> {
    let bytes = to_u64(bytes, "bytes")?;
    let mut log = Vec::new();
    let r =
        Region::create_logged(&name, bytes, mode, &mut |m| log.push(m.to_string())).map_err(js)?;
    Ok(wrap(r, log))
}

/// One look for a region: the handle if it is ready, null if not yet.
#[napi(catch_unwind)]
pub fn try_attach_region(name: String, gc: Option<bool>) -> Result<Option<NativeRegion>> {
    let r = if gc.unwrap_or(true) {
        Region::try_attach(&name)
    } else {
        Region::try_attach_without_gc(&name)
    };
    match r.map_err(js)? {
        TryAttach::Ready(r) => Ok(Some(wrap(r, Vec::new()))),
        TryAttach::NotYet(_) => Ok(None),
    }
}

/// One look at a region for a tool that only reads it (`shmtools ls`,
/// `inspect`): no holder record is taken and nothing is reclaimed.
#[napi(catch_unwind)]
pub fn inspect_region(name: String) -> Result<Option<NativeRegion>> {
    match Region::try_inspect(&name).map_err(js)? {
        TryAttach::Ready(r) => Ok(Some(wrap(r, Vec::new()))),
        TryAttach::NotYet(_) => Ok(None),
    }
}

/// One attached process, as the holder table records it.
#[napi(object)]
pub struct HolderEntry {
    pub index: u32,
    pub pid: u32,
    pub start_time: f64,
    pub attached_at_ms: f64,
    /// References and raw blocks it holds now.
    pub held: f64,
    /// False for a process that is gone but not yet reclaimed.
    pub alive: bool,
    /// This very attachment.
    pub own: bool,
}

/// What a repair found and fixed.
#[napi(object)]
pub struct RepairReport {
    pub blocks_freed: f64,
    pub bytes_freed: f64,
    pub refcounts_fixed: f64,
    pub objects_live: f64,
}

/// What gc did.
#[napi(object)]
pub struct GcReport {
    /// Sessions of dead processes given back.
    pub sessions: f64,
    pub references: f64,
    pub raw_blocks: f64,
    /// Of those sessions, how many died inside an operation.
    pub uncertain: f64,
    /// Set when a repair ran.
    pub repair: Option<RepairReport>,
    /// A repair is owed but other processes are attached.
    pub repair_pending: bool,
    pub others_alive: Vec<u32>,
}

fn repair_report(r: shmtools_core::Repair) -> RepairReport {
    RepairReport {
        blocks_freed: r.blocks_freed as f64,
        bytes_freed: r.bytes_freed as f64,
        refcounts_fixed: r.refcounts_fixed as f64,
        objects_live: r.objects_live as f64,
    }
}

/// Check a region name and size against the core's rules without creating.
#[napi(catch_unwind)]
pub fn check_region_args(name: String, bytes: f64) -> Result<()> {
    let bytes = to_u64(bytes, "bytes")?;
    shmtools_core::region::validate_name(&name).map_err(js)?;
    shmtools_core::region::validate_size(bytes).map_err(js)
}

/// Remove a region's name from /dev/shm; false if there was none.
#[napi(catch_unwind)]
pub fn remove_region(name: String) -> Result<bool> {
    Region::remove(&name).map_err(js)
}

#[napi]
impl NativeRegion {
    fn cell(&self) -> Result<&Arc<RegionCell>> {
        self.cell.as_ref().ok_or_else(|| {
            err(
                ErrorCode::Closed,
                "the region handle is closed; attach again to use the region",
            )
        })
    }

    fn region(&self) -> Result<&Region> {
        Ok(&self.cell()?.region)
    }

    pub(crate) fn cell_ref(&self) -> Result<&Arc<RegionCell>> {
        self.cell()
    }

    /// Identity of the mapped object ("dev:inode"): equal for every mapping of
    /// one region, in any process.
    #[napi(catch_unwind)]
    pub fn region_key(&self) -> Result<String> {
        let (dev, ino) = self.region()?.identity();
        Ok(format!("{dev}:{ino}"))
    }

    /// Build a value from its wire encoding: a handle for containers, strings
    /// and arrays (owning one reference), the wire bytes back for scalars.
    #[napi(catch_unwind)]
    pub fn store(&self, wire: Buffer) -> Result<Out> {
        store_in(self.cell()?, &wire)
    }

    /// A new handle to the live shared value at `offset` (reference + 1),
    /// as [`Out`]'s BigInt.
    #[napi(catch_unwind)]
    pub fn value_at(&self, offset: f64) -> Result<u64> {
        let cell = self.cell()?;
        let v = cell.region.values().map_err(js)?;
        let _b = v.busy();
        let slot = v.slot_of(to_u64(offset, "offset")?).map_err(js)?;
        v.retain(slot).map_err(js)?;
        adopt(cell, slot)
    }

    /// This region as the value handle functions take it (value.rs).
    #[napi(catch_unwind)]
    pub fn fast(&self) -> Result<RegionRef> {
        Ok(RegionRef::new(self.cell()?.clone()))
    }

    /// This region as the hand-written value calls take it (fastcall.rs).
    #[napi(catch_unwind, ts_return_type = "object")]
    pub fn raw<'env>(&self, env: &'env Env) -> Result<Unknown<'env>> {
        let v = crate::fastcall::region_external(env, self.cell()?.clone())?;
        // SAFETY: `v` is a value just made in this environment.
        Ok(unsafe { Unknown::from_raw_unchecked(env.raw(), v) })
    }

    /// Steps logged while creating (for the `debug` option).
    #[napi(catch_unwind)]
    pub fn take_log(&mut self) -> Vec<String> {
        std::mem::take(&mut self.log)
    }

    #[napi(catch_unwind)]
    pub fn info(&self) -> Result<RegionInfo> {
        let r = self.region()?;
        let i = r.info();
        Ok(RegionInfo {
            name: r.name().to_string(),
            magic: String::from_utf8_lossy(&boot::MAGIC.to_le_bytes()).into_owned(),
            layout_version: i.layout_version,
            state: i.state_name().to_string(),
            size: i.region_size as f64,
            generation: i.generation as f64,
            creator_pid: i.creator_pid,
            creator_start_time: i.creator_start_time as f64,
            created_at_ms: i.created_unix_ms as f64,
            pool_offset: i.pool_offset as f64,
            pool_size: i.pool_size as f64,
            pipe_dir_offset: i.pipe_dir_offset as f64,
        })
    }

    /// Generation of the region this one replaced (creator only), or null.
    #[napi(catch_unwind)]
    pub fn replaced_generation(&self) -> Result<Option<f64>> {
        Ok(self.region()?.replaced_generation().map(|g| g as f64))
    }

    #[napi(catch_unwind)]
    pub fn pool_stats(&self) -> Result<PoolStats> {
        let s = self.region()?.pool().map_err(js)?.stats().map_err(js)?;
        Ok(PoolStats {
            bytes_total: s.bytes_total as f64,
            bytes_used: s.bytes_used as f64,
            bytes_free: s.bytes_free as f64,
            largest_free: s.largest_free as f64,
            blocks_used: s.blocks_used as f64,
        })
    }

    #[napi(catch_unwind)]
    pub fn pool_check(&self) -> Result<PoolCheck> {
        let c = self.region()?.pool().map_err(js)?.check().map_err(js)?;
        Ok(PoolCheck {
            blocks_used: c.blocks_used as f64,
            blocks_free: c.blocks_free as f64,
            bytes_used: c.bytes_used as f64,
            bytes_free: c.bytes_free as f64,
            largest_free_block: c.largest_free_block as f64,
        })
    }

    #[napi(catch_unwind)]
    pub fn allocate(&self, bytes: f64) -> Result<f64> {
        let n = to_u64(bytes, "bytes")?;
        let r = self.region()?;
        let pool = r.pool().map_err(js)?;
        let v = r.values().map_err(js)?;
        let _b = v.busy();
        let off = pool.allocate(n).map_err(js)?;
        if let Some(s) = r.session() {
            // Recorded, so the block is freed if this process dies holding it.
            if let Err(e) = s.hold_raw(pool, off) {
                let _ = pool.free(off);
                return Err(js(e));
            }
        }
        Ok(off as f64)
    }

    #[napi(catch_unwind)]
    pub fn free(&self, offset: f64) -> Result<()> {
        let off = to_u64(offset, "offset")?;
        let r = self.region()?;
        let pool = r.pool().map_err(js)?;
        let v = r.values().map_err(js)?;
        let _b = v.busy();
        // Checked before unrecording, so a bad offset leaves the ledger alone.
        pool.capacity(off).map_err(js)?;
        if let Some(s) = r.session() {
            s.unhold_raw(pool, off).map_err(js)?;
        }
        pool.free(off).map_err(js)
    }

    #[napi(catch_unwind)]
    pub fn capacity(&self, offset: f64) -> Result<f64> {
        let off = to_u64(offset, "offset")?;
        let c = self
            .region()?
            .pool()
            .map_err(js)?
            .capacity(off)
            .map_err(js)?;
        Ok(c as f64)
    }

    /// Copy `data` into the allocated block at `offset`, starting `at` bytes in.
    #[napi(catch_unwind)]
    pub fn write(&self, offset: f64, data: Uint8Array, at: f64) -> Result<()> {
        let (start, _) = self.block_range(offset, at, data.len())?;
        self.region()?.span().write(start, &data).map_err(js)
    }

    /// Copy `length` bytes out of the allocated block at `offset`, from `at`.
    #[napi(catch_unwind)]
    pub fn read(&self, offset: f64, length: f64, at: f64) -> Result<Buffer> {
        let len = to_u64(length, "length")?;
        let len =
            usize::try_from(len).map_err(|_| err(ErrorCode::InvalidArg, "length too large"))?;
        let (start, _) = self.block_range(offset, at, len)?;
        let mut out = vec![0u8; len];
        self.region()?.span().read(start, &mut out).map_err(js)?;
        Ok(out.into())
    }

    fn block_range(&self, offset: f64, at: f64, len: usize) -> Result<(u64, u64)> {
        let off = to_u64(offset, "offset")?;
        let at = to_u64(at, "at")?;
        let cap = self
            .region()?
            .pool()
            .map_err(js)?
            .capacity(off)
            .map_err(js)?;
        match at.checked_add(len as u64) {
            Some(end) if end <= cap => Ok((off + at, end)),
            _ => Err(err(
                ErrorCode::InvalidArg,
                format!("{len} bytes at {at} do not fit the block's {cap} bytes"),
            )),
        }
    }

    /// Every attached process (and dead ones not yet reclaimed).
    #[napi(catch_unwind)]
    pub fn holders(&self) -> Result<Vec<HolderEntry>> {
        let list = self.region()?.holder_list().map_err(js)?;
        Ok(list
            .into_iter()
            .map(|h| HolderEntry {
                index: h.index,
                pid: h.pid,
                start_time: h.start_time as f64,
                attached_at_ms: h.attached_unix_ms as f64,
                held: h.held as f64,
                alive: h.alive,
                own: h.own,
            })
            .collect())
    }

    /// Give back what dead processes held; repair if owed and alone.
    #[napi(catch_unwind)]
    pub fn gc(&self) -> Result<GcReport> {
        let g = self.region()?.gc().map_err(js)?;
        Ok(GcReport {
            sessions: g.reclaim.sessions as f64,
            references: g.reclaim.references as f64,
            raw_blocks: g.reclaim.raw_blocks as f64,
            uncertain: g.reclaim.uncertain as f64,
            repair: g.repair.map(repair_report),
            repair_pending: g.repair_pending,
            others_alive: g.others_alive,
        })
    }

    /// Recount every reference from what is reachable and free the rest
    /// (ERR_SHM_BUSY while another process is attached).
    #[napi(catch_unwind)]
    pub fn repair(&self) -> Result<RepairReport> {
        Ok(repair_report(self.region()?.repair().map_err(js)?))
    }

    /// Unmap (once no handle or view of this mapping is left); the region
    /// itself stays in /dev/shm. Idempotent.
    #[napi(catch_unwind)]
    pub fn close(&mut self) {
        if let Some(c) = self.cell.take() {
            c.closed.store(true, Ordering::Release);
            c.end_session_if_idle();
        }
    }

    /// Remove the region's name (if it is still ours) and close.
    #[napi(catch_unwind)]
    pub fn destroy(&mut self) -> Result<bool> {
        match self.cell.take() {
            Some(c) => {
                c.closed.store(true, Ordering::Release);
                c.end_session_if_idle();
                c.region.destroy().map_err(js)
            }
            None => Ok(false),
        }
    }

    #[napi(getter)]
    pub fn closed(&self) -> bool {
        self.cell.is_none()
    }
}
