/**
 * The seed's serverside_ex: creates the region, creates a pipe, and enqueues
 * 100 shared tables, retrying whenever the pipe stays full past the timeout.
 *
 *   node --import @oxc-node/core/register examples/serverside_ex.ts mempool 1000000 pipe1 4
 */
import { SHMMain, ServerSide, Shared } from 'shmtools'

const [regionName = 'mempool', bytesArg = '1000000', pipeName = 'pipe1', capArg = '4', countArg = '100'] =
  process.argv.slice(2)
const debug = process.env.SHMTOOLS_EXAMPLE_QUIET === undefined

// Initial set-up: SHMMain creates (or replaces) the region, exactly once.
const mem = new SHMMain(regionName, Number(bytesArg), { debug })
mem.start()

// Create the pipe in the region, with room for `capacity` packets.
const server = new ServerSide(regionName, pipeName, Number(capArg), { debug })
server.start()
const pipe = server.pipe()

const timeoutMs = 3200 // the seed's 3.2 seconds
for (let seq = 0; seq < Number(countArg); seq++) {
  // Create the value in shared memory: a Tab whose keys and values live there.
  using data = Shared(server.pool(), {})
  data.sequence_number = seq
  data.bi = 10n ** 47n // int_n
  data.bu = 10n ** 47n // int_un
  let enqueued = false
  while (!enqueued) {
    enqueued = pipe.enqueue(data, timeoutMs) // the pipe takes its own reference
    if (!enqueued) console.error(`Failed to enqueue after ${timeoutMs} ms ... trying again ...`)
  }
  console.log(`Enqueued packet ${seq}`)
} // `using` drops our reference: the client's dequeue will hold the last one

server.close()
mem.close() // the region outlives this process until someone destroys it
