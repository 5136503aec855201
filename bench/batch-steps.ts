/**
 * Where the time of the batch forms goes, per message, in one process (no
 * waiting, no other core): make the objects, encode them (JS), build and
 * enqueue them (one native call per batch), dequeue + copy out + free (one
 * native call per batch), decode (JS). Messages {seq, payload: LEN chars}
 * (LEN 32 by default), with ROWS > 0 also `rows`: a list of ROWS small
 * tables {i, s: 'row'}; batches of B (default 256), ROUNDS batches after 200
 * of warm-up. The pool must be back where it started at the end.
 *
 *   node --import @oxc-node/core/register bench/batch-steps.ts
 *   B=64 ROUNDS=8000 node --import @oxc-node/core/register bench/batch-steps.ts
 *   LEN=6000 B=16 node --import @oxc-node/core/register bench/batch-steps.ts
 *
 * HANDLES=1 takes the batch as handles instead (dequeueMany without copy:
 * one handle per message, released at once; `dec` is then 0).
 */
import { createRequire } from 'node:module'

import { SHMMain, ServerSide } from 'shmtools'
import { encodeManyFor } from '../src/values.ts'
import { decodeBatch, decodeMany } from '../src/wire.ts'

const binding = createRequire(import.meta.url)('../binding.js') as typeof import('../binding.js')
const name = `shmtools-batch-steps-${process.pid}`
const mem = new SHMMain(name, 64 << 20).start()
const region = mem.region()
new ServerSide(region, 'p', 1024).start()
const h = region.native().findPipe('p')!.fast()
const regionRef = region.native().raw()
const fast = binding.fastCalls() as { valueRelease(r: object, id: number): void }
const PAYLOAD = 'x'.repeat(Number(process.env.LEN ?? 32))
const ROWS = Number(process.env.ROWS ?? 0)
const B = Number(process.env.B ?? 256)
const HANDLES = process.env.HANDLES === '1'
const before = mem.pool().stats().blocksUsed
const rounds = Number(process.env.ROUNDS ?? 4000)
const T = { make: 0, enc: 0, enq: 0, deq: 0, dec: 0 }
for (let r = 0; r < rounds + 200; r++) {
  const t0 = performance.now()
  const batch = []
  for (let i = 0; i < B; i++) {
    const m: Record<string, unknown> = { seq: r * B + i, payload: PAYLOAD }
    if (ROWS > 0) m.rows = Array.from({ length: ROWS }, (_, j) => ({ i: j, s: 'row' }))
    batch.push(m)
  }
  const t1 = performance.now()
  const wire = encodeManyFor(region, batch)
  const t2 = performance.now()
  const sent = binding.pipeEnqueueMany(h, wire, B, 0)
  const t3 = performance.now()
  let got: unknown[]
  let t4: number
  if (HANDLES) {
    got = binding.pipeDequeueMany(h, B, 0)
    // (each a table handle: a BigInt, 4 × its number + its kind)
    for (const raw of got) fast.valueRelease(regionRef, Math.floor(Number(raw) / 4))
    t4 = performance.now()
  } else {
    const buf = binding.pipeDequeueManyCopy(h, B, 0)
    t4 = performance.now()
    got = typeof buf === 'string' ? decodeBatch(buf) : decodeMany(buf)
  }
  const t5 = performance.now()
  if (sent !== B || got.length !== B) throw new Error('short')
  if (r >= 200) { T.make += t1 - t0; T.enc += t2 - t1; T.enq += t3 - t2; T.deq += t4 - t3; T.dec += t5 - t4 }
}
const per = (t: number) => ((t * 1e6) / (rounds * B)).toFixed(0) + ' ns'
console.log(Object.entries(T).map(([k, v]) => `${k} ${per(v)}`).join('  '), `(batches of ${B}, ns per message)`)
if (mem.pool().stats().blocksUsed !== before) console.log('LEAK', before, mem.pool().stats())
mem.destroy()
