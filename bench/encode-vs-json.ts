/**
 * How fast the JS encoder of the batch forms is against V8's own
 * serializer, in one process: ns per message for encodeMany (what
 * enqueueMany runs) and for JSON.stringify of the same batch (native code
 * inside V8, and the message format process.send uses), with and without
 * turning its string into bytes. Messages {seq, payload: LEN chars} (LEN 32
 * by default) in batches of B (default 256); each form warms up first, and
 * the forms take turns ROUNDS times (default 2), so drift hits them alike.
 *
 *   node --import @oxc-node/core/register bench/encode-vs-json.ts
 */
import { encodeMany } from '../src/wire.ts'

const B = Number(process.env.B ?? 256)
const LEN = Number(process.env.LEN ?? 32)
const ROUNDS = Number(process.env.ROUNDS ?? 2)
const BATCHES = 4000
const PAYLOAD = 'x'.repeat(LEN)

function batch(base: number): { seq: number; payload: string }[] {
  const a = new Array(B)
  for (let i = 0; i < B; i++) a[i] = { seq: base + i, payload: PAYLOAD }
  return a
}

// No value here is a shared handle.
const noRef = (): undefined => undefined

const forms: [string, (a: unknown[]) => { length: number }][] = [
  ['encodeMany (shmtools)', (a) => encodeMany(a, 'probe', noRef)],
  ['JSON.stringify', (a) => JSON.stringify(a)],
  ['JSON.stringify + Buffer.from', (a) => Buffer.from(JSON.stringify(a))],
]

const inputs = Array.from({ length: 50 }, (_, i) => batch(i * B))
let bytes = 0
for (const [, f] of forms) for (let r = 0; r < 300; r++) bytes += f(batch(r)).length

for (let round = 1; round <= ROUNDS; round++) {
  const line: string[] = []
  for (const [label, f] of forms) {
    const t0 = process.hrtime.bigint()
    for (let r = 0; r < BATCHES; r++) bytes += f(inputs[r % inputs.length]!).length
    const ns = Number(process.hrtime.bigint() - t0) / (BATCHES * B)
    line.push(`${label} ${ns.toFixed(0)} ns`)
  }
  console.log(`round ${round}: ${line.join('  ')} (per message, batches of ${B})`)
}
// (keeps the outputs observable, so no form can be optimised away)
if (bytes === 0) console.log('nothing encoded')
