/**
 * How long one `deq()` of a large plain-copy Buffer takes, round after
 * round, in one process (no other core involved): ROUNDS rounds (default 4)
 * of 10 messages of MIB MiB (default 16), each enqueued with `enq(Buffer)`
 * and taken back with `deq()`, which copies it out into a new Buffer. Prints
 * the milliseconds of every `deq()`. GC=1 runs `gc()` after every message
 * (needs `node --expose-gc`). The region is removed at the end.
 *
 *   node --import @oxc-node/core/register bench/large-deq.ts
 *   MIB=1 ROUNDS=8 node --import @oxc-node/core/register bench/large-deq.ts
 */
import { SHMMain, ServerSide } from 'shmtools'

const mib = Number(process.env.MIB ?? 16)
const rounds = Number(process.env.ROUNDS ?? 4)
const gc = process.env.GC === '1' ? (globalThis as { gc?: () => void }).gc : undefined
if (process.env.GC === '1' && gc === undefined) throw new Error('GC=1 needs node --expose-gc')

const name = `shmtools-large-deq-${process.pid}`
const mem = new SHMMain(name, (4 * mib + 64) << 20, { debug: false }).start()
const server = new ServerSide(name, 'p', 4, { debug: false })
server.start()
const pipe = server.pipe()
const sent = Buffer.alloc(mib << 20, 7)
try {
  for (let round = 0; round < rounds; round++) {
    const ms: string[] = []
    for (let i = 0; i < 10; i++) {
      pipe.enq(sent)
      const t0 = process.hrtime.bigint()
      const got = pipe.deq() as Buffer
      ms.push((Number(process.hrtime.bigint() - t0) / 1e6).toFixed(1))
      if (got.length !== sent.length || got[got.length - 1] !== 7) throw new Error('a wrong Buffer came back')
      gc?.()
    }
    console.log(`round ${round}: deq() ms ${ms.join(' ')}`)
  }
} finally {
  server.close()
  mem.destroy()
}
