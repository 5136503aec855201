/**
 * Multicast, from the seed's "Complex Interactions": one input pipe, N output
 * pipes, every reader sees every packet — and a packet is dropped for a
 * reader that has not made room within a timeout, so one slow reader cannot
 * stall the rest. Packets are shared tables: each output gets a reference,
 * never a copy.
 *
 *   node --import @oxc-node/core/register examples/multicast.ts [region] [readers] [packets]
 *
 * Runs the whole set-up: a producer (this process), the multicaster (this
 * process), and N reader processes, of which the last is deliberately slow.
 */
import { spawn } from 'node:child_process'
import { createInterface } from 'node:readline'
import { fileURLToPath } from 'node:url'

import { ClientSide, SHMMain, ServerSide, Shared, type SharedTab } from 'shmtools'

const args = process.argv.slice(2)

if (args[0] === 'reader') {
  // A reader: prints what it gets until it sees the end marker.
  const [, region, pipeName, delayMs] = args
  const client = new ClientSide(region, pipeName, { timeoutMs: 10_000 })
  client.start()
  console.log('ready')
  const got: number[] = []
  for (;;) {
    const p = client.pipe().dequeue(10_000) as SharedTab | undefined
    if (p === undefined) break
    const seq = p.seq as number
    p.release()
    if (seq < 0) break
    got.push(seq)
    if (Number(delayMs) > 0) Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, Number(delayMs))
  }
  console.log(`${pipeName} received ${got.length} packets: ${got.join(' ')}`)
  client.close()
} else {
  const region = args[0] ?? 'multicast_demo'
  const readers = Number(args[1] ?? 3)
  const packets = Number(args[2] ?? 20)
  if (!(Number.isInteger(readers) && readers > 0 && readers <= 32) || !(Number.isInteger(packets) && packets >= 0)) {
    throw new Error('usage: multicast.ts [region] [readers 1..32] [packets]')
  }
  const dropAfterMs = 50 // the seed's "drop if the reader hasn't read it after 5 seconds", shortened

  const mem = new SHMMain(region, 1 << 20).start()
  const input = new ServerSide(region, 'pipe_input', 4).start().pipe()
  const outputs = Array.from({ length: readers }, (_, i) => new ServerSide(region, `out${i}`, 4).start().pipe())

  const script = fileURLToPath(import.meta.url)
  const ready: Promise<void>[] = []
  const children = outputs.map((out, i) => {
    const slow = i === readers - 1 ? '150' : '0'
    const child = spawn(process.execPath, [...process.execArgv, script, 'reader', region, out.name, slow], {
      stdio: ['ignore', 'pipe', 'inherit'],
    })
    const label = `[reader ${i}${slow !== '0' ? ', slow' : ''}]`
    ready.push(
      new Promise((resolve) =>
        createInterface({ input: child.stdout }).on('line', (l) => (l === 'ready' ? resolve() : console.log(`${label} ${l}`))),
      ),
    )
    return new Promise<number>((resolve) => child.on('close', (c) => resolve(c ?? 1)))
  })
  await Promise.all(ready) // every reader is listening before the first packet

  // The producer: packets into the single input.
  const produced = (async () => {
    for (let seq = 0; seq < packets; seq++) {
      using p = Shared(mem.pool(), { seq, payload: `packet ${seq}` })
      await input.enqueueAsync(p)
    }
  })()

  // The multicaster: all outputs see the same input; a slow reader loses packets.
  let dropped = 0
  for (let n = 0; n < packets; n++) {
    const p = (await input.dequeueAsync()) as SharedTab
    for (const out of outputs) {
      if (!(await out.enqueueAsync(p, dropAfterMs))) {
        dropped++
        console.log(`[multicast] reader of ${out.name} is too slow, dropping packet ${p.seq}`)
      }
    }
    p.release()
  }
  await produced
  for (const out of outputs) await out.enqueueAsync({ seq: -1 }) // end marker, waits for room
  const codes = await Promise.all(children)
  console.log(`[multicast] ${packets} packets to ${readers} readers, ${dropped} dropped for slow readers`)
  mem.destroy()
  process.exitCode = codes.every((c) => c === 0) ? 0 : 1
}
