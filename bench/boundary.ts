/**
 * How should a JS value cross into the region? Measures, in one run, the
 * candidates for Shared(pool, v) and toJS():
 *   wire — encode in JS into one Buffer (src/wire.ts), one native call (what shmtools uses)
 *   json — JSON.stringify in JS, serde_json parse in Rust (and back: to_string + JSON.parse)
 *   walk — napi-rs reads the object property by property through N-API (and builds it back so)
 *
 *   npm run bench:boundary [-- --quick]
 */
import { createRequire } from 'node:module'

import { Shared, SHMMain } from 'shmtools'

import { encodeFor } from '../src/values.ts'
import { decode } from '../src/wire.ts'

const quick = process.argv.includes('--quick')
const name = `shmtools-bench-boundary-${process.pid}`
const mem = new SHMMain(name, 256 << 20).start()
const pool = mem.pool()
const region = mem.region()
const nat = region.native()
const binding = createRequire(import.meta.url)('../binding.js') as typeof import('../binding.js')
const r = nat.fast()
const rr = nat.raw()
const fast = binding.fastCalls() as { valueRelease(r: object, id: number): void }
/** A raw handle as the binding returns it (a BigInt: 4 × its number + its kind), given back. */
const drop = (raw: unknown) => fast.valueRelease(rr, Math.floor(Number(raw) / 4))

const payload = 'x'.repeat(32)
const shapes: Record<string, unknown> = {
  'small {seq, payload}': { seq: 12345, payload },
  'record (20 fields)': Object.fromEntries(
    Array.from({ length: 20 }, (_, i) => [`field_${i}`, i % 3 ? `value number ${i}` : i * 1.5]),
  ),
  'table (1000 rows)': {
    rows: Array.from({ length: 1000 }, (_, i) => ({ id: i, name: `row ${i}`, score: i / 7, ok: i % 2 === 0 })),
  },
}

function time(label: string, iters: number, fn: () => void): number {
  for (let i = 0; i < Math.min(iters, 200); i++) fn() // warm up
  const t0 = process.hrtime.bigint()
  for (let i = 0; i < iters; i++) fn()
  const ns = Number(process.hrtime.bigint() - t0) / iters
  return ns
}

type Row = { shape: string; op: string; wire: number; json: number; walk: number; full: number }
const rows: Row[] = []

for (const [shape, value] of Object.entries(shapes)) {
  const iters = quick ? 20 : shape.startsWith('table') ? 300 : 20_000
  // Each candidate crosses the boundary and returns the same raw handle.
  const store = {
    wire: time('wire', iters, () => drop(nat.store(encodeFor(region, value)))),
    json: time('json', iters, () => drop(nat.benchStoreJson(JSON.stringify(value)))),
    walk: time('walk', iters, () => drop(nat.benchStoreWalk(value))),
    full: time('full', iters, () => (Shared(pool, value) as { release(): void }).release()),
  }
  rows.push({ shape, op: 'store', ...store })
  const handle = Shared(pool, value) as { toJS(): unknown; release(): void; offset: number }
  const id = Math.floor(Number(nat.valueAt(handle.offset)) / 4)
  const load = {
    wire: time('wire', iters, () => decode(binding.valueToWire(r, id))),
    json: time('json', iters, () => JSON.parse(binding.benchLoadJson(r, id))),
    walk: time('walk', iters, () => binding.benchLoadWalk(r, id)),
    full: time('full', iters, () => handle.toJS()),
  }
  rows.push({ shape, op: 'load', ...load })
  fast.valueRelease(rr, id)
  handle.release()
}

const fmt = (ns: number) => (ns >= 1e6 ? `${(ns / 1e6).toFixed(2)} ms` : ns >= 1e3 ? `${(ns / 1e3).toFixed(2)} µs` : `${ns.toFixed(0)} ns`)
console.log(`\nboundary crossing, time per operation (node ${process.version}${quick ? ', --quick: smoke only' : ''})\n`)
console.log('| value | direction | wire (shmtools) | json | walk (N-API) | best other ÷ wire | whole call: Shared() / toJS() |')
console.log('| --- | --- | --- | --- | --- | --- | --- |')
for (const r of rows) {
  const best = Math.min(r.json, r.walk)
  console.log(`| ${r.shape} | ${r.op} | ${fmt(r.wire)} | ${fmt(r.json)} | ${fmt(r.walk)} | ${(best / r.wire).toFixed(2)}× | ${fmt(r.full)} |`)
}
mem.destroy()
