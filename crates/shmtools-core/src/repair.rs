//! Repair: recount every reference from what is reachable and free every
//! block nothing reaches. The safety net behind the holder ledgers: it fixes
//! what a process killed *inside* an operation left behind (a reference
//! taken but not yet recorded, a subtree half freed, a block allocated but
//! not yet linked), which no per-process record can tell apart.
//!
//! It runs only when no other live process is attached (the table lock is
//! held throughout, so none can attach meanwhile), because it must see every
//! reference: the roots are the pipe directory, every queue's packets, and
//! the ledgers of the sessions still live (this process's own). It first
//! walks and validates everything without writing; a contradiction aborts
//! with `ERR_SHM_CORRUPT` and changes nothing.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering::Relaxed;

use crate::error::{Error, ErrorCode, Result};
use crate::holders::{ledger_entries, Repair, STATE_LIVE};
use crate::pipes::Directory;
use crate::pool::HEADER;
use crate::queue::Queue;
use crate::region::Region;
use crate::value::{Slot, T_ARR, T_TAB};

pub(crate) fn repair(region: &Region) -> Result<Repair> {
    let table = region.holders()?;
    let _g = table.lock_for_repair();
    let values = region.values()?;
    let pool = values.pool();
    // The dead first, so their ledgers are given back, not swept.
    table.reclaim_locked(values)?;
    let others = table.others_alive()?;
    if !others.is_empty() {
        return Err(Error::new(
            ErrorCode::Busy,
            format!(
                "cannot repair while other processes are attached (pids {others:?}); stop them first, or let gc reclaim what the dead held"
            ),
        ));
    }

    // Blocks everyone agrees exist, and references to objects.
    let mut marked: HashSet<u64> = HashSet::new();
    let mut refs: HashMap<u64, (u8, u32)> = HashMap::new();
    let mut todo: Vec<Slot> = Vec::new();
    let mut add_ref = |s: Slot, todo: &mut Vec<Slot>| -> Result<()> {
        let e = refs.entry(s.bits).or_insert((s.tag, 0));
        if e.0 != s.tag {
            return Err(Error::corrupt(format!(
                "object {} is referenced as two different kinds",
                s.bits
            )));
        }
        if e.1 == 0 {
            todo.push(s);
        }
        e.1 = e.1.saturating_add(1);
        Ok(())
    };

    marked.insert(table.offset());
    for i in 0..table.capacity() {
        let r = table.record(i)?;
        if r.state.load(Relaxed) != STATE_LIVE {
            continue;
        }
        // Only sessions of this very process are live here (others_alive is
        // empty, the dead were reclaimed above): their ledgers are roots.
        // They must be quiet and fully recorded: another thread inside an
        // operation, or a reference the ledger could not take, holds what
        // this walk would not see (and would free). (Nothing is written
        // before the walk ends, so refusing here changes nothing.)
        if r.busy.load(Relaxed) != 0 {
            return Err(Error::new(
                ErrorCode::Busy,
                "cannot repair while another thread of this process is inside an operation on the region; repair when it is idle",
            ));
        }
        if r.unrecorded.load(Relaxed) != 0 {
            return Err(Error::new(
                ErrorCode::Busy,
                "cannot repair from this process: it holds references its ledger could not record (the pool was full); close its regions and repair from a fresh attachment",
            ));
        }
        let ledger = r.ledger.load(Relaxed);
        if ledger != 0 {
            marked.insert(ledger);
            let (slots, raws) = ledger_entries(pool, ledger)?;
            marked.extend(raws);
            for s in slots {
                add_ref(s, &mut todo)?;
            }
        }
    }
    let dir = Directory::open(region)?;
    marked.extend(dir.blocks()?);
    for p in dir.list()? {
        let q = Queue::open(values, p.queue)?;
        let (blocks, slots) = q.parts()?;
        marked.extend(blocks);
        for s in slots {
            add_ref(s, &mut todo)?;
        }
    }
    let mut objects = Vec::new();
    while let Some(s) = todo.pop() {
        let o = values.obj_dying(s)?;
        marked.insert(o.off);
        objects.push(o.off);
        let (blocks, slots) = match o.kind {
            T_TAB => values.tab_parts(o.off)?,
            T_ARR => values.arr_parts(o.off)?,
            _ => continue,
        };
        marked.extend(blocks);
        for c in slots {
            add_ref(c, &mut todo)?;
        }
    }
    let used = pool.used_blocks()?;
    let in_use: HashSet<u64> = used.iter().map(|&(p, _)| p).collect();
    if let Some(m) = marked.iter().find(|m| !in_use.contains(m)) {
        return Err(Error::corrupt(format!(
            "block {m} is reachable but not allocated; the region cannot be repaired in place"
        )));
    }

    // Nothing was written so far. Now fix counts, then free the unreached.
    let mut out = Repair::default();
    for off in &objects {
        let want = refs.get(off).map_or(0, |e| e.1);
        let h = values.header_at(*off)?;
        if h.refcount.load(Relaxed) != want {
            h.refcount.store(want, Relaxed);
            out.refcounts_fixed += 1;
        }
    }
    out.objects_live = objects.len() as u64;
    for (p, cap) in used {
        if !marked.contains(&p) {
            // Make a stale slot that still names it fail validation.
            let _ = pool.span().u64_at(p).map(|w| w.store(0, Relaxed));
            let _ = pool.span().u64_at(p + 8).map(|w| w.store(0, Relaxed));
            pool.free(p)?;
            out.blocks_freed += 1;
            out.bytes_freed += cap + HEADER;
        }
    }
    let h = table.header();
    h.needs_repair.store(0, Relaxed);
    h.repairs.fetch_add(1, Relaxed);
    Ok(out)
}
