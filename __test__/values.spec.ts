/**
 * Shared values: Shared(pool, v) deep copies, SharedTab / SharedArr proxies,
 * zero-copy typed arrays, references between values, handles passed to other
 * processes and worker threads by offset, the GC safety net, bad input,
 * running out of memory, and corrupted regions.
 *
 * Every test uses its own region and compares pool.stats() with a baseline
 * taken before any value was made: nothing may stay allocated. Handles read
 * out of containers are released explicitly, so the GC of this process never
 * changes a region while a test looks at it.
 */
import { randomInt } from 'node:crypto'
import { createRequire } from 'node:module'
import { isDeepStrictEqual } from 'node:util'
import { Worker } from 'node:worker_threads'

import test, { type ExecutionContext } from 'ava'
import fc from 'fast-check'
import {
  attachSync,
  ErrorCodes,
  isSHM,
  Shared,
  SharedTyped,
  SHMMain,
  ServerSide,
  ShmUnsupportedError,
  type PoolStats,
  type SharedArr,
  type SharedTab,
} from 'shmtools'

import {
  cleanup,
  fixturePath,
  freshRegion,
  lastJson,
  NAME_PREFIX,
  shmEntries,
  startFixture,
  uniqueName,
  type ChildResult,
  type FixtureOptions,
  type LiveChild,
  type RegionFixture,
} from './helpers.ts'

const KiB = 1024
const MiB = 1024 * KiB

/** The native binding itself (the facade's handle calls go straight to it). */
const binding = createRequire(import.meta.url)('../binding.js') as typeof import('../binding.js')

const VALUES_CHILD = fixturePath('values-child.ts')
const VALUES_WORKER = fixturePath('values-worker.ts')

function startValuesChild(args: string[], opts: FixtureOptions = {}): LiveChild {
  return startFixture(VALUES_CHILD, args, opts)
}

function runValuesChild(args: string[], opts: FixtureOptions = {}): Promise<ChildResult> {
  return startValuesChild(args, opts).done
}

interface Fixture extends RegionFixture {
  /** pool.stats() before any value was made. */
  baseline: PoolStats
}

/** A fresh region for one test, destroyed when the test ends. */
function fresh(t: ExecutionContext, tag: string, bytes = 4 * MiB): Fixture {
  const f = freshRegion(t, tag, bytes)
  return { ...f, baseline: f.pool.stats() }
}

/** Nothing the test made is still allocated, and the allocator is consistent. */
function assertBaseline(t: ExecutionContext, f: Fixture, what = 'every value was freed'): void {
  t.deepEqual(f.pool.stats(), f.baseline, what)
  t.notThrows(() => f.pool.check())
}

const unsupported = { code: ErrorCodes.UNSUPPORTED, instanceOf: ShmUnsupportedError } as const
const closed = { code: ErrorCodes.CLOSED } as const
const invalidArg = { code: ErrorCodes.INVALID_ARG, instanceOf: TypeError } as const
const anyShmCode = (e: unknown) => typeof (e as { code?: unknown })?.code === 'string' && /^ERR_SHM_[A-Z_]+$/.test((e as { code: string }).code)

test.after.always('no region made by this file is left in /dev/shm', (t) => {
  t.deepEqual(shmEntries(NAME_PREFIX), [])
})

/** A SharedTab, SharedArr or SharedTyped (not a Buffer or a plain value). */
function isHandle(v: unknown): v is { release(): void; toJS(): unknown } {
  return typeof v === 'object' && v !== null && typeof (v as { release?: unknown }).release === 'function'
}

/** Release anything that is a shared handle (values read out of containers may be). */
function done(...vs: unknown[]): void {
  // (`'release' in tab` would ask the shared Tab for a key named 'release'.)
  for (const v of vs) if (isHandle(v)) v.release()
}

/** Nested `levels` deep: {x: {x: ... leaf}} or [[[ ... leaf]]]. */
function nest(levels: number, leaf: unknown, kind: 'obj' | 'arr' | 'mix' = 'obj'): unknown {
  let v = leaf
  for (let i = 0; i < levels; i++) v = kind === 'arr' || (kind === 'mix' && i % 2) ? [v] : { x: v }
  return v
}

// 1 Round trips ------------------------------------------------------------------

const SCALARS: [string, unknown][] = [
  ['null', null],
  ['true', true],
  ['false', false],
  ['0', 0],
  ['-1', -1],
  ['2**53-1', 2 ** 53 - 1],
  ['-(2**53-1)', -(2 ** 53 - 1)],
  ['2**53 (not a safe integer)', 2 ** 53],
  ['2**32 + 1', 2 ** 32 + 1],
  ['-(2**32) - 1', -(2 ** 32) - 1],
  ['1.5', 1.5],
  ['-2.5e-300', -2.5e-300],
  ['5e-324', 5e-324],
  ['MAX_VALUE', Number.MAX_VALUE],
  ['-0', -0],
  ['NaN', NaN],
  ['Infinity', Infinity],
  ['-Infinity', -Infinity],
  ['0n', 0n],
  ['-5n', -5n],
  ['10n**47n', 10n ** 47n],
  ['-(2n**200n)', -(2n ** 200n)],
  ['2n**64n - 1n', 2n ** 64n - 1n],
  ['empty string', ''],
  ['ascii', 'hello'],
  ['unicode', 'héllo wörld ✓ 日本語 😀 𝄞 👩‍👩‍👧 \u0000 end'],
  ['1 MB string', 'x'.repeat(MiB - 7) + '😀✓é'],
  ['bytes', Buffer.from([0, 1, 2, 254, 255])],
  ['empty bytes', Buffer.alloc(0)],
]

/** Object.is for primitives, deep strict equality otherwise (-0, NaN and Buffer-vs-Uint8Array all count). */
function same(t: ExecutionContext, actual: unknown, expected: unknown, what: string): void {
  t.true(isDeepStrictEqual(actual, expected), `${what}: got ${String(actual).slice(0, 60)}, expected ${String(expected).slice(0, 60)}`)
}

test('every scalar kind, string and Buffer round-trips through an Arr and a Tab, exactly (-0, NaN, bigint, astral, 1 MB)', (t) => {
  const f = fresh(t, 'scalars')
  const values = SCALARS.map(([, v]) => v)
  const arr = Shared(f.pool, values)
  t.is(arr.length, values.length)
  const copy = arr.toJS()
  const tab = Shared(f.pool, {})
  for (const [i, [what, v]] of SCALARS.entries()) {
    same(t, copy[i], v, `toJS()[${i}] (${what})`)
    same(t, arr[i], v, `arr[${i}] (${what})`)
    tab.set(what, v)
    same(t, tab.get(what), v, `tab.get(${what})`)
    same(t, tab[what], v, `tab[${what}]`)
  }
  // A Buffer comes back as a Buffer (a copy), never as a shared handle.
  const bytes = arr[SCALARS.findIndex(([w]) => w === 'bytes')]
  t.true(Buffer.isBuffer(bytes))
  t.false(isSHM(bytes, f.pool))
  same(t, tab.toJS(), Object.fromEntries(SCALARS), 'tab.toJS()')
  arr.release()
  tab.release()
  assertBaseline(t, f)
})

test('primitives pass through Shared() unchanged and allocate nothing; a Buffer comes back as an equal copy', (t) => {
  const f = fresh(t, 'prims')
  for (const v of [null, undefined, true, 0, -0, NaN, 7.5, 5n, -(2n ** 90n), '', 'text 😀', 'lone \uD800 surrogate']) {
    same(t, Shared(f.pool, v as never), v, `Shared(${String(v)})`)
  }
  const buf = Buffer.from('bytes')
  const back = Shared(f.pool, buf)
  t.true(Buffer.isBuffer(back))
  t.not(back, buf)
  t.deepEqual(back, buf)
  assertBaseline(t, f)
})

const TYPED: [string, ArrayLike<number | bigint> & ArrayBufferView][] = [
  ['Int8Array', new Int8Array([0, 1, -1, 127, -128])],
  ['Uint8Array', new Uint8Array([0, 1, 255])],
  ['Int16Array', new Int16Array([0, -1, 32767, -32768])],
  ['Uint16Array', new Uint16Array([0, 65535, 12345])],
  ['Int32Array', new Int32Array([0, -1, 2 ** 31 - 1, -(2 ** 31)])],
  ['Uint32Array', new Uint32Array([0, 2 ** 32 - 1, 7])],
  ['BigInt64Array', new BigInt64Array([0n, -1n, 2n ** 63n - 1n, -(2n ** 63n)])],
  ['BigUint64Array', new BigUint64Array([0n, 2n ** 64n - 1n, 5n])],
  ['Float32Array', new Float32Array([0, -0, 1.5, NaN, Infinity, -3.25])],
  ['Float64Array', new Float64Array([0, -0, Math.PI, NaN, -Infinity, 5e-324])],
]

test('each typed-array kind is stored as a SharedTyped of the same kind: elementType, view(), toJS() and nested reads agree', (t) => {
  const f = fresh(t, 'typed')
  for (const [kind, src] of TYPED) {
    const h = Shared(f.pool, src as Float64Array)
    t.true(h instanceof SharedTyped, kind)
    t.true(isSHM(h, f.pool))
    t.is(h.elementType, kind)
    t.is(h.length, src.length)
    const view = h.view()
    t.is(view.constructor.name, kind)
    same(t, view, src, `${kind} view()`)
    const copy = h.toJS()
    t.is(copy.constructor.name, kind)
    same(t, copy, src, `${kind} toJS()`)
    t.not(copy.buffer, view.buffer, 'toJS() is a copy')
    t.is(copy.byteOffset, 0)
    t.is(copy.buffer.byteLength, copy.byteLength, 'a buffer of its own, exactly its size')
    // Writing to the copy leaves the shared value alone, and the other way round.
    if (copy.length > 0) {
      const before = view[0]
      ;(copy as unknown as number[])[0] = (typeof before === 'bigint' ? 7n : 7) as never
      t.is(view[0], before, `${kind}: the copy is not the region`)
    }
    // Inside a container: a read gives a handle to the same kind.
    const tab = Shared(f.pool, { a: src })
    const inner = tab.a as SharedTyped
    t.true(inner instanceof SharedTyped)
    same(t, inner.view(), src, `${kind} nested view()`)
    same(t, tab.toJS().a, src, `${kind} nested toJS()`)
    done(inner, tab, h)
  }
  // A window of a bigger buffer stores just that window.
  const big = new Int16Array([1, 2, 3, 4, 5, 6])
  const win = Shared(f.pool, big.subarray(2, 5))
  t.deepEqual(Array.from(win.view()), [3, 4, 5])
  // Over a SharedArrayBuffer, and a window of one: copied in like any other.
  const sab = new Float64Array(new SharedArrayBuffer(32))
  sab.set([1.5, -2, 3, 4])
  const fromSab = Shared(f.pool, sab.subarray(1, 3))
  t.deepEqual(Array.from(fromSab.view()), [-2, 3])
  sab[1] = 99
  t.is(fromSab.view()[0], -2, 'a copy, not the SharedArrayBuffer')
  done(fromSab)
  // A subclass is refused, as the encoder refuses it, and nothing is allocated.
  class Tagged extends Float64Array {}
  const before = f.pool.stats().bytesUsed
  const err = t.throws(() => Shared(f.pool, new Tagged(4)))
  t.is((err as { code?: string }).code, 'ERR_SHM_UNSUPPORTED')
  t.is(f.pool.stats().bytesUsed, before)
  // Empty typed arrays work too.
  const empty = Shared(f.pool, new Float32Array(0))
  t.is(empty.view().length, 0)
  t.deepEqual(empty.toJS(), new Float32Array(0))
  done(win, empty)
  assertBaseline(t, f)
})

test('nested and empty containers round-trip; 200 levels of nesting work', (t) => {
  const f = fresh(t, 'nested')
  const v = {
    emptyObj: {},
    emptyArr: [],
    both: [[], {}, [[]], { a: {} }],
    d: { e: { f: [1, { g: 'h', i: [null, true, 2n, new Uint16Array([9])] }] } },
    bytes: [Buffer.from('x'), Buffer.alloc(0)],
  }
  const h = Shared(f.pool, v)
  t.deepEqual(h.toJS(), v)
  const e = Shared(f.pool, {})
  const a = Shared(f.pool, [])
  t.is(e.size, 0)
  t.deepEqual(e.keys(), [])
  t.deepEqual(e.toJS(), {})
  t.is(a.length, 0)
  t.deepEqual(a.toJS(), [])
  t.deepEqual([...a], [])
  done(h, e, a)

  for (const kind of ['obj', 'arr', 'mix'] as const) {
    const deep = nest(200, 'bottom', kind)
    const d = Shared(f.pool, deep as Record<string, unknown>)
    t.deepEqual(d.toJS(), deep, `200 levels (${kind})`)
    d.release()
  }
  assertBaseline(t, f)
})

test('300 levels of nesting are refused with a code, through Shared(), set and push, and nothing stays allocated', (t) => {
  const f = fresh(t, 'toodeep')
  const tab = Shared(f.pool, { keep: 1 })
  const arr = Shared(f.pool, [0])
  const before = f.pool.stats()
  for (const kind of ['obj', 'arr', 'mix'] as const) {
    const deep = nest(300, 'bottom', kind) as object
    t.throws(() => Shared(f.pool, deep), unsupported, kind)
    t.throws(() => (tab.deep = deep), unsupported, kind)
    t.throws(() => arr.push(deep), unsupported, kind)
    t.throws(() => (arr[0] = deep), unsupported, kind)
  }
  t.deepEqual(f.pool.stats(), before)
  t.deepEqual(tab.toJS(), { keep: 1 })
  t.deepEqual(arr.toJS(), [0])
  done(tab, arr)
  assertBaseline(t, f)
})

test('a value nested deeper than the limit through references: toJS() fails with a code, release still frees every level', (t) => {
  const f = fresh(t, 'deepref')
  const top = Shared(f.pool, nest(200, { leaf: true }) as object) as SharedTab
  const bottom = Shared(f.pool, nest(200, 'bottom') as object) as SharedTab
  // Walk down top's chain and hang bottom under its last level: 400 levels in the region.
  let cur = top.x as SharedTab
  for (let i = 0; i < 198; i++) {
    const next = cur.x as SharedTab
    cur.release()
    cur = next
  }
  t.deepEqual(cur.keys(), ['x'])
  cur.y = bottom
  cur.release()
  const err = t.throws(() => top.toJS())
  t.true(anyShmCode(err), String(err))
  // The same nesting is fine from a nearer starting point.
  t.deepEqual(bottom.toJS(), nest(200, 'bottom'))
  done(bottom, top)
  assertBaseline(t, f)
})

test('keys keep insertion order: overwriting keeps the place, delete + set moves to the end, growth keeps order', (t) => {
  const f = fresh(t, 'order')
  const tab = Shared(f.pool, { z: 1, a: 2, m: 3, é: 4, '': 5, 'key with spaces': 6 })
  const order = ['z', 'a', 'm', 'é', '', 'key with spaces']
  t.deepEqual(tab.keys(), order)
  t.deepEqual(Object.keys(tab), order)
  t.deepEqual(Object.keys(tab.toJS()), order)
  tab.a = 'again'
  t.deepEqual(tab.keys(), order)
  delete tab.z
  tab.z = 'back'
  t.deepEqual(tab.keys(), ['a', 'm', 'é', '', 'key with spaces', 'z'])
  // Many keys, half deleted, more added: the table grows and compacts, order stays.
  const expected = tab.keys()
  for (let i = 0; i < 100; i++) {
    tab[`k${i}`] = i
    expected.push(`k${i}`)
  }
  for (let i = 0; i < 100; i += 2) delete tab[`k${i}`]
  for (let i = 100; i < 150; i++) tab[`k${i}`] = i
  const want = [...expected.filter((k) => !/^k\d+$/.test(k) || Number(k.slice(1)) % 2 === 1), ...Array.from({ length: 50 }, (_, i) => `k${100 + i}`)]
  t.deepEqual(tab.keys(), want)
  t.deepEqual(Object.keys(tab.toJS()), want)
  t.is(tab.size, want.length)
  // Integer-like keys are string keys here: the shared order is insertion order
  // (a plain JS object from toJS() lists them first, as JS always does).
  const ints = Shared(f.pool, {})
  ints.b = 1
  ints['10'] = 2
  ints['2'] = 3
  t.deepEqual(ints.keys(), ['b', '10', '2'])
  t.deepEqual(Object.keys(ints.toJS()), ['2', '10', 'b'])
  t.is(ints[10], 2)
  done(tab, ints)
  assertBaseline(t, f)
})

test('undefined is stored as null (in Tabs and Arrs, by Shared, set and push); a missing key or index reads as undefined', (t) => {
  const f = fresh(t, 'undef')
  const tab = Shared(f.pool, { u: undefined, a: [undefined, 1] })
  t.deepEqual(tab.toJS(), { u: null, a: [null, 1] })
  t.true('u' in tab)
  t.is(tab.u, null)
  tab.x = undefined
  t.is(tab.x, null)
  t.true(tab.has('x'))
  t.is(tab.missing, undefined)
  t.false('missing' in tab)
  const a = tab.a as SharedArr
  a.push(undefined)
  a[0] = undefined
  t.deepEqual(a.toJS(), [null, 1, null])
  t.is(a[5], undefined)
  t.is(a.at(5), undefined)
  done(a, tab)
  assertBaseline(t, f)
})

// 2 Property -----------------------------------------------------------------

/** undefined becomes null everywhere, as the store does. */
function normalize(v: unknown): unknown {
  if (v === undefined) return null
  if (Array.isArray(v)) return v.map(normalize)
  if (typeof v === 'object' && v !== null && !ArrayBuffer.isView(v)) {
    return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, normalize(x)]))
  }
  return v
}

const typedArb = fc.oneof(
  fc.int8Array({ maxLength: 8 }),
  fc.uint8Array({ maxLength: 8 }),
  fc.int16Array({ maxLength: 8 }),
  fc.uint16Array({ maxLength: 8 }),
  fc.int32Array({ maxLength: 8 }),
  fc.uint32Array({ maxLength: 8 }),
  fc.float32Array({ maxLength: 8 }),
  fc.float64Array({ maxLength: 8 }),
  fc.bigInt64Array({ maxLength: 8 }),
  fc.bigUint64Array({ maxLength: 8 }),
)

const leafArb = fc.oneof(
  fc.constant(null),
  fc.constant(undefined),
  fc.boolean(),
  fc.integer(),
  fc.maxSafeInteger(),
  fc.double(),
  fc.bigInt({ min: -(2n ** 300n), max: 2n ** 300n }),
  fc.string({ unit: 'grapheme', maxLength: 24 }),
  fc.uint8Array({ maxLength: 12 }).map((a) => Buffer.from(a)),
  typedArb,
)

// '__proto__' has its own test below.
const keyArb = fc.string({ unit: 'grapheme', maxLength: 10 }).filter((k) => k !== '__proto__')

const { value: valueArb } = fc.letrec<{ value: unknown; arr: unknown[]; obj: Record<string, unknown> }>((tie) => ({
  value: fc.oneof({ depthSize: 'small', withCrossShrink: true }, leafArb, tie('arr'), tie('obj')),
  arr: fc.array(tie('value'), { maxLength: 6 }),
  obj: fc.dictionary(keyArb, tie('value'), { maxKeys: 6, noNullPrototype: true }),
}))

/** The JS face of a read: handles become toJS() copies (and are released). */
function plain(v: unknown): unknown {
  if (isHandle(v)) {
    const js = v.toJS()
    v.release()
    return js
  }
  return v
}

test('property: random JSON-like values with bigints, typed arrays and Buffers round-trip through Shared().toJS() and Tab set/get, and release restores the pool exactly', (t) => {
  const f = fresh(t, 'prop', 8 * MiB)
  fc.assert(
    fc.property(valueArb, (v) => {
      const expected = normalize(v)
      // Primitives (undefined included) pass through Shared() as they are.
      const whole = plain(Shared(f.pool, v as object))
      if (!isDeepStrictEqual(whole, v === undefined ? undefined : expected)) return false
      const holder = Shared(f.pool, { before: 'kept' })
      holder.set('v', v)
      holder.after = 1
      const back = plain(holder.get('v'))
      const js = holder.toJS()
      const ok = isDeepStrictEqual(back, expected) && isDeepStrictEqual(js, { before: 'kept', v: expected, after: 1 })
      holder.release()
      return ok && isDeepStrictEqual(f.pool.stats(), f.baseline)
    }),
    { numRuns: 200 },
  )
  assertBaseline(t, f)
})

// The copy form hands a batch to JS shape coded (crates/shmtools-core/src/value/shaped.rs):
// the first table of each key list carries its keys, later ones only name it.
const keyListArb = fc.constantFrom(
  ['seq', 'payload'],
  ['payload', 'seq'],
  ['seq'],
  ['seq', 'payload', 'rows'],
  ['seq', 'inner'],
  ['0', '1', 'x'],
  ['ключ', 'seq'],
  ['__proto__', 'seq'],
  ['seq', 'seq2', 'a', 'b', 'c', 'd', 'e', 'f', 'g', 'h', 'i', 'j', 'k', 'l', 'm', 'n'],
  Array.from({ length: 17 }, (_, i) => `k${i}`),
)
const smallArb = fc.oneof(fc.integer(), fc.maxSafeInteger(), fc.double(), fc.string({ maxLength: 40 }), fc.constant(null), valueArb)
const messageArb = fc
  .tuple(keyListArb, fc.array(smallArb, { minLength: 17, maxLength: 17 }), fc.array(fc.tuple(fc.integer(), fc.string({ maxLength: 6 })), { maxLength: 3 }))
  .map(([keys, vals, rows]) => {
    const o: Record<string, unknown> = {}
    // 'inner' nests tables of the same key list ({seq, inner}) inside each other.
    const inner = rows.reduce<unknown>((acc, [i]) => ({ seq: i, inner: acc }), null)
    const valueOf = (k: string, i: number) => (k === 'rows' ? rows.map(([i, s]) => ({ i, s })) : k === 'inner' ? inner : vals[i])
    keys.forEach((k, i) => Object.defineProperty(o, k, { value: valueOf(k, i), enumerable: true, writable: true, configurable: true }))
    return o
  })

test('property: batches of tables that repeat, reorder and nest key lists come back exactly through dequeueMany({ copy: true }) and toJS(), and every block is freed', (t) => {
  const f = fresh(t, 'prop-shapes', 8 * MiB)
  const q = new ServerSide(f.region, 'p', 256).start().pipe()
  const withPipe = f.pool.stats()
  fc.assert(
    fc.property(fc.array(messageArb, { minLength: 1, maxLength: 40 }), (batch) => {
      if (q.enqueueMany(batch) !== batch.length) return false
      const got = q.dequeueMany(256, { copy: true })
      const ok = isDeepStrictEqual(got, batch.map(normalize))
      // '__proto__' is an own data property, never the prototype.
      const protoOk = got.every((g) => Object.getPrototypeOf(g) === Object.prototype)
      // toJS() of one shared list of them is shape coded the same way.
      const list = Shared(f.pool, batch)
      const copy = list.toJS()
      list.release()
      const listOk = isDeepStrictEqual(copy, batch.map(normalize)) && copy.every((g) => Object.getPrototypeOf(g) === Object.prototype)
      return ok && protoOk && listOk && q.length === 0 && isDeepStrictEqual(f.pool.stats(), withPipe)
    }),
    { numRuns: 150 },
  )
  t.is(q.length, 0)
})

// 3 Proxy semantics ---------------------------------------------------------

test('SharedTab: get, set, delete, in, Object.keys, keys/values/entries, for..of, size, method-name keys, JSON', (t) => {
  const f = fresh(t, 'tab')
  const tab = Shared(f.pool, { a: 1, b: 'two' })
  t.is(tab.a, 1)
  t.is(tab.b, 'two')
  tab.c = 3n
  t.is(tab.c, 3n)
  t.is(tab.set('d', true), tab, 'set() chains')
  t.is(tab.get('d'), true)
  t.true('a' in tab)
  t.true(tab.has('d'))
  t.false('zz' in tab)
  t.is(tab.size, 4)
  t.deepEqual(Object.keys(tab), ['a', 'b', 'c', 'd'])
  t.deepEqual(tab.keys(), ['a', 'b', 'c', 'd'])
  t.deepEqual(tab.values(), [1, 'two', 3n, true])
  t.deepEqual(tab.entries(), [['a', 1], ['b', 'two'], ['c', 3n], ['d', true]])
  t.deepEqual([...tab], tab.entries())
  t.deepEqual(Object.entries(tab), tab.entries())
  t.true(delete tab.a)
  t.false('a' in tab)
  t.is(tab.a, undefined)
  t.true(tab.delete('b'))
  t.false(tab.delete('b'), 'deleting a missing key says false')
  t.is(tab.size, 2)
  // Keys named like methods are reached with get/set; the method stays a method.
  tab.set('get', 'g').set('size', 's').set('toJS', 'j')
  t.is(tab.get('get'), 'g')
  t.is(tab.get('size'), 's')
  t.is(typeof tab.toJS, 'function')
  t.is(tab.size, 5)
  t.true(tab.has('toJS'))
  t.deepEqual(tab.toJS(), { c: 3n, d: true, get: 'g', size: 's', toJS: 'j' })
  tab.delete('c')
  t.is(JSON.stringify(tab), '{"d":true,"get":"g","size":"s","toJS":"j"}')
  // Values read from a container: containers give handles, released on their own.
  tab.inner = { x: [1, 2] }
  const inner = tab.inner as SharedTab
  t.true(isSHM(inner, f.pool))
  const xs = inner.x as SharedArr
  t.deepEqual(xs.toJS(), [1, 2])
  const pairs = [...tab]
  const innerAgain = pairs.find(([k]) => k === 'inner')![1] as SharedTab
  t.is(innerAgain.offset, inner.offset, 'iteration gives handles to the same object')
  done(xs, inner, innerAgain, tab)
  assertBaseline(t, f)
})

test('SharedArr: index get/set, length, push/pop, at, iteration; setting index == length appends, beyond is ERR_SHM_INVALID_ARG', (t) => {
  const f = fresh(t, 'arr')
  const arr = Shared(f.pool, [1, 'two'])
  t.is(arr[0], 1)
  t.is(arr.get(1), 'two')
  t.is(arr.length, 2)
  t.is(arr.push(3, { four: 4 }), 4)
  t.is(arr.length, 4)
  arr[4] = 'appended at length'
  t.is(arr.length, 5)
  arr.set(5, 'set() at length')
  t.is(arr.length, 6)
  t.throws(() => (arr[7] = 'hole'), invalidArg)
  t.throws(() => arr.set(100, 'hole'), invalidArg)
  t.throws(() => arr.set(-1, 'negative'), invalidArg)
  t.throws(() => arr.set(1.5, 'fraction'), invalidArg)
  t.throws(() => ((arr as unknown as Record<string, unknown>)['-1'] = 'x'), invalidArg)
  t.throws(() => ((arr as unknown as { length: number }).length = 0), invalidArg)
  t.throws(() => delete arr[0], invalidArg)
  t.is(arr.length, 6)
  arr[0] = 'replaced'
  t.is(arr[0], 'replaced')
  t.is(arr.at(-1), 'set() at length')
  t.is(arr.at(0), 'replaced')
  t.is(arr.at(6), undefined)
  t.is(arr.at(-7), undefined)
  t.is(arr[99], undefined)
  t.true(0 in arr)
  t.false(6 in arr)
  t.is(arr.pop(), 'set() at length')
  t.is(arr.length, 5)
  const collected: unknown[] = []
  for (const v of arr) collected.push(plain(v))
  t.deepEqual(collected, ['replaced', 'two', 3, { four: 4 }, 'appended at length'])
  const viaEntries = [...arr.entries()].map(([i, v]) => [i, plain(v)])
  t.deepEqual(viaEntries, collected.map((v, i) => [i, v]))
  t.deepEqual(arr.toJS(), collected)
  // Popping a container hands its reference over as a handle.
  arr.pop()
  const four = arr.pop() as SharedTab
  t.is(four.refCount, 1)
  t.deepEqual(four.toJS(), { four: 4 })
  four.release()
  while (arr.length) arr.pop()
  t.is(arr.pop(), undefined)
  arr.release()
  const scalars = Shared(f.pool, ['a', 'b', 'c'])
  t.deepEqual(Object.keys(scalars), ['0', '1', '2'])
  t.deepEqual(Object.entries(scalars), [['0', 'a'], ['1', 'b'], ['2', 'c']])
  scalars.release()
  assertBaseline(t, f)
})

test('assigning a plain JS value copies it: later changes to the JS object do not reach the shared one (and vice versa)', (t) => {
  const f = fresh(t, 'copy')
  const src = { list: [1, 2], inner: { a: 'b' }, typed: new Int32Array([1, 2]) }
  const tab = Shared(f.pool, { src })
  tab.again = src
  const arr = Shared(f.pool, [src])
  src.list.push(3)
  src.inner.a = 'changed'
  src.typed[0] = 99
  ;(src as Record<string, unknown>).added = true
  const want = { list: [1, 2], inner: { a: 'b' }, typed: new Int32Array([1, 2]) }
  t.deepEqual(tab.toJS(), { src: want, again: want })
  t.deepEqual(arr.toJS(), [want])
  // A toJS() copy is detached from the region too.
  const copy = tab.toJS() as { src: { list: number[] } }
  copy.src.list.push(42)
  t.deepEqual(tab.toJS(), { src: want, again: want })
  // Two stores of one JS object are two independent shared objects.
  const a = tab.src as SharedTab
  const b = tab.again as SharedTab
  t.not(a.offset, b.offset)
  done(a, b, tab, arr)
  assertBaseline(t, f)
})

test('assigning a shared handle stores a reference: no copy, refCount goes up, changes are seen through every path', (t) => {
  const f = fresh(t, 'ref')
  const child = Shared(f.pool, { n: 1 })
  t.is(child.refCount, 1)
  const tab = Shared(f.pool, {})
  const arr = Shared(f.pool, [])
  tab.child = child
  t.is(child.refCount, 2)
  arr.push(child)
  t.is(child.refCount, 3)
  const viaTab = tab.child as SharedTab
  t.is(viaTab.offset, child.offset, 'the same object, not a copy')
  t.is(child.refCount, 4, 'a handle read out of a container holds its own reference')
  viaTab.release()
  t.is(child.refCount, 3)
  // Changes through one path are seen through the others.
  child.n = 2
  const fromArr = arr[0] as SharedTab
  t.is(fromArr.n, 2)
  fromArr.m = 'via the list'
  t.is(child.m, 'via the list')
  const fromTab = tab.child as SharedTab
  t.deepEqual(fromTab.toJS(), { n: 2, m: 'via the list' })
  done(fromArr, fromTab)
  // Storing a reference allocates nothing for the value itself.
  const before = f.pool.stats()
  arr[0] = child
  t.deepEqual(f.pool.stats(), before, 'replacing a reference with itself allocates nothing')
  // Shared() of a handle of the same region is another handle to the same value.
  const dup = Shared(f.pool, child)
  t.is(dup.offset, child.offset)
  t.is(child.refCount, 4)
  dup.release()
  // The value lives as long as anything refers to it.
  child.release()
  const still = tab.child as SharedTab
  t.is(still.refCount, 3)
  t.is(still.n, 2)
  still.release()
  t.true(delete tab.child)
  const last = arr.pop() as SharedTab
  t.is(last.refCount, 1)
  done(last, tab, arr)
  assertBaseline(t, f)
})

test('a container cannot contain itself: refused with a code, nothing changes', (t) => {
  const f = fresh(t, 'self')
  const tab = Shared(f.pool, { a: 1 })
  const arr = Shared(f.pool, [1])
  const before = f.pool.stats()
  t.throws(() => (tab.self = tab), invalidArg)
  t.throws(() => arr.push(arr), invalidArg)
  t.throws(() => (arr[0] = arr), invalidArg)
  t.deepEqual(f.pool.stats(), before)
  t.is(tab.refCount, 1)
  t.is(arr.refCount, 1)
  t.deepEqual(tab.toJS(), { a: 1 })
  t.deepEqual(arr.toJS(), [1])
  done(tab, arr)
  assertBaseline(t, f)
})

test('refCount: 1 for a new value, +1 per valueAt()/nested read/stored reference, back down on release', (t) => {
  const f = fresh(t, 'refcount')
  const tab = Shared(f.pool, { inner: { x: 1 } })
  t.is(tab.refCount, 1)
  const second = f.region.valueAt(tab.offset) as SharedTab
  t.is(second.offset, tab.offset)
  t.is(tab.refCount, 2)
  t.is(second.refCount, 2)
  const inner = tab.inner as SharedTab
  t.is(inner.refCount, 2, 'the Tab slot and this handle')
  const inner2 = second.get('inner') as SharedTab
  t.is(inner.refCount, 3)
  inner2.release()
  inner2.release() // idempotent
  t.is(inner.refCount, 2)
  second[Symbol.dispose]()
  t.true(second.released)
  t.is(tab.refCount, 1)
  inner.release()
  t.false(tab.released)
  tab.release()
  t.true(tab.released)
  assertBaseline(t, f)
})

test('isSHM: true for live handles of that pool only; false for plain values, released handles and handles of another region', (t) => {
  const f = fresh(t, 'isshm')
  const g = fresh(t, 'isshm-other', 256 * KiB)
  const tab = Shared(f.pool, { list: [1] })
  const arr = Shared(f.pool, [1])
  const typed = Shared(f.pool, new Uint8Array([1]))
  const list = tab.list as SharedArr
  for (const h of [tab, arr, typed, list]) t.true(isSHM(h, f.pool))
  for (const v of [{}, [], new Uint8Array(1), Buffer.from('x'), null, undefined, 1, 'str', 1n, tab.toJS(), typed.view()]) {
    t.false(isSHM(v, f.pool), String(v))
  }
  // Another region: its handles belong to it, not to f.
  const foreign = Shared(g.pool, { other: true })
  t.false(isSHM(foreign, f.pool))
  t.true(isSHM(foreign, g.pool))
  t.false(isSHM(tab, g.pool))
  // A second mapping of the same region (attachSync in this process) is the same region.
  const again = attachSync(f.name, { timeoutMs: 10_000 })
  t.teardown(() => again.close())
  t.true(isSHM(tab, again.pool()))
  const viaAgain = again.valueAt(tab.offset) as SharedTab
  t.true(isSHM(viaAgain, f.pool))
  viaAgain.release()
  again.close() // (its holder record, and ledger, go with it)
  for (const h of [list, tab, arr, typed]) {
    h.release()
    t.false(isSHM(h, f.pool), 'released')
  }
  foreign.release()
  assertBaseline(t, f)
  assertBaseline(t, g)
})

test('Shared() of a handle through a second mapping of its region makes a handle of that mapping: both work, each releases its own reference', (t) => {
  const f = fresh(t, 'two-mappings')
  // Handles in both mappings first, so each mapping's handle table has
  // live entries at the same numbers.
  const mine = [Shared(f.pool, { n: 0 }), Shared(f.pool, { n: 1 })]
  const again = attachSync(f.name, { timeoutMs: 10_000 })
  t.teardown(() => again.close())
  const theirs = [Shared(again.pool(), { m: 0 }), Shared(again.pool(), { m: 1 })]
  const copy = Shared(again.pool(), mine[1]!) as SharedTab
  t.is(copy.n, 1, 'the copy reads the value it was made from')
  t.is(copy.offset, mine[1]!.offset)
  t.is(mine[1]!.refCount, 2)
  copy.n = 5
  t.is(mine[1]!.n, 5, 'one value, two handles')
  copy.release()
  t.is(mine[1]!.refCount, 1, "the copy's release gave back its own reference")
  t.deepEqual(theirs.map((h) => h.m), [0, 1], "the second mapping's other handles are untouched")
  t.deepEqual(mine.map((h) => h.n), [0, 5], "and the first mapping's")
  for (const h of [...mine, ...theirs]) h.release()
  again.close()
  assertBaseline(t, f)
})

test('every use of a released handle is ERR_SHM_CLOSED; release() is idempotent; a released handle cannot be stored', (t) => {
  const f = fresh(t, 'released')
  const tab = Shared(f.pool, { a: 1 })
  const arr = Shared(f.pool, [1])
  const typed = Shared(f.pool, new Float64Array([1]))
  const holder = Shared(f.pool, { keep: true })
  for (const h of [tab, arr, typed]) h.release()
  const uses: [string, () => unknown][] = [
    ['tab.a', () => tab.a],
    ['tab.a = 1', () => (tab.a = 2)],
    ['delete tab.a', () => delete tab.a],
    ["'a' in tab", () => 'a' in tab],
    ['Object.keys(tab)', () => Object.keys(tab)],
    ['tab.keys()', () => tab.keys()],
    ['tab.entries()', () => tab.entries()],
    ['[...tab]', () => [...tab]],
    ['tab.size', () => tab.size],
    ['tab.toJS()', () => tab.toJS()],
    ['JSON.stringify(tab)', () => JSON.stringify(tab)],
    ['tab.refCount', () => tab.refCount],
    ['tab.offset', () => tab.offset],
    ['arr[0]', () => arr[0]],
    ['arr[0] = 1', () => (arr[0] = 1)],
    ['arr.length', () => arr.length],
    ['arr.push(1)', () => arr.push(1)],
    ['arr.pop()', () => arr.pop()],
    ['arr.at(0)', () => arr.at(0)],
    ['[...arr]', () => [...arr]],
    ['arr.toJS()', () => arr.toJS()],
    ['typed.view()', () => typed.view()],
    ['typed.length', () => typed.length],
    ['typed.toJS()', () => typed.toJS()],
    ['typed.elementType', () => typed.elementType],
    ['holder.x = tab', () => (holder.x = tab)],
    ['holder.x = [typed]', () => (holder.x = [typed])],
    ['Shared(pool, arr)', () => Shared(f.pool, arr)],
  ]
  for (const [what, use] of uses) t.throws(use, closed, what)
  for (const h of [tab, arr, typed]) {
    t.notThrows(() => h.release())
    t.notThrows(() => h[Symbol.dispose]())
    t.true(h.released)
  }
  t.deepEqual(holder.toJS(), { keep: true })
  holder.release()
  assertBaseline(t, f)
})

test('valueAt() of an offset that holds no live value is an error with a code, and takes nothing', (t) => {
  const f = fresh(t, 'valueat')
  const gone = Shared(f.pool, { k: 'v' })
  const goneAt = gone.offset
  gone.release()
  const block = f.pool.allocate(64)
  f.pool.write(block, Buffer.alloc(64))
  const live = Shared(f.pool, { s: 'a string inside' })
  const before = f.pool.stats()
  for (const [what, off] of [
    ['0', 0],
    ['misaligned', live.offset + 8],
    ['past the end', 1e12],
    ['a released value', goneAt],
    ['a raw pool block', block],
  ] as const) {
    const err = t.throws(() => f.region.valueAt(off), undefined, what)
    t.true(anyShmCode(err), `${what}: ${String(err)}`)
  }
  t.throws(() => f.region.valueAt(-1), invalidArg)
  t.throws(() => f.region.valueAt(1.5), invalidArg)
  t.deepEqual(f.pool.stats(), before)
  t.is(live.refCount, 1)
  live.release()
  f.pool.free(block)
  assertBaseline(t, f)
})

test('handles of a mapping that was closed: every use is ERR_SHM_CLOSED, release() still gives the reference back', (t) => {
  const f = fresh(t, 'closedmap')
  const tab = Shared(f.pool, { a: 1, list: [1] })
  const other = attachSync(f.name, { timeoutMs: 10_000 })
  const viaOther = other.valueAt(tab.offset) as SharedTab
  const listViaOther = viaOther.list as SharedArr
  t.is(tab.refCount, 2)
  other.close()
  t.throws(() => viaOther.a, closed)
  t.throws(() => (viaOther.b = 2), closed)
  t.throws(() => viaOther.toJS(), closed)
  t.throws(() => listViaOther.push(2), closed)
  t.throws(() => other.valueAt(tab.offset), closed)
  t.is(tab.refCount, 2, 'the closed mapping still holds its reference')
  viaOther.release()
  listViaOther.release()
  t.is(tab.refCount, 1)
  t.deepEqual(tab.toJS(), { a: 1, list: [1] })
  tab.release()
  assertBaseline(t, f)
})

// 4 Zero-copy typed arrays -----------------------------------------------------

test('view() is zero-copy: writes through one handle are seen through another, a nested read and toJS()', (t) => {
  const f = fresh(t, 'view')
  const h = Shared(f.pool, new Float64Array(4))
  const h2 = f.region.valueAt(h.offset) as SharedTyped<Float64Array>
  const v1 = h.view()
  const v2 = h2.view()
  t.is(h.view(), v1, 'view() is cached')
  v1[0] = 1.5
  t.is(v2[0], 1.5)
  v2[3] = -7
  t.is(v1[3], -7)
  t.deepEqual(h.toJS(), new Float64Array([1.5, 0, 0, -7]))
  const tab = Shared(f.pool, { t: h })
  const nested = tab.t as SharedTyped<Float64Array>
  nested.view()[1] = 2
  t.is(v1[1], 2)
  t.deepEqual((tab.toJS() as { t: Float64Array }).t, new Float64Array([1.5, 2, 0, -7]))
  done(nested, tab, h2, h)
  assertBaseline(t, f)
})

test('after release() the old view is detached (length 0): it never reads freed memory; other handles keep their views', (t) => {
  const f = fresh(t, 'detach')
  const h = Shared(f.pool, new Int32Array([1, 2, 3, 4]))
  const h2 = f.region.valueAt(h.offset) as SharedTyped<Int32Array>
  const v1 = h.view()
  const v2 = h2.view()
  h.release()
  t.is(v1.length, 0)
  t.is(v1.byteLength, 0)
  t.is(v1.buffer.byteLength, 0)
  t.is(v1[0] as number | undefined, undefined)
  t.throws(() => h.view(), closed)
  // The value is still alive for h2.
  t.deepEqual(Array.from(v2), [1, 2, 3, 4])
  v2[0] = 10
  t.is(h2.view()[0], 10)
  h2.release()
  t.is(v2.length, 0)
  assertBaseline(t, f)
  // A new value that may reuse the freed block is not reachable through the old views.
  const other = Shared(f.pool, new Int32Array([9, 9, 9, 9]))
  v1[0] = 666
  v2[1] = 666
  t.deepEqual(Array.from(other.view()), [9, 9, 9, 9])
  other.release()
  assertBaseline(t, f)
})

test('view() across processes: the child sees what the parent wrote and the parent sees what the child wrote', async (t) => {
  const f = fresh(t, 'xview')
  const h = Shared(f.pool, new Float64Array(4))
  const view = h.view()
  view[0] = 4.25
  const r = await runValuesChild(['typed', f.name, String(h.offset)])
  t.is(r.code, 0, r.stderr)
  const got = lastJson<{ first: number; lengthAfterRelease: number }>(r)
  t.is(got.first, 4.25)
  t.is(got.lengthAfterRelease, 0, "the child's view is detached by its release()")
  t.deepEqual(Array.from(view), [4.25, 11, 22, 33])
  t.is(h.refCount, 1)
  h.release()
  assertBaseline(t, f)
})

// 5 Cross-process ------------------------------------------------------------

test('a child process takes the value by offset, sets, deletes and pushes to a nested list; the parent sees every change', async (t) => {
  const f = fresh(t, 'xmutate')
  const tab = Shared(f.pool, { keep: 1, drop: 'bye', list: [1] })
  const r = await runValuesChild(['mutate', f.name, String(tab.offset)])
  t.is(r.code, 0, r.stderr)
  const got = lastJson<{ before: unknown; refCount: number }>(r)
  t.deepEqual(got.before, { keep: 1, drop: 'bye', list: [1] })
  t.is(got.refCount, 2, "the parent's handle and the child's")
  t.false('drop' in tab)
  t.deepEqual(tab.keys(), ['keep', 'list', 'added', 'text'])
  const { added, ...rest } = tab.toJS() as { added: { by: string; pid: number } }
  t.deepEqual(rest, { keep: 1, list: [1, 2, { three: 3 }], text: 'héllo from the child 🎉' })
  t.is(added.by, 'child')
  t.true(Number.isInteger(added.pid) && added.pid !== process.pid)
  t.is(tab.refCount, 1, 'the child released its handle')
  tab.release()
  assertBaseline(t, f)
})

test('4 processes hammer one Tab (own keys, a shared key, a shared list) while the parent lets go of its first handle; all released, the pool is back to baseline', async (t) => {
  t.timeout(90_000)
  const N = 4
  const ITERS = 300
  const f = fresh(t, 'hammer')
  const first = Shared(f.pool, { shared: 'none', log: [] })
  const offset = first.offset
  const keeper = f.region.valueAt(offset) as SharedTab
  const seed = randomInt(1, 2 ** 31)
  t.log(`seed ${seed}`)
  const kids = Array.from({ length: N }, (_, id) => startValuesChild(['hammer', f.name, String(offset), String(id), String(ITERS), String(seed + id)], { killAfterMs: 80_000 }))
  t.teardown(() => kids.forEach((k) => k.kill()))
  await Promise.all(kids.map((k) => k.waitForLine(/hammer: ready/)))
  t.is(keeper.refCount, 2 + N)
  // The parent's first handle goes while the children work; the value lives on.
  first.release()
  keeper.go = true
  const results = await Promise.all(kids.map((k) => k.done))
  let pushes = 0
  for (const r of results) {
    t.is(r.code, 0, r.stderr)
    const got = lastJson<{ id: number; mismatches: number; problems: string[]; pushes: number; sharedSeen: number }>(r)
    t.is(got.mismatches, 0, `child ${got.id}: ${got.problems.join('; ')}`)
    t.is(got.sharedSeen, ITERS)
    pushes += got.pushes
  }
  t.is(keeper.refCount, 1, 'every child released its handle')
  const js = keeper.toJS() as Record<string, unknown>
  t.regex(js.shared as string, /^[0-3]:\d+$/)
  t.is((js.log as number[]).length, pushes, 'no push was lost')
  for (let id = 0; id < N; id++) {
    t.deepEqual(js[`own${id}`], { i: ITERS - 1, id, s: 'x'.repeat((ITERS - 1) % 13) })
    t.false(`tmp${id}` in js)
  }
  t.deepEqual(Object.keys(js).sort(), ['go', 'log', 'own0', 'own1', 'own2', 'own3', 'shared'])
  keeper.release()
  assertBaseline(t, f)
})

// 6 GC safety net --------------------------------------------------------------

test('GC safety net: 1000 values and their nested handles dropped without release() are all given back once collected', async (t) => {
  const name = uniqueName('gcnet')
  cleanup(t, name)
  const r = await runValuesChild(['gc-net', name, '1000'], { nodeFlags: ['--expose-gc'] })
  t.is(r.code, 0, r.stderr)
  const got = lastJson<{ peak: PoolStats; baseline: PoolStats; after: PoolStats; rounds: number }>(r)
  t.true(got.peak.bytesUsed > got.baseline.bytesUsed, 'values were really allocated')
  t.true(got.rounds < 50, `gave back within the bound (took ${got.rounds} rounds)`)
  // Every byte is back. (Holding 1000 values grew this process's ledger of
  // references and it shrank back when they went, so the free space may be
  // laid out differently: compare what is used, not the largest free block.)
  const used = (s: PoolStats) => ({ bytesUsed: s.bytesUsed, blocksUsed: s.blocksUsed })
  t.deepEqual(used(got.after), used(got.baseline))
})

test("the binding's value functions refuse a number that names no live handle (released, stale, forged, another region's) with a code, never a crash", (t) => {
  const f = fresh(t, 'handle-ids')
  const other = fresh(t, 'handle-ids-other')
  type Native = { fast(): object; raw(): object; valueAt(offset: number): bigint }
  const nat = (f.region as unknown as { native(): Native }).native()
  const r = nat.fast() as never
  // The per-message value calls (read a field, release) are hand-written
  // Node-API functions taking the region's raw external.
  const rr = nat.raw()
  const fast = binding.fastCalls() as {
    tabGet(r: unknown, id: unknown, key: unknown): unknown
    tabSet(r: unknown, id: unknown, key: unknown, wire: unknown, len: unknown): void
    tabHas(r: unknown, id: unknown, key: unknown): boolean
    tabLen(r: unknown, id: unknown): number
    arrGet(r: unknown, id: unknown, index: unknown): unknown
    arrLen(r: unknown, id: unknown): number
    arrPush(r: unknown, id: unknown, wire: unknown, len: unknown): number
    arrPop(r: unknown, id: unknown): unknown
    valueRelease(r: unknown, id: unknown): void
  }
  const tab = Shared(f.pool, { a: 1 })
  const id = (raw: bigint) => Math.floor(Number(raw) / 4)
  // A second handle to the same table, straight from the binding.
  const h = id(nat.valueAt(tab.offset))
  t.is(fast.tabGet(rr, h, 'a'), 1)
  t.is(binding.valueRefCount(r, h), 2)
  fast.valueRelease(rr, h)
  fast.valueRelease(rr, h) // (idempotent)
  t.is(tab.refCount, 1, 'released once, whatever the number of calls')
  const code = (e: unknown) => /^(ERR_SHM_[A-Z_]+):/.exec((e as Error).message)?.[1]
  // Released: CLOSED, also once its entry is taken by a new handle.
  t.is(code(t.throws(() => fast.tabGet(rr, h, 'a'))), ErrorCodes.CLOSED)
  const again = id(nat.valueAt(tab.offset))
  t.is(again % 2 ** 24, h % 2 ** 24, 'the entry is reused')
  t.not(again, h, 'under a new number')
  t.is(code(t.throws(() => fast.tabGet(rr, h, 'a'))), ErrorCodes.CLOSED)
  // The right entry under a generation it does not have now: CLOSED for a
  // use; a release of it gives nothing back.
  const stale = (again % 2 ** 24) + 2 ** 24 * 7
  t.is(code(t.throws(() => fast.tabGet(rr, stale, 'a'))), ErrorCodes.CLOSED)
  t.notThrows(() => fast.valueRelease(rr, stale))
  t.is(tab.refCount, 2, 'a stale number releases nothing')
  // Not handle numbers at all: INVALID_ARG.
  for (const bad of [-1, 0.5, Number.NaN, Infinity, 2 ** 60, 12345678]) {
    t.is(code(t.throws(() => fast.tabGet(rr, bad, 'a'))), ErrorCodes.INVALID_ARG, String(bad))
    t.is(code(t.throws(() => fast.valueRelease(rr, bad))), ErrorCodes.INVALID_ARG, String(bad))
  }
  // The wrong kind of value for the call: INVALID_ARG.
  t.is(code(t.throws(() => fast.arrLen(rr, again))), ErrorCodes.INVALID_ARG)
  t.is(code(t.throws(() => fast.arrPush(rr, again, Buffer.from([1]), 1))), ErrorCodes.INVALID_ARG)
  t.is(code(t.throws(() => fast.arrPop(rr, again))), ErrorCodes.INVALID_ARG)
  t.is(code(t.throws(() => binding.typedView(r, again))), ErrorCodes.INVALID_ARG)
  // A number means what the table it is used with says: here another
  // region's table, which holds no handle yet.
  const r2 = (other.region as unknown as { native(): Native }).native().raw()
  t.is(code(t.throws(() => fast.tabGet(r2, again, 'a'))), ErrorCodes.INVALID_ARG)
  // Not a region at all (a pipe's external included).
  new ServerSide(other.region, 'p', 4).start()
  const pipe = (other.region as unknown as { native(): { findPipe(n: string): { fast(): object; raw(): object } } }).native().findPipe('p')
  // (and not the region's napi-rs external, nor a pipe's raw one)
  for (const x of [{}, 1, null, undefined, tab, pipe.fast(), pipe.raw(), r]) {
    t.is(code(t.throws(() => fast.tabGet(x, again, 'a'))), ErrorCodes.INVALID_ARG)
    t.is(code(t.throws(() => fast.arrGet(x, again, 0))), ErrorCodes.INVALID_ARG)
    t.is(code(t.throws(() => fast.valueRelease(x, again))), ErrorCodes.INVALID_ARG)
  }
  // Bad keys, indexes and encodings: INVALID_ARG, and the table unchanged.
  const int7 = Buffer.from([3, 7, 0, 0, 0, 0, 0, 0, 0])
  t.is(code(t.throws(() => fast.tabSet(rr, again, 'a', int7, int7.length + 1))), ErrorCodes.INVALID_ARG)
  t.is(code(t.throws(() => fast.tabSet(rr, again, 'a', int7, 5))), ErrorCodes.INVALID_ARG)
  t.is(code(t.throws(() => fast.tabSet(rr, again, 'a', 'not bytes', 3))), ErrorCodes.INVALID_ARG)
  t.is(code(t.throws(() => fast.tabSet(rr, again, 1, int7, int7.length))), ErrorCodes.INVALID_ARG)
  t.is(code(t.throws(() => fast.tabHas(rr, again, null))), ErrorCodes.INVALID_ARG)
  t.is(fast.tabGet(rr, again, 'a'), 1)
  fast.tabSet(rr, again, 'a', int7, int7.length)
  t.is(fast.tabGet(rr, again, 'a'), 7)
  t.true(fast.tabHas(rr, again, 'a'))
  t.is(fast.tabLen(rr, again), 1)
  t.is(code(t.throws(() => fast.tabGet(rr, again, 7))), ErrorCodes.INVALID_ARG)
  t.is(code(t.throws(() => fast.tabGet(rr, again, undefined))), ErrorCodes.INVALID_ARG)
  t.is(code(t.throws(() => fast.arrGet(rr, again, -1))), ErrorCodes.INVALID_ARG)
  t.is(code(t.throws(() => fast.arrGet(rr, again, 'x'))), ErrorCodes.INVALID_ARG)
  // A table is not a list.
  t.is(code(t.throws(() => fast.arrGet(rr, again, 0))), ErrorCodes.INVALID_ARG)
  t.is(fast.tabGet(rr, again, 'no such key'), null)
  fast.valueRelease(rr, again)
  tab.release()
  assertBaseline(t, f)
})

// 7 Bad input --------------------------------------------------------------------

class Point {
  x = 1
}

function badValues(): [string, unknown][] {
  const cyclic: Record<string, unknown> = { a: 1 }
  cyclic.self = cyclic
  const cyclicArr: unknown[] = [1]
  cyclicArr.push({ back: cyclicArr })
  const deepCycle: Record<string, unknown> = { l1: { l2: { l3: {} } } }
  ;((deepCycle.l1 as Record<string, Record<string, Record<string, unknown>>>).l2.l3).top = deepCycle
  return [
    ['function', () => 1],
    ['symbol', Symbol('s')],
    ['cyclic object', cyclic],
    ['cyclic array', cyclicArr],
    ['cycle 4 levels down', deepCycle],
    ['getter that throws', { get boom() {
      throw new Error('boom')
    } }],
    ['class instance', new Point()],
    ['Date', new Date(0)],
    ['Map', new Map([[1, 2]])],
    ['Set', new Set([1])],
    ['RegExp', /x/g],
    ['Uint8ClampedArray', new Uint8ClampedArray([1])],
    ['DataView', new DataView(new ArrayBuffer(8))],
    ['ArrayBuffer', new ArrayBuffer(8)],
    ['SharedArrayBuffer', new SharedArrayBuffer(8)],
    ['boxed number', Object(1)],
    ['Promise', Promise.resolve(1)],
    ['Error', new Error('e')],
    ['lone high surrogate', 'abc\uD800'],
    ['lone low surrogate', '\uDC00xyz'],
    ['lone surrogate in a long string', 'x'.repeat(100) + '\uDFFF' + 'é'.repeat(10)],
    ['key with a lone surrogate', { ['k\uD83D']: 1 }],
  ]
}

test('values that cannot be stored are refused with ERR_SHM_UNSUPPORTED (a TypeError), at any depth and through every way in, and nothing stays allocated', (t) => {
  const f = fresh(t, 'bad')
  const tab = Shared(f.pool, { keep: 'me' })
  const arr = Shared(f.pool, ['kept'])
  const before = f.pool.stats()
  for (const [what, bad] of badValues()) {
    const ways: [string, () => unknown][] = [
      ['tab.k = v', () => (tab.k = bad)],
      ['tab.set', () => tab.set('k', bad)],
      ['arr.push', () => arr.push(bad)],
      ['arr[0] = v', () => (arr[0] = bad)],
      ['arr[1] = v (append)', () => (arr[1] = bad)],
      ['Shared({deep: [v]})', () => Shared(f.pool, { ok: 1, deep: [1, { v: bad }] })],
      ['Shared([.., v])', () => Shared(f.pool, ['fine', 'fine', bad])],
    ]
    if (typeof bad !== 'string') ways.push(['Shared(v)', () => Shared(f.pool, bad as object)])
    for (const [how, way] of ways) {
      const err = t.throws(way, unsupported, `${what} via ${how}`)
      t.true(err instanceof TypeError)
      t.true((err?.message ?? '').length > 10, `a message for ${what}`)
    }
  }
  t.deepEqual(f.pool.stats(), before)
  t.deepEqual(tab.toJS(), { keep: 'me' })
  t.deepEqual(arr.toJS(), ['kept'])
  done(tab, arr)
  assertBaseline(t, f)
})

test('a refusal says what was refused and where: the keys down to it, and a cycle told apart from deep nesting', (t) => {
  const f = fresh(t, 'where')
  const before = f.pool.stats()
  const cyclic: Record<string, unknown> = { a: [1, { b: 2 }] }
  ;((cyclic.a as unknown[])[1] as Record<string, unknown>).back = cyclic
  let deep: unknown = 1
  for (let i = 0; i < 300; i++) deep = { d: deep }
  // A cycle that begins below the top (the top object is met only once).
  const inner: Record<string, unknown> = { x: 1 }
  inner.me = inner
  const getter = { ok: 1, list: ['fine', { get boom() {
    throw new Error('kaput')
  } }] }
  const cases: [string, unknown, RegExp][] = [
    ['a function two levels down', { ok: 1, list: ['s', { fn: () => 1 }] }, /^a function cannot be shared at \["list"\]\["1"\]\["fn"\]$/],
    ['a class instance in an array', [1, 2, new Point()], /^Point cannot be shared: .* at \["2"\]$/],
    ['a symbol at the top', Symbol('s'), /^a symbol cannot be shared$/],
    ['a cycle', cyclic, /^a value that contains itself \(a cycle\) cannot be shared at \["a"\]\["1"\]\["back"\]/],
    ['a cycle below the top', { top: [inner] }, /^a value that contains itself \(a cycle\) cannot be shared at \["top"\]\["0"\]\["me"\]\["me"\]/],
    ['nesting past the limit', deep, /^values nest deeper than 256 levels at (\["d"\]){256}$/],
    ['a getter that throws', getter, /^reading this property threw \(kaput\) at \["list"\]\["1"\]\["boom"\]$/],
    ['a key with a lone surrogate', { outer: { ['k\uD83D']: 1 } }, /^a string with a lone surrogate cannot be stored as UTF-8 at \["outer"\]\["k\\ud83d"\]$/],
  ]
  for (const [what, bad, want] of cases) {
    const err = t.throws(() => Shared(f.pool, bad as object), unsupported, what)
    t.regex(err?.message ?? '', want, what)
  }
  // The getter's own error is kept as the cause.
  const err = t.throws(() => Shared(f.pool, getter), unsupported)
  t.is((err?.cause as Error | undefined)?.message, 'kaput')
  t.deepEqual(f.pool.stats(), before)
  assertBaseline(t, f)
})

test('a key with a lone surrogate is no key: storing one is refused, and reading, testing or deleting one never reaches the U+FFFD key', (t) => {
  const f = fresh(t, 'lone-keys')
  const tab = Shared(f.pool, { '\ufffd': 'replacement' })
  t.throws(() => {
    tab['\ud800'] = 'lone'
  }, unsupported)
  t.throws(() => tab.set('\udc00', 1), unsupported)
  t.is(tab['\ud800'], undefined)
  t.is(tab.get('\udfff'), undefined)
  t.false('\udc00' in tab)
  t.false(tab.has('\ud800'))
  t.false(tab.delete('\udfff'))
  t.deepEqual(tab.toJS(), { '\ufffd': 'replacement' }, 'the U+FFFD key is untouched')
  // A well-formed key with U+FFFD in it is an ordinary key.
  tab['a\ufffdb'] = 2
  t.is(tab['a\ufffdb'], 2)
  t.true(tab.delete('a\ufffdb'))
  // Through the binding too: a released handle is still an error first.
  tab.release()
  t.throws(() => tab['\ud800'], { code: ErrorCodes.CLOSED })
  assertBaseline(t, f)
})

test('a shared table or list cannot be made non-extensible, and only an index can be defined on a list', (t) => {
  const f = fresh(t, 'extensible')
  const tab = Shared(f.pool, { a: 1 })
  const arr = Shared(f.pool, [1, 2, 3])
  for (const x of [tab, arr] as object[]) {
    t.throws(() => Object.preventExtensions(x), { instanceOf: TypeError })
    t.throws(() => Object.freeze(x), { instanceOf: TypeError })
    t.throws(() => Object.seal(x), { instanceOf: TypeError })
    t.true(Object.isExtensible(x))
  }
  t.deepEqual(Object.keys(tab), ['a'], 'still listed after the refusals')
  t.deepEqual(Object.keys(arr), ['0', '1', '2'])
  Object.defineProperty(arr, '1', { value: 9 })
  t.deepEqual(arr.toJS(), [1, 9, 3])
  t.false(Reflect.defineProperty(arr, Symbol('s'), { value: 1 }))
  t.false(Reflect.defineProperty(arr, 'name', { value: 1 }))
  t.false(Reflect.defineProperty(arr, '0', { get: () => 1 }))
  t.deepEqual(Object.getOwnPropertySymbols(tab), [])
  t.deepEqual(Object.getOwnPropertySymbols(arr), [])
  t.deepEqual({ ...tab }, { a: 1 })
  tab.release()
  arr.release()
  assertBaseline(t, f)
})

test('symbol-keyed properties are skipped, as JSON.stringify and structuredClone skip them (documented decision)', (t) => {
  const f = fresh(t, 'symkey')
  const k = Symbol('k')
  const src = { a: 1, [k]: 'hidden', inner: { [Symbol.iterator]: 'also hidden', b: 2 } }
  const tab = Shared(f.pool, src)
  t.deepEqual(tab.keys(), ['a', 'inner'])
  t.deepEqual(tab.toJS(), { a: 1, inner: { b: 2 } })
  tab.also = { [k]: 1 }
  t.deepEqual(tab.toJS().also, {})
  // Symbols are never keys of a shared Tab.
  t.is((tab as unknown as Record<symbol, unknown>)[k], undefined)
  t.false(k in tab)
  t.throws(() => {
    'use strict'
    ;(tab as unknown as Record<symbol, unknown>)[k] = 1
  }, { instanceOf: TypeError })
  t.deepEqual(tab.keys(), ['a', 'inner', 'also'])
  tab.release()
  assertBaseline(t, f)
})

test('a plain object is read as Object.keys reads it: own enumerable string keys in that order, never inherited or hidden ones, even with Object.prototype polluted before or during the encode', (t) => {
  const f = fresh(t, 'ownkeys')
  const src: Record<string, unknown> = { b: 1, 2: 'two', a: { z: 1, 10: 'ten', 1: 'one' }, 1: 'one' }
  Object.defineProperty(src, 'hidden', { value: 'not enumerable', enumerable: false })
  const nullProto = Object.assign(Object.create(null) as Record<string, unknown>, { y: 1, x: 2 })
  const want = { ...src, nil: { y: 1, x: 2 } }
  const read = (v: unknown) => {
    const tab = Shared(f.pool, v as object) as SharedTab
    const a = tab.a as SharedTab
    const out = { keys: tab.keys(), inner: a.keys(), copy: tab.toJS() as Record<string, unknown> }
    a.release()
    tab.release()
    return out
  }
  const clean = read({ ...src, nil: nullProto })
  t.deepEqual(clean.keys, Object.keys(want))
  t.deepEqual(clean.keys, ['1', '2', 'b', 'a', 'nil'])
  t.deepEqual(clean.inner, ['1', '10', 'z'])
  t.deepEqual(clean.copy, want)
  // Something enumerable on Object.prototype: for-in would see it, Object.keys does not.
  Object.defineProperty(Object.prototype, 'polluted', { value: 'no', enumerable: true, configurable: true })
  try {
    const polluted = read({ ...src, nil: nullProto })
    t.deepEqual(polluted.keys, clean.keys)
    t.deepEqual(polluted.inner, clean.inner)
    t.false(Object.hasOwn(polluted.copy, 'polluted'))
  } finally {
    delete (Object.prototype as Record<string, unknown>).polluted
  }
  // Polluted half-way, by a getter read during the walk: the walk is redone
  // the Object.keys way, so the inherited key is not taken as an own one.
  const sneaky = {
    a: 1,
    get b() {
      Object.defineProperty(Object.prototype, 'evil', { value: 1, enumerable: true, configurable: true })
      return { c: 1 }
    },
    d: { e: 2 },
  }
  try {
    const tab = Shared(f.pool, sneaky) as SharedTab
    t.deepEqual(tab.toJS(), { a: 1, b: { c: 1 }, d: { e: 2 } })
    tab.release()
  } finally {
    delete (Object.prototype as Record<string, unknown>).evil
  }
  // Documented difference: a getter that deletes a property the walk has not
  // reached yet leaves it out (Object.keys, a snapshot, gave it as null).
  const deleting = {
    get a() {
      delete (this as Record<string, unknown>).b
      return 1
    },
    b: 2,
    c: 3,
  } as Record<string, unknown>
  const d = Shared(f.pool, deleting) as SharedTab
  t.deepEqual(d.toJS(), { a: 1, c: 3 })
  d.release()
  assertBaseline(t, f)
})

test('a handle from another region cannot be stored (at any depth) nor re-shared: an error with a code, nothing allocated', (t) => {
  const f = fresh(t, 'foreign')
  const g = fresh(t, 'foreign-other', 256 * KiB)
  const foreign = Shared(g.pool, { from: 'g', list: [1] })
  const foreignList = foreign.list as SharedArr
  const tab = Shared(f.pool, {})
  const arr = Shared(f.pool, [])
  const before = f.pool.stats()
  const gBefore = g.pool.stats()
  const ways: [string, () => unknown][] = [
    ['tab.x = foreign', () => (tab.x = foreign)],
    ['tab.x = {deep: [foreignList]}', () => (tab.x = { deep: [foreignList] })],
    ['arr.push(foreign)', () => arr.push(foreign)],
    ['arr[0] = foreign', () => (arr[0] = foreign)],
    ['Shared(pool, foreign)', () => Shared(f.pool, foreign)],
    ['Shared(pool, [foreign])', () => Shared(f.pool, [foreign])],
  ]
  for (const [how, way] of ways) {
    const err = t.throws(way, undefined, how)
    t.true(anyShmCode(err), `${how}: ${String(err)}`)
  }
  t.deepEqual(f.pool.stats(), before)
  t.deepEqual(g.pool.stats(), gBefore)
  t.is(foreign.refCount, 1)
  // The way that works: copy it.
  tab.x = foreign.toJS()
  t.deepEqual(tab.toJS(), { x: { from: 'g', list: [1] } })
  done(foreignList, foreign, tab, arr)
  assertBaseline(t, f)
  assertBaseline(t, g)
})

test('running out of memory half-way through a deep copy is ERR_SHM_OUT_OF_MEMORY and leaves the pool exactly as it was', (t) => {
  const f = fresh(t, 'oom', 64 * KiB)
  const big = { list: Array.from({ length: 2000 }, (_, i) => ({ i, s: `string number ${i}`, t: new Float64Array([i]) })) }
  const oom = { code: ErrorCodes.OUT_OF_MEMORY } as const
  t.throws(() => Shared(f.pool, big), oom)
  assertBaseline(t, f, 'a failed Shared() frees what it built')
  const tab = Shared(f.pool, { keep: 1 })
  const arr = Shared(f.pool, [1])
  const before = f.pool.stats()
  t.throws(() => (tab.big = big), oom)
  t.throws(() => arr.push(big), oom)
  t.throws(() => (arr[0] = big), oom)
  t.throws(() => (tab.s = 'y'.repeat(200 * KiB)), oom)
  t.deepEqual(f.pool.stats(), before)
  t.deepEqual(tab.toJS(), { keep: 1 })
  t.deepEqual(arr.toJS(), [1])
  // Fill the pool with many small keys until it is full: each failure leaves the Tab as it was.
  let n = 0
  let err: unknown
  for (;;) {
    try {
      tab[`key number ${n}`] = `value number ${n}`
      n += 1
    } catch (e) {
      err = e
      break
    }
  }
  t.is((err as { code?: string }).code, ErrorCodes.OUT_OF_MEMORY)
  t.is(tab.size, n + 1)
  t.is(tab[`key number ${n - 1}`], `value number ${n - 1}`)
  t.false(`key number ${n}` in tab)
  done(tab, arr)
  assertBaseline(t, f)
})

// 8 Corruption -------------------------------------------------------------------

test('corrupted value blocks (random bytes written by another process) make reads, writes and release throw ERR_SHM_* or succeed, never crash the reading process', async (t) => {
  t.timeout(120_000)
  const BATCHES = 3
  const PER_BATCH = 40
  const base = Number(process.env.SHMT_CORRUPT_SEED ?? randomInt(1, 2 ** 30))
  t.log(`seeds ${base}..${base + BATCHES * PER_BATCH - 1} (rerun with SHMT_CORRUPT_SEED=${base})`)
  const batch = async (b: number) => {
    const specs: string[] = []
    for (let i = 0; i < PER_BATCH; i++) {
      const name = uniqueName('corrupt')
      cleanup(t, name)
      const shm = new SHMMain(name, 256 * KiB).start()
      t.teardown(() => shm.close())
      specs.push(`${name}:${base + b * PER_BATCH + i}`)
    }
    const w = await runValuesChild(['corrupt', ...specs])
    t.is(w.code, 0, w.stderr)
    const made = lastJson<{ name: string; seed: number; offset: number; writes: string[] }[]>(w)
    t.is(made.length, PER_BATCH)
    const r = await runValuesChild(['read-corrupt', ...made.map((m) => `${m.name}:${m.offset}:${m.seed}`)], { killAfterMs: 100_000 })
    const lastSeed = /read-corrupt: seed (\d+)\n$/.exec(r.stderr)?.[1]
    const culprit = made.find((m) => String(m.seed) === lastSeed)
    t.is(r.signal, null, `the reader died at seed ${lastSeed} (writes ${culprit?.writes.join(' ')}): ${r.stderr.slice(-2000)}`)
    t.is(r.code, 0, `the reader failed at seed ${lastSeed} (writes ${culprit?.writes.join(' ')}): ${r.stderr.slice(-2000)}`)
    const got = lastJson<{ codes: Record<string, number>; uncoded: string[] }>(r)
    t.deepEqual(got.uncoded, [], 'every error has an ERR_SHM_ code')
    return got.codes
  }
  const all = await Promise.all(Array.from({ length: BATCHES }, (_, b) => batch(b)))
  const codes: Record<string, number> = {}
  for (const c of all) for (const [k, n] of Object.entries(c)) codes[k] = (codes[k] ?? 0) + n
  t.log(codes)
  // The corruption was noticed at least sometimes (the test can tell).
  t.true(Object.keys(codes).some((k) => k.endsWith(ErrorCodes.CORRUPT)), 'some ERR_SHM_CORRUPT was seen')
})

// 9 worker_threads --------------------------------------------------------------

test('a worker thread attaches on its own, takes the Tab by offset, reads and changes it; the main thread sees the changes', async (t) => {
  const f = fresh(t, 'worker')
  const tab = Shared(f.pool, { counter: 41, removeMe: 'x', list: ['main'], typed: new Uint8Array([1, 2]) })
  const w = new Worker(VALUES_WORKER, { workerData: { name: f.name, offset: tab.offset } })
  // (listened for from the start: the exit can come in the same turn as the
  // message, before an await after the message would listen)
  const exited = new Promise((resolve) => w.once('exit', resolve))
  const msg = await new Promise<{ seen: unknown; refCountInWorker: number; shm: boolean }>((resolve, reject) => {
    w.once('message', resolve)
    w.once('error', reject)
    w.once('exit', (code) => reject(new Error(`worker exited with ${code} before answering`)))
  })
  await exited
  t.deepEqual(msg.seen, { counter: 41, removeMe: 'x', list: ['main'], typed: new Uint8Array([1, 2]) })
  t.is(msg.refCountInWorker, 2)
  t.true(msg.shm)
  t.deepEqual(tab.toJS(), { counter: 42, list: ['main', 'pushed by the worker'], typed: new Uint8Array([1, 2]), fromWorker: { thread: 'worker', n: 1n } })
  t.is(tab.refCount, 1)
  tab.release()
  assertBaseline(t, f)
})

test('a worker thread that ends holding handles (never released, region never closed) gives their references back as it goes', async (t) => {
  const f = fresh(t, 'worker-keeps')
  const tab = Shared(f.pool, { counter: 1, removeMe: 'x', list: ['main'] })
  const list = tab.list as SharedArr
  t.is(list.refCount, 2, 'the table and this handle')
  const w = new Worker(VALUES_WORKER, { workerData: { name: f.name, offset: tab.offset, keep: true } })
  // (listened for from the start: the exit can come in the same turn as the
  // message, before an await after the message would listen)
  const exited = new Promise((resolve) => w.once('exit', resolve))
  const msg = await new Promise<{ refCountInWorker: number }>((resolve, reject) => {
    w.once('message', resolve)
    w.once('error', reject)
    w.once('exit', (code) => reject(new Error(`worker exited with ${code} before answering`)))
  })
  t.is(msg.refCountInWorker, 2, 'the worker held a reference to the table')
  await exited
  t.is(tab.refCount, 1, "the worker's reference to the table is back")
  t.is(list.refCount, 2, "and its reference to the list")
  t.is(list.length, 2, 'what it pushed stays')
  list.release()
  tab.release()
  assertBaseline(t, f)
})

// Found by these tests and fixed -------------------------------------------------

test("toJS() of a Tab with the key '__proto__' keeps it as data, never as the copy's prototype", (t) => {
  const f = fresh(t, 'proto')
  const src = JSON.parse('{"__proto__": {"polluted": true}, "a": 1}') as Record<string, unknown>
  const tab = Shared(f.pool, src)
  t.deepEqual(tab.keys(), ['__proto__', 'a'], 'stored correctly')
  const js = tab.toJS()
  tab.release()
  t.is(Object.getPrototypeOf(js), Object.prototype, 'the copy is a plain object')
  t.is((js as { polluted?: unknown }).polluted, undefined, 'nothing is inherited from stored data')
  t.deepEqual(Object.keys(js), ['__proto__', 'a'])
})

test('Object.keys() of a Tab with container values takes no hidden references', (t) => {
  const f = fresh(t, 'okeys')
  const tab = Shared(f.pool, { inner: { x: 1 }, list: [1] })
  const inner = tab.inner as SharedTab
  t.is(inner.refCount, 2)
  t.deepEqual(Object.keys(tab), ['inner', 'list'])
  t.is(inner.refCount, 2, 'Object.keys() took no reference')
  inner.release()
  tab.release()
  t.deepEqual(f.pool.stats(), f.baseline, 'everything released was freed')
})

test('a view() that outlives its SharedTyped handle keeps the value alive: it never reaches freed memory or another value', async (t) => {
  const name = uniqueName('gcview')
  cleanup(t, name)
  const r = await runValuesChild(['gc-view', name], { nodeFlags: ['--expose-gc'] })
  t.is(r.code, 0, r.stderr)
  const got = lastJson<{ valueFreed: boolean; lengthAfterGc: number; otherSeen: number[] }>(r)
  if (got.valueFreed) t.is(got.lengthAfterGc, 0, 'a view of a freed value is detached')
  t.deepEqual(got.otherSeen, [9, 9, 9, 9], 'a write through the old view does not reach another value')
})

test('a reference cycle built from handles (a.b = b; b.a = a) is refused, and releasing every handle frees everything', (t) => {
  const f = fresh(t, 'cycle')
  const a = Shared(f.pool, { name: 'a' })
  const b = Shared(f.pool, { name: 'b' })
  a.b = b
  let refused = false
  try {
    b.a = a
  } catch (e) {
    refused = anyShmCode(e)
  }
  a.release()
  b.release()
  t.true(refused, 'closing the cycle is refused with a code')
  t.deepEqual(f.pool.stats(), f.baseline, 'releasing every handle frees everything')
})

test('a lock word with only the waiters bit set (no owner) is taken as free, not waited on forever', async (t) => {
  t.timeout(60_000)
  const f = fresh(t, 'lockword')
  const tab = Shared(f.pool, { a: 1 })
  // The Tab's lock is the first word of its body, 16 bytes into its block.
  const word = Buffer.alloc(4)
  word.writeUInt32LE(0x8000_0000)
  f.pool.write(tab.offset, word, 16)
  t.teardown(() => {
    f.pool.write(tab.offset, Buffer.alloc(4), 16)
    tab.release()
  })
  // Hang guard: the child is killed if it never gets past the lock.
  const r = await runValuesChild(['lock-hang', f.name, String(tab.offset)], { killAfterMs: 10_000 })
  t.is(r.signal, null, 'the reader was not stuck')
  t.regex(r.stderr, /lock-hang: done/)
})
