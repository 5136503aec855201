/**
 * A Rust process and a Node process sharing one region and two pipes: Rust
 * asks, Node answers. Creates the region, starts both, reports.
 *
 *   cargo build --release -p shmtools-core --example rust_peer
 *   node --import @oxc-node/core/register examples/rust_node.ts [count] [path/to/rust_peer]
 */
import { spawn } from 'node:child_process'
import { existsSync } from 'node:fs'
import { fileURLToPath } from 'node:url'

import { SHMMain } from 'shmtools'

const count = process.argv[2] ?? '50'
const root = fileURLToPath(new URL('..', import.meta.url))
const peer =
  process.argv[3] ??
  [`${root}target/release/examples/rust_peer`, `${root}target/debug/examples/rust_peer`].find((p) => existsSync(p))
if (!peer) throw new Error('build the Rust side first: cargo build --release -p shmtools-core --example rust_peer')

const region = `rust_node_demo_${process.pid}`
const mem = new SHMMain(region, 4 << 20).start()
const exit = (cmd: string, args: string[]) =>
  new Promise<number>((resolve) => spawn(cmd, args, { stdio: 'inherit' }).on('close', (c) => resolve(c ?? 1)))
const codes = await Promise.all([
  exit(process.execPath, [...process.execArgv, fileURLToPath(new URL('./node_answerer.ts', import.meta.url)), region, 'to_node', 'from_node']),
  exit(peer, [region, 'to_node', 'from_node', count]),
])
mem.destroy()
console.log(codes.every((c) => c === 0) ? 'rust and node agreed on every answer' : `exit codes ${codes}`)
process.exitCode = codes.every((c) => c === 0) ? 0 : 1
