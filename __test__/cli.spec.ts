/**
 * The `shmtools` command, run as a real process (bin/shmtools.js) against
 * regions made here.
 */
import { execFile } from 'node:child_process'
import { closeSync, openSync, writeSync } from 'node:fs'
import { promisify } from 'node:util'

import test from 'ava'
import { SHMMain, ServerSide } from 'shmtools'

import { REPO_ROOT, runChild, shmEntries, startChild, uniqueName } from './helpers.ts'

const exec = promisify(execFile)
const BIN = `${REPO_ROOT}/bin/shmtools.js`

async function cli(...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    const r = await exec(process.execPath, [BIN, ...args])
    return { code: 0, ...r }
  } catch (e) {
    const err = e as { code: number; stdout: string; stderr: string }
    return { code: err.code, stdout: err.stdout, stderr: err.stderr }
  }
}

function withPipe(t: { teardown(f: () => void): void }, tag: string) {
  const name = uniqueName(tag)
  const mem = new SHMMain(name, 1 << 20).start()
  // Closed only at the end, so the region object stays referenced: one the
  // GC collects stops counting as attached, and the tests look for this
  // process among the holders.
  t.teardown(() => {
    mem.close()
    SHMMain.remove(name)
  })
  const server = new ServerSide(mem.region(), 'jobs', 8).start()
  return { name, mem, pipe: server.pipe() }
}

test('ls lists a region with its size, pipes and creator; --json gives the same as data', async (t) => {
  const { name } = withPipe(t, 'cli-ls')
  const human = await cli('ls')
  t.is(human.code, 0, human.stderr)
  const line = human.stdout.split('\n').find((l) => l.startsWith(name))
  t.truthy(line, human.stdout)
  // (this process is attached twice: the SHMMain and the ServerSide)
  t.regex(line!, new RegExp(`^${name}\\s+1\\.0 MiB\\s+\\S+ KiB\\s+1\\s+${process.pid}\\s+live\\s+1\\s+${process.pid}\\s+0600`))
  const json = JSON.parse((await cli('ls', '--json')).stdout) as { name: string; size: number; pipes: number; creatorPid: number }[]
  const row = json.find((r) => r.name === name)
  t.like(row, { size: 1 << 20, pipes: 1, creatorPid: process.pid, attached: [process.pid], dead: 0, stale: false })
})

test('ls still lists a region whose pipe directory is damaged, saying what could not be read', async (t) => {
  const { name, mem } = withPipe(t, 'cli-damaged')
  const dir = mem.info().pipeDirOffset
  const fd = openSync(`/dev/shm/${name}`, 'r+')
  try {
    writeSync(fd, Buffer.alloc(16, 0xab), 0, 16, dir)
  } finally {
    closeSync(fd)
  }
  const r = await cli('ls', '--json')
  t.is(r.code, 0, r.stderr)
  const row = (JSON.parse(r.stdout) as { name: string; pipes: number; error?: string }[]).find((x) => x.name === name)
  t.truthy(row, r.stdout)
  t.regex(row!.error ?? '', /ERR_SHM_CORRUPT/)
  t.is(row!.pipes, 0)
  const human = await cli('ls')
  t.is(human.code, 0, human.stderr)
  t.regex(human.stdout, new RegExp(`${name}.*DAMAGED`))
})

test('inspect shows the boot block, a consistent pool, and each pipe with depth, capacity and high-water mark', async (t) => {
  const { name, pipe } = withPipe(t, 'cli-inspect')
  pipe.enqueue({ a: 1 }, 0)
  pipe.enqueue(2, 0)
  pipe.enqueue(3, 0)
  ;(pipe.dequeue(0) as { release(): void }).release()
  const r = await cli('inspect', name)
  t.is(r.code, 0, r.stderr)
  t.regex(r.stdout, /layout {5}version 8, state ready, generation 1/)
  t.regex(r.stdout, /check {6}consistent/)
  t.regex(r.stdout, new RegExp(`HOLDER\\s+PID[^\\n]*\\n\\d+\\s+${process.pid}\\s+yes`))
  t.regex(r.stdout, /jobs\s+2\s+8\s+3\s+3\s+1\s+\d+/)
  const data = JSON.parse((await cli('inspect', name, '--json')).stdout)
  t.like(data.pipeList[0], { name: 'jobs', depth: 2, capacity: 8, highWater: 3, totalEnqueued: 3, totalDequeued: 1 })
  t.is(data.pool.bytesUsed, data.poolCheck.bytesUsed)
  t.deepEqual(
    data.holders.map((h: { pid: number }) => h.pid),
    [process.pid],
    'this process only; inspect itself does not attach',
  )
})

test('gc gives back what a SIGKILLed process held; ls marks the dead until then, and a region nobody is attached to as stale', async (t) => {
  const { name, mem } = withPipe(t, 'cli-gc')
  const before = mem.pool().stats()
  const child = startChild(['hold', name, '50'])
  t.teardown(() => child.kill())
  await child.waitForLine(/"held":51/)
  t.true(mem.pool().stats().bytesUsed > before.bytesUsed)
  child.kill('SIGKILL')
  await child.done
  const ls = JSON.parse((await cli('ls', '--json')).stdout) as { name: string; dead: number; attached: number[] }[]
  t.like(
    ls.find((r) => r.name === name),
    { dead: 1, attached: [process.pid] },
  )
  const human = await cli('gc', name)
  t.is(human.code, 0, human.stderr)
  t.regex(human.stdout, /reclaimed 1 dead process: 50 references, 1 raw blocks/)
  t.deepEqual(mem.pool().stats(), before)
  const again = JSON.parse((await cli('gc', name, '--json')).stdout)
  t.like(again, { sessions: 0, references: 0, rawBlocks: 0 })
  // A region whose creator exited (closing it) has nobody attached: stale.
  const left = uniqueName('cli-stale')
  t.teardown(() => SHMMain.remove(left))
  const made = await runChild(['create', left, String(1 << 16), '0'])
  t.is(made.code, 0, made.stderr)
  const after = JSON.parse((await cli('ls', '--json')).stdout) as { name: string; stale: boolean; attached: number[] }[]
  t.like(
    after.find((r) => r.name === left),
    { stale: true, attached: [] },
  )
})

test('top prints pipe depths and message rates for a number of refreshes', async (t) => {
  const { name, pipe } = withPipe(t, 'cli-top')
  const feeding = setInterval(() => pipe.enqueue(1, 0) || (pipe.dequeue(0), pipe.enqueue(1, 0)), 5)
  t.teardown(() => clearInterval(feeding))
  const r = await cli('top', name, '--interval', '200', '--count', '2')
  t.is(r.code, 0, r.stderr)
  const frames = r.stdout.split('\n\n').filter((f) => f.includes('PIPE'))
  t.is(frames.length, 2)
  t.regex(frames[1], /jobs\s+\d\/8\s+[#.]{20}\s+\d+\s+\d+/)
})

test('rm removes a region by name and reports names that do not exist; bad commands exit 2 with the usage', async (t) => {
  const name = uniqueName('cli-rm')
  new SHMMain(name, 1 << 16).start().close()
  const r = await cli('rm', name, `${name}-nope`)
  t.is(r.code, 1)
  t.regex(r.stdout, new RegExp(`removed: ${name}\\n`))
  t.regex(r.stdout, /no such region/)
  t.deepEqual(shmEntries(name), [])
  const bad = await cli('frobnicate')
  t.is(bad.code, 2)
  t.regex(bad.stdout, /usage:/)
  const missing = await cli('inspect', `${name}-nope`)
  t.is(missing.code, 1)
  t.regex(missing.stderr, /not a shmtools region/)
})
