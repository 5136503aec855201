/**
 * Large typed arrays by reference between two processes, the producer's
 * steps timed: a child process copies one ready Float64Array into the
 * region (`Shared(pool, array)`), enqueues the handle and releases its own;
 * the parent takes each one with a blocking `deq()`, checks two elements
 * through `view()` and releases it. Prints, per message, the parent's time
 * (after the first), the child's time and the child's enqueue tries (p50 /
 * p90). Pipe capacity 4 unless CAP says otherwise, as in `npm run bench`
 * scenario 3.
 *
 *   node --import @oxc-node/core/register bench/large-ref.ts
 *   ELEMS=16 N=20000 node --import @oxc-node/core/register bench/large-ref.ts
 *   WRAP="strace -f -T -e trace=futex -o /tmp/st.txt" node --import @oxc-node/core/register bench/large-ref.ts
 *
 * ELEMS: elements per array (default 131072, 1 MiB); N: messages (default
 * 1000); CAP: the pipe's capacity (default 4); WRAP: a command line the
 * child runs under (strace, perf record).
 */
import { spawn } from 'node:child_process'
import { fileURLToPath } from 'node:url'

import { ClientSide, SHMMain, ServerSide, Shared, type SharedTyped } from 'shmtools'

const n = Number(process.env.ELEMS ?? 131072)
const N = Number(process.env.N ?? 1000)
const me = fileURLToPath(import.meta.url)

function percentile(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor(sorted.length * p))]
}

async function child(name: string): Promise<void> {
  const side = new ClientSide(name, 'p', { debug: false }).start()
  const pipe = side.pipe()
  const pool = side.pool()
  const src = new Float64Array(n).fill(7)
  const tries: number[] = []
  const t0 = process.hrtime.bigint()
  for (let i = 0; i < N; i++) {
    src[0] = i
    const h = Shared(pool, src) as SharedTyped<Float64Array>
    const b = process.hrtime.bigint()
    const ok = pipe.enqueue(h, 0)
    tries.push(Number(process.hrtime.bigint() - b) / 1e3)
    if (!ok) pipe.enq(h)
    h.release()
  }
  const us = Number(process.hrtime.bigint() - t0) / 1e3 / N
  tries.sort((x, y) => x - y)
  console.log(`child: ${us.toFixed(1)} us a message; enqueue try p50 ${percentile(tries, 0.5).toFixed(1)} p90 ${percentile(tries, 0.9).toFixed(1)} us`)
  side.close()
}

async function parent(): Promise<void> {
  const name = `shmtools-large-ref-${process.pid}`
  const mem = new SHMMain(name, Math.max(64 << 20, n * 8 * 16), { debug: false }).start()
  const server = new ServerSide(name, 'p', Number(process.env.CAP ?? 4), { debug: false })
  server.start()
  const pipe = server.pipe()
  try {
    const wrap = process.env.WRAP ? process.env.WRAP.split(' ') : []
    const argv = [...process.execArgv, me, 'child', name]
    const c = wrap.length ? spawn(wrap[0], [...wrap.slice(1), process.execPath, ...argv], { stdio: 'inherit' }) : spawn(process.execPath, argv, { stdio: 'inherit' })
    const exited = new Promise((r) => c.on('exit', r))
    let first = 0n
    for (let got = 0; got < N; got++) {
      const g = pipe.deq() as SharedTyped<Float64Array>
      if (got === 0) first = process.hrtime.bigint()
      const v = g.view()
      if (v[0] !== got || v[n - 1] !== 7) throw new Error(`message ${got}: got ${v[0]} / ${v[n - 1]}`)
      g.release()
    }
    const us = Number(process.hrtime.bigint() - first) / 1e3 / Math.max(1, N - 1)
    console.log(`parent: ${us.toFixed(1)} us a message after the first, ${((n * 8) / us / 1e3).toFixed(2)} GB/s`)
    await exited
  } finally {
    server.close()
    mem.destroy()
  }
}

if (process.argv[2] === 'child') await child(process.argv[3])
else await parent()
