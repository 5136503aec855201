/**
 * Several processes storing a large value at once: each of W child processes
 * (warmed up: three stores and releases first) stores one table of ROWS rows
 * `{id, name, score}` with Shared(pool, …) when the parent says go. Prints the
 * time from go until the parent has heard from every child that its table is
 * stored (and until every child has released it and exited),
 * each child's time for its Shared() call, and the CPU time each spent in it
 * (process.cpuUsage), with their sum: with a lock taken per object, the
 * children queue on the pool lock and the time grows far past the sum.
 *
 *   node --import @oxc-node/core/register bench/store-contention.ts [W] [ROWS]
 *
 * W defaults to 20 (the fan-in scenario's worker count), ROWS to 10 000.
 */
import { fork } from 'node:child_process'
import { fileURLToPath } from 'node:url'

import { attachSync, SHMMain, Shared } from 'shmtools'

type Row = { id: number; name: string; score: number }

function makeRows(n: number): Row[] {
  return Array.from({ length: n }, (_, i) => ({ id: i, name: `row ${i}`, score: i * 0.5 }))
}

const [, , first, second, third] = process.argv

if (first === 'child') {
  const pool = attachSync(second!).pool()
  const rows = makeRows(Number(third))
  for (let k = 0; k < 3; k++) Shared(pool, { w: 1, rows }).release()
  process.send!('ready')
  process.on('message', () => {
    const c0 = process.cpuUsage()
    const t0 = performance.now()
    const x = Shared(pool, { w: 1, rows })
    const t = performance.now() - t0
    const c = process.cpuUsage(c0)
    x.release()
    process.send!({ t, cpu: (c.user + c.system) / 1000 }, () => process.exit(0))
  })
} else {
  const W = Number(first ?? 20)
  const ROWS = Number(second ?? 10_000)
  const name = `shmtools-store-contention-${process.pid}`
  const mem = new SHMMain(name, Math.max(64 << 20, W * ROWS * 1000)).start()
  const times: number[] = []
  const cpus: number[] = []
  let ready = 0
  let exited = 0
  let t0 = 0
  let stored = 0
  const kids = Array.from({ length: W }, () => fork(fileURLToPath(import.meta.url), ['child', name, String(ROWS)]))
  for (const k of kids) {
    k.on('message', (m: 'ready' | { t: number; cpu: number }) => {
      if (m === 'ready') {
        if (++ready === W) {
          t0 = performance.now()
          for (const c of kids) c.send('go')
        }
      } else {
        times.push(m.t)
        cpus.push(m.cpu)
        if (times.length === W) stored = performance.now() - t0
      }
    })
    k.on('exit', (code) => {
      if (code !== 0) process.exitCode = 1
      if (++exited < W) return
      const wall = performance.now() - t0
      const f = (xs: number[]) => xs.map((x) => x.toFixed(1)).join(' ')
      console.log(
        `${W} processes × ${ROWS} rows: every table stored ${stored.toFixed(1)} ms after go, ` +
          `every child done (released, exited) ${wall.toFixed(1)} ms`,
      )
      console.log(`  Shared() per process, ms: ${f(times)}`)
      console.log(`  CPU in Shared() per process, ms: ${f(cpus)}; sum ${cpus.reduce((a, b) => a + b, 0).toFixed(1)}`)
      mem.region().destroy()
    })
  }
}
