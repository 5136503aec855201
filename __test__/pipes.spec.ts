/**
 * Pipes across real OS processes: exactly-once delivery with many producers
 * and consumers, timeouts (also while the futex words keep moving),
 * backpressure, async waits that leave the event loop free and end on an
 * AbortSignal, ServerSide / ClientSide start-up, joining and refusing, bad
 * input, `for await` over a pipe, and a process killed holding handles from
 * dequeueMany having them given back by gc().
 *
 * Child processes run __test__/fixtures/pipe-child.ts; the messages they
 * exchange are built and checked by __test__/fixtures/pipe-messages.ts.
 * Every test uses its own region, removed at the end. Timeouts passed to
 * waits only guard against a hung test; the only timing assertions are lower
 * bounds ("did not return before its timeout"), durations are logged.
 *
 * The tests run serially: several block the main thread on purpose (sync
 * dequeue/enqueue), which would starve the event-loop tests if they overlapped.
 */
import { setMaxListeners } from 'node:events'
import { createRequire } from 'node:module'
import { readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'

import test, { type ExecutionContext } from 'ava'
import {
  AbortError,
  ClientSide,
  ErrorCodes,
  isSHM,
  ServerSide,
  Shared,
  SHMMain,
  ShmError,
  ShmUnsupportedError,
  type CQ,
} from 'shmtools'

import {
  CAPACITY_AT,
  decodeMessage,
  FRONT_AT,
  FRONT_POS_AT,
  HEAD_AT,
  NOT_EMPTY_AT,
  NOT_FULL_AT,
  queueHeader,
  readU64,
  readWord,
  SLEEPERS_EMPTY_AT,
  SLEEPERS_FULL_AT,
  RING_AT,
  RING_READ_AT,
  RING_SIZE_AT,
  RING_START,
  RING_WRITE_AT,
  SLOTS_AT,
  T_INLINE,
  T_PACKED,
  TAIL_AT,
  takeOut,
  writeU64,
  type Decoded,
  type QueueAt,
} from './fixtures/pipe-messages.ts'
import {
  cleanup,
  fixturePath,
  freshRegion,
  lastJson,
  NAME_PREFIX,
  REPO_ROOT,
  shmEntries,
  startFixture,
  uniqueName,
  type ChildOptions,
  type LiveChild,
  type RegionFixture,
} from './helpers.ts'

const KiB = 1024
const MiB = 1024 * KiB
/** Long timeouts that only stop a hung test. */
const GUARD_MS = 60_000

const PIPE_CHILD = fixturePath('pipe-child.ts')

function startPipeChild(args: string[], opts: ChildOptions = {}): LiveChild {
  return startFixture(PIPE_CHILD, args, opts)
}

/** A fresh region for one test, destroyed when the test ends. */
/** The native binding itself (the facade's per-message calls go straight to it). */
const binding = createRequire(import.meta.url)('../binding.js') as typeof import('../binding.js')

function fresh(t: ExecutionContext, tag: string, bytes = 4 * MiB): RegionFixture {
  return freshRegion(t, `pipe-${tag}`, bytes)
}

function killOnTeardown(t: ExecutionContext, ...children: LiveChild[]): void {
  t.teardown(() => {
    for (const c of children) c.kill()
  })
}

const ms = (t0: number) => performance.now() - t0
const fmt = (d: number) => `${d.toFixed(1)} ms`
/** What a pool uses (where its free space lies may change, e.g. after a ledger grew and shrank back). */
const used = (s: { bytesUsed: number; blocksUsed: number }) => ({ bytesUsed: s.bytesUsed, blocksUsed: s.blocksUsed })

const invalidArg = { code: ErrorCodes.INVALID_ARG, instanceOf: TypeError } as const
const closed = { code: ErrorCodes.CLOSED } as const
const shmCodes = new Set<string>(Object.values(ErrorCodes))
const hasShmCode = (e: unknown) => shmCodes.has((e as { code?: string } | undefined)?.code ?? '')
const abortError = { name: 'AbortError', code: 'ABORT_ERR', instanceOf: AbortError } as const

/** Dequeue one packet (waiting, with a guard), copy it out and release it. */
async function take(q: CQ): Promise<unknown> {
  const v = await q.dequeueAsync(GUARD_MS)
  if (v === undefined) throw new Error(`nothing came on pipe '${q.name}' within ${GUARD_MS} ms`)
  return takeOut(v)
}

test.after.always('no region made by this file is left in /dev/shm', (t) => {
  t.deepEqual(shmEntries(NAME_PREFIX), [])
})

// 1 ---------------------------------------------------------------------------

interface ConsumerReport {
  id: number
  mode: string
  /** producer, seq pairs in the order this consumer took them; seq -1 is the producer's eof. */
  pairs: number[]
  eofs: number[]
  bad: string[]
  extraPills: number
}

async function deliverExactlyOnce(
  t: ExecutionContext,
  producers: string[],
  consumers: string[],
  count: number,
  capacity: number,
): Promise<void> {
  t.timeout(120_000)
  const P = producers.length
  const C = consumers.length
  const { name, pool, region } = fresh(t, `deliver-${P}x${C}`, 8 * MiB)
  const server = new ServerSide(region, 'work', capacity).start()
  const q = server.pipe()
  // After the pipe exists: everything sent from here on must be freed again.
  const baseline = pool.stats()
  const t0 = performance.now()

  // A single consumer stops on the last producer's eof; several stop on pills.
  const stopAfterEofs = C === 1 ? P : 0
  const cs = consumers.map((mode, id) => startPipeChild(['consume', name, 'work', String(id), mode, String(stopAfterEofs)]))
  const ps = producers.map((mode, id) => startPipeChild(['produce', name, 'work', String(id), String(count), mode]))
  killOnTeardown(t, ...cs, ...ps)

  for (const [i, p] of ps.entries()) {
    const r = await p.done
    t.is(r.code, 0, `producer ${i}: ${r.stderr}`)
    t.like(lastJson(r), { id: i, sent: count })
  }
  t.log(`${P} producers (${producers.join(', ')}) sent ${P * count} messages + ${P} eofs in ${fmt(ms(t0))}`)
  if (stopAfterEofs === 0) {
    // Every data message and eof is in the pipe before the first pill.
    for (let i = 0; i < C; i++) t.true(await q.enqueueAsync({ stop: true }, GUARD_MS), 'room for a pill')
  }
  const reports: ConsumerReport[] = []
  for (const [i, c] of cs.entries()) {
    const r = await c.done
    t.is(r.code, 0, `consumer ${i}: ${r.stderr}`)
    reports.push(lastJson<ConsumerReport>(r))
  }
  t.log(`${C} consumers (${consumers.join(', ')}) done after ${fmt(ms(t0))}`)

  const seen = new Map<string, number>()
  const dups: string[] = []
  for (const rep of reports) {
    t.deepEqual(rep.bad, [], `consumer ${rep.id} (${rep.mode}) got damaged or foreign messages`)
    t.log(`consumer ${rep.id} (${rep.mode}) took ${rep.pairs.length / 2} packets (eofs included)`)
    // Each consumer sees each producer's messages in the order they were sent
    // (the pipe is FIFO and a producer sends one after the other), its eof last.
    const last = new Map<number, number>()
    for (let i = 0; i < rep.pairs.length; i += 2) {
      const [p, s] = [rep.pairs[i]!, rep.pairs[i + 1]!]
      const order = s === -1 ? Infinity : s
      const before = last.get(p) ?? -1
      if (order <= before) t.fail(`consumer ${rep.id}: producer ${p}'s seq ${s} came after ${before}`)
      last.set(p, order)
      const key = `${p}:${s}`
      if (seen.has(key)) dups.push(key)
      seen.set(key, rep.id)
    }
  }
  t.deepEqual(dups, [], 'a message was delivered twice')
  const missing: string[] = []
  for (let p = 0; p < P; p++) {
    for (let s = -1; s < count; s++) if (!seen.has(`${p}:${s}`)) missing.push(`${p}:${s}`)
  }
  t.deepEqual(missing.slice(0, 20), [], `${missing.length} messages never arrived`)
  t.is(seen.size, P * (count + 1))
  t.deepEqual(reports.flatMap((r) => r.eofs).sort((a, b) => a - b), [...Array(P).keys()])
  if (C === 1) {
    // One consumer: per producer exactly 0..count-1 then eof, in that order.
    const rep = reports[0]!
    for (let p = 0; p < P; p++) {
      const mine = []
      for (let i = 0; i < rep.pairs.length; i += 2) if (rep.pairs[i] === p) mine.push(rep.pairs[i + 1])
      t.deepEqual(mine, [...[...Array(count).keys()], -1], `FIFO for producer ${p}`)
    }
  }

  const extra = reports.reduce((n, r) => n + r.extraPills, 0)
  const pills = stopAfterEofs === 0 ? C : 0
  const stats = q.stats()
  t.like(stats, {
    depth: 0,
    capacity,
    totalEnqueued: P * (count + 1) + pills + extra,
    totalDequeued: P * (count + 1) + pills + extra,
  })
  t.true(stats.highWater <= capacity, `high water ${stats.highWater} > capacity ${capacity}`)
  t.is(q.length, 0)
  // Every packet's memory (copies, moved Shared handles, nested references)
  // was released by whichever process dropped it last.
  t.deepEqual(pool.stats(), baseline)
  const check = pool.check()
  t.is(check.blocksUsed, baseline.blocksUsed)
  server.close()
}

test.serial('1×1: every message arrives exactly once, in FIFO order, and the pool returns to its baseline', async (t) => {
  await deliverExactlyOnce(t, ['sync'], ['sync'], 2000, 16)
})

test.serial('2×2: every message arrives exactly once across consumers (enqueue / enqueueAsync → dequeueAsync / for await)', async (t) => {
  await deliverExactlyOnce(t, ['sync', 'async'], ['async', 'iter'], 2000, 16)
})

test.serial('4×4: every message arrives exactly once with every send and receive form mixed, and nothing leaks', async (t) => {
  await deliverExactlyOnce(t, ['sync', 'async', 'many', 'sync'], ['sync', 'async', 'iter', 'many'], 2000, 16)
})

test.serial('4 producers × 1 async consumer: FIFO per producer, eof after each producer\'s last message', async (t) => {
  await deliverExactlyOnce(t, ['many', 'async', 'sync', 'many'], ['async'], 500, 8)
})

test.serial('batch forms across processes: enqueueMany with a timeout → dequeueMany({ copy: true }) delivers every message once, in order, with its contents, and frees every block', async (t) => {
  await deliverExactlyOnce(t, ['batch'], ['copy'], 2000, 16)
})

test.serial('the copy form mixes with the handle forms: producers (batch, sync, many) × consumers (copy, sync, copy) share one pipe, exactly once, nothing leaks', async (t) => {
  await deliverExactlyOnce(t, ['batch', 'sync', 'many'], ['copy', 'sync', 'copy'], 1500, 16)
})

test.serial('the one-packet copy forms across processes: dequeue, dequeueAsync and packets() with { copy: true } against every producer form, exactly once, nothing leaks', async (t) => {
  await deliverExactlyOnce(t, ['batch', 'sync', 'async'], ['sync-copy', 'async-copy', 'iter-copy'], 1500, 16)
})

test.serial('one consumer taking plain copies one at a time (sync) keeps each producer\'s order and stops on the last eof', async (t) => {
  await deliverExactlyOnce(t, ['many', 'sync'], ['sync-copy'], 2000, 8)
})

// 2 ---------------------------------------------------------------------------

test.serial('dequeue/enqueue and their async forms time out: undefined / false, never before timeoutMs, and the pipe and pool are unchanged', async (t) => {
  const { region, pool } = fresh(t, 'timeouts')
  const q = new ServerSide(region, 'p', 2).start().pipe()
  const T = 200

  let t0 = performance.now()
  t.is(q.dequeue(T), undefined)
  let d = ms(t0)
  t.true(d >= T, `dequeue(${T}) returned after ${d} ms`)
  t.log(`dequeue(${T}) on an empty pipe: ${fmt(d)}`)

  t0 = performance.now()
  t.is(await q.dequeueAsync(T), undefined)
  d = ms(t0)
  t.true(d >= T, `dequeueAsync(${T}) resolved after ${d} ms`)
  t.log(`dequeueAsync(${T}) on an empty pipe: ${fmt(d)}`)

  t.true(q.enqueue('first'))
  t.true(q.enqueue({ second: [1, 2, 3] }))
  const statsFull = q.stats()
  const poolFull = pool.stats()
  const big = { text: 'x'.repeat(4000), list: [1, 2, { deep: true }] }

  t0 = performance.now()
  t.false(q.enqueue(big, T))
  d = ms(t0)
  t.true(d >= T, `enqueue(v, ${T}) returned after ${d} ms`)
  t.log(`enqueue(v, ${T}) on a full pipe: ${fmt(d)}`)

  t0 = performance.now()
  t.false(await q.enqueueAsync(big, T))
  d = ms(t0)
  t.true(d >= T, `enqueueAsync(v, ${T}) resolved after ${d} ms`)
  t.log(`enqueueAsync(v, ${T}) on a full pipe: ${fmt(d)}`)

  // timeoutMs 0: one try, no wait.
  t.false(q.enqueue(big, 0))
  t.false(await q.enqueueAsync(big, 0))
  // The copies stored for the attempts were released; nothing went in.
  t.deepEqual(q.stats(), statsFull)
  t.deepEqual(pool.stats(), poolFull)

  t.is(q.dequeue(0), 'first')
  t.deepEqual(takeOut(q.dequeue(0)), { second: [1, 2, 3] })
  t.is(q.dequeue(0), undefined)
  t.is(await q.dequeueAsync(0), undefined)
})

test.serial('a waiter keeps its deadline while another process keeps moving the futex word (sync and async, enqueue and dequeue)', async (t) => {
  t.timeout(90_000)
  const { name, region, pool } = fresh(t, 'deadline')
  const full = new ServerSide(region, 'full', 2).start().pipe()
  const empty = new ServerSide(region, 'empty', 2).start().pipe()
  t.true(full.enqueue('a'))
  t.true(full.enqueue('b'))
  const fullOff = queueHeader(region, 'full')
  const emptyOff = queueHeader(region, 'empty')
  const fullStats = full.stats()
  const emptyStats = empty.stats()
  const ctl = Shared(pool, { stop: false })
  t.teardown(() => {
    if (!ctl.released) ctl.release()
  })

  // The churner moves not_full of 'full' and not_empty of 'empty' and wakes
  // their sleepers every few ms, but never adds or takes a packet: each wake
  // sends a waiter back to check, and it must still give up at its deadline.
  // If wake-ups pushed the deadline back, the waits below would only return
  // once the churner stops (its 20 s hang guard), which it reports.
  const churner = startPipeChild(['churn', name, 'full', 'empty', String(ctl.offset)])
  killOnTeardown(t, churner)
  await churner.waitForLine(/churn: ready/)

  const T = 300
  const cases: [string, QueueAt, number, () => unknown | Promise<unknown>, unknown][] = [
    ['enqueue(v, T) on a full pipe', fullOff, NOT_FULL_AT, () => full.enqueue('c', T), false],
    ['enqueueAsync(v, T) on a full pipe', fullOff, NOT_FULL_AT, () => full.enqueueAsync('c', T), false],
    ['dequeue(T) on an empty pipe', emptyOff, NOT_EMPTY_AT, () => empty.dequeue(T), undefined],
    ['dequeueAsync(T) on an empty pipe', emptyOff, NOT_EMPTY_AT, () => empty.dequeueAsync(T), undefined],
  ]
  for (const [what, off, at, call, timedOut] of cases) {
    // Retry only if the churner happened not to run during the wait (then
    // the wait proved nothing); the outcome is checked every time.
    for (let attempt = 1; ; attempt++) {
      const w0 = readWord(pool, off, at)
      const t0 = performance.now()
      const r = await call()
      const d = ms(t0)
      const moved = (readWord(pool, off, at) - w0) >>> 0
      t.is(r, timedOut, what)
      t.true(d >= T, `${what} returned after ${d} ms`)
      t.log(`${what}: gave up after ${fmt(d)}; the word moved ${moved} times meanwhile`)
      if (moved > 0) break
      if (attempt === 5) t.fail(`${what}: the churner never moved the word during a wait`)
    }
  }

  ctl.stop = true
  const r = await churner.done
  t.is(r.code, 0, r.stderr)
  const report = lastJson<{ rounds: number; gaveUp: boolean; length: number[] }>(r)
  t.false(report.gaveUp, 'a waiter only returned once the wake-ups stopped')
  t.true(report.rounds > 0)
  t.deepEqual(report.length, [2, 0])
  // Nothing was added or taken: only the sequence words moved.
  t.like(full.stats(), { depth: 2, totalEnqueued: fullStats.totalEnqueued, totalDequeued: fullStats.totalDequeued })
  t.like(empty.stats(), { depth: 0, totalEnqueued: emptyStats.totalEnqueued, totalDequeued: emptyStats.totalDequeued })
  t.is(full.dequeue(0), 'a')
  t.is(full.dequeue(0), 'b')
})

// 3 ---------------------------------------------------------------------------

test.serial('a full pipe holds the producer back: never more than capacity packets in it, and every packet arrives in order', async (t) => {
  t.timeout(90_000)
  const { name, region, pool } = fresh(t, 'backpressure')
  const capacity = 4
  const count = 100
  const q = new ServerSide(region, 'bp', capacity).start().pipe()
  const baseline = pool.stats()
  const producer = startPipeChild(['produce', name, 'bp', '0', String(count), 'sync'])
  killOnTeardown(t, producer)
  let exited = false
  void producer.done.then(() => (exited = true))

  // Wait (a condition, not a time) until the producer has filled the pipe.
  while (q.length < capacity) {
    if (exited) t.fail(`the producer exited first: ${producer.output().stderr}`)
    await sleep(5)
  }
  t.like(q.stats(), { depth: capacity, totalEnqueued: capacity, highWater: capacity })
  // The producer has 97 more to send, and is held at the full pipe meanwhile.
  await sleep(300)
  t.like(q.stats(), { depth: capacity, totalEnqueued: capacity, highWater: capacity })
  t.false(exited)

  const got: Decoded[] = []
  for (;;) {
    const d = decodeMessage(await take(q))
    got.push(d)
    const s = q.stats()
    t.true(s.totalEnqueued - s.totalDequeued <= capacity, `${s.totalEnqueued - s.totalDequeued} packets in a pipe of ${capacity}`)
    t.true(s.highWater <= capacity, `high water ${s.highWater}`)
    if (d.kind !== 'data') break
    await sleep(2) // a slow consumer
  }
  t.deepEqual(got, [...[...Array(count).keys()].map((seq) => ({ kind: 'data', producer: 0, seq })), { kind: 'eof', producer: 0 }])
  const r = await producer.done
  t.is(r.code, 0, r.stderr)
  t.like(q.stats(), { depth: 0, highWater: capacity, totalEnqueued: count + 1, totalDequeued: count + 1 })
  t.deepEqual(pool.stats(), baseline)
})

// 4 ---------------------------------------------------------------------------

test.serial('timers keep firing while dequeueAsync / enqueueAsync wait', async (t) => {
  const { region } = fresh(t, 'timers')
  const q = new ServerSide(region, 'p', 1).start().pipe()
  for (const [what, call] of [
    ['dequeueAsync(300) on an empty pipe', () => q.dequeueAsync(300)],
    ['enqueueAsync(v, 300) on a full pipe', () => q.enqueueAsync('more', 300)],
  ] as const) {
    if (what.startsWith('enqueue')) t.true(q.enqueue('fill'))
    let ticks = 0
    const iv = setInterval(() => ticks++, 10)
    const t0 = performance.now()
    const r = await call()
    const atEnd = ticks
    clearInterval(iv)
    t.is(r, what.startsWith('enqueue') ? false : undefined)
    t.true(atEnd > 0, `no timer tick during ${what}`)
    t.log(`${what}: ${atEnd} ticks of a 10 ms interval in ${fmt(ms(t0))}`)
  }
  t.is(q.dequeue(0), 'fill')
})

test.serial('an AbortSignal ends a parked async wait that has no timeout, with AbortError carrying the reason; the pipe is unchanged', async (t) => {
  t.timeout(30_000) // an abort that is not noticed would wait forever
  const { region, pool } = fresh(t, 'abort')
  const empty = new ServerSide(region, 'empty', 2).start().pipe()
  const full = new ServerSide(region, 'full', 1).start().pipe()
  const open = new ServerSide(region, 'open', 2).start().pipe()
  t.true(full.enqueue('only'))
  t.true(open.enqueue('stay'))
  const before = pool.stats()

  for (const [what, start] of [
    ['dequeueAsync() on an empty pipe', (signal: AbortSignal) => empty.dequeueAsync(undefined, { signal })],
    ['enqueueAsync(v) on a full pipe', (signal: AbortSignal) => full.enqueueAsync({ big: 'y'.repeat(500) }, undefined, { signal })],
  ] as const) {
    const ac = new AbortController()
    const reason = new Error(`stop ${what}`)
    const t0 = performance.now()
    const p = start(ac.signal)
    setTimeout(() => ac.abort(reason), 50)
    const err = await t.throwsAsync(p, abortError, what)
    t.is(err?.cause, reason)
    t.log(`${what}: aborted after ${fmt(ms(t0))}`)
  }

  // An already-aborted signal fails at once and does not touch the pipe,
  // even when the operation could go ahead.
  await t.throwsAsync(open.dequeueAsync(undefined, { signal: AbortSignal.abort() }), abortError)
  await t.throwsAsync(open.enqueueAsync('not sent', undefined, { signal: AbortSignal.abort() }), abortError)
  t.is(open.length, 1)
  t.is(empty.length, 0)
  t.is(full.length, 1)
  t.deepEqual(pool.stats(), before)
  t.is(open.dequeue(0), 'stay')
  // The aborted waits took nothing, and the pipes still work.
  t.true(empty.enqueue('later'))
  t.is(await empty.dequeueAsync(GUARD_MS), 'later')
  t.is(full.dequeue(0), 'only')
})

test.serial('200 parked async waits do not hold up fs.readFile; aborting them all rejects every one with AbortError and takes no packet', async (t) => {
  t.timeout(60_000)
  const { region } = fresh(t, 'many-waits', 8 * MiB)
  const pipes = Array.from({ length: 100 }, (_, i) => new ServerSide(region, `w${i}`, 1).start().pipe())
  const same = new ServerSide(region, 'same', 4).start().pipe()
  const ac = new AbortController()
  setMaxListeners(300, ac.signal) // one listener per wait, by design
  let settled = 0
  const waits = [...pipes, ...Array<CQ>(100).fill(same)].map((q) => {
    const p = q.dequeueAsync(undefined, { signal: ac.signal })
    p.then(
      () => settled++,
      () => settled++,
    )
    return p
  })

  // libuv's pool has 4 threads: were the waits on it, these reads would never finish.
  const t0 = performance.now()
  const texts = await Promise.all(Array.from({ length: 8 }, () => readFile(join(REPO_ROOT, 'package.json'), 'utf8')))
  t.log(`8 readFile calls with 200 waits parked: ${fmt(ms(t0))}`)
  t.true(texts.every((s) => s.includes('"shmtools"')))
  t.is(settled, 0, 'a wait settled without a packet or an abort')

  const t1 = performance.now()
  ac.abort()
  const results = await Promise.allSettled(waits)
  t.log(`all 200 waits rejected ${fmt(ms(t1))} after the abort`)
  t.is(results.length, 200)
  for (const r of results) {
    t.is(r.status, 'rejected')
    if (r.status === 'rejected') t.like(r.reason, { name: 'AbortError', code: 'ABORT_ERR' })
  }
  // No cancelled wait took anything.
  t.true(pipes.every((q) => q.length === 0))
  t.true(same.enqueue('after'))
  t.is(same.length, 1)
  t.is(await same.dequeueAsync(GUARD_MS), 'after')
})

// 5 ---------------------------------------------------------------------------

test.serial('a ClientSide started (blocking, in a child) before the region and the pipe exist waits for both, then attaches', async (t) => {
  t.timeout(90_000)
  const name = uniqueName('pipe-client-sync')
  cleanup(t, name)
  const child = startPipeChild(['client-sync', name, 'cs', '60000'])
  killOnTeardown(t, child)

  await child.waitForLine(/waiting for region/)
  const shm = new SHMMain(name, 1 * MiB).start()
  t.teardown(() => shm.close())
  await child.waitForLine(/waiting for pipe 'cs'/)
  // The waiting ClientSide did not create the pipe.
  t.throws(() => new ClientSide(shm.region(), 'cs', { timeoutMs: 0 }).start(), { code: ErrorCodes.TIMEOUT })

  const server = new ServerSide(shm.region(), 'cs', 4).start()
  t.true(server.pipe().enqueue({ hello: 'child', n: [1, 2] }))
  // Only after the child is done: it replies on the same pipe.
  const r = await child.done
  t.is(r.code, 0, r.stderr)
  const reply = takeOut(server.pipe().dequeue(0))
  t.deepEqual(lastJson(r).got, { hello: 'child', n: [1, 2] })
  t.deepEqual(reply, { from: 'client-sync', pid: child.proc.pid })
  t.regex(r.stderr, /attached to pipe 'cs'/)
  server.close()
})

test.serial('ClientSide.startAsync() waits for the region and then for a pipe that another process creates, without blocking the event loop', async (t) => {
  t.timeout(90_000)
  const name = uniqueName('pipe-client-async')
  cleanup(t, name)
  let settled = false
  const starting = new ClientSide(name, 'ca', { timeoutMs: GUARD_MS, microSleepUs: 5_000 }).startAsync()
  void starting.then(
    () => (settled = true),
    () => (settled = true),
  )
  await sleep(50)
  t.false(settled, 'startAsync settled before the region existed')
  const shm = new SHMMain(name, 1 * MiB).start()
  t.teardown(() => shm.close())
  await sleep(50)
  t.false(settled, 'startAsync settled before the pipe existed')

  // The event loop runs meanwhile: this child's output is read by it.
  const server = startPipeChild(['server', name, 'ca', '4', 'made by a child'])
  killOnTeardown(t, server)
  const client = await starting
  t.teardown(() => client.close())
  t.true(client.started)
  const r = await server.done
  t.is(r.code, 0, r.stderr)
  t.deepEqual(lastJson(r), { ok: true, capacity: 4 })
  t.is(client.pipe().capacity, 4)
  t.deepEqual(await take(client.pipe()), { from: 'server-child', pid: server.proc.pid, text: 'made by a child' })
})

test.serial('ServerSide.startAsync() waits for the region without blocking the event loop, then creates the pipe', async (t) => {
  t.timeout(60_000)
  const name = uniqueName('pipe-server-async')
  cleanup(t, name)
  let settled = false
  const starting = new ServerSide(name, 'sa', 3, { timeoutMs: GUARD_MS }).startAsync()
  void starting.then(
    () => (settled = true),
    () => (settled = true),
  )
  await sleep(50)
  t.false(settled, 'startAsync settled before the region existed')
  const shm = new SHMMain(name, 1 * MiB).start()
  t.teardown(() => shm.close())
  const server = await starting
  t.teardown(() => server.close())
  t.is(server.pipe().capacity, 3)
  const client = new ClientSide(shm.region(), 'sa', { timeoutMs: 0 }).start()
  t.true(server.pipe().enqueue('hello'))
  t.is(client.pipe().dequeue(0), 'hello')
})

test.serial('ClientSide gives up with ERR_SHM_TIMEOUT (never early), stops on an AbortSignal or a breakChecker with AbortError', async (t) => {
  t.timeout(30_000)
  const { name, region } = fresh(t, 'client-stop')
  const T = 200

  let t0 = performance.now()
  const e1 = t.throws(() => new ClientSide(name, 'missing', { timeoutMs: T }).start(), { code: ErrorCodes.TIMEOUT, instanceOf: ShmError })
  let d = ms(t0)
  t.regex(e1?.message ?? '', /missing/)
  t.true(d >= T, `start() gave up after ${d} ms`)
  t.log(`ClientSide.start() timed out after ${fmt(d)}`)

  t0 = performance.now()
  await t.throwsAsync(new ClientSide(region, 'missing', { timeoutMs: T }).startAsync(), { code: ErrorCodes.TIMEOUT, instanceOf: ShmError })
  d = ms(t0)
  t.true(d >= T, `startAsync() gave up after ${d} ms`)
  t.log(`ClientSide.startAsync() timed out after ${fmt(d)}`)

  // An AbortSignal ends a wait that has no timeout.
  const ac = new AbortController()
  const reason = new Error('no more waiting')
  setTimeout(() => ac.abort(reason), 50)
  t0 = performance.now()
  const e2 = await t.throwsAsync(new ClientSide(region, 'missing', { signal: ac.signal }).startAsync(), abortError)
  t.is(e2?.cause, reason)
  t.log(`startAsync() aborted after ${fmt(ms(t0))}`)
  t.throws(() => new ClientSide(region, 'missing', { signal: AbortSignal.abort() }).start(), abortError)

  let calls = 0
  t.throws(() => new ClientSide(region, 'missing', { breakChecker: () => ++calls >= 3, microSleepUs: 1000 }).start(), abortError)
  t.is(calls, 3, 'the breakChecker stops the wait at its first true')
  // Waiting created nothing.
  t.throws(() => new ClientSide(region, 'missing', { timeoutMs: 0 }).start(), { code: ErrorCodes.TIMEOUT })
})

test.serial('a second ServerSide of the same name and capacity joins the pipe (also from another process); another capacity is ERR_SHM_EXISTS', async (t) => {
  t.timeout(60_000)
  const { name, region } = fresh(t, 'join')
  const a = new ServerSide(region, 'j', 4).start()
  const b = new ServerSide(region, 'j', 4).start()
  t.true(a.pipe().enqueue('via a'))
  t.is(b.pipe().length, 1)
  t.is(b.pipe().dequeue(0), 'via a')
  t.true(b.pipe().enqueue({ via: 'b' }))
  t.deepEqual(takeOut(a.pipe().dequeue(0)), { via: 'b' })

  const joiner = startPipeChild(['server', name, 'j', '4', 'joined'])
  killOnTeardown(t, joiner)
  const r = await joiner.done
  t.is(r.code, 0, r.stderr)
  t.deepEqual(lastJson(r), { ok: true, capacity: 4 })
  t.deepEqual(await take(a.pipe()), { from: 'server-child', pid: joiner.proc.pid, text: 'joined' })

  t.true(a.pipe().enqueue('kept'))
  const e = t.throws(() => new ServerSide(region, 'j', 8).start(), { code: ErrorCodes.EXISTS, instanceOf: ShmError })
  t.regex(e?.message ?? '', /capacity 4/)
  const refused = startPipeChild(['server', name, 'j', '8', 'refused'])
  killOnTeardown(t, refused)
  const r2 = await refused.done
  t.is(r2.code, 0, r2.stderr)
  t.like(lastJson(r2), { error: ErrorCodes.EXISTS })
  // The existing pipe is untouched by the refusals.
  t.is(a.pipe().capacity, 4)
  t.is(a.pipe().length, 1)
  t.is(b.pipe().dequeue(0), 'kept')
  a.close()
  b.close()
})

// 6 ---------------------------------------------------------------------------

test.serial('bad capacities, timeouts, pipe names and options are ERR_SHM_INVALID_ARG and change nothing', async (t) => {
  const { region, pool } = fresh(t, 'bad-input')
  const q = new ServerSide(region, 'p', 2).start().pipe()
  t.true(q.enqueue('kept'))
  const stats = q.stats()
  const poolBefore = pool.stats()

  for (const capacity of [0, -1, 1.5, NaN, Infinity, 2 ** 24 + 1, 2 ** 30, '4', undefined, null]) {
    t.throws(() => new ServerSide(region, 'c', capacity as number), invalidArg, `capacity ${String(capacity)}`)
  }
  for (const timeout of [-1, -0.5, NaN, '100', null]) {
    const tm = timeout as number
    t.throws(() => q.enqueue('x', tm), invalidArg, `enqueue timeout ${String(timeout)}`)
    t.throws(() => q.dequeue(tm), invalidArg, `dequeue timeout ${String(timeout)}`)
    await t.throwsAsync(q.enqueueAsync('x', tm), invalidArg, `enqueueAsync timeout ${String(timeout)}`)
    await t.throwsAsync(q.dequeueAsync(tm), invalidArg, `dequeueAsync timeout ${String(timeout)}`)
    t.throws(() => new ClientSide(region, 'p', { timeoutMs: tm }), invalidArg)
  }
  for (const max of [-1, 1.5, '3', NaN]) t.throws(() => q.dequeueMany(max as number), invalidArg, `dequeueMany(${String(max)})`)
  await t.throwsAsync(q.dequeueAsync(0, { signal: {} as AbortSignal }), invalidArg)

  const tooLong = 'n'.repeat(64)
  const twoByte64 = 'é'.repeat(32) // 64 bytes in UTF-8
  for (const pipeName of ['', tooLong, twoByte64, 'a\0b', 42, undefined]) {
    const n = pipeName as string
    t.throws(() => new ServerSide(region, n, 2), invalidArg, `ServerSide pipe name ${JSON.stringify(pipeName)}`)
    t.throws(() => new ClientSide(region, n), invalidArg, `ClientSide pipe name ${JSON.stringify(pipeName)}`)
  }
  // The longest names that fit: 63 bytes.
  const ok63 = new ServerSide(region, 'n'.repeat(63), 1).start()
  const ok63utf8 = new ServerSide(region, `${'é'.repeat(31)}a`, 1).start()
  t.is(ok63.pipe().capacity, 1)
  t.true(ok63utf8.pipe().enqueue('ü'))
  t.is(new ClientSide(region, `${'é'.repeat(31)}a`, { timeoutMs: 0 }).start().pipe().dequeue(0), 'ü')

  t.deepEqual(q.stats(), stats)
  t.is(q.dequeue(0), 'kept')
  t.true(poolBefore.bytesUsed < pool.stats().bytesUsed, 'the two new pipes took memory')
})

test.serial('a capacity the region cannot hold is ERR_SHM_OUT_OF_MEMORY, and neither a pipe nor any memory is left behind', (t) => {
  const { region, pool } = fresh(t, 'oom', 1 * MiB)
  new ServerSide(region, 'first', 1).start() // the directory has its entries block now
  const before = pool.stats()
  t.throws(() => new ServerSide(region, 'huge', 2 ** 24).start(), { code: ErrorCodes.OUT_OF_MEMORY })
  t.deepEqual(pool.stats(), before)
  pool.check()
  t.throws(() => new ClientSide(region, 'huge', { timeoutMs: 0 }).start(), { code: ErrorCodes.TIMEOUT })
})

test.serial('values that cannot be stored are refused with a code by every enqueue form, and the pipe and pool are unchanged', async (t) => {
  const { region, pool } = fresh(t, 'unsupported')
  const q = new ServerSide(region, 'p', 4).start().pipe()
  t.true(q.enqueue('kept'))
  const stats = q.stats()
  const poolBefore = pool.stats()

  const cyclic: Record<string, unknown> = { a: 1 }
  cyclic.self = cyclic
  const unsupported = { code: ErrorCodes.UNSUPPORTED, instanceOf: ShmUnsupportedError } as const
  for (const [what, v] of [
    ['a function', () => 1],
    ['a symbol', Symbol('s')],
    ['a cyclic object', cyclic],
    ['a function inside a table', { ok: 1, f: () => 2 }],
    ['a class instance', new (class Point { x = 1 })()],
  ] as const) {
    t.throws(() => q.enqueue(v), unsupported, `enqueue(${what})`)
    t.throws(() => q.enqueue(v, 0), unsupported, `enqueue(${what}, 0)`)
    await t.throwsAsync(q.enqueueAsync(v), unsupported, `enqueueAsync(${what})`)
    t.throws(() => q.enqueueMany(['fine', v, 'also fine']), unsupported, `enqueueMany([.., ${what}, ..])`)
    t.deepEqual(q.stats(), stats, `after ${what}`)
  }
  // A handle from another region, and a released one.
  const other = fresh(t, 'unsupported-other')
  const foreign = Shared(other.pool, { from: 'elsewhere' })
  const gone = Shared(pool, [1, 2, 3])
  gone.release()
  for (const [what, v] of [
    ['a handle of another region', foreign],
    ['a table holding a handle of another region', { inner: foreign }],
    ['a released handle', gone],
    ['a table holding a released handle', { inner: gone }],
  ] as const) {
    const err = t.throws(() => q.enqueue(v), undefined, what)
    t.true(hasShmCode(err), `${what}: ${String(err)}`)
    await t.throwsAsync(q.enqueueAsync(v), undefined, what)
  }
  t.is(foreign.refCount, 1)
  foreign.release()

  t.deepEqual(q.stats(), stats)
  t.deepEqual(pool.stats(), poolBefore)
  t.is(q.dequeue(0), 'kept')
})

test.serial('after close() every use of the pipe is ERR_SHM_CLOSED; the pipe and its packets stay for other handles', async (t) => {
  const { shm, region } = fresh(t, 'closed')
  const server = new ServerSide(region, 'p', 4).start()
  const q = server.pipe()
  const other = new ClientSide(region, 'p', { timeoutMs: 0 }).start().pipe()
  t.true(q.enqueue('survives'))
  q.close()

  t.throws(() => q.enqueue('x'), closed)
  t.throws(() => q.enqueue('x', 0), closed)
  t.throws(() => q.dequeue(), closed)
  t.throws(() => q.dequeue(0), closed)
  t.throws(() => q.enq('x'), closed)
  t.throws(() => q.deq(), closed)
  await t.throwsAsync(q.enqueueAsync('x'), closed)
  await t.throwsAsync(q.dequeueAsync(), closed)
  t.throws(() => q.enqueueMany(['x']), closed)
  t.throws(() => q.dequeueMany(), closed)
  t.throws(() => q.length, closed)
  t.throws(() => q.capacity, closed)
  t.throws(() => q.stats(), closed)
  t.throws(() => q.empty(), closed)
  // Iterating a closed pipe ends at once, without an error.
  const got: unknown[] = []
  for await (const v of q) got.push(v)
  t.deepEqual(got, [])

  // Another handle still has the pipe and the packet.
  t.is(other.length, 1)
  t.is(other.dequeue(0), 'survives')
  server.close()
  t.throws(() => server.pipe(), { code: ErrorCodes.INVALID_STATE })
  // Closing the region closes its pipes too.
  shm.close()
  t.throws(() => other.enqueue('x'), closed)
  t.throws(() => other.dequeue(0), closed)
})

test.serial("the binding's hand-written per-message pipe calls refuse anything but a live pipe's raw external, and bad arguments, with an error, never a crash", (t) => {
  const { shm, region } = fresh(t, 'fast-args')
  new ServerSide(region, 'p', 4).start()
  type Native = { findPipe(name: string): { fast(): object; raw(): object } | null }
  const q = (region as unknown as { native(): Native }).native().findPipe('p')!
  const p = q.raw()
  type Fast = {
    pipeEnqueue(p: unknown, wire: unknown, len: unknown, timeoutMs: unknown): boolean
    pipeDequeue(p: unknown, timeoutMs: unknown): unknown
    pipeDequeueSpin(p: unknown, spinUs: unknown): unknown
    pipeDequeueCopy(p: unknown, timeoutMs: unknown, spinUs: unknown): unknown
    pipeSeq(p: unknown, kind: unknown): number
  }
  const fast = binding.fastCalls() as Fast
  const wire = Buffer.from([3, 7, 0, 0, 0, 0, 0, 0, 0]) // the Int 7
  t.true(fast.pipeEnqueue(p, wire, wire.length, 0))
  t.is(typeof fast.pipeSeq(p, 0), 'number')
  // Not a pipe: a plain object, a number, a Buffer, null, undefined, the
  // class instance, the napi-rs external of the same pipe (another kind of
  // external), a region's external.
  const regionExternal = (region as unknown as { native(): { fast(): object } }).native().fast()
  const strangers: unknown[] = [{}, 42, wire, null, undefined, q, q.fast(), regionExternal]
  const invalid = { message: /^ERR_SHM_INVALID_ARG: / }
  for (const [i, x] of strangers.entries()) {
    const label = `stranger ${i}`
    t.throws(() => fast.pipeEnqueue(x, wire, wire.length, 0), invalid, label)
    t.throws(() => fast.pipeDequeue(x, 0), invalid, label)
    t.throws(() => fast.pipeDequeueSpin(x, 0), invalid, label)
    t.throws(() => fast.pipeDequeueCopy(x, 0, 0), invalid, label)
    t.throws(() => fast.pipeSeq(x, 0), invalid, label)
  }
  // Bad arguments on a good pipe: each is ERR_SHM_INVALID_ARG and changes nothing.
  const u16 = new Uint16Array(5)
  new Uint8Array(u16.buffer).set(wire)
  const bad: [string, () => unknown][] = [
    ['a length past the Buffer', () => fast.pipeEnqueue(p, wire, wire.length + 1, 0)],
    ['a length that is not an integer', () => fast.pipeEnqueue(p, wire, 2.5, 0)],
    ['a negative length', () => fast.pipeEnqueue(p, wire, -1, 0)],
    ['no length', () => fast.pipeEnqueue(p, wire, undefined, 0)],
    ['a string for the bytes', () => fast.pipeEnqueue(p, 'abc', 3, 0)],
    ['a Uint16Array holding a good value', () => fast.pipeEnqueue(p, u16, wire.length, 0)],
    ['a DataView holding a good value', () => fast.pipeEnqueue(p, new DataView(u16.buffer), wire.length, 0)],
    ['bytes that are not one value', () => fast.pipeEnqueue(p, wire, 5, 0)],
    ['a negative timeout', () => fast.pipeDequeue(p, -1)],
    ['a string timeout', () => fast.pipeDequeue(p, '5')],
    ['a NaN timeout', () => fast.pipeDequeueCopy(p, NaN, 0)],
    ['no spin', () => fast.pipeDequeueCopy(p, 0, undefined)],
    ['a fractional spin', () => fast.pipeDequeueSpin(p, 0.5)],
    ['a bad kind', () => fast.pipeSeq(p, 7)],
    ['no arguments', () => (fast.pipeSeq as () => number)()],
  ]
  for (const [label, call] of bad) t.throws(call, invalid, label)
  // The packet is still there, alone, and the external works to the end.
  t.is(fast.pipeDequeueCopy(p, 0, 0), '\x00\x03\x07\x00\x00\x00\x00\x00\x00\x00')
  t.is(fast.pipeDequeueCopy(p, 0, 0), '')
  t.is(fast.pipeDequeue(p, 0), null)
  // A finite timeout longer than any clock counts waits as forever does
  // (here: the packet is there at once), never a panic.
  for (const huge of [1e22, 1e300, Number.MAX_VALUE]) {
    t.true(fast.pipeEnqueue(p, wire, wire.length, huge))
    t.is(fast.pipeDequeue(p, huge), 7)
  }
  // A closed region: ERR_SHM_CLOSED through the external too.
  shm.close()
  t.throws(() => fast.pipeEnqueue(p, wire, wire.length, 0), { message: /^ERR_SHM_CLOSED: / })
  t.throws(() => fast.pipeDequeue(p, 0), { message: /^ERR_SHM_CLOSED: / })
  t.throws(() => fast.pipeDequeueCopy(p, 0, 5), { message: /^ERR_SHM_CLOSED: / })
})

// 7 ---------------------------------------------------------------------------

test.serial('for await over packets({signal}) yields what a producer process sends, in order, and ends with AbortError when aborted while waiting', async (t) => {
  t.timeout(60_000)
  const { name, region } = fresh(t, 'iterate')
  const q = new ServerSide(region, 'it', 4).start().pipe()
  const count = 30
  const producer = startPipeChild(['produce', name, 'it', '7', String(count), 'async'])
  killOnTeardown(t, producer)

  const ac = new AbortController()
  const reason = new Error('done iterating')
  const got: Decoded[] = []
  const err = await t.throwsAsync(async () => {
    for await (const v of q.packets({ signal: ac.signal })) {
      const d = decodeMessage(takeOut(v))
      got.push(d)
      // Abort once the iterator is parked waiting for a packet that never comes.
      if (d.kind === 'eof') setTimeout(() => ac.abort(reason), 20)
    }
  }, abortError)
  t.is(err?.cause, reason)
  t.deepEqual(got, [...[...Array(count).keys()].map((seq) => ({ kind: 'data', producer: 7, seq })), { kind: 'eof', producer: 7 }])
  const r = await producer.done
  t.is(r.code, 0, r.stderr)
  // The aborted iterator took nothing more.
  t.true(q.enqueue('after'))
  t.is(q.dequeue(0), 'after')
})

test.serial('leaving a for await loop early takes no packet beyond the ones it yielded', async (t) => {
  const { region } = fresh(t, 'iterate-break')
  const q = new ServerSide(region, 'it', 8).start().pipe()
  t.is(q.enqueueMany([1, 2, 3, 4, 5]), 5)
  const got: unknown[] = []
  for await (const v of q) {
    got.push(v)
    if (got.length === 2) break
  }
  t.deepEqual(got, [1, 2])
  t.is(q.length, 3)
  t.deepEqual(q.dequeueMany(), [3, 4, 5])
})

// Found by these tests and fixed --------------------------------------------------

test.serial('close() ends a parked dequeueAsync at once with ERR_SHM_CLOSED (and so a parked for-await)', async (t) => {
  t.timeout(30_000)
  const { region } = fresh(t, 'bug-close')
  const q = new ServerSide(region, 'p', 2).start().pipe()
  const p = q.dequeueAsync(1500)
  setTimeout(() => q.close(), 50)
  // Without a timeout (as in `for await (const v of pipe)`) it would wait
  // until some other handle enqueued a packet: forever on a quiet pipe.
  await t.throwsAsync(p, closed)
})

test.serial('closing the region under a parked dequeueAsync without a timeout ends it with ERR_SHM_CLOSED within a slice', async (t) => {
  t.timeout(30_000)
  const { region } = fresh(t, 'bug-close-region')
  const q = new ServerSide(region, 'p', 2).start().pipe()
  // No timeout: nothing but the close can end this wait. The waiter thread
  // sleeps in one-second slices and wakes no one between them, so it must
  // notice the closed region itself.
  const p = q.dequeueAsync()
  setTimeout(() => region.close(), 50)
  let outcome: unknown
  p.then(
    () => (outcome = 'resolved'),
    (e: { code?: string }) => (outcome = e.code),
  )
  // (a liveness guard: a correct wait ends about a second after the close)
  for (let i = 0; i < 60 && outcome === undefined; i++) await sleep(100)
  t.is(outcome, ErrorCodes.CLOSED, 'still parked 6 s after the region was closed')
})

test.serial('enqueueAsync honours a signal that aborts while the value is being encoded (a getter)', async (t) => {
  t.timeout(30_000)
  const { region } = fresh(t, 'bug-abort')
  const q = new ServerSide(region, 'p', 1).start().pipe()
  t.true(q.enqueue('fill'))
  const ac = new AbortController()
  const value = {
    get x() {
      ac.abort()
      return 1
    },
  }
  const p = q.enqueueAsync(value, undefined, { signal: ac.signal })
  let outcome: unknown
  p.then(
    () => (outcome = 'resolved'),
    (e: Error) => (outcome = e.name),
  )
  // Liveness guard for the demonstration only: a correct wait rejects within
  // a few ms of the abort; this one stays parked until room appears.
  await sleep(3000)
  const seen = outcome
  q.dequeue(0) // make room so the parked wait ends
  await p.catch(() => {})
  t.is(seen, 'AbortError', 'still parked 3 s after the signal aborted')
})

test.serial('enqueueMany with an unsupported value anywhere in the batch throws before anything goes in', (t) => {
  const { region } = fresh(t, 'bug-many')
  const q = new ServerSide(region, 'p', 1000).start().pipe()
  const values: unknown[] = Array.from({ length: 300 }, (_, i) => i)
  values.push(() => 'not storable')
  // The whole batch is encoded before any of it goes in, however long it is
  // (it is then built and enqueued in chunks): a bad value late in a long
  // batch must not leave the earlier ones sent, or a retry would send them
  // twice.
  t.throws(() => q.enqueueMany(values), { code: ErrorCodes.UNSUPPORTED })
  t.is(q.length, 0, 'packets went in although enqueueMany threw')
})

test.serial('an abort right after an async wait parks is never lost, even with other waits asleep on the same word', async (t) => {
  t.timeout(60_000)
  const { region } = fresh(t, 'bug-lost-cancel')
  const q = new ServerSide(region, 'p', 2).start().pipe()
  // Another wait asleep on the same word makes the race easy to hit (the
  // shared-futex wake has a sleeper to handle): waiter.rs run() checks the
  // cancel flag, then futex_wait()s on the queue word, and cancel() sets the
  // flag and futex_wake()s in between; the word never changes, so nothing
  // else ends the sleep before the slice.
  const bg = new AbortController()
  const other = q.dequeueAsync(undefined, { signal: bg.signal }).catch(() => undefined)
  t.teardown(() => bg.abort())
  let worst = 0
  let cycles = 0
  for (; cycles < 200 && worst < 500; cycles++) {
    const ac = new AbortController()
    const t0 = performance.now()
    const p = q.dequeueAsync(undefined, { signal: ac.signal })
    ac.abort()
    await t.throwsAsync(p, abortError)
    worst = Math.max(worst, ms(t0))
  }
  bg.abort()
  await other
  t.log(`${cycles} immediate aborts; the slowest took ${fmt(worst)}`)
  // Liveness, not speed: a correct cancel takes well under a millisecond
  // here; a lost wake-up costs the whole second of the futex slice.
  t.true(worst < 500, `an aborted wait took ${fmt(worst)} to reject`)
})

// batch forms -----------------------------------------------------------------

test.serial('dequeueMany({ copy: true }) and the one-packet copy forms give the same plain values toJS() gives, for every kind of value, shared or not, in small and large batches', async (t) => {
  const { region, pool } = fresh(t, 'copy-kinds', 16 * MiB)
  const q = new ServerSide(region, 'p', 64).start().pipe()
  const baseline = pool.stats()
  const shared = Shared(pool, { rows: [{ id: 1, name: 'first row, long enough' }], total: 1 })
  const sharedArr = Shared(pool, ['a', 'bb', 'a string that is not short'])
  const plain: unknown[] = [
    { seq: 1, payload: 'x'.repeat(32) },
    { 'ключ': 'значение', emoji: '😀 and more text', short: 'é', ['__proto__']: 'data, not a prototype' },
    { neg: -0, nan: NaN, inf: -Infinity, big: 2n ** 70n, small: -(2n ** 64n), float: 0.1, max: Number.MAX_SAFE_INTEGER },
    { bytes: Buffer.from([0, 1, 2, 255]), f64: new Float64Array([1.5, -2]), i8: new Int8Array([-1, 2]), u64: new BigUint64Array([2n ** 63n]) },
    { nested: { deeper: { list: [1, 'two', null, true, [3, { four: 4 }]] } } },
    [1, 'not a table', { inList: true }],
    'a bare string', 42, null, true,
    { ref: shared, list: sharedArr },
  ]
  const expected = plain.map((v) => {
    if (typeof v === 'object' && v !== null && 'ref' in v) return { ref: shared.toJS(), list: sharedArr.toJS() }
    return v
  })
  t.is(q.enqueueMany(plain), plain.length)
  // The same shared table twice more, by reference: read while others hold it.
  t.is(q.enqueueMany([shared, shared]), 2)
  t.is(shared.refCount, 4, 'one handle, one reference inside a packet, two packets')
  const got = q.dequeueMany(100, { copy: true })
  t.deepEqual(got, [...expected, shared.toJS(), shared.toJS()])
  // One at a time, in each one-packet form, the same values.
  t.is(q.enqueueMany([...plain, shared]), plain.length + 1)
  const one: unknown[] = []
  for (let i = 0; i < plain.length + 1; i++) {
    const v = i % 3 === 0 ? q.dequeue(0, { copy: true }) : i % 3 === 1 ? q.deq({ copy: true }) : await q.dequeueAsync(0, { copy: true })
    t.false(isSHM(v, pool), `packet ${i} came as a plain copy, not a handle`)
    one.push(v)
  }
  t.deepEqual(one, [...expected, shared.toJS()])
  t.is(q.dequeue(0, { copy: true }), undefined, 'nothing there: undefined')
  t.is(await q.dequeueAsync(0, { copy: true }), undefined)
  t.is(await q.dequeueAsync(50, { copy: true }), undefined, 'after spinning and parking: undefined')
  t.is(shared.refCount, 1, 'the one-at-a-time packets were released too')
  t.true(Object.hasOwn(got[1] as object, '__proto__'))
  t.is(Object.getPrototypeOf(got[1]), Object.prototype)
  t.true(Object.is((got[2] as { neg: number }).neg, -0))
  t.is(shared.refCount, 1, 'the packets were released')
  t.is(q.length, 0)

  // A batch larger than what is handed over as text (64 KiB) comes as bytes.
  const big = Array.from({ length: 5 }, (_, i) => ({ i, text: `${i}`.repeat(30_000) + 'ü' }))
  t.is(q.enqueueMany(big), 5)
  t.deepEqual(q.dequeueMany(5, { copy: true }), big)
  // So does one such packet taken alone.
  t.true(q.enqueue(big[0]))
  t.deepEqual(q.dequeue(0, { copy: true }), big[0])
  // A packet whose value is None comes as null, not as "nothing".
  t.true(q.enqueue(null))
  t.true(q.enqueue(undefined))
  t.is(q.dequeue(0, { copy: true }), null)
  t.is(await q.dequeueAsync(0, { copy: true }), null)
  t.throws(() => q.dequeue(0, { copy: 'yes' as unknown as boolean }), { code: ErrorCodes.INVALID_ARG })
  // Only what is there, and nothing when empty.
  t.is(q.enqueueMany([1, 2, 3]), 3)
  t.deepEqual(q.dequeueMany(2, { copy: true }), [1, 2])
  t.deepEqual(q.dequeueMany(2, { copy: true }), [3])
  t.deepEqual(q.dequeueMany(2, { copy: true }), [])

  shared.release()
  sharedArr.release()
  t.deepEqual(pool.stats(), baseline)
  pool.check()
})

/**
 * A fresh pipe of 16 for the damage tests, with what they read of its queue
 * header: `headSlot()` is where the slot of the packet at the head is (the
 * front slot if the packet went into an empty pipe, else the ring), as a
 * block and an offset in it.
 */
function pipeToDamage(t: ExecutionContext, label: string) {
  const { region, pool } = fresh(t, label)
  const q = new ServerSide(region, 'p', 16).start().pipe()
  const baseline = used(pool.stats())
  const queue = queueHeader(region, 'p')
  const u64 = (block: number, at: number) => Number(pool.read(block, 8, at).readBigUInt64LE(0))
  const capacity = readU64(pool, queue, CAPACITY_AT)
  const slots = readU64(pool, queue, SLOTS_AT)
  const headSlot = (): [number, number] => {
    const head = readU64(pool, queue, HEAD_AT)
    return readU64(pool, queue, FRONT_POS_AT) === head ? [queue.block, queue.at + FRONT_AT] : [slots, (head % capacity) * 16]
  }
  return { pool, q, baseline, queue, u64, headSlot }
}

test.serial('a packed packet damaged in the region (by another process) makes dequeueMany({ copy: true }) and dequeue(0, { copy: true }) throw ERR_SHM_CORRUPT; what they took is freed and the pipe goes on working', (t) => {
  const { pool, q, baseline, u64, headSlot } = pipeToDamage(t, 'copy-damage')
  // The body of {seq, payload} as the JS encoder writes it: Tab, count 2,
  // Str "seq", Int, Str "payload", Str of 32 x.
  const KEY0 = 5
  const INT = KEY0 + 5 + 3
  const damages: [string, (b: Buffer) => void][] = [
    ['a string that is not UTF-8', (b) => (b[b.indexOf('xxxx') + 1] = 0xff)],
    ['a key that is a list', (b) => (b[KEY0] = 11)],
    ['a count past the end', (b) => b.writeUInt32LE(0xffffffff, 1)],
    ['an unknown tag', (b) => (b[INT] = 99)],
    ['a reference smuggled in', (b) => (b[INT] = 13)],
    ['a value ending before its packet does', (b) => b.writeUInt32LE(1, 1)],
    ['no table at all', (b) => (b[0] = 7)],
  ]
  const forms: [string, () => unknown][] = [
    ['dequeueMany copy', () => q.dequeueMany(8, { copy: true })],
    ['dequeue copy', () => q.dequeue(0, { copy: true })],
  ]
  for (const [form, take] of forms) for (const [damageName, damage] of damages) {
    const what = `${form}, ${damageName}`
    // (payloads too long to go inline, so these are packed)
    t.is(q.enqueueMany([{ seq: 1, payload: 'x'.repeat(1100) }, { seq: 2, payload: 'y'.repeat(1100) }]), 2)
    // The first packet went into an empty pipe, so into the header's
    // front slot; the check below reads whichever slot holds it.
    const [block, at] = headSlot()
    t.is(u64(block, at), T_PACKED, `${what}: the first packet is packed`)
    const packet = u64(block, at + 8)
    const body = pool.read(packet, u64(packet, 8), 16)
    damage(body)
    pool.write(packet, body, 16)
    t.throws(take, { code: ErrorCodes.CORRUPT }, what)
    if (form === 'dequeue copy') {
      t.is(q.length, 1, `${what}: the damaged packet was taken`)
      t.deepEqual(q.dequeue(0, { copy: true }), { seq: 2, payload: 'y'.repeat(1100) }, `${what}: the next one intact`)
    }
    t.is(q.length, 0, `${what}: the batch was taken`)
    t.deepEqual(used(pool.stats()), baseline, `${what}: and freed`)
    t.is(q.enqueueMany([{ seq: 3 }]), 1)
    t.deepEqual(q.dequeueMany(8, { copy: true }), [{ seq: 3 }], `${what}: the pipe still works`)
  }
  t.notThrows(() => pool.check())
})

test.serial('a small packet goes inline, into the pipe byte ring; damage to its record or its bytes (by another process) makes each dequeue form throw ERR_SHM_CORRUPT, the packet is taken out and the pipe goes on working', (t) => {
  const { pool, q, baseline, queue, u64, headSlot } = pipeToDamage(t, 'inline-damage')
  const ring = readU64(pool, queue, RING_AT)
  const ringSize = readU64(pool, queue, RING_SIZE_AT)
  t.is(ringSize, 4096, 'the smallest ring, for a pipe of 16')
  // Where the record of the packet at the head is, within the ring's block.
  const headRecord = () => {
    const [block, at] = headSlot()
    t.is(u64(block, at), T_INLINE, 'the first packet is inline')
    return RING_START + (u64(block, at + 8) % ringSize)
  }
  // A record: u32 length, u32 stamp, then the encoding of {seq, payload}:
  // Tab, count 2, Str "seq", Int, Str "payload", Str of 32 x.
  const BODY = 8
  const INT = BODY + 5 + 8
  const damages: [string, (r: Buffer) => void][] = [
    ['a length past its record', (r) => r.writeUInt32LE(5000, 0)],
    ['a stamp of another packet', (r) => r.writeUInt32LE(r.readUInt32LE(4) + 1, 4)],
    ['a string that is not UTF-8', (r) => (r[r.indexOf('xxxx') + 1] = 0xff)],
    ['a count past the end', (r) => r.writeUInt32LE(0xffffffff, BODY + 1)],
    ['an unknown tag', (r) => (r[INT] = 99)],
    ['a reference smuggled in', (r) => (r[INT] = 13)],
    ['a value ending before its packet does', (r) => r.writeUInt32LE(1, BODY + 1)],
  ]
  const forms: [string, () => unknown, number][] = [
    // (what the form takes: one packet, or the whole batch)
    ['dequeue', () => q.dequeue(0), 1],
    ['dequeue copy', () => q.dequeue(0, { copy: true }), 1],
    ['dequeueMany', () => q.dequeueMany(8), 2],
    ['dequeueMany copy', () => q.dequeueMany(8, { copy: true }), 2],
  ]
  for (const [form, take, taken] of forms) {
    for (const [what, damage] of damages) {
      const label = `${form}, ${what}`
      t.is(q.enqueueMany([{ seq: 1, payload: 'x'.repeat(32) }, { seq: 2, payload: 'y'.repeat(32) }]), 2)
      const at = headRecord()
      const len = pool.read(ring, 4, at).readUInt32LE(0)
      const rec = pool.read(ring, 8 + len, at)
      damage(rec)
      pool.write(ring, rec, at)
      t.throws(take, { code: ErrorCodes.CORRUPT }, label)
      t.is(q.length, 2 - taken, `${label}: the damaged packet was taken`)
      const rest = q.dequeueMany(8, { copy: true })
      t.deepEqual(rest, taken === 1 ? [{ seq: 2, payload: 'y'.repeat(32) }] : [], `${label}: the rest intact`)
      t.deepEqual(used(pool.stats()), baseline, `${label}: the pool as it was`)
      t.is(q.enqueueMany([{ seq: 3 }]), 1)
      t.deepEqual(q.dequeueMany(8, { copy: true }), [{ seq: 3 }], `${label}: the pipe still works`)
      t.is(readU64(pool, queue, RING_READ_AT), readU64(pool, queue, RING_WRITE_AT), `${label}: the ring is all free`)
    }
  }
  t.notThrows(() => pool.check())
})

test.serial('dequeueMany that fails part way (a damaged string after a table) gives back the handles it had made: the pool is as it was', (t) => {
  const { pool, q, baseline, queue, u64 } = pipeToDamage(t, 'many-partial')
  const capacity = readU64(pool, queue, CAPACITY_AT)
  const slots = readU64(pool, queue, SLOTS_AT)
  // A small table (inline; built into a table as it is taken), then a
  // string too long to go inline (a string object in the pool).
  t.true(q.enqueue({ a: 1 }, 0))
  t.true(q.enqueue('s'.repeat(2000), 0))
  const head = readU64(pool, queue, HEAD_AT)
  const second = ((head + 1) % capacity) * 16
  t.is(u64(slots, second), 7, 'the second packet is a string object')
  const str = u64(slots, second + 8)
  // Its first byte of text is no longer UTF-8.
  pool.write(str, Buffer.from([0xff]), 16)
  t.throws(() => q.dequeueMany(8), { code: ErrorCodes.CORRUPT })
  t.is(q.length, 0, 'both packets were taken')
  t.deepEqual(used(pool.stats()), baseline, 'the table handle made before the failure was given back, and the string freed')
  t.notThrows(() => pool.check())
})

test.serial('dequeueMany({ copy: true }) of many small messages: the batch crosses as one shape-coded string even past 64 KiB of encodings, and reads back exactly', (t) => {
  const { region, pool } = fresh(t, 'copy-coded', 16 * MiB)
  const q = new ServerSide(region, 'p', 2048).start().pipe()
  const baseline = pool.stats()
  const many = Array.from({ length: 1000 }, (_, i) => ({ seq: i * 1000, payload: 'x'.repeat(32), odd: i % 2 === 1 ? 'yes' : null }))
  // ~80 KB as encodings, ~55 KB shape coded
  t.is(q.enqueueMany(many), many.length)
  type Internal = { native(): { findPipe(name: string): { fast(): object } | null } }
  const raw: unknown = binding.pipeDequeueManyCopy((region as unknown as Internal).native().findPipe('p')!.fast() as never, 2000, 0)
  t.is(typeof raw, 'string', 'one string, not a Buffer')
  t.true((raw as string).length < 64 * 1024)
  // And through the public form, the same values.
  t.is(q.enqueueMany(many), many.length)
  t.deepEqual(q.dequeueMany(2000, { copy: true }), many)
  t.deepEqual(pool.stats(), baseline)
})

test.serial('dequeueMany({ copy: true }) keeps no batch alive once its values are dropped, even when every batch brings new long keys', async (t) => {
  const { region, pool } = fresh(t, 'copy-retain', 16 * MiB)
  const q = new ServerSide(region, 'p', 16).start().pipe()
  const baseline = pool.stats()
  const { setFlagsFromString } = await import('node:v8')
  const { runInNewContext } = await import('node:vm')
  setFlagsFromString('--expose-gc')
  const gc = runInNewContext('gc') as () => void
  const round = (i: number) => {
    // A key of 40 characters, new each time (a slice of the batch string if
    // kept as read), and ~50 KB of batch around it.
    const key = `a-key-that-is-new-in-every-batch-${String(i).padStart(6, '0')}`
    t.is(q.enqueueMany([{ [key]: i, pad: 'y'.repeat(50_000) }, { [key]: i + 1, pad: 'z' }]), 2)
    const got = q.dequeueMany(16, { copy: true }) as Record<string, unknown>[]
    if (got[1]![key] !== i + 1) t.fail(`round ${i}`)
  }
  for (let i = 0; i < 50; i++) round(i)
  gc()
  const before = process.memoryUsage().heapUsed
  for (let i = 50; i < 450; i++) round(i)
  gc()
  const grown = process.memoryUsage().heapUsed - before
  // 400 retained batches would be about 20 MB.
  t.true(grown < 5 * MiB, `the heap grew by ${(grown / MiB).toFixed(1)} MiB over 400 batches`)
  t.deepEqual(pool.stats(), baseline)
})

/** One small plain table or list per kind of value (each stored packed), and two that are not packed. */
function packedCases(): unknown[] {
  return [
    { seq: 1, payload: 'x'.repeat(32) },
    { none: null, yes: true, int: -5, float: 0.1, neg: -0, nan: NaN, big: 2n ** 70n, str: 'héllo wörld, long enough 😀', s: 'ab' },
    { bytes: Buffer.from([0, 1, 255]), f64: new Float64Array([1.5, -2]), i8: new Int8Array([-1, 2]), u64: new BigUint64Array([2n ** 63n]) },
    { nested: { deeper: { list: [1, 'two', null, true, [3, { four: 4 }]] } }, empty: {}, none: [] },
    [1, 'a list', { inList: true }, []],
    {},
    [],
    // over the packing threshold (4 KiB of encoding): built as objects
    { text: 'y'.repeat(5000) },
    Array.from({ length: 300 }, (_, i) => ({ i })),
  ]
}

/** A handle's plain copy (released), or the value itself. */
function settle(v: unknown): unknown {
  return takeOut(v)
}

test.serial('small plain values sent by enqueue and enqueueMany come back the same through every dequeue form; the handle forms give handles, never packed packets', async (t) => {
  const { region, pool } = fresh(t, 'packed-kinds', 16 * MiB)
  const q = new ServerSide(region, 'p', 64).start().pipe()
  const baseline = pool.stats()
  const cases = packedCases()
  const isContainer = (v: unknown) => typeof v === 'object' && v !== null && !ArrayBuffer.isView(v)
  const checkHandles = (got: unknown[], what: string) => {
    t.is(got.length, cases.length, what)
    got.forEach((g, i) => {
      // a table or list comes out as a handle (a SharedTab / SharedArr Proxy) whose copy is the value
      t.true(isContainer(g), `${what} ${i}: a handle`)
      t.deepEqual(settle(g), cases[i], `${what} ${i}`)
    })
  }
  // enqueue (one at a time) → copy form
  for (const v of cases) t.true(q.enqueue(v, 0))
  t.deepEqual(q.dequeueMany(64, { copy: true }), cases, 'enqueue → dequeueMany copy')
  // enqueueMany → copy form
  t.is(q.enqueueMany(cases), cases.length)
  t.deepEqual(q.dequeueMany(64, { copy: true }), cases, 'enqueueMany → dequeueMany copy')
  // enqueueMany → dequeue (sync)
  t.is(q.enqueueMany(cases), cases.length)
  checkHandles(cases.map(() => q.dequeue(0)), 'dequeue')
  // enqueue → dequeueMany (handles)
  for (const v of cases) t.true(q.enqueue(v, 0))
  checkHandles(q.dequeueMany(64), 'dequeueMany')
  // enqueueMany → dequeueAsync
  t.is(q.enqueueMany(cases), cases.length)
  const viaAsync: unknown[] = []
  for (let i = 0; i < cases.length; i++) viaAsync.push(await q.dequeueAsync(GUARD_MS))
  checkHandles(viaAsync, 'dequeueAsync')
  // enqueueMany → for await
  t.is(q.enqueueMany(cases), cases.length)
  const viaIter: unknown[] = []
  for await (const v of q) {
    viaIter.push(v)
    if (viaIter.length === cases.length) break
  }
  checkHandles(viaIter, 'for await')
  t.is(q.length, 0)
  t.deepEqual(used(pool.stats()), used(baseline))
  pool.check()
})

for (const kind of ['plain', 'shared'] as const) {
  const what =
    kind === 'plain'
      ? 'holds nothing while it waits (the value is copied in once there is room), so gc() has nothing to give back'
      : 'has its handle given back by gc(), so the shared table is freed (the waiting enqueue itself holds nothing)'
  test.serial(`a process SIGKILLed while blocked enqueueing a small ${kind} value on a full pipe ${what}`, async (t) => {
    const { name, region, pool } = fresh(t, `killed-${kind}`)
    const q = new ServerSide(region, 'p', 1).start().pipe()
    t.true(q.enqueue('fills the pipe', 0))
    const baseline = pool.stats()
    const child = startPipeChild(['block-enqueue', name, 'p', kind])
    killOnTeardown(t, child)
    await child.waitForLine(/blocking/)
    // (a condition with a guard, not a timing assertion) until it sleeps waiting for room
    const off = queueHeader(region, 'p')
    const guard = performance.now() + GUARD_MS
    while (readWord(pool, off, SLEEPERS_FULL_AT) === 0) {
      if (performance.now() > guard) throw new Error('the child never waited for room')
      await sleep(1)
    }
    // shared: its handle (an enqueue takes its reference only once there is room)
    const held = kind === 'plain' ? 0 : 1
    t.like(region.holders().find((h) => h.pid === child.proc.pid), { alive: true, held })
    child.kill('SIGKILL')
    await child.done
    t.like(region.gc(), { sessions: 1, references: held, rawBlocks: 0, uncertain: 0 })
    t.deepEqual(used(pool.stats()), used(baseline))
    t.is(q.dequeue(0), 'fills the pipe')
    t.is(q.length, 0)
    pool.check()
  })
}

test.serial('enqueueMany puts in the prefix that fits, in batches of any length; dequeueMany takes at most max, in order', (t) => {
  const { region, pool } = fresh(t, 'many-prefix', 16 * MiB)
  const q = new ServerSide(region, 'p', 700).start().pipe()
  const baseline = pool.stats()
  const values = Array.from({ length: 1000 }, (_, i) => ({ i, s: `value number ${i}` }))
  t.is(q.enqueueMany(values), 700, 'only as many as there is room for')
  t.is(q.length, 700)
  t.is(q.enqueueMany(values), 0, 'full: nothing, without waiting')
  const first = q.dequeueMany(300, { copy: true })
  t.deepEqual(first, values.slice(0, 300))
  t.is(q.enqueueMany(values.slice(700)), 300)
  const handles = q.dequeueMany(500)
  t.is(handles.length, 500)
  t.deepEqual(handles.map((h: { toJS(): unknown }) => h.toJS()), values.slice(300, 800))
  for (const h of handles) h.release()
  t.deepEqual(q.dequeueMany(1000, { copy: true }), values.slice(800, 1000))
  // Every byte is back. (The 500 handles grew this process's ledger, which
  // shrank back into a new block when they went: compare what is used, not
  // the largest free block.)
  t.deepEqual(used(pool.stats()), used(baseline))
})

test.serial('the batch forms wait up to timeoutMs (never returning early) and refuse bad options with ERR_SHM_INVALID_ARG, changing nothing', (t) => {
  const { region, pool } = fresh(t, 'many-timeouts')
  const q = new ServerSide(region, 'p', 2).start().pipe()
  const baseline = pool.stats()
  let t0 = performance.now()
  t.deepEqual(q.dequeueMany(4, { copy: true, timeoutMs: 60 }), [])
  let took = ms(t0)
  t.true(took >= 59, `dequeueMany copy returned after ${fmt(took)}`)
  t0 = performance.now()
  t.deepEqual(q.dequeueMany(4, { timeoutMs: 60 }), [])
  took = ms(t0)
  t.true(took >= 59, `dequeueMany returned after ${fmt(took)}`)
  t.is(q.enqueueMany(['a', 'b']), 2)
  t0 = performance.now()
  t.is(q.enqueueMany(['c'], { timeoutMs: 60 }), 0)
  took = ms(t0)
  t.true(took >= 59, `enqueueMany returned after ${fmt(took)}`)
  t.log(`timeouts of 60 ms took ${fmt(took)} (enqueueMany)`)
  const stats = q.stats()
  const used = pool.stats()

  for (const bad of [-1, NaN, '5', null]) {
    t.throws(() => q.dequeueMany(4, { copy: true, timeoutMs: bad as number }), invalidArg, `dequeueMany timeoutMs ${String(bad)}`)
    t.throws(() => q.enqueueMany(['x'], { timeoutMs: bad as number }), invalidArg, `enqueueMany timeoutMs ${String(bad)}`)
  }
  for (const copy of ['yes', 1, null]) {
    t.throws(() => q.dequeueMany(4, { copy: copy as unknown as boolean }), invalidArg, `copy ${String(copy)}`)
  }
  for (const max of [-1, 1.5, '3', NaN]) t.throws(() => q.dequeueMany(max as number, { copy: true }), invalidArg, `max ${String(max)}`)
  t.throws(() => q.enqueueMany('abc' as unknown as string[]), invalidArg)
  t.throws(() => q.enqueueMany([1, () => 2]), { code: ErrorCodes.UNSUPPORTED })
  t.deepEqual(q.stats(), stats)
  t.deepEqual(pool.stats(), used)

  t.deepEqual(q.dequeueMany(10, { copy: true, timeoutMs: 0 }), ['a', 'b'])
  q.close()
  t.throws(() => q.dequeueMany(1, { copy: true }), closed)
  t.throws(() => q.enqueueMany(['x'], { timeoutMs: 10 }), closed)
  t.deepEqual(pool.stats(), baseline)
})

test.serial('a process SIGKILLed holding handles from dequeueMany has every one given back by gc(); the copy form left it holding nothing', async (t) => {
  const { name, region, pool } = fresh(t, 'many-killed')
  const q = new ServerSide(region, 'p', 64).start().pipe()
  const baseline = pool.stats()
  const values = Array.from({ length: 40 }, (_, i) => ({ i, text: `packet ${i} of a batch, `.repeat(3), list: [i, `item ${i} of a list`] }))
  t.is(q.enqueueMany(values), 40)
  const child = startPipeChild(['hoard-many', name, 'p', '4', '28'])
  killOnTeardown(t, child)
  const got = JSON.parse(await child.waitForLine(/"took":/)) as { copied: unknown[]; took: number; held: number }
  t.deepEqual(got.copied, values.slice(0, 4), 'the copy form gave plain values')
  t.is(got.took, 28)
  t.is(got.held, 28, 'one ledger entry per handle, none for the copies')
  t.like(
    region.holders().find((h) => h.pid === child.proc.pid),
    { alive: true, held: 28 },
  )
  t.true(pool.stats().bytesUsed > baseline.bytesUsed)

  child.kill('SIGKILL')
  await child.done
  t.like(region.gc(), { sessions: 1, references: 28, rawBlocks: 0, uncertain: 0 })
  t.is(region.holders().find((h) => h.pid === child.proc.pid), undefined)
  // What is still queued comes out whole; then every block is back.
  t.deepEqual(q.dequeueMany(64, { copy: true }), values.slice(32))
  t.deepEqual(used(pool.stats()), used(baseline))
  t.is(pool.check().blocksUsed, baseline.blocksUsed)
})

test.serial('a packet published without its futex word moving (its producer killed in between) is still found by a parked dequeueAsync', async (t) => {
  const { region, pool } = fresh(t, 'unsignalled')
  const q = new ServerSide(region, 'p', 4).start().pipe()
  const h = queueHeader(region, 'p')
  const waiting = q.dequeueAsync(20_000)
  // (a condition with a guard, not a timing assertion) until the waiter
  // thread sleeps on the word
  const guard = performance.now() + GUARD_MS
  while (readWord(pool, h, SLEEPERS_EMPTY_AT) === 0) {
    if (performance.now() > guard) throw new Error('the async dequeue never went to sleep')
    await sleep(1)
  }
  const seen = readWord(pool, h, NOT_EMPTY_AT)
  // What a producer killed between letting go of the lock and moving the
  // word on leaves: the packet (an Int, 42) in the front slot, published by
  // the tail, and the word as it was.
  writeU64(pool, h, FRONT_AT, 3n) // the slot's tag: Int
  writeU64(pool, h, FRONT_AT + 8, 42n)
  writeU64(pool, h, FRONT_POS_AT, 0n)
  writeU64(pool, h, TAIL_AT, 1n)
  // The waiter looks again after a second without a change, and finds it
  // (without that it would sleep until the 20 s deadline and resolve
  // undefined).
  t.is(await waiting, 42)
  t.is(readWord(pool, h, NOT_EMPTY_AT), seen, 'nothing moved the word')
  t.is(q.length, 0)
})
