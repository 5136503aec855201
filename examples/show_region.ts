/**
 * Attach to a region (waiting for it to be created), print its boot block and
 * pool figures, and leave a greeting in the pool.
 *
 *   node --import @oxc-node/core/register examples/show_region.ts <name> [timeoutMs]
 */
import { attachSync } from 'shmtools'

const name = process.argv[2] ?? 'shmtools_demo'
const timeoutMs = Number(process.argv[3] ?? 10_000)

console.log(`[attacher ${process.pid}] looking for region '${name}' (waiting up to ${timeoutMs} ms)`)
using region = attachSync(name, { timeoutMs, debug: true })
const info = region.info()
console.log(`[attacher ${process.pid}] boot block of '${name}':`)
console.table({
  magic: info.magic,
  'layout version': info.layoutVersion,
  state: info.state,
  'size (bytes)': info.size,
  generation: info.generation,
  'creator pid': info.creatorPid,
  'creator start time (ticks)': info.creatorStartTime,
  created: new Date(info.createdAtMs).toISOString(),
  'pool offset': info.poolOffset,
  'pool size': info.poolSize,
  'pipe directory offset': info.pipeDirOffset,
})
console.log(`[attacher ${process.pid}] pool:`, region.pool().stats())

const pool = region.pool()
const at = pool.allocate(64)
pool.write(at, Buffer.alloc(64)) // zero the block, then the text
pool.write(at, Buffer.from(`hello from attacher ${process.pid}`))
console.log(`[attacher ${process.pid}] left a greeting at offset ${at}`)
