/**
 * Regions across real OS processes: create, attach, wait, time out, abort,
 * replace, permissions, concurrent pool use, bad input, debug output and the
 * package's two module entry points.
 */
import { randomBytes } from 'node:crypto'
import { existsSync, statfsSync, statSync, symlinkSync, writeFileSync } from 'node:fs'

import test from 'ava'
import { AbortError, attach, attachSync, ErrorCodes, SHMMain, ShmError, type RegionInfo } from 'shmtools'

import { cleanup, lastJson, NAME_PREFIX, runChild, runNode, shmEntries, SHM_DIR, startChild, uniqueName } from './helpers.ts'

const KiB = 1024

const invalidArg = { code: ErrorCodes.INVALID_ARG, instanceOf: TypeError } as const

test.after.always('no region made by this file is left in /dev/shm', (t) => {
  t.deepEqual(shmEntries(NAME_PREFIX), [])
})

// 1 ---------------------------------------------------------------------------

test('a region created here and attached from another process shares its bytes both ways, and the child sees the creator in info()', async (t) => {
  const name = uniqueName('share')
  cleanup(t, name)
  const bytes = 256 * KiB
  const shm = new SHMMain(name, bytes).start()
  t.teardown(() => shm.close())
  const pool = shm.pool()

  // Child → parent: the child writes into a block the parent allocated.
  const toParent = pool.allocate(64)
  pool.write(toParent, Buffer.alloc(64))
  const text = `hello from a child of ${process.pid}`
  const w = await runChild(['write', name, String(toParent), text])
  t.is(w.code, 0, w.stderr)
  t.is(pool.read(toParent, Buffer.byteLength(text)).toString('utf8'), text)

  const info = lastJson<RegionInfo>(w)
  t.is(info.creatorPid, process.pid)
  t.is(info.magic, 'SHMTOOLS')
  t.is(info.layoutVersion, 8)
  t.is(info.state, 'ready')
  t.is(info.size, bytes)
  t.is(info.generation, 1)
  t.is(info.name, name)
  // Every boot-block field reads the same in both processes.
  t.deepEqual(info, shm.info())

  // Parent → child: the child reads what the parent wrote.
  const toChild = pool.allocate(100)
  const msg = 'written by the parent, read by the child'
  pool.write(toChild, Buffer.from(msg))
  const r = await runChild(['read', name, String(toChild), String(Buffer.byteLength(msg))])
  t.is(r.code, 0, r.stderr)
  t.is(lastJson<{ text: string }>(r).text, msg)
})

// 2 ---------------------------------------------------------------------------

test('attach() started before the region exists waits for it, then attaches once it is created', async (t) => {
  t.timeout(60_000)
  const name = uniqueName('wait')
  cleanup(t, name)
  const child = startChild(['attach-async', name, '60000', 'debug'])
  t.teardown(() => child.kill())

  const line = await child.waitForLine(/waiting for region/)
  t.regex(line, new RegExp(name))
  t.false(existsSync(`${SHM_DIR}/${name}`), 'the waiting child must not create the region')

  const shm = new SHMMain(name, 128 * KiB).start()
  t.teardown(() => shm.destroy())
  const r = await child.done
  t.is(r.code, 0, r.stderr)
  const info = lastJson<RegionInfo & { error?: string }>(r)
  t.is(info.error, undefined, JSON.stringify(info))
  t.is(info.state, 'ready')
  t.is(info.creatorPid, process.pid)
  t.is(info.generation, 1)
  t.is(info.size, 128 * KiB)
  t.regex(r.stderr, /attached to region/)
})

// 3 ---------------------------------------------------------------------------

test('attach() and attachSync() give up with ERR_SHM_TIMEOUT, and never before timeoutMs has passed', async (t) => {
  const name = uniqueName('timeout')
  cleanup(t, name)

  let t0 = performance.now()
  const e1 = await t.throwsAsync(attach(name, { timeoutMs: 200 }), { code: ErrorCodes.TIMEOUT, instanceOf: ShmError })
  const async = performance.now() - t0
  t.regex(e1.message, new RegExp(name))
  // Lower bound only (1 ms slack for float rounding of the deadline).
  t.true(async >= 199, `attach() timed out early, after ${async} ms`)
  t.log(`attach() gave up after ${async.toFixed(1)} ms`)

  t0 = performance.now()
  t.throws(() => attachSync(name, { timeoutMs: 200 }), { code: ErrorCodes.TIMEOUT, instanceOf: ShmError })
  const sync = performance.now() - t0
  t.true(sync >= 199, `attachSync() timed out early, after ${sync} ms`)
  t.log(`attachSync() gave up after ${sync.toFixed(1)} ms`)

  // timeoutMs 0: one look, then the timeout.
  t.throws(() => attachSync(name, { timeoutMs: 0 }), { code: ErrorCodes.TIMEOUT })
  t.deepEqual(shmEntries(name), [], 'waiting must not create anything')
})

// 4 ---------------------------------------------------------------------------

test('an AbortSignal stops a waiting attach() (no timeout) with AbortError / ABORT_ERR, carrying the reason', async (t) => {
  t.timeout(30_000) // hang guard: an abort that is not noticed would wait forever
  const name = uniqueName('abort')
  cleanup(t, name)
  const ac = new AbortController()
  const reason = new Error('stop waiting')
  setTimeout(() => ac.abort(reason), 50)
  const t0 = performance.now()
  const err = await t.throwsAsync(attach(name, { signal: ac.signal }), { name: 'AbortError', code: 'ABORT_ERR', instanceOf: AbortError })
  t.log(`aborted after ${(performance.now() - t0).toFixed(1)} ms`)
  t.is(err.cause, reason)
  t.deepEqual(shmEntries(name), [])
})

test('an already-aborted signal makes attach() and attachSync() reject at once for a missing region', async (t) => {
  t.timeout(30_000)
  const name = uniqueName('preabort')
  cleanup(t, name)
  await t.throwsAsync(attach(name, { signal: AbortSignal.abort() }), { name: 'AbortError', code: 'ABORT_ERR' })
  t.throws(() => attachSync(name, { signal: AbortSignal.abort() }), { name: 'AbortError', code: 'ABORT_ERR' })
})

test('a breakChecker returning true stops the wait with AbortError at the first true', async (t) => {
  t.timeout(30_000)
  const name = uniqueName('break')
  cleanup(t, name)
  let calls = 0
  await t.throwsAsync(attach(name, { breakChecker: () => ++calls >= 3, microSleepUs: 1000 }), { name: 'AbortError', code: 'ABORT_ERR' })
  t.is(calls, 3)

  let syncCalls = 0
  t.throws(() => attachSync(name, { breakChecker: () => ++syncCalls >= 3, microSleepUs: 1000 }), { name: 'AbortError', code: 'ABORT_ERR' })
  t.is(syncCalls, 3)
})

// Serial: other tests in this file call attachSync(), which blocks this
// process's event loop by design and would starve the timer being counted.
test.serial('a waiting attach() does not block the event loop: timers keep firing while it waits', async (t) => {
  const name = uniqueName('loop')
  cleanup(t, name)
  let ticksWhileWaiting = 0
  let waiting = true
  const iv = setInterval(() => {
    if (waiting) ticksWhileWaiting += 1
  }, 5)
  t.teardown(() => clearInterval(iv))
  const p = attach(name, { timeoutMs: 300 })
  await t.throwsAsync(p, { code: ErrorCodes.TIMEOUT })
  waiting = false
  t.log(`${ticksWhileWaiting} interval ticks while attach() waited`)
  t.true(ticksWhileWaiting > 0)
})

// 5 ---------------------------------------------------------------------------

test('a stale region is replaced by the next SHMMain (generation 2); mappings of the old one keep their data', async (t) => {
  const name = uniqueName('stale')
  cleanup(t, name)
  const a = new SHMMain(name, 128 * KiB).start()
  t.is(a.info().generation, 1)
  const old = attachSync(name, { timeoutMs: 10_000 })
  t.teardown(() => old.close())
  // (a raw block belongs to the attachment that allocated it: `old` keeps it)
  const off = old.pool().allocate(32)
  const data = Buffer.from('data of generation one')
  old.pool().write(off, data)
  a.close() // not destroyed: the region stays in /dev/shm, stale
  t.true(existsSync(`${SHM_DIR}/${name}`))

  const b = new SHMMain(name, 128 * KiB).start()
  t.teardown(() => b.close())
  t.is(b.info().generation, 2)
  t.is(b.info().creatorPid, process.pid)

  // The old mapping still reads its own data and generation.
  t.deepEqual(old.pool().read(off, data.length), data)
  t.is(old.info().generation, 1)

  // A fresh attach, here and from another process, sees the replacement.
  const fresh = attachSync(name, { timeoutMs: 10_000 })
  t.teardown(() => fresh.close())
  t.is(fresh.info().generation, 2)
  const r = await runChild(['attach-info', name, '30000'])
  t.is(r.code, 0, r.stderr)
  t.is(lastJson<RegionInfo>(r).generation, 2)
})

test('destroy() of a replaced SHMMain leaves the replacement in /dev/shm', (t) => {
  const name = uniqueName('olddestroy')
  cleanup(t, name)
  const a = new SHMMain(name, 64 * KiB).start()
  const b = new SHMMain(name, 64 * KiB).start()
  t.teardown(() => b.close())
  a.destroy()
  t.true(existsSync(`${SHM_DIR}/${name}`), 'the old SHMMain removed the new region')
  const r = attachSync(name, { timeoutMs: 10_000 })
  t.is(r.info().generation, 2)
  r.close()
  b.destroy()
  t.deepEqual(shmEntries(name), [])
})

// 6 ---------------------------------------------------------------------------

test('a region is created with mode 0600 even under umask 000, and with a requested mode exactly', async (t) => {
  const plain = uniqueName('mode600')
  const asked = uniqueName('mode640')
  const masked = uniqueName('mode640masked')
  cleanup(t, plain, asked, masked)

  const r1 = await runChild(['create', plain, String(64 * KiB), '000'])
  t.is(r1.code, 0, r1.stderr)
  t.is(statSync(`${SHM_DIR}/${plain}`).mode & 0o777, 0o600)

  const r2 = await runChild(['create', asked, String(64 * KiB), '000', '640'])
  t.is(r2.code, 0, r2.stderr)
  t.is(statSync(`${SHM_DIR}/${asked}`).mode & 0o777, 0o640)

  // A restrictive umask does not strip requested bits either.
  const r3 = await runChild(['create', masked, String(64 * KiB), '077', '640'])
  t.is(r3.code, 0, r3.stderr)
  t.is(statSync(`${SHM_DIR}/${masked}`).mode & 0o777, 0o640)

  // The creator closed without destroying: the regions are still usable.
  t.is(lastJson<RegionInfo>(r1).state, 'ready')
  const r = attachSync(plain, { timeoutMs: 10_000 })
  t.is(r.info().size, 64 * KiB)
  r.close()
})

// 7 ---------------------------------------------------------------------------

test('3 processes allocating and freeing at random at the same time never overlap blocks, and leave the pool exactly as they found it', async (t) => {
  t.timeout(100_000)
  const name = uniqueName('stress')
  cleanup(t, name)
  // Small enough that the three together run out of memory now and then.
  const shm = new SHMMain(name, 512 * KiB).start()
  t.teardown(() => shm.destroy())
  const pool = shm.pool()
  const baseline = pool.stats()
  const go = pool.allocate(16)
  pool.write(go, Buffer.alloc(16))
  const initial = pool.stats()

  const ops = 6000
  const children = [101, 202, 303].map((seed) => startChild(['stress', name, String(seed), String(ops), String(go)]))
  t.teardown(() => children.forEach((c) => c.kill()))
  // Start barrier: all three attached, then go together.
  await Promise.all(children.map((c) => c.waitForLine(/stress: ready/)))
  pool.write(go, Buffer.from([1]))
  const t0 = performance.now()
  const results = await Promise.all(children.map((c) => c.done))
  t.log(`3 × ${ops} ops in ${(performance.now() - t0).toFixed(0)} ms`)

  for (const r of results) {
    t.is(r.code, 0, `child failed: ${r.stderr}`)
    const s = lastJson<{ allocs: number; frees: number; ooms: number; checks: number }>(r)
    t.is(s.allocs, s.frees, 'the child freed everything it allocated')
    t.true(s.allocs > ops / 3)
    t.log(JSON.stringify(s))
  }
  const check = pool.check()
  t.is(check.blocksUsed, initial.blocksUsed)
  t.deepEqual(pool.stats(), initial)
  pool.free(go)
  t.deepEqual(pool.stats(), baseline)
})

// 8 ---------------------------------------------------------------------------

test('bad region names are refused with ERR_SHM_INVALID_ARG (a TypeError) everywhere, and nothing is made in /dev/shm', async (t) => {
  const p = uniqueName('badname')
  const bad: unknown[] = ['', `${p}/b`, `${p}\0b`, p + 'x'.repeat(256 - p.length), '.', '..', 42]
  for (const n of bad) {
    const what = JSON.stringify(n)
    t.throws(() => new SHMMain(n as string, 64 * KiB).start(), invalidArg, `SHMMain ${what}`)
    // A long timeout: a bad name must fail at once, not wait and time out.
    t.throws(() => attachSync(n as string, { timeoutMs: 5000 }), invalidArg, `attachSync ${what}`)
    await t.throwsAsync(attach(n as string, { timeoutMs: 5000 }), invalidArg, `attach ${what}`)
    t.throws(() => SHMMain.remove(n as string), invalidArg, `remove ${what}`)
  }
  t.deepEqual(shmEntries(p), [])

  // The limit is 255 bytes: exactly 255 works.
  const longest = p + 'y'.repeat(255 - p.length)
  cleanup(t, longest)
  const ok = new SHMMain(longest, 64 * KiB).start()
  t.is(ok.info().name, longest)
  ok.destroy()
  t.deepEqual(shmEntries(p), [])
})

test('bad sizes and modes are refused with ERR_SHM_INVALID_ARG and nothing is made in /dev/shm', (t) => {
  const name = uniqueName('badsize')
  cleanup(t, name)
  const sizes: unknown[] = [0, -1, 1.5, Number.NaN, '1000', 1000, 64 * KiB - 1, Infinity, 2 ** 40 + 4096, 2 ** 53]
  for (const s of sizes) {
    t.throws(() => new SHMMain(name, s as number).start(), invalidArg, `size ${String(s)}`)
  }
  for (const mode of [-1, 0o1000, 0o4600, 1.5, '600']) {
    t.throws(() => new SHMMain(name, 64 * KiB, { mode: mode as number }).start(), invalidArg, `mode ${String(mode)}`)
  }
  t.deepEqual(shmEntries(name), [])
  // The smallest size is accepted.
  const ok = new SHMMain(name, 64 * KiB).start()
  t.is(ok.info().size, 64 * KiB)
  ok.destroy()
  t.deepEqual(shmEntries(name), [])
})

test('a region larger than /dev/shm can hold fails with ERR_SHM_NO_SPACE and leaves nothing half-made', (t) => {
  const name = uniqueName('nospace')
  cleanup(t, name)
  const size = 2 ** 40
  const fsInfo = statfsSync(SHM_DIR)
  const free = fsInfo.bavail * fsInfo.bsize
  // Only with a size-limited tmpfs: an unlimited one would really try to reserve 1 TiB.
  if (fsInfo.blocks === 0 || free >= size) {
    t.log(`skipped: ${SHM_DIR} has ${free} bytes free of ${fsInfo.blocks * fsInfo.bsize}; cannot make a region that does not fit safely`)
    t.pass('skipped: /dev/shm is not size-limited below 1 TiB')
    return
  }
  t.throws(() => new SHMMain(name, size).start(), { code: ErrorCodes.NO_SPACE, instanceOf: ShmError })
  t.deepEqual(shmEntries(name), [])
})

test('a /dev/shm file of the right name that is not a region is ERR_SHM_INCOMPATIBLE at once (no waiting), and SHMMain replaces it', async (t) => {
  t.timeout(60_000) // hang guard: a wrong "wait" would sit for the 30 s timeout below
  const name = uniqueName('junk')
  const small = uniqueName('junksmall')
  cleanup(t, name, small)
  const junk = randomBytes(128 * KiB)
  junk[0] = 0x5a // a non-zero magic: zero would mean "being created"
  writeFileSync(`${SHM_DIR}/${name}`, junk, { mode: 0o600 })

  t.throws(() => attachSync(name, { timeoutMs: 30_000 }), { code: ErrorCodes.INCOMPATIBLE, instanceOf: ShmError })
  await t.throwsAsync(attach(name, { timeoutMs: 30_000 }), { code: ErrorCodes.INCOMPATIBLE, instanceOf: ShmError })

  writeFileSync(`${SHM_DIR}/${small}`, randomBytes(1000), { mode: 0o600 })
  t.throws(() => attachSync(small, { timeoutMs: 30_000 }), { code: ErrorCodes.INCOMPATIBLE })

  // The junk is untouched by the failed attaches …
  t.deepEqual(statSync(`${SHM_DIR}/${name}`).size, junk.length)
  // … and a new SHMMain replaces it with a real region (first generation: junk has none).
  const shm = new SHMMain(name, 64 * KiB).start()
  t.is(shm.info().generation, 1)
  const r = attachSync(name, { timeoutMs: 10_000 })
  t.is(r.info().magic, 'SHMTOOLS')
  r.close()
  shm.destroy()
})

test('a symbolic link in /dev/shm is refused (ERR_SHM_PERMISSION), never followed', (t) => {
  const target = uniqueName('linktarget')
  const link = uniqueName('link')
  cleanup(t, target, link)
  const shm = new SHMMain(target, 64 * KiB).start()
  t.teardown(() => shm.close())
  symlinkSync(`${SHM_DIR}/${target}`, `${SHM_DIR}/${link}`)
  t.throws(() => attachSync(link, { timeoutMs: 10_000 }), { code: ErrorCodes.PERMISSION })
})

test('start() twice is ERR_SHM_INVALID_STATE; after close() every use of the region or a Pool taken before is ERR_SHM_CLOSED', (t) => {
  const name = uniqueName('closed')
  cleanup(t, name)
  const notStarted = new SHMMain(name, 64 * KiB)
  t.throws(() => notStarted.info(), { code: ErrorCodes.INVALID_STATE })

  const shm = new SHMMain(name, 64 * KiB).start()
  t.throws(() => shm.start(), { code: ErrorCodes.INVALID_STATE, instanceOf: ShmError })
  t.true(existsSync(`${SHM_DIR}/${name}`), 'the failed second start must not remove the region')

  const region = attachSync(name, { timeoutMs: 10_000 })
  const regionPool = region.pool()
  const mainPool = shm.pool()
  const live = mainPool.allocate(32)

  region.close()
  t.true(region.closed)
  t.notThrows(() => region.close(), 'close() is idempotent')
  const closed = { code: ErrorCodes.CLOSED, instanceOf: ShmError } as const
  t.throws(() => region.info(), closed)
  t.throws(() => region.pool(), closed)
  t.throws(() => regionPool.stats(), closed)
  t.throws(() => regionPool.allocate(16), closed)
  t.throws(() => regionPool.read(live, 1), closed)

  shm.close()
  t.false(shm.started)
  t.throws(() => shm.info(), closed)
  t.throws(() => shm.pool(), closed)
  t.throws(() => mainPool.stats(), closed)
  t.throws(() => mainPool.allocate(16), closed)
  t.throws(() => mainPool.free(live), closed)
  t.throws(() => shm.start(), { code: ErrorCodes.INVALID_STATE })
  // close() leaves the region in /dev/shm for the others.
  t.true(existsSync(`${SHM_DIR}/${name}`))
})

test('negative, NaN or non-number timeoutMs is ERR_SHM_INVALID_ARG for attach() and attachSync()', async (t) => {
  const name = uniqueName('badtimeout')
  cleanup(t, name)
  for (const timeoutMs of [-1, Number.NaN, -Infinity, '100']) {
    t.throws(() => attachSync(name, { timeoutMs: timeoutMs as number }), invalidArg, `attachSync ${String(timeoutMs)}`)
    await t.throwsAsync(attach(name, { timeoutMs: timeoutMs as number }), invalidArg, `attach ${String(timeoutMs)}`)
  }
  t.throws(() => attachSync(name, { signal: 'nope' as unknown as AbortSignal }), invalidArg)
  t.throws(() => attachSync(name, { breakChecker: true as unknown as () => boolean }), invalidArg)
  t.throws(() => attachSync(name, { microSleepUs: 0 }), invalidArg)
  t.deepEqual(shmEntries(name), [])
})

// 9 ---------------------------------------------------------------------------

test('pool: a double free and bogus offsets are ERR_SHM_INVALID_ARG and leave the pool consistent', (t) => {
  const name = uniqueName('poolfree')
  cleanup(t, name)
  const shm = new SHMMain(name, 256 * KiB).start()
  t.teardown(() => shm.destroy())
  const pool = shm.pool()
  const baseline = pool.stats()

  const before = pool.allocate(100)
  const a = pool.allocate(100)
  const after = pool.allocate(100)
  pool.free(a) // neighbours in use: a is a free block of its own
  t.throws(() => pool.free(a), invalidArg, 'double free')
  t.notThrows(() => pool.check())

  const info = shm.info()
  const bogus = [0, 8, 16, before + 16, before + 8, info.pipeDirOffset + 16, info.size, info.size + 16, 2 ** 52]
  for (const off of bogus) {
    t.throws(() => pool.free(off), invalidArg, `free(${off})`)
    t.throws(() => pool.capacity(off), invalidArg, `capacity(${off})`)
  }
  for (const off of [-16, 1.5, Number.NaN]) t.throws(() => pool.free(off), invalidArg, `free(${off})`)
  t.notThrows(() => pool.check())

  pool.free(before)
  pool.free(after)
  t.notThrows(() => pool.check())
  t.deepEqual(pool.stats(), baseline)
})

test('pool: asking for more than it holds is ERR_SHM_OUT_OF_MEMORY; after freeing everything the figures return to baseline', (t) => {
  const name = uniqueName('pooloom')
  cleanup(t, name)
  const shm = new SHMMain(name, 256 * KiB).start()
  t.teardown(() => shm.destroy())
  const pool = shm.pool()
  const baseline = pool.stats()
  t.true(baseline.largestFree > 0)

  t.throws(() => pool.allocate(baseline.bytesTotal), { code: ErrorCodes.OUT_OF_MEMORY, instanceOf: ShmError })
  t.throws(() => pool.allocate(baseline.largestFree + 1), { code: ErrorCodes.OUT_OF_MEMORY })
  // The largest free figure is exact: that much can be had.
  const big = pool.allocate(baseline.largestFree)
  t.throws(() => pool.allocate(4096), { code: ErrorCodes.OUT_OF_MEMORY })
  pool.free(big)
  t.deepEqual(pool.stats(), baseline)

  // Fill it with blocks until it refuses, then free them all.
  const blocks: number[] = []
  for (;;) {
    try {
      blocks.push(pool.allocate(3000))
    } catch (e) {
      t.is((e as { code?: string }).code, ErrorCodes.OUT_OF_MEMORY)
      break
    }
  }
  t.true(blocks.length > 50, `only ${blocks.length} blocks of 3000 bytes fit in 256 KiB`)
  t.is(pool.stats().blocksUsed, baseline.blocksUsed + blocks.length)
  t.notThrows(() => pool.check())
  for (const b of blocks) pool.free(b)
  t.notThrows(() => pool.check())
  t.deepEqual(pool.stats(), baseline)
})

test('pool: writes and reads past a block\'s capacity are ERR_SHM_INVALID_ARG; every offset is 16-byte aligned', (t) => {
  const name = uniqueName('poolcap')
  cleanup(t, name)
  const shm = new SHMMain(name, 256 * KiB).start()
  t.teardown(() => shm.destroy())
  const pool = shm.pool()

  const offsets: number[] = []
  for (let n = 1; n <= 600; n += 7) {
    const off = pool.allocate(n)
    offsets.push(off)
    t.is(off % 16, 0, `allocate(${n}) returned ${off}`)
    t.true(pool.capacity(off) >= n)
  }
  const off = offsets[10]!
  const cap = pool.capacity(off)
  t.notThrows(() => pool.write(off, Buffer.alloc(cap, 7)))
  t.throws(() => pool.write(off, Buffer.alloc(cap + 1)), invalidArg)
  t.throws(() => pool.write(off, Buffer.alloc(1), cap), invalidArg)
  t.throws(() => pool.write(off, Buffer.alloc(2), cap - 1), invalidArg)
  t.throws(() => pool.read(off, cap + 1), invalidArg)
  t.throws(() => pool.read(off, 1, cap), invalidArg)
  t.throws(() => pool.write(off, 'text' as unknown as Uint8Array), invalidArg)
  // The neighbour was not touched by the refused writes.
  const next = offsets[11]!
  pool.write(next, Buffer.alloc(pool.capacity(next), 9))
  t.throws(() => pool.write(off, Buffer.alloc(cap + 16, 1)), invalidArg)
  t.deepEqual(pool.read(next, pool.capacity(next)), Buffer.alloc(pool.capacity(next), 9))
  t.deepEqual(pool.read(off, cap), Buffer.alloc(cap, 7))

  for (const o of offsets) pool.free(o)
  t.notThrows(() => pool.check())
})

// A freed block's header survives inside the free block it merged into, or
// inside a block handed out again: free() must not take it for allocated.
test('a double free after the block merged with a free neighbour is ERR_SHM_INVALID_ARG', (t) => {
  const name = uniqueName('dfmerge')
  cleanup(t, name)
  const shm = new SHMMain(name, 256 * KiB).start()
  t.teardown(() => shm.destroy())
  const pool = shm.pool()
  const x = pool.allocate(96)
  const a = pool.allocate(96)
  const guard = pool.allocate(96)
  pool.free(x)
  pool.free(a) // merges into x's free block; a's old header stays behind, marked "in use"
  t.throws(() => pool.free(a), invalidArg, 'double free')
  t.notThrows(() => pool.check())
  pool.free(guard)
})

test('a double free of a block merged and handed out again is refused without corrupting the pool', (t) => {
  const name = uniqueName('dfreuse')
  cleanup(t, name)
  const shm = new SHMMain(name, 256 * KiB).start()
  t.teardown(() => shm.destroy())
  const pool = shm.pool()
  const baseline = pool.stats()
  const x = pool.allocate(96) // 112-byte blocks
  const a = pool.allocate(96)
  const n = pool.allocate(96)
  const guard = pool.allocate(96)
  pool.free(x)
  pool.free(a) // x+a: one free 224-byte block; a's stale "in use" header inside it
  const y = pool.allocate(208) // takes exactly that 224-byte block
  t.is(y, x)
  pool.free(n) // a free block right after a's stale extent
  // The second free must be refused …
  t.throws(() => pool.free(a), undefined, 'double free')
  // … and refused without touching the pool.
  t.notThrows(() => pool.check(), 'the pool must stay consistent after a refused free')
  t.notThrows(() => {
    pool.free(y)
    pool.free(guard)
  })
  t.deepEqual(pool.stats(), baseline)
})

// 10 --------------------------------------------------------------------------

test('debug: true makes SHMMain log its steps to stderr', async (t) => {
  const name = uniqueName('debug')
  cleanup(t, name)
  const r = await runChild(['debug-create', name])
  t.is(r.code, 0, r.stderr)
  t.regex(r.stderr, new RegExp(`creating region '${name}' of 65536 bytes, mode 600`))
  t.regex(r.stderr, new RegExp(`region '${name}' ready \\(generation 1\\)`))
  t.regex(r.stderr, new RegExp(`destroyed region '${name}'`))
  t.is(r.stdout, '')
  t.deepEqual(shmEntries(name), [])
})

test('NODE_DEBUG=shmtools logs the steps without the debug option; without it nothing is logged', async (t) => {
  const quiet = uniqueName('quiet')
  const loud = uniqueName('nodedebug')
  cleanup(t, quiet, loud)
  const env = { ...process.env }
  delete env.NODE_DEBUG

  const withDebug = await runChild(['plain-create', loud], { env: { ...env, NODE_DEBUG: 'shmtools' } })
  t.is(withDebug.code, 0, withDebug.stderr)
  t.regex(withDebug.stderr, new RegExp(`SHMTOOLS \\d+: creating region '${loud}'`))
  t.regex(withDebug.stderr, new RegExp(`region '${loud}' ready`))
  t.regex(withDebug.stderr, new RegExp(`destroyed region '${loud}'`))

  const without = await runChild(['plain-create', quiet], { env })
  t.is(without.code, 0, without.stderr)
  t.notRegex(without.stderr, /shmtools/i)
  t.false(without.stderr.includes(quiet))
  t.deepEqual(shmEntries(quiet), [])
  t.deepEqual(shmEntries(loud), [])
})

// 11 --------------------------------------------------------------------------

test('the package loads with require() and with import, and both give the same classes', async (t) => {
  const cjs = await runNode([
    '-e',
    "const m = require('shmtools'); console.log(JSON.stringify([typeof m.SHMMain, typeof m.attach, typeof m.attachSync, typeof m.ErrorCodes, m.ErrorCodes.TIMEOUT]))",
  ])
  t.is(cjs.code, 0, cjs.stderr)
  t.deepEqual(lastJson(cjs), ['function', 'function', 'function', 'object', 'ERR_SHM_TIMEOUT'])

  const esm = await runNode([
    '--input-type=module',
    '-e',
    [
      "import { SHMMain, attach, attachSync, AbortError } from 'shmtools'",
      "import shmtools from 'shmtools'",
      "import { createRequire } from 'node:module'",
      "const viaRequire = createRequire(import.meta.url)('shmtools')",
      'console.log(JSON.stringify([typeof SHMMain, typeof attach, typeof attachSync, typeof AbortError, viaRequire.SHMMain === SHMMain, shmtools.SHMMain === SHMMain]))',
    ].join('\n'),
  ])
  t.is(esm.code, 0, esm.stderr)
  t.deepEqual(lastJson(esm), ['function', 'function', 'function', 'function', true, true])
})
