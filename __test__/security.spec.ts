/**
 * Another user cannot attach to a region made with the default mode. Run as
 * root, the attacher is started as `nobody` with setpriv; elsewhere the test
 * says why it cannot run.
 */
import { execFile } from 'node:child_process'
import { promisify } from 'node:util'

import test from 'ava'
import { SHMMain } from 'shmtools'

import { REPO_ROOT, uniqueName } from './helpers.ts'

const exec = promisify(execFile)

/** Run `code` (CommonJS) as user nobody; resolves with its stdout. */
async function asNobody(code: string): Promise<string> {
  const r = await exec('setpriv', ['--reuid=nobody', '--regid=nogroup', '--clear-groups', process.execPath, '-e', code], {
    cwd: '/',
  })
  return r.stdout.trim()
}

const ATTACH = (name: string) => `
  const { attachSync } = require(${JSON.stringify(REPO_ROOT)})
  try {
    const r = attachSync(${JSON.stringify(name)}, { timeoutMs: 5000 })
    console.log('attached ' + r.info().size)
  } catch (e) {
    console.log(e.code)
  }`

async function canRunAsNobody(): Promise<string | undefined> {
  if (process.getuid?.() !== 0) return 'not running as root, so cannot start a process as another user'
  try {
    const out = await asNobody(`require(${JSON.stringify(REPO_ROOT)}); console.log('ok')`)
    return out === 'ok' ? undefined : `nobody could not load the package: ${out}`
  } catch (e) {
    return `nobody cannot run node with this checkout (${(e as Error).message.split('\n')[0]})`
  }
}

test('another user cannot attach to a region made with the default mode 0600, and can with 0666', async (t) => {
  const why = await canRunAsNobody()
  if (why) {
    t.log(`SKIPPED: ${why}`)
    t.pass()
    return
  }
  const closed = uniqueName('sec-0600')
  const open = uniqueName('sec-0666')
  const a = new SHMMain(closed, 1 << 16).start()
  const b = new SHMMain(open, 1 << 16, { mode: 0o666 }).start()
  t.teardown(() => {
    a.destroy()
    b.destroy()
  })
  t.is(await asNobody(ATTACH(closed)), 'ERR_SHM_PERMISSION')
  t.is(await asNobody(ATTACH(open)), `attached ${1 << 16}`)
})
