/**
 * Pipes, as in the seed: a ServerSide creates a named pipe (a CQ) in a region,
 * a ClientSide waits for it and attaches, and any number of processes enqueue
 * and dequeue values through it.
 */
import type { NativeQueue, PipeStats } from '../binding'
import * as binding from '../binding'
import { logger, type Log } from './debug'
import { AbortError, ErrorCodes, native, ShmArgumentError, ShmError } from './errors'
import { checkBreakChecker, checkCount, checkMicroSleep, checkName, checkSignal, checkTimeout } from './options'
import { attach, attachSync, Region, type AttachOptions, type Pool } from './region'
import { type RawPipe, fast } from './fastcalls'
import { encodeInPlaceFor, encodeManyFor, wrap, wrapAll } from './values'
import { decode, decodeBatch, decodeBatchOne, decodeMany } from './wire'

export type { PipeStats }

const NOT_EMPTY = 0
const NOT_FULL = 1
const WAITED_OUT = 1
/** How long the async forms spin (on this thread) before parking a wait. */
const SPIN_US = 20
let nextWaitId = 1

/** Options of the Promise forms of enqueue/dequeue. */
export interface WaitOptions {
  /** Abort the wait; the promise rejects with an AbortError. */
  signal?: AbortSignal
}

/** Options of dequeue() and deq(). */
export interface DequeueOptions {
  /**
   * Return a plain JS copy of the packet (as `toJS()` would give) instead of
   * a handle, and release the packet at once. No handle is made, so nothing
   * is left to release or to the GC: for small messages several times
   * faster than a handle (see docs/BENCHMARKS.md). A large table read in
   * part is cheaper through a handle, which copies nothing. Default false.
   */
  copy?: boolean
}

/** Options of dequeueAsync() and packets(): a wait's, and dequeue()'s. */
export interface DequeueWaitOptions extends WaitOptions, DequeueOptions {}

/** A pipe as binding.pipe* calls take it (NativeQueue.fast()). */
type PipeHandle = ReturnType<NativeQueue['fast']>

/** Options of enqueueMany. */
export interface EnqueueManyOptions {
  /**
   * Wait up to this long for room for the first value, blocking this thread
   * (0, the default: no wait; Infinity: forever). Once there is room, the
   * call puts in as many as fit and returns.
   */
  timeoutMs?: number
}

/** Options of dequeueMany. */
export interface DequeueManyOptions extends DequeueOptions {
  /**
   * Return plain JS copies of the packets (as `toJS()` would give) instead of
   * handles, and release the packets at once. One native call copies the
   * whole batch out into one buffer and frees the packets together, so no
   * handle is made per packet: the fastest way to read many small messages.
   * The packets are the same shared values either way; only what this reader
   * gets differs. Default false.
   */
  copy?: boolean
  /**
   * Wait up to this long for the first packet, blocking this thread (0, the
   * default: no wait; Infinity: forever). Once one is there, the call takes
   * up to `max` that are there and returns.
   */
  timeoutMs?: number
}

/** Pipe names and capacities follow the core's rules (one place for them). */
function checkPipe(name: unknown, capacity?: unknown): string {
  const n = checkName(name, 'pipe name')
  if (capacity !== undefined) checkCount(capacity, 'capacity', { min: 1 })
  native(() => binding.checkPipeArgs(n, capacity as number | undefined))
  return n
}

/** The `copy` option of the dequeue forms: a boolean, false if not given. */
function checkCopy(options: DequeueOptions | undefined): boolean {
  const copy = options?.copy === undefined ? false : options.copy
  if (typeof copy !== 'boolean') throw new ShmArgumentError(`copy must be a boolean, got ${typeof copy}`)
  return copy
}

/** A packet as pipeDequeueCopy returns it, decoded; undefined for nothing. */
function copied(got: string | Buffer): unknown {
  if (typeof got !== 'string') return decode(got)
  return got.length === 0 ? undefined : decodeBatchOne(got)
}

function aborted(signal: AbortSignal | undefined, what: string): AbortError {
  return new AbortError(`${what} was aborted`, { cause: signal?.reason })
}

/**
 * A bounded queue of values in shared memory (the seed's CQ). Plain JS values
 * are copied into the pool on enqueue; shared handles go by reference.
 * Dequeue gives primitives and strings as JS values, containers and typed
 * arrays as shared handles (release them when done, or let the GC).
 */
export class CQ<T = any> implements AsyncIterable<T> {
  readonly name: string
  readonly #region: Region
  #q: NativeQueue | undefined
  /**
   * The same pipe as an external, for the batch calls (binding.pipe*): a
   * call on it skips napi-rs' borrow check of a class instance, about 170
   * ns (docs/BENCHMARKS.md, "Calls into native code per message").
   */
  #h: PipeHandle | undefined
  /** The pipe as the hand-written per-message calls take it (src/fastcalls.ts). */
  #raw: RawPipe | undefined
  /** Ids of async waits parked right now, so close() can end them. */
  readonly #parked = new Set<number>()

  /** @internal */
  constructor(region: Region, name: string, q: NativeQueue) {
    this.#region = region
    this.name = name
    this.#q = q
    this.#h = q.fast()
    this.#raw = q.raw()
  }

  #native(): NativeQueue {
    if (this.#q === undefined) throw new ShmError(ErrorCodes.CLOSED, `pipe '${this.name}' is closed`)
    this.#region.native() // the region must still be open too
    return this.#q
  }

  /** #native()'s checks, then the external for binding.pipe* calls. */
  #fast(): PipeHandle {
    this.#native()
    return this.#h!
  }

  /** #native()'s checks, then the external for the calls of src/fastcalls.ts. */
  #rawPipe(): RawPipe {
    this.#native()
    return this.#raw!
  }

  get capacity(): number {
    return native(() => this.#native().capacity)
  }

  /** Packets in the pipe now. */
  get length(): number {
    return native(() => this.#native().length)
  }

  empty(): boolean {
    return this.length === 0
  }

  /** Depth, capacity, high-water mark and totals, the same from every process. */
  stats(): PipeStats {
    return native(() => this.#native().stats())
  }

  /**
   * Enqueue, waiting up to `timeoutMs` for room (no timeout: forever; 0: no
   * wait). Returns false if there was no room in time. Blocks this thread
   * while it waits: on a busy main thread use enqueueAsync.
   */
  enqueue(value: T, timeoutMs?: number): boolean {
    const t = checkTimeout(timeoutMs)
    const p = this.#rawPipe()
    const w = encodeInPlaceFor(this.#region, value)
    return native(() => fast.pipeEnqueue(p, w.buf, w.len, t === Infinity ? undefined : t))
  }

  /**
   * Dequeue, waiting up to `timeoutMs` for a packet (no timeout: forever; 0:
   * no wait). Returns undefined if none came in time. Blocks this thread.
   */
  dequeue(timeoutMs?: number, options?: DequeueOptions): T | undefined {
    const t = checkTimeout(timeoutMs)
    const copy = checkCopy(options)
    const p = this.#rawPipe()
    if (copy) return copied(native(() => fast.pipeDequeueCopy(p, t === Infinity ? undefined : t, 0))) as T | undefined
    const v = native(() => fast.pipeDequeue(p, t === Infinity ? undefined : t))
    return v === null || v === undefined ? undefined : (wrap(this.#region, v) as T)
  }

  /** Enqueue, blocking until there is room (the seed's enq). */
  enq(value: T): void {
    this.enqueue(value)
  }

  /** Dequeue, blocking until there is a packet (the seed's deq). */
  deq(options?: DequeueOptions): T {
    return this.dequeue(undefined, options) as T
  }

  /**
   * Enqueue without blocking the event loop: tries at once, then waits on a
   * shmtools thread for room. Resolves false on timeout; rejects with an
   * AbortError if `signal` aborts.
   */
  async enqueueAsync(value: T, timeoutMs?: number, options?: WaitOptions): Promise<boolean> {
    const t = checkTimeout(timeoutMs)
    const signal = checkSignal(options?.signal)
    if (signal?.aborted) throw aborted(signal, `enqueue on pipe '${this.name}'`)
    const deadline = t === 0 ? 0 : performance.now() + t
    // The futex sequence, read before the try it belongs to: a wait sleeps
    // only while the word still has the value read before a failed try. The
    // first try reads none (it usually succeeds, and a read is a native
    // call); if it fails, the sequence is read and the call tries again.
    let seen: number | undefined
    for (;;) {
      const q = this.#native()
      const p = this.#rawPipe()
      // Encoded afresh on each try: a shared handle inside `value` may have
      // been released while we waited, and must fail now rather than leave a
      // stale reference in an old encoding.
      const w = encodeInPlaceFor(this.#region, value)
      if (native(() => fast.pipeEnqueue(p, w.buf, w.len, 0))) return true
      if (seen === undefined) {
        if (t === 0) return false
        seen = native(() => fast.pipeSeq(p, NOT_FULL))
        continue
      }
      const left = deadline - performance.now()
      if (left <= 0) return false
      if ((await this.#park(q, NOT_FULL, seen, left, signal)) === WAITED_OUT) return false
      const after = this.#rawPipe()
      seen = native(() => fast.pipeSeq(after, NOT_FULL))
    }
  }

  /**
   * Dequeue without blocking the event loop: tries at once, then waits on a
   * shmtools thread. Resolves undefined on timeout; rejects with an AbortError
   * if `signal` aborts.
   */
  async dequeueAsync(timeoutMs?: number, options?: DequeueWaitOptions): Promise<T | undefined> {
    const t = checkTimeout(timeoutMs)
    const signal = checkSignal(options?.signal)
    const copy = checkCopy(options)
    if (signal?.aborted) throw aborted(signal, `dequeue on pipe '${this.name}'`)
    const deadline = t === 0 ? 0 : performance.now() + t
    // (as in enqueueAsync: no sequence read before the first try)
    let seen: number | undefined
    for (let first = true; ; first = false) {
      const q = this.#native()
      const p = this.#rawPipe()
      // The first try spins briefly (a reply often arrives within
      // microseconds); later tries follow a failed try or a wake-up and
      // just look.
      const spin = first && t > 0 ? SPIN_US : 0
      if (copy) {
        const v = copied(native(() => fast.pipeDequeueCopy(p, 0, spin)))
        if (v !== undefined) return v as T
      } else {
        const v = native(() => (spin > 0 ? fast.pipeDequeueSpin(p, spin) : fast.pipeDequeue(p, 0)))
        if (v !== null && v !== undefined) return wrap(this.#region, v) as T
      }
      if (seen === undefined) {
        if (t === 0) return undefined
        seen = native(() => fast.pipeSeq(p, NOT_EMPTY))
        continue
      }
      const left = deadline - performance.now()
      if (left <= 0) return undefined
      if ((await this.#park(q, NOT_EMPTY, seen, left, signal)) === WAITED_OUT) return undefined
      const after = this.#rawPipe()
      seen = native(() => fast.pipeSeq(after, NOT_EMPTY))
    }
  }

  async #park(q: NativeQueue, kind: number, seen: number, left: number, signal?: AbortSignal): Promise<number> {
    // The signal may have fired since the caller last looked (during encoding,
    // or between retries): an 'abort' listener added now would never run.
    if (signal?.aborted) throw aborted(signal, `waiting on pipe '${this.name}'`)
    const id = nextWaitId++ >>> 0
    const onAbort = () => binding.cancelWait(id)
    signal?.addEventListener('abort', onAbort, { once: true })
    this.#parked.add(id)
    try {
      const outcome = await (native(() => q.waitChange(kind, seen, left === Infinity ? undefined : left, id)) as unknown as Promise<number>)
      if (signal?.aborted) throw aborted(signal, `waiting on pipe '${this.name}'`)
      if (this.#q === undefined) throw new ShmError(ErrorCodes.CLOSED, `pipe '${this.name}' was closed while waiting`)
      return outcome
    } finally {
      this.#parked.delete(id)
      signal?.removeEventListener('abort', onAbort)
    }
  }

  /**
   * Enqueue as many of `values` as fit now (or, with `timeoutMs`, wait that
   * long for room for the first); returns how many went in (a prefix of
   * `values`; 0 if there was no room in time). Every value is encoded first,
   * so one that cannot be encoded throws before any goes in. Then one native
   * call sends the values that fit in runs: small plain values are copied
   * into the pipe's byte ring, up to 64 under one hold of the pipe's
   * producers' lock;
   * others are built in the pool, up to 64 per hold of the pool lock, and
   * enqueued under one hold of the producers' lock. If the pool cannot take a
   * value (out of memory), that run goes in not at all: the call throws if
   * nothing went in yet, and otherwise returns the count sent so far, so
   * sending the rest again meets the error.
   */
  enqueueMany(values: readonly T[], options?: EnqueueManyOptions): number {
    if (!Array.isArray(values)) throw new ShmArgumentError('enqueueMany takes an array of values')
    const t = checkTimeout(options?.timeoutMs === undefined ? 0 : options.timeoutMs)
    const h = this.#fast()
    if (values.length === 0) return 0
    const wire = encodeManyFor(this.#region, values)
    return native(() => binding.pipeEnqueueMany(h, wire, values.length, t))
  }

  /**
   * Dequeue up to `max` packets that are there now (or, with `timeoutMs`,
   * wait that long for the first). Handles and values as dequeue() gives
   * them; with `{ copy: true }`, plain JS copies (see DequeueManyOptions).
   * Returns an empty array if there was nothing.
   */
  dequeueMany(max = 256, options?: DequeueManyOptions): T[] {
    checkCount(max, 'max')
    const t = checkTimeout(options?.timeoutMs === undefined ? 0 : options.timeoutMs)
    const copy = checkCopy(options)
    const h = this.#fast()
    const n = Math.min(max, 0xffffffff) // no pipe holds more
    if (copy) {
      const got = native(() => binding.pipeDequeueManyCopy(h, n, t))
      return (typeof got === 'string' ? decodeBatch(got) : decodeMany(got)) as T[]
    }
    return wrapAll(this.#region, native(() => binding.pipeDequeueMany(h, n, t))) as T[]
  }

  /** `for await (const packet of pipe)`: dequeues until the pipe is closed. */
  [Symbol.asyncIterator](): AsyncIterator<T> {
    return this.packets()
  }

  /** Like the async iterator, with an AbortSignal that ends it. */
  async *packets(options?: DequeueWaitOptions): AsyncGenerator<T> {
    while (this.#q !== undefined) {
      let v: T | undefined
      try {
        v = await this.dequeueAsync(undefined, options)
      } catch (e) {
        if ((e as { code?: string }).code === ErrorCodes.CLOSED && this.#q === undefined) return
        throw e
      }
      if (v !== undefined) yield v
    }
  }

  /**
   * Stop using the pipe here (the pipe and its packets stay in the region).
   * Async waits still parked on it reject with ERR_SHM_CLOSED; an async
   * iteration over it ends.
   */
  close(): void {
    this.#q = undefined
    this.#h = undefined
    this.#raw = undefined
    for (const id of this.#parked) binding.cancelWait(id)
  }
}

/** Options of ServerSide and ClientSide (the seed's debug, break checker, micro sleep). */
export type SideOptions = AttachOptions

function sideOptions(o: SideOptions | boolean | undefined): SideOptions {
  return typeof o === 'boolean' ? { debug: o } : (o ?? {})
}

abstract class Side {
  readonly regionName: string
  readonly pipeName: string
  protected readonly options: SideOptions
  protected readonly log: Log
  #region: Region | undefined
  #ownsRegion = false
  #pipe: CQ | undefined

  constructor(region: string | Region, pipeName: string, options?: SideOptions | boolean) {
    this.options = sideOptions(options)
    if (region instanceof Region) {
      this.#region = region
      this.regionName = region.name
    } else {
      this.regionName = checkName(region, 'region name')
    }
    this.pipeName = checkPipe(pipeName)
    checkTimeout(this.options.timeoutMs)
    checkSignal(this.options.signal)
    checkBreakChecker(this.options.breakChecker)
    checkMicroSleep(this.options.microSleepUs)
    this.log = logger(this.options.debug)
  }

  protected regionSync(): Region {
    if (this.#region === undefined) {
      this.#region = attachSync(this.regionName, this.options)
      this.#ownsRegion = true
    }
    return this.#region
  }

  protected async regionAsync(): Promise<Region> {
    if (this.#region === undefined) {
      this.#region = await attach(this.regionName, this.options)
      this.#ownsRegion = true
    }
    return this.#region
  }

  protected setPipe(q: NativeQueue): void {
    this.#pipe = new CQ(this.#region!, this.pipeName, q)
  }

  /** The pipe (after start). */
  pipe(): CQ {
    if (this.#pipe === undefined) {
      throw new ShmError(ErrorCodes.INVALID_STATE, `pipe '${this.pipeName}' is not started: call start() first`)
    }
    return this.#pipe
  }

  /** The region's pool, to make Shared values in. */
  pool(): Pool {
    return this.region().pool()
  }

  region(): Region {
    if (this.#region === undefined) {
      throw new ShmError(ErrorCodes.INVALID_STATE, `not started: call start() first`)
    }
    return this.#region
  }

  get started(): boolean {
    return this.#pipe !== undefined
  }

  /** Stop using the pipe; unmap the region if this side attached it. */
  close(): void {
    this.#pipe?.close()
    this.#pipe = undefined
    if (this.#ownsRegion) this.#region?.close()
  }

  [Symbol.dispose](): void {
    this.close()
  }

  /** The seed's warning(false): nothing to silence (no address randomization problem). */
  warning(_on?: boolean): void {}
}

/**
 * Creates a named pipe in a region (the seed's ServerSide). `start()` waits for
 * the region (blocking); `startAsync()` waits without blocking the event loop.
 * A pipe of the same name and capacity is joined, not replaced; a different
 * capacity is ERR_SHM_EXISTS.
 */
export class ServerSide extends Side {
  readonly capacity: number

  constructor(region: string | Region, pipeName: string, capacity: number, options?: SideOptions | boolean) {
    super(region, pipeName, options)
    this.capacity = checkCount(capacity, 'capacity', { min: 1 })
    checkPipe(pipeName, capacity)
  }

  start(): this {
    this.#create(this.regionSync())
    return this
  }

  async startAsync(): Promise<this> {
    this.#create(await this.regionAsync())
    return this
  }

  #create(region: Region): void {
    if (this.started) throw new ShmError(ErrorCodes.INVALID_STATE, `ServerSide '${this.pipeName}' was already started`)
    const q = native(() => region.native().createPipe(this.pipeName, this.capacity))
    this.setPipe(q)
    this.log(`pipe '${this.pipeName}' (capacity ${this.capacity}) ready in region '${region.name}'`)
  }
}

/**
 * Waits for a named pipe and attaches to it (the seed's ClientSide).
 * `start()` blocks until region and pipe exist; `startAsync()` does not block
 * the event loop. Both honour timeoutMs, signal, breakChecker, microSleepUs.
 */
export class ClientSide extends Side {
  start(): this {
    const p = this.#plan()
    const region = this.regionSync()
    for (;;) {
      const r = this.#look(region, p)
      if (!('seen' in r)) return this.#attached(r)
      native(() => region.native().waitPipesSync(r.seen, r.ms))
    }
  }

  async startAsync(): Promise<this> {
    const p = this.#plan()
    const region = await this.regionAsync()
    const signal = this.options.signal
    for (;;) {
      const r = this.#look(region, p)
      if (!('seen' in r)) return this.#attached(r)
      const id = nextWaitId++ >>> 0
      const onAbort = () => binding.cancelWait(id)
      signal?.addEventListener('abort', onAbort, { once: true })
      try {
        await native(() => region.native().waitPipes(r.seen, r.ms, id))
      } finally {
        signal?.removeEventListener('abort', onAbort)
      }
    }
  }

  /** The deadline (counted from now, region wait included) and sleep slice. */
  #plan(): { deadline: number; slice: number; said: boolean } {
    const o = this.options
    return {
      deadline: performance.now() + checkTimeout(o.timeoutMs),
      slice: checkMicroSleep(o.microSleepUs) / 1000,
      said: false,
    }
  }

  /**
   * One look for the pipe: its queue, or the directory version seen and how
   * long to sleep on the directory's futex (in slices, so a breakChecker runs).
   */
  #look(region: Region, p: { deadline: number; slice: number; said: boolean }): NativeQueue | { seen: number; ms: number } {
    const seen = native(() => region.native().pipesVersion())
    const q = native(() => region.native().findPipe(this.pipeName))
    if (q) return q
    if (!p.said) this.log(`waiting for pipe '${this.pipeName}' in region '${region.name}'`)
    p.said = true
    this.#checkStop(p.deadline)
    return { seen, ms: Math.min(p.slice, p.deadline - performance.now()) }
  }

  #checkStop(deadline: number): void {
    const o = this.options
    if (o.signal?.aborted) throw aborted(o.signal, `waiting for pipe '${this.pipeName}'`)
    if (o.breakChecker?.()) throw new AbortError(`waiting for pipe '${this.pipeName}' was stopped by the breakChecker`)
    if (performance.now() >= deadline) {
      throw new ShmError(
        ErrorCodes.TIMEOUT,
        `pipe '${this.pipeName}' was not created within ${o.timeoutMs} ms; is its ServerSide running?`,
      )
    }
  }

  #attached(q: NativeQueue): this {
    if (this.started) throw new ShmError(ErrorCodes.INVALID_STATE, `ClientSide '${this.pipeName}' was already started`)
    this.setPipe(q)
    this.log(`attached to pipe '${this.pipeName}'`)
    return this
  }
}
