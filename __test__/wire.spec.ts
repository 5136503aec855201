/**
 * The JS encoder's memory of recent keys (src/wire.ts, `KnownKeys`): the
 * encoding of each table's keys is kept by depth and place, and reused when
 * the next table at that depth has the same key there. Whatever the mix of
 * repeated and new key lists, long or non-ASCII keys, wide tables and deep
 * nesting, every value must encode to what it is: decoding gives the value
 * back, keys in order.
 */
import test from 'ava'

import { decode, encode } from '../dist/wire.js'
import { mulberry32 } from './fixtures/common.ts'

const none = () => undefined

/** Keys that repeat (so tables share key lists) and keys that do not. */
const POOL = ['seq', 'payload', 'id', 'a', 'b', '10', '2', 'é', '日本語', 'z😀', '', 'k'.repeat(70), 'x'.repeat(61)]

function value(rnd: () => number, depth: number): unknown {
  const r = rnd()
  if (depth > 5 || r < 0.35) {
    const leaves = [() => Math.floor(rnd() * 1e6) - 5e5, () => `s${Math.floor(rnd() * 100)}`, () => null, () => rnd() < 0.5]
    return leaves[Math.floor(rnd() * leaves.length)]!()
  }
  if (r < 0.5) return Array.from({ length: Math.floor(rnd() * 4) }, () => value(rnd, depth + 1))
  // A table: often one of a few fixed key lists, sometimes wide (past the
  // places kept), sometimes keys never seen before.
  const o: Record<string, unknown> = {}
  const kind = rnd()
  const n = kind < 0.1 ? 40 + Math.floor(rnd() * 10) : Math.floor(rnd() * 6)
  for (let i = 0; i < n; i++) {
    const k = kind < 0.6 ? POOL[(i * 3 + Math.floor(kind * 10)) % POOL.length]! : kind < 0.85 ? POOL[Math.floor(rnd() * POOL.length)]! : `new${Math.floor(rnd() * 1e9)}`
    // (the values of a wide table are leaves, which keeps values small)
    o[k] = value(rnd, n > 6 ? 99 : depth + 1)
  }
  return o
}

test('the encoder\'s memory of keys never changes what a value encodes to', (t) => {
  for (let seed = 1; seed <= 4; seed++) {
    const rnd = mulberry32(seed)
    for (let i = 0; i < 1500; i++) {
      const v = value(rnd, 0)
      const back = decode(encode(v, 'k', none))
      // (JSON keeps key order; these values hold nothing JSON loses)
      if (JSON.stringify(back) !== JSON.stringify(v)) return t.fail(`seed ${seed}, value ${i}: ${JSON.stringify(v).slice(0, 300)}`)
    }
  }
  // The same key list again and again, then a run of tables of new keys
  // (the memory stops keeping them), then the first kind again.
  const msg = (i: number) => ({ seq: i, payload: 'p', nested: { seq: i, é: [i] } })
  const runs = [...Array.from({ length: 50 }, (_, i) => msg(i)), ...Array.from({ length: 600 }, (_, i) => ({ [`id${i}`]: i, [`other${i}`]: { [`deep${i}`]: i } })), ...Array.from({ length: 50 }, (_, i) => msg(i))]
  for (const v of runs) t.is(JSON.stringify(decode(encode(v, 'k', none))), JSON.stringify(v))
  // Deeper than the depths kept, with the same lists at every depth.
  let deep: unknown = { end: true }
  for (let d = 0; d < 20; d++) deep = { seq: d, inner: deep }
  for (let r = 0; r < 3; r++) t.is(JSON.stringify(decode(encode(deep, 'k', none))), JSON.stringify(deep))
})
