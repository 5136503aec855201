/**
 * The worker_threads peer of the benchmark suite (in-process, for reference):
 * the same roles as bench/suite-child.ts, talking to the main thread (or to
 * other workers) with postMessage. Each role posts 'ready' when set up and
 * starts on 'go'.
 */
import { parentPort, workerData, type MessagePort } from 'node:worker_threads'

import { fillValue, PAYLOAD, readyArray, stamp } from './suite-lib.ts'

const port = parentPort!
const data = workerData as Record<string, any>

function go(): Promise<void> {
  return new Promise((resolve) =>
    port.on('message', function onGo(m) {
      if (m === 'go') {
        port.off('message', onGo)
        resolve()
      }
    }),
  )
}

async function main(): Promise<void> {
  switch (data.role) {
    case 'oneway-produce': {
      const started = go()
      port.postMessage('ready')
      await started
      for (let seq = 0; seq < data.n; seq++) port.postMessage({ seq, payload: PAYLOAD })
      return
    }
    case 'echo': {
      port.on('message', (m) => port.postMessage(m))
      port.postMessage('ready')
      return
    }
    case 'large-produce': {
      // At most `window` messages in flight: the main thread acks each one.
      let credit: number = data.window
      let wake: (() => void) | undefined
      port.on('message', (m) => {
        if (m === 'ack') {
          credit++
          wake?.()
        }
      })
      // Ready data (cloned, never transferred): one array, stamped per message.
      const src = data.ready ? readyArray(data.kind === 'f64', data.bytes) : undefined
      const started = go()
      port.postMessage('ready')
      await started
      for (let i = 0; i < data.n; i++) {
        while (credit === 0) await new Promise<void>((r) => (wake = r))
        credit--
        let m: Float64Array | Uint8Array
        if (src) {
          stamp(src, i)
          m = src
        } else {
          m = data.kind === 'f64' ? new Float64Array(data.bytes / 8).fill(fillValue(i)) : new Uint8Array(data.bytes).fill(fillValue(i))
        }
        port.postMessage(m, data.transfer ? [m.buffer] : [])
      }
      return
    }
    case 'fanin': {
      const started = go()
      port.postMessage('ready')
      await started
      const rows = Array.from({ length: data.rows }, (_, i) => ({ id: i, name: `row ${i}`, score: i * 0.5 }))
      port.postMessage({ worker: data.id, rows })
      return
    }
    case 'scale-produce': {
      const ports = data.ports as MessagePort[]
      const started = go()
      port.postMessage('ready')
      await started
      const first: number = data.first
      for (let seq = first, k = 0; seq < first + data.n; seq++, k = (k + 1) % ports.length) ports[k].postMessage({ seq, payload: PAYLOAD })
      for (const p of ports) p.postMessage(-1)
      return
    }
    case 'scale-consume': {
      const ports = data.ports as MessagePort[]
      let count = 0
      let sum = 0
      let ended = 0
      for (const p of ports) {
        p.on('message', (m) => {
          if (m === -1) {
            if (++ended === data.producers) {
              port.postMessage({ count, sum })
              for (const q of ports) q.close()
            }
            return
          }
          sum += (m as { seq: number }).seq
          count++
        })
      }
      port.postMessage('ready')
      return
    }
    case 'idle-wait': {
      port.once('message', () => port.postMessage('awake'))
      port.postMessage('ready')
      return
    }
  }
  throw new Error(`suite-worker: unknown role ${data.role}`)
}

await main()
