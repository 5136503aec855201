/**
 * Plumbing of the benchmark suite (bench/suite.ts): statistics and number
 * formatting, markdown tables, the targets and their SVG chart, regions that
 * are always removed, temp dirs, and "agents" — forked child processes
 * (bench/suite-child.ts) that run one role at a time on command.
 */
import { fork, type ChildProcess } from 'node:child_process'
import { mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'

import { SHMMain } from 'shmtools'

export const CHILD_SCRIPT = fileURLToPath(new URL('./suite-child.ts', import.meta.url))
export const WORKER_SCRIPT = fileURLToPath(new URL('./suite-worker.ts', import.meta.url))

export const PAYLOAD = 'x'.repeat(32)

// ---- statistics and formatting -------------------------------------------------

export function percentile(xs: readonly number[], q: number): number {
  const s = [...xs].sort((a, b) => a - b)
  return s[Math.min(s.length - 1, Math.floor(q * s.length))]
}

export function median(xs: readonly number[]): number {
  return percentile(xs, 0.5)
}

export function fmtRate(perSec: number): string {
  if (perSec >= 1e6) return `${(perSec / 1e6).toFixed(2)}M msg/s`
  return `${(perSec / 1e3).toFixed(1)}k msg/s`
}

export function fmtUs(us: number): string {
  return us >= 1000 ? `${(us / 1000).toFixed(2)} ms` : `${us.toFixed(1)} µs`
}

export function fmtMs(ms: number): string {
  return ms >= 1000 ? `${(ms / 1000).toFixed(2)} s` : `${ms.toFixed(1)} ms`
}

export function fmtGBs(bytesPerSec: number): string {
  return `${(bytesPerSec / 1e9).toFixed(2)} GB/s`
}

export function fmtRatio(x: number): string {
  if (!Number.isFinite(x)) return String(x)
  if (x >= 100) return `${x.toFixed(0)}×`
  if (x >= 10) return `${x.toFixed(1)}×`
  if (x >= 0.1) return `${x.toFixed(2)}×`
  return `${x.toFixed(3)}×`
}

export function fmtBytes(n: number): string {
  if (n >= 1 << 20) return `${n / (1 << 20)} MiB`
  if (n >= 1 << 10) return `${n / (1 << 10)} KiB`
  return `${n} B`
}

export function table(headers: string[], rows: string[][]): string {
  const lines = [`| ${headers.join(' | ')} |`, `| ${headers.map(() => '---').join(' | ')} |`]
  for (const r of rows) lines.push(`| ${r.join(' | ')} |`)
  return lines.join('\n')
}

// ---- report: sections and targets ----------------------------------------------

export interface Target {
  /** What is compared, e.g. "small one-way: best shmtools form ÷ process.send". */
  label: string
  /** The measured ratio. */
  measured: number
  /** The ratio required. */
  required: number
  /** '>=' : measured must be at least `required`; '<=' : at most; '<' : below. */
  op: '>=' | '<=' | '<'
  /** What the ratio is of, in words (shown in the table). */
  detail: string
  /** How to show measured and required: a ratio (default) or a percentage. */
  unit?: 'ratio' | '%'
}

export function fmtTargetValue(t: Target, v: number): string {
  return t.unit === '%' ? `${v.toFixed(v < 1 ? 3 : 2)} %` : fmtRatio(v)
}

export function passes(t: Target): boolean {
  if (t.op === '>=') return t.measured >= t.required
  return t.op === '<=' ? t.measured <= t.required : t.measured < t.required
}

/** Headroom factor: ≥ 1 means the target is met (how many times over), < 1 how far off. */
export function headroom(t: Target): number {
  return t.op === '>=' ? t.measured / t.required : t.required / t.measured
}

export class Report {
  readonly parts: string[] = []
  readonly targets: Target[] = []

  /** Print to stdout as it comes, and keep for the markdown file. */
  out(text = ''): void {
    console.log(text)
    this.parts.push(text)
  }

  target(t: Target): void {
    this.targets.push(t)
  }

  targetTable(judged: boolean): string {
    const rows = this.targets.map((t) => [
      t.label,
      t.detail,
      fmtTargetValue(t, t.measured),
      `${{ '>=': '≥', '<=': '≤', '<': '<' }[t.op]} ${fmtTargetValue(t, t.required)}`,
      judged ? (passes(t) ? 'PASS' : '**MISS**') : '— (not judged)',
    ])
    return table(['target', 'ratio of', 'measured', 'required', 'verdict'], rows)
  }
}

function esc(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;')
}

/**
 * A horizontal bar chart of each target's headroom (measured ÷ required, or
 * required ÷ measured for "at most" targets) on a log scale: bars reaching
 * the 1× line pass.
 */
export function targetsSvg(targets: readonly Target[], title: string, judged: boolean): string {
  const rowH = 34
  const left = 300
  const plotW = 440
  const top = 64
  const width = left + plotW + 290
  const height = top + rowH * targets.length + 56
  const lo = -3 // 0.001×
  const hi = 2 // 100×
  const x = (v: number) => {
    const l = Math.min(hi, Math.max(lo, Math.log10(Math.max(v, 1e-9))))
    return left + ((l - lo) / (hi - lo)) * plotW
  }
  const out: string[] = []
  out.push(`<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="sans-serif" font-size="12">`)
  out.push(`<rect width="${width}" height="${height}" fill="#ffffff"/>`)
  out.push(`<text x="12" y="22" font-size="15" font-weight="bold">${esc(title)}</text>`)
  out.push(
    `<text x="12" y="42" fill="#555">headroom = measured ÷ required (or required ÷ measured for "at most" targets), log scale; ≥ 1× is a PASS</text>`,
  )
  for (let e = lo; e <= hi; e++) {
    const gx = x(10 ** e)
    out.push(`<line x1="${gx}" y1="${top - 6}" x2="${gx}" y2="${top + rowH * targets.length}" stroke="${e === 0 ? '#000' : '#ddd'}" stroke-width="${e === 0 ? 2 : 1}"/>`)
    out.push(`<text x="${gx}" y="${top + rowH * targets.length + 16}" text-anchor="middle" fill="#555">${10 ** e}×</text>`)
  }
  targets.forEach((t, i) => {
    const y = top + i * rowH
    const h = headroom(t)
    const ok = passes(t)
    const color = !judged ? '#888888' : ok ? '#2e9d48' : '#d04030'
    const x0 = x(1)
    const x1 = x(h)
    out.push(`<text x="${left - 8}" y="${y + rowH / 2 + 4}" text-anchor="end">${esc(t.label)}</text>`)
    out.push(`<rect x="${Math.min(x0, x1)}" y="${y + 7}" width="${Math.max(1, Math.abs(x1 - x0))}" height="${rowH - 14}" fill="${color}"/>`)
    const verdict = judged ? (ok ? 'PASS' : 'MISS') : 'not judged'
    const need = { '>=': '≥', '<=': '≤', '<': '<' }[t.op]
    out.push(
      `<text x="${left + plotW + 14}" y="${y + rowH / 2 + 4}">${esc(`${fmtTargetValue(t, t.measured)} (need ${need} ${fmtTargetValue(t, t.required)})`)} ` +
        `<tspan font-weight="bold" fill="${color}">${verdict}</tspan></text>`,
    )
  })
  out.push(`<text x="12" y="${height - 10}" fill="#555">bars are clipped at 0.001× and 100×; numbers from one run of bench/suite.ts</text>`)
  out.push('</svg>')
  return out.join('\n') + '\n'
}

// ---- regions and temp dirs that are always cleaned up --------------------------

const regions = new Map<string, SHMMain>()
const tempDirs: string[] = []
const children = new Set<ChildProcess>()

/** A fresh region named after `tag`, removed by cleanupAll() whatever happens. */
export function makeRegion(tag: string, bytes: number): { name: string; mem: SHMMain } {
  const name = `shmtools-bench-suite-${process.pid}-${tag}`
  regions.set(name, undefined as unknown as SHMMain) // registered before it exists: a failed start is still removed
  const mem = new SHMMain(name, bytes).start()
  regions.set(name, mem)
  return { name, mem }
}

export function destroyRegion(name: string): void {
  const mem = regions.get(name)
  regions.delete(name)
  try {
    mem?.destroy()
  } catch {
    // fall through to remove by name
  }
  try {
    SHMMain.remove(name)
  } catch {
    // already gone
  }
}

export function makeTempDir(): string {
  const d = mkdtempSync(join(tmpdir(), 'shmtools-bench-'))
  tempDirs.push(d)
  return d
}

/** Kill our children, remove our regions and temp dirs. Safe to call twice. */
export function cleanupAll(): void {
  for (const c of children) {
    if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL')
  }
  children.clear()
  for (const name of [...regions.keys()]) destroyRegion(name)
  for (const d of tempDirs.splice(0)) rmSync(d, { recursive: true, force: true })
}

// ---- agents: forked children that run roles on command -------------------------

export type Ctl =
  | { ctl: 'run'; id: number; role: string; args: Record<string, unknown> }
  | { ctl: 'go'; id: number }
  | { ctl: 'ready'; id: number; info?: unknown }
  | { ctl: 'done'; id: number; result: unknown }
  | { ctl: 'error'; id: number; message: string }

export function isCtl(m: unknown): m is Ctl {
  return typeof m === 'object' && m !== null && !ArrayBuffer.isView(m) && typeof (m as { ctl?: unknown }).ctl === 'string'
}

/**
 * Reject after `ms` (a hang guard, never a measurement). The timer does not
 * keep the process alive, and a guarded promise nobody awaited any more (the
 * run failed elsewhere first) is not reported as an unhandled rejection.
 */
export function guard<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined
  const t = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: no answer after ${ms} ms`)), ms)
    timer.unref()
  })
  const out = Promise.race([p, t]).finally(() => clearTimeout(timer))
  out.catch(() => {})
  return out
}

export interface Run<R = unknown> {
  /** Resolves when the role has prepared (attached, connected) and waits for go(). */
  ready: Promise<unknown>
  /** Tell the role to start. */
  go(): void
  /** Resolves with the role's result. */
  done: Promise<R>
}

const HANG_MS = 180_000

/** A forked child (bench/suite-child.ts) that runs one role at a time. */
export class Agent {
  readonly proc: ChildProcess
  /** Messages from the child that are not control messages (process.send peers). */
  onData: ((m: unknown) => void) | undefined
  #next = 1
  readonly #waiting = new Map<number, { ready: (i: unknown) => void; done: (r: unknown) => void; fail: (e: Error) => void }>()
  readonly #started: Promise<void>
  #stopping = false
  exited = false
  /** Rejects if the child exits before stop() (race it against waits that depend on the child). */
  readonly died: Promise<never>

  constructor(serialization: 'json' | 'advanced' = 'json') {
    this.proc = fork(CHILD_SCRIPT, [], { execArgv: process.execArgv, serialization, stdio: ['ignore', 'inherit', 'inherit', 'ipc'] })
    children.add(this.proc)
    this.#started = new Promise<void>((resolve, reject) => {
      this.proc.once('message', () => resolve()) // the child says hello when it is listening
      this.proc.once('exit', (code) => reject(new Error(`agent exited before starting (code ${code})`)))
    })
    this.proc.on('message', (m) => {
      if (!isCtl(m)) {
        this.onData?.(m)
        return
      }
      const w = this.#waiting.get(m.id)
      if (!w) return
      if (m.ctl === 'ready') w.ready(m.info)
      else if (m.ctl === 'done') {
        this.#waiting.delete(m.id)
        w.done(m.result)
      } else if (m.ctl === 'error') {
        this.#waiting.delete(m.id)
        // Said at once: the parent may be blocked waiting for what this role failed to send.
        console.error(`agent ${this.proc.pid} failed: ${m.message}`)
        w.fail(new Error(`agent ${this.proc.pid}: ${m.message}`))
      }
    })
    this.died = new Promise<never>((_, reject) =>
      this.proc.once('exit', (code, signal) => {
        if (!this.#stopping) reject(new Error(`agent ${this.proc.pid} died (code ${code}, signal ${signal})`))
      }),
    )
    this.died.catch(() => {})
    this.proc.on('exit', (code, signal) => {
      this.exited = true
      children.delete(this.proc)
      for (const w of this.#waiting.values()) w.fail(new Error(`agent ${this.proc.pid} exited (code ${code}, signal ${signal})`))
      this.#waiting.clear()
    })
  }

  get pid(): number {
    return this.proc.pid!
  }

  started(): Promise<void> {
    return guard(this.#started, 60_000, 'agent start')
  }

  /** Send a data message (not a control message) to the child. */
  send(m: unknown): boolean {
    return this.proc.send(m as never)
  }

  run<R = unknown>(role: string, args: Record<string, unknown> = {}): Run<R> {
    const id = this.#next++
    let onReady!: (i: unknown) => void
    let onDone!: (r: unknown) => void
    let readyFail!: (e: Error) => void
    let doneFail!: (e: Error) => void
    const readyP = new Promise<unknown>((res, rej) => {
      onReady = res
      readyFail = rej
    })
    const doneP = new Promise<R>((res, rej) => {
      onDone = res as (r: unknown) => void
      doneFail = rej
    })
    this.#waiting.set(id, {
      ready: onReady,
      done: onDone,
      fail: (e) => {
        readyFail(e)
        doneFail(e)
      },
    })
    this.proc.send({ ctl: 'run', id, role, args } satisfies Ctl)
    // Either may be awaited first, or not at all when the other failed (guard
    // keeps such a rejection from counting as unhandled).
    const ready = guard(readyP, HANG_MS, `${role} ready`)
    const done = guard(doneP, HANG_MS, `${role} done`)
    return {
      ready,
      go: () => {
        if (!this.exited) this.proc.send({ ctl: 'go', id } satisfies Ctl)
      },
      done,
    }
  }

  /** Let the child exit (it exits when the channel closes); kill it if it does not. */
  async stop(): Promise<void> {
    this.#stopping = true
    if (this.exited) return
    const gone = new Promise<void>((r) => this.proc.once('exit', () => r()))
    if (this.proc.connected) this.proc.disconnect()
    const t = setTimeout(() => this.proc.kill('SIGKILL'), 5_000)
    await gone
    clearTimeout(t)
  }
}

/** Start `n` agents and wait until each is listening. */
export async function startAgents(n: number, serialization: 'json' | 'advanced' = 'json'): Promise<Agent[]> {
  const agents = Array.from({ length: n }, () => new Agent(serialization))
  await Promise.all(agents.map((a) => a.started()))
  return agents
}

/** `p`, or the first of `agents` to die, whichever comes first. */
export function watch<T>(p: Promise<T>, agents: readonly Agent[]): Promise<T> {
  return Promise.race([p, ...agents.map((a) => a.died)])
}

export async function stopAgents(agents: readonly Agent[]): Promise<void> {
  await Promise.all(agents.map((a) => a.stop()))
}

/** utime + stime of a process, in seconds, from /proc/<pid>/stat (clock ticks of 10 ms). */
export function procCpuSeconds(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
  // fields[0] is field 3 (state): utime is field 14, stime field 15.
  return (Number(fields[11]) + Number(fields[12])) / 100
}

// ---- newline-delimited JSON and length-prefixed frames on sockets ---------------

/** Calls `onLine` for each complete line of a stream of string chunks. */
export function lineSplitter(onLine: (line: string) => void): (chunk: string) => void {
  let rest = ''
  return (chunk: string) => {
    let s = rest + chunk
    let from = 0
    for (let i = s.indexOf('\n'); i >= 0; i = s.indexOf('\n', from)) {
      onLine(s.slice(from, i))
      from = i + 1
    }
    rest = from === 0 ? s : s.slice(from)
    s = ''
  }
}

/**
 * Frames of [u32 length][bytes] from a stream of Buffers: each message is
 * copied once into a fresh buffer of its own (aligned, so a Float64Array can
 * sit on it).
 */
export function frameSplitter(onFrame: (msg: Buffer) => void): (chunk: Buffer) => void {
  let header = Buffer.alloc(0)
  let msg: Buffer | undefined
  let filled = 0
  return (chunk: Buffer) => {
    let at = 0
    while (at < chunk.length) {
      if (msg === undefined) {
        const need = 4 - header.length
        header = Buffer.concat([header, chunk.subarray(at, at + need)])
        at += Math.min(need, chunk.length - at)
        if (header.length < 4) return
        msg = Buffer.from(new ArrayBuffer(header.readUInt32LE(0)))
        header = Buffer.alloc(0)
        filled = 0
      }
      const n = Math.min(msg.length - filled, chunk.length - at)
      chunk.copy(msg, filled, at, at + n)
      filled += n
      at += n
      if (filled === msg.length) {
        const done = msg
        msg = undefined
        onFrame(done)
      }
    }
  }
}

// ---- payloads for the large-message scenario -------------------------------------

/** The fill value of message `i` (never 0, so a consumer can spot unfilled bytes). */
export function fillValue(i: number): number {
  return (i % 100) + 1
}

/** Read every element; throws if the array is not filled with fillValue(i). */
export function touchF64(a: Float64Array, i: number): number {
  let s = 0
  for (let k = 0; k < a.length; k++) s += a[k]
  if (s !== a.length * fillValue(i)) throw new Error(`message ${i}: Float64Array sum ${s}, expected ${a.length * fillValue(i)}`)
  return s
}

/** Ready data (scenario 3's second table): every element but the first is READY_FILL. */
export const READY_FILL = 7

/** Made once, before the clock starts: every message sends this array, stamped. */
export function readyArray(f64: boolean, bytes: number): Float64Array | Buffer {
  return f64 ? new Float64Array(bytes / 8).fill(READY_FILL) : Buffer.alloc(bytes, READY_FILL)
}

/** Mark ready data as message i (its first element), so each delivery can be told apart. */
export function stamp(a: Float64Array | Uint8Array, i: number): void {
  a[0] = a instanceof Float64Array ? i : i & 255
}

/** Check a ready-data message at its first, middle and last element; throws if it is not message i. */
export function checkStamp(a: Float64Array | Uint8Array, i: number): void {
  const first = a instanceof Float64Array ? i : i & 255
  const n = a.length
  if (a[0] !== first || a[n >> 1] !== READY_FILL || a[n - 1] !== READY_FILL) {
    throw new Error(`message ${i}: got ${a[0]} / ${a[n >> 1]} / ${a[n - 1]}, expected ${first} / ${READY_FILL} / ${READY_FILL}`)
  }
}

/** Read every byte (memchr for a 0); throws if the bytes are not fillValue(i). */
export function touchBytes(u8: Uint8Array, i: number): number {
  const b = Buffer.isBuffer(u8) ? u8 : Buffer.from(u8.buffer, u8.byteOffset, u8.byteLength)
  const v = fillValue(i)
  if (b.indexOf(0) !== -1 || b[0] !== v || b[b.length - 1] !== v) throw new Error(`message ${i}: bytes not filled with ${v}`)
  return b.length
}
