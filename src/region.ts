/**
 * Regions: SHMMain creates one; attach()/attachSync() wait for one and map it.
 */
import { setTimeout as sleep } from 'node:timers/promises'

import * as binding from '../binding'
import type { GcReport, HolderEntry, NativeRegion, PoolCheck, PoolStats, RegionInfo, RepairReport } from '../binding'
import { logger, type Log } from './debug'
import { forgetHandles, wrap, type SharedArr, type SharedTab, type SharedTyped } from './values'
import { AbortError, ErrorCodes, native, ShmArgumentError, ShmError } from './errors'
import {
  checkBreakChecker,
  checkCount,
  checkMicroSleep,
  checkName,
  checkSignal,
  checkTimeout,
} from './options'

export type { GcReport, HolderEntry, PoolCheck, PoolStats, RegionInfo, RepairReport }

/** Options of `attach()` / `attachSync()` (and of ServerSide/ClientSide start). */
export interface AttachOptions {
  /** Give up with `ERR_SHM_TIMEOUT` after this many milliseconds (default: wait forever). */
  timeoutMs?: number
  /** Abort the wait (async form; the sync form checks it between looks). */
  signal?: AbortSignal
  /** The seed's BreakChecker: called between looks; returning true aborts the wait. */
  breakChecker?: () => boolean
  /** Pause between looks while the region does not exist yet, in µs (default 10 000). */
  microSleepUs?: number
  /** Log each step to stderr (otherwise to NODE_DEBUG=shmtools). */
  debug?: boolean
}

/**
 * The pool allocator inside a region. Blocks are named by their offset from
 * the region's start, valid in every process that maps the region.
 */
export class Pool {
  readonly #region: Region

  /** @internal */
  constructor(region: Region) {
    this.#region = region
  }

  /** The region this pool belongs to. */
  region(): Region {
    this.#region.native()
    return this.#region
  }

  /** Usage figures, the same from every process. */
  stats(): PoolStats {
    return native(() => this.#region.native().poolStats())
  }

  /** Walk every block and free list and verify the allocator's invariants. */
  check(): PoolCheck {
    return native(() => this.#region.native().poolCheck())
  }

  /** Allocate `bytes` (16-byte aligned); returns the block's offset. */
  allocate(bytes: number): number {
    checkCount(bytes, 'bytes')
    return native(() => this.#region.native().allocate(bytes))
  }

  /** Return a block to the pool. Freeing twice is an error, not a crash. */
  free(offset: number): void {
    checkCount(offset, 'offset')
    native(() => this.#region.native().free(offset))
  }

  /** Usable bytes of an allocated block (at least what was asked for). */
  capacity(offset: number): number {
    checkCount(offset, 'offset')
    return native(() => this.#region.native().capacity(offset))
  }

  /** Copy bytes into an allocated block, `at` bytes from its start. */
  write(offset: number, data: Uint8Array, at = 0): void {
    checkCount(offset, 'offset')
    checkCount(at, 'at')
    if (!(data instanceof Uint8Array)) throw new ShmArgumentError('data must be a Uint8Array or Buffer')
    native(() => this.#region.native().write(offset, data, at))
  }

  /** Copy `length` bytes out of an allocated block, `at` bytes from its start. */
  read(offset: number, length: number, at = 0): Buffer {
    checkCount(offset, 'offset')
    checkCount(length, 'length')
    checkCount(at, 'at')
    return native(() => this.#region.native().read(offset, length, at))
  }
}

/** A mapped region. Closing unmaps it; the region stays in /dev/shm. */
export class Region {
  readonly name: string
  #native: NativeRegion | undefined
  #pool: Pool
  #key: string | undefined

  /** @internal */
  constructor(name: string, handle: NativeRegion) {
    this.name = name
    this.#native = handle
    this.#pool = new Pool(this)
  }

  /** @internal */
  native(): NativeRegion {
    // Closed state is tracked here (close/destroy clear #native), so the hot
    // path makes no extra call into native code.
    if (this.#native === undefined) {
      throw new ShmError(ErrorCodes.CLOSED, `region '${this.name}' is closed; attach again to use it`)
    }
    return this.#native
  }

  get closed(): boolean {
    return this.#native === undefined
  }

  /** Identity of the mapped object ("dev:inode"): the same for every mapping of this region. */
  regionKey(): string {
    this.#key ??= native(() => this.native().regionKey())
    return this.#key
  }

  /**
   * A new handle (one more reference) to the shared value at `offset` — how
   * a value's `offset`, passed by any means, becomes a handle in another
   * process or worker thread.
   */
  valueAt(offset: number): SharedTab | SharedArr | SharedTyped {
    checkCount(offset, 'offset')
    return wrap(this, native(() => this.native().valueAt(offset))) as SharedTab | SharedArr | SharedTyped
  }

  /** The boot block: magic, layout version, state, size, generation, creator, offsets. */
  info(): RegionInfo {
    return native(() => this.native().info())
  }

  pool(): Pool {
    this.native()
    return this.#pool
  }

  /**
   * Every process attached to this region (one entry per attachment), with
   * how many references each holds; `alive: false` marks a process that is
   * gone and whose share has not been reclaimed yet.
   */
  holders(): HolderEntry[] {
    return native(() => this.native().holders())
  }

  /**
   * Give back everything held by attached processes that died (their values,
   * raw blocks and packets in hand). If one of them died inside an operation
   * (`uncertain`), a repair is owed; it runs here when no other process is
   * attached (`repairPending` says it is still owed). Attaching, and a wait
   * that times out, reclaim the dead on their own as well.
   */
  gc(): GcReport {
    return native(() => this.native().gc())
  }

  /**
   * Recount every reference from what is reachable (pipes, and the handles
   * of this process) and free every block nothing reaches. Refused with
   * `ERR_SHM_BUSY` while another process is attached.
   */
  repair(): RepairReport {
    return native(() => this.native().repair())
  }

  /** Unmap the region from this process. Idempotent. */
  close(): void {
    this.#native?.close()
    this.#native = undefined
    forgetHandles(this)
  }

  /** @internal unmap and remove the name, if the name is still ours. */
  destroy(): boolean {
    const handle = this.native()
    this.#native = undefined
    forgetHandles(this)
    return native(() => handle.destroy())
  }

  [Symbol.dispose](): void {
    this.close()
  }
}

interface AttachPlan {
  name: string
  deadline: number
  timeoutMs: number
  signal: AbortSignal | undefined
  breakChecker: (() => boolean) | undefined
  pauseMs: number
  log: Log
}

function plan(name: unknown, options: AttachOptions | undefined): AttachPlan {
  const o = options ?? {}
  const timeoutMs = checkTimeout(o.timeoutMs)
  return {
    name: checkName(name),
    timeoutMs,
    deadline: performance.now() + timeoutMs,
    signal: checkSignal(o.signal),
    breakChecker: checkBreakChecker(o.breakChecker),
    pauseMs: checkMicroSleep(o.microSleepUs) / 1000,
    log: logger(o.debug),
  }
}

/** An already-aborted signal fails at once, before any look (as Node's APIs do). */
function throwIfAborted(p: AttachPlan): void {
  if (p.signal?.aborted) throw new AbortError(`waiting for region '${p.name}' was aborted`, { cause: p.signal.reason })
}

/** One look; returns the region, or the pause before the next look. */
function look(p: AttachPlan, first: boolean): Region | number {
  const handle = native(() => binding.tryAttachRegion(p.name))
  if (handle) {
    p.log(`attached to region '${p.name}' (generation ${handle.info().generation})`)
    return new Region(p.name, handle)
  }
  if (first) p.log(`waiting for region '${p.name}' to be created and ready`)
  throwIfAborted(p)
  if (p.breakChecker?.()) throw new AbortError(`waiting for region '${p.name}' was stopped by the breakChecker`)
  const left = p.deadline - performance.now()
  if (left <= 0) {
    throw new ShmError(
      ErrorCodes.TIMEOUT,
      `region '${p.name}' did not become ready within ${p.timeoutMs} ms; is its SHMMain running?`,
    )
  }
  return Math.min(p.pauseMs, left)
}

const sleeper = new Int32Array(new SharedArrayBuffer(4))

/**
 * Wait (blocking this thread) until region `name` exists and is ready, and
 * map it. Meant for worker processes; on a server's main thread use attach().
 */
export function attachSync(name: string, options?: AttachOptions): Region {
  const p = plan(name, options)
  throwIfAborted(p)
  for (let first = true; ; first = false) {
    const r = look(p, first)
    if (r instanceof Region) return r
    Atomics.wait(sleeper, 0, 0, r)
  }
}

/**
 * Wait until region `name` exists and is ready, and map it, without blocking
 * the event loop. Rejects with `ERR_SHM_TIMEOUT` or an `AbortError`.
 */
export async function attach(name: string, options?: AttachOptions): Promise<Region> {
  const p = plan(name, options)
  throwIfAborted(p)
  for (let first = true; ; first = false) {
    const r = look(p, first)
    if (r instanceof Region) return r
    try {
      await sleep(r, undefined, { signal: p.signal })
    } catch {
      // Aborted while pausing: the next look reports it.
    }
  }
}

/** Options of `new SHMMain(name, bytes, options)`. */
export interface SHMMainOptions {
  /** Log each step to stderr (the seed's `debug`); NODE_DEBUG=shmtools works too. */
  debug?: boolean
  /** Permission bits of the region (default 0o600), applied regardless of umask. */
  mode?: number
  /**
   * The seed's forced mapping address. Accepted and ignored: regions store
   * offsets, never addresses, so every process may map them anywhere.
   */
  forcedAddr?: unknown
}

/**
 * Creates the named region that ServerSides and ClientSides use (the seed's
 * SHMMain). Construct, then `start()`. The region outlives this object unless
 * `destroy()` is called.
 */
export class SHMMain {
  readonly name: string
  readonly bytes: number
  readonly #mode: number
  readonly #log: Log
  #region: Region | undefined
  #state: 'new' | 'started' | 'closed' = 'new'

  constructor(name: string, bytes: number, options?: SHMMainOptions | boolean) {
    const o: SHMMainOptions = typeof options === 'boolean' ? { debug: options } : (options ?? {})
    this.name = checkName(name)
    this.bytes = checkCount(bytes, 'bytes', { min: 1 })
    // Name and size rules live in the core; check them now, not at start().
    native(() => binding.checkRegionArgs(this.name, this.bytes))
    this.#mode = o.mode === undefined ? 0o600 : checkCount(o.mode, 'mode')
    this.#log = logger(o.debug)
  }

  /** Create the region, replacing a stale one of the same name. */
  start(): this {
    if (this.#state !== 'new') {
      throw new ShmError(ErrorCodes.INVALID_STATE, `SHMMain '${this.name}' was already started; create a new SHMMain to start again`)
    }
    const handle = native(() => binding.createRegion(this.name, this.bytes, this.#mode))
    for (const step of handle.takeLog()) this.#log(step)
    this.#region = new Region(this.name, handle)
    this.#state = 'started'
    return this
  }

  /** The seed's `warning(false)`: there is no address-randomization warning to silence. */
  warning(_on?: boolean): void {}

  get started(): boolean {
    return this.#state === 'started'
  }

  region(): Region {
    if (this.#region === undefined) {
      const why = this.#state === 'new' ? 'call start() first' : 'it was closed (SHMMain.remove(name) still removes it by name)'
      throw new ShmError(this.#state === 'new' ? ErrorCodes.INVALID_STATE : ErrorCodes.CLOSED, `SHMMain '${this.name}': ${why}`)
    }
    return this.#region
  }

  pool(): Pool {
    return this.region().pool()
  }

  info(): RegionInfo {
    return this.region().info()
  }

  /** Unmap the region here; it stays in /dev/shm for the other processes. */
  close(): void {
    this.#region?.close()
    this.#region = undefined
    if (this.#state === 'started') this.#state = 'closed'
  }

  /**
   * Unmap and remove the region from /dev/shm (only if the name still refers
   * to this region). After close(), use SHMMain.remove(name) instead.
   */
  destroy(): void {
    const r = this.region()
    this.#region = undefined
    this.#state = 'closed'
    r.destroy()
    this.#log(`destroyed region '${this.name}'`)
  }

  [Symbol.dispose](): void {
    this.close()
  }

  /** Remove region `name` from /dev/shm; false if there was none. */
  static remove(name: string): boolean {
    checkName(name)
    return native(() => binding.removeRegion(name))
  }
}
