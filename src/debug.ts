import { debuglog } from 'node:util'

const nodeDebug = debuglog('shmtools')

export type Log = (message: string) => void

/**
 * The seed's `debug` flag: with `debug: true` each step goes to stderr;
 * otherwise it goes to `NODE_DEBUG=shmtools` (silent unless that is set).
 */
export function logger(debug: boolean | undefined): Log {
  if (debug) return (message) => process.stderr.write(`shmtools ${process.pid}: ${message}\n`)
  return (message) => nodeDebug(message)
}
