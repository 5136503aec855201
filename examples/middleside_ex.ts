/**
 * The seed's middleside_ex: reads packets from one pipe, adds
 * `my_sequence = sequence_number + 100`, and passes them on to another pipe
 * (a transformer, in X-Midas terms).
 *
 *   node --import @oxc-node/core/register examples/middleside_ex.ts mempool pipe1 pipe2 4
 */
import { ClientSide, ServerSide, type SharedTab } from 'shmtools'

const [regionName = 'mempool', inName = 'pipe1', outName = 'pipe2', capArg = '4', countArg = '100'] =
  process.argv.slice(2)
const debug = process.env.SHMTOOLS_EXAMPLE_QUIET === undefined

const client = new ClientSide(regionName, inName, { debug })
client.start() // waits for the region and for pipe1
const input = client.pipe()

const server = new ServerSide(regionName, outName, Number(capArg), { debug })
server.start() // creates pipe2
const output = server.pipe()

for (let n = 0; n < Number(countArg); ) {
  const packet = input.dequeue(100) as SharedTab | undefined // the seed's .1 s
  if (packet === undefined) continue // retry to get input
  const seq = packet.sequence_number as number
  packet.my_sequence = seq + 100 // in place, in shared memory
  while (!output.enqueue(packet, 100)) {
    // retry until the next stage has room
  }
  packet.release() // the output pipe holds its own reference now
  console.log(`Passed on packet ${seq}`)
  n++
}

client.close()
server.close()
