/**
 * The benchmark suite (bench/suite.ts) must keep running: its --quick smoke
 * pass, as a real process, exits 0, prints every scenario's table, leaves no
 * region behind, and writes its markdown and SVG where --out says. No timing
 * is asserted (quick sizes mean nothing, and the machine is shared).
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

import test from 'ava'

import { shmEntries, startFixture } from './helpers.ts'

const SUITE = 'bench/suite.ts'

/** Each scenario's heading and the first cells of its table's header row. */
const SCENARIOS: [string, string][] = [
  ['## 1. Small objects one way', '| transport | throughput |'],
  ['## 2. Ping-pong round trip', '| round trip | p50 | p99 |'],
  ['## 3. Large payloads end to end', '| payload | transport | end to end |'],
  ['## 4. Fan-in', '| transport | total time |'],
  ['## 5. Scale', '| producers × consumers |'],
  ['## 6. Idle cost', '| waiting in | CPU, % of one core |'],
  ['## Targets', '| target | ratio of | measured | required | verdict |'],
]

test('bench/suite.ts --quick runs every scenario and prints its table', async (t) => {
  t.timeout(180_000)
  const out = mkdtempSync(join(tmpdir(), 'shmtools-bench-spec-'))
  t.teardown(() => rmSync(out, { recursive: true, force: true }))

  const child = startFixture(SUITE, ['--quick', '--out', out], { killAfterMs: 170_000 })
  const pid = child.proc.pid!
  const r = await child.done
  t.log(`suite --quick: exit ${r.code}; last line: ${r.stdout.trim().split('\n').pop()}`)
  t.is(r.code, 0, `stdout:\n${r.stdout}\nstderr:\n${r.stderr}`)

  const lines = r.stdout.split('\n')
  for (const [heading, header] of SCENARIOS) {
    const at = lines.findIndex((l) => l.startsWith(heading))
    t.true(at >= 0, `no heading '${heading}' in:\n${r.stdout}`)
    const next = lines.slice(at + 1).find((l) => l.startsWith('|'))
    t.true(next?.startsWith(header), `after '${heading}' the table header is '${next}', expected '${header}…'`)
  }
  // Quick mode judges nothing.
  t.false(/\bPASS\b|\bMISS\b/.test(r.stdout), 'a --quick run must not judge targets')

  // Every region the suite made is gone.
  t.deepEqual(shmEntries(`shmtools-bench-suite-${pid}-`), [])

  // --out got the report and a chart.
  const md = readFileSync(join(out, 'node-latest.md'), 'utf8')
  for (const [heading] of SCENARIOS) t.true(md.includes(heading), `node-latest.md lacks '${heading}'`)
  t.regex(md, /- node v\d+/)
  const svg = readFileSync(join(out, 'node-latest.svg'), 'utf8')
  t.regex(svg, /^<svg [^>]*xmlns="http:\/\/www\.w3\.org\/2000\/svg"/)
  t.true(svg.trimEnd().endsWith('</svg>'))
})
