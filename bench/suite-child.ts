/**
 * The child side of the benchmark suite: a forked process ("agent") that runs
 * one role at a time when bench/suite.ts asks. Each role prepares (attaches to
 * a region, connects a socket), says ready, waits for go, then does its part:
 * produce, echo, return a table, consume, or sit idle. Control messages carry
 * a `ctl` field; anything else on the IPC channel is data (the process.send
 * peer).
 */
import { once } from 'node:events'
import { connect, createServer, type Socket } from 'node:net'
import { Worker } from 'node:worker_threads'

import { ClientSide, Shared, type CQ, type SharedTab, type SharedTyped } from 'shmtools'

import { fillValue, isCtl, lineSplitter, PAYLOAD, readyArray, stamp, WORKER_SCRIPT, type Ctl } from './suite-lib.ts'

type Args = Record<string, any>
interface Ctx {
  /** Say ready; resolves on go. */
  ready(info?: unknown): Promise<void>
  /** Receive data messages (not control) from the parent. */
  onData(fn: ((m: unknown) => void) | undefined): void
}

const parentPid = process.ppid
function orphaned(): boolean {
  try {
    process.kill(parentPid, 0)
    return false
  } catch {
    return true
  }
}

/** Blocking dequeue that gives up if the parent has gone (so no child outlives a killed suite). */
function take(p: CQ): unknown {
  for (;;) {
    const v = p.dequeue(5_000)
    if (v !== undefined) return v
    if (orphaned()) process.exit(1)
  }
}

const pause = () => new Promise<void>((r) => setImmediate(r))

function client(region: string, pipe: string) {
  return new ClientSide(region, pipe, { timeoutMs: 30_000 }).start()
}

async function connectSock(path: string): Promise<Socket> {
  const s = connect(path)
  await once(s, 'connect')
  return s
}

async function write(s: Socket, data: string | Buffer): Promise<void> {
  if (!s.write(data)) await once(s, 'drain')
}

async function endSock(s: Socket): Promise<void> {
  s.end()
  await once(s, 'close')
}

/** process.send with at most `window` messages in flight (large messages would pile up otherwise). */
function sendWindow(window: number) {
  const pending: Promise<void>[] = []
  return {
    async send(m: unknown): Promise<void> {
      pending.push(new Promise<void>((r) => process.send!(m, () => r())))
      if (pending.length >= window) await pending.shift()
    },
    async flush(): Promise<void> {
      await Promise.all(pending.splice(0))
    },
  }
}

function makeRows(rows: number): { id: number; name: string; score: number }[] {
  return Array.from({ length: rows }, (_, i) => ({ id: i, name: `row ${i}`, score: i * 0.5 }))
}

const roles: Record<string, (a: Args, ctx: Ctx) => Promise<unknown>> = {
  /** Scenario 1: n small objects one way, to the parent. */
  async 'oneway-produce'(a, ctx) {
    const n: number = a.n
    switch (a.transport) {
      case 'ps': {
        await ctx.ready()
        for (let seq = 0; seq < n; seq++) {
          if (!process.send!({ seq, payload: PAYLOAD })) await pause()
        }
        return {}
      }
      case 'sock': {
        const s = await connectSock(a.sockPath)
        await ctx.ready()
        for (let seq = 0; seq < n; seq++) {
          if (!s.write(JSON.stringify({ seq, payload: PAYLOAD }) + '\n')) await once(s, 'drain')
        }
        await endSock(s)
        return {}
      }
      case 'shm-sync':
      case 'shm-sync-copy':
      case 'shm-async':
      case 'shm-async-copy':
      case 'shm-batch':
      case 'shm-copy': {
        const side = client(a.region, a.pipe)
        const out = side.pipe()
        await ctx.ready()
        // (the -copy forms differ only on the consumer's side)
        if (a.transport === 'shm-sync' || a.transport === 'shm-sync-copy') {
          for (let seq = 0; seq < n; seq++) out.enq({ seq, payload: PAYLOAD })
        } else if (a.transport === 'shm-async' || a.transport === 'shm-async-copy') {
          for (let seq = 0; seq < n; seq++) await out.enqueueAsync({ seq, payload: PAYLOAD })
        } else if (a.transport === 'shm-copy') {
          // Batches of 256; when the pipe is full, wait (blocking) for room.
          for (let seq = 0; seq < n; seq += 256) {
            let batch = []
            for (let i = seq; i < Math.min(seq + 256, n); i++) batch.push({ seq: i, payload: PAYLOAD })
            for (;;) {
              const sent = out.enqueueMany(batch, { timeoutMs: 30_000 })
              if (sent === batch.length) break
              if (sent === 0) throw new Error('oneway shm-copy: no room for 30 s')
              batch = batch.slice(sent)
            }
          }
        } else {
          for (let seq = 0; seq < n; seq += 64) {
            const batch = []
            for (let i = seq; i < Math.min(seq + 64, n); i++) batch.push({ seq: i, payload: PAYLOAD })
            let sent = 0
            while (sent < batch.length) {
              sent += out.enqueueMany(sent === 0 ? batch : batch.slice(sent))
              if (sent < batch.length) out.enq(batch[sent++]) // full: wait for room
            }
          }
        }
        side.close()
        return {}
      }
    }
    throw new Error(`oneway-produce: unknown transport ${a.transport}`)
  },

  /** Scenario 2: send back each of n numbers. */
  async echo(a, ctx) {
    const n: number = a.n
    switch (a.transport) {
      case 'ps': {
        let left = n
        const done = new Promise<void>((resolve) =>
          ctx.onData((m) => {
            process.send!(m)
            if (--left === 0) resolve()
          }),
        )
        await ctx.ready()
        await done
        ctx.onData(undefined)
        return {}
      }
      case 'sock': {
        const s = await connectSock(a.sockPath)
        s.setEncoding('utf8')
        let left = n
        const done = new Promise<void>((resolve) =>
          s.on(
            'data',
            lineSplitter((line) => {
              s.write(line + '\n')
              if (--left === 0) resolve()
            }),
          ),
        )
        await ctx.ready()
        await done
        await endSock(s)
        return {}
      }
      case 'shm-sync':
      case 'shm-async': {
        const ping = client(a.region, 'ping')
        const pong = client(a.region, 'pong')
        const inp = ping.pipe()
        const out = pong.pipe()
        await ctx.ready()
        if (a.transport === 'shm-sync') {
          for (let i = 0; i < n; i++) out.enq(take(inp))
        } else {
          for (let i = 0; i < n; i++) await out.enqueueAsync(await inp.dequeueAsync())
        }
        ping.close()
        pong.close()
        return {}
      }
    }
    throw new Error(`echo: unknown transport ${a.transport}`)
  },

  /** Scenario 3: n large messages (a Float64Array or a Buffer), each made and filled here. */
  async 'large-produce'(a, ctx) {
    const n: number = a.n
    const bytes: number = a.bytes
    const f64 = a.kind === 'f64'
    // Ready data: one array made before the clock starts, stamped per message.
    const src = a.ready ? readyArray(f64, bytes) : undefined
    const make = (i: number): Float64Array | Buffer => {
      if (src) {
        stamp(src, i)
        return src
      }
      return f64 ? new Float64Array(bytes / 8).fill(fillValue(i)) : Buffer.allocUnsafe(bytes).fill(fillValue(i))
    }
    switch (a.transport) {
      case 'ps': {
        const w = sendWindow(2)
        await ctx.ready()
        for (let i = 0; i < n; i++) await w.send(make(i))
        await w.flush()
        return {}
      }
      case 'sock': {
        const s = await connectSock(a.sockPath)
        await ctx.ready()
        const header = Buffer.alloc(4)
        header.writeUInt32LE(bytes)
        for (let i = 0; i < n; i++) {
          const m = make(i)
          s.write(header)
          const body = Buffer.from(m.buffer, m.byteOffset, m.byteLength)
          // The socket may hold on to the bytes until they are written, so
          // ready data (stamped again for the next message) waits for that.
          if (src) await new Promise<void>((r, j) => s.write(body, (e) => (e ? j(e) : r())))
          else await write(s, body)
        }
        await endSock(s)
        return {}
      }
      case 'shm-ref': {
        // Made in the region and filled in place, then enqueued by reference.
        const side = client(a.region, a.pipe)
        const out = side.pipe()
        const pool = side.pool()
        const blank = f64 ? new Float64Array(bytes / 8) : new Uint8Array(bytes)
        await ctx.ready()
        for (let i = 0; i < n; i++) {
          // Ready data is copied in once (as TypedArray.set would); otherwise
          // a blank array is made in the region and filled there.
          // (a Buffer would be stored as a byte string: a Uint8Array over it
          // makes it a typed array, as the blank one is)
          const m = src ? make(i) : blank
          const typed = Buffer.isBuffer(m) ? new Uint8Array(m.buffer, m.byteOffset, m.byteLength) : m
          const h = Shared(pool, typed) as SharedTyped<Float64Array | Uint8Array>
          if (!src) h.view().fill(fillValue(i))
          out.enq(h) // the pipe takes a reference: no copy
          h.release()
        }
        side.close()
        return {}
      }
      case 'shm-copy': {
        // Plain values: enqueue copies them into the pool.
        const side = client(a.region, a.pipe)
        const out = side.pipe()
        await ctx.ready()
        for (let i = 0; i < n; i++) out.enq(make(i))
        side.close()
        return {}
      }
    }
    throw new Error(`large-produce: unknown transport ${a.transport}`)
  },

  /** Scenario 4: build a result table of `rows` rows after go and return it to the parent. */
  async fanin(a, ctx) {
    const id: number = a.id
    switch (a.transport) {
      case 'floor': {
        // What every transport's worker does anyway: make the rows (and touch them).
        await ctx.ready()
        const rows = makeRows(a.rows)
        let score = 0
        for (const r of rows) score += r.score
        await new Promise<void>((r) => process.send!({ worker: id, count: rows.length, score }, () => r()))
        return {}
      }
      case 'ps': {
        await ctx.ready()
        await new Promise<void>((r) => process.send!({ worker: id, rows: makeRows(a.rows) }, () => r()))
        return {}
      }
      case 'sock': {
        const s = await connectSock(a.sockPath)
        await ctx.ready()
        await write(s, JSON.stringify({ worker: id, rows: makeRows(a.rows) }) + '\n')
        await endSock(s)
        return {}
      }
      case 'shm': {
        const side = client(a.region, a.pipe)
        await ctx.ready()
        const t = Shared(side.pool(), { worker: id, rows: makeRows(a.rows) })
        side.pipe().enq(t) // the pipe takes a reference; ours is dropped next
        t.release()
        side.close()
        return {}
      }
    }
    throw new Error(`fanin: unknown transport ${a.transport}`)
  },

  /** Scenario 5: n small objects into the shared pipe / the broker / round robin over the consumers' sockets. */
  async 'scale-produce'(a, ctx) {
    const n: number = a.n
    const first: number = a.first
    switch (a.transport) {
      case 'shm':
      case 'shm-copy': {
        const side = client(a.region, a.pipe)
        const out = side.pipe()
        await ctx.ready()
        for (let seq = first; seq < first + n; seq++) out.enq({ seq, payload: PAYLOAD })
        side.close()
        return {}
      }
      case 'ps': {
        await ctx.ready()
        for (let seq = first; seq < first + n; seq++) {
          if (!process.send!({ seq, payload: PAYLOAD })) await pause()
        }
        return {}
      }
      case 'sock': {
        const socks = await Promise.all((a.sockPaths as string[]).map(connectSock))
        await ctx.ready()
        for (let seq = first, k = 0; seq < first + n; seq++, k = (k + 1) % socks.length) {
          const s = socks[k]
          if (!s.write(JSON.stringify({ seq, payload: PAYLOAD }) + '\n')) await once(s, 'drain')
        }
        await Promise.all(socks.map(endSock))
        return {}
      }
    }
    throw new Error(`scale-produce: unknown transport ${a.transport}`)
  },

  /** Scenario 5: consume until the end (a -1 sentinel, or every producer's socket closed); returns count and seq sum. */
  async 'scale-consume'(a, ctx) {
    let count = 0
    let sum = 0
    switch (a.transport) {
      case 'shm': {
        const side = client(a.region, a.pipe)
        const inp = side.pipe()
        await ctx.ready()
        for (;;) {
          const v = take(inp) as SharedTab | number
          if (typeof v === 'number') break // the sentinel
          sum += v.seq
          count++
          v.release()
        }
        side.close()
        return { count, sum }
      }
      case 'shm-copy': {
        const side = client(a.region, a.pipe)
        const inp = side.pipe()
        await ctx.ready()
        for (;;) {
          const v = inp.dequeue(30_000, { copy: true }) as { seq: number } | number | undefined
          if (v === undefined) throw new Error(`nothing on pipe '${inp.name}' for 30 s: a peer died?`)
          if (typeof v === 'number') break // the sentinel
          sum += v.seq
          count++
        }
        side.close()
        return { count, sum }
      }
      case 'ps': {
        const done = new Promise<void>((resolve) =>
          ctx.onData((m) => {
            if (m === -1) return resolve()
            sum += (m as { seq: number }).seq
            count++
          }),
        )
        await ctx.ready()
        await done
        ctx.onData(undefined)
        return { count, sum }
      }
      case 'sock': {
        let ended = 0
        let finish!: () => void
        const done = new Promise<void>((r) => (finish = r))
        const server = createServer((s) => {
          s.setEncoding('utf8')
          s.on(
            'data',
            lineSplitter((line) => {
              sum += (JSON.parse(line) as { seq: number }).seq
              count++
            }),
          )
          s.on('close', () => {
            if (++ended === a.producers) finish()
          })
        })
        server.listen(a.sockPath)
        await once(server, 'listening')
        void ctx.ready()
        await done
        server.close()
        return { count, sum }
      }
    }
    throw new Error(`scale-consume: unknown transport ${a.transport}`)
  },

  /**
   * Scenario 6: sit waiting for one message; report the CPU time this process
   * used between settling and waking (process.cpuUsage: every thread).
   */
  async idle(a, ctx) {
    const settle = () => new Promise((r) => setTimeout(r, a.settleMs))
    let wait: () => Promise<unknown>
    let side: ClientSide | undefined
    let worker: Worker | undefined
    switch (a.transport) {
      case 'shm-sync': {
        side = client(a.region, a.pipe)
        const p = side.pipe()
        wait = async () => p.dequeue(120_000) // one blocking call, no wake-ups in between
        break
      }
      case 'shm-async': {
        side = client(a.region, a.pipe)
        const p = side.pipe()
        wait = () => p.dequeueAsync(120_000)
        break
      }
      case 'ps':
        wait = () => new Promise((r) => ctx.onData(r))
        break
      case 'sock': {
        const s = await connectSock(a.sockPath)
        wait = async () => {
          await once(s, 'data')
          s.destroy()
        }
        break
      }
      case 'worker': {
        // The main thread waits on IPC, a worker thread on its port.
        const w = new Worker(WORKER_SCRIPT, { workerData: { role: 'idle-wait' } })
        worker = w
        await once(w, 'message')
        wait = async () => {
          await new Promise((r) => ctx.onData(r))
          w.postMessage('wake')
          await once(w, 'message')
        }
        break
      }
      default:
        throw new Error(`idle: unknown transport ${a.transport}`)
    }
    void ctx.ready()
    await settle()
    const c0 = process.cpuUsage()
    const t0 = performance.now()
    await wait()
    const c = process.cpuUsage(c0)
    const wallMs = performance.now() - t0
    ctx.onData(undefined)
    side?.close()
    await worker?.terminate()
    return { cpuUs: c.user + c.system, wallMs }
  },
}

// ---- the agent loop --------------------------------------------------------------

let dataHandler: ((m: unknown) => void) | undefined
const goes = new Map<number, () => void>()
const early = new Set<number>()

async function runRole(m: Extract<Ctl, { ctl: 'run' }>): Promise<void> {
  const fn = roles[m.role]
  const ctx: Ctx = {
    ready: (info) =>
      new Promise<void>((resolve) => {
        if (early.delete(m.id)) resolve()
        else goes.set(m.id, resolve)
        process.send!({ ctl: 'ready', id: m.id, info } satisfies Ctl)
      }),
    onData: (fn) => {
      dataHandler = fn
    },
  }
  try {
    if (!fn) throw new Error(`unknown role ${m.role}`)
    const result = await fn(m.args, ctx)
    process.send!({ ctl: 'done', id: m.id, result } satisfies Ctl)
  } catch (e) {
    process.send!({ ctl: 'error', id: m.id, message: (e as Error).stack ?? String(e) } satisfies Ctl)
  }
}

process.on('message', (m) => {
  if (!isCtl(m)) {
    dataHandler?.(m)
    return
  }
  if (m.ctl === 'run') void runRole(m)
  else if (m.ctl === 'go') {
    const go = goes.get(m.id)
    if (go) {
      goes.delete(m.id)
      go()
    } else early.add(m.id)
  }
})
process.on('disconnect', () => process.exit(0))
process.send!('hello')
