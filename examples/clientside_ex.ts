/**
 * The seed's clientside_ex: waits for the region and the pipe, then dequeues
 * packets and pretty-prints each.
 *
 *   node --import @oxc-node/core/register examples/clientside_ex.ts mempool pipe2
 */
import { ClientSide, type SharedTab } from 'shmtools'

import { prettyPrint } from './pretty.ts'

const [regionName = 'mempool', pipeName = 'pipe2', countArg = '100'] = process.argv.slice(2)
const debug = process.env.SHMTOOLS_EXAMPLE_QUIET === undefined

const client = new ClientSide(regionName, pipeName, { debug })
client.start() // blocks waiting for the pipe to be created
const pipe = client.pipe()

const timeoutMs = 5500 // the seed's 5.5 seconds
for (let n = 0; n < Number(countArg); n++) {
  let packet: SharedTab | undefined
  while (packet === undefined) {
    packet = pipe.dequeue(timeoutMs) as SharedTab | undefined
    if (packet === undefined) console.error(`Couldn't dequeue after ${timeoutMs} ms ... trying to dequeue again ...`)
  }
  console.log('Got packet!')
  console.log(prettyPrint(packet.toJS()))
  packet.release() // the last reference: the packet's memory returns to the pool
}
client.close()
