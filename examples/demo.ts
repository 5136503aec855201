/**
 * The main job: the seed's three examples as three separate processes,
 * server → middle → client, exactly as one would start them in three shells:
 *
 *   serverside_ex mempool 1000000 pipe1 4
 *   middleside_ex mempool pipe1 pipe2 4
 *   clientside_ex mempool pipe2
 *
 * The server creates the region and sends 100 shared tables; the middle adds
 * my_sequence to each, in place, and passes it on; the client pretty-prints
 * what arrives. Packets move by reference: no table is ever copied.
 *
 *   npm run demo    (or: node --import @oxc-node/core/register examples/demo.ts [region] [count])
 */
import { spawn } from 'node:child_process'
import { createInterface } from 'node:readline'
import { fileURLToPath } from 'node:url'

import { attachSync, SHMMain } from 'shmtools'

const region = process.argv[2] ?? 'mempool'
const count = process.argv[3] ?? '100'

// A left-over region of the same name from an earlier run would be picked up
// by the middle and the client before the server replaces it (the seed's
// third headache): start clean.
SHMMain.remove(region)

const here = (f: string) => fileURLToPath(new URL(f, import.meta.url))
const quiet = { ...process.env, SHMTOOLS_EXAMPLE_QUIET: '1' }

function run(label: string, script: string, args: string[]): Promise<number> {
  const child = spawn(process.execPath, [...process.execArgv, here(script), ...args], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: quiet,
  })
  for (const [stream, out] of [
    [child.stdout, process.stdout],
    [child.stderr, process.stderr],
  ] as const) {
    createInterface({ input: stream }).on('line', (line) => out.write(`[${label}] ${line}\n`))
  }
  return new Promise((resolve) => child.on('close', (code) => resolve(code ?? 1)))
}

// The client and the middle may start first: they wait for the region and pipes.
const codes = await Promise.all([
  run('client', 'clientside_ex.ts', [region, 'pipe2', count]),
  run('middle', 'middleside_ex.ts', [region, 'pipe1', 'pipe2', '4', count]),
  run('server', 'serverside_ex.ts', [region, '1000000', 'pipe1', '4', count]),
])

// Every packet was released by the client: the pool is back to the pipes alone.
using mem = attachSync(region, { timeoutMs: 1000 })
const stats = mem.pool().stats()
console.log(`\npool after the run: ${stats.blocksUsed} blocks in use (${stats.bytesUsed} bytes): the directory, the holder table, this process's ledger and two pipes`)
SHMMain.remove(region)
const ok = codes.every((c) => c === 0)
console.log(ok ? `all three processes exited 0; ${count} packets went server → middle → client` : `exit codes: ${codes}`)
process.exitCode = ok ? 0 : 1
