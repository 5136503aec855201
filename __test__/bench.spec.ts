/**
 * The benchmark suites must keep running. bench/suite.ts: its --quick smoke
 * pass, as a real process, exits 0, prints every scenario's table, leaves no
 * region behind, and writes its markdown and SVG where --out says. The Rust
 * harness (crates/shmtools-core/examples/bench_rust.rs): its --quick pass
 * exits 0 and writes its report and chart. No timing
 * is asserted (quick sizes mean nothing, and the machine is shared).
 */
import { execFile } from 'node:child_process'
import { mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { promisify } from 'node:util'

import test from 'ava'

import { latestBlock, splice } from '../bench/latest-block.ts'
import { shmEntries, startFixture } from './helpers.ts'

const SUITE = 'bench/suite.ts'
const exec = promisify(execFile)

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

/** The Rust harness's scenario headings, in order. */
const RUST_SCENARIOS = ['## 5a. 64-byte messages one way', '## 5b. Round trip between two processes', '## 6. Allocator', '## Targets']

test('the Rust harness (bench_rust --quick) runs every scenario and writes its report and chart', async (t) => {
  t.timeout(180_000)
  const out = mkdtempSync(join(tmpdir(), 'shmtools-bench-rust-spec-'))
  t.teardown(() => rmSync(out, { recursive: true, force: true }))
  // (no Boost peer here: bench/rust.sh builds it for real runs; the smoke
  // pass checks the harness itself, in a debug build cargo test already made)
  const args = ['run', '--quiet', '-p', 'shmtools-core', '--example', 'bench_rust', '--']
  args.push('--quick', '--no-boost', 'smoke pass without the C++ peer', '--out', join(out, 'rust.md'))
  // (a non-zero exit rejects, with the harness's output in the error)
  await exec('cargo', args, { maxBuffer: 64 << 20 })
  const md = readFileSync(join(out, 'rust.md'), 'utf8')
  let from = 0
  for (const heading of RUST_SCENARIOS) {
    const at = md.indexOf(heading, from)
    t.true(at >= 0, `rust.md lacks '${heading}' (in order) in:\n${md}`)
    from = at
  }
  t.true(md.includes('![targets: headroom per target, log scale](rust.svg)'), 'the report links its chart')
  const svg = readFileSync(join(out, 'rust.svg'), 'utf8')
  t.regex(svg, /^<svg [^>]*xmlns="http:\/\/www\.w3\.org\/2000\/svg"/)
  t.true(svg.trimEnd().endsWith('</svg>'))
  // One row per target, each with a verdict (SKIP where Boost is missing).
  const rows = svg.match(/text-anchor="end"/g) ?? []
  const verdicts = svg.match(/>(PASS|MISS|SKIP)<\/tspan>/g) ?? []
  t.is(rows.length, 7, svg)
  t.is(verdicts.length, 7, svg)
})

test('each full report is its block of docs/BENCHMARKS.md, and the block is all a run rewrites there', (t) => {
  const doc = readFileSync('docs/BENCHMARKS.md', 'utf8')
  for (const name of ['node-latest', 'rust-latest']) {
    const report = readFileSync(`docs/bench/${name}.md`, 'utf8')
    const block = latestBlock(name, report)
    // The chart, seen from docs/, the run's facts and its targets table.
    t.true(block.includes(`](bench/${name}.svg)`), block)
    t.regex(block, /^- date: /m)
    t.regex(block, /^\| target \| /m)
    t.regex(block, /\*\*MISS\*\*|PASS/)
    // What is in the docs now is what the checked-in report gives (a block
    // edited by hand, or a report without its block, fails here).
    t.is(splice(doc, name, block), doc, `the ${name} block of docs/BENCHMARKS.md differs from docs/bench/${name}.md: run bench/latest-block.ts ${name}`)
    // A different block changes only the text between the markers.
    const other = splice(doc, name, 'replaced')
    const begin = `<!-- ${name}: begin -->`
    const end = `<!-- ${name}: end -->`
    t.is(other.slice(0, other.indexOf(begin)), doc.slice(0, doc.indexOf(begin)))
    t.is(other.slice(other.indexOf(end)), doc.slice(doc.indexOf(end)))
    t.true(other.includes(`${begin}\nreplaced\n${end}`))
    t.is(splice(other, name, block), doc)
  }
  t.throws(() => splice('no markers here', 'node-latest', 'x'), { message: /exactly one/ })
  t.throws(() => splice('<!-- node-latest: end --> <!-- node-latest: begin -->', 'node-latest', 'x'), { message: /exactly one/ })
  t.throws(() => latestBlock('node-latest', '# a quick run\n\n- date: now\n'), { message: /no "## Targets"/ })
})
