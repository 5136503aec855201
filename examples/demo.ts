/**
 * The main job at this stage of the project: one process creates a region
 * (SHMMain); a second, separate process waits for it, attaches, prints what
 * the boot block says, and leaves a greeting in the pool, which the first
 * process then reads from the same bytes.
 *
 *   npm run demo    (or: node --import @oxc-node/core/register examples/demo.ts [name] [bytes])
 */
import { spawn } from 'node:child_process'
import { createInterface } from 'node:readline'
import { setTimeout as sleep } from 'node:timers/promises'
import { fileURLToPath } from 'node:url'

import { SHMMain } from 'shmtools'

const name = process.argv[2] ?? 'shmtools_demo'
const bytes = Number(process.argv[3] ?? 1_000_000)

// Start the attacher first: it waits for the region, as a ClientSide would.
const child = spawn(
  process.execPath,
  [...process.execArgv, fileURLToPath(new URL('./show_region.ts', import.meta.url)), name],
  { stdio: ['ignore', 'pipe', 'inherit'] },
)
let greetingAt = -1
let looking: () => void
const attacherLooking = new Promise<void>((resolve) => (looking = resolve))
createInterface({ input: child.stdout }).on('line', (line) => {
  console.log(line)
  if (line.includes('looking for region')) looking()
  const m = /greeting at offset (\d+)/.exec(line)
  if (m) greetingAt = Number(m[1])
})

await attacherLooking
await sleep(100) // let it find nothing once, to show the wait
const mem = new SHMMain(name, bytes, { debug: true })
mem.start()
console.log(`[main ${process.pid}] created '${name}' (${bytes} bytes)`)

const code: number = await new Promise((resolve) => child.on('close', (c) => resolve(c ?? 1)))
if (code === 0 && greetingAt >= 0) {
  const text = mem.pool().read(greetingAt, 64).toString().replace(/\0+$/, '')
  console.log(`[main ${process.pid}] read at offset ${greetingAt}: "${text}"`)
  mem.pool().free(greetingAt)
}
mem.destroy()
console.log(`[main ${process.pid}] region destroyed`)
process.exitCode = code === 0 && greetingAt >= 0 ? 0 : 1
