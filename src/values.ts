/**
 * Shared values: handles to Tabs, Arrs and typed arrays that live in a
 * region, each owning one cross-process reference.
 *
 * A Tab handle is a Proxy, so `t.a = 'hello'` stores into shared memory the way
 * the seed's `v["a"] = "hello"` does; an Arr handle likewise by index. Reading
 * gives JS primitives for scalars and strings, and new handles for nested
 * containers. The last release (explicit `release()`/`using`, or the GC as a
 * safety net) frees the value in whichever process drops it.
 */
import { inspect } from 'node:util'

import type { NativeRegion } from '../binding'
import * as binding from '../binding'
import { coldEncode, coldReadMin, readOut, warmed } from './coldwire'
import { ErrorCodes, native, ShmArgumentError, ShmError } from './errors'
import { fast, type RawRegion } from './fastcalls'
import type { Pool, Region } from './region'
import { decode, ELEM_CTORS, elemCode, encode, encodeInPlace, encodeMany, ShmUnsupportedError, T_BYTES, type Encoded, type RefSource, type SharedTypedArray } from './wire'

/** Hidden property by which a typed-array view's buffer keeps its handle alive. */
const VIEW_OWNER = Symbol('shmtools.viewOwner')

/**
 * The handle behind a proxy, its target, or a SharedTyped, as a symbol-keyed
 * property: reading it is a property lookup, where a WeakMap would cost a
 * hash-table insert per handle (measured: the largest part of making one).
 */
const HANDLE = Symbol('shmtools.handle')

function handleOf(v: object): Handle | undefined {
  const h = (v as { [HANDLE]?: unknown })[HANDLE]
  return h instanceof Handle ? h : undefined
}

const refOf = (v: object): RefSource | undefined => handleOf(v)

/** A region as the binding's value functions take it (NativeRegion.fast()). */
type RegionRef = ReturnType<NativeRegion['fast']>

/** What the binding returns for a value (see `Out` in crates/shmtools-node/src/value.rs). */
export type Raw = bigint | number | string | Buffer

/**
 * Per region: its external for the binding's value functions, its key, and
 * the FinalizationRegistry that gives back the reference of a handle
 * collected without release() (the GC's safety net). Kept on the Region
 * object until it is closed (see forgetHandles); each Handle keeps what it
 * needs of it.
 */
const HANDLES = Symbol('shmtools.handles')
type HandleState = { r: RegionRef; rr: RawRegion; key: string; fr: FinalizationRegistry<number> }

function handleState(region: Region): HandleState {
  const own = (region as unknown as { [HANDLES]?: HandleState })[HANDLES]
  if (own !== undefined) return own
  const r = native(() => region.native().fast())
  const rr = native(() => region.native().raw())
  const fr = new FinalizationRegistry<number>((id) => {
    try {
      fast.valueRelease(rr, id)
    } catch {
      // (nothing to tell: the safety net runs outside any call)
    }
  })
  const st = { r, rr, key: region.regionKey(), fr }
  Object.defineProperty(region, HANDLES, { value: st, configurable: true })
  return st
}

/**
 * Region.close(): the region lets go of its handle state, so the mapping
 * goes once its last handle (and view) does, not when the Region object is
 * collected. Handles still alive keep the external and the registry.
 */
export function forgetHandles(region: Region): void {
  delete (region as unknown as { [HANDLES]?: HandleState })[HANDLES]
}

/**
 * Where a value lives, and the native reference it owns: a number naming an
 * entry of the region's handle table in the binding. This object owns it;
 * release() gives it back, and so does the region's FinalizationRegistry if
 * this object is collected first.
 */
class Handle implements RefSource {
  #views: ArrayBuffer[] = []
  #released = false
  #offset = -1
  readonly r: RegionRef
  /** The region as the hand-written calls take it (src/fastcalls.ts). */
  readonly rr: RawRegion
  /** "dev:inode" of the region (the same for every mapping of it). */
  readonly regionKey: string
  readonly #fr: FinalizationRegistry<number>
  constructor(
    readonly region: Region,
    readonly id: number,
  ) {
    const st = handleState(region)
    this.r = st.r
    this.rr = st.rr
    this.regionKey = st.key
    this.#fr = st.fr
    st.fr.register(this, id, this)
  }

  get released(): boolean {
    return this.#released
  }

  get offset(): number {
    if (this.#offset < 0) this.#offset = native(() => binding.valueOffset(this.r, this.live()))
    return this.#offset
  }

  /** The handle number, if still live. */
  live(): number {
    if (this.#released) {
      throw new ShmError(ErrorCodes.CLOSED, 'this shared value was released; take a new handle to use it')
    }
    return this.id
  }

  refOffset(regionKey: string): number {
    this.live()
    if (this.regionKey !== regionKey) {
      throw new ShmArgumentError(
        'a shared value from another region cannot be stored here; copy it with toJS() first',
      )
    }
    return this.offset
  }

  keepView(ab: ArrayBuffer): void {
    this.#views.push(ab)
  }

  release(): void {
    if (this.#released) return
    this.#released = true
    for (const ab of this.#views) native(() => binding.detachView(ab))
    this.#views = []
    this.#fr.unregister(this)
    native(() => fast.valueRelease(this.rr, this.id))
  }
}

/**
 * Encode a JS value for storing into `region` (handles become references).
 * While the process is young, a large plain value goes through V8's
 * serializer instead of the JS encoder (see coldwire.ts).
 */
export function encodeFor(region: Region, value: unknown): Buffer {
  const cold = coldEncode(value, refOf)
  if (cold !== undefined) return cold
  const b = encode(value, region.regionKey(), refOf)
  warmed(b.length)
  return b
}

const coldOut: Encoded = { buf: Buffer.alloc(0), len: 0 }

/** encodeFor, as a buffer and a length (see encodeInPlace). */
export function encodeInPlaceFor(region: Region, value: unknown): Encoded {
  const cold = coldEncode(value, refOf)
  if (cold !== undefined) {
    coldOut.buf = cold
    coldOut.len = cold.length
    return coldOut
  }
  const w = encodeInPlace(value, region.regionKey(), refOf)
  warmed(w.len)
  return w
}

/** Encode several JS values back to back for storing into `region`. */
export function encodeManyFor(region: Region, values: readonly unknown[]): Buffer {
  const b = encodeMany(values, region.regionKey(), refOf)
  warmed(b.length)
  return b
}

/** Turn what the binding returns for a value into its JS face. */
export function wrap(region: Region, v: Raw): unknown {
  if (typeof v === 'number' || typeof v === 'string') return v
  if (typeof v !== 'bigint') {
    // Bytes on their own: the binding made this Buffer for this call alone,
    // so the bytes are handed out as they are, not copied again.
    if (v[0] === T_BYTES && v.length >= 5 && v.readUInt32LE(1) === v.length - 5) return v.subarray(5)
    return decode(v)
  }
  const [id, kind] = unpackHandle(v)
  const h = new Handle(region, id)
  switch (kind) {
    case 0:
      return makeTab(h)
    case 1:
      return makeArr(h)
    case 2:
      return new SharedTyped(h)
    default:
      h.release()
      throw new ShmError(ErrorCodes.CORRUPT, `unexpected shared value kind ${kind}`)
  }
}

/** A handle as the binding returns it: 4 × its number + its kind (below 2^52, so exact as a number). */
function unpackHandle(v: bigint): [id: number, kind: number] {
  const x = Number(v)
  const kind = x % 4
  return [(x - kind) / 4, kind]
}

/**
 * wrap() each of a batch the binding returned. Should one fail, the handles
 * made and those not yet made are given back before the error is thrown,
 * so none is left to the GC.
 */
export function wrapAll(region: Region, raws: Raw[]): unknown[] {
  const out: unknown[] = []
  let i = 0
  try {
    for (; i < raws.length; i++) out.push(wrap(region, raws[i]!))
    return out
  } catch (e) {
    for (const v of out) handleOf(v as object)?.release()
    const rr = handleState(region).rr
    for (const raw of raws.slice(i + 1)) {
      if (typeof raw === 'bigint') native(() => fast.valueRelease(rr, unpackHandle(raw)[0]))
    }
    throw e
  }
}

/** Methods every handle has. */
export interface SharedHandle {
  /** Deep copy into plain JS values. */
  toJS(): unknown
  /** Give this handle's reference back now; using the handle afterwards is ERR_SHM_CLOSED. */
  release(): void
  /** Cross-process reference count of the value (this handle included). */
  readonly refCount: number
  /** Offset of the value in its region: the same in every process (see Region.valueAt). */
  readonly offset: number
  readonly released: boolean
  [Symbol.dispose](): void
}

export interface TabMethods extends SharedHandle {
  get(key: string): unknown
  set(key: string, value: unknown): this
  delete(key: string): boolean
  has(key: string): boolean
  keys(): string[]
  values(): unknown[]
  entries(): [string, unknown][]
  readonly size: number
  toJS(): Record<string, unknown>
  toJSON(): Record<string, unknown>
  [Symbol.iterator](): IterableIterator<[string, unknown]>
}

/**
 * A shared Tab: property access reads and writes shared memory. Keys that are
 * also method names (get, set, keys, size, toJS, ...) are reached with
 * `t.get(key)` / `t.set(key, v)`.
 */
export type SharedTab = TabMethods & { [key: string]: any }

export interface ArrMethods extends SharedHandle {
  readonly length: number
  get(index: number): unknown
  set(index: number, value: unknown): this
  push(...values: unknown[]): number
  pop(): unknown
  at(index: number): unknown
  values(): IterableIterator<unknown>
  entries(): IterableIterator<[number, unknown]>
  toJS(): unknown[]
  toJSON(): unknown[]
  [Symbol.iterator](): IterableIterator<unknown>
}

/** A shared Arr: index access, length, push/pop and iteration on shared memory. */
export type SharedArr = ArrMethods & { [index: number]: any }

/** The handle behind a proxy (or its target), or ERR_SHM_CLOSED-like failure. */
function hOf(self: object): Handle {
  const h = handleOf(self)
  if (h === undefined) throw new ShmError(ErrorCodes.INVALID_ARG, 'not a shared value handle')
  return h
}

function getOut(h: Handle, v: Raw | null | undefined): unknown {
  return v === null || v === undefined ? undefined : wrap(h.region, v)
}

/**
 * What every handle class shares; subclasses supply toJS() and their name.
 * Methods find their handle through the target's HANDLE property (hOf),
 * because `this` is the Proxy when they are called as `proxy.method()`.
 */
const LABEL = Symbol('shmtools.label')

abstract class HandleCore {
  abstract toJS(): unknown
  // A symbol, not a name: every string name here hides a table key.
  protected abstract get [LABEL](): string
  toJSON(): unknown {
    return this.toJS()
  }
  release(): void {
    hOf(this).release()
  }
  [Symbol.dispose](): void {
    hOf(this).release()
  }
  get refCount(): number {
    const h = hOf(this)
    return native(() => binding.valueRefCount(h.r, h.live()))
  }
  get offset(): number {
    return hOf(this).offset
  }
  get released(): boolean {
    return hOf(this).released
  }
  [inspect.custom](_depth: number, opts: object): string {
    return this.released ? `${this[LABEL]} <released>` : `${this[LABEL]} ${inspect(this.toJS(), opts)}`
  }
}

/** Every property name along a prototype chain (below Object.prototype). */
function methodNames(proto: object): Set<string | symbol> {
  const names = new Set<string | symbol>()
  for (let p: object | null = proto; p && p !== Object.prototype; p = Object.getPrototypeOf(p)) {
    for (const k of Reflect.ownKeys(p)) names.add(k)
  }
  return names
}

/**
 * The target of every SharedTab proxy. Its methods live on the prototype
 * (one copy for all tables) and find their handle through its HANDLE
 * property, so making a handle costs a Handle, this target, one Proxy and
 * one FinalizationRegistry entry.
 */
class TabCore extends HandleCore {
  get(key: string): unknown {
    const h = hOf(this)
    return getOut(h, native(() => fast.tabGet(h.rr, h.live(), String(key))))
  }
  set(key: string, value: unknown): this {
    const h = hOf(this)
    // (the key first: nothing may run between the encode and the call)
    const k = String(key)
    if (!k.isWellFormed()) throw new ShmUnsupportedError('a key with a lone surrogate cannot be stored as UTF-8')
    const w = encodeInPlaceFor(h.region, value)
    native(() => fast.tabSet(h.rr, h.live(), k, w.buf, w.len))
    return this
  }
  delete(key: string): boolean {
    const h = hOf(this)
    return native(() => fast.tabDelete(h.rr, h.live(), String(key)))
  }
  has(key: string): boolean {
    const h = hOf(this)
    return native(() => fast.tabHas(h.rr, h.live(), String(key)))
  }
  keys(): string[] {
    const h = hOf(this)
    return native(() => binding.tabKeys(h.r, h.live()))
  }
  entries(): [string, unknown][] {
    const h = hOf(this)
    const out: [string, unknown][] = []
    for (const k of this.keys()) {
      const v = native(() => fast.tabGet(h.rr, h.live(), k))
      if (v !== null && v !== undefined) out.push([k, wrap(h.region, v)])
    }
    return out
  }
  values(): unknown[] {
    return this.entries().map(([, v]) => v)
  }
  get size(): number {
    const h = hOf(this)
    return native(() => fast.tabLen(h.rr, h.live()))
  }
  [Symbol.iterator](): IterableIterator<[string, unknown]> {
    return this.entries()[Symbol.iterator]()
  }
  toJS(): Record<string, unknown> {
    return copyOut(hOf(this)) as Record<string, unknown>
  }
  protected get [LABEL](): string {
    return 'SharedTab'
  }
}

/** Names that are methods, not table keys (reach such keys with get/set). */
const TAB_METHODS = methodNames(TabCore.prototype)

const tabHandler: ProxyHandler<TabCore> = {
  get(t, key, receiver) {
    if (typeof key === 'symbol' || TAB_METHODS.has(key)) return Reflect.get(t, key, receiver)
    return t.get(key)
  },
  set(t, key, value) {
    if (typeof key === 'symbol') return false
    t.set(key, value)
    return true
  },
  deleteProperty(t, key) {
    if (typeof key === 'symbol') return false
    t.delete(key)
    return true
  },
  has(t, key) {
    return typeof key !== 'symbol' && t.has(key)
  },
  // A damaged table can list a key twice; a Proxy must not (TypeError).
  ownKeys: (t) => [...new Set(t.keys())],
  getOwnPropertyDescriptor(t, key) {
    if (typeof key === 'symbol' || !t.has(key)) return undefined
    // An accessor, so Object.keys/for..in (which only ask about
    // enumerability) do not read values and make handles nobody releases.
    return { get: () => t.get(key), set: (v: unknown) => t.set(key, v), enumerable: true, configurable: true }
  },
  defineProperty(t, key, desc) {
    if (typeof key === 'symbol' || !('value' in desc)) return false
    t.set(key, desc.value)
    return true
  },
  // A shared table can always gain keys from another process: it cannot be
  // made non-extensible (Object.preventExtensions / freeze / seal throw).
  preventExtensions: () => false,
}

/** Give an object its handle: not enumerable, not writable, configurable (so Proxy invariants hold). */
function own(target: object, h: Handle): void {
  Object.defineProperty(target, HANDLE, { value: h, configurable: true })
}

/**
 * Give a proxy target its handle, as a plain property: cheaper than own()
 * (121-126 ns a definition in a probe), and as hidden, since nothing reaches
 * the target but its Proxy, whose traps never show, set or define a symbol
 * key (only util.inspect with showProxy or customInspect: false, which
 * print a Proxy's target, show it).
 */
function ownTarget(target: object, h: Handle): void {
  ;(target as { [HANDLE]?: Handle })[HANDLE] = h
}

function makeTab(h: Handle): SharedTab {
  const target = new TabCore()
  ownTarget(target, h)
  return new Proxy(target, tabHandler) as unknown as SharedTab
}

const INDEX = /^(0|[1-9]\d*)$/

function checkIndex(i: number): number {
  if (!Number.isInteger(i) || i < 0 || i > 0xffffffff) {
    throw new ShmArgumentError(`list index must be an integer >= 0, got ${i}`)
  }
  return i
}

/**
 * A deep copy of a table or list (toJS): in V8's format while the process
 * is young and the value large (coldwire.ts), else the wire encoding, read
 * by the JS reader.
 */
function copyOut(h: Handle): unknown {
  const out = readOut(native(() => binding.valueToJsBytes(h.r, h.live(), coldReadMin())))
  // (V8's reader refused what it was given, which no value here should make
  // it do: the JS reader reads the value again, and says what is wrong)
  return out !== undefined ? out.value : decode(native(() => binding.valueToWire(h.r, h.live())))
}

/** The target of every SharedArr proxy (see TabCore). */
class ArrCore extends HandleCore {
  get length(): number {
    const h = hOf(this)
    return native(() => fast.arrLen(h.rr, h.live()))
  }
  get(index: number): unknown {
    const h = hOf(this)
    return getOut(h, native(() => fast.arrGet(h.rr, h.live(), checkIndex(index))))
  }
  set(index: number, value: unknown): this {
    const h = hOf(this)
    // (the index first: nothing may run between the encode and the call)
    const i = checkIndex(index)
    const w = encodeInPlaceFor(h.region, value)
    native(() => fast.arrSet(h.rr, h.live(), i, w.buf, w.len))
    return this
  }
  push(...values: unknown[]): number {
    const h = hOf(this)
    // Encode everything first, so a value that cannot be stored fails the
    // call before anything is pushed.
    const wires = values.map((v) => Buffer.from(encodeFor(h.region, v)))
    let n = this.length
    for (const wire of wires) n = native(() => fast.arrPush(h.rr, h.live(), wire, wire.length))
    return n
  }
  pop(): unknown {
    const h = hOf(this)
    return getOut(h, native(() => fast.arrPop(h.rr, h.live())))
  }
  at(index: number): unknown {
    const n = this.length
    const i = Math.trunc(index)
    const j = i < 0 ? n + i : i
    return j >= 0 && j < n ? this.get(j) : undefined
  }
  *values(): IterableIterator<unknown> {
    for (let i = 0; i < this.length; i++) yield this.get(i)
  }
  *entries(): IterableIterator<[number, unknown]> {
    for (let i = 0; i < this.length; i++) yield [i, this.get(i)]
  }
  [Symbol.iterator](): IterableIterator<unknown> {
    return this.values()
  }
  toJS(): unknown[] {
    return copyOut(hOf(this)) as unknown[]
  }
  protected get [LABEL](): string {
    return 'SharedArr'
  }
}

const arrHandler: ProxyHandler<ArrCore> = {
  get(t, key, receiver) {
    if (typeof key === 'string' && INDEX.test(key)) return t.get(Number(key))
    return Reflect.get(t, key, receiver)
  },
  set(t, key, value) {
    if (typeof key !== 'string' || !INDEX.test(key)) {
      throw new ShmArgumentError(`only indexes can be set on a shared list, not ${String(key)}`)
    }
    t.set(Number(key), value)
    return true
  },
  has(t, key) {
    return typeof key === 'string' && INDEX.test(key) && Number(key) < t.length
  },
  ownKeys: (t) => Array.from({ length: t.length }, (_, i) => String(i)),
  getOwnPropertyDescriptor(t, key) {
    if (typeof key !== 'string' || !INDEX.test(key) || Number(key) >= t.length) return undefined
    const i = Number(key)
    return { get: () => t.get(i), set: (v: unknown) => t.set(i, v), enumerable: true, configurable: true }
  },
  deleteProperty() {
    throw new ShmArgumentError('elements cannot be deleted from a shared list (holes are not allowed); use pop()')
  },
  // Object.defineProperty(list, '3', { value }) sets item 3; nothing else can
  // be defined (the target's own symbol property included).
  defineProperty(t, key, desc) {
    if (typeof key !== 'string' || !INDEX.test(key) || !('value' in desc)) return false
    t.set(Number(key), desc.value)
    return true
  },
  // A shared list can always grow from another process: it cannot be made
  // non-extensible (Object.preventExtensions / freeze / seal throw).
  preventExtensions: () => false,
}

function makeArr(h: Handle): SharedArr {
  const target = new ArrCore()
  ownTarget(target, h)
  return new Proxy(target, arrHandler) as unknown as SharedArr
}

/** A shared typed array: `view()` is a TypedArray directly over the region. */
export class SharedTyped<T extends SharedTypedArray = SharedTypedArray> implements SharedHandle {
  readonly #h: Handle
  #view: T | undefined

  /** @internal */
  constructor(h: Handle) {
    this.#h = h
    own(this, h)
  }

  /** The element constructor's name, e.g. 'Float64Array'. */
  get elementType(): string {
    const Ctor = ELEM_CTORS[native(() => binding.typedElem(this.#h.r, this.#h.live()))]
    return Ctor ? Ctor.name : 'unknown'
  }

  get length(): number {
    return this.view().length
  }

  /**
   * A TypedArray over the shared bytes: no copy; writes are seen by every
   * process. Valid until this handle is released; then it is detached
   * (length 0), never a window on freed memory.
   */
  view(): T {
    if (this.#view === undefined || this.#view.buffer.byteLength === 0) {
      const h = this.#h
      const Ctor = this.#ctor()
      const ab = native(() => binding.typedView(h.r, h.live()))
      if (ab.byteLength > 0) {
        this.#h.keepView(ab)
        // The buffer holds the handle, so the value (and its reference) lives
        // as long as any view of it, even when the SharedTyped is dropped.
        Object.defineProperty(ab, VIEW_OWNER, { value: this.#h })
      }
      this.#view = new Ctor(ab) as T
    }
    return this.#view
  }

  toJS(): T {
    const h = this.#h
    const Ctor = this.#ctor()
    // One copy, straight from the region into a new ArrayBuffer.
    return new Ctor(native(() => binding.typedCopy(h.r, h.live()))) as T
  }

  /** The element constructor of the shared array (ERR_SHM_CORRUPT if its code is unknown). */
  #ctor(): (typeof ELEM_CTORS)[number] & object {
    const Ctor = ELEM_CTORS[native(() => binding.typedElem(this.#h.r, this.#h.live()))]
    if (!Ctor) throw new ShmError(ErrorCodes.CORRUPT, 'unknown typed-array element type')
    return Ctor
  }

  toJSON(): unknown {
    return Array.from(this.toJS() as ArrayLike<unknown>, (x) => (typeof x === 'bigint' ? x.toString() : x))
  }

  release(): void {
    this.#view = undefined
    this.#h.release()
  }

  [Symbol.dispose](): void {
    this.release()
  }

  get refCount(): number {
    return native(() => binding.valueRefCount(this.#h.r, this.#h.live()))
  }

  get offset(): number {
    return this.#h.offset
  }

  get released(): boolean {
    return this.#h.released
  }

  [inspect.custom](_depth: number, opts: object): string {
    return this.released ? 'SharedTyped <released>' : `SharedTyped ${inspect(this.view(), opts)}`
  }
}

type Primitive = null | undefined | boolean | number | bigint | string

/**
 * The seed's `Shared(pool, value)`: deep-copy a JS value into the pool and
 * return a handle owning one reference. Objects become SharedTab, arrays
 * SharedArr, typed arrays SharedTyped; a Buffer comes back as a copy (bytes
 * have no shared identity); primitives are returned as they are (they are
 * copied in wherever they are stored). A handle of the same region gives a
 * second handle to the same value (no copy).
 */
export function Shared(pool: Pool, value: Record<string, unknown>): SharedTab
export function Shared(pool: Pool, value: unknown[]): SharedArr
export function Shared<T extends SharedTypedArray>(pool: Pool, value: T): SharedTyped<T>
export function Shared<T extends Primitive>(pool: Pool, value: T): T
export function Shared(pool: Pool, value: unknown): unknown
export function Shared(pool: Pool, value: unknown): unknown {
  const region = pool.region()
  if (typeof value !== 'object' || value === null) {
    if (typeof value === 'function' || typeof value === 'symbol') encodeFor(region, value) // throws the right error
    return value
  }
  const existing = handleOf(value)
  if (existing) {
    // The same region, still live; the new handle goes in the table of this
    // pool's mapping, which may not be the one `existing` came through.
    const offset = existing.refOffset(region.regionKey())
    return wrap(region, native(() => region.native().valueAt(offset)))
  }
  const r = handleState(region).r
  if (ArrayBuffer.isView(value) && !Buffer.isBuffer(value)) {
    // A typed array goes straight from its own memory into the region (one
    // copy; its encoding would be a second). Other views take the encoder's
    // path, which refuses them with the right message.
    const code = elemCode(value)
    // (longer than the wire allows: the encoder refuses it with its error)
    if (code !== 0 && (value as ArrayBufferView & { length: number }).length <= 0xffffffff) {
      const bytes = new Uint8Array(value.buffer, value.byteOffset, value.byteLength)
      return wrap(region, native(() => binding.regionStoreTyped(r, code, bytes)))
    }
  }
  const wire = encodeFor(region, value)
  return wrap(region, native(() => binding.regionStore(r, wire)))
}

/** True only when `value` is a live shared handle whose value lives in `pool`. */
export function isSHM(value: unknown, pool: Pool): boolean {
  if (typeof value !== 'object' || value === null) return false
  const h = handleOf(value)
  return h !== undefined && !h.released && h.regionKey === pool.region().regionKey()
}
