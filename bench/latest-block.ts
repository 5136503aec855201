/**
 * The "latest full runs" part of docs/BENCHMARKS.md is written by the
 * harnesses, never by hand. After a full run, each harness's report
 * (docs/bench/node-latest.md, docs/bench/rust-latest.md) is the source: its
 * header list (machine, date, commit, command), its chart and its targets
 * table replace the block between `<!-- NAME: begin -->` and
 * `<!-- NAME: end -->` in docs/BENCHMARKS.md. The rest of that file is
 * hand-written (what each miss is made of, and the record of measurements).
 *
 * `npm run bench` calls `updateBenchmarks` itself; `bash bench/rust.sh` runs
 * this file after a full run:
 *
 *   node --import @oxc-node/core/register bench/latest-block.ts rust-latest
 */
import { execFileSync } from 'node:child_process'
import { readFileSync, writeFileSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'

const REPO = join(dirname(fileURLToPath(import.meta.url)), '..')

/** The commit a run measured, with a mark when the tree had changes. */
export function commitOf(repo = REPO): string {
  try {
    const sha = execFileSync('git', ['rev-parse', '--short', 'HEAD'], { cwd: repo, encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim()
    // Changes to tracked files count; those under docs/ do not change what is
    // measured (and a run writes there), and untracked files are not built.
    const dirty = execFileSync('git', ['status', '--porcelain', '--untracked-files=no', '--', '.', ':(exclude)docs'], {
      cwd: repo,
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'ignore'],
    }).trim()
    return dirty ? `${sha} with uncommitted changes` : sha
  } catch {
    return 'unknown (not a git checkout)'
  }
}

/**
 * The block for one report: its header list, its chart (the path made
 * relative to docs/) and its "## Targets" section, and a link to the whole.
 */
export function latestBlock(name: string, report: string): string {
  const lines = report.replace(/\r\n/g, '\n').split('\n')
  const firstSection = lines.findIndex((l) => l.startsWith('## '))
  const head = lines.slice(0, firstSection < 0 ? lines.length : firstSection)
  const facts = head.filter((l) => l.startsWith('- '))
  const chart = head.find((l) => l.startsWith('!['))
  const t = lines.indexOf('## Targets')
  if (t < 0) throw new Error(`${name}.md has no "## Targets" section: was it a full run?`)
  let end = lines.findIndex((l, i) => i > t && l.startsWith('## '))
  if (end < 0) end = lines.length
  const targets = lines.slice(t + 1, end).join('\n').trim()
  const out = [`**From [docs/bench/${name}.md](bench/${name}.md)** (written by the run; the full report, every scenario and peer):`, '', ...facts, '']
  // (the chart sits beside the report, in docs/bench/)
  if (chart) out.push(chart.replace(/\]\((?:\.\/)?([^)/]+\.svg)\)/, '](bench/$1)'), '')
  out.push(targets)
  return out.join('\n')
}

/** `doc` with the text between NAME's markers replaced by `block`. */
export function splice(doc: string, name: string, block: string): string {
  const begin = `<!-- ${name}: begin -->`
  const end = `<!-- ${name}: end -->`
  const b = doc.indexOf(begin)
  const e = doc.indexOf(end)
  if (b < 0 || e < b || doc.indexOf(begin, b + 1) >= 0 || doc.indexOf(end, e + 1) >= 0) {
    throw new Error(`docs/BENCHMARKS.md needs exactly one "${begin}" followed by one "${end}"`)
  }
  return doc.slice(0, b + begin.length) + '\n' + block + '\n' + doc.slice(e)
}

/** Rewrite NAME's block in docs/BENCHMARKS.md from docs/bench/NAME.md. */
export function updateBenchmarks(name: string, repo = REPO): string {
  const file = join(repo, 'docs', 'BENCHMARKS.md')
  const report = readFileSync(join(repo, 'docs', 'bench', `${name}.md`), 'utf8')
  writeFileSync(file, splice(readFileSync(file, 'utf8'), name, latestBlock(name, report)))
  return file
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const name = process.argv[2]
  if (name !== 'node-latest' && name !== 'rust-latest') {
    console.error('usage: latest-block.ts node-latest|rust-latest')
    process.exit(2)
  }
  console.log(`wrote the ${name} block of ${updateBenchmarks(name)}`)
}
