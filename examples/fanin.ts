/**
 * Fan-in, after the System V example in seeds/004: a parent starts 20 worker
 * processes; each builds a large result table (10,000 rows) in the shared
 * region and hands it back through one pipe. The parent receives each table
 * by reference — nothing is serialised or copied on the way.
 *
 *   node --import @oxc-node/core/register examples/fanin.ts [workers] [rows]
 */
import { spawn } from 'node:child_process'
import { fileURLToPath } from 'node:url'

import { ClientSide, SHMMain, ServerSide, Shared, type SharedTab } from 'shmtools'

const args = process.argv.slice(2)

if (args[0] === 'worker') {
  const [, region, id, rows] = args
  const client = new ClientSide(region, 'results', { timeoutMs: 30_000 })
  client.start()
  const result = Array.from({ length: Number(rows) }, (_, i) => ({ worker: Number(id), row: i, value: i * 0.5 }))
  using table = Shared(client.pool(), { worker: Number(id), rows: result })
  client.pipe().enq(table) // the pipe takes a reference; ours goes at the end of the block
  client.close()
} else {
  const workers = Number(args[0] ?? 20)
  const rows = Number(args[1] ?? 10_000)
  if (!(Number.isInteger(workers) && workers > 0 && workers <= 100) || !(Number.isInteger(rows) && rows > 0)) {
    throw new Error('usage: fanin.ts [workers 1..100] [rows]')
  }
  const region = `fanin_demo_${process.pid}`
  const mem = new SHMMain(region, 256 << 20).start()
  const results = new ServerSide(region, 'results', workers).start().pipe()
  const started = performance.now()
  const script = fileURLToPath(import.meta.url)
  const exits = Array.from({ length: workers }, (_, id) => {
    const child = spawn(process.execPath, [...process.execArgv, script, 'worker', region, String(id), String(rows)], {
      stdio: 'inherit',
    })
    return new Promise<number>((resolve) => child.on('close', (c) => resolve(c ?? 1)))
  })
  let total = 0
  for (let i = 0; i < workers; i++) {
    const t = (await results.dequeueAsync(60_000)) as SharedTab | undefined
    if (t === undefined) throw new Error('a worker did not report back in time')
    using list = t.rows
    using last = list.at(-1)
    total += list.length
    console.log(`got worker ${t.worker}'s table: ${list.length} rows, last row ${JSON.stringify(last.toJS())}`)
    t.release() // list and last go at the end of the block (using): then the table is freed
  }
  const codes = await Promise.all(exits)
  const ms = performance.now() - started
  console.log(`${workers} workers returned ${total} rows in ${ms.toFixed(0)} ms; pool back to ${mem.pool().stats().blocksUsed} blocks`)
  mem.destroy()
  process.exitCode = codes.every((c) => c === 0) && total === workers * rows ? 0 : 1
}
