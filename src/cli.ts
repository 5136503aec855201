/**
 * The `shmtools` command: list, inspect, remove and watch regions.
 *
 *   shmtools ls [--json]
 *   shmtools inspect <region> [--json]
 *   shmtools rm <region>...
 *   shmtools gc <region> [--json]
 *   shmtools top <region> [--interval ms] [--count n]
 *
 * It only reads what a region says about itself (through the same validated
 * paths as the library, without counting as an attached process) and never
 * changes a region except with `rm` and `gc`.
 */
import { existsSync, readdirSync, statSync } from 'node:fs'

import * as binding from '../binding'
import { ErrorCodes, ShmError } from './errors'
import { SHMMain } from './region'

const SHM_DIR = '/dev/shm'

export interface RegionSummary {
  name: string
  size: number
  used: number
  pipes: number
  generation: number
  creatorPid: number
  creatorAlive: boolean
  createdAt: string
  mode: string
  owner: number
  /** Pids of the live processes attached. */
  attached: number[]
  /** Attached processes that died and whose share is not reclaimed yet. */
  dead: number
  /** Nobody alive is attached: a left-over region (shmtools rm removes it). */
  stale: boolean
  /** Parts of the region that could not be read (damaged bytes); absent when all could. */
  error?: string
}

export interface PipeSummary {
  name: string
  depth: number
  capacity: number
  highWater: number
  totalEnqueued: number
  totalDequeued: number
  creatorPid: number
}

export interface RegionReport extends RegionSummary {
  layoutVersion: number
  state: string
  pool: ReturnType<binding.NativeRegion['poolStats']>
  poolCheck: ReturnType<binding.NativeRegion['poolCheck']> | { error: string }
  pipeList: PipeSummary[]
  holders: binding.HolderEntry[]
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0)
    return true
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM'
  }
}

/**
 * One look at a region without waiting and without taking a holder record;
 * null if `name` is not a shmtools region.
 */
function open(name: string): binding.NativeRegion | null {
  try {
    return binding.inspectRegion(name) ?? null
  } catch {
    return null
  }
}

function summary(name: string, r: binding.NativeRegion): RegionSummary {
  const info = r.info()
  const st = statSync(`${SHM_DIR}/${name}`)
  // A damaged region is still listed: each part that cannot be read says so
  // in `error` instead of failing the whole listing.
  const errors: string[] = []
  const attempt = <T>(f: () => T, fallback: T): T => {
    try {
      return f()
    } catch (e) {
      errors.push((e as Error).message)
      return fallback
    }
  }
  const holders = attempt(() => r.holders(), [])
  const attached = [...new Set(holders.filter((h) => h.alive).map((h) => h.pid))]
  return {
    name,
    size: info.size,
    used: attempt(() => r.poolStats().bytesUsed, 0),
    pipes: attempt(() => r.listPipes().length, 0),
    generation: info.generation,
    creatorPid: info.creatorPid,
    creatorAlive: alive(info.creatorPid),
    createdAt: new Date(info.createdAtMs).toISOString(),
    mode: (st.mode & 0o777).toString(8).padStart(4, '0'),
    owner: st.uid,
    attached,
    dead: holders.filter((h) => !h.alive).length,
    stale: attached.length === 0,
    ...(errors.length ? { error: errors.join('; ') } : {}),
  }
}

/** Every shmtools region in /dev/shm that this user can open. */
export function list(): RegionSummary[] {
  const out: RegionSummary[] = []
  for (const name of readdirSync(SHM_DIR).sort()) {
    const r = open(name)
    if (!r) continue
    try {
      out.push(summary(name, r))
    } catch (e) {
      // Removed by its owner while we looked: not a region any more.
      if (existsSync(`${SHM_DIR}/${name}`)) throw e
    } finally {
      r.close()
    }
  }
  return out
}

/** Boot block, pool figures and a full consistency check, and every pipe. */
export function inspectRegion(name: string): RegionReport {
  const r = open(name)
  if (!r) {
    throw new ShmError(ErrorCodes.NOT_FOUND, `'${name}' is not a shmtools region this user can open (see: shmtools ls)`)
  }
  try {
    const info = r.info()
    let poolCheck: RegionReport['poolCheck']
    try {
      poolCheck = r.poolCheck()
    } catch (e) {
      poolCheck = { error: (e as Error).message }
    }
    const pipeList = r.listPipes().map((p) => {
      const q = r.findPipe(p.name)
      const s = q?.stats()
      return {
        name: p.name,
        depth: s?.depth ?? 0,
        capacity: p.capacity,
        highWater: s?.highWater ?? 0,
        totalEnqueued: s?.totalEnqueued ?? 0,
        totalDequeued: s?.totalDequeued ?? 0,
        creatorPid: p.creatorPid,
      }
    })
    return {
      ...summary(name, r),
      layoutVersion: info.layoutVersion,
      state: info.state,
      pool: r.poolStats(),
      poolCheck,
      pipeList,
      holders: r.holders(),
    }
  } finally {
    r.close()
  }
}

function table(rows: (string | number)[][]): string {
  const widths = rows[0].map((_, i) => Math.max(...rows.map((r) => String(r[i]).length)))
  return rows.map((r) => r.map((c, i) => String(c).padEnd(widths[i])).join('  ').trimEnd()).join('\n')
}

const mib = (n: number) => (n >= 1 << 20 ? `${(n / (1 << 20)).toFixed(1)} MiB` : `${(n / 1024).toFixed(1)} KiB`)

function printList(rows: RegionSummary[]): string {
  if (rows.length === 0) return 'no shmtools regions in /dev/shm'
  return table([
    ['REGION', 'SIZE', 'USED', 'PIPES', 'ATTACHED', 'STATE', 'GEN', 'CREATOR', 'MODE', 'CREATED'],
    ...rows.map((r) => [
      r.name,
      mib(r.size),
      mib(r.used),
      r.pipes,
      r.attached.length ? r.attached.join(',') : '-',
      r.error
        ? `DAMAGED (shmtools inspect ${r.name}): ${r.error}`
        : (r.stale ? 'stale' : 'live') + (r.dead ? ` (${r.dead} dead to reclaim: shmtools gc)` : ''),
      r.generation,
      `${r.creatorPid}${r.creatorAlive ? '' : ' (exited)'}`,
      r.mode,
      r.createdAt,
    ]),
  ])
}

function printReport(r: RegionReport): string {
  const check = 'error' in r.poolCheck ? `CORRUPT: ${r.poolCheck.error}` : `consistent (${r.poolCheck.blocksUsed} used, ${r.poolCheck.blocksFree} free blocks)`
  const lines = [
    `region     ${r.name}`,
    `layout     version ${r.layoutVersion}, state ${r.state}, generation ${r.generation}`,
    `size       ${r.size} bytes (${mib(r.size)}), mode ${r.mode}, owner uid ${r.owner}`,
    `creator    pid ${r.creatorPid}${r.creatorAlive ? ' (running)' : ' (exited)'}, ${r.createdAt}`,
    `pool       ${r.pool.bytesUsed} of ${r.pool.bytesTotal} bytes used in ${r.pool.blocksUsed} blocks; largest free ${r.pool.largestFree}`,
    `check      ${check}`,
    '',
  ]
  const holders = r.holders.length
    ? table([
        ['HOLDER', 'PID', 'ALIVE', 'HELD', 'ATTACHED'],
        ...r.holders.map((h) => [h.index, h.pid, h.alive ? 'yes' : 'no (shmtools gc reclaims it)', h.held, new Date(h.attachedAtMs).toISOString()]),
      ])
    : 'no attached processes (stale)'
  const pipes = r.pipeList.length
    ? table([
        ['PIPE', 'DEPTH', 'CAPACITY', 'HIGH-WATER', 'ENQUEUED', 'DEQUEUED', 'CREATOR'],
        ...r.pipeList.map((p) => [p.name, p.depth, p.capacity, p.highWater, p.totalEnqueued, p.totalDequeued, p.creatorPid]),
      ])
    : 'no pipes'
  return [...lines, holders, '', pipes].join('\n')
}

/** Reclaim what dead processes held, and repair if owed and nobody else is attached. */
export function gcRegion(name: string): binding.GcReport {
  let r: binding.NativeRegion | null
  try {
    // Attach without the automatic reclaim, so this run reports what it did.
    r = binding.tryAttachRegion(name, false) ?? null
  } catch (e) {
    throw new ShmError(ErrorCodes.NOT_FOUND, `'${name}' is not a shmtools region this user can open: ${(e as Error).message}`)
  }
  if (!r) throw new ShmError(ErrorCodes.NOT_FOUND, `'${name}' is not a ready shmtools region (see: shmtools ls)`)
  try {
    return r.gc()
  } finally {
    r.close()
  }
}

function printGc(name: string, g: binding.GcReport): string {
  const lines = [
    `${name}: reclaimed ${g.sessions} dead process${g.sessions === 1 ? '' : 'es'}: ${g.references} references, ${g.rawBlocks} raw blocks` +
      (g.uncertain ? ` (${g.uncertain} died inside an operation)` : ''),
  ]
  if (g.repair) {
    lines.push(`repaired: ${g.repair.blocksFreed} blocks (${g.repair.bytesFreed} bytes) freed, ${g.repair.refcountsFixed} counts corrected, ${g.repair.objectsLive} values live`)
  } else if (g.repairPending) {
    lines.push(`a repair is owed; it runs when no other process is attached (now: ${g.othersAlive.join(', ')})`)
  }
  return lines.join('\n')
}

async function top(name: string, intervalMs: number, count: number, write: (s: string) => void): Promise<void> {
  let last = inspectRegion(name)
  let lastAt = performance.now()
  for (let i = 0; count === 0 || i < count; i++) {
    await new Promise((r) => setTimeout(r, intervalMs))
    const now = inspectRegion(name)
    const at = performance.now()
    const secs = (at - lastAt) / 1000
    const before = new Map(last.pipeList.map((p) => [p.name, p]))
    const rows = now.pipeList.map((p) => {
      const b = before.get(p.name)
      const inRate = b ? (p.totalEnqueued - b.totalEnqueued) / secs : 0
      const outRate = b ? (p.totalDequeued - b.totalDequeued) / secs : 0
      const bar = '#'.repeat(Math.round((p.depth / p.capacity) * 20)).padEnd(20, '.')
      return [p.name, `${p.depth}/${p.capacity}`, bar, inRate.toFixed(0), outRate.toFixed(0)]
    })
    const screen =
      `${name}: ${mib(now.pool.bytesUsed)} of ${mib(now.pool.bytesTotal)} used, ${now.pipeList.length} pipes, every ${intervalMs} ms\n` +
      (rows.length ? table([['PIPE', 'DEPTH', 'FILL', 'IN/s', 'OUT/s'], ...rows]) : 'no pipes')
    // A refreshing view on a terminal; plain successive frames otherwise.
    write(process.stdout.isTTY ? `\x1b[H\x1b[2J${screen}\n` : `${screen}\n\n`)
    last = now
    lastAt = at
  }
}

const USAGE = `usage:
  shmtools ls [--json]                 regions in /dev/shm: size, use, pipes, creator
  shmtools inspect <region> [--json]   boot block, pool figures and check, pipes
  shmtools rm <region>...              remove regions (processes that map them keep them)
  shmtools gc <region> [--json]        give back what dead processes held; repair
                                       when owed and nobody else is attached
  shmtools top <region> [--interval ms] [--count n]
                                       live pipe depths and message rates`

/** Run the command line `args`; returns the exit code. */
export async function main(args: string[], write: (s: string) => void = (s) => process.stdout.write(s)): Promise<number> {
  const json = args.includes('--json')
  const opt = (flag: string, dflt: number) => {
    const i = args.indexOf(flag)
    if (i < 0) return dflt
    const v = Number(args[i + 1])
    if (!Number.isInteger(v) || v < 0) throw new ShmError(ErrorCodes.INVALID_ARG, `${flag} needs a whole number`)
    return v
  }
  const positional = args.filter((a, i) => !a.startsWith('--') && !['--interval', '--count'].includes(args[i - 1]))
  const [cmd, ...rest] = positional
  const out = (v: unknown, human: string) => write(json ? `${JSON.stringify(v, null, 2)}\n` : `${human}\n`)
  switch (cmd) {
    case 'ls': {
      const rows = list()
      out(rows, printList(rows))
      return 0
    }
    case 'inspect': {
      if (rest.length !== 1) break
      const r = inspectRegion(rest[0])
      out(r, printReport(r))
      return 'error' in r.poolCheck ? 1 : 0
    }
    case 'rm': {
      if (rest.length === 0) break
      let missing = 0
      for (const name of rest) {
        const removed = SHMMain.remove(name)
        if (!removed) missing++
        write(`${removed ? 'removed' : 'no such region'}: ${name}\n`)
      }
      return missing ? 1 : 0
    }
    case 'gc': {
      if (rest.length !== 1) break
      const g = gcRegion(rest[0])
      out(g, printGc(rest[0], g))
      return 0
    }
    case 'top': {
      if (rest.length !== 1) break
      await top(rest[0], opt('--interval', 1000), opt('--count', 0), write)
      return 0
    }
  }
  write(`${USAGE}\n`)
  return cmd === undefined || cmd === 'help' ? 0 : 2
}
