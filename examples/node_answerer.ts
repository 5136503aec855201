/**
 * The Node half of the Rust ↔ Node example: answers the requests a Rust
 * process (crates/shmtools-core/examples/rust_peer.rs) puts on a pipe.
 *
 *   node --import @oxc-node/core/register examples/node_answerer.ts <region> <to_node> <from_node>
 *
 * Run both against one region:
 *   cargo build --release -p shmtools-core --example rust_peer
 *   node --import @oxc-node/core/register examples/rust_node.ts
 */
import { ClientSide, ServerSide, type SharedArr, type SharedTab } from 'shmtools'

const [region = 'rust_node_demo', toNode = 'to_node', fromNode = 'from_node'] = process.argv.slice(2)

const answers = await new ServerSide(region, fromNode, 8, { timeoutMs: 30_000 }).startAsync()
const requests = await new ClientSide(region, toNode, { timeoutMs: 30_000 }).startAsync()

let n = 0
for await (const req of requests.pipe() as AsyncIterable<SharedTab>) {
  const id = req.id as number
  if (id < 0) {
    req.release()
    break
  }
  using numbers = req.numbers as SharedArr
  let sum = 0
  for (const x of numbers) sum += x as number
  await answers.pipe().enqueueAsync({ id, sum, label: (req.label as string).toUpperCase() })
  req.release()
  n++
}
console.log(`node_answerer: answered ${n} requests`)
answers.close()
requests.close()
