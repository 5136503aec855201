/**
 * Large values while the process is young.
 *
 * The JS encoder (wire.ts) runs in V8's interpreter until V8 has optimized
 * it: a fresh process's first encode of a 10 000-row table took 13-17 ms,
 * the eighth 0.9 ms. V8's serializer is native code from the first call
 * (about 2 ms for the same table). So, until this process has encoded
 * `COLD_BYTES` of wire output in all, a large value made only of plain
 * objects, arrays, primitives, Buffers and typed arrays is serialized by V8
 * and read into the wire format by the core (shmtools_core::value::v8in),
 * which gives the same bytes as the JS encoder.
 *
 * The format does not record prototypes, so a walk first checks that every
 * object is plain (and no shared handle is inside, which goes by
 * reference): that walk reads every property, so a getter runs twice on
 * this path (three times if the value then goes to the JS encoder). Anything else, or anything V8 writes that the reader does not
 * take (an object met twice, a named property on an array, a lone
 * surrogate, ...), goes to the JS encoder, which also words any refusal.
 *
 * The reader has the same trouble: a fresh process's first toJS() of a
 * 10 000-row table took 16-21 ms in the JS reader, `v8.deserialize` of it
 * 3.4 ms. So until a process has read `COLD_BYTES` through toJS(), a table
 * or list whose encoding is at least `READ_LARGE` bytes comes out of the
 * core in V8's format (shmtools_core::value::v8out, which writes only what
 * means the same to both readers) and is read by a `v8.Deserializer`.
 */
import { Deserializer, Serializer } from 'node:v8'

import * as binding from '../binding'
import { decode, ELEM_CTORS, elemCode, MAX_DEPTH, nothingEnumerable, type RefLookup } from './wire'

/** Wire bytes this process may encode before the JS encoder is taken as warm. */
const COLD_BYTES = 1 << 20

/** Fewest values (objects and their entries) for V8's serializer to be worth its fixed cost. */
const LARGE = 512

let coldLeft = COLD_BYTES

/** How many values took this path (for tests). */
let coldEncodes = 0

/** Bytes of toJS() output this process may read before the JS reader is taken as warm. */
let coldReadLeft = COLD_BYTES

/** Smallest encoding worth V8's deserializer (its fixed cost, and the core's rewrite). */
const READ_LARGE = 16 << 10

/** How many toJS() results came through V8's deserializer (for tests). */
let coldReads = 0

/** Thrown inside the serializer to give up on this path; never seen outside. */
const GIVE_UP = new Error('shmtools: not for the cold path')

class ViewsAsHostObjects extends Serializer {
  constructor(readonly refOf: RefLookup) {
    super()
    // (in Node's typings only on the DefaultSerializer it sets this up for)
    ;(this as unknown as { _setTreatArrayBufferViewsAsHostObjects(on: boolean): void })._setTreatArrayBufferViewsAsHostObjects(true)
  }

  /** A Buffer as code 0, a typed array as its element code (see v8in.rs). */
  _writeHostObject(v: ArrayBufferView): void {
    if (this.refOf(v) !== undefined) throw GIVE_UP
    const bytes = Buffer.isBuffer(v)
    const code = bytes ? 0 : elemCode(v)
    if (code === 0 && !bytes) throw GIVE_UP
    // The bytes as the JS encoder takes them (through the view's properties;
    // a detached buffer throws here, and the JS encoder refuses it).
    const raw = new Uint8Array(v.buffer, v.byteOffset, v.byteLength)
    if (raw.byteLength > 0xffffffff) throw GIVE_UP
    this.writeUint32(code)
    this.writeUint32(raw.byteLength)
    this.writeRawBytes(raw)
  }
}

/** What the walk found: how many values, and how many holes in arrays. */
let holes = 0

/**
 * How many values `v` holds (objects count once, and once per entry), if
 * every object in it is a plain object, an array or an array-buffer view
 * and none is a shared handle; -1 otherwise. Counts the holes of arrays in
 * `holes`: the reader checks that V8 wrote as many (an element V8 does not
 * list, such as a non-enumerable one, or a hole the JS encoder reads through
 * a prototype, makes the counts differ).
 */
function plainCount(v: object, depth: number, refOf: RefLookup): number {
  if (depth >= MAX_DEPTH || refOf(v) !== undefined) return -1
  if (ArrayBuffer.isView(v)) return 1
  const proto = Object.getPrototypeOf(v)
  let n = 1
  if (Array.isArray(v)) {
    // (an array of another prototype is a table to the JS encoder)
    if (proto !== Array.prototype) return -1
    const a = v as unknown[]
    for (let i = 0; i < a.length; i++) {
      const x = a[i]
      n++
      if (x === undefined && !Object.hasOwn(a, i)) holes++
      else if (typeof x === 'object' && x !== null) {
        const m = plainCount(x, depth + 1, refOf)
        if (m < 0) return -1
        n += m
      }
    }
    return n
  }
  if (proto !== Object.prototype && proto !== null) return -1
  for (const k in v) {
    const x = (v as Record<string, unknown>)[k]
    n++
    if (typeof x === 'object' && x !== null) {
      const m = plainCount(x, depth + 1, refOf)
      if (m < 0) return -1
      n += m
    }
  }
  return n
}

/**
 * `v` in the wire format through V8's serializer, or undefined: the process
 * is warm, `v` is small, or it holds anything this path does not take.
 */
export function coldEncode(v: unknown, refOf: RefLookup): Buffer | undefined {
  if (coldLeft <= 0 || typeof v !== 'object' || v === null) return undefined
  // (for-in in the walk would take inherited keys that V8 does not, and the
  // JS encoder reads a hole through Array.prototype, where V8 writes a hole)
  if (!nothingEnumerable(Object.prototype) || !nothingEnumerable(Array.prototype)) return undefined
  let wire: Buffer | null
  // (a getter read by the walk or the serializer may encode a value of its
  // own: its walk counts from zero and gives this count back when done)
  const outer = holes
  try {
    holes = 0
    if (plainCount(v, 0, refOf) < LARGE) return undefined
    const s = new ViewsAsHostObjects(refOf)
    s.writeHeader()
    s.writeValue(v)
    wire = binding.v8ToWire(s.releaseBuffer(), holes)
  } catch {
    // A getter that throws, a Proxy, a Map's key...: the JS encoder reads
    // the value again and says what is wrong, if anything.
    return undefined
  } finally {
    holes = outer
  }
  if (wire === null) return undefined
  coldLeft -= wire.length
  coldEncodes++
  return wire
}

/** A view the core wrote as a host object (v8out.rs): code 0 a Buffer, else the wire's element code. */
class HostViews extends Deserializer {
  _readHostObject(): ArrayBufferView {
    const code = this.readUint32()
    const n = this.readUint32()
    // (a view of the input: each value gets memory of its own, as the JS reader gives)
    const raw = this.readRawBytes(n)
    if (code === 0) return Buffer.from(raw)
    const Ctor = ELEM_CTORS[code]
    if (Ctor === undefined || n % Ctor.BYTES_PER_ELEMENT !== 0) throw new Error(`no view of code ${code} and ${n} bytes`)
    const copy = new Uint8Array(n)
    copy.set(raw)
    return new Ctor(copy.buffer)
  }
}

/** What to pass valueToJsBytes: V8's format for large values while this process is young, never (-1) after. */
export function coldReadMin(): number {
  return coldReadLeft > 0 ? READ_LARGE : -1
}

/**
 * The value in `b` as valueToJsBytes gave it: V8's format (its first byte
 * 0xFF) or the wire encoding. Undefined only if V8's reader refused the
 * bytes, which no value should make it do (the caller then reads the wire
 * encoding instead).
 */
export function readOut(b: Buffer): { value: unknown } | undefined {
  coldReadLeft -= b.length
  if (b[0] !== 0xff) return { value: decode(b) }
  try {
    const d = new HostViews(b)
    d.readHeader()
    const value = d.readValue()
    // All of it was one value (the core writes nothing V8 would read short:
    // a check, where the reader's position can be had).
    const end = (d as unknown as { _readRawBytes?(n: number): number })._readRawBytes?.(0)
    if (end !== undefined && end !== b.length) return undefined
    coldReads++
    return { value }
  } catch {
    return undefined
  }
}

/** For tests: let the next `bytes` of toJS() output take V8's format again (0: never). */
export function setColdReadBytes(bytes: number): void {
  coldReadLeft = bytes
}

/** For tests: the bytes of toJS() output left before the JS reader is taken as warm. */
export function coldReadBytesLeft(): number {
  return coldReadLeft
}

/** For tests: how many toJS() results came through V8's deserializer. */
export function coldReadCount(): number {
  return coldReads
}

/** Count `bytes` of wire output made by the JS encoder toward warming it. */
export function warmed(bytes: number): void {
  coldLeft -= bytes
}

/** For tests: let the next `bytes` of output take the cold path again (0: never). */
export function setColdBytes(bytes: number): void {
  coldLeft = bytes
}

/** For tests: how many values have taken this path in this process. */
export function coldEncodeCount(): number {
  return coldEncodes
}

/** For tests: the wire bytes left before the JS encoder is taken as warm. */
export function coldBytesLeft(): number {
  return coldLeft
}
