/**
 * Pipes against what a Node user would use instead, in one run:
 *   one-way throughput of small objects ({seq, payload: 32 chars}), producer process → consumer process
 *   ping-pong round trip (p50, p99) between two processes
 * shmtools (sync, async and batch forms) vs process.send between a parent and a forked child.
 *
 *   npm run bench:pipes [-- --quick]
 */
import { fork } from 'node:child_process'
import { fileURLToPath } from 'node:url'

import { ClientSide, SHMMain, ServerSide, type SharedTab } from 'shmtools'

const self = fileURLToPath(import.meta.url)
const payload = 'x'.repeat(32)
const args = process.argv.slice(2)

type Msg = { seq: number; payload?: string }

// ---- child roles -------------------------------------------------------------

async function child(role: string, region: string, n: number): Promise<void> {
  if (role === 'shm-produce' || role === 'shm-produce-batch' || role === 'shm-produce-async') {
    const out = new ClientSide(region, 'oneway', { timeoutMs: 30_000 }).start().pipe()
    process.send!('ready')
    await new Promise((r) => process.once('message', r))
    if (role === 'shm-produce-batch') {
      for (let seq = 0; seq < n; seq += 64) {
        const batch: Msg[] = []
        for (let i = seq; i < Math.min(seq + 64, n); i++) batch.push({ seq: i, payload })
        let sent = 0
        while (sent < batch.length) {
          sent += out.enqueueMany(sent === 0 ? batch : batch.slice(sent))
          if (sent < batch.length) out.enq(batch[sent++]) // full: wait for room
        }
      }
    } else if (role === 'shm-produce-async') {
      for (let seq = 0; seq < n; seq++) await out.enqueueAsync({ seq, payload })
    } else {
      for (let seq = 0; seq < n; seq++) out.enq({ seq, payload })
    }
  } else if (role === 'ps-produce') {
    process.send!('ready')
    await new Promise((r) => process.once('message', r))
    for (let seq = 0; seq < n; seq++) {
      if (!process.send!({ seq, payload })) await new Promise((r) => setImmediate(r))
    }
    // Disconnecting drops messages still queued: wait until the last is written.
    await new Promise((r) => process.send!('end', () => r(undefined)))
  } else if (role === 'shm-echo') {
    const inp = new ClientSide(region, 'ping', { timeoutMs: 30_000 }).start().pipe()
    const out = new ClientSide(region, 'pong', { timeoutMs: 30_000 }).start().pipe()
    process.send!('ready')
    for (let i = 0; i < n; i++) out.enq(inp.deq())
  } else if (role === 'shm-echo-async') {
    const inp = new ClientSide(region, 'ping', { timeoutMs: 30_000 }).start().pipe()
    const out = new ClientSide(region, 'pong', { timeoutMs: 30_000 }).start().pipe()
    process.send!('ready')
    for (let i = 0; i < n; i++) await out.enqueueAsync(await inp.dequeueAsync())
  } else if (role === 'ps-echo') {
    let left = n
    process.on('message', (m) => {
      if (--left === 0) process.send!(m, () => process.disconnect())
      else process.send!(m)
    })
    process.send!('ready')
    return
  }
  process.disconnect?.()
}

// ---- parent ------------------------------------------------------------------

function start(role: string, region: string, n: number) {
  const c = fork(self, ['child', role, region, String(n)], { execArgv: process.execArgv, serialization: 'json' })
  const ready = new Promise<void>((resolve) => c.once('message', () => resolve()))
  const done = new Promise<void>((resolve) => c.once('exit', () => resolve()))
  return { c, ready, done }
}

async function oneWayShm(role: string, region: string, n: number, pipe: ReturnType<ServerSide['pipe']>): Promise<number> {
  const p = start(role, region, n)
  await p.ready
  const t0 = performance.now()
  p.c.send('go')
  let got = 0
  while (got < n) {
    const many = pipe.dequeueMany(256) as SharedTab[]
    if (many.length === 0) {
      const one = pipe.deq() as SharedTab
      one.release()
      got++
      continue
    }
    for (const v of many) v.release()
    got += many.length
  }
  const secs = (performance.now() - t0) / 1000
  await p.done
  return n / secs
}

async function oneWayProcessSend(n: number): Promise<number> {
  const p = start('ps-produce', '-', n)
  await p.ready
  let got = 0
  let t0 = 0
  const finished = new Promise<void>((resolve) =>
    p.c.on('message', (m) => {
      if (typeof m === 'object' && ++got === n) resolve()
    }),
  )
  t0 = performance.now()
  p.c.send('go')
  await finished
  const secs = (performance.now() - t0) / 1000
  await p.done
  return n / secs
}

function percentile(xs: number[], q: number): number {
  const s = [...xs].sort((a, b) => a - b)
  return s[Math.min(s.length - 1, Math.floor(q * s.length))]
}

async function pingPongShm(region: string, n: number, ping: ReturnType<ServerSide['pipe']>, pong: ReturnType<ServerSide['pipe']>, asyncForm: boolean) {
  const p = start(asyncForm ? 'shm-echo-async' : 'shm-echo', region, n)
  await p.ready
  const rtts: number[] = []
  for (let i = 0; i < n; i++) {
    const t0 = performance.now()
    if (asyncForm) {
      await ping.enqueueAsync(i)
      await pong.dequeueAsync()
    } else {
      ping.enq(i)
      pong.deq()
    }
    rtts.push((performance.now() - t0) * 1000)
  }
  await p.done
  return rtts
}

async function pingPongProcessSend(n: number): Promise<number[]> {
  const p = start('ps-echo', '-', n)
  await p.ready
  const rtts: number[] = []
  for (let i = 0; i < n; i++) {
    const t0 = performance.now()
    await new Promise<void>((resolve) => {
      p.c.once('message', () => resolve())
      p.c.send({ seq: i })
    })
    rtts.push((performance.now() - t0) * 1000)
  }
  await p.done
  return rtts
}

async function main(): Promise<void> {
  const quick = args.includes('--quick')
  const n = quick ? 2_000 : 200_000
  const rounds = quick ? 200 : 20_000
  const region = `shmtools-bench-pipes-${process.pid}`
  const mem = new SHMMain(region, 256 << 20).start()
  const oneway = new ServerSide(region, 'oneway', 1024).start().pipe()
  const ping = new ServerSide(region, 'ping', 4).start().pipe()
  const pong = new ServerSide(region, 'pong', 4).start().pipe()

  const ps = await oneWayProcessSend(n)
  const sync = await oneWayShm('shm-produce', region, n, oneway)
  const asyncRate = await oneWayShm('shm-produce-async', region, n, oneway)
  const batch = await oneWayShm('shm-produce-batch', region, n, oneway)
  const psRtt = await pingPongProcessSend(rounds)
  const shmRtt = await pingPongShm(region, rounds, ping, pong, false)
  const shmRttAsync = await pingPongShm(region, rounds, ping, pong, true)
  mem.destroy()

  const k = (x: number) => `${(x / 1000).toFixed(1)}k msg/s`
  const us = (x: number) => `${x.toFixed(1)} µs`
  console.log(`\npipes vs process.send (node ${process.version}, ${n} messages one way, ${rounds} round trips${quick ? ', --quick: smoke only' : ''})\n`)
  console.log('| one way, {seq, payload: 32 chars} | throughput | × process.send |')
  console.log('| --- | --- | --- |')
  console.log(`| process.send (fork, json) | ${k(ps)} | 1.00× |`)
  console.log(`| shmtools enq (sync) | ${k(sync)} | ${(sync / ps).toFixed(2)}× |`)
  console.log(`| shmtools enqueueAsync | ${k(asyncRate)} | ${(asyncRate / ps).toFixed(2)}× |`)
  console.log(`| shmtools enqueueMany (batches of 64) | ${k(batch)} | ${(batch / ps).toFixed(2)}× |`)
  console.log('\n| round trip | p50 | p99 | p50 ÷ process.send p50 |')
  console.log('| --- | --- | --- | --- |')
  const psP50 = percentile(psRtt, 0.5)
  for (const [label, xs] of [
    ['process.send', psRtt],
    ['shmtools enq/deq (blocking)', shmRtt],
    ['shmtools enqueueAsync/dequeueAsync', shmRttAsync],
  ] as const) {
    console.log(`| ${label} | ${us(percentile(xs, 0.5))} | ${us(percentile(xs, 0.99))} | ${(percentile(xs, 0.5) / psP50).toFixed(3)} |`)
  }
}

if (args[0] === 'child') {
  await child(args[1], args[2], Number(args[3]))
} else {
  await main()
}
