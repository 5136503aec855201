/**
 * The wire format shared with the core (crates/shmtools-core/src/value/wire.rs):
 * a JS value is encoded into one Buffer in one pass here and handed to native
 * code in a single call, instead of walking the object property by property
 * through N-API. Decoding is the mirror image.
 */
import { ErrorCodes, ShmError } from './errors'

export const T_NONE = 1
export const T_BOOL = 2
export const T_INT = 3
export const T_UINT = 4
export const T_F64 = 5
export const T_F32 = 6
export const T_STR = 7
export const T_BYTES = 8
export const T_BIGINT = 9
export const T_TAB = 10
export const T_ARR = 11
export const T_TYPED = 12
export const T_REF = 13
/** Shape coding of batches handed to JS (crates/shmtools-core/src/value/shaped.rs). */
const T_DEFSHAPE = 32
const T_SHAPE = 33
const T_I32 = 34

export const MAX_DEPTH = 256

/** Typed-array constructors by element code (the core's `Elem`). */
export const ELEM_CTORS = [
  undefined,
  Int8Array,
  Uint8Array,
  Int16Array,
  Uint16Array,
  Int32Array,
  Uint32Array,
  BigInt64Array,
  BigUint64Array,
  Float32Array,
  Float64Array,
] as const

export type SharedTypedArray =
  | Int8Array
  | Uint8Array
  | Int16Array
  | Uint16Array
  | Int32Array
  | Uint32Array
  | BigInt64Array
  | BigUint64Array
  | Float32Array
  | Float64Array

/** The element code of a typed array the encoder accepts; 0 for any other view. */
export function elemCode(v: ArrayBufferView): number {
  // Exact prototypes only: a Uint8ClampedArray or a subclass is refused by
  // the caller rather than silently changed into something else.
  switch (Object.getPrototypeOf(v)) {
    case Int8Array.prototype: return 1
    case Uint8Array.prototype: return 2
    case Int16Array.prototype: return 3
    case Uint16Array.prototype: return 4
    case Int32Array.prototype: return 5
    case Uint32Array.prototype: return 6
    case BigInt64Array.prototype: return 7
    case BigUint64Array.prototype: return 8
    case Float32Array.prototype: return 9
    case Float64Array.prototype: return 10
    default: return 0
  }
}

/** True if for-in over `o` yields nothing (nothing enumerable, own or inherited). */
export function nothingEnumerable(o: object): boolean {
  for (const _ in o) return false
  return true
}

/** A value that is already shared: encoded as a reference, not copied. */
export interface RefSource {
  /** The object's offset if it may be referenced from `regionKey`; throws otherwise. */
  refOffset(regionKey: string): number
}

/** Returns the RefSource behind a shared handle (proxy or typed handle), if any. */
export type RefLookup = (v: object) => RefSource | undefined

/** Thrown for values that cannot be stored (a TypeError, like Node's own). */
export class ShmUnsupportedError extends TypeError {
  readonly code = ErrorCodes.UNSUPPORTED
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options)
    this.name = 'ShmUnsupportedError'
  }
}

/**
 * A value the encoder refuses, on its way up out of the walk. Each array or
 * table it passes on the way notes its key and itself, so a walk that goes
 * well keeps no path at all; encodeWith turns it into the
 * ShmUnsupportedError the caller sees, which says where the value was.
 */
class Refusal {
  /** The keys from the refused value outwards. */
  readonly keys: unknown[] = []
  /** The arrays and tables around the refused value, innermost first. */
  readonly around: object[] = []
  /** When the walk stopped at MAX_DEPTH: the object it stopped at. */
  deepest: object | undefined = undefined
  constructor(
    readonly message: string,
    readonly cause: unknown,
  ) {}

  /** Note that this refusal passed up through entry `key` of `container`. */
  static through(e: unknown, key: unknown, container: object): unknown {
    if (e instanceof Refusal) {
      e.keys.push(key)
      e.around.push(container)
    }
    return e
  }

  toError(): ShmUnsupportedError {
    let message = this.message
    const deepest = this.deepest
    if (deepest !== undefined) {
      // A cycle always runs into the depth limit; deep nesting without one
      // does too. Told apart only now, from the objects around.
      const a = this.around
      const cyclic = a.includes(deepest) || new Set(a).size < a.length
      message = cyclic ? 'a value that contains itself (a cycle) cannot be shared' : `values nest deeper than ${MAX_DEPTH} levels`
    }
    const keys = this.keys
    let where = ''
    for (let i = keys.length - 1; i >= 0; i--) where += `[${JSON.stringify(String(keys[i]))}]`
    return new ShmUnsupportedError(where ? `${message} at ${where}` : message, { cause: this.cause })
  }
}

const TWO32 = 2 ** 32

/**
 * The keys last written at one nesting depth, by place in their table, with
 * their encodings: messages and rows of one kind have the same keys in the
 * same order, so a key is mostly a compare (of one string with the same
 * string) and two or three stores. In interleaved runs of the code before
 * and after (docs/BENCHMARKS.md, "Keys the encoder has just written"),
 * `{ seq, payload }` messages went from 107-119 to 93-104 ns a message;
 * tables of keys never seen before cost up to a sixth more, which is why a
 * depth whose keys keep missing goes without for a while.
 */
interface KnownKeys {
  keys: (string | undefined)[]
  words: number[][]
  lens: number[]
  /** Keys not found here since the last one that was. */
  misses: number
  /** Tables gone without, while `misses` is high. */
  skipped: number
}
const KNOWN_DEPTHS = 8
const KNOWN_PLACES = 32
const KNOWN_KEY_BYTES = 64
const KNOWN_MISSES = 16
const knownKeys: KnownKeys[] = Array.from({ length: KNOWN_DEPTHS }, () => ({ keys: [], words: [], lens: [], misses: 0, skipped: 0 }))

class Encoder {
  buf = Buffer.allocUnsafe(256)
  view = new DataView(this.buf.buffer, this.buf.byteOffset, this.buf.byteLength)
  pos = 0

  regionKey = ''
  refOf: RefLookup = () => undefined
  busy = false
  /** Object.prototype has no enumerable property (checked per encode), so for-in over a plain object sees only its own keys. */
  plainProto = true

  reset(regionKey: string, refOf: RefLookup): this {
    this.regionKey = regionKey
    this.refOf = refOf
    this.plainProto = nothingEnumerable(Object.prototype)
    this.pos = 0
    return this
  }

  ensure(n: number): void {
    if (this.pos + n <= this.buf.length) return
    let size = this.buf.length * 2
    while (size < this.pos + n) size *= 2
    const next = Buffer.allocUnsafe(size)
    this.buf.copy(next, 0, 0, this.pos)
    this.buf = next
    this.view = new DataView(next.buffer, next.byteOffset, next.byteLength)
  }

  u8(v: number): void {
    this.ensure(1)
    this.buf[this.pos++] = v
  }

  u32(v: number): void {
    this.ensure(4)
    this.view.setUint32(this.pos, v, true)
    this.pos += 4
  }

  len(n: number, what: string): void {
    if (n > 0xffffffff) throw this.fail(`${what} is too long to share (more than 2^32-1 items)`)
    this.u32(n)
  }

  fail(message: string, cause?: unknown): Refusal {
    return new Refusal(message, cause)
  }

  string(tag: number, s: string): void {
    const len = s.length
    this.ensure(5 + len * 3)
    const buf = this.buf
    const start = this.pos + 5
    buf[this.pos] = tag
    // Short ASCII strings (most keys) byte by byte: cheaper than a call into
    // the UTF-8 encoder. Anything else goes through it.
    let n = 0
    if (len <= 64) {
      // Four characters to a store while they are ASCII.
      const view = this.view
      for (; n + 4 <= len; n += 4) {
        const a = s.charCodeAt(n)
        const b = s.charCodeAt(n + 1)
        const c = s.charCodeAt(n + 2)
        const d = s.charCodeAt(n + 3)
        if ((a | b | c | d) >= 0x80) break
        view.setUint32(start + n, a | (b << 8) | (c << 16) | (d << 24), true)
      }
      for (; n < len; n++) {
        const c = s.charCodeAt(n)
        if (c >= 0x80) break
        buf[start + n] = c
      }
    }
    if (n < len) {
      if (!s.isWellFormed()) throw this.fail('a string with a lone surrogate cannot be stored as UTF-8')
      n = buf.write(s, start, 'utf8')
    }
    this.view.setUint32(this.pos + 1, n, true)
    this.pos = start + n
  }

  key(k: string): void {
    // JavaScript keys are strings; the core keeps them as string keys.
    this.string(T_STR, k)
  }

  /**
   * Key `k`, the `place`th of its table, kept in `known` for the next table
   * at this depth (often of the same kind).
   */
  learnKey(k: string, known: KnownKeys, place: number): void {
    const at = this.pos
    this.string(T_STR, k)
    const len = this.pos - at
    // (a key that could not be kept is no miss: a table of many or long
    // keys must not turn the memory off for the tables it can serve)
    if (place >= KNOWN_PLACES || len > KNOWN_KEY_BYTES) return
    known.misses++
    // The bytes as 32-bit words, the last one padded with whatever follows
    // (the next write covers it; the room is made here).
    this.ensure(4)
    const words: number[] = []
    for (let i = 0; i < len; i += 4) words.push(this.view.getInt32(at + i, true))
    known.keys[place] = k
    known.words[place] = words
    known.lens[place] = len
  }

  /** The key `known` holds at `place` (the key being written is that one). */
  knownKey(known: KnownKeys, place: number): void {
    known.misses = 0
    const words = known.words[place]!
    this.ensure(words.length * 4)
    const view = this.view
    for (let i = 0, p = this.pos; i < words.length; i++, p += 4) view.setInt32(p, words[i]!, true)
    this.pos += known.lens[place]!
  }

  number(n: number): void {
    this.ensure(9)
    if ((n | 0) === n && (n !== 0 || 1 / n > 0)) {
      // (an int32, not -0: the common case, without a division)
      this.buf[this.pos] = T_INT
      this.view.setInt32(this.pos + 1, n, true)
      this.view.setInt32(this.pos + 5, n >> 31, true)
    } else if (Number.isSafeInteger(n) && !Object.is(n, -0)) {
      this.buf[this.pos] = T_INT
      this.view.setUint32(this.pos + 1, n >>> 0, true)
      this.view.setInt32(this.pos + 5, Math.floor(n / TWO32), true)
    } else {
      this.buf[this.pos] = T_F64
      this.view.setFloat64(this.pos + 1, n, true)
    }
    this.pos += 9
  }

  bigint(b: bigint): void {
    const neg = b < 0n
    let hex = (neg ? -b : b).toString(16)
    if (hex === '0') hex = ''
    if (hex.length % 2) hex = '0' + hex
    const n = hex.length / 2
    this.ensure(6 + n)
    this.buf[this.pos] = T_BIGINT
    this.buf[this.pos + 1] = neg ? 1 : 0
    this.view.setUint32(this.pos + 2, n, true)
    // little-endian magnitude: last hex pair first
    for (let i = 0; i < n; i++) {
      const at = hex.length - 2 * (i + 1)
      this.buf[this.pos + 6 + i] = parseInt(hex.slice(at, at + 2), 16)
    }
    this.pos += 6 + n
  }

  bytes(tag: number, code: number, v: ArrayBufferView): void {
    const raw = new Uint8Array(v.buffer, v.byteOffset, v.byteLength)
    if (tag === T_BYTES) {
      this.ensure(5 + raw.length)
      this.buf[this.pos] = T_BYTES
      this.view.setUint32(this.pos + 1, raw.length, true)
      this.buf.set(raw, this.pos + 5)
      this.pos += 5 + raw.length
    } else {
      const count = raw.length / ELEM_CTORS[code]!.BYTES_PER_ELEMENT
      if (count > 0xffffffff) throw this.fail('a typed array longer than 2^32-1 elements cannot be shared')
      this.ensure(6 + raw.length)
      this.buf[this.pos] = T_TYPED
      this.buf[this.pos + 1] = code
      this.view.setUint32(this.pos + 2, count, true)
      this.buf.set(raw, this.pos + 6)
      this.pos += 6 + raw.length
    }
  }

  /** The value `v` at the top, or with `many`, each of the array `v`. */
  top(v: unknown, many: boolean): void {
    if (!many) return this.value(v, 0)
    const values = v as readonly unknown[]
    for (let i = 0; i < values.length; i++) this.value(values[i], 0)
  }

  value(v: unknown, depth: number): void {
    switch (typeof v) {
      case 'number':
        return this.number(v)
      case 'string':
        return this.string(T_STR, v)
      case 'boolean':
        this.ensure(2)
        this.buf[this.pos++] = T_BOOL
        this.buf[this.pos++] = v ? 1 : 0
        return
      case 'bigint':
        return this.bigint(v)
      case 'undefined':
        return this.u8(T_NONE)
      case 'object':
        if (v === null) return this.u8(T_NONE)
        return this.object(v, depth)
      case 'function':
        throw this.fail('a function cannot be shared')
      case 'symbol':
        throw this.fail('a symbol cannot be shared')
    }
  }

  object(v: object, depth: number): void {
    const ref = this.refOf(v)
    if (ref) {
      let off: number
      try {
        off = ref.refOffset(this.regionKey)
      } catch (e) {
        // Our own coded errors (closed handle, foreign region) pass as they are.
        if (typeof (e as { code?: unknown })?.code === 'string') throw e
        throw this.fail(String((e as Error).message), e)
      }
      this.ensure(9)
      this.buf[this.pos] = T_REF
      this.view.setUint32(this.pos + 1, off % TWO32, true)
      this.view.setUint32(this.pos + 5, Math.floor(off / TWO32), true)
      this.pos += 9
      return
    }
    if (depth >= MAX_DEPTH) {
      // (whether it is a cycle is worked out from the objects around, which
      // the refusal collects on its way up: see Refusal.toError)
      const r = this.fail('')
      r.deepest = v
      throw r
    }
    if (ArrayBuffer.isView(v)) {
      if (Buffer.isBuffer(v)) return this.bytes(T_BYTES, 0, v)
      const code = elemCode(v)
      if (code === 0) {
        throw this.fail(`${v.constructor?.name ?? 'this view'} cannot be shared: use a Buffer, or one of Int8..Float64Array`)
      }
      return this.bytes(T_TYPED, code, v)
    }
    const proto = Object.getPrototypeOf(v)
    if (Array.isArray(v) && proto === Array.prototype) {
      this.u8(T_ARR)
      this.len(v.length, 'an array')
      for (let i = 0; i < v.length; i++) {
        try {
          this.value(this.read(v, i), depth + 1)
        } catch (e) {
          throw Refusal.through(e, i, v)
        }
      }
      return
    }
    if (proto !== Object.prototype && proto !== null) {
      const what = (v as { constructor?: { name?: string } }).constructor?.name ?? 'this object'
      throw this.fail(`${what} cannot be shared: only plain objects, arrays, Buffers, typed arrays and primitives can`)
    }
    // Symbol-keyed properties are skipped, as JSON.stringify and
    // structuredClone skip them: a table's keys are strings.
    if (proto === null || this.plainProto) {
      // After a run of keys not found in `known`, tables at this depth go
      // without (but for one in 256, so that a new kind is learnt again).
      const known = depth < KNOWN_DEPTHS ? knownKeys[depth]! : undefined
      if (known !== undefined && (known.misses < KNOWN_MISSES || (++known.skipped & 255) === 0)) this.ownKnownKeys(v, depth, known)
      else this.ownKeys(v, depth)
    } else this.listedKeys(v, Object.keys(v), depth)
  }

  /**
   * The entries of a plain object, walked with for-in, which V8 runs from
   * the object's enumeration cache and reads each property by its field
   * index (no key array, no megamorphic lookup by name): about a sixth less
   * time per small object than Object.keys. Only when nothing enumerable is
   * inherited (see `plainProto`, and encodeWith's check after the walk), so
   * it yields Object.keys' keys in the same order. It differs only where
   * reading a property changes what is being read: a property a getter
   * deletes before the walk reaches it is left out (Object.keys, a snapshot,
   * would give it as null), and a Proxy whose getPrototypeOf trap answers
   * differently when asked again can add that prototype's keys. The count
   * is written once the walk is done.
   */
  ownKeys(v: object, depth: number): void {
    this.ensure(5)
    const head = this.pos
    this.buf[head] = T_TAB
    this.pos += 5
    let count = 0
    for (const k in v) {
      count++
      try {
        this.key(k)
        let x: unknown
        try {
          x = (v as Record<string, unknown>)[k]
        } catch (e) {
          throw this.readFailed(e)
        }
        this.value(x, depth + 1)
      } catch (e) {
        throw Refusal.through(e, k, v)
      }
    }
    this.view.setUint32(head + 1, count, true)
  }

  /**
   * ownKeys(), with the keys of the last table at this depth at hand
   * (`known`). A copy rather than a `known` argument to ownKeys: one loop
   * serving both was 2-8 % slower on tables of new keys (six interleaved
   * runs of 256 such tables, 2026-12-06), which take ownKeys.
   */
  ownKnownKeys(v: object, depth: number, known: KnownKeys): void {
    this.ensure(5)
    const head = this.pos
    this.buf[head] = T_TAB
    this.pos += 5
    let count = 0
    for (const k in v) {
      try {
        if (count < KNOWN_PLACES && known.keys[count] === k) this.knownKey(known, count)
        else this.learnKey(k, known, count)
        count++
        let x: unknown
        try {
          x = (v as Record<string, unknown>)[k]
        } catch (e) {
          throw this.readFailed(e)
        }
        this.value(x, depth + 1)
      } catch (e) {
        throw Refusal.through(e, k, v)
      }
    }
    this.view.setUint32(head + 1, count, true)
  }

  listedKeys(v: object, keys: string[], depth: number): void {
    this.u8(T_TAB)
    this.len(keys.length, 'an object')
    for (const k of keys) {
      try {
        this.key(k)
        this.value(this.read(v, k), depth + 1)
      } catch (e) {
        throw Refusal.through(e, k, v)
      }
    }
  }

  read(o: object, k: string | number): unknown {
    try {
      return (o as Record<string | number, unknown>)[k]
    } catch (e) {
      throw this.readFailed(e)
    }
  }

  readFailed(e: unknown): Refusal {
    return this.fail(`reading this property threw (${(e as Error)?.message ?? e})`, e)
  }
}

/**
 * Encode `v` for the region identified by `regionKey`. Shared handles of that
 * region become references; anything else is copied.
 */
export function encode(v: unknown, regionKey: string, refOf: RefLookup): Buffer {
  // A view of the encoder's buffer: valid until the next encode(); callers
  // hand it to native code at once.
  const e = encodeWith(regionKey, refOf, v, false)
  return e.buf.subarray(0, e.pos)
}

/** Where an encode left its bytes: the first `len` of `buf`. */
export interface Encoded {
  buf: Buffer
  len: number
}

const encoded: Encoded = { buf: Buffer.alloc(0), len: 0 }

/**
 * encode(), without making a view of the bytes (a view costs 30-45 ns, a
 * fifth of encoding a small message): the encoder's own buffer and the
 * length filled. The object and the bytes are valid until the next encode;
 * callers hand them to native code at once.
 */
export function encodeInPlace(v: unknown, regionKey: string, refOf: RefLookup): Encoded {
  const e = encodeWith(regionKey, refOf, v, false)
  encoded.buf = e.buf
  encoded.len = e.pos
  return encoded
}

const shared = new Encoder()

/**
 * Encode several values back to back into one Buffer (each exactly as
 * encode() would), for the pipes' batch calls. Throws before anything is
 * returned if any of them cannot be stored.
 */
export function encodeMany(values: readonly unknown[], regionKey: string, refOf: RefLookup): Buffer {
  // Same lifetime as encode()'s result: until the next encode.
  const e = encodeWith(regionKey, refOf, values, true)
  return e.buf.subarray(0, e.pos)
}

/**
 * Encode `v` (with `many`, each of the array `v` back to back). No closure
 * per call: a one-message enqueue spends a few hundred ns in all.
 */
function encodeWith(regionKey: string, refOf: RefLookup, v: unknown, many: boolean): Encoder {
  // One encoder is reused (its buffer grows once and stays), unless a getter
  // being read re-enters encode(): then that inner call gets its own.
  const e = shared.busy ? new Encoder() : shared
  e.reset(regionKey, refOf)
  e.busy = true
  try {
    e.top(v, many)
    if (e.plainProto && !nothingEnumerable(Object.prototype)) {
      // A getter made something on Object.prototype enumerable while for-in
      // walked (which would have taken it as an own key): again, with
      // Object.keys throughout (reset sees the change).
      e.reset(regionKey, refOf)
      e.top(v, many)
    }
  } catch (err) {
    throw err instanceof Refusal ? err.toError() : err
  } finally {
    e.busy = false
  }
  return e
}

/** Decode a run of back-to-back encoded values (see encodeMany) into plain JS values. */
export function decodeMany(buf: Buffer): unknown[] {
  const out: unknown[] = []
  const d = new Decoder(buf)
  try {
    while (d.pos < buf.length) out.push(d.value())
  } catch (e) {
    throw clearScratch(e)
  }
  return out
}

/** After a failed decode: drop what the scratch arrays still hold; gives `e` back. */
function clearScratch(e: unknown): unknown {
  for (const a of scratchVals) a.length = 0
  for (const a of scratchKeys) a.length = 0
  return e
}

/**
 * Decode a batch the binding handed over as a string: a flag character (0:
 * every string in it is ASCII; 1: some are not), then back-to-back encoded
 * values, one byte per character (latin1). See BatchDecoder below.
 */
export function decodeBatch(s: string): unknown[] {
  const out: unknown[] = []
  if (s.length === 0) return out
  const d = new BatchDecoder(s, s.charCodeAt(0) === 0)
  try {
    while (d.pos < s.length) out.push(d.value())
  } catch (e) {
    throw clearScratch(e)
  }
  return out
}

/** decodeBatch of a string that holds exactly one value: that value. */
export function decodeBatchOne(s: string): unknown {
  return decodeOne(new BatchDecoder(s, s.charCodeAt(0) === 0), s.length)
}

/** Decode wire bytes into plain JS values (a deep copy). */
export function decode(buf: Buffer): unknown {
  return decodeOne(new Decoder(buf), buf.length)
}

/** The one value `d` reads, which must end at `end`. */
function decodeOne(d: Decoder | BatchDecoder, end: number): unknown {
  let v: unknown
  try {
    v = d.value()
  } catch (e) {
    throw clearScratch(e)
  }
  if (d.pos !== end) throw new ShmError(ErrorCodes.CORRUPT, 'trailing bytes after a decoded value')
  return v
}

/** A BigInt from its sign and its magnitude's bytes, least significant first. */
function bigIntFrom(neg: boolean, mag: Uint8Array): bigint {
  let hex = ''
  for (let i = mag.length - 1; i >= 0; i--) hex += mag[i]!.toString(16).padStart(2, '0')
  const v = hex ? BigInt('0x' + hex) : 0n
  return neg ? -v : v
}

class Decoder implements ShapeReader {
  pos = 0
  /** Tables being decoded around the current position (their scratch arrays). */
  depth = 0
  /** The key lists this value or batch defined (DefShape), by number. */
  readonly shapes: BatchShape[] = []
  readonly view: DataView
  constructor(readonly buf: Buffer) {
    this.view = new DataView(buf.buffer, buf.byteOffset, buf.byteLength)
  }

  /** If the next bytes encode the key `node` expects, step past them and return it. */
  knownKey(node: ShapeNode): string | undefined {
    const enc = node.keyBytes
    if (enc === undefined) return undefined
    const b = this.buf
    const p = this.pos
    if (p + enc.length > b.length) return undefined
    for (let i = 0; i < enc.length; i++) if (b[p + i] !== enc[i]) return undefined
    this.pos = p + enc.length
    return node.key
  }

  key(): string {
    return String(this.value())
  }

  /** value(), with small integers read here at once. */
  fast(): unknown {
    const p = this.pos
    if (this.buf[p] === T_I32 && p + 5 <= this.buf.length) {
      this.pos = p + 5
      return this.view.getInt32(p + 1, true)
    }
    return this.value()
  }

  need(n: number): void {
    if (this.pos + n > this.buf.length) throw new ShmError(ErrorCodes.CORRUPT, 'a shared value ends too early')
  }

  /** Step over the next `n` bytes (there must be that many); returns where they start. */
  at(n: number): number {
    this.need(n)
    const p = this.pos
    this.pos = p + n
    return p
  }

  u32(): number {
    return this.view.getUint32(this.at(4), true)
  }

  value(): unknown {
    const tag = this.buf[this.at(1)]
    switch (tag) {
      case T_NONE:
        return null
      case T_BOOL:
        return this.buf[this.at(1)] !== 0
      case T_INT: {
        const p = this.at(8)
        const lo = this.view.getUint32(p, true)
        const hi = this.view.getInt32(p + 4, true)
        if (hi >= -0x200000 && hi < 0x200000) return hi * TWO32 + lo
        return (BigInt(hi) << 32n) | BigInt(lo)
      }
      case T_UINT: {
        const p = this.at(8)
        const lo = this.view.getUint32(p, true)
        const hi = this.view.getUint32(p + 4, true)
        if (hi < 0x200000) return hi * TWO32 + lo
        return (BigInt(hi) << 32n) | BigInt(lo)
      }
      case T_F64:
        return this.view.getFloat64(this.at(8), true)
      case T_F32:
        return this.view.getFloat32(this.at(4), true)
      case T_STR: {
        const n = this.u32()
        const p = this.at(n)
        return this.buf.toString('utf8', p, p + n)
      }
      case T_BYTES: {
        const n = this.u32()
        const p = this.at(n)
        return Buffer.from(this.buf.subarray(p, p + n))
      }
      case T_BIGINT: {
        const neg = this.buf[this.at(1)] !== 0
        const n = this.u32()
        const p = this.at(n)
        return bigIntFrom(neg, this.buf.subarray(p, p + n))
      }
      case T_TAB:
        return readTable(this, this.u32(), false)
      case T_DEFSHAPE:
        return readTable(this, this.u32(), true)
      case T_SHAPE:
        return readShaped(this, this.view.getUint16(this.at(2), true))
      case T_I32:
        return this.view.getInt32(this.at(4), true)
      case T_ARR: {
        const n = this.u32()
        const a = new Array(n)
        for (let i = 0; i < n; i++) a[i] = this.value()
        return a
      }
      case T_TYPED: {
        const code = this.buf[this.at(1)]
        const Ctor = ELEM_CTORS[code!]
        if (!Ctor) throw new ShmError(ErrorCodes.CORRUPT, `unknown typed-array element type ${code}`)
        const count = this.u32()
        const bytes = count * Ctor.BYTES_PER_ELEMENT
        const p = this.at(bytes)
        const copy = new Uint8Array(bytes)
        copy.set(this.buf.subarray(p, p + bytes))
        return new Ctor(copy.buffer)
      }
      default:
        throw new ShmError(ErrorCodes.CORRUPT, `unknown value tag ${tag}`)
    }
  }
}

/**
 * Decoded tables. Messages of one kind are tables with the same keys in the
 * same order; assigning properties one by one to `{}` goes through V8's
 * generic (megamorphic) keyed store for each. Instead, each list of keys that
 * comes back gets a small function returning an object literal with those
 * keys (made with `new Function` the second time the list is read), which V8
 * compiles to a fixed-shape allocation. The lists live in a tree walked key
 * by key while a table is read (the expected key's bytes are compared first,
 * so a step is usually one compare). The tree holds copies of its keys, never
 * slices of a batch string. Tables with more than SHAPE_KEYS_MAX keys, keys
 * longer than SHAPE_KEY_LEN_MAX, key lists past SHAPES_MAX tree nodes, a
 * `__proto__` or repeated key, or a process that forbids code from strings
 * take the one-by-one path, which gives the same object.
 */
const SHAPE_KEYS_MAX = 16
const SHAPES_MAX = 4096
/** Longer keys are read the one-by-one way, and kept in no tree. */
const SHAPE_KEY_LEN_MAX = 64

/**
 * A string equal to `s` that shares no memory with a larger string (V8 makes
 * a substring of 13 or more characters a slice of its parent): the
 * internalized copy V8 makes of a property name.
 */
function flat(s: string): string {
  return Object.keys({ [s]: 0 })[0]!
}
type MakeTable = (v: unknown[]) => Record<string, unknown>
interface ShapeNode {
  /** The first child's key and node (most nodes have one child). */
  key: string | undefined
  /** `key` as the wire has it (tag, length, bytes), one character per byte. */
  keyEnc: string | undefined
  /** The same bytes as bytes, for the Buffer reader. */
  keyBytes: Uint8Array | undefined
  child: ShapeNode | undefined
  more: Map<string, ShapeNode> | undefined
  /** For the key list ending here: undefined (not made yet) or null (one by one). */
  make: MakeTable | null | undefined
  /** Tables of this key list made so far, up to 2 (the function is made for the second). */
  seen: number
}
const newShape = (): ShapeNode => ({ key: undefined, keyEnc: undefined, keyBytes: undefined, child: undefined, more: undefined, make: undefined, seen: 0 })
const shapeRoot = newShape()
let shapeNodes = 0
/** Per table nesting depth, the keys and values read so far. */
const scratchKeys: string[][] = []
const scratchVals: unknown[][] = []

function shapeStep(node: ShapeNode | undefined, key: string): ShapeNode | undefined {
  if (node === undefined) return undefined
  if (node.key === key) return node.child
  const found = node.more?.get(key)
  if (found !== undefined || shapeNodes >= SHAPES_MAX || key.length > SHAPE_KEY_LEN_MAX) return found
  shapeNodes++
  const child = newShape()
  // The tree lives as long as the process: it must hold a copy of the key,
  // never a slice of the batch string it was read from.
  const k = flat(key)
  if (node.key === undefined) {
    node.key = k
    node.keyEnc = latin1Key(k)
    const enc = Buffer.from(k, 'utf8')
    node.keyBytes = Buffer.concat([Buffer.from([T_STR, enc.length & 0xff, (enc.length >>> 8) & 0xff, (enc.length >>> 16) & 0xff, enc.length >>> 24]), enc])
    node.child = child
  } else {
    ;(node.more ??= new Map()).set(k, child)
  }
  return child
}

/** The wire encoding of key `k` as a latin1 string (undefined if not ASCII). */
function latin1Key(k: string): string | undefined {
  for (let i = 0; i < k.length; i++) if (k.charCodeAt(i) >= 0x80) return undefined
  const n = k.length
  return String.fromCharCode(T_STR, n & 0xff, (n >>> 8) & 0xff, (n >>> 16) & 0xff, n >>> 24) + k
}

/** Does `s` hold `enc` at `p`? */
function matchAt(s: string, p: number, enc: string): boolean {
  const n = enc.length
  if (p + n > s.length) return false
  for (let i = 0; i < n; i++) if (s.charCodeAt(p + i) !== enc.charCodeAt(i)) return false
  return true
}

function compileShape(keys: readonly string[], n: number): MakeTable | null {
  const seen = new Set<string>()
  const fields: string[] = []
  for (let i = 0; i < n; i++) {
    const k = keys[i]!
    // `__proto__: x` in a literal sets the prototype; a repeated key keeps
    // its first position, which a literal would also do, but stay plain.
    if (k === '__proto__' || seen.has(k)) return null
    seen.add(k)
    fields.push(`${JSON.stringify(k)}: v[${i}]`)
  }
  try {
    return new Function('v', `return { ${fields.join(', ')} }`) as MakeTable
  } catch {
    return null // e.g. node --disallow-code-generation-from-strings
  }
}

function setKey(o: Record<string, unknown>, k: string, v: unknown): void {
  // '__proto__' is data here, not the prototype setter.
  if (k === '__proto__') Object.defineProperty(o, k, { value: v, writable: true, enumerable: true, configurable: true })
  else o[k] = v
}

function buildTable(node: ShapeNode | undefined, keys: string[], vals: unknown[], n: number): Record<string, unknown> {
  let o: Record<string, unknown>
  let make = node?.make
  // A key list seen once may be a one-off (keys that are ids, say): only a
  // list that comes back is worth a compiled function.
  if (node !== undefined && make === undefined && ++node.seen > 1) make = node.make = compileShape(keys, n)
  if (make) {
    o = make(vals)
  } else {
    o = {}
    for (let i = 0; i < n; i++) setKey(o, keys[i]!, vals[i])
  }
  // The scratch must not keep the values alive.
  for (let i = 0; i < n; i++) vals[i] = undefined
  return o
}

/** A key list a value or batch defined, by number (DefShape / Shape). */
interface BatchShape {
  n: number
  keys: string[]
  make: MakeTable | null
  /** Its place in the tree of key lists (none past the tree's limits). */
  node: ShapeNode | undefined
}

/** What readTable and readShaped need of a decoder. */
interface ShapeReader {
  depth: number
  readonly shapes: BatchShape[]
  knownKey(node: ShapeNode): string | undefined
  key(): string
  fast(): unknown
  value(): unknown
}

/**
 * A table of `n` entries at the reader's position (Tab, or DefShape when
 * `define`: then its key list also becomes the reader's next shape).
 */
function readTable(r: ShapeReader, n: number, define: boolean): Record<string, unknown> {
  if (n > SHAPE_KEYS_MAX || (define && n === 0)) {
    if (define) throw new ShmError(ErrorCodes.CORRUPT, `a shared value names a shape of ${n} keys`)
    const o: Record<string, unknown> = {}
    for (let i = 0; i < n; i++) setKey(o, r.key(), r.value())
    return o
  }
  const d = r.depth++
  const keys = (scratchKeys[d] ??= [])
  const vals = (scratchVals[d] ??= [])
  let node: ShapeNode | undefined = shapeRoot
  for (let i = 0; i < n; i++) {
    // Most often the key is the one that followed last time: its encoding
    // is compared at once, without decoding or hashing it.
    const k = (node !== undefined ? r.knownKey(node) : undefined) ?? r.key()
    node = shapeStep(node, k)
    keys[i] = k
    vals[i] = r.fast()
  }
  r.depth = d
  const o = buildTable(node, keys, vals, n)
  if (define) r.shapes.push({ n, keys: keys.slice(0, n), make: node?.make ?? null, node })
  // (a key read here may be a slice of the batch: do not keep it)
  for (let i = 0; i < n; i++) keys[i] = ''
  return o
}

/** A table of the reader's shape number `id`: its values follow. */
function readShaped(r: ShapeReader, id: number): Record<string, unknown> {
  const sh = r.shapes[id]
  if (sh === undefined) throw new ShmError(ErrorCodes.CORRUPT, `a shared value names shape ${id} before defining it`)
  const n = sh.n
  const d = r.depth++
  const vals = (scratchVals[d] ??= [])
  for (let i = 0; i < n; i++) vals[i] = r.fast()
  r.depth = d
  let o: Record<string, unknown>
  if (sh.make === null && sh.node !== undefined && sh.node.make === undefined) {
    // The second table of a key list met for the first time.
    sh.make = sh.node.make = compileShape(sh.keys, n)
  }
  if (sh.make) {
    o = sh.make(vals)
  } else {
    o = {}
    for (let i = 0; i < n; i++) setKey(o, sh.keys[i]!, vals[i])
  }
  for (let i = 0; i < n; i++) vals[i] = undefined
  return o
}

const keyCache: (string | undefined)[] = new Array(512).fill(undefined)
const f64 = new Float64Array(1)
const f32 = new Float32Array(f64.buffer, 0, 1)
const f64Bytes = new Uint8Array(f64.buffer)

/**
 * The wire format read from a string holding one byte per character (what
 * the batch copy returns: one native string for a whole batch, instead of a
 * Buffer). Reading bytes is charCodeAt, and an ASCII string's text is a
 * substring of the batch, which V8 makes without copying and without a call
 * into native code (a string of 13 or more characters then shares the batch's
 * memory while it lives; batches handed over this way are small, so that is
 * bounded). Table keys repeat from message to message: a small cache returns
 * the same string for the same bytes, so each key is made (and internalized
 * by V8 as a property name) once, not per message. Bytes, typed arrays, big
 * integers and non-ASCII strings take a Buffer copy of their bytes.
 */
class BatchDecoder implements ShapeReader {
  pos = 1
  /** Tables being decoded around the current position (their scratch arrays). */
  depth = 0
  /** The key lists this batch defined (DefShape), by number. */
  readonly shapes: BatchShape[] = []
  constructor(
    readonly s: string,
    /** Every string in the batch is ASCII (the binding says so). */
    readonly ascii: boolean,
  ) {}

  need(n: number): void {
    if (this.pos + n > this.s.length) throw new ShmError(ErrorCodes.CORRUPT, 'a shared value ends too early')
  }

  u32(): number {
    this.need(4)
    const s = this.s
    const p = this.pos
    this.pos = p + 4
    return (s.charCodeAt(p) | (s.charCodeAt(p + 1) << 8) | (s.charCodeAt(p + 2) << 16) | (s.charCodeAt(p + 3) << 24)) >>> 0
  }

  bytes(n: number): Buffer {
    this.need(n)
    const b = Buffer.from(this.s.substring(this.pos, this.pos + n), 'latin1')
    this.pos += n
    return b
  }

  /** A string of `n` UTF-8 bytes at the current position. */
  text(n: number): string {
    this.need(n)
    const s = this.s
    const p = this.pos
    this.pos = p + n
    if (!this.ascii) {
      for (let i = p; i < p + n; i++) {
        if (s.charCodeAt(i) >= 0x80) return Buffer.from(s.substring(p, p + n), 'latin1').toString('utf8')
      }
    }
    return s.substring(p, p + n)
  }

  key(): string {
    const s = this.s
    if (s.charCodeAt(this.pos) !== T_STR) return String(this.value())
    this.pos++
    const n = this.u32()
    this.need(n)
    const p = this.pos
    if (n > 24) return this.text(n)
    let h = n
    for (let i = p; i < p + n; i++) h = (Math.imul(h, 31) + s.charCodeAt(i)) | 0
    const slot = h & 511
    const c = keyCache[slot]
    if (c !== undefined && c.length === n) {
      let i = 0
      while (i < n && c.charCodeAt(i) === s.charCodeAt(p + i)) i++
      if (i === n) {
        this.pos = p + n
        return c
      }
    }
    const k = this.text(n)
    // Only an ASCII key has one character per byte, as the check above
    // assumes; the cache keeps a copy, not a slice of this batch.
    if (k.length === n) keyCache[slot] = n >= 13 ? flat(k) : k
    return k
  }

  /** If the next bytes encode the key `node` expects, step past them and return it. */
  knownKey(node: ShapeNode): string | undefined {
    const enc = node.keyEnc
    if (enc === undefined || !matchAt(this.s, this.pos, enc)) return undefined
    this.pos += enc.length
    return node.key
  }

  /** value(), with small integers and ASCII strings read here at once. */
  fast(): unknown {
    const s = this.s
    const p = this.pos
    const tag = s.charCodeAt(p)
    if (tag === T_I32 && p + 5 <= s.length) {
      this.pos = p + 5
      return s.charCodeAt(p + 1) | (s.charCodeAt(p + 2) << 8) | (s.charCodeAt(p + 3) << 16) | (s.charCodeAt(p + 4) << 24)
    }
    if (tag === T_STR && this.ascii && p + 5 <= s.length) {
      const len = (s.charCodeAt(p + 1) | (s.charCodeAt(p + 2) << 8) | (s.charCodeAt(p + 3) << 16) | (s.charCodeAt(p + 4) << 24)) >>> 0
      if (p + 5 + len <= s.length) {
        this.pos = p + 5 + len
        return s.substring(p + 5, p + 5 + len)
      }
    }
    return this.value()
  }

  scalar8(): void {
    this.need(8)
    const s = this.s
    for (let i = 0; i < 8; i++) f64Bytes[i] = s.charCodeAt(this.pos + i)
    this.pos += 8
  }

  value(): unknown {
    this.need(1)
    const tag = this.s.charCodeAt(this.pos++)
    switch (tag) {
      case T_NONE:
        return null
      case T_BOOL:
        this.need(1)
        return this.s.charCodeAt(this.pos++) !== 0
      case T_INT:
      case T_UINT: {
        const lo = this.u32()
        const hi = tag === T_INT ? this.u32() | 0 : this.u32()
        if (hi >= -0x200000 && hi < 0x200000) return hi * TWO32 + lo
        return (BigInt(hi) << 32n) | BigInt(lo)
      }
      case T_F64:
        this.scalar8()
        return f64[0]
      case T_F32: {
        this.need(4)
        for (let i = 0; i < 4; i++) f64Bytes[i] = this.s.charCodeAt(this.pos + i)
        this.pos += 4
        return f32[0]
      }
      case T_STR:
        return this.text(this.u32())
      case T_BYTES:
        return this.bytes(this.u32())
      case T_BIGINT: {
        this.need(1)
        const neg = this.s.charCodeAt(this.pos++) !== 0
        return bigIntFrom(neg, this.bytes(this.u32()))
      }
      case T_TAB:
        return readTable(this, this.u32(), false)
      case T_DEFSHAPE:
        return readTable(this, this.u32(), true)
      case T_SHAPE: {
        this.need(2)
        const id = this.s.charCodeAt(this.pos) | (this.s.charCodeAt(this.pos + 1) << 8)
        this.pos += 2
        return readShaped(this, id)
      }
      case T_I32:
        this.need(4)
        return this.u32() | 0
      case T_ARR: {
        const n = this.u32()
        const a = new Array(n)
        for (let i = 0; i < n; i++) a[i] = this.value()
        return a
      }
      case T_TYPED: {
        this.need(1)
        const code = this.s.charCodeAt(this.pos++)
        const Ctor = ELEM_CTORS[code]
        if (!Ctor) throw new ShmError(ErrorCodes.CORRUPT, `unknown typed-array element type ${code}`)
        const count = this.u32()
        const raw = this.bytes(count * Ctor.BYTES_PER_ELEMENT)
        const copy = new Uint8Array(raw.length)
        copy.set(raw)
        return new Ctor(copy.buffer)
      }
      default:
        throw new ShmError(ErrorCodes.CORRUPT, `unknown value tag ${tag}`)
    }
  }
}
