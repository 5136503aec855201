/**
 * The examples run end to end as real processes, exactly as the README tells
 * a newcomer to run them.
 */
import { execFile } from 'node:child_process'
import { promisify } from 'node:util'

import test from 'ava'

import { runNode, shmEntries, uniqueName, REPO_ROOT } from './helpers.ts'

const run = promisify(execFile)

test('the demo creates a region, a second process attaches, prints the boot block, and its greeting is read back', async (t) => {
  const name = uniqueName('demo')
  const r = await runNode(['--import', '@oxc-node/core/register', `${REPO_ROOT}/examples/demo.ts`, name, '200000'])
  t.is(r.code, 0, r.stderr)
  t.regex(r.stderr, new RegExp(`attached to region '${name}'`))
  t.regex(r.stdout, /magic\s+│ 'SHMTOOLS'/)
  t.regex(r.stdout, /state\s+│ 'ready'/)
  t.regex(r.stdout, /size \(bytes\)\s+│ 200000/)
  const m = /left a greeting at offset (\d+)/.exec(r.stdout)
  t.truthy(m, r.stdout)
  t.regex(r.stdout, new RegExp(`read at offset ${m?.[1]}: "hello from attacher \\d+"`))
  t.deepEqual(shmEntries(name), [], 'the demo destroys its region')
})

test('npm run demo (the README command) runs the demo', async (t) => {
  const r = await run('npm', ['run', '--silent', 'demo'], { cwd: REPO_ROOT })
  t.regex(r.stdout, /read at offset \d+: "hello from attacher \d+"/)
})
