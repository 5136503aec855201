/**
 * Test helpers: unique region names, fresh regions removed when a test ends,
 * real child processes (separate OS processes running the scripts in
 * __test__/fixtures), and /dev/shm listings.
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { readdirSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'

import type { ExecutionContext } from 'ava'
import { SHMMain, type Pool, type Region } from 'shmtools'

export const REPO_ROOT = join(dirname(fileURLToPath(import.meta.url)), '..')

/** The path of `file` in __test__/fixtures. */
export function fixturePath(file: string): string {
  return join(REPO_ROOT, '__test__', 'fixtures', file)
}

export const CHILD = fixturePath('child.ts')
export const SHM_DIR = '/dev/shm'

/** Every name made by uniqueName() in this process starts with this. */
export const NAME_PREFIX = `shmt-${process.pid}-`
let counter = 0

/** A region name no other test (or test process) uses. */
export function uniqueName(tag: string): string {
  counter += 1
  return `${NAME_PREFIX}${tag}-${counter}`
}

/** Names in /dev/shm that start with `prefix`. */
export function shmEntries(prefix: string): string[] {
  return readdirSync(SHM_DIR).filter((n) => n.startsWith(prefix))
}

/** Remove `names` from /dev/shm when the test ends, whatever happened. */
export function cleanup(t: ExecutionContext, ...names: string[]): void {
  t.teardown(() => {
    for (const n of names) {
      try {
        SHMMain.remove(n)
      } catch {
        // Already gone or never valid: nothing to clean.
      }
    }
  })
}

export interface RegionFixture {
  name: string
  shm: SHMMain
  region: Region
  pool: Pool
}

/** A fresh region for one test (named after `tag`), closed and removed when the test ends. */
export function freshRegion(t: ExecutionContext, tag: string, bytes = 4 * 1024 * 1024): RegionFixture {
  const name = uniqueName(tag)
  cleanup(t, name)
  const shm = new SHMMain(name, bytes).start()
  t.teardown(() => shm.close())
  return { name, shm, region: shm.region(), pool: shm.pool() }
}

export interface ChildResult {
  code: number | null
  signal: NodeJS.Signals | null
  stdout: string
  stderr: string
}

export interface ChildOptions {
  /** Full environment of the child (default: this process's, without NODE_DEBUG). */
  env?: NodeJS.ProcessEnv
  /** Kill the child with SIGKILL after this long (a hang guard, not a timing assertion). */
  killAfterMs?: number
}

/** This process's environment without NODE_DEBUG, so children start quiet. */
export function quietEnv(extra: NodeJS.ProcessEnv = {}): NodeJS.ProcessEnv {
  const env = { ...process.env }
  delete env.NODE_DEBUG
  return { ...env, ...extra }
}

export interface LiveChild {
  proc: ChildProcess
  /** Resolves with the first stdout/stderr line (seen so far or later) matching `re`; rejects if the child exits first. */
  waitForLine(re: RegExp, killAfterMs?: number): Promise<string>
  /** Settles when the child has exited. */
  done: Promise<ChildResult>
  /** Output so far. */
  output(): { stdout: string; stderr: string }
  kill(signal?: NodeJS.Signals): void
}

/** Start `node <nodeArgs>` with cwd at the repository root. */
export function startNode(nodeArgs: string[], opts: ChildOptions = {}): LiveChild {
  const proc = spawn(process.execPath, nodeArgs, {
    cwd: REPO_ROOT,
    env: opts.env ?? quietEnv(),
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  let stdout = ''
  let stderr = ''
  let exited = false
  type Waiter = { re: RegExp; resolve: (line: string) => void; reject: (e: Error) => void }
  let waiters: Waiter[] = []
  const lines: string[] = []
  const partial = { stdout: '', stderr: '' }

  const feed = (which: 'stdout' | 'stderr', chunk: string) => {
    partial[which] += chunk
    const parts = partial[which].split('\n')
    partial[which] = parts.pop() ?? ''
    for (const line of parts) {
      lines.push(line)
      waiters = waiters.filter((w) => {
        if (!w.re.test(line)) return true
        w.resolve(line)
        return false
      })
    }
  }
  proc.stdout!.setEncoding('utf8')
  proc.stderr!.setEncoding('utf8')
  proc.stdout!.on('data', (c: string) => {
    stdout += c
    feed('stdout', c)
  })
  proc.stderr!.on('data', (c: string) => {
    stderr += c
    feed('stderr', c)
  })

  const killTimer = setTimeout(() => proc.kill('SIGKILL'), opts.killAfterMs ?? 90_000)
  killTimer.unref()

  const done = new Promise<ChildResult>((resolve, reject) => {
    proc.on('error', reject)
    proc.on('close', (code, signal) => {
      clearTimeout(killTimer)
      exited = true
      for (const which of ['stdout', 'stderr'] as const) {
        if (partial[which] !== '') feed(which, '\n')
      }
      for (const w of waiters) {
        w.reject(new Error(`child exited (code ${code}, signal ${signal}) before printing a line matching ${w.re}\nstdout: ${stdout}\nstderr: ${stderr}`))
      }
      waiters = []
      resolve({ code, signal, stdout, stderr })
    })
  })

  return {
    proc,
    done,
    output: () => ({ stdout, stderr }),
    kill: (signal = 'SIGKILL') => {
      if (!exited) proc.kill(signal)
    },
    waitForLine(re: RegExp, killAfterMs = 60_000): Promise<string> {
      const seen = lines.find((l) => re.test(l))
      if (seen !== undefined) return Promise.resolve(seen)
      if (exited) return Promise.reject(new Error(`child already exited without a line matching ${re}\nstdout: ${stdout}\nstderr: ${stderr}`))
      return new Promise<string>((resolve, reject) => {
        // Hang guard: a child that never prints the line is killed, which rejects this wait.
        const guard = setTimeout(() => proc.kill('SIGKILL'), killAfterMs)
        guard.unref()
        waiters.push({
          re,
          resolve: (l) => {
            clearTimeout(guard)
            resolve(l)
          },
          reject: (e) => {
            clearTimeout(guard)
            reject(e)
          },
        })
      })
    },
  }
}

/** Run `node <nodeArgs>` to completion. */
export function runNode(nodeArgs: string[], opts: ChildOptions = {}): Promise<ChildResult> {
  return startNode(nodeArgs, opts).done
}

export interface FixtureOptions extends ChildOptions {
  /** Node flags to put before the script (e.g. --expose-gc). */
  nodeFlags?: string[]
}

/** Start the TypeScript script `fixture` (a separate OS process) with `args`. */
export function startFixture(fixture: string, args: string[], opts: FixtureOptions = {}): LiveChild {
  return startNode([...(opts.nodeFlags ?? []), '--import', '@oxc-node/core/register', fixture, ...args], opts)
}

/** Start the fixture child (a separate OS process) with `args`; for long-lived roles. */
export function startChild(args: string[], opts: ChildOptions = {}): LiveChild {
  return startFixture(CHILD, args, opts)
}

/** Run the fixture child with `args` to completion. */
export function runChild(args: string[], opts: ChildOptions = {}): Promise<ChildResult> {
  return startChild(args, opts).done
}

/** The last non-empty stdout line of a child, parsed as JSON. */
export function lastJson<T = any>(r: { stdout: string; stderr?: string }): T {
  const line = r.stdout.trim().split('\n').filter((l) => l.trim() !== '').pop()
  if (line === undefined) throw new Error(`child printed nothing on stdout; stderr: ${r.stderr ?? ''}`)
  return JSON.parse(line) as T
}
