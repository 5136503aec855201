/**
 * Large typed arrays by reference between two processes, each step timed:
 * a child process copies one ready Float64Array into the region
 * (`Shared(pool, array)`), tries to enqueue the handle (and, if the pipe is
 * full, waits with `enq`), and releases its own; the parent takes each one
 * with a blocking `deq()`, checks two elements through `view()` and
 * releases it (with ASYNC=1, `await dequeueAsync()`). Prints each side's time a message (the parent's after the
 * first) and p50 / p90 / mean of every step. Pipe capacity 4 unless CAP
 * says otherwise, as in `npm run bench` scenario 3.
 *
 *   node --import @oxc-node/core/register bench/large-ref.ts
 *   ELEMS=16 N=20000 node --import @oxc-node/core/register bench/large-ref.ts
 *   WRAP="strace -f -T -e trace=futex -o /tmp/st.txt" node --import @oxc-node/core/register bench/large-ref.ts
 *
 * ELEMS: elements per array (default 131072, 1 MiB); N: messages (default
 * 1000); CAP: the pipe's capacity (default 4); ASYNC=1: the parent takes
 * each with `await dequeueAsync()`; WRAP: a command line the
 * child runs under (strace, perf record).
 */
import { spawn } from 'node:child_process'
import { fileURLToPath } from 'node:url'

import { ClientSide, SHMMain, ServerSide, Shared, type SharedTyped } from 'shmtools'

const n = Number(process.env.ELEMS ?? 131072)
const N = Number(process.env.N ?? 1000)
const asyncDeq = process.env.ASYNC === '1'
const me = fileURLToPath(import.meta.url)

function percentile(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor(sorted.length * p))]
}

/** Microseconds since `t` (a process.hrtime.bigint()). */
function since(t: bigint): number {
  return Number(process.hrtime.bigint() - t) / 1e3
}

/** "name p50 … p90 … mean …" of microsecond samples. */
function steps(named: Record<string, number[]>): string {
  return Object.entries(named)
    .map(([name, xs]) => {
      const s = [...xs].sort((x, y) => x - y)
      const mean = s.reduce((x, y) => x + y, 0) / Math.max(1, s.length)
      return `${name} p50 ${percentile(s, 0.5).toFixed(1)} p90 ${percentile(s, 0.9).toFixed(1)} mean ${mean.toFixed(1)}`
    })
    .join('; ')
}

async function child(name: string): Promise<void> {
  const side = new ClientSide(name, 'p', { debug: false }).start()
  const pipe = side.pipe()
  const pool = side.pool()
  const src = new Float64Array(n).fill(7)
  const t = { share: [] as number[], 'enqueue try': [] as number[], release: [] as number[] }
  const t0 = process.hrtime.bigint()
  for (let i = 0; i < N; i++) {
    src[0] = i
    const a = process.hrtime.bigint()
    const h = Shared(pool, src) as SharedTyped<Float64Array>
    t.share.push(since(a))
    const b = process.hrtime.bigint()
    const ok = pipe.enqueue(h, 0)
    t['enqueue try'].push(since(b))
    if (!ok) pipe.enq(h)
    const c = process.hrtime.bigint()
    h.release()
    t.release.push(since(c))
  }
  console.log(`child: ${(since(t0) / N).toFixed(1)} us a message; ${steps(t)} (us)`)
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
    const t = { deq: [] as number[], view: [] as number[], release: [] as number[] }
    for (let got = 0; got < N; got++) {
      const a = process.hrtime.bigint()
      const g = (asyncDeq ? await pipe.dequeueAsync() : pipe.deq()) as SharedTyped<Float64Array>
      if (got === 0) first = process.hrtime.bigint()
      else t.deq.push(since(a))
      const b = process.hrtime.bigint()
      const v = g.view()
      if (got > 0) t.view.push(since(b))
      if (v[0] !== got || v[n - 1] !== 7) throw new Error(`message ${got}: got ${v[0]} / ${v[n - 1]}`)
      const c = process.hrtime.bigint()
      g.release()
      if (got > 0) t.release.push(since(c))
    }
    const us = since(first) / Math.max(1, N - 1)
    console.log(`parent: ${us.toFixed(1)} us a message after the first, ${((n * 8) / us / 1e3).toFixed(2)} GB/s; ${steps(t)} (us)`)
    await exited
  } finally {
    server.close()
    mem.destroy()
  }
}

if (process.argv[2] === 'child') await child(process.argv[3])
else await parent()
