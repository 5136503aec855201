/**
 * The examples run end to end as real processes, exactly as the README tells
 * a newcomer to run them.
 */
import { execFile } from 'node:child_process'
import { promisify } from 'node:util'

import test from 'ava'

import { runNode, shmEntries, uniqueName, REPO_ROOT } from './helpers.ts'

const run = promisify(execFile)
const example = (name: string) => `${REPO_ROOT}/examples/${name}`
const node = (script: string, args: string[]) => runNode(['--import', '@oxc-node/core/register', example(script), ...args])

test('the demo runs server → middle → client as three processes; every packet arrives once, in order, with my_sequence added', async (t) => {
  const region = uniqueName('demo')
  const r = await node('demo.ts', [region, '12'])
  t.is(r.code, 0, r.stderr)
  const seqs = [...r.stdout.matchAll(/\[client\]\s+'sequence_number': (\d+)/g)].map((m) => Number(m[1]))
  const mine = [...r.stdout.matchAll(/\[client\]\s+'my_sequence': (\d+)/g)].map((m) => Number(m[1]))
  t.deepEqual(seqs, Array.from({ length: 12 }, (_, i) => i))
  t.deepEqual(mine, seqs.map((s) => s + 100))
  t.regex(r.stdout, /'bi': 100000000000000000000000000000000000000000000000/)
  t.regex(r.stdout, /pool after the run: 10 blocks in use/, 'every packet was released')
  t.deepEqual(shmEntries(region), [], 'the demo removes its region')
})

test('npm run demo (the README command) runs the pipeline', async (t) => {
  const r = await run('npm', ['run', '--silent', 'demo'], { cwd: REPO_ROOT, maxBuffer: 64 << 20 })
  t.regex(r.stdout, /all three processes exited 0; 100 packets went server → middle → client/)
})

test('show_region attaches to a region made elsewhere and prints its boot block', async (t) => {
  const region = uniqueName('show')
  const { SHMMain } = await import('shmtools')
  const mem = new SHMMain(region, 200_000).start()
  t.teardown(() => mem.destroy())
  const r = await node('show_region.ts', [region, '5000'])
  t.is(r.code, 0, r.stderr)
  t.regex(r.stdout, /magic\s+│ 'SHMTOOLS'/)
  t.regex(r.stdout, /size \(bytes\)\s+│ 200000/)
  t.regex(r.stdout, /left a greeting at offset \d+/)
})

test('multicast: each reader gets every packet in order except the ones reported dropped; the slow reader loses some', async (t) => {
  const region = uniqueName('mcast')
  const r = await node('multicast.ts', [region, '3', '20'])
  t.is(r.code, 0, r.stderr)
  for (const i of [0, 1, 2]) {
    const got = new RegExp(`out${i} received (\\d+) packets: ([\\d ]*)`).exec(r.stdout)
    t.truthy(got, r.stdout)
    const received = got![2].trim() ? got![2].trim().split(' ').map(Number) : []
    const dropped = [...r.stdout.matchAll(new RegExp(`reader of out${i} is too slow, dropping packet (\\d+)`, 'g'))].map((m) => Number(m[1]))
    t.deepEqual(received, [...received].sort((x, y) => x - y), `out${i} in order`)
    t.deepEqual([...received, ...dropped].sort((x, y) => x - y), Array.from({ length: 20 }, (_, k) => k), `out${i}: delivered or reported, once each`)
    if (i === 2) t.true(dropped.length > 0, 'the slow reader lost packets instead of stalling the others')
  }
  t.deepEqual(shmEntries(region), [])
})

test('fanin: 20 worker processes each hand back a table through the region, and the pool is clean afterwards', async (t) => {
  const r = await node('fanin.ts', ['20', '500'])
  t.is(r.code, 0, r.stderr)
  t.regex(r.stdout, /20 workers returned 10000 rows in \d+ ms; pool back to 8 blocks/)
  t.is([...r.stdout.matchAll(/got worker (\d+)'s table: 500 rows/g)].length, 20)
})

test('Rust and Node on one pipe: a Rust process asks, a Node process answers, every answer is right', async (t) => {
  await run('cargo', ['build', '--quiet', '-p', 'shmtools-core', '--example', 'rust_peer'], { cwd: REPO_ROOT })
  const r = await node('rust_node.ts', ['40', `${REPO_ROOT}/target/debug/examples/rust_peer`])
  t.is(r.code, 0, r.stderr)
  t.regex(r.stdout, /rust_peer: 40\/40 answers right/)
  t.regex(r.stdout, /node_answerer: answered 40 requests/)
})
