/**
 * What the fan-in table costs one process: `Shared(pool, { worker, rows })`
 * of ROWS rows `{id, name, score}` (the fan-in scenario's value) in this
 * fresh process (the first store, which takes the cold path; main-thread
 * time and CPU time of all threads), then warm: the store alone, and the
 * release that frees the whole tree (what the fan-in parent pays per table).
 * Also the pool bytes and blocks one table takes, and this process's first
 * toJS() of the table (through V8's format, as a young process reads a large
 * value; READER=js makes it take the JS reader, as a warm process would).
 *
 *   node --import @oxc-node/core/register bench/store-release.ts [ROWS]
 *   READER=js node --import @oxc-node/core/register bench/store-release.ts
 */
import { SHMMain, Shared, type SharedTab } from 'shmtools'

import { coldReadCount, setColdReadBytes } from '../dist/coldwire.js'

const ROWS = Number(process.argv[2] ?? 10_000)
const name = `shmtools-store-release-${process.pid}`
const mem = new SHMMain(name, 256 << 20).start()
try {
  const pool = mem.pool()
  const rows = Array.from({ length: ROWS }, (_, i) => ({ id: i, name: `row ${i}`, score: i * 0.5 }))
  const s0 = pool.stats()
  const c0 = process.cpuUsage()
  const t0 = performance.now()
  const first = Shared(pool, { worker: 1, rows })
  const t1 = performance.now()
  const c1 = process.cpuUsage(c0)
  const s1 = pool.stats()
  const bytes = s1.bytesUsed - s0.bytesUsed
  console.log(
    `first store: ${(t1 - t0).toFixed(2)} ms on the main thread, ${((c1.user + c1.system) / 1000).toFixed(2)} ms CPU; ` +
      `${bytes} pool bytes (${(bytes / ROWS).toFixed(0)} a row) in ${s1.blocksUsed - s0.blocksUsed} blocks`,
  )
  if (process.env.READER === 'js') setColdReadBytes(0)
  const r0 = performance.now()
  const copy = (first as SharedTab).toJS() as { rows: unknown[] }
  const r1 = performance.now()
  if (copy.rows.length !== ROWS) throw new Error('toJS() lost rows')
  console.log(`first toJS(): ${(r1 - r0).toFixed(2)} ms, ${coldReadCount() === 1 ? "through V8's format" : 'by the JS reader'}`)
  first.release()
  if (pool.stats().blocksUsed !== s0.blocksUsed) throw new Error('the release left blocks behind')
  let store = 0
  let release = 0
  const ROUNDS = 40
  for (let k = 0; k < 20 + ROUNDS; k++) {
    const a = performance.now()
    const t = Shared(pool, { worker: 1, rows })
    const b = performance.now()
    t.release()
    const c = performance.now()
    if (k >= 20) {
      store += b - a
      release += c - b
    }
  }
  console.log(`warm, mean of ${ROUNDS} after 20: store ${(store / ROUNDS).toFixed(2)} ms, release ${(release / ROUNDS).toFixed(2)} ms`)
} finally {
  SHMMain.remove(name)
}
