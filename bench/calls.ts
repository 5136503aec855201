/**
 * What one message costs in calls into native code, in one process (no
 * other core, no waiting):
 *
 * 1. the same native work (read a pipe's futex sequence) called as a method
 *    of the NativeQueue class (napi-rs' generated glue, with its per-call
 *    borrow checks) and as the hand-written Node-API function the facade
 *    uses per message (fastCalls().pipeSeq on the pipe's raw external,
 *    crates/shmtools-node/src/fastcall.rs);
 * 2. the steps of one small message through the handle API, timed one by
 *    one: enq, deq (a handle and its proxy), reading one field through the
 *    proxy, release;
 * 3. for scale, a plain JS object registered with a FinalizationRegistry
 *    (what a handle owned on the JS side would cost to make).
 *
 *   node --import @oxc-node/core/register bench/calls.ts
 *   N=200000 ROUNDS=5 node --import @oxc-node/core/register bench/calls.ts
 */
import { createRequire } from 'node:module'

import { SHMMain, ServerSide, type SharedTab } from 'shmtools'

const binding = createRequire(import.meta.url)('../binding.js') as typeof import('../binding.js')

const N = Number(process.env.N ?? 1_000_000)
const ROUNDS = Number(process.env.ROUNDS ?? 3)
const mem = new SHMMain(`shmtools-calls-${process.pid}`, 64 << 20).start()
const server = new ServerSide(mem.region(), 'p', 1024).start()
const pipe = server.pipe()
type Native = { findPipe(name: string): { seq(kind: number): number; raw(): object } | null }
const q = (mem.region() as unknown as { native(): Native }).native().findPipe('p')!
const raw = q.raw()
const fast = binding.fastCalls() as { pipeSeq(p: object, kind: number): number }
const payload = 'x'.repeat(32)
const ns = (ms: number, n: number) => ((ms * 1e6) / n).toFixed(0)

let sink = 0
const registry = new FinalizationRegistry<number>((x) => {
  sink += x
})

for (let round = 0; round < ROUNDS; round++) {
  let t0 = performance.now()
  for (let i = 0; i < N; i++) sink += q.seq(0)
  const method = performance.now() - t0
  t0 = performance.now()
  for (let i = 0; i < N; i++) sink += fast.pipeSeq(raw, 0)
  const handWritten = performance.now() - t0

  // One message at a time through the handle API; each step timed on its
  // own (performance.now() itself costs a few tens of ns per step).
  const M = Math.min(N, 200_000)
  const T = { enq: 0, deq: 0, read: 0, release: 0 }
  for (let i = 0; i < M; i += 256) {
    let a = performance.now()
    for (let j = 0; j < 256; j++) pipe.enq({ seq: i + j, payload })
    T.enq += performance.now() - a
    for (let j = 0; j < 256; j++) {
      a = performance.now()
      const m = pipe.deq() as SharedTab<{ seq: number }>
      const b = performance.now()
      sink += m.seq
      const c = performance.now()
      m.release()
      T.deq += b - a
      T.read += c - b
      T.release += performance.now() - c
    }
  }

  t0 = performance.now()
  for (let i = 0; i < N; i++) {
    const o = { seq: i }
    registry.register(o, 1)
    sink += o.seq
  }
  const fr = performance.now() - t0

  console.log(
    `seq(): NativeQueue method ${ns(method, N)} ns, fastCalls().pipeSeq(raw external) ${ns(handWritten, N)} ns | ` +
      `one message: enq ${ns(T.enq, M)}, deq ${ns(T.deq, M)}, read a field ${ns(T.read, M)}, release ${ns(T.release, M)} ns | ` +
      `JS object + FinalizationRegistry.register ${ns(fr, N)} ns`,
  )
}
if (sink === 0.5) console.log(sink) // keep the work
mem.destroy()
