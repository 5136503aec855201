/**
 * The cold path (src/coldwire.ts): a young process's large plain values go
 * through V8's serializer and the core's reader of its format
 * (crates/shmtools-core/src/value/v8in.rs). It must give the JS encoder's
 * bytes exactly, leave everything else to the JS encoder, and hold across
 * processes. The other way, toJS() of a large value comes out in V8's
 * format (value/v8out.rs) and is read by a v8.Deserializer: it must give
 * what the JS reader gives, key order and every type included.
 */
import { isDeepStrictEqual } from 'node:util'

import test, { type ExecutionContext } from 'ava'
import { ServerSide, Shared, ShmUnsupportedError, type SharedArr, type SharedTab } from 'shmtools'

import { coldBytesLeft, coldEncode, coldReadBytesLeft, coldReadCount, readOut, setColdBytes, setColdReadBytes } from '../dist/coldwire.js'
import { encode } from '../dist/wire.js'
import { bigValue, jsonOf } from './fixtures/big-value.ts'
import { fixturePath, freshRegion, lastJson, runNode } from './helpers.ts'

const none = () => undefined

/** Whatever the test does to the budget is undone when it ends. */
function budget(t: ExecutionContext, bytes: number): void {
  const before = coldBytesLeft()
  setColdBytes(bytes)
  t.teardown(() => setColdBytes(before))
}

/** `v` with enough plain company to take the cold path (more than LARGE values). */
const padded = (v: unknown): unknown => ({ pad: Array.from({ length: 600 }, (_, i) => i), v })

test('the cold path writes the bytes the JS encoder writes', (t) => {
  budget(t, 1 << 30)
  for (let seed = 1; seed <= 40; seed++) {
    const v = bigValue(seed)
    const cold = coldEncode(v, none)
    if (cold === undefined) return t.fail(`seed ${seed}: the cold path gave up on a plain value`)
    const js = Buffer.from(encode(v, 'k', none))
    if (!cold.equals(js)) return t.fail(`seed ${seed}: ${cold.length} bytes against ${js.length}, first difference at ${cold.findIndex((b, i) => b !== js[i])}`)
  }
  // A view's bytes are taken through its properties, as the JS encoder takes them.
  const odd = padded(Object.defineProperties(new Uint8Array([1, 2, 0, 0]), { byteOffset: { value: 2 }, byteLength: { value: 2 } }))
  t.deepEqual(coldEncode(odd, none), Buffer.from(encode(odd, 'k', none)))
})

class Point {
  x = 1
}

const LEFT: [string, () => unknown][] = [
  ['a class instance', () => new Point()],
  ['a Date', () => new Date(0)],
  ['a Map', () => new Map([[1, 2]])],
  ['a boxed number', () => new Number(1)],
  ['a Uint8ClampedArray', () => new Uint8ClampedArray(2)],
  ['a DataView', () => new DataView(new ArrayBuffer(2))],
  ['a lone surrogate', () => 'a\ud800'],
  ['an object met twice', () => { const o = { a: 1 }; return [o, o] }],
  ['an array with a named property', () => Object.assign([1, 2], { extra: 3 })],
  ['a cycle', () => { const o: Record<string, unknown> = {}; o.self = o; return o }],
  ['a Proxy', () => new Proxy({ a: 1 }, {})],
  ['nesting past the limit', () => JSON.parse('['.repeat(300) + ']'.repeat(300))],
  ['a function', () => () => 1],
  ['a getter that throws', () => Object.defineProperty({}, 'g', { enumerable: true, get() { throw new Error('no') } })],
  ['an array with a null prototype', () => Object.setPrototypeOf([1, 2], null)],
  ['an array with the prototype of objects', () => Object.setPrototypeOf([1, 2], Object.prototype)],
  ['a non-enumerable element', () => Object.defineProperty([1, 2, 3], 1, { value: 5, enumerable: false })],
  ['a detached buffer', () => { const a = new Float64Array(2); structuredClone(a.buffer, { transfer: [a.buffer] }); return a }],
]

test('what the cold path does not take goes to the JS encoder, with the same outcome', (t) => {
  const f = freshRegion(t, 'cold-left', 16 << 20)
  const outcome = (v: unknown, cold: boolean): unknown => {
    setColdBytes(cold ? 1 << 30 : 0)
    try {
      const h = Shared(f.pool, v) as SharedTab
      const js = h.toJS()
      h.release()
      return { js }
    } catch (e) {
      return { error: (e as Error).constructor.name, code: (e as { code?: string }).code, message: (e as Error).message }
    }
  }
  budget(t, 0)
  for (const [what, make] of LEFT) {
    setColdBytes(1 << 30)
    t.is(coldEncode(padded(make()), none), undefined, what)
    t.deepEqual(outcome(padded(make()), true), outcome(padded(make()), false), what)
  }
  // (and those that are refused are refused as before)
  setColdBytes(1 << 30)
  t.throws(() => Shared(f.pool, padded(new Point())), { instanceOf: ShmUnsupportedError, message: /Point cannot be shared/ })
})

test('small values and a warm process skip the cold path; what either path writes counts', (t) => {
  const f = freshRegion(t, 'cold-budget', 16 << 20)
  budget(t, 1 << 30)
  t.is(coldEncode({ a: 1 }, none), undefined, 'a small value')
  t.truthy(coldEncode(bigValue(1), none))
  setColdBytes(0)
  t.is(coldEncode(bigValue(1), none), undefined, 'warm')
  setColdBytes(1000)
  Shared(f.pool, bigValue(2)).release()
  t.true(coldBytesLeft() < 0, 'a large value spends the budget')
  setColdBytes(1 << 20)
  Shared(f.pool, { a: 1 }).release()
  t.true(coldBytesLeft() < 1 << 20, 'so does a small one, on the JS encoder')
})

test('a handle inside a large value still goes by reference', (t) => {
  const f = freshRegion(t, 'cold-ref', 16 << 20)
  budget(t, 1 << 30)
  const inner = Shared(f.pool, { x: 1 }) as SharedTab
  const outer = Shared(f.pool, padded(inner)) as SharedTab
  inner.x = 2
  const seen = outer.v as SharedTab
  t.is(seen.x, 2, 'the outer value holds the same table, not a copy')
  t.is(inner.refCount, 3)
  seen.release()
  outer.release()
  inner.release()
})

test('a fresh process sends large values by the cold path, and they arrive as the JS encoder would have them', async (t) => {
  const f = freshRegion(t, 'cold-x', 32 << 20)
  const pipe = new ServerSide(f.region, 'cold', 4).start().pipe()
  const seed = 77
  const r = await runNode(['--import', '@oxc-node/core/register', fixturePath('values-child.ts'), 'cold', f.name, 'cold', String(seed)])
  t.is(r.code, 0, r.stderr)
  t.is(lastJson<{ coldEncodes: number }>(r).coldEncodes, 2, 'the child took the cold path for both values')
  budget(t, 0)
  for (const s of [seed, seed + 1]) {
    const got = pipe.deq() as SharedTab
    const want = Shared(f.pool, bigValue(s)) as SharedTab
    t.deepEqual(got.toJS(), want.toJS(), `seed ${s}`)
    got.release()
    want.release()
  }
})

test('a non-enumerable index on Array.prototype, read through a hole, sends the value to the JS encoder', (t) => {
  budget(t, 1 << 30)
  // eslint-disable-next-line no-sparse-arrays
  const v = padded([1, , 3])
  t.truthy(coldEncode(v, none))
  Object.defineProperty(Array.prototype, '1', { value: 'inherited', configurable: true })
  try {
    t.is(coldEncode(v, none), undefined)
  } finally {
    delete (Array.prototype as unknown as Record<string, unknown>)[1]
  }
})

test('an enumerable property on Object.prototype or Array.prototype sends every value to the JS encoder', (t) => {
  budget(t, 1 << 30)
  // eslint-disable-next-line no-sparse-arrays
  const v = padded([1, , 3])
  t.truthy(coldEncode(v, none))
  for (const proto of [Object.prototype, Array.prototype] as Record<string, unknown>[]) {
    proto[1] = 'inherited'
    try {
      t.is(coldEncode(v, none), undefined)
    } finally {
      delete proto[1]
    }
  }
  t.truthy(coldEncode(v, none))
})

test('a getter that stores a large value of its own leaves the outer hole count as it was', (t) => {
  const f = freshRegion(t, 'cold-nested', 16 << 20)
  budget(t, 1 << 30)
  // eslint-disable-next-line no-sparse-arrays
  const v = padded({ arr: [1, , 3], get g() { Shared(f.pool, bigValue(3)).release(); return 1 } })
  const cold = coldEncode(v, none)
  if (cold === undefined) return t.fail('the cold path gave up on the outer value')
  t.deepEqual(cold, Buffer.from(encode(v, 'k', none)))
})

/** Where `a` and `b` differ (types, values, -0, prototypes, key order), or undefined. */
function difference(a: unknown, b: unknown, at = ''): string | undefined {
  if (!isDeepStrictEqual(a, b)) {
    if (typeof a !== 'object' || a === null || typeof b !== 'object' || b === null) return `${at}: ${String(a)} against ${String(b)}`
  }
  if (typeof a !== 'object' || a === null || typeof b !== 'object' || b === null) return undefined
  if (Object.getPrototypeOf(a) !== Object.getPrototypeOf(b)) return `${at}: prototypes differ`
  if (ArrayBuffer.isView(a)) return isDeepStrictEqual(a, b) ? undefined : `${at}: views differ`
  const ka = Object.keys(a)
  const kb = Object.keys(b as object)
  if (ka.join('\u0001') !== kb.join('\u0001')) return `${at}: keys ${JSON.stringify(ka.slice(0, 8))} against ${JSON.stringify(kb.slice(0, 8))}`
  for (const k of ka) {
    const d = difference((a as Record<string, unknown>)[k], (b as Record<string, unknown>)[k], `${at}[${JSON.stringify(k)}]`)
    if (d !== undefined) return d
  }
  return isDeepStrictEqual(a, b) ? undefined : `${at}: differ`
}

/** toJS() of `h` through V8's format, and through the JS reader; and whether the first took V8's format. */
function bothWays(h: SharedTab | SharedArr): { v8: unknown; js: unknown; tookV8: boolean } {
  setColdReadBytes(1 << 30)
  const before = coldReadCount()
  const v8 = h.toJS()
  const tookV8 = coldReadCount() === before + 1
  setColdReadBytes(0)
  const js = h.toJS()
  return { v8, js, tookV8 }
}

/** Whatever the test does to the reading budget is undone when it ends. */
function readBudget(t: ExecutionContext): void {
  setColdReadBytes(0)
  t.teardown(() => setColdReadBytes(0))
}

test('toJS() of a large value through V8\'s format gives what the JS reader gives', (t) => {
  const f = freshRegion(t, 'cold-read', 32 << 20)
  readBudget(t)
  budget(t, 0)
  let viaV8 = 0
  for (let seed = 1; seed <= 40; seed++) {
    const h = Shared(f.pool, bigValue(seed)) as SharedTab
    const { v8, js, tookV8 } = bothWays(h)
    h.release()
    if (tookV8) viaV8++
    const d = difference(v8, js)
    if (d !== undefined) return t.fail(`seed ${seed}: ${d}`)
  }
  t.is(viaV8, 40, 'every one of these values is large enough, and V8\'s format carries all of it')
  // Keys and numbers at the edges, strings of each width, every view.
  const edges: Record<string, unknown> = {
    ['__proto__']: { a: 1 },
    '10': 'ten', '2': 'two', '-1': 'minus one', '01': 'not an index', '4294967294': 'last index', '4294967295': 'not one',
    n: [0, -0, NaN, Infinity, -Infinity, 2 ** 31, -(2 ** 31) - 1, 2 ** 53 - 1, -(2 ** 53), 2 ** 53, 5e-324, 0.1],
    big: [0n, -1n, 2n ** 64n, -(2n ** 100n), 2n ** 63n, -(2n ** 63n)],
    s: ['', 'ascii', 'café', 'ÿ', '日本語', 'z😀', '\u0000', 'é'.repeat(3000)],
    views: [Buffer.from([1, 2, 3]), Buffer.alloc(0), new Int8Array([-1]), new Uint8Array([255]), new Int16Array([-2]), new Uint16Array([65535]), new Int32Array([-3]), new Uint32Array([2 ** 32 - 1]), new Float32Array([0.1, -0]), new Float64Array([NaN, -0]), new BigInt64Array([-5n]), new BigUint64Array([2n ** 64n - 1n])],
    nulls: [null, undefined],
    deep: JSON.parse('['.repeat(250) + '1' + ']'.repeat(250)),
    pad: Array.from({ length: 3000 }, (_, i) => ({ i, s: `row ${i}` })),
  }
  const h = Shared(f.pool, edges) as SharedTab
  const { v8, js, tookV8 } = bothWays(h)
  h.release()
  t.true(tookV8, 'the edge value took V8\'s format')
  t.is(difference(v8, js), undefined)
  t.is(Object.getPrototypeOf(v8), Object.prototype)
  t.deepEqual(Object.getOwnPropertyDescriptor(v8, '__proto__'), { value: { a: 1 }, writable: true, enumerable: true, configurable: true })
  // A large list as well as a table.
  const list = Shared(f.pool, Array.from({ length: 5000 }, (_, i) => (i % 2 ? `s${i}` : i))) as SharedArr
  const l = bothWays(list)
  list.release()
  t.true(l.tookV8)
  t.is(difference(l.v8, l.js), undefined)
})

test('toJS() reads small values, and everything once the process is warm, with the JS reader', (t) => {
  const f = freshRegion(t, 'cold-read-budget', 16 << 20)
  readBudget(t)
  const small = Shared(f.pool, { a: [1, 2, 3], b: 'x' }) as SharedTab
  const large = Shared(f.pool, bigValue(3)) as SharedTab
  const before = coldReadCount()
  setColdReadBytes(1 << 30)
  t.deepEqual(small.toJS(), { a: [1, 2, 3], b: 'x' })
  t.is(coldReadCount(), before, 'a small value')
  large.toJS()
  t.is(coldReadCount(), before + 1, 'a large one, while young')
  setColdReadBytes(1)
  large.toJS()
  t.is(coldReadCount(), before + 2, 'the read that spends the budget still takes it')
  large.toJS()
  t.is(coldReadCount(), before + 2, 'warm: the JS reader')
  // Each read, either way, spends the budget by what it read.
  setColdReadBytes(1 << 20)
  small.toJS()
  t.true(coldReadBytesLeft() < 1 << 20, 'a small read, by the JS reader, spends the budget too')
  small.release()
  large.release()
})

test('a fresh process reads a large value through V8\'s format, as the JS reader would have it', async (t) => {
  const f = freshRegion(t, 'cold-read-x', 32 << 20)
  const pipe = new ServerSide(f.region, 'coldr', 4).start().pipe()
  readBudget(t)
  const seed = 91
  const sent = Shared(f.pool, bigValue(seed)) as SharedTab
  pipe.enq(sent)
  const r = await runNode(['--import', '@oxc-node/core/register', fixturePath('values-child.ts'), 'cold-read', f.name, 'coldr'])
  t.is(r.code, 0, r.stderr)
  const got = lastJson<{ coldReads: number; json: string }>(r)
  t.is(got.coldReads, 1, 'the child read the value through V8\'s format')
  t.is(got.json, jsonOf(sent.toJS()), 'and it is what the JS reader here makes of it')
  sent.release()
})

test('V8\'s format that is not one whole value is refused, and the caller reads the wire encoding', (t) => {
  readBudget(t)
  // version 15, the Smi 1 (zigzag 2)
  t.deepEqual(readOut(Buffer.from([0xff, 15, 0x49, 2])), { value: 1 })
  t.is(readOut(Buffer.from([0xff, 15, 0x49, 2, 0x49, 4])), undefined, 'bytes after the value')
  t.is(readOut(Buffer.from([0xff, 15, 0x6f])), undefined, 'cut short')
  t.is(readOut(Buffer.from([0xff, 15, 0x5c, 99, 0])), undefined, 'a view of an unknown code')
  // A wire encoding (first byte not 0xFF) goes to the JS reader.
  t.deepEqual(readOut(Buffer.from([1])), { value: null })
})
